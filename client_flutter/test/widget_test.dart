// The connect screen: nick validation and filling the address from a
// pairing link. (This file also keeps `flutter create` from adding its
// counter-app test.)

import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/screens/connect/connect_screen.dart';
import 'package:lan_chat/screens/connect/connect_view_model.dart';
import 'package:lan_chat/screens/chat/chat_view_model.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/file_transfers.dart';
import 'package:lan_chat/services/recent_servers.dart';
import 'package:lan_chat/services/transport.dart';

import 'fakes/fake_server.dart';
import 'fakes/memory_files.dart';

void main() {
  late List<(ServerAddress, String)> sessions;

  Future<void> showConnectScreen(WidgetTester tester, {String? link}) async {
    sessions = [];
    final viewModel = ConnectViewModel(
      recentServers: RecentServers(MemoryKeyValueStore()),
      newSession: (address, nick) {
        sessions.add((address, nick));
        // No server in widget tests: the attempt fails at once (no retry).
        final server = FakeServer()
          ..refuseWith = const ConnectFailure(ConnectFailureKind.unknownHost, 'no server here');
        final client = ChatClient(connector: server.connect, address: address, nick: nick);
        return ChatViewModel(client: client, transfers: FramedTransfers(client, null));
      },
    );
    await tester.pumpWidget(MaterialApp(
      home: ConnectScreen(viewModel: viewModel, pageLink: link),
    ));
    await tester.pumpAndSettle();
  }

  testWidgets('an empty nick is refused before connecting', (tester) async {
    await showConnectScreen(tester);
    await tester.ensureVisible(find.widgetWithText(FilledButton, 'Connect'));
    await tester.tap(find.widgetWithText(FilledButton, 'Connect'));
    await tester.pumpAndSettle();
    expect(find.text('Choose a nick.'), findsOneWidget);
    expect(sessions, isEmpty);
  });

  testWidgets('a pasted pairing link fills host, port and token', (tester) async {
    await showConnectScreen(tester);
    await tester.enterText(
      find.widgetWithText(TextField, 'Pairing link'),
      'http://192.168.1.20:6000/#k=Zq3x9',
    );
    await tester.pump();
    expect(find.widgetWithText(TextFormField, '192.168.1.20'), findsOneWidget);
    expect(find.widgetWithText(TextFormField, '6000'), findsOneWidget);
    expect(find.widgetWithText(TextFormField, 'Zq3x9'), findsOneWidget);
  });

  testWidgets('the web build talks to the server of its page, token from the fragment',
      (tester) async {
    await showConnectScreen(tester, link: 'http://10.0.0.7:8080/app/#k=tok');
    expect(find.text('Server 10.0.0.7:8080'), findsOneWidget);
    expect(find.widgetWithText(TextFormField, 'tok'), findsOneWidget);
    expect(find.widgetWithText(TextFormField, 'Host or IP address'), findsNothing,
        reason: 'a page may only talk to the server it came from');
    await tester.enterText(find.widgetWithText(TextFormField, 'Your nick'), 'ann');
    await tester.ensureVisible(find.widgetWithText(FilledButton, 'Connect'));
    await tester.tap(find.widgetWithText(FilledButton, 'Connect'));
    await tester.pump();
    expect(sessions.single.$1, const ServerAddress(host: '10.0.0.7', port: 8080, token: 'tok'));
  });
}
