// The device key of PROTOCOL.md §2: created once per server, from a secure
// random source, stored, and reused; the server's `welcome.device` is kept.

import 'dart:convert';

import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/services/device_keys.dart';

import '../fakes/memory_files.dart';

void main() {
  late MemoryKeyValueStore store;
  late DeviceKeys keys;
  const classroom = ServerAddress(host: '192.168.1.20', token: 'tok');

  setUp(() {
    store = MemoryKeyValueStore();
    keys = DeviceKeys(store);
  });

  test('a new key has at least 128 random bits, as URL-safe base64 without padding', () {
    final key = newDeviceKey();
    expect(key, matches(RegExp(r'^[A-Za-z0-9_-]+$')));
    expect(key.length, greaterThanOrEqualTo(22));
    expect(key.length, lessThanOrEqualTo(128));
    expect(key.contains('='), isFalse);
    expect(base64Url.decode(base64Url.normalize(key)).length * 8, greaterThanOrEqualTo(128));
    expect(isDeviceKey(key), isTrue);
    expect(newDeviceKey(), isNot(key), reason: 'random, not derived from anything');
  });

  test('is created once and reused, also by a new DeviceKeys over the same storage', () async {
    final first = await keys.keyFor(classroom);
    expect(await keys.keyFor(classroom), first);
    expect(await DeviceKeys(store).keyFor(classroom), first, reason: 'the app started again');
    expect(store.values, {DeviceKeys.storageKey(classroom): first});
  });

  test('is stored per server address: host and port', () async {
    final a = await keys.keyFor(classroom);
    final b = await keys.keyFor(const ServerAddress(host: '192.168.1.21'));
    final c = await keys.keyFor(const ServerAddress(host: '192.168.1.20', port: 6000));
    expect({a, b, c}, hasLength(3));
    expect(await keys.keyFor(classroom.withToken('rotated')), a,
        reason: 'a new pairing token is the same server');
  });

  test("the server's key from welcome.device is kept; a malformed one is not", () async {
    await keys.keyFor(classroom);
    final issued = 'S' * 43;
    await keys.remember(classroom, issued);
    expect(await keys.stored(classroom), issued);
    await keys.remember(classroom, 'short');
    expect(await keys.stored(classroom), issued);
  });

  test('a corrupt stored value is replaced by a new key', () async {
    store.values[DeviceKeys.storageKey(classroom)] = 'not a key!';
    final key = await keys.keyFor(classroom);
    expect(isDeviceKey(key), isTrue);
    expect(store.values[DeviceKeys.storageKey(classroom)], key);
  });
}
