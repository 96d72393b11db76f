"""A room spread over two nodes (signaling/edge.py, ``--edge-rooms``).

A real redis-server and two real sfu-server nodes: node A holds the room,
node B runs with --edge-rooms and answers the room's requests itself in its
own edge room. A publisher on A and a publisher on B (aiortc, WHIP) see
each other's media through the SRTP pipe between the nodes: B pushes its
publisher's producers to A, which adds them to the room and tells its edges;
B pulls A's producers when a viewer asks for them."""

from __future__ import annotations

import asyncio
import time
from typing import Optional

import aiohttp
import pytest

pytest.importorskip("aiortc")
pytest.importorskip("redis")
from aiortc import RTCPeerConnection  # noqa: E402

from cluster_nodes import Node, needs_redis, running  # noqa: E402
from test_cluster import SECRET, bearer, publish  # noqa: E402
from test_cluster_edge import AvViewer, internal  # noqa: E402
from test_mediasoup_client import _assert_measured, bundle, run_msc, summary  # noqa: E402,F401

pytestmark = needs_redis


@pytest.fixture
async def nodes(tmp_path, redis_url):
    async with running(Node(tmp_path, "node-a", redis_url, SECRET, "--empty-room-grace", "1"),
                       Node(tmp_path, "node-b", redis_url, SECRET, "--edge-rooms", "--empty-room-grace", "1")
                       ) as started:
        yield started


async def wait_state(http: aiohttp.ClientSession, node: Node, check, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, state = await internal(http, node, "GET", "/_cluster/state")
        assert status == 200, state
        if check(state) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.05)


async def test_publishers_on_two_nodes_see_each_other(nodes):
    a, b = nodes
    pcs: list[RTCPeerConnection] = []
    viewers = [AvViewer(), AvViewer()]
    async with aiohttp.ClientSession() as http:
        try:
            pc, pub_a = await publish(http, f"{a.base}/whip/span")
            pcs.append(pc)
            assert pub_a["X-Sfu-Node"] == "node-a", pub_a
            # B answers the second publisher itself, in its edge room of A's room
            pc, pub_b = await publish(http, f"{b.base}/whip/span")
            pcs.append(pc)
            assert pub_b["X-Sfu-Node"] == "node-b", pub_b
            pid_a, pid_b = pub_a["X-Sfu-Participant-Id"], pub_b["X-Sfu-Participant-Id"]
            # B's publisher pushed to A: A's room has its two producers
            state_a = await wait_state(http, a, lambda s: any(len(p["inbound"]) == 2 for p in s["owner"].values()))
            assert [len(p["inbound"]) for p in state_a["owner"].values()] == [2], state_a
            state_b = await wait_state(http, b, lambda s: len(s["edge"].get("span", {}).get("pushed", [])) == 2)
            assert len(state_b["edge"]["span"]["pushed"]) == 2, state_b
            # a viewer on A watches B's publisher, a viewer on B watches A's
            h = await viewers[0].start(http, f"{a.base}/whep/span?participant={pid_b}")
            assert h["X-Sfu-Node"] == "node-a", h
            h = await viewers[1].start(http, f"{b.base}/whep/span?participant={pid_a}")
            assert h["X-Sfu-Node"] == "node-b", h
            for v in viewers:
                assert await v.wait_frames(15, 30), f"viewer decoded {v.frames} frames"
                assert v.audio > 0
            # B's publisher leaves (on B): its producers leave A's room too
            async with http.delete(b.base + pub_b["Location"], headers=bearer()) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["X-Sfu-Node"] == "node-b"
            state_a = await wait_state(http, a, lambda s: all(not p["inbound"] for p in s["owner"].values()))
            assert all(not p["inbound"] for p in state_a["owner"].values()), state_a
            async with http.post(f"{a.base}/api/rooms/span/participants", headers=bearer("lister")) as resp:
                assert resp.status == 201
            async with http.get(f"{a.base}/api/rooms/span/producers", headers=bearer("lister")) as resp:
                listed = (await resp.json())["producers"]
            assert {pr["participantId"] for pr in listed} == {pid_a}, listed
        finally:
            for v in viewers:
                await v.close()
            for pc in pcs:
                await pc.close()


