"""A nick belongs to the device that claimed it (docs/PROTOCOL.md, "Devices and nicks"):
claims, look-alikes, lapse, everything personal bound to the identity, the session and the
token as no credential for a takeover, the Host check, the upgrade of an old data folder,
and --show-link. Each attack is made as a classmate would, over loopback, with an ordinary
client still chatting."""
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

import chatserver as cs
from chatclient import SERVER, ChatClient
from test_core import assert_chat_still_works, expect_error
from test_files import announce, download, upload
from test_http import RawHttp, auth, http, http_download, request_bytes

MiB = 1024 * 1024


# -- claims and look-alikes -----------------------------------------------------------------

@pytest.mark.parametrize("lookalike", ["аlice", "alicé", "ALİCE", "a-lice", "Aliсe", "αlice"],
                         ids=["cyrillic-a", "accent", "dotted-I", "hyphen", "cyrillic-c",
                              "greek-alpha"])
def test_a_nick_that_looks_like_a_claimed_one_is_refused(server, lookalike):
    alice = server.client("alice")
    c = ChatClient(server.port)
    err = c.hello(lookalike, expect="error")
    assert err["code"] == "nick_owned" and err["fatal"] is False, err
    assert "alice" in err["message"]
    assert c.hello("bob")["nick"] == "bob"                 # the connection stays usable
    assert_chat_still_works(server, alice, c)


@pytest.mark.parametrize("nick", ["ａｌｉｃｅ", "ALICE", "alice "])
def test_the_same_nick_in_another_form_is_the_same_claim(server, nick):
    server.client("alice")
    err = ChatClient(server.port).hello(nick, expect="error")
    assert err["code"] == "nick_owned" and "belongs to another device" in err["message"]
    assert "looks like" not in err["message"]         # the same nick, not a look-alike


@pytest.mark.parametrize("nick", ["al\u00a0ice", "al\u3000ice", "al\u200bice", "\u3164alice",
                                  "al\u2800ice"])
def test_invisible_and_space_like_characters_are_refused(server, nick):
    watcher = server.client("watcher")
    c = ChatClient(server.port)
    c.send({"type": "hello", "nick": nick, "proto": 1})
    expect_error(c, "nick_invalid")
    assert_chat_still_works(server, watcher)


def test_skeletons_fold_look_alikes_and_keep_distinct_names_apart():
    same = ["alice", "аlice", "ALICE", "alicé", "a.lice", "a_l-i ce", "ａｌｉｃｅ", "αlice"]
    assert {cs.nick_skeleton(n) for n in same} == {"alice"}
    assert cs.nick_skeleton("bob") != cs.nick_skeleton("rob")
    assert cs.nick_skeleton("0scar") == cs.nick_skeleton("oscar")
    assert cs.nick_key("ＡＬＩＣＥ") == cs.nick_key("alice") == "alice"


