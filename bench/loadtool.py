#!/usr/bin/env python3
"""Load tool for chatserver.py and its reference servers.

Targets (adapters below): chatserver (length-prefixed frames), threaded and asyncio (the
reference servers in this folder, newline-delimited JSON), redis (pub/sub, RESP written
by hand) and inspircd (an IRC daemon: PRIVMSG to one channel). The tool starts the target
itself on a free loopback port (or uses --connect).

Modes
  fanout     N subscribers in one room; publishers send K messages of P bytes as fast as the
             target accepts (at most --window un-acknowledged messages per publisher);
             deliveries/s = K*N / time until every subscriber has all K; a latency probe
             (one message every 20 ms during the load, send time inside the text); loss and
             duplicate detection. --window 0 is the flood: no window, the publishers
             write everything as fast as the server reads it.
  connscale  C idle joined clients; server RSS; time for one broadcast to reach all C
             (--rounds broadcasts, one after the other).
  filerelay  chatserver only: 1 GiB upload and download through the server vs. a raw
             loopback sendfile -> recv_into of the same file; server RSS; chat latency.

Counting without parsing: every bulk message's text starts with a 32-byte marker
("~" + 30 "B" + "~") and every probe's text with "^P<19 digits>^" (monotonic send time in
ns). Subscribers recv_into a large buffer and count markers with bytearray.count / find,
carrying the last 31 bytes over so a marker split between two reads is counted exactly once
(StreamCounter). Flow control, the same for every target: at most --window messages per
publisher are un-acknowledged; the ack is the publisher's own copy of the broadcast (Redis:
the PUBLISH reply).
Subscribers live in --procs worker processes, each one selectors (epoll) loop; the
publishers and the probe sender share the main process's selectors loop.

One JSON line per run is appended to bench/results/results.jsonl.
Example: python3 bench/loadtool.py fanout --target redis -n 100 -k 20000 -p 100
"""
import argparse
import collections
import errno
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import secrets
import select
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
DEFAULT_RESULTS = os.path.join(BENCH_DIR, "results", "results.jsonl")

# ---------------------------------------------------------------------------------------
# Limits and tunables
# ---------------------------------------------------------------------------------------
RECV_BUF_BYTES = 256 * 1024        # one recv_into per readiness event, large enough to
                                   # swallow a subscriber's whole backlog in most reads
CONNECT_CONCURRENCY = 256          # connects in flight per worker (listen backlogs are 4096)
HANDSHAKE_TIMEOUT_S = 120.0        # for all of one worker's clients to be joined
SERVER_START_TIMEOUT_S = 15.0
SETTLE_IDLE_TICKS = 1              # server "idle" = at most this many CPU ticks per window
SETTLE_WINDOW_S = 0.2
SETTLE_MAX_S = 60.0                # join/presence storms (C^2 frames) may take a while
PROBE_INTERVAL_S = 0.020
RAW_RECV_BYTES = 1 << 20           # filerelay: one recv_into buffer (raw and through server)
DEFAULT_PACE_MS = 2.0              # subscriber read pacing, see SubscriberWorker.run
PROGRESS_INTERVAL_S = 0.5          # workers report progress this often (stall detection)
FINAL_WAIT_S = 10.0                # after the bulk is complete, for probes to arrive
RSS_SAMPLE_INTERVAL_S = 0.1
QUIET_WINDOW_S = 0.3
QUIET_IDLE_FRACTION = 0.9          # "quiet" machine before a run: >= 90 % idle
DEFAULT_QUIET_WAIT_S = 30.0
DEFAULT_TIMEOUT_S = 120.0          # one run never takes longer than this by default
DEFAULT_STALL_S = 15.0             # no delivery progress for this long = give up, report loss
REDIS_MAXCLIENTS = 19000           # redis' default of 10,000 is below connscale's C+2

# Markers. Speed matters: a subscriber process scans every delivered byte.
# - The bulk marker is 32 bytes made of only two distinct bytes, "~" and "B". CPython's
#   count() (fastsearch.h) skips len+1 bytes whenever the byte after the window is absent
#   from the needle's 64-bit bloom mask; with two distinct bytes almost nothing in JSON/RESP
#   hits the mask. Measured on 4-64 message chunks of chat frames: 1.5-4.7 GB/s, against
#   1.1-1.4 GB/s for a 32-byte marker of distinct letters (0.4 GB/s for a 3-byte one).
# - Probes start with "^", a byte found nowhere else, so a one-byte find() (memchr, tens of
#   GB/s) rules a chunk out before any slower two-byte search is done.
BULK_MARK = b"~" + b"B" * 30 + b"~"
BULK_FIRST = BULK_MARK[:1]
PROBE_FIRST = b"^"
PROBE_PREFIX = b"^P"
PROBE_DIGITS = 19
PROBE_SECOND = 0x50                                 # "P"
PROBE_END = 0x5E                                    # "^"
PROBE_LEN = len(PROBE_PREFIX) + PROBE_DIGITS + 1    # "^P" + digits + "^"
CARRY_LEN = max(len(BULK_MARK), PROBE_LEN) - 1      # longest marker - 1
# The fence: one message sent to everyone before the bulk when only a sample of the
# subscribers reads its data (--verify-every). Everything after it is the same byte stream
# for every subscriber, so a byte count measured from it means the same thing for all.
FENCE_MARK = b"!FENCE!"
CID_DIGITS = 7                      # bulk cids have one length: the bytes after a marker are
                                    # the same in every bulk frame (see bulk_tail)
ROOM = b"room"


# ---------------------------------------------------------------------------------------
# Counting markers in a byte stream (sans-I/O)
# ---------------------------------------------------------------------------------------
def bulk_text(size):
    """Text of a bulk message: the marker, padded with "x" to `size` bytes (>= 32)."""
    return BULK_MARK.decode() + "x" * max(0, size - len(BULK_MARK))


def probe_text(size, sent_ns):
    """Text of a probe: "^P", the monotonic send time in ns, "^", padded to `size` bytes."""
    head = "%s%0*d^" % (PROBE_PREFIX.decode(), PROBE_DIGITS, sent_ns)
    return head + "y" * max(0, size - len(head))


