// One message: own messages on the right in the primary colour, others on
// the left with the sender's name at the start of a group, time at its end.
// A removed message keeps its place as "Message removed"; an edited one is
// marked "edited". Own stored messages have a menu (message_actions.dart).

import 'package:flutter/gestures.dart';
import 'package:flutter/material.dart';

import '../models/links.dart';
import '../screens/chat/chat_view_model.dart';
import '../services/chat_client.dart';
import 'message_actions.dart';

/// Bubbles never take the whole width, so left and right stay readable.
const double _maxWidthFraction = 0.8;

class MessageBubble extends StatelessWidget {
  const MessageBubble({
    super.key,
    required this.entry,
    required this.timeText,
    this.attachment,
    this.onRetry,
    this.onDiscard,
    this.onOpenLink,
    this.actions = const [],
    this.onAction,
  });

  final ChatEntry entry;

  /// Opens a web link tapped in the text.
  final ValueChanged<Uri>? onOpenLink;
  final String timeText;

  /// A file card drawn inside the bubble.
  final Widget? attachment;
  final VoidCallback? onRetry;
  final VoidCallback? onDiscard;

  /// What the menu of an own message offers; empty: no menu.
  final List<MessageAction> actions;
  final ValueChanged<MessageAction>? onAction;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    final scheme = theme.colorScheme;
    final mine = entry.mine;
    final background = mine ? scheme.primaryContainer : scheme.surfaceContainerHighest;
    final foreground = mine ? scheme.onPrimaryContainer : scheme.onSurface;
    const round = Radius.circular(18);
    const tight = Radius.circular(4);
    final radius = BorderRadius.only(
      topLeft: !mine && !entry.firstOfGroup ? tight : round,
      bottomLeft: !mine && !entry.lastOfGroup ? tight : round,
      topRight: mine && !entry.firstOfGroup ? tight : round,
      bottomRight: mine && !entry.lastOfGroup ? tight : round,
    );
    final pending = entry.pending;
    final failed = pending?.state == PendingState.failed;
    final removed = entry.removedLabel;
    final onAction = this.onAction;
    final withMenu = removed == null && actions.isNotEmpty && onAction != null;
    final small = theme.textTheme.labelSmall?.copyWith(
      color: foreground.withValues(alpha: 0.7),
      fontStyle: FontStyle.italic,
    );
    Widget bubble = DecoratedBox(
      decoration: BoxDecoration(
        color: failed ? scheme.errorContainer : background,
        borderRadius: radius,
      ),
      child: Padding(
        padding: const EdgeInsets.symmetric(horizontal: 12, vertical: 8),
        child: Column(
          crossAxisAlignment: CrossAxisAlignment.start,
          mainAxisSize: MainAxisSize.min,
          children: [
            if (removed != null)
              Row(
                mainAxisSize: MainAxisSize.min,
                children: [
                  Icon(Icons.block, size: 14, color: small?.color),
                  const SizedBox(width: 4),
                  Flexible(child: Text(removed, style: theme.textTheme.bodyMedium?.merge(small))),
                ],
              ),
            if (removed == null && attachment != null) attachment!,
            if (removed == null && entry.text.isNotEmpty)
              MessageText(
                text: entry.text,
                style: TextStyle(color: foreground),
                linkColor: mine ? scheme.onPrimaryContainer : scheme.primary,
                onOpenLink: onOpenLink,
                // A long press opens the menu of an own message, which
                // has "Copy text"; selection would take the long press.
                selectable: !withMenu,
              ),
            if (removed == null && entry.edited) Text('edited', style: small),
          ],
        ),
      ),
    );
    if (withMenu && onAction != null) {
      bubble = OwnMessageActions(actions: actions, onSelected: onAction, child: bubble);
    }

