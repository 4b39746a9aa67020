// The chat session of PROTOCOL.md §2–§4 over any ChatTransport: hello and
// welcome, acknowledgement by cid, an outbox for messages written offline,
// reconnection with exponential back-off, and resume from the last seen id;
// replies, reactions and search (§12).
//
// Pure Dart. The transport comes from an injected connector, so tests run
// this very class against a fake server (test/services/chat_client_test.dart).

import 'dart:async';
import 'dart:convert';
import 'dart:math';
import 'dart:typed_data';

import '../models/chat_message.dart';
import '../models/result.dart';
import '../models/room.dart';
import '../models/server_address.dart';
import 'device_keys.dart';
import 'frame_codec.dart';
import 'messages.dart';
import 'protocol.dart';
import 'transport.dart';

/// Sent as `hello.client`.
const String defaultClientName = 'flutter/1.0';

/// "history {before, after, limit}: limit (int 1–200)" — PROTOCOL.md §3.
const int maxHistoryLimit = 200;

enum ConnectionStatus {
  /// First attempt in progress.
  connecting,

  /// Welcomed: messages flow.
  online,

  /// Lost the connection; waiting for the next attempt, or making it.
  reconnecting,

  /// Not started, stopped by the app, or gave up (see [ChatClient.error]).
  stopped,
}

/// Reconnect delays: 1 s, 2 s, 4 s … up to 30 s, each spread by ±20 % so a
/// room full of phones does not come back in lockstep after a server restart.
class Backoff {
  const Backoff({
    this.initial = const Duration(seconds: 1),
    this.maximum = const Duration(seconds: 30),
    this.jitter = 0.2,
  });

  final Duration initial;
  final Duration maximum;
  final double jitter;

  static final Random _random = Random();

  Duration delay(int attempt) {
    final exponential = initial.inMilliseconds * pow(2, min(attempt, 20));
    final capped = min(exponential.toDouble(), maximum.inMilliseconds.toDouble());
    final spread = 1 + (_random.nextDouble() * 2 - 1) * jitter;
    return Duration(milliseconds: (capped * spread).round());
  }
}

enum PendingState { sending, failed }

/// A message written by this user that the server has not acknowledged yet.
class PendingMessage {
  const PendingMessage({
    required this.cid,
    required this.text,
    required this.createdAt,
    this.to,
    this.replyTo,
    this.state = PendingState.sending,
    this.error,
  });

  final String cid;
  final String text;
  final String? to;

  /// The id of the message this one answers, sent as `reply_to`.
  final int? replyTo;
  final DateTime createdAt;
  final PendingState state;
  final AppError? error;

  PendingMessage withState(PendingState newState, [AppError? newError]) => PendingMessage(
        cid: cid,
        text: text,
        createdAt: createdAt,
        to: to,
        replyTo: replyTo,
        state: newState,
        error: newError,
      );
}

/// What the chat service tells the app.
sealed class ChatEvent {
  const ChatEvent();
}

final class StatusChanged extends ChatEvent {
  const StatusChanged(this.status, this.error);
  final ConnectionStatus status;
  final AppError? error;
}

/// A `welcome` arrived; [resumed] when `hello.since` was sent.
final class SessionStarted extends ChatEvent {
  const SessionStarted(this.welcome, {required this.resumed});
  final Welcome welcome;
  final bool resumed;
}

/// Stored messages and changes: live ones, welcome history, or history
/// pages. Apply [messages], then [changes] in order: that is the same as id
/// order, since a change only touches ids below its own.
final class MessagesAdded extends ChatEvent {
  const MessagesAdded(this.messages, {required this.live, this.changes = const []});
  final List<ChatMessage> messages;
  final bool live;
  final List<MessageChange> changes;
}

/// The room's name, topic or lock changed (also at every welcome).
final class RoomUpdated extends ChatEvent {
  const RoomUpdated(this.room);
  final RoomInfo room;
}

/// The operator muted or unmuted this user; [message] is the sentence.
final class MutedChanged extends ChatEvent {
  const MutedChanged(this.muted, this.message);
  final bool muted;
  final String message;
}

final class OutboxChanged extends ChatEvent {
  const OutboxChanged(this.outbox);
  final List<PendingMessage> outbox;
}

final class UsersChanged extends ChatEvent {
  const UsersChanged(this.users, {this.joined, this.left});
  final List<String> users;
  final String? joined;
  final String? left;
}

final class TypingReceived extends ChatEvent {
  const TypingReceived(this.from, this.to);
  final String from;
  final String? to;
}

