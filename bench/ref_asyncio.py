#!/usr/bin/env python3
"""Reference server (b): a competent asyncio streams chat server.

Same newline-delimited JSON protocol as ref_threaded.py:

    client -> server   {"type":"hello","nick":"..."}\\n   answered by {"type":"welcome",...}\\n
    client -> server   {"type":"msg","text":"..."}\\n
    server -> everyone {"type":"msg","from":"<nick>","text":"..."}\\n   (sender included)

Competent means: the broadcast is encoded once and handed to every transport with write()
(no await per recipient); all the lines one read() returned are broadcast as ONE write per
recipient (the same coalescing Redis does per event-loop turn), instead of a send() system
call per message per recipient; back-pressure is applied to the sender only when some
recipient's transport buffer is over a high-water mark, by awaiting drain() on just those
recipients before reading the sender's next data. --per-line gives the naive variant
(readline(), one broadcast per message) for comparison.

--drop-every M exists only so tests can check that the load tool detects loss: every M-th
message skips one recipient (the first joined, or with --drop-nick-suffix S the first whose
nick ends with S). Run: python3 bench/ref_asyncio.py --port 7002
"""
import argparse
import asyncio
import json
import resource
import socket

LISTEN_BACKLOG = 4096
STREAM_LIMIT_BYTES = 1 << 20          # longest accepted line
RECIPIENT_HIGH_WATER_BYTES = 1 << 20  # over this, the sender waits for that recipient
READ_BYTES = 64 * 1024                # one read() may bring many lines: broadcast them at once


class Room:
    def __init__(self, drop_every=0, drop_nick_suffix=None):
        self.writers = []
        self.nicks = {}
        self.drop_every = drop_every
        self.drop_nick_suffix = drop_nick_suffix
        self.broadcasts = 0

    def join(self, writer, nick):
        self.writers.append(writer)
        self.nicks[writer] = nick

    def victim(self):
        """The recipient a dropped broadcast skips (test hook)."""
        for writer in self.writers:
            if self.drop_nick_suffix is None or self.nicks[writer].endswith(self.drop_nick_suffix):
                return writer
        return None

    async def broadcast(self, data, count=1):
        """Send `data` (holding `count` messages) to everyone."""
        before, self.broadcasts = self.broadcasts, self.broadcasts + count
        drop = self.drop_every and before // self.drop_every != self.broadcasts // self.drop_every
        skip = self.victim() if drop else None
        congested = []
        for writer in self.writers:
            if writer is skip:
                continue
            writer.write(data)
            if writer.transport.get_write_buffer_size() > RECIPIENT_HIGH_WATER_BYTES:
                congested.append(writer)
        for writer in congested:
            try:
                await writer.drain()
            except ConnectionError:
                self.leave(writer)

    def leave(self, writer):
        if writer in self.writers:
            self.writers.remove(writer)
            del self.nicks[writer]


def encode_line(obj):
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def read_lines(reader, per_line):
    """Yield lists of complete lines: one per readline(), or all that one read() brought."""
    if per_line:
        while True:
            line = await reader.readline()
            if not line:
                return
            yield [line]
    pending = b""
    while True:
        data = await reader.read(READ_BYTES)
        if not data:
            return
        pending += data
        if len(pending) > STREAM_LIMIT_BYTES and b"\n" not in pending:
            return                                  # a line over the limit: drop the client
        *lines, pending = pending.split(b"\n")
        if lines:
            yield lines


async def serve_client(room, reader, writer, per_line):
    nick = None
    try:
        async for lines in read_lines(reader, per_line):
            out = []
            for line in lines:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                kind = obj.get("type")
                if kind == "hello" and nick is None:
                    nick = str(obj.get("nick", "anon"))
                    writer.write(encode_line({"type": "welcome", "nick": nick}))
                    room.join(writer, nick)
                elif kind == "msg" and nick is not None:
                    out.append(encode_line({"type": "msg", "from": nick, "text": obj.get("text", "")}))
            if out:
                # all the messages this read brought go out as ONE write per recipient
                await room.broadcast(b"".join(out), len(out))
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        room.leave(writer)
        writer.close()


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host, port, drop_every, per_line, drop_nick_suffix=None):
    room = Room(drop_every, drop_nick_suffix)
    server = await asyncio.start_server(
        lambda r, w: serve_client(room, r, w, per_line), host, port,
        backlog=LISTEN_BACKLOG, limit=STREAM_LIMIT_BYTES, family=socket.AF_INET)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drop-every", type=int, default=0, metavar="M",
                        help="test hook: every M-th broadcast skips one recipient (0 = never)")
    parser.add_argument("--drop-nick-suffix", metavar="S",
                        help="test hook: the skipped recipient is the first whose nick ends with S")
    parser.add_argument("--per-line", action="store_true",
                        help="naive variant: readline() and one broadcast per message")
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.host, args.port, args.drop_every, args.per_line,
                      args.drop_nick_suffix))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
