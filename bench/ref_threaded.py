#!/usr/bin/env python3
"""Reference server (a): the classic thread-per-client chat server.

One thread per client, one global lock, and a broadcast that calls sendall() on every
client socket while holding that lock. Newline-delimited JSON:

    client -> server   {"type":"hello","nick":"..."}\\n   answered by {"type":"welcome",...}\\n
    client -> server   {"type":"msg","text":"..."}\\n
    server -> everyone {"type":"msg","from":"<nick>","text":"..."}\\n   (sender included)

It exists only as a baseline for bench/loadtool.py; it is deliberately the textbook design,
not an optimised one. Run: python3 bench/ref_threaded.py --port 7001
"""
import argparse
import json
import resource
import socket
import threading

LISTEN_BACKLOG = 4096          # connection bursts of thousands of clients in the benchmark
THREAD_STACK_BYTES = 256 * 1024  # 10,000 threads must fit; the default 8 MiB is only virtual
                                 # but 256 KiB is plenty for this handler and keeps maps small
MAX_LINE_BYTES = 1 << 20


class ChatRoom:
    """The shared state: every joined client's socket, guarded by one global lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sockets = []

    def join(self, sock, welcome):
        with self.lock:
            sock.sendall(welcome)   # under the lock: no broadcast may interleave with it
            self.sockets.append(sock)

    def leave(self, sock):
        with self.lock:
            if sock in self.sockets:
                self.sockets.remove(sock)

    def broadcast(self, data):
        """sendall() to every socket, under the lock: a slow reader stalls everyone."""
        dead = []
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.sendall(data)
                except OSError:
                    dead.append(sock)
            for sock in dead:
                self.sockets.remove(sock)


def encode_line(obj):
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def serve_client(room, sock):
    nick = None
    try:
        reader = sock.makefile("rb")
        for line in iter(lambda: reader.readline(MAX_LINE_BYTES), b""):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            kind = obj.get("type")
            if kind == "hello" and nick is None:
                nick = str(obj.get("nick", "anon"))
                room.join(sock, encode_line({"type": "welcome", "nick": nick}))
            elif kind == "msg" and nick is not None:
                room.broadcast(encode_line({"type": "msg", "from": nick, "text": obj.get("text", "")}))
    except OSError:
        pass
    finally:
        room.leave(sock)
        sock.close()


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_fd_limit()
    threading.stack_size(THREAD_STACK_BYTES)
    room = ChatRoom()
    listener = socket.create_server((args.host, args.port), backlog=LISTEN_BACKLOG, reuse_port=False)
    while True:
        sock, _ = listener.accept()
        # No TCP_NODELAY, as in the textbook: with it every sendall() became its own segment
        # and this server ran at about half the rate (see docs/PERFORMANCE.md).
        threading.Thread(target=serve_client, args=(room, sock), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
