"""The promises of docs/RELIABILITY.md and docs/PROTOCOL.md that no other test held: each test
here fails on a named mutation of tests/mutations/catalog.py (the bug it models is in the
test's docstring) and passes on the real server.

Sections: pairing token and sessions; durability; resume; delivery order; defaults as
shipped; files; presence; WebSocket and HTTP answers; platform paths."""
import hashlib
import itertools
import os
import re
import signal
import socket
import sqlite3
import struct
import threading
import time

import pytest
import websockets

import chatserver as cs
from chatclient import ChatClient, encode
from test_core import assert_chat_still_works, expect_error
from test_files import InProcessServer, announce, download, upload
from test_http import (RawHttp, http, http_download, http_upload, raw_ws_joined,
                       received_close_code, ws_connect, ws_hello, ws_wait_for)

MiB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELIABILITY_MD = os.path.join(ROOT, "docs", "RELIABILITY.md")

# Values of the contract itself (docs/PROTOCOL.md), not read from the code under test: a
# mutated constant must not move the expectation with it.
PRESENCE_LIMIT = 500          # "join and leave are sent only while at most 500 users are online"
WELCOME_USERS_MAX = 500       # welcome.users: "at most the first 500"
UPLOAD_GRACE = 3600           # "Partial uploads are kept for 1 hour"


@pytest.fixture
def clean_env(monkeypatch):
    """No CHAT_* variable from the environment the tests run in: defaults as shipped."""
    for name in list(os.environ):
        if name.startswith("CHAT_"):
            monkeypatch.delenv(name)


_SOURCES = iter(range(2, 250))
_PROBES = itertools.count(1)


def fresh_source():
    """Another loopback address each call: every client looks like a new machine to the
    per-address auth slow-down, so a dozen wrong tokens are all answered at once."""
    return "127.0.0.%d" % next(_SOURCES)


MISSING = object()            # a hello without the field at all


def token_variants(token):
    """Wrong tokens a weakened check might let through, by name."""
    last = "A" if token[-1] != "A" else "B"
    return {
        "missing": MISSING,
        "null": None,
        "empty": "",
        "one_character_prefix": token[:1],
        "truncated": token[:-1],
        "one_character_longer": token + "x",
        "same_length_wrong": token[:-1] + last,
        "other_case": token.swapcase(),
        "a_number": 12345,
        "a_list": [token],
    }


def with_token(value):
    return {} if value is MISSING else {"token": value}


@pytest.fixture
def protected(make_server):
    """A server with a pairing token (as shipped), rate limiting relaxed; its token; a user
    who joined with it."""
    srv = make_server("--rate-limit", "0")
    token = srv.pairing_token()
    watcher = srv.client("watcher", token=token)
    return srv, token, watcher


def assert_protected_chat_still_works(srv, token, *observers):
    probe = srv.client("probe%d" % next(_PROBES), token=token)
    sent = probe.say("still alive")
    assert sent["type"] == "msg"
    for obs in observers:
        assert obs.wait_for(lambda h: h.get("type") == "msg" and h["id"] == sent["id"])
    probe.close()


# == Pairing token and sessions ===========================================================

def test_every_wrong_token_is_refused_over_the_framed_protocol(protected):
    """Bugs: the token compared as a prefix, case-insensitively, or only when present."""
    srv, token, watcher = protected
    for variant, value in token_variants(token).items():
        c = ChatClient(srv.port, source=fresh_source())
        c.send({"type": "hello", "nick": "mallory", "proto": 1, **with_token(value)})
        reply = c.recv()
        assert reply["type"] == "error" and reply["code"] == "auth_failed", (variant, reply)
        assert reply["fatal"] is True, variant
        assert not [f for f in c.expect_closed(timeout=10) if f["type"] == "welcome"], variant
    assert srv.client("alice", token=token).welcome["nick"] == "alice"
    assert [h for h in watcher.drain(0.2) if h.get("nick") == "mallory"] == []
    assert_protected_chat_still_works(srv, token, watcher)


def ws_from_fresh_source(srv):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5,
                                    source_address=(fresh_source(), 0))
    return ws_connect(srv, sock=sock)


def test_every_wrong_token_is_refused_over_websocket(protected):
    srv, token, watcher = protected
    for variant, value in token_variants(token).items():
        with ws_from_fresh_source(srv) as ws:
            err = ws_hello(ws, "mallory", **with_token(value))
            assert err["type"] == "error" and err["code"] == "auth_failed", (variant, err)
            with pytest.raises(websockets.ConnectionClosed):
                ws.recv(timeout=10)
            assert received_close_code(ws) == 1008, variant
    with ws_from_fresh_source(srv) as ws:
        assert ws_hello(ws, "wendy", token=token)["type"] == "welcome"
    assert_protected_chat_still_works(srv, token, watcher)


