"""Runs sfu-server and N headless Chromium pages of the demo room, then prints
one JSON line with what each page's getStats() showed.

Meant to run inside a network namespace that has only `lo` (see
tests/test_chromium.py), so Chromium can only gather 127.0.0.1.
Usage: python tests/browser/demo_pages.py PAGES SECONDS [LOSS] [auth]

With `auth` the server authenticates like sfu-server (JWT on /api, /whip,
/whep) and each page gets a token of its own user in its URL.

With LOSS > 0 the SFU's shared WebRTC port sits behind a lossy NAT
(tests/lossy.py) and announces the NAT's port, so every browser datagram
in both directions crosses a seeded lossy link.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

from aiohttp import web
from playwright.async_api import async_playwright

from signaling.server import create_app, start_rooms

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    # the namespace has only lo; Chromium skips loopback for WebRTC unless told
    "--allow-loopback-in-peer-connection",
]

STATS_JS = """async () => {
  const out = {};
  for (const [id, v] of window.sfuViewers) {
    const stats = await v.pc.getStats();
    const s = {framesDecoded: 0, audioPackets: 0};
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.nackCount = r.nackCount || 0;
        s.packetsLost = r.packetsLost || 0;
        s.pliCount = r.pliCount || 0;
        s.keyFramesDecoded = r.keyFramesDecoded || 0;
        s.freezeCount = r.freezeCount || 0;
        s.totalFreezesDuration = r.totalFreezesDuration || 0;
        s.framesReceived = r.framesReceived || 0;
        s.framesDropped = r.framesDropped || 0;
      }
      if (r.type === 'inbound-rtp' && r.kind === 'audio') s.audioPackets = r.packetsReceived || 0;
    });
    // what the tile's caption shows (the page polls the SFU's consumer stats)
    s.layer = v.layers ? v.layers.consumer.spatialLayer : null;
    s.layerChanges = v.layers ? v.layers.consumer.layerChanges : null;
    s.bwe = v.layers ? v.layers.transport.bwe : null;
    s.estimate = v.layers ? (v.layers.transport.availableOutgoingBitrate || 0) : 0;
    s.caption = v.figure.querySelector('figcaption').textContent;
    out[id] = s;
  }
  return {status: window.sfuStatus || null, viewers: out};
}"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(pages: int, seconds: float, loss: float = 0.0, auth: bool = False) -> dict:
    nat = None
    if loss > 0:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from lossy import LossyNat

        rtc_port = _free_port()
        nat = LossyNat(("127.0.0.1", rtc_port), loss=loss, delay_ms=5, seed=11).start()
        rooms = await start_rooms(workers=1, rtc_port=rtc_port, announced_rtc_port=nat.port)
    else:
        rooms = await start_rooms(workers=1)
    authenticator = None
    if auth:
        from signaling.auth import AuthConfig, Authenticator

        authenticator = Authenticator(AuthConfig.from_options(secret="demo-pages-test-secret-0123456789abcdef"))
    runner = web.AppRunner(create_app(rooms, auth=authenticator))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/?room=chromium"
    result: dict = {}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            tabs = []
            for i in range(pages):
                tab = await ctx.new_page()
                await tab.goto(url + (f"&token={authenticator.mint(f'user{i}')}" if authenticator else ""))
                tabs.append(tab)
                await asyncio.sleep(1.0)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while loop.time() < deadline:
                counts = [await t.evaluate("() => window.sfuViewers ? window.sfuViewers.size : 0") for t in tabs]
                if all(c == pages - 1 for c in counts):
                    break
                await asyncio.sleep(0.25)
            # then until every tile has decoded a frame (the viewer exists
            # before its WHEP exchange)
            viewing = loop.time()
            while loop.time() < deadline:
                snap = [await t.evaluate(STATS_JS) for t in tabs]
                if all(v["framesDecoded"] > 0 for s in snap for v in s["viewers"].values()):
                    break
                await asyncio.sleep(0.1)
            first_frame_s = round(loop.time() - viewing, 2)
            first = [await t.evaluate(STATS_JS) for t in tabs]
            await asyncio.sleep(seconds)
            second = [await t.evaluate(STATS_JS) for t in tabs]
            result = {"url": url, "first": first, "second": second, "nat_dropped": nat.dropped if nat else 0,
                      "first_frame_s": first_frame_s,
                      "counters": await rooms.workers[0].get_counters(), "transports": []}
            for room in rooms.rooms.values():
                for t in room.router.transports:
                    st = (await t.get_stats())[0]
                    result["transports"].append({k: st.get(k) for k in (
                        "iceState", "dtlsState", "rtpPacketsReceived", "rtpPacketsSent", "rtcpPacketsReceived",
                        "packetsDiscarded", "dtlsStats", "iceStats", "roundTripTime", "rttSamples")})
                    for p in t.producers:
                        if p.kind == "video":
                            result.setdefault("video_producers", []).append(
                                [s.get("packetCount", 0) for s in await p.get_stats()])
            await browser.close()
    finally:
        await runner.cleanup()
        await rooms.close()
        if nat:
            nat.close()
    return result


