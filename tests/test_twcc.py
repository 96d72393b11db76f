"""transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01):
the receiver/builder and the parser of src/twcc.c through feedback.pxi."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu._fastpath import _testhooks

ETOO_SHORT, EHEADER, ECHUNK, ENO_ROOM = -1, -2, -3, -4
REF_WRAP_US = (1 << 24) * 64000  # the 24-bit reference time wraps after ~12.4 days


def drain(r, cap=1200, sender=1, media=2):
    """Every feedback packet the receiver has to send now, parsed."""
    out = []
    for _ in range(10_000):
        pkt = r.build_feedback(sender, media, cap)
        if not pkt:
            return out
        assert len(pkt) % 4 == 0 and len(pkt) <= cap
        assert struct.unpack("!H", pkt[2:4])[0] == len(pkt) // 4 - 1
        fb = _testhooks.twcc_parse_feedback(pkt)
        assert isinstance(fb, dict), fb
        fb["raw"] = pkt
        out.append(fb)
    raise AssertionError("feedback never drained")


def decode(fbs):
    """[(seq16, arrival_us mod REF_WRAP_US or None)] over the feedback packets."""
    res = []
    for fb in fbs:
        t = fb["ref_time"] * 64000
        for i, (s, d) in enumerate(zip(fb["statuses"], fb["deltas"])):
            seq = (fb["base_seq"] + i) & 0xFFFF
            if s == 0:
                res.append((seq, None))
            else:
                t += d * 250
                assert (s == 1) == (0 <= d <= 255)
                res.append((seq, t % REF_WRAP_US))
    return res


def check(events, fbs):
    """The feedback reports every first arrival exactly once, in 250 us units,
    and the gaps between them as not received."""
    first = {}
    for seq, arr in events:
        first.setdefault(seq, arr)
    rep = decode(fbs)
    received = [(s, a) for s, a in rep if a is not None]
    assert len({s for s, _ in received}) == len(received)
    for s, a in received:
        assert a == (first[s] // 250 * 250) % REF_WRAP_US
    assert {s for s, _ in received} == set(first)
    # contiguous coverage from the first base
    seqs = [s for s, _ in rep]
    for x, y in zip(seqs, seqs[1:]):
        assert y == (x + 1) & 0xFFFF
    return rep


# ------------------------------------------------------------------ by hand

def test_hand_built_two_bit_vector():
    r = _testhooks.TwccReceiver()
    t0 = 64000 * 10 + 250 * 5 + 17  # ref time 10, first delta 5 (sub-tick dropped)
    r.on_packet(100, t0)
    # 101 lost
    r.on_packet(102, t0 + 300 * 250)  # delta 300: large
    r.on_packet(103, t0 + 299 * 250)  # delta -1: large (negative)
    pkt = r.build_feedback(0x11223344, 0x55667788)
    assert pkt == bytes.fromhex(
        "8f cd 0006"  # V=2 FMT=15, PT=205 (RTPFB), length 6 words
        "11223344 55667788"  # sender, media SSRC
        "0064 0004"  # base seq 100, status count 4
        "00000a 00"  # reference time 10 (x64 ms), fb pkt count 0
        "d280"  # 2-bit vector: 01 00 10 10 + 3 unused symbols
        "05 012c ffff"  # deltas: 5, 300, -1
        "00"  # padding to 32 bits
    )
    fb = _testhooks.twcc_parse_feedback(pkt)
    assert fb == {
        "base_seq": 100, "status_count": 4, "ref_time": 10, "fb_count": 0,
        "statuses": [1, 0, 2, 2], "deltas": [5, 0, 300, -1],
    }
    assert r.build_feedback() == b""


def test_hand_built_run_length_and_one_bit_vector():
    r = _testhooks.TwccReceiver()
    base = 64000 * 3
    for i in range(20):  # 20 received, 1 ms apart: run-length chunk
        r.on_packet((65530 + i) & 0xFFFF, base + i * 1000)  # wraps past 65535
    pkt = r.build_feedback(1, 2)
    chunk = (0 << 15) | (1 << 13) | 20
    expected = bytes((0x8F, 205)) + struct.pack("!H", (20 + 2 + 20) // 4)
    expected += struct.pack("!IIHH", 1, 2, 65530, 20) + bytes((0, 0, 3, 0))
    expected += struct.pack("!H", chunk) + bytes([0] + [4] * 19) + bytes(2)
    assert pkt == expected
    # then 14 alternating: 1-bit status vector
    t = base + 19 * 1000
    for i in range(14):
        if i % 2 == 0:
            t += 500
            r.on_packet((65530 + 20 + i) & 0xFFFF, t)
    r.on_packet((65530 + 34) & 0xFFFF, t + 250)  # ends with a received packet
    pkt = r.build_feedback(1, 2)
    fb = _testhooks.twcc_parse_feedback(pkt)
    assert fb["base_seq"] == 14 and fb["status_count"] == 15 and fb["fb_count"] == 1
    assert pkt[20:22] == struct.pack("!H", 0x8000 | int("10101010101010", 2))
    assert fb["statuses"] == [1, 0] * 7 + [1]


def test_parser_reads_run_length_of_lost_and_sign_extends_ref_time():
    # base 7, 10 statuses: run of 9 "not received" then a vector with 1 small
    body = struct.pack("!IIHH", 9, 8, 7, 10) + bytes((0xFF, 0xFF, 0xFE, 42))
    body += struct.pack("!HH", 9, 0x8000 | (1 << 13)) + bytes((200,)) + bytes(3)
    pkt = bytes((0x8F, 205)) + struct.pack("!H", (4 + len(body)) // 4 - 1) + body
    fb = _testhooks.twcc_parse_feedback(pkt)
    assert fb["ref_time"] == -2 and fb["fb_count"] == 42 and fb["base_seq"] == 7
    assert fb["statuses"] == [0] * 9 + [1] and fb["deltas"] == [0] * 9 + [200]


def test_parser_rejects():
    r = _testhooks.TwccReceiver()
    for i in range(5):
        r.on_packet(i, 1000 * i)
    pkt = r.build_feedback()
    assert isinstance(_testhooks.twcc_parse_feedback(pkt), dict)
    assert _testhooks.twcc_parse_feedback(pkt[:19]) == ETOO_SHORT
    assert _testhooks.twcc_parse_feedback(pkt[:-4]) == ETOO_SHORT  # length field says more
    assert _testhooks.twcc_parse_feedback(bytes((0x81,)) + pkt[1:]) == EHEADER  # NACK
    assert _testhooks.twcc_parse_feedback(pkt[:1] + bytes((206,)) + pkt[2:]) == EHEADER
    assert _testhooks.twcc_parse_feedback(pkt, max=4) == ENO_ROOM
    # status count larger than the chunks/deltas present
    bad = bytearray(pkt)
    bad[14:16] = struct.pack("!H", 200)
    assert _testhooks.twcc_parse_feedback(bytes(bad)) == ETOO_SHORT
    # reserved symbol 3 in a run-length chunk and in a 2-bit vector
    body = struct.pack("!IIHH", 1, 2, 0, 1) + bytes(4)
    for chunk in (0x6001, 0xF000):
        p = bytes((0x8F, 205, 0, 5)) + body + struct.pack("!H", chunk) + bytes(2)
        assert _testhooks.twcc_parse_feedback(p) == ECHUNK


def test_read_ext():
    assert _testhooks.twcc_read_ext(b"\x12\x34") == 0x1234
    assert _testhooks.twcc_read_ext(b"\xff\xff\x00") == 0xFFFF
    assert _testhooks.twcc_read_ext(b"\x12") is None


# ------------------------------------------------------------------ round trips

def test_gaps_duplicates_and_fb_count():
    r = _testhooks.TwccReceiver()
    events = [(s, 10_000 + s * 2000) for s in range(0, 50) if s % 7 != 3]
    for s, a in events:
        assert r.on_packet(s, a) == 1
    assert r.on_packet(11, 99) == 0  # duplicate: first arrival kept
    fbs = drain(r)
    rep = check(events, fbs)
    assert [s for s, a in rep if a is None] == [3, 10, 17, 24, 31, 38, 45]
    assert r.counters["duplicates"] == 1
    # the next feedback starts where the last one ended; lost before a new
    # arrival are reported as not received
    r.on_packet(53, 200_000)
    fbs2 = drain(r)
    assert fbs2[0]["base_seq"] == 50 and fbs2[0]["statuses"] == [0, 0, 0, 1]
    assert fbs2[0]["fb_count"] == fbs[-1]["fb_count"] + 1
    # a packet that arrives after its seq was reported is ignored
    assert r.on_packet(51, 210_000) == 0 and r.counters["late"] == 1
    assert not r.pending and r.build_feedback() == b""


def test_fb_count_wraps():
    r = _testhooks.TwccReceiver()
    counts = []
    for i in range(300):
        r.on_packet(i, i * 1000)
        counts.append(drain(r)[0]["fb_count"])
    assert counts == [i % 256 for i in range(300)]


def test_reordering_gives_negative_deltas():
    r = _testhooks.TwccReceiver()
    order = [5, 6, 8, 7, 9, 4, 10]  # 4 arrives late but before any feedback
    events = [(s, 1_000_000 + i * 3000) for i, s in enumerate(order)]
    for s, a in events:
        assert r.on_packet(s, a) == 1
    fbs = drain(r)
    assert fbs[0]["base_seq"] == 4
    check(events, fbs)
    assert min(min(fb["deltas"]) for fb in fbs) < 0
    assert 2 in fbs[0]["statuses"]


def test_wrap_of_transport_seq():
    r = _testhooks.TwccReceiver()
    events = [((65500 + i) & 0xFFFF, 5_000_000 + i * 700) for i in range(100) if i % 11]
    for s, a in events:
        r.on_packet(s, a)
    fbs = drain(r)
    rep = check(events, fbs)
    assert rep[0][0] == 65501 and rep[-1][0] == events[-1][0] == 62


def test_wrap_of_reference_time():
    r = _testhooks.TwccReceiver()
    start = REF_WRAP_US - 3 * 64000 - 123  # a few packets before the 24-bit wrap
    events = [(i, start + i * 40_000) for i in range(20)]
    half = 10
    for s, a in events[:half]:
        r.on_packet(s, a)
    fbs = drain(r)
    for s, a in events[half:]:
        r.on_packet(s, a)
    fbs += drain(r)
    check(events, fbs)
    assert fbs[0]["ref_time"] == -4  # 2^24 - 4, sign-extended from 24 bits
    assert fbs[1]["ref_time"] == 3  # wrapped


def test_long_runs_use_run_length_chunks():
    r = _testhooks.TwccReceiver()
    events = [(s, s * 1000) for s in range(300)]  # 300 received, same small delta
    events += [(s, s * 1000) for s in range(800, 900)]  # 500 lost in between
    for s, a in events:
        r.on_packet(s, a)
    fbs = drain(r)
    check(events, fbs)
    assert len(fbs) == 1
    pkt = fbs[0]["raw"]
    # run-length chunks: 300 small, 500 lost; then the first arrival after
    # the gap is 2004 ticks later (large) so a 2-bit vector, then a run of 93
    assert pkt[20:24] == struct.pack("!HH", (1 << 13) | 300, 500)
    assert pkt[24:28] == struct.pack("!HH", 0xC000 | int("10010101010101", 2), (1 << 13) | 93)
    assert len(pkt) == ((20 + 8 + 300 + 2 + 99) + 3) // 4 * 4


def test_split_by_capacity():
    r = _testhooks.TwccReceiver()
    rnd = random.Random(1)
    events = [(s, s * 2000 + rnd.randrange(-3000, 3000) + 10**7) for s in range(1000) if rnd.random() < 0.9]
    for s, a in events:
        r.on_packet(s, a)
    fbs = drain(r, cap=100)
    assert len(fbs) > 10
    check(events, fbs)
    assert [fb["fb_count"] for fb in fbs] == list(range(len(fbs)))
    with pytest.raises(ValueError):
        r2 = _testhooks.TwccReceiver()
        r2.on_packet(1, 0)
        r2.build_feedback(cap=23)


def test_split_when_delta_too_large():
    r = _testhooks.TwccReceiver()
    events = [(0, 1_000_000), (1, 1_000_250), (3, 1_000_250 + 9_000_000), (4, 1_000_000)]
    for s, a in events:
        r.on_packet(s, a)
    fbs = drain(r)
    assert len(fbs) == 3  # +9 s and then -9 s do not fit 16-bit deltas
    assert fbs[0]["base_seq"] == 0 and fbs[0]["status_count"] == 2
    assert fbs[1]["base_seq"] == 2 and fbs[1]["statuses"] == [0, 1]
    check(events, fbs)


def test_window_bounds_feedback():
    r = _testhooks.TwccReceiver()
    r.on_packet(0, 0)
    r.on_packet(5000, 1000)  # far ahead: older seqs fall out of the window
    fbs = drain(r)
    assert sum(fb["status_count"] for fb in fbs) <= 1024
    assert decode(fbs)[-1] == (5000, 1000 // 250 * 250)
    assert r.on_packet(0, 2000) == 0  # way behind the window


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(-20_000, 20_000)),
        min_size=1, max_size=120,
    ),
    st.integers(0, 65535),
    st.integers(0, REF_WRAP_US * 2),
    st.sampled_from([48, 100, 1200]),
)
@settings(max_examples=150, deadline=None)
def test_random_round_trip(steps, seq0, t0, cap):
    """Random reordering/loss/jitter: feedback built in rounds reports every
    first arrival exactly once (those arriving after their feedback are late)."""
    r = _testhooks.TwccReceiver()
    events, fbs = [], []
    reported = set()
    seq, t = seq0, t0
    for i, (jump, jitter) in enumerate(steps):
        s = (seq + jump - 10) & 0xFFFF  # mostly forward, sometimes back
        a = max(0, t + jitter)
        if r.on_packet(s, a):
            events.append((s, a))
        seq, t = (seq + 1) & 0xFFFF, t + 5000
        if i % 17 == 16:
            new = drain(r, cap)
            fbs += new
    fbs += drain(r, cap)
    rep = decode(fbs)
    got = {s: a for s, a in rep if a is not None}
    assert len(got) == len([1 for _, a in rep if a is not None])
    first = {}
    for s, a in events:
        first.setdefault(s, a)
    assert got == {s: (a // 250 * 250) % REF_WRAP_US for s, a in first.items()}


@given(st.binary(max_size=120))
@settings(max_examples=400, deadline=None)
def test_parser_survives_random_bytes(data):
    res = _testhooks.twcc_parse_feedback(data)
    assert isinstance(res, int) and res < 0 or len(res["statuses"]) == res["status_count"]


@given(st.binary(min_size=8, max_size=100), st.integers(0, 400))
@settings(max_examples=400, deadline=None)
def test_parser_survives_random_bodies(tail, count):
    body = struct.pack("!IIHH", 1, 2, 3, count) + tail
    body += bytes(-len(body) % 4)
    data = bytes((0x8F, 205)) + struct.pack("!H", (4 + len(body)) // 4 - 1) + body
    res = _testhooks.twcc_parse_feedback(data, max=300)
    if isinstance(res, dict):
        assert res["status_count"] == count == len(res["deltas"])
        assert all(s in (0, 1, 2) for s in res["statuses"])
    else:
        assert res < 0
