"""Sans-IO tests of the compiled forwarding engine (src/engine.c through
sfu._fastpath._testhooks.Engine): virtual sockets (add_socket(-1)), datagrams
fed with receive(), results read from take_outbox(), poll_upcalls() and the
counters. No sockets, no threads, no sleeps; time is the now_ms argument.

The expected packets are built independently (_reference.build_rtp) and
compared byte for byte.
"""

from __future__ import annotations

import struct

import pytest

from sfu._fastpath import _testhooks
from sfu._fastpath._testhooks import SansIOEngine as Engine
from sfu._fastpath._reference import build_rtp, parse_rtp, rtp_extensions

PRODUCER_ADDR = ("192.0.2.10", 40000)
OTHER_ADDR = ("192.0.2.66", 40000)
C1_ADDR = ("198.51.100.1", 50001)
C2_ADDR = ("2001:db8::2", 50002)

S = 0x1234ABCD
C1_SSRC = 0x11111111
C2_SSRC = 0x22222222

# Incoming PT -> router PT (96 VP8, 97 H264; 98 is not negotiated).
PRODUCER_PT = {96: 101, 97: 102}
# Incoming id -> router id: abs-send-time 2 -> 2, twcc 4 -> 3, mid 9 -> 1 (anything else removed).
PRODUCER_EXT = {2: 2, 4: 3, 9: 1}
# Consumer 1: both codecs, keeps abs-send-time and twcc (mid removed), one-byte.
C1_PT = {101: 96, 102: 97}
C1_EXT = {2: 2, 3: 3}
C1_INITIAL = 1000
# Consumer 2 (IPv6): VP8 only as PT 120; ids 15/14/1 force two-byte; wraps soon.
C2_PT = {101: 120}
C2_EXT = {1: 1, 3: 14, 2: 15}
C2_INITIAL = 65530

DROP_COUNTERS = [
    "drop_no_transport", "drop_not_connected", "drop_unknown_source", "drop_too_big", "drop_srtp",
    "drop_rtp_malformed", "drop_rtcp_malformed", "drop_unknown_ssrc", "drop_unknown_pt",
    "drop_producer_paused", "drop_rtx", "drop_outbox_full", "drop_upcall_full",
]


def ast(seq: int) -> bytes:  # an abs-send-time value that changes per packet
    return (seq * 977 & 0xFFFFFF).to_bytes(3, "big")


def twcc(seq: int) -> bytes:
    return (seq * 3 & 0xFFFF).to_bytes(2, "big")


def media(seq: int, ts: int, *, pt: int = 96, marker: bool = False, ssrc: int = S, payload: bytes | None = None,
          padding: int = 0, extensions: bool = True) -> bytes:
    """A packet as the browser sends it: abs-send-time (2), twcc (4), mid
    (9) and an id the producer did not negotiate (5)."""
    exts = [(2, ast(seq)), (4, twcc(seq)), (9, b"1"), (5, b"\xee\xee")] if extensions else None
    if payload is None:
        payload = b"frame %d " % seq * 4
    return build_rtp(payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc, marker=marker,
                     extensions=exts, payload=payload, padding=padding)


def expected_c1(src: bytes, seq: int, ts: int | None = None) -> bytes:
    p = parse_rtp(src)
    i = dict(rtp_extensions(src))
    exts = [(2, i[2]), (3, i[4])] if p["extension"] else None
    return build_rtp(payload_type=C1_PT[PRODUCER_PT[p["payload_type"]]], sequence_number=seq,
                     timestamp=p["timestamp"] if ts is None else ts, ssrc=C1_SSRC, marker=p["marker"],
                     extensions=exts, payload=p["payload"], padding=p["padding_length"])


def expected_c2(src: bytes, seq: int, ts: int | None = None) -> bytes:
    p = parse_rtp(src)
    i = dict(rtp_extensions(src))
    exts = [(15, i[2]), (14, i[4]), (1, i[9])] if p["extension"] else None
    return build_rtp(payload_type=C2_PT[PRODUCER_PT[p["payload_type"]]], sequence_number=seq & 0xFFFF,
                     timestamp=p["timestamp"] if ts is None else ts, ssrc=C2_SSRC, marker=p["marker"],
                     extensions=exts, two_byte=True, payload=p["payload"], padding=p["padding_length"])


class Rig:
    """One producer transport and two consumer transports, all virtual."""

    def __init__(self, *, comedia: bool = False, connect: bool = True, c2_initial: int = C2_INITIAL):
        self.e = e = Engine()
        self.now = 10_000
        self.s_in = e.add_socket(-1)
        self.t_in = e.add_transport(self.s_in, comedia=comedia)
        if connect:
            e.connect_transport(self.t_in, PRODUCER_ADDR)
        self.s1, self.s2 = e.add_socket(-1), e.add_socket(-1)
        self.t1, self.t2 = e.add_transport(self.s1), e.add_transport(self.s2)
        e.connect_transport(self.t1, C1_ADDR)
        e.connect_transport(self.t2, C2_ADDR)
        self.p = e.add_producer(self.t_in, True, [(S, 0)], PRODUCER_PT, PRODUCER_EXT)
        self.c1 = e.add_consumer(self.t1, self.p, C1_SSRC, 0, 90000, C1_PT, C1_EXT, initial_seq=C1_INITIAL)
        self.c2 = e.add_consumer(self.t2, self.p, C2_SSRC, 0, 90000, C2_PT, C2_EXT, initial_seq=c2_initial)
        self.where = {self.s1: ("c1", C1_ADDR), self.s2: ("c2", C2_ADDR)}

    def send(self, data: bytes, addr=PRODUCER_ADDR, socket: int | None = None, dt: int = 20) -> dict:
        self.now += dt
        self.e.receive(self.s_in if socket is None else socket, addr, data, self.now)
        return self.outputs()

    def outputs(self) -> dict:
        out: dict[str, list[bytes]] = {"c1": [], "c2": []}
        for sock, addr, data in self.e.take_outbox():
            name, dest = self.where[sock]
            assert addr == dest, f"{name} datagram sent to {addr}, expected {dest}"
            out.setdefault(name, []).append(data)
        return out

    def drops(self) -> dict:
        c = self.e.counters()
        return {k: c[k] for k in DROP_COUNTERS}


