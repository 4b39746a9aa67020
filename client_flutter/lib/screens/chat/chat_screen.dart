// The chat: messages of one conversation (the room or a direct one), the
// people in a drawer, transfers above the composer; the room's name and
// topic in the app bar; react, reply and copy on every message, edit and
// delete on one's own; `@` suggestions in the composer; search, whose result
// opens here at that message.

import 'dart:async';
import 'dart:math' as math;

import 'package:flutter/material.dart';
import 'package:flutter/services.dart';
import 'package:url_launcher/url_launcher.dart';

import '../../models/chat_message.dart';
import '../../models/result.dart';
import '../../models/shared_file.dart';
import '../../services/chat_client.dart';
import '../../widgets/composer.dart';
import '../../widgets/connection_banner.dart';
import '../../widgets/chat_rows.dart';
import '../../widgets/file_tile.dart';
import '../../widgets/message_actions.dart';
import '../../widgets/message_bubble.dart';
import '../../widgets/transfer_panel.dart';
import '../../widgets/user_drawer.dart';
import 'chat_view_model.dart';
import 'image_viewer.dart';
import 'search_screen.dart';

/// Within this many pixels of the oldest message, older ones are fetched.
const double _loadOlderThreshold = 400;

/// Frames spent looking for a row to scroll to before giving up.
const int _scrollAttempts = 60;

class ChatScreen extends StatefulWidget {
  const ChatScreen({super.key, required this.viewModel});

  final ChatViewModel viewModel;

  @override
  State<ChatScreen> createState() => _ChatScreenState();
}

class _ChatScreenState extends State<ChatScreen> {
  final _text = TextEditingController();
  final _focus = FocusNode();
  final _scroll = ScrollController();
  late final AppLifecycleListener _lifecycle;
  StreamSubscription<String>? _notices;

  // Scrolling to a message (a search result, a quote's original): the row
  // of [_scrollTarget] carries [_targetKey] once built; [_builtRows] are the
  // indexes built in the last frame, which say which way to go from here.
  int? _scrollTarget;
  final GlobalKey _targetKey = GlobalKey();
  final List<int> _builtRows = [];

  ChatViewModel get _viewModel => widget.viewModel;

  @override
  void initState() {
    super.initState();
    _lifecycle = AppLifecycleListener(
      onStateChange: (state) => _viewModel.setVisible(state == AppLifecycleState.resumed),
    );
    _notices = _viewModel.notices.listen(_showNotice);
    _scroll.addListener(_onScroll);
  }

  @override
  void dispose() {
    _lifecycle.dispose();
    _notices?.cancel();
    _scroll.dispose();
    _text.dispose();
    _focus.dispose();
    super.dispose();
  }

  void _onScroll() {
    // The list is reversed: the oldest message is at the maximum extent.
    final position = _scroll.position;
    if (position.pixels >= position.maxScrollExtent - _loadOlderThreshold) {
      _viewModel.loadOlder();
    }
  }

  void _showNotice(String text) {
    if (!mounted) return;
    ScaffoldMessenger.of(context).showSnackBar(SnackBar(content: Text(text)));
  }

  /// Sends the text; it is cleared only once accepted (a refused one, over
  /// 16 KiB for instance, stays to be shortened). The field keeps the focus,
  /// so the keyboard stays open for the next message.
  void _send() {
    final text = _text.text;
    if (text.trim().isEmpty) return;
    if (_viewModel.send(text) is Ok<void>) _text.clear();
    _focus.requestFocus();
  }

  Future<void> _attach() async {
    if (!_viewModel.canPickFiles) return;
    final photos = await showModalBottomSheet<bool>(
      context: context,
      builder: (context) => SafeArea(
        child: Column(
          mainAxisSize: MainAxisSize.min,
          children: [
            ListTile(
              leading: const Icon(Icons.photo_library_outlined),
              title: const Text('Photos and videos'),
              onTap: () => Navigator.of(context).pop(true),
            ),
            ListTile(
              leading: const Icon(Icons.folder_open),
              title: const Text('Files'),
              onTap: () => Navigator.of(context).pop(false),
            ),
          ],
        ),
      ),
    );
    if (photos == null) return;
    await _viewModel.pickAndSend(photos: photos);
  }

