// Where a server is and how to pair with it. The server prints a pairing link
// and QR code of the form http://host:port/#k=<token> (PROTOCOL.md §8: the
// token travels in the URL fragment, never in a request line).

import 'result.dart';

/// The port chatserver.py listens on by default.
const int defaultPort = 5555;

class ServerAddress {
  const ServerAddress({required this.host, this.port = defaultPort, this.token});

  factory ServerAddress.fromJson(Map<String, Object?> json) => ServerAddress(
        host: json['host'] as String,
        port: (json['port'] as num?)?.toInt() ?? defaultPort,
        token: json['token'] as String?,
      );

  /// Parses a pairing link (`http://192.168.1.20:5555/#k=TOKEN`) or a bare
  /// `host[:port]`, as typed or pasted by a person.
  static Result<ServerAddress> parse(String input) {
    final text = input.trim();
    if (text.isEmpty) {
      return const Err(AppError('bad_address', 'Enter a link or a host name.'));
    }
    final withScheme = text.contains('://') ? text : 'http://$text';
    final Uri uri;
    try {
      uri = Uri.parse(withScheme);
    } on FormatException {
      return Err(AppError('bad_address', 'Not a link or host name: $text'));
    }
    if (uri.host.isEmpty) {
      return Err(AppError('bad_address', 'No host name in: $text'));
    }
    if (uri.scheme != 'http' && uri.scheme != 'https') {
      return Err(AppError('bad_address', 'Not an http link: $text'));
    }
    final token = uri.fragment.isEmpty ? null : Uri.splitQueryString(uri.fragment)['k'];
    return Ok(ServerAddress(
      host: uri.host,
      port: uri.hasPort ? uri.port : defaultPort,
      token: (token == null || token.isEmpty) ? null : token,
    ));
  }

  /// The server a web page was served by: the page's own host and port
  /// (the WebSocket must go there, the server checks Origin against Host),
  /// and the token from its `#k=` fragment. Null for a page that is not
  /// http(s).
  static ServerAddress? fromPage(Uri page) {
    if ((page.scheme != 'http' && page.scheme != 'https') || page.host.isEmpty) return null;
    final token = page.fragment.isEmpty ? null : Uri.splitQueryString(page.fragment)['k'];
    return ServerAddress(
      host: page.host,
      port: page.port, // the scheme's default (80) when the URL has none
      token: (token == null || token.isEmpty) ? null : token,
    );
  }

  final String host;
  final int port;

  /// Pairing token; null when the server runs with --open.
  final String? token;

  /// The same address with another token.
  ServerAddress withToken(String? newToken) =>
      ServerAddress(host: host, port: port, token: newToken);

  /// Host as it goes into a URL: IPv6 addresses in brackets.
  String get urlHost => host.contains(':') ? '[$host]' : host;

  /// "host:port" for people.
  String get label => '$urlHost:$port';

  /// Base of the HTTP routes (web client, /files, /ws).
  Uri get httpBase => Uri.parse('http://$urlHost:$port/');

  /// The pairing link, the same form the server prints.
  String get pairingLink =>
      token == null ? 'http://$label/' : 'http://$label/#k=${Uri.encodeQueryComponent(token!)}';

  Map<String, Object?> toJson() => {
        'host': host,
        'port': port,
        'token': ?token,
      };

  @override
  bool operator ==(Object other) =>
      other is ServerAddress && other.host == host && other.port == port && other.token == token;

  @override
  int get hashCode => Object.hash(host, port, token);

  @override
  String toString() => label;
}