class StreamCounter:
    """Counts bulk markers and probes in a stream fed in arbitrary chunks.

    `carry` keeps the last CARRY_LEN bytes seen. A marker split across two reads is found in
    carry[-(len-1):] + chunk[:len-1]: neither part alone can hold a whole marker, so every
    match there spans the boundary and was not counted before (nor will be again).
    """
    __slots__ = ("carry", "bulk", "probes", "latencies_us", "reached")

    def __init__(self):
        self.carry = b""
        self.bulk = 0
        self.probes = 0
        self.latencies_us = []
        self.reached = False

    def feed(self, buf, n, now_ns):
        """Account for buf[:n] (a bytearray), received at now_ns."""
        carry = self.carry
        self.bulk += buf.count(BULK_MARK, 0, n)
        # A marker split by the read boundary has its first byte in the carry; usually
        # neither first byte is there and the (slower) join is skipped.
        if BULK_FIRST in carry:
            self.bulk += (carry[1 - len(BULK_MARK):] + buf[:min(n, len(BULK_MARK) - 1)]).count(BULK_MARK)
        if PROBE_FIRST in carry:
            edge = carry[1 - PROBE_LEN:]
            probe_join = edge + buf[:min(n, PROBE_LEN - 1)]
            self._probes_in(probe_join, len(probe_join), now_ns, limit=len(edge))
        if buf.find(PROBE_FIRST, 0, n) >= 0:
            self._probes_in(buf, n, now_ns, limit=n)
        if n >= CARRY_LEN:
            self.carry = buf[n - CARRY_LEN:n]
        else:
            self.carry = (carry + buf[:n])[-CARRY_LEN:]

    def _probes_in(self, data, n, now_ns, limit):
        """Record complete probes in data[:n] that start before `limit`.

        A probe that does not end inside data[:n] starts within the last PROBE_LEN - 1
        bytes, which the next carry holds: it is counted on the next feed.
        """
        # one-byte find() is memchr; a two-byte needle would crawl at ~1 GB/s
        i = data.find(PROBE_FIRST, 0, n)
        while 0 <= i < limit:
            end = i + PROBE_LEN
            if end > n:
                break
            if data[i + 1] == PROBE_SECOND and data[end - 1] == PROBE_END:
                digits = data[i + len(PROBE_PREFIX):end - 1]
                if digits.isdigit():
                    self.probes += 1
                    self.latencies_us.append((now_ns - int(digits)) // 1000)
                    i = data.find(PROBE_FIRST, end, n)
                    continue
            i = data.find(PROBE_FIRST, i + 1, n)


def nth_marker_start(carry, buf, n, nth):
    """Where the nth bulk marker counted by StreamCounter.feed(buf, n) starts, relative to
    buf[0] (negative when it began in the previous read: the one split by the boundary,
    which feed() counts before those inside buf). `carry` is the counter's carry before
    that feed(); None when buf[:n] holds fewer than nth markers."""
    m = len(BULK_MARK)
    if BULK_FIRST in carry:
        edge = carry[1 - m:]
        i = (edge + buf[:min(n, m - 1)]).find(BULK_MARK)
        if i >= 0:
            if nth == 1:
                return i - len(edge)
            nth -= 1
    pos = -1
    for _ in range(nth):
        pos = buf.find(BULK_MARK, pos + 1, n)
        if pos < 0:
            return None
    return pos


# ---------------------------------------------------------------------------------------
# Target adapters
# ---------------------------------------------------------------------------------------
class HandshakeError(Exception):
    pass


class NdjsonTarget:
    """The reference servers: newline-delimited JSON, welcome line after hello."""
    ack_mark = BULK_MARK            # a publisher's ack is its own copy of the broadcast
    needs_data_dir = False
    stop_signal = signal.SIGINT

    def __init__(self, name, script, options=()):
        self.name = name
        self.script = script
        self.options = list(options)

    def server_command(self, host, port, data_dir, args):
        return [sys.executable, os.path.join(BENCH_DIR, self.script), "--host", host,
                "--port", str(port)] + self.options

    def hello(self, nick, role):
        return json.dumps({"type": "hello", "nick": nick}, separators=(",", ":")).encode() + b"\n"

    def handshake_end(self, data, role):
        """Index just past the welcome line in data, or None while it is incomplete."""
        end = data.find(b"\n")
        if end < 0:
            return None
        line = json.loads(bytes(data[:end]))
        if line.get("type") != "welcome":
            raise HandshakeError("expected welcome, got %r" % (line,))
        return end + 1

    def encode_msg(self, text, cid):
        return json.dumps({"type": "msg", "text": text}, separators=(",", ":")).encode() + b"\n"

    def bulk_tail(self, text, cid):
        """(bytes from a bulk marker to the end of its delivered frame, the frame's last
        bytes): {"type":"msg","from":"<nick>","text":"<text>"}\\n"""
        return len(text) + 3, b'"}\n'

    def version(self):
        return None


class RedisTarget:
    """Redis pub/sub: SUBSCRIBE room / PUBLISH room <payload>; the ack is PUBLISH's reply."""
    name = "redis"
    ack_mark = b"\r\n"              # the publisher only ever gets ":<n>\r\n" replies
    needs_data_dir = False
    stop_signal = signal.SIGINT

    def server_command(self, host, port, data_dir, args):
        return ["redis-server", "--port", str(port), "--bind", host, "--save", "",
                "--appendonly", "no", "--maxclients", str(REDIS_MAXCLIENTS),
                "--logfile", "", "--loglevel", "warning"]

    def hello(self, nick, role):
        if role == "sub":
            return resp_command(b"SUBSCRIBE", ROOM)
        return resp_command(b"PING")

    def handshake_end(self, data, role):
        if role == "sub":
            # *3 $9 subscribe $4 room :1 -> six CRLF-terminated lines
            return nth_crlf_end(data, 6)
        end = nth_crlf_end(data, 1)
        if end is not None and not data.startswith(b"+PONG"):
            raise HandshakeError("expected +PONG, got %r" % bytes(data[:end]))
        return end

    def encode_msg(self, text, cid):
        return resp_command(b"PUBLISH", ROOM, text.encode())

    def bulk_tail(self, text, cid):
        """*3 $7 message $4 room $<len> <text>\\r\\n"""
        return len(text) + 2, b"\r\n"

    def version(self):
        try:
            out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
            return out.split()[2].split("=")[1]
        except (OSError, IndexError):
            return None


def resp_command(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def nth_crlf_end(data, count):
    pos = 0
    for _ in range(count):
        i = data.find(b"\r\n", pos)
        if i < 0:
            return None
        pos = i + 2
    return pos


FRAME_HEAD = struct.Struct(">II")


class ChatserverTarget:
    """chatserver.py's framed transport: uint32 H | uint32 P | JSON header | payload."""
    name = "chatserver"
    ack_mark = BULK_MARK
    needs_data_dir = True
    stop_signal = signal.SIGINT     # the server shuts down cleanly (cProfile writes its stats)

    def __init__(self, path=None):
        self.path = path or os.path.join(REPO_DIR, "chatserver.py")

    def server_command(self, host, port, data_dir, args):
        cmd = [sys.executable, self.path, "--host", host, "--port", str(port), "--data-dir", data_dir,
               "--open", "--no-browser", "--rate-limit", "0", "--max-clients", "20000", "--quiet",
               # idle benchmark clients never answer pings: keep them for a whole run
               "--ping-after", "600", "--idle-timeout", "1200"]
        with open(self.path, encoding="utf-8") as f:
            source = f.read()
        if "--max-per-address" in source:
            # every benchmark client comes from 127.0.0.1; older copies (a before/after run)
            # have neither the cap nor the hello deadline
            cmd += ["--max-per-address", "0", "--hello-timeout", "120"]
        if not args.persist:
            cmd.append("--memory")
        return cmd

    def hello(self, nick, role):
        # every benchmark client is its own device (docs/PROTOCOL.md, "Devices and nicks")
        return encode_frame({"type": "hello", "nick": nick, "device": secrets.token_urlsafe(16),
                             "client": "bench/1", "proto": 1})

    def handshake_end(self, data, role):
        pos = 0
        while len(data) - pos >= FRAME_HEAD.size:
            hlen, plen = FRAME_HEAD.unpack_from(data, pos)
            end = pos + FRAME_HEAD.size + hlen + plen
            if end > len(data):
                return None
            header = json.loads(bytes(data[pos + FRAME_HEAD.size:pos + FRAME_HEAD.size + hlen]))
            if header.get("type") == "welcome":
                return end
            if header.get("type") == "error":
                raise HandshakeError("chatserver refused hello: %r" % (header,))
            pos = end
        return None

    def encode_msg(self, text, cid):
        return encode_frame({"type": "msg", "text": text, "cid": cid})

    def bulk_tail(self, text, cid):
        """A broadcast msg ends with ..."text":"<text>","cid":"<cid>"} (no payload)."""
        return len(text) + len('","cid":"') + len(cid) + len('"}'), b'"}'

    def version(self):
        try:
            with open(self.path, "rb") as f:
                return "sha256:" + hashlib.sha256(f.read()).hexdigest()[:12]
        except OSError:
            return None


def encode_frame(header, payload=b""):
    head = json.dumps(header, separators=(",", ":")).encode()
    return FRAME_HEAD.pack(len(head), len(payload)) + head + payload


# InspIRCd: the connect class lifts every per-client limit a benchmark would hit (flood
# control and fake lag off, command rate and queues huge, 100,000 users) and sets pingfreq
# above any run's length, so that no subscriber ever has to answer a PING. `threshold`
# stays below ~4 million (InspIRCd overflows above).
INSPIRCD_PATHS = ("inspircd", "/usr/sbin/inspircd")    # Debian installs it outside a user's PATH
INSPIRCD_CONFIG = """\
<server name="bench.local" description="bench" network="bench">
<admin name="x" nick="x" email="x@x">
<bind address="{host}" port="{port}" type="clients">
<connect allow="*" timeout="300" pingfreq="86400" threshold="2000000"
         commandrate="2000000000" fakelag="no" hardsendq="1073741824"
         softsendq="1073741824" recvq="1073741824" localmax="100000" globalmax="100000"
         limit="100000" resolvehostnames="no" useident="no">
<performance nouserdns="yes" softlimit="19000" somaxconn="4096">
"""
IRC_CHANNEL = b"#" + ROOM
IRC_LINE_MAX = 512                  # bytes, CRLF included; longer lines are cut
# what the server puts before a delivered PRIVMSG's text: ":nick!ident@127.0.0.1 PRIVMSG
# #room :" with the longest nick (30) and ident (10) InspIRCd allows by default
IRC_DELIVERY_OVERHEAD = len(":%s!%s@127.0.0.1 PRIVMSG %s :\r\n" % ("n" * 30, "i" * 10,
                                                                  IRC_CHANNEL.decode()))
IRC_ACK = b"PING :a\r\n"            # answered by one PONG, in order: the publisher's ack
IRC_REGISTERED = b"001"             # RPL_WELCOME
IRC_END_OF_NAMES = b"366"           # the last reply to our JOIN
IRC_REFUSALS = (b"432", b"433", b"436", b"451", b"465", b"471", b"473", b"474", b"475")


def find_inspircd():
    for candidate in INSPIRCD_PATHS:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def irc_lines(data):
    """(end offset, command or numeric) of every complete line in data."""
    pos = 0
    while True:
        i = data.find(b"\r\n", pos)
        if i < 0:
            return
        line = bytes(data[pos:i])
        parts = line.split(b" ", 2)
        command = parts[1] if line.startswith(b":") and len(parts) > 1 else parts[0]
        yield i + 2, command
        pos = i + 2


class IrcTarget:
    """InspIRCd (Debian's IRC daemon): every client registers (NICK/USER), then JOINs #room;
    messages are PRIVMSG #room. The sender gets no copy of its own PRIVMSG, so every
    message is followed by a PING whose PONG (in order) is the ack, as PUBLISH's reply is
    for Redis."""
    name = "inspircd"
    ack_mark = b" PONG "
    needs_data_dir = True
    stop_signal = signal.SIGTERM        # InspIRCd ignores SIGINT

    def __init__(self):
        self.path = find_inspircd() or INSPIRCD_PATHS[-1]

    def server_command(self, host, port, data_dir, args):
        config = os.path.join(data_dir, "inspircd.conf")
        with open(config, "w") as f:
            f.write(INSPIRCD_CONFIG.format(host=host, port=port))
        cmd = [self.path, "--nofork", "--nopid", "--config", config]
        if os.geteuid() == 0:
            cmd.append("--runasroot")       # it refuses to start as root otherwise
        return cmd

    def hello(self, nick, role):
        return b"NICK %s\r\nUSER %s 0 * :%s\r\n" % ((nick.encode(),) * 3)

    def follow_up(self, data, role):
        """JOIN once registered: before RPL_WELCOME (which InspIRCd sends from a one-second
        timer) the server refuses every other command."""
        if any(command == IRC_REGISTERED for _, command in irc_lines(data)):
            return b"JOIN %s\r\n" % IRC_CHANNEL
        return None

    def handshake_end(self, data, role):
        """Index just past the end of the channel's names list (the JOIN is done)."""
        for end, command in irc_lines(data):
            if command in IRC_REFUSALS or command == b"ERROR":
                raise HandshakeError("inspircd refused: %r" % bytes(data[:end])[-200:])
            if command == IRC_END_OF_NAMES:
                return end
        return None

    def encode_msg(self, text, cid):
        if len(text) + IRC_DELIVERY_OVERHEAD > IRC_LINE_MAX:
            raise ValueError("a %d-byte text does not fit in an IRC line of %d bytes"
                             % (len(text), IRC_LINE_MAX))
        return b"PRIVMSG %s :%s\r\n%s" % (IRC_CHANNEL, text.encode(), IRC_ACK)

    def bulk_tail(self, text, cid):
        """:nick!ident@host PRIVMSG #room :<text>\\r\\n"""
        return len(text) + 2, b"\r\n"

    def version(self):
        try:
            out = subprocess.run([self.path, "--version"], capture_output=True, text=True).stdout
            return out.strip() or None
        except OSError:
            return None


def make_target(name, args=None):
    if name == "threaded":
        return NdjsonTarget("threaded", "ref_threaded.py")
    if name == "asyncio":
        return NdjsonTarget("asyncio", "ref_asyncio.py")
    if name == "asyncio-perline":
        return NdjsonTarget("asyncio-perline", "ref_asyncio.py", ["--per-line"])
    if name == "redis":
        return RedisTarget()
    if name == "chatserver":
        return ChatserverTarget(getattr(args, "chatserver", None))
    if name == "inspircd":
        return IrcTarget()
    raise ValueError("unknown target %r" % name)


TARGETS = ("threaded", "asyncio", "asyncio-perline", "redis", "chatserver", "inspircd")


# ---------------------------------------------------------------------------------------
# Process and machine helpers
# ---------------------------------------------------------------------------------------
def raise_fd_limit():
    """Soft RLIMIT_NOFILE up to the hard limit; children (servers, workers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def read_rss_kib(pid):
    """VmRSS of pid in KiB from /proc/<pid>/status, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_cpu_ticks(pid):
    """utime + stime of pid (all its threads), in clock ticks."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def machine_info():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "cpu_model": model, "mem_mib": mem_kib // 1024 if mem_kib else None,
            "kernel": platform.release(), "python": platform.python_version()}


def read_cpu_busy_total():
    """(busy, total, irq) clock ticks of the whole machine, from the first line of /proc/stat
    (user nice system idle iowait irq softirq steal ...). `irq` = irq + softirq: loopback TCP
    delivery is largely softirq work that no process is charged for."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)     # idle + iowait
    irq = sum(fields[5:7])
    return sum(fields) - idle, sum(fields), irq


def machine_idle_fraction(window_s=QUIET_WINDOW_S):
    busy0, total0, _ = read_cpu_busy_total()
    time.sleep(window_s)
    busy1, total1, _ = read_cpu_busy_total()
    return 1.0 - (busy1 - busy0) / max(1, total1 - total0)


def wait_machine_quiet(max_wait_s):
    """The machine is shared: wait (bounded) until other processes leave it mostly idle."""
    deadline = time.monotonic() + max_wait_s
    idle = machine_idle_fraction()
    while idle < QUIET_IDLE_FRACTION and time.monotonic() < deadline:
        idle = machine_idle_fraction()
    return round(idle, 3)


class CpuMeter:
    """CPU seconds used between start() and stop() by the server, this tool (main process
    and workers), interrupts/softirqs ("irq": mostly loopback TCP delivery) and every other
    process on the machine ("foreign": other people's jobs)."""

    def __init__(self, server_pid, worker_pids):
        self.pids = {"server": [server_pid] if server_pid else [], "tool": [os.getpid()] + list(worker_pids)}
        self.before = None

    def _snapshot(self):
        busy, _, irq = read_cpu_busy_total()
        snap = {"machine": busy, "irq": irq}
        for name, pids in self.pids.items():
            snap[name] = sum(read_cpu_ticks(pid) or 0 for pid in pids)
        return snap

    def start(self):
        self.before = self._snapshot()

    def stop(self):
        after = self._snapshot()
        used = {k: (after[k] - self.before[k]) / CLOCK_TICKS for k in after}
        # /proc/stat counts in USER_HZ per CPU; the per-pid counters use the same unit.
        # foreign = other processes (other people's jobs on a shared machine)
        used["foreign"] = max(0.0, used["machine"] - used["irq"] - used["server"] - used["tool"])
        return {k: round(v, 2) for k, v in used.items()}


def git_revision():
    try:
        out = subprocess.run(["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Linux: get SIGTERM when the tool dies, even by SIGKILL, so no server or worker is left
    behind. Best effort (ctypes/prctl); elsewhere a no-op."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """A target server process started for one run, in its own temporary directory."""

    def __init__(self, target, host, args):
        self.target = target
        self.host = host
        self.port = free_port(host)
        self.tmp = tempfile.mkdtemp(prefix="bench-%s-" % target.name)
        data_dir = os.path.join(self.tmp, "data")
        os.makedirs(data_dir)
        self.command = target.server_command(host, self.port, data_dir, args)
        if getattr(args, "profile", None):
            if self.command[0] != sys.executable:
                raise SystemExit("--profile works only for the Python targets")
            # cProfile writes its stats when the server returns from main() after SIGINT
            self.command[1:1] = ["-m", "cProfile", "-o", os.path.abspath(args.profile)]
        self.log_path = os.path.join(self.tmp, "server.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.tmp,
                                     preexec_fn=die_with_parent)
        self.pid = self.proc.pid
        self._wait_listening()

    def _wait_listening(self):
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s at start: %s" % (
                    self.target.name, self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s not listening after %.0f s" % (self.target.name, SERVER_START_TIMEOUT_S))

    def log_tail(self, size=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(self.target.stop_signal)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_server_idle(pid, max_s=SETTLE_MAX_S):
    """Wait until the server stops burning CPU (join/presence traffic drained)."""
    if pid is None:
        time.sleep(0.5)
        return 0.5
    start = time.monotonic()
    last = read_cpu_ticks(pid)
    while time.monotonic() - start < max_s:
        time.sleep(SETTLE_WINDOW_S)
        now = read_cpu_ticks(pid)
        if now is None or last is None or now - last <= SETTLE_IDLE_TICKS:
            break
        last = now
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------
# Subscriber worker process
# ---------------------------------------------------------------------------------------
class Client:
    """One connection: handshake buffer first, then a StreamCounter.

    With --verify-every M > 1 a subscriber first looks for the fence (`fence` holds what it
    read so far); `since` then counts the bytes after it. A "drain" subscriber stops reading
    its data into user space there (MSG_TRUNC) and records (since, time) per read until the
    end of the bulk is known from a verifying subscriber."""
    __slots__ = ("sock", "nick", "role", "hs", "counter", "joined", "out", "drain", "fence",
                 "since", "timeline", "followed_up")

    def __init__(self, sock, nick, role):
        self.sock = sock
        self.nick = nick
        self.role = role
        self.hs = bytearray()
        self.counter = StreamCounter()
        self.joined = False
        self.out = b""
        self.drain = False
        self.fence = None
        self.since = 0
        self.timeline = []
        self.followed_up = False


def open_client(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    err = sock.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock


def feed_handshake(target, client, buf, n, now_ns):
    """Buffer handshake bytes; once joined, count whatever followed the welcome."""
    client.hs += buf[:n]
    send_follow_up(target, client)
    end = target.handshake_end(client.hs, client.role)
    if end is None:
        return False
    rest = bytearray(client.hs[end:])
    client.hs = None
    client.joined = True
    if rest:
        client.counter.feed(rest, len(rest), now_ns)
    return True


def send_follow_up(target, client):
    """The second step of a two-step handshake (IRC: JOIN once registered), sent once the
    server's replies so far call for it. A few bytes on a connection with nothing else
    queued: one non-blocking send() takes them whole."""
    follow_up = getattr(target, "follow_up", None)
    if follow_up is None or client.followed_up:
        return
    out = follow_up(client.hs, client.role)
    if out:
        client.followed_up = True
        if client.sock.send(out) != len(out):
            raise HandshakeError("%s: short send of the handshake's second step" % client.nick)


class SubscriberWorker:
    """Runs in a child process: connects its subscribers, counts, reports over a Pipe."""

    def __init__(self, target, host, port, nicks, conn, pace_s, verify_every=1, tail=None):
        self.parent_pid = os.getppid()
        self.pace_s = pace_s
        self.verify_every = verify_every
        self.tail = tail                # (bytes from a bulk marker to its frame's end, end bytes)
        self.unfenced = 0
        self.bulk_end = None            # bytes after the fence up to the end of the K-th bulk frame
        self.mismatches = []            # verifying subscribers that disagree on bulk_end
        self.target = target
        self.host = host
        self.port = port
        self.nicks = nicks
        self.conn = conn
        self.sel = selectors.DefaultSelector()
        self.buf = bytearray(RECV_BUF_BYTES)
        self.clients = []
        self.errors = []
        self.closed = 0
        self.expect = None
        self.pending = 0
        self.last_done_ns = 0
        self.probe_target = None

    # -- connecting -------------------------------------------------------------------
    def connect_all(self):
        todo = collections.deque(self.nicks)
        connecting = 0
        joined = 0
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
        while joined + len(self.errors) < len(self.nicks):
            while todo and connecting < CONNECT_CONCURRENCY:
                nick = todo.popleft()
                try:
                    client = Client(open_client(self.host, self.port), nick, "sub")
                except OSError as e:
                    self.errors.append("connect %s: %s" % (nick, e))
                    continue
                client.out = self.target.hello(nick, "sub")
                if self.verify_every > 1:
                    client.drain = len(self.clients) % self.verify_every != 0
                    client.fence = bytearray()
                    self.unfenced += 1
                self.sel.register(client.sock, selectors.EVENT_WRITE, client)
                self.clients.append(client)
                connecting += 1
            if time.monotonic() > deadline or os.getppid() != self.parent_pid:
                self.errors.append("handshake timeout: %d of %d joined" % (joined, len(self.nicks)))
                break
            for key, mask in self.sel.select(0.5):
                client = key.data
                try:
                    if mask & selectors.EVENT_WRITE:
                        self._send_hello(client)
                    elif self._read_handshake(client):
                        joined += 1
                        connecting -= 1
                except (OSError, HandshakeError, ValueError) as e:
                    self.errors.append("%s: %s" % (client.nick, e))
                    self._drop(client)
                    if client.joined:
                        joined -= 1         # lost after joining: counted once, as an error
                    else:
                        connecting -= 1
        return joined

    def _send_hello(self, client):
        err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        sent = client.sock.send(client.out)
        client.out = client.out[sent:]
        if not client.out:
            self.sel.modify(client.sock, selectors.EVENT_READ, client)

    def _read_handshake(self, client):
        """True when this read completed the client's handshake."""
        n = client.sock.recv_into(self.buf)
        if n == 0:
            raise OSError("closed by server while others were joining")
        if client.joined:       # presence traffic caused by the clients still joining
            client.counter.feed(self.buf, n, time.monotonic_ns())
            return False
        return feed_handshake(self.target, client, self.buf, n, time.monotonic_ns())

    def _drop(self, client):
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        if client in self.clients:
            self.clients.remove(client)

    # -- counting ---------------------------------------------------------------------
    def run(self):
        joined = self.connect_all()
        self.conn.send(("ready", joined, self.errors[:5]))
        self.sel.register(self.conn, selectors.EVENT_READ, None)
        buf = self.buf
        cpu0 = time.process_time()
        next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        pace = self.pace_s
        while True:
            events = self.sel.select(0.05)
            woke = time.monotonic()
            for key, _ in events:
                client = key.data
                if client is None:
                    if not self._handle_command(cpu0):
                        return
                    continue
                draining = client.drain and client.fence is None and client.joined
                try:
                    if draining:    # the kernel drops the data: no copy, nothing to scan
                        n = client.sock.recv_into(buf, RECV_BUF_BYTES, socket.MSG_TRUNC)
                    else:
                        n = client.sock.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self.errors.append("%s: %s" % (client.nick, e))
                    n = 0
                if n == 0:
                    self.closed += 1
                    self.sel.unregister(client.sock)
                    client.sock.close()
                    continue
                now = time.monotonic_ns()
                if draining:
                    self._drained(client, n, now)
                    continue
                counter = client.counter
                if not client.joined:
                    try:
                        feed_handshake(self.target, client, buf, n, now)
                    except (HandshakeError, ValueError) as e:
                        self.errors.append("%s: %s" % (client.nick, e))
                    continue
                before, carry = counter.bulk, counter.carry
                counter.feed(buf, n, now)
                if client.fence is not None:
                    self._look_for_fence(client, buf, n, now)
                elif self.verify_every > 1:
                    self._verified(client, buf, n, before, carry)
                if not counter.reached and self.expect is not None and counter.bulk >= self.expect:
                    self._mark_reached(client, now)
            if pace and events:
                # Let data pile up in the socket buffers: fewer, larger reads keep this
                # process (Python, one core) from being the bottleneck. Costs <= pace of
                # probe latency resolution.
                idle = woke + pace - time.monotonic()
                if idle > 0:
                    time.sleep(idle)
            if self.probe_target is not None and self._probes_complete():
                self.conn.send(("final", self._final_stats(cpu0)))
                self.probe_target = None
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_INTERVAL_S
                if os.getppid() != self.parent_pid:
                    return                  # the tool was killed: do not linger as an orphan
                self.conn.send(("progress", sum(c.since if c.drain else c.counter.bulk
                                                for c in self.clients)))

    def _mark_reached(self, client, when_ns):
        client.counter.reached = True
        client.timeline = None
        self.last_done_ns = max(self.last_done_ns, when_ns)
        self.pending -= 1
        if self.pending == 0:
            self.conn.send(("reached", self.expect, self.last_done_ns))

    def _look_for_fence(self, client, buf, n, now):
        """Before the fence: keep what arrived (presence frames, a few hundred bytes) until
        the fence marker is in it; `since` starts right after the marker."""
        client.fence += buf[:n]
        i = client.fence.find(FENCE_MARK)
        if i < 0:
            del client.fence[:-(len(FENCE_MARK) - 1)]
            return
        client.since = len(client.fence) - (i + len(FENCE_MARK))
        client.fence = None
        if client.drain:
            client.timeline.append((client.since, now))
        self.unfenced -= 1
        if self.unfenced == 0:
            self.conn.send(("fenced",))

    def _drained(self, client, n, now):
        client.since += n
        if client.counter.reached:
            return
        if self.bulk_end is None:       # (known only once `expect` is)
            client.timeline.append((client.since, now))
        elif client.since >= self.bulk_end:
            self._mark_reached(client, now)

    def _verified(self, client, buf, n, before, carry):
        """A verifying subscriber after the fence: when this read brought the K-th bulk
        marker, the end of its frame is the end of the bulk, in bytes after the fence."""
        offset = client.since
        client.since += n
        expect = self.expect
        if expect is None or not before < expect <= client.counter.bulk:
            return
        start = nth_marker_start(carry, buf, n, expect - before)
        tail, ending = self.tail
        end = start + tail
        if 0 <= end - len(ending) and end <= n and buf[end - len(ending):end] != ending:
            self.mismatches.append("%s: the K-th bulk frame does not end %d bytes after its "
                                   "marker" % (client.nick, tail))
        self._set_bulk_end(offset + end, client)

    def _set_bulk_end(self, bulk_end, client):
        if self.bulk_end is not None:
            if bulk_end != self.bulk_end:
                self.mismatches.append("%s: bulk ends %d bytes after the fence, not %d: the "
                                       "subscribers' streams differ" % (client.nick, bulk_end,
                                                                         self.bulk_end))
            return
        self.bulk_end = bulk_end
        for c in self.clients:      # drainers that passed the end already: when they did
            if c.drain and not c.counter.reached and c.timeline is not None:
                for since, when in c.timeline:
                    if since >= bulk_end:
                        self._mark_reached(c, when)
                        break

    def _handle_command(self, cpu0):
        try:
            cmd = self.conn.recv()
        except EOFError:
            return False
        if cmd[0] == "expect":
            self.expect = cmd[1]
            self.last_done_ns = 0
            self.pending = 0
            for client in self.clients:
                client.counter.reached = client.counter.bulk >= self.expect
                if not client.counter.reached:
                    self.pending += 1
            if self.pending == 0:
                self.conn.send(("reached", self.expect, time.monotonic_ns()))
        elif cmd[0] == "probes":
            self.probe_target = cmd[1]
        elif cmd[0] == "stop":
            self.conn.send(("final", self._final_stats(cpu0)))
            return False
        return True

    def _probes_complete(self):
        """Every verifying subscriber has every probe, and every drain subscriber as many
        bytes after the fence as they (the same stream, so the same count)."""
        verified = [c for c in self.clients if not c.drain]
        if not all(c.counter.probes >= self.probe_target for c in verified):
            return False
        last = max((c.since for c in verified), default=0)
        return all(c.since >= last for c in self.clients if c.drain)

    def _final_stats(self, cpu0):
        expect = self.expect or 0
        verified = [c for c in self.clients if not c.drain]
        bulk = [c.counter.bulk for c in verified]
        lat = []
        for c in verified:
            lat.extend(c.counter.latencies_us)
        drained_lost, drained_dup = self._drained_lost_and_dup(expect)
        return {
            "clients": len(self.clients), "expect": expect, "verified": len(verified),
            "bulk_end": self.bulk_end, "mismatches": self.mismatches[:5],
            "bulk_total": sum(bulk),
            "lost": sum(max(0, expect - b) for b in bulk) + drained_lost,
            "dup": sum(max(0, b - expect) for b in bulk) + drained_dup,
            "probes_total": sum(c.counter.probes for c in self.clients),
            "probe_target": self.probe_target,
            "latencies_us": lat,
            "closed": self.closed,
            "errors": self.errors[:5],
            "cpu_s": time.process_time() - cpu0,
        }

    def _drained_lost_and_dup(self, expect):
        """Messages missing at (or extra for) drain subscribers, estimated from the bytes
        they got after the fence against the verifying subscribers' count: their data was
        not read, so only the byte count can tell. Probes keep arriving after the bulk, so
        a drain subscriber that missed a message may still pass the end of the bulk; this
        end-of-run comparison is what catches it."""
        drained = [c for c in self.clients if c.drain]
        if not expect or not drained:
            return 0, 0
        if not self.bulk_end:
            return expect * sum(1 for c in drained if not c.counter.reached), 0
        last = max(c.since for c in self.clients if not c.drain)
        per_message = self.bulk_end / expect
        lost = dup = 0
        for c in drained:
            gap = last - c.since
            if gap > 0:
                lost += max(1, round(gap / per_message))
            elif gap < 0:
                dup += max(1, round(-gap / per_message))
        return lost, dup


def worker_main(target, host, port, nicks, conn, pace_s, verify_every, tail):
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides when we stop
    die_with_parent()
    try:
        SubscriberWorker(target, host, port, nicks, conn, pace_s, verify_every, tail).run()
    except Exception as e:          # report, never hang the parent
        try:
            conn.send(("crash", repr(e)))
        except OSError:
            pass
        raise


class Workers:
    """The subscriber processes, seen from the main process."""

    def __init__(self, target, host, port, count, procs, prefix, pace_s, verify_every=1,
                 tail=None):
        ctx = multiprocessing.get_context("fork")
        procs = max(1, min(procs, count))
        self.conns = []
        self.procs = []
        for w in range(procs):
            nicks = ["%s%d" % (prefix, i) for i in range(w, count, procs)]
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, daemon=True, args=(
                target, host, port, nicks, child, pace_s, verify_every, tail))
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self.progress = [0] * procs
        self.finals = [None] * procs

    def wait_ready(self, timeout):
        joined, errors = 0, []
        for conn in self.conns:
            if not conn.poll(timeout):
                raise RuntimeError("a worker did not finish connecting in %.0f s" % timeout)
            msg = conn.recv()
            if msg[0] == "crash":
                raise RuntimeError("worker crashed: %s" % msg[1])
            joined += msg[1]
            errors.extend(msg[2])
        return joined, errors

    def wait_fenced(self, timeout):
        """Until every worker's subscribers have all read past the fence."""
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not conn.poll(left):
                    raise RuntimeError("the fence did not reach every subscriber in %.0f s"
                                       % timeout)
                msg = conn.recv()
                if msg[0] == "fenced":
                    break
                if msg[0] == "crash":
                    raise RuntimeError("worker crashed: %s" % msg[1])

    def send_all(self, *msg):
        for conn in self.conns:
            try:
                conn.send(msg)
            except OSError:
                pass

    def collect_finals(self, timeout):
        deadline = time.monotonic() + timeout
        for i, conn in enumerate(self.conns):
            while self.finals[i] is None:
                left = deadline - time.monotonic()
                if left <= 0 or not conn.poll(left):
                    break
                try:
                    msg = conn.recv()
                except EOFError:
                    break
                if msg[0] == "final":
                    self.finals[i] = msg[1]
        if any(f is None for f in self.finals):
            self.send_all("stop")
            for i, conn in enumerate(self.conns):
                while self.finals[i] is None and conn.poll(5):
                    msg = conn.recv()
                    if msg[0] == "final":
                        self.finals[i] = msg[1]
        return [f for f in self.finals if f is not None]

    def close(self):
        self.send_all("stop")
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self.conns:
            conn.close()


def merge_finals(finals):
    out = {"clients": 0, "verified": 0, "bulk_total": 0, "lost": 0, "dup": 0,
           "probes_total": 0, "closed": 0, "errors": [], "cpu_s": 0.0, "latencies_us": []}
    ends = {f["bulk_end"] for f in finals if f.get("bulk_end") is not None}
    out["mismatches"] = [m for f in finals for m in f.get("mismatches", [])]
    if len(ends) > 1:
        out["mismatches"].append("workers saw the bulk end at different offsets: %s"
                                 % sorted(ends))
    out["bulk_end"] = ends.pop() if len(ends) == 1 else None
    for f in finals:
        for key in ("clients", "verified", "bulk_total", "lost", "dup", "probes_total", "closed"):
            out[key] += f[key]
        out["errors"].extend(f["errors"])
        out["cpu_s"] += f["cpu_s"]
        out["latencies_us"].extend(f["latencies_us"])
    return out


# ---------------------------------------------------------------------------------------
# Main-process connections: publishers and the probe sender
# ---------------------------------------------------------------------------------------
def blocking_join(target, host, port, nick, role, timeout=30.0):
    """Connect and complete the handshake synchronously; returns a non-blocking Client."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = Client(sock, nick, role)
    sock.sendall(target.hello(nick, role))
    buf = bytearray(RECV_BUF_BYTES)
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            raise HandshakeError("%s closed during handshake" % target.name)
        if feed_handshake(target, client, buf, n, time.monotonic_ns()):
            break
    sock.setblocking(False)
    return client


NO_WINDOW = 0                       # --window 0: flood, no flow control at all


class Publisher:
    """Sends pre-encoded messages with at most `window` of them un-acknowledged, or, with
    window NO_WINDOW (flood), all of them as fast as the socket takes them: then only the
    server's reading (TCP back-pressure) paces the sender."""

    def __init__(self, client, messages, window, target):
        self.client = client
        self.messages = messages
        self.window = window
        self.ack_mark = target.ack_mark
        self.sent = 0
        self.acked = 0
        self.acks = StreamCounter() if target.ack_mark == BULK_MARK else None
        self.out = memoryview(b"")
        self.carry = b""

    def done(self):
        return self.acked >= len(self.messages)

    def fill(self):
        """Queue as many messages as the window allows, if nothing is queued yet."""
        if len(self.out) == 0 and self.sent < len(self.messages):
            upto = len(self.messages)
            if self.window != NO_WINDOW:
                upto = min(upto, self.acked + self.window)
            if upto > self.sent:
                self.out = memoryview(b"".join(self.messages[self.sent:upto]))
                self.sent = upto

    def flush(self):
        """Send what is queued; True while something is left (wants EVENT_WRITE)."""
        while len(self.out):
            try:
                n = self.client.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return True
            self.out = self.out[n:]
        return False

    def on_readable(self, buf, now_ns):
        n = self.client.sock.recv_into(buf)
        if n == 0:
            raise OSError("publisher %s: closed by server" % self.client.nick)
        if self.acks is not None:
            self.acks.feed(buf, n, now_ns)
            self.acked = self.acks.bulk
        else:
            data = self.carry + bytes(buf[:n])
            self.acked += data.count(self.ack_mark)
            self.carry = data[-(len(self.ack_mark) - 1):]


class EventLoop:
    """The main process loop: publishers, the probe sender, workers' pipes, RSS samples."""

    def __init__(self, workers, server_pid):
        self.sel = selectors.DefaultSelector()
        self.buf = bytearray(RECV_BUF_BYTES)
        self.workers = workers
        self.server_pid = server_pid
        self.publishers = []
        self.probe = None
        self.probe_out = b""
        self.probe_size = 0
        self.probes_sent = 0
        self.probing = False
        self.next_probe = 0.0
        self.reached = {}
        self.rss_peak = 0
        self.next_rss = 0.0
        self.last_progress = time.monotonic()
        self.progress_total = -1
        for i, conn in enumerate(workers.conns):
            self.sel.register(conn, selectors.EVENT_READ, ("worker", i))

    def add_publisher(self, pub):
        self.publishers.append(pub)
        self.sel.register(pub.client.sock, selectors.EVENT_READ, ("pub", pub))

    def set_probe(self, client, size):
        self.probe = client
        self.probe_size = size
        self.sel.register(client.sock, selectors.EVENT_READ, ("probe", client))

    def start_probing(self):
        self.probing = self.probe is not None
        self.next_probe = time.monotonic()

    def _send_probe(self, target):
        text = probe_text(self.probe_size, time.monotonic_ns())
        self.probe_out += target.encode_msg(text, "p%d" % self.probes_sent)
        self.probes_sent += 1
        self._flush_probe()

    def _flush_probe(self):
        try:
            n = self.probe.sock.send(self.probe_out)
            self.probe_out = self.probe_out[n:]
        except (BlockingIOError, InterruptedError):
            pass
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.probe_out else 0)
        self.sel.modify(self.probe.sock, mask, ("probe", self.probe))

    def run_until(self, done, target, deadline, stall_s):
        """Drive everything until done() or the deadline / a stall; True if done()."""
        self.last_progress = time.monotonic()
        for pub in self.publishers:
            self._pump(pub)
        while not done():
            now = time.monotonic()
            if now > deadline or now - self.last_progress > stall_s:
                return False
            if self.probing and now >= self.next_probe:
                self._send_probe(target)
                self.next_probe += PROBE_INTERVAL_S
                if self.next_probe < now:                  # fell behind: do not burst
                    self.next_probe = now + PROBE_INTERVAL_S
            if now >= self.next_rss:
                self.next_rss = now + RSS_SAMPLE_INTERVAL_S
                rss = read_rss_kib(self.server_pid) if self.server_pid else None
                if rss:
                    self.rss_peak = max(self.rss_peak, rss)
            timeout = 0.05
            if self.probing:
                timeout = max(0.0, min(timeout, self.next_probe - now))
            for key, mask in self.sel.select(timeout):
                kind, obj = key.data
                if kind == "pub":
                    if mask & selectors.EVENT_READ:
                        acked = obj.acked
                        obj.on_readable(self.buf, time.monotonic_ns())
                        if obj.acked != acked:      # probes alone are not progress
                            self.last_progress = time.monotonic()
                    self._pump(obj)
                elif kind == "probe":
                    if mask & selectors.EVENT_READ:
                        if self.probe.sock.recv_into(self.buf) == 0:
                            raise OSError("probe connection closed by server")
                    if mask & selectors.EVENT_WRITE:
                        self._flush_probe()
                else:
                    self._worker_message(obj)
        return True

    def _pump(self, pub):
        pub.fill()
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if pub.flush() else 0)
        self.sel.modify(pub.client.sock, mask, ("pub", pub))

    def _worker_message(self, i):
        conn = self.workers.conns[i]
        try:
            msg = conn.recv()
        except EOFError:
            self.sel.unregister(conn)
            return
        if msg[0] == "reached":
            self.reached.setdefault(msg[1], {})[i] = msg[2]
        elif msg[0] == "progress":
            self.workers.progress[i] = msg[1]
            total = sum(self.workers.progress)
            if total != self.progress_total:
                self.progress_total = total
                self.last_progress = time.monotonic()
        elif msg[0] == "final":
            self.workers.finals[i] = msg[1]
        elif msg[0] == "crash":
            raise RuntimeError("worker crashed: %s" % msg[1])

    def all_reached(self, expect):
        return len(self.reached.get(expect, {})) == len(self.workers.conns)

    def reached_ns(self, expect):
        return max(self.reached[expect].values())


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def latency_summary(latencies_us, probes_sent, subscribers):
    lat = sorted(latencies_us)
    ms = lambda v: None if v is None else round(v / 1000.0, 3)
    return {"sent": probes_sent, "samples": len(lat),
            "lost": max(0, probes_sent * subscribers - len(lat)),
            "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)),
            "max_ms": ms(lat[-1] if lat else None)}


# ---------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------
class Run:
    """Shared setup/teardown: the server, the subscriber workers, the result record."""

    def __init__(self, args, mode):
        self.args = args
        self.mode = mode
        self.target = make_target(args.target, args)
        self.host = args.host
        self.server = None
        self.workers = None
        self.extra = []
        self.run_id = uuid.uuid4().hex[:8]
        self.fd_limit = raise_fd_limit()

    def start_server(self):
        if self.args.connect:
            host, port = self.args.connect.rsplit(":", 1)
            self.host, self.port, self.server_pid = host, int(port), self.args.server_pid
        else:
            self.server = Server(self.target, self.host, self.args)
            self.port, self.server_pid = self.server.port, self.server.pid

    def start_subscribers(self, count, verify_every=1, tail=None):
        t0 = time.monotonic()
        self.workers = Workers(self.target, self.host, self.port, count, self.args.procs,
                               "s%s-" % self.run_id[:4], self.args.pace_ms / 1000.0,
                               verify_every, tail)
        joined, errors = self.workers.wait_ready(HANDSHAKE_TIMEOUT_S + 30)
        if joined != count:
            raise RuntimeError("only %d of %d subscribers joined: %s" % (joined, count, errors))
        return time.monotonic() - t0

    def join_extra(self, nick, role):
        client = blocking_join(self.target, self.host, self.port, nick, role)
        self.extra.append(client)
        return client

    def record(self, fields):
        rec = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run_id": self.run_id,
               "tag": self.args.tag, "mode": self.mode, "target": self.target.name,
               "target_version": self.target.version(), "git": git_revision(),
               "machine": machine_info(), "procs": self.args.procs,
               "fd_limit": self.fd_limit[0]}
        if self.target.name == "chatserver":
            rec["persist"] = self.args.persist
            if getattr(self.args, "chatserver", None):
                # another version of the server (an A/B comparison): report.py leaves it
                # out of the tables, which describe the repository's chatserver.py
                rec["chatserver_path"] = self.args.chatserver
        rec.update(fields)
        return rec

    def close(self):
        for client in self.extra:
            client.sock.close()
        if self.workers:
            self.workers.close()
        if self.server:
            self.server.stop()


