// Uploads in progress, above the composer, each with progress and cancel.

import 'package:flutter/material.dart';

import '../models/shared_file.dart';
import '../services/file_transfers.dart';

class TransferPanel extends StatelessWidget {
  const TransferPanel({
    super.key,
    required this.transfers,
    required this.onCancel,
    required this.onDismiss,
  });

  final List<TransferStatus> transfers;
  final ValueChanged<String> onCancel;
  final ValueChanged<String> onDismiss;

  @override
  Widget build(BuildContext context) {
    if (transfers.isEmpty) return const SizedBox.shrink();
    return Column(
      mainAxisSize: MainAxisSize.min,
      children: [
        for (final transfer in transfers) _row(context, transfer),
      ],
    );
  }

  Widget _row(BuildContext context, TransferStatus transfer) {
    final failed = transfer.state == TransferState.failed;
    final detail = switch (transfer.state) {
      TransferState.preparing => 'Preparing…',
      TransferState.waiting => 'Waiting for the connection…',
      TransferState.failed => transfer.error?.message ?? 'Failed',
      _ => '${formatBytes(transfer.transferred)} of ${formatBytes(transfer.size)}',
    };
    return ListTile(
      dense: true,
      leading: Icon(failed ? Icons.error_outline : Icons.upload_file),
      title: Text(transfer.to == null ? transfer.name : '${transfer.name} → ${transfer.to}'),
      subtitle: Column(
        crossAxisAlignment: CrossAxisAlignment.start,
        children: [
          if (!failed) LinearProgressIndicator(value: transfer.fraction),
          Text(detail),
        ],
      ),
      trailing: IconButton(
        tooltip: failed ? 'Dismiss' : 'Cancel',
        onPressed: () => failed ? onDismiss(transfer.key) : onCancel(transfer.key),
        icon: const Icon(Icons.close),
      ),
    );
  }
}
