// File transfers of PROTOCOL.md §5 inside the framed protocol: upload by
// chunks, download by file_chunk, both resumed after a reconnect from the
// offset the other side has.

import 'dart:async';
import 'dart:math';
import 'dart:typed_data';

import '../models/chat_message.dart';
import '../models/result.dart';
import '../models/shared_file.dart';
import 'chat_client.dart';
import 'file_io.dart';
import 'messages.dart';
import 'protocol.dart';

enum TransferDirection { upload, download }

enum TransferState {
  /// Hashing the file, or opening the local file.
  preparing,

  /// Waiting for a connection (or for the server's answer).
  waiting,
  running,
  done,
  failed,
  cancelled;

  bool get isActive => this == preparing || this == waiting || this == running;
}

/// A snapshot of one transfer, for the UI.
class TransferStatus {
  const TransferStatus({
    required this.key,
    required this.direction,
    required this.name,
    required this.size,
    required this.transferred,
    required this.state,
    this.to,
    this.error,
    this.path,
  });

  /// The upload's cid, or the downloaded file's id.
  final String key;
  final TransferDirection direction;
  final String name;
  final int size;
  final int transferred;
  final TransferState state;

  /// Recipient of a direct upload.
  final String? to;
  final AppError? error;

  /// Where a finished download was saved.
  final String? path;

  /// 0..1, or null when unknown (the progress bar then spins).
  double? get fraction => size <= 0 ? null : min(1.0, transferred / size);
}

/// Moves files; one implementation per way of moving them.
abstract interface class FileTransfers {
  /// Every change of any transfer.
  Stream<TransferStatus> get updates;

  /// Uploads [source] as a file message (direct to [to] if given) and
  /// returns the transfer key.
  String upload(UploadSource source, {String? to, String? caption});

  /// Downloads [file] into the app's storage (framed transfers only).
  void download(SharedFile file);

  void cancel(String key);

  /// Local path of a completely downloaded file, if any.
  Future<String?> localPath(SharedFile file);

  /// A URL the browser can open for [file] (web only; else null);
  /// [inline] asks for an image to be shown rather than saved.
  Uri? browserUrl(SharedFile file, {bool inline = false});

  /// Whether [download] works here (false in browsers: use [browserUrl]).
  bool get canDownload;

  /// Headers that a request for a [browserUrl] must carry (the session, as
  /// `Authorization: Bearer`): given to `Image.network` for thumbnails.
  /// Empty where files do not go over HTTP.
  Map<String, String> get requestHeaders;

  Future<void> dispose();
}

class _Upload {
  _Upload(this.cid, this.source, this.to, this.caption);

  final String cid;
  final UploadSource source;
  final String? to;
  final String? caption;
  String? sha256;
  String? uploadId;
  int offset = 0;
  int chunk = maxPayloadBytes;
  int generation = 0; // bumped to stop a running chunk loop
  TransferState state = TransferState.preparing;
  AppError? error;
}

class _Download {
  _Download(this.file);

  final SharedFile file;
  DownloadSink? sink;
  int received = 0;
  // Chunk writes and the final close/discard, in order. Never completes
  // with an error: a failed step fails the download (see _queueWrite).
  Future<void> writes = Future<void>.value();
  bool writeFailed = false;
  TransferState state = TransferState.preparing;
  AppError? error;
  String? path;
}

/// Transfers over the framed TCP connection of a [ChatClient].
class FramedTransfers implements FileTransfers {
  FramedTransfers(this._client, this._store) {
    _subscriptions
      ..add(_client.serverMessages.listen(_onServerMessage))
      ..add(_client.events.listen(_onChatEvent));
  }

  final ChatClient _client;
  final FileStore? _store;
  final List<StreamSubscription<Object>> _subscriptions = [];
  final StreamController<TransferStatus> _updates = StreamController<TransferStatus>.broadcast();
  final Map<String, _Upload> _uploads = {};
  final Map<String, _Download> _downloads = {};

  @override
  Stream<TransferStatus> get updates => _updates.stream;

  @override
  bool get canDownload => _store != null;

  @override
  Uri? browserUrl(SharedFile file, {bool inline = false}) => null;

  @override
  Map<String, String> get requestHeaders => const {};

