"""Packet store and per-consumer sequence map (src/rtx_buffer.h)."""

from __future__ import annotations

import pytest

from sfu._fastpath import _testhooks

M = 0xFFFF


def pkt(seq, size=100):
    return bytes([0x80, 96, seq >> 8, seq & 0xFF]) + bytes(8) + bytes([seq & 0xFF]) * (size - 12)


@pytest.mark.parametrize("capacity", [0, 3, 100, 65536, 1 << 20])
def test_store_rejects_bad_capacity(capacity):
    with pytest.raises(ValueError):
        _testhooks.PacketStore(capacity)


@pytest.mark.parametrize("start", [0, 1, 32767, 32768, 65534, 65535, 65530])
def test_store_put_get_and_overwrite(start):
    s = _testhooks.PacketStore(8)
    for i in range(8):
        assert s.put((start + i) & M, pkt((start + i) & M), 10)
    for i in range(8):
        assert s.get((start + i) & M, 10) == pkt((start + i) & M)
    # the 9th overwrites the oldest
    assert s.put((start + 8) & M, pkt((start + 8) & M), 11)
    assert s.get(start, 11) is None
    assert s.get((start + 1) & M, 11) == pkt((start + 1) & M)
    assert s.get((start + 8) & M, 11) == pkt((start + 8) & M)
    # absent: never stored, newer than anything, far in the past
    assert s.get((start + 9) & M, 11) is None
    assert s.get((start + 30000) & M, 11) is None
    assert s.get((start - 1000) & M, 11) is None


def test_store_too_old_put_is_ignored():
    s = _testhooks.PacketStore(8)
    s.put(100, pkt(100))
    assert not s.put(92, pkt(92))        # 8 behind: slot belongs to 100
    assert s.get(100) == pkt(100)
    assert s.put(93, pkt(93))            # 7 behind: fine (late/out of order)
    assert s.get(93) == pkt(93)


def test_store_gaps_do_not_alias():
    s = _testhooks.PacketStore(8)
    s.put(1, pkt(1))
    s.put(9 + 8, pkt(17))  # jump: slot 1 still holds 1, which is now out of the window
    assert s.get(1) is None
    assert s.get(9) is None
    assert s.get(17) == pkt(17)
    # a slot never written since its number came round again (65536 later)
    s2 = _testhooks.PacketStore(8)
    s2.put(5, pkt(5))
    for i in range(6, 6 + 65536, 4096):  # jumps of 4096 keep landing in slot 6
        s2.put(i & M, pkt(i & M))
    s2.put(7, pkt(7))  # 5 is inside the window again
    assert s2.get(5) is None
    assert s2.get(7) == pkt(7)


def test_store_age():
    s = _testhooks.PacketStore(16)
    s.put(1, pkt(1), 1000)
    assert s.get(1, 1500, 500) == pkt(1)
    assert s.get(1, 1501, 500) is None
    assert s.get(1, 99999, 0) == pkt(1)  # 0 = no age limit
    c = s.counters
    assert (c["stored"], c["hits"], c["misses"]) == (1, 2, 1)


def test_store_sizes_and_clear():
    s = _testhooks.PacketStore(512)
    big = bytes([0x80, 96, 0, 7]) + bytes(1496)
    assert len(big) == _testhooks.STORE_MAX_PACKET
    assert s.put(7, big)
    assert s.get(7) == big
    assert not s.put(8, big + b"x")
    assert not s.put(9, b"")
    assert s.get(8) is None and s.get(9) is None
    s.put(10, pkt(10, 20))
    assert s.get(10) == pkt(10, 20)  # a shorter packet in a slot keeps its own length
    s.clear()
    assert s.get(7) is None and s.get(10) is None
    assert s.put(3, pkt(3)) and s.get(3) == pkt(3)  # restarts at any number


