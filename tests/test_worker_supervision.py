"""Worker supervision, with real clients: a media worker killed with SIGKILL
under a live room (aiortc WHIP publisher and WHEP viewer, a room WebSocket)
and a call (a python-socketio participant) is replaced in its slot, on the
same shared WebRTC port; /healthz, /readyz and /metrics say what happened,
the room's WebSocket and the call's socket are told what was lost, and new
WHIP + WHEP sessions in the same room carry media again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from typing import Any, Optional

import jwt
import pytest
import socketio
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from aiortc_peer import pin_loopback
from signaling.auth import AuthConfig, Authenticator
from signaling.metrics import Metrics
from signaling.server import create_app, start_rooms

SECRET = "test-secret-for-worker-supervision-0123456789"
#: Generous bounds for a busy machine; the measured times are printed.
REPLACED_WITHIN_S = 10.0
MEDIA_TIMEOUT_S = 30.0


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


def free_udp_port(count: int = 1) -> int:
    """The first of ``count`` consecutive UDP ports free on 127.0.0.1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + count > 65536:
            continue
        held = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise AssertionError(f"no {count} consecutive free UDP ports")


async def serve(rtc_port: int) -> tuple[Any, TestClient]:
    rooms = await start_rooms(workers=1, rtc_port=rtc_port)
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    client = TestClient(TestServer(create_app(rooms, auth=auth, metrics=Metrics()), host="127.0.0.1"))
    await client.start_server()
    return rooms, client


