"""File sharing over the framed protocol: streaming, integrity, resume, limits, bad input,
crash safety."""
import hashlib
import os
import socket
import threading
import time

import pytest

import chatserver as cs
from chatclient import ChatClient, encode
from test_core import assert_chat_still_works, expect_error

MiB = 1024 * 1024


def upload(client, data, name="file.bin", chunk=MiB, sha=True, start=0, upload_id=None,
           cid=None, **extra):
    """Announce (unless resuming `upload_id` of `cid`) and send `data` from `start`; returns
    the file msg or the error."""
    cid = cid or client.next_cid()
    if upload_id is None:
        header = {"type": "upload", "name": name, "size": len(data), "cid": cid, **extra}
        if sha:
            header["sha256"] = hashlib.sha256(data).hexdigest()
        client.send(header)
        ready = client.wait_for(lambda h: h["type"] in ("upload_ready", "error", "msg") and
                                (h.get("cid") == cid or h.get("ref") == cid))
        if ready["type"] != "upload_ready":
            return ready
        upload_id, cid = ready["upload"], ready["cid"]
    for off in range(start, len(data), chunk):
        client.send({"type": "chunk", "upload": upload_id, "offset": off},
                    data[off:off + chunk])
    me = client.welcome["nick"]
    return client.wait_for(lambda h: (h["type"] == "msg" and h.get("cid") == cid and
                                      h["from"] == me) or
                           (h["type"] == "error" and h.get("ref") in (cid, upload_id)),
                           timeout=60)


def download(client, file_id, offset=0, into=None):
    """Returns (download_start, bytes)."""
    client.send({"type": "download", "file": file_id, "offset": offset})
    start = client.wait_for(lambda h: h["type"] in ("download_start", "error"))
    if start["type"] == "error":
        return start, b""
    parts = []
    pos = offset
    while True:
        header, payload = client.wait_for(
            lambda f: f["type"] in ("file_chunk", "download_end") and f.get("file") == file_id,
            timeout=60, with_payload=True)
        if header["type"] == "download_end":
            break
        assert header["offset"] == pos
        pos += len(payload)
        parts.append(payload)
    return start, b"".join(parts)


@pytest.fixture
def files_server(make_server):
    return make_server("--open", "--rate-limit", "0")


