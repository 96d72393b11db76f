"""Viewers' lip sync through the SFU (issue 14), in Chromium: a WHIP
publisher of the flash + beep clip whose video reaches the SFU 100 ms later
than its audio (a relay in front of the SFU holds its video datagrams,
sender reports included), and a WHEP viewer that times the flashes it shows
(requestVideoFrameCallback) against the beeps it plays (AudioWorklet)
(tests/browser/av_sync_pages.py).

The viewer's Chromium synchronizes audio and video with the sender reports
the SFU sends it. Those place the publisher's reports on the SFU's clock
with the least (arrival - NTP) of all its reports, so a stream that arrives
late keeps its capture times and the viewer delays its audio to match;
before that change each report was anchored at its own arrival, and the
viewer showed video ~65 ms behind audio with this delay (docs/recording.md).
"""

from __future__ import annotations

import statistics

from test_chromium import run_browser_script

VIDEO_DELAY_MS = 100


def test_a_whep_viewer_keeps_lip_sync_when_the_publishers_video_arrives_100_ms_late():
    # the WHEP answer as the server writes it ("server"): one stream id for the publisher's tracks
    r = run_browser_script("av_sync_pages.py", 10, VIDEO_DELAY_MS, "server", 15, timeout=150)
    offs = r["offsets_ms"]
    print(f"\nChromium WHEP viewer, publisher's video {VIDEO_DELAY_MS} ms late: offsets (flash shown - beep "
          f"played) {offs} ms, median {r['median_ms']}; jitter buffers {r['jitter_buffer_ms']} ms; "
          f"relay {r['relay']}")
    assert not r["errors"], r["errors"]
    assert len(set(r["server_msids"])) == 1, r["server_msids"]   # one MediaStream: synchronized
    assert r["relay"]["delayed_rtcp"] > 0, r["relay"]   # the video's SRs were held too
    assert len(offs) >= 7, r   # ~10 flashes, each paired with its beep
    # within 40 ms of the beep (without the correction: ~+65 ms; without sync: ~+100 ms)
    assert abs(statistics.median(offs)) <= 40, offs
