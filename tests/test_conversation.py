"""Replies, mentions, reactions and search (docs/PROTOCOL.md section 12), over the framed
protocol and WebSocket against a real server, plus the storage and the pure helpers in
process. Each refusal is checked for its error and for the other clients still chatting."""
import json

import pytest

import chatserver as cs
from chatclient import ChatClient
from test_core import assert_chat_still_works
from test_files import upload
from test_http import ws_connect, ws_hello, ws_say, ws_send, ws_wait_for


def wait_msg(client, msg_id):
    return client.wait_for(lambda h: h["type"] == "msg" and h["id"] == msg_id)


def wait_change(client, target, kind):
    return client.wait_for(lambda h: h["type"] == "change" and h.get("target") == target
                           and h.get("change") == kind)


# -- replies ------------------------------------------------------------------------------

def test_a_reply_carries_a_quote_of_the_original_live_and_in_history(server):
    alice, bob = server.client("alice"), server.client("bob")
    question = bob.say("who has the homework link?")
    answer = alice.say("here it is", reply_to=question["id"])
    assert answer["reply_to"] == {"id": question["id"], "from": "bob",
                                  "text": "who has the homework link?"}
    assert wait_msg(bob, answer["id"])["reply_to"]["id"] == question["id"]
    history = {m["id"]: m for m in server.client("carol").welcome["history"]}
    assert history[answer["id"]]["reply_to"] == answer["reply_to"]


def test_a_quote_is_200_characters_and_a_file_is_quoted_by_its_name(server):
    alice, bob = server.client("alice"), server.client("bob")
    long = bob.say("x" * 500)
    assert len(alice.say("ok", reply_to=long["id"])["reply_to"]["text"]) == 200
    shared = upload(bob, b"pdf bytes", name="worksheet.pdf")
    assert alice.say("thanks", reply_to=shared["id"])["reply_to"]["text"] == "worksheet.pdf"


def test_quotes_follow_an_edit_and_a_removal_of_the_original(server):
    alice, bob = server.client("alice"), server.client("bob")
    original = bob.say("meet at 5")
    reply = alice.say("ok!", reply_to=original["id"])
    bob.change("edit", original["id"], "meet at 6")
    history = {m["id"]: m for m in server.client("carol").welcome["history"]}
    assert history[reply["id"]]["reply_to"]["text"] == "meet at 6"
    bob.change("delete", original["id"])
    history = {m["id"]: m for m in server.client("dave").welcome["history"]}
    assert history[reply["id"]]["reply_to"] == {"id": original["id"], "from": "bob",
                                                "text": "", "deleted": True}
    assert "meet at" not in json.dumps(history[reply["id"]])


def test_a_reply_to_a_removed_or_unknown_message_is_refused(server):
    alice, bob = server.client("alice"), server.client("bob")
    gone = bob.say("oops")
    bob.change("delete", gone["id"])
    for target in (gone["id"], 999999):
        err = alice.say("answer", reply_to=target)
        assert err["type"] == "error" and err["code"] == "unknown_message", err
        assert err["fatal"] is False and "ref" in err
    err = alice.say("answer", reply_to="12")
    assert err["code"] == "bad_request"
    assert_chat_still_works(server, alice, bob)


def test_a_direct_message_is_answered_only_in_its_own_conversation(server):
    alice, bob, carol = server.client("alice"), server.client("bob"), server.client("carol")
    secret = alice.say("the wifi password is hunter2", to="bob")
    wait_msg(bob, secret["id"])
    # carol cannot see it, so she cannot quote it
    assert carol.say("what?", reply_to=secret["id"])["code"] == "unknown_message"
    # bob may not quote it to everyone, nor to carol
    assert bob.say("lol", reply_to=secret["id"])["code"] == "unknown_message"
    assert bob.say("lol", to="carol", reply_to=secret["id"])["code"] == "unknown_message"
    ok = bob.say("thanks", to="alice", reply_to=secret["id"])
    assert ok["type"] == "msg" and ok["reply_to"]["text"] == "the wifi password is hunter2"
    assert "hunter2" not in json.dumps(carol.drain(0.3))
    assert_chat_still_works(server, alice, bob, carol)


