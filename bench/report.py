#!/usr/bin/env python3
"""Summarise bench/results/results.jsonl as Markdown tables (medians, ratios, goals).

    python3 bench/report.py                      # print the tables
    python3 bench/report.py --tag suite-2026...  # only these runs
    python3 bench/report.py --update-doc docs/PERFORMANCE.md
        replaces the text between "<!-- results:begin -->" and "<!-- results:end -->"

Run selection: records with "ok": true only. Without --tag, each configuration (mode,
target, sizes) uses the runs of the most recent tag that measured it, so re-measuring one
target later (e.g. chatserver after an optimisation) replaces just its rows.
"""
import argparse
import json
import os
import statistics
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RESULTS = os.path.join(BENCH_DIR, "results", "results.jsonl")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
TARGET_ORDER = ("threaded", "asyncio-perline", "asyncio", "redis", "inspircd", "chatserver")

# Goals from the "Benchmarks" issue (2-core machine).
GOAL_VS_THREADED = 3.0
GOAL_VS_ASYNCIO = 1.0
GOAL_VS_REDIS = 0.5
GOAL_P99_MS = 50.0
GOAL_CONN_C = 10000
GOAL_BROADCAST_MS = 200.0
GOAL_RSS_MIB = 300.0


def load(path):
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


# A fan-out record's flow control: loadtool.py --window (0 = flood, no window) and
# --publishers; records from before these were stored ran with the defaults.
DEFAULT_WINDOW = 128
FLOOD_WINDOW = 0
DEFAULT_PUBLISHERS = 1


def window_of(rec):
    return rec.get("window", DEFAULT_WINDOW)


def publishers_of(rec):
    return rec.get("publishers", DEFAULT_PUBLISHERS)


REPORTED_MODES = ("fanout", "connscale", "filerelay")


def config_key(rec):
    if rec["mode"] == "fanout":
        return ("fanout", rec["target"], rec["n"], rec["k"], rec["p"], rec.get("persist"),
                window_of(rec), publishers_of(rec))
    if rec["mode"] == "connscale":
        return ("connscale", rec["target"], rec["c"], rec.get("persist"))
    return ("filerelay", rec["target"], rec["size_mib"], rec.get("persist"))


def select_runs(records, tags):
    """{config key: [records]} of ok runs, per the selection rule in the module docstring."""
    groups = {}
    for rec in records:
        if not rec.get("ok") or (tags and rec.get("tag") not in tags):
            continue
        if rec.get("mode") not in REPORTED_MODES:     # classroom runs: docs/PERFORMANCE.md
            continue
        if rec.get("chatserver_path"):                 # an A/B run of another version
            continue
        groups.setdefault(config_key(rec), []).append(rec)
    if not tags:
        for key, recs in groups.items():
            latest = max(recs, key=lambda r: r["ts"])["tag"]
            groups[key] = [r for r in recs if r.get("tag") == latest]
    return groups


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_rate(v):
    return "–" if v is None else ("%.2f M" % (v / 1e6) if v >= 1e6 else "%.0f k" % (v / 1e3))


def fmt(v, digits=1):
    return "–" if v is None else ("%.*f" % (digits, v))


def mark(ok):
    return "" if ok is None else (" ✅" if ok else " ❌")


def cores(rec, who):
    """CPU seconds of `who` during the measured interval / its length = cores kept busy."""
    used = rec.get("cpu_s", {}).get(who)
    return used / rec["elapsed_s"] if used is not None and rec.get("elapsed_s") else None


def is_fanout_key(key):
    """The fan-out tables' runs: one publisher with the suite's window (flood runs and
    several publishers have tables of their own)."""
    return key[0] == "fanout" and key[6:] == (DEFAULT_WINDOW, DEFAULT_PUBLISHERS)


def is_flood_key(key):
    return key[0] == "fanout" and key[6] == FLOOD_WINDOW


