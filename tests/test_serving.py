"""How the pages are served (issue 20): gzipped to a client that asks, identical bytes to one
that does not; a Content-Security-Policy that lets only the page's own scripts run (by their
hashes) and connections go to this server only; checked over HTTP and in Chromium."""
import base64
import gzip
import hashlib
import re

import pytest

import chatserver as cs
from chatclient import Operator
from test_http import http
from test_web_e2e import WebUser, browser, expect, web_server  # noqa: F401


@pytest.mark.parametrize("path", ["/", "/admin", "/pair"])
def test_a_page_is_gzipped_for_a_client_that_asks_and_identical_without(server, path):
    plain = http(server, "GET", path)
    packed = http(server, "GET", path, [("Accept-Encoding", "gzip, deflate, br")])
    assert plain.status == packed.status == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["vary"] and "Accept-Encoding" in plain.headers["vary"]
    body = gzip.decompress(packed.body)
    if path == "/admin":           # the page is the same; only the cookie's key is per start
        assert body == cs.ADMIN_PAGE_HTML == plain.body
    else:
        assert body == plain.body
    assert len(packed.body) < len(plain.body) / 2


@pytest.mark.parametrize("value, gzipped", [
    ("gzip", True), ("GZIP;q=0.5", True), ("x-gzip", True), ("*", True),
    ("gzip;q=0", False), ("identity", False), ("br", False), ("", False),
    ("*;q=0", False), ("gzip;q=nonsense", False), ("deflate, *;q=0.1", True),
    ("gzip;q=0, *", False)])
def test_accept_encoding_is_read_as_rfc_9110_says(server, value, gzipped):
    assert cs.accepts_gzip(value) is gzipped
    res = http(server, "GET", "/", [("Accept-Encoding", value)] if value else [])
    assert (res.headers.get("content-encoding") == "gzip") is gzipped
    body = gzip.decompress(res.body) if gzipped else res.body
    assert body == cs.WEB_CLIENT_HTML


def test_head_announces_the_length_of_what_get_would_send(server):
    head = http(server, "HEAD", "/", [("Accept-Encoding", "gzip")])
    get = http(server, "GET", "/", [("Accept-Encoding", "gzip")])
    assert head.body == b"" and head.headers["content-length"] == str(len(get.body))


def test_small_and_binary_answers_are_not_compressed(server):
    health = http(server, "GET", "/healthz", [("Accept-Encoding", "gzip")])
    assert "content-encoding" not in health.headers          # a few bytes of JSON
    png = http(server, "GET", "/qr.png", [("Accept-Encoding", "gzip")])
    assert png.status == 200 and "content-encoding" not in png.headers


def test_json_answers_are_compressed_too(server):
    op = Operator(server.port)
    for i in range(30):
        server.client("user%d" % i).say("a message to make the state long enough %d" % i)
    res = http(server, "GET", "/admin/api/state", [("Accept-Encoding", "gzip"),
                                                   ("Authorization", "Bearer " + op.key)])
    assert res.status == 200 and res.headers["content-encoding"] == "gzip"
    assert b"user29" in gzip.decompress(res.body)


@pytest.mark.parametrize("path, page", [("/", "WEB_CLIENT_HTML"), ("/admin", "ADMIN_PAGE_HTML")])
def test_the_csp_lets_only_the_pages_own_script_run(server, path, page):
    res = http(server, "GET", path)
    csp = res.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp).group(1).split()
    assert "'unsafe-inline'" not in script_src and "'self'" not in script_src
    scripts = re.findall(rb"<script>(.*?)</script>", res.body, re.S)
    assert scripts, "the page has its script inline"
    assert sorted(script_src) == sorted(
        "'sha256-%s'" % base64.b64encode(hashlib.sha256(s).digest()).decode() for s in scripts)
    assert re.search(r"connect-src 'self'(;|$)", csp), csp
    assert "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp
    assert res.body == getattr(cs, page)


def test_the_pairing_page_runs_no_script_at_all(server):
    csp = http(server, "GET", "/pair").headers["content-security-policy"]
    assert "script-src 'none'" in csp


def test_in_chromium_an_injected_script_does_not_run_and_the_page_does(browser, web_server):
    user = WebUser(browser, web_server.port, "alice")
    violations = []
    user.page.on("console", lambda m: violations.append(m.text)
                 if "Content Security Policy" in m.text else None)
    try:
        user.join()                                # the page's own script runs and connects
        user.page.evaluate("""() => {
            const s = document.createElement('script');
            s.textContent = 'window.injected = true';
            document.body.appendChild(s);
        }""")
        user.page.wait_for_timeout(300)
        assert user.page.evaluate("() => window.injected === true") is False
        assert any("inline script" in v for v in violations), violations
        user.say("still connected")
        expect(user.log).to_contain_text("still connected")
    finally:
        user.close()



def test_a_large_dynamic_answer_is_not_compressed_on_the_loop(server):
    """Compressing a big export would hold the loop: over GZIP_MAX_BYTES it goes as it is."""
    alice = server.client("alice")
    line = "long words to fill the export " * 500                   # 15,000 bytes
    for i in range(cs.GZIP_MAX_BYTES // len(line) + 3):
        alice.say("%d %s" % (i, line))
    op = Operator(server.port)
    headers = [("Accept-Encoding", "gzip"), ("Authorization", "Bearer " + op.key)]
    big = http(server, "GET", "/admin/export.json", headers)
    assert big.status == 200 and len(big.body) > cs.GZIP_MAX_BYTES
    assert "content-encoding" not in big.headers
    small = http(server, "GET", "/admin/api/state", headers)
    assert small.headers.get("content-encoding") == "gzip"
