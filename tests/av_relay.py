"""A UDP relay on loopback that delays a client's video and not its audio.

    clients  <->  relay (listens on `port`)  <->  SFU's WebRTC port

Each client address gets its own upstream socket (as a NAT would), so the
SFU sees one tuple per client. From clients to the SFU, a datagram is video
when it is RTP whose payload type is not one of audio's (Chromium's audio
payload types: Opus 111, RED 63, G.722 9, PCMU 0, PCMA 8, CN 13, telephone
events 110 and 126) or RTCP whose first packet's sender SSRC was seen on
such RTP (a video stream's sender reports travel with it, as on a path that
delays video): it leaves `video_delay_ms` later, in order. Everything else
(audio, STUN, DTLS, viewers' RTCP) and the whole SFU-to-client direction
pass at once. The SRTP and SRTCP headers these fields are read from are not
encrypted.
"""

from __future__ import annotations

import asyncio
import collections
import socket

AUDIO_PTS = frozenset({111, 63, 9, 0, 8, 13, 110, 126})


class VideoDelayRelay:
    def __init__(self, sfu_addr: tuple[str, int], video_delay_ms: float) -> None:
        self.sfu_addr = sfu_addr
        self.delay = video_delay_ms / 1000
        self.video_ssrcs: set[int] = set()
        self.delayed = 0
        self.passed = 0
        self.delayed_rtcp = 0
        self._up: dict[tuple[str, int], socket.socket] = {}
        self._queue: collections.deque[tuple[float, socket.socket, bytes]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> "VideoDelayRelay":
        self._loop = asyncio.get_running_loop()
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.setblocking(False)
        self.front.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.port = self.front.getsockname()[1]
        self._loop.add_reader(self.front.fileno(), self._from_clients)
        return self

    def counters(self) -> dict:
        return {"delayed": self.delayed, "delayed_rtcp": self.delayed_rtcp, "passed": self.passed,
                "video_ssrcs": len(self.video_ssrcs)}

    def _is_video(self, data: bytes) -> bool:
        if len(data) < 12 or not 128 <= data[0] <= 191:
            return False  # STUN, DTLS
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761 demultiplexing)
            video = int.from_bytes(data[4:8], "big") in self.video_ssrcs
            self.delayed_rtcp += video
            return video
        if data[1] & 0x7F in AUDIO_PTS:
            return False
        self.video_ssrcs.add(int.from_bytes(data[8:12], "big"))
        return True

    def _from_clients(self) -> None:
        while True:
            try:
                data, addr = self.front.recvfrom(65536)
            except BlockingIOError:
                return
            up = self._up.get(addr)
            if up is None:
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.bind(("127.0.0.1", 0))
                up.setblocking(False)
                self._up[addr] = up
                self._loop.add_reader(up.fileno(), self._from_sfu, up, addr)
            if self.delay > 0 and self._is_video(data):
                self.delayed += 1
                self._queue.append((self._loop.time() + self.delay, up, data))
                if self._timer is None:
                    self._timer = self._loop.call_at(self._queue[0][0], self._release)
            else:
                self.passed += 1
                self._send(up, data, self.sfu_addr)

    def _release(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now + 0.0005:
            _, up, data = self._queue.popleft()
            self._send(up, data, self.sfu_addr)
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._release)

    def _from_sfu(self, up: socket.socket, client) -> None:
        while True:
            try:
                data = up.recv(65536)
            except BlockingIOError:
                return
            self._send(self.front, data, client)

    @staticmethod
    def _send(sock: socket.socket, data: bytes, addr) -> None:
        try:
            sock.sendto(data, addr)
        except OSError:
            pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for s in [self.front, *self._up.values()]:
            try:
                self._loop.remove_reader(s.fileno())
            except Exception:
                pass
            s.close()
