// Text field with attach and send buttons.

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

  @override
  Widget build(BuildContext context) {
    return Padding(
      padding: const EdgeInsets.fromLTRB(8, 4, 8, 8),
      child: Row(
        crossAxisAlignment: CrossAxisAlignment.end,
        children: [
          IconButton(
            tooltip: 'Send a file',
            onPressed: onAttach,
            icon: const Icon(Icons.attach_file),
          ),
          Expanded(
            child: TextField(
              controller: controller,
              focusNode: focusNode,
              minLines: 1,
              maxLines: 5,
              textInputAction: TextInputAction.send,
              onChanged: onChanged,
              // Without onEditingComplete, the send action unfocuses the
              // field and the keyboard closes after every message.
              onEditingComplete: () {},
              onSubmitted: (_) => onSend(),
              decoration: InputDecoration(
                hintText: offline ? '$hint (will be sent when back online)' : hint,
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
            onPressed: onSend,
            icon: const Icon(Icons.send),
          ),
        ],
      ),
    );
  }
}