final class ErrorReceived extends ChatEvent {
  const ErrorReceived(this.error);
  final ServerError error;
}

/// Random client message ids: unique per nick also across app restarts (the
/// server de-duplicates by cid, so reusing one would swallow a new message).
String randomCid() {
  final random = Random.secure();
  final buffer = StringBuffer();
  for (var i = 0; i < 16; i++) {
    buffer.write(random.nextInt(256).toRadixString(16).padLeft(2, '0'));
  }
  return buffer.toString();
}

Future<void> _defaultSleep(Duration duration) => Future<void>.delayed(duration);

/// How the client tells a live connection from a dead one.
class Liveness {
  const Liveness({
    this.keepAlive = true,
    this.pongTimeout = const Duration(seconds: 5),
    this.handshakeTimeout = const Duration(seconds: 15),
  });

  /// Ping after `welcome.limits.ping_after` of silence (default 30 s) and
  /// drop the connection when no frame answers within [pongTimeout]. Off in
  /// tests that must not see pings.
  final bool keepAlive;

  /// How long a ping may go unanswered (also after the app comes back to
  /// the foreground, when the connection may have died in the background).
  final Duration pongTimeout;

  /// From opening the connection to `welcome`, at most this long.
  final Duration handshakeTimeout;
}

/// Attempts for the very first connection before giving up. On iOS the first
/// connection to a LAN address fails while the system asks the user for
/// "Local Network" access, so the client keeps trying for about half a minute
/// (back-off 1, 2, 4, 8, 16 s) when the failure is a network one.
const int firstContactAttempts = 6;

class ChatClient {
  ChatClient({
    required TransportConnector connector,
    required this.address,
    required String nick,
    this.clientName = defaultClientName,
    this.backoff = const Backoff(),
    this.liveness = const Liveness(),
    Future<void> Function(Duration)? sleep,
    String Function()? newCid,
    DeviceKeys? deviceKeys,
  })  : _connector = connector,
        _deviceKeys = deviceKeys,
        _nick = nick,
        _sleep = sleep ?? _defaultSleep,
        _newCid = newCid ?? randomCid;

  final ServerAddress address;
  final String clientName;
  final Backoff backoff;
  final Liveness liveness;

  final TransportConnector _connector;

  /// Where this server's device key is kept; null: in memory only, for the
  /// life of this object (tests, tools).
  final DeviceKeys? _deviceKeys;
  final Future<void> Function(Duration) _sleep;
  final String Function() _newCid;

  final StreamController<ChatEvent> _events = StreamController<ChatEvent>.broadcast();
  final StreamController<ServerMessage> _serverMessages =
      StreamController<ServerMessage>.broadcast();

  String _nick;
  String? _device;
  int? _uid;
  RoomInfo _room = const RoomInfo();
  bool _muted = false;
  String? _session;
  List<String> _users = const [];
  int _online = 0;
  ServerLimits _limits = const ServerLimits();
  ConnectionStatus _status = ConnectionStatus.stopped;
  AppError? _error;

  final List<PendingMessage> _outbox = [];

  // Resume bookkeeping. `_lastSeenId` is what the next hello sends as
  // `since`; it only moves once no gap is left below the newest message, so a
  // connection lost while paging through a gap asks for that gap again.
  int _lastSeenId = 0;
  int _newestId = 0;
  bool _gapOpen = false;

  // The current connection.
  ChatTransport? _transport;
  Completer<AppError?>? _sessionEnd;
  AppError? _endReason;
  bool _welcomed = false;
  bool _welcomedOnce = false;
  int? _helloSince;
  // History requests by the cid they sent (PROTOCOL.md §3: "cid ... echoed
  // in the reply, and as ref of an error"), oldest first.
  final Map<String, Completer<Result<HistoryPage>>> _historyWaiters = {};
  int _historyCount = 0;
  // Searches by their cid, the same way: `search_results` echoes it, an
  // error names it as `ref`.
  final Map<String, Completer<Result<SearchResults>>> _searchWaiters = {};
  int _searchCount = 0;
  Timer? _livenessTimer;
  Timer? _handshakeTimer;
  DateTime _lastFrameAt = DateTime.now();
  DateTime? _probeSentAt;
  int _probes = 0;

  bool _started = false;
  bool _stopped = false;
  bool _running = false;
  bool _disposed = false;
  Completer<void>? _wake;
  Completer<Result<Welcome>>? _firstAttempt;

  // ---------------------------------------------------------------- state

  Stream<ChatEvent> get events => _events.stream;

  /// Every server message as parsed, for the file transfer service.
  Stream<ServerMessage> get serverMessages => _serverMessages.stream;

