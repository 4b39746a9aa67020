// A strip under the app bar while the connection is not up: messages
// written meanwhile wait in the outbox.

import 'package:flutter/material.dart';

import '../services/chat_client.dart';

class ConnectionBanner extends StatelessWidget {
  const ConnectionBanner({super.key, required this.status, required this.onRetry, this.error});

  final ConnectionStatus status;
  final String? error;
  final VoidCallback onRetry;

  @override
  Widget build(BuildContext context) {
    if (status == ConnectionStatus.online) return const SizedBox.shrink();
    final scheme = Theme.of(context).colorScheme;
    final stopped = status == ConnectionStatus.stopped;
    final text = switch (status) {
      ConnectionStatus.connecting => 'Connecting…',
      ConnectionStatus.reconnecting => 'Reconnecting… messages you write will be sent then.',
      ConnectionStatus.stopped => 'Disconnected${error == null ? '' : ': $error'}',
      ConnectionStatus.online => '',
    };
    return Material(
      color: stopped ? scheme.errorContainer : scheme.secondaryContainer,
      child: Padding(
        padding: const EdgeInsets.symmetric(horizontal: 16, vertical: 6),
        child: Row(
          children: [
            Icon(stopped ? Icons.cloud_off : Icons.sync, size: 18),
            const SizedBox(width: 8),
            Expanded(child: Text(text)),
            if (status == ConnectionStatus.reconnecting)
              TextButton(onPressed: onRetry, child: const Text('Retry now')),
          ],
        ),
      ),
    );
  }
}
