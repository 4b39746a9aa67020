"""Issue 20 in a real headless Chromium: what people expect of a chat, on phone-sized pages in
the light and the dark colour scheme, against the real chatserver.py.

Links typed by one user open from another's view (other schemes stay text); sound, vibration,
a favicon badge and the title counter while the page is hidden (the APIs are stubbed in the
page to observe the calls); replies, reactions and mentions between two browsers and a framed
client, also for a browser that was away (a fresh load) and one whose link was cut (a resume
with `since`); search, including a direct message found only by its two parties; the image
viewer; day separators and "Jump to latest"; axe-core on the chat, the join dialog, the search
dialog and the viewer. No page error and no console error anywhere.

The page is driven by its accessible names (client_web/chat.html, chat.js): buttons
"Actions for your message" / "Actions for the message from <nick>" with "Reply", "React",
"Edit", "Delete"; group "Pick a reaction" with "React with <emoji>"; reaction chips
"<emoji> <n> reaction(s)" (aria-pressed: mine); "Cancel reply"; group "Mention
suggestions" with "@<nick>"; buttons "Search", "Sound" (aria-pressed), "Jump to latest…",
"Load newer messages"; dialog "Search messages" with textbox "Search for", combobox "From",
button "Search", list "Search results", button "More results"; dialog "Image viewer" with
"Previous image", "Next image", link "Download <name>", button "Close".

Same tools and rules as tests/test_web_e2e.py (chromium + playwright, axe-core from npm):
skipped when missing, failed under CI=true.
"""
import datetime
import json
import os
import re
import sqlite3
import time

import pytest

from test_moderation_e2e import AXE_JS, axe_violations
from test_web_e2e import (ARTIFACTS, WebUser, _need, browser, expect,  # noqa: F401
                          tiny_png, wait_tcp_msg)

RECONNECT_TIMEOUT_MS = 30000
BEEP_GAP_S = 1.6          # chat.js beeps at most once per 1.5 s


@pytest.fixture(params=["light", "dark"])
def scheme(request):
    return request.param


@pytest.fixture
def chat_server(make_server):
    return make_server("--open", "--rate-limit", "0")


