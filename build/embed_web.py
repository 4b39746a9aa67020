"""Write the browser pages of client_web/ into chatserver.py, which stays one file to download.

    python3 build/embed_web.py           # after editing anything in client_web/
    python3 build/embed_web.py --check   # exit 1, showing the difference, if chatserver.py
                                         # is not what this script would write

The pages become Python string literals in ONE marked region of chatserver.py, just before
its final `if __name__ == "__main__":` guard (large assets near the bottom, so they never
bury the logic). Nothing outside the region changes, except that the region is created there
if it is missing. The committed chatserver.py is the build output: tests/test_web_assets.py
runs --check, so an edit to client_web/ without regenerating fails the tests.

A page may pull in a stylesheet or a script of client_web/ with a line of its own that is
exactly `<link rel="stylesheet" href="NAME.css">` or `<script src="NAME.js"></script>`: the
line is replaced by `<style>` or `<script>` holding the file, so the served page needs no
other request (LANs are often offline) and client_web/chat.html still opens from the disk
with its styles. Standard library only.
"""
import argparse
import ast
import collections
import difflib
import os
import re
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "chatserver.py"
SOURCE_DIR = "client_web"

BEGIN = "# BEGIN GENERATED client_web/ (edit client_web/, then run python3 build/embed_web.py)"
END = "# END GENERATED client_web/"
GUARD = 'if __name__ == "__main__":'
BANNER_WIDTH = 79                 # chatserver.py's section banners
COMMENT_WIDTH = 91                # the width of chatserver.py's comments
DIFF_LINES_SHOWN = 60             # --check prints at most this much of the difference

# One row per page: the constant chatserver.py uses, its source, the Python type the code
# expects (bytes are served as they are; a str template is filled first), and a comment.
Page = collections.namedtuple("Page", "name source kind about")
PAGES = (
    Page("WEB_CLIENT_HTML", "chat.html", bytes,
         "the zero-install chat client served at GET /, with chat.css and chat.js inlined: "
         "mobile-first, no external resources, every piece of user data rendered as text; its "
         "liveness timers follow welcome.limits (ping_after, idle_timeout)."),
    Page("_PAIR_PAGE", "pair.html", str,
         "the template of GET /pair (shown on the PC itself only); pair_page_html() replaces "
         "its {{svg}}, {{url}}, {{room}} and {{firewall}} markers. No script, no external "
         "resource."),
    Page("ADMIN_PAGE_HTML", "admin.html", bytes,
         "the organiser's page served at GET /admin (on the PC itself only), with admin.css "
         "and admin.js inlined: it polls /admin/api/state and posts the operator's requests; "
         "the key comes with the page as an HttpOnly cookie, never in the page."),
    Page("_EXPORT_PAGE", "export.html", str,
         "the template of the readable history export (GET /admin/export.html and the zip's "
         "history.html); OperatorApi.export_html() fills {{title}}, {{topic}}, {{exported}} "
         "and {{rows}}, all escaped. No script."),
)

INLINE_STYLESHEET = re.compile(r'^<link rel="stylesheet" href="([^"]*)">$', re.M)
INLINE_SCRIPT = re.compile(r'^<script src="([^"]*)"></script>$', re.M)
LOCAL_NAME = re.compile(r"[A-Za-z0-9_-]+\.(css|js)")
# What is left after inlining must not fetch anything from the server (it would 404).
LEFTOVER_REFERENCE = re.compile(r'<link\b[^>]*\brel="?stylesheet|<script\b[^>]*\bsrc=', re.I)


class EmbedError(Exception):
    """An asset or chatserver.py that this script refuses to combine; the message says why."""


# -- reading client_web/ --------------------------------------------------------------

