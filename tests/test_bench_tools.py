"""Tests of the benchmark tools in bench/: the load tool counts exactly (no timing asserts).

The load tool is run as a CLI on tiny sizes against every target it knows; each run's JSON
record must show every message delivered exactly once. The stream counters are also checked
directly, split at every possible position, because a marker cut in two by a recv() is the
case that would silently skew the benchmark numbers.
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
sys.path.insert(0, BENCH)
import loadtool  # noqa: E402
import report  # noqa: E402
import plot  # noqa: E402

TINY_N = 3
TINY_K = 60
TINY_C = 25
TINY_ROUNDS = 2
RUN_TIMEOUT_S = 90
IN_CI = os.environ.get("CI") == "true"


def need_redis():
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is required in CI (apt-get install -y redis-server)")
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")


def need_inspircd():
    if loadtool.find_inspircd() is None:
        if IN_CI:
            pytest.fail("inspircd is required in CI (apt-get install -y inspircd)")
        pytest.skip("inspircd not installed (apt-get install -y inspircd)")


def need_chatserver():
    if not os.path.exists(os.path.join(REPO, "chatserver.py")):
        pytest.skip("chatserver.py not written yet")


def need(target):
    if target == "redis":
        need_redis()
    elif target == "chatserver":
        need_chatserver()
    elif target == "inspircd":
        need_inspircd()


def run_loadtool(results, *args, expect_status=0):
    """Run bench/loadtool.py as a CLI; return the JSON record it appended."""
    cmd = [sys.executable, os.path.join(BENCH, "loadtool.py")] + list(args) + [
        "--results", str(results), "--quiet-wait", "0", "--tag", "pytest"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == expect_status, proc.stdout + proc.stderr
    with open(results) as f:
        return json.loads(f.read().splitlines()[-1])


# --- stream counting (sans-I/O) ---------------------------------------------------------

def sample_stream():
    """Deliveries as the references send them, with probes mixed in; returns (bytes, bulk, probes)."""
    parts, bulk, probes = [], 0, 0
    for i in range(12):
        if i % 4 == 1:
            text, probes = loadtool.probe_text(100, 10 ** 15 + i), probes + 1
        else:
            text, bulk = loadtool.bulk_text(100), bulk + 1
        parts.append(json.dumps({"type": "msg", "from": "pub0", "text": text}).encode() + b"\n")
    return b"".join(parts), bulk, probes


def feed_in_chunks(stream, cuts):
    counter = loadtool.StreamCounter()
    edges = [0] + list(cuts) + [len(stream)]
    for a, b in zip(edges, edges[1:]):
        buf = bytearray(stream[a:b]) + bytearray(b"~^P")   # junk past n must be ignored
        counter.feed(buf, b - a, 2 * 10 ** 15)
    return counter


def test_counter_counts_every_marker_once_whatever_the_split_point():
    stream, bulk, probes = sample_stream()
    for cut in range(1, len(stream)):
        counter = feed_in_chunks(stream, [cut])
        assert (counter.bulk, counter.probes) == (bulk, probes), "split at %d" % cut


def test_counter_handles_chunks_shorter_than_a_marker():
    stream, bulk, probes = sample_stream()
    for size in (1, 2, 3, 7, 21, 22, 31, 32, 33):
        counter = feed_in_chunks(stream, range(size, len(stream), size))
        assert (counter.bulk, counter.probes) == (bulk, probes), "chunks of %d" % size


def test_counter_computes_probe_latency_from_the_embedded_send_time():
    counter = loadtool.StreamCounter()
    data = bytearray(loadtool.probe_text(100, 5_000_000).encode())
    counter.feed(data, len(data), 5_000_000 + 7_000_000)         # received 7 ms later
    assert counter.latencies_us == [7000]


def test_counter_ignores_a_truncated_probe_marker():
    counter = loadtool.StreamCounter()
    data = bytearray(b"^P12345^ and ^Pabcdefghijklmnopqrs^")     # too short / not digits
    counter.feed(data, len(data), 10 ** 9)
    assert (counter.probes, counter.latencies_us) == (0, [])


def _marker_starts(data, split):
    """Feed data in two reads split at `split`; where nth_marker_start puts each marker,
    as absolute offsets."""
    counter = loadtool.StreamCounter()
    starts = []
    offset = 0
    for chunk in (data[:split], data[split:]):
        buf = bytearray(chunk) + bytearray(64)       # a receive buffer larger than the read
        before, carry = counter.bulk, counter.carry
        counter.feed(buf, len(chunk), 0)
        for nth in range(1, counter.bulk - before + 1):
            starts.append(offset + loadtool.nth_marker_start(carry, buf, len(chunk), nth))
        offset += len(chunk)
    return starts


def test_nth_marker_start_finds_every_marker_whatever_the_split_point():
    text = loadtool.bulk_text(100)
    data = b"".join(b'{"x":"' + text.encode() + b'"}\n' for _ in range(3))
    truth = [i for i in range(len(data)) if data.startswith(loadtool.BULK_MARK, i)]
    assert len(truth) == 3
    for split in range(len(data) + 1):
        assert _marker_starts(data, split) == truth, split


def test_nth_marker_start_is_none_past_the_last_marker():
    buf = bytearray(loadtool.BULK_MARK + b"xx")
    assert loadtool.nth_marker_start(b"", buf, len(buf), 1) == 0
    assert loadtool.nth_marker_start(b"", buf, len(buf), 2) is None


@pytest.mark.parametrize("name", ["threaded", "redis", "chatserver", "inspircd"])
def test_bulk_tail_matches_the_frame_each_target_delivers(name):
    text, cid = loadtool.bulk_text(100), "abcd1234-000-0000007"
    delivered = {
        "threaded": b'{"type":"msg","from":"pub0","text":"' + text.encode() + b'"}\n',
        "redis": b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$100\r\n" + text.encode() + b"\r\n",
        "chatserver": b"\0" * 8 + b'{"type":"msg","id":7,"ts":"2026-11-25T07:00:00.000Z",'
                      b'"from":"pub0","text":"' + text.encode() + b'","cid":"' + cid.encode() + b'"}',
        "inspircd": b":pub0!pub0@127.0.0.1 PRIVMSG #room :" + text.encode() + b"\r\n",
    }[name]
    tail, ending = loadtool.make_target(name).bulk_tail(text, cid)
    start = delivered.find(loadtool.BULK_MARK)
    assert start + tail == len(delivered) and delivered.endswith(ending)


def test_frame_reader_decodes_headers_and_counts_payload_across_splits():
    frames = (loadtool.encode_frame({"type": "download_start", "file": "f1"})
              + loadtool.encode_frame({"type": "file_chunk", "offset": 0}, b"\x00" * 1000)
              + loadtool.encode_frame({"type": "download_end", "size": 1000}))
    for cut in range(1, len(frames)):
        reader = loadtool.FrameReader()
        headers = reader.feed(memoryview(frames[:cut])) + reader.feed(memoryview(frames[cut:]))
        assert [h["type"] for h in headers] == ["download_start", "file_chunk", "download_end"]
        assert reader.payload_bytes == 1000


def test_irc_handshake_joins_once_registered_and_ends_after_the_names_list():
    irc = loadtool.make_target("inspircd")
    before = bytearray(b":bench.local NOTICE * :*** Looking up your hostname...\r\n")
    assert irc.follow_up(before, "sub") is None and irc.handshake_end(before, "sub") is None
    registered = before + b":bench.local 001 s0 :Welcome\r\n:bench.local 422 s0 :No MOTD\r\n"
    assert irc.follow_up(registered, "sub") == b"JOIN #room\r\n"
    assert irc.handshake_end(registered, "sub") is None
    joined = registered + (b":s0!s0@127.0.0.1 JOIN :#room\r\n:bench.local 353 s0 = #room :s0\r\n"
                           b":bench.local 366 s0 #room :End of /NAMES list.\r\n")
    assert irc.handshake_end(joined + b":pub0!pub0@127.0.0.1 PRIV", "sub") == len(joined)
    with pytest.raises(loadtool.HandshakeError):
        irc.handshake_end(bytearray(b":bench.local 433 * s0 :Nickname is already in use.\r\n"), "sub")


def test_irc_message_carries_its_ack_and_refuses_texts_longer_than_a_line():
    irc = loadtool.make_target("inspircd")
    assert irc.encode_msg("hi", "c1") == b"PRIVMSG #room :hi\r\nPING :a\r\n"
    with pytest.raises(ValueError):
        irc.encode_msg("x" * loadtool.IRC_LINE_MAX, "c1")


def test_resp_publish_encoding_is_byte_exact():
    assert loadtool.resp_command(b"PUBLISH", b"room", b"hi") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$2\r\nhi\r\n")


# --- the load tool against every target -------------------------------------------------

@pytest.mark.parametrize("target", ["threaded", "asyncio", "redis", "chatserver", "inspircd"])
def test_fanout_delivers_every_message_to_every_subscriber(tmp_path, target):
    need(target)
    rec = run_loadtool(tmp_path / "r.jsonl", "fanout", "--target", target,
                       "-n", str(TINY_N), "-k", str(TINY_K), "-p", "100")
    assert rec["complete"] is True
    assert rec["delivered"] == TINY_K * TINY_N
    assert (rec["lost"], rec["dup"], rec["closed"]) == (0, 0, 0)
    assert rec["publisher_acked"] == TINY_K
    assert rec["probe"]["samples"] == rec["probe"]["sent"] * TINY_N and rec["probe"]["lost"] == 0
    assert rec["ok"] is True and rec["deliveries_per_s"] > 0


@pytest.mark.parametrize("target", ["threaded", "asyncio", "redis", "chatserver", "inspircd"])
def test_connscale_each_broadcast_reaches_every_idle_client(tmp_path, target):
    need(target)
    rec = run_loadtool(tmp_path / "r.jsonl", "connscale", "--target", target,
                       "-c", str(TINY_C), "--rounds", str(TINY_ROUNDS))
    assert rec["complete"] is True and len(rec["broadcast_ms"]) == TINY_ROUNDS
    assert rec["delivered"] == TINY_C * TINY_ROUNDS
    assert (rec["lost"], rec["dup"], rec["closed"]) == (0, 0, 0)
    assert rec["server_rss_kib"]["joined"] > 0
    assert rec["ok"] is True


@pytest.mark.parametrize("target", ["redis", "chatserver", "inspircd"])
@pytest.mark.parametrize("publishers", [1, 3])
def test_flood_without_a_window_still_completes_and_measures_probes(tmp_path, target, publishers):
    need(target)
    k = 3000
    rec = run_loadtool(tmp_path / "r.jsonl", "fanout", "--target", target, "-n", str(TINY_N),
                       "-k", str(k), "-p", "100", "--window", "0",
                       "--publishers", str(publishers))
    assert (rec["window"], rec["publishers"]) == (0, publishers)
    assert rec["complete"] is True and rec["ok"] is True
    assert rec["delivered"] == k * TINY_N
    assert (rec["lost"], rec["dup"], rec["closed"]) == (0, 0, 0)
    assert rec["probe"]["sent"] >= 1 and rec["probe"]["lost"] == 0
    assert rec["probe"]["samples"] == rec["probe"]["sent"] * TINY_N


def test_publisher_without_a_window_queues_everything_at_once():
    class Stub:
        ack_mark = b"\r\n"
    pub = loadtool.Publisher(None, [b"a", b"b", b"c"], loadtool.NO_WINDOW, Stub())
    pub.fill()
    assert (pub.sent, bytes(pub.out)) == (3, b"abc")
    windowed = loadtool.Publisher(None, [b"a", b"b", b"c"], 2, Stub())
    windowed.fill()
    assert (windowed.sent, bytes(windowed.out)) == (2, b"ab")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lossy_asyncio_server(*drop_args):
    """ref_asyncio.py with its test hook that skips a recipient; yields its port."""
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.join(BENCH, "ref_asyncio.py"),
                               "--port", str(port), *drop_args])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "ref_asyncio.py did not start"
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def test_fanout_reports_loss_when_the_server_drops_messages(tmp_path):
    with lossy_asyncio_server("--drop-every", "10") as port:
        rec = run_loadtool(tmp_path / "r.jsonl", "fanout", "--target", "asyncio",
                           "--connect", "127.0.0.1:%d" % port, "-n", str(TINY_N),
                           "-k", str(TINY_K), "--stall", "2", expect_status=1)
    assert rec["complete"] is False and rec["ok"] is False
    assert rec["lost"] > 0 and rec["dup"] == 0
    assert rec["delivered"] + rec["lost"] == TINY_K * TINY_N


@pytest.mark.parametrize("target", ["threaded", "asyncio", "redis", "chatserver", "inspircd"])
def test_fanout_with_a_verified_sample_still_accounts_for_every_subscriber(tmp_path, target):
    need(target)
    n, k = 12, 400
    rec = run_loadtool(tmp_path / "r.jsonl", "fanout", "--target", target, "-n", str(n),
                       "-k", str(k), "-p", "100", "--procs", "2", "--verify-every", "3")
    assert rec["complete"] is True and rec["ok"] is True
    assert (rec["verify_every"], rec["verified"]) == (3, 4)     # 2 workers x 2 of their 6
    assert rec["delivered"] == k * 4 and rec["deliveries"] == k * n
    assert (rec["lost"], rec["dup"], rec["closed"], rec["mismatches"]) == (0, 0, 0, [])
    assert rec["bulk_end_bytes"] > k * 100                    # the bulk, counted in bytes
    assert rec["probe"]["samples"] == rec["probe"]["sent"] * 4 and rec["probe"]["lost"] == 0


def test_fanout_reports_loss_at_a_subscriber_that_only_counts_bytes(tmp_path):
    # "-1": the second subscriber of the only worker, a drain subscriber with --verify-every 4
    with lossy_asyncio_server("--drop-every", "10", "--drop-nick-suffix", "-1") as port:
        rec = run_loadtool(tmp_path / "r.jsonl", "fanout", "--target", "asyncio",
                           "--connect", "127.0.0.1:%d" % port, "-n", "8", "-k", "200",
                           "--verify-every", "4", "--stall", "2", expect_status=1)
    # The probes that follow the bulk may carry the short subscriber's byte count past the
    # end of the bulk ("complete"), but at the end it has fewer bytes than the others.
    assert rec["ok"] is False
    assert rec["delivered"] == 200 * 2 and rec["dup"] == 0     # the verified two got all
    assert rec["lost"] >= 1          # estimated from the bytes it is short of the others


def test_filerelay_moves_the_file_intact_through_chatserver(tmp_path):
    need_chatserver()
    rec = run_loadtool(tmp_path / "r.jsonl", "filerelay", "--target", "chatserver", "--size-mib", "3")
    assert rec["sha256_match"] is True
    assert rec["downloaded_bytes"] == 3 << 20
    assert rec["probes_lost"] == 0 and rec["ok"] is True


def test_filerelay_refuses_targets_without_file_transfer(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "loadtool.py"), "filerelay",
                           "--target", "redis", "--results", ""], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0
    assert "only --target chatserver has file transfer" in proc.stderr


# --- report and plot on real records ----------------------------------------------------

def test_report_and_plot_summarise_the_records(tmp_path):
    results = tmp_path / "r.jsonl"
    for target in ("threaded", "asyncio"):
        run_loadtool(results, "fanout", "--target", target, "-n", "2", "-k", "20")
    text = report.render(report.load(str(results)), set())
    assert "| threaded | 2 | 20 | 100 | 1 |" in text
    assert "| asyncio | 2 | 20 | 100 | 1 |" in text
    for target in ("threaded", "asyncio"):
        run_loadtool(results, "fanout", "--target", target, "-n", "2", "-k", "20", "--window", "0")
    records = report.load(str(results))
    text = report.render(records, set())
    fanout, flood = text.split("### Flood (no window)")[0], text.split("### Flood (no window)")[1]
    flood = flood.split("###")[0]
    assert fanout.count("| threaded | 2 | 20 | 100 | 1 |") == 1     # the flood run is not mixed in
    assert "| threaded | 2 | 20 | 100 | 1 | 1 |" in flood              # P=1 publisher, 1 run
    assert "| asyncio | 2 | 20 | 100 | 1 | 1 |" in flood
    assert all(r["window"] == 0 for r in records[2:])
    # a classroom record (bench/classroom.py writes to the same file) is not a table row
    with open(results, "a") as f:
        f.write(json.dumps({"mode": "classroom", "ok": True, "target": "chatserver",
                            "tag": "x"}) + "\n")
    assert report.render(report.load(str(results)), set()) == text
    # nor is a run of another chatserver.py (--chatserver PATH: an A/B comparison)
    other = tmp_path / "old_chatserver.py"
    shutil.copy(os.path.join(REPO, "chatserver.py"), other)
    run_loadtool(results, "fanout", "--target", "chatserver", "--chatserver", str(other),
                 "-n", "2", "-k", "20", "--window", "0")
    records = report.load(str(results))
    assert records[-1]["chatserver_path"] == str(other)
    assert report.render(records, set()) == text
    out = tmp_path / "f.svg"
    assert plot.main(["--results", str(results), "--out", str(out)]) == 0
    svg = out.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 4   # 2 targets x 2 panels
