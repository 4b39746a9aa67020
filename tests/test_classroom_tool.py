"""Tests of bench/classroom.py: small runs of both scenarios must report every message exactly
once and every file intact; the --proxy run must really drop connections and resume them
(so a broken resume, resend or offset would show as loss, duplicates or a bad sha256).

No timing is asserted: the machine is shared, latency and throughput are only reported.
"""
import json
import os
import struct
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
sys.path.insert(0, BENCH)
import classroom  # noqa: E402

RUN_TIMEOUT_S = 90


def run_classroom(results, *args):
    cmd = [sys.executable, os.path.join(BENCH, "classroom.py"), "--results", str(results),
           "--quiet-wait", "0", "--tag", "pytest", "--host", "127.0.0.1"] + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    with open(results) as f:
        rec = json.loads(f.read().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("classroom"), proc.stdout
    return rec


def assert_exact(rec, downloads, uploads):
    assert rec["mode"] == "classroom"
    assert rec["lost"]["total"] == 0, rec["lost"]
    assert rec["dup"]["total"] == 0, rec["dup"]
    assert rec["cid_duplicates"] == 0
    assert rec["sent_not_stored"] == 0
    assert rec["extra_ids"] == 0
    assert rec["unacked_at_end"] == 0
    assert rec["clients_caught_up"] == rec["clients"]
    assert rec["chat_sent"] > 0 and rec["messages"] >= rec["chat_sent"]
    assert rec["downloads"]["count"] == downloads
    assert rec["downloads"]["sha256_ok"] == downloads, rec["downloads"]
    assert rec["uploads"]["sha256_ok"] == uploads, rec["uploads"]
    assert rec["raw_loopback"]["sha256_ok"] == downloads
    assert rec["chat_latency_all"]["samples"] > 0
    assert rec["correct"] is True
    for key in ("ts", "tag", "git", "machine", "server_flags"):
        assert key in rec


def test_classroom_small(tmp_path):
    rec = run_classroom(tmp_path / "r.jsonl", "--clients", "12", "--downloads", "4",
                        "--download-mib", "4", "--uploads", "2", "--upload-mib", "2",
                        "--warmup", "1", "--duration", "4", "--cooldown", "1",
                        "--msg-min", "0.2", "--msg-max", "0.5")
    assert_exact(rec, 4, 2)
    assert rec["ws_clients"] == 6
    assert rec["downloads"]["http"] == 2 and rec["downloads"]["framed"] == 2
    assert rec["reconnects"] == 0 and rec["connection_losses"] == 0
    assert rec["errors_total"] == 0, rec["errors"]
    assert rec["proxy_stats"] is None


def test_classroom_transfer_procs_splits_the_latency_samples(tmp_path):
    # many messages a second, so that even a short transfer window holds samples of both
    rec = run_classroom(tmp_path / "r.jsonl", "--clients", "12", "--downloads", "2",
                        "--download-mib", "16", "--uploads", "1", "--upload-mib", "8",
                        "--procs", "1", "--transfer-procs", "1",
                        "--warmup", "1", "--duration", "4", "--cooldown", "1",
                        "--msg-min", "0.02", "--msg-max", "0.05")
    assert_exact(rec, 2, 1)
    assert rec["transfer_procs"] == 1
    quiet = rec["chat_latency_during_transfers_quiet_clients"]
    busy = rec["chat_latency_during_transfers_transferring_clients"]
    assert quiet["samples"] > 0 and busy["samples"] > 0
    assert quiet["samples"] + busy["samples"] == rec["chat_latency_during_transfers"]["samples"]


def test_assign_workers_puts_transferring_clients_in_their_own_processes():
    specs = [{"idx": i} for i in range(10)]
    for i in (0, 3, 4):
        specs[i]["download"] = True
    specs[9]["upload"] = True
    shared = classroom.assign_workers(specs, 2)
    assert [[s["idx"] for s in w] for w in shared] == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7]]
    apart = classroom.assign_workers(specs, 2, transfer_procs=2)
    assert [[s["idx"] for s in w] for w in apart] == [[1, 5, 8], [2, 6, 7], [0, 4], [3, 9]]


def test_classroom_proxy_drops_and_resumes(tmp_path):
    # many messages per second and reconnects after 1-2 s: a client that comes back has
    # missed more than a welcome holds (200), so it must page the history
    rec = run_classroom(tmp_path / "r.jsonl", "--proxy", "--clients", "12", "--downloads", "4",
                        "--download-mib", "3", "--uploads", "2", "--upload-mib", "2",
                        "--bw-mib", "2", "--drop-at-mib", "1.2", "--drop-per-min", "8",
                        "--stall-per-min", "4", "--stall-min", "0.2", "--stall-max", "1",
                        "--latency-ms", "10", "--jitter-ms", "5",
                        "--reconnect-min", "1", "--reconnect-max", "2",
                        "--warmup", "1", "--duration", "14", "--cooldown", "1",
                        "--msg-min", "0.03", "--msg-max", "0.08", "--settle-timeout", "40")
    assert_exact(rec, 4, 2)
    ps = rec["proxy_stats"]
    assert ps["drops_random"] > 0 and ps["drops_bytes"] > 0, ps
    assert rec["reconnects"] > 0
    assert rec["downloads"]["resumes"] > 0 and rec["downloads"]["interrupted"] > 0
    assert rec["uploads"]["resumes"] > 0
    assert rec["resumes_with_paging"] > 0 and rec["history_pages"] > 0
    assert rec["history_deliveries"] > 0


@pytest.mark.parametrize("cut", range(0, 60, 7))
def test_framed_decoder_any_split(cut):
    frames = classroom.framed({"type": "msg", "id": 1, "text": "hi"}) + \
        classroom.framed({"type": "file_chunk", "file": "f", "offset": 0}, 5) + b"abcde" + \
        classroom.framed({"type": "download_end", "file": "f"})
    headers, payload = [], bytearray()
    dec = classroom.FramedDecoder(lambda h, n: headers.append(h["type"]),
                                  lambda h, v: payload.extend(v))
    cut = min(cut, len(frames))
    dec.feed(memoryview(frames[:cut]))
    dec.feed(memoryview(frames[cut:]))
    assert headers == ["msg", "file_chunk", "download_end"]
    assert bytes(payload) == b"abcde"


def test_ws_frame_is_masked_and_decodes():
    data = json.dumps({"type": "msg", "text": "x" * 300}).encode()
    frame = classroom.ws_frame(data)
    assert frame[0] == 0x81 and frame[1] & 0x80
    n = struct.unpack(">H", frame[2:4])[0]
    mask = frame[4:8]
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(frame[8:8 + n]))
    assert body == data
    got = []
    dec = classroom.WsDecoder(got.append, lambda op, p: None)
    server_frame = bytes([0x81, 126]) + struct.pack(">H", len(data)) + data
    dec.feed(server_frame[:3])
    dec.feed(server_frame[3:])
    assert got == [json.loads(data)]
