"""The mutation check: put each named bug of catalog.py into a scratch copy of chatserver.py
and run only the tests that must catch it, against that copy.

    python tests/mutations/run.py                 # every mutation, 2 at a time
    python tests/mutations/run.py token_prefix_match ack_before_commit   # some of them
    python tests/mutations/run.py --list          # names, tests, the bug each models
    python tests/mutations/run.py --check-anchors # only: does every anchor still apply?
    python tests/mutations/run.py --baseline      # the named tests pass on the unmutated copy
    python tests/mutations/run.py --json out.json # also write the results
    python tests/mutations/run.py --check-anchors --source other/chatserver.py

A mutation is CAUGHT when one of its tests fails (pytest -x stops at the first), SURVIVED
when they all pass. An anchor that is not in chatserver.py exactly once, a mutant that does
not compile, or a pytest run that fails to collect (a renamed test) is an ERROR naming the
mutation: the check fails loudly instead of reporting a catch that means nothing. The exit
code is 0 only when every mutation run was caught.

The tests see the mutant through the environment variable CHATSERVER_PY (tests/conftest.py
imports it as `chatserver`, tests/chatclient.py starts it as the server). Standard library
only, like the server.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCE = os.path.join(ROOT, "chatserver.py")
sys.path.insert(0, HERE)

import catalog  # noqa: E402

DEFAULT_JOBS = 2              # the CI machine has 2 cores, shared
DEFAULT_TIMEOUT = 240.0       # seconds one mutation's tests may take before it is an error
# One test that fails stops the run (-x); no cache or bytecode files are written by the
# parallel runs; -rfE lists the failing test, which names the catch.
# No shrinking of a fuzzer's failing example, no example database (tests/conftest.py).
PYTEST_ARGS = ["-x", "-q", "--no-header", "-rfE", "-p", "no:cacheprovider",
               "--hypothesis-profile=mutation"]

CAUGHT, SURVIVED, ERROR = "caught", "survived", "error"


class AnchorError(Exception):
    """A mutation's anchor is not in chatserver.py exactly once (re-anchor it)."""


def apply(mutation, source):
    """The source with the mutation applied; AnchorError unless its anchor occurs once."""
    count = source.count(mutation.anchor)
    if count != 1:
        raise AnchorError("mutation %r: its anchor occurs %d times in chatserver.py (must be "
                          "exactly once); re-anchor it in tests/mutations/catalog.py. Anchor: "
                          "%r" % (mutation.name, count, mutation.anchor))
    return source.replace(mutation.anchor, mutation.replacement)


def check_anchors(mutations, source):
    """Every problem with the catalog itself, as sentences (empty when all is well)."""
    problems = []
    seen = set()
    for m in mutations:
        if m.name in seen:
            problems.append("mutation %r is listed twice" % m.name)
        seen.add(m.name)
        if not m.tests:
            problems.append("mutation %r names no test" % m.name)
        try:
            mutated = apply(m, source)
        except AnchorError as exc:
            problems.append(str(exc))
            continue
        if mutated == source:
            problems.append("mutation %r changes nothing" % m.name)
            continue
        try:
            compile(mutated, "chatserver.py (%s)" % m.name, "exec")
        except SyntaxError as exc:
            problems.append("mutation %r does not compile: %s" % (m.name, exc))
    return problems


def write_copy(directory, source):
    path = os.path.join(directory, "chatserver.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    return path


def run_pytest(copy_path, tests, timeout, extra_args=()):
    """pytest on `tests` against the copy: (returncode or None on timeout, output, seconds)."""
    env = dict(os.environ, CHATSERVER_PY=copy_path, PYTHONDONTWRITEBYTECODE="1",
               PYTHONUNBUFFERED="1")
    # a test that hangs dumps every thread's stack shortly before the timeout kills it
    dump = ["-o", "faulthandler_timeout=%d" % max(5, int(timeout) - 15)]
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *PYTEST_ARGS, *dump, *extra_args,
                             *tests],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        output, _ = proc.communicate()
        code = None
    finally:
        _kill_group(proc)         # servers a test started and left behind
    return code, output.decode("utf-8", "replace"), time.monotonic() - started


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def first_failure(output):
    found = _FAILED_LINE.search(output)
    return found.group(1) if found else None


