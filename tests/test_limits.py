"""Admission limits of sfu-server (issue #11): every limit refuses with a
4xx/429 (503 for the descriptor budget) naming it, before anything is
allocated (the room's objects and the worker's engine are counted before and
after; RSS and descriptors for the big requests), through the real aiohttp app
and a real worker; a live aiortc WHIP -> WHEP call in another room keeps
decoding while one participant floods the server with transports."""

from __future__ import annotations

import asyncio
import os
import re
import resource
from collections import Counter

import pytest

pytest.importorskip("aiortc")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402

from aiortc_peer import pin_loopback  # noqa: E402
from signaling.auth import AuthConfig, Authenticator  # noqa: E402
from signaling.cli import parse_args  # noqa: E402
from signaling.rooms import Limits  # noqa: E402
from signaling.server import create_app, start_rooms  # noqa: E402

SDP = {"Content-Type": "application/sdp"}
SECRET = "limits-test-secret-with-enough-bytes-for-hs256"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


class Server:
    def __init__(self, limits: Limits, rtc_port: int = 0, auth: Authenticator | None = None) -> None:
        self.limits, self.rtc_port, self.auth = limits, rtc_port, auth

    async def __aenter__(self) -> "Server":
        self.rooms = await start_rooms(workers=1, rtc_port=self.rtc_port, limits=self.limits)
        self.client = TestClient(TestServer(create_app(self.rooms, auth=self.auth), host="127.0.0.1"))
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()
        await self.rooms.close()

    @property
    def worker(self):
        return self.rooms.workers[0]

    async def call(self, method, path, token=None, json=None, status=None, headers=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        resp = await self.client.request(method, path, json=json, headers=h)
        body = await resp.json()
        if status is not None:
            assert resp.status == status, (resp.status, body)
        return resp.status, body

    async def engine(self) -> Counter:
        """What the worker's engine holds."""
        d = await self.worker.dump()
        return Counter(routers=len(d["routerIds"]), transports=len(d["transportIds"]),
                       producers=len(d["producerIds"]), consumers=len(d["consumerIds"]))

    def room(self, room_id: str) -> Counter:
        r = self.rooms.rooms.get(room_id)
        if r is None:
            return Counter()
        return Counter(participants=len(r.participants), transports=r.transport_count(),
                       producers=sum(len(p.producers) for p in r.participants.values()),
                       consumers=sum(len(p.consumers) for p in r.participants.values()))

    async def metric(self, name: str, **labels) -> float:
        text = await (await self.client.get("/metrics")).text()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as exposed: sorted
        pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+]+)"
        m = re.search(pattern, text)
        assert m, f"{name}{{{want}}} not in /metrics"
        return float(m.group(1))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, f"{what} not reached within {timeout} s"
        await asyncio.sleep(0.1)


