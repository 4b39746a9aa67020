// State of a chat session for the screens: messages by conversation, the
// outbox, users, typing, unread counts and file transfers. It listens to the
// services and turns their events into something a widget can draw.

import 'dart:async';
import 'dart:collection';

import 'package:flutter/foundation.dart';

import '../../models/chat_message.dart';
import '../../models/result.dart';
import '../../models/shared_file.dart';
import '../../services/chat_client.dart';
import '../../services/file_io.dart';
import '../../services/file_transfers.dart';
import '../../services/messages.dart';

/// How long "bob is typing…" stays without a new `typing` message.
const Duration typingShownFor = Duration(seconds: 5);

/// At most one `typing` message per this interval while typing.
const Duration typingSendInterval = Duration(seconds: 3);

/// Messages of one sender closer than this are drawn as one group.
const Duration groupWindow = Duration(minutes: 5);

/// One row of the message list: a stored message or one still in the outbox.
class ChatEntry {
  const ChatEntry({
    required this.from,
    required this.text,
    required this.time,
    required this.mine,
    this.message,
    this.pending,
    this.firstOfGroup = true,
    this.lastOfGroup = true,
    this.unreadMarker = false,
    this.dayLabel,
  });

  final String from;
  final String text;
  final DateTime time;
  final bool mine;
  final ChatMessage? message;
  final PendingMessage? pending;

  /// Draw the sender's name above this entry.
  final bool firstOfGroup;

  /// Draw the time below this entry.
  final bool lastOfGroup;

  /// Draw a "new messages" line above this entry.
  final bool unreadMarker;

  /// Draw a day separator above this entry ("Today", "2026-11-24").
  final String? dayLabel;

  SharedFile? get file => message?.file;
  String get key => message != null ? 'm${message!.id}' : 'p${pending!.cid}';
}

class _Typing {
  _Typing(this.nick, this.to, this.timer);
  final String nick;
  final String? to;
  final Timer timer;
}

class ChatViewModel extends ChangeNotifier {
  ChatViewModel({required ChatClient client, required FileTransfers transfers})
      : _client = client,
        _transfers = transfers {
    _subscriptions
      ..add(client.events.listen(_onChatEvent))
      ..add(transfers.updates.listen(_onTransfer));
  }

  final ChatClient _client;
  final FileTransfers _transfers;
  final List<StreamSubscription<Object>> _subscriptions = [];
  final StreamController<String> _notices = StreamController<String>.broadcast();

  final SplayTreeMap<int, ChatMessage> _messages = SplayTreeMap<int, ChatMessage>();
  List<PendingMessage> _outbox = const [];
  List<String> _users = const [];
  final Map<String, _Typing> _typing = {};
  final Map<String, TransferStatus> _transferStatus = {};
  final Map<String, String> _localPaths = {};

  /// Messages up to this id were seen before this session: not unread.
  int _readBaseline = 0;
  bool _baselineSet = false;
  final Map<String?, int> _lastRead = {};

  String? _peer; // null: the public room
  int? _unreadMarkerId;
  bool _visible = true;
  bool _hasOlder = false;
  bool _loadingOlder = false;
  DateTime _lastTypingSent = DateTime.fromMillisecondsSinceEpoch(0);
  List<ChatEntry>? _entries;
  bool _disposed = false;

  // ------------------------------------------------------------ lifecycle

  /// Connects; completes with the welcome or the reason it failed.
  Future<Result<Welcome>> start() => _client.start();

  @override
  void dispose() {
    _disposed = true;
    for (final subscription in _subscriptions) {
      subscription.cancel();
    }
    for (final typing in _typing.values) {
      typing.timer.cancel();
    }
    _notices.close();
    _transfers.dispose();
    _client.dispose();
    super.dispose();
  }

  /// The app went to the background or came back: unread counting and an
  /// immediate reconnect attempt depend on it.
  void setVisible(bool visible) {
    if (visible == _visible) return;
    _visible = visible;
    if (visible) {
      _client.reconnectNow();
      _markConversationRead(showMarker: true);
    }
    _changed();
  }

