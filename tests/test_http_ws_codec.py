"""Sans-I/O HTTP/1.1 parser and RFC 6455 codec: byte literals, fuzzing, and the real
`websockets` library (its own sans-I/O client protocol) as a conformance peer."""

import base64
import json
import os
import struct

import pytest
import hypothesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import chatserver as cs  # noqa: E402
from fuzzing import Reach, mutated, split

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- helpers ------------------------------------------------------------------------------

def feed_all(parser, *pieces):
    events = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events


def merged(events):
    """Events with consecutive BodyChunks merged, as comparable tuples."""
    out = []
    for event in events:
        if isinstance(event, cs.BodyChunk):
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + event.data)
            else:
                out.append(("body", event.data))
        elif isinstance(event, cs.RequestHead):
            r = event.request
            out.append(("head", r.method, r.target, r.path, r.query, r.version, r.headers,
                        r.content_length, r.chunked, r.keep_alive, r.upgrade))
        else:
            assert isinstance(event, cs.RequestEnd)
            out.append(("end",))
    return out


def http_error(data, **limits):
    parser = cs.HttpParser(**limits)
    with pytest.raises(cs.HttpError) as info:
        parser.feed(data)
    return info.value


def mask_frame(opcode, payload=b"", fin=True, rsv=0, mask=b"\x37\xfa\x21\x3d", masked=True,
               length=None):
    """A client frame as a browser would send it (masked), or broken on purpose."""
    length = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def ws_error(*frames, **limits):
    ws = cs.WsConnection(**limits)
    with pytest.raises(cs.WsProtocolError) as info:
        for frame in frames:
            ws.feed(frame)
    return info.value


def parse_server_frame(data):
    """Decode one unmasked server frame -> (fin, opcode, payload, rest)."""
    first, second = data[0], data[1]
    assert not second & 0x80, "server frames must not be masked"
    length, offset = second & 0x7F, 2
    if length == 126:
        length, offset = struct.unpack("!H", data[2:4])[0], 4
    elif length == 127:
        length, offset = struct.unpack("!Q", data[2:10])[0], 10
    return bool(first & 0x80), first & 0x0F, data[offset:offset + length], data[offset + length:]


