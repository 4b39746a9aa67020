"""Sans-I/O HTTP/1.1 request parser and RFC 6455 WebSocket codec for chatserver.py.

Part file: the lead pastes the two banner sections below ("HTTP/1.1 request parser" and
"WebSocket, RFC 6455") into chatserver.py, merges the imports into its import section and
deletes the ChatError placeholder. Nothing here touches a socket: bytes in, events/bytes out.
"""

# Imports used by both sections (merge into chatserver.py's import section).
import base64
import binascii
import codecs
import email.utils
import hashlib
import json
import re
import struct
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus


# PLACEHOLDER: provided by chatserver.py
class ChatError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


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
WS_MAX_CONTROL_PAYLOAD = 125                   # 5.5: "All control frames MUST have a payload length of 125 bytes or less"
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


def ws_handshake_response(request: HttpRequest, allowed_host: "str | None" = None) -> bytes:
    """Validate a WebSocket upgrade request and return the "101 Switching Protocols" head.

    Raises HttpError: 405 not GET, 400 not HTTP/1.1 or bad Sec-WebSocket-Key, 426 without
    "Upgrade: websocket" + "Connection: upgrade" or with a version other than 13, 403 when a
    browser's Origin names another host than the Host header (or allowed_host, a
    "host[:port]" also accepted, e.g. the name a reverse proxy uses).
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
                                                     allowed_host):
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
        self._message_size = 0
        self._message_parts = []
        self._utf8 = None           # incremental decoder of the open text message

    # -- public -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list:
        """Parse client frames. Raises WsProtocolError (sticky) on a violation."""
        if self._error is not None:
            raise WsProtocolError(self._error.close_code, self._error.reason)
        events = []
        if self.close_received:
            # 5.5.1: after the Close frame the peer sends nothing more; ignore stray bytes.
            return events
        self._buf += data
        try:
            self._parse_frames(events)
        except WsProtocolError as err:
            self._error = err
            self._buf.clear()
            err.events = events
            raise
        return events

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

    def _parse_frames(self, events: list) -> None:
        buf = self._buf
        pos = 0
        try:
            while not self.close_received:
                available = len(buf) - pos
                if available < 2:
                    return
                first, second = buf[pos], buf[pos + 1]
                opcode = first & 0x0F
                self._check_frame_start(first, second)
                length = second & 0x7F
                header_size = 2
                if length == 126:
                    if available < 4:
                        return
                    length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                    header_size = 4
                elif length == 127:
                    if available < 10:
                        return
                    length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    header_size = 10
                    if length >> 63:
                        # 5.2: "the most significant bit MUST be 0"
                        raise WsProtocolError(WS_CLOSE_PROTOCOL_ERROR,
                                              "Invalid 64-bit payload length.")
                self._check_frame_size(opcode, length)
                payload_start = pos + header_size + 4
                end = payload_start + length
                if len(buf) < end:
                    return
                mask = bytes(buf[payload_start - 4:payload_start])
                payload = _ws_unmask(buf[payload_start:end], mask)
                pos = end
                self._on_frame(opcode, bool(first & 0x80), payload, events)
        finally:
            if self.close_received:
                buf.clear()
            elif pos:
                del buf[:pos]

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
            length += self._message_size
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
            self._message_size = 0
            self._message_parts = []
            self._utf8 = _WS_UTF8_DECODER() if opcode == WS_OP_TEXT else None
        self._message_size += len(payload)
        if self._utf8 is not None:
            # Validate each fragment as it comes, so bad UTF-8 fails fast.
            self._message_parts.append(self._decode_fragment(payload, fin))
        else:
            self._message_parts.append(payload)
        if fin:
            parts = self._message_parts
            if self._message_opcode == WS_OP_TEXT:
                events.append(WsText("".join(parts)))
            else:
                events.append(WsBinary(b"".join(parts)))
            self._message_opcode = None
            self._message_size = 0
            self._message_parts = []
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
