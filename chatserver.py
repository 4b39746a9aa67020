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
"""

__version__ = "1.0.0"

import argparse
import collections
import datetime
import errno
import hashlib
import heapq
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
import time
import unicodedata

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
PRESENCE_LIMIT = 500                  # no join/leave events above this many users online
WELCOME_USERS_MAX = 500               # nicks listed in welcome.users

# Flood control: token bucket per connection (messages per second, burst).
DEFAULT_RATE_LIMIT = 20.0
DEFAULT_RATE_BURST = 50

# Connections.
DEFAULT_MAX_CLIENTS = 1000
WINDOWS_SELECT_MAX_CLIENTS = 500      # CPython's select() on Windows handles at most 512 sockets
REJECT_POOL = 16                      # over-capacity sockets kept briefly to send server_full
REJECT_WAIT = 2.0                     # seconds we wait for their first byte
RECV_SIZE = 256 * 1024
WRITE_BUDGET = 1024 * 1024            # bytes written to one connection per loop turn (fairness)
MAX_IOV = 512                         # buffers handed to one sendmsg() call
OUT_HARD_LIMIT = 16 * 1024 * 1024     # queued output that closes a connection at once
OUT_SOFT_LIMIT = 4 * 1024 * 1024      # queued output tolerated for OUT_SOFT_SECONDS
OUT_SOFT_SECONDS = 30.0
PING_AFTER = 30.0                     # silence before the server pings
IDLE_TIMEOUT = 90.0                   # silence before the server closes
SHUTDOWN_GRACE = 1.5                  # seconds spent flushing `bye` on shutdown
MAX_SELECT_TIMEOUT = 1.0              # lets Ctrl+C through on Windows, where select() is not interrupted
AUTH_FREE_FAILURES = 3                # failures per address before answers slow down
AUTH_MAX_DELAY = 10.0

# Files.
DEFAULT_MAX_FILE_SIZE = 4 * 1024 ** 3
DEFAULT_MIN_FREE_DISK = 256 * 1024 ** 2
DEFAULT_MAX_UPLOADS = 4               # concurrent uploads per nick
UPLOAD_GRACE = 3600.0                 # partial uploads kept this long for resume
UPLOAD_SWEEP_EVERY = 60.0
DOWNLOAD_CHUNK = 256 * 1024
DOWNLOAD_LOW_WATER = 512 * 1024       # read the next chunk only below this much queued output
MAX_FILE_NAME = 200
HASH_READ = 1024 * 1024

IS_WINDOWS = sys.platform == "win32"

###############################################################################
# Errors ######################################################################
###############################################################################

# Stable machine codes sent in `error` frames, and whether the connection closes after them.
ERROR_FATAL = {
    "bad_frame": True, "frame_too_large": True, "bad_json": False, "bad_request": False,
    "unknown_type": False, "proto_unsupported": True, "auth_failed": True,
    "nick_invalid": False, "nick_taken": False, "not_joined": False, "text_too_long": False,
    "rate_limited": False, "unknown_user": False, "server_full": True, "timeout": True,
    "slow_consumer": True, "file_too_large": False, "disk_full": False,
    "too_many_uploads": False, "unknown_upload": False, "bad_offset": False,
    "size_mismatch": False, "checksum_mismatch": False, "unknown_file": False,
    "forbidden": False, "shutting_down": True,
}


class ChatError(Exception):
    """An error a client caused; `code` goes on the wire, `message` is for people."""

    def __init__(self, code, message, ref=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    @property
    def fatal(self):
        return ERROR_FATAL.get(self.code, True)


class FrameError(ChatError):
    """The byte stream cannot be split into frames any more: the connection must close."""


def bad_request(message, ref=None):
    return ChatError("bad_request", message, ref)

###############################################################################
# Small helpers ###############################################################
###############################################################################

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dump_json(obj):
    """Compact UTF-8 JSON, the encoding every client expects (PROTOCOL.md section 1)."""
    return _json_encoder.encode(obj).encode("utf-8")


def utc_timestamp(now=None):
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-25T09:14:03.120Z."""
    if now is None:
        now = time.time()
    dt = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def nick_key(nick):
    """Nicks are unique case-insensitively."""
    return nick.casefold()


_FORBIDDEN_NICK_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def validate_nick(value):
    """Trimmed, 1..32 characters, no control or invisible formatting characters."""
    if not isinstance(value, str):
        raise ChatError("nick_invalid", "The nick must be a string.")
    nick = value.strip()
    if not nick:
        raise ChatError("nick_invalid", "The nick is empty.")
    if len(nick) > MAX_NICK_CHARS:
        raise ChatError("nick_invalid", "The nick is longer than %d characters." % MAX_NICK_CHARS)
    if any(unicodedata.category(ch) in _FORBIDDEN_NICK_CATEGORIES for ch in nick):
        raise ChatError("nick_invalid", "The nick contains control characters.")
    return nick


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


