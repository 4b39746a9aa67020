"""The core server over loopback: chat, DMs, nicks, history, resume, durability, limits,
and every bad input of the framed protocol."""
import builtins
import itertools
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import chatserver as cs
from chatclient import SERVER, ChatClient, Closed, encode, free_port


_PROBES = itertools.count(1)


def assert_chat_still_works(server, *observers):
    """Other clients are unaffected: a fresh client's message reaches every observer."""
    probe = server.client("probe%d" % next(_PROBES))
    sent = probe.say("still alive")
    assert sent["type"] == "msg"
    for obs in observers:
        got = obs.wait_for(lambda h: h.get("type") == "msg" and h.get("id") == sent["id"])
        assert got["text"] == "still alive"
    probe.close()


def expect_error(client, code, timeout=5.0):
    err = client.wait_for("error", timeout=timeout)
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["fatal"] == cs.ERRORS[code].fatal
    return err


# -- chat -------------------------------------------------------------------------------

def test_broadcast_reaches_everyone_including_sender(server):
    a, b, c = server.client("alice"), server.client("bob"), server.client("carol")
    ack = a.say("hello everyone")
    assert ack["from"] == "alice" and ack["text"] == "hello everyone" and ack["id"] >= 1
    assert ack["ts"].endswith("Z") and "to" not in ack
    for other in (b, c):
        got = other.wait_for("msg")
        assert got == ack


def test_broadcast_to_200_concurrent_clients(make_server):
    server = make_server("--open", "--rate-limit", "0", "--max-per-address", "0")
    clients = [ChatClient(server.port) for _ in range(200)]
    for i, c in enumerate(clients):
        c.send({"type": "hello", "nick": "user%03d" % i, "client": "tests/1", "proto": 1})
    for c in clients:
        c.welcome = c.wait_for("welcome")
    sender = clients[0]
    acks = [sender.say("broadcast %d" % n) for n in range(5)]
    ids = [a["id"] for a in acks]
    assert ids == sorted(ids) and len(set(ids)) == 5
    for c in clients[1:]:
        got = [c.wait_for(lambda h, i=i: h.get("type") == "msg" and h["id"] == i)["text"]
               for i in ids]
        assert got == ["broadcast %d" % n for n in range(5)]
    for c in clients:
        c.close()


def test_direct_message_reaches_only_the_two_parties(server):
    a, b, c = server.client("alice"), server.client("bob"), server.client("carol")
    dm = a.say("secret", to="BOB")      # nicks match case-insensitively
    assert dm["to"] == "bob"
    assert b.wait_for("msg") == dm
    public = a.say("public")
    assert c.wait_for("msg") == public   # carol's first msg is the public one, not the DM
    # the DM is in the histories of alice and bob only
    for client, sees in ((a, True), (b, True), (c, False)):
        client.send({"type": "history"})
        page = client.wait_for("history")
        assert (dm["id"] in [m["id"] for m in page["messages"]]) is sees


def test_dm_to_unknown_user(server):
    a, b = server.client("alice"), server.client("bob")
    err = a.say("hello?", to="nobody", cid="dm-1")
    assert err["type"] == "error" and err["code"] == "unknown_user" and err["ref"] == "dm-1"
    assert not err["fatal"]
    assert_chat_still_works(server, a, b)


def test_typing_indicator_is_relayed_not_stored(server):
    a, b = server.client("alice"), server.client("bob")
    a.send({"type": "typing"})
    assert b.wait_for("typing") == {"type": "typing", "from": "alice"}
    a.send({"type": "typing", "to": "bob"})
    assert b.wait_for("typing")["to"] == "bob"
    b.send({"type": "history"})
    assert b.wait_for("history")["messages"] == []


def test_presence_join_and_leave(server):
    a = server.client("alice")
    b = server.client("bob")
    assert a.wait_for("join")["nick"] == "alice"     # the joiner gets its own join too
    assert a.wait_for("join")["nick"] == "bob"
    assert sorted(b.welcome["users"]) == ["alice", "bob"] and b.welcome["online"] == 2
    b.close()
    leave = a.wait_for("leave")
    assert leave == {"type": "leave", "nick": "bob", "reason": "quit"}


# -- nicks --------------------------------------------------------------------------------