def seqs(packets: list[bytes]) -> list[int]:
    return [parse_rtp(p)["sequence_number"] for p in packets]


# ----------------------------------------------------------------- forwarding


def test_every_consumer_gets_every_packet_rewritten_for_it():
    rig = Rig()
    sent = []
    for k in range(10):
        pkt = media(5000 + k, 90_000 + 1800 * k, marker=k % 3 == 2)
        sent.append(pkt)
        out = rig.send(pkt)
        assert out == {"c1": [expected_c1(pkt, C1_INITIAL + 1 + k)],
                       "c2": [expected_c2(pkt, C2_INITIAL + 1 + k)]}, k
    # c2 wrapped from 65535 to 0 on the way.
    assert (C2_INITIAL + 10) & 0xFFFF == 4
    assert rig.drops() == {k: 0 for k in DROP_COUNTERS}
    c = rig.e.counters()
    assert (c["rx_datagrams"], c["rx_rtp"], c["rx_bytes"]) == (10, 10, sum(map(len, sent)))
    s1 = rig.e.consumer_stats(rig.c1)
    assert {k: s1[k] for k in ("ssrc", "packetCount", "producerClosed", "packetsDiscarded", "byteCount")} == {
        "ssrc": C1_SSRC, "packetCount": 10, "producerClosed": False, "packetsDiscarded": 0,
        "byteCount": sum(len(expected_c1(p, 0)) for p in sent)}
    assert rig.e.consumer_stats(rig.c2)["byteCount"] == sum(len(expected_c2(p, 0)) for p in sent)
    (ps,) = rig.e.producer_stats(rig.p)
    assert (ps["ssrc"], ps["rtxSsrc"], ps["packetCount"], ps["highestSequenceNumber"]) == (S, None, 10, 5009)
    t = rig.e.transport_stats(rig.t_in)
    assert (t["rtpPacketsReceived"], t["rtpBytesReceived"], t["packetsDiscarded"]) == (10, sum(map(len, sent)), 0)
    assert rig.e.transport_stats(rig.t1)["rtpPacketsSent"] == 10
    assert rig.e.transport_stats(rig.t2)["rtpBytesSent"] == rig.e.consumer_stats(rig.c2)["byteCount"]


def test_extension_ids_rewritten_and_removed_per_consumer():
    rig = Rig()
    pkt = media(1, 1000)
    out = rig.send(pkt)
    assert rtp_extensions(pkt) == [(2, ast(1)), (4, twcc(1)), (9, b"1"), (5, b"\xee\xee")]
    assert rtp_extensions(out["c1"][0]) == [(2, ast(1)), (3, twcc(1))]
    assert parse_rtp(out["c1"][0])["extension_profile"] == 0xBEDE
    assert rtp_extensions(out["c2"][0]) == [(15, ast(1)), (14, twcc(1)), (1, b"1")]
    assert parse_rtp(out["c2"][0])["extension_profile"] == 0x1000


def test_consumer_without_any_mapped_extension_gets_no_extension_block():
    rig = Rig()
    t3 = rig.e.add_transport(s3 := rig.e.add_socket(-1))
    rig.e.connect_transport(t3, ("203.0.113.3", 3333))
    rig.e.add_consumer(t3, rig.p, 0x33, 0, 90000, {101: 96}, {}, initial_seq=7)
    rig.e.receive(rig.s_in, PRODUCER_ADDR, media(1, 1000, padding=9), rig.now)
    (out,) = [d for s, a, d in rig.e.take_outbox() if s == s3]
    p = parse_rtp(out)
    assert (p["extension"], p["header_length"], p["sequence_number"], p["padding_length"]) == (False, 12, 8, 9)
    assert p["payload"] == parse_rtp(media(1, 1000))["payload"]


def test_packets_without_extensions_csrcs_and_padding_are_preserved():
    rig = Rig()
    pkt = build_rtp(payload_type=96, sequence_number=77, timestamp=1234, ssrc=S, csrcs=[0xC5C5C5C5, 7],
                    payload=b"\x00\x01payload\xff", padding=13)
    out = rig.send(pkt)
    expected = build_rtp(payload_type=96, sequence_number=C1_INITIAL + 1, timestamp=1234, ssrc=C1_SSRC,
                         csrcs=[0xC5C5C5C5, 7], payload=b"\x00\x01payload\xff", padding=13)
    assert out["c1"] == [expected]
    assert parse_rtp(out["c2"][0])["csrcs"] == [0xC5C5C5C5, 7]


