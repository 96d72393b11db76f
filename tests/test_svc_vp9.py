"""VP9 SVC consumers in the engine, in virtual time (sans-IO): a publisher
sends one VP9 stream with three spatial layers (K-SVC, L3T1: inter-layer
prediction on key pictures only, as Chromium's L3T3_KEY); a viewer's
bandwidth estimate (scripted with REMB) decides how many spatial layers its
consumer forwards (src/allocator.c over the per-layer rates that
src/producer_stream.c measures). Checked on the packets the viewer gets:
layers above the target are dropped at picture boundaries, the RTP marker
moves to the end of the highest layer forwarded, sequence numbers have no
gaps, and a climb waits for a key picture that the SFU asks for (issue 12).
"""

from __future__ import annotations

import struct

from sfu._fastpath import _testhooks as H
from test_bwe_allocation import remb

PUB = ("127.0.0.1", 5000)
VIEW = ("127.0.0.1", 6000)
SSRC = 0xB0
LAYER_BYTES = (420, 1250, 3300)   # per picture at 30 fps: ~100, 300, 800 kbit/s
FPS = 30


def descriptor(pid: int, sid: int, key: bool, begin: bool, end: bool, tl0: int) -> bytes:
    """RFC 9628 non-flexible descriptor: I, P, L, B, E (V on the key picture's
    first packet with a 3-layer SS)."""
    ss = key and sid == 0 and begin
    b0 = 0x80 | (0 if key else 0x40) | 0x20 | (0x08 if begin else 0) | (0x04 if end else 0) | (0x02 if ss else 0)
    layer = (0 << 5) | (sid << 1) | (1 if key and sid > 0 else 0)
    out = bytes([b0, 0x80 | (pid >> 8 & 0x7F), pid & 0xFF, layer, tl0 & 0xFF])
    if ss:
        out += bytes([(2 << 5) | 0x10]) + b"".join(struct.pack("!HH", 320 << s, 180 << s) for s in range(3))
    return out


class Rig:
    def __init__(self) -> None:
        e = self.e = H.SansIOEngine()
        self.s_pub, self.s_view = e.add_socket(-1), e.add_socket(-1)
        t_pub, self.t_view = e.add_transport(self.s_pub), e.add_transport(self.s_view)
        e.connect_transport(t_pub, PUB)
        e.connect_transport(self.t_view, VIEW)
        self.p = e.add_producer(t_pub, True, [(SSRC, 0)], {98: 103}, {}, codecs={103: "vp9"})
        e.set_producer_feedback(self.p, nack=True, clock_rate=90000)
        self.c = e.add_consumer(self.t_view, self.p, 0xC1, 0xC2, 90000, {103: 103}, {}, initial_seq=1)
        e.set_consumer_feedback(self.c, nack=True, rtx_pt=104)
        e.set_consumer_twcc(self.c, 5)   # numbered for an estimate; the viewer answers with REMB only
        self.now = 1000
        self.seq = 0
        self.pid = 0
        self.tl0 = 0
        self.key_wanted = True
        self.next_frame = self.now
        self.remb_bps = 5_000_000
        self.got: list[tuple[int, int, bool, bool]] = []   # (seq, sid, end of layer frame, marker)
        self.plis = 0
        self.before_packet = None   # called before each packet: (sid, first of its layer frame, key)

    def publish_picture(self) -> None:
        key = self.key_wanted
        self.key_wanted = False
        self.pid = (self.pid + 1) & 0x7FFF
        self.tl0 += 1
        ts = (self.now * 90) & 0xFFFFFFFF
        for sid, size in enumerate(LAYER_BYTES):
            size *= 2 if key else 1
            chunks = [min(1000, size - i) for i in range(0, size, 1000)]
            for k, n in enumerate(chunks):
                begin, end = k == 0, k == len(chunks) - 1
                if self.before_packet:
                    self.before_packet(sid, begin, key)
                self.seq += 1
                marker = end and sid == len(LAYER_BYTES) - 1
                pkt = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 98, self.seq & 0xFFFF, ts, SSRC)
                pkt += descriptor(self.pid, sid, key, begin, end, self.tl0) + bytes(n)
                self.e.receive(self.s_pub, PUB, pkt, self.now)

    def route(self) -> None:
        for _s, addr, d in self.e.take_outbox():
            if addr == PUB:
                if len(d) >= 12 and d[1] == 206 and d[0] & 0x1F == 1:
                    self.plis += 1
                    self.key_wanted = True
                continue
            if 192 <= d[1] <= 223 or d[8:12] != b"\x00\x00\x00\xc1":
                continue
            hl = 12 + 4 * (d[0] & 0x0F)
            if d[0] & 0x10:
                hl += 4 + 4 * struct.unpack("!H", d[hl + 2:hl + 4])[0]
            pl = d[hl:]
            sid = pl[3] >> 1 & 7
            self.got.append((struct.unpack("!H", d[2:4])[0], sid, bool(pl[0] & 0x04), bool(d[1] & 0x80)))

    def run(self, ms: int) -> None:
        end = self.now + ms
        while self.now < end:
            self.now += 5
            if self.now >= self.next_frame:
                self.next_frame += 1000 // FPS
                self.publish_picture()
            if self.now % 100 == 0:
                self.e.receive(self.s_view, VIEW, remb(self.remb_bps), self.now)
            self.e.tick(self.now)
            self.route()

    def window(self, ms: int) -> list[tuple[int, int, bool, bool]]:
        """Runs `ms` and returns what the viewer got meanwhile."""
        start = len(self.got)
        self.run(ms)
        return self.got[start:]


