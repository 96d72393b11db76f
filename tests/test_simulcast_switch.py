"""A consumer of a simulcast producer moves between its encodings (spatial
layers) at a keyframe of the new one (sans-IO, virtual time): the engine
asks the publisher for that keyframe, keeps forwarding the old layer until
it arrives, then switches with the consumer's sequence numbers continuous
and its timestamps moving forward (src/consumer.c, src/keyframe_policy.c)."""

from __future__ import annotations

import struct

from sfu._fastpath import _testhooks as H

PUB = ("127.0.0.1", 5000)
VIEW = ("127.0.0.1", 6000)
LAYERS = (0xA0, 0xA1, 0xA2)  # low, mid, high (mediasoup-client's order)
KEY, DELTA = b"\x10\x00key", b"\x00\x01delta"  # VP8: S=1, P=0 / P=1


def pkt(layer: int, seq: int, key: bool = False) -> bytes:
    # each layer has its own sequence and timestamp base, as an encoder's do
    base_seq, base_ts = (1000, 7000, 40000)[layer], (5, 900000, 2**31)[layer]
    return struct.pack("!BBHII", 0x80, 96, (base_seq + seq) & 0xFFFF, (base_ts + 3000 * seq) & 0xFFFFFFFF,
                       LAYERS[layer]) + (KEY if key else DELTA)


class Rig:
    def __init__(self) -> None:
        e = self.e = H.SansIOEngine()
        self.s_pub, self.s_view = e.add_socket(-1), e.add_socket(-1)
        t_pub, t_view = e.add_transport(self.s_pub), e.add_transport(self.s_view)
        e.connect_transport(t_pub, PUB)
        e.connect_transport(t_view, VIEW)
        self.p = e.add_producer(t_pub, True, [(s, 0) for s in LAYERS], {96: 101}, {}, codecs={101: "vp8"})
        e.set_producer_feedback(self.p, nack=True, clock_rate=90000)
        self.c = e.add_consumer(t_view, self.p, 0xC1, 0, 90000, {101: 101}, {}, initial_seq=500)
        e.set_consumer_feedback(self.c, nack=True)
        e.set_consumer_target_stream(self.c, 0)  # the first encoding (the default is the top one)
        self.now = 1000
        # the upper encodings are sending (a silent one cannot be switched to)
        for layer in (1, 2):
            e.receive(self.s_pub, PUB, pkt(layer, -1), self.now)

    def target(self, layer: int) -> None:
        """The preferred layer; the allocation applies it at the next tick."""
        self.e.set_consumer_target_stream(self.c, layer)
        self.e.tick(self.now)

    def send(self, layer: int, seq: int, key: bool = False) -> list[bytes]:
        """What the viewer gets for one publisher packet (and the PLIs it caused)."""
        self.now += 10
        self.e.receive(self.s_pub, PUB, pkt(layer, seq, key), self.now)
        self.e.tick(self.now)
        return self.out()

    def out(self) -> list[bytes]:
        self.last = self.e.take_outbox()
        return [d for _, a, d in self.last if a == VIEW and not 192 <= d[1] <= 223]

    def plis(self) -> list[int]:
        return [struct.unpack("!I", d[8:12])[0] for _, a, d in self.last
                if a == PUB and d[1] == 206 and d[0] & 0x1F == 1]


def hdr(d: bytes) -> tuple[int, int, int]:
    _, _, seq, ts, ssrc = struct.unpack("!BBHII", d[:12])
    return seq, ts, ssrc


def test_the_consumer_switches_layer_at_a_keyframe_of_the_new_one_with_continuous_numbers():
    r = Rig()
    got = [d for k in range(5) for d in r.send(0, k, key=k == 0)]  # layer 0 flows
    assert len(got) == 5
    last_seq, last_ts, ssrc = hdr(got[-1])
    assert ssrc == 0xC1
    r.target(2)
    r.e.tick(r.now)
    r.out()
    assert r.plis() == [0xA2]                        # a keyframe of the high layer is asked for
    # high-layer deltas are not forwarded; the low layer keeps flowing
    for k in range(5, 8):
        assert r.send(2, k) == []
        (d,), = [r.send(0, k)]
        last_seq, last_ts, _ = hdr(d)
    assert r.e.consumer_stats(r.c)["spatialLayer"] == 0
    switched = r.send(2, 8, key=True)                # the keyframe: switch
    assert len(switched) == 1
    seq, ts, ssrc = hdr(switched[0])
    assert ssrc == 0xC1 and seq == (last_seq + 1) & 0xFFFF
    assert 0 < (ts - last_ts) & 0xFFFFFFFF < 90000   # forward, about the time elapsed
    assert switched[0][12:] == KEY
    stats = r.e.consumer_stats(r.c)
    assert (stats["spatialLayer"], stats["targetSpatialLayer"]) == (2, 2)
    # from now on only the high layer, numbers continuing
    assert r.send(0, 9) == []
    (d,) = r.send(2, 9)
    assert hdr(d)[0] == (seq + 1) & 0xFFFF and (hdr(d)[1] - ts) & 0xFFFFFFFF == 3000
    # a NACK for a number sent before the switch is not answered from the other layer
    nack = struct.pack("!BBHIIHH", 0x81, 205, 3, 1, 0xC1, last_seq, 0)
    r.e.receive(r.s_view, VIEW, nack, r.now + 1)
    assert r.out() == []
    assert r.e.counters()["retransmission_misses"] == 1


