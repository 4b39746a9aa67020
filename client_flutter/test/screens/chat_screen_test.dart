// The chat screen over the real view model and the fake server: sending keeps
// the keyboard open, and a refused text stays in the field; the room in the
// app bar, the composer while muted, the message menu (long press, and the
// hover button where a mouse is usual), removed messages, server refusals as
// snack bars, and "Join again" after a kick; Reply with its quote, reaction
// chips that toggle, @ suggestions, and the search screen (issue 20).

import 'package:flutter/gestures.dart';
import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/screens/chat/chat_screen.dart';
import 'package:lan_chat/screens/chat/chat_view_model.dart';
import 'package:lan_chat/screens/chat/search_screen.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/file_transfers.dart';
import 'package:lan_chat/widgets/message_actions.dart';
import 'package:lan_chat/widgets/message_bubble.dart';

import '../fakes/fake_server.dart';
import '../fakes/memory_files.dart';

void main() {
  late FakeServer server;
  late FakeTransport connection;
  late ChatViewModel viewModel;

  Future<void> showChat(WidgetTester tester, {Json? reply}) async {
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
      connection.reply(reply ?? welcome());
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

  /// The server sends [frame]; the screen shows what follows from it.
  Future<void> serverSends(WidgetTester tester, Json frame) async {
    connection.reply(frame);
    await tester.pump(); // delivered (microtasks)
    await tester.pump(); // rebuilt
    await tester.pump(); // a snack bar, if any, is built
  }

  /// Lets a sheet, menu or dialog open or close.
  Future<void> settleRoute(WidgetTester tester) async {
    await tester.pump();
    await tester.pump(const Duration(milliseconds: 500));
  }

  /// Lets a page transition (push or pop) finish.
  Future<void> settlePage(WidgetTester tester) async {
    await tester.pump();
    await tester.pump(const Duration(seconds: 1));
    await tester.pump(const Duration(seconds: 1));
  }

  List<Json> sentOfType(String type) =>
      [for (final frame in connection.sent) if (frame.type == type) frame.header];

  /// alice (uid 7) said "my note"; bob (uid 8) said "their note".
  Json twoNotes({bool muted = false, Json? room, Map<String, List<int>>? reactions}) => welcome(
        uid: 7,
        muted: muted,
        room: room,
        history: [
          msg(1, from: 'alice', uid: 7, text: 'my note'),
          msg(2, from: 'bob', uid: 8, text: 'their note', reactions: reactions),
        ],
        lastId: 2,
      );

  testWidgets('the room name and topic are in the app bar, and follow room messages', (tester) async {
    await showChat(tester, reply: twoNotes(room: {'name': 'Physics 3B', 'topic': 'Lab at 10', 'locked': false}));
    expect(find.text('Physics 3B'), findsOneWidget);
    expect(find.text('Lab at 10'), findsOneWidget);
    await serverSends(tester, {'type': 'room', 'name': 'Physics 3B', 'topic': 'Lab moved to 11', 'locked': true});
    expect(find.text('Lab moved to 11'), findsOneWidget);
    await closeChat(tester);
  });

  testWidgets('without a room name: Everyone, and the server address', (tester) async {
    await showChat(tester);
    expect(find.text('Everyone'), findsOneWidget);
    expect(find.text('127.0.0.1:5555 · alice'), findsOneWidget);
    await closeChat(tester);
  });

  testWidgets('muted: the composer is off and says why; unmuted: on again', (tester) async {
    await showChat(tester, reply: twoNotes(muted: true));
    IconButton sendButton() => tester.widget<IconButton>(
        find.ancestor(of: find.byIcon(Icons.send), matching: find.byType(IconButton)));
    expect(tester.widget<TextField>(find.byType(TextField)).enabled, isFalse);
    expect(find.text(defaultMutedText), findsOneWidget);
    expect(sendButton().onPressed, isNull);
    await serverSends(tester, {'type': 'notice', 'code': 'unmuted', 'message': 'You may post again.'});
    expect(tester.widget<TextField>(find.byType(TextField)).enabled, isTrue);
    expect(sendButton().onPressed, isNotNull);
    expect(find.text('You may post again.'), findsOneWidget, reason: 'the notice is told');
    await serverSends(tester, {'type': 'notice', 'code': 'muted', 'message': 'Muted for 10 minutes.'});
    expect(tester.widget<TextField>(find.byType(TextField)).enabled, isFalse);
    expect(find.text('Muted for 10 minutes.'), findsWidgets);
    await closeChat(tester);
  });

  testWidgets('a long press on my message offers Edit and Delete; Delete asks, then sends delete',
      (tester) async {
    await showChat(tester, reply: twoNotes());
    await tester.longPress(find.text('my note'));
    await settleRoute(tester);
    expect(find.text('Edit'), findsOneWidget);
    expect(find.text('Delete'), findsOneWidget);
    await tester.tap(find.text('Delete'));
    await settleRoute(tester);
    expect(find.text('Delete this message?'), findsOneWidget);
    expect(sentOfType('delete'), isEmpty, reason: 'not before it is confirmed');
    await tester.tap(find.widgetWithText(FilledButton, 'Delete'));
    await settleRoute(tester);
    final delete = sentOfType('delete').single;
    expect(delete['id'], 1);
    expect(delete['cid'], isA<String>());
    await serverSends(tester, changeFrame(3, 'delete', target: 1));
    expect(find.text('my note'), findsNothing);
    expect(find.text('Message removed'), findsOneWidget);
    await closeChat(tester);
  });

  testWidgets('a long press on someone else\'s message offers the emoji, Reply and Copy, not Edit or Delete',
      (tester) async {
    await showChat(tester, reply: twoNotes());
    await tester.longPress(find.text('their note'));
    await settleRoute(tester);
    expect(find.byTooltip('React with 👍'), findsOneWidget);
    expect(find.text('Reply'), findsOneWidget);
    expect(find.text('Copy text'), findsOneWidget);
    expect(find.text('Edit'), findsNothing);
    expect(find.text('Delete'), findsNothing);
    await closeChat(tester);
  });

  testWidgets('Edit sends the new text; the change shows it, marked edited', (tester) async {
    await showChat(tester, reply: twoNotes());
    await tester.longPress(find.text('my note'));
    await settleRoute(tester);
    await tester.tap(find.text('Edit'));
    await settleRoute(tester);
    final field = find.descendant(of: find.byType(AlertDialog), matching: find.byType(TextField));
    await tester.enterText(field, 'my better note');
    await tester.tap(find.widgetWithText(FilledButton, 'Save'));
    await settleRoute(tester);
    final edit = sentOfType('edit').single;
    expect((edit['id'], edit['text']), (1, 'my better note'));
    await serverSends(tester, changeFrame(3, 'edit', target: 1, text: 'my better note'));
    expect(find.text('my better note'), findsOneWidget);
    expect(find.text('edited'), findsOneWidget);
    await closeChat(tester);
  });

  testWidgets('with a mouse, a button beside my message opens the same menu', (tester) async {
    await showChat(tester, reply: twoNotes());
    final mouse = await tester.createGesture(kind: PointerDeviceKind.mouse);
    await mouse.addPointer(location: Offset.zero);
    addTearDown(mouse.removePointer);
    await mouse.moveTo(tester.getCenter(find.text('my note')));
    await tester.pump();
    expect(find.byTooltip('Message actions'), findsNWidgets(2), reason: 'every message has one');
    final mine = find.descendant(
      of: find.ancestor(of: find.text('my note'), matching: find.byType(MessageActions)),
      matching: find.byTooltip('Message actions'),
    );
    await tester.tap(mine);
    await settleRoute(tester);
    await tester.tap(find.text('Delete'));
    await settleRoute(tester);
    await tester.tap(find.widgetWithText(FilledButton, 'Delete'));
    await settleRoute(tester);
    expect(sentOfType('delete').single['id'], 1);
    await closeChat(tester);
  }, variant: TargetPlatformVariant.only(TargetPlatform.linux));

  testWidgets('Reply shows the quote above the composer and sends reply_to', (tester) async {
    await showChat(tester, reply: twoNotes());
    await tester.longPress(find.text('their note'));
    await settleRoute(tester);
    await tester.tap(find.text('Reply'));
    await settleRoute(tester);
    expect(find.text('Replying to bob'), findsOneWidget);
    expect(find.text('their note'), findsNWidgets(2), reason: 'the bubble and the quote');
    await tester.enterText(find.byType(TextField), 'agreed');
    await tester.tap(find.byTooltip('Send'));
    await tester.pump();
    final sent = sentOfType('msg').single;
    expect((sent['text'], sent['reply_to']), ('agreed', 2));
    expect(find.text('Replying to bob'), findsNothing);
    await serverSends(tester, msg(3, from: 'alice', uid: 7, text: 'agreed', cid: sent['cid'] as String,
        replyTo: quote(2, from: 'bob', text: 'their note')));
    expect(find.text('their note'), findsNWidgets(2), reason: 'the stored reply quotes it');
    await closeChat(tester);
  });

  testWidgets('Cancel reply removes the quote; nothing is sent with reply_to', (tester) async {
    await showChat(tester, reply: twoNotes());
    await tester.longPress(find.text('their note'));
    await settleRoute(tester);
    await tester.tap(find.text('Reply'));
    await settleRoute(tester);
    await tester.tap(find.byTooltip('Cancel reply'));
    await tester.pump();
    expect(find.text('Replying to bob'), findsNothing);
    await tester.enterText(find.byType(TextField), 'plain');
    await tester.tap(find.byTooltip('Send'));
    await tester.pump();
    expect(sentOfType('msg').single.containsKey('reply_to'), isFalse);
    await closeChat(tester);
  });

  testWidgets('a reaction chip shows the count, mine highlighted, and a tap toggles it', (tester) async {
    await showChat(tester, reply: twoNotes(reactions: {'👍': [8]}));
    expect(find.text('👍 1'), findsOneWidget);
    await tester.tap(find.text('👍 1'));
    await tester.pump();
    expect((sentOfType('react').single['id'], sentOfType('react').single['emoji']), (2, '👍'));
    await serverSends(tester, reactFrame(3, target: 2, uid: 7, emoji: '👍', reactions: {'👍': [8, 7]}));
    expect(find.text('👍 2'), findsOneWidget);
    expect(tester.widget<ReactionChips>(find.byType(ReactionChips)).mine, '👍', reason: 'mine is highlighted');
    await tester.tap(find.text('👍 2'));
    await tester.pump();
    expect(sentOfType('react').last['emoji'], '', reason: 'my own emoji again takes it back');
    await serverSends(tester, reactFrame(4, target: 2, uid: 7, emoji: '', reactions: {'👍': [8]}));
    expect(find.text('👍 1'), findsOneWidget);
    await closeChat(tester);
  });

  testWidgets('an emoji in the long-press sheet reacts', (tester) async {
    await showChat(tester, reply: twoNotes());
    await tester.longPress(find.text('my note'));
    await settleRoute(tester);
    await tester.tap(find.byTooltip('React with ❤️'));
    await settleRoute(tester);
    expect((sentOfType('react').single['id'], sentOfType('react').single['emoji']), (1, '❤️'));
    await serverSends(tester, reactFrame(3, target: 1, uid: 8, emoji: '❤️', reactions: {'❤️': [8]}));
    expect(find.text('❤️ 1'), findsOneWidget);
    await closeChat(tester);
  });

  testWidgets('a message that mentions me is marked; @ offers online nicks', (tester) async {
    await showChat(tester, reply: welcome(uid: 7, users: ['alice', 'bob', 'carol'], history: [
      msg(1, from: 'bob', uid: 8, text: '@alice look', mentions: ['alice']),
    ], lastId: 1));
    expect(tester.widget<MessageBubble>(find.byType(MessageBubble)).entry.mentionsMe, isTrue);
    expect(find.bySemanticsLabel(RegExp('Mentions you')), findsWidgets, reason: 'said to screen readers');
    await tester.enterText(find.byType(TextField), 'hi @b');
    await tester.pump();
    expect(find.byTooltip('Mention bob'), findsOneWidget);
    expect(find.byTooltip('Mention carol'), findsNothing);
    await tester.tap(find.byTooltip('Mention bob'));
    await tester.pump();
    expect(composerText(tester), 'hi @bob ');
    await closeChat(tester);
  });

  testWidgets('search: results, More results, and a tap opens the message in the chat', (tester) async {
    await showChat(tester, reply: twoNotes());
    await tester.tap(find.byTooltip('Search'));
    await settlePage(tester);
    expect(find.byType(SearchScreen), findsOneWidget);
    await tester.enterText(
        find.descendant(of: find.byType(SearchScreen), matching: find.byType(TextField)), 'note');
    await tester.testTextInput.receiveAction(TextInputAction.search);
    await tester.pump();
    final first = sentOfType('search').single;
    expect((first['text'], first['cid'], first['limit']), ('note', 's-1', 20));
    await serverSends(tester, searchResultsFrame('s-1', [
      msg(2, from: 'bob', uid: 8, text: 'their note'),
    ], hasMore: true));
    expect(find.text('their note'), findsOneWidget);
    expect(find.text('More results'), findsOneWidget);
    await tester.tap(find.text('More results'));
    await tester.pump();
    expect(sentOfType('search').last['before'], 2);
    await serverSends(tester, searchResultsFrame('s-2', [
      msg(1, from: 'alice', uid: 7, text: 'my note'),
    ]));
    expect(find.text('my note'), findsOneWidget);
    expect(find.text('More results'), findsNothing);
    expect(find.text('No more results.'), findsOneWidget);
    await tester.tap(find.text('their note'));
    await settlePage(tester);
    expect(find.byType(SearchScreen), findsNothing);
    expect(viewModel.highlightId, 2, reason: 'the chat is open at the result');
    expect(sentOfType('history'), isEmpty, reason: 'the result was held');
    await closeChat(tester);
  });

  testWidgets("the server's refusal shows as a snack bar with its sentence", (tester) async {
    await showChat(tester, reply: twoNotes());
    await serverSends(tester, errorFrame('edit_expired',
        'Messages can be edited for 15 minutes after they are sent; this one no longer.', ref: 'x'));
    expect(find.text('Messages can be edited for 15 minutes after they are sent; this one no longer.'),
        findsOneWidget);
    await closeChat(tester);
  });

  testWidgets('kicked: the sentence, no reconnect, and Join again', (tester) async {
    await showChat(tester, reply: twoNotes());
    connection.reply(byeFrame('kicked', 'The organiser removed you from the chat. You may join again.'));
    connection.drop();
    for (var i = 0; i < 5; i++) {
      await tester.pump();
    }
    expect(find.text('The organiser removed you from the chat. You may join again.'), findsOneWidget);
    expect(server.connections, hasLength(1), reason: 'no reconnect on its own');
    await tester.tap(find.widgetWithText(TextButton, 'Join again'));
    for (var i = 0; i < 5; i++) {
      await tester.pump();
    }
    expect(server.connections, hasLength(2));
    final again = server.connections[1];
    expect(again.sent.first.type, 'hello');
    again.reply(twoNotes());
    for (var i = 0; i < 5; i++) {
      await tester.pump();
    }
    expect(find.text('Join again'), findsNothing);
    await closeChat(tester);
  });
}
