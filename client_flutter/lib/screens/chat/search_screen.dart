// Search (PROTOCOL.md §12): a text field, the matching messages newest
// first, "More results" while older matches exist; opened from a direct
// conversation, a chip keeps the search to it (`search.with`). Tapping a
// result closes the screen with it; the chat then opens its conversation at
// that message.

import 'package:flutter/material.dart';

import '../../models/chat_message.dart';
import 'chat_view_model.dart';

class SearchScreen extends StatefulWidget {
  const SearchScreen({super.key, required this.viewModel});

  final ChatViewModel viewModel;

  @override
  State<SearchScreen> createState() => _SearchScreenState();
}

class _SearchScreenState extends State<SearchScreen> {
  late final TextEditingController _query =
      TextEditingController(text: widget.viewModel.searchState.query);

  /// The direct conversation the search was opened from, if any.
  late final String? _peer = widget.viewModel.peer;
  late bool _onlyPeer = _peer != null;

  @override
  void dispose() {
    _query.dispose();
    super.dispose();
  }

  void _submit() =>
      widget.viewModel.search(_query.text, withNick: _onlyPeer ? _peer : null);

  void _setOnlyPeer(bool only) {
    setState(() => _onlyPeer = only);
    if (_query.text.trim().isNotEmpty) _submit();
  }

  @override
  Widget build(BuildContext context) {
    return Scaffold(
      appBar: AppBar(
        title: TextField(
          controller: _query,
          autofocus: true,
          textInputAction: TextInputAction.search,
          onSubmitted: (_) => _submit(),
          decoration: const InputDecoration(
            hintText: 'Search messages',
            border: InputBorder.none,
          ),
        ),
        actions: [
          IconButton(tooltip: 'Search', onPressed: _submit, icon: const Icon(Icons.search)),
        ],
      ),
      body: Column(
        crossAxisAlignment: CrossAxisAlignment.stretch,
        children: [
          if (_peer case final peer?)
            Padding(
              padding: const EdgeInsets.fromLTRB(12, 8, 12, 0),
              child: Align(
                alignment: Alignment.centerLeft,
                child: FilterChip(
                  label: Text('Only with $peer'),
                  selected: _onlyPeer,
                  onSelected: _setOnlyPeer,
                ),
              ),
            ),
          Expanded(
            child: ListenableBuilder(
              listenable: widget.viewModel,
              builder: (context, _) => _results(context, widget.viewModel.searchState),
            ),
          ),
        ],
      ),
    );
  }

  Widget _results(BuildContext context, SearchState state) {
    final theme = Theme.of(context);
    if (state.idle) {
      return Center(
        child: Text('Words must start a word of the message: "home link" finds "homework link".',
            textAlign: TextAlign.center, style: theme.textTheme.bodyMedium),
      );
    }
    if (state.results.isEmpty) {
      if (state.loading) return const Center(child: CircularProgressIndicator());
      return Center(child: Text(state.error ?? 'No messages found.', style: theme.textTheme.bodyMedium));
    }
    final viewModel = widget.viewModel;
    return ListView.separated(
      itemCount: state.results.length + 1,
      separatorBuilder: (context, index) => const Divider(height: 1),
      itemBuilder: (context, index) {
        if (index == state.results.length) {
          return Padding(
            padding: const EdgeInsets.all(12),
            child: Center(
              child: state.loading
                  ? const SizedBox.square(dimension: 24, child: CircularProgressIndicator(strokeWidth: 2))
                  : state.error != null
                      ? Text(state.error!, style: TextStyle(color: theme.colorScheme.error))
                      : state.hasMore
                          ? TextButton(onPressed: viewModel.moreResults, child: const Text('More results'))
                          : Text('No more results.', style: theme.textTheme.bodySmall),
            ),
          );
        }
        final message = state.results[index];
        return ListTile(
          title: Text(_textOf(message), maxLines: 3, overflow: TextOverflow.ellipsis),
          subtitle: Text('${_where(message)} · ${_when(message)}'),
          onTap: () => Navigator.of(context).pop(message),
        );
      },
    );
  }

  /// A file message matches on its caption and its file name: show both.
  static String _textOf(ChatMessage message) {
    final file = message.file;
    if (file == null) return message.text;
    return message.text.isEmpty ? file.name : '${file.name} — ${message.text}';
  }

  /// "bob", or "bob → alice" for a direct message.
  String _where(ChatMessage message) {
    final to = message.to;
    return to == null ? message.from : '${message.from} → $to';
  }

  static String _when(ChatMessage message) {
    final local = message.ts.toLocal();
    return '${dayLabel(local)} ${clockTime(local)}';
  }
}