def session_variants(session):
    return ["", session[:1], session[:-1], session + "x",
            session[:-1] + ("A" if session[-1] != "A" else "B"), session.swapcase()]


def test_every_wrong_session_is_refused_by_the_http_file_routes(protected):
    """Bug: the session of POST/GET /files looked up as a prefix: an empty or truncated one
    opens every private file."""
    srv, token, watcher = protected
    bob = srv.client("bob", token=token)
    res = http_upload(srv, watcher.welcome["session"], b"for bob only", name="dm.txt",
                      to="bob", cid="dm-1")
    assert res.status == 201, res
    file_id = res.json()["file"]["id"]
    for wrong in session_variants(watcher.welcome["session"]):
        got = http_download(srv, file_id, wrong)
        assert got.status == 401 and got.json()["error"] == "auth_failed", (wrong, got)
        assert b"for bob only" not in got.body
        posted = http_upload(srv, wrong, b"x", cid="wrong-" + str(len(wrong)))
        assert posted.status == 401 and posted.json()["error"] == "auth_failed", (wrong, posted)
    assert http_download(srv, file_id, bob.welcome["session"]).body == b"for bob only"
    assert sorted(os.listdir(os.path.join(srv.data_dir, "uploads"))) == []
    assert_protected_chat_still_works(srv, token, watcher, bob)


def test_a_wrong_device_key_cannot_take_a_nick_over(protected):
    """Bug: the device key compared as a prefix (or the session accepted instead of it):
    anyone takes over a user's nick."""
    srv, token, watcher = protected
    alice = srv.client("alice", token=token)
    wrongs = [w for w in session_variants(alice.device) if isinstance(w, str) and
              re.fullmatch(r"[A-Za-z0-9_-]{22,128}", w)]
    assert len(wrongs) >= 3
    for wrong in wrongs + [None]:
        c = ChatClient(srv.port)
        hello = {"type": "hello", "nick": "alice", "proto": 1, "token": token,
                 "session": alice.welcome["session"]}
        if wrong is not None:
            hello["device"] = wrong
        c.send(hello)
        reply = c.recv()
        assert reply["type"] == "error" and reply["code"] == "nick_owned", (wrong, reply)
        assert reply["fatal"] is False
        c.close()
    assert alice.say("still mine")["type"] == "msg"
    assert_protected_chat_still_works(srv, token, watcher, alice)


@pytest.mark.parametrize("host", ["localhost.evil.example", "localhostevil.example",
                                  "127.0.0.1.nip.io", "evil.example", "127.1"])
