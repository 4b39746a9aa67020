// A stored chat message, as the server sends it (`msg`, PROTOCOL.md §4).

import 'shared_file.dart';

class ChatMessage {
  const ChatMessage({
    required this.id,
    required this.ts,
    required this.from,
    required this.text,
    required this.cid,
    this.to,
    this.file,
  });

  factory ChatMessage.fromJson(Map<String, Object?> json) {
    final file = json['file'];
    return ChatMessage(
      id: (json['id'] as num).toInt(),
      ts: DateTime.parse(json['ts'] as String),
      from: json['from'] as String,
      text: json['text'] as String? ?? '',
      cid: json['cid'] as String? ?? '',
      to: json['to'] as String?,
      file: file is Map<String, Object?> ? SharedFile.fromJson(file) : null,
    );
  }

  /// Server id: strictly increasing, never reused.
  final int id;

  /// Server time (UTC).
  final DateTime ts;
  final String from;
  final String text;

  /// The sender's client id; the sender's own copy is its acknowledgement.
  final String cid;

  /// Recipient of a direct message; null for a message to everyone.
  final String? to;
  final SharedFile? file;

  bool get isDirect => to != null;

  /// The conversation this message belongs to, seen by [me]: null for the
  /// public room, else the other person's nick key (see [nickKey]).
  String? conversationFor(String me) {
    final recipient = to;
    if (recipient == null) return null;
    return nickKey(sameNick(from, me) ? recipient : from);
  }

  Map<String, Object?> toJson() => {
        'type': 'msg',
        'id': id,
        'ts': ts.toUtc().toIso8601String(),
        'from': from,
        'text': text,
        'cid': cid,
        'to': ?to,
        'file': ?file?.toJson(),
      };
}

/// "Nick comparison is case-insensitive (str.casefold)" — PROTOCOL.md §2.
/// Dart has no casefold; lower case agrees with it outside a few scripts.
String nickKey(String nick) => nick.toLowerCase();

bool sameNick(String a, String b) => nickKey(a) == nickKey(b);
