"""VP8 over RTP (RFC 7741): the payload descriptor is stripped; a frame is
the packets from the one with S=1 and PID=0 to the marker."""

from __future__ import annotations


def parse_descriptor(payload: bytes) -> tuple[int, bool, int] | None:
    """(descriptor length, S bit, partition index) or ``None`` if truncated."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    offset = 1
    if b0 & 0x80:  # X: extension byte follows
        if n < 2:
            return None
        x = payload[1]
        offset = 2
        if x & 0x80:  # I: picture ID, 7 or 15 bits (M bit)
            if offset >= n:
                return None
            offset += 2 if payload[offset] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            offset += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX byte
            offset += 1
    if offset > n:
        return None
    return offset, bool(b0 & 0x10), b0 & 0x0F


def frame_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386, 9.1)."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height


class Vp8Depacketizer:
    """Strips the descriptors and checks the frame starts where it should."""

    video = True

    def __init__(self) -> None:
        self.width: int | None = None
        self.height: int | None = None

    def assemble(self, payloads: list[bytes]) -> tuple[bytes, bool] | None:
        """The VP8 frame; ``None`` if the first packet is not a frame start."""
        parts: list[bytes] = []
        for i, payload in enumerate(payloads):
            d = parse_descriptor(payload)
            if d is None:
                return None
            offset, start, pid = d
            if i == 0 and not (start and pid == 0):
                return None
            parts.append(payload[offset:])
        frame = b"".join(parts)
        if not frame:
            return None
        key = not frame[0] & 1  # P bit of the frame tag: 0 is a keyframe
        if key:
            size = frame_size(frame)
            if size is None:
                return None
            self.width, self.height = size
        return frame, key