def check_stream(got, top: int) -> None:
    """Only layers up to `top`; the marker exactly on the end of each
    picture's layer `top`; sequence numbers without a gap."""
    assert got, "nothing forwarded"
    assert max(g[1] for g in got) == top, sorted({g[1] for g in got})
    for seq, sid, end, marker in got:
        assert marker == (end and sid == top), (seq, sid, end, marker)
    seqs = [g[0] for g in got]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))


def test_svc_consumer_forwards_the_spatial_layers_its_link_carries():
    rig = Rig()
    rig.run(3_000)
    stats = rig.e.producer_stats(rig.p)[0]
    rates = stats["spatialLayerBitrates"]
    print("\nper-layer rates (bit/s):", rates)
    assert len(rates) == 3 and rates[0] < rates[1] < rates[2]
    check_stream(rig.window(1_000), 2)                       # 5 Mbit/s: all three layers
    assert rig.e.consumer_stats(rig.c)["spatialLayer"] == 2

    rig.remb_bps = 650_000                                   # layers 0+1 (~400k) fit, 0+1+2 do not
    rig.run(2_000)
    check_stream(rig.window(2_000), 1)
    assert rig.e.consumer_stats(rig.c)["spatialLayer"] == 1

    rig.remb_bps = 150_000                                   # only layer 0
    rig.run(2_000)
    check_stream(rig.window(2_000), 0)

    plis = rig.plis
    rig.remb_bps = 5_000_000                                 # climbs back, a layer at a time, at key pictures
    rig.run(8_000)
    assert rig.plis > plis                                   # the climb asked for key pictures
    check_stream(rig.window(1_000), 2)
    st = rig.e.consumer_stats(rig.c)
    assert st["spatialLayer"] == 2 and st["svc"] and st["layerChanges"] >= 4


def test_svc_preferred_layer_caps_the_spatial_layers():
    rig = Rig()
    rig.e.set_consumer_target_stream(rig.c, 0)
    rig.run(3_000)
    check_stream(rig.window(1_000), 0)
    rig.e.set_consumer_target_stream(rig.c, 1)
    rig.run(2_000)
    check_stream(rig.window(1_000), 1)


def test_a_vp9_stream_without_layers_passes_whole():
    """Plain VP9 (no layer indices): one layer, every packet forwarded, the
    publisher's markers kept."""
    rig = Rig()
    sent = []

    def plain_picture() -> None:
        rig.seq += 1
        rig.pid = (rig.pid + 1) & 0x7FFF
        key = rig.key_wanted
        rig.key_wanted = False
        b0 = 0x80 | (0 if key else 0x40) | 0x08 | 0x04
        pkt = struct.pack("!BBHII", 0x80, 0x80 | 98, rig.seq, (rig.now * 90) & 0xFFFFFFFF, SSRC)
        pkt += bytes([b0, 0x80 | rig.pid >> 8, rig.pid & 0xFF]) + bytes(500)
        sent.append(rig.seq)
        rig.e.receive(rig.s_pub, PUB, pkt, rig.now)

    rig.publish_picture = plain_picture  # type: ignore[method-assign]
    rig.run(3_000)
    got = rig.got
    assert len(got) >= len(sent) - 1 and all(g[3] for g in got)



def test_a_consumer_resumed_inside_a_key_picture_starts_at_the_next_one():
    """A viewer resumed between layer 0 and layer 1 of a key picture: the
    upper layers' first packets also say P=0, B=1, but a decoder cannot start
    there (they predict from layer 0). The consumer waits, the SFU asks for
    a key picture, and the viewer starts at its layer 0. (The Chromium SVC
    test once waited 30 s for video this way: the consumer took a layer-1
    packet as its start, its VP9 filter dropped everything after, and no
    keyframe was asked for again.)"""
    rig = Rig()
    rig.e.set_consumer_paused(rig.c, True)
    rig.run(1_000)
    assert not rig.got
    plis = rig.plis
    resumed_at: list[int] = []

    def before_packet(sid: int, begin: bool, key: bool) -> None:
        if key and sid == 1 and begin and not resumed_at:
            rig.e.set_consumer_paused(rig.c, False)
            resumed_at.append(rig.seq + 1)

    rig.before_packet = before_packet
    rig.key_wanted = True
    rig.run(3_000)
    assert resumed_at, "no key picture was sent"
    assert rig.plis > plis, "the SFU did not ask for a key picture for the resumed viewer"
    assert rig.got, "the resumed viewer never got video"
    sent_seq, sid, _end, _marker = rig.got[0]
    assert sid == 0, "the viewer started inside a key picture"
    check_stream(rig.got, 2)
