// A received image, full screen: pinch to zoom, with share and save.

import 'package:flutter/material.dart';

import '../../models/shared_file.dart';
import '../../widgets/local_image.dart';

class ImageViewerScreen extends StatelessWidget {
  const ImageViewerScreen({
    super.key,
    required this.file,
    this.path,
    this.url,
    this.headers = const {},
    this.onShare,
    this.onSaveToGallery,
    this.onSaveAs,
  });

  final SharedFile file;

  /// The downloaded file (apps) ...
  final String? path;

  /// ... or its URL (browsers), fetched with these headers (the session).
  final Uri? url;
  final Map<String, String> headers;
  final VoidCallback? onShare;
  final VoidCallback? onSaveToGallery;
  final VoidCallback? onSaveAs;

  @override
  Widget build(BuildContext context) {
    final path = this.path;
    final url = this.url;
    final Widget image;
    if (path != null) {
      image = localImage(path, fit: BoxFit.contain, errorBuilder: _broken);
    } else if (url != null) {
      image = Image.network(
        url.toString(),
        headers: headers.isEmpty ? null : headers,
        fit: BoxFit.contain,
        errorBuilder: _broken,
      );
    } else {
      image = _broken(context, 'no image', null);
    }
    return Scaffold(
      backgroundColor: Colors.black,
      appBar: AppBar(
        backgroundColor: Colors.black,
        foregroundColor: Colors.white,
        title: Text(file.name, overflow: TextOverflow.ellipsis),
        actions: [
          if (onShare case final share?)
            IconButton(tooltip: 'Share…', onPressed: share, icon: const Icon(Icons.share)),
          if (onSaveToGallery case final gallery?)
            IconButton(
              tooltip: 'Save to gallery',
              onPressed: gallery,
              icon: const Icon(Icons.photo_library_outlined),
            ),
          if (onSaveAs case final saveAs?)
            IconButton(tooltip: 'Save to…', onPressed: saveAs, icon: const Icon(Icons.download)),
        ],
      ),
      body: InteractiveViewer(
        maxScale: 8,
        child: Center(child: image),
      ),
    );
  }

  static Widget _broken(BuildContext context, Object error, StackTrace? stackTrace) =>
      const Center(child: Icon(Icons.broken_image_outlined, color: Colors.white54, size: 64));
}
