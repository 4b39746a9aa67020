// One interface over the two ways to reach the server: framed TCP (native)
// and WebSocket (web). The chat service only sees frames; the transport only
// moves bytes. Tests plug in a fake transport through [TransportConnector].

import 'dart:typed_data';

import '../models/server_address.dart';
import 'frame_codec.dart';

/// An open connection to the server.
abstract interface class ChatTransport {
  /// Frames from the server, in order. The stream closes when the connection
  /// ends, for whatever reason; it never emits errors.
  Stream<Frame> get frames;

  /// Whether frames may carry a binary payload (framed TCP: yes; WebSocket:
  /// no, files go over HTTP instead).
  bool get supportsPayloads;

  /// Queues one frame. The future completes when the bytes were handed to
  /// the operating system, which gives senders of large data back-pressure;
  /// it fails with [TransportClosed] if the connection is gone.
  Future<void> send(Map<String, Object?> header, [Uint8List? payload]);

  /// Closes the connection; [frames] then closes.
  Future<void> close();
}

/// Opens a transport to [address]. Injected into the chat service, so tests
/// run the real service against a fake server.
typedef TransportConnector = Future<ChatTransport> Function(ServerAddress address);

/// Sending on a connection that is closed.
class TransportClosed implements Exception {
  const TransportClosed([this.reason = 'connection closed']);

  final String reason;

  @override
  String toString() => 'TransportClosed: $reason';
}
