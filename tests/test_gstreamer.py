"""GStreamer's webrtcbin publishes over WHIP; headless Chromium views over WHEP.

The publisher is Debian's GStreamer 1.22 (webrtcbin, vp8enc/x264enc, opusenc)
driven through PyGObject by tests/clients/gst_whip.py, run with Debian's
/usr/bin/python3: it makes webrtcbin's offer (bundle-policy=max-bundle, so
the second section is bundle-only), POSTs it to /whip/{room} and sets the
answer. The viewer is Debian's Chromium with a plain RTCPeerConnection
(recvonly audio + video) POSTing to /whep/{room}. Server, publisher and
browser run in one network namespace that has only `lo`
(tests/clients/gst_whep_run.py, started by tests/test_chromium.py's
run_browser_script).

Needs (Debian): gstreamer1.0-tools, gstreamer1.0-plugins-{base,good,bad,ugly},
gstreamer1.0-nice, python3-gi, gir1.2-gstreamer-1.0,
gir1.2-gst-plugins-base-1.0, gir1.2-gst-plugins-bad-1.0, gir1.2-nice-0.1,
plus what tests/test_chromium.py needs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from test_chromium import run_browser_script

SYSTEM_PYTHON = "/usr/bin/python3"
ELEMENTS = ("webrtcbin", "nicesrc", "vp8enc", "rtpvp8pay", "x264enc", "h264parse", "rtph264pay",
            "opusenc", "rtpopuspay", "videotestsrc", "audiotestsrc")
GI_CHECK = """
import gi
for ns, v in (("Gst", "1.0"), ("GstSdp", "1.0"), ("GstWebRTC", "1.0"), ("Nice", "0.1")):
    gi.require_version(ns, v)
from gi.repository import Gst, GstSdp, GstWebRTC, Nice
Gst.init(None)
missing = [e for e in %r if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
""" % (ELEMENTS,)


def _gstreamer_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} (Debian's python3, for python3-gi) is missing"
    run = subprocess.run([SYSTEM_PYTHON, "-c", GI_CHECK], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
        return ("PyGObject/GStreamer introspection missing (python3-gi gir1.2-gstreamer-1.0 "
                f"gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1): {last}")
    if run.stdout.strip():
        return ("GStreamer elements missing: " + run.stdout.strip()
                + " (gstreamer1.0-plugins-base/-good/-bad/-ugly, gstreamer1.0-nice)")
    return None


def publish_and_view(codec: str) -> dict:
    missing = _gstreamer_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    # run_browser_script runs scripts from tests/browser/; ours lives in tests/clients/.
    result = run_browser_script("../clients/gst_whep_run.py", codec, "max-bundle", timeout=240)
    print(json.dumps(result, indent=1))
    return result


def _sections(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("m=")]


def check_publish_and_view(result: dict, video_codec: str) -> None:
    events = result["publisher_events"]
    offers = [e for e in events if e["event"] == "offer"]
    answers = [e for e in events if e["event"] == "answer"]
    errors = [e for e in events if e["event"] == "error"]
    assert len(offers) == 1 and not errors, (errors, result["publisher_stderr"])
    offer = offers[0]["sdp"]
    assert "a=bundle-only" in offer, "webrtcbin with max-bundle marks its second section bundle-only"
    assert len(answers) == 1 and answers[0]["status"] == 201, answers
    answer = answers[0]["sdp"]
    # Both sections accepted: a rejected one has port 0 (webrtcbin then also
    # asks to renegotiate, which WHIP cannot do).
    assert [m.split()[:2] for m in _sections(answer)] == [["m=video", "9"], ["m=audio", "9"]], _sections(answer)
    assert "a=group:BUNDLE video0 audio1" in answer
    assert not any(e["event"] == "renegotiation-needed" for e in events)
    assert result["publisher_connected"], events

    viewer = result["viewer"]
    assert viewer and viewer["status"] == 201 and not viewer.get("error"), viewer
    first, second = result["first"], result["second"]
    assert first and first["video"] and first["audio"], first
    assert second["video"]["codec"] == video_codec, second
    assert second["audio"]["codec"] == "audio/opus", second
    assert second["video"]["framesDecoded"] > first["video"]["framesDecoded"] > 0, (first, second)
    assert second["audio"]["packetsReceived"] > first["audio"]["packetsReceived"] > 0, (first, second)
    assert (second["video"]["frameWidth"], second["video"]["frameHeight"]) == (320, 240), second


def test_gstreamer_webrtcbin_vp8_opus_over_whip_to_chromium_whep():
    check_publish_and_view(publish_and_view("vp8"), "video/VP8")


def test_gstreamer_webrtcbin_h264_opus_over_whip_to_chromium_whep():
    """x264enc's constrained baseline (profile-level-id 42c0xx, with
    sprop-parameter-sets in the offer) through to Chromium's H264 decoder."""
    check_publish_and_view(publish_and_view("h264"), "video/H264")