def test_largest_accepted_datagram_is_forwarded():
    rig = Rig()
    base = len(media(1, 0, payload=b""))
    pkt = media(1, 0, payload=bytes(1600 - base))
    assert len(pkt) == 1600
    out = rig.send(pkt)
    assert out["c1"] == [expected_c1(pkt, C1_INITIAL + 1)]
    assert out["c2"] == [expected_c2(pkt, C2_INITIAL + 1)]  # grows (two-byte) past 1600 on the way out


# ----------------------------------------------------------------- pause / resume


def test_consumer_pause_resume_keeps_sequence_contiguous():
    rig = Rig()
    seq, ts = 100, 50_000
    out = rig.send(media(seq, ts))
    assert seqs(out["c1"]) == [C1_INITIAL + 1]
    rig.e.set_consumer_paused(rig.c1, True)
    for k in range(1, 6):
        out = rig.send(media(seq + k, ts + 1800 * k))
        assert out["c1"] == [] and seqs(out["c2"]) == [(C2_INITIAL + 1 + k) & 0xFFFF]
    rig.e.set_consumer_paused(rig.c1, False)
    pkt = media(seq + 6, ts + 1800 * 6)
    out = rig.send(pkt)
    # No gap, and the source timeline was continuous: timestamps pass through.
    assert out["c1"] == [expected_c1(pkt, C1_INITIAL + 2)]
    pkt = media(seq + 7, ts + 1800 * 7)
    assert rig.send(pkt)["c1"] == [expected_c1(pkt, C1_INITIAL + 3)]


def test_resume_after_the_source_timestamp_jumped_backwards():
    rig = Rig()
    rig.send(media(100, 900_000))
    last = parse_rtp(rig.send(media(101, 901_800))["c1"][0])
    t_last = rig.now
    assert last["timestamp"] == 901_800
    rig.e.set_consumer_paused(rig.c1, True)
    rig.send(media(102, 903_600))
    rig.e.set_consumer_paused(rig.c1, False)
    # A new encoder restarts at a lower timestamp 2 s (of engine time) after c1's last packet.
    rig.now = t_last + 2000
    pkt = media(103, 10_000)
    out = rig.send(pkt, dt=0)
    # c1: contiguous sequence; timestamp moves on by the elapsed 2 s at 90 kHz.
    assert out["c1"] == [expected_c1(pkt, C1_INITIAL + 3, ts=901_800 + 180_000)]
    # ... and keeps following the source from there.
    pkt = media(104, 10_000 + 1800)
    assert rig.send(pkt)["c1"] == [expected_c1(pkt, C1_INITIAL + 4, ts=901_800 + 180_000 + 1800)]
    # c2 was never paused: it forwards the source timeline as is.
    assert parse_rtp(out["c2"][0])["timestamp"] == 10_000


def test_resume_after_the_source_timestamp_jumped_far_ahead():
    rig = Rig()
    rig.send(media(1, 1_000))
    rig.e.set_consumer_paused(rig.c1, True)
    rig.e.set_consumer_paused(rig.c1, False)
    pkt = media(2, 1_000 + 50_000_000)  # far more than 20 ms + 1 s of slack
    assert rig.send(pkt)["c1"] == [expected_c1(pkt, C1_INITIAL + 2, ts=1_000 + 20 * 90)]


def test_resume_with_no_elapsed_time_still_advances_the_timestamp():
    rig = Rig()
    rig.send(media(1, 5_000))
    rig.e.set_consumer_paused(rig.c1, True)
    rig.e.set_consumer_paused(rig.c1, False)
    pkt = media(2, 4_000)
    assert rig.send(pkt, dt=0)["c1"] == [expected_c1(pkt, C1_INITIAL + 2, ts=5_001)]


def test_producer_pause_resume():
    rig = Rig()
    rig.send(media(10, 0))
    rig.e.set_producer_paused(rig.p, True)
    for k in range(1, 4):
        assert rig.send(media(10 + k, 1800 * k)) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_producer_paused"] == 3
    (ps,) = rig.e.producer_stats(rig.p)
    assert (ps["packetCount"], ps["highestSequenceNumber"]) == (4, 13)  # still received
    rig.e.set_producer_paused(rig.p, False)
    pkt = media(14, 1800 * 4)
    out = rig.send(pkt)
    assert out == {"c1": [expected_c1(pkt, C1_INITIAL + 2)], "c2": [expected_c2(pkt, C2_INITIAL + 2)]}


def test_consumer_created_paused_starts_after_initial_seq_on_resume():
    rig = Rig()
    t3 = rig.e.add_transport(s3 := rig.e.add_socket(-1))
    rig.e.connect_transport(t3, ("203.0.113.3", 3333))
    c3 = rig.e.add_consumer(t3, rig.p, 0x33, 0, 90000, {101: 96}, {}, paused=True, initial_seq=500)
    rig.send(media(1, 10))
    rig.e.set_consumer_paused(c3, False)
    rig.e.receive(rig.s_in, PRODUCER_ADDR, media(2, 20), rig.now)
    (out,) = [d for s, a, d in rig.e.take_outbox() if s == s3]
    assert (parse_rtp(out)["sequence_number"], parse_rtp(out)["timestamp"]) == (501, 20)


