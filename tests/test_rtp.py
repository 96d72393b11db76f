"""RTP parsing, header extensions and demultiplexing of the compiled core
(src/rtp.c through sfu._fastpath._testhooks), run against the pure-Python
reference (_reference.py) as well: both must give exactly these results."""

from __future__ import annotations

import importlib.util
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


def test_fixture_files_match_their_generator():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    on_disk = {p.stem for p in FIXTURES.glob("*.bin")}
    assert on_disk == set(gen.FIXTURES)
    for name, data in gen.FIXTURES.items():
        assert fixture(name) == data, name


# ----------------------------------------------------------------- fixtures, field by field

VP8_PAYLOAD = bytes.fromhex("908080 5e 504200 9d012a 8002 e001 396b00270985858899848802020616 04".replace(" ", ""))
OPUS_PAYLOAD = bytes.fromhex("780be4c136ecc58d8b8c22316f7a1e40")

PARSED = {
    "rtp_vp8_chrome": {
        "version": 2, "padding": False, "extension": True, "marker": False, "payload_type": 96,
        "sequence_number": 0x5B8E, "timestamp": 0x9C4D7A20, "ssrc": 0x3C1B7F9E, "csrcs": [],
        "extension_profile": 0xBEDE, "extension_data": bytes.fromhex("22a35c91 4102b7 9031 000000".replace(" ", "")),
        "header_length": 28, "payload": VP8_PAYLOAD, "padding_length": 0,
    },
    "rtp_opus_audio_level": {
        "version": 2, "padding": False, "extension": True, "marker": True, "payload_type": 111,
        "sequence_number": 0x1A2B, "timestamp": 0x6D0E2F40, "ssrc": 0x9A4C1E3B, "csrcs": [],
        "extension_profile": 0xBEDE, "extension_data": bytes.fromhex("10aa 22a35c95 3102b8 4030 00".replace(" ", "")),
        "header_length": 28, "payload": OPUS_PAYLOAD, "padding_length": 0,
    },
    "rtp_csrc": {
        "version": 2, "padding": False, "extension": False, "marker": False, "payload_type": 8,
        "sequence_number": 257, "timestamp": 0x000A5B40, "ssrc": 0x11223344, "csrcs": [0xAABBCCDD, 0x01020304],
        "extension_profile": None, "extension_data": b"",
        "header_length": 20, "payload": b"\xd5" * 20, "padding_length": 0,
    },
    "rtp_padding": {
        "version": 2, "padding": True, "extension": False, "marker": False, "payload_type": 96,
        "sequence_number": 7, "timestamp": 12345, "ssrc": 0xDEADBEEF, "csrcs": [],
        "extension_profile": None, "extension_data": b"",
        "header_length": 12, "payload": bytes.fromhex("1020304050607080"), "padding_length": 4,
    },
    "rtp_padding_only": {
        "version": 2, "padding": True, "extension": True, "marker": False, "payload_type": 97,
        "sequence_number": 666, "timestamp": 0x9C4D8010, "ssrc": 0x5E9A1107, "csrcs": [],
        "extension_profile": 0xBEDE, "extension_data": bytes.fromhex("22a35d024102c100"),
        "header_length": 24, "payload": b"", "padding_length": 224,
    },
    "rtp_two_byte_ext": {
        "version": 2, "padding": False, "extension": True, "marker": False, "payload_type": 100,
        "sequence_number": 65535, "timestamp": 0xFFFFFFFF, "ssrc": 0x01020304, "csrcs": [],
        "extension_profile": 0x1000,
        "extension_data": bytes.fromhex("0100 10026869 00 c811") + bytes(range(1, 18)) + b"\0\0",
        "header_length": 44, "payload": b"two-byte payload", "padding_length": 0,
    },
}

EXTENSIONS = {
    "rtp_vp8_chrome": [(2, bytes.fromhex("a35c91")), (4, bytes.fromhex("02b7")), (9, b"1")],
    "rtp_opus_audio_level": [(1, b"\xaa"), (2, bytes.fromhex("a35c95")), (3, bytes.fromhex("02b8")), (4, b"0")],
    "rtp_csrc": [],
    "rtp_padding": [],
    "rtp_padding_only": [(2, bytes.fromhex("a35d02")), (4, bytes.fromhex("02c1"))],
    "rtp_two_byte_ext": [(1, b""), (16, b"hi"), (200, bytes(range(1, 18)))],
}


