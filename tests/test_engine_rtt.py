"""RTT toward a publisher (sans-IO, virtual time): the engine sends an XR
receiver reference time (RFC 3611 4.4) after each receiver report, the
publisher answers with a DLRR (4.5), and the measured round trip times the
NACK retries (src/reports.c, src/rtt.c) instead of the 100 ms default."""

from __future__ import annotations

import struct

from sfu._fastpath import _rtt_hooks as X
from sfu._fastpath import _testhooks as H

PUB = ("127.0.0.1", 5000)
VIEW = ("127.0.0.1", 6000)
S = 0xAAAA0000
OUR_SSRC = 1  # the SFU's receiver-report SSRC toward publishers (reports.h)


def media(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, 3000 * seq, S) + b"\x10\x00key"


def rtcp_items(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        n = (struct.unpack_from("!H", data, pos + 2)[0] + 1) * 4
        out.append(data[pos:pos + n])
        pos += n
    return out


def rig():
    e = H.SansIOEngine()
    s_pub, s_view = e.add_socket(-1), e.add_socket(-1)
    t_pub, t_view = e.add_transport(s_pub), e.add_transport(s_view)
    e.connect_transport(t_pub, PUB)
    e.connect_transport(t_view, VIEW)
    p = e.add_producer(t_pub, True, [(S, 0)], {96: 101}, {}, codecs={101: "vp8"})
    e.set_producer_feedback(p, nack=True, clock_rate=90000)
    e.add_consumer(t_view, p, 0xC1, 0, 90000, {101: 101}, {})
    return e, s_pub, t_pub, p


def reports_to_publisher(out) -> list[bytes]:
    return [item for _, a, d in out if a == PUB and 192 <= d[1] <= 223 for item in rtcp_items(d)]


def test_a_dlrr_answer_gives_the_rtt_and_it_times_the_nack_retries():
    e, s_pub, t_pub, p = rig()
    for seq in range(1, 11):
        e.receive(s_pub, PUB, media(seq), 1000 + seq)
    assert e.transport_stats(t_pub)["roundTripTime"] is None
    e.tick(2000)
    items = reports_to_publisher(e.take_outbox())
    rr = [i for i in items if i[1] == 201]
    xr = [i for i in items if i[1] == 207]
    assert rr and xr, items
    assert items.index(xr[0]) > items.index(rr[0])  # [RR][XR], one compound (RFC 3550 6.1)
    info = X.parse_xr(xr[0])
    assert info["sender_ssrc"] == OUR_SSRC and info["nrrtr"] == 1
    lrr = X.ntp_compact(info["rrtr_ntp"])
    # The publisher holds the RRTR 37 ms; the network takes 2 x 40 ms.
    dlrr = X.build_dlrr(S, [(0x5555, 1, 1), (OUR_SSRC, lrr, 37 * 65536 // 1000)])
    e.receive(s_pub, PUB, dlrr, 2000 + 40 + 37 + 40)
    rtt = e.transport_stats(t_pub)["roundTripTime"]
    assert rtt is not None and abs(rtt - 80) <= 1, rtt
    assert e.producer_stats(p)[0]["roundTripTime"] == rtt
    # A hole: NACKed at once, then retried one measured RTT later (not 100 ms).
    e.take_outbox()
    e.receive(s_pub, PUB, media(13), 3000)  # 11 and 12 missing
    first = [i for i in reports_to_publisher(e.take_outbox()) if i[1] == 205]
    assert len(first) == 1
    wait = e.tick(3001)
    assert 0 < wait <= rtt, wait
    e.tick(3000 + rtt)
    assert [i for i in reports_to_publisher(e.take_outbox()) if i[1] == 205]


def test_dlrr_for_another_ssrc_or_an_unknown_rrtr_gives_no_rtt():
    e, s_pub, t_pub, _ = rig()
    e.receive(s_pub, PUB, media(1), 1001)
    e.tick(2000)
    e.take_outbox()
    e.receive(s_pub, PUB, X.build_dlrr(S, [(0x7777, 123, 1)]), 2100)       # not addressed to us
    e.receive(s_pub, PUB, X.build_dlrr(S, [(OUR_SSRC, 0x12345678, 1)]), 2100)  # an LRR we never sent
    assert e.transport_stats(t_pub)["roundTripTime"] is None
    assert e.counters()["drop_rtcp_malformed"] == 0
