"""The sfu-server REST + WebSocket API, driven over real HTTP, with aiortc
(ORTC objects) as the media clients."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiortc")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from aiortc import RTCRtpReceiver, RTCRtpSender  # noqa: E402
from aiortc.mediastreams import VideoStreamTrack  # noqa: E402
from aiortc.rtcrtpparameters import (  # noqa: E402
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpEncodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack  # noqa: E402

from aiortc_peer import AiortcPeer, pin_loopback  # noqa: E402
from signaling.server import create_app, start_rooms  # noqa: E402


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


@pytest.fixture(params=[0, 47300], ids=["port-per-transport", "shared-port"])
async def client(request):
    rooms = await start_rooms(workers=1, rtc_port=request.param)
    server = TestServer(create_app(rooms), host="127.0.0.1")
    c = TestClient(server)
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()
        await rooms.close()


async def call(client, method, path, token=None, json=None, status=200):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.request(method, path, json=json, headers=headers)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_publish_and_view_through_the_rest_api(client):
    room = await call(client, "POST", "/api/rooms/r1/create", status=201)
    assert room["rtpCapabilities"]["codecs"]
    alice = await call(client, "POST", "/api/rooms/r1/participants", status=201)
    bob = await call(client, "POST", "/api/rooms/r1/participants", status=201)
    ws = await client.ws_connect(f"/api/rooms/r1/ws?token={bob['token']}")

    pub, sub = AiortcPeer(), AiortcPeer()
    try:
        send_t = await call(client, "POST", "/api/rooms/r1/transports", alice["token"], {"direction": "send"}, 201)
        await call(client, "POST", f"/api/rooms/r1/transports/{send_t['id']}/connect", alice["token"],
                   {"dtlsParameters": pub.dtls_parameters()})
        recv_t = await call(client, "POST", "/api/rooms/r1/transports", bob["token"], {"direction": "recv"}, 201)
        await call(client, "POST", f"/api/rooms/r1/transports/{recv_t['id']}/connect", bob["token"],
                   {"dtlsParameters": sub.dtls_parameters()})
        await asyncio.gather(pub.connect(send_t), sub.connect(recv_t))
        await asyncio.gather(pub.start_dtls(send_t), sub.start_dtls(recv_t))

        sender = RTCRtpSender(VideoStreamTrack(), pub.dtls)
        vp8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}
        produced = await call(client, "POST", f"/api/rooms/r1/transports/{send_t['id']}/produce", alice["token"],
                              {"kind": "video", "rtpParameters": {"codecs": [vp8],
                                                                  "encodings": [{"ssrc": sender._ssrc}]}}, 201)
        event = await asyncio.wait_for(ws.receive_json(), 5)
        assert event == {"event": "new-producer",
                         "data": {"participantId": alice["participantId"], "producerId": produced["id"],
                                  "kind": "video"}}
        listed = await call(client, "GET", "/api/rooms/r1/producers", bob["token"])
        assert [p["producerId"] for p in listed["producers"]] == [produced["id"]]

        consumer = await call(client, "POST", "/api/rooms/r1/consume", bob["token"],
                              {"transportId": recv_t["id"], "producerId": produced["id"],
                               "rtpCapabilities": room["rtpCapabilities"]}, 201)
        assert consumer["kind"] == "video" and consumer["producerId"] == produced["id"]
        pt = consumer["rtpParameters"]["codecs"][0]["payloadType"]
        receiver = RTCRtpReceiver("video", sub.dtls)
        receiver._track = RemoteStreamTrack(kind="video")
        await receiver.receive(RTCRtpReceiveParameters(
            codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=pt)],
            encodings=[RTCRtpDecodingParameters(ssrc=consumer["rtpParameters"]["encodings"][0]["ssrc"],
                                                payloadType=pt)],
            rtcp=RTCRtcpParameters(cname="bob", mux=True)))
        await call(client, "POST", f"/api/rooms/r1/consumers/{consumer['id']}/resume", bob["token"])
        await sender.send(RTCRtpSendParameters(
            codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)],
            encodings=[RTCRtpEncodingParameters(ssrc=sender._ssrc, payloadType=96)],
            rtcp=RTCRtcpParameters(cname="alice", mux=True)))
        for _ in range(10):
            frame = await asyncio.wait_for(receiver.track.recv(), 10)
            assert frame.width == 640
        # simulcast layer choice (one encoding here: the layer is clamped, video keeps flowing)
        layers = await call(client, "POST", f"/api/rooms/r1/consumers/{consumer['id']}/preferred-layers",
                            bob["token"], {"spatialLayer": 1, "temporalLayer": 0})
        assert layers == {"preferredLayers": {"spatialLayer": 1, "temporalLayer": 0}}
        err = await call(client, "POST", f"/api/rooms/r1/consumers/{consumer['id']}/preferred-layers",
                         bob["token"], {"spatialLayer": "high"}, status=400)
        assert "spatialLayer" in err["error"]
        prio = await call(client, "POST", f"/api/rooms/r1/consumers/{consumer['id']}/priority",
                          bob["token"], {"priority": 3})
        assert prio == {"priority": 3}
        st = await call(client, "GET", f"/api/rooms/r1/consumers/{consumer['id']}/stats", bob["token"])
        assert st["consumer"]["priority"] == 3 and st["consumer"]["packetCount"] > 0
        assert st["transport"]["rtpPacketsSent"] > 0
        err = await call(client, "POST", f"/api/rooms/r1/consumers/{consumer['id']}/priority",
                         bob["token"], {"priority": 0}, status=400)
        assert "priority" in err["error"]
        frame = await asyncio.wait_for(receiver.track.recv(), 10)
        assert frame.width == 640

        # Ownership: bob cannot touch alice's transport, nor make her leave.
        err = await call(client, "POST", f"/api/rooms/r1/transports/{send_t['id']}/produce", bob["token"],
                         {"kind": "video", "rtpParameters": {"codecs": [vp8], "encodings": [{"ssrc": 5}]}}, status=403)
        assert "another participant" in err["error"]
        err = await call(client, "POST", f"/api/rooms/r1/participants/{alice['participantId']}/leave",
                         bob["token"], status=403)
        assert "itself" in err["error"]

        await call(client, "POST", f"/api/rooms/r1/participants/{alice['participantId']}/leave", alice["token"])
        events = []
        while len(events) < 2:
            events.append((await asyncio.wait_for(ws.receive_json(), 5))["event"])
        assert sorted(events) == ["participant-left", "producer-closed"]
        await sender.stop()
        await receiver.stop()
    finally:
        await ws.close()
        await pub.close()
        await sub.close()


async def test_bad_requests_get_json_errors_naming_the_problem(client):
    await call(client, "POST", "/api/rooms/r2/create", status=201)
    again = await call(client, "POST", "/api/rooms/r2/create", status=200)
    assert again["roomId"] == "r2"
    me = await call(client, "POST", "/api/rooms/r2/participants", status=201)
    tok = me["token"]
    assert "not found" in (await call(client, "POST", "/api/rooms/nope/participants", status=404))["error"]
    assert "token" in (await call(client, "POST", "/api/rooms/r2/transports", None, {"direction": "send"},
                                  status=401))["error"]
    assert "token" in (await call(client, "POST", "/api/rooms/r2/transports", "forged", {"direction": "send"},
                                  status=401))["error"]
    assert "direction" in (await call(client, "POST", "/api/rooms/r2/transports", tok, {"direction": "up"},
                                      status=400))["error"]
    resp = await client.post("/api/rooms/r2/transports", data=b"{not json",
                             headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
    assert resp.status == 400 and "JSON" in (await resp.json())["error"]
    t = await call(client, "POST", "/api/rooms/r2/transports", tok, {"direction": "send"}, 201)
    err = await call(client, "POST", f"/api/rooms/r2/transports/{t['id']}/produce", tok,
                     {"kind": "audio", "rtpParameters": {"codecs": [{"mimeType": "audio/G722", "payloadType": 9,
                                                                     "clockRate": 8000}],
                                                         "encodings": [{"ssrc": 1}]}}, status=400)
    assert "G722" in err["error"] or "codec" in err["error"]
    err = await call(client, "POST", f"/api/rooms/r2/transports/{t['id']}/connect", tok,
                     {"dtlsParameters": {"role": "boss", "fingerprints": []}}, status=400)
    assert "role" in err["error"]
    err = await call(client, "POST", "/api/rooms/r2/consume", tok,
                     {"transportId": t["id"], "producerId": "missing", "rtpCapabilities": {}}, status=404)
    assert "producerId" in err["error"]
    # The server and other rooms are unaffected.
    health = await call(client, "GET", "/healthz")
    assert health["workers"] == 1 and health["rooms"] >= 1
