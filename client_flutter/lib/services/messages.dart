// Typed messages of PROTOCOL.md §3 (client → server builders) and §4
// (server → client models), with the replies, reactions and search of §12.
// Field names and order follow the tables.

import 'dart:typed_data';

import '../models/chat_message.dart';
import '../models/room.dart';
import 'frame_codec.dart';
import 'protocol.dart';

typedef Json = Map<String, Object?>;

/// Builders for the client → server messages of PROTOCOL.md §3.
abstract final class ClientMessages {
  /// No `session`: "the session is not a credential for this (it travels
  /// in HTTP requests), and hello.session is ignored" — the device key is
  /// what takes a live nick over (PROTOCOL.md §4).
  static Json hello({
    required String nick,
    required String client,
    String? device,
    String? token,
    int? since,
  }) =>
      {
        'type': ClientType.hello,
        'nick': nick,
        'device': ?device,
        'client': client,
        'proto': protocolVersion,
        'token': ?token,
        'since': ?since,
      };

  /// [replyTo]: the id of the message this one answers (`reply_to`); the
  /// server answers an id the sender cannot see with `unknown_message`.
  static Json msg({required String text, required String cid, String? to, int? replyTo}) => {
        'type': ClientType.msg,
        'text': text,
        'cid': cid,
        'to': ?to,
        'reply_to': ?replyTo,
      };

  static Json history({int? before, int? after, int limit = historyPageSize, String? cid}) => {
        'type': ClientType.history,
        'before': ?before,
        'after': ?after,
        'limit': limit,
        'cid': ?cid,
      };

  static Json typing({String? to}) => {
        'type': ClientType.typing,
        'to': ?to,
      };

  static Json ping([Object? t]) => {'type': ClientType.ping, 't': ?t};

  static Json pong([Object? t]) => {'type': ClientType.pong, 't': ?t};

  static Json upload({
    required String name,
    required int size,
    required String cid,
    String? sha256,
    String? mime,
    String? to,
    String? text,
  }) =>
      {
        'type': ClientType.upload,
        'name': name,
        'size': size,
        'cid': cid,
        'sha256': ?sha256,
        'mime': ?mime,
        'to': ?to,
        'text': ?text,
      };

  /// Header of a `chunk` frame; the bytes travel as the frame payload.
  static Json chunk({required String upload, required int offset}) => {
        'type': ClientType.chunk,
        'upload': upload,
        'offset': offset,
      };

  static Json uploadStatus(String upload) => {'type': ClientType.uploadStatus, 'upload': upload};

  static Json uploadCancel(String upload) => {'type': ClientType.uploadCancel, 'upload': upload};

  static Json download({required String file, int offset = 0}) => {
        'type': ClientType.download,
        'file': file,
        'offset': offset,
      };

  static Json downloadCancel(String file) => {'type': ClientType.downloadCancel, 'file': file};

  /// Removes one of your own messages; answered by a `change`, or an error
  /// whose `ref` is [cid].
  static Json delete({required int id, String? cid}) => {
        'type': ClientType.delete,
        'id': id,
        'cid': ?cid,
      };

  /// New text for one of your own messages (within the edit window).
  static Json edit({required int id, required String text, String? cid}) => {
        'type': ClientType.edit,
        'id': id,
        'text': text,
        'cid': ?cid,
      };

  /// Puts this user's one reaction on message [id]: [emoji] replaces the
  /// previous one, `""` removes it. Answered by a `change` with `change:
  /// "react"`, or an error whose `ref` is [cid] (`muted`, `unknown_message`,
  /// `bad_request`, `rate_limited`).
  static Json react({required int id, required String emoji, String? cid}) => {
        'type': ClientType.react,
        'id': id,
        'emoji': emoji,
        'cid': ?cid,
      };