  /// The nick as the server accepted it.
  String get nick => _nick;

  /// `welcome.session`, needed by the HTTP file routes (in the
  /// `Authorization` header, never in a URL).
  String? get session => _session;

  /// `welcome.uid`: this identity. Null before the first welcome.
  int? get uid => _uid;

  /// The device key sent in `hello.device`, once known.
  String? get deviceKey => _device;

  /// The room as the operator set it up (`welcome.room`, then `room`).
  RoomInfo get room => _room;

  /// Whether the operator muted this user (may read, not post).
  bool get muted => _muted;

  /// Whether this user sent [message]: "a client's own messages are those
  /// whose uid equals welcome.uid (not those whose from equals its nick: a
  /// nick whose claim lapsed may belong to someone else now)" — §2. Only
  /// messages stored before identities (no uid), or a server that sends no
  /// welcome.uid, leave the nick as the one clue.
  bool isMine(ChatMessage message) {
    final mine = _uid;
    final theirs = message.uid;
    if (mine != null && theirs != null) return mine == theirs;
    return sameNick(message.from, _nick);
  }
  List<String> get users => List.unmodifiable(_users);

  /// Users online, you included (`users` may be cut short in big rooms).
  int get onlineCount => _online;
  ServerLimits get limits => _limits;
  ConnectionStatus get status => _status;
  bool get isOnline => _status == ConnectionStatus.online;

  /// Why the client is not online (last failure), if it knows.
  AppError? get error => _error;
  List<PendingMessage> get outbox => List.unmodifiable(_outbox);
  int get lastSeenId => _lastSeenId;

  /// Whether the current transport carries file chunks (framed TCP).
  bool get supportsPayloads => _transport?.supportsPayloads ?? false;

  // ------------------------------------------------------------- lifecycle

  /// Connects, then keeps the session alive (reconnecting) until [stop].
  ///
  /// Completes with the first `welcome`, or with the reason the first attempt
  /// failed — in that case the client stops: nothing was ever working, so the
  /// person should check the address, token or nick rather than wait.
  Future<Result<Welcome>> start() {
    if (_started) throw StateError('ChatClient.start() called twice');
    _started = true;
    final first = Completer<Result<Welcome>>();
    _firstAttempt = first;
    unawaited(_run());
    return first.future;
  }

  /// Closes the connection and stops reconnecting.
  Future<void> stop() async {
    if (_stopped) return;
    _stopped = true;
    _wakeUp();
    _endSession(null);
    _setStatus(ConnectionStatus.stopped);
  }

  /// Skips the rest of the back-off pause (the person tapped "retry").
  void reconnectNow() => _wakeUp();

  /// Connects again after the client stopped on its own — the person tapped
  /// "Join again" after being removed by the organiser ("you may come
  /// back"). Resumes from the last seen id. False when it is still running,
  /// was never started, or was disposed.
  bool rejoin() {
    if (!_started || !_stopped || _running || _disposed) return false;
    _stopped = false;
    _error = null;
    unawaited(_run());
    return true;
  }

  /// The app came back to the foreground. A connection that died while it
  /// was in the background would otherwise be noticed only by the keep-alive
  /// timer, up to a minute later: ping at once and drop the connection when
  /// no frame answers within [Liveness.pongTimeout]; if offline, retry now.
  void checkConnection() {
    if (_stopped) return;
    if (_welcomed && _transport != null) {
      _probe();
    } else {
      _wakeUp();
    }
  }

  Future<void> dispose() async {
    _disposed = true;
    await stop();
    await _events.close();
    await _serverMessages.close();
  }

  Future<void> _run() async {
    _running = true;
    try {
      await _loop();
    } finally {
      _running = false;
    }
  }

  Future<void> _loop() async {
    var attempt = 0;
    var firstAttempts = 0;
    while (!_stopped) {
      _setStatus(_welcomedOnce ? ConnectionStatus.reconnecting : ConnectionStatus.connecting);
      final reason = await _runSession();
      if (_stopped) break;
      if (!_welcomedOnce) {
        // Nothing ever worked: a refusal by the server (token, nick) goes
        // back to the person at once; a network failure is retried a while.
        firstAttempts++;
        if (firstAttempts < firstContactAttempts && _isNetworkFailure(reason)) {
          _setStatus(ConnectionStatus.connecting, reason);
          await _pause(backoff.delay(attempt++));
          continue;
        }
        _finishFirstAttempt(Err(reason ?? _disconnected));
        _error = reason;
        await stop();
        break;
      }
      if (_welcomed) attempt = 0;
      _error = reason;
      if (reason != null && _givesUp(reason)) {
        await stop();
        break;
      }
      _setStatus(ConnectionStatus.reconnecting);
      await _pause(backoff.delay(attempt++));
    }
    _finishFirstAttempt(Err(_error ?? const AppError('stopped', 'Disconnected.')));
  }

