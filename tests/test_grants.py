"""Room grants in tokens (issue #11) and empty rooms closing after a grace
period, through the real app: a real media worker, real HS256 JWTs (minted
by the Authenticator and, LiveKit-shaped, by PyJWT directly), aiohttp's
client for REST, and aiortc's RTCPeerConnection as the WHIP publisher and
WHEP viewer (frames decoded, not just answers received)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

pytest.importorskip("aiortc")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402

from aiortc_peer import pin_loopback  # noqa: E402
from signaling.auth import AuthConfig, AuthError, Authenticator, RoomGrant, check_room_grant  # noqa: E402
from signaling.server import create_app  # noqa: E402

SECRET = "grants-test-secret-0123456789abcdef0123456789"
SDP = {"Content-Type": "application/sdp"}
VP8_PARAMS = {"codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}],
              "encodings": [{"ssrc": 22334455}]}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)




async def serve(rooms, require_grants: bool = False, **kw: Any) -> tuple[TestClient, Authenticator]:
    auth = Authenticator(AuthConfig.from_options(secret=SECRET, require_grants=require_grants))
    client = TestClient(TestServer(create_app(rooms, auth=auth, **kw), host="127.0.0.1"))
    await client.start_server()
    return client, auth


@pytest.fixture
async def app(rooms):
    client, auth = await serve(rooms)
    try:
        yield client, auth
    finally:
        await client.close()


def h(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def livekit_token(user: str, video: Optional[dict] = None) -> str:
    """A token as LiveKit's SDKs shape it (``video`` grant with ``room``)."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user, "iat": now, "exp": now + 600}
    if video is not None:
        payload["video"] = video
    return jwt.encode(payload, SECRET, algorithm="HS256")


async def error(resp, status: int) -> str:
    body = await resp.json()
    assert resp.status == status, body
    return body["error"]


# ------------------------------------------------------------------ WebRTC

async def offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


def publisher() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    return pc


def viewer(tracks: dict) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.on("track", lambda track: tracks.__setitem__(track.kind, track))
    return pc


async def negotiate(client, pc: RTCPeerConnection, url: str, token: str) -> str:
    resp = await client.post(url, data=await offer(pc), headers=h(token, **SDP))
    text = await resp.text()
    assert resp.status == 201, text
    await pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
    return resp.headers["Location"]


async def decode_video(tracks: dict, frames: int = 5) -> None:
    for _ in range(600):  # the track event comes with the answer; poll up to 30 s
        if "video" in tracks:
            break
        await asyncio.sleep(0.05)
    assert "video" in tracks, "the WHEP viewer got no video track"
    for _ in range(frames):
        frame = await asyncio.wait_for(tracks["video"].recv(), 30)
        assert frame.width > 0


# ----------------------------------------------------------- grant parsing

def test_grant_claim_shapes():
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    ident = auth.verify(auth.mint("a", rooms=["A", "B"], can_subscribe=False))
    assert ident.grant == RoomGrant(frozenset({"A", "B"}), can_publish=True, can_subscribe=False)
    assert auth.verify(auth.mint("a", rooms="*")).grant == RoomGrant(None)
    assert auth.verify(auth.mint("a", rooms="A")).grant.rooms == {"A"}
    # LiveKit's shape: one room, roomJoin; canPublish/canSubscribe default to true
    assert auth.verify(livekit_token("a", {"room": "A", "roomJoin": True})).grant == RoomGrant(frozenset({"A"}))
    assert auth.verify(livekit_token("a", {"room": "A", "roomJoin": False})).grant.rooms == frozenset()
    assert auth.verify(livekit_token("a", {"roomCreate": True})).grant.rooms == frozenset()  # an admin token
    assert auth.verify(livekit_token("a")).grant is None
    for bad, what in (("yes", "must be an object"), ({"rooms": "A"}, "video.rooms"), ({"rooms": [1]}, "video.rooms"),
                      ({"room": ""}, "video.room"), ({"room": "A", "canPublish": "no"}, "video.canPublish")):
        with pytest.raises(AuthError) as info:
            auth.verify(livekit_token("a", bad))
        assert info.value.status == 401 and what in info.value.message, info.value.message


