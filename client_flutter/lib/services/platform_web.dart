// Browser: WebSocket for chat, HTTP for files (PROTOCOL.md §5, §8).

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
