// The chat view model over the real services and the fake server:
// conversations, grouping, unread counts, typing, the outbox in the list;
// own messages by uid, changes (delete, edit, clear) live and from history,
// the room in the title, muted, delete/edit requests, kicked and rejoin;
// replies, reactions (live and resumed), quotes that follow their original,
// mentions of me counted apart, search with paging and opening a result
// (issue 20).

import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/chat_message.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/screens/chat/chat_view_model.dart';
import 'package:lan_chat/models/result.dart';
import 'package:lan_chat/models/shared_file.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/device.dart';
import 'package:lan_chat/services/file_io.dart';
import 'package:lan_chat/services/file_transfers.dart';

import '../fakes/fake_server.dart';
import '../fakes/memory_files.dart';

class FakeScreenAwake implements ScreenAwake {
  final List<bool> calls = [];

  @override
  Future<void> keepOn(bool on) async => calls.add(on);
}

class FakeFileActions implements FileActions {
  final List<(String, String)> calls = [];
  AppError? failWith;

  Future<Result<void>> _record(String action, String path) async {
    calls.add((action, path));
    final error = failWith;
    return error == null ? const Ok<void>(null) : Err<void>(error);
  }

  @override
  bool get hasGallery => true;

  @override
  Future<Result<void>> open(String path, SharedFile file) => _record('open', path);

  @override
  Future<Result<void>> share(String path, SharedFile file) => _record('share', path);

  @override
  Future<Result<void>> saveToGallery(String path, SharedFile file) => _record('gallery', path);

  @override
  Future<Result<void>> saveAs(String path, SharedFile file) => _record('saveAs', path);
}

class FakeNotifier implements MessageNotifier {
  final List<(int, String, String)> shown = [];
  int prepared = 0;
  int cleared = 0;

  @override
  Future<void> prepare() async {
    prepared++;
  }

  @override
  Future<void> show({required int id, required String title, required String body}) async =>
      shown.add((id, title, body));

  @override
  Future<void> clearAll() async {
    cleared++;
  }
}

class FakeFilePicking implements FilePicking {
  FakeFilePicking(this.files);
  final List<PickedFile> files;
  final List<bool> requests = [];

  @override
  Future<List<PickedFile>> pick({required bool photos}) async {
    requests.add(photos);
    return files;
  }
}

