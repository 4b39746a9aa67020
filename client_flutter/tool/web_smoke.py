#!/usr/bin/env python3
"""Smoke test of the built web app in a real browser (CI: after `flutter build web`).

    python3 tool/web_smoke.py 'http://127.0.0.1:8765/app/#k=TOKEN' --browser /usr/bin/chromium

Opens the page headless and checks that the app started under its base href: no script
failed to load, Flutter's view appeared, and the app read the pairing token and removed the
`#k=` fragment from the address bar (lib/main.dart does that before Flutter's router runs).
Exit status 0 when all hold; the reasons otherwise. Requests to other hosts than the page's
are listed (a LAN may have no internet), without failing the check.
"""
import argparse
import sys
import time
import urllib.parse

from playwright.sync_api import sync_playwright

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def check(url, browser_path, timeout_s):
    problems, outside = [], []
    own_host = urllib.parse.urlsplit(url).netloc
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            errors, failed = [], []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("request", lambda request: outside.append(request.url)
                    if urllib.parse.urlsplit(request.url).netloc not in (own_host, "") else None)
            page.on("response", lambda r: failed.append("%s %d" % (r.url, r.status))
                    if r.status >= 400 else None)
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            deadline = time.monotonic() + timeout_s
            started = False
            while time.monotonic() < deadline and not started:
                started = page.evaluate("() => !!document.querySelector('flutter-view, flt-glass-pane')")
                if not started:
                    time.sleep(0.2)
            if not started:
                problems.append("Flutter's view never appeared")
            if page.evaluate("() => location.hash") != "":
                problems.append("the #k= fragment is still in the address bar: %s" % page.url)
            problems += ["page error: %s" % e for e in errors]
            problems += ["failed request: %s" % f for f in failed
                         if urllib.parse.urlsplit(f).netloc == own_host]
        finally:
            browser.close()
    for address in sorted(set(outside)):
        print("web smoke: note: the page asked another host: %s" % address, file=sys.stderr)
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--browser", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    problems = check(args.url, args.browser, args.timeout)
    for problem in problems:
        print("web smoke: " + problem, file=sys.stderr)
    print("web smoke: %s" % ("FAILED" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