GET = b"GET /index.html?a=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
POST = (b"POST /files?name=a%20b.txt&cid=c1 HTTP/1.1\r\nHost: example.com\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world")
CHUNKED = (b"POST /files HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:5555\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


# -- HTTP: parsing --------------------------------------------------------------------------

def test_simple_get_fields():
    events = cs.HttpParser().feed(
        b"GET /files/f1/a%20b%C3%A9.txt?session=S&x=1&x=2&empty= HTTP/1.1\r\n"
        b"Host: 192.168.1.5:5555\r\nUser-Agent: test\r\nAccept: a\r\nACCEPT: b\r\n"
        b"X-Spaces:   padded value \t\r\n\r\n")
    assert [type(e) for e in events] == [cs.RequestHead, cs.RequestEnd]
    request = events[0].request
    assert request.method == "GET"
    assert request.target == "/files/f1/a%20b%C3%A9.txt?session=S&x=1&x=2&empty="
    assert request.raw_path == "/files/f1/a%20b%C3%A9.txt"
    assert request.path == "/files/f1/a b\u00e9.txt"
    assert request.query == {"session": "S", "x": "1", "empty": ""}
    assert request.version == "HTTP/1.1"
    assert request.headers["accept"] == "a, b"
    assert request.header("X-Spaces") == "padded value"
    assert request.header("missing", "dflt") == "dflt"
    assert request.content_length is None and request.chunked is False
    assert request.keep_alive is True and request.upgrade is None
    assert request.expect_continue is False


@pytest.mark.parametrize("version, connection, keep_alive", [
    ("1.1", None, True),
    ("1.1", "close", False),
    ("1.1", "Keep-Alive, Close", False),
    ("1.1", "keep-alive", True),
    ("1.0", None, False),
    ("1.0", "keep-alive", True),
    ("1.0", "Keep-Alive", True),
    ("1.0", "close", False),
])
def test_keep_alive_rules(version, connection, keep_alive):
    raw = "GET / HTTP/%s\r\nHost: h\r\n" % version
    if connection:
        raw += "Connection: %s\r\n" % connection
    request = cs.HttpParser().feed((raw + "\r\n").encode())[0].request
    assert request.keep_alive is keep_alive


def test_higher_minor_version_is_treated_as_1_1_and_http10_needs_no_host():
    assert cs.HttpParser().feed(b"GET / HTTP/1.7\r\nHost: h\r\n\r\n")[0].request.version == "HTTP/1.1"
    request = cs.HttpParser().feed(b"GET / HTTP/1.0\r\n\r\n")[0].request
    assert request.version == "HTTP/1.0" and request.headers == {}


def test_leading_empty_lines_and_bare_lf_are_accepted():
    events = cs.HttpParser().feed(b"\r\n\n\r\nGET / HTTP/1.1\nHost: h\n\n")
    assert events[0].request.headers == {"host": "h"}
    assert isinstance(events[1], cs.RequestEnd)


def test_absolute_form_and_asterisk_targets():
    request = cs.HttpParser().feed(b"GET http://h:1/x%2Fy?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")[0].request
    assert (request.raw_path, request.path, request.query) == ("/x%2Fy", "/x/y", {"q": "1"})
    request = cs.HttpParser().feed(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")[0].request
    assert request.path == "*"


def test_expect_100_continue_is_reported():
    request = cs.HttpParser().feed(b"POST /files HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                                   b"Content-Length: 1\r\n\r\n")[0].request
    assert request.expect_continue is True
    assert cs.HTTP_100_CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_identical_content_length_list_is_accepted():
    events = cs.HttpParser().feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\nok")
    assert events[0].request.content_length == 2
    assert merged(events)[1:] == [("body", b"ok"), ("end",)]


def test_pipelined_requests_split_at_every_byte_boundary():
    stream = GET + POST + CHUNKED + GET
    expected = merged(cs.HttpParser().feed(stream))
    assert [e[0] for e in expected] == ["head", "end", "head", "body", "end",
                                        "head", "body", "end", "head", "end"]
    assert expected[3] == ("body", b"hello world")
    assert expected[6] == ("body", b"hello world")
    for cut in range(len(stream) + 1):
        parser = cs.HttpParser()
        assert merged(feed_all(parser, stream[:cut], stream[cut:])) == expected, cut
        assert parser.buffered == 0
    parser = cs.HttpParser()
    assert merged(feed_all(parser, *[stream[i:i + 1] for i in range(len(stream))])) == expected


def test_chunked_body_with_lf_only_lines_and_trailers():
    raw = (b"POST /files HTTP/1.1\nHost: h\nTransfer-Encoding: Chunked\n\n"
           b"A\nabcdefghij\n1 ; a=b\nk\n0\nT1: x\nT2: y\n\n")
    events = cs.HttpParser().feed(raw)
    assert events[0].request.chunked is True and events[0].request.content_length is None
    assert merged(events)[1:] == [("body", b"abcdefghijk"), ("end",)]


def test_large_body_is_streamed_not_buffered():
    body = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    head = b"POST /files HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    parser = cs.HttpParser()
    events = parser.feed(head + body[:1000])
    assert events[0].request.content_length == len(body)
    received = [events[1].data]
    offset, piece = 1000, 65536 + 7
    while offset < len(body):
        chunk = body[offset:offset + piece]
        offset += len(chunk)
        new = parser.feed(chunk)
        assert parser.buffered == 0
        assert all(len(e.data) <= len(chunk) for e in new if isinstance(e, cs.BodyChunk))
        received.extend(e.data for e in new if isinstance(e, cs.BodyChunk))
    assert isinstance(new[-1], cs.RequestEnd)
    assert b"".join(received) == body


def test_large_chunked_body_is_streamed_not_buffered():
    parser = cs.HttpParser()
    parser.feed(b"POST /files HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"100000\r\n")
    total = 0
    for _ in range(16):
        events = parser.feed(b"x" * 65536)
        assert parser.buffered == 0
        total += sum(len(e.data) for e in events)
    assert total == 0x100000
    assert isinstance(parser.feed(b"\r\n0\r\n\r\n")[-1], cs.RequestEnd)


def test_connection_close_drops_everything_after_the_request():
    parser = cs.HttpParser()
    events = parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET)
    assert [type(e) for e in events] == [cs.RequestHead, cs.RequestEnd]
    assert parser.feed(b"garbage that would be a 400") == []
    assert parser.buffered == 0


def test_upgrade_request_pauses_and_hands_over_leftover_bytes():
    frame = mask_frame(cs.WS_OP_TEXT, b"hi")
    parser = cs.HttpParser()
    events = parser.feed(UPGRADE + frame[:3])
    assert [type(e) for e in events] == [cs.RequestHead, cs.RequestEnd]
    assert events[0].request.upgrade == "websocket"
    assert parser.paused
    assert parser.feed(frame[3:]) == []          # not parsed as HTTP
    assert parser.take_buffer() == frame
    assert parser.take_buffer() == b""


def test_declined_upgrade_can_resume_http():
    parser = cs.HttpParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\n\r\n" + GET)
    assert parser.paused
    assert merged(parser.resume()) == merged(cs.HttpParser().feed(GET))
    assert not parser.paused


def test_upgrade_is_ignored_in_http10_and_without_connection_option():
    for raw in (b"GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"):
        parser = cs.HttpParser()
        assert parser.feed(raw)[0].request.upgrade is None
        assert not parser.paused


# -- HTTP: errors ---------------------------------------------------------------------------

HOST = b"Host: h\r\n"

@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTX/1.1\r\n\r\n", 400),
    (b"GET / http/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET nothing HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET * HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /a#frag HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /\x01", 400),                      # garbage seen before the line ends
    (b"GET /%ff HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /a%00b HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /?" + b"&".join(b"k%d=v" % i for i in range(101)) + b" HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                           # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"Bad Name: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"Name : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b": x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"NoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + HOST + b"X: a\rb\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: +5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1, 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1_0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"9" * 19 + b"\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n5 x\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabXY", 400),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 16 + b"\r\n", 413),
    (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n1;" + b"e" * 2000, 400),
])
def test_bad_requests_raise_exact_status(raw, status):
    err = http_error(raw)
    assert err.status == status
    assert err.code == "http_%d" % status
    assert isinstance(err, cs.ChatError) and err.reason


def test_request_line_too_long_is_414_with_and_without_line_end():
    long_target = b"/" + b"a" * cs.HTTP_MAX_REQUEST_LINE
    assert http_error(b"GET " + long_target + b" HTTP/1.1\r\n").status == 414
    assert http_error(b"GET " + long_target).status == 414
    ok = b"GET /" + b"a" * (cs.HTTP_MAX_REQUEST_LINE - 20) + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert len(cs.HttpParser().feed(ok)) == 2
    assert http_error(b"GET /aaaa HTTP/1.1\r\n", max_request_line=10).status == 414


def test_header_section_too_large_is_431():
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(90))
    assert http_error(b"GET / HTTP/1.1\r\n" + HOST + lines + b"\r\n").status == 431
    # one endless header line, its end never arrives
    assert http_error(b"GET / HTTP/1.1\r\nX: " + b"v" * (cs.HTTP_MAX_HEADER_BYTES + 1)).status == 431
    assert http_error(b"GET / HTTP/1.1\r\n" + HOST + b"X: 123456\r\n\r\n",
                      max_header_bytes=16).status == 431


def test_too_many_headers_is_431():
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(cs.HTTP_MAX_HEADERS))
    assert http_error(b"GET / HTTP/1.1\r\n" + HOST + lines + b"\r\n").status == 431
    ok = b"GET / HTTP/1.1\r\n" + HOST + lines[:-len(b"X-99: v\r\n")] + b"\r\n"
    assert len(cs.HttpParser().feed(ok)[0].request.headers) == cs.HTTP_MAX_HEADERS


