"""Fairness under load (issue 19): a busy sender never slows everyone else.

The loop is stepped here one turn at a time (Server.run_once in the test's thread, real
sockets on 127.0.0.1), so what a turn did can be read from the store: which sender's
messages got which ids, in that turn. No timing is asserted, only order and counts:
- the interactive lane: a client that sent a little is served first, and its message is
  delivered before the bulk senders of the same turn are read;
- the bulk lane: busy senders share a turn's TURN_FRAMES round-robin, a slice at a time,
  and light input that arrives meanwhile is served after the current slice, in that turn;
- room pacing: while the room's readers are backlogged, a flooder is not read; it resumes
  when they drain, and nothing is lost;
- two output priorities: chat overtakes a framed download's queued chunks.
"""
import hashlib
import os
import socket
import struct
import time

import pytest

import chatserver as cs
from chatclient import ChatClient, encode
from test_files import upload

PREFIX = struct.Struct(">II")
MiB = 1024 * 1024


class Peer:
    """A non-blocking client socket whose frames the test reads between turns."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.frames = []          # headers, in arrival order
        self.welcome = None

    def send(self, data):
        view = memoryview(data)
        while view:               # the loop is not running: the kernel buffer must take it
            sent = self.sock.send(view)
            view = view[sent:]

    def read(self, limit=None):
        """Everything the kernel holds now (or at most `limit` bytes: a slow reader); returns
        the new headers."""
        while limit is None or limit > 0:
            try:
                data = self.sock.recv(1 << 20 if limit is None else limit)
            except BlockingIOError:
                break
            if not data:
                break
            self.buf += data
            if limit is not None:
                limit -= len(data)
        new = []
        while len(self.buf) >= 8:
            hlen, plen = PREFIX.unpack_from(self.buf)
            if len(self.buf) < 8 + hlen + plen:
                break
            import json
            new.append(json.loads(bytes(self.buf[8:8 + hlen])))
            del self.buf[:8 + hlen + plen]
        self.frames += new
        return new

    def msgs(self):
        return [h for h in self.frames if h["type"] == "msg"]


class SteppedServer:
    def __init__(self, **config):
        self.srv = cs.Server(cs.Config(host="127.0.0.1", port=0, memory=True, open=True,
                                       rate_limit=0, **config))
        self.port = self.srv.listen()[1]
        self.peers = []

    def turn(self, readers=None, slow=(), slow_bytes=2048):
        """One loop turn, then every peer (or only `readers`) reads what it was sent, and
        the `slow` ones read `slow_bytes`."""
        self.srv.run_once()
        for peer in (self.peers if readers is None else readers):
            peer.read()
        for peer in slow:
            peer.read(slow_bytes)

    def join(self, nick, rcvbuf=None):
        peer = Peer(self.port, rcvbuf)
        peer.send(encode({"type": "hello", "nick": nick, "proto": 1}))
        self.peers.append(peer)
        for _ in range(50):
            self.turn()
            if any(h["type"] == "welcome" for h in peer.frames):
                peer.welcome = next(h for h in peer.frames if h["type"] == "welcome")
                return peer
        raise AssertionError("no welcome for %s" % nick)

    def stored_by(self):
        """[(id, sender nick key)] of every stored message, in id order."""
        rows = self.srv.chat.store.db.execute(
            "SELECT id, sender_key FROM messages ORDER BY id").fetchall()
        return [(r[0], r[1]) for r in rows]

    def close(self):
        for peer in self.peers:
            peer.sock.close()
        self.srv.shutdown()


@pytest.fixture
def stepped():
    server = SteppedServer()
    yield server
    server.close()


def burst(tag, count, size=40):
    return b"".join(encode({"type": "msg", "text": "%s %d %s" % (tag, i, "x" * size),
                            "cid": "%s-%d" % (tag, i)}) for i in range(count))


def test_ten_flooders_share_each_turn_and_a_light_message_goes_first(stepped, monkeypatch):
    monkeypatch.setattr(cs, "TURN_FRAMES", 256)      # a few turns' worth of input
    flooders = [stepped.join("flood%d" % i) for i in range(10)]
    light = stepped.join("light")
    stepped.join("observer")
    per_flooder = 400
    for i, peer in enumerate(flooders):
        peer.send(burst("f%d" % i, per_flooder))
    stepped.turn()
    stepped.turn()
    before = len(stepped.stored_by())
    # an old loop read 256 KiB from every ready connection per turn: all 4,000 at once
    assert before < 10 * per_flooder, "the flooders were read whole in two turns"
    light.send(encode({"type": "msg", "text": "me too", "cid": "light-1"}))
    stepped.turn()
    this_turn = stepped.stored_by()[before:]
    assert this_turn[0][1] == "light", "the light sender was not served first: %r" \
        % this_turn[:3]
    flood_frames = len(this_turn) - 1
    assert 0 < flood_frames <= cs.TURN_FRAMES + 10 * cs.LIGHT_TURN_FRAMES
    # everyone got the light message, and it came before that turn's flood messages
    observer = stepped.peers[-1]
    texts = [m["text"] for m in observer.msgs()]
    assert texts.index("me too") == before
    # round-robin: halfway through, every flooder has had its share
    while len(stepped.stored_by()) < before + 1 + 5 * per_flooder:
        stepped.turn()
    counts = {}
    for _, key in stepped.stored_by():
        counts[key] = counts.get(key, 0) + 1
    shares = [counts.get("flood%d" % i, 0) for i in range(10)]
    assert max(shares) - min(shares) <= 2 * cs.BULK_SLICE_FRAMES, shares
    while len(stepped.stored_by()) < 10 * per_flooder + 1:
        stepped.turn()
    for peer in stepped.peers:          # nothing lost, nothing twice, in id order
        ids = [m["id"] for m in peer.msgs()]
        assert ids == list(range(1, 10 * per_flooder + 2))


def light_speaks_after_first_slice(srv, flooder_conn, light):
    """Record the frames each of the flooder's slices dispatches (the list returned); the
    light client's message arrives during the first one."""
    serve = srv._serve
    slices = []

    def serve_then_light_speaks(conn, frames):
        used = serve(conn, frames)
        if conn is flooder_conn:
            slices.append(used)
            if len(slices) == 1:
                light.send(encode({"type": "msg", "text": "hello?", "cid": "l1"}))
        return used
    srv._serve = serve_then_light_speaks
    return slices


