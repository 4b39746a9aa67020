"""The operator is in charge, and users take back their own messages (docs/PROTOCOL.md,
sections 10 and 11): unsend and edit, changes that a resuming client sees, kick, ban, mute,
lock, the room's name and topic, token rotation, clear and export, and the operator
requests refused to everyone but the PC itself. Each refusal is checked for its error and
for an ordinary client still chatting."""
import io
import sys
import json
import os
import re
import socket
import time
import zipfile

import pytest

import chatserver as cs
from chatclient import ChatClient, Operator
from test_core import assert_chat_still_works, expect_error
from test_files import download, upload
from test_http import auth, http, http_download, http_upload


def files_on_disk(srv):
    return sorted(os.listdir(os.path.join(srv.data_dir, "files")))


def raw_request(port, head, body=b"", timeout=10):
    """One request written by hand (any Host, any header); returns (status, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = [int(line.split(b":")[1]) for line in data[:head_end].split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(data) >= head_end + 4 + length[0]:
                    break
    status = int(data.split(b" ", 2)[1])
    return status, data[data.find(b"\r\n\r\n") + 4:]


# -- unsend and edit ------------------------------------------------------------------------

def test_a_user_deletes_their_own_message_for_everyone(server):
    alice, bob = server.client("alice"), server.client("bob")
    sent = alice.say("oops, wrong chat")
    bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == sent["id"])
    change = alice.change("delete", sent["id"])
    assert change["type"] == "change" and change["change"] == "delete"
    assert change["target"] == sent["id"] and change["by"] == "sender"
    assert change["id"] > sent["id"]                      # in the message sequence
    seen = bob.wait_for(lambda h: h["type"] == "change")
    assert seen == change
    fresh = server.client("carol")
    [stored] = [m for m in fresh.welcome["history"] if m["id"] == sent["id"]]
    assert stored["deleted"] == "sender" and stored["text"] == "" and "file" not in stored
    assert all(m["type"] == "msg" for m in fresh.welcome["history"])   # no change rows
    again = alice.change("delete", sent["id"])
    assert again["code"] == "unknown_message" and again["fatal"] is False
    assert_chat_still_works(server, alice, bob)


def test_a_user_cannot_delete_or_edit_someone_elses_message(server):
    alice, bob = server.client("alice"), server.client("bob")
    sent = alice.say("mine")
    for kind, text in (("delete", None), ("edit", "hijacked")):
        err = bob.change(kind, sent["id"], text)
        assert err["code"] == "forbidden" and err["fatal"] is False, err
    fresh = server.client("carol")
    [stored] = [m for m in fresh.welcome["history"] if m["id"] == sent["id"]]
    assert stored["text"] == "mine" and "deleted" not in stored and "edited" not in stored
    assert_chat_still_works(server, alice, bob)


def test_a_direct_message_and_its_changes_stay_between_its_two_parties(server):
    alice, bob, eve = server.client("alice"), server.client("bob"), server.client("eve")
    dm = alice.say("the wifi password is hunter2", to="bob")
    bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == dm["id"])
    err = eve.change("delete", dm["id"])                   # eve cannot even see it
    assert err["code"] == "unknown_message", err
    change = alice.change("edit", dm["id"], "never mind")
    assert bob.wait_for(lambda h: h["type"] == "change")["target"] == dm["id"]
    public = alice.say("public")
    got = eve.wait_for(lambda h: h["type"] in ("change", "msg") and h.get("id", 0) > dm["id"])
    assert got["type"] == "msg" and got["id"] == public["id"], got   # no change reached eve
    again = ChatClient(server.port)
    again.hello("eve", device=eve.device, since=0)
    assert change["id"] not in [m["id"] for m in again.welcome["history"]]
    assert dm["id"] not in [m["id"] for m in again.welcome["history"]]


def test_edit_replaces_the_text_and_marks_it_edited(server):
    alice, bob = server.client("alice"), server.client("bob")
    sent = alice.say("teh homework")
    change = alice.change("edit", sent["id"], "the homework")
    assert change["change"] == "edit" and change["text"] == "the homework"
    assert change["edited"].endswith("Z")
    assert bob.wait_for(lambda h: h["type"] == "change") == change
    status = server.client("carol").welcome["history"]
    [stored] = [m for m in status if m["id"] == sent["id"]]
    assert stored["text"] == "the homework" and stored["edited"] == change["edited"]
    assert stored["cid"] == sent["cid"] and stored["from"] == "alice"


@pytest.mark.parametrize("text,code", [(None, "bad_request"), ("", "bad_request"),
                                       (17, "bad_request"),
                                       ("x" * (cs.MAX_TEXT_BYTES + 1), "text_too_long")])
def test_a_bad_edit_is_refused(server, text, code):
    alice, bob = server.client("alice"), server.client("bob")
    sent = alice.say("original")
    header = {"type": "edit", "id": sent["id"], "cid": "e1"}
    if text is not None:
        header["text"] = text
    alice.send(header)
    err = expect_error(alice, code)
    assert err.get("ref") == "e1"
    assert_chat_still_works(server, alice, bob)


@pytest.mark.parametrize("msg_id", [None, "1", 0, -1, 2 ** 70, True, 999])
def test_a_change_of_a_bad_id_is_refused(server, msg_id):
    alice, bob = server.client("alice"), server.client("bob")
    alice.say("something")
    header = {"type": "delete", "cid": "d1"}
    if msg_id is not None:
        header["id"] = msg_id
    alice.send(header)
    err = alice.wait_for("error")
    assert err["code"] == ("unknown_message" if msg_id == 999 else "bad_request"), err
    assert err["ref"] == "d1" and err["fatal"] is False
    assert_chat_still_works(server, alice, bob)


def test_edits_end_with_the_edit_window(make_server):
    srv = make_server("--open", "--rate-limit", "0", "--edit-window", "0.02")   # 1.2 s
    alice = srv.client("alice")
    sent = alice.say("quick")
    assert alice.change("edit", sent["id"], "quick, edited")["type"] == "change"
    time.sleep(1.5)
    err = alice.change("edit", sent["id"], "too late")
    assert err["code"] == "edit_expired" and "0.02 minutes" in err["message"], err
    assert alice.change("delete", sent["id"])["type"] == "change"    # deleting has no window
    assert alice.welcome["limits"]["edit_window"] == pytest.approx(1.2)        # seconds, for the clients
    srv_off = make_server("--open", "--edit-window", "0")
    bob = srv_off.client("bob")
    assert bob.welcome["limits"]["edit_window"] == 0
    sent = bob.say("no edits here")
    assert bob.change("edit", sent["id"], "x")["code"] == "edit_expired"


def test_deleting_a_file_message_removes_its_bytes_and_its_links(server):
    alice, bob = server.client("alice"), server.client("bob")
    shared = upload(alice, b"secret plans" * 1000, name="plans.txt")
    file_id = shared["file"]["id"]
    assert files_on_disk(server) == [file_id]
    alice.change("delete", shared["id"])
    bob.wait_for(lambda h: h["type"] == "change" and h["target"] == shared["id"])
    assert files_on_disk(server) == []
    start, _ = download(bob, file_id)
    assert start["type"] == "error" and start["code"] == "unknown_file", start
    response = http_download(server, file_id, bob.welcome["session"])
    assert response.status == 404
    fresh = server.client("carol")
    [stored] = [m for m in fresh.welcome["history"] if m["id"] == shared["id"]]
    assert stored["deleted"] == "sender" and "file" not in stored
    assert_chat_still_works(server, alice, bob)


def test_a_resuming_client_sees_what_changed_while_it_was_away(server):
    alice, bob = server.client("alice"), server.client("bob")
    seen = [alice.say("one"), alice.say("two"), alice.say("three")]
    bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == seen[-1]["id"])
    last = seen[-1]["id"]
    bob.close()
    alice.change("delete", seen[0]["id"])
    alice.change("edit", seen[1]["id"], "two (fixed)")
    missed = alice.say("four")
    alice.change("delete", missed["id"])
    back = ChatClient(server.port)
    back.hello("bob", device=bob.device, since=last)
    history = back.welcome["history"]
    ids = [m["id"] for m in history]
    assert ids == sorted(ids) and len(ids) == len(set(ids))   # in order, no duplicate
    changes = {m["target"]: m for m in history if m["type"] == "change"}
    assert changes[seen[0]["id"]]["change"] == "delete"
    assert changes[seen[1]["id"]]["text"] == "two (fixed)"
    [four] = [m for m in history if m["type"] == "msg"]
    assert four["id"] == missed["id"] and four["deleted"] == "sender" and four["text"] == ""
    # paging back with `after` (a resume) carries the changes; without it, messages only
    back.send({"type": "history", "after": last, "limit": 200, "cid": "h1"})
    page = back.wait_for("history")
    assert [m["id"] for m in page["messages"]] == ids
    back.send({"type": "history", "limit": 200, "cid": "h2"})
    plain = back.wait_for("history")
    assert all(m["type"] == "msg" for m in plain["messages"])
    assert [m["id"] for m in plain["messages"]] == [m["id"] for m in seen] + [missed["id"]]


def test_changes_survive_a_restart(make_server, tmp_path):
    srv = make_server("--open", data_dir=tmp_path / "d")
    alice = srv.client("alice")
    a, b = alice.say("keep"), alice.say("remove")
    alice.change("edit", a["id"], "kept, edited")
    alice.change("delete", b["id"])
    srv.stop()
    srv.start()
    history = {m["id"]: m for m in srv.client("bob").welcome["history"]}
    assert history[a["id"]]["text"] == "kept, edited" and history[a["id"]]["edited"]
    assert history[b["id"]]["deleted"] == "sender"


def test_a_muted_user_reads_but_cannot_post(server):
    alice, bob = server.client("alice"), server.client("bob")
    sent = bob.say("before")
    op = server.operator()
    assert op.act("mute", nick="bob") == (200, {"ok": True})
    notice = bob.wait_for("notice")
    assert notice["code"] == "muted" and "muted" in notice["message"]
    assert bob.say("after")["code"] == "muted"
    assert bob.change("edit", sent["id"], "edited")["code"] == "muted"
    err = upload(bob, b"x" * 100)
    assert err["type"] == "error" and err["code"] == "muted", err
    response = http_upload(server, bob.welcome["session"], b"data")
    assert response.status == 403 and response.json()["error"] == "muted"
    bob.send({"type": "typing"})
    probe = alice.say("alice still posts")
    got = alice.wait_for(lambda h: h["type"] in ("typing", "msg") and h.get("from") == "bob"
                         or h.get("id") == probe["id"], timeout=2)
    assert got["type"] != "typing" or got["from"] != "bob"
    assert bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == probe["id"])  # still reads
    assert bob.change("delete", sent["id"])["type"] == "change"     # may take back its own
    assert op.state()["users"][1]["muted"] is True
    again = ChatClient(server.port)
    assert again.hello("bob", device=bob.device)["muted"] is True    # a reconnect stays muted
    op.act("unmute", nick="bob")
    assert again.wait_for("notice")["code"] == "unmuted"
    assert again.say("free again")["type"] == "msg"


# -- the operator ---------------------------------------------------------------------------

def test_kick_says_why_and_the_user_may_come_back(server):
    alice, bob = server.client("alice"), server.client("bob")
    op = server.operator()
    assert op.act("kick", nick="bob", reason="too loud") == (200, {"ok": True})
    frames = bob.expect_closed()
    [bye] = [f for f in frames if f["type"] == "bye"]
    assert bye["reason"] == "kicked" and "too loud" in bye["message"]
    leave = alice.wait_for("leave")
    assert leave == {"type": "leave", "nick": "bob", "reason": "kicked"}
    assert ChatClient(server.port).hello("bob", device=bob.device)["type"] == "welcome"
    status, err = op.act("kick", nick="nobody")
    assert status == 404 and err["error"] == "unknown_user"


def test_a_banned_device_stays_out_until_unbanned_also_after_a_restart(make_server, tmp_path):
    srv = make_server("--open", data_dir=tmp_path / "d")
    alice, bob = srv.client("alice"), srv.client("bob")
    alice.say("history bob must not get")
    status, answer = srv.operator().act("ban", nick="bob", reason="spam")
    assert status == 200 and answer["ok"], answer
    [bye] = [f for f in bob.expect_closed() if f["type"] == "bye"]
    assert bye["reason"] == "banned" and "spam" in bye["message"]
    for nick in ("bob", "bob2"):                # every nick of that device
        c = ChatClient(srv.port)
        err = c.hello(nick, device=bob.device, expect="error")
        assert err["code"] == "banned" and err["fatal"] and "history" not in err, err
        c.expect_closed()
    srv.stop()
    srv.start()
    c = ChatClient(srv.port)
    assert c.hello("bob", device=bob.device, expect="error")["code"] == "banned"
    op = srv.operator()
    [ban] = op.state()["bans"]
    assert ban["kind"] == "device" and ban["nick"] == "bob" and ban["until"] is None
    assert ban["value"] == cs.device_name(cs.hashlib.sha256(bob.device.encode()).hexdigest())
    assert op.act("unban", id=ban["id"]) == (200, {"ok": True})
    assert ChatClient(srv.port).hello("bob", device=bob.device)["type"] == "welcome"
    assert op.act("unban", id=ban["id"])[0] == 404
    assert_chat_still_works(srv, srv.client("carol"))


def test_a_ban_for_a_time_ends_by_itself(server):
    bob = server.client("bob")
    op = server.operator()
    op.act("ban", nick="bob", minutes=0.02)                    # 1.2 s
    bob.expect_closed()
    assert ChatClient(server.port).hello("bob", device=bob.device,
                                         expect="error")["code"] == "banned"
    time.sleep(1.5)
    assert ChatClient(server.port).hello("bob", device=bob.device)["type"] == "welcome"
    assert op.state()["bans"] == []


def test_an_address_ban_keeps_out_every_device_from_it(server):
    alice = server.client("alice")
    bob = server.client("bob", source="127.0.0.7")
    op = server.operator()
    assert op.act("ban", address="127.0.0.7")[0] == 200
    bob.expect_closed()
    c = ChatClient(server.port, source="127.0.0.7")
    err = c.hello("newdevice", expect="error")
    assert err["code"] == "banned" and "network address" in err["message"]
    assert_chat_still_works(server, alice)
    assert op.act("ban", address="not-an-ip")[0] == 400


@pytest.mark.parametrize("body", [{"nick": "bob", "minutes": -1}, {"nick": "bob", "minutes": "5"},
                                  {"nick": "bob", "reason": "a\nb"},
                                  {"nick": "bob", "reason": "x" * 201}, {}, {"nick": 5}])
def test_a_bad_ban_is_refused_and_bans_nobody(server, body):
    bob = server.client("bob")
    status, err = server.operator().act("ban", **body)
    assert status == 400 and err["error"] == "bad_request", (status, err)
    assert_chat_still_works(server, bob)


def test_a_locked_room_keeps_new_nicks_out_and_lets_members_back(make_server, tmp_path):
    srv = make_server("--open", data_dir=tmp_path / "d")
    alice = srv.client("alice")
    op = srv.operator()
    status, answer = op.act("room", locked=True)
    assert status == 200 and answer["room"]["locked"] is True
    assert alice.wait_for("room")["locked"] is True
    newcomer = ChatClient(srv.port)
    err = newcomer.hello("dave", expect="error")
    assert err["code"] == "room_locked" and err["fatal"] is False
    assert newcomer.hello("alice", expect="error")["code"] == "room_locked"   # not its nick
    alice.close()
    srv.stop()
    srv.start()                                   # the lock survives a restart
    back = ChatClient(srv.port)
    assert back.hello("alice", device=alice.device)["room"]["locked"] is True
    assert ChatClient(srv.port).hello("dave", expect="error")["code"] == "room_locked"
    srv.operator().act("room", locked=False)
    assert ChatClient(srv.port).hello("dave")["type"] == "welcome"


def test_room_name_and_topic_reach_everyone_and_persist(make_server, tmp_path):
    srv = make_server("--open", data_dir=tmp_path / "d")
    alice = srv.client("alice")
    status, answer = srv.operator().act("room", name="Class 4B", topic="Fractions today")
    assert answer["room"] == {"name": "Class 4B", "topic": "Fractions today", "locked": False}
    assert alice.wait_for("room") == {"type": "room", "name": "Class 4B",
                                      "topic": "Fractions today", "locked": False}
    srv.stop()
    srv.start()
    assert srv.client("bob").welcome["room"]["name"] == "Class 4B"
    for body in ({"name": "x" * 81}, {"topic": "y" * 301}, {"name": "a\x00b"},
                 {"locked": "yes"}, {"name": 3}):
        status, err = srv.operator().act("room", **body)
        assert status == 400 and err["error"] == "bad_request", body
    assert srv.client("carol").welcome["room"]["name"] == "Class 4B"


def test_the_operator_deletes_any_message_or_file(server):
    alice, bob = server.client("alice"), server.client("bob")
    text = alice.say("rude words")
    bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == text["id"])
    shared = upload(bob, b"not for class" * 100, name="meme.png", cid="up1")
    op = server.operator()
    for msg in (text, shared):
        assert op.act("delete", id=msg["id"]) == (200, {"ok": True})
        for c in (alice, bob):
            change = c.wait_for(lambda h: h["type"] == "change" and h["target"] == msg["id"])
            assert change["by"] == "operator"
    assert files_on_disk(server) == []
    history = {m["id"]: m for m in server.client("carol").welcome["history"]}
    assert history[text["id"]]["deleted"] == "operator"
    assert history[shared["id"]]["deleted"] == "operator"
    assert op.act("delete", id=text["id"])[1]["error"] == "unknown_message"
    assert op.act("delete", id="x")[0] == 400


def test_clear_removes_everything_and_resuming_clients_learn_it(server):
    alice, bob = server.client("alice"), server.client("bob")
    shared = upload(alice, b"a" * 5000)
    alice.say("one")
    last = alice.say("two")["id"]
    bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == last)
    bob.close()
    op = server.operator()
    status, err = op.act("clear")
    assert status == 400 and "confirm" in err["message"]
    assert op.act("clear", confirm="yes")[0] == 400
    assert len(server.client("probe").welcome["history"]) >= 3       # nothing was cleared
    assert op.act("clear", confirm="clear") == (200, {"ok": True})
    change = alice.wait_for(lambda h: h["type"] == "change")
    assert change["change"] == "clear" and change["id"] > last
    assert files_on_disk(server) == []
    assert http_download(server, shared["file"]["id"], alice.welcome["session"]).status == 404
    back = ChatClient(server.port)
    back.hello("bob", device=bob.device, since=last)
    assert [m["change"] for m in back.welcome["history"]] == ["clear"]
    assert server.client("carol").welcome["history"] == []
    after = alice.say("fresh start")
    assert after["id"] > change["id"]


def test_exports_hold_the_history_and_its_files(server):
    alice, bob = server.client("alice"), server.client("bob")
    alice.say("<b>not markup</b>")
    dm = alice.say("secret", to="bob")
    bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == dm["id"])
    shared = upload(bob, b"%PDF-1.4 worksheet", name="worksheet.pdf", cid="up1")
    gone = alice.say("removed one")
    alice.change("delete", gone["id"])
    op = server.operator()
    status, exported = op.request("GET", "/admin/export.json")
    assert status == 200
    texts = [m.get("text") for m in exported["messages"]]
    assert "<b>not markup</b>" in texts and "removed one" not in texts
    # a direct message is its two parties' alone: the operator sees who wrote to whom
    [private] = [m for m in exported["messages"] if m["id"] == dm["id"]]
    assert private["private"] is True and "text" not in private and private["to"] == "bob"
    assert b"secret" not in json.dumps(exported).encode()
    status, page = op.request("GET", "/admin/export.html")
    assert status == 200 and b"&lt;b&gt;not markup&lt;/b&gt;" in page
    assert b"message removed" in page and b"worksheet.pdf" in page and b"secret" not in page
    status, blob = op.request("GET", "/admin/export.zip")
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = zf.namelist()
        assert "history.json" in names and "history.html" in names
        [pdf] = [n for n in names if n.startswith("files/")]
        assert pdf == "files/%s-worksheet.pdf" % shared["file"]["id"]
        assert zf.read(pdf) == b"%PDF-1.4 worksheet"
    assert os.listdir(os.path.join(server.data_dir, "uploads")) == []  # no export left


def test_the_state_lists_users_counters_and_events(make_server):
    srv = make_server("--rate-limit", "0")
    token = srv.pairing_token()
    alice = srv.client("alice", token=token)
    alice.say("hi")
    intruder = ChatClient(srv.port, source="127.0.0.5")
    assert intruder.hello("x", token="wrong", expect="error")["code"] == "auth_failed"
    state = srv.operator().state()
    [user] = state["users"]
    assert user["nick"] == "alice" and user["transport"] == "framed" and user["messages"] == 1
    assert user["address"] == "127.0.0.1" and len(user["device"]) == 8
    assert alice.device not in json.dumps(state)                   # never the key
    assert state["counters"]["messages"] == 1
    assert any(e["kind"] == "auth_failed" and "127.0.0.5" in e["text"]
               for e in state["events"])
    assert token in state["pairing_url"]
    assert [m["text"] for m in state["recent"]] == ["hi"]


def test_the_operator_sees_no_direct_message_or_private_file(server):
    alice, bob = server.client("alice"), server.client("bob")
    dm = alice.say("the wifi password is hunter2", to="bob")
    bob.wait_for(lambda h: h["type"] == "msg" and h["id"] == dm["id"])
    shared = upload(bob, b"private notes", name="notes.txt", to="alice", cid="up1")
    op = server.operator()
    state = op.state()
    assert "hunter2" not in json.dumps(state) and "notes.txt" not in json.dumps(state)
    assert [m["private"] for m in state["recent"]] == [True, True]
    status, blob = op.request("GET", "/admin/export.zip")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert not [n for n in zf.namelist() if n.startswith("files/")]
        assert b"hunter2" not in zf.read("history.json") + zf.read("history.html")
    # the operator may still remove a reported direct message, by its number
    assert op.act("delete", id=shared["id"]) == (200, {"ok": True})
    assert files_on_disk(server) == []


def test_rotating_the_token_keeps_connected_users_and_refuses_the_old_one(make_server):
    srv = make_server()
    old = srv.pairing_token()
    alice = srv.client("alice", token=old)
    status, answer = srv.operator().act("rotate_token")
    assert status == 200
    new = srv.pairing_token()
    assert new != old and "#k=" + new in answer["pairing_url"]
    assert ChatClient(srv.port, source="127.0.0.3").hello(
        "bob", token=old, expect="error")["code"] == "auth_failed"
    assert srv.client("carol", token=new).welcome["type"] == "welcome"
    assert alice.say("still here")["type"] == "msg"


# -- who may make operator requests ---------------------------------------------------------

def test_operator_requests_need_the_key(server):
    bob = server.client("bob")
    for method, path in (("GET", "/admin/api/state"), ("GET", "/admin/export.json"),
                         ("POST", "/admin/api/clear")):
        headers = [("Content-Type", "application/json"), ("Content-Length", "2")]
        response = http(server, method, path, headers if method == "POST" else [],
                        b"{}" if method == "POST" else b"")
        assert response.status == 401 and response.json()["error"] == "auth_failed"
        wrong = http(server, method, path, (headers if method == "POST" else []) +
                     auth("not-the-key"), b"{}" if method == "POST" else b"")
        assert wrong.status == 401
    # a chat session is not the operator key
    response = http(server, "GET", "/admin/api/state", auth(bob.welcome["session"]))
    assert response.status == 401
    assert_chat_still_works(server, bob)


def test_the_operator_key_changes_with_every_start(make_server, tmp_path):
    srv = make_server("--open", data_dir=tmp_path / "d")
    first = srv.operator()
    srv.stop()
    srv.start()
    assert first.request("GET", "/admin/api/state")[0] == 401
    assert srv.operator().key != first.key
    assert first.key not in srv.log()


@pytest.mark.parametrize("headers,status", [
    ([("Content-Type", "text/plain")], 415),                      # what a form can send
    ([("Content-Type", "application/x-www-form-urlencoded")], 415),
    ([("Content-Type", "application/json"), ("Origin", "http://evil.example")], 403),
    ([("Content-Type", "application/json"), ("Origin", "http://192.168.1.5:5555")], 403),
])
def test_no_other_web_page_can_drive_the_operator(server, headers, status):
    bob = server.client("bob")
    op = server.operator()
    got, err = op.request("POST", "/admin/api/kick", {"nick": "bob"}, dict(headers))
    assert got == status, (got, err)
    assert bob.say("still in")["type"] == "msg"


def test_a_bad_operator_request_is_refused(server):
    bob = server.client("bob")
    op = server.operator()
    assert op.act("no_such_action")[0] == 404
    key = op.key
    for body, code in ((b"{not json", 400), (b"[1,2]", 400), (b"\xff\xfe", 400),
                       (b"x" * (cs.OPERATOR_BODY_MAX + 1), 413)):
        head = ("POST /admin/api/kick HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer "
                "%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (server.port, key, len(body)))
        got, _ = raw_request(server.port, head, body)
        assert got == code, (body[:20], got)
    assert bob.say("unaffected")["type"] == "msg"


@pytest.mark.parametrize("host", ["chat.local", "192.168.1.5:5555", "evil.example"])
def test_the_operator_page_refuses_a_foreign_host(make_server, host):
    srv = make_server("--open", "--allow-host", "chat.local,evil.example,192.168.1.5")
    for path in ("/admin", "/admin/api/state"):
        status, body = raw_request(srv.port, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host))
        assert status == 403 and b"forbidden" in body, (path, status, body)
    status, body = raw_request(srv.port, "GET /admin HTTP/1.1\r\nHost: localhost:%d\r\n\r\n"
                               % srv.port)
    assert status == 200


def test_the_banner_names_the_operator_page():
    text = cs.pairing_banner(["http://192.168.1.5:5555/#k=t"], "t", 5555, False, False, True)
    assert "http://127.0.0.1:5555/admin" in text


# -- from another machine -------------------------------------------------------------------

def _need(ok, reason):
    """Skip when the machine cannot build the test bed, but fail under CI."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: this test must run)")
    pytest.skip(reason)