  Future<void> _openLink(Uri url) async {
    if (!await launchUrl(url, mode: LaunchMode.externalApplication)) {
      _showNotice('Cannot open $url.');
    }
  }

  Future<void> _open(SharedFile file) async {
    final url = _viewModel.browserUrlOf(file);
    if (url != null) {
      if (!await launchUrl(url)) _showNotice('Cannot open ${file.name}.');
      return;
    }
    await _viewModel.openFile(file);
  }

  void _view(SharedFile file) {
    final viewModel = _viewModel;
    final path = viewModel.localPathOf(file);
    final url = viewModel.browserUrlOf(file, inline: true);
    if (path == null && url == null) {
      viewModel.download(file);
      return;
    }
    final actions = viewModel.hasFileActions;
    Navigator.of(context).push(MaterialPageRoute<void>(
      builder: (_) => ImageViewerScreen(
        file: file,
        path: path,
        url: path == null ? url : null,
        headers: viewModel.fileRequestHeaders,
        onShare: actions ? () => viewModel.shareFile(file) : null,
        onSaveToGallery:
            actions && viewModel.canSaveToGallery ? () => viewModel.saveToGallery(file) : null,
        onSaveAs: actions ? () => viewModel.saveFileAs(file) : null,
      ),
    ));
  }

  /// The menu of a stored message: what it offers (empty: no menu).
  List<MessageAction> _actionsFor(ChatEntry entry) {
    final message = entry.message;
    if (message == null || message.isDeleted) return const [];
    return [
      if (_viewModel.canReact(message)) MessageAction.react,
      if (_viewModel.canReply(message)) MessageAction.reply,
      if (message.text.isNotEmpty) MessageAction.copy,
      if (_viewModel.canEdit(message)) MessageAction.edit,
      if (_viewModel.canDelete(message)) MessageAction.delete,
    ];
  }

  Future<void> _onAction(ChatMessage message, MessageAction action) async {
    switch (action) {
      case MessageAction.react:
        final emoji = await pickReaction(context, current: _viewModel.myReaction(message));
        if (emoji != null) _viewModel.toggleReaction(message, emoji);
      case MessageAction.reply:
        _viewModel.startReply(message);
        _focus.requestFocus();
      case MessageAction.copy:
        await Clipboard.setData(ClipboardData(text: message.text));
        _showNotice('Copied.');
      case MessageAction.edit:
        final text = await showDialog<String>(
          context: context,
          builder: (_) => EditMessageDialog(text: message.text),
        );
        if (text == null || text.trim().isEmpty || text == message.text) return;
        _viewModel.editMessage(message.id, text);
      case MessageAction.delete:
        if (await confirmDelete(context)) _viewModel.deleteMessage(message.id);
    }
  }

  /// Opens the search; a result tapped there opens here, at that message.
  Future<void> _openSearch() async {
    final result = await Navigator.of(context).push<ChatMessage>(
      MaterialPageRoute<ChatMessage>(builder: (_) => SearchScreen(viewModel: _viewModel)),
    );
    if (result == null || !mounted) return;
    if (await _viewModel.openMessage(result)) {
      _scrollTo(result.id);
    } else {
      _showNotice('That message is no longer in the history.');
    }
  }

  Future<void> _openQuote(ReplyQuote quote) async {
    if (await _viewModel.openQuote(quote)) _scrollTo(quote.id);
  }

