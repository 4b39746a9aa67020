// Android, iOS and desktop: framed TCP and files on disk.

import 'dart:io';
import 'dart:typed_data';

import '../models/server_address.dart';
import 'file_io.dart';
import 'file_io_native.dart';
import 'socket_transport.dart';
import 'transport.dart';

/// Whether this platform moves files inside the framed protocol.
const bool framedFileTransfers = true;

Future<ChatTransport> connectTransport(ServerAddress address) => SocketTransport.connect(address);

UploadSource uploadSourceFromPath(String path, String name, int size, String? mime) =>
    FileUploadSource(path: path, name: name, size: size, mime: mime);

/// Downloads go to `<documents>/lan_chat`.
FileStore? createFileStore(String? documentsPath) =>
    documentsPath == null ? null : NativeFileStore('$documentsPath/lan_chat');

/// Only a browser page has a URL to read the server and token from.
String? takePageLink() => null;

Future<Uint8List> readFileBytes(String path) => File(path).readAsBytes();

Future<void> writeFileBytes(String path, List<int> bytes) => File(path).writeAsBytes(bytes);
