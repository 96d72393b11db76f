"""Chromium as WHIP publisher and WHEP viewers of sfu-server, in the order
and timing real clients use, repeated RUNS times; prints one JSON line with
each run's verdict and what the viewers' getStats() showed.

Per run (a fresh room each time; the browser and its pages are reused):

1. the publisher page (tests/browser/whep_conformance.html) takes the fake
   camera and microphone, adds sendonly transceivers audio then video, POSTs
   its offer to /whip/{room} and sets the answer;
2. the moment its PeerConnection is `connected` (no sleep), VIEWERS pages
   each add recvonly transceivers video *then* audio (so their mids are the
   publisher's swapped), POST to /whep/{room} and set the answer;
3. every viewer must connect within BOUND_S and then show, within BOUND_S
   more (polled, no fixed wait): video framesDecoded rising, audio
   packetsReceived rising, and every inbound-rtp stream on the transceiver
   whose m-section of the answer signals its SSRC (receiver track kind =
   inbound kind = the m-section's kind, SSRC = that m-section's a=ssrc,
   getStats' inbound `mid` = the transceiver's mid).

A stream filed under the wrong transceiver (issue #9: forwarded RTP carrying
the publisher's MID value while Chromium still stamps it) fails step 3, at
once: Chromium reports it as an inbound-rtp of the wrong kind and mid, and
keeps it there (its demuxer latches the SSRC to the MID).

Meant to run inside a network namespace that has only `lo` (see
tests/test_chromium.py `run_browser_script`). With LOSS > 0 the SFU's shared
WebRTC port sits behind the lossy NAT of tests/lossy.py, as in demo_pages.py.

Usage: python tests/browser/whep_pages.py [RUNS] [LOSS] [VIEWERS] [VIEW] [PUBLISH]

VIEW and PUBLISH are the viewers' and the publisher's transceiver kinds in
order: "video,audio" and "audio,video" by default. VIEW "audio,video" (the
publisher's order) is the control that issue #9 spares; PUBLISH "video" is a
publisher without a microphone (the viewers' audio m-section is rejected).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

from aiohttp import web
from playwright.async_api import Page, async_playwright

from demo_pages import CHROMIUM, FLAGS, _free_port
from signaling.server import create_app, start_rooms

HERE = Path(__file__).resolve().parent
PAGE = HERE / "whep_conformance.html"
PAGE_PATH = "/whep-conformance.html"
BOUND_S = 20.0       # per run: for the viewers to connect, then for their media to flow
CONNECT_S = 20.0     # per run: the publisher's connection
POLL_S = 0.2


def answer_sections(sdp: str) -> dict[str, dict[str, Any]]:
    """mid -> {"kind", "ssrcs": media SSRCs (RTX ones of a=ssrc-group:FID left out)}."""
    sections: dict[str, dict[str, Any]] = {}
    for block in re.split(r"\r?\n(?=m=)", sdp)[1:]:
        lines = block.splitlines()
        kind = lines[0][2:].split(" ", 1)[0]
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        ssrcs: list[int] = []
        rtx: set[int] = set()
        for ln in lines:
            if ln.startswith("a=ssrc:"):
                ssrc = int(ln[7:].split(" ", 1)[0])
                if ssrc not in ssrcs:
                    ssrcs.append(ssrc)
            elif ln.startswith("a=ssrc-group:FID "):
                rtx.update(int(s) for s in ln.split()[2:])
        if mid is not None:
            sections[mid] = {"kind": kind, "ssrcs": [s for s in ssrcs if s not in rtx]}
    return sections


def misfiled(sections: dict[str, dict[str, Any]], state: dict[str, Any]) -> list[str]:
    """Streams on the wrong transceiver or with an SSRC the answer did not
    signal there: definite failures, however long one waits."""
    problems = []
    where = {s: mid for mid, sec in sections.items() for s in sec["ssrcs"]}
    for t in state["transceivers"]:
        sec = sections.get(t["mid"])
        if sec is None:
            problems.append(f"transceiver mid={t['mid']} has no m-section in the answer")
            continue
        if t["kind"] != sec["kind"]:
            problems.append(f"transceiver mid={t['mid']}: track kind {t['kind']} but m-section kind {sec['kind']}")
        for r in t["inbound"]:
            if r["kind"] != t["kind"]:
                problems.append(f"transceiver mid={t['mid']} ({t['kind']}) receives a {r['kind']} stream "
                                f"ssrc={r['ssrc']} {r['mimeType']}")
            if r["ssrc"] not in sec["ssrcs"]:
                problems.append(f"transceiver mid={t['mid']} ({t['kind']}) receives ssrc={r['ssrc']} "
                                f"({r['kind']}), its m-section signals {sec['ssrcs']}"
                                + (f" (that ssrc is mid={where[r['ssrc']]}'s)" if r["ssrc"] in where else ""))
            if r["mid"] is not None and r["mid"] != t["mid"]:
                problems.append(f"transceiver mid={t['mid']}: its inbound-rtp ssrc={r['ssrc']} says mid={r['mid']}")
    for r in state["inbound"]:
        if r["ssrc"] not in where:
            problems.append(f"inbound-rtp ssrc={r['ssrc']} ({r['kind']}, mid={r['mid']}) is not signalled in the answer")
            continue
        sec = sections[where[r["ssrc"]]]
        if r["kind"] != sec["kind"]:
            problems.append(f"inbound-rtp ssrc={r['ssrc']} is {r['kind']}, signalled in the {sec['kind']} m-section "
                            f"mid={where[r['ssrc']]}")
        if r["mid"] is not None and r["mid"] != where[r["ssrc"]]:
            problems.append(f"inbound-rtp ssrc={r['ssrc']} ({r['kind']}) filed under mid={r['mid']}, "
                            f"signalled in mid={where[r['ssrc']]}")
    return problems


def media(state: dict[str, Any]) -> dict[str, int]:
    """What the audio and video transceivers' own inbound-rtp show (0 when none)."""
    out = {"framesDecoded": 0, "audioPackets": 0, "videoPackets": 0}
    for t in state["transceivers"]:
        for r in t["inbound"]:
            if t["kind"] == "video" and r["kind"] == "video":
                out["framesDecoded"] = max(out["framesDecoded"], r["framesDecoded"] or 0)
                out["videoPackets"] = max(out["videoPackets"], r["packetsReceived"])
            if t["kind"] == "audio" and r["kind"] == "audio":
                out["audioPackets"] = max(out["audioPackets"], r["packetsReceived"])
    return out


