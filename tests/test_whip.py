"""WHIP publish and WHEP view with aiortc's RTCPeerConnection (a standard
WebRTC client: SDP offer/answer, no code of ours on the client side)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiortc")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402

from aiortc_peer import pin_loopback  # noqa: E402
from signaling.server import ROOMS as ROOMS_KEY  # noqa: E402
from signaling.server import create_app, start_rooms  # noqa: E402


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


@pytest.fixture
async def client():
    rooms = await start_rooms(workers=1, rtc_port=47400)
    c = TestClient(TestServer(create_app(rooms), host="127.0.0.1"))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()
        await rooms.close()


async def negotiate(client, pc: RTCPeerConnection, url: str) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    resp = await client.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"})
    body = await resp.text()
    assert resp.status == 201, body
    assert resp.content_type == "application/sdp"
    assert "a=ice-lite" in body and "a=setup:passive" in body and "a=candidate:" in body
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return resp.headers["Location"]


async def count_frames(track, n: int, timeout: float = 15.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(n):
        await asyncio.wait_for(track.recv(), timeout)
    return n / (loop.time() - start)


async def test_whip_publisher_and_two_whep_viewers_decode(client):
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
    publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
    viewers = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
    tracks: list[dict] = [{}, {}]
    try:
        location = await negotiate(client, publisher, "/whip/live")
        assert location.startswith("/whip/live/")
        for i, v in enumerate(viewers):
            v.addTransceiver("audio", direction="recvonly")
            v.addTransceiver("video", direction="recvonly")
            v.on("track", lambda track, i=i: tracks[i].__setitem__(track.kind, track))
            await negotiate(client, v, "/whep/live")
            # one stream for the publisher's audio and video (a=msid stream id): a browser
            # synchronizes only the tracks of one stream (lip sync)
            streams = {ln.split()[0] for ln in v.remoteDescription.sdp.splitlines() if ln.startswith("a=msid:")}
            assert len(streams) == 1, v.remoteDescription.sdp
        for i in range(2):
            for _ in range(100):
                if len(tracks[i]) == 2:
                    break
                await asyncio.sleep(0.05)
        rates = await asyncio.gather(*(count_frames(t["video"], 30) for t in tracks))
        print("WHEP viewers decoded video at", [f"{r:.1f} fps" for r in rates], "(sender: 30 fps)")
        assert all(r > 20 for r in rates)
        audio = await asyncio.gather(*(asyncio.wait_for(t["audio"].recv(), 10) for t in tracks))
        assert all(frame.sample_rate == 48000 for frame in audio)

        resp = await client.delete(location)
        assert resp.status == 200
        resp = await client.delete(location)
        assert resp.status == 404  # RFC 9725: the session is gone
    finally:
        await publisher.close()
        for v in viewers:
            await v.close()


async def test_whip_rejects_bad_offers(client):
    resp = await client.post("/whip/x", data="v=0\r\n", headers={"Content-Type": "text/plain"})
    assert resp.status == 415 and "application/sdp" in (await resp.json())["error"]
    resp = await client.post("/whip/x", data="v=0\r\nm=video\r\n", headers={"Content-Type": "application/sdp"})
    assert resp.status == 400 and "SDP offer" in (await resp.json())["error"]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        resp = await client.post("/whep/nobody-here", data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"})
        assert resp.status == 404
    finally:
        await pc.close()
    resp = await client.options("/whip/x")
    assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"


async def test_demo_page_is_served(client):
    resp = await client.get("/")
    page = await resp.text()
    assert resp.status == 200 and "<video" in page and "/demo.js" in page
    resp = await client.get("/demo.js")
    script = await resp.text()
    assert resp.status == 200 and "/whip/" in script and "/whep/" in script


async def test_whip_answer_names_the_participant(client):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        resp = await client.post("/whip/named", data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"})
        assert resp.status == 201
        token = resp.headers["Location"].rsplit("/", 1)[1]
        listed = await (await client.get("/api/rooms/named/producers",
                                         headers={"Authorization": f"Bearer {token}"})).json()
        assert {p["participantId"] for p in listed["producers"]} == {resp.headers["X-Sfu-Participant-Id"]}
    finally:
        await pc.close()


async def test_three_aiortc_peers_each_publish_and_decode_the_other_two(client):
    """The group-call shape: every peer publishes (WHIP) and views both others (WHEP)."""
    publishers, ids = [], []
    viewers: list[tuple[int, int, RTCPeerConnection, dict]] = []
    try:
        for i in range(3):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
            pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            resp = await client.post("/whip/group", data=pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp"})
            assert resp.status == 201
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await resp.text(), type="answer"))
            publishers.append(pc)
            ids.append(resp.headers["X-Sfu-Participant-Id"])
        for me in range(3):
            for other in range(3):
                if me == other:
                    continue
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pc.addTransceiver("audio", direction="recvonly")
                pc.addTransceiver("video", direction="recvonly")
                got: dict = {}
                pc.on("track", lambda track, got=got: got.__setitem__(track.kind, track))
                await negotiate(client, pc, f"/whep/group?participant={ids[other]}")
                viewers.append((me, other, pc, got))
        for _ in range(100):
            if all(len(got) == 2 for *_, got in viewers):
                break
            await asyncio.sleep(0.05)
        rates = await asyncio.gather(*(count_frames(got["video"], 15, timeout=20) for *_, got in viewers))
        print("3-peer room, decoded fps per (viewer, publisher):",
              {f"{me}<-{other}": f"{r:.1f}" for (me, other, _, _), r in zip(viewers, rates)})
        assert all(r > 5 for r in rates)
        audio = await asyncio.gather(*(asyncio.wait_for(got["audio"].recv(), 10) for *_, got in viewers))
        assert len(audio) == 6
    finally:
        for pc in publishers + [v[2] for v in viewers]:
            await pc.close()


async def test_aiortc_viewer_keeps_decoding_over_a_lossy_link(client):
    """5% loss each way on the viewer's path (a relay whose port replaces the
    SFU's in the WHEP answer): the viewer NACKs, the SFU retransmits (RTX), and
    frames keep coming."""
    from lossy import Leg, LossyRelay

    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    relay = None
    try:
        publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await negotiate(client, publisher, "/whip/lossy")
        viewer.addTransceiver("video", direction="recvonly")
        got: dict = {}
        viewer.on("track", lambda track: got.__setitem__(track.kind, track))
        await viewer.setLocalDescription(await viewer.createOffer())
        resp = await client.post("/whep/lossy", data=viewer.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"})
        answer = await resp.text()
        assert resp.status == 201
        sfu_port = int(next(line for line in answer.split("\r\n") if line.startswith("a=candidate:")).split()[5])
        relay = await LossyRelay(("127.0.0.1", sfu_port), to_sfu=Leg(loss=0.05, delay_ms=5),
                                 to_client=Leg(loss=0.05, delay_ms=5), seed=3).start()
        await viewer.setRemoteDescription(RTCSessionDescription(
            sdp=answer.replace(f" {sfu_port} typ host", f" {relay.port} typ host"), type="answer"))
        for _ in range(100):
            if "video" in got:
                break
            await asyncio.sleep(0.05)
        fps = await count_frames(got["video"], 60, timeout=20)
        rooms = client.server.app[ROOMS_KEY]
        consumers = [c for room in rooms.rooms.values() for p in room.participants.values()
                     for c in p.consumers.values()]
        stats = (await consumers[0].get_stats())[0]
        print(f"aiortc viewer over 5% loss: {fps:.1f} fps decoded, SFU got {stats['nackCount']} NACKs, "
              f"retransmitted {stats['retransmittedPackets']} packets; relay dropped "
              f"{relay.to_client.dropped}+{relay.to_sfu.dropped}")
        assert relay.to_client.dropped > 0
        assert stats["nackCount"] > 0 and stats["retransmittedPackets"] > 0
        # 60 frames decoded (count_frames) is the behaviour; the rate is printed
    finally:
        if relay:
            relay.close()
        await publisher.close()
        await viewer.close()


async def test_patch_restarts_ice_and_answers_the_new_credentials(client):
    """RFC 9725 §4.3 on a live aiortc WHIP session: the 201 carries an ETag;
    a PATCH with new ICE credentials (If-Match: *) restarts the session's
    ICE and answers 200 with the SFU's new ufrag/pwd and candidate and a new
    ETag; a candidates-only fragment is 204; wrong or missing preconditions,
    content types and sessions get 412/428/415/404 naming the problem."""
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
    try:
        await publisher.setLocalDescription(await publisher.createOffer())
        resp = await client.post("/whip/patched", data=publisher.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"})
        answer = await resp.text()
        assert resp.status == 201, answer
        etag = resp.headers["ETag"]
        location = resp.headers["Location"]
        old_ufrag = next(ln.split(":", 1)[1] for ln in answer.splitlines() if ln.startswith("a=ice-ufrag:"))
        frag = "a=ice-ufrag:newU\r\na=ice-pwd:newpasswordnewpassword12\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        sdpfrag = {"Content-Type": "application/trickle-ice-sdpfrag"}

        resp = await client.patch(location, data=frag, headers=sdpfrag)
        assert resp.status == 428 and "If-Match" in (await resp.json())["error"]
        resp = await client.patch(location, data=frag, headers={**sdpfrag, "If-Match": '"nope"'})
        assert resp.status == 412, await resp.text()
        resp = await client.patch(location, data=frag, headers={"Content-Type": "application/sdp", "If-Match": "*"})
        assert resp.status == 415 and "trickle-ice-sdpfrag" in (await resp.json())["error"]
        resp = await client.patch(location + "x", data=frag, headers={**sdpfrag, "If-Match": "*"})
        assert resp.status == 404
        # trickled candidates only: nothing to do for an ICE-lite server
        resp = await client.patch(location, data="a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
                                  headers={**sdpfrag, "If-Match": etag})
        assert resp.status == 204 and resp.headers["ETag"] == etag

        resp = await client.patch(location, data=frag, headers={**sdpfrag, "If-Match": "*"})
        body = await resp.text()
        assert resp.status == 200, body
        assert resp.content_type == "application/trickle-ice-sdpfrag"
        assert resp.headers["ETag"] != etag
        new_ufrag = next(ln.split(":", 1)[1] for ln in body.splitlines() if ln.startswith("a=ice-ufrag:"))
        assert new_ufrag != old_ufrag and "a=ice-pwd:" in body
        assert "a=candidate:" in body and "a=end-of-candidates" in body
        # the old tag no longer matches
        resp = await client.patch(location, data=frag, headers={**sdpfrag, "If-Match": etag})
        assert resp.status == 412
    finally:
        await publisher.close()