  @override
  Future<String?> localPath(SharedFile file) async {
    final saved = _downloads[file.id]?.path;
    if (saved != null) return saved;
    final store = _store;
    if (store == null) return null;
    return store.completedPath(file);
  }

  @override
  Future<void> dispose() async {
    for (final subscription in _subscriptions) {
      await subscription.cancel();
    }
    for (final upload in _uploads.values) {
      await upload.source.close();
    }
    for (final download in _downloads.values) {
      final sink = download.sink;
      if (sink != null) await sink.close();
    }
    await _updates.close();
  }

  // --------------------------------------------------------------- uploads

  @override
  String upload(UploadSource source, {String? to, String? caption}) {
    final task = _Upload(_client.newCid(), source, to, caption);
    _uploads[task.cid] = task;
    _emitUpload(task);
    unawaited(_prepareUpload(task));
    return task.cid;
  }

  Future<void> _prepareUpload(_Upload task) async {
    try {
      task.sha256 = await task.source.sha256Hex();
    } on Exception catch (error) {
      _failUpload(task, AppError('read_failed', 'Cannot read ${task.source.name}: $error'));
      return;
    }
    if (task.state != TransferState.preparing) return; // cancelled meanwhile
    task.state = TransferState.waiting;
    _emitUpload(task);
    if (_client.isOnline) unawaited(_announce(task));
  }

  /// Starts the upload, or asks where it stands after a reconnect:
  /// "upload_status {upload} → upload_ready {offset}; continue from offset".
  Future<void> _announce(_Upload task) async {
    final uploadId = task.uploadId;
    final header = uploadId == null
        ? ClientMessages.upload(
            name: task.source.name,
            size: task.source.size,
            cid: task.cid,
            sha256: task.sha256,
            mime: task.source.mime,
            to: task.to,
            text: task.caption,
          )
        : ClientMessages.uploadStatus(uploadId);
    await _client.sendFrame(header);
  }

  void _onUploadReady(UploadReady ready) {
    final task = _uploads[ready.cid] ?? _uploadById(ready.upload);
    if (task == null) return;
    if (!task.state.isActive) {
      if (task.state == TransferState.cancelled) {
        unawaited(_client.sendFrame(ClientMessages.uploadCancel(ready.upload)));
      }
      return;
    }
    task
      ..uploadId = ready.upload
      ..offset = ready.offset
      ..chunk = ready.chunk > 0 ? min(ready.chunk, maxPayloadBytes) : maxPayloadBytes
      ..state = TransferState.running;
    _emitUpload(task);
    unawaited(_sendChunks(task));
  }

  /// "chunk {upload, offset} + payload, in order; offset must equal the
  /// bytes received so far." Each send waits for the socket, so a big file
  /// never sits in memory all at once.
  Future<void> _sendChunks(_Upload task) async {
    final generation = ++task.generation;
    final uploadId = task.uploadId!;
    while (task.generation == generation && task.offset < task.source.size) {
      final length = min(task.chunk, task.source.size - task.offset);
      final Uint8List bytes;
      try {
        bytes = await task.source.read(task.offset, length);
      } on Exception catch (error) {
        _failUpload(task, AppError('read_failed', 'Cannot read ${task.source.name}: $error'));
        return;
      }
      if (task.generation != generation) return;
      if (bytes.length != length) {
        _failUpload(task, AppError('read_failed', '${task.source.name} changed while uploading.'));
        return;
      }
      final sent = await _client.sendFrame(
        ClientMessages.chunk(upload: uploadId, offset: task.offset),
        bytes,
      );
      if (sent is Err<void> || task.generation != generation) return; // resumes on reconnect
      task.offset += length;
      _emitUpload(task);
    }
    // All bytes sent: the server's file `msg` with our cid completes it.
  }

  void _completeUploads(List<ChatMessage> messages) {
    for (final message in messages) {
      final task = _uploads[message.cid];
      if (task == null || task.state == TransferState.done) continue;
      if (!_client.isMine(message) || message.file == null) continue;
      task
        ..offset = task.source.size
        ..state = TransferState.done
        ..generation += 1;
      _emitUpload(task);
      unawaited(task.source.close());
    }
  }

