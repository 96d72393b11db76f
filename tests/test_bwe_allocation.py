"""Sender-side bandwidth estimation driving simulcast layers, in the engine,
in virtual time (sans-IO): a publisher sends three encodings; a viewer's
transport numbers what it sends (transport-wide sequence numbers), the
packets cross a simulated bottleneck (a rate, a drop-tail queue, a
propagation delay), and the viewer answers with real transport-cc feedback.
The engine's estimate (src/gcc.c through src/bwe.c) and allocation
(src/allocator.c) must put the viewer on the layer the link carries, and
move it when the capacity changes (issue 12)."""

from __future__ import annotations

import collections
import struct

from sfu._fastpath import _testhooks as H

PUB = ("127.0.0.1", 5000)
VIEW = ("127.0.0.1", 6000)
LAYERS = (0xA0, 0xA1, 0xA2)
RATES = (150_000, 500_000, 1_200_000)      # what each encoding sends, bit/s
FPS = 30
TWCC_ID = 5
STEP_MS = 5


class Link:
    """One direction of a bottleneck: serialisation at `bps`, a drop-tail
    queue bounded in time, then a propagation delay."""

    def __init__(self, bps: int, queue_ms: int = 200, delay_ms: int = 20) -> None:
        self.bps, self.queue_ms, self.delay_ms = bps, queue_ms, delay_ms
        self.free_at_us = 0
        self.sent = self.dropped = 0

    def send(self, now_us: int, size: int) -> int | None:
        """Arrival time of a packet, or None when the queue drops it."""
        start = max(now_us, self.free_at_us)
        if start - now_us > self.queue_ms * 1000:
            self.dropped += 1
            return None
        self.free_at_us = start + size * 8 * 1_000_000 // self.bps
        self.sent += 1
        return self.free_at_us + self.delay_ms * 1000


class Rig:
    def __init__(self, bps: int) -> None:
        e = self.e = H.SansIOEngine()
        self.s_pub, self.s_view = e.add_socket(-1), e.add_socket(-1)
        t_pub, self.t_view = e.add_transport(self.s_pub), e.add_transport(self.s_view)
        e.connect_transport(t_pub, PUB)
        e.connect_transport(self.t_view, VIEW)
        self.p = e.add_producer(t_pub, True, [(s, 0) for s in LAYERS], {96: 101}, {}, codecs={101: "vp8"})
        e.set_producer_feedback(self.p, nack=True, clock_rate=90000)
        self.c = e.add_consumer(self.t_view, self.p, 0xC1, 0xC2, 90000, {101: 101, 102: 102}, {}, initial_seq=1)
        e.set_consumer_feedback(self.c, nack=True, rtx_pt=102)
        e.set_consumer_twcc(self.c, TWCC_ID)
        self.link = Link(bps)
        self.twcc = H.TwccReceiver()
        self.arrivals: collections.deque[tuple[int, int, int]] = collections.deque()
        self.now = 1000
        self.seq = [0, 0, 0]
        self.key_wanted = {0, 1, 2}
        self.received = collections.Counter()   # layer -> packets the viewer got
        self.padding = 0
        self.next_frame = self.now
        self.next_fb = self.now
        self.key_factor = 2   # a keyframe's size, in frames of its layer

    def publish_frame(self) -> None:
        for layer, ssrc in enumerate(LAYERS):
            key = layer in self.key_wanted
            self.key_wanted.discard(layer)
            size = RATES[layer] // 8 // FPS * (self.key_factor if key else 1)
            ts = (self.now * 90) & 0xFFFFFFFF
            while size > 0:
                chunk = min(size, 1100)
                size -= chunk
                self.seq[layer] += 1
                payload = (b"\x10\x00" if key else b"\x00\x01") + bytes(chunk)
                pkt = struct.pack("!BBHII", 0x80, 96, self.seq[layer] & 0xFFFF, ts, ssrc) + payload
                self.e.receive(self.s_pub, PUB, pkt, self.now)
                key = False

    def route(self) -> None:
        for _s, addr, d in self.e.take_outbox():
            if addr == PUB:
                if len(d) >= 12 and d[1] == 206 and d[0] & 0x1F == 1:  # PLI: a keyframe of that layer
                    media = struct.unpack("!I", d[8:12])[0]
                    if media in LAYERS:
                        self.key_wanted.add(LAYERS.index(media))
                continue
            if 192 <= d[1] <= 223:
                continue  # RTCP toward the viewer
            arrival = self.link.send(self.now * 1000, len(d))
            if arrival is None:
                continue
            ext = dict(H.rtp_extensions(d))
            if TWCC_ID in ext:
                self.arrivals.append((arrival, struct.unpack("!H", ext[TWCC_ID])[0], d[8:12] == b"\x00\x00\x00\xc2"))

    def deliver(self) -> None:
        while self.arrivals and self.arrivals[0][0] <= self.now * 1000:
            arrival, tseq, padding = self.arrivals.popleft()
            self.twcc.on_packet(tseq, arrival)
            self.padding += padding
        if self.now >= self.next_fb:
            self.next_fb += 50
            while True:
                fb = self.twcc.build_feedback(sender_ssrc=0xFEED, media_ssrc=0xC1)
                if not fb:
                    break
                self.e.receive(self.s_view, VIEW, fb, self.now)

    def run(self, ms: int, on_step=None) -> None:
        end = self.now + ms
        while self.now < end:
            self.now += STEP_MS
            if self.now >= self.next_frame:
                self.next_frame += 1000 // FPS
                self.publish_frame()
            self.e.tick(self.now)
            self.route()
            self.deliver()
            if on_step:
                on_step(self)

    def layer(self) -> int:
        return self.e.consumer_stats(self.c)["spatialLayer"]

    def estimate(self) -> int:
        return self.e.transport_stats(self.t_view).get("availableOutgoingBitrate", 0)


