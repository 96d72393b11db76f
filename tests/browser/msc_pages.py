"""Runs sfu-server (in-process, one worker, JWT auth) and headless Chromium
pages that use the real mediasoup-client (tests/browser/msc/, bundled by
esbuild into tests/browser/msc/build/msc.js) against its REST API, then
prints one JSON line with what each page's getStats() showed.

Meant to run inside a network namespace that has only `lo` (see
tests/test_chromium.py `run_browser_script`). Usage:

    python tests/browser/msc_pages.py mesh PAGES CODEC [simulcast]
        PAGES pages join one room at once, each publishing audio + video
        (CODEC: vp8, h264 or default) and consuming every other page
        (`simulcast`: video with three RID encodings).
    python tests/browser/msc_pages.py late ROUNDS CODEC [keep-going]
        ROUNDS times, in a fresh room: two pages join and consume each
        other; once both decode, a third page joins, publishing audio then
        video in even rounds and video then audio in odd rounds (so its
        MIDs are "0"/"1" of the other kind than on the incumbents' receiving
        side). Stops at the first failed round unless `keep-going`.
    python tests/browser/msc_pages.py simulcast
        One page produces video with three RID encodings (mediasoup-client's
        usual simulcast); prints what the server answered.
    python tests/browser/msc_pages.py layers
        Two pages publish with simulcast and consume each other; the first
        page's consumer of the second's video is moved to the top encoding,
        then back to the first, through the REST route
        (POST .../consumers/{id}/preferred-layers); prints the decoded width
        and framesDecoded it sampled every 50 ms after each request.
    python tests/browser/msc_pages.py bwe [KBPS] [ON_S] [OFF_S] [END_S]
        One page publishes three VP8 encodings (960x540 camera); viewer A
        consumes it directly, viewer B through a relay (tests/lossy.py)
        whose leg toward B is a KBPS kbit/s bottleneck (default 300, 200 ms
        drop-tail queue) from ON_S to OFF_S seconds (defaults 5, 20) of the
        END_S-second run (default 35). Both viewers ask for the top layer
        (preferred-layers 2) before the run. Every 250 ms it samples both
        pages' getStats (decoded width, frames, loss, freezes...), the
        server's consumer and transport stats, and the relay's counters;
        prints the time series (issue 12's bandwidth-estimation figures;
        benchmarks/plot_bwe.py plots them).
    python tests/browser/msc_pages.py svc [KBPS] [ON_S] [OFF_S] [END_S]
    python tests/browser/msc_pages.py nodes [CODEC]      (a room over two cluster nodes: redis-server)
        The same with one VP9 encoding in scalabilityMode L3T3_KEY (three
        spatial layers, 240/480/960 px wide) instead of simulcast.

The page (tests/browser/msc/index.html) and the bundle are served by the
sfu-server app itself under /msc/ (routes added here, on the test's copy of
the app), so the REST calls are same-origin.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from demo_pages import CHROMIUM, FLAGS
from signaling.auth import AuthConfig, Authenticator
from signaling.server import create_app, start_rooms

HERE = Path(__file__).resolve().parent / "msc"
BUNDLE = HERE / "build" / "msc.js"
SECRET = "msc-pages-test-secret-0123456789abcdef"
CODECS = {"vp8": "video/VP8", "vp9": "video/VP9", "h264": "video/H264", "default": ""}

#: bounds of the waits (busy shared machine: generous, never the thing tested)
READY_S = 30.0
RISING_S = 20.0


def flowing(stats: dict[str, Any], others: list[str]) -> bool:
    """Every other participant's audio and video are consumed, resumed, and
    counted on the consumer's receiver (video decoded, audio received)."""
    if stats is None or stats.get("status") != "ready":
        return False
    for pid in others:
        for kind, counter in (("audio", "packetsReceived"), ("video", "framesDecoded")):
            recs = [r for r in stats["remotes"] if r["participantId"] == pid and r["kind"] == kind
                    and r["state"] == "resumed"]
            if len(recs) != 1 or not any(i[counter] > 0 for i in recs[0]["inbound"]):
                return False
    return True


