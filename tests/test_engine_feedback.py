"""The engine's feedback paths, sans-IO, with RTCP written by hand from the
RFCs: NACK -> retransmission (RTX and plain), RTX decapsulation, REMB
aggregation toward the producer, transport-cc feedback, SR/RR and RTT."""

from __future__ import annotations

import struct

from sfu._fastpath import _testhooks

PUB = ("127.0.0.1", 5000)
V1 = ("127.0.0.1", 6001)
V2 = ("127.0.0.1", 6002)
S, RTX_S = 0xAAAA0000, 0xBBBB0000
C1, C1_RTX, C2 = 0xC1, 0xC1F, 0xC2
TWCC_ID = 5


def media(seq: int, ts: int, payload: bytes = b"\x00\x01frame", twcc: int | None = None, ssrc: int = S,
          pt: int = 96) -> bytes:
    ext = b""
    first = 0x80
    if twcc is not None:
        first |= 0x10
        ext = struct.pack("!HHBH", 0xBEDE, 1, (TWCC_ID << 4) | 1, twcc) + b"\x00"
    return struct.pack("!BBHII", first, pt, seq, ts, ssrc) + ext + payload


def nack(sender: int, media_ssrc: int, pid: int, blp: int = 0) -> bytes:
    return struct.pack("!BBHIIHH", 0x81, 205, 3, sender, media_ssrc, pid, blp)


def remb(sender: int, bps: int, ssrcs: list[int]) -> bytes:
    exp = 0
    while bps >> exp >= 1 << 18:
        exp += 1
    body = b"REMB" + bytes([len(ssrcs)]) + (((exp << 18) | (bps >> exp)) & 0xFFFFFF).to_bytes(3, "big")
    body += b"".join(struct.pack("!I", s) for s in ssrcs)
    return struct.pack("!BBHII", 0x8F, 206, 2 + len(body) // 4, sender, 0) + body


class Rig:
    def __init__(self) -> None:
        e = self.e = _testhooks.SansIOEngine()
        self.s_pub, self.s1, self.s2 = e.add_socket(-1), e.add_socket(-1), e.add_socket(-1)
        self.t_pub, self.t1, self.t2 = e.add_transport(self.s_pub), e.add_transport(self.s1), e.add_transport(self.s2)
        for t, a in ((self.t_pub, PUB), (self.t1, V1), (self.t2, V2)):
            e.connect_transport(t, a)
        self.p = e.add_producer(self.t_pub, True, [(S, RTX_S)], {96: 101, 97: 102}, {TWCC_ID: TWCC_ID},
                                codecs={101: "vp8"})
        e.set_producer_feedback(self.p, nack=True, rtx_apt={97: 96}, twcc_ext_id=TWCC_ID, clock_rate=90000)
        self.c1 = e.add_consumer(self.t1, self.p, C1, C1_RTX, 90000, {101: 101, 102: 102}, {}, initial_seq=100)
        e.set_consumer_feedback(self.c1, nack=True, rtx_pt=102)
        self.c2 = e.add_consumer(self.t2, self.p, C2, 0, 90000, {101: 101}, {}, initial_seq=200)
        e.set_consumer_feedback(self.c2, nack=True, rtx_pt=0)

    def send(self, sock, addr, data: bytes, now: int):
        self.e.receive(sock, addr, data, now)
        return self.e.take_outbox()


def to(out, addr):
    return [d for _, a, d in out if a == addr]


def rtcp_of_type(datagrams, pt, fmt=None):
    return [d for d in datagrams if len(d) >= 8 and d[1] == pt and (fmt is None or d[0] & 0x1F == fmt)]


def test_viewer_nack_is_answered_with_rtx_or_plain_retransmission():
    r = Rig()
    key = media(10, 0, b"\x10\x00key")
    r.send(r.s_pub, PUB, key, 1000)
    for k in range(1, 5):
        r.send(r.s_pub, PUB, media(10 + k, 3000 * k), 1000 + k)
    # viewer 1 lost its 3rd packet (out seq 103), viewer 2 its 2nd and 4th (202, 204)
    out = r.send(r.s1, V1, nack(0x99, C1, 103), 1100)
    (rtx,) = to(out, V1)
    b1, pt, seq, ts, ssrc = struct.unpack_from("!BBHII", rtx)
    assert (pt & 0x7F, ssrc) == (102, C1_RTX)
    assert struct.unpack_from("!H", rtx, 12)[0] == 103          # OSN: the consumer's sequence number
    assert rtx[14:] == media(12, 6000)[12:]                      # the original payload
    out = r.send(r.s2, V2, nack(0x98, C2, 202, 0b10), 1100)     # PID 202 + BLP bit 1 -> 204
    plain = to(out, V2)
    assert [struct.unpack_from("!HI", d, 2)[0] for d in plain] == [202, 204]
    assert all(struct.unpack_from("!I", d, 8)[0] == C2 for d in plain)
    # the same sequence number again within one RTT is not resent
    assert to(r.send(r.s2, V2, nack(0x98, C2, 202), 1150), V2) == []
    s1, s2 = r.e.consumer_stats(r.c1), r.e.consumer_stats(r.c2)
    assert (s1["retransmittedPackets"], s1["nackCount"]) == (1, 1)
    assert (s2["retransmittedPackets"], s2["nackCount"]) == (2, 2)


def test_publisher_losses_are_nacked_and_rtx_is_decapsulated_and_forwarded():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, 0, b"\x10\x00key"), 1000)
    out = r.send(r.s_pub, PUB, media(3, 6000), 1010)            # 2 is missing
    nacks = rtcp_of_type(to(out, PUB), 205, 1)
    assert len(nacks) == 1
    assert struct.unpack_from("!IHH", nacks[0], 8) == (S, 2, 0)
    # the publisher's RTX for 2 (RFC 4588: OSN, then the original payload)
    rtx = struct.pack("!BBHII", 0x80, 97, 500, 3000, RTX_S) + struct.pack("!H", 2) + b"\x00\x01late"
    out = r.send(r.s_pub, PUB, rtx, 1030)
    (fwd,) = to(out, V1)
    assert struct.unpack_from("!BBHII", fwd)[1:] == (101, 102, 3000, C1)  # between 101 (key) and 103 (3)
    assert fwd[12:] == b"\x00\x01late"
    st = r.e.producer_stats(r.p)[0]
    assert st["retransmittedPackets"] == 1 and st["nackCount"] >= 1
    # a duplicate retransmission is not forwarded twice
    assert to(r.send(r.s_pub, PUB, rtx, 1040), V1) == []
    # no retry once recovered
    r.e.tick(1500)
    assert rtcp_of_type(to(r.e.take_outbox(), PUB), 205, 1) == []


