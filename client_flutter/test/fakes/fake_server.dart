// A fake server for the real ChatClient: the client connects through the
// injected TransportConnector and gets a FakeTransport, on which a test plays
// the server — reads what the client sent, answers with frames.

import 'dart:async';
import 'dart:typed_data';

import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/services/frame_codec.dart';
import 'package:lan_chat/services/messages.dart' show Json;
import 'package:lan_chat/services/transport.dart';

export 'package:lan_chat/services/messages.dart' show Json;

class FakeTransport implements ChatTransport {
  final StreamController<Frame> _toClient = StreamController<Frame>();
  final List<Frame> _unread = [];
  Completer<void>? _arrived;

  /// Every frame the client sent on this connection, in order.
  final List<Frame> sent = [];
  bool closed = false;

  @override
  bool supportsPayloads = true;

  @override
  Stream<Frame> get frames => _toClient.stream;

  @override
  Future<void> send(Json header, [Uint8List? payload]) async {
    if (closed) throw const TransportClosed();
    // Through the real codec both ways: what the client sends must be a
    // valid frame.
    final frame = decodeFrame(encodeFrame(header, payload));
    sent.add(frame);
    _unread.add(frame);
    final arrived = _arrived;
    _arrived = null;
    if (arrived != null && !arrived.isCompleted) arrived.complete();
  }

  /// The next frame the client sends (waits for it).
  Future<Frame> next() async {
    while (_unread.isEmpty) {
      final arrived = _arrived ??= Completer<void>();
      await arrived.future;
    }
    return _unread.removeAt(0);
  }

  /// The next frame of [type], skipping others (pings, typing…).
  Future<Json> nextOfType(String type) async {
    while (true) {
      final frame = await next();
      if (frame.type == type) return frame.header;
    }
  }

  /// Frames sent and not read yet by [next].
  List<Frame> get unread => List.unmodifiable(_unread);

  void reply(Json header, [Uint8List? payload]) {
    if (!closed) _toClient.add(Frame(header, payload));
  }

  /// The network drops the connection.
  void drop() {
    if (closed) return;
    closed = true;
    _toClient.close();
  }

  @override
  Future<void> close() async => drop();
}

class FakeServer {
  final List<FakeTransport> connections = [];
  final List<ServerAddress> addresses = [];
  Completer<void>? _connected;

  /// Set to make the next connection attempts fail ([refuseTimes] of them,
  /// or all while it is null).
  Object? refuseWith;
  int? refuseTimes;

  /// Connection attempts, refused ones included.
  int attempts = 0;

  /// The TransportConnector handed to ChatClient.
  Future<ChatTransport> connect(ServerAddress address) async {
    attempts++;
    final refusal = refuseWith;
    final times = refuseTimes;
    if (refusal != null && (times == null || times > 0)) {
      if (times != null) refuseTimes = times - 1;
      throw refusal;
    }
    addresses.add(address);
    final transport = FakeTransport();
    connections.add(transport);
    final connected = _connected;
    _connected = null;
    if (connected != null && !connected.isCompleted) connected.complete();
    return transport;
  }

  /// Waits until there are [count] connections and returns the last one.
  Future<FakeTransport> connection(int count) async {
    while (connections.length < count) {
      final connected = _connected ??= Completer<void>();
      await connected.future;
    }
    return connections[count - 1];
  }
}

/// Lets every pending microtask and zero-delay timer run.
Future<void> settle() async {
  for (var i = 0; i < 20; i++) {
    await Future<void>.delayed(Duration.zero);
  }
}

/// A `welcome` as PROTOCOL.md §4 has it. [uid] and [device] are left out
/// unless given (a server before identities sends neither); [room] and
/// [muted] likewise.
Json welcome({
  String nick = 'alice',
  int? uid,
  String? device,
  List<String> users = const ['alice', 'bob'],
  List<Json> history = const [],
  bool hasMore = false,
  int lastId = 0,
  Json limits = const {'text': 16384, 'chunk': 1048576, 'file': 4294967296},
  Json? room,
  bool? muted,
  String session = 'sess-1',
}) =>
    {
      'type': 'welcome',
      'nick': nick,
      'uid': ?uid,
      'device': ?device,
      'server': 'chatserver/1.0.0',
      'proto': 1,
      'session': session,
      'users': users,
      'online': users.length,
      'room': ?room,
      'muted': ?muted,
      'history': history,
      'has_more': hasMore,
      'last_id': lastId,
      'limits': limits,
    };

Json msg(
  int id, {
  String from = 'bob',
  int? uid,
  String text = 'hello',
  String? cid,
  String? to,
  String ts = '2026-11-25T09:14:03.120Z',
  Json? file,
  String? edited,
  String? deleted,
  Json? replyTo,
  List<String>? mentions,
  Map<String, List<int>>? reactions,
}) =>
    {
      'type': 'msg',
      'id': id,
      'ts': ts,
      'from': from,
      'uid': ?uid,
      'text': text,
      'cid': cid ?? 'c-$id',
      'to': ?to,
      'file': ?file,
      'edited': ?edited,
      'deleted': ?deleted,
      'reply_to': ?replyTo,
      'mentions': ?mentions,
      'reactions': ?reactions,
    };

/// A `msg.reply_to` quote (PROTOCOL.md §12).
Json quote(int id, {String from = 'bob', String text = 'hello', bool deleted = false}) => {
      'id': id,
      'from': from,
      'text': text,
      if (deleted) 'deleted': true,
    };

/// A `change` with `change: "react"`: [uid] put [emoji] (`""`: removed);
/// [reactions] is the target's whole reactions object after it.
Json reactFrame(
  int id, {
  required int target,
  required int uid,
  required String emoji,
  required Map<String, List<int>> reactions,
  String ts = '2026-11-25T09:21:00.000Z',
}) =>
    {
      'type': 'change',
      'id': id,
      'ts': ts,
      'change': 'react',
      'target': target,
      'uid': uid,
      'emoji': emoji,
      'reactions': reactions,
    };

/// `search_results` answering the `search` whose cid is [cid].
Json searchResultsFrame(String cid, List<Json> results, {bool hasMore = false}) => {
      'type': 'search_results',
      'cid': cid,
      'results': results,
      'has_more': hasMore,
    };

/// A `change` (PROTOCOL.md §4 and §10): `delete`, `edit` or `clear`
/// (`react`: [reactFrame]).
Json changeFrame(
  int id,
  String kind, {
  int? target,
  String by = 'sender',
  String? text,
  String ts = '2026-11-25T09:20:00.000Z',
}) =>
    {
      'type': 'change',
      'id': id,
      'ts': ts,
      'change': kind,
      'target': ?target,
      'by': by,
      'text': ?text,
      if (kind == 'edit') 'edited': ts,
    };

/// An `error` frame as the server sends it.
Json errorFrame(String code, String message, {bool fatal = false, String? ref}) => {
      'type': 'error',
      'code': code,
      'message': message,
      'ref': ?ref,
      'fatal': fatal,
    };

/// A `bye` with its reason (and the organiser's sentence).
Json byeFrame(String reason, [String? message]) => {
      'type': 'bye',
      'reason': reason,
      'message': ?message,
    };
