// Wire protocol v1 of chatserver.py: names, limits and error codes.
//
// docs/PROTOCOL.md is the contract; every name below is copied from its
// tables (sections 3, 4, 6 and 12). tests/test_flutter_sources.py checks that each
// name in those tables appears here as a string literal.
//
// Pure Dart: no Flutter import, so this file runs anywhere Dart runs.

/// Protocol version sent in `hello.proto`.
const int protocolVersion = 1;

/// "1 ≤ H ≤ 65,536 (MAX_HEADER_BYTES)" — PROTOCOL.md §1.
const int maxHeaderBytes = 65536;

/// "0 ≤ P ≤ 1,048,576 (MAX_PAYLOAD_BYTES)" — PROTOCOL.md §1.
const int maxPayloadBytes = 1048576;

/// "`text` (string, 1–16,384 bytes as UTF-8)" — PROTOCOL.md §3.
const int maxTextBytes = 16384;

/// "`cid` — a string of 1–64 characters the client picks" — PROTOCOL.md §2.
const int maxCidLength = 64;

/// "The server sends `ping` after 30 s without any frame from a client and
/// closes the connection after 90 s without any" — PROTOCOL.md §4. Servers
/// that announce `welcome.limits.ping_after` / `idle_timeout` override these.
const Duration defaultPingAfter = Duration(seconds: 30);
const Duration defaultIdleTimeout = Duration(seconds: 90);

/// "`limit` (int 1–200, default 50)" for `history` — PROTOCOL.md §3.
const int historyPageSize = 50;

/// Message types a client sends (PROTOCOL.md §3).
abstract final class ClientType {
  static const String hello = 'hello';
  static const String msg = 'msg';
  static const String history = 'history';
  static const String typing = 'typing';
  static const String ping = 'ping';
  static const String pong = 'pong';
  static const String upload = 'upload';
  static const String chunk = 'chunk';
  static const String uploadStatus = 'upload_status';
  static const String uploadCancel = 'upload_cancel';
  static const String download = 'download';
  static const String downloadCancel = 'download_cancel';

  /// Removes one of your own messages (section 10).
  static const String delete = 'delete';

  /// Changes the text of one of your own messages (section 10).
  static const String edit = 'edit';

  /// Adds, replaces or removes this user's emoji on a message (section 12).
  static const String react = 'react';

  /// Full-text search of the messages this user can see (section 12).
  static const String search = 'search';

  static const Set<String> all = {
    hello,
    msg,
    history,
    typing,
    ping,
    pong,
    upload,
    chunk,
    uploadStatus,
    uploadCancel,
    download,
    downloadCancel,
    delete,
    edit,
    react,
    search,
  };
}

/// Message types the server sends (PROTOCOL.md §4).
abstract final class ServerType {
  static const String welcome = 'welcome';
  static const String msg = 'msg';
  static const String history = 'history';
  static const String join = 'join';
  static const String leave = 'leave';
  static const String typing = 'typing';
  static const String ping = 'ping';
  static const String pong = 'pong';
  static const String uploadReady = 'upload_ready';
  static const String downloadStart = 'download_start';
  static const String fileChunk = 'file_chunk';
  static const String downloadEnd = 'download_end';
  static const String error = 'error';
  static const String bye = 'bye';

  /// A change to the history (delete, edit, clear), in the id sequence.
  static const String change = 'change';

  /// The room's name, topic and lock, when the operator changes them.
  static const String room = 'room';

  /// The operator muted or unmuted you.
  static const String notice = 'notice';

  /// The answer to a `search`, matched by its `cid` (section 12).
  static const String searchResults = 'search_results';

  static const Set<String> all = {
    welcome,
    msg,
    history,
    join,
    leave,
    typing,
    ping,
    pong,
    uploadReady,
    downloadStart,
    fileChunk,
    downloadEnd,
    error,
    bye,
    change,
    room,
    notice,
    searchResults,
  };
}

/// `change.change`: what a change does (PROTOCOL.md §4 and §10).
abstract final class ChangeKind {
  static const String delete = 'delete';
  static const String edit = 'edit';
  static const String clear = 'clear';

  /// Someone's reaction was added, replaced or removed (section 12).
  static const String react = 'react';
}

/// Field names of section 12 (replies, reactions, mentions, search) that
/// more than one file reads or writes: here once, so a typo cannot hide.
abstract final class WireField {
  /// `msg.reply_to`: an id when sending, a quote object when received.
  static const String replyTo = 'reply_to';

