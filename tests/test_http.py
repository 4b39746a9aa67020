"""The server's HTTP/1.1 and WebSocket side over loopback: RFC 6455 conformance with the
`websockets` library as the peer (and hand-built frames for the violations it refuses to
produce), bad HTTP input, files over HTTP (docs/PROTOCOL.md section 5) and the
loopback-only pairing routes. After every bad input, other clients must be unaffected."""
import base64
import hashlib
import json
import os
import socket
import struct
import time
import types
import urllib.parse

import pytest
import websockets
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect as ws_client_connect

import chatserver as cs
from test_core import assert_chat_still_works
from test_files import upload as framed_upload

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"    # RFC 6455 1.3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IO_TIMEOUT = 5.0                 # seconds any single expected answer may take
HTTP_TIMEOUT_FLAG = "1"          # --http-timeout for the slowloris tests, seconds
TRICKLE_EVERY = 0.25             # a slowloris byte this often: well inside the idle timeout
SLOWLORIS_PATIENCE = 5.0         # the server must have closed by then (timeout is 1 s)


# -- raw HTTP ---------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # lower-case name -> value
        self.body = body

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)

    def __repr__(self):
        return "Response(%d, %r, %r)" % (self.status, self.headers, self.body[:200])


def request_bytes(port, method, target, headers=(), body=b""):
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: 127.0.0.1:%d" % port]
    lines += ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawHttp:
    """One TCP connection speaking HTTP/1.1 by hand, so bad input can be sent as is."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target, headers=(), body=b""):
        self.send(request_bytes(self.port, method, target, headers, body))

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed by the server; unread: %r" % bytes(self.buf[:200]))
        self.buf += data

    def read_response(self, head_only=False, timeout=IO_TIMEOUT):
        """The next response; `head_only` for an answer to HEAD (no body follows)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        end = self.buf.index(b"\r\n\r\n")
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        assert lines[0].startswith("HTTP/1.1 "), "not a status line: %r" % lines[0][:80]
        status = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.lower(), value.strip()
            # RFC 9110 5.3: repeated field lines combine into one comma-separated list
            headers[name] = headers[name] + ", " + value if name in headers else value
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill(deadline)
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return Response(int(status), headers, body)

    def closed_by_server(self, timeout=IO_TIMEOUT):
        """True once the server has closed the connection (EOF or reset) with nothing more
        sent; fails if other bytes arrive or nothing happens in time."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buf += data
        except ConnectionResetError:
            pass
        assert not self.buf, "unexpected bytes before close: %r" % bytes(self.buf[:200])
        return True

    def close(self):
        self.sock.close()


def read_until_closed(sock, timeout=IO_TIMEOUT):
    """Whatever the server still sends, up to its close (fails if it never closes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def http(server, method, target, headers=(), body=b""):
    """One request on a fresh connection; returns the Response."""
    conn = RawHttp(server.port)
    try:
        conn.request(method, target, headers, body)
        return conn.read_response(head_only=method == "HEAD")
    finally:
        conn.close()


def assert_error_and_closed(conn, status, code=None):
    """An HTTP error answer per PROTOCOL.md section 5, then the server closes."""
    res = conn.read_response()
    assert res.status == status, res
    body = res.json()
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"] == (code or "http_%d" % status), body
    assert "close" in res.headers["connection"].lower().replace(" ", "").split(",")
    assert res.headers["x-content-type-options"] == "nosniff"
    assert conn.closed_by_server()
    return res


def query(**fields):
    return urllib.parse.urlencode({k: v for k, v in fields.items() if v is not None})


def auth(session):
    """The header that presents a session to the HTTP file routes (never the URL)."""
    return [("Authorization", "Bearer " + session)] if session is not None else []


def http_upload(server, session, data, name="file.bin", mime="application/octet-stream",
                **fields):
    headers = [("Content-Length", str(len(data)))] + auth(session)
    if mime:
        headers.append(("Content-Type", mime))
    return http(server, "POST", "/files?" + query(name=name, **fields), headers, data)


def http_download(server, file_id, session, name="x", headers=(), **fields):
    target = "/files/%s/%s" % (file_id, urllib.parse.quote(name))
    if fields:
        target += "?" + query(**fields)
    return http(server, "GET", target, list(headers) + auth(session))


def dir_listing(server, sub):
    return sorted(os.listdir(os.path.join(server.data_dir, sub)))


# -- WebSocket with the `websockets` library --------------------------------------------

def ws_url(server):
    return "ws://127.0.0.1:%d/ws" % server.port


def ws_connect(server, **options):
    options.setdefault("proxy", None)            # never go through an environment proxy
    options.setdefault("compression", None)      # the server negotiates no extension
    options.setdefault("ping_interval", None)    # no library pings mixed into the tests
    options.setdefault("open_timeout", IO_TIMEOUT)
    options.setdefault("close_timeout", IO_TIMEOUT)
    return ws_client_connect(ws_url(server), **options)


def ws_send(ws, obj):
    ws.send(json.dumps(obj))


def ws_wait_for(ws, predicate, timeout=IO_TIMEOUT):
    """The first JSON message matching `predicate` (a type name or a callable); others are
    dropped."""
    if isinstance(predicate, str):
        kind = predicate
        predicate = lambda m: m.get("type") == kind  # noqa: E731
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert isinstance(message, str), "the server sent a binary message: %r" % message
        obj = json.loads(message)
        if predicate(obj):
            return obj


def ws_hello(ws, nick, **extra):
    ws_send(ws, {"type": "hello", "nick": nick, "client": "tests/ws", "proto": 1, **extra})
    return ws_wait_for(ws, lambda m: m["type"] in ("welcome", "error"))


def ws_say(ws, text, cid, **extra):
    ws_send(ws, {"type": "msg", "text": text, "cid": cid, **extra})
    return ws_wait_for(ws, lambda m: m.get("cid") == cid or m.get("ref") == cid)


def received_close_code(ws):
    """The code of the Close frame the server sent (None if it sent none)."""
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd is not None else None


# -- WebSocket by hand (for what a correct client library refuses to send) ---------------

def expected_accept(key):
    # RFC 6455 4.2.2: base64 of the SHA-1 of the key concatenated with the GUID
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def client_frame(opcode, payload=b"", fin=True, masked=True):
    """A client frame, masked as RFC 6455 5.3 requires (or not, on purpose)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        head += bytes([mask_bit | len(payload)])
    elif len(payload) < 65536:
        head += struct.pack("!BH", mask_bit | 126, len(payload))
    else:
        head += struct.pack("!BQ", mask_bit | 127, len(payload))
    if masked:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


class RawWs:
    """A WebSocket opened with a hand-written handshake; frames are built byte by byte.
    `first_bytes` go in the same write as the handshake."""

    def __init__(self, server, first_bytes=b""):
        self.http = RawHttp(server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.http.send(request_bytes(server.port, "GET", "/ws", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13")]) + first_bytes)
        res = self.http.read_response(head_only=True)
        assert res.status == 101, res
        assert res.headers["sec-websocket-accept"] == expected_accept(key)
        self.sock = self.http.sock

    def send_frame(self, opcode, payload=b"", fin=True, masked=True):
        self.sock.sendall(client_frame(opcode, payload, fin, masked))

    def send_json(self, obj):
        self.send_frame(0x1, json.dumps(obj).encode())

    def _need(self, n, deadline):
        while len(self.http.buf) < n:
            self.http._fill(deadline)

    def recv_frame(self, timeout=IO_TIMEOUT):
        """(opcode, fin, payload) of the next server frame, which must be unmasked."""
        deadline = time.monotonic() + timeout
        buf = self.http.buf
        self._need(2, deadline)
        first, second = buf[0], buf[1]
        assert not second & 0x80, "RFC 6455 5.1: a server MUST NOT mask frames"
        length, pos = second & 0x7F, 2
        if length == 126:
            self._need(4, deadline)
            length, pos = struct.unpack_from("!H", buf, 2)[0], 4
        elif length == 127:
            self._need(10, deadline)
            length, pos = struct.unpack_from("!Q", buf, 2)[0], 10
        self._need(pos + length, deadline)
        payload = bytes(buf[pos:pos + length])
        del buf[:pos + length]
        return first & 0x0F, bool(first & 0x80), payload

    def recv_json(self, predicate=lambda m: True, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            opcode, fin, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            assert opcode != 0x8, "closed: %r" % payload
            if opcode == 0x1:
                obj = json.loads(payload)
                if predicate(obj):
                    return obj

    def expect_close(self, code, timeout=IO_TIMEOUT):
        """Skip data frames up to the server's Close frame; check its code and that the TCP
        connection is closed after it. Returns the frames skipped."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            opcode, fin, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == 0x8:
                break
            skipped.append((opcode, payload))
        assert len(payload) >= 2, "a Close frame without a status code"
        assert struct.unpack("!H", payload[:2])[0] == code, payload
        payload[2:].decode("utf-8")          # the reason is UTF-8 (RFC 6455 5.5.1)
        assert self.http.closed_by_server(max(0.01, deadline - time.monotonic()))
        return skipped

    def close(self):
        self.sock.close()


def raw_ws_joined(server, nick):
    ws = RawWs(server)
    ws.send_json({"type": "hello", "nick": nick, "client": "tests/raw", "proto": 1})
    assert ws.recv_json(lambda m: m["type"] in ("welcome", "error"))["type"] == "welcome"
    return ws


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def slow_server(make_server):
    """A server that gives an HTTP request head HTTP_TIMEOUT_FLAG seconds to arrive."""
    return make_server("--open", "--rate-limit", "0", "--http-timeout", HTTP_TIMEOUT_FLAG)


@pytest.fixture
def shared_file(server):
    """alice (framed) shared a small text file with everyone; bob watches."""
    alice, bob = server.client("alice"), server.client("bob")
    data = b"hello over http\n" * 100
    res = http_upload(server, alice.welcome["session"], data, name="notes.txt",
                      mime="text/plain", cid="up-1")
    assert res.status == 201, res
    msg = res.json()
    return types.SimpleNamespace(alice=alice, bob=bob, data=data, msg=msg, id=msg["file"]["id"])


# == WebSocket conformance (websockets as the client) =====================================

def test_ws_handshake_switches_protocols_without_extensions(server):
    with ws_connect(server) as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers["Upgrade"].lower() == "websocket"
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.subprotocol is None
        # with compression offered, the server still answers without extension
    with ws_connect(server, compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_ws_hello_welcome_and_text_messages(server):
    with ws_connect(server) as ws:
        welcome = ws_hello(ws, "wendy")
        assert welcome["type"] == "welcome" and welcome["nick"] == "wendy"
        assert welcome["proto"] == 1 and welcome["users"] == ["wendy"]
        assert isinstance(welcome["session"], str) and welcome["session"]
        assert ws_wait_for(ws, "join")["nick"] == "wendy"
        ack = ws_say(ws, "héllo ✓", "w-1")
        assert ack["type"] == "msg" and ack["from"] == "wendy" and ack["text"] == "héllo ✓"
        ws_send(ws, {"type": "ping", "t": 7})
        assert ws_wait_for(ws, "pong") == {"type": "pong", "t": 7}


def test_ws_and_framed_users_share_one_chat(server):
    alice = server.client("alice")
    with ws_connect(server) as ws:
        welcome = ws_hello(ws, "wendy")
        assert sorted(welcome["users"]) == ["alice", "wendy"]
        assert alice.wait_for(lambda h: h["type"] == "join" and h["nick"] == "wendy")
        from_ws = ws_say(ws, "from the browser", "w-1")
        assert alice.wait_for("msg") == from_ws
        from_framed = alice.say("from the app")
        assert ws_wait_for(ws, "msg") == from_framed
        dm = alice.say("psst", to="wendy")
        assert dm["to"] == "wendy" and ws_wait_for(ws, "msg") == dm
    assert alice.wait_for("leave") == {"type": "leave", "nick": "wendy", "reason": "quit"}


def test_ws_fragmented_message_is_reassembled(server):
    alice = server.client("alice")
    with ws_connect(server) as ws:
        ws_hello(ws, "wendy")
        # websockets sends an iterable as one message in several frames (RFC 6455 5.4)
        ws.send(iter(['{"type":"msg",', '"text":"frag', "mented ✓", '","cid":"f-1"}']))
        ack = ws_wait_for(ws, lambda m: m.get("cid") == "f-1")
        assert ack["type"] == "msg" and ack["text"] == "fragmented ✓"
        assert alice.wait_for("msg") == ack


def test_ws_ping_is_answered_with_pong(server):
    with ws_connect(server) as ws:
        ws_hello(ws, "wendy")
        assert ws.ping(b"are you there").wait(IO_TIMEOUT)
        assert ws.ping().wait(IO_TIMEOUT)
        assert ws_say(ws, "after pings", "w-1")["type"] == "msg"   # still usable


def test_ws_close_handshake_normal(server):
    alice = server.client("alice")
    with ws_connect(server) as ws:
        ws_hello(ws, "wendy")
        ws.close(1000, "bye")
        assert received_close_code(ws) == 1000      # the server echoed our code (5.5.1)
        assert ws.protocol.close_rcvd_then_sent is False    # we sent first, it answered
    assert alice.wait_for("leave") == {"type": "leave", "nick": "wendy", "reason": "quit"}
    assert_chat_still_works(server, alice)


def test_ws_oversized_message_is_closed_with_1009(server):
    alice = server.client("alice")
    too_big = '{"type":"msg","cid":"big","text":"' + "x" * cs.WS_MAX_FRAME + '"}'
    # The frame is built by the library's own encoder (masked, one frame), but written
    # past its send path: the server refuses it from the header and closes while most of
    # it is still in flight, and websockets 17 has a race between a send that fails that
    # way and the Close frame its reader thread already holds.
    frame = Frame(Opcode.TEXT, too_big.encode()).serialize(mask=True)
    assert len(frame) > cs.WS_MAX_FRAME
    with ws_connect(server) as ws:
        ws_hello(ws, "wendy")
        try:
            ws.socket.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass                             # refused before it was all read: expected
        with pytest.raises(websockets.ConnectionClosed):
            while True:                      # our own join, then the server's Close
                ws.recv(timeout=IO_TIMEOUT)
        assert received_close_code(ws) == 1009
    assert alice.wait_for("leave") == {"type": "leave", "nick": "wendy", "reason": "error"}
    assert_chat_still_works(server, alice)


def test_ws_message_at_the_limit_is_accepted(server):
    """Just below the 1009 limit a message is read whole (here it is then too long a text)."""
    with ws_connect(server) as ws:
        ws_hello(ws, "wendy")
        head = '{"type":"msg","cid":"edge","text":"'
        text = "x" * (cs.WS_MAX_MESSAGE - len(head) - 2)
        ws.send(head + text + '"}')
        err = ws_wait_for(ws, "error")
        assert err["code"] == "text_too_long" and err["ref"] == "edge" and not err["fatal"]
        assert ws_say(ws, "still open", "w-2")["type"] == "msg"


def test_ws_fatal_chat_error_sends_error_then_close_1008(server):
    alice = server.client("alice")
    with ws_connect(server) as ws:
        err = ws_hello(ws, "wendy", proto=99)
        assert err["type"] == "error" and err["code"] == "proto_unsupported"
        assert err["fatal"] is True and err["message"]
        with pytest.raises(websockets.ConnectionClosed):
            ws.recv(timeout=IO_TIMEOUT)      # nothing but the Close frame follows
        assert received_close_code(ws) == 1008
    assert_chat_still_works(server, alice)


def test_ws_wrong_token_is_auth_failed_then_close_1008(make_server):
    srv = make_server("--rate-limit", "0")          # a token is required
    with ws_connect(srv) as ws:
        err = ws_hello(ws, "wendy", token="not-the-token")
        assert err["code"] == "auth_failed" and err["fatal"] is True
        with pytest.raises(websockets.ConnectionClosed):
            ws.recv(timeout=IO_TIMEOUT)
        assert received_close_code(ws) == 1008


@pytest.mark.parametrize("origin, allowed", [
    (None, True),                                  # not a browser: allowed
    ("http://127.0.0.1:{port}", True),             # the page this server served
    ("http://localhost:{port}", True),             # another of its names (the Host check's)
    ("http://evil.example", False),                # cross-site WebSocket hijacking
    ("http://127.0.0.1:1", False),                 # same host, another port = another origin
    ("null", False),                               # sandboxed iframe, file:// page
])
def test_ws_origin_must_match_host(server, origin, allowed):
    alice = server.client("alice")
    options = {} if origin is None else {"origin": origin.format(port=server.port)}
    if allowed:
        with ws_connect(server, **options) as ws:
            assert ws_hello(ws, "wendy")["type"] == "welcome"
    else:
        with pytest.raises(websockets.InvalidStatus) as info:
            ws_connect(server, **options)
        res = info.value.response
        assert res.status_code == 403
        assert json.loads(res.body)["error"] == "http_403"
    assert_chat_still_works(server, alice)


# == WebSocket protocol violations (hand-built frames) ====================================

def test_ws_unmasked_client_frame_is_closed_with_1002(server):
    alice = server.client("alice")
    ws = raw_ws_joined(server, "wendy")
    ws.send_frame(0x1, b'{"type":"msg","text":"x","cid":"u"}', masked=False)
    skipped = ws.expect_close(1002)
    assert all(json.loads(p).get("cid") != "u" for op, p in skipped if op == 0x1)
    assert alice.wait_for("leave")["nick"] == "wendy"
    assert_chat_still_works(server, alice)


def test_ws_invalid_utf8_text_is_closed_with_1007(server):
    alice = server.client("alice")
    ws = raw_ws_joined(server, "wendy")
    ws.send_frame(0x1, b'{"type":"msg","text":"\xc3\x28","cid":"bad"}')
    ws.expect_close(1007)
    assert_chat_still_works(server, alice)


def test_ws_utf8_character_split_across_fragments_is_accepted(server):
    ws = raw_ws_joined(server, "wendy")
    message = '{"type":"msg","text":"€uro","cid":"split"}'.encode()
    cut = message.index("€".encode()) + 1            # inside the 3-byte character
    ws.send_frame(0x1, message[:cut], fin=False)
    ws.send_frame(0x9, b"interleaved")                # control frames may come between (5.4)
    ws.send_frame(0x0, message[cut:], fin=True)
    opcode, fin, payload = ws.recv_frame()
    while opcode == 0x1:                              # our own join may come first
        opcode, fin, payload = ws.recv_frame()
    assert (opcode, payload) == (0xA, b"interleaved")  # the pong echoes the ping's data
    assert ws.recv_json(lambda m: m.get("cid") == "split")["text"] == "€uro"


def test_ws_oversized_frame_header_is_refused_before_the_payload(server):
    """The limit is checked on the declared length: 1009 without sending the megabyte."""
    alice = server.client("alice")
    ws = raw_ws_joined(server, "wendy")
    # FIN + text, MASK + 64-bit length, the masking key, and no payload at all
    ws.sock.sendall(b"\x81\xff" + struct.pack("!Q", cs.WS_MAX_FRAME + 1) + os.urandom(4))
    ws.expect_close(1009)
    assert_chat_still_works(server, alice)


def test_ws_binary_message_is_bad_request_and_connection_stays(server):
    alice = server.client("alice")
    ws = raw_ws_joined(server, "wendy")
    ws.send_frame(0x2, b"\x00\x01binary")
    err = ws.recv_json(lambda m: m["type"] == "error")
    assert err["code"] == "bad_request" and err["fatal"] is False and err["message"]
    ws.send_json({"type": "msg", "text": "still here", "cid": "after"})
    ack = ws.recv_json(lambda m: m.get("cid") == "after")
    assert ack["type"] == "msg" and alice.wait_for("msg") == ack
    assert_chat_still_works(server, alice)


@pytest.mark.parametrize("request_", [
    {"type": "download", "file": None, "offset": 0},
    {"type": "chunk", "upload": "u1", "offset": 0},
])
def test_ws_file_bytes_requests_are_bad_request_and_the_stream_stays_websocket(
        server, shared_file, request_):
    """File bytes travel over HTTP for a browser (PROTOCOL section 8): a WebSocket `download`
    or `chunk` is refused with bad_request, and no framed bytes enter the WebSocket stream
    (a framed file_chunk there would be an invalid frame and end the connection)."""
    ws = raw_ws_joined(server, "wendy")
    ask = dict(request_, file=shared_file.id) if "file" in request_ else request_
    ws.send_json(ask)
    ws.send_json({"type": "msg", "text": "still here", "cid": "after"})
    got = []
    while not got or got[-1].get("cid") != "after":
        opcode, fin, payload = ws.recv_frame()
        assert (opcode, fin) == (0x1, True), "not one text frame: %r" % payload[:80]
        got.append(json.loads(payload))
    errors = [m for m in got if m["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("bad_request", False)], got
    assert "HTTP" in errors[0]["message"]
    assert not [m for m in got if m["type"].startswith("download")], got
    ack = got[-1]
    assert ack["type"] == "msg"
    assert shared_file.bob.wait_for(lambda m: m.get("text") == "still here") == ack
    assert_chat_still_works(server, shared_file.alice)


def test_ws_frame_in_the_same_packet_as_the_handshake(server):
    """A client may send its first frame right behind the upgrade request (RFC 6455 4.1:
    it "MAY send" once it has sent the handshake); those bytes are WebSocket, not HTTP."""
    hello = json.dumps({"type": "hello", "nick": "eager", "proto": 1}).encode()
    ws = RawWs(server, first_bytes=client_frame(0x1, hello))
    assert ws.recv_json(lambda m: m["type"] in ("welcome", "error"))["nick"] == "eager"


def test_ws_bad_json_over_ws_keeps_connection(server):
    ws = raw_ws_joined(server, "wendy")
    ws.send_frame(0x1, b"{not json")
    assert ws.recv_json(lambda m: m["type"] == "error")["code"] == "bad_json"
    ws.send_json({"type": "ping"})
    assert ws.recv_json(lambda m: m["type"] == "pong") == {"type": "pong"}


# == HTTP bad input =======================================================================

def test_garbage_starting_with_a_letter_is_400_and_closed(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.send(b"HELLO THERE\r\n\r\n")
    assert_error_and_closed(conn, 400)
    assert_chat_still_works(server, alice)


def test_binary_garbage_after_a_letter_is_400_before_the_line_ends(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.send(b"G\x00\xff\xfe no newline ever")
    assert_error_and_closed(conn, 400)
    assert_chat_still_works(server, alice)


def test_huge_header_is_431(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("GET", "/", [("X-Big", "a" * (cs.HTTP_MAX_HEADER_BYTES + 1))])
    assert_error_and_closed(conn, 431)
    assert_chat_still_works(server, alice)


def test_too_many_headers_is_431(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("GET", "/", [("X-H%d" % i, "v") for i in range(cs.HTTP_MAX_HEADERS + 1)])
    assert_error_and_closed(conn, 431)
    assert_chat_still_works(server, alice)


def test_slowloris_head_is_cut_off_while_chat_goes_on(slow_server):
    alice, bob = slow_server.client("alice"), slow_server.client("bob")
    conn = RawHttp(slow_server.port)
    conn.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    trickle = b"X-Slow: " + b"a" * 1000
    started = time.monotonic()
    answer = b""
    for i, byte in enumerate(trickle):
        assert time.monotonic() - started < SLOWLORIS_PATIENCE, "still open while trickling"
        try:
            conn.send(bytes([byte]))
            conn.sock.settimeout(TRICKLE_EVERY)
            answer = conn.sock.recv(65536)
        except socket.timeout:
            assert alice.say("chatting %d" % i)["type"] == "msg"    # the loop is not stuck
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        break
    # RFC 9110 15.5.9: 408 "the server did not receive a complete request message within
    # the time that it was prepared to wait" — or a plain close
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    read_until_closed(conn.sock)
    assert_chat_still_works(slow_server, alice, bob)


def test_slowloris_of_empty_lines_between_requests_is_cut_off(slow_server):
    """Empty lines before a request line are skipped (RFC 9112 2.2), but they belong to the
    next request head: a client trickling CRLFs after a keep-alive request must not hold its
    connection forever."""
    alice = slow_server.client("alice")
    conn = RawHttp(slow_server.port)
    conn.request("GET", "/healthz")
    assert conn.read_response().status == 200
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < SLOWLORIS_PATIENCE:
        try:
            conn.send(b"\r\n")
            conn.sock.settimeout(TRICKLE_EVERY)
            data = conn.sock.recv(65536)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        assert data == b"" or data.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 400 ")), data
        closed = True
        break
    assert closed, "a client trickling CRLF kept its connection for %.0f s" % SLOWLORIS_PATIENCE
    assert_chat_still_works(slow_server, alice)


def test_silent_http_connection_is_closed_after_http_timeout(slow_server):
    alice = slow_server.client("alice")
    conn = RawHttp(slow_server.port)
    conn.request("GET", "/healthz")
    assert conn.read_response().status == 200
    assert conn.closed_by_server(timeout=SLOWLORIS_PATIENCE)      # idle keep-alive
    silent = socket.create_connection(("127.0.0.1", slow_server.port))   # never says a word
    silent.settimeout(SLOWLORIS_PATIENCE)
    assert silent.recv(100) == b""
    silent.close()
    assert_chat_still_works(slow_server, alice)


def test_unsatisfiable_range_is_416(server, shared_file):
    res = http_download(server, shared_file.id, shared_file.bob.welcome["session"],
                        headers=[("Range", "bytes=999999-")])
    assert res.status == 416
    assert res.headers["content-range"] == "bytes */%d" % len(shared_file.data)
    assert res.json()["error"] == "http_416"
    assert_chat_still_works(server, shared_file.alice, shared_file.bob)


def test_upload_over_the_size_limit_is_413_and_leaves_nothing(make_server):
    srv = make_server("--open", "--rate-limit", "0", "--max-file-size", "1000")
    alice, bob = srv.client("alice"), srv.client("bob")
    conn = RawHttp(srv.port)
    conn.request("POST", "/files?" + query(name="big.bin", cid="too-big"),
                 [("Content-Length", "2000"), ("Content-Type", "application/octet-stream")] +
                 auth(alice.welcome["session"]),
                 os.urandom(2000))
    res = assert_error_and_closed(conn, 413, "file_too_large")
    assert "1000" in res.json()["message"]
    assert dir_listing(srv, "uploads") == [] and dir_listing(srv, "files") == []
    assert [h for h in bob.drain(0.2) if h["type"] == "msg"] == []
    assert_chat_still_works(srv, alice, bob)


@pytest.mark.parametrize("session", [None, "", "not-a-session"])
def test_upload_without_a_valid_session_is_401(server, session):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("POST", "/files?" + query(name="a.txt", cid="c"),
                 [("Content-Length", "5")] + auth(session), b"hello")
    assert_error_and_closed(conn, 401, "auth_failed")
    assert dir_listing(server, "uploads") == [] and dir_listing(server, "files") == []
    assert_chat_still_works(server, alice)


def test_session_of_a_gone_user_is_401(server):
    watcher = server.client("watcher")
    gone = server.client("gone")
    session = gone.welcome["session"]
    gone.close()
    watcher.wait_for(lambda h: h["type"] == "leave" and h["nick"] == "gone")
    res = http_upload(server, session, b"late")
    assert res.status == 401 and res.json()["error"] == "auth_failed"


def test_post_without_content_length_is_411(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("POST", "/files?" + query(name="a.txt"), auth(alice.welcome["session"]))
    assert_error_and_closed(conn, 411)
    assert_chat_still_works(server, alice)


def test_chunked_upload_is_411(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("POST", "/files?" + query(name="a.txt"),
                 [("Transfer-Encoding", "chunked")] + auth(alice.welcome["session"]),
                 b"5\r\nhello\r\n0\r\n\r\n")
    assert_error_and_closed(conn, 411)
    assert dir_listing(server, "uploads") == []


def test_wrong_method_on_files_is_405(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("DELETE", "/files")
    res = assert_error_and_closed(conn, 405)
    assert "POST" in res.headers["allow"]
    assert_chat_still_works(server, alice)


def test_wrong_method_elsewhere_is_405(server):
    res = http(server, "POST", "/healthz", [("Content-Length", "0")])
    assert res.status == 405 and set(res.headers["allow"].replace(" ", "").split(",")) == \
        {"GET", "HEAD"}


def test_unknown_path_is_404(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("GET", "/no/such/thing")
    res = conn.read_response()
    assert res.status == 404 and res.json()["error"] == "not_found"
    assert_chat_still_works(server, alice)


def test_get_with_a_body_is_400(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("GET", "/", [("Content-Length", "5")], b"hello")
    assert_error_and_closed(conn, 400)
    assert_chat_still_works(server, alice)


def test_websocket_path_without_upgrade_is_426(server):
    conn = RawHttp(server.port)
    conn.request("GET", "/ws")
    res = assert_error_and_closed(conn, 426)
    assert res.headers["upgrade"].lower() == "websocket"


def test_get_page_has_security_headers(server):
    res = http(server, "GET", "/")
    assert res.status == 200
    assert res.headers["content-type"] == "text/html; charset=utf-8"
    assert res.body.lstrip().lower().startswith(b"<!doctype html")
    assert int(res.headers["content-length"]) == len(res.body)
    csp = res.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["referrer-policy"] == "no-referrer"


def test_healthz_reports_version_clients_and_uptime(server):
    alice = server.client("alice")
    with ws_connect(server) as ws:
        ws_hello(ws, "wendy")
        res = http(server, "GET", "/healthz")
        assert res.status == 200 and res.headers["cache-control"] == "no-store"
        health = res.json()
        assert health["version"] == cs.__version__
        assert health["clients"] == 2                    # joined users, both transports
        assert isinstance(health["uptime"], (int, float)) and health["uptime"] >= 0
    alice.close()


def test_keep_alive_serves_several_requests_on_one_connection(server):
    conn = RawHttp(server.port)
    conn.request("GET", "/healthz")
    first = conn.read_response()
    assert first.status == 200 and first.headers["connection"] == "keep-alive"
    conn.request("GET", "/")
    assert conn.read_response().status == 200
    # pipelined: both requests in one write, answered in order
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
              b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert conn.read_response().status == 200
    assert conn.read_response().status == 404
    assert conn.closed_by_server()                       # an error answer closes


def test_declined_upgrade_keeps_serving_http(server):
    """curl --http2 on plain HTTP asks to upgrade to h2c: answer in HTTP/1.1 and go on."""
    conn = RawHttp(server.port)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
              b"Connection: Upgrade, HTTP2-Settings\r\n"
              b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert conn.read_response().status == 200
    assert conn.read_response().status == 200        # the request after it is served too
    conn.request("GET", "/healthz")
    assert conn.read_response().status == 200


def test_connection_close_is_honoured(server):
    conn = RawHttp(server.port)
    conn.request("GET", "/healthz", [("Connection", "close")])
    res = conn.read_response()
    assert res.status == 200
    assert res.headers["connection"] == "close"          # RFC 9112 9.6
    assert conn.closed_by_server()


def test_head_gives_headers_without_body(server):
    conn = RawHttp(server.port)
    # pipelined: both in one write, so the server parses them together
    conn.send(request_bytes(server.port, "HEAD", "/") +
              request_bytes(server.port, "GET", "/healthz"))
    head = conn.read_response(head_only=True)
    assert head.status == 200 and head.headers["content-type"].startswith("text/html")
    assert int(head.headers["content-length"]) == len(http(server, "GET", "/").body)
    # the next bytes on the wire are the second response, not a body
    after = conn.read_response()
    assert after.status == 200 and after.json()["status"] == "ok"


# == Files over HTTP ======================================================================

def test_http_upload_is_announced_exactly_like_a_framed_one(server):
    alice, bob = server.client("alice"), server.client("bob")
    data = os.urandom(300 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    res = http_upload(server, alice.welcome["session"], data, name="photo.bin",
                      mime="application/x-test", cid="h-1", sha256=digest, text="caption")
    assert res.status == 201, res
    msg = res.json()
    assert bob.wait_for("msg") == msg                    # the 201 body IS the chat message
    assert alice.wait_for("msg") == msg                  # the uploader's live session too
    assert msg["from"] == "alice" and msg["cid"] == "h-1" and msg["text"] == "caption"
    assert msg["file"] == {"id": msg["file"]["id"], "name": "photo.bin", "size": len(data),
                           "sha256": digest, "mime": "application/x-test"}
    framed = framed_upload(alice, data, name="photo.bin", mime="application/x-test",
                           text="caption")
    assert set(framed) == set(msg) and set(framed["file"]) == set(msg["file"])
    assert {k: v for k, v in framed["file"].items() if k != "id"} == \
        {k: v for k, v in msg["file"].items() if k != "id"}
    bob.send({"type": "history"})
    assert msg in bob.wait_for("history")["messages"]


def test_http_upload_with_connection_close_says_close_and_closes(server):
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("POST", "/files?" + query(name="a.txt"),
                 [("Content-Length", "5"), ("Connection", "close")] +
                 auth(alice.welcome["session"]), b"hello")
    res = conn.read_response()
    assert res.status == 201 and res.json()["file"]["size"] == 5
    assert res.headers["connection"] == "close"          # RFC 9112 9.6
    assert conn.closed_by_server()


def test_expect_100_continue_upload(server):
    """RFC 9110 10.1.1: the client waits for 100 (Continue) before sending the body; a
    refused upload gets its final status instead, and the body is never sent."""
    alice = server.client("alice")
    conn = RawHttp(server.port)
    conn.request("POST", "/files?" + query(name="c.txt"),
                 [("Content-Length", "5"), ("Expect", "100-continue")] +
                 auth(alice.welcome["session"]))
    interim = conn.read_response()
    assert interim.status == 100 and interim.body == b""
    conn.send(b"hello")
    done = conn.read_response()
    assert done.status == 201 and done.json()["file"]["size"] == 5
    refused = RawHttp(server.port)
    refused.request("POST", "/files?" + query(name="c.txt"),
                    [("Content-Length", "5"), ("Expect", "100-continue")] + auth("wrong"))
    assert_error_and_closed(refused, 401, "auth_failed")


def test_http_upload_retried_with_the_same_cid_is_stored_once(server):
    """A browser that lost the 201 posts again with the same cid: like a resent `msg`, it
    gets the original message back, and nothing is stored or announced twice."""
    alice, bob = server.client("alice"), server.client("bob")
    data = os.urandom(4096)
    first = http_upload(server, alice.welcome["session"], data, name="r.bin", cid="retry-1")
    assert first.status == 201
    assert bob.wait_for("msg") == first.json()
    again = http_upload(server, alice.welcome["session"], data, name="r.bin", cid="retry-1")
    assert again.status == 201 and again.json() == first.json()
    assert [h for h in bob.drain(0.2) if h["type"] == "msg"] == []
    assert dir_listing(server, "files") == [first.json()["file"]["id"]]
    assert dir_listing(server, "uploads") == []


@pytest.mark.parametrize("fields, code", [({"name": None}, "bad_request"),
                                          ({"name": "x" * 801}, "bad_request"),
                                          ({"cid": "c" * 65}, "bad_request"),
                                          ({"sha256": "abc"}, "bad_request")])
def test_http_upload_bad_fields_are_400(server, fields, code):
    alice = server.client("alice")
    params = {"session": alice.welcome["session"], "name": "ok.txt", "cid": "c1", **fields}
    conn = RawHttp(server.port)
    conn.request("POST", "/files?" + query(**params), [("Content-Length", "2")], b"hi")
    assert_error_and_closed(conn, 400, code)
    assert dir_listing(server, "uploads") == [] and dir_listing(server, "files") == []
    assert_chat_still_works(server, alice)


def test_http_upload_from_a_websocket_session(server):
    bob = server.client("bob")
    with ws_connect(server) as ws:
        session = ws_hello(ws, "wendy")["session"]
        res = http_upload(server, session, b"tiny", name="t.txt", mime="text/plain", cid="w-f")
        assert res.status == 201
        msg = res.json()
        assert ws_wait_for(ws, lambda m: m.get("cid") == "w-f") == msg
        assert bob.wait_for("msg") == msg and msg["from"] == "wendy"


def test_http_upload_with_wrong_sha256_is_422_and_leaves_nothing(server):
    alice, bob = server.client("alice"), server.client("bob")
    res = http_upload(server, alice.welcome["session"], b"some bytes", cid="bad-sum",
                      sha256="0" * 64)
    assert res.status == 422 and res.json()["error"] == "checksum_mismatch"
    assert dir_listing(server, "uploads") == [] and dir_listing(server, "files") == []
    assert_chat_still_works(server, alice, bob)


def test_download_matches_sha256_and_has_file_headers(server, shared_file):
    res = http_download(server, shared_file.id, shared_file.bob.welcome["session"],
                        name="notes.txt")
    assert res.status == 200 and res.body == shared_file.data
    assert hashlib.sha256(res.body).hexdigest() == shared_file.msg["file"]["sha256"]
    assert int(res.headers["content-length"]) == len(shared_file.data)
    assert res.headers["accept-ranges"] == "bytes"
    assert res.headers["content-type"] == "application/octet-stream"
    assert res.headers["content-disposition"].startswith('attachment; filename="notes.txt"')
    assert res.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in res.headers["content-security-policy"]


def test_download_range_is_206_with_content_range(server, shared_file):
    session = shared_file.bob.welcome["session"]
    size = len(shared_file.data)
    for spec, start, end in (("bytes=10-19", 10, 19), ("bytes=1500-", 1500, size - 1),
                             ("bytes=-7", size - 7, size - 1), ("bytes=0-999999", 0, size - 1)):
        res = http_download(server, shared_file.id, session, headers=[("Range", spec)])
        assert res.status == 206, (spec, res)
        assert res.headers["content-range"] == "bytes %d-%d/%d" % (start, end, size)
        assert res.body == shared_file.data[start:end + 1]


def test_download_then_next_request_on_the_same_connection(server, shared_file):
    conn = RawHttp(server.port)
    target = "/files/%s/n" % shared_file.id
    # pipelined behind the file, in the same write: RFC 9112 9.3.2 "A server ... MUST send
    # the corresponding responses in the same order that the requests were received."
    conn.send(request_bytes(server.port, "GET", target, auth(shared_file.bob.welcome["session"])) +
              request_bytes(server.port, "GET", "/healthz"))
    assert conn.read_response().body == shared_file.data
    assert conn.read_response().json()["status"] == "ok"
    conn.request("HEAD", target, auth(shared_file.bob.welcome["session"]))
    head = conn.read_response(head_only=True)
    assert head.status == 200 and int(head.headers["content-length"]) == len(shared_file.data)
    conn.request("GET", "/healthz")
    assert conn.read_response().status == 200


def test_hostile_html_upload_is_served_as_a_sanitised_attachment(server):
    alice = server.client("alice")
    page = b"<script>alert(document.cookie)</script>"
    res = http_upload(server, alice.welcome["session"], page, name='../../evil".html',
                      mime="text/html")
    assert res.status == 201
    meta = res.json()["file"]
    # separators and quotes become "_", leading dots go (PROTOCOL.md "File names")
    assert meta["name"] == "_.._evil_.html"
    assert meta["mime"] == "text/html"                   # metadata kept, never used to render
    for extra in ({}, {"inline": "1"}):
        got = http_download(server, meta["id"], alice.welcome["session"], **extra)
        assert got.status == 200 and got.body == page
        assert got.headers["content-type"] == "application/octet-stream"
        disposition = got.headers["content-disposition"]
        assert disposition.startswith("attachment;")
        assert 'filename="_.._evil_.html"' in disposition
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in got.headers["content-security-policy"]


@pytest.mark.parametrize("mime, inline_ok", [("image/png", True), ("image/svg+xml", False),
                                             ("text/html", False)])
def test_inline_only_for_raster_images(server, mime, inline_ok):
    alice = server.client("alice")
    data = PNG_SIGNATURE + b"\x00" * 32 if mime == "image/png" else b"<svg onload=alert(1)>"
    meta = http_upload(server, alice.welcome["session"], data, name="pic", mime=mime)
    meta = meta.json()["file"]
    got = http_download(server, meta["id"], alice.welcome["session"], inline="1")
    assert got.status == 200 and got.body == data
    if inline_ok:
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-disposition"].startswith("inline;")
    else:
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment;")
    plain = http_download(server, meta["id"], alice.welcome["session"])
    assert plain.headers["content-type"] == "application/octet-stream"


def test_direct_share_is_forbidden_to_a_third_user(server):
    alice, bob, carol = server.client("alice"), server.client("bob"), server.client("carol")
    res = http_upload(server, alice.welcome["session"], b"for bob only", name="dm.txt",
                      to="bob", cid="dm-f")
    assert res.status == 201
    msg = res.json()
    assert msg["to"] == "bob" and bob.wait_for("msg") == msg
    file_id = msg["file"]["id"]
    refused = http_download(server, file_id, carol.welcome["session"])
    assert refused.status == 403 and refused.json()["error"] == "forbidden"
    assert refused.body.find(b"for bob only") == -1
    for reader in (alice, bob):
        assert http_download(server, file_id, reader.welcome["session"]).body == b"for bob only"
    assert [h for h in carol.drain(0.2) if h["type"] == "msg"] == []
    assert_chat_still_works(server, alice, bob, carol)


def test_direct_share_to_someone_offline_is_404_unknown_user(server):
    alice = server.client("alice")
    res = http_upload(server, alice.welcome["session"], b"x", to="nobody")
    assert res.status == 404 and res.json()["error"] == "unknown_user"
    assert dir_listing(server, "uploads") == []


def test_unknown_file_is_404(server):
    alice = server.client("alice")
    res = http_download(server, "f" + "0" * 24, alice.welcome["session"])
    assert res.status == 404 and res.json()["error"] == "unknown_file"
    res = http_download(server, "..%2F..%2Fchat.sqlite3", alice.welcome["session"])
    assert res.status == 404 and res.json()["error"] == "unknown_file"
    assert_chat_still_works(server, alice)


def test_download_without_session_is_401(server, shared_file):
    res = http_download(server, shared_file.id, None)
    assert res.status == 401 and res.json()["error"] == "auth_failed"
    assert shared_file.data not in res.body


def test_uploads_cut_mid_body_leave_nothing_and_free_their_slots(server):
    alice, bob = server.client("alice"), server.client("bob")
    session = alice.welcome["session"]
    cut = []
    for i in range(cs.DEFAULT_MAX_UPLOADS):              # every upload slot of alice
        conn = RawHttp(server.port)
        conn.request("POST", "/files?" + query(name="cut.bin", cid="cut%d" % i),
                     [("Content-Length", "100000")] + auth(session), os.urandom(50000))
        cut.append(conn)
    deadline = time.monotonic() + IO_TIMEOUT
    while len(dir_listing(server, "uploads")) < len(cut):    # the partial files exist...
        assert time.monotonic() < deadline, "the uploads never started"
        time.sleep(0.02)
    one_more = http_upload(server, session, b"x", cid="fifth")
    assert one_more.status == 429 and one_more.json()["error"] == "too_many_uploads"
    for conn in cut:
        conn.close()                                      # ...and the browser goes away
    while dir_listing(server, "uploads"):
        assert time.monotonic() < deadline, "partial uploads left behind: %s" % \
            dir_listing(server, "uploads")
        time.sleep(0.02)
    assert dir_listing(server, "files") == []
    assert [h for h in bob.drain(0.2) if h["type"] == "msg"] == []
    # the slots are free again at once (a browser cannot resume an HTTP upload)
    assert http_upload(server, session, b"ok", cid="after-cut").status == 201
    assert_chat_still_works(server, alice, bob)


# == Pairing routes =======================================================================

def test_pairing_routes_are_served_to_loopback(make_server):
    srv = make_server("--rate-limit", "0")               # with a pairing token
    page = http(srv, "GET", "/pair")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<svg" in page.body and b"#k=" in page.body
    assert page.headers["cache-control"] == "no-store"
    svg = http(srv, "GET", "/qr.svg")
    assert svg.status == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.body
    png = http(srv, "GET", "/qr.png")
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    assert png.body.startswith(PNG_SIGNATURE)
    for res in (page, svg, png):
        assert res.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["rebind.example:{port}", "192.168.1.10:{port}"])
def test_pairing_page_refuses_foreign_host_names(make_server, host):
    """DNS rebinding: a web page from rebind.example whose name now resolves to 127.0.0.1
    reaches us from loopback, with its own name in Host, and could read the token from
    the page (same origin for the browser). The pairing routes are for the PC's own
    screen, opened as http://127.0.0.1:<port>/pair: other Host names are refused."""
    srv = make_server("--rate-limit", "0")
    conn = RawHttp(srv.port)
    conn.send(("GET /pair HTTP/1.1\r\nHost: %s\r\n\r\n" % host.format(port=srv.port))
              .encode())
    res = conn.read_response()
    assert res.status in (403, 421), res
    assert b"#k=" not in res.body
    for name in ("127.0.0.1:%d" % srv.port, "localhost:%d" % srv.port, "[::1]:%d" % srv.port):
        ok = RawHttp(srv.port)
        ok.send(("GET /qr.svg HTTP/1.1\r\nHost: %s\r\n\r\n" % name).encode())
        assert ok.read_response().status == 200, name


class FakeSite:
    """Just what HttpConnection.get_pairing asks the server for: the pairing URL."""

    def pairing_urls(self):
        return ["http://192.168.1.10:5555/#k=secret-token"]


class FakeConnection:
    """Just what get_pairing touches on its connection: the peer and the output queue."""

    def __init__(self, peer):
        self.peer = peer
        self.sent = []
        self.state = cs.OPEN

    def push(self, data):
        self.sent.append(data)

    def close_when_done(self, reason, hold=0.0):
        self.state = cs.CLOSING


def pairing_request(path, host):
    return cs.HttpRequest("GET", path, "HTTP/1.1", {"host": host})


@pytest.mark.parametrize("peer", [("192.168.1.50", 40000), ("::ffff:192.168.1.50", 40000, 0, 0),
                                  ("10.0.0.7", 1)])
@pytest.mark.parametrize("path", ["/pair", "/qr.svg", "/qr.png"])
@pytest.mark.parametrize("host", ["192.168.1.10:5555", "127.0.0.1:5555"])   # Host is the peer's
def test_pairing_routes_refused_to_lan_peers(peer, path, host):
    fake = FakeConnection(peer)
    http_conn = cs.HttpConnection(fake, None, FakeSite())
    with pytest.raises(cs.HttpError) as info:
        http_conn.get_pairing(pairing_request(path, host))
    assert info.value.status == 403 and info.value.code == "forbidden"
    assert fake.sent == []                               # the token was not sent anywhere


@pytest.mark.parametrize("peer", [("127.0.0.1", 40000), ("::1", 40000, 0, 0)])
def test_pairing_fake_answers_loopback(peer):
    """The same fake on a loopback peer gets the page: the 403 above is the peer check."""
    fake = FakeConnection(peer)
    http_conn = cs.HttpConnection(fake, None, FakeSite())
    http_conn.get_pairing(pairing_request("/qr.png", "127.0.0.1:5555"))
    assert len(fake.sent) == 1 and fake.sent[0].startswith(b"HTTP/1.1 200 ")
    assert PNG_SIGNATURE in fake.sent[0]
