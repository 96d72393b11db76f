"""RTCP builders/parsers, RTX and NTP helpers (src/rtcp_nack.h, rtcp_report.h, rtx.h).

Expected bytes are written out by hand from the RFC layouts (RFC 3550
6.4.1/6.4.2, RFC 4585 6.2.1, RFC 4588 4) and checked field by field.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu._fastpath import _testhooks
from sfu._fastpath._testhooks import RtcpBuildError

SENDER, MEDIA = 0x11223344, 0xAABBCCDD


def nack_bytes(*fcis, sender=SENDER, media=MEDIA):
    n = len(fcis)
    out = bytes([0x81, 205]) + struct.pack("!H", 2 + n) + struct.pack("!II", sender, media)
    for pid, blp in fcis:
        out += struct.pack("!HH", pid, blp)
    return out


# ------------------------------------------------------------------ NACK

def test_nack_pid_blp_example():
    wire = bytes.fromhex("81cd0003" "11223344" "aabbccdd" "0064" "8005")
    assert wire == nack_bytes((100, 0b1000000000000101))
    assert _testhooks.rtcp_parse_nack(wire) == [100, 101, 103, 116]
    assert _testhooks.rtcp_build_nack(SENDER, MEDIA, [100, 101, 103, 116]) == wire
    assert _testhooks.rtcp_build_nack(SENDER, MEDIA, [116, 103, 100, 101, 103]) == wire  # unsorted, dup
    assert _testhooks.rtcp_nack_media_ssrc(wire) == MEDIA
    # accepted by the compound parser: RTPFB, FMT 1, 16 bytes
    assert _testhooks.parse_rtcp(wire) == [(205, 1, 0, 16)]


def test_nack_wrap_one_fci():
    wire = _testhooks.rtcp_build_nack(SENDER, MEDIA, [1, 65535, 2, 65534, 0])
    assert wire == nack_bytes((65534, 0b1111))
    assert _testhooks.rtcp_parse_nack(wire) == [65534, 65535, 0, 1, 2]


def test_nack_wrap_window_starts_after_largest_gap():
    # 65530 and 3 are 9 apart across the wrap: one FCI starting at 65530
    assert _testhooks.rtcp_build_nack(1, 2, [3, 65530]) == nack_bytes((65530, 1 << 8), sender=1, media=2)
    # far apart: separate FCIs, in serial order from after the largest gap
    assert _testhooks.rtcp_build_nack(1, 2, [40000, 10, 65000]) == nack_bytes(
        (40000, 0), (65000, 0), (10, 0), sender=1, media=2)


def test_nack_many_seqs_several_fcis():
    seqs = list(range(1000, 1101))  # 101 consecutive: 5 full windows of 17 + 16
    wire = _testhooks.rtcp_build_nack(SENDER, MEDIA, seqs)
    assert len(wire) == 12 + 6 * 4
    assert struct.unpack("!H", wire[2:4])[0] == 2 + 6
    fcis = [struct.unpack("!HH", wire[i:i + 4]) for i in range(12, len(wire), 4)]
    assert fcis == [(1000 + 17 * k, 0xFFFF) for k in range(5)] + [(1085, 0x7FFF)]
    assert _testhooks.rtcp_parse_nack(wire) == seqs
    # spaced by 17: one FCI each, BLP 0
    wire = _testhooks.rtcp_build_nack(SENDER, MEDIA, [0, 17, 34])
    assert wire == nack_bytes((0, 0), (17, 0), (34, 0))


def test_nack_build_errors():
    with pytest.raises(RtcpBuildError) as e:
        _testhooks.rtcp_build_nack(SENDER, MEDIA, [])
    assert e.value.code == -21
    with pytest.raises(RtcpBuildError) as e:
        _testhooks.rtcp_build_nack(SENDER, MEDIA, [1, 100], cap=16)  # needs 20
    assert e.value.code == -20
    assert len(_testhooks.rtcp_build_nack(SENDER, MEDIA, [1, 100], cap=20)) == 20


def test_nack_parse_errors_and_limits():
    wire = nack_bytes((100, 0x8005), (200, 0))
    assert _testhooks.rtcp_parse_nack(wire, 3) == [100, 101, 103]
    assert _testhooks.rtcp_parse_nack(wire + b"\0" * 8) == [100, 101, 103, 116, 200]  # trailing ignored
    bad = {
        "short": wire[:3],
        "version": bytes([0x41]) + wire[1:],
        "pt": wire[:1] + bytes([206]) + wire[2:],
        "fmt": bytes([0x8F]) + wire[1:],
        "length past end": wire[:-1],
        "no media ssrc": bytes([0x81, 205, 0, 1]) + wire[4:8],
    }
    for name, b in bad.items():
        with pytest.raises(RtcpBuildError):
            _testhooks.rtcp_parse_nack(b)
    # padding: P bit, 4 padding bytes counted in length
    padded = bytes([0xA1, 205]) + struct.pack("!H", 4) + wire[4:16] + b"\0\0\0\x04"
    assert _testhooks.rtcp_parse_nack(padded) == [100, 101, 103, 116]
    assert _testhooks.rtcp_nack_media_ssrc(b"\x81\xcd\x00") == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=300))
def test_nack_roundtrip_any_set(seqs):
    wire = _testhooks.rtcp_build_nack(SENDER, MEDIA, seqs, cap=65536)
    got = _testhooks.rtcp_parse_nack(wire)
    assert set(got) == set(seqs) and len(got) == len(set(seqs))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.sets(st.integers(0, 999), min_size=1, max_size=256))
def test_nack_roundtrip_window_in_serial_order(base, offs):
    seqs = [(base + o) & 0xFFFF for o in offs]
    got = _testhooks.rtcp_parse_nack(_testhooks.rtcp_build_nack(SENDER, MEDIA, seqs))
    assert got == [(base + o) & 0xFFFF for o in sorted(offs)]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_parsers_survive_random_bytes(data):
    for fn in (_testhooks.rtcp_parse_nack, _testhooks.rtcp_parse_sr, _testhooks.rtcp_parse_report_blocks):
        try:
            fn(data)
        except RtcpBuildError:
            pass
    _testhooks.rtcp_nack_media_ssrc(data)
    for fn, args in ((_testhooks.rtx_decapsulate, (96, 1)), (_testhooks.rtx_encapsulate, (97, 2, 3))):
        try:
            fn(data, *args)
        except RtcpBuildError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=80), st.sampled_from([200, 201, 205]), st.integers(0, 31))
def test_parsers_survive_plausible_headers(body, pt, count):
    data = bytes([0x80 | count, pt]) + struct.pack("!H", len(body) // 4) + body
    for fn in (_testhooks.rtcp_parse_nack, _testhooks.rtcp_parse_sr, _testhooks.rtcp_parse_report_blocks):
        try:
            fn(data)
        except RtcpBuildError:
            pass


# ------------------------------------------------------------------ SR / RR

BLOCK = {"ssrc": 0x01020304, "fraction_lost": 0x40, "cumulative_lost": 0x000102,
         "ext_highest_seq": 0x0001FFFF, "jitter": 0x21, "lsr": 0xB7052000, "dlsr": 0x00054000}
BLOCK_BYTES = bytes.fromhex("01020304" "40" "000102" "0001ffff" "00000021" "b7052000" "00054000")


def test_sr_hand_written():
    # RFC 3550 6.4.1: V=2 P=0 RC=1 PT=200 length=12 (52 bytes)
    wire = (bytes.fromhex("81c8000c" "deadbeef")
            + bytes.fromhex("e1b7c3a6" "80000000")   # NTP 3787965350.5
            + bytes.fromhex("00015f90")              # RTP timestamp 90000
            + bytes.fromhex("0000000a" "000003e8")   # 10 packets, 1000 octets
            + BLOCK_BYTES)
    assert _testhooks.rtcp_parse_sr(wire) == (0xDEADBEEF, (0xE1B7C3A6 << 32) | 0x80000000, 90000, 10, 1000)
    assert _testhooks.rtcp_parse_report_blocks(wire) == [BLOCK]
    assert _testhooks.rtcp_build_sr(0xDEADBEEF, (0xE1B7C3A6 << 32) | 0x80000000, 90000, 10, 1000, [BLOCK]) == wire
    assert _testhooks.parse_rtcp(wire) == [(200, 1, 0, 52)]


def test_rr_hand_written():
    wire = bytes.fromhex("81c90007" "cafebabe") + BLOCK_BYTES
    assert _testhooks.rtcp_build_rr(0xCAFEBABE, [BLOCK]) == wire
    assert _testhooks.rtcp_parse_report_blocks(wire) == [BLOCK]
    empty = _testhooks.rtcp_build_rr(0xCAFEBABE)
    assert empty == bytes.fromhex("80c90001" "cafebabe")
    assert _testhooks.rtcp_parse_report_blocks(empty) == []
    assert _testhooks.parse_rtcp(wire + empty) == [(201, 1, 0, 32), (201, 0, 32, 8)]


def block(i, lost):
    return {"ssrc": 1000 + i, "fraction_lost": i * 7 & 0xFF, "cumulative_lost": lost,
            "ext_highest_seq": 65536 * i + 5, "jitter": i * 3, "lsr": i << 20, "dlsr": i << 8}


@pytest.mark.parametrize("n", [0, 1, 2, 31])
def test_sr_rr_roundtrip(n):
    blocks = [block(i, (-1) ** i * i * 1000) for i in range(n)]
    rr = _testhooks.rtcp_build_rr(7, blocks)
    assert len(rr) == 8 + 24 * n and rr[0] == 0x80 | n and rr[1] == 201
    assert _testhooks.rtcp_parse_report_blocks(rr) == blocks
    assert _testhooks.rtcp_parse_report_blocks(rr, 1) == blocks[:1]
    ntp = _testhooks.ntp_from_ms(1_700_000_000_123)
    sr = _testhooks.rtcp_build_sr(8, ntp, 123456, 99, 99999, blocks)
    assert len(sr) == 28 + 24 * n
    assert _testhooks.rtcp_parse_sr(sr) == (8, ntp, 123456, 99, 99999)
    assert _testhooks.rtcp_parse_report_blocks(sr) == blocks


def test_cumulative_lost_24_bit_signed():
    for lost, wire in ((-1, "ffffff"), (0x7FFFFF, "7fffff"), (-0x800000, "800000"),
                       (0x1000000, "7fffff"), (-0x1000000, "800000")):
        rr = _testhooks.rtcp_build_rr(1, [dict(BLOCK, cumulative_lost=lost)])
        assert rr[13:16] == bytes.fromhex(wire)
        assert _testhooks.rtcp_parse_report_blocks(rr)[0]["cumulative_lost"] == max(-0x800000, min(0x7FFFFF, lost))


def test_sr_rr_errors():
    with pytest.raises(RtcpBuildError):
        _testhooks.rtcp_build_rr(1, [block(i, 0) for i in range(32)])
    with pytest.raises(RtcpBuildError) as e:
        _testhooks.rtcp_build_sr(1, 0, 0, 0, 0, [BLOCK], cap=51)
    assert e.value.code == -20
    sr = _testhooks.rtcp_build_sr(1, 2, 3, 4, 5, [BLOCK])
    rr = _testhooks.rtcp_build_rr(1, [BLOCK])
    with pytest.raises(RtcpBuildError):
        _testhooks.rtcp_parse_sr(rr)                      # not an SR
    with pytest.raises(RtcpBuildError):
        _testhooks.rtcp_parse_sr(sr[:27])
    with pytest.raises(RtcpBuildError):                # RC=2 but one block
        _testhooks.rtcp_parse_report_blocks(bytes([0x82]) + rr[1:])
    with pytest.raises(RtcpBuildError):
        _testhooks.rtcp_parse_report_blocks(nack_bytes((1, 0)))
    with pytest.raises(RtcpBuildError):                # length past the end
        _testhooks.rtcp_parse_report_blocks(rr[:-4])


# ------------------------------------------------------------------ NTP

def test_ntp_helpers():
    assert _testhooks.ntp_from_ms(0) == 2208988800 << 32
    assert _testhooks.ntp_from_ms(1500) == ((2208988801 << 32) | 0x80000000)
    assert _testhooks.ntp_from_ms(250) & 0xFFFFFFFF == 0x40000000
    for ms in (0, 1, 999, 1_700_000_000_123):
        assert _testhooks.ntp_to_ms(_testhooks.ntp_from_ms(ms)) == ms
    assert _testhooks.ntp_compact(0x1234567890ABCDEF) == 0x567890AB
    # RFC 3550 6.4.1 example: A=46864.500 s, LSR=46853.125 s, DLSR=5.250 s -> 6.125 s
    assert _testhooks.rtcp_rtt_ms(0xB7108000, 0xB7052000, 0x00054000) == 6125
    assert _testhooks.rtcp_rtt_ms(0xB7108000, 0, 0x00054000) == 0
    assert _testhooks.rtcp_rtt_ms(0xB7052000, 0xB7052000, 0x00054000) == 0


# ------------------------------------------------------------------ RTX

CSRCS = (0x0A0B0C0D, 0x01010101)
EXT = bytes.fromhex("bede0002" "10ff" "22abcdef" "00" "00")  # one-byte ids 1 (1 byte) and 2 (3 bytes)
PAYLOAD = bytes(range(1, 41))


def rtp(seq=0x1234, pt=96, ssrc=0x55667788, marker=True, padding=0, payload=PAYLOAD):
    b0 = 0x80 | (0x20 if padding else 0) | 0x10 | len(CSRCS)
    out = bytes([b0, (0x80 if marker else 0) | pt]) + struct.pack("!HII", seq, 0xDEAD0001, ssrc)
    out += b"".join(struct.pack("!I", c) for c in CSRCS) + EXT + payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


HDR = 12 + 4 * len(CSRCS) + len(EXT)


@pytest.mark.parametrize("padding", [0, 1, 4, 255])
def test_rtx_encapsulate_fields(padding):
    orig = rtp(padding=padding)
    rtx = _testhooks.rtx_encapsulate(orig, 97, 0x99999999, 0x0001)
    assert len(rtx) == HDR + 2 + len(PAYLOAD)
    assert rtx[0] == 0x80 | 0x10 | len(CSRCS)          # V=2, P cleared, X, CC kept
    assert rtx[1] == 0x80 | 97                          # marker kept, RTX PT
    assert rtx[2:4] == b"\x00\x01"                      # RTX seq
    assert rtx[4:8] == orig[4:8]                        # timestamp kept
    assert rtx[8:12] == b"\x99\x99\x99\x99"
    assert rtx[12:HDR] == orig[12:HDR]                  # CSRCs + extension block
    assert rtx[HDR:HDR + 2] == b"\x12\x34"              # OSN
    assert rtx[HDR + 2:] == PAYLOAD
    p = _testhooks.parse_rtp(rtx)
    assert p["csrcs"] == list(CSRCS) and p["payload"] == b"\x12\x34" + PAYLOAD
    assert _testhooks.rtp_extensions(rtx) == [(1, b"\xff"), (2, b"\xab\xcd\xef")]

    osn, back = _testhooks.rtx_decapsulate(rtx, 96, 0x55667788)
    assert osn == 0x1234
    assert back == rtp(padding=0)                       # the original, without its padding


def test_rtx_roundtrip_identity_and_padding_kept_on_decapsulate():
    orig = rtp(marker=False, seq=65535)
    rtx = _testhooks.rtx_encapsulate(orig, 97, 7, 3)
    assert _testhooks.rtx_decapsulate(rtx, 96, 0x55667788) == (65535, orig)
    # an RTX packet carrying padding (another sender's choice): padding stays at the end
    padded = bytearray(rtx + bytes(3) + b"\x04")
    padded[0] |= 0x20
    osn, back = _testhooks.rtx_decapsulate(bytes(padded), 96, 0x55667788)
    assert osn == 65535
    p = _testhooks.parse_rtp(back)
    assert p["padding_length"] == 4 and p["payload"] == PAYLOAD and p["sequence_number"] == 65535


def test_rtx_minimal_packets():
    bare = bytes([0x80, 96, 0, 5]) + bytes(8)
    rtx = _testhooks.rtx_encapsulate(bare, 97, 1, 2)        # empty payload: OSN only
    assert rtx == bytes([0x80, 97, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 5])
    assert _testhooks.rtx_decapsulate(rtx, 96, 0) == (5, bare)
    with pytest.raises(RtcpBuildError) as e:              # payload < 2
        _testhooks.rtx_decapsulate(bare + b"\x01", 96, 0)
    assert e.value.code == -22
    with pytest.raises(RtcpBuildError) as e:              # padding-only payload
        _testhooks.rtx_decapsulate(bytes([0xA0, 97, 0, 1]) + bytes(8) + b"\x00\x00\x03", 96, 0)
    assert e.value.code == -22


def test_rtx_errors():
    orig = rtp()
    with pytest.raises(RtcpBuildError) as e:
        _testhooks.rtx_encapsulate(orig, 97, 1, 1, cap=len(orig) + 1)
    assert e.value.code == -20
    assert len(_testhooks.rtx_encapsulate(orig, 97, 1, 1, cap=len(orig) + 2)) == len(orig) + 2
    for bad in (orig[:11], bytes([0x40]) + orig[1:], orig[:HDR - 3]):
        with pytest.raises(RtcpBuildError) as e:
            _testhooks.rtx_encapsulate(bad, 97, 1, 1)
        assert -8 <= e.value.code <= -1  # rtp.h codes
        with pytest.raises(RtcpBuildError):
            _testhooks.rtx_decapsulate(bad, 96, 1)


def test_nack_generator_to_wire_and_back():
    """The generator's output fits the builder, and the parser returns it."""
    g = _testhooks.NackGenerator()
    seq = 65500
    g.on_packet(seq, False, 0)
    lost = set()
    for i in range(1, 122):  # 121 arrives: 119 is known lost
        s = (seq + i) & 0xFFFF
        if i % 7 == 0 or 40 < i < 60:
            lost.add(s)
            continue
        g.on_packet(s, False, 0)
    due = g.poll(0, 100)
    assert set(due) == lost
    wire = _testhooks.rtcp_build_nack(1, 2, due)
    assert _testhooks.rtcp_parse_nack(wire) == due  # already in serial order
