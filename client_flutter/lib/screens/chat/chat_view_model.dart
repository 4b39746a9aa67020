// State of a chat session for the screens: messages by conversation, the
// outbox, users, typing, unread counts and file transfers; the reply being
// written, reactions, mentions of me and the search (issue 20). It listens to
// the services and turns their events into something a widget can draw.

import 'dart:async';
import 'dart:collection';
import 'dart:typed_data';

import 'package:flutter/foundation.dart';

import '../../models/chat_message.dart';
import '../../models/result.dart';
import '../../models/room.dart';
import '../../models/shared_file.dart';
import '../../services/chat_client.dart';
import '../../services/device.dart';
import '../../services/file_io.dart';
import '../../services/file_transfers.dart';
import '../../services/messages.dart';
import '../../services/platform.dart';

/// How long "bob is typing…" stays without a new `typing` message.
const Duration typingShownFor = Duration(seconds: 5);

/// At most one `typing` message per this interval while typing.
const Duration typingSendInterval = Duration(seconds: 3);

/// Messages of one sender closer than this are drawn as one group.
const Duration groupWindow = Duration(minutes: 5);

/// Images up to this size are fetched as they arrive, to show them inline.
const int autoFetchImageBytes = 4 * 1024 * 1024;

/// At most this many images are fetched on their own from one batch of
/// messages (the welcome history may hold a hundred).
const int autoFetchImagesPerBatch = 12;

/// In the composer while muted, when the server gave no sentence.
const String defaultMutedText = 'The organiser muted you: you can read, but not post or share files.';

/// Shown where the history was when the operator cleared it.
const String clearedNote = 'The organiser cleared the history.';

/// What shows in place of a removed message (`msg.deleted`).
String removedText(String by) =>
    by == 'operator' ? 'Removed by the organiser' : 'Message removed';

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
    this.quote,
    this.mentionsMe = false,
    this.highlighted = false,
    this.gapBefore = false,
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

  /// The message this one answers, drawn inside the bubble.
  final ReplyQuote? quote;

  /// Someone else's message that mentions me: highlighted.
  final bool mentionsMe;

  /// The message a search result or a quote led to: briefly marked.
  final bool highlighted;

  /// Messages between this one and the previous row are not loaded (a
  /// result far back was opened): a "load the messages in between" row.
  final bool gapBefore;

  /// Emoji → uids, as the server last sent them.
  Map<String, List<int>> get reactions => message?.reactions ?? const {};

  SharedFile? get file => message?.file;
  String get key => message != null ? 'm${message!.id}' : 'p${pending!.cid}';

  /// Removed (by its sender or the organiser): a tombstone, no actions.
  bool get deleted => message?.isDeleted ?? false;

  /// "Message removed" / "Removed by the organiser", for a removed one.
  String? get removedLabel {
    final by = message?.deleted;
    return by == null ? null : removedText(by);
  }

  /// The text was edited after sending: marked "edited".
  bool get edited => message?.isEdited ?? false;
}

/// What the search screen shows: the query, the results so far (newest
/// first), whether more can be asked for, and what is going on.
class SearchState {
  const SearchState({
    this.query = '',
    this.withNick,
    this.results = const [],
    this.hasMore = false,
    this.loading = false,
    this.error,
  });

  final String query;

  /// Only the direct conversation with this nick (`search.with`); null:
  /// everything this user can see.
  final String? withNick;
  final List<ChatMessage> results;
  final bool hasMore;
  final bool loading;

  /// The last failure, as a sentence ("Not connected.").
  final String? error;

  /// Nothing asked yet.
  bool get idle => query.isEmpty;
}

/// The row above a gap in the history (see [ChatEntry.gapBefore]).
const String gapLabel = 'Load the messages in between';

/// "Opening a result in its conversation: history {before: <id> + 1,
/// limit: 10} and history {after: <id>, before: <id> + 11}" — §12.
const int resultNeighbours = 10;

class _Typing {
  _Typing(this.nick, this.to, this.timer);
  final String nick;
  final String? to;
  final Timer timer;
}

