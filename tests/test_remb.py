"""REMB (draft-alvestrand-rmcat-remb-03) parse/build and the per-producer
aggregator (src/remb.c through the feedback.pxi test hooks)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu._fastpath import _testhooks

ETOO_SHORT, EHEADER, ENOT_REMB, ENO_ROOM, EARG = -1, -2, -3, -4, -5


def remb_by_hand(sender: int, exp: int, mantissa: int, ssrcs, *, media: int = 0) -> bytes:
    """The draft's layout written out field by field."""
    words = 4 + len(ssrcs)  # length in 32-bit words minus one
    out = bytes((0x80 | 15, 206)) + struct.pack("!H", words)
    out += struct.pack("!II", sender, media) + b"REMB"
    out += bytes((len(ssrcs),)) + struct.pack("!I", (exp << 18) | mantissa)[1:]
    out += b"".join(struct.pack("!I", s) for s in ssrcs)
    return out


def test_draft_layout_byte_for_byte():
    # 1 Mbit/s: the smallest exponent with mantissa < 2^18 is 2 (250000 << 2).
    pkt = _testhooks.remb_build(0x11223344, 1_000_000, [0xAABBCCDD, 0x01020304])
    assert pkt == bytes.fromhex(
        "8f ce 0006"  # V=2 FMT=15, PT=206, length 6
        "11223344"  # sender SSRC
        "00000000"  # media SSRC 0
        "52454d42"  # 'R' 'E' 'M' 'B'
        "02"  # Num SSRC
        "0b d0 90"  # exp=2 (000010), mantissa=250000 (0x3D090)
        "aabbccdd 01020304"
    )
    assert pkt == remb_by_hand(0x11223344, 2, 250000, [0xAABBCCDD, 0x01020304])
    assert _testhooks.remb_parse(pkt) == (2, 1_000_000, [0xAABBCCDD, 0x01020304])


@pytest.mark.parametrize(
    "bitrate, exp, mantissa",
    [
        (0, 0, 0),
        (1, 0, 1),
        (2**18 - 1, 0, 2**18 - 1),
        (2**18, 1, 2**17),
        (2**18 + 1, 1, 2**17),  # rounded down
        (10_000_000, 6, 156250),  # 10 Mbit/s = 156250 << 6
        (10_000_001, 6, 156250),
        (2**64 - 1, 46, 2**18 - 1),  # huge
        ((2**18 - 1) << 40, 40, 2**18 - 1),
    ],
)
def test_exponent_and_mantissa(bitrate, exp, mantissa):
    assert _testhooks.remb_encode_bitrate(bitrate) == (exp, mantissa)
    pkt = _testhooks.remb_build(7, bitrate, [9])
    assert pkt == remb_by_hand(7, exp, mantissa, [9])
    n, br, ssrcs = _testhooks.remb_parse(pkt)
    assert (n, br, ssrcs) == (1, mantissa << exp, [9])
    assert br <= bitrate and (bitrate - br) < (1 << exp)


def test_parse_saturates_when_value_exceeds_64_bits():
    pkt = remb_by_hand(1, 63, 2**18 - 1, [])
    assert _testhooks.remb_parse(pkt) == (0, 2**64 - 1, [])
    pkt = remb_by_hand(1, 46, 2**18 - 1, [])  # exactly fits
    assert _testhooks.remb_parse(pkt)[1] == (2**18 - 1) << 46
    pkt = remb_by_hand(1, 63, 1, [])  # 2^63 fits
    assert _testhooks.remb_parse(pkt)[1] == 2**63
    assert _testhooks.remb_parse(remb_by_hand(1, 63, 0, []))[1] == 0


def test_parse_media_ssrc_nonzero_accepted_and_max_ssrcs():
    pkt = remb_by_hand(1, 0, 1000, [1, 2, 3], media=5)
    assert _testhooks.remb_parse(pkt) == (3, 1000, [1, 2, 3])
    assert _testhooks.remb_parse(pkt, 2) == (3, 1000, [1, 2])
    assert _testhooks.remb_parse(pkt, 0) == (3, 1000, [])


def test_parse_rejects():
    good = remb_by_hand(1, 3, 12345, [10, 20])
    assert _testhooks.remb_parse(good[:19])[0] == ETOO_SHORT
    assert _testhooks.remb_parse(good[:-1])[0] == ETOO_SHORT  # length field says more
    # other ALFB message (PSFB FMT 15 but not REMB)
    assert _testhooks.remb_parse(good[:12] + b"GOOG" + good[16:])[0] == ENOT_REMB
    # wrong FMT (PLI is FMT 1), wrong PT (RTPFB), wrong version
    assert _testhooks.remb_parse(bytes((0x81,)) + good[1:])[0] == EHEADER
    assert _testhooks.remb_parse(good[:1] + bytes((205,)) + good[2:])[0] == EHEADER
    assert _testhooks.remb_parse(bytes((0x4F,)) + good[1:])[0] == EHEADER
    # Num SSRC larger than the packet
    bad = bytearray(good)
    bad[16] = 3
    assert _testhooks.remb_parse(bytes(bad))[0] == ETOO_SHORT
    # bytes past the packet's length (next packet of a compound) are ignored
    assert _testhooks.remb_parse(good + bytes(8))[:2] == (2, 12345 << 3)