    return Padding(
      padding: EdgeInsets.only(top: entry.firstOfGroup ? 8 : 2),
      child: Align(
        alignment: mine ? Alignment.centerRight : Alignment.centerLeft,
        child: ConstrainedBox(
          constraints: BoxConstraints(
            maxWidth: MediaQuery.sizeOf(context).width * _maxWidthFraction,
          ),
          child: Column(
            crossAxisAlignment: mine ? CrossAxisAlignment.end : CrossAxisAlignment.start,
            children: [
              if (entry.firstOfGroup && !mine)
                Padding(
                  padding: const EdgeInsets.only(left: 12, bottom: 2),
                  child: Text(
                    entry.from,
                    style: theme.textTheme.labelMedium?.copyWith(color: scheme.primary),
                  ),
                ),
              bubble,
              if (entry.lastOfGroup || pending != null)
                Padding(
                  padding: const EdgeInsets.fromLTRB(8, 2, 8, 0),
                  child: _Footer(
                    timeText: timeText,
                    sending: pending != null && !failed,
                    failure: failed ? pending?.error?.message ?? 'Not sent' : null,
                    onRetry: onRetry,
                    onDiscard: onDiscard,
                  ),
                ),
            ],
          ),
        ),
      ),
    );
  }
}

class _Footer extends StatelessWidget {
  const _Footer({
    required this.timeText,
    required this.sending,
    required this.failure,
    required this.onRetry,
    required this.onDiscard,
  });

  final String timeText;
  final bool sending;
  final String? failure;
  final VoidCallback? onRetry;
  final VoidCallback? onDiscard;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    final small = theme.textTheme.labelSmall;
    final failure = this.failure;
    if (failure != null) {
      return Wrap(
        crossAxisAlignment: WrapCrossAlignment.center,
        spacing: 4,
        children: [
          Icon(Icons.error_outline, size: 14, color: theme.colorScheme.error),
          Text(failure, style: small?.copyWith(color: theme.colorScheme.error)),
          TextButton(onPressed: onRetry, child: const Text('Retry')),
          TextButton(onPressed: onDiscard, child: const Text('Delete')),
        ],
      );
    }
    return Row(
      mainAxisSize: MainAxisSize.min,
      children: [
        Text(timeText, style: small),
        if (sending) ...[
          const SizedBox(width: 4),
          Tooltip(
            message: 'Waiting for the server',
            child: Icon(Icons.schedule, size: 12, color: small?.color),
          ),
        ],
      ],
    );
  }
}

/// The text of a message; web links in it are underlined and open on tap.
class MessageText extends StatefulWidget {
  const MessageText({
    super.key,
    required this.text,
    required this.style,
    required this.linkColor,
    this.onOpenLink,
    this.selectable = true,
  });

  final String text;
  final TextStyle style;
  final Color linkColor;
  final ValueChanged<Uri>? onOpenLink;

  /// Whether the text can be selected (a long press selects a word).
  final bool selectable;

  @override
  State<MessageText> createState() => _MessageTextState();
}

class _MessageTextState extends State<MessageText> {
  final List<TapGestureRecognizer> _recognizers = [];

  @override
  void dispose() {
    _disposeRecognizers();
    super.dispose();
  }

  void _disposeRecognizers() {
    for (final recognizer in _recognizers) {
      recognizer.dispose();
    }
    _recognizers.clear();
  }

  @override
  Widget build(BuildContext context) {
    final pieces = splitLinks(widget.text);
    final open = widget.onOpenLink;
    if (open == null || !pieces.any((p) => p.isLink)) {
      if (!widget.selectable) return Text(widget.text, style: widget.style);
      return SelectableText(widget.text, style: widget.style);
    }
    _disposeRecognizers();
    final linkStyle = widget.style.copyWith(
      color: widget.linkColor,
      decoration: TextDecoration.underline,
      decorationColor: widget.linkColor,
    );
    return Text.rich(TextSpan(
      style: widget.style,
      children: [
        for (final piece in pieces)
          if (piece.url case final url?)
            TextSpan(text: piece.text, style: linkStyle, recognizer: _tap(() => open(url)))
          else
            TextSpan(text: piece.text),
      ],
    ));
  }

  TapGestureRecognizer _tap(VoidCallback onTap) {
    final recognizer = TapGestureRecognizer()..onTap = onTap;
    _recognizers.add(recognizer);
    return recognizer;
  }
}
