"""Consumer.set_preferred_layers through a real worker and real UDP: a
three-encoding producer (simulcast), the viewer moved to the top encoding
and back, each switch at a keyframe of the new encoding, which the SFU asks
the publisher for (PLI naming that encoding's SSRC)."""

from __future__ import annotations

import pytest

import sfu
from conftest import build_rtp, settle

VP8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}
KEY, DELTA = b"\x10\x00", b"\x00\x01"
SSRCS = (0x5100, 0x5200, 0x5300)


def plis(peer) -> list[int]:
    return [int.from_bytes(d[8:12], "big") for d in peer.received
            if len(d) >= 12 and d[1] == 206 and d[0] & 0x1F == 1]


async def test_set_preferred_layers_moves_a_viewer_between_simulcast_encodings(router, peers):
    pub, sub = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tp.connect(ip="127.0.0.1", port=pub.port)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1")
    await tc.connect(ip="127.0.0.1", port=sub.port)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": s} for s in SSRCS]})
    consumer = await tc.consume(producer.id, router.rtp_capabilities)
    assert consumer.preferred_layers is None
    port = tp.tuple["localPort"]
    seq = [0, 0, 0]

    def send(layer: int, key: bool = False) -> None:
        seq[layer] += 1
        pub.send(build_rtp(96, seq[layer], 3000 * seq[layer], SSRCS[layer], (KEY if key else DELTA) + bytes(layer + 1)),
                 port)

    send(1)                                                       # every encoding is sending (an
    send(2)                                                       # encoder's silent one cannot be chosen)
    send(0, key=True)
    await sub.wait_for(1)
    assert [r.payload[-1:] for r in sub.rtp()] == [b"\x00"]      # the first encoding
    await consumer.set_preferred_layers(2)
    assert consumer.preferred_layers == {"spatialLayer": 2}
    for _ in range(20):                                           # the SFU asks for the top one's keyframe
        if SSRCS[2] in plis(pub):
            break
        await settle(0.05)
    assert SSRCS[2] in plis(pub)
    send(2)                                                       # not a keyframe: not yet
    send(0)
    send(2, key=True)                                             # the switch
    send(0)
    send(2)
    await sub.wait_for(4)
    await settle(0.1)
    got = sub.rtp()
    layers = [len(r.payload) - 2 for r in got]                    # the payload's length tells the encoding
    assert layers == [1, 1, 3, 3], layers                         # low, low, the top one's keyframe, top
    assert all((b.seq - a.seq) & 0xFFFF == 1 for a, b in zip(got, got[1:]))
    stats = (await consumer.get_stats())[0]
    assert stats["spatialLayer"] == 2
    await consumer.set_preferred_layers(7)                        # clamped to the top encoding
    assert (await consumer.get_stats())[0]["targetSpatialLayer"] == 2
    with pytest.raises(sfu.InvalidParametersError):
        await consumer.set_preferred_layers(-1)
