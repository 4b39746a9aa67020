// A file shared in the chat: the `file` object of a `msg` (PROTOCOL.md §4).

class SharedFile {
  const SharedFile({
    required this.id,
    required this.name,
    required this.size,
    this.sha256 = '',
    this.mime = '',
  });

  factory SharedFile.fromJson(Map<String, Object?> json) => SharedFile(
        id: json['id'] as String,
        name: json['name'] as String? ?? 'file',
        size: (json['size'] as num?)?.toInt() ?? 0,
        sha256: json['sha256'] as String? ?? '',
        mime: json['mime'] as String? ?? '',
      );

  final String id;
  final String name;
  final int size;
  final String sha256;
  final String mime;

  static const Set<String> _imageExtensions = {'png', 'jpg', 'jpeg', 'gif', 'webp', 'bmp'};

  /// Whether a thumbnail can be drawn once the file is downloaded.
  bool get isImage {
    if (mime.startsWith('image/')) return true;
    final dot = name.lastIndexOf('.');
    return dot >= 0 && _imageExtensions.contains(name.substring(dot + 1).toLowerCase());
  }

  Map<String, Object?> toJson() => {
        'id': id,
        'name': name,
        'size': size,
        'sha256': sha256,
        'mime': mime,
      };
}

/// "1.5 MB"-style size for people.
String formatBytes(int bytes) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  var value = bytes.toDouble();
  var unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  final digits = unit == 0 || value >= 100 ? 0 : 1;
  return '${value.toStringAsFixed(digits)} ${units[unit]}';
}

/// A MIME type guessed from a file name, for `upload.mime`; null if unsure.
String? guessMime(String name) {
  final dot = name.lastIndexOf('.');
  if (dot < 0) return null;
  return _mimeByExtension[name.substring(dot + 1).toLowerCase()];
}

const Map<String, String> _mimeByExtension = {
  'jpg': 'image/jpeg',
  'jpeg': 'image/jpeg',
  'png': 'image/png',
  'gif': 'image/gif',
  'webp': 'image/webp',
  'bmp': 'image/bmp',
  'pdf': 'application/pdf',
  'txt': 'text/plain',
  'zip': 'application/zip',
  'mp3': 'audio/mpeg',
  'mp4': 'video/mp4',
  'mov': 'video/quicktime',
};