def _counter(stats: dict[str, Any], pid: str, kind: str) -> int:
    counter = "framesDecoded" if kind == "video" else "packetsReceived"
    for r in stats["remotes"]:
        if r["participantId"] == pid and r["kind"] == kind and r["state"] == "resumed":
            return max((i[counter] for i in r["inbound"]), default=0)
    return 0


def rising(first: dict[str, Any], second: dict[str, Any], others: list[str]) -> bool:
    return all(_counter(second, pid, kind) > _counter(first, pid, kind)
               for pid in others for kind in ("audio", "video"))


class Session:
    """The server, the browser, and the pages opened so far."""

    def __init__(self, browser: Browser, base_url: str, auth: Authenticator) -> None:
        self.browser = browser
        self.base_url = base_url
        self.auth = auth
        self.console: list[str] = []
        self._users = 0
        self.tokens: dict[tuple[str, str], str] = {}

    async def open(self, ctx: BrowserContext, room: str, codec: str, extra: str = "",
                   relay_for: Any = None) -> Page:
        self._users += 1
        user = f"user{self._users}"
        page = await ctx.new_page()
        if relay_for is not None:  # the page's relay=1 asks it for a relay toward each server port
            await page.expose_function("relayFor", relay_for)
        page.on("console", lambda m: self.console.append(f"{user} {m.type}: {m.text}"[:300])
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.console.append(f"{user} pageerror: {e}"[:300]))
        token = self.auth.mint(user)
        self.tokens[room, user] = token
        url = f"{self.base_url}/msc/?room={room}&token={token}"
        if CODECS[codec]:
            url += f"&codec={CODECS[codec]}"
        await page.goto(url + extra)
        return page


async def snapshot(pages: list[Page]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(p.evaluate("() => window.mscStats ? window.mscStats() : null")
                                        for p in pages)))


def expected_remotes(stats: list[dict[str, Any]]) -> list[list[str]]:
    ids = [s["participantId"] if s else None for s in stats]
    return [[q for q in ids if q and q != me] for me in ids]


async def wait_flowing(pages: list[Page], count: int, timeout: float) -> tuple[bool, list[dict[str, Any]]]:
    """Polls until every page sees ``count`` other participants flowing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await snapshot(pages)
        others = expected_remotes(stats)
        if all(len(o) == count for o in others) and all(flowing(s, o) for s, o in zip(stats, others)):
            return True, stats
        # a page's error is final (a failed consume leaves its recv transport's
        # SDP broken): no need to wait for the deadline
        if loop.time() > deadline or any(s and s["errors"] for s in stats):
            return False, stats
        await asyncio.sleep(0.25)


async def wait_rising(pages: list[Page], first: list[dict[str, Any]], timeout: float
                      ) -> tuple[bool, list[dict[str, Any]]]:
    """Polls until every counter of ``first`` has grown on every page."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    others = expected_remotes(first)
    while True:
        stats = await snapshot(pages)
        if all(s is not None and rising(f, s, o) for f, s, o in zip(first, stats, others)):
            return True, stats
        if loop.time() > deadline:
            return False, stats
        await asyncio.sleep(0.25)


async def measure(pages: list[Page], timeout: float = READY_S) -> dict[str, Any]:
    """``first``: once every page has every other flowing (or at the
    deadline); ``second``: once every counter grew (or at the deadline)."""
    ok_first, first = await wait_flowing(pages, len(pages) - 1, timeout)
    ok_second, second = await wait_rising(pages, first, RISING_S if ok_first else 2.0)
    return {"ok": ok_first and ok_second, "flowing": ok_first, "rising": ok_second,
            "first": first, "second": second}


async def leave(ctx: BrowserContext, pages: list[Page]) -> None:
    for p in pages:
        try:
            await p.evaluate("() => window.mscLeave && window.mscLeave()")
        except Exception:  # a page that failed must not hide the result
            pass
    await ctx.close()


async def mesh(s: Session, n: int, codec: str, extra: str = "") -> dict[str, Any]:
    ctx = await s.browser.new_context()
    room = f"mesh-{uuid.uuid4().hex[:8]}"
    pages = list(await asyncio.gather(*(s.open(ctx, room, codec, extra) for _ in range(n))))
    result = await measure(pages)
    await leave(ctx, pages)
    return result