async def offer(*kinds: str, direction: str = "sendonly") -> tuple[RTCPeerConnection, str]:
    """An aiortc offer with one m-line per kind."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        if direction == "sendonly":
            pc.addTransceiver(AudioStreamTrack() if kind == "audio" else VideoStreamTrack(), direction="sendonly")
        else:
            pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def inflate(sdp: str, sections: int) -> str:
    """``sdp`` with its last m-section repeated until it has ``sections`` (new mids)."""
    head, *media = re.split(r"(?=^m=)", sdp, flags=re.M)
    last = media[-1]
    extra = [re.sub(r"a=mid:\S+", f"a=mid:x{i}", last) for i in range(sections - len(media))]
    return head + "".join(media) + "".join(extra)


class LiveCall:
    """An aiortc WHIP publisher and WHEP viewer in their own room."""

    def __init__(self, server: Server, room: str = "live") -> None:
        self.server, self.room = server, room
        self.publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: dict = {}

    async def _negotiate(self, pc: RTCPeerConnection, url: str) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        resp = await self.server.client.post(url, data=pc.localDescription.sdp, headers=SDP)
        answer = await resp.text()
        assert resp.status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def start(self) -> "LiveCall":
        self.publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await self._negotiate(self.publisher, f"/whip/{self.room}")
        self.viewer.addTransceiver("video", direction="recvonly")
        self.viewer.on("track", lambda track: self.tracks.__setitem__(track.kind, track))
        await self._negotiate(self.viewer, f"/whep/{self.room}")

        async def has_track() -> bool:
            return "video" in self.tracks

        await wait_for(has_track, what="the viewer's video track")
        return self

    async def frames(self, n: int, timeout: float = 30.0) -> int:
        for _ in range(n):
            frame = await asyncio.wait_for(self.tracks["video"].recv(), timeout)
            assert frame.width == 640
        return n

    async def close(self) -> None:
        await self.publisher.close()
        await self.viewer.close()


# ---------------------------------------------------------------- the flood


async def test_transports_per_participant_flood_is_refused_while_a_live_call_keeps_flowing():
    """Five participants (five tokens from one client) ask for 20 transports
    each, all at once, with a port per transport (a descriptor each): each
    gets 4 and 16 answers ``429 transports per participant: limit 4
    reached``; the worker holds exactly 20 more transports and about 20 more
    descriptors; the live call in another room decodes before, during and
    after."""
    async with Server(Limits(), rtc_port=0) as s:
        live = await LiveCall(s).start()
        try:
            assert await live.frames(10) == 10  # before
            await s.call("POST", "/api/rooms/attack/create", status=201)
            people = [(await s.call("POST", "/api/rooms/attack/participants", status=201))[1] for _ in range(5)]
            engine_before, fds_before = await s.engine(), fds(s.worker.pid)

            async def flood():
                return await asyncio.gather(*(
                    s.call("POST", "/api/rooms/attack/transports", p["token"], {"direction": "send"})
                    for p in people for _ in range(20)))

            answers, during = await asyncio.gather(flood(), live.frames(30))
            assert during == 30
            for i, p in enumerate(people):
                mine = answers[i * 20:(i + 1) * 20]
                assert sorted(status for status, _ in mine) == [201] * 4 + [429] * 16, mine
                refusals = {body["error"] for status, body in mine if status == 429}
                assert refusals == {"transports per participant: limit 4 reached"}
            engine_after = await s.engine()
            assert engine_after - engine_before == Counter(transports=20)
            assert s.room("attack")["transports"] == 20
            assert abs(fds(s.worker.pid) - fds_before - 20) <= 3
            assert await s.metric("sfu_admission_rejected_total", limit="transports_per_participant") == 80
            # The same participant again: still refused, still nothing new.
            status, body = await s.call("POST", "/api/rooms/attack/transports", people[0]["token"],
                                        {"direction": "recv"})
            assert status == 429 and "transports per participant: limit 4" in body["error"]
            assert await s.engine() == engine_after
            assert await live.frames(10) == 10  # after
            assert (await s.client.get("/healthz")).status == 200
        finally:
            await live.close()


async def test_transports_per_room():
    async with Server(Limits(transports_per_room=3)) as s:
        await s.call("POST", "/api/rooms/r/create", status=201)
        a = (await s.call("POST", "/api/rooms/r/participants", status=201))[1]
        b = (await s.call("POST", "/api/rooms/r/participants", status=201))[1]
        for who in (a, a, b):
            await s.call("POST", "/api/rooms/r/transports", who["token"], {"direction": "send"}, status=201)
        before, room_before = await s.engine(), s.room("r")
        _, body = await s.call("POST", "/api/rooms/r/transports", b["token"], {"direction": "recv"}, status=429)
        assert body["error"] == "transports per room: limit 3 reached in room r"
        assert await s.engine() == before and s.room("r") == room_before
        # Another room is not affected.
        await s.call("POST", "/api/rooms/other/create", status=201)
        c = (await s.call("POST", "/api/rooms/other/participants", status=201))[1]
        await s.call("POST", "/api/rooms/other/transports", c["token"], {"direction": "send"}, status=201)


async def test_participants_per_room_rest_and_whep():
    async with Server(Limits(participants_per_room=2)) as s:
        pc, sdp = await offer("video")
        try:
            resp = await s.client.post("/whip/full", data=sdp, headers=SDP)  # participant 1 (a publisher)
            assert resp.status == 201, await resp.text()
            await s.call("POST", "/api/rooms/full/participants", status=201)  # participant 2
            before, room_before = await s.engine(), s.room("full")
            _, body = await s.call("POST", "/api/rooms/full/participants", status=429)
            assert body["error"] == "participants per room: limit 2 reached in room full"
            viewer, view_sdp = await offer("video", direction="recvonly")
            try:
                resp = await s.client.post("/whep/full", data=view_sdp, headers=SDP)
                assert resp.status == 429 and "participants per room: limit 2" in (await resp.json())["error"]
            finally:
                await viewer.close()
            assert await s.engine() == before and s.room("full") == room_before
            assert await s.metric("sfu_admission_rejected_total", limit="participants_per_room") == 2
        finally:
            await pc.close()


async def test_consumers_per_transport():
    async with Server(Limits(consumers_per_transport=2)) as s:
        room = (await s.call("POST", "/api/rooms/c/create", status=201))[1]
        alice = (await s.call("POST", "/api/rooms/c/participants", status=201))[1]
        bob = (await s.call("POST", "/api/rooms/c/participants", status=201))[1]
        send = (await s.call("POST", "/api/rooms/c/transports", alice["token"], {"direction": "send"}, status=201))[1]
        vp8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}
        produced = (await s.call("POST", f"/api/rooms/c/transports/{send['id']}/produce", alice["token"],
                                 {"kind": "video", "rtpParameters": {"codecs": [vp8], "encodings": [{"ssrc": 1111}]}},
                                 status=201))[1]
        recv = (await s.call("POST", "/api/rooms/c/transports", bob["token"], {"direction": "recv"}, status=201))[1]
        ask = {"transportId": recv["id"], "producerId": produced["id"], "rtpCapabilities": room["rtpCapabilities"]}
        for _ in range(2):
            await s.call("POST", "/api/rooms/c/consume", bob["token"], ask, status=201)
        before, room_before = await s.engine(), s.room("c")
        answers = await asyncio.gather(*(s.call("POST", "/api/rooms/c/consume", bob["token"], ask)
                                         for _ in range(10)))
        assert {status for status, _ in answers} == {429}
        assert answers[0][1]["error"] == f"consumers per transport: limit 2 reached on transport {recv['id']}"
        assert await s.engine() == before and s.room("c") == room_before
        assert before["consumers"] == 2


async def test_m_lines_per_whip_and_whep_offer():
    async with Server(Limits()) as s:
        before = await s.engine()
        pc, sdp = await offer("audio", "video", "video")
        try:
            resp = await s.client.post("/whip/big", data=sdp, headers=SDP)
            assert resp.status == 400
            assert (await resp.json())["error"] == "m-lines per WHIP offer: limit 2, the offer has 3 (audio + video)"
            many = inflate(sdp, 30)  # under the body limit, far over the m-lines one
            assert len(many.encode()) < 64 * 1024
            resp = await s.client.post("/whip/big", data=many, headers=SDP)
            assert resp.status == 400 and "the offer has 30" in (await resp.json())["error"]
            # the parser takes bare-CR line ends; the limit counts parsed sections
            resp = await s.client.post("/whip/big", data=sdp.replace("\r\n", "\r"), headers=SDP)
            assert resp.status == 400 and "the offer has 3" in (await resp.json())["error"]
            # a room id with an escaped slash is still one room: counted the same
            resp = await s.client.post("/whip/big%2Fx", data=sdp, headers=SDP)
            assert resp.status == 400 and "the offer has 3" in (await resp.json())["error"]
        finally:
            await pc.close()
        assert "big" not in s.rooms.rooms and "big/x" not in s.rooms.rooms and await s.engine() == before

        live = await LiveCall(s, "show").start()
        try:
            before, room_before = await s.engine(), s.room("show")
            viewer, view_sdp = await offer(*["video"] * 6, direction="recvonly")
            try:
                resp = await s.client.post("/whep/show", data=view_sdp, headers=SDP)
                assert resp.status == 400
                assert (await resp.json())["error"] == "m-lines per WHEP offer: limit 4, the offer has 6"
            finally:
                await viewer.close()
            assert await s.engine() == before and s.room("show") == room_before
            # Four are allowed: each is a consumer of the same producer.
            viewer, view_sdp = await offer(*["video"] * 4, direction="recvonly")
            try:
                resp = await s.client.post("/whep/show", data=view_sdp, headers=SDP)
                assert resp.status == 201, await resp.text()
            finally:
                await viewer.close()
            assert await s.metric("sfu_admission_rejected_total", limit="whip_sections") == 4
            assert await s.metric("sfu_admission_rejected_total", limit="whep_sections") == 1
        finally:
            await live.close()


async def test_request_body_limit():
    """A 685 kB WHIP offer (5,000 m-lines' worth) and a 100 kB JSON body:
    413 naming the limit, no room, no transport; the server's RSS and the
    worker's descriptors do not grow."""
    async with Server(Limits()) as s:
        pc, sdp = await offer("video")
        await pc.close()
        huge = inflate(sdp, 2)
        while len(huge.encode()) < 685 * 1024:
            huge = inflate(huge, huge.count("\nm=") + 1 + 500)
        before, rss_before, fds_before = await s.engine(), rss_kb(os.getpid()), fds(s.worker.pid)
        worker_rss_before = rss_kb(s.worker.pid)
        for _ in range(5):
            resp = await s.client.post("/whip/huge", data=huge, headers=SDP)
            assert resp.status == 413
            assert (await resp.json())["error"] == "request body: limit 64 kB"
        assert "huge" not in s.rooms.rooms and await s.engine() == before
        assert fds(s.worker.pid) == fds_before
        assert rss_kb(os.getpid()) - rss_before < 40 * 1024  # kB; the 5,000 producers took 117 MB
        assert rss_kb(s.worker.pid) - worker_rss_before < 10 * 1024

        await s.call("POST", "/api/rooms/j/create", status=201)
        p = (await s.call("POST", "/api/rooms/j/participants", status=201))[1]
        before = await s.engine()
        _, body = await s.call("POST", "/api/rooms/j/transports", p["token"],
                               {"direction": "send", "padding": "x" * 100_000}, status=413)
        assert body["error"] == "request body: limit 64 kB"
        assert await s.engine() == before and s.room("j")["transports"] == 0
        assert await s.metric("sfu_admission_rejected_total", limit="request_body") == 6


async def test_rooms_per_user():
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    mallory, alice = auth.mint("mallory"), auth.mint("alice")
    async with Server(Limits(rooms_per_user=2), auth=auth) as s:
        joined = {}
        for name in ("m1", "m2"):
            await s.call("POST", f"/api/rooms/{name}/create", mallory, status=201)
            joined[name] = (await s.call("POST", f"/api/rooms/{name}/participants", mallory, status=201))[1]
        before = await s.engine()
        _, body = await s.call("POST", "/api/rooms/m3/create", mallory, status=429)
        assert body["error"] == "rooms per user: limit 2 reached (rooms you created that are in use: m1, m2)"
        pc, sdp = await offer("video")
        try:
            resp = await s.client.post("/whip/m4", data=sdp, headers={**SDP, "Authorization": f"Bearer {mallory}"})
            assert resp.status == 429 and "rooms per user: limit 2" in (await resp.json())["error"]
        finally:
            await pc.close()
        assert await s.engine() == before and set(s.rooms.rooms) == {"m1", "m2"}
        # Another user is not affected; an existing room is still open to mallory.
        await s.call("POST", "/api/rooms/a1/create", alice, status=201)
        await s.call("POST", "/api/rooms/m1/create", mallory, status=200)
        # Once a room of hers is empty, it makes way for a new one.
        await s.call("POST", f"/api/rooms/m1/participants/{joined['m1']['participantId']}/leave", mallory,
                     headers={"X-Participant-Id": joined["m1"]["participantId"]}, status=200)
        await s.call("POST", "/api/rooms/m3/create", mallory, status=201)
        assert set(s.rooms.rooms) == {"m2", "m3", "a1"}
        assert (await s.engine())["routers"] == before["routers"] + 1
        assert await s.metric("sfu_admission_rejected_total", limit="rooms_per_user") == 2


async def test_unconnected_transports_are_closed_and_counted():
    async with Server(Limits()) as s:
        live = await LiveCall(s).start()  # connects within the default 30 s: must survive
        late = LiveCall(s, "late")
        try:
            assert await live.frames(5) == 5
            s.rooms.limits.connect_timeout_s = 8  # for the transports created from now on
            await late.start()  # connects within the 8 s: must survive them
            before = await s.engine()
            await s.call("POST", "/api/rooms/idle/create", status=201)
            p = (await s.call("POST", "/api/rooms/idle/participants", status=201))[1]
            for _ in range(2):
                await s.call("POST", "/api/rooms/idle/transports", p["token"], {"direction": "send"}, status=201)
            ghost, sdp = await offer("video")  # a WHIP client that never completes ICE/DTLS
            try:
                resp = await s.client.post("/whip/idle", data=sdp, headers=SDP)
                assert resp.status == 201
                assert s.room("idle")["participants"] == 2 and s.room("idle")["transports"] == 3
            finally:
                await ghost.close()

            async def closed() -> bool:
                return s.room("idle")["participants"] == 1 and s.room("idle")["transports"] == 2

            # The WHIP session, which has media and never connected, is closed and its
            # participant leaves. The REST participant's two transports have no producer
            # or consumer yet: their timer starts with the first one (mediasoup-client
            # connects a receiving transport only at its first consume), so they stay,
            # bounded by the transport limits.
            await wait_for(closed, 60, "the unconnected WHIP transport closed")
            assert s.rooms.transports_closed_unconnected == 1
            assert await s.metric("sfu_transports_closed_unconnected_total") == 1
            assert (await s.engine()) == before + Counter(routers=1, transports=2)
            assert await live.frames(10) == 10 and await late.frames(10) == 10
        finally:
            await late.close()
            await live.close()


async def test_file_descriptor_budget():
    """The worker's open-files limit lowered under its feet: transports are
    refused (503 naming the limit) while the reserve is left, /readyz says
    why it is not ready, and both recover when transports close."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:  # start_rooms raised our soft limit to the hard one
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    limits = Limits(fd_reserve=8, transports_per_participant=0)
    async with Server(limits, rtc_port=0) as s:
        assert (await s.client.get("/readyz")).status == 200
        live = await LiveCall(s).start()  # its transports hold descriptors already: it must keep flowing
        try:
            await fd_exhaustion(s, live)
        finally:
            await live.close()


async def fd_exhaustion(s: Server, live: LiveCall) -> None:
    """Lowers the worker's open-files limit to 20 more than it uses, asks for transports until refused."""
    assert await live.frames(5) == 5
    await s.call("POST", "/api/rooms/fd/create", status=201)
    p = (await s.call("POST", "/api/rooms/fd/participants", status=201))[1]
    pid = s.worker.pid
    open_now = fds(pid)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_now + 20, resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]))
    s.rooms.limits.fd_low_fraction = 14 / (open_now + 20)  # "low" between the reserve (8) and now (20)
    statuses = []
    for _ in range(20):
        status, body = await s.call("POST", "/api/rooms/fd/transports", p["token"], {"direction": "send"})
        statuses.append(status)
        if status != 201:
            break
    assert statuses[-1] == 503, statuses
    assert body["error"].startswith(f"file descriptors: limit reached in media worker {pid}")
    assert statuses.count(201) == 20 - 8  # every descriptor but the reserve
    assert fds(pid) <= open_now + 20 - 8 + 1
    resp = await s.client.get("/readyz")
    ready = await resp.json()
    assert resp.status == 503 and any("file descriptors low" in x for x in ready["problems"]), ready
    resp = await s.client.get("/healthz")
    health = await resp.json()
    assert resp.status == 200 and health["status"] == "degraded", health
    assert any(f["process"] == "worker" and f["low"] for f in health["fileDescriptors"]), health
    assert await s.metric("sfu_admission_rejected_total", limit="file_descriptors") == 1
    assert await s.metric("sfu_max_fds", process="worker", pid=pid) == open_now + 20
    assert await live.frames(20) == 20  # the live call in another room is not disturbed
    await s.call("POST", f"/api/rooms/fd/participants/{p['participantId']}/leave", p["token"], status=200)

    async def ready_again() -> bool:
        return (await s.client.get("/readyz")).status == 200

    await wait_for(ready_again, 30, "/readyz ready again")
    q = (await s.call("POST", "/api/rooms/fd/participants", status=201))[1]
    await s.call("POST", "/api/rooms/fd/transports", q["token"], {"direction": "send"}, status=201)
    assert await live.frames(5) == 5