def test_chunked_trailers_obey_header_limits():
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    many = b"".join(b"T%d: v\r\n" % i for i in range(cs.HTTP_MAX_HEADERS + 1))
    assert http_error(head + many + b"\r\n").status == 431
    big = b"".join(b"T%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
    assert http_error(head + big + b"\r\n").status == 431


def test_errors_are_sticky_and_keep_earlier_pipelined_events():
    parser = cs.HttpParser()
    with pytest.raises(cs.HttpError) as info:
        parser.feed(GET + b"BROKEN\r\n\r\n")
    assert info.value.status == 400
    assert merged(info.value.events) == merged(cs.HttpParser().feed(GET))
    with pytest.raises(cs.HttpError) as again:
        parser.feed(GET)
    assert again.value.status == 400 and again.value.events == []


# -- HTTP: responses ------------------------------------------------------------------------

def split_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    return status_line, dict(line.split(": ", 1) for line in lines), body


def test_http_response_head():
    status_line, headers, body = split_response(
        cs.http_response_head(206, [("Content-Type", "text/plain"), ("Accept-Ranges", "bytes")], 10))
    assert status_line == "HTTP/1.1 206 Partial Content"
    assert headers["Content-Type"] == "text/plain" and headers["Content-Length"] == "10"
    assert headers["Date"].endswith(" GMT") and body == b""
    status_line, headers, _ = split_response(cs.http_response_head(599, [("Date", "x")]))
    assert status_line == "HTTP/1.1 599 Unknown"
    assert headers == {"Date": "x"}            # no Content-Length when None, Date kept


@pytest.mark.parametrize("name, value", [
    ("X-Evil", "a\r\nSet-Cookie: x=1"), ("X-Evil", "a\nb"), ("X-Evil", "a\x00"),
    ("Bad Name", "v"), ("Bad:Name", "v"), ("", "v"), ("Nämé", "v"),
])
def test_http_response_head_refuses_header_injection(name, value):
    with pytest.raises(ValueError):
        cs.http_response_head(200, [(name, value)])


def test_http_simple_and_error_responses():
    status_line, headers, body = split_response(
        cs.http_simple_response(200, b"<p>hi</p>", "text/html; charset=utf-8", [("X-A", "1")]))
    assert status_line == "HTTP/1.1 200 OK"
    assert headers["Content-Length"] == "9" and headers["X-A"] == "1"
    assert headers["Connection"] == "keep-alive" and body == b"<p>hi</p>"
    _, headers, _ = split_response(cs.http_simple_response(200, b"", "text/plain", keep_alive=False))
    assert headers["Connection"] == "close"

    err = cs.HttpError(405, "Use GET.", [("Allow", "GET")])
    status_line, headers, body = split_response(cs.http_error_response(err))
    assert status_line == "HTTP/1.1 405 Method Not Allowed"
    assert headers["Content-Type"] == "application/json" and headers["Allow"] == "GET"
    assert headers["Connection"] == "close" and int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == {"error": "http_405", "message": "Use GET."}
    custom = cs.HttpError(404, "No such file.", code="unknown_file")
    _, headers, body = split_response(cs.http_error_response(custom, keep_alive=True))
    assert json.loads(body)["error"] == "unknown_file" and headers["Connection"] == "keep-alive"


# -- HTTP: Range ----------------------------------------------------------------------------

@pytest.mark.parametrize("value, size, expected", [
    (None, 100, None),
    ("bytes=0-9", 100, (0, 9)),
    ("bytes=90-", 100, (90, 99)),
    ("bytes=-10", 100, (90, 99)),
    ("bytes=-200", 100, (0, 99)),
    ("bytes=50-1000", 100, (50, 99)),
    ("bytes=99-99", 100, (99, 99)),
    ("bytes=0-0", 1, (0, 0)),
    ("BYTES = 1-2", 100, (1, 2)),
    ("bytes= 1 - 2 ", 100, (1, 2)),
    ("bytes=1-" + "9" * 30, 100, (1, 99)),
    ("bytes=-" + "9" * 30, 100, (0, 99)),
    ("items=0-1", 100, None),
    ("bytes=5-1", 100, None),
    ("bytes=0-1,5-6", 100, None),
    ("bytes=abc", 100, None),
    ("bytes=-", 100, None),
    ("bytes=1", 100, None),
    ("bytes=a-b", 100, None),
    ("bytes=\uff11-2", 100, None),      # full-width digit: str.isdigit() would accept it
    ("bytes=0-9", 0, None),
    ("", 100, None),
])
def test_parse_range_header(value, size, expected):
    assert cs.parse_range_header(value, size) == expected


@pytest.mark.parametrize("value", ["bytes=100-", "bytes=100-200", "bytes=-0",
                                   "bytes=" + "9" * 30 + "-"])
def test_unsatisfiable_range_is_416_with_content_range(value):
    with pytest.raises(cs.HttpError) as info:
        cs.parse_range_header(value, 100)
    assert info.value.status == 416
    assert ("Content-Range", "bytes */100") in info.value.headers


# -- WebSocket handshake --------------------------------------------------------------------

def upgrade_request(extra=b"", host=b"127.0.0.1:5555", key=b"dGhlIHNhbXBsZSBub25jZQ==",
                    method=b"GET", version=b"HTTP/1.1", upgrade=b"websocket",
                    connection=b"Upgrade", ws_version=b"13"):
    lines = [method + b" /ws " + version, b"Host: " + host]
    if upgrade is not None:
        lines.append(b"Upgrade: " + upgrade)
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    if ws_version is not None:
        lines.append(b"Sec-WebSocket-Version: " + ws_version)
    raw = b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"
    return cs.HttpParser().feed(raw)[0].request


def test_accept_key_rfc6455_example():
    assert cs.ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_response_101():
    status_line, headers, rest = split_response(cs.ws_handshake_response(
        upgrade_request(connection=b"keep-alive, Upgrade", upgrade=b"WebSocket")))
    assert status_line == "HTTP/1.1 101 Switching Protocols"
    assert headers["Upgrade"] == "websocket" and headers["Connection"] == "Upgrade"
    assert headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert "Sec-WebSocket-Protocol" not in headers and "Sec-WebSocket-Extensions" not in headers
    assert rest == b""


@pytest.mark.parametrize("kwargs, status, header", [
    (dict(method=b"POST"), 405, ("Allow", "GET")),
    (dict(version=b"HTTP/1.0"), 400, None),
    (dict(upgrade=None), 426, ("Upgrade", "websocket")),
    (dict(upgrade=b"h2c"), 426, ("Upgrade", "websocket")),
    (dict(connection=None), 426, ("Upgrade", "websocket")),
    (dict(connection=b"keep-alive"), 426, ("Upgrade", "websocket")),
    (dict(key=None), 400, None),
    (dict(key=b"not base64!!"), 400, None),
    (dict(key=base64.b64encode(b"x" * 15)), 400, None),
    (dict(key=base64.b64encode(b"x" * 17)), 400, None),
    (dict(extra=b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"), 400, None),  # two keys
    (dict(ws_version=b"8"), 426, ("Sec-WebSocket-Version", "13")),
    (dict(ws_version=None), 426, ("Sec-WebSocket-Version", "13")),
    (dict(extra=b"Origin: http://evil.example:5555\r\n"), 403, None),
])
def test_handshake_refusals(kwargs, status, header):
    with pytest.raises(cs.HttpError) as info:
        cs.ws_handshake_response(upgrade_request(**kwargs))
    assert info.value.status == status
    if header:
        assert header in info.value.headers


@pytest.mark.parametrize("host, origin, allowed_host, ok", [
    ("192.168.1.5:5555", "http://192.168.1.5:5555", None, True),
    ("Example.COM:5555", "http://example.com:5555", None, True),
    ("example.com", "http://example.com", None, True),
    ("example.com", "https://example.com", None, True),      # TLS proxy in front
    ("example.com:80", "http://example.com", None, True),
    ("example.com", "http://example.com:80", None, True),
    ("[::1]:5555", "http://[::1]:5555", None, True),
    ("localhost:5555", "http://evil.com:5555", None, False),
    ("localhost:5555", "http://localhost:5556", None, False),
    ("localhost:5555", "http://localhost", None, False),
    ("localhost:5555", "null", None, False),
    ("localhost:5555", "file://", None, False),
    ("localhost:5555", "http://localhost:99999", None, False),
    ("localhost:5555", "chrome-extension://abc", None, False),
    ("127.0.0.1:5555", "https://chat.example.org", "chat.example.org", True),
    ("127.0.0.1:5555", "https://other.example.org", "chat.example.org", False),
])
def test_handshake_origin_check(host, origin, allowed_host, ok):
    request = upgrade_request(host=host.encode(), extra=b"Origin: " + origin.encode() + b"\r\n")
    if ok:
        assert cs.ws_handshake_response(request, allowed_host).startswith(b"HTTP/1.1 101 ")
    else:
        with pytest.raises(cs.HttpError) as info:
            cs.ws_handshake_response(request, allowed_host)
        assert info.value.status == 403


def test_handshake_without_origin_is_allowed():
    assert cs.ws_handshake_response(upgrade_request()).startswith(b"HTTP/1.1 101 ")


# -- WebSocket frames -----------------------------------------------------------------------

def test_single_frame_messages():
    ws = cs.WsConnection()
    events = ws.feed(mask_frame(cs.WS_OP_TEXT, "héllo 👋".encode())
                     + mask_frame(cs.WS_OP_BINARY, b"\x00\xff")
                     + mask_frame(cs.WS_OP_TEXT, b"")
                     + mask_frame(cs.WS_OP_BINARY, b"b" * 300)
                     + mask_frame(cs.WS_OP_BINARY, b"c" * 70000)
                     + mask_frame(cs.WS_OP_PONG, b"p"))
    assert events == [cs.WsText("héllo 👋"), cs.WsBinary(b"\x00\xff"), cs.WsText(""),
                      cs.WsBinary(b"b" * 300), cs.WsBinary(b"c" * 70000), cs.WsPong(b"p")]
    assert ws.data_to_send() == b""


def test_frames_split_at_every_byte_boundary():
    stream = (mask_frame(cs.WS_OP_TEXT, b"one") + mask_frame(cs.WS_OP_PING, b"pi")
              + mask_frame(cs.WS_OP_BINARY, b"x" * 200, fin=False)
              + mask_frame(cs.WS_OP_CONTINUATION, b"y" * 3)
              + mask_frame(cs.WS_OP_CLOSE, b"\x03\xe8bye"))
    expected = [cs.WsText("one"), cs.WsPing(b"pi"), cs.WsBinary(b"x" * 200 + b"yyy"),
                cs.WsClose(1000, "bye")]
    for cut in range(len(stream) + 1):
        ws = cs.WsConnection()
        assert ws.feed(stream[:cut]) + ws.feed(stream[cut:]) == expected, cut
        assert ws.data_to_send() == cs.ws_pong(b"pi") + cs.ws_close_frame(1000)


def test_fragmented_text_with_interleaved_control_frames():
    word = "caf\u00e9 \U0001f600".encode()                    # multi-byte characters
    ws = cs.WsConnection()
    events = ws.feed(mask_frame(cs.WS_OP_TEXT, word[:4], fin=False))
    events += ws.feed(mask_frame(cs.WS_OP_PING, b"1"))
    events += ws.feed(mask_frame(cs.WS_OP_CONTINUATION, word[4:9], fin=False))   # splits é
    events += ws.feed(mask_frame(cs.WS_OP_PONG, b"2"))
    events += ws.feed(mask_frame(cs.WS_OP_CONTINUATION, word[9:], fin=True))
    assert events == [cs.WsPing(b"1"), cs.WsPong(b"2"), cs.WsText("caf\u00e9 \U0001f600")]
    assert ws.data_to_send() == cs.ws_pong(b"1")
    events = ws.feed(mask_frame(cs.WS_OP_TEXT, b"next"))    # a new message may start
    assert events == [cs.WsText("next")]


def test_invalid_utf8_fails_fast_in_an_unfinished_fragmented_message():
    err = ws_error(mask_frame(cs.WS_OP_TEXT, b"ok", fin=False),
                   mask_frame(cs.WS_OP_CONTINUATION, b"\xc0\xaf", fin=False))
    assert err.close_code == 1007 and err.code == "ws_protocol"


def test_truncated_utf8_at_message_end_is_1007():
    assert ws_error(mask_frame(cs.WS_OP_TEXT, b"\xe2\x82", fin=False),
                    mask_frame(cs.WS_OP_CONTINUATION, b"", fin=True)).close_code == 1007


@pytest.mark.parametrize("frame, code", [
    (mask_frame(cs.WS_OP_TEXT, b"hi", masked=False), 1002),
    (mask_frame(cs.WS_OP_TEXT, b"hi", rsv=4), 1002),
    (mask_frame(cs.WS_OP_TEXT, b"hi", rsv=2), 1002),
    (mask_frame(cs.WS_OP_TEXT, b"hi", rsv=1), 1002),
] + [(mask_frame(op, b""), 1002) for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)] + [
    (mask_frame(cs.WS_OP_PING, b"x", fin=False), 1002),
    (mask_frame(cs.WS_OP_CLOSE, b"\x03\xe8", fin=False), 1002),
    (mask_frame(cs.WS_OP_PING, b"x" * 126), 1002),
    (mask_frame(cs.WS_OP_PONG, b"x" * 126), 1002),
    (mask_frame(cs.WS_OP_CONTINUATION, b"x"), 1002),
    (mask_frame(cs.WS_OP_TEXT, b"\xff"), 1007),
    (mask_frame(cs.WS_OP_TEXT, b"\xed\xa0\x80"), 1007),          # UTF-16 surrogate
    (mask_frame(cs.WS_OP_TEXT, b"\xf4\x90\x80\x80"), 1007),      # above U+10FFFF
    (mask_frame(cs.WS_OP_TEXT, b"\xc0\x80"), 1007),              # overlong
    (mask_frame(cs.WS_OP_CLOSE, b"\x03"), 1002),
    (mask_frame(cs.WS_OP_CLOSE, b"\x03\xe8\xff"), 1007),
    (bytes((0x82, 0xFF)) + b"\x80" + b"\x00" * 7 + b"mask", 1002),    # 64-bit length MSB set
])
def test_protocol_violations(frame, code):
    assert ws_error(frame).close_code == code


@pytest.mark.parametrize("close_code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                        5000, 65535])
def test_invalid_close_codes_are_1002(close_code):
    assert ws_error(mask_frame(cs.WS_OP_CLOSE, struct.pack("!H", close_code))).close_code == 1002


@pytest.mark.parametrize("close_code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                        1012, 1013, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed(close_code):
    ws = cs.WsConnection()
    events = ws.feed(mask_frame(cs.WS_OP_CLOSE, struct.pack("!H", close_code) + "é".encode()))
    assert events == [cs.WsClose(close_code, "é")]
    assert ws.data_to_send() == cs.ws_close_frame(close_code)
    assert ws.closed


def test_new_message_inside_fragmented_message_is_1002():
    for op in (cs.WS_OP_TEXT, cs.WS_OP_BINARY):
        err = ws_error(mask_frame(cs.WS_OP_BINARY, b"a", fin=False), mask_frame(op, b"b"))
        assert err.close_code == 1002


def test_frame_too_big_is_refused_from_the_header_alone():
    header_only = mask_frame(cs.WS_OP_BINARY, length=cs.WS_MAX_FRAME + 1)[:10]
    err = ws_error(header_only)
    assert err.close_code == 1009
    assert ws_error(mask_frame(cs.WS_OP_BINARY, length=1000)[:4], max_frame=999).close_code == 1009
    ws = cs.WsConnection()
    assert ws.feed(mask_frame(cs.WS_OP_BINARY, length=cs.WS_MAX_FRAME)[:10]) == []   # at the limit: waits


def test_message_too_big_across_fragments_is_1009():
    err = ws_error(mask_frame(cs.WS_OP_TEXT, b"a" * 60, fin=False),
                   mask_frame(cs.WS_OP_CONTINUATION, b"a" * 40, fin=False),
                   mask_frame(cs.WS_OP_CONTINUATION, length=1)[:2],
                   max_message=100)
    assert err.close_code == 1009
    ws = cs.WsConnection(max_message=100)
    events = ws.feed(mask_frame(cs.WS_OP_TEXT, b"a" * 60, fin=False)
                     + mask_frame(cs.WS_OP_CONTINUATION, b"a" * 40))
    assert events == [cs.WsText("a" * 100)]


def test_ws_errors_are_sticky_and_keep_earlier_events():
    ws = cs.WsConnection()
    with pytest.raises(cs.WsProtocolError) as info:
        ws.feed(mask_frame(cs.WS_OP_TEXT, b"before") + mask_frame(cs.WS_OP_TEXT, b"x", masked=False))
    assert info.value.events == [cs.WsText("before")]
    assert isinstance(info.value, cs.ChatError)
    with pytest.raises(cs.WsProtocolError) as again:
        ws.feed(mask_frame(cs.WS_OP_TEXT, b"after"))
    assert again.value.close_code == 1002 and again.value.events == []
    assert ws.close(1002, info.value.reason) == cs.ws_close_frame(1002, info.value.reason)


def test_client_initiated_close_handshake():
    ws = cs.WsConnection()
    events = ws.feed(mask_frame(cs.WS_OP_CLOSE, b"\x03\xe8bye") + mask_frame(cs.WS_OP_TEXT, b"late"))
    assert events == [cs.WsClose(1000, "bye")]
    assert ws.close_received and ws.close_sent and ws.closed
    assert ws.data_to_send() == cs.ws_close_frame(1000)
    assert ws.feed(mask_frame(cs.WS_OP_PING, b"x")) == []      # nothing after Close
    assert ws.data_to_send() == b""
    assert ws.close(1000) == b""                                # already sent


def test_empty_close_is_reported_as_1005_and_echoed_empty():
    ws = cs.WsConnection()
    assert ws.feed(mask_frame(cs.WS_OP_CLOSE)) == [cs.WsClose(1005, "")]
    assert ws.data_to_send() == b"\x88\x00"


def test_server_initiated_close_handshake():
    ws = cs.WsConnection()
    assert ws.close(1001, "going away") == cs.ws_close_frame(1001, "going away")
    assert ws.close_sent and not ws.closed
    events = ws.feed(mask_frame(cs.WS_OP_PING, b"p") + mask_frame(cs.WS_OP_TEXT, b"in flight")
                     + mask_frame(cs.WS_OP_CLOSE, b"\x03\xe9"))
    assert events == [cs.WsPing(b"p"), cs.WsText("in flight"), cs.WsClose(1001, "")]
    assert ws.data_to_send() == b""          # no pong after our Close, no second Close
    assert ws.closed


# -- WebSocket encoders ---------------------------------------------------------------------

@pytest.mark.parametrize("length, header", [
    (0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_encoded_frame_headers(length, header):
    frame = cs.ws_encode_text("a" * length)
    assert frame == header + b"a" * length


def test_encoders():
    assert cs.ws_encode_binary(b"\x01\x02") == b"\x82\x02\x01\x02"
    assert cs.ws_encode_frame(cs.WS_OP_TEXT, b"ab", fin=False) == b"\x01\x02ab"
    assert cs.ws_encode_frame(cs.WS_OP_CONTINUATION, bytearray(b"c")) == b"\x80\x01c"
    assert cs.ws_ping(b"x") == b"\x89\x01x" and cs.ws_pong() == b"\x8a\x00"
    assert cs.ws_close_frame() == b"\x88\x02\x03\xe8"
    assert cs.ws_close_frame(None) == b"\x88\x00" and cs.ws_close_frame(1005) == b"\x88\x00"
    assert cs.ws_encode_text("é") == b"\x81\x02\xc3\xa9"
    with pytest.raises(ValueError):
        cs.ws_ping(b"x" * 126)
    with pytest.raises(ValueError):
        cs.ws_pong(b"x" * 126)
    for code in (999, 1004, 1006, 1015, 2000, 5000):
        with pytest.raises(ValueError):
            cs.ws_close_frame(code)
    with pytest.raises(UnicodeEncodeError):
        cs.ws_encode_text("\ud800")


def test_close_reason_is_cut_on_a_character_boundary():
    fin, opcode, payload, rest = parse_server_frame(cs.ws_close_frame(1008, "é" * 100))
    assert fin and opcode == cs.WS_OP_CLOSE and rest == b""
    assert len(payload) <= 125
    assert payload[:2] == b"\x03\xf0" and payload[2:].decode("utf-8") == "é" * 61


def test_server_frames_roundtrip_through_test_decoder():
    for text in ("", "x", "é" * 40000, "z" * 70000):
        fin, opcode, payload, rest = parse_server_frame(cs.ws_encode_text(text))
        assert (fin, opcode, payload.decode(), rest) == (True, 1, text, b"")


# -- fuzzing: any input gives events or the documented exception -------------------------

@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_http_parser_random_bytes(pieces):
    parser = cs.HttpParser()
    try:
        for piece in pieces:
            for event in parser.feed(piece):
                assert isinstance(event, (cs.RequestHead, cs.BodyChunk, cs.RequestEnd))
    except cs.HttpError as err:
        assert err.status in (400, 413, 414, 431, 501, 505)


@FUZZ
@given(st.sampled_from([GET, POST, CHUNKED, UPGRADE]), st.integers(0, 200),
       st.binary(min_size=1, max_size=6), st.integers(0, 2), st.data())
def test_fuzz_http_parser_mutated_requests(base, position, noise, mode, data):
    stream = bytearray(base + GET)
    position = min(position, len(stream))
    if mode == 0:
        stream[position:position] = noise                          # insert
    elif mode == 1:
        stream[position:position + len(noise)] = noise             # overwrite
    else:
        del stream[position:position + len(noise)]                 # delete
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    pieces = [bytes(stream[a:b]) for a, b in zip([0] + cuts, cuts + [len(stream)])]
    try:
        events = feed_all(cs.HttpParser(), *pieces)
    except cs.HttpError as err:
        assert 400 <= err.status < 600
        return
    one_shot = merged(cs.HttpParser().feed(bytes(stream)))
    assert merged(events) == one_shot          # splitting never changes the result


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_ws_random_bytes(pieces):
    ws = cs.WsConnection(max_frame=4096, max_message=8192)
    try:
        for piece in pieces:
            for event in ws.feed(piece):
                assert isinstance(event, (cs.WsText, cs.WsBinary, cs.WsPing, cs.WsPong, cs.WsClose))
    except cs.WsProtocolError as err:
        assert err.close_code in (1002, 1007, 1009)
    assert isinstance(ws.data_to_send(), bytes)


FRAME = st.tuples(
    st.sampled_from([0, 1, 2, 8, 9, 10, 0, 1, 2, 8, 9, 10, 3, 0xB]),   # opcode
    st.booleans(),                                                    # fin
    st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 4]),                     # rsv
    st.sampled_from([True] * 15 + [False]),                           # masked
    st.one_of(st.binary(max_size=130),
              st.text(max_size=40).map(lambda s: s.encode("utf-8")),
              st.sampled_from([b"\x03\xe8", b"\x03", b"\x03\xe8\xff", b"\x00\x00", b"\x0f\xa0ok"])),
)


@FUZZ
@given(st.lists(FRAME, max_size=10), st.data())
def test_fuzz_ws_frame_sequences(frames, data):
    stream = b"".join(mask_frame(op, payload, fin=fin, rsv=rsv, masked=masked)
                      for op, fin, rsv, masked, payload in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    split, whole = cs.WsConnection(), cs.WsConnection()
    outcome = []
    for ws, parts in ((split, pieces), (whole, [stream])):
        events, code = [], None
        try:
            for part in parts:
                events += ws.feed(part)
        except cs.WsProtocolError as err:
            events += err.events
            code = err.close_code
            assert code in (1002, 1007, 1009)
        outcome.append((events, code, ws.data_to_send()))
    assert outcome[0] == outcome[1]


# -- fuzzing valid requests and frames, then mutated ones ------------------------------------
# Random bytes never make an HTTP or WebSocket event (0 of 400 examples each). These inputs
# are valid first (requests to the routes of PROTOCOL.md section 5 with every body framing;
# masked frame sequences with fragments and control frames), then changed a little
# (fuzzing.mutated). Unchanged input must parse to exactly what was built; any input must
# give events or a documented error, the same however it is split; over half the examples
# must produce events (reach).

HTTP_ERROR_STATUSES = (400, 413, 414, 431, 501, 505)      # what HttpParser raises
_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=10)
_FIELD_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20)
_TARGETS = ["/", "/healthz", "/ws", "/pair", "/qr.svg", "/qr.png", "/favicon.ico",
            "/files?session=s1&name=a%20b.txt&cid=c1", "/files/f0d2/cat.jpg?session=s1&inline=1",
            "/files/f0d2/%E2%9C%93?session=s1", "/nowhere?a=1&a=2",
            "http://127.0.0.1:5555/healthz"]


@st.composite
def http_request(draw):
    """(bytes, method, target, body) of one valid request."""
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS"]))
    target = "*" if method == "OPTIONS" and draw(st.booleans()) else \
        draw(st.sampled_from(_TARGETS))
    version = draw(st.sampled_from(["HTTP/1.1"] * 4 + ["HTTP/1.0"]))
    headers = [("Host", "127.0.0.1:5555")] if version == "HTTP/1.1" or draw(st.booleans()) \
        else []
    body = draw(st.binary(max_size=80)) if method in ("POST", "PUT") or draw(
        st.integers(0, 5)) == 0 else b""
    chunked = version == "HTTP/1.1" and draw(st.booleans())
    encoded = body
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        cuts = sorted(draw(st.lists(st.integers(1, max(1, len(body))), max_size=3)))
        parts = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)]) if body[a:b]]
        encoded = b"".join(b"%x%s\r\n%s\r\n" % (len(p), draw(st.sampled_from(
            [b"", b";ext=1", b';name="v"'])), p) for p in parts)
        encoded += b"0\r\n" + draw(st.sampled_from([b"", b"X-Trailer: yes\r\n"])) + b"\r\n"
    elif body or draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    if target == "/ws" and draw(st.booleans()):
        headers += [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13")]
    elif draw(st.booleans()):
        headers.append(("Connection", draw(st.sampled_from(["keep-alive", "close"]))))
    for _ in range(draw(st.integers(0, 3))):
        headers.append(draw(st.sampled_from([
            ("Range", "bytes=0-99"), ("Range", "bytes=-5"), ("Expect", "100-continue"),
            ("Content-Type", "text/plain; charset=utf-8"), ("Origin", "http://127.0.0.1:5555"),
            ("Accept", "*/*")]) | st.tuples(_TOKEN.map(lambda t: "X-" + t), _FIELD_VALUE)))
    headers = draw(st.permutations(headers))
    eol = b"\r\n" if draw(st.integers(0, 7)) else b"\n"      # RFC 9112 2.2: bare LF allowed
    head = ("%s %s %s" % (method, target, version)).encode() + eol + b"".join(
        ("%s: %s" % h).encode("latin-1") + eol for h in headers) + eol
    return head + encoded, method, target, body


def _line_starts(data):
    return [0] + [i + 1 for i in range(len(data)) if data[i:i + 1] == b"\n"][:40]


@st.composite
def mutated_http_stream(draw):
    requests = draw(st.lists(http_request(), min_size=1, max_size=3))
    valid = b"".join(r[0] for r in requests)
    data, changes = draw(mutated(st.just(valid), hotspots=_line_starts))
    return requests, data, changes, draw(split(data))


def http_outcome(pieces):
    parser = cs.HttpParser()
    events, status = [], None
    try:
        for piece in pieces:
            events += parser.feed(piece)
    except cs.HttpError as err:
        events += err.events
        status = err.status
    return events, status


@FUZZ
@given(mutated_http_stream())
def _fuzz_http(case):
    requests, data, changes, pieces = case
    events, status = http_outcome([data])
    split_events, split_status = http_outcome(pieces)
    assert (merged(split_events), split_status) == (merged(events), status)
    assert status is None or status in HTTP_ERROR_STATUSES
    heads = [e.request for e in events if isinstance(e, cs.RequestHead)]
    if not changes:
        assert status is None and heads, events
        for request, (_, method, target, body) in zip(heads, requests):
            assert (request.method, request.target) == (method, target)
        bodies = [e[1] for e in merged(events) if e[0] == "body"]
        assert bodies == [b for _, m, _, b in requests[:len(heads)] if b][:len(bodies)]
        if len(heads) < len(requests):     # parsing stops only after a close or an upgrade
            assert heads[-1].upgrade is not None or not heads[-1].keep_alive
    hypothesis.target(float(len(events)), label="events")
    _HTTP_REACH.count(events)


_HTTP_REACH = Reach("HTTP parser")


def test_fuzz_http_mutated_requests_reach_the_parser():
    _HTTP_REACH.__init__("HTTP parser")
    _fuzz_http()
    print(_HTTP_REACH)
    assert _HTTP_REACH.share > 0.5, _HTTP_REACH


_WS_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999]


