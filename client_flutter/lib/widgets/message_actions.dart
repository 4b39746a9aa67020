// The menu of a message: React (a row of emoji), Reply, Copy, and on one's
// own messages Edit (text only) and Delete. A long press opens it as a
// bottom sheet (phones); where a mouse is the usual pointer (desktop,
// browsers), a "more" button also shows beside the bubble while the pointer
// is over it. Only for messages the server stored: an unacknowledged one has
// nothing to answer or change yet.

import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';

import '../services/protocol.dart' show quickReactions;

enum MessageAction { react, reply, copy, edit, delete }

/// Icon and label of each action, in the sheet and in the menu.
const Map<MessageAction, (IconData, String)> _looks = {
  MessageAction.react: (Icons.add_reaction_outlined, 'React'),
  MessageAction.reply: (Icons.reply, 'Reply'),
  MessageAction.copy: (Icons.copy, 'Copy text'),
  MessageAction.edit: (Icons.edit_outlined, 'Edit'),
  MessageAction.delete: (Icons.delete_outline, 'Delete'),
};

/// The six emoji offered to react with, as one row of buttons; [onPicked]
/// gets the emoji tapped. [current] (my reaction) is drawn selected.
class ReactionPicker extends StatelessWidget {
  const ReactionPicker({super.key, required this.onPicked, this.current});

  final ValueChanged<String> onPicked;
  final String? current;

  @override
  Widget build(BuildContext context) {
    final scheme = Theme.of(context).colorScheme;
    return Padding(
      padding: const EdgeInsets.symmetric(horizontal: 8, vertical: 8),
      child: Row(
        mainAxisAlignment: MainAxisAlignment.spaceEvenly,
        children: [
          for (final emoji in quickReactions)
            IconButton(
              tooltip: emoji == current ? 'React with $emoji (yours)' : 'React with $emoji',
              style: IconButton.styleFrom(
                backgroundColor: emoji == current ? scheme.secondaryContainer : null,
              ),
              onPressed: () => onPicked(emoji),
              icon: Text(emoji, style: const TextStyle(fontSize: 24)),
            ),
        ],
      ),
    );
  }
}

/// Asks for an emoji (from the mouse menu's "React"); null when dismissed.
Future<String?> pickReaction(BuildContext context, {String? current}) =>
    showModalBottomSheet<String>(
      context: context,
      builder: (context) => SafeArea(
        child: ReactionPicker(
          current: current,
          onPicked: (emoji) => Navigator.of(context).pop(emoji),
        ),
      ),
    );

/// Whether a mouse is the usual pointer here: then the hover button shows.
bool get mouseFirst =>
    kIsWeb ||
    defaultTargetPlatform == TargetPlatform.linux ||
    defaultTargetPlatform == TargetPlatform.macOS ||
    defaultTargetPlatform == TargetPlatform.windows;

class MessageActions extends StatefulWidget {
  const MessageActions({
    super.key,
    required this.actions,
    required this.onSelected,
    required this.child,
    this.onReact,
    this.myReaction,
    this.buttonAfter = false,
  });

  /// What may be done with this message, in menu order.
  final List<MessageAction> actions;

  /// An action chosen; [MessageAction.react] from the mouse menu, which has
  /// no room for the emoji row (the screen then asks with [pickReaction]).
  final ValueChanged<MessageAction> onSelected;

  /// An emoji tapped in the long-press sheet's row.
  final ValueChanged<String>? onReact;

  /// My reaction on this message, drawn selected in the row.
  final String? myReaction;

  /// The hover button goes after the bubble (others' messages, on the
  /// left) rather than before it (mine, on the right).
  final bool buttonAfter;

  /// The bubble.
  final Widget child;

  @override
  State<MessageActions> createState() => _MessageActionsState();
}

class _MessageActionsState extends State<MessageActions> {
  bool _hovering = false;

  Future<void> _openSheet() async {
    final react = widget.onReact != null && widget.actions.contains(MessageAction.react);
    // The sheet answers with a MessageAction, or with the emoji tapped.
    final chosen = await showModalBottomSheet<Object>(
      context: context,
      builder: (context) => SafeArea(
        child: Column(
          mainAxisSize: MainAxisSize.min,
          children: [
            if (react)
              ReactionPicker(
                current: widget.myReaction,
                onPicked: (emoji) => Navigator.of(context).pop(emoji),
              ),
            for (final action in widget.actions)
              if (action != MessageAction.react || !react)
                ListTile(
                  leading: Icon(_looks[action]!.$1),
                  title: Text(_looks[action]!.$2),
                  onTap: () => Navigator.of(context).pop(action),
                ),
          ],
        ),
      ),
    );
    if (!mounted) return;
    switch (chosen) {
      case final MessageAction action:
        widget.onSelected(action);
      case final String emoji:
        widget.onReact?.call(emoji);
    }
  }

  void _hover(bool hovering) {
    if (hovering != _hovering) setState(() => _hovering = hovering);
  }

  @override
  Widget build(BuildContext context) {
    final bubble = GestureDetector(onLongPress: _openSheet, child: widget.child);
    if (!mouseFirst) return bubble;
    // The space stays when hidden, so the bubble does not move.
    final button = Visibility(
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
    );
    return MouseRegion(
      onEnter: (_) => _hover(true),
      onExit: (_) => _hover(false),
      child: Row(
        mainAxisSize: MainAxisSize.min,
        children: [
          if (!widget.buttonAfter) button,
          Flexible(child: bubble),
          if (widget.buttonAfter) button,
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