  /// Full-text search: every word of [text] must start a word of a message.
  /// [from]: only that sender; [withNick]: only the direct conversation
  /// with that nick; [before]: only ids below it (the next page). Answered
  /// by `search_results` with the same [cid].
  static Json search({
    required String text,
    required String cid,
    String? from,
    String? withNick,
    int? before,
    int limit = searchPageSize,
  }) =>
      {
        'type': ClientType.search,
        'text': text,
        'cid': cid,
        'from': ?from,
        'with': ?withNick,
        'before': ?before,
        'limit': limit,
      };
}

/// Server limits announced in `welcome.limits`. Fields a server does not
/// send keep their defaults; fields this client does not know are ignored.
class ServerLimits {
  const ServerLimits({
    this.text = maxTextBytes,
    this.chunk = maxPayloadBytes,
    this.file = 0,
    this.pingAfter = defaultPingAfter,
    this.idleTimeout = defaultIdleTimeout,
    this.editWindow,
  });

  factory ServerLimits.fromJson(Object? json) {
    if (json is! Map<String, Object?>) return const ServerLimits();
    return ServerLimits(
      text: _int(json['text'], maxTextBytes),
      chunk: _int(json['chunk'], maxPayloadBytes),
      file: _int(json['file'], 0),
      pingAfter: _seconds(json['ping_after'], defaultPingAfter),
      idleTimeout: _seconds(json['idle_timeout'], defaultIdleTimeout),
      editWindow: _window(json['edit_window']),
    );
  }

  final int text;
  final int chunk;

  /// Largest file the server accepts; 0 when it did not say.
  final int file;

  /// "The server sends ping after 30 s without any frame from a client"
  /// (`limits.ping_after`, seconds) — PROTOCOL.md §4, Liveness.
  final Duration pingAfter;

  /// "... and closes the connection after 90 s without any"
  /// (`limits.idle_timeout`, seconds).
  final Duration idleTimeout;

  /// How long after its `ts` a message's text may be edited
  /// (`limits.edit_window`, seconds; 0: editing is off) — PROTOCOL.md §4.
  /// Null when an older server does not say: Edit is then always offered
  /// and the server answers a late one with `edit_expired`.
  final Duration? editWindow;
}

/// A message from the server, parsed from a frame (or a WebSocket text).
sealed class ServerMessage {
  const ServerMessage();

  /// Parses one decoded frame. A header that lacks a field the protocol
  /// requires becomes [MalformedMessage] rather than an exception.
  static ServerMessage fromFrame(Frame frame) {
    try {
      return _parse(frame.type, frame.header, frame.payload);
    } on TypeError catch (error) {
      return MalformedMessage(frame.header, error.toString());
    } on FormatException catch (error) {
      return MalformedMessage(frame.header, error.message);
    }
  }

  static ServerMessage _parse(String type, Json h, Uint8List payload) => switch (type) {
        ServerType.welcome => Welcome.fromJson(h),
        ServerType.msg => MessageReceived(ChatMessage.fromJson(h)),
        ServerType.change => ChangeReceived(MessageChange.fromJson(h)),
        ServerType.room => RoomChanged(RoomInfo.fromJson(h)),
        ServerType.notice => NoticeReceived(h['code'] as String, h['message'] as String? ?? ''),
        ServerType.history => HistoryPage(
            messages: _items(h['messages']),
            hasMore: h['has_more'] == true,
            cid: h['cid'] as String?,
          ),
        ServerType.searchResults => SearchResults(
            cid: h['cid'] as String? ?? '',
            results: [
              for (final item in h[WireField.results] as List<Object?>? ?? const <Object?>[])
                ChatMessage.fromJson(item as Map<String, Object?>),
            ],
            hasMore: h[WireField.hasMore] == true,
          ),
        ServerType.join => UserJoined(h['nick'] as String),
        ServerType.leave => UserLeft(h['nick'] as String, h['reason'] as String? ?? 'quit'),
        ServerType.typing => TypingNotice(h['from'] as String, h['to'] as String?),
        ServerType.ping => PingReceived(h['t']),
        ServerType.pong => PongReceived(h['t']),
        ServerType.uploadReady => UploadReady(
            upload: h['upload'] as String,
            cid: h['cid'] as String? ?? '',
            offset: _int(h['offset'], 0),
            size: _int(h['size'], 0),
            chunk: _int(h['chunk'], maxPayloadBytes),
          ),
        ServerType.downloadStart => DownloadStart(
            file: h['file'] as String,
            name: h['name'] as String? ?? 'file',
            size: _int(h['size'], 0),
            sha256: h['sha256'] as String? ?? '',
            mime: h['mime'] as String? ?? '',
            offset: _int(h['offset'], 0),
          ),
        ServerType.fileChunk => FileChunk(h['file'] as String, _int(h['offset'], 0), payload),
        ServerType.downloadEnd => DownloadEnd(h['file'] as String, _int(h['size'], 0)),
        ServerType.error => ServerError(
            code: ErrorCode.fromWire(h['code'] as String),
            wireCode: h['code'] as String,
            message: h['message'] as String? ?? '',
            ref: h['ref'] as String?,
            fatal: h['fatal'] == true,
          ),
        ServerType.bye => ByeReceived(
            h['reason'] as String? ?? ByeReason.shutdown,
            h['message'] as String? ?? '',
          ),
        _ => UnknownMessage(type, h),
      };
}

