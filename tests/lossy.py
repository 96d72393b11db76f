"""A lossy UDP relay on loopback for loss-recovery tests.

    client  <->  relay (listens on `port`)  <->  SFU transport

Datagrams in each direction are dropped with probability `loss`, delayed by
`delay_ms` ± `jitter_ms` (so they may reorder), all from a seeded generator,
so a failing run can be replayed. The SFU sees the relay's upstream socket as
the client's address.

A leg can also be a bottleneck link (`rate_bps` > 0): a token bucket of
`burst_bytes` filled at `rate_bps` in front of a drop-tail FIFO that holds at
most `queue_ms` of waiting. A datagram leaves when the bucket holds its size
(so back-to-back datagrams are serialized at `rate_bps` and wait in the queue:
real queuing delay, as a delay-based estimator sees it); one that would wait
longer than `queue_ms` is dropped (`queued_drops`). The rate can be changed
while the relay runs (`leg.rate_bps = 0` lifts the limit; datagrams already
queued still leave in order).
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Leg:
    """Impairment of one direction."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    sent: int = 0
    dropped: int = 0
    #: bottleneck (0: none): bits per second, bucket depth, longest wait in the queue
    rate_bps: float = 0.0
    burst_bytes: int = 1500
    queue_ms: float = 200.0
    #: datagrams dropped because the queue was full (the wait would exceed queue_ms)
    queued_drops: int = 0
    #: bytes passed on (after loss and queue drops)
    bytes_sent: int = 0
    #: longest wait in the queue so far, in ms
    max_wait_ms: float = 0.0
    #: the bucket, as a virtual clock (GCRA): the time it is empty again, and
    #: the departure of the last datagram let through (kept in order)
    _tat: float = field(default=0.0, repr=False)
    _last_departure: float = field(default=0.0, repr=False)

    def admit(self, size: int, now: float) -> float | None:
        """When a datagram of ``size`` bytes arriving at ``now`` (seconds)
        leaves the bottleneck, or None when the queue is full (counted in
        ``queued_drops``). Without a rate limit it leaves at once (after the
        ones still queued from when there was one)."""
        if self.rate_bps <= 0:
            depart = max(now, self._last_departure)
        else:
            cost = size * 8 / self.rate_bps
            tau = self.burst_bytes * 8 / self.rate_bps
            tat = max(self._tat, now)
            depart = max(now, tat + cost - tau, self._last_departure)
            if depart - now > self.queue_ms / 1000:
                self.queued_drops += 1
                return None
            self._tat = tat + cost
        self.max_wait_ms = max(self.max_wait_ms, (depart - now) * 1000)
        self._last_departure = depart
        return depart


@dataclass
class LossyRelay:
    sfu_addr: tuple[str, int]
    to_sfu: Leg = field(default_factory=Leg)
    to_client: Leg = field(default_factory=Leg)
    seed: int = 1
    port: int = 0
    _client_addr: Optional[tuple[str, int]] = None

    async def start(self) -> "LossyRelay":
        loop = asyncio.get_running_loop()
        self._rng = random.Random(self.seed)
        self._pending: set[asyncio.TimerHandle] = set()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                relay._client_addr = addr
                relay._pass(data, relay.to_sfu, relay._back, relay.sfu_addr)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                if relay._client_addr is not None:
                    relay._pass(data, relay.to_client, relay._front, relay._client_addr)

        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self._back, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        self.port = self._front.get_extra_info("sockname")[1]
        return self

    @property
    def upstream_port(self) -> int:
        """The port the SFU sees packets coming from (connect the SFU's transport to it)."""
        return self._back.get_extra_info("sockname")[1]

    def _pass(self, data: bytes, leg: Leg, transport, addr) -> None:
        if self._rng.random() < leg.loss:
            leg.dropped += 1
            return
        delay = max(0.0, leg.delay_ms + self._rng.uniform(-leg.jitter_ms, leg.jitter_ms)) / 1000
        if leg.rate_bps > 0 or leg._last_departure > 0:
            now = asyncio.get_running_loop().time()
            depart = leg.admit(len(data), now)
            if depart is None:
                return
            delay += depart - now
        leg.sent += 1
        leg.bytes_sent += len(data)
        if delay <= 0:
            transport.sendto(data, addr)
        else:
            handle = asyncio.get_running_loop().call_later(delay, self._deliver, transport, data, addr)
            self._pending.add(handle)

    def _deliver(self, transport, data: bytes, addr) -> None:
        self._pending = {h for h in self._pending if not h.cancelled() and h.when() > asyncio.get_running_loop().time()}
        if not transport.is_closing():
            transport.sendto(data, addr)

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        self._front.close()
        self._back.close()


class LossyNat:
    """Like LossyRelay but for many clients: each client address gets its own
    upstream socket (as a NAT would), so the SFU sees one tuple per client."""

    def __init__(self, sfu_addr: tuple[str, int], loss: float, delay_ms: float = 5.0, seed: int = 1) -> None:
        self.sfu_addr = sfu_addr
        self.leg = Leg(loss=loss, delay_ms=delay_ms)
        self._rng = random.Random(seed)
        self._up: dict[tuple[str, int], socket.socket] = {}
        self.dropped = 0

    def start(self) -> "LossyNat":
        self._loop = asyncio.get_running_loop()
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.setblocking(False)
        self.port = self.front.getsockname()[1]
        self._loop.add_reader(self.front.fileno(), self._from_clients)
        return self

    def _send_later(self, sock: socket.socket, data: bytes, addr) -> None:
        if self._rng.random() < self.leg.loss:
            self.dropped += 1
            return
        self._loop.call_later(self.leg.delay_ms / 1000, self._sendto, sock, data, addr)

    @staticmethod
    def _sendto(sock: socket.socket, data: bytes, addr) -> None:
        try:
            sock.sendto(data, addr)
        except OSError:
            pass

    def _from_clients(self) -> None:
        while True:
            try:
                data, addr = self.front.recvfrom(4096)
            except BlockingIOError:
                return
            up = self._up.get(addr)
            if up is None:
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.bind(("127.0.0.1", 0))
                up.setblocking(False)
                self._up[addr] = up
                self._loop.add_reader(up.fileno(), self._from_sfu, up, addr)
            self._send_later(up, data, self.sfu_addr)

    def _from_sfu(self, up: socket.socket, client) -> None:
        while True:
            try:
                data = up.recv(4096)
            except BlockingIOError:
                return
            self._send_later(self.front, data, client)

    def close(self) -> None:
        for s in [self.front, *self._up.values()]:
            try:
                self._loop.remove_reader(s.fileno())
            except Exception:
                pass
            s.close()
