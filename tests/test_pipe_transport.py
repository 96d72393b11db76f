"""Pipe transports (Router.pipe_to_router) between routers of two workers.

Real workers, real UDP on 127.0.0.1: plain-RTP peers (conftest's, written
with `struct`) check what crosses a pipe packet by packet, and aiortc
(driven through its ORTC objects) publishes on worker 1 and decodes on
worker 2.
"""

from __future__ import annotations

import asyncio
import math
import os
import struct

import pytest

import sfu
from conftest import MEDIA_CODECS, build_rtp, read_rtp, settle

VP8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}
OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}
VP8_KEY = b"\x10\x00"    # VP8 descriptor (S=1) + a keyframe's payload header
VP8_DELTA = b"\x00\x01"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


@pytest.fixture
async def two_routers():
    """Router A on worker 1, router B on worker 2."""
    w1, w2 = await sfu.create_worker(), await sfu.create_worker()
    try:
        yield await w1.create_router(MEDIA_CODECS), await w2.create_router(MEDIA_CODECS)
    finally:
        for w in (w1, w2):
            w.close()
            await asyncio.wait_for(w.wait_closed(), 5)


async def plain(router, peer):
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    await t.connect(ip="127.0.0.1", port=peer.port)
    return t


def pli(media_ssrc: int, sender_ssrc: int = 0x5EED) -> bytes:
    return struct.pack("!BBHII", 0x81, 206, 2, sender_ssrc, media_ssrc)


def plis_for(peer, ssrc: int) -> int:
    """PLIs (PSFB fmt 1) naming `ssrc` in the RTCP the peer received."""
    n = 0
    for d in peer.received:
        pos = 0
        while len(d) >= 2 and 192 <= d[1] <= 223 and pos + 12 <= len(d):
            first, pt, length = struct.unpack_from("!BBH", d, pos)
            if pt == 206 and first & 0x1F == 1 and struct.unpack_from("!I", d, pos + 8)[0] == ssrc:
                n += 1
            pos += 4 * (length + 1)
    return n


async def test_pipe_carries_every_encoding_with_its_own_ssrc_and_contiguous_sequence(two_routers, peers):
    """The source end of a pipe, connected to a plain peer instead of router B:
    what crosses a pipe, packet by packet; and a PLI sent back for one
    encoding reaches the publisher for that encoding."""
    ra, _ = two_routers
    pub, far = peers(), peers()
    tp = await plain(ra, pub)
    mid_id = 4
    producer = await tp.produce("video", {
        "codecs": [VP8], "mid": "v0",
        "headerExtensions": [{"uri": MID_URI, "id": mid_id}],
        "encodings": [{"ssrc": 1111, "scalabilityMode": "L1T3"}, {"ssrc": 2222}, {"ssrc": 3333}]})
    pipe = await ra.create_pipe_transport()
    await pipe.connect(ip="127.0.0.1", port=far.port)
    pc = await pipe.consume(producer.id)
    assert isinstance(pc, sfu.PipeConsumer) and pc.type == "pipe" and pc.kind == "video"
    params = pc.rtp_parameters
    ssrcs = [e["ssrc"] for e in params["encodings"]]
    assert ssrcs == [ssrcs[0], ssrcs[0] + 1, ssrcs[0] + 2] and not set(ssrcs) & {1111, 2222, 3333}
    assert params["encodings"][0].get("scalabilityMode") == "L1T3"
    assert all("rtx" not in e for e in params["encodings"])
    assert all(not c["mimeType"].lower().endswith("/rtx") for c in params["codecs"])
    assert {(f["type"], f.get("parameter")) for f in params["codecs"][0]["rtcpFeedback"]} <= {
        ("nack", "pli"), ("ccm", "fir")}
    assert MID_URI not in {e["uri"] for e in params["headerExtensions"]} and "mid" not in params
    router_pt = params["codecs"][0]["payloadType"]

    sent: dict[int, list[bytes]] = {}
    port = tp.tuple["localPort"]
    for k in range(60):
        for n, ssrc in enumerate((1111, 2222, 3333)):
            payload = (VP8_KEY if k == 0 else VP8_DELTA) + f"{n}-{k}-".encode() + os.urandom(60)
            pub.send(build_rtp(96, 500 * (n + 1) + k, 3000 * k, ssrc, payload, marker=True,
                               extensions=[(mid_id, b"v0")]), port)
            sent.setdefault(n, []).append(payload)
        await asyncio.sleep(0.002)
    await far.wait_for(180)
    await settle()
    by_ssrc: dict[int, list] = {}
    for r in far.rtp():
        by_ssrc.setdefault(r.ssrc, []).append(r)
    assert sorted(by_ssrc) == sorted(ssrcs)
    for n, ssrc in enumerate(ssrcs):
        stream = by_ssrc[ssrc]
        assert [r.payload for r in stream] == sent[n], f"encoding {n}: payloads differ or missing"
        seqs = [r.seq for r in stream]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), f"encoding {n}: seq gap"
        assert [(r.ts - stream[0].ts) & 0xFFFFFFFF for r in stream] == [3000 * k for k in range(60)]
        assert all(r.pt == router_pt for r in stream)
        assert not any(val == b"v0" for r in stream for _, val in r.extensions), "the MID crossed the pipe"
    stats = await pc.get_stats()
    assert [s["ssrc"] for s in stats] == ssrcs and all(s["packetCount"] == 60 for s in stats)

    # a keyframe request for the second encoding, from the far end of the pipe
    await settle(0.6)  # past the keyframe request throttle of the start
    before = plis_for(pub, 2222)
    far.send(pli(ssrcs[1]), pipe.tuple["localPort"])
    for _ in range(100):
        if plis_for(pub, 2222) > before:
            break
        await asyncio.sleep(0.02)
    assert plis_for(pub, 2222) > before, "the PLI did not reach the publisher's second encoding"


