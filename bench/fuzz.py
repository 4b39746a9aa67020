#!/usr/bin/env python3
"""End-to-end fuzzer for chatserver.py: random and mutated framed, HTTP/1.1 and WebSocket
input over many loopback connections at once, against a real server.

It starts the server itself on 127.0.0.1 (a data folder in a temporary directory; with a
pairing token, or --open), keeps one "anchor" client joined (its session and three files it
shared give the HTTP routes, downloads and direct messages something real to aim at), then
sends batches of inputs. One input is one connection: a script of writes (frames built from
the message types and fields of docs/PROTOCOL.md section 3, then mutated), optional waits for
an answer, and an ending (wait for the answers, half-close, reset, drop, hold the slot, or
stall: stay connected reading nothing, with a small receive window).

Usage
  python3 bench/fuzz.py                          10,000 inputs or 90 s, whichever ends first
  python3 bench/fuzz.py --count 1000000 --seconds 0 --keep-going --json out.json
  python3 bench/fuzz.py --seed 42 --open --server-arg=--rate-limit=0
  python3 bench/fuzz.py --chatserver /tmp/other/chatserver.py     fuzz another copy
  python3 bench/fuzz.py --replay bench/results/fuzz-failures/crash-b3-0-s42.json   replay

Inputs (each kind weighted, see KIND_WEIGHTS; --weights framed=4,http=2,ws=3,raw=1)
  framed  hello (right, wrong or no token; own, borrowed or bad device keys) then frames of every client type, valid or
          mutated (fields dropped, retyped, boundary values, huge/negative/nested/unicode
          values, lone surrogates, duplicate keys); declared lengths over and under the
          limits; valid prefixes followed by garbage; truncations; floods in one write
          (hellos with a wrong token, pings never read, msgs, largest histories never
          read); uploads that wait for `upload_ready` and send right and wrong chunks;
          downloads and cancels.
  http    every route of PROTOCOL.md (/, /healthz, /pair, /qr.svg, /qr.png, /favicon.ico,
          GET/HEAD /files/<id>/<name> with Range, POST /files, POST /session; the session
          in an Authorization header or the cookie, sometimes wrong, missing or in the
          refused query string), then mutated request lines, headers, chunked bodies,
          Range values; pipelining; slow bytes.
  ws      the handshake (valid or mutated), then text messages carrying the JSON messages,
          control frames, fragmentation, close codes, bad masks, opcodes, RSV bits, lengths.
  raw     a first byte that is neither 0x00 nor a letter, TLS and HTTP/2 prefaces, random
          bytes, silent connections.
Every write may be split at random byte boundaries with small gaps; connections come from
several loopback source addresses (127.0.0.2 …), joined and not joined, interleaved.

After every batch it checks
  the process is alive; the log has no "Traceback" / "internal error" (scanned
  incrementally); an ordinary client connects, says hello, sends a msg and gets its
  acknowledgement within --check-timeout; RSS (/proc/<pid>/status VmRSS) stays under
  --max-rss-mb (sampled during the batch too) and the open fds (/proc/<pid>/fd, after the
  batch's connections are gone) under --max-fds.

Reach (how many inputs got past the first parse): an input "reached" when the server gave
it an answer of its own beyond a parse-level refusal: a welcome, pong, msg acknowledgement,
history, upload_ready, download frames, an error of the chat domain (not bad_frame,
frame_too_large, bad_json, bad_request, unknown_type), an HTTP status below 400 or a 4xx/5xx
whose JSON body names a route-level code (not the parser's generic http_4xx), a 101. For
joined inputs the welcome does not count; broadcasts from others never do.

Output: a summary (inputs by kind and sub-kind, reach, answers seen, outcomes, crashes, hangs,
internal errors, bounds exceeded, each distinct failure with its count, max RSS, max fds,
server and fuzzer CPU seconds, elapsed, seed), printed and with --json written as JSON (also
every --progress seconds during the run, marked "partial").
Failures: each distinct one (kind + signature: the exception and where it was raised) is
said once and then counted. Its batch is saved as --failures-dir/batch-b<N>-s<seed>.json;
when the batch alone reproduces it on a fresh server it is shrunk (halves, then single
inputs) to <kind>-b<N>-<i>-s<seed>.json. `--replay FILE` plays a saved file on a fresh
server and checks again (add --chatserver to try another copy, --sequential for one input
at a time). Placeholders ({{token}}, {{session}}, {{file}} …) in saved inputs are filled
from the new server, so replays work on any server.
Exit status 0: no failure; 1: a failure (or, with --replay, the failure still happens);
2: the fuzzer could not run (e.g. the server did not start).
Without --keep-going the run stops after the first failing batch; with it a crashed, hung or
bloated server is restarted (same data folder) and the run goes on; --stop-on KINDS stops at
those kinds only. kill <pid> (SIGTERM) or Ctrl+C ends a run with its summary and stops the
servers it started.

Python standard library only.
"""
import argparse
import base64
import collections
import errno
import hashlib
import json
import os
import platform
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
DEFAULT_SERVER = os.path.join(REPO_DIR, "chatserver.py")
DEFAULT_PROTOCOL = os.path.join(REPO_DIR, "docs", "PROTOCOL.md")
DEFAULT_FAILURES_DIR = os.path.join(BENCH_DIR, "results", "fuzz-failures")

# ---------------------------------------------------------------------------------------
# Limits and tunables

DEFAULT_COUNT = 10_000
DEFAULT_SECONDS = 90.0
DEFAULT_BATCH = 500               # inputs between two checks
DEFAULT_CONCURRENCY = 64          # connections open at once
DEFAULT_SOURCES = 32              # fuzz connections come from 127.0.0.2 … 127.0.0.(1+N)
DEFAULT_MAX_RSS_MB = 256
DEFAULT_MAX_FDS = 256
DEFAULT_CHECK_TIMEOUT = 10.0      # the ordinary client's hello + msg + ack
DEFAULT_MINIMIZE_BUDGET = 24      # fresh servers started to shrink one failing batch
DEFAULT_MINIMIZE_MAX = 10         # distinct failures shrunk per run

CONNECT_TIMEOUT = 3.0
QUIET_AFTER_DATA = 0.12           # an input is done this long after its last answer byte,
NO_ANSWER_WAIT = 0.5              # or this long after its last write if nothing came,
SENTINEL_WAIT = 1.5               # or, for an input ending with a ping, this long after its
                                  # last write without that ping's pong (broadcasts from
                                  # other inputs may keep arriving meanwhile)
INPUT_TIMEOUT = 4.0               # and at the latest this long after its last write
INPUT_HARD_LIMIT = 15.0           # from connect to close, whatever its script says
RX_KEEP = 64 * 1024               # answer bytes kept per input (more are counted only)
EVENTS_KEPT = 200                 # answers classified per input
SMALL_HEADER = 8 * 1024           # answer headers up to this size are decoded as JSON
SAMPLE_EVERY = 0.25               # RSS sampling period during a batch
SERVER_START_TIMEOUT = 15.0
FD_SETTLE = 0.3                   # after a batch, before its fds are counted

MAX_ID = 2 ** 62                  # PROTOCOL.md: ids are integers below 2^62 (MAX_MESSAGE_ID)
TEXT_MAX = 16 * 1024
NICK_MAX = 32
CID_MAX = 64
FRAME_HEADER_MAX = 64 * 1024
FRAME_PAYLOAD_MAX = 1024 * 1024
WS_MESSAGE_MAX = 1024 * 1024 + 64 * 1024
ANCHOR_NICK = "anchor"
SESSION_CHARS = 24                # len(welcome.session): secrets.token_urlsafe(18)
ANCHOR_FILE_SIZE = 3000           # the anchor's public text file (Range tests aim at it)

KIND_WEIGHTS = {"framed": 40, "http": 25, "ws": 25, "raw": 10}
JOINING_FRAMED = ("joined", "upload", "download", "flood", "garbage", "heavy_post",
                  "heavy_read")                          # framed sub-kinds that say hello
END_WEIGHTS = {"wait": 72, "fin": 8, "rst": 8, "drop": 6, "hold": 4, "stall": 2}

# Answers that say "the first parse refused this": they do not count as reach.
PARSE_ERRORS = {"bad_frame", "frame_too_large", "bad_json", "bad_request", "unknown_type"}
BROADCASTS = {"msg", "join", "leave", "typing"}          # sent to everyone: not an answer
WS_CLOSE_REACHED = {1000, 1001, 1008, 1011}              # closes that come from the chat
MINIMIZED_KINDS = ("crash", "internal_error", "hang", "refused")
RESTART_KINDS = ("crash", "hang", "refused", "rss", "fds")
TRACE_RE = re.compile(r"Traceback \(most recent call last\)|internal error|callback failed")

# Built-in copy of docs/PROTOCOL.md section 3, used when the document cannot be read.
FALLBACK_SPEC = {
    "hello": [("nick", "string"), ("client", "string"), ("proto", "int"),
              ("token", "string"), ("since", "int"), ("device", "string")],
    "msg": [("text", "string"), ("cid", "string"), ("to", "nick")],
    "history": [("before", "int"), ("after", "int"), ("limit", "int"), ("cid", "string")],
    "typing": [("to", "nick")],
    "ping": [("t", "any")], "pong": [("t", "any")],
    "upload": [("name", "string"), ("size", "int"), ("cid", "string"), ("sha256", "string"),
               ("mime", "string"), ("to", "nick"), ("text", "string")],
    "chunk": [("upload", "string"), ("offset", "int"), ("last", "bool")],
    "upload_status": [("upload", "string")], "upload_cancel": [("upload", "string")],
    "download": [("file", "string"), ("offset", "int")],
    "download_cancel": [("file", "string")],
}

# ---------------------------------------------------------------------------------------
# The protocol under test: client message types and fields, read from docs/PROTOCOL.md


def load_client_messages(path):
    """{type: [(field, kind)]} from the table of PROTOCOL.md section 3 ("Client → server
    messages"); kind is string, int, bool, nick or any. Falls back to FALLBACK_SPEC."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return dict(FALLBACK_SPEC), False
    section = re.search(r"^## 3\..*?$(.*?)^## ", text, re.S | re.M)
    if not section:
        return dict(FALLBACK_SPEC), False
    spec = {}
    for row in re.finditer(r"^\| `(\w+)` \|([^|]*)\|", section.group(1), re.M):
        fields = []
        for m in re.finditer(r"`(\w+)`\s*(?:\(((?:[^()]|\([^()]*\))*)\))?", row.group(2)):
            words = re.findall(r"[a-z]+", (m.group(2) or "string").lower())
            kind = next((w for w in words if w in ("string", "int", "bool", "nick", "any")),
                        "string")
            fields.append((m.group(1), kind))
        spec[row.group(1)] = fields
    return (spec, True) if "hello" in spec else (dict(FALLBACK_SPEC), False)


# ---------------------------------------------------------------------------------------
# Wire encoders, client side. Values that only the running server knows (the token, the
# anchor's session and files, an upload id read from `upload_ready`) are placeholders
# such as {{token}} in the generated bytes, replaced when the bytes are sent: lengths and
# WebSocket masks are computed after that, so a saved input replays against any server.

PLACEHOLDER_RE = re.compile(rb"\{\{(token|session|device|file|pfile|sfile|anchor|hostport|"
                            rb"port|upload)\}\}")


def substitute(data, values):
    if b"{{" not in data:
        return data
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1).decode(), m.group(0)), data)


class Raw(str):
    """JSON text put in as is: 1e999, a 5,000-digit number, NaN, deep nesting."""


class Obj(list):
    """A JSON object as a list of (key, value) pairs: keys may repeat, order is kept."""


def emit(value, ascii_only=True):
    """JSON text of `value`. ascii_only=False writes strings raw, so a lone surrogate
    becomes invalid UTF-8 (CESU bytes) instead of a \\ud800 escape."""
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "1e999"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, (Obj, dict)):
        pairs = value if isinstance(value, Obj) else value.items()
        return "{" + ",".join(emit(str(k), ascii_only) + ":" + emit(v, ascii_only)
                              for k, v in pairs) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(emit(v, ascii_only) for v in value) + "]"
    return json.dumps(str(value))


def json_bytes(value, ascii_only=True):
    return emit(value, ascii_only).encode("utf-8", "surrogatepass")


def encode_frame(header, payload=b"", hlen=None, plen=None):
    """uint32 BE header length | uint32 BE payload length | header | payload (lengths may
    be forced to lie)."""
    return struct.pack(">II", (len(header) if hlen is None else hlen) & 0xFFFFFFFF,
                       (len(payload) if plen is None else plen) & 0xFFFFFFFF) + header + payload


def xor_mask(data, mask):
    if not data:
        return b""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def encode_ws(fin, rsv, opcode, mask, payload, length=None, form=None):
    """One client frame (RFC 6455 5.2). mask None = unmasked; form 16/64 forces a longer
    length encoding; length forces the declared length."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 15)
    m = 0x80 if mask is not None else 0
    if form == 64 or (form is None and n > 0xFFFF):
        head = bytes([b0, m | 127]) + struct.pack(">Q", n & 0xFFFFFFFFFFFFFFFF)
    elif form == 16 or (form is None and n > 125):
        head = bytes([b0, m | 126]) + struct.pack(">H", n & 0xFFFF)
    else:
        head = bytes([b0, m | min(n, 125)])
    if mask is None:
        return head + payload
    return head + mask + xor_mask(payload, mask)


def http_request(method, target, headers, body=b"", version=b"HTTP/1.1", eol=b"\r\n"):
    lines = [method + b" " + target + b" " + version]
    lines += [name + b": " + value for name, value in headers]
    return eol.join(lines) + eol + eol + body


# Pieces of a write, as data (saved in replay files):
#   ["raw", bytes]                                     sent as is (after placeholders)
#   ["frame", header, payload, hlen, plen, cut]        a framed-protocol frame
#   ["ws", fin, rsv, opcode, mask, payload, length, form, cut]   a WebSocket client frame
#   ["mutate", [pieces], seed, rounds]                 the pieces, then byte mutations
#                                                      (done at send time, on real values)
#   ["repeat", n, piece]  ["seq", [pieces]]            n copies of a piece; pieces in a row
# cut keeps only the first `cut` bytes of the encoded piece.


def build_piece(piece, values):
    kind = piece[0]
    if kind == "raw":
        return substitute(piece[1], values)
    if kind == "repeat":
        return build_piece(piece[2], values) * piece[1]
    if kind == "seq":
        return b"".join(build_piece(p, values) for p in piece[1])
    if kind == "mutate":
        _, inner, seed, rounds = piece
        data = b"".join(build_piece(p, values) for p in inner)
        return mutate_bytes(random.Random(seed), data, rounds)
    if kind == "frame":
        _, header, payload, hlen, plen, cut = piece
        data = encode_frame(substitute(header, values), payload, hlen, plen)
    elif kind == "ws":
        _, fin, rsv, opcode, mask, payload, length, form, cut = piece
        data = encode_ws(fin, rsv, opcode, mask, substitute(payload, values), length, form)
    else:
        raise ValueError("unknown piece %r" % kind)
    return data if cut is None else data[:cut]