def test_check_room_grant_messages():
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    a_only = auth.verify(auth.mint("a", rooms=["A"], can_publish=False))
    check_room_grant(a_only, "A", subscribe=True)
    with pytest.raises(AuthError) as info:
        check_room_grant(a_only, "B")
    assert info.value.status == 403 and info.value.message == "token grants no access to room B"
    with pytest.raises(AuthError) as info:
        check_room_grant(a_only, "A", publish=True)
    assert info.value.status == 403 and info.value.message.startswith("token may not publish")
    legacy = auth.verify(auth.mint("a"))
    check_room_grant(legacy, "B", publish=True, subscribe=True)  # grants not required: everything
    with pytest.raises(AuthError) as info:
        check_room_grant(legacy, "B", require=True)
    assert info.value.status == 403 and "--require-grants" in info.value.message
    check_room_grant(legacy, "B", require=True, call=True)  # a call's roles decide
    check_room_grant(None, "B", publish=True, require=True)  # an app without authenticator


# -------------------------------------------------------------------- REST

async def test_rest_token_for_room_a_is_refused_in_room_b(app):
    client, auth = app
    a = auth.mint("alice", rooms=["A"])
    admin = auth.mint("admin", rooms="*")
    assert (await client.post("/api/rooms/A/create", headers=h(a))).status == 201
    assert (await client.post("/api/rooms/B/create", headers=h(admin))).status == 201
    for method, path in (("POST", "/api/rooms/B/create"), ("POST", "/api/rooms/B/participants"),
                         ("GET", "/api/rooms/B/producers"), ("POST", "/api/rooms/B/transports"),
                         ("GET", "/api/rooms/B/ws"), ("GET", "/api/rooms/nowhere/producers")):
        resp = await client.request(method, path, json={"direction": "send"}, headers=h(a))
        room = path.split("/")[3]
        assert await error(resp, 403) == f"token grants no access to room {room}", (method, path)
    # the same user with room A's token still works in A
    resp = await client.post("/api/rooms/A/participants", headers=h(a))
    assert resp.status == 201, await resp.text()
    assert (await client.get("/api/rooms/A/producers", headers=h(a))).status == 200


async def test_rest_produce_needs_publish_and_consume_needs_subscribe(app):
    client, auth = app
    pub_only = auth.mint("pub", rooms=["R"], can_subscribe=False)
    sub_only = auth.mint("sub", rooms=["R"], can_publish=False)
    caps = (await (await client.post("/api/rooms/R/create", headers=h(pub_only))).json())["rtpCapabilities"]
    transports = {}
    for name, tok in (("pub", pub_only), ("sub", sub_only)):
        assert (await client.post("/api/rooms/R/participants", headers=h(tok))).status == 201
        for direction in ("send", "recv"):
            resp = await client.post("/api/rooms/R/transports", json={"direction": direction}, headers=h(tok))
            assert resp.status == 201, await resp.text()
            transports[name, direction] = (await resp.json())["id"]
    # subscribe-only: produce refused, naming the missing grant
    resp = await client.post(f"/api/rooms/R/transports/{transports['sub', 'send']}/produce",
                             json={"kind": "video", "rtpParameters": VP8_PARAMS}, headers=h(sub_only))
    assert (await error(resp, 403)).startswith("token may not publish")
    # publish-only: produce works ...
    resp = await client.post(f"/api/rooms/R/transports/{transports['pub', 'send']}/produce",
                             json={"kind": "video", "rtpParameters": VP8_PARAMS}, headers=h(pub_only))
    assert resp.status == 201, await resp.text()
    producer = (await resp.json())["id"]
    # ... but consume is refused
    resp = await client.post("/api/rooms/R/consume", headers=h(pub_only),
                             json={"transportId": transports["pub", "recv"], "producerId": producer,
                                   "rtpCapabilities": caps})
    assert (await error(resp, 403)).startswith("token may not subscribe")
    # subscribe-only consumes
    resp = await client.post("/api/rooms/R/consume", headers=h(sub_only),
                             json={"transportId": transports["sub", "recv"], "producerId": producer,
                                   "rtpCapabilities": caps})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["producerId"] == producer


# --------------------------------------------------------------- WHIP/WHEP

