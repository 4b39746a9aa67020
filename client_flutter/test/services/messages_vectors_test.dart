// The typed messages of issues 16, 17 and 20 against tests/vectors/frames*.json
// (the bytes the server's own tests check): the client's delete, edit, hello,
// reply, react and search encode to exactly the vector bytes, and the
// server's welcome, change (react too), room, notice, bye, error, a msg with
// a quote, mentions and reactions, and search_results parse into what the
// app uses.

import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
import 'package:lan_chat/models/chat_message.dart';
import 'package:lan_chat/services/frame_codec.dart';
import 'package:lan_chat/services/messages.dart';
import 'package:lan_chat/services/protocol.dart';

/// Every vector of every `frames*.json`, by name.
Map<String, Map<String, dynamic>> loadVectors() {
  final byName = <String, Map<String, dynamic>>{};
  for (final file in Directory('../tests/vectors').listSync().whereType<File>()) {
    final name = file.uri.pathSegments.last;
    if (!name.startsWith('frames') || !name.endsWith('.json')) continue;
    final vectors = jsonDecode(file.readAsStringSync()) as Map<String, dynamic>;
    for (final vector in vectors['frames'] as List<dynamic>) {
      final entry = vector as Map<String, dynamic>;
      byName[entry['name'] as String] = entry;
    }
  }
  return byName;
}

Uint8List fromHex(String hex) => Uint8List.fromList([
      for (var i = 0; i < hex.length; i += 2) int.parse(hex.substring(i, i + 2), radix: 16),
    ]);

String toHex(List<int> bytes) => bytes.map((b) => b.toRadixString(16).padLeft(2, '0')).join();