@st.composite
def ws_session(draw):
    """(frames, events): masked client frames of a valid session and the events they mean:
    text and binary messages, fragmented or not, pings and pongs between fragments, maybe a
    close at the end."""
    frames, events = [], []

    def frame(opcode, payload, fin=True):
        frames.append(mask_frame(opcode, payload, fin=fin, mask=draw(st.binary(min_size=4,
                                                                                max_size=4))))

    def control():
        for _ in range(draw(st.integers(0, 1))):
            kind = draw(st.sampled_from([cs.WS_OP_PING, cs.WS_OP_PONG]))
            data = draw(st.binary(max_size=20))
            frame(kind, data)
            events.append(cs.WsPing(data) if kind == cs.WS_OP_PING else cs.WsPong(data))

    for _ in range(draw(st.integers(1, 4))):
        control()
        if draw(st.booleans()):
            text = draw(st.text(max_size=draw(st.sampled_from([20, 200]))))
            payload, opcode, event = text.encode("utf-8"), cs.WS_OP_TEXT, cs.WsText(text)
        else:
            payload = draw(st.binary(max_size=draw(st.sampled_from([20, 300]))))
            opcode, event = cs.WS_OP_BINARY, cs.WsBinary(payload)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=2)))
        parts = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
        for i, part in enumerate(parts):       # fragments may split a UTF-8 character
            frame(opcode if i == 0 else cs.WS_OP_CONTINUATION, part, fin=i == len(parts) - 1)
            if i < len(parts) - 1:
                control()                      # 5.4: control frames between fragments
        events.append(event)
    if draw(st.booleans()):
        code = draw(st.sampled_from(_WS_CLOSE_CODES))
        reason = draw(st.text(max_size=10))
        frame(cs.WS_OP_CLOSE, code.to_bytes(2, "big") + reason.encode("utf-8"))
        events.append(cs.WsClose(code, reason))
    return b"".join(frames), events


