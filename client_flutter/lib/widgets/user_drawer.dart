// The people: the public room, then everyone online or with a direct
// conversation, with unread counts (mentions of me counted apart, "@2 · 5").
// Picking one opens that conversation.

import 'package:flutter/material.dart';

import '../models/chat_message.dart';

class UserDrawer extends StatelessWidget {
  const UserDrawer({
    super.key,
    required this.me,
    required this.serverLabel,
    required this.peers,
    required this.onlineUsers,
    required this.onlineCount,
    required this.selectedPeer,
    required this.unreadIn,
    required this.onSelect,
    this.mentionsIn,
  });

  final String me;
  final String serverLabel;

  /// Everyone to list (online or with a conversation), without me.
  final List<String> peers;
  final List<String> onlineUsers;

  /// Everyone online, me included (the list is capped in big rooms).
  final int onlineCount;

  /// The open conversation; null for the public room.
  final String? selectedPeer;
  final int Function(String? peer) unreadIn;

  /// Unread messages that mention me, among [unreadIn]'s.
  final int Function(String? peer)? mentionsIn;
  final ValueChanged<String?> onSelect;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    return Drawer(
      child: SafeArea(
        child: ListView(
          children: [
            ListTile(
              title: Text('Signed in as $me', style: theme.textTheme.titleMedium),
              subtitle: Text(serverLabel),
            ),
            const Divider(),
            ListTile(
              leading: const Icon(Icons.forum_outlined),
              title: const Text('Everyone'),
              selected: selectedPeer == null,
              trailing: _unreadBadge(unreadIn(null), mentionsIn?.call(null) ?? 0),
              onTap: () => onSelect(null),
            ),
            Padding(
              padding: const EdgeInsets.fromLTRB(16, 16, 16, 4),
              child: Text(
                '$onlineCount online',
                style: theme.textTheme.labelLarge,
              ),
            ),
            for (final peer in peers)
              ListTile(
                leading: CircleAvatar(child: Text(peer.characters.first.toUpperCase())),
                title: Text(peer),
                subtitle: Text(_isOnline(peer) ? 'online' : 'offline'),
                selected: selectedPeer != null && sameNick(peer, selectedPeer!),
                trailing: _unreadBadge(unreadIn(peer), mentionsIn?.call(peer) ?? 0),
                onTap: () => onSelect(peer),
              ),
          ],
        ),
      ),
    );
  }

  bool _isOnline(String peer) => onlineUsers.any((u) => sameNick(u, peer));

  static Widget? _unreadBadge(int count, int mentions) {
    if (count == 0) return null;
    if (mentions == 0) return Badge.count(count: count);
    return Badge(label: Text(unreadLabel(count, mentions)));
  }
}

/// "5", or "@2 · 5" when 2 of the 5 unread messages mention me.
String unreadLabel(int count, int mentions) => mentions > 0 ? '@$mentions · $count' : '$count';
