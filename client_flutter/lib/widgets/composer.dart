// Text field with attach and send buttons. Off while the organiser has
// muted this user, with the sentence in its place. Above it: the quote of
// the message being answered (with a cancel button), and after an `@` the
// online nicks that fit, to tap.

import 'package:flutter/material.dart';

import '../models/chat_message.dart';

/// The `@word` being typed just before the cursor, without the `@`; null
/// when the cursor is not in one. An `@` inside a word (an e-mail address)
/// does not count.
String? mentionPrefixAt(String text, int cursor) {
  if (cursor < 0 || cursor > text.length) return null;
  final match = RegExp(r'(?:^|\s)@([^\s@]*)$').firstMatch(text.substring(0, cursor));
  return match?.group(1);
}

/// [text] with the `@word` before [cursor] replaced by `@nick ` ; the new
/// text and the cursor after it.
(String, int) insertMention(String text, int cursor, String nick) {
  final prefix = mentionPrefixAt(text, cursor) ?? '';
  final start = cursor - prefix.length - 1;
  final before = text.substring(0, start);
  final inserted = '@$nick ';
  return ('$before$inserted${text.substring(cursor)}', start + inserted.length);
}

class Composer extends StatelessWidget {
  const Composer({
    super.key,
    required this.controller,
    required this.hint,
    required this.onSend,
    required this.onAttach,
    required this.onChanged,
    this.focusNode,
    this.offline = false,
    this.disabledText,
    this.replyQuote,
    this.onCancelReply,
    this.suggestions = const [],
    this.onSuggestion,
  });

  final TextEditingController controller;

  /// Stays focused after a send, so the keyboard stays open.
  final FocusNode? focusNode;
  final String hint;
  final VoidCallback onSend;
  final VoidCallback onAttach;
  final ValueChanged<String> onChanged;

  /// Messages are still accepted offline (queued); files wait too.
  final bool offline;

  /// When set, nothing can be written or sent (muted), and this says why.
  final String? disabledText;

  /// The message being answered, shown above the field.
  final ReplyQuote? replyQuote;
  final VoidCallback? onCancelReply;

  /// Nicks to mention, offered while an `@word` is typed.
  final List<String> suggestions;
  final ValueChanged<String>? onSuggestion;

  @override
  Widget build(BuildContext context) {
    final disabledText = this.disabledText;
    final enabled = disabledText == null;
    final String hintText;
    if (disabledText != null) {
      hintText = disabledText;
    } else {
      hintText = offline ? '$hint (will be sent when back online)' : hint;
    }
    final quote = replyQuote;
    final onSuggestion = this.onSuggestion;
    final theme = Theme.of(context);
    // Keyed, and always in the same Column: when the quote or suggestions
    // come and go, the field keeps its element, so its focus (the keyboard)
    // and its text selection stay.
    final field = Padding(
      key: const ValueKey('composer-field'),
      padding: const EdgeInsets.fromLTRB(8, 4, 8, 8),
      child: Row(
        crossAxisAlignment: CrossAxisAlignment.end,
        children: [
          IconButton(
            tooltip: 'Send a file',
            onPressed: enabled ? onAttach : null,
            icon: const Icon(Icons.attach_file),
          ),
          Expanded(
            child: TextField(
              controller: controller,
              focusNode: focusNode,
              enabled: enabled,
              minLines: 1,
              maxLines: 5,
              textInputAction: TextInputAction.send,
              onChanged: onChanged,
              // Without onEditingComplete, the send action unfocuses the
              // field and the keyboard closes after every message.
              onEditingComplete: () {},
              onSubmitted: (_) => onSend(),
              decoration: InputDecoration(
                hintText: hintText,
                hintMaxLines: 2,
                border: const OutlineInputBorder(
                  borderRadius: BorderRadius.all(Radius.circular(24)),
                ),
                isDense: true,
                contentPadding: const EdgeInsets.symmetric(horizontal: 16, vertical: 10),
              ),
            ),
          ),
          const SizedBox(width: 4),
          IconButton.filled(
            tooltip: 'Send',
            onPressed: enabled ? onSend : null,
            icon: const Icon(Icons.send),
          ),
        ],
      ),
    );
    return Column(
      mainAxisSize: MainAxisSize.min,
      crossAxisAlignment: CrossAxisAlignment.stretch,
      children: [
        if (enabled && suggestions.isNotEmpty && onSuggestion != null)
          SingleChildScrollView(
            scrollDirection: Axis.horizontal,
            padding: const EdgeInsets.symmetric(horizontal: 12),
            child: Row(
              children: [
                for (final nick in suggestions)
                  Padding(
                    padding: const EdgeInsets.only(right: 6),
                    child: ActionChip(
                      avatar: const Icon(Icons.alternate_email, size: 16),
                      label: Text(nick),
                      tooltip: 'Mention $nick',
                      onPressed: () => onSuggestion(nick),
                    ),
                  ),
              ],
            ),
          ),
        if (enabled && quote != null)
          Padding(
            padding: const EdgeInsets.fromLTRB(16, 4, 8, 0),
            child: Row(
              children: [
                Icon(Icons.reply, size: 18, color: theme.colorScheme.primary),
                const SizedBox(width: 8),
                Expanded(
                  child: Column(
                    crossAxisAlignment: CrossAxisAlignment.start,
                    mainAxisSize: MainAxisSize.min,
                    children: [
                      Text('Replying to ${quote.from}',
                          style: theme.textTheme.labelMedium?.copyWith(color: theme.colorScheme.primary)),
                      Text(quote.text, maxLines: 1, overflow: TextOverflow.ellipsis,
                          style: theme.textTheme.bodySmall),
                    ],
                  ),
                ),
                IconButton(
                  tooltip: 'Cancel reply',
                  onPressed: onCancelReply,
                  icon: const Icon(Icons.close),
                ),
              ],
            ),
          ),
        field,
      ],
    );
  }
}
