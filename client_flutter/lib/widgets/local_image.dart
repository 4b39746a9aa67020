// An image from a file on this device. dart:io exists only outside browsers,
// so the file-based widget is picked at compile time, as services/platform.dart
// picks the transports.
export 'local_image_none.dart' if (dart.library.io) 'local_image_io.dart';