void main() {
  late FakeServer server;
  late ChatViewModel viewModel;
  late FakeScreenAwake awake;
  late FakeFileActions actions;
  late FakeFilePicking picking;
  late FakeNotifier notifier;
  late MemoryFileStore store;

  setUp(() {
    server = FakeServer();
    awake = FakeScreenAwake();
    actions = FakeFileActions();
    notifier = FakeNotifier();
    store = MemoryFileStore();
    picking = FakeFilePicking([
      PickedFile(name: 'a.txt', size: 1, bytes: [1]),
      PickedFile(name: 'b.jpg', size: 2, bytes: [2, 3]),
      PickedFile(name: 'c.pdf', size: 3, bytes: [4, 5, 6]),
    ]);
    final client = ChatClient(
      connector: server.connect,
      address: const ServerAddress(host: '127.0.0.1'),
      nick: 'alice',
      liveness: const Liveness(keepAlive: false),
      sleep: (_) async {},
    );
    viewModel = ChatViewModel(
      client: client,
      transfers: FramedTransfers(client, store),
      screenAwake: awake,
      fileActions: actions,
      filePicking: picking,
      notifier: notifier,
    );
  });

  Json imageMessage(int id, {int size = 3, String name = 'cat.png', String mime = 'image/png'}) =>
      msg(id, text: '', file: {'id': 'f$id', 'name': name, 'size': size, 'sha256': '', 'mime': mime});

  tearDown(() => viewModel.dispose());

  /// Starts the session with exactly this welcome.
  Future<FakeTransport> joinWith(Json reply) async {
    final started = viewModel.start();
    final connection = await server.connection(1);
    await connection.nextOfType('hello');
    connection.reply(reply);
    await started;
    await settle();
    return connection;
  }

  Future<FakeTransport> join(List<Json> history, {bool hasMore = false}) async {
    final started = viewModel.start();
    final connection = await server.connection(1);
    await connection.nextOfType('hello');
    final lastId = history.isEmpty ? 0 : history.last['id'] as int;
    connection.reply(welcome(history: history, hasMore: hasMore, lastId: lastId));
    await started;
    await settle();
    return connection;
  }

  test('groups consecutive messages of one sender; newest first', () async {
    await join([
      msg(1, from: 'bob', ts: '2026-11-25T09:00:00.000Z'),
      msg(2, from: 'bob', ts: '2026-11-25T09:01:00.000Z'),
      msg(3, from: 'alice', ts: '2026-11-25T09:02:00.000Z'),
      msg(4, from: 'bob', ts: '2026-11-25T10:30:00.000Z'),
    ]);
    final entries = viewModel.entries;
    expect(entries.map((e) => e.message!.id), [4, 3, 2, 1]);
    expect(entries.map((e) => e.mine), [false, true, false, false]);
    // bob 1+2 are one group: name on 1, time on 2.
    expect((entries[3].firstOfGroup, entries[3].lastOfGroup), (true, false));
    expect((entries[2].firstOfGroup, entries[2].lastOfGroup), (false, true));
    // An hour later, bob starts a new group.
    expect(entries[0].firstOfGroup, isTrue);
    expect(entries.last.dayLabel, isNotNull, reason: 'the first message opens a day');
  });

  test('history from before the session is not unread', () async {
    await join([msg(1), msg(2, to: 'alice')]);
    expect(viewModel.unreadIn(null), 0);
    expect(viewModel.unreadIn('bob'), 0);
  });

  test('direct messages live in their own conversation, with unread counts', () async {
    final connection = await join([msg(1)]);
    connection.reply(msg(2, from: 'bob', text: 'psst', to: 'alice'));
    connection.reply(msg(3, from: 'carol', text: 'hi all'));
    await settle();
    expect(viewModel.entries.map((e) => e.message!.id), [3, 1], reason: 'room only');
    expect(viewModel.unreadIn('bob'), 1);
    expect(viewModel.unreadElsewhere, 1);
    expect(viewModel.drawerPeers, contains('bob'));

    viewModel.openConversation('bob');
    expect(viewModel.entries.single.message!.id, 2);
    expect(viewModel.entries.single.unreadMarker, isTrue);
    expect(viewModel.unreadIn('bob'), 0);
    expect(viewModel.unreadElsewhere, 0, reason: 'the room was read while shown');
  });

  test('messages go to the shown conversation and show as pending until acknowledged', () async {
    final connection = await join([]);
    viewModel.openConversation('bob');
    viewModel.send('psst');
    final sent = await connection.nextOfType('msg');
    expect(sent['to'], 'bob');
    await settle();
    expect(viewModel.entries.single.pending?.text, 'psst');
    connection.reply(msg(7, from: 'alice', text: 'psst', to: 'bob', cid: sent['cid']! as String));
    await settle();
    final entry = viewModel.entries.single;
    expect(entry.pending, isNull);
    expect(entry.message!.id, 7);
    expect(entry.mine, isTrue);
  });

  test('typing shows for the conversation it concerns', () async {
    final connection = await join([]);
    connection.reply({'type': 'typing', 'from': 'bob'});
    await settle();
    expect(viewModel.typingText, 'bob is typing…');
    viewModel.openConversation('bob');
    expect(viewModel.typingText, isNull, reason: 'bob typed in the room, not to me');
    connection.reply({'type': 'typing', 'from': 'bob', 'to': 'alice'});
    await settle();
    expect(viewModel.typingText, 'bob is typing…');
  });

  test('loads older messages with before = the oldest shown', () async {
    final connection = await join([msg(50), msg(51)], hasMore: true);
    expect(viewModel.hasOlder, isTrue);
    final loading = viewModel.loadOlder();
    expect(await connection.nextOfType('history'), {'type': 'history', 'before': 50, 'limit': 50, 'cid': 'h-1'});
    connection.reply({'type': 'history', 'messages': [msg(48), msg(49)], 'has_more': false});
    await loading;
    await settle();
    expect(viewModel.hasOlder, isFalse);
    expect(viewModel.entries.map((e) => e.message!.id), [51, 50, 49, 48]);
  });

  test('day labels and clock times', () {
    final now = DateTime(2026, 11, 25, 15);
    expect(dayLabel(DateTime(2026, 11, 25, 9), now: now), 'Today');
    expect(dayLabel(DateTime(2026, 11, 24, 23), now: now), 'Yesterday');
    expect(dayLabel(DateTime(2026, 3, 4), now: now), '2026-03-04');
    expect(clockTime(DateTime(2026, 1, 1, 7, 5)), '07:05');
  });

  test('an upload shows above the composer until its file message arrives', () async {
    final connection = await join([]);
    viewModel.sendFile(BytesUploadSource(name: 'a.txt', bytes: Uint8List.fromList([1, 2, 3])));
    final upload = await connection.nextOfType('upload');
    await settle();
    expect(viewModel.activeUploads.single.name, 'a.txt');
    final cid = upload['cid']! as String;
    connection.reply({
      'type': 'upload_ready',
      'upload': 'u1',
      'cid': cid,
      'offset': 0,
      'size': 3,
      'chunk': 1000,
    });
    expect((await connection.nextOfType('chunk'))['upload'], 'u1');
    connection.reply(msg(5, from: 'alice', text: '', cid: cid, file: {
      'id': 'f5',
      'name': 'a.txt',
      'size': 3,
      'sha256': '',
      'mime': 'text/plain',
    }));
    await settle();
    expect(viewModel.activeUploads, isEmpty);
    expect(viewModel.entries.single.file?.name, 'a.txt');
    expect(viewModel.entries.single.mine, isTrue);
  });

  test('small images are fetched as they arrive, large ones and other files are not', () async {
    final connection = await join([
      imageMessage(1),
      imageMessage(2, size: 50 * 1024 * 1024),
      imageMessage(3, name: 'notes.pdf', mime: 'application/pdf'),
    ]);
    expect(await connection.nextOfType('download'), {'type': 'download', 'file': 'f1', 'offset': 0});
    connection.reply(imageMessage(4));
    expect((await connection.nextOfType('download'))['file'], 'f4');
    await settle();
    expect(connection.unread.where((f) => f.type == 'download'), isEmpty);
  });

  test('a fetched image gets a local path, for the inline thumbnail and the viewer', () async {
    final connection = await join([imageMessage(1)]);
    await connection.nextOfType('download');
    connection.reply({
      'type': 'download_start',
      'file': 'f1',
      'name': 'cat.png',
      'size': 3,
      'sha256': '',
      'mime': 'image/png',
      'offset': 0,
    });
    connection.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 0}, Uint8List.fromList([7, 8, 9]));
    connection.reply({'type': 'download_end', 'file': 'f1', 'size': 3});
    await settle();
    final file = viewModel.entries.single.file!;
    expect(viewModel.localPathOf(file), 'memory/f1/cat.png');
    await viewModel.shareFile(file);
    await viewModel.saveToGallery(file);
    await viewModel.saveFileAs(file);
    await viewModel.openFile(file);
    expect(actions.calls, [
      ('share', 'memory/f1/cat.png'),
      ('gallery', 'memory/f1/cat.png'),
      ('saveAs', 'memory/f1/cat.png'),
      ('open', 'memory/f1/cat.png'),
    ]);
  });

  test('a failed save is told to the person', () async {
    final notices = <String>[];
    viewModel.notices.listen(notices.add);
    final connection = await join([imageMessage(1)]);
    await connection.nextOfType('download');
    connection.reply({'type': 'download_start', 'file': 'f1', 'name': 'cat.png', 'size': 3,
        'sha256': '', 'mime': 'image/png', 'offset': 0});
    connection.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 0}, Uint8List.fromList([7, 8, 9]));
    connection.reply({'type': 'download_end', 'file': 'f1', 'size': 3});
    await settle();
    actions.failWith = const AppError('gallery_accessDenied', 'Allow LAN Chat to add photos.');
    await viewModel.saveToGallery(viewModel.entries.single.file!);
    await settle();
    expect(notices, contains('Allow LAN Chat to add photos.'));
  });

  test('the screen stays awake while a file moves', () async {
    final connection = await join([]);
    viewModel.sendFile(BytesUploadSource(name: 'a.txt', bytes: Uint8List.fromList([1, 2, 3])));
    final upload = await connection.nextOfType('upload');
    await settle();
    expect(awake.calls, [true]);
    connection.reply(msg(5, from: 'alice', text: '', cid: upload['cid']! as String, file: {
      'id': 'f5',
      'name': 'a.txt',
      'size': 3,
      'sha256': '',
      'mime': 'text/plain',
    }));
    await settle();
    expect(awake.calls, [true, false]);
  });

  test('several picked files are sent, each as its own upload', () async {
    final connection = await join([]);
    await viewModel.pickAndSend(photos: false);
    final names = [for (var i = 0; i < 3; i++) (await connection.nextOfType('upload'))['name']];
    expect(names, ['a.txt', 'b.jpg', 'c.pdf']);
    expect(picking.requests, [false]);
  });

  test('a text over the limit is refused and says why', () async {
    final notices = <String>[];
    viewModel.notices.listen(notices.add);
    final connection = await join([]);
    final result = viewModel.send('é' * 8193);
    expect(result, isA<Err<void>>());
    await settle();
    expect(notices.single, contains('16384 bytes'));
    expect(connection.unread.where((f) => f.type == 'msg'), isEmpty);
  });

  test('coming back to the foreground checks the connection with a ping', () async {
    final connection = await join([]);
    viewModel.setVisible(false);
    viewModel.setVisible(true);
    expect((await connection.nextOfType('ping'))['type'], 'ping');
  });

  test('messages that arrive while the app is in the background are notified', () async {
    final connection = await join([msg(1)]);
    expect(notifier.prepared, 1, reason: 'permission is asked while the app is in front');
    expect(notifier.shown, isEmpty, reason: 'the history is not news');
    viewModel.setVisible(false);
    connection.reply(msg(2, from: 'bob', text: 'lunch?'));
    connection.reply(msg(3, from: 'carol', text: 'psst', to: 'alice'));
    connection.reply(msg(4, from: 'alice', text: 'my own, from another device'));
    connection.reply(msg(5, from: 'bob', text: 'anyone?'));
    await settle();
    expect(notifier.shown, [
      (0, 'bob · Everyone', 'lunch?'),
      (notificationId('carol'), 'carol', 'psst'),
      (0, 'bob · Everyone', 'anyone? (+1 more)'),
    ]);
    viewModel.setVisible(true);
    expect(notifier.cleared, 1);
    connection.reply(msg(6, from: 'bob', text: 'seen'));
    await settle();
    expect(notifier.shown, hasLength(3), reason: 'nothing is notified while the app is in front');
  });

  test('a file message is notified by its name', () async {
    final connection = await join([]);
    viewModel.setVisible(false);
    connection.reply(imageMessage(7, name: 'notes.pdf', mime: 'application/pdf'));
    await settle();
    expect(notifier.shown.single.$3, 'sent notes.pdf');
  });

  group('identity', () {
    test('own messages are those with my uid, not my nick', () async {
      await joinWith(welcome(uid: 7, history: [
        msg(1, from: 'alice', uid: 3, text: 'from the previous alice'),
        msg(2, from: 'alice', uid: 7, text: 'mine'),
      ], lastId: 2));
      expect(viewModel.entries.map((e) => (e.message!.id, e.mine)), [(2, true), (1, false)]);
      final previous = viewModel.entries.last.message!;
      expect(viewModel.canDelete(previous), isFalse);
      expect(viewModel.canEdit(previous), isFalse);
    });
  });

  group('changes', () {
    Json pdf(int id, {String from = 'alice', int uid = 7}) => msg(id, from: from, uid: uid, text: '',
        file: {'id': 'f$id', 'name': 'notes.pdf', 'size': 3, 'sha256': '', 'mime': 'application/pdf'});

    test('delete: a tombstone in place, its file gone; by the organiser says so', () async {
      final connection = await joinWith(welcome(uid: 7, history: [
        msg(1, from: 'alice', uid: 7, text: 'oops'),
        pdf(2),
        msg(3, from: 'bob', uid: 8, text: 'rude'),
      ], lastId: 3));
      connection.reply(changeFrame(4, 'delete', target: 1));
      connection.reply(changeFrame(5, 'delete', target: 2));
      connection.reply(changeFrame(6, 'delete', target: 3, by: 'operator'));
      await settle();
      final byId = {for (final e in viewModel.entries) e.message!.id: e};
      expect(byId.keys, [3, 2, 1], reason: 'the places stay');
      expect(byId[1]!.deleted, isTrue);
      expect(byId[1]!.text, isEmpty);
      expect(byId[1]!.removedLabel, 'Message removed');
      expect(byId[2]!.file, isNull, reason: 'the file is gone with it');
      expect(byId[3]!.removedLabel, 'Removed by the organiser');
      expect(viewModel.canDelete(byId[1]!.message!), isFalse, reason: 'already removed');
    });

    test('delete of an image being fetched cancels the download', () async {
      final connection = await joinWith(welcome(uid: 7, history: [
        msg(1, from: 'bob', uid: 8, text: '', file: {
          'id': 'f1', 'name': 'cat.png', 'size': 3, 'sha256': '', 'mime': 'image/png'}),
      ], lastId: 1));
      expect((await connection.nextOfType('download'))['file'], 'f1');
      connection.reply(changeFrame(2, 'delete', target: 1, by: 'operator'));
      expect(await connection.nextOfType('download_cancel'), {'type': 'download_cancel', 'file': 'f1'});
    });

    test('edit: the new text, marked edited', () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(1, from: 'alice', uid: 7, text: 'teh')], lastId: 1));
      expect(viewModel.entries.single.edited, isFalse);
      connection.reply(changeFrame(2, 'edit', target: 1, text: 'the'));
      await settle();
      final entry = viewModel.entries.single;
      expect(entry.text, 'the');
      expect(entry.edited, isTrue);
      expect(entry.message!.edited, DateTime.parse('2026-11-25T09:20:00.000Z'));
    });

    test('a removed or edited message in the history shows as such', () async {
      await joinWith(welcome(uid: 7, history: [
        msg(1, from: 'bob', uid: 8, text: '', deleted: 'operator'),
        msg(2, from: 'bob', uid: 8, text: 'new text', edited: '2026-11-25T09:30:00.000Z'),
      ], lastId: 2));
      final entries = viewModel.entries;
      expect(entries.last.removedLabel, 'Removed by the organiser');
      expect(entries.first.edited, isTrue);
    });

    test('clear: everything older goes, a note says so, later messages stay', () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(1), msg(2)], hasMore: true, lastId: 2));
      expect(viewModel.hasOlder, isTrue);
      connection.reply(changeFrame(3, 'clear', by: 'operator'));
      connection.reply(msg(4, text: 'after the clear'));
      await settle();
      expect(viewModel.entries.map((e) => e.message!.id), [4]);
      expect(viewModel.historyNote, 'The organiser cleared the history.');
      expect(viewModel.hasOlder, isFalse, reason: 'nothing older exists');
    });

    test('a change to a message not held is ignored', () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(10)], lastId: 10));
      connection.reply(changeFrame(11, 'delete', target: 3));
      connection.reply(changeFrame(12, 'edit', target: 4, text: 'x'));
      await settle();
      expect(viewModel.entries.single.message!.id, 10);
      expect(viewModel.entries.single.deleted, isFalse);
      expect(viewModel.entries.single.text, 'hello');
    });

    test('changes in a resumed welcome and the gap pages are applied in order', () async {
      final first = await joinWith(welcome(uid: 7, history: [
        msg(1, text: 'one'),
        msg(2, text: 'two'),
        msg(3, text: 'three'),
      ], lastId: 3));
      first.drop();
      final second = await server.connection(2);
      final hello = await second.nextOfType('hello');
      expect(hello['since'], 3);
      second.reply(welcome(uid: 7, history: [
        changeFrame(300, 'edit', target: 1, text: 'one, fixed'),
        msg(301, text: 'newest'),
      ], hasMore: true, lastId: 301));
      final request = await second.nextOfType('history');
      second.reply({
        'type': 'history',
        'messages': [
          changeFrame(4, 'delete', target: 2),
          changeFrame(5, 'edit', target: 3, text: 'three, first edit'),
          changeFrame(6, 'edit', target: 3, text: 'three, second edit'),
        ],
        'has_more': false,
        'cid': request['cid'],
      });
      await settle();
      final texts = {for (final e in viewModel.entries) e.message!.id: (e.text, e.deleted)};
      expect(texts, {
        301: ('newest', false),
        3: ('three, second edit', false),
        2: ('', true),
        1: ('one, fixed', false),
      });
    });
  });

  group('replies, reactions, mentions, search (issue 20)', () {
    test('react changes set the whole reactions live; mine is known by uid; a tap toggles',
        () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(1, uid: 8)], lastId: 1));
      connection.reply(reactFrame(2, target: 1, uid: 8, emoji: '👍', reactions: {'👍': [8]}));
      await settle();
      final held = viewModel.entries.single.message!;
      expect(viewModel.entries.single.reactions, {'👍': [8]});
      expect(viewModel.myReaction(held), isNull);

      viewModel.toggleReaction(held, '👍');
      expect(await connection.nextOfType('react'), allOf(containsPair('id', 1), containsPair('emoji', '👍')));
      connection.reply(reactFrame(3, target: 1, uid: 7, emoji: '👍', reactions: {'👍': [8, 7]}));
      await settle();
      final mine = viewModel.entries.single.message!;
      expect(viewModel.myReaction(mine), '👍');

      viewModel.toggleReaction(mine, '👍');
      expect((await connection.nextOfType('react'))['emoji'], '', reason: 'the same emoji takes it back');
      viewModel.toggleReaction(mine, '😂');
      expect((await connection.nextOfType('react'))['emoji'], '😂', reason: 'another one replaces mine');
      connection.reply(reactFrame(4, target: 1, uid: 7, emoji: '', reactions: {'👍': [8]}));
      await settle();
      expect(viewModel.entries.single.reactions, {'👍': [8]});
      expect(viewModel.myReaction(viewModel.entries.single.message!), isNull);
    });

    test('react changes missed while away arrive in the resumed welcome and are applied', () async {
      final first = await joinWith(welcome(uid: 7, history: [
        msg(1, uid: 8, reactions: {'❤️': [8]}),
        msg(2, uid: 8),
      ], lastId: 2));
      expect(viewModel.entries.last.reactions, {'❤️': [8]}, reason: 'reactions in the history');
      first.drop();
      final second = await server.connection(2);
      expect((await second.nextOfType('hello'))['since'], 2);
      second.reply(welcome(uid: 7, history: [
        reactFrame(3, target: 1, uid: 9, emoji: '❤️', reactions: {'❤️': [8, 9]}),
        reactFrame(4, target: 2, uid: 9, emoji: '🙏', reactions: {'🙏': [9]}),
        reactFrame(5, target: 1, uid: 8, emoji: '', reactions: {'❤️': [9]}),
      ], lastId: 5));
      await settle();
      final byId = {for (final e in viewModel.entries) e.message!.id: e.reactions};
      expect(byId, {2: {'🙏': [9]}, 1: {'❤️': [9]}});
    });

    test('quotes follow an edit and a delete of their original, held or not', () async {
      final connection = await joinWith(welcome(uid: 7, history: [
        msg(5, from: 'bob', uid: 8, text: 'see you at 10'),
        msg(6, from: 'alice', uid: 7, text: 'ok', replyTo: quote(5, text: 'see you at 10')),
        msg(7, from: 'carol', uid: 9, text: 'me too', replyTo: quote(3, from: 'dan', text: 'lunch?')),
      ], lastId: 7));
      ReplyQuote quoteIn(int id) => viewModel.entries.firstWhere((e) => e.message!.id == id).quote!;
      expect(quoteIn(6).text, 'see you at 10');

      connection.reply(changeFrame(8, 'edit', target: 5, text: 'see you at 11'));
      await settle();
      expect(quoteIn(6).text, 'see you at 11');

      connection.reply(changeFrame(9, 'delete', target: 5));
      connection.reply(changeFrame(10, 'delete', target: 3, by: 'operator'));
      await settle();
      expect((quoteIn(6).deleted, quoteIn(6).text), (true, ''));
      expect(quoteIn(7).deleted, isTrue, reason: 'the original (3) was never held');
    });

    test('Reply: the composer quote, reply_to on the wire, then no reply pending', () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(5, uid: 8, text: 'ready?')], lastId: 5));
      final original = viewModel.entries.single.message!;
      viewModel.startReply(original);
      expect((viewModel.replyQuote!.id, viewModel.replyQuote!.text), (5, 'ready?'));
      viewModel.send('yes!');
      final sent = await connection.nextOfType('msg');
      expect((sent['text'], sent['reply_to']), ('yes!', 5));
      await settle();
      expect(viewModel.replyingTo, isNull);
      expect(viewModel.entries.first.pending, isNotNull);
      expect(viewModel.entries.first.quote?.id, 5, reason: 'the pending reply shows its quote');
      viewModel.startReply(original);
      viewModel.cancelReply();
      viewModel.send('no quote');
      expect((await connection.nextOfType('msg')).containsKey('reply_to'), isFalse);
    });

    test('a message that mentions me is flagged and counted apart', () async {
      final connection = await joinWith(welcome(uid: 7, history: [], lastId: 0));
      viewModel.openConversation('bob'); // the room is not shown: its messages stay unread
      connection.reply(msg(1, from: 'bob', uid: 8, text: '@alice look', mentions: ['Alice']));
      connection.reply(msg(2, from: 'bob', uid: 8, text: 'and you @carol', mentions: ['carol']));
      connection.reply(msg(3, from: 'alice', uid: 7, text: 'me, @alice', mentions: ['alice']));
      await settle();
      expect(viewModel.unreadIn(null), 2);
      expect(viewModel.unreadMentionsIn(null), 1);
      expect(viewModel.unreadMentionsElsewhere, 1);
      viewModel.openConversation(null);
      final flags = {for (final e in viewModel.entries) e.message!.id: e.mentionsMe};
      expect(flags, {3: false, 2: false, 1: true}, reason: 'nicks compare case-insensitively; not my own');
      expect(viewModel.unreadMentionsIn(null), 0, reason: 'read once shown');
    });

    test('@ suggestions: online nicks that start with the prefix; in a DM only its peer', () async {
      await joinWith(welcome(uid: 7, users: ['alice', 'bob', 'Bea', 'carol']));
      expect(viewModel.mentionCandidates('b'), ['Bea', 'bob']);
      expect(viewModel.mentionCandidates(''), ['Bea', 'bob', 'carol']);
      viewModel.openConversation('carol');
      expect(viewModel.mentionCandidates(''), ['carol']);
    });

    test('search: results newest first, "More results" asks before the oldest', () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(90)], lastId: 90));
      final first = viewModel.search(' link ');
      expect(viewModel.searchState.loading, isTrue);
      final request = await connection.nextOfType('search');
      expect((request['text'], request['cid'], request.containsKey('before')), ('link', 's-1', false));
      connection.reply(searchResultsFrame('s-1', [msg(60, text: 'a link'), msg(40, text: 'link two')],
          hasMore: true));
      await first;
      expect(viewModel.searchState.results.map((m) => m.id), [60, 40]);
      expect((viewModel.searchState.hasMore, viewModel.searchState.loading), (true, false));

      final more = viewModel.moreResults();
      final next = await connection.nextOfType('search');
      expect((next['before'], next['cid']), (40, 's-2'));
      connection.reply(searchResultsFrame('s-2', [msg(12, text: 'old link')]));
      await more;
      expect(viewModel.searchState.results.map((m) => m.id), [60, 40, 12]);
      expect(viewModel.searchState.hasMore, isFalse);
      expect(viewModel.entries.map((e) => e.message!.id), [90], reason: 'results stay out of the chat');

      connection.reply(changeFrame(91, 'delete', target: 40));
      await settle();
      expect(viewModel.searchState.results.map((m) => m.id), [60, 12], reason: 'never removed ones');
    });

    test('a search kept to one direct conversation sends with, also for its next page', () async {
      final connection = await joinWith(welcome(uid: 7));
      final first = viewModel.search('notes', withNick: 'bob');
      final request = await connection.nextOfType('search');
      expect(request['with'], 'bob');
      connection.reply(searchResultsFrame('s-1', [msg(20, to: 'alice', text: 'notes')], hasMore: true));
      await first;
      expect(viewModel.searchState.withNick, 'bob');
      final more = viewModel.moreResults();
      expect((await connection.nextOfType('search'))['with'], 'bob');
      connection.reply(searchResultsFrame('s-2', []));
      await more;
      expect(viewModel.searchState.hasMore, isFalse);
    });

    test('a newer query wins over a slower older one; an error is kept as a sentence', () async {
      final connection = await joinWith(welcome(uid: 7));
      final slow = viewModel.search('first');
      await connection.nextOfType('search');
      final fast = viewModel.search('second');
      await connection.nextOfType('search');
      connection.reply(searchResultsFrame('s-2', [msg(5, text: 'second')]));
      await fast;
      connection.reply(searchResultsFrame('s-1', [msg(4, text: 'first')]));
      await slow;
      expect((viewModel.searchState.query, viewModel.searchState.results.single.id), ('second', 5));
      final failing = viewModel.search('third');
      await connection.nextOfType('search');
      connection.reply(errorFrame('rate_limited', 'Too many requests; slow down.', ref: 's-3'));
      await failing;
      expect(viewModel.searchState.error, 'Too many requests; slow down.');
    });

    test('opening a result not held loads its neighbours and opens its conversation', () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(90)], lastId: 90));
      final result = ChatMessage.fromJson(msg(30, from: 'bob', uid: 8, text: 'the link', to: 'alice'));
      final opening = viewModel.openMessage(result);
      final older = await connection.nextOfType('history');
      expect(older, {'type': 'history', 'before': 31, 'limit': 10, 'cid': 'h-1'});
      connection.reply({'type': 'history', 'messages': [msg(29, to: 'alice'), msg(30, to: 'alice', text: 'the link')],
          'has_more': true, 'cid': 'h-1'});
      final newer = await connection.nextOfType('history');
      expect(newer, {'type': 'history', 'before': 41, 'after': 30, 'limit': 10, 'cid': 'h-2'});
      connection.reply({'type': 'history', 'messages': [msg(31, to: 'alice')], 'has_more': false, 'cid': 'h-2'});
      expect(await opening, isTrue);
      expect(viewModel.peer, 'bob', reason: 'a direct message opens its conversation');
      expect(viewModel.entries.map((e) => e.message!.id), [31, 30, 29]);
      expect(viewModel.highlightId, 30);
      expect(viewModel.entries[1].highlighted, isTrue);
    });

    test('an old result leaves a gap above its neighbours, loaded by "the messages in between"',
        () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(90), msg(91)], lastId: 91));
      final opening = viewModel.openMessage(ChatMessage.fromJson(msg(30, text: 'old link')));
      final older = await connection.nextOfType('history');
      connection.reply({'type': 'history', 'messages': [msg(29), msg(30)], 'has_more': true, 'cid': older['cid']});
      final newer = await connection.nextOfType('history');
      connection.reply({'type': 'history', 'messages': [msg(31)], 'has_more': false, 'cid': newer['cid']});
      await opening;
      List<int> gapRows() => [for (final e in viewModel.entries) if (e.gapBefore) e.message!.id];
      expect(viewModel.entries.map((e) => e.message!.id), [91, 90, 31, 30, 29]);
      expect(gapRows(), [90], reason: 'ids 41-89 were never asked for');
      expect(viewModel.hasOlder, isTrue, reason: 'the page before 31 had more');

      final first = viewModel.loadGap();
      final fill = await connection.nextOfType('history');
      expect((fill['after'], fill['before']), (40, 90));
      connection.reply({'type': 'history', 'messages': [msg(60), msg(61)], 'has_more': true, 'cid': fill['cid']});
      await first;
      expect(gapRows(), [60], reason: 'still missing: 41-59');

      final second = viewModel.loadGap();
      final rest = await connection.nextOfType('history');
      expect((rest['after'], rest['before']), (40, 60));
      connection.reply({'type': 'history', 'messages': [msg(45)], 'has_more': false, 'cid': rest['cid']});
      await second;
      expect(gapRows(), isEmpty);
      expect(viewModel.entries.map((e) => e.message!.id), [91, 90, 61, 60, 45, 31, 30, 29]);
    });

    test('opening a held result asks for nothing', () async {
      final connection = await joinWith(welcome(uid: 7, history: [msg(89), msg(90)], lastId: 90));
      expect(await viewModel.openMessage(viewModel.entries.last.message!), isTrue);
      expect(connection.sent.where((f) => f.type == 'history'), isEmpty);
      expect(viewModel.highlightId, 89);
    });
  });

  group('room and muted', () {
    test('the room name is the title and its topic the subtitle; else the server address', () async {
      final connection = await joinWith(welcome(uid: 7));
      expect(viewModel.title, 'Everyone');
      expect(viewModel.subtitle, '127.0.0.1:5555 · alice');
      connection.reply({'type': 'room', 'name': 'Physics 3B', 'topic': 'Lab at 10', 'locked': false});
      await settle();
      expect(viewModel.title, 'Physics 3B');
      expect(viewModel.subtitle, 'Lab at 10');
      viewModel.openConversation('bob');
      expect(viewModel.title, 'bob');
    });

    test('muted: nothing is sent, the sentence says why; unmuted: back to normal', () async {
      final notices = <String>[];
      viewModel.notices.listen(notices.add);
      final connection = await joinWith(welcome(uid: 7, muted: true, history: [
        msg(1, from: 'alice', uid: 7, text: 'before'),
      ], lastId: 1));
      expect(viewModel.muted, isTrue);
      expect(viewModel.mutedText, defaultMutedText);
      expect(viewModel.send('hello?'), isA<Err<void>>());
      expect(viewModel.canEdit(viewModel.entries.single.message!), isFalse, reason: 'edit is refused too');
      expect(viewModel.canDelete(viewModel.entries.single.message!), isTrue, reason: 'delete is not');
      connection.reply({'type': 'notice', 'code': 'unmuted', 'message': 'You may post again.'});
      await settle();
      expect(viewModel.muted, isFalse);
      expect(notices, contains('You may post again.'));
      connection.reply({'type': 'notice', 'code': 'muted', 'message': 'Muted by the organiser for 10 minutes.'});
      await settle();
      expect(viewModel.mutedText, 'Muted by the organiser for 10 minutes.');
      await settle();
      expect(connection.sent.where((f) => f.type == 'msg'), isEmpty);
    });
  });

  group('delete and edit', () {
    test('send their frames; the server refusal is a notice with its sentence', () async {
      final notices = <String>[];
      viewModel.notices.listen(notices.add);
      final connection = await joinWith(welcome(uid: 7, history: [
        msg(1, from: 'alice', uid: 7, text: 'typo'),
      ], lastId: 1));
      final message = viewModel.entries.single.message!;
      expect(viewModel.canEdit(message), isTrue);
      viewModel.editMessage(1, 'fixed');
      final edit = await connection.nextOfType('edit');
      expect((edit['id'], edit['text']), (1, 'fixed'));
      connection.reply(errorFrame('edit_expired',
          'Messages can be edited for 15 minutes after they are sent; this one no longer.',
          ref: edit['cid'] as String));
      viewModel.deleteMessage(1);
      final delete = await connection.nextOfType('delete');
      expect(delete['id'], 1);
      connection.reply(errorFrame('unknown_message', 'There is no message 1 to change.',
          ref: delete['cid'] as String));
      await settle();
      expect(notices, [
        'Messages can be edited for 15 minutes after they are sent; this one no longer.',
        'There is no message 1 to change.',
      ]);
      expect(viewModel.status, ConnectionStatus.online);
    });

    test('a file message can be removed, not edited', () async {
      await joinWith(welcome(uid: 7, history: [
        msg(1, from: 'alice', uid: 7, text: '', file: {
          'id': 'f1', 'name': 'a.pdf', 'size': 3, 'sha256': '', 'mime': 'application/pdf'}),
      ], lastId: 1));
      final message = viewModel.entries.single.message!;
      expect(viewModel.canDelete(message), isTrue);
      expect(viewModel.canEdit(message), isFalse);
    });
  });

  group('removed by the organiser', () {
    test('kicked: the sentence, no reconnect, Join again connects by hand', () async {
      final first = await joinWith(welcome(uid: 7));
      first.reply(byeFrame('kicked', 'The organiser removed you from the chat. You may join again.'));
      first.drop();
      await settle();
      expect(viewModel.status, ConnectionStatus.stopped);
      expect(viewModel.stoppedByOthers, isTrue);
      expect(viewModel.statusError, 'The organiser removed you from the chat. You may join again.');
      expect(viewModel.canRejoin, isTrue);
      expect(server.connections, hasLength(1));
      viewModel.rejoin();
      final second = await server.connection(2);
      await second.nextOfType('hello');
      second.reply(welcome(uid: 7));
      await settle();
      expect(viewModel.status, ConnectionStatus.online);
      expect(viewModel.canRejoin, isFalse);
    });

    test('banned: the sentence, no Join again', () async {
      final first = await joinWith(welcome(uid: 7));
      first.reply(byeFrame('banned', 'The organiser banned this device until tomorrow.'));
      first.drop();
      await settle();
      expect(viewModel.stoppedByOthers, isTrue);
      expect(viewModel.canRejoin, isFalse);
      expect(server.connections, hasLength(1));
    });
  });
}
