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
  /// Origin matches this Host, so the web build must be served by the same
  /// server it talks to.
  static Future<ChatTransport> connect(ServerAddress address) async {
    final channel = WebSocketChannel.connect(Uri.parse('ws://${address.label}/ws'));
    await channel.ready;
    return WebSocketTransport._(channel);
  }

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
