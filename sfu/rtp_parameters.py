"""Typed wire shapes of RTP capabilities and parameters.

These ``TypedDict`` s mirror mediasoup v3's ``RtpParameters.ts``. The field
names are camelCase on purpose: the dicts *are* the JSON wire form exchanged
with clients (mediasoup-client, libmediasoupclient) and with the engine.
Optional fields are declared in ``total=False`` bases.
"""

from __future__ import annotations

from typing import Literal, TypedDict

MediaKind = Literal["audio", "video"]
"""Media kind of a codec, header extension, producer or consumer."""

RtpHeaderExtensionDirection = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
"""Direction of a header extension, seen from the endpoint owning the caps."""

CodecParameterValue = str | int | float
"""Value of a codec ``fmtp`` parameter (``apt`` must be an ``int``)."""


class _RtcpFeedbackRequired(TypedDict):
    type: str


class RtcpFeedback(_RtcpFeedbackRequired, total=False):
    """An RTCP feedback mechanism (``a=rtcp-fb``), e.g. ``nack pli``."""

    parameter: str


class _RtpCodecCapabilityRequired(TypedDict):
    mimeType: str
    clockRate: int


class RtpCodecCapability(_RtpCodecCapabilityRequired, total=False):
    """A codec an endpoint (or the router) can receive."""

    kind: MediaKind
    preferredPayloadType: int
    channels: int
    parameters: dict[str, CodecParameterValue]
    rtcpFeedback: list[RtcpFeedback]


class _RtpHeaderExtensionRequired(TypedDict):
    kind: MediaKind
    uri: str
    preferredId: int


class RtpHeaderExtension(_RtpHeaderExtensionRequired, total=False):
    """A header extension an endpoint (or the router) supports, per kind."""

    preferredEncrypt: bool
    direction: RtpHeaderExtensionDirection


class RtpCapabilities(TypedDict, total=False):
    """What an endpoint or the router can receive at media level."""

    codecs: list[RtpCodecCapability]
    headerExtensions: list[RtpHeaderExtension]


class _RtpCodecParametersRequired(TypedDict):
    mimeType: str
    payloadType: int
    clockRate: int


class RtpCodecParameters(_RtpCodecParametersRequired, total=False):
    """A codec actually used by a producer or consumer, with its payload type."""

    channels: int
    parameters: dict[str, CodecParameterValue]
    rtcpFeedback: list[RtcpFeedback]


class _RtpHeaderExtensionParametersRequired(TypedDict):
    uri: str
    id: int


class RtpHeaderExtensionParameters(_RtpHeaderExtensionParametersRequired, total=False):
    """A header extension actually used by a producer or consumer, with its id."""

    encrypt: bool
    parameters: dict[str, CodecParameterValue]


class RtxParameters(TypedDict):
    """The RTX stream of an encoding."""

    ssrc: int


class RtpEncodingParameters(TypedDict, total=False):
    """One RTP stream (simulcast layer or the single stream) of a producer/consumer."""

    ssrc: int
    rid: str
    codecPayloadType: int
    rtx: RtxParameters
    dtx: bool
    scalabilityMode: str
    maxBitrate: int


class RtcpParameters(TypedDict, total=False):
    """RTCP settings: CNAME and reduced-size RTCP (RFC 5506)."""

    cname: str
    reducedSize: bool


class _RtpParametersRequired(TypedDict):
    codecs: list[RtpCodecParameters]


class RtpParameters(_RtpParametersRequired, total=False):
    """What a producer sends or a consumer receives."""

    mid: str
    headerExtensions: list[RtpHeaderExtensionParameters]
    encodings: list[RtpEncodingParameters]
    rtcp: RtcpParameters


class RtpCodecMapping(TypedDict):
    """Producer payload type -> router payload type."""

    payloadType: int
    mappedPayloadType: int


class _RtpEncodingMappingRequired(TypedDict):
    mappedSsrc: int


class RtpEncodingMapping(_RtpEncodingMappingRequired, total=False):
    """Producer encoding (by ssrc or rid) -> router-side ssrc."""

    ssrc: int
    rid: str
    scalabilityMode: str


class RtpHeaderExtensionMapping(TypedDict):
    """Producer header extension id -> router preferred id (our addition)."""

    id: int
    mappedId: int
    uri: str


class RtpMapping(TypedDict):
    """How a producer's RTP is rewritten into the router's namespace."""

    codecs: list[RtpCodecMapping]
    encodings: list[RtpEncodingMapping]
    headerExtensions: list[RtpHeaderExtensionMapping]


__all__ = [
    "CodecParameterValue",
    "MediaKind",
    "RtcpFeedback",
    "RtcpParameters",
    "RtpCapabilities",
    "RtpCodecCapability",
    "RtpCodecMapping",
    "RtpCodecParameters",
    "RtpEncodingMapping",
    "RtpEncodingParameters",
    "RtpHeaderExtension",
    "RtpHeaderExtensionDirection",
    "RtpHeaderExtensionMapping",
    "RtpHeaderExtensionParameters",
    "RtpMapping",
    "RtpParameters",
    "RtxParameters",
]
