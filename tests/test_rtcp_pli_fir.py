"""Keyframe requests on the wire: PLI (RFC 4585 6.3.1, src/rtcp_pli.c) and
FIR (RFC 5104 4.3.1, src/rtcp_fir.c), and the engine's answer to a FIR that
names several of a transport's consumers."""

from __future__ import annotations

import struct

import pytest

from sfu._fastpath import _testhooks as H

# A PLI as Chromium sends it: V=2 FMT=1, PT=206, length 2, sender, media source.
CHROMIUM_PLI = bytes.fromhex("81ce0002" "00000001" "2a9f3c11")
# A FIR with two entries (RFC 5104: media source 0, then SSRC + seq nr + 3 reserved bytes each).
FIR_TWO = bytes.fromhex("84ce0006" "0000abcd" "00000000" "000000c1" "07000000" "000000c2" "08000000")


def test_pli_is_built_byte_for_byte():
    assert H.rtcp_build_pli(1, 0x2A9F3C11) == CHROMIUM_PLI
    with pytest.raises(H.RtcpBuildError):
        H.rtcp_build_pli(1, 2, cap=11)


def test_pli_parse_reads_the_media_source_and_refuses_what_is_not_a_pli():
    assert H.rtcp_parse_pli(CHROMIUM_PLI) == 0x2A9F3C11
    assert H.rtcp_parse_pli(CHROMIUM_PLI + b"extra bytes after it") == 0x2A9F3C11
    for bad in (b"", CHROMIUM_PLI[:4], CHROMIUM_PLI[:11],
                bytes([0x84]) + CHROMIUM_PLI[1:],          # FMT 4: a FIR
                CHROMIUM_PLI[:1] + bytes([205]) + CHROMIUM_PLI[2:],  # RTPFB
                bytes([0x41]) + CHROMIUM_PLI[1:],          # version 1
                CHROMIUM_PLI[:2] + b"\x00\x05" + CHROMIUM_PLI[4:],  # length past the end
                CHROMIUM_PLI[:2] + b"\x00\x01" + CHROMIUM_PLI[4:8]):  # no media source
        with pytest.raises(H.RtcpBuildError):
            H.rtcp_parse_pli(bad)


def test_fir_is_built_and_parsed_with_every_entry():
    one = H.rtcp_build_fir(0xABCD, 0xC1, 7)
    assert one == FIR_TWO[:2] + b"\x00\x04" + FIR_TWO[4:20]
    assert H.rtcp_parse_fir(one) == [(0xC1, 7)]
    assert H.rtcp_parse_fir(FIR_TWO) == [(0xC1, 7), (0xC2, 8)]
    assert H.rtcp_parse_fir(FIR_TWO, limit=1) == [(0xC1, 7)]
    for n in range(len(FIR_TWO)):
        if n < 20:
            with pytest.raises(H.RtcpBuildError):
                H.rtcp_parse_fir(FIR_TWO[:n])
    with pytest.raises(H.RtcpBuildError):
        H.rtcp_parse_fir(CHROMIUM_PLI)  # FMT 1


def test_a_fir_naming_two_consumers_asks_both_their_producers_for_a_keyframe():
    e = H.SansIOEngine()
    pubs = [("127.0.0.1", 5000), ("127.0.0.1", 5001)]
    viewer = ("127.0.0.1", 6000)
    s_pub = [e.add_socket(-1), e.add_socket(-1)]
    t_pub = [e.add_transport(s) for s in s_pub]
    for t, a in zip(t_pub, pubs):
        e.connect_transport(t, a)
    s_v = e.add_socket(-1)
    t_v = e.add_transport(s_v)
    e.connect_transport(t_v, viewer)
    producers = [e.add_producer(t, True, [(0xA0 + i, 0)], {96: 101}, {}, codecs={101: "vp8"})
                 for i, t in enumerate(t_pub)]
    for i, p in enumerate(producers):
        e.add_consumer(t_v, p, 0xC1 + i, 0, 90000, {101: 101}, {})
    e.tick(1000)  # the engine's own requests for the new consumers
    e.take_outbox()
    out = e.receive(s_v, viewer, FIR_TWO, 2000) or e.take_outbox()
    plis = {a: struct.unpack("!I", d[8:12])[0] for _, a, d in out if d[1] == 206 and d[0] & 0x1F == 1}
    assert plis == {pubs[0]: 0xA0, pubs[1]: 0xA1}
    assert e.counters()["rx_fir"] == 1
