"""The part of every transport kind that produces and consumes media."""

from __future__ import annotations

import copy
import uuid
from typing import TYPE_CHECKING, Any, Optional, cast

from . import ortc
from .consumer import Consumer
from .errors import InvalidParametersError, InvalidStateError, UnsupportedError
from .events import EventEmitter
from .producer import Producer
from .rtp_parameters import MediaKind, RtpCapabilities, RtpParameters
from .supported_rtp_capabilities import URI_MID, URI_REPAIRED_RTP_STREAM_ID, URI_RTP_STREAM_ID

if TYPE_CHECKING:
    from .router import Router


class Transport(EventEmitter):
    """Events: ``"routerclose"``; observer: ``"close"``, ``"newproducer"(p)``,
    ``"newconsumer"(c)``."""

    def __init__(self, transport_id: str, router: "Router", app_data: Any) -> None:
        super().__init__()
        self.id = transport_id
        self.router = router
        self._closed = False
        self._producers: dict[str, Producer] = {}
        self._consumers: dict[str, Consumer] = {}
        self._next_mid = 0
        # as mediasoup: producers that signal no CNAME (Chrome's RID simulcast
        # offer has no a=ssrc lines, so mediasoup-client sends cname "") get
        # the transport's first producer CNAME, or a random one; consumers'
        # SDP needs one (mediasoup-client uses it as the msid stream id)
        self._cname_for_producers: Optional[str] = None
        self.app_data = app_data
        self.observer = EventEmitter()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def producers(self) -> list[Producer]:
        return list(self._producers.values())

    @property
    def consumers(self) -> list[Consumer]:
        return list(self._consumers.values())

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError(f"transport {self.id} is closed")

    @staticmethod
    def _require_routable(rtp_parameters: RtpParameters) -> None:
        """Incoming RTP is routed by SSRC, then MID, then RID (mediasoup's
        RtpListener): each encoding needs an SSRC or a RID, or the producer
        a MID with a single encoding."""
        encodings = rtp_parameters.get("encodings") or []
        mid = rtp_parameters.get("mid")
        if mid is not None and not 1 <= len(mid.encode()) <= 16:
            raise InvalidParametersError(f"rtpParameters.mid: 1 to 16 bytes, got {mid!r}")
        for i, enc in enumerate(encodings):
            rid = enc.get("rid")
            if rid is not None and not 1 <= len(str(rid).encode()) <= 16:
                raise InvalidParametersError(f"rtpParameters.encodings[{i}].rid: 1 to 16 bytes, got {rid!r}")
            if enc.get("ssrc") is None and not rid and not (mid and len(encodings) == 1):
                raise InvalidParametersError(
                    f"rtpParameters.encodings[{i}].ssrc: required when the encoding has no rid "
                    "and the producer no mid (incoming RTP is routed by SSRC, MID or RID)"
                )

    async def produce(
        self,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        paused: bool = False,
        app_data: Any = None,
        producer_id: Optional[str] = None,
        _handler_id: Optional[str] = None,
    ) -> Producer:
        """Starts receiving a media stream described by ``rtp_parameters``.

        Raises :class:`~sfu.errors.InvalidParametersError` for malformed
        parameters and :class:`~sfu.errors.UnsupportedError` for codecs the
        router does not have.
        """
        self._check_open()
        if kind not in ("audio", "video"):
            raise InvalidParametersError(f"kind: must be 'audio' or 'video', got {kind!r}")
        if producer_id is not None and self.router.get_producer(producer_id) is not None:
            raise InvalidStateError(f"a producer with id {producer_id} already exists")
        params: RtpParameters = copy.deepcopy(rtp_parameters)
        ortc.validate_rtp_parameters(params)
        rtcp = cast(dict[str, Any], params.setdefault("rtcp", {}))
        if rtcp.get("cname"):
            self._cname_for_producers = self._cname_for_producers or rtcp["cname"]
        else:
            self._cname_for_producers = self._cname_for_producers or uuid.uuid4().hex[:16]
            rtcp["cname"] = self._cname_for_producers
        if not params.get("encodings"):
            raise InvalidParametersError("rtpParameters.encodings: at least one encoding is required")
        if len(params["encodings"]) > 4:
            raise InvalidParametersError("rtpParameters.encodings: at most 4 encodings are supported")
        for i, codec in enumerate(params["codecs"]):
            codec_kind = codec["mimeType"].split("/")[0].lower()
            if codec_kind != kind:
                raise InvalidParametersError(
                    f"rtpParameters.codecs[{i}].mimeType: {codec['mimeType']} is not a {kind} codec"
                )
        self._require_routable(params)
        caps = self.router._rtp_capabilities
        mapping = ortc.get_producer_rtp_parameters_mapping(params, caps, kind)
        consumable = ortc.get_consumable_rtp_parameters(kind, params, caps, mapping)
        # SSRC 0: not signalled, learned from the first packet naming the
        # producer's MID or the encoding's RID
        streams = [
            {"ssrc": enc.get("ssrc") or 0, "rtxSsrc": (enc.get("rtx") or {}).get("ssrc"), "rid": enc.get("rid")}
            for enc in params["encodings"]
        ]
        incoming_ext = {e["uri"]: e["id"] for e in params.get("headerExtensions") or []}
        pid = producer_id or str(uuid.uuid4())
        await self.router.worker._request(
            "transport.produce",
            self.id,
            {
                "producerId": _handler_id or pid,
                "kind": kind,
                "streams": streams,
                "ptMap": {str(m["payloadType"]): m["mappedPayloadType"] for m in mapping["codecs"]},
                "extMap": {str(m["id"]): m["mappedId"] for m in mapping.get("headerExtensions", [])},
                # router payload type -> mimeType, for keyframe detection in the engine
                "codecs": {
                    str(m["mappedPayloadType"]): c["mimeType"].lower()
                    for m in mapping["codecs"]
                    for c in params["codecs"]
                    if c["payloadType"] == m["payloadType"] and not ortc.is_rtx_codec(c)
                },
                "feedback": _producer_feedback(params, mapping),
                "mid": params.get("mid"),
                "midExtId": incoming_ext.get(URI_MID, 0),
                "ridExtId": incoming_ext.get(URI_RTP_STREAM_ID, 0),
                "rridExtId": incoming_ext.get(URI_REPAIRED_RTP_STREAM_ID, 0),
                "paused": paused,
            },
        )
        producer = Producer(pid, kind, params, consumable, self, paused, app_data)
        producer._handler_id = _handler_id or pid
        self._producers[pid] = producer
        self.router._add_producer(producer)
        producer.observer.once("close", lambda: self._producers.pop(pid, None))
        self.observer.emit("newproducer", producer)
        return producer

    async def consume(
        self,
        producer_id: str,
        rtp_capabilities: RtpCapabilities,
        paused: bool = False,
        app_data: Any = None,
        mid: Optional[str] = None,
    ) -> Consumer:
        """Starts sending the producer's media to the remote end of this transport,
        with parameters derived from the remote's ``rtp_capabilities``.

        ``mid`` is the remote's m-section for this stream (an SDP answerer
        such as WHEP knows it from the offer); by default the transport
        numbers its consumers "0", "1", ... Every packet the consumer sends
        carries its own MID, whatever the publisher's was."""
        self._check_open()
        if mid is not None and not (isinstance(mid, str) and 1 <= len(mid.encode()) <= 16 and mid.isascii()):
            raise InvalidParametersError(f"mid: 1 to 16 ASCII characters, got {mid!r}")
        producer = self.router.get_producer(producer_id)
        if producer is None:
            raise InvalidParametersError(f"producer_id: producer {producer_id!r} not found in this router")
        caps = copy.deepcopy(rtp_capabilities)
        ortc.validate_rtp_capabilities(caps)
        if not ortc.can_consume(producer.consumable_rtp_parameters, caps):
            raise UnsupportedError(
                f"cannot consume producer {producer_id}: no codec of rtp_capabilities matches its "
                f"{producer.consumable_rtp_parameters['codecs'][0]['mimeType']}"
            )
        params = ortc.get_consumer_rtp_parameters(producer.consumable_rtp_parameters, caps, False, True)
        pt_map = _adopt_remote_payload_types(params, caps)
        if mid is None:
            mid = str(self._next_mid)
            self._next_mid += 1
        params["mid"] = mid
        encoding = params["encodings"][0]
        media_codecs = [c for c in params["codecs"] if not ortc.is_rtx_codec(c)]
        router_ext_ids = {e["uri"]: e["id"] for e in producer.consumable_rtp_parameters.get("headerExtensions", [])}
        # the MID extension is written by the engine with this consumer's
        # value, and the transport-wide sequence number with the transport's
        # own numbering (the publisher's means nothing to this remote)
        ext_map = {
            str(router_ext_ids[e["uri"]]): e["id"]
            for e in params.get("headerExtensions", [])
            if e["uri"] in router_ext_ids and e["uri"] not in (URI_MID, TRANSPORT_CC_URI)
        }
        mid_ext_id = next((e["id"] for e in params.get("headerExtensions", []) if e["uri"] == URI_MID), 0)
        cid = str(uuid.uuid4())
        await self.router.worker._request(
            "transport.consume",
            self.id,
            {
                "consumerId": cid,
                "producerId": producer._handler_id,
                "kind": producer.kind,
                "ssrc": encoding["ssrc"],
                "rtxSsrc": (encoding.get("rtx") or {}).get("ssrc"),
                "clockRate": media_codecs[0]["clockRate"],
                # router payload type -> the consumer's (its remote's preferred ones)
                "ptMap": {str(k): v for k, v in pt_map.items()},
                "extMap": ext_map,
                "feedback": _consumer_feedback(params),
                "mid": mid,
                "midExtId": mid_ext_id,
                "paused": paused,
            },
        )
        consumer = Consumer(cid, producer, params, self, paused, app_data)
        self._consumers[cid] = consumer
        consumer.observer.once("close", lambda: self._consumers.pop(cid, None))
        self.observer.emit("newconsumer", consumer)
        return consumer

    async def get_stats(self) -> list[dict[str, Any]]:
        """Packet and byte counters of the transport."""
        self._check_open()
        return await self.router.worker._request("transport.getStats", self.id)

    def close(self) -> None:
        """Closes the transport and everything it produced and consumed."""
        if self._closed:
            return
        self._closed = True
        self.router.worker._request_nowait("router.closeTransport", self.router.id, {"transportId": self.id})
        self._close_children()
        self.observer.emit("close")

    def _close_children(self) -> None:
        for consumer in list(self._consumers.values()):
            consumer._transport_closed()
        for producer in list(self._producers.values()):
            producer._transport_closed()

    def _router_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_children()
        self.emit("routerclose")
        self.observer.emit("close")

    def _on_notification(self, event: str, data: Any) -> None:
        """Worker notifications addressed to this transport."""