def test_consumer_added_to_a_producer_that_is_paused():
    rig = Rig()
    rig.e.set_producer_paused(rig.p, True)
    t3 = rig.e.add_transport(s3 := rig.e.add_socket(-1))
    rig.e.connect_transport(t3, ("203.0.113.3", 3333))
    rig.e.add_consumer(t3, rig.p, 0x33, 0, 90000, {101: 96}, {}, initial_seq=500)
    rig.send(media(1, 10))
    assert rig.e.take_outbox() == []
    rig.e.set_producer_paused(rig.p, False)
    rig.e.receive(rig.s_in, PRODUCER_ADDR, media(2, 20), rig.now)
    (out,) = [d for s, a, d in rig.e.take_outbox() if s == s3]
    assert parse_rtp(out)["sequence_number"] == 501


def test_consumer_transport_connected_late():
    rig = Rig()
    t3 = rig.e.add_transport(s3 := rig.e.add_socket(-1))
    rig.e.add_consumer(t3, rig.p, 0x33, 0, 90000, {101: 96}, {}, initial_seq=500)
    for k in range(3):
        rig.send(media(k, 10 * k))  # outputs() would reject a datagram on s3
    rig.e.connect_transport(t3, ("203.0.113.3", 3333))
    rig.e.receive(rig.s_in, PRODUCER_ADDR, media(3, 30), rig.now)
    (out,) = [(a, d) for s, a, d in rig.e.take_outbox() if s == s3]
    assert out[0] == ("203.0.113.3", 3333) and parse_rtp(out[1])["sequence_number"] == 501


# ----------------------------------------------------------------- ordering and payload types


def test_reordered_input_keeps_outputs_aligned():
    rig = Rig()
    order = [100, 102, 101, 103, 106, 104, 105, 107]
    for seq in order:
        pkt = media(seq, seq * 1800)
        out = rig.send(pkt)
        k = seq - 100
        assert out == {"c1": [expected_c1(pkt, C1_INITIAL + 1 + k)],
                       "c2": [expected_c2(pkt, C2_INITIAL + 1 + k)]}, seq


def test_payload_type_the_consumer_lacks_leaves_no_gap():
    rig = Rig()
    rig.send(media(1, 0))
    h264 = media(2, 1800, pt=97)
    out = rig.send(h264)
    assert out == {"c1": [expected_c1(h264, C1_INITIAL + 2)], "c2": []}
    assert parse_rtp(out["c1"][0])["payload_type"] == 97
    pkt = media(3, 3600)
    out = rig.send(pkt)
    assert out == {"c1": [expected_c1(pkt, C1_INITIAL + 3)], "c2": [expected_c2(pkt, C2_INITIAL + 2)]}
    assert rig.e.consumer_stats(rig.c2)["packetsDiscarded"] == 1
    assert rig.e.consumer_stats(rig.c1)["packetsDiscarded"] == 0
    # Reordered around a dropped one: 5 (VP8) before 4 (H264). When 5 comes
    # c2 cannot know 4 will be dropped, so 4 keeps its slot: a gap c2 sees
    # as a loss (no buffering in the SFU, as in mediasoup).
    out5 = rig.send(media(5, 7200))
    out4 = rig.send(media(4, 5400, pt=97))
    assert (seqs(out5["c2"]), out4["c2"]) == ([(C2_INITIAL + 4) & 0xFFFF], [])
    assert (seqs(out5["c1"]), seqs(out4["c1"])) == ([C1_INITIAL + 5], [C1_INITIAL + 4])
    # In order again, the next drop leaves no gap.
    rig.send(media(6, 9000, pt=97))
    assert seqs(rig.send(media(7, 10800))["c2"]) == [(C2_INITIAL + 5) & 0xFFFF]


def test_first_packet_with_a_payload_type_the_consumer_lacks():
    rig = Rig()
    assert rig.send(media(40, 0, pt=97))["c2"] == []
    pkt = media(41, 1800)
    assert rig.send(pkt)["c2"] == [expected_c2(pkt, C2_INITIAL + 1)]


def test_rtx_stream_packets_are_counted_not_forwarded():
    e = Engine()
    s = e.add_socket(-1)
    t = e.add_transport(s)
    e.connect_transport(t, PRODUCER_ADDR)
    s1 = e.add_socket(-1)
    t1 = e.add_transport(s1)
    e.connect_transport(t1, C1_ADDR)
    p = e.add_producer(t, True, [(S, 0x5555)], {96: 101, 97: 97}, {})
    e.add_consumer(t1, p, 1, 0, 90000, {101: 96, 97: 97}, {})
    e.receive(s, PRODUCER_ADDR, build_rtp(payload_type=97, sequence_number=1, ssrc=0x5555, payload=b"\x00\x01x"), 0)
    assert e.take_outbox() == []
    assert e.counters()["drop_rtx"] == 1
    assert e.producer_stats(p)[0]["rtxSsrc"] == 0x5555
    with pytest.raises(ValueError):  # an SSRC is routed once per transport
        e.add_producer(t, True, [(0x5555, 0)], {96: 101}, {})


# ----------------------------------------------------------------- drops


BAD_PACKETS = [
    ("unknown_ssrc", "drop_unknown_ssrc", media(50, 0, ssrc=0xBAD)),
    ("unknown_pt", "drop_unknown_pt", media(50, 0, pt=98)),
    ("short_rtp", "drop_rtp_malformed", b"\x80\x60\x00\x32" + bytes(4)),
    ("cut_extension", "drop_rtp_malformed", media(50, 0)[:20]),
    ("bad_padding", "drop_rtp_malformed", bytes((media(50, 0)[0] | 0x20,)) + media(50, 0)[1:-1] + b"\xf0"),
    ("short_rtcp", "drop_rtcp_malformed", b"\x81\xc9\x00\x07" + bytes(8)),  # RR claiming 32 bytes
    ("rtcp_count", "drop_rtcp_malformed", b"\x81\xc9\x00\x01" + bytes(4)),  # RC=1 without a block
    ("too_big", "drop_too_big", media(50, 0, payload=bytes(1601))),
]


