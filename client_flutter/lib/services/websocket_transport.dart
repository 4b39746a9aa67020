// WebSocket transport (PROTOCOL.md §8) for the web build: each text message
// is one JSON header; binary payloads do not exist here (files use HTTP).

import 'dart:async';
import 'dart:convert';
import 'dart:typed_data';

import 'package:web_socket_channel/web_socket_channel.dart';

import '../models/server_address.dart';
import 'frame_codec.dart';
import 'transport.dart';

class WebSocketTransport implements ChatTransport {
  WebSocketTransport._(this._channel) {
    _subscription = _channel.stream.listen(
      _onMessage,
      onError: (Object _) => _shutDown(),
      onDone: _shutDown,
      cancelOnError: true,
    );
  }

  /// Connects to ws://host:port/ws. The server checks that the page's
  /// Origin matches this Host, so the web build is served by the chat server
  /// itself (`chatserver.py --web-app DIR`, under /app/) and [address] is the
  /// page's own host and port.
  static Future<ChatTransport> connect(ServerAddress address) async {
    final channel = WebSocketChannel.connect(Uri.parse('ws://${address.label}/ws'));
    try {
      await channel.ready.timeout(connectTimeout);
    } on TimeoutException catch (error) {
      unawaited(channel.sink.close());
      throw ConnectFailure(ConnectFailureKind.timedOut, '$error');
    } on WebSocketChannelException catch (error) {
      // Browsers do not say why a WebSocket failed (refused, 403 from the
      // Origin check...): only that it did.
      throw ConnectFailure(ConnectFailureKind.other, '$error');
    }
    return WebSocketTransport._(channel);
  }

  /// How long to wait for the WebSocket handshake.
  static const Duration connectTimeout = Duration(seconds: 10);

  final WebSocketChannel _channel;
  final StreamController<Frame> _frames = StreamController<Frame>();
  late final StreamSubscription<dynamic> _subscription;
  bool _closed = false;

  @override
  Stream<Frame> get frames => _frames.stream;

  @override
  bool get supportsPayloads => false;

  @override
  Future<void> send(Map<String, Object?> header, [Uint8List? payload]) async {
    if (_closed) throw const TransportClosed();
    if (payload != null && payload.isNotEmpty) {
      throw ArgumentError('binary payloads are not available over WebSocket');
    }
    _channel.sink.add(jsonEncode(header));
  }

  void _onMessage(dynamic message) {
    if (message is! String) return; // the server sends text messages only
    try {
      _frames.add(Frame(parseHeader(utf8.encode(message))));
    } on FrameError {
      // Not a JSON object with a type: skip it, as the framed decoder does.
    }
  }

  void _shutDown() {
    if (_closed) return;
    _closed = true;
    _subscription.cancel();
    _channel.sink.close();
    _frames.close();
  }

  @override
  Future<void> close() async => _shutDown();
}