@pytest.mark.parametrize("nick,code", [
    ("", "nick_invalid"), ("   ", "nick_invalid"), ("x" * 33, "nick_invalid"),
    ("bad\x07nick", "nick_invalid"), ("zero\u200bwidth", "nick_invalid"),
    # PROTOCOL.md: a missing or mistyped field is bad_request, whatever the field
    (42, "bad_request"), (None, "bad_request")])
def test_invalid_nicks_are_refused_and_connection_stays(server, nick, code):
    watcher = server.client("watcher")
    c = ChatClient(server.port)
    c.send({"type": "hello", "nick": nick, "proto": 1})
    expect_error(c, code)
    assert c.hello("valid-after")["nick"] == "valid-after"
    assert_chat_still_works(server, watcher, c)


def test_nick_is_trimmed_and_unique_case_insensitively(server):
    a = server.client("  Alice  ")
    assert a.welcome["nick"] == "Alice"
    b = ChatClient(server.port)
    err = b.hello("aLiCe", expect="error")
    assert err["code"] == "nick_owned" and not err["fatal"]
    assert b.hello("bob")["nick"] == "bob"
    assert_chat_still_works(server, a, b)


def test_a_nick_stays_with_its_device_after_leaving(server):
    watcher = server.client("watcher")
    a = server.client("alice")
    a.close()
    watcher.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "alice")
    other = ChatClient(server.port)
    assert other.hello("alice", expect="error")["code"] == "nick_owned"
    assert server.client("alice", device=a.device).welcome["nick"] == "alice"


# -- history, resume, dedup ---------------------------------------------------------------

def test_history_paging(server):
    a = server.client("alice")
    ids = [a.say("m%d" % i)["id"] for i in range(120)]
    b = server.client("bob")
    hist = b.welcome["history"]
    assert [m["id"] for m in hist] == ids[-100:] and b.welcome["has_more"] is True
    b.send({"type": "history", "before": hist[0]["id"], "limit": 15})
    page = b.wait_for("history")
    assert [m["id"] for m in page["messages"]] == ids[5:20] and page["has_more"] is True
    b.send({"type": "history", "before": ids[5], "limit": 200})
    last = b.wait_for("history")
    assert [m["id"] for m in last["messages"]] == ids[:5] and last["has_more"] is False


@pytest.mark.parametrize("bad", [{"limit": 0}, {"limit": 201}, {"before": "x"}, {"after": -1},
                                 {"limit": True}])
def test_history_bad_arguments(server, bad):
    a = server.client("alice")
    a.send({"type": "history", **bad})
    expect_error(a, "bad_request")
    assert_chat_still_works(server, a)


def test_resume_after_reconnect_has_no_gap_and_no_duplicate(server):
    a, b = server.client("alice"), server.client("bob")
    seen = [a.say("before %d" % i)["id"] for i in range(3)]
    for i in range(3):
        b.wait_for("msg")
    cursor = seen[-1]
    b.close()
    a.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "bob")
    missed = [a.say("missed %d" % i)["id"] for i in range(250)]   # more than one welcome holds
    b2 = ChatClient(server.port)
    welcome = b2.hello("bob", since=cursor, device=b.device)
    got = [m["id"] for m in welcome["history"]]
    assert welcome["has_more"] is True and len(got) == cs.WELCOME_HISTORY_RESUME
    while True:   # page backward to the cursor, as PROTOCOL.md says
        b2.send({"type": "history", "before": got[0], "after": cursor, "limit": 200})
        page = b2.wait_for("history")
        got = [m["id"] for m in page["messages"]] + got
        if not page["has_more"]:
            break
    assert got == missed
    live = a.say("live")
    assert b2.wait_for("msg")["id"] == live["id"] == missed[-1] + 1


def test_resend_with_same_cid_is_stored_once_and_reacknowledged(server):
    a, b = server.client("alice"), server.client("bob")
    first = a.say("only once", cid="fixed-1")
    b.wait_for("msg")
    a.close()
    b.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "alice")
    a2 = server.client("alice", device=a.device)
    again = a2.say("only once (resent)", cid="fixed-1")
    assert again == first                    # the original, not a new message
    assert [h for h in b.drain(0.3) if h["type"] == "msg"] == []   # bob does not get it twice
    b.send({"type": "history"})
    texts = [m["text"] for m in b.wait_for("history")["messages"]]
    assert texts.count("only once") == 1 and "only once (resent)" not in texts