  /// Failures of the network rather than refusals by the server: worth
  /// retrying even before the first welcome.
  static bool _isNetworkFailure(AppError? reason) =>
      reason == null ||
      reason.code == 'unreachable' ||
      reason.code == 'timeout' ||
      reason.code == 'disconnected';

  /// Ends after which reconnecting on its own would be wrong: refusals
  /// that trying again cannot fix (token, version, nick), the organiser's
  /// decisions (`banned`; `kicked`: coming back is the person's choice,
  /// [rejoin]), and `replaced` — another connection of this device took the
  /// nick, and taking it back would start a tug of war. `nick_taken` is
  /// reserved (no longer sent): should an old server send it after a drop,
  /// the old connection times out within 90 s, so trying again is right.
  static bool _givesUp(AppError reason) => const {
        'auth_failed',
        'proto_unsupported',
        'nick_invalid',
        'nick_owned',
        'room_locked',
        'banned',
        ByeReason.kicked,
        ByeReason.replaced,
      }.contains(reason.code);

  Future<void> _pause(Duration delay) async {
    final wake = Completer<void>();
    _wake = wake;
    await Future.any<void>([_sleep(delay), wake.future]);
    _wake = null;
  }

  void _wakeUp() {
    final wake = _wake;
    if (wake != null && !wake.isCompleted) wake.complete();
  }

  void _finishFirstAttempt(Result<Welcome> result) {
    final first = _firstAttempt;
    if (first != null && !first.isCompleted) first.complete(result);
  }

  static const AppError _disconnected = AppError('disconnected', 'The connection was closed.');

  // --------------------------------------------------------------- session

  /// One connection, from connect to close. Returns why it ended.
  Future<AppError?> _runSession() async {
    final device = _device ??= await _loadDeviceKey();
    if (_stopped) return null;
    final ChatTransport transport;
    try {
      transport = await _openTransport();
    } on ConnectFailure catch (failure) {
      final sentence = describeConnectFailure(failure, address.label);
      return AppError(failure.transient ? 'unreachable' : 'bad_address', sentence);
    } on Object {
      return AppError('unreachable', 'Cannot reach ${address.label}.');
    }
    if (_stopped) {
      await transport.close();
      return null;
    }
    final end = Completer<AppError?>();
    _transport = transport;
    _sessionEnd = end;
    _endReason = null;
    _welcomed = false;
    _lastFrameAt = DateTime.now();
    _probeSentAt = null;
    final subscription = transport.frames.listen(
      _onFrame,
      onDone: () => _endSession(_disconnected),
    );
    _handshakeTimer = Timer(liveness.handshakeTimeout, () {
      if (!_welcomed) {
        _endSession(AppError('timeout', 'The server at ${address.label} did not answer.'));
      }
    });
    _helloSince = _lastSeenId > 0 ? _lastSeenId : null;
    // "A client that reconnects with the same nick and its device key takes
    // the nick over at once" — PROTOCOL.md §4. No session: it is ignored.
    await _send(ClientMessages.hello(
      nick: _nick,
      device: device,
      client: clientName,
      token: address.token,
      since: _helloSince,
    ));
    final reason = await end.future;
    _handshakeTimer?.cancel();
    _livenessTimer?.cancel();
    await subscription.cancel();
    _transport = null;
    _failHistoryWaiters(reason ?? _disconnected);
    return reason;
  }

  /// This server's device key: stored, else created and stored now. When
  /// the storage fails, a key kept in memory still lets this session take
  /// its nick back after a drop.
  Future<String> _loadDeviceKey() async {
    final keys = _deviceKeys;
    if (keys == null) return newDeviceKey();
    try {
      return await keys.keyFor(address);
    } on Object {
      return newDeviceKey();
    }
  }

  /// Opens a transport within the handshake timeout; one that opens too late
  /// is closed when it arrives.
  Future<ChatTransport> _openTransport() {
    final opening = _connector(address);
    return opening.timeout(liveness.handshakeTimeout, onTimeout: () => _openTimedOut(opening));
  }

  static Never _openTimedOut(Future<ChatTransport> opening) {
    unawaited(opening.then((opened) => opened.close(), onError: (Object _) {}));
    throw const ConnectFailure(ConnectFailureKind.timedOut, 'connect timed out');
  }

