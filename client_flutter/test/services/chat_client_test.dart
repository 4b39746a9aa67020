// The real ChatClient against a fake server (injected transport connector):
// hello/welcome, acknowledgement by cid, the offline queue, resume by since;
// the device key and own messages by uid (issue 16); changes, the room,
// moderation and the ends that must not reconnect (issue 17); replies,
// reactions and search matched by cid (issue 20).

import 'dart:async';

import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/result.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/models/chat_message.dart';
import 'package:lan_chat/services/chat_client.dart';
import 'package:lan_chat/services/device_keys.dart';
import 'package:lan_chat/services/messages.dart';
import 'package:lan_chat/services/transport.dart';

import '../fakes/fake_server.dart';
import '../fakes/memory_files.dart';

const address = ServerAddress(host: '127.0.0.1', port: 5555, token: 'tok');

void main() {
  late FakeServer server;
  late ChatClient client;
  late List<ChatEvent> events;
  late MemoryKeyValueStore keyStore;
  var cids = 0;

  setUp(() {
    server = FakeServer();
    keyStore = MemoryKeyValueStore();
    cids = 0;
    client = ChatClient(
      connector: server.connect,
      address: address,
      nick: 'alice',
      liveness: const Liveness(keepAlive: false),
      sleep: (_) async {}, // reconnect at once: no timing in these tests
      newCid: () => 'cid-${++cids}',
      deviceKeys: DeviceKeys(keyStore),
    );
    events = [];
    client.events.listen(events.add);
  });

  tearDown(() => client.dispose());

  /// Starts the client and completes the handshake with [reply].
  Future<FakeTransport> join([Json? reply]) async {
    final started = client.start();
    final connection = await server.connection(1);
    await connection.nextOfType('hello');
    connection.reply(reply ?? welcome());
    expect(await started, isA<Ok<Welcome>>());
    return connection;
  }

  /// Drops connection [count] and answers the hello of the next one.
  Future<(FakeTransport, Json)> reconnect(int count, FakeTransport old, [Json? reply]) async {
    old.drop();
    final connection = await server.connection(count);
    final hello = await connection.nextOfType('hello');
    if (reply != null) connection.reply(reply);
    await settle();
    return (connection, hello);
  }

  group('handshake', () {
    test('sends hello with nick, device, client, proto and token, then is online', () async {
      final started = client.start();
      final connection = await server.connection(1);
      final hello = await connection.nextOfType('hello');
      final device = keyStore.values[DeviceKeys.storageKey(address)];
      expect(device, isNotNull, reason: 'the key is stored before the hello that claims a nick');
      expect(hello, {
        'type': 'hello',
        'nick': 'alice',
        'device': device,
        'client': 'flutter/1.0',
        'proto': 1,
        'token': 'tok',
      });
      connection.reply(welcome(nick: 'Alice', users: ['Alice', 'bob'], history: [msg(7)], lastId: 7));
      final result = await started;
      expect(result, isA<Ok<Welcome>>());
      expect(client.status, ConnectionStatus.online);
      expect(client.nick, 'Alice');
      expect(client.session, 'sess-1');
      expect(client.users, ['Alice', 'bob']);
      expect(client.lastSeenId, 7);
      await settle();
      final added = events.whereType<MessagesAdded>().single;
      expect(added.messages.single.id, 7);
      expect(added.live, isFalse);
    });

    test('a refused first attempt returns the error and stops', () async {
      final started = client.start();
      final connection = await server.connection(1);
      await connection.nextOfType('hello');
      connection.reply({
        'type': 'error',
        'code': 'auth_failed',
        'message': 'Wrong pairing token.',
        'fatal': true,
      });
      connection.drop();
      final result = await started;
      expect(result, isA<Err<Welcome>>());
      expect((result as Err<Welcome>).error.code, 'auth_failed');
      await settle();
      expect(client.status, ConnectionStatus.stopped);
      expect(server.connections, hasLength(1), reason: 'no retry after auth_failed');
    });

    test('an unreachable server is retried a while (iOS asks for LAN access), then given up',
        () async {
      server.refuseWith = const ConnectFailure(ConnectFailureKind.refused, 'errno 111');
      final result = await client.start();
      expect((result as Err<Welcome>).error.code, 'unreachable');
      expect(server.attempts, firstContactAttempts);
      expect(client.status, ConnectionStatus.stopped);
    });

    test('the first connection succeeds once the local-network prompt is answered', () async {
      server
        ..refuseWith = const ConnectFailure(ConnectFailureKind.denied, 'errno 1')
        ..refuseTimes = 2;
      final started = client.start();
      final connection = await server.connection(1);
      await connection.nextOfType('hello');
      connection.reply(welcome());
      expect(await started, isA<Ok<Welcome>>());
      expect(server.attempts, 3);
      expect(client.status, ConnectionStatus.online);
    });

    test('connection errors read as sentences, not socket exception text', () async {
      server.refuseWith = const ConnectFailure(
          ConnectFailureKind.refused, 'SocketException: Connection refused (OS Error: 111)');
      final result = await client.start();
      final message = (result as Err<Welcome>).error.message;
      expect(message, contains('127.0.0.1:5555 refused the connection'));
      expect(message, isNot(contains('SocketException')));
    });

    test('an unknown host is not retried', () async {
      server.refuseWith = const ConnectFailure(ConnectFailureKind.unknownHost, 'host lookup');
      final result = await client.start();
      expect((result as Err<Welcome>).error.code, 'bad_address');
      expect(server.attempts, 1);
    });

    test('a server that never answers hello times out (handshake timeout)', () async {
      final quiet = ChatClient(
        connector: server.connect,
        address: address,
        nick: 'alice',
        liveness: const Liveness(keepAlive: false, handshakeTimeout: Duration(milliseconds: 20)),
        sleep: (_) async {},
      );
      final result = await quiet.start();
      expect((result as Err<Welcome>).error.code, 'timeout');
      expect(server.connections, hasLength(firstContactAttempts));
      expect(server.connections.every((c) => c.closed), isTrue);
      await quiet.dispose();
    });

    test('nick_taken on the first attempt is returned to the user', () async {
      final started = client.start();
      final connection = await server.connection(1);
      await connection.nextOfType('hello');
      connection.reply({
        'type': 'error',
        'code': 'nick_taken',
        'message': 'Someone is already called alice.',
        'fatal': false,
      });
      final result = await started;
      expect((result as Err<Welcome>).error.code, 'nick_taken');
      expect(connection.closed, isTrue);
    });

    test('answers ping with pong carrying the same t', () async {
      final connection = await join();
      connection.reply({'type': 'ping', 't': 42});
      expect(await connection.nextOfType('pong'), {'type': 'pong', 't': 42});
    });
  });

  group('acknowledgement', () {
    test('the server copy with the same cid acknowledges a message', () async {
      final connection = await join();
      final pending = client.sendText('hi all');
      expect(pending, isA<Ok<PendingMessage>>());
      expect(client.outbox.single.cid, 'cid-1');
      expect(await connection.nextOfType('msg'), {'type': 'msg', 'text': 'hi all', 'cid': 'cid-1'});
      connection.reply(msg(42, from: 'alice', text: 'hi all', cid: 'cid-1'));
      await settle();
      expect(client.outbox, isEmpty);
      expect(client.lastSeenId, 42);
    });

    test('a direct message carries to', () async {
      final connection = await join();
      client.sendText('psst', to: 'bob');
      expect(await connection.nextOfType('msg'),
          {'type': 'msg', 'text': 'psst', 'cid': 'cid-1', 'to': 'bob'});
    });

    test("another user's message with the same cid does not acknowledge", () async {
      final connection = await join();
      client.sendText('hi');
      await connection.nextOfType('msg');
      connection.reply(msg(5, from: 'bob', cid: 'cid-1'));
      await settle();
      expect(client.outbox.single.cid, 'cid-1');
    });

    test('an error about the cid marks the message failed; retry resends it', () async {
      final connection = await join();
      client.sendText('x', to: 'nobody');
      await connection.nextOfType('msg');
      connection.reply({
        'type': 'error',
        'code': 'unknown_user',
        'message': "No user named 'nobody' is online.",
        'ref': 'cid-1',
        'fatal': false,
      });
      await settle();
      expect(client.outbox.single.state, PendingState.failed);
      expect(client.outbox.single.error?.code, 'unknown_user');
      expect(client.status, ConnectionStatus.online, reason: 'not fatal');
      client.retry('cid-1');
      expect((await connection.nextOfType('msg'))['cid'], 'cid-1');
    });

    test('a text over the limit is refused before sending', () async {
      await join();
      final result = client.sendText('é' * 8193); // 16,386 bytes as UTF-8
      expect((result as Err<PendingMessage>).error.code, 'text_too_long');
      expect(client.outbox, isEmpty);
    });
  });

  group('offline queue and resume', () {
    test('messages written while offline are sent after reconnecting, once', () async {
      final first = await join(welcome(history: [msg(3)], lastId: 3));
      first.drop();
      final second = await server.connection(2);
      await second.nextOfType('hello');
      client.sendText('written offline'); // not welcomed yet: queued
      await settle();
      expect(second.unread, isEmpty, reason: 'nothing but hello before welcome');
      second.reply(welcome(history: [], lastId: 3));
      final sent = await second.nextOfType('msg');
      expect(sent, {'type': 'msg', 'text': 'written offline', 'cid': 'cid-1'});
      await settle();
      expect(second.unread.where((f) => f.type == 'msg'), isEmpty, reason: 'sent once');
    });

    test('an unacknowledged message is resent with the same cid', () async {
      final first = await join();
      client.sendText('maybe lost');
      expect((await first.nextOfType('msg'))['cid'], 'cid-1');
      final (second, _) = await reconnect(2, first, welcome());
      expect((await second.nextOfType('msg'))['cid'], 'cid-1');
      // The server stored it the first time: it answers with the original.
      second.reply(msg(9, from: 'alice', text: 'maybe lost', cid: 'cid-1'));
      await settle();
      expect(client.outbox, isEmpty);
    });

    test('a message acknowledged by the resumed history is not resent', () async {
      final first = await join();
      client.sendText('made it');
      await first.nextOfType('msg');
      final (second, _) = await reconnect(2, first,
          welcome(history: [msg(10, from: 'alice', text: 'made it', cid: 'cid-1')], lastId: 10));
      expect(client.outbox, isEmpty);
      expect(second.unread.where((f) => f.type == 'msg'), isEmpty);
    });

    test('hello.since is the last seen id after a reconnect', () async {
      final first = await join(welcome(history: [msg(1), msg(2)], lastId: 2));
      first.reply(msg(5));
      await settle();
      final (_, hello) = await reconnect(2, first, welcome());
      expect(hello['since'], 5);
      expect(hello['device'], first.sent.first.header['device'],
          reason: 'the device key takes the nick over from the dead connection');
      expect(hello.containsKey('session'), isFalse, reason: 'hello.session is ignored now');
      expect(client.status, ConnectionStatus.online);
    });

    test('a first session with no message sends no since', () async {
      final first = await join();
      final (_, hello) = await reconnect(2, first);
      expect(hello.containsKey('since'), isFalse);
    });

    test('pages back through a gap with before/after until has_more is false', () async {
      final first = await join(welcome(history: [msg(3)], lastId: 3));
      final (second, hello) = await reconnect(2, first,
          welcome(history: [msg(400), msg(401)], hasMore: true, lastId: 401));
      expect(hello['since'], 3);
      final request = await second.nextOfType('history');
      expect(request, {'type': 'history', 'before': 400, 'after': 3, 'limit': 200, 'cid': 'h-1'});
      expect(client.lastSeenId, 3, reason: 'the gap is still open');
      second.reply({
        'type': 'history',
        'messages': [for (var id = 200; id < 400; id++) msg(id)],
        'has_more': true,
        'cid': 'h-1',
      });
      final next = await second.nextOfType('history');
      expect(next, {'type': 'history', 'before': 200, 'after': 3, 'limit': 200, 'cid': 'h-2'});
      second.reply({
        'type': 'history',
        'messages': [for (var id = 4; id < 200; id++) msg(id)],
        'has_more': false,
        'cid': 'h-2',
      });
      await settle();
      expect(client.lastSeenId, 401);
      final ids = events
          .whereType<MessagesAdded>()
          .expand((e) => e.messages)
          .map((m) => m.id)
          .toList();
      expect(ids.toSet().length, ids.length, reason: 'no duplicate');
      expect(ids.toSet(), {for (var id = 3; id <= 401; id++) id}, reason: 'no gap');
    });

    test('a connection lost inside a gap asks for the gap again', () async {
      final first = await join(welcome(history: [msg(3)], lastId: 3));
      final (second, _) =
          await reconnect(2, first, welcome(history: [msg(400)], hasMore: true, lastId: 400));
      await second.nextOfType('history');
      final (_, hello) = await reconnect(3, second);
      expect(hello['since'], 3);
    });

    test('nick_taken after a reconnect is retried (old connection lingering)', () async {
      final first = await join();
      final (second, _) = await reconnect(2, first, {
        'type': 'error',
        'code': 'nick_taken',
        'message': 'Someone is already called alice.',
        'fatal': false,
      });
      expect(second.closed, isTrue);
      final third = await server.connection(3);
      await third.nextOfType('hello');
      third.reply(welcome());
      await settle();
      expect(client.status, ConnectionStatus.online);
    });

    test('auth_failed after a reconnect stops retrying', () async {
      final first = await join();
      final (second, _) = await reconnect(2, first, {
        'type': 'error',
        'code': 'auth_failed',
        'message': 'Wrong pairing token.',
        'fatal': true,
      });
      second.drop();
      await settle();
      expect(client.status, ConnectionStatus.stopped);
      expect(client.error?.code, 'auth_failed');
      expect(server.connections, hasLength(2));
    });
  });

  group('history and users', () {
    test('loads older messages with before and limit', () async {
      final connection = await join(welcome(history: [msg(50)], hasMore: true, lastId: 50));
      final page = client.requestHistory(before: 50);
      expect(await connection.nextOfType('history'), {'type': 'history', 'before': 50, 'limit': 50, 'cid': 'h-1'});
      connection.reply(
          {'type': 'history', 'messages': [msg(48), msg(49)], 'has_more': false, 'cid': 'h-1'});
      final result = await page;
      expect((result as Ok<HistoryPage>).value.messages.map((m) => m.id), [48, 49]);
      expect(client.lastSeenId, 50);
    });

    test('join and leave update the user list and the online count', () async {
      final connection = await join();
      expect(client.onlineCount, 2);
      connection.reply({'type': 'join', 'nick': 'alice'}); // the joiner gets its own join
      connection.reply({'type': 'join', 'nick': 'carol'});
      connection.reply({'type': 'leave', 'nick': 'BOB', 'reason': 'quit'});
      await settle();
      expect(client.users, ['alice', 'carol']);
      expect(client.onlineCount, 2);
    });

    test('in a big room the count comes from welcome.online', () async {
      final reply = welcome(users: ['alice', 'bob']);
      reply['online'] = 1200;
      await join(reply);
      expect(client.onlineCount, 1200);
      expect(client.users, hasLength(2));
    });

    test('typing is passed on', () async {
      final connection = await join();
      connection.reply({'type': 'typing', 'from': 'bob', 'to': 'alice'});
      await settle();
      final typing = events.whereType<TypingReceived>().single;
      expect((typing.from, typing.to), ('bob', 'alice'));
    });
  });

  group('liveness', () {
    ChatClient withLiveness(Liveness liveness) => ChatClient(
          connector: server.connect,
          address: address,
          nick: 'alice',
          liveness: liveness,
          sleep: (_) async {},
        );

    Future<FakeTransport> joinWith(ChatClient other, [Json? reply]) async {
      final started = other.start();
      final connection = await server.connection(1);
      await connection.nextOfType('hello');
      connection.reply(reply ?? welcome());
      expect(await started, isA<Ok<Welcome>>());
      return connection;
    }

    test('back in the foreground, a dead connection is noticed at once and replaced', () async {
      final other = withLiveness(const Liveness(keepAlive: false, pongTimeout: Duration(milliseconds: 30)));
      final first = await joinWith(other);
      other.checkConnection(); // the app was resumed
      expect((await first.next()).type, 'ping');
      // No answer: the connection died while the phone slept.
      final second = await server.connection(2);
      final hello = await second.nextOfType('hello');
      expect(hello['device'], first.sent.first.header['device']);
      expect(hello.containsKey('session'), isFalse);
      expect(first.closed, isTrue);
      await other.dispose();
    });

    test('a pong to the resume ping keeps the connection', () async {
      final other = withLiveness(const Liveness(keepAlive: false, pongTimeout: Duration(milliseconds: 30)));
      final first = await joinWith(other);
      other.checkConnection();
      final ping = await first.next();
      expect(ping.type, 'ping');
      first.reply({'type': 'pong', 't': ping.header['t']});
      await Future<void>.delayed(const Duration(milliseconds: 200));
      expect(server.connections, hasLength(1));
      expect(other.status, ConnectionStatus.online);
      await other.dispose();
    });

    test('keep-alive pings after welcome.limits.ping_after of silence', () async {
      final other = withLiveness(const Liveness(pongTimeout: Duration(seconds: 30)));
      final first = await joinWith(other, welcome(limits: {'text': 16384, 'ping_after': 0.05}));
      expect(other.limits.pingAfter, const Duration(milliseconds: 50));
      expect((await first.next()).type, 'ping');
      await other.dispose();
    });

    test('the client pings within half the idle_timeout, even when ping_after is longer', () async {
      final other = withLiveness(const Liveness(pongTimeout: Duration(seconds: 30)));
      final first = await joinWith(
          other, welcome(limits: {'text': 16384, 'ping_after': 600, 'idle_timeout': 0.1}));
      expect((await first.next()).type, 'ping');
      await other.dispose();
    });

    test('welcome.limits: ping_after and idle_timeout when present, defaults otherwise', () {
      const defaults = ServerLimits();
      expect(defaults.pingAfter, const Duration(seconds: 30));
      expect(defaults.idleTimeout, const Duration(seconds: 90));
      final announced = ServerLimits.fromJson({
        'text': 100,
        'ping_after': 12,
        'idle_timeout': 40.5,
        'something_new': {'a': 1}, // unknown fields are ignored
      });
      expect(announced.text, 100);
      expect(announced.pingAfter, const Duration(seconds: 12));
      expect(announced.idleTimeout, const Duration(milliseconds: 40500));
      final bad = ServerLimits.fromJson({'ping_after': 'soon', 'idle_timeout': -1});
      expect(bad.pingAfter, const Duration(seconds: 30));
      expect(bad.idleTimeout, const Duration(seconds: 90));
    });
  });

  group('history by cid', () {
    test('replies are matched by cid, whatever their order', () async {
      final connection = await join();
      final older = client.requestHistory(before: 50);
      final newer = client.requestHistory(before: 90);
      final first = await connection.nextOfType('history');
      final second = await connection.nextOfType('history');
      expect((first['cid'], second['cid']), ('h-1', 'h-2'));
      connection.reply({'type': 'history', 'messages': [msg(89)], 'has_more': false, 'cid': 'h-2'});
      connection.reply({'type': 'history', 'messages': [msg(49)], 'has_more': true, 'cid': 'h-1'});
      expect(((await older) as Ok<HistoryPage>).value.messages.single.id, 49);
      expect(((await newer) as Ok<HistoryPage>).value.messages.single.id, 89);
    });

    test('a rate_limited error about typing does not answer a history request', () async {
      final connection = await join();
      var answered = false;
      final page = client.requestHistory(before: 50)..then((_) => answered = true);
      await connection.nextOfType('history');
      client.sendTyping();
      connection.reply({
        'type': 'error',
        'code': 'rate_limited',
        'message': 'Too many messages; slow down.',
        'fatal': false,
      });
      await settle();
      expect(answered, isFalse);
      connection.reply({'type': 'history', 'messages': [msg(49)], 'has_more': false, 'cid': 'h-1'});
      expect(await page, isA<Ok<HistoryPage>>());
    });

    test('an error naming the request cid answers it', () async {
      final connection = await join();
      final page = client.requestHistory(before: 50);
      await connection.nextOfType('history');
      connection.reply({
        'type': 'error',
        'code': 'rate_limited',
        'message': 'Too many messages; slow down.',
        'ref': 'h-1',
        'fatal': false,
      });
      expect(((await page) as Err<HistoryPage>).error.code, 'rate_limited');
      expect(client.status, ConnectionStatus.online);
    });
  });

  group('device identity (PROTOCOL.md §2)', () {
    test('the key is created once and reused by the next client for the same server', () async {
      final connection = await join();
      final device = connection.sent.first.header['device'] as String;
      expect(isDeviceKey(device), isTrue);
      await client.dispose();
      final again = ChatClient(
        connector: server.connect,
        address: address.withToken('new-token'),
        nick: 'alice',
        liveness: const Liveness(keepAlive: false),
        sleep: (_) async {},
        deviceKeys: DeviceKeys(keyStore),
      );
      unawaited(again.start());
      final second = await server.connection(2);
      final hello = await second.nextOfType('hello');
      expect(hello['device'], device, reason: 'the app started again: same device');
      expect(hello.containsKey('session'), isFalse);
      second.reply(welcome(device: device));
      await settle();
      expect(keyStore.values, hasLength(1));
      await again.dispose();
    });

    test('another server gets another key', () async {
      await join();
      final other = ChatClient(
        connector: server.connect,
        address: const ServerAddress(host: '10.0.0.9'),
        nick: 'alice',
        liveness: const Liveness(keepAlive: false),
        sleep: (_) async {},
        deviceKeys: DeviceKeys(keyStore),
      );
      unawaited(other.start());
      final second = await server.connection(2);
      final hello = await second.nextOfType('hello');
      expect(hello['device'], isNot(server.connections.first.sent.first.header['device']));
      expect(keyStore.values, hasLength(2));
      second.reply(welcome());
      await settle();
      await other.dispose();
    });

    test('a key the server issues in welcome.device is stored and sent from then on', () async {
      final issued = 'Q' * 43;
      final first = await join(welcome(uid: 7, device: issued));
      await settle();
      expect(keyStore.values[DeviceKeys.storageKey(address)], issued);
      expect(client.deviceKey, issued);
      final (_, hello) = await reconnect(2, first, welcome(uid: 7, device: issued));
      expect(hello['device'], issued);
    });

    test('own messages are those whose uid is welcome.uid, whatever their nick', () async {
      final connection = await join(welcome(uid: 7));
      expect(client.uid, 7);
      client.sendText('hi');
      await connection.nextOfType('msg');
      // The previous holder of a lapsed "alice" (another identity) had a
      // message with this cid: not our acknowledgement.
      connection.reply(msg(5, from: 'alice', uid: 3, cid: 'cid-1'));
      await settle();
      expect(client.outbox.single.cid, 'cid-1');
      expect(client.isMine(ChatMessage.fromJson(msg(5, from: 'alice', uid: 3))), isFalse);
      connection.reply(msg(6, from: 'alice', uid: 7, text: 'hi', cid: 'cid-1'));
      await settle();
      expect(client.outbox, isEmpty);
      expect(client.isMine(ChatMessage.fromJson(msg(6, from: 'ALICE', uid: 7))), isTrue);
    });
  });

  group('refusals before welcome (PROTOCOL.md §6)', () {
    for (final code in ['nick_owned', 'room_locked']) {
      test('$code is returned with its sentence, and not retried', () async {
        final started = client.start();
        final connection = await server.connection(1);
        await connection.nextOfType('hello');
        connection.reply(errorFrame(code, 'The nick alice belongs to another device; pick another one.'));
        final result = await started;
        final refused = (result as Err<Welcome>).error;
        expect(refused.code, code);
        expect(refused.message, contains('another'));
        await settle();
        expect(client.status, ConnectionStatus.stopped);
        expect(server.attempts, 1, reason: 'only another nick can get in');
      });
    }

    test('banned is fatal: no retry, the sentence is kept', () async {
      final started = client.start();
      final connection = await server.connection(1);
      await connection.nextOfType('hello');
      connection.reply(errorFrame('banned', 'The organiser banned this device until 12:00.', fatal: true));
      connection.drop();
      final result = await started;
      expect((result as Err<Welcome>).error.code, 'banned');
      await settle();
      expect(client.status, ConnectionStatus.stopped);
      expect(client.error?.message, contains('until 12:00'));
      expect(server.attempts, 1);
    });

    test('banned after a reconnect stops reconnecting', () async {
      final first = await join();
      final (second, _) = await reconnect(2, first,
          errorFrame('banned', 'The organiser banned this device.', fatal: true));
      second.drop();
      await settle();
      expect(client.status, ConnectionStatus.stopped);
      expect(client.error?.code, 'banned');
      expect(server.connections, hasLength(2));
    });

    test('nick_owned after a reconnect (the claim lapsed) stops reconnecting', () async {
      final first = await join();
      await reconnect(2, first, errorFrame('nick_owned', 'The nick alice belongs to another device.'));
      await settle();
      expect(client.status, ConnectionStatus.stopped);
      expect(server.connections, hasLength(2));
    });
  });

  group('bye (PROTOCOL.md §4)', () {
    for (final (reason, sentence) in [
      ('kicked', 'The organiser removed you from the chat. You may join again.'),
      ('banned', 'The organiser banned this device.'),
      ('replaced', null),
    ]) {
      test('$reason: stops, says why, does not reconnect', () async {
        final connection = await join();
        connection.reply(byeFrame(reason, sentence));
        connection.drop();
        await settle();
        expect(client.status, ConnectionStatus.stopped);
        expect(client.error?.code, reason);
        if (sentence != null) expect(client.error?.message, sentence);
        expect(server.connections, hasLength(1), reason: 'no reconnect');
      });
    }

    test('kicked: rejoin() comes back by hand, resuming from the last id', () async {
      final first = await join(welcome(history: [msg(4)], lastId: 4));
      first.reply(byeFrame('kicked', 'The organiser removed you from the chat. You may join again.'));
      first.drop();
      await settle();
      expect(client.status, ConnectionStatus.stopped);
      expect(client.rejoin(), isTrue);
      final second = await server.connection(2);
      final hello = await second.nextOfType('hello');
      expect(hello['since'], 4);
      second.reply(welcome(lastId: 4));
      await settle();
      expect(client.status, ConnectionStatus.online);
      expect(client.rejoin(), isFalse, reason: 'running');
    });

    test('shutdown: reconnects', () async {
      final first = await join();
      first.reply(byeFrame('shutdown'));
      first.drop();
      final second = await server.connection(2);
      await second.nextOfType('hello');
      second.reply(welcome());
      await settle();
      expect(client.status, ConnectionStatus.online);
    });
  });

  group('changes, the room, muted (PROTOCOL.md §10)', () {
    test('a live change is passed on, and its id is the new resume point', () async {
      final connection = await join(welcome(history: [msg(3)], lastId: 3));
      connection.reply(changeFrame(9, 'delete', target: 3));
      await settle();
      final added = events.whereType<MessagesAdded>().last;
      expect(added.messages, isEmpty);
      expect(added.live, isTrue);
      final change = added.changes.single;
      expect((change.id, change.kind, change.target, change.by), (9, 'delete', 3, 'sender'));
      expect(client.lastSeenId, 9);
      final (_, hello) = await reconnect(2, connection, welcome());
      expect(hello['since'], 9);
    });

    test('changes inside a resumed welcome and a history page are parsed in order', () async {
      final first = await join(welcome(history: [msg(3), msg(4)], lastId: 4));
      final (second, _) = await reconnect(2, first, welcome(history: [
        msg(300),
        changeFrame(301, 'edit', target: 3, text: 'fixed'),
      ], hasMore: true, lastId: 301));
      final request = await second.nextOfType('history');
      expect(request['after'], 4);
      second.reply({
        'type': 'history',
        'messages': [msg(5), changeFrame(6, 'delete', target: 4, by: 'operator')],
        'has_more': false,
        'cid': request['cid'],
      });
      await settle();
      final batches = events.whereType<MessagesAdded>().toList();
      final resumed = batches[batches.length - 2];
      expect(resumed.messages.single.id, 300);
      expect(resumed.changes.single.text, 'fixed');
      expect(resumed.changes.single.edited, DateTime.parse('2026-11-25T09:20:00.000Z'));
      final page = batches.last;
      expect(page.messages.single.id, 5);
      expect((page.changes.single.target, page.changes.single.by), (4, 'operator'));
      expect(client.lastSeenId, 301);
    });

    test('room in welcome and in a room message', () async {
      final connection = await join(
          welcome(room: {'name': 'Physics 3B', 'topic': 'Lab at 10', 'locked': false}));
      expect(client.room.name, 'Physics 3B');
      connection.reply({'type': 'room', 'name': 'Physics 3B', 'topic': 'Lab moved to 11', 'locked': true});
      await settle();
      expect(client.room.topic, 'Lab moved to 11');
      expect(client.room.locked, isTrue);
      expect(events.whereType<RoomUpdated>().last.room.topic, 'Lab moved to 11');
    });

    test('muted in welcome, then notice unmuted and muted', () async {
      final connection = await join(welcome(muted: true));
      expect(client.muted, isTrue);
      connection.reply({'type': 'notice', 'code': 'unmuted', 'message': 'You may post again.'});
      await settle();
      expect(client.muted, isFalse);
      connection.reply({'type': 'notice', 'code': 'muted', 'message': 'The organiser muted you.'});
      await settle();
      expect(client.muted, isTrue);
      final last = events.whereType<MutedChanged>().last;
      expect((last.muted, last.message), (true, 'The organiser muted you.'));
    });

    test('delete and edit send their frames with a cid', () async {
      final connection = await join();
      expect(client.deleteMessage(5), isA<Ok<String>>());
      expect(await connection.nextOfType('delete'), {'type': 'delete', 'id': 5, 'cid': 'cid-1'});
      expect(client.editMessage(6, 'better'), isA<Ok<String>>());
      expect(await connection.nextOfType('edit'),
          {'type': 'edit', 'id': 6, 'text': 'better', 'cid': 'cid-2'});
      expect((client.editMessage(6, '  ') as Err<String>).error.code, 'empty');
    });

    test('delete and edit fail at once while offline', () async {
      final first = await join();
      first.drop();
      await settle();
      expect((client.deleteMessage(5) as Err<String>).error.code, 'offline');
      expect((client.editMessage(5, 'x') as Err<String>).error.code, 'offline');
    });
  });

  group('replies, reactions, search (PROTOCOL.md §12)', () {
    test('a reply carries reply_to, also when resent after a reconnect', () async {
      final connection = await join();
      client.sendText('yes!', replyTo: 42);
      expect(await connection.nextOfType('msg'),
          {'type': 'msg', 'text': 'yes!', 'cid': 'cid-1', 'reply_to': 42});
      final (second, _) = await reconnect(2, connection, welcome());
      expect(await second.nextOfType('msg'),
          {'type': 'msg', 'text': 'yes!', 'cid': 'cid-1', 'reply_to': 42},
          reason: 'the unacknowledged reply is resent with its reply_to');
    });

    test('the stored reply arrives with its quote, mentions and reactions', () async {
      final connection = await join();
      connection.reply(msg(43, text: '@alice yes', replyTo: quote(42, from: 'alice', text: 'ready?'),
          mentions: ['alice'], reactions: {'👍': [3, 7]}));
      await settle();
      final message = events.whereType<MessagesAdded>().last.messages.single;
      expect((message.replyTo!.id, message.replyTo!.from, message.replyTo!.text), (42, 'alice', 'ready?'));
      expect(message.mentions, ['alice']);
      expect(message.reactions, {'👍': [3, 7]});
    });

    test('react sends id, emoji and a cid; "" takes it back; offline fails at once', () async {
      final connection = await join();
      expect(client.react(42, '👍'), isA<Ok<String>>());
      expect(await connection.nextOfType('react'),
          {'type': 'react', 'id': 42, 'emoji': '👍', 'cid': 'cid-1'});
      client.react(42, '');
      expect((await connection.nextOfType('react'))['emoji'], '');
      connection.drop();
      await settle();
      expect((client.react(42, '👍') as Err<String>).error.code, 'offline');
    });

    test('a live react change is passed on with the whole reactions, and is a resume point',
        () async {
      final connection = await join(welcome(history: [msg(42)], lastId: 42));
      connection.reply(reactFrame(44, target: 42, uid: 7, emoji: '❤️', reactions: {'❤️': [7]}));
      await settle();
      final change = events.whereType<MessagesAdded>().last.changes.single;
      expect((change.isReact, change.target, change.uid, change.emoji), (true, 42, 7, '❤️'));
      expect(change.reactions, {'❤️': [7]});
      expect(client.lastSeenId, 44);
    });

    test('search sends its fields; results are matched by cid, whatever their order', () async {
      final connection = await join(welcome(history: [msg(90)], lastId: 90));
      final first = client.search('  homework link ');
      final second = client.search('lab', withNick: 'bob', before: 30, limit: 5);
      final a = await connection.nextOfType('search');
      final b = await connection.nextOfType('search');
      expect(a, {'type': 'search', 'text': 'homework link', 'cid': 's-1', 'limit': 20});
      expect(b, {'type': 'search', 'text': 'lab', 'cid': 's-2', 'with': 'bob', 'before': 30, 'limit': 5});
      connection.reply(searchResultsFrame('s-2', [msg(12, text: 'lab at 10', to: 'alice')]));
      connection.reply(searchResultsFrame('s-1', [msg(80, text: 'homework link'), msg(20, text: 'homework links')],
          hasMore: true));
      final older = (await first) as Ok<SearchResults>;
      expect(older.value.results.map((m) => m.id), [80, 20]);
      expect(older.value.hasMore, isTrue);
      expect(older.value.nextBefore, 20);
      expect(((await second) as Ok<SearchResults>).value.results.single.to, 'alice');
      await settle();
      expect(client.lastSeenId, 90, reason: 'results are not a range of the id sequence');
      expect(events.whereType<MessagesAdded>().expand((e) => e.messages).map((m) => m.id), [90],
          reason: 'results do not enter the conversation');
    });

    test('an error naming the search cid answers it; others do not', () async {
      final connection = await join();
      var answered = false;
      final result = client.search('x', from: 'nobody')..then((_) => answered = true);
      expect((await connection.nextOfType('search'))['from'], 'nobody');
      connection.reply(errorFrame('rate_limited', 'Slow down.'));
      await settle();
      expect(answered, isFalse);
      connection.reply(errorFrame('unknown_user', "No user named 'nobody'.", ref: 's-1'));
      expect(((await result) as Err<SearchResults>).error.code, 'unknown_user');
    });

    test('results that do not parse still answer their search, as an error', () async {
      final connection = await join();
      final result = client.search('x');
      await connection.nextOfType('search');
      connection.reply({'type': 'search_results', 'cid': 's-1', 'results': [{'id': 'not a number'}],
          'has_more': false});
      expect(((await result) as Err<SearchResults>).error.code, 'bad_json');
      expect(client.status, ConnectionStatus.online);
    });

    test('an empty or too long search is refused before sending; a lost connection fails it',
        () async {
      final connection = await join();
      expect(((await client.search('   ')) as Err<SearchResults>).error.code, 'empty');
      expect(((await client.search('a' * 201)) as Err<SearchResults>).error.code, 'bad_request');
      expect(connection.sent.where((f) => f.type == 'search'), isEmpty);
      final pending = client.search('lost');
      await connection.nextOfType('search');
      connection.drop();
      expect(((await pending) as Err<SearchResults>).error.code, 'disconnected');
    });
  });

  test('back-off doubles up to its maximum', () {
    const backoff = Backoff(jitter: 0);
    expect(backoff.delay(0), const Duration(seconds: 1));
    expect(backoff.delay(3), const Duration(seconds: 8));
    expect(backoff.delay(10), const Duration(seconds: 30));
  });
}