def test_back_down_and_a_target_that_is_already_current_changes_nothing():
    r = Rig()
    r.send(0, 0, key=True)
    r.target(1)
    r.send(1, 1, key=True)
    assert r.e.consumer_stats(r.c)["spatialLayer"] == 1
    r.target(0)
    r.e.tick(r.now)
    r.out()
    assert r.plis() == [0xA0]
    assert len(r.send(1, 2)) == 1                     # still layer 1 until layer 0's keyframe
    assert len(r.send(0, 3, key=True)) == 1
    assert r.e.consumer_stats(r.c)["spatialLayer"] == 0
    r.target(0)            # no change: no request
    r.e.tick(r.now + 1)
    r.out()
    assert r.plis() == []
    r.target(9)            # clamped to the highest
    assert r.e.consumer_stats(r.c)["targetSpatialLayer"] == 2


def test_a_new_consumer_told_its_layer_before_media_starts_at_the_first_keyframe_then_switches():
    r = Rig()
    r.target(2)
    assert len(r.send(0, 0, key=True)) == 1           # it starts at whatever keyframe comes first
    assert r.e.consumer_stats(r.c)["spatialLayer"] == 0
    assert r.send(2, 1) == []                          # a high-layer delta: not yet
    assert len(r.send(2, 2, key=True)) == 1
    assert r.e.consumer_stats(r.c)["spatialLayer"] == 2


def test_a_layer_chosen_before_the_consumer_knew_of_nack_still_keeps_packets_to_resend():
    """The allocator runs on the I/O thread and may move a new consumer to
    the top layer between add_consumer and set_consumer_feedback (two
    separate calls from the worker): that layer's packets must still be
    kept, or every NACK of the viewer goes unanswered for the consumer's
    life (seen with Chromium: 346 NACKs, 0 retransmissions)."""
    e = H.SansIOEngine()
    s_pub, s_view = e.add_socket(-1), e.add_socket(-1)
    t_pub, t_view = e.add_transport(s_pub), e.add_transport(s_view)
    e.connect_transport(t_pub, PUB)
    e.connect_transport(t_view, VIEW)
    p = e.add_producer(t_pub, True, [(s, 0) for s in LAYERS], {96: 101}, {}, codecs={101: "vp8"})
    e.set_producer_feedback(p, nack=True, clock_rate=90000)
    c = e.add_consumer(t_view, p, 0xC1, 0, 90000, {101: 101}, {}, initial_seq=500)
    now = 1000
    e.receive(s_pub, PUB, pkt(2, -1), now)  # the top layer is sending
    e.set_consumer_target_stream(c, 2)
    e.tick(now)  # the allocation moves the consumer to it, before NACK is known
    assert e.consumer_stats(c)["targetSpatialLayer"] == 2
    e.set_consumer_feedback(c, nack=True)
    sent = []
    for k in range(4):
        now += 10
        e.receive(s_pub, PUB, pkt(2, k, key=k == 0), now)
        e.tick(now)
        sent += [d for _, a, d in e.take_outbox() if a == VIEW and not 192 <= d[1] <= 223]
    assert len(sent) == 4 and e.consumer_stats(c)["spatialLayer"] == 2
    seq = struct.unpack("!H", sent[1][2:4])[0]
    e.receive(s_view, VIEW, struct.pack("!BBHIIHH", 0x81, 205, 3, 1, 0xC1, seq, 0), now + 5)
    e.tick(now + 5)
    resent = [d for _, a, d in e.take_outbox() if a == VIEW and not 192 <= d[1] <= 223]
    assert [struct.unpack("!H", d[2:4])[0] for d in resent] == [seq]
    assert e.counters()["tx_retransmissions"] == 1 and e.counters()["retransmission_misses"] == 0