def run_fanout(args):
    run = Run(args, "fanout")
    try:
        run.start_server()
        text = bulk_text(args.p)
        cid = lambda i, j: "%s-%03d-%0*d" % (run.run_id, i, CID_DIGITS, j)
        verify_every = max(1, args.verify_every)
        run.start_subscribers(args.n, verify_every, run.target.bulk_tail(text, cid(0, 0)))
        publishers = []
        per_pub = [args.k // args.publishers + (1 if i < args.k % args.publishers else 0)
                   for i in range(args.publishers)]
        for i, count in enumerate(per_pub):
            client = run.join_extra("pub%d" % i, "pub")
            msgs = [run.target.encode_msg(text, cid(i, j)) for j in range(count)]
            publishers.append(Publisher(client, msgs, args.window, run.target))
        probe = run.join_extra("probe", "pub") if not args.no_probe else None
        if verify_every > 1:
            send_fence(run)
        loop = EventLoop(run.workers, run.server_pid)
        for pub in publishers:
            loop.add_publisher(pub)
        if probe:
            loop.set_probe(probe, args.p)
        settle_s = wait_server_idle(run.server_pid)
        idle_before = wait_machine_quiet(args.quiet_wait)
        rss_before = read_rss_kib(run.server_pid) if run.server_pid else None
        meter = CpuMeter(run.server_pid, [p.pid for p in run.workers.procs])
        meter.start()
        run.workers.send_all("expect", args.k)
        loop.start_probing()
        t0 = time.monotonic_ns()
        complete = loop.run_until(lambda: loop.all_reached(args.k), run.target,
                                  time.monotonic() + args.timeout, args.stall)
        elapsed_s = (loop.reached_ns(args.k) - t0) / 1e9 if complete else None
        loop.probing = False
        cpu = meter.stop()
        # complete: wait for the last probes; else report what arrived right away
        run.workers.send_all(*(("probes", loop.probes_sent) if complete else ("stop",)))
        finals = merge_finals(run.workers.collect_finals(FINAL_WAIT_S))
        deliveries = args.k * args.n
        rec = run.record({
            "n": args.n, "k": args.k, "p": args.p, "publishers": args.publishers,
            "window": args.window, "complete": complete,
            "elapsed_s": round(elapsed_s, 4) if elapsed_s else None,
            "deliveries": deliveries,
            "deliveries_per_s": round(deliveries / elapsed_s) if elapsed_s else None,
            "verify_every": verify_every, "verified": finals["verified"],
            "bulk_end_bytes": finals["bulk_end"], "mismatches": finals["mismatches"][:5],
            "delivered": finals["bulk_total"], "lost": finals["lost"], "dup": finals["dup"],
            "closed": finals["closed"], "errors": finals["errors"][:5],
            "publisher_acked": sum(p.acked for p in publishers),
            "probe": latency_summary(finals["latencies_us"], loop.probes_sent,
                                     finals["verified"]),
            "server_rss_kib": {"before": rss_before, "peak": loop.rss_peak or None},
            "cpu_s": cpu, "machine_idle_before": idle_before,
            "settle_s": round(settle_s, 2),
        })
        rec["ok"] = bool(complete and rec["lost"] == 0 and rec["dup"] == 0 and rec["closed"] == 0
                         and rec["probe"]["lost"] == 0 and not rec["mismatches"])
        return rec
    finally:
        run.close()


