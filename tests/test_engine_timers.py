"""The engine's timer work runs at each unit's own deadline (sans-IO, virtual
time): sfu_engine_tick returns the exact time to the soonest due item (NACK
retry, keyframe retry, deferred keyframe request, REMB, transport-cc
feedback, SR/RR), a tick before it does no work, and work that appears
between ticks pulls the deadline in (sfu/_fastpath/src/timers.h)."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from sfu._fastpath import _testhooks

PUB = ("127.0.0.1", 5000)
V1 = ("127.0.0.1", 6001)
V2 = ("127.0.0.1", 6002)
S, RTX_S = 0xAAAA0000, 0xBBBB0000
C1, C1_RTX, C2 = 0xC1, 0xC1F, 0xC2
TWCC_ID = 5
KEY, DELTA = b"\x10\x00key", b"\x00\x01delta"  # VP8: S=1 and P=0 / P=1

# Index of SFU_C_TIMER_RUNS in engine.h's enum sfu_counter (the last one).
TIMER_RUNS_INDEX = 43


@pytest.fixture(autouse=True)
def _timer_runs_name(monkeypatch):
    """Engine.counters() names the counters from _testhooks.COUNTER_NAMES; until
    that tuple lists "timer_runs", name the engine's counter here."""
    names = _testhooks.COUNTER_NAMES
    if "timer_runs" not in names:
        assert len(names) == TIMER_RUNS_INDEX, names
        monkeypatch.setattr(_engine, "COUNTER_NAMES", names + ("timer_runs",))


def runs(e) -> int:
    return e.counters()["timer_runs"]


def media(seq: int, payload: bytes = DELTA, twcc: int | None = None) -> bytes:
    first, ext = 0x80, b""
    if twcc is not None:
        first |= 0x10
        ext = struct.pack("!HHBH", 0xBEDE, 1, (TWCC_ID << 4) | 1, twcc) + b"\x00"
    return struct.pack("!BBHII", first, 96, seq, 3000 * seq, S) + ext + payload


