"""H.264 over RTP (RFC 6184): single NAL unit packets, STAP-A and FU-A
become an Annex B access unit (start codes). The latest SPS and PPS are kept
and put in front of a keyframe that does not carry them, so the file
decodes from its first frame; they are also the track's CodecPrivate."""

from __future__ import annotations

START_CODE = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8
STAP_A, FU_A = 24, 28


def nal_units(payloads: list[bytes]) -> list[bytes] | None:
    """The NAL units in these payloads; ``None`` if malformed (a truncated
    STAP-A, an FU-A without its start or end, an unsupported type)."""
    nals: list[bytes] = []
    fu: bytearray | None = None
    for payload in payloads:
        if not payload:
            return None
        kind = payload[0] & 0x1F
        if kind == FU_A:
            if len(payload) < 2:
                return None
            header = payload[1]
            if header & 0x80:  # S
                if fu is not None:
                    return None
                fu = bytearray([(payload[0] & 0xE0) | (header & 0x1F)])
            elif fu is None:
                return None
            fu += payload[2:]
            if header & 0x40:  # E
                nals.append(bytes(fu))
                fu = None
            continue
        if fu is not None:
            return None  # an FU-A ended without its E packet
        if 1 <= kind <= 23:
            nals.append(payload)
        elif kind == STAP_A:
            off = 1
            while off < len(payload):
                if off + 2 > len(payload):
                    return None
                size = int.from_bytes(payload[off : off + 2], "big")
                off += 2
                if size == 0 or off + size > len(payload):
                    return None
                nals.append(payload[off : off + size])
                off += size
        else:
            return None  # STAP-B, MTAP, FU-B: packetization-mode 2 only
    if fu is not None:
        return None
    return nals


class _Bits:
    """Exp-Golomb reader over an RBSP (emulation prevention removed)."""

    def __init__(self, nal: bytes) -> None:
        self.data = nal.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("truncated SPS")
            v = (v << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def sps_size(sps: bytes) -> tuple[int, int] | None:
    """Width and height (after cropping) from an SPS NAL unit (H.264 7.3.2.1)."""
    try:
        r = _Bits(sps[1:])
        profile = r.u(8)
        r.u(16)  # constraint flags, level_idc
        r.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma = r.ue()
            if chroma == 3:
                r.u(1)
            r.ue()
            r.ue()  # bit depths
            r.u(1)
            if r.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma != 3 else 12):
                    if r.u(1):
                        last, nxt = 8, 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + r.se() + 256) % 256
                            last = nxt or last
        r.ue()  # log2_max_frame_num_minus4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()
        elif poc_type == 1:
            r.u(1)
            r.se()
            r.se()
            for _ in range(r.ue()):
                r.se()
        r.ue()  # max_num_ref_frames
        r.u(1)
        width_mbs = r.ue() + 1
        height_units = r.ue() + 1
        frame_mbs_only = r.u(1)
        if not frame_mbs_only:
            r.u(1)
        r.u(1)  # direct_8x8_inference_flag
        crop = (0, 0, 0, 0)
        if r.u(1):
            crop = (r.ue(), r.ue(), r.ue(), r.ue())
        sub_w, sub_h = (2, 2) if chroma == 1 else (2, 1) if chroma == 2 else (1, 1)
        unit_x = sub_w if chroma else 1
        unit_y = (sub_h if chroma else 1) * (2 - frame_mbs_only)
        width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
        height = height_units * 16 * (2 - frame_mbs_only) - unit_y * (crop[2] + crop[3])
        return (width, height) if width > 0 and height > 0 else None
    except ValueError:
        return None


class H264Depacketizer:
    """NAL units to Annex B, with the parameter sets kept."""

    video = True

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.width: int | None = None
        self.height: int | None = None

    @property
    def extradata(self) -> bytes | None:
        """SPS and PPS in Annex B form (Matroska's muxer turns it into avcC)."""
        if self.sps is None or self.pps is None:
            return None
        return START_CODE + self.sps + START_CODE + self.pps

    def assemble(self, payloads: list[bytes]) -> tuple[bytes, bool] | None:
        """The access unit; ``None`` if malformed. A keyframe (IDR) counts
        as one only once an SPS and a PPS are known."""
        nals = nal_units(payloads)
        if not nals:
            return None
        kinds = [n[0] & 0x1F for n in nals]
        for nal, kind in zip(nals, kinds):
            if kind == NAL_SPS:
                self.sps = nal
                size = sps_size(nal)
                if size is not None:
                    self.width, self.height = size
            elif kind == NAL_PPS:
                self.pps = nal
        key = NAL_IDR in kinds
        if key:
            if self.sps is None or self.pps is None:
                key = False
            else:
                missing = [n for n, k in ((self.sps, NAL_SPS), (self.pps, NAL_PPS)) if k not in kinds]
                nals = missing + nals
        return b"".join(START_CODE + n for n in nals), key
