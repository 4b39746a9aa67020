// The framing codec against tests/vectors/frames*.json — the same vectors
// the Python server's tests read, so both sides agree byte for byte.

import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/services/frame_codec.dart';
import 'package:lan_chat/services/protocol.dart';

/// Relative to the package root, where `flutter test` runs. Every
/// `frames*.json` in it has the same schema (frames.json, and hand-written
/// vectors beside it); all of them are read.
const String vectorsFolder = '../tests/vectors';

List<(String, Map<String, dynamic>)> vectorFiles() {
  final files = Directory(vectorsFolder)
      .listSync()
      .whereType<File>()
      .where((f) {
        final name = f.uri.pathSegments.last;
        return name.startsWith('frames') && name.endsWith('.json');
      })
      .toList()
    ..sort((a, b) => a.path.compareTo(b.path));
  return [
    for (final file in files)
      (file.uri.pathSegments.last, jsonDecode(file.readAsStringSync()) as Map<String, dynamic>),
  ];
}

Uint8List fromHex(String hex) {
  final bytes = Uint8List(hex.length ~/ 2);
  for (var i = 0; i < bytes.length; i++) {
    bytes[i] = int.parse(hex.substring(2 * i, 2 * i + 2), radix: 16);
  }
  return bytes;
}

String toHex(List<int> bytes) => bytes.map((b) => b.toRadixString(16).padLeft(2, '0')).join();

Matcher throwsFrameError(String code) =>
    throwsA(isA<FrameError>().having((error) => error.code.wire, 'code', code));

void main() {
  final files = vectorFiles();

  test('the vector files are found, frames.json among them', () {
    expect(files.map((f) => f.$1), contains('frames.json'));
  });

  for (final (fileName, vectors) in files) {
    test('$fileName has the expected version and content', () {
      expect(vectors['version'], 1);
      final frames = vectors['frames'] as List<dynamic>? ?? const [];
      final invalid = vectors['invalid'] as List<dynamic>? ?? const [];
      expect([...frames, ...invalid], isNotEmpty);
    });

    group('$fileName valid vectors', () {
      for (final item in vectors['frames'] as List<dynamic>? ?? const []) {
        final vector = item as Map<String, dynamic>;
        final name = vector['name'] as String;
        final bytes = fromHex(vector['hex'] as String);
        final header = vector['header'] as Map<String, dynamic>;
        final payload = fromHex(vector['payload_hex'] as String? ?? '');

        test('$name decodes to its header and payload', () {
          final frame = decodeFrame(bytes);
          expect(frame.header, equals(header));
          expect(toHex(frame.payload), vector['payload_hex'] ?? '');
        });

        test('$name encodes to exactly its bytes', () {
          expect(toHex(encodeFrame(header, payload)), vector['hex']);
        });

        test('$name decodes when fed one byte at a time', () {
          final decoder = FrameDecoder();
          final frames = <Frame>[];
          for (final byte in bytes) {
            frames.addAll(decoder.feed(Uint8List.fromList([byte])));
          }
          expect(frames, hasLength(1));
          expect(frames.single.header, equals(header));
          expect(decoder.bufferedBytes, 0);
        });
      }
    });

    group('$fileName invalid vectors', () {
      for (final item in vectors['invalid'] as List<dynamic>? ?? const []) {
        final vector = item as Map<String, dynamic>;
        test('${vector['name']} raises ${vector['error']}', () {
          expect(() => decodeFrame(fromHex(vector['hex'] as String)),
              throwsFrameError(vector['error'] as String));
        });
      }
    });
  }

  group('decoder', () {
    final ping = fromHex('0000000f000000007b2274797065223a2270696e67227d');

    test('decodes the ping example of PROTOCOL.md §1', () {
      expect(decodeFrame(ping).header, {'type': 'ping'});
      expect(toHex(encodeFrame({'type': 'ping'})), toHex(ping));
    });

    test('returns two frames that arrive in one read', () {
      final frames = FrameDecoder().feed(Uint8List.fromList([...ping, ...ping])).toList();
      expect(frames.map((f) => f.type), ['ping', 'ping']);
    });

    test('keeps a partial frame until the rest arrives', () {
      final decoder = FrameDecoder();
      expect(decoder.feed(Uint8List.sublistView(ping, 0, 10)), isEmpty);
      expect(decoder.bufferedBytes, 10);
      expect(decoder.feed(Uint8List.sublistView(ping, 10)).single.type, 'ping');
    });

    test('carries a binary payload', () {
      final payload = Uint8List.fromList(List<int>.generate(300, (i) => i % 256));
      final frame = decodeFrame(encodeFrame({'type': 'chunk', 'upload': 'u1', 'offset': 0}, payload));
      expect(frame.payload, payload);
      expect(frame.header['upload'], 'u1');
    });

    test('refuses a too large declared header before reading it', () {
      final prefix = Uint8List(8);
      ByteData.sublistView(prefix).setUint32(0, maxHeaderBytes + 1);
      expect(() => FrameDecoder().feed(prefix).toList(), throwsFrameError('frame_too_large'));
    });

    test('refuses a too large declared payload before reading it', () {
      final prefix = Uint8List(8);
      ByteData.sublistView(prefix)
        ..setUint32(0, 15)
        ..setUint32(4, maxPayloadBytes + 1);
      expect(() => FrameDecoder().feed(prefix).toList(), throwsFrameError('frame_too_large'));
    });

    test('accepts the largest allowed lengths', () {
      final payload = Uint8List(maxPayloadBytes);
      final frame = decodeFrame(encodeFrame({'type': 'chunk'}, payload));
      expect(frame.payload.length, maxPayloadBytes);
    });

    test('a fatal error sticks: later input is refused too', () {
      final decoder = FrameDecoder();
      expect(() => decoder.feed(Uint8List(8)).toList(), throwsFrameError('bad_frame'));
      expect(() => decoder.feed(ping).toList(), throwsFrameError('bad_frame'));
    });

    test('skips a frame with a bad header and decodes the next one', () {
      final bad = encodeRaw(utf8.encode('{"type":'));
      final decoder = FrameDecoder();
      final input = Uint8List.fromList([...bad, ...ping]);
      expect(() => decoder.feed(input).toList(), throwsFrameError('bad_json'));
      expect(decoder.feed(Uint8List(0)).single.type, 'ping');
    });

    test('sorts header errors into bad_json and bad_request', () {
      expect(() => decodeFrame(encodeRaw([0xff, 0xfe])), throwsFrameError('bad_json'));
      expect(() => decodeFrame(encodeRaw(utf8.encode('[1,2]'))), throwsFrameError('bad_request'));
      expect(() => decodeFrame(encodeRaw(utf8.encode('{"t":1}'))), throwsFrameError('bad_request'));
      expect(() => decodeFrame(encodeRaw(utf8.encode('{"type":3}'))), throwsFrameError('bad_request'));
    });

    test('encodes JSON without spaces, keys in order, UTF-8 unescaped', () {
      final frame = encodeFrame({'type': 'msg', 'text': 'héllo ✓', 'cid': 'a-1'});
      final header = utf8.decode(frame.sublist(framePrefixBytes));
      expect(header, '{"type":"msg","text":"héllo ✓","cid":"a-1"}');
    });
  });
}

/// A frame with an arbitrary header, bypassing the encoder's checks.
Uint8List encodeRaw(List<int> header) {
  final frame = Uint8List(framePrefixBytes + header.length);
  ByteData.sublistView(frame).setUint32(0, header.length);
  frame.setRange(framePrefixBytes, frame.length, header);
  return frame;
}