def test_the_pairing_page_refuses_look_alike_host_names(make_server, host):
    """Bug: the pairing page's Host check weakened to a prefix (`localhost…`): a page of
    another site, rebound to 127.0.0.1 by DNS, reads the token."""
    # names the operator allowed (--allow-host) pass the server's Host check: the pairing
    # page must still refuse every name that is not a loopback one
    srv = make_server("--rate-limit", "0", "--allow-host", host)
    token = srv.pairing_token()
    for path in ("/pair", "/qr.svg", "/qr.png"):
        conn = RawHttp(srv.port)
        conn.send(("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, srv.port)).encode())
        res = conn.read_response()
        conn.close()
        assert res.status == 403 and res.json()["error"] == "forbidden", (host, path, res)
        assert token.encode() not in res.body
    for good in ("127.0.0.1", "localhost", "[::1]"):
        conn = RawHttp(srv.port)
        conn.send(("GET /pair HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (good, srv.port)).encode())
        assert conn.read_response().status == 200, good
        conn.close()


# == Durability ============================================================================

def peek(sock):
    """What has arrived on `sock` and is not read yet (nothing is consumed)."""
    try:
        return sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError, TimeoutError):   # nothing there
        return b""


def msg_ids(data):
    """Ids of the complete `msg` frames in a framed byte string."""
    ids, pos = [], 0
    while len(data) - pos >= 8:
        hlen, plen = struct.unpack_from(">II", data, pos)
        if len(data) < pos + 8 + hlen + plen:
            break
        header = cs.decode_header(data[pos + 8:pos + 8 + hlen])
        if header["type"] == "msg":
            ids.append(header["id"])
        pos += 8 + hlen + plen
    return ids


def test_no_client_receives_a_message_before_its_commit(tmp_path):
    """Fault injection between delivery and commit: at every commit of a stored message,
    no client has received that message yet (bug: deliver and flush, then commit — an ack
    a crash can take back). On loopback a sent byte is in the peer's buffer at once, so
    peeking at an unread client socket from inside the commit is exact."""
    srv = cs.Server(cs.Config(host="127.0.0.1", port=0, data_dir=str(tmp_path / "d"),
                              open=True, rate_limit=0))
    port = srv.listen()[1]
    loop = threading.Thread(target=srv.serve_forever, daemon=True)
    loop.start()
    try:
        alice, bob = ChatClient(port), ChatClient(port)
        alice.hello("alice")
        bob.hello("bob")
        alice.wait_for(lambda h: h["type"] == "join" and h["nick"] == "bob")
        bob.drain(0.2)                       # from here on bob reads nothing until the end
        commits = []
        real_commit = srv.store.commit

        def observed_commit():
            if srv.store.in_transaction:
                commits.append((srv.store.last_id, msg_ids(peek(bob.sock))))
            real_commit()
        srv.store.commit = observed_commit
        acked = [alice.say("durable %d" % i)["id"] for i in range(20)]
        srv.store.commit = real_commit
        stored = {last_id: seen for last_id, seen in commits}
        assert set(acked) <= set(stored), (acked, commits)
        for msg_id in acked:
            assert msg_id not in stored[msg_id], \
                "message %d reached bob before it was committed" % msg_id
        assert [bob.wait_for("msg")["id"] for _ in acked] == acked
    finally:
        srv.stop()
        loop.join(10)
    assert not loop.is_alive()


def server_as_shipped(*flags):
    """A Server built the way main() builds it from these command-line flags."""
    return cs.Server(cs.config_from_args(cs.build_arg_parser().parse_args(list(flags))))


def pragma(srv, name):
    return srv.store.db.execute("PRAGMA %s" % name).fetchone()[0]


def test_sqlite_pragmas_in_force_as_shipped(tmp_path, clean_env):
    """synchronous=FULL by default (an acknowledged message survives a power cut), WAL, and
    the exclusive lock that keeps a second server off the folder. Bugs: synchronous=OFF,
    --sync defaulting to normal, no WAL."""
    srv = server_as_shipped("--data-dir", str(tmp_path / "d"))
    try:
        assert pragma(srv, "synchronous") == 2          # FULL
        assert pragma(srv, "journal_mode") == "wal"
        assert pragma(srv, "locking_mode") == "exclusive"
    finally:
        srv.shutdown()
    srv = server_as_shipped("--data-dir", str(tmp_path / "n"), "--sync", "normal")
    try:
        assert pragma(srv, "synchronous") == 1          # NORMAL: survives a process crash
        assert pragma(srv, "journal_mode") == "wal"
    finally:
        srv.shutdown()


# == Resume ================================================================================

def test_resume_after_a_small_gap_has_no_gap_and_no_duplicate(server):
    """Bug: welcome for `since` skips (or repeats) the message right after it. The test of
    250 missed messages pages; here all missed ones fit in welcome."""
    a, b = server.client("alice"), server.client("bob")
    seen = [a.say("seen %d" % i)["id"] for i in range(3)]
    assert [b.wait_for("msg")["id"] for _ in seen] == seen
    b.close()
    a.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "bob")
    missed = [a.say("missed %d" % i)["id"] for i in range(3)]
    back = ChatClient(server.port)
    welcome = back.hello("bob", since=seen[-1], device=b.device)
    assert [m["id"] for m in welcome["history"]] == missed
    assert [m["text"] for m in welcome["history"]] == ["missed %d" % i for i in range(3)]
    assert welcome["has_more"] is False and welcome["last_id"] == missed[-1]
    up_to_date = ChatClient(server.port)
    welcome = up_to_date.hello("carol", since=missed[-1])
    assert welcome["history"] == [] and welcome["has_more"] is False
    live = a.say("live")
    assert back.wait_for("msg")["id"] == live["id"] == missed[-1] + 1


def test_a_resume_in_the_middle_of_a_burst_gets_welcome_first_and_nothing_twice(server):
    """Bug: a hello read in the same loop turn as someone's messages (read before it) got
    those messages live before its welcome, and again in the welcome's history; a client
    taking `since` from the newest id it saw then skipped the gap below. A busy sender makes
    that turn likely: the hello arrives while the previous burst is being committed."""
    a, b = server.client("alice"), server.client("bob")
    device, seen = b.device, 0
    b.close()
    burst = lambda tag: b"".join(encode({"type": "msg", "text": "%s %d" % (tag, i),  # noqa
                                         "cid": "%s-%d" % (tag, i)}) for i in range(60))
    for attempt in range(15):
        back = ChatClient(server.port)                  # connected before the burst
        a.send_raw(burst("early%d" % attempt))
        a.send_raw(burst("late%d" % attempt))
        back.send({"type": "hello", "nick": "bob", "client": "tests/1", "proto": 1,
                   "since": seen, "device": device})
        first = back.recv()
        assert first["type"] == "welcome", first
        ids = [m["id"] for m in first["history"]]
        assert first["has_more"] is False and ids == list(range(seen + 1, seen + 1 + len(ids)))
        while not ids or ids[-1] < seen + 120:        # the rest of both bursts, live
            h = back.recv()
            if h["type"] == "msg":
                ids.append(h["id"])
        assert ids == list(range(seen + 1, seen + 121)), "attempt %d" % attempt
        seen += 120
        for _ in range(120):
            a.wait_for("msg")
        back.close()
        a.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "bob")


def test_resume_after_a_small_gap_over_websocket(server):
    a = server.client("alice")
    with ws_connect(server) as ws:
        device = ws_hello(ws, "wendy")["device"]       # issued: the page keeps it
        seen = [a.say("seen %d" % i)["id"] for i in range(2)]
        assert [ws_wait_for(ws, "msg")["id"] for _ in seen] == seen
    a.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "wendy")
    missed = [a.say("missed %d" % i, to=None)["id"] for i in range(4)]
    with ws_connect(server) as ws:
        welcome = ws_hello(ws, "wendy", since=seen[-1], device=device)
        assert [m["id"] for m in welcome["history"]] == missed
        assert welcome["has_more"] is False
        live = a.say("live")
        assert ws_wait_for(ws, "msg")["id"] == live["id"]