def test_a_device_without_a_key_is_issued_one_and_keeps_its_nick_with_it(server):
    watcher = server.client("watcher")
    first = ChatClient(server.port)
    welcome = first.hello("zoe", device=False)
    issued = welcome["device"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", issued)
    back = ChatClient(server.port)                          # the same phone, new connection
    assert back.hello("zoe", device=issued)["uid"] == welcome["uid"]
    assert first.expect_closed()[-1] == {"type": "bye", "reason": "replaced"}
    assert_chat_still_works(server, watcher, back)


@pytest.mark.parametrize("device", ["short", "x" * 200, "not/url*safe" * 3, 12345, ["k"]])
def test_a_malformed_device_key_is_bad_request(server, device):
    c = ChatClient(server.port)
    c.send({"type": "hello", "nick": "x", "proto": 1, "device": device})
    expect_error(c, "bad_request")
    assert c.hello("fine")["nick"] == "fine"


def test_neither_the_session_nor_the_token_takes_a_nick_over(make_server):
    """Both travel in places others can see (file requests, the pairing link); the device key
    travels only in hello."""
    srv = make_server("--rate-limit", "0")
    token = srv.pairing_token()
    alice = srv.client("alice", token=token)
    thief = ChatClient(srv.port)
    thief.send({"type": "hello", "nick": "alice", "proto": 1, "token": token,
                "session": alice.welcome["session"]})
    expect_error(thief, "nick_owned")
    assert alice.say("still mine")["type"] == "msg"
    chat = srv.client("bystander", token=token)
    sent = alice.say("hello room")
    assert chat.wait_for(lambda h: h.get("id") == sent["id"])["uid"] == alice.welcome["uid"]


# -- a lapsed nick starts with nothing of its previous owner's ----------------------------------

def test_the_next_holder_of_a_lapsed_nick_gets_nothing_of_the_previous_owners(make_server):
    # --nick-expiry in days: 2 seconds
    srv = make_server("--open", "--rate-limit", "0", "--nick-expiry", str(2 / 86400))
    bob = srv.client("bob")
    alice = srv.client("alice")
    secret = alice.say("the wifi password is hunter2", to="bob", cid="dm-1")
    assert bob.wait_for(lambda h: h.get("id") == secret["id"])
    dm_file = upload(alice, b"secret file", name="secret.txt", to="bob", cid="file-1")
    assert dm_file["type"] == "msg"
    ready = announce(alice, size=100, cid="half")
    alice.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, b"x" * 10)
    old_uid = alice.welcome["uid"]
    alice.close()
    bob.wait_for(lambda h: h.get("type") == "leave" and h.get("nick") == "alice")
    time.sleep(2.5)
    heir = ChatClient(srv.port)                               # another device, same nick
    welcome = heir.hello("alice")
    assert welcome["uid"] != old_uid
    assert [m for m in welcome["history"] if m.get("to") or m.get("file")] == []
    err, _ = download(heir, dm_file["file"]["id"])
    assert err["code"] == "forbidden"
    heir.send({"type": "upload_status", "upload": ready["upload"]})
    assert expect_error(heir, "unknown_upload")["ref"] == ready["upload"]
    again = heir.say("a new message", cid="dm-1")             # the cid is not a resend
    assert again["id"] > secret["id"] and again["text"] == "a new message"
    fresh = announce(heir, size=10, cid="file-1")
    assert fresh["type"] == "upload_ready"                    # not alice's stored file msg
    session = heir.welcome["session"]
    res = http_download(srv, dm_file["file"]["id"], session)
    assert res.status == 403 and b"secret file" not in res.body
    assert_chat_still_works(srv, bob, heir)


def test_a_claim_in_use_does_not_lapse(make_server):
    srv = make_server("--open", "--rate-limit", "0", "--nick-expiry", str(1 / 86400))
    alice = srv.client("alice")
    time.sleep(1.5)                                            # still connected: still hers
    assert ChatClient(srv.port).hello("alice", expect="error")["code"] == "nick_owned"
    assert alice.say("here")["type"] == "msg"


# -- HTTP: the Host check, the session cookie -------------------------------------------------

ROUTES = [("GET", "/"), ("GET", "/ws"), ("GET", "/healthz"), ("GET", "/pair"),
          ("GET", "/qr.svg"), ("GET", "/files/f1/x"), ("POST", "/files?name=x"),
          ("POST", "/session"), ("GET", "/favicon.ico")]


@pytest.mark.parametrize("open_mode", [True, False], ids=["open", "token"])
@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.nip.io", "localhost.evil.example",
                                  "192.0.2.7"])