def remb(sender: int, bps: int, ssrcs: list[int]) -> bytes:
    exp = 0
    while bps >> exp >= 1 << 18:
        exp += 1
    body = b"REMB" + bytes([len(ssrcs)]) + (((exp << 18) | (bps >> exp)) & 0xFFFFFF).to_bytes(3, "big")
    body += b"".join(struct.pack("!I", s) for s in ssrcs)
    return struct.pack("!BBHII", 0x8F, 206, 2 + len(body) // 4, sender, 0) + body


def pli(sender: int, media_ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x81, 206, 2, sender, media_ssrc)


def rtcp(out, addr, pt: int, fmt: int | None = None) -> list[bytes]:
    """The RTCP packets of type pt (and FMT/count) sent to addr."""
    return [d for _, a, d in out
            if a == addr and len(d) >= 8 and d[1] == pt and (fmt is None or d[0] & 0x1F == fmt)]


def remb_bps(pkt: bytes) -> int:
    v = int.from_bytes(pkt[17:20], "big")
    return (v & 0x3FFFF) << (v >> 18)


class Rig:
    """A publisher (VP8, NACK, RTX, transport-cc) and two viewers, all on
    virtual sockets; nothing has happened before `start` ms."""

    def __init__(self, start: int = 1000) -> None:
        e = self.e = _testhooks.SansIOEngine()
        self.s_pub, self.s1, self.s2 = e.add_socket(-1), e.add_socket(-1), e.add_socket(-1)
        self.t_pub, self.t1, self.t2 = (e.add_transport(self.s_pub), e.add_transport(self.s1),
                                        e.add_transport(self.s2))
        for t, a in ((self.t_pub, PUB), (self.t1, V1), (self.t2, V2)):
            e.connect_transport(t, a)
        self.p = e.add_producer(self.t_pub, True, [(S, RTX_S)], {96: 101, 97: 102}, {TWCC_ID: TWCC_ID},
                                codecs={101: "vp8"})
        e.set_producer_feedback(self.p, nack=True, rtx_apt={97: 96}, twcc_ext_id=TWCC_ID, clock_rate=90000)
        self.c1 = e.add_consumer(self.t1, self.p, C1, C1_RTX, 90000, {101: 101, 102: 102}, {}, initial_seq=100)
        e.set_consumer_feedback(self.c1, nack=True, rtx_pt=102)
        self.c2 = e.add_consumer(self.t2, self.p, C2, 0, 90000, {101: 101}, {}, initial_seq=200)
        # First reports of every transport (rates start here): next ones at
        # start + 1000; the engine's first keyframe request for the new viewers.
        assert e.tick(start) == 1000
        self.first_out = e.take_outbox()

    def send(self, sock, addr, data: bytes, now: int):
        self.e.receive(sock, addr, data, now)
        return self.e.take_outbox()


def test_an_engine_with_no_timer_work_sleeps_and_a_tick_does_nothing():
    e = _testhooks.SansIOEngine()
    e.add_socket(-1)
    assert e.tick(0) == -1
    assert e.tick(5000) == -1
    assert runs(e) == 0 and e.take_outbox() == []


def test_reports_are_due_one_interval_after_the_last_and_nothing_runs_before():
    e = _testhooks.SansIOEngine()
    s = e.add_socket(-1)
    t = e.add_transport(s)  # a new transport pulls its first report in
    e.connect_transport(t, V1)
    assert e.tick(400) == 600
    assert runs(e) == 0
    assert e.tick(1000) == 1000
    assert runs(e) == 1
    for now in range(1001, 2000, 7):  # nothing due: no unit is looked at
        assert e.tick(now) == 2000 - now
    assert runs(e) == 1
    assert e.tick(2000) == 1000
    assert runs(e) == 2


def test_a_later_transport_joins_the_report_round_one_deadline_for_all():
    e = _testhooks.SansIOEngine()
    s1, s2 = e.add_socket(-1), e.add_socket(-1)
    t1 = e.add_transport(s1)
    e.connect_transport(t1, V1)
    assert e.tick(1000) == 1000
    t2 = e.add_transport(s2)  # at 1300: reports with t1's at 2000, not a phase of its own
    e.connect_transport(t2, V2)
    assert e.tick(1300) == 700
    assert runs(e) == 1
    assert e.tick(2000) == 1000
    assert e.tick(2500) == 500
    assert runs(e) == 2  # one pass a second for both


def test_a_nack_retry_goes_out_exactly_when_due_not_on_a_20_ms_grid():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, KEY), 1001)
    out = r.send(r.s_pub, PUB, media(3), 1013)  # 2 is missing: NACKed at once
    (first,) = rtcp(out, PUB, 205, 1)
    assert struct.unpack_from("!IHH", first, 8) == (S, 2, 0)
    # the retry is one RTT (100 ms by default) after that NACK: 1113
    assert r.e.tick(1013) == 100
    r.e.take_outbox()
    n = runs(r.e)
    assert r.e.tick(1050) == 63
    assert r.e.tick(1112) == 1
    assert rtcp(r.e.take_outbox(), PUB, 205, 1) == []
    assert runs(r.e) == n  # nothing was due: no work
    assert r.e.tick(1113) == 100  # the next retry at 1213
    (retry,) = rtcp(r.e.take_outbox(), PUB, 205, 1)
    assert struct.unpack_from("!IHH", retry, 8) == (S, 2, 0)
    assert runs(r.e) == n + 1
    # recovered by RTX: no more retries; the next deadline is the reports'
    rtx = struct.pack("!BBHII", 0x80, 97, 500, 6000, RTX_S) + struct.pack("!H", 2) + DELTA
    r.send(r.s_pub, PUB, rtx, 1150)
    assert r.e.tick(1213) == 787  # the cached 1213 found nothing: reports at 2000
    assert rtcp(r.e.take_outbox(), PUB, 205, 1) == []
    assert r.e.tick(1214) == 786


