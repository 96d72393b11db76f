"""VP9 over RTP (RFC 9628): the payload descriptor is stripped; the layer
frames of one picture (one RTP timestamp, all spatial layers) become one
superframe (VP9 bitstream spec, Annex B) so a decoder sees one packet per
picture."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Descriptor:
    """The descriptor fields the recorder uses."""

    length: int
    start: bool  # B: first packet of a layer frame
    end: bool  # E: last packet of a layer frame
    inter: bool  # P: inter-picture predicted
    spatial_id: int


def parse_descriptor(payload: bytes) -> Descriptor | None:
    """Parse the descriptor; ``None`` if truncated."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    i_bit, p_bit, l_bit, f_bit = b0 & 0x80, b0 & 0x40, b0 & 0x20, b0 & 0x10
    b_bit, e_bit, v_bit = b0 & 0x08, b0 & 0x04, b0 & 0x02
    off = 1
    sid = 0
    if i_bit:  # picture ID, 7 or 15 bits (M bit)
        if off >= n:
            return None
        off += 2 if payload[off] & 0x80 else 1
    if l_bit:  # TID U SID D, then TL0PICIDX in non-flexible mode
        if off >= n:
            return None
        sid = (payload[off] >> 1) & 0x07
        off += 1 if f_bit else 2
    if f_bit and p_bit:  # up to 3 reference indices, N bit chains them
        for _ in range(3):
            if off >= n:
                return None
            more = payload[off] & 0x01
            off += 1
            if not more:
                break
    if v_bit:  # scalability structure
        if off >= n:
            return None
        ss = payload[off]
        off += 1
        layers = (ss >> 5) + 1
        if ss & 0x10:  # Y: resolutions
            off += 4 * layers
        if ss & 0x08:  # G: picture group description
            if off >= n:
                return None
            groups = payload[off]
            off += 1
            for _ in range(groups):
                if off >= n:
                    return None
                refs = (payload[off] >> 2) & 0x03
                off += 1 + refs
    if off > n:
        return None
    return Descriptor(off, bool(b_bit), bool(e_bit), bool(p_bit), sid)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("truncated")
            v = (v << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v


def frame_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a keyframe's uncompressed header, ``None`` for
    other frames or a malformed header."""
    try:
        r = _Bits(frame)
        if r.read(2) != 2:  # frame_marker
            return None
        profile = r.read(1) | (r.read(1) << 1)
        if profile == 3:
            r.read(1)
        if r.read(1):  # show_existing_frame
            return None
        if r.read(1) != 0:  # frame_type: 0 is a keyframe
            return None
        r.read(2)  # show_frame, error_resilient_mode
        if r.read(24) != 0x498342:  # frame_sync_code
            return None
        if profile >= 2:
            r.read(1)  # ten_or_twelve_bit
        color_space = r.read(3)
        if color_space != 7:  # not RGB
            r.read(1)  # color_range
            if profile in (1, 3):
                r.read(3)  # subsampling_x, subsampling_y, reserved
        elif profile in (1, 3):
            r.read(1)
        return r.read(16) + 1, r.read(16) + 1
    except ValueError:
        return None


def superframe(frames: list[bytes]) -> bytes:
    """Join layer frames with a superframe index (one frame is returned as
    is)."""
    if len(frames) == 1:
        return frames[0]
    largest = max(len(f) for f in frames)
    size_bytes = 1 if largest < 1 << 8 else 2 if largest < 1 << 16 else 3 if largest < 1 << 24 else 4
    marker = 0xC0 | ((size_bytes - 1) << 3) | (len(frames) - 1)
    index = bytes([marker]) + b"".join(len(f).to_bytes(size_bytes, "little") for f in frames)
    return b"".join(frames) + index + bytes([marker])


class Vp9Depacketizer:
    """Strips descriptors, checks every layer frame is whole (B..E)."""

    video = True

    def __init__(self) -> None:
        self.width: int | None = None
        self.height: int | None = None

    def assemble(self, payloads: list[bytes]) -> tuple[bytes, bool] | None:
        """The picture as one frame or superframe; ``None`` if a layer frame
        is incomplete."""
        layers: list[bytes] = []
        current: list[bytes] | None = None
        key = False
        for i, payload in enumerate(payloads):
            d = parse_descriptor(payload)
            if d is None:
                return None
            if d.start:
                if current is not None:
                    return None  # previous layer frame had no end
                current = []
                if i == 0:
                    key = not d.inter and d.spatial_id == 0
            elif current is None:
                return None
            current.append(payload[d.length :])
            if d.end:
                layers.append(b"".join(current))
                current = None
        if current is not None or not layers or not all(layers):
            return None
        # The P bit is not enough: some senders (FFmpeg's packetizer) never
        # set it. A keyframe is one whose header says so.
        base = frame_size(layers[0])
        key = key and base is not None
        if key:
            sizes = [s for s in (frame_size(f) for f in layers) if s is not None]
            self.width, self.height = max(sizes)
        return superframe(layers), key
