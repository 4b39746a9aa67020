// Browser: WebSocket for chat, HTTP for files (PROTOCOL.md §5, §8).

import 'dart:typed_data';

import 'package:web/web.dart' as web;

import '../models/server_address.dart';
import 'file_io.dart';
import 'transport.dart';
import 'websocket_transport.dart';

/// Whether this platform moves files inside the framed protocol.
const bool framedFileTransfers = false;

Future<ChatTransport> connectTransport(ServerAddress address) => WebSocketTransport.connect(address);

UploadSource uploadSourceFromPath(String path, String name, int size, String? mime) =>
    throw UnsupportedError('browsers give file bytes, not paths');

/// The browser saves downloads itself.
FileStore? createFileStore(String? documentsPath) => null;

/// The page's own URL (`http://host:port/app/#k=TOKEN` when served by
/// `chatserver.py --web-app`), read once at start, before Flutter's router
/// sees it. The fragment is then removed from the address bar, as the
/// embedded web client does: the token should not stay on screen or in the
/// browser history.
String? takePageLink() {
  final location = web.window.location;
  final link = location.href;
  if (location.hash.isNotEmpty) {
    web.window.history.replaceState(null, '', '${location.pathname}${location.search}');
  }
  return link;
}

Future<Uint8List> readFileBytes(String path) =>
    throw UnsupportedError('browsers have no local files');

Future<void> writeFileBytes(String path, List<int> bytes) =>
    throw UnsupportedError('browsers have no local files');
