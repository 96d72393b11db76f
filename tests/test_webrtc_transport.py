"""WebRTC transports (ICE-lite + DTLS-SRTP) with aiortc as the remote peer.

aiortc is driven through its ORTC objects (RTCIceTransport, RTCDtlsTransport,
RTCRtpSender/Receiver), so no SDP and no client-side WebRTC code of ours is
involved. aioice's host address gathering is pinned to 127.0.0.1 so that all
traffic stays on loopback, and no STUN server is used.
"""

from __future__ import annotations

import asyncio
import os

import pytest

aiortc = pytest.importorskip("aiortc")
from aiortc import (  # noqa: E402
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.mediastreams import VideoStreamTrack  # noqa: E402
from aiortc.rtcrtpreceiver import RemoteStreamTrack  # noqa: E402
from aiortc.rtcrtpparameters import (  # noqa: E402
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpEncodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)

import sfu  # noqa: E402
from aiortc_peer import AiortcPeer, pin_loopback, wait_until  # noqa: E402

VP8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    pin_loopback(monkeypatch)


async def test_aiortc_publishes_vp8_and_another_aiortc_decodes_it(worker, router):
    server = await worker.create_webrtc_server(listen_ip="127.0.0.1")
    send_t = await router.create_webrtc_transport(listen_ip="127.0.0.1")          # own port
    recv_t = await router.create_webrtc_transport(webrtc_server=server)           # shared port
    assert recv_t.ice_candidates[0]["port"] == server.port
    states = []
    send_t.on("dtlsstatechange", states.append)

    pub, sub = AiortcPeer(), AiortcPeer()
    try:
        await send_t.connect(pub.dtls_parameters())
        await recv_t.connect(sub.dtls_parameters())
        await asyncio.gather(pub.connect(send_t), sub.connect(recv_t))
        await asyncio.gather(pub.start_dtls(send_t), sub.start_dtls(recv_t))
        await wait_until(lambda: send_t.dtls_state == "connected" and recv_t.dtls_state == "connected")
        assert send_t.ice_state == "completed" and send_t.ice_selected_tuple["remoteIp"] == "127.0.0.1"
        assert states == ["connecting", "connected"]

        track = VideoStreamTrack()
        sender = RTCRtpSender(track, pub.dtls)
        producer = await send_t.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": sender._ssrc}]})
        consumer = await recv_t.consume(producer.id, router.rtp_capabilities)
        pt = consumer.rtp_parameters["codecs"][0]["payloadType"]
        receiver = RTCRtpReceiver("video", sub.dtls)
        receiver._track = RemoteStreamTrack(kind="video")  # what RTCPeerConnection does for ORTC use
        await receiver.receive(RTCRtpReceiveParameters(
            codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=pt)],
            encodings=[RTCRtpDecodingParameters(ssrc=consumer.rtp_parameters["encodings"][0]["ssrc"],
                                                payloadType=pt)],
            rtcp=RTCRtcpParameters(cname="viewer", mux=True)))
        await sender.send(RTCRtpSendParameters(
            codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)],
            encodings=[RTCRtpEncodingParameters(ssrc=sender._ssrc, payloadType=96)],
            rtcp=RTCRtcpParameters(cname="publisher", mux=True)))

        loop = asyncio.get_running_loop()
        start = loop.time()
        frames = 0
        while frames < 30:
            frame = await asyncio.wait_for(receiver.track.recv(), 10)
            assert frame.width == 640 and frame.height == 480
            frames += 1
        fps = frames / (loop.time() - start)
        print(f"aiortc viewer decoded {frames} frames at {fps:.1f} fps (sender: 30 fps)")
        stats = (await recv_t.get_stats())[0]
        assert stats["rtpPacketsSent"] > 0 and stats["iceState"] == "completed"
        assert send_t.srtp_crypto_suite in ("AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80")
        await sender.stop()
        await receiver.stop()
    finally:
        await pub.close()
        await sub.close()


async def test_wrong_ice_password_is_rejected_and_counted(worker, router):
    t = await router.create_webrtc_transport(listen_ip="127.0.0.1")
    other = await router.create_webrtc_transport(listen_ip="127.0.0.1")
    peer = AiortcPeer()
    try:
        with pytest.raises((asyncio.TimeoutError, ConnectionError)):
            await peer.connect(t, password="x" * 24, timeout=3)
        assert peer.ice.state != "completed"
        stats = (await t.get_stats())[0]
        assert stats["iceState"] == "new" and stats["iceStats"]["bad_integrity"] > 0
        assert (await other.get_stats())[0]["iceStats"]["bad_integrity"] == 0
    finally:
        await peer.close()


