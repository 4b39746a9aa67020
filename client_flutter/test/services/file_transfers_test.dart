// Framed file transfers (PROTOCOL.md §5) with the real ChatClient and
// FramedTransfers against the fake server: chunking, acknowledgement by the
// file message, resume after a reconnect, cancel, checksum check.

import 'dart:async';
import 'dart:typed_data';

import 'package:crypto/crypto.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/models/shared_file.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/file_io.dart';
import 'package:lan_chat/services/file_transfers.dart';

import '../fakes/fake_server.dart';
import '../fakes/memory_files.dart';

const address = ServerAddress(host: '127.0.0.1', token: 'tok');

Uint8List sampleBytes(int length) =>
    Uint8List.fromList(List<int>.generate(length, (i) => (i * 7) % 256));

void main() {
  late FakeServer server;
  late ChatClient client;
  late MemoryFileStore store;
  late FramedTransfers transfers;
  late List<TransferStatus> updates;

  setUp(() {
    server = FakeServer();
    client = ChatClient(
      connector: server.connect,
      address: address,
      nick: 'alice',
      liveness: const Liveness(keepAlive: false),
      sleep: (_) async {},
    );
    store = MemoryFileStore();
    transfers = FramedTransfers(client, store);
    updates = [];
    transfers.updates.listen(updates.add);
  });

  tearDown(() async {
    await transfers.dispose();
    await client.dispose();
  });

  Future<FakeTransport> join() async {
    final started = client.start();
    final connection = await server.connection(1);
    await connection.nextOfType('hello');
    connection.reply(welcome());
    await started;
    await settle();
    return connection;
  }

  Future<FakeTransport> reconnect(int count, FakeTransport old) async {
    old.drop();
    final connection = await server.connection(count);
    await connection.nextOfType('hello');
    connection.reply(welcome());
    await settle();
    return connection;
  }

  Json fileMessage(int id, String cid, Uint8List bytes, {String name = 'cat.jpg'}) => msg(
        id,
        from: 'alice',
        text: '',
        cid: cid,
        file: {
          'id': 'f$id',
          'name': name,
          'size': bytes.length,
          'sha256': sha256.convert(bytes).toString(),
          'mime': 'image/jpeg',
        },
      );

  /// Reads chunk frames until [until] bytes (absolute offset) arrived.
  Future<List<int>> readChunks(FakeTransport connection, String upload, int from, int until) async {
    final received = <int>[];
    while (from + received.length < until) {
      final frame = await connection.next();
      expect(frame.type, 'chunk');
      expect(frame.header, {'type': 'chunk', 'upload': upload, 'offset': from + received.length});
      received.addAll(frame.payload);
    }
    return received;
  }

  group('upload', () {
    test('announces the file, sends it in chunks, completes on the file message', () async {
      final connection = await join();
      final bytes = sampleBytes(2500);
      final key = transfers.upload(
        BytesUploadSource(name: 'cat.jpg', bytes: bytes, mime: 'image/jpeg'),
        caption: 'my cat',
      );
      expect(await connection.nextOfType('upload'), {
        'type': 'upload',
        'name': 'cat.jpg',
        'size': 2500,
        'cid': key,
        'sha256': sha256.convert(bytes).toString(),
        'mime': 'image/jpeg',
        'text': 'my cat',
      });
      connection.reply({
        'type': 'upload_ready',
        'upload': 'u1',
        'cid': key,
        'offset': 0,
        'size': 2500,
        'chunk': 1000,
      });
      expect(await readChunks(connection, 'u1', 0, 2500), bytes);
      expect(updates.last.state, TransferState.running);
      connection.reply(fileMessage(44, key, bytes));
      await settle();
      expect(updates.last.state, TransferState.done);
      expect(updates.last.transferred, 2500);
    });

    test('a direct upload carries to', () async {
      final connection = await join();
      transfers.upload(BytesUploadSource(name: 'a.txt', bytes: sampleBytes(3)), to: 'bob');
      final upload = await connection.nextOfType('upload');
      expect(upload['to'], 'bob');
      expect(upload.containsKey('mime'), isFalse);
    });

    test('resumes from the offset the server reports after a reconnect', () async {
      final first = await join();
      final bytes = sampleBytes(3000);
      final key = transfers.upload(BytesUploadSource(name: 'big.bin', bytes: bytes));
      await first.nextOfType('upload');
      first.reply({
        'type': 'upload_ready',
        'upload': 'u9',
        'cid': key,
        'offset': 0,
        'size': 3000,
        'chunk': 1000,
      });
      await readChunks(first, 'u9', 0, 1000); // the server got only the first chunk
      final second = await reconnect(2, first);
      expect(await second.nextOfType('upload_status'), {'type': 'upload_status', 'upload': 'u9'});
      second.reply({
        'type': 'upload_ready',
        'upload': 'u9',
        'cid': key,
        'offset': 1000,
        'size': 3000,
        'chunk': 1000,
      });
      expect(await readChunks(second, 'u9', 1000, 3000), bytes.sublist(1000));
      second.reply(fileMessage(45, key, bytes, name: 'big.bin'));
      await settle();
      expect(updates.last.state, TransferState.done);
    });

    test('an upload the server forgot starts over with the same cid', () async {
      final first = await join();
      final key = transfers.upload(BytesUploadSource(name: 'x.bin', bytes: sampleBytes(10)));
      await first.nextOfType('upload');
      first.reply({
        'type': 'upload_ready',
        'upload': 'u2',
        'cid': key,
        'offset': 0,
        'size': 10,
        'chunk': 1000,
      });
      await first.nextOfType('chunk');
      final second = await reconnect(2, first);
      await second.nextOfType('upload_status');
      second.reply({
        'type': 'error',
        'code': 'unknown_upload',
        'message': 'No upload of yours is in progress.',
        'ref': 'u2',
        'fatal': false,
      });
      final again = await second.nextOfType('upload');
      expect(again['cid'], key);
    });

    test('an empty file needs no chunk: the file message completes it', () async {
      final connection = await join();
      final empty = Uint8List(0);
      final key = transfers.upload(BytesUploadSource(name: 'empty.txt', bytes: empty));
      expect((await connection.nextOfType('upload'))['size'], 0);
      connection.reply(fileMessage(46, key, empty, name: 'empty.txt'));
      await settle();
      expect(updates.last.state, TransferState.done);
    });

    test('cancel sends upload_cancel and stops', () async {
      final connection = await join();
      final key = transfers.upload(BytesUploadSource(name: 'x.bin', bytes: sampleBytes(5000)));
      await connection.nextOfType('upload');
      connection.reply({
        'type': 'upload_ready',
        'upload': 'u3',
        'cid': key,
        'offset': 0,
        'size': 5000,
        'chunk': 1000,
      });
      await connection.nextOfType('chunk');
      transfers.cancel(key);
      expect(await connection.nextOfType('upload_cancel'), {'type': 'upload_cancel', 'upload': 'u3'});
      await settle();
      expect(updates.last.state, TransferState.cancelled);
    });

    test('a server error about the upload fails it', () async {
      final connection = await join();
      final key = transfers.upload(BytesUploadSource(name: 'huge.bin', bytes: sampleBytes(10)));
      await connection.nextOfType('upload');
      connection.reply({
        'type': 'error',
        'code': 'file_too_large',
        'message': 'Files are limited to 5 bytes.',
        'ref': key,
        'fatal': false,
      });
      await settle();
      expect(updates.last.state, TransferState.failed);
      expect(updates.last.error?.code, 'file_too_large');
    });
  });

  group('download', () {
    final bytes = sampleBytes(10);
    final file = SharedFile(
      id: 'f1',
      name: 'notes.txt',
      size: 10,
      sha256: sha256.convert(bytes).toString(),
      mime: 'text/plain',
    );

    test('downloads, resumes after a reconnect, checks and stores the file', () async {
      final first = await join();
      transfers.download(file);
      expect(await first.nextOfType('download'), {'type': 'download', 'file': 'f1', 'offset': 0});
      first.reply({
        'type': 'download_start',
        'file': 'f1',
        'name': 'notes.txt',
        'size': 10,
        'sha256': file.sha256,
        'mime': 'text/plain',
        'offset': 0,
      });
      first.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 0}, bytes.sublist(0, 6));
      await settle();
      expect(updates.last.transferred, 6);
      final second = await reconnect(2, first);
      expect(await second.nextOfType('download'), {'type': 'download', 'file': 'f1', 'offset': 6});
      second.reply({
        'type': 'download_start',
        'file': 'f1',
        'name': 'notes.txt',
        'size': 10,
        'sha256': file.sha256,
        'mime': 'text/plain',
        'offset': 6,
      });
      second.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 6}, bytes.sublist(6));
      second.reply({'type': 'download_end', 'file': 'f1', 'size': 10});
      await settle();
      expect(updates.last.state, TransferState.done);
      expect(updates.last.path, 'memory/f1/notes.txt');
      expect(store.complete['f1'], bytes);
      expect(await transfers.localPath(file), 'memory/f1/notes.txt');
    });

    test('a file whose SHA-256 differs is refused', () async {
      final connection = await join();
      transfers.download(file);
      await connection.nextOfType('download');
      connection.reply({
        'type': 'download_start',
        'file': 'f1',
        'name': 'notes.txt',
        'size': 10,
        'sha256': file.sha256,
        'mime': 'text/plain',
        'offset': 0,
      });
      connection.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 0}, Uint8List(10));
      connection.reply({'type': 'download_end', 'file': 'f1', 'size': 10});
      await settle();
      expect(updates.last.state, TransferState.failed);
      expect(store.complete, isEmpty);
      expect(store.partial, isEmpty, reason: 'the bad bytes are discarded');
    });

    Json start(int offset) => {
          'type': 'download_start',
          'file': 'f1',
          'name': 'notes.txt',
          'size': 10,
          'sha256': file.sha256,
          'mime': 'text/plain',
          'offset': offset,
        };

    test('a write error fails the download with its reason; a retry resumes from the saved bytes',
        () async {
      store.failWritesBeyond = 6;
      final first = await join();
      transfers.download(file);
      await first.nextOfType('download');
      first.reply(start(0));
      first.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 0}, bytes.sublist(0, 6));
      first.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 6}, bytes.sublist(6));
      await settle();
      expect(updates.last.state, TransferState.failed);
      expect(updates.last.error?.code, 'write_failed');
      expect(updates.last.error?.message, contains('No space left on device'));
      expect(await first.nextOfType('download_cancel'), {'type': 'download_cancel', 'file': 'f1'});
      expect(store.partial['f1'], bytes.sublist(0, 6), reason: 'kept for a resume');
      // Space was freed; the person taps download again.
      store.failWritesBeyond = null;
      transfers.download(file);
      expect(await first.nextOfType('download'), {'type': 'download', 'file': 'f1', 'offset': 6});
      first.reply(start(6));
      first.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 6}, bytes.sublist(6));
      first.reply({'type': 'download_end', 'file': 'f1', 'size': 10});
      await settle();
      expect(updates.last.state, TransferState.done);
      expect(store.complete['f1'], bytes);
    });

    test('a failed download is not asked for again after a reconnect', () async {
      store.failWritesBeyond = 0;
      final first = await join();
      transfers.download(file);
      await first.nextOfType('download');
      first.reply(start(0));
      first.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 0}, bytes.sublist(0, 4));
      await settle();
      expect(updates.last.state, TransferState.failed);
      final second = await reconnect(2, first);
      await settle();
      expect(second.unread.where((f) => f.type == 'download'), isEmpty);
    });

    test('cancel while a failing write is in flight still removes the partial file', () async {
      store
        ..failWritesBeyond = 0
        ..writeGate = Completer<void>();
      final connection = await join();
      transfers.download(file);
      await connection.nextOfType('download');
      connection.reply(start(0));
      connection.reply({'type': 'file_chunk', 'file': 'f1', 'offset': 0}, bytes.sublist(0, 6));
      await settle(); // the write now waits on the slow disk
      transfers.cancel('f1');
      store.writeGate!.complete(); // ... and fails
      await settle();
      expect(updates.last.state, TransferState.cancelled, reason: 'cancelled stays cancelled');
      expect(store.discards, 1, reason: 'the cleanup ran after the failed write');
      expect(await connection.nextOfType('download_cancel'), {'type': 'download_cancel', 'file': 'f1'});
    });

    test('forbidden is reported', () async {
      final connection = await join();
      transfers.download(file);
      await connection.nextOfType('download');
      connection.reply({
        'type': 'error',
        'code': 'forbidden',
        'message': 'This file is a direct share between two other users.',
        'ref': 'f1',
        'fatal': false,
      });
      await settle();
      expect(updates.last.state, TransferState.failed);
      expect(updates.last.error?.code, 'forbidden');
    });
  });
}
