// What the history is made of (PROTOCOL.md §4, §10 and §12): stored chat
// messages (`msg`, with their quote, mentions and reactions) and the changes
// to them (`change`: delete, edit, clear, react), both with ids in the same
// sequence.

import '../services/protocol.dart' show ChangeKind, WireField;
import 'shared_file.dart';

/// One entry of a history: a message or a change, in id order.
sealed class HistoryItem {
  const HistoryItem();

  /// Server id: strictly increasing, never reused (messages and changes
  /// share the sequence).
  int get id;

  /// A history entry from its JSON: a `change`, else a `msg`.
  static HistoryItem fromJson(Map<String, Object?> json) =>
      json['type'] == 'change' ? MessageChange.fromJson(json) : ChatMessage.fromJson(json);
}

/// A stored chat message, as the server sends it (`msg`, PROTOCOL.md §4).
class ChatMessage extends HistoryItem {
  const ChatMessage({
    required this.id,
    required this.ts,
    required this.from,
    required this.text,
    required this.cid,
    this.uid,
    this.to,
    this.file,
    this.edited,
    this.deleted,
    this.replyTo,
    this.mentions = const [],
    this.reactions = const {},
  });

  factory ChatMessage.fromJson(Map<String, Object?> json) {
    final file = json['file'];
    final edited = json['edited'];
    final deleted = json['deleted'];
    final replyTo = json[WireField.replyTo];
    final mentions = json[WireField.mentions];
    return ChatMessage(
      id: (json['id'] as num).toInt(),
      ts: DateTime.parse(json['ts'] as String),
      from: json['from'] as String,
      text: json['text'] as String? ?? '',
      cid: json['cid'] as String? ?? '',
      uid: (json['uid'] as num?)?.toInt(),
      to: json['to'] as String?,
      file: file is Map<String, Object?> && deleted == null ? SharedFile.fromJson(file) : null,
      edited: edited is String ? DateTime.tryParse(edited) : null,
      deleted: deleted is String ? deleted : null,
      replyTo: replyTo is Map<String, Object?> ? ReplyQuote.fromJson(replyTo) : null,
      mentions: [
        if (mentions is List<Object?>)
          for (final nick in mentions)
            if (nick is String) nick,
      ],
      reactions: parseReactions(json[WireField.reactions]),
    );
  }

  @override
  final int id;

  /// Server time (UTC).
  final DateTime ts;
  final String from;
  final String text;

  /// The sender's client id; the sender's own copy is its acknowledgement.
  final String cid;

  /// The sender's identity: "a client's own messages are those whose uid
  /// equals welcome.uid" (PROTOCOL.md §2). Null only in messages stored
  /// before identities existed.
  final int? uid;

  /// Recipient of a direct message; null for a message to everyone.
  final String? to;
  final SharedFile? file;

  /// When the text was last edited (`msg.edited`), if it was.
  final DateTime? edited;

  /// Who removed the message (`"sender"` or `"operator"`), if it was: its
  /// text is empty and its file gone, and "message removed" shows instead.
  final String? deleted;

  /// The message this one answers, as the server quoted it (`reply_to`).
  final ReplyQuote? replyTo;

  /// Nicks the server found as `@nick` in the text (display spelling).
  final List<String> mentions;

  /// Emoji → uids who reacted with it, in the order they reacted; only
  /// emoji with at least one uid.
  final Map<String, List<int>> reactions;

  bool get isDirect => to != null;
  bool get isDeleted => deleted != null;
  bool get isEdited => edited != null;

  /// The conversation this message belongs to: null for the public room,
  /// else the other person's nick key (see [nickKey]). [mine] says whether
  /// this user sent it (by uid, see ChatClient.isMine), so the other person
  /// is the recipient.
  String? conversation({required bool mine}) {
    final recipient = to;
    if (recipient == null) return null;
    return nickKey(mine ? recipient : from);
  }

  /// Whether [nick] is among the mentions (nicks compare as in §2).
  bool mentionsNick(String nick) => mentions.any((m) => sameNick(m, nick));

  /// The message as the `delete` change leaves it: "its text becomes "",
  /// its file goes, and it gains deleted" (PROTOCOL.md §10). A tombstone
  /// has nothing to react to or quote, so those go too.
  ChatMessage removedBy(String by) => ChatMessage(
        id: id,
        ts: ts,
        from: from,
        text: '',
        cid: cid,
        uid: uid,
        to: to,
        deleted: by,
      );

  /// The message with the text of an `edit` change.
  ChatMessage editedTo(String newText, DateTime when) =>
      _copy(text: newText, edited: when);

  /// The message with the whole `reactions` of a `react` change.
  ChatMessage withReactions(Map<String, List<int>> newReactions) =>
      _copy(reactions: newReactions);

  /// The message with its quote changed (the original was edited or removed).
  ChatMessage withQuote(ReplyQuote quote) => _copy(replyTo: quote);

  ChatMessage _copy({
    String? text,
    DateTime? edited,
    ReplyQuote? replyTo,
    Map<String, List<int>>? reactions,
  }) =>
      ChatMessage(
        id: id,
        ts: ts,
        from: from,
        text: text ?? this.text,
        cid: cid,
        uid: uid,
        to: to,
        file: file,
        edited: edited ?? this.edited,
        deleted: deleted,
        replyTo: replyTo ?? this.replyTo,
        mentions: mentions,
        reactions: reactions ?? this.reactions,
      );