def test_100_mib_round_trip_with_matching_sha256(files_server):
    a, b = files_server.client("alice"), files_server.client("bob")
    data = os.urandom(100 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    msg = upload(a, data, name="big.bin", mime="application/octet-stream", text="enjoy")
    assert msg["type"] == "msg", msg
    f = msg["file"]
    assert f["size"] == len(data) and f["sha256"] == digest and f["name"] == "big.bin"
    assert msg["text"] == "enjoy"
    assert b.wait_for(lambda h: h.get("type") == "msg" and h["id"] == msg["id"]) == msg
    start, got = download(b, f["id"])
    assert start["size"] == len(data) and start["sha256"] == digest
    assert hashlib.sha256(got).hexdigest() == digest


def test_three_concurrent_uploads_and_downloads(files_server):
    users = [files_server.client("u%d" % i) for i in range(3)]
    blobs = [os.urandom((5 + i) * MiB + i) for i in range(3)]
    results = [None] * 3

    def up(i):
        results[i] = upload(users[i], blobs[i], name="f%d" % i, chunk=256 * 1024)

    threads = [threading.Thread(target=up, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["type"] == "msg" for r in results), results
    readers = [files_server.client("r%d" % i) for i in range(3)]
    got = [None] * 3

    def down(i):
        got[i] = download(readers[i], results[(i + 1) % 3]["file"]["id"])[1]

    threads = [threading.Thread(target=down, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert got[i] == blobs[(i + 1) % 3]


@pytest.mark.parametrize("cut", [0, MiB // 2], ids=["between-chunks", "mid-chunk"])
def test_upload_resumes_after_forced_disconnect(files_server, cut):
    """A drop between chunks, or in the middle of one (its payload half received in place):
    the resume offset is what complete chunks brought, never a partial chunk."""
    a = files_server.client("alice")
    data = os.urandom(3 * MiB + 123)
    a.send({"type": "upload", "name": "r.bin", "size": len(data), "cid": "r1",
            "sha256": hashlib.sha256(data).hexdigest()})
    ready = a.wait_for("upload_ready")
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, data[:MiB])
    a.send({"type": "chunk", "upload": ready["upload"], "offset": MiB}, data[MiB:2 * MiB])
    if cut:
        frame = encode({"type": "chunk", "upload": ready["upload"], "offset": 2 * MiB},
                       data[2 * MiB:3 * MiB])
        a.send_raw(frame[:len(frame) - MiB + cut])
    time.sleep(0.3)
    a.sock.shutdown(socket.SHUT_RDWR)     # WiFi drop
    a.close()
    # back at once: the device key takes the nick over even if the server still holds it
    a2 = files_server.client("alice", device=a.device)
    a2.send({"type": "upload_status", "upload": ready["upload"]})
    status = a2.wait_for("upload_ready")
    assert status["offset"] == 2 * MiB and status["cid"] == "r1"
    msg = upload(a2, data, start=status["offset"], upload_id=ready["upload"], cid="r1")
    assert msg["type"] == "msg" and msg["cid"] == "r1"
    assert download(a2, msg["file"]["id"])[1] == data


def test_download_resumes_from_any_offset(files_server):
    a = files_server.client("alice")
    data = os.urandom(2 * MiB + 7)
    msg = upload(a, data)
    for offset in (0, 1, MiB, len(data) - 1, len(data)):
        start, got = download(a, msg["file"]["id"], offset=offset)
        assert start["offset"] == offset and got == data[offset:]


def test_zero_byte_file_is_shared_at_once(files_server):
    a = files_server.client("alice")
    msg = upload(a, b"", name="empty.txt")
    assert msg["type"] == "msg" and msg["file"]["size"] == 0
    assert msg["file"]["sha256"] == hashlib.sha256(b"").hexdigest()
    assert download(a, msg["file"]["id"])[1] == b""


def test_direct_share_only_for_sender_and_recipient(files_server):
    a, b, c = (files_server.client(n) for n in ("alice", "bob", "carol"))
    msg = upload(a, b"for bob only", name="note.txt", to="bob")
    assert msg["to"] == "bob"
    assert b.wait_for(lambda h: h.get("type") == "msg" and h["id"] == msg["id"])["file"]
    assert download(b, msg["file"]["id"])[1] == b"for bob only"
    err, _ = download(c, msg["file"]["id"])
    assert err["code"] == "forbidden" and not err["fatal"]
    assert_chat_still_works(files_server, a, b, c)


def test_chat_keeps_flowing_while_a_large_download_runs(files_server):
    a, b = files_server.client("alice"), files_server.client("bob")
    data = os.urandom(64 * MiB)
    msg = upload(a, data)
    b.send({"type": "download", "file": msg["file"]["id"], "offset": 0})
    b.wait_for("download_start")
    b.wait_for("file_chunk")                     # the transfer is under way
    chat = a.say("while you download")
    # the chat message overtakes the rest of the file on bob's own connection
    order = []
    while True:
        h = b.recv(timeout=30)
        if h["type"] == "msg" and h["id"] == chat["id"]:
            order.append("chat")
        if h["type"] == "download_end":
            order.append("end")
            break
    assert order == ["chat", "end"]


# -- bad input ----------------------------------------------------------------------------

def announce(client, **fields):
    header = {"type": "upload", "name": "x.bin", "size": 10, "cid": client.next_cid()}
    header.update(fields)
    client.send(header)
    return client.wait_for(lambda h: h["type"] in ("upload_ready", "error", "msg"))


@pytest.mark.parametrize("fields, code", [
    ({"size": -1}, "bad_request"),
    ({"size": "10"}, "bad_request"),
    ({"size": True}, "bad_request"),
    ({"size": 10 ** 18}, "file_too_large"),
    ({"name": ""}, "bad_request"),
    ({"name": "x" * 10000}, "bad_request"),
    ({"name": 5}, "bad_request"),
    ({"sha256": "zz"}, "bad_request"),
    ({"to": "nobody"}, "unknown_user"),
])
def test_bad_announcements(files_server, fields, code):
    watcher = files_server.client("watcher")
    a = files_server.client("alice")
    reply = announce(a, **fields)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert_chat_still_works(files_server, watcher, a)


@pytest.mark.parametrize("name, shown", [
    ("../../etc/passwd", "_.._etc_passwd"),
    ("..\\..\\windows\\system32", "_.._windows_system32"),
    ("nul\x00byte.txt", "nul_byte.txt"),
    ("CON.txt", "_CON.txt"),
    ("  .hidden. ", "hidden"),
    ("a/b\\c:d*e?.jpg", "a_b_c_d_e_.jpg"),
])
def test_hostile_names_are_sanitised_metadata(files_server, tmp_path, name, shown):
    a = files_server.client("alice")
    msg = upload(a, b"data", name=name)
    assert msg["file"]["name"] == shown
    # the stored file is named by its server id, never by the client
    stored = os.listdir(os.path.join(files_server.data_dir, "files"))
    assert stored == [msg["file"]["id"]]


def test_sanitize_file_name_rules():
    assert cs.sanitize_file_name("") == "file"
    assert cs.sanitize_file_name("...") == "file"
    long = cs.sanitize_file_name("a" * 500 + ".jpeg")
    assert len(long) == cs.MAX_FILE_NAME and long.endswith(".jpeg")
    assert cs.sanitize_file_name("lpt1") == "_lpt1"
    assert cs.sanitize_file_name("e\u0301t\u00e9.txt") == "\u00e9t\u00e9.txt"   # NFC
    assert cs.sanitize_file_name("tab\there\u202e.txt") == "tab_here_.txt"


def test_more_bytes_than_announced(files_server):
    a = files_server.client("alice")
    ready = announce(a, size=4)
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, b"12345")
    err = expect_error(a, "size_mismatch")
    assert err["ref"] == ready["upload"]
    a.send({"type": "upload_status", "upload": ready["upload"]})
    expect_error(a, "unknown_upload")           # discarded, nothing half-written left
    assert os.listdir(os.path.join(files_server.data_dir, "uploads")) == []
    assert os.listdir(os.path.join(files_server.data_dir, "files")) == []


def test_fewer_bytes_than_announced(files_server):
    a = files_server.client("alice")
    ready = announce(a, size=10)
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0, "last": True}, b"123")
    expect_error(a, "size_mismatch")
    assert os.listdir(os.path.join(files_server.data_dir, "files")) == []


def test_sha256_mismatch_discards_the_upload(files_server):
    watcher = files_server.client("watcher")
    a = files_server.client("alice")
    reply = upload(a, b"hello world", sha=False, sha256="0" * 64)
    assert reply["type"] == "error" and reply["code"] == "checksum_mismatch"
    assert os.listdir(os.path.join(files_server.data_dir, "files")) == []
    assert os.listdir(os.path.join(files_server.data_dir, "uploads")) == []
    assert [h for h in watcher.drain(0.2) if h["type"] == "msg"] == []
    assert_chat_still_works(files_server, watcher, a)


@pytest.mark.parametrize("offset", [5, -1, 1, "0", None, True])
def test_chunk_at_wrong_offset(files_server, offset):
    a = files_server.client("alice")
    ready = announce(a, size=10)
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, b"abc")
    a.send({"type": "chunk", "upload": ready["upload"], "offset": offset}, b"def")
    err = expect_error(a, "bad_offset")
    assert err["ref"] == ready["upload"]
    # the upload survives a bad chunk: continue at the right offset
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 3}, b"defghij")
    assert a.wait_for("msg")["file"]["size"] == 10