@pytest.fixture
def lan_peer():
    """A network namespace joined to this one by a veth pair: 10.201.x.1 here, 10.201.x.2
    there, so that a request from there reaches the server from an address that is not
    loopback. Yields (server address, a function running python code in the namespace)."""
    import shutil
    import subprocess
    _need(shutil.which("ip") is not None, "the ip tool (iproute2) is not installed")
    _need(os.geteuid() == 0, "creating a network namespace needs root")
    tag = "%d" % (os.getpid() % 200 + 20)
    ns, here, there = "chatmod%s" % tag, "vmod%sa" % tag, "vmod%sb" % tag
    mine, theirs = "10.201.%s.1" % tag, "10.201.%s.2" % tag
    steps = [["ip", "netns", "add", ns],
             ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
             ["ip", "link", "set", there, "netns", ns],
             ["ip", "addr", "add", mine + "/30", "dev", here], ["ip", "link", "set", here, "up"],
             ["ip", "netns", "exec", ns, "ip", "addr", "add", theirs + "/30", "dev", there],
             ["ip", "netns", "exec", ns, "ip", "link", "set", there, "up"]]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            _need(done.returncode == 0, "cannot build the namespace: %s: %s"
                  % (" ".join(step), done.stderr.strip()))

        def run_there(code):
            return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                                  capture_output=True, text=True, timeout=30)
        yield mine, run_there
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