def run_mutation(mutation, source, timeout):
    """Apply, run its tests, classify. Returns a result dict."""
    result = {"name": mutation.name, "bug": mutation.bug, "tests": list(mutation.tests),
              "status": ERROR, "caught_by": None, "seconds": 0.0, "detail": ""}
    try:
        mutated = apply(mutation, source)
        compile(mutated, "chatserver.py (%s)" % mutation.name, "exec")
    except (AnchorError, SyntaxError) as exc:
        result["detail"] = str(exc)
        return result
    scratch = tempfile.mkdtemp(prefix="mutant-%s-" % mutation.name)
    try:
        code, output, seconds = run_pytest(write_copy(scratch, mutated), mutation.tests, timeout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["seconds"] = round(seconds, 1)
    if code == 0:
        result["status"] = SURVIVED
        result["detail"] = "every named test passed with the bug in place"
    elif code == 1:
        result["status"] = CAUGHT
        result["caught_by"] = first_failure(output)
    elif code is None:
        result["detail"] = "its tests took longer than %.0f s; where they were: %s" % (
            timeout, _stack_dump(output))
    else:                         # 2 interrupted, 3 internal, 4 usage (a test not found), 5
        result["detail"] = "pytest exit code %d (not a test failure): %s" % (code, _tail(output))
    return result


def _tail(output, lines=40):
    return "\n".join(output.strip().splitlines()[-lines:])


def _stack_dump(output, lines=30):
    """The top of the faulthandler dump (innermost frames first), else the output's end."""
    at = output.find("Timeout (")
    if at < 0:
        return _tail(output)
    return "\n".join(output[at:].splitlines()[:lines])


def run_all(mutations, jobs=DEFAULT_JOBS, timeout=DEFAULT_TIMEOUT, budget=None,
            source=None, progress=None):
    """Run mutations `jobs` at a time. With `budget` seconds, mutations not started by then
    are reported as errors ("not run"). Returns the results in catalog order."""
    source = read_source() if source is None else source
    started = time.monotonic()
    results = {}

    def one(mutation):
        if budget is not None and time.monotonic() - started > budget:
            return {"name": mutation.name, "bug": mutation.bug, "tests": list(mutation.tests),
                    "status": ERROR, "caught_by": None, "seconds": 0.0,
                    "detail": "not run: the time budget of %.0f s was spent" % budget}
        return run_mutation(mutation, source, timeout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, m): m for m in mutations}
        for future in concurrent.futures.as_completed(futures):
            res = future.result()
            results[res["name"]] = res
            if progress is not None:
                progress(res)
    return [results[m.name] for m in mutations]


def run_baseline(mutations, timeout=DEFAULT_TIMEOUT * 4, source=None):
    """Every named test, once, against an unmutated scratch copy: they must all pass, or a
    'catch' would mean nothing. Returns (ok, output, seconds)."""
    source = read_source() if source is None else source
    tests = list(dict.fromkeys(t for m in mutations for t in m.tests))
    scratch = tempfile.mkdtemp(prefix="mutant-baseline-")
    try:
        code, output, seconds = run_pytest(write_copy(scratch, source), tests, timeout,
                                           extra_args=["--maxfail=1000"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return code == 0, output, seconds


def read_source(path=SOURCE):
    with open(path, encoding="utf-8") as f:
        return f.read()


def format_table(results):
    rows = ["%-34s %-9s %6s  %s" % ("mutation", "result", "secs", "caught by / detail")]
    for r in results:
        what = r["caught_by"] if r["status"] == CAUGHT else r["detail"].splitlines()[0] \
            if r["detail"] else ""
        rows.append("%-34s %-9s %6.1f  %s" % (r["name"], r["status"], r["seconds"], what))
    return "\n".join(rows)


def failures(results):
    return [r for r in results if r["status"] != CAUGHT]


def select(names):
    by_name = {m.name: m for m in catalog.MUTATIONS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit("unknown mutation(s): %s (see --list)" % ", ".join(unknown))
    return [by_name[n] for n in names] if names else list(catalog.MUTATIONS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="mutations to run (default: all)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="mutations run at once")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds one mutation's tests may take")
    p.add_argument("--list", action="store_true", help="print the catalog and exit")
    p.add_argument("--check-anchors", action="store_true",
                   help="only check that every mutation applies and compiles")
    p.add_argument("--baseline", action="store_true",
                   help="run every named test against the unmutated copy (must pass)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--source", default=SOURCE,
                   help="the chatserver.py to mutate (default: the repository's)")
    args = p.parse_args(argv)
    mutations = select(args.names)
    source = read_source(args.source)
    if args.list:
        for m in mutations:
            print("%s\n    bug:   %s\n    tests: %s" % (m.name, m.bug, "\n           ".join(m.tests)))
        return 0
    problems = check_anchors(mutations, source)
    if problems:
        print("\n".join("ERROR: " + p for p in problems), file=sys.stderr)
        return 1
    if args.check_anchors:
        print("%d mutations apply and compile" % len(mutations))
        return 0
    if args.baseline:
        ok, output, seconds = run_baseline(mutations, source=source)
        print(output)
        print("baseline: %s in %.0f s" % ("every named test passes" if ok else "FAILED", seconds))
        return 0 if ok else 1
    started = time.monotonic()
    results = run_all(mutations, jobs=args.jobs, timeout=args.timeout, source=source,
                      progress=lambda r: print("%-34s %-9s %6.1f s  %s" % (
                          r["name"], r["status"], r["seconds"], r["caught_by"] or r["detail"]),
                          flush=True))
    elapsed = time.monotonic() - started
    print("\n" + format_table(results))
    bad = failures(results)
    print("\n%d mutations, %d caught, %d not, in %.0f s with %d jobs" % (
        len(results), len(results) - len(bad), len(bad), elapsed, args.jobs))
    for r in bad:
        print("\n%s %s: %s\n%s" % (r["status"].upper(), r["name"], r["bug"], r["detail"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"elapsed": round(elapsed, 1), "jobs": args.jobs, "results": results}, f,
                      indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