def test_parse_with_padding():
    body = remb_by_hand(1, 0, 500, [42])
    words = (len(body) + 4) // 4 - 1
    padded = bytes((body[0] | 0x20, body[1])) + struct.pack("!H", words) + body[4:] + b"\0\0\0\x04"
    assert _testhooks.remb_parse(padded) == (1, 500, [42])


def test_build_errors():
    with pytest.raises(ValueError) as e:
        _testhooks.remb_build(1, 1000, [1, 2], cap=27)
    assert e.value.args[0] == ENO_ROOM
    assert len(_testhooks.remb_build(1, 1000, [1, 2], cap=28)) == 28
    with pytest.raises(ValueError) as e:
        _testhooks.remb_build(1, 1000, list(range(256)))
    assert e.value.args[0] == EARG
    pkt = _testhooks.remb_build(1, 1000, list(range(255)))
    assert len(pkt) == 20 + 4 * 255
    assert _testhooks.remb_parse(pkt) == (255, 1000, list(range(255)))
    assert _testhooks.remb_build(1, 1000, []) == remb_by_hand(1, 0, 1000, [])


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.lists(st.integers(0, 2**32 - 1), max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_round_trip(sender, bitrate, ssrcs):
    pkt = _testhooks.remb_build(sender, bitrate, ssrcs)
    n, br, got = _testhooks.remb_parse(pkt)
    assert n == len(ssrcs) and got == ssrcs
    exp, mantissa = _testhooks.remb_encode_bitrate(bitrate)
    assert br == mantissa << exp and mantissa < 2**18
    assert exp == 0 or (bitrate >> (exp - 1)) >= 2**18  # smallest exponent
    assert br <= bitrate


@given(st.binary(max_size=80))
@settings(max_examples=300, deadline=None)
def test_parse_survives_random_bytes(data):
    n, br, ssrcs = _testhooks.remb_parse(data)
    assert n < 0 or len(ssrcs) == n


@given(st.binary(min_size=16, max_size=60))
@settings(max_examples=300, deadline=None)
def test_parse_survives_random_remb_bodies(tail):
    data = bytes((0x8F, 206)) + struct.pack("!H", (16 + len(tail)) // 4 - 1) + bytes(8) + b"REMB" + tail
    n, br, ssrcs = _testhooks.remb_parse(data)
    assert n < 0 or len(ssrcs) == n


# ------------------------------------------------------------------ aggregator

def test_aggregator_min_over_consumers_and_pacing():
    a = _testhooks.RembAggregator()
    assert a.poll(0) is None  # nobody reported
    a.update(1, 2_000_000, 0)
    a.update(2, 800_000, 10)
    a.update(3, 1_500_000, 20)
    assert a.poll(20) == 800_000  # first value goes out at once
    assert a.poll(21) is None
    a.update(2, 700_000, 500)  # -12.5%: waits for the interval
    assert a.poll(500) is None
    assert a.poll(1019) is None
    assert a.poll(1020) == 700_000
    a.update(2, 3_000_000, 1100)  # increase: waits
    assert a.poll(1500) is None
    assert a.poll(2020) == 1_500_000  # min is now consumer 3
    # the periodic send repeats an unchanged value
    assert a.poll(3020) == 1_500_000


def test_aggregator_large_drop_sent_at_once():
    a = _testhooks.RembAggregator()
    a.update(1, 1_000_000, 0)
    assert a.poll(0) == 1_000_000
    a.update(1, 750_000, 100)  # exactly 25%: not "more than"
    assert a.poll(100) is None
    a.update(1, 749_999, 200)
    assert a.poll(200) == 749_999
    a.update(2, 100_000, 250)  # new consumer with a much lower estimate
    assert a.poll(250) == 100_000
    assert a.poll(260) is None


def test_aggregator_expiry_and_remove():
    a = _testhooks.RembAggregator()
    a.update(1, 500_000, 0)
    a.update(2, 900_000, 3000)
    assert a.poll(3000) == 500_000
    assert a.poll(5000) == 500_000  # consumer 1 is 5000 ms old: still live
    assert a.poll(6001) == 900_000  # 5001 ms: expired
    assert a.count == 1
    assert a.remove(2) == 1 and a.remove(2) == 0
    assert a.poll(9000) is None
    a.update(3, 300_000, 9000)
    assert a.poll(9000) == 300_000  # big drop from 900k: at once


def test_aggregator_floor():
    a = _testhooks.RembAggregator()
    a.update(1, 50_000, 0)
    assert a.poll(0, floor_bps=100_000) == 100_000
    a.update(1, 10_000, 10)
    assert a.poll(10, floor_bps=100_000) is None  # floored value unchanged
    assert a.poll(1000, floor_bps=100_000) == 100_000
    a.update(1, 400_000, 1100)
    assert a.poll(2000, floor_bps=100_000) == 400_000


def test_aggregator_full_keeps_lowest():
    a = _testhooks.RembAggregator()
    for i in range(64):
        assert a.update(i, 1_000_000 + i * 1000, 0) == 1
    assert a.count == 64
    assert a.update(100, 5_000_000, 0) == 0  # higher than everything: dropped
    assert a.update(101, 10_000, 0) == 1  # replaces the highest
    assert a.count == 64
    assert a.poll(0) == 10_000
    assert a.remove(63) == 0  # the highest (consumer 63) was evicted
    assert a.update(5, 1, 0) == 1  # existing consumer: update in place
    assert a.poll(1) == 1
    # expired entries free their slots
    assert a.update(200, 9_000_000, 10_000) == 1
    assert a.poll(10_000) == 9_000_000
    assert a.count == 1
