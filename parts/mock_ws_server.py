"""Throwaway mock of chatserver's HTTP + WebSocket side, for developing webclient.html.

NOT part of the product. Implements PROTOCOL.md sections 2-5 and 8 minimally:
hello/welcome (with since), msg (cid de-dup, DMs), history {before, after, limit}, typing,
ping/pong, join/leave, bye on SIGTERM, POST /files and GET /files/<id>/<name>.

Uses http.server (threads) for HTTP and the sans-I/O `websockets.server.ServerProtocol`
for the WebSocket upgrade on the same port. State persists in --data-dir across restarts.

    .venv/bin/python parts/mock_ws_server.py --port 8765 --data-dir /tmp/mock [--token T]
"""
import argparse
import hashlib
import http.server
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone

from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

HERE = os.path.dirname(os.path.abspath(__file__))
HTML_PATH = os.path.join(HERE, "webclient.html")
WELCOME_HISTORY = 100
RESUME_HISTORY = 200


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        "%03dZ" % (datetime.now(timezone.utc).microsecond // 1000)


def fold(s):
    return s.casefold()


class Hub:
    def __init__(self, data_dir, token, slow_upload):
        self.lock = threading.RLock()
        self.data_dir = data_dir
        self.token = token
        self.slow_upload = slow_upload
        self.clients = {}     # folded nick -> Client
        self.sessions = {}    # session -> Client
        self.state_path = os.path.join(data_dir, "state.json")
        self.pongs = 0
        os.makedirs(os.path.join(data_dir, "files"), exist_ok=True)
        try:
            with open(self.state_path) as f:
                st = json.load(f)
        except FileNotFoundError:
            st = {"messages": [], "next_id": 1, "files": {}}
        self.messages, self.next_id, self.files = st["messages"], st["next_id"], st["files"]

    def save(self):
        with open(self.state_path + ".tmp", "w") as f:
            json.dump({"messages": self.messages, "next_id": self.next_id, "files": self.files}, f)
        os.replace(self.state_path + ".tmp", self.state_path)

    def visible(self, m, nick):
        k = fold(nick)
        return "to" not in m or fold(m["from"]) == k or fold(m["to"]) == k

    def post(self, sender, text, cid, to=None, file=None):
        """Store and deliver a message; returns it. Caller holds the lock."""
        for m in self.messages:
            if fold(m["from"]) == fold(sender.nick) and m["cid"] == cid:
                sender.send(m)               # resend: original to the sender only
                return m
        m = {"type": "msg", "id": self.next_id, "ts": now_iso(), "from": sender.nick,
             "text": text, "cid": cid}
        if to:
            m["to"] = self.clients[fold(to)].nick
        if file:
            m["file"] = file
        self.next_id += 1
        self.messages.append(m)
        self.save()
        for c in list(self.clients.values()):
            if self.visible(m, c.nick):
                c.send(m)
        return m

    def broadcast(self, obj, except_client=None):
        for c in list(self.clients.values()):
            if c is not except_client:
                c.send(obj)


HUB = None


class Client:
    def __init__(self, handler, protocol):
        self.h = handler
        self.p = protocol
        self.lock = threading.Lock()
        self.nick = None
        self.session = None
        self.closed = False

    def flush(self):
        data = b"".join(self.p.data_to_send())
        if data:
            try:
                self.h.connection.sendall(data)
            except OSError:
                self.closed = True

    def send(self, obj):
        with self.lock:
            if self.closed:
                return
            try:
                self.p.send_text(json.dumps(obj, separators=(",", ":")).encode())
            except Exception:        # closing: drop the message
                self.closed = True
                return
            self.flush()

    def error(self, code, message, ref=None, fatal=False):
        e = {"type": "error", "code": code, "message": message, "fatal": fatal}
        if ref is not None:
            e["ref"] = ref
        self.send(e)

    def close(self, code=1000):
        with self.lock:
            if not self.closed:
                self.p.send_close(code)
                self.flush()
                self.closed = True
        try:
            self.h.connection.shutdown(2)
        except OSError:
            pass

    # ---- protocol ----
    def handle(self, m):
        t = m.get("type")
        hub = HUB
        if t == "ping":
            return self.send({"type": "pong", **({"t": m["t"]} if "t" in m else {})})
        if t == "pong":
            hub.pongs += 1
            print("mock: pong from", self.nick, file=sys.stderr, flush=True)
            return
        if t == "hello":
            return self.hello(m)
        if self.nick is None:
            return self.error("not_joined", "Say hello first.")
        with hub.lock:
            if t == "msg":
                text, cid, to = m.get("text"), m.get("cid"), m.get("to")
                if not isinstance(text, str) or not text or not isinstance(cid, str):
                    return self.error("bad_request", "msg needs text and cid.", ref=cid)
                if len(text.encode()) > 16384:
                    return self.error("text_too_long", "Message over 16 KiB.", ref=cid)
                if to is not None and fold(to) not in hub.clients:
                    return self.error("unknown_user", "No user named %r is online." % to, ref=cid)
                if text == "/ratelimit":
                    return self.error("rate_limited", "Slow down: too many messages.", ref=cid)
                hub.post(self, text, cid, to)
            elif t == "history":
                before = m.get("before") or 1 << 62
                after = m.get("after") or 0
                limit = max(1, min(200, m.get("limit") or 50))
                sel = [x for x in hub.messages if after < x["id"] < before and hub.visible(x, self.nick)]
                self.send({"type": "history", "messages": sel[-limit:], "has_more": len(sel) > limit})
            elif t == "typing":
                out = {"type": "typing", "from": self.nick}
                to = m.get("to")
                if to:
                    out["to"] = to
                    c = hub.clients.get(fold(to))
                    if c:
                        c.send(out)
                else:
                    hub.broadcast(out, except_client=self)
            else:
                self.error("unknown_type", "Unknown type %r." % t)

    def hello(self, m):
        hub = HUB
        if self.nick is not None:
            return self.error("bad_request", "Second hello.")
        if m.get("proto") != 1:
            self.error("proto_unsupported", "Protocol 1 only.", fatal=True)
            return self.close(1008)
        if hub.token and m.get("token") != hub.token:
            self.error("auth_failed", "Wrong pairing token.", fatal=True)
            return self.close(1008)
        nick = m.get("nick")
        if not isinstance(nick, str) or not nick.strip() or len(nick.strip()) > 32 or \
                any(ord(ch) < 32 for ch in nick):
            return self.error("nick_invalid", "A nickname has 1 to 32 characters, no control characters.")
        nick = nick.strip()
        with hub.lock:
            if fold(nick) in hub.clients:
                return self.error("nick_taken", "The nickname %s is already taken." % nick)
            self.nick = nick
            self.session = secrets.token_hex(16)
            hub.clients[fold(nick)] = self
            hub.sessions[self.session] = self
            vis = [x for x in hub.messages if hub.visible(x, nick)]
            since = m.get("since")
            if isinstance(since, int):
                vis = [x for x in vis if x["id"] > since]
                cap = RESUME_HISTORY
            else:
                cap = WELCOME_HISTORY
            self.send({"type": "welcome", "nick": nick, "server": "chatserver/mock", "proto": 1,
                       "session": self.session, "users": [c.nick for c in hub.clients.values()],
                       "online": len(hub.clients), "history": vis[-cap:], "has_more": len(vis) > cap,
                       "last_id": hub.next_id - 1,
                       "limits": {"text": 16384, "chunk": 1048576, "file": 1 << 32}})
            hub.broadcast({"type": "join", "nick": nick})

    def gone(self):
        hub = HUB
        with hub.lock:
            self.closed = True
            if self.nick and hub.clients.get(fold(self.nick)) is self:
                del hub.clients[fold(self.nick)]
                hub.sessions.pop(self.session, None)
                hub.broadcast({"type": "leave", "nick": self.nick, "reason": "quit"})


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("mock: " + fmt % args + "\n")

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/":
            with open(HTML_PATH, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        elif url.path == "/ws":
            self.websocket()
        elif url.path.startswith("/files/"):
            parts = url.path.split("/")
            fid = parts[2] if len(parts) > 2 else ""
            if q.get("session", [""])[0] not in HUB.sessions:
                return self.send_json(403, {"error": "forbidden", "message": "Unknown session."})
            meta = HUB.files.get(fid)
            if not meta:
                return self.send_json(404, {"error": "unknown_file", "message": "No such file."})
            with open(os.path.join(HUB.data_dir, "files", fid), "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", meta["mime"])
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Disposition", "attachment; filename*=UTF-8''" +
                             urllib.parse.quote(meta["name"]))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_json(404, {"error": "not_found", "message": "Not found."})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length", "-1"))
        if url.path != "/files" or length < 0:
            return self.send_json(400, {"error": "bad_request", "message": "POST /files with a body."})
        client = HUB.sessions.get(q.get("session", ""))
        if client is None:
            self.rfile.read(length)
            return self.send_json(403, {"error": "forbidden", "message": "Your session has expired."})
        if q.get("name", "").startswith("reject"):
            self.rfile.read(length)
            return self.send_json(413, {"error": "file_too_large", "message": "That file is over the server's limit."})
        fid = secrets.token_hex(8)
        h = hashlib.sha256()
        path = os.path.join(HUB.data_dir, "files", fid)
        left = length
        with open(path, "wb") as f:
            while left:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    return
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
                if HUB.slow_upload:
                    time.sleep(HUB.slow_upload)
        name = q.get("name") or "file"
        mime = self.headers.get("Content-Type") or "application/octet-stream"
        meta = {"id": fid, "name": name, "size": length, "sha256": h.hexdigest(), "mime": mime}
        with HUB.lock:
            HUB.files[fid] = meta
            to = q.get("to")
            if to and fold(to) not in HUB.clients:
                return self.send_json(404, {"error": "unknown_user", "message": "Nobody named that is online."})
            m = HUB.post(client, q.get("text", ""), q.get("cid", fid), to, dict(meta))
        self.send_json(201, m)

    def websocket(self):
        proto = ServerProtocol()
        req = Request(self.path, Headers(list(self.headers.items())))
        resp = proto.accept(req)
        proto.send_response(resp)
        client = Client(self, proto)
        client.flush()
        self.close_connection = True
        if resp.status_code != 101:
            return
        # http.server already parsed the request; restart the protocol's parser in the
        # OPEN state so it reads frames instead of waiting for a request line.
        proto.parser = proto.parse()
        next(proto.parser)
        try:
            while True:
                data = self.rfile.read1(65536)
                with client.lock:
                    if data:
                        proto.receive_data(data)
                    else:
                        proto.receive_eof()
                    events = proto.events_received()
                    client.flush()
                for ev in events:
                    if ev.opcode == Opcode.TEXT:
                        try:
                            m = json.loads(ev.data)
                        except ValueError:
                            client.error("bad_json", "Not JSON.")
                            continue
                        client.handle(m)
                if not data or client.closed:
                    break
        except OSError:
            pass
        finally:
            client.gone()


def pinger(interval):
    while True:
        time.sleep(interval)
        for c in list(HUB.clients.values()):
            c.send({"type": "ping"})


def main():
    global HUB
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--data-dir", default="/tmp/mockchat")
    ap.add_argument("--token", default="")
    ap.add_argument("--ping", type=float, default=0, help="send ping every N s")
    ap.add_argument("--slow-upload", type=float, default=0, help="sleep per 64 KiB received")
    a = ap.parse_args()
    HUB = Hub(a.data_dir, a.token, a.slow_upload)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True

    def stop(*_):
        with HUB.lock:
            for c in list(HUB.clients.values()):
                c.send({"type": "bye", "reason": "shutdown"})
                c.close(1001)
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    if a.ping:
        threading.Thread(target=pinger, args=(a.ping,), daemon=True).start()
    print("mock listening on", a.port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
