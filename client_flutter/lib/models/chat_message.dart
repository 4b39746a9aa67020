// What the history is made of (PROTOCOL.md §4 and §10): stored chat messages
// (`msg`) and the changes to them (`change`: delete, edit, clear), both with
// ids in the same sequence.

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
  });

  factory ChatMessage.fromJson(Map<String, Object?> json) {
    final file = json['file'];
    final edited = json['edited'];
    final deleted = json['deleted'];
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

  /// The message as the `delete` change leaves it: "its text becomes "",
  /// its file goes, and it gains deleted" (PROTOCOL.md §10).
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
  ChatMessage editedTo(String newText, DateTime when) => ChatMessage(
        id: id,
        ts: ts,
        from: from,
        text: newText,
        cid: cid,
        uid: uid,
        to: to,
        file: file,
        edited: when,
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
      };
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
  });

  factory MessageChange.fromJson(Map<String, Object?> json) {
    final ts = DateTime.parse(json['ts'] as String);
    final edited = json['edited'];
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
    );
  }

  @override
  final int id;
  final DateTime ts;

  /// `"delete"`, `"edit"` or `"clear"` (a newer kind is ignored).
  final String kind;

  /// `"sender"` or `"operator"`.
  final String by;

  /// The id of the message changed; null for `clear`.
  final int? target;

  /// For `edit`: the new text, and the `ts` of the edit.
  final String? text;
  final DateTime? edited;

  bool get isDelete => kind == 'delete';
  bool get isEdit => kind == 'edit';
  bool get isClear => kind == 'clear';
}

/// "Two nicks are the same when their NFKC forms match case-insensitively"
/// — PROTOCOL.md §2. Dart has neither NFKC nor casefold; lower case agrees
/// with the server for the nicks people type. Only used for display and
/// grouping: whose message it is goes by uid.
String nickKey(String nick) => nick.toLowerCase();

bool sameNick(String a, String b) => nickKey(a) == nickKey(b);