async def kill_worker(kills: int) -> dict:
    """Two demo pages in a room on one of two workers; the room's worker is
    killed (SIGKILL) ``kills`` times. Per kill: when each page decoded the
    other again (a new tile, frames advancing), on this process's clock."""
    import os
    import signal

    rooms = await start_rooms(workers=2)
    runner = web.AppRunner(create_app(rooms))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/?room=chromium&simulcast=0"
    result: dict = {"kills": []}
    loop = asyncio.get_running_loop()

    async def decoding(tabs: list, before: list | None) -> list:
        """Per tab: the id of the one tile it shows when that tile decodes
        (and is not one of ``before``), else None."""
        out = []
        for i, t in enumerate(tabs):
            snap = await t.evaluate(STATS_JS)
            ok = [pid for pid, v in snap["viewers"].items()
                  if v["framesDecoded"] > 2 and (before is None or pid != before[i])]
            out.append(ok[0] if ok else None)
        return out

    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            tabs = []
            for _ in range(2):
                tab = await ctx.new_page()
                await tab.goto(url)
                tabs.append(tab)
            deadline = loop.time() + 30
            shown = [None, None]
            while None in shown and loop.time() < deadline:
                shown = await decoding(tabs, None)
                await asyncio.sleep(0.1)
            if None in shown:
                raise RuntimeError("the two pages never decoded each other")
            for _ in range(kills):
                await asyncio.sleep(1.0)
                room = rooms.rooms["chromium"]
                pid = room.router.worker.pid
                killed = loop.time()
                os.kill(pid, signal.SIGKILL)
                back: list = [None, None]
                now_shown = list(shown)
                while None in back and loop.time() < killed + 30:
                    cur = await decoding(tabs, shown)
                    for i, c in enumerate(cur):
                        if back[i] is None and c is not None:
                            back[i] = round(loop.time() - killed, 3)
                            now_shown[i] = c
                    await asyncio.sleep(0.05)
                new_room = rooms.rooms.get("chromium")
                result["kills"].append({"worker_pid": pid, "back_s": back,
                                        "new_worker_pid": new_room.router.worker.pid if new_room else None,
                                        "recoveries": [len(await t.evaluate("() => window.sfuRecoveries"))
                                                       for t in tabs]})
                if None in back:
                    break
                shown = now_shown
            await browser.close()
    finally:
        await runner.cleanup()
        await rooms.close()
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "kill":
        print(json.dumps(asyncio.run(kill_worker(int(sys.argv[2]) if len(sys.argv) > 2 else 3))), flush=True)
        sys.exit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    loss = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    with_auth = len(sys.argv) > 4 and sys.argv[4] == "auth"
    print(json.dumps(asyncio.run(main(n, secs, loss, with_auth))), flush=True)