def _ws_frame_starts(data):
    """Where frame headers are (first byte: FIN/RSV/opcode; second: MASK and length)."""
    starts, pos = [], 0
    while pos + 2 <= len(data):
        starts += [pos, pos + 1]
        length = data[pos + 1] & 0x7F
        size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4
        if length >= 126:
            if pos + size > len(data):
                break
            length = int.from_bytes(data[pos + 2:pos + size - 4], "big")
        pos += size + length
    return starts


@st.composite
def mutated_ws_stream(draw):
    valid, events = draw(ws_session())
    data, changes = draw(mutated(st.just(valid), hotspots=_ws_frame_starts))
    return events, data, changes, draw(split(data))


def ws_outcome(pieces):
    ws = cs.WsConnection()
    events, code = [], None
    try:
        for piece in pieces:
            events += ws.feed(piece)
    except cs.WsProtocolError as err:
        events += err.events
        code = err.close_code
    return events, code, ws.data_to_send()


@FUZZ
@given(mutated_ws_stream())
def _fuzz_ws(case):
    expected, data, changes, pieces = case
    whole = ws_outcome([data])
    assert ws_outcome(pieces) == whole
    events, code, out = whole
    assert code in (None, 1002, 1007, 1009)
    assert isinstance(out, bytes)
    if not changes:
        assert (events, code) == (expected, None)
    hypothesis.target(float(len(events)), label="events")
    _WS_REACH.count(events)