# == Delivery order ========================================================================

def test_delivery_order_is_id_order_with_dms_and_broadcasts_in_one_turn(server):
    """Bug: a turn's targeted frames (DMs) sent before its broadcasts: the recipient then
    sees ids out of order. One write of 12 messages is one loop turn."""
    a, b, c = server.client("alice"), server.client("bob"), server.client("carol")
    for client in (a, b, c):
        client.drain(0.2)
    frames = []
    for i in range(12):
        header = {"type": "msg", "text": "m%d" % i, "cid": "o%d" % i}
        if i % 3 == 1:
            header["to"] = "bob"
        frames.append(encode(header))
    a.send_raw(b"".join(frames))
    for client, count in ((a, 12), (b, 12), (c, 8)):
        got = [client.wait_for("msg") for _ in range(count)]
        ids = [m["id"] for m in got]
        assert ids == sorted(ids) and len(set(ids)) == count, (client.welcome["nick"], ids)
        assert [m["text"] for m in got] == ["m%d" % i for i in range(12)
                                            if client is not c or i % 3 != 1]


# == Defaults as shipped ===================================================================

def _size(n):
    """65536 -> "64 KiB", 1114112 -> "1 MiB + 64 KiB", as docs/RELIABILITY.md writes them."""
    parts = []
    for unit, factor in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024), ("B", 1)):
        count, n = divmod(n, factor)
        if count:
            parts.append("%d %s" % (count, unit))
    return " + ".join(parts) or "0 B"