def test_light_input_arriving_during_the_bulk_lane_is_served_after_the_slice(stepped):
    flooder = stepped.join("flooder")
    light = stepped.join("light")
    stepped.join("observer")
    flooder.send(burst("f", 3000))
    stepped.turn()                          # the flooder is a bulk sender now
    srv = stepped.srv
    flooder_conn = srv.chat.joined[cs.nick_key("flooder")]
    assert flooder_conn.heavy
    before = len(stepped.stored_by())
    slices = light_speaks_after_first_slice(srv, flooder_conn, light)
    stepped.turn()
    assert slices == [cs.BULK_SLICE_FRAMES], slices     # one slice, then the light one
    stored = stepped.stored_by()[before:]
    assert len(stored) == cs.BULK_SLICE_FRAMES + 1 and stored[-1][1] == "light", stored[-3:]
    observer = stepped.peers[-1]
    assert observer.msgs()[-1]["text"] == "hello?"      # delivered in that same turn


def test_in_a_large_room_light_input_waits_for_more_of_the_bulk_lane(stepped, monkeypatch):
    # a turn costs a send to every joined client: in a large room, ending the bulk lane after
    # one slice for every light message would spend the loop on sends. 12 clients stand for a
    # large room here (one frame per client of bulk lane, slices of 4 frames).
    monkeypatch.setattr(cs, "BULK_SLICE_FRAMES", 4)
    monkeypatch.setattr(cs, "LIGHT_WAIT_CLIENTS", 1)
    flooder = stepped.join("flooder")
    light = stepped.join("light")
    for i in range(10):
        stepped.join("reader%d" % i)
    srv = stepped.srv
    assert srv.light_wait_frames() == 12
    flooder.send(burst("f", 3000))
    stepped.turn()
    flooder_conn = srv.chat.joined[cs.nick_key("flooder")]
    assert flooder_conn.heavy
    before = len(stepped.stored_by())
    slices = light_speaks_after_first_slice(srv, flooder_conn, light)
    stepped.turn()
    assert slices == [4, 4, 4], slices        # 12 frames of bulk, then the light one
    stored = stepped.stored_by()[before:]
    assert len(stored) == 13 and stored[-1][1] == "light", stored[-3:]
    assert stepped.peers[-1].msgs()[-1]["text"] == "hello?"
    # a turn with light input from its start gives the bulk lane as much, not one slice
    slices.clear()
    light.send(encode({"type": "msg", "text": "again", "cid": "l2"}))
    stepped.turn()
    assert sum(slices) == 12, slices