# ---------------------------------------------------------------------------------------
# Random values and mutations

INTERESTING_INTS = [0, 1, -1, 2, 7, 49, 50, 51, 127, 128, 199, 200, 201, 255, 256, 1023,
                    1024, 3000, 2999, 3001, 16384, 16385, 65535, 65536, 65537, 2 ** 20,
                    2 ** 20 + 1, 2 ** 24, 2 ** 31 - 1, 2 ** 31, -2 ** 31, 2 ** 32 - 1, 2 ** 32,
                    2 ** 53 + 1, 2 ** 62, 2 ** 62 + 1, 2 ** 63 - 1, 2 ** 63, -2 ** 63,
                    -2 ** 63 - 1, 2 ** 64, 4 * 1024 ** 3, 4 * 1024 ** 3 + 1, 10 ** 30]
RAW_NUMBERS = ["1e999", "-1e999", "1e-999", "-0", "0.0", "1E400", "1.5", "-0.0", "NaN",
               "Infinity", "-Infinity", "9" * 5000, "1" + "0" * 400, "01", "+1", ".5",
               "1.", "0x10", "1e", "--1", "1_000"]
INTERESTING_STRINGS = [
    "", " ", "a", "\x00", "\n", "\r\n", "\t", "\x7f", "\x1b[2J", "\x1b]0;pwned\x07",
    "line\nWARNING server full", "\u202e", "\ufeff", "\u200b", "\ud800", "\udfff", "\ud83d",
    "a\udc00b", "\U0001F600", "🎉" * 40, "é", "e\u0301", "İ", "ß", "ﬀ", "K", "\uffff",
    "\U0010ffff", "../../etc/passwd", "..\\..\\boot.ini", "CON", "nul.txt", "COM1.log",
    "<script>alert(1)</script>", "%00", "%s%n%x", "\\", '"', "'", "{{", "null", "true", "0",
    "-1", "NaN", "a" * 32, "a" * 33, "a" * 64, "a" * 65, "a" * 200, "a" * 201, "x" * 4096,
    "image/SVG+xml", "image/png", "image/p\u00e9ng", "text/html", "application/json",
    "image/svg+xml;charset=utf-8", "a/b/c", "/", "anchor", "ANCHOR", "Anchor ", " anchor",
    "\u0430nchor",
]
NAMES = ["notes.txt", "a.png", "x.svg", "photo.JPG", "CON", "..", ".", " .txt ", "a" * 300,
         "d/../e.txt", "x:y*?.txt", "rapport final (2).pdf", "é.txt", "\ud800.txt", "nul",
         "\x00.bin", "\u202egnp.exe", "file", ".hidden"]
MIMES = ["text/plain", "image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml",
         "image/SVG+xml", "text/html", "application/octet-stream", "image/p\u00e9ng",
         "x" * 300, "", "a/b", "image/png\r\nX-Injected: 1", "image/png; charset=x"]


def mutate_bytes(r, data, rounds):
    """Byte-level mutations: flips, interesting bytes, inserts, deletes, repeats,
    truncations, garbage."""
    data = bytearray(data)
    for _ in range(rounds):
        op = r.randrange(9)
        n = len(data)
        if op == 0 and n:
            i = r.randrange(n)
            data[i] ^= 1 << r.randrange(8)
        elif op == 1 and n:
            data[r.randrange(n)] = pick(r, [0, 0xFF, 0x7F, 0x80, 0x22, 0x5C, 0x7B, 0x7D, 0x0A,
                                            0x0D, 0xC0, 0xED])
        elif op == 2:
            i = r.randrange(n + 1)
            data[i:i] = r.randbytes(r.randrange(1, 17))
        elif op == 3 and n > 1:
            i = r.randrange(n)
            del data[i:i + r.randrange(1, 17)]
        elif op == 4 and n:
            i = r.randrange(n)
            j = min(n, i + r.randrange(1, 64))
            data[i:i] = data[i:j] * r.randrange(1, 8)
        elif op == 5 and n:
            del data[r.randrange(n):]
        elif op == 6:
            data += r.randbytes(r.randrange(1, 256))
        elif op == 7 and n:
            i = r.randrange(n)
            data[i:i] = pick(r, [b"\xed\xa0\x80", b"\xc0\x80", b"\xff", b"\\u0000",
                                 b'\\ud800', b'"', b"{", b"]", b"\x00" * 4])
        elif op == 8 and n > 1:
            i, j = r.randrange(n), r.randrange(n)
            data[i], data[j] = data[j], data[i]
    return bytes(data)


def pick(r, seq):
    return seq[r.randrange(len(seq))]