async def test_a_vp9_svc_stream_crosses_the_pipe_whole(two_routers, peers):
    """One VP9 stream with three spatial layers: the pipe consumer forwards
    every layer of every picture (no SVC layer filter), in order."""
    from test_svc_vp9 import descriptor

    ra, _ = two_routers
    vp9_codecs = MEDIA_CODECS + [{"kind": "video", "mimeType": "video/VP9", "clockRate": 90000}]
    router = await ra.worker.create_router(vp9_codecs)
    pub, far = peers(), peers()
    tp = await plain(router, pub)
    producer = await tp.produce("video", {"codecs": [{"mimeType": "video/VP9", "payloadType": 98,
                                                      "clockRate": 90000}], "encodings": [{"ssrc": 909}]})
    pipe = await router.create_pipe_transport()
    await pipe.connect(ip="127.0.0.1", port=far.port)
    pc = await pipe.consume(producer.id)
    sent = []
    seq = 0
    for pic in range(12):
        for sid in range(3):
            payload = descriptor(pic, sid, key=pic == 0, begin=True, end=True, tl0=pic) + f"{pic}/{sid}".encode()
            pub.send(build_rtp(98, seq, 3000 * pic, 909, payload, marker=sid == 2), tp.tuple["localPort"])
            sent.append(payload)
            seq += 1
        await asyncio.sleep(0.003)
    await far.wait_for(len(sent))
    got = far.rtp()
    assert [r.payload for r in got] == sent
    assert {r.ssrc for r in got} == {pc.rtp_parameters["encodings"][0]["ssrc"]}
    seqs = [r.seq for r in got]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    assert [r.marker for r in got] == [sid == 2 for _ in range(12) for sid in range(3)]