async def test_whip_whep_grants(app):
    client, auth = app
    pub = auth.mint("pub", rooms=["A"], can_subscribe=False)
    sub = auth.mint("sub", rooms=["A"], can_publish=False)
    # LiveKit-shaped: room A, may subscribe only
    sub_lk = livekit_token("sub2", {"room": "A", "roomJoin": True, "canPublish": False, "canSubscribe": True})
    b_admin = auth.mint("admin", rooms=["B"])
    pcs = [publisher(), publisher()]
    tracks: list[dict] = [{}, {}]
    pcs += [viewer(tracks[0]), viewer(tracks[1])]
    try:
        # room B is not granted to room A's tokens: WHIP and WHEP both 403
        await negotiate(client, pcs[1], "/whip/B", b_admin)
        for url, tok in (("/whip/B", pub), ("/whep/B", sub)):
            resp = await client.post(url, data=await offer(publisher() if "whip" in url else viewer({})),
                                     headers=h(tok, **SDP))
            assert await error(resp, 403) == "token grants no access to room B", url
        # a subscribe-only token cannot WHIP
        for tok in (sub, sub_lk):
            resp = await client.post("/whip/A", data=await offer(publisher()), headers=h(tok, **SDP))
            assert (await error(resp, 403)).startswith("token may not publish")
        location = await negotiate(client, pcs[0], "/whip/A", pub)
        # a publish-only token cannot WHEP
        resp = await client.post("/whep/A", data=await offer(viewer({})), headers=h(pub, **SDP))
        assert (await error(resp, 403)).startswith("token may not subscribe")
        # subscribe-only tokens view (and decode) room A's publisher
        await negotiate(client, pcs[2], "/whep/A", sub)
        await negotiate(client, pcs[3], "/whep/A", sub_lk)
        await asyncio.gather(decode_video(tracks[0]), decode_video(tracks[1]))
        # ending a session needs the room too
        resp = await client.delete(location, headers=h(b_admin))
        assert await error(resp, 403) == "token grants no access to room A"
        assert (await client.delete(location, headers=h(pub))).status == 200
    finally:
        for pc in pcs:
            await pc.close()


# -------------------------------------------------- tokens without grants

async def test_tokens_without_grants_keep_working_by_default(app):
    """Backward compatibility (grants not required): a token without a
    ``video`` claim may create, join, publish and view in any room."""
    client, auth = app
    legacy = auth.mint("legacy")
    pcs = [publisher()]
    tracks: dict = {}
    pcs.append(viewer(tracks))
    try:
        assert (await client.post("/api/rooms/anything/create", headers=h(legacy))).status == 201
        await negotiate(client, pcs[0], "/whip/anything", legacy)
        await negotiate(client, pcs[1], "/whep/anything", legacy)
        await decode_video(tracks)
    finally:
        for pc in pcs:
            await pc.close()


async def test_require_grants_refuses_grantless_tokens_in_rooms_not_in_calls(rooms):
    client, auth = await serve(rooms, require_grants=True)
    try:
        legacy = auth.mint("legacy")
        resp = await client.post("/api/rooms/R/create", headers=h(legacy))
        assert "--require-grants" in await error(resp, 403)
        resp = await client.post("/whip/R", data=await offer(publisher()), headers=h(legacy, **SDP))
        assert "--require-grants" in await error(resp, 403)
        assert (await client.post("/api/rooms/R/create", headers=h(auth.mint("a", rooms=["R"])))).status == 201
        # calls authorise by membership and roles: a grant-less token still creates and joins one
        resp = await client.post("/api/calls", json={"callId": "c1"}, headers=h(legacy))
        assert resp.status == 201, await resp.text()
        resp = await client.post("/api/calls/c1/participants", json={}, headers=h(legacy))
        assert resp.status == 201, await resp.text()
    finally:
        await client.close()


async def test_a_call_token_with_a_grant_must_name_the_call(app):
    client, auth = app
    other = auth.mint("bob", rooms=["somewhere-else"])
    named = auth.mint("carol", rooms=["c2"])
    resp = await client.post("/api/calls", json={"callId": "c2"}, headers=h(other))
    assert await error(resp, 403) == "token grants no access to room c2"
    resp = await client.post("/api/calls", json={}, headers=h(other))  # a random id cannot be granted ahead
    assert "callId" in await error(resp, 403)
    resp = await client.post("/api/calls", json={"callId": "c2"}, headers=h(named))
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/calls/c2/participants", json={}, headers=h(other))
    assert await error(resp, 403) == "token grants no access to room c2"
    resp = await client.post("/api/calls/c2/participants", json={}, headers=h(named))
    assert resp.status == 201, await resp.text()