def _seconds(value):
    if value % 3600 == 0:
        hours = int(value // 3600)
        return "%d hour%s" % (hours, "" if hours == 1 else "s")
    return "%g s" % value


def markdown_table(text, heading):
    """Rows (dicts by column name) of the first table under the `## heading` line."""
    section = text.split("\n## " + heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    names = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append(dict(zip(names, cells)))
    return rows


def shipped_config():
    return cs.config_from_args(cs.build_arg_parser().parse_args([]))


def test_defaults_as_shipped_are_the_limits_reliability_md_lists(clean_env):
    """Bugs: lax defaults (hard output limit 1 TiB, grace 3,600 s, no rate limit, idle
    9,000 s, 100,000 clients, ...): every row of the Limits table is compared with what the
    command line gives when no flag is set, and Config() agrees with it."""
    shipped = shipped_config()
    expected = {
        "frame header / payload": "%s / %s" % (_size(cs.MAX_HEADER_BYTES),
                                               _size(cs.MAX_PAYLOAD_BYTES)),
        "message text": _size(cs.MAX_TEXT_BYTES),
        "nick": "1–%d characters" % cs.MAX_NICK_CHARS,
        "HTTP request line / header block / header count": "%s / %s / %d" % (
            _size(cs.HTTP_MAX_REQUEST_LINE), _size(cs.HTTP_MAX_HEADER_BYTES),
            cs.HTTP_MAX_HEADERS),
        "WebSocket frame and message": _size(cs.WS_MAX_FRAME) if
        cs.WS_MAX_FRAME == cs.WS_MAX_MESSAGE else "frame and message differ",
        "output queue per connection": "hard %s, soft %s for %s" % (
            _size(shipped.out_hard), _size(shipped.out_soft), _seconds(shipped.out_soft_seconds)),
        "file size / free disk kept / uploads per user": "%s / %s / %d" % (
            _size(shipped.max_file_size), _size(shipped.min_free_disk), shipped.max_uploads),
        "partial upload kept": _seconds(cs.UPLOAD_GRACE),
        "silence before ping / close; HTTP silence": "%s / %s; %s" % (
            _seconds(shipped.ping_after), _seconds(shipped.idle_timeout),
            _seconds(shipped.http_timeout)),
        "clients": "%d (%d on Windows: `select()` handles 512 sockets)" % (
            shipped.max_clients, cs.WINDOWS_SELECT_MAX_CLIENTS),
        "presence events / nicks listed in welcome": "while at most %d online / the first %d"
        % (cs.PRESENCE_LIMIT, cs.WELCOME_USERS_MAX),
        "messages per second per connection": "%g, burst %d" % (shipped.rate_limit,
                                                                shipped.rate_burst),
    }
    with open(RELIABILITY_MD, encoding="utf-8") as f:
        doc = f.read()
    documented = {row["limit"]: row["value"] for row in markdown_table(doc, "Limits")}
    assert set(documented) == set(expected), "rows without a check: %s" % (
        set(documented) ^ set(expected))
    for limit, value in documented.items():
        assert value == expected[limit], limit
    flood = [row for row in markdown_table(doc, "Nobody can hurt anybody else")
             if row["input"] == "flood"][0]
    assert "token bucket, %g/s, burst %d" % (shipped.rate_limit, shipped.rate_burst) in \
        flood["answer"]
    assert shipped.sync == "full" and shipped.open is False
    assert cs.WINDOWS_SELECT_MAX_CLIENTS + cs.REJECT_POOL + 2 <= 512
    in_process = cs.Config()
    for name, value in vars(shipped).items():
        assert getattr(in_process, name) == value, name


def test_a_default_server_rate_limits_a_flood(make_server):
    """Bug: no rate limit by default (every other flood test sets its own)."""
    srv = make_server("--open")
    a, b = srv.client("alice"), srv.client("bob")
    a.send_raw(b"".join(encode({"type": "msg", "text": "f%d" % i, "cid": "f%d" % i})
                        for i in range(80)))
    replies = [a.wait_for(lambda h, i=i: "f%d" % i in (h.get("cid"), h.get("ref")))
               for i in range(80)]
    limited = [r for r in replies if r["type"] == "error"]
    assert limited and all(r["code"] == "rate_limited" and not r["fatal"] for r in limited)
    assert 50 <= sum(r["type"] == "msg" for r in replies) < 80
    assert_chat_still_works(srv, b)


def test_a_real_size_upload_passes_the_default_rate_limit(make_server):
    """Bug: `chunk` frames counted by the rate limit: a default server refuses any upload of
    more chunks than the burst (every other upload test runs with --rate-limit 0)."""
    srv = make_server("--open")
    a, b = srv.client("alice"), srv.client("bob")
    data = os.urandom(16 * MiB)
    chunk = 64 * 1024                    # 256 chunks, five times the burst
    a.send({"type": "upload", "name": "video.mp4", "size": len(data), "cid": "v1",
            "sha256": hashlib.sha256(data).hexdigest()})
    ready = a.wait_for(lambda h: h["type"] in ("upload_ready", "error"))
    assert ready["type"] == "upload_ready", ready
    a.send_raw(b"".join(encode({"type": "chunk", "upload": ready["upload"], "offset": off},
                               data[off:off + chunk]) for off in range(0, len(data), chunk)))
    result = a.wait_for(lambda h: h["type"] == "error" or
                        (h["type"] == "msg" and h.get("cid") == "v1"), timeout=60)
    assert result["type"] == "msg", result
    assert result["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert b.wait_for(lambda h: h.get("type") == "msg" and h["id"] == result["id"])
    assert a.say("and a message after it")["type"] == "msg"


# == Files =================================================================================

@pytest.fixture
def files_server(make_server):
    return make_server("--open", "--rate-limit", "0")


def test_download_cancel_stops_the_stream(files_server):
    """Bug: download_cancel does nothing. After it, at most what was already queued (and
    in the socket buffers) arrives; never the rest, never download_end."""
    a = files_server.client("alice")
    b = ChatClient(files_server.port, rcvbuf=64 * 1024)   # however large the OS buffers are,
    b.hello("bob")                                        # the file cannot be in flight whole
    data = os.urandom(32 * MiB)
    file_id = upload(a, data)["file"]["id"]
    b.send({"type": "download", "file": file_id, "offset": 0})
    b.wait_for("download_start")
    b.wait_for("file_chunk")
    b.send({"type": "download_cancel", "file": file_id})
    received, ended = 0, None
    while True:
        try:
            header, payload = b.recv(timeout=1.0, with_payload=True)
        except TimeoutError:
            break                          # a second of silence: the stream has stopped
        if header["type"] == "file_chunk":
            received += len(payload)
        elif header["type"] == "download_end":
            ended = header
            break
    assert ended is None, "the cancelled download went on to its end"
    assert received < len(data) // 2
    b.send({"type": "ping", "t": "after cancel"})
    assert b.wait_for("pong")["t"] == "after cancel"
    assert_chat_still_works(files_server, a, b)


def test_directed_typing_reaches_only_its_target(server):
    """Bug: a directed `typing` sent to everyone (with two clients a leak is invisible)."""
    a, b, c = server.client("alice"), server.client("bob"), server.client("carol")
    for client in (a, b, c):
        client.drain(0.2)
    a.send({"type": "typing", "to": "bob"})
    assert b.wait_for("typing") == {"type": "typing", "from": "alice", "to": "bob"}
    marker = a.say("after typing")          # read by alice: what came before it is kept
    c.wait_for(lambda h: h.get("type") == "msg" and h["id"] == marker["id"])
    for other in (a, c):
        assert [h for h, _ in other.inbox if h["type"] == "typing"] == [], other.welcome
    a.send({"type": "typing"})                  # undirected: everyone else sees it
    for other in (b, c):
        assert other.wait_for("typing") == {"type": "typing", "from": "alice"}


def assert_same_bytes(got, expected, what):
    """Without pytest's diff of megabytes (which can take minutes): where they differ."""
    if got != expected:
        at = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y),
                  min(len(got), len(expected)))
        raise AssertionError("%s: %d bytes instead of %d, first difference at byte %d"
                             % (what, len(got), len(expected), at))


@pytest.fixture
def no_sendfile(monkeypatch):
    """The Windows download path on Linux: no os.sendfile, so segments are read and sent."""
    monkeypatch.delattr(os, "sendfile")
    server = InProcessServer()
    yield server
    server.stop()


def test_downloads_without_sendfile_honour_offsets_and_ranges(no_sendfile):
    """Bug: the read-and-send path (Windows) loses its seek: a resumed download or a Range
    gets bytes from the wrong place, and a partial send repeats or skips data."""
    srv = no_sendfile
    a, b = srv.client("alice"), srv.client("bob")
    data = os.urandom(6 * MiB + 12345)
    msg = upload(a, data, chunk=512 * 1024)
    assert msg["type"] == "msg", msg
    file_id = msg["file"]["id"]
    for offset in (0, 1, MiB + 3, len(data) - 1, len(data)):
        start, got = download(b, file_id, offset=offset)
        assert start["offset"] == offset
        assert_same_bytes(got, data[offset:], "framed download from offset %d" % offset)
    session = b.welcome["session"]
    size = len(data)
    for spec, first, last in (("bytes=1000-2000", 1000, 2000), ("bytes=%d-" % (3 * MiB + 1),
                                                                3 * MiB + 1, size - 1),
                              ("bytes=-5000", size - 5000, size - 1)):
        res = http_download(srv, file_id, session, headers=[("Range", spec)])
        assert res.status == 206, (spec, res.status)
        assert_same_bytes(res.body, data[first:last + 1], spec)
    whole = http_download(srv, file_id, session)
    assert whole.status == 200 and hashlib.sha256(whole.body).hexdigest() == \
        msg["file"]["sha256"]


def test_partial_uploads_older_than_an_hour_are_deleted_at_start_up(make_server, tmp_path):
    """Bug: start-up keeps expired partial uploads (their disk reservation and .part stay)."""
    data_dir = tmp_path / "d"
    srv = make_server("--open", "--rate-limit", "0", data_dir=data_dir)
    a = srv.client("alice")
    ids = []
    for name in ("old.bin", "fresh.bin"):
        ready = announce(a, name=name, size=1000)
        a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, b"x" * 100)
        a.send({"type": "upload_status", "upload": ready["upload"]})
        assert a.wait_for("upload_ready")["offset"] == 100
        ids.append(ready["upload"])
    old, fresh = ids
    assert srv.stop() == 0
    db = sqlite3.connect(str(data_dir / "chat.sqlite3"))
    db.execute("UPDATE uploads SET updated = ? WHERE id = ?", (time.time() - UPLOAD_GRACE - 60,
                                                               old))
    db.execute("UPDATE uploads SET updated = ? WHERE id = ?", (time.time() - UPLOAD_GRACE + 300,
                                                               fresh))
    db.commit()
    db.close()
    srv2 = make_server("--open", "--rate-limit", "0", data_dir=data_dir)
    assert sorted(os.listdir(data_dir / "uploads")) == [fresh + ".part"]
    a2 = srv2.client("alice", device=a.device)
    a2.send({"type": "upload_status", "upload": old})
    assert expect_error(a2, "unknown_upload")["ref"] == old
    a2.send({"type": "upload_status", "upload": fresh})
    assert a2.wait_for("upload_ready")["offset"] == 100