async def test_simulcast_survives_the_pipe_and_viewers_on_b_pick_layers(two_routers, peers):
    ra, rb = two_routers
    pub, v_low, v_high = peers(), peers(), peers()
    tp = await plain(ra, pub)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 10}, {"ssrc": 20}]})
    pipe_consumer, pipe_producer = await ra.pipe_to_router(producer.id, rb)
    assert pipe_producer.id == producer.id and pipe_producer.type == "simulcast"
    assert rb.get_producer(producer.id) is pipe_producer
    t_low, t_high = await plain(rb, v_low), await plain(rb, v_high)
    c_low = await t_low.consume(producer.id, rb.rtp_capabilities)
    c_high = await t_high.consume(producer.id, rb.rtp_capabilities)
    await c_low.set_preferred_layers(0)
    await c_high.set_preferred_layers(1)
    port = tp.tuple["localPort"]
    for k in range(80):
        for n, ssrc in enumerate((10, 20)):
            head = VP8_KEY if k % 20 == 0 else VP8_DELTA
            pub.send(build_rtp(96, 100 + k, 3000 * k, ssrc, head + f"layer{n}-{k}".encode(), True), port)
        await asyncio.sleep(0.004)
    await v_high.wait_for(40)
    await settle(0.1)
    low = [r.payload[2:].decode() for r in v_low.rtp()]
    high = [r.payload[2:].decode() for r in v_high.rtp()]
    assert low and all(p.startswith("layer0-") for p in low)
    assert high and high[-1].startswith("layer1-"), high[-5:]
    for recs in (v_low.rtp(), v_high.rtp()):
        seqs = [r.seq for r in recs]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
        assert len({r.ssrc for r in recs}) == 1
    # the pipe producer on B received both encodings
    pstats = await pipe_producer.get_stats()
    assert [s["ssrc"] for s in pstats] == [e["ssrc"] for e in pipe_consumer.rtp_parameters["encodings"]]
    assert all(s["packetCount"] > 0 for s in pstats)


async def test_pipe_pair_is_shared_and_errors_are_clear(two_routers, peers):
    ra, rb = two_routers
    pub_a, pub_b = peers(), peers()
    ta, tb = await plain(ra, pub_a), await plain(rb, pub_b)
    audio = await ta.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 1}]})
    video = await ta.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 2}]})
    from_b = await tb.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 3}]})
    n_a, n_b = len(ra.transports), len(rb.transports)
    r1, r2 = await asyncio.gather(ra.pipe_to_router(audio.id, rb), ra.pipe_to_router(video.id, rb))
    assert isinstance(r1, sfu.PipeToRouterResult)
    assert r1.pipe_consumer.transport is r2.pipe_consumer.transport  # one pair, made once
    assert r1.pipe_producer.transport is r2.pipe_producer.transport
    assert isinstance(r1.pipe_consumer.transport, sfu.PipeTransport)
    back_consumer, back_producer = await rb.pipe_to_router(from_b.id, ra)  # the other way: the same pair
    assert back_consumer.transport is r1.pipe_producer.transport
    assert back_producer.transport is r1.pipe_consumer.transport
    assert (len(ra.transports), len(rb.transports)) == (n_a + 1, n_b + 1)

    with pytest.raises(sfu.InvalidStateError, match="already"):
        await ra.pipe_to_router(audio.id, rb)
    raced = await ta.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 4}]})
    outcomes = await asyncio.gather(*(ra.pipe_to_router(raced.id, rb) for _ in range(3)), return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, sfu.PipeToRouterResult)]
    assert len(won) == 1 and rb.get_producer(raced.id) is won[0].pipe_producer
    assert all(isinstance(o, sfu.InvalidStateError) for o in outcomes if o not in won), outcomes
    assert len(r1.pipe_consumer.transport.consumers) == 3  # the losers' pipe consumers are gone
    with pytest.raises(sfu.InvalidParametersError, match="own router"):
        await ra.pipe_to_router(audio.id, ra)
    with pytest.raises(sfu.InvalidParametersError, match="not found"):
        await ra.pipe_to_router("no-such-producer", rb)
    with pytest.raises(sfu.InvalidParametersError, match="Router"):
        await ra.pipe_to_router(audio.id, "router-b")  # type: ignore[arg-type]
    with pytest.raises(sfu.InvalidParametersError):
        await r1.pipe_consumer.transport.consume(audio.id, rb.rtp_capabilities)
    with pytest.raises(sfu.UnsupportedError):
        await r1.pipe_consumer.set_preferred_layers(0)

    # closing one pipe transport closes its pair, its consumers and piped
    # producers; the next pipe_to_router makes a new pair
    r1.pipe_consumer.transport.close()
    assert r1.pipe_producer.transport.closed
    assert r1.pipe_producer.closed and r2.pipe_producer.closed and back_producer.closed
    assert rb.get_producer(audio.id) is None
    r3 = await ra.pipe_to_router(audio.id, rb)
    assert r3.pipe_consumer.transport is not r1.pipe_consumer.transport

    rc = await (await sfu.create_worker()).create_router(MEDIA_CODECS)
    rc.worker.close()
    with pytest.raises(sfu.InvalidStateError, match="closed"):
        await ra.pipe_to_router(video.id, rc)
    rb.close()
    assert r3.pipe_consumer.closed  # its transport closed with the pair
    with pytest.raises(sfu.InvalidStateError, match="closed"):
        await ra.pipe_to_router(video.id, rb)


