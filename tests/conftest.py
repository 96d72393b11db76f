"""Shared fixtures: real workers and a minimal plain-RTP peer.

The peer builds and reads RTP with `struct` only, independently of the
engine's parser, so integration tests check the engine against a second
implementation.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass, field
from typing import Optional

import pytest

import sfu

MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
    {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
     "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1}},
]


@pytest.fixture
async def worker():
    w = await sfu.create_worker()
    try:
        yield w
    finally:
        w.close()
        await asyncio.wait_for(w.wait_closed(), 5)


@pytest.fixture
async def router(worker):
    return await worker.create_router(MEDIA_CODECS)


def build_rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False,
              extensions: Optional[list[tuple[int, bytes]]] = None) -> bytes:
    """RTP with optional one-byte header extensions (RFC 8285)."""
    first = 0x80
    ext = b""
    if extensions:
        first |= 0x10
        body = b"".join(bytes([(i << 4) | (len(d) - 1)]) + d for i, d in extensions)
        body += b"\x00" * (-len(body) % 4)
        ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    return struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + ext + payload


@dataclass
class RtpRecord:
    pt: int
    seq: int
    ts: int
    ssrc: int
    marker: bool
    extensions: list[tuple[int, bytes]]
    payload: bytes


def read_rtp(data: bytes) -> RtpRecord:
    """Independent RTP reader (fixed header, CSRCs, one-byte extensions)."""
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    assert b0 >> 6 == 2
    off = 12 + 4 * (b0 & 0x0F)
    exts: list[tuple[int, bytes]] = []
    if b0 & 0x10:
        profile, words = struct.unpack_from("!HH", data, off)
        body = data[off + 4: off + 4 + 4 * words]
        off += 4 + 4 * words
        i = 0
        if profile == 0xBEDE:
            while i < len(body):
                if body[i] == 0:
                    i += 1
                    continue
                eid, ln = body[i] >> 4, (body[i] & 0x0F) + 1
                exts.append((eid, body[i + 1: i + 1 + ln]))
                i += 1 + ln
        else:
            while i < len(body):
                if body[i] == 0:
                    i += 1
                    continue
                eid, ln = body[i], body[i + 1]
                exts.append((eid, body[i + 2: i + 2 + ln]))
                i += 2 + ln
    payload = data[off:]
    if b0 & 0x20:
        payload = payload[: len(payload) - payload[-1]]
    return RtpRecord(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), exts, payload)


@dataclass
class Peer:
    """A plain-RTP endpoint on 127.0.0.1 that records what it receives."""

    sock: socket.socket
    received: list[bytes] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def open(cls) -> "Peer":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        peer = cls(s)
        asyncio.get_running_loop().add_reader(s.fileno(), peer._drain)
        return peer

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _drain(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(4096))
            except BlockingIOError:
                break
        self.event.set()

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def count(self, rtcp: bool = False) -> int:
        """Datagrams received: RTP ones, or RTCP ones with rtcp=True (the SFU
        also sends reports)."""
        return sum(1 for d in self.received if len(d) >= 2 and (192 <= d[1] <= 223) == rtcp)

    async def wait_for(self, count: int, timeout: float = 5.0, rtcp: bool = False) -> None:
        """Waits until at least `count` RTP (or RTCP) datagrams arrived (or times out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count(rtcp) < count and loop.time() < deadline:
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                break

    def rtp(self) -> list[RtpRecord]:
        return [read_rtp(d) for d in self.received if len(d) >= 12 and not 192 <= d[1] <= 223]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@pytest.fixture
async def peers():
    opened: list[Peer] = []

    def make() -> Peer:
        p = Peer.open()
        opened.append(p)
        return p

    yield make
    for p in opened:
        p.close()


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


@pytest.fixture
async def rooms():
    """The sfu-server's worker pool and rooms (one worker), closed after the test."""
    from signaling.server import start_rooms

    r = await start_rooms(workers=1)
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of the test's own on a free loopback port (the cluster tests)."""
    from cluster_nodes import start_redis

    proc, url = start_redis(tmp_path)
    yield url
    proc.terminate()
    proc.wait(10)