@pytest.mark.parametrize("counter, bad", [b[1:] for b in BAD_PACKETS], ids=[b[0] for b in BAD_PACKETS])
def test_bad_packet_dropped_counted_and_others_unaffected(counter, bad):
    rig = Rig()
    rig.send(media(48, 0))
    rig.send(media(49, 1800))
    before = rig.drops()
    assert rig.send(bad) == {"c1": [], "c2": []}
    after = rig.drops()
    assert after[counter] == before[counter] + 1
    assert {k: v for k, v in after.items() if k != counter} == {k: v for k, v in before.items() if k != counter}
    pkt = media(50, 2 * 1800)  # the bad datagram never reached the consumers
    assert rig.send(pkt) == {"c1": [expected_c1(pkt, C1_INITIAL + 3)], "c2": [expected_c2(pkt, C2_INITIAL + 3)]}
    # Per-transport discards count everything but the size check (done before the transport lookup).
    assert rig.e.transport_stats(rig.t_in)["packetsDiscarded"] == (0 if counter == "drop_too_big" else 1)


def test_malformed_extension_element_is_dropped_as_malformed():
    rig = Rig()
    pkt = bytearray(media(7, 0))
    pkt[16] = 0x2F  # abs-send-time element now claims 16 bytes, past the block
    assert rig.send(bytes(pkt)) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_rtp_malformed"] == 1


def test_packet_from_the_wrong_address_is_dropped():
    rig = Rig()
    rig.send(media(1, 0))
    assert rig.send(media(2, 1800), addr=OTHER_ADDR) == {"c1": [], "c2": []}
    assert rig.send(media(2, 1800), addr=(PRODUCER_ADDR[0], PRODUCER_ADDR[1] + 1)) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_unknown_source"] == 2
    assert rig.e.transport_stats(rig.t_in)["packetsDiscarded"] == 2
    pkt = media(2, 1800)
    assert seqs(rig.send(pkt)["c1"]) == [C1_INITIAL + 2]


def test_transport_not_connected_drops():
    rig = Rig(connect=False)
    assert rig.send(media(1, 0)) == {"c1": [], "c2": []}
    assert rig.send(b"\x80\xc8\x00\x06" + bytes(24)) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_not_connected"] == 2
    rig.e.connect_transport(rig.t_in, PRODUCER_ADDR)
    pkt = media(2, 1800)
    assert rig.send(pkt)["c1"] == [expected_c1(pkt, C1_INITIAL + 1)]


def test_socket_without_transport_drops():
    rig = Rig()
    lone = rig.e.add_socket(-1)
    assert rig.send(media(1, 0), socket=lone) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_no_transport"] == 1


def test_valid_rtcp_is_counted_not_forwarded():
    rig = Rig()
    rr = (b"\x81\xc9\x00\x07" + bytes(28)) + (b"\x81\xca\x00\x02" + bytes(4) + b"\x01\x01x\x00")
    assert rig.send(rr) == {"c1": [], "c2": []}
    c = rig.e.counters()
    assert (c["rx_rtcp"], c["rx_rtp"]) == (1, 0)
    t = rig.e.transport_stats(rig.t_in)
    assert (t["rtcpPacketsReceived"], t["rtcpBytesReceived"]) == (1, len(rr))


def test_outbox_full_is_counted():
    rig = Rig()
    for k in range(2048):  # two datagrams each: 4096 slots
        rig.e.receive(rig.s_in, PRODUCER_ADDR, media(k, k), 0)
    assert rig.e.outbox_size() == 4096 and rig.e.counters()["drop_outbox_full"] == 0
    rig.e.receive(rig.s_in, PRODUCER_ADDR, media(2048, 2048), 0)
    assert rig.e.counters()["drop_outbox_full"] == 1
    assert len(rig.e.take_outbox()) == 4096
    assert rig.e.outbox_size() == 0
    out = rig.send(media(2049, 2049))
    assert len(out["c1"]) == 1 and len(out["c2"]) == 1


def test_datagram_larger_than_the_receive_buffer_is_counted():
    rig = Rig()
    rig.send(media(1, 0, payload=bytes(3000)))
    c = rig.e.counters()
    assert (c["rx_datagrams"], c["drop_too_big"]) == (1, 1)


def test_payload_type_maps_reject_values_above_127():
    rig = Rig()
    with pytest.raises(ValueError):
        rig.e.add_producer(rig.t_in, True, [(0x999, 0)], {96: 200}, {})
    with pytest.raises(ValueError):
        rig.e.add_consumer(rig.t1, rig.p, 0x998, 0, 90000, {101: 200}, {})


# ----------------------------------------------------------------- comedia and upcalls


