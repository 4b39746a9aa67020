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

/// Why a connection could not be opened, sorted so people get a sentence
/// rather than an operating-system error text.
enum ConnectFailureKind {
  /// Nothing listens on that port, or the host said no.
  refused,

  /// No answer in time (wrong address, a firewall dropping packets, or iOS
  /// still asking for permission to use the local network).
  timedOut,

  /// The host name does not resolve.
  unknownHost,

  /// This device has no route there (WiFi off, another network).
  noRoute,

  /// The OS refused network access (iOS local-network permission denied).
  denied,

  /// Anything else.
  other,
}

/// Thrown by a [TransportConnector] when no connection could be opened.
class ConnectFailure implements Exception {
  const ConnectFailure(this.kind, [this.detail = '']);

  final ConnectFailureKind kind;

  /// The original error text, for logs.
  final String detail;

  /// Whether trying again soon may work (as opposed to a wrong host name).
  bool get transient => kind != ConnectFailureKind.unknownHost;

  @override
  String toString() => 'ConnectFailure(${kind.name}: $detail)';
}

/// A sentence about [failure] for people, naming [where] ("host:port").
String describeConnectFailure(ConnectFailure failure, String where) => switch (failure.kind) {
      ConnectFailureKind.refused =>
        'The server at $where refused the connection. Is chatserver.py running on that port?',
      ConnectFailureKind.timedOut =>
        'No answer from $where. Check that this device is on the same network as the server.',
      ConnectFailureKind.unknownHost =>
        'Cannot find the host in $where. Check the address, or scan the QR code again.',
      ConnectFailureKind.noRoute =>
        'This device cannot reach $where. Is WiFi on, and on the same network as the server?',
      ConnectFailureKind.denied =>
        'This app may not use the local network. Allow "Local Network" for LAN Chat in Settings.',
      ConnectFailureKind.other => 'Cannot reach $where.',
    };
