"""The Windows package: build helpers (fast) and the real executables (marker slow_build).

Fast tests check the icon, version resource, module excludes, release zip, scripts' syntax
and the release workflow. The slow_build tests build (or reuse from build/cache/)
chatserver.exe under Wine and the Linux one-file binary, then drive each over TCP on
127.0.0.1: two clients chat, a file goes up and down, the server is stopped through its
clean path and restarted, and history survives.

Run only the fast part:  pytest tests/test_build.py -m "not slow_build"
A cold cache downloads ~60 MB (Windows CPython, PyInstaller wheels, apt wine); warm, the
slow part takes well under a minute. Without wine (and not root to install it) or without
PyPI and an empty cache, the slow tests skip -- unless CI=true, where they fail.
"""
import fnmatch
import glob
import hashlib
import importlib.util
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib

import pytest
import tree_sitter
import tree_sitter_powershell

from chatclient import ChatClient, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
CACHE = os.path.join(BUILD, "cache")
SERVER = os.path.join(ROOT, "chatserver.py")
WINDOWS_EXE = os.path.join(BUILD, "out", "windows", "chatserver.exe")
LINUX_BINARY = os.path.join(BUILD, "out", "linux", "chatserver")
WINEPREFIX = os.path.join(CACHE, "wineprefix")
IN_CI = os.environ.get("CI", "").lower() == "true"

BUILD_TIMEOUT = 1800          # seconds; a cold cache downloads ~60 MB
START_TIMEOUT = 90            # seconds until the port accepts (Wine may update its prefix)
STOP_TIMEOUT = 20             # seconds for a clean stop
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Output of a failed build that means "could not download", not "the build is broken".
OFFLINE_MARKERS = ("NewConnectionError", "Temporary failure in name resolution",
                   "Network is unreachable", "Could not fetch URL", "ProxyError",
                   "No matching distribution found", "Failed to fetch", "Could not resolve")


def load_build_module(name):
    spec = importlib.util.spec_from_file_location("build_" + name,
                                                  os.path.join(BUILD, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_icon = load_build_module("make_icon")
version_info = load_build_module("version_info")
excludes = load_build_module("excludes")
make_release_zip = load_build_module("make_release_zip")


def server_version():
    return version_info.read_module_string(SERVER, "__version__")


# ==========================================================================================
# Icon
# ==========================================================================================

def read_png(data):
    """Validate a PNG (signature, chunk CRCs, IHDR, IDAT size); return (w, h, rows of RGBA)."""
    assert data.startswith(PNG_SIGNATURE)
    pos, chunks = len(PNG_SIGNATURE), []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 6, 0)          # 8-bit RGBA, not interlaced
    raw = zlib.decompress(chunks[1][1])
    stride = 1 + 4 * width
    assert len(raw) == height * stride
    assert all(raw[r * stride] == 0 for r in range(height))  # filter "None" on every row
    return width, height, [raw[r * stride + 1:(r + 1) * stride] for r in range(height)]


def read_ico(data):
    """[(size, png bytes)] from an ICO file, checking the directory."""
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind) == (0, 1)
    images = []
    for i in range(count):
        w, h, colours, _, planes, bits, size, offset = struct.unpack(
            "<BBBBHHII", data[6 + 16 * i:22 + 16 * i])
        assert (w, colours, planes, bits) == (h, 0, 1, 32)
        images.append((w or 256, data[offset:offset + size]))
    return images


def pixel(rows, x, y):
    return tuple(rows[y][4 * x:4 * x + 4])


def test_icon_holds_every_size_as_valid_png():
    images = read_ico(make_icon.build_icon())
    assert [size for size, _ in images] == list(make_icon.ICON_SIZES)
    for size, png in images:
        assert read_png(png)[:2] == (size, size)


