// The menu of one's own message: Copy, Edit (text only) and Delete. A long
// press opens it as a bottom sheet (phones); where a mouse is the usual
// pointer (desktop, browsers), a "more" button also shows beside the bubble
// while the pointer is over it. Only for messages the server stored: an
// unacknowledged one has nothing to change yet.

import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';

enum MessageAction { copy, edit, delete }

/// Icon and label of each action, in the sheet and in the menu.
const Map<MessageAction, (IconData, String)> _looks = {
  MessageAction.copy: (Icons.copy, 'Copy text'),
  MessageAction.edit: (Icons.edit_outlined, 'Edit'),
  MessageAction.delete: (Icons.delete_outline, 'Delete'),
};

/// Whether a mouse is the usual pointer here: then the hover button shows.
bool get mouseFirst =>
    kIsWeb ||
    defaultTargetPlatform == TargetPlatform.linux ||
    defaultTargetPlatform == TargetPlatform.macOS ||
    defaultTargetPlatform == TargetPlatform.windows;

class OwnMessageActions extends StatefulWidget {
  const OwnMessageActions({
    super.key,
    required this.actions,
    required this.onSelected,
    required this.child,
  });

  /// What may be done with this message, in menu order.
  final List<MessageAction> actions;
  final ValueChanged<MessageAction> onSelected;

  /// The bubble.
  final Widget child;

  @override
  State<OwnMessageActions> createState() => _OwnMessageActionsState();
}

class _OwnMessageActionsState extends State<OwnMessageActions> {
  bool _hovering = false;

  Future<void> _openSheet() async {
    final chosen = await showModalBottomSheet<MessageAction>(
      context: context,
      builder: (context) => SafeArea(
        child: Column(
          mainAxisSize: MainAxisSize.min,
          children: [
            for (final action in widget.actions)
              ListTile(
                leading: Icon(_looks[action]!.$1),
                title: Text(_looks[action]!.$2),
                onTap: () => Navigator.of(context).pop(action),
              ),
          ],
        ),
      ),
    );
    if (chosen != null && mounted) widget.onSelected(chosen);
  }

  void _hover(bool hovering) {
    if (hovering != _hovering) setState(() => _hovering = hovering);
  }

  @override
  Widget build(BuildContext context) {
    final bubble = GestureDetector(onLongPress: _openSheet, child: widget.child);
    if (!mouseFirst) return bubble;
    return MouseRegion(
      onEnter: (_) => _hover(true),
      onExit: (_) => _hover(false),
      child: Row(
        mainAxisSize: MainAxisSize.min,
        children: [
          // The space stays when hidden, so the bubble does not move.
          Visibility(
            visible: _hovering,
            maintainSize: true,
            maintainAnimation: true,
            maintainState: true,
            child: PopupMenuButton<MessageAction>(
              tooltip: 'Message actions',
              icon: const Icon(Icons.more_horiz),
              iconSize: 18,
              onSelected: widget.onSelected,
              itemBuilder: (context) => [
                for (final action in widget.actions)
                  PopupMenuItem<MessageAction>(
                    value: action,
                    child: ListTile(
                      leading: Icon(_looks[action]!.$1),
                      title: Text(_looks[action]!.$2),
                      contentPadding: EdgeInsets.zero,
                    ),
                  ),
              ],
            ),
          ),
          Flexible(child: bubble),
        ],
      ),
    );
  }
}

/// Asks before a message is removed for everyone; true to remove it.
Future<bool> confirmDelete(BuildContext context) async {
  final confirmed = await showDialog<bool>(
    context: context,
    builder: (context) => AlertDialog(
      title: const Text('Delete this message?'),
      content: const Text('It is removed for everyone in the chat.'),
      actions: [
        TextButton(onPressed: () => Navigator.of(context).pop(false), child: const Text('Cancel')),
        FilledButton(onPressed: () => Navigator.of(context).pop(true), child: const Text('Delete')),
      ],
    ),
  );
  return confirmed ?? false;
}

/// The new text of a message, or null when the person cancelled.
class EditMessageDialog extends StatefulWidget {
  const EditMessageDialog({super.key, required this.text});

  /// The text as it is now.
  final String text;

  @override
  State<EditMessageDialog> createState() => _EditMessageDialogState();
}

class _EditMessageDialogState extends State<EditMessageDialog> {
  late final TextEditingController _controller = TextEditingController(text: widget.text);

  @override
  void dispose() {
    _controller.dispose();
    super.dispose();
  }

  void _save() => Navigator.of(context).pop(_controller.text);

  @override
  Widget build(BuildContext context) {
    return AlertDialog(
      title: const Text('Edit message'),
      content: TextField(
        controller: _controller,
        autofocus: true,
        minLines: 1,
        maxLines: 6,
        decoration: const InputDecoration(labelText: 'Message'),
      ),
      actions: [
        TextButton(onPressed: () => Navigator.of(context).pop(), child: const Text('Cancel')),
        FilledButton(onPressed: _save, child: const Text('Save')),
      ],
    );
  }
}
