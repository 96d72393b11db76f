"""Headless Chromium (Debian's) on the demo page: two pages join one room and
each decodes the other's video and receives its audio.

Runs in a network namespace with only `lo` (`unshare -n`), so Chromium's
candidates are 127.0.0.1 only. Needs root for the namespace, /usr/bin/chromium
and the playwright package (installed by .ci/run and the test extras).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _prerequisites() -> str | None:
    if not Path("/usr/bin/chromium").exists():
        return "Debian's chromium is not installed (.ci/run installs it with apt-get)"
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "needs root and unshare for a loopback-only network namespace"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


def run_browser_script(name: str, *args: object, timeout: float) -> dict:
    """Runs tests/browser/<name> in a network namespace with only `lo` and
    returns the JSON of its last output line (skips, or fails in CI, when
    the prerequisites are missing)."""
    missing = _prerequisites()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    script = ROOT / "tests" / "browser" / name
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = " ".join(str(a) for a in args)
    run = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}" {argv}'],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def run_pages(pages: int, seconds: float, loss: float = 0.0, auth: bool = False) -> dict:
    result = run_browser_script("demo_pages.py", pages, seconds, loss, "auth" if auth else "", timeout=180)
    print(json.dumps(result, indent=1))
    return result


def test_two_demo_pages_over_a_lossy_link_nack_and_keep_decoding():
    """5% loss each way between the browsers and the SFU: Chromium NACKs, the
    SFU retransmits, and video keeps being decoded."""
    result = run_pages(2, 8, 0.05)
    assert result["nat_dropped"] > 0
    for first, second in zip(result["first"], result["second"]):
        (pid, before), = first["viewers"].items()
        after = second["viewers"][pid]
        # 8 s from the first decoded frame, which includes the viewer's move
        # from the lowest simulcast layer to the top one (a keyframe of 960x540
        # through 5% loss): at least 7.5 frames/s on average
        assert after["framesDecoded"] > before["framesDecoded"] + 60, (before, after)
    assert sum(s["viewers"][p]["nackCount"] for s in result["second"] for p in s["viewers"]) > 0
    assert result["counters"]["tx_retransmissions"] > 0 and result["counters"]["rx_nack"] > 0


def test_two_demo_pages_decode_each_other():
    """With JWT authentication, as sfu-server runs (each page has its own user)."""
    result = run_pages(2, 3, auth=True)
    for first, second in zip(result["first"], result["second"]):
        assert first["status"] and first["status"].startswith("publishing"), first
        assert len(second["viewers"]) == 1, second
        (pid, before), = first["viewers"].items()
        after = second["viewers"][pid]
        assert after["framesDecoded"] > before["framesDecoded"] > 0, (before, after)
        assert after["audioPackets"] > before["audioPackets"], (before, after)
        # the page publishes three simulcast encodings over WHIP; each tile
        # shows the layer the SFU forwards and its estimate of the link
        assert after["layer"] is not None and after["estimate"] > 0, after
        assert f"layer {after['layer']}" in after["caption"], after
    # three encodings per publisher, each received
    assert [len(s) for s in result["video_producers"]] == [3, 3], result["video_producers"]
    assert all(n > 0 for s in result["video_producers"] for n in s), result["video_producers"]
    # RTT toward the publishers: Chromium answers the XR receiver reference
    # time the engine sends with each RR (RFC 3611) with a DLRR, the only
    # round trip a transport that only receives can measure (src/rtt.c).
    publishers = [t for t in result["transports"] if t["rtpPacketsReceived"] > 0]
    assert len(publishers) == 2, result["transports"]
    for t in publishers:
        assert t["rttSamples"] >= 1 and t["roundTripTime"] is not None and t["roundTripTime"] < 1000, t


def test_demo_pages_post_their_sessions_again_when_the_worker_dies():
    """Two demo pages (WHIP + WHEP + the room's WebSocket) in a room on one of
    two workers; the worker is killed three times. Each time the pages get
    `room-closed` (worker-died), make the room again, publish and view again
    by themselves: each decodes the other on a new tile, without a reload."""
    result = run_browser_script("demo_pages.py", "kill", 3, timeout=180)
    print("\ndemo pages, worker killed 3 times: each page decodes the other again after",
          [k["back_s"] for k in result["kills"]], "s")
    assert len(result["kills"]) == 3, result
    for i, k in enumerate(result["kills"], start=1):
        assert all(b is not None and b < 15 for b in k["back_s"]), k
        assert k["new_worker_pid"] not in (None, k["worker_pid"]), k
        assert k["recoveries"] == [i, i], k
