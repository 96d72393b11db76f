"""A DirectTransport in the worker (mediasoup's DirectTransport): no network.
The engine queues what its consumers send on a virtual socket (bounded,
engine-owned); the worker takes the whole queue every ~20 ms and hands it to
the parent as one binary channel frame. RTP given by the parent is fed to the
engine as if received on that socket (the transport's producers).

It has the interface every transport of the worker has (see plain.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InvalidStateError

if TYPE_CHECKING:
    from .._fastpath._engine import Engine

# The engine needs a remote to send to: a fixed one no packet ever reaches
# (the socket is virtual), also the source of injected packets.
DIRECT_REMOTE = ("127.0.0.1", 9)


@dataclass
class DirectTransportState:
    id: str
    router_id: str
    engine: "Engine"
    handle: int
    socket: int
    capacity: int
    producer_ids: set[str] = field(default_factory=set)
    consumer_ids: set[str] = field(default_factory=set)
    drops_sent: int = 0
    local_ip: str = ""
    local_port: int = 0
    rtcp_local_port: int | None = None

    def pump(self, send: Callable[[str, str, bytes], None]) -> None:
        """Hands what the engine queued to the parent (one frame), and the
        drop count when it changed."""
        records, drops = self.engine.direct_take(self.socket)
        if records:
            send(self.id, "rtp", records)
        if drops != self.drops_sent:
            self.drops_sent = drops

    def send(self, data: bytes) -> None:
        self.engine.direct_send(self.socket, DIRECT_REMOTE, data)

    def connect(self, data: dict[str, Any]) -> dict[str, Any]:
        raise InvalidStateError("connect: a DirectTransport has no remote")

    def stats(self) -> dict[str, Any]:
        stats = self.engine.transport_stats(self.handle)
        stats.update({"type": "direct-transport", "transportId": self.id, "queueDrops": self.drops_sent,
                      "queueCapacity": self.capacity})
        return stats

    def restart_ice(self) -> dict[str, Any]:
        raise InvalidStateError("restartIce: not a WebRTC transport")

    def on_datagram(self, kind: str, data: bytes, addr: tuple[str, int]) -> bool:
        return False

    def close(self) -> None:
        """Removes the engine transport, then its socket (the queue goes with it)."""
        self.engine.remove_transport(self.handle)
        self.engine.remove_socket(self.socket)