class ChatViewModel extends ChangeNotifier {
  ChatViewModel({
    required ChatClient client,
    required FileTransfers transfers,
    ScreenAwake? screenAwake,
    FileActions? fileActions,
    FilePicking? filePicking,
    MessageNotifier? notifier,
  })  : _client = client,
        _notifier = notifier,
        _transfers = transfers,
        _screenAwake = screenAwake,
        _fileActions = fileActions,
        _filePicking = filePicking {
    _subscriptions
      ..add(client.events.listen(_onChatEvent))
      ..add(transfers.updates.listen(_onTransfer));
  }

  final ChatClient _client;
  final FileTransfers _transfers;
  final ScreenAwake? _screenAwake;
  final FileActions? _fileActions;
  final FilePicking? _filePicking;
  final MessageNotifier? _notifier;
  bool _keptAwake = false;
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
  // Ids strictly between gap.after and gap.before may exist but are not
  // held: opening an old search result loads it with its neighbours only.
  ({int after, int before})? _gap;
  bool _loadingGap = false;
  bool _loadingOlder = false;
  DateTime _lastTypingSent = DateTime.fromMillisecondsSinceEpoch(0);
  List<ChatEntry>? _entries;
  bool _disposed = false;
  RoomInfo _room = const RoomInfo();
  ChatMessage? _replyingTo;
  int? _highlightId;
  SearchState _search = const SearchState();
  // Answers of an older query (or page) are dropped once a new one is asked.
  int _searchGeneration = 0;
  bool _muted = false;
  String _mutedText = defaultMutedText;
  String? _historyNote;

  // ------------------------------------------------------------ lifecycle

