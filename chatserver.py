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
import binascii
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
import zlib

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
        self.receive_chunk(conn, up, h.get("offset"), payload, h.get("last") is True)

    def receive_chunk(self, conn, up, offset, data, last=False):
        """Append one chunk; the upload completes when `size` bytes are in. `last` is the
        client saying it has nothing more: then the size must be complete."""
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
        if up.received == up.size or last:
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