def test_same_cid_from_different_users_are_different_messages(server):
    a, b = server.client("alice"), server.client("bob")
    assert a.say("from a", cid="k")["id"] != b.say("from b", cid="k")["id"]


# -- durability -----------------------------------------------------------------------

def test_kill_9_keeps_every_acknowledged_message_and_ids_keep_increasing(make_server, tmp_path):
    data = tmp_path / "durable"
    srv = make_server("--open", data_dir=data)
    a = srv.client("alice")
    acked = []
    stop = threading.Event()

    def pump():
        for i in range(100000):
            if stop.is_set():
                return
            try:
                a.send({"type": "msg", "text": "m%d" % i, "cid": "k%d" % i})
            except OSError:
                return

    # collect acks while a writer floods; kill -9 in the middle of the stream
    writer = threading.Thread(target=pump)
    writer.start()
    deadline = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline:
            h = a.wait_for(lambda h: h["type"] in ("msg", "error"), timeout=2)
            if h["type"] == "msg":
                acked.append(h["id"])
    finally:
        srv.kill9()
        stop.set()
        writer.join()
    assert len(acked) > 20
    srv2 = make_server("--open", data_dir=data)
    c = srv2.client("carol")
    stored = set()
    before = None
    while True:
        c.send({"type": "history", "limit": 200, **({"before": before} if before else {})})
        page = c.wait_for("history")
        stored.update(m["id"] for m in page["messages"])
        if not page["has_more"]:
            break
        before = page["messages"][0]["id"]
    assert set(acked) <= stored
    assert c.say("after restart")["id"] > max(stored)


def test_history_survives_a_clean_restart(make_server, tmp_path):
    data = tmp_path / "d"
    srv = make_server("--open", data_dir=data)
    sent = srv.client("alice").say("remember me")
    assert srv.stop() == 0
    srv2 = make_server("--open", data_dir=data)
    assert srv2.client("bob").welcome["history"][-1] == sent


