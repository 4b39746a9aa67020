// Small rows of the message list: day separator, "new messages" line,
// "load older" row (also "load the messages in between", above a gap left by
// opening an old search result), a note (the history was cleared) and the
// typing line.

import 'package:flutter/material.dart';

class DayDivider extends StatelessWidget {
  const DayDivider({super.key, required this.label});

  final String label;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    return Padding(
      padding: const EdgeInsets.symmetric(vertical: 12),
      child: Center(
        child: DecoratedBox(
          decoration: BoxDecoration(
            color: theme.colorScheme.surfaceContainerHighest,
            borderRadius: BorderRadius.circular(12),
          ),
          child: Padding(
            padding: const EdgeInsets.symmetric(horizontal: 10, vertical: 4),
            child: Text(label, style: theme.textTheme.labelSmall),
          ),
        ),
      ),
    );
  }
}

class UnreadDivider extends StatelessWidget {
  const UnreadDivider({super.key});

  @override
  Widget build(BuildContext context) {
    final color = Theme.of(context).colorScheme.primary;
    return Padding(
      padding: const EdgeInsets.symmetric(vertical: 8),
      child: Row(
        children: [
          Expanded(child: Divider(color: color)),
          Padding(
            padding: const EdgeInsets.symmetric(horizontal: 8),
            child: Text('New messages', style: TextStyle(color: color, fontSize: 12)),
          ),
          Expanded(child: Divider(color: color)),
        ],
      ),
    );
  }
}

class OlderMessagesRow extends StatelessWidget {
  const OlderMessagesRow({
    super.key,
    required this.loading,
    required this.onLoad,
    this.label = 'Load older messages',
  });

  final bool loading;
  final VoidCallback onLoad;
  final String label;

  @override
  Widget build(BuildContext context) {
    return Padding(
      padding: const EdgeInsets.all(8),
      child: Center(
        child: loading
            ? const SizedBox.square(dimension: 24, child: CircularProgressIndicator(strokeWidth: 2))
            : TextButton(onPressed: onLoad, child: Text(label)),
      ),
    );
  }
}

/// A line of the room's own, such as "The organiser cleared the history."
class NoteRow extends StatelessWidget {
  const NoteRow({super.key, required this.text});

  final String text;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    return Padding(
      padding: const EdgeInsets.symmetric(vertical: 12),
      child: Center(
        child: Text(
          text,
          textAlign: TextAlign.center,
          style: theme.textTheme.bodySmall?.copyWith(fontStyle: FontStyle.italic),
        ),
      ),
    );
  }
}

class TypingLine extends StatelessWidget {
  const TypingLine({super.key, required this.text});

  final String text;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    return Padding(
      padding: const EdgeInsets.fromLTRB(16, 2, 16, 2),
      child: Align(
        alignment: Alignment.centerLeft,
        child: Text(
          text,
          style: theme.textTheme.bodySmall?.copyWith(fontStyle: FontStyle.italic),
        ),
      ),
    );
  }
}
