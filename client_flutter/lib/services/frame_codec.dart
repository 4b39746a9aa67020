// Framing of PROTOCOL.md §1, sans-I/O: bytes in, frames out.
//
//   +--------------+--------------+------------------+------------------+
//   | H: uint32 BE | P: uint32 BE | H bytes: JSON    | P bytes: payload |
//   +--------------+--------------+------------------+------------------+
//
// The decoder never touches a socket: the transport feeds it whatever bytes
// arrived and gets complete frames back, so the codec is tested with the byte
// vectors of tests/vectors/frames.json, the same file pytest reads.

import 'dart:convert';
import 'dart:typed_data';

import 'protocol.dart';

/// Bytes of the two length fields that start every frame.
const int framePrefixBytes = 8;

/// One decoded frame: a JSON object header with a string `type`, and an
/// optional binary payload (empty for everything but chunks).
class Frame {
  Frame(this.header, [Uint8List? payload]) : payload = payload ?? Uint8List(0);

  final Map<String, Object?> header;
  final Uint8List payload;

  String get type => header['type'] as String;

  @override
  String toString() => 'Frame($header, ${payload.length} B)';
}

/// A framing error, with the PROTOCOL.md §6 code it maps to.
///
/// Fatal errors (`bad_frame`, `frame_too_large`) break the byte stream: the
/// decoder refuses any further input. Non-fatal ones (`bad_json`,
/// `bad_request`) consumed exactly one frame; decoding goes on after it.
class FrameError implements Exception {
  const FrameError(this.code, this.message);

  final ErrorCode code;
  final String message;

  bool get fatal => code.fatal;

  @override
  String toString() => 'FrameError(${code.wire}: $message)';
}

/// Encodes one frame. The header is written as JSON without spaces, keys in
/// the map's order, UTF-8 unescaped — exactly what the server writes.
Uint8List encodeFrame(Map<String, Object?> header, [Uint8List? payload]) {
  if (header['type'] is! String) {
    throw const FrameError(ErrorCode.badRequest, 'header needs a string "type"');
  }
  final headerBytes = utf8.encode(jsonEncode(header));
  final body = payload ?? Uint8List(0);
  _checkLengths(headerBytes.length, body.length);
  final frame = Uint8List(framePrefixBytes + headerBytes.length + body.length);
  ByteData.sublistView(frame)
    ..setUint32(0, headerBytes.length, Endian.big)
    ..setUint32(4, body.length, Endian.big);
  frame.setRange(framePrefixBytes, framePrefixBytes + headerBytes.length, headerBytes);
  frame.setRange(framePrefixBytes + headerBytes.length, frame.length, body);
  return frame;
}

/// Decodes bytes that hold exactly one complete frame.
///
/// Throws [FrameError] for a bad frame, and [FormatException] when the bytes
/// are not exactly one frame (truncated, or trailing bytes).
Frame decodeFrame(Uint8List bytes) {
  final decoder = FrameDecoder();
  final frames = decoder.feed(bytes).toList();
  if (frames.length != 1 || decoder.bufferedBytes != 0) {
    throw FormatException(
        'expected one frame, got ${frames.length} and ${decoder.bufferedBytes} spare bytes');
  }
  return frames.single;
}

/// "A declared length over a limit is refused before any of it is read:
/// error frame_too_large. H = 0 is bad_frame." — PROTOCOL.md §1.
void _checkLengths(int headerLength, int payloadLength) {
  if (headerLength == 0) {
    throw const FrameError(ErrorCode.badFrame, 'header length is 0');
  }
  if (headerLength > maxHeaderBytes) {
    throw FrameError(ErrorCode.frameTooLarge,
        'header of $headerLength bytes is over $maxHeaderBytes');
  }
  if (payloadLength > maxPayloadBytes) {
    throw FrameError(ErrorCode.frameTooLarge,
        'payload of $payloadLength bytes is over $maxPayloadBytes');
  }
}

/// Incremental frame decoder: [feed] it bytes as they arrive.
class FrameDecoder {
  Uint8List _buffer = Uint8List(4096);
  int _start = 0; // first unread byte
  int _end = 0; // one past the last buffered byte
  FrameError? _fatal;

  /// Bytes received but not yet part of a returned frame.
  int get bufferedBytes => _end - _start;

  /// Appends [data] and returns the frames now complete, lazily and in order.
  ///
  /// Iterating throws [FrameError] at a bad frame, after the good frames
  /// before it. A non-fatal error consumed its frame: call `feed` again (with
  /// no new bytes if need be) to go on with the rest. After a fatal error
  /// every call throws that error again.
  Iterable<Frame> feed(Uint8List data) {
    final fatal = _fatal;
    if (fatal != null) throw fatal;
    _append(data);
    return _drain();
  }

  Iterable<Frame> _drain() sync* {
    while (true) {
      final frame = _next();
      if (frame == null) return;
      yield frame;
    }
  }

  /// The next complete frame, or null when more bytes are needed.
  Frame? _next() {
    if (bufferedBytes < framePrefixBytes) return null;
    final view = ByteData.sublistView(_buffer, _start, _end);
    final headerLength = view.getUint32(0, Endian.big);
    final payloadLength = view.getUint32(4, Endian.big);
    try {
      _checkLengths(headerLength, payloadLength);
    } on FrameError catch (error) {
      _fatal = error;
      rethrow;
    }
    final total = framePrefixBytes + headerLength + payloadLength;
    if (bufferedBytes < total) return null;
    final headerStart = _start + framePrefixBytes;
    final headerBytes = Uint8List.sublistView(_buffer, headerStart, headerStart + headerLength);
    // Copy the payload out: the buffer is reused for the next bytes.
    final payload = Uint8List.fromList(Uint8List.sublistView(
        _buffer, headerStart + headerLength, headerStart + headerLength + payloadLength));
    Map<String, Object?> header;
    try {
      header = parseHeader(headerBytes);
    } finally {
      // The frame boundary is intact even when its header is bad.
      _consume(total);
    }
    return Frame(header, payload);
  }

  void _consume(int count) {
    _start += count;
    if (_start == _end) {
      _start = 0;
      _end = 0;
    }
  }

  void _append(Uint8List data) {
    if (data.isEmpty) return;
    if (_end + data.length > _buffer.length) {
      final needed = bufferedBytes + data.length;
      if (needed <= _buffer.length && _start > 0) {
        _buffer.setRange(0, bufferedBytes, _buffer, _start);
      } else {
        var capacity = _buffer.length * 2;
        while (capacity < needed) {
          capacity *= 2;
        }
        final grown = Uint8List(capacity);
        grown.setRange(0, bufferedBytes, _buffer, _start);
        _buffer = grown;
      }
      _end = bufferedBytes;
      _start = 0;
    }
    _buffer.setRange(_end, _end + data.length, data);
    _end += data.length;
  }
}

/// Parses a header: "Invalid UTF-8 or invalid JSON → bad_json; valid JSON
/// that is not an object or lacks a string type → bad_request." — §1.
Map<String, Object?> parseHeader(Uint8List bytes) {
  Object? decoded;
  try {
    decoded = jsonDecode(utf8.decode(bytes));
  } on FormatException catch (error) {
    throw FrameError(ErrorCode.badJson, 'header is not UTF-8 JSON: ${error.message}');
  }
  if (decoded is! Map<String, dynamic>) {
    throw const FrameError(ErrorCode.badRequest, 'header is not a JSON object');
  }
  if (decoded['type'] is! String) {
    throw const FrameError(ErrorCode.badRequest, 'header lacks a string "type"');
  }
  return Map<String, Object?>.of(decoded);
}