def test_remb_from_viewers_reaches_the_publisher_as_their_minimum():
    r = Rig()
    r.send(r.s1, V1, remb(0x91, 900_000, [C1]), 1000)
    r.send(r.s2, V2, remb(0x92, 300_000, [C2]), 1000)
    r.e.tick(1000)
    rembs = rtcp_of_type(to(r.e.take_outbox(), PUB), 206, 15)
    assert rembs, "no REMB sent to the publisher"
    exp_mant = int.from_bytes(rembs[-1][17:20], "big")
    bps = (exp_mant & 0x3FFFF) << (exp_mant >> 18)
    assert bps == 300_000 and struct.unpack_from("!I", rembs[-1], 20)[0] == S
    assert r.e.counters()["rx_remb"] == 2


def test_transport_cc_feedback_is_sent_for_the_publishers_packets():
    r = Rig()
    for k in range(5):
        if k != 2:
            r.send(r.s_pub, PUB, media(k, 3000 * k, b"\x10\x00" if k == 0 else b"\x00\x01", twcc=1000 + k), 1000 + 5 * k)
    r.e.tick(1200)
    fbs = rtcp_of_type(to(r.e.take_outbox(), PUB), 205, 15)
    assert len(fbs) == 1
    base, count = struct.unpack_from("!HH", fbs[0], 12)
    assert (base, count) == (1000, 5)
    parsed = _testhooks.twcc_parse_feedback(fbs[0])
    statuses = parsed["statuses"] if isinstance(parsed, dict) else parsed[4]
    assert [bool(s) for s in statuses] == [True, True, False, True, True]


def test_sender_reports_follow_the_rewritten_timeline_and_receiver_reports_give_rtt():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, 90000, b"\x10\x00key"), 10_000)
    r.send(r.s_pub, PUB, media(2, 93000), 10_033)
    r.e.tick(11_033)  # one second after the last packet
    out = r.e.take_outbox()
    (sr,) = rtcp_of_type(to(out, V1), 200)
    ssrc, ntp_sec, ntp_frac, rtp_ts, packets, octets = struct.unpack_from("!IIIIII", sr, 4)
    assert ssrc == C1 and packets == 2
    assert rtp_ts == 93000 + 90000                                # 1 s later on the consumer's clock
    # the publisher gets a receiver report for its stream
    (rr,) = rtcp_of_type(to(out, PUB), 201)
    assert struct.unpack_from("!I", rr, 8)[0] == S
    # viewer 1 reports on C1, echoing the SR (LSR) after 50 ms: RTT ~ 0
    lsr = ((ntp_sec & 0xFFFF) << 16) | (ntp_frac >> 16)
    block = struct.pack("!IIIIII", C1, 0x05000000, 2, 0, lsr, int(0.0 * 65536))
    r.send(r.s1, V1, struct.pack("!BBHI", 0x81, 201, 7, 0x99) + block, 11_033)
    st = r.e.consumer_stats(r.c1)
    assert st["fractionLost"] == 5 / 256 and st["roundTripTime"] < 5 and st["score"] < 10


