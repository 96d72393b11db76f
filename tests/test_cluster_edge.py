"""WHEP viewers served by an edge node (signaling/edge.py, ``--edge-viewers``).

A real redis-server and two real sfu-server nodes: node A holds the room
(its WHIP publisher, aiortc), node B runs with --edge-viewers and answers
WHEP viewers itself, the room's media piped from A over UDP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Optional

import aiohttp
import pytest

pytest.importorskip("aiortc")
pytest.importorskip("redis")
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack  # noqa: E402

from cluster_nodes import Node, needs_redis, running  # noqa: E402
from test_cluster import SECRET, Viewer, bearer, post_sdp, publish  # noqa: E402

from signaling.edge import AUTH_HEADER, sign  # noqa: E402

pytestmark = needs_redis


@pytest.fixture
async def nodes(tmp_path, redis_url):
    # empty rooms close after 1 s (not 30): the test sees the edge room and the pipe go
    async with running(Node(tmp_path, "node-a", redis_url, SECRET, "--empty-room-grace", "1"),
                       Node(tmp_path, "node-b", redis_url, SECRET, "--edge-viewers", "--empty-room-grace", "1")
                       ) as started:
        yield started


class AvViewer(Viewer):
    """A WHEP viewer counting decoded video frames and audio frames."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = 0

        @self.pc.on("track")
        def on_audio(track: Any) -> None:
            if track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(self._read_audio(track)))

    async def _read_audio(self, track: Any) -> None:
        try:
            while True:
                await track.recv()
                self.audio += 1
        except MediaStreamError:
            pass


async def internal(http: aiohttp.ClientSession, node: Node, method: str, path: str,
                   data: Optional[dict] = None, signed: bool = True) -> tuple[int, Any]:
    body = json.dumps(data).encode() if data is not None else b""
    headers = {AUTH_HEADER: sign(SECRET.encode(), method, path, body)} if signed else {}
    async with http.request(method, node.base + path, data=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text.startswith("{") else text)


async def rooms_metric(http: aiohttp.ClientSession, node: Node) -> float:
    async with http.get(f"{node.base}/metrics") as resp:
        text = await resp.text()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("sfu_rooms "))


