"""RTP capabilities this SFU can route (mediasoup's ``supportedRtpCapabilities``).

Router capabilities are generated from the configured media codecs against
this list (see :func:`sfu.ortc.generate_router_rtp_capabilities`). These are
*not* the capabilities to hand to clients: use the router's capabilities.

The entries are already in normalised form (``parameters``/``rtcpFeedback``
present, ``parameter: ""`` on feedback, ``preferredEncrypt``/``direction`` on
extensions). Treat the module constant as read-only; use
:func:`get_supported_rtp_capabilities` for a private copy.
"""

from __future__ import annotations

import copy

from sfu.rtp_parameters import (
    MediaKind,
    RtcpFeedback,
    RtpCapabilities,
    RtpCodecCapability,
    RtpHeaderExtension,
    RtpHeaderExtensionDirection,
)

_VIDEO_FEEDBACK: tuple[tuple[str, str], ...] = (
    ("nack", ""),
    ("nack", "pli"),
    ("ccm", "fir"),
    ("goog-remb", ""),
    ("transport-cc", ""),
)

_AUDIO_FEEDBACK: tuple[tuple[str, str], ...] = (
    ("nack", ""),
    ("transport-cc", ""),
)


def _feedback(entries: tuple[tuple[str, str], ...]) -> list[RtcpFeedback]:
    return [{"type": fb_type, "parameter": parameter} for fb_type, parameter in entries]


def _video_codec(mime_type: str, parameters: dict[str, str | int]) -> RtpCodecCapability:
    return {
        "kind": "video",
        "mimeType": mime_type,
        "clockRate": 90000,
        "parameters": parameters,
        "rtcpFeedback": _feedback(_VIDEO_FEEDBACK),
    }


def _ext(
    kind: MediaKind, uri: str, preferred_id: int, direction: RtpHeaderExtensionDirection
) -> RtpHeaderExtension:
    return {
        "kind": kind,
        "uri": uri,
        "preferredId": preferred_id,
        "preferredEncrypt": False,
        "direction": direction,
    }


URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RTP_STREAM_ID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RTP_STREAM_ID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_WIDE_CC = (
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
)
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
URI_TOFFSET = "urn:ietf:params:rtp-hdrext:toffset"
URI_ABS_CAPTURE_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"

SUPPORTED_RTP_CAPABILITIES: RtpCapabilities = {
    "codecs": [
        {
            "kind": "audio",
            "mimeType": "audio/opus",
            "clockRate": 48000,
            "channels": 2,
            "parameters": {},
            "rtcpFeedback": _feedback(_AUDIO_FEEDBACK),
        },
        _video_codec("video/VP8", {}),
        _video_codec("video/VP9", {}),
        _video_codec("video/H264", {"packetization-mode": 1, "level-asymmetry-allowed": 1}),
        _video_codec("video/H264", {"packetization-mode": 0, "level-asymmetry-allowed": 1}),
    ],
    "headerExtensions": [
        _ext("audio", URI_MID, 1, "sendrecv"),
        _ext("video", URI_MID, 1, "sendrecv"),
        _ext("video", URI_RTP_STREAM_ID, 2, "recvonly"),
        _ext("video", URI_REPAIRED_RTP_STREAM_ID, 3, "recvonly"),
        _ext("audio", URI_ABS_SEND_TIME, 4, "sendrecv"),
        _ext("video", URI_ABS_SEND_TIME, 4, "sendrecv"),
        # As in mediasoup: for audio, transport-cc is only used when receiving.
        _ext("audio", URI_TRANSPORT_WIDE_CC, 5, "recvonly"),
        _ext("video", URI_TRANSPORT_WIDE_CC, 5, "sendrecv"),
        _ext("audio", URI_AUDIO_LEVEL, 10, "sendrecv"),
        _ext("video", URI_VIDEO_ORIENTATION, 11, "sendrecv"),
        _ext("video", URI_TOFFSET, 12, "sendrecv"),
        _ext("audio", URI_ABS_CAPTURE_TIME, 13, "sendrecv"),
        _ext("video", URI_ABS_CAPTURE_TIME, 13, "sendrecv"),
        _ext("video", URI_PLAYOUT_DELAY, 14, "sendrecv"),
    ],
}


def get_supported_rtp_capabilities() -> RtpCapabilities:
    """A deep copy of :data:`SUPPORTED_RTP_CAPABILITIES` the caller may mutate."""
    return copy.deepcopy(SUPPORTED_RTP_CAPABILITIES)


__all__ = [
    "SUPPORTED_RTP_CAPABILITIES",
    "URI_ABS_CAPTURE_TIME",
    "URI_ABS_SEND_TIME",
    "URI_AUDIO_LEVEL",
    "URI_MID",
    "URI_PLAYOUT_DELAY",
    "URI_REPAIRED_RTP_STREAM_ID",
    "URI_RTP_STREAM_ID",
    "URI_TOFFSET",
    "URI_TRANSPORT_WIDE_CC",
    "URI_VIDEO_ORIENTATION",
    "get_supported_rtp_capabilities",
]