  /// Scrolls until the row of message [id] is built, then centres it. The
  /// list builds rows lazily, so a row far away has no context yet: jump to
  /// where it should be (from its index), then step towards it.
  void _scrollTo(int id) {
    setState(() => _scrollTarget = id);
    var attempts = 0;
    void step(Duration _) {
      if (!mounted || _scrollTarget != id || !_scroll.hasClients) return;
      final row = _targetKey.currentContext;
      if (row != null) {
        unawaited(Scrollable.ensureVisible(row, alignment: 0.5, duration: const Duration(milliseconds: 250)));
        return;
      }
      if (++attempts > _scrollAttempts) return;
      final entries = _viewModel.entries;
      final index = entries.indexWhere((e) => e.message?.id == id);
      if (index < 0) return;
      final position = _scroll.position;
      final double next;
      if (attempts == 1) {
        // First guess: rows of equal height.
        next = position.maxScrollExtent * index / entries.length;
      } else {
        // Index 0 is the newest row, at offset 0 of the reversed list: a
        // target older than every row just built is further up.
        final built = _builtRows;
        final newestBuilt = built.isEmpty ? 0 : built.reduce(math.min);
        final stride = position.viewportDimension * 0.8;
        next = position.pixels + (built.isNotEmpty && index < newestBuilt ? -stride : stride);
      }
      _builtRows.clear();
      _scroll.jumpTo(math.min(math.max(next, position.minScrollExtent), position.maxScrollExtent));
      WidgetsBinding.instance.addPostFrameCallback(step);
    }

    WidgetsBinding.instance.addPostFrameCallback(step);
  }

  void _insertMention(String nick) {
    final value = _text.value;
    final (text, cursor) = insertMention(value.text, value.selection.baseOffset, nick);
    _text.value = TextEditingValue(text: text, selection: TextSelection.collapsed(offset: cursor));
    _focus.requestFocus();
  }

  @override
  Widget build(BuildContext context) {
    return ListenableBuilder(
      listenable: _viewModel,
      builder: (context, _) {
        final viewModel = _viewModel;
        final peer = viewModel.peer;
        return Scaffold(
          appBar: AppBar(
            title: Column(
              crossAxisAlignment: CrossAxisAlignment.start,
              children: [
                Text(viewModel.title, overflow: TextOverflow.ellipsis),
                Text(
                  viewModel.subtitle,
                  style: Theme.of(context).textTheme.bodySmall,
                  maxLines: 1,
                  overflow: TextOverflow.ellipsis,
                ),
              ],
            ),
            actions: [
              IconButton(
                tooltip: 'Search',
                onPressed: _openSearch,
                icon: const Icon(Icons.search),
              ),
              Builder(
                builder: (context) => IconButton(
                  tooltip: 'People and conversations',
                  onPressed: () => Scaffold.of(context).openEndDrawer(),
                  icon: Badge(
                    isLabelVisible: viewModel.unreadElsewhere > 0,
                    label: Text(unreadLabel(viewModel.unreadElsewhere, viewModel.unreadMentionsElsewhere)),
                    child: const Icon(Icons.people_outline),
                  ),
                ),
              ),
            ],
          ),
          endDrawer: UserDrawer(
            me: viewModel.me,
            serverLabel: viewModel.serverLabel,
            peers: viewModel.drawerPeers,
            onlineUsers: viewModel.otherUsers,
            onlineCount: viewModel.onlineCount,
            selectedPeer: peer,
            unreadIn: viewModel.unreadIn,
            mentionsIn: viewModel.unreadMentionsIn,
            onSelect: (selected) {
              Navigator.of(context).pop(); // close the drawer
              viewModel.openConversation(selected);
            },
          ),
          body: SafeArea(
            child: Column(
              children: [
                ConnectionBanner(
                  status: viewModel.status,
                  error: viewModel.statusError,
                  onRetry: viewModel.retryNow,
                  stoppedByOthers: viewModel.stoppedByOthers,
                  onRejoin: viewModel.canRejoin ? viewModel.rejoin : null,
                ),
                Expanded(child: _messageList(viewModel)),
                if (viewModel.typingText != null) TypingLine(text: viewModel.typingText!),
                TransferPanel(
                  transfers: viewModel.activeUploads,
                  onCancel: viewModel.cancelTransfer,
                  onDismiss: viewModel.dismissTransfer,
                ),
                // Rebuilt as the text changes too, for the `@` suggestions.
                ValueListenableBuilder<TextEditingValue>(
                  valueListenable: _text,
                  builder: (context, value, _) {
                    final prefix = mentionPrefixAt(value.text, value.selection.baseOffset);
                    return Composer(
                      controller: _text,
                      focusNode: _focus,
                      hint: peer == null ? 'Message everyone' : 'Message $peer',
                      onSend: _send,
                      onAttach: _attach,
                      onChanged: viewModel.composing,
                      offline: viewModel.status != ConnectionStatus.online,
                      disabledText: viewModel.muted ? viewModel.mutedText : null,
                      replyQuote: viewModel.replyQuote,
                      onCancelReply: viewModel.cancelReply,
                      suggestions: prefix == null ? const [] : viewModel.mentionCandidates(prefix),
                      onSuggestion: _insertMention,
                    );
                  },
                ),
              ],
            ),
          ),
        );
      },
    );
  }