# -- mentions ------------------------------------------------------------------------------

def test_mentions_list_the_nicks_that_exist(server):
    alice, bob = server.client("alice"), server.client("Bob")
    server.client("Zoë").close()                        # claimed, offline: still a user
    sent = alice.say("@bob, @zoë and @nobody: see @Bob's note @alice!")
    assert sent["mentions"] == ["Bob", "Zoë", "alice"]
    assert wait_msg(bob, sent["id"])["mentions"] == ["Bob", "Zoë", "alice"]
    assert "mentions" not in alice.say("no one mentioned, mail me at a@")


def test_a_direct_message_mentions_only_its_two_parties(server):
    alice, bob = server.client("alice"), server.client("bob")
    server.client("carol")
    sent = alice.say("@bob did @carol tell you?", to="bob")
    assert sent["mentions"] == ["bob"]


# -- reactions ----------------------------------------------------------------------------

def test_reactions_one_per_user_live_and_in_history(server):
    alice, bob, carol = server.client("alice"), server.client("bob"), server.client("carol")
    msg = carol.say("pizza friday?")
    first = alice.react(msg["id"], "👍")
    assert first["reactions"] == {"👍": [alice.welcome["uid"]]}
    assert first["uid"] == alice.welcome["uid"] and first["emoji"] == "👍"
    assert wait_change(carol, msg["id"], "react")["reactions"] == first["reactions"]
    bob.react(msg["id"], "👍")
    changed = alice.react(msg["id"], "❤️")              # a new emoji replaces alice's
    assert changed["reactions"] == {"👍": [bob.welcome["uid"]], "❤️": [alice.welcome["uid"]]}
    history = {m["id"]: m for m in server.client("dave").welcome["history"]}
    assert history[msg["id"]]["reactions"] == changed["reactions"]
    removed = alice.react(msg["id"], "")
    assert removed["reactions"] == {"👍": [bob.welcome["uid"]]} and removed["emoji"] == ""
    # the same reaction again changes nothing: nothing is stored or sent
    bob.drain(0.2)
    bob.send({"type": "react", "id": msg["id"], "emoji": "👍", "cid": "same"})
    assert [h for h in bob.drain(0.4) if h["type"] in ("change", "error")] == []


@pytest.mark.parametrize("emoji", ["ok", "1", " ", "👍👍👍👍👍👍👍👍👍", "\u200b", "a👍", 7, None,
                                   "\u202e", "👍" * 3 + "\u0000"])
def test_a_reaction_that_is_not_an_emoji_is_refused(server, emoji):
    alice, bob = server.client("alice"), server.client("bob")
    msg = bob.say("hi")
    err = alice.react(msg["id"], emoji)
    assert err["type"] == "error" and err["code"] == "bad_request", err
    assert "emoji" in err["message"]
    assert_chat_still_works(server, alice, bob)


def test_reactions_accept_emoji_sequences():
    for emoji in ("👍", "❤️", "👍🏽", "👩‍💻", "🇫🇷", "😂", "✅"):
        assert cs.valid_reaction(emoji), emoji


def test_a_reaction_to_a_removed_or_hidden_message_or_while_muted_is_refused(server):
    alice, bob, carol = server.client("alice"), server.client("bob"), server.client("carol")
    secret = alice.say("between us", to="bob")
    assert carol.react(secret["id"], "👍")["code"] == "unknown_message"
    gone = alice.say("oops")
    alice.change("delete", gone["id"])
    assert bob.react(gone["id"], "👍")["code"] == "unknown_message"
    op = server.operator()
    op.act("mute", nick="carol")
    public = alice.say("vote here")
    assert carol.react(public["id"], "👍")["code"] == "muted"
    assert_chat_still_works(server, alice, bob)


def test_a_reaction_to_a_direct_message_reaches_its_two_parties_only(server):
    alice, bob, carol = server.client("alice"), server.client("bob"), server.client("carol")
    secret = alice.say("between us", to="bob")
    wait_msg(bob, secret["id"])
    bob.react(secret["id"], "🤫")
    assert wait_change(alice, secret["id"], "react")["reactions"] == {"🤫": [bob.welcome["uid"]]}
    assert [h for h in carol.drain(0.4) if h["type"] == "change"] == []


