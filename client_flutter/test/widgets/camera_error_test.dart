// Without camera access, the scanner says how to allow it or to paste the link.

import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/screens/connect/scan_screen.dart';
import 'package:mobile_scanner/mobile_scanner.dart';

void main() {
  testWidgets('a denied camera permission explains what to do', (tester) async {
    var usedLink = 0;
    await tester.pumpWidget(MaterialApp(
      home: Scaffold(
        body: CameraErrorView(
          error: MobileScannerErrorCode.permissionDenied,
          onUseLink: () => usedLink++,
        ),
      ),
    ));
    expect(find.textContaining('allow the camera for LAN Chat in the Settings app'), findsOneWidget);
    await tester.tap(find.text('Paste the link instead'));
    expect(usedLink, 1);
  });

  test('every error code gets a sentence', () {
    for (final code in MobileScannerErrorCode.values) {
      expect(CameraErrorView.explain(code), contains('link'));
    }
  });
}