_WS_REACH = Reach("WebSocket codec")


def test_fuzz_ws_mutated_frames_reach_the_codec():
    _WS_REACH.__init__("WebSocket codec")
    _fuzz_ws()
    print(_WS_REACH)
    assert _WS_REACH.share > 0.5, _WS_REACH


# -- conformance against the `websockets` library -----------------------------------------

from websockets.client import ClientProtocol  # noqa: E402
from websockets.frames import Close, Opcode  # noqa: E402
from websockets.http11 import Response  # noqa: E402
from websockets.protocol import State  # noqa: E402
from websockets.server import ServerProtocol  # noqa: E402
from websockets.typing import Origin  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402


def open_pair(origin="http://127.0.0.1:5555"):
    """Run websockets' client handshake against our parser + handshake -> (client, ws)."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1:5555/ws"),
                            origin=Origin(origin) if origin else None)
    request = client.connect()
    client.send_request(request)
    parser = cs.HttpParser()
    events = parser.feed(b"".join(client.data_to_send()))
    assert [type(e) for e in events] == [cs.RequestHead, cs.RequestEnd]
    http_request = events[0].request
    assert http_request.upgrade == "websocket" and parser.paused
    response = cs.ws_handshake_response(http_request)
    client.receive_data(response)
    [event] = client.events_received()
    assert isinstance(event, Response) and event.status_code == 101
    assert client.handshake_exc is None and client.state is State.OPEN
    ws = cs.WsConnection()
    assert ws.feed(parser.take_buffer()) == []
    return client, ws


def client_to_server(client, ws):
    return ws.feed(b"".join(client.data_to_send()))


def server_to_client(client, data):
    client.receive_data(data)
    return client.events_received()


def test_websockets_handshake_and_accept_key():
    from websockets.utils import accept_key, generate_key
    key = generate_key()
    assert cs.ws_accept_key(key) == accept_key(key)
    open_pair()
    open_pair(origin=None)


def test_websockets_handshake_rejected_origin():
    client = ClientProtocol(parse_uri("ws://127.0.0.1:5555/ws"), origin=Origin("http://evil.test"))
    client.send_request(client.connect())
    request = cs.HttpParser().feed(b"".join(client.data_to_send()))[0].request
    with pytest.raises(cs.HttpError) as info:
        cs.ws_handshake_response(request)
    client.receive_data(cs.http_error_response(info.value))
    [response] = client.events_received()
    assert response.status_code == 403 and client.state is not State.OPEN
    assert json.loads(response.body)["error"] == "http_403"


def test_websockets_client_messages_reach_our_codec():
    client, ws = open_pair()
    client.send_text("héllo 👋".encode())
    client.send_binary(b"\x00" * 70000)
    assert client_to_server(client, ws) == [cs.WsText("héllo 👋"), cs.WsBinary(b"\x00" * 70000)]
    client.send_text("fragmented ".encode(), fin=False)
    client.send_ping(b"mid")
    client.send_continuation("mess\u00e9".encode()[:5], fin=False)
    client.send_continuation("mess\u00e9".encode()[5:], fin=True)
    client.send_binary(b"ab", fin=False)
    client.send_continuation(b"cd", fin=True)
    assert client_to_server(client, ws) == [cs.WsPing(b"mid"), cs.WsText("fragmented mess\u00e9"),
                                            cs.WsBinary(b"abcd")]
    [pong] = server_to_client(client, ws.data_to_send())
    assert pong.opcode is Opcode.PONG and pong.data == b"mid"


def test_websockets_client_decodes_our_frames():
    client, ws = open_pair()
    big = "é" * 40000
    frames = server_to_client(client, cs.ws_encode_text('{"type":"msg"}') + cs.ws_encode_text(big)
                              + cs.ws_encode_binary(b"\x01" * 70000)
                              + cs.ws_encode_frame(cs.WS_OP_TEXT, b"ab", fin=False)
                              + cs.ws_encode_frame(cs.WS_OP_CONTINUATION, b"cd"))
    assert [(f.opcode, f.fin, bytes(f.data)) for f in frames] == [
        (Opcode.TEXT, True, b'{"type":"msg"}'), (Opcode.TEXT, True, big.encode()),
        (Opcode.BINARY, True, b"\x01" * 70000), (Opcode.TEXT, False, b"ab"),
        (Opcode.CONT, True, b"cd")]
    [ping] = server_to_client(client, cs.ws_ping(b"are you there"))
    assert ping.opcode is Opcode.PING
    assert client_to_server(client, ws) == [cs.WsPong(b"are you there")]   # client's auto pong
    assert client.parser_exc is None


def test_websockets_client_initiated_close():
    client, ws = open_pair()
    client.send_close(1000, "bye")
    assert client_to_server(client, ws) == [cs.WsClose(1000, "bye")]
    [echo] = server_to_client(client, ws.data_to_send())
    assert echo.opcode is Opcode.CLOSE
    assert client.state is State.CLOSING and client.close_rcvd.code == 1000
    assert ws.closed                       # the server closes TCP now
    client.receive_eof()
    assert client.state is State.CLOSED and client.close_code == 1000


def test_websockets_server_initiated_close_and_protocol_error_close():
    client, ws = open_pair()
    [close] = server_to_client(client, ws.close(1001, "shutdown"))
    assert close.opcode is Opcode.CLOSE and client.close_rcvd == Close(1001, "shutdown")
    assert client_to_server(client, ws) == [cs.WsClose(1001, "shutdown")]   # client echo
    assert ws.closed and ws.data_to_send() == b""

    client, ws = open_pair()
    server_to_client(client, cs.ws_close_frame(1009, "A message is larger than 1 MiB."))
    assert client.close_rcvd == Close(1009, "A message is larger than 1 MiB.")


def reference_outcome(stream):
    """websockets' own server-side protocol on the same bytes: (events, close code or None)."""
    server = ServerProtocol(state=State.OPEN, max_size=None)
    server.receive_data(stream)
    events, parts, opcode = [], [], None
    for frame in server.events_received():
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            opcode = frame.opcode if frame.opcode is not Opcode.CONT else opcode
            parts.append(bytes(frame.data))
            if frame.fin:
                message = b"".join(parts)
                parts = []
                if opcode is Opcode.BINARY:
                    events.append(cs.WsBinary(message))
                    continue
                try:
                    events.append(cs.WsText(message.decode("utf-8")))
                except UnicodeDecodeError:      # what websockets' upper layer does: 1007
                    return events, 1007, None
        elif frame.opcode is Opcode.PING:
            events.append(cs.WsPing(bytes(frame.data)))
        elif frame.opcode is Opcode.PONG:
            events.append(cs.WsPong(bytes(frame.data)))
        else:
            close = Close.parse(bytes(frame.data))
            events.append(cs.WsClose(close.code, close.reason))
    code = server.close_sent.code if server.parser_exc is not None else None
    return events, code, server.parser_exc


