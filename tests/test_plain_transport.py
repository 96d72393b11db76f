"""Integration over real UDP sockets: a worker subprocess, plain transports,
and plain-RTP peers written independently of the engine."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

import sfu
from conftest import build_rtp, settle

OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}
VP8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}
# VP8 payload starts (RFC 7741): a keyframe's first packet and any other packet.
# A new consumer's video starts at a keyframe, so streams begin with one.
VP8_KEY = b"\x10\x00"
VP8_DELTA = b"\x00\x01"


async def publish(transport, audio_ssrc: int, video_ssrc: int, extensions=None):
    a = await transport.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": audio_ssrc}],
                                          "headerExtensions": extensions or []})
    v = await transport.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": video_ssrc}],
                                          "headerExtensions": extensions or []})
    return a, v


async def test_three_participants_receive_each_other_rewritten_in_order_and_complete(router, peers):
    caps = router.rtp_capabilities
    members = []
    for _ in range(3):
        peer = peers()
        t = await router.create_plain_transport(listen_ip="127.0.0.1")
        await t.connect(ip="127.0.0.1", port=peer.port)
        a_ssrc, v_ssrc = random.getrandbits(32), random.getrandbits(32)
        producers = await publish(t, a_ssrc, v_ssrc)
        members.append({"peer": peer, "transport": t, "ssrcs": (a_ssrc, v_ssrc), "producers": producers})

    consumers = {}  # (receiver index, producer id) -> consumer
    for i, m in enumerate(members):
        for j, other in enumerate(members):
            if i != j:
                for p in other["producers"]:
                    consumers[(i, p.id)] = await m["transport"].consume(p.id, caps)

    # Each member sends 40 audio and 60 video packets with recognisable payloads.
    sent = {}  # (member, kind) -> list of (seq, ts, payload)
    for rnd in range(20):
        for idx, m in enumerate(members):
            a_ssrc, v_ssrc = m["ssrcs"]
            port = m["transport"].tuple["localPort"]
            for kind, ssrc, pt, count in (("audio", a_ssrc, 111, 2), ("video", v_ssrc, 96, 3)):
                lst = sent.setdefault((idx, kind), [])
                for k in range(count):
                    seq = 1000 + len(lst)
                    ts = 5000 + rnd * 3000
                    head = b"" if kind == "audio" else (VP8_KEY if seq == 1000 else VP8_DELTA)
                    payload = head + f"{idx}-{kind}-{seq}-".encode() + os.urandom(200)
                    m["peer"].send(build_rtp(pt, seq, ts, ssrc, payload, marker=(k == count - 1)), port)
                    lst.append((seq, ts, payload))
        await asyncio.sleep(0.002)

    for m in members:
        await m["peer"].wait_for(2 * (40 + 60))
    await settle()

    for i, m in enumerate(members):
        got = m["peer"].rtp()
        assert len(got) == 2 * (40 + 60), f"member {i} received {len(got)} packets"
        by_ssrc: dict[int, list] = {}
        for r in got:
            by_ssrc.setdefault(r.ssrc, []).append(r)
        assert len(by_ssrc) == 4
        for j, other in enumerate(members):
            if i == j:
                continue
            for p in other["producers"]:
                c = consumers[(i, p.id)]
                ssrc = c.rtp_parameters["encodings"][0]["ssrc"]
                pt = c.rtp_parameters["codecs"][0]["payloadType"]
                stream = by_ssrc[ssrc]
                expected = sent[(j, p.kind)]
                assert len(stream) == len(expected)
                assert all(r.pt == pt for r in stream)
                seqs = [r.seq for r in stream]
                assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), "sequence not contiguous"
                assert [r.payload for r in stream] == [e[2] for e in expected]
                assert [r.ts for r in stream] == [e[1] for e in expected]
                assert ssrc not in (other["ssrcs"])  # rewritten, not the publisher's

    for (i, pid), c in consumers.items():
        stats = await c.get_stats()
        assert stats[0]["packetCount"] == (40 if c.kind == "audio" else 60)


async def test_consumer_pause_resume_keeps_sequence_contiguous(router, peers):
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    ts_ = await router.create_plain_transport(listen_ip="127.0.0.1")
    await ts_.connect(ip="127.0.0.1", port=sub.port)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 1234}]})
    consumer = await ts_.consume(producer.id, router.rtp_capabilities)
    port = tp.tuple["localPort"]

    def burst(start: int, n: int, ts: int) -> None:
        for k in range(n):
            pub.send(build_rtp(96, start + k, ts + k * 3000, 1234, b"x" * 100), port)

    burst(0, 10, 0)
    await sub.wait_for(10)
    await consumer.pause()
    burst(10, 10, 30000)
    await settle(0.1)
    assert sub.count() == 10
    await consumer.resume()
    burst(20, 10, 60000)
    await sub.wait_for(20)
    got = sub.rtp()
    assert len(got) == 20
    seqs = [r.seq for r in got]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    ts = [r.ts for r in got]
    assert all(b > a for a, b in zip(ts, ts[1:]))


async def test_producer_pause_stops_forwarding_and_consumer_sees_events(router, peers):
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    producer = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 77}]})
    consumer = await tc.consume(producer.id, router.rtp_capabilities)
    events = []
    consumer.on("producerpause", lambda: events.append("pause"))
    consumer.on("producerresume", lambda: events.append("resume"))
    await producer.pause()
    assert consumer.producer_paused
    for k in range(5):
        pub.send(build_rtp(111, k, k * 960, 77, b"a" * 50), tp.tuple["localPort"])
    await settle(0.1)
    assert sub.rtp() == []
    await producer.resume()
    for k in range(5, 10):
        pub.send(build_rtp(111, k, k * 960, 77, b"a" * 50), tp.tuple["localPort"])
    await sub.wait_for(5)
    assert len(sub.rtp()) == 5
    assert events == ["pause", "resume"]
    stats = await producer.get_stats()
    assert stats[0]["packetCount"] == 10


async def test_header_extension_ids_are_mapped_to_router_then_to_consumer(router, peers):
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    # The publisher uses id 7 for abs-send-time and id 9 for an extension the router doesn't know.
    producer = await tp.produce("video", {
        "codecs": [VP8], "encodings": [{"ssrc": 4242}],
        "headerExtensions": [
            {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 7},
            {"uri": "urn:example:unknown", "id": 9},
        ],
    })
    # The consumer wants abs-send-time on id 3.
    caps = router.rtp_capabilities
    for ext in caps["headerExtensions"]:
        if ext["uri"].endswith("abs-send-time"):
            ext["preferredId"] = 3
    caps["headerExtensions"] = [e for e in caps["headerExtensions"] if e["preferredId"] != 3 or e["uri"].endswith("abs-send-time")]
    consumer = await tc.consume(producer.id, caps)
    assert [e["id"] for e in consumer.rtp_parameters["headerExtensions"] if e["uri"].endswith("abs-send-time")] == [3]
    pub.send(build_rtp(96, 1, 1, 4242, VP8_KEY + b"payload", extensions=[(7, b"\x01\x02\x03"), (9, b"\xff")]),
             tp.tuple["localPort"])
    await sub.wait_for(1)
    (r,) = sub.rtp()
    # the unknown extension is dropped; the consumer's own MID (its id 1) is
    # added, and the transport's own transport-wide sequence number (id 5,
    # its first packet: 0)
    assert r.extensions == [(3, b"\x01\x02\x03"), (1, consumer.rtp_parameters["mid"].encode()), (5, b"\x00\x00")]
    assert r.payload == VP8_KEY + b"payload"


async def test_comedia_learns_remote_and_emits_tuple(router, peers):
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1", comedia=True)
    tuples = []
    tp.on("tuple", tuples.append)
    producer = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 99}]})
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    await tc.consume(producer.id, router.rtp_capabilities)
    # Consuming on the comedia transport itself: media flows back to the learnt address.
    tback = await tp.consume(producer.id, router.rtp_capabilities)
    pub.send(build_rtp(111, 1, 960, 99, b"hello"), tp.tuple["localPort"])
    await sub.wait_for(1)
    await pub.wait_for(1)
    for _ in range(50):
        if tuples:
            break
        await asyncio.sleep(0.01)
    assert tuples and tuples[0]["remotePort"] == pub.port and tuples[0]["remoteIp"] == "127.0.0.1"
    assert tp.tuple["remotePort"] == pub.port
    rtp_back = [d for d in pub.received if not 192 <= d[1] <= 223]
    assert read_ssrc(rtp_back[0]) == tback.rtp_parameters["encodings"][0]["ssrc"]


def read_ssrc(data: bytes) -> int:
    return int.from_bytes(data[8:12], "big")


async def test_rtcp_on_separate_port_without_mux(router, peers):
    peer, rtcp_peer = peers(), peers()
    t = await router.create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=False)
    assert t.rtcp_tuple is not None and t.rtcp_tuple["localPort"] != t.tuple["localPort"]
    with pytest.raises(sfu.InvalidParametersError, match="rtcp_port"):
        await t.connect(ip="127.0.0.1", port=peer.port)
    await t.connect(ip="127.0.0.1", port=peer.port, rtcp_port=rtcp_peer.port)
    # An RTCP receiver report (RR with no blocks) from the remote's RTCP port.
    rr = bytes([0x80, 201, 0, 1]) + (1234).to_bytes(4, "big")
    rtcp_peer.send(rr, t.rtcp_tuple["localPort"])
    # The same report from the RTP port is not the connected RTCP tuple: the
    # connect()ed socket never delivers it.
    peer.send(rr, t.rtcp_tuple["localPort"])
    for _ in range(50):
        stats = (await t.get_stats())[0]
        if stats["rtcpPacketsReceived"]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    stats = (await t.get_stats())[0]
    assert stats["rtcpPacketsReceived"] == 1
    assert stats["packetsDiscarded"] == 0


async def test_packets_from_unknown_source_and_garbage_are_counted_and_dropped(worker, router, peers):
    pub, sub, stranger = peers(), peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    producer = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 5}]})
    await tc.consume(producer.id, router.rtp_capabilities)
    port = tp.tuple["localPort"]
    stranger.send(build_rtp(111, 1, 1, 5, b"spoof"), port)            # wrong source
    pub.send(b"\x80\x6f\x00", port)                                   # truncated RTP
    pub.send(build_rtp(111, 2, 1, 6, b"who"), port)                   # unknown SSRC
    pub.send(build_rtp(50, 3, 1, 5, b"pt"), port)                     # unknown payload type
    pub.send(bytes([0x80 | 0x0F, 0x6F]) + b"\x00" * 10, port)         # CSRC count past the end
    pub.send(b"\xff" * 20, port)                                    # not RTP/RTCP/STUN/DTLS
    pub.send(build_rtp(111, 4, 1, 5, b"good"), port)
    await sub.wait_for(1)
    await settle(0.1)
    got = sub.rtp()
    assert [r.payload for r in got] == [b"good"]
    c = await worker.get_counters()
    # The stranger's packet: the transport's socket is connect()ed to its
    # remote, so the kernel already filtered it (it never counts as received).
    assert c["drop_unknown_source"] == 0 and c["rx_rtp"] == 5
    assert c["drop_rtp_malformed"] == 2
    assert c["drop_unknown_ssrc"] == 1
    assert c["drop_unknown_pt"] == 1
    assert c["rx_unknown"] == 1


async def test_two_routers_are_isolated(worker, peers):
    from conftest import MEDIA_CODECS

    r1 = await worker.create_router(MEDIA_CODECS)
    r2 = await worker.create_router(MEDIA_CODECS)
    pub = peers()
    t1 = await r1.create_plain_transport(listen_ip="127.0.0.1")
    await t1.connect(ip="127.0.0.1", port=pub.port)
    p1 = await t1.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 1}]})
    t2 = await r2.create_plain_transport(listen_ip="127.0.0.1")
    with pytest.raises(sfu.InvalidParametersError, match="not found"):
        await t2.consume(p1.id, r2.rtp_capabilities)
    assert not r2.can_consume(p1.id, r2.rtp_capabilities)
    assert r1.can_consume(p1.id, r1.rtp_capabilities)


async def test_consumer_uses_the_remote_payload_types(router, peers):
    """An SDP offerer (WHEP) has its own payload type numbers; the consumer
    adopts them and the engine rewrites the payload type per consumer."""
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 31}]})
    caps = {"codecs": [
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": 120,
         "rtcpFeedback": [{"type": "nack"}]},
        {"kind": "video", "mimeType": "video/rtx", "clockRate": 90000, "preferredPayloadType": 121,
         "parameters": {"apt": 120}},
    ], "headerExtensions": []}
    consumer = await tc.consume(producer.id, caps)
    codecs = consumer.rtp_parameters["codecs"]
    assert [(c["mimeType"], c["payloadType"]) for c in codecs] == [("video/VP8", 120), ("video/rtx", 121)]
    assert codecs[1]["parameters"]["apt"] == 120
    pub.send(build_rtp(96, 1, 1, 31, VP8_KEY + b"vp8"), tp.tuple["localPort"])
    await sub.wait_for(1)
    assert [r.pt for r in sub.rtp()] == [120]


async def test_new_video_consumer_starts_at_a_keyframe(router, peers):
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 51}]})
    await tc.consume(producer.id, router.rtp_capabilities)
    # The engine asks the publisher for a keyframe for the new viewer at once
    # (keyframe_policy.c), before any packet arrives.
    plis: list[bytes] = []
    for k in range(1, 4):  # the PLI, whatever other RTCP arrives first
        await pub.wait_for(k, rtcp=True)
        plis = [d for d in pub.received if len(d) >= 12 and d[1] == 206 and d[0] & 0x1F == 1]
        if plis:
            break
    assert plis and int.from_bytes(plis[0][8:12], "big") == 51
    port = tp.tuple["localPort"]
    for seq in range(5):                      # mid-stream: delta frames only
        pub.send(build_rtp(96, seq, seq * 3000, 51, VP8_DELTA + bytes([seq])), port)
    pub.send(build_rtp(96, 5, 15000, 51, VP8_KEY + b"key"), port)
    pub.send(build_rtp(96, 6, 18000, 51, VP8_DELTA + b"after"), port)
    await sub.wait_for(2)
    await settle(0.05)
    got = sub.rtp()
    assert [r.payload for r in got] == [VP8_KEY + b"key", VP8_DELTA + b"after"]
    assert (got[1].seq - got[0].seq) & 0xFFFF == 1


async def test_producer_without_ssrc_is_routed_by_mid_and_consumer_mid_is_its_own(router, peers):
    """mediasoup-client and browsers without a=ssrc lines name a stream by MID
    (and RID); each viewer's packets carry the viewer's MID, not the publisher's."""
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    with pytest.raises(sfu.InvalidParametersError, match=r"encodings\[0\]\.ssrc: required when"):
        await tp.produce("video", {"codecs": [VP8], "encodings": [{}]})
    producer = await tp.produce("video", {
        "mid": "pub-v", "codecs": [VP8], "encodings": [{}],
        "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 9}],
    })
    consumer = await tc.consume(producer.id, router.rtp_capabilities, mid="viewer-1")
    assert consumer.rtp_parameters["mid"] == "viewer-1"
    with pytest.raises(sfu.InvalidParametersError, match="mid: 1 to 16"):
        await tc.consume(producer.id, router.rtp_capabilities, mid="x" * 17)
    pub.send(build_rtp(96, 1, 1, 777, VP8_KEY + b"a", extensions=[(9, b"other")]), tp.tuple["localPort"])
    pub.send(build_rtp(96, 2, 2, 4242, VP8_KEY + b"b", extensions=[(9, b"pub-v")]), tp.tuple["localPort"])
    pub.send(build_rtp(96, 3, 3, 4242, VP8_KEY + b"c"), tp.tuple["localPort"])
    await sub.wait_for(2)
    got = sub.rtp()
    assert [r.payload for r in got] == [VP8_KEY + b"b", VP8_KEY + b"c"]
    # its own MID, and the transport's transport-wide sequence numbers (id 5)
    assert [r.extensions for r in got] == [[(1, b"viewer-1"), (5, n.to_bytes(2, "big"))] for n in range(len(got))]
    assert (await producer.get_stats())[0]["ssrc"] == 4242