async def late(s: Session, rounds: int, codec: str, keep_going: bool) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for r in range(rounds):
        ctx = await s.browser.new_context()
        room = f"late-{r}-{uuid.uuid4().hex[:8]}"
        incumbents = list(await asyncio.gather(s.open(ctx, room, codec), s.open(ctx, room, codec)))
        ok_before, before = await wait_flowing(incumbents, 1, READY_S)
        entry: dict[str, Any] = {"round": r, "incumbents_flowing": ok_before, "before": before}
        if ok_before:
            order = "video-first" if r % 2 else "audio-first"
            entry["newcomer_order"] = order
            newcomer = await s.open(ctx, room, codec, f"&order={order}")
            entry.update(await measure(incumbents + [newcomer]))
        else:
            entry["ok"] = False
        await leave(ctx, incumbents + ([newcomer] if ok_before else []))
        out.append(entry)
        if not entry["ok"] and not keep_going:
            break
    return {"rounds": out, "passed": sum(1 for e in out if e["ok"]), "run": len(out)}


async def simulcast(s: Session) -> dict[str, Any]:
    ctx = await s.browser.new_context()
    page = await s.open(ctx, f"simulcast-{uuid.uuid4().hex[:8]}", "vp8", "&simulcast=1")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_S
    while True:
        st = (await snapshot([page]))[0]
        if st and (st["status"] in ("ready", "error") or loop.time() > deadline):
            break
        await asyncio.sleep(0.25)
    await leave(ctx, [page])
    return {"stats": st}