  /// Ends the current connection; the first reason given wins.
  void _endSession(AppError? reason) {
    final end = _sessionEnd;
    if (end == null || end.isCompleted) return;
    _endReason ??= reason;
    end.complete(_endReason);
    if (_status == ConnectionStatus.online && !_stopped) {
      _setStatus(ConnectionStatus.reconnecting, _endReason);
    }
    unawaited(_transport?.close());
  }

  // ------------------------------------------------------------ liveness
  //
  // One timer. After `limits.ping_after` of silence the client pings; any
  // frame counts as the answer. No frame within pongTimeout of the ping: the
  // connection is dead (a phone that changed network, a server that vanished)
  // and the client reconnects, well before the server's idle_timeout.

  /// Silence after which the client pings: the server's ping_after, but
  /// always well inside its idle_timeout (after which it would close a
  /// silent connection), whatever the two are set to.
  Duration get _pingEvery {
    final pingAfter = _limits.pingAfter;
    final idleTimeout = _limits.idleTimeout;
    return pingAfter < idleTimeout ~/ 2 ? pingAfter : idleTimeout ~/ 2;
  }

  /// Sends a ping now and expects a frame within [Liveness.pongTimeout].
  void _probe() {
    if (_transport == null || _probeSentAt != null) return;
    _probeSentAt = DateTime.now();
    unawaited(_send(ClientMessages.ping(++_probes)));
    _armLiveness(liveness.pongTimeout);
  }

  void _armLiveness(Duration delay) {
    _livenessTimer?.cancel();
    _livenessTimer = Timer(delay, _checkLiveness);
  }

  void _checkLiveness() {
    if (_transport == null || !_welcomed) return;
    final now = DateTime.now();
    final probe = _probeSentAt;
    if (probe != null) {
      if (_lastFrameAt.isAfter(probe)) {
        _probeSentAt = null; // answered
      } else {
        final waited = now.difference(probe);
        if (waited >= liveness.pongTimeout) {
          _endSession(const AppError('timeout', 'The server stopped answering.'));
        } else {
          _armLiveness(liveness.pongTimeout - waited);
        }
        return;
      }
    }
    if (!liveness.keepAlive) return;
    final silence = now.difference(_lastFrameAt);
    final pingEvery = _pingEvery;
    if (silence >= pingEvery) {
      _probe();
    } else {
      _armLiveness(pingEvery - silence);
    }
  }

  /// Sends on the current connection; returns the failure, if any.
  Future<AppError?> _send(Map<String, Object?> header, [Uint8List? payload]) async {
    final transport = _transport;
    if (transport == null) return _disconnected;
    try {
      await transport.send(header, payload);
      return null;
    } on TransportClosed catch (error) {
      return AppError('disconnected', error.reason);
    }
  }

  /// Sends a frame once welcomed (used by the file transfer service).
  Future<Result<void>> sendFrame(Map<String, Object?> header, [Uint8List? payload]) async {
    if (!isOnline) return const Err(AppError('offline', 'Not connected.'));
    final failure = await _send(header, payload);
    return failure == null ? const Ok<void>(null) : Err<void>(failure);
  }

  // ------------------------------------------------------ incoming frames

  void _onFrame(Frame frame) {
    _lastFrameAt = DateTime.now();
    if (_probeSentAt != null) {
      _probeSentAt = null; // any frame proves the connection is alive
      if (_welcomed && liveness.keepAlive) {
        _armLiveness(_pingEvery);
      } else {
        _livenessTimer?.cancel();
      }
    }
    final incoming = ServerMessage.fromFrame(frame);
    switch (incoming) {
      case final Welcome welcome:
        _onWelcome(welcome);
      case final MessageReceived received:
        _absorb([received.message], live: true);
      case final ChangeReceived received:
        _absorb([received.change], live: true);
      case final RoomChanged changed:
        _room = changed.room;
        _emit(RoomUpdated(changed.room));
      case final NoticeReceived notice:
        _onNotice(notice);
      case final HistoryPage page:
        _onHistory(page);
      case final SearchResults results:
        // Not absorbed: results are old messages picked by text, not a
        // range of the id sequence, and must not move the resume point.
        _searchWaiters.remove(results.cid)?.complete(Ok(results));
      case final UserJoined joined:
        // Sent to everyone, the joiner included: count each nick once.
        if (!_users.any((u) => sameNick(u, joined.nick))) _online++;
        _users = [..._users.where((u) => !sameNick(u, joined.nick)), joined.nick];
        _emit(UsersChanged(users, joined: joined.nick));
      case final UserLeft left:
        if (_users.any((u) => sameNick(u, left.nick)) && _online > 0) _online--;
        _users = _users.where((u) => !sameNick(u, left.nick)).toList();
        _emit(UsersChanged(users, left: left.nick));
      case final TypingNotice typing:
        _emit(TypingReceived(typing.from, typing.to));
      case final PingReceived ping:
        unawaited(_send(ClientMessages.pong(ping.t)));
      case final ServerError error:
        _onError(error);
      case final ByeReceived bye:
        _endReason ??= byeReason(bye); // the server closes the connection next
      case final MalformedMessage malformed:
        // A search answer that does not parse still answers its search.
        final cid = malformed.header['cid'];
        if (malformed.header['type'] == ServerType.searchResults && cid is String) {
          _searchWaiters.remove(cid)?.complete(
              Err(AppError(ErrorCode.badJson.wire, 'The server sent unreadable results.')));
        }
      case PongReceived():
      case UploadReady():
      case DownloadStart():
      case FileChunk():
      case DownloadEnd():
      case UnknownMessage():
        break; // file transfers listen to serverMessages; others are ignored
    }
    if (!_serverMessages.isClosed) _serverMessages.add(incoming);
  }

