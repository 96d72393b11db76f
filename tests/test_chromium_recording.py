"""A Chromium publisher over WHIP, recorded through the server's REST API
(tests/browser/record_pages.py): the page draws a synthetic clip (a flash
and a beep at the same instant every second); the file's duration and frame
count are checked against what the page sent, ffmpeg decodes it without an
error, and the audio/video offset is measured between flashes and beeps.
Then the same behind 5% loss both ways on the publisher's link."""

from __future__ import annotations

import json
import statistics

from test_chromium import run_browser_script


def record(seconds: float, loss: float = 0.0) -> dict:
    result = run_browser_script("record_pages.py", seconds, loss, timeout=240)
    rec = result["recording"]
    probe = result["ffprobe"]
    assert isinstance(probe, dict), probe
    streams = {s["codec_type"]: s for s in probe["streams"]}
    duration = float(probe["format"]["duration"])
    frames = int(streams["video"]["nb_read_frames"])
    print(f"\nChromium over WHIP, {seconds:.0f} s at {loss:.0%} loss: page sent {result['sent_frames']} frames in "
          f"{result['wall_s']} s; file {duration:.3f} s, {frames} frames ({frames / result['sent_frames']:.1%}), "
          f"recorder dropped {rec['framesDropped']} frames (asked {rec['keyframesAsked']} keyframes), kernel "
          f"dropped {rec['packetsDropped']} packets; "
          f"A/V offsets (beep - flash) {result['offsets_ms']} ms; NAT dropped {result['nat_dropped']}")
    assert rec["error"] is None and rec["packetsDropped"] == 0, rec
    assert streams["video"]["codec_name"] == "vp8" and streams["audio"]["codec_name"] == "opus", probe
    assert result["decode_errors"] == "", result["decode_errors"]   # plays: no corrupt frame
    result.update(duration=duration, frames=frames)
    return result


def test_a_chromium_publisher_recorded_for_20_s_keeps_its_frames_and_lip_sync():
    r = record(20.0)
    # the file's own timing: video frames strictly increasing, audio frames
    # never overlapping (ffmpeg's null muxer may still complain about the
    # timestamps its decoders make up: reported, not asserted)
    assert r["timing_faults"] == {}, (r["timing_faults"], r["null_muxer_lines"])
    print("null muxer warnings:", r["null_muxer_warnings"], r["null_muxer_lines"])
    # the file spans the recording (it starts at the keyframe asked for at the start)
    assert abs(r["duration"] - r["wall_s"]) <= 0.4, json.dumps(r)[:2000]
    assert r["frames"] >= 0.98 * r["sent_frames"], (r["frames"], r["sent_frames"])
    # one flash and one beep a second, paired within 40 ms
    assert r["flashes"] >= 18 and len(r["offsets_ms"]) >= 18, r
    assert abs(statistics.median(r["offsets_ms"])) <= 40, r["offsets_ms"]


def test_a_chromium_publisher_behind_5_percent_loss_gives_a_valid_file():
    r = record(20.0, loss=0.05)
    assert r["nat_dropped"] > 0
    # a frame with a packet lost for good is skipped with the frames that
    # depend on it until the keyframe the recording asks for, never written
    # corrupt (the decode above is clean). Measured 100% of the frames at 5%
    # both ways (3 runs; 62-77% before the VP8 late-frame placement and the
    # retransmission-store fix, docs/recording.md); the bound leaves room
    # for a loss NACK cannot recover on a busy machine.
    assert r["frames"] >= 0.85 * r["sent_frames"], (r["frames"], r["sent_frames"])
    assert r["offsets_ms"] and abs(statistics.median(r["offsets_ms"])) <= 40, r["offsets_ms"]