def test_transport_cc_counts_probes_and_duplicate_retransmissions_as_received():
    """A sender's bandwidth probes (padding-only RTX) and duplicates are arrivals
    for its estimator, though they are not forwarded."""
    r = Rig()
    r.send(r.s_pub, PUB, media(1, 0, b"\x10\x00key", twcc=2000), 1000)
    probe = (struct.pack("!BBHII", 0xB0, 97, 600, 0, RTX_S)  # P and X bits, RTX payload type
             + struct.pack("!HHBH", 0xBEDE, 1, (TWCC_ID << 4) | 1, 2001) + b"\x00" + b"\x00" * 3 + b"\x04")
    r.send(r.s_pub, PUB, probe, 1005)
    r.send(r.s_pub, PUB, media(1, 0, b"\x10\x00key", twcc=2002), 1010)   # a duplicate
    r.e.tick(1200)
    (fb,) = rtcp_of_type(to(r.e.take_outbox(), PUB), 205, 15)
    parsed = _testhooks.twcc_parse_feedback(fb)
    statuses = parsed["statuses"] if isinstance(parsed, dict) else parsed[4]
    assert struct.unpack_from("!HH", fb, 12) == (2000, 3) and all(statuses)


def test_producer_keyframe_request_for_resume():
    r = Rig()
    r.send(r.s_pub, PUB, media(1, 0, b"\x10\x00key"), 1000)
    r.e.take_outbox()
    r.e.set_producer_paused(r.p, True)
    r.e.set_producer_paused(r.p, False)
    r.e.request_producer_keyframe(r.p, 2000)
    (pli,) = rtcp_of_type(to(r.e.take_outbox(), PUB), 206, 1)
    assert struct.unpack_from("!I", pli, 8)[0] == S
    # consumers restart at the next keyframe, without a sequence gap
    assert to(r.send(r.s_pub, PUB, media(2, 3000), 2010), V1) == []
    (out,) = to(r.send(r.s_pub, PUB, media(3, 6000, b"\x10\x00key2"), 2050), V1)
    assert struct.unpack_from("!H", out, 2)[0] == 102


def test_sender_reports_follow_the_publishers_own_mapping_through_bursts():
    """With the publisher's SR known, each consumer SR maps wall time with the
    publisher's RTP clock, shifted by the consumer's offset: packets that
    arrive late and in a burst (ffmpeg -re catching up) do not move it."""
    r = Rig()
    r.send(r.s_pub, PUB, media(1, 90000, b"\x10\x00key"), 10_000)
    # the publisher says: RTP 90000 is "now" (NTP arbitrary), at 10_005 ms
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, S, 0x12345678, 0, 90000, 1, 10)
    r.send(r.s_pub, PUB, sr, 10_005)
    # 900 ms later a burst of late packets (their timestamps 600 ms behind)
    for k in range(5):
        r.send(r.s_pub, PUB, media(2 + k, 90000 + 3000 * (k + 1)), 10_900)
    r.e.take_outbox()
    r.e.tick(12_005)
    (sr1,) = rtcp_of_type(to(r.e.take_outbox(), V1), 200)
    ts1 = struct.unpack_from("!I", sr1, 16)[0]
    assert ts1 == 90000 + 2 * 90000   # 2 s after the publisher's SR, on its clock (offset 0 here)
    r.e.tick(13_005)
    (sr2,) = rtcp_of_type(to(r.e.take_outbox(), V1), 200)
    assert struct.unpack_from("!I", sr2, 16)[0] - ts1 == 90000


def test_a_publisher_sr_that_arrives_late_does_not_move_the_consumer_mapping():
    """The publisher's SRs are placed on our clock with the least (arrival -
    NTP time) seen, shared by its streams: an SR held 30 ms in a queue (its
    NTP time says when it was sent) leaves the consumer's SR mapping where
    the prompt one put it (anchoring on each SR's arrival moved it 2700
    ticks, and with it the A/V alignment of every receiver)."""
    r = Rig()
    r.send(r.s_pub, PUB, media(1, 90000, b"\x10\x00key"), 10_000)
    ntp0 = 0x12345678
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, S, ntp0, 0, 90000, 1, 10)
    r.send(r.s_pub, PUB, sr, 10_005)                       # sent at NTP t0, here at 10_005
    r.e.take_outbox()
    r.e.tick(11_005)
    (sr1,) = rtcp_of_type(to(r.e.take_outbox(), V1), 200)
    ts1 = struct.unpack_from("!I", sr1, 16)[0]
    assert ts1 == 90000 + 90000                            # 1 s after the publisher's SR
    # the next SR: sent 1 s after the first (RTP +90000) but here 30 ms late
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, S, ntp0 + 1, 0, 180000, 2, 20)
    r.send(r.s_pub, PUB, sr, 11_035)
    r.e.take_outbox()
    r.e.tick(12_005)
    (sr2,) = rtcp_of_type(to(r.e.take_outbox(), V1), 200)
    assert struct.unpack_from("!I", sr2, 16)[0] - ts1 == 90000  # exactly 1 s later on the same mapping