def test_a_second_server_on_the_same_data_folder_refuses_to_start(make_server, tmp_path):
    """Two servers on one folder would hand out the same ids and delete each other's
    partial uploads at start: the second must stop with a clear message, harmlessly."""
    data = tmp_path / "shared"
    first = make_server("--open", data_dir=data)
    alice, bob = first.client("alice"), first.client("bob")
    said = alice.say("before the second server")
    bob.wait_for(lambda h: h.get("type") == "msg" and h["id"] == said["id"])
    payload = os.urandom(3000)
    alice.send({"type": "upload", "name": "half.bin", "size": len(payload), "cid": "up1"})
    upload = alice.wait_for("upload_ready")["upload"]
    alice.send({"type": "chunk", "upload": upload, "offset": 0}, payload[:1000])
    alice.send({"type": "upload_status", "upload": upload})
    assert alice.wait_for("upload_ready")["offset"] == 1000     # a partial file on disk

    second = subprocess.run(
        [sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(free_port()),
         "--data-dir", str(data), "--open", "--no-browser"],
        capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second
    assert "in use by another process" in second.stderr and str(data) in second.stderr
    assert "Traceback" not in second.stderr

    # the first server did not notice: the partial upload completes, chat goes on
    alice.send({"type": "chunk", "upload": upload, "offset": 1000, "last": True}, payload[1000:])
    shared = bob.wait_for(lambda h: h.get("type") == "msg" and h.get("file"))
    assert shared["file"]["size"] == len(payload)
    assert_chat_still_works(first, alice, bob)
    assert first.stop() == 0
    again = make_server("--open", data_dir=data)       # the lock went with the first server
    history = again.client("carol").welcome["history"]
    assert said in history and shared["id"] in [m["id"] for m in history]


class _Console:
    """A stand-in for sys.stdin: an interactive console, or a pipe."""

    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.fixture
def prompts(monkeypatch):
    """Every input() prompt shown; the frozen Windows .exe is simulated."""
    shown = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": shown.append(prompt) or "")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(cs, "IS_WINDOWS", True)
    monkeypatch.setattr(sys, "stdin", _Console(True))
    return shown


def _main_args(port, *extra):
    return ["--host", "127.0.0.1", "--port", str(port), "--no-browser", "--open", *extra]


def test_main_refuses_a_data_folder_in_use_and_the_exe_window_waits(tmp_path, prompts, caplog):
    holder = cs.MessageStore(str(tmp_path / "chat.sqlite3"))     # another server, in effect
    try:
        assert cs.main(_main_args(free_port(), "--data-dir", str(tmp_path))) == 2
    finally:
        holder.close()
    assert "in use by another process" in caplog.text and str(tmp_path) in caplog.text
    assert prompts == ["Press Enter to close this window."]
    # once the folder is free, the same command gets as far as the port (taken here)
    threads = set(threading.enumerate())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert cs.main(_main_args(taken.getsockname()[1], "--data-dir", str(tmp_path))) == 2
    assert "ddress already in use" in caplog.text or "10048" in caplog.text
    assert set(threading.enumerate()) == threads          # the disk thread was stopped too
    assert len(prompts) == 2
    store = cs.MessageStore(str(tmp_path / "chat.sqlite3"))      # and left it unlocked
    store.close()


def test_main_refuses_a_damaged_database_with_its_path(tmp_path, prompts, caplog):
    (tmp_path / "chat.sqlite3").write_bytes(b"this is not a database, " * 100)
    assert cs.main(_main_args(free_port(), "--data-dir", str(tmp_path))) == 2
    assert "cannot use the history database" in caplog.text
    assert str(tmp_path / "chat.sqlite3") in caplog.text and "not a database" in caplog.text
    assert "Traceback" not in caplog.text
    assert prompts == ["Press Enter to close this window."]
    assert (tmp_path / "chat.sqlite3").read_bytes() == b"this is not a database, " * 100


@pytest.mark.parametrize("frozen, windows, tty", [
    (False, True, True), (True, False, True), (True, True, False)])
def test_only_the_double_clicked_exe_waits_before_closing(monkeypatch, prompts, frozen,
                                                          windows, tty):
    if not frozen:
        monkeypatch.delattr(sys, "frozen")
    monkeypatch.setattr(cs, "IS_WINDOWS", windows)
    monkeypatch.setattr(sys, "stdin", _Console(tty))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert cs.main(_main_args(taken.getsockname()[1], "--memory")) == 2
    assert prompts == []


# -- limits ---------------------------------------------------------------------------

def test_flood_is_rate_limited_and_connection_stays(make_server):
    srv = make_server("--open", "--rate-limit", "5", "--rate-burst", "10")
    a, b = srv.client("alice"), srv.client("bob")
    for i in range(30):
        a.send({"type": "msg", "text": "flood %d" % i, "cid": "f%d" % i})
    replies = [a.wait_for(lambda h, i=i: "f%d" % i in (h.get("cid"), h.get("ref")))
               for i in range(30)]
    limited = [r for r in replies if r["type"] == "error"]
    assert limited and all(r["code"] == "rate_limited" and not r["fatal"] for r in limited)
    assert sum(r["type"] == "msg" for r in replies) >= 10
    time.sleep(0.5)
    assert a.say("after the flood")["type"] == "msg"
    assert_chat_still_works(srv, b)


def flood_until_lazy_leaves(srv, writer, reader, batches=40, per_batch=50, pause=0.0):
    """Writer broadcasts 8 KB messages; reader keeps up; returns lazy's leave event."""
    text = "x" * 8000
    n = 0
    for _ in range(batches):
        for _ in range(per_batch):
            writer.send({"type": "msg", "text": text, "cid": "w%d" % n})
            n += 1
        ack = writer.wait_for(lambda h, c="w%d" % (n - 1): h.get("cid") == c and
                              h["type"] == "msg", timeout=20)
        writer.inbox.clear()
        got = reader.wait_for(lambda h, i=ack["id"]: h.get("type") == "msg" and h["id"] == i,
                              timeout=20)
        assert got["cid"] == ack["cid"]     # the reader keeps receiving everything in time
        leaves = [h for h, _ in reader.inbox if h.get("type") == "leave"]
        reader.inbox.clear()
        if leaves:
            return leaves[0]
        time.sleep(pause)
    raise AssertionError("the client that never reads was not disconnected")


def never_reading_client(port, nick):
    lazy = socket.socket()
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.connect(("127.0.0.1", port))
    lazy.sendall(encode({"type": "hello", "nick": nick, "proto": 1}))
    return lazy


def test_client_that_never_reads_is_closed_others_keep_receiving(make_server):
    srv = make_server("--open", "--rate-limit", "0", "--out-hard-limit", "1000000",
                      "--out-soft-limit", "500000", "--out-soft-seconds", "60")
    lazy = never_reading_client(srv.port, "lazy")
    reader = srv.client("reader")
    writer = srv.client("writer")
    leave = flood_until_lazy_leaves(srv, writer, reader)
    assert leave == {"type": "leave", "nick": "lazy", "reason": "slow"}
    assert "output queue over the limit" in srv.log()
    assert_chat_still_works(srv, reader, writer)
    lazy.close()


def test_soft_output_limit_grace_period(make_server):
    srv = make_server("--open", "--rate-limit", "0", "--out-hard-limit", "500000000",
                      "--out-soft-limit", "200000", "--out-soft-seconds", "1")
    lazy = never_reading_client(srv.port, "lazy")
    reader = srv.client("reader")
    writer = srv.client("writer")
    t0 = time.monotonic()
    leave = flood_until_lazy_leaves(srv, writer, reader, batches=1000, per_batch=10,
                                    pause=0.01)
    assert leave["reason"] == "slow" and time.monotonic() - t0 >= 1.0
    lazy.close()


def test_server_full(make_server):
    srv = make_server("--open", "--max-clients", "2")
    a, b = srv.client("alice"), srv.client("bob")
    c = ChatClient(srv.port)
    c.send({"type": "hello", "nick": "carol", "proto": 1})
    frames = c.expect_closed()
    assert frames and frames[0]["code"] == "server_full" and frames[0]["fatal"] is True
    assert_chat_still_works_without_new_client(a, b)


def assert_chat_still_works_without_new_client(a, b):
    sent = a.say("still here")
    assert b.wait_for("msg")["id"] == sent["id"]


def test_ping_pong_and_idle_timeout(make_server):
    srv = make_server("--open", "--ping-after", "0.3", "--idle-timeout", "1.2")
    a = srv.client("alice")
    a.send({"type": "ping", "t": 42})
    assert a.wait_for("pong") == {"type": "pong", "t": 42}
    assert a.wait_for("ping", timeout=3) == {"type": "ping"}     # server pings a silent client
    frames = a.expect_closed(timeout=5)
    assert any(f.get("code") == "timeout" for f in frames)


def test_answering_pings_keeps_the_connection(make_server):
    srv = make_server("--open", "--ping-after", "0.3", "--idle-timeout", "1.0")
    a = srv.client("alice")
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        a.wait_for("ping", timeout=3)
        a.send({"type": "pong"})
    assert a.say("alive")["type"] == "msg"


# -- bad input: each gets its documented error; others are unaffected --------------------

@pytest.fixture
def room(server):
    watcher = server.client("watcher")
    return server, watcher


def test_garbage_first_byte_is_bad_frame(room):
    server, watcher = room
    c = ChatClient(server.port)
    c.send_raw(b"\x16\x03\x01garbage")       # e.g. a TLS hello
    frames = c.expect_closed()
    assert frames[0]["code"] == "bad_frame" and frames[0]["fatal"]
    assert_chat_still_works(server, watcher)


def test_length_over_limit_closes_before_reading(room):
    server, watcher = room
    c = server.client("big")
    c.send_raw(struct.pack(">II", cs.MAX_HEADER_BYTES + 1, 0))
    frames = c.expect_closed()
    assert frames[-1]["code"] == "frame_too_large"
    c2 = server.client("big2")
    c2.send_raw(struct.pack(">II", 10, 0xFFFFFFFF))
    assert c2.expect_closed()[-1]["code"] == "frame_too_large"
    assert_chat_still_works(server, watcher)


def test_zero_header_length_is_bad_frame(room):
    server, watcher = room
    c = server.client("zero")
    c.send_raw(struct.pack(">II", 0, 0))
    assert c.expect_closed()[-1]["code"] == "bad_frame"
    assert_chat_still_works(server, watcher)


def test_truncated_frame_then_eof_is_ignored(room):
    server, watcher = room
    c = server.client("trunc")
    whole = encode({"type": "msg", "text": "never complete", "cid": "t1"})
    c.send_raw(whole[:-3])
    c.sock.shutdown(socket.SHUT_WR)
    time.sleep(0.2)
    c.close()
    assert watcher.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "trunc")
    watcher.send({"type": "history"})
    assert all(m["text"] != "never complete" for m in watcher.wait_for("history")["messages"])
    assert_chat_still_works(server, watcher)


