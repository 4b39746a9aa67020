"""The chat domain in-process, with fake connections: the protocol's meaning without sockets.

Each test reads like the protocol (docs/PROTOCOL.md): hello -> welcome, msg -> ack and
broadcast, DM visibility, resume paging, errors. `Room.turn()` plays the loop's part: it
commits, then hands the Outbox's entries to the fake connections, in order."""
import json
import secrets
import sqlite3

import pytest

import chatserver as cs


class FakeConnection:
    """What Chat reads and calls on a connection, recording what it is asked to do."""

    def __init__(self, name, address="192.168.1.20"):
        self.name = name
        self.address = address
        self.proto = "framed"
        self.nick = self.key = self.session = self.uid = None
        self.device = secrets.token_urlsafe(16)
        self.bucket = cs.TokenBucket(0, 0)
        self.out_pending = 0
        self.closed = False
        self.received = []            # decoded JSON messages, in delivery order
        self.close_request = None     # (reason, hold) of close_when_done
        self.downloads = []

    def label(self):
        return self.name

    def mark_joined(self):
        pass

    def close_when_done(self, reason, hold=0.0):
        self.close_request = (reason, hold)

    def start_download(self, path, meta, offset):
        self.downloads.append(("start", meta["id"], offset))

    def cancel_download(self, file_id):
        self.downloads.append(("cancel", file_id))

    def of_type(self, kind):
        return [m for m in self.received if m["type"] == kind]


class Room:
    def __init__(self, tmp_path, **config):
        self.store = cs.MessageStore(":memory:")
        self.files = cs.FileStore(str(tmp_path), self.store)
        self.chat = cs.Chat(self.store, self.files, cs.Config(**config))
        self.cid = 0

    def turn(self):
        """The loop's end of turn: commit, then deliver in order."""
        try:
            self.store.commit()
        except sqlite3.Error as exc:
            self.chat.storage_failed(exc)
        while self.chat.outbox.entries:
            for targets, raw in self.chat.outbox.take():
                if targets is cs._CALL:
                    raw()
                    continue
                if targets is None:       # as Server._broadcast: not to one still joining
                    targets = [c for c in self.chat.joined.values()
                               if c not in self.chat.welcoming]
                else:
                    for conn in targets:
                        conn.out_pending -= len(raw)
                for conn in targets:
                    conn.received.append(json.loads(raw))

    def send(self, conn, **header):
        self.chat.handle(conn, json.dumps(header).encode())
        self.turn()

    def join(self, nick, **hello):
        conn = FakeConnection(nick)
        self.send(conn, type="hello", nick=nick, proto=1, device=conn.device, **hello)
        return conn

    def say(self, conn, text, **extra):
        self.cid += 1
        self.send(conn, type="msg", text=text, cid="c%d" % self.cid, **extra)
        return "c%d" % self.cid


@pytest.fixture
def room(tmp_path):
    return Room(tmp_path)


def test_hello_gets_welcome_and_everyone_hears_the_join(room):
    alice = room.join("alice")
    bob = room.join("bob")
    (welcome,) = bob.of_type("welcome")
    assert welcome["nick"] == "bob" and welcome["users"] == ["alice", "bob"]
    assert welcome["limits"]["ping_after"] == cs.PING_AFTER and welcome["history"] == []
    assert [m["nick"] for m in alice.of_type("join")] == ["alice", "bob"]
    assert bob.session and room.chat.sessions[bob.session] is bob


def test_a_message_is_stored_then_reaches_everyone_the_sender_copy_is_the_ack(room):
    alice, bob = room.join("alice"), room.join("bob")
    cid = room.say(alice, "hi")
    (ack,) = alice.of_type("msg")
    assert ack["cid"] == cid and ack["from"] == "alice" and ack["id"] == 1
    assert bob.of_type("msg") == [ack]
    assert room.store.history("bob")[0][0] == json.dumps(ack, separators=(",", ":"))


def test_a_direct_message_is_seen_by_its_two_parties_only(room):
    alice, bob, carol = room.join("alice"), room.join("bob"), room.join("carol")
    room.say(alice, "psst", to="Bob")
    assert [m["text"] for m in bob.of_type("msg")] == ["psst"]
    assert alice.of_type("msg")[0]["to"] == "bob"
    assert carol.of_type("msg") == []
    late = room.join("dave")
    assert late.of_type("welcome")[0]["history"] == []


def test_resume_pages_the_missed_messages_without_gap_or_duplicate(room):
    alice = room.join("alice")
    for i in range(cs.WELCOME_HISTORY_RESUME + 30):
        room.say(alice, "m%d" % i)
    back = FakeConnection("alice2")
    room.chat.leave(alice, "quit")
    room.turn()
    room.send(back, type="hello", nick="alice", proto=1, since=10, device=alice.device)
    (welcome,) = back.of_type("welcome")
    got = [m["id"] for m in welcome["history"]]
    assert welcome["has_more"] is True and len(got) == cs.WELCOME_HISTORY_RESUME
    room.send(back, type="history", before=got[0], after=10, limit=200, cid="page")
    (page,) = back.of_type("history")
    ids = [m["id"] for m in page["messages"]] + got
    assert ids == list(range(11, cs.WELCOME_HISTORY_RESUME + 31)) and page["cid"] == "page"


