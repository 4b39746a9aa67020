// Connect errors of dart:io become kinds with sentences (Linux error codes:
// the tests run on Linux; macOS/iOS and Windows codes are in the same sets).

import 'dart:io';

import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/services/socket_transport.dart';
import 'package:lan_chat/services/transport.dart';

void main() {
  ConnectFailureKind kindOf(String message, [int? code, String os = '']) =>
      classifySocketError(SocketException(message, osError: code == null ? null : OSError(os, code)))
          .kind;

  test('sorts the usual connect errors', () {
    expect(kindOf('Connection refused', 111, 'Connection refused'), ConnectFailureKind.refused);
    expect(kindOf('Connection refused', 61), ConnectFailureKind.refused);
    expect(kindOf('Connection timed out', 110), ConnectFailureKind.timedOut);
    expect(kindOf('Connection timed out, host: 10.0.0.9, port: 5555'), ConnectFailureKind.timedOut);
    expect(kindOf('Network is unreachable', 101), ConnectFailureKind.noRoute);
    expect(kindOf('No route to host', 113), ConnectFailureKind.noRoute);
    expect(kindOf('Operation not permitted', 1), ConnectFailureKind.denied);
    expect(kindOf("Failed host lookup: 'chat.lan'", 7), ConnectFailureKind.unknownHost);
    expect(kindOf('Something else', 9999), ConnectFailureKind.other);
  });

  test('a real refused connection on 127.0.0.1 reads as a sentence', () async {
    final server = await ServerSocket.bind(InternetAddress.loopbackIPv4, 0);
    final port = server.port;
    await server.close(); // nothing listens there now
    try {
      await Socket.connect(InternetAddress.loopbackIPv4, port);
      fail('connected to a closed port');
    } on SocketException catch (error) {
      final failure = classifySocketError(error);
      expect(failure.kind, ConnectFailureKind.refused);
      final sentence = describeConnectFailure(failure, '127.0.0.1:$port');
      expect(sentence, contains('refused the connection'));
      expect(sentence, isNot(contains('SocketException')));
    }
  });
}