  /// Tries to reconnect now instead of waiting for the back-off delay.
  void retryNow() => _client.reconnectNow();

  // ---------------------------------------------------------------- state

  /// Errors worth a snack bar ("bob is not online", "slow down").
  Stream<String> get notices => _notices.stream;

  String get me => _client.nick;
  String get serverLabel => _client.address.label;
  ConnectionStatus get status => _client.status;
  String? get statusError => _client.error?.message;

  /// Online users other than me, sorted.
  List<String> get otherUsers =>
      _users.where((u) => !sameNick(u, me)).toList()..sort((a, b) => nickKey(a).compareTo(nickKey(b)));

  /// The person of the direct conversation shown, or null for everyone.
  String? get peer => _peer;
  bool get peerOnline => _peer == null || _users.any((u) => sameNick(u, _peer!));
  bool get hasOlder => _hasOlder;
  bool get loadingOlder => _loadingOlder;
  bool get canDownload => _transfers.canDownload;

  /// Rows of the shown conversation, newest first (for a reversed list).
  List<ChatEntry> get entries => _entries ??= _buildEntries();

  /// Unread messages in a conversation (null: the public room).
  int unreadIn(String? peer) {
    final key = peer == null ? null : nickKey(peer);
    final lastRead = _lastRead[key] ?? _readBaseline;
    var count = 0;
    for (final message in _messages.values) {
      if (message.id > lastRead && !sameNick(message.from, me) && message.conversationFor(me) == key) {
        count++;
      }
    }
    return count;
  }

  /// Unread messages outside the shown conversation (badge on the menu).
  int get unreadElsewhere {
    var total = _peer == null ? 0 : unreadIn(null);
    for (final user in _directPeers()) {
      if (_peer == null || !sameNick(user, _peer!)) total += unreadIn(user);
    }
    return total;
  }

  /// Online users plus anyone with a direct conversation, for the drawer.
  List<String> get drawerPeers {
    final peers = [...otherUsers];
    for (final peer in _directPeers()) {
      if (!peers.any((p) => sameNick(p, peer))) peers.add(peer);
    }
    return peers;
  }

  /// "bob is typing…" for the shown conversation, or null.
  String? get typingText {
    final names = [
      for (final typing in _typing.values)
        if (_typingConcernsShown(typing)) typing.nick,
    ];
    if (names.isEmpty) return null;
    if (names.length == 1) return '${names.single} is typing…';
    if (names.length == 2) return '${names[0]} and ${names[1]} are typing…';
    return 'Several people are typing…';
  }

  /// Uploads still going, shown above the composer.
  List<TransferStatus> get activeUploads => [
        for (final status in _transferStatus.values)
          if (status.direction == TransferDirection.upload &&
              (status.state.isActive || status.state == TransferState.failed))
            status,
      ];

  TransferStatus? transferOf(String key) => _transferStatus[key];

  /// Local path of a downloaded file (for opening and thumbnails).
  String? localPathOf(SharedFile file) => _localPaths[file.id];

  /// Browser URL of a file (web build only); [inline] for thumbnails.
  Uri? browserUrlOf(SharedFile file, {bool inline = false}) =>
      _transfers.browserUrl(file, inline: inline);

  /// Users online, me included.
  int get onlineCount => _client.onlineCount;

  // -------------------------------------------------------------- actions

  /// Shows the public room (null) or the direct conversation with [peer].
  void openConversation(String? peer) {
    _peer = peer;
    _markConversationRead(showMarker: true);
    _changed();
  }

  /// Sends [text] to the shown conversation; queued while offline.
  Result<void> send(String text) {
    if (text.trim().isEmpty) return const Err(AppError('empty', 'Nothing to send.'));
    final result = _client.sendText(text, to: _peer);
    switch (result) {
      case Ok():
        _lastTypingSent = DateTime.fromMillisecondsSinceEpoch(0);
        return const Ok<void>(null);
      case Err(:final error):
        _notice(error.message);
        return Err<void>(error);
    }
  }

