"""The embedded web client in a real headless Chromium, against the real chatserver.py.

Two browser users and one framed-TCP user chat together; a file uploaded from one browser
is downloaded in the other with the same SHA-256; both browsers come back after a server
restart with every message exactly once; markup in a message stays text; the page pings and
reconnects on the timings the server announces (--ping-after, --idle-timeout).

Needs `chromium` (apt) and `playwright` (pip, never `playwright install`). Skipped when
either is missing, except with CI=true, where a missing tool is a failure.

The page is driven by its accessible names only (see client_web/chat.html):
  dialog "Join LAN Chat" > textbox "Nickname" + button "Join"; textbox "Message";
  buttons "Send", "Attach file", "Users", "Stop private chat", "Load older messages";
  file input labelled "File to share"; role=log "Conversation"; role=status = the
  connection banner (hidden while connected); role=alert = toasts; progressbar
  "Uploading <name>".
"""
import collections
import hashlib
import os
import re
import shutil
import signal
import struct
import time
import zlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
PHONE = {"width": 390, "height": 844}
# TOOLING.md: without the background-networking flags Chromium tries to reach outside hosts.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 15000          # generous: CI machines are slow, reconnect backoff is up to 10 s
RECONNECT_TIMEOUT_MS = 30000


def _need(ok, reason):
    """Skip when a system tool is missing, but fail under CI, where it must be installed."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: this test must run)")
    pytest.skip(reason)


def _chromium_path():
    for cand in (os.environ.get("CHROMIUM"), shutil.which("chromium"),
                 shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if cand and os.path.exists(cand):
            return cand
    return None


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:        # handled in the fixture, so the skip/fail rule applies
    sync_playwright = expect = None


@pytest.fixture(scope="module")
def browser():
    _need(sync_playwright is not None, "playwright is not installed (pip install -r tests/requirements.txt)")
    path = _chromium_path()
    _need(path is not None, "chromium is not installed (apt-get install -y chromium)")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


class WebUser:
    """One person in their own browser context (own localStorage), on a phone-sized page."""

    def __init__(self, browser, port, nick, **context_options):
        self.nick = nick
        self.port = port
        self.context = browser.new_context(viewport=PHONE, accept_downloads=True, **context_options)
        self.page = self.context.new_page()
        self.dialogs = []          # any alert() would land here: none may ever appear
        self.answers = []          # answers for the confirm()/prompt() a test expects, in order
        self.answered = []         # the questions those answers went to
        self.errors = []
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _on_dialog(self, dialog):
        if self.answers:
            self.answered.append(dialog.message)
            answer = self.answers.pop(0)          # None: OK to a confirm(); a string: typed
            dialog.accept() if answer is None else dialog.accept(answer)
        else:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

    def join(self):
        self.page.goto("http://127.0.0.1:%d/" % self.port)
        dialog = self.page.get_by_role("dialog", name="Join LAN Chat")
        dialog.get_by_label("Nickname").fill(self.nick)
        dialog.get_by_role("button", name="Join").click()
        self.wait_online()
        return self

    def wait_online(self, timeout=UI_TIMEOUT_MS):
        # The status banner ("Connecting…", "Reconnecting…") is hidden once welcomed.
        expect(self.page.get_by_role("status")).to_be_hidden(timeout=timeout)

    def say(self, text):
        box = self.page.get_by_role("textbox", name="Message")
        box.fill(text)
        self.page.get_by_role("button", name="Send").click()

    @property
    def log(self):
        return self.page.get_by_role("log", name="Conversation")

    def texts(self):
        """Text of every message shown, in order (pending ones included)."""
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('#log .m .t')).map(e => e.textContent)")

    def ids(self):
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('#log .m[data-id]')).map(e => +e.dataset.id)")

    def assert_clean(self):
        assert self.dialogs == [], "a dialog opened: %r" % self.dialogs
        assert self.errors == [], "page errors: %r" % self.errors

    def close(self):
        self.context.close()


@pytest.fixture
def web_server(make_server):
    return make_server("--open", "--rate-limit", "0")


def tcp_msgs(client, wait=0.3):
    return [h for h in client.drain(wait) if h.get("type") == "msg"]


def wait_tcp_msg(client, text, timeout=10.0):
    return client.wait_for(lambda h: h.get("type") == "msg" and h.get("text") == text,
                           timeout=timeout)


def tiny_png(width=48, height=32):
    """A valid RGB PNG built by hand, so the test needs no imaging library."""
    rows = b"".join(b"\x00" + b"".join(bytes((x * 5 % 256, y * 7 % 256, 160)) for x in range(width))
                    for y in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# -- chat between two browsers and a TCP client -------------------------------------------

def test_two_browsers_and_a_tcp_client_chat(browser, web_server):
    alice = WebUser(browser, web_server.port, "alice", is_mobile=True, has_touch=True,
                    device_scale_factor=2).join()
    bob = WebUser(browser, web_server.port, "bob", color_scheme="dark").join()
    carol = web_server.client("carol")
    try:
        # browser -> browser + TCP
        alice.say("hello from alice")
        expect(bob.log).to_contain_text("hello from alice")
        got = wait_tcp_msg(carol, "hello from alice")
        assert got["from"] == "alice" and "to" not in got

        # TCP -> both browsers
        carol.say("hi from the terminal")
        expect(alice.log).to_contain_text("hi from the terminal")
        expect(bob.log).to_contain_text("hi from the terminal")

        # markup is shown as text, never run or parsed
        evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
        bob.say(evil)
        expect(alice.log.get_by_text(evil, exact=True)).to_be_visible()
        assert alice.page.locator("#log script, #log img[src='x']").count() == 0
        assert wait_tcp_msg(carol, evil)["text"] == evil

        # typing indicator reaches the other browser
        bob.page.get_by_role("textbox", name="Message").press_sequentially("abc")
        expect(alice.page.get_by_text("bob is typing…")).to_be_visible()
        bob.page.get_by_role("textbox", name="Message").fill("")

        # own messages are right-aligned bubbles, others' left
        mine = alice.log.locator(".m", has_text="hello from alice")
        theirs = alice.log.locator(".m", has_text="hi from the terminal")
        assert mine.bounding_box()["x"] > theirs.bounding_box()["x"]

        # direct message from the user list: reaches bob only, not carol
        alice.page.get_by_role("button", name="Users").click()
        alice.page.get_by_role("button", name="bob", exact=True).click()
        expect(alice.page.get_by_text("To: bob (private)")).to_be_visible()
        alice.say("psst bob, private")
        expect(bob.log).to_contain_text("psst bob, private")
        alice.page.get_by_role("button", name="Stop private chat").click()
        alice.say("public again")
        expect(bob.log).to_contain_text("public again")
        wait_tcp_msg(carol, "public again")     # frames before it stay in carol's inbox
        assert "psst bob, private" not in [m["text"] for m in tcp_msgs(carol, 0.2)]

        # every message exactly once, in id order, on both pages
        for user in (alice, bob):
            ids = user.ids()
            assert ids == sorted(ids) and len(ids) == len(set(ids)) == 5, ids
            user.assert_clean()

        os.makedirs(ARTIFACTS, exist_ok=True)
        alice.page.screenshot(path=os.path.join(ARTIFACTS, "web_client_390x844.png"),
                              animations="disabled")
        bob.page.screenshot(path=os.path.join(ARTIFACTS, "web_client_390x844_dark.png"),
                            animations="disabled")
    finally:
        carol.close()
        alice.close()
        bob.close()


def test_nick_taken_is_reported_and_another_nick_works(browser, web_server):
    carol = web_server.client("Carol")
    user = WebUser(browser, web_server.port, "carol")
    try:
        user.page.goto("http://127.0.0.1:%d/" % web_server.port)
        dialog = user.page.get_by_role("dialog", name="Join LAN Chat")
        dialog.get_by_label("Nickname").fill("carol")           # case-insensitive clash
        dialog.get_by_role("button", name="Join").click()
        expect(dialog.get_by_role("alert")).not_to_be_empty()
        expect(dialog).to_be_visible()
        dialog.get_by_label("Nickname").fill("carol2")
        dialog.get_by_role("button", name="Join").click()
        user.wait_online()
        user.say("carol2 here")
        assert wait_tcp_msg(carol, "carol2 here")["from"] == "carol2"
        user.assert_clean()
    finally:
        carol.close()
        user.close()


# -- devices: a nick belongs to the browser that claimed it --------------------------------

def test_a_reload_keeps_the_nick_and_another_browser_gets_nick_owned(browser, web_server):
    watcher = web_server.client("watcher")
    alice = WebUser(browser, web_server.port, "alice").join()
    other = WebUser(browser, web_server.port, "alice")        # another profile: another device
    try:
        alice.say("before the reload")
        first = wait_tcp_msg(watcher, "before the reload")
        alice.page.reload()                    # the same device: no dialog, the nick is kept
        alice.wait_online()
        expect(alice.page.get_by_role("dialog", name="Join LAN Chat")).to_be_hidden()
        alice.say("after the reload")
        again = wait_tcp_msg(watcher, "after the reload")
        assert again["from"] == "alice" and again["uid"] == first["uid"]
        other.page.goto("http://127.0.0.1:%d/" % web_server.port)
        dialog = other.page.get_by_role("dialog", name="Join LAN Chat")
        dialog.get_by_label("Nickname").fill("alice")
        dialog.get_by_role("button", name="Join").click()
        expect(dialog.get_by_role("alert")).to_contain_text("another device")
        expect(dialog).to_be_visible()
        dialog.get_by_label("Nickname").fill("alice2")
        dialog.get_by_role("button", name="Join").click()
        other.wait_online()
        # alice's own messages are hers in her view, and not alice2's
        mine = other.page.locator("#log .m.me")
        expect(mine).to_have_count(0)
        for user in (alice, other):
            user.assert_clean()
    finally:
        watcher.close()
        alice.close()
        other.close()


def test_the_same_browser_in_two_tabs_does_not_fight_over_the_nick(browser, web_server):
    watcher = web_server.client("watcher")
    first = WebUser(browser, web_server.port, "dana").join()
    try:
        watcher.wait_for(lambda h: h.get("type") == "join" and h.get("nick") == "dana")
        watcher.drain(0.3)
        second = first.context.new_page()      # the same profile, so the same device
        second.goto("http://127.0.0.1:%d/" % web_server.port)
        expect(second.get_by_role("status")).to_be_hidden()
        expect(first.page.locator("#banner")).to_contain_text("another tab")
        time.sleep(3)                          # nobody reconnects behind the other's back
        expect(second.get_by_role("status")).to_be_hidden()
        box = second.get_by_role("textbox", name="Message")
        box.fill("from the second tab")
        second.get_by_role("button", name="Send").click()
        assert wait_tcp_msg(watcher, "from the second tab")["from"] == "dana"
        frames = watcher.drain(0.5)
        assert not [f for f in frames if f.get("type") in ("join", "leave")]
    finally:
        watcher.close()
        first.close()


def test_file_links_carry_no_secret(browser, web_server, tmp_path):
    alice = WebUser(browser, web_server.port, "alice").join()
    stranger = browser.new_context()
    try:
        path = tmp_path / "plain.txt"
        path.write_bytes(b"only for the room")
        alice.page.get_by_label("File to share").set_input_files(str(path))
        link = alice.log.get_by_role("link", name=re.compile("plain.txt"))
        expect(link).to_be_visible()
        href = link.get_attribute("href")
        assert "session" not in href and alice.page.evaluate("() => document.cookie") == ""
        url = "http://127.0.0.1:%d%s" % (web_server.port, href)
        assert alice.context.request.get(url).body() == b"only for the room"
        refused = stranger.request.get(url)            # the link alone opens nothing
        assert refused.status == 401 and b"only for the room" not in refused.body()
        alice.assert_clean()
    finally:
        stranger.close()
        alice.close()


# -- files ---------------------------------------------------------------------------------

def test_file_uploaded_in_one_browser_downloads_in_the_other(browser, web_server, tmp_path):
    alice = WebUser(browser, web_server.port, "alice").join()
    bob = WebUser(browser, web_server.port, "bob").join()
    carol = web_server.client("carol")
    try:
        data = os.urandom(3 * 1024 * 1024 + 123)
        name = "notes 2026 é.bin"
        path = tmp_path / name
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()

        alice.page.get_by_label("File to share").set_input_files(str(path))
        link = bob.log.get_by_role("link", name=re.compile(re.escape(name)))
        expect(link).to_be_visible()

        announced = carol.wait_for(lambda h: h.get("type") == "msg" and h.get("file"))
        assert announced["from"] == "alice"
        assert announced["file"]["name"] == name
        assert announced["file"]["size"] == len(data)
        assert announced["file"]["sha256"] == digest

        with bob.page.expect_download() as info:
            link.click()
        download = info.value
        with open(download.path(), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest

        # the uploader sees its own copy (acknowledged), and the progress row is gone
        expect(alice.log.get_by_role("link", name=re.compile(re.escape(name)))).to_be_visible()
        expect(alice.page.get_by_role("progressbar")).to_have_count(0)

        # an image gets an inline thumbnail that really loads (the session cookie works)
        png = tmp_path / "pixel art.png"
        png.write_bytes(tiny_png())
        bob.page.get_by_label("File to share").set_input_files(str(png))
        thumb = alice.log.get_by_role("img", name="pixel art.png")
        expect(thumb).to_be_visible()
        alice.page.wait_for_function(
            "() => { const i = document.querySelector('#log img'); return i && i.complete && i.naturalWidth === 48; }")
        for user in (alice, bob):
            user.assert_clean()
    finally:
        carol.close()
        alice.close()
        bob.close()


# -- reconnect -----------------------------------------------------------------------------

def test_reconnect_after_server_restart_without_gap_or_duplicate(browser, web_server):
    alice = WebUser(browser, web_server.port, "alice").join()
    bob = WebUser(browser, web_server.port, "bob").join()
    try:
        for i in range(3):
            alice.say("before %d" % i)
        expect(bob.log).to_contain_text("before 2")

        web_server.stop()                      # SIGTERM: bye, then the sockets close
        for user in (alice, bob):
            expect(user.page.get_by_role("status")).to_have_text(re.compile("Reconnecting"))

        # typed while offline: queued, shown as pending, sent after the reconnect
        alice.say("typed while offline")
        expect(alice.page.get_by_text("Waiting for connection…")).to_be_visible()

        web_server.start()                     # same port, same data dir
        carol = web_server.client("carol")     # talks while the browsers may still be away
        try:
            for i in range(3):
                carol.say("during the gap %d" % i)
            for user in (alice, bob):
                user.wait_online(timeout=RECONNECT_TIMEOUT_MS)
            expect(bob.log).to_contain_text("typed while offline")
            expect(alice.log).to_contain_text("during the gap 2")
            expect(bob.log).to_contain_text("during the gap 2")
            expect(alice.page.get_by_text("Waiting for connection…")).to_have_count(0)
            wait_tcp_msg(carol, "typed while offline")
            carol.say("after")
            expect(alice.log).to_contain_text("after")
            expect(bob.log).to_contain_text("after")
        finally:
            carol.close()

        expected = ["before 0", "before 1", "before 2", "typed while offline",
                    "during the gap 0", "during the gap 1", "during the gap 2", "after"]
        for user in (alice, bob):
            texts = user.texts()
            counts = collections.Counter(texts)
            assert all(counts[t] == 1 for t in expected), texts
            assert sorted(texts) == sorted(expected), texts
            ids = user.ids()
            assert ids == sorted(ids) and len(ids) == len(set(ids)) == len(expected), ids
            user.assert_clean()
        # the offline message was stored once although it may have been sent twice
        assert alice.page.evaluate("() => localStorage.getItem('lanchat.outbox')") == "[]"
    finally:
        alice.close()
        bob.close()


# -- liveness on the server's timing ---------------------------------------------------------

PING_AFTER, IDLE_TIMEOUT = 7, 21     # seconds; the defaults are 30 and 90
# client_web/chat.js: it pings after ping_after + 5 s of silence and gives the link up after
# idle_timeout + 10 s, then reconnects after a backoff of 0.5 s (+ up to 25 % jitter).
PAGE_PINGS_AFTER_MS = (PING_AFTER + 5) * 1000
PAGE_DROPS_AFTER_MS = (IDLE_TIMEOUT + 10) * 1000
FIRST_BACKOFF_MAX_MS = 625

# Every WebSocket the page opens, every frame it sends and when it last heard the server,
# on the page's (fake) clock.
RECORD_WEBSOCKETS = """
(() => {
  const Native = window.WebSocket;
  const rec = window.__ws = { opened: 0, sent: [], lastRx: 0 };
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      rec.opened++;
      this.addEventListener('message', () => { rec.lastRx = Date.now(); });
    }
    send(data) { rec.sent.push({ t: Date.now(), type: JSON.parse(data).type }); super.send(data); }
  };
})();
"""


def test_welcome_announces_the_servers_ping_and_idle_timings(make_server):
    tuned = make_server("--open", "--ping-after", str(PING_AFTER),
                        "--idle-timeout", str(IDLE_TIMEOUT))
    default = make_server("--open")
    for srv, expected in ((tuned, (PING_AFTER, IDLE_TIMEOUT)), (default, (30, 90))):
        client = srv.client("alice")
        try:
            limits = client.welcome["limits"]
            assert (limits["ping_after"], limits["idle_timeout"]) == expected
        finally:
            client.close()


def test_the_page_pings_and_reconnects_on_the_servers_timing(browser, make_server):
    """The page's timers come from welcome.limits: with --ping-after 7 --idle-timeout 21 it
    pings after 12 s of silence and reconnects after 31 s, where its defaults would wait 35 s
    and 100 s. The server is stopped (SIGSTOP) so that it stays silent, and the page runs on
    Playwright's fake clock, so the test takes seconds."""
    srv = make_server("--open", "--rate-limit", "0", "--ping-after", str(PING_AFTER),
                      "--idle-timeout", str(IDLE_TIMEOUT))
    user = WebUser(browser, srv.port, "alice")
    page = user.page
    page.add_init_script(RECORD_WEBSOCKETS)
    start = 1_800_000_000                          # seconds; any fixed time will do
    page.clock.install(time=start)
    page.clock.pause_at(start + 60)                # no page timer runs unless the test says
    stopped = False
    try:
        user.join()
        rec = lambda: page.evaluate("() => window.__ws")
        welcomed_at = rec()["lastRx"]
        assert welcomed_at > 0 and rec()["opened"] == 1
        os.kill(srv.proc.pid, signal.SIGSTOP)      # from now on the server says nothing
        stopped = True

        def pings():
            return [f["t"] - welcomed_at for f in rec()["sent"] if f["type"] == "ping"]

        page.clock.run_for(PAGE_PINGS_AFTER_MS - 500)
        assert pings() == []
        page.clock.run_for(1000)
        assert pings() == [PAGE_PINGS_AFTER_MS]    # asked once, on the server's timing

        page.clock.run_for(PAGE_DROPS_AFTER_MS - PAGE_PINGS_AFTER_MS - 1000)
        assert rec()["opened"] == 1
        expect(page.get_by_role("status")).to_be_hidden()
        page.clock.run_for(500 + FIRST_BACKOFF_MAX_MS + 100)
        assert rec()["opened"] == 2                 # gave the silent link up and reconnected
        expect(page.get_by_role("status")).to_have_text(re.compile("Reconnecting"))

        os.kill(srv.proc.pid, signal.SIGCONT)
        stopped = False
        page.clock.resume()
        user.wait_online(timeout=RECONNECT_TIMEOUT_MS)
        user.say("still here")
        expect(user.log).to_contain_text("still here")
        assert rec()["opened"] == 2
        user.assert_clean()
    finally:
        if stopped:
            os.kill(srv.proc.pid, signal.SIGCONT)
        user.close()
