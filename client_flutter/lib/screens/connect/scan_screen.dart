// Camera view that returns the first QR code it reads (the pairing link).
// Without camera access it says how to give it, or to paste the link.

import 'package:flutter/material.dart';
import 'package:mobile_scanner/mobile_scanner.dart';

class ScanScreen extends StatefulWidget {
  const ScanScreen({super.key});

  @override
  State<ScanScreen> createState() => _ScanScreenState();
}

class _ScanScreenState extends State<ScanScreen> {
  bool _done = false;

  void _onDetect(BarcodeCapture capture) {
    if (_done) return;
    for (final barcode in capture.barcodes) {
      final value = barcode.rawValue;
      if (value != null && value.isNotEmpty) {
        _done = true;
        Navigator.of(context).pop(value);
        return;
      }
    }
  }

  @override
  Widget build(BuildContext context) {
    return Scaffold(
      appBar: AppBar(title: const Text('Scan the pairing code')),
      body: Stack(
        fit: StackFit.expand,
        children: [
          MobileScanner(
            onDetect: _onDetect,
            errorBuilder: (context, error) => CameraErrorView(
              error: error.errorCode,
              onUseLink: () => Navigator.of(context).pop(),
            ),
          ),
          const Align(
            alignment: Alignment.bottomCenter,
            child: Padding(
              padding: EdgeInsets.all(24),
              child: Card(
                child: Padding(
                  padding: EdgeInsets.all(12),
                  child: Text('Point the camera at the QR code the server shows.'),
                ),
              ),
            ),
          ),
        ],
      ),
    );
  }
}

/// What went wrong with the camera, and what the person can do about it.
class CameraErrorView extends StatelessWidget {
  const CameraErrorView({super.key, required this.error, required this.onUseLink});

  final MobileScannerErrorCode error;

  /// Back to the connect screen, to paste or type the link.
  final VoidCallback onUseLink;

  static String explain(MobileScannerErrorCode error) => switch (error) {
        MobileScannerErrorCode.permissionDenied =>
          'LAN Chat may not use the camera. To scan, allow the camera for LAN Chat in '
              'the Settings app (Apps or Privacy → Camera), then come back. '
              'Or paste the pairing link the server printed instead.',
        MobileScannerErrorCode.unsupported =>
          'This device has no camera that can scan. Paste the pairing link instead.',
        _ => 'The camera could not start. Close other apps that use it and try again, '
            'or paste the pairing link instead.',
      };

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    return ColoredBox(
      color: theme.colorScheme.surface,
      child: Center(
        child: Padding(
          padding: const EdgeInsets.all(24),
          child: Column(
            mainAxisSize: MainAxisSize.min,
            children: [
              Icon(Icons.no_photography_outlined, size: 48, color: theme.colorScheme.error),
              const SizedBox(height: 16),
              Text(explain(error), textAlign: TextAlign.center, style: theme.textTheme.bodyLarge),
              const SizedBox(height: 24),
              FilledButton.icon(
                onPressed: onUseLink,
                icon: const Icon(Icons.link),
                label: const Text('Paste the link instead'),
              ),
            ],
          ),
        ),
      ),
    );
  }
}