  void _onUploadError(_Upload task, ServerError error) {
    final uploadId = task.uploadId;
    if (error.code == ErrorCode.unknownUpload && uploadId != null) {
      // Expired or already moved into the store: start over with the same
      // cid (if the file message exists, the server answers with it).
      task
        ..uploadId = null
        ..offset = 0
        ..generation += 1;
      unawaited(_announce(task));
    } else if (error.code == ErrorCode.badOffset && uploadId != null) {
      task.generation += 1;
      unawaited(_client.sendFrame(ClientMessages.uploadStatus(uploadId)));
    } else {
      _failUpload(task, AppError(error.wireCode, error.message));
    }
  }

  void _failUpload(_Upload task, AppError error) {
    task
      ..state = TransferState.failed
      ..error = error
      ..generation += 1;
    _emitUpload(task);
    unawaited(task.source.close());
  }

  void _cancelUpload(_Upload task) {
    if (!task.state.isActive) return;
    task
      ..state = TransferState.cancelled
      ..generation += 1;
    final uploadId = task.uploadId;
    if (uploadId != null) unawaited(_client.sendFrame(ClientMessages.uploadCancel(uploadId)));
    _emitUpload(task);
    unawaited(task.source.close());
  }

  void _emitUpload(_Upload task) => _emit(TransferStatus(
        key: task.cid,
        direction: TransferDirection.upload,
        name: task.source.name,
        size: task.source.size,
        transferred: task.offset,
        state: task.state,
        to: task.to,
        error: task.error,
      ));

  // ------------------------------------------------------------- downloads

  @override
  void download(SharedFile file) {
    final store = _store;
    if (store == null) return;
    final existing = _downloads[file.id];
    if (existing != null && (existing.state.isActive || existing.state == TransferState.done)) {
      return;
    }
    final task = _Download(file);
    _downloads[file.id] = task;
    _emitDownload(task);
    unawaited(_prepareDownload(task, store));
  }

  Future<void> _prepareDownload(_Download task, FileStore store) async {
    try {
      final sink = await store.openSink(task.file);
      task
        ..sink = sink
        ..received = await sink.savedLength();
    } on Exception catch (error) {
      _failDownload(task, AppError('write_failed', 'Cannot save ${task.file.name}: $error'));
      return;
    }
    if (task.state != TransferState.preparing) return; // cancelled meanwhile
    task.state = TransferState.waiting;
    _emitDownload(task);
    if (_client.isOnline) unawaited(_requestDownload(task));
  }

  /// "Resume: ask again with offset = bytes already saved."
  Future<void> _requestDownload(_Download task) async {
    await task.writes; // `received` counts only bytes queued in order
    if (task.state != TransferState.waiting) return;
    await _client.sendFrame(ClientMessages.download(file: task.file.id, offset: task.received));
  }

  void _onDownloadStart(DownloadStart start) {
    final task = _downloads[start.file];
    if (task == null || !task.state.isActive) return;
    if (start.offset != task.received) {
      _failDownload(task, AppError(ErrorCode.badOffset.wire,
          'The server resumed at ${start.offset}, not at ${task.received}.'));
      return;
    }
    task.state = TransferState.running;
    _emitDownload(task);
  }

  void _onFileChunk(FileChunk chunk) {
    final task = _downloads[chunk.file];
    final sink = task?.sink;
    if (task == null || sink == null || task.state != TransferState.running) return;
    if (chunk.offset != task.received) {
      _failDownload(task, AppError(ErrorCode.badOffset.wire, 'A chunk arrived out of order.'));
      return;
    }
    task.received += chunk.bytes.length;
    _queueWrite(task, () => sink.write(chunk.offset, chunk.bytes));
    _emitDownload(task);
  }

  void _onDownloadEnd(DownloadEnd end) {
    final task = _downloads[end.file];
    final sink = task?.sink;
    if (task == null || sink == null || task.state != TransferState.running) return;
    unawaited(_finishDownload(task, sink, end.size));
  }

  /// Appends a file operation to the download's chain. A write that fails
  /// (disk full, storage removed) fails the download once, with the reason;
  /// later writes of that download are skipped, but a close or discard
  /// queued after it still runs, so cancel always cleans up.
  void _queueWrite(_Download task, Future<void> Function() operation, {bool always = false}) {
    task.writes = task.writes.then((_) async {
      if (task.writeFailed && !always) return;
      try {
        await operation();
      } on Object catch (error) {
        if (always || task.writeFailed) return;
        task.writeFailed = true;
        if (!task.state.isActive) return; // cancelled meanwhile: stays cancelled
        _failDownload(task, AppError('write_failed', 'Cannot save ${task.file.name}: $error'));
      }
    });
  }

