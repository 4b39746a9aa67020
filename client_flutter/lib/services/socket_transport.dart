// Framed TCP transport (PROTOCOL.md §1) over dart:io: Android, iOS, desktop.
// Only imported where dart:io exists (see platform.dart).

import 'dart:async';
import 'dart:io';
import 'dart:typed_data';

import '../models/server_address.dart';
import 'frame_codec.dart';
import 'transport.dart';

/// How long to wait for the TCP handshake before giving up.
const Duration connectTimeout = Duration(seconds: 10);

class SocketTransport implements ChatTransport {
  SocketTransport._(this._socket) {
    _subscription = _socket.listen(
      _onData,
      onError: (Object _) => _shutDown(),
      onDone: _shutDown,
      cancelOnError: true,
    );
    // Write errors surface through `done` too; they are handled in _write.
    _socket.done.then((_) {}, onError: (Object _) {});
  }

  /// Connects to [address]. The first byte of every frame is 0x00 (the
  /// header length is below 2^24), which is how the server tells the framed
  /// protocol from HTTP on the same port — nothing else to announce.
  static Future<ChatTransport> connect(ServerAddress address) async {
    final Socket socket;
    try {
      socket = await Socket.connect(address.host, address.port, timeout: connectTimeout);
    } on SocketException catch (error) {
      throw classifySocketError(error);
    }
    socket.setOption(SocketOption.tcpNoDelay, true);
    return SocketTransport._(socket);
  }

  final Socket _socket;
  final FrameDecoder _decoder = FrameDecoder();
  final StreamController<Frame> _frames = StreamController<Frame>();
  late final StreamSubscription<Uint8List> _subscription;

  // Writes are chained: IOSink forbids `add` while a `flush` is pending, and
  // waiting for each flush is what gives large uploads back-pressure.
  Future<void> _writeChain = Future<void>.value();
  bool _closed = false;

  @override
  Stream<Frame> get frames => _frames.stream;

  @override
  bool get supportsPayloads => true;

  @override
  Future<void> send(Map<String, Object?> header, [Uint8List? payload]) {
    if (_closed) return Future<void>.error(const TransportClosed());
    final bytes = encodeFrame(header, payload);
    final write = _writeChain.then((_) => _write(bytes));
    _writeChain = write.then((_) {}, onError: (Object _) {});
    return write;
  }

  Future<void> _write(Uint8List bytes) async {
    if (_closed) throw const TransportClosed();
    try {
      _socket.add(bytes);
      await _socket.flush();
    } on SocketException catch (error) {
      _shutDown();
      throw TransportClosed(error.message);
    } on StateError catch (error) {
      _shutDown();
      throw TransportClosed(error.message);
    }
  }

  void _onData(Uint8List data) {
    var input = data;
    while (!_closed) {
      try {
        for (final frame in _decoder.feed(input)) {
          _frames.add(frame);
        }
        return;
      } on FrameError catch (error) {
        if (error.fatal) {
          _shutDown(); // the byte stream cannot be trusted any more
          return;
        }
        input = Uint8List(0); // that frame was skipped: decode what follows
      }
    }
  }

  void _shutDown() {
    if (_closed) return;
    _closed = true;
    _subscription.cancel();
    _socket.destroy();
    _frames.close();
  }

  @override
  Future<void> close() async => _shutDown();
}

// errno values by platform: Linux/Android, macOS/iOS, Windows (WSA codes).
const Set<int> _refusedCodes = {111, 61, 10061};
const Set<int> _timedOutCodes = {110, 60, 10060};
const Set<int> _noRouteCodes = {101, 113, 51, 65, 10051, 10065};
const Set<int> _deniedCodes = {1, 13}; // EPERM, EACCES (iOS local network denied)

/// Sorts a connect error into a [ConnectFailure]. The OS error code decides
/// where there is one; a connect timeout of dart:io has none.
ConnectFailure classifySocketError(SocketException error) {
  final code = error.osError?.errorCode;
  final text = '${error.message} ${error.osError?.message ?? ''}'.toLowerCase();
  final ConnectFailureKind kind;
  if (code != null && _refusedCodes.contains(code)) {
    kind = ConnectFailureKind.refused;
  } else if ((code != null && _timedOutCodes.contains(code)) || text.contains('timed out')) {
    kind = ConnectFailureKind.timedOut;
  } else if (code != null && _noRouteCodes.contains(code)) {
    kind = ConnectFailureKind.noRoute;
  } else if (code != null && _deniedCodes.contains(code)) {
    kind = ConnectFailureKind.denied;
  } else if (text.contains('host lookup') || text.contains('nodename nor servname')) {
    kind = ConnectFailureKind.unknownHost;
  } else {
    kind = ConnectFailureKind.other;
  }
  return ConnectFailure(kind, error.toString());
}
