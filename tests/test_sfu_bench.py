"""`sfu-bench` smoke run and the pieces of its report.

The smoke run is what the README tells users to run, scaled down: a real
`sfu-server` subprocess, 3 participants over WebRTC (ICE + DTLS + SRTP with
AEAD_AES_128_GCM) for 3 s. It checks that the seed's table comes out with
plausible numbers — no loss, latency above zero, bandwidth per user near
what the other two publish — and that the JSON, Markdown and PNG are
written. The figures themselves are benchmarks (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.common import parse_markdown_table  # noqa: E402
from benchmarks.report import cpu_fit, largest_within, linear_fit  # noqa: E402


def run_bench(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out_json, out_md, out_png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "--json", str(out_json), "--markdown", str(out_md),
         "--plot", str(out_png), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, f"sfu-bench failed:\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(out_json.read_text())


@pytest.mark.timeout(300)  # the bench waits for an idle machine first; CI's 2 cores may be busy
def test_three_participants_over_webrtc_give_the_seed_table(tmp_path):
    proc, data = run_bench(tmp_path, "--participants", "3", "--duration", "3", "--bitrate", "1")
    rows = parse_markdown_table(proc.stdout)
    assert len(rows) == 1
    row = rows[0]
    for column in ("Participants", "CPU", "RAM", "Bandwidth (per user)", "Latency (p50)", "Latency (p99)", "Loss"):
        assert row[column] not in ("", "-"), (column, row)
    assert row["Participants"] == "3"
    assert (tmp_path / "b.md").read_text().count("| Participants") == 1
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (r,) = data["results"]
    assert r["config"]["transport"] == "webrtc" and r["config"]["target"] == "server"
    # every stream arrived, and was protected / decryptable; loss is a
    # figure of the machine's load (the table reports it), bounded loosely here
    assert r["streams"] == r["streams_expected"] == 12
    assert r["loss_pct"] < 2.0, r
    assert r["decrypt_errors"] == 0 and r["protect_errors"] == 0
    assert r["latency_samples"] > 100
    assert 0 < r["latency_us"]["p50"] <= r["latency_us"]["p99"]
    # two publishers x (1 Mbit/s video + ~50 kbit/s audio) + RTP/SRTP headers
    assert 2.0 < r["down_mbps_per_user"] < 2.6, r["down_mbps_per_user"]
    assert r["server_cpu_pct"] is not None and 0 < r["server_cpu_pct"] < 200
    assert 20 < r["server_rss_mb"] < 2000
    assert r["out_pps"] > 600  # 3 x 2 x ~170 packets/s, less the first second (joins spread over 1 s)


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (.ci/run installs it)")
def test_a_room_over_two_nodes_forwards_every_stream(tmp_path):
    """--nodes 2: two sfu-server nodes sharing a redis-server, participants
    on both: every stream arrives, half of them through the nodes' pipe."""
    proc, data = run_bench(tmp_path, "--participants", "4", "--nodes", "2", "--duration", "3", "--bitrate", "0.5")
    (r,) = data["results"]
    assert r["config"]["nodes"] == 2
    assert r["streams"] == r["streams_expected"] == 24
    assert r["loss_pct"] < 2.0, r
    assert r["decrypt_errors"] == 0 and 0 < r["latency_us"]["p50"] <= r["latency_us"]["p99"]


def test_bad_options_are_refused_with_a_message():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--transport", "plain"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--target embedded" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--participants", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "at least 2" in proc.stderr


def test_linear_fit_and_r2():
    fit = linear_fit([2, 4, 6, 8], [5, 9, 13, 17])
    assert fit is not None
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(1) and fit["r2"] == pytest.approx(1)
    noisy = linear_fit([1, 2, 3, 4], [1, 3, 2, 4])
    assert noisy is not None and 0 < noisy["r2"] < 1
    assert linear_fit([3, 3], [1, 2]) is None


def _result(n: int, cpu: float, loss: float, mbps: float = 1.0) -> dict:
    return {"participants": n, "server_cpu_pct": cpu, "loss_pct": loss, "out_pps": n * (n - 1) * 170.0,
            "config": {"video_bps": mbps * 1e6}}


def test_cpu_fit_uses_unsaturated_points_at_the_common_bitrate():
    rs = [_result(3, 1.0 + 0.01 * 6, 0), _result(10, 1.0 + 0.01 * 90, 0), _result(25, 1.0 + 0.01 * 600, 0),
          _result(50, 100.0, 20.0), _result(50, 80.0, 0.1, mbps=0.5)]
    fit = cpu_fit(rs)
    assert fit is not None and fit["points"] == [3, 10, 25]
    assert fit["slope"] == pytest.approx(0.01) and fit["r2"] == pytest.approx(1.0)
    best = largest_within(rs)
    assert best is not None and best["participants"] == 50 and best["config"]["video_bps"] == 0.5e6


# ---------------------------------------------------------------- simulcast publishers


def _run_json(tmp_path, *args: str) -> dict:
    out_json = tmp_path / "s.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "--json", str(out_json), "--markdown", "", "--no-wait-idle",
         "--quiet", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, f"sfu-bench failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out_json.read_text())


