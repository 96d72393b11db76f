"""Runs the call service (one worker, JWT auth) and three headless Chromium
pages of one call through its life: two pages (P2P), a third joins (the
call moves to the SFU), the third leaves (back to P2P). Prints one JSON line
with each page's window.callStats() at every phase and the server's view.

Meant to run inside a network namespace that has only `lo` (see
tests/test_chromium_calls.py). Usage: python tests/browser/call_pages.py [HOLD_SECONDS]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any, AsyncIterator, Callable

import jwt
from aiohttp import web
from playwright.async_api import Page, async_playwright

from demo_pages import CHROMIUM, FLAGS
from signaling.auth import AuthConfig, Authenticator
from signaling.metrics import Metrics
from signaling.server import CALLS, create_app, start_rooms

SECRET = "chromium-call-test-secret-0123456789abcdef"
CALL = "chromium-call"


def _token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "name": user.capitalize(), "iat": now, "exp": now + 600}, SECRET,
                      algorithm="HS256")


async def _stats(page: Page) -> dict[str, Any]:
    return await page.evaluate("() => window.callStats ? window.callStats() : null")


async def _until(pages: list[Page], ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20) -> list[dict]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = [await _stats(p) for p in pages]
        if all(s is not None and ok(s) for s in stats):
            return stats
        if loop.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what}: {json.dumps(stats)}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _server(**start: Any) -> AsyncIterator[tuple[Any, web.Application, str]]:
    """The call service (JWT auth, 2 s disconnect grace) on a loopback port:
    (rooms, app, base URL); ``start``: start_rooms' options."""
    rooms = await start_rooms(**start)
    app = create_app(rooms, auth=Authenticator(AuthConfig.from_options(secret=SECRET)), metrics=Metrics(),
                     disconnect_grace_s=2.0)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rooms, app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await rooms.close()


async def _call_pages(ctx: Any, base: str, names: tuple[str, ...], wait_each: bool = False) -> list[Page]:
    """One call page per user (console errors printed to stderr)."""
    pages = []
    for name in names:
        page = await ctx.new_page()
        page.on("console", lambda msg, n=name: msg.type == "error" and print(f"[{n}] {msg.text}", file=sys.stderr))
        await page.goto(f"{base}/call?call={CALL}&token={_token(name)}")
        pages.append(page)
        if wait_each:
            await _until([page], lambda s: s["participantId"] is not None, f"{name} joined")
    return pages


def _settled(mode: str, remotes: int, server_done: bool = True) -> Callable[[dict[str, Any]], bool]:
    """Every remote shown over ``mode``, the page's last switch finished (and
    acknowledged by the server's call:mode-switched)."""

    def ok(s: dict[str, Any]) -> bool:
        last = s["switches"][-1] if s["switches"] else None
        return (s["mode"] == mode and len(s["remotes"]) == remotes
                and all(r["active"] == mode for r in s["remotes"].values())
                and last is not None and last["durationMs"] is not None
                and (not server_done or last["kind"] == "join" or last["serverMs"] is not None))

    return ok


