"""The GCC estimator (src/gcc.c) with the send history (src/twcc_send.c),
driven in virtual time through a simulated bottleneck: every media packet
gets a transport-wide sequence number, crosses a drop-tail queue (~300 ms)
and 20 ms of propagation, the receiver of src/twcc.c records its arrival and
sends a real transport-cc feedback packet every 50 ms (20 ms back), which
the send history reads and the estimator consumes. The sender sends
min(estimate, demand) in 1200-byte packets, and probes when the estimator's
probing policy asks. `pytest -s` prints the convergence figures."""

from __future__ import annotations

import heapq
import random

import pytest

from sfu._fastpath import _gcc_hooks as gh

PKT = 1200
MS = 1000
S = 1_000_000


class Sim:
    def __init__(self, capacity, start_bps=300_000, demand=3_000_000, loss=lambda t: 0.0, probing=True,
                 prop_us=20 * MS, queue_us=300 * MS, seed=1, min_bps=30_000, max_bps=10_000_000,
                 media=None, blind_probes=lambda t: False):
        self.capacity = capacity          # t_us -> bits/s
        self.media = media                # t_us -> what the sender has to send (None: demand)
        self.blind_probes = blind_probes  # t_us -> probes reported as if the link carried them
        self.loss = loss                  # t_us -> random loss probability
        self.demand = demand
        self.probing = probing
        self.prop = prop_us
        self.queue_limit = queue_us
        self.rng = random.Random(seed)
        self.hist = gh.SendHistory()
        self.gcc = gh.Gcc(start_bps, min_bps, max_bps)
        self.gcc.on_rtt(2 * prop_us // MS)
        self.rx = gh.Receiver()
        self.busy_until = 0
        self.events = []                  # (t, order, kind, data)
        self.order = 0
        self.samples = []                 # (t, estimate, capacity, queue_us, acked)
        self.sent_bytes = 0
        self.dropped = 0
        self.probes = []                  # (t, cluster, target)

    def at(self, t, kind, data=None):
        self.order += 1
        heapq.heappush(self.events, (t, self.order, kind, data))

    def queue_delay(self, t):
        return max(0, self.busy_until - t)

    def transmit(self, t, size, probe=0):
        seq = self.hist.next(t, size, probe)
        self.sent_bytes += size
        if probe and self.blind_probes(t):
            # the receiver's clock saw the cluster at its send spacing (a
            # path that bunches delivery after a stall): a false reading
            self.at(t + self.prop, "arrive", seq)
            return
        if self.rng.random() < self.loss(t):
            return  # random loss on the path
        if self.queue_delay(t) > self.queue_limit:
            self.dropped += 1
            return  # drop-tail
        start = max(t, self.busy_until)
        self.busy_until = start + size * 8 * S // self.capacity(start)
        self.at(self.busy_until + self.prop, "arrive", seq)

    def run(self, duration_us):
        self.at(0, "send")
        self.at(50 * MS, "feedback")
        self.at(100 * MS, "tick")
        while self.events:
            t, _, kind, data = heapq.heappop(self.events)
            if t > duration_us:
                break
            if kind == "send":
                self.transmit(t, PKT)
                media = self.demand if self.media is None else self.media(t)
                rate = max(10_000, min(self.gcc.estimate, media))
                self.at(t + PKT * 8 * S // rate, "send")
            elif kind == "probe_pkt":
                self.transmit(t, data[1], data[0])
            elif kind == "arrive":
                self.rx.on_packet(data, t)
            elif kind == "feedback":
                for pkt in self.rx.build_feedback():
                    self.at(t + self.prop, "fb_arrive", pkt)
                self.at(t + 50 * MS, "feedback")
            elif kind == "fb_arrive":
                n = self.gcc.on_feedback_packet(self.hist, pkt=data, now_us=t)
                assert n >= 0
            elif kind == "tick":
                self.gcc.on_tick(t)
                self.samples.append((t, self.gcc.estimate, self.capacity(t), self.queue_delay(t), self.gcc.acked, self.gcc.usage, self.gcc.state))
                if self.probing:
                    want = self.gcc.probe_wanted(self.demand, 2 * S, t)
                    if want:
                        cl = self.gcc.start_probe(want, t)
                        self.probes.append((t, cl, want))
                        # ~30 ms at the probe rate, at least 5 packets (smaller ones at low rates)
                        size = max(200, min(PKT, want * 30 * MS // (5 * 8 * S)))
                        n = max(5, want * 30 * MS // (size * 8 * S))
                        gap = size * 8 * S // want
                        for i in range(n):
                            self.at(t + i * gap, "probe_pkt", (cl, size))
                self.at(t + 100 * MS, "tick")
        return self

    def window(self, t0, t1):
        return [s for s in self.samples if t0 <= s[0] < t1]

    def first_time(self, t0, pred):
        for s in self.samples:
            if s[0] >= t0 and pred(s):
                return s[0]
        return None


def step(t_step, before, after):
    return lambda t: before if t < t_step else after


def fmt(s):
    return f"t={s[0] / S:5.1f}s est={s[1] / 1e3:7.0f}k cap={s[2] / 1e3:6.0f}k q={s[3] / MS:4.0f}ms acked={s[4] / 1e3:6.0f}k"


def show(name, sim, every=10):
    print(f"\n--- {name}: {sim.gcc.state}")
    for s in sim.samples[::every]:
        print(fmt(s))


def test_step_down_converges_below_capacity_without_a_standing_queue():
    sim = Sim(step(10 * S, 2_500_000, 300_000), start_bps=2_000_000).run(30 * S)
    show("step down", sim)
    before = sim.window(7 * S, 10 * S)
    assert min(s[1] for s in before) > 1_500_000  # it had reached the high capacity
    t = sim.first_time(10 * S, lambda s: s[1] <= 1.1 * 300_000)
    assert t is not None and t - 10 * S <= 5 * S, "estimate not down within 5 s"
    print(f"step down 2.5M->300k: estimate <= 1.1 x capacity after {(t - 10 * S) / S:.2f} s")
    # from 5 s after the step on: no sustained queue, estimate near the capacity
    late = sim.window(15 * S, 30 * S)
    q = sorted(s[3] for s in late)
    print(f"queue 15-30 s: median {q[len(q) // 2] / MS:.0f} ms, p90 {q[int(len(q) * .9)] / MS:.0f} ms; "
          f"estimate {min(s[1] for s in late) / 1e3:.0f}-{max(s[1] for s in late) / 1e3:.0f}k")
    # the queue drains and refills (decrease to 0.85 x delivered, then increase)
    # but does not stay near its 300 ms limit
    assert q[len(q) // 2] < 100 * MS
    assert sum(1 for s in late if s[3] >= 250 * MS) <= 0.15 * len(late)
    assert all(s[1] <= 1.3 * 300_000 for s in late)
    assert sum(s[1] for s in late) / len(late) >= 0.5 * 300_000  # and it still uses the link


def test_step_up_with_probes_reaches_the_new_capacity():
    sim = Sim(step(10 * S, 300_000, 2_500_000), start_bps=300_000).run(25 * S)
    show("step up", sim)
    pre = sim.window(5 * S, 10 * S)
    assert all(s[1] <= 1.3 * 300_000 for s in pre)
    t = sim.first_time(10 * S, lambda s: s[1] >= 0.7 * 2_500_000)
    print(f"step up 300k->2.5M with probes: estimate >= 0.7 x capacity after "
          f"{(t - 10 * S) / S if t else float('nan'):.2f} s; probes {[(p[0] / S, p[2]) for p in sim.probes if p[0] >= 9 * S]}")
    assert t is not None and t - 10 * S <= 10 * S
    assert sim.gcc.state["probes_applied"] >= 1
    late = sim.window(20 * S, 25 * S)
    assert all(s[1] <= 1.3 * 2_500_000 for s in late)


def test_step_up_without_probes_is_slow():
    """The reason for probing: the 1.5 x acknowledged cap and the 8 %/s increase."""
    sim = Sim(step(5 * S, 300_000, 2_500_000), start_bps=300_000, probing=False).run(15 * S)
    t = sim.first_time(5 * S, lambda s: s[1] >= 0.7 * 2_500_000)
    print(f"step up without probes: estimate {sim.samples[-1][1] / 1e3:.0f}k after 10 s")
    assert t is None


def loss_scenario(p, seed=3):
    return Sim(lambda t: 2_000_000, start_bps=1_000_000, demand=1_000_000,
               loss=lambda t: p if 10 * S <= t < 20 * S else 0.0, seed=seed).run(20 * S)


def test_twenty_percent_loss_lowers_the_estimate_and_one_percent_does_not():
    heavy = loss_scenario(0.20)
    show("20% loss", heavy)
    pre = heavy.window(8 * S, 10 * S)
    assert min(s[1] for s in pre) >= 950_000  # at the demand before the loss
    during = heavy.window(15 * S, 20 * S)
    print(f"20% loss: estimate {max(s[1] for s in during) / 1e3:.0f}k max over 15-20 s "
          f"(decreases {heavy.gcc.state['loss_decreases']})")
    assert max(s[1] for s in during) < 0.6 * 1_000_000
    assert heavy.gcc.state["loss_decreases"] >= 3

    light = loss_scenario(0.01)
    during = light.window(10 * S, 20 * S)
    print(f"1% loss: estimate {min(s[1] for s in during) / 1e3:.0f}k min over 10-20 s")
    assert min(s[1] for s in during) >= 950_000
    assert light.gcc.state["loss_decreases"] == 0


def test_five_then_twenty_percent_loss_at_constant_capacity():
    loss = lambda t: 0.05 if 5 * S <= t < 15 * S else (0.20 if 15 * S <= t < 25 * S else 0.0)
    sim = Sim(lambda t: 1_500_000, start_bps=1_000_000, demand=1_000_000, loss=loss, seed=7).run(35 * S)
    show("5% then 20% loss", sim)
    five = sim.window(5 * S, 15 * S)
    twenty = sim.window(17 * S, 25 * S)
    after = sim.window(30 * S, 35 * S)
    avg = lambda w: sum(s[1] for s in w) / len(w)
    print(f"loss bursts: avg estimate 5%: {avg(five) / 1e3:.0f}k, 20%: {avg(twenty) / 1e3:.0f}k, "
          f"after (5-10 s later): {avg(after) / 1e3:.0f}k")
    assert min(s[1] for s in five) >= 0.9 * 1_000_000  # 2-10 %: held
    assert avg(twenty) < 0.6 * avg(five)
    assert avg(after) > avg(twenty)  # recovers once the loss stops


def test_start_low_on_a_faster_link():
    sim = Sim(lambda t: 1_000_000, start_bps=300_000).run(20 * S)
    show("start 300k on 1M", sim)
    t = sim.first_time(0, lambda s: s[1] >= 0.7 * 1_000_000)
    late = sim.window(10 * S, 20 * S)
    q = sorted(s[3] for s in late)
    print(f"start 300k on a 1M link: estimate >= 700k after {t / S if t else float('nan'):.2f} s; "
          f"10-20 s estimate {min(s[1] for s in late) / 1e3:.0f}-{max(s[1] for s in late) / 1e3:.0f}k, "
          f"median queue {q[len(q) // 2] / MS:.0f} ms")
    assert t is not None and t <= 10 * S
    assert all(s[1] <= 1.3 * 1_000_000 for s in late)
    assert q[len(q) // 2] < 100 * MS


def test_no_feedback_no_growth_and_remb_fallback():
    g = gh.Gcc(500_000, 30_000, 5_000_000)
    h, r = gh.SendHistory(), gh.Receiver()
    # a second of traffic at 500k with feedback: the estimate may grow
    t = 0
    for k in range(20):
        for i in range(3):
            r.on_packet(h.next(t + i * 16_000, 1000), 10_000_000 + t + i * 16_000)
        t += 50_000
        for pkt in r.build_feedback():
            assert g.on_feedback_packet(h, pkt, t) >= 0
    e = g.estimate
    assert e >= 500_000
    # then silence: ticks for 10 s, no feedback
    for k in range(100):
        t += 100_000
        g.on_tick(t)
    assert g.estimate == e
    # the first feedback after the silence does not cash in the silent time
    for i in range(3):
        r.on_packet(h.next(t + i * 16_000, 1000), 10_000_000 + t + i * 16_000)
    t += 50_000
    for pkt in r.build_feedback():
        g.on_feedback_packet(h, pkt, t)
    assert g.estimate <= e * 1.02
    # REMB only: the estimate follows it, down and up
    g2 = gh.Gcc(1_000_000, 30_000, 5_000_000)
    g2.on_remb(400_000, 0)
    assert g2.estimate == 400_000
    g2.on_remb(800_000, 1_000_000)
    assert g2.estimate == 800_000
    g2.on_remb(10, 2_000_000)
    assert g2.estimate == 30_000  # clamped to min
    # transport-cc feedback that stops (seen in CI: a starved viewer behind a
    # 300 kbit/s bottleneck whose estimate then sat at Chrome's stale REMB of
    # 528k for 6 s): the REMB may lower the estimate, not raise it
    est = g.estimate
    t += 3_000_000
    g.on_tick(t)
    g.on_remb(3_000_000, t)
    assert g.estimate == est
    g.on_remb(200_000, t + 100_000)
    assert g.estimate == 200_000
    g.on_remb(3_000_000, t + 200_000)
    assert g.estimate == 200_000


def test_probe_api():
    g = gh.Gcc(300_000, 30_000, 5_000_000)
    h = gh.SendHistory()
    r = gh.Receiver()
    assert g.probe_done(1) == -1
    cl = g.start_probe(1_000_000, 0)
    assert cl > 0 and g.probe_done(cl) == 0
    # 10 packets paced at 1 Mbit/s, arriving at 900 kbit/s
    for i in range(10):
        r.on_packet(h.next(i * 9600, 1200, cl), 5_000_000 + i * 10_667)
    for pkt in r.build_feedback():
        g.on_feedback_packet(h, pkt, 200_000)
    assert g.probe_done(cl) == 1
    assert 850_000 <= g.probe_result(cl) <= 1_000_000
    assert g.estimate == g.probe_result(cl)
    # a cluster that never gets feedback fails
    cl2 = g.start_probe(2_000_000, 300_000)
    g.on_tick(3_000_000)
    assert g.probe_done(cl2) == -1


def test_a_probe_that_arrives_bunched_up_measures_nothing():
    """A path that stalls and then delivers a batch (a busy relay, Wi-Fi
    aggregation) squeezes the cluster's arrival: its receive rate says
    nothing of the link's capacity, so the probe gives no result (it used
    to be taken at its send rate and lift the estimate past the link)."""
    g = gh.Gcc(300_000, 30_000, 5_000_000)
    h = gh.SendHistory()
    r = gh.Receiver()
    cl = g.start_probe(1_000_000, 0)
    # 10 packets paced at 1 Mbit/s over 86 ms; all arrive within 20 ms
    for i in range(10):
        r.on_packet(h.next(i * 9600, 1200, cl), 5_000_000 + i * 2_000)
    for pkt in r.build_feedback():
        g.on_feedback_packet(h, pkt, 200_000)
    assert g.probe_result(cl) == 0
    assert g.state["probes_applied"] == 0


def test_a_false_probe_reading_is_undone_by_the_first_overuse():
    """A viewer on a 300 kbit/s link receives a 120 kbit/s layer; two probes
    read through a bunching path report ~3x the link (the failure seen in CI:
    estimate 121k -> 365k -> 770k), so the estimate jumps. When the sender
    then climbs to a 400 kbit/s layer, the queue grows: the first overuse
    must bring the estimate under the link within about a second, from what
    was delivered, not from the false probe reading; and heavy loss bounds
    the estimate by the delivered rate."""
    climb = 9 * S
    sim = Sim(lambda t: 300_000, start_bps=120_000, demand=1_200_000, queue_us=200 * MS,
              media=lambda t: 120_000 if t < climb else 400_000,
              blind_probes=lambda t: 5 * S <= t < 9 * S).run(20 * S)
    show("false probe, then a climb", sim, every=5)
    before = sim.window(8 * S, climb)
    assert max(s[1] for s in before) > 600_000  # the false readings were taken
    t = sim.first_time(climb, lambda s: s[1] < 300_000)
    print(f"false probe reading {max(s[1] for s in before) / 1e3:.0f}k: estimate under the 300k link "
          f"{(t - climb) / S if t else float('nan'):.2f} s after the climb; dropped {sim.dropped}")
    assert t is not None and t - climb <= 1.5 * S
    late = sim.window(climb + 3 * S, 20 * S)
    assert all(s[1] < 1.3 * 300_000 for s in late), [fmt(s) for s in late if s[1] >= 1.3 * 300_000]
