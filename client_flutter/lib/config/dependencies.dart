// Every dependency of the app is created here, in one place: services get
// their I/O (transport connector, file store, preferences), view models get
// their services. Screens receive view models and never see a socket.

import 'package:flutter/foundation.dart';
import 'package:path_provider/path_provider.dart';
import 'package:shared_preferences/shared_preferences.dart';

import '../models/server_address.dart';
import '../services/chat_client.dart';
import '../services/device.dart';
import '../services/device_keys.dart';
import '../services/file_io.dart';
import '../services/file_transfers.dart';
import '../services/http_transfers.dart';
import '../services/platform.dart';
import '../services/recent_servers.dart';
import '../services/transport.dart';
import '../screens/chat/chat_view_model.dart';
import '../screens/connect/connect_view_model.dart';
import 'device_plugins.dart';

class AppDependencies {
  AppDependencies({
    required this.recentServers,
    required this.deviceKeys,
    required this.connector,
    required this.fileStore,
    required this.framedFiles,
    this.screenAwake,
    this.fileActions,
    this.filePicking,
    this.notifier,
  });

  /// The real dependencies of this platform.
  static Future<AppDependencies> create() async {
    String? documents;
    if (!kIsWeb) {
      try {
        documents = (await getApplicationDocumentsDirectory()).path;
      } on Exception catch (error) {
        debugPrint('No documents folder, downloads disabled: $error');
      }
    }
    final preferences = _PreferencesStore(SharedPreferencesAsync());
    return AppDependencies(
      recentServers: RecentServers(preferences),
      deviceKeys: DeviceKeys(preferences),
      connector: connectTransport,
      fileStore: createFileStore(documents),
      framedFiles: framedFileTransfers,
      screenAwake: PluginScreenAwake(),
      // Browsers download files themselves: no open / share / save here.
      fileActions: kIsWeb ? null : PluginFileActions(),
      filePicking: PluginFilePicking(),
      notifier: _phone ? PluginMessageNotifier() : null,
    );
  }

  final RecentServers recentServers;

  /// One device key per server, kept across app starts: the nicks this
  /// device claimed stay its own (PROTOCOL.md §2).
  final DeviceKeys deviceKeys;
  final TransportConnector connector;
  final FileStore? fileStore;

  /// Files inside the framed protocol (native) or over HTTP (web).
  final bool framedFiles;
  final ScreenAwake? screenAwake;
  final FileActions? fileActions;
  final FilePicking? filePicking;
  final MessageNotifier? notifier;

  /// Android and iOS: notifications, gallery (desktop and web have neither).
  static bool get _phone =>
      !kIsWeb &&
      (defaultTargetPlatform == TargetPlatform.android || defaultTargetPlatform == TargetPlatform.iOS);

  ConnectViewModel connectViewModel() =>
      ConnectViewModel(recentServers: recentServers, newSession: chatSession);

  /// One chat session: its client, its transfer service, its view model.
  ChatViewModel chatSession(ServerAddress address, String nick) {
    final client =
        ChatClient(connector: connector, address: address, nick: nick, deviceKeys: deviceKeys);
    final FileTransfers transfers =
        framedFiles ? FramedTransfers(client, fileStore) : HttpTransfers(client);
    return ChatViewModel(
      client: client,
      transfers: transfers,
      screenAwake: screenAwake,
      fileActions: fileActions,
      filePicking: filePicking,
      notifier: notifier,
    );
  }
}

class _PreferencesStore implements KeyValueStore {
  _PreferencesStore(this._preferences);

  final SharedPreferencesAsync _preferences;

  @override
  Future<String?> getString(String key) => _preferences.getString(key);

  @override
  Future<void> setString(String key, String value) => _preferences.setString(key, value);
}