VALID_TEXT_FRAME = st.tuples(
    st.sampled_from([0, 1, 2, 8, 9, 10, 0, 1, 2, 9, 10, 3, 0xB]), st.booleans(),
    st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 4]), st.sampled_from([True] * 15 + [False]),
    st.one_of(st.text(max_size=40).map(lambda s: s.encode("utf-8")), st.binary(max_size=130),
              st.sampled_from([b"\x03\xe8", b"\x03", b"\x03\xe8\xff", b"\x00\x00", b"\x0f\xa0ok",
                               b"\x03\xf3"])))


@FUZZ
@given(st.lists(VALID_TEXT_FRAME, max_size=10))
def test_differential_against_websockets_server_protocol(frames):
    """Same frames into our codec and into websockets' ServerProtocol: same messages, same
    failure close code. websockets leaves text UTF-8 checks to its upper layer, so text
    payloads here are valid UTF-8 unless the frame is binary."""
    stream = b"".join(mask_frame(op, payload, fin=fin, rsv=rsv, masked=masked)
                      for op, fin, rsv, masked, payload in frames)
    ref_events, ref_code, ref_exc = reference_outcome(stream)
    # Known, deliberate difference: websockets fails (1002) on a Close frame arriving inside
    # a fragmented message; RFC 6455 allows control frames there, so we accept the Close.
    assume(ref_exc is None or "incomplete fragmented message" not in str(ref_exc))
    ws = cs.WsConnection(max_frame=10**9, max_message=10**9)
    code = None
    try:
        events = ws.feed(stream)
    except cs.WsProtocolError as err:
        events, code = err.events, err.close_code
    if ref_code == 1007:
        assert code == 1007                 # we may fail earlier (per fragment), never later
        return
    # Ours failed fast on a bad fragment; the reference only looks at whole messages and may
    # have met another error first.
    assume(code != 1007)
    assert (events, code) == (ref_events, ref_code)
