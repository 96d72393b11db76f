"""Sans-IO tests of two things every third-party client depends on:

* each consumer writes its *own* MID on every packet it sends (forwarded and
  retransmitted), and removes RID / repaired-RID, whatever the publisher
  sent (RFC 8843 section 9.2: a receiver files packets by MID until it knows
  the SSRC, so a publisher's MID would land them in the wrong m-section);
* producers that signal no SSRC are found the way mediasoup's RtpListener
  finds them: SSRC, then the producer's MID, then the stream's RID (RRID
  for RTX), and the SSRC is bound from then on.
"""

from __future__ import annotations

from sfu._fastpath._testhooks import SansIOEngine as Engine
from sfu._fastpath._reference import build_rtp, parse_rtp, rtp_extensions

PUB = ("192.0.2.10", 40000)
V1 = ("198.51.100.1", 50001)
V2 = ("198.51.100.2", 50002)

# incoming extension ids of the publisher: mid 9, rid 10, rrid 11, abs-send-time 2
MID_IN, RID_IN, RRID_IN = 9, 10, 11
# router ids (sfu.supported_rtp_capabilities): mid 1, rid 2, rrid 3, abs-send-time 4
PRODUCER_EXT = {MID_IN: 1, RID_IN: 2, RRID_IN: 3, 2: 4}
PRODUCER_PT = {96: 101, 97: 102}  # VP8 and its RTX
VP8_KEY = b"\x10\x00\x00\x9d\x01\x2a" + bytes(20)
VP8_DELTA = b"\x10\x00\x01" + bytes(20)


def pkt(seq: int, ssrc: int, exts: list[tuple[int, bytes]] | None, *, pt: int = 96,
        payload: bytes = VP8_KEY) -> bytes:
    return build_rtp(payload_type=pt, sequence_number=seq, timestamp=seq * 3000, ssrc=ssrc,
                     extensions=exts, payload=payload)


class Rig:
    def __init__(self, streams=((0x1111, 0),), rids=None, mid="0"):
        self.e = e = Engine()
        self.now = 10_000
        self.s_in = e.add_socket(-1)
        self.t_in = e.add_transport(self.s_in)
        e.connect_transport(self.t_in, PUB)
        self.p = e.add_producer(self.t_in, True, list(streams), PRODUCER_PT, PRODUCER_EXT, codecs={101: "vp8"})
        e.set_producer_feedback(self.p, nack=True, rtx_apt={97: 96})
        if mid is not None or rids:
            e.set_producer_rtp_ids(self.p, mid, rids, MID_IN, RID_IN, RRID_IN)
        self.s1, self.s2 = e.add_socket(-1), e.add_socket(-1)
        self.t1, self.t2 = e.add_transport(self.s1), e.add_transport(self.s2)
        e.connect_transport(self.t1, V1)
        e.connect_transport(self.t2, V2)
        self.where = {self.s1: "v1", self.s2: "v2"}

    def consumer(self, which: str, mid: str, mid_ext_id: int, ssrc: int, ext_map=None, rtx=False):
        t = self.t1 if which == "v1" else self.t2
        # router mid (1) is not in the map: the engine writes the consumer's own
        ext_map = {4: 3} if ext_map is None else ext_map
        c = self.e.add_consumer(t, self.p, ssrc, ssrc + 1 if rtx else 0, 90000, {101: 96, 102: 97}, ext_map,
                                initial_seq=100)
        if rtx:
            self.e.set_consumer_feedback(c, nack=True, rtx_pt=97)
        self.e.set_consumer_mid(c, mid_ext_id, mid)
        return c

    def send(self, data: bytes) -> dict[str, list[bytes]]:
        self.now += 20
        self.e.receive(self.s_in, PUB, data, self.now)
        out: dict[str, list[bytes]] = {"v1": [], "v2": []}
        for sock, _addr, d in self.e.take_outbox():
            if sock in self.where:
                out[self.where[sock]].append(d)
        return out


def test_each_consumer_writes_its_own_mid_and_drops_rid():
    rig = Rig()
    rig.consumer("v1", "1", 1, 0xA)        # a WHEP viewer whose video is its m-section "1"
    rig.consumer("v2", "video", 12, 0xB)   # another id and a longer mid
    src = pkt(1, 0x1111, [(2, b"\x01\x02\x03"), (MID_IN, b"0"), (RID_IN, b"hi")])
    out = rig.send(src)
    assert rtp_extensions(out["v1"][0]) == [(3, b"\x01\x02\x03"), (1, b"1")]
    assert rtp_extensions(out["v2"][0]) == [(3, b"\x01\x02\x03"), (12, b"video")]
    assert parse_rtp(out["v1"][0])["payload"] == VP8_KEY