def settle_time(rig: Rig, ms: int, want) -> tuple[int | None, list[tuple[int, int, int]]]:
    """Runs `ms`; the first time (ms from now) from which the layer satisfies
    `want` until the end, and a trace (ms, layer, estimate) every 500 ms."""
    start = rig.now
    trace: list[tuple[int, int, int]] = []
    since: list[int | None] = [None]

    def step(r: Rig) -> None:
        ok = want(r.layer())
        if ok and since[0] is None:
            since[0] = r.now - start
        elif not ok:
            since[0] = None
        if (r.now - start) % 500 == 0:
            trace.append((r.now - start, r.layer(), r.estimate() // 1000))

    rig.run(ms, step)
    return since[0], trace


def test_a_viewer_follows_its_link_down_and_back_up():
    rig = Rig(bps=4_000_000)
    up, trace_up = settle_time(rig, 15_000, lambda layer: layer == 2)
    print("\nunconstrained (4 Mbit/s): top layer from", up, "ms; (ms, layer, kbit/s):", trace_up)
    assert up is not None, trace_up
    rig.link.bps = 400_000          # layer 0 (150 kbit/s) fits, layer 1 (500) does not
    dropped_before = rig.link.dropped
    down, trace_down = settle_time(rig, 20_000, lambda layer: layer == 0)
    print("400 kbit/s: layer 0 from", down, "ms;", trace_down)
    assert down is not None and down <= 5_000, trace_down
    # no sustained loss once settled: the queue drops little in the last 10 s
    dropped_mid = rig.link.dropped
    sent_mid = rig.link.sent
    settle_time(rig, 10_000, lambda layer: True)
    late_drops = rig.link.dropped - dropped_mid
    late_sent = rig.link.sent - sent_mid
    print(f"400 kbit/s, settled: {late_drops} drops of {late_sent + late_drops} packets in 10 s "
          f"(during the step down: {dropped_mid - dropped_before})")
    assert late_drops <= 0.02 * (late_sent + late_drops)
    rig.link.bps = 4_000_000
    back, trace_back = settle_time(rig, 15_000, lambda layer: layer == 2)
    print("4 Mbit/s again: top layer from", back, "ms;", trace_back)
    assert back is not None and back <= 10_000, trace_back
    stats = rig.e.transport_stats(rig.t_view)["bwe"]
    print("bwe stats:", stats)
    assert stats["feedbacks"] > 100 and stats["probes"] >= 1 and rig.padding > 0


def test_a_preferred_layer_caps_the_allocation_and_priority_orders_it():
    rig = Rig(bps=4_000_000)
    rig.e.set_consumer_target_stream(rig.c, 1)
    at, trace = settle_time(rig, 10_000, lambda layer: layer == 1)
    assert at is not None, trace                    # never above the preference, though the link would carry 2
    assert rig.e.consumer_stats(rig.c)["preferredSpatialLayer"] == 1
    rig.e.set_consumer_priority(rig.c, 3)
    assert rig.e.consumer_stats(rig.c)["priority"] == 3


def test_a_plain_receiver_that_never_answers_gets_its_preferred_layer():
    """Feedback negotiated but none sent (a plain RTP receiver given a
    browser's capabilities): no limit is known, so the top layer."""
    rig = Rig(bps=10_000_000)
    rig.next_fb = 10 ** 12  # the viewer never sends feedback
    at, trace = settle_time(rig, 3_000, lambda layer: layer == 2)
    assert at is not None, trace
    assert rig.e.transport_stats(rig.t_view)["bwe"]["feedbacks"] == 0


def remb(bps: int, ssrc: int = 0xC1) -> bytes:
    """An RTCP REMB (draft-alvestrand-rmcat-remb) for one SSRC."""
    exp, mantissa = 0, bps
    while mantissa >= 1 << 18:
        mantissa >>= 1
        exp += 1
    body = b"REMB" + bytes([1, exp << 2 | mantissa >> 16, mantissa >> 8 & 0xFF, mantissa & 0xFF]) + struct.pack("!I", ssrc)
    return struct.pack("!BBHII", 0x8F, 206, (12 + len(body)) // 4 - 1, 0xFEED, 0) + body


def test_a_climb_that_falls_back_soon_makes_the_next_one_wait_longer():
    """The estimate allows layer 1, the consumer climbs, and within a few
    seconds the estimate falls again (what an overshooting probe through a
    bursty path looks like): each such failed climb doubles the hold before
    the next climb to that layer (1.5 s, 3 s, 6 s at most), so a borderline
    link does not flap between layers every few seconds; an estimate of
    twice the layer's rate (the link changed) climbs after the normal hold.
    The estimate is scripted with REMB (the viewer sends no transport-cc)."""
    rig = Rig(bps=100_000_000)
    rig.next_fb = 10 ** 12
    rig.e.set_consumer_target_stream(rig.c, 1)   # preferred: layer 1, so every climb is 0 -> 1
    bps = [300_000]

    def step(r: Rig) -> None:
        if r.now % 100 == 0:
            r.e.receive(r.s_view, VIEW, remb(bps[0]), r.now)

    def climb_time(to_bps: int) -> int:
        bps[0] = 300_000
        rig.run(3_000, step)
        assert rig.layer() == 0
        bps[0] = to_bps
        start = rig.now
        while rig.layer() != 1:
            assert rig.now - start < 15_000, "never climbed"
            rig.run(50, step)
        t = rig.now - start
        rig.run(2_000, step)        # holds layer 1 for 2 s, then the estimate falls (failed)
        return t

    times = [climb_time(800_000) for _ in range(4)]
    fast = climb_time(1_400_000)
    print("\nclimb to layer 1 after each failed climb (ms):", times, "; at twice the layer's rate:", fast)
    assert 1_400 <= times[0] <= 2_600
    assert times[1] >= times[0] + 1_000
    assert times[2] >= times[1] + 2_000
    assert 5_500 <= times[3] <= 7_500             # capped at 6 s
    assert fast <= 2_600


def test_keyframes_of_the_top_layer_do_not_send_a_viewer_down():
    """A viewer whose estimate carries the top layer with half again its rate
    to spare (as the unconstrained viewer of the Chromium test, 740 kbit/s
    for a 450 kbit/s layer):
    another viewer's keyframe requests make the publisher send two keyframes
    of every layer half a second apart (libvpx's simulcast encoder does:
    one encoder, all layers key), each 15 frames' worth. The top layer's
    rate over that second doubles, but the link did not change: the viewer
    keeps the top layer. (In the Chromium BWE test the unconstrained viewer
    once dropped a layer for 1.75 s this way: the allocation read the
    stream's last-second rate.)"""
    rig = Rig(bps=100_000_000)
    rig.next_fb = 10 ** 12            # no transport-cc: the estimate is scripted with REMB

    def step(r: Rig) -> None:
        if r.now % 100 == 0:
            r.e.receive(r.s_view, VIEW, remb(1_800_000), r.now)

    rig.run(6_000, step)
    assert rig.layer() == 2
    rig.key_factor = 15
    layers = []

    def watch(r: Rig) -> None:
        step(r)
        layers.append(r.layer())

    for _ in range(2):
        rig.key_wanted.update({0, 1, 2})
        rig.run(500, watch)
    rig.run(4_000, watch)
    assert set(layers) == {2}, f"dropped to layer {min(layers)} for {sum(1 for x in layers if x != 2) * STEP_MS} ms"
