"""Producers: media received from a transport, consumable by the router."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InvalidStateError
from .events import EventEmitter
from .rtp_parameters import MediaKind, RtpParameters

if TYPE_CHECKING:
    from .transport import Transport


class Producer(EventEmitter):
    """Events: ``"transportclose"``; observer: ``"close"``, ``"pause"``, ``"resume"``."""

    def __init__(
        self,
        producer_id: str,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        consumable_rtp_parameters: RtpParameters,
        transport: "Transport",
        paused: bool,
        app_data: Any,
    ) -> None:
        super().__init__()
        self.id = producer_id
        self.kind = kind
        self.rtp_parameters = rtp_parameters
        self.consumable_rtp_parameters = consumable_rtp_parameters
        self.type = "simulcast" if len(rtp_parameters["encodings"]) > 1 else "simple"
        self.transport = transport
        self._paused = paused
        self._closed = False
        self.app_data = app_data
        self.observer = EventEmitter()
        # the id the worker knows it by: the id, but for a producer piped to
        # another router of the same worker, whose worker already has the id
        self._handler_id = producer_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def paused(self) -> bool:
        return self._paused

    def _worker(self) -> Any:
        return self.transport.router.worker

    async def pause(self) -> None:
        """Stops forwarding this producer's media to its consumers."""
        if self._closed:
            raise InvalidStateError(f"producer {self.id} is closed")
        await self._worker()._request("producer.pause", self._handler_id)
        if not self._paused:
            self._paused = True
            self.observer.emit("pause")

    async def resume(self) -> None:
        """Resumes forwarding (consumers continue without sequence gaps)."""
        if self._closed:
            raise InvalidStateError(f"producer {self.id} is closed")
        await self._worker()._request("producer.resume", self._handler_id)
        if self._paused:
            self._paused = False
            self.observer.emit("resume")

    async def get_stats(self) -> list[dict[str, Any]]:
        """Per-stream packet and byte counts received."""
        if self._closed:
            raise InvalidStateError(f"producer {self.id} is closed")
        return await self._worker()._request("producer.getStats", self._handler_id)

    def close(self) -> None:
        """Closes the producer; its consumers close with ``"producerclose"``."""
        if self._closed:
            return
        self._closed = True
        self._worker()._request_nowait("producer.close", self._handler_id)
        self.observer.emit("close")

    def _transport_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.emit("transportclose")
        self.observer.emit("close")
