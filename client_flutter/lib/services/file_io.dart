// Where upload bytes come from and download bytes go, as interfaces: the
// transfer service stays free of dart:io and testable with in-memory fakes.

import 'dart:typed_data';

import 'package:crypto/crypto.dart';

import '../models/shared_file.dart';

/// A file being uploaded, read by ranges so an upload can resume anywhere.
abstract interface class UploadSource {
  String get name;
  int get size;

  /// MIME type if known, for `upload.mime` and the HTTP Content-Type.
  String? get mime;

  Future<Uint8List> read(int offset, int length);

  /// SHA-256 of the whole file as 64 lower-case hex digits (`upload.sha256`).
  Future<String> sha256Hex();

  Future<void> close();
}

/// An upload from bytes in memory (web picks, tests).
class BytesUploadSource implements UploadSource {
  BytesUploadSource({required this.name, required this.bytes, this.mime});

  @override
  final String name;
  final Uint8List bytes;
  @override
  final String? mime;

  @override
  int get size => bytes.length;

  @override
  Future<Uint8List> read(int offset, int length) async =>
      Uint8List.sublistView(bytes, offset, offset + length);

  @override
  Future<String> sha256Hex() async => sha256.convert(bytes).toString();

  @override
  Future<void> close() async {}
}

/// Where a download is written: a partial file that grows, then is checked
/// and moved to its final name.
abstract interface class DownloadSink {
  /// Bytes already saved by an earlier attempt: the resume offset.
  Future<int> savedLength();

  /// Writes [bytes] at [offset]; offsets only grow.
  Future<void> write(int offset, Uint8List bytes);

  /// Checks the size and SHA-256 (when known) and moves the file into place.
  /// Returns the final path, or throws [FileCheckFailed].
  Future<String> finish({required int size, required String sha256Hex});

  /// Stops writing; the partial file stays for a later resume.
  Future<void> close();

  /// Removes the partial file.
  Future<void> discard();
}

class FileCheckFailed implements Exception {
  const FileCheckFailed(this.message);
  final String message;

  @override
  String toString() => message;
}

/// Local storage for downloaded files, one folder per file id.
abstract interface class FileStore {
  /// The local path of [file] if it was downloaded completely, else null.
  Future<String?> completedPath(SharedFile file);

  Future<DownloadSink> openSink(SharedFile file);
}

/// Makes a server-side name safe as a local file name (the server sanitises
/// names too; this does not rely on it).
String safeFileName(String name) {
  final cleaned = name
      .replaceAll(RegExp(r'[\\/:*?"<>|\x00-\x1f]'), '_')
      .replaceAll(RegExp(r'^[. ]+|[. ]+$'), '');
  return cleaned.isEmpty ? 'file' : cleaned;
}