def flowing(m: dict[str, int], since: Optional[dict[str, int]], kinds: set[str]) -> bool:
    """Video frames decoded and audio packets received (of the kinds expected):
    above 0, or above ``since``."""
    keys = [k for kind, k in (("video", "framesDecoded"), ("audio", "audioPackets")) if kind in kinds]
    return all(m[k] > (since[k] if since else 0) for k in keys)


async def _open(ctx: Any, url: str) -> Page:
    page = await ctx.new_page()
    await page.goto(url)
    return page


async def one_run(pages: list[Page], url: str, room: str, publish: list[str], view: list[str]) -> dict[str, Any]:
    pub, viewers = pages[0], pages[1:]
    expected = set(publish) & set(view)
    run: dict[str, Any] = {"room": room, "ok": False, "problems": [], "timings": {}}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        await asyncio.gather(*(p.goto(url) for p in pages))  # fresh page state, no PeerConnection left
        pub_info = await pub.evaluate("([room, kinds]) => publish(room, kinds)", [room, publish])
        run["publisher_mids"] = dict(pub_info["mids"])
        await asyncio.wait_for(pub.evaluate("() => window.publisherConnected"), CONNECT_S)
        t_conn = loop.time()
        run["timings"]["publisher_connected_s"] = round(t_conn - t0, 3)
        # at once: the viewers' offers go out while the publisher's first packets still carry its MIDs
        views = await asyncio.wait_for(asyncio.gather(
            *(v.evaluate("([room, kinds]) => view(room, kinds)", [room, view]) for v in viewers)), BOUND_S)
        run["timings"]["viewers_connected_ms"] = [round(v["connectedMs"]) for v in views]
        t_view = loop.time()
        sections = [answer_sections(v["answer"]) for v in views]
        run["answer_sections"] = sections
        first: list[Optional[dict[str, int]]] = [None] * len(viewers)
        done = [False] * len(viewers)
        states: list[dict[str, Any]] = []
        while True:
            states = [await v.evaluate("() => viewerState()") for v in viewers]
            for i, (sec, st) in enumerate(zip(sections, states)):
                run["problems"] += [f"viewer {i}: {b}" for b in misfiled(sec, st)]
                m = media(st)
                if first[i] is None:
                    if flowing(m, None, expected):
                        first[i] = m
                elif flowing(m, first[i], expected):
                    done[i] = True
            # a misfiled stream stays misfiled (Chromium latches the SSRC to the MID): no need to wait
            if run["problems"] or all(done) or loop.time() - t_view > BOUND_S:
                break
            await asyncio.sleep(POLL_S)
        run["timings"]["media_s"] = round(loop.time() - t_conn, 3)
        run["viewers"] = [{"first": f, "last": media(st), "state": st} for f, st in zip(first, states)]
        if not run["problems"]:
            for i, (f, st) in enumerate(zip(first, states)):
                if not done[i]:
                    run["problems"].append(f"viewer {i}: within {BOUND_S:.0f} s, not all of video framesDecoded "
                                           f"and audio packetsReceived ({sorted(expected)}) rose: "
                                           f"first={f} last={media(st)}")
                for t in st["transceivers"]:
                    if t["kind"] in expected and len(t["inbound"]) != 1:
                        run["problems"].append(f"viewer {i}: transceiver mid={t['mid']} ({t['kind']}) has "
                                               f"{len(t['inbound'])} inbound-rtp streams: {t['inbound']}")
        run["inbound_mid_reported"] = all(r["mid"] is not None for st in states for r in st["inbound"])
        run["ok"] = not run["problems"]
        if not run["ok"]:
            run["answers"] = [v["answer"] for v in views]
    except Exception as exc:  # a run that broke down is a failed run; the next one starts afresh
        run["problems"].append(f"{type(exc).__name__}: {exc}")
    finally:
        for p in pages:
            try:
                await p.evaluate("() => hangUp()")
            except Exception:
                pass
    run["timings"]["total_s"] = round(loop.time() - t0, 3)
    return run