def test_chunk_for_unknown_or_foreign_upload(files_server):
    a, m = files_server.client("alice"), files_server.client("mallory")
    ready = announce(a, size=10)
    m.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, b"evil")
    expect_error(m, "unknown_upload")
    m.send({"type": "chunk", "upload": "u-does-not-exist", "offset": 0}, b"x")
    expect_error(m, "unknown_upload")
    m.send({"type": "upload_cancel", "upload": ready["upload"]})
    expect_error(m, "unknown_upload")
    # alice's upload is untouched
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, b"0123456789")
    assert a.wait_for("msg")["file"]["size"] == 10


def test_empty_chunk_and_missing_payload(files_server):
    a = files_server.client("alice")
    ready = announce(a, size=10)
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0})
    expect_error(a, "bad_request")


def test_download_unknown_file(files_server):
    a = files_server.client("alice")
    for bad in ("f-nope", 42, None):
        a.send({"type": "download", "file": bad})
        expect_error(a, "unknown_file")
    assert_chat_still_works(files_server, a)


def test_download_offset_beyond_size(files_server):
    a = files_server.client("alice")
    msg = upload(a, b"12345")
    err, _ = download(a, msg["file"]["id"], offset=6)
    assert err["code"] == "bad_request"


def test_upload_cancel_deletes_the_partial_file(files_server):
    a = files_server.client("alice")
    ready = announce(a, size=10)
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, b"abc")
    a.send({"type": "upload_cancel", "upload": ready["upload"]})
    a.send({"type": "upload_status", "upload": ready["upload"]})
    expect_error(a, "unknown_upload")
    assert os.listdir(os.path.join(files_server.data_dir, "uploads")) == []


