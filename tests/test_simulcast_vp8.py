"""VP8 through a simulcast consumer in the engine (sans-IO, virtual time),
with real libvpx L1T3 captures as the two encodings (tests/fixtures,
made by capture_vpx.py): across a layer switch and with temporal layers
dropped, what the viewer gets has continuous RTP sequence numbers, picture
ids that go up by one per frame and a continuous TL0PICIDX (src/consumer.c
with src/vp8.c), so its decoder sees no missing frame."""

from __future__ import annotations

import struct

from sfu._fastpath import _codec_hooks as C
from sfu._fastpath import _testhooks as H
from test_vp8 import L1T3, L1T3_B

PUB = ("127.0.0.1", 5000)
VIEW = ("127.0.0.1", 6000)
SSRCS = (0xA0, 0xA1)


def repack(p: dict, ssrc: int) -> bytes:
    """A fixture packet as the publisher sends it on encoding `ssrc`."""
    return struct.pack("!BBHII", 0x80, (p["marker"] << 7) | 96, p["seq"], p["ts"], ssrc) + p["payload"]


class Rig:
    def __init__(self) -> None:
        e = self.e = H.SansIOEngine()
        self.s_pub, self.s_view = e.add_socket(-1), e.add_socket(-1)
        t_pub, t_view = e.add_transport(self.s_pub), e.add_transport(self.s_view)
        e.connect_transport(t_pub, PUB)
        e.connect_transport(t_view, VIEW)
        self.p = e.add_producer(t_pub, True, [(s, 0) for s in SSRCS], {96: 101}, {}, codecs={101: "vp8"})
        e.set_producer_feedback(self.p, nack=True, clock_rate=90000)
        self.c = e.add_consumer(t_view, self.p, 0xC1, 0, 90000, {101: 101}, {}, initial_seq=100)
        e.set_consumer_feedback(self.c, nack=True)
        e.set_consumer_target_stream(self.c, 0)
        self.now = 1000
        self.got: list[dict] = []
        self.plis: list[int] = []

    def send(self, layer: int, p: dict) -> None:
        self.now += 2
        self.e.receive(self.s_pub, PUB, repack(p, SSRCS[layer]), self.now)
        self.e.tick(self.now)
        for _s, addr, d in self.e.take_outbox():
            if addr == PUB and d[1] == 206 and d[0] & 0x1F == 1:
                self.plis.append(struct.unpack("!I", d[8:12])[0])
            elif addr == VIEW and not 192 <= d[1] <= 223:
                r = H.parse_rtp(d)
                r["vp8"] = C.vp8_parse(r["payload"])
                self.got.append(r)


def check_continuous(got: list[dict]) -> None:
    seqs = [r["sequence_number"] for r in got]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), seqs
    assert {r["ssrc"] for r in got} == {0xC1}
    pids = [r["vp8"]["picture_id"] for r in got]
    frame_pids = [b for a, b in zip([None] + pids, pids) if a != b]
    steps = {(b - a) & 0x7FFF for a, b in zip(frame_pids, frame_pids[1:])}
    assert steps == {1}, frame_pids
    tl0 = [r["vp8"]["tl0picidx"] for r in got if r["vp8"]["tid"] == 0 and r["vp8"]["start_of_partition"]]
    tl0_frames = [b for a, b in zip([None] + tl0, tl0) if a != b]
    assert {(b - a) & 0xFF for a, b in zip(tl0_frames, tl0_frames[1:])} == {1}, tl0_frames


def test_a_switch_between_two_real_encodings_keeps_picture_ids_and_tl0picidx_continuous():
    r = Rig()
    n = min(len(L1T3), len(L1T3_B))
    k = 0
    while k < n // 3:                                  # encoding 0 flows (from its first keyframe)
        r.send(0, L1T3[k])
        r.send(1, L1T3_B[k])
        k += 1
    before = len(r.got)
    assert before > 10
    r.e.set_consumer_target_stream(r.c, 1)
    while k < n and r.e.consumer_stats(r.c)["spatialLayer"] != 1:
        r.send(0, L1T3[k])
        r.send(1, L1T3_B[k])
        k += 1
    assert r.e.consumer_stats(r.c)["spatialLayer"] == 1, "no keyframe of encoding 1 in the capture"
    assert SSRCS[1] in r.plis
    for j in range(k, n):
        r.send(0, L1T3[j])
        r.send(1, L1T3_B[j])
    assert len(r.got) > before + 10
    # the input picture ids jump (B's start near 32740 and wrap); the output's do not
    check_continuous(r.got)


def test_temporal_layers_above_the_wanted_one_are_dropped_with_numbers_continuous():
    r = Rig()
    half = len(L1T3) // 2
    for p in L1T3[:half]:
        r.send(0, p)
    all_layers = len(r.got)
    assert {g["vp8"]["tid"] for g in r.got} == {0, 1, 2}
    r.e.set_consumer_temporal_layer(r.c, 0)
    assert r.e.consumer_stats(r.c)["preferredTemporalLayer"] == 0
    for p in L1T3[half:]:
        r.send(0, p)
    low = r.got[all_layers:]
    assert low and {g["vp8"]["tid"] for g in low} == {0}
    assert len(low) < (len(L1T3) - half) / 2         # T1 and T2 frames are gone (3 of 4 frames in L1T3)
    check_continuous(r.got)
