"""DirectTransport (mediasoup's shape): RTP between the router and Python,
without a network. Its consumers' packets reach Python in batches (every
~20 ms, one channel frame per batch; never a callback per packet on the
forwarding thread); RTP given to :meth:`DirectTransport.send` enters the
router through the transport's producers."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Optional

from .errors import InvalidParametersError
from .transport import Transport

if TYPE_CHECKING:
    from .router import Router

logger = logging.getLogger("sfu.direct")

Batch = list[bytes]


class DirectTransport(Transport):
    """Events (besides :class:`Transport`'s): ``"rtp"(list[bytes])`` per batch.

    A batch holds what the transport's consumers sent since the last one:
    RTP, and the RTCP the router sends them (sender reports). Use
    :attr:`on_batch`, the ``"rtp"`` event or ``async for batch in transport``.
    """

    def __init__(self, transport_id: str, router: "Router", data: dict[str, Any], app_data: Any) -> None:
        super().__init__(transport_id, router, app_data)
        self.max_queue_bytes: int = int(data.get("maxQueueBytes") or 0)
        self.on_batch: Optional[Callable[[Batch], None]] = None
        self._queue: Optional[asyncio.Queue[Optional[Batch]]] = None
        self.packets_received = 0
        self.batches_received = 0
        self.observer.once("close", self._end_iteration)

    def _on_notification(self, event: str, data: Any) -> None:
        if event != "rtp":
            return
        self.batches_received += 1
        self.packets_received += len(data)
        if self.on_batch is not None:
            try:
                self.on_batch(data)
            except Exception:
                logger.exception("DirectTransport %s: on_batch failed", self.id)
        if self._queue is not None:
            try:
                self._queue.put_nowait(data)
            except asyncio.QueueFull:
                logger.debug("DirectTransport %s: iterator behind, batch dropped", self.id)
        self.emit("rtp", data)

    def __aiter__(self) -> AsyncIterator[Batch]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=256)
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Batch]:
        assert self._queue is not None
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            yield batch

    def _end_iteration(self) -> None:
        if self._queue is not None:
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                pass

    def send(self, data: bytes | list[bytes]) -> None:
        """Injects RTP/RTCP datagram(s) as if received by this transport:
        they reach the router through its producers (:meth:`produce` first;
        packets of unknown SSRCs are dropped and counted by the engine)."""
        self._check_open()
        datagrams = [data] if isinstance(data, (bytes, bytearray)) else list(data)
        parts = []
        for d in datagrams:
            if not isinstance(d, (bytes, bytearray)) or not 12 <= len(d) <= 1500:
                raise InvalidParametersError("data: RTP/RTCP datagrams of 12 to 1500 bytes")
            parts.append(struct.pack("<I", len(d)))
            parts.append(bytes(d))
        self.router.worker._channel.send_binary(self.id, "send", b"".join(parts))

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        raise InvalidParametersError("connect: a DirectTransport has no remote")