def test_icon_draws_a_blue_bubble_with_white_dots():
    size = 64
    _, _, rows = read_png(make_icon.encode_png(size, make_icon.render_rgba(size)))
    blue_opaque = make_icon.BUBBLE_RGB + (255,)
    white_opaque = make_icon.DOT_RGB + (255,)
    assert pixel(rows, 0, 0)[3] == 0                        # transparent corner
    assert pixel(rows, size - 1, size - 1)[3] == 0
    assert pixel(rows, size // 2, int(0.65 * size)) == blue_opaque   # body below the dots
    dot_y = int(make_icon.DOT_CENTER_Y * size)
    for cx in make_icon.DOT_CENTERS_X:
        assert pixel(rows, int(cx * size), dot_y) == white_opaque
    tail_x, tail_y = int(0.20 * size), int(0.80 * size)     # inside the tail triangle
    assert pixel(rows, tail_x, tail_y) == blue_opaque


def test_make_icon_writes_the_file(tmp_path):
    out = tmp_path / "sub" / "x.ico"
    make_icon.main(["make_icon.py", str(out)])
    assert out.read_bytes() == make_icon.build_icon()


# ==========================================================================================
# Version resource
# ==========================================================================================

def test_version_is_read_without_importing(tmp_path):
    src = tmp_path / "server.py"
    src.write_text('raise SystemExit("must not be imported")\n__version__ = "2.5.1rc1"\n')
    assert version_info.read_module_string(str(src), "__version__") == "2.5.1rc1"


@pytest.mark.parametrize("source, message", [
    ("x = 1\n", "no module-level __version__"),
    ("__version__ = 3\n", "is not a string"),
])
def test_version_errors_are_explicit(tmp_path, source, message):
    src = tmp_path / "server.py"
    src.write_text(source)
    with pytest.raises(ValueError, match=message):
        version_info.read_module_string(str(src), "__version__")


@pytest.mark.parametrize("version, fixed", [
    ("1.0.0", (1, 0, 0, 0)), ("2.5.1rc1", (2, 5, 1, 0)), ("3", (3, 0, 0, 0)),
    ("1.2.3.4.5", (1, 2, 3, 4)),
])
def test_fixed_version_has_four_parts(version, fixed):
    assert version_info.fixed_version(version) == fixed


@pytest.mark.parametrize("version, message", [
    ("dev", "does not start with a number"), ("1.70000", "above 65535"),
])
def test_fixed_version_rejects_what_windows_cannot_hold(version, message):
    with pytest.raises(ValueError, match=message):
        version_info.fixed_version(version)


def test_version_resource_is_a_pyinstaller_vsversioninfo():
    text = version_info.render("1.2.3")
    # PyInstaller eval()s this text with its own classes; stand-ins record the structure.
    names = ("VSVersionInfo", "FixedFileInfo", "StringFileInfo", "StringTable",
             "StringStruct", "VarFileInfo", "VarStruct")
    record = {name: (lambda name: lambda *a, **kw: (name, a, kw))(name) for name in names}
    kind, _, fields = eval(text, record)  # noqa: S307 -- our own generated text
    assert kind == "VSVersionInfo"
    assert fields["ffi"][2]["filevers"] == (1, 2, 3, 0)
    strings = {s[1][0]: s[1][1] for s in fields["kids"][0][1][0][0][1][1]}
    assert strings["ProductName"] == "LAN Chat Server"
    assert strings["ProductVersion"] == strings["FileVersion"] == "1.2.3"
    assert strings["OriginalFilename"] == "chatserver.exe"


# ==========================================================================================
# Excluded modules
# ==========================================================================================

def test_excludes_never_drop_a_module_chatserver_imports():
    with open(SERVER, "rb") as f:
        source = f.read()
    imported = excludes.imported_modules(source)
    dropped = excludes.excludes_for(source)
    clashes = [m for m in dropped for i in imported if i == m or i.startswith(m + ".")]
    assert clashes == []
    assert "tkinter" in dropped and "unittest" in dropped   # the list does apply


@pytest.mark.parametrize("source", [
    "import http.client", "from http import server", "import urllib.request as u",
    "def f():\n    from http.server import BaseHTTPRequestHandler",
])
def test_email_stays_when_http_modules_need_it(source):
    assert "email" not in excludes.excludes_for(source)


def test_email_and_openssl_are_dropped_for_a_plain_socket_server():
    dropped = excludes.excludes_for("import socket, hashlib, json")
    assert {"email", "ssl", "_ssl", "_hashlib"} <= set(dropped)
    assert "_hashlib" not in excludes.excludes_for("import ssl")


def test_hashlib_works_without_openssl():
    # _hashlib is excluded from the exe: hashlib must fall back to its built-in modules.
    code = ("import sys; sys.modules['_hashlib'] = None; import hashlib; "
            "print(hashlib.sha256(b'abc').hexdigest(), hashlib.sha1(b'abc').hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [hashlib.sha256(b"abc").hexdigest(), hashlib.sha1(b"abc").hexdigest()]


# ==========================================================================================
# Release zip, scripts, workflow
# ==========================================================================================

def test_release_zip_layout(tmp_path):
    exe = tmp_path / "chatserver.exe"
    exe.write_bytes(b"MZ fake exe")
    path = make_release_zip.make_zip(str(exe), str(tmp_path / "out"), "1.2.3")
    assert os.path.basename(path) == "ChatServer-1.2.3-windows-x64.zip"
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["chatserver.exe", "firewall.ps1", "README.txt"]
        assert archive.read("chatserver.exe") == b"MZ fake exe"
        with open(os.path.join(ROOT, "firewall.ps1"), "rb") as f:
            assert archive.read("firewall.ps1") == f.read()
        readme = archive.read("README.txt")
    assert b"\r\n" in readme and b"\n" not in readme.replace(b"\r\n", b"")
    assert b"%LOCALAPPDATA%\\ChatServer" in readme and b"firewall.ps1" in readme
    first = open(path, "rb").read()
    again = make_release_zip.make_zip(str(exe), str(tmp_path / "out2"), "1.2.3")
    assert open(again, "rb").read() == first               # reproducible bytes


@pytest.mark.parametrize("script", ["build_linux.sh", "build_windows_wine.sh"])
def test_shell_scripts_parse(script):
    result = subprocess.run(["bash", "-n", os.path.join(BUILD, script)],
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


def test_build_ps1_parses():
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    with open(os.path.join(BUILD, "build.ps1"), "rb") as f:
        root = parser.parse(f.read()).root_node
    stack, errors = [root], []
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            errors.append(node.start_point)
        stack.extend(node.children)
    assert errors == []


def test_spec_compiles_and_pins_are_exact():
    with open(os.path.join(BUILD, "chatserver.spec")) as f:
        compile(f.read(), "chatserver.spec", "exec")
    with open(os.path.join(BUILD, "requirements-build.txt")) as f:
        pins = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", p) for p in pins)
    assert {p.split("==")[0] for p in pins} >= {"pyinstaller", "pefile", "pywin32-ctypes"}


def test_release_workflow_uploads_the_zip_the_build_makes():
    with open(os.path.join(ROOT, ".github", "workflows", "release.yml")) as f:
        workflow = f.read()
    assert re.search(r"tags:\s*\[\s*\"v\*\"\s*\]", workflow)
    assert "runs-on: windows-latest" in workflow
    assert "./build/build.ps1" in workflow
    globs = re.findall(r"(?:path|files): (\S+\.zip)", workflow)
    assert len(globs) == 2
    zip_path = "build/out/" + make_release_zip.zip_name(server_version())
    assert all(fnmatch.fnmatch(zip_path, g) for g in globs)


# ==========================================================================================
# Real executables (slow_build)
# ==========================================================================================

def unavailable_reason(returncode, output):
    """Why a failed build is the machine's fault (no wine, offline), or None if it is ours."""
    if returncode == 2 and "wine is not installed" in output:
        return "wine is not installed and this is not root (apt-get install -y wine64 wine)"
    if any(marker in output for marker in OFFLINE_MARKERS):
        return "downloads failed (no PyPI/apt?) and build/cache/ has no copy"
    return None


def run_build(script):
    if not os.path.isfile(SERVER):
        if IN_CI:
            pytest.fail("chatserver.py is missing")
        pytest.skip("chatserver.py does not exist yet")
    env = dict(os.environ)
    env.pop("CHATSERVER_SRC", None)                   # always the real server
    started = time.monotonic()
    result = subprocess.run(["bash", os.path.join(BUILD, script)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        reason = unavailable_reason(result.returncode, output)
        if reason and not IN_CI:
            pytest.skip(reason)
        pytest.fail("%s failed (%d):\n%s" % (script, result.returncode, output[-4000:]))
    return time.monotonic() - started, output


def report(capsys, line):
    with capsys.disabled():
        print("\n[build] " + line)


@pytest.fixture(scope="module")
def windows_build():
    seconds, output = run_build("build_windows_wine.sh")
    return {"path": WINDOWS_EXE, "seconds": seconds, "output": output}


@pytest.fixture(scope="module")
def linux_build():
    seconds, output = run_build("build_linux.sh")
    return {"path": LINUX_BINARY, "seconds": seconds, "output": output}


def wine_env():
    return dict(os.environ, WINEPREFIX=WINEPREFIX, WINEDEBUG="-all")


def windows_path(path):
    """Wine maps drive Z: to the Unix root."""
    return "Z:" + os.path.abspath(path).replace("/", "\\")


class Target:
    """How to start and cleanly stop one kind of executable."""

    def __init__(self, name, command, env, data_dir_arg, stop_signal, process_group):
        self.name, self.command, self.env = name, command, env
        self.data_dir_arg, self.stop_signal = data_dir_arg, stop_signal
        self.process_group = process_group


def windows_target(exe):
    # Under Wine, SIGTERM kills the Wine processes outright (no handler runs). SIGINT
    # becomes a console CTRL_C_EVENT in every Windows process that receives it, so it
    # goes to the whole process group: the one-file bootloader ignores it and waits, the
    # child (the real server) gets KeyboardInterrupt/its SIGINT handler and exits cleanly.
    return Target("windows", ["wine", exe], wine_env(), windows_path, signal.SIGINT, True)


def linux_target(binary):
    # The Linux bootloader forwards SIGTERM to the child, which stops cleanly.
    return Target("linux", [binary], dict(os.environ), str, signal.SIGTERM, False)


class RunningServer:
    def __init__(self, target, port, data_dir):
        self.target, self.port = target, port
        args = ["--host", "127.0.0.1", "--port", str(port),
                "--data-dir", target.data_dir_arg(data_dir), "--open", "--no-browser"]
        self.output = []
        started = time.monotonic()
        # Wine rule: stdin from /dev/null and stdout to a pipe, else Python dies at start.
        self.proc = subprocess.Popen(target.command + args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=target.env, start_new_session=True)
        threading.Thread(target=self._collect, daemon=True).start()
        self.startup_seconds = self._wait_until_listening(started)

    def _collect(self):
        for line in self.proc.stdout:
            self.output.append(line.decode("utf-8", "replace"))

    def log(self):
        return "".join(self.output)

    def _wait_until_listening(self, started):
        while time.monotonic() - started < START_TIMEOUT:
            if self.proc.poll() is not None:
                raise AssertionError("%s server exited (%s):\n%s"
                                     % (self.target.name, self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return time.monotonic() - started
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError("%s server not listening after %d s:\n%s"
                             % (self.target.name, START_TIMEOUT, self.log()))

    def stop(self):
        """The clean path; returns the exit code."""
        if self.target.process_group:
            os.killpg(self.proc.pid, self.target.stop_signal)
        else:
            self.proc.send_signal(self.target.stop_signal)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s server ignored %s:\n%s"
                                 % (self.target.name, self.target.stop_signal.name, self.log()))

    def kill(self):
        """Last resort, only for processes of this test."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.target.name == "windows":
            # Wine processes outside the group (re-parented) die with the prefix's server.
            subprocess.run(["wineserver", "-k"], env=self.target.env, stdin=subprocess.DEVNULL,
                           capture_output=True)


def read_http_response(sock):
    """(status, headers dict with lower-case names, body) of one response with Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the response head: %r" % data[:200]
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                   (line.partition(":") for line in lines[1:]))
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(lines[0].split(" ", 2)[1]), headers, body[:length]


def check_http(port):
    """The embedded web page is served, and a WebSocket handshake completes: the accept
    key is SHA-1 based, so this also proves hashlib works in the frozen build."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port).encode("ascii"))
        status, headers, body = read_http_response(s)
    assert status == 200, (status, body[:200])
    assert headers["content-type"].startswith("text/html") and b"<html" in body.lower()
    # RFC 6455 1.3 worked example: this key must yield this accept value.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % port).encode("ascii"))
        status, headers, _ = read_http_response(s)
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upload(client, name, data):
    sha = hashlib.sha256(data).hexdigest()
    client.send({"type": "upload", "name": name, "size": len(data), "cid": "up1",
                 "sha256": sha, "mime": "text/plain"})
    ready = client.wait_for(lambda h: h["type"] in ("upload_ready", "error"))
    assert ready["type"] == "upload_ready", ready
    client.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, data)
    posted = client.wait_for(lambda h: h.get("cid") == "up1" and h["type"] in ("msg", "error"))
    assert posted["type"] == "msg" and posted["file"]["sha256"] == sha, posted
    return posted


def download(client, file_id):
    client.send({"type": "download", "file": file_id, "offset": 0})
    start = client.wait_for(lambda h: h["type"] in ("download_start", "error"))
    assert start["type"] == "download_start", start
    data = b""
    while True:
        header, payload = client.wait_for(
            lambda h: h["type"] in ("file_chunk", "download_end"), with_payload=True)
        if header["type"] == "download_end":
            return start, data
        assert header["offset"] == len(data)
        data += payload


def chat_round(port):
    """Two clients: a broadcast reaches both, a file goes up and comes back intact."""
    alice, bob = ChatClient(port), ChatClient(port)
    try:
        assert alice.hello("alice")["nick"] == "alice"
        assert "alice" in bob.hello("bob")["users"]
        sent = alice.say("hi from the exe", cid="c1")
        assert (sent["type"], sent["from"], sent["text"]) == ("msg", "alice", "hi from the exe")
        seen_by_bob = bob.wait_for(lambda h: h["type"] == "msg" and h.get("cid") == "c1")
        assert seen_by_bob["id"] == sent["id"] and seen_by_bob["text"] == sent["text"]
        # Exercises hashlib (OpenSSL is excluded) and unicodedata in the frozen build.
        content = "caf\u00e9 \u2615 build smoke\n".encode("utf-8") * 100
        posted = upload(bob, "caf\u00e9.txt", content)
        assert alice.wait_for(lambda h: h.get("cid") == "up1")["file"] == posted["file"]
        start, data = download(alice, posted["file"]["id"])
        assert data == content and start["name"] == "caf\u00e9.txt"
        check_http(port)
        return alice, bob, [sent["id"], posted["id"]]
    except BaseException:
        alice.close()
        bob.close()
        raise


def temp_onefile_dirs(target):
    """PyInstaller one-file unpack dirs (_MEIxxxx) that a clean exit removes."""
    if target.name == "windows":
        pattern = os.path.join(WINEPREFIX, "drive_c", "users", "*", "**", "_MEI*")
    else:
        pattern = os.path.join(target.env["TMPDIR"], "_MEI*")
    # With the inode: Wine restarts its pid numbering, so a name can come back.
    return {(path, os.stat(path).st_ino) for path in glob.glob(pattern, recursive=True)}


def refuse_second_instance(target, data_dir):
    """A second copy on the same data folder exits with code 2 and says why, at once: the
    database lock works on this OS (LockFileEx under Wine), and without a console the
    .exe does not wait for Enter."""
    args = ["--host", "127.0.0.1", "--port", str(free_port()),
            "--data-dir", target.data_dir_arg(data_dir), "--open", "--no-browser"]
    second = subprocess.run(target.command + args, stdin=subprocess.DEVNULL,
                            capture_output=True, env=target.env, timeout=START_TIMEOUT)
    output = (second.stdout + second.stderr).decode("utf-8", "replace")
    assert second.returncode == 2, output
    assert "in use by another process" in output, output


def smoke(target, data_dir, capsys):
    port = free_port()
    leftovers_before = temp_onefile_dirs(target)
    server = RunningServer(target, port, data_dir)
    report(capsys, "%s: listening %.2f s after start" % (target.name, server.startup_seconds))
    try:
        alice, bob, ids = chat_round(port)
        refuse_second_instance(target, data_dir)
        again = alice.say("after the second instance gave up", cid="c2")
        assert bob.wait_for(lambda h: h.get("cid") == "c2")["id"] == again["id"]
        ids.append(again["id"])
        code = server.stop()
        # The clean path says goodbye to every client before closing.
        for client in (alice, bob):
            assert client.wait_for("bye", timeout=STOP_TIMEOUT)["reason"] == "shutdown"
            client.close()
        assert code == 0, server.log()
        assert temp_onefile_dirs(target) <= leftovers_before, "one-file temp dir left behind"

        server = RunningServer(target, port, data_dir)
        carol = ChatClient(port)
        history = carol.hello("carol")["history"]
        assert [m["id"] for m in history if m["id"] in ids] == ids
        assert any(m.get("text") == "hi from the exe" for m in history)
        # carol stays connected through the stop: closing her just before the signal
        # makes the server log "left" while the signal handler logs too (see report).
        assert server.stop() == 0
        assert carol.wait_for("bye", timeout=STOP_TIMEOUT)["reason"] == "shutdown"
        carol.close()
    finally:
        server.kill()


@pytest.mark.slow_build
def test_windows_exe_runs_under_wine(windows_build, tmp_path, capsys):
    exe = windows_build["path"]
    report(capsys, "windows: build %.1f s, chatserver.exe %.2f MB"
           % (windows_build["seconds"], os.path.getsize(exe) / 1e6))
    smoke(windows_target(exe), tmp_path / "data", capsys)


@pytest.mark.slow_build
def test_windows_exe_carries_icon_and_version(windows_build):
    with open(windows_build["path"], "rb") as f:
        exe = f.read()
    assert exe[:2] == b"MZ"
    for text in ("LAN Chat Server", server_version(), "chatserver.exe"):
        assert text.encode("utf-16-le") in exe, text
    # PyInstaller copies the ICO's images verbatim into RT_ICON resources.
    largest_png = read_ico(make_icon.build_icon())[-1][1]
    assert largest_png in exe


@pytest.mark.slow_build
def test_linux_binary_runs(linux_build, tmp_path, capsys):
    binary = linux_build["path"]
    report(capsys, "linux: build %.1f s, chatserver %.2f MB"
           % (linux_build["seconds"], os.path.getsize(binary) / 1e6))
    target = linux_target(binary)
    target.env["TMPDIR"] = str(tmp_path / "tmp")
    os.makedirs(target.env["TMPDIR"])
    smoke(target, tmp_path / "data", capsys)
