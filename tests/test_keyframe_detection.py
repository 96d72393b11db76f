"""Keyframe detection from RTP payloads (no decoding), per codec."""

from __future__ import annotations

import struct

import pytest

from sfu._fastpath import _testhooks

# VP8 (RFC 7741): descriptor then the VP8 payload header, whose bit 0 (P) is
# 0 on key frames. A key frame's header is followed by the start code 9d 01 2a.
VP8_KEY_MIN = bytes([0x10, 0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A])            # S=1 PID=0, P=0
VP8_KEY_PICID = bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9D])   # X, I with 15-bit picture id
VP8_KEY_ALL = bytes([0x90, 0xF0, 0x12, 0x05, 0x40, 0x50, 0x42, 0x00])     # X: I (7-bit), L, T/K
VP8_DELTA = bytes([0x10, 0x51, 0x42, 0x00])                                 # P=1
VP8_CONTINUATION = bytes([0x00, 0x50, 0x42, 0x00])                          # S=0
VP8_OTHER_PARTITION = bytes([0x11, 0x50])                                   # PID=1

# VP9 (RFC 9628): I|P|L|F|B|E|V|Z
VP9_KEY = bytes([0x8A, 0x80, 0x01])   # I, B, V: start of a non-inter-predicted frame
VP9_DELTA = bytes([0xC8, 0x80, 0x02])  # P=1
VP9_MIDDLE = bytes([0x80, 0x80])       # B=0
# with layer indices (L): TID|U|SID|D after the picture id
VP9_KEY_SID0 = bytes([0xAA, 0x80, 0x01, 0x00, 0x00])          # 15-bit id, SID 0: a decoder can start here
VP9_KEY_SID1 = bytes([0xA8, 0x80, 0x01, 0x03, 0x00])          # SID 1 of the key picture (D=1): it cannot
VP9_KEY_SID2_SHORT_ID = bytes([0xA8, 0x01, 0x05, 0x00])       # 7-bit id, SID 2
VP9_KEY_SID0_SHORT_ID = bytes([0xA8, 0x01, 0x00, 0x00])       # 7-bit id, SID 0

# H264 (RFC 6184)
IDR = bytes([0x65, 0x88, 0x84])
SPS = bytes([0x67, 0x42, 0xC0, 0x1F])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
NON_IDR = bytes([0x41, 0x9A, 0x02])


def stap_a(*nals: bytes) -> bytes:
    return bytes([0x78]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal: bytes, start: bool) -> bytes:
    return bytes([(nal[0] & 0xE0) | 28, (0x80 if start else 0x00) | (nal[0] & 0x1F)]) + nal[1:]


@pytest.mark.parametrize("codec, payload, key", [
    ("vp8", VP8_KEY_MIN, True),
    ("vp8", VP8_KEY_PICID, True),
    ("vp8", VP8_KEY_ALL, True),
    ("vp8", VP8_DELTA, False),
    ("vp8", VP8_CONTINUATION, False),
    ("vp8", VP8_OTHER_PARTITION, False),
    ("vp8", b"", False),
    ("vp8", bytes([0x90]), False),                 # X bit but truncated
    ("vp8", bytes([0x90, 0x80, 0x81]), False),     # 15-bit picture id truncated
    ("vp9", VP9_KEY, True),
    ("vp9", VP9_DELTA, False),
    ("vp9", VP9_MIDDLE, False),
    ("vp9", b"", False),
    ("vp9", VP9_KEY_SID0, True),
    ("vp9", VP9_KEY_SID1, False),
    ("vp9", VP9_KEY_SID2_SHORT_ID, False),
    ("vp9", VP9_KEY_SID0_SHORT_ID, True),
    ("vp9", VP9_KEY_SID0[:3], False),                # layer indices truncated
    ("vp9", bytes([0xA8]), False),                   # picture id truncated
    ("h264", IDR, True),
    ("h264", SPS, True),
    ("h264", PPS, False),
    ("h264", NON_IDR, False),
    ("h264", stap_a(SPS, PPS, IDR), True),
    ("h264", stap_a(PPS, NON_IDR), False),
    ("h264", stap_a(SPS)[:-2], False),             # STAP-A whose NAL runs past the end
    ("h264", fu_a(IDR, start=True), True),
    ("h264", fu_a(IDR, start=False), False),
    ("h264", fu_a(NON_IDR, start=True), False),
    ("h264", bytes([0x7C]), False),                # FU-A truncated
    ("h264", b"", False),
])
def test_keyframe_detection(codec, payload, key):
    assert _testhooks.is_keyframe(codec, payload) is key


def test_unknown_codec_is_an_error():
    with pytest.raises(ValueError, match="unknown codec"):
        _testhooks.is_keyframe("av1", b"\x00")


def test_a_forwarded_keyframe_reopens_the_keyframe_request_window():
    from test_keyframe_requests import PUB, SUB, SUB2, pli, plis_to_publisher

    e = _testhooks.SansIOEngine()
    s_in, s_out, s_out2 = e.add_socket(-1), e.add_socket(-1), e.add_socket(-1)
    t_in, t_out, t_out2 = e.add_transport(s_in), e.add_transport(s_out), e.add_transport(s_out2)
    for t, a in ((t_in, PUB), (t_out, SUB), (t_out2, SUB2)):
        e.connect_transport(t, a)
    p = e.add_producer(t_in, True, [(0xAAAA, 0)], {96: 101}, {}, codecs={101: "vp8"})
    e.add_consumer(t_out, p, 0xC1, 0, 90000, {101: 101}, {})
    e.add_consumer(t_out2, p, 0xC2, 0, 90000, {101: 101}, {})
    e.receive(s_out, SUB, pli(1, 0xC1), 1000)
    assert len(plis_to_publisher(e.take_outbox(), s_in)) == 1
    key = struct.pack("!BBHII", 0x80, 96, 1, 90000, 0xAAAA) + VP8_KEY_MIN
    e.receive(s_in, PUB, key, 1050)               # the keyframe arrives
    e.take_outbox()
    e.receive(s_out2, SUB2, pli(2, 0xC2), 1100)   # a later viewer: asked at once, not deferred
    assert len(plis_to_publisher(e.take_outbox(), s_in)) == 1
    assert e.producer_stats(p)[0]["keyframes"] == 1