  void _onWelcome(Welcome welcome) {
    final since = _helloSince;
    _welcomed = true;
    _welcomedOnce = true;
    _nick = welcome.nick;
    _uid = welcome.uid;
    _session = welcome.session;
    _room = welcome.room;
    _muted = welcome.muted;
    _keepDevice(welcome.device);
    _users = List.of(welcome.users);
    _online = welcome.online;
    _limits = welcome.limits;
    _error = null;
    _handshakeTimer?.cancel();
    if (liveness.keepAlive) _armLiveness(_pingEvery);
    _emit(SessionStarted(welcome, resumed: since != null));
    _emit(UsersChanged(users));
    _emit(RoomUpdated(welcome.room));
    // "Resuming: welcome.history holds the messages with id > since, at most
    // the newest 200; has_more is true when more than that were missed. The
    // client then pages backward with history {before: <oldest id it got>,
    // after: <since>} until has_more is false." — PROTOCOL.md §4.
    _gapOpen = since != null && welcome.hasMore && welcome.history.isNotEmpty;
    _absorb(welcome.history, live: false);
    _setStatus(ConnectionStatus.online);
    _finishFirstAttempt(Ok(welcome));
    // Unacknowledged messages go after the history, which may already hold
    // (and so acknowledge) some of them.
    _flushOutbox();
    if (_gapOpen && since != null) {
      unawaited(_fillGap(since, welcome.history.first.id));
    }
  }

  /// "A client without one omits the field: welcome.device then carries a
  /// new key, which the client stores and sends from then on" — §2.
  void _keepDevice(String? device) {
    if (device == null || device == _device || !isDeviceKey(device)) return;
    _device = device;
    final keys = _deviceKeys;
    if (keys != null) unawaited(keys.remember(address, device).catchError((Object _) {}));
  }

  void _onNotice(NoticeReceived notice) {
    final muted = switch (notice.code) {
      NoticeCode.muted => true,
      NoticeCode.unmuted => false,
      _ => null, // a newer notice: nothing to change
    };
    if (muted == null) return;
    _muted = muted;
    _emit(MutedChanged(muted, notice.message));
  }

  Future<void> _fillGap(int since, int oldestId) async {
    var before = oldestId;
    while (true) {
      final result = await requestHistory(before: before, after: since, limit: maxHistoryLimit);
      switch (result) {
        case Err():
          return; // connection lost: the next hello asks from `since` again
        case Ok(:final value):
          if (!value.hasMore || value.messages.isEmpty) {
            _gapOpen = false;
            _lastSeenId = _newestId;
            return;
          }
          before = value.messages.first.id;
      }
    }
  }

  void _onHistory(HistoryPage page) {
    _absorb(page.messages, live: false);
    final cid = page.cid;
    // A reply without cid comes from a server that does not echo it: it
    // answers the oldest request, the only order such a server can keep.
    final key = cid ?? (_historyWaiters.isEmpty ? null : _historyWaiters.keys.first);
    _historyWaiters.remove(key)?.complete(Ok(page));
  }

