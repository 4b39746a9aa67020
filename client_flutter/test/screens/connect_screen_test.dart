// The connect screen against a scripted server: nick_owned and room_locked
// show the server's sentence and let the person pick another nick (no
// retry on its own); banned shows its sentence and is not retried.

import 'dart:async';

import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/screens/chat/chat_view_model.dart';
import 'package:lan_chat/screens/connect/connect_screen.dart';
import 'package:lan_chat/screens/connect/connect_view_model.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/file_transfers.dart';
import 'package:lan_chat/services/recent_servers.dart';
import 'package:lan_chat/services/transport.dart';

import '../fakes/fake_server.dart';
import '../fakes/memory_files.dart';

/// A server that answers each hello at once: [refusal] for the nicks in
/// [refused], a welcome for any other.
class ScriptedServer {
  ScriptedServer(this.refusal, {this.refused = const {'alice'}});

  final Json refusal;
  final Set<String> refused;
  final List<Json> hellos = [];
  int attempts = 0;

  Future<ChatTransport> connect(ServerAddress address) async {
    attempts++;
    final transport = FakeTransport();
    unawaited(transport.nextOfType('hello').then((hello) {
      hellos.add(hello);
      final nick = hello['nick'] as String;
      if (refused.contains(nick)) {
        transport.reply(refusal);
        if (refusal['fatal'] == true) transport.drop();
      } else {
        transport.reply(welcome(nick: nick, uid: 9, users: [nick]));
      }
    }));
    return transport;
  }
}

void main() {
  late ScriptedServer server;

  Future<void> showConnectScreen(WidgetTester tester, Json refusal) async {
    server = ScriptedServer(refusal);
    final viewModel = ConnectViewModel(
      recentServers: RecentServers(MemoryKeyValueStore()),
      newSession: (address, nick) {
        final client = ChatClient(
          connector: server.connect,
          address: address,
          nick: nick,
          liveness: const Liveness(keepAlive: false),
          sleep: (_) async {},
        );
        return ChatViewModel(client: client, transfers: FramedTransfers(client, null));
      },
    );
    await tester.pumpWidget(MaterialApp(
      home: ConnectScreen(viewModel: viewModel, pageLink: 'http://10.0.0.7:5555/app/#k=tok'),
    ));
    await tester.pumpAndSettle();
  }

  Future<void> connectAs(WidgetTester tester, String nick) async {
    await tester.enterText(find.widgetWithText(TextFormField, 'Your nick'), nick);
    await tester.ensureVisible(find.widgetWithText(FilledButton, 'Connect'));
    await tester.tap(find.widgetWithText(FilledButton, 'Connect'));
    for (var i = 0; i < 10; i++) {
      await tester.pump();
    }
  }

  for (final (code, sentence) in [
    ('nick_owned', "The nick 'alice' belongs to another device; pick another one."),
    ('room_locked', 'The room is locked: only people who were here before may join.'),
  ]) {
    testWidgets('$code shows the sentence and lets the person pick another nick', (tester) async {
      await showConnectScreen(tester, errorFrame(code, sentence));
      await connectAs(tester, 'alice');
      expect(find.text(sentence), findsOneWidget);
      expect(server.attempts, 1, reason: 'no retry on its own');
      final nickField = tester.widget<EditableText>(
          find.descendant(of: find.widgetWithText(TextFormField, 'Your nick'), matching: find.byType(EditableText)));
      expect(nickField.focusNode.hasFocus, isTrue, reason: 'ready for another nick');
      await connectAs(tester, 'alice2');
      expect(server.hellos.map((h) => h['nick']), ['alice', 'alice2']);
      await tester.pump(const Duration(seconds: 1)); // the chat screen slides in
      expect(find.text('Everyone'), findsOneWidget, reason: 'the chat is open');
    });
  }

  testWidgets('banned shows its sentence and is not retried', (tester) async {
    await showConnectScreen(
        tester, errorFrame('banned', 'The organiser banned this device until 12:00.', fatal: true));
    await connectAs(tester, 'alice');
    expect(find.text('The organiser banned this device until 12:00.'), findsOneWidget);
    for (var i = 0; i < 10; i++) {
      await tester.pump();
    }
    expect(server.attempts, 1);
  });
}
