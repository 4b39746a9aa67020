// One message: own messages on the right in the primary colour, others on
// the left with the sender's name at the start of a group, time at its end.
// A removed message keeps its place as "Message removed"; an edited one is
// marked "edited". Every stored message has a menu (message_actions.dart); a
// reply shows the quote of its original, a message that mentions me is
// highlighted, and reactions show as chips under the bubble.

import 'package:flutter/gestures.dart';
import 'package:flutter/material.dart';

import '../models/chat_message.dart';
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
    this.myReaction,
    this.onToggleReaction,
    this.onOpenQuote,
  });

  final ChatEntry entry;

  /// Opens a web link tapped in the text.
  final ValueChanged<Uri>? onOpenLink;
  final String timeText;

  /// A file card drawn inside the bubble.
  final Widget? attachment;
  final VoidCallback? onRetry;
  final VoidCallback? onDiscard;

  /// What the menu of the message offers; empty: no menu.
  final List<MessageAction> actions;
  final ValueChanged<MessageAction>? onAction;

  /// My reaction on this message (its chip is highlighted).
  final String? myReaction;

  /// A reaction chip (or an emoji of the menu) was tapped: mine again
  /// takes it back, another one replaces mine. Null: chips do nothing.
  final ValueChanged<String>? onToggleReaction;

  /// The quote was tapped: show the original.
  final VoidCallback? onOpenQuote;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    final scheme = theme.colorScheme;
    final mine = entry.mine;
    // A message that mentions me is drawn in the tertiary container colours
    // (with their own text colour, so the contrast holds in both schemes).
    final mention = entry.mentionsMe && !mine;
    final background = mine
        ? scheme.primaryContainer
        : mention
            ? scheme.tertiaryContainer
            : scheme.surfaceContainerHighest;
    final foreground = mine
        ? scheme.onPrimaryContainer
        : mention
            ? scheme.onTertiaryContainer
            : scheme.onSurface;
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
    final quote = entry.quote;
    // Outlined: the message a search or a quote led to, and mentions of me.
    final outline = entry.highlighted
        ? scheme.primary
        : mention
            ? scheme.tertiary
            : null;
    Widget bubble = DecoratedBox(
      decoration: BoxDecoration(
        color: failed ? scheme.errorContainer : background,
        borderRadius: radius,
        border: outline == null ? null : Border.all(color: outline, width: 2),
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
            if (removed == null && quote != null)
              QuoteBlock(quote: quote, foreground: foreground, onTap: onOpenQuote),
            if (removed == null && attachment != null) attachment!,
            if (removed == null && entry.text.isNotEmpty)
              MessageText(
                text: entry.text,
                style: TextStyle(color: foreground),
                linkColor: mine || mention ? foreground : scheme.primary,
                onOpenLink: onOpenLink,
                // A long press opens the menu, which has "Copy text";
                // selection would take the long press.
                selectable: !withMenu,
              ),
            if (removed == null && entry.edited) Text('edited', style: small),
          ],
        ),
      ),
    );
    if (mention) bubble = Semantics(container: true, label: 'Mentions you', child: bubble);
    if (withMenu && onAction != null) {
      bubble = MessageActions(
        actions: actions,
        onSelected: onAction,
        onReact: onToggleReaction,
        myReaction: myReaction,
        buttonAfter: !mine,
        child: bubble,
      );
    }
    final reactions = removed == null ? entry.reactions : const <String, List<int>>{};

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
              if (reactions.isNotEmpty)
                Padding(
                  padding: const EdgeInsets.only(top: 2),
                  child: ReactionChips(
                    reactions: reactions,
                    mine: myReaction,
                    onTap: onToggleReaction,
                  ),
                ),
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

/// The quote of the message a reply answers: who, and the start of what
/// they said (or "Message removed"); tapping it shows the original.
class QuoteBlock extends StatelessWidget {
  const QuoteBlock({super.key, required this.quote, required this.foreground, this.onTap});

  final ReplyQuote quote;
  final Color foreground;
  final VoidCallback? onTap;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    final small = theme.textTheme.bodySmall?.copyWith(color: foreground.withValues(alpha: 0.8));
    final removed = quote.deleted;
    return Padding(
      padding: const EdgeInsets.only(bottom: 4),
      child: Semantics(
        button: onTap != null && !removed,
        label: removed ? 'Reply to a removed message' : 'Reply to ${quote.from}',
        child: InkWell(
          onTap: removed ? null : onTap,
          borderRadius: BorderRadius.circular(6),
          child: DecoratedBox(
            decoration: BoxDecoration(
              border: Border(left: BorderSide(color: foreground.withValues(alpha: 0.6), width: 3)),
            ),
            child: Padding(
              padding: const EdgeInsets.fromLTRB(8, 2, 4, 2),
              child: Column(
                crossAxisAlignment: CrossAxisAlignment.start,
                mainAxisSize: MainAxisSize.min,
                children: [
                  Text(quote.from, style: small?.copyWith(fontWeight: FontWeight.bold)),
                  Text(
                    removed ? 'Message removed' : quote.text,
                    maxLines: 2,
                    overflow: TextOverflow.ellipsis,
                    style: removed ? small?.copyWith(fontStyle: FontStyle.italic) : small,
                  ),
                ],
              ),
            ),
          ),
        ),
      ),
    );
  }
}

/// Reactions under a bubble: one chip per emoji with its count; mine is
/// highlighted, and a tap toggles it.
class ReactionChips extends StatelessWidget {
  const ReactionChips({super.key, required this.reactions, this.mine, this.onTap});

  final Map<String, List<int>> reactions;
  final String? mine;
  final ValueChanged<String>? onTap;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    final scheme = theme.colorScheme;
    final onTap = this.onTap;
    return Wrap(
      spacing: 4,
      runSpacing: 4,
      children: [
        for (final MapEntry(key: emoji, value: uids) in reactions.entries)
          // One node per chip: its text, its tap, and whether it is mine.
          MergeSemantics(
            child: Semantics(
              button: onTap != null,
              selected: emoji == mine,
              child: Material(
                color: emoji == mine ? scheme.secondaryContainer : scheme.surfaceContainerHigh,
                shape: StadiumBorder(
                  side: BorderSide(color: emoji == mine ? scheme.secondary : scheme.outlineVariant),
                ),
                child: InkWell(
                  customBorder: const StadiumBorder(),
                  onTap: onTap == null ? null : () => onTap(emoji),
                  child: Padding(
                    padding: const EdgeInsets.symmetric(horizontal: 8, vertical: 2),
                    child: Text('$emoji ${uids.length}', style: theme.textTheme.labelMedium),
                  ),
                ),
              ),
            ),
          ),
      ],
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