async def main(hold: float, keyframe_ms: int | None = None) -> dict[str, Any]:
    rooms = await start_rooms(workers=1, keyframe_request_interval_ms=keyframe_ms)
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    app = create_app(rooms, auth=auth, metrics=Metrics(), disconnect_grace_s=2.0)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    phases: dict[str, Any] = {}
    result: dict[str, Any] = {"phases": phases}
    t0 = time.monotonic()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            pages: dict[str, Page] = {}
            for name in ("alice", "bob", "carol"):
                pages[name] = await ctx.new_page()
                pages[name].on("console", lambda msg, n=name: msg.type == "error" and print(
                    f"[{n}] {msg.text}", file=sys.stderr))
            a, b, c = pages["alice"], pages["bob"], pages["carol"]

            await a.goto(f"{base}/call?call={CALL}&token={_token('alice')}")
            await _until([a], lambda s: s["participantId"] is not None and s["mode"] == "p2p", "alice joined")
            await b.goto(f"{base}/call?call={CALL}&token={_token('bob')}")
            phases["p2p"] = await _until([a, b], _settled("p2p", 1, server_done=False), "two pages over P2P")
            await asyncio.sleep(hold)
            phases["p2p_later"] = [await _stats(p) for p in (a, b)]

            await c.goto(f"{base}/call?call={CALL}&token={_token('carol')}")
            phases["sfu"] = await _until([a, b, c], _settled("sfu", 2), "three pages over the SFU")
            await asyncio.sleep(hold)
            phases["sfu_later"] = [await _stats(p) for p in (a, b, c)]

            await c.evaluate("() => window.leaveCall()")
            await c.close()
            phases["back"] = await _until([a, b], _settled("p2p", 1), "two pages back on P2P")
            await asyncio.sleep(hold)
            phases["back_later"] = [await _stats(p) for p in (a, b)]

            calls = app[CALLS]
            call = calls.calls.get(CALL)
            result["server"] = {
                "mode": call.mode if call else None,
                "room_released": CALL not in rooms.rooms and (call is None or call.room is None),
                # a P2P call of two keeps its room on standby, with both in it
                "standby_room": sorted(m.user_id for m in call.members.values()
                                       if call.room is not None and m.id in call.room.participants) if call else [],
                "participants": sorted(m.user_id for m in call.members.values()) if call else [],
                "metrics": [line for line in (await _metrics(app)).splitlines()
                            if line.startswith(("sfu_call_mode_switch", "sfu_calls_active", "sfu_participants_active"))
                            and "_created" not in line],
            }
            await browser.close()
    finally:
        result["seconds"] = round(time.monotonic() - t0, 1)
        await runner.cleanup()
        await rooms.close()
    return result


def _recovered(k: int, remotes: int) -> Callable[[dict[str, Any]], bool]:
    """The page's k-th recovery (0-based) is done: every remote decodes again."""

    def ok(s: dict[str, Any]) -> bool:
        recs = s["recoveries"]
        return (len(recs) > k and recs[k]["durationMs"] is not None and len(s["remotes"]) == remotes
                and all(r["active"] == "sfu" for r in s["remotes"].values()))

    return ok


async def kills(count: int, workers: int = 2) -> dict[str, Any]:
    """Three pages in an SFU call; the media worker under the call's room is
    killed (SIGKILL) ``count`` times, each once every page has media from
    every other again. Per kill: when each page had media back, from the
    kill (this process's clock, polled every 50 ms) and from the page's
    call:media-lost (the page's clock), and the worker pids."""
    import os
    import signal

    result: dict[str, Any] = {"kills": [], "workers": workers}
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        async with _server(workers=workers) as (rooms, app, base), async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            pages = await _call_pages(ctx, base, ("alice", "bob", "carol"))
            await _until(pages, _settled("sfu", 2), "three pages over the SFU", timeout=30)
            call = app[CALLS].calls[CALL]
            for k in range(count):
                await asyncio.sleep(1.0)
                before = [await _stats(p) for p in pages]
                pid = call.room.router.worker.pid
                killed_at = loop.time()
                os.kill(pid, signal.SIGKILL)
                back: list[float | None] = [None] * len(pages)
                deadline = killed_at + 30
                while any(b is None for b in back) and loop.time() < deadline:
                    for i, page in enumerate(pages):
                        if back[i] is None and _recovered(k, 2)(await _stats(page)):
                            back[i] = round(loop.time() - killed_at, 3)
                    await asyncio.sleep(0.05)
                after = [await _stats(p) for p in pages]
                await asyncio.sleep(1.0)
                later = [await _stats(p) for p in pages]
                result["kills"].append({
                    "worker_pid": pid,
                    "new_worker_pid": call.room.router.worker.pid if call.room else None,
                    "back_after_kill_s": back,
                    "page_ms": [(s["recoveries"][k]["durationMs"] if len(s["recoveries"]) > k else None) for s in after],
                    "replaced_ms": [(s["recoveries"][k]["replacedMs"] if len(s["recoveries"]) > k else None) for s in after],
                    # frames keep coming after the recovery, from every remote
                    "decoding": [all(later_s["remotes"][pid_]["framesSFU"] > after_s["remotes"][pid_]["framesSFU"]
                                     for pid_ in later_s["remotes"])
                                 for after_s, later_s in zip(after, later)],
                    "modes": [s["mode"] for s in later],
                    "reloads": [s["participantId"] != b["participantId"] for s, b in zip(later, before)],
                })
                if any(b is None for b in back):
                    result["timeout_stats"] = after
                    break
            await browser.close()
    finally:
        result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def _decoding_from_all(remotes: int) -> Callable[[dict[str, Any]], bool]:
    """Every one of ``remotes`` remotes is shown on the current mode's path."""

    def ok(s: dict[str, Any]) -> bool:
        return (s["mode"] is not None and len(s["remotes"]) == remotes
                and all(r["active"] == s["mode"] and (r["framesSFU"] if s["mode"] == "sfu" else r["framesP2P"]) >= 2
                        for r in s["remotes"].values()))

    return ok