def read_asset(source_dir, name):
    path = os.path.join(source_dir, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise EmbedError("cannot read %s/%s: %s" % (SOURCE_DIR, name, exc.strerror)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EmbedError("%s/%s is not UTF-8 (byte %d)" % (SOURCE_DIR, name, exc.start)) from None
    if text.startswith("\ufeff") or "\r" in text:
        raise EmbedError("%s/%s: save it as UTF-8 without BOM, with LF line ends"
                         % (SOURCE_DIR, name))
    if not text.endswith("\n"):
        raise EmbedError("%s/%s must end with a newline" % (SOURCE_DIR, name))
    return text


def build_page(source_dir, page):
    """The page's text with its local stylesheets and scripts inlined."""
    text = read_asset(source_dir, page.source)

    def inline(tag):
        def replace(match):
            name = match.group(1)
            if not LOCAL_NAME.fullmatch(name):
                raise EmbedError("%s: only files of %s/ are inlined, not %r"
                                 % (page.source, SOURCE_DIR, name))
            body = read_asset(source_dir, name)
            # HTML ends a <script> or <style> element at the first "</script" or "</style",
            # wherever it is, so such text inside the file would cut the page short.
            if ("</" + tag) in body.lower():
                raise EmbedError("%s/%s contains '</%s', which would end the <%s> element"
                                 % (SOURCE_DIR, name, tag, tag))
            return "<%s>\n%s</%s>" % (tag, body, tag)
        return replace

    text = INLINE_STYLESHEET.sub(inline("style"), text)
    text = INLINE_SCRIPT.sub(inline("script"), text)
    leftover = LEFTOVER_REFERENCE.search(text)
    if leftover:
        raise EmbedError("%s: %r is not inlined: put `<link rel=\"stylesheet\" href=\"NAME.css\">`"
                         " or `<script src=\"NAME.js\"></script>` alone on its line"
                         % (page.source, leftover.group(0)))
    return text


# -- writing Python ----------------------------------------------------------------------

def python_literal(text):
    """A triple-quoted literal that evaluates to text: raw when it can be (the region then
    reads like the asset), escaped otherwise."""
    candidates = ['r"""%s"""' % text,
                  '"""%s"""' % text.replace("\\", "\\\\").replace('"', '\\"')]
    for literal in candidates:
        try:
            if ast.literal_eval(literal) == text:
                return literal
        except (SyntaxError, ValueError):
            pass
    raise EmbedError("no Python literal for this text")      # cannot happen: escaped works


def banner(title):
    rule = "#" * BANNER_WIDTH
    head = "# %s " % title
    return "%s\n%s\n%s" % (rule, head + "#" * (BANNER_WIDTH - len(head)), rule)


def comment(text):
    return "\n".join("# " + line for line in textwrap.wrap(text, COMMENT_WIDTH - 2))


def render_region(source_dir):
    parts = [BEGIN, banner("Web pages, generated from client_web/"), ""]
    for page in PAGES:
        text = build_page(source_dir, page)
        literal = python_literal(text)
        if page.kind is bytes:
            literal += '.encode("utf-8")'
        parts += [comment("client_web/%s: %s" % (page.source, page.about)),
                  "%s = %s" % (page.name, literal), ""]
    parts.append(END)
    return "\n".join(parts) + "\n"


# -- placing the region in chatserver.py --------------------------------------------------

def split_target(source):
    """(code before the region, code from the guard on) of chatserver.py's text."""
    lines = source.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    guards = [i for i, line in enumerate(lines) if line.rstrip("\n") == GUARD]
    if len(guards) != 1:
        raise EmbedError("%s needs exactly one line %r (found %d)" % (TARGET, GUARD, len(guards)))
    guard = guards[0]
    if any(line.strip() and not line[0].isspace() for line in lines[guard + 1:]):
        raise EmbedError("%s: the %r block must be the last lines of the file" % (TARGET, GUARD))
    if not starts and not ends:
        head_end = tail_start = guard          # first run: the region goes before the guard
    elif len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0] < guard:
        head_end, tail_start = starts[0], ends[0] + 1
        if any(line.strip() for line in lines[tail_start:guard]):
            raise EmbedError("%s: code between %r and the %r guard; the generated region must "
                             "stay just before the guard" % (TARGET, END, GUARD))
    else:
        raise EmbedError("%s: expected one %r line, then one %r line, before the %r guard"
                         % (TARGET, BEGIN, END, GUARD))
    return "".join(lines[:head_end]), "".join(lines[guard:])


def generate(source, source_dir):
    head, tail = split_target(source)
    return head.rstrip("\n") + "\n\n\n" + render_region(source_dir) + "\n\n" + tail


def describe_difference(current, wanted):
    diff = list(difflib.unified_diff(current.splitlines(), wanted.splitlines(),
                                     "%s (committed)" % TARGET, "%s (from %s/)" % (TARGET, SOURCE_DIR),
                                     lineterm=""))
    shown = diff[:DIFF_LINES_SHOWN]
    if len(diff) > len(shown):
        shown.append("... %d more diff lines" % (len(diff) - len(shown)))
    return "\n".join(shown)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if chatserver.py differs from the build")
    parser.add_argument("--root", default=ROOT,
                        help="the repository holding chatserver.py and client_web/ (default: %(default)s)")
    args = parser.parse_args(argv)
    target = os.path.join(args.root, TARGET)
    try:
        with open(target, encoding="utf-8", newline="") as f:
            current = f.read()
        wanted = generate(current, os.path.join(args.root, SOURCE_DIR))
    except (OSError, EmbedError) as exc:
        print("embed_web: %s" % exc, file=sys.stderr)
        return 2
    if current == wanted:
        print("embed_web: %s is up to date with %s/" % (TARGET, SOURCE_DIR))
        return 0
    if args.check:
        print("embed_web: %s does not match %s/; run python3 build/embed_web.py\n%s"
              % (TARGET, SOURCE_DIR, describe_difference(current, wanted)), file=sys.stderr)
        return 1
    with open(target, "w", encoding="utf-8", newline="") as f:
        f.write(wanted)
    print("embed_web: wrote the %s/ region of %s" % (SOURCE_DIR, TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())