async def test_fingerprint_mismatch_closes_transport_with_reason(worker, router):
    t = await router.create_webrtc_transport(listen_ip="127.0.0.1")
    peer = AiortcPeer()
    closed = asyncio.Event()
    t.observer.on("close", closed.set)
    try:
        wrong = peer.dtls_parameters()
        wrong["fingerprints"] = [{"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}]
        await t.connect(wrong)
        await peer.connect(t)
        # aiortc may or may not notice (it is the DTLS server here); we must.
        start = asyncio.ensure_future(peer.start_dtls(t))
        await asyncio.wait_for(closed.wait(), 10)
        start.cancel()
        assert t.closed and "fingerprint" in (t.close_reason or "")
        assert t.dtls_state == "failed"
    finally:
        await peer.close()


async def test_rtp_before_dtls_and_dtls_garbage_are_dropped(worker, router):
    t = await router.create_webrtc_transport(listen_ip="127.0.0.1")
    await t.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 1234}]})
    peer = AiortcPeer()
    try:
        await peer.connect(t)
        conn = peer.ice._connection
        rtp = bytes([0x80, 96, 0, 1]) + bytes(4) + (1234).to_bytes(4, "big") + os.urandom(100)
        await conn.send(rtp)
        await conn.send(bytes([22, 0xFE, 0xFD]) + os.urandom(40))  # a "handshake record" of garbage
        await asyncio.sleep(0.2)
        counters = await worker.get_counters()
        assert counters["drop_srtp"] >= 1
        stats = (await t.get_stats())[0]
        assert stats["rtpPacketsReceived"] == 0
        # DTLS has not started (no connect() yet): the garbage is buffered/ignored, nothing breaks.
        assert stats["dtlsState"] == "new" and stats["iceState"] == "completed"
    finally:
        await peer.close()