def send_fence(run):
    """One message to everyone before the bulk; returns once every subscriber read past it.
    Sent from a connection of its own, closed right after: nobody reads its copy."""
    fencer = blocking_join(run.target, run.host, run.port, "fence", "pub")
    try:
        fencer.sock.setblocking(True)
        fencer.sock.sendall(run.target.encode_msg(FENCE_MARK.decode(), "fence-%s" % run.run_id))
        run.workers.wait_fenced(HANDSHAKE_TIMEOUT_S)
    finally:
        fencer.sock.close()


def run_connscale(args):
    run = Run(args, "connscale")
    try:
        run.start_server()
        rss_idle = read_rss_kib(run.server_pid) if run.server_pid else None
        connect_s = run.start_subscribers(args.c)
        pub = Publisher(run.join_extra("pub0", "pub"), [], 1, run.target)
        loop = EventLoop(run.workers, run.server_pid)
        loop.add_publisher(pub)
        settle_s = wait_server_idle(run.server_pid)
        idle_before = wait_machine_quiet(args.quiet_wait)
        rss_joined = read_rss_kib(run.server_pid) if run.server_pid else None
        meter = CpuMeter(run.server_pid, [p.pid for p in run.workers.procs])
        meter.start()
        text = bulk_text(args.p)
        times_ms = []
        complete = True
        deadline = time.monotonic() + args.timeout
        for r in range(1, args.rounds + 1):
            pub.messages.append(run.target.encode_msg(text, "%s-b-%d" % (run.run_id, r)))
            run.workers.send_all("expect", r)
            t0 = time.monotonic_ns()
            if not loop.run_until(lambda: loop.all_reached(r) and pub.done(), run.target,
                                  deadline, args.stall):
                complete = False
                break
            times_ms.append(round((loop.reached_ns(r) - t0) / 1e6, 3))
        rss_after = read_rss_kib(run.server_pid) if run.server_pid else None
        cpu = meter.stop()
        run.workers.send_all("probes", 0)
        finals = merge_finals(run.workers.collect_finals(FINAL_WAIT_S))
        rec = run.record({
            "c": args.c, "p": args.p, "rounds": args.rounds, "complete": complete,
            "connect_s": round(connect_s, 3), "settle_s": round(settle_s, 2),
            "cpu_s": cpu, "machine_idle_before": idle_before,
            "broadcast_ms": times_ms,
            "broadcast_ms_median": statistics.median(times_ms) if times_ms else None,
            "broadcast_ms_max": max(times_ms) if times_ms else None,
            "server_rss_kib": {"idle": rss_idle, "joined": rss_joined, "after": rss_after,
                               "peak": max(filter(None, [rss_joined, rss_after, loop.rss_peak])
                                           , default=None)},
            "delivered": finals["bulk_total"], "lost": finals["lost"], "dup": finals["dup"],
            "closed": finals["closed"], "errors": finals["errors"][:5],
        })
        rec["ok"] = bool(complete and rec["lost"] == 0 and rec["dup"] == 0 and rec["closed"] == 0)
        return rec
    finally:
        run.close()