async def test_pause_resume_and_close_are_mirrored(two_routers, peers):
    ra, rb = two_routers
    pub, viewer = peers(), peers()
    tp = await plain(ra, pub)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 77}]}, paused=True)
    pipe_consumer, pipe_producer = await ra.pipe_to_router(producer.id, rb)
    assert pipe_producer.paused  # created paused, as the source
    tv = await plain(rb, viewer)
    consumer = await tv.consume(producer.id, rb.rtp_capabilities)
    events: list[str] = []
    for name in ("producerpause", "producerresume", "producerclose"):
        consumer.on(name, lambda name=name: events.append(name))
    port = tp.tuple["localPort"]
    seq = [0]

    def burst(n: int) -> None:
        for _ in range(n):
            k = seq[0]
            seq[0] += 1
            pub.send(build_rtp(96, k, 3000 * k, 77, (VP8_KEY if k % 10 == 0 else VP8_DELTA) + b"x" * 50), port)

    burst(10)
    await settle(0.2)
    assert viewer.count() == 0
    await producer.resume()
    for _ in range(50):
        if not pipe_producer.paused:
            break
        await asyncio.sleep(0.01)
    assert not pipe_producer.paused and events == ["producerresume"]
    burst(20)
    await viewer.wait_for(20)
    assert viewer.count() == 20
    await producer.pause()
    for _ in range(50):
        if pipe_producer.paused:
            break
        await asyncio.sleep(0.01)
    assert pipe_producer.paused and events[-1] == "producerpause"
    burst(10)
    await settle(0.2)
    assert viewer.count() == 20
    await producer.resume()
    await asyncio.sleep(0.1)
    burst(20)
    await viewer.wait_for(40)
    seqs = [r.seq for r in viewer.rtp()]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))

    # the source producer closed: the piped one and its consumers close
    producer.close()
    await settle(0.05)
    assert pipe_consumer.closed and pipe_producer.closed and consumer.closed
    assert events[-1] == "producerclose" and rb.get_producer(producer.id) is None

    # the pipe consumer closed: the piped producer closes; and the other way
    p2 = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 78}]})
    pc2, pp2 = await ra.pipe_to_router(p2.id, rb)
    pc2.close()
    assert pp2.closed and rb.get_producer(p2.id) is None and not p2.closed
    pc3, pp3 = await ra.pipe_to_router(p2.id, rb)  # may be piped again
    pp3.close()
    assert pc3.closed and not p2.closed


async def test_an_srtp_pipe_carries_media_encrypted(two_routers, peers):
    ra, rb = two_routers
    pub, viewer = peers(), peers()
    tp = await plain(ra, pub)
    producer = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 6}]})
    pipe_consumer, _ = await ra.pipe_to_router(producer.id, rb, enable_srtp=True)
    assert pipe_consumer.transport.srtp_parameters is not None
    consumer = await (await plain(rb, viewer)).consume(producer.id, rb.rtp_capabilities)
    for k in range(30):
        pub.send(build_rtp(111, k, 960 * k, 6, bytes([k]) * 40), tp.tuple["localPort"])
    await viewer.wait_for(30)
    assert [r.payload for r in viewer.rtp()] == [bytes([k]) * 40 for k in range(30)]
    assert {r.ssrc for r in viewer.rtp()} == {consumer.rtp_parameters["encodings"][0]["ssrc"]}


