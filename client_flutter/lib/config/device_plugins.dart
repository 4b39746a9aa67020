// The plugin-backed versions of services/device.dart: open_file, share_plus,
// gal, file_picker and wakelock_plus. Created once, in dependencies.dart.

import 'dart:typed_data';

import 'package:file_picker/file_picker.dart';
import 'package:flutter/foundation.dart';
import 'package:flutter_local_notifications/flutter_local_notifications.dart';
import 'package:gal/gal.dart';
import 'package:open_file/open_file.dart';
import 'package:share_plus/share_plus.dart';
import 'package:wakelock_plus/wakelock_plus.dart';

import '../models/result.dart';
import '../models/shared_file.dart';
import '../services/device.dart';
import '../services/platform.dart';

class PluginScreenAwake implements ScreenAwake {
  @override
  Future<void> keepOn(bool on) async {
    try {
      await WakelockPlus.toggle(enable: on);
    } on Object catch (error) {
      debugPrint('wakelock: $error'); // not worth bothering the person
    }
  }
}

class PluginFileActions implements FileActions {
  @override
  bool get hasGallery =>
      !kIsWeb &&
      (defaultTargetPlatform == TargetPlatform.android ||
          defaultTargetPlatform == TargetPlatform.iOS);

  @override
  Future<Result<void>> open(String path, SharedFile file) async {
    final result = await OpenFile.open(path, type: file.mime.isEmpty ? null : file.mime);
    return switch (result.type) {
      ResultType.done => const Ok<void>(null),
      ResultType.noAppToOpen =>
        Err<void>(AppError('no_app', 'No app on this device opens ${file.name}. Try Share.')),
      ResultType.fileNotFound => Err<void>(AppError('missing', '${file.name} is gone.')),
      ResultType.permissionDenied || ResultType.error => Err<void>(AppError('open_failed', result.message)),
    };
  }

  @override
  Future<Result<void>> share(String path, SharedFile file) async {
    try {
      await SharePlus.instance.share(ShareParams(
        files: [XFile(path, mimeType: file.mime.isEmpty ? null : file.mime)],
        fileNameOverrides: [file.name],
      ));
      return const Ok<void>(null);
    } on Object catch (error) {
      return Err<void>(AppError('share_failed', 'Cannot share ${file.name}: $error'));
    }
  }

  @override
  Future<Result<void>> saveToGallery(String path, SharedFile file) async {
    try {
      if (file.mime.startsWith('video/')) {
        await Gal.putVideo(path);
      } else {
        await Gal.putImage(path);
      }
      return const Ok<void>(null);
    } on GalException catch (error) {
      return Err<void>(AppError('gallery_${error.type.name}', switch (error.type) {
        GalExceptionType.accessDenied => 'Allow LAN Chat to add photos in Settings, then try again.',
        GalExceptionType.notEnoughSpace => 'Not enough space on this device.',
        GalExceptionType.notSupportedFormat => 'The gallery does not take ${file.name}. Try Share.',
        GalExceptionType.unexpected => 'Could not save ${file.name} to the gallery.',
      }));
    }
  }

  @override
  Future<Result<void>> saveAs(String path, SharedFile file) async {
    try {
      // On Android and iOS the system dialog writes the bytes itself.
      final Uint8List bytes = await readFileBytes(path);
      final saved = await FilePicker.platform.saveFile(fileName: file.name, bytes: bytes);
      if (saved == null) return const Err<void>(AppError('cancelled', 'Not saved.'));
      if (!kIsWeb &&
          defaultTargetPlatform != TargetPlatform.android &&
          defaultTargetPlatform != TargetPlatform.iOS) {
        await writeFileBytes(saved, bytes); // desktop dialogs only return the path
      }
      return const Ok<void>(null);
    } on Object catch (error) {
      return Err<void>(AppError('save_failed', 'Cannot save ${file.name}: $error'));
    }
  }
}

class PluginFilePicking implements FilePicking {
  @override
  Future<List<PickedFile>> pick({required bool photos}) async {
    final result = await FilePicker.platform.pickFiles(
      type: photos ? FileType.media : FileType.any,
      allowMultiple: true,
      withData: kIsWeb, // browsers give bytes, not paths
    );
    if (result == null) return const [];
    return [
      for (final file in result.files)
        PickedFile(name: file.name, size: file.size, path: kIsWeb ? null : file.path, bytes: file.bytes),
    ];
  }
}

/// Local notifications on Android and iOS (flutter_local_notifications).
class PluginMessageNotifier implements MessageNotifier {
  final FlutterLocalNotificationsPlugin _plugin = FlutterLocalNotificationsPlugin();
  Future<bool>? _ready;

  static const String _channelId = 'messages';

  @override
  Future<void> prepare() async {
    await (_ready ??= _initialise());
  }

  /// Initialises the plugin and asks for permission, once.
  Future<bool> _initialise() async {
    try {
      await _plugin.initialize(
        settings: const InitializationSettings(
          android: AndroidInitializationSettings('@mipmap/ic_launcher'),
          iOS: DarwinInitializationSettings(),
        ),
      );
      final android = _plugin
          .resolvePlatformSpecificImplementation<AndroidFlutterLocalNotificationsPlugin>();
      final ios =
          _plugin.resolvePlatformSpecificImplementation<IOSFlutterLocalNotificationsPlugin>();
      final granted = await android?.requestNotificationsPermission() ??
          await ios?.requestPermissions(alert: true, sound: true, badge: true) ??
          false;
      return granted;
    } on Object catch (error) {
      debugPrint('notifications unavailable: $error');
      return false;
    }
  }

  @override
  Future<void> show({required int id, required String title, required String body}) async {
    if (!await (_ready ??= _initialise())) return;
    await _plugin.show(
      id: id,
      title: title,
      body: body,
      notificationDetails: const NotificationDetails(
        android: AndroidNotificationDetails(
          _channelId,
          'Messages',
          channelDescription: 'New chat messages while LAN Chat is in the background',
          importance: Importance.high,
          priority: Priority.high,
        ),
        iOS: DarwinNotificationDetails(presentAlert: true, presentSound: true),
      ),
    );
  }

  @override
  Future<void> clearAll() async {
    if (_ready == null) return; // nothing was ever shown
    try {
      await _plugin.cancelAll();
    } on Object catch (error) {
      debugPrint('notifications: $error');
    }
  }
}