def test_a_flooder_waits_while_the_room_is_backlogged_and_resumes_when_it_drains(stepped,
                                                                                monkeypatch):
    # a stepped turn with nothing to do sleeps up to a second, which would make these
    # readers look stalled (PACE_STALLED, tested below)
    monkeypatch.setattr(cs, "PACE_STALLED", 60.0)
    flooder = stepped.join("flooder")
    readers = [stepped.join("reader%d" % i, rcvbuf=16 * 1024) for i in range(3)]
    total = 6000
    flooder.send(burst("f", total, size=200))
    conn = next(c for c in stepped.srv.chat.joined.values() if c.nick == "flooder")
    paced_at = None
    for step in range(400):
        stepped.turn(readers=[flooder], slow=readers)   # readers slower than the flood
        if conn.paused & cs.PAUSED_BY_ROOM:
            paced_at = len(stepped.stored_by())
            break
        if len(stepped.stored_by()) == total:       # all read: it was never paced
            break
    assert paced_at is not None, "the flooder was never paced"
    assert paced_at < total
    backlog = [c.out_bytes for c in stepped.srv.chat.joined.values() if c.nick != "flooder"]
    assert all(b > cs.PACE_BACKLOG for b in backlog), backlog
    for _ in range(3):                            # paced: not read, nothing more stored
        stepped.turn(readers=[flooder], slow=readers)
    assert len(stepped.stored_by()) == paced_at
    for _ in range(2000):                         # the readers drain: it goes on to the end
        stepped.turn()
        if len(stepped.stored_by()) == total and all(
                len(p.msgs()) == total for p in stepped.peers):
            break
    assert not conn.paused & cs.PAUSED_BY_ROOM
    for peer in stepped.peers:
        assert [m["id"] for m in peer.msgs()] == list(range(1, total + 1))


def test_a_reader_that_stopped_reading_does_not_pace_the_room(stepped):
    """Only readers that took bytes within PACE_STALLED count: ones that stopped for good
    are the output limits' business (closed as slow), and must not stall everyone."""
    flooder = stepped.join("flooder")
    for i in range(2):
        stepped.join("stuck%d" % i, rcvbuf=16 * 1024)
    live = stepped.join("live")
    pad = cs.frame_json(b'{"type":"pad","text":"' + b"x" * cs.PACE_BACKLOG + b'"}')
    for conn in stepped.srv.chat.joined.values():
        if conn.nick.startswith("stuck"):
            conn.push(pad)                          # backlogged...
            conn.last_tx -= cs.PACE_STALLED + 1     # ...and not reading for a while
    assert len(stepped.srv.backlogged) == 2 and len(stepped.srv.chat.joined) == 4
    assert not stepped.srv.room_backlogged()
    flooder_conn = stepped.srv.chat.joined[cs.nick_key("flooder")]
    flooder.send(burst("f", 500))
    for _ in range(200):
        stepped.turn(readers=[flooder, live])
        assert not flooder_conn.paused & cs.PAUSED_BY_ROOM
        if len(live.msgs()) == 500:
            break
    assert [m["id"] for m in live.msgs()] == list(range(1, 501))


def test_chat_overtakes_the_queued_chunks_of_a_download(make_server):
    srv = make_server("--open", "--rate-limit", "0")
    a = srv.client("alice")
    data = os.urandom(24 * MiB)
    msg = upload(a, data)
    b = ChatClient(srv.port, rcvbuf=64 * 1024)
    b.hello("bob")
    b.send({"type": "download", "file": msg["file"]["id"], "offset": 0})
    b.wait_for("download_start")
    b.wait_for("file_chunk")
    time.sleep(0.3)                   # bob reads nothing: chunks queue up in the server
    chat = a.say("while you download")
    got = 0
    while True:
        header, payload = b.recv(timeout=30, with_payload=True)
        if header["type"] == "file_chunk":
            got += len(payload)
        elif header["type"] == "msg" and header["id"] == chat["id"]:
            break
    # what was already committed to bob's socket, plus at most the rest of one chunk
    limit = cs.DOWNLOAD_CHUNK + cs.NOTSENT_LOWAT + 64 * 1024 + cs.DOWNLOAD_CHUNK
    assert got <= limit, "%d file bytes went ahead of the chat message" % got


