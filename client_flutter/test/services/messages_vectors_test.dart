// The typed messages of issues 16 and 17 against tests/vectors/frames*.json
// (the bytes the server's own tests check): the client's delete, edit and
// hello encode to exactly the vector bytes, and the server's welcome, change,
// room, notice, bye and error frames parse into what the app uses.

import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
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