def test_a_resuming_client_gets_the_reactions_it_missed(server):
    alice, bob = server.client("alice"), server.client("bob")
    msg = alice.say("react to this")
    wait_msg(bob, msg["id"])
    last = bob.welcome["last_id"] if bob.welcome["last_id"] > msg["id"] else msg["id"]
    bob.close()
    alice.react(msg["id"], "🎉")
    back = ChatClient(server.port)
    back.hello("bob", device=bob.device, since=last)
    [change] = [m for m in back.welcome["history"] if m["type"] == "change"]
    assert change["change"] == "react" and change["reactions"] == {"🎉": [alice.welcome["uid"]]}
    # a client that never saw the message gets it with its reactions
    fresh = {m["id"]: m for m in server.client("carol").welcome["history"]}
    assert fresh[msg["id"]]["reactions"] == {"🎉": [alice.welcome["uid"]]}


def test_a_removed_message_loses_its_reactions(server):
    alice, bob = server.client("alice"), server.client("bob")
    msg = alice.say("soon gone")
    bob.react(msg["id"], "👍")
    alice.change("delete", msg["id"])
    history = {m["id"]: m for m in server.client("carol").welcome["history"]}
    assert "reactions" not in history[msg["id"]]


def test_reactions_count_in_flood_control(make_server):
    srv = make_server("--open", "--rate-limit", "0.5", "--rate-burst", "3")
    alice, bob = srv.client("alice"), srv.client("bob")
    msg = bob.say("hi")
    codes = []
    for emoji in ("👍", "❤️", "😂", "🎉", "✅"):
        reply = alice.react(msg["id"], emoji)
        codes.append(reply.get("code", reply["type"]))
    assert "rate_limited" in codes, codes


# -- search -------------------------------------------------------------------------------

def test_search_finds_words_as_prefixes_newest_first_and_pages(server):
    alice, bob = server.client("alice"), server.client("bob")
    old = bob.say("Homework link for Tuesday: http://127.0.0.1/hw")
    for i in range(5):
        alice.say("chatter %d" % i)
    newer = alice.say("the homework is due Friday")
    found = alice.search("homew")
    assert found["type"] == "search_results" and found["has_more"] is False
    assert [m["id"] for m in found["results"]] == [newer["id"], old["id"]]
    both = alice.search("homework tuesday")
    assert [m["id"] for m in both["results"]] == [old["id"]]
    page = alice.search("homework", limit=1)
    assert [m["id"] for m in page["results"]] == [newer["id"]] and page["has_more"] is True
    rest = alice.search("homework", limit=1, before=newer["id"])
    assert [m["id"] for m in rest["results"]] == [old["id"]] and rest["has_more"] is False


def test_search_ignores_case_and_accents(server):
    alice = server.client("alice")
    sent = alice.say("Réunion à l'école demain")
    assert [m["id"] for m in alice.search("REUNION ecole")["results"]] == [sent["id"]]


def test_search_finds_a_file_by_its_name_and_never_a_removed_message(server):
    alice, bob = server.client("alice"), server.client("bob")
    shared = upload(bob, b"data", name="fractions-worksheet.pdf")
    assert [m["id"] for m in alice.search("worksheet")["results"]] == [shared["id"]]
    gone = alice.say("secret plans")
    edited = alice.say("draft plans")
    alice.change("delete", gone["id"])
    alice.change("edit", edited["id"], "final version")
    assert alice.search("plans")["results"] == []
    assert [m["id"] for m in alice.search("final")["results"]] == [edited["id"]]


def test_search_shows_a_direct_message_to_its_two_parties_only(server):
    alice, bob, carol = server.client("alice"), server.client("bob"), server.client("carol")
    secret = alice.say("the wifi password is hunter2", to="bob")
    public = alice.say("no password here, just wifi")
    for reader in (alice, bob):
        assert secret["id"] in [m["id"] for m in reader.search("wifi")["results"]]
    assert [m["id"] for m in carol.search("wifi")["results"]] == [public["id"]]
    assert carol.search("hunter2")["results"] == []
    assert carol.search("wifi", **{"with": "alice"})["results"] == []
    only = bob.search("wifi", **{"with": "alice"})
    assert [m["id"] for m in only["results"]] == [secret["id"]]
    mine = carol.search("wifi", **{"from": "alice"})
    assert [m["id"] for m in mine["results"]] == [public["id"]]