async def test_routers_of_one_worker_pipe_too(worker, peers):
    ra, rb = await worker.create_router(MEDIA_CODECS), await worker.create_router(MEDIA_CODECS)
    pub, viewer = peers(), peers()
    tp = await plain(ra, pub)
    producer = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 5}]})
    await ra.pipe_to_router(producer.id, rb)
    consumer = await (await plain(rb, viewer)).consume(producer.id, rb.rtp_capabilities)
    for k in range(30):
        pub.send(build_rtp(111, k, 960 * k, 5, bytes([k]) * 40), tp.tuple["localPort"])
    await viewer.wait_for(30)
    got = viewer.rtp()
    assert [r.payload for r in got] == [bytes([k]) * 40 for k in range(30)]
    assert {r.ssrc for r in got} == {consumer.rtp_parameters["encodings"][0]["ssrc"]}


# -- aiortc: real media from worker 1 to a viewer on worker 2 ---------------

aiortc = pytest.importorskip("aiortc")
from aiortc import RTCRtpReceiver, RTCRtpSender  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack  # noqa: E402
from aiortc.rtcrtpparameters import (  # noqa: E402
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpEncodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack  # noqa: E402

from aiortc_peer import AiortcPeer, pin_loopback, wait_until  # noqa: E402


class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone (aiortc's AudioStreamTrack paced, with samples in it)."""

    async def recv(self):  # type: ignore[override]
        frame = await super().recv()
        samples = frame.samples
        start = frame.pts
        data = bytearray()
        for i in range(samples):
            v = int(8000 * math.sin(2 * math.pi * 440 * (start + i) / frame.sample_rate))
            data += struct.pack("<h", v)
        frame.planes[0].update(bytes(data))
        return frame


async def test_aiortc_publisher_on_worker_1_viewer_on_worker_2_through_the_pipe(two_routers, monkeypatch):
    pin_loopback(monkeypatch)
    ra, rb = two_routers
    send_t = await ra.create_webrtc_transport(listen_ip="127.0.0.1")
    recv_t = await rb.create_webrtc_transport(listen_ip="127.0.0.1")
    pub, sub = AiortcPeer(), AiortcPeer()
    try:
        await send_t.connect(pub.dtls_parameters())
        await recv_t.connect(sub.dtls_parameters())
        await asyncio.gather(pub.connect(send_t), sub.connect(recv_t))
        await asyncio.gather(pub.start_dtls(send_t), sub.start_dtls(recv_t))
        await wait_until(lambda: send_t.dtls_state == "connected" and recv_t.dtls_state == "connected")

        v_sender = RTCRtpSender(VideoStreamTrack(), pub.dtls)
        a_sender = RTCRtpSender(ToneTrack(), pub.dtls)
        video = await send_t.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": v_sender._ssrc}]})
        audio = await send_t.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": a_sender._ssrc}]})
        _, pipe_video = await ra.pipe_to_router(video.id, rb)
        _, pipe_audio = await ra.pipe_to_router(audio.id, rb)
        v_cons = await recv_t.consume(video.id, rb.rtp_capabilities)
        a_cons = await recv_t.consume(audio.id, rb.rtp_capabilities)

        receivers = {}
        for kind, cons, codec in (("video", v_cons, ("video/VP8", 90000, None)),
                                  ("audio", a_cons, ("audio/opus", 48000, 2))):
            pt = cons.rtp_parameters["codecs"][0]["payloadType"]
            r = RTCRtpReceiver(kind, sub.dtls)
            r._track = RemoteStreamTrack(kind=kind)
            r._set_rtcp_ssrc(0x1000 + len(receivers))  # what RTCPeerConnection does: its RTCP sender SSRC
            await r.receive(RTCRtpReceiveParameters(
                codecs=[RTCRtpCodecParameters(mimeType=codec[0], clockRate=codec[1], channels=codec[2],
                                              payloadType=pt)],
                encodings=[RTCRtpDecodingParameters(ssrc=cons.rtp_parameters["encodings"][0]["ssrc"],
                                                    payloadType=pt)],
                rtcp=RTCRtcpParameters(cname="viewer", mux=True)))
            receivers[kind] = r
        await v_sender.send(RTCRtpSendParameters(
            codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)],
            encodings=[RTCRtpEncodingParameters(ssrc=v_sender._ssrc, payloadType=96)],
            rtcp=RTCRtcpParameters(cname="publisher", mux=True)))
        await a_sender.send(RTCRtpSendParameters(
            codecs=[RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)],
            encodings=[RTCRtpEncodingParameters(ssrc=a_sender._ssrc, payloadType=111)],
            rtcp=RTCRtcpParameters(cname="publisher", mux=True)))

        # video: decoded frames of the publisher's size
        frames = 0
        while frames < 30:
            frame = await asyncio.wait_for(receivers["video"].track.recv(), 15)
            assert (frame.width, frame.height) == (640, 480)
            frames += 1
        # audio: decoded Opus carrying the tone (not silence)
        loud = 0
        for _ in range(50):
            aframe = await asyncio.wait_for(receivers["audio"].track.recv(), 10)
            pcm = aframe.to_ndarray()
            loud += int(abs(pcm).max() > 2000)
        assert loud >= 25, f"{loud} of 50 audio frames carried the tone"

        # a keyframe request of the viewer on B reaches the publisher on A
        keyframes_asked = []
        orig = v_sender._send_keyframe
        v_sender._send_keyframe = lambda: (keyframes_asked.append(1), orig())  # type: ignore[method-assign]
        await asyncio.sleep(1.0)  # past the throttle of the start's requests
        before_pipe = (await pipe_video.get_stats())[0]["keyframeRequests"]
        before_src = (await video.get_stats())[0]["keyframeRequests"]
        asked = len(keyframes_asked)
        await receivers["video"]._send_rtcp_pli(v_cons.rtp_parameters["encodings"][0]["ssrc"])
        await wait_until(lambda: len(keyframes_asked) > asked, 5)
        assert (await v_cons.get_stats())[0]["pliCount"] >= 1
        assert (await pipe_video.get_stats())[0]["keyframeRequests"] > before_pipe
        assert (await video.get_stats())[0]["keyframeRequests"] > before_src

        # pause on A pauses B's piped producer; resume brings frames back
        await video.pause()
        await wait_until(lambda: pipe_video.paused and v_cons.producer_paused, 5)
        await video.resume()
        await wait_until(lambda: not pipe_video.paused, 5)
        for _ in range(10):
            await asyncio.wait_for(receivers["video"].track.recv(), 15)

        # the publisher's producers close: B's close with them
        video.close()
        audio.close()
        await wait_until(lambda: pipe_video.closed and pipe_audio.closed and v_cons.closed and a_cons.closed, 5)
        for s in (v_sender, a_sender):
            await s.stop()
        for r in receivers.values():
            await r.stop()
    finally:
        await pub.close()
        await sub.close()