  /// Called as the composer text changes: tells others, at most every 3 s.
  void composing(String text) {
    if (text.isEmpty) return;
    final now = DateTime.now();
    if (now.difference(_lastTypingSent) < typingSendInterval) return;
    _lastTypingSent = now;
    _client.sendTyping(to: _peer);
  }

  void retry(String cid) => _client.retry(cid);

  void discard(String cid) => _client.discard(cid);

  /// Scrolling reached the oldest message: ask for the page before it.
  Future<void> loadOlder() async {
    if (_loadingOlder || !_hasOlder || _messages.isEmpty) return;
    _loadingOlder = true;
    _changed();
    final result = await _client.requestHistory(before: _messages.firstKey());
    _loadingOlder = false;
    switch (result) {
      case Ok(:final value):
        _hasOlder = value.hasMore;
      case Err():
        break; // offline: the next scroll tries again
    }
    _changed();
  }

  /// Shares a file in the shown conversation.
  void sendFile(UploadSource source, {String? caption}) {
    _transfers.upload(source, to: _peer, caption: caption);
  }

  void download(SharedFile file) => _transfers.download(file);

  void cancelTransfer(String key) => _transfers.cancel(key);

  /// Forgets a finished or failed upload row.
  void dismissTransfer(String key) {
    _transferStatus.remove(key);
    _changed();
  }

  // --------------------------------------------------------------- events

  void _onChatEvent(ChatEvent event) {
    switch (event) {
      case SessionStarted(:final welcome, :final resumed):
        if (!resumed) _hasOlder = welcome.hasMore;
        if (!_baselineSet) {
          // What was said before this session started is not unread.
          _baselineSet = true;
          _readBaseline = welcome.lastId;
        }
        _users = welcome.users;
      case MessagesAdded(:final messages, :final live):
        _addMessages(messages, live: live);
      case OutboxChanged(:final outbox):
        _outbox = outbox;
      case UsersChanged(:final users):
        _users = users;
      case TypingReceived(:final from, :final to):
        _onTyping(from, to);
      case ErrorReceived(:final error):
        if (!error.fatal && error.code.wire != 'nick_taken') _notice(error.message);
      case StatusChanged():
        break; // read through [status]
    }
    _changed();
  }

  void _addMessages(List<ChatMessage> messages, {required bool live}) {
    for (final message in messages) {
      _messages[message.id] = message;
      final typing = _typing.remove(nickKey(message.from));
      typing?.timer.cancel();
      final file = message.file;
      if (file != null && !_localPaths.containsKey(file.id)) unawaited(_findLocalCopy(file));
    }
    if (_visible) _markConversationRead(showMarker: false);
  }

  Future<void> _findLocalCopy(SharedFile file) async {
    final path = await _transfers.localPath(file);
    if (path != null && !_disposed) {
      _localPaths[file.id] = path;
      _changed();
    }
  }

  void _onTyping(String from, String? to) {
    if (sameNick(from, me)) return;
    final key = nickKey(from);
    _typing[key]?.timer.cancel();
    _typing[key] = _Typing(from, to, Timer(typingShownFor, () {
      _typing.remove(key);
      _changed();
    }));
  }

  bool _typingConcernsShown(_Typing typing) {
    final peer = _peer;
    if (peer == null) return typing.to == null;
    return typing.to != null && sameNick(typing.nick, peer);
  }

  void _onTransfer(TransferStatus status) {
    _transferStatus[status.key] = status;
    final path = status.path;
    if (status.direction == TransferDirection.download && path != null) {
      _localPaths[status.key] = path;
    }
    if (status.state == TransferState.failed && status.error != null) {
      _notice('${status.name}: ${status.error!.message}');
    }
    if (status.direction == TransferDirection.upload && status.state == TransferState.done) {
      _transferStatus.remove(status.key); // the file message shows it now
    }
    _changed();
  }

