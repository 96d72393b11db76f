"""A headless Chromium page publishes a synthetic clip over WHIP (a canvas
that flashes white for 100 ms every second and an oscillator that beeps at
the same instants, both captured in the page), the server records it for
SECONDS through its REST API, and this prints one JSON line: what the page
sent (frames), the file's ffprobe figures, and the offsets between flashes
and beeps measured in the file (decoded with PyAV: video luma, audio level).

With LOSS > 0 the SFU's WebRTC port sits behind a lossy NAT (tests/lossy.py):
every datagram of the publisher, both ways, crosses a seeded lossy link.

Meant to run inside a network namespace that has only `lo`.
Usage: python tests/browser/record_pages.py SECONDS [LOSS]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from aiohttp import web
from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: lossy.py
from demo_pages import CHROMIUM, FLAGS  # noqa: E402
from signaling.server import ROOMS, create_app, start_rooms  # noqa: E402

ROOM = "recorded"
CLIP_PAGE = """<!doctype html><meta charset=utf-8><title>clip</title><body><script>
"use strict";
// 640x360 at 30 fps: black, a square moving (so every frame differs), white
// for 100 ms at each full second; a 1 kHz beep for 100 ms at the same instants.
const canvas = document.createElement("canvas"); canvas.width = 640; canvas.height = 360;
document.body.append(canvas);
const g = canvas.getContext("2d");
const ac = new AudioContext();
const dest = ac.createMediaStreamDestination();
const osc = ac.createOscillator(); osc.frequency.value = 1000;
const gain = ac.createGain(); gain.gain.value = 0;
osc.connect(gain).connect(dest); osc.start();
let flashUntil = 0, nextFlash = performance.now() + 1000;
window.flashes = [];
function draw() {
  const now = performance.now();
  if (now >= nextFlash) {
    flashUntil = nextFlash + 100;
    const at = ac.currentTime + (nextFlash - now) / 1000;
    gain.gain.setValueAtTime(0.8, at);
    gain.gain.setValueAtTime(0, at + 0.1);
    window.flashes.push(nextFlash);
    nextFlash += 1000;
  }
  g.fillStyle = now < flashUntil ? "#fff" : "#000";
  g.fillRect(0, 0, 640, 360);
  g.fillStyle = "#666";
  g.fillRect((now / 5) % 600, 160, 40, 40);
}
setInterval(draw, 1000 / 60);
const stream = canvas.captureStream(30);
stream.addTrack(dest.stream.getAudioTracks()[0]);
window.sent = async () => {
  let frames = 0;
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") frames += s.framesSent || 0;
  });
  return frames;
};
(async () => {
  const pc = new RTCPeerConnection(); window.pc = pc;
  for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  const resp = await fetch("/whip/ROOM", { method: "POST", headers: { "Content-Type": "application/sdp" },
                                          body: pc.localDescription.sdp });
  window.participant = resp.headers.get("X-Sfu-Participant-Id");
  await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
})();
</script>""".replace("ROOM", ROOM)


def timing_faults(path: Path) -> dict[str, list]:
    """Per stream, the packets of the file placed wrongly: a video frame not
    after the previous one, an audio frame starting before the previous one
    ends (overlapping audio); (index, pts, previous end) in ms."""
    out: dict[str, list] = {}
    with av.open(str(path)) as c:
        last: dict[int, tuple[int, int]] = {}
        for pkt in c.demux():
            if pkt.pts is None:
                continue
            st = pkt.stream
            tb = float(st.time_base) * 1000
            pts, dur = round(pkt.pts * tb), round((pkt.duration or 0) * tb)
            prev = last.get(st.index)
            if prev is not None:
                bad = pts <= prev[0] if st.type == "video" else pts < prev[0] + prev[1]
                if bad:
                    out.setdefault(st.type, []).append((pts, prev[0], prev[1]))
            last[st.index] = (pts, dur)
    return {k: v[:10] for k, v in out.items()}


def flashes_and_beeps(path: Path) -> tuple[list[float], list[float], int]:
    """Start times (s) of the flashes (video luma jumps) and beeps (audio
    level jumps) in the file, and its video frame count."""
    flashes, beeps, frames = [], [], 0
    with av.open(str(path)) as f:
        bright_before = False
        for frame in f.decode(video=0):
            frames += 1
            luma = frame.to_ndarray(format="gray").mean()
            bright = luma > 128
            if bright and not bright_before:
                flashes.append(float(frame.pts * frame.time_base))
            bright_before = bright
    with av.open(str(path)) as f:
        loud_before = False
        for frame in f.decode(audio=0):
            pcm = frame.to_ndarray().astype(np.float64)
            if pcm.ndim > 1:
                pcm = pcm.mean(axis=0)
            step = max(1, frame.sample_rate // 1000)  # 1 ms windows
            for i in range(0, len(pcm) - step + 1, step):
                level = float(np.abs(pcm[i:i + step]).max())
                loud = level > 0.2 * (32767 if frame.format.name.startswith("s16") else 1.0)
                if loud and not loud_before:
                    beeps.append(float(frame.pts * frame.time_base) + i / frame.sample_rate)
                loud_before = loud
    return flashes, beeps, frames


def offsets(flashes: list[float], beeps: list[float]) -> list[float]:
    """beep - flash (ms) for each flash with a beep within 300 ms."""
    out = []
    for fl in flashes:
        near = min(beeps, key=lambda b: abs(b - fl), default=None)
        if near is not None and abs(near - fl) < 0.3:
            out.append(round((near - fl) * 1000, 1))
    return out


async def main(seconds: float, loss: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sfu-rec-"))
    nat = None
    if loss > 0:
        from demo_pages import _free_port
        from lossy import LossyNat

        rtc_port = _free_port()
        nat = LossyNat(("127.0.0.1", rtc_port), loss=loss, delay_ms=5, seed=5).start()
        rooms = await start_rooms(workers=1, rtc_port=rtc_port, announced_rtc_port=nat.port)
    else:
        rooms = await start_rooms(workers=1)
    app = create_app(rooms, recordings_dir=str(tmp))

    async def clip(request: web.Request) -> web.Response:
        return web.Response(text=CLIP_PAGE, content_type="text/html")

    app.router.add_get("/clip", clip)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    result: dict = {"seconds": seconds, "loss": loss}
    try:
        import aiohttp

        async with async_playwright() as pw, aiohttp.ClientSession() as http:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=FLAGS + ["--autoplay-policy=no-user-gesture-required"])
            page = await (await browser.new_context()).new_page()
            await page.goto(f"{base}/clip")
            await page.wait_for_function("() => window.participant && window.pc.connectionState === 'connected'",
                                         timeout=30000)
            await asyncio.sleep(1.0)
            pid = await page.evaluate("() => window.participant")
            async with http.post(f"{base}/api/rooms/{ROOM}/recordings", json={"participantId": pid}) as resp:
                assert resp.status == 201, await resp.text()
                rec = (await resp.json())["recordings"][0]
            sent0, t0 = await page.evaluate("() => window.sent()"), time.monotonic()
            await asyncio.sleep(seconds)
            sent1, t1 = await page.evaluate("() => window.sent()"), time.monotonic()
            async with http.post(f"{base}/api/rooms/{ROOM}/recordings/{rec['recordingId']}/stop") as resp:
                stopped = (await resp.json())["recording"]
            counters = await rooms.workers[0].get_counters()
            room = rooms.rooms.get(ROOM)
            result["producers"] = [{k: v for k, v in st.items() if k.startswith("nack") or k in (
                "packetCount", "packetsLost", "retransmittedPackets", "keyframeRequests", "roundTripTime")}
                for p in (room.participants.values() if room else []) for pr in p.producers.values()
                if pr.kind == "video" for st in await pr.get_stats()]
            result["counters"] = {k: v for k, v in counters.items()
                                  if v and any(w in k for w in ("nack", "retrans", "rtx", "pli", "keyframe", "drop", "tx_"))}
            await browser.close()
        path = next(tmp.rglob("*.webm"))
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                                "stream=codec_type,codec_name,nb_read_frames:format=duration", "-of", "json",
                                str(path)], capture_output=True, text=True, timeout=120)
        # every frame decoded as it is timed in the file (no frame-rate conversion)
        decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "null", "-"],
                                capture_output=True, text=True, timeout=120)
        flashes, beeps, frames = flashes_and_beeps(path)
        fps = (sent1 - sent0) / (t1 - t0)
        result.update({
            "sent_frames": sent1 - sent0, "sent_fps": round(fps, 2), "wall_s": round(t1 - t0, 3),
            "recording": stopped, "ffprobe": json.loads(probe.stdout) if probe.returncode == 0 else probe.stderr,
            # errors of the decoders; the null muxer's complaints about the
            # timestamps ffmpeg makes up for decoded audio after a lost Opus
            # packet (a gap in the file, as it should be) are kept apart
            "decode_errors": "\n".join(ln for ln in decode.stderr.splitlines()
                                       if "non monotonically increasing dts to muxer" not in ln)[-2000:],
            "null_muxer_warnings": sum("non monotonically increasing dts to muxer" in ln
                                       for ln in decode.stderr.splitlines()),
            "null_muxer_lines": [ln for ln in decode.stderr.splitlines()
                                 if "non monotonically increasing dts to muxer" in ln][:5],
            "timing_faults": timing_faults(path),
            "file_frames": frames,
            "flashes": len(flashes), "beeps": len(beeps), "offsets_ms": offsets(flashes, beeps),
            "nat_dropped": nat.dropped if nat else 0,
        })
    finally:
        await runner.cleanup()
        await rooms.close()
        if nat:
            nat.close()
    return result


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    loss = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    print(json.dumps(asyncio.run(main(secs, loss))), flush=True)