# The page's socket(s), so that a test can cut the link as a WiFi drop would; while
# window.__noNetwork is set, new sockets fail as they do without a network (Chromium's
# offline emulation does not hold WebSockets back, so the page could reconnect at once).
RECORD_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__noNetwork = false;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      if (window.__noNetwork) throw new DOMException('no network (test)', 'NetworkError');
      super(url, protocols); window.__sockets.push(this);
    }
  };
})();
"""

# Stubs for what the page does while hidden: document.hidden (set by the test), an
# AudioContext that records its tones, navigator.vibrate, and the favicon badge's text.
ATTENTION_STUBS = """
(() => {
  const rec = window.__att = { contexts: 0, tones: [], vibrations: [], badges: [] };
  let hidden = false;
  window.__setHidden = h => { hidden = h; document.dispatchEvent(new Event('visibilitychange')); };
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, 'visibilityState',
                        { configurable: true, get: () => hidden ? 'hidden' : 'visible' });
  class Param {
    constructor() { this.value = 0; }
    setValueAtTime() {} linearRampToValueAtTime() {} exponentialRampToValueAtTime() {}
  }
  class Node { connect() {} disconnect() {} }
  window.AudioContext = window.webkitAudioContext = class {
    constructor() { rec.contexts++; this.state = 'running'; this.currentTime = 0; this.destination = new Node(); }
    resume() { return Promise.resolve(); }
    createGain() { const g = new Node(); g.gain = new Param(); return g; }
    createOscillator() {
      const o = new Node();
      o.frequency = new Param();
      o.start = () => rec.tones.push(o.frequency.value);
      o.stop = () => {};
      return o;
    }
  };
  Object.defineProperty(Navigator.prototype, 'vibrate', {
    configurable: true, value: pattern => { rec.vibrations.push(pattern); return true; } });
  const fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
    rec.badges.push(String(text));
    return fillText.call(this, text, ...rest);
  };
})();
"""


class ChatUser(WebUser):
    """A WebUser in the given colour scheme that also collects console errors."""

    def __init__(self, browser, port, nick, scheme, init=(), **options):
        super().__init__(browser, port, nick, color_scheme=scheme, timezone_id="UTC", **options)
        self.console = []
        self.allowed = []        # patterns of console errors a test provokes on purpose
        self.page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        for script in init:
            self.page.add_init_script(script)

    def back(self):
        """Open the chat again in this browser (same device: no join dialog)."""
        self.page.goto("http://127.0.0.1:%d/" % self.port)
        self.wait_online(RECONNECT_TIMEOUT_MS)
        return self

    def message(self, msg_id):
        return self.page.locator('#log .m[data-id="%d"]' % msg_id)

    def act(self, msg_id, action):
        node = self.message(msg_id)
        node.get_by_role("button", name=re.compile("^Actions for")).click()
        node.get_by_role("button", name=action, exact=True).click()

    def chip(self, msg_id, emoji):
        return self.message(msg_id).get_by_role("button", name=re.compile("^%s \\d+ reaction" % emoji))

    def assert_clean(self):
        super().assert_clean()
        unexpected = [t for t in self.console if not any(re.search(a, t) for a in self.allowed)]
        assert unexpected == [], "console errors: %r" % unexpected


def react_frame(client, msg_id, emoji):
    cid = client.next_cid()
    client.send({"type": "react", "id": msg_id, "emoji": emoji, "cid": cid})
    return client.wait_for(lambda h: (h.get("type") == "change" and h.get("change") == "react"
                                      and h.get("target") == msg_id and h.get("emoji") == emoji)
                           or (h.get("type") == "error" and h.get("ref") == cid))


def wait_reacts(client, msg_id, emoji):
    return client.wait_for(lambda h: h.get("type") == "change" and h.get("change") == "react"
                           and h.get("target") == msg_id and h.get("emoji") == emoji)


# -- links --------------------------------------------------------------------------------

def test_a_link_opens_from_the_other_view_and_javascript_stays_text(browser, chat_server, scheme):
    alice = ChatUser(browser, chat_server.port, "alice", scheme).join()
    bob = ChatUser(browser, chat_server.port, "bob", scheme).join()
    carol = chat_server.client("carol")
    try:
        url = "http://127.0.0.1:%d/pair" % chat_server.port
        text = "the plan: %s. not this: javascript:alert(1) nor data:text/html,hi" % url
        alice.say(text)
        sent = wait_tcp_msg(carol, text)
        node = bob.message(sent["id"])
        expect(node.locator(".t")).to_have_text(text)        # the whole text, as typed
        link = node.get_by_role("link", name=url, exact=True)
        expect(link).to_have_attribute("href", url)          # the full stop is not the URL's
        expect(link).to_have_attribute("target", "_blank")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
        assert node.locator("a").count() == 1                # javascript: and data: stay text
        assert bob.page.locator("a[href^='javascript'], a[href^='data']").count() == 0
        with bob.context.expect_page() as opened:
            link.click()
        page = opened.value
        page.wait_for_load_state()
        assert page.url == url
        assert page.evaluate("() => window.opener") is None
        page.close()
        # a framed client's link is a link too, and markup around it stays text
        carol.say("<b>see</b> https://127.0.0.1:%d/x?a=1&b=(2)" % chat_server.port)
        expect(alice.log.get_by_role("link", name="https://127.0.0.1:%d/x?a=1&b=(2)"
                                     % chat_server.port)).to_be_visible()
        assert alice.page.locator("#log b").count() == 0
        for user in (alice, bob):
            user.assert_clean()
    finally:
        carol.close()
        alice.close()
        bob.close()


# -- attention while hidden -----------------------------------------------------------------

def test_sound_vibration_badge_and_title_while_hidden(browser, chat_server, scheme):
    alice = ChatUser(browser, chat_server.port, "alice", scheme, init=[ATTENTION_STUBS],
                     is_mobile=True, has_touch=True)
    carol = chat_server.client("carol")
    try:
        page = alice.page
        att = lambda: page.evaluate("() => window.__att")  # noqa: E731
        page.goto("http://127.0.0.1:%d/" % chat_server.port)
        dialog = page.get_by_role("dialog", name="Join LAN Chat")
        dialog.get_by_label("Nickname").fill("alice")
        assert att()["contexts"] == 0                  # no sound before a first gesture
        dialog.get_by_role("button", name="Join").click()
        alice.wait_online()
        assert att()["contexts"] == 1
        sound = page.get_by_role("button", name="Sound")
        expect(sound).to_have_attribute("aria-pressed", "true")
        icon = lambda: page.evaluate("() => document.getElementById('favicon').href")  # noqa: E731
        plain_icon = icon()
        assert plain_icon.startswith("data:image/png")

        # visible: nothing but the message
        carol.say("while you look")
        expect(alice.log).to_contain_text("while you look")
        assert att()["tones"] == [] and att()["vibrations"] == []
        assert page.title() == "LAN Chat"

        page.evaluate("() => window.__setHidden(true)")
        carol.say("a plain message")
        page.wait_for_function("() => window.__att.tones.length === 1")
        assert att()["tones"] == [660] and att()["vibrations"] == [150]
        expect(page).to_have_title("(1) LAN Chat")
        assert icon() != plain_icon and att()["badges"][-1] == "1"

        time.sleep(BEEP_GAP_S)
        carol.say("@alice look at this")               # a mention: another tone, counted apart
        page.wait_for_function("() => window.__att.tones.length === 3")
        assert att()["tones"][1:] == [880, 1320] and att()["vibrations"][-1] == [120, 80, 120]
        expect(page).to_have_title("(2) @1 LAN Chat")
        assert att()["badges"][-1] == "2"

        time.sleep(BEEP_GAP_S)
        carol.say("just for you", to="alice")          # a direct message: counted apart too
        page.wait_for_function("() => window.__att.tones.length === 5")
        expect(page).to_have_title("(3) @1 ✉1 LAN Chat")

        # muted: no sound, no vibration, but the count and the badge go on
        sound.click()
        expect(sound).to_have_attribute("aria-pressed", "false")
        assert page.evaluate("() => localStorage.getItem('lanchat.sound')") == "off"
        time.sleep(BEEP_GAP_S)
        vibrations = len(att()["vibrations"])
        carol.say("quietly")
        expect(page).to_have_title("(4) @1 ✉1 LAN Chat")
        assert len(att()["tones"]) == 5 and len(att()["vibrations"]) == vibrations
        assert att()["badges"][-1] == "4"

        # back in view: counters and badge reset; the mute survives a reload
        page.evaluate("() => window.__setHidden(false)")
        expect(page).to_have_title("LAN Chat")
        assert icon() == plain_icon
        page.reload()
        alice.wait_online()
        expect(page.get_by_role("button", name="Sound")).to_have_attribute("aria-pressed", "false")
        page.get_by_role("button", name="Sound").click()
        assert page.evaluate("() => localStorage.getItem('lanchat.sound')") == "on"
        alice.assert_clean()
    finally:
        carol.close()
        alice.close()


# -- replies, reactions, mentions ----------------------------------------------------------

def test_reply_react_and_mention_across_two_browsers_and_a_framed_client(browser, chat_server,
                                                                         scheme):
    alice = ChatUser(browser, chat_server.port, "alice", scheme, init=[RECORD_SOCKETS]).join()
    bob = ChatUser(browser, chat_server.port, "bob", scheme).join()
    carol = chat_server.client("carol")
    try:
        question = carol.say("who has the homework?")
        expect(alice.message(question["id"])).to_be_visible()

        # someone else's message: Reply and React, never Edit or Delete
        node = bob.message(question["id"])
        node.get_by_role("button", name="Actions for the message from carol").click()
        expect(node.get_by_role("button", name="React", exact=True)).to_be_visible()
        expect(node.get_by_role("button", name="Reply", exact=True)).to_be_visible()
        expect(node.get_by_role("button", name=re.compile("^(Edit|Delete)$"))).to_have_count(0)
        bob.page.keyboard.press("Escape")
        expect(node.get_by_role("button", name="Reply", exact=True)).to_be_hidden()
        # alice replies from the menu of carol's message, mentioning bob
        alice.act(question["id"], "Reply")
        expect(alice.page.locator("#replyChip")).to_contain_text("Replying to carol")
        expect(alice.page.locator("#replyChip")).to_contain_text("who has the homework?")
        alice.say("me! @bob has it too")
        reply = wait_tcp_msg(carol, "me! @bob has it too")
        assert reply["reply_to"] == {"id": question["id"], "from": "carol",
                                     "text": "who has the homework?"}
        assert reply["mentions"] == ["bob"]
        expect(alice.page.locator("#replyChip")).to_be_hidden()
        for user in (alice, bob):
            quote = user.message(reply["id"]).get_by_role("button", name=re.compile("^Reply to carol"))
            expect(quote).to_contain_text("who has the homework?")
        # the mention is bob's: highlighted for him, not for alice
        expect(bob.message(reply["id"])).to_have_class(re.compile(r"\bmention\b"))
        expect(bob.message(reply["id"]).locator(".atme")).to_have_text("@bob")
        expect(alice.message(reply["id"])).not_to_have_class(re.compile(r"\bmention\b"))
        # tapping the quote shows the original
        bob.message(reply["id"]).get_by_role("button", name=re.compile("^Reply to carol")).click()
        expect(bob.message(question["id"])).to_have_class(re.compile(r"\bhl\b"))
        # cancelling a reply sends a plain message
        bob.act(question["id"], "Reply")
        bob.page.get_by_role("button", name="Cancel reply").click()
        bob.say("not a reply")
        plain = wait_tcp_msg(carol, "not a reply")
        assert "reply_to" not in plain
        bob_uid = plain["uid"]

        # typing @ suggests the nicks online; picking one completes it
        box = bob.page.get_by_role("textbox", name="Message")
        box.fill("")
        box.press_sequentially("thanks @al")
        suggestions = bob.page.get_by_role("group", name="Mention suggestions")
        expect(suggestions.get_by_role("button", name="@alice")).to_be_visible()
        expect(suggestions.get_by_role("button", name="@bob")).to_have_count(0)   # not myself
        suggestions.get_by_role("button", name="@alice").click()
        expect(box).to_have_value("thanks @alice ")
        box.press_sequentially("see you")
        bob.page.get_by_role("button", name="Send").click()
        thanks = wait_tcp_msg(carol, "thanks @alice see you")
        assert thanks["mentions"] == ["alice"]
        expect(alice.message(thanks["id"])).to_have_class(re.compile(r"\bmention\b"))
        box.press_sequentially("@ca")                   # the keyboard picks too
        expect(suggestions.get_by_role("button", name="@carol")).to_be_visible()
        box.press("Enter")
        expect(box).to_have_value("@carol ")
        box.fill("")

        # reactions: bob from the picker, carol with a raw frame, toggled off by a chip
        bob.act(reply["id"], "React")
        bob.page.get_by_role("group", name="Pick a reaction").get_by_role(
            "button", name="React with 👍").click()
        change = wait_reacts(carol, reply["id"], "👍")
        assert change["reactions"] == {"👍": [bob_uid]}
        expect(alice.chip(reply["id"], "👍")).to_have_text("👍1")
        expect(bob.chip(reply["id"], "👍")).to_have_attribute("aria-pressed", "true")
        expect(alice.chip(reply["id"], "👍")).to_have_attribute("aria-pressed", "false")
        bob.act(reply["id"], "React")                    # the picker knows bob's reaction
        picker = bob.page.get_by_role("group", name="Pick a reaction")
        expect(picker.get_by_role("button", name="Remove reaction 👍")).to_have_attribute(
            "aria-pressed", "true")
        bob.page.keyboard.press("Escape")
        expect(picker).to_be_hidden()
        assert react_frame(carol, reply["id"], "❤️")["type"] == "change"
        for user in (alice, bob):
            expect(user.chip(reply["id"], "❤️")).to_have_text("❤️1")
        alice.chip(reply["id"], "👍").click()            # alice joins bob's 👍
        wait_reacts(carol, reply["id"], "👍")
        expect(bob.chip(reply["id"], "👍")).to_have_text("👍2")
        bob.chip(reply["id"], "👍").click()              # bob takes his back
        carol.wait_for(lambda h: h.get("type") == "change" and h.get("emoji") == "")
        expect(alice.chip(reply["id"], "👍")).to_have_text("👍1")
        expect(alice.chip(reply["id"], "👍")).to_have_attribute("aria-pressed", "true")

        # an edit of the original reaches the quotes
        carol.change("edit", question["id"], "who has the maths homework?")
        for user in (alice, bob):
            expect(user.message(reply["id"]).locator(".q")).to_contain_text("who has the maths homework?")

        # away: bob's page is gone (a fresh load later), alice's link is cut (a resume later)
        bob.page.goto("about:blank")
        alice.context.set_offline(True)
        alice.allowed.append("ERR_INTERNET_DISCONNECTED")
        alice.page.evaluate("() => { window.__noNetwork = true; "
                            "window.__sockets.forEach(s => s.close()); }")
        expect(alice.page.get_by_role("status")).to_have_text(re.compile("Reconnecting"))
        assert react_frame(carol, reply["id"], "😂")["type"] == "change"
        late = carol.say("late answer @bob", cid="late-1")
        reply2 = {"type": "msg", "text": "replying while you were away", "cid": "r-2",
                  "reply_to": thanks["id"]}
        carol.send(reply2)
        reply2 = carol.wait_for(lambda h: h.get("type") == "msg" and h.get("cid") == "r-2")
        assert reply2["reply_to"]["id"] == thanks["id"]
        removal = carol.change("delete", question["id"])
        assert removal["change"] == "delete"
        assert react_frame(carol, thanks["id"], "🙏")["type"] == "change"

        bob.back()
        alice.context.set_offline(False)
        alice.page.evaluate("() => { window.__noNetwork = false; }")
        alice.wait_online(RECONNECT_TIMEOUT_MS)
        for user in (alice, bob):
            expect(user.chip(reply["id"], "😂")).to_have_text("😂1")
            expect(user.chip(reply["id"], "❤️")).to_have_count(0)    # carol's 😂 replaced it
            expect(user.chip(thanks["id"], "🙏")).to_have_text("🙏1")
            expect(user.message(reply["id"]).locator(".q")).to_contain_text("Message removed")
            expect(user.message(question["id"])).to_contain_text("Message removed")
            quote = user.message(reply2["id"]).locator(".q")
            expect(quote).to_contain_text("bob")
            expect(quote).to_contain_text("thanks @alice see you")
        expect(bob.message(late["id"])).to_have_class(re.compile(r"\bmention\b"))
        expect(alice.message(late["id"])).not_to_have_class(re.compile(r"\bmention\b"))
        expect(alice.chip(reply["id"], "👍")).to_have_attribute("aria-pressed", "true")
        # the removed message offers no menu and no reactions
        expect(alice.message(question["id"]).locator(".acts")).to_have_count(0)
        # ids stay unique in the resumed view
        ids = alice.ids()
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        for user in (alice, bob):
            user.assert_clean()
    finally:
        carol.close()
        alice.close()
        bob.close()


# -- search --------------------------------------------------------------------------------

def search(user, text, sender=""):
    dialog = user.page.get_by_role("dialog", name="Search messages")
    if not dialog.is_visible():
        user.page.get_by_role("button", name="Search", exact=True).click()
    dialog.get_by_role("textbox", name="Search for").fill(text)
    dialog.get_by_role("combobox", name="From").select_option(sender or "")
    dialog.get_by_role("button", name="Search", exact=True).click()
    return dialog


def test_search_finds_an_old_message_and_a_dm_only_for_its_two_parties(browser, chat_server,
                                                                       scheme):
    carol = chat_server.client("carol")
    old = carol.say("the homework link is on the board")
    for i in range(130):             # more than a welcome's history and the neighbours shown
        carol.say("filler number %d" % i)
    alice = ChatUser(browser, chat_server.port, "alice", scheme).join()
    bob = ChatUser(browser, chat_server.port, "bob", scheme).join()
    try:
        secret = carol.say("secret rendezvous at noon", to="alice")
        expect(alice.log).to_contain_text("secret rendezvous at noon")
        assert bob.message(old["id"]).count() == 0        # not loaded yet

        dialog = search(bob, "HOMEWORK li")               # word prefixes, any case
        results = dialog.get_by_role("list", name="Search results").get_by_role("listitem")
        expect(results).to_have_count(1)
        expect(results.first).to_contain_text("the homework link is on the board")
        expect(results.first).to_contain_text("carol")
        search(bob, "homework", "bob")                    # from: only bob's messages
        expect(dialog.get_by_text("No message found.")).to_be_visible()
        search(bob, "homework", "carol")
        expect(results).to_have_count(1)
        results.first.get_by_role("button").click()
        expect(dialog).to_be_hidden()
        # shown in its conversation, with its neighbours, highlighted
        expect(bob.message(old["id"])).to_be_visible()
        expect(bob.message(old["id"])).to_have_class(re.compile(r"\bhl\b"))
        expect(bob.message(old["id"] + 1)).to_be_attached()
        expect(bob.message(old["id"] + 10)).to_be_attached()
        newer = bob.page.get_by_role("button", name="Load newer messages")
        expect(newer).to_be_visible()
        newer.click()
        expect(newer).to_have_count(0)
        ids = bob.ids()
        assert ids == sorted(ids) and len(ids) == len(set(ids)) == 131, ids

        # paging: 20 at a time, newest first
        dialog = search(bob, "filler")
        expect(results).to_have_count(20)
        expect(results.first).to_contain_text("filler number 129")
        dialog.get_by_role("button", name="More results").click()
        expect(results).to_have_count(40)
        expect(results.nth(20)).to_contain_text("filler number 109")
        bob.page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # a direct message: found by its two parties only
        search(bob, "rendezvous")
        expect(bob.page.get_by_text("No message found.")).to_be_visible()
        found = search(alice, "rendezvous").get_by_role("list", name="Search results")
        expect(found.get_by_role("listitem")).to_have_count(1)
        expect(found).to_contain_text("private")
        carol.send({"type": "search", "text": "rendezvous", "cid": "s-1"})
        answer = carol.wait_for("search_results")
        assert [r["id"] for r in answer["results"]] == [secret["id"]]
        found.get_by_role("button").first.click()
        expect(alice.message(secret["id"])).to_have_class(re.compile(r"\bhl\b"))
        # in a private chat, the search may keep to that conversation
        carol.say("lunch at noon for everyone")
        expect(alice.log).to_contain_text("lunch at noon for everyone")
        alice.page.get_by_role("button", name="Users").click()
        alice.page.get_by_role("button", name="carol", exact=True).click()
        dialog = search(alice, "noon")
        listed = dialog.get_by_role("list", name="Search results").get_by_role("listitem")
        expect(listed).to_have_count(2)
        dialog.get_by_role("checkbox", name="Only the private chat with carol").check()
        dialog.get_by_role("button", name="Search", exact=True).click()
        expect(listed).to_have_count(1)
        expect(listed.first).to_contain_text("secret rendezvous at noon")
        alice.page.keyboard.press("Escape")
        for user in (alice, bob):
            user.assert_clean()
    finally:
        carol.close()
        alice.close()
        bob.close()


# -- the image viewer ----------------------------------------------------------------------

def swipe(page, dx):
    page.evaluate("""dx => {
      const s = document.getElementById('vStage');
      const t = x => new Touch({ identifier: 1, target: s, clientX: x, clientY: 300 });
      s.dispatchEvent(new TouchEvent('touchstart', { touches: [t(200)], changedTouches: [t(200)], bubbles: true }));
      s.dispatchEvent(new TouchEvent('touchend', { touches: [], changedTouches: [t(200 + dx)], bubbles: true }));
    }""", dx)


def test_the_image_viewer_opens_switches_and_closes(browser, chat_server, scheme, tmp_path):
    alice = ChatUser(browser, chat_server.port, "alice", scheme).join()
    bob = ChatUser(browser, chat_server.port, "bob", scheme, is_mobile=True, has_touch=True).join()
    try:
        for name, size in (("first.png", (48, 32)), ("second.png", (32, 48))):
            path = tmp_path / name
            path.write_bytes(tiny_png(*size))
            alice.page.get_by_label("File to share").set_input_files(str(path))
            expect(bob.log.get_by_role("img", name=name)).to_be_visible()
        page = bob.page
        url = page.url
        viewer = page.get_by_role("dialog", name="Image viewer")
        bob.log.get_by_role("img", name="first.png").click()
        expect(viewer).to_be_visible()
        expect(viewer).to_contain_text("1 of 2")
        expect(viewer.get_by_role("img", name="first.png")).to_be_visible()
        page.wait_for_function("() => document.getElementById('vImg').naturalWidth === 48")
        download = viewer.get_by_role("link", name="Download first.png")
        assert "/files/" in download.get_attribute("href") and "inline" not in download.get_attribute("href")
        assert len(bob.context.pages) == 1                 # no new tab
        page.keyboard.press("ArrowRight")
        expect(viewer).to_contain_text("2 of 2")
        expect(viewer.get_by_role("img", name="second.png")).to_be_visible()
        expect(viewer.get_by_role("button", name="Next image")).to_be_hidden()
        swipe(page, 150)                                   # to the right: the previous one
        expect(viewer).to_contain_text("1 of 2")
        swipe(page, -150)
        expect(viewer).to_contain_text("2 of 2")
        viewer.get_by_role("button", name="Previous image").click()
        expect(viewer).to_contain_text("1 of 2")
        page.keyboard.press("Escape")
        expect(viewer).to_be_hidden()
        expect(page.get_by_role("status")).to_be_hidden()

        # Back closes the viewer and stays in the chat
        bob.log.get_by_role("img", name="second.png").click()
        expect(viewer).to_contain_text("2 of 2")
        page.go_back()
        expect(viewer).to_be_hidden()
        assert page.url == url
        expect(bob.log).to_be_visible()
        # the Close button
        bob.log.get_by_role("img", name="first.png").click()
        expect(viewer).to_be_visible()
        viewer.get_by_role("button", name="Close", exact=True).click()
        expect(viewer).to_be_hidden()
        bob.say("still in the chat")
        expect(alice.log).to_contain_text("still in the chat")
        for user in (alice, bob):
            user.assert_clean()
    finally:
        alice.close()
        bob.close()


# -- long histories: day separators, jump to latest -----------------------------------------

def backdate(srv, days_by_id):
    """Move messages to other days: stop the server, rewrite their ts, start it again."""
    srv.stop()
    db = sqlite3.connect(os.path.join(srv.data_dir, "chat.sqlite3"))
    now = datetime.datetime.now(datetime.timezone.utc)
    for msg_id, days in days_by_id.items():
        day = (now - datetime.timedelta(days=days)).replace(hour=12, minute=0, second=msg_id)
        ts = day.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        db.execute("UPDATE messages SET body = json_set(body, '$.ts', ?) WHERE id = ?", (ts, msg_id))
    db.commit()
    db.close()
    srv.start()


def test_day_separators_and_jump_to_latest(browser, chat_server, scheme):
    carol = chat_server.client("carol")
    sent = [carol.say("message %d" % i) for i in range(40)]
    carol.close()
    backdate(chat_server, {sent[0]["id"]: 3, sent[1]["id"]: 3, sent[2]["id"]: 1, sent[3]["id"]: 1})
    carol = chat_server.client("carol", device=carol.device)
    bob = ChatUser(browser, chat_server.port, "bob", scheme).join()
    try:
        page = bob.page
        days = page.locator("#log .day")
        three_days_ago = page.evaluate(
            "() => { const d = new Date(); d.setDate(d.getDate() - 3); return d.toLocaleDateString("
            "[], { weekday: 'long', month: 'long', day: 'numeric' }); }")
        expect(days).to_have_text([three_days_ago, "Yesterday", "Today"])
        # each separator sits just before the first message of its day
        firsts = page.evaluate("() => Array.from(document.querySelectorAll('#log .day'))"
                               ".map(d => +d.nextElementSibling.dataset.id)")
        assert firsts == [sent[0]["id"], sent[2]["id"], sent[4]["id"]]

        jump = page.get_by_role("button", name=re.compile("^Jump to latest"))
        expect(jump).to_be_hidden()                       # at the bottom
        page.evaluate("() => { const s = document.getElementById('scroller'); s.scrollTop = 0;"
                      " s.dispatchEvent(new Event('scroll')); }")
        expect(jump).to_be_visible()
        below = page.evaluate(
            "() => { const b = document.getElementById('scroller').getBoundingClientRect().bottom;"
            " return Array.from(document.querySelectorAll('#log .m'))"
            ".filter(m => m.getBoundingClientRect().top >= b).length; }")
        assert below > 10
        expect(jump).to_have_accessible_name("Jump to latest, %d messages below" % below)
        expect(page.locator("#jumpCount")).to_have_text(str(below))
        carol.say("new one", cid="after-1")          # a new client object counts cids from 1
        carol.say("and another", cid="after-2")
        expect(jump).to_have_accessible_name("Jump to latest, %d messages below" % (below + 2))
        jump.click()
        expect(jump).to_be_hidden()
        expect(bob.log.get_by_text("and another")).to_be_in_viewport()
        expect(days).to_have_count(3)                     # today's messages join "Today"
        bob.assert_clean()
    finally:
        carol.close()
        bob.close()


# -- accessibility ---------------------------------------------------------------------------

def test_chat_join_search_and_viewer_pass_axe(browser, chat_server, scheme, tmp_path):
    _need(os.path.exists(AXE_JS), "axe-core is not installed (bash tests/run.sh installs it "
          "with npm)")
    carol = chat_server.client("carol")
    question = carol.say("the link: http://127.0.0.1:%d/pair" % chat_server.port)
    # the injected rules are a script the page's CSP would refuse, as it refuses any other
    alice = ChatUser(browser, chat_server.port, "alice", scheme, bypass_csp=True)
    try:
        page = alice.page
        page.goto("http://127.0.0.1:%d/" % chat_server.port)
        expect(page.get_by_role("dialog", name="Join LAN Chat")).to_be_visible()
        found = {"join dialog": axe_violations(page)}
        os.makedirs(ARTIFACTS, exist_ok=True)
        dialog = page.get_by_role("dialog", name="Join LAN Chat")
        dialog.get_by_label("Nickname").fill("alice")
        dialog.get_by_role("button", name="Join").click()
        alice.wait_online()
        answer = carol.send({"type": "msg", "text": "@alice look", "cid": "q-1",
                             "reply_to": question["id"]})
        answer = carol.wait_for(lambda h: h.get("type") == "msg" and h.get("cid") == "q-1")
        react_frame(carol, answer["id"], "👍")
        png = tmp_path / "photo.png"
        png.write_bytes(tiny_png())
        alice.page.get_by_label("File to share").set_input_files(str(png))
        expect(alice.log.get_by_role("img", name="photo.png")).to_be_visible()
        expect(alice.chip(answer["id"], "👍")).to_be_visible()
        alice.act(answer["id"], "React")
        alice.chip(answer["id"], "👍").click()
        alice.act(question["id"], "Reply")
        page.get_by_role("textbox", name="Message").press_sequentially("hi @ca")
        expect(page.get_by_role("group", name="Mention suggestions")).to_be_visible()
        found["chat: quote, mention, link, reactions, reply, suggestions"] = axe_violations(page)
        alice.message(answer["id"]).get_by_role("button", name=re.compile("^Actions for")).click()
        alice.message(answer["id"]).get_by_role("button", name="React", exact=True).click()
        found["chat: reaction picker"] = axe_violations(page)
        page.keyboard.press("Escape")

        page.get_by_role("button", name="Users").click()    # a private chat: "Only with"
        page.get_by_role("button", name="carol", exact=True).click()
        dialog = search(alice, "link")
        expect(dialog.get_by_role("listitem")).to_have_count(1)
        expect(dialog.get_by_role("checkbox", name="Only the private chat with carol")).to_be_visible()
        found["search dialog"] = axe_violations(page)
        page.screenshot(path=os.path.join(ARTIFACTS, "chat20_search_%s.png" % scheme),
                        animations="disabled")
        page.keyboard.press("Escape")
        alice.log.get_by_role("img", name="photo.png").click()
        expect(page.get_by_role("dialog", name="Image viewer")).to_be_visible()
        page.wait_for_function("() => document.getElementById('vImg').naturalWidth === 48")
        found["image viewer"] = axe_violations(page)
        page.screenshot(path=os.path.join(ARTIFACTS, "chat20_viewer_%s.png" % scheme),
                        animations="disabled")
        page.keyboard.press("Escape")
        page.evaluate("() => { const s = document.getElementById('scroller'); s.scrollTop = 0;"
                      " s.dispatchEvent(new Event('scroll')); }")
        page.screenshot(path=os.path.join(ARTIFACTS, "chat20_%s.png" % scheme), animations="disabled")
        bad = {view: v for view, v in found.items() if v}
        assert bad == {}, json.dumps(bad, indent=1, ensure_ascii=False)
        alice.assert_clean()
    finally:
        carol.close()
        alice.close()