def test_comedia_learns_the_remote_from_the_first_packet():
    rig = Rig(comedia=True, connect=False)
    assert rig.e.transport_tuple(rig.t_in) == (None, None)
    pkt = media(1, 0)
    assert rig.send(pkt, addr=OTHER_ADDR)["c1"] == [expected_c1(pkt, C1_INITIAL + 1)]
    assert rig.e.poll_upcalls() == [("tuple", rig.s_in, rig.t_in, False, OTHER_ADDR)]
    assert rig.e.transport_tuple(rig.t_in) == (OTHER_ADDR, OTHER_ADDR)
    # From then on only that address is accepted.
    assert rig.send(media(2, 1800), addr=PRODUCER_ADDR) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_unknown_source"] == 1
    assert rig.e.poll_upcalls() == []
    assert seqs(rig.send(media(2, 1800), addr=OTHER_ADDR)["c1"]) == [C1_INITIAL + 2]


def test_comedia_with_rtcp_mux_learns_from_rtp_and_takes_rtcp_from_the_senders_other_port():
    """ffmpeg sends RTCP from RTP port + 1 even to a muxed port, and may send
    it first: the tuple is learnt from RTP only (an RTCP-latched tuple would
    drop all its RTP), and RTCP from the learnt host is accepted on any port."""
    rig = Rig(comedia=True, connect=False)
    rtp_addr, rtcp_addr = ("192.0.2.77", 5004), ("192.0.2.77", 5005)
    sr = bytes.fromhex("80c80006") + S.to_bytes(4, "big") + bytes(20)
    rig.send(sr, addr=rtcp_addr)
    assert rig.e.poll_upcalls() == []
    assert rig.e.transport_tuple(rig.t_in) == (None, None)
    assert rig.e.counters()["drop_not_connected"] == 1
    pkt = media(1, 0)
    assert rig.send(pkt, addr=rtp_addr)["c1"] == [expected_c1(pkt, C1_INITIAL + 1)]
    assert rig.e.poll_upcalls() == [("tuple", rig.s_in, rig.t_in, False, rtp_addr)]
    rig.send(sr, addr=rtcp_addr)
    rig.send(sr, addr=("192.0.2.78", 5005))  # another host
    c = rig.e.counters()
    assert (c["drop_not_connected"], c["drop_unknown_source"]) == (1, 1)
    assert rig.e.transport_stats(rig.t_in)["rtcpPacketsReceived"] == 1
    # RTP from the other port is still refused
    assert rig.send(media(2, 1800), addr=rtcp_addr) == {"c1": [], "c2": []}


@pytest.mark.parametrize("data, kind", [
    (bytes.fromhex("0001 0000 2112a442") + bytes(12), "stun"),
    (bytes.fromhex("16fefd 0000000000000000 0010") + bytes(16), "dtls"),
    (bytes.fromhex("17fefd0001"), "dtls"),
    (bytes.fromhex("4000 0004 deadbeef"), "unknown"),  # TURN channel data
    (b"\xff\x00", "unknown"),
    (b"\x80", "unknown"),
    (b"", "unknown"),
])
def test_non_media_goes_to_the_control_plane(data, kind):
    """STUN always goes up (first contact on a shared port); DTLS only for a
    transport (a validated tuple or the socket's own); anything else is
    counted and dropped in C, never copied up (anyone can send it)."""
    rig = Rig()
    assert rig.send(data) == {"c1": [], "c2": []}
    up = [("packet", rig.s_in, rig.t_in, kind, PRODUCER_ADDR, data)] if kind != "unknown" else []
    assert rig.e.poll_upcalls() == up
    assert rig.e.counters()[f"rx_{kind}"] == 1
    assert rig.e.poll_upcalls() == []
    # From unknown addresses on sockets without a transport: only STUN.
    lone = rig.e.add_socket(-1)
    rig.send(data, addr=OTHER_ADDR, socket=lone)
    assert rig.e.poll_upcalls() == ([("packet", lone, 0, kind, OTHER_ADDR, data)] if kind == "stun" else [])


# ----------------------------------------------------------------- handles and removal


def test_stale_consumer_handle():
    rig = Rig()
    stale = rig.c1
    rig.e.remove_consumer(stale)
    with pytest.raises(KeyError):
        rig.e.consumer_stats(stale)
    with pytest.raises(KeyError):
        rig.e.set_consumer_paused(stale, True)
    index = stale & 0xFFFFF
    for _ in range(200):  # cycle until a new consumer lands in the same slot
        new = rig.e.add_consumer(rig.t1, rig.p, C1_SSRC, 0, 90000, C1_PT, C1_EXT, initial_seq=C1_INITIAL)
        if new & 0xFFFFF == index:
            break
        rig.e.remove_consumer(new)
    assert new & 0xFFFFF == index and new != stale
    with pytest.raises(KeyError):
        rig.e.set_consumer_paused(stale, True)
    rig.e.remove_consumer(stale)  # no effect on the new one
    pkt = media(1, 0)
    assert rig.send(pkt) == {"c1": [expected_c1(pkt, C1_INITIAL + 1)], "c2": [expected_c2(pkt, C2_INITIAL + 1)]}
    assert rig.e.consumer_stats(new)["packetCount"] == 1