_REQUEST_FROM_THERE = """
import socket, sys
for path in sys.argv[1:] or %r:
    s = socket.create_connection((%r, %d), timeout=10)
    s.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: 127.0.0.1:%d\\r\\nAuthorization: Bearer %s"
               "\\r\\nConnection: close\\r\\n\\r\\n").encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    print(path, data.split(b" ", 2)[1].decode(), b"lanchat_operator" in data)
"""


def test_the_operator_page_is_refused_to_a_peer_on_the_network(make_server, lan_peer):
    address, run_there = lan_peer
    srv = make_server("--host", "0.0.0.0")     # with a token: nobody else on the LAN joins
    op = srv.operator()
    alice = srv.client("alice", token=srv.pairing_token())
    paths = ["/admin", "/admin/api/state", "/admin/export.json", "/pair"]
    done = run_there(_REQUEST_FROM_THERE % (paths, address, srv.port, srv.port, op.key))
    assert done.returncode == 0, done.stderr
    answers = [line.split() for line in done.stdout.splitlines()]
    # even with the right key and a loopback Host header, the peer is not the PC itself
    assert answers == [[path, "403", "False"] for path in paths], done.stdout
    state = op.state()
    assert [u["nick"] for u in state["users"]] == ["alice"]
    assert alice.say("the chat goes on")["type"] == "msg"