  /// Takes in stored messages and changes: advances the resume point (a
  /// change's id counts, so a resume does not ask for it again),
  /// acknowledges own messages by cid, tells the app.
  void _absorb(List<HistoryItem> items, {required bool live}) {
    if (items.isEmpty) return;
    for (final item in items) {
      if (item.id > _newestId) _newestId = item.id;
    }
    if (!_gapOpen) _lastSeenId = _newestId;
    final messages = [for (final item in items) if (item is ChatMessage) item];
    final changes = [for (final item in items) if (item is MessageChange) item];
    final acknowledged = {
      for (final message in messages)
        if (isMine(message)) message.cid,
    };
    final before = _outbox.length;
    _outbox.removeWhere((pending) => acknowledged.contains(pending.cid));
    _emit(MessagesAdded(messages, live: live, changes: changes));
    if (_outbox.length != before) _emitOutbox();
  }

  void _onError(ServerError error) {
    _emit(ErrorReceived(error));
    final ref = error.ref;
    final index = ref == null ? -1 : _outbox.indexWhere((p) => p.cid == ref);
    if (index >= 0) {
      _outbox[index] = _outbox[index].withState(
        PendingState.failed,
        AppError(error.wireCode, error.message),
      );
      _emitOutbox();
    } else if (ref != null && _historyWaiters.containsKey(ref)) {
      // Only an error naming the request's cid answers it: a rate_limited
      // error for `typing` (which has no cid) must not end a history request.
      _historyWaiters.remove(ref)!.complete(Err(AppError(error.wireCode, error.message)));
    } else if (ref != null && _searchWaiters.containsKey(ref)) {
      _searchWaiters.remove(ref)!.complete(Err(AppError(error.wireCode, error.message)));
    }
    final reason = AppError(error.wireCode, error.message);
    if (error.fatal) {
      _endReason ??= reason; // the server closes the connection next
    } else if (!_welcomed) {
      _endSession(reason); // hello refused (nick taken or invalid)
    }
  }

  void _failHistoryWaiters(AppError reason) {
    final waiters = List.of(_historyWaiters.values);
    _historyWaiters.clear();
    for (final waiter in waiters) {
      waiter.complete(Err(reason));
    }
    // A search asked on a lost connection gets no answer on the next one.
    final searches = List.of(_searchWaiters.values);
    _searchWaiters.clear();
    for (final waiter in searches) {
      waiter.complete(Err(reason));
    }
  }

  // -------------------------------------------------------------- actions

  /// Queues a message and sends it now if online, else after reconnecting.
  /// The server's copy with the same cid acknowledges it. [replyTo]: the id
  /// of the message it answers (the server sends it back with a quote).
  Result<PendingMessage> sendText(String text, {String? to, int? replyTo}) {
    if (text.isEmpty) return const Err(AppError('empty', 'Nothing to send.'));
    if (utf8.encode(text).length > _limits.text) {
      return Err(AppError(ErrorCode.textTooLong.wire,
          'Messages are limited to ${_limits.text} bytes.'));
    }
    final pending = PendingMessage(
        cid: _newCid(), text: text, to: to, replyTo: replyTo, createdAt: DateTime.now());
    _outbox.add(pending);
    _emitOutbox();
    if (isOnline) _sendPending(pending);
    return Ok(pending);
  }

  /// A fresh client id, for messages built elsewhere (file uploads).
  String newCid() => _newCid();

  /// Sends a failed message again, with its original cid.
  void retry(String cid) {
    final index = _outbox.indexWhere((p) => p.cid == cid);
    if (index < 0) return;
    final pending = _outbox[index].withState(PendingState.sending);
    _outbox[index] = pending;
    _emitOutbox();
    if (isOnline) _sendPending(pending);
  }

  /// Drops a message that was not acknowledged.
  void discard(String cid) {
    _outbox.removeWhere((p) => p.cid == cid);
    _emitOutbox();
  }

  /// Asks for stored messages; the messages also arrive as [MessagesAdded].
  Future<Result<HistoryPage>> requestHistory({
    int? before,
    int? after,
    int limit = historyPageSize,
  }) async {
    if (_transport == null || !_welcomed) {
      return const Err(AppError('offline', 'Not connected.'));
    }
    final waiter = Completer<Result<HistoryPage>>();
    final cid = 'h-${++_historyCount}';
    _historyWaiters[cid] = waiter;
    final failure = await _send(
        ClientMessages.history(before: before, after: after, limit: limit, cid: cid));
    if (failure != null && !waiter.isCompleted) {
      _historyWaiters.remove(cid);
      waiter.complete(Err(failure));
    }
    return waiter.future;
  }

  /// Removes one of this user's messages for everyone (`delete`). The
  /// answer is a `change`, or an error whose `ref` is the returned cid
  /// (`forbidden`, `unknown_message`). Not queued: offline, it fails now.
  Result<String> deleteMessage(int id) {
    if (!isOnline) return const Err(AppError('offline', 'Not connected: try again once back online.'));
    final cid = _newCid();
    unawaited(_send(ClientMessages.delete(id: id, cid: cid)));
    return Ok(cid);
  }

