"""RTP reception statistics (RFC 3550 A.1 sequence validation, A.3 loss,
A.8 jitter) and the 0..10 stream score (src/rtp_stats.c via feedback.pxi)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sfu._fastpath import _testhooks


def feed(s, seqs, *, ts_step=1800, ms_step=20, start_ms=1000):
    return [s.update(q & 0xFFFF, (q * ts_step) & 0xFFFFFFFF, start_ms + i * ms_step) for i, q in enumerate(seqs)]


def rfc_jitter(arrivals_ms, timestamps, clock_rate):
    """RFC 3550 A.8 in x16 fixed point, over the counted packets."""
    j = 0
    prev = None
    for a, ts in zip(arrivals_ms, timestamps):
        transit = (a * clock_rate // 1000 - ts) & 0xFFFFFFFF
        if prev is not None:
            d = (transit - prev) & 0xFFFFFFFF
            d = d - (1 << 32) if d >= 1 << 31 else d
            j += abs(d) - ((j + 8) >> 4)
        prev = transit
    return j >> 4


def test_constant_spacing_has_zero_jitter():
    s = _testhooks.RtpStats(90000)
    feed(s, range(200))
    assert s.jitter == 0 and s.packets_lost == 0


def test_alternating_delays_follow_the_rfc_formula():
    s = _testhooks.RtpStats(90000)
    arrivals = [1000 + 20 * i + (5 if i % 2 else 0) for i in range(100)]
    tss = [3000 + 1800 * i for i in range(100)]
    for i in range(100):
        s.update(i, tss[i], arrivals[i])
    # the first packet is on probation (not counted, RFC 3550 A.1)
    expected = rfc_jitter(arrivals[1:], tss[1:], 90000)
    assert s.jitter == expected
    # |D| is 5 ms = 450 ticks every packet: J converges towards 450
    assert 430 <= s.jitter <= 450
    assert s.jitter_ms == s.jitter * 1000 // 90000
    # the report block carries the same value
    assert s.report_block(1, 5000)["jitter"] == expected


def test_jitter_with_timestamp_wrap_and_audio_clock():
    s = _testhooks.RtpStats(48000)
    base = 2**32 - 960 * 5
    arrivals = [100 + 20 * i + (i % 3) for i in range(50)]
    tss = [(base + 960 * i) & 0xFFFFFFFF for i in range(50)]
    for i in range(50):
        assert s.update(i, tss[i], arrivals[i]) == (1 if i else 0)
    assert s.jitter == rfc_jitter(arrivals[1:], tss[1:], 48000)


def test_probation():
    s = _testhooks.RtpStats()
    assert s.update(100, 0, 0) == 0
    assert s.update(105, 0, 20) == 0  # not sequential: probation restarts
    assert s.report_block(1, 30)["valid"] == 0
    assert s.update(106, 0, 40) == 1  # two in a row: valid, base = 106
    assert s.received == 1 and s.expected == 1 and s.packets_lost == 0
    assert s.update(107, 0, 60) == 1
    assert s.ext_highest_seq == 107


def test_loss_with_gaps():
    s = _testhooks.RtpStats()
    seqs = [q for q in range(101) if q not in (10, 11, 12, 50, 99)]
    feed(s, seqs)
    # the first packet (0) is not counted and base is 1
    assert s.expected == 100 and s.received == 95 and s.packets_lost == 5
    rb = s.report_block(0xABC, 10_000)
    assert rb["cumulative_lost"] == 5 and rb["ext_highest_seq"] == 100
    assert rb["fraction_lost"] == 5 * 256 // 100
    assert rb["ssrc"] == 0xABC


def test_reordering_and_duplicates():
    s = _testhooks.RtpStats()
    feed(s, [0, 1, 2, 3, 5, 4, 6, 7])
    assert s.packets_lost == 0 and s.ext_highest_seq == 7
    feed(s, [7, 7])  # duplicates count as received (A.3: lost may go negative)
    assert s.packets_lost == -2
    rb = s.report_block(1, 1000)
    assert rb["cumulative_lost"] == -2 and rb["fraction_lost"] == 0
    # a late packet within MAX_MISORDER leaves the highest seq alone
    assert s.update(1, 0, 2000) == 1 and s.ext_highest_seq == 7


def test_sequence_wrap():
    s = _testhooks.RtpStats()
    seqs = [(65530 + i) & 0xFFFF for i in range(20) if i != 8]
    feed(s, seqs)
    assert s.ext_highest_seq == (1 << 16) + 13
    assert s.packets_lost == 1 and s.expected == 19


def test_large_jump_needs_two_sequential_packets():
    s = _testhooks.RtpStats()
    feed(s, range(0, 50))
    assert s.update(10_000, 0, 5000) == 0  # jump >= MAX_DROPOUT: not counted
    assert s.ext_highest_seq == 49 and s.received == 49
    assert s.update(50, 0, 5010) == 1  # the old stream goes on
    assert s.update(30_000, 0, 5015) == 0  # another jump, not the one after 10_000
    assert s.update(30_002, 0, 5020) == 0  # not sequential to it either
    assert s.ext_highest_seq == 50 and s.received == 50
    assert s.update(30_003, 0, 5030) == 1  # confirms the jump: re-synchronised
    assert s.received == 1 and s.ext_highest_seq == 30_003 and s.packets_lost == 0


def test_old_packets_beyond_misorder_are_dropped_as_jumps():
    s = _testhooks.RtpStats()
    feed(s, range(1000, 1300))
    assert s.update(1250, 0, 0) == 1  # 49 behind: reordered, counted
    assert s.update(1100, 0, 0) == 0  # 199 behind (> MAX_MISORDER): treated as a jump
    assert s.ext_highest_seq == 1299 and s.received == 299 + 1


def test_fraction_lost_between_reports():
    s = _testhooks.RtpStats()
    feed(s, range(0, 101))  # 100 counted (1..100), none lost
    rb = s.report_block(1, 3000)
    assert rb["fraction_lost"] == 0 and rb["cumulative_lost"] == 0
    feed(s, [q for q in range(101, 201) if q % 4 != 1], start_ms=4000)  # 25 of 100 lost
    rb = s.report_block(1, 6000)
    assert rb["fraction_lost"] == 64 and rb["cumulative_lost"] == 25
    assert s.score() == 3  # 10 * 0.75^4 = 3.16
    feed(s, range(201, 301), start_ms=7000)  # clean interval again
    rb = s.report_block(1, 9000)
    assert rb["fraction_lost"] == 0 and rb["cumulative_lost"] == 25
    assert s.score() == 10
    rb = s.report_block(1, 9500)  # nothing new: expected_interval 0
    assert rb["fraction_lost"] == 0


def test_dlsr_and_lsr():
    s = _testhooks.RtpStats()
    feed(s, range(10))
    rb = s.report_block(7, now_ms=1500, lsr=0x12345678, last_sr_arrival_ms=1000)
    assert rb["lsr"] == 0x12345678 and rb["dlsr"] == 32768  # 0.5 s in 1/65536 s
    rb = s.report_block(7, now_ms=4250, lsr=0xDEADBEEF, last_sr_arrival_ms=1000)
    assert rb["dlsr"] == 3250 * 65536 // 1000
    rb = s.report_block(7, now_ms=4250, lsr=0, last_sr_arrival_ms=1000)
    assert rb["lsr"] == 0 and rb["dlsr"] == 0  # no SR received yet


def test_stream_score():
    table = {0: 10, 1: 10, 2: 9, 5: 8, 10: 7, 20: 4, 30: 2, 50: 1, 100: 0}
    for pct, score in table.items():
        f = min(255, pct * 256 // 100)
        assert _testhooks.stream_score(f) == score, pct
    # monotonic in the loss
    scores = [_testhooks.stream_score(f) for f in range(256)]
    assert scores == sorted(scores, reverse=True)
    # repaired packets (retransmissions) are taken off the loss
    assert _testhooks.stream_score(64, expected=100, repaired=25) == 10
    assert _testhooks.stream_score(64, expected=100, repaired=15) == 7
    assert _testhooks.stream_score(64, expected=100, repaired=1000) == 10
    assert _testhooks.stream_score(64, expected=100) == 3


@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(0, 10**6)), max_size=200))
@settings(max_examples=200, deadline=None)
def test_random_input_never_breaks_invariants(packets):
    s = _testhooks.RtpStats(90000)
    for q, ts, a in packets:
        assert s.update(q, ts, a) in (0, 1)
    rb = s.report_block(1, 10**6 + 1, 5, 10**6)
    assert -(1 << 23) <= rb["cumulative_lost"] < (1 << 23)
    assert 0 <= rb["fraction_lost"] <= 255
    assert 0 <= s.score() <= 10


@given(st.integers(0, 65535), st.lists(st.booleans(), min_size=2, max_size=400))
@settings(max_examples=200, deadline=None)
def test_loss_counting_matches_model(start, keep):
    """Forward-only streams with random losses (never two in a row at the start)."""
    keep[0] = keep[1] = True
    s = _testhooks.RtpStats()
    seqs = [(start + i) & 0xFFFF for i, k in enumerate(keep) if k]
    feed(s, seqs)
    last = max(i for i, k in enumerate(keep) if k)
    assert s.expected == last  # base is start + 1
    assert s.packets_lost == last - (sum(keep) - 1)
    # the first packet is on probation: cycles count from the second one
    assert s.ext_highest_seq == ((start + 1) & 0xFFFF) + last - 1