def test_a_new_nack_hole_pulls_the_deadline_in_without_a_scan():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, KEY), 1001)
    assert r.e.tick(1001) == 999  # the keyframe ended the viewers' wait: reports at 2000
    n = runs(r.e)
    r.send(r.s_pub, PUB, media(4), 1337)  # 2 and 3 missing
    assert r.e.tick(1337) == 100  # the cached deadline moved from 2000 to 1437
    assert runs(r.e) == n
    assert r.e.tick(1436) == 1
    assert rtcp(r.e.take_outbox(), PUB, 205, 1) == []
    r.e.tick(1437)
    (retry,) = rtcp(r.e.take_outbox(), PUB, 205, 1)
    assert struct.unpack_from("!IHH", retry, 8) == (S, 2, 1)  # 2 and 3 (BLP bit 0)


def test_nack_entries_expire_at_their_deadline_and_stop_the_retries():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, KEY), 1001)
    r.send(r.s_pub, PUB, media(3), 1010)
    sent, now = [], 1010
    while True:
        nxt = r.e.tick(now)
        sent += [now for _ in rtcp(r.e.take_outbox(), PUB, 205, 1)]
        if now > 2100:
            break
        now += nxt
    # retries every 100 ms after the first NACK (at 1010), at most 10 NACKs
    assert sent == [1110 + 100 * k for k in range(9)]
    assert r.e.producer_stats(r.p)[0]["nackCount"] >= 1


def test_keyframe_retry_is_exact_and_waits_for_the_publisher_to_send():
    r = Rig()
    # the viewers were added before the first tick: the engine asked at 1000
    # (keyframe_policy.c), and that PLI gets "lost"
    assert len(rtcp(r.first_out, PUB, 206, 1)) == 1
    r.send(r.s_pub, PUB, media(1), 1240)  # delta frames: the viewers wait
    assert r.e.tick(1240) == 760   # the retry (1 s after the request) and the reports: 2000
    assert r.e.tick(1999) == 1
    assert rtcp(r.e.take_outbox(), PUB, 206, 1) == []
    assert r.e.tick(2000) == 1000
    assert len(rtcp(r.e.take_outbox(), PUB, 206, 1)) == 1
    assert r.e.counters()["keyframe_retries"] == 1
    # the publisher goes silent: at 3000 nothing is asked for, until it sends again
    assert r.e.tick(3000) == 1000
    assert rtcp(r.e.take_outbox(), PUB, 206, 1) == []
    n = runs(r.e)
    r.send(r.s_pub, PUB, media(2), 3500)  # its next packet pulls the retry in
    assert r.e.tick(3500) == 500
    assert len(rtcp(r.e.take_outbox(), PUB, 206, 1)) == 1
    assert runs(r.e) == n + 1
    # a keyframe ends the wait: no more retries
    r.send(r.s_pub, PUB, media(3, KEY), 3600)
    for now in range(3600, 8000, 250):
        r.e.tick(now)
    assert rtcp(r.e.take_outbox(), PUB, 206, 1) == []
    assert r.e.counters()["keyframe_retries"] == 2


def test_a_deferred_keyframe_request_is_due_at_the_end_of_the_window():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, KEY), 1001)
    r.e.tick(1001)
    r.e.take_outbox()
    assert len(rtcp(r.send(r.s1, V1, pli(0x91, C1), 1010), PUB, 206, 1)) == 1
    assert rtcp(r.send(r.s2, V2, pli(0x92, C2), 1100), PUB, 206, 1) == []  # coalesced
    n = runs(r.e)
    assert r.e.tick(1100) == 410  # the window ends at 1510
    assert r.e.tick(1509) == 1
    assert runs(r.e) == n
    assert rtcp(r.e.take_outbox(), PUB, 206, 1) == []
    assert r.e.tick(1510) == 490  # then the reports at 2000
    assert len(rtcp(r.e.take_outbox(), PUB, 206, 1)) == 1


