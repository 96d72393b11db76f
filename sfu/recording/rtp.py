"""The parts of an RTP packet (RFC 3550, section 5.1) and of an RTCP sender
report (section 6.4.1) that the recorder reads.

Parsers return ``None`` for anything malformed: the recorder counts and skips
such input, it never raises on a packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """An RTP packet's header fields and payload (padding removed)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """Parse an RTP packet; ``None`` if it is truncated or not version 2."""
    n = len(data)
    if n < 12 or data[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if offset + 4 > n:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = n
    if b0 & 0x20:  # padding: the last byte says how many bytes to drop
        pad = data[-1]
        if pad == 0 or pad > end - offset:
            return None
        end -= pad
    if offset > end:
        return None
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), bytes(data[offset:end]))


@dataclass(frozen=True, slots=True)
class SenderReport:
    """The NTP <-> RTP mapping carried by an RTCP sender report."""

    ssrc: int
    ntp_seconds: float  # NTP time as seconds since 1900
    rtp_timestamp: int


def parse_sender_reports(data: bytes) -> list[SenderReport]:
    """Sender reports found in a (compound) RTCP packet; malformed parts end
    the walk."""
    out: list[SenderReport] = []
    offset = 0
    while offset + 4 <= len(data):
        b0, pt, length = struct.unpack_from("!BBH", data, offset)
        size = 4 * (length + 1)
        if b0 >> 6 != 2 or offset + size > len(data):
            break
        if pt == 200 and size >= 28:
            ssrc, sec, frac, rtp_ts = struct.unpack_from("!IIII", data, offset + 4)
            out.append(SenderReport(ssrc, sec + frac / 2**32, rtp_ts))
        offset += size
    return out


def ntp_to_unix(ntp_seconds: float) -> float:
    """Convert NTP seconds (epoch 1900) to Unix seconds (epoch 1970)."""
    return ntp_seconds - _NTP_UNIX_OFFSET