def decode_header(raw):
    """JSON header bytes -> dict with a string `type`, or ChatError (not fatal)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ChatError("bad_json", "The frame header is not valid UTF-8 JSON.") from None
    if not isinstance(obj, dict):
        raise bad_request("The frame header must be a JSON object.")
    if not isinstance(obj.get("type"), str):
        raise bad_request("The frame header has no string field 'type'.")
    return obj


class FrameDecoder:
    """Splits a byte stream into (raw_header, payload) frames. No sockets here.

    `feed(data)` returns the complete frames; a declared length over a limit raises
    FrameError before any of the frame body is awaited.
    """

    def __init__(self, max_header=MAX_HEADER_BYTES, max_payload=MAX_PAYLOAD_BYTES):
        self.max_header = max_header
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data):
        self._buf += data
        return list(self.frames())

    def append(self, data):
        self._buf += data

    def frames(self):
        """Yield complete frames from the buffer; raise FrameError at the first bad one."""
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= 8:
                hlen, plen = FRAME_PREFIX.unpack_from(buf, pos)
                if hlen == 0:
                    raise FrameError("bad_frame", "A frame header length of 0 is not allowed.")
                if hlen > self.max_header:
                    raise FrameError("frame_too_large", "Frame header of %d bytes exceeds the "
                                     "limit of %d." % (hlen, self.max_header))
                if plen > self.max_payload:
                    raise FrameError("frame_too_large", "Frame payload of %d bytes exceeds the "
                                     "limit of %d." % (plen, self.max_payload))
                end = pos + 8 + hlen + plen
                if len(buf) < end:
                    break
                start = pos + 8
                yield bytes(buf[start:start + hlen]), bytes(buf[start + hlen:end])
                pos = end
        finally:
            if pos:
                del buf[:pos]

    @property
    def buffered(self):
        """Bytes held for an incomplete frame."""
        return len(self._buf)

###############################################################################
# Storage: messages (SQLite) ##################################################
###############################################################################


class MessageStore:
    """Chat history in SQLite (WAL). Writes go into an open transaction that the event loop
    commits once per turn (group commit); nothing is delivered before that commit."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY,
            sender_key TEXT NOT NULL,
            recipient_key TEXT,
            cid TEXT NOT NULL,
            body TEXT NOT NULL
        );
        CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_cid ON messages(sender_key, cid);
        CREATE TABLE IF NOT EXISTS files (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            mime TEXT NOT NULL,
            sender_key TEXT NOT NULL,
            recipient_key TEXT,
            created REAL NOT NULL
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
            updated REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """

    def __init__(self, path, synchronous="FULL"):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=%s" % ("FULL" if synchronous == "FULL" else "NORMAL"))
        self.db.executescript(self.SCHEMA)
        row = self.db.execute("SELECT MAX(id) FROM messages").fetchone()
        self.last_id = row[0] or 0
        self.in_transaction = False

    # -- transactions ---------------------------------------------------------

    def begin(self):
        if not self.in_transaction:
            self.db.execute("BEGIN")
            self.in_transaction = True

    def commit(self):
        if self.in_transaction:
            self.db.execute("COMMIT")
            self.in_transaction = False

    def close(self):
        self.commit()
        self.db.close()

    # -- messages -------------------------------------------------------------

    def add_message(self, sender_key, recipient_key, cid, build_body):
        """Store a message under the next id; `build_body(id)` returns its JSON text.
        Returns (id, body, is_new): a repeated (sender, cid) gives the original back."""
        existing = self.db.execute(
            "SELECT id, body FROM messages WHERE sender_key=? AND cid=?",
            (sender_key, cid)).fetchone()
        if existing:
            return existing[0], existing[1], False
        self.begin()
        msg_id = self.last_id + 1
        body = build_body(msg_id)
        self.db.execute("INSERT INTO messages (id, sender_key, recipient_key, cid, body) "
                        "VALUES (?, ?, ?, ?, ?)", (msg_id, sender_key, recipient_key, cid, body))
        self.last_id = msg_id
        return msg_id, body, True

    def history(self, reader_key, after=0, before=None, limit=HISTORY_PAGE_DEFAULT):
        """Newest `limit` messages visible to `reader_key` with after < id < before, oldest
        first, and whether older ones remain in that range."""
        if before is None:
            before = self.last_id + 1
        rows = self.db.execute(
            "SELECT id, body FROM messages WHERE id > ? AND id < ? AND "
            "(recipient_key IS NULL OR recipient_key = ? OR sender_key = ?) "
            "ORDER BY id DESC LIMIT ?",
            (after, before, reader_key, reader_key, limit + 1)).fetchall()
        has_more = len(rows) > limit
        bodies = [body for _, body in rows[:limit]]
        bodies.reverse()
        return bodies, has_more

    # -- files and uploads ----------------------------------------------------

    def add_file(self, meta):
        self.begin()
        self.db.execute(
            "INSERT INTO files (id, name, size, sha256, mime, sender_key, recipient_key, created)"
            " VALUES (:id, :name, :size, :sha256, :mime, :sender_key, :recipient_key, :created)",
            meta)

    def get_file(self, file_id):
        row = self.db.execute(
            "SELECT id, name, size, sha256, mime, sender_key, recipient_key FROM files "
            "WHERE id=?", (file_id,)).fetchone()
        if row is None:
            return None
        keys = ("id", "name", "size", "sha256", "mime", "sender_key", "recipient_key")
        return dict(zip(keys, row))

    def file_ids(self):
        return {row[0] for row in self.db.execute("SELECT id FROM files")}

    def save_upload(self, up):
        self.begin()
        self.db.execute(
            "INSERT OR REPLACE INTO uploads (id, owner_key, owner, name, size, sha256, mime, "
            "recipient, cid, caption, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (up.id, up.owner_key, up.owner, up.name, up.size, up.sha256_expected, up.mime,
             up.recipient, up.cid, up.caption, up.updated))

    def delete_upload(self, upload_id):
        self.begin()
        self.db.execute("DELETE FROM uploads WHERE id=?", (upload_id,))

    def load_uploads(self):
        return self.db.execute(
            "SELECT id, owner_key, owner, name, size, sha256, mime, recipient, cid, caption, "
            "updated FROM uploads").fetchall()

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
    """A file being received: streamed to `<data>/uploads/<id>.part`, never held in memory."""

    __slots__ = ("id", "owner_key", "owner", "name", "size", "sha256_expected", "mime",
                 "recipient", "cid", "caption", "updated", "received", "hasher", "fh", "path")

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
        self.updated = time.time()
        self.received = 0
        self.hasher = hashlib.sha256()
        self.fh = None

    def open_for_append(self):
        """(Re)open the partial file; after a restart, rebuild the hash from what is on disk."""
        if self.fh is not None:
            return
        self.fh = open(self.path, "ab", buffering=0)
        self.received = self.fh.tell()
        if self.received:
            self.hasher = hashlib.sha256()
            with open(self.path, "rb") as f:
                for block in iter(lambda: f.read(HASH_READ), b""):
                    self.hasher.update(block)

    def write(self, data):
        self.fh.write(data)
        self.hasher.update(data)
        self.received += len(data)
        self.updated = time.time()

    def close(self):
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class FileStore:
    """Finished files live under `<data>/files/<id>`, partial ones under `<data>/uploads/`.
    Client-supplied names are metadata only and never touch the file system."""

    def __init__(self, root, store):
        self.root = root
        self.store = store
        self.files_dir = os.path.join(root, "files")
        self.uploads_dir = os.path.join(root, "uploads")
        os.makedirs(self.files_dir, exist_ok=True)
        os.makedirs(self.uploads_dir, exist_ok=True)
        self.uploads = {}

    def recover(self, now=None):
        """After a crash: keep resumable partial uploads, delete orphans and expired ones,
        and delete stored files that no committed row lists (a rename that beat its commit)."""
        now = time.time() if now is None else now
        for row in self.store.load_uploads():
            up = Upload(row[0], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                        self.part_path(row[0]))
            up.updated = row[10]
            if now - up.updated > UPLOAD_GRACE or not os.path.exists(up.path):
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
        if removed:
            log.info("removed %d orphaned file(s) left by an interrupted run", removed)

    def part_path(self, upload_id):
        return os.path.join(self.uploads_dir, upload_id + ".part")

    def file_path(self, file_id):
        return os.path.join(self.files_dir, file_id)

    def free_bytes(self):
        return shutil.disk_usage(self.root).free

    def reserved_bytes(self):
        return sum(up.size - up.received for up in self.uploads.values())

    def start(self, owner, name, size, sha256_expected, mime, recipient, cid, caption):
        upload_id = "u" + secrets.token_hex(12)
        up = Upload(upload_id, owner, name, size, sha256_expected, mime, recipient, cid, caption,
                    self.part_path(upload_id))
        up.open_for_append()
        self.uploads[upload_id] = up
        self.store.save_upload(up)
        return up

    def discard(self, up):
        up.close()
        _remove_quietly(up.path)
        self.uploads.pop(up.id, None)
        self.store.delete_upload(up.id)

    def finish(self, up, sender_key, recipient_key):
        """Move a complete upload into the store; returns the file's metadata."""
        up.close()
        file_id = "f" + secrets.token_hex(12)
        os.replace(up.path, self.file_path(file_id))
        self.uploads.pop(up.id, None)
        self.store.delete_upload(up.id)
        meta = {"id": file_id, "name": up.name, "size": up.size,
                "sha256": up.hasher.hexdigest(), "mime": up.mime, "sender_key": sender_key,
                "recipient_key": recipient_key, "created": time.time()}
        self.store.add_file(meta)
        return meta

    def expire(self, now):
        for up in [u for u in self.uploads.values() if now - u.updated > UPLOAD_GRACE]:
            log.info("partial upload %s (%s) expired", up.id, up.name)
            self.discard(up)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass

###############################################################################
# Chat domain #################################################################
###############################################################################


class Outbox:
    """What one loop turn will send, in order; delivered only after the turn's commit.

    Entries are (targets, json_bytes): targets None means every joined client."""

    def __init__(self):
        self.entries = []

    def broadcast(self, raw):
        self.entries.append((None, raw))

    def send(self, targets, raw):
        self.entries.append((targets, raw))

    def take(self):
        entries, self.entries = self.entries, []
        return entries


def _hello_fields(h):
    since = h.get("since")
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        raise bad_request("'since' must be a non-negative integer.")
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


class Chat:
    """Sessions, nicks, messages, files: the protocol's meaning, with no sockets in it.

    Connections are duck-typed: the domain reads and sets `nick`, `key`, `session`,
    `bucket`, `peer`, and hands them to the Outbox. The event loop does the I/O."""

    def __init__(self, store, files, config):
        self.store = store
        self.files = files
        self.config = config
        self.outbox = Outbox()
        self.joined = {}            # nick key -> connection
        self.sessions = {}          # session secret -> connection (for HTTP file routes)
        self.token = None           # pairing token; None = open server
        self.closing = []           # (connection, reason) to close after this turn
        self.streams = []           # (connection, file meta, offset): downloads to start
        self.handlers = {
            # type: (method, needs_join, rate_limited, payload_allowed)
            "hello": (self.on_hello, False, False, False),
            "ping": (self.on_ping, False, False, False),
            "pong": (self.on_pong, False, False, False),
            "msg": (self.on_msg, True, True, False),
            "history": (self.on_history, True, True, False),
            "typing": (self.on_typing, True, True, False),
            "upload": (self.on_upload, True, True, False),
            "chunk": (self.on_chunk, True, False, True),
            "upload_status": (self.on_upload_status, True, False, False),
            "upload_cancel": (self.on_upload_cancel, True, False, False),
            "download": (self.on_download, True, True, False),
            "download_cancel": (self.on_download_cancel, True, False, False),
        }

    # -- entry point ----------------------------------------------------------

    def handle(self, conn, raw_header, payload=b"", now=None):
        """One frame (or WebSocket text message) from `conn`. Client errors become `error`
        frames here, in one place."""
        ref = None
        try:
            header = decode_header(raw_header)
            ref = header.get("cid") if isinstance(header.get("cid"), str) else None
            entry = self.handlers.get(header["type"])
            if entry is None:
                raise ChatError("unknown_type", "Unknown message type %r." % header["type"][:40])
            method, needs_join, rate_limited, payload_allowed = entry
            if needs_join and conn.nick is None:
                raise ChatError("not_joined", "Send 'hello' first.")
            if payload and not payload_allowed:
                raise bad_request("A '%s' frame carries no payload." % header["type"])
            if rate_limited and not conn.bucket.take(time.monotonic() if now is None else now):
                raise ChatError("rate_limited", "Too many messages; slow down.")
            method(conn, header, payload)
        except ChatError as err:
            self.reject(conn, err, ref if err.ref is None else err.ref)

    def reject(self, conn, err, ref=None):
        log.log(logging.WARNING if err.fatal else logging.INFO, "%s: %s (%s)",
                conn.label(), err.code, err.message)
        frame = {"type": "error", "code": err.code, "message": err.message}
        if ref is not None:
            frame["ref"] = ref
        frame["fatal"] = err.fatal
        self.outbox.send((conn,), dump_json(frame))
        if err.fatal:
            self.closing.append((conn, err.code))

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
        nick = validate_nick(h.get("nick"))
        key = nick_key(nick)
        if key in self.joined:
            raise ChatError("nick_taken", "The nick %r is already in use." % nick)
        log.info("%s joined as %r (%s)", conn.label(), nick, client or "unknown client")
        conn.nick, conn.key = nick, key
        conn.session = secrets.token_urlsafe(18)
        self.joined[key] = conn
        self.sessions[conn.session] = conn
        self.outbox.send((conn,), self.welcome(conn, since))
        if len(self.joined) <= PRESENCE_LIMIT:
            self.outbox.broadcast(dump_json({"type": "join", "nick": nick}))

    def welcome(self, conn, since):
        if since is None:
            bodies, has_more = self.store.history(conn.key, limit=WELCOME_HISTORY_NEW)
        else:
            bodies, has_more = self.store.history(conn.key, after=since,
                                                  limit=WELCOME_HISTORY_RESUME)
        users = [c.nick for c in self.joined.values()][:WELCOME_USERS_MAX]
        head = dump_json({
            "type": "welcome", "nick": conn.nick, "server": "chatserver/" + __version__,
            "proto": PROTOCOL_VERSION, "session": conn.session, "users": users,
            "online": len(self.joined), "has_more": has_more, "last_id": self.store.last_id,
            "limits": {"text": MAX_TEXT_BYTES, "chunk": MAX_PAYLOAD_BYTES,
                       "file": self.config.max_file_size}})
        # History goes last, spliced from the stored JSON without decoding it.
        return head[:-1] + b',"history":[' + ",".join(bodies).encode("utf-8") + b"]}"

    def leave(self, conn, reason):
        """A joined connection is gone (closed by either side)."""
        if conn.nick is None or self.joined.get(conn.key) is not conn:
            return
        del self.joined[conn.key]
        self.sessions.pop(conn.session, None)
        log.info("%s left (%s)", conn.label(), reason)
        if len(self.joined) < PRESENCE_LIMIT:
            self.outbox.broadcast(dump_json({"type": "leave", "nick": conn.nick,
                                             "reason": reason}))

    def on_ping(self, conn, h, payload):
        reply = {"type": "pong"}
        if "t" in h:
            reply["t"] = h["t"]
        self.outbox.send((conn,), dump_json(reply))

    def on_pong(self, conn, h, payload):
        pass  # any frame counts as life; the connection layer noted it

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
        target = self.recipient(h, cid)
        self.post(conn, cid, target, {"text": text})

    def post(self, conn, cid, target, fields, recipient_name=None):
        """Store a message and queue it for everyone concerned (sender included: the ack)."""
        to = target.nick if target is not None else recipient_name
        to_key = nick_key(to) if to is not None else None
        now = time.time()

        def build_body(msg_id):
            msg = {"type": "msg", "id": msg_id, "ts": utc_timestamp(now), "from": conn.nick}
            msg.update(fields)
            msg["cid"] = cid
            if to is not None:
                msg["to"] = to
            return _json_encoder.encode(msg)

        msg_id, body, is_new = self.store.add_message(conn.key, to_key, cid, build_body)
        raw = body.encode("utf-8")
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

    def on_history(self, conn, h, payload):
        before = _opt_int(h, "before", None, 0, 2 ** 62)
        after = _opt_int(h, "after", 0, 0, 2 ** 62)
        limit = _opt_int(h, "limit", HISTORY_PAGE_DEFAULT, 1, HISTORY_PAGE_MAX)
        bodies, has_more = self.store.history(conn.key, after=after, before=before, limit=limit)
        self.outbox.send((conn,), b'{"type":"history","has_more":' +
                         (b"true" if has_more else b"false") + b',"messages":[' +
                         ",".join(bodies).encode("utf-8") + b"]}")

    def on_typing(self, conn, h, payload):
        target = self.recipient(h, None)
        if target is None:
            if len(self.joined) <= PRESENCE_LIMIT:
                self.outbox.broadcast(dump_json({"type": "typing", "from": conn.nick}))
        elif target is not conn:
            self.outbox.send((target,), dump_json({"type": "typing", "from": conn.nick,
                                                   "to": target.nick}))

    # -- files ----------------------------------------------------------------

    def start_upload(self, conn, name, size, cid, sha256=None, mime=None, target=None,
                     caption=""):
        """Validate an announced file and open its partial file (framed and HTTP uploads)."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_request("'size' must be a non-negative integer.", cid)
        if size > self.config.max_file_size:
            raise ChatError("file_too_large", "Files are limited to %d bytes."
                            % self.config.max_file_size, cid)
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise bad_request("'sha256' must be 64 hexadecimal characters.", cid)
        mine = [u for u in self.files.uploads.values() if u.owner_key == conn.key]
        if len(mine) >= self.config.max_uploads:
            raise ChatError("too_many_uploads", "At most %d uploads at a time."
                            % self.config.max_uploads, cid)
        needed = size + self.files.reserved_bytes() + self.config.min_free_disk
        if self.files.free_bytes() < needed:
            raise ChatError("disk_full", "Not enough free disk space on the server for this "
                            "file.", cid)
        mime = mime if mime and re.fullmatch(r"[\w.+-]+/[\w.+-]+", mime) else \
            "application/octet-stream"
        up = self.files.start(conn.nick, sanitize_file_name(name), size,
                              sha256.lower() if sha256 else None, mime,
                              target.nick if target is not None else None, cid, caption or "")
        log.info("%s uploads %r (%d bytes) as %s", conn.label(), up.name, size, up.id)
        return up

    def on_upload(self, conn, h, payload):
        cid = _req_str(h, "cid", MAX_CID_CHARS)
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
        if up is None or up.owner_key != conn.key:
            raise ChatError("unknown_upload", "No upload %r of yours is in progress."
                            % str(upload_id)[:40], upload_id if isinstance(upload_id, str)
                            else None)
        return up

    def on_chunk(self, conn, h, payload):
        up = self.own_upload(conn, h)
        offset = h.get("offset")
        self.receive_chunk(conn, up, offset, payload)

    def receive_chunk(self, conn, up, offset, data):
        if offset != up.received or isinstance(offset, bool):
            raise ChatError("bad_offset", "Expected offset %d, got %r." % (up.received, offset),
                            up.id)
        if not data:
            raise bad_request("A chunk carries 1 byte or more.", up.id)
        if up.received + len(data) > up.size:
            self.files.discard(up)
            raise ChatError("size_mismatch", "More bytes than the announced %d; the upload is "
                            "discarded." % up.size, up.id)
        up.open_for_append()
        up.write(data)
        if up.received == up.size:
            return self.finish_upload(conn, up)
        return None

    def finish_upload(self, conn, up):
        """Verify and publish a complete upload; returns the file message (JSON bytes)."""
        up.open_for_append()
        digest = up.hasher.hexdigest()
        if up.received != up.size:
            self.files.discard(up)
            raise ChatError("size_mismatch", "Received %d bytes, %d were announced."
                            % (up.received, up.size), up.id)
        if up.sha256_expected and up.sha256_expected != digest:
            self.files.discard(up)
            raise ChatError("checksum_mismatch", "The SHA-256 of the received file differs "
                            "from the announced one; the upload is discarded.", up.id)
        target = self.joined.get(nick_key(up.recipient)) if up.recipient else None
        meta = self.files.finish(up, conn.key, nick_key(up.recipient) if up.recipient else None)
        log.info("%s shared %r (%d bytes) as %s", conn.label(), meta["name"], meta["size"],
                 meta["id"])
        file_info = {k: meta[k] for k in ("id", "name", "size", "sha256", "mime")}
        return self.post(conn, up.cid, target, {"text": up.caption, "file": file_info},
                         recipient_name=up.recipient)

    def on_upload_status(self, conn, h, payload):
        up = self.own_upload(conn, h)
        up.open_for_append()
        up.updated = time.time()
        self.send_upload_ready(conn, up)

    def on_upload_cancel(self, conn, h, payload):
        up = self.own_upload(conn, h)
        log.info("%s cancelled upload %s", conn.label(), up.id)
        self.files.discard(up)

    def readable_file(self, conn_key, file_id):
        """File metadata if `conn_key` may read it, else ChatError."""
        meta = self.store.get_file(file_id) if isinstance(file_id, str) else None
        if meta is None:
            raise ChatError("unknown_file", "No file %r." % str(file_id)[:40],
                            file_id if isinstance(file_id, str) else None)
        if meta["recipient_key"] is not None and conn_key not in (meta["sender_key"],
                                                                  meta["recipient_key"]):
            raise ChatError("forbidden", "This file was shared privately between two other "
                            "users.", file_id)
        return meta

    def on_download(self, conn, h, payload):
        meta = self.readable_file(conn.key, h.get("file"))
        offset = _opt_int(h, "offset", 0, 0, meta["size"], meta["id"])
        self.streams.append((conn, meta, offset))

    def on_download_cancel(self, conn, h, payload):
        file_id = h.get("file")
        if not isinstance(file_id, str):
            raise bad_request("'file' is required.")
        conn.cancel_download(file_id)


def _token_matches(given, expected):
    return isinstance(given, str) and secrets.compare_digest(given.encode("utf-8", "replace"),
                                                             expected.encode("utf-8"))

###############################################################################
# Connections #################################################################
###############################################################################

# Socket errors are classified once here, so the loop never sees raw OSErrors.
_RETRY_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR}


class FileSegment:
    """`count` bytes of an open file at `offset`, queued for output (sendfile when possible)."""

    __slots__ = ("fh", "offset", "count")

    def __init__(self, fh, offset, count):
        self.fh = fh
        self.offset = offset
        self.count = count

    def __len__(self):
        return self.count


class Download:
    __slots__ = ("meta", "fh", "offset", "size")

    def __init__(self, meta, fh, offset):
        self.meta = meta
        self.fh = fh
        self.offset = offset
        self.size = meta["size"]


class Connection:
    """One client socket: input decoder, output queue, liveness, protocol state."""

    __slots__ = ("sock", "fd", "peer", "proto", "decoder", "out", "out_bytes", "nick", "key",
                 "session", "bucket", "last_rx", "soft_since", "closed", "close_after_flush",
                 "downloads", "http", "ws", "registered_write", "timer_due", "auth_blocked")

    def __init__(self, sock, peer, bucket):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.proto = "sniff"          # -> "framed" | "http" | "ws" | "reject"
        self.decoder = None
        self.out = collections.deque()
        self.out_bytes = 0
        self.nick = None
        self.key = None
        self.session = None
        self.bucket = bucket
        self.last_rx = time.monotonic()
        self.soft_since = None
        self.closed = False
        self.close_after_flush = False
        self.downloads = {}
        self.http = None
        self.ws = None
        self.registered_write = False
        self.timer_due = 0.0
        self.auth_blocked = False

    def label(self):
        who = "%s:%s" % (self.peer[0], self.peer[1]) if self.peer else "?"
        return "%s (%s)" % (self.nick, who) if self.nick else who

    def frame(self, raw_json):
        """Encode one JSON message for this connection's transport."""
        if self.proto == "ws":
            return ws_frame(WS_OP_TEXT, raw_json)
        return frame_json(raw_json)

    def cancel_download(self, file_id):
        dl = self.downloads.pop(file_id, None)
        if dl is not None:
            dl.fh.close()

    def release(self):
        for dl in self.downloads.values():
            dl.fh.close()
        self.downloads.clear()
        self.out.clear()
        self.out_bytes = 0

###############################################################################
# Event loop and server #######################################################
###############################################################################


class Config:
    """Every tunable in one place; the CLI fills it."""

    def __init__(self, **kw):
        self.host = DEFAULT_HOST
        self.port = DEFAULT_PORT
        self.data_dir = None
        self.memory = False
        self.max_clients = DEFAULT_MAX_CLIENTS
        self.rate_limit = DEFAULT_RATE_LIMIT
        self.rate_burst = DEFAULT_RATE_BURST
        self.out_hard = OUT_HARD_LIMIT
        self.out_soft = OUT_SOFT_LIMIT
        self.out_soft_seconds = OUT_SOFT_SECONDS
        self.ping_after = PING_AFTER
        self.idle_timeout = IDLE_TIMEOUT
        self.max_file_size = DEFAULT_MAX_FILE_SIZE
        self.min_free_disk = DEFAULT_MIN_FREE_DISK
        self.max_uploads = DEFAULT_MAX_UPLOADS
        self.open = False
        self.new_token = False
        self.sync = "full"
        for name, value in kw.items():
            if not hasattr(self, name):
                raise TypeError("unknown setting %r" % name)
            setattr(self, name, value)


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
            callback(now)


class Server:
    """Accepts, reads, dispatches to the Chat, commits, delivers, flushes — one thread."""

    def __init__(self, config):
        self.config = config
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()
        self.conns = set()
        self.rejecting = set()
        self.dirty = set()
        self.to_close = []
        self.running = False
        self.started = time.time()
        self.auth_failures = {}
        self.listeners = []
        self._tmpdir = None
        self._open_storage()
        self.chat = Chat(self.store, self.files, config)
        self.chat.token = None if config.open else self._pairing_token()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")

    # -- setup ----------------------------------------------------------------

    def _open_storage(self):
        cfg = self.config
        if cfg.memory:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="chatserver-")
            root, db_path = self._tmpdir.name, ":memory:"
        else:
            root = cfg.data_dir or default_data_dir()
            os.makedirs(root, exist_ok=True)
            db_path = os.path.join(root, "chat.sqlite3")
        self.data_root = root
        self.store = MessageStore(db_path, synchronous=cfg.sync.upper())
        self.files = FileStore(root, self.store)
        self.files.recover()

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
        if not IS_WINDOWS:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        sock.listen(512)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, "listen")
        self.listeners.append(sock)
        self.timers.add(time.monotonic() + UPLOAD_SWEEP_EVERY, self._sweep_uploads)
        return sock.getsockname()[:2]

    @property
    def max_clients(self):
        if IS_WINDOWS:
            return min(self.config.max_clients, WINDOWS_SELECT_MAX_CLIENTS)
        return self.config.max_clients

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
            self.run_once()
        self.shutdown()

    def run_once(self):
        now = time.monotonic()
        for key, mask in self.selector.select(self.timers.timeout(now)):
            tag = key.data
            if tag == "listen":
                self._accept(key.fileobj)
            elif tag == "wake":
                self._drain_wake()
            else:
                if mask & selectors.EVENT_READ:
                    self._read(tag)
                if mask & selectors.EVENT_WRITE and not tag.closed:
                    self.dirty.add(tag)
        self.timers.run_due(time.monotonic())
        self.end_turn()

    def end_turn(self):
        """Commit what this turn stored, deliver it, close who must go, write before sleeping."""
        self.store.commit()
        self._deliver(self.chat.outbox.take())
        self._start_streams()
        self._close_marked()
        self._flush_dirty()

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # -- accept ---------------------------------------------------------------

    def _accept(self, listener):
        for _ in range(64):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # e.g. EMFILE: out of descriptors; try again next turn
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = Connection(sock, peer, TokenBucket(self.config.rate_limit,
                                                      self.config.rate_burst))
            if len(self.conns) >= self.max_clients:
                self._reject_full(conn)
                continue
            self.conns.add(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)
            self._schedule_liveness(conn, conn.last_rx + self.config.ping_after)

    def _reject_full(self, conn):
        """Over capacity: wait briefly for the first byte to answer in the client's protocol."""
        if len(self.rejecting) >= REJECT_POOL:
            log.warning("server full (%d clients); dropped %s", self.max_clients, conn.label())
            conn.sock.close()
            return
        conn.proto = "reject"
        self.rejecting.add(conn)
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        self.timers.add(time.monotonic() + REJECT_WAIT, lambda now: self._answer_full(conn))

    def _answer_full(self, conn, first=b"\0"):
        if conn.closed:
            return
        log.warning("server full (%d clients): refused %s", self.max_clients, conn.label())
        message = "The server is full (%d clients); try again later." % self.max_clients
        if first[:1].isalpha():
            data = http_json_response(503, {"error": "server_full", "message": message},
                                      keep_alive=False)
        else:
            data = encode_frame({"type": "error", "code": "server_full", "message": message,
                                 "fatal": True})
        try:
            conn.sock.send(data)
        except OSError:
            pass
        self._drop(conn, "full")

    # -- read path ------------------------------------------------------------

    def _read(self, conn):
        if conn.closed:
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except OSError as exc:
            if exc.errno in _RETRY_ERRNOS or isinstance(exc, BlockingIOError):
                return
            self._drop(conn, "error")
            return
        if not data:
            self._drop(conn, "quit")
            return
        if conn.proto == "reject":
            self._answer_full(conn, data)
            return
        conn.last_rx = time.monotonic()
        if conn.auth_blocked:
            return      # waiting out an auth-failure delay; the connection is closing
        if conn.proto == "sniff":
            self._sniff(conn, data)
            return
        self._feed(conn, data)

    def _sniff(self, conn, data):
        """First byte 0x00: framed protocol; an ASCII letter: HTTP (docs/PROTOCOL.md)."""
        first = data[:1]
        if first == b"\0":
            conn.proto = "framed"
            conn.decoder = FrameDecoder()
        elif first.isalpha():
            conn.proto = "http"
            conn.http = HttpConnection(self, conn)
        else:
            self.chat.reject(conn, FrameError("bad_frame", "Unknown protocol: a framed client "
                                              "starts with 0x00, HTTP with a letter."))
            return
        self._feed(conn, data)

    def _feed(self, conn, data):
        if conn.proto == "framed":
            self._feed_framed(conn, data)
        else:
            conn.http.feed(data)

    def _feed_framed(self, conn, data):
        decoder = conn.decoder
        decoder.append(data)
        try:
            for raw_header, payload in decoder.frames():
                if conn.close_after_flush:
                    break
                self.chat.handle(conn, raw_header, payload)
        except FrameError as err:
            self.chat.reject(conn, err)

    # -- delivery -------------------------------------------------------------

    def _deliver(self, entries):
        """Queue this turn's messages. Consecutive broadcasts are joined into one blob per
        transport and that same bytes object is appended to every recipient."""
        run = []
        for targets, raw in entries:
            if targets is None:
                run.append(raw)
                continue
            if run:
                self._broadcast(run)
                run = []
            for conn in targets:
                if not conn.closed:
                    self._queue(conn, conn.frame(raw))
        if run:
            self._broadcast(run)

    def _broadcast(self, raws):
        framed = ws = None
        for conn in self.chat.joined.values():
            if conn.proto == "ws":
                if ws is None:
                    ws = b"".join([ws_frame(WS_OP_TEXT, r) for r in raws])
                self._queue(conn, ws)
            else:
                if framed is None:
                    framed = b"".join([frame_json(r) for r in raws])
                self._queue(conn, framed)

    def _queue(self, conn, data):
        """Append output; enforce the output caps (closing happens after the dispatch pass)."""
        conn.out.append(data)
        conn.out_bytes += len(data)
        self.dirty.add(conn)
        if conn.out_bytes > self.config.out_soft and conn.soft_since is None:
            conn.soft_since = time.monotonic()
            if conn.out_bytes <= self.config.out_hard:
                self.timers.add(conn.soft_since + self.config.out_soft_seconds,
                                lambda now, c=conn: self._check_soft(c))
        if conn.out_bytes > self.config.out_hard and not conn.closed:
            self.to_close.append((conn, "slow"))

    def _check_soft(self, conn):
        if conn.closed or conn.soft_since is None:
            return
        if time.monotonic() - conn.soft_since >= self.config.out_soft_seconds - 0.01:
            self.to_close.append((conn, "slow"))

    # -- downloads ------------------------------------------------------------

    def _start_streams(self):
        for conn, meta, offset in self.chat.streams:
            if conn.closed:
                continue
            try:
                fh = open(self.files.file_path(meta["id"]), "rb")
            except OSError:
                self.chat.reject(conn, ChatError("unknown_file", "The file is missing on the "
                                                 "server.", meta["id"]))
                continue
            conn.cancel_download(meta["id"])
            conn.downloads[meta["id"]] = Download(meta, fh, offset)
            self._queue(conn, conn.frame(dump_json({
                "type": "download_start", "file": meta["id"], "name": meta["name"],
                "size": meta["size"], "sha256": meta["sha256"], "mime": meta["mime"],
                "offset": offset})))
        self.chat.streams.clear()
        self._deliver(self.chat.outbox.take())

    def _pump_downloads(self, conn):
        """Read the next chunks from disk only while this connection's queue is short."""
        while conn.downloads and conn.out_bytes < DOWNLOAD_LOW_WATER:
            file_id, dl = next(iter(conn.downloads.items()))
            count = min(DOWNLOAD_CHUNK, dl.size - dl.offset)
            if count > 0:
                head = dump_json({"type": "file_chunk", "file": file_id, "offset": dl.offset})
                self._queue(conn, FRAME_PREFIX.pack(len(head), count) + head)
                self._queue(conn, FileSegment(dl.fh, dl.offset, count))
                dl.offset += count
            if dl.offset >= dl.size:
                del conn.downloads[file_id]
                self._queue(conn, conn.frame(dump_json({"type": "download_end", "file": file_id,
                                                        "size": dl.size})))
                # the handle closes once its last segment is written (see _write_segment)

    # -- write path -----------------------------------------------------------

    def _flush_dirty(self):
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            if not conn.closed:
                self._flush(conn)

    def _flush(self, conn):
        budget = WRITE_BUDGET
        while budget > 0 and not conn.closed:
            if conn.downloads and conn.out_bytes < DOWNLOAD_LOW_WATER:
                self._pump_downloads(conn)
            if not conn.out:
                break
            sent = self._write_some(conn)
            if sent is None:
                return
            if sent == 0:
                break
            budget -= sent
        if conn.closed:
            return
        if conn.out_bytes <= self.config.out_soft:
            conn.soft_since = None
        if not conn.out and conn.close_after_flush:
            self._drop(conn, conn.close_after_flush)
            return
        want_write = bool(conn.out) or bool(conn.downloads)
        if want_write and budget <= 0:
            self.dirty.add(conn)     # fairness: more next turn, after the others
        if want_write != conn.registered_write:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self.selector.modify(conn.sock, events, conn)
            conn.registered_write = want_write

    def _write_some(self, conn):
        """Write the head of the queue; returns bytes sent, or None if the peer is gone."""
        out = conn.out
        try:
            if isinstance(out[0], FileSegment):
                sent = self._write_segment(conn, out[0])
            else:
                sent = self._write_buffers(conn)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self._drop(conn, "error")
            return None
        conn.out_bytes -= sent
        return sent

    def _write_buffers(self, conn):
        out = conn.out
        bufs = []
        for item in out:
            if isinstance(item, FileSegment) or len(bufs) >= MAX_IOV:
                break
            bufs.append(item)
        if len(bufs) == 1 or not hasattr(conn.sock, "sendmsg"):
            sent = conn.sock.send(bufs[0] if len(bufs) == 1 else b"".join(bufs))
        else:
            sent = conn.sock.sendmsg(bufs)
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

    def _write_segment(self, conn, seg):
        if hasattr(os, "sendfile"):
            sent = os.sendfile(conn.fd, seg.fh.fileno(), seg.offset, seg.count)
        else:
            seg.fh.seek(seg.offset)
            sent = conn.sock.send(seg.fh.read(min(seg.count, DOWNLOAD_CHUNK)))
        if sent == 0 and seg.count:
            raise ConnectionResetError("peer closed during sendfile")
        seg.offset += sent
        seg.count -= sent
        if seg.count == 0:
            conn.out.popleft()
            if not any(dl.fh is seg.fh for dl in conn.downloads.values()) and \
                    not any(isinstance(i, FileSegment) and i.fh is seg.fh for i in conn.out):
                seg.fh.close()
        return sent

    # -- liveness and closing -------------------------------------------------

    def _schedule_liveness(self, conn, due):
        conn.timer_due = due
        self.timers.add(due, lambda now, c=conn: self._liveness(c))

    def _liveness(self, conn):
        """Ping a silent connection after ping_after; close it after idle_timeout."""
        if conn.closed:
            return
        silent = time.monotonic() - conn.last_rx
        cfg = self.config
        if silent >= cfg.idle_timeout:
            self.chat.reject(conn, ChatError("timeout", "No data for %d seconds."
                                             % cfg.idle_timeout))
            return
        if silent >= cfg.ping_after:
            if conn.proto in ("framed", "ws"):
                self.chat.outbox.send((conn,), b'{"type":"ping"}')
            elif conn.proto in ("sniff", "http") and conn.nick is None:
                # HTTP has its own stall timeouts; a silent sniffing socket just goes
                if conn.proto == "sniff" or (conn.http and conn.http.idle()):
                    self._drop(conn, "timeout")
                    return
            self._schedule_liveness(conn, conn.last_rx + cfg.idle_timeout)
        else:
            self._schedule_liveness(conn, conn.last_rx + cfg.ping_after)

    def _close_marked(self):
        for conn, reason in self.chat.closing:
            if conn.closed:
                continue
            if reason == "auth_failed":
                self._delay_auth_close(conn)
            else:
                conn.close_after_flush = reason
                self.dirty.add(conn)
        self.chat.closing.clear()
        marked, self.to_close = self.to_close, []
        for conn, reason in marked:
            if not conn.closed:
                log.warning("%s closed: output queue over the limit (%d bytes queued)",
                            conn.label(), conn.out_bytes)
                conn.out.clear()
                conn.out_bytes = 0
                self._drop(conn, reason)

    def _delay_auth_close(self, conn):
        """Repeated token failures from one address are answered slower and slower."""
        host = conn.peer[0] if conn.peer else "?"
        count = self.auth_failures.get(host, 0) + 1
        self.auth_failures[host] = count
        delay = 0.0 if count <= AUTH_FREE_FAILURES else \
            min(AUTH_MAX_DELAY, 0.5 * 2 ** (count - AUTH_FREE_FAILURES - 1))
        if delay <= 0:
            conn.close_after_flush = "auth_failed"
            self.dirty.add(conn)
            return
        pending = list(conn.out)
        conn.out.clear()
        conn.out_bytes = 0
        conn.auth_blocked = True

        def release(now):
            if conn.closed:
                return
            for item in pending:
                self._queue(conn, item)
            conn.close_after_flush = "auth_failed"
        self.timers.add(time.monotonic() + delay, release)

    def _drop(self, conn, reason):
        """Close a connection now; tell the chat the user left."""
        if conn.closed:
            return
        conn.closed = True
        self.rejecting.discard(conn)
        self.conns.discard(conn)
        self.dirty.discard(conn)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        if conn.http is not None:
            conn.http.close()
        conn.release()
        self.chat.leave(conn, reason if reason in ("quit", "timeout", "slow", "shutdown")
                        else "error")

    def _sweep_uploads(self, now):
        self.files.expire(time.time())
        self.timers.add(now + UPLOAD_SWEEP_EVERY, self._sweep_uploads)

    # -- shutdown -------------------------------------------------------------

    def shutdown(self):
        """Send `bye` to everyone, flush for a moment, close the database."""
        bye = b'{"type":"bye","reason":"shutdown"}'
        for conn in list(self.conns):
            if conn.proto in ("framed", "ws") and not conn.closed:
                self._queue(conn, conn.frame(bye))
                if conn.proto == "ws":
                    self._queue(conn, ws_frame(WS_OP_CLOSE, struct.pack(">H", 1001)))
                conn.downloads.clear()
                conn.close_after_flush = "shutdown"
        self.store.commit()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while any(c.out for c in self.conns) and time.monotonic() < deadline:
            self._flush_dirty()
            for key, _ in self.selector.select(0.05):
                if isinstance(key.data, Connection) and not key.data.closed:
                    self.dirty.add(key.data)
        for conn in list(self.conns) + list(self.rejecting):
            self._drop(conn, "shutdown")
        for sock in self.listeners:
            self.selector.unregister(sock)
            sock.close()
        self.store.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
        log.info("server stopped")

    # -- status ---------------------------------------------------------------

    def health(self):
        return {"status": "ok", "version": __version__, "clients": len(self.chat.joined),
                "connections": len(self.conns), "uptime": round(time.time() - self.started, 1)}