@pytest.fixture
def in_process(tmp_path):
    """A Server in a thread of the test (so its store can fail on purpose); its port."""
    import threading
    servers = []

    def start(**options):
        srv = cs.Server(cs.Config(host="127.0.0.1", port=0, data_dir=str(tmp_path / "d"),
                                  rate_limit=0, **options))
        port = srv.listen()[1]
        loop = threading.Thread(target=srv.serve_forever, daemon=True)
        loop.start()
        servers.append((srv, loop))
        return srv, port
    yield start
    for srv, loop in servers:
        srv.stop()
        loop.join(10)
        assert not loop.is_alive()


def failing_commits(srv):
    """Make every commit of a turn that wrote something fail as a full disk does."""
    import sqlite3
    real_commit = srv.store.commit

    def commit():
        if srv.store.in_transaction:
            raise sqlite3.OperationalError("database or disk is full")
        real_commit()
    srv.store.commit = commit
    return real_commit


def test_the_operators_ok_comes_after_the_commit_and_a_failed_one_is_507(in_process):
    """'200 OK' means stored: the answer waits for the turn's commit like a client's ack. A
    commit that fails (disk full) answers 507 disk_full, and nobody hears of the change."""
    srv, port = in_process(open=True)
    alice = ChatClient(port)
    alice.hello("alice")
    op = Operator(port)
    real_commit = failing_commits(srv)
    status, answer = op.act("room", name="Class 4B")
    srv.store.commit = real_commit
    assert status == 507 and answer["error"] == "disk_full", (status, answer)
    assert [h for h in alice.drain(0.3) if h["type"] == "room"] == []
    assert op.state()["room"]["name"] == ""                 # nothing changed, not in memory either
    # the same request with a disk that works: stored, answered, heard by everyone
    assert op.act("room", name="Class 4B") == (200, {"ok": True, "room": {
        "name": "Class 4B", "topic": "", "locked": False}})
    assert alice.wait_for("room")["name"] == "Class 4B"
    assert alice.say("still here")["type"] == "msg"