def test_options_and_environment(monkeypatch):
    monkeypatch.setenv("SFU_MAX_REQUEST_BODY", "128k")
    monkeypatch.setenv("SFU_MAX_ROOMS_PER_USER", "3")
    args = parse_args(["--dev-auth", "--max-transports-per-participant", "6", "--max-whep-sections", "0",
                       "--transport-connect-timeout", "12.5"])
    assert args.limits == Limits(transports_per_participant=6, whep_sections=0, request_body_bytes=128 * 1024,
                                 rooms_per_user=3, connect_timeout_s=12.5)
    defaults = Limits()
    assert (defaults.whip_sections, defaults.whep_sections, defaults.transports_per_participant,
            defaults.participants_per_room, defaults.consumers_per_transport, defaults.request_body_bytes,
            defaults.rooms_per_user, defaults.connect_timeout_s) == (2, 4, 4, 100, 200, 64 * 1024, 10, 30.0)
    with pytest.raises(SystemExit):
        parse_args(["--dev-auth", "--max-request-body", "lots"])


async def test_a_limit_of_zero_is_off():
    async with Server(Limits(transports_per_participant=0)) as s:
        await s.call("POST", "/api/rooms/z/create", status=201)
        p = (await s.call("POST", "/api/rooms/z/participants", status=201))[1]
        for _ in range(6):
            await s.call("POST", "/api/rooms/z/transports", p["token"], {"direction": "send"}, status=201)