def _adopt_remote_payload_types(params: RtpParameters, caps: RtpCapabilities) -> dict[int, int]:
    """Gives each consumer codec the payload type its remote prefers for it.

    ORTC keeps the router's payload types; a remote that negotiated through
    the router's capabilities (mediasoup-client) prefers exactly those, but an
    SDP offerer (WHEP) has its own numbers, which the answer must use. The
    engine rewrites the payload type per consumer, so any mapping is free.
    Returns {router payload type: consumer payload type}; `params` is updated.
    """
    remote = caps.get("codecs") or []
    mapping: dict[int, int] = {}
    taken: set[int] = set()
    for codec in params["codecs"]:
        if ortc.is_rtx_codec(codec):
            continue
        for rc in remote:
            pt = rc.get("preferredPayloadType")
            if not ortc.is_rtx_codec(rc) and pt not in taken and ortc.match_codecs(codec, rc, strict=True):
                mapping[codec["payloadType"]] = pt
                taken.add(pt)
                break
    for codec in params["codecs"]:
        if not ortc.is_rtx_codec(codec):
            continue
        apt = (codec.get("parameters") or {}).get("apt")
        new_apt = mapping.get(apt, apt)
        for rc in remote:
            pt = rc.get("preferredPayloadType")
            if (ortc.is_rtx_codec(rc) and pt not in taken
                    and (rc.get("parameters") or {}).get("apt") == new_apt):
                mapping[codec["payloadType"]] = pt
                taken.add(pt)
                break
    for codec in params["codecs"]:
        old = codec["payloadType"]
        if old not in mapping:
            mapping[old] = old if old not in taken else _free_payload_type(taken)
            taken.add(mapping[old])
        codec["payloadType"] = mapping[old]
        if ortc.is_rtx_codec(codec):
            apt = codec["parameters"].get("apt")
            codec["parameters"]["apt"] = mapping.get(apt, apt)
    return mapping