###############################################################################
# HTTP connections (placeholder until the HTTP/WebSocket sections land) ########
###############################################################################

WS_OP_TEXT = 0x1
WS_OP_CLOSE = 0x8


def ws_frame(opcode, payload):
    """An unmasked server frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


def http_json_response(status, obj, keep_alive=True):
    body = dump_json(obj)
    reason = {200: "OK", 201: "Created", 503: "Service Unavailable"}.get(status, "Error")
    return ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            "Connection: %s\r\n\r\n" % (status, reason, len(body),
                                        "keep-alive" if keep_alive else "close")
            ).encode("ascii") + body


class HttpConnection:
    def __init__(self, server, conn):
        self.server = server
        self.conn = conn

    def feed(self, data):
        self.server._queue(self.conn, http_json_response(
            503, {"error": "http_unavailable", "message": "HTTP is not served yet."},
            keep_alive=False))
        self.conn.close_after_flush = "quit"

    def idle(self):
        return True

    def close(self):
        pass

###############################################################################
# CLI and main() ##############################################################
###############################################################################

# (flag, env var, type, default, help) — every flag can also come from the environment.
def _env(name, default, kind=str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return kind(raw)


def build_arg_parser():
    p = argparse.ArgumentParser(
        prog="chatserver",
        description="LAN chat and file-sharing server (framed TCP, HTTP and WebSocket on one "
                    "port). Every option can also be set by the environment variable shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--host", default=_env("CHAT_HOST", DEFAULT_HOST),
        help="address to listen on (CHAT_HOST); 0.0.0.0 = every IPv4 interface")
    add("--port", type=int, default=_env("CHAT_PORT", DEFAULT_PORT, int),
        help="TCP port for all protocols (CHAT_PORT)")
    add("--data-dir", default=_env("CHAT_DATA_DIR", None),
        help="folder for history, files and the pairing token (CHAT_DATA_DIR); default: "
             + default_data_dir())
    add("--memory", action="store_true", default=_env("CHAT_MEMORY", False, bool),
        help="keep nothing on disk: history and files vanish at exit (CHAT_MEMORY)")
    add("--max-clients", type=int, default=_env("CHAT_MAX_CLIENTS", DEFAULT_MAX_CLIENTS, int),
        help="connections served at once (CHAT_MAX_CLIENTS); on Windows capped at %d because "
             "select() there handles at most 512 sockets" % WINDOWS_SELECT_MAX_CLIENTS)
    add("--rate-limit", type=float, default=_env("CHAT_RATE_LIMIT", DEFAULT_RATE_LIMIT, float),
        help="messages per second per connection, 0 = unlimited (CHAT_RATE_LIMIT)")
    add("--rate-burst", type=int, default=_env("CHAT_RATE_BURST", DEFAULT_RATE_BURST, int),
        help="messages a connection may send in a burst (CHAT_RATE_BURST)")
    add("--max-file-size", type=int,
        default=_env("CHAT_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE, int),
        help="largest file accepted, bytes (CHAT_MAX_FILE_SIZE)")
    add("--min-free-disk", type=int,
        default=_env("CHAT_MIN_FREE_DISK", DEFAULT_MIN_FREE_DISK, int),
        help="free disk space always kept, bytes; uploads that would eat it are refused with "
             "disk_full (CHAT_MIN_FREE_DISK)")
    add("--max-uploads", type=int, default=_env("CHAT_MAX_UPLOADS", DEFAULT_MAX_UPLOADS, int),
        help="concurrent uploads per user (CHAT_MAX_UPLOADS)")
    add("--out-hard-limit", type=int, default=_env("CHAT_OUT_HARD_LIMIT", OUT_HARD_LIMIT, int),
        help="queued output, bytes, that closes a slow client at once (CHAT_OUT_HARD_LIMIT)")
    add("--out-soft-limit", type=int, default=_env("CHAT_OUT_SOFT_LIMIT", OUT_SOFT_LIMIT, int),
        help="queued output, bytes, tolerated for --out-soft-seconds (CHAT_OUT_SOFT_LIMIT)")
    add("--out-soft-seconds", type=float,
        default=_env("CHAT_OUT_SOFT_SECONDS", OUT_SOFT_SECONDS, float),
        help="grace period over the soft output limit (CHAT_OUT_SOFT_SECONDS)")
    add("--ping-after", type=float, default=_env("CHAT_PING_AFTER", PING_AFTER, float),
        help="seconds of silence before the server pings a client (CHAT_PING_AFTER)")
    add("--idle-timeout", type=float, default=_env("CHAT_IDLE_TIMEOUT", IDLE_TIMEOUT, float),
        help="seconds of silence before a client is dropped (CHAT_IDLE_TIMEOUT)")
    add("--sync", choices=("full", "normal"), default=_env("CHAT_SYNC", "full"),
        help="SQLite synchronous mode: full survives power loss, normal survives a crash of "
             "the server process (CHAT_SYNC)")
    add("--open", action="store_true", default=_env("CHAT_OPEN", False, bool),
        help="no pairing token: anyone on the network may join (CHAT_OPEN)")
    add("--new-token", action="store_true", default=_env("CHAT_NEW_TOKEN", False, bool),
        help="rotate the pairing token; phones must scan the new QR code (CHAT_NEW_TOKEN)")
    add("--advertise-host", default=_env("CHAT_ADVERTISE_HOST", None),
        help="address put in the pairing URL and QR code instead of the detected LAN address "
             "(CHAT_ADVERTISE_HOST)")
    add("--no-browser", action="store_true", default=_env("CHAT_NO_BROWSER", False, bool),
        help="do not open the pairing page in a browser at start (CHAT_NO_BROWSER)")
    add("--log-level", default=_env("CHAT_LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error"), help="console log detail (CHAT_LOG_LEVEL)")
    add("--quiet", action="store_true", default=_env("CHAT_QUIET", False, bool),
        help="log warnings and errors only, and no start-up banner (CHAT_QUIET)")
    add("--version", action="version", version="chatserver " + __version__)
    return p


def config_from_args(args):
    return Config(host=args.host, port=args.port, data_dir=args.data_dir, memory=args.memory,
                  max_clients=args.max_clients, rate_limit=args.rate_limit,
                  rate_burst=args.rate_burst, out_hard=args.out_hard_limit,
                  out_soft=args.out_soft_limit, out_soft_seconds=args.out_soft_seconds,
                  ping_after=args.ping_after, idle_timeout=args.idle_timeout,
                  max_file_size=args.max_file_size, min_free_disk=args.min_free_disk,
                  max_uploads=args.max_uploads, open=args.open, new_token=args.new_token,
                  sync=args.sync)


def install_signal_handlers(server):
    """Ctrl+C and SIGTERM stop the loop cleanly (bye, flush, close the database)."""
    def on_signal(signum, frame):
        log.info("stopping (signal %d)", signum)
        server.stop()
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, on_signal)


def print_banner(server, bound, args):
    host, port = bound[0], bound[1]
    lines = ["", "LAN Chat server %s listening on %s:%d" % (__version__, host, port),
             "data: %s" % ("(memory only)" if server.config.memory else server.data_root)]
    if server.chat.token is None:
        lines.append("open mode: no pairing token required")
    print("\n".join(lines), flush=True)


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    level = logging.WARNING if args.quiet else getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        server = Server(config_from_args(args))
        bound = server.listen()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 2
    install_signal_handlers(server)
    if not args.quiet:
        print_banner(server, bound, args)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