def fanout_rows(groups, selects=is_fanout_key):
    """Medians per (target, n, k, p, persist) of the configurations `selects` accepts
    (flood: per (target, n, k, p, persist, publishers))."""
    rows = {}
    for key, recs in groups.items():
        if not selects(key):
            continue
        _, target, n, k, p, persist, window, publishers = key
        row_key = (target, n, k, p, persist)
        if selects is is_flood_key:
            row_key += (publishers,)
        rows[row_key] = {
            "runs": len(recs), "persist": persist,
            "procs": "/".join(str(v) for v in sorted({r.get("procs", 1) for r in recs})),
            "verify": "/".join(str(v) for v in sorted({r.get("verify_every", 1) for r in recs})),
            "rate": median([r["deliveries_per_s"] for r in recs]),
            "p50": median([r["probe"]["p50_ms"] for r in recs]),
            "p99": median([r["probe"]["p99_ms"] for r in recs]),
            "rss": median([r["server_rss_kib"]["peak"] for r in recs]),
            "server_cpu": median([cores(r, "server") for r in recs]),
            "foreign": median([cores(r, "foreign") for r in recs]),
        }
    return rows


def fanout_table(rows):
    out = ["| target | N | K | P | runs | tool workers | subscribers that read their data "
           "| deliveries/s (median) | probe p50 ms "
           "| probe p99 ms | server CPU (cores) | other jobs' CPU (cores) | server RSS MiB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (target, n, k, p, _), row in sorted(rows.items(), key=lambda kv: (
            kv[0][1], kv[0][2], kv[0][3], TARGET_ORDER.index(kv[0][0]), str(kv[0][4]))):
        name = target + (" (persist)" if row["persist"] else " (memory)" if row["persist"] is False else "")
        verify = "all" if row["verify"] == "1" else "1 in " + row["verify"]
        out.append("| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, n, k, p, row["runs"], row["procs"], verify, fmt_rate(row["rate"]), fmt(row["p50"]),
            fmt(row["p99"]),
            fmt(row["server_cpu"], 2), fmt(row["foreign"], 2),
            fmt(row["rss"] / 1024 if row["rss"] else None)))
    return out


def flood_table(rows):
    """Flood rows (no window), one publisher first, then several at once."""
    out = ["| target | N | K | P | publishers | runs | deliveries/s (median) | probe p50 ms "
           "| probe p99 ms | server CPU (cores) | other jobs' CPU (cores) | server RSS MiB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (target, n, k, p, _, publishers), row in sorted(rows.items(), key=lambda kv: (
            kv[0][5], kv[0][1], kv[0][2], kv[0][3], TARGET_ORDER.index(kv[0][0]),
            str(kv[0][4]))):
        name = target + (" (persist)" if row["persist"] else " (memory)" if row["persist"] is False else "")
        out.append("| %s | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s |" % (
            name, n, k, p, publishers, row["runs"], fmt_rate(row["rate"]), fmt(row["p50"]),
            fmt(row["p99"]), fmt(row["server_cpu"], 2), fmt(row["foreign"], 2),
            fmt(row["rss"] / 1024 if row["rss"] else None)))
    if len(out) == 2:
        out.append("| – | – | – | – | – | – | not measured yet | | | | | |")
    return out


FLOOD_NOTE = (
    "Flood = fan-out with no window (`--window 0`): each publisher writes its share of the K "
    "messages as fast as the server reads them, so only TCP back-pressure paces it; the probe "
    "client still sends one message every 20 ms and the subscribers record its latency, which "
    "here includes the queue the flood builds in the server. Deliveries/s and probe columns are "
    "medians over the runs column; the rounds were interleaved across targets "
    "(`bench/run_all.sh`, `FLOOD=1`). Method and findings: \"Flood\" in the method section "
    "and the discussion.")


