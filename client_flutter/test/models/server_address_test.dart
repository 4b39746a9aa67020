import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/result.dart';
import 'package:lan_chat/models/server_address.dart';

ServerAddress parsed(String text) => (ServerAddress.parse(text) as Ok<ServerAddress>).value;

String errorCode(String text) => (ServerAddress.parse(text) as Err<ServerAddress>).error.code;

void main() {
  test('reads host, port and token from the pairing link', () {
    final address = parsed('http://192.168.1.20:5555/#k=Zq3x9-_a');
    expect(address, const ServerAddress(host: '192.168.1.20', port: 5555, token: 'Zq3x9-_a'));
  });

  test('accepts a bare host:port and a bare host', () {
    expect(parsed('10.0.0.2:6000'), const ServerAddress(host: '10.0.0.2', port: 6000));
    expect(parsed(' chat.local '), const ServerAddress(host: 'chat.local', port: defaultPort));
  });

  test('a link without a token (server run with --open) has no token', () {
    expect(parsed('http://10.0.0.2:5555/').token, isNull);
    expect(parsed('http://10.0.0.2:5555/#k=').token, isNull);
  });

  test('understands IPv6 literals and writes them back in brackets', () {
    final address = parsed('http://[fe80::1]:5555/#k=t');
    expect(address.host, 'fe80::1');
    expect(address.label, '[fe80::1]:5555');
    expect(address.pairingLink, 'http://[fe80::1]:5555/#k=t');
  });

  test('the pairing link round-trips', () {
    const address = ServerAddress(host: '192.168.1.20', port: 5555, token: 'abc');
    expect(parsed(address.pairingLink), address);
    expect(ServerAddress.fromJson(address.toJson()), address);
  });

  test('refuses empty input and other schemes', () {
    expect(errorCode('   '), 'bad_address');
    expect(errorCode('ftp://host/'), 'bad_address');
  });

  test('a web page talks to its own host and port, token from its fragment', () {
    expect(ServerAddress.fromPage(Uri.parse('http://192.168.1.20:5555/app/#k=Zq3x9')),
        const ServerAddress(host: '192.168.1.20', port: 5555, token: 'Zq3x9'));
    expect(ServerAddress.fromPage(Uri.parse('http://chat.lan/app/')),
        const ServerAddress(host: 'chat.lan', port: 80), reason: 'no port: the scheme default');
    expect(ServerAddress.fromPage(Uri.parse('http://[fe80::1]:5555/app/#k=t'))?.label,
        '[fe80::1]:5555');
    expect(ServerAddress.fromPage(Uri.parse('file:///tmp/index.html')), isNull);
  });
}