async def main(runs: int, loss: float = 0.0, viewers: int = 2, view: str = "video,audio",
               publish: str = "audio,video") -> dict[str, Any]:
    nat = None
    if loss > 0:
        sys.path.insert(0, str(HERE.parent))
        from lossy import LossyNat

        rtc_port = _free_port()
        nat = LossyNat(("127.0.0.1", rtc_port), loss=loss, delay_ms=5, seed=9).start()
        rooms = await start_rooms(workers=1, rtc_port=rtc_port, announced_rtc_port=nat.port)
    else:
        rooms = await start_rooms(workers=1)
    app = create_app(rooms)
    html = PAGE.read_text()
    app.router.add_get(PAGE_PATH, lambda request: web.Response(text=html, content_type="text/html"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}{PAGE_PATH}"
    result: dict[str, Any] = {"loss": loss, "viewers": viewers, "publish": publish, "view": view, "runs": []}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            pages = [await _open(ctx, url) for _ in range(1 + viewers)]
            tag = f"{'lossy' if loss else 'clean'}-{port}"
            for i in range(runs):
                result["runs"].append(await one_run(pages, url, f"whep-{tag}-{i}",
                                                   publish.split(","), view.split(",")))
            await browser.close()
    finally:
        await runner.cleanup()
        await rooms.close()
        if nat:
            result["nat_dropped"] = nat.dropped
            nat.close()
    result["passed"] = sum(r["ok"] for r in result["runs"])
    result["total"] = runs
    return result


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    lossy = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    v = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    print(json.dumps(asyncio.run(main(n, lossy, v, *sys.argv[4:6]))), flush=True)
