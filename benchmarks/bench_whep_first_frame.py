"""Time from a WHEP viewer's request to its first decoded video frame.

An embedded sfu-server (one worker) on 127.0.0.1, one aiortc publisher over
WHIP, then viewers joining one after another over WHEP. Each measurement runs
from just before the viewer creates its offer to the first frame its decoder
returns; the SFU asks the publisher for a keyframe when a viewer's consumer
resumes, so the publisher's keyframe interval is not part of it.

    python -m benchmarks.bench_whep_first_frame [--viewers 10] [--json FILE]

aioice's host gathering is pinned to 127.0.0.1 (loopback only, no STUN).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from aiohttp import ClientSession, web
from aioice import ice as aioice_ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from signaling.server import create_app, start_rooms


async def _negotiate(http: ClientSession, pc: RTCPeerConnection, url: str) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as resp:
        body = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"{url}: {resp.status} {body}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))


async def run(viewers: int, warmup: float) -> dict:
    aioice_ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    rooms = await start_rooms(workers=1)
    runner = web.AppRunner(create_app(rooms))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    results: list[float] = []
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        async with ClientSession() as http:
            publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
            publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
            await _negotiate(http, publisher, f"{base}/whip/bench")
            await asyncio.sleep(warmup)  # past the publisher's first keyframe
            for _ in range(viewers):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                first = asyncio.get_running_loop().create_future()

                def on_track(track, first=first) -> None:
                    if track.kind != "video":
                        return

                    async def pull() -> None:
                        await track.recv()
                        if not first.done():
                            first.set_result(time.perf_counter())

                    asyncio.ensure_future(pull())

                pc.on("track", on_track)
                pc.addTransceiver("video", direction="recvonly")
                t0 = time.perf_counter()
                await _negotiate(http, pc, f"{base}/whep/bench")
                t1 = await asyncio.wait_for(first, 20)
                results.append((t1 - t0) * 1000)
                print(f"  viewer {len(results)}: first frame after {results[-1]:.0f} ms", flush=True)
                await pc.close()
                await asyncio.sleep(0.5)
    finally:
        await publisher.close()
        await runner.cleanup()
        await rooms.close()
    return {
        "viewers": viewers,
        "first_frame_ms": results,
        "p50_ms": statistics.median(results),
        "max_ms": max(results),
        "min_ms": min(results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    r = asyncio.run(run(args.viewers, args.warmup))
    print("\n| viewers | first frame p50 | min | max |\n|---|---|---|---|")
    print(f"| {r['viewers']} | {r['p50_ms']:.0f} ms | {r['min_ms']:.0f} ms | {r['max_ms']:.0f} ms |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
