"""Runs the call service (one worker, JWT auth) and three headless Chromium
pages of one call through its life: two pages (P2P), a third joins (the
call moves to the SFU), the third leaves (back to P2P). Prints one JSON line
with each page's window.callStats() at every phase and the server's view.

Meant to run inside a network namespace that has only `lo` (see
tests/test_chromium_calls.py). Usage: python tests/browser/call_pages.py [HOLD_SECONDS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Callable

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


async def _metrics(app: web.Application) -> str:
    from prometheus_client import generate_latest

    from signaling.metrics import METRICS

    return generate_latest(app[METRICS].registry).decode()


if __name__ == "__main__":
    hold_s = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    kf = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print(json.dumps(asyncio.run(main(hold_s, kf))), flush=True)
