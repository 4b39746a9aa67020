"""`chatserver.py --web-app DIR`: a built Flutter web app served under /app/ on the chat's
own origin, tested with a small stand-in app (static files, types, no traversal, cache
validation) and, in Chromium, a stand-in page that joins the chat over the page's own host."""
import os

import pytest

import chatserver as cs
from test_core import assert_chat_still_works
from test_http import RawHttp
from test_web_e2e import CHROMIUM_ARGS, _chromium_path, _need

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

STAND_IN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><base href="/app/"><title>stand-in</title>
<script src="main.dart.js"></script></head><body><p id="state">starting</p></body></html>
"""
# What the real app does first: the token from the fragment, then the page's own host.
STAND_IN_SCRIPT = """
window.addEventListener("load", function () {
  var token = (location.hash.match(/k=([^&]+)/) || [])[1];
  var ws = new WebSocket("ws://" + location.host + "/ws");
  ws.onopen = function () {
    ws.send(JSON.stringify({type: "hello", nick: "flutter-web", proto: 1, token: token}));
  };
  ws.onmessage = function (e) {
    var m = JSON.parse(e.data);
    if (m.type === "welcome") document.getElementById("state").textContent = "joined";
  };
});
"""


@pytest.fixture
def app_dir(tmp_path):
    root = tmp_path / "web"
    (root / "canvaskit").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "index.html").write_text(STAND_IN_PAGE)
    (root / "main.dart.js").write_text(STAND_IN_SCRIPT)
    (root / "canvaskit" / "canvaskit.wasm").write_bytes(b"\0asm\1\0\0\0" + b"x" * 300000)
    (root / "assets" / "AssetManifest.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("outside the app")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")
    return root


@pytest.fixture
def app_server(make_server, app_dir):
    return make_server("--open", "--rate-limit", "0", "--web-app", str(app_dir))


def get(server, target, headers=(), method="GET"):
    conn = RawHttp(server.port)
    conn.request(method, target, headers=list(headers))
    return conn.read_response(head_only=method == "HEAD")


@pytest.mark.parametrize("target, content_type", [
    ("/app/", "text/html; charset=utf-8"),
    ("/app/index.html", "text/html; charset=utf-8"),
    ("/app/main.dart.js", "text/javascript; charset=utf-8"),
    ("/app/canvaskit/canvaskit.wasm", "application/wasm"),
    ("/app/assets/AssetManifest.json", "application/json"),
    ("/app/chat/room", "text/html; charset=utf-8"),          # an app route: index.html
])
def test_the_web_app_files_are_served_with_their_types(app_server, app_dir, target, content_type):
    res = get(app_server, target)
    assert res.status == 200, res
    assert res.headers["content-type"] == content_type
    assert "wasm-unsafe-eval" in res.headers["content-security-policy"]
    assert res.headers["cache-control"] == "no-cache" and res.headers["etag"]
    relative = target[len("/app/"):] or "index.html"
    path = app_dir / relative if (app_dir / relative).is_file() else app_dir / "index.html"
    assert res.body == path.read_bytes()


def test_an_unchanged_file_is_a_304_and_head_has_no_body(app_server):
    first = get(app_server, "/app/main.dart.js")
    again = get(app_server, "/app/main.dart.js", [("If-None-Match", first.headers["etag"])])
    assert again.status == 304 and again.body == b""
    head = get(app_server, "/app/canvaskit/canvaskit.wasm", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(8 + 300000)
    assert get(app_server, "/app").status == 301


@pytest.mark.parametrize("target", [
    "/app/../secret.txt", "/app/%2e%2e/secret.txt", "/app/assets/../../secret.txt",
    "/app/leak.txt", "/app/missing.js", "/app/..%5csecret.txt", "/app/c:%5cwindows",
])
def test_nothing_outside_the_app_folder_is_served(app_server, target):
    watcher = app_server.client("watcher")
    res = get(app_server, target)
    assert res.status in (400, 404), (target, res.status)
    assert b"outside the app" not in res.body
    assert_chat_still_works(app_server, watcher)


def test_without_web_app_there_is_no_app_route(server):
    assert get(server, "/app/").status == 404


def test_a_folder_without_index_html_does_not_start(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match="not a built web app"):
        cs.Server(cs.Config(memory=True, web_app=str(empty)))


def test_the_helpers_refuse_traversal(app_dir):
    root = str(app_dir)
    assert cs.web_app_file(root, "") == os.path.join(os.path.realpath(root), "index.html")
    for bad in ("..", "../secret.txt", "a/../../secret.txt", "leak.txt", "x\\y", "a\0b"):
        assert cs.web_app_file(root, bad) is None, bad
    assert cs.web_app_type("x.WASM") == "application/wasm"
    assert cs.web_app_type("x.unknown") == cs.DEFAULT_MIME


def test_the_web_app_joins_the_chat_from_its_own_origin(make_server, app_dir):
    _need(sync_playwright is not None, "playwright is not installed")
    path = _chromium_path()
    _need(path is not None, "chromium is not installed (apt-get install -y chromium)")
    srv = make_server("--rate-limit", "0", "--web-app", str(app_dir))
    token = srv.pairing_token()
    watcher = srv.client("watcher", token=token)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto("http://127.0.0.1:%d/app/#k=%s" % (srv.port, token))
            # a function, not an expression: Playwright evaluates an expression string with
            # eval() in the page, which the app's CSP (no 'unsafe-eval') may refuse
            page.wait_for_function("() => { const s = document.getElementById('state'); "
                                   "return s !== null && s.textContent === 'joined'; }",
                                   timeout=15000)
            assert errors == []
        finally:
            browser.close()
    assert watcher.wait_for(lambda h: h.get("type") == "join" and
                            h.get("nick") == "flutter-web")
