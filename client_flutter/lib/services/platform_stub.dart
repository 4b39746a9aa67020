// Fallback for a platform with neither dart:io nor JS interop.

import 'dart:typed_data';

import '../models/server_address.dart';
import 'file_io.dart';
import 'transport.dart';

/// Whether this platform moves files inside the framed protocol.
const bool framedFileTransfers = false;

Future<ChatTransport> connectTransport(ServerAddress address) =>
    throw UnsupportedError('no transport on this platform');

UploadSource uploadSourceFromPath(String path, String name, int size, String? mime) =>
    throw UnsupportedError('no file access on this platform');

FileStore? createFileStore(String? documentsPath) => null;

/// Only a browser page has a URL to read the server and token from.
String? takePageLink() => null;

Future<Uint8List> readFileBytes(String path) => throw UnsupportedError('no file access here');

Future<void> writeFileBytes(String path, List<int> bytes) =>
    throw UnsupportedError('no file access here');