@pytest.mark.parametrize("name", sorted(PARSED))
def test_parse_fixture(impl, name):
    data = fixture(name)
    parsed = impl.parse_rtp(data)
    assert parsed == PARSED[name]
    # The pieces cover the whole packet.
    assert parsed["header_length"] + len(parsed["payload"]) + parsed["padding_length"] == len(data)


@pytest.mark.parametrize("name", sorted(EXTENSIONS))
def test_extension_elements_of_fixture(impl, name):
    assert impl.rtp_extensions(fixture(name)) == EXTENSIONS[name]


def test_opus_audio_level_value(impl):
    ((ext_id, value),) = [e for e in impl.rtp_extensions(fixture("rtp_opus_audio_level")) if e[0] == 1]
    assert value[0] >> 7 == 1  # voice activity
    assert value[0] & 0x7F == 42  # -42 dBov


ERRORS = {
    "rtp_vp8_chrome_truncated": "header extension length runs past the end of the packet",
    "rtp_vp8_chrome_invalid": "RTP version is not 2",
    "rtp_opus_audio_level_truncated": "header extension header runs past the end of the packet",
    "rtp_csrc_truncated": "CSRC list runs past the end of the packet",
    "rtp_csrc_invalid": "CSRC list runs past the end of the packet",
    "rtp_padding_truncated": "invalid padding length",
    "rtp_padding_invalid": "invalid padding length",
    "rtp_padding_only_truncated": "invalid padding length",
    "rtp_padding_only_invalid": "invalid padding length",
    "rtp_two_byte_ext_truncated": "packet shorter than the 12-byte RTP header",
}

ELEMENT_ERRORS = ["rtp_opus_audio_level_invalid", "rtp_two_byte_ext_invalid"]


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_truncated_and_invalid_fixtures_raise(impl, name):
    data = fixture(name)
    for fn in (impl.parse_rtp, impl.rtp_extensions, lambda d: impl.map_extensions(d, {1: 1})):
        with pytest.raises(ValueError) as info:
            fn(data)
        assert str(info.value) == ERRORS[name]


@pytest.mark.parametrize("name", ELEMENT_ERRORS)
def test_malformed_element_fixtures(impl, name):
    data = fixture(name)
    impl.parse_rtp(data)  # the header itself is fine
    for fn in (impl.rtp_extensions, lambda d: impl.map_extensions(d, {1: 1})):
        with pytest.raises(ValueError, match="^malformed header extension element$"):
            fn(data)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "packet shorter than the 12-byte RTP header"),
        (b"\x80\x60" + bytes(9), "packet shorter than the 12-byte RTP header"),
        (b"\x00\x60" + bytes(10), "RTP version is not 2"),
        (b"\xc0\x60" + bytes(10), "RTP version is not 2"),
        (b"\x81\x60" + bytes(10), "CSRC list runs past the end of the packet"),
        (b"\x8f\x60" + bytes(10 + 56), "CSRC list runs past the end of the packet"),
        (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00", "header extension header runs past the end of the packet"),
        (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x01\x10\x00\x00", "header extension length runs past the end of the packet"),
        (b"\xa0\x60" + bytes(10), "invalid padding length"),  # P=1, nothing after the header
        (b"\xa0\x60" + bytes(10) + b"\x00", "invalid padding length"),  # padding count 0
        (b"\xa0\x60" + bytes(10) + b"\x02", "invalid padding length"),  # 2 > 1 byte available
    ],
)
def test_parse_errors(impl, data, message):
    with pytest.raises(ValueError) as info:
        impl.parse_rtp(data)
    assert str(info.value) == message