def test_accepted_sockets_keep_little_unsent_data_in_the_kernel(stepped):
    if not hasattr(socket, "TCP_NOTSENT_LOWAT"):
        pytest.skip("this platform has no TCP_NOTSENT_LOWAT (Windows)")
    stepped.join("alice")
    (conn,) = stepped.srv.chat.joined.values()
    assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == \
        cs.NOTSENT_LOWAT


def stepped_upload(stepped, peer, data, cid="share"):
    """Upload `data` through a stepped server; returns the file id."""
    peer.send(encode({"type": "upload", "name": "lesson.bin", "size": len(data), "cid": cid,
                      "sha256": hashlib.sha256(data).hexdigest()}))
    ready = None
    for _ in range(50):
        stepped.turn()
        ready = next((h for h in peer.frames if h["type"] == "upload_ready"), None)
        if ready:
            break
    assert ready, peer.frames
    for off in range(0, len(data), MiB):
        view = memoryview(encode({"type": "chunk", "upload": ready["upload"], "offset": off},
                                 data[off:off + MiB]))
        while view:           # more than the kernel buffers: the server reads meanwhile
            try:
                view = view[peer.sock.send(view):]
            except BlockingIOError:
                stepped.turn()
    for _ in range(200):
        stepped.turn()
        done = [h for h in peer.msgs() if h.get("cid") == cid]
        if done:
            return done[0]["file"]["id"]
    raise AssertionError("the upload did not complete: %s" % peer.frames[-3:])


def test_a_turn_writes_at_most_turn_file_bytes_of_downloads_and_chat_still_goes(stepped,
                                                                               monkeypatch):
    monkeypatch.setattr(cs, "TURN_FILE_BYTES", 512 * 1024)
    teacher = stepped.join("teacher")
    file_id = stepped_upload(stepped, teacher, os.urandom(12 * MiB))
    pupils = [stepped.join("pupil%d" % i) for i in range(4)]
    talker = stepped.join("talker")
    for pupil in pupils:
        pupil.send(encode({"type": "download", "file": file_id, "offset": 0}))
    # and a browser's download over HTTP (its file bytes are in the connection's own queue)
    browser = Peer(stepped.port)
    browser.send(("GET /files/%s/lesson.bin HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  "Authorization: Bearer %s\r\n\r\n"
                  % (file_id, stepped.port, pupils[0].welcome["session"])).encode())
    per_turn = []             # [bytes each downloader received in that turn]
    for turn in range(40):
        if turn == 6:
            talker.send(encode({"type": "msg", "text": "during the downloads", "cid": "t"}))
        stepped.srv.run_once()
        got = [received_bytes(pupil) for pupil in pupils] + [received_bytes(browser, False)]
        per_turn.append(got)
        if turn == 6:
            # the chat message went out in the turn it came in, to every downloader
            for pupil in pupils:
                assert [m["text"] for m in pupil.msgs()] == ["during the downloads"], turn
    # one write may overshoot: a sendfile() of one chunk, its header
    limit = cs.TURN_FILE_BYTES + cs.DOWNLOAD_CHUNK + 4096
    assert all(sum(got) <= limit for got in per_turn), per_turn
    # without the cap, the first turns would write WRITE_BUDGET to each of them
    assert max(sum(got) for got in per_turn[1:]) >= cs.TURN_FILE_BYTES // 2, per_turn
    # round-robin: the turn's bytes go to the downloaders in turn, none is left behind
    for i in range(len(pupils) + 1):
        assert sum(1 for got in per_turn[1:] if got[i] > 1024) >= 2, per_turn
    assert bytes(browser.buf).startswith(b"HTTP/1.1 200 ")
    totals = [sum(got[i] for got in per_turn) for i in range(len(pupils) + 1)]
    assert max(totals) - min(totals) <= 2 * limit, (totals, per_turn)


def received_bytes(peer, frames=True):
    """Bytes the kernel holds for the peer now (read, and parsed if they are frames)."""
    total = 0
    while True:
        try:
            data = peer.sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not data:
            break
        total += len(data)
        peer.buf += data
    if frames:
        peer.read()
    return total
