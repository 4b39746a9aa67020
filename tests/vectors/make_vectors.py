"""Regenerate frames.json from chatserver's codec: python tests/vectors/make_vectors.py

The file is the byte-exact contract read by pytest and by the Flutter codec's tests."""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
import chatserver  # noqa: E402

VALID = [
    ("ping", {"type": "ping"}, b""),
    ("hello", {"type": "hello", "nick": "alice", "device": "q8JxV2n0cR4m7tYb1kLp3w",
               "client": "flutter/1.0", "proto": 1, "token": "Zq3x9", "since": 41}, b""),
    ("welcome", {"type": "welcome", "nick": "alice", "uid": 7,
                 "device": "q8JxV2n0cR4m7tYb1kLp3w", "server": "chatserver/1.0.0", "proto": 1,
                 "session": "s3f9a", "users": ["alice", "bob"], "online": 2, "has_more": False,
                 "last_id": 42, "room": {"name": "Class 4B", "topic": "", "locked": False},
                 "muted": False, "limits": {"text": 16384, "chunk": 1048576, "file": 4294967296,
                                            "ping_after": 30.0, "idle_timeout": 90.0,
                                            "edit_window": 900.0},
                 "history": [{"type": "msg", "id": 42, "ts": "2026-11-25T09:14:03.120Z",
                              "from": "bob", "uid": 3, "text": "morning", "cid": "b-7"}]}, b""),
    ("msg_public", {"type": "msg", "text": "hi all", "cid": "a-1"}, b""),
    ("msg_direct", {"type": "msg", "text": "psst", "cid": "a-2", "to": "bob"}, b""),
    ("msg_unicode", {"type": "msg", "text": "héllo 👋 «chat»", "cid": "a-3"}, b""),
    ("msg_delivered", {"type": "msg", "id": 43, "ts": "2026-11-25T09:14:03.120Z",
                       "from": "alice", "uid": 7, "text": "psst", "cid": "a-2", "to": "bob"},
     b""),
    ("msg_file", {"type": "msg", "id": 44, "ts": "2026-11-25T09:15:00.000Z", "from": "alice",
                  "uid": 7, "text": "", "cid": "a-4", "file": {
                      "id": "f0d2", "name": "cat.jpg", "size": 5,
                      "sha256": "4fe7b0dbd9e2ad2e3ec3b1d2c2d3c4f8c2ac5e5d83b6f1d4e1d6a1c0b0a09080",
                      "mime": "image/jpeg"}}, b""),
    ("history_request", {"type": "history", "before": 40, "after": 0, "limit": 50}, b""),
    ("history_reply", {"type": "history", "has_more": False, "messages": []}, b""),
    ("history_request_with_cid", {"type": "history", "before": 40, "limit": 50, "cid": "h-1"},
     b""),
    ("history_reply_with_cid", {"type": "history", "has_more": True, "cid": "h-1",
                                "messages": []}, b""),
    ("hello_takeover", {"type": "hello", "nick": "alice", "device": "q8JxV2n0cR4m7tYb1kLp3w",
                        "client": "web/1", "proto": 1, "since": 41}, b""),
    ("chunk_last", {"type": "chunk", "upload": "u7c1", "offset": 0, "last": True}, b"x"),
    ("join", {"type": "join", "nick": "bob"}, b""),
    ("leave", {"type": "leave", "nick": "bob", "reason": "quit"}, b""),
    ("typing", {"type": "typing", "from": "bob"}, b""),
    ("pong", {"type": "pong", "t": 7}, b""),
    ("upload", {"type": "upload", "name": "cat.jpg", "size": 5, "cid": "a-4",
                "mime": "image/jpeg"}, b""),
    ("upload_ready", {"type": "upload_ready", "upload": "u7c1", "cid": "a-4", "offset": 0,
                      "size": 5, "chunk": 1048576}, b""),
    ("chunk", {"type": "chunk", "upload": "u7c1", "offset": 0}, b"\x00\x01\x02\xfe\xff"),
    ("upload_status", {"type": "upload_status", "upload": "u7c1"}, b""),
    ("upload_cancel", {"type": "upload_cancel", "upload": "u7c1"}, b""),
    ("download", {"type": "download", "file": "f0d2", "offset": 0}, b""),
    ("download_start", {"type": "download_start", "file": "f0d2", "name": "cat.jpg", "size": 5,
                        "sha256": "ab" * 32, "mime": "image/jpeg", "offset": 0}, b""),
    ("file_chunk", {"type": "file_chunk", "file": "f0d2", "offset": 0}, b"hello"),
    ("download_end", {"type": "download_end", "file": "f0d2", "size": 5}, b""),
    ("download_cancel", {"type": "download_cancel", "file": "f0d2"}, b""),
    ("error", {"type": "error", "code": "unknown_user",
               "message": "No user named 'nobody' is online.", "ref": "a-4", "fatal": False},
     b""),
    ("bye", {"type": "bye", "reason": "shutdown"}, b""),
    ("bye_replaced", {"type": "bye", "reason": "replaced"}, b""),
    ("error_nick_owned", {"type": "error", "code": "nick_owned",
                          "message": "The nick 'alice' belongs to another device; pick another "
                          "one.", "fatal": False}, b""),
    # section 10: changes, moderation and the room
    ("delete", {"type": "delete", "id": 43, "cid": "a-5"}, b""),
    ("edit", {"type": "edit", "id": 43, "text": "psst!", "cid": "a-6"}, b""),
    ("change_delete", {"type": "change", "id": 45, "ts": "2026-11-25T09:16:00.000Z",
                       "change": "delete", "target": 43, "by": "sender"}, b""),
    ("change_edit", {"type": "change", "id": 46, "ts": "2026-11-25T09:16:30.000Z",
                     "change": "edit", "target": 42, "by": "sender", "text": "morning!",
                     "edited": "2026-11-25T09:16:30.000Z"}, b""),
    ("change_clear", {"type": "change", "id": 47, "ts": "2026-11-25T09:17:00.000Z",
                      "change": "clear", "by": "operator"}, b""),
    ("msg_edited", {"type": "msg", "id": 42, "ts": "2026-11-25T09:14:03.120Z", "from": "bob",
                    "uid": 3, "text": "morning!", "cid": "b-7",
                    "edited": "2026-11-25T09:16:30.000Z"}, b""),
    ("msg_deleted", {"type": "msg", "id": 43, "ts": "2026-11-25T09:14:03.120Z",
                     "from": "alice", "uid": 7, "cid": "a-2", "to": "bob", "text": "",
                     "deleted": "operator"}, b""),
    ("room", {"type": "room", "name": "Class 4B", "topic": "Fractions today", "locked": True},
     b""),
    # section 12: replies, mentions, reactions, search
    ("msg_reply", {"type": "msg", "text": "yes! @bob", "cid": "a-9", "reply_to": 42}, b""),
    ("msg_with_reply", {"type": "msg", "id": 44, "ts": "2026-11-25T09:15:00.000Z",
                        "from": "alice", "uid": 7, "text": "yes! @bob",
                        "reply_to": {"id": 42, "from": "bob", "text": "morning"},
                        "mentions": ["bob"], "cid": "a-9", "reactions": {"👍": [3]}}, b""),
    ("msg_reply_to_removed", {"type": "msg", "id": 44, "ts": "2026-11-25T09:15:00.000Z",
                              "from": "alice", "uid": 7, "text": "yes! @bob",
                              "reply_to": {"id": 42, "from": "bob", "text": "",
                                           "deleted": True},
                              "mentions": ["bob"], "cid": "a-9"}, b""),
    ("react", {"type": "react", "id": 42, "emoji": "👍", "cid": "r-1"}, b""),
    ("react_remove", {"type": "react", "id": 42, "emoji": "", "cid": "r-2"}, b""),
    ("change_react", {"type": "change", "id": 48, "ts": "2026-11-25T09:18:00.000Z",
                      "change": "react", "target": 42, "uid": 7, "emoji": "👍",
                      "reactions": {"👍": [3, 7]}}, b""),
    ("search", {"type": "search", "text": "homework link", "cid": "s-1", "limit": 20}, b""),
    ("search_results", {"type": "search_results", "cid": "s-1", "has_more": False,
                        "results": [{"type": "msg", "id": 40, "ts": "2026-11-24T16:02:11.500Z",
                                     "from": "bob", "uid": 3,
                                     "text": "homework link: http://example.org/hw",
                                     "cid": "b-5"}]}, b""),
    ("notice_muted", {"type": "notice", "code": "muted", "message": "The organiser muted you: "
                      "you can read, but not post or share files."}, b""),
    ("notice_unmuted", {"type": "notice", "code": "unmuted",
                        "message": "The organiser unmuted you: you can post again."}, b""),
    ("bye_kicked", {"type": "bye", "reason": "kicked", "message": "The organiser removed you "
                    "from the chat. You may join again."}, b""),
    ("bye_banned", {"type": "bye", "reason": "banned", "message": "The organiser banned this "
                    "device until the organiser lifts it."}, b""),
    ("error_banned", {"type": "error", "code": "banned", "message": "The organiser banned this "
                      "device until the organiser lifts it.", "fatal": True}, b""),
    ("error_room_locked", {"type": "error", "code": "room_locked", "message": "The room is "
                           "locked: no new nicks may join now.", "fatal": False}, b""),
    ("error_muted", {"type": "error", "code": "muted", "message": "The organiser muted you.",
                     "ref": "a-7", "fatal": False}, b""),
    ("error_unknown_message", {"type": "error", "code": "unknown_message",
                               "message": "There is no message 99 to change.", "ref": "a-8",
                               "fatal": False}, b""),
    ("error_edit_expired", {"type": "error", "code": "edit_expired",
                            "message": "This message can no longer be edited.", "ref": "a-9",
                            "fatal": False}, b""),
]