def test_too_many_uploads(make_server):
    srv = make_server("--open", "--rate-limit", "0", "--max-uploads", "2")
    a = srv.client("alice")
    assert announce(a)["type"] == "upload_ready"
    assert announce(a)["type"] == "upload_ready"
    err = announce(a)
    assert err["code"] == "too_many_uploads"
    assert announce(srv.client("bob"))["type"] == "upload_ready"    # per user


def test_disk_full_is_refused_before_starting(make_server):
    srv = make_server("--open", "--min-free-disk", str(10 ** 18))
    a = srv.client("alice")
    err = announce(a, size=1000)
    assert err["code"] == "disk_full"
    assert os.listdir(os.path.join(srv.data_dir, "uploads")) == []
    assert_chat_still_works(srv, a)


def test_max_file_size_is_configurable(make_server):
    srv = make_server("--open", "--max-file-size", "100")
    a = srv.client("alice")
    assert a.welcome["limits"]["file"] == 100
    assert announce(a, size=101)["code"] == "file_too_large"
    assert announce(a, size=100)["type"] == "upload_ready"


def test_chunk_before_hello(files_server):
    """Before hello no frame carries a payload (PROTOCOL.md, "Before hello"): the declared
    length is refused before any of it is read, and the stranger is closed."""
    watcher = files_server.client("watcher")
    c = ChatClient(files_server.port)
    c.send({"type": "chunk", "upload": "u1", "offset": 0}, b"x")
    frames = c.expect_closed()
    assert frames and frames[-1]["code"] == "frame_too_large" and frames[-1]["fatal"] is True
    assert_chat_still_works(files_server, watcher)


# -- crash safety -------------------------------------------------------------------------

