"""GStreamer publishes over WHIP, headless Chromium views over WHEP.

Starts sfu-server's app in-process (as tests/browser/demo_pages.py does),
then the GStreamer webrtcbin publisher (tests/clients/gst_whip.py, run with
Debian's /usr/bin/python3), then a Chromium page whose plain
RTCPeerConnection (recvonly audio + video) POSTs its offer to /whep/{room}.
Prints one JSON line: the publisher's events, the viewer's getStats() twice
(a few seconds apart) and the server's transport stats.

Meant to run inside a network namespace that has only `lo`
(tests/test_chromium.py's run_browser_script does that).
Usage: python tests/clients/gst_whep_run.py vp8|h264 [BUNDLE_POLICY]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web
from playwright.async_api import async_playwright

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "browser"))

from demo_pages import CHROMIUM, FLAGS  # noqa: E402

from signaling.server import create_app, start_rooms  # noqa: E402

ROOM = "gstreamer"
SYSTEM_PYTHON = "/usr/bin/python3"
MEDIA_WAIT_S = 30.0  # generous: the machine is shared

VIEWER_HTML = "<!doctype html><title>WHEP viewer</title><p>WHEP viewer</p>"

WHEP_JS = """async (url) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  window.viewerPc = pc;
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/sdp'},
                              body: pc.localDescription.sdp});
  const body = await r.text();
  if (r.status !== 201) return {status: r.status, body};
  try {
    await pc.setRemoteDescription({type: 'answer', sdp: body});
  } catch (e) {
    return {status: r.status, answer: body, error: String(e)};
  }
  return {status: r.status, answer: body};
}"""

STATS_JS = """async () => {
  const pc = window.viewerPc;
  const out = {connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState,
               audio: null, video: null};
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    const codec = r.codecId && stats.get(r.codecId);
    out[r.kind] = {packetsReceived: r.packetsReceived || 0, framesDecoded: r.framesDecoded || 0,
                   bytesReceived: r.bytesReceived || 0, packetsLost: r.packetsLost || 0,
                   frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0,
                   codec: codec ? codec.mimeType : null};
  });
  stats.forEach((r) => {
    if (r.type === 'transport') out.transport = {bytesReceived: r.bytesReceived, packetsReceived: r.packetsReceived,
                                                  dtlsState: r.dtlsState};
  });
  return out;
}"""


class PublisherProcess:
    """The GStreamer subprocess; collects its JSON event lines."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.stderr = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(self, url: str, codec: str, seconds: float, bundle_policy: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, str(HERE / "gst_whip.py"), url, codec, str(seconds), bundle_policy,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        async for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "output", "line": line.decode(errors="replace").rstrip()})

    def seen(self, event: str) -> bool:
        return any(e["event"] == event for e in self.events)

    def connected(self) -> bool:
        return any(e["event"] == "state" and e.get("connection") == "connected" for e in self.events)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader:
            await self._reader
        assert self.proc.stderr
        self.stderr = (await self.proc.stderr.read()).decode(errors="replace")[-3000:]
        return self.proc.returncode


async def wait_for(predicate, timeout: float, step: float = 0.2) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return await predicate()


async def server_transports(rooms) -> list[dict]:
    out = []
    for room in rooms.rooms.values():
        for t in room.router.transports:
            st = (await t.get_stats())[0]
            out.append({k: st.get(k) for k in ("iceState", "dtlsState", "rtpPacketsReceived", "rtpPacketsSent",
                                               "packetsDiscarded")})
    return out


async def main(codec: str, bundle_policy: str) -> dict:
    rooms = await start_rooms(workers=1)
    app = create_app(rooms)

    async def viewer_page(_request: web.Request) -> web.Response:
        return web.Response(text=VIEWER_HTML, content_type="text/html")

    app.router.add_get("/gst-viewer", viewer_page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    publisher = PublisherProcess()
    result: dict = {"codec": codec, "bundle_policy": bundle_policy, "viewer": None, "first": None, "second": None}
    try:
        # The publisher runs for longer than this script needs; it is stopped at the end.
        await publisher.start(f"{base}/whip/{ROOM}", codec, 600, bundle_policy)

        async def published() -> bool:
            return publisher.connected() or publisher.seen("error") or publisher.exited()

        await wait_for(published, MEDIA_WAIT_S)
        result["publisher_connected"] = publisher.connected()
        if not publisher.connected():
            return result
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = await browser.new_page()
            await page.goto(f"{base}/gst-viewer")
            result["viewer"] = await page.evaluate(WHEP_JS, f"{base}/whep/{ROOM}")
            if result["viewer"]["status"] == 201 and not result["viewer"].get("error"):
                stats: dict = {}

                async def media_flows() -> bool:
                    nonlocal stats
                    stats = await page.evaluate(STATS_JS)
                    a, v = stats["audio"], stats["video"]
                    return bool(a and v and a["packetsReceived"] > 0 and v["framesDecoded"] > 0)

                await wait_for(media_flows, MEDIA_WAIT_S, 0.5)
                result["first"] = stats

                async def more_media() -> bool:
                    nonlocal stats
                    stats = await page.evaluate(STATS_JS)
                    a, v, a0, v0 = stats["audio"], stats["video"], result["first"]["audio"], result["first"]["video"]
                    return bool(a and v and a0 and v0 and a["packetsReceived"] >= a0["packetsReceived"] + 50
                                and v["framesDecoded"] >= v0["framesDecoded"] + 30)

                await wait_for(more_media, MEDIA_WAIT_S, 0.5)
                result["second"] = stats
            await browser.close()
    finally:
        result["transports"] = await server_transports(rooms)
        result["publisher_returncode"] = await publisher.stop()
        result["publisher_events"] = publisher.events
        result["publisher_stderr"] = publisher.stderr
        await runner.cleanup()
        await rooms.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "max-bundle"))),
          flush=True)