  Map<String, Object?> toJson() => {
        'type': 'msg',
        'id': id,
        'ts': ts.toUtc().toIso8601String(),
        'from': from,
        'uid': ?uid,
        'text': text,
        'cid': cid,
        'to': ?to,
        'file': ?file?.toJson(),
        'edited': ?edited?.toUtc().toIso8601String(),
        'deleted': ?deleted,
        'reply_to': ?replyTo?.toJson(),
        if (mentions.isNotEmpty) 'mentions': mentions,
        if (reactions.isNotEmpty) 'reactions': reactions,
      };
}

/// "The first 200 characters of the original's text" (§12): characters are
/// code points, as the server counts them, not UTF-16 units.
const int quoteLength = 200;

/// `msg.reply_to`: the quote of the message a reply answers.
class ReplyQuote {
  const ReplyQuote({
    required this.id,
    required this.from,
    required this.text,
    this.deleted = false,
  });

  factory ReplyQuote.fromJson(Map<String, Object?> json) => ReplyQuote(
        id: (json['id'] as num).toInt(),
        from: json['from'] as String? ?? '',
        text: json['text'] as String? ?? '',
        deleted: json['deleted'] == true,
      );

  /// The id of the original message.
  final int id;
  final String from;

  /// Its text (cut at [quoteLength] characters), or its file name.
  final String text;

  /// The original was removed: the quote says so, with no text.
  final bool deleted;

  /// The quote once its original is removed: `{"id", "from", "text": "",
  /// "deleted": true}`.
  ReplyQuote removed() => ReplyQuote(id: id, from: from, text: '', deleted: true);

  /// The quote once its original is edited: its text follows.
  ReplyQuote editedTo(String newText) => ReplyQuote(
        id: id,
        from: from,
        text: String.fromCharCodes(newText.runes.take(quoteLength)),
        deleted: deleted,
      );

  Map<String, Object?> toJson() => {
        'id': id,
        'from': from,
        'text': text,
        if (deleted) 'deleted': true,
      };
}

/// `reactions` (in `msg` and in a `react` change): emoji → uids. Anything
/// that is not a list of ints is skipped, and so are empty lists ("only
/// emojis with at least one uid").
Map<String, List<int>> parseReactions(Object? json) {
  if (json is! Map<String, Object?>) return const {};
  final reactions = <String, List<int>>{};
  for (final MapEntry(key: emoji, value: uids) in json.entries) {
    if (uids is! List<Object?>) continue;
    final list = [for (final uid in uids) if (uid is num) uid.toInt()];
    if (list.isNotEmpty) reactions[emoji] = List<int>.unmodifiable(list);
  }
  return Map<String, List<int>>.unmodifiable(reactions);
}

/// A change to the history (`change`, PROTOCOL.md §4 and §10). A client
/// applies it to the message it holds with `id == target`, and ignores it
/// when it holds none; `clear` drops everything with a smaller id.
class MessageChange extends HistoryItem {
  const MessageChange({
    required this.id,
    required this.ts,
    required this.kind,
    required this.by,
    this.target,
    this.text,
    this.edited,
    this.uid,
    this.emoji,
    this.reactions,
  });

  factory MessageChange.fromJson(Map<String, Object?> json) {
    final ts = DateTime.parse(json['ts'] as String);
    final edited = json['edited'];
    final isReact = json['change'] == ChangeKind.react;
    return MessageChange(
      id: (json['id'] as num).toInt(),
      ts: ts,
      kind: json['change'] as String,
      by: json['by'] as String? ?? 'sender',
      target: (json['target'] as num?)?.toInt(),
      text: json['text'] as String?,
      // "for edit: text (the new text) and edited (its ts)".
      edited: (edited is String ? DateTime.tryParse(edited) : null) ??
          (json['change'] == 'edit' ? ts : null),
      uid: (json[WireField.uid] as num?)?.toInt(),
      emoji: json[WireField.emoji] as String?,
      // "the target's whole reactions object after the change, {} when none
      // is left": absent only in kinds other than react.
      reactions: isReact ? parseReactions(json[WireField.reactions]) : null,
    );
  }

  @override
  final int id;
  final DateTime ts;

  /// `"delete"`, `"edit"`, `"clear"` or `"react"` (a newer kind is ignored).
  final String kind;

  /// `"sender"` or `"operator"`.
  final String by;

  /// The id of the message changed; null for `clear`.
  final int? target;

  /// For `edit`: the new text, and the `ts` of the edit.
  final String? text;
  final DateTime? edited;

  /// For `react`: who reacted, with which emoji (`""`: removed theirs), and
  /// the target's reactions after the change.
  final int? uid;
  final String? emoji;
  final Map<String, List<int>>? reactions;

  bool get isDelete => kind == 'delete';
  bool get isEdit => kind == 'edit';
  bool get isClear => kind == 'clear';
  bool get isReact => kind == ChangeKind.react;
}

/// "Two nicks are the same when their NFKC forms match case-insensitively"
/// — PROTOCOL.md §2. Dart has neither NFKC nor casefold; lower case agrees
/// with the server for the nicks people type. Only used for display and
/// grouping: whose message it is goes by uid.
String nickKey(String nick) => nick.toLowerCase();

bool sameNick(String a, String b) => nickKey(a) == nickKey(b);