def test_bench_pipe_quick_runs_and_times_both_paths(tmp_path):
    """benchmarks/bench_pipe.py --quick (2 s points): both viewers got the
    probe and the table has the hop's figures (not asserted: a benchmark)."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_json = tmp_path / "pipe.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_pipe", "--quick", "--json", str(out_json)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "hop p50 us" in proc.stdout
    results = json.loads(out_json.read_text())["results"]
    assert [r["load_streams"] for r in results] == [0, 4]
    for r in results:
        assert r["recv_a"] >= 0.95 * r["probe_sent"] and r["recv_b"] >= 0.95 * r["probe_sent"]
        assert r["hop_p50_us"] is not None


def test_sfu_bench_room_spread_over_two_workers_keeps_simulcast(tmp_path):
    """sfu-bench --target embedded --workers 2: participants alternate
    between two workers' routers, every producer piped to the other; with
    simulcast publishers and viewers asking layers 2,1,0, every viewer (half
    of them across a pipe) gets the layer it asked for, nothing lost."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_json = tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "--target", "embedded", "--transport", "plain",
         "--participants", "4", "--duration", "3", "--workers", "2", "--simulcast", "--viewer-layers", "2,1,0",
         "--vp8-picture-id", "--no-wait-idle", "--quiet", "--json", str(out_json), "--markdown", ""],
        cwd=root, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (r,) = json.loads(out_json.read_text())["results"]
    sc = r["simulcast"]
    assert sc["producer_streams_receiving"] == [3, 3, 3, 3]
    assert sc["consumers"] == 12 and sc["consumers_as_asked"] == 12
    for s in sc["viewer_streams"]:
        assert max(s["layer_packets"]) >= 0.9 * sum(s["layer_packets"]), s
    assert r["seq_loss_pct"] < 2.0
