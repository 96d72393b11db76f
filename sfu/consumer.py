"""Consumers: one producer's media sent to one transport, rewritten for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InvalidParametersError, InvalidStateError
from .events import EventEmitter
from .rtp_parameters import RtpParameters

if TYPE_CHECKING:
    from .producer import Producer
    from .transport import Transport


class Consumer(EventEmitter):
    """Events: ``"transportclose"``, ``"producerclose"``, ``"producerpause"``,
    ``"producerresume"``, ``"layerschange"(layers)`` (a simulcast consumer
    switched layer; ``{"spatialLayer": n, "temporalLayer": None}``);
    observer: ``"close"``, ``"pause"``, ``"resume"``, ``"layerschange"``."""

    def __init__(
        self,
        consumer_id: str,
        producer: "Producer",
        rtp_parameters: RtpParameters,
        transport: "Transport",
        paused: bool,
        app_data: Any,
    ) -> None:
        super().__init__()
        self.id = consumer_id
        self.producer_id = producer.id
        self.kind = producer.kind
        self.rtp_parameters = rtp_parameters
        self.type = "simple"
        self.transport = transport
        self._paused = paused
        self._producer_paused = producer.paused
        self._closed = False
        self.app_data = app_data
        self.observer = EventEmitter()
        producer.observer.on("close", self._on_producer_close)
        producer.observer.on("pause", self._on_producer_pause)
        producer.observer.on("resume", self._on_producer_resume)
        self._producer = producer
        self._preferred_layers: dict[str, int] | None = None
        self._current_layers: dict[str, Any] | None = None
        self._priority = 1
        if producer.type == "simulcast":
            self.type = "simulcast"
        transport.router.worker._register(consumer_id, self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def paused(self) -> bool:
        """Paused by this consumer's own :meth:`pause`."""
        return self._paused

    @property
    def producer_paused(self) -> bool:
        return self._producer_paused

    def _worker(self) -> Any:
        return self.transport.router.worker

    async def pause(self) -> None:
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        await self._worker()._request("consumer.pause", self.id)
        if not self._paused:
            self._paused = True
            self.observer.emit("pause")

    async def resume(self) -> None:
        """Resumes sending; sequence numbers continue without a gap and
        timestamps stay monotonic."""
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        await self._worker()._request("consumer.resume", self.id)
        if self._paused:
            self._paused = False
            self.observer.emit("resume")

    @property
    def preferred_layers(self) -> dict[str, int] | None:
        """The layers asked for with :meth:`set_preferred_layers` (None: the top one)."""
        return self._preferred_layers

    @property
    def current_layers(self) -> dict[str, Any] | None:
        """The simulcast layer being forwarded, as of the last
        ``"layerschange"`` (None before the first switch)."""
        return self._current_layers

    @property
    def priority(self) -> int:
        return self._priority

    async def set_preferred_layers(self, spatial_layer: int, temporal_layer: int | None = None) -> None:
        """The highest simulcast encoding to forward: ``spatial_layer`` (0 is
        the first encoding; clamped to the producer's encodings; the default
        is the top one). When the consumer's remote gives bandwidth feedback
        (transport-cc or REMB), the SFU forwards the highest layer up to this
        one that its estimate of the link allows. A switch happens at a
        keyframe of the new layer, which the SFU asks the publisher for, with
        sequence numbers and timestamps continuing (mediasoup's
        ``setPreferredLayers``). ``temporal_layer`` (VP8 temporal layers,
        e.g. L1T3: 0..2; None: all) drops the frames above it, whole, with
        the viewer's sequence numbers and picture ids kept continuous. For a
        VP9 SVC producer (one stream with spatial layers) ``spatial_layer``
        is the highest spatial layer forwarded; a climb waits for a key
        picture, which the SFU asks for."""
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        if not isinstance(spatial_layer, int) or isinstance(spatial_layer, bool) or spatial_layer < 0:
            raise InvalidParametersError("spatial_layer: an integer >= 0")
        if temporal_layer is not None and (not isinstance(temporal_layer, int) or temporal_layer < 0):
            raise InvalidParametersError("temporal_layer: an integer >= 0, or None")
        layers: dict[str, int] = {"spatialLayer": spatial_layer}
        if temporal_layer is not None:
            layers["temporalLayer"] = temporal_layer
        await self._worker()._request("consumer.setPreferredLayers", self.id, layers)
        self._preferred_layers = {"spatialLayer": spatial_layer}
        if temporal_layer is not None:
            self._preferred_layers["temporalLayer"] = temporal_layer

    async def set_priority(self, priority: int) -> None:
        """Order in which the transport's bandwidth is given out (1..255,
        higher first; default 1)."""
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        if not isinstance(priority, int) or isinstance(priority, bool) or not 1 <= priority <= 255:
            raise InvalidParametersError("priority: an integer from 1 to 255")
        await self._worker()._request("consumer.setPriority", self.id, {"priority": priority})
        self._priority = priority

    async def request_key_frame(self) -> None:
        """Ask the publisher for a keyframe of what this consumer forwards
        (mediasoup's ``requestKeyFrame``): for a receiver that cannot decode
        until one comes, e.g. a recording after a loss. Throttled with every
        other request for that stream (one per keyframe interval)."""
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        if self.kind == "video":
            await self._worker()._request("consumer.requestKeyFrame", self.id)

    def _on_notification(self, event: str, data: Any) -> None:
        if event == "layerschange":
            self._current_layers = data
            self.emit("layerschange", data)
            self.observer.emit("layerschange", data)

    async def get_stats(self) -> list[dict[str, Any]]:
        """Packet and byte counts sent."""
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        return await self._worker()._request("consumer.getStats", self.id)

    def close(self) -> None:
        if self._closed:
            return
        self._mark_closed()
        self._worker()._request_nowait("consumer.close", self.id)
        self.observer.emit("close")

    def _mark_closed(self) -> None:
        self._closed = True
        self._worker()._unregister(self.id)
        self._producer.observer.off("close", self._on_producer_close)
        self._producer.observer.off("pause", self._on_producer_pause)
        self._producer.observer.off("resume", self._on_producer_resume)

    def _transport_closed(self) -> None:
        if self._closed:
            return
        self._mark_closed()
        self.emit("transportclose")
        self.observer.emit("close")

    def _on_producer_close(self) -> None:
        if self._closed:
            return
        # The worker closes its side of the consumer with the producer.
        self._mark_closed()
        self.emit("producerclose")
        self.observer.emit("close")

    def _on_producer_pause(self) -> None:
        self._producer_paused = True
        self.emit("producerpause")

    def _on_producer_resume(self) -> None:
        self._producer_paused = False
        self.emit("producerresume")
