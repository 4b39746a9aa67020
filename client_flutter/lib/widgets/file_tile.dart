// A shared file inside a message: name, size, a thumbnail for images once
// downloaded (or straight from the server in the browser), download progress.

import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';

import '../models/shared_file.dart';
import '../services/file_transfers.dart';
import 'local_image.dart';

const double _thumbnailWidth = 220;
const double _thumbnailHeight = 160;

class FileTile extends StatelessWidget {
  const FileTile({
    super.key,
    required this.file,
    required this.canDownload,
    required this.onDownload,
    required this.onOpen,
    required this.onCancel,
    this.transfer,
    this.localPath,
    this.webUrl,
    this.webThumbnailUrl,
    this.headers = const {},
    this.onView,
    this.onShare,
    this.onSaveToGallery,
    this.onSaveAs,
  });

  final SharedFile file;
  final TransferStatus? transfer;

  /// Where the downloaded file is, if it is.
  final String? localPath;

  /// The file's HTTP URL (browser build).
  final Uri? webUrl;

  /// The same, served inline, for an image thumbnail (browser build).
  final Uri? webThumbnailUrl;

  /// What the thumbnail request carries: the session, as `Authorization:
  /// Bearer` (the URL has no secret in it).
  final Map<String, String> headers;
  final bool canDownload;
  final VoidCallback onDownload;
  final VoidCallback onOpen;
  final VoidCallback onCancel;

  /// Shows an image full screen (tap on the thumbnail).
  final VoidCallback? onView;

  /// The actions on a downloaded file, in its menu; null ones are left out.
  final VoidCallback? onShare;
  final VoidCallback? onSaveToGallery;
  final VoidCallback? onSaveAs;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    final status = transfer;
    final active = status != null && status.state.isActive;
    final thumbnail = _thumbnail();
    return Padding(
      padding: const EdgeInsets.only(bottom: 4),
      child: Column(
        crossAxisAlignment: CrossAxisAlignment.start,
        mainAxisSize: MainAxisSize.min,
        children: [
          if (thumbnail != null)
            Padding(
              padding: const EdgeInsets.only(bottom: 6),
              child: ClipRRect(
                borderRadius: BorderRadius.circular(10),
                child: GestureDetector(onTap: onView ?? onOpen, child: thumbnail),
              ),
            ),
          Row(
            mainAxisSize: MainAxisSize.min,
            children: [
              Icon(file.isImage ? Icons.image_outlined : Icons.insert_drive_file_outlined),
              const SizedBox(width: 8),
              Flexible(
                child: Column(
                  crossAxisAlignment: CrossAxisAlignment.start,
                  children: [
                    Text(file.name, style: theme.textTheme.titleSmall, overflow: TextOverflow.ellipsis),
                    Text(_sizeText(status), style: theme.textTheme.bodySmall),
                  ],
                ),
              ),
              const SizedBox(width: 4),
              _action(active),
            ],
          ),
          if (status != null && status.state.isActive)
            Padding(
              padding: const EdgeInsets.only(top: 6),
              child: SizedBox(
                width: _thumbnailWidth,
                child: LinearProgressIndicator(value: status.fraction),
              ),
            ),
        ],
      ),
    );
  }

  Widget _action(bool active) {
    if (active) {
      return IconButton(tooltip: 'Cancel', onPressed: onCancel, icon: const Icon(Icons.close));
    }
    if (localPath != null && (onShare != null || onSaveAs != null || onSaveToGallery != null)) {
      return _FileMenu(
        onOpen: onOpen,
        onShare: onShare,
        onSaveToGallery: file.isImage || file.mime.startsWith('video/') ? onSaveToGallery : null,
        onSaveAs: onSaveAs,
      );
    }
    if (localPath != null || webUrl != null) {
      return IconButton(tooltip: 'Open', onPressed: onOpen, icon: const Icon(Icons.open_in_new));
    }
    if (canDownload) {
      return IconButton(tooltip: 'Download', onPressed: onDownload, icon: const Icon(Icons.download));
    }
    return const SizedBox.shrink();
  }

  String _sizeText(TransferStatus? status) {
    if (status != null && status.state.isActive) {
      return '${formatBytes(status.transferred)} of ${formatBytes(file.size)}';
    }
    if (status != null && status.state == TransferState.failed) {
      return '${formatBytes(file.size)} · failed, tap download to resume';
    }
    return formatBytes(file.size);
  }

  Widget? _thumbnail() {
    if (!file.isImage) return null;
    final url = webThumbnailUrl;
    if (kIsWeb && url != null) {
      return Image.network(
        url.toString(),
        headers: headers.isEmpty ? null : headers,
        width: _thumbnailWidth,
        height: _thumbnailHeight,
        fit: BoxFit.cover,
        errorBuilder: (context, error, stackTrace) => const SizedBox.shrink(),
      );
    }
    final path = localPath;
    if (path == null || kIsWeb) return null;
    return localImage(
      path,
      width: _thumbnailWidth,
      height: _thumbnailHeight,
      fit: BoxFit.cover,
      cacheWidth: (_thumbnailWidth * 2).round(),
      errorBuilder: (context, error, stackTrace) => const SizedBox.shrink(),
    );
  }
}

enum _FileAction { open, share, gallery, saveAs }

/// Open, share, save to the gallery, save a copy elsewhere (Downloads...).
class _FileMenu extends StatelessWidget {
  const _FileMenu({required this.onOpen, this.onShare, this.onSaveToGallery, this.onSaveAs});

  final VoidCallback onOpen;
  final VoidCallback? onShare;
  final VoidCallback? onSaveToGallery;
  final VoidCallback? onSaveAs;

  @override
  Widget build(BuildContext context) {
    final actions = <_FileAction, (IconData, String, VoidCallback)>{
      _FileAction.open: (Icons.open_in_new, 'Open', onOpen),
      if (onShare case final share?) _FileAction.share: (Icons.share, 'Share…', share),
      if (onSaveToGallery case final gallery?)
        _FileAction.gallery: (Icons.photo_library_outlined, 'Save to gallery', gallery),
      if (onSaveAs case final saveAs?) _FileAction.saveAs: (Icons.download, 'Save to…', saveAs),
    };
    return PopupMenuButton<_FileAction>(
      tooltip: 'File actions',
      icon: const Icon(Icons.more_vert),
      onSelected: (action) => actions[action]!.$3(),
      itemBuilder: (context) => [
        for (final MapEntry(key: action, value: (icon, label, _)) in actions.entries)
          PopupMenuItem(
            value: action,
            child: ListTile(leading: Icon(icon), title: Text(label), contentPadding: EdgeInsets.zero),
          ),
      ],
    );
  }
}
