"""Plain-RTP endpoints with their own loss recovery, for the lossy-link tests.

Written from the RFCs, independently of the engine: RTCP generic NACK
(RFC 4585 6.2.1) encoding/decoding and RTX (RFC 4588) in pure Python.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Optional


def nack_packet(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """RTPFB fmt 1 with PID/BLP pairs."""
    fci = b""
    seqs = sorted(set(seqs), key=lambda s: (s - seqs[0]) & 0xFFFF)
    i = 0
    while i < len(seqs):
        pid, blp = seqs[i], 0
        j = i + 1
        while j < len(seqs) and 0 < ((seqs[j] - pid) & 0xFFFF) <= 16:
            blp |= 1 << (((seqs[j] - pid) & 0xFFFF) - 1)
            j += 1
        fci += struct.pack("!HH", pid, blp)
        i = j
    return struct.pack("!BBHII", 0x81, 205, 2 + len(fci) // 4, sender_ssrc, media_ssrc) + fci


def parse_nacks(data: bytes) -> list[tuple[int, list[int]]]:
    """[(media ssrc, seqs)] of the generic NACKs in a compound RTCP packet."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        first, pt, length = struct.unpack_from("!BBH", data, pos)
        size = 4 * (length + 1)
        if pt == 205 and first & 0x1F == 1 and size >= 16:
            media = struct.unpack_from("!I", data, pos + 8)[0]
            seqs = []
            for off in range(pos + 12, pos + size, 4):
                pid, blp = struct.unpack_from("!HH", data, off)
                seqs.append(pid)
                seqs += [(pid + k + 1) & 0xFFFF for k in range(16) if blp >> k & 1]
            out.append((media, seqs))
        pos += size
    return out


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


@dataclass
class Publisher:
    """Sends a VP8-like stream and answers NACKs from its history with RTX."""

    sock: socket.socket
    dest: tuple[str, int]
    ssrc: int
    rtx_ssrc: int
    pt: int = 96
    rtx_pt: int = 97
    history: dict[int, bytes] = field(default_factory=dict)
    rtx_seq: int = 0
    nacks_received: int = 0
    retransmitted: int = 0

    def send(self, seq: int, ts: int, payload: bytes, marker: bool) -> None:
        pkt = rtp(self.pt, seq, ts, self.ssrc, payload, marker)
        self.history[seq & 0xFFFF] = pkt
        self.sock.sendto(pkt, self.dest)

    def on_datagram(self, data: bytes) -> None:
        if len(data) < 8 or not 192 <= data[1] <= 223:
            return
        for media, seqs in parse_nacks(data):
            if media != self.ssrc:
                continue
            self.nacks_received += 1
            for s in seqs:
                orig = self.history.get(s)
                if orig is None:
                    continue
                self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
                osn = struct.pack("!H", s)
                hdr = struct.pack("!BBHII", 0x80, (orig[1] & 0x80) | self.rtx_pt, self.rtx_seq,
                                  struct.unpack_from("!I", orig, 4)[0], self.rtx_ssrc)
                self.sock.sendto(hdr + osn + orig[12:], self.dest)
                self.retransmitted += 1


def rtp_header_length(data: bytes) -> int:
    """Fixed header + CSRCs + header extension block (RFC 3550 5.3.1)."""
    n = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= n + 4:
        n += 4 + 4 * struct.unpack_from("!H", data, n + 2)[0]
    return n


@dataclass
class Viewer:
    """Receives one stream, NACKs what is missing, recovers RTX, records times."""

    sock: socket.socket
    dest: tuple[str, int]
    ssrc: int
    rtx_ssrc: Optional[int]
    rtx_pt: Optional[int]
    arrivals: dict[int, float] = field(default_factory=dict)  # payload id -> arrival time
    missing: dict[int, list[float]] = field(default_factory=dict)  # seq -> [first seen missing, last nack]
    highest: Optional[int] = None
    nacks_sent: int = 0
    recovered: int = 0
    retry_ms: float = 30
    pid_offset: int = 0  # where the sender's packet id sits in the payload

    def on_datagram(self, data: bytes, now: float) -> None:
        if len(data) < 12 or 192 <= data[1] <= 223:
            return
        pt = data[1] & 0x7F
        seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
        payload = data[rtp_header_length(data):]
        if self.rtx_ssrc is not None and ssrc == self.rtx_ssrc and pt == self.rtx_pt:
            seq = struct.unpack_from("!H", payload)[0]
            payload = payload[2:]
            self.recovered += 1
        elif ssrc != self.ssrc:
            return
        if len(payload) < self.pid_offset + 4:
            return
        pid = struct.unpack_from("!I", payload, self.pid_offset)[0]
        self.arrivals.setdefault(pid, now)
        self.missing.pop(seq, None)
        if self.highest is None:
            self.highest = seq
        elif 0 < ((seq - self.highest) & 0xFFFF) < 0x8000:
            gap = (seq - self.highest) & 0xFFFF
            for k in range(1, gap):
                self.missing[(self.highest + k) & 0xFFFF] = [now, 0.0]
            self.highest = seq
        self.maybe_nack(now)

    def maybe_nack(self, now: float) -> None:
        due = [s for s, (first, last) in self.missing.items()
               if now - first < 1.0 and now - last >= self.retry_ms / 1000]
        if not due:
            return
        for s in due:
            self.missing[s][1] = now
        self.sock.sendto(nack_packet(0x1234, self.ssrc, due), self.dest)
        self.nacks_sent += 1


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * 1024 * 1024)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def drain(sock: socket.socket, handler) -> None:
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        handler(data, time.monotonic())