def test_stale_transport_and_producer_handles():
    rig = Rig()
    t, p = rig.t_in, rig.p
    rig.e.remove_transport(t)
    for call in (lambda: rig.e.transport_stats(t), lambda: rig.e.transport_tuple(t),
                 lambda: rig.e.connect_transport(t, PRODUCER_ADDR), lambda: rig.e.set_transport_srtp(t, 0),
                 lambda: rig.e.producer_stats(p), lambda: rig.e.set_producer_paused(p, True)):
        with pytest.raises(KeyError):
            call()
    rig.e.remove_transport(t)
    rig.e.remove_producer(p)
    with pytest.raises(ValueError):
        rig.e.add_producer(t, True, [(S, 0)], PRODUCER_PT, PRODUCER_EXT)
    with pytest.raises(ValueError):
        rig.e.add_consumer(rig.t1, p, 1, 0, 90000, {}, {})
    # The socket is free again: a new transport and producer work.
    t_new = rig.e.add_transport(rig.s_in)
    assert t_new != t
    rig.e.connect_transport(t_new, PRODUCER_ADDR)
    p_new = rig.e.add_producer(t_new, True, [(S, 0)], PRODUCER_PT, PRODUCER_EXT)
    c_new = rig.e.add_consumer(rig.t1, p_new, C1_SSRC, 0, 90000, C1_PT, C1_EXT, initial_seq=C1_INITIAL)
    pkt = media(1, 0)
    assert rig.send(pkt) == {"c1": [expected_c1(pkt, C1_INITIAL + 1)], "c2": []}
    assert rig.e.consumer_stats(c_new)["packetCount"] == 1


def test_removing_a_producer_closes_its_consumers():
    rig = Rig()
    rig.send(media(1, 0))
    rig.e.remove_producer(rig.p)
    for c in (rig.c1, rig.c2):
        s = rig.e.consumer_stats(c)
        assert s["producerClosed"] is True and s["packetCount"] == 1
    with pytest.raises(KeyError):
        rig.e.producer_stats(rig.p)
    assert rig.send(media(2, 1800)) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_unknown_ssrc"] == 1
    rig.e.set_consumer_paused(rig.c1, True)  # still a valid consumer
    rig.e.remove_consumer(rig.c1)
    with pytest.raises(KeyError):
        rig.e.consumer_stats(rig.c1)


def test_removing_the_producer_transport_cascades():
    rig = Rig()
    rig.e.remove_transport(rig.t_in)
    with pytest.raises(KeyError):
        rig.e.producer_stats(rig.p)
    assert rig.e.consumer_stats(rig.c1)["producerClosed"] is True
    assert rig.e.consumer_stats(rig.c2)["producerClosed"] is True
    assert rig.send(media(1, 0)) == {"c1": [], "c2": []}
    assert rig.e.counters()["drop_no_transport"] == 1


def test_removing_a_consumer_transport_cascades_to_its_consumers_only():
    rig = Rig()
    rig.e.remove_transport(rig.t1)
    with pytest.raises(KeyError):
        rig.e.consumer_stats(rig.c1)
    with pytest.raises(KeyError):
        rig.e.transport_stats(rig.t1)
    pkt = media(1, 0)
    assert rig.send(pkt) == {"c1": [], "c2": [expected_c2(pkt, C2_INITIAL + 1)]}
    assert rig.e.consumer_stats(rig.c2)["producerClosed"] is False


def test_invalid_arguments():
    e = Engine()
    s = e.add_socket(-1)
    t = e.add_transport(s)
    with pytest.raises(ValueError):
        e.add_transport(s)  # socket already used
    with pytest.raises(ValueError):
        e.add_producer(t, True, [], {}, {})
    with pytest.raises(ValueError):
        e.add_producer(t, True, [(i, 0) for i in range(1, 6)], {}, {})
    p = e.add_producer(t, False, [(1, 0)], {111: 100}, {})
    with pytest.raises(ValueError):
        e.add_producer(t, False, [(1, 0)], {111: 100}, {})  # SSRC already routed
    with pytest.raises(ValueError):
        e.add_consumer(t, p, 2, 0, 0, {}, {})  # clock rate 0
    with pytest.raises(ValueError):
        e.add_producer(t, False, [(3, 0)], {128: 100}, {})
    with pytest.raises(ValueError):
        e.connect_transport(t, ("not an ip", 1))
    with pytest.raises(ValueError):
        e.receive(s, ("192.0.2.1", 70000), b"", 0)


# ----------------------------------------------------------------- SRTP (pylibsrtp)

pylibsrtp = pytest.importorskip("pylibsrtp")
from pylibsrtp._binding import lib  # noqa: E402


SUITES = {
    "AES_CM_128_HMAC_SHA1_80": (lib.srtp_profile_aes128_cm_sha1_80, 30, 10),
    "AEAD_AES_128_GCM": (lib.srtp_profile_aead_aes_128_gcm, 28, 16),
}


def session(profile: int, key: bytes, outbound: bool):
    policy = pylibsrtp.Policy(key=key, srtp_profile=profile, ssrc_type=(
        pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND))
    return pylibsrtp.Session(policy=policy)


