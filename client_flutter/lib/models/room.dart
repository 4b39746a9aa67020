// The room as the operator set it up (PROTOCOL.md §10, "The room"): shown in
// the chat's app bar.

class RoomInfo {
  const RoomInfo({this.name = '', this.topic = '', this.locked = false});

  /// `welcome.room`, or a `room` message; anything else is an unnamed room.
  factory RoomInfo.fromJson(Object? json) {
    if (json is! Map<String, Object?>) return const RoomInfo();
    return RoomInfo(
      name: json['name'] as String? ?? '',
      topic: json['topic'] as String? ?? '',
      locked: json['locked'] == true,
    );
  }

  /// Both may be empty (at most 80 and 300 characters).
  final String name;
  final String topic;

  /// No new nicks may join (people already in stay).
  final bool locked;
}