async def test_the_dev_auth_demo_tokens_still_work(app, monkeypatch):
    """The tokens `sfu-server --dev-auth` prints: the room demo's token
    creates its room, publishes (WHIP) and views (WHEP); the call demo's
    tokens create and join the demo call."""
    from signaling.cli import DEMO_CALL, DEMO_ROOM, dev_banner
    from signaling.server import CorsPolicy

    client, auth = app
    lines = dev_banner(f"http://127.0.0.1:{client.port}", auth, CorsPolicy())
    urls = [urlsplit(u) for line in lines for u in line.split() if u.startswith("http://")]
    room_token = next(parse_qs(u.query)["token"][0] for u in urls if u.path == "/")
    call_tokens = [parse_qs(u.query)["token"][0] for u in urls if u.path == "/call"]
    assert room_token and call_tokens
    pcs = [publisher()]
    tracks: dict = {}
    pcs.append(viewer(tracks))
    try:
        assert (await client.post(f"/api/rooms/{DEMO_ROOM}/create", headers=h(room_token))).status == 201
        await negotiate(client, pcs[0], f"/whip/{DEMO_ROOM}", room_token)
        await negotiate(client, pcs[1], f"/whep/{DEMO_ROOM}", room_token)
        await decode_video(tracks)
        resp = await client.post("/api/calls", json={"callId": DEMO_CALL}, headers=h(call_tokens[0]))
        assert resp.status == 201, await resp.text()
        for tok in call_tokens:
            resp = await client.post(f"/api/calls/{DEMO_CALL}/participants", json={}, headers=h(tok))
            assert resp.status == 201, await resp.text()
    finally:
        for pc in pcs:
            await pc.close()


# ------------------------------------------------------------- empty rooms

async def wait_for(predicate, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_an_empty_room_closes_after_the_grace_period(rooms):
    client, auth = await serve(rooms, empty_room_grace_s=1.0)
    try:
        admin = auth.mint("admin", rooms="*")
        worker = rooms.workers[0]
        before = len(worker.routers)
        resp = await client.post("/api/rooms/idle/create", headers=h(admin))
        assert resp.status == 201
        router_id = (await resp.json())["routerId"]
        room = rooms.rooms["idle"]
        assert room.router.id == router_id and len(worker.routers) == before + 1
        # nobody joins: the room and its router go
        await wait_for(lambda: "idle" not in rooms.rooms)
        assert room.router.closed and router_id not in {r.id for r in worker.routers}
        assert rooms.rooms_closed_empty == 1
        health = await (await client.get("/healthz")).json()
        assert health["rooms"] == 0
        assert await error(await client.get("/api/rooms/idle/producers", headers=h(admin)), 404)
        # a WHIP session that ends leaves its room empty: it closes too
        pc = publisher()
        try:
            location = await negotiate(client, pc, "/whip/live", admin)
            live = rooms.rooms["live"]
            assert (await client.delete(location, headers=h(admin))).status == 200
        finally:
            await pc.close()
        await wait_for(lambda: live.router.closed and "live" not in rooms.rooms)
        assert rooms.rooms_closed_empty == 2
    finally:
        await client.close()


async def test_a_room_rejoined_within_the_grace_period_stays(rooms):
    grace = 8.0
    client, auth = await serve(rooms, empty_room_grace_s=grace)
    try:
        tok = auth.mint("alice", rooms=["kept"])
        assert (await client.post("/api/rooms/kept/create", headers=h(tok))).status == 201
        room = rooms.rooms["kept"]
        me = (await (await client.post("/api/rooms/kept/participants", headers=h(tok))).json())["participantId"]
        assert not room.closing_when_empty
        loop = asyncio.get_running_loop()
        left_at = loop.time()
        resp = await client.post(f"/api/rooms/kept/participants/{me}/leave", headers=h(tok, **{"X-Participant-Id": me}))
        assert resp.status == 200, await resp.text()
        assert room.closing_when_empty and not room.participants
        resp = await client.post("/api/rooms/kept/participants", headers=h(tok))
        assert resp.status == 201, await resp.text()
        rejoined_after = loop.time() - left_at
        assert rejoined_after < grace, f"the machine took {rejoined_after:.1f} s to rejoin"
        assert not room.closing_when_empty
        # well past the first grace period's end: still open, same router
        await asyncio.sleep(grace * 1.5)
        assert rooms.rooms.get("kept") is room and not room.router.closed
        assert room.router in rooms.workers[0].routers
        assert rooms.rooms_closed_empty == 0
    finally:
        await client.close()


async def test_grace_zero_keeps_empty_rooms_and_negative_is_refused(rooms):
    with pytest.raises(ValueError):
        create_app(rooms, empty_room_grace_s=-1)
    client, auth = await serve(rooms, empty_room_grace_s=0)
    try:
        assert (await client.post("/api/rooms/forever/create", headers=h(auth.mint("a")))).status == 201
        assert not rooms.rooms["forever"].closing_when_empty
    finally:
        await client.close()