class SrtpRig(Rig):
    """The producer transport and consumer 1's transport use SRTP (different
    keys per direction); consumer 2 stays plain. Consumer 2 starts below
    0x8000 here: libsrtp's receiver cannot take a first index >= 0x8000."""

    def __init__(self, suite: str, **kw):
        super().__init__(c2_initial=30000, **kw)
        profile, key_len, self.tag_len = SUITES[suite]
        k_in, k_out = bytes(range(key_len)), bytes(range(100, 100 + key_len))
        self.client_tx = session(profile, k_in, True)  # the producing browser
        self.client_rx = session(profile, k_out, False)  # consumer 1's browser
        # the engine makes its own contexts from the key bytes (src/srtp.c)
        self.e.set_transport_srtp(self.t_in, profile, in_key=k_in)
        self.e.set_transport_srtp(self.t1, profile, out_key=k_out)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_srtp_unprotect_forward_protect(suite):
    rig = SrtpRig(suite)
    for k in range(5):
        plain = media(700 + k, 1800 * k, marker=k == 4, padding=3 if k == 2 else 0)
        protected = rig.client_tx.protect(plain)
        assert len(protected) == len(plain) + rig.tag_len
        out = rig.send(protected)
        (c1,) = out["c1"]
        expected = expected_c1(plain, C1_INITIAL + 1 + k)
        assert len(c1) == len(expected) + rig.tag_len and c1[:12] == expected[:12]
        assert c1[-len(expected) + 12:] != expected[12:]  # encrypted on the wire
        assert rig.client_rx.unprotect(c1) == expected
        assert out["c2"] == [expected_c2(plain, 30000 + 1 + k)]  # plain transport: cleartext
    assert rig.e.counters()["drop_srtp"] == 0
    assert rig.e.counters()["tx_srtp_errors"] == 0
    assert rig.e.consumer_stats(rig.c1)["byteCount"] == sum(
        len(expected_c1(media(700 + k, 0, padding=3 if k == 2 else 0), 0)) + rig.tag_len for k in range(5))


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_srtp_tampered_and_replayed_packets_are_dropped(suite):
    rig = SrtpRig(suite)
    p1 = rig.client_tx.protect(media(1, 0))
    assert len(rig.send(p1)["c1"]) == 1
    assert rig.send(p1) == {"c1": [], "c2": []}  # replay
    for index in (-1, 20, len(p1) // 2):  # tag, header extension, payload
        bad = bytearray(rig.client_tx.protect(media(2 + abs(index), 1800)))
        bad[index] ^= 0x01
        assert rig.send(bytes(bad)) == {"c1": [], "c2": []}
    assert rig.send(media(9, 0)) == {"c1": [], "c2": []}  # cleartext on an SRTP transport
    assert rig.e.counters()["drop_srtp"] == 5
    assert rig.e.transport_stats(rig.t_in)["packetsDiscarded"] == 5
    # The genuine packet 2 goes through: no gap for the consumers.
    plain = media(2, 1800)
    out = rig.send(rig.client_tx.protect(plain))
    assert rig.client_rx.unprotect(out["c1"][0]) == expected_c1(plain, C1_INITIAL + 2)
    assert out["c2"] == [expected_c2(plain, 30002)]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_srtcp_unprotect(suite):
    rig = SrtpRig(suite)
    rr = bytes.fromhex("81c90007 00000001") + bytes(24) + bytes.fromhex("81ca0002 00000001 01017800")
    protected = rig.client_tx.protect_rtcp(rr)
    assert rig.send(protected) == {"c1": [], "c2": []}
    t = rig.e.transport_stats(rig.t_in)
    assert (t["rtcpPacketsReceived"], t["rtcpBytesReceived"]) == (1, len(rr))
    bad = bytearray(rig.client_tx.protect_rtcp(rr))
    bad[-1] ^= 0x80
    rig.send(bytes(bad))
    assert rig.e.counters()["drop_srtp"] == 1
    assert rig.e.counters()["drop_rtcp_malformed"] == 0


def test_comedia_does_not_latch_on_an_unauthenticated_packet():
    rig = SrtpRig("AES_CM_128_HMAC_SHA1_80", comedia=True, connect=False)
    rig.send(b"\x80\x60" + bytes(40), addr=OTHER_ADDR)  # forged, fails authentication
    assert rig.e.counters()["drop_srtp"] == 1
    plain = media(1, 0)
    out = rig.send(rig.client_tx.protect(plain), addr=PRODUCER_ADDR)
    assert rig.e.transport_tuple(rig.t_in)[0] == PRODUCER_ADDR
    assert rig.client_rx.unprotect(out["c1"][0]) == expected_c1(plain, C1_INITIAL + 1)


def test_consumers_coming_and_going_on_one_srtp_transport_free_their_stream_state():
    """The engine's SRTP context keeps per-SSRC state (src/srtp.h, at most
    4096 streams): a consumer removed gives its slot back, so a long-lived
    viewer transport survives any number of consumers over its life."""
    e = _testhooks.SansIOEngine()
    s_in, s_out = e.add_socket(-1), e.add_socket(-1)
    t_in, t_out = e.add_transport(s_in), e.add_transport(s_out)
    e.connect_transport(t_in, PRODUCER_ADDR)
    e.connect_transport(t_out, ("127.0.0.1", 7000))
    profile, key_len, _ = SUITES["AEAD_AES_128_GCM"]
    k_out = bytes(range(key_len))
    e.set_transport_srtp(t_out, profile, out_key=k_out)
    viewer = session(profile, k_out, False)
    p = e.add_producer(t_in, False, [(S, 0)], {111: 111}, {})
    for i in range(5000):  # more than the 4096 streams a context holds at once
        c = e.add_consumer(t_out, p, 0x10000 + i, 0x20000 + i, 48000, {111: 111}, {}, initial_seq=100)
        pkt = struct.pack("!BBHII", 0x80, 111, i & 0xFFFF, 960 * i, S) + b"opus"
        e.receive(s_in, PRODUCER_ADDR, pkt, 1000 + i)
        (_, _, data), = e.take_outbox()
        if i % 1000 == 0:
            assert viewer.unprotect(data)[12:] == b"opus"
        e.remove_consumer(c)
    assert e.counters()["tx_srtp_errors"] == 0
    assert e.counters()["tx_datagrams"] == 0  # sans-IO: nothing sent by a socket
