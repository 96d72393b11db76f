"""One room over two workers (sfu-server --consumers-per-worker): WHIP
publishers and WHEP viewers (aiortc's RTCPeerConnection, standard SDP
clients) placed on routers of two workers, media piped between them."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

pytest.importorskip("aiortc")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402

from aiortc_peer import pin_loopback  # noqa: E402
from signaling.server import create_app, start_rooms  # noqa: E402


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


@pytest.fixture
async def server():
    rooms = await start_rooms(workers=2, rtc_port=47430, consumers_per_worker=1)
    c = TestClient(TestServer(create_app(rooms), host="127.0.0.1"))
    await c.start_server()
    try:
        yield c, rooms
    finally:
        await c.close()
        await rooms.close()


async def post_offer(client, pc: RTCPeerConnection, url: str) -> str:
    """Offer/answer with the server; returns the participant id."""
    await pc.setLocalDescription(await pc.createOffer())
    resp = await client.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"})
    body = await resp.text()
    assert resp.status == 201, body
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return resp.headers["X-Sfu-Participant-Id"]


async def publish(client, room: str) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    return pc, await post_offer(client, pc, f"/whip/{room}")


async def view(client, room: str, participant: str) -> tuple[RTCPeerConnection, str, dict]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks: dict = {}
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.on("track", lambda track: tracks.__setitem__(track.kind, track))
    pid = await post_offer(client, pc, f"/whep/{room}?participant={participant}")
    return pc, pid, tracks


async def decodes(tracks: dict, frames: int = 20) -> None:
    for _ in range(100):
        if len(tracks) == 2:
            break
        await asyncio.sleep(0.05)
    assert set(tracks) == {"audio", "video"}
    for _ in range(frames):
        frame = await asyncio.wait_for(tracks["video"].recv(), 15)
        assert (frame.width, frame.height) == (640, 480)
    audio = await asyncio.wait_for(tracks["audio"].recv(), 10)
    assert audio.sample_rate == 48000


async def test_a_room_spreads_over_two_workers_and_everyone_sees_everyone(server):
    client, rooms = server
    pcs: list[RTCPeerConnection] = []
    try:
        pub1, pub1_id = await publish(client, "wide")
        pcs.append(pub1)
        room = rooms.room("wide")
        worker_a = room.router.worker
        v1, v1_id, v1_tracks = await view(client, "wide", pub1_id)  # worker A: under the budget
        pcs.append(v1)
        assert room.participants[v1_id].router is room.router

        # worker A is now at its budget (1 consumer): the next participant
        # goes to a router of the room on the other worker; pub1 is piped there
        pub2, pub2_id = await publish(client, "wide")
        pcs.append(pub2)
        assert len(room.routers) == 2 and rooms.rooms_spread == 1
        router_b = room.routers[1]
        assert room.participants[pub2_id].router is router_b and router_b.worker is not worker_a
        for prod in room.participants[pub1_id].producers.values():
            assert router_b.get_producer(prod.id) is not None  # pub1 piped to B
        for prod in room.participants[pub2_id].producers.values():
            assert room.router.get_producer(prod.id) is not None  # pub2 piped to A

        # a viewer of pub1 (on A) placed on B: sees it through the pipe
        v2, v2_id, v2_tracks = await view(client, "wide", pub1_id)
        pcs.append(v2)
        assert room.participants[v2_id].router is router_b

        # with room on A again, a viewer of pub2 (on B) placed on A
        rooms.consumers_per_worker = 100
        v3, v3_id, v3_tracks = await view(client, "wide", pub2_id)
        pcs.append(v3)
        assert room.participants[v3_id].router is room.router

        await asyncio.gather(decodes(v1_tracks), decodes(v2_tracks), decodes(v3_tracks))
        assert len(room.routers) == 2
        metrics = await (await client.get("/metrics")).text()
        assert "sfu_room_routers_added_total 1.0" in metrics

        # worker B dies: its participants leave the room, the room goes on
        os.kill(router_b.worker.pid, signal.SIGKILL)
        for _ in range(200):
            if pub2_id not in room.participants and v2_id not in room.participants:
                break
            await asyncio.sleep(0.05)
        assert pub2_id not in room.participants and v2_id not in room.participants
        assert room.routers == [room.router] and not room.router.closed
        assert {pub1_id, v1_id, v3_id} <= set(room.participants)
        for prod in room.participants[pub1_id].producers.values():
            assert not prod.closed
        for _ in range(10):
            await asyncio.wait_for(v1_tracks["video"].recv(), 10)

        # the room closes: its routers go
        rooms.close_room("wide")
        assert room.router.closed
    finally:
        for pc in pcs:
            await pc.close()


async def test_without_a_budget_a_room_stays_on_one_worker(server):
    client, rooms = server
    rooms.consumers_per_worker = 0
    pcs: list[RTCPeerConnection] = []
    try:
        pub, pub_id = await publish(client, "narrow")
        pcs.append(pub)
        for _ in range(2):
            v, _, tracks = await view(client, "narrow", pub_id)
            pcs.append(v)
        room = rooms.room("narrow")
        assert len(room.routers) == 1
        assert all(p.router is room.router for p in room.participants.values())
        await decodes(tracks, 10)
    finally:
        for pc in pcs:
            await pc.close()