def prefix(hlen, plen):
    return struct.pack(">II", hlen, plen)


# Byte strings a decoder must refuse, with the error code it reports.
INVALID = [
    ("header_length_zero", prefix(0, 0), "bad_frame"),
    ("header_too_large", prefix(65537, 0), "frame_too_large"),
    ("payload_too_large", prefix(2, 1048577) + b"{}", "frame_too_large"),
    ("header_not_utf8", prefix(4, 0) + b"\xff\xfe\xfd\xfc", "bad_json"),
    ("header_not_json", prefix(5, 0) + b"hello", "bad_json"),
    ("header_json_array", prefix(2, 0) + b"[]", "bad_request"),
    ("header_truncated_json", prefix(11, 0) + b'{"nick":"a"', "bad_json"),
    ("header_type_not_string", prefix(10, 0) + b'{"type":1}', "bad_request"),
    ("header_object_without_type", prefix(12, 0) + b'{"nick":"a"}', "bad_request"),
]


def build():
    frames = []
    for name, header, payload in VALID:
        data = chatserver.encode_frame(header, payload)
        frames.append({"name": name, "hex": data.hex(), "header": header,
                       "payload_hex": payload.hex()})
    invalid = [{"name": name, "hex": data.hex(), "error": code} for name, data, code in INVALID]
    return {"version": 1, "comment": "Framed protocol vectors (docs/PROTOCOL.md). 'hex' is the "
            "whole frame: uint32 BE header length, uint32 BE payload length, compact UTF-8 JSON "
            "header (no spaces, keys in the order shown, non-ASCII not escaped), payload.",
            "frames": frames, "invalid": invalid}


if __name__ == "__main__":
    with open(os.path.join(HERE, "frames.json"), "w", encoding="utf-8") as f:
        json.dump(build(), f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", os.path.join(HERE, "frames.json"))
