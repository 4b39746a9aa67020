#!/usr/bin/env python3
"""LAN chat and file-sharing server — one file, Python standard library only.

Run it:   python chatserver.py            (listens on 0.0.0.0:5555)
Help:     python chatserver.py --help

One TCP port carries three protocols, told apart by the first byte a client sends:
  0x00        the framed protocol of native clients:
              uint32 BE header length | uint32 BE payload length | JSON header | payload
  a letter    HTTP/1.1: the embedded web client (GET /), WebSocket (GET /ws) carrying the
              same JSON messages, and file upload/download routes.
The contract is docs/PROTOCOL.md. Everything runs in one thread on a `selectors` loop.

The file reads top-down, pure code first; `grep -n '^# .*####' chatserver.py` lists the
sections: limits, errors, helpers, the sans-I/O codecs (framing, HTTP, WebSocket), the QR
encoder and pairing, storage, the chat domain, connections, HTTP routes, the event loop, the
embedded web client, and the command line.
"""

__version__ = "1.0.0"

import argparse
import base64
import binascii
import codecs
import collections
import datetime
import email.utils
import errno
import gzip
import hashlib
import functools
import heapq
import html
import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.parse
import zipfile
import zlib
from dataclasses import dataclass
from http import HTTPStatus

log = logging.getLogger("chatserver")

###############################################################################
# Limits and tunables ##########################################################
###############################################################################

PROTOCOL_VERSION = 1
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 5555

# Framing (docs/PROTOCOL.md section 1).
MAX_HEADER_BYTES = 64 * 1024          # JSON header of one frame
MAX_PAYLOAD_BYTES = 1024 * 1024       # binary payload of one frame (a file chunk)
FRAME_PREFIX = struct.Struct(">II")   # header length, payload length

# Chat.
MAX_TEXT_BYTES = 16 * 1024            # msg.text, as UTF-8
MAX_NICK_CHARS = 32
MAX_CID_CHARS = 64
WELCOME_HISTORY_NEW = 100             # messages a new client gets in welcome
WELCOME_HISTORY_RESUME = 200          # messages a resuming client gets at most in welcome
HISTORY_PAGE_DEFAULT = 50
HISTORY_PAGE_MAX = 200
MAX_MESSAGE_ID = 2 ** 62              # ids a client may name (SQLite integers are 64-bit)
PRESENCE_LIMIT = 500                  # no join/leave events above this many users online
DEFAULT_EDIT_WINDOW_MINUTES = 15.0    # how long a sender may edit a message (--edit-window)
MAX_ROOM_NAME_CHARS = 80
MAX_ROOM_TOPIC_CHARS = 300
MAX_BAN_REASON_CHARS = 200
OPERATOR_BODY_MAX = 16 * 1024         # the JSON body of an operator request
OPERATOR_EVENTS_KEPT = 50             # recent events the operator page lists
OPERATOR_RECENT_MESSAGES = 30         # newest messages the operator page lists
EXPORT_POLL_SECONDS = 0.05            # how often the loop looks whether a zip export is done
WELCOME_USERS_MAX = 500               # nicks listed in welcome.users
REPLY_QUOTE_CHARS = 200               # of the original's text, in a reply's quote
MAX_MENTIONS = 20                     # @nicks listed per message
MAX_REACTION_CHARS = 8                # code points of one reaction (an emoji sequence)
MAX_REACTION_BYTES = 32
MAX_SEARCH_CHARS = 200                # of a search request's text
SEARCH_INDEX_EVERY = 1.0              # seconds between two writes of new messages to the index
SEARCH_INDEX_BATCH = 512              # ... or this many new messages, whichever comes first
SEARCH_PAGE_DEFAULT = 20
SEARCH_PAGE_MAX = 50

# Flood control: token bucket per connection (messages per second, burst).
DEFAULT_RATE_LIMIT = 20.0
DEFAULT_RATE_BURST = 50

# Connections.
DEFAULT_MAX_CLIENTS = 1000
WINDOWS_SELECT_MAX_CLIENTS = 500      # CPython's select() on Windows handles at most 512 sockets:
REJECT_POOL = 8                       # 500 clients + 8 being refused + listener + wake-up = 510
REJECT_WAIT = 2.0                     # seconds we wait for their first byte
RECV_SIZE = 256 * 1024
WRITE_BUDGET = 1024 * 1024            # bytes written to one connection per loop turn (fairness)
MAX_IOV = 512                         # buffers handed to one sendmsg() call
OUT_HARD_LIMIT = 16 * 1024 * 1024     # queued output that closes a connection at once
OUT_SOFT_LIMIT = 4 * 1024 * 1024      # queued output tolerated for OUT_SOFT_SECONDS
OUT_SOFT_SECONDS = 30.0
PING_AFTER = 30.0                     # silence before the server pings
IDLE_TIMEOUT = 90.0                   # silence before the server closes
HTTP_TIMEOUT = 20.0                   # an HTTP request head must complete, and an HTTP
                                      # connection may stay silent, this long (slowloris)
SHUTDOWN_GRACE = 1.5                  # seconds spent flushing `bye` on shutdown
LINGER_SECONDS = 2.0                  # after a final answer, input is read and dropped this
                                      # long, so the peer gets the answer instead of a reset
MAX_SELECT_TIMEOUT = 1.0              # lets Ctrl+C through on Windows, where select() is not interrupted
ACCEPT_BATCH = 64                     # connections accepted per readiness event
HTTP_READ = 16 * 1024                 # bytes read per turn from an HTTP connection (not a body)

# Fairness under load (docs/PERFORMANCE.md, "Flood"). Every turn serves the interactive
# lane first: connections that sent a little since the last turn are read and dispatched.
# Bulk senders (a flood of messages, a file upload) share the rest of the turn round-robin,
# a slice at a time; light input that arrives meanwhile is served after the current slice,
# so that an interactive message waits for one slice, not for the bulk senders' backlog.
LIGHT_TURN_FRAMES = 16                # frames a connection dispatches in the interactive lane;
LIGHT_TURN_BYTES = 16 * 1024          # more, or a read this large, makes it a bulk sender
BULK_SLICE_FRAMES = 64                # frames a bulk sender dispatches before the next one's
                                      # turn (round-robin) and a look for waiting light input
TURN_FRAMES = 1024                    # frames all bulk senders together dispatch per turn...
TURN_DELIVERIES = 1024 * 1024         # ...and at most this many frames x joined clients, so
                                      # that one turn's delivery stays short in a large room
TURN_READ_BYTES = 1024 * 1024         # bytes read from all bulk senders together per turn
LIGHT_WAIT_CLIENTS = 2                # light input waits for one slice of the bulk lane, or
                                      # in a large room for one frame per this many joined
                                      # clients: the turn it ends costs a send to every client
                                      # (1,000 sends ~ 5 ms), so a turn cut after 64 frames
                                      # spent most of the loop's time on sends
PACE_BACKLOG = 128 * 1024             # a joined client with this much chat output queued is
PACE_QUORUM = 4                       # backlogged; while more than 1 in PACE_QUORUM of the room
                                      # is, bulk senders whose messages went to the room are not
                                      # read (TCP slows the sender, not the room)
PACE_STALLED = 1.0                    # ...counting only those that took bytes this recently
NOTSENT_LOWAT = 128 * 1024            # TCP_NOTSENT_LOWAT: unsent bytes the kernel holds per
                                      # socket; the rest waits in our queues, where chat goes
                                      # ahead of file chunks
TURN_FILE_BYTES = 4 * 1024 * 1024     # file bytes (downloads) written to all connections
                                      # together per turn: 30 downloaders x WRITE_BUDGET would
                                      # make a turn, and every chat message in it, wait for
                                      # 30 MiB of copying; the ones cut off go first next turn

# What a client may cost the server (docs/RELIABILITY.md, "Budgets"). Before `hello` a
# connection is a stranger: small reads, no payloads, a small output queue, a deadline.
HELLO_TIMEOUT = 10.0                  # seconds from connect (or WebSocket upgrade) to welcome;
                                      # nothing a client sends extends it (--hello-timeout)
PREJOIN_MAX_HEADER = 4 * 1024         # largest frame header / WebSocket message before hello
PREJOIN_READ = 4 * 1024               # bytes read per turn before hello
PREJOIN_OUT_BUDGET = 64 * 1024        # own output queued before hello: input waits above it
OUT_READ_LIMIT = 1024 * 1024          # a joined client's own queued output above which its
                                      # input is not read until it has read three quarters
PING_ECHO_MAX = 256                   # bytes of JSON in ping.t that the pong echoes
DEFAULT_MAX_PER_ADDRESS = 64          # connections from one IP address at once
DEFAULT_NICK_EXPIRY_DAYS = 30.0       # an unused nick's claim lapses after this
HOST_REFRESH_EVERY = 5.0              # an unknown Host re-reads the interface addresses at
                                      # most this often (WiFi may have changed them)
EVICT_MIN_AGE = 2.0                   # a full server closes the oldest idle stranger this old
AUTH_FREE_FAILURES = 3                # failures per address before answers slow down
AUTH_MAX_DELAY = 10.0
AUTH_FAILURE_MEMORY = 15 * 60.0       # an address's failures are forgotten after this quiet time
ADDRESS_TABLE_MAX = 4096              # addresses with failures remembered (oldest forgotten first)
FD_RESERVE = 32                       # descriptors kept for the database, listener, console...
FDS_PER_CLIENT = 2                    # a socket and, on average, one open file
MACOS_OPEN_MAX = 10240                # macOS refuses a soft open-file limit above OPEN_MAX
ACCEPT_RETRY = 0.5                    # seconds before accepting again at the descriptor limit
LOG_REPEAT_EVERY = 10.0               # a repeated warning is logged once per this many seconds

# Files.
DEFAULT_MAX_FILE_SIZE = 4 * 1024 ** 3
DEFAULT_MIN_FREE_DISK = 256 * 1024 ** 2
DEFAULT_MAX_UPLOADS = 4               # concurrent uploads per nick
MAX_UPLOADS_PER_ADDRESS = 16          # unfinished uploads started from one IP address
MAX_PARTIAL_UPLOADS = 256             # unfinished uploads on the server in all
UPLOAD_GRACE = 3600.0                 # partial uploads kept this long after their last byte
UPLOAD_EMPTY_GRACE = 300.0            # an announced upload that never got a byte: forgotten
UPLOAD_IDLE_RESERVE = 60.0            # an upload reserves disk space only while its owner is
                                      # connected and sent a byte within this many seconds
MAX_DOWNLOADS_PER_CONN = 4            # files streamed to one connection at once
MESSAGE_DISK_FLOOR = 8 * 1024 * 1024  # below this much free disk, nothing more is stored
FREE_DISK_CACHE = 1.0                 # the loop reads the free disk space this often
DEFAULT_MIME = "application/octet-stream"
UPLOAD_SWEEP_EVERY = 60.0
DOWNLOAD_CHUNK = 256 * 1024
DOWNLOAD_LOW_WATER = 512 * 1024       # read the next chunk only below this much queued output
MAX_FILE_NAME = 200
HASH_READ = 1024 * 1024
DIRECT_PAYLOAD_MIN = 64 * 1024        # a frame payload this large is received straight into
                                      # its own buffer (one copy from the kernel, not three)
DISK_QUEUE_HIGH = 8 * 1024 * 1024     # upload bytes waiting for the disk thread: above this,
DISK_QUEUE_LOW = 2 * 1024 * 1024      # connections that sent them are not read until the
                                      # queue is back under the low mark (TCP back-pressure)
DISK_CLOSE_WAIT = 10.0                # seconds shutdown waits for queued chunks to be written
DB_LOCK_WAIT = 2.0                    # seconds to wait for the data folder's database when
                                      # another process holds it (e.g. a server just exiting)

IS_WINDOWS = sys.platform == "win32"

###############################################################################
# Errors ######################################################################
###############################################################################

@dataclass(frozen=True)
class ErrorKind:
    """Everything about one error code, in one row (docs/PROTOCOL.md section 6)."""
    fatal: bool            # the connection closes after the error frame
    http_status: int       # the status of a JSON error answer on the HTTP file routes
    sentence: str          # the default human sentence (a raise site usually says more)
    ws_close: int = 1008   # the WebSocket close code after a fatal one (RFC 6455 7.4.1:
                           # 1001 going away, 1008 policy violation)


ERRORS = {
    "bad_frame": ErrorKind(True, 400, "The byte stream is not framed as the protocol says."),
    "frame_too_large": ErrorKind(True, 413, "A frame is larger than the limit."),
    "bad_json": ErrorKind(False, 400, "The frame header is not valid UTF-8 JSON."),
    "bad_request": ErrorKind(False, 400, "The request is malformed."),
    "unknown_type": ErrorKind(False, 400, "Unknown message type."),
    "proto_unsupported": ErrorKind(True, 400, "Unsupported protocol version."),
    "auth_failed": ErrorKind(True, 401, "Missing or wrong pairing token."),
    "nick_invalid": ErrorKind(False, 400, "This nick cannot be used."),
    "nick_owned": ErrorKind(False, 409, "This nick belongs to another device."),
    "nick_taken": ErrorKind(False, 409, "This nick is in use."),
    "not_joined": ErrorKind(False, 400, "Send 'hello' first."),
    "text_too_long": ErrorKind(False, 413, "The message is too long."),
    "rate_limited": ErrorKind(False, 429, "Too many messages; slow down."),
    "unknown_user": ErrorKind(False, 404, "No such user is online."),
    "server_full": ErrorKind(True, 503, "The server is full; try again later."),
    "server_busy": ErrorKind(False, 503, "The server has too many open files; try again."),
    "timeout": ErrorKind(True, 408, "Nothing arrived in time.", ws_close=1001),
    "slow_consumer": ErrorKind(True, 400, "The client does not read what it is sent."),
    "file_too_large": ErrorKind(False, 413, "The file is larger than the server accepts."),
    "disk_full": ErrorKind(False, 507, "The server's disk is full."),
    "too_many_uploads": ErrorKind(False, 429, "Too many uploads at a time."),
    "too_many_downloads": ErrorKind(False, 429, "Too many downloads at a time."),
    "unknown_upload": ErrorKind(False, 404, "No such upload in progress."),
    "bad_offset": ErrorKind(False, 400, "The chunk offset is wrong."),
    "size_mismatch": ErrorKind(False, 400, "The file size differs from the announced one."),
    "checksum_mismatch": ErrorKind(False, 422, "The SHA-256 differs from the announced one."),
    "unknown_file": ErrorKind(False, 404, "No such file."),
    "forbidden": ErrorKind(False, 403, "Not allowed."),
    "shutting_down": ErrorKind(True, 503, "The server is stopping.", ws_close=1001),
    "banned": ErrorKind(True, 403, "The organiser banned this device or address."),
    "room_locked": ErrorKind(False, 403, "The room is locked: no new nicks may join."),
    "muted": ErrorKind(False, 403, "The organiser muted you: you can read but not post."),
    "unknown_message": ErrorKind(False, 404, "No such message."),
    "edit_expired": ErrorKind(False, 403, "This message can no longer be edited."),
}
_UNLISTED_ERROR = ErrorKind(True, 400, "Error.")   # reasons that are not error codes


def error_kind(code):
    return ERRORS.get(code, _UNLISTED_ERROR)


class ChatError(Exception):
    """An error a client caused; `code` goes on the wire, `message` is for people."""

    def __init__(self, code, message=None, ref=None):
        message = message or error_kind(code).sentence
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    @property
    def fatal(self):
        return error_kind(self.code).fatal


class DataDirInUse(OSError):
    """Another process (usually another chatserver) has the data folder's database open."""


class FrameError(ChatError):
    """The byte stream cannot be split into frames any more: the connection must close."""


def bad_request(message, ref=None):
    return ChatError("bad_request", message, ref)

###############################################################################
# Small helpers ###############################################################
###############################################################################

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_json_str = json.encoder.encode_basestring    # a str as a JSON string (C), what the encoder does


def dump_json(obj):
    """Compact UTF-8 JSON, the encoding every client expects (PROTOCOL.md section 1)."""
    return _json_encoder.encode(obj).encode("utf-8")


_timestamp_second = [None, ""]   # the last whole second formatted, reused within it


def utc_timestamp(now=None):
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-25T09:14:03.120Z. Called per message,
    so the date part is formatted once per second."""
    if now is None:
        now = time.time()
    second = int(now)
    if second != _timestamp_second[0]:
        _timestamp_second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S.",
                                                      time.gmtime(second))]
    return "%s%03dZ" % (_timestamp_second[1], int((now - second) * 1000))


def nick_key(nick):
    """Two nicks are the same when their NFKC forms match case-insensitively: fullwidth
    `ａlice` is `alice` (docs/PROTOCOL.md, "Common fields")."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", nick).casefold())


_FORBIDDEN_NICK_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
# Letters that draw nothing (they pass as letters, category Lo/So): fillers and blanks.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5")


def validate_nick(value):
    """Trimmed, 1..32 characters, no control or invisible formatting characters, and no
    space-like character but U+0020 (a no-break space makes `al ice` look like `al ice`)."""
    if not isinstance(value, str):
        raise ChatError("nick_invalid", "The nick must be a string.")
    nick = value.strip()
    if not nick:
        raise ChatError("nick_invalid", "The nick is empty.")
    if len(nick) > MAX_NICK_CHARS:
        raise ChatError("nick_invalid", "The nick is longer than %d characters." % MAX_NICK_CHARS)
    for ch in nick:
        category = unicodedata.category(ch)
        if category in _FORBIDDEN_NICK_CATEGORIES:
            raise ChatError("nick_invalid", "The nick contains control or invisible characters.")
        if (category == "Zs" and ch != " ") or ch in _BLANK_LETTERS:
            raise ChatError("nick_invalid", "The nick contains a space-like character other "
                            "than a plain space.")
    return nick


# Latin look-alikes of the Cyrillic and Greek alphabets (fullwidth forms are folded by NFKC
# first), and the digits and signs people use for letters. Only what looks the same in a
# common font; the skeleton of a nick decides whether it impersonates another one.
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "һ": "h", "ɡ": "g", "ү": "y",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    # digits and signs
    "0": "o", "1": "l", "|": "l", "!": "l", "$": "s", "@": "a",
    # what the skeleton ignores
    " ": None, "-": None, "_": None, ".": None, "'": None,
})


def nick_skeleton(nick):
    """What a nick looks like: NFKD without the accents, case-folded, look-alikes mapped to
    Latin, separators dropped. `аlice` (Cyrillic а), `alicé` and `a-lice` all look like
    `alice`."""
    decomposed = unicodedata.normalize("NFKD", nick)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return bare.casefold().translate(_CONFUSABLES).replace("rn", "m").replace("vv", "w")


_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    "%s%d" % (p, i) for p in ("COM", "LPT") for i in range(10)}
_UNSAFE_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


def sanitize_file_name(name):
    """A file name safe to show and to put in Content-Disposition; never used as a path."""
    name = unicodedata.normalize("NFC", str(name))
    name = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
                   for ch in name)
    name = _UNSAFE_NAME_CHARS.sub("_", name).strip(" .")
    if len(name) > MAX_FILE_NAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[:MAX_FILE_NAME - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:MAX_FILE_NAME].rstrip(" .")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    return name or "file"


def default_data_dir():
    """%LOCALAPPDATA%\\ChatServer on Windows, $XDG_DATA_HOME/chatserver elsewhere."""
    if IS_WINDOWS:
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(r"~\AppData\Local")
        return os.path.join(base, "ChatServer")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "chatserver")


def printable(text, limit=100):
    """A client's string made safe for the console and the log: control and format characters
    escaped (no forged log lines, no terminal escape sequences), cut to `limit`."""
    text = str(text)[:limit]
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "\\x%02x" % ord(ch) if ord(ch) < 256
                   else "\\u%04x" % ord(ch) for ch in text)


def make_private_dir(path):
    """Create a folder only this user can read (0700 on POSIX): the data folder holds the
    pairing token and private messages."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if not IS_WINDOWS:
        os.chmod(path, 0o700)


def make_private_file(path):
    """Create `path` if missing, readable by this user only (0600 on POSIX)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
    os.close(fd)
    if not IS_WINDOWS:
        os.chmod(path, 0o600)


class QuietLog:
    """Logs a repeated event once per LOG_REPEAT_EVERY seconds per key, then says how many it
    left out: a client that provokes the same warning thousands of times a second must not
    flood the operator's console or disk. Keys are fixed strings (codes), never client data."""

    def __init__(self, every=LOG_REPEAT_EVERY):
        self.every = every
        self.said = {}             # key -> when it was last logged
        self.skipped = {}          # key -> how many were left out since

    def log(self, level, key, message, *args, exc_info=False):
        if not log.isEnabledFor(level):
            return
        now = time.monotonic()
        said = self.said.get(key)
        if said is not None and now - said < self.every:
            self.skipped[key] = self.skipped.get(key, 0) + 1
            return
        self.said[key] = now
        skipped = self.skipped.pop(key, 0)
        if skipped:
            message += " (and %d more like it in %d s)" % (skipped, self.every)
        log.log(level, message, *args, exc_info=exc_info)

    def info(self, key, message, *args):
        self.log(logging.INFO, key, message, *args)

    def warning(self, key, message, *args):
        self.log(logging.WARNING, key, message, *args)

    def exception(self, key, message, *args):
        self.log(logging.ERROR, key, message, *args, exc_info=True)


CLIENT_LOG = QuietLog()      # errors answered to clients, by code
HTTP_LOG = QuietLog()        # refused HTTP requests
STORAGE_LOG = QuietLog()     # the database or the disk failing
LOOP_LOG = QuietLog()        # the loop itself: accept, descriptors, slow clients, bugs


class FdBudget:
    """File descriptors the server may still open. Sockets and files are counted when they
    are taken and checked before the work that needs them (accept, a download, a partial
    upload), so the process never runs into its open-file limit. limit None: no limit known."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0

    @property
    def room(self):
        return 1 << 30 if self.limit is None else self.limit - self.used

    def take(self):
        if self.limit is not None and self.used >= self.limit:
            return False
        self.used += 1
        return True

    def release(self):
        self.used -= 1


_PAGE_MARKER = re.compile(r"\{\{([a-z_]+)\}\}")


def fill_markers(template, values):
    """A client_web/ template with each {{name}} replaced by values[name] (a KeyError if it
    has none). One pass: a marker inside a value is left as it is. CSS braces need no
    doubling, unlike str.format."""
    return _PAGE_MARKER.sub(lambda match: values[match.group(1)], template)


class TokenBucket:
    """Flood control: `rate` tokens per second, at most `burst` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now):
        if self.rate <= 0:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

###############################################################################
# Framing codec (sans-I/O) ####################################################
###############################################################################


def encode_frame(header, payload=b""):
    """One frame: lengths, compact JSON header, payload."""
    raw = header if isinstance(header, (bytes, bytearray)) else dump_json(header)
    return FRAME_PREFIX.pack(len(raw), len(payload)) + raw + payload


def frame_json(raw_header):
    """Frame an already encoded JSON header with no payload (the broadcast fast path)."""
    return FRAME_PREFIX.pack(len(raw_header), 0) + raw_header


def _reject_json_constant(name):
    """NaN and Infinity are not JSON (RFC 8259); Python would accept and echo them."""
    raise ValueError("not JSON: " + name)


# one decoder for every header: json.loads(..., parse_constant=...) would build a new
# decoder per call, a quarter of the cost of a small header
_json_decoder = json.JSONDecoder(parse_constant=_reject_json_constant)


def decode_header(raw):
    """JSON header bytes -> dict with a string `type`, or ChatError (not fatal)."""
    try:
        obj = _json_decoder.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ChatError("bad_json", "The frame header is not valid UTF-8 JSON.") from None
    except RecursionError:
        raise ChatError("bad_json", "The frame header is nested too deeply.") from None
    if b"\\u" in raw and _has_lone_surrogate(obj):
        # JSON's \ud800 escapes decode to lone surrogates, which are not text: SQLite, the
        # UTF-8 encoder and every client would fail on them later
        raise ChatError("bad_json", "The frame header contains an unpaired surrogate "
                        "(\\ud800-\\udfff).")
    if not isinstance(obj, dict):
        raise bad_request("The frame header must be a JSON object.")
    if not isinstance(obj.get("type"), str):
        raise bad_request("The frame header has no string field 'type'.")
    return obj


def _has_lone_surrogate(obj):
    try:
        _json_encoder.encode(obj).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return True
    return False


class FrameDecoder:
    """Splits a byte stream into (raw_header, payload) frames. No sockets here.

    `feed(data)` returns the complete frames; a declared length over a limit raises
    FrameError before any of the frame body is awaited.

    A large payload (a file chunk) can be received in place: once its header is complete,
    `receive_buffer()` gives a view of the part still missing, for `recv_into()`, and
    `received(n)` records what arrived there. The payload is then yielded as the
    bytearray it was received into, copied once from the kernel instead of three times.
    """

    def __init__(self, max_header=MAX_HEADER_BYTES, max_payload=MAX_PAYLOAD_BYTES,
                 direct_min=DIRECT_PAYLOAD_MIN):
        self.max_header = max_header
        self.max_payload = max_payload
        self.direct_min = direct_min
        self._buf = bytearray()
        self._big = None           # [raw_header, payload bytearray, bytes filled]

    def feed(self, data):
        self.append(data)
        return list(self.frames())

    def append(self, data):
        if self._big is not None:
            data = self._fill_big(data)
        self._buf += data

    def _fill_big(self, data):
        big = self._big
        n = min(len(big[1]) - big[2], len(data))
        big[1][big[2]:big[2] + n] = data[:n]
        big[2] += n
        return data[n:]

    def receive_buffer(self):
        """A writable view for the rest of a large payload, or None (then use feed/append)."""
        big = self._big or self._start_big()
        if big is None or big[2] == len(big[1]):
            return None
        return memoryview(big[1])[big[2]:]

    def received(self, n):
        """`n` bytes were written into the view `receive_buffer()` returned."""
        self._big[2] += n

    def _start_big(self):
        buf = self._buf
        if len(buf) < 8:
            return None
        hlen, plen = FRAME_PREFIX.unpack_from(buf, 0)
        if plen < self.direct_min or not 0 < hlen <= self.max_header or \
                plen > self.max_payload:
            return None            # small, or over a limit: frames() decides
        have = len(buf) - 8 - hlen
        if have < 0 or have >= plen:
            return None            # the header is incomplete, or the frame already is
        payload = bytearray(plen)
        payload[:have] = memoryview(buf)[8 + hlen:]
        self._big = [bytes(buf[8:8 + hlen]), payload, have]
        del buf[:]
        return self._big

    def frames(self):
        """Yield complete frames from the buffer; raise FrameError at the first bad one."""
        big = self._big
        if big is not None:
            if big[2] < len(big[1]):
                return
            self._big = None
            yield big[0], big[1]
        buf = self._buf
        pos = 0
        view = memoryview(buf)     # slices of a view copy once (a 1 MiB chunk is one copy)
        try:
            while len(buf) - pos >= 8:
                hlen, plen = FRAME_PREFIX.unpack_from(buf, pos)
                if hlen == 0:
                    raise FrameError("bad_frame", "A frame header length of 0 is not allowed.")
                if hlen > self.max_header:
                    raise FrameError("frame_too_large", "Frame header of %d bytes exceeds the "
                                     "limit of %d." % (hlen, self.max_header))
                if plen > self.max_payload:
                    raise FrameError("frame_too_large", self._payload_refusal(plen))
                end = pos + 8 + hlen + plen
                if len(buf) < end:
                    break
                start = pos + 8
                pos = end          # before the yield: a caller may stop after any frame
                yield bytes(view[start:start + hlen]), bytes(view[start + hlen:end])
        finally:
            view.release()
            if pos:
                del buf[:pos]

    def _payload_refusal(self, plen):
        if self.max_payload == 0:
            return "A frame before 'hello' carries no payload (%d bytes declared)." % plen
        return "Frame payload of %d bytes exceeds the limit of %d." % (plen, self.max_payload)

    @property
    def buffered(self):
        """Bytes held for an incomplete frame."""
        big = self._big
        return len(self._buf) + (big[2] + 8 + len(big[0]) if big is not None else 0)

###############################################################################
# HTTP/1.1 request parser ######################################################
###############################################################################
#
# HttpParser turns the bytes of one connection into events:
#   RequestHead(request)  once the request line and header fields are complete,
#   BodyChunk(data)       zero or more, as body bytes arrive (never buffered whole),
#   RequestEnd()          when the body (Content-Length or chunked) is complete.
# Keep-alive and pipelining: after RequestEnd the next request is parsed from the same
# buffer. After a request with "Connection: close" (or HTTP/1.0 without keep-alive) every
# further byte is discarded. After a request asking for a protocol upgrade (GET /ws) the
# parser pauses: later bytes belong to the new protocol, take_buffer() hands them over.
# Limits are checked on the bytes buffered so far, before a line is complete.
#
# Driving it (the connection layer):
#   try: events = conn.http.feed(data)
#   except HttpError as err: handle(err.events); send(http_error_response(err)); close
#   RequestHead -> route on request.method/path; GET /ws -> send(ws_handshake_response(req)),
#                  conn.ws = WsConnection(); events = conn.ws.feed(conn.http.take_buffer())
#                  (a refused handshake: send the HttpError response and close)
#   BodyChunk   -> write to the upload file (the server enforces its own max body size,
#                  from request.content_length, or by counting for a chunked body)
#   RequestEnd  -> answer; close after the answer if not request.keep_alive
#   An upgrade request the server declines (e.g. "Upgrade: h2c"): answer, then resume().

HTTP_MAX_REQUEST_LINE = 8 * 1024       # bytes of "METHOD target HTTP/1.1" (longer: 414)
HTTP_MAX_HEADER_BYTES = 16 * 1024      # bytes of the field lines after the request line (431)
HTTP_MAX_HEADERS = 100                 # field lines per request, trailers included (431)
HTTP_MAX_CHUNK_LINE = 1024             # "hex-size[;extensions]" line of a chunked body (400)
HTTP_MAX_QUERY_FIELDS = 100            # name=value pairs in the query string (400)
HTTP_MAX_LENGTH_DIGITS = 18            # Content-Length / Range digits; 10**18 B is "too big"
HTTP_MAX_CHUNK_SIZE_DIGITS = 15        # hex digits of one chunk size (16**15 B is "too big")

HTTP_100_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_HTTP_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HTTP_VERSION_RE = re.compile(rb"HTTP/([0-9])\.([0-9])")
_HTTP_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_HTTP_NOT_REQUEST_LINE_BYTE_RE = re.compile(rb"[^\x20-\x7e\r]")
_HTTP_BAD_FIELD_VALUE_RE = re.compile(rb"[\x00\r]")
_HTTP_DIGITS_RE = re.compile(r"[0-9]+")
_HTTP_HEX_RE = re.compile(rb"[0-9A-Fa-f]+")
_HTTP_CHUNK_EXT_RE = re.compile(rb"[ \t]*(;.*)?")

# Parser states.
_HTTP_HEAD = "head"
_HTTP_BODY = "body"                    # Content-Length body, self._remaining bytes to go
_HTTP_CHUNK_SIZE = "chunk-size"
_HTTP_CHUNK_DATA = "chunk-data"
_HTTP_CHUNK_END = "chunk-end"          # the CRLF after chunk data
_HTTP_TRAILERS = "trailers"
_HTTP_PAUSED = "paused"                # after an upgrade request: bytes kept for take_buffer()
_HTTP_CLOSED = "closed"                # after a "Connection: close" request: bytes dropped


class HttpError(ChatError):
    """A request the server refuses: .status (HTTP status), .reason (sentence).

    .headers: extra response headers (e.g. Allow, Sec-WebSocket-Version, Content-Range).
    .events: events parsed in the same feed() call before the error, so a pipelined request
    that came before the bad one can still be answered. code defaults to "http_<status>".
    """

    def __init__(self, status: int, message: str, headers=(), code: "str | None" = None):
        super().__init__(code or "http_%d" % status, message)
        self.status = status
        self.reason = message
        self.headers = list(headers)
        self.events = []


class HttpRequest:
    """One parsed request head. Header names are lower-case; repeats are joined with ", "."""

    __slots__ = ("method", "target", "path", "raw_path", "query", "version", "headers",
                 "content_length", "chunked", "keep_alive", "upgrade", "expect_continue")

    def __init__(self, method: str, target: str, version: str, headers: dict):
        self.method = method
        self.target = target
        self.version = version                     # "HTTP/1.1" or "HTTP/1.0"
        self.headers = headers
        self.raw_path, query_string = _http_split_target(method, target)
        self.path = _http_decode_path(self.raw_path)
        self.query = _http_parse_query(query_string)
        self.content_length, self.chunked = _http_body_framing(version, headers)
        connection = _http_tokens(headers.get("connection", ""))
        self.keep_alive = _http_keep_alive(version, connection)
        self.upgrade = _http_upgrade(version, connection, headers)
        self.expect_continue = headers.get("expect", "").lower() == "100-continue"

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "HttpRequest(%s %s %s)" % (self.method, self.target, self.version)


@dataclass
class RequestHead:
    __slots__ = ("request",)
    request: HttpRequest


@dataclass
class BodyChunk:
    __slots__ = ("data",)
    data: bytes


@dataclass
class RequestEnd:
    __slots__ = ()


class HttpParser:
    """Sans-I/O HTTP/1.1 server-side parser: feed(bytes) -> [RequestHead, BodyChunk..., RequestEnd].

    feed() raises HttpError on a bad request; the parser then stays failed (every later
    feed() raises again): answer with http_error_response(err) and close the connection.
    """

    def __init__(self, *, max_request_line: int = HTTP_MAX_REQUEST_LINE,
                 max_header_bytes: int = HTTP_MAX_HEADER_BYTES,
                 max_headers: int = HTTP_MAX_HEADERS):
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._buf = bytearray()
        self._state = _HTTP_HEAD
        self._error = None
        self._request = None          # the request whose body is being read
        self._remaining = 0           # body or chunk bytes still expected
        self._reset_head()

    # -- public -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list:
        if self._error is not None:
            err = self._error
            raise HttpError(err.status, err.reason, err.headers, err.code)
        events = []
        if self._state == _HTTP_CLOSED:
            return events
        if self._state == _HTTP_BODY and not self._buf and data:
            data = self._take_body_directly(data, events)
        if self._state == _HTTP_CLOSED:
            return events
        self._buf += data
        if self._state == _HTTP_PAUSED:
            return events
        try:
            self._run(events)
        except HttpError as err:
            self._error = err
            self._buf.clear()
            err.events = events
            raise
        return events

    @property
    def paused(self) -> bool:
        """True after an upgrade request ended: the rest of the stream is not HTTP."""
        return self._state == _HTTP_PAUSED

    def take_buffer(self) -> bytes:
        """Unparsed bytes (after an upgrade request: the first bytes of the new protocol)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._reset_head()
        return rest

    def resume(self) -> list:
        """The server declined an upgrade and answered in HTTP: parse what follows as HTTP."""
        if self._state == _HTTP_PAUSED:
            self._state = _HTTP_HEAD
        return self.feed(b"")

    @property
    def buffered(self) -> int:
        """Bytes held by the parser (a body is never held beyond the current feed)."""
        return len(self._buf)

    # -- state machine ------------------------------------------------------------------

    def _run(self, events: list) -> None:
        while True:
            state = self._state
            if state == _HTTP_HEAD:
                request = self._parse_head()
                if request is None:
                    return
                self._start_body(request, events)
            elif state == _HTTP_BODY:
                if not self._buf:
                    return
                self._emit_body(self._remaining, events)
                if self._remaining == 0:
                    self._end_request(events)
            elif state == _HTTP_CHUNK_SIZE:
                if not self._parse_chunk_size():
                    return
            elif state == _HTTP_CHUNK_DATA:
                if not self._buf:
                    return
                self._emit_body(self._remaining, events)
                if self._remaining == 0:
                    self._state = _HTTP_CHUNK_END
            elif state == _HTTP_CHUNK_END:
                if not self._parse_chunk_end():
                    return
            elif state == _HTTP_TRAILERS:
                if not self._parse_trailers():
                    return
                self._end_request(events)
            else:  # paused or closed
                return

    def _start_body(self, request: HttpRequest, events: list) -> None:
        events.append(RequestHead(request))
        self._request = request
        if request.chunked:
            self._state = _HTTP_CHUNK_SIZE
        elif request.content_length:
            self._remaining = request.content_length
            self._state = _HTTP_BODY
        else:
            # RFC 9112 6.3: "If this is a request message and none of the above are true,
            # then the message body length is zero (no message body is present)."
            self._end_request(events)

    def _end_request(self, events: list) -> None:
        events.append(RequestEnd())
        request, self._request = self._request, None
        self._reset_head()
        if request.upgrade is not None:
            self._state = _HTTP_PAUSED
        elif not request.keep_alive:
            # RFC 9112 9.6: "The server MUST NOT process any further requests received on
            # that connection" (after a request with the "close" connection option).
            self._state = _HTTP_CLOSED
            self._buf.clear()
        else:
            self._state = _HTTP_HEAD

    def _emit_body(self, limit: int, events: list) -> None:
        n = min(limit, len(self._buf))
        events.append(BodyChunk(bytes(self._buf[:n])))
        del self._buf[:n]
        self._remaining -= n

    def _take_body_directly(self, data: bytes, events: list) -> bytes:
        """Fast path for large uploads: hand body bytes out without copying them to the buffer."""
        n = min(self._remaining, len(data))
        events.append(BodyChunk(bytes(data[:n])))
        self._remaining -= n
        if self._remaining == 0:
            self._end_request(events)
        return data[n:]

    # -- request head -------------------------------------------------------------------

    def _reset_head(self) -> None:
        self._scan = 0                # where the next unparsed line starts in self._buf
        self._checked = 0             # request-line bytes already checked for garbage
        self._request_line = None     # (method, target, version) once parsed
        self._head_start = 0          # offset of the first field line
        self._fields = []

    def _parse_head(self) -> "HttpRequest | None":
        """Consume lines until the empty line ending the head; None if more bytes are needed."""
        buf = self._buf
        while True:
            newline = buf.find(b"\n", self._scan)
            if newline == -1:
                self._check_partial_line()
                return None
            line = bytes(buf[self._scan:newline])
            # RFC 9112 2.2: "a recipient MAY recognize a single LF as a line terminator and
            # ignore any preceding CR."
            if line.endswith(b"\r"):
                line = line[:-1]
            self._scan = newline + 1
            if self._request_line is None:
                if not line:
                    # RFC 9112 2.2: "a server that is expecting to receive and parse a
                    # request-line SHOULD ignore at least one empty line (CRLF) received prior
                    # to the request-line."
                    del buf[:self._scan]
                    self._scan = self._checked = 0
                    continue
                if len(line) > self.max_request_line:
                    raise HttpError(414, "The request line is longer than %d bytes."
                                    % self.max_request_line)
                self._request_line = _http_parse_request_line(line)
                self._head_start = self._scan
                continue
            if self._scan - self._head_start > self.max_header_bytes:
                raise HttpError(431, "The header fields are larger than %d bytes."
                                % self.max_header_bytes)
            if not line:
                method, target, version = self._request_line
                headers = _http_collect_headers(version, self._fields)
                del buf[:self._scan]
                return HttpRequest(method, target, version, headers)
            if len(self._fields) >= self.max_headers:
                raise HttpError(431, "More than %d header fields." % self.max_headers)
            self._fields.append(_http_parse_field_line(line))

    def _check_partial_line(self) -> None:
        """Limits and early garbage detection for a line whose end has not arrived yet."""
        buf = self._buf
        if self._request_line is None:
            if len(buf) - self._scan > self.max_request_line + 1:
                raise HttpError(414, "The request line is longer than %d bytes."
                                % self.max_request_line)
            start = max(self._scan, self._checked)
            if _HTTP_NOT_REQUEST_LINE_BYTE_RE.search(buf, start):
                raise HttpError(400, "This is not an HTTP request line.")
            self._checked = len(buf)
        elif len(buf) - self._head_start > self.max_header_bytes:
            raise HttpError(431, "The header fields are larger than %d bytes."
                            % self.max_header_bytes)

    # -- chunked body (RFC 9112 7.1) ----------------------------------------------------

    def _take_line(self, limit: int) -> "bytes | None":
        newline = self._buf.find(b"\n", 0, limit + 2)
        if newline == -1:
            if len(self._buf) > limit + 1:
                raise HttpError(400, "A chunked-body line is longer than %d bytes." % limit)
            return None
        line = bytes(self._buf[:newline])
        del self._buf[:newline + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _parse_chunk_size(self) -> bool:
        # chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF ; chunk-size = 1*HEXDIG
        line = self._take_line(HTTP_MAX_CHUNK_LINE)
        if line is None:
            return False
        size = _HTTP_HEX_RE.match(line)
        if size is None or not _HTTP_CHUNK_EXT_RE.fullmatch(line, size.end()):
            raise HttpError(400, "Malformed chunk size line.")
        if size.end() > HTTP_MAX_CHUNK_SIZE_DIGITS:
            raise HttpError(413, "A chunk is too large.")
        self._remaining = int(size.group(), 16)
        if self._remaining == 0:
            # last-chunk, then trailer-section CRLF
            self._trailer_bytes = 0
            self._trailer_count = 0
            self._state = _HTTP_TRAILERS
        else:
            self._state = _HTTP_CHUNK_DATA
        return True

    def _parse_chunk_end(self) -> bool:
        buf = self._buf
        if buf[:1] == b"\n":
            del buf[:1]
        elif buf[:2] == b"\r\n":
            del buf[:2]
        elif len(buf) < 2 and buf in (b"", b"\r"):
            return False
        else:
            raise HttpError(400, "Chunk data is not followed by CRLF.")
        self._state = _HTTP_CHUNK_SIZE
        return True

    def _parse_trailers(self) -> bool:
        """Trailer fields are read within the header limits and ignored."""
        while True:
            line = self._take_line(self.max_header_bytes)
            if line is None:
                return False
            if not line:
                return True
            self._trailer_bytes += len(line) + 2
            self._trailer_count += 1
            if self._trailer_bytes > self.max_header_bytes:
                raise HttpError(431, "The trailer fields are larger than %d bytes."
                                % self.max_header_bytes)
            if self._trailer_count > self.max_headers:
                raise HttpError(431, "More than %d trailer fields." % self.max_headers)
            _http_parse_field_line(line)


def _http_parse_request_line(line: bytes) -> tuple:
    # RFC 9112 3: request-line = method SP request-target SP HTTP-version
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "Malformed request line.")
    method, target, version = parts
    if not _HTTP_TOKEN_RE.fullmatch(method):
        raise HttpError(400, "Malformed request method.")
    if not _HTTP_TARGET_RE.fullmatch(target):
        raise HttpError(400, "Malformed request target.")
    match = _HTTP_VERSION_RE.fullmatch(version)
    if match is None:
        raise HttpError(400, "Malformed HTTP version.")
    if match.group(1) != b"1":
        raise HttpError(505, "Only HTTP/1.0 and HTTP/1.1 are supported.")
    # RFC 9110 2.5: a recipient "SHOULD process the message as if it were in the highest
    # minor version within that major version to which the recipient is conformant".
    version_name = "HTTP/1.0" if match.group(2) == b"0" else "HTTP/1.1"
    return method.decode("ascii"), target.decode("ascii"), version_name


def _http_parse_field_line(line: bytes) -> tuple:
    # RFC 9112 5: field-line = field-name ":" OWS field-value OWS
    if line[:1] in (b" ", b"\t"):
        # RFC 9112 5.2: a server "MUST either reject the message by sending a 400 (Bad
        # Request) ... or replace each received obs-fold with one or more SP octets".
        raise HttpError(400, "Obsolete line folding in header fields is not accepted.")
    name, colon, value = line.partition(b":")
    if not colon:
        raise HttpError(400, "A header line has no colon.")
    if not _HTTP_TOKEN_RE.fullmatch(name):
        # RFC 9112 5.1: "A server MUST reject, with a response status code of 400 (Bad
        # Request), any received request message that contains whitespace between a header
        # field name and colon."
        raise HttpError(400, "Malformed header field name.")
    value = value.strip(b" \t")
    if _HTTP_BAD_FIELD_VALUE_RE.search(value):
        # RFC 9110 5.5: "a recipient of CR, LF, or NUL within a field value MUST either
        # reject the message or replace each of those characters with SP".
        raise HttpError(400, "A header field value contains CR or NUL.")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _http_collect_headers(version: str, fields: list) -> dict:
    headers = {}
    for name, value in fields:
        if name in headers:
            if name == "host":
                # RFC 9112 3.2: "A server MUST respond with a 400 (Bad Request) status code to
                # any HTTP/1.1 request message that lacks a Host header field and to any
                # request message that contains more than one Host header field line".
                raise HttpError(400, "More than one Host header field.")
            headers[name] += ", " + value
        else:
            headers[name] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "An HTTP/1.1 request needs a Host header field.")
    return headers


def _http_split_target(method: str, target: str) -> tuple:
    """Return (raw path, query string) for the four request-target forms of RFC 9112 3.2."""
    if target.startswith("/"):                      # origin-form
        if "#" in target:
            raise HttpError(400, "A request target cannot contain a fragment.")
        path, _, query = target.partition("?")
        return path, query
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        # RFC 9112 3.2.2: "A server MUST accept the absolute-form in requests".
        parts = urllib.parse.urlsplit(target)
        return parts.path or "/", parts.query
    if target == "*" and method == "OPTIONS":       # asterisk-form
        return "*", ""
    if method == "CONNECT":                         # authority-form: the server refuses it
        return "", ""
    raise HttpError(400, "Malformed request target.")


def _http_decode_path(raw_path: str) -> str:
    try:
        path = urllib.parse.unquote(raw_path, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "The request path is not valid percent-encoded UTF-8.") from None
    if "\x00" in path:
        raise HttpError(400, "The request path contains NUL.")
    return path


def _http_parse_query(query_string: str) -> dict:
    if not query_string:
        return {}
    try:
        pairs = urllib.parse.parse_qs(query_string, keep_blank_values=True,
                                      max_num_fields=HTTP_MAX_QUERY_FIELDS)
    except ValueError:
        raise HttpError(400, "Too many query parameters.") from None
    return {name: values[0] for name, values in pairs.items()}


def _http_tokens(value: str) -> set:
    """Lower-case members of a comma-separated header list (Connection, Upgrade)."""
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def _http_body_framing(version: str, headers: dict) -> tuple:
    """Return (content_length or None, chunked) per RFC 9112 6.1-6.3."""
    transfer_encoding = headers.get("transfer-encoding")
    content_length = headers.get("content-length")
    if transfer_encoding is not None:
        if version == "HTTP/1.0":
            # RFC 9112 6.1: "A server or client that receives an HTTP/1.0 message containing
            # a Transfer-Encoding header field MUST treat the message as if the framing is
            # faulty, even if a Content-Length is present".
            raise HttpError(400, "Transfer-Encoding is not allowed in HTTP/1.0.")
        if content_length is not None:
            # RFC 9112 6.1: "A server MAY reject a request that contains both Content-Length
            # and Transfer-Encoding" (the classic request smuggling vector).
            raise HttpError(400, "Both Content-Length and Transfer-Encoding are present.")
        codings = [coding.strip().lower() for coding in transfer_encoding.split(",")]
        if codings[-1] != "chunked":
            # RFC 9112 6.3: "If a Transfer-Encoding header field is present in a request and
            # the chunked transfer coding is not the final encoding, ... the server MUST
            # respond with the 400 (Bad Request) status code and then close the connection."
            raise HttpError(400, "The final transfer coding must be chunked.")
        if len(codings) > 1:
            # RFC 9112 6.1: "A server that receives a request message with a transfer coding
            # it does not understand SHOULD respond with 501 (Not Implemented)."
            raise HttpError(501, "Only the chunked transfer coding is supported.")
        return None, True
    if content_length is None:
        return None, False
    # RFC 9110 8.6: a list of identical values ("42, 42") may be accepted; anything else
    # is an unrecoverable framing error.
    values = {value.strip() for value in content_length.split(",")}
    if len(values) != 1:
        raise HttpError(400, "Conflicting Content-Length values.")
    value = values.pop()
    if not _HTTP_DIGITS_RE.fullmatch(value):
        raise HttpError(400, "Invalid Content-Length.")
    if len(value) > HTTP_MAX_LENGTH_DIGITS:
        raise HttpError(413, "The request body is too large.")
    return int(value), False


def _http_keep_alive(version: str, connection: set) -> bool:
    # RFC 9112 9.3: HTTP/1.1 defaults to persistent connections unless "close" is present;
    # HTTP/1.0 persists only with "keep-alive".
    if version == "HTTP/1.1":
        return "close" not in connection
    return "keep-alive" in connection


def _http_upgrade(version: str, connection: set, headers: dict) -> "str | None":
    # RFC 9110 7.8: "A server MUST ignore an Upgrade header field that is received in an
    # HTTP/1.0 request." and a sender of Upgrade "MUST also send an "upgrade" connection
    # option in the Connection header field".
    if version != "HTTP/1.1" or "upgrade" not in connection or "upgrade" not in headers:
        return None
    return headers["upgrade"].strip().lower()


# -- responses ----------------------------------------------------------------------------

def _http_check_header(name: str, value: str) -> None:
    if not _HTTP_TOKEN_RE.fullmatch(name.encode("latin-1", "replace")):
        raise ValueError("invalid header name %r" % name)
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError("header %s: value contains CR, LF or NUL" % name)


def http_response_head(status: int, headers=(), content_length: "int | None" = None) -> bytes:
    """Status line and header block. Adds Date (unless given) and Content-Length (if not None).

    Raises ValueError for a header name/value that would break the block (CR/LF injection).
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = ["HTTP/1.1 %d %s" % (status, phrase)]
    has_date = False
    for name, value in headers:
        value = str(value)
        _http_check_header(name, value)
        has_date = has_date or name.lower() == "date"
        lines.append("%s: %s" % (name, value))
    if not has_date:
        # RFC 9110 6.6.1: "An origin server with a clock ... MUST generate a Date header
        # field" in 2xx, 3xx and 4xx responses.
        lines.append("Date: " + email.utils.formatdate(usegmt=True))
    if content_length is not None:
        lines.append("Content-Length: %d" % content_length)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_simple_response(status: int, body: bytes, content_type: str, extra_headers=(),
                         keep_alive: bool = True) -> bytes:
    """A whole response with a body in memory (pages, JSON, small files)."""
    headers = [("Content-Type", content_type)]
    headers.extend(extra_headers)
    headers.append(("Connection", "keep-alive" if keep_alive else "close"))
    return http_response_head(status, headers, len(body)) + body


def http_error_response(err: HttpError, keep_alive: bool = False) -> bytes:
    """JSON error body {"error": code, "message": sentence}, per docs/PROTOCOL.md section 5.

    keep_alive defaults to False: after a parse error the byte stream cannot be trusted.
    """
    body = json.dumps({"error": err.code, "message": err.reason},
                      separators=(",", ":")).encode("utf-8")
    headers = [("X-Content-Type-Options", "nosniff")] + list(err.headers)
    return http_simple_response(err.status, body, "application/json", headers, keep_alive)


def parse_range_header(value: "str | None", size: int) -> "tuple | None":
    """Return (start, end_inclusive) for a single byte range, or None to send the whole file.

    None when the header is absent, uses another unit, is syntactically invalid, asks for
    several ranges, or the file is empty (RFC 9110 14.2: "A server MAY ignore the Range
    header field"). Raises HttpError(416) with "Content-Range: bytes */size" when the single
    range cannot be satisfied.
    """
    if value is None or size <= 0:
        return None
    unit, equals, spec = value.partition("=")
    if not equals or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        # RFC 9110 14.1.2: suffix-range = "-" suffix-length; "If the selected representation
        # is shorter than the specified suffix-length, the entire representation is used."
        suffix = _http_range_number(last)
        if suffix is None:
            return None
        if suffix == 0:
            raise _http_unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = _http_range_number(first)
    end = _http_range_number(last) if last else max(start or 0, size - 1)
    if start is None or end is None:
        return None
    if end < start:
        # RFC 9110 14.1.1: "A byte-range-spec is invalid if the last-pos value is present
        # and less than the first-pos."
        return None
    if start >= size:
        # RFC 9110 14.1.1: for byte ranges, failing to overlap the current extent means
        # "the first-pos of all of the range-set values were greater than or equal to the
        # current length of the selected representation."
        raise _http_unsatisfiable(size)
    return start, min(end, size - 1)


def _http_range_number(text: str) -> "int | None":
    if not _HTTP_DIGITS_RE.fullmatch(text):
        return None
    if len(text) > HTTP_MAX_LENGTH_DIGITS:
        return 10 ** HTTP_MAX_LENGTH_DIGITS        # beyond any file: same meaning, no huge int
    return int(text)


def _http_unsatisfiable(size: int) -> HttpError:
    # RFC 9110 15.5.17: a server generating a 416 "SHOULD generate a Content-Range header
    # field specifying the current length of the selected representation".
    return HttpError(416, "The requested range is not satisfiable.",
                     [("Content-Range", "bytes */%d" % size)])


###############################################################################
# WebSocket, RFC 6455 ##########################################################
###############################################################################
#
# ws_handshake_response() checks an upgrade request and builds the 101 answer.
# WsConnection is the server side of an open connection: feed(bytes) -> events
# (WsText, WsBinary, WsPing, WsPong, WsClose). Replies that the protocol makes automatic
# (a Pong for each Ping, the echo of a Close) are queued by the codec itself: after each
# feed() the server sends ws.data_to_send(). The server must NOT answer pings itself.
# A protocol violation raises WsProtocolError(close_code, reason): the server sends
# ws.close(err.close_code, err.reason), flushes and closes the TCP connection.
# Server frames are never masked: "A server MUST NOT mask any frames that it sends to the
# client." (5.1)

WS_MAX_FRAME = 1 * 1024 * 1024 + 64 * 1024     # payload bytes of one frame (1009 beyond)
WS_MAX_MESSAGE = 1 * 1024 * 1024 + 64 * 1024   # bytes of a reassembled message (1009 beyond)
WS_MAX_FRAGMENTS = 1024                        # frames of one fragmented message (1009 beyond)
# 5.5: "All control frames MUST have a payload length of 125 bytes or less"
WS_MAX_CONTROL_PAYLOAD = 125
WS_MAX_CLOSE_REASON = WS_MAX_CONTROL_PAYLOAD - 2

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

WS_OP_CONTINUATION = 0x0
WS_OP_TEXT = 0x1
WS_OP_BINARY = 0x2
WS_OP_CLOSE = 0x8
WS_OP_PING = 0x9
WS_OP_PONG = 0xA
_WS_KNOWN_OPCODES = frozenset((WS_OP_CONTINUATION, WS_OP_TEXT, WS_OP_BINARY,
                               WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG))

WS_CLOSE_NORMAL = 1000
WS_CLOSE_GOING_AWAY = 1001
WS_CLOSE_PROTOCOL_ERROR = 1002
WS_CLOSE_NO_STATUS = 1005          # reported for a Close frame without a code; never sent
WS_CLOSE_INVALID_DATA = 1007
WS_CLOSE_POLICY = 1008
WS_CLOSE_TOO_BIG = 1009
WS_CLOSE_INTERNAL_ERROR = 1011

_WS_UTF8_DECODER = codecs.getincrementaldecoder("utf-8")


class WsProtocolError(ChatError):
    """The peer broke RFC 6455: close with .close_code (1002, 1007 or 1009) and .reason.

    .events: events parsed in the same feed() call before the violation.
    """

    def __init__(self, close_code: int, reason: str):
        super().__init__("ws_protocol", reason)
        self.close_code = close_code
        self.reason = reason
        self.events = []


@dataclass
class WsText:
    __slots__ = ("data",)
    data: str


@dataclass
class WsBinary:
    __slots__ = ("data",)
    data: bytes


@dataclass
class WsPing:
    __slots__ = ("data",)
    data: bytes


@dataclass
class WsPong:
    __slots__ = ("data",)
    data: bytes


@dataclass
class WsClose:
    __slots__ = ("code", "reason")
    code: int          # WS_CLOSE_NO_STATUS (1005) when the frame had no status code
    reason: str


# -- opening handshake (section 4.2) --------------------------------------------------------

def ws_accept_key(client_key: str) -> str:
    # 4.2.2: "concatenate this with the Globally Unique Identifier ... take the SHA-1 hash
    # of this concatenated value to obtain a 20-byte value and base64-encode".
    digest = hashlib.sha1((client_key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def ws_handshake_response(request: HttpRequest, allowed_host: "str | None" = None,
                          origin_ok=None) -> bytes:
    """Validate a WebSocket upgrade request and return the "101 Switching Protocols" head.

    Raises HttpError: 405 not GET, 400 not HTTP/1.1 or bad Sec-WebSocket-Key, 426 without
    "Upgrade: websocket" + "Connection: upgrade" or with a version other than 13, 403 when a
    browser's Origin names another host than the Host header (or allowed_host, a
    "host[:port]" also accepted, e.g. the name a reverse proxy uses), unless origin_ok(origin)
    says it is one of the server's own names.
    No subprotocol and no extension is negotiated.
    """
    if request.method != "GET":
        # 4.1: "The method of the request MUST be GET"
        raise HttpError(405, "A WebSocket handshake must use GET.", [("Allow", "GET")])
    if request.version != "HTTP/1.1":
        raise HttpError(400, "A WebSocket handshake needs HTTP/1.1.")
    if ("websocket" not in _http_tokens(request.header("upgrade", ""))
            or "upgrade" not in _http_tokens(request.header("connection", ""))):
        # RFC 9110 15.5.22: a server sending 426 "MUST send an Upgrade header field".
        raise HttpError(426, "This endpoint speaks WebSocket only.",
                        [("Upgrade", "websocket"), ("Connection", "Upgrade")])
    key = request.header("sec-websocket-key")
    if key is None or not _ws_key_is_valid(key):
        # 4.2.1: "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
        # decoded, is 16 bytes in length."
        raise HttpError(400, "Missing or invalid Sec-WebSocket-Key.")
    if request.header("sec-websocket-version") != "13":
        # 4.4: "If this version does not match a version understood by the server, the
        # server MUST abort the WebSocket handshake ... and instead send an appropriate HTTP
        # error code (such as 426 Upgrade Required) and a |Sec-WebSocket-Version| header".
        raise HttpError(426, "Only WebSocket version 13 is supported.",
                        [("Sec-WebSocket-Version", "13")])
    origin = request.header("origin")
    if origin is not None and not _ws_origin_allowed(origin, request.header("host"),
                                                     allowed_host) and \
            not (origin_ok is not None and origin_ok(origin)):
        # 10.2: "servers that are not intended to process input from any web page but only
        # for certain sites SHOULD verify the |Origin| field is an origin they expect."
        # Without this check any web page could open a chat session (cross-site WebSocket
        # hijacking). No Origin means a non-browser client, which is allowed.
        raise HttpError(403, "Cross-origin WebSocket connections are not allowed.")
    return http_response_head(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                    ("Sec-WebSocket-Accept", ws_accept_key(key))])


def _ws_key_is_valid(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


_WS_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _ws_origin_allowed(origin: str, host: "str | None", allowed_host: "str | None") -> bool:
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        default_port = _WS_DEFAULT_PORTS.get(parts.scheme.lower())
        origin_port = parts.port or default_port
    except ValueError:
        return False
    if parts.hostname is None or default_port is None:   # e.g. "null", "file://"
        return False
    for candidate in (host, allowed_host):
        if candidate and _ws_authority_matches(candidate, parts.hostname, origin_port,
                                               default_port):
            return True
    return False


def _ws_authority_matches(authority: str, hostname: str, port: int, default_port: int) -> bool:
    """Does "host[:port]" name hostname:port? A missing port means the origin scheme's default
    (the Host header carries no scheme; a TLS proxy in front keeps the browser's scheme)."""
    try:
        parts = urllib.parse.urlsplit("//" + authority.strip())
        candidate_port = parts.port or default_port
    except ValueError:
        return False
    return parts.hostname == hostname and candidate_port == port


# -- frames (section 5) ---------------------------------------------------------------------

def ws_encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One unmasked server frame. Cheap enough to run once per broadcast."""
    first = (0x80 | opcode) if fin else opcode
    length = len(payload)
    # 5.2: "If 0-125, that is the payload length. If 126, the following 2 bytes interpreted
    # as a 16-bit unsigned integer are the payload length. If 127, the following 8 bytes
    # interpreted as a 64-bit unsigned integer".
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def ws_encode_text(text: str) -> bytes:
    """Text frame; raises UnicodeEncodeError for lone surrogates (not valid UTF-8)."""
    return ws_encode_frame(WS_OP_TEXT, text.encode("utf-8"))


def ws_encode_binary(data: bytes) -> bytes:
    return ws_encode_frame(WS_OP_BINARY, data)


def ws_ping(data: bytes = b"") -> bytes:
    if len(data) > WS_MAX_CONTROL_PAYLOAD:
        raise ValueError("a ping payload is at most 125 bytes")
    return ws_encode_frame(WS_OP_PING, data)


def ws_pong(data: bytes = b"") -> bytes:
    if len(data) > WS_MAX_CONTROL_PAYLOAD:
        raise ValueError("a pong payload is at most 125 bytes")
    return ws_encode_frame(WS_OP_PONG, data)


def ws_close_frame(code: "int | None" = WS_CLOSE_NORMAL, reason: str = "") -> bytes:
    """Close frame; code None or 1005 gives an empty payload. The reason is cut (on a
    character boundary) to 123 bytes. ValueError for a code that must not be sent."""
    if code is None or code == WS_CLOSE_NO_STATUS:
        return ws_encode_frame(WS_OP_CLOSE, b"")
    if not _ws_close_code_is_valid(code):
        raise ValueError("close code %r cannot be sent" % (code,))
    reason_bytes = reason.encode("utf-8", "replace")
    if len(reason_bytes) > WS_MAX_CLOSE_REASON:
        reason_bytes = reason_bytes[:WS_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return ws_encode_frame(WS_OP_CLOSE, code.to_bytes(2, "big") + reason_bytes)


def _ws_close_code_is_valid(code: int) -> bool:
    # 7.4.1/7.4.2 and the IANA registry: 1004, 1005, 1006 and 1015 "MUST NOT be set as a
    # status code in a Close control frame"; 0-999 are unused; 1016-2999 are reserved;
    # 3000-4999 belong to libraries and applications.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _ws_unmask(payload, mask: bytes) -> bytes:
    # 5.3: "Octet i of the transformed data ("transformed-octet-i") is the XOR of octet i of
    # the original data ("original-octet-i") with octet at index i modulo 4 of the masking
    # key". One big-integer XOR runs at C speed.
    length = len(payload)
    if length == 0:
        return b""
    key = (mask * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(length, "little")


def _ws_parse_close_payload(payload: bytes) -> tuple:
    if not payload:
        return WS_CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        # 5.5.1: "If there is a body, the first two bytes of the body MUST be a 2-byte
        # unsigned integer ... representing a status code".
        raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR, "A close frame body of one byte.")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WsProtocolError(WS_CLOSE_INVALID_DATA, "The close reason is not UTF-8.") from None
    code = int.from_bytes(payload[:2], "big")
    if not _ws_close_code_is_valid(code):
        raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR, "Invalid close code %d." % code)
    return code, reason


def _ws_invalid_utf8() -> WsProtocolError:
    # 8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte
    # stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
    # Connection_." 7.4.1: 1007 is for "data within a message that was not consistent with
    # the type of the message (e.g., non-UTF-8 [RFC3629] data within a text message)".
    return WsProtocolError(WS_CLOSE_INVALID_DATA, "A text message is not valid UTF-8.")


class WsConnection:
    """Server side of an open WebSocket: feed(bytes) -> events; data_to_send() -> bytes."""

    def __init__(self, *, max_frame: int = WS_MAX_FRAME, max_message: int = WS_MAX_MESSAGE):
        self.max_frame = max_frame
        self.max_message = max_message
        self.close_sent = False
        self.close_received = False
        self._buf = bytearray()
        self._out = []              # frames the protocol requires (pongs, close echo)
        self._error = None
        self._message_opcode = None  # WS_OP_TEXT/WS_OP_BINARY while a fragmented message is open
        self._message = bytearray()  # the open message's bytes so far
        self._fragments = 0
        self._utf8 = None           # incremental decoder of the open text message (validation)

    # -- public -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list:
        """Parse client frames: all events at once. Raises WsProtocolError (sticky) on a
        violation, with the events parsed before it in `.events`."""
        self.receive_data(data)
        events = []
        try:
            for event in self.events():
                events.append(event)
        except WsProtocolError as err:
            err.events = events
            raise
        return events

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; events() parses them."""
        if self._error is None and not self.close_received:
            # 5.5.1: after the Close frame the peer sends nothing more; ignore stray bytes.
            self._buf += data

    def events(self):
        """Yield the events of the complete frames buffered so far, parsing lazily: a caller
        that stops early leaves the rest unparsed (and costs nothing for it). Raises
        WsProtocolError (sticky) on a violation."""
        if self._error is not None:
            raise WsProtocolError(self._error.close_code, self._error.reason)
        try:
            while not self.close_received:
                events = []
                if not self._parse_one_frame(events):
                    return
                yield from events
        except WsProtocolError as err:
            self._error = err
            self._buf.clear()
            raise

    def data_to_send(self) -> bytes:
        """Frames generated automatically by feed() (Pong replies, Close echo); b"" if none."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def close(self, code: "int | None" = WS_CLOSE_NORMAL, reason: str = "") -> bytes:
        """Close frame for a server-initiated close (or after WsProtocolError); b"" if a
        Close was already sent. Remembers it, so the client's answer is not echoed."""
        if self.close_sent:
            return b""
        self.close_sent = True
        return ws_close_frame(code, reason)

    @property
    def closed(self) -> bool:
        """Both Close frames exchanged: 7.1.1 "the server ... SHOULD close the underlying TCP
        connection first" once data_to_send() is flushed."""
        return self.close_sent and self.close_received

    # -- frame parsing ------------------------------------------------------------------

    def _parse_one_frame(self, events: list) -> bool:
        """Parse the frame at the start of the buffer into `events`; False if incomplete."""
        buf = self._buf
        available = len(buf)
        if available < 2:
            return False
        first, second = buf[0], buf[1]
        opcode = first & 0x0F
        self._check_frame_start(first, second)
        length = second & 0x7F
        header_size = 2
        if length == 126:
            if available < 4:
                return False
            length = int.from_bytes(buf[2:4], "big")
            header_size = 4
        elif length == 127:
            if available < 10:
                return False
            length = int.from_bytes(buf[2:10], "big")
            header_size = 10
            if length >> 63:
                # 5.2: "the most significant bit MUST be 0"
                raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR, "Invalid 64-bit payload length.")
        self._check_frame_size(opcode, length)
        payload_start = header_size + 4
        end = payload_start + length
        if available < end:
            return False
        mask = bytes(buf[payload_start - 4:payload_start])
        payload = _ws_unmask(buf[payload_start:end], mask)
        del buf[:end]
        self._on_frame(opcode, bool(first & 0x80), payload, events)
        if self.close_received:
            buf.clear()
        return True

    def _check_frame_start(self, first: int, second: int) -> None:
        """Everything the first two header bytes can tell, before any payload is read."""
        if first & 0x70:
            # 5.2: RSV1-3 "MUST be 0 unless an extension is negotiated that defines meanings
            # for non-zero values. If a nonzero value is received and none of the negotiated
            # extensions defines the meaning of such a nonzero value, the receiving endpoint
            # MUST _Fail the WebSocket Connection_."
            raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR, "Reserved bits are set.")
        opcode = first & 0x0F
        if opcode not in _WS_KNOWN_OPCODES:
            # 5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the
            # WebSocket Connection_."
            raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR, "Unknown opcode %d." % opcode)
        if not second & 0x80:
            # 5.1: "The server MUST close the connection upon receiving a frame that is not
            # masked. In this case, a server MAY send a Close frame with a status code of
            # 1002 (protocol error)"
            raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR, "Client frames must be masked.")
        if opcode >= WS_OP_CLOSE:
            # 5.5: "All control frames MUST have a payload length of 125 bytes or less and
            # MUST NOT be fragmented."
            if not first & 0x80:
                raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR, "A fragmented control frame.")
            if second & 0x7F > WS_MAX_CONTROL_PAYLOAD:
                raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR,
                                      "A control frame longer than 125 bytes.")
        elif opcode == WS_OP_CONTINUATION:
            if self._message_opcode is None:
                raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR,
                                      "A continuation frame without a message to continue.")
            if self._fragments >= WS_MAX_FRAGMENTS:
                # even empty fragments cost a parse each: a message has a bounded number
                raise WsProtocolError(WS_CLOSE_TOO_BIG, "A message in more than %d fragments."
                                      % WS_MAX_FRAGMENTS)
        elif self._message_opcode is not None:
            # 5.4: "The fragments of one message MUST NOT be interleaved between the fragments
            # of another message unless an extension has been negotiated".
            raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR,
                                  "A new message started before the last one ended.")

    def _check_frame_size(self, opcode: int, length: int) -> None:
        if length > self.max_frame:
            raise WsProtocolError(WS_CLOSE_TOO_BIG,
                                  "A frame is larger than %d bytes." % self.max_frame)
        if opcode == WS_OP_CONTINUATION:
            length += len(self._message)
        if opcode < WS_OP_CLOSE and length > self.max_message:
            raise WsProtocolError(WS_CLOSE_TOO_BIG,
                                  "A message is larger than %d bytes." % self.max_message)

    def _on_frame(self, opcode: int, fin: bool, payload: bytes, events: list) -> None:
        if opcode < WS_OP_CLOSE:
            self._on_data_frame(opcode, fin, payload, events)
        elif opcode == WS_OP_PING:
            events.append(WsPing(payload))
            # 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
            # response, unless it already received a Close frame. ... A Pong frame sent in
            # response to a Ping frame must have identical "Application data""
            if not self.close_sent:
                self._out.append(ws_encode_frame(WS_OP_PONG, payload))
        elif opcode == WS_OP_PONG:
            events.append(WsPong(payload))
        else:
            self._on_close_frame(payload, events)

    def _on_data_frame(self, opcode: int, fin: bool, payload: bytes, events: list) -> None:
        if opcode != WS_OP_CONTINUATION:
            if fin:                                    # the common case: one-frame message
                events.append(self._single_frame_message(opcode, payload))
                return
            self._message_opcode = opcode
            self._message = bytearray()
            self._fragments = 0
            self._utf8 = _WS_UTF8_DECODER() if opcode == WS_OP_TEXT else None
        self._fragments += 1
        if self._utf8 is not None:
            # Validate each fragment as it comes, so bad UTF-8 fails fast.
            self._decode_fragment(payload, fin)
        # one buffer for the whole message: memory is its size, whatever the fragmentation
        self._message += payload
        if fin:
            message = bytes(self._message)
            if self._message_opcode == WS_OP_TEXT:
                events.append(WsText(message.decode("utf-8")))
            else:
                events.append(WsBinary(message))
            self._message_opcode = None
            self._message = bytearray()
            self._fragments = 0
            self._utf8 = None

    @staticmethod
    def _single_frame_message(opcode: int, payload: bytes):
        if opcode == WS_OP_BINARY:
            return WsBinary(payload)
        try:
            return WsText(payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise _ws_invalid_utf8() from None

    def _decode_fragment(self, payload: bytes, final: bool) -> str:
        try:
            return self._utf8.decode(payload, final)
        except UnicodeDecodeError:
            raise _ws_invalid_utf8() from None

    def _on_close_frame(self, payload: bytes, events: list) -> None:
        code, reason = _ws_parse_close_payload(payload)
        self.close_received = True
        events.append(WsClose(code, reason))
        if not self.close_sent:
            # 5.5.1: "If an endpoint receives a Close frame and did not previously send a
            # Close frame, the endpoint MUST send a Close frame in response. (When sending a
            # Close frame in response, the endpoint typically echos the status code it
            # received.)"
            self.close_sent = True
            self._out.append(ws_close_frame(code))


###############################################################################
# QR Code encoder (ISO/IEC 18004:2015) ########################################
###############################################################################

# What this section implements, and what it leaves out on purpose:
# - Byte mode only (the payload is a URL that carries a token; byte mode keeps
#   every payload encodable and the capacity rule simple). No ECI header: the
#   spec's default for byte mode is ISO-8859-1, but mainstream decoders (ZXing,
#   the phone cameras) detect UTF-8 there, and our URLs are ASCII anyway.
# - Versions 1-40, levels L/M/Q/H, all 8 masks, format and version information.
# - No Micro QR, no structured append, no numeric/alphanumeric/kanji segments.
#
# The pipeline follows ISO/IEC 18004:2015 clause 7.1 ("Encode procedure overview"):
#   steps 1-2  data analysis and encodation (bits -> data codewords) -> _qr_data_codewords()
#   step 3     error correction coding (Reed-Solomon per block)      -> _qr_rs_remainder()
#   step 4     structure final message (interleave the blocks)       -> _qr_interleave_blocks()
#   step 5     module placement (function patterns, zigzag)         -> QrCode._draw_*()
#   step 6     data masking: try the 8 patterns, keep lowest penalty -> QrCode._choose_mask()
#   step 7     format and version information                        -> QrCode._draw_format_bits()
#   QrCode.__init__ runs these steps in this order.


class QrDataTooLong(ValueError):
    """The data does not fit in version 40 (or in the forced version) at the chosen level."""


# -- Limits and spec constants -------------------------------------------------

_QR_MIN_VERSION = 1
_QR_MAX_VERSION = 40
_QR_EC_LEVELS = ("L", "M", "Q", "H")
_QR_NUM_MASKS = 8

# Table 12: error correction level indicator in the format information.
_QR_EC_FORMAT_BITS = {"L": 0b01, "M": 0b00, "Q": 0b11, "H": 0b10}

# Table 2: mode indicator for byte mode.
_QR_MODE_BYTE = 0b0100
_QR_MODE_INDICATOR_BITS = 4
# Table 3: character count indicator length for byte mode, by version range.
_QR_BYTE_COUNT_BITS_SMALL = 8    # versions 1-9
_QR_BYTE_COUNT_BITS_LARGE = 16   # versions 10-40
_QR_SMALL_VERSION_LAST = 9
# 7.4.9: "The end of data in the symbol is signalled by the Terminator sequence
# of 0 bits [...] 0000" - it may be truncated if the capacity ends earlier.
_QR_TERMINATOR_BITS = 4
# 7.4.10: "adding the Pad Codewords 11101100 and 00010001 alternately".
_QR_PAD_CODEWORDS = (0xEC, 0x11)

# Reed-Solomon over GF(2^8) with the field's prime polynomial
# x^8 + x^4 + x^3 + x^2 + 1 (7.5.2), and the generator's roots alpha^0..alpha^(n-1).
_QR_GF_PRIME_POLY = 0x11D

# 7.9.1: format information is a (15,5) BCH code, generator
# G(x) = x^10 + x^8 + x^5 + x^4 + x^2 + x + 1, XORed with the mask 101010000010010
# "to ensure that no combination of error correction level and mask pattern
# will result in an all-zero data string".
_QR_FORMAT_GENERATOR = 0x537
_QR_FORMAT_ECC_BITS = 10
_QR_FORMAT_XOR_MASK = 0x5412
_QR_FORMAT_TOTAL_BITS = 15
# 7.10: version information is an (18,6) BCH code, generator
# G(x) = x^12 + x^11 + x^10 + x^9 + x^8 + x^5 + x^2 + 1; only versions 7 and up carry it.
_QR_VERSION_GENERATOR = 0x1F25
_QR_VERSION_ECC_BITS = 12
_QR_VERSION_TOTAL_BITS = 18
_QR_VERSION_INFO_MIN_VERSION = 7

# 6.3.3 finder pattern (7x7) plus its 1-module separator (6.3.4); 6.3.6 alignment (5x5).
_QR_FINDER_RADIUS = 3          # centre to outer dark ring
_QR_SEPARATOR_RADIUS = 4       # centre to the light separator ring
_QR_ALIGNMENT_RADIUS = 2
_QR_TIMING_INDEX = 6           # row 6 and column 6 hold the timing patterns

# 7.8.3.1 Table 11: penalty weights of the mask evaluation.
_QR_PENALTY_N1 = 3    # run of >= 5 same-colour modules in a row/column: N1 + (run - 5)
_QR_PENALTY_N2 = 3    # each 2x2 block of one colour
_QR_PENALTY_N3 = 40   # 1:1:3:1:1 finder-like pattern with 4 light modules on a side
_QR_PENALTY_N4 = 10   # each full 5 % the dark proportion deviates from 50 %
_QR_N1_MIN_RUN = 5
_QR_N3_PATTERN = bytes((1, 0, 1, 1, 1, 0, 1))
_QR_N3_LIGHT_RUN = 4
_QR_N1_RUN_RE = re.compile(rb"\x00{%d,}|\x01{%d,}" % (_QR_N1_MIN_RUN, _QR_N1_MIN_RUN))

# 7.8.2 Table 10: data mask conditions; i = row, j = column. Where the condition
# is true the module is inverted.
_QR_MASK_CONDITIONS = (
    lambda i, j: (i + j) % 2 == 0,
    lambda i, j: i % 2 == 0,
    lambda i, j: j % 3 == 0,
    lambda i, j: (i + j) % 3 == 0,
    lambda i, j: (i // 2 + j // 3) % 2 == 0,
    lambda i, j: (i * j) % 2 + (i * j) % 3 == 0,
    lambda i, j: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
    lambda i, j: ((i + j) % 2 + (i * j) % 3) % 2 == 0,
)
assert len(_QR_MASK_CONDITIONS) == _QR_NUM_MASKS

# Table 9 (the only irregular data in the spec, so the only tables here).
# Row = error correction level, column = version (index 0 unused).
#                     Version: (pad) 1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40
_QR_ECC_CODEWORDS_PER_BLOCK = {
    "L": (None,  7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28, 28, 28, 30, 30, 26, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    "M": (None, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28),
    "Q": (None, 13, 22, 18, 26, 18, 24, 18, 22, 20, 24, 28, 26, 24, 20, 30, 24, 28, 28, 26, 30, 28, 30, 30, 30, 30, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    "H": (None, 17, 28, 22, 16, 22, 28, 26, 26, 24, 28, 24, 28, 22, 24, 24, 30, 28, 28, 26, 28, 30, 24, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
}
_QR_NUM_ERROR_CORRECTION_BLOCKS = {
    "L": (None,  1,  1,  1,  1,  1,  2,  2,  2,  2,  4,  4,  4,  4,  4,  6,  6,  6,  6,  7,  8,  8,  9,  9, 10, 12, 12, 12, 13, 14, 15, 16, 17, 18, 19, 19, 20, 21, 22, 24, 25),
    "M": (None,  1,  1,  1,  2,  2,  4,  4,  4,  5,  5,  5,  8,  9,  9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49),
    "Q": (None,  1,  1,  2,  2,  4,  4,  6,  6,  8,  8,  8, 10, 12, 16, 12, 17, 16, 18, 21, 20, 23, 23, 25, 27, 29, 34, 34, 35, 38, 40, 43, 45, 48, 51, 53, 56, 59, 62, 65, 68),
    "H": (None,  1,  1,  2,  4,  4,  4,  5,  6,  8,  8, 11, 11, 16, 16, 18, 16, 19, 21, 25, 25, 25, 34, 30, 32, 35, 37, 40, 42, 45, 48, 51, 54, 57, 60, 63, 66, 70, 74, 77, 81),
}


# -- Public entry point --------------------------------------------------------

def qr_encode(data, ec="M", version=None, mask=None):
    """Encode `data` (bytes, or str taken as UTF-8) as a QR Code in byte mode.

    ec: "L", "M", "Q" or "H". version: None picks the smallest version (1-40)
    that holds the data at that level; an int forces it. mask: None tries all
    eight and keeps the lowest penalty; an int 0-7 forces it.
    Raises QrDataTooLong (a ValueError) when the data does not fit, ValueError
    for a bad ec/version/mask, TypeError for data that is not bytes or str.
    """
    payload = _qr_payload_bytes(data)
    _qr_check_encode_args(ec, version, mask)
    chosen = _qr_choose_version(len(payload), ec, version)
    codewords = _qr_data_codewords(payload, chosen, ec)
    return QrCode(chosen, ec, codewords, mask)


def _qr_payload_bytes(data):
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"QR data must be bytes or str, not {type(data).__name__}")


def _qr_check_encode_args(ec, version, mask):
    if ec not in _QR_EC_LEVELS:
        raise ValueError(f"QR error correction level must be one of {_QR_EC_LEVELS}, not {ec!r}")
    if version is not None and not _qr_is_int_in(version, _QR_MIN_VERSION, _QR_MAX_VERSION):
        raise ValueError(f"QR version must be {_QR_MIN_VERSION}-{_QR_MAX_VERSION} or None, not {version!r}")
    if mask is not None and not _qr_is_int_in(mask, 0, _QR_NUM_MASKS - 1):
        raise ValueError(f"QR mask must be 0-{_QR_NUM_MASKS - 1} or None, not {mask!r}")


def _qr_is_int_in(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# -- Capacity: how many bytes fit -----------------------------------------------

def _qr_num_raw_data_modules(version):
    """Modules left for data + ECC codewords (incl. remainder bits) once the
    function patterns, format and version information are taken out."""
    size = _qr_size(version)
    # Finders with separators: three 8x8 squares (the separator is clipped by the edge).
    result = size * size - 3 * (_QR_SEPARATOR_RADIUS * 2) ** 2
    # Timing patterns: row 6 and column 6 between the separators.
    result -= 2 * (size - 16)
    # Format information: 2 x 15 modules, plus the dark module.
    result -= 2 * _QR_FORMAT_TOTAL_BITS + 1
    num_align = len(_qr_alignment_positions(version))
    if num_align:
        alignment_patterns = num_align * num_align - 3
        result -= alignment_patterns * 25
        # Alignment patterns on row/column 6 overlap the timing pattern by 5 modules.
        result += 2 * (num_align - 2) * 5
    if version >= _QR_VERSION_INFO_MIN_VERSION:
        result -= 2 * _QR_VERSION_TOTAL_BITS
    return result


def _qr_size(version):
    # 6.1: "Version 1 measures 21 modules x 21 modules, Version 2 measures 25 x 25
    # modules and so on increasing in steps of 4 modules per side"
    return 4 * version + 17


def _qr_num_data_codewords(version, ec):
    raw_codewords = _qr_num_raw_data_modules(version) // 8
    ecc = _QR_ECC_CODEWORDS_PER_BLOCK[ec][version] * _QR_NUM_ERROR_CORRECTION_BLOCKS[ec][version]
    return raw_codewords - ecc


def _qr_byte_count_bits(version):
    if version <= _QR_SMALL_VERSION_LAST:
        return _QR_BYTE_COUNT_BITS_SMALL
    return _QR_BYTE_COUNT_BITS_LARGE


def _qr_max_bytes(version, ec):
    """Largest byte-mode payload of a version/level (Table 7, "Byte" column)."""
    header_bits = _QR_MODE_INDICATOR_BITS + _qr_byte_count_bits(version)
    return (_qr_num_data_codewords(version, ec) * 8 - header_bits) // 8


def _qr_choose_version(num_bytes, ec, forced_version):
    if forced_version is not None:
        capacity = _qr_max_bytes(forced_version, ec)
        if num_bytes > capacity:
            raise QrDataTooLong(f"QR data is {num_bytes} bytes; version {forced_version}-{ec} holds at most {capacity}")
        return forced_version
    for version in range(_QR_MIN_VERSION, _QR_MAX_VERSION + 1):
        if num_bytes <= _qr_max_bytes(version, ec):
            return version
    capacity = _qr_max_bytes(_QR_MAX_VERSION, ec)
    raise QrDataTooLong(f"QR data is {num_bytes} bytes; level {ec} holds at most {capacity}")


# -- Steps 1-2: bit stream and data codewords -------------------------------------

class _QrBitBuffer:
    """A growing sequence of bits, most significant bit of each field first."""

    def __init__(self):
        self.bits = []

    def __len__(self):
        return len(self.bits)

    def append(self, value, length):
        assert length >= 0 and value >> length == 0, "value does not fit in length bits"
        self.bits.extend((value >> shift) & 1 for shift in range(length - 1, -1, -1))

    def to_bytes(self):
        assert len(self.bits) % 8 == 0
        out = bytearray()
        for start in range(0, len(self.bits), 8):
            byte = 0
            for bit in self.bits[start:start + 8]:
                byte = (byte << 1) | bit
            out.append(byte)
        return bytes(out)


def _qr_data_codewords(payload, version, ec):
    """Byte-mode segment + terminator + padding = exactly the data codewords."""
    capacity_bits = _qr_num_data_codewords(version, ec) * 8
    buf = _QrBitBuffer()
    buf.append(_QR_MODE_BYTE, _QR_MODE_INDICATOR_BITS)
    buf.append(len(payload), _qr_byte_count_bits(version))
    for byte in payload:
        buf.append(byte, 8)
    assert len(buf) <= capacity_bits, "caller checked the capacity"
    buf.append(0, min(_QR_TERMINATOR_BITS, capacity_bits - len(buf)))
    buf.append(0, -len(buf) % 8)  # 7.4.10: zero bits up to the codeword boundary
    codewords = bytearray(buf.to_bytes())
    pad_index = 0
    while len(codewords) < capacity_bits // 8:
        codewords.append(_QR_PAD_CODEWORDS[pad_index % 2])
        pad_index += 1
    assert len(codewords) * 8 == capacity_bits
    return bytes(codewords)


# -- Step 3: Reed-Solomon error correction over GF(256) ----------------------------

def _qr_build_gf_tables():
    """exp[i] = alpha^i (doubled in length so products need no modulo) and log."""
    exp = [0] * 512
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = value
        log[value] = power
        value <<= 1
        if value & 0x100:
            value ^= _QR_GF_PRIME_POLY
    for power in range(255, 512):
        exp[power] = exp[power - 255]
    return exp, log


_QR_GF_EXP, _QR_GF_LOG = _qr_build_gf_tables()


def _qr_gf_multiply(a, b):
    if a == 0 or b == 0:
        return 0
    return _QR_GF_EXP[_QR_GF_LOG[a] + _QR_GF_LOG[b]]


def _qr_rs_generator(degree):
    """Coefficients of prod_{i<degree} (x - alpha^i), highest power first,
    without the leading 1 (the polynomial is monic)."""
    poly = [1]
    for i in range(degree):
        root = _QR_GF_EXP[i]
        # Multiply poly by (x + root): shift up one power, add root * poly.
        product = poly + [0]
        for k, coefficient in enumerate(poly):
            product[k + 1] ^= _qr_gf_multiply(coefficient, root)
        poly = product
    assert len(poly) == degree + 1 and poly[0] == 1
    return poly[1:]


def _qr_rs_remainder(data, generator):
    """ECC codewords: remainder of data(x) * x^n divided by the generator (7.5.2)."""
    remainder = [0] * len(generator)
    for byte in data:
        factor = byte ^ remainder[0]
        remainder = remainder[1:] + [0]
        if factor:
            log_factor = _QR_GF_LOG[factor]
            for k, coefficient in enumerate(generator):
                if coefficient:
                    remainder[k] ^= _QR_GF_EXP[_QR_GF_LOG[coefficient] + log_factor]
    return bytes(remainder)


# -- Step 4: blocks and interleaving ----------------------------------------------

def _qr_interleave_blocks(data, version, ec):
    """Split the data codewords into blocks, add each block's ECC, interleave (7.6).

    Table 9 gives the block count; "short" blocks come first and the rest hold
    one more data codeword. The final sequence takes codeword 1 of every block,
    then codeword 2 and so on, then the ECC codewords the same way.
    """
    num_blocks = _QR_NUM_ERROR_CORRECTION_BLOCKS[ec][version]
    ecc_len = _QR_ECC_CODEWORDS_PER_BLOCK[ec][version]
    raw_codewords = _qr_num_raw_data_modules(version) // 8
    assert len(data) == _qr_num_data_codewords(version, ec)
    num_long = raw_codewords % num_blocks
    short_data_len = raw_codewords // num_blocks - ecc_len
    generator = _qr_rs_generator(ecc_len)
    data_blocks, ecc_blocks = [], []
    start = 0
    for index in range(num_blocks):
        length = short_data_len + (1 if index >= num_blocks - num_long else 0)
        block = data[start:start + length]
        start += length
        data_blocks.append(block)
        ecc_blocks.append(_qr_rs_remainder(block, generator))
    assert start == len(data)
    result = bytearray()
    for position in range(short_data_len + 1):
        for block in data_blocks:
            if position < len(block):
                result.append(block[position])
    for position in range(ecc_len):
        for block in ecc_blocks:
            result.append(block[position])
    assert len(result) == raw_codewords
    return bytes(result)


# -- Function pattern geometry -------------------------------------------------------

def _qr_alignment_positions(version):
    """Row/column centres of the alignment patterns (Annex E), computed.

    The first centre is 6, the last is size - 7, and the others are spaced
    evenly by an even step counted back from the last; any leftover goes into
    the first gap. Version 1 has none.
    """
    if version == 1:
        return []
    count = version // 7 + 2
    # Even step, rounded so that e.g. version 32 gets 26 (not 28).
    step = (version * 8 + count * 3 + 5) // (count * 4 - 4) * 2
    last = _qr_size(version) - 7
    positions = [last - step * k for k in range(count - 1)] + [_QR_TIMING_INDEX]
    return sorted(positions)


def _qr_format_bits(ec, mask):
    """15-bit format information for a level and mask (7.9.1), bit 14 first."""
    data = (_QR_EC_FORMAT_BITS[ec] << 3) | mask
    bits = (data << _QR_FORMAT_ECC_BITS) | _qr_bch_remainder(data, _QR_FORMAT_GENERATOR, _QR_FORMAT_ECC_BITS)
    bits ^= _QR_FORMAT_XOR_MASK
    assert bits >> _QR_FORMAT_TOTAL_BITS == 0
    return bits


def _qr_version_bits(version):
    """18-bit version information (7.10): 6 bits of version, 12 of BCH ECC."""
    bits = (version << _QR_VERSION_ECC_BITS) | _qr_bch_remainder(version, _QR_VERSION_GENERATOR, _QR_VERSION_ECC_BITS)
    assert bits >> _QR_VERSION_TOTAL_BITS == 0
    return bits


def _qr_bch_remainder(data, generator, ecc_bits):
    """Remainder of data(x) * x^ecc_bits divided by generator(x), over GF(2)."""
    remainder = data << ecc_bits
    for shift in range(remainder.bit_length() - 1, ecc_bits - 1, -1):
        if (remainder >> shift) & 1:
            remainder ^= generator << (shift - ecc_bits)
    assert remainder >> ecc_bits == 0
    return remainder


def _qr_format_positions(size):
    """(row, col) of format bits 0..14, for the copy around the top-left finder
    and for the copy split between the top-right and bottom-left finders
    (Figure 25). Row 6 / column 6 are skipped: that is the timing pattern."""
    near_top_left = ([(row, 8) for row in range(0, 6)] + [(7, 8), (8, 8), (8, 7)]
                     + [(8, col) for col in range(5, -1, -1)])
    split = ([(8, size - 1 - k) for k in range(8)]
             + [(size - 7 + k, 8) for k in range(7)])
    return near_top_left, split


def _qr_dark_module_position(size):
    # 7.9.1: "The module at position (4V + 9, 8) shall always be dark and does
    # not form part of the format information."
    return size - 8, 8


def _qr_version_positions(size):
    """(row, col) pairs of version bits 0..17, for the block above the
    bottom-left finder and the block left of the top-right finder (Figure 27)."""
    bottom_left = [(size - 11 + k % 3, k // 3) for k in range(_QR_VERSION_TOTAL_BITS)]
    top_right = [(col, row) for row, col in bottom_left]
    return bottom_left, top_right


# -- The symbol ---------------------------------------------------------------------------

class QrCode:
    """A finished QR Code symbol.

    Fields: version (1-40), ec ("L"/"M"/"Q"/"H"), mask (0-7), size (modules
    per side), modules (size rows of size bools, True = dark, no quiet zone).
    Build one with qr_encode(); the constructor takes the data codewords.
    """

    def __init__(self, version, ec, data_codewords, mask=None):
        self.version = version
        self.ec = ec
        self.size = _qr_size(version)
        size = self.size
        # Working matrices: bytearrays of 0/1 (fast to copy and search).
        self._grid = [bytearray(size) for _ in range(size)]
        self._is_function = [bytearray(size) for _ in range(size)]

        self._draw_function_patterns()
        self._reserve_format_and_version_areas()
        self._draw_codewords(_qr_interleave_blocks(data_codewords, version, ec))
        if mask is None:
            mask = self._choose_mask()
        self._grid = self._masked_grid(mask)
        self.mask = mask
        self._draw_format_bits()
        self._draw_version_bits()

        self.modules = [[bool(cell) for cell in row] for row in self._grid]
        del self._grid, self._is_function, self._data_positions
        assert len(self.modules) == size and all(len(row) == size for row in self.modules)
        assert 0 <= self.mask < _QR_NUM_MASKS

    def __repr__(self):
        return f"QrCode(version={self.version}, ec={self.ec!r}, mask={self.mask}, size={self.size})"

    def is_dark(self, row, col):
        """Module colour; outside the symbol (the quiet zone) is light."""
        return 0 <= row < self.size and 0 <= col < self.size and self.modules[row][col]

    # -- step 5: function patterns (6.3) --

    def _set_function(self, row, col, dark):
        self._grid[row][col] = 1 if dark else 0
        self._is_function[row][col] = 1

    def _draw_function_patterns(self):
        size = self.size
        # 6.3.5: "alternating dark and light modules, commencing and ending
        # with a dark module" on row 6 and column 6.
        for k in range(size):
            self._set_function(_QR_TIMING_INDEX, k, k % 2 == 0)
            self._set_function(k, _QR_TIMING_INDEX, k % 2 == 0)
        centre_far = size - 1 - _QR_FINDER_RADIUS
        for row, col in ((_QR_FINDER_RADIUS, _QR_FINDER_RADIUS),
                         (_QR_FINDER_RADIUS, centre_far),
                         (centre_far, _QR_FINDER_RADIUS)):
            self._draw_finder(row, col)
        positions = _qr_alignment_positions(self.version)
        corners = {(positions[0], positions[0]), (positions[0], positions[-1]),
                   (positions[-1], positions[0])} if positions else set()
        for row in positions:
            for col in positions:
                if (row, col) not in corners:  # those spots belong to the finders
                    self._draw_alignment(row, col)

    def _draw_finder(self, centre_row, centre_col):
        # Concentric squares by Chebyshev distance: 0-1 dark core (3x3),
        # 2 light, 3 dark ring, 4 the light separator (clipped at the edges).
        for dr in range(-_QR_SEPARATOR_RADIUS, _QR_SEPARATOR_RADIUS + 1):
            for dc in range(-_QR_SEPARATOR_RADIUS, _QR_SEPARATOR_RADIUS + 1):
                row, col = centre_row + dr, centre_col + dc
                if 0 <= row < self.size and 0 <= col < self.size:
                    self._set_function(row, col, max(abs(dr), abs(dc)) not in (2, _QR_SEPARATOR_RADIUS))

    def _draw_alignment(self, centre_row, centre_col):
        # Dark 5x5 ring, light 3x3 ring, dark centre.
        for dr in range(-_QR_ALIGNMENT_RADIUS, _QR_ALIGNMENT_RADIUS + 1):
            for dc in range(-_QR_ALIGNMENT_RADIUS, _QR_ALIGNMENT_RADIUS + 1):
                self._set_function(centre_row + dr, centre_col + dc, max(abs(dr), abs(dc)) != 1)

    def _reserve_format_and_version_areas(self):
        """Mark them as function modules, light for now: they are drawn in
        step 7, after the mask has been chosen (ISO 18004 clause 7.1 orders
        masking as step 6 and format/version information as step 7). So the
        mask evaluation sees these areas, and the dark module, as light; this
        is also what segno does, which lets tests compare the automatic choice."""
        near_top_left, split = _qr_format_positions(self.size)
        positions = near_top_left + split + [_qr_dark_module_position(self.size)]
        if self.version >= _QR_VERSION_INFO_MIN_VERSION:
            bottom_left, top_right = _qr_version_positions(self.size)
            positions += bottom_left + top_right
        for row, col in positions:
            self._set_function(row, col, False)

    # -- step 5: codeword placement (7.7.3) --

    def _draw_codewords(self, codewords):
        """Place the bits in two-module-wide columns, zigzagging up and down
        from the right edge, skipping function modules; column 6 (vertical
        timing) is skipped as a whole. Unfilled modules are remainder bits (0)."""
        size = self.size
        total_bits = len(codewords) * 8
        index = 0
        pair_rights = list(range(size - 1, _QR_TIMING_INDEX, -2)) + list(range(_QR_TIMING_INDEX - 1, 0, -2))
        data_positions = []
        for pair_number, right in enumerate(pair_rights):
            upward = pair_number % 2 == 0
            rows = range(size - 1, -1, -1) if upward else range(size)
            for row in rows:
                for col in (right, right - 1):
                    if self._is_function[row][col]:
                        continue
                    data_positions.append((row, col))
                    if index < total_bits:
                        self._grid[row][col] = (codewords[index >> 3] >> (7 - (index & 7))) & 1
                        index += 1
        assert index == total_bits, "all codewords placed"
        remainder_bits = len(data_positions) - total_bits
        assert len(data_positions) == _qr_num_raw_data_modules(self.version)
        assert 0 <= remainder_bits < 8
        self._data_positions = data_positions

    # -- step 6: masking (7.8) --

    def _masked_grid(self, mask):
        condition = _QR_MASK_CONDITIONS[mask]
        grid = [bytearray(row) for row in self._grid]
        for row, col in self._data_positions:
            if condition(row, col):
                grid[row][col] ^= 1
        return grid

    def _choose_mask(self):
        # 7.8.3.1: "The data mask pattern which results in the lowest penalty
        # score shall be selected"; ties keep the lowest mask number.
        scores = [_qr_penalty_score(self._masked_grid(mask)) for mask in range(_QR_NUM_MASKS)]
        return scores.index(min(scores))

    # -- step 7: format and version information (7.9, 7.10) --

    def _draw_format_bits(self):
        bits = _qr_format_bits(self.ec, self.mask)
        for positions in _qr_format_positions(self.size):
            for bit_index, (row, col) in enumerate(positions):
                self._set_function(row, col, (bits >> bit_index) & 1)
        self._set_function(*_qr_dark_module_position(self.size), True)

    def _draw_version_bits(self):
        if self.version < _QR_VERSION_INFO_MIN_VERSION:
            return
        bits = _qr_version_bits(self.version)
        for positions in _qr_version_positions(self.size):
            for bit_index, (row, col) in enumerate(positions):
                self._set_function(row, col, (bits >> bit_index) & 1)


# -- Mask penalty (7.8.3.1, Table 11) -------------------------------------------------

def _qr_penalty_score(grid):
    """Total penalty N1 + N2 + N3 + N4 of a masked matrix (rows of 0/1)."""
    rows = [bytes(row) for row in grid]
    columns = [bytes(column) for column in zip(*rows)]
    score = 0
    for line in rows + columns:
        score += _qr_run_penalty(line) + _qr_finder_like_penalty(line)
    score += _qr_block_penalty(rows)
    score += _qr_balance_penalty(rows)
    return score


def _qr_run_penalty(line):
    """N1: "Adjacent modules in row/column in same color, No. of modules = (5 + i):
    N1 + i"."""
    return sum(_QR_PENALTY_N1 + (match.end() - match.start() - _QR_N1_MIN_RUN)
               for match in _QR_N1_RUN_RE.finditer(line))


def _qr_block_penalty(rows):
    """N2: "Block of modules in same color, block size = m x n: N2 x (m-1) x (n-1)",
    counted (as usual) as N2 for every 2x2 square of one colour."""
    count = 0
    for upper, lower in zip(rows, rows[1:]):
        for a, b, c, d in zip(upper, upper[1:], lower, lower[1:]):
            if a == b == c == d:
                count += 1
    return _QR_PENALTY_N2 * count


def _qr_finder_like_penalty(line):
    """N3: "1:1:3:1:1 ratio (dark:light:dark:light:dark) pattern in row/column,
    preceded or followed by light area 4 modules wide".

    Read with module width 1, the light area may lie partly beyond the symbol
    (the quiet zone is light), and each pattern counts once. A match is
    searched again from its end; this is segno's reading of the rule too."""
    score = 0
    start = line.find(_QR_N3_PATTERN)
    while start != -1:
        end = start + len(_QR_N3_PATTERN)
        light_before = not any(line[max(start - _QR_N3_LIGHT_RUN, 0):start])
        light_after = not any(line[end:end + _QR_N3_LIGHT_RUN])
        if light_before or light_after:
            score += _QR_PENALTY_N3
            start = line.find(_QR_N3_PATTERN, end)
        else:
            start = line.find(_QR_N3_PATTERN, start + 1)
    return score


def _qr_balance_penalty(rows):
    """N4: "Proportion of dark modules in entire symbol, 50 +/- (5 x k)% to
    50 +/- (5 x (k + 1))%: N4 x k". k = floor(|dark% - 50| / 5), in integers."""
    total = len(rows) * len(rows)
    dark = sum(sum(row) for row in rows)
    k = abs(20 * dark - 10 * total) // total
    return _QR_PENALTY_N4 * k


###############################################################################
# QR Code renderers: console, SVG, PNG ########################################
###############################################################################

_QR_DEFAULT_QUIET_ZONE = 4      # 6.3.8: "The quiet zone shall be 4X wide"
_QR_DEFAULT_SCALE = 8           # pixels per module for SVG/PNG
_QR_MAX_SCALE = 64              # keeps a version-40 PNG under ~12k x 12k pixels
_QR_MAX_QUIET_ZONE = 64

# Console output, which colour is which:
# A terminal draws a character cell in two colours: the glyph ("ink") in the
# foreground colour, the rest in the background colour. We print the LIGHT
# modules as ink (block characters) and leave DARK modules as blank cells, so
# the dark modules take the terminal background. Console defaults are light
# text on a dark background (cmd.exe, PowerShell, most Linux/macOS themes), and
# there this gives the dark-on-light symbol scanners expect, with the quiet zone
# printed as a light frame. (qrencode -t UTF8 makes the same choice.)
# A light-theme terminal would show the plain text inverted; ansi=True pins
# both colours with SGR codes (bright-white ink on black background), so the
# very same characters come out dark-on-light in ANY theme. Plain text stays
# the default because consoles that do not interpret escape codes (legacy
# Windows conhost, redirected output) would print them literally.
_QR_BLOCK_FULL = "\u2588"     # FULL BLOCK: both half-rows light
_QR_BLOCK_UPPER = "\u2580"    # UPPER HALF BLOCK: top light, bottom dark
_QR_BLOCK_LOWER = "\u2584"    # LOWER HALF BLOCK: top dark, bottom light
_QR_BLOCK_NONE = " "          # both dark
_QR_CONSOLE_CHARS = _QR_BLOCK_FULL + _QR_BLOCK_UPPER + _QR_BLOCK_LOWER + _QR_BLOCK_NONE
# One text row per module row, two characters per module: a character cell is
# about twice as tall as wide, so "##" is close to square. Same polarity as above.
_QR_ASCII_LIGHT = "##"
_QR_ASCII_DARK = "  "
_QR_ANSI_LIGHT_ON_DARK = "\x1b[97;40m"   # bright white foreground, black background
_QR_ANSI_RESET = "\x1b[0m"


def qr_render_console(qr, quiet=_QR_DEFAULT_QUIET_ZONE, ascii_only=False, ansi=False):
    """Text drawing of the symbol with a quiet zone, lines joined by "\\n".

    Default: Unicode half blocks, two module rows per text line. ascii_only:
    "##"/"  " per module, one line per module row, for streams that cannot
    encode the blocks (see qr_console_can_encode). ansi: wrap each line in
    colour codes so it reads dark-on-light in light and dark themes alike.
    """
    _qr_check_quiet(quiet)
    light_rows = _qr_light_rows(qr, quiet)
    if ascii_only:
        lines = ["".join(_QR_ASCII_LIGHT if light else _QR_ASCII_DARK for light in row)
                 for row in light_rows]
    else:
        if len(light_rows) % 2:
            # Pad the last half-line with light: it only extends the quiet zone.
            light_rows.append([True] * len(light_rows[0]))
        lines = ["".join(_qr_half_block(top, bottom) for top, bottom in zip(upper, lower))
                 for upper, lower in zip(light_rows[0::2], light_rows[1::2])]
    if ansi:
        lines = [_QR_ANSI_LIGHT_ON_DARK + line + _QR_ANSI_RESET for line in lines]
    return "\n".join(lines)


def _qr_half_block(top_light, bottom_light):
    if top_light:
        return _QR_BLOCK_FULL if bottom_light else _QR_BLOCK_UPPER
    return _QR_BLOCK_LOWER if bottom_light else _QR_BLOCK_NONE


def _qr_light_rows(qr, quiet):
    """Rows of booleans, True = light, the quiet zone included."""
    span = range(-quiet, qr.size + quiet)
    return [[not qr.is_dark(row, col) for col in span] for row in span]


def qr_console_can_encode(stream):
    """True when stream.encoding can encode the block characters the Unicode
    console drawing uses (UTF-8 and cp437 can; cp1252, latin-1 and ASCII cannot)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return False
    try:
        _QR_CONSOLE_CHARS.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def qr_render_svg(qr, scale=_QR_DEFAULT_SCALE, quiet=_QR_DEFAULT_QUIET_ZONE):
    """Standalone SVG: white background rect, dark modules as ONE <path> made of
    one rectangle per horizontal run, in module units (viewBox), crispEdges so
    viewers do not anti-alias module edges into grey seams."""
    _qr_check_scale(scale)
    _qr_check_quiet(quiet)
    side = qr.size + 2 * quiet
    parts = []
    for row in range(qr.size):
        col = 0
        while col < qr.size:
            if not qr.modules[row][col]:
                col += 1
                continue
            run_start = col
            while col < qr.size and qr.modules[row][col]:
                col += 1
            run = col - run_start
            parts.append(f"M{run_start + quiet},{row + quiet}h{run}v1h-{run}z")
    pixels = side * scale
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{pixels}" height="{pixels}" '
        f'viewBox="0 0 {side} {side}" shape-rendering="crispEdges">\n'
        f'<rect x="0" y="0" width="{side}" height="{side}" fill="#ffffff"/>\n'
        f'<path fill="#000000" d="{"".join(parts)}"/>\n'
        '</svg>\n'
    )


_QR_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_QR_PNG_BIT_DEPTH = 1
_QR_PNG_COLOR_GRAYSCALE = 0
_QR_PNG_FILTER_NONE = 0
_QR_PNG_ZLIB_LEVEL = 9


def qr_render_png(qr, scale=_QR_DEFAULT_SCALE, quiet=_QR_DEFAULT_QUIET_ZONE):
    """PNG bytes: 1-bit grayscale (0 = black = dark module), no interlace."""
    _qr_check_scale(scale)
    _qr_check_quiet(quiet)
    side = (qr.size + 2 * quiet) * scale
    raw = bytearray()
    for light_row in _qr_light_rows(qr, quiet):
        bits = "".join(("1" if light else "0") * scale for light in light_row)
        bits += "0" * (-len(bits) % 8)  # pad the scanline to whole bytes
        scanline = bytes([_QR_PNG_FILTER_NONE]) + int(bits, 2).to_bytes(len(bits) // 8, "big")
        raw += scanline * scale
    header = struct.pack(">IIBBBBB", side, side, _QR_PNG_BIT_DEPTH, _QR_PNG_COLOR_GRAYSCALE, 0, 0, 0)
    return (_QR_PNG_SIGNATURE
            + _qr_png_chunk(b"IHDR", header)
            + _qr_png_chunk(b"IDAT", zlib.compress(bytes(raw), _QR_PNG_ZLIB_LEVEL))
            + _qr_png_chunk(b"IEND", b""))


def _qr_png_chunk(kind, payload):
    # PNG chunk: length, type, data, CRC-32 over type + data.
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", binascii.crc32(kind + payload) & 0xFFFFFFFF))


def _qr_check_scale(scale):
    if not _qr_is_int_in(scale, 1, _QR_MAX_SCALE):
        raise ValueError(f"QR scale must be an int 1-{_QR_MAX_SCALE}, not {scale!r}")


def _qr_check_quiet(quiet):
    if not _qr_is_int_in(quiet, 0, _QR_MAX_QUIET_ZONE):
        raise ValueError(f"QR quiet zone must be an int 0-{_QR_MAX_QUIET_ZONE}, not {quiet!r}")

###############################################################################
# Pairing #####################################################################
###############################################################################

# -- which address do phones use? ----------------------------------------------------
#
# Detection must send NOTHING on the network (no "UDP connect to 8.8.8.8" trick, no DNS
# query): we ask the kernel for each interface's address, which is a local system call.

# struct ifreq (Linux <net/if.h>, BSD/macOS the same layout): char ifr_name[16], then a
# struct sockaddr_in whose sin_addr starts 4 bytes in, so the IPv4 address is at 20..24.
_IFREQ_SIZE = 40
_IFNAMSIZ = 16
_IFREQ_ADDR = slice(20, 24)
_SIOCGIFADDR_LINUX = 0x8915            # <linux/sockios.h>
_SIOCGIFADDR_BSD = 0xC0206921          # _IOWR('i', 33, struct ifreq), macOS and the BSDs


def list_ipv4_interfaces():
    """[(interface name or None, "a.b.c.d"), ...] for this machine, loopback included.

    Never raises and never sends a packet; [] when nothing can be found."""
    for detect in (_ipv4_by_ioctl, _ipv4_by_hostname_on_windows):
        try:
            found = detect()
        except Exception:  # noqa: BLE001 - a banner nicety must never stop the server
            found = []
        if found:
            return found
    return []


def _siocgifaddr():
    if sys.platform.startswith("linux"):
        return _SIOCGIFADDR_LINUX
    if sys.platform == "darwin" or "bsd" in sys.platform:
        return _SIOCGIFADDR_BSD
    return None


def _ipv4_by_ioctl():
    """Linux/macOS: socket.if_nameindex() names, SIOCGIFADDR on a dummy UDP socket for
    each (an ioctl asks the kernel; the socket is never bound, connected or used)."""
    try:
        import fcntl
    except ImportError:   # Windows
        return []
    request = _siocgifaddr()
    if request is None or not hasattr(socket, "if_nameindex"):
        return []
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            ifreq = name.encode("utf-8", "replace")[:_IFNAMSIZ - 1].ljust(_IFREQ_SIZE, b"\0")
            try:
                answer = fcntl.ioctl(probe.fileno(), request, ifreq)
            except OSError:   # EADDRNOTAVAIL: the interface has no IPv4 address
                continue
            found.append((name, socket.inet_ntoa(answer[_IFREQ_ADDR])))
    return found


def _ipv4_by_hostname_on_windows():
    """Windows: resolving the own computer name answers with every adapter's IPv4
    address, from the local resolver (Windows never asks a DNS server for its own name).
    Not used on Linux/macOS, where an own name missing from /etc/hosts may go to DNS."""
    if not IS_WINDOWS:
        return []
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except (OSError, UnicodeError):
        return []
    addresses = []   # one entry per socket type: keep each address once
    for info in infos:
        if info[4][0] not in addresses:
            addresses.append(info[4][0])
    return [(None, address) for address in addresses]


# Ranking. Lower sorts first; each key is one tuple element, most important first:
#   1. virtual: known virtual adapters (by name, or by a well-known virtual range when
#      the name says nothing) go last: a phone can never reach a Docker bridge or a
#      VirtualBox host-only network, and a VPN address works only with the VPN on.
#   2. address class: RFC 1918 home/office ranges first; 172.16/12 a little after
#      192.168/16 and 10/8 because Windows' WSL 2 and Hyper-V "Default Switch" (and Docker)
#      pick their NAT subnets from 172.16/12, while home routers almost always hand out
#      192.168.x or 10.x; then CGNAT 100.64/10, which on a PC is mostly Tailscale or a
#      similar overlay VPN; then public addresses (possible on campus networks, but rare).
#   3. name: a recognised physical adapter (eth*, en*, wl*, Wi-Fi, Ethernet) before an
#      unknown name.
#   4. the order the system listed them in (stable for equal rank).
_VIRTUAL_NAME_PREFIXES = (
    "docker", "br-", "veth", "virbr", "vmnet", "vboxnet", "tun", "tap", "wg", "tailscale",
    "zt", "utun", "ham", "lxc", "lxdbr", "podman", "cni", "flannel", "kube", "vethernet",
    "vmware", "virtualbox", "hyper-v", "wsl",
)
# Windows adapter names are free text ("vEthernet (WSL)", "VirtualBox Host-Only Network").
_VIRTUAL_NAME_PARTS = (
    "virtualbox", "hyper-v", "vethernet", "wsl", "vmware", "tailscale", "zerotier",
    "wireguard", "openvpn", "tap-windows", "hamachi", "vpn", "docker",
)
_PHYSICAL_NAME_PREFIXES = (
    "eth", "en", "wlan", "wl", "wi-fi", "wifi", "ethernet", "wireless", "local area connection",
)
_PRIVATE_HOME_NETS = (ipaddress.IPv4Network("192.168.0.0/16"), ipaddress.IPv4Network("10.0.0.0/8"))
_PRIVATE_172_NET = ipaddress.IPv4Network("172.16.0.0/12")
_CGNAT_NET = ipaddress.IPv4Network("100.64.0.0/10")      # RFC 6598 shared address space
_VIRTUAL_NETS = (
    ipaddress.IPv4Network("192.168.56.0/24"),   # VirtualBox host-only adapter default
    ipaddress.IPv4Network("172.17.0.0/16"),     # Docker default bridge (docker0)
)
_CLASS_PRIVATE, _CLASS_PRIVATE_172, _CLASS_CGNAT, _CLASS_PUBLIC = range(4)


def rank_lan_addresses(interfaces):
    """The IPv4 addresses a phone on the same network most likely reaches, best first.

    interfaces: [(name or None, "a.b.c.d"), ...] as list_ipv4_interfaces() gives.
    Loopback, link-local, unspecified, multicast, reserved and non-IPv4 entries are
    dropped; each address appears once, at its best rank."""
    keyed = []
    for index, (name, text) in enumerate(interfaces):
        ip = _parse_ipv4(text)
        if ip is None or not _reachable_from_lan(ip):
            continue
        keyed.append((_address_rank(name, ip) + (index,), str(ip)))
    ranked = []
    for _, address in sorted(keyed):
        if address not in ranked:
            ranked.append(address)
    return ranked


def _parse_ipv4(text):
    try:
        ip = ipaddress.ip_address(str(text).strip())
    except ValueError:
        return None
    return ip if ip.version == 4 else None


def _reachable_from_lan(ip):
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast
                or ip.is_reserved)


def _address_rank(name, ip):
    lowered = (name or "").strip().lower()
    physical = lowered.startswith(_PHYSICAL_NAME_PREFIXES)
    virtual = _is_virtual_name(lowered) or (
        not physical and any(ip in net for net in _VIRTUAL_NETS))
    return (int(virtual), _address_class(ip), int(not physical))


def _is_virtual_name(lowered):
    if not lowered:
        return False
    return lowered.startswith(_VIRTUAL_NAME_PREFIXES) or any(
        part in lowered for part in _VIRTUAL_NAME_PARTS)


def _address_class(ip):
    if any(ip in net for net in _PRIVATE_HOME_NETS):
        return _CLASS_PRIVATE
    if ip in _PRIVATE_172_NET:
        return _CLASS_PRIVATE_172
    if ip in _CGNAT_NET:
        return _CLASS_CGNAT
    return _CLASS_PUBLIC


# -- the pairing URL ---------------------------------------------------------------

LOOPBACK_FALLBACK_HOST = "127.0.0.1"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")


def pairing_url(host, port, token):
    """http://<host>:<port>/#k=<token>, or without the fragment in open mode (token None).

    The token travels ONLY in the fragment: RFC 3986 3.5 "the fragment identifier is
    not used in the scheme-specific processing of a URI" - a browser never sends it in a
    request, so it stays out of server logs, proxies and Referer headers; the web client
    reads it from location.hash."""
    url = "http://%s:%d/" % (_url_host(host), port)
    if token is None:
        return url
    return url + "#k=" + urllib.parse.quote(token, safe="-_.~")


def _url_host(host):
    # RFC 3986 3.2.2: an IPv6 literal is enclosed in brackets; RFC 6874: a zone id's
    # "%" is written "%25".
    host = host.strip()
    if ":" in host and not host.startswith("["):
        return "[%s]" % host.replace("%", "%25")
    return host


def listens_on_lan(bind_host):
    """Whether clients on other machines can reach a server bound to bind_host."""
    if bind_host in _WILDCARD_HOSTS:
        return True
    try:
        return not ipaddress.ip_address(bind_host.split("%")[0]).is_loopback
    except ValueError:   # a host name: assume it names this machine on the network
        return bind_host.lower() != "localhost"


def pairing_urls(bind_host, port, token, advertise_host=None, interfaces=None):
    """Pairing URLs, best first.

    advertise_host (--advertise-host) wins and comes first, the detected ones follow. A
    specific bind address is the only one that works. A wildcard bind (0.0.0.0) is
    reachable at every LAN address, ranked by rank_lan_addresses; with none found (no
    network) the URL falls back to 127.0.0.1 - the banner then says only this PC can
    connect. interfaces: injected [(name, ip)] for tests; default list_ipv4_interfaces()."""
    if bind_host in _WILDCARD_HOSTS:
        if interfaces is None:
            interfaces = list_ipv4_interfaces()
        hosts = rank_lan_addresses(interfaces) or [LOOPBACK_FALLBACK_HOST]
    else:
        hosts = [bind_host]
    if advertise_host:
        hosts = [advertise_host] + [h for h in hosts if h != advertise_host]
    return [pairing_url(host, port, token) for host in hosts]


# -- the start-up banner -----------------------------------------------------------

# Error correction level of every pairing QR code (console, /pair, /qr.svg, /qr.png).
# "M" (15 % of codewords recoverable) rather than "L" (7 %): a QR code photographed off a
# screen suffers moire, glare and, in the console, the thin gaps some fonts leave between
# half-block lines. For a typical URL (http://192.168.1.20:5555/#k= + a 22-char token,
# 50 bytes) M needs version 4 (33 modules; 41 x 21 text cells with the quiet zone) where
# L would fit version 3 (29 modules; 37 x 19): 2 lines saved is not worth half the margin.
# Version 4-M holds 62 bytes, more than the longest IPv4 URL (54), so every IPv4
# pairing code fits an 80 x 25 console.
PAIRING_QR_EC = "M"
CONSOLE_COLUMNS = 80                # the narrowest console we plan for (cmd.exe default)
QR_QUIET_ZONE = 4                   # ISO/IEC 18004 6.3.8: "The quiet zone shall be 4X wide"
QR_MIN_QUIET_ZONE = 2               # what readers tolerate when 4 does not fit the width
QR_ASCII_CELLS_PER_MODULE = 2       # "##" per module in the ASCII drawing
FIREWALL_SCRIPT = "firewall.ps1"
PAIRING_LINK_FILE = "pairing-link.txt"     # in the data folder, for --show-link


def pairing_banner(urls, token, port, stream_encoding_ok, is_windows, lan):
    """The start-up text: where to point the phone, the QR code of the best URL, and
    what to try when the phone cannot connect. stream_encoding_ok: the console can
    print block characters (qr_console_can_encode(sys.stdout)); lan: the server listens
    on an address other machines can reach (listens_on_lan)."""
    best = urls[0]
    lines = ["", "Open this address on your phone (same WiFi) or scan the QR code:",
             "  " + best]
    lines += ["  also: " + url for url in urls[1:]]
    lines.append(_console_qr(best, stream_encoding_ok))
    if token is None:
        lines.append("Open mode: anyone on this network can join, no pairing code needed.")
    if not lan:
        lines += ["Listening on this PC only: phones cannot connect.",
                  "Start with --host 0.0.0.0 to let them in."]
    elif _is_loopback_url_host(best):
        lines += ["No network address found: is this PC on WiFi or a network cable?",
                  "Only this PC can connect for now."]
    lines.append("Phone cannot connect?")
    lines.append("  - Same WiFi as this PC? Not a guest network (it keeps devices apart).")
    if is_windows and lan:
        lines += _firewall_hint(port)
    lines.append("  - Wrong address? Restart with --advertise-host <this PC's address>.")
    lines.append("Bigger QR code, on this PC: http://%s:%d/pair" % (LOOPBACK_FALLBACK_HOST, port))
    lines.append("Organiser's page (kick, ban, mute, remove messages), on this PC:")
    lines.append("  http://%s:%d/admin" % (LOOPBACK_FALLBACK_HOST, port))
    return "\n".join(lines)


def _firewall_hint(port):
    # firewall.ps1 opens DEFAULT_PORT unless given -Port, which a right-click cannot pass.
    if port == DEFAULT_PORT:
        return ["  - Windows: right-click %s > Run with PowerShell (allows port %d)."
                % (FIREWALL_SCRIPT, port)]
    return ["  - Windows firewall: in PowerShell, in the folder of %s, run" % FIREWALL_SCRIPT,
            "    powershell -ExecutionPolicy Bypass -File .\\%s -Port %d" % (FIREWALL_SCRIPT, port)]


def _console_qr(url, stream_encoding_ok):
    qr = qr_encode(url, ec=PAIRING_QR_EC)
    if stream_encoding_ok:
        # Half blocks: 41 columns for version 4, far inside 80 with the full quiet zone.
        return qr_render_console(qr, quiet=QR_QUIET_ZONE)
    # "##" per module doubles the width: 4-M with a 4-module quiet zone would be 82
    # columns and wrap, which destroys the symbol. Narrow the quiet zone to fit.
    room = CONSOLE_COLUMNS // QR_ASCII_CELLS_PER_MODULE - qr.size
    quiet = max(QR_MIN_QUIET_ZONE, min(QR_QUIET_ZONE, room // 2))
    return qr_render_console(qr, quiet=quiet, ascii_only=True)


def _is_loopback_url_host(url):
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:          # a malformed authority ("[::1", "localhost:]"): not loopback
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- the /pair page (served to the PC itself only) ------------------------------------

def pair_page_html(url, svg_text, room=None):
    """The pairing page for GET /pair: the room's name and topic, a big QR code (inline
    SVG), the URL as text, short instructions; no script, no external resource. svg_text is
    qr_render_svg's; room: {"name", "topic"} (Moderation.room)."""
    return fill_markers(_PAIR_PAGE, {"svg": _inline_svg(svg_text), "url": html.escape(url),
                                     "room": _room_html(room),
                                     "firewall": FIREWALL_SCRIPT}).encode("utf-8")


def _room_html(room):
    if not room or not (room.get("name") or room.get("topic")):
        return ""
    return '<p class="room"><strong>%s</strong>%s</p>' % (
        html.escape(room.get("name") or ""), html.escape(room.get("topic") or ""))


def _inline_svg(svg_text):
    # An XML declaration is not valid inside an HTML document: keep from <svg on.
    start = svg_text.find("<svg")
    return svg_text[start:] if start >= 0 else svg_text


# -- who may see the pairing page ------------------------------------------------------

def is_loopback_peer(peer):
    """Whether an accept()ed peer address (IPv4 or IPv6 tuple) is this machine itself:
    127/8, ::1, or 127/8 mapped into IPv6 (::ffff:127.0.0.1, from a dual-stack socket)."""
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except (TypeError, IndexError, KeyError, ValueError):
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# -- opening the pairing page at start ---------------------------------------------

def should_open_browser(no_browser):
    """Only the frozen Windows .exe opens the browser: it was started by a double-click,
    so there is no terminal a user would read the QR code from. Scripts and services
    (python chatserver.py, any other OS) must not pop windows up."""
    return bool(getattr(sys, "frozen", False)) and IS_WINDOWS and not no_browser


def open_pair_page(port):
    """Show http://127.0.0.1:<port>/pair in the default browser; False when that fails."""
    try:
        import webbrowser
        return bool(webbrowser.open("http://%s:%d/pair" % (LOOPBACK_FALLBACK_HOST, port)))
    except Exception:  # noqa: BLE001 - no browser is not a reason to stop the server
        return False


###############################################################################
# Storage: messages (SQLite) ##################################################
###############################################################################


class MessageStore:
    """Chat history in SQLite (WAL). Writes go into an open transaction that the event loop
    commits once per turn (group commit); nothing is delivered before that commit."""

    # Identities (docs/PROTOCOL.md, "Devices and nicks"): a nick claimed by one device.
    # Everything personal refers to an identity id (`uid`), never to the nick string, so a
    # lapsed nick taken by someone else starts with nothing of its previous owner's.
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY,
            sender_key TEXT NOT NULL,
            recipient_key TEXT,
            cid TEXT NOT NULL,
            body TEXT NOT NULL,
            sender_id INTEGER,
            recipient_id INTEGER,
            kind INTEGER NOT NULL DEFAULT 0,
            reply_to INTEGER
        );
        CREATE TABLE IF NOT EXISTS files (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            mime TEXT NOT NULL,
            sender_key TEXT NOT NULL,
            recipient_key TEXT,
            created REAL NOT NULL,
            sender_id INTEGER,
            recipient_id INTEGER
        );
        CREATE TABLE IF NOT EXISTS uploads (
            id TEXT PRIMARY KEY,
            owner_key TEXT NOT NULL,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT,
            mime TEXT NOT NULL,
            recipient TEXT,
            cid TEXT NOT NULL,
            caption TEXT NOT NULL,
            updated REAL NOT NULL,
            owner_id INTEGER,
            recipient_id INTEGER
        );
        CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS identities (
            id INTEGER PRIMARY KEY,
            nick TEXT NOT NULL,
            nick_key TEXT NOT NULL,
            skeleton TEXT NOT NULL,
            key_hash TEXT,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            lapsed INTEGER NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX IF NOT EXISTS identities_claim ON identities(nick_key)
            WHERE lapsed = 0;
        CREATE INDEX IF NOT EXISTS identities_skeleton ON identities(skeleton) WHERE lapsed = 0;
        CREATE TABLE IF NOT EXISTS sanctions (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            value TEXT NOT NULL,
            nick TEXT NOT NULL,
            reason TEXT NOT NULL,
            since REAL NOT NULL,
            until REAL
        );
    """
    # messages.kind: a message, or a change to the history (docs/PROTOCOL.md section 10),
    # stored in the same id sequence so that resuming clients get both in order
    KIND_MESSAGE, KIND_CHANGE = 0, 1
    # sanctions.kind: what the operator put on a device (its key hash) or an address
    BAN_DEVICE, BAN_ADDRESS, MUTE = "ban_device", "ban_address", "mute"
    SCHEMA_VERSION = 4          # 1: nick strings own everything; 2: identities; 3: changes;
    #                             4: replies (and the search index, which has its own mark)
    # added by version 2 to tables of version 1: (table, column)
    IDENTITY_COLUMNS = (("messages", "sender_id"), ("messages", "recipient_id"),
                        ("files", "sender_id"), ("files", "recipient_id"),
                        ("uploads", "owner_id"), ("uploads", "recipient_id"))
    # added by versions 3 and 4: (table, column, declaration)
    CHANGE_COLUMNS = (("messages", "kind", "INTEGER NOT NULL DEFAULT 0"),
                      ("messages", "reply_to", "INTEGER"))
    INDEXES = """
        DROP INDEX IF EXISTS messages_sender_cid;
        CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_id_cid ON messages(sender_id, cid);
        CREATE INDEX IF NOT EXISTS messages_reply_to ON messages(reply_to)
            WHERE reply_to IS NOT NULL;
    """
    # The search index (docs/PROTOCOL.md section 12): FTS5 where this SQLite has it, else a
    # plain table searched with LIKE. Rows: the message id and the text that is searched.
    SEARCH_FTS, SEARCH_PLAIN = "fts5", "plain"

    def __init__(self, path, synchronous="FULL", search=None):
        self.path = path
        self.db = None
        self.search_kind = None     # SEARCH_FTS or SEARCH_PLAIN, once the index is open
        # (id, text) of new messages not in the search index yet: written in batches (a timer,
        # SEARCH_INDEX_BATCH, or before a search), as FTS5's cost is mostly per write
        self.to_index = []
        self.writes = 0             # write calls so far: a request that made one is durable
        try:
            if path != ":memory:":
                make_private_file(path)    # SQLite gives its -wal file the same mode
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                      timeout=DB_LOCK_WAIT)
            self.db.row_factory = sqlite3.Row
            if path != ":memory:":
                self._lock_exclusively()
            self.db.execute("PRAGMA synchronous=%s"
                            % ("FULL" if synchronous == "FULL" else "NORMAL"))
            self.db.executescript(self.SCHEMA)
            self._upgrade()
            self._open_search_index(search)
            row = self.db.execute("SELECT MAX(id) FROM messages").fetchone()
        except (sqlite3.DatabaseError, OSError) as exc:   # locked, not a database, read-only
            if self.db is not None:
                self.db.close()
            raise self._open_error(exc) from None
        self.last_id = row[0] or 0
        self.in_transaction = False

    def _upgrade(self):
        """Bring a data folder of an older version up to SCHEMA_VERSION, in one transaction:
        every nick of the old history becomes an unclaimed identity (the first device to
        say hello with it claims it, with its history), every stored message gets its
        sender's `uid`. Two old nicks that are now the same nick (NFKC) stay apart: the
        second one's identity is lapsed, so nobody inherits its direct messages."""
        version = int(self.get_setting("schema_version") or 1)
        if version >= self.SCHEMA_VERSION:
            self.db.executescript(self.INDEXES)
            return
        if version >= 2:
            self._add_change_columns()      # versions 2 and 3: the columns they lack
            return
        self.db.execute("BEGIN IMMEDIATE")
        for table, column, declaration in self.CHANGE_COLUMNS:
            self._add_column(table, column, declaration)
        for table, column in self.IDENTITY_COLUMNS:
            self._add_column(table, column, "INTEGER")
        old_keys = set()
        for query in ("SELECT sender_key FROM messages", "SELECT recipient_key FROM messages",
                      "SELECT sender_key FROM files", "SELECT recipient_key FROM files",
                      "SELECT owner_key FROM uploads"):
            old_keys.update(row[0] for row in self.db.execute(query) if row[0] is not None)
        now = time.time()
        uids = {}
        for old in sorted(old_keys):
            key = nick_key(old)
            taken = self.db.execute("SELECT 1 FROM identities WHERE nick_key=? AND lapsed=0",
                                    (key,)).fetchone()
            cursor = self.db.execute(
                "INSERT INTO identities (nick, nick_key, skeleton, key_hash, first_seen, "
                "last_seen, lapsed) VALUES (?, ?, ?, NULL, ?, ?, ?)",
                (old, key, nick_skeleton(old), now, now, 1 if taken else 0))
            uids[old] = cursor.lastrowid
        for old, uid in uids.items():
            for table, key_column, id_column in (
                    ("messages", "sender_key", "sender_id"),
                    ("messages", "recipient_key", "recipient_id"),
                    ("files", "sender_key", "sender_id"),
                    ("files", "recipient_key", "recipient_id"),
                    ("uploads", "owner_key", "owner_id")):
                self.db.execute("UPDATE %s SET %s=? WHERE %s=? AND %s IS NULL"
                                % (table, id_column, key_column, id_column), (uid, old))
        rows = self.db.execute("SELECT id, body, sender_id FROM messages").fetchall()
        for row in rows:
            self.db.execute("UPDATE messages SET body=? WHERE id=?",
                            (_body_with_uid(row["body"], row["sender_id"]), row["id"]))
        self.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                        ("schema_version", str(self.SCHEMA_VERSION)))
        self.db.execute("COMMIT")
        self.db.executescript(self.INDEXES)
        if rows or uids:
            log.info("history upgraded: %d messages, %d nicks waiting to be claimed",
                     len(rows), len(uids))

    def _add_column(self, table, column, declaration):
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(%s)" % table)}
        if column not in columns:
            self.db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, declaration))

    def _add_change_columns(self):
        """Version 2 or 3 to 4: every stored row is a message (kind 0) answering none."""
        self.db.execute("BEGIN IMMEDIATE")
        for table, column, declaration in self.CHANGE_COLUMNS:
            self._add_column(table, column, declaration)
        self.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                        ("schema_version", str(self.SCHEMA_VERSION)))
        self.db.execute("COMMIT")
        self.db.executescript(self.INDEXES)

    def _open_search_index(self, wanted=None):
        """Open the search index (FTS5 where this SQLite has it; `wanted` forces a kind), and
        build it from the history when it is new or was made by the other kind (the data
        folder moved to a Python whose SQLite lacks FTS5, or back)."""
        kind = wanted or self.SEARCH_FTS
        if kind == self.SEARCH_FTS:
            try:
                # detail=none: the index keeps which messages hold a word, not where;
                # enough for "every word, as a prefix", and the cheapest to write per message
                self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING "
                                "fts5(text, tokenize='unicode61 remove_diacritics 2', "
                                "detail=none)")
            except sqlite3.OperationalError:        # no such module: fts5
                kind = self.SEARCH_PLAIN
        if kind == self.SEARCH_PLAIN:
            self.db.execute("CREATE TABLE IF NOT EXISTS search_plain "
                            "(id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        self.search_kind = kind
        if self.get_setting("search_index") == kind:
            self._index_missing()
            return
        self.db.execute("BEGIN IMMEDIATE")
        table = self._search_table()
        self.db.execute("DELETE FROM %s" % table)
        count = 0
        for row in self.db.execute("SELECT id, body FROM messages WHERE kind=0").fetchall():
            text = searchable_text(json.loads(row["body"]))
            if text:
                self._index(row["id"], text)
                count += 1
        self._flush_index()
        self.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                        ("search_index", kind))
        self.db.execute("COMMIT")
        if count:
            log.info("search index (%s) built for %d messages", kind, count)

    def _index_missing(self):
        """Messages stored after the last write to the index (a stop or a crash before the
        timer ran): indexed now."""
        column = "rowid" if self.search_kind == self.SEARCH_FTS else "id"
        newest = self.db.execute("SELECT MAX(%s) FROM %s" % (column, self._search_table())
                                 ).fetchone()[0] or 0
        rows = self.db.execute("SELECT id, body FROM messages WHERE kind=0 AND id > ?",
                               (newest,)).fetchall()
        missing = [(row["id"], searchable_text(json.loads(row["body"]))) for row in rows]
        missing = [(i, text) for i, text in missing if text]
        if missing:
            self.db.execute("BEGIN IMMEDIATE")
            self.to_index = missing
            self._flush_index()
            self.db.execute("COMMIT")

    def _search_table(self):
        return "search_fts" if self.search_kind == self.SEARCH_FTS else "search_plain"

    def _index(self, msg_id, text):
        self.to_index.append((msg_id, text))
        if len(self.to_index) >= SEARCH_INDEX_BATCH:
            self._flush_index()

    def index_pending(self):
        """Write the new messages to the search index (in the turn's transaction)."""
        if self.to_index:
            self.begin()
            self._flush_index()

    def _flush_index(self):
        if self.to_index:
            column = "rowid" if self.search_kind == self.SEARCH_FTS else "id"
            rows, self.to_index = self.to_index, []
            self.db.executemany("INSERT INTO %s (%s, text) VALUES (?, ?)"
                                % (self._search_table(), column), rows)

    def _unindex(self, msg_id):
        self.index_pending()
        column = "rowid" if self.search_kind == self.SEARCH_FTS else "id"
        self.db.execute("DELETE FROM %s WHERE %s=?" % (self._search_table(), column),
                        (msg_id,))

    def _lock_exclusively(self):
        """Hold the database's write lock for as long as the server runs.

        Two servers on one data folder would hand out the same message ids and delete each
        other's files in progress (FileStore.recover), so the second one must not start. The
        lock is taken before the first WAL access: SQLite then keeps the WAL index in this
        process's memory (no -shm file) and a commit takes no file lock (fewer system calls
        per loop turn). The OS drops the lock when the process dies, even by SIGKILL."""
        self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("COMMIT")

    def _open_error(self, exc):
        """An OSError a person can act on, for a database that cannot be used."""
        folder = os.path.dirname(os.path.abspath(self.path))
        if "locked" in str(exc) or "busy" in str(exc):
            return DataDirInUse("the data folder %s is in use by another process (another "
                                "chatserver?). Stop it, or start this one with its own "
                                "--data-dir." % folder)
        return OSError("cannot use the history database %s (%s). Move it away to start "
                       "with an empty history, or use another --data-dir." % (self.path, exc))

    # -- transactions ---------------------------------------------------------

    def begin(self):
        self.writes += 1
        if not self.in_transaction:
            self.db.execute("BEGIN")
            self.in_transaction = True

    def commit(self):
        if self.in_transaction:
            self.db.execute("COMMIT")
            self.in_transaction = False

    def rollback(self):
        """Undo the open transaction (after a failed write or commit); ids handed out in it
        are handed out again."""
        if self.in_transaction:
            self.in_transaction = False
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:      # SQLite may have rolled back already (SQLITE_FULL)
                pass
        row = self.db.execute("SELECT MAX(id) FROM messages").fetchone()
        self.last_id = row[0] or 0
        # what waited for the index from earlier turns is stored; this turn's is gone
        self.to_index = [entry for entry in self.to_index if entry[0] <= self.last_id]

    def close(self):
        try:
            self.commit()
        except sqlite3.Error as exc:
            log.warning("the last commit failed: %s", exc)
            self.rollback()
        self.db.close()

    # -- messages -------------------------------------------------------------

    def add_message(self, sender, recipient, cid, build_body, reply_to=None, search_text=""):
        """Store a message under the next id; `build_body(id)` returns its JSON text.
        sender, recipient: (uid, nick key) of identities (recipient None: everyone);
        reply_to: the id of the message it answers; search_text: what search finds it by.
        Returns (id, body, is_new): a repeated (sender uid, cid) gives the original back."""
        self.begin()
        msg_id = self.last_id + 1
        body = build_body(msg_id)
        try:
            self.db.execute("INSERT INTO messages (id, sender_key, recipient_key, cid, body, "
                            "sender_id, recipient_id, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (msg_id, sender[1], recipient[1] if recipient else None, cid, body,
                             sender[0], recipient[0] if recipient else None, reply_to))
        except sqlite3.IntegrityError:   # the unique (sender, cid) index: a resend
            existing = self.db.execute(
                "SELECT id, body FROM messages WHERE sender_id=? AND cid=?",
                (sender[0], cid)).fetchone()
            if existing is None:         # not a resend after all: a real integrity failure
                raise
            return existing["id"], existing["body"], False
        self.last_id = msg_id
        if search_text:
            self._index(msg_id, search_text)
        return msg_id, body, True

    def find_message(self, sender_uid, cid):
        """The stored JSON of an identity's message with this cid, or None."""
        row = self.db.execute("SELECT body FROM messages WHERE sender_id=? AND cid=?",
                              (sender_uid, cid)).fetchone()
        return row[0] if row else None

    def history(self, reader_uid, after=0, before=None, limit=HISTORY_PAGE_DEFAULT,
                changes=False):
        """Newest `limit` messages visible to identity `reader_uid` with after < id < before,
        oldest first, and whether older ones remain in that range. `changes`: the changes
        to the history in that range too (a resume), not only the messages as they are now."""
        if before is None:
            before = self.last_id + 1
        rows = self.db.execute(
            "SELECT id, body FROM messages WHERE id > ? AND id < ? AND "
            "(recipient_id IS NULL OR recipient_id = ? OR sender_id = ?) %s"
            "ORDER BY id DESC LIMIT ?" % ("" if changes else "AND kind = 0 "),
            (after, before, reader_uid, reader_uid, limit + 1)).fetchall()
        has_more = len(rows) > limit
        bodies = [row[1] for row in rows[:limit]]
        bodies.reverse()
        return bodies, has_more

    def get_message(self, msg_id):
        """A stored message (not a change) as a row with its decoded JSON, or None."""
        row = self.db.execute("SELECT id, body, sender_id, recipient_id, recipient_key, "
                              "sender_key FROM messages WHERE id=? AND kind=0",
                              (msg_id,)).fetchone()
        if row is None:
            return None
        found = dict(row)
        found["msg"] = json.loads(row["body"])
        return found

    def rewrite_message(self, msg_id, body, search_text=None):
        """Store a message's new JSON; `search_text` (not None): what search finds it by
        now ("" for a removed message: nothing)."""
        self.begin()
        self.db.execute("UPDATE messages SET body=? WHERE id=?", (body, msg_id))
        if search_text is not None:
            self._unindex(msg_id)
            if search_text:             # at once: only new ids are caught up at a start
                self.to_index.append((msg_id, search_text))
                self._flush_index()

    def replies_to(self, msg_id):
        """(id, decoded JSON) of the stored messages that answer message `msg_id`."""
        return [(row[0], json.loads(row[1])) for row in self.db.execute(
            "SELECT id, body FROM messages WHERE reply_to=? AND kind=0", (msg_id,))]

    def search(self, reader_uid, words, limit, before=None, from_uid=None, with_uid=None):
        """Messages visible to `reader_uid` whose text holds every word, newest first (at
        most `limit`), and whether older matches exist. Words: non-empty, already trimmed."""
        where = ["m.kind = 0", "(m.recipient_id IS NULL OR m.recipient_id = ? OR "
                 "m.sender_id = ?)"]
        args = [reader_uid, reader_uid]
        if before is not None:
            where.append("m.id < ?")
            args.append(before)
        if from_uid is not None:
            where.append("m.sender_id = ?")
            args.append(from_uid)
        if with_uid is not None:
            where.append("((m.sender_id = ? AND m.recipient_id = ?) OR "
                         "(m.sender_id = ? AND m.recipient_id = ?))")
            args += [reader_uid, with_uid, with_uid, reader_uid]
        self.index_pending()
        if self.search_kind == self.SEARCH_FTS:
            # every token of every word, as a quoted prefix: FTS5 syntax stays text, and one
            # token per term is all an index without positions (detail=none) can answer
            tokens = dict.fromkeys(t for w in words for t in _SEARCH_TOKEN.findall(w))
            if not tokens:
                return [], False
            match = " ".join('"%s"*' % t for t in tokens)
            query = ("SELECT m.id, m.body FROM search_fts s JOIN messages m ON m.id = s.rowid "
                     "WHERE search_fts MATCH ? AND %s ORDER BY m.id DESC LIMIT ?")
            args = [match] + args
        else:
            like = " AND ".join(["s.text LIKE ? ESCAPE '\\'"] * len(words))
            query = ("SELECT m.id, m.body FROM search_plain s JOIN messages m ON m.id = s.id "
                     "WHERE " + like + " AND %s ORDER BY m.id DESC LIMIT ?")
            args = ["%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    + "%" for w in words] + args
        rows = self.db.execute(query % " AND ".join(where), args + [limit + 1]).fetchall()
        return [row[1] for row in rows[:limit]], len(rows) > limit

    def add_change(self, target, build_body):
        """Store a change under the next id, visible to whoever sees `target` (a row of
        get_message; None: everyone). Returns (id, body)."""
        self.begin()
        change_id = self.last_id + 1
        body = build_body(change_id)
        self.db.execute(
            "INSERT INTO messages (id, sender_key, recipient_key, cid, body, sender_id, "
            "recipient_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (change_id, target["sender_key"] if target else "", target["recipient_key"]
             if target else None, "~change-%d" % change_id, body,
             target["sender_id"] if target else None,
             target["recipient_id"] if target else None, self.KIND_CHANGE))
        self.last_id = change_id
        return change_id, body

    def clear_before(self, msg_id):
        """Remove every message, change and file row older than `msg_id`; returns the ids
        of the files whose rows went."""
        self.begin()
        file_ids = [row[0] for row in self.db.execute("SELECT id FROM files")]
        self.db.execute("DELETE FROM messages WHERE id < ?", (msg_id,))
        self.to_index = []
        self.db.execute("DELETE FROM %s" % self._search_table())
        self.db.execute("DELETE FROM files")
        return file_ids

    def delete_file(self, file_id):
        self.begin()
        self.db.execute("DELETE FROM files WHERE id=?", (file_id,))

    def counters(self):
        messages = self.db.execute("SELECT COUNT(*) FROM messages WHERE kind=0").fetchone()[0]
        files, size = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files"
                                      ).fetchone()
        return {"messages": messages, "files": files, "file_bytes": size}

    def all_messages(self, newest=None):
        """Every stored message as it is now (the operator's export), oldest first; or only
        the `newest` ones."""
        if newest is None:
            rows = self.db.execute("SELECT body FROM messages WHERE kind=0 ORDER BY id")
        else:
            rows = reversed(self.db.execute("SELECT body FROM messages WHERE kind=0 ORDER BY "
                                            "id DESC LIMIT ?", (newest,)).fetchall())
        for row in rows:
            yield row[0]

    # -- sanctions (bans and mutes) -------------------------------------------

    def add_sanction(self, kind, value, nick, reason, since, until):
        self.begin()
        return self.db.execute(
            "INSERT INTO sanctions (kind, value, nick, reason, since, until) VALUES "
            "(?, ?, ?, ?, ?, ?)", (kind, value, nick, reason, since, until)).lastrowid

    def remove_sanction(self, sanction_id):
        self.begin()
        return self.db.execute("DELETE FROM sanctions WHERE id=?", (sanction_id,)).rowcount

    def remove_sanctions(self, kind, value):
        self.begin()
        self.db.execute("DELETE FROM sanctions WHERE kind=? AND value=?", (kind, value))

    def sanctions(self):
        return [dict(row) for row in self.db.execute("SELECT * FROM sanctions ORDER BY id")]

    def device_of(self, key):
        """The key hash of the device holding the claim of a nick key, or None."""
        row = self.claim_of(key)
        return row["key_hash"] if row is not None else None

    def known_identity(self, key, key_hash):
        """Whether this device has used this nick here before (a locked room lets it in)."""
        return self.db.execute("SELECT 1 FROM identities WHERE nick_key=? AND key_hash=? "
                               "AND lapsed=0", (key, key_hash)).fetchone() is not None

    # -- files and uploads ----------------------------------------------------

    def add_file(self, meta):
        self.begin()
        self.db.execute(
            "INSERT INTO files (id, name, size, sha256, mime, sender_key, recipient_key, created,"
            " sender_id, recipient_id) VALUES (:id, :name, :size, :sha256, :mime, :sender_key, "
            ":recipient_key, :created, :sender_id, :recipient_id)", meta)

    def get_file(self, file_id):
        row = self.db.execute(
            "SELECT id, name, size, sha256, mime, sender_key, recipient_key, sender_id, "
            "recipient_id FROM files WHERE id=?", (file_id,)).fetchone()
        return dict(row) if row is not None else None

    def file_ids(self):
        return {row[0] for row in self.db.execute("SELECT id FROM files")}

    def save_upload(self, up):
        self.begin()
        self.db.execute(
            "INSERT OR REPLACE INTO uploads (id, owner_key, owner, name, size, sha256, mime, "
            "recipient, cid, caption, updated, owner_id, recipient_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (up.id, up.owner_key, up.owner, up.name, up.size, up.sha256_expected, up.mime,
             up.recipient, up.cid, up.caption, up.updated, up.owner_id, up.recipient_id))

    def delete_upload(self, upload_id):
        self.begin()
        self.db.execute("DELETE FROM uploads WHERE id=?", (upload_id,))

    def load_uploads(self):
        return self.db.execute(
            "SELECT id, owner_key, owner, name, size, sha256, mime, recipient, cid, caption, "
            "updated, owner_id, recipient_id FROM uploads").fetchall()

    # -- identities -----------------------------------------------------------

    def claim_of(self, key):
        """The identity holding the nick key now (a row), or None."""
        return self.db.execute("SELECT * FROM identities WHERE nick_key=? AND lapsed=0",
                               (key,)).fetchone()

    def lookalikes(self, skeleton, key):
        """Identities holding other nicks that look like this one."""
        return self.db.execute("SELECT * FROM identities WHERE skeleton=? AND lapsed=0 AND "
                               "nick_key != ?", (skeleton, key)).fetchall()

    def create_identity(self, nick, key, skeleton, key_hash, now):
        self.begin()
        cursor = self.db.execute(
            "INSERT INTO identities (nick, nick_key, skeleton, key_hash, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?)", (nick, key, skeleton, key_hash, now, now))
        return cursor.lastrowid

    def claim(self, uid, key_hash, now):
        """An unclaimed identity (from an upgraded history) is claimed by a device."""
        self.begin()
        self.db.execute("UPDATE identities SET key_hash=?, last_seen=? WHERE id=?",
                        (key_hash, now, uid))

    def lapse(self, uid):
        self.begin()
        self.db.execute("UPDATE identities SET lapsed=1 WHERE id=?", (uid,))

    def seen(self, uid, nick, now):
        self.begin()
        self.db.execute("UPDATE identities SET last_seen=?, nick=? WHERE id=?", (now, nick, uid))

    # -- settings -------------------------------------------------------------

    def get_setting(self, key):
        row = self.db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key, value):
        self.begin()
        self.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

###############################################################################
# Storage: files ##############################################################
###############################################################################


class Upload:
    """A file being received: streamed to `<data>/uploads/<id>.part`, never held in memory.

    The partial file is open only while its owner is connected and sending (`fh`); the
    upload reserves disk space only then, too (`reserving`)."""

    __slots__ = ("id", "owner_key", "owner", "name", "size", "sha256_expected", "mime",
                 "recipient", "cid", "caption", "updated", "received", "hashed", "hasher", "fh",
                 "path", "pending", "error", "address", "uploader", "progress", "owner_id",
                 "recipient_id")

    def __init__(self, upload_id, owner, name, size, sha256_expected, mime, recipient, cid,
                 caption, path):
        self.id = upload_id
        self.owner = owner
        self.owner_key = nick_key(owner)
        self.name = name
        self.size = size
        self.sha256_expected = sha256_expected
        self.mime = mime
        self.recipient = recipient
        self.cid = cid
        self.caption = caption
        self.path = path
        self.updated = time.time()     # wall clock of the announcement or the last byte
        self.received = 0
        self.hashed = 0                # bytes the hasher has seen
        self.hasher = hashlib.sha256()
        self.fh = None
        self.pending = 0           # chunks handed to the DiskWriter and not written yet
        self.error = None          # the OSError that stopped writing, if any
        self.address = None        # where it was started from (this run only)
        self.uploader = None       # the connection sending it, while connected
        self.progress = time.monotonic()   # when it was announced or last got a byte
        self.owner_id = None       # the identity it belongs to (uid)
        self.recipient_id = None   # the identity it is sent to privately, if any

    @classmethod
    def from_row(cls, row, path):
        up = cls(row["id"], row["owner"], row["name"], row["size"], row["sha256"], row["mime"],
                 row["recipient"], row["cid"], row["caption"], path)
        up.updated = row["updated"]
        up.owner_id, up.recipient_id = row["owner_id"], row["recipient_id"]
        return up

    def reserving(self, now):
        """Whether the rest of the file is counted as disk space taken: only while someone is
        sending it, so announcements nobody completes cannot fill the disk for others."""
        return self.uploader is not None and not self.uploader.closed and \
            now - self.progress < UPLOAD_IDLE_RESERVE

    def open_for_append(self):
        """(Re)open the partial file. After a restart the hash is rebuilt from what is on
        disk; after a mere reconnect the hasher already has every byte."""
        if self.fh is not None:
            return
        self.fh = open(self.path, "ab", buffering=0)
        self.received = self.fh.tell()
        if self.received != self.hashed:
            self.hasher = hashlib.sha256()
            with open(self.path, "rb") as f:
                for block in iter(lambda: f.read(HASH_READ), b""):
                    self.hasher.update(block)
            self.hashed = self.received

    def write_all(self, data):
        """Append `data` to the partial file (on the DiskWriter's thread)."""
        view = memoryview(data)
        while view:
            view = view[self.fh.write(view):]

    def close(self):
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class DiskWriter:
    """One thread that appends upload chunks to their partial files, so that the event loop
    does not wait on the page cache (the write releases the GIL). One thread for all
    uploads, not one per client; jobs run in arrival order. Copying into the page cache
    is the slowest step of an upload (docs/PERFORMANCE.md); the loop hashes the chunk
    itself, which keeps both threads busy.

    The loop hands a chunk over with `submit()` and counts it as received at once. Before
    it closes, renames or deletes a partial file, it calls `settle(upload)`, which waits
    for that upload's queued chunks: at most DISK_QUEUE_HIGH plus one read, because the
    loop stops reading connections that sent data while the queue is `congested`.
    `on_drained` is called (from the thread) when the queue falls back to DISK_QUEUE_LOW.
    A write error is kept in `upload.error` and the upload's later chunks are skipped.
    """

    def __init__(self, on_drained=None):
        self.on_drained = on_drained
        self.queued = 0            # bytes submitted and not written yet
        self.submitted = 0         # chunks ever submitted (lets the loop see who fed it)
        self._jobs = collections.deque()
        self._cond = threading.Condition()
        self._thread = None
        self._stopping = False

    @property
    def congested(self):
        return self.queued > DISK_QUEUE_HIGH

    def submit(self, up, data):
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="disk-writer",
                                                daemon=True)
                self._thread.start()
            up.pending += 1
            self.queued += len(data)
            self.submitted += 1
            self._jobs.append((up, data))
            self._cond.notify_all()

    def settle(self, up):
        """Wait until every chunk submitted for `up` is written (or failed)."""
        with self._cond:
            while up.pending:
                self._cond.wait()

    def close(self, timeout=DISK_CLOSE_WAIT):
        """Write what is queued, then stop the thread (a hung disk cannot hang the exit)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the disk is not finishing its writes; %d bytes of partial "
                            "uploads are dropped (their owners resume from what is on disk)",
                            self.queued)

    def _run(self):
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    return
                up, data = self._jobs.popleft()
            if up.error is None:
                try:
                    up.write_all(data)
                except Exception as exc:    # the thread must outlive any failure: the loop
                    up.error = exc          # waits on `pending` in settle()
                    if not isinstance(exc, OSError):
                        log.exception("unexpected error writing upload %s", up.id)
            with self._cond:
                up.pending -= 1
                was_high = self.queued > DISK_QUEUE_LOW
                self.queued -= len(data)
                drained = was_high and self.queued <= DISK_QUEUE_LOW
                self._cond.notify_all()
            if drained and self.on_drained is not None:
                self.on_drained()


class FileStore:
    """Finished files live under `<data>/files/<id>`, partial ones under `<data>/uploads/`.
    Client-supplied names are metadata only and never touch the file system.

    What a turn did to the files is journaled until the turn's commit: if the commit fails,
    undo_turn() removes files whose rows were rolled back and forgets uploads started in it."""

    def __init__(self, root, store, fds=None):
        self.root = root
        self.store = store
        self.fds = fds if fds is not None else FdBudget(None)
        self.files_dir = os.path.join(root, "files")
        self.uploads_dir = os.path.join(root, "uploads")
        make_private_dir(self.files_dir)
        make_private_dir(self.uploads_dir)
        self.uploads = {}
        self.disk = DiskWriter()
        self.journal = []          # ("started", Upload) / ("finished", path) of this turn
        self.doomed = []           # files whose rows this turn deleted: removed after commit
        self.free = 0              # free disk space, bytes: the last reading (free_bytes)
        self.free_bytes()

    def recover(self, now=None):
        """After a crash: keep resumable partial uploads, delete orphans and expired ones,
        and delete stored files that no committed row lists (a rename that beat its commit)."""
        now = time.time() if now is None else now
        for row in self.store.load_uploads():
            up = Upload.from_row(row, self.part_path(row["id"]))
            if self.expired(up, now) or not os.path.exists(up.path):
                self.discard(up)
            else:
                self.uploads[up.id] = up
        known_parts = {self.part_path(uid) for uid in self.uploads}
        removed = 0
        for name in os.listdir(self.uploads_dir):
            path = os.path.join(self.uploads_dir, name)
            if path not in known_parts:
                _remove_quietly(path)
                removed += 1
        listed = self.store.file_ids()
        for name in os.listdir(self.files_dir):
            if name not in listed:
                _remove_quietly(os.path.join(self.files_dir, name))
                removed += 1
        self.store.commit()
        self.journal.clear()
        if removed:
            log.info("removed %d orphaned file(s) left by an interrupted run", removed)

    def part_path(self, upload_id):
        return os.path.join(self.uploads_dir, upload_id + ".part")

    def file_path(self, file_id):
        return os.path.join(self.files_dir, file_id)

    def free_bytes(self):
        """Read the free disk space now (uploads ask; the loop refreshes `free` for messages
        every FREE_DISK_CACHE seconds, so a message costs no system call)."""
        try:
            self.free = shutil.disk_usage(self.root).free
        except OSError:
            self.free = 0
        return self.free

    def reserved_bytes(self, but=None):
        now = time.monotonic()
        return sum(up.size - up.received for up in self.uploads.values()
                   if up is not but and up.reserving(now))

    def start(self, owner, name, size, sha256_expected, mime, recipient, cid, caption,
              conn=None, owner_id=None, recipient_id=None):
        """Register an announced upload: its row, then its (empty) partial file. Nothing is
        kept open until bytes arrive. `conn`: the connection announcing it."""
        upload_id = "u" + secrets.token_hex(12)
        up = Upload(upload_id, owner, name, size, sha256_expected, mime, recipient, cid,
                    caption, self.part_path(upload_id))
        if conn is not None:
            up.address, up.uploader = conn.address, conn
        up.owner_id, up.recipient_id = owner_id, recipient_id
        self.store.save_upload(up)
        make_private_file(up.path)
        self.uploads[upload_id] = up
        self.journal.append(("started", up))
        return up

    def resume(self, up, conn):
        """The owner asks where to continue (upload_status): it is the uploader again, and
        `received` is what the partial file holds (after a restart, read from the disk)."""
        if up.fh is None:
            self._open(up)
        up.uploader = conn
        up.progress = time.monotonic()

    def append(self, up, data, conn=None):
        """Queue a chunk for the disk thread; it counts as received now."""
        if up.fh is None:
            self._open(up)
        up.hasher.update(data)     # here: the disk thread is the slower one (see DiskWriter)
        self.disk.submit(up, data)
        up.received += len(data)
        up.hashed = up.received
        up.updated = time.time()
        up.progress = time.monotonic()
        if conn is not None:
            up.uploader = conn

    def _open(self, up):
        if not self.fds.take():
            raise ChatError("server_busy", "The server has too many open files right now; "
                            "send this chunk again in a moment.", up.id)
        try:
            up.open_for_append()
        except OSError:
            self.fds.release()
            raise

    def _close(self, up):
        """Wait for the upload's queued chunks, then close its partial file."""
        self.disk.settle(up)
        if up.fh is not None:
            up.close()
            self.fds.release()

    def settle(self, up):
        self.disk.settle(up)

    def detach(self, conn):
        """The connection is gone: close the partial files it was sending (they stay on disk
        for resume) and stop reserving space for them."""
        for up in self.uploads.values():
            if up.uploader is conn:
                up.uploader = None
                self._close(up)

    def discard(self, up):
        self._close(up)
        _remove_quietly(up.path)
        self.uploads.pop(up.id, None)
        self.store.delete_upload(up.id)

    def finish(self, up, sender, recipient):
        """Move a complete upload into the store; returns the file's metadata. sender,
        recipient: (uid, nick key), recipient None for a public file."""
        self._close(up)
        file_id = "f" + secrets.token_hex(12)
        path = self.file_path(file_id)
        os.replace(up.path, path)
        self.uploads.pop(up.id, None)
        self.journal.append(("finished", path))
        self.store.delete_upload(up.id)
        meta = {"id": file_id, "name": up.name, "size": up.size,
                "sha256": up.hasher.hexdigest(), "mime": up.mime, "sender_key": sender[1],
                "recipient_key": recipient[1] if recipient else None, "created": time.time(),
                "sender_id": sender[0], "recipient_id": recipient[0] if recipient else None}
        self.store.add_file(meta)
        return meta

    def remove(self, file_ids):
        """Delete stored files (a removed message, a cleared history): their rows now, their
        bytes once the turn's commit has made that final. A file that cannot be removed now
        (Windows: a download has it open) has no row any more; recover() removes it at the
        next start."""
        for file_id in file_ids:
            self.store.delete_file(file_id)
            self.doomed.append(self.file_path(file_id))

    def turn_committed(self):
        self.journal.clear()
        doomed, self.doomed = self.doomed, []
        for path in doomed:
            _remove_quietly(path)

    def undo_turn(self):
        """The turn's commit failed: its rows are gone, so are the files they described."""
        journal, self.journal = self.journal, []
        self.doomed = []
        for kind, item in reversed(journal):
            if kind == "finished":
                _remove_quietly(item)
            elif item.id in self.uploads:
                self._close(item)
                _remove_quietly(item.path)
                self.uploads.pop(item.id, None)

    @staticmethod
    def expired(up, now):
        grace = UPLOAD_GRACE if up.received or os.path.exists(up.path) and \
            os.path.getsize(up.path) else UPLOAD_EMPTY_GRACE
        return now - up.updated > grace

    def expire(self, now):
        for up in [u for u in self.uploads.values()
                   if u.uploader is None and self.expired(u, now)]:
            log.info("partial upload %s (%s) expired", up.id, printable(up.name))
            self.discard(up)

    def close(self):
        """At exit: write what is queued, close every partial file."""
        self.disk.close()
        for up in self.uploads.values():
            if up.fh is not None:
                up.close()
                self.fds.release()


def searchable_text(msg):
    """What search finds a stored message by: its text, and a file's name (section 12)."""
    if "file" not in msg and "deleted" not in msg:      # a plain message: the hot path
        return msg.get("text") or ""
    if msg.get("deleted"):
        return ""
    parts = [msg.get("text") or ""]
    if isinstance(msg.get("file"), dict):
        parts.append(str(msg["file"].get("name") or ""))
    return " ".join(p for p in parts if p)


def reply_quote(msg):
    """The quote a reply carries of the message it answers (docs/PROTOCOL.md section 12)."""
    if msg.get("deleted"):
        return {"id": msg["id"], "from": msg.get("from", ""), "text": "", "deleted": True}
    text = msg.get("text") or ""
    if not text and isinstance(msg.get("file"), dict):
        text = str(msg["file"].get("name") or "")
    return {"id": msg["id"], "from": msg.get("from", ""), "text": text[:REPLY_QUOTE_CHARS]}


# the runs of letters and digits FTS5's unicode61 tokenizer makes of a search word
_SEARCH_TOKEN = re.compile(r"[^\W_]+")
# "@nick" runs to a space, the end, or punctuation that ends a sentence or a bracket
_MENTION = re.compile(r"@([^\s,.;:!?)\]}'\"@]+)")


def mention_candidates(text):
    """The strings written as @nick in a text, each once, in order (at most MAX_MENTIONS)."""
    if "@" not in text:                  # the common case, on the hot path
        return []
    found = []
    for match in _MENTION.finditer(text):
        name = match.group(1)
        if name not in found:
            found.append(name)
            if len(found) == MAX_MENTIONS:
                break
    return found


_EMOJI_JOINERS = ("\u200d", "\ufe0f")


def valid_reaction(emoji):
    """An emoji for `react`: 1-8 code points, at most 32 bytes, and no letter, digit,
    control, space or format character (but the joiner and variation selector emoji use)."""
    if not isinstance(emoji, str) or not 1 <= len(emoji) <= MAX_REACTION_CHARS or \
            len(emoji.encode("utf-8", "surrogatepass")) > MAX_REACTION_BYTES:
        return False
    for ch in emoji:
        if ch in _EMOJI_JOINERS:
            continue
        category = unicodedata.category(ch)
        if category[0] in "LNZ" or category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return False
    return True


def _body_with_uid(body, uid):
    """A stored msg JSON with its sender's `uid` after `from` (the upgrade to identities)."""
    msg = json.loads(body)
    if "uid" in msg or uid is None:
        return body
    rebuilt = {}
    for key, value in msg.items():
        rebuilt[key] = value
        if key == "from":
            rebuilt["uid"] = uid
    return _json_encoder.encode(rebuilt)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass

###############################################################################
# Chat domain #################################################################
###############################################################################

_CALL = object()      # an Outbox entry that runs a function at its place in the delivery


class Outbox:
    """What one loop turn will send, in order; delivered only after the turn's commit.

    Entries are (targets, raw JSON): targets None means every joined client, a tuple names
    connections; (_CALL, fn) runs fn at that point of the delivery, so that a download starts
    or stops in order with the messages around it. Bytes queued for a connection count in its
    `out_pending` at once: the connection layer stops dispatching a client whose own answers
    are over its output budget before they are even delivered.

    A request that stored something makes its entries durable: if the turn's commit fails,
    they are dropped and the request's `on_fail` is returned instead (Chat.storage_failed)."""

    def __init__(self):
        self.entries = []
        self.durable = []          # (start, end, on_fail) ranges of this turn's entries
        self.broadcasts = 0        # ever queued: the loop sees who fans out to the room

    def broadcast(self, raw):
        self.entries.append((None, raw))
        self.broadcasts += 1

    def send(self, targets, raw):
        size = len(raw)
        for conn in targets:
            conn.out_pending += size
        self.entries.append((targets, raw))

    def call(self, fn):
        self.entries.append((_CALL, fn))

    def mark(self):
        return len(self.entries)

    def make_durable(self, start, on_fail):
        self.durable.append((start, len(self.entries), on_fail))

    def take(self):
        entries, self.entries = self.entries, []
        self.durable = []
        return entries

    def drop_durable(self):
        """The commit failed: remove what depended on it; returns the on_fail of each request."""
        if not self.durable:
            return []
        doomed = set()
        for start, end, _ in self.durable:
            doomed.update(range(start, end))
        kept = []
        for index, entry in enumerate(self.entries):
            if index not in doomed:
                kept.append(entry)
            elif entry[0] is not None and entry[0] is not _CALL:
                for conn in entry[0]:
                    conn.out_pending -= len(entry[1])
        failures = [on_fail for _, _, on_fail in self.durable]
        self.entries, self.durable = kept, []
        return failures


@dataclass(frozen=True)
class Handler:
    """One row of the command table (pyftpdlib's proto_cmds): the Chat method that answers a
    message type, and the checks made, in one place, before it runs."""
    method: str
    needs_join: bool = True        # before welcome: not_joined
    rate_limited: bool = True      # takes a token from the connection's bucket
    payload: bool = False          # may carry a binary payload (framed `chunk` only)
    framed_only: bool = False      # file bytes: a WebSocket client uses HTTP for them


HANDLERS = {
    "hello": Handler("on_hello", needs_join=False, rate_limited=False),
    "ping": Handler("on_ping", needs_join=False),
    "pong": Handler("on_pong", needs_join=False, rate_limited=False),
    "msg": Handler("on_msg"),
    "history": Handler("on_history"),
    "typing": Handler("on_typing"),
    "upload": Handler("on_upload"),
    "chunk": Handler("on_chunk", rate_limited=False, payload=True, framed_only=True),
    "upload_status": Handler("on_upload_status", rate_limited=False),
    "upload_cancel": Handler("on_upload_cancel", rate_limited=False),
    "download": Handler("on_download", framed_only=True),
    "download_cancel": Handler("on_download_cancel", rate_limited=False),
    "delete": Handler("on_delete"),
    "edit": Handler("on_edit"),
    "react": Handler("on_react"),
    "search": Handler("on_search"),
}


class AddressBook:
    """What each client address holds: live connections and recent auth failures.

    An address is listed while it has a connection; its failures are forgotten after
    AUTH_FAILURE_MEMORY seconds without a new one, and at most ADDRESS_TABLE_MAX addresses
    with failures are remembered (the oldest go first), so no table grows without bound."""

    def __init__(self):
        self.connections = {}                       # address -> live connections
        self.failures = collections.OrderedDict()   # address -> [count, last failure]

    def connected(self, address):
        self.connections[address] = self.connections.get(address, 0) + 1

    def disconnected(self, address):
        left = self.connections.get(address, 0) - 1
        if left > 0:
            self.connections[address] = left
        else:
            self.connections.pop(address, None)

    def count(self, address):
        return self.connections.get(address, 0)

    def auth_failed(self, address, now):
        """Count a refused token; returns how long the answer is held back (seconds)."""
        self.forget_old_failures(now)
        entry = self.failures.pop(address, None) or [0, now]
        entry[0] += 1
        entry[1] = now
        self.failures[address] = entry
        while len(self.failures) > ADDRESS_TABLE_MAX:
            self.failures.popitem(last=False)
        return auth_failure_delay(entry[0])

    def forget_old_failures(self, now):
        failures = self.failures
        while failures:
            address, (_, last) = next(iter(failures.items()))
            if now - last < AUTH_FAILURE_MEMORY:
                break
            del failures[address]


class Moderation:
    """What the operator decided: the room (name, topic, locked), bans and mutes, kept in
    the store and mirrored here, so that the hot path (a muted check per message) costs a
    set lookup; and the recent events worth the operator's look (a bounded ring)."""

    def __init__(self, store):
        self.store = store
        self.events = collections.deque(maxlen=OPERATOR_EVENTS_KEPT)
        self.room = {}
        self.muted = set()              # key hashes of muted devices
        self.bans = []                  # sanction rows of bans
        self.reload()

    def reload(self):
        """Read the mirror again from the store (at start, and after a turn was rolled back:
        memory must never hold a decision the disk does not)."""
        store = self.store
        self.room = {"name": store.get_setting("room_name") or "",
                     "topic": store.get_setting("room_topic") or "",
                     "locked": store.get_setting("room_locked") == "1"}
        rows = store.sanctions()
        self.muted = {r["value"] for r in rows if r["kind"] == MessageStore.MUTE}
        self.bans = [r for r in rows if r["kind"] != MessageStore.MUTE]

    def note(self, kind, text):
        self.events.append({"ts": utc_timestamp(), "kind": kind, "text": text})

    def ban_for(self, key_hash, address, now):
        """The ban that keeps this device or address out now, or None."""
        for ban in self.bans:
            if ban["until"] is not None and ban["until"] <= now:
                continue
            if (ban["kind"] == MessageStore.BAN_DEVICE and ban["value"] == key_hash) or \
                    (ban["kind"] == MessageStore.BAN_ADDRESS and ban["value"] == address):
                return ban
        return None

    def set_room(self, name=None, topic=None, locked=None):
        for key, value in (("name", name), ("topic", topic), ("locked", locked)):
            if value is not None:
                self.room[key] = value
                self.store.set_setting("room_" + key, ("1" if value else "0")
                                       if key == "locked" else value)


def ban_sentence(ban):
    """What a banned client is told: by whom, until when, why."""
    until = "until the organiser lifts it" if ban["until"] is None else \
        "until %s UTC" % utc_timestamp(ban["until"])[:16].replace("T", " ")
    reason = " (%s)" % ban["reason"] if ban["reason"] else ""
    return "The organiser banned this %s %s%s." % (
        "device" if ban["kind"] == MessageStore.BAN_DEVICE else "network address", until,
        reason)


def device_name(key_hash):
    """What the operator sees of a device: a short name derived from its key's hash."""
    return key_hash[:8] if key_hash else "-"


def parse_timestamp(ts):
    """Seconds since the epoch of a `ts` of ours ("2026-11-25T09:14:03.120Z")."""
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def auth_failure_delay(count):
    """No delay for the first AUTH_FREE_FAILURES failures, then 0.5 s doubling up to
    AUTH_MAX_DELAY. The exponent is capped: a count in the millions must not overflow."""
    if count <= AUTH_FREE_FAILURES:
        return 0.0
    return min(AUTH_MAX_DELAY, 0.5 * 2.0 ** min(count - AUTH_FREE_FAILURES - 1, 32))


def _hello_fields(h):
    since = _opt_int(h, "since", None, 0, MAX_MESSAGE_ID)
    client = h.get("client", "")
    if not isinstance(client, str) or len(client) > 100:
        raise bad_request("'client' must be a short string.")
    return since, client


def _opt_str(h, name, max_len, ref=None):
    value = h.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise bad_request("'%s' must be a string of at most %d characters." % (name, max_len), ref)
    return value


def _req_str(h, name, max_len, ref=None):
    value = _opt_str(h, name, max_len, ref)
    if not value:
        raise bad_request("'%s' is required." % name, ref)
    return value


def _opt_int(h, name, default, low, high, ref=None):
    value = h.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise bad_request("'%s' must be an integer from %d to %d." % (name, low, high), ref)
    return value


_MIME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")


def clean_mime(mime):
    """An announced mime type, lower-case ASCII `type/subtype`; anything else is the default.
    It ends up in a latin-1 response header, so no other character may pass."""
    mime = mime.strip().lower() if isinstance(mime, str) else ""
    if len(mime) <= 100 and _MIME_RE.fullmatch(mime):
        return mime
    return DEFAULT_MIME


class Chat:
    """Sessions, nicks, messages, files: the protocol's meaning, with no sockets in it.

    Connections are duck-typed (tests/test_chat.py drives it with a fake one): the domain
    reads and sets `nick`, `key`, `session`, reads `bucket`, `address`, `label()`, and calls
    `mark_joined()`, `close_when_done()`, `start_download()` and `cancel_download()`; what it
    sends goes through the Outbox, which the event loop delivers after the turn's commit."""

    def __init__(self, store, files, config, addresses=None):
        self.store = store
        self.files = files
        self.config = config
        self.addresses = addresses if addresses is not None else AddressBook()
        self.outbox = Outbox()
        self.joined = {}            # nick key -> connection
        # Joined this turn, welcome not delivered yet: the turn's earlier broadcasts are in
        # its welcome's history already, so they must not reach it live as well (a resuming
        # client would see them twice, and take its `since` from them).
        self.welcoming = set()
        self.sessions = {}          # session secret -> connection (for HTTP file routes)
        self.token = None           # pairing token; None = open server
        self.handlers = {kind: (getattr(self, row.method), row) for kind, row in HANDLERS.items()}
        self.disk_floor = min(MESSAGE_DISK_FLOOR, config.min_free_disk)
        self.mod = Moderation(store)

    # -- entry point ----------------------------------------------------------

    def handle(self, conn, raw_header, payload=b"", now=None):
        """One frame (or WebSocket text message) from `conn`. Client errors become `error`
        frames here, in one place."""
        ref = None
        try:
            header = decode_header(raw_header)
            ref = header.get("cid") if type(header.get("cid")) is str else None
            kind = header["type"]
            entry = self.handlers.get(kind)
            if entry is None:
                raise ChatError("unknown_type", "Unknown message type %r." % kind[:40])
            method, rules = entry
            if rules.needs_join and conn.nick is None:
                raise ChatError("not_joined", "Send 'hello' first.")
            if payload and not rules.payload:
                raise bad_request("A '%s' frame carries no payload." % kind)
            if rules.framed_only and conn.proto == "ws":
                raise bad_request("'%s' is not available over WebSocket: file bytes travel "
                                  "over HTTP (/files)." % kind)
            if rules.rate_limited and not conn.bucket.take(time.monotonic() if now is None
                                                           else now):
                raise ChatError("rate_limited", "Too many messages; slow down.")
            # Chat.run, inlined: this is the hot path of every message
            outbox, store = self.outbox, self.store
            start, writes = len(outbox.entries), store.writes
            try:
                method(conn, header, payload)
            except sqlite3.Error as exc:
                outbox.make_durable(start, (conn, ref))
                self.storage_failed(exc)
                return
            if store.writes != writes:
                outbox.durable.append((start, len(outbox.entries), (conn, ref)))
        except ChatError as err:
            self.reject(conn, err, ref if err.ref is None else err.ref)

    def run(self, on_fail, method, *args):
        """Run one request. If it stored anything, what it queued waits for the turn's commit;
        should a write or the commit fail, `on_fail` replaces it: a callable, or
        (connection, ref) for a `disk_full` error frame."""
        outbox, store = self.outbox, self.store
        start, writes = len(outbox.entries), store.writes
        try:
            result = method(*args)
        except sqlite3.Error as exc:
            outbox.make_durable(start, on_fail)
            self.storage_failed(exc)
            return None
        if store.writes != writes:
            outbox.make_durable(start, on_fail)
        return result

    def storage_failed(self, exc):
        """A write or the turn's commit failed (disk full, I/O error): undo the turn's writes,
        tell every request that stored something (nothing of it is delivered), keep serving."""
        self.store.rollback()
        self.files.undo_turn()
        STORAGE_LOG.warning("storage", "the history database could not be written (%s); this "
                            "turn's messages were refused with disk_full", exc)
        self.reload_decisions()
        for on_fail in self.outbox.drop_durable():
            if callable(on_fail):
                on_fail()
            else:
                conn, ref = on_fail
                self.reject(conn, ChatError("disk_full", "The server could not store this "
                                            "(%s); nothing was sent." % _storage_reason(exc),
                                            ref))

    def reload_decisions(self):
        """The operator's decisions of a rolled-back turn are undone in memory too: the room,
        bans and mutes, and a rotated pairing token, as the store has them."""
        try:
            self.mod.reload()
            if self.token is not None:
                self.token = self.store.get_setting("pairing_token") or self.token
        except sqlite3.Error as exc:
            STORAGE_LOG.warning("storage_reload", "could not read the operator's settings "
                                "back (%s)", exc)

    def reject(self, conn, err, ref=None):
        CLIENT_LOG.log(logging.WARNING if err.fatal else logging.INFO, err.code,
                       "%s: %s (%s)", conn.label(), err.code, err.message)
        frame = {"type": "error", "code": err.code, "message": err.message}
        ref = err.ref if ref is None else ref
        if ref is not None:
            frame["ref"] = ref
        frame["fatal"] = err.fatal
        self.outbox.send((conn,), dump_json(frame))
        if err.code in ("auth_failed", "banned"):
            self.mod.note(err.code, "%s refused: %s" % (conn.address, err.message))
        if err.fatal:
            hold = 0.0
            if err.code == "auth_failed":
                # Repeated token failures from one address are answered slower and slower.
                hold = self.addresses.auth_failed(conn.address, time.monotonic())
            conn.close_when_done(err.code, hold=hold)

    # -- session --------------------------------------------------------------

    def on_hello(self, conn, h, payload):
        if conn.nick is not None:
            raise bad_request("Already joined; 'hello' is sent once.")
        if h.get("proto", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            raise ChatError("proto_unsupported", "This server speaks protocol version %d."
                            % PROTOCOL_VERSION)
        if self.token is not None and not _token_matches(h.get("token"), self.token):
            raise ChatError("auth_failed", "Missing or wrong pairing token: scan the server's "
                            "QR code again.")
        since, client = _hello_fields(h)
        if not isinstance(h.get("nick"), str):
            raise bad_request("'nick' is required and must be a string.")
        nick = validate_nick(h["nick"])
        device = _device_key(h.get("device"))
        key = nick_key(nick)
        key_hash = hashlib.sha256(device.encode("ascii")).hexdigest()
        ban = self.mod.ban_for(key_hash, conn.address, time.time())
        if ban is not None:
            raise ChatError("banned", ban_sentence(ban))
        if self.mod.room["locked"] and not self.store.known_identity(key, key_hash):
            raise ChatError("room_locked", "The room is locked: no new nicks may join now. "
                            "Ask the organiser to unlock it.")
        uid = self.identity_for(nick, key, key_hash)
        start = self.outbox.mark()
        holder = self.joined.get(key)
        if holder is not None:
            # The same device again, e.g. reconnecting after a WiFi drop before the server
            # noticed that its old connection died, or a second tab: the old connection is
            # told it was replaced and closed, without a leave/join.
            log.info("%s takes over the nick of %s", conn.label(), holder.label())
            del self.joined[key]
            self.sessions.pop(holder.session, None)
            self.outbox.send((holder,), b'{"type":"bye","reason":"replaced"}')
            holder.close_when_done("replaced")
        log.info("%s joined as %r (%s)", conn.label(), nick, printable(client or "unknown client"))
        conn.nick, conn.key, conn.uid = nick, key, uid
        conn.device_hash, conn.sent = key_hash, 0
        conn.session = secrets.token_urlsafe(18)
        conn.mark_joined()
        self.joined[key] = conn
        self.sessions[conn.session] = conn
        self.welcoming.add(conn)
        self.outbox.send((conn,), self.welcome(conn, since, device))
        self.outbox.call(functools.partial(self.welcoming.discard, conn))
        if holder is None and len(self.joined) <= PRESENCE_LIMIT:
            self.outbox.broadcast(dump_json({"type": "join", "nick": nick}))
        # should the turn's commit fail, the welcome is not delivered: the join is undone
        # too, so that the client is not left joined without a welcome (in `welcoming`, no
        # broadcast reaches it) and may say hello again
        self.outbox.make_durable(start, functools.partial(self._join_failed, conn))

    def _join_failed(self, conn):
        if self.joined.get(conn.key) is conn:
            del self.joined[conn.key]
        self.sessions.pop(conn.session, None)
        self.welcoming.discard(conn)
        conn.nick = conn.key = conn.uid = conn.session = None

    def identity_for(self, nick, key, key_hash):
        """The identity (uid) this device (the hash of its key) may use the nick as, claiming
        it if it is free; ChatError nick_owned if the nick, or one it looks like, is another
        device's."""
        store, now = self.store, time.time()
        claim = store.claim_of(key)
        if claim is not None and self.lapsed(claim, now):
            store.lapse(claim["id"])            # unused too long: the name is free again
            claim = None
        if claim is not None:
            if claim["key_hash"] is None:       # from a history older than identities
                store.claim(claim["id"], key_hash, now)
            elif not secrets.compare_digest(claim["key_hash"], key_hash):
                raise ChatError("nick_owned", "The nick %r belongs to another device; pick "
                                "another one." % nick)
            store.seen(claim["id"], nick, now)
            return claim["id"]
        for other in store.lookalikes(nick_skeleton(nick), key):
            if other["key_hash"] != key_hash and not self.lapsed(other, now):
                raise ChatError("nick_owned", "The nick %r looks like %r, which belongs to "
                                "another device; pick another one." % (nick, other["nick"]))
        return store.create_identity(nick, key, nick_skeleton(nick), key_hash, now)

    def lapsed(self, claim, now):
        """A claim lapses when no connection of its device used it for --nick-expiry."""
        return claim["nick_key"] not in self.joined and \
            now - claim["last_seen"] > self.config.nick_expiry * 86400.0

    def welcome(self, conn, since, device):
        if since is None:
            bodies, has_more = self.store.history(conn.uid, limit=WELCOME_HISTORY_NEW)
        else:
            bodies, has_more = self.store.history(conn.uid, after=since,
                                                  limit=WELCOME_HISTORY_RESUME, changes=True)
        users = [c.nick for c in itertools.islice(self.joined.values(), WELCOME_USERS_MAX)]
        cfg = self.config
        head = dump_json({
            "type": "welcome", "nick": conn.nick, "uid": conn.uid, "device": device,
            "server": "chatserver/" + __version__,
            "proto": PROTOCOL_VERSION, "session": conn.session, "users": users,
            "online": len(self.joined), "has_more": has_more, "last_id": self.store.last_id,
            "room": self.mod.room, "muted": conn.device_hash in self.mod.muted,
            "limits": {"text": MAX_TEXT_BYTES, "chunk": MAX_PAYLOAD_BYTES,
                       "file": cfg.max_file_size, "ping_after": cfg.ping_after,
                       "idle_timeout": cfg.idle_timeout,
                       "edit_window": cfg.edit_window * 60.0}})
        # History goes last, spliced from the stored JSON without decoding it.
        return head[:-1] + b',"history":[' + ",".join(bodies).encode("utf-8") + b"]}"

    def leave(self, conn, reason):
        """A connection is gone (closed by either side); if it had joined, everyone hears."""
        self.files.detach(conn)
        self.welcoming.discard(conn)
        if conn.nick is None or self.joined.get(conn.key) is not conn:
            return
        del self.joined[conn.key]
        self.sessions.pop(conn.session, None)
        self.store.seen(conn.uid, conn.nick, time.time())     # the claim is kept from now
        log.info("%s left (%s)", conn.label(), reason)
        if reason == "slow":
            self.mod.note("slow", "%s was closed: it did not read what it was sent"
                          % conn.label())
        if len(self.joined) < PRESENCE_LIMIT:
            self.outbox.broadcast(dump_json({"type": "leave", "nick": conn.nick,
                                             "reason": reason}))

    def on_ping(self, conn, h, payload):
        if "t" not in h:
            self.outbox.send((conn,), b'{"type":"pong"}')
            return
        echo = dump_json(h["t"])
        if len(echo) > PING_ECHO_MAX:
            raise bad_request("'t' is at most %d bytes of JSON." % PING_ECHO_MAX)
        self.outbox.send((conn,), b'{"type":"pong","t":' + echo + b"}")

    def on_pong(self, conn, h, payload):
        pass  # a frame counts as life; the connection layer noted it

    # -- messages -------------------------------------------------------------

    def recipient(self, h, ref):
        """The online connection named by `to`, or None for a public message."""
        to = _opt_str(h, "to", MAX_NICK_CHARS * 4, ref)
        if to is None:
            return None
        target = self.joined.get(nick_key(to.strip()))
        if target is None:
            raise ChatError("unknown_user", "No user named %r is online." % to[:MAX_NICK_CHARS],
                            ref)
        return target

    def on_msg(self, conn, h, payload):
        cid = _req_str(h, "cid", MAX_CID_CHARS)
        text = h.get("text")
        if not isinstance(text, str) or not text:
            raise bad_request("'text' must be a non-empty string.", cid)
        if len(text) * 4 > MAX_TEXT_BYTES and len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise ChatError("text_too_long", "Messages are limited to %d bytes." % MAX_TEXT_BYTES,
                            cid)
        self.check_not_muted(conn, cid)
        target = self.recipient(h, cid)
        answered = None
        if h.get("reply_to") is not None:
            answered = self.visible_message(conn.uid, {"id": h["reply_to"], "cid": cid})
        self.check_disk_floor(cid)
        self.post(conn, cid, target, {"text": text}, reply_to=answered)

    def check_not_muted(self, conn, ref):
        if conn.device_hash in self.mod.muted:
            raise ChatError("muted", "The organiser muted you: you can read, but not post "
                            "or share files.", ref)

    def check_disk_floor(self, ref):
        """Refuse to store anything once the disk is nearly full, before SQLite fails
        (--min-free-disk lowers the floor: 0 lets SQLite itself find the disk full). The
        free space is the loop's reading of the last second (FileStore.free)."""
        if self.files.free < self.disk_floor:
            raise ChatError("disk_full", "The server's disk is full; nothing was stored.", ref)

    def post(self, conn, cid, target, fields, recipient_name=None, recipient_uid=None,
             reply_to=None):
        """Store a message and queue it for everyone concerned (sender included: the ack).
        reply_to: the stored row of the message it answers (section 12)."""
        to = target.nick if target is not None else recipient_name
        recipient = (recipient_uid if target is None else target.uid, nick_key(to)) \
            if to is not None else None
        now = time.time()
        if reply_to is not None:
            fields["reply_to"] = self.quote_for(conn, recipient, reply_to, cid)
        text = fields.get("text") or ""
        if "@" in text:
            mentions = self.mentions(text, conn.uid, recipient)
            if mentions:
                fields["mentions"] = mentions

        def build_body(msg_id):
            # the JSON of {"type":"msg","id","ts","from",**fields,"cid"[,"to"]}, built as
            # text: this runs once per message, on the hot path
            return '{"type":"msg","id":%d,"ts":"%s","from":%s,"uid":%d%s,"cid":%s%s}' % (
                msg_id, utc_timestamp(now), _json_str(conn.nick), conn.uid,
                "".join([',"%s":%s' % (k, _json_str(v) if type(v) is str else
                                       _json_encoder.encode(v)) for k, v in fields.items()]),
                _json_str(cid), ',"to":' + _json_str(to) if to is not None else "")

        msg_id, body, is_new = self.store.add_message(
            (conn.uid, conn.key), recipient, cid, build_body,
            reply_to=reply_to["id"] if reply_to is not None else None,
            search_text=searchable_text(fields))
        raw = body.encode("utf-8")
        conn.sent += is_new
        if not is_new:
            self.outbox.send((conn,), raw)       # a resend: re-acknowledge, store nothing
        elif to is None:
            self.outbox.broadcast(raw)
        else:
            targets = [conn]
            if target is not None and target is not conn:
                targets.append(target)
            self.outbox.send(tuple(targets), raw)
        return raw

    def quote_for(self, conn, recipient, row, cid):
        """The quote of `row` for a new message to `recipient` (None: everyone). A direct
        message is answered in its own conversation only: quoting it anywhere else would
        show it to someone who is not one of its two parties."""
        if row["recipient_id"] is not None and \
                {row["sender_id"], row["recipient_id"]} != {conn.uid, recipient and recipient[0]}:
            raise ChatError("unknown_message", "Message %d belongs to another conversation: "
                            "answer it there." % row["id"], cid)
        return reply_quote(row["msg"])

    def mentions(self, text, sender_uid, recipient):
        """The nicks of existing identities written as @nick (display spelling); in a direct
        message only its two parties."""
        found = []
        for name in mention_candidates(text):
            claim = self.store.claim_of(nick_key(name))
            if claim is None or claim["nick"] in found:
                continue
            if recipient is not None and claim["id"] not in (sender_uid, recipient[0]):
                continue
            found.append(claim["nick"])
        return found

    def on_history(self, conn, h, payload):
        before = _opt_int(h, "before", None, 0, MAX_MESSAGE_ID)
        after = _opt_int(h, "after", None, 0, MAX_MESSAGE_ID)
        limit = _opt_int(h, "limit", HISTORY_PAGE_DEFAULT, 1, HISTORY_PAGE_MAX)
        cid = _opt_str(h, "cid", MAX_CID_CHARS)
        # a request with `after` is a resume: it gets the changes in its range too
        bodies, has_more = self.store.history(conn.uid, after=after or 0, before=before,
                                              limit=limit, changes=after is not None)
        echo = b',"cid":' + dump_json(cid) if cid is not None else b""
        self.outbox.send((conn,), b'{"type":"history","has_more":' +
                         (b"true" if has_more else b"false") + echo + b',"messages":[' +
                         ",".join(bodies).encode("utf-8") + b"]}")

    def on_typing(self, conn, h, payload):
        if conn.device_hash in self.mod.muted:
            return                      # a muted user's typing would be a way to post
        target = self.recipient(h, None)
        if target is None:
            if len(self.joined) <= PRESENCE_LIMIT:
                self.outbox.broadcast(dump_json({"type": "typing", "from": conn.nick}))
        elif target is not conn:
            self.outbox.send((target,), dump_json({"type": "typing", "from": conn.nick,
                                                   "to": target.nick}))

    # -- changes to the history (docs/PROTOCOL.md section 10) -------------------

    def visible_message(self, uid, h):
        """The stored message named by h["id"] that identity `uid` can see, not removed."""
        msg_id = h.get("id")
        if type(msg_id) is not int or not 0 < msg_id <= MAX_MESSAGE_ID:
            raise bad_request("'id' must be a message id.", h.get("cid"))
        row = self.store.get_message(msg_id)
        if row is None or row["msg"].get("deleted") or (
                uid is not None and row["recipient_id"] is not None
                and uid not in (row["sender_id"], row["recipient_id"])):
            raise ChatError("unknown_message", "There is no message %d to change (it may "
                            "have been removed)." % msg_id, h.get("cid"))
        return row

    def own_message(self, conn, h):
        row = self.visible_message(conn.uid, h)
        if row["sender_id"] != conn.uid:
            raise ChatError("forbidden", "Only its sender (or the organiser) can change "
                            "this message.", h.get("cid"))
        return row

    def on_delete(self, conn, h, payload):
        _opt_str(h, "cid", MAX_CID_CHARS)
        self.remove_message(self.own_message(conn, h), "sender")

    def on_edit(self, conn, h, payload):
        cid = _opt_str(h, "cid", MAX_CID_CHARS)
        text = h.get("text")
        if not isinstance(text, str) or not text:
            raise bad_request("'text' must be a non-empty string.", cid)
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise ChatError("text_too_long", "Messages are limited to %d bytes." % MAX_TEXT_BYTES,
                            cid)
        self.check_not_muted(conn, cid)
        row = self.own_message(conn, h)
        window = self.config.edit_window * 60.0
        if window <= 0 or time.time() - parse_timestamp(row["msg"]["ts"]) > window:
            raise ChatError("edit_expired", "Messages can be edited for %g minutes after "
                            "they are sent; this one no longer." % self.config.edit_window,
                            cid)
        self.check_disk_floor(cid)
        now = utc_timestamp()
        msg = dict(row["msg"], text=text, edited=now)
        self.store.rewrite_message(row["id"], _json_encoder.encode(msg), searchable_text(msg))
        self.requote(msg)
        self.publish_change(row, {"change": "edit", "target": row["id"], "by": "sender",
                                  "text": text, "edited": now})

    def remove_message(self, row, by):
        """A message becomes "removed" for everyone who sees it; its file goes from the disk."""
        msg = row["msg"]
        tombstone = {k: v for k, v in msg.items() if k not in ("file", "edited")}
        tombstone["text"] = ""
        tombstone["deleted"] = by
        tombstone.pop("reactions", None)
        self.store.rewrite_message(row["id"], _json_encoder.encode(tombstone), "")
        self.requote(tombstone)
        if isinstance(msg.get("file"), dict) and isinstance(msg["file"].get("id"), str):
            self.files.remove([msg["file"]["id"]])
        log.info("message %d removed by its %s", row["id"], by)
        self.publish_change(row, {"change": "delete", "target": row["id"], "by": by})

    def requote(self, msg):
        """The stored replies to `msg` quote it as it is now (edited, or removed). Clients
        apply the change to the quotes they hold; histories read the stored replies."""
        quote = reply_quote(msg)
        for reply_id, reply in self.store.replies_to(msg["id"]):
            if reply.get("reply_to") != quote:
                reply["reply_to"] = quote
                self.store.rewrite_message(reply_id, _json_encoder.encode(reply))

    def on_react(self, conn, h, payload):
        cid = _opt_str(h, "cid", MAX_CID_CHARS)
        emoji = h.get("emoji")
        if emoji != "" and not valid_reaction(emoji):
            raise bad_request("'emoji' must be one emoji (at most %d characters and %d bytes, "
                              "no letters, digits or spaces), or \"\" to remove yours."
                              % (MAX_REACTION_CHARS, MAX_REACTION_BYTES), cid)
        self.check_not_muted(conn, cid)
        row = self.visible_message(conn.uid, h)
        msg = row["msg"]
        before = msg.get("reactions") or {}
        after = {e: [u for u in uids if u != conn.uid] for e, uids in before.items()}
        if emoji:
            after.setdefault(emoji, []).append(conn.uid)
        after = {e: uids for e, uids in after.items() if uids}
        if after == before:
            return                          # nothing changes: nothing is stored or sent
        self.check_disk_floor(cid)
        if after:
            msg["reactions"] = after
        else:
            msg.pop("reactions", None)
        self.store.rewrite_message(row["id"], _json_encoder.encode(msg))
        self.publish_change(row, {"change": "react", "target": row["id"], "uid": conn.uid,
                                  "emoji": emoji, "reactions": after})

    def on_search(self, conn, h, payload):
        cid = _req_str(h, "cid", MAX_CID_CHARS)
        text = h.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_SEARCH_CHARS:
            raise bad_request("'text' must be 1-%d characters to look for." % MAX_SEARCH_CHARS,
                              cid)
        words = [w for w in text.split() if any(ch.isalnum() for ch in w)]
        if not words:
            raise bad_request("Search for a word (letters or digits).", cid)
        limit = _opt_int(h, "limit", SEARCH_PAGE_DEFAULT, 1, SEARCH_PAGE_MAX, cid)
        before = _opt_int(h, "before", None, 1, MAX_MESSAGE_ID, cid)
        from_uid = self.identity_named(h, "from", cid)
        with_uid = self.identity_named(h, "with", cid)
        bodies, has_more = self.store.search(conn.uid, words, limit, before=before,
                                             from_uid=from_uid, with_uid=with_uid)
        self.outbox.send((conn,), b'{"type":"search_results","cid":' + dump_json(cid) +
                         b',"has_more":' + (b"true" if has_more else b"false") +
                         b',"results":[' + ",".join(bodies).encode("utf-8") + b"]}")

    def identity_named(self, h, field, cid):
        """The uid of the identity a nick field of a request names, or None without it."""
        nick = _opt_str(h, field, MAX_NICK_CHARS * 4, cid)
        if nick is None:
            return None
        claim = self.store.claim_of(nick_key(nick.strip()))
        if claim is None:
            raise ChatError("unknown_user", "Nobody here is called %r."
                            % printable(nick, MAX_NICK_CHARS), cid)
        return claim["id"]

    def clear_history(self):
        """Every message and file goes; a `clear` change tells every client."""
        change_id, body = self.store.add_change(None, lambda i: self.change_body(
            i, {"change": "clear", "by": "operator"}))
        self.files.remove(self.store.clear_before(change_id))
        log.info("the history was cleared by the operator")
        self.outbox.broadcast(body.encode("utf-8"))

    @staticmethod
    def change_body(change_id, fields):
        return _json_encoder.encode(dict({"type": "change", "id": change_id,
                                          "ts": utc_timestamp()}, **fields))

    def publish_change(self, row, fields):
        """Store the change in the message sequence; deliver it to whoever sees the message."""
        change_id, body = self.store.add_change(row, lambda i: self.change_body(i, fields))
        raw = body.encode("utf-8")
        if row["recipient_id"] is None:
            self.outbox.broadcast(raw)
            return
        parties = [c for c in (self.joined.get(row["sender_key"]),
                               self.joined.get(row["recipient_key"]))
                   if c is not None and c.uid in (row["sender_id"], row["recipient_id"])]
        self.outbox.send(tuple(dict.fromkeys(parties)), raw)

    # -- moderation: what the operator's requests do (OperatorApi) ---------------

    def online(self, nick):
        conn = self.joined.get(nick_key(nick)) if isinstance(nick, str) else None
        if conn is None:
            raise ChatError("unknown_user", "No user named %r is online." % str(nick)[:40])
        return conn

    def remove_user(self, conn, reason, sentence):
        """Say why (bye kicked/banned), then close; everyone else gets `leave`."""
        self.outbox.send((conn,), dump_json({"type": "bye", "reason": reason,
                                             "message": sentence}))
        conn.close_when_done(reason)

    def kick(self, nick, reason=""):
        conn = self.online(nick)
        sentence = "The organiser removed you from the chat%s. You may join again." % (
            " (%s)" % reason if reason else "")
        log.info("%s kicked by the operator", conn.label())
        self.mod.note("kick", "%s was removed" % conn.nick)
        self.remove_user(conn, "kicked", sentence)

    def device_of_nick(self, nick):
        """The key hash of the device behind a nick: online, or the holder of its claim."""
        if not isinstance(nick, str) or not nick.strip():
            raise bad_request("'nick' is required.")
        conn = self.joined.get(nick_key(nick))
        key_hash = conn.device_hash if conn is not None else self.store.device_of(nick_key(nick))
        if key_hash is None:
            raise ChatError("unknown_user", "No device has used the nick %r." % nick[:40])
        return key_hash

    def ban(self, kind, value, nick, minutes, reason):
        now = time.time()
        until = now + minutes * 60.0 if minutes else None
        ban_id = self.store.add_sanction(kind, value, nick, reason, now, until)
        self.mod.reload()
        ban = self.mod.bans[-1]
        self.mod.note("ban", "%s banned (%s)" % (nick or value, ban_sentence(ban)))
        for conn in list(self.joined.values()):
            if (kind == MessageStore.BAN_DEVICE and conn.device_hash == value) or \
                    (kind == MessageStore.BAN_ADDRESS and conn.address == value):
                self.remove_user(conn, "banned", ban_sentence(ban))
        return ban_id

    def unban(self, ban_id):
        """Lift a ban; False if there is none with this id."""
        if not self.store.remove_sanction(ban_id):
            return False
        self.mod.reload()
        return True

    def set_muted(self, nick, muted):
        key_hash = self.device_of_nick(nick)
        self.store.remove_sanctions(MessageStore.MUTE, key_hash)
        if muted:
            self.store.add_sanction(MessageStore.MUTE, key_hash, nick.strip(), "", time.time(),
                                    None)
        self.mod.reload()
        notice = dump_json({"type": "notice", "code": "muted" if muted else "unmuted",
                            "message": "The organiser muted you: you can read, but not post "
                            "or share files." if muted else "The organiser unmuted you: you "
                            "can post again."})
        targets = tuple(c for c in self.joined.values() if c.device_hash == key_hash)
        if targets:
            self.outbox.send(targets, notice)

    def set_room(self, name=None, topic=None, locked=None):
        self.mod.set_room(name, topic, locked)
        self.outbox.broadcast(dump_json(dict({"type": "room"}, **self.mod.room)))

    # -- files ----------------------------------------------------------------

    def start_upload(self, conn, name, size, cid, sha256=None, mime=None, target=None,
                     caption=""):
        """Validate an announced file and register its partial file (framed and HTTP uploads).
        Every limit is checked before anything is taken."""
        self.check_not_muted(conn, cid)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_request("'size' must be a non-negative integer.", cid)
        if size > self.config.max_file_size:
            raise ChatError("file_too_large", "Files are limited to %d bytes."
                            % self.config.max_file_size, cid)
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise bad_request("'sha256' must be 64 hexadecimal characters.", cid)
        uploads = self.files.uploads.values()
        if sum(1 for u in uploads if u.owner_id == conn.uid) >= self.config.max_uploads:
            raise ChatError("too_many_uploads", "At most %d uploads at a time."
                            % self.config.max_uploads, cid)
        if sum(1 for u in uploads if u.address == conn.address) >= MAX_UPLOADS_PER_ADDRESS or \
                len(self.files.uploads) >= MAX_PARTIAL_UPLOADS:
            raise ChatError("too_many_uploads", "Too many unfinished uploads on the server "
                            "from your address; finish or cancel one first.", cid)
        needed = size + self.files.reserved_bytes() + self.config.min_free_disk
        if self.files.free_bytes() < needed:
            raise ChatError("disk_full", "Not enough free disk space on the server for this "
                            "file.", cid)
        up = self.files.start(conn.nick, sanitize_file_name(name), size,
                              sha256.lower() if sha256 else None, clean_mime(mime),
                              target.nick if target is not None else None, cid, caption or "",
                              conn, owner_id=conn.uid,
                              recipient_id=target.uid if target is not None else None)
        log.info("%s uploads %r (%d bytes) as %s", conn.label(), up.name, size, up.id)
        return up

    def on_upload(self, conn, h, payload):
        cid = _req_str(h, "cid", MAX_CID_CHARS)
        stored = self.store.find_message(conn.uid, cid)
        if stored is not None:      # announced again after it completed: re-acknowledge
            self.outbox.send((conn,), stored.encode("utf-8"))
            return
        name = h.get("name")
        if not isinstance(name, str) or not name or len(name) > 4 * MAX_FILE_NAME:
            raise bad_request("'name' must be a string of 1 to %d characters."
                              % (4 * MAX_FILE_NAME), cid)
        target = self.recipient(h, cid)
        up = self.start_upload(conn, name, h.get("size"), cid, _opt_str(h, "sha256", 64, cid),
                               _opt_str(h, "mime", 200, cid), target,
                               _opt_str(h, "text", MAX_TEXT_BYTES, cid))
        if up.size == 0:
            self.finish_upload(conn, up)
            return
        self.send_upload_ready(conn, up)

    def send_upload_ready(self, conn, up):
        self.outbox.send((conn,), dump_json({
            "type": "upload_ready", "upload": up.id, "cid": up.cid, "offset": up.received,
            "size": up.size, "chunk": MAX_PAYLOAD_BYTES}))

    def own_upload(self, conn, h):
        upload_id = h.get("upload")
        up = self.files.uploads.get(upload_id) if isinstance(upload_id, str) else None
        if up is None or up.owner_id != conn.uid:
            raise ChatError("unknown_upload", "No upload %r of yours is in progress."
                            % str(upload_id)[:40], upload_id if isinstance(upload_id, str)
                            else None)
        return up

    def on_chunk(self, conn, h, payload):
        up = self.own_upload(conn, h)
        self.receive_chunk(conn, up, h.get("offset"), payload, h.get("last") is True)

    def receive_chunk(self, conn, up, offset, data, last=False):
        """Append one chunk; the upload completes when `size` bytes are in. `last` is the
        client saying it has nothing more: then the size must be complete."""
        if offset != up.received or isinstance(offset, bool):
            raise ChatError("bad_offset", "Expected offset %d, got %r." % (up.received, offset),
                            up.id)
        if not data:
            raise bad_request("A chunk carries 1 byte or more.", up.id)
        if up.error is not None:
            raise self.write_failed(up)
        if up.received + len(data) > up.size:
            self.files.discard(up)
            raise ChatError("size_mismatch", "More bytes than the announced %d; the upload is "
                            "discarded." % up.size, up.id)
        self.files.append(up, data, conn)
        if up.received == up.size or last:
            return self.finish_upload(conn, up)
        return None

    def write_failed(self, up):
        """The disk thread could not write this upload: discard it, tell the uploader."""
        reason = up.error.strerror if isinstance(up.error, OSError) and up.error.strerror \
            else "disk error"
        self.files.discard(up)
        log.warning("upload %s (%s) failed: %s", up.id, up.name, up.error)
        return ChatError("disk_full", "The server could not write the file (%s); the upload "
                         "is discarded." % reason, up.id)

    def finish_upload(self, conn, up):
        """Verify and publish a complete upload; returns the file message (JSON bytes)."""
        self.files.settle(up)
        if up.error is not None:
            raise self.write_failed(up)
        digest = up.hasher.hexdigest()
        if up.received != up.size:
            self.files.discard(up)
            raise ChatError("size_mismatch", "Received %d bytes, %d were announced."
                            % (up.received, up.size), up.id)
        if up.sha256_expected and up.sha256_expected != digest:
            self.files.discard(up)
            raise ChatError("checksum_mismatch", "The SHA-256 of the received file differs "
                            "from the announced one; the upload is discarded.", up.id)
        stored = self.store.find_message(conn.uid, up.cid)
        if stored is not None:
            # this cid was shared before (a browser retrying a POST whose 201 it lost):
            # acknowledge the original, keep no second copy of the bytes
            self.files.discard(up)
            raw = stored.encode("utf-8")
            self.outbox.send((conn,), raw)
            return raw
        self.check_disk_floor(up.id)
        target = self.joined.get(nick_key(up.recipient)) if up.recipient else None
        if target is not None and target.uid != up.recipient_id:
            target = None                       # the nick has another owner now
        meta = self.files.finish(up, (conn.uid, conn.key),
                                 (up.recipient_id, nick_key(up.recipient))
                                 if up.recipient else None)
        log.info("%s shared %r (%d bytes) as %s", conn.label(), meta["name"], meta["size"],
                 meta["id"])
        file_info = {k: meta[k] for k in ("id", "name", "size", "sha256", "mime")}
        return self.post(conn, up.cid, target, {"text": up.caption, "file": file_info},
                         recipient_name=up.recipient, recipient_uid=up.recipient_id)

    def on_upload_status(self, conn, h, payload):
        up = self.own_upload(conn, h)
        if up.error is not None:
            raise self.write_failed(up)
        self.files.resume(up, conn)
        needed = up.size - up.received + self.files.reserved_bytes(but=up) + \
            self.config.min_free_disk
        if self.files.free_bytes() < needed:
            raise ChatError("disk_full", "Not enough free disk space on the server to finish "
                            "this file; it is kept, try again later.", up.id)
        self.send_upload_ready(conn, up)

    def on_upload_cancel(self, conn, h, payload):
        up = self.own_upload(conn, h)
        log.info("%s cancelled upload %s", conn.label(), up.id)
        self.files.discard(up)

    def readable_file(self, uid, file_id):
        """File metadata if identity `uid` may read it, else ChatError."""
        meta = self.store.get_file(file_id) if isinstance(file_id, str) else None
        if meta is None:
            raise ChatError("unknown_file", "No file %r." % str(file_id)[:40],
                            file_id if isinstance(file_id, str) else None)
        if meta["recipient_key"] is not None and uid not in (meta["sender_id"],
                                                             meta["recipient_id"]):
            raise ChatError("forbidden", "This file was shared privately between two other "
                            "users.", file_id)
        return meta

    def on_download(self, conn, h, payload):
        meta = self.readable_file(conn.uid, h.get("file"))
        offset = _opt_int(h, "offset", 0, 0, meta["size"], meta["id"])
        self.outbox.call(lambda: self.start_download(conn, meta, offset))

    def start_download(self, conn, meta, offset):
        """At its place in the delivery: open the file and send `download_start`."""
        try:
            conn.start_download(self.files.file_path(meta["id"]), meta, offset)
        except ChatError as err:
            self.reject(conn, err, meta["id"])
        except OSError:
            self.reject(conn, ChatError("unknown_file", "The file is missing on the server.",
                                        meta["id"]))

    def on_download_cancel(self, conn, h, payload):
        file_id = h.get("file")
        if not isinstance(file_id, str):
            raise bad_request("'file' is required.")
        self.outbox.call(lambda: conn.cancel_download(file_id))


_DEVICE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")


def _device_key(value):
    """The client's device key, or a new one for a client that has none (it is told in
    welcome.device and keeps it): at least 128 bits, URL-safe base64."""
    if value is None:
        return secrets.token_urlsafe(16)
    if not isinstance(value, str) or not _DEVICE_KEY_RE.fullmatch(value):
        raise bad_request("'device' must be 22 to 128 URL-safe base64 characters.")
    return value


def _token_matches(given, expected):
    return isinstance(given, str) and secrets.compare_digest(given.encode("utf-8", "replace"),
                                                             expected.encode("utf-8"))


class OperatorApi:
    """The operator's requests (docs/PROTOCOL.md section 11): one method per action, JSON in,
    JSON out, no sockets. The HTTP layer checks who asks (OperatorApi.allowed) and calls
    `perform`; what the actions send to clients goes through the Chat's Outbox as usual.
    `site` is what the server tells about itself (pairing_urls, rotate_token, health)."""

    ACTIONS = ("kick", "ban", "unban", "mute", "unmute", "delete", "room", "rotate_token",
               "clear")

    def __init__(self, chat, site):
        self.chat = chat
        self.site = site
        self.key = secrets.token_urlsafe(24)     # new at every start, never logged

    def key_matches(self, given):
        return isinstance(given, str) and secrets.compare_digest(
            given.encode("utf-8", "replace"), self.key.encode("ascii"))

    def perform(self, action, body):
        if action not in self.ACTIONS:
            raise HttpError(404, "No operator action %r." % printable(action, 40),
                            code="not_found")
        if not isinstance(body, dict):
            raise HttpError(400, "The body must be a JSON object.", code="bad_request")
        return getattr(self, "do_" + action)(body)

    # -- what the page shows ----------------------------------------------------

    def state(self):
        chat, now, mono = self.chat, time.time(), time.monotonic()
        users = [{"nick": c.nick, "uid": c.uid, "device": device_name(c.device_hash),
                  "address": c.address, "transport": "websocket" if c.proto == "ws"
                  else "framed", "since": utc_timestamp(now - (mono - c.connected)),
                  "messages": c.sent, "muted": c.device_hash in chat.mod.muted}
                 for c in chat.joined.values()]
        counters = chat.store.counters()
        counters["free_disk"] = chat.files.free
        counters["connections"] = self.site.health()["connections"]
        bans, mutes = [], []
        for row in chat.store.sanctions():
            if row["kind"] == MessageStore.MUTE:
                mutes.append({"device": device_name(row["value"]), "nick": row["nick"],
                              "since": utc_timestamp(row["since"])})
            elif row["until"] is None or row["until"] > now:
                bans.append({"id": row["id"], "kind": "device" if row["kind"] ==
                             MessageStore.BAN_DEVICE else "address",
                             "value": device_name(row["value"]) if row["kind"] ==
                             MessageStore.BAN_DEVICE else row["value"], "nick": row["nick"],
                             "reason": row["reason"], "since": utc_timestamp(row["since"]),
                             "until": utc_timestamp(row["until"]) if row["until"] else None})
        recent = [operator_view(json.loads(body))
                  for body in chat.store.all_messages(newest=OPERATOR_RECENT_MESSAGES)]
        return {"room": chat.mod.room, "users": users, "counters": counters, "bans": bans,
                "mutes": mutes, "events": list(chat.mod.events), "recent": recent,
                "pairing_url": self.site.pairing_urls()[0]}

    # -- actions ------------------------------------------------------------------

    def do_kick(self, body):
        self.chat.kick(body.get("nick"), self._text(body, "reason", MAX_BAN_REASON_CHARS))
        return {"ok": True}

    def do_ban(self, body):
        minutes = body.get("minutes") or 0
        if type(minutes) not in (int, float) or not 0 <= minutes <= 10 ** 7:
            raise HttpError(400, "'minutes' must be a number of minutes (0: until lifted).",
                            code="bad_request")
        reason = self._text(body, "reason", MAX_BAN_REASON_CHARS)
        address = body.get("address")
        if address is not None:
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                raise HttpError(400, "'address' must be an IP address.",
                                code="bad_request") from None
            ban_id = self.chat.ban(MessageStore.BAN_ADDRESS, address, "", minutes, reason)
        else:
            nick = body.get("nick")
            key_hash = self.chat.device_of_nick(nick)
            ban_id = self.chat.ban(MessageStore.BAN_DEVICE, key_hash, nick.strip(), minutes,
                                   reason)
        return {"ok": True, "ban": ban_id}

    def do_unban(self, body):
        ban_id = body.get("id")
        if type(ban_id) is not int or not self.chat.unban(ban_id):
            raise HttpError(404, "No ban %r." % printable(str(ban_id), 20), code="not_found")
        return {"ok": True}

    def do_mute(self, body):
        self.chat.set_muted(body.get("nick"), True)
        return {"ok": True}

    def do_unmute(self, body):
        self.chat.set_muted(body.get("nick"), False)
        return {"ok": True}

    def do_delete(self, body):
        self.chat.remove_message(self.chat.visible_message(None, body), "operator")
        return {"ok": True}

    def do_room(self, body):
        locked = body.get("locked")
        if locked is not None and type(locked) is not bool:
            raise HttpError(400, "'locked' must be true or false.", code="bad_request")
        self.chat.set_room(self._text(body, "name", MAX_ROOM_NAME_CHARS, None),
                           self._text(body, "topic", MAX_ROOM_TOPIC_CHARS, None), locked)
        return {"ok": True, "room": self.chat.mod.room}

    def do_rotate_token(self, body):
        self.site.rotate_token()
        self.chat.mod.note("token", "the pairing token was replaced")
        return {"ok": True, "pairing_url": self.site.pairing_urls()[0]}

    def do_clear(self, body):
        if body.get("confirm") != "clear":
            raise HttpError(400, "Send {\"confirm\": \"clear\"} to clear the whole history.",
                            code="bad_request")
        self.chat.clear_history()
        self.chat.mod.note("clear", "the history was cleared")
        return {"ok": True}

    @staticmethod
    def _text(body, name, limit, default=""):
        value = body.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or len(value) > limit or \
                any(unicodedata.category(ch) == "Cc" for ch in value):
            raise HttpError(400, "'%s' must be text of at most %d characters, on one line."
                            % (name, limit), code="bad_request")
        return value.strip()

    # -- exports ------------------------------------------------------------------

    def export_json(self):
        messages = ",".join(_json_encoder.encode(operator_view(json.loads(body)))
                            for body in self.chat.store.all_messages())
        head = dump_json({"room": self.chat.mod.room, "exported": utc_timestamp(),
                          "server": "chatserver/" + __version__})
        return head[:-1] + b',"messages":[' + messages.encode("utf-8") + b"]}"

    def export_html(self):
        room = self.chat.mod.room
        title = room["name"] or "Chat history"
        rows = []
        for body in self.chat.store.all_messages():
            msg = operator_view(json.loads(body))
            text = html.escape(msg.get("text") or "")
            if msg.get("deleted"):
                text = "<em>message removed</em>"
            elif msg.get("private"):
                text = "<em>private message</em>"
            elif isinstance(msg.get("file"), dict):
                f = msg["file"]
                text += ' <a href="files/%s">%s</a> (%s bytes)' % (
                    html.escape(urllib.parse.quote(export_file_name(f))), html.escape(
                        str(f.get("name", "file"))), html.escape(str(f.get("size", ""))))
            rows.append('<tr><td>%s</td><td>%s%s</td><td>%s%s</td></tr>' % (
                html.escape(str(msg.get("ts", ""))[:19].replace("T", " ")),
                html.escape(str(msg.get("from", ""))),
                " &rarr; " + html.escape(str(msg["to"])) if msg.get("to") else "", text,
                " <small>(edited)</small>" if msg.get("edited") else ""))
        return fill_markers(_EXPORT_PAGE, {
            "title": html.escape(title), "topic": html.escape(room["topic"]),
            "exported": html.escape(utc_timestamp()[:19].replace("T", " ")),
            "rows": "\n".join(rows)}).encode("utf-8")

    def export_parts(self):
        """What the zip export holds, read in the loop (the database is the loop's): the two
        pages and (path, name in the zip) of every stored file."""
        files = []
        for body in self.chat.store.all_messages():
            f = operator_view(json.loads(body)).get("file")
            if isinstance(f, dict) and isinstance(f.get("id"), str):
                files.append((self.chat.files.file_path(f["id"]), "files/" + export_file_name(f)))
        return self.export_json(), self.export_html(), files


def operator_view(msg):
    """What the operator sees of a stored message: all of a public one; of a direct message
    only who wrote to whom, and when (its text and file are its two parties' alone)."""
    if msg.get("to") is None:
        return msg
    # an allowlist: a quote, mentions or reactions of a direct message are its parties' too
    return {k: v for k, v in msg.items() if k in _OPERATOR_SEES_OF_PRIVATE} | {"private": True}


_OPERATOR_SEES_OF_PRIVATE = ("type", "id", "ts", "from", "uid", "cid", "to", "deleted")


def write_export_zip(path, parts):
    """Write the zip export at `path`, in a thread of its own (gigabytes of files must not
    stall the loop). Files are stored, not compressed: photos and videos do not shrink. A
    file removed meanwhile is left out."""
    history_json, history_html, files = parts
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("history.json", history_json)
        zf.writestr("history.html", history_html)
        for file_path, name in files:
            try:
                zf.write(file_path, name)
            except OSError:
                pass


def export_file_name(f):
    return "%s-%s" % (f.get("id"), sanitize_file_name(str(f.get("name") or "file")))


def _storage_reason(exc):
    text = str(exc)
    return text if len(text) < 80 else text[:77] + "..."

###############################################################################
# Connections #################################################################
###############################################################################
#
# A Connection owns one socket: its output queue and the writes that drain it, its budgets,
# and one close request with a named reason. Protocol handlers (FramedSession, and
# HttpConnection with the WebSocket session it may carry) talk to their connection:
#   push(bytes) / send_json(raw)    queue output (the output caps are checked on append)
#   close_when_done(reason[, hold]) answer, then close (hold: keep the answer back a while)
#   abort(reason)                   close after this dispatch pass, dropping queued output
#   may_dispatch() / pause_input()  the output budget: a client over it is not read further
#   mark_joined()                   the client said hello: its budgets grow
#   loop.call_later(delay, fn)      timers
# and never touch the Server's fields (tests/test_architecture.py checks this).

# Socket errors are classified here, once: a retry, or the peer is gone (PeerGone).
_RETRY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})
_FD_EXHAUSTED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def is_retry(exc):
    """The call would block or was interrupted: try again at the next readiness event."""
    return isinstance(exc, (BlockingIOError, InterruptedError)) or exc.errno in _RETRY_ERRNOS


def is_fd_exhaustion(exc):
    """Out of file descriptors (or kernel buffers): the process, not the peer, is the problem."""
    return isinstance(exc, OSError) and exc.errno in _FD_EXHAUSTED_ERRNOS


class PeerGone(Exception):
    """The socket cannot be used any more: `reason` is "quit" (orderly EOF) or "error"."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# A connection's states, in the order it goes through them.
OPEN = 0          # reading and dispatching
CLOSING = 1       # a close was requested: queued output (and a goodbye) goes out, input is dropped
LINGERING = 2     # our side is shut (FIN sent); input is read and dropped for LINGER_SECONDS
CLOSED = 3

# Why a connection is not read (bits of Connection.paused).
PAUSED_BY_DISK = 1      # its upload chunks wait for the disk thread (DiskWriter.congested)
PAUSED_BY_OUTPUT = 2    # its own output is queued beyond its budget: TCP slows the sender
PAUSED_BY_ROOM = 4      # a bulk sender while the room is backlogged (Server.room_backlogged)


class FileSegment:
    """`count` bytes of a download's file at `offset`, queued for output (sendfile if possible)."""

    __slots__ = ("download", "offset", "count")

    def __init__(self, download, offset, count):
        self.download = download
        self.offset = offset
        self.count = count

    def __len__(self):
        return self.count


class Download:
    """A file being sent from `offset` up to `end`: framed (file_chunk frames) or raw (HTTP).

    The file closes once the download is over (finished or cancelled) and none of its
    segments is queued any more: `queued` counts them, so cancelling costs O(1) whatever the
    length of the output queue."""

    __slots__ = ("meta", "fh", "offset", "end", "framed", "queued", "over", "fds")

    def __init__(self, meta, fh, offset, end=None, framed=True, fds=None):
        self.meta = meta
        self.fh = fh
        self.offset = offset
        self.end = meta["size"] if end is None else end
        self.framed = framed
        self.queued = 0
        self.over = False
        self.fds = fds

    def stop(self):
        self.over = True
        self.close_if_done()

    def close_if_done(self):
        if self.over and not self.queued and self.fh is not None:
            self.fh.close()
            self.fh = None
            if self.fds is not None:
                self.fds.release()


class Connection:
    """One client socket: output queues and writes, budgets, close request, liveness.

    Output has two priorities: `out` (everything in order: chat, answers, HTTP) and `bulk`
    (the file_chunk frames of framed downloads and their download_end). The writer sends
    `out` first and bulk only when `out` is empty, switching at bulk frame boundaries only."""

    __slots__ = ("loop", "sock", "fd", "peer", "address", "proto", "handler", "out",
                 "out_bytes", "out_pending", "out_budget", "read_size", "nick", "key",
                 "session", "uid", "bucket", "connected", "last_rx", "last_tx", "soft_since", "state",
                 "close_reason", "hold_until", "goodbye_sent", "paused", "events",
                 "registered_write", "downloads", "http_download", "hello_due",
                 "device_hash", "sent", "bulk", "bulk_bytes", "bulk_open", "backlogged",
                 "frames_left", "heavy", "deferred", "fans_out", "got")

    def __init__(self, loop, sock, peer, bucket):
        self.loop = loop                  # the event loop (call_later, config, fds)
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.address = str(peer[0]) if peer else "?"
        self.proto = "sniff"              # -> "framed" | "http" | "ws" | "reject"
        self.handler = None               # FramedSession | HttpConnection, once sniffed
        self.out = collections.deque()
        self.out_bytes = 0                # bytes in `out` and `bulk`
        self.bulk = collections.deque()   # download chunks: written when `out` is empty
        self.bulk_bytes = 0
        self.bulk_open = False            # a bulk frame is partly written: it goes on first
        self.backlogged = False           # joined, with over PACE_BACKLOG of `out` queued
        self.frames_left = LIGHT_TURN_FRAMES   # frames it may still dispatch this turn
        self.heavy = False                # a bulk sender: served after the interactive lane
        self.deferred = False             # frames wait in its decoder for its next turn
        self.fans_out = False             # its last turn put messages to the room
        self.got = 0                      # bytes read in its last turn
        self.out_pending = 0              # bytes the Outbox holds for this turn's delivery
        self.out_budget = PREJOIN_OUT_BUDGET
        self.read_size = PREJOIN_READ
        self.nick = None
        self.key = None
        self.session = None
        self.uid = None                   # the identity it joined as
        self.bucket = bucket
        self.connected = self.last_rx = self.last_tx = time.monotonic()
        self.soft_since = None
        self.state = OPEN
        self.close_reason = None
        self.hold_until = 0.0
        self.goodbye_sent = False
        self.paused = 0
        self.events = selectors.EVENT_READ   # what the selector watches for it (0: nothing)
        self.registered_write = False
        self.downloads = {}               # file id (or "http") -> Download
        self.http_download = None         # called when a raw HTTP download has been queued
        self.hello_due = None             # when the client must have joined (hello_deadline)
        self.device_hash = None           # the hash of its device key, once joined
        self.sent = 0                     # messages it posted (the operator page)

    @property
    def closed(self):
        return self.state == CLOSED

    def label(self):
        who = "%s:%s" % (self.peer[0], self.peer[1]) if self.peer else "?"
        return "%s (%s)" % (self.nick, who) if self.nick else who

    # -- the API of protocol handlers -------------------------------------------

    def push(self, data):
        """Queue bytes (or a FileSegment). The output caps are checked here, on append; a
        connection over the hard cap is closed after the dispatch pass (abort)."""
        if not data or self.state >= LINGERING or self.goodbye_sent:
            return
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes - self.bulk_bytes > PACE_BACKLOG and not self.backlogged and \
                self.nick is not None:
            self.backlogged = True
            self.loop.backlog_changed(self)
        self._queued()

    def push_bulk(self, data):
        """Queue bytes (or a FileSegment) of a bulk frame: after everything in `out`."""
        if not data or self.state >= LINGERING or self.goodbye_sent:
            return
        self.bulk.append(data)
        self.bulk_bytes += len(data)
        self.out_bytes += len(data)
        self._queued()

    def _queued(self):
        self.loop.wants_flush(self)
        cfg = self.loop.config
        if self.out_bytes > cfg.out_soft and self.soft_since is None:
            self.soft_since = time.monotonic()
            self.loop.call_later(cfg.out_soft_seconds, self._check_soft)
        if self.out_bytes > cfg.out_hard:
            self.abort("slow")

    def send_json(self, raw):
        """One JSON message in this connection's transport (frame, WebSocket text, HTTP 201)."""
        self.push(self.handler.frame(raw) if self.handler is not None else frame_json(raw))

    def close_when_done(self, reason, hold=0.0):
        """The one way to ask for a close: input stops being dispatched now, queued output
        (and the transport's goodbye, e.g. a WebSocket close frame) goes out, then the
        connection lingers and closes. `hold` keeps all output back that many seconds."""
        if self.state >= LINGERING:
            return
        if self.close_reason is None:
            self.close_reason = reason
        self.state = CLOSING
        self.stop_downloads()
        if hold > 0:
            self.hold_until = max(self.hold_until, time.monotonic() + hold)
            self.loop.call_later(hold, lambda now: self.loop.wants_flush(self))
        self.loop.wants_flush(self)

    def abort(self, reason):
        """Close right after the dispatch pass, dropping what is queued (a slow consumer)."""
        if self.state == CLOSED:
            return
        self.close_reason = reason
        self.loop.abort_after_pass(self)

    def may_dispatch(self):
        """Whether another frame of input may be acted on now: the connection is open, it
        has frames left in this turn's share (handlers count them down), and its own output
        (queued, or waiting in this turn's Outbox) is within its budget."""
        return self.state == OPEN and self.frames_left > 0 and \
            self.out_bytes + self.out_pending <= self.out_budget

    def stop_dispatching(self):
        """A handler stopped with input left: over its output budget, reading pauses until
        the queue drains; out of frames for this turn, the rest waits for its next turn."""
        if self.state != OPEN:
            return
        if self.out_bytes + self.out_pending > self.out_budget:
            self.pause_input()
        elif not self.deferred:
            self.deferred = self.heavy = True
            self.loop.defer(self)

    def pause_input(self):
        """Stop reading: called by a handler that stopped dispatching at the output budget.
        Reading resumes, and buffered input is dispatched, once the queue has drained."""
        if self.state == OPEN and not self.paused & PAUSED_BY_OUTPUT:
            self.paused |= PAUSED_BY_OUTPUT
            self.update_interest()
            self.loop.wants_flush(self)      # the flush pass resumes it once drained

    def mark_joined(self):
        """The client said hello: the budgets of a joined client apply from now on."""
        self.out_budget = OUT_READ_LIMIT
        self.read_size = RECV_SIZE
        if self.handler is not None:
            self.handler.joined()
        self.loop.joined(self)

    def frame_received(self, now=None):
        """A complete frame arrived: that is life (a stray byte is not)."""
        self.last_rx = time.monotonic() if now is None else now

    # -- downloads ----------------------------------------------------------------

    def start_download(self, path, meta, offset, end=None, framed=True):
        """Open a stored file and stream it from `offset`: `download_start` and file_chunk
        frames (framed/WebSocket), or the raw bytes of an HTTP response body."""
        key = meta["id"] if framed else "http"
        self.cancel_download(key)
        if len(self.downloads) >= MAX_DOWNLOADS_PER_CONN:
            raise ChatError("too_many_downloads", "At most %d downloads at a time on one "
                            "connection." % MAX_DOWNLOADS_PER_CONN, meta["id"])
        fds = self.loop.fds
        if not fds.take():
            raise ChatError("server_busy", "The server has too many open files right now; "
                            "try again in a moment.", meta["id"])
        try:
            fh = open(path, "rb")
        except OSError:
            fds.release()
            raise
        self.downloads[key] = Download(meta, fh, offset, end, framed, fds)
        if framed:
            self.send_json(dump_json({
                "type": "download_start", "file": meta["id"], "name": meta["name"],
                "size": meta["size"], "sha256": meta["sha256"], "mime": meta["mime"],
                "offset": offset}))
        self.loop.wants_flush(self)

    def cancel_download(self, file_id):
        """Stop reading the file. Chunks already queued still go out; the file closes after
        the last of them."""
        dl = self.downloads.pop(file_id, None)
        if dl is not None:
            dl.stop()

    def stop_downloads(self):
        for key in list(self.downloads):
            self.cancel_download(key)

    def _pump_downloads(self):
        """Read the next chunks from disk only while this connection's queue is short, so chat
        messages queued meanwhile go out between chunks."""
        while self.downloads and self.out_bytes < DOWNLOAD_LOW_WATER:
            key, dl = next(iter(self.downloads.items()))
            # framed: chunks are bulk, chat goes ahead of them; HTTP: one response at a time,
            # in order, so its body stays in `out` behind its head
            push = self.push_bulk if dl.framed else self.push
            count = min(DOWNLOAD_CHUNK, dl.end - dl.offset)
            if count > 0:
                if dl.framed:
                    head = dump_json({"type": "file_chunk", "file": key, "offset": dl.offset})
                    push(FRAME_PREFIX.pack(len(head), count) + head)
                dl.queued += 1
                push(FileSegment(dl, dl.offset, count))
                dl.offset += count
            if dl.offset >= dl.end:
                del self.downloads[key]
                dl.stop()
                if dl.framed:
                    push(frame_json(dump_json({"type": "download_end", "file": key,
                                               "size": dl.meta["size"]})))
                elif self.http_download is not None:
                    self.http_download()

    # -- reading (called by the loop) ---------------------------------------------

    def read(self):
        """Read once and hand the bytes to the handler (or to `sniff` for the first ones).
        Returns False when the socket had nothing after all; raises PeerGone."""
        handler = self.handler
        view = handler.receive_buffer() if handler is not None and self.state == OPEN else None
        try:
            got = self.sock.recv(self.read_size) if view is None else self.sock.recv_into(view)
        except OSError as exc:
            if is_retry(exc):
                return False
            raise PeerGone("error") from None
        finally:
            if view is not None:
                view.release()
        if not got:
            raise PeerGone("quit")
        self.got = got if view is not None else len(got)
        if self.state != OPEN:
            return True           # closing or lingering: the answer is out, input is dropped
        if view is not None:
            handler.received(got)
        elif handler is None:
            self.loop.sniff(self, got)
        else:
            handler.feed(got)
        return True

    def update_interest(self):
        """Tell the selector what to watch: reads unless paused, writes while output waits."""
        if self.state == CLOSED:
            return
        events = (0 if self.paused else selectors.EVENT_READ) | \
            (selectors.EVENT_WRITE if self.registered_write else 0)
        if events != self.events:
            self.loop.watch(self, events)
            self.events = events

    # -- writing (called by the loop) ---------------------------------------------

    def flush(self, now):
        """Write what is queued, within this turn's WRITE_BUDGET. Raises PeerGone."""
        if self.state == CLOSED or self.state == LINGERING:
            return
        if self.hold_until:
            if now < self.hold_until:
                return
            self.hold_until = 0.0
        if self.state == CLOSING and not self.goodbye_sent:
            goodbye = self.handler.goodbye(self.close_reason) if self.handler else b""
            self.push(goodbye)
            self.goodbye_sent = True
        if not self._send_single(now):
            self._write_within_budget(now)
        if self.state == CLOSED:
            return
        if self.out_bytes <= self.loop.config.out_soft:
            self.soft_since = None
        if self.backlogged and self.out_bytes - self.bulk_bytes <= PACE_BACKLOG // 2:
            self.backlogged = False
            self.loop.backlog_changed(self)
        if self.paused & PAUSED_BY_OUTPUT and self.out_bytes <= self.out_budget // 4:
            self.paused &= ~PAUSED_BY_OUTPUT
            self.update_interest()
            self.loop.resume_soon(self)
        if self.state == CLOSING and not self.out and not self.bulk:
            self.linger()

    def _send_single(self, now):
        """The common case after a broadcast: one buffer queued, nothing else going on. One
        send() and done; anything else (or a partial send) takes the general path."""
        out = self.out
        if len(out) != 1 or self.registered_write or self.downloads or self.bulk or \
                self.state != OPEN:
            return False
        data = out[0]
        if type(data) is not bytes:
            return False
        try:
            sent = self.sock.send(data)
        except OSError as exc:
            if is_retry(exc):
                return False
            raise PeerGone("error") from None
        self.last_tx = now
        if sent != len(data):
            out[0] = memoryview(data)[sent:]
            self.out_bytes -= sent
            return False
        out.clear()
        self.out_bytes = 0
        return True

    def _write_within_budget(self, now):
        budget = WRITE_BUDGET
        loop = self.loop
        wrote_file = False
        while budget > 0:
            if self.downloads and self.out_bytes < DOWNLOAD_LOW_WATER:
                self._pump_downloads()
            if self.out and not self.bulk_open:
                file_bytes = type(self.out[0]) is FileSegment      # an HTTP download
                if file_bytes and loop.file_bytes_left <= 0:
                    loop.file_bytes_cut(self, wrote_file)
                    break
                sent = self._write_some()
            elif self.bulk:
                if loop.file_bytes_left <= 0:
                    loop.file_bytes_cut(self, wrote_file)
                    break
                file_bytes = True
                sent = self._write_bulk()
            else:
                break
            if sent == 0:
                break
            if file_bytes:
                loop.file_bytes_left -= sent
                wrote_file = True
            self.last_tx = now
            budget -= sent
        want_write = bool(self.out) or bool(self.bulk) or bool(self.downloads)
        if want_write and budget <= 0:
            loop.wants_flush(self)          # fairness: more next turn, after the others
        if want_write != self.registered_write:
            self.registered_write = want_write
            self.update_interest()

    def _write_some(self):
        """Write the head of `out`; returns the bytes sent (0: the socket is full)."""
        try:
            if isinstance(self.out[0], FileSegment):
                sent = self._write_segment(self.out[0], self.out)
            else:
                sent = self._write_buffers()
        except OSError as exc:
            if is_retry(exc):
                return 0
            raise PeerGone("error") from None
        self.out_bytes -= sent
        return sent

    def _write_bulk(self):
        """Write the head item of `bulk`; a frame that is started is finished before `out`
        goes again (bulk_open), so chat waits at most for the rest of one chunk."""
        bulk = self.bulk
        item = bulk[0]
        try:
            if isinstance(item, FileSegment):
                sent = self._write_segment(item, bulk)
                finished = item.count == 0
            else:
                sent = self.sock.send(item)
                finished = sent == len(item)
                if finished:
                    bulk.popleft()
                else:
                    bulk[0] = memoryview(item)[sent:]
        except OSError as exc:
            if is_retry(exc):
                return 0
            raise PeerGone("error") from None
        self.out_bytes -= sent
        self.bulk_bytes -= sent
        # the frame goes on: the item is not finished, or it was a chunk's head (its file
        # part is next; a FileSegment only ever follows its head)
        self.bulk_open = not finished or (bool(bulk) and isinstance(bulk[0], FileSegment))
        return sent

    def _write_buffers(self):
        out = self.out
        bufs = []
        for item in out:
            if isinstance(item, FileSegment) or len(bufs) >= MAX_IOV:
                break
            bufs.append(item)
        if len(bufs) == 1 or not hasattr(self.sock, "sendmsg"):
            sent = self.sock.send(bufs[0] if len(bufs) == 1 else b"".join(bufs))
        else:
            sent = self.sock.sendmsg(bufs)
        remaining = sent
        while remaining:
            head = out[0]
            if len(head) <= remaining:
                remaining -= len(head)
                out.popleft()
            else:
                out[0] = memoryview(head)[remaining:]
                remaining = 0
        return sent

    def _write_segment(self, seg, queue):
        dl = seg.download
        if hasattr(os, "sendfile"):
            sent = os.sendfile(self.fd, dl.fh.fileno(), seg.offset, seg.count)
        else:
            # Windows has no os.sendfile: read the part at its offset and send that
            dl.fh.seek(seg.offset)
            sent = self.sock.send(dl.fh.read(min(seg.count, DOWNLOAD_CHUNK)))
        if sent == 0 and seg.count:
            raise PeerGone("error")
        seg.offset += sent
        seg.count -= sent
        if seg.count == 0:
            queue.popleft()
            dl.queued -= 1
            dl.close_if_done()
        return sent

    def _check_soft(self, now):
        if self.state != CLOSED and self.soft_since is not None and \
                now - self.soft_since >= self.loop.config.out_soft_seconds - 0.01:
            self.abort("slow")

    # -- closing ------------------------------------------------------------------

    def linger(self):
        """Close gracefully: our side of the stream ends (FIN) and the socket is kept a moment,
        reading and dropping input. Closing with unread input would make the kernel send a
        reset, which can destroy the answer just sent (RFC 9112 9.6)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.loop.drop(self, self.close_reason or "error")
            return
        self.state = LINGERING
        self.paused = 0
        self.registered_write = False
        self.update_interest()
        self.loop.lingering(self)

    def release(self):
        """The socket is closed: give back every file it held."""
        self.state = CLOSED
        self.stop_downloads()
        for item in itertools.chain(self.out, self.bulk):
            if isinstance(item, FileSegment):
                item.download.queued -= 1
                item.download.close_if_done()
        self.out.clear()
        self.bulk.clear()
        self.out_bytes = self.bulk_bytes = 0
        if self.backlogged:
            self.backlogged = False
            self.loop.backlog_changed(self)
        if self.handler is not None:
            self.handler.closed()


class FramedSession:
    """The framed protocol on one connection: frames in, to the Chat; JSON frames out."""

    def __init__(self, conn, chat):
        self.conn = conn
        self.chat = chat
        # before hello: a small header and no payload, so nothing large is ever allocated
        self.decoder = FrameDecoder(max_header=PREJOIN_MAX_HEADER, max_payload=0)

    def joined(self):
        self.decoder.max_header = MAX_HEADER_BYTES
        self.decoder.max_payload = MAX_PAYLOAD_BYTES

    def receive_buffer(self):
        return self.decoder.receive_buffer()

    def received(self, n):
        self.decoder.received(n)
        self.conn.frame_received()       # payload progress of a large chunk is life too
        self.dispatch()

    def feed(self, data):
        self.decoder.append(data)
        self.dispatch()

    def resume(self):
        """Reading resumed after a pause: act on what is already buffered."""
        self.dispatch()

    def dispatch(self):
        """Act on complete frames while the connection may: a fatal error, an output queue
        over budget or the end of its share of the turn stops it; the rest waits in the
        decoder (Connection.stop_dispatching)."""
        conn, chat = self.conn, self.chat
        frames = self.decoder.frames()
        handled = False
        try:
            while conn.may_dispatch():
                frame = next(frames, None)
                if frame is None:
                    return
                handled = True
                chat.handle(conn, frame[0], frame[1])
                conn.frames_left -= 1
        except FrameError as err:
            chat.reject(conn, err)
            return
        finally:
            frames.close()
            if handled and conn.nick is not None:
                conn.frame_received()     # complete frames are life (once per read)
        conn.stop_dispatching()

    def frame(self, raw_json):
        return frame_json(raw_json)

    def goodbye(self, reason):
        return b""

    def closed(self):
        pass

###############################################################################
# HTTP routes and WebSocket sessions ##########################################
###############################################################################

SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]
# The pages' own inline scripts run by their hashes (page_csp): an injected <script> never
# would; their connections go to this server only ('self' covers its ws:// as well).
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src %s; connect-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
_page_csps = {}


def page_csp(page):
    """PAGE_CSP for one page: its inline scripts allowed by their SHA-256, nothing else."""
    csp = _page_csps.get(id(page))
    if csp is None:
        hashes = ["'sha256-%s'" % base64.b64encode(hashlib.sha256(script).digest()).decode()
                  for script in _INLINE_SCRIPT.findall(page)]
        csp = _page_csps[id(page)] = PAGE_CSP % (" ".join(hashes) or "'none'")
    return csp


# Text responses are sent gzipped to a client that accepts it (the pages shrink to about a
# third); big static pages are compressed once.
GZIP_MIN_BYTES = 1024
GZIP_MAX_BYTES = 1 << 20        # larger answers (a big export) go as they are: compressing
#                                 them would hold the loop for tens of milliseconds
GZIP_TYPES = ("text/html", "text/css", "application/json", "application/javascript",
              "text/javascript", "image/svg+xml", "text/plain")
_gzipped = {}


def accepts_gzip(value):
    """Whether an Accept-Encoding header value allows gzip (RFC 9110 12.5.3)."""
    if not value:
        return False
    star = None
    for item in value.lower().split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(number)
                except ValueError:
                    q = 0.0
        if name.strip() in ("gzip", "x-gzip"):
            return q > 0
        if name.strip() == "*":
            star = q > 0
    return bool(star)


def gzip_body(body, cache=False):
    if not cache:
        return gzip.compress(body, 6, mtime=0)
    packed = _gzipped.get(id(body))
    if packed is None or packed[0] is not body:
        packed = _gzipped[id(body)] = (body, gzip.compress(body, 9, mtime=0))
    return packed[1]
# Uploaded files are served as attachments in a sandbox: a shared .html or .svg never runs
# on the chat's origin. Raster images may be shown inline (thumbnails): an allowlist, so a
# type that can carry script (SVG, in any spelling) is never among them.
FILE_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


# A built Flutter web app: CanvasKit is WebAssembly (compiling it needs 'wasm-unsafe-eval');
# no other script source, no other origin to talk to.
WEB_APP_CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
               "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
WEB_APP_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".json": "application/json",
    ".css": "text/css; charset=utf-8", ".wasm": "application/wasm", ".png": "image/png",
    ".jpg": "image/jpeg", ".svg": "image/svg+xml", ".ico": "image/x-icon",
    ".ttf": "font/ttf", ".otf": "font/otf", ".woff2": "font/woff2", ".map": "application/json",
    ".txt": "text/plain; charset=utf-8", ".bin": "application/octet-stream",
    ".frag": "application/octet-stream",
}


def web_app_file(root, relative):
    """The file under `root` that /app/<relative> names, or None. No traversal: no `..`, no
    absolute part, no backslash or NUL, and symbolic links may not lead out of the folder."""
    parts = [p for p in relative.split("/") if p]
    if any(p in (".", "..") or "\\" in p or "\0" in p or ":" in p for p in parts):
        return None
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *parts)) if parts else base
    if os.path.commonpath([base, path]) != base:
        return None
    if os.path.isdir(path):
        path = os.path.join(path, "index.html")
    elif not os.path.exists(path) and parts and "." not in parts[-1]:
        path = os.path.join(base, "index.html")      # a route of the app, not a file
    return path if os.path.isfile(path) else None


def web_app_type(path):
    return WEB_APP_TYPES.get(os.path.splitext(path)[1].lower(), DEFAULT_MIME)


SESSION_COOKIE = "lanchat_session"
SESSION_BODY_MAX = 256


def request_session(req, cookie=SESSION_COOKIE):
    """The secret a request presents: `Authorization: Bearer <s>`, else the cookie."""
    auth = req.header("authorization") or ""
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    for part in (req.header("cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie:
            return value.strip()
    return ""


OPERATOR_COOKIE = "lanchat_operator"
EXPORT_TYPES = {"json": "application/json", "html": "text/html; charset=utf-8",
                "zip": "application/zip"}


def chat_error_as_http(err):
    return HttpError(error_kind(err.code).http_status, err.message, code=err.code)


def content_disposition(name, inline=False):
    """RFC 6266: an ASCII fallback name plus the UTF-8 name (RFC 8187)."""
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    ascii_name = ascii_name.replace('"', "_").replace("\\", "_")
    return '%s; filename="%s"; filename*=UTF-8\'\'%s' % (
        "inline" if inline else "attachment", ascii_name, urllib.parse.quote(name, safe=""))


class HttpConnection:
    """One HTTP/1.1 connection: routes requests; after `GET /ws` it carries a WebSocket whose
    text messages go to the same Chat as framed ones.

    It talks to its Connection (push, close_when_done, ...), to the Chat, and to `site`, the
    few things the server shows about itself (health(), pairing_urls())."""

    def __init__(self, conn, chat, site):
        self.conn = conn
        self.chat = chat
        self.site = site
        self.parser = HttpParser()
        self.ws = None
        self.ws_events = None       # the WebSocket events being dispatched (a generator)
        self.request = None
        self.upload = None          # (session connection, Upload) of a POST /files
        self.session_body = None    # the body of a POST /session being read
        self.operator_body = None   # the body of a POST /admin/api/<action> being read
        self.busy = False           # a file is being sent: later requests wait their turn
        self.held = bytearray()     # bytes that arrived while busy
        self.pending = []           # events parsed but not handled yet (busy, or paced)
        self.head_since = None      # when the current request head started (slowloris)
        self.keep_alive_after = True

    @property
    def idle(self):
        """Between requests, nothing in flight: the connection can be closed to make room."""
        return self.ws is None and self.request is None and not self.busy and \
            not self.pending and not self.parser.buffered and self.session_body is None \
            and self.operator_body is None

    # -- input ----------------------------------------------------------------

    def receive_buffer(self):
        return None

    def feed(self, data):
        if self.ws is not None:
            self.feed_ws(data)
            return
        # bytes of a request are life for the idle check; a head that never ends is cut
        # off by its own deadline (start_head_timer), a slow body by the idle check
        self.conn.frame_received()
        if self.busy:
            self.held += data
            if len(self.held) > HTTP_MAX_HEADER_BYTES + HTTP_MAX_REQUEST_LINE:
                self.fail(HttpError(400, "Too much data pipelined behind a download."))
            return
        try:
            events = self.parser.feed(data)
        except HttpError as err:
            self.dispatch(self.pending + err.events)
            self.fail(err)
            return
        if self.pending:              # paced: answer in order, after what is waiting
            self.pending += events
            return
        self.dispatch(events)
        while self.ws is None and self.parser.paused and not self.busy and \
                self.conn.state == OPEN and not self.pending:
            # an upgrade we do not do (e.g. curl's "Upgrade: h2c"): it was answered in
            # HTTP/1.1, so what follows is HTTP again
            try:
                self.dispatch(self.parser.resume())
            except HttpError as err:
                self.dispatch(err.events)
                self.fail(err)
                return
        # bytes that produced no event (buffered, or CRLFs skipped before a request line,
        # RFC 9112 2.2) start the next request head: it must be whole within http_timeout
        if self.ws is None and self.head_since is None and self.request is None and \
                (self.parser.buffered or not events):
            self.start_head_timer()

    def dispatch(self, events):
        conn = self.conn
        for index, event in enumerate(events):
            if conn.state != OPEN:
                return
            if self.busy or not conn.may_dispatch():
                # RFC 9112 9.3.2: a server "MUST send the corresponding responses in the
                # same order that the requests were received"; a client over its output
                # budget waits, unread, until it has read its answers
                self.pending = events[index:]
                if not self.busy:
                    conn.pause_input()
                return
            try:
                if isinstance(event, RequestHead):
                    self.head_since = None
                    conn.frame_received()
                    self.request = event.request
                    self.on_head(event.request)
                elif isinstance(event, BodyChunk):
                    conn.frame_received()
                    self.on_body(event.data)
                elif isinstance(event, RequestEnd):
                    self.on_end(self.request)
                    self.request = None
            except HttpError as err:
                self.fail(err)
                return
            except ChatError as err:
                self.fail(chat_error_as_http(err))
                return
            if self.ws is not None:
                rest = self.parser.take_buffer()
                if rest:
                    self.feed_ws(rest)
                return

    def resume(self):
        """Reading resumed after a pause: answer what was parsed meanwhile."""
        if self.ws is not None:
            self.dispatch_ws()
            return
        pending, self.pending = self.pending, []
        self.dispatch(pending)

    def start_head_timer(self):
        """A request head must arrive whole within http_timeout (slowloris)."""
        stamp = self.head_since = time.monotonic()

        def check(now):
            if self.head_since == stamp and self.conn.state == OPEN and self.ws is None:
                log.info("%s: request head too slow, closed", self.conn.label())
                self.fail(HttpError(408, "The request took too long to arrive."))
        self.conn.loop.call_later(self.conn.loop.config.http_timeout, check)

    def joined(self):
        """The WebSocket's client said hello: full-size messages from now on."""
        if self.ws is not None:
            self.ws.max_frame = WS_MAX_FRAME
            self.ws.max_message = WS_MAX_MESSAGE

    # -- output ---------------------------------------------------------------

    def frame(self, raw_json):
        """A JSON message on this transport: a WebSocket text frame; on plain HTTP the only
        one is the file `msg` that answers POST /files (201)."""
        if self.ws is not None:
            return ws_encode_frame(WS_OP_TEXT, raw_json)
        return http_simple_response(201, raw_json, "application/json", SECURITY_HEADERS,
                                    keep_alive=self.conn.state == OPEN)

    def goodbye(self, reason):
        """The close frame that goes with a fatal chat error on a WebSocket (b"" otherwise)."""
        if self.ws is None or self.ws.close_sent:
            return b""
        return self.ws.close(error_kind(reason).ws_close, reason.replace("_", " "))

    def respond(self, status, body, content_type, headers=(), keep_alive=None, static=False):
        """A whole response; gzipped when the client accepts it and the type is text
        (`static`: the body is a constant of the program, compressed once)."""
        if keep_alive is None:
            keep_alive = self.request is None or self.request.keep_alive
        head_only = self.request is not None and self.request.method == "HEAD"
        if content_type.split(";")[0] in GZIP_TYPES and \
                GZIP_MIN_BYTES <= len(body) <= (GZIP_MAX_BYTES if not static else len(body)):
            headers = list(headers) + [("Vary", "Accept-Encoding")]
            if self.request is not None and accepts_gzip(self.request.header("accept-encoding")):
                body = gzip_body(body, cache=static)
                headers.append(("Content-Encoding", "gzip"))
        data = http_simple_response(status, body, content_type,
                                    SECURITY_HEADERS + list(headers), keep_alive)
        if head_only:
            data = data[:len(data) - len(body)]
        self.conn.push(data)
        if not keep_alive:
            self.conn.close_when_done("quit")

    def respond_json(self, status, obj, keep_alive=None):
        self.respond(status, dump_json(obj), "application/json",
                     [("Cache-Control", "no-store")], keep_alive)

    def fail(self, err):
        """Answer with the error and close: after a refused request the stream can't be
        trusted (a body may follow that we did not read)."""
        if self.upload is not None:
            self.abandon_upload()
        HTTP_LOG.info("http_error", "%s: HTTP %d %s", self.conn.label(), err.status, err.reason)
        self.conn.push(http_error_response(err, keep_alive=False))
        self.conn.close_when_done("quit")

    # -- routes ---------------------------------------------------------------

    def on_head(self, req):
        path, method = req.path, req.method
        host = req.header("host")
        if not self.site.host_allowed(host):
            # DNS rebinding: a page on a foreign name that resolves to this server must not
            # reach the chat (RFC 9110 15.5.20, 421: "not able to produce a response")
            raise HttpError(421, "This server does not answer to the name %r; open it by its "
                            "address (or start it with --allow-host)." % printable(host, 80),
                            code="misdirected")
        if path == "/admin" or path.startswith("/admin/"):
            self.check_operator(req, need_key=path != "/admin")
        if path == "/ws":
            self.open_websocket(req)
        elif path.startswith("/admin/api/") and method == "POST":
            self.start_operator_request(req)
        elif path == "/files" or path == "/files/":
            if method not in ("POST", "PUT"):
                raise HttpError(405, "Upload with POST.", [("Allow", "POST, PUT")])
            self.chat.run(self.upload_failed, self.start_upload, req)
        elif path == "/session":
            if method != "POST":
                raise HttpError(405, "Post the session to get its cookie.", [("Allow", "POST")])
            if req.chunked or (req.content_length or 0) > SESSION_BODY_MAX:
                raise HttpError(413, "A session is at most %d bytes." % SESSION_BODY_MAX)
            self.session_body = bytearray()
        elif method not in ("GET", "HEAD"):
            raise HttpError(405, "Only GET and HEAD are served here.", [("Allow", "GET, HEAD")])
        elif req.content_length:
            raise HttpError(400, "A GET request carries no body.")

    def on_body(self, data):
        if self.session_body is not None:
            self.session_body += data
            return
        if self.operator_body is not None:
            self.operator_body += data
            if len(self.operator_body) > OPERATOR_BODY_MAX:
                raise HttpError(413, "An operator request is at most %d bytes."
                                % OPERATOR_BODY_MAX)
            return
        if self.upload is None:
            raise HttpError(400, "Unexpected request body.")
        self.chat.run(self.upload_failed, self.receive_body, data)

    def receive_body(self, data):
        session, up = self.upload
        result = self.chat.receive_chunk(session, up, up.received, data)
        if result is not None:
            self.upload = None
            self.conn.read_size = HTTP_READ
            # the 201 answer is the file message itself, sent after the commit (Outbox)
            self.chat.outbox.send((self.conn,), result)

    def upload_failed(self):
        """The turn's commit failed after this upload stored its file message."""
        self.fail(HttpError(507, "The server could not store the file: its disk is full or "
                            "failing.", code="disk_full"))

    def on_end(self, req):
        if self.session_body is not None:
            self.set_session_cookie(bytes(self.session_body))
            self.session_body = None
            return
        if self.operator_body is not None:
            body, self.operator_body = bytes(self.operator_body), None
            self.operator_request(req, body)
            return
        if req.method in ("POST", "PUT"):
            if self.upload is not None:      # fewer bytes than Content-Length cannot happen;
                self.abandon_upload()        # this is a zero-length or aborted body
                raise HttpError(400, "The upload ended early.")
            if not req.keep_alive:
                self.conn.close_when_done("quit")
            return
        route = self.route_get(req.path)
        if route is None:
            raise HttpError(404, "Nothing here. The chat is at /.", code="not_found")
        route(req)

    def route_get(self, path):
        if path == "/":
            return self.get_page
        if path == "/healthz":
            return self.get_health
        if path in ("/pair", "/qr.svg", "/qr.png"):
            return self.get_pairing
        if path == "/admin":
            return self.get_operator_page
        if path == "/admin/api/state":
            return lambda req: self.respond_json(200, self.site.operator.state())
        if path.startswith("/admin/export."):
            return self.get_export
        if path.startswith("/files/"):
            return self.get_file
        if path == "/favicon.ico":
            return lambda req: self.respond(204, b"", "image/x-icon")
        if self.conn.loop.config.web_app and (path == "/app" or path.startswith("/app/")):
            return self.get_web_app
        return None

    def get_page(self, req):
        self.respond(200, WEB_CLIENT_HTML, "text/html; charset=utf-8",
                     [("Cache-Control", "no-cache"),
                      ("Content-Security-Policy", page_csp(WEB_CLIENT_HTML))], static=True)

    def get_health(self, req):
        """Liveness for anyone; the counts only for the PC itself (they help nobody else, and
        would tell a brute-force run how it is doing)."""
        if is_loopback_peer(self.conn.peer):
            self.respond_json(200, self.site.health())
        else:
            self.respond_json(200, {"status": "ok"})

    def get_pairing(self, req):
        """The pairing page and QR images reveal the token: only for the PC itself."""
        if not is_loopback_peer(self.conn.peer):
            raise HttpError(403, "The pairing page is only shown on the server's own screen.",
                            code="forbidden")
        if not _is_loopback_url_host("//" + (req.header("host") or "")):
            # DNS rebinding: a foreign name that resolves to 127.0.0.1 is another origin
            # for the browser, which would let that site's script read the token.
            raise HttpError(403, "Open the pairing page as http://127.0.0.1:<port>/pair.",
                            code="forbidden")
        url = self.site.pairing_urls()[0]
        qr = qr_encode(url, ec="M")
        if req.path == "/qr.svg":
            self.respond(200, qr_render_svg(qr).encode("utf-8"), "image/svg+xml",
                         [("Cache-Control", "no-store")])
        elif req.path == "/qr.png":
            self.respond(200, qr_render_png(qr), "image/png", [("Cache-Control", "no-store")])
        else:
            self.respond(200, pair_page_html(url, qr_render_svg(qr), self.chat.mod.room),
                         "text/html; charset=utf-8",
                         [("Cache-Control", "no-store"),
                          ("Content-Security-Policy", PAGE_CSP % "'none'")])

    # -- the operator page (docs/PROTOCOL.md section 11) -------------------------

    def check_operator(self, req, need_key=True):
        """Operator requests come from the PC itself, by a loopback name (DNS rebinding), and
        (but for the page, which hands the key over as a cookie) carry the operator key."""
        if not is_loopback_peer(self.conn.peer) or \
                not _is_loopback_url_host("//" + (req.header("host") or "")):
            raise HttpError(403, "The operator page is only shown on the server's own screen: "
                            "open http://127.0.0.1:<port>/admin there.", code="forbidden")
        if need_key and not self.site.operator.key_matches(
                request_session(req, OPERATOR_COOKIE)):
            raise HttpError(401, "Open http://127.0.0.1:<port>/admin again: the operator key "
                            "is new at every start of the server.", code="auth_failed")

    def start_operator_request(self, req):
        content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            # a form of another site cannot send this type without asking first (CORS)
            raise HttpError(415, "Operator requests are JSON (Content-Type: application/json).",
                            code="bad_request")
        origin = req.header("origin")
        if origin is not None and not _is_loopback_url_host(origin):
            raise HttpError(403, "Operator requests come from the operator page only.",
                            code="forbidden")
        if req.chunked or (req.content_length or 0) > OPERATOR_BODY_MAX:
            raise HttpError(413, "An operator request is at most %d bytes." % OPERATOR_BODY_MAX)
        self.operator_body = bytearray()

    def operator_request(self, req, body):
        try:
            parsed = json.loads(body.decode("utf-8")) if body.strip() else {}
        except ValueError:                      # UnicodeDecodeError is one too
            raise HttpError(400, "The body is not JSON.", code="bad_json") from None
        action = req.path[len("/admin/api/"):]
        log.info("operator: %s", action)

        keep_alive = req.keep_alive

        def answer(result):
            self.busy = False
            self.respond_json(200, result, keep_alive)
            # the next request is a turn of its own, so that what it stores is committed
            # before it is delivered (this runs while the turn's output is delivered)
            self.conn.loop.call_later(0, lambda now: self.take_next_request())

        def refused():
            self.busy = False
            self.fail(HttpError(507, "The server could not store this; nothing changed.",
                                code="disk_full"))

        def perform():
            result = self.site.operator.perform(action, parsed)
            self.chat.outbox.call(lambda: answer(result))
            return result
        # Like a client's message, the answer waits for the turn's commit (run() makes it
        # durable): "200 OK" means stored; a failed commit answers 507 instead. Requests
        # pipelined behind it wait their turn meanwhile (RFC 9112 9.3.2).
        self.busy = True
        try:
            self.chat.run(refused, perform)
        except BaseException:
            self.busy = False
            raise

    def get_operator_page(self, req):
        self.respond(200, ADMIN_PAGE_HTML, "text/html; charset=utf-8", [
            ("Cache-Control", "no-store"),
            ("Content-Security-Policy", page_csp(ADMIN_PAGE_HTML)),
            ("Set-Cookie", "%s=%s; HttpOnly; SameSite=Strict; Path=/admin"
             % (OPERATOR_COOKIE, self.site.operator.key))], static=True)

    def get_export(self, req):
        kind = req.path[len("/admin/export."):]
        if kind not in EXPORT_TYPES:
            raise HttpError(404, "Exports are export.json, export.html and export.zip.",
                            code="not_found")
        operator = self.site.operator
        disposition = [("Content-Disposition", 'attachment; filename="chat-history.%s"' % kind)]
        if kind == "json":
            self.respond(200, operator.export_json(), EXPORT_TYPES[kind],
                         [("Cache-Control", "no-store")] + disposition)
        elif kind == "html":
            self.respond(200, operator.export_html(), EXPORT_TYPES[kind],
                         [("Cache-Control", "no-store"), ("Content-Security-Policy", FILE_CSP)])
        else:
            self.send_export_zip(req)

    def send_export_zip(self, req):
        """Written to a temporary file by a thread, then sent like a download; the file is
        unlinked once open where the system allows it (else at the next start, with the
        data folder's other leftovers). Later requests on this connection wait (busy)."""
        folder = self.chat.files.uploads_dir
        fd, path = tempfile.mkstemp(prefix="export-", suffix=".zip.part", dir=folder)
        os.close(fd)
        failed = []

        def write():
            try:
                write_export_zip(path, parts)
            except Exception as exc:         # reported by the loop, below
                failed.append(exc)
        parts = self.site.operator.export_parts()
        writer = threading.Thread(target=write, name="export", daemon=True)
        writer.start()
        self.busy = True

        def check(now):
            if writer.is_alive():
                self.conn.loop.call_later(EXPORT_POLL_SECONDS, check)
            elif self.conn.state != OPEN:
                _remove_quietly(path)
            else:
                self.busy = False
                self.serve_export_zip(req, path, failed)
        self.conn.loop.call_later(EXPORT_POLL_SECONDS, check)

    def serve_export_zip(self, req, path, failed):
        try:
            if failed:
                raise OSError(str(failed[0]))
            size = os.path.getsize(path)
            meta = {"id": "export", "name": "chat-history.zip", "size": size}
            self.conn.start_download(path, meta, 0, size, framed=False)
        except OSError as exc:
            _remove_quietly(path)
            log.warning("the history export failed: %s", exc)
            self.fail(HttpError(507, "The export could not be written.", code="disk_full"))
            return
        _remove_quietly(path)
        headers = SECURITY_HEADERS + [
            ("Content-Type", "application/zip"), ("Cache-Control", "no-store"),
            ("Content-Disposition", 'attachment; filename="chat-history.zip"'),
            ("Connection", "keep-alive" if req.keep_alive else "close")]
        self.conn.push(http_response_head(200, headers, size))
        self.conn.http_download = self.download_done
        self.busy = True
        self.keep_alive_after = req.keep_alive

    def session_of(self, req):
        """The live connection whose session the request presents: in an Authorization
        header or the lanchat_session cookie, never in the URL (a link carries no secret)."""
        if "session" in req.query:
            raise HttpError(400, "The session goes in an Authorization header or the %s "
                            "cookie, never in a link." % SESSION_COOKIE, code="bad_request")
        return self.live_session(request_session(req))

    def live_session(self, session):
        conn = self.chat.sessions.get(session) if session else None
        if conn is None or conn.closed:
            raise HttpError(401, "Unknown or expired session: reconnect the chat first.",
                            code="auth_failed")
        return conn

    def set_session_cookie(self, body):
        """POST /session: the page hands over its session and gets it back as an HttpOnly
        cookie, so that <img> and download links need no secret in them."""
        session = body.decode("ascii", "replace").strip()
        self.live_session(session)
        self.respond(204, b"", "text/plain", [
            ("Set-Cookie", "%s=%s; HttpOnly; SameSite=Strict; Path=/" % (SESSION_COOKIE,
                                                                          session)),
            ("Cache-Control", "no-store")])

    # -- the Flutter web app (--web-app) --------------------------------------

    def get_web_app(self, req):
        """A static file of the built web app under /app/, on the chat's own origin (so its
        WebSocket passes the Origin check). A path without an extension that names no file
        is one of the app's routes: index.html answers it."""
        if req.path == "/app":
            self.respond(301, b"", "text/plain", [("Location", "/app/")])
            return
        path = web_app_file(self.conn.loop.config.web_app, req.path[len("/app/"):])
        if path is None:
            raise HttpError(404, "No such file in the web app.", code="not_found")
        stat_result = os.stat(path)
        etag = '"%x-%x"' % (stat_result.st_size, stat_result.st_mtime_ns)
        headers = SECURITY_HEADERS + [("Cache-Control", "no-cache"), ("ETag", etag),
                                      ("Content-Security-Policy", WEB_APP_CSP)]
        if req.header("if-none-match") == etag:
            self.conn.push(http_response_head(304, headers, None))
            if not req.keep_alive:
                self.conn.close_when_done("quit")
            return
        size = stat_result.st_size
        headers += [("Content-Type", web_app_type(path)),
                    ("Connection", "keep-alive" if req.keep_alive else "close")]
        if req.method == "HEAD" or size == 0:
            self.conn.push(http_response_head(200, headers, size))
            if not req.keep_alive:
                self.conn.close_when_done("quit")
            return
        meta = {"id": "app", "name": os.path.basename(path), "size": size}
        self.conn.start_download(path, meta, 0, size, framed=False)
        self.conn.push(http_response_head(200, headers, size))
        self.conn.http_download = self.download_done
        self.busy = True
        self.keep_alive_after = req.keep_alive

    # -- downloads ------------------------------------------------------------

    def get_file(self, req):
        parts = req.raw_path.split("/")          # /files/<id>[/<name>]
        file_id = urllib.parse.unquote(parts[2]) if len(parts) > 2 else ""
        session = self.session_of(req)
        meta = self.chat.readable_file(session.uid, file_id)
        size = meta["size"]
        byte_range = parse_range_header(req.header("range"), size)
        start, end = (0, size) if byte_range is None else (byte_range[0], byte_range[1] + 1)
        mime = meta["mime"]
        inline = req.query.get("inline") == "1" and mime.lower() in INLINE_IMAGE_TYPES
        headers = SECURITY_HEADERS + [
            ("Content-Type", mime if inline else "application/octet-stream"),
            ("Content-Disposition", content_disposition(meta["name"], inline)),
            ("Accept-Ranges", "bytes"), ("Content-Security-Policy", FILE_CSP),
            ("Cache-Control", "private, max-age=3600"),
            ("ETag", '"%s"' % meta["sha256"]),
            ("Connection", "keep-alive" if req.keep_alive else "close")]
        status = 200
        if byte_range is not None:
            status = 206
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end - 1, size)))
        if req.method == "HEAD" or end == start:
            self.conn.push(http_response_head(status, headers, end - start))
            if not req.keep_alive:
                self.conn.close_when_done("quit")
            return
        # opened before the head goes out, so a missing file or a full descriptor table is
        # still a clean error response
        try:
            self.conn.start_download(self.chat.files.file_path(meta["id"]), meta, start, end,
                                     framed=False)
        except OSError:
            raise HttpError(404, "The file is missing on the server.",
                            code="unknown_file") from None
        self.conn.push(http_response_head(status, headers, end - start))
        self.conn.http_download = self.download_done
        self.busy = True
        self.keep_alive_after = req.keep_alive

    def download_done(self):
        """The file is queued whole: take the next request, if the client sent one meanwhile."""
        self.busy = False
        self.conn.http_download = None
        if not self.keep_alive_after:
            self.conn.close_when_done("quit")
            return
        self.take_next_request()

    def take_next_request(self):
        """An answer that kept later requests waiting went out: on to what came meanwhile."""
        if self.conn.state != OPEN:
            return
        pending, self.pending = self.pending, []
        self.dispatch(pending)
        if self.busy or self.pending:
            return
        held, self.held = bytes(self.held), bytearray()
        if held:
            self.feed(held)

    # -- uploads --------------------------------------------------------------

    def start_upload(self, req):
        """POST /files?session=S&name=N&cid=C[&to=T][&sha256=H][&text=CAPTION], raw body."""
        if req.chunked or req.content_length is None:
            raise HttpError(411, "Send the file with a Content-Length.")
        session = self.session_of(req)
        chat = self.chat
        q = req.query
        cid = q.get("cid") or "http-" + secrets.token_hex(6)
        if len(cid) > MAX_CID_CHARS:
            raise HttpError(400, "'cid' is too long.", code="bad_request")
        name = q.get("name", "")
        if not name or len(name) > 4 * MAX_FILE_NAME:
            raise HttpError(400, "'name' must be 1 to %d characters." % (4 * MAX_FILE_NAME),
                            code="bad_request")
        if not session.bucket.take(time.monotonic()):
            raise ChatError("rate_limited", "Too many messages; slow down.")
        target = chat.recipient(q, cid)
        mime = (req.header("content-type") or "").split(";")[0]
        up = chat.start_upload(session, name, req.content_length, cid, q.get("sha256"), mime,
                               target, (q.get("text") or "")[:MAX_TEXT_BYTES])
        if up.size == 0:
            result = chat.finish_upload(session, up)
            chat.outbox.send((self.conn,), result)
            return
        self.upload = (session, up)
        self.conn.read_size = RECV_SIZE       # the body: large reads, straight to the disk
        if req.expect_continue:
            self.conn.push(HTTP_100_CONTINUE)

    def abandon_upload(self):
        """A browser cannot resume an HTTP upload: free its space and slot at once."""
        session, up = self.upload
        self.upload = None
        self.conn.read_size = HTTP_READ
        if up.id in self.chat.files.uploads:
            log.info("%s: HTTP upload %s abandoned", self.conn.label(), up.id)
            self.chat.files.discard(up)

    # -- WebSocket ------------------------------------------------------------

    def open_websocket(self, req):
        self.conn.push(ws_handshake_response(req, origin_ok=self.site.origin_allowed))
        # before hello, messages are small (a hello is well under PREJOIN_MAX_HEADER)
        self.ws = WsConnection(max_frame=PREJOIN_MAX_HEADER, max_message=PREJOIN_MAX_HEADER)
        self.ws_events = self.ws.events()
        self.conn.proto = "ws"
        self.conn.loop.hello_deadline(self.conn)
        log.debug("%s: WebSocket open", self.conn.label())

    def feed_ws(self, data):
        self.ws.receive_data(data)
        self.dispatch_ws()

    def dispatch_ws(self):
        """Hand WebSocket messages to the Chat while the connection may; what is left stays
        unparsed in the codec's buffer (reading pauses) until the client has read its answers."""
        conn, ws = self.conn, self.ws
        try:
            while conn.may_dispatch():
                event = next(self.ws_events, None)
                if event is None:
                    self.ws_events = ws.events()
                    break
                if conn.nick is not None:
                    conn.frame_received()
                conn.frames_left -= 1
                if isinstance(event, WsText):
                    self.chat.handle(conn, event.data.encode("utf-8"))
                elif isinstance(event, WsBinary):
                    self.chat.reject(conn, bad_request("Binary WebSocket messages are not "
                                                       "used; send files with POST /files."))
            else:
                conn.stop_dispatching()
        except WsProtocolError as err:
            log.info("%s: WebSocket protocol error %d: %s", conn.label(), err.close_code,
                     err.message)
            conn.push(ws.data_to_send() + ws.close(err.close_code, err.reason))
            conn.close_when_done("error")
            return
        out = ws.data_to_send()
        if out:
            conn.push(out)
        if ws.close_received:
            conn.close_when_done("quit")

    def closed(self):
        if self.upload is not None:
            self.abandon_upload()

###############################################################################
# Settings ####################################################################
###############################################################################
#
# Every setting is one row: it feeds argparse (the flag), the environment variable
# (CHAT_ + the flag's name), Config and the README's configuration table
# (tests/test_architecture.py compares the README with these rows).

@dataclass(frozen=True)
class Setting:
    name: str              # the Config attribute
    flag: str
    kind: object           # str, int, float, bool (a switch), or a tuple of choices
    default: object
    help: str
    shown: str             # the default as the README shows it

    @property
    def env(self):
        return "CHAT_" + self.flag[2:].upper().replace("-", "_")


SETTINGS = (
    Setting("host", "--host", str, DEFAULT_HOST, "address to listen on; 0.0.0.0 = every IPv4 "
            "interface", "`0.0.0.0`"),
    Setting("port", "--port", int, DEFAULT_PORT, "TCP port for all protocols", "`5555`"),
    Setting("data_dir", "--data-dir", str, None, "folder for history, files and the pairing "
            "token (default: %s)" % default_data_dir().replace("%", "%%"),
            "`%LOCALAPPDATA%\\ChatServer` (Windows), `$XDG_DATA_HOME/chatserver` or "
            "`~/.local/share/chatserver`"),
    Setting("memory", "--memory", bool, False, "keep nothing on disk: history and files vanish "
            "at exit", "off"),
    Setting("max_clients", "--max-clients", int, DEFAULT_MAX_CLIENTS, "connections served at "
            "once; on Windows capped at %d because select() there handles at most 512 "
            "sockets, and everywhere lowered to what the open-file limit allows"
            % WINDOWS_SELECT_MAX_CLIENTS, "`1000`"),
    Setting("max_per_address", "--max-per-address", int, DEFAULT_MAX_PER_ADDRESS,
            "connections from one IP address at once, 0 = no limit", "`64`"),
    Setting("rate_limit", "--rate-limit", float, DEFAULT_RATE_LIMIT, "messages per second per "
            "connection, 0 = unlimited", "`20`"),
    Setting("rate_burst", "--rate-burst", int, DEFAULT_RATE_BURST, "messages a connection may "
            "send in a burst", "`50`"),
    Setting("max_file_size", "--max-file-size", int, DEFAULT_MAX_FILE_SIZE, "largest file "
            "accepted, bytes", "4 GiB"),
    Setting("min_free_disk", "--min-free-disk", int, DEFAULT_MIN_FREE_DISK, "free disk space "
            "always kept, bytes; uploads that would eat it are refused with disk_full",
            "256 MiB"),
    Setting("max_uploads", "--max-uploads", int, DEFAULT_MAX_UPLOADS, "concurrent uploads per "
            "user", "`4`"),
    Setting("out_hard", "--out-hard-limit", int, OUT_HARD_LIMIT, "queued output, bytes, that "
            "closes a slow client at once", "16 MiB"),
    Setting("out_soft", "--out-soft-limit", int, OUT_SOFT_LIMIT, "queued output, bytes, "
            "tolerated for --out-soft-seconds", "4 MiB"),
    Setting("out_soft_seconds", "--out-soft-seconds", float, OUT_SOFT_SECONDS, "grace period "
            "over the soft output limit, seconds", "30 s"),
    Setting("ping_after", "--ping-after", float, PING_AFTER, "seconds of silence before the "
            "server pings a client", "30 s"),
    Setting("idle_timeout", "--idle-timeout", float, IDLE_TIMEOUT, "seconds of silence before a "
            "client is dropped", "90 s"),
    Setting("hello_timeout", "--hello-timeout", float, HELLO_TIMEOUT, "seconds a new "
            "connection has to say hello (or, in HTTP, to send its request); nothing it sends "
            "extends it", "10 s"),
    Setting("http_timeout", "--http-timeout", float, HTTP_TIMEOUT, "seconds an HTTP request "
            "head may take to arrive, and an HTTP connection may stay silent", "20 s"),
    Setting("sync", "--sync", ("full", "normal"), "full", "SQLite synchronous mode: full "
            "survives power loss, normal survives a crash of the server process", "`full`"),
    Setting("open", "--open", bool, False, "no pairing token: anyone on the network may join",
            "off"),
    Setting("new_token", "--new-token", bool, False, "rotate the pairing token; phones must "
            "scan the new QR code", "off"),
    Setting("advertise_host", "--advertise-host", str, None, "address put in the pairing URL "
            "and QR code instead of the detected LAN address", "detected"),
    Setting("nick_expiry", "--nick-expiry", float, DEFAULT_NICK_EXPIRY_DAYS, "days after which "
            "the claim of a nick that nobody used lapses, so another device may take it",
            "30 days"),
    Setting("edit_window", "--edit-window", float, DEFAULT_EDIT_WINDOW_MINUTES, "minutes "
            "during which a sender may edit a message, 0 = no editing", "15 min"),
    Setting("allow_host", "--allow-host", str, "", "more names the server answers to, comma "
            "separated (e.g. chat.local); its addresses and loopback names always work",
            "none"),
    Setting("show_link", "--show-link", bool, False, "print the pairing link and QR code of the "
            "data folder and exit (for --quiet, a service or a PC without a screen)", "off"),
    Setting("web_app", "--web-app", str, None, "folder of a built Flutter web app, served "
            "under /app/ (flutter build web --base-href /app/)", "none"),
    Setting("no_browser", "--no-browser", bool, False, "do not open the pairing page in a "
            "browser at start (Windows exe)", "off"),
    Setting("log_level", "--log-level", ("debug", "info", "warning", "error"), "info",
            "console log detail", "`info`"),
    Setting("quiet", "--quiet", bool, False, "log warnings and errors only, and no start-up "
            "banner", "off"),
)


class Config:
    """Every setting in one place, defaults from SETTINGS; the CLI fills it."""

    def __init__(self, **kw):
        for setting in SETTINGS:
            setattr(self, setting.name, setting.default)
        for name, value in kw.items():
            if not hasattr(self, name):
                raise TypeError("unknown setting %r" % name)
            setattr(self, name, value)

###############################################################################
# Event loop and server #######################################################
###############################################################################


class Timers:
    """A heap of (deadline, seq, callback); the nearest deadline is the select timeout."""

    def __init__(self):
        self.heap = []
        self.seq = 0

    def add(self, deadline, callback):
        self.seq += 1
        heapq.heappush(self.heap, (deadline, self.seq, callback))

    def timeout(self, now):
        if not self.heap:
            return MAX_SELECT_TIMEOUT
        return max(0.0, min(MAX_SELECT_TIMEOUT, self.heap[0][0] - now))

    def run_due(self, now):
        heap = self.heap
        while heap and heap[0][0] <= now:
            callback = heapq.heappop(heap)[2]
            try:
                callback(now)
            except Exception:   # one failing timer must not stop the loop or the others
                LOOP_LOG.exception("timer", "timer callback failed")


def _leave_reason(close_reason):
    """The `leave.reason` of docs/PROTOCOL.md for why a connection closed."""
    if close_reason == "shutting_down":
        return "shutdown"
    return close_reason if close_reason in ("quit", "timeout", "slow", "shutdown", "kicked",
                                            "banned") else "error"


def _host_name(host):
    """The host part of a Host header or a name, lower-case, without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _is_loopback_name(name):
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost" or name.endswith(".localhost")


def raise_fd_limit(wanted):
    """Raise the soft limit on open files towards `wanted` (never above the hard limit);
    returns the soft limit in force, or None where there is none to read (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if sys.platform == "darwin":
        target = min(target, MACOS_OPEN_MAX)
    if soft == resource.RLIM_INFINITY:
        return wanted
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft


class Server:
    """Accepts, reads, dispatches to the Chat, commits, delivers, flushes — one thread.

    Its public methods are the loop's API for connections and handlers: call_later,
    wants_flush, watch, abort_after_pass, joined, sniff, resume_soon, defer,
    backlog_changed, lingering, drop, hello_deadline; and for pages: health, pairing_urls.

    A turn: select; the interactive lane (connections that sent little lately) is read
    and dispatched; then the bulk lane: deferred and busy connections round-robin, a slice
    at a time, until the turn's budget is spent (one slice if the interactive lane had
    messages), or light input waits (it is served at once); then timers; then commit,
    delivery and writes (end_turn)."""

    def __init__(self, config):
        self.config = config
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()
        self.conns = set()
        self.rejecting = set()
        self.unjoined = collections.OrderedDict()   # not joined yet (HTTP too), oldest first
        self.dirty = set()
        self.file_bytes_left = TURN_FILE_BYTES   # this turn's, for every connection together
        self.file_bytes_waiting = {}  # connections cut off by it (-> whether they wrote some
                                      # file bytes first): flushed first in the next turn
        self.aborted = []
        self.resumable = set()
        self.backlog = {}             # bulk senders to serve, in round-robin order (a dict:
                                      # ordered, O(1) removal)
        self.backlogged = set()       # joined connections with over PACE_BACKLOG queued
        self.paced_by_room = set()    # bulk senders not read while the room is backlogged
        self.paused_by_disk = set()
        self.running = False
        self.stop_signal = None
        self.started = time.time()
        self.listeners = []
        self.accepting = True
        self.notices = []             # said in the banner (and logged): limits lowered, ...
        self._hosts = None            # the names the server answers to (host_allowed)
        self._hosts_read = 0.0
        self._tmpdir = None
        if config.web_app and not os.path.isfile(os.path.join(config.web_app, "index.html")):
            raise OSError("--web-app %s is not a built web app (no index.html in it)"
                          % config.web_app)
        self._plan_descriptors()
        self._open_storage()
        self.addresses = AddressBook()
        self.chat = Chat(self.store, self.files, config, self.addresses)
        self.chat.token = None if config.open else self._pairing_token()
        self.operator = OperatorApi(self.chat, self)
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.files.disk.on_drained = self.wake

    # -- setup ----------------------------------------------------------------

    def _plan_descriptors(self):
        """Raise the open-file limit to what max_clients needs, or lower max_clients to what
        the limit allows; every socket and file is then counted against it (FdBudget)."""
        cfg = self.config
        clients = cfg.max_clients
        if IS_WINDOWS:
            clients = min(clients, WINDOWS_SELECT_MAX_CLIENTS)
        limit = raise_fd_limit(clients * FDS_PER_CLIENT + FD_RESERVE)
        if limit is not None:
            fits = max(1, (limit - FD_RESERVE) // FDS_PER_CLIENT)
            if clients > fits:
                self.notices.append("max-clients lowered from %d to %d: this system allows %d "
                                    "open files (raise it with `ulimit -n`)."
                                    % (clients, fits, limit))
                clients = fits
        self.max_clients = clients
        self.fds = FdBudget(None if limit is None else max(1, limit - FD_RESERVE))

    def _open_storage(self):
        cfg = self.config
        if cfg.memory:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="chatserver-")
            root, db_path = self._tmpdir.name, ":memory:"
        else:
            root = cfg.data_dir or default_data_dir()
            make_private_dir(root)
            db_path = os.path.join(root, "chat.sqlite3")
        self.data_root = root
        self.store = MessageStore(db_path, synchronous=cfg.sync.upper())
        try:
            self.files = FileStore(root, self.store, self.fds)
            self.files.recover()
        except BaseException:
            self.store.close()
            raise

    def rotate_token(self):
        """The operator asks for a new pairing token: phones that joined stay, new ones need
        the new QR code. An open server stays open."""
        if self.chat.token is None:
            raise HttpError(409, "This server runs with --open: it has no pairing token.",
                            code="bad_request")
        self.chat.token = secrets.token_urlsafe(16)
        self.store.set_setting("pairing_token", self.chat.token)
        self._write_pairing_link()

    def _pairing_token(self):
        token = self.store.get_setting("pairing_token")
        if token is None or self.config.new_token:
            token = secrets.token_urlsafe(16)
            self.store.set_setting("pairing_token", token)
            self.store.commit()
        return token

    def listen(self):
        """Bind the listening socket; returns the bound (host, port)."""
        cfg = self.config
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if not IS_WINDOWS:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((cfg.host, cfg.port))
            sock.listen(512)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, "listen")
        self.listeners.append(sock)
        self.timers.add(time.monotonic() + UPLOAD_SWEEP_EVERY, self._sweep)
        self.timers.add(time.monotonic() + FREE_DISK_CACHE, self._read_free_disk)
        self.timers.add(time.monotonic() + SEARCH_INDEX_EVERY, self._index_for_search)
        self.bound = sock.getsockname()[:2]
        for notice in self.notices:
            log.warning("%s", notice)
        self._write_pairing_link()
        return self.bound

    def _write_pairing_link(self):
        """Keep the pairing link in the data folder (private to the user) for --show-link
        while the server runs: the database is locked then."""
        if self.config.memory:
            return
        path = os.path.join(self.data_root, PAIRING_LINK_FILE)
        try:
            make_private_file(path)
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(self.pairing_urls()) + "\n")
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)

    # -- the loop's API for connections and handlers ------------------------------

    def call_later(self, delay, callback):
        """Run callback(now) after `delay` seconds (a timer in the heap)."""
        self.timers.add(time.monotonic() + delay, callback)

    def wants_flush(self, conn):
        self.dirty.add(conn)

    def file_bytes_cut(self, conn, wrote):
        """This turn's TURN_FILE_BYTES are spent: the connection's file bytes wait for the
        next turn. There it is flushed before the others, after the ones that could write
        none this turn (`wrote` False): round-robin."""
        self.file_bytes_waiting[conn] = wrote
        self.dirty.add(conn)

    def watch(self, conn, events):
        """Make the selector watch `events` of the connection's socket (0: nothing)."""
        if not conn.events:
            self.selector.register(conn.sock, events, conn)
        elif not events:
            self.selector.unregister(conn.sock)
        else:
            self.selector.modify(conn.sock, events, conn)

    def abort_after_pass(self, conn):
        self.aborted.append(conn)

    def resume_soon(self, conn):
        """The connection drained its output: dispatch its buffered input next turn."""
        self.resumable.add(conn)

    def defer(self, conn):
        """The connection used its share of the turn with frames left: the bulk lane serves
        it again (from its buffer, without reading), after the others already waiting."""
        self.backlog[conn] = None

    def backlog_changed(self, conn):
        """A joined connection's chat output crossed PACE_BACKLOG (up) or half of it (down):
        `conn.backlogged` says which; room pacing counts them."""
        if conn.backlogged:
            self.backlogged.add(conn)
        else:
            self.backlogged.discard(conn)

    def room_backlogged(self):
        """More than 1 in PACE_QUORUM joined clients have over PACE_BACKLOG queued and are
        reading it: a few slow readers do not pace the room, nor does one that has not
        taken a byte for PACE_STALLED seconds (the output limits deal with those)."""
        joined = len(self.chat.joined)
        if len(self.backlogged) * PACE_QUORUM <= joined:
            return False
        since = time.monotonic() - PACE_STALLED
        return sum(1 for c in self.backlogged if c.last_tx > since) * PACE_QUORUM > joined

    def joined(self, conn):
        """The client said hello: it is no longer a pre-join connection; liveness starts."""
        self.unjoined.pop(conn, None)
        self._schedule_liveness(conn, time.monotonic() + self.config.ping_after)

    def hello_deadline(self, conn):
        """From now, the client has --hello-timeout seconds to get a welcome (not extendable)."""
        due = conn.hello_due = time.monotonic() + self.config.hello_timeout

        def check(now):
            if conn.state == OPEN and conn.nick is None and conn.hello_due == due:
                self._hello_too_late(conn)
        self.timers.add(due, check)

    def sniff(self, conn, data):
        """First byte 0x00: framed protocol; an ASCII letter: HTTP (docs/PROTOCOL.md)."""
        first = data[:1]
        if first == b"\0":
            conn.proto = "framed"
            conn.handler = FramedSession(conn, self.chat)
        elif first.isalpha():
            conn.proto = "http"
            conn.handler = HttpConnection(conn, self.chat, self)
            conn.read_size = HTTP_READ
            conn.hello_due = None
            self._schedule_liveness(conn, time.monotonic() + self.config.http_timeout)
        else:
            self.chat.reject(conn, FrameError("bad_frame", "Unknown protocol: a framed client "
                                              "starts with 0x00, HTTP with a letter."))
            return
        conn.handler.feed(data)

    def lingering(self, conn):
        """The connection's answer is out and its side shut: the user leaves now, the socket
        goes after LINGER_SECONDS (at once when the server is stopping)."""
        if not self.running:
            self.drop(conn, conn.close_reason or "quit")
            return
        self.chat.leave(conn, _leave_reason(conn.close_reason))
        self.timers.add(time.monotonic() + LINGER_SECONDS,
                        lambda now: self.drop(conn, conn.close_reason or "quit"))

    def drop(self, conn, reason):
        """Close a connection now; tell the chat the user left."""
        if conn.closed:
            return
        if conn in self.conns:
            self.conns.discard(conn)
            self.addresses.disconnected(conn.address)
        self.rejecting.discard(conn)
        self.dirty.discard(conn)
        self.file_bytes_waiting.pop(conn, None)
        self.unjoined.pop(conn, None)
        self.paused_by_disk.discard(conn)
        self.resumable.discard(conn)
        self.backlog.pop(conn, None)
        self.paced_by_room.discard(conn)
        if conn.events:
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass
        self.fds.release()
        conn.release()
        self.chat.leave(conn, _leave_reason(reason))

    # -- the loop -------------------------------------------------------------

    def wake(self):
        """Interrupt select() from a signal handler or another thread."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def stop(self):
        self.running = False
        self.wake()

    def serve_forever(self):
        self.running = True
        while self.running:
            try:
                self.run_once()
            except Exception:   # the last net: nothing a client sends may stop the loop
                LOOP_LOG.exception("turn", "the loop caught an unexpected error")
        if self.stop_signal is not None:
            log.info("stopping (signal %d)", self.stop_signal)
        self.shutdown()

    def run_once(self):
        now = time.monotonic()
        timeout = 0.0 if self.resumable or self.backlog else self.timers.timeout(now)
        light, bulk = self._poll(timeout)
        self._serve_light(light)
        self._resume_paced()
        if bulk or self.backlog:
            # with interactive messages in this turn, the bulk lane gets what they may wait
            # for (one slice; more in a large room): they go out after that much, in the
            # same writes (no extra end_turn, whose writes to every client are the cost of a
            # turn in a large room)
            frames = self.light_wait_frames() if self.chat.outbox.entries else \
                self.turn_frames()
            if self._serve_bulk(bulk, frames):
                # light input came during the bulk lane: it goes out with this turn's
                # delivery, in the same writes (one end_turn, not two)
                light, bulk = self._poll(0)
                self._serve_light(light)
                for conn in bulk:
                    self.backlog.setdefault(conn, None)
        self.timers.run_due(time.monotonic())
        self.end_turn()

    def _poll(self, timeout):
        """Wait for readiness: accept, note writable connections, and return the readable
        ones in two lanes (light, bulk)."""
        light, bulk = [], []
        for key, mask in self.selector.select(timeout):
            tag = key.data
            if tag == "listen":
                self._accept(key.fileobj)
            elif tag == "wake":
                self._drain_wake()
            else:
                if mask & selectors.EVENT_WRITE:
                    self.dirty.add(tag)
                if mask & selectors.EVENT_READ:
                    (bulk if tag.heavy else light).append(tag)
        return light, bulk

    def _serve_light(self, conns):
        for conn in conns:
            self._serve(conn, LIGHT_TURN_FRAMES)

    def _serve(self, conn, frames):
        """One connection's share of this turn: read and dispatch at most `frames` frames
        (a deferred one dispatches from its buffer and is not read). Returns the frames
        dispatched. A bug costs this one connection, never the server."""
        if conn.closed or conn.paused:
            return 0
        outbox = self.chat.outbox
        broadcasts = outbox.broadcasts
        conn.frames_left = frames
        conn.got = 0
        try:
            if conn.deferred:
                conn.deferred = False
                if conn.state == OPEN and conn.handler is not None:
                    conn.handler.resume()
            else:
                self._read(conn)
        except Exception:
            self._internal_error(conn)
            return 0
        used = frames - conn.frames_left
        conn.fans_out = outbox.broadcasts != broadcasts
        if not conn.deferred:
            conn.heavy = conn.got >= LIGHT_TURN_BYTES or used >= LIGHT_TURN_FRAMES
        return used

    def _serve_bulk(self, ready, frames):
        """The bulk lane, round-robin: connections waiting since an earlier turn first, then
        newly readable ones, BULK_SLICE_FRAMES at a time, until `frames` are spent
        or a light connection has input (returns True: run_once serves it at once, so its
        message is not kept waiting behind bulk). While the room is backlogged, a bulk
        sender whose messages went to the room is not read until it drains."""
        backlog = self.backlog
        for conn in ready:
            backlog.setdefault(conn, None)
        read = TURN_READ_BYTES
        paced = self.room_backlogged()
        idle = 0                      # slices in a row that dispatched nothing
        light_wait = self.light_wait_frames()
        while backlog and frames > 0 and read > 0 and idle <= len(backlog):
            conn = next(iter(backlog))
            del backlog[conn]
            if paced and conn.fans_out and conn.state == OPEN and not conn.closed:
                self._pace_by_room(conn)
                continue
            used = self._serve(conn, min(BULK_SLICE_FRAMES, frames))
            frames -= used
            read -= conn.got
            light_wait -= used
            idle = 0 if used else idle + 1
            if backlog and light_wait <= 0 and self._light_input_waiting():
                return True
        return False

    def turn_frames(self):
        """The bulk lane's frame budget for this turn: TURN_FRAMES, fewer in a large room
        (TURN_DELIVERIES), never less than one slice."""
        return max(BULK_SLICE_FRAMES,
                   min(TURN_FRAMES, TURN_DELIVERIES // max(1, len(self.chat.joined))))

    def light_wait_frames(self):
        """Frames of the bulk lane that light input may wait for (LIGHT_WAIT_CLIENTS)."""
        return min(self.turn_frames(),
                   max(BULK_SLICE_FRAMES, len(self.chat.joined) // LIGHT_WAIT_CLIENTS))

    def _light_input_waiting(self):
        """Whether a connection outside the bulk lane (or a new one) has input now: a
        zero-timeout poll (the selector is level-triggered, so nothing is lost for the next
        turn's select)."""
        for key, mask in self.selector.select(0):
            tag = key.data
            if tag == "listen":
                return True
            if mask & selectors.EVENT_READ and isinstance(tag, Connection) and \
                    not tag.heavy and not tag.paused and not tag.closed:
                return True
        return False

    def _pace_by_room(self, conn):
        conn.paused |= PAUSED_BY_ROOM
        conn.update_interest()
        self.paced_by_room.add(conn)

    def _resume_after_room(self):
        if not self.paced_by_room or self.room_backlogged():
            return
        paced, self.paced_by_room = self.paced_by_room, set()
        self._release(paced, PAUSED_BY_ROOM)

    def _release(self, conns, reason):
        """Clear one reason (a PAUSED_BY_* bit) for not reading these connections."""
        for conn in conns:
            if not conn.closed:
                conn.paused &= ~reason
                self._unpaused(conn)

    def _unpaused(self, conn):
        """Reading may resume; frames it had left wait no more (the bulk lane serves them)."""
        conn.update_interest()
        if conn.deferred and not conn.paused:
            self.defer(conn)

    def _internal_error(self, conn):
        LOOP_LOG.exception("internal", "internal error while serving %s; its connection is "
                           "closed", conn.label() if isinstance(conn, Connection) else conn)
        if isinstance(conn, Connection):
            try:
                if conn.proto == "ws" and conn.state == OPEN and \
                        not (conn.out and isinstance(conn.out[0], memoryview)):
                    try:      # RFC 6455 7.4.1: 1011, "an unexpected condition", best effort
                        conn.sock.send(conn.handler.ws.close(WS_CLOSE_INTERNAL_ERROR,
                                                             "server error"))
                    except OSError:
                        pass
                self.drop(conn, "error")
            except Exception:
                LOOP_LOG.exception("internal_close", "could not close %s cleanly",
                                   conn.label())

    def end_turn(self):
        """Commit what this turn stored, deliver it, close who must go, write before sleeping.
        Each step is contained: a failure of one is logged and the others still run."""
        for step in (self._commit, self._deliver, self._close_aborted,
                     self._resume_after_disk, self._flush_dirty, self._resume_after_room):
            try:
                step()
            except Exception:
                LOOP_LOG.exception(step.__name__, "the loop step %s failed", step.__name__)

    def _commit(self):
        try:
            self.store.commit()
        except sqlite3.Error as exc:
            self.chat.storage_failed(exc)
        else:
            self.files.turn_committed()

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _resume_paced(self):
        """Connections whose output drained act on their buffered input: a light one now,
        a bulk sender in the bulk lane."""
        resumable, self.resumable = self.resumable, set()
        for conn in resumable:
            if conn.state == OPEN and conn.handler is not None:
                conn.deferred = True
                if conn.heavy:
                    self.defer(conn)
                else:
                    self._serve(conn, LIGHT_TURN_FRAMES)

    # -- accept ---------------------------------------------------------------

    def _accept(self, listener):
        for _ in range(ACCEPT_BATCH):
            if not self.fds.take():
                self._pause_accepting("all %d file descriptors are in use" % self.fds.limit)
                return
            try:
                sock, peer = listener.accept()
            except OSError as exc:
                self.fds.release()
                if is_fd_exhaustion(exc):
                    self._pause_accepting(str(exc))
                elif not is_retry(exc) and not isinstance(exc, ConnectionAbortedError):
                    LOOP_LOG.warning("accept", "accept failed: %s", exc)
                return
            try:
                self._admit(sock, peer)
            except Exception:
                LOOP_LOG.exception("admit", "could not set up the connection of %s", peer)
                sock.close()
                self.fds.release()

    def _admit(self, sock, peer):
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):     # Linux, macOS; not Windows
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
            except OSError:
                pass
        conn = Connection(self, sock, peer, TokenBucket(self.config.rate_limit,
                                                        self.config.rate_burst))
        refusal = self._refusal(conn)
        if refusal is not None:
            self._refuse(conn, refusal)
            return
        self.conns.add(conn)
        self.addresses.connected(conn.address)
        self.unjoined[conn] = None
        self.selector.register(sock, selectors.EVENT_READ, conn)
        self.hello_deadline(conn)
        # a socket that never sends a byte speaks no protocol yet: the shorter of both limits
        self.timers.add(conn.connected + min(self.config.hello_timeout,
                                             self.config.http_timeout),
                        lambda now: self._first_byte_too_late(conn))

    def _refusal(self, conn):
        """Why a new connection cannot be served (None: it can)."""
        cap = self.config.max_per_address
        if cap and self.addresses.count(conn.address) >= cap:
            return "Too many connections from your address (%d); close some and try again." \
                % cap
        if len(self.conns) >= self.max_clients:
            victim = self._evictable(time.monotonic())
            if victim is None:
                return "The server is full (%d clients); try again later." % self.max_clients
            self._evict(victim)
        return None

    def _evictable(self, now):
        """The oldest connection that has not joined and is doing nothing (a pre-join socket,
        an idle HTTP keep-alive), if it is at least EVICT_MIN_AGE old: when the server is
        full, it makes room, so sockets that never say hello cannot lock users out."""
        for conn in self.unjoined:
            if now - conn.connected < EVICT_MIN_AGE:
                return None
            if conn.state == OPEN and (conn.proto != "http" or conn.handler.idle):
                return conn
        return None

    def _evict(self, conn):
        LOOP_LOG.info("evict", "server full: closed %s, which had not joined, to make room",
                      conn.label())
        if conn.proto in ("framed", "ws"):
            raw = dump_json({"type": "error", "code": "server_full", "message": "The server is "
                             "full; connections that have not joined are closed to make "
                             "room.", "fatal": True})
            data = conn.handler.frame(raw) + conn.handler.goodbye("server_full")
            try:
                conn.sock.send(data)
            except OSError:
                pass
        self.drop(conn, "full")

    def _refuse(self, conn, message):
        """Refused: wait briefly for the first byte to answer in the client's protocol."""
        if len(self.rejecting) >= REJECT_POOL:
            LOOP_LOG.warning("full", "%s; dropped %s", message, conn.label())
            conn.sock.close()
            self.fds.release()
            return
        conn.proto = "reject"
        conn.close_reason = message
        self.rejecting.add(conn)
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        self.timers.add(time.monotonic() + REJECT_WAIT, lambda now: self._answer_full(conn))

    def _answer_full(self, conn, first=b"\0"):
        if conn.closed:
            return
        LOOP_LOG.warning("full", "refused %s: %s", conn.label(), conn.close_reason)
        if first[:1].isalpha():
            data = http_error_response(HttpError(503, conn.close_reason, code="server_full"))
        else:
            data = encode_frame({"type": "error", "code": "server_full",
                                 "message": conn.close_reason, "fatal": True})
        try:
            conn.sock.send(data)
        except OSError:
            pass
        self.drop(conn, "full")

    def _pause_accepting(self, reason):
        """At the descriptor limit: stop watching the listener (a ready listener that cannot
        accept would spin the loop), and look again after ACCEPT_RETRY."""
        if self.accepting:
            self.accepting = False
            for sock in self.listeners:
                self.selector.unregister(sock)
        LOOP_LOG.warning("fd_limit", "not accepting new connections for now: %s", reason)
        self.timers.add(time.monotonic() + ACCEPT_RETRY, self._resume_accepting)

    def _resume_accepting(self, now):
        if self.accepting or not self.listeners:
            return
        if self.fds.room <= 0:
            self.timers.add(now + ACCEPT_RETRY, self._resume_accepting)
            return
        self.accepting = True
        for sock in self.listeners:
            self.selector.register(sock, selectors.EVENT_READ, "listen")

    # -- read path ------------------------------------------------------------

    def _read(self, conn):
        if conn.closed:
            return
        if conn.proto == "reject":
            try:
                first = conn.sock.recv(64)
            except OSError as exc:
                if not is_retry(exc):
                    self.drop(conn, "full")
                return
            self._answer_full(conn, first or b"\0")
            return
        submitted = self.files.disk.submitted
        try:
            conn.read()
        except PeerGone as gone:
            self.drop(conn, gone.reason)
            return
        self._pause_if_disk_congested(conn, submitted)

    def _pause_if_disk_congested(self, conn, submitted_before):
        """Stop reading a connection whose upload data the disk thread is behind on; the
        client's sends then block in TCP until the queue drains (back-pressure)."""
        if self.files.disk.submitted != submitted_before and self.files.disk.congested \
                and conn.state == OPEN:
            conn.paused |= PAUSED_BY_DISK
            self.paused_by_disk.add(conn)
            conn.update_interest()

    def _resume_after_disk(self):
        if not self.paused_by_disk or self.files.disk.queued > DISK_QUEUE_LOW:
            return
        paused, self.paused_by_disk = self.paused_by_disk, set()
        self._release(paused, PAUSED_BY_DISK)

    # -- delivery -------------------------------------------------------------

    def _deliver(self):
        """Queue this turn's messages. Consecutive broadcasts are joined into one blob per
        transport and that same bytes object is appended to every recipient."""
        outbox = self.chat.outbox
        while outbox.entries:
            run = []
            for targets, raw in outbox.take():
                if targets is None:
                    run.append(raw)
                    continue
                if run:
                    self._broadcast(run)
                    run = []
                if targets is _CALL:
                    self._guarded_call(raw)
                    continue
                size = len(raw)
                for conn in targets:
                    conn.out_pending -= size
                    try:
                        conn.send_json(raw)
                    except Exception:
                        self._internal_error(conn)
            if run:
                self._broadcast(run)

    def _guarded_call(self, fn):
        try:
            fn()
        except Exception:
            LOOP_LOG.exception("call", "a queued action failed")

    def _broadcast(self, raws):
        framed = ws = None
        welcoming = self.chat.welcoming
        for conn in self.chat.joined.values():
            if conn.state != OPEN or (welcoming and conn in welcoming):
                continue
            if conn.proto == "ws":
                if ws is None:
                    ws = b"".join([ws_encode_frame(WS_OP_TEXT, r) for r in raws])
                conn.push(ws)
            else:
                if framed is None:
                    framed = b"".join([frame_json(r) for r in raws])
                conn.push(framed)

    def _close_aborted(self):
        aborted, self.aborted = self.aborted, []
        for conn in aborted:
            if not conn.closed:
                if conn.close_reason == "slow":
                    LOOP_LOG.warning("slow", "%s closed: output queue over the limit (%d bytes "
                                     "queued)", conn.label(), conn.out_bytes)
                self.drop(conn, conn.close_reason)

    # -- write path -----------------------------------------------------------

    def _flush_dirty(self):
        dirty, self.dirty = self.dirty, set()
        waiting, self.file_bytes_waiting = self.file_bytes_waiting, {}
        self.file_bytes_left = TURN_FILE_BYTES
        if waiting:     # those cut off last turn first (those that wrote none, first)
            dirty = [c for c, wrote in waiting.items() if not wrote and c in dirty] + \
                [c for c, wrote in waiting.items() if wrote and c in dirty] + \
                [c for c in dirty if c not in waiting]
        now = time.monotonic()
        for conn in dirty:
            if conn.closed:
                continue
            try:
                conn.flush(now)
            except PeerGone as gone:
                self.drop(conn, gone.reason)
            except Exception:
                self._internal_error(conn)

    # -- liveness -------------------------------------------------------------

    def _schedule_liveness(self, conn, due):
        self.timers.add(due, lambda now, c=conn: self._liveness(c))

    def _first_byte_too_late(self, conn):
        if conn.proto == "sniff" and conn.state == OPEN:
            self.drop(conn, "timeout")    # not a byte: nothing to answer in

    def _hello_too_late(self, conn):
        if conn.proto == "sniff":
            self.drop(conn, "timeout")
            return
        self.chat.reject(conn, ChatError("timeout", "No 'hello' within %g seconds."
                                         % self.config.hello_timeout))

    def _liveness(self, conn):
        """Joined: ping after ping_after of silence, close after idle_timeout. HTTP: close
        after http_timeout of silence (no pings in HTTP)."""
        if conn.state != OPEN:
            return
        now = time.monotonic()
        cfg = self.config
        if conn.proto == "http":
            silent = now - max(conn.last_rx, conn.last_tx)
            if silent >= cfg.http_timeout:
                log.info("%s: HTTP connection idle for %d s, closed", conn.label(), silent)
                self.drop(conn, "timeout")
            else:
                self._schedule_liveness(conn, now + cfg.http_timeout - silent)
            return
        if conn.nick is None:
            return                        # a WebSocket before hello: hello_deadline decides
        # a client whose reading is paused (its output is over budget) cannot answer
        # pings; it is alive while what we send it keeps draining
        last = max(conn.last_rx, conn.last_tx) if conn.paused else conn.last_rx
        silent = now - last
        if silent >= cfg.idle_timeout:
            self.chat.reject(conn, ChatError("timeout", "No data for %d seconds."
                                             % cfg.idle_timeout))
            return
        if silent >= cfg.ping_after:
            self.chat.outbox.send((conn,), b'{"type":"ping"}')
            self._schedule_liveness(conn, last + cfg.idle_timeout)
        else:
            self._schedule_liveness(conn, last + cfg.ping_after)

    def _read_free_disk(self, now):
        self.timers.add(now + FREE_DISK_CACHE, self._read_free_disk)
        self.files.free_bytes()

    def _index_for_search(self, now):
        """New messages go to the search index in one write per SEARCH_INDEX_EVERY."""
        self.timers.add(now + SEARCH_INDEX_EVERY, self._index_for_search)
        self.store.index_pending()

    def _sweep(self, now):
        """Every UPLOAD_SWEEP_EVERY: expire partial uploads and forgotten auth failures."""
        self.timers.add(now + UPLOAD_SWEEP_EVERY, self._sweep)
        self.addresses.forget_old_failures(now)
        self.files.expire(time.time())

    # -- shutdown -------------------------------------------------------------

    def shutdown(self):
        """Send `bye` to everyone, flush for a moment, close the database."""
        self.running = False
        bye = b'{"type":"bye","reason":"shutdown"}'
        for conn in list(self.conns):
            if conn.proto in ("framed", "ws") and conn.state == OPEN:
                conn.send_json(bye)
                conn.close_when_done("shutting_down")
        try:
            self.store.index_pending()
            self.store.commit()
        except sqlite3.Error as exc:
            log.warning("the last commit failed: %s", exc)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while any(c.out for c in self.conns) and time.monotonic() < deadline:
            self._flush_dirty()
            for key, _ in self.selector.select(0.05):
                if isinstance(key.data, Connection) and not key.data.closed:
                    self.dirty.add(key.data)
        for conn in list(self.conns) + list(self.rejecting):
            self.drop(conn, "shutdown")
        for sock in self.listeners:
            if self.accepting:
                self.selector.unregister(sock)
            sock.close()
        self.listeners = []
        self.files.close()
        self.store.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
        log.info("server stopped")

    # -- the names the server answers to ------------------------------------

    def host_allowed(self, host):
        """Whether an HTTP Host names this server: its listening or LAN addresses,
        --advertise-host, loopback names, the computer's name, --allow-host. No Host (an
        HTTP/1.0 client, never a browser) is allowed."""
        if not host:
            return True
        name = _host_name(host)
        if name in self._known_hosts() or _is_loopback_name(name):
            return True
        now = time.monotonic()
        if now - self._hosts_read >= HOST_REFRESH_EVERY:      # the addresses may be new
            self._hosts = None
            return name in self._known_hosts()
        return False

    def origin_allowed(self, origin):
        """A browser's WebSocket Origin that names one of the server's hosts (the same list
        as the Host check) on the server's port."""
        try:
            parts = urllib.parse.urlsplit(origin.strip())
            port = parts.port or _WS_DEFAULT_PORTS.get(parts.scheme.lower())
        except ValueError:
            return False
        if not parts.hostname or port != self.bound[1]:
            return False
        return self.host_allowed(parts.hostname)

    def _known_hosts(self):
        if self._hosts is None:
            cfg = self.config
            names = {"localhost", "127.0.0.1", "::1"}
            names.update(ip for _, ip in list_ipv4_interfaces())
            host = getattr(self, "bound", (cfg.host,))[0]
            if host not in _WILDCARD_HOSTS:
                names.add(str(host).lower())
            if cfg.advertise_host:
                names.add(_host_name(cfg.advertise_host))
            names.update(_host_name(n) for n in cfg.allow_host.split(",") if n.strip())
            computer = socket.gethostname().lower()
            names.update((computer, computer + ".local", computer + ".lan"))
            self._hosts = names
            self._hosts_read = time.monotonic()
        return self._hosts

    # -- status ---------------------------------------------------------------

    def pairing_urls(self):
        host, port = self.bound
        return pairing_urls(host, port, self.chat.token, self.config.advertise_host)

    def health(self):
        return {"status": "ok", "version": __version__, "clients": len(self.chat.joined),
                "connections": len(self.conns), "uptime": round(time.time() - self.started, 1)}

###############################################################################
# CLI and main() ##############################################################
###############################################################################

def _env_value(setting):
    """The setting's environment variable, parsed like its flag; None when unset."""
    raw = os.environ.get(setting.env)
    if raw is None or raw == "":
        return None
    if setting.kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(setting.kind, tuple):
        return raw.strip().lower()
    return setting.kind(raw)


def build_arg_parser():
    """The command line, from SETTINGS; each flag's default comes from its environment
    variable when that is set."""
    p = argparse.ArgumentParser(
        prog="chatserver",
        description="LAN chat and file-sharing server (framed TCP, HTTP and WebSocket on one "
                    "port). Every option can also be set by the environment variable shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for setting in SETTINGS:
        env = _env_value(setting)
        default = setting.default if env is None else env
        help_text = "%s (%s)" % (setting.help, setting.env.replace("%", "%%"))
        if setting.kind is bool:
            p.add_argument(setting.flag, dest=setting.name, action="store_true",
                           default=default, help=help_text)
        elif isinstance(setting.kind, tuple):
            p.add_argument(setting.flag, dest=setting.name, choices=setting.kind,
                           default=default, help=help_text)
        else:
            p.add_argument(setting.flag, dest=setting.name, type=setting.kind,
                           default=default, help=help_text)
    p.add_argument("--version", action="version", version="chatserver " + __version__)
    return p


def config_from_args(args):
    return Config(**{setting.name: getattr(args, setting.name) for setting in SETTINGS})


def install_signal_handlers(server):
    """Ctrl+C and SIGTERM stop the loop cleanly (bye, flush, close the database). The handler
    only sets a flag: it may interrupt a write to the console, where logging would fail."""
    def on_signal(signum, frame):
        server.stop_signal = signum
        server.stop()
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, on_signal)


def print_banner(server, bound):
    """Where the server listens, where its data is, and how phones join (URL + QR code)."""
    host, port = bound[0], bound[1]
    print("\nLAN Chat server %s listening on %s:%d\ndata: %s" % (
        __version__, host, port,
        "(memory only)" if server.config.memory else server.data_root), flush=True)
    for notice in server.notices:
        print("note: " + notice, flush=True)
    text = pairing_banner(server.pairing_urls(), server.chat.token, port,
                          qr_console_can_encode(sys.stdout), IS_WINDOWS, listens_on_lan(host))
    try:
        print(text, flush=True)
    except UnicodeEncodeError:      # a console that lied about its encoding
        print(pairing_banner(server.pairing_urls(), server.chat.token, port, False,
                             IS_WINDOWS, listens_on_lan(host)), flush=True)


def keep_window_open():
    """Wait for Enter when the double-clicked Windows .exe cannot start: its console window
    closes with the process, and the reason (port or data folder in use) would flash by
    unread. Scripts, services and other systems exit at once."""
    if not (getattr(sys, "frozen", False) and IS_WINDOWS and sys.stdin is not None):
        return
    try:
        if sys.stdin.isatty():
            input("Press Enter to close this window.")
    except (EOFError, KeyboardInterrupt, OSError, ValueError):
        pass


def cannot_start(exc):
    log.error("cannot start: %s", exc)
    keep_window_open()
    return 2


def show_link(config, stream=None):
    """--show-link: print the pairing link and QR code of a data folder, and exit. With no
    server running, from the database (a new folder gets its token now); with one running,
    from the link it keeps in the folder."""
    stream = stream or sys.stdout
    root = config.data_dir or default_data_dir()
    try:
        if not config.memory:
            make_private_dir(root)
        store = MessageStore(os.path.join(root, "chat.sqlite3")) if not config.memory else None
    except DataDirInUse:
        try:
            with open(os.path.join(root, PAIRING_LINK_FILE), encoding="utf-8") as f:
                urls = [line.strip() for line in f if line.strip()]
        except OSError as exc:
            return cannot_start(OSError("a server runs on %s but its link is not readable (%s)"
                                        % (root, exc)))
    except OSError as exc:
        return cannot_start(exc)
    else:
        if store is None:
            return cannot_start(OSError("--memory keeps no pairing link to show"))
        try:
            token = None
            if not config.open:
                token = store.get_setting("pairing_token")
                if token is None or config.new_token:
                    token = secrets.token_urlsafe(16)
                    store.set_setting("pairing_token", token)
            urls = pairing_urls(config.host, config.port, token, config.advertise_host)
        finally:
            store.close()
    print("Pairing link for %s:" % root, file=stream)
    for url in urls:
        print("  " + url, file=stream)
    print(_console_qr(urls[0], qr_console_can_encode(stream)), file=stream, flush=True)
    return 0


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        # a cp1252 Windows console or a redirected stream must not choke on a nick like 'Zoë 🎉'
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    level = logging.WARNING if args.quiet else getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(message)s",
                        datefmt="%H:%M:%S")
    if args.show_link:
        return show_link(config_from_args(args))
    try:
        server = Server(config_from_args(args))
    except OSError as exc:          # the data folder: not writable, or in use
        return cannot_start(exc)
    try:
        bound = server.listen()
    except OSError as exc:          # the port: in use, or not an address of this PC
        server.shutdown()
        return cannot_start(exc)
    install_signal_handlers(server)
    if not args.quiet:
        print_banner(server, bound)
    if should_open_browser(args.no_browser):
        open_pair_page(bound[1])
    server.serve_forever()
    return 0


# BEGIN GENERATED client_web/ (edit client_web/, then run python3 build/embed_web.py)
###############################################################################
# Web pages, generated from client_web/ #######################################
###############################################################################

# client_web/chat.html: the zero-install chat client served at GET /, with chat.css and
# chat.js inlined: mobile-first, no external resources, every piece of user data rendered
# as text; its liveness timers follow welcome.limits (ping_after, idle_timeout).
WEB_CLIENT_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="light dark">
<title>LAN Chat</title>
<link rel="icon" id="favicon" href="data:,">
<style>
:root {
  --bg: #f2f4f7;
  --panel: #fff;
  --text: #14171c;
  --muted: #5b6472;
  --line: #e1e5eb;
  --accent: #1f5fd6;
  --on-accent: #fff;
  --bubble: #fff;
  --me: #1f5fd6;
  --on-me: #fff;
  --me-muted: #dbe6ff;
  --dm: #6d28d9;
  --dm-bg: #f1ebfe;
  --bad: #b42318;
  --ok: #15803d;
  --warn: #b45309;
  --shadow: 0 1px 2px rgba(16,24,40,.08);
  --focus: #1f5fd6;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0e1116;
    --panel: #161a21;
    --text: #e7eaf0;
    --muted: #a0a8b6;
    --line: #272d38;
    --accent: #7aa2ff;
    --on-accent: #0b1020;
    --bubble: #1e232c;
    --me: #2c5ad6;
    --on-me: #fff;
    --me-muted: #e6ecff;
    --dm: #c4a5ff;
    --dm-bg: #271f3d;
    --bad: #ff8a80;
    --ok: #5ee08f;
    --warn: #fbbf24;
    --shadow: none;
    --focus: #9bbcff;
  }
}
* {
  box-sizing: border-box;
}
html, body {
  height: 100%;
  overflow: hidden;
}
body {
  margin: 0;
  display: flex;
  flex-direction: column;
  height: 100vh;
  height: 100dvh;
  background: var(--bg);
  color: var(--text);
  font: 16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  -webkit-text-size-adjust: 100%;
}
button, input, textarea {
  font: inherit;
  color: inherit;
}
button {
  cursor: pointer;
}
:focus-visible {
  outline: 2px solid var(--focus);
  outline-offset: 2px;
}
.vh {
  position: absolute !important;
  width: 1px;
  height: 1px;
  overflow: hidden;
  clip: rect(0 0 0 0);
  clip-path: inset(50%);
  white-space: nowrap;
}
[hidden] {
  display: none !important;
}
.ico {
  width: 22px;
  height: 22px;
  fill: none;
  stroke: currentColor;
  stroke-width: 2;
  stroke-linecap: round;
  stroke-linejoin: round;
}
header {
  display: flex;
  align-items: center;
  gap: 10px;
  padding: 8px 12px;
  padding-top: max(8px,env(safe-area-inset-top));
  background: var(--panel);
  border-bottom: 1px solid var(--line);
  min-height: 58px;
}
.brand {
  flex: 1;
  min-width: 0;
}
.brand h1 {
  margin: 0;
  font-size: 18px;
  font-weight: 650;
  letter-spacing: -.01em;
}
.sub {
  display: flex;
  align-items: center;
  gap: 6px;
  font-size: 13px;
  color: var(--muted);
  white-space: nowrap;
  overflow: hidden;
  text-overflow: ellipsis;
}
.dot {
  width: 8px;
  height: 8px;
  border-radius: 50%;
  background: var(--warn);
  flex: none;
}
.on .dot {
  background: var(--ok);
}
.off .dot {
  background: var(--bad);
}
.iconbtn {
  display: inline-flex;
  align-items: center;
  justify-content: center;
  gap: 6px;
  min-width: 44px;
  height: 44px;
  padding: 0 10px;
  border: 0;
  border-radius: 12px;
  background: transparent;
  color: var(--text);
}
.iconbtn:hover {
  background: var(--bg);
}
.count {
  font-size: 14px;
  font-weight: 600;
  color: var(--muted);
}
#banner {
  padding: 8px 14px;
  font-size: 14px;
  text-align: center;
  background: #fff4d6;
  color: #5c3d00;
  border-bottom: 1px solid #f0d68a;
}
@media (prefers-color-scheme: dark) {
  #banner {
    background: #3a2c08;
    color: #ffe3a3;
    border-color: #5c4712;
  }
}
#banner.bad {
  background: #fde4e2;
  color: #7a1710;
  border-color: #f5b5ae;
}
@media (prefers-color-scheme: dark) {
  #banner.bad {
    background: #3d1512;
    color: #ffc9c3;
    border-color: #6b2520;
  }
}
.app {
  flex: 1;
  display: flex;
  min-height: 0;
  position: relative;
}
main {
  flex: 1;
  display: flex;
  flex-direction: column;
  min-width: 0;
}
#scroller {
  flex: 1;
  display: flex;
  flex-direction: column;
  overflow-y: auto;
  overscroll-behavior: contain;
  padding: 10px 12px 6px;
  -webkit-overflow-scrolling: touch;
}
.top {
  display: flex;
  justify-content: center;
  padding: 4px 0 10px;
  margin-top: auto;
  width: 100%;
}
#log {
  width: 100%;
}
.pill {
  border: 1px solid var(--line);
  background: var(--panel);
  color: var(--text);
  border-radius: 999px;
  padding: 0 16px;
  min-height: 40px;
  font-size: 14px;
  box-shadow: var(--shadow);
}
.pill:disabled {
  opacity: .6;
  cursor: default;
}
.edge {
  font-size: 13px;
  color: var(--muted);
}
#empty {
  margin: auto;
  padding: 40px 16px;
  text-align: center;
  color: var(--muted);
}
#log {
  display: flex;
  flex-direction: column;
  gap: 2px;
}
#log, .top, .row, .cw {
  max-width: 900px;
  margin-left: auto;
  margin-right: auto;
}
.m {
  display: flex;
  flex-direction: column;
  align-items: flex-start;
  max-width: min(80%,620px);
  margin-top: 8px;
}
.m.g {
  margin-top: 1px;
}
.m.me {
  align-self: flex-end;
  align-items: flex-end;
}
.who {
  font-size: 13px;
  font-weight: 600;
  color: var(--muted);
  margin: 0 12px 2px;
  display: flex;
  gap: 6px;
  align-items: center;
}
.g .who {
  display: none;
}
.me .who {
  display: none;
}
.me.dm .who {
  display: flex;
}
.tag {
  font-size: 11px;
  font-weight: 700;
  text-transform: uppercase;
  letter-spacing: .04em;
  color: var(--dm);
  background: var(--dm-bg);
  border-radius: 6px;
  padding: 1px 6px;
}
.b {
  background: var(--bubble);
  border-radius: 18px;
  border-top-left-radius: 6px;
  padding: 7px 12px 6px;
  box-shadow: var(--shadow);
  border: 1px solid var(--line);
  min-width: 64px;
  max-width: 100%;
}
.g .b {
  border-top-left-radius: 18px;
}
.me .b {
  background: var(--me);
  color: var(--on-me);
  border-color: transparent;
  border-radius: 18px;
  border-top-right-radius: 6px;
}
.me.g .b {
  border-top-right-radius: 18px;
}
.dm .b {
  border: 2px dashed var(--dm);
}
.me.dm .b {
  border: 2px dashed var(--me-muted);
}
.t {
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  word-break: break-word;
}
.meta {
  display: flex;
  justify-content: flex-end;
  gap: 6px;
  font-size: 11px;
  color: var(--muted);
  margin-top: 2px;
}
.b {
  position: relative;
}
.inl .t::after {
  content: "";
  display: inline-block;
  width: var(--mw,60px);
}
.inl .meta {
  position: absolute;
  right: 12px;
  bottom: 5px;
  margin: 0;
}
.pending .inl .meta, .failed .inl .meta {
  position: static;
}
.pending .inl .t::after, .failed .inl .t::after {
  display: none;
}
.me .meta {
  color: var(--me-muted);
}
.pending .b {
  opacity: .72;
}
.failed .b {
  border: 2px solid var(--bad);
}
.failed .st {
  color: var(--bad);
  font-weight: 700;
}
.me.failed .b {
  background: var(--bubble);
  color: var(--text);
}
.me.failed .meta {
  color: var(--muted);
}
.f {
  display: flex;
  flex-direction: column;
  gap: 6px;
  margin: 2px 0;
}
.f img {
  display: block;
  max-width: min(240px,60vw);
  max-height: 240px;
  border-radius: 12px;
  background: var(--line);
  object-fit: cover;
}
.dl {
  display: flex;
  align-items: center;
  gap: 10px;
  min-height: 44px;
  padding: 6px 10px;
  border-radius: 12px;
  background: var(--bg);
  color: var(--text);
  text-decoration: none;
  max-width: 300px;
}
.me .dl {
  background: rgba(0,0,0,.22);
  color: var(--on-me);
}
.dl .ico {
  flex: none;
}
.fn {
  font-weight: 600;
  overflow-wrap: anywhere;
}
.fs {
  display: block;
  font-size: 12px;
  opacity: .8;
}
.note {
  align-self: center;
  font-size: 12px;
  color: var(--muted);
  margin: 8px 0 2px;
  text-align: center;
}
#typing {
  min-height: 20px;
  padding: 0 16px;
  font-size: 13px;
  color: var(--muted);
  font-style: italic;
}
#uploads {
  display: flex;
  flex-direction: column;
  gap: 6px;
  padding: 0 12px;
}
#uploads:not(:empty) {
  padding-bottom: 8px;
}
.pct {
  flex: none !important;
  width: 3.2em;
  text-align: right;
  font-variant-numeric: tabular-nums;
  color: var(--muted);
}
.up {
  display: flex;
  align-items: center;
  gap: 10px;
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: 12px;
  padding: 6px 6px 6px 12px;
  font-size: 13px;
}
.up span {
  flex: 1;
  min-width: 0;
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
}
.up progress {
  width: 38%;
  height: 8px;
  accent-color: var(--accent);
}
#composer {
  background: var(--panel);
  border-top: 1px solid var(--line);
  padding: 8px 10px;
  padding-bottom: max(8px,env(safe-area-inset-bottom));
}
.chip {
  display: inline-flex;
  align-items: center;
  gap: 4px;
  margin: 0 0 8px 4px;
  padding: 2px 2px 2px 12px;
  border-radius: 999px;
  background: var(--dm-bg);
  color: var(--dm);
  font-size: 14px;
  font-weight: 600;
}
.chip button {
  width: 36px;
  height: 36px;
  border: 0;
  border-radius: 50%;
  background: transparent;
  color: inherit;
  font-size: 20px;
  line-height: 1;
}
.row {
  display: flex;
  align-items: flex-end;
  gap: 6px;
}
#text {
  flex: 1;
  min-height: 44px;
  max-height: 140px;
  resize: none;
  padding: 10px 14px;
  border-radius: 22px;
  border: 1px solid var(--line);
  background: var(--bg);
  outline: none;
}
#text:focus {
  border-color: var(--accent);
}
#send {
  background: var(--accent);
  color: var(--on-accent);
  border-radius: 50%;
  width: 44px;
  padding: 0;
}
#send:hover {
  filter: brightness(1.08);
}
#users {
  display: flex;
  flex-direction: column;
  background: var(--panel);
  border-left: 1px solid var(--line);
  width: 270px;
  flex: none;
}
.uh {
  display: flex;
  align-items: center;
  justify-content: space-between;
  padding: 12px 8px 6px 16px;
}
.uh h2 {
  margin: 0;
  font-size: 15px;
}
#ulist {
  list-style: none;
  margin: 0;
  padding: 4px 8px;
  overflow-y: auto;
  flex: 1;
}
.u {
  display: flex;
  align-items: center;
  gap: 10px;
  width: 100%;
  min-height: 48px;
  padding: 4px 8px;
  border: 0;
  border-radius: 12px;
  background: transparent;
  text-align: left;
  font-size: 15px;
}
button.u:hover, .u.sel {
  background: var(--bg);
}
.av {
  display: inline-flex;
  align-items: center;
  justify-content: center;
  width: 32px;
  height: 32px;
  border-radius: 50%;
  color: #fff;
  font-weight: 700;
  font-size: 14px;
  flex: none;
}
.you {
  color: var(--muted);
  font-size: 13px;
}
.uf {
  padding: 8px 12px 12px;
  border-top: 1px solid var(--line);
}
#backdrop {
  position: fixed;
  inset: 0;
  background: rgba(0,0,0,.4);
  z-index: 19;
}
@media (max-width: 799px) {
  #users {
    position: fixed;
    top: 0;
    right: 0;
    bottom: 0;
    width: min(84vw,320px);
    z-index: 20;
    transform: translateX(100%);
    visibility: hidden;
    transition: transform .2s ease,visibility 0s .2s;
    box-shadow: -8px 0 24px rgba(0,0,0,.18);
    padding-top: env(safe-area-inset-top);
  }
  body.uopen #users {
    transform: none;
    visibility: visible;
    transition: transform .2s ease;
  }
}
@media (min-width: 800px) {
  #usersBtn, #closeUsers, #backdrop {
    display: none !important;
  }
  #scroller {
    padding: 16px 24px 8px;
  }
}
#toast {
  position: fixed;
  left: 50%;
  bottom: 96px;
  transform: translateX(-50%);
  max-width: min(92vw,480px);
  padding: 10px 16px;
  border-radius: 12px;
  background: #1f2430;
  color: #fff;
  font-size: 14px;
  box-shadow: 0 8px 24px rgba(0,0,0,.25);
  z-index: 40;
  text-align: center;
}
#toast:empty {
  display: none;
}
#drop {
  position: fixed;
  inset: 10px;
  border: 3px dashed var(--accent);
  border-radius: 20px;
  background: color-mix(in srgb,var(--panel) 85%,transparent);
  display: flex;
  align-items: center;
  justify-content: center;
  font-size: 20px;
  font-weight: 600;
  z-index: 30;
  pointer-events: none;
}
dialog {
  border: 0;
  border-radius: 20px;
  padding: 24px;
  width: min(92vw,380px);
  background: var(--panel);
  color: var(--text);
  box-shadow: 0 20px 50px rgba(0,0,0,.3);
}
dialog::backdrop {
  background: rgba(10,14,20,.55);
}
dialog h2 {
  margin: 0 0 4px;
  font-size: 20px;
}
dialog p {
  margin: 0 0 16px;
  color: var(--muted);
  font-size: 14px;
}
dialog label {
  display: block;
  font-weight: 600;
  font-size: 14px;
  margin-bottom: 6px;
}
#nickInput {
  width: 100%;
  min-height: 48px;
  padding: 10px 14px;
  border-radius: 12px;
  border: 1px solid var(--line);
  background: var(--bg);
}
#nickErr {
  color: var(--bad);
  min-height: 20px;
  margin: 8px 0 8px;
  font-size: 14px;
}
.primary {
  width: 100%;
  min-height: 48px;
  border: 0;
  border-radius: 12px;
  background: var(--accent);
  color: var(--on-accent);
  font-weight: 650;
  font-size: 16px;
}
/* the room's topic line under its name */
.topic {
  font-size: 13px;
  color: var(--muted);
  white-space: nowrap;
  overflow: hidden;
  text-overflow: ellipsis;
}
/* a removed message keeps its place */
.removed .b {
  background: transparent;
  color: var(--muted);
  border: 1px dashed var(--line);
  font-style: italic;
}
.me.removed .b {
  color: var(--muted);
}
.ed {
  font-style: italic;
}
.me .ed, .me .meta {
  color: var(--me-muted);
}
.me.removed .meta {
  color: var(--muted);
}
/* the actions of one's own message: on hover or focus; always on touch screens */
.m {
  position: relative;
}
.acts {
  position: absolute;
  top: 2px;
  left: -34px;
}
.actbtn {
  width: 30px;
  height: 30px;
  border-radius: 15px;
  border: 1px solid var(--line);
  background: var(--panel);
  color: var(--text);
  font: inherit;
  cursor: pointer;
  opacity: 0;
}
.m:hover .actbtn, .actbtn:focus, .actbtn[aria-expanded="true"] {
  opacity: 1;
}
@media (hover: none) {
  .actbtn {
    opacity: .7;
  }
}
.actmenu {
  position: absolute;
  top: 32px;
  right: 0;
  z-index: 5;
  display: flex;
  flex-direction: column;
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: 10px;
  box-shadow: 0 4px 16px rgba(0,0,0,.18);
  overflow: hidden;
}
.actmenu[hidden] {
  display: none;
}
.actmenu button {
  font: inherit;
  padding: 8px 16px;
  border: 0;
  background: none;
  color: var(--text);
  text-align: left;
  cursor: pointer;
}
.actmenu button:hover, .actmenu button:focus {
  background: var(--bg);
}
.actmenu .danger {
  color: var(--bad);
}
.editbox {
  display: flex;
  flex-wrap: wrap;
  gap: 6px;
  margin-top: 6px;
}
.editbox textarea {
  flex: 1 1 100%;
  font: inherit;
  color: var(--text);
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: 8px;
  padding: 6px 8px;
}
.editbox button {
  font: inherit;
  font-size: 14px;
  padding: 4px 12px;
  border-radius: 8px;
  border: 1px solid var(--line);
  background: var(--panel);
  color: var(--text);
  cursor: pointer;
}
#composer.muted textarea {
  font-style: italic;
}
#banner .pill {
  margin-left: 8px;
}
/* links in messages: underlined, so they never depend on colour alone */
.ln {
  color: var(--accent);
  text-decoration: underline;
  overflow-wrap: anywhere;
}
.me .ln {
  color: inherit;
}
/* @mentions: the nick marked; a message that mentions me stands out */
.at {
  font-weight: 650;
}
.atme {
  background: var(--men-mark);
  color: var(--text);
  border-radius: 4px;
  padding: 0 2px;
}
.me .atme {
  color: var(--text);
}
.mention .b {
  background: var(--men-bg);
  border-color: var(--men-line);
  border-left-width: 4px;
}
:root {
  --men-bg: #fff4d6;
  --men-line: #d99b00;
  --men-mark: #ffe08a;
  --sel-bg: #dbe6ff;
  --sel-line: #1f5fd6;
}
@media (prefers-color-scheme: dark) {
  :root {
    --men-bg: #33290c;
    --men-line: #b88700;
    --men-mark: #5c4712;
    --sel-bg: #22335c;
    --sel-line: #7aa2ff;
  }
}
/* the quote of the message answered, in the bubble and above the composer */
.q, .rq {
  display: flex;
  flex-direction: column;
  align-items: flex-start;
  width: 100%;
  min-width: 0;
  margin: 2px 0 4px;
  padding: 4px 8px;
  border: 0;
  border-left: 3px solid var(--accent);
  border-radius: 8px;
  background: var(--bg);
  color: var(--text);
  text-align: left;
  font-size: 14px;
}
.q {
  min-height: 40px;
  max-width: 100%;
}
.me .q {
  background: rgba(0,0,0,.22);
  color: var(--on-me);
  border-left-color: var(--on-me);
}
.qf, .rqf {
  font-weight: 650;
  font-size: 13px;
}
.qt, .rqx {
  display: -webkit-box;
  -webkit-line-clamp: 2;
  -webkit-box-orient: vertical;
  overflow: hidden;
  overflow-wrap: anywhere;
}
.qdel .qt {
  font-style: italic;
}
.rq {
  flex-direction: row;
  align-items: center;
  margin: 0 0 8px;
  padding: 2px 2px 2px 10px;
}
.rqt {
  flex: 1;
  min-width: 0;
  display: flex;
  flex-direction: column;
}
/* reactions under the bubble */
.rx {
  display: flex;
  flex-wrap: wrap;
  gap: 4px;
  margin: 3px 8px 0;
}
.rc {
  display: inline-flex;
  align-items: center;
  gap: 4px;
  min-height: 32px;
  min-width: 44px;
  padding: 2px 10px;
  border-radius: 999px;
  border: 1px solid var(--line);
  background: var(--panel);
  color: var(--text);
  font-size: 14px;
}
.rc.own {
  background: var(--sel-bg);
  border-color: var(--sel-line);
  font-weight: 650;
}
.rn {
  font-variant-numeric: tabular-nums;
}
.picker {
  position: absolute;
  top: 32px;
  right: 0;
  z-index: 6;
  display: flex;
  gap: 2px;
  padding: 4px;
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: 999px;
  box-shadow: 0 4px 16px rgba(0,0,0,.18);
}
.picker button {
  width: 40px;
  height: 40px;
  border: 0;
  border-radius: 50%;
  background: none;
  font-size: 22px;
  line-height: 1;
}
.picker button:hover, .picker button:focus, .picker .own {
  background: var(--sel-bg);
}
/* someone else's message: the menu on the right of the bubble */
.m:not(.me) .acts {
  left: auto;
  right: -34px;
}
.m:not(.me) .actmenu, .m:not(.me) .picker {
  right: auto;
  left: 0;
}
.m:not(.me) .picker {
  left: auto;
  right: -8px;
}
/* a message shown from a search result or a quote */
.m.hl .b {
  box-shadow: 0 0 0 3px var(--warn);
}
/* day separators */
.day {
  align-self: center;
  margin: 14px 0 4px;
  padding: 2px 12px;
  border-radius: 999px;
  background: var(--panel);
  border: 1px solid var(--line);
  color: var(--muted);
  font-size: 12px;
  font-weight: 600;
}
.gap {
  align-self: center;
  margin: 10px 0;
}
/* jump to latest */
main {
  position: relative;
}
#jump {
  position: absolute;
  right: 14px;
  bottom: 100px;
  z-index: 4;
  display: inline-flex;
  align-items: center;
  gap: 8px;
}
.jc {
  min-width: 22px;
  padding: 0 6px;
  border-radius: 11px;
  background: var(--accent);
  color: var(--on-accent);
  font-weight: 700;
  font-size: 13px;
  text-align: center;
}
.jc:empty {
  display: none;
}
/* the mute toggle */
#soundBtn .off, #soundBtn.muted .on {
  display: none;
}
#soundBtn.muted .off {
  display: inline;
}
#soundBtn.muted {
  color: var(--muted);
}
/* mention suggestions above the composer */
#atList {
  display: flex;
  flex-wrap: wrap;
  gap: 6px;
  margin-bottom: 8px;
}
.atopt {
  min-height: 40px;
  padding: 0 14px;
  border-radius: 999px;
  border: 1px solid var(--line);
  background: var(--bg);
  color: var(--text);
  font-size: 15px;
}
.atopt.sel {
  background: var(--sel-bg);
  border-color: var(--sel-line);
}
/* the search dialog */
#searchDlg {
  width: min(94vw,560px);
  max-height: 88vh;
  padding: 16px 18px 18px;
}
.dh {
  display: flex;
  align-items: center;
  justify-content: space-between;
  margin-bottom: 8px;
}
#searchInput, #searchFrom {
  width: 100%;
  min-height: 48px;
  padding: 10px 14px;
  margin-bottom: 12px;
  border-radius: 12px;
  border: 1px solid var(--line);
  background: var(--bg);
  color: var(--text);
  font: inherit;
}
#searchNote {
  margin: 12px 0 6px;
  min-height: 20px;
}
#searchResults {
  list-style: none;
  margin: 0 0 10px;
  padding: 0;
  display: flex;
  flex-direction: column;
  gap: 6px;
}
.sr {
  display: flex;
  flex-direction: column;
  gap: 2px;
  width: 100%;
  min-height: 48px;
  padding: 8px 12px;
  border: 1px solid var(--line);
  border-radius: 12px;
  background: var(--bg);
  color: var(--text);
  text-align: left;
}
.srh {
  display: flex;
  gap: 8px;
  align-items: center;
  font-size: 13px;
  color: var(--muted);
}
.srf {
  font-weight: 650;
  color: var(--text);
}
.srt {
  overflow-wrap: anywhere;
  display: -webkit-box;
  -webkit-line-clamp: 3;
  -webkit-box-orient: vertical;
  overflow: hidden;
}
/* the image viewer */
#viewer {
  width: 100vw;
  max-width: 100vw;
  height: 100vh;
  height: 100dvh;
  max-height: 100dvh;
  margin: 0;
  padding: 0;
  border-radius: 0;
  background: #000;
  color: #fff;
  overflow: hidden;
}
#viewer::backdrop {
  background: #000;
}
#viewer[open] {
  display: flex;
  flex-direction: column;
}
.vbar {
  display: flex;
  align-items: center;
  gap: 10px;
  padding: 8px 10px;
  padding-top: max(8px,env(safe-area-inset-top));
  background: #111;
  font-size: 14px;
}
.vcount {
  flex: none;
  color: #ddd;
}
.vname {
  flex: 1;
  min-width: 0;
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
}
.vbtn {
  display: inline-flex;
  align-items: center;
  min-height: 44px;
  padding: 0 14px;
  border: 1px solid #666;
  border-radius: 12px;
  background: #222;
  color: #fff;
  text-decoration: none;
  font-size: 15px;
}
.vstage {
  flex: 1;
  min-height: 0;
  display: flex;
  align-items: center;
  justify-content: center;
  touch-action: pan-x pan-y pinch-zoom;
}
.vstage img {
  max-width: 100%;
  max-height: 100%;
  object-fit: contain;
  touch-action: pinch-zoom;
}
.vnav {
  position: absolute;
  top: 50%;
  width: 48px;
  height: 64px;
  margin-top: -32px;
  border: 0;
  border-radius: 12px;
  background: rgba(34,34,34,.85);
  color: #fff;
  font-size: 32px;
  line-height: 1;
}
.vnav:disabled {
  visibility: hidden;
}
.vprev {
  left: 6px;
}
.vnext {
  right: 6px;
}
#viewer :focus-visible {
  outline-color: #9bbcff;
}
.chk {
  display: flex;
  align-items: center;
  gap: 10px;
  min-height: 44px;
  margin: -4px 0 8px;
  font-weight: 500;
}
.chk input {
  width: 22px;
  height: 22px;
  margin: 0;
  accent-color: var(--accent);
}
</style>
</head>
<body>
<header>
 <div class="brand"><h1 id="roomName">LAN Chat</h1><div class="topic" id="topic" hidden></div><div class="sub" id="sub"><span class="dot" aria-hidden="true"></span><span id="subText">Connecting…</span></div></div>
 <button class="iconbtn" id="searchBtn" type="button" aria-label="Search" aria-haspopup="dialog"><svg class="ico" viewBox="0 0 24 24" aria-hidden="true"><circle cx="10.5" cy="10.5" r="6.5"/><path d="M15.5 15.5L21 21"/></svg></button>
 <button class="iconbtn" id="soundBtn" type="button" aria-label="Sound" aria-pressed="true" title="Sound and vibration for new messages while the page is in the background"><svg class="ico" viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z"/><path class="on" d="M15.5 9a4 4 0 0 1 0 6M18 6.5a7.5 7.5 0 0 1 0 11"/><path class="off" d="M16 9.5l5 5M21 9.5l-5 5"/></svg></button>
 <button class="iconbtn" id="usersBtn" type="button" aria-label="Users" aria-controls="users" aria-expanded="false"><svg class="ico" viewBox="0 0 24 24" aria-hidden="true"><circle cx="9" cy="8" r="3.5"/><path d="M2.5 20c.6-3.6 3.2-5.5 6.5-5.5s5.9 1.9 6.5 5.5"/><path d="M16 4.8a3.5 3.5 0 0 1 0 6.4M18 14.8c2 .8 3.2 2.5 3.5 5.2"/></svg><span class="count" id="ucount" aria-hidden="true">0</span></button>
</header>
<div id="banner" role="status" hidden></div>
<div class="app">
 <main>
  <div id="scroller">
   <div class="top"><button class="pill" id="older" type="button" hidden>Load older messages</button><span class="edge" id="edge" hidden>Beginning of the conversation</span></div>
   <div id="log" role="log" aria-live="polite" aria-label="Conversation"></div>
   <div id="empty" hidden>No messages yet. Say hi!</div>
  </div>
  <button class="pill" id="jump" type="button" hidden>Jump to latest<span class="jc" id="jumpCount"></span></button>
  <div id="typing" aria-live="polite"></div>
  <div id="uploads"></div>
  <form id="composer" autocomplete="off">
   <div class="cw" id="dmChip" hidden><span class="chip"><span id="dmText"></span><button type="button" id="dmClose" aria-label="Stop private chat">×</button></span></div>
   <div class="cw" id="replyChip" hidden><div class="rq"><div class="rqt"><span class="rqf" id="replyFrom"></span><span class="rqx" id="replyText"></span></div><button type="button" class="iconbtn" id="replyClose" aria-label="Cancel reply">×</button></div></div>
   <div class="cw" id="atList" role="group" aria-label="Mention suggestions" hidden></div>
   <div class="row">
    <button class="iconbtn" type="button" id="attach" aria-label="Attach file"><svg class="ico" viewBox="0 0 24 24" aria-hidden="true"><path d="M21 11.5l-8.6 8.6a5.5 5.5 0 0 1-7.8-7.8l8.9-8.9a3.7 3.7 0 0 1 5.2 5.2l-8.9 8.9a1.8 1.8 0 0 1-2.6-2.6l8.2-8.2"/></svg></button>
    <input type="file" id="file" class="vh" multiple tabindex="-1" aria-hidden="true" aria-label="File to share">
    <textarea id="text" rows="1" aria-label="Message" placeholder="Message" enterkeyhint="send"></textarea>
    <button class="iconbtn" type="submit" id="send" aria-label="Send"><svg class="ico" viewBox="0 0 24 24" aria-hidden="true"><path d="M5 12h13M12 5l7 7-7 7"/></svg></button>
   </div>
  </form>
 </main>
 <div id="backdrop" hidden></div>
 <aside id="users" aria-label="Online users">
  <div class="uh"><h2 id="uhead">Online</h2><button class="iconbtn" type="button" id="closeUsers" aria-label="Close users">×</button></div>
  <ul id="ulist"></ul>
  <div class="uf"><button class="pill" type="button" id="renick">Change nickname</button></div>
 </aside>
</div>
<div id="toast" role="alert"></div>
<div id="drop" hidden>Drop files to share</div>
<dialog id="nickDlg" aria-labelledby="nickTitle">
 <form id="nickForm">
  <h2 id="nickTitle">Join LAN Chat</h2>
  <p>Pick the name others will see.</p>
  <label for="nickInput">Nickname</label>
  <input id="nickInput" maxlength="32" autocomplete="nickname" autocapitalize="off" spellcheck="false" enterkeyhint="go">
  <div id="nickErr" role="alert"></div>
  <button class="primary" type="submit">Join</button>
 </form>
</dialog>
<dialog id="searchDlg" aria-labelledby="searchTitle">
 <div class="dh"><h2 id="searchTitle">Search messages</h2><button class="iconbtn" type="button" id="searchClose" aria-label="Close search">×</button></div>
 <form id="searchForm" role="search" aria-label="Messages">
  <label for="searchInput">Search for</label>
  <input id="searchInput" maxlength="200" autocomplete="off" autocapitalize="off" enterkeyhint="search">
  <label for="searchFrom">From</label>
  <select id="searchFrom"><option value="">Anyone</option></select>
  <label class="chk" id="searchWithRow" hidden><input type="checkbox" id="searchWith"><span id="searchWithText"></span></label>
  <button class="primary" type="submit">Search</button>
 </form>
 <p id="searchNote" aria-live="polite"></p>
 <ul id="searchResults" aria-label="Search results"></ul>
 <button class="pill" type="button" id="searchMore" hidden>More results</button>
</dialog>
<dialog id="viewer" aria-label="Image viewer">
 <div class="vbar"><span class="vcount" id="vCount"></span><span class="vname" id="vName"></span><a class="vbtn" id="vDl" href="#" download>Download</a><button class="vbtn" type="button" id="vClose">Close</button></div>
 <div class="vstage" id="vStage"><img id="vImg" alt=""></div>
 <button class="vnav vprev" type="button" id="vPrev" aria-label="Previous image">‹</button>
 <button class="vnav vnext" type="button" id="vNext" aria-label="Next image">›</button>
</dialog>
<script>
(function () {
'use strict';
// Limits and timings (PROTOCOL.md sections 3-5).
var TITLE = 'LAN Chat', TEXT_MAX = 16384, PAGE = 50, GAP_PAGE = 200;
var BACKOFF_MIN = 500, BACKOFF_MAX = 10000;       // reconnect delay range, ms
// Liveness follows the server's --ping-after and --idle-timeout, which welcome.limits
// announces in seconds; these are the server's defaults, used until the first welcome.
var PING_AFTER_S = 30, IDLE_TIMEOUT_S = 90;
var QUIET_MARGIN_MS = 5000;  // a live server pings a silent client after ping_after: past that, ask
var DEAD_MARGIN_MS = 10000;  // past idle_timeout the server has closed a silent client: link is dead
var NICK_MARGIN_MS = 5000;   // the server keeps a dead connection's nick until its idle_timeout
var TYPING_SEND_MS = 3000, TYPING_SHOW_MS = 4000, GROUP_MS = 300000, TOAST_MS = 4500;
var MAX_PARALLEL_UPLOADS = 2;
var PROBE_MS = 6000;       // a tab back in view must hear from the server within this
var QUOTE_MAX = 200;       // a reply's quote: the first characters of the original (section 12)
var AROUND = 10;           // a search result opens with this many neighbours on each side
var SEARCH_PAGE = 20, BEEP_GAP_MS = 1500, FLASH_MS = 2500, SWIPE_PX = 50;
var REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

function $(id) { return document.getElementById(id); }
var store = {
  get: function (k) { try { return localStorage.getItem('lanchat.' + k); } catch (e) { return null; } },
  set: function (k, v) { try { localStorage.setItem('lanchat.' + k, v); } catch (e) {} }
};
function fold(s) { return String(s).toUpperCase().toLowerCase(); }
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;   // data is always text, never markup
  return e;
}
function newCid() {
  var a = new Uint8Array(12); crypto.getRandomValues(a);
  return 'w-' + Array.prototype.map.call(a, function (b) { return (b + 256).toString(16).slice(1); }).join('');
}
function serverSeconds(name, fallback) {
  var v = S.limits[name];
  return typeof v === 'number' && v > 0 ? v : fallback;
}
function pingAfterMs() { return 1000 * serverSeconds('ping_after', PING_AFTER_S); }
function idleTimeoutMs() { return 1000 * serverSeconds('idle_timeout', IDLE_TIMEOUT_S); }
function utf8Len(s) { return new TextEncoder().encode(s).length; }
function humanSize(n) {
  var u = ['B', 'KB', 'MB', 'GB', 'TB'], i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i && n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
}
function fmtTime(ts) {
  var d = new Date(ts); if (isNaN(d)) return '';
  var t = d.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
  if (d.toDateString() === new Date().toDateString()) return t;
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ', ' + t;
}
function avatarColor(nick) {
  var h = 0; for (var i = 0; i < nick.length; i++) h = (h * 31 + nick.charCodeAt(i)) % 360;
  return 'hsl(' + h + ',55%,42%)';
}

// ---- token from the URL fragment (#k=...), never sent in a request line ----
function readToken() {
  var frag = new URLSearchParams(location.hash.slice(1));
  if (!frag.has('k')) return false;
  store.set('token', frag.get('k'));
  history.replaceState(null, '', location.pathname + location.search);
  return true;
}
readToken();
var token = store.get('token') || '';
// This browser's device key: the nick it claims belongs to it (docs/PROTOCOL.md, "Devices and
// nicks"). The server issues one on the first welcome; it never goes into a URL.
var device = store.get('device') || '';

// ---- state ----
var S = {
  ws: null, welcomed: false, everWelcomed: false, nick: store.get('nick') || '', session: '', uid: null, linkGen: 0,
  lastId: 0, lastRx: 0, gapSince: 0, sentSince: 0, attempt: 0, timer: 0, idle: 0, quiet: 0, stopped: false,
  nickRetryUntil: 0, users: new Map(), online: 0, to: '', hasOlder: false, hist: null,
  byId: new Map(), unread: 0, unreadAt: 0, unreadDm: 0, typers: new Map(), lastTyping: 0, limits: {},
  reply: null, search: null, pendingJump: 0, audio: null, gestured: false, lastBeep: 0,
  uidNick: new Map(), atSel: 0
};
var outbox = [];
try { outbox = JSON.parse(store.get('outbox') || '[]').filter(function (o) { return o && o.cid && o.text; }); } catch (e) {}
function saveOutbox() { store.set('outbox', JSON.stringify(outbox)); }
function outboxIndex(cid) { for (var i = 0; i < outbox.length; i++) if (outbox[i].cid === cid) return i; return -1; }

var scroller = $('scroller'), log = $('log'), ta = $('text');

// ---- connection ----
function wsUrl() { return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws'; }
function raw(obj) {
  if (S.ws && S.ws.readyState === 1) { S.ws.send(JSON.stringify(obj)); return true; }
  return false;
}
function connect() {
  clearTimeout(S.timer); S.timer = 0;
  if (S.ws || S.stopped) return;
  setConn(false);
  var ws;
  try { ws = new WebSocket(wsUrl()); } catch (e) { retry(); return; }
  S.ws = ws; S.welcomed = false;
  ws.onopen = function () { touch(); sendHello(); };
  ws.onmessage = function (e) {
    if (S.ws !== ws) return;
    touch();
    var m; try { m = JSON.parse(e.data); } catch (err) { return; }
    if (m && typeof m.type === 'string' && H.hasOwnProperty(m.type)) H[m.type](m);
  };
  ws.onclose = function (e) {
    if (S.ws !== ws) return;
    lost();
    if (e.code === 1008 && !S.everWelcomed && !S.stopped) {
      setBanner('The server refused the connection (policy). Retrying…', true);
    }
    retry();
  };
}
// Forget the current socket (dead, replaced, or nick change) and mark everything offline.
function lost() {
  var ws = S.ws; S.ws = null;
  if (ws) { ws.onclose = ws.onmessage = ws.onopen = null; try { ws.close(); } catch (e) {} }
  if (S.welcomed) S.nickRetryUntil = Date.now() + idleTimeoutMs() + NICK_MARGIN_MS;
  S.welcomed = false; S.hist = null; clearTimeout(S.idle); clearTimeout(S.quiet);
  setConn(false);
  markPending();
  if (!S.stopped) setBanner(S.everWelcomed ? 'Reconnecting…' : 'Connecting…');
}
function retry() {
  if (S.stopped || S.timer) return;
  var base = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, S.attempt++));
  var delay = Math.max(BACKOFF_MIN, Math.min(BACKOFF_MAX, base * (0.75 + Math.random() * 0.5)));
  S.timer = setTimeout(function () { S.timer = 0; connect(); }, delay);
}
function touch() {
  S.lastRx = Date.now();
  clearTimeout(S.idle); clearTimeout(S.quiet);
  // Frames the server does not answer (typing) keep it from pinging us: ping it instead.
  S.quiet = setTimeout(function () { raw({ type: 'ping' }); }, pingAfterMs() + QUIET_MARGIN_MS);
  S.idle = setTimeout(function () { lost(); retry(); }, idleTimeoutMs() + DEAD_MARGIN_MS);
}
function sendHello() {
  if (!S.nick) { askNick(''); return; }
  var h = { type: 'hello', nick: S.nick, client: 'web/1', proto: 1 };
  if (device) h.device = device;  // also takes our nick over from a connection that died
  if (token) h.token = token;
  // An unfinished gap fill resumes from its own start, so nothing is skipped.
  S.sentSince = S.gapSince || S.lastId;
  if (S.sentSince > 0) h.since = S.sentSince;
  raw(h);
}
// The pairing link opened in a tab already showing the page changes only the fragment.
window.addEventListener('hashchange', function () {
  if (!readToken()) return;
  token = store.get('token') || '';
  if (!S.welcomed) { S.stopped = false; lost(); S.attempt = 0; connect(); }
});
window.addEventListener('online', function () { if (!S.ws) { S.attempt = 0; connect(); } });

// ---- server messages ----
var H = {
  welcome: function (m) {
    var resume = S.sentSince > 0;
    S.welcomed = true; S.everWelcomed = true; S.attempt = 0;
    S.nick = m.nick; store.set('nick', m.nick);
    S.session = m.session || ''; S.limits = m.limits || {};
    if (typeof m.uid === 'number') S.uid = m.uid;
    if (m.device && m.device !== device) { device = m.device; store.set('device', device); }
    applyRoom(m.room);
    setMuted(!!m.muted, 'The organiser muted you: you can read, but not post or share files.');
    touch();   // re-arm the liveness timers with the server's own timings
    S.users = new Map();
    (m.users || []).forEach(function (n) { S.users.set(fold(n), n); });
    S.online = typeof m.online === 'number' ? m.online : S.users.size;
    renderUsers();
    var hist = Array.isArray(m.history) ? m.history : [];
    var atBottom = nearBottom(), fresh = [];
    hist.forEach(function (x) { if (addMsg(x, false)) fresh.push(x); });
    if (resume) attend(fresh);   // missed while away: as new as live messages
    redays();
    if (!resume) S.hasOlder = !!m.has_more;
    if (resume && m.has_more && hist.length) {
      S.gapSince = S.sentSince;
      askHistory({ kind: 'gap', before: hist[0].id, after: S.sentSince });
    } else S.gapSince = 0;
    sessionCookie();
    setConn(true); setBanner('');
    updateChrome();
    flushOutbox();
    if (!resume || atBottom) toBottom();
    updateJump();
  },
  msg: function (m) {
    var atBottom = nearBottom();
    var added = addMsg(m, true);
    if (m.from) { S.typers.delete(fold(m.from)); renderTyping(); }
    if (added) { redays(); attend([m]); }
    if (added && m.from && !S.users.has(fold(m.from))) { S.users.set(fold(m.from), m.from); renderUsers(); }
    if (atBottom || isMine(m)) toBottom();
    updateJump();
  },
  history: function (m) {
    var req = S.hist; S.hist = null;
    var msgs = Array.isArray(m.messages) ? m.messages : [];
    var h0 = scroller.scrollHeight, top0 = scroller.scrollTop, fresh = [];
    msgs.forEach(function (x) { if (addMsg(x, false)) fresh.push(x); });
    redays();
    var kind = req ? req.kind : 'older';
    if (kind === 'gap') {
      attend(fresh);
      if (m.has_more && msgs.length) askHistory({ kind: 'gap', before: msgs[0].id, after: req.after });
      else S.gapSince = 0;
    } else if (kind === 'around') {
      // A search result: the message and the ones before it, then those after it.
      if (req.first === 0 || req.target < req.first) S.hasOlder = !!m.has_more && msgs.length > 0;
      askHistory({ kind: 'after', after: req.target, before: req.target + AROUND + 1, limit: AROUND,
                   target: req.target, first: req.first });
    } else if (kind === 'after') {
      // What lies between these and the messages already shown comes with "Load newer messages".
      if (req.first > req.before) addGap(req.before - 0.5, req.target + AROUND, req.first);
      showMessage(req.target, true);
    } else if (kind === 'fill') {
      var gap = req.gap;
      if (m.has_more && msgs.length && gap.isConnected) {
        gap.dataset.before = msgs[0].id;
        askHistory({ kind: 'fill', gap: gap, after: +gap.dataset.after, before: msgs[0].id, limit: GAP_PAGE });
      } else { gap.remove(); redays(); }
      scroller.scrollTop = top0;
    } else {
      S.hasOlder = !!m.has_more && msgs.length > 0;
      scroller.scrollTop = top0 + (scroller.scrollHeight - h0);   // keep the view still
    }
    updateChrome(); updateJump();
    if (!S.hist && S.pendingJump) { var j = S.pendingJump; S.pendingJump = 0; showMessage(j); }
  },
  join: function (m) {
    if (!m.nick) return;
    var k = fold(m.nick);
    if (k === fold(S.nick)) return;          // the joiner gets its own join too
    if (!S.users.has(k)) { S.users.set(k, m.nick); S.online++; }
    renderUsers(); note(m.nick + ' joined');
  },
  leave: function (m) {
    if (!m.nick) return;
    var k = fold(m.nick);
    if (S.users.delete(k)) S.online = Math.max(0, S.online - 1);
    S.typers.delete(k); renderTyping();
    renderUsers(); note(m.nick + ' left');
  },
  typing: function (m) {
    if (!m.from || fold(m.from) === fold(S.nick)) return;
    var k = fold(m.from), old = S.typers.get(k);
    if (old) clearTimeout(old.t);
    S.typers.set(k, { nick: m.from, t: setTimeout(function () { S.typers.delete(k); renderTyping(); }, TYPING_SHOW_MS) });
    renderTyping();
  },
  change: function (m) { applyChange(m); },
  room: function (m) { applyRoom(m); },
  notice: function (m) {
    if (m.code === 'muted' || m.code === 'unmuted') setMuted(m.code === 'muted', m.message || '');
    if (m.message) toast(m.message);
  },
  ping: function (m) { var p = { type: 'pong' }; if (m.t !== undefined) p.t = m.t; raw(p); },
  pong: function () {},
  bye: function (m) {
    if (m.reason === 'replaced') {
      // The same nick was opened on another tab or device of ours: do not fight over it.
      S.stopped = true; lost();
      setBanner('This chat was opened in another tab or window. Reload the page to use it here.', true);
      return;
    }
    if (m.reason === 'kicked' || m.reason === 'banned') {
      // Removed by the organiser: say why; a kicked user may come back by hand, never by itself.
      S.stopped = true; lost();
      setBanner(m.message || (m.reason === 'kicked' ? 'The organiser removed you from the chat.'
        : 'The organiser banned this device.'), true, m.reason === 'kicked' ? 'Join again' : '');
      return;
    }
    setBanner('The server is restarting. Reconnecting…');
  },
  error: onError
};

function onError(m) {
  var code = m.code || '', text = m.message || code;
  if (code === 'banned') {
    S.stopped = true; lost(); setBanner(text, true); return;
  }
  if (!S.welcomed && (code === 'nick_taken' || code === 'nick_invalid' || code === 'nick_owned' ||
                      code === 'room_locked')) {
    if (code === 'nick_taken' && S.everWelcomed && Date.now() < S.nickRetryUntil) {
      // Probably our own previous connection, not yet timed out on the server: wait for it.
      setBanner('Reconnecting… (waiting for the previous connection to expire)');
      lost(); retry(); return;
    }
    askNick(text); return;
  }
  if (code === 'auth_failed' || code === 'proto_unsupported') {
    S.stopped = true;
    setBanner(code === 'auth_failed'
      ? 'Access denied: open the full link shown by the server (it ends with #k=…).'
      : 'This server speaks another protocol version. Reload the page.', true);
    lost(); return;
  }
  if (S.search && m.ref && m.ref === S.search.cid) {   // shown in the search dialog
    $('searchNote').textContent = text; S.search = null; return;
  }
  var i = m.ref ? outboxIndex(m.ref) : -1;
  if (i >= 0) {
    if (code === 'rate_limited') {
      var item = outbox[i];
      setTimeout(function () { if (outboxIndex(item.cid) >= 0 && S.welcomed) sendItem(item); }, 1500);
    } else {
      outbox.splice(i, 1); saveOutbox();
      var p = log.querySelector('.pending[data-cid="' + cssEsc(m.ref) + '"]');
      if (p) { p.classList.remove('pending'); p.classList.add('failed'); setStatus(p, 'Not sent: ' + text); }
    }
  }
  if (code === 'rate_limited' && S.hist) {
    var req = S.hist; S.hist = null;
    setTimeout(function () { if (S.welcomed && !S.hist) askHistory(req); }, 1500);
  }
  toast(text);
}
function cssEsc(s) { return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/["\\]/g, '_'); }

function askHistory(req) {
  if (!S.welcomed || S.hist) return;
  var h = { type: 'history', before: req.before, limit: req.limit || (req.kind === 'gap' ? GAP_PAGE : PAGE) };
  if (req.after) h.after = req.after;
  S.hist = req;
  raw(h);
  updateChrome();
}
// Messages loaded around a search result may leave a hole below them: a button fills it.
function addGap(key, after, before) {
  var gap = el('div', 'gap'), b = el('button', 'pill', 'Load newer messages'); b.type = 'button';
  gap.dataset.after = after; gap.dataset.before = before;
  b.addEventListener('click', function () {
    if (!S.welcomed || S.hist) return;
    b.disabled = true;
    askHistory({ kind: 'fill', gap: gap, after: +gap.dataset.after, before: +gap.dataset.before, limit: GAP_PAGE });
  });
  gap.appendChild(b);
  place(gap, key);
}
// Show a message in the conversation, loading it with its neighbours when it is not shown.
function showMessage(id, loaded) {
  var node = S.byId.get(id);
  if (node) {
    node.scrollIntoView({ block: 'center' });
    log.querySelectorAll('.m.hl').forEach(function (n) { n.classList.remove('hl'); });
    node.classList.add('hl');
    setTimeout(function () { node.classList.remove('hl'); }, FLASH_MS);
    updateJump();
    return;
  }
  if (loaded) { toast('That message is no longer in the history.'); return; }
  if (!S.welcomed) { toast('Not connected: try again once back online.'); return; }
  if (S.hist) { S.pendingJump = id; return; }
  var first = log.querySelector('.m[data-id]');
  askHistory({ kind: 'around', before: id + 1, limit: AROUND, target: id, first: first ? +first.dataset.id : 0 });
}
function loadOlder() {
  var first = log.querySelector('.m[data-id]');
  if (!first || !S.hasOlder || S.hist || !S.welcomed) return;
  askHistory({ kind: 'older', before: +first.dataset.id });
}

// ---- rendering messages ----
// Our own messages are those of our identity (uid), not of whoever had our nick before.
function isMine(m) { return S.uid !== null && m.uid === S.uid; }
function nearBottom() { return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120; }
function toBottom() { scroller.scrollTop = scroller.scrollHeight; }

// Elements in #log are ordered by data-k: message id; notes sit after the newest id;
// pending (unacknowledged) messages always last.
function place(node, key) {
  node.dataset.k = key;
  var c = log.lastElementChild;
  while (c && +c.dataset.k > key) c = c.previousElementSibling;
  log.insertBefore(node, c ? c.nextSibling : log.firstChild);
  regroup(node); regroup(node.nextElementSibling);
}
function regroup(node) {
  if (!node || !node.classList.contains('m')) return;
  var p = node.previousElementSibling;
  var same = p && p.classList.contains('m') && p.dataset.from === node.dataset.from &&
    p.dataset.to === node.dataset.to && Math.abs((+node.dataset.ts || 0) - (+p.dataset.ts || 0)) < GROUP_MS;
  node.classList.toggle('g', !!same);
}
function buildMsg(m, mine) {
  var box = el('div', 'm' + (mine ? ' me' : '') + (m.to ? ' dm' : '') + (!mine && mentionsMe(m) ? ' mention' : ''));
  box.dataset.from = fold(m.from || '');
  box.dataset.to = m.to ? fold(m.to) : '';
  box.dataset.ts = Date.parse(m.ts) || Date.now();
  if (m.cid) box.dataset.cid = m.cid;
  var who = el('div', 'who');
  if (mine) who.appendChild(el('span', null, 'To ' + m.to));
  else who.appendChild(el('span', null, m.from || '?'));
  if (m.to) who.appendChild(el('span', 'tag', 'private'));
  box.appendChild(who);
  var b = el('div', 'b');
  if (mine) b.appendChild(el('span', 'vh', 'You: '));
  if (m.deleted) {
    box.classList.add('removed');
    b.appendChild(el('div', 't', m.deleted === 'operator' ? 'Message removed by the organiser'
                                                          : 'Message removed'));
  } else {
    if (m.reply_to && typeof m.reply_to === 'object') b.appendChild(buildQuote(m.reply_to));
    if (m.text) b.appendChild(richText(m.text, m.mentions));
    if (m.file && typeof m.file === 'object') b.appendChild(buildFile(m.file));
  }
  var meta = el('div', 'meta');
  if (m.edited && !m.deleted) {
    var ed = el('span', 'ed', 'edited'); ed.title = 'Edited ' + new Date(m.edited).toLocaleString();
    meta.appendChild(ed);
  }
  var tm = el('time', null, m.ts ? fmtTime(m.ts) : '');
  if (m.ts) { tm.dateTime = m.ts; tm.title = new Date(m.ts).toLocaleString(); }
  meta.appendChild(tm);
  meta.appendChild(el('span', 'st'));
  b.appendChild(meta);
  if (typeof m.id === 'number' && !m.deleted) box.appendChild(buildActions(m, mine));
  if (m.text && !m.file && !m.reply_to) {   // short text: the time sits on the last line, chat-app style
    b.classList.add('inl');
    b.style.setProperty('--mw', (tm.textContent.length * 6.5 + 16) + 'px');
  }
  box.appendChild(b);
  if (!m.deleted) box.appendChild(buildReactions(m));
  return box;
}
// Does this message mention me? The server lists the nicks it mentions (section 12).
function mentionsMe(m) {
  if (!m || !Array.isArray(m.mentions) || !S.nick) return false;
  var me = fold(S.nick);
  return m.mentions.some(function (n) { return fold(n) === me; });
}
// The text as DOM nodes: http(s) URLs become links, the @nicks the server resolved are
// marked; everything else, and every other scheme (javascript:, data:...), stays text.
var URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;
var MENTION_RE = /@([^\s,.;:!?)\]}'"]+)/g;
function richText(text, mentions) {
  var div = el('div', 't'), at = new Set(), last = 0, found;
  (Array.isArray(mentions) ? mentions : []).forEach(function (n) { at.add(fold(n)); });
  URL_RE.lastIndex = 0;
  while ((found = URL_RE.exec(text))) {
    var url = trimUrl(found[0]), a = linkFor(url);
    if (!a) continue;
    addMentions(div, text.slice(last, found.index), at);
    div.appendChild(a);
    last = found.index + url.length;
    URL_RE.lastIndex = last;
  }
  addMentions(div, text.slice(last), at);
  return div;
}
// Punctuation after a URL ends the sentence, not the URL; a closing bracket belongs to it
// only when the URL opened one.
function trimUrl(u) {
  for (;;) {
    var c = u.charAt(u.length - 1), open = { ')': '(', ']': '[', '}': '{' }[c];
    if (!c) return u;
    if ('.,;:!?\'"'.indexOf(c) >= 0) u = u.slice(0, -1);
    else if (open && u.split(open).length <= u.split(c).length - 1) u = u.slice(0, -1);
    else return u;
  }
}
function linkFor(url) {
  var a = el('a', 'ln', url);
  a.href = url;
  if ((a.protocol !== 'http:' && a.protocol !== 'https:') || !a.hostname) return null;
  a.target = '_blank'; a.rel = 'noopener noreferrer';
  return a;
}
function addMentions(div, text, at) {
  if (!text) return;
  var last = 0, found;
  MENTION_RE.lastIndex = 0;
  while (at.size && (found = MENTION_RE.exec(text))) {
    if (!at.has(fold(found[1]))) continue;
    if (found.index > last) div.appendChild(document.createTextNode(text.slice(last, found.index)));
    div.appendChild(el('span', 'at' + (fold(found[1]) === fold(S.nick) ? ' atme' : ''), found[0]));
    last = found.index + found[0].length;
  }
  if (last < text.length) div.appendChild(document.createTextNode(text.slice(last)));
}
// The quote of the message answered: tapping it shows the original when it is loaded.
function buildQuote(q) {
  var btn = el('button', 'q'); btn.type = 'button';
  btn.dataset.rid = String(q.id);
  btn.appendChild(el('span', 'qf', String(q.from || '?')));
  btn.appendChild(el('span', 'qt', q.deleted ? 'Message removed' : String(q.text || '')));
  if (q.deleted) btn.classList.add('qdel');
  btn.setAttribute('aria-label', 'Reply to ' + (q.from || '?') + ': ' +
    (q.deleted ? 'message removed' : String(q.text || '')) + '. Show the original');
  btn.addEventListener('click', function () {
    if (S.byId.has(q.id) || !q.deleted) showMessage(q.id);   // loaded with its neighbours if need be
    else toast('The original message was removed.');
  });
  return btn;
}
// Reactions: one chip per emoji with its count; ours highlighted; a tap toggles ours.
function buildReactions(m) {
  var wrap = el('div', 'rx');
  var r = m.reactions && typeof m.reactions === 'object' ? m.reactions : {};
  Object.keys(r).forEach(function (emoji) {
    var uids = Array.isArray(r[emoji]) ? r[emoji] : [];
    if (!uids.length) return;
    var mineToo = S.uid !== null && uids.indexOf(S.uid) >= 0;
    var chip = el('button', 'rc' + (mineToo ? ' own' : '')); chip.type = 'button';
    chip.appendChild(el('span', 're', emoji));
    chip.appendChild(el('span', 'rn', String(uids.length)));
    chip.setAttribute('aria-pressed', String(mineToo));
    chip.setAttribute('aria-label', emoji + ' ' + uids.length + (uids.length === 1 ? ' reaction' : ' reactions'));
    chip.title = uids.map(function (u) { return u === S.uid ? 'you' : (S.uidNick.get(u) || '?'); }).join(', ');
    chip.addEventListener('click', function () { react(m.id, mineToo ? '' : emoji); });
    wrap.appendChild(chip);
  });
  wrap.hidden = !wrap.firstChild;
  return wrap;
}
function myReaction(m) {
  var r = m && m.reactions && typeof m.reactions === 'object' ? m.reactions : {};
  for (var e in r) if (r.hasOwnProperty(e) && Array.isArray(r[e]) && r[e].indexOf(S.uid) >= 0) return e;
  return '';
}
function react(id, emoji) {
  if (S.muted) { toast('The organiser muted you.'); return; }
  if (!raw({ type: 'react', id: id, emoji: emoji, cid: newCid() })) toast('Not connected: try again once back online.');
}
// inline=1 asks the server to serve an image as itself (not as an attachment) for thumbnails.
// A link carries no secret: the session travels in an HttpOnly cookie (sessionCookie); v only
// makes the browser fetch again after the cookie changed.
function fileUrl(f, inline) {
  return '/files/' + encodeURIComponent(String(f.id)) + '/' + encodeURIComponent(String(f.name || 'file')) +
    '?v=' + S.linkGen + (inline ? '&inline=1' : '');
}
// After every welcome: hand the new session to the server, which sets it as a cookie, then
// reload the file links and thumbnails with it.
function sessionCookie() {
  var session = S.session;
  if (!session || !window.fetch) { refreshFileUrls(); return; }
  fetch('/session', { method: 'POST', body: session, credentials: 'same-origin',
                      headers: { 'Content-Type': 'text/plain' } })
    .then(function () { if (S.session === session) { S.linkGen++; refreshFileUrls(); } },
          function () { refreshFileUrls(); });
}
function buildFile(f) {
  var wrap = el('div', 'f');
  wrap.dataset.fid = String(f.id); wrap.dataset.fname = String(f.name || 'file');
  var url = fileUrl(f);
  if (typeof f.mime === 'string' && f.mime.indexOf('image/') === 0) {
    var a = el('a', 'thumb'); a.href = fileUrl(f, true); a.target = '_blank'; a.rel = 'noopener';
    a.addEventListener('click', function (e) {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button) return;   // a new tab, as asked
      e.preventDefault(); openViewer(a);
    });
    var img = el('img'); img.loading = 'lazy'; img.alt = String(f.name || 'image'); img.src = a.href;
    img.addEventListener('error', function () { a.hidden = true; });   // keep the download link
    img.addEventListener('load', function () { if (nearBottom() || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 400) toBottom(); });
    a.appendChild(img); wrap.appendChild(a);
  }
  var dl = el('a', 'dl'); dl.href = url; dl.download = String(f.name || 'file');
  dl.insertAdjacentHTML('afterbegin', '<svg class="ico" viewBox="0 0 24 24" aria-hidden="true"><path d="M12 4v11M7 10l5 5 5-5M5 20h14"/></svg>');
  var info = el('span');
  info.appendChild(el('span', 'fn', String(f.name || 'file')));
  info.appendChild(el('span', 'fs', typeof f.size === 'number' ? humanSize(f.size) : ''));
  dl.appendChild(info); wrap.appendChild(dl);
  return wrap;
}
// The session changes on every reconnect: rebuild the file links from the current one.
function refreshFileUrls() {
  log.querySelectorAll('.f').forEach(function (w) {
    var f = { id: w.dataset.fid, name: w.dataset.fname };
    w.querySelector('.dl').href = fileUrl(f, false);
    var a = w.querySelector('.thumb'), img = a && a.querySelector('img');
    if (!a) return;
    a.href = fileUrl(f, true);
    if (!(img.complete && img.naturalWidth)) { a.hidden = false; img.src = a.href; }
  });
}
function addMsg(m, live) {
  if (m && m.type === 'change') { applyChange(m); return false; }
  if (!m || typeof m.id !== 'number' || S.byId.has(m.id)) {
    if (m && m.cid && isMine(m)) ack(m.cid);
    return false;
  }
  var mine = isMine(m);
  if (mine && m.cid) ack(m.cid);
  if (typeof m.uid === 'number' && m.from) S.uidNick.set(m.uid, m.from);
  var node = buildMsg(m, mine);
  node.dataset.id = m.id;
  node.msg = m;
  S.byId.set(m.id, node);
  if (m.id > S.lastId) S.lastId = m.id;
  place(node, m.id);
  updateChrome();
  return true;
}
// ---- changes to the history: unsend, edit, clear (PROTOCOL.md section 10) ----
// Changes come live and inside histories, in id order; they apply to the message we hold.
function applyChange(c) {
  if (!c || typeof c.id !== 'number') return;
  if (c.id > S.lastId) S.lastId = c.id;
  if (c.change === 'clear') {
    Array.from(S.byId.keys()).forEach(function (id) {
      if (id < c.id) { S.byId.get(id).remove(); S.byId.delete(id); }
    });
    log.querySelectorAll('.note, .gap').forEach(function (n) { n.remove(); });
    S.hasOlder = false;
    if (S.reply && S.reply.id < c.id) setReply(null);
    redays();
    note('The organiser cleared the history');
    updateChrome();
    return;
  }
  if (c.change === 'delete' || c.change === 'edit') updateQuotes(c);
  var node = S.byId.get(c.target);
  if (!node || !node.msg) return;
  var m = Object.assign({}, node.msg);
  if (c.change === 'react') {
    if (c.reactions && typeof c.reactions === 'object') m.reactions = c.reactions;
    node.msg = m;
    node.querySelector('.rx').replaceWith(buildReactions(m));
    return;
  }
  if (c.change === 'delete') { m.text = ''; delete m.file; delete m.edited; delete m.reactions; m.deleted = c.by || 'sender'; }
  else if (c.change === 'edit' && typeof c.text === 'string' && !m.deleted) { m.text = c.text; m.edited = c.edited || c.ts; }
  else return;
  if (S.reply && S.reply.id === m.id && m.deleted) setReply(null);
  rebuild(node, m);
}
function rebuild(node, m) {
  var fresh = buildMsg(m, isMine(m));
  fresh.dataset.id = m.id; fresh.msg = m;
  fresh.dataset.k = node.dataset.k;
  if (node.classList.contains('g')) fresh.classList.add('g');
  node.replaceWith(fresh);
  S.byId.set(m.id, fresh);
}
// A removed or edited original changes the quotes of its replies too (section 12).
function updateQuotes(c) {
  S.byId.forEach(function (node) {
    var m = node.msg;
    if (!m || !m.reply_to || m.reply_to.id !== c.target || m.deleted) return;
    var q = Object.assign({}, m.reply_to);
    if (c.change === 'delete') { q.text = ''; q.deleted = true; }
    else if (typeof c.text === 'string' && !q.deleted) q.text = c.text.slice(0, QUOTE_MAX);
    else return;
    rebuild(node, Object.assign({}, m, { reply_to: q }));
  });
}
// Every message has a menu: Reply and React; one's own also Edit (text only) and Delete. A
// button that shows on hover or focus (and always on touch screens), so keyboard and phone
// users reach it too.
function buildActions(m, mine) {
  var wrap = el('div', 'acts');
  var btn = el('button', 'actbtn', '⋯'); btn.type = 'button';
  btn.setAttribute('aria-label', mine ? 'Actions for your message' : 'Actions for the message from ' + (m.from || '?'));
  btn.setAttribute('aria-expanded', 'false');
  var menu = el('div', 'actmenu'); menu.hidden = true;
  var picker = el('div', 'picker'); picker.hidden = true;
  picker.setAttribute('role', 'group'); picker.setAttribute('aria-label', 'Pick a reaction');
  function close() { menu.hidden = picker.hidden = true; btn.setAttribute('aria-expanded', 'false'); }
  function item(label, cls, action) {
    var b = el('button', cls, label); b.type = 'button';
    b.addEventListener('click', function () { close(); action(); });
    menu.appendChild(b);
  }
  item('Reply', null, function () { setReply(m); });
  item('React', null, function () {
    if (S.muted) { toast('The organiser muted you.'); return; }
    fillPicker(picker, m.id, close);
    picker.hidden = false; btn.setAttribute('aria-expanded', 'true');
    (picker.querySelector('.own') || picker.firstChild).focus();
  });
  if (mine && m.text && !m.file && editable(m)) item('Edit', null, function () { startEdit(m.id); });
  if (mine) item('Delete', 'danger', function () {
    if (window.confirm('Delete this message for everyone?')) raw({ type: 'delete', id: m.id, cid: newCid() });
  });
  btn.addEventListener('click', function () {
    var open = menu.hidden && picker.hidden;
    closeMenus();
    menu.hidden = !open; btn.setAttribute('aria-expanded', String(open));
    if (open) menu.firstChild.focus();
  });
  wrap.addEventListener('keydown', function (e) {
    if (e.key === 'Escape' && !(menu.hidden && picker.hidden)) { e.stopPropagation(); close(); btn.focus(); }
  });
  wrap.appendChild(btn); wrap.appendChild(menu); wrap.appendChild(picker);
  return wrap;
}
// The reaction picker, built when opened: our current reaction is the one shown pressed.
function fillPicker(picker, id, close) {
  var node = S.byId.get(id), current = myReaction(node && node.msg);
  picker.textContent = '';
  REACTIONS.forEach(function (emoji) {
    var b = el('button', emoji === current ? 'own' : null, emoji); b.type = 'button';
    b.setAttribute('aria-label', (emoji === current ? 'Remove reaction ' : 'React with ') + emoji);
    b.setAttribute('aria-pressed', String(emoji === current));
    b.addEventListener('click', function () { close(); react(id, emoji === current ? '' : emoji); });
    picker.appendChild(b);
  });
}
function closeMenus(except) {
  log.querySelectorAll('.acts').forEach(function (w) {
    if (w === except) return;
    w.querySelector('.actmenu').hidden = true; w.querySelector('.picker').hidden = true;
    w.querySelector('.actbtn').setAttribute('aria-expanded', 'false');
  });
}
document.addEventListener('click', function (e) {
  closeMenus(e.target && e.target.closest ? e.target.closest('.acts') : null);
});
// Within the server's edit window (welcome.limits.edit_window, seconds; 0: off). A server
// that does not say leaves the decision to it (edit_expired).
function editable(m) {
  var w = S.limits.edit_window;
  if (typeof w !== 'number') return true;
  return w > 0 && Date.now() - new Date(m.ts).getTime() < w * 1000;
}
function startEdit(id) {
  var node = S.byId.get(id);
  if (!node || !node.msg || node.querySelector('.editbox')) return;
  var box = el('form', 'editbox');
  var area = el('textarea'); area.value = node.msg.text || ''; area.rows = 2;
  area.setAttribute('aria-label', 'Edit your message');
  var save = el('button', 'primary', 'Save'); save.type = 'submit';
  var cancel = el('button', null, 'Cancel'); cancel.type = 'button';
  box.appendChild(area); box.appendChild(save); box.appendChild(cancel);
  box.addEventListener('submit', function (e) {
    e.preventDefault();
    var text = area.value.trim();
    if (text && text !== node.msg.text) raw({ type: 'edit', id: id, text: text, cid: newCid() });
    box.remove();
  });
  cancel.addEventListener('click', function () { box.remove(); });
  area.addEventListener('keydown', function (e) { if (e.key === 'Escape') box.remove(); });
  node.querySelector('.b').appendChild(box);
  area.focus();
}
// ---- the room: its name and topic from the organiser; muted ----
function applyRoom(room) {
  if (!room || typeof room !== 'object') return;
  S.room = { name: String(room.name || ''), topic: String(room.topic || ''), locked: !!room.locked };
  TITLE = S.room.name || 'LAN Chat';
  $('roomName').textContent = TITLE;
  $('topic').textContent = S.room.topic;
  $('topic').hidden = !S.room.topic;
  updateTitle();
}
function setMuted(muted, text) {
  S.muted = muted;
  ta.disabled = muted; $('send').disabled = muted; $('attach').disabled = muted;
  ta.placeholder = muted ? (text || 'The organiser muted you.') : (S.to ? 'Private message to ' + S.to : 'Message');
  $('composer').classList.toggle('muted', muted);
}
function ack(cid) {
  var i = outboxIndex(cid);
  if (i >= 0) { outbox.splice(i, 1); saveOutbox(); }
  var p = log.querySelector('.pending[data-cid="' + cssEsc(cid) + '"]');
  if (p) { var n = p.nextElementSibling; p.remove(); regroup(n); }
}
function note(text) {
  var n = el('div', 'note', text);
  place(n, S.lastId + 0.5);
  if (nearBottom()) toBottom();
}
function setStatus(node, text) { var s = node.querySelector('.st'); if (s) s.textContent = text; }
function addPending(item) {
  var node = buildMsg({ from: S.nick, text: item.text, cid: item.cid, to: item.to, reply_to: item.quote }, true);
  node.classList.add('pending');
  setStatus(node, S.welcomed ? 'Sending…' : 'Waiting for connection…');
  place(node, Infinity);
}
function markPending() {
  log.querySelectorAll('.pending').forEach(function (p) { setStatus(p, 'Waiting for connection…'); });
}
function updateChrome() {
  var any = log.querySelector('.m[data-id]');
  $('older').hidden = !(S.hasOlder && any);
  $('older').disabled = !!S.hist || !S.welcomed;
  $('edge').hidden = !(any && !S.hasOlder);
  $('empty').hidden = !!log.firstElementChild || !S.everWelcomed;
}

// ---- sending ----
function sendItem(item) {
  var m = { type: 'msg', text: item.text, cid: item.cid };
  if (item.to) m.to = item.to;
  if (typeof item.reply_to === 'number') m.reply_to = item.reply_to;
  if (raw(m)) {
    var p = log.querySelector('.pending[data-cid="' + cssEsc(item.cid) + '"]');
    if (p) setStatus(p, 'Sending…');
  }
}
function flushOutbox() { outbox.slice().forEach(sendItem); }
function sendText() {
  var text = ta.value.trim();
  if (!text) return;
  var max = S.limits.text || TEXT_MAX;
  if (utf8Len(text) > max) { toast('This message is too long (' + humanSize(max) + ' at most).'); return; }
  var item = { cid: newCid(), text: text };
  if (S.to) item.to = S.to;
  if (S.reply) { item.reply_to = S.reply.id; item.quote = S.reply; setReply(null); }
  outbox.push(item); saveOutbox();
  addPending(item);
  ta.value = ''; autosize();
  S.lastTyping = 0;
  if (S.welcomed) sendItem(item);
  toBottom(); updateChrome();
}
// ---- replying: the quote above the composer until sent or cancelled ----
function setReply(m) {
  if (m && S.muted) { toast('The organiser muted you.'); return; }
  S.reply = m ? { id: m.id, from: m.from || '?',
                  text: m.file ? String(m.file.name || 'file') : String(m.text || '').slice(0, QUOTE_MAX) } : null;
  $('replyChip').hidden = !S.reply;
  $('replyFrom').textContent = S.reply ? 'Replying to ' + S.reply.from : '';
  $('replyText').textContent = S.reply ? S.reply.text : '';
  if (m && m.to && !S.to) setTo(isMine(m) ? m.to : m.from);   // a private message is answered privately
  if (m) ta.focus();
}
$('replyClose').addEventListener('click', function () { setReply(null); ta.focus(); });
$('composer').addEventListener('submit', function (e) { e.preventDefault(); sendText(); ta.focus(); });
ta.addEventListener('keydown', function (e) {
  if (!$('atList').hidden && !e.isComposing) {
    var opts = $('atList').children;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      S.atSel = (S.atSel + (e.key === 'ArrowDown' ? 1 : opts.length - 1)) % opts.length; markAt();
      return;
    }
    if (e.key === 'Enter' || e.key === 'Tab') { e.preventDefault(); pickAt(opts[S.atSel].dataset.nick); return; }
    if (e.key === 'Escape') { e.preventDefault(); $('atList').hidden = true; return; }
  }
  if (e.key === 'Escape' && S.reply) { setReply(null); return; }
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendText(); }
});
// ---- @mentions: typing @ suggests the nicks online ----
function atQuery() {
  var pos = ta.selectionStart, found = /(^|\s)@([^\s@]{0,32})$/.exec(ta.value.slice(0, pos));
  return found ? { start: pos - found[2].length - 1, end: pos, q: found[2] } : null;
}
function renderAt() {
  var list = $('atList'), q = atQuery();
  list.textContent = ''; S.atSel = 0;
  var me = fold(S.nick), fq = q ? fold(q.q) : '';
  var names = !q ? [] : Array.from(S.users.values()).filter(function (n) {
    return fold(n) !== me && fold(n).indexOf(fq) === 0 && fold(n) !== fq;
  }).sort(function (a, b) { return a.localeCompare(b, undefined, { sensitivity: 'base' }); }).slice(0, 6);
  names.forEach(function (n) {
    var b = el('button', 'atopt', '@' + n); b.type = 'button'; b.dataset.nick = n;
    b.addEventListener('mousedown', function (e) { e.preventDefault(); });   // the caret stays
    b.addEventListener('click', function () { pickAt(n); });
    list.appendChild(b);
  });
  list.hidden = !names.length;
  markAt();
}
function markAt() {
  Array.prototype.forEach.call($('atList').children, function (b, i) { b.classList.toggle('sel', i === S.atSel); });
}
function pickAt(nick) {
  var q = atQuery();
  $('atList').hidden = true;
  if (!q) return;
  var v = ta.value, tail = v.slice(q.end);
  ta.value = v.slice(0, q.start) + '@' + nick + (tail.charAt(0) === ' ' ? '' : ' ') + tail;
  var caret = q.start + nick.length + 2;
  ta.focus(); ta.setSelectionRange(caret, caret); autosize();
}
function autosize() { ta.style.height = 'auto'; ta.style.height = Math.min(ta.scrollHeight + 2, 140) + 'px'; }
ta.addEventListener('input', function () {
  autosize(); renderAt();
  var now = Date.now();
  if (S.welcomed && ta.value.trim() && now - S.lastTyping >= TYPING_SEND_MS) {
    S.lastTyping = now;
    var t = { type: 'typing' }; if (S.to) t.to = S.to;
    raw(t);
  }
});

// ---- direct messages ----
function setTo(nick) {
  S.to = nick || '';
  $('dmChip').hidden = !S.to;
  $('dmText').textContent = S.to ? 'To: ' + S.to + ' (private)' : '';
  if (!S.muted) ta.placeholder = S.to ? 'Private message to ' + S.to : 'Message';
  renderUsers();
}
$('dmClose').addEventListener('click', function () { setTo(''); ta.focus(); });

// ---- users ----
function renderUsers() {
  var ul = $('ulist'); ul.textContent = '';
  var me = fold(S.nick);
  var list = Array.from(S.users.values()).sort(function (a, b) {
    var am = fold(a) === me, bm = fold(b) === me;
    return am !== bm ? (am ? -1 : 1) : a.localeCompare(b, undefined, { sensitivity: 'base' });
  });
  list.forEach(function (n) {
    var li = el('li');
    var mine = fold(n) === me;
    var row = el(mine ? 'div' : 'button', 'u');
    var av = el('span', 'av', n.charAt(0).toUpperCase()); av.setAttribute('aria-hidden', 'true');
    av.style.background = avatarColor(n);
    row.appendChild(av); row.appendChild(el('span', null, n));
    if (mine) row.appendChild(el('span', 'you', '(you)'));
    else {
      row.type = 'button'; row.title = 'Send a private message to ' + n;
      if (S.to && fold(S.to) === fold(n)) { row.classList.add('sel'); row.setAttribute('aria-pressed', 'true'); }
      row.addEventListener('click', function () { setTo(n); openUsers(false); ta.focus(); });
    }
    li.appendChild(row); ul.appendChild(li);
  });
  var count = Math.max(S.online, S.users.size);
  $('ucount').textContent = count;
  $('uhead').textContent = 'Online — ' + count;
}
function openUsers(open) {
  document.body.classList.toggle('uopen', open);
  $('backdrop').hidden = !open;
  $('usersBtn').setAttribute('aria-expanded', String(open));
  if (open) $('closeUsers').focus();
}
$('usersBtn').addEventListener('click', function () { openUsers(!document.body.classList.contains('uopen')); });
$('closeUsers').addEventListener('click', function () { openUsers(false); $('usersBtn').focus(); });
$('backdrop').addEventListener('click', function () { openUsers(false); });
document.addEventListener('keydown', function (e) { if (e.key === 'Escape' && document.body.classList.contains('uopen')) openUsers(false); });
$('renick').addEventListener('click', function () { openUsers(false); askNick(''); });

// ---- nickname dialog ----
var dlg = $('nickDlg');
function askNick(err) {
  if (err || !dlg.open) $('nickErr').textContent = err || '';
  if (dlg.open) return;          // never wipe what the user is typing
  $('nickInput').value = S.nick;
  if (dlg.showModal) dlg.showModal(); else dlg.setAttribute('open', '');
  $('nickInput').focus(); $('nickInput').select();
}
dlg.addEventListener('cancel', function (e) { if (!S.nick || !S.welcomed) e.preventDefault(); });
$('nickForm').addEventListener('submit', function (e) {
  e.preventDefault();
  var nick = $('nickInput').value.trim();
  if (!nick) { $('nickErr').textContent = 'Please enter a nickname.'; return; }
  var changed = fold(nick) !== fold(S.nick) || nick !== S.nick;
  S.nick = nick; store.set('nick', nick);
  dlg.close();
  if (S.welcomed) {
    if (changed) { lost(); S.attempt = 0; connect(); }
  } else if (S.ws && S.ws.readyState === 1) sendHello();
  else if (!S.ws) { S.attempt = 0; connect(); }
  ta.focus();
});

// ---- typing indicator, banner, toast, title ----
function renderTyping() {
  var names = Array.from(S.typers.values()).map(function (x) { return x.nick; });
  $('typing').textContent = !names.length ? '' : names.length === 1 ? names[0] + ' is typing…'
    : names.length === 2 ? names[0] + ' and ' + names[1] + ' are typing…' : names.length + ' people are typing…';
}
function setConn(on) {
  $('sub').classList.toggle('on', on);
  $('sub').classList.toggle('off', !on && S.stopped);
  $('subText').textContent = on ? S.nick + ' · online' : (S.stopped ? 'Offline' : 'Connecting…');
  updateChrome();
}
function setBanner(text, bad, action) {
  var b = $('banner');
  S.bannerText = text;
  b.textContent = text; b.hidden = !text; b.classList.toggle('bad', !!bad);
  if (action) {   // e.g. "Join again" after a kick: the user decides, nothing reconnects alone
    var again = el('button', 'pill', action); again.type = 'button';
    again.addEventListener('click', function () { S.stopped = false; setBanner(''); S.attempt = 0; connect(); });
    b.appendChild(document.createTextNode(' ')); b.appendChild(again);
  }
}
var toastTimer = 0;
function toast(text) {
  var t = $('toast'); t.textContent = text;
  clearTimeout(toastTimer); toastTimer = setTimeout(function () { t.textContent = ''; }, TOAST_MS);
}
// ---- attention while the page is hidden: title, favicon badge, a beep, a vibration ----
// Mentions of me and direct messages to me are counted apart and get a two-tone beep.
function attend(msgs) {
  if (!document.hidden) return;
  var strong = false, any = false;
  msgs.forEach(function (m) {
    if (!m || typeof m.id !== 'number' || isMine(m) || m.deleted) return;
    any = true; S.unread++;
    if (mentionsMe(m)) { S.unreadAt++; strong = true; }
    else if (m.to) { S.unreadDm++; strong = true; }
  });
  if (!any) return;
  updateTitle();
  if (soundOn() && Date.now() - S.lastBeep > BEEP_GAP_MS) {
    S.lastBeep = Date.now();
    beep(strong);
    if (S.gestured && navigator.vibrate) { try { navigator.vibrate(strong ? [120, 80, 120] : 150); } catch (e) {} }
  }
}
function updateTitle() {
  var extra = (S.unreadAt ? ' @' + S.unreadAt : '') + (S.unreadDm ? ' ✉' + S.unreadDm : '');
  document.title = S.unread ? '(' + S.unread + ')' + extra + ' ' + TITLE : TITLE;
  drawFavicon(S.unread, S.unreadAt + S.unreadDm > 0);
}
// The icon is drawn: a chat bubble, and the unread count on a badge (red for mentions and
// direct messages), as a data: URL.
var iconShown = '';
function drawFavicon(count, strong) {
  var key = count + (strong ? '!' : '');
  if (key === iconShown) return;
  var c = document.createElement('canvas'), g = c.getContext && c.getContext('2d');
  if (!g) return;
  iconShown = key;
  c.width = c.height = 64;
  g.fillStyle = '#1f5fd6';
  g.beginPath(); g.arc(30, 30, 26, 0, 2 * Math.PI); g.fill();
  g.beginPath(); g.moveTo(12, 46); g.lineTo(6, 60); g.lineTo(26, 52); g.fill();
  g.fillStyle = '#fff';
  [18, 30, 42].forEach(function (x) { g.beginPath(); g.arc(x, 30, 4.5, 0, 2 * Math.PI); g.fill(); });
  if (count > 0) {
    var text = count > 99 ? '99+' : String(count);
    g.fillStyle = strong ? '#d92d20' : '#0b7a3b';
    g.beginPath(); g.arc(44, 20, 20, 0, 2 * Math.PI); g.fill();
    g.fillStyle = '#fff'; g.font = 'bold ' + (text.length > 2 ? 18 : 26) + 'px sans-serif';
    g.textAlign = 'center'; g.textBaseline = 'middle';
    g.fillText(text, 44, 21);
  }
  $('favicon').href = c.toDataURL('image/png');
}
function soundOn() { return store.get('sound') !== 'off'; }
function renderSound() {
  var on = soundOn();
  $('soundBtn').setAttribute('aria-pressed', String(on));
  $('soundBtn').classList.toggle('muted', !on);
}
$('soundBtn').addEventListener('click', function () {
  store.set('sound', soundOn() ? 'off' : 'on'); renderSound();
  toast(soundOn() ? 'Sound and vibration on for messages that come while the page is hidden.'
                  : 'Sound and vibration off.');
});
// Browsers let a page play sound only after a first tap or key press: make the audio
// context then.
function firstGesture() {
  S.gestured = true;
  if (S.audio) return;
  var AC = window.AudioContext || window.webkitAudioContext;
  if (!AC) return;
  try { S.audio = new AC(); } catch (e) { S.audio = null; }
}
document.addEventListener('pointerdown', firstGesture, true);
document.addEventListener('keydown', firstGesture, true);
function beep(strong) {
  var ctx = S.audio;
  if (!ctx) return;
  try {
    if (ctx.state === 'suspended' && ctx.resume) ctx.resume();
    var t = ctx.currentTime;
    (strong ? [880, 1320] : [660]).forEach(function (f, i) {
      var o = ctx.createOscillator(), g = ctx.createGain(), t0 = t + i * 0.14;
      o.type = 'sine'; o.frequency.value = f;
      g.gain.setValueAtTime(0.0001, t0);
      g.gain.exponentialRampToValueAtTime(0.25, t0 + 0.01);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.12);
      o.connect(g); g.connect(ctx.destination);
      o.start(t0); o.stop(t0 + 0.13);
    });
  } catch (e) {}
}
// Phones freeze background tabs; a socket may be dead without a close event. On return,
// probe it with a ping and reconnect at once if nothing answers.
document.addEventListener('visibilitychange', function () {
  if (document.hidden) return;
  S.unread = S.unreadAt = S.unreadDm = 0; updateTitle();
  if (S.welcomed && raw({ type: 'ping' })) {
    var sent = Date.now();
    setTimeout(function () { if (S.welcomed && S.lastRx < sent) { lost(); retry(); } }, PROBE_MS);
  } else if (!S.ws && !S.stopped) { S.attempt = 0; connect(); }
});

// ---- scrolling back ----
$('older').addEventListener('click', loadOlder);
scroller.addEventListener('scroll', function () {
  if (scroller.scrollTop < 40) loadOlder();
  if (!jumpFrame) jumpFrame = requestAnimationFrame(function () { jumpFrame = 0; updateJump(); });
}, { passive: true });

// ---- jump to latest: shown when scrolled up, with the count of messages below ----
var jumpFrame = 0;
function updateJump() {
  var jump = $('jump');
  if (nearBottom()) { jump.hidden = true; return; }
  var bottom = scroller.getBoundingClientRect().bottom, n = 0;
  for (var c = log.lastElementChild; c; c = c.previousElementSibling) {
    if (!c.classList.contains('m')) continue;
    if (c.getBoundingClientRect().top < bottom) break;
    n++;
  }
  $('jumpCount').textContent = n ? String(n) : '';
  jump.setAttribute('aria-label', 'Jump to latest' + (n ? ', ' + n + (n === 1 ? ' message' : ' messages') + ' below' : ''));
  jump.hidden = false;
}
$('jump').addEventListener('click', function () { toBottom(); $('jump').hidden = true; ta.focus(); });

// ---- day separators: "Today", "Yesterday" or the date between messages of different days ----
function dayLabel(ts) {
  var d = new Date(ts), today = new Date();
  var y = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === y.toDateString()) return 'Yesterday';
  var o = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== today.getFullYear()) o.year = 'numeric';
  return d.toLocaleDateString([], o);
}
function redays() {
  var prevDay = '', sep = null, c = log.firstElementChild, next;
  for (; c; c = next) {
    next = c.nextElementSibling;
    if (c.classList.contains('day')) { if (sep) sep.remove(); sep = c; continue; }
    if (!c.classList.contains('m')) continue;
    var day = new Date(+c.dataset.ts).toDateString();
    if (day !== prevDay) {
      if (!sep || sep.dataset.day !== day) {
        if (sep) sep.remove();
        sep = el('div', 'day'); sep.dataset.day = day;
        sep.appendChild(el('span', null, ''));
        log.insertBefore(sep, c);
      }
      sep.dataset.k = (+c.dataset.k) - 0.01;
      var label = dayLabel(+c.dataset.ts);
      if (sep.firstChild.textContent !== label) sep.firstChild.textContent = label;
      regroup(c);
    } else if (sep) { sep.remove(); regroup(c); }
    sep = null; prevDay = day;
  }
  if (sep) sep.remove();
}

// ---- files: picker, drag and drop, paste; upload over HTTP with progress ----
var upQueue = [], upActive = 0;
$('attach').addEventListener('click', function () { $('file').click(); });
$('file').addEventListener('change', function () { queueFiles($('file').files); $('file').value = ''; });
function queueFiles(files) {
  Array.prototype.forEach.call(files || [], function (f) {
    if (!S.welcomed) { toast('Not connected: try again once back online.'); return; }
    if (S.limits.file && f.size > S.limits.file) { toast(f.name + ' is too large (' + humanSize(S.limits.file) + ' at most).'); return; }
    upQueue.push({ file: f, to: S.to });
  });
  pumpUploads();
}
function pumpUploads() {
  while (upActive < MAX_PARALLEL_UPLOADS && upQueue.length) { upActive++; startUpload(upQueue.shift()); }
}
function startUpload(job) {
  var f = job.file, name = f.name || 'file', cid = newCid();
  var row = el('div', 'up'); row.appendChild(el('span', null, name));
  var bar = el('progress'); bar.max = 1; bar.value = 0; bar.setAttribute('aria-label', 'Uploading ' + name);
  var cancel = el('button', 'iconbtn', '×'); cancel.type = 'button'; cancel.setAttribute('aria-label', 'Cancel upload of ' + name);
  var pct = el('span', 'pct', '0%'); pct.setAttribute('aria-hidden', 'true');
  row.appendChild(bar); row.appendChild(pct); row.appendChild(cancel); $('uploads').appendChild(row);
  var q = '?name=' + encodeURIComponent(name) + '&cid=' + encodeURIComponent(cid);
  if (job.to) q += '&to=' + encodeURIComponent(job.to);
  var xhr = new XMLHttpRequest();
  xhr.open('POST', '/files' + q);
  xhr.setRequestHeader('Content-Type', f.type || 'application/octet-stream');
  xhr.setRequestHeader('Authorization', 'Bearer ' + S.session);
  xhr.upload.onprogress = function (e) {
    if (e.lengthComputable && e.total) { bar.value = e.loaded / e.total; pct.textContent = Math.floor(bar.value * 100) + '%'; }
  };
  function done() { row.remove(); upActive--; pumpUploads(); }
  xhr.onload = function () {
    if (xhr.status >= 200 && xhr.status < 300) {
      try { var atB = nearBottom(); if (addMsg(JSON.parse(xhr.responseText), true) && atB) toBottom(); } catch (e) {}
    } else {
      var msg = 'Upload of ' + name + ' failed (HTTP ' + xhr.status + ').';
      try { var j = JSON.parse(xhr.responseText); if (j && j.message) msg = j.message; } catch (e) {}
      toast(msg);
    }
    done();
  };
  xhr.onerror = function () { toast('Upload of ' + name + ' failed: connection lost.'); done(); };
  xhr.onabort = done;
  cancel.addEventListener('click', function () { xhr.abort(); });
  xhr.send(f);
}
var dragDepth = 0;
function hasFiles(e) { return e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types || [], 'Files') >= 0; }
document.addEventListener('dragenter', function (e) { if (hasFiles(e)) { dragDepth++; $('drop').hidden = false; } });
document.addEventListener('dragleave', function (e) { if (hasFiles(e) && --dragDepth <= 0) { dragDepth = 0; $('drop').hidden = true; } });
document.addEventListener('dragover', function (e) { if (hasFiles(e)) e.preventDefault(); });
document.addEventListener('drop', function (e) {
  if (!hasFiles(e)) return;
  e.preventDefault(); dragDepth = 0; $('drop').hidden = true;
  queueFiles(e.dataTransfer.files);
});
document.addEventListener('paste', function (e) {
  var files = e.clipboardData && e.clipboardData.files;
  if (!files || !files.length) return;
  e.preventDefault();
  var stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-');
  queueFiles(Array.prototype.map.call(files, function (f, i) {
    var ext = (f.type.split('/')[1] || 'bin').replace(/[^a-z0-9]/gi, '');
    return new File([f], 'pasted-' + stamp + (i ? '-' + i : '') + '.' + ext, { type: f.type });
  }));
});

// ---- search: a dialog; results open in the conversation with their neighbours ----
var sdlg = $('searchDlg');
$('searchBtn').addEventListener('click', function () {
  var sel = $('searchFrom'), keep = sel.value, names = new Map();
  S.users.forEach(function (n, k) { names.set(k, n); });
  S.byId.forEach(function (node) { var f = node.msg && node.msg.from; if (f && !names.has(fold(f))) names.set(fold(f), f); });
  while (sel.options.length > 1) sel.remove(1);
  Array.from(names.values()).sort(function (a, b) { return a.localeCompare(b, undefined, { sensitivity: 'base' }); })
    .forEach(function (n) { var o = el('option', null, n); o.value = n; sel.appendChild(o); });
  sel.value = names.has(fold(keep)) ? names.get(fold(keep)) : '';
  // In a private chat, the search may keep to that conversation (search.with).
  if (!S.to || $('searchWithText').dataset.peer !== fold(S.to)) $('searchWith').checked = false;
  $('searchWithRow').hidden = !S.to;
  $('searchWithText').textContent = S.to ? 'Only the private chat with ' + S.to : '';
  $('searchWithText').dataset.peer = S.to ? fold(S.to) : '';
  if (sdlg.showModal) sdlg.showModal(); else sdlg.setAttribute('open', '');
  $('searchInput').focus(); $('searchInput').select();
});
$('searchClose').addEventListener('click', function () { sdlg.close(); });
sdlg.addEventListener('close', function () { $('searchBtn').focus(); });
$('searchForm').addEventListener('submit', function (e) {
  e.preventDefault();
  var text = $('searchInput').value.trim();
  if (!text) { $('searchNote').textContent = 'Type the words to find.'; return; }
  $('searchResults').textContent = '';
  askSearch({ text: text, from: $('searchFrom').value, peer: S.to && $('searchWith').checked ? S.to : '' });
});
$('searchMore').addEventListener('click', function () {
  if (S.search && S.search.oldest) askSearch({ text: S.search.text, from: S.search.from, peer: S.search.peer, before: S.search.oldest });
});
function askSearch(q) {
  var r = { type: 'search', text: q.text, cid: newCid(), limit: SEARCH_PAGE };
  if (q.from) r.from = q.from;
  if (q.peer) r['with'] = q.peer;
  if (q.before) r.before = q.before;
  S.search = { cid: r.cid, text: q.text, from: q.from || '', peer: q.peer || '', oldest: q.before || 0 };
  $('searchMore').hidden = true;
  $('searchNote').textContent = raw(r) ? 'Searching…' : 'Not connected: try again once back online.';
}
H.search_results = function (m) {
  if (!S.search || m.cid !== S.search.cid) return;
  var list = $('searchResults'), results = Array.isArray(m.results) ? m.results : [];
  results.forEach(function (r) {
    if (!r || typeof r.id !== 'number') return;
    if (!S.search.oldest || r.id < S.search.oldest) S.search.oldest = r.id;
    list.appendChild(buildResult(r));
  });
  var n = list.children.length;
  $('searchNote').textContent = n ? n + (n === 1 ? ' message found' : ' messages found') + (m.has_more ? ', more below' : '')
                                  : 'No message found.';
  $('searchMore').hidden = !(m.has_more && results.length);
};
function buildResult(r) {
  var li = el('li'), b = el('button', 'sr'); b.type = 'button';
  var head = el('span', 'srh');
  head.appendChild(el('span', 'srf', (r.from || '?') + (r.to ? ' → ' + r.to : '')));
  if (r.to) head.appendChild(el('span', 'tag', 'private'));
  var tm = el('time', null, r.ts ? fmtTime(r.ts) : ''); if (r.ts) tm.dateTime = r.ts;
  head.appendChild(tm);
  b.appendChild(head);
  var text = r.text || '';
  if (r.file && r.file.name) text = (text ? text + ' · ' : '') + String(r.file.name);
  b.appendChild(el('span', 'srt', text));
  b.addEventListener('click', function () {
    sdlg.close();
    if (typeof r.uid === 'number' && r.from) S.uidNick.set(r.uid, r.from);
    showMessage(r.id);
  });
  li.appendChild(b);
  return li;
}

// ---- the image viewer: full screen, swipe or arrows between the conversation's images ----
var viewer = $('viewer'), vItems = [], vAt = 0, vPushed = false, vTouch = null;
function openViewer(thumb) {
  vItems = Array.prototype.slice.call(log.querySelectorAll('.thumb:not([hidden])'));
  vAt = Math.max(0, vItems.indexOf(thumb));
  showViewer();
  if (!viewer.open) {
    if (viewer.showModal) viewer.showModal(); else viewer.setAttribute('open', '');
    history.pushState({ viewer: true }, '');     // Back closes the viewer, not the chat
    vPushed = true;
  }
  $('vClose').focus();
}
function showViewer() {
  var a = vItems[vAt]; if (!a) return;
  var w = a.closest('.f'), name = w ? w.dataset.fname : 'image';
  $('vImg').src = a.href; $('vImg').alt = name;
  $('vName').textContent = name;
  $('vCount').textContent = (vAt + 1) + ' of ' + vItems.length;
  var dl = w && w.querySelector('.dl');
  $('vDl').href = dl ? dl.href : a.href;
  $('vDl').setAttribute('download', name);
  $('vDl').setAttribute('aria-label', 'Download ' + name);
  $('vPrev').disabled = vAt === 0;
  $('vNext').disabled = vAt >= vItems.length - 1;
}
function stepViewer(d) {
  var to = vAt + d;
  if (to < 0 || to >= vItems.length) return;
  vAt = to; showViewer();
}
$('vPrev').addEventListener('click', function () { stepViewer(-1); });
$('vNext').addEventListener('click', function () { stepViewer(1); });
$('vClose').addEventListener('click', function () { viewer.close(); });
viewer.addEventListener('close', function () {
  var a = vItems[vAt];
  $('vImg').removeAttribute('src');
  if (vPushed) { vPushed = false; history.back(); }
  if (a && a.isConnected) a.focus();
});
window.addEventListener('popstate', function () {
  if (vPushed && viewer.open) { vPushed = false; viewer.close(); }
});
viewer.addEventListener('keydown', function (e) {
  if (e.key === 'ArrowLeft') { e.preventDefault(); stepViewer(-1); }
  else if (e.key === 'ArrowRight') { e.preventDefault(); stepViewer(1); }
});
// One finger swipes; two fingers pinch (the browser zooms, touch-action allows it).
$('vStage').addEventListener('touchstart', function (e) {
  vTouch = e.touches.length === 1 ? { x: e.touches[0].clientX, y: e.touches[0].clientY } : null;
}, { passive: true });
$('vStage').addEventListener('touchend', function (e) {
  if (!vTouch || !e.changedTouches.length) return;
  var dx = e.changedTouches[0].clientX - vTouch.x, dy = e.changedTouches[0].clientY - vTouch.y;
  vTouch = null;
  if (window.visualViewport && window.visualViewport.scale > 1.05) return;   // zoomed in: panning
  if (Math.abs(dx) > SWIPE_PX && Math.abs(dx) > 2 * Math.abs(dy)) stepViewer(dx < 0 ? 1 : -1);
}, { passive: true });
$('vStage').addEventListener('click', function (e) { if (e.target === $('vStage')) viewer.close(); });

// ---- start ----
outbox.forEach(addPending);
renderUsers(); updateChrome(); renderSound(); drawFavicon(0, false); redays();
setBanner('Connecting…');
if (!S.nick) askNick('');
connect();
})();
</script>
</body>
</html>
""".encode("utf-8")

# client_web/pair.html: the template of GET /pair (shown on the PC itself only);
# pair_page_html() replaces its {{svg}}, {{url}}, {{room}} and {{firewall}} markers. No
# script, no external resource.
_PAIR_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>Pair your phone - LAN Chat</title>
<style>
:root {
  --bg: #f4f5f7;
  --fg: #1d2330;
  --muted: #5b6475;
  --card: #ffffff;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #15181e;
    --fg: #e8eaf0;
    --muted: #9aa3b5;
    --card: #222733;
  }
}
* {
  box-sizing: border-box;
}
body {
  margin: 0;
  min-height: 100vh;
  display: flex;
  align-items: center;
  justify-content: center;
  background: var(--bg);
  color: var(--fg);
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
main {
  background: var(--card);
  border-radius: 16px;
  padding: 24px 28px;
  margin: 16px;
  max-width: 560px;
  text-align: center;
  box-shadow: 0 4px 24px rgba(0, 0, 0, .15);
}
h1 {
  font-size: 1.4em;
  margin: 0 0 12px;
}
.qr {
  background: #ffffff;
  border-radius: 8px;
  padding: 8px;
  display: inline-block;
}
.qr svg {
  display: block;
  width: min(70vmin, 420px);
  height: auto;
}
.url {
  font: 15px/1.4 ui-monospace, "Cascadia Mono", Consolas, monospace;
  word-break: break-all;
  user-select: all;
  margin: 12px 0;
  padding: 8px;
  border-radius: 6px;
  background: var(--bg);
}
ol {
  text-align: left;
  margin: 12px 0 0;
  padding-left: 1.4em;
}
.room {
  margin: 0 0 12px;
}
.room strong {
  display: block;
  font-size: 1.15em;
}
.muted {
  color: var(--muted);
  font-size: .9em;
}
</style>
</head>
<body>
<main>
<h1>Pair your phone</h1>
{{room}}
<div class="qr" role="img" aria-label="QR code of the chat address">{{svg}}</div>
<p class="url">{{url}}</p>
<ol>
<li>Connect the phone to the same WiFi as this PC (not a guest network).</li>
<li>Scan the code with the phone's camera, or type the address above.</li>
<li>Pick a nickname and chat.</li>
</ol>
<p class="muted">The code contains the chat's key: show it only to people you want in.
Phone cannot connect? On Windows, right-click {{firewall}} &gt; Run with PowerShell.</p>
<p><a href="/admin">Run the room: the organiser page</a> (who is online, remove a message,
kick, mute or ban, lock the room, a new pairing code) opens on this PC only.</p>
</main>
</body>
</html>
"""

# client_web/admin.html: the organiser's page served at GET /admin (on the PC itself only),
# with admin.css and admin.js inlined: it polls /admin/api/state and posts the operator's
# requests; the key comes with the page as an HttpOnly cookie, never in the page.
ADMIN_PAGE_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>Organiser - LAN Chat</title>
<link rel="icon" href="data:,">
<style>
:root {
  --bg: #f2f4f7;
  --panel: #fff;
  --text: #14171c;
  --muted: #5b6472;
  --line: #e1e5eb;
  --accent: #1f5fd6;
  --on-accent: #fff;
  --bad: #b42318;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0e1116;
    --panel: #161a21;
    --text: #e7eaf0;
    --muted: #a0a8b6;
    --line: #272d38;
    --accent: #7aa2ff;
    --on-accent: #0b1020;
    --bad: #ff8a80;
  }
}
* {
  box-sizing: border-box;
}
body {
  margin: 0;
  background: var(--bg);
  color: var(--text);
  font: 15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
}
header {
  display: flex;
  align-items: baseline;
  gap: 16px;
  padding: 12px 20px;
  background: var(--panel);
  border-bottom: 1px solid var(--line);
}
h1 {
  margin: 0;
  font-size: 20px;
}
#status {
  color: var(--muted);
  font-size: 14px;
}
main {
  display: grid;
  grid-template-columns: repeat(auto-fit,minmax(420px,1fr));
  gap: 16px;
  padding: 16px;
}
section {
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: 12px;
  padding: 12px 16px;
  min-width: 0;
}
h2 {
  margin: 0 0 8px;
  font-size: 16px;
}
.grid {
  display: grid;
  grid-template-columns: auto 1fr;
  gap: 8px 10px;
  align-items: center;
}
.row {
  display: flex;
  flex-wrap: wrap;
  gap: 8px;
  align-items: center;
}
input, select, button {
  font: inherit;
  color: var(--text);
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: 8px;
  padding: 5px 10px;
}
button {
  cursor: pointer;
}
button.primary {
  background: var(--accent);
  color: var(--on-accent);
  border-color: transparent;
}
button.danger {
  color: var(--bad);
  border-color: var(--bad);
}
a {
  color: var(--accent);
}
.muted {
  color: var(--muted);
  font-size: 14px;
}
.scroll {
  overflow-x: auto;
}
table {
  border-collapse: collapse;
  width: 100%;
  font-size: 14px;
}
th, td {
  text-align: left;
  padding: 5px 6px;
  border-bottom: 1px solid var(--line);
  vertical-align: top;
}
td.t {
  overflow-wrap: anywhere;
}
td .row {
  gap: 4px;
}
td button {
  padding: 2px 8px;
  font-size: 13px;
}
.pair {
  display: flex;
  gap: 16px;
  align-items: flex-start;
  flex-wrap: wrap;
}
#qr {
  background: #fff;
  border-radius: 8px;
  padding: 6px;
}
.url {
  font-family: ui-monospace,Consolas,monospace;
  word-break: break-all;
}
ul {
  padding-left: 18px;
  margin: 4px 0 8px;
}
li {
  margin: 3px 0;
}
#toast {
  position: fixed;
  left: 50%;
  bottom: 16px;
  transform: translateX(-50%);
  background: #222;
  color: #fff;
  padding: 8px 14px;
  border-radius: 8px;
}
#toast:empty {
  display: none;
}
.vh {
  position: absolute;
  width: 1px;
  height: 1px;
  overflow: hidden;
  clip: rect(0 0 0 0);
}
</style>
</head>
<body>
<header><h1>Organiser</h1><span id="status" role="status">Loading…</span></header>
<main>
 <section aria-labelledby="roomTitle">
  <h2 id="roomTitle">Room</h2>
  <form id="roomForm" class="grid">
   <label for="roomName">Name</label><input id="roomName" maxlength="80" placeholder="e.g. Class 4B">
   <label for="roomTopic">Topic</label><input id="roomTopic" maxlength="300" placeholder="shown under the name">
   <span></span><div class="row"><button type="submit" class="primary">Save name and topic</button>
   <button type="button" id="lockBtn">Lock the room</button></div>
  </form>
  <p id="lockState" class="muted"></p>
 </section>
 <section aria-labelledby="pairTitle">
  <h2 id="pairTitle">Pairing</h2>
  <div class="pair"><img id="qr" alt="QR code of the chat address" width="200" height="200">
   <div><p class="url" id="pairUrl"></p>
   <button type="button" id="rotateBtn">Replace the pairing code</button>
   <p class="muted">Phones that joined stay; new ones need the new code.</p></div></div>
 </section>
 <section aria-labelledby="usersTitle">
  <h2 id="usersTitle">Online</h2>
  <div class="scroll"><table id="users"><thead><tr><th scope="col">Nick</th><th scope="col">Device</th><th scope="col">Address</th><th scope="col">Via</th><th scope="col">Since</th><th scope="col">Messages</th><th scope="col">Actions</th></tr></thead><tbody></tbody></table></div>
  <p id="noUsers" class="muted" hidden>Nobody is online.</p>
  <div class="row"><label for="banFor">Ban for</label>
   <select id="banFor"><option value="10">10 minutes</option><option value="60">1 hour</option><option value="1440">1 day</option><option value="0" selected>until lifted</option></select>
   <label for="reason">Reason</label><input id="reason" maxlength="200" placeholder="optional, shown to them"></div>
 </section>
 <section aria-labelledby="bansTitle">
  <h2 id="bansTitle">Bans and mutes</h2>
  <ul id="bans"></ul>
  <form id="banAddr" class="row"><label for="addr">Ban an address</label><input id="addr" placeholder="192.168.1.23" inputmode="decimal"><button type="submit">Ban address</button></form>
 </section>
 <section aria-labelledby="msgTitle">
  <h2 id="msgTitle">Messages and files</h2>
  <p id="counters"></p>
  <form id="delForm" class="row"><label for="delId">Remove message number</label><input id="delId" type="number" min="1" inputmode="numeric"><button type="submit">Remove for everyone</button></form>
  <div class="scroll"><table id="recent"><thead><tr><th scope="col">#</th><th scope="col">From</th><th scope="col">Message</th><th scope="col"><span class="vh">Remove</span></th></tr></thead><tbody></tbody></table></div>
  <p class="row"><a href="/admin/export.html" target="_blank" rel="noopener">Open the history</a>
   <a href="/admin/export.json" download>Export JSON</a><a href="/admin/export.zip" download>Export zip (with files)</a></p>
  <button type="button" id="clearBtn" class="danger">Clear the whole history…</button>
 </section>
 <section aria-labelledby="evTitle">
  <h2 id="evTitle">Recent events</h2>
  <ul id="events"></ul>
 </section>
</main>
<div id="toast" role="alert"></div>
<script>
(function () {
'use strict';
// The organiser's page (docs/PROTOCOL.md section 11). The server handed the operator key over
// as an HttpOnly cookie with this page: every request below carries it by itself.
var POLL_MS = 1000, TOAST_MS = 5000;

function $(id) { return document.getElementById(id); }
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;   // data is always text, never markup
  return e;
}
function when(ts) { var d = new Date(ts); return isNaN(d) ? '' : d.toLocaleString(); }
function size(n) {
  var u = ['B', 'KB', 'MB', 'GB', 'TB'], i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i && n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
}
var toastTimer = 0;
function toast(text) {
  $('toast').textContent = text;
  clearTimeout(toastTimer); toastTimer = setTimeout(function () { $('toast').textContent = ''; }, TOAST_MS);
}

function act(action, body) {
  return fetch('/admin/api/' + action, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {})
  }).then(function (r) {
    return r.json().catch(function () { return {}; }).then(function (j) {
      if (!r.ok) throw new Error(j.message || ('HTTP ' + r.status));
      return j;
    });
  }).then(function (j) { refresh(); return j; },
          function (e) { toast(e.message); throw e; });
}

var S = { state: null, editing: false, qr: 0 };

function refresh() {
  return fetch('/admin/api/state', { credentials: 'same-origin' }).then(function (r) {
    if (r.status === 401) { $('status').textContent = 'The server restarted: reload this page.'; return null; }
    return r.json();
  }).then(function (st) {
    if (!st) return;
    S.state = st; render(st);
    $('status').textContent = 'Live · ' + new Date().toLocaleTimeString();
  }, function () { $('status').textContent = 'The server does not answer.'; });
}

function render(st) {
  var room = st.room || {};
  if (!S.editing) { $('roomName').value = room.name || ''; $('roomTopic').value = room.topic || ''; }
  $('lockBtn').textContent = room.locked ? 'Unlock the room' : 'Lock the room';
  $('lockState').textContent = room.locked ? 'Locked: nobody new may join; people already in, and those coming back, can.'
                                           : 'Open: anyone with the pairing code may join.';
  if ($('pairUrl').textContent !== st.pairing_url) {
    $('pairUrl').textContent = st.pairing_url;
    $('qr').src = '/qr.svg?v=' + (++S.qr);
  }
  renderUsers(st.users || []);
  renderBans(st.bans || [], st.mutes || []);
  var c = st.counters || {};
  $('counters').textContent = (c.messages || 0) + ' messages, ' + (c.files || 0) + ' files (' +
    size(c.file_bytes || 0) + '), ' + size(c.free_disk || 0) + ' free on the disk, ' +
    (c.connections || 0) + ' connections.';
  renderRecent(st.recent || []);
  var ev = $('events'); ev.textContent = '';
  (st.events || []).slice().reverse().forEach(function (e) {
    ev.appendChild(el('li', null, when(e.ts) + ' — ' + e.text));
  });
  if (!ev.firstChild) ev.appendChild(el('li', 'muted', 'Nothing to report.'));
}

function button(text, onClick, cls) {
  var b = el('button', cls || null, text); b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

function renderUsers(users) {
  var body = $('users').tBodies[0]; body.textContent = '';
  users.forEach(function (u) {
    var tr = el('tr');
    [u.nick + (u.muted ? ' (muted)' : ''), u.device, u.address, u.transport, when(u.since),
     String(u.messages)].forEach(function (v) { tr.appendChild(el('td', null, v)); });
    var td = el('td'), row = el('div', 'row');
    row.appendChild(button('Kick', function () {
      act('kick', { nick: u.nick, reason: $('reason').value.trim() || undefined });
    }));
    row.appendChild(button(u.muted ? 'Unmute' : 'Mute', function () {
      act(u.muted ? 'unmute' : 'mute', { nick: u.nick });
    }));
    row.appendChild(button('Ban', function () {
      var minutes = +$('banFor').value;
      if (!window.confirm('Ban ' + u.nick + "'s device " + $('banFor').selectedOptions[0].text + '?')) return;
      act('ban', { nick: u.nick, minutes: minutes, reason: $('reason').value.trim() || undefined });
    }, 'danger'));
    row.querySelectorAll('button').forEach(function (b) { b.setAttribute('aria-label', b.textContent + ' ' + u.nick); });
    td.appendChild(row); tr.appendChild(td); body.appendChild(tr);
  });
  $('noUsers').hidden = users.length > 0;
}

function renderBans(bans, mutes) {
  var ul = $('bans'); ul.textContent = '';
  bans.forEach(function (b) {
    var li = el('li', null, (b.kind === 'device' ? 'Device ' + b.value + (b.nick ? ' (' + b.nick + ')' : '')
                                                 : 'Address ' + b.value) +
                ', ' + (b.until ? 'until ' + when(b.until) : 'until lifted') + (b.reason ? ' — ' + b.reason : '') + ' ');
    var un = button('Unban', function () { act('unban', { id: b.id }); });
    un.setAttribute('aria-label', 'Unban ' + (b.nick || b.value));
    li.appendChild(un); ul.appendChild(li);
  });
  mutes.forEach(function (m) {
    var li = el('li', null, 'Muted: ' + m.nick + ' (device ' + m.device + ') ');
    var un = button('Unmute', function () { act('unmute', { nick: m.nick }); });
    un.setAttribute('aria-label', 'Unmute ' + m.nick);
    li.appendChild(un); ul.appendChild(li);
  });
  if (!ul.firstChild) ul.appendChild(el('li', 'muted', 'No bans, nobody muted.'));
}

function renderRecent(msgs) {
  var body = $('recent').tBodies[0]; body.textContent = '';
  msgs.slice().reverse().forEach(function (m) {
    var tr = el('tr');
    tr.appendChild(el('td', null, String(m.id)));
    tr.appendChild(el('td', null, (m.from || '?') + (m.to ? ' → ' + m.to : '')));
    var text = m.deleted ? 'message removed' : m.private ? 'private message' :
      (m.text || '') + (m.file ? ' [' + m.file.name + ', ' + size(m.file.size) + ']' : '') + (m.edited ? ' (edited)' : '');
    tr.appendChild(el('td', 't', text));
    var td = el('td');
    if (!m.deleted) {
      var b = button('Remove', function () { if (window.confirm('Remove message ' + m.id + ' for everyone?')) act('delete', { id: m.id }); }, 'danger');
      b.setAttribute('aria-label', 'Remove message ' + m.id);
      td.appendChild(b);
    }
    tr.appendChild(td); body.appendChild(tr);
  });
}

$('roomForm').addEventListener('submit', function (e) {
  e.preventDefault();
  act('room', { name: $('roomName').value.trim(), topic: $('roomTopic').value.trim() })
    .then(function () { S.editing = false; toast('Saved.'); }, function () {});
});
['roomName', 'roomTopic'].forEach(function (id) {
  $(id).addEventListener('input', function () { S.editing = true; });
});
$('lockBtn').addEventListener('click', function () {
  act('room', { locked: !(S.state && S.state.room && S.state.room.locked) });
});
$('rotateBtn').addEventListener('click', function () {
  if (window.confirm('Replace the pairing code? Phones that have not joined yet need the new one.')) {
    act('rotate_token').then(function () { toast('New pairing code.'); }, function () {});
  }
});
$('banAddr').addEventListener('submit', function (e) {
  e.preventDefault();
  var a = $('addr').value.trim(); if (!a) return;
  act('ban', { address: a, minutes: +$('banFor').value, reason: $('reason').value.trim() || undefined })
    .then(function () { $('addr').value = ''; }, function () {});
});
$('delForm').addEventListener('submit', function (e) {
  e.preventDefault();
  var id = parseInt($('delId').value, 10); if (!id) return;
  act('delete', { id: id }).then(function () { $('delId').value = ''; toast('Removed.'); }, function () {});
});
$('clearBtn').addEventListener('click', function () {
  var typed = window.prompt('This removes every message and file for everyone. Type "clear" to confirm.');
  if (typed === 'clear') act('clear', { confirm: 'clear' }).then(function () { toast('History cleared.'); }, function () {});
});

refresh();
setInterval(refresh, POLL_MS);
})();
</script>
</body>
</html>
""".encode("utf-8")

# client_web/export.html: the template of the readable history export (GET
# /admin/export.html and the zip's history.html); OperatorApi.export_html() fills
# {{title}}, {{topic}}, {{exported}} and {{rows}}, all escaped. No script.
_EXPORT_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{{title}}</title>
<style>
body {
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 2rem;
}
table {
  border-collapse: collapse;
  width: 100%;
}
th {
  text-align: left;
  padding: .4rem;
}
td {
  border-bottom: 1px solid #8884;
  padding: .4rem;
  vertical-align: top;
}
td:first-child {
  white-space: nowrap;
  opacity: .75;
}
</style>
</head>
<body>
<main>
<h1>{{title}}</h1>
<p>{{topic}}</p>
<p><small>Exported {{exported}} UTC</small></p>
<table>
<thead><tr><th scope="col">Time (UTC)</th><th scope="col">From</th><th scope="col">Message</th></tr></thead>
<tbody>
{{rows}}
</tbody>
</table>
</main>
</body>
</html>
"""

# END GENERATED client_web/


if __name__ == "__main__":
    sys.exit(main())
