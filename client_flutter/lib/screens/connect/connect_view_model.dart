// State of the connect screen: recent servers, the address being entered,
// and the first connection attempt.

import 'package:flutter/foundation.dart';

import '../../models/result.dart';
import '../../models/server_address.dart';
import '../../services/recent_servers.dart';
import '../chat/chat_view_model.dart';

/// "nick empty after trimming, longer than 32 characters" — PROTOCOL.md §6.
const int maxNickLength = 32;

class ConnectViewModel extends ChangeNotifier {
  ConnectViewModel({
    required RecentServers recentServers,
    required ChatViewModel Function(ServerAddress address, String nick) newSession,
  })  : _recentServers = recentServers,
        _newSession = newSession;

  final RecentServers _recentServers;
  final ChatViewModel Function(ServerAddress address, String nick) _newSession;

  List<RecentServer> _recent = const [];
  bool _connecting = false;
  String? _error;
  bool _nickRefused = false;

  List<RecentServer> get recent => _recent;
  bool get connecting => _connecting;

  /// Why the last attempt failed, for people.
  String? get error => _error;

  /// The last attempt was refused because of the nick (it belongs to
  /// another device, the room is locked to new nicks, or it is invalid):
  /// the screen puts the cursor in the nick field to pick another.
  bool get nickRefused => _nickRefused;

  /// The nick used last time, to prefill the field.
  String get lastNick => _recent.isEmpty ? '' : _recent.first.nick;

  /// The token remembered for [address]'s host and port, if any.
  String? savedToken(ServerAddress address) {
    for (final server in _recent) {
      if (server.address.host == address.host && server.address.port == address.port) {
        return server.address.token;
      }
    }
    return null;
  }

  Future<void> load() async {
    _recent = await _recentServers.load();
    notifyListeners();
  }

  /// Checks a nick as the server will, so the common mistakes show at once.
  static String? validateNick(String nick) {
    final trimmed = nick.trim();
    if (trimmed.isEmpty) return 'Choose a nick.';
    if (trimmed.length > maxNickLength) return 'At most $maxNickLength characters.';
    if (trimmed.runes.any((r) => r < 0x20 || r == 0x7f)) return 'No control characters.';
    return null;
  }

  /// Connects and, once welcomed, remembers the server. The returned chat
  /// session is online and owned by the caller. It is created before the
  /// connection starts, so it sees every event from the welcome on.
  Future<Result<ChatViewModel>> connect(ServerAddress address, String nick) async {
    if (_connecting) return const Err(AppError('busy', 'Already connecting.'));
    final nickError = validateNick(nick);
    if (nickError != null) return _fail(AppError('nick_invalid', nickError));
    _connecting = true;
    _error = null;
    _nickRefused = false;
    notifyListeners();
    final session = _newSession(address, nick.trim());
    final result = await session.start();
    _connecting = false;
    switch (result) {
      case Ok(:final value):
        _recent = await _recentServers.remember(address, value.nick);
        notifyListeners();
        return Ok(session);
      case Err(:final error):
        session.dispose();
        return _fail(error);
    }
  }

  Future<void> forget(RecentServer server) async {
    _recent = await _recentServers.forget(server.address);
    notifyListeners();
  }

  Result<ChatViewModel> _fail(AppError error) {
    _error = describeError(error);
    _nickRefused = nickCodes.contains(error.code);
    notifyListeners();
    return Err(error);
  }
}

/// Refusals before `welcome` that another nick may get past: "after a
/// nick_owned, nick_taken, nick_invalid ... the client may send hello again"
/// (PROTOCOL.md §2); `room_locked` lets in only nicks this device used here.
const Set<String> nickCodes = {'nick_owned', 'nick_taken', 'nick_invalid', 'room_locked'};

/// A sentence for people about a connection error. The server's own
/// sentence where it names the reason (whose nick it is, until when a ban
/// lasts).
String describeError(AppError error) => switch (error.code) {
      'auth_failed' => 'The pairing token was refused. Scan the QR code again.',
      'nick_taken' => 'Someone online already uses this nick.',
      'nick_owned' => error.message.isNotEmpty
          ? error.message
          : 'This nick belongs to another device. Pick another one.',
      'room_locked' => error.message.isNotEmpty
          ? error.message
          : 'The room is locked: only people who were here before may join. Pick the nick you used then.',
      'banned' => error.message.isNotEmpty ? error.message : 'The organiser banned this device.',
      'nick_invalid' => error.message,
      'proto_unsupported' => 'This app and the server speak different protocol versions.',
      'server_full' => 'The server is full. Try again later.',
      'unreachable' || 'timeout' || 'bad_address' => error.message,
      _ => error.message,
    };