  /// Replaces the text of one of this user's messages (`edit`), answered
  /// by a `change` or an error (`edit_expired`, `muted`, `forbidden`...).
  Result<String> editMessage(int id, String text) {
    if (text.trim().isEmpty) return const Err(AppError('empty', 'A message cannot be empty.'));
    if (utf8.encode(text).length > _limits.text) {
      return Err(AppError(ErrorCode.textTooLong.wire,
          'Messages are limited to ${_limits.text} bytes.'));
    }
    if (!isOnline) return const Err(AppError('offline', 'Not connected: try again once back online.'));
    final cid = _newCid();
    unawaited(_send(ClientMessages.edit(id: id, text: text, cid: cid)));
    return Ok(cid);
  }

  /// Puts this user's reaction [emoji] on message [id] (`""` removes it;
  /// one per user per message, a new one replaces the old). Answered by a
  /// `change` with `change: "react"`, or an error whose `ref` is the
  /// returned cid. Not queued: a reaction made offline would land late.
  Result<String> react(int id, String emoji) {
    if (!isOnline) return const Err(AppError('offline', 'Not connected: try again once back online.'));
    final cid = _newCid();
    unawaited(_send(ClientMessages.react(id: id, emoji: emoji, cid: cid)));
    return Ok(cid);
  }

  /// Searches the messages this user can see (PROTOCOL.md §12): completes
  /// with the `search_results` whose `cid` is this request's, or with the
  /// error that names it (`bad_request`, `unknown_user`, `rate_limited`).
  /// [withNick]: only the direct conversation with that nick; [before]:
  /// the next page ([SearchResults.nextBefore]).
  Future<Result<SearchResults>> search(
    String text, {
    String? from,
    String? withNick,
    int? before,
    int limit = searchPageSize,
  }) async {
    final query = text.trim();
    if (query.isEmpty) return const Err(AppError('empty', 'Type something to search for.'));
    if (query.runes.length > maxSearchTextLength) {
      return const Err(AppError(
          'bad_request', 'A search is limited to $maxSearchTextLength characters.'));
    }
    if (_transport == null || !_welcomed) {
      return const Err(AppError('offline', 'Not connected.'));
    }
    final waiter = Completer<Result<SearchResults>>();
    final cid = 's-${++_searchCount}';
    _searchWaiters[cid] = waiter;
    final failure = await _send(ClientMessages.search(
      text: query,
      cid: cid,
      from: from,
      withNick: withNick,
      before: before,
      limit: min(max(limit, 1), maxSearchLimit),
    ));
    if (failure != null && !waiter.isCompleted) {
      _searchWaiters.remove(cid);
      waiter.complete(Err(failure));
    }
    return waiter.future;
  }

  /// Tells others this user is typing (callers throttle it).
  void sendTyping({String? to}) {
    if (isOnline) unawaited(_send(ClientMessages.typing(to: to)));
  }

  void _flushOutbox() {
    for (final pending in _outbox) {
      if (pending.state == PendingState.sending) _sendPending(pending);
    }
  }

  void _sendPending(PendingMessage pending) {
    unawaited(_send(ClientMessages.msg(
        text: pending.text, cid: pending.cid, to: pending.to, replyTo: pending.replyTo)));
  }

  void _emit(ChatEvent event) {
    if (!_events.isClosed) _events.add(event);
  }

  void _emitOutbox() => _emit(OutboxChanged(outbox));

  void _setStatus(ConnectionStatus status, [AppError? error]) {
    if (error != null) _error = error;
    if (status == _status) return;
    _status = status;
    _emit(StatusChanged(status, _error));
  }
}

/// Why the server said `bye`, as the reason the session ended.
AppError byeReason(ByeReceived bye) {
  final said = bye.message.trim();
  return switch (bye.reason) {
    ByeReason.replaced => const AppError(ByeReason.replaced,
        'This nick was opened again from this device on another connection, so this one '
        'was closed. Connect again to use it here.'),
    ByeReason.kicked =>
      AppError(ByeReason.kicked, said.isNotEmpty ? said : 'The organiser removed you from the chat.'),
    ByeReason.banned =>
      AppError(ByeReason.banned, said.isNotEmpty ? said : 'The organiser banned this device.'),
    _ => AppError(ErrorCode.shuttingDown.wire,
        said.isNotEmpty ? said : 'The server is stopping; reconnecting when it is back.'),
  };
}
