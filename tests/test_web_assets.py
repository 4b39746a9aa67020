"""The browser pages: client_web/ is the source, chatserver.py's generated region the build.

Regenerating changes nothing (the committed chatserver.py is what build/embed_web.py
writes), --check catches a stale build and says what differs, the generator refuses what it
cannot embed safely, and every inline <script> of every served page parses (`node --check`,
Debian's `nodejs`: skipped when missing, a failure with CI=true).
"""
import ast
import html.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

import chatserver as cs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB = os.path.join(ROOT, "client_web")
EMBED = os.path.join(ROOT, "build", "embed_web.py")
IN_CI = os.environ.get("CI", "").lower() == "true"
PAIR_URL = "http://192.168.1.23:5555/#k=Zq3vK9dX2mPw7Lr8sT4yB6"


def load_embed_web():
    spec = importlib.util.spec_from_file_location("embed_web", EMBED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


embed_web = load_embed_web()


def run_embed(*args):
    return subprocess.run([sys.executable, EMBED, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def repo_copy(tmp_path):
    """chatserver.py and client_web/ copied, to break and rebuild without touching the repo."""
    shutil.copy(os.path.join(ROOT, "chatserver.py"), tmp_path / "chatserver.py")
    shutil.copytree(WEB, tmp_path / "client_web")
    return tmp_path


def edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def import_copy(path):
    spec = importlib.util.spec_from_file_location("chatserver_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the committed file is the build -----------------------------------------------------

def test_regenerating_changes_nothing():
    result = run_embed("--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_served_pages_are_the_built_client_web_files():
    assert cs.WEB_CLIENT_HTML == embed_web.build_page(WEB, embed_web.PAGES[0]).encode("utf-8")
    assert cs._PAIR_PAGE == embed_web.build_page(WEB, embed_web.PAGES[1])
    assert cs.ADMIN_PAGE_HTML == embed_web.build_page(WEB, embed_web.PAGES[2]).encode("utf-8")
    assert [(p.name, p.source) for p in embed_web.PAGES] == [
        ("WEB_CLIENT_HTML", "chat.html"), ("_PAIR_PAGE", "pair.html"),
        ("ADMIN_PAGE_HTML", "admin.html"), ("_EXPORT_PAGE", "export.html")]
    assert isinstance(cs.WEB_CLIENT_HTML, bytes) and isinstance(cs._PAIR_PAGE, str)


def test_the_region_sits_just_before_the_main_guard_which_ends_the_file():
    with open(os.path.join(ROOT, "chatserver.py"), encoding="utf-8") as f:
        text = f.read()
    assert text.count(embed_web.BEGIN) == text.count(embed_web.END) == 1
    assert text.endswith("\n" + embed_web.END + '\n\n\nif __name__ == "__main__":\n'
                         "    sys.exit(main())\n")
    region = text[text.index(embed_web.BEGIN):]
    assert "<!doctype html>" in region and "<!doctype html>" not in text[:text.index(embed_web.BEGIN)]


def test_the_pages_inline_their_css_and_js_and_fetch_nothing_else():
    page = cs.WEB_CLIENT_HTML.decode("utf-8")
    with open(os.path.join(WEB, "chat.css"), encoding="utf-8") as f:
        assert "<style>\n" + f.read() + "</style>" in page
    with open(os.path.join(WEB, "chat.js"), encoding="utf-8") as f:
        assert "<script>\n" + f.read() + "</script>" in page
    admin = cs.ADMIN_PAGE_HTML.decode("utf-8")
    with open(os.path.join(WEB, "admin.js"), encoding="utf-8") as f:
        assert "<script>\n" + f.read() + "</script>" in admin
    for served in (page, pair_page(), admin):
        assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*stylesheet", served)


def test_check_reports_a_stale_build_and_regenerating_fixes_it(repo_copy):
    edit(repo_copy / "client_web" / "chat.css", "  min-height: 58px;\n", "  min-height: 60px;\n")
    stale = run_embed("--check", "--root", str(repo_copy))
    assert stale.returncode == 1
    assert "does not match client_web/" in stale.stderr
    assert "-  min-height: 58px;" in stale.stderr and "+  min-height: 60px;" in stale.stderr

    wrote = run_embed("--root", str(repo_copy))
    assert wrote.returncode == 0, wrote.stderr
    assert run_embed("--check", "--root", str(repo_copy)).returncode == 0
    rebuilt = import_copy(repo_copy / "chatserver.py")
    assert b"  min-height: 60px;\n" in rebuilt.WEB_CLIENT_HTML
    # only the region changed: the rest of chatserver.py is byte for byte the same
    before = open(os.path.join(ROOT, "chatserver.py"), encoding="utf-8").read()
    after = (repo_copy / "chatserver.py").read_text(encoding="utf-8")
    assert after.replace("min-height: 60px;", "min-height: 58px;") == before


def test_a_missing_region_is_created_before_the_guard(repo_copy):
    target = repo_copy / "chatserver.py"
    text = target.read_text(encoding="utf-8")
    start, end = text.index(embed_web.BEGIN), text.index(embed_web.END) + len(embed_web.END)
    target.write_text(text[:start] + text[end:], encoding="utf-8")
    assert run_embed("--check", "--root", str(repo_copy)).returncode == 1
    assert run_embed("--root", str(repo_copy)).returncode == 0
    assert target.read_text(encoding="utf-8") == text


# -- what the generator refuses ------------------------------------------------------------

@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "client_web" / "chat.js").unlink(),
     "cannot read client_web/chat.js"),
    (lambda root: edit(root / "client_web" / "chat.js", "'use strict';", "'use strict'; // </script>"),
     "client_web/chat.js contains '</script', which would end the <script> element"),
    (lambda root: edit(root / "client_web" / "chat.html", '<script src="chat.js"></script>',
                       ' <script src="chat.js"></script>'),
     "is not inlined"),
    (lambda root: edit(root / "client_web" / "chat.html", '<script src="chat.js"></script>',
                       '<script src="../chatserver.py"></script>'),
     "only files of client_web/ are inlined"),
    (lambda root: (root / "client_web" / "pair.html").write_bytes(b"<p>caf\xe9</p>\n"),
     "client_web/pair.html is not UTF-8"),
    (lambda root: (root / "client_web" / "pair.html").write_bytes(b"<p>x</p>\r\n"),
     "LF line ends"),
    (lambda root: edit(root / "chatserver.py", '    sys.exit(main())\n',
                       '    sys.exit(main())\nprint("late")\n'),
     "must be the last lines"),
    (lambda root: edit(root / "chatserver.py", "\n\n\nif __name__", '\nX = 1\n\nif __name__'),
     "must stay just before the guard"),
], ids=["missing_script", "closing_tag_in_script", "indented_reference", "reference_outside",
        "not_utf8", "crlf", "code_after_guard", "code_after_region"])
def test_the_generator_refuses_what_it_cannot_embed(repo_copy, breakage, message):
    breakage(repo_copy)
    before = (repo_copy / "chatserver.py").read_bytes()
    for args in (("--check",), ()):
        result = run_embed(*args, "--root", str(repo_copy))
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert (repo_copy / "chatserver.py").read_bytes() == before      # nothing written


@pytest.mark.parametrize("text", ['plain', 'ends with a quote "', 'ends with a backslash \\',
                                  'has """ inside', "\\u2026 and \\n stay as written\n"])
def test_python_literal_evaluates_to_the_text(text):
    assert ast.literal_eval(embed_web.python_literal(text)) == text


# -- the sources are readable ----------------------------------------------------------

def source_files():
    return sorted(name for name in os.listdir(WEB) if name.endswith((".html", ".css", ".js")))


def stylesheets():
    """(file name, CSS text) of every .css file and every <style> element in client_web/."""
    for name in source_files():
        with open(os.path.join(WEB, name), encoding="utf-8") as f:
            text = f.read()
        if name.endswith(".css"):
            yield name, text
        for style in re.findall(r"<style>(.*?)</style>", text, re.S):
            yield name, style


def test_css_has_one_declaration_per_line():
    declarations = 0
    for name, css in stylesheets():
        for line in css.splitlines():
            assert line.count(";") <= 1 and not ("{" in line and ";" in line), \
                "%s: more than one declaration on a line: %s" % (name, line)
            declarations += line.count(";")
    assert {name for name, _ in stylesheets()} == {"chat.css", "pair.html", "admin.css",
                                                    "export.html"}
    assert declarations > 500


def test_sources_use_real_characters_not_escapes():
    for name in source_files():
        with open(os.path.join(WEB, name), encoding="utf-8") as f:
            text = f.read()
        assert not re.search(r"\\u[0-9a-fA-F]{4}|&(hellip|times|mdash|middot);", text), name
    with open(os.path.join(WEB, "chat.js"), encoding="utf-8") as f:
        assert "'Reconnecting…'" in f.read()


# -- the pairing page template ------------------------------------------------------------

def pair_page():
    svg = cs.qr_render_svg(cs.qr_encode(PAIR_URL, cs.PAIRING_QR_EC))
    return cs.pair_page_html(PAIR_URL, svg).decode("utf-8")


def test_pair_template_markers_are_all_filled_and_css_braces_stay_single():
    assert set(re.findall(r"\{\{(\w+)\}\}", cs._PAIR_PAGE)) == {"svg", "url", "firewall",
                                                               "room"}
    page = pair_page()
    assert "{{" not in page and "}}" not in page
    named = cs.pair_page_html("http://x/#k=t", "<svg></svg>",
                              {"name": "Class <4B>", "topic": "Fractions & more"}).decode()
    assert '<p class="room"><strong>Class &lt;4B&gt;</strong>Fractions &amp; more</p>' in named
    assert ":root {\n  --bg: #f4f5f7;" in page
    assert "right-click %s &gt; Run" % cs.FIREWALL_SCRIPT in page


def test_fill_markers_is_one_pass_and_refuses_an_unknown_marker():
    assert cs.fill_markers("{{a}}-{{b}}", {"a": "{{b}}", "b": "x"}) == "{{b}}-x"
    assert cs.fill_markers("a { color: red }", {}) == "a { color: red }"
    with pytest.raises(KeyError):
        cs.fill_markers("{{nope}}", {"a": "1"})


# -- every inline script parses ---------------------------------------------------------

class ScriptCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.scripts, self._open = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._open = []

    def handle_data(self, data):
        if self._open is not None:
            self._open.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._open is not None:
            self.scripts.append("".join(self._open))
            self._open = None


def inline_scripts(page):
    collector = ScriptCollector()
    collector.feed(page)
    collector.close()
    return collector.scripts


def served_pages():
    return {"GET /": cs.WEB_CLIENT_HTML.decode("utf-8"), "GET /pair": pair_page(),
            "GET /admin": cs.ADMIN_PAGE_HTML.decode("utf-8")}


@pytest.fixture(scope="module")
def node():
    path = shutil.which("node") or shutil.which("nodejs")
    if path is None:
        reason = "node is not installed (apt-get install -y nodejs): JavaScript syntax not checked"
        if IN_CI:
            pytest.fail(reason + " (CI=true: this test must run)")
        pytest.skip(reason)
    return path


def node_check(node, source, tmp_path, name="script.js"):
    path = tmp_path / name
    path.write_text(source, encoding="utf-8")
    return subprocess.run([node, "--check", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_every_inline_script_of_every_page_passes_node_check(node, tmp_path):
    checked = 0
    for page_name, page in served_pages().items():
        for i, script in enumerate(inline_scripts(page)):
            result = node_check(node, script, tmp_path, "page%d-%d.js" % (checked, i))
            assert result.returncode == 0, "%s, script %d:\n%s" % (page_name, i, result.stderr)
            checked += 1
    assert checked >= 1                 # the chat client's script at least
    assert inline_scripts(served_pages()["GET /"])[0].startswith("\n(function () {")


def test_node_check_fails_on_a_syntax_error(node, tmp_path):
    """Negative control: the check above can fail. The chat script with one brace missing."""
    script = inline_scripts(cs.WEB_CLIENT_HTML.decode("utf-8"))[0]
    broken = script.replace("function touch() {", "function touch() ", 1)
    assert broken != script
    result = node_check(node, broken, tmp_path)
    assert result.returncode != 0
    assert "SyntaxError" in result.stderr


# -- timings: the page's defaults are the server's --------------------------------------

def test_the_pages_default_timings_are_the_servers_defaults():
    with open(os.path.join(WEB, "chat.js"), encoding="utf-8") as f:
        found = re.search(r"var PING_AFTER_S = (\d+), IDLE_TIMEOUT_S = (\d+);", f.read())
    assert found, "chat.js no longer declares its default liveness timings"
    assert (float(found.group(1)), float(found.group(2))) == (cs.PING_AFTER, cs.IDLE_TIMEOUT)
