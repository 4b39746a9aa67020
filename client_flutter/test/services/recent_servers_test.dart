import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/server_address.dart';
import 'package:lan_chat/services/recent_servers.dart';

import '../fakes/memory_files.dart';

void main() {
  late MemoryKeyValueStore store;
  late RecentServers recent;

  setUp(() {
    store = MemoryKeyValueStore();
    recent = RecentServers(store);
  });

  test('remembers servers newest first, one entry per host and port', () async {
    const a = ServerAddress(host: '10.0.0.1', token: 'one');
    const b = ServerAddress(host: '10.0.0.2');
    await recent.remember(a, 'alice');
    await recent.remember(b, 'alice');
    await recent.remember(a.withToken('two'), 'Alice');
    final loaded = await RecentServers(store).load();
    expect(loaded.map((r) => r.address.host), ['10.0.0.1', '10.0.0.2']);
    expect(loaded.first.address.token, 'two');
    expect(loaded.first.nick, 'Alice');
  });

  test('keeps at most maxEntries', () async {
    for (var i = 0; i < RecentServers.maxEntries + 3; i++) {
      await recent.remember(ServerAddress(host: '10.0.0.$i'), 'a');
    }
    expect(await recent.load(), hasLength(RecentServers.maxEntries));
  });

  test('forgets a server', () async {
    const a = ServerAddress(host: '10.0.0.1');
    await recent.remember(a, 'alice');
    expect(await recent.forget(a), isEmpty);
  });

  test('a corrupt stored value reads as empty', () async {
    store.values[RecentServers.storageKey] = '{not json';
    expect(await recent.load(), isEmpty);
  });
}
