// What the chat needs from the phone beyond the network: keeping the screen
// on, and doing something with a received file. Interfaces only, so the view
// model stays testable; the plugin-backed versions are in
// config/device_plugins.dart.

import '../models/result.dart';
import '../models/shared_file.dart';

/// Keeps the screen (and so the app) awake while files move: a phone that
/// locks mid-transfer suspends the app and stalls the transfer.
abstract interface class ScreenAwake {
  Future<void> keepOn(bool on);
}

/// Where a received file can go from the app's private folder.
abstract interface class FileActions {
  /// Opens the file in another app (PDF viewer, music player...).
  Future<Result<void>> open(String path, SharedFile file);

  /// The system share sheet (also "Save to Files" on iOS).
  Future<Result<void>> share(String path, SharedFile file);

  /// Saves an image or video to the photo gallery.
  Future<Result<void>> saveToGallery(String path, SharedFile file);

  /// Lets the person pick a folder (Downloads...) and saves a copy there.
  Future<Result<void>> saveAs(String path, SharedFile file);

  /// Whether [saveToGallery] is available here (phones).
  bool get hasGallery;
}

/// Files picked to send.
abstract interface class FilePicking {
  /// Several files at once; an empty list when the person cancelled.
  /// [photos] opens the photo library instead of the file browser.
  Future<List<PickedFile>> pick({required bool photos});
}

/// A picked file: bytes (browsers) or a path (everywhere else).
class PickedFile {
  const PickedFile({required this.name, required this.size, this.path, this.bytes});

  final String name;
  final int size;
  final String? path;
  final List<int>? bytes;
}

/// Tells the person about new messages while the app is in the background.
/// (A phone stops a background app before long — iOS within seconds of
/// locking — so this covers the minutes after leaving the app, not days.)
abstract interface class MessageNotifier {
  /// Sets up and asks for permission, while the app is in front (a
  /// permission prompt cannot show in the background).
  Future<void> prepare();

  /// Shows (or replaces) the notification of one conversation.
  Future<void> show({required int id, required String title, required String body});

  /// Removes every notification of this app (the person is back).
  Future<void> clearAll();
}
