// The device key of PROTOCOL.md §2, "Devices and nicks": a random secret
// this app creates once per server and sends in `hello.device`. The nick it
// claims belongs to that key, so the key is what lets this phone take its
// nick back after a WiFi drop — and what a look-alike on another phone does
// not have. It never goes into a URL.
//
// Stored through the same small key-value interface as the recent servers
// (shared_preferences in the app, a map in tests).

import 'dart:convert';
import 'dart:math';

import '../models/server_address.dart';
import 'recent_servers.dart';

/// Random bytes of a new key: 256 bits, well over the 128 the protocol asks,
/// and 43 characters of URL-safe base64 (the server takes 22–128).
const int deviceKeyBytes = 32;

/// A new device key: URL-safe base64 without padding.
String newDeviceKey([Random? random]) {
  final source = random ?? Random.secure();
  final bytes = [for (var i = 0; i < deviceKeyBytes; i++) source.nextInt(256)];
  return base64Url.encode(bytes).replaceAll('=', '');
}

/// Whether [key] has the form the server accepts (22–128 characters of
/// URL-safe base64); anything else stored is replaced by a new key.
bool isDeviceKey(String key) => RegExp(r'^[A-Za-z0-9_-]{22,128}$').hasMatch(key);

class DeviceKeys {
  DeviceKeys(this._store, {Random? random}) : _random = random;

  /// One entry per server: `device_key_v1:<host:port>`.
  static const String storagePrefix = 'device_key_v1:';

  final KeyValueStore _store;
  final Random? _random;

  static String storageKey(ServerAddress address) => '$storagePrefix${address.label}';

  /// The stored key for [address], if any.
  Future<String?> stored(ServerAddress address) async {
    final key = await _store.getString(storageKey(address));
    return key != null && isDeviceKey(key) ? key : null;
  }

  /// The key for [address]: the stored one, else a new one, stored now
  /// (before the hello that claims a nick with it).
  Future<String> keyFor(ServerAddress address) async {
    final existing = await stored(address);
    if (existing != null) return existing;
    final created = newDeviceKey(_random);
    await _store.setString(storageKey(address), created);
    return created;
  }

  /// Keeps the key the server gave in `welcome.device` (it issues one to a
  /// client that sent none).
  Future<void> remember(ServerAddress address, String key) async {
    if (!isDeviceKey(key)) return;
    await _store.setString(storageKey(address), key);
  }
}
