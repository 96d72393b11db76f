"""Pipe transports: plain RTP between two routers (mediasoup's PipeTransport).

A pipe joins two routers of one host (the same worker or two workers) over
UDP on loopback: a :class:`PipeConsumer` on the source router's pipe
transport sends every encoding of a producer, and the destination router's
pipe transport receives them as a producer with the same id, which the
destination's transports consume like any other. Packets go from one engine
to the other over UDP; Python only sets the pipe up.

:meth:`sfu.Router.pipe_to_router` does all of it; the classes here are what
it returns.
"""

from __future__ import annotations

import copy
import random
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from . import ortc
from .consumer import Consumer
from .errors import InvalidParametersError, InvalidStateError, UnsupportedError
from .plain_transport import PlainTransport
from .rtp_parameters import RtpCapabilities, RtpParameters
from .supported_rtp_capabilities import URI_MID

if TYPE_CHECKING:
    from .producer import Producer
    from .transport import Transport

URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
# as mediasoup's pipes: the transport's MID and the bandwidth-estimation
# extensions mean nothing between two routers (each side's own transports
# write their own)
_PIPE_DROPPED_EXTENSIONS = (URI_MID, URI_ABS_SEND_TIME, URI_TRANSPORT_CC)


class PipeToRouterResult(NamedTuple):
    """What :meth:`sfu.Router.pipe_to_router` returns (unpacks as a pair)."""

    pipe_consumer: "PipeConsumer"
    pipe_producer: "Producer"


def pipe_consumer_rtp_parameters(consumable: RtpParameters) -> RtpParameters:
    """A pipe consumer's RTP parameters, from the producer's consumable ones
    (mediasoup's ``getPipeConsumerRtpParameters`` without RTX): the router's
    media codecs with only PLI and FIR feedback, the header extensions but the
    MID and the bandwidth-estimation ones, every encoding with its own SSRC
    (consecutive from a random base), the producer's RTCP CNAME."""
    src: Any = copy.deepcopy(consumable)
    codecs = []
    for codec in src["codecs"]:
        if ortc.is_rtx_codec(codec):
            continue
        codec["rtcpFeedback"] = [
            fb for fb in codec.get("rtcpFeedback") or []
            if (fb.get("type"), fb.get("parameter")) in (("nack", "pli"), ("ccm", "fir"))
        ]
        codecs.append(codec)
    extensions = [e for e in src.get("headerExtensions") or [] if e["uri"] not in _PIPE_DROPPED_EXTENSIONS]
    base = random.randrange(1, 0xFFFFFFFF - 8)
    encodings = []
    for i, enc in enumerate(src["encodings"]):
        enc.pop("rtx", None)
        enc["ssrc"] = base + i
        encodings.append(enc)
    params: Any = {"codecs": codecs, "headerExtensions": extensions, "encodings": encodings,
                   "rtcp": src.get("rtcp") or {}}
    return params  # type: ignore[no-any-return]


class PipeConsumer(Consumer):
    """Sends every encoding of a producer through a :class:`PipeTransport`.

    Each encoding goes out whole with its own SSRC (``rtp_parameters
    ["encodings"][i]["ssrc"]``) and sequence numbers continuous from where it
    started (at a keyframe of that encoding), so a simulcast producer stays
    simulcast on the other side. Keyframe requests (PLI/FIR) that arrive on
    the pipe for an encoding's SSRC reach the producer.

    Observer events as mediasoup's: ``"pause"``/``"resume"`` also when the
    producer pauses or resumes (what :meth:`Router.pipe_to_router` mirrors).
    """

    def __init__(self, consumer_id: str, producer: "Producer", rtp_parameters: RtpParameters,
                 transport: "Transport", part_ids: list[str], app_data: Any) -> None:
        super().__init__(consumer_id, producer, rtp_parameters, transport, False, app_data)
        self.type = "pipe"
        self._part_ids = part_ids

    def _requests(self, method: str) -> list[Any]:
        return [self._worker()._request(method, pid) for pid in self._part_ids]

    async def pause(self) -> None:
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        for req in self._requests("consumer.pause"):
            await req
        if not self._paused:
            self._paused = True
            if not self._producer_paused:
                self.observer.emit("pause")

    async def resume(self) -> None:
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        for req in self._requests("consumer.resume"):
            await req
        if self._paused:
            self._paused = False
            if not self._producer_paused:
                self.observer.emit("resume")

    async def set_preferred_layers(self, spatial_layer: int, temporal_layer: int | None = None) -> None:
        raise UnsupportedError("a pipe consumer forwards every layer; set layers on the consumers "
                               "of the piped producer")

    async def set_priority(self, priority: int) -> None:
        raise UnsupportedError("a pipe consumer is not part of a bandwidth allocation")

    async def request_key_frame(self) -> None:
        """Asks the producer for a keyframe of every encoding."""
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        if self.kind == "video":
            for req in self._requests("consumer.requestKeyFrame"):
                await req

    async def get_stats(self) -> list[dict[str, Any]]:
        """One ``outbound-rtp`` entry per encoding (its SSRC, packets, bytes)."""
        if self._closed:
            raise InvalidStateError(f"consumer {self.id} is closed")
        stats: list[dict[str, Any]] = []
        for req in self._requests("consumer.getStats"):
            stats.extend(await req)
        return stats

    def close(self) -> None:
        if self._closed:
            return
        self._mark_closed()
        for pid in self._part_ids:
            self._worker()._request_nowait("consumer.close", pid)
        self.observer.emit("close")

    def _on_producer_pause(self) -> None:
        was = self._paused or self._producer_paused
        super()._on_producer_pause()
        if not was:
            self.observer.emit("pause")

    def _on_producer_resume(self) -> None:
        super()._on_producer_resume()
        if not self._paused:
            self.observer.emit("resume")