def test_a_resume_in_the_turn_of_a_message_gets_it_once_in_its_welcome_not_before(room):
    """Bug: the turn's broadcasts went to every connection joined when they were delivered,
    so one that joined later in the same turn got a message live *before* its welcome and
    again in the welcome's history; a resuming client then took its `since` from it and never
    paged the gap below."""
    alice = room.join("alice")
    bob = room.join("bob")
    room.chat.leave(bob, "quit")
    room.turn()
    room.chat.handle(alice, json.dumps({"type": "msg", "text": "while you were out",
                                        "cid": "w1"}).encode())
    back = FakeConnection("bob2")
    back.device = bob.device
    room.chat.handle(back, json.dumps({"type": "hello", "nick": "bob", "proto": 1,
                                       "since": 0, "device": bob.device}).encode())
    room.chat.handle(alice, json.dumps({"type": "msg", "text": "welcome back",
                                        "cid": "w2"}).encode())
    room.turn()
    kinds = [m["type"] for m in back.received]
    assert kinds[0] == "welcome", kinds
    assert [m["text"] for m in back.received[0]["history"]] == ["while you were out"]
    assert [m["text"] for m in back.of_type("msg")] == ["welcome back"]
    assert [m["text"] for m in alice.of_type("msg")] == ["while you were out", "welcome back"]
    assert not room.chat.welcoming


def test_requests_before_hello_are_not_joined(room):
    stranger = FakeConnection("stranger")
    room.send(stranger, type="msg", text="hi", cid="x")
    (err,) = stranger.of_type("error")
    assert err["code"] == "not_joined" and err["fatal"] is False
    assert stranger.close_request is None


def test_a_wrong_token_is_fatal_and_repeated_failures_are_held_back(room):
    room.chat.token = "right"
    held = []
    for i in range(cs.AUTH_FREE_FAILURES + 2):
        conn = FakeConnection("m%d" % i)
        room.send(conn, type="hello", nick="m", proto=1, token="wrong")
        assert conn.of_type("error")[0]["code"] == "auth_failed"
        held.append(conn.close_request)
    assert [reason for reason, _ in held] == ["auth_failed"] * len(held)
    assert [hold for _, hold in held] == [0.0] * cs.AUTH_FREE_FAILURES + [0.5, 1.0]
    ok = room.join("alice", token="right")
    assert ok.of_type("welcome")


def test_flood_control_refuses_past_the_burst(tmp_path):
    room = Room(tmp_path, rate_limit=1.0, rate_burst=3)
    alice = room.join("alice")
    alice.bucket = cs.TokenBucket(1.0, 3)
    for _ in range(5):
        room.say(alice, "x")
    codes = [m.get("code") for m in alice.received if m["type"] in ("msg", "error")]
    assert codes == [None, None, None, "rate_limited", "rate_limited"]


def fail_next_commit(monkeypatch):
    """The next commit of a turn that wrote something fails as on a full disk; later ones
    succeed."""
    real_commit = cs.MessageStore.commit
    calls = []

    def fail_once(store):
        if store.in_transaction and not calls:
            calls.append(1)
            raise sqlite3.OperationalError("database or disk is full")
        return real_commit(store)
    monkeypatch.setattr(cs.MessageStore, "commit", fail_once)


def test_a_failed_commit_refuses_the_turn_to_its_senders_only(room, monkeypatch):
    alice, bob = room.join("alice"), room.join("bob")
    fail_next_commit(monkeypatch)
    cid = room.say(alice, "lost")
    (err,) = alice.of_type("error")
    assert err["code"] == "disk_full" and err["ref"] == cid
    assert bob.of_type("msg") == [] and alice.of_type("msg") == []
    room.say(alice, "kept")
    assert [m["id"] for m in bob.of_type("msg")] == [1]        # the lost id is not skipped


def test_download_and_cancel_happen_in_the_order_they_were_sent(room, tmp_path):
    alice = room.join("alice")
    room.store.add_file({"id": "f1", "name": "a", "size": 3, "sha256": "0" * 64,
                         "mime": "text/plain", "sender_key": "alice", "recipient_key": None,
                         "created": 0.0, "sender_id": alice.uid, "recipient_id": None})
    room.chat.handle(alice, b'{"type":"download","file":"f1"}')
    room.chat.handle(alice, b'{"type":"download_cancel","file":"f1"}')
    room.turn()
    assert alice.downloads == [("start", "f1", 0), ("cancel", "f1")]


def test_typing_to_one_user_reaches_that_user_only(room):
    alice, bob, carol = room.join("alice"), room.join("bob"), room.join("carol")
    room.send(alice, type="typing", to="bob")
    assert bob.of_type("typing") == [{"type": "typing", "from": "alice", "to": "bob"}]
    assert carol.of_type("typing") == [] and alice.of_type("typing") == []


def test_a_hello_whose_commit_fails_is_undone_and_may_be_sent_again(room, monkeypatch):
    alice = room.join("alice")
    fail_next_commit(monkeypatch)
    bob = FakeConnection("bob")
    room.send(bob, type="hello", nick="bob", proto=1, device=bob.device)
    assert [m["type"] for m in bob.received] == ["error"]
    assert bob.received[0]["code"] == "disk_full"
    # nothing of the join remains: not in the room, no session, no join heard
    assert cs.nick_key("bob") not in room.chat.joined and bob not in room.chat.welcoming
    assert bob.nick is None and bob.session not in room.chat.sessions
    assert [m["nick"] for m in alice.of_type("join")] == ["alice"]
    # the second hello is welcomed, and broadcasts reach bob from then on
    room.send(bob, type="hello", nick="bob", proto=1, device=bob.device)
    (welcome,) = bob.of_type("welcome")
    assert welcome["users"] == ["alice", "bob"]
    room.say(alice, "hi bob")
    assert [m["text"] for m in bob.of_type("msg")] == ["hi bob"]
    assert [m["nick"] for m in alice.of_type("join")] == ["alice", "bob"]
