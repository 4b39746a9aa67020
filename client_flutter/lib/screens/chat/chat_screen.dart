// The chat: messages of one conversation (the room or a direct one), the
// people in a drawer, transfers above the composer.

import 'dart:async';

import 'package:file_picker/file_picker.dart';
import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';
import 'package:open_filex/open_filex.dart';
import 'package:url_launcher/url_launcher.dart';

import '../../models/shared_file.dart';
import '../../services/chat_client.dart';
import '../../services/file_io.dart';
import '../../services/platform.dart';
import '../../widgets/composer.dart';
import '../../widgets/connection_banner.dart';
import '../../widgets/chat_rows.dart';
import '../../widgets/file_tile.dart';
import '../../widgets/message_bubble.dart';
import '../../widgets/transfer_panel.dart';
import '../../widgets/user_drawer.dart';
import 'chat_view_model.dart';

/// Within this many pixels of the oldest message, older ones are fetched.
const double _loadOlderThreshold = 400;

class ChatScreen extends StatefulWidget {
  const ChatScreen({super.key, required this.viewModel});

  final ChatViewModel viewModel;

  @override
  State<ChatScreen> createState() => _ChatScreenState();
}

class _ChatScreenState extends State<ChatScreen> {
  final _text = TextEditingController();
  final _scroll = ScrollController();
  late final AppLifecycleListener _lifecycle;
  StreamSubscription<String>? _notices;

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

  void _send() {
    final text = _text.text;
    if (text.trim().isEmpty) return;
    _text.clear();
    _viewModel.send(text);
  }

  Future<void> _attach() async {
    final picked = await FilePicker.platform.pickFiles(withData: kIsWeb);
    final file = picked == null || picked.files.isEmpty ? null : picked.files.first;
    if (file == null) return;
    final source = _uploadSourceFor(file);
    if (source == null) {
      _showNotice('Cannot read ${file.name}.');
      return;
    }
    _viewModel.sendFile(source);
  }

  /// Browsers hand over bytes; other platforms a path read chunk by chunk,
  /// so large files never sit in memory.
  static UploadSource? _uploadSourceFor(PlatformFile file) {
    final mime = guessMime(file.name);
    final bytes = file.bytes;
    if (bytes != null) return BytesUploadSource(name: file.name, bytes: bytes, mime: mime);
    final path = file.path;
    if (path == null) return null;
    return uploadSourceFromPath(path, file.name, file.size, mime);
  }

  Future<void> _open(SharedFile file) async {
    final url = _viewModel.browserUrlOf(file);
    if (url != null) {
      if (!await launchUrl(url)) _showNotice('Cannot open ${file.name}.');
      return;
    }
    final path = _viewModel.localPathOf(file);
    if (path == null) {
      _viewModel.download(file);
      return;
    }
    final result = await OpenFilex.open(path);
    if (result.type != ResultType.done) _showNotice(result.message);
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
                Text(peer ?? 'Everyone'),
                Text(
                  peer == null
                      ? '${viewModel.serverLabel} · ${viewModel.me}'
                      : (viewModel.peerOnline ? 'direct message · online' : 'direct message · offline'),
                  style: Theme.of(context).textTheme.bodySmall,
                ),
              ],
            ),
            actions: [
              Builder(
                builder: (context) => IconButton(
                  tooltip: 'People and conversations',
                  onPressed: () => Scaffold.of(context).openEndDrawer(),
                  icon: Badge(
                    isLabelVisible: viewModel.unreadElsewhere > 0,
                    label: Text('${viewModel.unreadElsewhere}'),
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
                ),
                Expanded(child: _messageList(viewModel)),
                if (viewModel.typingText != null) TypingLine(text: viewModel.typingText!),
                TransferPanel(
                  transfers: viewModel.activeUploads,
                  onCancel: viewModel.cancelTransfer,
                  onDismiss: viewModel.dismissTransfer,
                ),
                Composer(
                  controller: _text,
                  hint: peer == null ? 'Message everyone' : 'Message $peer',
                  onSend: _send,
                  onAttach: _attach,
                  onChanged: viewModel.composing,
                  offline: viewModel.status != ConnectionStatus.online,
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
    if (entries.isEmpty && !viewModel.hasOlder) {
      return Center(
        child: Text(
          viewModel.peer == null ? 'No messages yet. Say hello!' : 'No direct messages yet.',
          style: Theme.of(context).textTheme.bodyMedium,
        ),
      );
    }
    return ListView.builder(
      controller: _scroll,
      reverse: true,
      padding: const EdgeInsets.symmetric(horizontal: 8, vertical: 12),
      itemCount: entries.length + (viewModel.hasOlder ? 1 : 0),
      itemBuilder: (context, index) {
        if (index == entries.length) {
          return OlderMessagesRow(loading: viewModel.loadingOlder, onLoad: viewModel.loadOlder);
        }
        final entry = entries[index];
        final file = entry.file;
        return Column(
          key: ValueKey(entry.key),
          crossAxisAlignment: CrossAxisAlignment.stretch,
          children: [
            if (entry.dayLabel != null) DayDivider(label: entry.dayLabel!),
            if (entry.unreadMarker) const UnreadDivider(),
            MessageBubble(
              entry: entry,
              timeText: clockTime(entry.time),
              onRetry: entry.pending == null ? null : () => viewModel.retry(entry.pending!.cid),
              onDiscard: entry.pending == null ? null : () => viewModel.discard(entry.pending!.cid),
              attachment: file == null
                  ? null
                  : FileTile(
                      file: file,
                      transfer: viewModel.transferOf(file.id),
                      localPath: viewModel.localPathOf(file),
                      webUrl: viewModel.browserUrlOf(file),
                      webThumbnailUrl: viewModel.browserUrlOf(file, inline: true),
                      canDownload: viewModel.canDownload,
                      onDownload: () => viewModel.download(file),
                      onOpen: () => _open(file),
                      onCancel: () => viewModel.cancelTransfer(file.id),
                    ),
            ),
          ],
        );
      },
    );
  }
}
