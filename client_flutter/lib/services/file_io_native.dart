// dart:io implementations of file_io.dart: random-access reads for uploads,
// resumable writes for downloads into the app's documents folder.

import 'dart:io';
import 'dart:typed_data';

import 'package:crypto/crypto.dart';

import '../models/shared_file.dart';
import 'file_io.dart';

/// An upload read from a file on disk.
class FileUploadSource implements UploadSource {
  FileUploadSource({required this.path, required this.name, required this.size, this.mime});

  final String path;
  @override
  final String name;
  @override
  final int size;
  @override
  final String? mime;

  RandomAccessFile? _file;

  @override
  Future<Uint8List> read(int offset, int length) async {
    final file = _file ??= await File(path).open();
    await file.setPosition(offset);
    return file.read(length);
  }

  @override
  Future<String> sha256Hex() async => (await sha256.bind(File(path).openRead()).first).toString();

  @override
  Future<void> close() async {
    final file = _file;
    _file = null;
    if (file != null) await file.close();
  }
}

/// Files under `<root>/<file id>/<name>`; a download in progress is
/// `<name>.part` beside it, so an interrupted one resumes after a restart.
class NativeFileStore implements FileStore {
  NativeFileStore(this.root);

  final String root;

  File _finalFile(SharedFile file) =>
      File('$root${Platform.pathSeparator}${safeFileName(file.id)}'
          '${Platform.pathSeparator}${safeFileName(file.name)}');

  @override
  Future<String?> completedPath(SharedFile file) async {
    final target = _finalFile(file);
    final exists = await target.exists();
    return exists ? target.path : null;
  }

  @override
  Future<DownloadSink> openSink(SharedFile file) async {
    final target = _finalFile(file);
    await target.parent.create(recursive: true);
    return _NativeDownloadSink(target, File('${target.path}.part'));
  }
}

class _NativeDownloadSink implements DownloadSink {
  _NativeDownloadSink(this._target, this._part);

  final File _target;
  final File _part;
  RandomAccessFile? _file;

  @override
  Future<int> savedLength() async {
    if (!await _part.exists()) return 0;
    return _part.length();
  }

  @override
  Future<void> write(int offset, Uint8List bytes) async {
    final file = _file ??= await _part.open(mode: FileMode.append);
    if (await file.length() != offset) {
      throw FileCheckFailed('chunk at $offset does not follow the saved bytes');
    }
    await file.writeFrom(bytes);
  }

  @override
  Future<String> finish({required int size, required String sha256Hex}) async {
    await close();
    if (!await _part.exists()) await _part.create(recursive: true); // empty file
    final length = await _part.length();
    if (length != size) {
      await discard();
      throw FileCheckFailed('received $length bytes, expected $size');
    }
    if (sha256Hex.isNotEmpty) {
      final digest = (await sha256.bind(_part.openRead()).first).toString();
      if (digest != sha256Hex.toLowerCase()) {
        await discard();
        throw const FileCheckFailed('the SHA-256 of the file does not match');
      }
    }
    return (await _part.rename(_target.path)).path;
  }

  @override
  Future<void> close() async {
    final file = _file;
    _file = null;
    if (file != null) await file.close();
  }

  @override
  Future<void> discard() async {
    await close();
    if (await _part.exists()) await _part.delete();
  }
}