@pytest.mark.timeout(300)
def test_simulcast_publishers_send_three_encodings_and_each_viewer_gets_the_layer_it_asked_for(tmp_path):
    # plain RTP to an embedded worker: every trailer is readable, so the
    # layer of every packet a viewer received is known; the producers'
    # statistics say what the SFU received
    data = _run_json(tmp_path, "--participants", "3", "--duration", "3", "--target", "embedded",
                     "--transport", "plain", "--simulcast", "--viewer-layers", "2,1,0", "--vp8-picture-id")
    (r,) = data["results"]
    sc = r["simulcast"]
    assert r["layers"] == 3
    # the SFU received all three encodings of every publisher
    assert sc["producer_streams_receiving"] == [3, 3, 3]
    # packets/s per layer follow the 15/30/55 split (more, smaller packets at the bottom
    # per bit, but the top layer sends the most)
    low, mid, top = sc["sent_pps_per_layer"]
    assert 0 < low < top and 0 < mid < top
    # 6 video consumers, asking 2,1,0,2,1,0: each forwards the one it asked for
    assert sc["consumers"] == 6 and sc["consumers_as_asked"] == 6
    assert sc["consumers_at_layer"] == [2, 2, 2]
    asked = {(c["viewer"], c["publisher"]): c["asked"] for c in sc["consumer_stats"]}
    assert len(sc["viewer_streams"]) == 6
    for s in sc["viewer_streams"]:
        lp = s["layer_packets"]
        layer = asked[(s["viewer"], s["publisher"])]
        # one layer per consumer: the asked one carries nearly all of it (a
        # consumer starts on whichever layer's keyframe comes first and moves
        # at the keyframe the SFU asks for)
        assert lp[layer] >= 0.9 * sum(lp), (s, layer)
    # the generator answered the SFU's keyframe requests for the switches
    assert r["key_requests"] >= 1
    # nothing lost in the viewers' (rewritten, continuous) sequence numbers
    assert r["seq_loss_pct"] < 2.0, r["seq_loss_pct"]
    # CPU per forwarded packet keeps its definition: server CPU over packets out
    assert r["cpu_us_per_packet"] == pytest.approx(r["server_cpu_pct"] / 100 * 1e6 / r["out_pps"])
    # packets in count every encoding (plus audio), packets out only the forwarded ones
    assert r["in_pps"] > low + mid + top
    assert r["out_pps"] < 2 * r["in_pps"]  # 3 viewers x 2 publishers' one layer + audio, not 3 layers


@pytest.mark.timeout(400)
def test_side_by_side_over_webrtc_compares_one_layer_with_simulcast(tmp_path):
    data = _run_json(tmp_path, "--participants", "3", "--duration", "2", "--side-by-side", "--rounds", "1")
    (pair,) = data["pairs"]
    single, sim = pair["single"], pair["simulcast"]
    assert single["layers"] == 1 and sim["layers"] == 3
    # the same conditions for both: VP8 picture ids, no transport-cc from the viewers
    for r in (single, sim):
        assert r["config"]["vp8_picture_id"] and r["config"]["viewer_bwe"] is False
        assert r["decrypt_errors"] == 0 and r["protect_errors"] == 0
        assert r["cpu_us_per_packet"] and r["cpu_us_per_packet"] > 0
    # SRTP: every viewer is on the top layer by the end
    assert sim["simulcast"]["consumers_at_layer"] == [0, 0, 6]
    # a viewer gets the top layer only: less than the single-layer stream
    assert sim["down_mbps_per_user"] < single["down_mbps_per_user"]
    m = data["means"]["3"]
    assert m["ratio"] == pytest.approx(m["simulcast_us"] / m["single_us"])


def test_simulcast_options_are_checked():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--simulcast", "--viewer-layers", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "viewer layers" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--layers", "4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "layers" in proc.stderr


# ---------------------------------------------------------------- recordings


@pytest.mark.timeout(120)
def test_recordings_point_writes_frames_and_reports_the_recorder_apart(tmp_path):
    # a real sfu-server records 2 of 3 participants (audio + video each)
    # while they forward; the files go to a temporary directory (TMPDIR
    # here) that is removed afterwards
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out_json = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "--json", str(out_json), "--markdown", "", "--no-wait-idle",
         "--retries", "0", "--quiet", "--participants", "3", "--duration", "3", "--recordings", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.returncode == 0, f"sfu-bench failed:\n{proc.stdout}\n{proc.stderr}"
    (r,) = json.loads(out_json.read_text())["results"]
    rec = r["recording"]
    assert r["recordings"] == 2 and rec["count"] == 2
    for p in rec["per_recording"]:
        # the generator's VP8-like keyframes and Opus-like packets went into the file
        assert p["error"] is None, p
        assert {t["kind"] for t in p["tracks"]} == {"audio", "video"}, p
        assert all(t["frames_written"] > 0 for t in p["tracks"]), p
        assert p["bytes_written"] > 10_000, p
        assert p["packets_received"] > 0, p
    assert rec["all_wrote_frames"] and rec["min_frames_written"] > 0
    # the recorder's CPU is measured apart from the worker's
    assert len(r["recording"]["per_recording"]) == 2
    assert rec["threads_cpu_pct"] is not None and rec["threads_cpu_pct"] >= 0
    assert rec["packets_per_s"] > 0
    assert r["worker_cpu_pct"] is not None and r["control_cpu_pct"] is not None
    assert r["worker_cpu_pct"] + r["control_cpu_pct"] == pytest.approx(r["server_cpu_pct"], abs=1e-6)
    assert r["worker_us_per_packet"] > 0
    assert r["out_pps"] > 0 and r["streams"] == r["streams_expected"]
    # the recordings' temporary directory is gone
    assert not [x for x in tmp.iterdir() if x.name.startswith("sfu-bench-rec-")]


def test_recordings_options_are_checked():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--recordings", "2", "--target", "embedded",
                           "--transport", "plain"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--target server" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--recordings", "4", "--participants", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "at most one per participant" in proc.stderr