@pytest.mark.parametrize("raw, code", [
    (b"\xff\xfe\x00bad", "bad_json"),
    (b'{"type":"msg",', "bad_json"),
    (b"[1,2,3]", "bad_request"),
    (b'"just a string"', "bad_request"),
    (b'{"no_type":1}', "bad_request"),
    (b'{"type":"teleport"}', "unknown_type"),
    (b'{"type":"msg","cid":"a"}', "bad_request"),
    (b'{"type":"msg","text":5,"cid":"a"}', "bad_request"),
    (b'{"type":"msg","text":"hi"}', "bad_request"),
    (b'{"type":"msg","text":"hi","cid":7}', "bad_request"),
    (b'{"type":"msg","text":"","cid":"a"}', "bad_request"),
    (b'{"type":"msg","text":"hi","cid":"a","to":5}', "bad_request"),
])
def test_bad_headers_get_error_and_connection_stays(room, raw, code):
    server, watcher = room
    c = server.client("sender")
    c.send_raw(struct.pack(">II", len(raw), 0) + raw)
    expect_error(c, code)
    assert c.say("recovered")["type"] == "msg"
    assert_chat_still_works(server, watcher)


def test_payload_on_a_chat_message_is_refused(room):
    server, watcher = room
    c = server.client("sender")
    c.send({"type": "msg", "text": "hi", "cid": "p"}, payload=b"unexpected")
    expect_error(c, "bad_request")
    assert_chat_still_works(server, watcher)