class FrameReader:
    """Incremental reader of chatserver frames: JSON headers are decoded, payloads are only
    counted (a 1 GiB download must not be copied around in Python)."""
    HEAD, JSON, PAYLOAD = range(3)

    def __init__(self):
        self.state = self.HEAD
        self.left = FRAME_HEAD.size
        self.acc = bytearray()
        self.plen = 0
        self.payload_bytes = 0

    def feed(self, view):
        """Consume a memoryview; returns the headers (dicts) completed in it."""
        headers = []
        pos, n = 0, len(view)
        while pos < n:
            if self.state == self.PAYLOAD:
                take = min(self.left, n - pos)
                self.left -= take
                self.payload_bytes += take
                pos += take
                if self.left == 0:
                    self.state, self.left = self.HEAD, FRAME_HEAD.size
                continue
            take = min(self.left - len(self.acc), n - pos)
            self.acc += view[pos:pos + take]
            pos += take
            if len(self.acc) < self.left:
                continue
            if self.state == self.HEAD:
                hlen, self.plen = FRAME_HEAD.unpack(self.acc)
                self.state, self.left = self.JSON, hlen
            else:
                headers.append(json.loads(bytes(self.acc)))
                if self.plen:
                    self.state, self.left = self.PAYLOAD, self.plen
                else:
                    self.state, self.left = self.HEAD, FRAME_HEAD.size
            self.acc = bytearray()
        return headers


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(RAW_RECV_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def make_source_file(path, size):
    """`size` bytes: 1 MiB of random data repeated (content does not change the costs)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            left -= f.write(block[:min(left, len(block))])


def raw_loopback_mib_s(path, size, host, sink_path=None):
    """The same file over a plain loopback TCP connection: socket.sendfile -> recv_into
    (and, with sink_path, each block written to that file: the disk's share of an upload)."""
    import threading
    listener = socket.create_server((host, 0))
    port = listener.getsockname()[1]

    def send():
        conn, _ = listener.accept()
        with conn, open(path, "rb") as f:
            conn.sendfile(f)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    buf = bytearray(RAW_RECV_BYTES)
    view = memoryview(buf)
    got = 0
    sink = open(sink_path, "wb", buffering=0) if sink_path else None
    with socket.create_connection((host, port)) as sock:
        t0 = time.monotonic()
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            got += n
            if sink:
                sink.write(view[:n])
        elapsed = time.monotonic() - t0
    sender.join()
    listener.close()
    if sink:
        sink.close()
        os.unlink(sink_path)
    if got != size:
        raise RuntimeError("raw transfer moved %d of %d bytes" % (got, size))
    return size / (1 << 20) / elapsed, elapsed


class Transfer:
    """The uploading/downloading connection of the filerelay mode (non-blocking)."""

    def __init__(self, client):
        self.client = client
        self.reader = FrameReader()
        self.out = []           # memoryviews still to send
        self.headers = []

    def queue(self, *parts):
        self.out.extend(memoryview(p) for p in parts)

    def flush(self):
        """True while output is left."""
        while self.out:
            try:
                n = self.client.sock.send(self.out[0])
            except (BlockingIOError, InterruptedError):
                return True
            if n == len(self.out[0]):
                self.out.pop(0)
            else:
                self.out[0] = self.out[0][n:]
        return False

    def read(self, buf):
        n = self.client.sock.recv_into(buf)
        if n == 0:
            raise OSError("chatserver closed the transfer connection")
        for header in self.reader.feed(memoryview(buf)[:n]):
            if header.get("type") == "error":
                raise RuntimeError("chatserver error during transfer: %r" % (header,))
            self.headers.append(header)


class RelayLoop:
    """One selectors loop for the transfer, the probe sender and the probe listener."""

    def __init__(self, target, transfer, probe, listener, server_pid, probe_size):
        self.target = target
        self.transfer = transfer
        self.probe = probe
        self.listener = listener
        self.server_pid = server_pid
        self.probe_size = probe_size
        self.sel = selectors.DefaultSelector()
        self.buf = bytearray(RAW_RECV_BYTES)
        self.sel.register(transfer.client.sock, selectors.EVENT_READ, "transfer")
        self.sel.register(probe.sock, selectors.EVENT_READ, "probe")
        self.sel.register(listener.sock, selectors.EVENT_READ, "listener")
        self.probes_sent = 0
        self.rss_peak = 0

    def run(self, step, done, deadline):
        """Call step() whenever the transfer may send more, until done() or deadline."""
        self.rss_peak = 0
        next_probe = next_rss = time.monotonic()
        probe_out = b""
        while not done():
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError("file relay phase did not finish before the deadline")
            if now >= next_probe:
                probe_out += self.target.encode_msg(probe_text(self.probe_size, time.monotonic_ns()),
                                                    "fp%d" % self.probes_sent)
                self.probes_sent += 1
                next_probe = max(next_probe + PROBE_INTERVAL_S, now)
            if probe_out:
                try:
                    probe_out = probe_out[self.probe.sock.send(probe_out):]
                except (BlockingIOError, InterruptedError):
                    pass
            if now >= next_rss:
                next_rss = now + RSS_SAMPLE_INTERVAL_S
                self.rss_peak = max(self.rss_peak, read_rss_kib(self.server_pid) or 0)
            step()
            writing = self.transfer.flush()
            self.sel.modify(self.transfer.client.sock,
                            selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0), "transfer")
            timeout = max(0.0, min(next_probe - time.monotonic(), 0.05))
            for key, mask in self.sel.select(timeout):
                if key.data == "transfer":
                    if mask & selectors.EVENT_READ:
                        self.transfer.read(self.buf)
                elif key.data == "probe":
                    if self.probe.sock.recv_into(self.buf) == 0:
                        raise OSError("probe connection closed")
                else:
                    n = self.listener.sock.recv_into(self.buf)
                    if n == 0:
                        raise OSError("listener connection closed")
                    self.listener.counter.feed(self.buf, n, time.monotonic_ns())


def upload_file(loop, transfer, path, size, cid, deadline):
    """Announce, then send every chunk; done when our own file msg (same cid) arrives.
    The chunks go out from a sender thread (header with send(), payload with os.sendfile(),
    as the raw reference sends), so the tool's loop never stands between two chunks."""
    transfer.queue(encode_frame({"type": "upload", "name": "bench.bin", "size": size, "cid": cid,
                                 "mime": "application/octet-stream"}))
    state = {"sender": None, "file": None, "error": []}

    def step():
        for header in transfer.headers:
            if header.get("type") == "upload_ready" and header.get("cid") == cid \
                    and state["sender"] is None:
                state["sender"] = threading.Thread(
                    target=send_chunks, daemon=True,
                    args=(transfer.client.sock, path, header["upload"], header["chunk"], size,
                          state["error"]))
                state["sender"].start()
            elif header.get("type") == "msg" and header.get("cid") == cid:
                state["file"] = header["file"]
        transfer.headers.clear()
        if state["error"]:
            raise state["error"][0]

    t0 = time.monotonic()
    loop.run(step, lambda: state["file"] is not None, deadline)
    elapsed = time.monotonic() - t0
    state["sender"].join()
    return elapsed, state["file"]


def send_chunks(sock, path, upload_id, chunk, size, errors):
    try:
        with open(path, "rb") as f:
            offset = 0
            while offset < size:
                n = min(chunk, size - offset)
                send_all_nonblocking(sock, chunk_frame_head(upload_id, offset, n))
                sent = 0
                while sent < n:
                    try:
                        sent += os.sendfile(sock.fileno(), f.fileno(), offset + sent, n - sent)
                    except (BlockingIOError, InterruptedError):
                        select.select([], [sock], [], 1.0)
                offset += n
    except Exception as exc:      # reported by the tool's loop
        errors.append(exc)


def send_all_nonblocking(sock, data):
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except (BlockingIOError, InterruptedError):
            select.select([], [sock], [], 1.0)


def chunk_frame_head(upload_id, offset, length):
    head = json.dumps({"type": "chunk", "upload": upload_id, "offset": offset},
                      separators=(",", ":")).encode()
    return FRAME_HEAD.pack(len(head), length) + head


def download_file(loop, transfer, file_id, size, deadline):
    transfer.queue(encode_frame({"type": "download", "file": file_id, "offset": 0}))
    transfer.reader.payload_bytes = 0
    state = {"end": None}

    def step():
        for header in transfer.headers:
            if header.get("type") == "download_end" and header.get("file") == file_id:
                state["end"] = header
        transfer.headers.clear()

    t0 = time.monotonic()
    loop.run(step, lambda: state["end"] is not None, deadline)
    elapsed = time.monotonic() - t0
    if transfer.reader.payload_bytes != size:
        raise RuntimeError("downloaded %d of %d bytes" % (transfer.reader.payload_bytes, size))
    return elapsed


def run_filerelay(args):
    if args.target != "chatserver":
        raise SystemExit("filerelay: only --target chatserver has file transfer")
    run = Run(args, "filerelay")
    size = args.size_mib << 20
    src_dir = tempfile.mkdtemp(prefix="bench-file-")
    try:
        path = os.path.join(src_dir, "source.bin")
        make_source_file(path, size)
        source_sha256 = file_sha256(path)
        raw_mib_s, raw_s = raw_loopback_mib_s(path, size, run.host)
        # the data dir of the server lives in the same temporary file system as this sink
        disk_mib_s, _ = raw_loopback_mib_s(path, size, run.host, os.path.join(src_dir, "sink.bin"))
        run.start_server()
        transfer = Transfer(run.join_extra("uploader", "pub"))
        probe = run.join_extra("probe", "pub")
        listener = run.join_extra("listener", "sub")
        loop = RelayLoop(run.target, transfer, probe, listener, run.server_pid, args.p)
        idle_before = wait_machine_quiet(args.quiet_wait)
        rss_idle = read_rss_kib(run.server_pid)
        deadline = time.monotonic() + args.timeout
        lat_mark = len(listener.counter.latencies_us)
        up_s, file_info = upload_file(loop, transfer, path, size, "up-" + run.run_id, deadline)
        up_rss = loop.rss_peak
        up_lat = listener.counter.latencies_us[lat_mark:]
        lat_mark = len(listener.counter.latencies_us)
        down_s = download_file(loop, transfer, file_info["id"], size, deadline)
        down_lat = listener.counter.latencies_us[lat_mark:]
        down_rss = loop.rss_peak
        # let the last probes land, so a lost one is told apart from a late one
        loop.run(lambda: None, lambda: listener.counter.probes >= loop.probes_sent,
                 time.monotonic() + FINAL_WAIT_S)
        mib = size / (1 << 20)
        rec = run.record({
            "size_mib": args.size_mib, "p": args.p, "machine_idle_before": idle_before,
            "raw_mib_s": round(raw_mib_s, 1), "raw_s": round(raw_s, 3),
            "raw_to_file_mib_s": round(disk_mib_s, 1),
            "upload_s": round(up_s, 3), "upload_mib_s": round(mib / up_s, 1),
            "download_s": round(down_s, 3), "download_mib_s": round(mib / down_s, 1),
            "upload_vs_raw": round(mib / up_s / raw_mib_s, 3),
            "download_vs_raw": round(mib / down_s / raw_mib_s, 3),
            "server_rss_kib": {"idle": rss_idle, "upload_peak": up_rss, "download_peak": down_rss},
            "probe_upload": latency_summary(up_lat, len(up_lat), 1),
            "probe_download": latency_summary(down_lat, len(down_lat), 1),
            "probes_sent": loop.probes_sent, "probes_lost": loop.probes_sent - listener.counter.probes,
            "sha256_match": file_info.get("sha256") == source_sha256,
            "downloaded_bytes": transfer.reader.payload_bytes,
        })
        rec["ok"] = rec["sha256_match"] and rec["probes_lost"] == 0
        return rec
    finally:
        run.close()
        shutil.rmtree(src_dir, ignore_errors=True)


MODES = {"fanout": run_fanout, "connscale": run_connscale, "filerelay": run_filerelay}


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def save_record(rec, path):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def summary_line(rec):
    if rec["mode"] == "fanout":
        p = rec["probe"]
        flood = rec.get("window") == NO_WINDOW
        return ("%s %-10s N=%-5d K=%d P=%d%s: %s deliveries/s in %s s, lost=%d dup=%d, "
                "probe p50=%s p99=%s ms, server cpu %s s, rss peak %s KiB, ok=%s" % (
                    "flood " if flood else "fanout", rec["target"], rec["n"], rec["k"], rec["p"],
                    " publishers=%d" % rec["publishers"] if rec.get("publishers", 1) > 1 else "",
                    rec["deliveries_per_s"],
                    rec["elapsed_s"], rec["lost"], rec["dup"], p["p50_ms"], p["p99_ms"],
                    rec["cpu_s"]["server"], rec["server_rss_kib"]["peak"], rec["ok"])
                + " (cpu: tool %s, softirq %s, foreign %s)" % (
                    rec["cpu_s"]["tool"], rec["cpu_s"].get("irq"), rec["cpu_s"]["foreign"]))
    if rec["mode"] == "filerelay":
        return ("filerelay %s %d MiB: upload %.0f MiB/s, download %.0f MiB/s, raw loopback %.0f MiB/s "
                "(into a file: %.0f MiB/s); "
                "rss peak up %s / down %s KiB; chat p99 during up %s ms, down %s ms; sha256 ok=%s, ok=%s" % (
                    rec["target"], rec["size_mib"], rec["upload_mib_s"], rec["download_mib_s"],
                    rec["raw_mib_s"], rec.get("raw_to_file_mib_s") or 0, rec["server_rss_kib"]["upload_peak"],
                    rec["server_rss_kib"]["download_peak"], rec["probe_upload"]["p99_ms"],
                    rec["probe_download"]["p99_ms"], rec["sha256_match"], rec["ok"]))
    if rec["mode"] == "connscale":
        return ("connscale %-10s C=%-6d connect %.1f s, broadcast median %s ms max %s ms, "
                "rss joined %s KiB, lost=%d, ok=%s" % (
                    rec["target"], rec["c"], rec["connect_s"], rec["broadcast_ms_median"],
                    rec["broadcast_ms_max"], rec["server_rss_kib"]["joined"], rec["lost"], rec["ok"]))
    return json.dumps(rec)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    sub = parser.add_subparsers(dest="mode", required=True)

    def common(p):
        p.add_argument("--target", choices=TARGETS, required=True)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--connect", metavar="HOST:PORT", help="use a running server instead of starting one")
        p.add_argument("--server-pid", type=int, help="with --connect: pid to read RSS/CPU from")
        p.add_argument("--chatserver", metavar="PATH", help="chatserver.py to start (default: repo root)")
        p.add_argument("--no-persist", dest="persist", action="store_false",
                       help="chatserver: run with --memory (persistence is on by default)")
        p.add_argument("--procs", type=int, default=1, help="subscriber worker processes (default 1)")
        p.add_argument("--pace-ms", type=float, default=DEFAULT_PACE_MS,
                       help="subscriber workers read at most once per this many ms (default %(default)s)")
        p.add_argument("-p", type=int, default=100, help="message text size in bytes (default 100)")
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="give up after this many s")
        p.add_argument("--stall", type=float, default=DEFAULT_STALL_S, help="give up after s without progress")
        p.add_argument("--results", default=DEFAULT_RESULTS, help="JSON lines file to append to ('' = none)")
        p.add_argument("--tag", default=os.environ.get("BENCH_TAG", "adhoc"), help="label stored in the record")
        p.add_argument("--quiet-wait", type=float, default=DEFAULT_QUIET_WAIT_S,
                       help="wait up to this many s for a >= 90%% idle machine before measuring")
        p.add_argument("--profile", metavar="PSTATS",
                       help="run a Python target under cProfile, stats written to this file")
        p.add_argument("--runs", type=int, default=1, help="repeat the run this many times")

    f = sub.add_parser("fanout", help="N subscribers, K messages of P bytes")
    common(f)
    f.add_argument("-n", type=int, default=100, help="subscribers")
    f.add_argument("-k", type=int, default=20000, help="messages in total")
    f.add_argument("--publishers", type=int, default=1)
    f.add_argument("--window", type=int, default=128,
                   help="un-acknowledged messages per publisher (0 = flood: no window, send "
                        "everything as fast as the server reads it)")
    f.add_argument("--no-probe", action="store_true")
    f.add_argument("--verify-every", type=int, default=1, metavar="M",
                   help="1 subscriber in M counts every marker and probe; the others let the "
                        "kernel drop their data unread (MSG_TRUNC) and count the bytes after a "
                        "fence message up to the end of the bulk, which the verifying ones "
                        "locate (default 1: every subscriber verifies)")

    c = sub.add_parser("connscale", help="C idle joined clients, RSS, broadcast time")
    common(c)
    c.add_argument("-c", type=int, default=1000, help="idle joined clients")
    c.add_argument("--rounds", type=int, default=5, help="broadcasts, one after the other")

    r = sub.add_parser("filerelay", help="chatserver only: 1 GiB up/download vs raw loopback")
    common(r)
    r.add_argument("--size-mib", type=int, default=1024)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    status = 0
    for _ in range(args.runs):
        rec = MODES[args.mode](args)
        save_record(rec, args.results)
        print(summary_line(rec), flush=True)
        if not rec.get("ok"):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
