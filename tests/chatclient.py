"""A small blocking client for the framed protocol, and a helper that runs a real server.

Used by the tests (and handy by hand: `python -i tests/chatclient.py`)."""
import json
import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CHATSERVER_PY runs the tests against another copy (tests/mutations/ points it at a mutant).
SERVER = os.path.abspath(os.environ.get("CHATSERVER_PY") or os.path.join(ROOT, "chatserver.py"))
PREFIX = struct.Struct(">II")


def encode(header, payload=b""):
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return PREFIX.pack(len(raw), len(payload)) + raw + payload


class Closed(Exception):
    """The server closed the connection."""


class ChatClient:
    def __init__(self, port, host="127.0.0.1", timeout=10.0, source=None, rcvbuf=None):
        """`source`: the loopback address to connect from (e.g. "127.0.0.9"), so that a test
        can look like another machine to the per-address auth slow-down. `rcvbuf`: a fixed
        receive buffer (it caps the TCP window, so the server cannot run far ahead)."""
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.inbox = []          # frames received but not consumed yet: (header, payload)
        self.welcome = None
        self.device = secrets.token_urlsafe(16)   # this client object is one device
        self._cid = 0

    # -- raw I/O --------------------------------------------------------------

    def send(self, header, payload=b""):
        self.sock.sendall(encode(header, payload))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _read_frame(self, deadline):
        while True:
            if len(self.buf) >= 8:
                hlen, plen = PREFIX.unpack_from(self.buf)
                if len(self.buf) >= 8 + hlen + plen:
                    header = json.loads(bytes(self.buf[8:8 + hlen]))
                    payload = bytes(self.buf[8 + hlen:8 + hlen + plen])
                    del self.buf[:8 + hlen + plen]
                    return header, payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 20)
            if not data:
                raise Closed("server closed the connection")
            self.buf += data

    def recv(self, timeout=10.0, with_payload=False):
        if self.inbox:
            header, payload = self.inbox.pop(0)
        else:
            header, payload = self._read_frame(time.monotonic() + timeout)
        return (header, payload) if with_payload else header

    def wait_for(self, predicate, timeout=10.0, with_payload=False):
        """First frame matching `predicate` (a type name or a callable); others are kept."""
        if isinstance(predicate, str):
            kind = predicate
            predicate = lambda h: h.get("type") == kind  # noqa: E731
        for i, (header, payload) in enumerate(self.inbox):
            if predicate(header):
                del self.inbox[i]
                return (header, payload) if with_payload else header
        deadline = time.monotonic() + timeout
        while True:
            header, payload = self._read_frame(deadline)
            if predicate(header):
                return (header, payload) if with_payload else header
            self.inbox.append((header, payload))

    def expect_closed(self, timeout=5.0):
        """Read until the server closes; returns the frames seen before that."""
        seen = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                seen.append(self._read_frame(deadline)[0])
        except (Closed, ConnectionResetError):
            return seen

    def drain(self, wait=0.2):
        """Everything that arrives within `wait` seconds."""
        frames = [h for h, _ in self.inbox]
        self.inbox = []
        try:
            while True:
                frames.append(self._read_frame(time.monotonic() + wait)[0])
        except TimeoutError:
            return frames

    # -- protocol -------------------------------------------------------------

    def hello(self, nick, token=None, since=None, device=None, expect="welcome"):
        """`device`: the device key to send (default: this client object's own, so every
        ChatClient is another device; pass another client's `.device` to be that device,
        or False to send none and be issued one)."""
        header = {"type": "hello", "nick": nick, "client": "tests/1", "proto": 1}
        device = self.device if device is None else device
        if device:
            header["device"] = device
        if token is not None:
            header["token"] = token
        if since is not None:
            header["since"] = since
        self.send(header)
        reply = self.wait_for(lambda h: h["type"] in ("welcome", "error"))
        if expect == "welcome":
            assert reply["type"] == "welcome", reply
            self.welcome = reply
        if reply["type"] == "welcome":
            self.device = reply["device"]      # a client keeps the key it was given
        return reply

    def next_cid(self):
        self._cid += 1
        return "c%d" % self._cid

    def say(self, text, to=None, cid=None, wait=True, reply_to=None):
        cid = cid or self.next_cid()
        header = {"type": "msg", "text": text, "cid": cid}
        if to is not None:
            header["to"] = to
        if reply_to is not None:
            header["reply_to"] = reply_to
        self.send(header)
        if not wait:
            return cid
        me = self.welcome["nick"] if self.welcome else None
        return self.wait_for(lambda h: (h["type"] == "msg" and h.get("cid") == cid and
                                        h.get("from") == me) or
                             (h["type"] == "error" and h.get("ref") == cid))

    def change(self, kind, msg_id, text=None, wait=True):
        """`delete` or `edit` one message; returns the `change` for it, or the error."""
        cid = self.next_cid()
        header = {"type": kind, "id": msg_id, "cid": cid}
        if text is not None:
            header["text"] = text
        self.send(header)
        if not wait:
            return cid
        return self.wait_for(lambda h: (h["type"] == "change" and h.get("target") == msg_id)
                             or (h["type"] == "error" and h.get("ref") == cid))

    def react(self, msg_id, emoji, wait=True):
        """Set (or with "" remove) this user's reaction; returns its `change` or the error."""
        cid = self.next_cid()
        self.send({"type": "react", "id": msg_id, "emoji": emoji, "cid": cid})
        if not wait:
            return cid
        me = self.welcome["uid"] if self.welcome else None
        return self.wait_for(lambda h: (h["type"] == "change" and h.get("target") == msg_id
                                        and h.get("change") == "react" and h.get("uid") == me)
                             or (h["type"] == "error" and h.get("ref") == cid))

    def search(self, text, **fields):
        """`search_results` for a search (fields: from, with, before, limit), or the error."""
        cid = self.next_cid()
        self.send(dict({"type": "search", "text": text, "cid": cid}, **fields))
        return self.wait_for(lambda h: h["type"] in ("search_results", "error")
                             and (h.get("cid") == cid or h.get("ref") == cid))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Operator:
    """The operator page's requests (docs/PROTOCOL.md section 11), from the server's PC: the
    key comes as the page's cookie, as it does for a browser."""

    def __init__(self, port, host="127.0.0.1"):
        import http.client
        self.port, self.host = port, host
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/admin")
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 200, response.status
        cookie = response.getheader("Set-Cookie") or ""
        found = re.match(r"lanchat_operator=([A-Za-z0-9_-]+);", cookie)
        assert found, cookie
        self.key = found.group(1)

    def request(self, method, path, body=None, headers=None):
        """(status, decoded JSON or raw bytes) of one request carrying the key."""
        import http.client
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        sent = {"Authorization": "Bearer " + self.key}
        if body is not None:
            sent["Content-Type"] = "application/json"
            body = json.dumps(body).encode("utf-8")
        sent.update(headers or {})
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if (response.getheader("Content-Type") or "").startswith("application/json"):
            return response.status, json.loads(data)
        return response.status, data

    def act(self, action, **body):
        return self.request("POST", "/admin/api/" + action, body)

    def state(self):
        status, state = self.request("GET", "/admin/api/state")
        assert status == 200, state
        return state


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """chatserver.py in a subprocess on 127.0.0.1, with its own data folder."""

    def __init__(self, data_dir, *extra, port=None, env=None, nofile=None):
        self.data_dir = str(data_dir)
        self.extra = list(extra)
        self.port = port or free_port()
        self.port_chosen = port is None   # ours to change if another socket takes it first
        self.env = env           # extra environment variables for the server process
        self.nofile = nofile     # RLIMIT_NOFILE (soft = hard) for the server process
        self.proc = None
        self.started_once = False         # a restart must keep the port the clients know

    def _limit_files(self):
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self, timeout=10.0):
        args = [sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(self.port),
                "--no-browser", "--log-level", "debug", *self.extra]
        if "--memory" not in self.extra:
            args += ["--data-dir", self.data_dir]
        self.log_path = os.path.join(self.data_dir, "server.log")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_file = open(self.log_path, "ab")
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env=env, preexec_fn=self._limit_files if self.nofile
                                     else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.port_chosen and not self.started_once and \
                        "Address already in use" in self.log()[-300:]:
                    # free_port() cannot reserve: on a busy machine another socket may
                    # take the port before the server binds it; any free port will do
                    self.log_file.close()
                    self.port = free_port()
                    return self.start(timeout)
                raise RuntimeError("server exited: " + self.log())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                self.started_once = True
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start: " + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def pairing_token(self, timeout=10.0):
        """The pairing token, read the way a person would: from the PC's own /pair page
        (the database is locked by the running server)."""
        url = "http://127.0.0.1:%d/pair" % self.port
        page = urllib.request.urlopen(url, timeout=timeout).read().decode("utf-8")
        found = re.search(r"#k=([A-Za-z0-9_-]+)", page)
        assert found, "no token on the /pair page: %r" % page[:300]
        return found.group(1)

    def operator(self):
        return Operator(self.port)

    def client(self, nick=None, source=None, rcvbuf=None, **hello):
        c = ChatClient(self.port, source=source, rcvbuf=rcvbuf)
        if nick is not None:
            c.hello(nick, **hello)
        return c

    def stop(self, sig=None, timeout=5.0):
        if self.proc is None:
            return None
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log_file.close()
        return code

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.log_file.close()