def test_kill_9_mid_upload_never_serves_a_partial_file(make_server, tmp_path):
    data_dir = tmp_path / "crash"
    srv = make_server("--open", "--rate-limit", "0", data_dir=data_dir)
    a = srv.client("alice")
    data = os.urandom(4 * MiB)
    a.send({"type": "upload", "name": "half.bin", "size": len(data), "cid": "h1"})
    ready = a.wait_for("upload_ready")
    a.send({"type": "chunk", "upload": ready["upload"], "offset": 0}, data[:MiB])
    a.send({"type": "ping"})
    a.wait_for("pong")
    # The pong says the chunk was received; the disk thread writes it a moment later, and a
    # crash before that resumes from what is on disk (RELIABILITY.md). Crash after it here.
    part = data_dir / "uploads" / (ready["upload"] + ".part")
    deadline = time.monotonic() + 10
    while part.stat().st_size < MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    assert part.stat().st_size == MiB
    srv.kill9()
    # debris: an orphaned temporary file and a stored file no row lists
    (data_dir / "uploads" / "uorphan.part").write_bytes(b"junk")
    (data_dir / "files" / "fghost").write_bytes(b"junk")
    srv2 = make_server("--open", "--rate-limit", "0", data_dir=data_dir)
    assert sorted(os.listdir(data_dir / "uploads")) == [ready["upload"] + ".part"]
    assert os.listdir(data_dir / "files") == []
    b = srv2.client("bob")
    assert all("file" not in m for m in b.welcome["history"])
    err, _ = download(b, "fghost")
    assert err["code"] == "unknown_file"
    # the partial upload is resumable by its owner (the same device) after the restart
    a2 = srv2.client("alice", device=a.device)
    a2.send({"type": "upload_status", "upload": ready["upload"]})
    status = a2.wait_for("upload_ready")
    assert status["offset"] == MiB
    msg = upload(a2, data, start=MiB, upload_id=ready["upload"], cid="h1")
    assert msg["file"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_partial_uploads_expire_after_the_grace_period(tmp_path):
    store = cs.MessageStore(":memory:")
    files = cs.FileStore(str(tmp_path), store)
    up = files.start("alice", "a.bin", 10, None, "application/octet-stream", None, "c", "")
    files.append(up, b"abc")
    files.expire(time.time() + cs.UPLOAD_GRACE - 5)
    assert up.id in files.uploads
    files.expire(time.time() + cs.UPLOAD_GRACE + 5)
    assert up.id not in files.uploads and not os.path.exists(up.path)


def test_announcing_a_completed_upload_again_reacknowledges_at_once(files_server):
    a, b = files_server.client("alice"), files_server.client("bob")
    msg = upload(a, b"done already", cid="same-1")
    b.wait_for(lambda h: h.get("type") == "msg" and h["id"] == msg["id"])
    a.send({"type": "upload", "name": "x", "size": 12, "cid": "same-1"})
    assert a.wait_for(lambda h: h["type"] in ("msg", "upload_ready")) == msg
    assert [h for h in b.drain(0.3) if h["type"] == "msg"] == []


def test_download_cancel_and_restart_mid_stream_keep_the_server_up(files_server):
    a, b = files_server.client("alice"), files_server.client("bob")
    data = os.urandom(16 * MiB)
    msg = upload(a, data)
    file_id = msg["file"]["id"]
    b.send({"type": "download", "file": file_id, "offset": 0})
    b.wait_for("download_start")
    b.wait_for("file_chunk")
    b.send({"type": "download_cancel", "file": file_id})      # chunks are still queued
    b.send({"type": "download", "file": file_id, "offset": 0})  # and again, mid-stream
    b.send({"type": "download_cancel", "file": file_id})
    assert_chat_still_works(files_server, a, b)
    b.drain(0.5)                       # the chunks that were queued before the cancel
    start, got = download(b, file_id)                          # a fresh download still works
    assert got == data
    b.send({"type": "download_cancel", "file": "f-never-started"})   # harmless
    assert_chat_still_works(files_server, a, b)


# -- the disk thread: write errors and back-pressure ------------------------------------------

class InProcessServer:
    """A real server on 127.0.0.1 in this process, so a test can reach into its disk thread."""

    def __init__(self):
        self.srv = cs.Server(cs.Config(host="127.0.0.1", port=0, memory=True, open=True,
                                       rate_limit=0))
        self.port = self.srv.listen()[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def client(self, nick):
        c = ChatClient(self.port)
        c.hello(nick)
        return c

    def stop(self):
        self.srv.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def inproc():
    server = InProcessServer()
    yield server
    server.stop()


@pytest.mark.parametrize("failure, reason", [
    (OSError(28, "No space left on device"), "No space left on device"),   # ENOSPC
    (RuntimeError("a bug in the disk thread"), "disk error"),
], ids=["enospc", "bug"])
def test_a_failing_disk_write_is_reported_and_others_are_unaffected(inproc, monkeypatch,
                                                                      failure, reason):
    real_write = cs.Upload.write_all

    def failing_write(up, data):
        if up.name == "doomed.bin":
            raise failure
        real_write(up, data)
    monkeypatch.setattr(cs.Upload, "write_all", failing_write)
    a, b = inproc.client("alice"), inproc.client("bob")
    result = upload(a, os.urandom(3 * MiB), name="doomed.bin", chunk=256 * 1024)
    assert result["type"] == "error" and result["code"] == "disk_full", result
    assert reason in result["message"] and result["fatal"] is False
    # nothing half-written is kept, nothing was announced, and everyone can go on
    assert inproc.srv.files.uploads == {}
    assert os.listdir(inproc.srv.files.uploads_dir) == []
    assert [h for h in b.drain(0.3) if h["type"] == "msg"] == []
    assert b.say("still chatting")["type"] == "msg"
    assert a.wait_for(lambda h: h.get("text") == "still chatting")["from"] == "bob"
    data = os.urandom(MiB + 7)
    msg = upload(a, data, name="fine.bin")        # the same user's next upload works
    assert msg["type"] == "msg" and msg["file"]["sha256"] == hashlib.sha256(data).hexdigest()


def send_slowly_framed(client, data, results):
    """Framed upload of `data` in 128 KiB chunks; the file msg (or error) into `results`."""
    client.send({"type": "upload", "name": "slow.bin", "size": len(data), "cid": "up1",
                 "sha256": hashlib.sha256(data).hexdigest()})
    upload_id = client.wait_for("upload_ready")["upload"]
    for off in range(0, len(data), 128 * 1024):
        client.send({"type": "chunk", "upload": upload_id, "offset": off},
                    data[off:off + 128 * 1024])
    results.append(client.wait_for(lambda h: h["type"] in ("msg", "error") and
                                   (h.get("cid") == "up1" or h.get("ref") in ("up1", upload_id)),
                                   timeout=30))


def send_slowly_http(client, data, results):
    """The browser's way: POST /files with the session of `client`; the 201 body is the msg."""
    import http.client
    import json
    import urllib.parse
    conn = http.client.HTTPConnection("127.0.0.1", client.sock.getpeername()[1], timeout=30)
    conn.request("POST", "/files?" + urllib.parse.urlencode({"name": "slow.bin", "cid": "up1"}),
                 body=data, headers={"Content-Type": "application/octet-stream",
                                     "Authorization": "Bearer " + client.welcome["session"]})
    res = conn.getresponse()
    results.append(json.loads(res.read()) if res.status == 201 else {"type": "error",
                                                                       "status": res.status})
    conn.close()


@pytest.mark.parametrize("send_slowly", [send_slowly_framed, send_slowly_http],
                         ids=["framed", "http"])
def test_a_slow_disk_pauses_the_uploader_not_the_chat(inproc, monkeypatch, send_slowly):
    """While the disk thread is stuck, the uploading connection stops being read once the
    queue is over DISK_QUEUE_HIGH (memory stays bounded), chat keeps flowing, and when the
    disk catches up the upload completes intact."""
    monkeypatch.setattr(cs, "DISK_QUEUE_HIGH", 512 * 1024)
    monkeypatch.setattr(cs, "DISK_QUEUE_LOW", 128 * 1024)
    bound = cs.DISK_QUEUE_HIGH + cs.RECV_SIZE + 128 * 1024   # the mark + one read + one chunk
    gate, most_queued = threading.Event(), [0]
    real_write = cs.Upload.write_all

    def gated_write(up, data):
        most_queued[0] = max(most_queued[0], inproc.srv.files.disk.queued)
        gate.wait(30)
        real_write(up, data)
    monkeypatch.setattr(cs.Upload, "write_all", gated_write)
    a, b = inproc.client("alice"), inproc.client("bob")
    data = os.urandom(8 * MiB)
    results = []
    sender = threading.Thread(target=send_slowly, args=(a, data, results), daemon=True)
    sender.start()
    deadline = time.monotonic() + 10
    while not inproc.srv.paused_by_disk and time.monotonic() < deadline:
        time.sleep(0.01)
    (paused,) = inproc.srv.paused_by_disk
    assert paused.paused & cs.PAUSED_BY_DISK and paused.proto in ("framed", "http")
    assert (paused is inproc.srv.chat.joined["alice"]) == (send_slowly is send_slowly_framed)
    ack = b.say("the chat does not wait for the disk")
    assert ack["type"] == "msg"
    assert a.wait_for(lambda h: h.get("id") == ack["id"])["from"] == "bob"
    assert inproc.srv.files.disk.queued <= bound
    gate.set()
    sender.join(30)
    (msg,) = results
    assert msg["type"] == "msg" and msg["file"]["size"] == len(data), msg
    assert msg["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert not inproc.srv.paused_by_disk and not paused.paused & cs.PAUSED_BY_DISK
    assert most_queued[0] <= bound
    start, got = download(b, msg["file"]["id"])
    assert got == data


def test_shutdown_writes_the_queued_chunks_and_a_hung_disk_cannot_hang_it(tmp_path, monkeypatch):
    store = cs.MessageStore(":memory:")
    files = cs.FileStore(str(tmp_path), store)
    up = files.start("alice", "a.bin", 10, None, "application/octet-stream", None, "c", "")
    files.append(up, b"abcde")
    files.disk.close()
    with open(up.path, "rb") as f:
        assert f.read() == b"abcde"           # written before the thread stopped
    hung = cs.FileStore(str(tmp_path / "hung"), store)
    release = threading.Event()
    monkeypatch.setattr(cs.Upload, "write_all", lambda self, data: release.wait(10))
    up2 = hung.start("bob", "b.bin", 10, None, "application/octet-stream", None, "d", "")
    hung.append(up2, b"xyz")
    started = time.monotonic()
    hung.disk.close(timeout=0.2)
    assert time.monotonic() - started < 5 and hung.disk.queued == 3
    release.set()