def test_minimal_packets(impl):
    assert impl.parse_rtp(b"\x80\x00" + bytes(10))["payload"] == b""
    # The whole payload may be padding.
    p = impl.parse_rtp(b"\xa0\x60" + bytes(10) + b"\x00\x00\x03")
    assert (p["payload"], p["padding_length"]) == (b"", 3)
    # An empty extension block.
    p = impl.parse_rtp(b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x00" + b"pay")
    assert (p["extension_data"], p["header_length"], p["payload"]) == (b"", 16, b"pay")
    assert impl.rtp_extensions(b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x00") == []
    # Fifteen CSRCs exactly fill the packet.
    p = impl.parse_rtp(b"\x8f\x60" + bytes(10) + b"".join(struct.pack("!I", i) for i in range(15)))
    assert p["csrcs"] == list(range(15)) and p["header_length"] == 72


def test_marker_and_payload_type_bits(impl):
    p = impl.parse_rtp(b"\x80\xff" + bytes(10))
    assert (p["marker"], p["payload_type"]) == (True, 127)
    p = impl.parse_rtp(b"\x80\x00" + bytes(10))
    assert (p["marker"], p["payload_type"]) == (False, 0)


def test_build_rtp_round_trip(impl):
    data = _reference.build_rtp(
        payload_type=100, sequence_number=65535, timestamp=2**32 - 1, ssrc=0xCAFEBABE, marker=True,
        csrcs=[1, 2, 3], extensions=[(3, b"\x01\x02"), (14, b"x" * 16)], payload=b"media", padding=5,
    )
    p = impl.parse_rtp(data)
    assert p["csrcs"] == [1, 2, 3]
    assert (p["payload_type"], p["sequence_number"], p["timestamp"], p["ssrc"], p["marker"]) == (
        100, 65535, 2**32 - 1, 0xCAFEBABE, True)
    assert (p["payload"], p["padding_length"], p["extension_profile"]) == (b"media", 5, 0xBEDE)
    assert impl.rtp_extensions(data) == [(3, b"\x01\x02"), (14, b"x" * 16)]


# ----------------------------------------------------------------- header extension elements


def with_block(profile: int, block: bytes, payload: bytes = b"payload", first: int = 0x90) -> bytes:
    assert len(block) % 4 == 0
    return bytes((first, 0x60)) + struct.pack("!HII", 1, 2, 3) + struct.pack("!HH", profile, len(block) // 4) + block + payload


def test_one_byte_padding_bytes_between_elements(impl):
    block = bytes.fromhex("00 10 aa 00 00 22 01 02 03 00 00 00".replace(" ", ""))
    assert impl.rtp_extensions(with_block(0xBEDE, block)) == [(1, b"\xaa"), (2, b"\x01\x02\x03")]


def test_one_byte_zero_id_byte_is_padding_whatever_its_length_nibble(impl):
    block = bytes.fromhex("0f 10 aa 00")
    assert impl.rtp_extensions(with_block(0xBEDE, block)) == [(1, b"\xaa")]


def test_one_byte_id_15_stops_processing(impl):
    # RFC 8285 4.2: elements after id 15 are ignored (even a malformed tail).
    block = bytes.fromhex("10 aa f0 20 ff ff ff ff".replace(" ", ""))
    data = with_block(0xBEDE, block)
    assert impl.rtp_extensions(data) == [(1, b"\xaa")]
    out = impl.map_extensions(data, {1: 1})
    assert out == with_block(0xBEDE, bytes.fromhex("10aa0000"))


def test_one_byte_element_sizes_1_to_16(impl):
    elements = [(i, bytes([i]) * i) for i in range(1, 15)] + [(14, b"z" * 16)]
    data = _reference.build_rtp(extensions=elements, payload=b"p")
    assert impl.rtp_extensions(data) == elements


def test_two_byte_profile_appbits_and_zero_length(impl):
    block = bytes.fromhex("0500 00 ff01aa 00 00".replace(" ", ""))
    for profile in (0x1000, 0x1001, 0x100F):
        assert impl.rtp_extensions(with_block(profile, block)) == [(5, b""), (255, b"\xaa")]


def test_two_byte_element_header_cut_by_block_end(impl):
    # An id byte as the last byte of the block (no length byte).
    with pytest.raises(ValueError, match="^malformed header extension element$"):
        impl.rtp_extensions(with_block(0x1000, bytes.fromhex("000000 07")))


def test_unknown_profile_is_opaque(impl):
    data = with_block(0xABAC, bytes.fromhex("10aa20bb"))
    assert impl.rtp_extensions(data) == []
    assert impl.map_extensions(data, {}) == data  # left untouched, X bit kept
    assert impl.parse_rtp(data)["extension_profile"] == 0xABAC


def test_at_most_32_elements(impl):
    ok = _reference.build_rtp(extensions=[(1 + i % 14, b"v") for i in range(32)])
    assert len(impl.rtp_extensions(ok)) == 32
    too_many = _reference.build_rtp(extensions=[(1 + i % 14, b"v") for i in range(33)])
    with pytest.raises(ValueError, match="^malformed header extension element$"):
        impl.rtp_extensions(too_many)
    with pytest.raises(ValueError, match="^malformed header extension element$"):
        impl.map_extensions(too_many, {1: 1})


def test_element_data_beyond_offset_65535_is_malformed(impl):
    # elems[].offset is 16-bit in C: a (non-UDP-sized) packet whose element
    # data starts past 65535 is rejected instead of read at a wrapped offset.
    block = bytes(70000) + bytes.fromhex("11aabb00")
    data = with_block(0xBEDE, block)
    with pytest.raises(ValueError, match="^malformed header extension element$"):
        impl.rtp_extensions(data)
    # Padding alone that far is fine, and an element just below the limit too.
    assert impl.rtp_extensions(with_block(0xBEDE, bytes(70000))) == []
    near = with_block(0xBEDE, bytes(65516) + bytes.fromhex("11aabb00"))
    assert impl.rtp_extensions(near) == [(1, b"\xaa\xbb")]


# ----------------------------------------------------------------- map_extensions

VP8 = "rtp_vp8_chrome"


def test_map_keeps_and_renumbers_one_byte(impl):
    data = fixture(VP8)
    out = impl.map_extensions(data, {2: 2, 4: 3})  # mid (9) removed, twcc 4 -> 3
    expected = data[:12] + bytes.fromhex("bede0002 22a35c91 3102b700".replace(" ", "")) + VP8_PAYLOAD
    assert out == expected
    assert impl.rtp_extensions(out) == [(2, bytes.fromhex("a35c91")), (3, bytes.fromhex("02b7"))]


def test_map_id_above_14_forces_two_byte(impl):
    data = fixture(VP8)
    out = impl.map_extensions(data, {2: 15, 4: 4, 9: 9})
    block = bytes.fromhex("0f03a35c91 040202b7 090131".replace(" ", ""))
    assert out == data[:12] + b"\x10\x00\x00\x03" + block + VP8_PAYLOAD
    assert impl.rtp_extensions(out) == [(15, bytes.fromhex("a35c91")), (4, bytes.fromhex("02b7")), (9, b"1")]


def test_map_two_byte_back_to_one_byte_when_everything_fits(impl):
    data = fixture("rtp_two_byte_ext")
    out = impl.map_extensions(data, {16: 5})
    assert out == data[:12] + bytes.fromhex("bede0001 51686900".replace(" ", "")) + b"two-byte payload"


def test_map_keeps_two_byte_for_long_or_empty_elements(impl):
    data = fixture("rtp_two_byte_ext")
    out = impl.map_extensions(data, {200: 200})
    assert out == data[:12] + b"\x10\x00\x00\x05" + b"\xc8\x11" + bytes(range(1, 18)) + b"\0" + b"two-byte payload"
    out = impl.map_extensions(data, {1: 2})  # a kept empty element needs two-byte
    assert out == data[:12] + b"\x10\x00\x00\x01" + b"\x02\x00\x00\x00" + b"two-byte payload"


def test_map_drops_two_byte_appbits(impl):
    data = with_block(0x1007, bytes.fromhex("0501aa00"))
    assert impl.map_extensions(data, {5: 20}) == with_block(0x1000, bytes.fromhex("1401aa00"))


def test_removing_every_element_clears_the_x_bit(impl):
    data = fixture(VP8)
    out = impl.map_extensions(data, {})
    assert out == bytes((data[0] & ~0x10,)) + data[1:12] + VP8_PAYLOAD
    p = impl.parse_rtp(out)
    assert (p["extension"], p["extension_profile"], p["header_length"]) == (False, None, 12)
    assert impl.map_extensions(data, {2: 0, 4: 0, 9: 0}) == out  # 0 removes too
    assert impl.map_extensions(data, None) == out  # no mapping at all


def test_map_preserves_csrcs_payload_and_padding_byte_for_byte(impl):
    payload = bytes(range(256)) * 2
    data = _reference.build_rtp(payload_type=111, sequence_number=9, timestamp=77, ssrc=5, marker=True,
                                csrcs=[0x01020304, 0xA0B0C0D0], extensions=[(1, b"\x81"), (3, b"\x00\x01")],
                                payload=payload, padding=7)
    before = impl.parse_rtp(data)
    for mapping, elems in [({1: 1, 3: 3}, [(1, b"\x81"), (3, b"\x00\x01")]),
                           ({3: 200}, [(200, b"\x00\x01")]),
                           ({}, [])]:
        out = impl.map_extensions(data, mapping)
        after = impl.parse_rtp(out)
        assert out[1:12] == data[1:12]
        assert out[:1] == bytes(((data[0] & ~0x10) | (0x10 if elems else 0),))
        assert after["csrcs"] == before["csrcs"]
        assert out.endswith(payload + bytes(6) + b"\x07")
        assert (after["payload"], after["padding_length"]) == (payload, 7)
        assert impl.rtp_extensions(out) == elems


def test_map_compacts_padding_bytes_even_with_an_identity_mapping(impl):
    data = with_block(0xBEDE, bytes.fromhex("00 10 aa 00 00 00 00 00 22 01 02 03".replace(" ", "")))
    out = impl.map_extensions(data, {1: 1, 2: 2})
    assert out == with_block(0xBEDE, bytes.fromhex("10aa2201 02030000".replace(" ", "")))


def test_map_duplicate_target_ids_are_kept_in_order(impl):
    data = fixture(VP8)
    out = impl.map_extensions(data, {2: 7, 4: 7})
    assert impl.rtp_extensions(out) == [(7, bytes.fromhex("a35c91")), (7, bytes.fromhex("02b7"))]


def test_map_of_packets_without_elements_is_a_no_op(impl):
    for name in ("rtp_csrc", "rtp_padding"):
        assert impl.map_extensions(fixture(name), {1: 2}) == fixture(name)
    only_padding = with_block(0xBEDE, bytes(4))
    assert impl.map_extensions(only_padding, {}) == only_padding


@pytest.mark.parametrize("mapping, message", [
    ({256: 1}, "map entry 256->1 out of range"),
    ({-1: 1}, "map entry -1->1 out of range"),
    ({1: 256}, "map entry 1->256 out of range"),
    ({1: 2, 3: -5}, "map entry 3->-5 out of range"),
])
def test_map_entry_out_of_range(impl, mapping, message):
    with pytest.raises(ValueError) as info:
        impl.map_extensions(fixture(VP8), mapping)
    assert str(info.value) == message


def test_map_entry_checked_before_parsing(impl):
    with pytest.raises(ValueError, match="^map entry 300->1 out of range$"):
        impl.map_extensions(b"", {300: 1})


def test_map_to_id_255(impl):
    # 255 is a valid two-byte id, not an "unmapped" sentinel.
    out = impl.map_extensions(fixture(VP8), {9: 255, 2: 2})
    assert impl.rtp_extensions(out) == [(2, bytes.fromhex("a35c91")), (255, b"1")]
    assert impl.parse_rtp(out)["extension_profile"] == 0x1000


# ----------------------------------------------------------------- classify (RFC 7983)


def expected_kind(first: int, second: int | None) -> str:
    if first <= 3:
        return "stun"
    if 20 <= first <= 63:
        return "dtls"
    if 128 <= first <= 191:
        if second is None:
            return "unknown"
        return "rtcp" if 192 <= second <= 223 else "rtp"
    return "unknown"  # 4..19 (incl. ZRTP 16..19), 64..79 (TURN channels), 80..127, 192..255


@pytest.mark.parametrize("first", range(256))
def test_classify_first_byte(impl, first):
    assert impl.classify(bytes((first,))) == expected_kind(first, None)
    for second in (0, 96, 127, 128, 191, 192, 200, 223, 224, 255):
        assert impl.classify(bytes((first, second)) + bytes(10)) == expected_kind(first, second)


def test_classify_boundaries(impl):
    assert impl.classify(b"") == "unknown"
    assert [impl.classify(bytes((b, 0))) for b in (3, 4, 19, 20, 63, 64, 127, 128, 191, 192)] == [
        "stun", "unknown", "unknown", "dtls", "dtls", "unknown", "unknown", "rtp", "rtp", "unknown"]
    # RFC 5761: second byte 192..223 (RTCP types, or RTP PT 64..95 with the marker) is RTCP.
    assert [impl.classify(bytes((0x80, b))) for b in (191, 192, 223, 224)] == ["rtp", "rtcp", "rtcp", "rtp"]
    assert impl.classify(fixture("rtcp_rr_sdes")) == "rtcp"
    assert impl.classify(fixture(VP8)) == "rtp"