async def layers(s: Session, codec: str = "vp8") -> dict[str, Any]:
    import aiohttp

    ctx = await s.browser.new_context()
    room = f"layers-{uuid.uuid4().hex[:8]}"
    viewer_user = f"user{s._users + 1}"
    pages = list(await asyncio.gather(*(s.open(ctx, room, codec, "&simulcast=1&layers=1") for _ in range(2))))
    ok, stats = await wait_flowing(pages, 1, READY_S)
    out: dict[str, Any] = {"flowing": ok, "steps": []}
    if not ok:
        out["stats"] = stats
        await leave(ctx, pages)
        return out
    token = s.tokens[room, viewer_user]
    (rec,) = [r for r in stats[0]["remotes"] if r["kind"] == "video"]
    out["codec"] = rec.get("codec")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        # the publisher's bandwidth estimate grows until it sends all three
        # encodings, and the SFU's estimate toward the viewer until it
        # forwards the top one: wait for that (bounded)
        widths: list[int] = []
        t_wait = loop.time()
        while loop.time() - t_wait < 20.0:
            st = (await snapshot(pages[:1]))[0]
            (r,) = [x for x in st["remotes"] if x["producerId"] == rec["producerId"]]
            widths.append(max((i.get("frameWidth") or 0 for i in r["inbound"]), default=0))
            if widths[-1] >= 960:
                break
            await asyncio.sleep(0.25)
        out["top_after_s"] = round(loop.time() - t_wait, 2)
        # the first step only puts the viewer on the lowest encoding (the SFU
        # forwards the top one the viewer's link carries by default)
        for layer in (0, 2, 0):
            url = f"{s.base_url}/api/rooms/{room}/consumers/{rec['consumerId']}/preferred-layers"
            t0 = loop.time()
            async with http.post(url, json={"spatialLayer": layer},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                answer = await resp.json()
            samples = []
            while loop.time() - t0 < 4.0:
                st = (await snapshot(pages[:1]))[0]
                (r,) = [x for x in st["remotes"] if x["producerId"] == rec["producerId"]]
                inbound = max(r["inbound"], key=lambda i: i["framesDecoded"], default={})
                samples.append((round((loop.time() - t0) * 1000), inbound.get("frameWidth", 0),
                                inbound.get("framesDecoded", 0)))
                await asyncio.sleep(0.05)
            out["steps"].append({"layer": layer, "status": resp.status, "answer": answer, "samples": samples})
        # what the viewed page's encoder says it sends (its scalabilityMode per encoding)
        out["publisher_encodings"] = await pages[1].evaluate("() => window.mscOutbound()")
    out["leave"] = lambda: leave(ctx, pages)
    return out


BWE_SAMPLE_S = 0.25
#: bound of the warm-up: both viewers decode the top encoding before the run
BWE_WARMUP_S = 30.0
#: the server's transport stats kept in each sample
TRANSPORT_KEYS = ("rtpPacketsSent", "rtpBytesSent", "rtcpPacketsReceived", "roundTripTime",
                  "availableOutgoingBitrate", "bwe")


def _video_inbound(stats: dict[str, Any] | None, producer_id: str | None = None) -> dict[str, Any]:
    """The page's inbound video counters of the (one) video it consumes."""
    if not stats:
        return {}
    recs = [r for r in stats["remotes"] if r["kind"] == "video" and r["state"] == "resumed"
            and (producer_id is None or r["producerId"] == producer_id)]
    inbound = [i for r in recs for i in r["inbound"]]
    return max(inbound, key=lambda i: i["packetsReceived"], default={})


async def _server_side(rooms: Any, room_id: str, pid: str, consumer_id: str) -> dict[str, Any]:
    """The server's view of a viewer: its video consumer's stats and layers,
    and its receive transport's stats (whatever the engine reports, e.g.
    availableOutgoingBitrate once it estimates bandwidth)."""
    out: dict[str, Any] = {}
    try:
        part = rooms.rooms[room_id].participants[pid]
        consumer = part.consumers[consumer_id]
        out["consumer"] = (await consumer.get_stats())[0]
        out["paused"] = [consumer.paused, consumer.producer_paused]
        out["currentLayers"] = consumer.current_layers
        out["preferredLayers"] = consumer.preferred_layers
        transport = (await consumer.transport.get_stats())[0]
        out["transport"] = {k: transport.get(k) for k in TRANSPORT_KEYS if k in transport}
    except Exception as exc:  # noqa: BLE001  (a missing piece must not stop the run: say what it was)
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


async def bwe(s: Session, rooms: Any, args: list[str], codec: str = "vp8",
              publish: str = "&simulcast=1&layers=1") -> dict[str, Any]:
    import aiohttp

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/
    from lossy import Leg, LossyRelay

    kbps = float(args[0]) if len(args) > 0 else 300.0
    on_s = float(args[1]) if len(args) > 1 else 5.0
    off_s = float(args[2]) if len(args) > 2 else 20.0
    end_s = float(args[3]) if len(args) > 3 else 35.0
    relays: list[LossyRelay] = []

    async def relay_for(port: int) -> int:
        relay = await LossyRelay(("127.0.0.1", int(port)), to_client=Leg(queue_ms=200.0)).start()
        relays.append(relay)
        return relay.port

    ctx = await s.browser.new_context()
    room = f"bwe-{uuid.uuid4().hex[:8]}"
    publisher = await s.open(ctx, room, codec, publish)
    users = {"A": f"user{s._users + 1}", "B": f"user{s._users + 2}"}
    viewer_a = await s.open(ctx, room, codec, "&publish=0")
    viewer_b = await s.open(ctx, room, codec, "&publish=0&relay=1", relay_for=relay_for)
    pages = [publisher, viewer_a, viewer_b]
    out: dict[str, Any] = {"rate_kbps": kbps, "limit_on_s": on_s, "limit_off_s": off_s, "end_s": end_s,
                           "queue_ms": 200.0, "sample_s": BWE_SAMPLE_S}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_S
    while True:  # both viewers decode the publisher's video
        stats = await snapshot(pages)
        if all(_video_inbound(st).get("framesDecoded", 0) > 0 for st in stats[1:]):
            ok = True
            break
        if loop.time() > deadline or any(st and st["errors"] for st in stats):
            ok = False
            break
        await asyncio.sleep(0.25)
    out["flowing"] = ok
    out["relayed"] = stats[2]["relayed"] if stats[2] else None
    if not ok or not relays:
        out["stats"] = stats
        # the server's side of each viewer's video consumer: why it did not flow
        out["server_viewers"] = []
        for st in stats[1:]:
            if st and st.get("participantId"):
                for rec in (r for r in st["remotes"] if r["kind"] == "video"):
                    out["server_viewers"].append(
                        await _server_side(rooms, room, st["participantId"], rec["consumerId"]))
        out["flowing"] = ok and bool(relays)
        await leave(ctx, pages)
        return out
    pids = {"A": stats[1]["participantId"], "B": stats[2]["participantId"]}
    consumers = {}
    for name, st in (("A", stats[1]), ("B", stats[2])):
        (rec,) = [r for r in st["remotes"] if r["kind"] == "video"]
        consumers[name] = rec["consumerId"]
    out["consumers"] = consumers
    # both viewers want the top layer; what they get is the SFU's choice
    async with aiohttp.ClientSession() as http:
        for name in ("A", "B"):
            url = f"{s.base_url}/api/rooms/{room}/consumers/{consumers[name]}/preferred-layers"
            async with http.post(url, json={"spatialLayer": 2},
                                 headers={"Authorization": f"Bearer {s.tokens[room, users[name]]}"}) as resp:
                out[f"preferred_{name}"] = resp.status
    # warm-up, unconstrained: the publisher's estimate grows until it sends
    # all three encodings and the SFU's toward each viewer until it forwards
    # the top one; the run starts once both viewers decode it (or at the bound)
    top = await publisher.evaluate("() => document.getElementById('local').videoWidth")
    out["camera_width"] = top
    w0 = loop.time()
    while loop.time() - w0 < BWE_WARMUP_S:
        widths = [_video_inbound(st).get("frameWidth", 0) for st in await snapshot(pages[1:])]
        if all(w >= top for w in widths):
            break
        await asyncio.sleep(0.25)
    out["warmup_s"] = round(loop.time() - w0, 2)
    out["warmup_widths"] = widths
    legs = [r.to_client for r in relays]
    samples: list[dict[str, Any]] = []
    phase = "before"
    t0 = loop.time()
    tick = 0
    while True:
        t = loop.time() - t0
        if t >= end_s:
            break
        if phase == "before" and t >= on_s:
            for leg in legs:
                leg.rate_bps = kbps * 1000
            phase = "limited"
        elif phase == "limited" and t >= off_s:
            for leg in legs:
                leg.rate_bps = 0
            phase = "after"
        page_stats, outbound = await asyncio.gather(
            snapshot(pages[1:]), publisher.evaluate("() => window.mscOutbound()"))
        server = await asyncio.gather(*(_server_side(rooms, room, pids[n], consumers[n]) for n in ("A", "B")))
        sample: dict[str, Any] = {"t": round(loop.time() - t0, 3), "limited": phase == "limited",
                                  "publisher": sorted(outbound, key=lambda o: o["rid"] or "")}
        for name, st, sv in zip(("A", "B"), page_stats, server):
            v = _video_inbound(st)
            sample[name] = {
                "page": {k: v.get(k) for k in ("frameWidth", "frameHeight", "framesDecoded", "packetsReceived",
                                               "packetsLost", "bytesReceived", "nackCount", "pliCount",
                                               "keyFramesDecoded", "freezeCount", "totalFreezesDuration",
                                               "jitterBufferDelay", "jitterBufferEmittedCount",
                                               "framesPerSecond")},
                "pair": st.get("recvPair") if st else None,
                "server": sv,
            }
        sample["relay"] = {"sent": sum(leg.sent for leg in legs), "bytes": sum(leg.bytes_sent for leg in legs),
                           "queued_drops": sum(leg.queued_drops for leg in legs),
                           "max_wait_ms": round(max(leg.max_wait_ms for leg in legs), 1)}
        samples.append(sample)
        tick += 1
        await asyncio.sleep(max(0.0, t0 + tick * BWE_SAMPLE_S - loop.time()))
    out["samples"] = samples
    out["errors"] = [st["errors"] for st in await snapshot(pages) if st]
    await leave(ctx, pages)
    for relay in relays:
        relay.close()
    return out


async def nodes(s: Session, codec: str) -> dict[str, Any]:
    """Two sfu-server nodes sharing a redis-server, node B with --edge-rooms,
    both letting the test's page origin call them (--cors-origin): two pages
    on node A and two on node B (server=) join one room; every page must
    decode every other, across the nodes' pipe for half of the pairs."""
    import tempfile

    import aiohttp

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/
    from cluster_nodes import Node, start_redis

    from signaling.edge import AUTH_HEADER, sign

    tmp = Path(tempfile.mkdtemp(prefix="msc-nodes-"))
    redis, url = start_redis(tmp)
    origin = s.base_url
    a = Node(tmp, "node-a", url, SECRET, "--cors-origin", origin)
    b = Node(tmp, "node-b", url, SECRET, "--edge-rooms", "--cors-origin", origin)
    out: dict[str, Any] = {}
    try:
        await a.ready()
        await b.ready()
        ctx = await s.browser.new_context()
        room = f"nodes-{uuid.uuid4().hex[:8]}"
        first = await s.open(ctx, room, codec, f"&server={a.base}")
        rest = await asyncio.gather(*(s.open(ctx, room, codec, f"&server={n.base}") for n in (a, b, b)))
        pages = [first, *rest]
        out.update(await measure(pages))
        out["pageNodes"] = ["node-a", "node-a", "node-b", "node-b"]
        state = {}
        async with aiohttp.ClientSession() as http:
            for node in (a, b):
                headers = {AUTH_HEADER: sign(SECRET.encode(), "GET", "/_cluster/state", b"")}
                async with http.get(node.base + "/_cluster/state", headers=headers) as resp:
                    state[node.name] = await resp.json()
        out["state"] = state
        await leave(ctx, pages)
    finally:
        for node in (a, b):
            node.stop()
        redis.kill()
        redis.wait()
        out["logs"] = {n.name: n.out.read_text()[-2000:] for n in (a, b)}
    return out


async def main(mode: str, args: list[str]) -> dict[str, Any]:
    if not BUNDLE.exists():
        raise SystemExit(f"{BUNDLE} is missing: build it (tests/test_mediasoup_client.py does)")
    rooms = await start_rooms(workers=1)
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    app = create_app(rooms, auth=auth)

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "index.html")

    async def bundle(request: web.Request) -> web.FileResponse:
        return web.FileResponse(BUNDLE, headers={"Content-Type": "text/javascript"})

    app.router.add_get("/msc/", page)
    app.router.add_get("/msc/msc.js", bundle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    result: dict[str, Any] = {"mode": mode, "args": args}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            s = Session(browser, f"http://127.0.0.1:{port}", auth)
            try:
                if mode == "mesh":
                    extra = "&simulcast=1" if len(args) > 2 and args[2] == "simulcast" else ""
                    result.update(await mesh(s, int(args[0]), args[1], extra))
                elif mode == "late":
                    result.update(await late(s, int(args[0]), args[1], len(args) > 2 and args[2] == "keep-going"))
                elif mode == "bwe":
                    result.update(await bwe(s, rooms, args))
                elif mode == "svc":
                    result.update(await bwe(s, rooms, args, "vp9", "&svc=L3T3_KEY&layers=1"))
                elif mode == "simulcast":
                    result.update(await simulcast(s))
                elif mode == "nodes":
                    result.update(await nodes(s, args[0] if args else "vp8"))
                elif mode == "layers":
                    result.update(await layers(s, args[0] if args else "vp8"))
                    close_pages = result.pop("leave", None)
                    result["producers"] = [
                        [{k: st.get(k) for k in ("ssrc", "packetCount", "bitrate", "keyframes", "keyframeRequests")}
                         for st in await pr.get_stats()]
                        for room in rooms.rooms.values() for part in room.participants.values()
                        for pr in part.producers.values() if pr.kind == "video"]
                    if close_pages:
                        await close_pages()
                else:
                    raise SystemExit(f"unknown mode {mode!r}")
            finally:
                result["console"] = s.console[-40:]
                result["counters"] = await rooms.workers[0].get_counters()
                await browser.close()
    finally:
        await runner.cleanup()
        await rooms.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:]))), flush=True)