  Widget _messageList(ChatViewModel viewModel) {
    final entries = viewModel.entries;
    final note = viewModel.historyNote;
    if (entries.isEmpty && !viewModel.hasOlder) {
      return Center(
        child: Text(
          note ?? (viewModel.peer == null ? 'No messages yet. Say hello!' : 'No direct messages yet.'),
          style: Theme.of(context).textTheme.bodyMedium,
        ),
      );
    }
    // The oldest end of the list: "load older", or the line where the
    // history was cleared (nothing older exists then).
    final oldestRow = viewModel.hasOlder || note != null;
    return ListView.builder(
      controller: _scroll,
      reverse: true,
      padding: const EdgeInsets.symmetric(horizontal: 8, vertical: 12),
      itemCount: entries.length + (oldestRow ? 1 : 0),
      itemBuilder: (context, index) {
        if (index == entries.length) {
          if (!viewModel.hasOlder && note != null) return NoteRow(text: note);
          return OlderMessagesRow(loading: viewModel.loadingOlder, onLoad: viewModel.loadOlder);
        }
        final entry = entries[index];
        final file = entry.file;
        final message = entry.message;
        final quote = entry.quote;
        _builtRows.add(index);
        final target = message != null && message.id == _scrollTarget;
        return Column(
          key: target ? _targetKey : ValueKey(entry.key),
          crossAxisAlignment: CrossAxisAlignment.stretch,
          children: [
            if (entry.gapBefore)
              OlderMessagesRow(
                loading: viewModel.loadingGap,
                onLoad: viewModel.loadGap,
                label: gapLabel,
              ),
            if (entry.dayLabel != null) DayDivider(label: entry.dayLabel!),
            if (entry.unreadMarker) const UnreadDivider(),
            MessageBubble(
              entry: entry,
              timeText: clockTime(entry.time),
              onRetry: entry.pending == null ? null : () => viewModel.retry(entry.pending!.cid),
              onDiscard: entry.pending == null ? null : () => viewModel.discard(entry.pending!.cid),
              onOpenLink: _openLink,
              actions: _actionsFor(entry),
              onAction: message == null ? null : (action) => _onAction(message, action),
              myReaction: message == null ? null : viewModel.myReaction(message),
              onToggleReaction: message == null || !viewModel.canReact(message)
                  ? null
                  : (emoji) => viewModel.toggleReaction(message, emoji),
              onOpenQuote: quote == null ? null : () => _openQuote(quote),
              attachment: file == null
                  ? null
                  : FileTile(
                      file: file,
                      transfer: viewModel.transferOf(file.id),
                      localPath: viewModel.localPathOf(file),
                      webUrl: viewModel.browserUrlOf(file),
                      webThumbnailUrl: viewModel.browserUrlOf(file, inline: true),
                      headers: viewModel.fileRequestHeaders,
                      canDownload: viewModel.canDownload,
                      onDownload: () => viewModel.download(file),
                      onOpen: () => _open(file),
                      onCancel: () => viewModel.cancelTransfer(file.id),
                      onView: file.isImage ? () => _view(file) : null,
                      onShare: viewModel.hasFileActions ? () => viewModel.shareFile(file) : null,
                      onSaveToGallery: viewModel.hasFileActions && viewModel.canSaveToGallery
                          ? () => viewModel.saveToGallery(file)
                          : null,
                      onSaveAs: viewModel.hasFileActions ? () => viewModel.saveFileAs(file) : null,
                    ),
            ),
          ],
        );
      },
    );
  }
}
