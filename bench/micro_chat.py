#!/usr/bin/env python3
"""Per-message cost of the chat domain, in process: chatserver.py now against a git revision.

    python3 bench/micro_chat.py [--against REV] [--messages 20000] [--rounds 5]

Feeds K `msg` frames for one joined sender straight into Chat.handle (decode, validate,
store in an in-memory SQLite, build the JSON), committing every 128 messages like a loop turn
of the fan-out benchmark. No sockets, so the result is stable on a busy machine: it isolates
the per-message Python work that the fan-out benchmark cannot separate from its load
generator. Both versions run alternately in the same process; medians are reported.
"""
import argparse
import importlib.util
import json
import socket
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def microseconds_per_message(cs, count):
    server = cs.Server(cs.Config(memory=True, open=True, rate_limit=0))
    socks = []
    try:
        sock, other = socket.socketpair()
        socks.extend((sock, other))
        try:                 # the connection layer's constructor (since the loop API)
            conn = cs.Connection(server, sock, ("127.0.0.1", 1), cs.TokenBucket(0, 1))
        except TypeError:    # older revisions: no loop argument
            conn = cs.Connection(sock, ("127.0.0.1", 1), cs.TokenBucket(0, 1))
        conn.proto = "framed"
        server.chat.handle(conn, json.dumps({"type": "hello", "nick": "pub", "proto": 1}).encode())
        server.chat.outbox.take()
        frames = [json.dumps({"type": "msg", "text": "x" * 100, "cid": "c%d" % i}).encode()
                  for i in range(count)]
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            server.chat.handle(conn, frame)
            if i % 128 == 127:
                server.store.commit()
                server.chat.outbox.take()
        server.store.commit()
        return (time.perf_counter() - start) / count * 1e6
    finally:
        server.store.close()
        for sock in socks:
            sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="git revision to compare with (default: none)")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    versions = {"working tree": load(os.path.join(ROOT, "chatserver.py"), "cs_now")}
    if args.against:
        source = subprocess.run(["git", "show", args.against + ":chatserver.py"], cwd=ROOT,
                                check=True, capture_output=True).stdout
        with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
            f.write(source)
        versions[args.against] = load(f.name, "cs_then")
    results = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, module in versions.items():
            results[name].append(microseconds_per_message(module, args.messages))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print("%-14s median %.2f µs/message  (%s)" % (
            name, medians[name], ", ".join("%.2f" % v for v in values)))
    if args.against:
        print("ratio working tree / %s: %.2f" % (args.against,
                                                medians["working tree"] / medians[args.against]))


if __name__ == "__main__":
    sys.exit(main())