async def test_whep_viewers_on_an_edge_node_see_the_owners_publisher(nodes):
    a, b = nodes
    viewers = [AvViewer(), AvViewer()]
    pc: Optional[RTCPeerConnection] = None
    async with aiohttp.ClientSession() as http:
        try:
            pc, pub = await publish(http, f"{a.base}/whip/show")
            assert pub["X-Sfu-Node"] == "node-a", pub
            # the first viewer: answered by B, media piped A -> B
            t0 = time.monotonic()
            sessions = []
            headers = await viewers[0].start(http, f"{b.base}/whep/show")
            sessions.append(headers["Location"])
            setup_s = time.monotonic() - t0
            assert headers["X-Sfu-Node"] == "node-b", headers
            assert await viewers[0].wait_frames(15, 30), f"viewer decoded {viewers[0].frames} frames"
            assert viewers[0].audio > 0
            first_frame_s = time.monotonic() - t0
            assert await rooms_metric(http, b) == 1.0
            assert await rooms_metric(http, a) == 1.0
            # the second viewer reuses B's pipe. Its first frame needs a keyframe, which aiortc's
            # VP8 encoder makes only on request (or every 3000 frames): B's keyframe request
            # crossed the pipe to A's producer and on to the publisher
            t1 = time.monotonic()
            headers = await viewers[1].start(http, f"{b.base}/whep/show")
            sessions.append(headers["Location"])
            assert headers["X-Sfu-Node"] == "node-b", headers
            assert await viewers[1].wait_frames(1, 10), "no keyframe for the second edge viewer"
            print(f"\nsecond edge viewer: first frame {time.monotonic() - t1:.2f} s after its offer")
            assert await viewers[1].wait_frames(15, 30), f"viewer 2 decoded {viewers[1].frames} frames"
            status, state_b = await internal(http, b, "GET", "/_cluster/state")
            assert status == 200, state_b
            assert state_b["pipesMade"] == 1, state_b
            assert len(state_b["edge"]["show"]["producers"]) == 2 and state_b["edge"]["show"]["srtp"], state_b
            status, state_a = await internal(http, a, "GET", "/_cluster/state")
            assert status == 200 and len(state_a["owner"]) == 1, state_a
            print(f"\nedge viewer: WHEP answer in {setup_s * 1000:.0f} ms (pipe set up), "
                  f"15 frames after {first_frame_s:.2f} s")
            # the publisher leaves: its producers go from B's edge room too
            async with http.delete(a.base + pub["Location"], headers=bearer()) as resp:
                assert resp.status == 200, await resp.text()
            deadline = time.monotonic() + 5
            while True:
                _, state_b = await internal(http, b, "GET", "/_cluster/state")
                if not state_b["edge"]["show"]["producers"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert state_b["edge"]["show"]["producers"] == [], state_b
            # A's room, empty, closes: the pipe closes on both ends
            deadline = time.monotonic() + 10
            while True:
                _, state_a = await internal(http, a, "GET", "/_cluster/state")
                _, state_b = await internal(http, b, "GET", "/_cluster/state")
                if (not state_a["owner"] and not state_b["edge"]) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert not state_a["owner"] and not state_b["edge"], (state_a, state_b)
            # the viewers' sessions end on B (which answers for them), and B's edge room closes
            for location in sessions:
                async with http.delete(b.base + location, headers=bearer()) as resp:
                    assert resp.status == 200, await resp.text()
                    assert resp.headers["X-Sfu-Node"] == "node-b"
            deadline = time.monotonic() + 10
            while await rooms_metric(http, b) != 0.0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await rooms_metric(http, b) == 0.0
        finally:
            for v in viewers:
                await v.close()
            if pc is not None:
                await pc.close()


async def test_the_internal_api_refuses_unsigned_calls(nodes):
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        for node in (a, b):
            status, body = await internal(http, node, "POST", "/_cluster/rooms/show/pipe",
                                          {"ip": "127.0.0.1", "port": 9}, signed=False)
            assert status == 403, (status, body)
            assert "signed" in body["error"]
            status, _ = await internal(http, node, "GET", "/_cluster/state", signed=False)
            assert status == 403
            # signed with another secret, or over another body
            path = "/_cluster/rooms/show/pipe"
            bad = {AUTH_HEADER: sign(b"not-the-secret-not-the-secret-0123", "POST", path, b"{}")}
            async with http.post(node.base + path, data=b"{}", headers=bad) as resp:
                assert resp.status == 403
            other = {AUTH_HEADER: sign(SECRET.encode(), "POST", path, b"{}")}
            async with http.post(node.base + path, data=b'{"ip": "10.0.0.1"}', headers=other) as resp:
                assert resp.status == 403


class StampViewer(AvViewer):
    """Also notes when each video frame was decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def _read(self, track: Any) -> None:
        try:
            while True:
                await track.recv()
                self.arrivals.append(time.monotonic())
                self.frames += 1
                self.last_frame = self.arrivals[-1]
        except MediaStreamError:
            pass

    def gap_ends(self, gap_s: float = 0.25) -> list[float]:
        """When the first frame after each pause of the video was decoded."""
        return [t for prev, t in zip(self.arrivals, self.arrivals[1:]) if t - prev > gap_s]


class GappyTrack(VideoStreamTrack):
    """Test video that pauses 0.4 s every 1.5 s: the first frame after a
    pause marks the same moment on every path."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> Any:
        self.n += 1
        if self.n % 45 == 0:
            await asyncio.sleep(0.4)
        return await super().recv()


async def publish_gappy(http: aiohttp.ClientSession, url: str) -> tuple[RTCPeerConnection, dict]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(GappyTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer, headers = await post_sdp(http, url, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, headers


async def test_a_publisher_arriving_later_is_piped_at_the_next_offer_and_the_hop_is_measured(nodes):
    """A second publisher joins the room on A after B became its edge: the
    next WHEP offer on B pipes it too. A viewer on A and one on B watch the
    same publisher: the decode times of the same frames give the added
    latency of the node-to-node hop (loopback here)."""
    a, b = nodes
    pcs: list[RTCPeerConnection] = []
    viewers = [StampViewer(), StampViewer(), StampViewer()]
    async with aiohttp.ClientSession() as http:
        try:
            pc, pub1 = await publish(http, f"{a.base}/whip/late")
            pcs.append(pc)
            assert (await viewers[0].start(http, f"{b.base}/whep/late"))["X-Sfu-Node"] == "node-b"
            assert await viewers[0].wait_frames(5, 30)
            pc, pub2 = await publish_gappy(http, f"{a.base}/whip/late")
            pcs.append(pc)
            assert pub2["X-Sfu-Node"] == "node-a"
            pid2 = pub2["X-Sfu-Participant-Id"]
            headers = await viewers[1].start(http, f"{b.base}/whep/late?participant={pid2}")
            assert headers["X-Sfu-Node"] == "node-b"
            assert await viewers[1].wait_frames(15, 30), viewers[1].frames
            _, state_b = await internal(http, b, "GET", "/_cluster/state")
            assert state_b["pipesMade"] == 1 and len(state_b["edge"]["late"]["producers"]) == 4, state_b
            # the same publisher (2) viewed on A directly
            headers = await viewers[2].start(http, f"{a.base}/whep/late?participant={pid2}")
            assert headers["X-Sfu-Node"] == "node-a"
            assert await viewers[2].wait_frames(15, 30)
            await asyncio.sleep(8)
            direct = viewers[2].gap_ends()
            hop = []
            for t in viewers[1].gap_ends():
                near = min(direct, key=lambda d: abs(d - t), default=None)
                if near is not None and abs(near - t) < 0.2:
                    hop.append((t - near) * 1000)
            if len(hop) < 3:
                pytest.skip(f"only {len(hop)} pauses of the video seen on both paths")
            hop.sort()
            med = hop[len(hop) // 2]
            print(f"\nnode-to-node hop (edge viewer minus direct viewer, first frame after {len(hop)} pauses): "
                  f"median {med:.2f} ms, min {hop[0]:.2f}, max {hop[-1]:.2f} ms")
            assert med < 50, hop
        finally:
            for v in viewers:
                await v.close()
            for pc in pcs:
                await pc.close()