@pytest.mark.parametrize("start", [0, 32767, 65000, 65535])
def test_seq_map_put_get(start):
    m = _testhooks.SeqMap()
    assert m.get(start) is None
    for i in range(2000):
        m.put((start + i) & M, (40000 + 3 * i) & M)
    hi = (start + 1999) & M
    assert m.get(hi) == (40000 + 3 * 1999) & M
    assert m.get((hi - 1023) & M) == (40000 + 3 * (1999 - 1023)) & M
    assert m.get((hi - 1024) & M) is None     # overwritten
    assert m.get((hi + 1) & M) is None        # not yet sent
    assert m.get((hi - 30000) & M) is None


def test_seq_map_aliasing_and_gaps():
    m = _testhooks.SeqMap()
    m.put(5, 500)
    m.put(5 + 1024, 600)
    assert m.get(5) is None
    assert m.get(5 + 1024) == 600
    m.put(5 + 1023, 700)  # older, inside the window: allowed
    assert m.get(5 + 1023) == 700
    m.put(5, 1)           # 1024 behind the newest: ignored
    assert m.get(5) is None
    m2 = _testhooks.SeqMap()
    m2.put(10, 1)
    m2.put(11, 2)
    assert m2.get(12) is None  # a skipped output number is unknown
    m3 = _testhooks.SeqMap()
    m3.put(5, 1)
    for i in range(6, 6 + 65536, 4096):
        m3.put(i & M, 2)
    m3.put(7, 3)
    assert m3.get(5) is None   # not the entry from 65536 numbers ago


def test_seq_map_resend_once_per_rtt():
    m = _testhooks.SeqMap()
    m.put(100, 7)
    assert not m.may_resend(101, 0, 50)       # unknown
    assert m.may_resend(100, 1000, 50)
    assert not m.may_resend(100, 1000, 50)
    assert not m.may_resend(100, 1049, 50)
    assert m.may_resend(100, 1050, 50)
    assert not m.may_resend(100, 1099, 0)     # rtt 0 = 100 ms
    assert m.may_resend(100, 1150, 0)
    m.put(100, 8)                             # reused: resend time cleared
    assert m.may_resend(100, 1151, 50)
    m.put(101, 9)
    assert m.may_resend(101, 1151, 50)        # independent per number
    assert m.may_resend(100, (1 << 32) + 5000, 50)  # time beyond 32 bits
    assert not m.may_resend(100, (1 << 32) + 5010, 50)


def test_store_and_map_together():
    """NACK for a consumer output number -> input number -> stored packet."""
    store = _testhooks.PacketStore(512)
    m = _testhooks.SeqMap()
    for i in range(600):
        in_seq = (65500 + i) & M
        store.put(in_seq, pkt(in_seq), i)
        if i % 3:  # the consumer forwards 2 of 3 (out numbers stay contiguous)
            m.put((i * 2 // 3) & M, in_seq)
    out = (599 * 2 // 3) & M
    in_seq = m.get(out)
    assert in_seq == (65500 + 599) & M
    assert store.get(in_seq, 600, 1000) == pkt(in_seq)
    assert m.may_resend(out, 600, 100) and not m.may_resend(out, 601, 100)


def test_store_expired_tells_too_old_from_never_stored():
    """A viewer's NACK of a packet the store no longer holds: too old
    (behind the window, or aged out) is lost for good; never stored (lost on
    the way in, within the window) may still come from the publisher."""
    s = _testhooks.PacketStore(16)
    s.put(100, pkt(100), 1000)
    s.put(102, pkt(102), 1010)            # 101 never arrived
    assert not s.expired(100, 1100, 500)  # stored, fresh
    assert not s.expired(101, 1100, 500)  # a hole in the window: maybe on its way
    assert not s.expired(103, 1100, 500)  # ahead of the newest: not expired
    assert s.expired(100, 1600, 500)      # stored, aged out
    assert not s.expired(101, 1600, 500)
    for seq in range(103, 130):
        s.put(seq, pkt(seq), 1700)
    assert s.expired(100, 1700, 500) and s.expired(101, 1700, 500)  # behind the window
    assert not s.expired(129, 1700, 500)