void main() {
  final vectors = loadVectors();

  ServerMessage parsed(String name) {
    final vector = vectors[name];
    expect(vector, isNotNull, reason: 'vector $name');
    return ServerMessage.fromFrame(decodeFrame(fromHex(vector!['hex'] as String)));
  }

  String hexOf(String name) => vectors[name]!['hex'] as String;

  /// The JSON header of a vector, to compare a parse with.
  Map<String, Object?> headerOf(String name) => decodeFrame(fromHex(hexOf(name))).header;

  /// {emoji: [uid…]} of a JSON reactions object, typed.
  Map<String, List<int>> reactionsOf(Object? json) => {
        for (final MapEntry(:key, :value) in (json as Map<String, Object?>).entries)
          key: [for (final uid in value as List<Object?>) (uid as num).toInt()],
      };

  group('client frames encode to the vector bytes', () {
    test('hello carries the device key, no session', () {
      expect(
          toHex(encodeFrame(ClientMessages.hello(
            nick: 'alice',
            device: 'q8JxV2n0cR4m7tYb1kLp3w',
            client: 'flutter/1.0',
            token: 'Zq3x9',
            since: 41,
          ))),
          hexOf('hello'));
      expect(
          toHex(encodeFrame(ClientMessages.hello(
            nick: 'alice',
            device: 'q8JxV2n0cR4m7tYb1kLp3w',
            client: 'web/1',
            since: 41,
          ))),
          hexOf('hello_takeover'));
    });

    test('delete and edit', () {
      expect(toHex(encodeFrame(ClientMessages.delete(id: 43, cid: 'a-5'))), hexOf('delete'));
      expect(toHex(encodeFrame(ClientMessages.edit(id: 43, text: 'psst!', cid: 'a-6'))), hexOf('edit'));
      expect(toHex(encodeFrame(ClientMessages.edit(id: 9, text: 'fixed typo', cid: 'e-1'))),
          hexOf('edit_own_message'));
    });
  });

  group('issue 20: replies, reactions, search (client frames)', () {
    test('msg with reply_to, react and search encode to the vector bytes', () {
      expect(toHex(encodeFrame(ClientMessages.msg(text: 'yes! @bob', cid: 'a-9', replyTo: 42))),
          hexOf('msg_reply'));
      expect(toHex(encodeFrame(ClientMessages.react(id: 42, emoji: '👍', cid: 'r-1'))),
          hexOf('react'));
      expect(toHex(encodeFrame(ClientMessages.search(text: 'homework link', cid: 's-1'))),
          hexOf('search'), reason: 'limit 20 is always sent');
    });

    test('the hand-written examples of PROTOCOL.md section 12 too', () {
      expect(toHex(encodeFrame(ClientMessages.msg(text: 'yes!', cid: 'a-9', replyTo: 42))),
          hexOf('doc_msg_reply'));
      expect(toHex(encodeFrame(ClientMessages.react(id: 42, emoji: '👍', cid: 'r-1'))),
          hexOf('doc_react'));
      expect(toHex(encodeFrame(ClientMessages.search(text: 'homework link', cid: 's-1'))),
          hexOf('doc_search'));
    });

    test('a msg without reply_to is unchanged (no null field)', () {
      expect(toHex(encodeFrame(ClientMessages.msg(text: 'hi all', cid: 'a-1'))), hexOf('msg_public'));
    });

    test('search fields in the order of the table; with is the direct conversation', () {
      expect(
          ClientMessages.search(
              text: 'link', cid: 's-2', from: 'bob', withNick: 'bob', before: 90, limit: 5)
              .keys,
          ['type', 'text', 'cid', 'from', 'with', 'before', 'limit']);
      expect(ClientMessages.react(id: 1, emoji: '').containsKey('cid'), isFalse);
    });
  });

  group('issue 20: replies, reactions, search (server frames)', () {
    test('msg_with_reply: the quote, mentions and reactions', () {
      final header = headerOf('msg_with_reply');
      final message = (parsed('msg_with_reply') as MessageReceived).message;
      final quote = header['reply_to'] as Map<String, Object?>;
      expect(message.replyTo, isNotNull);
      expect((message.replyTo!.id, message.replyTo!.from, message.replyTo!.text),
          (quote['id'], quote['from'], quote['text']));
      expect(message.replyTo!.deleted, quote['deleted'] == true);
      expect(message.mentions, header['mentions']);
      expect(message.mentions, isNotEmpty, reason: 'the vector has mentions');
      expect(message.reactions, reactionsOf(header['reactions']));
      expect(message.reactions, isNotEmpty, reason: 'the vector has reactions');
    });

    test('change_react: who, which emoji, the whole reactions after it', () {
      final header = headerOf('change_react');
      final change = (parsed('change_react') as ChangeReceived).change;
      expect(change.isReact, isTrue);
      expect(change.kind, ChangeKind.react);
      expect((change.id, change.target, change.uid, change.emoji),
          (header['id'], header['target'], header['uid'], header['emoji']));
      expect(change.reactions, reactionsOf(header['reactions']));
    });

    test('search_results: cid, results newest first, has_more', () {
      final header = headerOf('search_results');
      final results = parsed('search_results') as SearchResults;
      expect(results.cid, header['cid']);
      expect(results.hasMore, header['has_more']);
      final ids = [for (final r in header['results'] as List<Object?>) (r as Map)['id']];
      expect(results.results.map((m) => m.id), ids);
      expect(results.results, isNotEmpty, reason: 'the vector has a result');
      for (var i = 1; i < ids.length; i++) {
        expect((ids[i - 1] as num) > (ids[i] as num), isTrue, reason: 'newest first');
      }
      if (results.hasMore) {
        expect(results.nextBefore, results.results.map((m) => m.id).reduce((a, b) => a < b ? a : b));
      } else {
        expect(results.nextBefore, isNull);
      }
    });

    test('a quote of a removed original, and a react change that empties them', () {
      final removed = ChatMessage.fromJson({
        'type': 'msg', 'id': 50, 'ts': '2026-11-25T09:14:03.120Z', 'from': 'bob', 'uid': 3,
        'text': 'no', 'cid': 'b-9',
        'reply_to': {'id': 42, 'from': 'alice', 'text': '', 'deleted': true},
      });
      expect((removed.replyTo!.deleted, removed.replyTo!.text), (true, ''));
      expect(removed.mentions, isEmpty);
      expect(removed.reactions, isEmpty, reason: 'absent when there is none');
      final emptied = ServerMessage.fromFrame(decodeFrame(encodeFrame({
        'type': 'change', 'id': 51, 'ts': '2026-11-25T09:20:00.000Z', 'change': 'react',
        'target': 42, 'uid': 7, 'emoji': '', 'reactions': <String, Object?>{},
      }))) as ChangeReceived;
      expect((emptied.change.emoji, emptied.change.reactions), ('', <String, List<int>>{}));
    });
  });

  group('server frames parse', () {
    test('welcome: uid, device, room, muted; its history', () {
      final welcome = parsed('welcome') as Welcome;
      expect(welcome.uid, 7);
      expect(welcome.device, 'q8JxV2n0cR4m7tYb1kLp3w');
      expect(welcome.room.name, 'Class 4B');
      expect(welcome.room.locked, isFalse);
      expect(welcome.muted, isFalse);
      expect(welcome.limits.editWindow, const Duration(minutes: 15),
          reason: 'limits.edit_window is in seconds (900.0)');
      expect(welcome.history.single.id, 42);
    });

    test('msg: uid, edited, deleted (its file gone)', () {
      final edited = (parsed('msg_edited') as MessageReceived).message;
      expect((edited.uid, edited.text, edited.isEdited), (3, 'morning!', true));
      final removed = (parsed('msg_deleted') as MessageReceived).message;
      expect((removed.deleted, removed.text, removed.file), ('operator', '', null));
      expect((parsed('msg_file') as MessageReceived).message.uid, 7);
    });

    test('change: delete, edit, clear', () {
      final delete = (parsed('change_delete') as ChangeReceived).change;
      expect((delete.id, delete.isDelete, delete.target, delete.by), (45, true, 43, 'sender'));
      final edit = (parsed('change_edit') as ChangeReceived).change;
      expect((edit.isEdit, edit.target, edit.text), (true, 42, 'morning!'));
      expect(edit.edited, DateTime.parse('2026-11-25T09:16:30.000Z'));
      final clear = (parsed('change_clear') as ChangeReceived).change;
      expect((clear.isClear, clear.target, clear.by), (true, null, 'operator'));
      expect((parsed('change_delete_by_operator') as ChangeReceived).change.by, 'operator');
    });

    test('room and notice', () {
      final room = (parsed('room') as RoomChanged).room;
      expect((room.name, room.topic, room.locked), ('Class 4B', 'Fractions today', true));
      final muted = parsed('notice_muted') as NoticeReceived;
      expect(muted.code, NoticeCode.muted);
      expect(muted.message, contains('muted you'));
      expect((parsed('notice_unmuted') as NoticeReceived).code, NoticeCode.unmuted);
    });

    test('bye: replaced, kicked and banned with their sentence', () {
      expect((parsed('bye_replaced') as ByeReceived).reason, ByeReason.replaced);
      final kicked = parsed('bye_kicked') as ByeReceived;
      expect(kicked.reason, ByeReason.kicked);
      expect(kicked.message, contains('You may join again'));
      expect((parsed('bye_banned') as ByeReceived).reason, ByeReason.banned);
    });

    test('the new error codes are known, with their fatal column', () {
      for (final (name, code, fatal) in [
        ('error_banned', ErrorCode.banned, true),
        ('error_room_locked', ErrorCode.roomLocked, false),
        ('error_nick_owned', ErrorCode.nickOwned, false),
        ('error_muted', ErrorCode.muted, false),
        ('error_unknown_message', ErrorCode.unknownMessage, false),
        ('error_edit_expired', ErrorCode.editExpired, false),
      ]) {
        final error = parsed(name) as ServerError;
        expect(error.code, code, reason: name);
        expect(error.fatal, fatal, reason: name);
        expect(code.fatal, fatal, reason: 'PROTOCOL.md §6 fatal column');
      }
    });
  });
}