final class Welcome extends ServerMessage {
  const Welcome({
    required this.nick,
    this.uid,
    this.device,
    required this.server,
    required this.session,
    required this.users,
    required this.online,
    required this.history,
    required this.hasMore,
    required this.lastId,
    required this.limits,
    this.room = const RoomInfo(),
    this.muted = false,
  });

  factory Welcome.fromJson(Json h) => Welcome(
        nick: h['nick'] as String,
        uid: (h['uid'] as num?)?.toInt(),
        device: h['device'] as String?,
        server: h['server'] as String? ?? '',
        session: h['session'] as String? ?? '',
        users: [for (final u in h['users'] as List<Object?>? ?? const []) u as String],
        online: _int(h['online'], (h['users'] as List<Object?>?)?.length ?? 0),
        history: _items(h['history']),
        hasMore: h['has_more'] == true,
        lastId: _int(h['last_id'], 0),
        limits: ServerLimits.fromJson(h['limits']),
        room: RoomInfo.fromJson(h['room']),
        muted: h['muted'] == true,
      );

  final String nick;

  /// This identity (the nick as claimed by this device): own messages are
  /// those whose `uid` equals it. Null from a server before identities.
  final int? uid;

  /// The device key to store: ours echoed, or a new one when we sent none.
  final String? device;
  final String server;

  /// Opaque id of this connection, for the HTTP file routes.
  final String session;

  /// Nicks online, you included — at most the first 500 of them.
  final List<String> users;

  /// How many users are online (the list may be cut short in big rooms).
  final int online;

  /// Messages, oldest first; after a `hello` with `since`, the changes in
  /// the range as well (PROTOCOL.md §10, "Resume sees them").
  final List<HistoryItem> history;
  final bool hasMore;
  final int lastId;
  final ServerLimits limits;
  final RoomInfo room;

  /// You may read but not post (`notice muted` while connected).
  final bool muted;
}

final class MessageReceived extends ServerMessage {
  const MessageReceived(this.message);
  final ChatMessage message;
}

/// A `change`: a message removed or edited, or the history cleared.
final class ChangeReceived extends ServerMessage {
  const ChangeReceived(this.change);
  final MessageChange change;
}

/// A `room`: the operator changed its name, topic or lock.
final class RoomChanged extends ServerMessage {
  const RoomChanged(this.room);
  final RoomInfo room;
}

/// A `notice`: [code] is `muted` or `unmuted`; [message] is the sentence.
final class NoticeReceived extends ServerMessage {
  const NoticeReceived(this.code, this.message);
  final String code;
  final String message;
}

final class HistoryPage extends ServerMessage {
  const HistoryPage({required this.messages, required this.hasMore, this.cid});

  /// Messages (and, for a request with `after`, changes), oldest first.
  final List<HistoryItem> messages;
  final bool hasMore;