  /// `msg.mentions`: the nicks mentioned as `@nick`.
  static const String mentions = 'mentions';

  /// `msg.reactions` and `change.reactions`: emoji → uids.
  static const String reactions = 'reactions';

  /// `react.emoji` and `change.emoji` (`""`: removed).
  static const String emoji = 'emoji';

  /// `change.uid`: who reacted.
  static const String uid = 'uid';

  /// `search_results.results`: the matching messages, newest first.
  static const String results = 'results';

  /// `search_results.has_more`, as in `history`.
  static const String hasMore = 'has_more';

  /// `search.with`: only the direct conversation with that nick.
  static const String withNick = 'with';
}

/// "`limit` (int 1–50, default 20)" for `search` — PROTOCOL.md §12.
const int searchPageSize = 20;
const int maxSearchLimit = 50;

/// "`text` (string, 1–200 characters after trimming)" for `search`.
const int maxSearchTextLength = 200;

/// Emoji the message menu offers for a reaction (any other emoji the server
/// accepts still shows, as a chip, when someone else used it).
const List<String> quickReactions = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

/// Who removed a message: `change.by` and `msg.deleted`.
abstract final class ChangedBy {
  static const String sender = 'sender';
  static const String operator = 'operator';
}

/// `notice.code` (PROTOCOL.md §4).
abstract final class NoticeCode {
  static const String muted = 'muted';
  static const String unmuted = 'unmuted';
}

/// `bye.reason` (PROTOCOL.md §4).
abstract final class ByeReason {
  /// The server is stopping: reconnect later.
  static const String shutdown = 'shutdown';

  /// Another connection of this device took the nick: do not fight it.
  static const String replaced = 'replaced';

  /// The operator removed you; you may join again by hand.
  static const String kicked = 'kicked';

  /// The operator banned this device or address.
  static const String banned = 'banned';
}

/// The stable error codes of PROTOCOL.md §6, with their "fatal" column.
enum ErrorCode {
  badFrame('bad_frame', fatal: true),
  frameTooLarge('frame_too_large', fatal: true),
  badJson('bad_json'),
  badRequest('bad_request'),
  unknownType('unknown_type'),
  protoUnsupported('proto_unsupported', fatal: true),
  authFailed('auth_failed', fatal: true),
  nickInvalid('nick_invalid'),
  nickOwned('nick_owned'),
  nickTaken('nick_taken'),
  notJoined('not_joined'),
  textTooLong('text_too_long'),
  rateLimited('rate_limited'),
  unknownUser('unknown_user'),
  serverFull('server_full', fatal: true),
  serverBusy('server_busy'),
  timeout('timeout', fatal: true),
  slowConsumer('slow_consumer', fatal: true),
  fileTooLarge('file_too_large'),
  diskFull('disk_full'),
  tooManyUploads('too_many_uploads'),
  tooManyDownloads('too_many_downloads'),
  unknownUpload('unknown_upload'),
  badOffset('bad_offset'),
  sizeMismatch('size_mismatch'),
  checksumMismatch('checksum_mismatch'),
  unknownFile('unknown_file'),
  forbidden('forbidden'),
  shuttingDown('shutting_down', fatal: true),
  banned('banned', fatal: true),
  roomLocked('room_locked'),
  muted('muted'),
  unknownMessage('unknown_message'),
  editExpired('edit_expired'),

  /// Not on the wire: a code this client version does not know yet.
  unknown('unknown');

  const ErrorCode(this.wire, {this.fatal = false});

  /// The code as written on the wire.
  final String wire;

  /// Whether the server closes the connection after sending it.
  final bool fatal;

  /// The enum value for a wire code; [ErrorCode.unknown] for a new code.
  static ErrorCode fromWire(String code) {
    for (final value in ErrorCode.values) {
      if (value.wire == code) return value;
    }
    return ErrorCode.unknown;
  }

  /// Errors after which reconnecting cannot help: the user must change
  /// something (token, nick, app version) first, or the operator must.
  bool get needsUserAction =>
      this == ErrorCode.authFailed ||
      this == ErrorCode.protoUnsupported ||
      this == ErrorCode.nickInvalid ||
      this == ErrorCode.nickTaken ||
      this == ErrorCode.nickOwned ||
      this == ErrorCode.roomLocked ||
      this == ErrorCode.banned;
}