def test_transport_cc_feedback_the_first_arrival_pulls_it_in_then_every_100_ms():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, KEY, twcc=100), 1001)
    assert r.e.tick(1001) == 999  # the first feedback goes at once
    assert len(rtcp(r.e.take_outbox(), PUB, 205, 15)) == 1
    n = runs(r.e)
    r.send(r.s_pub, PUB, media(2, twcc=101), 1050)
    assert r.e.tick(1050) == 51  # pulled in to 1101 without a scan
    assert runs(r.e) == n
    r.send(r.s_pub, PUB, media(3, twcc=102), 1060)
    assert r.e.tick(1100) == 1
    assert rtcp(r.e.take_outbox(), PUB, 205, 15) == []
    assert r.e.tick(1101) == 899  # nothing more pending: reports at 2000
    (fb,) = rtcp(r.e.take_outbox(), PUB, 205, 15)
    assert struct.unpack_from("!HH", fb, 12) == (101, 2)


def test_remb_is_due_one_interval_after_the_last_or_at_once_on_a_drop():
    r = Rig()
    r.send(r.s1, V1, remb(0x91, 900_000, [C1]), 1010)
    assert r.e.tick(1010) == 990  # the first estimate goes at once; reports at 2000
    (first,) = rtcp(r.e.take_outbox(), PUB, 206, 15)
    assert remb_bps(first) == 900_000
    r.send(r.s1, V1, remb(0x91, 800_000, [C1]), 1100)  # -11%: waits for the interval
    assert r.e.tick(1100) == 900
    assert rtcp(r.e.take_outbox(), PUB, 206, 15) == []
    assert r.e.tick(2000) == 10
    r.e.take_outbox()
    assert r.e.tick(2010) == 990
    (second,) = rtcp(r.e.take_outbox(), PUB, 206, 15)
    assert remb_bps(second) == 800_000
    n = runs(r.e)
    r.send(r.s2, V2, remb(0x92, 300_000, [C2]), 2100)  # a drop of more than 25%: at once
    assert r.e.tick(2100) == 900
    (third,) = rtcp(r.e.take_outbox(), PUB, 206, 15)
    assert remb_bps(third) == 300_000
    assert runs(r.e) == n + 1


def test_a_new_consumer_pulls_the_deadline_in_for_its_keyframe():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, KEY), 1001)
    assert r.e.tick(1001) == 999
    r.send(r.s_pub, PUB, media(2), 1200)
    s3 = r.e.add_socket(-1)
    t3 = r.e.add_transport(s3)  # joins the others' reports at 2000
    r.e.connect_transport(t3, ("127.0.0.1", 6003))
    r.e.add_consumer(t3, r.p, 0xC3, 0, 90000, {101: 101}, {})
    # the new viewer waits for a keyframe and the publisher sends: one is asked
    # for; 199 ms after the last keyframe, so its retry is due one 500 ms
    # interval later (the encoder may ignore it), before the reports at 2000
    assert r.e.tick(1200) == 500
    assert len(rtcp(r.e.take_outbox(), PUB, 206, 1)) == 1


def test_the_io_thread_wakes_for_timer_work_added_while_it_sleeps_and_does_not_spin():
    e = _testhooks.SansIOEngine()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    s = e.add_socket(sock.detach())
    e.start()
    try:
        deadline = time.monotonic() + 60
        while e.counters()["loop_iterations"] < 1:  # the thread ran its first tick
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert runs(e) == 0  # nothing scheduled: it sleeps (at most 1 s a time)
        t = e.add_transport(s)  # reports due at once: the eventfd wakes it
        e.connect_transport(t, V1)
        while runs(e) < 2:  # the first reports, then the next ones a second later
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # about one wake-up per deadline, not a loop around an unread eventfd
        assert e.counters()["loop_iterations"] < 100
    finally:
        e.stop()
