"""The framing codec, directly: vectors, limits, streaming, fuzzing."""
import json
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

import chatserver as cs

VECTORS = json.load(open(os.path.join(os.path.dirname(__file__), "vectors", "frames.json"),
                         encoding="utf-8"))


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=lambda v: v["name"])
def test_vector_encodes_byte_exact(vec):
    assert cs.encode_frame(vec["header"], bytes.fromhex(vec["payload_hex"])).hex() == vec["hex"]


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=lambda v: v["name"])
def test_vector_decodes(vec):
    frames = cs.FrameDecoder().feed(bytes.fromhex(vec["hex"]))
    assert len(frames) == 1
    raw_header, payload = frames[0]
    assert cs.decode_header(raw_header) == vec["header"]
    assert payload == bytes.fromhex(vec["payload_hex"])


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_raises_documented_code(vec):
    with pytest.raises(cs.ChatError) as info:
        for raw_header, _ in cs.FrameDecoder().feed(bytes.fromhex(vec["hex"])):
            cs.decode_header(raw_header)
    assert info.value.code == vec["error"]


def test_vectors_cover_every_message_type_in_the_protocol():
    """Every type named in PROTOCOL.md sections 3 and 4 has a vector."""
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "PROTOCOL.md"),
               encoding="utf-8").read()
    import re
    section = doc.split("## 3.")[1].split("## 5.")[0]
    types = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    covered = {v["header"]["type"] for v in VECTORS["frames"]}
    assert types and types <= covered, types - covered


def test_every_frame_split_at_every_byte_boundary():
    stream = b"".join(bytes.fromhex(v["hex"]) for v in VECTORS["frames"])
    expected = [(bytes.fromhex(v["hex"])[8:], v) for v in VECTORS["frames"]]
    for cut in range(0, len(stream), 7):
        dec = cs.FrameDecoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert len(got) == len(expected)
        assert [cs.decode_header(h) for h, _ in got] == [v["header"] for _, v in expected]
        assert dec.buffered == 0


def test_oversized_length_refused_before_body_arrives():
    dec = cs.FrameDecoder()
    with pytest.raises(cs.FrameError) as info:
        dec.feed(struct.pack(">II", cs.MAX_HEADER_BYTES + 1, 0))   # only the 8-byte prefix
    assert info.value.code == "frame_too_large" and info.value.fatal
    with pytest.raises(cs.FrameError) as info:
        cs.FrameDecoder().feed(struct.pack(">II", 10, cs.MAX_PAYLOAD_BYTES + 1))
    assert info.value.code == "frame_too_large"


def test_limits_are_inclusive_and_configurable():
    dec = cs.FrameDecoder(max_header=16, max_payload=4)
    ok = cs.encode_frame(b'{"type":"ping"}', b"abcd")
    assert len(dec.feed(ok)) == 1
    with pytest.raises(cs.FrameError):
        dec.feed(cs.encode_frame(b'{"type":"ping"}', b"abcde"))


def test_incomplete_frame_waits_without_yielding():
    dec = cs.FrameDecoder()
    data = cs.encode_frame({"type": "msg", "text": "x" * 100, "cid": "1"})
    assert dec.feed(data[:-1]) == []
    assert dec.buffered == len(data) - 1
    assert len(dec.feed(data[-1:])) == 1


def test_frames_before_a_bad_one_are_still_yielded():
    good = cs.encode_frame({"type": "ping"})
    dec = cs.FrameDecoder()
    dec.append(good + struct.pack(">II", 0, 0))
    seen = []
    with pytest.raises(cs.FrameError):
        for frame in dec.frames():
            seen.append(frame)
    assert len(seen) == 1


def test_decode_header_errors():
    for raw, code in [(b"\xff", "bad_json"), (b"nope", "bad_json"), (b"[1]", "bad_request"),
                      (b'{"type":"ping","t":NaN}', "bad_json"),
                      (b'{"type":"ping","t":-Infinity}', "bad_json"),
                      (b"{}", "bad_request"), (b'{"type":null}', "bad_request"), (b"1", "bad_request")]:
        with pytest.raises(cs.ChatError) as info:
            cs.decode_header(raw)
        assert info.value.code == code and not info.value.fatal


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_any_bytes_yield_frames_or_documented_error(chunks):
    dec = cs.FrameDecoder(max_header=64, max_payload=64)
    try:
        for chunk in chunks:
            for raw_header, payload in dec.feed(chunk):
                assert 1 <= len(raw_header) <= 64 and len(payload) <= 64
                try:
                    cs.decode_header(raw_header)
                except cs.ChatError as err:
                    assert err.code in ("bad_json", "bad_request")
    except cs.FrameError as err:
        assert err.code in ("bad_frame", "frame_too_large")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=20),
                                          max_size=3),
                          st.binary(max_size=40)), min_size=1, max_size=5),
       st.integers(min_value=1, max_value=50))