@pytest.mark.parametrize("fields, code", [
    ({"text": ""}, "bad_request"), ({"text": "   "}, "bad_request"),
    ({"text": "x" * 201}, "bad_request"), ({"text": 5}, "bad_request"),
    ({"text": "\"*()"}, "bad_request"), ({"text": "a", "limit": 0}, "bad_request"),
    ({"text": "a", "limit": 51}, "bad_request"), ({"text": "a", "before": -1}, "bad_request"),
    ({"text": "a", "from": "nobody"}, "unknown_user"),
    ({"text": "a", "with": "nobody"}, "unknown_user")])
def test_a_bad_search_is_refused(server, fields, code):
    alice, bob = server.client("alice"), server.client("bob")
    alice.send(dict({"type": "search", "cid": "s1"}, **fields))
    err = alice.wait_for(lambda h: h["type"] in ("error", "search_results"))
    assert err["type"] == "error" and err["code"] == code and err["ref"] == "s1", err
    assert_chat_still_works(server, alice, bob)


def test_search_syntax_characters_are_plain_text(server):
    alice = server.client("alice")
    sent = alice.say('he said "NEAR(a b)" OR AND * -x')
    for query in ('"NEAR', 'OR AND', "-x", "near(a", 'said"'):
        found = alice.search(query)
        assert found["type"] == "search_results", (query, found)
    assert sent["id"] in [m["id"] for m in alice.search("near")["results"]]


def test_search_without_fts5_finds_substrings(tmp_path):
    """The LIKE fallback of an SQLite built without FTS5, in process."""
    store = cs.MessageStore(str(tmp_path / "plain.sqlite3"), search=cs.MessageStore.SEARCH_PLAIN)
    try:
        assert store.search_kind == cs.MessageStore.SEARCH_PLAIN
        for i, text in enumerate(["Homework link", "100% sure", "under_score", "nothing",
                                  "50 percent", "parts"]):
            store.add_message((1, "alice"), None, "c%d" % i,
                              lambda msg_id, t=text: json.dumps({"type": "msg", "id": msg_id,
                                                                 "text": t}),
                              search_text=text)
        store.commit()
        assert [json.loads(b)["text"] for b in store.search(1, ["work"], 10)[0]] == \
            ["Homework link"]
        assert [json.loads(b)["text"] for b in store.search(1, ["HOMEWORK", "LINK"], 10)[0]] \
            == ["Homework link"]
        # % and _ are literal, not wildcards ("50 percent" and "parts" would match them)
        assert [json.loads(b)["text"] for b in store.search(1, ["0%"], 10)[0]] == ["100% sure"]
        assert [json.loads(b)["text"] for b in store.search(1, ["r_s"], 10)[0]] == \
            ["under_score"]
        assert store.search(1, ["r_x"], 10)[0] == []
    finally:
        store.close()


def test_the_index_is_built_again_for_the_other_kind(tmp_path):
    """A data folder moved to a Python whose SQLite lacks FTS5 (and back) still searches."""
    path = str(tmp_path / "moved.sqlite3")
    store = cs.MessageStore(path)
    store.add_message((1, "alice"), None, "c1",
                      lambda i: json.dumps({"type": "msg", "id": i, "text": "moved along"}),
                      search_text="moved along")
    store.commit()
    store.close()
    for kind in (cs.MessageStore.SEARCH_PLAIN, None):
        store = cs.MessageStore(path, search=kind)
        try:
            assert len(store.search(1, ["moved"], 10)[0]) == 1, kind
        finally:
            store.close()