def test_a_host_that_is_not_the_servers_is_refused_on_every_route(make_server, open_mode, host):
    srv = make_server(*(["--open"] if open_mode else []), "--rate-limit", "0")
    watcher = srv.client("watcher", **({} if open_mode else {"token": srv.pairing_token()}))
    for method, target in ROUTES:
        conn = RawHttp(srv.port)
        conn.send(("%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 0\r\nUpgrade: websocket"
                   "\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                   % (method, target, host, srv.port)).encode())
        res = conn.read_response()
        assert res.status == 421 and res.json()["error"] == "misdirected", (target, res)
        conn.close()
    if open_mode:
        assert_chat_still_works(srv, watcher)


def test_the_servers_own_names_and_allowed_hosts_work(make_server):
    srv = make_server("--open", "--allow-host", "chat.school.lan, other.example")
    for host in ("127.0.0.1", "localhost", "[::1]", "chat.school.lan", "OTHER.example"):
        conn = RawHttp(srv.port)
        conn.send(("GET /healthz HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host, srv.port)).encode())
        assert conn.read_response().status == 200, host


def test_the_session_cookie_replaces_the_session_in_links(server):
    alice, bob = server.client("alice"), server.client("bob")
    msg = upload(alice, b"for the room", name="r.txt")
    target = "/files/%s/r.txt" % msg["file"]["id"]
    refused = http(server, "GET", target + "?session=" + bob.welcome["session"])
    assert refused.status == 400 and refused.json()["error"] == "bad_request"
    conn = RawHttp(server.port)
    conn.send(request_bytes(server.port, "POST", "/session",
                            [("Content-Length", str(len(bob.welcome["session"])))],
                            bob.welcome["session"].encode()))
    res = conn.read_response()
    assert res.status == 204
    cookie = res.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    value = cookie.split(";")[0]
    ok = http(server, "GET", target, [("Cookie", "other=1; " + value)])
    assert ok.status == 200 and ok.body == b"for the room"
    bad = RawHttp(server.port)
    bad.send(request_bytes(server.port, "POST", "/session", [("Content-Length", "5")], b"guess"))
    assert bad.read_response().status == 401
    assert http(server, "GET", target, [("Cookie", "lanchat_session=guess")]).status == 401
    assert http(server, "GET", target, auth(bob.welcome["session"])).body == b"for the room"
    assert_chat_still_works(server, alice, bob)


# -- the upgrade of a data folder from before identities ---------------------------------------

V1_SCHEMA = """
    CREATE TABLE messages (id INTEGER PRIMARY KEY, sender_key TEXT NOT NULL,
        recipient_key TEXT, cid TEXT NOT NULL, body TEXT NOT NULL);
    CREATE UNIQUE INDEX messages_sender_cid ON messages(sender_key, cid);
    CREATE TABLE files (id TEXT PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL,
        sha256 TEXT NOT NULL, mime TEXT NOT NULL, sender_key TEXT NOT NULL,
        recipient_key TEXT, created REAL NOT NULL);
    CREATE TABLE uploads (id TEXT PRIMARY KEY, owner_key TEXT NOT NULL, owner TEXT NOT NULL,
        name TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT, mime TEXT NOT NULL,
        recipient TEXT, cid TEXT NOT NULL, caption TEXT NOT NULL, updated REAL NOT NULL);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def old_message(msg_id, sender, text, to=None, cid=None):
    body = {"type": "msg", "id": msg_id, "ts": "2026-11-01T10:00:00.000Z", "from": sender,
            "text": text, "cid": cid or "c%d" % msg_id}
    if to:
        body["to"] = to
    return (msg_id, sender.casefold(), to.casefold() if to else None, body["cid"],
            json.dumps(body, separators=(",", ":")))


def test_an_old_data_folder_keeps_its_history_and_the_first_device_claims_each_nick(
        make_server, tmp_path):
    data = tmp_path / "old"
    data.mkdir()
    db = sqlite3.connect(str(data / "chat.sqlite3"))
    db.executescript(V1_SCHEMA)
    db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", [
        old_message(1, "Alice", "hello all"), old_message(2, "Bob", "psst", to="Alice"),
        old_message(3, "Carol", "morning")])
    db.commit()
    db.close()
    srv = make_server("--open", "--rate-limit", "0", data_dir=data)
    alice = srv.client("alice")                     # the first device to say alice
    texts = [(m["text"], m["uid"]) for m in alice.welcome["history"]]
    assert [t for t, _ in texts] == ["hello all", "psst", "morning"]
    assert texts[0][1] == alice.welcome["uid"]      # her old message is hers (the own flag)
    dave = srv.client("dave")
    assert [m["text"] for m in dave.welcome["history"]] == ["hello all", "morning"]
    assert ChatClient(srv.port).hello("alice", expect="error")["code"] == "nick_owned"
    bob = srv.client("Bob")                          # as he wrote it before the upgrade
    assert "psst" in [m["text"] for m in bob.welcome["history"]]
    again = bob.say("psst again", cid="c2")          # bob's old cid: the original comes back
    assert again["id"] == 2
    assert srv.stop() == 0
    srv2 = make_server("--open", "--rate-limit", "0", data_dir=data)   # upgraded only once
    assert srv2.client("alice", device=alice.device).welcome["uid"] == alice.welcome["uid"]


# -- headless pairing ---------------------------------------------------------------------------

def run_show_link(data_dir, *extra):
    return subprocess.run([sys.executable, SERVER, "--show-link", "--data-dir", str(data_dir),
                           "--host", "127.0.0.1", "--port", "5999", *extra],
                          capture_output=True, text=True, timeout=30)


def test_show_link_prints_the_link_and_qr_code_with_or_without_a_running_server(make_server,
                                                                                tmp_path):
    data = tmp_path / "headless"
    first = run_show_link(data)
    assert first.returncode == 0, first.stderr
    link = re.search(r"http://127\.0\.0\.1:5999/#k=[A-Za-z0-9_-]+", first.stdout).group(0)
    assert "\u2580" in first.stdout or "##" in first.stdout        # a QR code
    srv = make_server("--rate-limit", "0", data_dir=data)
    token = srv.pairing_token()
    assert link.endswith("#k=" + token)                          # the server's own token
    running = run_show_link(data)
    assert running.returncode == 0, running.stderr
    assert "#k=" + token in running.stdout
    saved = data / cs.PAIRING_LINK_FILE
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert srv.client("alice", token=token).welcome["nick"] == "alice"
