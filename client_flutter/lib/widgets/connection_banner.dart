// A strip under the app bar while the connection is not up: messages
// written meanwhile wait in the outbox. When the organiser removed this user
// (or another connection of this device took the nick), it says so in the
// server's words and does not reconnect; "Join again" is the person's choice.

import 'package:flutter/material.dart';

import '../services/chat_client.dart';

class ConnectionBanner extends StatelessWidget {
  const ConnectionBanner({
    super.key,
    required this.status,
    required this.onRetry,
    this.error,
    this.stoppedByOthers = false,
    this.onRejoin,
  });

  final ConnectionStatus status;
  final String? error;
  final VoidCallback onRetry;

  /// [error] is a sentence about the organiser's decision (kicked, banned)
  /// or a takeover by another connection: shown as it is.
  final bool stoppedByOthers;

  /// Offered after a kick ("you may come back"); null: no such button.
  final VoidCallback? onRejoin;

  @override
  Widget build(BuildContext context) {
    if (status == ConnectionStatus.online) return const SizedBox.shrink();
    final scheme = Theme.of(context).colorScheme;
    final stopped = status == ConnectionStatus.stopped;
    final error = this.error;
    final String text;
    if (stopped && stoppedByOthers && error != null) {
      text = error;
    } else {
      text = switch (status) {
        ConnectionStatus.connecting => 'Connecting…',
        ConnectionStatus.reconnecting => 'Reconnecting… messages you write will be sent then.',
        ConnectionStatus.stopped => 'Disconnected${error == null ? '' : ': $error'}',
        ConnectionStatus.online => '',
      };
    }
    final rejoin = onRejoin;
    return Material(
      color: stopped ? scheme.errorContainer : scheme.secondaryContainer,
      child: Padding(
        padding: const EdgeInsets.symmetric(horizontal: 16, vertical: 6),
        child: Row(
          children: [
            Icon(stopped ? (stoppedByOthers ? Icons.block : Icons.cloud_off) : Icons.sync, size: 18),
            const SizedBox(width: 8),
            Expanded(child: Text(text)),
            if (status == ConnectionStatus.reconnecting)
              TextButton(onPressed: onRetry, child: const Text('Retry now')),
            if (stopped && rejoin != null) TextButton(onPressed: rejoin, child: const Text('Join again')),
          ],
        ),
      ),
    );
  }
}