def test_search_over_websocket(server):
    alice = server.client("alice")
    sent = alice.say("ws can search too")
    with ws_connect(server) as ws:
        ws_hello(ws, "wendy")
        ws_send(ws, {"type": "search", "text": "search", "cid": "w1"})
        found = ws_wait_for(ws, "search_results")
        assert found["cid"] == "w1" and [m["id"] for m in found["results"]] == [sent["id"]]
        reply = ws_say(ws, "yes", "w2", reply_to=sent["id"])
        assert reply["reply_to"]["id"] == sent["id"]
        ws_send(ws, {"type": "react", "id": sent["id"], "emoji": "👍", "cid": "w3"})
        assert ws_wait_for(ws, "change")["change"] == "react"
    assert wait_change(alice, sent["id"], "react")["emoji"] == "👍"


def test_the_operator_export_shows_no_quote_of_a_direct_message(server):
    alice, bob = server.client("alice"), server.client("bob")
    secret = alice.say("locker code 4321", to="bob")
    wait_msg(bob, secret["id"])
    bob.say("got it", to="alice", reply_to=secret["id"])
    status, exported = server.operator().request("GET", "/admin/export.json")
    assert status == 200 and "4321" not in json.dumps(exported)


def test_an_old_data_folder_gets_replies_and_search(tmp_path):
    """Version 3 (issue 17) to 4: the reply column, and the index built from the history."""
    import sqlite3
    path = str(tmp_path / "v3.sqlite3")
    store = cs.MessageStore(path)
    store.add_message((1, "alice"), None, "c1",
                      lambda i: json.dumps({"type": "msg", "id": i, "text": "before upgrade"}))
    store.commit()
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE IF EXISTS search_fts")
    db.execute("DROP TABLE IF EXISTS search_plain")
    db.execute("DELETE FROM settings WHERE key='search_index'")
    db.execute("DROP INDEX IF EXISTS messages_reply_to")
    db.execute("ALTER TABLE messages DROP COLUMN reply_to")
    db.execute("UPDATE settings SET value='3' WHERE key='schema_version'")
    db.commit()
    db.close()
    store = cs.MessageStore(path)
    try:
        assert store.get_setting("schema_version") == "4"
        assert len(store.search(1, ["upgrade"], 10)[0]) == 1
        assert store.replies_to(1) == []
    finally:
        store.close()


def test_messages_not_yet_indexed_are_found_and_caught_up_after_a_restart(make_server,
                                                                            tmp_path):
    """The index is written in batches: a search sees what is not written yet, and a server
    killed before the batch indexes those messages at its next start."""
    srv = make_server("--open", data_dir=tmp_path / "d")
    alice = srv.client("alice")
    sent = [alice.say("batch %d pending" % i)["id"] for i in range(3)]
    assert [m["id"] for m in alice.search("pending")["results"]] == sent[::-1]
    late = alice.say("written just before the kill")
    srv.kill9()
    srv.start()
    back = srv.client("bob")
    assert [m["id"] for m in back.search("kill")["results"]] == [late["id"]]


def test_a_rolled_back_turn_leaves_nothing_in_the_index(tmp_path):
    store = cs.MessageStore(str(tmp_path / "r.sqlite3"))
    try:
        store.add_message((1, "alice"), None, "c1",
                          lambda i: json.dumps({"type": "msg", "id": i, "text": "kept"}),
                          search_text="kept")
        store.commit()
        store.add_message((1, "alice"), None, "c2",
                          lambda i: json.dumps({"type": "msg", "id": i, "text": "lost"}),
                          search_text="lost")
        store.rollback()                      # a full disk, say
        assert store.search(1, ["lost"], 10)[0] == []
        assert len(store.search(1, ["kept"], 10)[0]) == 1
    finally:
        store.close()


def test_a_store_that_stopped_before_writing_its_index_catches_up_at_the_next_start(tmp_path):
    path = str(tmp_path / "c.sqlite3")
    store = cs.MessageStore(path)
    store.add_message((1, "alice"), None, "c1",
                      lambda i: json.dumps({"type": "msg", "id": i, "text": "never indexed"}),
                      search_text="never indexed")
    store.commit()
    assert store.to_index, "the index is written in batches, not with every message"
    store.db.close()                          # as a kill -9 would: the batch never written
    store = cs.MessageStore(path)
    try:
        assert store.to_index == []
        assert len(store.search(1, ["indexed"], 10)[0]) == 1
    finally:
        store.close()
