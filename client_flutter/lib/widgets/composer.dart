// Text field with attach and send buttons. Off while the organiser has
// muted this user, with the sentence in its place.

import 'package:flutter/material.dart';

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
    return Padding(
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
  }
}
