// The chat screen over the real view model and the fake server: sending keeps
// the keyboard open, and a refused text stays in the field.

import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/screens/chat/chat_screen.dart';
import 'package:lan_chat/screens/chat/chat_view_model.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/file_transfers.dart';

import '../fakes/fake_server.dart';
import '../fakes/memory_files.dart';

void main() {
  late FakeServer server;
  late FakeTransport connection;
  late ChatViewModel viewModel;

  Future<void> showChat(WidgetTester tester) async {
    server = FakeServer();
    final client = ChatClient(
      connector: server.connect,
      address: const ServerAddress(host: '127.0.0.1'),
      nick: 'alice',
      liveness: const Liveness(keepAlive: false),
      sleep: (_) async {},
    );
    viewModel = ChatViewModel(client: client, transfers: FramedTransfers(client, MemoryFileStore()));
    // Real I/O (streams, completers) outside the widget test's fake clock.
    await tester.runAsync(() async {
      final started = viewModel.start();
      connection = await server.connection(1);
      await connection.nextOfType('hello');
      connection.reply(welcome());
      await started;
      await settle();
    });
    await tester.pumpWidget(MaterialApp(home: ChatScreen(viewModel: viewModel)));
    await tester.pump();
  }

  Future<void> closeChat(WidgetTester tester) async {
    await tester.pumpWidget(const SizedBox());
    await tester.runAsync(() async => viewModel.dispose());
    await tester.pump(const Duration(seconds: 5)); // snack bar timers
  }

  FocusNode composerFocus(WidgetTester tester) =>
      tester.widget<EditableText>(find.byType(EditableText)).focusNode;

  String composerText(WidgetTester tester) =>
      tester.widget<EditableText>(find.byType(EditableText)).controller.text;

  testWidgets('the send key sends, clears the field and keeps the keyboard open', (tester) async {
    await showChat(tester);
    await tester.showKeyboard(find.byType(TextField));
    await tester.enterText(find.byType(TextField), 'hi all');
    await tester.testTextInput.receiveAction(TextInputAction.send);
    await tester.pump();
    expect(composerText(tester), isEmpty);
    expect(composerFocus(tester).hasFocus, isTrue, reason: 'TextInputAction.send unfocuses by default');
    final sent = connection.sent.where((f) => f.type == 'msg').single;
    expect(sent.header['text'], 'hi all');
    await closeChat(tester);
  });

  testWidgets('a text the client refuses (over 16 KiB) stays in the field', (tester) async {
    await showChat(tester);
    final long = 'é' * 8193; // 16,386 bytes as UTF-8
    await tester.showKeyboard(find.byType(TextField));
    await tester.enterText(find.byType(TextField), long);
    await tester.tap(find.byTooltip('Send'));
    await tester.pump(); // the notice arrives
    await tester.pump(); // the snack bar is built
    expect(composerText(tester), long);
    expect(find.textContaining('limited to 16384 bytes'), findsOneWidget);
    expect(connection.sent.where((f) => f.type == 'msg'), isEmpty);
    await closeChat(tester);
  });
}