async def test_a_room_api_participant_on_the_edge_consumes_a_producer_of_the_owner(nodes):
    """The room API on B (mediasoup's flow): a producer made on A a moment
    earlier is consumable on B at once (pulled on demand), and B's own
    producer is consumable on A right after its produce answer."""
    a, b = nodes
    pcs: list[RTCPeerConnection] = []
    async with aiohttp.ClientSession() as http:
        try:
            pc, pub_a = await publish(http, f"{a.base}/whip/api-span")
            pcs.append(pc)
            pid_a = pub_a["X-Sfu-Participant-Id"]
            r = f"{b.base}/api/rooms/api-span"
            async with http.post(f"{r}/participants", headers=bearer("edge-user")) as resp:
                joined = await resp.json()
                assert resp.status == 201 and resp.headers["X-Sfu-Node"] == "node-b", joined
            caps = joined["rtpCapabilities"]
            async with http.get(f"{a.base}/api/rooms/api-span/producers", headers=bearer("owner-user")) as resp:
                assert resp.status == 403  # (no participant of that user on A)
            async with http.post(f"{a.base}/api/rooms/api-span/participants", headers=bearer("owner-user")) as resp:
                assert resp.status == 201
            async with http.get(f"{a.base}/api/rooms/api-span/producers", headers=bearer("owner-user")) as resp:
                listed = (await resp.json())["producers"]
            producer_ids = [pr["producerId"] for pr in listed if pr["participantId"] == pid_a]
            assert len(producer_ids) == 2, listed
            async with http.post(f"{r}/transports", json={"direction": "recv"}, headers=bearer("edge-user")) as resp:
                t = await resp.json()
                assert resp.status == 201, t
                assert resp.headers["X-Sfu-Node"] == "node-b"
            for producer_id in producer_ids:   # not on B yet: pulled from A on demand
                async with http.post(f"{r}/consume", json={"transportId": t["id"], "producerId": producer_id,
                                                           "rtpCapabilities": caps},
                                     headers=bearer("edge-user")) as resp:
                    c = await resp.json()
                    assert resp.status in (200, 201), c
                    assert c["producerId"] == producer_id and resp.headers["X-Sfu-Node"] == "node-b"
            # B's producers (listed on B) include A's, as producers of A's participant
            async with http.get(f"{r}/producers", headers=bearer("edge-user")) as resp:
                listed_b = (await resp.json())["producers"]
            assert sorted(pr["producerId"] for pr in listed_b if pr["participantId"] == pid_a) == sorted(producer_ids)
        finally:
            for pc in pcs:
                await pc.close()


def test_mediasoup_client_pages_on_two_nodes_see_each_other(bundle):  # noqa: F811
    """Chromium pages running the real mediasoup-client against the room API
    (tests/browser/msc/): two on node A, two on node B (--edge-rooms), one
    room. Each page consumes the others' producers as it lists them and as
    the room WebSocket announces them, on its own node: every page decodes
    every other's video and receives its audio, half of the pairs through
    the pipe between the nodes."""
    result = run_msc("nodes", "vp8", timeout=240)
    print(summary(result["second"]))
    _assert_measured(result, "video/VP8", "nodes")
    owner = [name for name, st in result["state"].items() if st["owner"]]
    edge = [name for name, st in result["state"].items() if st["edge"]]
    assert len(owner) == 1 and len(edge) == 1 and owner != edge, result["state"]
    pushed = next(iter(result["state"][edge[0]]["edge"].values()))["pushed"]
    assert len(pushed) == 4, result["state"]   # the edge's two pages' audio and video went to the owner


async def test_when_the_rooms_node_dies_the_edge_room_goes_on_as_the_room(nodes):
    """Publishers on A and on B (B's in its edge room); A is killed (SIGKILL,
    workers too). B's publisher never leaves: once A's registration expires,
    the next new session places the room on B, B's edge room is the room
    (its stale pipe to A closed, A's producers gone from it), and a new
    viewer through B decodes B's publisher, whose session was never posted
    again. A's publisher re-posts to B and is viewed there too."""
    a, b = nodes
    pcs: list[RTCPeerConnection] = []
    viewers = [AvViewer(), AvViewer()]
    async with aiohttp.ClientSession() as http:
        try:
            pc, pub_a = await publish(http, f"{a.base}/whip/survive")
            pcs.append(pc)
            assert pub_a["X-Sfu-Node"] == "node-a", pub_a
            pc, pub_b = await publish(http, f"{b.base}/whip/survive")
            pcs.append(pc)
            pid_b = pub_b["X-Sfu-Participant-Id"]
            await wait_state(http, a, lambda s: any(len(p["inbound"]) == 2 for p in s["owner"].values()))
            t_kill = time.monotonic()
            a.kill()
            # A's publisher re-posts to B (answered by B, still as A's edge)
            await pcs[0].close()
            pc, pub_a2 = await publish(http, f"{b.base}/whip/survive", retry_s=10)
            pcs[0] = pc
            assert pub_a2["X-Sfu-Node"] == "node-b", pub_a2
            # viewers come once A's registration has expired (2 s): their offers place the room on B
            await asyncio.sleep(max(0.0, t_kill + 2.5 - time.monotonic()))
            h = await viewers[0].start(http, f"{b.base}/whep/survive?participant={pid_b}", retry_s=10)
            assert h["X-Sfu-Node"] == "node-b", h
            h = await viewers[1].start(http, f"{b.base}/whep/survive?participant={pub_a2['X-Sfu-Participant-Id']}",
                                       retry_s=10)
            # the room is B's now: its stale pipe to A closed
            state_b = await wait_state(http, b, lambda s: "survive" not in s["edge"])
            assert "survive" not in state_b["edge"], state_b
            for v in viewers:
                assert await v.wait_frames(5, 20), f"viewer decoded {v.frames} frames"
            print(f"\nnode A killed: both publishers viewed through node B {time.monotonic() - t_kill:.2f} s later "
                  f"(B's publisher never re-posted)")
        finally:
            for v in viewers:
                await v.close()
            for pc in pcs:
                await pc.close()