def _free_payload_type(taken: set[int]) -> int:
    for pt in list(range(96, 128)) + list(range(35, 64)):
        if pt not in taken:
            return pt
    raise UnsupportedError("no free payload type left for this consumer")


TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def _has_nack(codec: dict[str, Any]) -> bool:
    return any(fb.get("type") == "nack" and not fb.get("parameter") for fb in codec.get("rtcpFeedback") or [])


def _producer_feedback(params: RtpParameters, mapping: dict[str, Any]) -> dict[str, Any]:
    """What the engine needs to recover the producer's losses."""
    media = [c for c in params["codecs"] if not ortc.is_rtx_codec(c)]
    return {
        "nack": any(_has_nack(c) for c in media),
        "rtxApt": {str(c["payloadType"]): int(c["parameters"]["apt"])
                   for c in params["codecs"] if ortc.is_rtx_codec(c) and "apt" in (c.get("parameters") or {})},
        "twccExtId": next((m["mappedId"] for m in mapping.get("headerExtensions", [])
                           if m.get("uri") == TRANSPORT_CC_URI), 0),
        "clockRate": media[0]["clockRate"] if media else 0,
    }


def _consumer_feedback(params: RtpParameters) -> dict[str, Any]:
    """Whether to answer the consumer's NACKs, with which RTX payload type,
    and what feeds the transport's bandwidth estimate (our transport-wide
    sequence numbers and the remote's transport-cc, or its REMB)."""
    media = [c for c in params["codecs"] if not ortc.is_rtx_codec(c)]
    first = media[0] if media else None
    rtx = next((c for c in params["codecs"] if ortc.is_rtx_codec(c) and first is not None
                and (c.get("parameters") or {}).get("apt") == first["payloadType"]), None)
    has_rtx_ssrc = bool((params["encodings"][0].get("rtx") or {}).get("ssrc"))
    fb_types = {fb.get("type") for fb in (first or {}).get("rtcpFeedback") or []}
    twcc_ext = next((e["id"] for e in params.get("headerExtensions", []) if e["uri"] == TRANSPORT_CC_URI), 0)
    return {
        "nack": bool(first is not None and _has_nack(first)),
        "rtxPt": rtx["payloadType"] if rtx is not None and has_rtx_ssrc else 0,
        "twccExtId": twcc_ext if "transport-cc" in fb_types else 0,
        "remb": "goog-remb" in fb_types,
    }
