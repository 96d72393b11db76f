"""RTCP compound splitting and validation (src/rtcp.c through
sfu._fastpath._testhooks.parse_rtcp), against the reference as well."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sfu._fastpath import _reference, _testhooks

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.bin").read_bytes()


@pytest.fixture(params=[_testhooks, _reference], ids=["compiled", "reference"])
def impl(request):
    return request.param


def packet(pt: int, count: int = 0, body: bytes = b"", *, padding: int = 0, version: int = 2) -> bytes:
    """One RTCP packet; `padding` bytes (last one = their count) are appended."""
    pad = bytes(padding - 1) + bytes((padding,)) if padding else b""
    total = 4 + len(body) + len(pad)
    assert total % 4 == 0
    first = (version << 6) | (0x20 if padding else 0) | count
    return struct.pack("!BBH", first, pt, total // 4 - 1) + body + pad


def words(n: int) -> bytes:
    return bytes(4 * n)


# ----------------------------------------------------------------- fixtures

PARSED = {
    "rtcp_rr_sdes": [(201, 1, 0, 32), (202, 1, 32, 28)],
    "rtcp_sr_sdes": [(200, 0, 0, 28), (202, 1, 28, 28)],
    "rtcp_nack": [(205, 1, 0, 16)],
    "rtcp_pli": [(206, 1, 0, 12)],
    "rtcp_remb": [(206, 15, 0, 24)],
}

ERRORS = {
    "rtcp_rr_sdes_truncated": "RTCP length runs past the end of the datagram",
    "rtcp_rr_sdes_invalid": "RTCP padding is invalid or not on the last packet",
    "rtcp_sr_sdes_truncated": "RTCP packet shorter than its 4-byte header",
    "rtcp_sr_sdes_invalid": "RTCP packet too short for its report count",
    "rtcp_nack_truncated": "RTCP packet shorter than its 4-byte header",
    "rtcp_nack_invalid": "RTCP packet too short for its report count",
    "rtcp_pli_truncated": "RTCP length runs past the end of the datagram",
    "rtcp_pli_invalid": "RTCP version is not 2",
    "rtcp_remb_truncated": "RTCP length runs past the end of the datagram",
    "rtcp_remb_invalid": "RTCP packet type is outside 192..223",
}


@pytest.mark.parametrize("name", sorted(PARSED))
def test_parse_fixture(impl, name):
    assert impl.parse_rtcp(fixture(name)) == PARSED[name]


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_truncated_and_invalid_fixtures(impl, name):
    with pytest.raises(ValueError) as info:
        impl.parse_rtcp(fixture(name))
    assert str(info.value) == ERRORS[name]


def test_fixture_contents():
    """The fixtures say what their comments claim (independent decoding)."""
    rr = fixture("rtcp_rr_sdes")
    assert struct.unpack_from("!I", rr, 4)[0] == 1
    ssrc, lost, ext_seq, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", rr, 8)
    assert (ssrc, ext_seq, jitter) == (0x3C1B7F9E, 0x15B8E, 0x12)
    assert rr[32 + 8 : 32 + 10] == b"\x01\x10" and rr[42:58] == b"3Ihn1hmo8yuG5lNR"
    sr = fixture("rtcp_sr_sdes")
    assert struct.unpack_from("!II", sr, 20) == (500, 80000)  # packet and octet counts
    nack = fixture("rtcp_nack")
    assert struct.unpack_from("!HH", nack, 12) == (0x5B8E, 0x0005)
    remb = fixture("rtcp_remb")
    assert remb[12:16] == b"REMB" and remb[16] == 1
    exp, mantissa = remb[17] >> 2, ((remb[17] & 3) << 16) | struct.unpack_from("!H", remb, 18)[0]
    assert mantissa << exp == 3451072
    assert struct.unpack_from("!I", remb, 20)[0] == 0x3C1B7F9E


def test_compound_of_every_fixture(impl):
    data = b"".join(fixture(n) for n in ("rtcp_sr_sdes", "rtcp_rr_sdes", "rtcp_nack", "rtcp_pli", "rtcp_remb"))
    items = impl.parse_rtcp(data)
    assert [(pt, c) for pt, c, _, _ in items] == [(200, 0), (202, 1), (201, 1), (202, 1), (205, 1), (206, 1), (206, 15)]
    assert [off for _, _, off, _ in items] == [0, 28, 56, 88, 116, 132, 144]
    assert sum(ln for *_, ln in items) == len(data)


# ----------------------------------------------------------------- structure


@pytest.mark.parametrize("data, message", [
    (b"", "RTCP packet shorter than its 4-byte header"),
    (b"\x80\xc8\x00", "RTCP packet shorter than its 4-byte header"),
    (packet(202) + b"\x81", "RTCP packet shorter than its 4-byte header"),
    (packet(202) + b"\x81\xca\x00", "RTCP packet shorter than its 4-byte header"),
    (packet(202, version=1), "RTCP version is not 2"),
    (packet(202, version=3), "RTCP version is not 2"),
    (packet(202) + packet(202, version=0), "RTCP version is not 2"),
    (packet(191), "RTCP packet type is outside 192..223"),
    (packet(224), "RTCP packet type is outside 192..223"),
    (packet(96), "RTCP packet type is outside 192..223"),
    (b"\x80\xca\x00\x01" + bytes(3), "RTCP length runs past the end of the datagram"),
    (b"\x80\xca\xff\xff" + bytes(100), "RTCP length runs past the end of the datagram"),
])
def test_structural_errors(impl, data, message):
    with pytest.raises(ValueError) as info:
        impl.parse_rtcp(data)
    assert str(info.value) == message


def test_packet_types_192_to_223_are_accepted(impl):
    unchecked = [pt for pt in range(192, 224) if pt not in (200, 201, 203, 204, 205, 206)]
    for pt in unchecked:  # SDES, XR and the unassigned types only need a header
        assert impl.parse_rtcp(packet(pt, count=31)) == [(pt, 31, 0, 4)]


def test_reduced_size_rtcp_may_start_with_any_type(impl):
    # RFC 5506: a lone feedback message is a valid datagram.
    assert impl.parse_rtcp(fixture("rtcp_pli") + fixture("rtcp_nack")) == [(206, 1, 0, 12), (205, 1, 12, 16)]


# ----------------------------------------------------------------- report counts

# (packet type, count, minimum words after the header)
MINIMUMS = [
    (200, 0, 6), (200, 1, 12), (200, 31, 6 + 6 * 31),  # SR
    (201, 0, 1), (201, 1, 7), (201, 2, 13),  # RR
    (203, 0, 0), (203, 1, 1), (203, 3, 3),  # BYE
    (204, 0, 2), (204, 5, 2),  # APP: SSRC + name, subtype in count
    (205, 1, 2), (205, 15, 2),  # RTPFB
    (206, 1, 2), (206, 15, 2),  # PSFB
]


@pytest.mark.parametrize("pt, count, n", MINIMUMS)
def test_minimum_length_for_count(impl, pt, count, n):
    assert impl.parse_rtcp(packet(pt, count, words(n))) == [(pt, count, 0, 4 + 4 * n)]
    assert impl.parse_rtcp(packet(pt, count, words(n + 1))) == [(pt, count, 0, 8 + 4 * n)]
    if n:
        with pytest.raises(ValueError, match="^RTCP packet too short for its report count$"):
            impl.parse_rtcp(packet(pt, count, words(n - 1)))


def test_count_check_applies_to_every_packet_of_the_compound(impl):
    with pytest.raises(ValueError, match="^RTCP packet too short for its report count$"):
        impl.parse_rtcp(packet(202) + packet(201, 1, words(1)))


def test_padding_does_not_count_as_report_content(impl):
    # RR with RC=1 needs 7 words after its header; 1 word + 24 bytes of padding is not a report block.
    data = packet(201, 1, words(1), padding=24)
    with pytest.raises(ValueError, match="^RTCP packet too short for its report count$"):
        impl.parse_rtcp(data)
    assert impl.parse_rtcp(packet(201, 1, words(7), padding=4)) == [(201, 1, 0, 36)]
    with pytest.raises(ValueError, match="^RTCP packet too short for its report count$"):
        impl.parse_rtcp(packet(205, 1, words(1), padding=4))


# ----------------------------------------------------------------- padding


def test_padding_on_the_last_packet(impl):
    data = fixture("rtcp_rr_sdes") + packet(202, 1, words(2), padding=8)
    assert impl.parse_rtcp(data) == [(201, 1, 0, 32), (202, 1, 32, 28), (202, 1, 60, 20)]
    # The padding count may cover everything after the header.
    assert impl.parse_rtcp(packet(207, 0, b"", padding=4)) == [(207, 0, 0, 8)]
    assert impl.parse_rtcp(packet(202, 0, b"", padding=252)) == [(202, 0, 0, 256)]


@pytest.mark.parametrize("data", [
    packet(202, 1, words(1), padding=4) + packet(202),  # padded, not last
    b"\xa0\xca\x00\x01\x00\x00\x00\x00",  # padding count 0
    b"\xa0\xca\x00\x01\x00\x00\x00\x05",  # 5 > 4 bytes after the header
    b"\xa0\xca\x00\x00",  # nothing after the header
])
def test_invalid_padding(impl, data):
    with pytest.raises(ValueError, match="^RTCP padding is invalid or not on the last packet$"):
        impl.parse_rtcp(data)


# ----------------------------------------------------------------- compound size


def test_at_most_64_packets(impl):
    assert len(impl.parse_rtcp(packet(202) * 64)) == 64
    with pytest.raises(ValueError, match="^too many RTCP packets in one compound$"):
        impl.parse_rtcp(packet(202) * 65)


def test_the_65th_packet_is_checked_before_it_is_counted(impl):
    # version, type and length of the extra packet are reported first
    with pytest.raises(ValueError, match="^RTCP version is not 2$"):
        impl.parse_rtcp(packet(202) * 64 + packet(202, version=1))
    with pytest.raises(ValueError, match="^RTCP length runs past the end of the datagram$"):
        impl.parse_rtcp(packet(202) * 64 + b"\x80\xca\x00\x05")
    with pytest.raises(ValueError, match="^too many RTCP packets in one compound$"):
        impl.parse_rtcp(packet(202) * 64 + packet(201, 1, words(1)))  # count not checked yet
