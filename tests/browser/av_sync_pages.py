"""Viewers' A/V offset through the SFU, measured in Chromium.

A headless Chromium page publishes the synthetic clip of record_pages.py
over WHIP (a white frame and a 1 kHz beep at the same capture instant each
second); a second page views it over WHEP and detects both:

* the flash with requestVideoFrameCallback: each frame about to be shown is
  drawn onto a 16x9 canvas, and the first bright one of a second is timed at
  its ``expectedDisplayTime`` (the compositor's display time, performance.now
  clock);
* the beep with an AudioWorklet on the remote audio track (sample accurate):
  the first loud sample after 300 ms of quiet, its AudioContext frame put on
  the performance.now clock with ``getOutputTimestamp()`` (the time the
  sample leaves for the output device). The track is also played by an
  <audio> element: Chromium pulls a remote track's audio out of its jitter
  buffer only for a playing element.

offset = flash display time - beep output time, one per second (ms; > 0:
video late).

The publisher's path is asymmetric: the SFU's WebRTC port sits behind a UDP
relay (tests/av_relay.py) that holds every video datagram of a client (RTP
of a non-audio payload type, and RTCP whose sender SSRC is one of those
video SSRCs: the video sender reports travel with their stream) VIDEO_DELAY_MS
longer than audio. The viewer's path through the relay is not delayed.

MSID: "shared" (default) makes the viewer put the WHEP answer's two tracks in
one MediaStream (one a=msid stream id) before setting it, so Chromium
synchronizes them (its sync group is the stream id); "server" keeps the
answer as the server wrote it.

Meant to run inside a network namespace that has only `lo`. The server runs
in this process: whichever `sfu`/`signaling` PYTHONPATH finds first (so a
benchmark can point it at another build).

Usage: python tests/browser/av_sync_pages.py SECONDS VIDEO_DELAY_MS [MSID] [WARMUP_S]
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from aiohttp import web
from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: av_relay.py
from av_relay import VideoDelayRelay  # noqa: E402
from demo_pages import CHROMIUM, FLAGS, _free_port  # noqa: E402
from record_pages import CLIP_PAGE, ROOM  # noqa: E402
from signaling.server import create_app, start_rooms  # noqa: E402

# The publisher's offer leaves transport-wide congestion control out of its
# audio section (the answer mirrors it, so audio RTP carries no transport-wide
# sequence number): with audio and video in one transport-wide sequence, the
# relay's constant extra delay of video alone looks to Chromium's delay-based
# estimator like a queue building and emptying at every switch between them,
# and it held the video at 30 kbit/s (84 kbit/s estimated). Video alone sees
# a constant delay.
AUDIO_WITHOUT_TWCC = """(sdp) => sdp.split(/(?=^m=)/m).map((sec) => !sec.startsWith("m=audio") ? sec :
  sec.split("\\r\\n").filter((ln) => !/transport-wide-cc|transport-cc/.test(ln)).join("\\r\\n")).join("")"""
PUBLISHER_PAGE = CLIP_PAGE.replace("body: pc.localDescription.sdp",
                                   f"body: ({AUDIO_WITHOUT_TWCC})(pc.localDescription.sdp)")
assert PUBLISHER_PAGE != CLIP_PAGE

VIEWER_PAGE = """<!doctype html><meta charset=utf-8><title>viewer</title><body>
<video id=v autoplay playsinline muted width=320 height=180></video><audio id=a autoplay></audio>
<script>
"use strict";
const MSID = "MSID_MODE";
window.flashes = []; window.beeps = []; window.errors = [];
const WORKLET = `
class Beeps extends AudioWorkletProcessor {
  constructor() { super(); this.quiet = 1e9; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) for (let i = 0; i < ch.length; i++) {
      if (Math.abs(ch[i]) > 0.2) {
        if (this.quiet > sampleRate * 0.3) this.port.postMessage(currentFrame + i);
        this.quiet = 0;
      } else this.quiet++;
    }
    return true;
  }
}
registerProcessor("beeps", Beeps);`;
const v = document.getElementById("v"), a = document.getElementById("a");
const cv = document.createElement("canvas"); cv.width = 16; cv.height = 9;
const cg = cv.getContext("2d", { willReadFrequently: true });
let bright = false;
window.frames = 0;
function onFrame(now, md) {
  window.frames++;
  cg.drawImage(v, 0, 0, 16, 9);
  const d = cg.getImageData(0, 0, 16, 9).data;
  let s = 0;
  for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
  const luma = s / (3 * 16 * 9);
  if (luma > 128 && !bright) window.flashes.push({ t: md.expectedDisplayTime, rtp: md.rtpTimestamp,
                                                  recv: md.receiveTime, now });
  bright = luma > 128;
  v.requestVideoFrameCallback(onFrame);
}
async function startAudio(track) {
  a.srcObject = new MediaStream([track]);
  a.play().catch((e) => window.errors.push("audio.play " + e));
  const ac = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 }); window.ac = ac;
  await ac.audioWorklet.addModule(URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" })));
  const node = new AudioWorkletNode(ac, "beeps");
  ac.createMediaStreamSource(new MediaStream([track])).connect(node);
  node.connect(ac.destination);
  node.port.onmessage = (e) => {
    const ts = ac.getOutputTimestamp();
    window.beeps.push({ t: ts.performanceTime + (e.data / ac.sampleRate - ts.contextTime) * 1000,
                        ctx: e.data / ac.sampleRate });
  };
  await ac.resume();
}
(async () => {
  const pc = new RTCPeerConnection(); window.pc = pc;
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (e) => {
    if (e.track.kind === "video") {
      v.srcObject = new MediaStream([e.track]);
      v.play().catch((err) => window.errors.push("video.play " + err));
      v.requestVideoFrameCallback(onFrame);
    } else startAudio(e.track).catch((err) => window.errors.push("audio " + err));
  };
  await pc.setLocalDescription(await pc.createOffer());
  const resp = await fetch("/whep/ROOM", { method: "POST", headers: { "Content-Type": "application/sdp" },
                                          body: pc.localDescription.sdp });
  let sdp = await resp.text();
  if (resp.status !== 201) { window.errors.push("whep " + resp.status + " " + sdp); return; }
  window.serverMsids = [...sdp.matchAll(/^a=msid:(\\S+)/gm)].map((m) => m[1]);
  if (MSID === "shared") {
    // one stream id for both tracks: Chromium synchronizes the receivers of a stream
    sdp = sdp.replace(/^a=msid:\\S+ /gm, "a=msid:av-sync ").replace(/^(a=ssrc:\\d+ msid:)\\S+ /gm, "$1av-sync ");
  }
  await pc.setRemoteDescription({ type: "answer", sdp });
})().catch((err) => window.errors.push(String(err)));
window.stats = async () => {
  const out = {};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    out[s.kind] = { jitterBufferDelay: s.jitterBufferDelay, jitterBufferEmittedCount: s.jitterBufferEmittedCount,
                    jitterBufferTargetDelay: s.jitterBufferTargetDelay,
                    jitterBufferMinimumDelay: s.jitterBufferMinimumDelay,
                    estimatedPlayoutTimestamp: s.estimatedPlayoutTimestamp, timestamp: s.timestamp,
                    packetsReceived: s.packetsReceived, packetsLost: s.packetsLost,
                    framesDecoded: s.framesDecoded, totalSamplesReceived: s.totalSamplesReceived };
  });
  return out;
};
</script>""".replace("ROOM", ROOM)


def pair(flashes: list[dict], beeps: list[dict], since: float) -> list[float]:
    """flash - beep (ms) for each flash after `since` (performance.now ms)
    with a beep within 400 ms."""
    out = []
    for fl in flashes:
        if fl["t"] < since:
            continue
        near = min(beeps, key=lambda b: abs(b["t"] - fl["t"]), default=None)
        if near is not None and abs(near["t"] - fl["t"]) < 400:
            out.append(round(fl["t"] - near["t"], 1))
    return out


def delay_of(stats0: dict, stats1: dict, kind: str, key: str = "jitterBufferDelay") -> float | None:
    """Mean jitter-buffer delay (or target delay: `key`) in ms between two
    getStats() snapshots."""
    a, b = stats0.get(kind) or {}, stats1.get(kind) or {}
    n = (b.get("jitterBufferEmittedCount") or 0) - (a.get("jitterBufferEmittedCount") or 0)
    if n <= 0:
        return None
    return round(((b.get(key) or 0) - (a.get(key) or 0)) / n * 1000, 1)


async def main(seconds: float, video_delay_ms: float, msid: str, warmup_s: float) -> dict:
    rtc_port = _free_port()
    relay = await VideoDelayRelay(("127.0.0.1", rtc_port), video_delay_ms).start()
    rooms = await start_rooms(workers=1, rtc_port=rtc_port, announced_rtc_port=relay.port)
    app = create_app(rooms)

    async def page(request: web.Request) -> web.Response:
        text = PUBLISHER_PAGE if request.match_info["name"] == "clip" else VIEWER_PAGE.replace("MSID_MODE", msid)
        return web.Response(text=text, content_type="text/html")

    app.router.add_get("/av/{name}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    import sfu

    result: dict = {"seconds": seconds, "video_delay_ms": video_delay_ms, "msid": msid, "warmup_s": warmup_s,
                    "sfu": sfu.__file__}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=FLAGS + ["--autoplay-policy=no-user-gesture-required"])
            ctx = await browser.new_context()
            pub = await ctx.new_page()
            await pub.goto(f"{base}/av/clip")
            await pub.wait_for_function("() => window.participant && window.pc.connectionState === 'connected'",
                                        timeout=30000)
            view = await ctx.new_page()
            await view.goto(f"{base}/av/view")
            await view.wait_for_function("() => (window.pc && window.pc.connectionState === 'connected' "
                                         "&& window.frames > 0 && window.ac) || window.errors.length",
                                         timeout=30000)
            errors = await view.evaluate("() => window.errors")
            assert not errors, errors
            # Chromium's A/V synchronization moves a stream's delay by at
            # most 80 ms a second and filters its measurements: let it settle
            await asyncio.sleep(warmup_s)
            since = await view.evaluate("() => performance.now()")
            stats0 = await view.evaluate("() => window.stats()")
            t0 = time.monotonic()
            # each second: the receivers' mean jitter-buffer delay over it
            series, prev = [], stats0
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
                cur = await view.evaluate("() => window.stats()")
                entry = {k: delay_of(prev, cur, k) for k in ("audio", "video")}
                # what the receivers play now, on the publisher's clock (the SFU's SRs): equal when
                # Chromium believes them in sync
                a_ept, v_ept = ((cur.get(k) or {}).get("estimatedPlayoutTimestamp") for k in ("audio", "video"))
                entry["ept_video_minus_audio"] = v_ept - a_ept if a_ept and v_ept else None
                series.append(entry)
                prev = cur
            stats1 = prev
            got = await view.evaluate("() => ({flashes: window.flashes, beeps: window.beeps, frames: window.frames,"
                                      " errors: window.errors, serverMsids: window.serverMsids,"
                                      " sampleRate: window.ac.sampleRate, baseLatency: window.ac.baseLatency,"
                                      " outputLatency: window.ac.outputLatency})")
            pub_stats = await pub.evaluate("""async () => {
              const out = {};
              (await window.pc.getStats()).forEach((s) => {
                if (s.type === "outbound-rtp") out[s.kind] = {fps: s.framesPerSecond, targetBitrate: s.targetBitrate,
                  limitation: s.qualityLimitationReason, frameWidth: s.frameWidth, packetsSent: s.packetsSent};
                if (s.type === "candidate-pair" && s.nominated) out.availableOutgoingBitrate = s.availableOutgoingBitrate;
              });
              return out;
            }""")
            await browser.close()
        offs = pair(got["flashes"], got["beeps"], since)
        result.update({
            "wall_s": round(time.monotonic() - t0, 2),
            "offsets_ms": offs,
            "median_ms": statistics.median(offs) if offs else None,
            "flashes": sum(f["t"] >= since for f in got["flashes"]),
            "beeps": sum(b["t"] >= since for b in got["beeps"]),
            "frames_shown": got["frames"],
            "errors": got["errors"],
            "server_msids": got["serverMsids"],
            "audio_context": {k: got[k] for k in ("sampleRate", "baseLatency", "outputLatency")},
            # what Chromium's receivers did over the measured seconds
            "jitter_buffer_ms": {k: delay_of(stats0, stats1, k) for k in ("audio", "video")},
            "target_delay_ms": {k: delay_of(stats0, stats1, k, "jitterBufferTargetDelay") for k in ("audio", "video")},
            "jitter_buffer_series_ms": series,
            "stats": stats1,
            "relay": relay.counters(),
            "publisher": pub_stats,
        })
    finally:
        await runner.cleanup()
        await rooms.close()
        relay.close()
    return result


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 100.0
    mode = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else "shared"
    warm = float(sys.argv[4]) if len(sys.argv) > 4 else 8.0
    print(json.dumps(asyncio.run(main(secs, delay, mode, warm))), flush=True)
