#!/usr/bin/env python3
"""Profile chatserver.py under a load tool run and print its hottest functions.

    python3 bench/profile_chatserver.py [--py-spy PATH] [-- fanout -n 1000 -k 20000 ...]

Starts chatserver (persistence on, fresh data dir) exactly as bench/loadtool.py does, attaches
the py-spy sampling profiler (pip install py-spy==0.4.1; it is not a test dependency), runs
the load tool against it with --connect, then aggregates py-spy's collapsed stacks:
"self" = samples where the function is the innermost frame, "total" = samples where it is
anywhere on the stack. Idle time (threads blocked in epoll) is not sampled.
Without py-spy, use `loadtool.py ... --profile FILE` (cProfile, deterministic, slower).
"""
import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
import loadtool  # noqa: E402

SAMPLE_RATE_HZ = 1000
TOP = 25


def parse_collapsed(path):
    """{stack tuple: samples} from py-spy's raw (collapsed) output."""
    stacks = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            frames, _, count = line.rpartition(" ")
            stacks[tuple(frames.split(";"))] = stacks.get(tuple(frames.split(";")), 0) + int(count)
    return stacks


def short(frame):
    """'func (chatserver.py:123)' -> 'func (chatserver.py)': lines vary, functions do not."""
    name, _, where = frame.partition(" (")
    return "%s (%s)" % (name, os.path.basename(where.split(":")[0].rstrip(")")))


def top_functions(stacks):
    self_c, total_c = collections.Counter(), collections.Counter()
    for stack, count in stacks.items():
        names = [short(f) for f in stack]
        self_c[names[-1]] += count
        for name in set(names):
            total_c[name] += count
    return self_c, total_c, sum(stacks.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--raw-out", default="/tmp/chatserver-pyspy.txt")
    parser.add_argument("load", nargs="*", help="load tool arguments after --")
    args = parser.parse_args(argv)
    load = args.load or ["fanout", "-n", "1000", "-k", "20000", "-p", "100"]
    loadtool.raise_fd_limit()
    tool_args = loadtool.build_parser().parse_args(load + ["--target", "chatserver"])
    server = loadtool.Server(loadtool.make_target("chatserver", tool_args), "127.0.0.1", tool_args)
    spy = subprocess.Popen([args.py_spy, "record", "--pid", str(server.pid), "--format", "raw",
                            "--rate", str(SAMPLE_RATE_HZ), "--output", args.raw_out, "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)        # let py-spy attach
        status = loadtool.main(load + ["--target", "chatserver", "--connect",
                                       "127.0.0.1:%d" % server.port, "--server-pid", str(server.pid),
                                       "--tag", "profile", "--results", ""])
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
        server.stop()
    if not os.path.exists(args.raw_out):
        sys.stderr.write("py-spy wrote nothing: %s\n" % spy.stderr.read().decode(errors="replace"))
        return 1
    self_c, total_c, samples = top_functions(parse_collapsed(args.raw_out))
    print("\n%d busy samples at %d Hz (idle not sampled)\n" % (samples, SAMPLE_RATE_HZ))
    print("%-7s %-7s  function" % ("self%", "total%"))
    for name, count in self_c.most_common(TOP):
        print("%6.1f  %6.1f   %s" % (100.0 * count / samples, 100.0 * total_c[name] / samples, name))
    print("\nby total (inclusive):")
    for name, count in total_c.most_common(TOP):
        print("%6.1f   %s" % (100.0 * count / samples, name))
    return status


if __name__ == "__main__":
    sys.exit(main())
