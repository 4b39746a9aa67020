#!/usr/bin/env python3
"""Plot fan-out results as SVG (stdlib only): deliveries/s and probe p99 latency against N.

    python3 bench/plot.py [--results bench/results/results.jsonl] [--out bench/results/fanout.svg]

Uses the same run selection as bench/report.py (ok runs; per configuration the latest tag,
or --tag). One line per target, medians per N; where several K were measured for one N,
the largest K is used. Both axes are logarithmic.
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (sibling module, same selection rules)

DEFAULT_OUT = os.path.join(report.BENCH_DIR, "results", "fanout.svg")
COLORS = {"threaded": "#d62728", "asyncio-perline": "#9467bd", "asyncio": "#ff7f0e", "redis": "#2ca02c", "inspircd": "#8c564b", "chatserver": "#1f77b4"}
PANEL_W, PANEL_H = 420, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 20, 40, 50


def series(rows, field):
    """{target: [(n, value)]} taking, for each (target, n), the row with the largest K."""
    best = {}
    for (target, n, k, p, persist), row in rows.items():
        if persist is False:
            continue                       # plot the persistent chatserver only
        if row.get(field) is None:
            continue
        if (target, n) not in best or k > best[(target, n)][0]:
            best[(target, n)] = (k, row[field])
    out = {}
    for (target, n), (k, value) in sorted(best.items()):
        out.setdefault(target, []).append((n, value))
    return out


def log_ticks(lo, hi):
    """Powers of ten (and 2x, 5x when the range is short) covering [lo, hi]."""
    ticks = []
    for e in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1):
        for m in ((1,) if math.log10(hi / lo) > 2 else (1, 2, 5)):
            v = m * 10 ** e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


def fmt_tick(v):
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            return ("%g" % (v / div)) + suffix
    return "%g" % v


def panel(x0, title, ylabel, data, goal=None):
    """SVG elements of one log-log panel at horizontal offset x0 (goal: a dashed level)."""
    points = [pt for pts in data.values() for pt in pts]
    if not points:
        return ['<text x="%d" y="%d">%s: no data</text>' % (x0 + 40, PANEL_H // 2, title)]
    xs = [p[0] for p in points]
    ys = [p[1] for p in points if p[1] > 0]
    xlo, xhi = min(xs) / 1.5, max(xs) * 1.5
    ylo, yhi = min(ys + ([goal] if goal else [])) / 2, max(ys + ([goal] if goal else [])) * 2
    w = PANEL_W - MARGIN_L - MARGIN_R
    h = PANEL_H - MARGIN_T - MARGIN_B
    sx = lambda v: x0 + MARGIN_L + w * (math.log10(v) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))
    sy = lambda v: MARGIN_T + h - h * (math.log10(v) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo))
    el = ['<text x="%d" y="22" font-weight="bold">%s</text>' % (x0 + MARGIN_L, title),
          '<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>' % (
              x0 + MARGIN_L, MARGIN_T, w, h)]
    for v in log_ticks(ylo, yhi):
        y = sy(v)
        el.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (x0 + MARGIN_L, y, x0 + MARGIN_L + w, y))
        el.append('<text x="%d" y="%.1f" text-anchor="end" font-size="11">%s</text>' % (
            x0 + MARGIN_L - 5, y + 4, fmt_tick(v)))
    for v in sorted(set(xs)):
        x = sx(v)
        el.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, MARGIN_T, x, MARGIN_T + h))
        el.append('<text x="%.1f" y="%d" text-anchor="middle" font-size="11">%s</text>' % (
            x, MARGIN_T + h + 15, fmt_tick(v)))
    el.append('<text x="%d" y="%d" text-anchor="middle" font-size="12">N (subscribers)</text>' % (
        x0 + MARGIN_L + w // 2, PANEL_H - 12))
    el.append('<text x="%d" y="%d" font-size="12" transform="rotate(-90 %d %d)" text-anchor="middle">%s</text>' % (
        x0 + 16, MARGIN_T + h // 2, x0 + 16, MARGIN_T + h // 2, ylabel))
    if goal:
        y = sy(goal)
        el.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#888" stroke-dasharray="6,4"/>' % (
            x0 + MARGIN_L, y, x0 + MARGIN_L + w, y))
        el.append('<text x="%d" y="%.1f" font-size="11" fill="#666">goal %g ms</text>' % (
            x0 + MARGIN_L + 4, y - 4, goal))
    for target in report.TARGET_ORDER:
        pts = [(sx(n), sy(v)) for n, v in data.get(target, []) if v > 0]
        if not pts:
            continue
        color = COLORS[target]
        el.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
            color, " ".join("%.1f,%.1f" % p for p in pts)))
        el.extend('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>' % (x, y, color) for x, y in pts)
    return el


def legend(x, targets):
    el = []
    for i, target in enumerate(targets):
        y = 20 + i * 18
        el.append('<rect x="%d" y="%d" width="14" height="4" fill="%s"/>' % (x, y - 4, COLORS[target]))
        el.append('<text x="%d" y="%d" font-size="12">%s</text>' % (x + 20, y + 2, target))
    return el


def render_svg(rows):
    rate = series(rows, "rate")
    p99 = series(rows, "p99")
    targets = [t for t in report.TARGET_ORDER if t in rate or t in p99]
    width = 2 * PANEL_W + 150
    el = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">' % (
        width, PANEL_H),
          '<rect width="100%" height="100%" fill="white"/>']
    el += panel(0, "Fan-out: deliveries/s (median)", "deliveries per second", rate)
    el += panel(PANEL_W, "Probe latency p99 (median of runs)", "p99 latency, ms", p99,
                goal=report.GOAL_P99_MS)
    el += legend(2 * PANEL_W + 10, targets)
    el.append("</svg>")
    return "\n".join(el) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=report.DEFAULT_RESULTS)
    parser.add_argument("--tag", action="append")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rows = report.fanout_rows(report.select_runs(report.load(args.results), set(args.tag or [])))
    svg = render_svg(rows)
    with open(args.out, "w") as f:
        f.write(svg)
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
