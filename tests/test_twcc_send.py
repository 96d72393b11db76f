"""The send history of transport-cc (src/twcc_send.c) against real feedback
packets: built by the receiver side of src/twcc.c, and by hand (below) for
the shapes that receiver never sends (a packet reported twice, a lost one
reported received later, a reference time that wraps)."""

from __future__ import annotations

import struct

from sfu._fastpath import _gcc_hooks as gh

LOST = None


def feedback(base: int, entries, ref_time: int = 0, fb_count: int = 0) -> bytes:
    """A transport-cc feedback packet: entries are None (not received) or a
    receive delta in 250-us units; 2-bit status vector chunks only."""
    syms = [0 if e is None else (1 if 0 <= e <= 255 else 2) for e in entries]
    body = b""
    for i in range(0, len(syms), 7):
        c = 0xC000
        for j, s in enumerate(syms[i:i + 7]):
            c |= s << (12 - 2 * j)
        body += struct.pack("!H", c)
    for e, s in zip(entries, syms):
        if s == 1:
            body += bytes([e])
        elif s == 2:
            body += struct.pack("!h", e)
    fci = struct.pack("!HHI", base & 0xFFFF, len(entries), ((ref_time & 0xFFFFFF) << 8) | (fb_count & 0xFF))
    payload = struct.pack("!II", 1, 2) + fci + body
    payload += b"\0" * (-len(payload) % 4)
    return struct.pack("!BBH", 0x8F, 205, (len(payload) + 4) // 4 - 1) + payload


def send(h, n, t0=0, gap=1000, size=1200, probe=0):
    return [h.next(t0 + i * gap, size, probe) for i in range(n)]


def test_received_and_lost_packets_come_back_in_order_with_arrival_times():
    h, r = gh.SendHistory(), gh.Receiver()
    seqs = send(h, 10, t0=5_000_000, gap=2000, size=1000 + 1)
    assert seqs == list(range(10))
    arrivals = {}
    for i, s in enumerate(seqs):
        if i in (3, 7):
            continue  # lost
        arrivals[s] = 9_000_000 + i * 2500 + (i % 3) * 250
        r.on_packet(s, arrivals[s])
    (pkt,) = r.build_feedback()
    res = h.on_feedback(pkt)
    assert [x[0] for x in res] == [5_000_000 + i * 2000 for i in range(10)]
    assert all(x[2] == 1001 and x[3] == 0 for x in res)
    assert res[3][1] == -1 and res[7][1] == -1
    got = [x[1] for x in res]
    # remote clock: any epoch, differences exact to the 250-us unit
    for i in (1, 2, 4, 5, 6, 8, 9):
        assert got[i] - got[0] == arrivals[i] - arrivals[0]
    c = h.counters
    assert c["reported_received"] == 8 and c["reported_lost"] == 2 and c["feedbacks"] == 1


def test_sequence_numbers_wrap_and_unwrap_against_the_history():
    h, r = gh.SendHistory(), gh.Receiver()
    for i in range(65530):
        h.next(i, 100)
    seqs = send(h, 20, t0=100_000_000, gap=1000)
    assert seqs == [(65530 + i) & 0xFFFF for i in range(20)]
    assert seqs[6] == 0
    for i, s in enumerate(seqs):
        r.on_packet(s, 1_000_000 + i * 1000)
    pkts = r.build_feedback()
    res = [x for p in pkts for x in h.on_feedback(p)]
    assert [x[0] for x in res] == [100_000_000 + i * 1000 for i in range(20)]
    assert [x[1] - res[0][1] for x in res] == [i * 1000 for i in range(20)]


def test_reordered_arrivals_keep_sequence_order_with_their_own_times():
    h, r = gh.SendHistory(), gh.Receiver()
    seqs = send(h, 6, gap=1000)
    order = [0, 2, 1, 3, 5, 4]
    for k, i in enumerate(order):
        r.on_packet(seqs[i], 2_000_000 + k * 1000)
    (pkt,) = r.build_feedback()
    res = h.on_feedback(pkt)
    rel = [x[1] - res[0][1] for x in res]
    assert rel == [0, 2000, 1000, 3000, 5000, 4000]


def test_reordered_and_duplicated_feedback_packets():
    h, r = gh.SendHistory(), gh.Receiver()
    a = send(h, 5)
    for i, s in enumerate(a):
        r.on_packet(s, 1_000_000 + i * 1000)
    (fb1,) = r.build_feedback()
    b = send(h, 5, t0=10_000)
    for i, s in enumerate(b):
        r.on_packet(s, 1_010_000 + i * 1000)
    (fb2,) = r.build_feedback()
    assert fb1[19] == 0 and fb2[19] == 1
    # the second arrives first: both are read, each about its own packets
    second = h.on_feedback(fb2)
    first = h.on_feedback(fb1)
    assert [x[0] for x in first] == [i * 1000 for i in range(5)]
    assert [x[0] for x in second] == [10_000 + i * 1000 for i in range(5)]
    assert second[0][1] - first[0][1] == 10_000
    # a duplicate is ignored
    assert h.on_feedback(fb1) == [] and h.on_feedback(fb2) == []
    assert h.counters["fb_duplicates"] == 2 and h.counters["feedbacks"] == 2


def test_received_then_lost_is_not_reported_again_but_lost_then_received_is():
    h = gh.SendHistory()
    send(h, 4)
    res = h.on_feedback(feedback(0, [4, LOST, 4, 4], ref_time=10, fb_count=0))
    assert [x[1] == -1 for x in res] == [False, True, False, False]
    # the remote reports the range again: 0 now "lost", 1 arrived late
    res = h.on_feedback(feedback(0, [LOST, 8, LOST, 4], ref_time=10, fb_count=1))
    assert len(res) == 1 and res[0][0] == 1000 and res[0][1] != -1
    c = h.counters
    assert c["recovered"] == 1 and c["repeated"] == 3
    # a feedback count already seen, even with other content, is ignored
    assert h.on_feedback(feedback(0, [4, 4, 4, 4], ref_time=11, fb_count=1)) == []


def test_feedback_about_packets_older_than_the_history():
    h = gh.SendHistory()
    send(h, gh.HISTORY + 50)
    # seq 0..99: 0..49 have left the ring, 50..99 are still there
    res = h.on_feedback(feedback(0, [1] * 100, ref_time=100, fb_count=7))
    assert [x[0] for x in res] == [i * 1000 for i in range(50, 100)]
    assert h.counters["unknown"] == 50
    # sequence numbers never sent are not reported either
    nxt = (gh.HISTORY + 50) & 0xFFFF
    assert h.on_feedback(feedback(nxt - 2, [1, 1, 1, 1], ref_time=101, fb_count=8)) and \
        h.counters["unknown"] == 52


def test_reference_time_wrap_keeps_arrival_times_continuous():
    h = gh.SendHistory()
    send(h, 2)
    a = h.on_feedback(feedback(0, [0], ref_time=0xFFFFFF, fb_count=0))
    b = h.on_feedback(feedback(1, [0], ref_time=0x000000, fb_count=1))
    assert b[0][1] - a[0][1] == 64_000
    assert a[0][1] > 0


def test_large_and_negative_deltas():
    h = gh.SendHistory()
    send(h, 3)
    res = h.on_feedback(feedback(0, [10, 2000, -40], ref_time=5, fb_count=0))
    t = [x[1] for x in res]
    assert t[1] - t[0] == 2000 * 250 and t[2] - t[1] == -40 * 250


def test_malformed_packets_are_refused_and_change_nothing():
    h, r = gh.SendHistory(), gh.Receiver()
    seqs = send(h, 8)
    for i, s in enumerate(seqs):
        r.on_packet(s, 1000 * i)
    (pkt,) = r.build_feedback()
    for bad in (pkt[:10], pkt[:-4] if len(pkt) > 24 else pkt[:19], b"\x80" + pkt[1:], b""):
        n = h.on_feedback(bad)
        assert isinstance(n, int) and n < 0
    assert h.counters["fb_malformed"] == 4 and h.counters["feedbacks"] == 0
    assert len(h.on_feedback(pkt)) == 8


def test_output_limit_leaves_the_rest_for_a_later_feedback():
    h = gh.SendHistory()
    send(h, 10)
    res = h.on_feedback(feedback(0, [4] * 10, ref_time=1, fb_count=0), max=4)
    assert len(res) == 4
    res = h.on_feedback(feedback(0, [4] * 10, ref_time=1, fb_count=1))
    assert [x[0] for x in res] == [i * 1000 for i in range(4, 10)]


def test_write_ext_and_probe_cluster():
    assert gh.write_ext(0xABCD) == b"\xab\xcd"
    h = gh.SendHistory()
    h.next(0, 500, 3)
    assert h.on_feedback(feedback(0, [1], fb_count=0))[0][2:] == (500, 3)