def test_fuzz_roundtrip_any_split(messages, step):
    frames = [({**h, "type": "x"}, p) for h, p in messages]
    stream = b"".join(cs.encode_frame(h, p) for h, p in frames)
    dec = cs.FrameDecoder()
    got = []
    for i in range(0, len(stream), step):
        got += dec.feed(stream[i:i + step])
    assert [(cs.decode_header(h), p) for h, p in got] == frames


# -- large payloads received in place (recv_into) ---------------------------------------------

def read_like_the_server(dec, stream, sizes):
    """Drive the decoder as Server._read does: recv_into the payload view when the decoder
    offers one, else append; `sizes` are what successive reads return (cycled)."""
    got, pos, i = [], 0, 0
    while pos < len(stream):
        want = sizes[i % len(sizes)]
        i += 1
        view = dec.receive_buffer()
        if view is not None:
            n = min(want, len(view), len(stream) - pos)
            view[:n] = stream[pos:pos + n]
            view.release()
            dec.received(n)
        else:
            n = min(want, len(stream) - pos)
            dec.append(stream[pos:pos + n])
        pos += n
        got += list(dec.frames())
    return got


def test_large_payload_is_received_in_place_into_one_buffer():
    dec = cs.FrameDecoder()
    payload = os.urandom(cs.MAX_PAYLOAD_BYTES)
    frame = cs.encode_frame({"type": "chunk", "upload": "u1", "offset": 0}, payload)
    assert dec.feed(frame[:1000]) == []
    view = dec.receive_buffer()
    assert view is not None and len(view) == len(frame) - 1000       # exactly what is missing
    view[:] = frame[1000:]
    view.release()
    dec.received(len(frame) - 1000)
    assert dec.receive_buffer() is None                              # complete: nothing more
    (raw_header, got), = dec.frames()
    assert cs.decode_header(raw_header)["upload"] == "u1"
    assert got == payload and isinstance(got, bytearray)
    assert dec.buffered == 0 and dec.receive_buffer() is None


def test_small_frames_and_incomplete_headers_are_not_received_in_place():
    dec = cs.FrameDecoder()
    small = cs.encode_frame({"type": "msg", "text": "hi"})
    assert dec.feed(small[:5]) == [] and dec.receive_buffer() is None       # no prefix yet
    assert len(dec.feed(small[5:])) == 1
    big = cs.encode_frame({"type": "chunk"}, b"x" * cs.DIRECT_PAYLOAD_MIN)
    dec.append(big[:12])                       # prefix complete, header not
    assert dec.receive_buffer() is None
    dec.append(big[12:])
    assert dec.receive_buffer() is None        # the whole frame is already here
    assert [p for _, p in dec.frames()] == [b"x" * cs.DIRECT_PAYLOAD_MIN]


def test_bytes_after_an_in_place_payload_start_the_next_frame():
    """A fast sender's next frame can arrive in the same read as the end of the payload."""
    dec = cs.FrameDecoder(direct_min=16)
    a = cs.encode_frame({"type": "chunk", "n": 1}, b"A" * 100)
    b = cs.encode_frame({"type": "msg", "text": "after"})
    dec.append(a[:40])
    assert dec.receive_buffer() is not None
    dec.append(a[40:] + b)                     # append() fills the payload first
    got = list(dec.frames())
    assert [(cs.decode_header(h), bytes(p)) for h, p in got] == \
        [({"type": "chunk", "n": 1}, b"A" * 100), ({"type": "msg", "text": "after"}, b"")]


def test_payload_over_the_limit_is_refused_not_received_in_place():
    dec = cs.FrameDecoder(max_payload=1000, direct_min=16)
    dec.append(struct.pack(">II", 4, 1001) + b"{}xx")
    assert dec.receive_buffer() is None
    with pytest.raises(cs.FrameError) as info:
        list(dec.frames())
    assert info.value.code == "frame_too_large"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=300)),
                min_size=1, max_size=6),
       st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=5))
def test_fuzz_in_place_reads_yield_what_feed_yields(shapes, sizes):
    frames = [({"type": "x", "i": i, "pad": "p" * extra}, os.urandom(plen))
              for i, (extra, plen) in enumerate(shapes)]
    stream = b"".join(cs.encode_frame(h, p) for h, p in frames)
    got = read_like_the_server(cs.FrameDecoder(direct_min=32), stream, sizes)
    assert [(cs.decode_header(h), bytes(p)) for h, p in got] == frames
