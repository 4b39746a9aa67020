// HTTP file routes of the web build (PROTOCOL.md §5, "Files over HTTP"): the
// session travels as `Authorization: Bearer`, never in a URL ("a session in
// the query string is refused"); after every welcome the page gets its
// cookie from `POST /session`.

import 'dart:convert';
import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
import 'package:http/http.dart' as http;
import 'package:http/testing.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/models/shared_file.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/file_io.dart';
import 'package:lan_chat/services/file_transfers.dart';
import 'package:lan_chat/services/http_transfers.dart';

import '../fakes/fake_server.dart';

const address = ServerAddress(host: '192.168.1.20', port: 5555, token: 'tok');
const cat = SharedFile(id: 'f9', name: 'cat.png', size: 3, mime: 'image/png');

void main() {
  late FakeServer server;
  late ChatClient client;
  late HttpTransfers transfers;
  late List<http.Request> requests;
  late List<TransferStatus> updates;

  setUp(() {
    server = FakeServer();
    client = ChatClient(
      connector: server.connect,
      address: address,
      nick: 'alice',
      liveness: const Liveness(keepAlive: false),
      sleep: (_) async {},
    );
    requests = [];
    final mock = MockClient((request) async {
      requests.add(request);
      if (request.url.path == '/session') return http.Response('', 204);
      return http.Response(jsonEncode(msg(10, from: 'alice', text: '')), 201);
    });
    transfers = HttpTransfers(client, httpClient: () => mock);
    updates = [];
    transfers.updates.listen(updates.add);
  });

  tearDown(() async {
    await transfers.dispose();
    await client.dispose();
  });

  Future<FakeTransport> join([String session = 'sess-1']) async {
    final started = client.start();
    final connection = await server.connection(1);
    await connection.nextOfType('hello');
    connection.reply(welcome(session: session));
    await started;
    await settle();
    return connection;
  }

  test('file links carry no session; requests carry it as Authorization: Bearer', () async {
    expect(transfers.browserUrl(cat), isNull, reason: 'nothing can read it before a welcome');
    expect(transfers.requestHeaders, isEmpty);
    await join();
    final link = transfers.browserUrl(cat)!;
    expect(link.toString(), 'http://192.168.1.20:5555/files/f9/cat.png');
    expect(transfers.browserUrl(cat, inline: true).toString(),
        'http://192.168.1.20:5555/files/f9/cat.png?inline=1');
    expect(link.toString(), isNot(contains('sess-1')));
    expect(transfers.requestHeaders, {'Authorization': 'Bearer sess-1'});
  });

  test('after the welcome, POST /session hands the session over for the cookie', () async {
    await join();
    final post = requests.singleWhere((r) => r.url.path == '/session');
    expect(post.method, 'POST');
    expect(post.body, 'sess-1');
    expect(post.headers['Content-Type'], startsWith('text/plain'));
    expect(post.url.query, isEmpty, reason: 'never in the URL');
  });

  test('a new connection has a new session: headers and cookie follow it', () async {
    final first = await join();
    first.drop();
    final second = await server.connection(2);
    await second.nextOfType('hello');
    second.reply(welcome(session: 'sess-2'));
    await settle();
    expect(transfers.requestHeaders, {'Authorization': 'Bearer sess-2'});
    expect([for (final r in requests) if (r.url.path == '/session') r.body], ['sess-1', 'sess-2']);
  });

  test('an upload is POST /files with the session in the header, not in the query', () async {
    await join();
    final bytes = Uint8List.fromList([1, 2, 3]);
    transfers.upload(BytesUploadSource(name: 'a.png', bytes: bytes, mime: 'image/png'),
        to: 'bob', caption: 'look');
    await settle();
    final post = requests.singleWhere((r) => r.url.path == '/files');
    expect(post.method, 'POST');
    expect(post.headers['Authorization'], 'Bearer sess-1');
    expect(post.headers['Content-Type'], startsWith('image/png'));
    expect(post.url.queryParameters.keys, containsAll(<String>['name', 'cid', 'to', 'sha256', 'text']));
    expect(post.url.queryParameters.containsKey('session'), isFalse);
    expect(post.url.toString(), isNot(contains('sess-1')));
    expect(post.bodyBytes, bytes);
    expect(updates.last.state, TransferState.done);
  });

  test('no URL this client builds holds the session', () async {
    await join();
    transfers.upload(BytesUploadSource(name: 'b.txt', bytes: Uint8List.fromList([4])));
    await settle();
    final urls = [
      transfers.browserUrl(cat),
      transfers.browserUrl(cat, inline: true),
      for (final r in requests) r.url,
    ];
    expect(urls, hasLength(4));
    for (final url in urls) {
      expect(url.toString(), isNot(contains('sess-1')), reason: '$url');
      expect(url!.queryParameters.containsKey('session'), isFalse);
    }
  });
}