def test_text_too_long(room):
    server, watcher = room
    c = server.client("talker")
    err = c.say("é" * (cs.MAX_TEXT_BYTES // 2 + 1))     # 2 bytes each in UTF-8
    assert err["type"] == "error" and err["code"] == "text_too_long"
    assert c.say("é" * (cs.MAX_TEXT_BYTES // 2))["type"] == "msg"   # exactly at the limit
    assert_chat_still_works(server, watcher)


def test_msg_before_hello_is_not_joined(room):
    server, watcher = room
    c = ChatClient(server.port)
    c.send({"type": "msg", "text": "too early", "cid": "e"})
    expect_error(c, "not_joined")
    assert c.hello("late")["type"] == "welcome"
    assert_chat_still_works(server, watcher)


def test_second_hello_and_bad_proto(room):
    server, watcher = room
    c = server.client("twice")
    c.send({"type": "hello", "nick": "again", "proto": 1})
    expect_error(c, "bad_request")
    d = ChatClient(server.port)
    d.send({"type": "hello", "nick": "future", "proto": 99})
    assert d.expect_closed()[0]["code"] == "proto_unsupported"
    for since in (-5, 2 ** 70, "12", 1.5):
        e = ChatClient(server.port)
        e.send({"type": "hello", "nick": "x", "proto": 1, "since": since})
        expect_error(e, "bad_request")
        assert e.hello("ok-%s" % since)["type"] == "welcome"     # the connection stays
        e.close()
    assert_chat_still_works(server, watcher)


# -- pairing token and shutdown -----------------------------------------------------------

def test_token_required_unless_open(make_server, tmp_path):
    srv = make_server(data_dir=tmp_path / "tok")
    token = srv.pairing_token()
    assert token
    for bad in (None, "wrong", token + "x"):
        c = ChatClient(srv.port)
        hello = {"type": "hello", "nick": "mallory", "proto": 1}
        if bad is not None:
            hello["token"] = bad
        c.send(hello)
        frames = c.expect_closed(timeout=15)
        assert frames[0]["code"] == "auth_failed" and frames[0]["fatal"]
    ok = srv.client("alice", token=token)
    assert ok.welcome["nick"] == "alice"


def test_sigterm_sends_bye_and_exits_zero_quickly(make_server):
    srv = make_server("--open")
    a = srv.client("alice")
    a.say("hi")
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert a.wait_for("bye")["reason"] == "shutdown"
    assert srv.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2.0
    srv.proc = None
    srv.log_file.close()


def test_sigint_is_clean_too(make_server):
    srv = make_server("--open")
    a = srv.client("alice")
    srv.proc.send_signal(signal.SIGINT)
    assert a.wait_for("bye")["type"] == "bye"
    assert srv.proc.wait(5) == 0
    srv.proc = None
    srv.log_file.close()


# -- CLI ----------------------------------------------------------------------------------

def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, cs.__file__, "--help"], capture_output=True,
                         text=True, timeout=30).stdout
    for action in cs.build_arg_parser()._actions:
        for flag in action.option_strings:
            assert flag in out
    for env in ("CHAT_PORT", "CHAT_DATA_DIR", "CHAT_MAX_CLIENTS", "CHAT_OPEN"):
        assert env in out
    assert "512" in out     # the Windows select() cap is explained


def test_flags_come_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CHAT_PORT", "6123")
    monkeypatch.setenv("CHAT_OPEN", "yes")
    monkeypatch.setenv("CHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CHAT_RATE_LIMIT", "2.5")
    args = cs.build_arg_parser().parse_args([])
    assert (args.port, args.open, args.data_dir, args.rate_limit) == (6123, True, str(tmp_path), 2.5)
    assert cs.build_arg_parser().parse_args(["--port", "7000"]).port == 7000   # flags win


def test_default_data_dir_follows_platform_conventions(monkeypatch):
    monkeypatch.setattr(cs, "IS_WINDOWS", False)
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    assert cs.default_data_dir() == os.path.join("/xdg", "chatserver")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert cs.default_data_dir() == os.path.expanduser("~/.local/share/chatserver")
    monkeypatch.setattr(cs, "IS_WINDOWS", True)
    monkeypatch.setenv("LOCALAPPDATA", "C:/Users/u/AppData/Local")
    assert cs.default_data_dir() == os.path.join("C:/Users/u/AppData/Local", "ChatServer")


def test_windows_caps_max_clients_below_select_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(cs, "IS_WINDOWS", True)
    srv = cs.Server(cs.Config(memory=True, open=True, max_clients=5000))
    try:
        assert srv.max_clients == cs.WINDOWS_SELECT_MAX_CLIENTS
        # clients + sockets being refused + listener + wake-up pair end must fit select()
        assert cs.WINDOWS_SELECT_MAX_CLIENTS + cs.REJECT_POOL + 2 <= 512
    finally:
        srv.store.close()


def _files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files)


def test_memory_mode_keeps_nothing_on_disk(make_server, tmp_path):
    """--memory writes nothing into a data folder, given (--data-dir) or default (HOME,
    XDG_DATA_HOME, LOCALAPPDATA: folders of this test), and its temporary folder (under
    TMPDIR, also this test's) holds the shared files only while it runs."""
    home, xdg, given, tmp = (tmp_path / n for n in ("home", "xdg", "given", "tmp"))
    for folder in (home, xdg, tmp):
        folder.mkdir()
    env = {"HOME": str(home), "XDG_DATA_HOME": str(xdg), "LOCALAPPDATA": str(home),
           "TMPDIR": str(tmp)}
    srv = make_server("--open", "--rate-limit", "0", "--memory", "--data-dir", str(given),
                      data_dir=tmp_path / "log", env=env)
    a, b = srv.client("alice"), srv.client("bob")
    assert a.say("ephemeral")["type"] == "msg"
    data = os.urandom(3000)
    a.send({"type": "upload", "name": "in-temp.bin", "size": len(data), "cid": "m1"})
    ready = a.wait_for("upload_ready")
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, data)
    shared = b.wait_for(lambda h: h.get("type") == "msg" and h.get("file"))
    assert shared["file"]["size"] == len(data)
    assert srv.client("carol").welcome["history"][-2]["text"] == "ephemeral"
    assert not given.exists(), _files_under(given)
    assert _files_under(home) == [] and _files_under(xdg) == []
    in_temp = _files_under(tmp)
    assert len(in_temp) == 1 and in_temp[0].endswith(os.path.join("files", shared["file"]["id"]))
    assert srv.stop() == 0
    assert os.listdir(tmp) == []              # the temporary folder went with the server


