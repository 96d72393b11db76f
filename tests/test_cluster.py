"""Two `sfu-server` nodes sharing a real Redis (signaling/cluster.py).

Each test starts its own `redis-server` (Debian's package, installed by
.ci/run) on a free loopback port and two real sfu-server processes with
--redis-url. Media is real (aiortc WHIP publisher and WHEP viewer over
loopback UDP)."""

from __future__ import annotations

import asyncio
import time
from typing import Optional

import aiohttp
import jwt
import pytest

pytest.importorskip("aiortc")
redis = pytest.importorskip("redis")
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack  # noqa: E402

from cluster_nodes import Node, needs_redis, running  # noqa: E402

pytestmark = needs_redis

SECRET = "cluster-test-secret-0123456789abcdef0123"


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


def bearer(user: str = "u") -> dict:
    return {"Authorization": f"Bearer {token(user)}"}


@pytest.fixture
async def nodes(tmp_path, redis_url):
    async with running(Node(tmp_path, "node-a", redis_url, SECRET), Node(tmp_path, "node-b", redis_url, SECRET)) as started:
        yield started


async def post_sdp(http: aiohttp.ClientSession, url: str, sdp: str, retry_s: float = 0.0) -> tuple[str, dict]:
    """POST an offer; with ``retry_s``, 503s (a node going away) are retried that long."""
    deadline = time.monotonic() + retry_s
    while True:
        async with http.post(url, data=sdp, headers={"Content-Type": "application/sdp", **bearer()}) as resp:
            text = await resp.text()
            if resp.status == 503 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                continue
            assert resp.status == 201, (resp.status, text)
            return text, dict(resp.headers)


async def publish(http: aiohttp.ClientSession, url: str, retry_s: float = 0.0) -> tuple[RTCPeerConnection, dict]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer, headers = await post_sdp(http, url, pc.localDescription.sdp, retry_s)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, headers