# == Presence ==============================================================================

def health(srv):
    return http(srv, "GET", "/healthz").json()


def test_presence_stops_above_500_users_and_welcome_lists_500(make_server):
    """Bugs: presence events above the limit (a room of thousands spends its bandwidth on
    join/leave), welcome.users uncapped, a leave sent when more than 500 were online."""
    srv = make_server("--open", "--rate-limit", "0")
    # each client from its own loopback address: a cap per address must not get in the way
    sources = ["127.0.%d.%d" % (1 + i // 250, 1 + i % 250) for i in range(PRESENCE_LIMIT)]
    clients = [ChatClient(srv.port, source=source) for source in sources]
    for i, c in enumerate(clients):
        c.send({"type": "hello", "nick": "u%03d" % i, "client": "tests/1", "proto": 1})
    for c in clients:
        c.welcome = c.wait_for("welcome", timeout=30)
    watcher = clients[0]
    watcher.wait_for(lambda h: h["type"] == "join" and h["nick"] == "u%03d"
                     % (PRESENCE_LIMIT - 1), timeout=30)
    extra = ChatClient(srv.port, source="127.0.9.1")
    extra.hello("extra")
    assert extra.welcome["online"] == PRESENCE_LIMIT + 1
    assert len(extra.welcome["users"]) == WELCOME_USERS_MAX
    marker = extra.say("one more than the limit")
    watcher.wait_for(lambda h: h.get("type") == "msg" and h["id"] == marker["id"], timeout=30)
    assert [h for h, _ in watcher.inbox if h.get("nick") == "extra"] == [], "join above limit"
    extra.close()
    deadline = time.monotonic() + 10
    while health(srv)["clients"] != PRESENCE_LIMIT:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    clients[-1].close()                  # 500 online -> 499: this leave is sent
    leave = watcher.wait_for(lambda h: h["type"] == "leave", timeout=30)
    assert leave["nick"] == "u%03d" % (PRESENCE_LIMIT - 1), "a leave above the limit was sent"
    for c in clients:
        c.close()


# == WebSocket and HTTP answers ===========================================================

def test_server_full_is_http_503_and_refuses_a_websocket(make_server):
    """Bug: a full server answers HTTP clients in the framed protocol (a browser sees
    garbage instead of 503)."""
    srv = make_server("--open", "--max-clients", "2")
    a, b = srv.client("alice"), srv.client("bob")
    conn = RawHttp(srv.port)
    conn.request("GET", "/healthz")
    res = conn.read_response()
    assert res.status == 503 and res.json()["error"] == "server_full", res
    conn.close()
    with pytest.raises(websockets.InvalidStatus) as info:
        ws_connect(srv)
    assert info.value.response.status_code == 503
    sent = a.say("still here")
    assert b.wait_for("msg")["id"] == sent["id"]


def test_ws_shutdown_is_bye_then_close_1001(make_server):
    """Bug: a stopping server closes browsers with 1008 (policy) instead of 1001."""
    srv = make_server("--open")
    ws = raw_ws_joined(srv, "wendy")
    srv.proc.send_signal(signal.SIGTERM)
    skipped = ws.expect_close(1001)
    assert b'"type":"bye"' in b"".join(p for _, p in skipped)
    assert srv.proc.wait(10) == 0


def test_ws_idle_timeout_is_error_then_close_1001(make_server):
    """Bug: an idle browser closed with 1008 instead of 1001 (going away)."""
    srv = make_server("--open", "--ping-after", "0.3", "--idle-timeout", "1")
    ws = raw_ws_joined(srv, "wendy")
    skipped = ws.expect_close(1001, timeout=10)
    texts = b"".join(p for _, p in skipped)
    assert b'"type":"ping"' in texts and b'"code":"timeout"' in texts


def test_ws_internal_error_is_close_1011(monkeypatch):
    def injected_bug(self, conn, header, payload):
        raise RuntimeError("injected bug")
    monkeypatch.setattr(cs.Chat, "on_typing", injected_bug)     # before the server exists
    srv = InProcessServer()
    try:
        alice = srv.client("alice")
        ws = raw_ws_joined(srv, "wendy")
        ws.send_json({"type": "typing"})
        ws.expect_close(1011)
        assert alice.wait_for("leave")["nick"] == "wendy"
    finally:
        srv.stop()


def test_a_slow_request_head_is_answered_408(make_server):
    """Bug: a request head that never completes is dropped without its 408 (RFC 9110
    15.5.9). The client trickles header bytes, so only the head deadline can fire."""
    srv = make_server("--open", "--http-timeout", "1")
    alice = srv.client("alice")
    conn = RawHttp(srv.port)
    conn.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    deadline = time.monotonic() + 10
    answer = b""
    while not answer:
        assert time.monotonic() < deadline, "no answer to a request head that never ended"
        conn.send(b"a")
        conn.sock.settimeout(0.25)
        try:
            answer = conn.sock.recv(65536)
        except socket.timeout:
            continue
        assert answer, "closed without an answer"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert_chat_still_works(srv, alice)


def test_a_fatal_error_reaches_a_client_whose_input_is_still_arriving(server):
    """Bug: closing at once after a fatal answer. With the client's input still arriving,
    close() sends a TCP reset, and the reset discards what the server's kernel has not
    delivered yet: the messages queued before the answer, and the answer. The server must
    half-close and drain instead (lingering close, RFC 9112 9.6). Here the answer waits
    behind 1.6 MB of chat the client had not read, and the client keeps sending."""
    watcher = server.client("watcher")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(encode({"type": "hello", "nick": "slow", "proto": 1}))
    watcher.wait_for(lambda h: h["type"] == "join" and h["nick"] == "slow")
    writer = server.client("writer")
    for i in range(200):
        writer.send({"type": "msg", "text": "x" * 8000, "cid": "w%d" % i})
    writer.wait_for(lambda h: h.get("cid") == "w199" and h["type"] == "msg", timeout=30)
    stop = threading.Event()

    def keep_sending():
        try:
            slow.sendall(struct.pack(">II", 10, cs.MAX_PAYLOAD_BYTES * 4))   # fatal
            for _ in range(500):                                            # 32 MB at most
                if stop.is_set():
                    return
                slow.sendall(os.urandom(64 * 1024))
                time.sleep(0.01)
        except OSError:
            pass                  # the server closed: expected, sooner or later
    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    time.sleep(0.3)               # the server has read the fatal frame, its answer is queued
    reader = ChatClient.__new__(ChatClient)
    reader.sock, reader.buf, reader.inbox = slow, bytearray(), []
    try:
        # a slow reader (a phone on WiFi): when the server's own queue runs empty, the
        # kernel still holds unsent bytes (TCP_NOTSENT_LOWAT), which a reset would destroy
        slow.settimeout(15)
        while True:
            try:
                data = slow.recv(2048)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            reader.buf += data
            time.sleep(0.0005)
        frames = reader.expect_closed(timeout=0.1)
    finally:
        stop.set()
        sender.join(10)
        slow.close()
    errors = [f for f in frames if f["type"] == "error"]
    assert sum(f["type"] == "msg" for f in frames) >= 200
    assert errors and errors[0]["code"] == "frame_too_large" and errors[0]["fatal"], frames[-3:]
    assert_chat_still_works(server, watcher, writer)


# == Platform paths ========================================================================

def test_ctrl_break_stops_the_server_cleanly(monkeypatch):
    """Bug: no handler for SIGBREAK (Ctrl+Break in a Windows console): the process dies
    without bye or commit. Linux has no SIGBREAK: SIGUSR1 stands in for it."""
    stand_in = signal.SIGUSR1
    monkeypatch.setattr(signal, "SIGBREAK", stand_in, raising=False)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, stand_in)}

    def placeholder(signum, frame):        # so that a missing handler cannot kill pytest
        pass
    signal.signal(stand_in, placeholder)
    srv = cs.Server(cs.Config(host="127.0.0.1", port=0, memory=True, open=True))
    port = srv.listen()[1]
    loop = None
    try:
        cs.install_signal_handlers(srv)
        assert signal.getsignal(stand_in) is not placeholder, "no handler for Ctrl+Break"
        loop = threading.Thread(target=srv.serve_forever, daemon=True)
        loop.start()
        alice = ChatClient(port)
        alice.hello("alice")
        signal.raise_signal(stand_in)
        deadline = time.monotonic() + 10
        while loop.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)          # the handler runs in this (the main) thread
        assert not loop.is_alive(), "Ctrl+Break did not stop the server"
        assert srv.stop_signal == stand_in
        assert alice.wait_for("bye")["reason"] == "shutdown"
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if loop is not None and loop.is_alive():
            srv.stop()
            loop.join(10)
        elif loop is None:
            srv.shutdown()


# == Every request before hello ============================================================

@pytest.mark.parametrize("header", [
    {"type": "msg", "text": "early", "cid": "e1"},
    {"type": "history"},
    {"type": "typing"},
    {"type": "upload", "name": "a", "size": 1, "cid": "e2"},
    {"type": "upload_status", "upload": "u1"},
    {"type": "upload_cancel", "upload": "u1"},
    {"type": "download", "file": "f1"},
    {"type": "download_cancel", "file": "f1"},
], ids=lambda h: h["type"])
def test_every_request_but_hello_and_ping_is_not_joined_before_hello(server, header):
    """Bug: a type that forgets its needs-hello flag (e.g. history readable before hello)."""
    watcher = server.client("watcher")
    watcher.say("a public message to read")
    c = ChatClient(server.port)
    c.send(header)
    reply = c.recv()                       # the first frame: nothing else reaches it yet
    assert reply["type"] == "error" and reply["code"] == "not_joined", reply
    assert reply["fatal"] is False and reply["message"]
    assert c.drain(0.2) == []
    assert c.hello("late")["type"] == "welcome"
    assert_chat_still_works(server, watcher)