def test_reconnect_with_the_device_key_takes_over_a_dead_connection(server):
    watcher = server.client("watcher")
    old = server.client("alice")       # its network "drops": the server still holds it
    session = old.welcome["session"]
    watcher.drain(0.2)
    stranger = ChatClient(server.port)
    assert stranger.hello("alice", expect="error")["code"] == "nick_owned"
    bad = ChatClient(server.port)       # the session is no credential for this any more
    bad.send({"type": "hello", "nick": "alice", "proto": 1, "session": session})
    expect_error(bad, "nick_owned")
    new = ChatClient(server.port)
    assert new.hello("alice", device=old.device)["nick"] == "alice"
    assert old.expect_closed()[-1] == {"type": "bye", "reason": "replaced"}
    assert new.say("back")["type"] == "msg"
    frames = watcher.drain(0.3)
    assert not [f for f in frames if f["type"] in ("leave", "join") and f.get("nick") == "alice"]
    assert [f["text"] for f in frames if f["type"] == "msg"] == ["back"]


def test_history_echoes_the_request_cid(server):
    a = server.client("alice")
    a.send({"type": "history", "cid": "h-7", "limit": 5})
    assert a.wait_for("history")["cid"] == "h-7"
    a.send({"type": "history", "cid": "h-8", "limit": 500})
    assert expect_error(a, "bad_request")["ref"] == "h-8"