  /// Connects; completes with the welcome or the reason it failed.
  Future<Result<Welcome>> start() {
    unawaited(_notifier?.prepare());
    return _client.start();
  }

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
    if (_keptAwake) unawaited(_screenAwake?.keepOn(false));
    _transfers.dispose();
    _client.dispose();
    super.dispose();
  }

  /// The app went to the background or came back. Back in front, the
  /// connection is checked at once (it may have died meanwhile) and the
  /// conversation is marked read.
  void setVisible(bool visible) {
    if (visible == _visible) return;
    _visible = visible;
    if (visible) {
      _client.checkConnection();
      _markConversationRead(showMarker: true);
      unawaited(_notifier?.clearAll());
    }
    _changed();
  }

  /// Whether the app is in the foreground.
  bool get visible => _visible;

  /// Tries to reconnect now instead of waiting for the back-off delay.
  void retryNow() => _client.reconnectNow();

  /// Whether the organiser removed this user, who may come back: the
  /// banner offers "Join again" (the client never does it by itself).
  bool get canRejoin =>
      _client.status == ConnectionStatus.stopped && _client.error?.code == 'kicked';

  /// "Join again" after being removed by the organiser.
  void rejoin() {
    if (canRejoin && _client.rejoin()) _changed();
  }

  // ---------------------------------------------------------------- state

  /// Errors worth a snack bar ("bob is not online", "slow down").
  Stream<String> get notices => _notices.stream;

  String get me => _client.nick;
  String get serverLabel => _client.address.label;
  ConnectionStatus get status => _client.status;
  String? get statusError => _client.error?.message;

  /// Whether the client stopped because of the organiser or of another
  /// connection of this device (kicked, banned, replaced): the banner shows
  /// the sentence as it is, not as a failure.
  bool get stoppedByOthers =>
      _client.status == ConnectionStatus.stopped &&
      const {'kicked', 'banned', 'replaced'}.contains(_client.error?.code);

  /// The room as the operator named it (`welcome.room`, then `room`).
  RoomInfo get room => _room;

  /// The app bar's title: the person of a direct conversation, else the
  /// room's name, else "Everyone".
  String get title => _peer ?? (_room.name.isNotEmpty ? _room.name : 'Everyone');

  /// The app bar's second line: the room's topic, else the server address.
  String get subtitle {
    if (_peer != null) return peerOnline ? 'direct message · online' : 'direct message · offline';
    return _room.topic.isNotEmpty ? _room.topic : '$serverLabel · $me';
  }

  /// The operator muted this user: the composer is off and says why.
  bool get muted => _muted;
  String get mutedText => _mutedText;

  /// A line where the history was cleared, above what came after it.
  String? get historyNote => _historyNote;

  /// Whether this user sent [message] (by uid, see [ChatClient.isMine]).
  bool isMine(ChatMessage message) => _client.isMine(message);

  /// Own messages can be removed at any time ("a muted user may delete
  /// too"), not once removed.
  bool canDelete(ChatMessage message) => isMine(message) && !message.isDeleted;

  /// Own text messages (not files: as the web client) while not muted, and
  /// within the edit window when the server announces one; otherwise the
  /// server's `edit_expired` answers a late edit.
  bool canEdit(ChatMessage message) {
    if (!isMine(message) || message.isDeleted || message.file != null || message.text.isEmpty) {
      return false;
    }
    if (_muted) return false;
    final window = _client.limits.editWindow;
    if (window == null) return true;
    return DateTime.now().toUtc().difference(message.ts) < window;
  }

  /// Every stored message can be answered and reacted to, not a removed
  /// one; muted users may do neither (the server says `muted`).
  bool canReply(ChatMessage message) => !message.isDeleted && !_muted;
  bool canReact(ChatMessage message) => !message.isDeleted && !_muted;

  /// The message the composer answers, shown above it; null: none.
  ChatMessage? get replyingTo => _replyingTo;

  /// The quote the composer shows for [replyingTo].
  ReplyQuote? get replyQuote {
    final original = _replyingTo;
    return original == null ? null : _quoteOf(original);
  }

  /// My reaction on [message], if any (one per user per message).
  String? myReaction(ChatMessage message) {
    final mine = _client.uid;
    if (mine == null) return null;
    for (final MapEntry(key: emoji, value: uids) in message.reactions.entries) {
      if (uids.contains(mine)) return emoji;
    }
    return null;
  }

  /// Someone else's message whose `mentions` hold my nick.
  bool mentionsMe(ChatMessage message) =>
      !isMine(message) && !message.isDeleted && message.mentionsNick(me);

  /// The search screen's state.
  SearchState get searchState => _search;

  /// The id of the message a search result (or a quote) led to.
  int? get highlightId => _highlightId;

  /// Online nicks to suggest after `@` in the composer: those starting with
  /// [prefix]; in a direct conversation only its other party, since the
  /// server resolves only the two parties there.
  List<String> mentionCandidates(String prefix) {
    final key = nickKey(prefix);
    final pool = _peer == null ? otherUsers : [if (peerOnline) _peer!];
    return [for (final nick in pool) if (nickKey(nick).startsWith(key)) nick];
  }

  /// Headers for HTTP requests of file URLs (thumbnails in the browser).
  Map<String, String> get fileRequestHeaders => _transfers.requestHeaders;

  /// Online users other than me, sorted.
  List<String> get otherUsers =>
      _users.where((u) => !sameNick(u, me)).toList()..sort((a, b) => nickKey(a).compareTo(nickKey(b)));

  /// The person of the direct conversation shown, or null for everyone.
  String? get peer => _peer;
  bool get peerOnline => _peer == null || _users.any((u) => sameNick(u, _peer!));

  String? _conversationOf(ChatMessage message) => message.conversation(mine: isMine(message));
  bool get hasOlder => _hasOlder;

  /// Whether "load the messages in between" is being answered.
  bool get loadingGap => _loadingGap;
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
      if (message.id > lastRead && !isMine(message) && _conversationOf(message) == key) {
        count++;
      }
    }
    return count;
  }

  /// Unread messages that mention me, in one conversation (null: the room),
  /// counted apart from [unreadIn].
  int unreadMentionsIn(String? peer) {
    final key = peer == null ? null : nickKey(peer);
    final lastRead = _lastRead[key] ?? _readBaseline;
    var count = 0;
    for (final message in _messages.values) {
      if (message.id > lastRead && mentionsMe(message) && _conversationOf(message) == key) {
        count++;
      }
    }
    return count;
  }

  /// Unread mentions of me outside the shown conversation ("@" badge).
  int get unreadMentionsElsewhere {
    var total = _peer == null ? 0 : unreadMentionsIn(null);
    for (final user in _directPeers()) {
      if (_peer == null || !sameNick(user, _peer!)) total += unreadMentionsIn(user);
    }
    return total;
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
    if (!_samePeer(peer, _peer)) _replyingTo = null; // a reply stays in its conversation
    _peer = peer;
    _highlightId = null;
    _markConversationRead(showMarker: true);
    _changed();
  }

  /// Sends [text] to the shown conversation; queued while offline.
  Result<void> send(String text) {
    if (text.trim().isEmpty) return const Err(AppError('empty', 'Nothing to send.'));
    if (_muted) {
      _notice(_mutedText);
      return Err(AppError('muted', _mutedText));
    }
    final result = _client.sendText(text, to: _peer, replyTo: _replyingTo?.id);
    switch (result) {
      case Ok():
        _lastTypingSent = DateTime.fromMillisecondsSinceEpoch(0);
        if (_replyingTo != null) {
          _replyingTo = null;
          _changed();
        }
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

  /// "Reply": the composer shows the quote until sent or cancelled.
  void startReply(ChatMessage message) {
    if (!canReply(message)) return;
    _replyingTo = message;
    _changed();
  }

  void cancelReply() {
    if (_replyingTo == null) return;
    _replyingTo = null;
    _changed();
  }

  /// Taps on a reaction: the same emoji as mine takes it back (`""`),
  /// another one replaces mine. The `change` that answers redraws the chips.
  Result<void> toggleReaction(ChatMessage message, String emoji) {
    if (_muted) {
      _notice(_mutedText);
      return Err(AppError('muted', _mutedText));
    }
    final again = myReaction(message) == emoji;
    return _reportFailure(_client.react(message.id, again ? '' : emoji));
  }

  // ---------------------------------------------------------------- search

  /// A new search for [query] (from the first page); [withNick]: only in
  /// the direct conversation with that nick.
  Future<void> search(String query, {String? withNick}) async {
    final text = query.trim();
    if (text.isEmpty) {
      clearSearch();
      return;
    }
    _search = SearchState(query: text, withNick: withNick, loading: true);
    _changed();
    await _searchPage(text, withNick: withNick, before: null);
  }

  /// "More results": the page of matches older than those shown.
  Future<void> moreResults() async {
    final state = _search;
    if (state.loading || !state.hasMore || state.results.isEmpty) return;
    _search = SearchState(
        query: state.query,
        withNick: state.withNick,
        results: state.results,
        hasMore: true,
        loading: true);
    _changed();
    final oldest = state.results.map((m) => m.id).reduce((a, b) => a < b ? a : b);
    await _searchPage(state.query, withNick: state.withNick, before: oldest);
  }

  void clearSearch() {
    _searchGeneration++;
    _search = const SearchState();
    _changed();
  }

  Future<void> _searchPage(String text, {required String? withNick, required int? before}) async {
    final generation = ++_searchGeneration;
    final result = await _client.search(text, withNick: withNick, before: before);
    if (generation != _searchGeneration || _disposed) return; // a newer query won
    final shown = before == null ? const <ChatMessage>[] : _search.results;
    switch (result) {
      case Ok(:final value):
        final seen = {for (final m in shown) m.id};
        _search = SearchState(
          query: text,
          withNick: withNick,
          results: [...shown, for (final m in value.results) if (!seen.contains(m.id)) m],
          hasMore: value.hasMore && value.results.isNotEmpty,
        );
      case Err(:final error):
        _search = SearchState(
          query: text,
          withNick: withNick,
          results: shown,
          hasMore: _search.hasMore,
          error: error.message,
        );
    }
    _changed();
  }

  /// Opens [message] (a search result, or the original of a quote) in its
  /// conversation, fetching it and its neighbours when they are not held.
  /// Completes with whether the message is now in the list.
  Future<bool> openMessage(ChatMessage message) async {
    final mine = isMine(message);
    final to = message.to;
    openConversation(to == null ? null : (mine ? to : message.from));
    return _reveal(message.id);
  }

  /// Scrolls to a quoted original when held; else fetches it like a result.
  Future<bool> openQuote(ReplyQuote quote) async {
    if (quote.deleted) return false;
    return _reveal(quote.id);
  }

  Future<bool> _reveal(int id) async {
    if (!_messages.containsKey(id)) {
      final oldestBefore = _messages.isEmpty ? null : _messages.firstKey();
      final newestBefore = _messages.isEmpty ? null : _messages.lastKey();
      final older = await _client.requestHistory(before: id + 1, limit: resultNeighbours);
      final newer = await _client.requestHistory(
          after: id, before: id + resultNeighbours + 1, limit: resultNeighbours);
      if (older case Ok(:final value) when oldestBefore == null || id < oldestBefore) {
        _hasOlder = value.hasMore; // the list's oldest end is now this page
      }
      if (newer is Ok<HistoryPage>) _noteGap(id + resultNeighbours, newestBefore);
    }
    final found = _messages.containsKey(id);
    _highlightId = found ? id : null;
    _changed();
    return found;
  }

  /// What lies between the neighbours just loaded (up to [loadedUpTo]) and
  /// the next message held above them is unknown: a gap, unless nothing is
  /// held above (the neighbours are the newest) or nothing lies between.
  void _noteGap(int loadedUpTo, int? newestBefore) {
    if (newestBefore == null) return;
    final above = _messages.keys.firstWhere((key) => key > loadedUpTo, orElse: () => -1);
    if (above < 0 || above <= loadedUpTo + 1) return;
    final gap = _gap;
    // One gap at a time: a second far jump keeps the wider one.
    if (gap == null || above - loadedUpTo > gap.before - gap.after) {
      _gap = (after: loadedUpTo, before: above);
    }
  }

  /// "Load the messages in between": the newest page of the gap; the gap
  /// shrinks to what is still missing below it, or closes.
  Future<void> loadGap() async {
    final gap = _gap;
    if (gap == null || _loadingGap) return;
    _loadingGap = true;
    _changed();
    final result = await _client.requestHistory(after: gap.after, before: gap.before);
    _loadingGap = false;
    if (result case Ok(:final value) when _gap == gap) {
      final ids = [for (final item in value.messages) item.id];
      if (!value.hasMore || ids.isEmpty) {
        _gap = null;
      } else {
        final lowest = ids.reduce((a, b) => a < b ? a : b);
        _gap = lowest <= gap.after + 1 ? null : (after: gap.after, before: lowest);
      }
    }
    _changed();
  }

  /// Removes one of my messages for everyone (after the screen asked).
  /// The server's `change` updates the list; its refusal is a notice.
  Result<void> deleteMessage(int id) => _reportFailure(_client.deleteMessage(id));

  /// Sends the new text of one of my messages.
  Result<void> editMessage(int id, String text) =>
      _reportFailure(_client.editMessage(id, text));

  Result<void> _reportFailure(Result<String> result) {
    switch (result) {
      case Ok():
        return const Ok<void>(null);
      case Err(:final error):
        _notice(error.message);
        return Err<void>(error);
    }
  }

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
    if (_muted) {
      _notice(_mutedText);
      return;
    }
    _transfers.upload(source, to: _peer, caption: caption);
  }

  /// Whether files can be picked to send.
  bool get canPickFiles => _filePicking != null;

  /// Lets the person pick files (several at once) or photos, and sends each.
  Future<void> pickAndSend({required bool photos}) async {
    final picking = _filePicking;
    if (picking == null) return;
    final List<PickedFile> picked;
    try {
      picked = await picking.pick(photos: photos);
    } on Object catch (error) {
      _notice('Cannot pick files: $error');
      return;
    }
    final sources = <UploadSource>[];
    for (final file in picked) {
      final source = _uploadSourceFor(file);
      if (source == null) {
        _notice('Cannot read ${file.name}.');
      } else {
        sources.add(source);
      }
    }
    sendFiles(sources);
  }

  /// Browsers hand over bytes; other platforms a path read chunk by chunk,
  /// so large files never sit in memory.
  static UploadSource? _uploadSourceFor(PickedFile file) {
    final mime = guessMime(file.name);
    final bytes = file.bytes;
    if (bytes != null) {
      return BytesUploadSource(name: file.name, bytes: Uint8List.fromList(bytes), mime: mime);
    }
    final path = file.path;
    if (path == null) return null;
    return uploadSourceFromPath(path, file.name, file.size, mime);
  }

  /// Shares several files, each its own file message, in the order given.
  void sendFiles(List<UploadSource> sources) {
    for (final source in sources) {
      sendFile(source);
    }
  }

  /// Whether received files can be saved to the photo gallery here.
  bool get canSaveToGallery => _fileActions?.hasGallery ?? false;

  /// Whether the open / share / save actions exist (not in browsers).
  bool get hasFileActions => _fileActions != null && _transfers.canDownload;

  /// Opens a downloaded file in another app; downloads it first if needed.
  Future<void> openFile(SharedFile file) =>
      _withLocalFile(file, (actions, path) => actions.open(path, file));

  Future<void> shareFile(SharedFile file) =>
      _withLocalFile(file, (actions, path) => actions.share(path, file));

  Future<void> saveToGallery(SharedFile file) => _withLocalFile(file, (actions, path) async {
        final result = await actions.saveToGallery(path, file);
        if (result is Ok<void>) _notice('${file.name} saved to the gallery.');
        return result;
      });

  Future<void> saveFileAs(SharedFile file) => _withLocalFile(file, (actions, path) async {
        final result = await actions.saveAs(path, file);
        if (result is Ok<void>) _notice('${file.name} saved.');
        return result;
      });

  Future<void> _withLocalFile(
    SharedFile file,
    Future<Result<void>> Function(FileActions actions, String path) action,
  ) async {
    final actions = _fileActions;
    if (actions == null) return;
    final path = _localPaths[file.id];
    if (path == null) {
      download(file);
      _notice('Downloading ${file.name} first…');
      return;
    }
    final result = await action(actions, path);
    if (result case Err(:final error) when error.code != 'cancelled') _notice(error.message);
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
        _room = welcome.room;
        _setMuted(welcome.muted, null);
      case MessagesAdded(:final messages, :final live, :final changes):
        _addMessages(messages, live: live);
        _applyChanges(changes);
      case RoomUpdated(:final room):
        _room = room;
      case MutedChanged(:final muted, :final message):
        _setMuted(muted, message);
        if (message.isNotEmpty) _notice(message);
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

  void _setMuted(bool muted, String? message) {
    _muted = muted;
    if (muted) _mutedText = message != null && message.isNotEmpty ? message : defaultMutedText;
  }

  /// "A client applies a change to the message it holds with id == target
  /// and ignores changes to messages it does not hold" — PROTOCOL.md §10.
  /// In order: live ones, and those of a resumed welcome or history page.
  void _applyChanges(List<MessageChange> changes) {
    for (final change in changes) {
      if (change.isClear) {
        _clearBefore(change.id);
        continue;
      }
      final target = change.target;
      if (target == null) continue;
      final held = _messages[target];
      // Quotes follow their original, held or not (§12): the reply may be
      // on screen while the original is far back in the history.
      if (change.isDelete) {
        _updateQuotes(target, (quote) => quote.removed());
      } else if (change.isEdit && change.text != null && held?.file == null) {
        // A file message is quoted by its file name, which an edit keeps.
        _updateQuotes(target, (quote) => quote.editedTo(change.text!));
      }
      _updateResult(target, change);
      if (held == null) continue;
      if (change.isDelete) {
        _forgetFile(held.file);
        _messages[target] = held.removedBy(change.by);
        if (_replyingTo?.id == target) _replyingTo = null;
      } else if (change.isEdit && !held.isDeleted) {
        final text = change.text;
        if (text != null) _messages[target] = held.editedTo(text, change.edited ?? change.ts);
        if (_replyingTo?.id == target) _replyingTo = _messages[target]; // its quote follows
      } else if (change.isReact && !held.isDeleted) {
        // The whole reactions object after the change: no counting here,
        // so a change seen twice (live, then in a resumed range) is harmless.
        _messages[target] = held.withReactions(change.reactions ?? const {});
      }
    }
  }

  /// A change to a message among the search results: a removed one leaves
  /// them ("never removed ones"), an edited or reacted one follows.
  void _updateResult(int target, MessageChange change) {
    final results = _search.results;
    final index = results.indexWhere((m) => m.id == target);
    if (index < 0) return;
    final result = results[index];
    final ChatMessage? updated;
    if (change.isDelete) {
      updated = null;
    } else if (change.isEdit && change.text != null) {
      updated = result.editedTo(change.text!, change.edited ?? change.ts);
    } else if (change.isReact) {
      updated = result.withReactions(change.reactions ?? const {});
    } else {
      return;
    }
    _search = SearchState(
      query: _search.query,
      withNick: _search.withNick,
      results: [
        for (final m in results)
          if (m.id != target) m else if (updated != null) updated,
      ],
      hasMore: _search.hasMore,
      loading: _search.loading,
      error: _search.error,
    );
  }

  /// Applies [update] to the quote in every held reply to [original].
  void _updateQuotes(int original, ReplyQuote Function(ReplyQuote quote) update) {
    for (final entry in _messages.entries.toList()) {
      final quote = entry.value.replyTo;
      if (quote != null && quote.id == original && !quote.deleted) {
        _messages[entry.key] = entry.value.withQuote(update(quote));
      }
    }
  }

  /// The quote of [message] as the server would make it: the first 200
  /// characters of its text, or its file name.
  static ReplyQuote _quoteOf(ChatMessage message) => ReplyQuote(
        id: message.id,
        from: message.from,
        text: message.file?.name ??
            String.fromCharCodes(message.text.runes.take(quoteLength)),
      );

  /// `clear`: "every message and change with a smaller id is gone, with
  /// every shared file. A client drops everything it holds with a smaller id."
  void _clearBefore(int id) {
    final gone = [for (final key in _messages.keys) if (key < id) key];
    for (final key in gone) {
      _forgetFile(_messages.remove(key)?.file);
    }
    _hasOlder = false; // nothing older exists any more
    final gap = _gap;
    if (gap != null && gap.after < id) _gap = null; // what it missed is gone
    _historyNote = clearedNote;
  }

  /// A removed file: its transfer stops (the server deleted the bytes).
  void _forgetFile(SharedFile? file) {
    if (file == null) return;
    _transfers.cancel(file.id);
    _transferStatus.remove(file.id);
    _localPaths.remove(file.id);
  }

  void _addMessages(List<ChatMessage> messages, {required bool live}) {
    final images = <SharedFile>[];
    for (final message in messages) {
      _messages[message.id] = message;
      final typing = _typing.remove(nickKey(message.from));
      typing?.timer.cancel();
      final file = message.file;
      if (file != null && !_localPaths.containsKey(file.id)) {
        if (_fetchesInline(file)) images.add(file);
        unawaited(_findLocalCopy(file, fetch: false));
      }
    }
    // Newest first: they are the ones on screen.
    for (final image in images.reversed.take(autoFetchImagesPerBatch)) {
      unawaited(_findLocalCopy(image, fetch: true));
    }
    if (_visible) {
      _markConversationRead(showMarker: false);
    } else if (live) {
      _notifyInBackground(messages);
    }
  }

  /// A live message from someone else while the app is in the background:
  /// one notification per conversation, replaced by its newest message.
  void _notifyInBackground(List<ChatMessage> messages) {
    final notifier = _notifier;
    if (notifier == null) return;
    for (final message in messages) {
      if (isMine(message)) continue;
      final conversation = _conversationOf(message);
      final file = message.file;
      final text = message.text.isNotEmpty
          ? message.text
          : file != null
              ? 'sent ${file.name}'
              : '';
      final unread = unreadIn(conversation);
      unawaited(notifier.show(
        id: notificationId(conversation),
        title: mentionsMe(message)
            ? '${message.from} mentioned you'
            : conversation == null
                ? '${message.from} · Everyone'
                : message.from,
        body: unread > 1 ? '$text (+${unread - 1} more)' : text,
      ));
    }
  }

  /// Small images are shown in the chat, so they are fetched unasked.
  bool _fetchesInline(SharedFile file) =>
      file.isImage && file.size > 0 && file.size <= autoFetchImageBytes && _transfers.canDownload;

  Future<void> _findLocalCopy(SharedFile file, {required bool fetch}) async {
    final path = await _transfers.localPath(file);
    if (_disposed) return;
    if (path != null) {
      _localPaths[file.id] = path;
      _changed();
    } else if (fetch && _transferStatus[file.id] == null) {
      _transfers.download(file);
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
    _updateScreenAwake();
    _changed();
  }

  /// Whether a file is moving right now.
  bool get transferring => _transferStatus.values.any((s) => s.state.isActive);

  void _updateScreenAwake() {
    final awake = _screenAwake;
    final wanted = transferring;
    if (awake == null || wanted == _keptAwake) return;
    _keptAwake = wanted;
    unawaited(awake.keepOn(wanted));
  }

  // -------------------------------------------------------------- helpers

  String? get _peerKey => _peer == null ? null : nickKey(_peer!);

  static bool _samePeer(String? a, String? b) =>
      a == null || b == null ? a == b : sameNick(a, b);

  Iterable<String> _directPeers() {
    final peers = <String, String>{};
    for (final message in _messages.values) {
      final to = message.to;
      if (to == null) continue;
      final other = isMine(message) ? to : message.from;
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
      if (_conversationOf(message) != key) continue;
      if (message.id > lastRead && !isMine(message)) firstUnread ??= message.id;
      if (message.id > newest) newest = message.id;
    }
    if (showMarker) _unreadMarkerId = firstUnread;
    _lastRead[key] = newest;
  }

  List<ChatEntry> _buildEntries() {
    final key = _peerKey;
    final rows = <ChatEntry>[
      for (final message in _messages.values)
        if (_conversationOf(message) == key)
          ChatEntry(
            from: message.from,
            text: message.text,
            time: message.ts.toLocal(),
            mine: isMine(message),
            message: message,
            quote: message.isDeleted ? null : message.replyTo,
            mentionsMe: mentionsMe(message),
            highlighted: message.id == _highlightId,
          ),
      for (final pending in _outbox)
        if ((pending.to == null ? null : nickKey(pending.to!)) == key)
          ChatEntry(
            from: me,
            text: pending.text,
            time: pending.createdAt,
            mine: true,
            pending: pending,
            quote: _pendingQuote(pending.replyTo),
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
      final gap = _gap;
      final rowId = row.message?.id;
      final previousId = previous?.message?.id;
      // Between two rows of this conversation, one below the gap and one
      // above it (at the top, "Load older" is the way).
      final gapBefore = gap != null &&
          rowId != null &&
          previousId != null &&
          previousId <= gap.after &&
          rowId >= gap.before;
      grouped.add(ChatEntry(
        from: row.from,
        text: row.text,
        time: row.time,
        mine: row.mine,
        message: row.message,
        pending: row.pending,
        firstOfGroup: previous == null || marker || newDay || gapBefore || !_sameGroup(previous, row),
        lastOfGroup: next == null || nextMarker || !_sameDay(row.time, next.time) || !_sameGroup(row, next),
        unreadMarker: marker,
        dayLabel: newDay ? dayLabel(row.time) : null,
        quote: row.quote,
        mentionsMe: row.mentionsMe,
        highlighted: row.highlighted,
        gapBefore: gapBefore,
      ));
    }
    return grouped.reversed.toList();
  }

  /// A reply not yet acknowledged shows the quote of the original it
  /// answers, when the original is held.
  ReplyQuote? _pendingQuote(int? replyTo) {
    if (replyTo == null) return null;
    final original = _messages[replyTo];
    return original == null || original.isDeleted ? null : _quoteOf(original);
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

/// The notification id of a conversation (null: the public room): stable,
/// so a newer message replaces the older notification.
int notificationId(String? conversation) =>
    conversation == null ? 0 : 1 + (conversation.hashCode & 0x3fffffff);

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