async def poll(predicate, timeout: float, what: str) -> float:
    """Waits until ``predicate()`` (sync or async) is true; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        got = predicate()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


class SioUser:
    """A python-socketio client of the call service recording its events."""

    def __init__(self, http: TestClient, user: str) -> None:
        self.http = http
        self.token = token(user)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()

        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            self.changed.set()

    async def connect(self) -> None:
        await self.sio.connect(str(self.http.make_url("/")), auth={"token": self.token}, transports=["websocket"])

    async def wait(self, event: str, timeout: float) -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            for name, data in self.events:
                if name == event:
                    return data, loop.time() - start
            self.changed.clear()
            remaining = start + timeout - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {event} within {timeout} s; got {[e for e, _ in self.events]}")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


async def api(http: TestClient, method: str, path: str, user: str, json: Any = None, status: int = 200) -> Any:
    resp = await http.request(method, path, json=json, headers={"Authorization": f"Bearer {token(user)}"})
    body = await resp.json()
    assert resp.status == status, (method, path, resp.status, body)
    return body


async def sdp_exchange(http: TestClient, pc: RTCPeerConnection, url: str, user: str) -> tuple[str, str]:
    """WHIP/WHEP offer -> answer; (Location, answer SDP)."""
    await pc.setLocalDescription(await pc.createOffer())
    resp = await http.post(url, data=pc.localDescription.sdp,
                           headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token(user)}"})
    body = await resp.text()
    assert resp.status == 201, (url, resp.status, body)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return resp.headers["Location"], body


def publisher() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    return pc


def viewer(tracks: dict[str, Any]) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.on("track", lambda track: tracks.__setitem__(track.kind, track))
    return pc


async def decode_video(tracks: dict[str, Any], frames: int) -> None:
    """``frames`` video frames decoded by the viewer (bounded waits)."""
    await poll(lambda: "video" in tracks, MEDIA_TIMEOUT_S, "the viewer's video track")
    for _ in range(frames):
        frame = await asyncio.wait_for(tracks["video"].recv(), MEDIA_TIMEOUT_S)
        assert frame.width > 0 and frame.height > 0


def candidate_ports(sdp: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host", sdp)}


async def metric(http: TestClient, name: str) -> float:
    text = await (await http.get("/metrics")).text()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m is not None, f"{name} not in /metrics"
    return float(m.group(1))


async def test_a_killed_worker_is_replaced_and_everyone_affected_is_told():
    rtc_port = free_udp_port()
    rooms, http = await serve(rtc_port)
    pcs: list[RTCPeerConnection] = []
    proctor: Optional[SioUser] = None
    try:
        # a call with roles (always on the SFU) whose participant listens on Socket.IO
        proctor = SioUser(http, "proctor")
        await proctor.connect()
        call = await api(http, "POST", "/api/calls", "proctor", {"roles": True}, status=201)
        call_id = call["callId"]
        joined = await api(http, "POST", f"/api/calls/{call_id}/participants", "proctor",
                           {"role": "subscriber", "socketId": proctor.sio.get_sid()}, status=201)
        lost_router = joined["routerId"]

        # a live room: WHIP publisher, WHEP viewer decoding, a participant on the room WebSocket
        pub = publisher()
        pcs.append(pub)
        whip_location, answer = await sdp_exchange(http, pub, "/whip/live", "alice")
        assert candidate_ports(answer) == {rtc_port}
        tracks: dict[str, Any] = {}
        view = viewer(tracks)
        pcs.append(view)
        whep_location, _ = await sdp_exchange(http, view, "/whep/live", "bob")
        await decode_video(tracks, 5)
        watcher = await api(http, "POST", "/api/rooms/live/participants", "carol", status=201)
        ws = await http.ws_connect(f"/api/rooms/live/ws?participantId={watcher['participantId']}",
                                   headers={"Authorization": f"Bearer {token('carol')}"})
        assert (await http.get("/readyz")).status == 200

        dead = rooms.workers[0]
        assert len(rooms.workers) == 1 and dead.routers  # the room and the call's room live on it
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        os.kill(dead.pid, signal.SIGKILL)

        async def timed(aw: Any) -> tuple[Any, float]:
            got = await aw
            return got, loop.time() - killed_at

        ws_told = asyncio.ensure_future(timed(ws.receive_json(timeout=REPLACED_WITHIN_S)))
        sio_told = asyncio.ensure_future(timed(proctor.wait("call:media-lost", REPLACED_WITHIN_S)))

        # the pool heals: a new worker in the slot
        replaced_s = await poll(lambda: rooms.workers[0] is not dead and not rooms.workers[0].closed,
                                REPLACED_WITHIN_S, "a replacement worker")
        assert dead.died and rooms.workers_alive == len(rooms.workers) == 1

        # the room's WebSocket is told what was lost, then closed
        msg, told_ws_s = await ws_told
        assert msg["event"] == "room-closed", msg
        data = msg["data"]
        assert data["roomId"] == "live" and data["reason"] == "worker-died" and data["workerPid"] == dead.pid
        assert sorted(p["kind"] for p in data["producers"]) == ["audio", "video"]
        assert watcher["participantId"] in data["participants"] and len(data["participants"]) == 3
        assert (await ws.receive(timeout=REPLACED_WITHIN_S)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED,
                                                                       WSMsgType.CLOSING)

        # the call's participant is told on its socket, then given the call's new room
        (lost, _), told_sio_s = await sio_told
        assert lost["callId"] == call_id and lost["reason"] == "worker-died"
        assert lost["routerId"] == lost_router and lost["workerPid"] == dead.pid
        again, _ = await proctor.wait("call:room-replaced", REPLACED_WITHIN_S)
        assert again["callId"] == call_id and again["routerId"] != lost_router and again["rtpCapabilities"]
        death = rooms.deaths[-1]
        print(f"\nworker {dead.pid} killed; replacement {rooms.workers[0].pid} running {replaced_s:.3f} s after "
              f"the kill ({death.replaced_after_s:.3f} s after the death was seen); told: room WebSocket after "
              f"{told_ws_s:.3f} s, call socket after {told_sio_s:.3f} s")

        # health, readiness and metrics say what happened
        await poll(lambda: _status(http, "/readyz", 200), REPLACED_WITHIN_S, "/readyz 200 again")
        health = await (await http.get("/healthz")).json()
        assert health["status"] == "ok" and health["workers"] == 1
        pool = health["pool"]
        assert pool["deaths"] == 1 and pool["replacements"] == 1 and pool["roomsLost"] == 2
        assert pool["lastDeath"]["pid"] == dead.pid and "SIGKILL" in pool["lastDeath"]["error"]
        assert pool["lastDeath"]["replacedBy"] == rooms.workers[0].pid
        assert await metric(http, "sfu_worker_deaths_total") == 1
        assert await metric(http, "sfu_worker_replacements_total") == 1
        assert await metric(http, "sfu_rooms_lost_total") == 2
        assert await metric(http, "sfu_workers_alive") == 1

        # the lost WHIP/WHEP sessions are gone
        for location, user in ((whip_location, "alice"), (whep_location, "bob")):
            resp = await http.delete(location, headers={"Authorization": f"Bearer {token(user)}"})
            assert resp.status == 404, (location, resp.status, await resp.text())

        # new sessions in the same room, on the same shared port, carry media
        pub2 = publisher()
        pcs.append(pub2)
        _, answer = await sdp_exchange(http, pub2, "/whip/live", "alice")
        assert candidate_ports(answer) == {rtc_port}
        tracks2: dict[str, Any] = {}
        view2 = viewer(tracks2)
        pcs.append(view2)
        await sdp_exchange(http, view2, "/whep/live", "bob")
        await decode_video(tracks2, 10)
        # the room exists again: a lost session's URL still ends nothing (401: unknown session token)
        resp = await http.delete(whip_location, headers={"Authorization": f"Bearer {token('alice')}"})
        assert resp.status == 404, resp.status
        audio = await asyncio.wait_for(_track(tracks2, "audio"), MEDIA_TIMEOUT_S)
        assert (await asyncio.wait_for(audio.recv(), MEDIA_TIMEOUT_S)).sample_rate == 48000
        await ws.close()
    finally:
        for pc in pcs:
            await pc.close()
        if proctor is not None and proctor.sio.connected:
            await proctor.sio.disconnect()
        await http.close()
        await rooms.close()


async def _status(http: TestClient, path: str, status: int) -> bool:
    return (await http.get(path)).status == status


async def _track(tracks: dict[str, Any], kind: str) -> Any:
    while kind not in tracks:
        await asyncio.sleep(0.02)
    return tracks[kind]


async def test_a_replacement_is_retried_while_its_port_is_held_and_a_closed_worker_is_not_replaced():
    """The replacement's WebRTC port is taken (here by the test, as a dying
    process's socket may be for a moment): /readyz says so and the
    replacement is retried until the port is free."""
    rtc_port = free_udp_port()
    rooms, http = await serve(rtc_port)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        held = free_udp_port()
        holder.bind(("127.0.0.1", held))
        rooms.settings.rtc_port = held  # the slot's port, as the replacement will ask for it
        dead = rooms.workers[0]
        os.kill(dead.pid, signal.SIGKILL)
        await poll(lambda: rooms.worker_replacement_failures >= 2, REPLACED_WITHIN_S, "failed attempts")
        resp = await http.get("/readyz")
        body = await resp.json()
        assert resp.status == 503 and "replacing worker" in body["problems"][0], body
        health = await http.get("/healthz")
        assert health.status == 503 and (await health.json())["pool"]["replacing"][0]["pid"] == dead.pid
        assert rooms.workers[0] is dead
        holder.close()
        await poll(lambda: not rooms.workers[0].closed, REPLACED_WITHIN_S, "the replacement once the port is free")
        assert rooms.servers[rooms.workers[0].pid].port == held
        await poll(lambda: _status(http, "/readyz", 200), REPLACED_WITHIN_S, "/readyz 200 again")
        assert await metric(http, "sfu_worker_replacement_failures_total") >= 2

        # closing a worker on purpose is not a death: no replacement
        w = rooms.workers[0]
        w.close()
        await w.wait_closed()
        await asyncio.sleep(0)  # let any (wrong) replacement start
        assert rooms.workers[0] is w and not rooms.replacing() and rooms.worker_deaths == 1
    finally:
        holder.close()
        await http.close()
        await rooms.close()


async def test_only_the_dead_workers_rooms_close_and_its_slot_keeps_its_port():
    """Two workers, a room on each: killing one closes its room only, and its
    replacement takes the same slot and shared port (rtc_port + slot)."""
    rtc_port = free_udp_port(2)
    rooms = await start_rooms(workers=2, rtc_port=rtc_port)
    try:
        a, _ = await rooms.create_room("on-first")
        b, _ = await rooms.create_room("on-second")
        assert {a.worker.pid, b.worker.pid} == {w.pid for w in rooms.workers}  # least loaded: one each
        slot = rooms.workers.index(b.worker)
        dead = b.worker
        assert rooms.servers[dead.pid].port == rtc_port + slot
        os.kill(dead.pid, signal.SIGKILL)
        await poll(lambda: not rooms.workers[slot].closed and rooms.workers[slot] is not dead, REPLACED_WITHIN_S,
                   "the replacement")
        assert b.router.closed and b.closed_reason == "worker-died" and "on-second" not in rooms.rooms
        assert not a.router.closed and rooms.room("on-first") is a and a.closed_reason is None
        assert rooms.servers[rooms.workers[slot].pid].port == rtc_port + slot
        assert rooms.deaths[-1].rooms == ["on-second"] and rooms.rooms_lost == 1
        again, created = await rooms.create_room("on-second")
        assert created and not again.router.closed
    finally:
        await rooms.close()
