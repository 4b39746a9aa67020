// Links in messages are tappable; other text stays selectable.

import 'package:flutter/gestures.dart';
import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/widgets/message_bubble.dart';

void main() {
  Future<List<Uri>> show(WidgetTester tester, String text) async {
    final opened = <Uri>[];
    await tester.pumpWidget(MaterialApp(
      home: Scaffold(
        body: MessageText(
          text: text,
          style: const TextStyle(),
          linkColor: Colors.blue,
          onOpenLink: opened.add,
        ),
      ),
    ));
    return opened;
  }

  testWidgets('tapping a link opens its URL', (tester) async {
    final opened = await show(tester, 'the build: https://ci.lan.test/run/7.');
    final rich = tester.widget<RichText>(find.byType(RichText).first);
    final spans = <TextSpan>[];
    rich.text.visitChildren((span) {
      if (span is TextSpan && span.recognizer != null) spans.add(span);
      return true;
    });
    expect(spans.single.text, 'https://ci.lan.test/run/7');
    (spans.single.recognizer! as TapGestureRecognizer).onTap!();
    expect(opened, [Uri.parse('https://ci.lan.test/run/7')]);
  });

  testWidgets('a message without links is selectable text', (tester) async {
    await show(tester, 'no links here');
    expect(find.byType(SelectableText), findsOneWidget);
  });
}
