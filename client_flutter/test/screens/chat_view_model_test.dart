// The chat view model over the real services and the fake server:
// conversations, grouping, unread counts, typing, the outbox in the list;
// own messages by uid, changes (delete, edit, clear) live and from history,
// the room in the title, muted, delete/edit requests, kicked and rejoin.

import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
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