  /// Echo of the request's `cid`, when it sent one (PROTOCOL.md section 3).
  final String? cid;
}

/// `search_results`: the messages matching a `search`, newest first.
final class SearchResults extends ServerMessage {
  const SearchResults({required this.cid, required this.results, required this.hasMore});

  /// Echo of the request's `cid`.
  final String cid;

  /// Only messages the asker can see; never removed ones, never changes.
  final List<ChatMessage> results;

  /// "Older matches exist: ask again with before = the smallest id received."
  final bool hasMore;

  /// The `before` of the next page; null when there is none.
  int? get nextBefore {
    if (!hasMore || results.isEmpty) return null;
    return results.map((m) => m.id).reduce((a, b) => a < b ? a : b);
  }
}

final class UserJoined extends ServerMessage {
  const UserJoined(this.nick);
  final String nick;
}

final class UserLeft extends ServerMessage {
  const UserLeft(this.nick, this.reason);
  final String nick;
  final String reason;
}

final class TypingNotice extends ServerMessage {
  const TypingNotice(this.from, this.to);
  final String from;
  final String? to;
}

final class PingReceived extends ServerMessage {
  const PingReceived(this.t);
  final Object? t;
}

final class PongReceived extends ServerMessage {
  const PongReceived(this.t);
  final Object? t;
}

final class UploadReady extends ServerMessage {
  const UploadReady({
    required this.upload,
    required this.cid,
    required this.offset,
    required this.size,
    required this.chunk,
  });
  final String upload;
  final String cid;
  final int offset;
  final int size;
  final int chunk;
}

final class DownloadStart extends ServerMessage {
  const DownloadStart({
    required this.file,
    required this.name,
    required this.size,
    required this.sha256,
    required this.mime,
    required this.offset,
  });
  final String file;
  final String name;
  final int size;
  final String sha256;
  final String mime;
  final int offset;
}

final class FileChunk extends ServerMessage {
  const FileChunk(this.file, this.offset, this.bytes);
  final String file;
  final int offset;
  final Uint8List bytes;
}

final class DownloadEnd extends ServerMessage {
  const DownloadEnd(this.file, this.size);
  final String file;
  final int size;
}

final class ServerError extends ServerMessage {
  const ServerError({
    required this.code,
    required this.wireCode,
    required this.message,
    required this.ref,
    required this.fatal,
  });
  final ErrorCode code;

  /// The code exactly as sent, also when this client does not know it.
  final String wireCode;
  final String message;

  /// The `cid`, `upload` or `file` the error is about.
  final String? ref;
  final bool fatal;
}

final class ByeReceived extends ServerMessage {
  const ByeReceived(this.reason, [this.message = '']);

  /// `shutdown`, `replaced`, `kicked` or `banned` ([ByeReason]).
  final String reason;

  /// Why, for `kicked` and `banned` (a sentence to show).
  final String message;
}

/// A type this client version does not know (newer server): ignored.
final class UnknownMessage extends ServerMessage {
  const UnknownMessage(this.type, this.header);
  final String type;
  final Json header;
}

/// A known type whose fields do not match PROTOCOL.md: ignored.
final class MalformedMessage extends ServerMessage {
  const MalformedMessage(this.header, this.reason);
  final Json header;
  final String reason;
}

int _int(Object? value, int fallback) => value is num ? value.toInt() : fallback;

/// A positive number of seconds (fractions allowed) as a Duration.
Duration _seconds(Object? value, Duration fallback) => value is num && value > 0
    ? Duration(microseconds: (value * Duration.microsecondsPerSecond).round())
    : fallback;

/// A number of minutes (0 or more) as a Duration; null when absent.
Duration? _window(Object? value) => value is num && value >= 0
    ? Duration(microseconds: (value * Duration.microsecondsPerSecond).round())
    : null;

/// A history list: `msg` entries and, in resumed ranges, `change` entries.
List<HistoryItem> _items(Object? list) => [
      for (final item in list as List<Object?>? ?? const <Object?>[])
        HistoryItem.fromJson(item as Map<String, Object?>),
    ];