class Gen:
    """Seeded source of inputs. `spec` is load_client_messages()."""

    def __init__(self, seed, spec, weights=None, sources=DEFAULT_SOURCES):
        self.r = random.Random(seed)
        self.spec = spec
        self.weights = dict(weights or KIND_WEIGHTS)
        self.sources = sources
        self.next_id = 0
        self.recent_nicks = collections.deque(maxlen=32)

    # -- small choices ------------------------------------------------------------------

    def chance(self, p):
        return self.r.random() < p

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def weighted(self, table):
        total = sum(table.values())
        x = self.r.random() * total
        for key, w in table.items():
            x -= w
            if x < 0:
                return key
        return key

    def src(self):
        if not self.sources:
            return "127.0.0.1"
        return "127.0.0.%d" % (2 + self.r.randrange(self.sources))

    # -- values -------------------------------------------------------------------------

    def unicode_text(self, n):
        r = self.r
        out = []
        for _ in range(n):
            kind = r.random()
            if kind < 0.55:
                out.append(chr(r.randrange(0x20, 0x7F)))
            elif kind < 0.65:
                out.append(chr(r.randrange(0, 0x20)))
            elif kind < 0.8:
                out.append(chr(r.randrange(0xA0, 0x800)))
            elif kind < 0.93:
                out.append(chr(r.randrange(0x800, 0xD800)))
            elif kind < 0.98:
                out.append(chr(r.randrange(0x10000, 0x110000)))
            else:
                out.append(chr(r.randrange(0xD800, 0xE000)))      # lone surrogate
        return "".join(out)

    def any_string(self):
        r = self.r.random()
        if r < 0.4:
            return self.pick(INTERESTING_STRINGS)
        if r < 0.9:
            return self.unicode_text(self.r.randrange(0, 40))
        return self.unicode_text(self.r.randrange(40, 3000))

    def any_int(self):
        if self.chance(0.7):
            return self.pick(INTERESTING_INTS)
        return self.r.randrange(-2 ** 40, 2 ** 40)

    def deep(self):
        n = self.pick([50, 500, 1000, 5000, 20000, 32000])
        if self.chance(0.5):
            return Raw("[" * n + "]" * n)
        return Raw('{"a":' * n + "1" + "}" * n)

    def any_value(self, depth=0):
        r = self.r.random()
        if r < 0.2:
            return self.any_int()
        if r < 0.45:
            return self.any_string()
        if r < 0.52:
            return self.pick([None, True, False])
        if r < 0.58:
            return self.r.uniform(-1e300, 1e300)
        if r < 0.66:
            return Raw(self.pick(RAW_NUMBERS))
        if r < 0.69:
            return self.deep()
        if depth < 3 and r < 0.85:
            return [self.any_value(depth + 1) for _ in range(self.r.randrange(0, 5))]
        if depth < 3:
            return Obj((self.any_string()[:20], self.any_value(depth + 1))
                       for _ in range(self.r.randrange(0, 5)))
        return self.any_string()

    def boundary(self, kind):
        """A value at or just past a limit of the field's documented kind."""
        if kind == "int":
            return self.pick(INTERESTING_INTS + [True, False, 1.0, "1", None, Raw("1e999")])
        if kind == "bool":
            return self.pick([0, 1, "true", None, [], "false", Raw("tru")])
        if kind == "nick":
            return self.pick(["{{anchor}}", "a" * NICK_MAX, "a" * (NICK_MAX + 1), "", " ",
                              "\ud800", "nobody", "x\ny", 5, None] + list(self.recent_nicks))
        return self.pick(["", "a" * CID_MAX, "a" * (CID_MAX + 1), "\ud800", "x" * TEXT_MAX,
                          "é" * (TEXT_MAX // 2 + 1), 0, None, [], {}, "\x00", "{{session}}",
                          "{{token}}", self.unicode_text(70)])

    def nick(self, tag):
        r = self.r.random()
        if r < 0.82:
            nick = "f%s%s" % (tag, self.pick(["", "é", "🎉", "-x", "_"]))
        elif r < 0.9 and self.recent_nicks:
            nick = self.pick(list(self.recent_nicks))                # probably nick_taken
        else:
            return self.pick(INTERESTING_STRINGS)
        self.recent_nicks.append(nick)
        return nick

    def text(self):
        r = self.r.random()
        if r < 0.7:
            return self.unicode_text(self.r.randrange(1, 80)) or "x"
        if r < 0.85:
            return self.pick(INTERESTING_STRINGS) or "y"
        if r < 0.95:
            return "z" * self.r.randrange(100, 4000)
        return self.pick(["x" * TEXT_MAX, "x" * (TEXT_MAX + 1), "é" * (TEXT_MAX // 2),
                          "é" * (TEXT_MAX // 2 + 1), "\U0001F600" * (TEXT_MAX // 4 + 1)])

    # -- messages of PROTOCOL.md --------------------------------------------------------

    def hello(self, tag, token="{{token}}"):
        m = Obj([("type", "hello"), ("nick", self.nick(tag)),
                 ("client", "fuzz/1" if self.chance(0.9) else self.any_string()),
                 ("proto", 1)])
        if token is not None:
            m.append(("token", token))
        r = self.r.random()
        if r < 0.35:                           # a device key of its own (PROTOCOL.md 2)
            m.append(("device", base64.urlsafe_b64encode(self.r.randbytes(16)).decode()
                      .rstrip("=")))
        elif r < 0.42:
            m.append(("device", self.pick(["", "short", "a" * 129, "{{device}}", "é" * 30,
                                           "{{token}}", 5, None, "a" * 22 + "="])))
        r = self.r.random()
        if r < 0.5:
            m.append(("since", MAX_ID))        # no history in the welcome: cheap
        elif r < 0.6:
            m.append(("since", self.pick([0, 1, 100, MAX_ID - 1])))
        return m

    def message(self, mtype, tag, n):
        """A valid message of `mtype`; `tag` makes cids traceable, n numbers them."""
        cid = "%s.%d" % (tag, n)
        r = self.r
        if mtype == "msg":
            m = Obj([("type", "msg"), ("text", self.text()), ("cid", cid)])
            if self.chance(0.15):
                m.append(("to", self.pick(["{{anchor}}", "nobody"] + list(self.recent_nicks))))
            return m
        if mtype == "history":
            m = Obj([("type", "history")])
            if self.chance(0.5):
                m.append(("limit", self.pick([1, 10, 50, 200])))
            if self.chance(0.4):
                m.append(("before", r.randrange(0, 10 ** 6)))
            if self.chance(0.3):
                m.append(("after", r.randrange(0, 10 ** 6)))
            if self.chance(0.5):
                m.append(("cid", cid))
            return m
        if mtype == "typing":
            m = Obj([("type", "typing")])
            if self.chance(0.3):
                m.append(("to", self.pick(["{{anchor}}"] + list(self.recent_nicks))))
            return m
        if mtype in ("ping", "pong"):
            m = Obj([("type", mtype)])
            if self.chance(0.6):
                m.append(("t", self.any_value()))
            return m
        if mtype == "upload":
            size = self.pick([0, 1, 10, 1000, 70000, 2 ** 20 + 5, 4 * 1024 ** 3])
            m = Obj([("type", "upload"), ("name", self.pick(NAMES)), ("size", size),
                     ("cid", cid)])
            if self.chance(0.3):
                m.append(("mime", self.pick(MIMES)))
            if self.chance(0.2):
                m.append(("sha256", "%064x" % r.getrandbits(256)))
            if self.chance(0.1):
                m.append(("to", "{{anchor}}"))
            if self.chance(0.2):
                m.append(("text", self.text()))
            return m
        if mtype == "chunk":
            return Obj([("type", "chunk"), ("upload", "{{upload}}"), ("offset", 0)])
        if mtype in ("upload_status", "upload_cancel"):
            return Obj([("type", mtype), ("upload", self.pick(["{{upload}}", "u" + "0" * 24]))])
        if mtype == "download":
            m = Obj([("type", "download"),
                     ("file", self.pick(["{{file}}", "{{file}}", "{{pfile}}", "{{sfile}}",
                                         "f" + "0" * 24]))])
            if self.chance(0.4):
                m.append(("offset", self.pick([0, 1, ANCHOR_FILE_SIZE - 1, ANCHOR_FILE_SIZE,
                                               ANCHOR_FILE_SIZE + 1, -1])))
            return m
        if mtype == "download_cancel":
            return Obj([("type", "download_cancel"), ("file", "{{file}}")])
        if mtype == "hello":
            return self.hello(tag)
        # a type PROTOCOL.md lists that this generator has no model for: from its fields
        m = Obj([("type", mtype)])
        for name, kind in self.spec.get(mtype, []):
            if self.chance(0.7):
                m.append((name, self.field_value(kind, cid)))
        return m

    def field_value(self, kind, cid):
        if kind == "int":
            return self.r.randrange(0, 100)
        if kind == "bool":
            return self.chance(0.5)
        if kind == "nick":
            return "{{anchor}}"
        if kind == "any":
            return self.any_value()
        return cid

    def mutate_message(self, m):
        """One structural change to a message (an Obj)."""
        m = Obj(m)
        fields = [i for i, (k, _) in enumerate(m) if k != "type"]
        kinds = dict(self.spec.get(m[0][1] if m and m[0][0] == "type" else "", []))
        op = self.weighted({"drop": 10, "retype": 18, "boundary": 22, "extra": 8, "dupkey": 6,
                            "type_unknown": 5, "type_other": 8, "type_bad": 5, "not_object": 4,
                            "deep": 3, "surrogate": 6, "huge": 3})
        if op == "drop" and fields:
            del m[self.pick(fields)]
        elif op == "retype" and fields:
            i = self.pick(fields)
            m[i] = (m[i][0], self.any_value())
        elif op == "boundary" and fields:
            i = self.pick(fields)
            m[i] = (m[i][0], self.boundary(kinds.get(m[i][0], "string")))
        elif op == "boundary":
            name, kind = self.pick(list(kinds.items()) or [("x", "string")])
            m.append((name, self.boundary(kind)))
        elif op == "extra":
            m.append((self.pick(["x", "type", "nick", "__proto__", "", "\ud800", "payload"]),
                      self.any_value()))
        elif op == "dupkey" and fields:
            k, v = m[self.pick(fields)]
            m.append((k, self.any_value()))
        elif op == "type_unknown":
            m[0] = ("type", self.pick(["", "HELLO", "msg ", "welcome", "error", "file_chunk",
                                       "bye", "x" * 1000, "\ud800", "ms\x00g"]))
        elif op == "type_other":
            m[0] = ("type", self.pick(list(self.spec)))
        elif op == "type_bad":
            m[0] = ("type", self.pick([None, 1, [], {}, True, Raw("1e999")]))
        elif op == "not_object":
            return self.pick([[], [m[0][1]], "msg", 1, None, Raw("[" * 10 + "]" * 10)])
        elif op == "deep":
            m.append(("t", self.deep()))
        elif op == "surrogate" and fields:
            i = self.pick(fields)
            m[i] = (m[i][0], self.pick(["\ud800", "x\udfff", "\udbff\udbff", "\ud83d"]))
        elif op == "huge":
            m.append(("pad", "x" * self.pick([60000, 65600, 200000])))
        return m

    def mutate_bytes(self, data, rounds=None):
        return mutate_bytes(self.r, data, rounds or self.r.randrange(1, 4))

    # -- inputs -------------------------------------------------------------------------

    def make(self):
        """One input: a dict described under "Inputs as data" below."""
        self.next_id += 1
        kind = self.weighted(self.weights)
        make = {"framed": self.framed, "http": self.http, "ws": self.ws, "raw": self.raw}[kind]
        inp = make("i%d" % self.next_id)
        inp["id"] = self.next_id
        inp["kind"] = kind
        inp.setdefault("src", self.src())
        inp.setdefault("end", self.weighted(END_WEIGHTS))
        if inp["end"] in ("hold", "stall") and "hold" not in inp:
            inp["hold"] = round(self.r.uniform(0.2, 1.5), 3)
        self.maybe_split(inp)
        return inp

    def maybe_split(self, inp):
        """Cut writes at random byte offsets, with small gaps (partial frames, requests)."""
        for write in inp["writes"]:
            if "split" in write:
                continue
            r = self.r.random()
            if r < 0.3:
                write["split"] = sorted(self.r.randrange(1, 4096)
                                        for _ in range(self.r.randrange(1, 6)))
                write["gap"] = round(self.r.uniform(0, 0.02), 4)
            elif r < 0.34:
                write["split"] = list(range(1, 300))          # byte by byte (short writes)
                write["gap"] = round(self.r.uniform(0, 0.004), 4)

    # framed ------------------------------------------------------------------------------

    POST_HELLO_TYPES = {"msg": 30, "history": 10, "typing": 8, "ping": 10, "pong": 3,
                        "upload": 7, "chunk": 3, "upload_status": 3, "upload_cancel": 3,
                        "download": 8, "download_cancel": 4, "hello": 3, "_other": 3}

    def frame_piece(self, message, payload=b"", mutate=0.0, ascii_only=None):
        if ascii_only is None:
            ascii_only = self.chance(0.85)
        header = json_bytes(message, ascii_only)
        if mutate and self.chance(mutate):
            header = self.mutate_bytes(header)
        return ["frame", header, payload, None, None, None]

    def post_hello_frames(self, tag, count, valid_share):
        pieces = []
        for n in range(count):
            mtype = self.weighted(self.POST_HELLO_TYPES)
            if mtype == "_other":
                mtype = self.pick(list(self.spec))
            m = self.message(mtype, tag, n)
            payload = b""
            if mtype == "chunk":
                payload = self.r.randbytes(self.r.randrange(1, 2000))
            if not self.chance(valid_share):
                if self.chance(0.8):
                    m = self.mutate_message(m)
                    if self.chance(0.1):
                        payload = self.r.randbytes(self.r.randrange(1, 64))
                else:
                    pieces.append(self.frame_piece(m, payload, mutate=1.0))
                    continue
            pieces.append(self.frame_piece(m, payload))
        return pieces

    def sentinel_frame(self, tag):
        marker = "~end~%s~" % tag
        return ["frame", json_bytes(Obj([("type", "ping"), ("t", marker)])), b"", None, None,
                None], marker

    def framed(self, tag):
        sub = self.weighted({"joined": 40, "anon": 13, "badtoken": 10, "upload": 10,
                             "download": 7, "lengths": 8, "garbage": 6, "flood": 3,
                             "hello_flood": 1, "takeover": 0.5, "other_proto": 1.5,
                             "heavy_post": 0.3, "heavy_read": 0.3})
        inp = {"sub": sub, "tag": tag}
        pieces = []
        writes = []
        if sub in JOINING_FRAMED:
            hello = self.hello(tag)
            if sub == "joined" and self.chance(0.08):
                hello = self.mutate_message(hello)
            pieces.append(self.frame_piece(hello))
        if sub == "joined":
            pieces += self.post_hello_frames(tag, self.r.randrange(1, 9), 0.6)
        elif sub == "anon":
            for n in range(self.r.randrange(1, 6)):
                mtype = self.pick(["ping", "pong", "msg", "history", "hello", "typing",
                                   "download"])
                m = self.message(mtype, tag, n)
                if mtype == "hello":
                    m = Obj((k, v) for k, v in m if k != "token")
                pieces.append(self.frame_piece(self.mutate_message(m) if self.chance(0.5)
                                               else m))
        elif sub == "badtoken":
            hello = self.hello(tag, token=self.pick([None, "", "x" * 22, "{{token}}x",
                                                     "{{session}}", 5, "\ud800", "a" * 5000]))
            pieces.append(self.frame_piece(hello))
            pieces += self.post_hello_frames(tag, self.r.randrange(0, 4), 0.6)
        elif sub == "other_proto":
            hello = self.hello(tag)
            hello.append(("proto", self.pick([0, 2, "1", 1.0, None, 10 ** 20])))
            pieces.append(self.frame_piece(hello))
        elif sub == "takeover":
            # the anchor's nick with its device key: the same user on a new connection
            pieces.append(self.frame_piece(Obj([("type", "hello"), ("nick", "{{anchor}}"),
                                                ("proto", 1), ("token", "{{token}}"),
                                                ("device", "{{device}}")])))
            pieces += self.post_hello_frames(tag, 2, 1.0)
        elif sub == "upload":
            writes = self.framed_upload(tag, pieces)
        elif sub == "download":
            pieces += self.framed_downloads(tag)
        elif sub == "lengths":
            pieces += self.framed_lengths(tag)
        elif sub == "garbage":
            pieces += self.post_hello_frames(tag, self.r.randrange(0, 4), 0.8)
            pieces.append(["raw", self.r.randbytes(self.r.randrange(1, 4096))])
        elif sub == "flood":
            pieces += self.framed_flood(tag, inp)
        elif sub == "heavy_post":
            # the largest messages allowed, a burst's worth: later histories are heavy
            pieces += [self.frame_piece(Obj([("type", "msg"), ("text", "h" * TEXT_MAX),
                                             ("cid", "%s.%d" % (tag, n))]))
                       for n in range(self.r.randrange(10, 50))]
        elif sub == "heavy_read":
            # the largest history pages, asked many times in one write, never read
            ask = json_bytes(Obj([("type", "history"), ("limit", 200)]))
            pieces.append(["repeat", self.r.randrange(20, 60), ["frame", ask, b"", None, None,
                                                                None]])
            inp["end"] = "stall"
            inp["hold"] = round(self.r.uniform(0.5, 2.0), 3)
        elif sub == "hello_flood":
            # many wrong-token hellos in one write (the auth slow-down's counter)
            hello = json_bytes(Obj([("type", "hello"), ("nick", "f" + tag), ("proto", 1),
                                    ("token", self.pick(["wrong-token-wrong-tok", ""]))]))
            pieces.append(["repeat", self.r.randrange(2, 1100),
                           ["frame", hello, b"", None, None, None]])
        if not writes:
            writes = [{"pieces": pieces}]
        if sub not in ("lengths", "garbage") and self.chance(0.9):
            piece, marker = self.sentinel_frame(tag)
            writes[-1]["pieces"].append(piece)
            inp["sentinel"] = marker
        if sub != "upload" and self.chance(0.08):
            # the whole stream, byte-mutated: valid prefixes followed by damage
            writes[-1]["pieces"] = [["mutate", writes[-1]["pieces"], self.r.getrandbits(32),
                                     self.r.randrange(1, 4)]]
        inp["writes"] = writes
        return inp

    def framed_upload(self, tag, pieces):
        """hello, upload, wait for upload_ready (its id becomes {{upload}}), chunks."""
        size = self.pick([1, 10, 100, 1000, 5000, 70000, 300000])
        data = self.r.randbytes(size)
        announce = Obj([("type", "upload"), ("name", self.pick(NAMES)), ("size", size),
                        ("cid", tag + ".u")])
        if self.chance(0.5):
            digest = hashlib.sha256(data).hexdigest()
            announce.append(("sha256", digest if self.chance(0.8) else digest[::-1]))
        if self.chance(0.3):
            announce.append(("mime", self.pick(MIMES)))
        if self.chance(0.15):
            announce.append(("to", "{{anchor}}"))
        if self.chance(0.2):
            announce.append(("text", self.text()))
        pieces.append(self.frame_piece(self.mutate_message(announce) if self.chance(0.1)
                                       else announce))
        first = {"pieces": pieces,
                 "await": ["upload", r'"upload":"(u[0-9a-f]+)"', 3.0]}
        chunks = []
        offset = 0
        step = self.pick([size, max(1, size // 3), 4096, 65536])
        while offset < size:
            part = data[offset:offset + step]
            header = Obj([("type", "chunk"), ("upload", "{{upload}}"), ("offset", offset)])
            r = self.r.random()
            if r < 0.05:
                header[2] = ("offset", offset + self.pick([1, -1, 10 ** 6]))
            elif r < 0.08:
                header.append(("last", True))
            elif r < 0.12:
                header = self.mutate_message(header)
            elif r < 0.14:
                part = part + b"extra"
            chunks.append(self.frame_piece(header, part))
            offset += len(part)
            if self.chance(0.05):
                chunks.append(self.frame_piece(Obj([("type", "upload_status"),
                                                    ("upload", "{{upload}}")])))
            if self.chance(0.03):
                chunks.append(self.frame_piece(Obj([("type", "upload_cancel"),
                                                    ("upload", "{{upload}}")])))
        if self.chance(0.1) and chunks:
            del chunks[self.r.randrange(len(chunks)):]      # leave a partial upload behind
        return [first, {"pieces": chunks}]

    def framed_downloads(self, tag):
        pieces = []
        for n in range(self.r.randrange(1, 4)):
            pieces.append(self.frame_piece(self.message("download", tag, n)))
            if self.chance(0.3):
                pieces.append(self.frame_piece(Obj([("type", "download_cancel"),
                                                    ("file", self.pick(["{{file}}",
                                                                        "{{pfile}}", 5])
                                                     )])))
        if self.chance(0.1):
            # many download/cancel pairs in one write (PROTOCOL.md: cancels are honoured)
            pair = [self.frame_piece(Obj([("type", "download"), ("file", "{{file}}")])),
                    self.frame_piece(Obj([("type", "download_cancel"), ("file", "{{file}}")]))]
            pieces.append(["repeat", self.r.randrange(2, 60), ["seq", pair]])
        return pieces

    def framed_lengths(self, tag):
        """Declared lengths at and over the limits, and frames that stop early."""
        pieces = []
        if self.chance(0.5):
            pieces.append(self.frame_piece(self.hello(tag)))
        head = json_bytes(Obj([("type", "ping"), ("t", tag)]))
        r = self.r.random()
        if r < 0.25:
            hlen = self.pick([0, 1, 7, FRAME_HEADER_MAX, FRAME_HEADER_MAX + 1, 2 ** 24 - 1,
                              2 ** 24, 2 ** 31, 2 ** 32 - 1, len(head) + 1, len(head) - 1])
            pieces.append(["frame", head, b"", hlen, None, None])
        elif r < 0.5:
            plen = self.pick([1, 100, FRAME_PAYLOAD_MAX, FRAME_PAYLOAD_MAX + 1, 2 ** 24,
                              2 ** 32 - 1])
            pieces.append(["frame", head, b"", None, plen, None])   # promised, never sent
        elif r < 0.65:
            body = self.r.randbytes(self.r.randrange(0, 200))
            pieces.append(["frame", head, body, None, None, None])  # payload on a ping
        elif r < 0.8:
            full = encode_frame(head)
            pieces.append(["frame", head, b"", None, None, self.r.randrange(1, len(full))])
        elif r < 0.9:
            big = self.pick([FRAME_HEADER_MAX, FRAME_HEADER_MAX + 1])
            text = Obj([("type", "ping"), ("t", "")])
            fixed = len(json_bytes(text))
            pieces.append(["frame", json_bytes(Obj([("type", "ping"),
                                                    ("t", "x" * (big - fixed))])),
                           b"", None, None, None])
        else:
            pieces.append(["frame", b"", b"", None, None, None])            # H = 0
        return pieces

    def framed_flood(self, tag, inp):
        r = self.r.random()
        if r < 0.5:
            ping = json_bytes(Obj([("type", "ping"), ("t", "p" * self.r.randrange(0, 400))]))
            inp["end"] = self.pick(["drop", "rst", "wait", "stall"])
            return [["repeat", self.r.randrange(10, 3000), ["frame", ping, b"", None, None,
                                                            None]]]
        if r < 0.75:
            m = json_bytes(Obj([("type", "history"), ("limit", 200)]))
            return [["repeat", self.r.randrange(2, 60), ["frame", m, b"", None, None, None]]]
        return [self.frame_piece(self.message("msg", tag, n))
                for n in range(self.r.randrange(10, 120))]

    # HTTP --------------------------------------------------------------------------------

    def base_headers(self):
        headers = [(b"Host", b"{{hostport}}"), (b"User-Agent", b"fuzz/1")]
        if self.chance(0.3):
            headers.append((b"Accept", b"*/*"))
        return headers

    def valid_request(self, tag):
        """(route name, request bytes) for a random route of PROTOCOL.md."""
        route = self.weighted({"page": 8, "healthz": 10, "pair": 5, "qr.svg": 3, "qr.png": 3,
                               "favicon": 4, "file": 20, "file_head": 5, "upload": 15,
                               "session": 5, "ws_plain": 3, "missing": 6, "method": 5})
        h = self.base_headers()
        method = b"GET"
        body = b""
        if route == "page":
            target = b"/"
        elif route == "healthz":
            target = b"/healthz"
        elif route in ("pair", "qr.svg", "qr.png"):
            target = b"/" + route.encode()
        elif route == "favicon":
            target = b"/favicon.ico"
        elif route in ("file", "file_head"):
            fid = self.pick([b"{{file}}", b"{{file}}", b"{{pfile}}", b"{{sfile}}",
                             b"f" + b"0" * 24, b"%7B%7D", b""])
            target = b"/files/" + fid + b"/" + self.pick([b"notes.txt", b"x", b"%C3%A9",
                                                          b"a%2Fb"])
            q = self.session_auth(h)
            if self.chance(0.3):
                q.append(b"inline=1")
            if q:
                target += b"?" + b"&".join(q)
            if route == "file_head":
                method = b"HEAD"
            if self.chance(0.4):
                h.append((b"Range", self.range_value()))
        elif route == "upload":
            return route, self.upload_request(tag, h)
        elif route == "session":
            return route, self.session_cookie_request()
        elif route == "ws_plain":
            target = b"/ws"
        elif route == "missing":
            target = self.pick([b"/nothing", b"/files", b"/files/", b"/index.html",
                                b"/healthz/", b"/%2e%2e/chat.sqlite3"])
        else:
            method = self.pick([b"OPTIONS", b"DELETE", b"PUT", b"PATCH", b"TRACE", b"POST"])
            target = self.pick([b"/", b"/healthz", b"/files"])
        if self.chance(0.5):
            h.append((b"Connection", b"close"))
        return route, http_request(method, target, h, body)

    def session_auth(self, headers):
        """How a request presents the anchor's session (PROTOCOL.md "Files over HTTP"): an
        Authorization header or the lanchat_session cookie; sometimes a wrong one, none,
        or the refused query-string form. Adds to `headers`; returns query fields."""
        way = self.weighted({"bearer": 60, "cookie": 20, "wrong": 6, "none": 4, "query": 10})
        if way == "bearer":
            headers.append((b"Authorization", b"Bearer {{session}}"))
        elif way == "cookie":
            headers.append((b"Cookie", self.pick([b"lanchat_session={{session}}",
                                                  b"a=1; lanchat_session={{session}}; b=2"])))
        elif way == "wrong":
            headers.append(self.pick([(b"Authorization", b"Bearer nope"),
                                      (b"Authorization", b"Basic {{session}}"),
                                      (b"Authorization", b"Bearer " + b"a" * 300),
                                      (b"Authorization", b"Bearer {{session}} {{session}}"),
                                      (b"Cookie", b"lanchat_session="),
                                      (b"Cookie", b"lanchat_session=\xff\xfe")]))
        elif way == "query":
            return [b"session={{session}}"]
        return []

    def session_cookie_request(self):
        """POST /session: the page trades its session for an HttpOnly cookie."""
        body = self.pick([b"{{session}}", b"{{session}}", b"", b"nope", b"{{session}}\n",
                          b"x" * 5000, b"\xff\xfe"])
        h = self.base_headers() + [(b"Content-Type", self.pick([b"text/plain",
                                                                 b"application/json"]))]
        # the length once {{session}} is filled in (welcome.session: 24 characters)
        h.append((b"Content-Length", b"%d" % len(body.replace(b"{{session}}",
                                                              b"s" * SESSION_CHARS))))
        if self.chance(0.5):
            h.append((b"Connection", b"close"))
        return http_request(self.pick([b"POST", b"POST", b"GET", b"PUT"]), b"/session", h, body)

    def range_value(self):
        n = ANCHOR_FILE_SIZE
        return self.pick([b"bytes=0-0", b"bytes=0-", b"bytes=-1", b"bytes=-%d" % n,
                          b"bytes=%d-" % (n - 1), b"bytes=%d-" % n, b"bytes=5-1",
                          b"bytes=0-%d" % (n * 10), b"bytes=1-2,4-5", b"bytes=", b"bytes=-",
                          b"items=0-1", b"bytes=99999999999999999999-", b"bytes=0-1\x00",
                          b"bytes = 1 - 2", b"bytes=-0", b"bytes=0x10-"])

    def upload_request(self, tag, h):
        size = self.pick([0, 1, 100, 3000, 40000])
        body = self.r.randbytes(size)
        h = list(h)
        q = self.session_auth(h) + [
            b"name=" + urllib.parse.quote(self.pick(NAMES), safe="",
                                          errors="surrogatepass").encode(),
            b"cid=" + tag.encode() + b".h"]
        if self.chance(0.2):
            q.append(b"to={{anchor}}")
        if self.chance(0.2):
            digest = hashlib.sha256(body).hexdigest().encode()
            q.append(b"sha256=" + (digest if self.chance(0.7) else b"0" * 64))
        if self.chance(0.2):
            q.append(b"text=" + urllib.parse.quote(self.text(), errors="surrogatepass")
                     .encode())
        if self.chance(0.05):
            q.append(b"cid=" + b"c" * 100)
        if self.chance(0.7):
            h.append((b"Content-Type", self.pick(MIMES).encode("utf-8", "surrogatepass")))
        r = self.r.random()
        if r < 0.8:
            h.append((b"Content-Length", str(size).encode()))
        elif r < 0.87:
            h.append((b"Content-Length", str(size + self.pick([1, 100, 10 ** 6])).encode()))
        elif r < 0.93:
            h.append((b"Transfer-Encoding", b"chunked"))
            body = self.chunked_body(body)
        if self.chance(0.1):
            h.append((b"Expect", b"100-continue"))
        if self.chance(0.5):
            h.append((b"Connection", b"close"))
        return http_request(self.pick([b"POST", b"POST", b"PUT"]), b"/files?" + b"&".join(q),
                            h, body)

    def chunked_body(self, body):
        out = b""
        pos = 0
        while pos < len(body):
            n = self.r.randrange(1, 5000)
            out += b"%x\r\n" % len(body[pos:pos + n]) + body[pos:pos + n] + b"\r\n"
            pos += n
        return out + b"0\r\n\r\n"

    def bad_chunked(self):
        return self.pick([b"zz\r\nhello\r\n0\r\n\r\n", b"ffffffffffffffff\r\nx",
                          b"5\r\nhelloX0\r\n\r\n", b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
                          b"-1\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n", b"5 \r\nhello\r\n0\r\n\r\n",
                          b"1" * 2000 + b"\r\n", b"0\r\n" + b"X: y\r\n" * 150 + b"\r\n",
                          b"5\r\nhel", b"\r\n\r\n"])

    def mutate_request(self, data):
        """A request line, header or body damaged in one of the ways servers get wrong."""
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        r = self.r.random()
        if r < 0.15:
            parts = lines[0].split(b" ")
            which = self.r.randrange(3)
            choices = [[b"", b"get", b"G ET", b"GET\x00", b"A" * 9000, b"\xc3\xa9", b"PRI",
                        b"CONNECT", b"GET\t"],
                       [b"*", b"http://127.0.0.1/", b"//x", b"/%", b"/%zz", b"/%00",
                        b"/files/%2e%2e/x", b"/" + b"a" * 9000, b"/\xc3\xa9",
                        b"/?" + b"&".join(b"a%d=1" % i for i in range(150)), b"", b"/ws#f",
                        b"/healthz?x=%ZZ&&&=", b"/files/{{file}}/x?session={{session}}",
                        b"/files/{{file}}/x?inline=1&inline=0", b"/session?x"],
                       [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1",
                        b"HTTP/11", b"", b"HTTP/1.1 ", b"HTTP/1.1\x00", b"HTTP/9.9"]]
            while len(parts) < 3:
                parts.append(b"")
            parts[which] = self.pick(choices[which])
            lines[0] = b" ".join(parts)
        elif r < 0.55:
            extra = self.pick([
                b"Content-Length: -1", b"Content-Length: 1e3", b"Content-Length: 5, 5",
                b"Content-Length: 99999999999999999999", b"Content-Length:  10 ",
                b"Content-Length: 0\r\nContent-Length: 7", b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked\r\n"
                b"Content-Length: 3", b"NoColonHere", b"Host : x", b" folded: value",
                b"X: a\x00b", b"X-Big: " + b"b" * 20000, b"Expect: 100-continue",
                b"Connection: keep-alive, Upgrade", b"Upgrade: h2c\r\nConnection: Upgrade",
                b"Upgrade: websocket", b"Origin: http://evil.example",
                b"Range: " + self.range_value(), b"Host: a\r\nHost: b", b"Cookie: " + b"c" * 9000,
                b"Host: [::1", b"Host: 127.0.0.1:[", b"Host: [::1]:x",
                b"X-\xc3\xa9: \xff\xfe", b":authority: x", b"Content-Type: \xff",
                b"\r\n".join(b"X-%d: v" % i for i in range(120))])
            lines.insert(self.r.randrange(1, len(lines) + 1), extra)
            if b"chunked" in extra and self.chance(0.7):
                body = self.bad_chunked() if self.chance(0.6) else self.chunked_body(b"hi")
        elif r < 0.65 and len(lines) > 1:
            del lines[self.r.randrange(1, len(lines))]            # e.g. no Host
        elif r < 0.75:
            eol = self.pick([b"\n", b"\r", b"\r\r\n"])
            return eol.join(lines) + eol + eol + body
        else:
            return self.mutate_bytes(data)
        return b"\r\n".join(lines) + sep + body

    def http(self, tag):
        sub = self.weighted({"route": 35, "mutated": 25, "pipeline": 12, "range": 8,
                             "chunked": 6, "slow": 4, "prefix_garbage": 5, "upload_trunc": 5})
        inp = {"sub": sub, "tag": tag}
        writes = []
        if sub == "route":
            _, req = self.valid_request(tag)
            writes.append({"pieces": [["raw", req]]})
        elif sub == "mutated":
            _, req = self.valid_request(tag)
            writes.append({"pieces": [["raw", self.mutate_request(req)]]})
        elif sub == "pipeline":
            reqs = []
            for _ in range(self.r.randrange(2, 7)):
                _, req = self.valid_request(tag)
                req = req.replace(b"Connection: close\r\n", b"")
                reqs.append(self.mutate_request(req) if self.chance(0.2) else req)
            writes.append({"pieces": [["raw", b"".join(reqs)]]})
        elif sub == "range":
            h = self.base_headers() + [(b"Range", self.range_value()), (b"Connection", b"close")]
            if self.chance(0.3):
                h.append((b"If-Range", b'"x"'))
            q = self.session_auth(h)
            req = http_request(self.pick([b"GET", b"HEAD"]), b"/files/{{file}}/notes.txt" +
                               (b"?" + b"&".join(q) if q else b""), h)
            writes.append({"pieces": [["raw", req]]})
        elif sub == "chunked":
            h = self.base_headers() + [(b"Transfer-Encoding", b"chunked")]
            self.session_auth(h)
            target = self.pick([b"/", b"/healthz", b"/files?name=a&cid=" + tag.encode(), b"/ws",
                                b"/session"])
            body = self.bad_chunked() if self.chance(0.6) else self.chunked_body(b"hello")
            req = http_request(self.pick([b"GET", b"POST"]), target, h, body)
            writes.append({"pieces": [["raw", req]]})
        elif sub == "slow":
            _, req = self.valid_request(tag)
            size = self.pick([1, 2, 3, 7])
            writes.append({"pieces": [["raw", req]],
                           "split": list(range(size, min(len(req), 40 * size), size)),
                           "gap": round(self.r.uniform(0.005, 0.03), 4)})
        elif sub == "prefix_garbage":
            _, req = self.valid_request(tag)
            req = req.replace(b"Connection: close\r\n", b"")
            writes.append({"pieces": [["raw", req + self.r.randbytes(self.r.randrange(1,
                                                                                       3000))]]})
        else:
            h = self.base_headers()
            req = self.upload_request(tag, h)
            writes.append({"pieces": [["raw", req[:self.r.randrange(1, len(req))]]]})
        inp["writes"] = writes
        return inp

    # WebSocket ---------------------------------------------------------------------------

    def ws_key(self):
        return base64.b64encode(self.r.randbytes(16))

    def handshake(self):
        h = [(b"Host", b"{{hostport}}"), (b"Upgrade", b"websocket"),
             (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", self.ws_key()),
             (b"Sec-WebSocket-Version", b"13")]
        if self.chance(0.4):
            h.append((b"Origin", b"http://{{hostport}}"))
        return http_request(b"GET", b"/ws", h)

    def mask(self):
        r = self.r.random()
        if r < 0.97:
            return self.r.randbytes(4)
        if r < 0.985:
            return b"\0\0\0\0"
        return None                                   # unmasked: 1002

    def ws_text(self, obj_or_bytes, mutate=0.0):
        data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else \
            json_bytes(obj_or_bytes, self.chance(0.9))
        if mutate and self.chance(mutate):
            data = self.mutate_bytes(data)
        return ["ws", True, 0, 1, self.mask(), data, None, None, None]

    def ws_messages(self, tag, count, valid_share):
        pieces = []
        for n in range(count):
            mtype = self.weighted(self.POST_HELLO_TYPES)
            if mtype == "_other":
                mtype = self.pick(list(self.spec))
            m = self.message(mtype, tag, n)
            if not self.chance(valid_share):
                m = self.mutate_message(m) if self.chance(0.8) else m
                pieces.append(self.ws_text(m, mutate=0.2))
            else:
                pieces.append(self.ws_text(m))
        return pieces

    def ws_control(self):
        r = self.r.random()
        if r < 0.35:
            return ["ws", True, 0, 9, self.mask(), self.r.randbytes(self.r.randrange(0, 126)),
                    None, None, None]
        if r < 0.5:
            return ["ws", True, 0, 10, self.mask(), b"unsolicited", None, None, None]
        if r < 0.6:
            return ["ws", True, 0, 9, self.mask(), b"x" * 126, None, None, None]  # too long
        if r < 0.7:
            return ["ws", False, 0, 9, self.mask(), b"frag", None, None, None]    # fragmented
        return self.ws_close()

    def ws_close(self):
        code = self.pick([1000, 1001, 1002, 1003, 999, 0, 1004, 1005, 1006, 1007, 1011, 1015,
                          1016, 2999, 3000, 4999, 5000, 65535])
        r = self.r.random()
        if r < 0.1:
            payload = b""
        elif r < 0.2:
            payload = b"\x03"                         # one byte: invalid
        elif r < 0.3:
            payload = struct.pack(">H", code) + b"\xff\xfe"     # reason not UTF-8
        else:
            payload = struct.pack(">H", code) + self.unicode_text(self.r.randrange(0, 20)) \
                .encode("utf-8", "surrogatepass")[:123]
        return ["ws", True, 0, 8, self.mask(), payload, None, None, None]

    def ws_fragments(self, tag):
        """A message in fragments, with control frames between, or fragmentation gone
        wrong (continuation without a start, a new message inside one, empty frames)."""
        m = self.message(self.pick(["msg", "ping", "history"]), tag, 0)
        data = json_bytes(m, False)
        pieces = []
        r = self.r.random()
        if r < 0.5:
            cuts = sorted({self.r.randrange(0, len(data) + 1)
                           for _ in range(self.r.randrange(1, 6))})
            parts = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
            for i, part in enumerate(parts):
                pieces.append(["ws", i == len(parts) - 1, 0, 1 if i == 0 else 0, self.mask(),
                               part, None, None, None])
                if self.chance(0.2):
                    pieces.append(["ws", True, 0, 9, self.mask(), b"mid", None, None, None])
        elif r < 0.6:
            pieces.append(["ws", True, 0, 0, self.mask(), data, None, None, None])
        elif r < 0.7:
            pieces.append(["ws", False, 0, 1, self.mask(), data[:5], None, None, None])
            pieces.append(["ws", True, 0, 1, self.mask(), data, None, None, None])
        elif r < 0.85:
            pieces.append(["ws", False, 0, 1, self.mask(), b"", None, None, None])
            empty = ["ws", False, 0, 0, self.mask(), b"", None, None, None]
            pieces.append(["repeat", self.r.randrange(10, 3000), empty])
            pieces.append(["ws", True, 0, 0, self.mask(), data, None, None, None])
        else:
            pieces.append(["ws", False, 0, 1, self.mask(), data, None, None, None])
            tiny = ["ws", False, 0, 0, self.mask(), b"  ", None, None, None]
            pieces.append(["repeat", self.r.randrange(10, 2000), tiny])
            pieces.append(["ws", True, 0, 0, self.mask(), b"", None, None, None])
        return pieces

    def ws_bad_frame(self):
        r = self.r.random()
        payload = b'{"type":"ping"}'
        if r < 0.2:
            return ["ws", True, self.r.randrange(1, 8), 1, self.mask(), payload, None, None,
                    None]
        if r < 0.4:
            return ["ws", True, 0, self.pick([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), self.mask(),
                    payload, None, None, None]
        if r < 0.5:
            return ["ws", True, 0, 1, None, payload, None, None, None]
        if r < 0.6:
            return ["ws", True, 0, 1, self.mask(), payload, None, self.pick([16, 64]), None]
        if r < 0.75:
            return ["ws", True, 0, self.pick([1, 2]), self.mask(), b"",
                    self.pick([2 ** 63, 2 ** 64 - 1, 2 ** 40, WS_MESSAGE_MAX + 1,
                               WS_MESSAGE_MAX, 200000]), 64, None]
        if r < 0.85:
            return ["ws", True, 0, 1, self.mask(), self.pick([b"\xff\xfe", b"\xed\xa0\x80",
                                                              b"\xc0\x80", b"\xf4\x90\x80\x80",
                                                              b'{"type":"\xe9"}']),
                    None, None, None]
        if r < 0.93:
            return ["ws", True, 0, 2, self.mask(), self.r.randbytes(self.r.randrange(0, 300)),
                    None, None, None]
        full = encode_ws(True, 0, 1, b"abcd", payload)
        return ["ws", True, 0, 1, self.mask(), payload, None, None,
                self.r.randrange(1, len(full))]

    def ws(self, tag):
        sub = self.weighted({"chat": 40, "anon": 14, "control": 12, "fragments": 12,
                             "bad_frames": 12, "handshake": 7, "flood": 3})
        inp = {"sub": sub, "tag": tag}
        shake = self.handshake()
        if sub == "handshake":
            shake = self.mutate_request(shake) if self.chance(0.6) else self.pick([
                shake.replace(b"13", b"8"), shake.replace(b"Upgrade: websocket", b"Upgrade: ws"),
                shake.replace(b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: x"),
                shake.replace(b"GET", b"POST"), shake.replace(b"HTTP/1.1", b"HTTP/1.0"),
                shake.replace(b"\r\n\r\n", b"\r\nOrigin: http://evil.example\r\n\r\n")])
        first = {"pieces": [["raw", shake]]}
        if self.chance(0.3):
            first["await"] = ["101", r"HTTP/1\.1 (101)", 3.0]
        pieces = []
        if sub in ("chat", "control", "fragments", "flood") or (sub == "bad_frames" and
                                                                  self.chance(0.5)):
            hello = self.hello(tag)
            if sub == "chat" and self.chance(0.08):
                hello = self.mutate_message(hello)
            pieces.append(self.ws_text(hello))
        if sub == "chat":
            pieces += self.ws_messages(tag, self.r.randrange(1, 9), 0.6)
        elif sub == "anon":
            pieces += self.ws_messages(tag, self.r.randrange(1, 5), 0.5)
        elif sub == "control":
            for _ in range(self.r.randrange(1, 5)):
                pieces.append(self.ws_control())
                if self.chance(0.5):
                    pieces += self.ws_messages(tag, 1, 0.8)
        elif sub == "fragments":
            pieces += self.ws_fragments(tag)
        elif sub == "bad_frames":
            pieces += self.ws_messages(tag, self.r.randrange(0, 3), 0.8)
            pieces.append(self.ws_bad_frame())
        elif sub == "flood":
            ping = ["ws", True, 0, 9, self.mask(), b"p" * self.r.randrange(0, 125),
                    None, None, None]
            pieces.append(["repeat", self.r.randrange(10, 2000), ping])
            inp["end"] = self.pick(["drop", "rst", "wait", "stall"])
        else:
            pieces += self.ws_messages(tag, 2, 0.8)
        if sub not in ("bad_frames", "handshake") and self.chance(0.9):
            marker = "~end~%s~" % tag
            pieces.append(["ws", True, 0, 9, self.mask(), marker.encode(), None, None, None])
            inp["sentinel"] = marker
        if self.chance(0.1):
            pieces.append(self.ws_close())
        if "await" in first:
            inp["writes"] = [first, {"pieces": pieces}]
        else:
            first["pieces"] += pieces
            inp["writes"] = [first]
        return inp

    # raw -----------------------------------------------------------------------------------

    def raw(self, tag):
        sub = self.weighted({"nonletter": 30, "random": 20, "empty": 15, "silent": 10,
                             "tls": 8, "h2": 7, "letters": 10})
        inp = {"sub": sub, "tag": tag}
        if sub == "nonletter":
            first = bytes([self.pick([0x01, 0x16, 0x7F, 0x80, 0xFF, 0x20, 0x0D, 0x0A, 0x7B,
                                      0x2F, 0x30, 0xC3])])
            data = first + self.r.randbytes(self.r.randrange(0, 500))
        elif sub == "random":
            data = self.r.randbytes(self.r.randrange(1, 5000))
        elif sub in ("empty", "silent"):
            data = b""
            inp["end"] = self.pick(["drop", "rst", "fin"]) if sub == "empty" else "hold"
            if sub == "silent":
                inp["hold"] = round(self.r.uniform(0.3, 1.5), 3)
        elif sub == "tls":
            data = bytes.fromhex("160301020001000200fc0303") + self.r.randbytes(300)
        elif sub == "h2":
            data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + self.r.randbytes(self.r.randrange(0,
                                                                                          100))
        else:
            data = bytes(self.r.choice(b"ABCxyz \r\n:/") for _ in range(self.r.randrange(1,
                                                                                       400)))
        inp["writes"] = [{"pieces": [["raw", data]]}] if data else []
        return inp


# ---------------------------------------------------------------------------------------
# Inputs as data: one JSON object per input, saved for --replay
#   {"id", "kind", "sub", "tag", "src", "end", "hold"?, "sentinel"?,
#    "writes": [{"pieces": [...], "split"?: [offsets], "gap"?: s, "await"?: [name, regex, s]}]}


def to_jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def from_jsonable(value):
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def input_preview(inp, values=None, limit=300):
    """The first bytes an input sends, for a report."""
    data = b""
    for write in inp.get("writes", []):
        for piece in write["pieces"]:
            data += build_piece(piece, values or {})
            if len(data) > limit:
                return data[:limit]
    return data


# ---------------------------------------------------------------------------------------
# Reading the answers: small incremental parsers that classify what the server sent back


class Replies:
    """Classifies the bytes one connection received: framed frames, or HTTP responses
    (then WebSocket frames after a 101). `events` are short strings such as "welcome",
    "error:bad_json", "http:404:not_found", "ws:text:pong", "ws:close:1002", "sentinel"."""

    def __init__(self, transport, tag, marker):
        self.transport = transport     # "framed" | "http"
        self.tag = tag
        self.marker = marker
        self.buf = bytearray()
        self.events = []
        self.small = []                # decoded small headers (text) for awaits
        self.sentinel = False
        self.upgraded = False
        self.broken = False            # stopped parsing: the answer was not what we expect
        self.http_body_left = 0
        self.http_status = None
        self.http_body = bytearray()

    def add(self, event):
        if len(self.events) < EVENTS_KEPT:
            self.events.append(event)

    def feed(self, data):
        if self.broken:
            return
        self.buf += data
        if len(self.buf) > 4 * FRAME_PAYLOAD_MAX:
            self.broken = True
            self.buf.clear()
            return
        if self.transport == "framed":
            self._framed()
        elif self.upgraded:
            self._ws()
        else:
            self._http()

    def _message(self, raw, prefix=""):
        """One JSON message from the server (a frame header or a WebSocket text)."""
        obj = None
        if len(raw) <= SMALL_HEADER:
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
        if not isinstance(obj, dict):
            # too big to decode (a welcome, a 16 KiB message): the server's own encoding
            # puts "type" first and "cid" near the end
            m = re.match(rb'\{"type":"([a-z_]+)"', raw[:100])
            kind = m.group(1).decode() if m else "?"
            if kind == "msg":
                own = b'"cid":"%s.' % self.tag.encode() in raw[-400:]
                kind = "ack" if own else "msg"
            self.add(prefix + kind)
            return
        kind = obj.get("type")
        if kind not in BROADCASTS and len(self.small) < 64 and len(raw) <= SMALL_HEADER:
            self.small.append(raw.decode("utf-8", "replace"))
        if kind in ("pong", "ping") and self.marker and obj.get("t") == self.marker:
            self.sentinel = True
            self.add(prefix + "sentinel")
        elif kind == "error":
            self.add("%serror:%s" % (prefix, obj.get("code")))
        elif kind == "msg":
            cid = obj.get("cid")
            own = isinstance(cid, str) and cid.startswith(self.tag + ".")
            self.add(prefix + ("ack" if own else "msg"))
        else:
            self.add(prefix + str(kind))

    def _framed(self):
        buf = self.buf
        while len(buf) >= 8:
            hlen, plen = struct.unpack_from(">II", buf)
            if hlen > 16 * FRAME_HEADER_MAX or plen > 2 * FRAME_PAYLOAD_MAX:
                self.broken = True
                self.add("garbled")
                return
            if len(buf) < 8 + hlen + plen:
                return
            self._message(bytes(buf[8:8 + hlen]))
            del buf[:8 + hlen + plen]

    def _http(self):
        buf = self.buf
        while True:
            if self.http_body_left and buf[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 ") and \
                    not self.http_body:
                # the answer to HEAD: Content-Length without the body
                self.http_body_left = 0
                self._http_done()
                continue
            if self.http_body_left:
                take = min(self.http_body_left, len(buf))
                if len(self.http_body) < 4096:
                    self.http_body += buf[:min(take, 4096 - len(self.http_body))]
                del buf[:take]
                self.http_body_left -= take
                if self.http_body_left:
                    return
                self._http_done()
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 64 * 1024:
                    self.broken = True
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[:end + 4]
            m = re.match(r"HTTP/1\.[01] (\d{3})", head)
            if not m:
                self.add("http:garbled")
                self.broken = True
                return
            status = int(m.group(1))
            if status == 100:
                self.add("http:100")
                continue
            if status == 101:
                self.add("http:101")
                self.upgraded = True
                self._ws()
                return
            length = re.search(r"(?im)^content-length:\s*(\d+)", head)
            self.http_status = status
            self.http_body = bytearray()
            self.http_body_left = int(length.group(1)) if length else 0
            if not self.http_body_left:
                self._http_done()

    def finish(self):
        """The connection ended: an answer whose body did not all come (or the answer to a
        HEAD, which has none) still counts."""
        if self.transport == "http" and not self.upgraded and self.http_status is not None:
            self._http_done()

    def _http_done(self):
        code = None
        if self.http_body[:1] == b"{":
            try:
                code = json.loads(bytes(self.http_body)).get("error")
            except (ValueError, AttributeError):
                code = None
        self.add("http:%d" % self.http_status + (":%s" % code if code else ""))
        self.http_status = None

    def _ws(self):
        buf = self.buf
        while len(buf) >= 2:
            opcode = buf[0] & 15
            n = buf[1] & 127
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = struct.unpack_from(">H", buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = struct.unpack_from(">Q", buf, 2)[0]
                pos = 10
            if n > 2 * WS_MESSAGE_MAX:
                self.broken = True
                self.add("ws:garbled")
                return
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos:pos + n])
            del buf[:pos + n]
            if opcode == 1:
                self._message(payload, "ws:text:")
            elif opcode == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.add("ws:close:%d" % code)
            elif opcode == 10:
                if self.marker and payload == self.marker.encode():
                    self.sentinel = True
                    self.add("sentinel")
                else:
                    self.add("ws:pong")
            else:
                self.add("ws:op%d" % opcode)


def answer_reached(event, joined_input):
    """Does one answer show the input got past the first parse? (see the module doc)"""
    if event.startswith("ws:text:"):
        event = event[8:]
    elif event.startswith("ws:close:"):
        return int(event[9:]) in WS_CLOSE_REACHED
    elif event == "ws:pong":
        return True
    if event in ("sentinel", "garbled", "?", "http:101", "http:100") or event in BROADCASTS:
        return False
    if event.startswith("error:"):
        return event[6:] not in PARSE_ERRORS
    if event.startswith("http:"):
        parts = event.split(":")
        if not parts[1].isdigit():
            return False
        status = int(parts[1])
        if status < 400:
            return True
        return len(parts) > 2 and not parts[2].startswith("http_")
    if event == "welcome":
        return not joined_input
    return True


# ---------------------------------------------------------------------------------------
# Driving many connections at once (one selectors loop, no threads)


class Live:
    """One input being played: its socket, where it is in its script, what came back."""

    def __init__(self, inp, values, now):
        self.inp = inp
        self.values = dict(values)          # placeholders; an await adds {{upload}}
        self.sock = None
        self.state = "connect"
        self.started = now
        self.write_index = 0
        self.chunks = collections.deque()   # (bytes, gap after) of the current write
        self.next_at = now
        self.awaiting = None                # (name, compiled regex, deadline)
        self.pending_await = None           # the await of the write being sent
        self.sent_all_at = None
        self.last_rx = None
        self.hold_until = None
        self.rx_total = 0
        self.tx_total = 0
        self.outcome = None
        self.want_write = False
        self.registered = False             # with the selector
        # the server's rule (PROTOCOL.md): a letter first is HTTP, anything else is answered
        # in frames (0x00: the framed protocol; other bytes: a bad_frame error frame)
        transport = "http" if self.first_byte().isalpha() else "framed"
        self.replies = Replies(transport, inp.get("tag", ""), inp.get("sentinel"))
        self.raw_rx = bytearray()

    def first_byte(self):
        for write in self.inp.get("writes", []):
            for piece in write["pieces"]:
                data = build_piece(piece, self.values)
                if data:
                    return data[:1]
        return b""

    def expand_write(self, now):
        """Build the next write's bytes (placeholders filled now) and cut it up."""
        write = self.inp["writes"][self.write_index]
        self.write_index += 1
        data = b"".join(build_piece(p, self.values) for p in write["pieces"])
        cuts = [c for c in write.get("split", []) if 0 < c < len(data)]
        gap = write.get("gap", 0.0)
        start = 0
        for c in cuts + [len(data)]:
            if c > start:
                self.chunks.append((data[start:c], gap))
                start = c
        if write.get("await"):
            name, pattern, timeout = write["await"]
            self.pending_await = (name, re.compile(pattern), timeout)
        else:
            self.pending_await = None

    def search_text(self):
        """Where an await looks: the server's small answers of its own (broadcasts left
        out), and the first raw bytes (an HTTP status line)."""
        return "\n".join(self.replies.small) + "\n" + bytes(self.raw_rx[:4096]).decode("latin-1")

    def expected_seconds(self):
        """About how long the script takes at least (gaps, awaits, holds): the longest
        inputs of a batch start first."""
        total = float(self.inp.get("hold", 0))
        for write in self.inp.get("writes", []):
            total += write.get("gap", 0) * (len(write.get("split", [])) + 1)
            if write.get("await"):
                total += 0.05
        return total


class Driver:
    """Plays a list of inputs against 127.0.0.1:port, `concurrency` at a time."""

    def __init__(self, port, values_fn, concurrency, sampler=None):
        self.port = port
        self.values_fn = values_fn      # -> current placeholder values (bytes)
        self.concurrency = concurrency
        self.sampler = sampler
        self.sel = selectors.DefaultSelector()

    def close(self):
        self.sel.close()

    def run(self, inputs):
        values = self.values_fn()
        plays = [Live(inp, values, 0.0) for inp in inputs]
        plays.sort(key=Live.expected_seconds, reverse=True)
        pending = collections.deque(plays)
        live = set()
        results = []
        last_sample = 0.0
        while pending or live:
            now = time.monotonic()
            while pending and len(live) < self.concurrency:
                conn = pending.popleft()
                conn.started = conn.next_at = now
                self.start(conn, now)
                if conn.outcome:
                    results.append(self.finish(conn))
                else:
                    live.add(conn)
            wait = 0.02              # drain and hold deadlines are checked this often
            for conn in live:
                if conn.chunks and conn.state == "send":
                    wait = min(wait, max(0.0, conn.next_at - now))
            for key, mask in self.sel.select(wait):
                conn = key.data
                if conn.outcome:
                    continue
                if mask & selectors.EVENT_READ:
                    self.on_readable(conn)
                if mask & selectors.EVENT_WRITE and not conn.outcome:
                    self.on_writable(conn, time.monotonic())
            now = time.monotonic()
            for conn in list(live):
                if not conn.outcome:
                    self.tick(conn, now)
                if conn.outcome:
                    live.discard(conn)
                    results.append(self.finish(conn))
            if self.sampler and now - last_sample >= SAMPLE_EVERY:
                last_sample = now
                self.sampler()
        return results

    # -- connection steps ----------------------------------------------------------------

    def start(self, conn, now):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        # no Nagle: a write cut in pieces reaches the server as pieces
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if conn.inp.get("end") == "stall":
            # a small window: what the server sends to a reader that stopped stays with it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.bind((conn.inp.get("src", "127.0.0.1"), 0))
            err = sock.connect_ex(("127.0.0.1", self.port))
        except OSError as exc:
            sock.close()
            conn.outcome = "local_error:%s" % errno.errorcode.get(exc.errno, exc.errno)
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            conn.outcome = "connect_refused" if err == errno.ECONNREFUSED else \
                "local_error:%s" % errno.errorcode.get(err, err)
            return
        conn.sock = sock
        conn.want_write = conn.registered = True
        self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def set_write_interest(self, conn, want):
        if conn.want_write != want and conn.registered:
            conn.want_write = want
            self.sel.modify(conn.sock, selectors.EVENT_READ |
                            (selectors.EVENT_WRITE if want else 0), conn)

    def on_writable(self, conn, now):
        if conn.state == "connect":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                conn.outcome = "connect_refused" if err == errno.ECONNREFUSED else \
                    "connect_error:%s" % errno.errorcode.get(err, err)
                return
            conn.state = "send"
        self.pump(conn, now)

    def on_readable(self, conn):
        try:
            data = conn.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            conn.outcome = "reset"
            return
        except OSError as exc:
            conn.outcome = "recv_error:%s" % errno.errorcode.get(exc.errno, exc.errno)
            return
        if not data:
            conn.outcome = "closed"
            return
        conn.rx_total += len(data)
        conn.last_rx = time.monotonic()
        if len(conn.raw_rx) < RX_KEEP:
            conn.raw_rx += data[:RX_KEEP - len(conn.raw_rx)]
        conn.replies.feed(data)
        if conn.replies.sentinel and conn.state == "drain":
            conn.outcome = "answered"

    def pump(self, conn, now):
        """Send what is due; move through the script."""
        while conn.state == "send" and not conn.outcome:
            if conn.awaiting:
                name, regex, deadline = conn.awaiting
                text = conn.search_text()
                m = regex.search(text)
                if m:
                    conn.values[name] = m.group(1).encode()
                elif now < deadline and '"type":"error"' not in text:
                    self.set_write_interest(conn, False)
                    return      # not yet (after an error answer it will not come at all)
                conn.awaiting = None
            if conn.chunks:
                if now < conn.next_at:
                    self.set_write_interest(conn, False)
                    return
                data, gap = conn.chunks[0]
                try:
                    sent = conn.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    self.set_write_interest(conn, True)
                    return
                except (BrokenPipeError, ConnectionResetError):
                    conn.outcome = "closed_while_sending"
                    return
                except OSError as exc:
                    conn.outcome = "send_error:%s" % errno.errorcode.get(exc.errno, exc.errno)
                    return
                conn.tx_total += sent
                if sent < len(data):
                    conn.chunks[0] = (data[sent:], gap)
                    self.set_write_interest(conn, True)
                    return
                conn.chunks.popleft()
                conn.next_at = now + gap
                if not conn.chunks and conn.pending_await:
                    name, regex, timeout = conn.pending_await
                    conn.awaiting = (name, regex, now + timeout)
                    conn.pending_await = None
                continue
            if conn.write_index < len(conn.inp.get("writes", [])):
                conn.expand_write(now)
                if not conn.chunks and conn.pending_await:
                    name, regex, timeout = conn.pending_await
                    conn.awaiting = (name, regex, now + timeout)
                    conn.pending_await = None
                continue
            self.end_script(conn, now)
        if conn.state != "send":
            self.set_write_interest(conn, False)

    def end_script(self, conn, now):
        end = conn.inp.get("end", "wait")
        conn.sent_all_at = now
        if end == "rst":
            conn.outcome = "rst"
        elif end == "drop":
            conn.outcome = "dropped"
        elif end in ("hold", "stall"):
            conn.state = "hold"
            conn.hold_until = now + min(2.0, float(conn.inp.get("hold", 1.0)))
            if end == "stall":              # connected, silent, and reading nothing
                self.sel.unregister(conn.sock)
                conn.registered = False
        else:
            if end == "fin":
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            conn.state = "drain"
            if conn.replies.sentinel:
                conn.outcome = "answered"

    def tick(self, conn, now):
        if now - conn.started > INPUT_HARD_LIMIT:
            conn.outcome = "timeout"
            return
        if conn.state == "connect":
            if now - conn.started > CONNECT_TIMEOUT:
                conn.outcome = "connect_timeout"
            return
        if conn.state == "send":
            self.pump(conn, now)
            return
        if conn.state == "hold":
            if now >= conn.hold_until:
                conn.outcome = "stalled" if conn.inp.get("end") == "stall" else "held"
            return
        # drain: wait for the answers
        quiet_for = now - max(conn.last_rx or 0.0, conn.sent_all_at)
        if conn.replies.sentinel:
            conn.outcome = "answered"
        elif now - conn.sent_all_at > INPUT_TIMEOUT:
            conn.outcome = "timeout"
        elif conn.inp.get("sentinel"):
            # the sentinel's answer says everything before it was handled; a stream the
            # server stopped reading (a promised payload, garbage) gets it never
            if now - conn.sent_all_at > SENTINEL_WAIT:
                conn.outcome = "no_sentinel" if conn.last_rx else "no_answer"
        elif conn.last_rx is not None and quiet_for > QUIET_AFTER_DATA:
            conn.outcome = "quiet"
        elif conn.last_rx is None and quiet_for > NO_ANSWER_WAIT:
            conn.outcome = "no_answer"

    def finish(self, conn):
        sock = conn.sock
        if sock is not None:
            if conn.registered:
                self.sel.unregister(sock)
            if conn.outcome in ("rst", "stalled"):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            sock.close()
        conn.replies.finish()
        return Result(conn)


class Result:
    __slots__ = ("inp", "outcome", "events", "rx", "tx", "seconds", "upgraded")

    def __init__(self, conn):
        self.inp = conn.inp
        self.outcome = conn.outcome
        self.events = conn.replies.events
        self.upgraded = conn.replies.upgraded
        self.rx = conn.rx_total
        self.tx = conn.tx_total
        self.seconds = time.monotonic() - conn.started


# ---------------------------------------------------------------------------------------
# A small blocking client for the framed protocol (the anchor and the ordinary-client check)


class FramedClient:
    def __init__(self, port, timeout=10.0, source="127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = bytearray()

    def send(self, header, payload=b""):
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        self.sock.sendall(encode_frame(raw, payload))

    def recv(self, deadline):
        while True:
            if len(self.buf) >= 8:
                hlen, plen = struct.unpack_from(">II", self.buf)
                if len(self.buf) >= 8 + hlen + plen:
                    header = json.loads(bytes(self.buf[8:8 + hlen]))
                    del self.buf[:8 + hlen + plen]
                    return header
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data

    def wait_for(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while True:
            header = self.recv(deadline)
            if predicate(header):
                return header

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class CheckFailed(Exception):
    """The ordinary client could not chat: .kind is "hang" or "refused"."""

    def __init__(self, kind, detail):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def chat_round_trip(port, token, nick, timeout):
    """Connect, hello, msg, wait for the acknowledgement — what every user does."""
    deadline = time.monotonic() + timeout
    try:
        c = FramedClient(port, timeout=timeout)
    except (socket.timeout, TimeoutError):
        raise CheckFailed("hang", "no connection within %.0f s" % timeout) from None
    except OSError as exc:
        raise CheckFailed("refused", "cannot connect: %s" % exc) from None
    step = "welcome"
    try:
        hello = {"type": "hello", "nick": nick, "client": "fuzz-check/1", "proto": 1}
        if token:
            hello["token"] = token
        c.send(hello)
        reply = c.wait_for(lambda h: h.get("type") in ("welcome", "error"),
                           deadline - time.monotonic())
        if reply["type"] != "welcome":
            raise CheckFailed("refused", "hello answered %s" % json.dumps(reply)[:300])
        step = "acknowledgement"
        cid = "check-" + nick
        c.send({"type": "msg", "text": "still here?", "cid": cid})
        reply = c.wait_for(lambda h: (h.get("type") == "msg" and h.get("cid") == cid) or
                           h.get("type") == "error", deadline - time.monotonic())
        if reply["type"] != "msg":
            raise CheckFailed("refused", "msg answered %s" % json.dumps(reply)[:300])
    except (TimeoutError, socket.timeout):
        raise CheckFailed("hang", "no %s within %.0f s" % (step, timeout)) from None
    except (ConnectionError, OSError) as exc:
        raise CheckFailed("refused", "connection lost waiting for the %s: %s"
                          % (step, exc)) from None
    finally:
        c.close()


class Anchor(threading.Thread):
    """A joined client that stays for the whole run: its session serves the HTTP file
    routes, it shares three files (public text, private to itself, SVG) and receives
    direct messages. It reads everything (never a slow consumer) and pings every 20 s."""

    PLAN = [("file", "notes.txt", b"n" * ANCHOR_FILE_SIZE, "text/plain", True),
            ("pfile", "private.txt", b"p" * 500, "text/plain", False),
            ("sfile", "x.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml",
             True)]

    def __init__(self, port, token, files=None, device=None):
        super().__init__(daemon=True)
        self.device = device              # a server with device keys gives one in welcome
        self.port = port
        self.token = token
        self.stopping = threading.Event()
        self.client = None
        self.session = None
        self.nick = None
        self.files = dict(files or {})    # a previous anchor's files stay downloadable

    def setup(self, timeout=15.0):
        """Join (as "anchor", or "anchor2"… if a fuzz input holds the nick), share the
        files; raises RuntimeError if the server does not let it join."""
        try:
            for n in range(1, 6):
                self.nick = ANCHOR_NICK if n == 1 else "%s%d" % (ANCHOR_NICK, n)
                c = self.client = FramedClient(self.port, timeout=timeout)
                hello = {"type": "hello", "nick": self.nick, "client": "fuzz-anchor/1",
                         "proto": 1, "since": MAX_ID}
                if self.token:
                    hello["token"] = self.token
                if self.device:
                    hello["device"] = self.device
                c.send(hello)
                welcome = c.wait_for(lambda h: h.get("type") in ("welcome", "error"), timeout)
                if welcome["type"] == "welcome":
                    break
                c.close()
                if welcome.get("code") not in ("nick_taken", "nick_owned"):
                    raise RuntimeError("the anchor was refused: %s" % json.dumps(welcome))
            else:
                raise RuntimeError("no free nick for the anchor")
            self.session = welcome["session"]
            self.device = welcome.get("device") or self.device or ""
            for key, name, data, mime, public in self.PLAN:
                self.share(key, name, data, mime, public, timeout)
        except (OSError, ValueError, TimeoutError) as exc:
            if self.client is not None:
                self.client.close()
            raise RuntimeError("the anchor could not join: %s" % exc) from None
        self.start()

    def share(self, key, name, data, mime, public, timeout):
        c = self.client
        cid = "anchor-%s-%d" % (key, time.time_ns())
        announce = {"type": "upload", "name": name, "size": len(data), "cid": cid,
                    "mime": mime}
        if not public:
            announce["to"] = self.nick
        c.send(announce)
        ready = c.wait_for(lambda h: h.get("type") in ("upload_ready", "error"), timeout)
        if ready["type"] == "upload_ready":
            c.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, data)
            done = c.wait_for(lambda h: (h.get("type") == "msg" and h.get("cid") == cid) or
                              h.get("type") == "error", timeout)
            if done["type"] == "msg":
                self.files[key] = done["file"]["id"]
                return
        # refused (e.g. disk_full: uploads announced by fuzz inputs reserve the space):
        # keep the previous anchor's file, or aim at a file that does not exist
        self.files.setdefault(key, "f" + "0" * 24)

    def run(self):
        sock = self.client.sock
        last_ping = time.monotonic()
        while not self.stopping.is_set():
            try:
                sock.settimeout(1.0)
                if not sock.recv(1 << 20):
                    break
            except (socket.timeout, TimeoutError):
                pass
            except OSError:
                break
            if time.monotonic() - last_ping > 20:
                last_ping = time.monotonic()
                try:
                    sock.sendall(encode_frame(b'{"type":"ping"}'))
                except OSError:
                    break
        self.client.close()

    @property
    def alive(self):
        return self.is_alive() and not self.stopping.is_set()

    def stop(self):
        self.stopping.set()
        if self.is_alive():
            self.join(3)
        elif self.client is not None:
            self.client.close()


# ---------------------------------------------------------------------------------------
# The server under test


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Target:
    """chatserver.py (or another copy) in a subprocess on 127.0.0.1, its data folder, its
    log, its anchor client, and what /proc says about it."""

    def __init__(self, opts, data_dir, port=None):
        self.opts = opts
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc = None
        self.anchor = None
        self.token = None
        self.log_offset = 0
        self.log_path = os.path.join(data_dir, "server.log")
        self.checks = 0
        self.last_cpu = 0.0

    def command(self):
        cmd = [self.opts.python, self.opts.chatserver, "--host", "127.0.0.1", "--port",
               str(self.port), "--data-dir", os.path.join(self.data_dir, "data"),
               "--no-browser", "--log-level", self.opts.server_log_level]
        if self.opts.open:
            cmd.append("--open")
        return cmd + list(self.opts.server_arg or [])

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        log = open(self.log_path, "ab")
        self.log_offset = log.tell()
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited at start (code %s):\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not listen within %.0f s:\n%s"
                                       % (SERVER_START_TIMEOUT, self.log_tail()))
                time.sleep(0.05)
        self.token = None if self.opts.open else self.read_token()
        self.start_anchor()
        return self

    def read_token(self):
        """The pairing token as a person reads it: from the PC's own /pair page."""
        url = "http://127.0.0.1:%d/pair" % self.port
        page = urllib.request.urlopen(url, timeout=10).read().decode("utf-8")
        found = re.search(r"#k=([A-Za-z0-9_-]+)", page)
        if not found:
            raise RuntimeError("no pairing token on %s" % url)
        return found.group(1)

    def start_anchor(self):
        files = device = None
        if self.anchor is not None:
            self.anchor.stop()
            files, device = self.anchor.files, self.anchor.device
        self.anchor = Anchor(self.port, self.token, files, device)
        self.anchor.setup()

    def ensure_anchor(self):
        """The anchor may be gone (a fuzz input took over its nick): join a new one."""
        if self.anchor is None or not self.anchor.alive:
            self.start_anchor()
            return True
        return False

    def values(self):
        a = self.anchor
        v = {"token": self.token or "no-token-needed-here1", "session": a.session,
             "device": a.device or "no-device-key-given-1",
             "anchor": a.nick, "hostport": "127.0.0.1:%d" % self.port,
             "port": str(self.port)}
        v.update(a.files)
        return {k: str(x).encode() for k, x in v.items()}

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return None

    def cpu_seconds(self):
        """User + system CPU time of the server process (/proc/<pid>/stat); the last value
        read once the process is gone."""
        if self.proc is not None:
            try:
                with open("/proc/%d/stat" % self.proc.pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.last_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                pass
        return self.last_cpu

    def fds(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except OSError:
            return None

    def new_log(self):
        """What the server logged since the last call."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except OSError:
            return ""
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - n))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_chat(self, timeout):
        self.checks += 1
        chat_round_trip(self.port, self.token, "check%d" % self.checks, timeout)

    def stop(self, kill=False):
        if self.anchor is not None:
            self.anchor.stop()
            self.anchor = None
        if self.proc is not None and self.proc.poll() is None and kill:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------------------------------
# Campaign: batches, checks, failures, minimization, summary


CHAIN_LINES = ("During handling of the above exception, another exception occurred:",
               "The above exception was the direct cause of the following exception:")


def tracebacks(text, server_file="chatserver.py"):
    """Tracebacks and "internal error" lines in a log excerpt, as (signature, block). The
    signature is the last exception of a chain (quoted values and digits folded) and its
    innermost frame in the server's file, so the same bug seen a thousand times, with a
    thousand different inputs, is one failure."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not TRACE_RE.search(lines[i]):
            i += 1
            continue
        block = [lines[i]]
        j = i + 1
        if not lines[i].startswith("Traceback") and j < len(lines) and \
                lines[j].startswith("Traceback"):
            block.append(lines[j])
            j += 1
        while block[-1].startswith("Traceback"):
            while j < len(lines) and lines[j].startswith((" ", "\t")):
                block.append(lines[j])
                j += 1
            if j < len(lines):
                block.append(lines[j])          # the exception line
                j += 1
            # a chained exception: a blank line, the chain sentence, a blank line, another
            k = j
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k + 2 < len(lines) and lines[k].strip() in CHAIN_LINES and \
                    lines[k + 2].startswith("Traceback"):
                block += lines[j:k + 3]
                j = k + 3
        frames = [b.strip() for b in block if b.strip().startswith("File ")]
        ours = [f for f in frames if os.path.basename(server_file) in f] or frames
        inner = re.sub(r'^File ".*?([^/\\]+)", line (\d+), in (\S+)', r"\1:\2 \3",
                       ours[-1]) if ours else ""
        last = re.sub(r"^\d\d:\d\d:\d\d \w+\s+", "", block[-1].strip())
        last = re.sub(r"'[^' ]*'", "'…'", last)
        last = re.sub(r"\d+", "N", last)
        last = re.sub(r"characters? (?:'…' )?in position N(?:-N)?", "character(s) in position N",
                      last)[:160]
        found.append(("%s | %s" % (last, inner) if inner else last, "\n".join(block)))
        i = j
    return found


class Failure(dict):
    """kind: crash | hang | refused | internal_error | rss | fds; signature; detail."""

    def same_as(self, other):
        if self["kind"] != other["kind"]:
            return False
        if self["kind"] == "internal_error":
            return self["signature"] == other["signature"]
        return True


def check_target(target, opts, stats, batch_peak_rss=0):
    """Everything the run promises about the server, after one batch."""
    failures = []
    log = target.new_log()

    def crashed(detail):
        time.sleep(0.2)
        text = log + target.new_log()
        # the cause is an uncaught exception (a bare traceback, not one the server logged
        # as handled), or else only the exit code says anything; it is not also an
        # internal error of this check
        uncaught = [sig for sig, block in tracebacks(text, opts.chatserver)
                    if block.startswith("Traceback")]
        failures[:] = [f for f in failures if f["kind"] != "internal_error" or
                       f["signature"] not in uncaught]
        code = target.proc.returncode
        failures.append(Failure(kind="crash", signature=uncaught[-1] if uncaught else
                                "exit code %s" % code, detail=detail, exit_code=code,
                                log=text[-4000:]))
        return failures

    if not target.alive():
        return crashed("the server exited (code %s)" % target.proc.returncode)
    for sig, block in tracebacks(log, opts.chatserver):
        failures.append(Failure(kind="internal_error", signature=sig, detail=block[-3000:]))
    try:
        target.check_chat(opts.check_timeout)
    except CheckFailed as exc:
        deadline = time.monotonic() + 3.0
        while target.alive() and time.monotonic() < deadline:
            time.sleep(0.1)         # a server on its way out closes its port first
        if not target.alive():
            return crashed("the server exited during the check: %s" % exc.detail)
        failures.append(Failure(kind=exc.kind, signature=re.sub(r"\d+", "N", exc.detail)[:120],
                                detail=exc.detail))
    rss = target.rss_kb() or 0
    peak = max(rss, batch_peak_rss)
    stats.sample_rss(peak)
    if peak > opts.max_rss_mb * 1024:
        failures.append(Failure(kind="rss", signature="RSS over %g MB" % opts.max_rss_mb,
                                detail="VmRSS %d kB now, %d kB at the batch's peak > %g MB"
                                % (rss, peak, opts.max_rss_mb), rss_kb=peak))
    time.sleep(FD_SETTLE)
    fds = target.fds()
    if fds is not None:
        stats.sample_fds_after(fds)
        if fds > opts.max_fds:
            failures.append(Failure(kind="fds", signature="fds over %d" % opts.max_fds,
                                    detail="%d open fds after the batch > %d"
                                    % (fds, opts.max_fds), fds=fds))
    return failures


class Stats:
    def __init__(self):
        self.by_kind = collections.defaultdict(collections.Counter)
        self.by_sub = collections.defaultdict(collections.Counter)
        self.answers = collections.defaultdict(collections.Counter)
        self.outcomes = collections.Counter()
        self.inputs = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.max_rss_kb = 0
        self.max_fds = 0
        self.max_fds_after = 0
        self.anchor_rejoins = 0

    def sample_rss(self, kb):
        self.max_rss_kb = max(self.max_rss_kb, kb)

    def sample_fds_after(self, n):
        self.max_fds_after = max(self.max_fds_after, n)
        self.max_fds = max(self.max_fds, n)

    def add(self, res):
        inp = res.inp
        kind = inp["kind"]
        self.inputs += 1
        self.bytes_sent += res.tx
        self.bytes_received += res.rx
        self.outcomes[res.outcome] += 1
        joined = any(e in ("welcome", "ws:text:welcome") for e in res.events)
        joining = inp.get("sub") in JOINING_FRAMED + ("chat", "control", "fragments",
                                                      "takeover")
        reached = any(answer_reached(e, joined or joining) for e in res.events)
        for counter in (self.by_kind[kind], self.by_sub["%s.%s" % (kind, inp.get("sub"))]):
            counter["sent"] += 1
            counter["answered"] += bool(res.rx)
            counter["reached"] += reached
            counter["joined"] += joined
            counter["joined_reached"] += joined and reached
            counter["upgraded"] += res.upgraded
            counter["closed_by_server"] += res.outcome in ("closed", "reset",
                                                           "closed_while_sending")
            counter["timeouts"] += res.outcome in ("timeout", "connect_timeout")
            counter["connect_failed"] += res.outcome.startswith(("connect_", "local_error"))
            counter["seconds"] += res.seconds
            counter["seconds_max"] = max(counter["seconds_max"], res.seconds)
        answers = self.answers[kind]
        for e in set(res.events):
            answers[e] += 1

    def summary(self):
        def rates(c):
            out = dict(c)
            out["seconds"] = round(c["seconds"], 1)
            out["seconds_max"] = round(c["seconds_max"], 2)
            if c["sent"]:
                out["reach"] = round(c["reached"] / c["sent"], 3)
            if c["joined"]:
                out["joined_reach"] = round(c["joined_reached"] / c["joined"], 3)
            return out
        return {
            "inputs": self.inputs,
            "by_kind": {k: rates(c) for k, c in sorted(self.by_kind.items())},
            "by_sub": {k: rates(c) for k, c in sorted(self.by_sub.items())},
            "answers": {k: dict(c.most_common(40)) for k, c in sorted(self.answers.items())},
            "outcomes": dict(self.outcomes.most_common()),
            "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
            "max_rss_kb": self.max_rss_kb, "max_fds": self.max_fds,
            "max_fds_after_batch": self.max_fds_after, "anchor_rejoins": self.anchor_rejoins,
        }


def loopback_aliases_work():
    """Linux answers on all of 127.0.0.0/8; macOS only on 127.0.0.1 unless told."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


class Campaign:
    def __init__(self, opts):
        if opts.sources and not loopback_aliases_work():
            say("127.0.0.2 cannot be bound here: every connection comes from 127.0.0.1")
            opts.sources = 0
        self.opts = opts
        self.spec, self.spec_from_doc = load_client_messages(opts.protocol)
        self.gen = Gen(opts.seed, self.spec, parse_weights(opts.weights), opts.sources)
        self.stats = Stats()
        self.failures = {}             # "kind|signature" -> Failure (with its count)
        self.server_cpu = 0.0          # CPU seconds of the server processes that ended
        self.restarts = 0
        self.batches = 0
        self.workdir = tempfile.mkdtemp(prefix="chatfuzz-")
        self.target = None
        self.batch_peak_rss = 0
        self.minimized = 0             # failures shrunk so far (--minimize-max)
        self.interrupted = False

    # -- the run ---------------------------------------------------------------------------

    def run(self):
        opts = self.opts
        t0 = time.monotonic()
        self.target = Target(opts, os.path.join(self.workdir, "main")).start()
        driver = Driver(self.target.port, lambda: self.target.values(), opts.concurrency,
                        self.sample)
        say("fuzzing %s on 127.0.0.1:%d (seed %d, %s, data in %s)" % (
            opts.chatserver, self.target.port, opts.seed,
            "open" if opts.open else "with a pairing token", self.workdir))
        say("limits: %d inputs, %s, batches of %d, %d connections at once" % (
            opts.count, "%g s" % opts.seconds if opts.seconds else "no time limit", opts.batch,
            opts.concurrency))
        last_report = t0
        stop = False
        try:
            while not stop:
                elapsed = time.monotonic() - t0
                left = opts.count - self.stats.inputs
                if left <= 0 or (opts.seconds and elapsed >= opts.seconds):
                    break
                inputs = [self.gen.make() for _ in range(min(opts.batch, left))]
                self.batch_peak_rss = 0
                results = driver.run(inputs)
                self.batches += 1
                for res in results:
                    self.stats.add(res)
                failures = check_target(self.target, opts, self.stats, self.batch_peak_rss)
                if failures:
                    stop = self.on_failures(failures, inputs, time.monotonic() - t0)
                    driver.port = self.target.port
                else:
                    self.keep_anchor()
                now = time.monotonic()
                if now - last_report >= opts.progress:
                    last_report = now
                    self.progress(now - t0)
                    if opts.json:           # a long run leaves its figures as it goes
                        write_json(opts.json, dict(self.summary(now - t0), partial=True))
        except KeyboardInterrupt:
            say("interrupted after %d inputs" % self.stats.inputs)
            self.interrupted = True
        finally:
            driver.close()
            elapsed = time.monotonic() - t0
            summary = self.summary(elapsed)
            self.target.stop()
        if not opts.keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return summary

    def sample(self):
        self.target.cpu_seconds()
        rss = self.target.rss_kb()
        if rss is not None:
            self.stats.sample_rss(rss)
            self.batch_peak_rss = max(self.batch_peak_rss, rss)
        fds = self.target.fds()
        if fds is not None:
            self.stats.max_fds = max(self.stats.max_fds, fds)

    def progress(self, elapsed):
        s = self.stats
        say("%7d inputs  %6.0f s  %5.0f/s  max rss %6.1f MB  fds %4d  failures %d (%d distinct)"
            "  restarts %d" % (s.inputs, elapsed, s.inputs / max(elapsed, 1e-9),
                               s.max_rss_kb / 1024, s.max_fds_after,
                               sum(f["count"] for f in self.failures.values()),
                               len(self.failures), self.restarts))

    def keep_anchor(self):
        try:
            if self.target.ensure_anchor():
                self.stats.anchor_rejoins += 1
        except (RuntimeError, OSError, ValueError) as exc:
            # HTTP inputs then carry a dead session (401); the chat check is what counts
            say("the anchor could not join again: %s" % exc)

    def on_failures(self, failures, inputs, elapsed):
        """Count each failure; save (and shrink) the ones not seen before. Returns True
        when the run should stop."""
        opts = self.opts
        new = []
        for f in failures:
            key = "%s|%s" % (f["kind"], f["signature"])
            seen = self.failures.get(key)
            if seen is not None:            # counted; said once
                seen["count"] += 1
                seen["last_after_inputs"] = self.stats.inputs
                continue
            say("FAILURE %s after %d inputs: %s" % (f["kind"], self.stats.inputs,
                                                    f["signature"]))
            f.update(count=1, batch=self.batches, after_inputs=self.stats.inputs,
                     batch_inputs=len(inputs), at_seconds=round(elapsed, 1))
            self.failures[key] = f
            new.append(f)
        if new:
            batch_file = self.save("batch-b%d" % self.batches, new, inputs)
            for f in new:
                f["file"] = f["batch_file"] = batch_file
            for f in new:
                if opts.minimize and f["kind"] in MINIMIZED_KINDS and \
                        self.minimized < opts.minimize_max:
                    self.minimized += 1
                    self.minimize(f, inputs)
        if opts.stop_on:
            if any(f["kind"] in opts.stop_on for f in failures):
                return True
        elif not opts.keep_going:
            return True
        if any(f["kind"] in RESTART_KINDS for f in failures):
            self.restart()
        else:
            self.keep_anchor()
        return False

    def restart(self):
        """Same data folder and port, fresh process: the run goes on measuring."""
        self.restarts += 1
        port = self.target.port
        self.server_cpu += self.target.cpu_seconds() or 0
        self.target.stop(kill=True)
        for attempt in range(20):
            try:
                self.target = Target(self.opts, self.target.data_dir, port).start()
                return
            except (RuntimeError, OSError) as exc:
                say("restart failed (%s); retrying" % str(exc).splitlines()[0])
                time.sleep(1)
        raise RuntimeError("the server could not be restarted")

    def save(self, name, failures, inputs):
        """A replay file: the failures seen and the inputs that preceded them."""
        os.makedirs(self.opts.failures_dir, exist_ok=True)
        path = os.path.join(self.opts.failures_dir, "%s-s%d.json" % (name, self.opts.seed))
        record = {
            "about": "bench/fuzz.py failure; replay: python3 bench/fuzz.py --replay " + path,
            "failures": [{k: v for k, v in f.items() if k not in ("file", "batch_file")}
                         for f in failures],
            "seed": self.opts.seed, "chatserver": self.opts.chatserver,
            "open": self.opts.open, "server_arg": self.opts.server_arg or [],
            "concurrency": self.opts.concurrency,
            "inputs": to_jsonable(inputs),
        }
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, separators=(",", ":"))
        os.replace(path + ".tmp", path)
        return path

    def minimize(self, failure, inputs):
        """Halve the failing batch while a fresh server still fails the same way, then
        drop single inputs; the smallest set that still fails is saved as its own replay
        file."""
        budget = self.opts.minimize_budget - 1
        current = list(inputs)
        if not reproduce(self.opts, current, failure, self.workdir):
            failure["reproduced"] = False
            failure["note"] = ("not reproduced by its batch alone on a fresh server: it "
                               "needs state that earlier inputs left")
            say("  not reproduced by its batch alone on a fresh server")
            return
        failure["reproduced"] = True
        while len(current) > 1 and budget > 0:
            half = len(current) // 2
            for part in (current[:half], current[half:]):
                if budget <= 0:
                    break
                budget -= 1
                if reproduce(self.opts, part, failure, self.workdir):
                    current = part
                    break
            else:
                break                     # neither half alone: the inputs work together
        for inp in list(current) if len(current) <= 8 else []:
            if budget <= 0 or len(current) == 1:
                break
            budget -= 1
            rest = [i for i in current if i is not inp]
            if reproduce(self.opts, rest, failure, self.workdir):
                current = rest
        failure["minimized_inputs"] = len(current)
        failure["preview"] = [input_preview(i).decode("latin-1") for i in current[:3]]
        path = self.save("%s-b%d-%d" % (failure["kind"], self.batches, self.minimized),
                         [failure], current)
        failure["file"] = path
        say("  reproduced; shrunk to %d input(s): %s" % (len(current), path))

    def summary(self, elapsed):
        s = self.stats.summary()
        distinct = list(self.failures.values())

        def of(*kinds):
            return [f for f in distinct if f["kind"] in kinds]

        def count(*kinds):
            return sum(f["count"] for f in of(*kinds))

        s.update({
            "ok": not distinct,
            "interrupted": self.interrupted,
            "seed": self.opts.seed,
            "elapsed_s": round(elapsed, 1),
            "inputs_per_s": round(self.stats.inputs / max(elapsed, 1e-9), 1),
            "batches": self.batches,
            "restarts": self.restarts,
            "server_cpu_s": round(self.server_cpu + (self.target.cpu_seconds() or 0), 1)
            if self.target else None,
            "fuzzer_cpu_s": round(sum(os.times()[:2]), 1),
            "failures": {"crash": count("crash"), "hang": count("hang", "refused"),
                         "internal_error": count("internal_error"),
                         "bound_exceeded": count("rss", "fds"), "distinct": len(distinct)},
            "crashes": of("crash"),
            "hangs": of("hang", "refused"),
            "internal_errors": of("internal_error"),
            "bounds_exceeded": of("rss", "fds"),
            "bounds": {"max_rss_mb": self.opts.max_rss_mb, "max_fds": self.opts.max_fds},
            "settings": {"count": self.opts.count, "seconds": self.opts.seconds,
                         "batch": self.opts.batch, "concurrency": self.opts.concurrency,
                         "sources": self.opts.sources, "open": self.opts.open,
                         "server_arg": self.opts.server_arg or [],
                         "weights": parse_weights(self.opts.weights),
                         "check_timeout": self.opts.check_timeout,
                         "keep_going": self.opts.keep_going,
                         "stop_on": sorted(self.opts.stop_on)},
            "chatserver": self.opts.chatserver,
            "chatserver_sha256": file_sha256(self.opts.chatserver),
            "protocol_types": sorted(self.spec), "protocol_from_doc": self.spec_from_doc,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(),
        })
        return s


def reproduce(opts, inputs, failure, workdir):
    """Play `inputs` on a fresh server; True if it fails the same way as `failure` (only
    that is checked, so shrinking stays quick)."""
    target = Target(opts, tempfile.mkdtemp(prefix="repro-", dir=workdir))
    try:
        target.start()
    except (RuntimeError, OSError):
        shutil.rmtree(target.data_dir, ignore_errors=True)
        return False
    driver = Driver(target.port, target.values, opts.concurrency)
    try:
        driver.run(inputs)
        kind = failure["kind"]
        if kind == "crash":
            deadline = time.monotonic() + 1.0
            while target.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if target.alive():
                return False
        elif kind == "internal_error":
            time.sleep(0.1)
            return any(sig == failure["signature"]
                       for sig, _ in tracebacks(target.new_log(), opts.chatserver))
        return any(failure.same_as(f) for f in check_target(target, opts, Stats()))
    finally:
        driver.close()
        target.stop(kill=True)
        shutil.rmtree(target.data_dir, ignore_errors=True)


def replay(opts):
    """--replay FILE: start a fresh server, play the saved inputs, check. Exit 1 if any
    check fails (the failure still reproduces)."""
    with open(opts.replay, encoding="utf-8") as f:
        record = json.load(f)
    inputs = from_jsonable(record["inputs"])
    if opts.chatserver_given is None:
        opts.chatserver = record.get("chatserver") or opts.chatserver
    if not opts.open_given:
        opts.open = record.get("open", False)
    if not opts.server_arg:
        opts.server_arg = record.get("server_arg", [])
    workdir = tempfile.mkdtemp(prefix="chatfuzz-replay-")
    target = Target(opts, os.path.join(workdir, "main"))
    try:
        target.start()
    except (RuntimeError, OSError) as exc:
        say("cannot start the server: %s" % exc)
        return 2, {}
    recorded = record.get("failures") or [record.get("failure", {})]
    say("replaying %d input(s) from %s against %s (recorded: %s)" % (
        len(inputs), opts.replay, opts.chatserver,
        "; ".join("%s %s" % (f.get("kind"), f.get("signature")) for f in recorded)))
    driver = Driver(target.port, target.values, 1 if opts.sequential else
                    record.get("concurrency", opts.concurrency))
    stats = Stats()
    try:
        for res in driver.run(inputs):
            stats.add(res)
        time.sleep(0.3)
        found = check_target(target, opts, stats)
    finally:
        driver.close()
        target.stop()
    summary = stats.summary()
    summary["failures"] = found
    summary["ok"] = not found
    for f in found:
        say("FAILURE %s: %s" % (f["kind"], f["signature"]))
        if f.get("detail"):
            say("  " + f["detail"].replace("\n", "\n  ")[:3000])
    if not found:
        say("no failure: the recorded one did not reproduce")
    if not opts.keep_data:
        shutil.rmtree(workdir, ignore_errors=True)
    return (1 if found else 0), summary


# ---------------------------------------------------------------------------------------
# Command line


def say(text):
    print(text, flush=True)


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def file_sha256(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def parse_weights(text):
    if not text:
        return dict(KIND_WEIGHTS)
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in KIND_WEIGHTS:
            raise SystemExit("unknown input kind %r (known: %s)" % (name, ", ".join(KIND_WEIGHTS)))
        weights[name.strip()] = float(value or 1)
    return weights


def print_summary(s):
    say("")
    say("inputs %d in %.1f s (%.0f/s), seed %d, %d batches, %d restarts" % (
        s["inputs"], s["elapsed_s"], s["inputs_per_s"], s["seed"], s["batches"],
        s["restarts"]))
    for kind, c in s["by_kind"].items():
        extra = ""
        if c.get("joined"):
            extra += "  joined %d (reach after hello %.0f%%)" % (c["joined"],
                                                                 100 * c["joined_reach"])
        if c.get("upgraded"):
            extra += "  upgraded %d" % c["upgraded"]
        say("  %-7s sent %7d  answered %7d  reached %7d (%.0f%%)%s" % (
            kind, c["sent"], c["answered"], c["reached"], 100 * c.get("reach", 0), extra))
    say("  max RSS %.1f MB, max fds %d (after batches: %d)" % (
        s["max_rss_kb"] / 1024, s["max_fds"], s["max_fds_after_batch"]))
    n = s["failures"]
    say("  crashes %d, hangs %d, internal errors %d, bounds exceeded %d (distinct: %d)" % (
        n["crash"], n["hang"], n["internal_error"], n["bound_exceeded"], n["distinct"]))
    for key in ("crashes", "hangs", "internal_errors", "bounds_exceeded"):
        for f in s[key]:
            say("    %s x%d: %s -> %s" % (f["kind"], f["count"], f["signature"], f.get("file")))
    say("RESULT: %s" % ("ok" if s["ok"] else "FAILED"))


def build_arg_parser():
    p = argparse.ArgumentParser(description="End-to-end fuzzer for chatserver.py (see the "
                                "module docstring).")
    add = p.add_argument
    add("--count", type=int, default=DEFAULT_COUNT, help="inputs to send at most")
    add("--seconds", type=float, default=DEFAULT_SECONDS,
        help="stop after this long (0: no time limit)")
    add("--seed", type=int, default=None, help="random seed (default: random, printed)")
    add("--batch", type=int, default=DEFAULT_BATCH, help="inputs between two checks")
    add("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="connections at once")
    add("--sources", type=int, default=DEFAULT_SOURCES,
        help="loopback source addresses for fuzz connections (127.0.0.2 …); 0: all from "
             "127.0.0.1, like the check and the anchor")
    add("--weights", default=None, help="input kind weights, e.g. framed=4,http=2,ws=3,raw=1")
    add("--max-rss-mb", type=float, default=DEFAULT_MAX_RSS_MB, help="server RSS bound")
    add("--max-fds", type=int, default=DEFAULT_MAX_FDS,
        help="server open fds bound, counted after each batch")
    add("--check-timeout", type=float, default=DEFAULT_CHECK_TIMEOUT,
        help="seconds for the ordinary client's hello, msg and acknowledgement")
    add("--chatserver", default=None, help="the server to fuzz (default: the repository's)")
    add("--python", default=sys.executable, help="interpreter that runs the server")
    add("--open", action="store_true", default=None, help="run the server with --open")
    add("--server-arg", action="append", default=[],
        help="extra server option (repeatable), e.g. --server-arg=--rate-limit=0")
    add("--server-log-level", default="warning", choices=("debug", "info", "warning", "error"))
    add("--protocol", default=DEFAULT_PROTOCOL, help="PROTOCOL.md to read message types from")
    add("--json", default=None, help="write the summary as JSON to this file")
    add("--failures-dir", default=DEFAULT_FAILURES_DIR, help="where failing inputs are saved")
    add("--keep-going", action="store_true", help="restart the server after a crash, hang "
        "or bound exceeded and go on")
    add("--stop-on", default="", help="comma-separated failure kinds (crash, hang, refused, "
        "internal_error, rss, fds) that end the run; any other is counted and the run goes "
        "on as with --keep-going")
    add("--no-minimize", dest="minimize", action="store_false",
        help="save failing batches without shrinking them")
    add("--minimize-budget", type=int, default=DEFAULT_MINIMIZE_BUDGET,
        help="fresh servers started to shrink one failure")
    add("--minimize-max", type=int, default=DEFAULT_MINIMIZE_MAX,
        help="distinct failures shrunk per run (the others are saved with their batch)")
    add("--replay", default=None, help="play a saved failure file again and check")
    add("--sequential", action="store_true", help="with --replay: one input at a time")
    add("--keep-data", action="store_true", help="keep the temporary data folders")
    add("--progress", type=float, default=10.0, help="seconds between progress lines")
    return p


def stop_on_sigterm():
    """kill <pid> ends a run like Ctrl+C: the finally blocks stop the servers it started."""
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)


def main(argv=None):
    opts = build_arg_parser().parse_args(argv)
    stop_on_sigterm()
    opts.chatserver_given = opts.chatserver
    opts.chatserver = os.path.abspath(opts.chatserver or DEFAULT_SERVER)
    opts.open_given = opts.open is not None
    opts.stop_on = {k.strip() for k in opts.stop_on.split(",") if k.strip()}
    unknown = opts.stop_on - set(RESTART_KINDS + MINIMIZED_KINDS + ("internal_error",))
    if unknown:
        raise SystemExit("unknown failure kind(s) for --stop-on: %s" % ", ".join(unknown))
    opts.open = bool(opts.open)
    if opts.seed is None:
        opts.seed = random.SystemRandom().randrange(2 ** 31)
    if opts.replay:
        code, summary = replay(opts)
        if opts.json:
            write_json(opts.json, summary)
        return code
    if not os.path.exists(opts.chatserver):
        say("no server at %s" % opts.chatserver)
        return 2
    campaign = Campaign(opts)
    try:
        summary = campaign.run()
    except RuntimeError as exc:
        say("cannot run: %s" % exc)
        return 2
    print_summary(summary)
    if opts.json:
        write_json(opts.json, summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
