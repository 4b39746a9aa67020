"""What the Flutter client relies on from the server, checked against the real server.

The Dart tests (client_flutter/test/) run the app's ChatClient against a fake server; these
tests check that the real chatserver.py behaves as that fake does, for the behaviours the
app's logic depends on:
- history requests and their errors are matched by `cid` (the app no longer matches them
  first-in-first-out): a rate-limited `history` names its cid in `ref`, a rate-limited `typing`
  names none, so it cannot be taken for the answer to a pending history request;
- the liveness probe: a ping sent right after a reconnect-worthy pause (the app comes back to
  the foreground) is answered with a pong echoing `t`, before anything else;
- a client that reconnects with its device key (`hello.device`) takes its nick over
  while the old connection still looks alive (the app reconnects after a dead probe);
- `welcome.limits` carries the fields the app reads, and only adds fields (the app ignores
  unknown ones).
"""
import time


def test_a_rate_limited_history_request_names_its_cid_and_typing_names_none(make_server):
    # 0.5 token/s: the four frames below arrive long before a token comes back.
    srv = make_server("--open", "--rate-limit", "0.5", "--rate-burst", "2")
    other = srv.client("bob")
    a = srv.client("alice")
    a.send({"type": "typing"})
    a.send({"type": "typing"})
    a.send({"type": "typing"})            # over the burst of 2: rate_limited, about typing
    a.send({"type": "history", "cid": "h-1", "limit": 5})   # also limited, about h-1
    errors = [a.wait_for("error"), a.wait_for("error")]
    assert [e["code"] for e in errors] == ["rate_limited", "rate_limited"]
    assert "ref" not in errors[0], "typing has no cid: its error names nothing"
    assert errors[1]["ref"] == "h-1"
    assert not any(e["fatal"] for e in errors)
    time.sleep(2.5)                        # the bucket refills
    a.send({"type": "history", "cid": "h-2", "limit": 5})
    assert a.wait_for("history")["cid"] == "h-2"
    assert other.say("still fine")["type"] == "msg", "the other client was not affected"


def test_history_replies_carry_their_cid_in_request_order(server):
    a = server.client("alice")
    for i in range(3):
        a.say("m%d" % i)
    a.send({"type": "history", "cid": "h-1", "before": 3, "limit": 1})
    a.send({"type": "history", "cid": "h-2", "limit": 2})
    first, second = a.wait_for("history"), a.wait_for("history")
    assert (first["cid"], second["cid"]) == ("h-1", "h-2")
    assert [m["text"] for m in first["messages"]] == ["m1"]
    assert [m["text"] for m in second["messages"]] == ["m1", "m2"]


def test_the_resume_probe_is_answered_with_its_t(server):
    a = server.client("alice")
    time.sleep(0.5)                        # the app was in the background
    a.send({"type": "ping", "t": 7})
    assert a.wait_for(lambda h: h["type"] == "pong", timeout=5) == {"type": "pong", "t": 7}


def test_reconnecting_with_the_device_key_takes_the_nick_over(server):
    """After a probe got no answer the app reconnects at once; the server may still think the
    old connection is alive, and the device key must win over it (no nick_owned)."""
    watcher = server.client("watcher")
    old = server.client("alice")
    new = server.client("alice", device=old.device)
    assert new.welcome["nick"] == "alice"
    assert new.say("back")["type"] == "msg"
    seen = watcher.wait_for(lambda h: h["type"] == "msg" and h["text"] == "back")
    assert seen["from"] == "alice"


def test_welcome_limits_has_the_fields_the_app_reads(server):
    limits = server.client("alice").welcome["limits"]
    assert {"text", "chunk", "file"} <= set(limits)
    assert all(isinstance(value, (int, float)) for value in limits.values())
    for name in ("ping_after", "idle_timeout"):   # optional: defaults 30 s / 90 s in the app
        if name in limits:
            assert limits[name] > 0
    # the app offers Edit within this many seconds of a message's ts (15 minutes by default)
    assert limits["edit_window"] == 900.0