async def test_unknown_ufrag_on_shared_port_is_not_answered(worker, router):
    from aioice import stun

    server = await worker.create_webrtc_server(listen_ip="127.0.0.1")
    t = await router.create_webrtc_transport(webrtc_server=server)
    loop = asyncio.get_running_loop()
    got = []

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.append(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    try:
        req = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        req.attributes["USERNAME"] = "nosuchufrag:peer"
        req.attributes["PRIORITY"] = 1
        req.attributes["ICE-CONTROLLING"] = 1
        req.add_message_integrity(b"whatever-password-123456")
        req.add_fingerprint()
        transport.sendto(bytes(req), ("127.0.0.1", server.port))
        await asyncio.sleep(0.2)
        assert got == []
        assert (await t.get_stats())[0]["iceState"] == "new"
    finally:
        transport.close()


async def _binding(port: int, username: str, password: str) -> bytes | None:
    """One STUN binding request as a controlling agent; the response or None."""
    from aioice import stun

    loop = asyncio.get_running_loop()
    got: asyncio.Future = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    try:
        req = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        req.attributes["USERNAME"] = username
        req.attributes["PRIORITY"] = 1853824767
        req.attributes["ICE-CONTROLLING"] = 1
        req.attributes["USE-CANDIDATE"] = None
        req.add_message_integrity(password.encode())
        req.add_fingerprint()
        transport.sendto(bytes(req), ("127.0.0.1", port))
        return await asyncio.wait_for(got, 1)
    except asyncio.TimeoutError:
        return None
    finally:
        transport.close()


async def test_restart_ice_changes_credentials_and_only_the_new_ones_work(worker, router):
    from aioice import stun

    t = await router.create_webrtc_transport(listen_ip="127.0.0.1")
    port = t.ice_candidates[0]["port"]
    old = dict(t.ice_parameters)
    states = []
    t.on("icestatechange", states.append)
    resp = stun.parse_message(await _binding(port, f"{old['usernameFragment']}:peer", old["password"]))
    assert resp.message_class == stun.Class.RESPONSE
    new = await t.restart_ice()
    assert new["usernameFragment"] != old["usernameFragment"] and new["password"] != old["password"]
    assert t.ice_parameters == new
    rejected = await _binding(port, f"{old['usernameFragment']}:peer", old["password"])
    assert rejected is None or stun.parse_message(rejected).message_class == stun.Class.ERROR
    resp = stun.parse_message(await _binding(port, f"{new['usernameFragment']}:peer", new["password"]))
    assert resp.message_class == stun.Class.RESPONSE
    await wait_until(lambda: "completed" in states)


async def test_announced_ip_and_port_range_shape_the_candidate(worker, router):
    t = await router.create_webrtc_transport(listen_ip="127.0.0.1", announced_ip="203.0.113.7",
                                             port_range=(47600, 47610))
    (c,) = t.ice_candidates
    assert c["ip"] == c["address"] == "203.0.113.7" and 47600 <= c["port"] <= 47610
    assert c["protocol"] == "udp" and c["type"] == "host"
    assert t.ice_parameters["iceLite"] is True and t.ice_role == "controlled"
    assert t.dtls_parameters["role"] == "auto" and {f["algorithm"] for f in t.dtls_parameters["fingerprints"]} >= {
        "sha-256", "sha-1", "sha-384", "sha-512"}


async def test_worker_certificate_from_files_and_srtp_preference(tmp_path):
    from sfu.dtls import Certificate

    cert = Certificate.generate()
    cert.save(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    w = await sfu.create_worker(dtls_certificate_file=str(tmp_path / "cert.pem"),
                                dtls_private_key_file=str(tmp_path / "key.pem"))
    peer = AiortcPeer()
    try:
        assert w.dtls_fingerprints == cert.fingerprints
        r = await w.create_router([{"kind": "video", "mimeType": "video/VP8", "clockRate": 90000}])
        t = await r.create_webrtc_transport(listen_ip="127.0.0.1", srtp_crypto_suites=["AES_CM_128_HMAC_SHA1_80"])
        assert t.dtls_parameters["fingerprints"] == cert.fingerprints
        # We are the DTLS server (the peer says it is the client): our order decides.
        await t.connect(peer.dtls_parameters(role="client"))
        await peer.connect(t)
        from aiortc import RTCDtlsFingerprint, RTCDtlsParameters

        fps = [RTCDtlsFingerprint(algorithm=f["algorithm"], value=f["value"]) for f in t.dtls_parameters["fingerprints"]]
        peer.dtls._set_role("client")
        await asyncio.wait_for(peer.dtls.start(RTCDtlsParameters(fingerprints=fps, role="server")), 10)
        await wait_until(lambda: t.dtls_state == "connected")
        assert t.srtp_crypto_suite == "AES_CM_128_HMAC_SHA1_80"
    finally:
        await peer.close()
        w.close()
        await w.wait_closed()
    with pytest.raises(sfu.InvalidParametersError, match="together"):
        await sfu.create_worker(dtls_certificate_file=str(tmp_path / "cert.pem"))


async def test_unknown_ufrag_flood_does_not_drop_a_live_tuples_checks(worker, router):
    """A flood of STUN with unknown ufrags on a shared port (anyone can send
    it) is rate limited in the engine; a validated tuple's checks (consent)
    are all answered meanwhile. A smaller scale of 1 M requests in 10 s."""
    import socket
    import threading
    import time

    from aioice import stun

    server = await worker.create_webrtc_server(listen_ip="127.0.0.1")
    t = await router.create_webrtc_transport(webrtc_server=server)
    username = f"{t.ice_parameters['usernameFragment']}:peer"
    password = t.ice_parameters["password"]
    live = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    live.bind(("127.0.0.1", 0))
    live.settimeout(5.0)

    def check(tid: int) -> bool:
        req = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST,
                           transaction_id=tid.to_bytes(12, "big"))
        req.attributes["USERNAME"] = username
        req.attributes["PRIORITY"] = 1853824767
        req.attributes["ICE-CONTROLLING"] = 1
        req.attributes["USE-CANDIDATE"] = None
        req.add_message_integrity(password.encode())
        req.add_fingerprint()
        live.sendto(bytes(req), ("127.0.0.1", server.port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = live.recv(2048)
            except socket.timeout:
                return False
            if data[8:20] == tid.to_bytes(12, "big"):
                return True
        return False

    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, check, 1)  # the tuple is now validated (bound)
    await wait_until(lambda: t.ice_state in ("connected", "completed"))

    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.1", 0))
    junk = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    junk.attributes["USERNAME"] = "nosuchufrag:attacker"
    junk.attributes["PRIORITY"] = 1
    junk.add_message_integrity(b"whatever-password-123456")
    junk_bytes = bytes(junk)
    stop = threading.Event()
    sent = [0]

    def blast() -> None:  # bounded: 300,000 datagrams or 8 s
        end = time.monotonic() + 8
        while not stop.is_set() and sent[0] < 300_000 and time.monotonic() < end:
            try:
                flood.sendto(junk_bytes, ("127.0.0.1", server.port))
            except OSError:
                pass
            sent[0] += 1

    th = threading.Thread(target=blast, daemon=True)
    th.start()
    try:
        answered = 0
        for i in range(30):
            answered += await loop.run_in_executor(None, check, 100 + i)
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        th.join(10)
        flood.close()
        live.close()
    counters = await worker.get_counters()
    print(f"flood: {sent[0]} unknown-ufrag requests; {counters['drop_stun_unvalidated']} dropped by admission; "
          f"live checks answered {answered} of 30")
    assert sent[0] > 20_000 and counters["drop_stun_unvalidated"] > 0
    assert answered == 30
    assert (await t.get_stats())[0]["iceState"] in ("connected", "completed")
