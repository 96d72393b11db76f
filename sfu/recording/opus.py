"""Opus over RTP (RFC 7587): one payload is one Opus packet, kept as is."""

from __future__ import annotations

import struct


class OpusDepacketizer:
    """Each RTP payload is a whole frame."""

    video = False

    def assemble(self, payloads: list[bytes]) -> tuple[bytes, bool] | None:
        """The payload itself; an empty payload is not a frame."""
        if len(payloads) != 1 or not payloads[0]:
            return None
        return payloads[0], True


def opus_head(channels: int, sample_rate: int = 48000, pre_skip: int = 312) -> bytes:
    """The ``OpusHead`` identification header (RFC 7845, section 5.1) that
    Matroska stores as the track's CodecPrivate (channel mapping family 0)."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, sample_rate, 0, 0)