def test_mid_is_written_when_the_publisher_stopped_sending_it():
    """Chromium drops MID once a receiver report acknowledges the SSRC; a
    consumer still writes its own on every packet (a late viewer needs it)."""
    rig = Rig()
    rig.consumer("v1", "3", 1, 0xA)
    out = rig.send(pkt(1, 0x1111, None))
    p = parse_rtp(out["v1"][0])
    assert p["extension"] and rtp_extensions(out["v1"][0]) == [(1, b"3")]
    assert p["payload"] == VP8_KEY


def test_consumer_without_mid_extension_forwards_none():
    rig = Rig()
    rig.consumer("v1", "0", 0, 0xA)
    out = rig.send(pkt(1, 0x1111, [(MID_IN, b"0"), (2, b"\x01\x02\x03")]))
    assert rtp_extensions(out["v1"][0]) == [(3, b"\x01\x02\x03")]


def test_retransmission_carries_the_consumers_mid():
    rig = Rig()
    rig.consumer("v1", "7", 1, 0xA, rtx=True)
    rig.send(pkt(1, 0x1111, [(MID_IN, b"0")]))
    rig.send(pkt(2, 0x1111, [(MID_IN, b"0")], payload=VP8_DELTA))
    # the viewer NACKs its sequence number 102 (the second packet)
    nack = bytes([0x81, 205, 0, 3]) + (0x1234).to_bytes(4, "big") + (0xA).to_bytes(4, "big") + \
        (102).to_bytes(2, "big") + b"\x00\x00"
    rig.now += 50
    rig.e.receive(rig.s1, V1, nack, rig.now)
    rtx = [d for s, _a, d in rig.e.take_outbox() if s == rig.s1 and parse_rtp(d)["ssrc"] == 0xB]
    assert len(rtx) == 1
    assert parse_rtp(rtx[0])["payload_type"] == 97
    assert rtp_extensions(rtx[0]) == [(1, b"7")]


def test_producer_without_ssrc_is_found_by_mid():
    rig = Rig(streams=((0, 0),), mid="a")
    rig.consumer("v1", "0", 1, 0xA)
    # another MID, an SSRC nobody signalled: dropped
    out = rig.send(pkt(1, 0x5555, [(MID_IN, b"b")]))
    assert out["v1"] == [] and rig.e.counters()["drop_unknown_ssrc"] == 1
    out = rig.send(pkt(2, 0x7777, [(MID_IN, b"a")]))
    assert len(out["v1"]) == 1
    assert rig.e.producer_stats(rig.p)[0]["ssrc"] == 0x7777
    assert rig.e.counters()["ssrc_learned"] == 1
    # from now on the SSRC alone routes it (browsers stop sending MID)
    out = rig.send(pkt(3, 0x7777, None, payload=VP8_DELTA))
    assert len(out["v1"]) == 1
    # and another SSRC with the same MID does not take over the stream
    out = rig.send(pkt(4, 0x8888, [(MID_IN, b"a")]))
    assert out["v1"] == []


def test_simulcast_streams_found_by_rid_and_rtx_by_repaired_rid():
    rig = Rig(streams=((0, 0), (0, 0)), rids=["lo", "hi"], mid="v")
    c = rig.consumer("v1", "0", 1, 0xA, rtx=True)
    rig.e.set_consumer_target_stream(c, 0)  # forwards stream 0 ("lo"; the default is the top one)
    out = rig.send(pkt(1, 0x2002, [(MID_IN, b"v"), (RID_IN, b"hi")]))
    assert out["v1"] == []
    out = rig.send(pkt(1, 0x1001, [(MID_IN, b"v"), (RID_IN, b"lo")]))
    assert len(out["v1"]) == 1
    # RTX of "lo", named by its repaired RID: decapsulated as a retransmission
    rtx = build_rtp(payload_type=97, sequence_number=50, timestamp=3000, ssrc=0x1003,
                    extensions=[(MID_IN, b"v"), (RRID_IN, b"lo")], payload=(2).to_bytes(2, "big") + VP8_DELTA)
    rig.send(rtx)
    stats = rig.e.producer_stats(rig.p)
    assert [(s["ssrc"], s["rtxSsrc"]) for s in stats] == [(0x1001, 0x1003), (0x2002, None)]
    assert stats[0]["retransmittedPackets"] == 1
    assert rig.e.counters()["ssrc_learned"] == 3


def test_rid_without_mid_and_unknown_rid():
    rig = Rig(streams=((0, 0),), rids=["q"], mid=None)
    rig.consumer("v1", "0", 1, 0xA)
    assert rig.send(pkt(1, 0x1, [(RID_IN, b"f")]))["v1"] == []
    assert len(rig.send(pkt(2, 0x2, [(RID_IN, b"q")]))["v1"]) == 1


def test_packet_without_extensions_from_unknown_ssrc_is_dropped():
    rig = Rig(streams=((0, 0),), mid="a")
    rig.consumer("v1", "0", 1, 0xA)
    assert rig.send(pkt(1, 0x9, None))["v1"] == []
    assert rig.e.counters()["drop_unknown_ssrc"] == 1
    assert rig.e.producer_stats(rig.p)[0]["ssrc"] == 0
