"""The call service over real sockets: an aiohttp server on 127.0.0.1 with a
real media worker, python-socketio clients, JWTs signed with a test secret,
SQLite files for the persistence case."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import jwt
import pytest
import socketio
from aiohttp.test_utils import TestClient, TestServer

from signaling.auth import AuthConfig, Authenticator
from signaling.metrics import Metrics
from signaling.ratelimit import RateLimiter
from signaling.server import CALLS, create_app
from signaling.store import CallStore

SECRET = "test-secret-for-the-call-service-0123456789"
VP8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}


def token(user: str, ttl: float = 600, secret: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + int(ttl), **claims}, secret, algorithm="HS256")




async def serve(rooms, store: Optional[CallStore] = None, limiter: Optional[RateLimiter] = None,
                grace: float = 5.0) -> TestClient:
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    app = create_app(rooms, auth=auth, limiter=limiter, metrics=Metrics(), store=store, disconnect_grace_s=grace)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def http(rooms):
    client = await serve(rooms)
    try:
        yield client
    finally:
        await client.close()


class User:
    """One authenticated user: REST calls with its JWT and a Socket.IO client
    that records every event."""

    def __init__(self, http: TestClient, name: str) -> None:
        self.http = http
        self.name = name
        self.token = token(name)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()
        self.participant_id: Optional[str] = None

        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            self._changed.set()

    async def connect(self) -> "User":
        await self.sio.connect(str(self.http.make_url("/")), auth={"token": self.token}, transports=["websocket"])
        return self

    async def req(self, method: str, path: str, json: Any = None, status: int = 200,
                  headers: Optional[dict[str, str]] = None) -> Any:
        h = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        resp = await self.http.request(method, path, json=json, headers=h)
        body = await resp.json()
        assert resp.status == status, (resp.status, body)
        return body

    async def join(self, call_id: str, status: int = 201, **body: Any) -> Any:
        if self.sio.connected:
            body.setdefault("socketId", self.sio.get_sid())
        out = await self.req("POST", f"/api/calls/{call_id}/participants", body, status=status)
        if status == 201:
            self.participant_id = out["participantId"]
        return out

    async def emit(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=5)

    async def wait(self, event: str, timeout: float = 5.0, **match: Any) -> Any:
        """The first recorded ``event`` whose data has the ``match`` items
        (consumed, so a second wait finds the next one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, (name, data) in enumerate(self.events):
                if name == event and all(isinstance(data, dict) and data.get(k) == v for k, v in match.items()):
                    del self.events[i]
                    return data
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {event} {match} within {timeout} s; got "
                                     f"{[e for e, _ in self.events]}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def seen(self, event: str) -> list[Any]:
        return [d for e, d in self.events if e == event]

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


@pytest.fixture
async def users(http):
    made: list[User] = []

    async def make(*names: str, connect: bool = True) -> list[User]:
        out = []
        for n in names:
            u = User(http, n)
            if connect:
                await u.connect()
            made.append(u)
            out.append(u)
        return out

    yield make
    for u in made:
        await u.close()


async def new_call(user: User, **body: Any) -> str:
    return (await user.req("POST", "/api/calls", body, status=201))["callId"]


async def test_two_participants_run_p2p_and_the_server_relays_their_signaling(http, users):
    alice, bob, eve = await users("alice", "bob", "eve")
    call_id = await new_call(alice)
    first = await alice.join(call_id)
    assert first["mode"] == "p2p" and first["peers"] == [] and first["initiator"] is False
    second = await bob.join(call_id)
    assert second["mode"] == "p2p" and second["initiator"] is True and second["peer"] == alice.participant_id
    assert [p["userId"] for p in second["peers"]] == ["alice"]
    assert "rtpCapabilities" not in second  # P2P carries the media
    # ... with an SFU room on standby for a third participant: both may
    # connect to it now (their senders off), the switch then only turns them on
    assert second["standby"]["whip"] == f"/whip/{call_id}?as={bob.participant_id}"
    standby = await alice.wait("call:sfu-standby")
    assert standby["whip"] == f"/whip/{call_id}?as={alice.participant_id}" and standby["rtpCapabilities"]["codecs"]
    joined = await alice.wait("call:participant-joined")
    assert joined["participant"]["participantId"] == bob.participant_id
    assert (await bob.wait("call:joined"))["mode"] == "p2p"

    assert await bob.emit("webrtc:offer", {"offer": {"type": "offer", "sdp": "v=0 bob"}}) == {"ok": True}
    offer = await alice.wait("webrtc:offer")
    assert offer["from"] == bob.participant_id and offer["offer"]["sdp"] == "v=0 bob" and offer["callId"] == call_id
    assert (await alice.emit("webrtc:answer", {"to": bob.participant_id,
                                               "answer": {"type": "answer", "sdp": "v=0 alice"}}))["ok"]
    assert (await bob.wait("webrtc:answer"))["answer"]["sdp"] == "v=0 alice"
    await alice.emit("webrtc:ice-candidate", {"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}})
    assert (await bob.wait("webrtc:ice-candidate"))["from"] == alice.participant_id

    # Eve is not in the call: her socket cannot signal into it, nor be signalled to.
    refused = await eve.emit("webrtc:offer", {"callId": call_id, "to": alice.participant_id, "offer": {}})
    assert refused["status"] == 403 and "not attached" in refused["error"]
    refused = await bob.emit("webrtc:offer", {"to": "not-a-participant", "offer": {}})
    assert refused["status"] == 403
    assert alice.seen("webrtc:offer") == []


async def test_third_join_moves_the_call_to_the_sfu_and_a_leave_moves_it_back(http, users):
    alice, bob, carol = await users("alice", "bob", "carol")
    call_id = await new_call(alice)
    await alice.join(call_id)
    await bob.join(call_id)
    third = await carol.join(call_id)
    assert third["mode"] == "sfu" and third["rtpCapabilities"]["codecs"]
    assert third["routerRtpCapabilities"] == third["rtpCapabilities"]
    assert third["whip"] == f"/whip/{call_id}?as={carol.participant_id}"
    assert {p["userId"] for p in third["peers"]} == {"alice", "bob"}
    switch_id = third["switch"]["switchId"]
    for u in (alice, bob):
        ev = await u.wait("call:mode-switch")
        assert ev["mode"] == "sfu" and ev["rtpCapabilities"]["codecs"] and ev["switchId"] == switch_id
        assert ev["whip"] == f"/whip/{call_id}?as={u.participant_id}"
    assert (await carol.wait("call:joined"))["mode"] == "sfu"
    assert carol.seen("call:mode-switch") == []
    calls = http.server.app[CALLS]
    assert calls.calls[call_id].room is not None and call_id in calls.rooms.rooms

    # call:mode-switched only once everyone reports media on the new path
    assert (await alice.emit("call:media-ready", {"mode": "sfu"}))["pending"] is True
    assert (await bob.emit("call:media-ready", {"mode": "sfu"}))["pending"] is True
    assert alice.seen("call:mode-switched") == []
    assert (await carol.emit("call:media-ready", {"mode": "sfu"}))["pending"] is False
    for u in (alice, bob, carol):
        done = await u.wait("call:mode-switched")
        assert done["mode"] == "sfu" and done["success"] is True and done["durationMs"] >= 0
    metrics = await (await http.get("/metrics")).text()
    assert 'sfu_call_mode_switches_total{to_mode="sfu"} 1.0' in metrics
    assert "sfu_call_mode_switch_seconds_count 1.0" in metrics
    assert "sfu_calls_active 1.0" in metrics and "sfu_participants_active 3.0" in metrics

    # Carol leaves: back to P2P, exactly one of the two initiates.
    assert await carol.req("POST", f"/api/calls/{call_id}/leave", {}) == {"left": True}
    switches = []
    for u in (alice, bob):
        left = await u.wait("call:participant-left")
        assert left["participantId"] == carol.participant_id and left["reason"] == "left"
        ev = await u.wait("call:mode-switch")
        assert ev["mode"] == "p2p" and ev["standby"]["whip"] == f"/whip/{call_id}?as={u.participant_id}"
        switches.append(ev)
    assert sorted(ev["initiator"] for ev in switches) == [False, True]
    assert switches[0]["peer"] == bob.participant_id and switches[1]["peer"] == alice.participant_id
    assert calls.calls[call_id].room is not None  # SFU media kept until the direct path works
    await alice.emit("call:media-ready", {"mode": "p2p"})
    await bob.emit("call:media-ready", {"mode": "p2p"})
    for u in (alice, bob):
        assert (await u.wait("call:mode-switched"))["mode"] == "p2p"
    room = calls.calls[call_id].room
    assert room is not None and set(room.participants) >= {alice.participant_id, bob.participant_id}  # standby
    assert carol.participant_id not in room.participants
    stored = calls.store.get_call(call_id)
    assert stored.mode == "p2p" and stored.router_id is None
    assert [p.user_id for p in calls.store.active_participants(call_id)] == ["alice", "bob"]
    metrics = await (await http.get("/metrics")).text()
    assert 'sfu_call_mode_switches_total{to_mode="p2p"} 1.0' in metrics
    assert "sfu_participants_active 2.0" in metrics
    # one left: no standby for one
    assert await bob.req("POST", f"/api/calls/{call_id}/leave", {}) == {"left": True}
    await alice.wait("call:participant-left")
    assert calls.calls[call_id].room is None and call_id not in calls.rooms.rooms  # router released


async def test_events_wait_for_a_socket_to_attach_and_the_creator_can_end_the_call(http, users):
    alice, bob = await users("alice", "bob")
    call_id = await new_call(alice)
    await alice.join(call_id)
    joined = await bob.req("POST", f"/api/calls/{call_id}/participants", {}, status=201)  # no socketId
    await alice.emit("webrtc:offer", {"offer": {"sdp": "early"}})  # bob has no socket in the call yet
    state = await bob.emit("call:attach", {"callId": call_id, "participantId": joined["participantId"]})
    assert state["ok"] is True and state["participantId"] == joined["participantId"] and state["mode"] == "p2p"
    assert (await bob.wait("call:joined"))["initiator"] is True  # queued events, in order
    assert (await bob.wait("webrtc:offer"))["offer"] == {"sdp": "early"}
    assert (await bob.req("POST", f"/api/calls/{call_id}/end", {}, status=403))["error"].startswith("only the creator")
    assert await alice.req("POST", f"/api/calls/{call_id}/end", {}) == {"ended": True}
    assert (await bob.wait("call:ended")) == {"callId": call_id, "reason": "ended-by-creator"}
    got = await bob.req("GET", f"/api/calls/{call_id}")
    assert got["ended"] is True and got["endReason"] == "ended-by-creator"


async def test_a_participant_whose_socket_goes_away_leaves_after_the_grace_period(rooms):
    http = await serve(rooms, grace=0.3)
    alice, bob = User(http, "alice"), User(http, "bob")
    try:
        await alice.connect()
        await bob.connect()
        call_id = await new_call(alice)
        await alice.join(call_id)
        await bob.join(call_id)
        await bob.sio.disconnect()
        left = await alice.wait("call:participant-left")
        assert left == {"callId": call_id, "participantId": bob.participant_id, "reason": "disconnected"}
        # the last one leaving ends the call
        await alice.req("POST", f"/api/calls/{call_id}/leave", {})
        got = await alice.req("GET", f"/api/calls/{call_id}")
        assert got["ended"] is True and got["endReason"] == "all-left"
        assert (await alice.join(call_id, status=409))["error"].startswith(f"call {call_id} has ended")
    finally:
        await alice.close()
        await bob.close()
        await http.close()


async def _produce(user: User, call_id: str, ssrc: int, status: int = 201) -> Any:
    t = await user.req("POST", f"/api/rooms/{call_id}/transports", {"direction": "send"}, status=201)
    return await user.req("POST", f"/api/rooms/{call_id}/transports/{t['id']}/produce",
                          {"kind": "video", "rtpParameters": {"codecs": [VP8], "encodings": [{"ssrc": ssrc}]}},
                          status=status)


async def test_roles_proctor_receives_every_candidate_candidates_do_not_see_each_other(http, users):
    proctor, c1, c2 = await users("proctor", "cand1", "cand2")
    call_id = await new_call(proctor, roles=True)
    watching = await proctor.join(call_id, role="subscriber")
    assert watching["mode"] == "sfu" and watching["rtpCapabilities"]["codecs"]  # always SFU with roles
    await c1.join(call_id, role="publisher")
    await c2.join(call_id, role="publisher")
    caps = watching["rtpCapabilities"]
    produced = await _produce(c1, call_id, 1111)
    news = await proctor.wait("new-producer")
    assert news["participantId"] == c1.participant_id and news["producerId"] == produced["id"]
    await _produce(c2, call_id, 2222)
    assert (await proctor.wait("new-producer"))["participantId"] == c2.participant_id
    await asyncio.sleep(0.2)
    assert c2.seen("new-producer") == [] and c1.seen("new-producer") == []
    assert proctor.seen("call:mode-switch") == [] and c1.seen("call:mode-switch") == []

    # a candidate cannot receive another candidate, a proctor cannot publish
    recv = await c2.req("POST", f"/api/rooms/{call_id}/transports", {"direction": "recv"}, status=201)
    err = await c2.req("POST", f"/api/rooms/{call_id}/consume",
                       {"transportId": recv["id"], "producerId": produced["id"], "rtpCapabilities": caps}, status=403)
    assert "publisher" in err["error"]
    err = await _produce(proctor, call_id, 3333, status=403)
    assert "subscriber" in err["error"]
    # nor join the room by the side door
    err = await c2.req("POST", f"/api/rooms/{call_id}/participants", {}, status=403)
    assert "belongs to a call" in err["error"]

    # the proctor watches and pauses/resumes what it watches
    precv = await proctor.req("POST", f"/api/rooms/{call_id}/transports", {"direction": "recv"}, status=201)
    consumer = await proctor.req("POST", f"/api/rooms/{call_id}/consume",
                                 {"transportId": precv["id"], "producerId": produced["id"], "rtpCapabilities": caps},
                                 status=201)
    assert (await proctor.emit("resume-consumer", {"consumerId": consumer["id"]}))["paused"] is False
    paused = await proctor.emit("pause-consumer", {"participantId": c1.participant_id})
    assert paused == {"ok": True, "paused": True, "consumerIds": [consumer["id"]]}
    refused = await c1.emit("resume-consumer", {"consumerId": consumer["id"]})
    assert refused["status"] == 403
    refused = await c2.req("POST", f"/api/rooms/{call_id}/consumers/{consumer['id']}/resume", {}, status=403)
    assert "another participant" in refused["error"]
    err = await c1.join(call_id, role="boss", status=400)
    assert "role" in err["error"]


async def test_roles_call_can_let_candidates_see_each_other(http, users):
    c1, c2 = await users("cand1", "cand2")
    call_id = await new_call(c1, roles=True, candidatesSeeEachOther=True)
    caps = (await c1.join(call_id, role="publisher"))["rtpCapabilities"]
    await c2.join(call_id, role="publisher")
    produced = await _produce(c1, call_id, 1111)
    assert (await c2.wait("new-producer"))["producerId"] == produced["id"]
    recv = await c2.req("POST", f"/api/rooms/{call_id}/transports", {"direction": "recv"}, status=201)
    await c2.req("POST", f"/api/rooms/{call_id}/consume",
                 {"transportId": recv["id"], "producerId": produced["id"], "rtpCapabilities": caps}, status=201)


async def test_tokens_are_required_and_checked(http, users):
    async def status_of(method: str, path: str, tok: Optional[str] = None, json: Any = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        resp = await http.request(method, path, json=json, headers=headers)
        return resp.status, (await resp.json())["error"]

    code, err = await status_of("POST", "/api/calls")
    assert code == 401 and "missing token" in err
    code, err = await status_of("POST", "/api/calls", token("alice", ttl=-60))
    assert code == 401 and "expired" in err
    code, err = await status_of("POST", "/api/calls", token("alice", secret="another-secret-another-secret-000"))
    assert code == 401 and "signature" in err
    code, err = await status_of("POST", "/api/rooms/r/create", "not.a.jwt")
    assert code == 401 and "malformed" in err
    resp = await http.post("/whip/r", data="v=0\r\n", headers={"Content-Type": "application/sdp"})
    assert resp.status == 401  # WHIP and WHEP too

    # Socket.IO: no token, or a bad one, and the connection is refused
    for auth, why in ((None, "missing token"), ({"token": token("alice", ttl=-60)}, "expired")):
        sio = socketio.AsyncClient(reconnection=False)
        errors: list = []
        sio.on("connect_error", errors.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(str(http.make_url("/")), auth=auth, transports=["websocket"])
        assert why in errors[0]["message"] and errors[0]["data"] == {"status": 401}, errors
    # the token may also travel in the query string
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(str(http.make_url("/")) + f"?token={token('alice')}", transports=["websocket"])
    await sio.disconnect()

    # a participant acts only inside calls it joined, and on its own transports
    alice, bob, carol, eve = await users("alice", "bob", "carol", "eve")
    call_id = await new_call(alice)
    for u in (alice, bob, carol):
        await u.join(call_id)
    assert "not a participant" in (await eve.req("GET", f"/api/calls/{call_id}", status=403))["error"]
    assert "not a participant" in (await eve.req("POST", f"/api/calls/{call_id}/leave", {}, status=403))["error"]
    err = await eve.req("POST", f"/api/calls/{call_id}/leave", {"participantId": alice.participant_id}, status=403)
    assert "another user" in err["error"]
    attach = await eve.emit("call:attach", {"callId": call_id, "participantId": alice.participant_id})
    assert attach["status"] == 403
    err = await eve.req("POST", f"/api/rooms/{call_id}/transports", {"direction": "send"}, status=403)
    assert "no participant" in err["error"]
    t = await alice.req("POST", f"/api/rooms/{call_id}/transports", {"direction": "send"}, status=201)
    err = await bob.req("POST", f"/api/rooms/{call_id}/transports/{t['id']}/connect",
                        {"dtlsParameters": {"role": "client", "fingerprints": []}}, status=403)
    assert "another participant" in err["error"]
    err = await bob.req("POST", f"/api/rooms/{call_id}/transports", {"direction": "send"}, status=403,
                        headers={"X-Participant-Id": alice.participant_id})
    assert "another user" in err["error"]
    # WHIP into a call's room needs one of your own participants
    resp = await http.post(f"/whip/{call_id}?as={alice.participant_id}", data="v=0\r\n",
                           headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {eve.token}"})
    assert resp.status == 400  # the offer is checked first...
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import VideoStreamTrack
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        resp = await http.post(f"/whip/{call_id}?as={alice.participant_id}", data=pc.localDescription.sdp,
                               headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {eve.token}"})
        assert resp.status == 403 and "another user" in (await resp.json())["error"]  # ...then who asks
        metrics = await (await http.get("/metrics")).text()
        assert "sfu_auth_failures_total 7.0" in metrics  # 5 requests, 2 sockets
    finally:
        await pc.close()


async def test_rate_limit_answers_429_with_retry_after(rooms):
    http = await serve(rooms, limiter=RateLimiter(per_identity=(1.0, 3), per_ip=(100.0, 100)))
    try:
        alice = User(http, "alice")
        for _ in range(3):
            await alice.req("POST", "/api/calls", {}, status=201)
        resp = await http.post("/api/calls", json={}, headers={"Authorization": f"Bearer {alice.token}"})
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert "rate limit" in (await resp.json())["error"]
        # another user is not affected; pages and probes are not limited
        await User(http, "bob").req("POST", "/api/calls", {}, status=201)
        assert (await http.get("/healthz")).status == 200
        metrics = await (await http.get("/metrics")).text()
        assert "sfu_rate_limited_requests_total 1.0" in metrics
    finally:
        await http.close()


async def test_calls_in_progress_are_ended_by_a_restart(rooms, tmp_path):
    db = str(tmp_path / "calls.sqlite3")
    store = CallStore(db)
    http = await serve(rooms, store=store)
    alice, bob = User(http, "alice"), User(http, "bob")
    await alice.connect()
    call_id = await new_call(alice)
    await alice.join(call_id)
    await bob.join(call_id)
    finished = await new_call(alice)
    await alice.join(finished)
    await alice.req("POST", f"/api/calls/{finished}/leave", {})
    await alice.close()
    await http.close()  # the server stops; the call was in progress
    store.close()

    store = CallStore(db)
    http = await serve(rooms, store=store)
    try:
        alice, bob = User(http, "alice"), User(http, "bob")
        got = await alice.req("GET", f"/api/calls/{call_id}")
        assert got["ended"] is True and got["endReason"] == "server-restart"
        assert (await bob.req("GET", f"/api/calls/{finished}", status=403))["error"]
        assert (await alice.req("GET", f"/api/calls/{finished}"))["endReason"] == "all-left"
        err = await bob.join(call_id, status=409)
        assert "server-restart" in err["error"]
        assert all(p.status == "left" for p in store.participants(store.get_call(call_id).session_id))
        # the same call id can be started again, as a new session
        again = await alice.req("POST", "/api/calls", {"callId": call_id}, status=201)
        assert again["callId"] == call_id and again["mode"] == "p2p"
        assert (await bob.join(call_id))["mode"] == "p2p"
        assert [s.end_reason for s in store.call_history(call_id)] == ["server-restart", None]
        await alice.req("POST", "/api/calls", {"callId": call_id}, status=409)
    finally:
        await http.close()
        store.close()


async def test_ten_concurrent_joins_end_consistent(http, users):
    people = await users(*[f"user{i}" for i in range(10)])
    call_id = await new_call(people[0])
    joined = await asyncio.gather(*(u.join(call_id) for u in people))
    calls = http.server.app[CALLS]
    call = calls.calls[call_id]
    assert len(call.members) == 10 and call.mode == "sfu"
    assert sorted(j["mode"] for j in joined) == ["p2p"] * 2 + ["sfu"] * 8
    assert len({j["participantId"] for j in joined}) == 10
    assert {p.id for p in calls.store.active_participants(call_id)} == set(call.members)
    assert calls.store.get_call(call_id).mode == "sfu"
    assert calls.store.get_call(call_id).router_id == call.room.router.id
    assert set(call.room.participants) == set(call.members)  # one room participant each
    routers = [r for w in calls.rooms.workers for r in w.routers if not r.closed]
    assert len(routers) == 1
    # one switch, announced to the two P2P participants only, waiting for all ten
    p2p_users = [u for u, j in zip(people, joined) if j["mode"] == "p2p"]
    for u in p2p_users:
        assert (await u.wait("call:mode-switch"))["mode"] == "sfu"
    assert sum(len(u.seen("call:mode-switch")) for u in people) == 0
    assert call.switch is not None and call.switch.waiting == set(call.members)
    for u in people:
        assert (await u.wait("call:joined"))["participantId"] == u.participant_id
    await asyncio.gather(*(u.emit("call:media-ready", {"mode": "sfu"}) for u in people))
    for u in people:
        assert (await u.wait("call:mode-switched"))["success"] is True
    # ten leave at once: the call ends, no room is left behind
    await asyncio.gather(*(u.req("POST", f"/api/calls/{call_id}/leave", {}) for u in people))
    assert call_id not in calls.calls and call_id not in calls.rooms.rooms
    assert calls.store.get_call(call_id).end_reason == "all-left"
    assert not [r for w in calls.rooms.workers for r in w.routers if not r.closed]


async def test_health_and_readiness(rooms):
    store = CallStore(":memory:")
    http = await serve(rooms, store=store)
    try:
        resp = await http.get("/healthz")
        assert resp.status == 200 and (await resp.json())["workers"] == 1
        resp = await http.get("/readyz")
        body = await resp.json()
        assert resp.status == 200 and body["ready"] is True and body["problems"] == []
        store.close()
        resp = await http.get("/readyz")
        body = await resp.json()
        assert resp.status == 503 and "call store" in body["problems"][0]
        assert (await http.get("/healthz")).status == 200  # alive, just not ready
    finally:
        await http.close()


async def test_the_room_api_with_jwts_names_the_acting_participant(http, users):
    """The /api/rooms flow under sfu-server's authentication (how load
    generators drive it): the JWT says who, X-Participant-Id which of that
    user's participants, when the user has several."""
    (bench,) = await users("bench", connect=False)
    await bench.req("POST", "/api/rooms/load/create", {}, status=201)
    one = await bench.req("POST", "/api/rooms/load/participants", {}, status=201)
    t = await bench.req("POST", "/api/rooms/load/transports", {"direction": "send"}, status=201)  # the only one
    two = await bench.req("POST", "/api/rooms/load/participants", {}, status=201)
    err = await bench.req("POST", "/api/rooms/load/transports", {"direction": "recv"}, status=400)
    assert "X-Participant-Id" in err["error"]
    await bench.req("POST", "/api/rooms/load/transports", {"direction": "recv"}, status=201,
                    headers={"X-Participant-Id": two["participantId"]})
    err = await bench.req("POST", f"/api/rooms/load/transports/{t['id']}/connect",
                          {"dtlsParameters": {"role": "client", "fingerprints": []}}, status=403,
                          headers={"X-Participant-Id": two["participantId"]})
    assert "another participant" in err["error"]
    ws = await http.ws_connect(f"/api/rooms/load/ws?token={bench.token}&participantId={one['participantId']}")
    await ws.send_str("ping")
    assert (await ws.receive()).data == "pong"
    await ws.close()
    (other,) = await users("other", connect=False)
    err = await other.req("POST", "/api/rooms/load/transports", {"direction": "send"}, status=403,
                          headers={"X-Participant-Id": one["participantId"]})
    assert "another user" in err["error"]


async def test_a_call_with_roles_records_its_router(http, users):
    (proctor,) = await users("proctor")
    call_id = await new_call(proctor, roles=True)
    joined = await proctor.join(call_id, role="subscriber")
    stored = http.server.app[CALLS].store.get_call(call_id)
    assert stored.mode == "sfu" and stored.router_id == joined["routerId"] and stored.roles_enabled
