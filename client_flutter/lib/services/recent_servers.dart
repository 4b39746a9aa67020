// The servers this device connected to, newest first, so reconnecting later
// is one tap. Stored as JSON through a small key-value interface (backed by
// shared_preferences in the app, by a map in tests).

import 'dart:convert';

import '../models/server_address.dart';

abstract interface class KeyValueStore {
  Future<String?> getString(String key);
  Future<void> setString(String key, String value);
}

class RecentServer {
  const RecentServer({required this.address, required this.nick, required this.lastUsed});

  factory RecentServer.fromJson(Map<String, Object?> json) => RecentServer(
        address: ServerAddress.fromJson(json['address'] as Map<String, Object?>),
        nick: json['nick'] as String? ?? '',
        lastUsed: DateTime.tryParse(json['last_used'] as String? ?? '') ?? DateTime(2000),
      );

  final ServerAddress address;
  final String nick;
  final DateTime lastUsed;

  Map<String, Object?> toJson() => {
        'address': address.toJson(),
        'nick': nick,
        'last_used': lastUsed.toUtc().toIso8601String(),
      };
}

class RecentServers {
  RecentServers(this._store);

  static const String storageKey = 'recent_servers_v1';
  static const int maxEntries = 8;

  final KeyValueStore _store;

  Future<List<RecentServer>> load() async {
    final raw = await _store.getString(storageKey);
    if (raw == null) return const [];
    try {
      final list = jsonDecode(raw);
      if (list is! List<dynamic>) return const [];
      return [
        for (final item in list)
          if (item is Map<String, dynamic>) RecentServer.fromJson(item),
      ];
    } on FormatException {
      return const []; // a corrupt entry is not worth a crash
    }
  }

  /// Moves [address] to the top (same host and port replace an older entry).
  Future<List<RecentServer>> remember(ServerAddress address, String nick) async {
    final entry = RecentServer(address: address, nick: nick, lastUsed: DateTime.now());
    final others = (await load()).where((r) => !_sameServer(r.address, address));
    final updated = [entry, ...others].take(maxEntries).toList();
    await _save(updated);
    return updated;
  }

  Future<List<RecentServer>> forget(ServerAddress address) async {
    final updated = (await load()).where((r) => !_sameServer(r.address, address)).toList();
    await _save(updated);
    return updated;
  }

  Future<void> _save(List<RecentServer> servers) =>
      _store.setString(storageKey, jsonEncode([for (final s in servers) s.toJson()]));

  static bool _sameServer(ServerAddress a, ServerAddress b) => a.host == b.host && a.port == b.port;
}