class Viewer:
    """A WHEP viewer counting the video frames it decodes."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames = 0
        self.last_frame = 0.0
        self._tasks: list[asyncio.Task] = []

        @self.pc.on("track")
        def on_track(track) -> None:
            if track.kind == "video":
                self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track) -> None:
        try:
            while True:
                await track.recv()
                self.frames += 1
                self.last_frame = time.monotonic()
        except MediaStreamError:
            pass

    async def start(self, http: aiohttp.ClientSession, url: str, retry_s: float = 0.0) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer, headers = await post_sdp(http, url, self.pc.localDescription.sdp, retry_s)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return headers

    async def wait_frames(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.frames < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.frames >= n

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()


async def test_a_publisher_on_one_node_and_a_viewer_on_the_other_see_each_other(nodes):
    """The WHEP viewer posts to node B; the room lives where the publisher
    placed it (node A's request, the least-loaded node then): B forwards the
    offer, and the viewer decodes the publisher's video."""
    a, b = nodes
    viewer = Viewer()
    pc: Optional[RTCPeerConnection] = None
    async with aiohttp.ClientSession() as http:
        try:
            pc, pub_headers = await publish(http, f"{a.base}/whip/lobby")
            owner = pub_headers["X-Sfu-Node"]
            headers = await viewer.start(http, f"{b.base}/whep/lobby")
            assert headers["X-Sfu-Node"] == owner, headers  # answered by the room's node, whichever was asked
            assert await viewer.wait_frames(15, 30), f"viewer decoded {viewer.frames} frames"
            # a room nobody holds is a 404 on every node, not placed
            for n in (a, b):
                async with http.get(f"{n.base}/api/rooms/nowhere/producers", headers=bearer()) as resp:
                    assert resp.status == 404 and "nowhere" in await resp.text()
        finally:
            await viewer.close()
            if pc is not None:
                await pc.close()


async def test_fifty_concurrent_joins_create_the_room_once(nodes, redis_url):
    """50 room creations at once, half on each node: exactly one creates
    the room, every answer comes from the same node; a second room then
    goes to the less-loaded node."""
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        async def create(node: Node, room: str, user: str) -> tuple[int, str]:
            # one user each: the per-user rate limit (burst 40) is not what this tests
            async with http.post(f"{node.base}/api/rooms/{room}/create", headers=bearer(user)) as resp:
                await resp.read()
                return resp.status, resp.headers.get("X-Sfu-Node", "")

        results = await asyncio.gather(*(create(nodes[i % 2], "race", f"user{i}") for i in range(50)))
        statuses = sorted(s for s, _ in results)
        assert statuses == [200] * 49 + [201], results  # 201: created, once in the cluster
        owners = {n for _, n in results}
        assert len(owners) == 1, owners
        owner = owners.pop()
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert r.get("sfu:room:race") == owner
            assert sorted(k for k in r.scan_iter("sfu:node:*")) == ["sfu:node:node-a", "sfu:node:node-b"]
        finally:
            r.close()
        # only the owner holds a router for it
        for n in (a, b):
            async with http.get(f"{n.base}/metrics") as resp:
                text = await resp.text()
            rooms = next(float(line.split()[1]) for line in text.splitlines() if line.startswith("sfu_rooms "))
            assert rooms == (1.0 if n.name == owner else 0.0), (n.name, owner, rooms)


async def test_killing_a_node_its_participants_are_back_on_the_other_within_5_s(nodes):
    """Publisher and viewer in a room held by node A (both ask node A);
    node A is killed (SIGKILL, workers too). They do what the demo page
    does when media stops for a second: post their offers again, now to
    node B, retrying its 503s while A's registration expires. Measured
    from the kill to the viewer's first decoded frame on node B."""
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        pc, headers = await publish(http, f"{a.base}/whip/exam")
        victim = next(n for n in nodes if n.name == headers["X-Sfu-Node"])
        survivor = b if victim is a else a
        viewer = Viewer()
        await viewer.start(http, f"{victim.base}/whep/exam")
        assert await viewer.wait_frames(10, 30), viewer.frames
        new_pc: Optional[RTCPeerConnection] = None
        new_viewer = Viewer()
        try:
            t_kill = time.monotonic()
            victim.kill()
            # the viewer notices: no frame for a second
            while time.monotonic() - viewer.last_frame < 1.0:
                await asyncio.sleep(0.05)
            await pc.close()
            await viewer.close()
            new_pc, headers = await publish(http, f"{survivor.base}/whip/exam", retry_s=10)
            assert headers["X-Sfu-Node"] == survivor.name
            await new_viewer.start(http, f"{survivor.base}/whep/exam", retry_s=10)
            assert await new_viewer.wait_frames(1, 10), new_viewer.frames
            back_s = time.monotonic() - t_kill
            print(f"\nnode {victim.name} killed: media back through {survivor.name} after {back_s:.2f} s")
            assert back_s <= 5.0, back_s
        finally:
            await new_viewer.close()
            if new_pc is not None:
                await new_pc.close()


async def test_a_forwarded_request_counts_against_the_client_not_the_forwarding_node(tmp_path, redis_url):
    """Per-IP rate limits (burst 5 here): a request forwarded by node B is
    counted on B against the client's address and user, not again on the
    room's node A against B's address (which every client of B would share).
    A client that claims to be a node (the header without the cluster's
    signature) is counted like any client."""
    limit = ("--rate-limit-ip", "1/s:5", "--rate-limit-user", "off")
    async with running(Node(tmp_path, "node-a", redis_url, SECRET, *limit),
                       Node(tmp_path, "node-b", redis_url, SECRET, *limit)) as (a, b):
        async with aiohttp.ClientSession() as http:
            async def create(node: Node, extra: Optional[dict] = None) -> tuple[int, str]:
                async with http.post(f"{node.base}/api/rooms/limits/create",
                                     headers={**bearer(), **(extra or {})}) as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("X-Sfu-Node", "")

            first = await create(a)
            assert first[0] in (200, 201), first
            owner, other = (a, b) if first[1] == "node-a" else (b, a)
            statuses = []
            while len(statuses) < 7 and 429 not in statuses:  # the owner's bucket for 127.0.0.1: used up
                statuses.append((await create(owner))[0])
            assert statuses[-1] == 429 and set(statuses[:-1]) <= {200, 201}, statuses
            # through the other node: its own bucket counts it, the owner answers
            got = [await create(other) for _ in range(3)]
            assert all(status in (200, 201) and node == owner.name for status, node in got), got
            # the header alone (not signed by a node) buys nothing
            forged = await create(owner, {"X-Sfu-Proxied-By": other.name})
            assert forged[0] == 429, forged