def test_error_reaches_a_client_that_keeps_sending_after_a_fatal_frame(room):
    """The server half-closes and drains instead of resetting: the error is not lost."""
    server, watcher = room
    c = server.client("blaster")
    c.send_raw(struct.pack(">II", 10, cs.MAX_PAYLOAD_BYTES * 4) + os.urandom(2 * 1024 * 1024))
    frames = c.expect_closed(timeout=10)
    assert frames and frames[-1]["code"] == "frame_too_large"
    leave = watcher.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "blaster")
    assert leave["reason"] == "error"
    assert_chat_still_works(server, watcher)


def test_a_bug_in_a_handler_costs_one_connection_not_the_server(caplog):
    """The loop's safety net: an unexpected exception closes the connection it came from."""
    srv = cs.Server(cs.Config(host="127.0.0.1", port=0, memory=True, open=True, rate_limit=0))
    port = srv.listen()[1]

    def injected_bug(conn, header, payload):
        raise RuntimeError("injected bug")
    srv.chat.handlers["explode"] = (injected_bug, cs.Handler("explode"))
    loop = threading.Thread(target=srv.serve_forever, daemon=True)
    loop.start()
    try:
        a, b = ChatClient(port), ChatClient(port)
        a.hello("alice")
        b.hello("bob")
        a.send({"type": "explode"})
        a.expect_closed()
        leave = b.wait_for("leave")
        assert leave == {"type": "leave", "nick": "alice", "reason": "error"}
        assert b.say("still here")["type"] == "msg"
        assert "injected bug" in caplog.text
    finally:
        srv.stop()
        loop.join(5)
    assert not loop.is_alive()


FUZZ_TYPES = ["hello", "msg", "history", "typing", "ping", "pong", "upload", "chunk",
              "upload_status", "upload_cancel", "download", "download_cancel", "bogus"]
FUZZ_FIELDS = ["nick", "client", "proto", "token", "since", "session", "text", "cid", "to",
               "before", "after", "limit", "t", "name", "size", "sha256", "mime", "upload",
               "offset", "last", "file"]
FUZZ_VALUES = [None, True, False, 0, -1, 1, 2 ** 63, 2 ** 70, -2 ** 70, 1.5, 1e308, "", "x",
               "alice", "watcher", "a" * 100, "\u00e9" * 9000, [], [1], {}, {"a": 1}, "\x00",
               "../x", "0" * 64]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_headers_never_cause_an_internal_error(server, seed):
    """Every type with random fields of every JSON kind, joined and not: each frame gets an
    answer or nothing, never an internal error; other clients keep chatting."""
    rng = random.Random(seed)
    watcher = server.client("watcher")
    uploads = []
    for round_ in range(15):
        c = ChatClient(server.port)
        try:
            if round_ % 2:
                c.hello("fuzz%d" % round_)
            for _ in range(40):
                header = {"type": rng.choice(FUZZ_TYPES)}
                for field in rng.sample(FUZZ_FIELDS, rng.randint(0, 5)):
                    header[field] = rng.choice(FUZZ_VALUES)
                if uploads and rng.random() < 0.3:
                    header["upload"] = rng.choice(uploads)
                c.send(header, os.urandom(rng.randint(1, 50)) if rng.random() < 0.3 else b"")
            uploads += [h["upload"] for h in c.drain(0.1) if h.get("type") == "upload_ready"]
        except (Closed, OSError):
            pass        # fatal errors (auth, proto) close the connection: that is allowed
        c.close()
    assert_chat_still_works(server, watcher)
    log = server.log()
    assert "internal error" not in log and "Traceback" not in log