def test_a_token_rotation_that_could_not_be_stored_keeps_the_old_token(in_process):
    srv, port = in_process(open=False)
    token = srv.chat.token
    op = Operator(port)
    real_commit = failing_commits(srv)
    status, answer = op.act("rotate_token")
    srv.store.commit = real_commit
    assert status == 507 and answer["error"] == "disk_full", (status, answer)
    assert srv.chat.token == token
    assert ChatClient(port).hello("alice", token=token)["type"] == "welcome"
    assert token in op.state()["pairing_url"]


def test_pipelined_operator_requests_are_answered_in_order(server):
    alice = server.client("alice")
    op = server.operator()

    def request(body):
        data = json.dumps(body).encode()
        return ("POST /admin/api/room HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (server.port, op.key, len(data))).encode() + data
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request({"name": "first"}) + request({"name": "second"}) +
                  b"GET /admin/api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                  + op.key.encode() + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    statuses = re.findall(rb"HTTP/1.1 (\d+)", data)
    assert statuses == [b"200", b"200", b"200"], data[:400]
    first, second = data.index(b'"first"'), data.index(b'"second"')
    assert first < second
    state = json.loads(data[data.rindex(b"\r\n\r\n") + 4:])   # the state, asked last
    assert state["room"]["name"] == "second"
    assert [h["name"] for h in alice.drain(0.5) if h["type"] == "room"] == ["first", "second"]
    assert alice.say("fine")["type"] == "msg"