class PipeTransport(PlainTransport):
    """A plain RTP transport (RTCP-muxed, no SRTP) joining two routers.

    Made in pairs by :meth:`sfu.Router.pipe_to_router` (or
    :meth:`sfu.Router.create_pipe_transport` and :meth:`connect` to the
    other's ``tuple``). :meth:`consume` takes only a producer id: the
    consumer sends the producer's own parameters, all encodings; the other
    side :meth:`produce`\\ s them with the consumer's ``rtp_parameters``.
    """

    async def consume(  # type: ignore[override]
        self,
        producer_id: str,
        rtp_capabilities: Optional[RtpCapabilities] = None,
        paused: bool = False,
        app_data: Any = None,
        mid: Optional[str] = None,
    ) -> PipeConsumer:
        """Sends the producer, every encoding, to the other end of the pipe.

        ``rtp_capabilities`` and ``mid`` must not be given (a pipe consumer
        takes the producer's parameters); ``paused`` is not supported either.
        """
        self._check_open()
        if rtp_capabilities is not None or mid is not None or paused:
            raise InvalidParametersError("a pipe consumer takes only producer_id (and app_data)")
        producer = self.router.get_producer(producer_id)
        if producer is None:
            raise InvalidParametersError(f"producer_id: producer {producer_id!r} not found in this router")
        params = pipe_consumer_rtp_parameters(producer.consumable_rtp_parameters)
        router_ext_ids = {e["uri"]: e["id"] for e in producer.consumable_rtp_parameters.get("headerExtensions", [])}
        ext_map = {str(router_ext_ids[e["uri"]]): e["id"] for e in params.get("headerExtensions", [])
                   if e["uri"] in router_ext_ids}
        media = [c for c in params["codecs"] if not ortc.is_rtx_codec(c)]
        if not media:
            raise UnsupportedError(f"producer {producer_id} has no media codec to pipe")
        cid = str(uuid.uuid4())
        part_ids: list[str] = []
        try:
            for i, enc in enumerate(params["encodings"]):
                part_id = f"{cid}/{i}"
                await self.router.worker._request(
                    "transport.consume",
                    self.id,
                    {
                        "consumerId": part_id,
                        "producerId": producer._handler_id,
                        "kind": producer.kind,
                        "ssrc": enc["ssrc"],
                        "rtxSsrc": None,
                        "clockRate": media[0]["clockRate"],
                        # the router's payload types and extension ids, as they are
                        "ptMap": {str(c["payloadType"]): c["payloadType"] for c in params["codecs"]},
                        "extMap": ext_map,
                        "feedback": {"nack": False, "rtxPt": 0, "twccExtId": 0, "remb": False},
                        "mid": None,
                        "midExtId": 0,
                        "paused": False,
                        "fixedStream": i,
                    },
                )
                part_ids.append(part_id)
        except BaseException:
            for part_id in part_ids:
                self.router.worker._request_nowait("consumer.close", part_id)
            raise
        consumer = PipeConsumer(cid, producer, params, self, part_ids, app_data)
        self._consumers[cid] = consumer
        consumer.observer.once("close", lambda: self._consumers.pop(cid, None))
        self.observer.emit("newconsumer", consumer)
        return consumer
