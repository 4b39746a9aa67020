// In-memory file storage for transfer tests: same contract as the dart:io
// store (resume offset, size and SHA-256 check on finish).

import 'dart:async';
import 'dart:typed_data';

import 'package:crypto/crypto.dart';
import 'package:lan_chat/models/shared_file.dart';
import 'package:lan_chat/services/file_io.dart';
import 'package:lan_chat/services/recent_servers.dart';

class MemoryFileStore implements FileStore {
  final Map<String, List<int>> partial = {};
  final Map<String, Uint8List> complete = {};

  /// Writes beyond this many bytes of a file fail, as on a full disk.
  int? failWritesBeyond;

  /// How often a partial file was discarded.
  int discards = 0;

  /// When set, writes wait for it (a slow disk).
  Completer<void>? writeGate;

  @override
  Future<String?> completedPath(SharedFile file) async =>
      complete.containsKey(file.id) ? 'memory/${file.id}/${file.name}' : null;

  @override
  Future<DownloadSink> openSink(SharedFile file) async => _MemorySink(this, file);
}

class _MemorySink implements DownloadSink {
  _MemorySink(this._store, this._file);

  final MemoryFileStore _store;
  final SharedFile _file;

  List<int> get _bytes => _store.partial.putIfAbsent(_file.id, () => <int>[]);

  @override
  Future<int> savedLength() async => _store.partial[_file.id]?.length ?? 0;

  @override
  Future<void> write(int offset, Uint8List bytes) async {
    final gate = _store.writeGate;
    if (gate != null) await gate.future;
    if (offset != _bytes.length) throw const FileCheckFailed('out of order');
    final limit = _store.failWritesBeyond;
    if (limit != null && offset + bytes.length > limit) {
      throw const DiskFull('No space left on device');
    }
    _bytes.addAll(bytes);
  }

  @override
  Future<String> finish({required int size, required String sha256Hex}) async {
    final bytes = Uint8List.fromList(_bytes);
    if (bytes.length != size) {
      await discard();
      throw FileCheckFailed('received ${bytes.length} bytes, expected $size');
    }
    if (sha256Hex.isNotEmpty && sha256.convert(bytes).toString() != sha256Hex) {
      await discard();
      throw const FileCheckFailed('the SHA-256 of the file does not match');
    }
    _store.partial.remove(_file.id);
    _store.complete[_file.id] = bytes;
    return 'memory/${_file.id}/${_file.name}';
  }

  @override
  Future<void> close() async {}

  @override
  Future<void> discard() async {
    _store.discards++;
    _store.partial.remove(_file.id);
  }
}

/// What a full disk throws (FileSystemException in the app).
class DiskFull implements Exception {
  const DiskFull(this.message);
  final String message;

  @override
  String toString() => message;
}

/// shared_preferences stand-in.
class MemoryKeyValueStore implements KeyValueStore {
  final Map<String, String> values = {};

  @override
  Future<String?> getString(String key) async => values[key];

  @override
  Future<void> setString(String key, String value) async {
    values[key] = value;
  }
}