async def restart(db: str) -> dict[str, Any]:
    """Three pages in an SFU call served by a real ``sfu-server`` process;
    SIGTERM, then the same command again (same port, same database). When
    each page has media from both others again, measured from the moment the
    new server answers HTTP (and from the SIGTERM), on this process's clock."""
    import os
    import signal
    import socket
    import subprocess

    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "signaling.cli", "--http-port", str(port), "--jwt-secret", SECRET,
           "--db", db, "--workers", "2", "--drain-timeout", "2", "--log-level", "warning"]
    env = dict(os.environ)
    loop = asyncio.get_running_loop()

    async def start() -> tuple[subprocess.Popen, float]:
        proc = subprocess.Popen(cmd, env=env)
        deadline = loop.time() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            return proc, loop.time()
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("sfu-server did not start")
                await asyncio.sleep(0.05)

    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    t0 = time.monotonic()
    proc, _ = await start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            pages = await _call_pages(ctx, base, ("alice", "bob", "carol"))
            await _until(pages, _settled("sfu", 2), "three pages over the SFU", timeout=30)
            await asyncio.sleep(1.0)
            term_at = loop.time()
            proc.send_signal(signal.SIGTERM)
            result["exit_code"] = await loop.run_in_executor(None, proc.wait, 30)
            result["stopped_after_s"] = round(loop.time() - term_at, 3)
            proc, up_at = await start()
            result["down_s"] = round(up_at - term_at, 3)
            back: list[float | None] = [None] * len(pages)
            deadline = up_at + 30
            while any(b is None for b in back) and loop.time() < deadline:
                for i, page in enumerate(pages):
                    st = await _stats(page)
                    rejoined = bool(st["rejoins"]) and st["rejoins"][-1]["joinedMs"] is not None
                    if back[i] is None and rejoined and _decoding_from_all(2)(st):
                        back[i] = round(loop.time() - up_at, 3)
                await asyncio.sleep(0.05)
            result["back_after_start_s"] = back
            result["back_after_sigterm_s"] = [None if b is None else round(b + up_at - term_at, 3) for b in back]
            after = [await _stats(p) for p in pages]
            await asyncio.sleep(1.5)
            later = [await _stats(p) for p in pages]
            result["modes"] = [s["mode"] for s in later]
            result["rejoins"] = [s["rejoins"] for s in later]
            result["decoding"] = [
                all(r1["shownFrames"] > a["remotes"][pid]["shownFrames"] for pid, r1 in s["remotes"].items()
                    if pid in a["remotes"]) and len(s["remotes"]) == 2
                for a, s in zip(after, later)]
            if any(b is None for b in back):
                result["timeout_stats"] = after
            await browser.close()
    finally:
        result["seconds"] = round(time.monotonic() - t0, 1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await loop.run_in_executor(None, proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return result


async def rebind(count: int) -> dict[str, Any]:
    """Three pages in an SFU call whose media goes through a UDP NAT
    (tests/nat.py: the SFU announces the NAT's port); the NAT rebinds every
    mapping ``count`` times, so the SFU sees every page's addresses change.
    Per rebinding: when each page had media from both others again (new
    frames from each), on this process's clock."""
    import os
    import socket as socketmod
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: nat.py
    from nat import UdpNat

    with socketmod.socket(socketmod.AF_INET, socketmod.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        rtc_port = s.getsockname()[1]
    nat = await UdpNat(("127.0.0.1", rtc_port)).start()
    result: dict[str, Any] = {"rebinds": []}
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        async with _server(workers=1, rtc_port=rtc_port, announced_rtc_port=nat.port) as (rooms, app, base), async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            pages = await _call_pages(ctx, base, ("alice", "bob", "carol"))
            await _until(pages, _settled("sfu", 2), "three pages over the SFU", timeout=30)
            for k in range(count):
                await asyncio.sleep(1.5)
                before = [await _stats(p) for p in pages]
                mapped = nat.rebind()
                at = loop.time()
                if os.environ.get("SFU_REBIND_DEBUG") and k == 0:
                    dbg_js = open(os.environ["SFU_REBIND_DEBUG"]).read()
                    trace = []
                    while loop.time() < at + 4:
                        trace.append([await p.evaluate(dbg_js) for p in pages])
                        await asyncio.sleep(0.1)
                    result["trace"] = trace
                # back: every remote's SFU frames advanced past what they were
                # 0.3 s after the rebinding (frames in flight then do not count)
                await asyncio.sleep(0.3)
                base_stats = [await _stats(p) for p in pages]
                back: list[float | None] = [None] * len(pages)
                deadline = at + 30
                while any(b is None for b in back) and loop.time() < deadline:
                    for i, page in enumerate(pages):
                        st = await _stats(page)
                        if back[i] is None and all(
                                r["framesSFU"] > base_stats[i]["remotes"][pid]["framesSFU"] + 2
                                for pid, r in st["remotes"].items() if pid in base_stats[i]["remotes"]):
                            back[i] = round(loop.time() - at, 3)
                    await asyncio.sleep(0.05)
                after = [await _stats(p) for p in pages]
                result["rebinds"].append({
                    "mappings": mapped,
                    "back_s": back,
                    "longest_gap_ms": [max(r["maxGapMs"] for r in s["remotes"].values()) for s in after],
                    "reloads": [s["participantId"] != b["participantId"] for s, b in zip(after, before)],
                    "modes": [s["mode"] for s in after],
                    "ice_restarts": [s["iceRestarts"] for s in after],
                    # the log of the slowest page, when one took over 2 s
                    "slow_events": None if all(b is not None and b <= 2 for b in back) else after[
                        max(range(len(back)), key=lambda i: back[i] if back[i] is not None else 99)]["events"][-16:],
                })
                if any(b is None for b in back):
                    result["timeout_stats"] = after
                    break
            await browser.close()
    finally:
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["nat"] = {"to_server": nat.to_server, "to_clients": nat.to_clients, "mappings": nat.mappings}
        nat.close()
    return result


async def p2p_break(breaks: int) -> dict[str, Any]:
    """Two pages in a P2P call (the SFU on standby); the direct connection
    is broken ``breaks`` times by closing one page's side of it (alternating
    pages: the other sees its video stall, or gets a new offer). Per break:
    when each page decoded the other again, on any path (this process's
    clock), and whether the direct path came back."""
    result: dict[str, Any] = {"breaks": []}
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        async with _server(workers=1) as (rooms, app, base), async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            pages = await _call_pages(ctx, base, ("alice", "bob"), wait_each=True)
            await _until(pages, lambda s: _settled("p2p", 1, server_done=False)(s) and s["paths"]["standby"]
                         and len(s["paths"]["views"]) == 1, "two pages over P2P with the SFU on standby", timeout=30)
            for k in range(breaks):
                await asyncio.sleep(1.5)
                before = [await _stats(p) for p in pages]
                shown = [next(iter(s["remotes"].values()))["shownFrames"] for s in before]
                victim = pages[k % 2]
                at = loop.time()
                await victim.evaluate("() => window.callState.p2p && window.callState.p2p.pc.close()")
                back: list[float | None] = [None, None]
                direct: list[float | None] = [None, None]
                while (None in back or None in direct) and loop.time() < at + 30:
                    for i, page in enumerate(pages):
                        st = await _stats(page)
                        (r,) = st["remotes"].values() if len(st["remotes"]) == 1 else (None,)
                        if r is None:
                            continue
                        frames = r["framesSFU"] if r["active"] == "sfu" else r["framesP2P"]
                        if back[i] is None and r["active"] and r["sinceLastFrameMs"] is not None \
                                and r["sinceLastFrameMs"] < 200 and loop.time() - at > 0.3 and \
                                (r["active"] == "sfu" or frames > 5):
                            back[i] = round(loop.time() - at, 3)
                        if direct[i] is None and r["active"] == "p2p" and not st["paths"]["publisher"] \
                                and st["fallbacks"] and st["fallbacks"][-1]["p2pBackMs"] is not None \
                                and len(st["fallbacks"]) >= k // 1 and back[i] is not None:
                            direct[i] = round(loop.time() - at, 3)
                    await asyncio.sleep(0.05)
                after = [await _stats(p) for p in pages]
                result["breaks"].append({
                    "closed": "alice" if k % 2 == 0 else "bob",
                    "back_s": back, "direct_again_s": direct,
                    "fallbacks": [s["fallbacks"] for s in after],
                    "longest_gap_ms": [max((r["maxGapMs"] for r in s["remotes"].values()), default=None) for s in after],
                    "modes": [s["mode"] for s in after],
                    "paths": [s["paths"] for s in after],
                    "shown_before": shown,
                })
                if None in back or None in direct:
                    result["timeout_stats"] = after
                    break
            await browser.close()
    finally:
        result["seconds"] = round(time.monotonic() - t0, 1)
    return result


async def cluster(hold: float) -> dict[str, Any]:
    """Two ``sfu-server`` nodes sharing a redis-server (signaling/cluster.py):
    alice and bob load the call page from node A, carol from node B. Each
    page's Socket.IO connection and REST calls reach the call's node
    (forwarded by the other); the call moves to the SFU and every page
    decodes both others. Reports each node's rooms and what node B forwarded."""
    import tempfile
    from pathlib import Path

    import aiohttp

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    from cluster_nodes import Node, start_redis

    tmp = Path(tempfile.mkdtemp(prefix="sfu-cluster-"))
    redis_proc, url = start_redis(tmp)
    nodes = [Node(tmp, "node-a", url, SECRET), Node(tmp, "node-b", url, SECRET)]
    result: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        for n in nodes:
            await n.ready()
        a_base, b_base = nodes[0].base, nodes[1].base
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = await browser.new_context()
            pages = (await _call_pages(ctx, a_base, ("alice", "bob"), wait_each=True)
                     + await _call_pages(ctx, b_base, ("carol",)))
            result["sfu"] = await _until(pages, _settled("sfu", 2), "three pages over the SFU", timeout=45)
            before = [await _stats(p) for p in pages]
            await asyncio.sleep(hold)
            after = [await _stats(p) for p in pages]
            result["decoding"] = [
                len(s["remotes"]) == 2 and all(r["shownFrames"] > b["remotes"][pid]["shownFrames"]
                                               for pid, r in s["remotes"].items() if pid in b["remotes"])
                for b, s in zip(before, after)]
            await browser.close()
        async with aiohttp.ClientSession() as http:
            rooms = {}
            for n in nodes:
                async with http.get(f"{n.base}/metrics") as resp:
                    text = await resp.text()
                rooms[n.name] = next(float(line.split()[1]) for line in text.splitlines()
                                     if line.startswith("sfu_rooms "))
        result["rooms"] = rooms
    finally:
        for n in nodes:
            n.stop()
        redis_proc.terminate()
        redis_proc.wait(10)
    logs = {n.name: n.out.read_text() for n in nodes}
    result["b_socketio_requests"] = logs["node-b"].count('"GET /socket.io/')
    result["a_socketio_requests"] = logs["node-a"].count('"GET /socket.io/')
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


async def _metrics(app: web.Application) -> str:
    from prometheus_client import generate_latest

    from signaling.metrics import METRICS

    return generate_latest(app[METRICS].registry).decode()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "p2pbreak":
        print(json.dumps(asyncio.run(p2p_break(int(sys.argv[2]) if len(sys.argv) > 2 else 2))), flush=True)
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "rebind":
        print(json.dumps(asyncio.run(rebind(int(sys.argv[2]) if len(sys.argv) > 2 else 3))), flush=True)
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "restart":
        print(json.dumps(asyncio.run(restart(sys.argv[2]))), flush=True)
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "cluster":
        print(json.dumps(asyncio.run(cluster(float(sys.argv[2]) if len(sys.argv) > 2 else 2.0))), flush=True)
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "kill":
        print(json.dumps(asyncio.run(kills(int(sys.argv[2]) if len(sys.argv) > 2 else 5))), flush=True)
        sys.exit(0)
    hold_s = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    kf = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print(json.dumps(asyncio.run(main(hold_s, kf))), flush=True)