  Future<void> _finishDownload(_Download task, DownloadSink sink, int size) async {
    await task.writes;
    if (task.state != TransferState.running) return; // a write failed, or cancelled
    try {
      task.path = await sink.finish(size: size, sha256Hex: task.file.sha256);
    } on Exception catch (error) {
      _failDownload(task, AppError('write_failed', '$error'));
      return;
    }
    task.state = TransferState.done;
    _emitDownload(task);
  }

  void _failDownload(_Download task, AppError error) {
    if (task.state.isActive) {
      unawaited(_client.sendFrame(ClientMessages.downloadCancel(task.file.id)));
    }
    task
      ..state = TransferState.failed
      ..error = error;
    _emitDownload(task);
    final sink = task.sink;
    // The partial file stays for a later resume ("tap download to resume").
    if (sink != null) _queueWrite(task, sink.close, always: true);
  }

  void _cancelDownload(_Download task) {
    if (!task.state.isActive) return;
    unawaited(_client.sendFrame(ClientMessages.downloadCancel(task.file.id)));
    task.state = TransferState.cancelled;
    _emitDownload(task);
    final sink = task.sink;
    if (sink != null) _queueWrite(task, sink.discard, always: true);
  }

  void _emitDownload(_Download task) => _emit(TransferStatus(
        key: task.file.id,
        direction: TransferDirection.download,
        name: task.file.name,
        size: task.file.size,
        transferred: task.received,
        state: task.state,
        error: task.error,
        path: task.path,
      ));

  // ---------------------------------------------------------------- events

  @override
  void cancel(String key) {
    final upload = _uploads[key];
    if (upload != null) _cancelUpload(upload);
    final download = _downloads[key];
    if (download != null) _cancelDownload(download);
  }

  void _onServerMessage(ServerMessage message) {
    switch (message) {
      case final UploadReady ready:
        _onUploadReady(ready);
      case final DownloadStart start:
        _onDownloadStart(start);
      case final FileChunk chunk:
        _onFileChunk(chunk);
      case final DownloadEnd end:
        _onDownloadEnd(end);
      case final ServerError error:
        _onServerError(error);
      default:
        break;
    }
  }

  void _onServerError(ServerError error) {
    final ref = error.ref;
    if (ref == null) return;
    final upload = _uploads[ref] ?? _uploadById(ref);
    if (upload != null && upload.state.isActive) _onUploadError(upload, error);
    final download = _downloads[ref];
    if (download != null && download.state.isActive) {
      _failDownload(download, AppError(error.wireCode, error.message));
    }
  }

  _Upload? _uploadById(String uploadId) {
    for (final task in _uploads.values) {
      if (task.uploadId == uploadId) return task;
    }
    return null;
  }

  void _onChatEvent(ChatEvent event) {
    switch (event) {
      case MessagesAdded(:final messages):
        _completeUploads(messages);
      case StatusChanged(status: ConnectionStatus.online):
        _resumeAll();
      case StatusChanged():
        _pauseAll();
      default:
        break;
    }
  }

  /// The connection is back: continue every transfer where the server is.
  void _resumeAll() {
    for (final task in _uploads.values) {
      if (task.state == TransferState.waiting || task.state == TransferState.running) {
        task
          ..state = TransferState.waiting
          ..generation += 1;
        unawaited(_announce(task));
      }
    }
    for (final task in _downloads.values) {
      if (task.state == TransferState.waiting || task.state == TransferState.running) {
        task.state = TransferState.waiting;
        unawaited(_requestDownload(task));
      }
    }
  }

  /// The connection is gone: chunk loops stop; [_resumeAll] restarts them.
  void _pauseAll() {
    for (final task in _uploads.values) {
      if (task.state == TransferState.running) {
        task
          ..state = TransferState.waiting
          ..generation += 1;
        _emitUpload(task);
      }
    }
    for (final task in _downloads.values) {
      if (task.state == TransferState.running) {
        task.state = TransferState.waiting;
        _emitDownload(task);
      }
    }
  }

  void _emit(TransferStatus status) {
    if (!_updates.isClosed) _updates.add(status);
  }
}