  // -------------------------------------------------------------- helpers

  String? get _peerKey => _peer == null ? null : nickKey(_peer!);

  Iterable<String> _directPeers() {
    final peers = <String, String>{};
    for (final message in _messages.values) {
      final to = message.to;
      if (to == null) continue;
      final other = sameNick(message.from, me) ? to : message.from;
      peers[nickKey(other)] = other;
    }
    return peers.values;
  }

  /// Marks the shown conversation read; [showMarker] places the "new
  /// messages" line above the first message that was unread.
  void _markConversationRead({required bool showMarker}) {
    final key = _peerKey;
    final lastRead = _lastRead[key] ?? _readBaseline;
    int? firstUnread;
    var newest = lastRead;
    for (final message in _messages.values) {
      if (message.conversationFor(me) != key) continue;
      if (message.id > lastRead && !sameNick(message.from, me)) firstUnread ??= message.id;
      if (message.id > newest) newest = message.id;
    }
    if (showMarker) _unreadMarkerId = firstUnread;
    _lastRead[key] = newest;
  }

  List<ChatEntry> _buildEntries() {
    final key = _peerKey;
    final rows = <ChatEntry>[
      for (final message in _messages.values)
        if (message.conversationFor(me) == key)
          ChatEntry(
            from: message.from,
            text: message.text,
            time: message.ts.toLocal(),
            mine: sameNick(message.from, me),
            message: message,
          ),
      for (final pending in _outbox)
        if ((pending.to == null ? null : nickKey(pending.to!)) == key)
          ChatEntry(
            from: me,
            text: pending.text,
            time: pending.createdAt,
            mine: true,
            pending: pending,
          ),
    ];
    final grouped = <ChatEntry>[];
    for (var i = 0; i < rows.length; i++) {
      final row = rows[i];
      final previous = i > 0 ? rows[i - 1] : null;
      final next = i + 1 < rows.length ? rows[i + 1] : null;
      final marker = _unreadMarkerId != null && row.message?.id == _unreadMarkerId;
      final nextMarker = _unreadMarkerId != null && next?.message?.id == _unreadMarkerId;
      final newDay = previous == null || !_sameDay(previous.time, row.time);
      grouped.add(ChatEntry(
        from: row.from,
        text: row.text,
        time: row.time,
        mine: row.mine,
        message: row.message,
        pending: row.pending,
        firstOfGroup: previous == null || marker || newDay || !_sameGroup(previous, row),
        lastOfGroup: next == null || nextMarker || !_sameDay(row.time, next.time) || !_sameGroup(row, next),
        unreadMarker: marker,
        dayLabel: newDay ? dayLabel(row.time) : null,
      ));
    }
    return grouped.reversed.toList();
  }

  static bool _sameGroup(ChatEntry a, ChatEntry b) =>
      sameNick(a.from, b.from) && b.time.difference(a.time).abs() <= groupWindow;

  static bool _sameDay(DateTime a, DateTime b) =>
      a.year == b.year && a.month == b.month && a.day == b.day;

  void _notice(String text) {
    if (!_notices.isClosed) _notices.add(text);
  }

  void _changed() {
    if (_disposed) return;
    _entries = null;
    notifyListeners();
  }
}

/// "14:05" in local time.
String clockTime(DateTime time) =>
    '${time.hour.toString().padLeft(2, '0')}:${time.minute.toString().padLeft(2, '0')}';

/// "Today", "Yesterday" or "2026-11-24".
String dayLabel(DateTime time, {DateTime? now}) {
  final today = now ?? DateTime.now();
  final day = DateTime(time.year, time.month, time.day);
  final difference = DateTime(today.year, today.month, today.day).difference(day).inDays;
  if (difference == 0) return 'Today';
  if (difference == 1) return 'Yesterday';
  return '${time.year}-${time.month.toString().padLeft(2, '0')}-${time.day.toString().padLeft(2, '0')}';
}