def ratio_table(rows):
    out = ["| N | K | chatserver deliveries/s | ÷ threaded (goal ≥ %.0f×) | ÷ asyncio (goal ≥ %.0f×) "
           "| ÷ redis (goal ≥ %.1f×) | p99 ms (goal < %.0f) |" % (
               GOAL_VS_THREADED, GOAL_VS_ASYNCIO, GOAL_VS_REDIS, GOAL_P99_MS),
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for (target, n, k, p, persist), row in sorted(rows.items(), key=lambda kv: (
            kv[0][1], kv[0][2], str(kv[0][4]))):
        if target != "chatserver":
            continue
        cells = []
        for ref, goal in (("threaded", GOAL_VS_THREADED), ("asyncio", GOAL_VS_ASYNCIO),
                          ("redis", GOAL_VS_REDIS)):
            other = rows.get((ref, n, k, p, None))
            if other and other["rate"] and row["rate"]:
                r = row["rate"] / other["rate"]
                cells.append("%.2f×%s" % (r, mark(r >= goal)))
            else:
                cells.append("–")
        p99_ok = None if row["p99"] is None else row["p99"] < GOAL_P99_MS
        out.append("| %d | %d | %s%s | %s | %s | %s | %s%s |" % (
            n, k, fmt_rate(row["rate"]), "" if persist else " (memory)", cells[0], cells[1], cells[2], fmt(row["p99"]), mark(p99_ok)))
    if len(out) == 2:
        out.append("| – | – | not measured yet | | | | |")
    return out


def reference_ratio_table(rows):
    """References against each other (useful before chatserver numbers exist)."""
    out = ["| N | K | threaded | asyncio | redis | asyncio ÷ threaded | redis ÷ threaded |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    sizes = sorted({(n, k, p) for (t, n, k, p, _) in rows})
    for n, k, p in sizes:
        get = lambda t: (rows.get((t, n, k, p, None)) or {}).get("rate")
        th, asy, red = get("threaded"), get("asyncio"), get("redis")
        ratio = lambda a, b: "%.2f×" % (a / b) if a and b else "–"
        out.append("| %d | %d | %s | %s | %s | %s | %s |" % (
            n, k, fmt_rate(th), fmt_rate(asy), fmt_rate(red), ratio(asy, th), ratio(red, th)))
    return out


def connscale_table(groups):
    out = ["| target | C | runs | connect s | broadcast to all, median ms | worst ms "
           "| server RSS joined MiB | KiB per client |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted((k for k in groups if k[0] == "connscale"),
                  key=lambda k: (k[2], TARGET_ORDER.index(k[1])))
    for key in keys:
        recs = groups[key]
        _, target, c, persist = key
        bmed = median([r["broadcast_ms_median"] for r in recs])
        worst = max(r["broadcast_ms_max"] for r in recs)
        rss = median([r["server_rss_kib"]["peak"] for r in recs])
        idle = median([r["server_rss_kib"]["idle"] for r in recs])
        goal = None
        if target == "chatserver" and c >= GOAL_CONN_C:
            goal = bmed is not None and bmed < GOAL_BROADCAST_MS and rss / 1024 < GOAL_RSS_MIB
        out.append("| %s | %d | %d | %s | %s%s | %s | %s | %s |" % (
            target, c, len(recs), fmt(median([r["connect_s"] for r in recs])), fmt(bmed), mark(goal),
            fmt(worst), fmt(rss / 1024 if rss else None),
            fmt((rss - idle) / c if rss and idle else None)))
    return out


def filerelay_table(groups):
    out = ["| size MiB | runs | upload MiB/s | download MiB/s | raw loopback MiB/s "
           "| raw loopback into a file MiB/s | upload ÷ raw | download ÷ raw "
           "| server RSS peak MiB | chat p99 ms during upload / download |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(k for k in groups if k[0] == "filerelay"):
        recs = groups[key]
        rss = median([max(r["server_rss_kib"]["upload_peak"], r["server_rss_kib"]["download_peak"])
                      for r in recs])
        out.append("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s / %s |" % (
            key[2], len(recs), fmt(median([r["upload_mib_s"] for r in recs]), 0),
            fmt(median([r["download_mib_s"] for r in recs]), 0),
            fmt(median([r["raw_mib_s"] for r in recs]), 0),
            fmt(median([r.get("raw_to_file_mib_s") for r in recs]), 0),
            fmt(median([r["upload_vs_raw"] for r in recs]), 2),
            fmt(median([r["download_vs_raw"] for r in recs]), 2),
            fmt(rss / 1024 if rss else None),
            fmt(median([r["probe_upload"]["p99_ms"] for r in recs])),
            fmt(median([r["probe_download"]["p99_ms"] for r in recs]))))
    if len(out) == 2:
        out.append("| – | – | not measured yet | | | | | | | |")
    return out


GOAL_N = (100, 1000)
GOAL_K, GOAL_P = 20000, 100


def goals_table(rows, groups):
    """The issue's goals for chatserver (persistence on), one row per goal."""
    def rate(target, n):
        persist = True if target == "chatserver" else None
        return (rows.get((target, n, GOAL_K, GOAL_P, persist)) or {}).get("rate")

    def p99(n):
        return (rows.get(("chatserver", n, GOAL_K, GOAL_P, True)) or {}).get("p99")

    out = ["| goal (P = %d, K = %d, persistence on) | N = %d | N = %d |" % ((GOAL_P, GOAL_K) + GOAL_N),
           "|---|---|---|"]
    for ref, goal in (("threaded", GOAL_VS_THREADED), ("asyncio", GOAL_VS_ASYNCIO),
                      ("redis", GOAL_VS_REDIS)):
        cells = []
        for n in GOAL_N:
            mine, theirs = rate("chatserver", n), rate(ref, n)
            cells.append("%.2f× (%s vs %s)%s" % (mine / theirs, fmt_rate(mine), fmt_rate(theirs),
                                                 mark(mine / theirs >= goal))
                         if mine and theirs else "not measured")
        out.append("| deliveries/s ≥ %g× %s | %s | %s |" % (goal, ref, cells[0], cells[1]))
    cells = ["%s ms%s" % (fmt(p99(n)), mark(p99(n) < GOAL_P99_MS)) if p99(n) is not None
             else "not measured" for n in GOAL_N]
    out.append("| probe p99 < %g ms | %s | %s |" % (GOAL_P99_MS, cells[0], cells[1]))
    conn = [recs for key, recs in groups.items()
            if key[:3] == ("connscale", "chatserver", GOAL_CONN_C)]
    if conn:
        recs = conn[0]
        bmed = median([r["broadcast_ms_median"] for r in recs])
        rss = median([r["server_rss_kib"]["peak"] for r in recs]) / 1024
        out.append("| %d clients: one broadcast to all < %g ms | %s ms median%s | |" % (
            GOAL_CONN_C, GOAL_BROADCAST_MS, fmt(bmed), mark(bmed < GOAL_BROADCAST_MS)))
        out.append("| %d clients: server RSS < %g MiB | %s MiB%s | |" % (
            GOAL_CONN_C, GOAL_RSS_MIB, fmt(rss), mark(rss < GOAL_RSS_MIB)))
    else:
        out.append("| %d clients held | not measured | |" % GOAL_CONN_C)
    return out


def machine_line(records):
    for rec in reversed(records):
        m = rec.get("machine")
        if m:
            return "Machine: %s cores (%s usable), %s, %s MiB RAM, Linux %s, Python %s." % (
                m["cores"], m["usable_cores"], m["cpu_model"], m["mem_mib"], m["kernel"], m["python"])
    return ""


def render(records, tags):
    groups = select_runs(records, tags)
    rows = fanout_rows(groups)
    used_tags = sorted({r.get("tag") for recs in groups.values() for r in recs})
    lines = [machine_line(records), "",
             "Runs used (tags): %s. Generated by `python3 bench/report.py`." % (
                 ", ".join("`%s`" % t for t in used_tags) or "none"), "",
             "### Goals (chatserver)", ""] + goals_table(rows, groups) + [
             "", "### Fan-out", ""] + fanout_table(rows) + [
             "", "### Flood (no window)", ""] + flood_table(fanout_rows(groups, is_flood_key)) + [
             "", FLOOD_NOTE] + [
             "", "### chatserver against the references (goals)", ""] + ratio_table(rows) + [
             "", "### References against each other", ""] + reference_ratio_table(rows) + [
             "", "### Connection scale", ""] + connscale_table(groups) + [
             "", "### File relay (chatserver)", ""] + filerelay_table(groups)
    return "\n".join(lines) + "\n"


def update_doc(path, text):
    with open(path) as f:
        doc = f.read()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    with open(path, "w") as f:
        f.write(doc[:start] + "\n" + text + doc[end:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=DEFAULT_RESULTS)
    parser.add_argument("--tag", action="append", help="use only runs with this tag (repeatable)")
    parser.add_argument("--update-doc", metavar="MD", help="rewrite the results block of this file")
    args = parser.parse_args(argv)
    text = render(load(args.results), set(args.tag or []))
    if args.update_doc:
        update_doc(args.update_doc, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
