"""Tests of sfu.ortc (mediasoup-style ORTC negotiation) and the supported caps."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import ortc
from sfu.errors import InvalidParametersError, UnsupportedError
from sfu.supported_rtp_capabilities import (
    SUPPORTED_RTP_CAPABILITIES,
    URI_ABS_CAPTURE_TIME,
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_PLAYOUT_DELAY,
    URI_REPAIRED_RTP_STREAM_ID,
    URI_RTP_STREAM_ID,
    URI_TOFFSET,
    URI_TRANSPORT_WIDE_CC,
    URI_VIDEO_ORIENTATION,
    get_supported_rtp_capabilities,
)

Obj = dict[str, Any]

URI_VIDEO_TIMING = "http://www.webrtc.org/experiments/rtp-hdrext/video-timing"

# ---------------------------------------------------------------------------
# Realistic inputs.
# ---------------------------------------------------------------------------

VIDEO_FB = [
    {"type": "goog-remb", "parameter": ""},
    {"type": "transport-cc", "parameter": ""},
    {"type": "ccm", "parameter": "fir"},
    {"type": "nack", "parameter": ""},
    {"type": "nack", "parameter": "pli"},
]

# A router configured like a typical mediasoup app.
ROUTER_MEDIA_CODECS: list[Obj] = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000,
     "parameters": {"x-google-start-bitrate": 1000}},
    {"kind": "video", "mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 2}},
    {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
     "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032",
                    "level-asymmetry-allowed": 1}},
    {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
     "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f",
                    "level-asymmetry-allowed": 1}},
]
# Payload types expected for ROUTER_MEDIA_CODECS.
PT_OPUS, PT_VP8, PT_VP8_RTX, PT_VP9, PT_VP9_RTX = 100, 101, 102, 103, 104
PT_H264_MAIN, PT_H264_MAIN_RTX, PT_H264_CB, PT_H264_CB_RTX = 105, 106, 107, 108


def chrome_caps() -> Obj:
    """Receive capabilities shaped like a Chrome device (raw Chrome PTs and ext ids)."""
    return {
        "codecs": [
            {"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 111,
             "clockRate": 48000, "channels": 2, "parameters": {"minptime": 10, "useinbandfec": 1},
             "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]},
            {"kind": "video", "mimeType": "video/VP8", "preferredPayloadType": 96,
             "clockRate": 90000, "parameters": {}, "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 97,
             "clockRate": 90000, "parameters": {"apt": 96}, "rtcpFeedback": []},
            {"kind": "video", "mimeType": "video/VP9", "preferredPayloadType": 98,
             "clockRate": 90000, "parameters": {"profile-id": 0},
             "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 99,
             "clockRate": 90000, "parameters": {"apt": 98}, "rtcpFeedback": []},
            {"kind": "video", "mimeType": "video/VP9", "preferredPayloadType": 100,
             "clockRate": 90000, "parameters": {"profile-id": 2},
             "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 101,
             "clockRate": 90000, "parameters": {"apt": 100}, "rtcpFeedback": []},
            {"kind": "video", "mimeType": "video/H264", "preferredPayloadType": 102,
             "clockRate": 90000,
             "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": 1,
                            "profile-level-id": "42001f"},
             "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 103,
             "clockRate": 90000, "parameters": {"apt": 102}, "rtcpFeedback": []},
            {"kind": "video", "mimeType": "video/H264", "preferredPayloadType": 106,
             "clockRate": 90000,
             "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": 1,
                            "profile-level-id": "42e01f"},
             "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 107,
             "clockRate": 90000, "parameters": {"apt": 106}, "rtcpFeedback": []},
            {"kind": "video", "mimeType": "video/H264", "preferredPayloadType": 112,
             "clockRate": 90000,
             "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": 1,
                            "profile-level-id": "4d001f"},
             "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 113,
             "clockRate": 90000, "parameters": {"apt": 112}, "rtcpFeedback": []},
        ],
        "headerExtensions": [
            {"kind": "audio", "uri": URI_AUDIO_LEVEL, "preferredId": 1,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "audio", "uri": URI_ABS_SEND_TIME, "preferredId": 2,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "audio", "uri": URI_TRANSPORT_WIDE_CC, "preferredId": 3,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "audio", "uri": URI_MID, "preferredId": 4,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_TOFFSET, "preferredId": 14,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_ABS_SEND_TIME, "preferredId": 2,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_VIDEO_ORIENTATION, "preferredId": 13,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_TRANSPORT_WIDE_CC, "preferredId": 3,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_PLAYOUT_DELAY, "preferredId": 12,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_MID, "preferredId": 4,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_RTP_STREAM_ID, "preferredId": 10,
             "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": URI_REPAIRED_RTP_STREAM_ID, "preferredId": 11,
             "preferredEncrypt": False, "direction": "sendrecv"},
        ],
    }


def vp8_simulcast_params() -> Obj:
    """What mediasoup-client sends for a Chrome VP8 simulcast producer."""
    return {
        "mid": "0",
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {},
             "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
             "parameters": {"apt": 96}, "rtcpFeedback": []},
        ],
        "headerExtensions": [
            {"uri": URI_MID, "id": 4, "encrypt": False, "parameters": {}},
            {"uri": URI_RTP_STREAM_ID, "id": 10, "encrypt": False, "parameters": {}},
            {"uri": URI_REPAIRED_RTP_STREAM_ID, "id": 11, "encrypt": False, "parameters": {}},
            {"uri": URI_ABS_SEND_TIME, "id": 2, "encrypt": False, "parameters": {}},
            {"uri": URI_TRANSPORT_WIDE_CC, "id": 3, "encrypt": False, "parameters": {}},
            {"uri": URI_VIDEO_ORIENTATION, "id": 13, "encrypt": False, "parameters": {}},
            {"uri": URI_TOFFSET, "id": 14, "encrypt": False, "parameters": {}},
            {"uri": URI_VIDEO_TIMING, "id": 7, "encrypt": False, "parameters": {}},
        ],
        "encodings": [
            {"rid": "r0", "active": True, "maxBitrate": 100000, "scalabilityMode": "L1T3"},
            {"rid": "r1", "active": True, "maxBitrate": 300000, "scalabilityMode": "L1T3"},
            {"rid": "r2", "active": True, "maxBitrate": 900000, "scalabilityMode": "L1T3"},
        ],
        "rtcp": {"cname": "Jc8uEhqZOqJwd8Ls", "reducedSize": True},
    }


def opus_params() -> Obj:
    """A Chrome opus producer as sent by mediasoup-client."""
    return {
        "mid": "1",
        "codecs": [
            {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
             "parameters": {"minptime": 10, "useinbandfec": 1, "sprop-stereo": 1},
             "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]},
        ],
        "headerExtensions": [
            {"uri": URI_AUDIO_LEVEL, "id": 1},
            {"uri": URI_ABS_SEND_TIME, "id": 2},
            {"uri": URI_TRANSPORT_WIDE_CC, "id": 3},
            {"uri": URI_MID, "id": 4},
        ],
        "encodings": [{"ssrc": 1111, "dtx": False}],
        "rtcp": {"cname": "audio-cname"},
    }


def h264_params(profile_level_id: str = "42e01f", packetization_mode: int = 1, **extra: Any) -> Obj:
    params: Obj = {"packetization-mode": packetization_mode, "profile-level-id": profile_level_id}
    params.update(extra)
    return {
        "codecs": [
            {"mimeType": "video/H264", "payloadType": 125, "clockRate": 90000,
             "parameters": params, "rtcpFeedback": copy.deepcopy(VIDEO_FB)},
            {"mimeType": "video/rtx", "payloadType": 107, "clockRate": 90000,
             "parameters": {"apt": 125}},
        ],
        "headerExtensions": [{"uri": URI_MID, "id": 4}],
        "encodings": [{"ssrc": 2222, "rtx": {"ssrc": 2223}}],
        "rtcp": {"cname": "h264-cname"},
    }


def vp9_params(profile_id: int | None) -> Obj:
    parameters = {} if profile_id is None else {"profile-id": profile_id}
    return {
        "codecs": [
            {"mimeType": "video/VP9", "payloadType": 98, "clockRate": 90000,
             "parameters": parameters},
        ],
        "encodings": [{"ssrc": 3333, "scalabilityMode": "L3T3_KEY"}],
        "rtcp": {"cname": "vp9"},
    }


@pytest.fixture
def router_caps() -> Obj:
    return dict(ortc.generate_router_rtp_capabilities(copy.deepcopy(ROUTER_MEDIA_CODECS)))


@pytest.fixture(autouse=True)
def _seed_rng() -> None:
    ortc.rng.seed(1234)


def produce(params: Obj, caps: Obj, kind: str) -> tuple[Obj, Obj]:
    """Validate producer params and return (mapping, consumable params)."""
    ortc.validate_rtp_parameters(params)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, caps)  # type: ignore[arg-type]
    consumable = ortc.get_consumable_rtp_parameters(kind, params, caps, mapping)  # type: ignore[arg-type]
    return dict(mapping), dict(consumable)


# ---------------------------------------------------------------------------
# Mutation helper for table-driven invalid cases.
# ---------------------------------------------------------------------------

DELETE = object()


def mutate(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    if value is DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


# ---------------------------------------------------------------------------
# Supported capabilities.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "uri", "preferred_id", "direction"),
    [
        ("audio", URI_MID, 1, "sendrecv"),
        ("video", URI_MID, 1, "sendrecv"),
        ("video", URI_RTP_STREAM_ID, 2, "recvonly"),
        ("video", URI_REPAIRED_RTP_STREAM_ID, 3, "recvonly"),
        ("audio", URI_ABS_SEND_TIME, 4, "sendrecv"),
        ("video", URI_ABS_SEND_TIME, 4, "sendrecv"),
        ("audio", URI_TRANSPORT_WIDE_CC, 5, "recvonly"),
        ("video", URI_TRANSPORT_WIDE_CC, 5, "sendrecv"),
        ("audio", URI_AUDIO_LEVEL, 10, "sendrecv"),
        ("video", URI_VIDEO_ORIENTATION, 11, "sendrecv"),
        ("video", URI_TOFFSET, 12, "sendrecv"),
        ("audio", URI_ABS_CAPTURE_TIME, 13, "sendrecv"),
        ("video", URI_ABS_CAPTURE_TIME, 13, "sendrecv"),
        ("video", URI_PLAYOUT_DELAY, 14, "sendrecv"),
    ],
)
def test_supported_header_extensions(kind: str, uri: str, preferred_id: int, direction: str) -> None:
    matches = [
        ext for ext in SUPPORTED_RTP_CAPABILITIES["headerExtensions"]
        if ext["kind"] == kind and ext["uri"] == uri
    ]
    assert matches == [
        {"kind": kind, "uri": uri, "preferredId": preferred_id, "preferredEncrypt": False,
         "direction": direction}
    ]


def test_supported_header_extensions_count() -> None:
    assert len(SUPPORTED_RTP_CAPABILITIES["headerExtensions"]) == 14


def test_supported_codecs() -> None:
    codecs = SUPPORTED_RTP_CAPABILITIES["codecs"]
    summary = [
        (c["mimeType"], c["clockRate"], c.get("channels"), c["parameters"].get("packetization-mode"))
        for c in codecs
    ]
    assert summary == [
        ("audio/opus", 48000, 2, None),
        ("video/VP8", 90000, None, None),
        ("video/VP9", 90000, None, None),
        ("video/H264", 90000, None, 1),
        ("video/H264", 90000, None, 0),
    ]
    assert [fb["type"] for fb in codecs[0]["rtcpFeedback"]] == ["nack", "transport-cc"]
    for codec in codecs[1:]:
        assert codec["rtcpFeedback"] == [
            {"type": "nack", "parameter": ""},
            {"type": "nack", "parameter": "pli"},
            {"type": "ccm", "parameter": "fir"},
            {"type": "goog-remb", "parameter": ""},
            {"type": "transport-cc", "parameter": ""},
        ]
    for codec in codecs[3:]:
        assert codec["parameters"]["level-asymmetry-allowed"] == 1


def test_supported_caps_are_already_normalised() -> None:
    caps = get_supported_rtp_capabilities()
    ortc.validate_rtp_capabilities(caps)
    assert caps == SUPPORTED_RTP_CAPABILITIES
    caps["codecs"].clear()
    assert SUPPORTED_RTP_CAPABILITIES["codecs"], "get_supported_rtp_capabilities must copy"


# ---------------------------------------------------------------------------
# Validation: defaults.
# ---------------------------------------------------------------------------


def test_validate_codec_capability_fills_defaults() -> None:
    codec: Obj = {"mimeType": "audio/opus", "clockRate": 48000}
    ortc.validate_rtp_codec_capability(codec)
    assert codec == {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000,
                     "channels": 1, "parameters": {}, "rtcpFeedback": []}


def test_validate_codec_capability_overrides_kind_and_drops_video_channels() -> None:
    codec: Obj = {"kind": "audio", "mimeType": "VIDEO/VP8", "clockRate": 90000, "channels": 2,
                  "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": None}],
                  "parameters": {"foo": None, "bar": 1.5}}
    ortc.validate_rtp_codec_capability(codec)
    assert codec["kind"] == "video"
    assert "channels" not in codec
    assert codec["rtcpFeedback"] == [{"type": "nack", "parameter": ""},
                                     {"type": "nack", "parameter": ""}]
    assert codec["parameters"] == {"foo": "", "bar": 1.5}


def test_validate_header_extension_fills_defaults() -> None:
    ext: Obj = {"kind": "video", "uri": URI_MID, "preferredId": 1}
    ortc.validate_rtp_header_extension(ext)
    assert ext == {"kind": "video", "uri": URI_MID, "preferredId": 1,
                   "preferredEncrypt": False, "direction": "sendrecv"}


def test_validate_rtp_capabilities_fills_defaults() -> None:
    caps: Obj = {}
    ortc.validate_rtp_capabilities(caps)
    assert caps == {"codecs": [], "headerExtensions": []}
    caps = {"codecs": None, "headerExtensions": None}
    ortc.validate_rtp_capabilities(caps)
    assert caps == {"codecs": [], "headerExtensions": []}


def test_validate_rtp_capabilities_accepts_browser_caps() -> None:
    caps = chrome_caps()
    expected = copy.deepcopy(caps)
    ortc.validate_rtp_capabilities(caps)
    assert caps == expected


def test_validate_rtp_parameters_fills_defaults() -> None:
    params: Obj = {
        "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000}],
        "encodings": [{"ssrc": 1}],
    }
    ortc.validate_rtp_parameters(params)
    assert params == {
        "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000,
                    "channels": 1, "parameters": {}, "rtcpFeedback": []}],
        "headerExtensions": [],
        "encodings": [{"ssrc": 1, "dtx": False}],
        "rtcp": {"reducedSize": True},
    }


def test_validate_rtp_parameters_keeps_explicit_values() -> None:
    params = vp8_simulcast_params()
    params["rtcp"]["reducedSize"] = False
    params["headerExtensions"][0] = {"uri": URI_MID, "id": 4}
    expected = copy.deepcopy(params)
    ortc.validate_rtp_parameters(params)
    expected["headerExtensions"][0] = {"uri": URI_MID, "id": 4, "encrypt": False, "parameters": {}}
    for encoding in expected["encodings"]:
        encoding["dtx"] = False
    assert params == expected
    assert params["rtcp"]["reducedSize"] is False


def test_validate_rtp_parameters_video_codec_loses_channels() -> None:
    params: Obj = {"codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                               "channels": 1}]}
    ortc.validate_rtp_parameters(params)
    assert "channels" not in params["codecs"][0]


def test_validate_encoding_and_rtcp_defaults() -> None:
    enc: Obj = {"rid": "h", "rtx": {"ssrc": 5}, "dtx": None}
    ortc.validate_rtp_encoding_parameters(enc)
    assert enc == {"rid": "h", "rtx": {"ssrc": 5}, "dtx": False}
    rtcp: Obj = {"cname": "x"}
    ortc.validate_rtcp_parameters(rtcp)
    assert rtcp == {"cname": "x", "reducedSize": True}
    fb: Obj = {"type": "ccm", "parameter": "fir"}
    ortc.validate_rtcp_feedback(fb)
    assert fb == {"type": "ccm", "parameter": "fir"}


# ---------------------------------------------------------------------------
# Validation: errors name the field.
# ---------------------------------------------------------------------------


def base_params() -> Obj:
    """Valid video params with two codecs, used as the base of invalid cases."""
    params = vp8_simulcast_params()
    params["encodings"][0] = {"ssrc": 1000, "rtx": {"ssrc": 1001}, "maxBitrate": 100000}
    return params


def audio_base_params() -> Obj:
    return opus_params()


INVALID_PARAMETERS: list[tuple[Callable[[], Obj], tuple[Any, ...], Any, str]] = [
    (base_params, ("mid",), 5, "rtpParameters.mid"),
    (base_params, ("codecs",), DELETE, "rtpParameters.codecs"),
    (base_params, ("codecs",), {"a": 1}, "rtpParameters.codecs"),
    (base_params, ("codecs", 1), "video/rtx", "rtpParameters.codecs[1]"),
    (base_params, ("codecs", 0, "mimeType"), DELETE, "rtpParameters.codecs[0].mimeType"),
    (base_params, ("codecs", 0, "mimeType"), 7, "rtpParameters.codecs[0].mimeType"),
    (base_params, ("codecs", 0, "mimeType"), "VP8", "rtpParameters.codecs[0].mimeType"),
    (base_params, ("codecs", 0, "mimeType"), "text/VP8", "rtpParameters.codecs[0].mimeType"),
    (base_params, ("codecs", 1, "payloadType"), DELETE, "rtpParameters.codecs[1].payloadType"),
    (base_params, ("codecs", 1, "payloadType"), "97", "rtpParameters.codecs[1].payloadType"),
    (base_params, ("codecs", 1, "payloadType"), 128, "rtpParameters.codecs[1].payloadType"),
    (base_params, ("codecs", 1, "payloadType"), True, "rtpParameters.codecs[1].payloadType"),
    (base_params, ("codecs", 1, "clockRate"), DELETE, "rtpParameters.codecs[1].clockRate"),
    (base_params, ("codecs", 1, "clockRate"), "90000", "rtpParameters.codecs[1].clockRate"),
    (base_params, ("codecs", 1, "clockRate"), 0, "rtpParameters.codecs[1].clockRate"),
    (audio_base_params, ("codecs", 0, "channels"), "2", "rtpParameters.codecs[0].channels"),
    (audio_base_params, ("codecs", 0, "channels"), 0, "rtpParameters.codecs[0].channels"),
    (base_params, ("codecs", 0, "parameters"), [1], "rtpParameters.codecs[0].parameters"),
    (base_params, ("codecs", 0, "parameters", "foo"), [1],
     "rtpParameters.codecs[0].parameters.foo"),
    (base_params, ("codecs", 0, "parameters", "foo"), True,
     "rtpParameters.codecs[0].parameters.foo"),
    (base_params, ("codecs", 1, "parameters", "apt"), "96",
     "rtpParameters.codecs[1].parameters.apt"),
    (base_params, ("codecs", 0, "rtcpFeedback"), "nack", "rtpParameters.codecs[0].rtcpFeedback"),
    (base_params, ("codecs", 0, "rtcpFeedback", 2), "ccm",
     "rtpParameters.codecs[0].rtcpFeedback[2]"),
    (base_params, ("codecs", 0, "rtcpFeedback", 2, "type"), DELETE,
     "rtpParameters.codecs[0].rtcpFeedback[2].type"),
    (base_params, ("codecs", 0, "rtcpFeedback", 2, "type"), "",
     "rtpParameters.codecs[0].rtcpFeedback[2].type"),
    (base_params, ("codecs", 0, "rtcpFeedback", 2, "parameter"), 5,
     "rtpParameters.codecs[0].rtcpFeedback[2].parameter"),
    (base_params, ("headerExtensions",), {}, "rtpParameters.headerExtensions"),
    (base_params, ("headerExtensions", 3), None, "rtpParameters.headerExtensions[3]"),
    (base_params, ("headerExtensions", 3, "uri"), DELETE,
     "rtpParameters.headerExtensions[3].uri"),
    (base_params, ("headerExtensions", 3, "id"), DELETE, "rtpParameters.headerExtensions[3].id"),
    (base_params, ("headerExtensions", 3, "id"), "2", "rtpParameters.headerExtensions[3].id"),
    (base_params, ("headerExtensions", 3, "id"), 0, "rtpParameters.headerExtensions[3].id"),
    (base_params, ("headerExtensions", 3, "id"), 256, "rtpParameters.headerExtensions[3].id"),
    (base_params, ("headerExtensions", 3, "encrypt"), "no",
     "rtpParameters.headerExtensions[3].encrypt"),
    (base_params, ("headerExtensions", 3, "parameters"), "x",
     "rtpParameters.headerExtensions[3].parameters"),
    (base_params, ("headerExtensions", 3, "parameters"), {"k": {}},
     "rtpParameters.headerExtensions[3].parameters.k"),
    (base_params, ("encodings",), "r0", "rtpParameters.encodings"),
    (base_params, ("encodings", 2), 5, "rtpParameters.encodings[2]"),
    (base_params, ("encodings", 0, "ssrc"), "1000", "rtpParameters.encodings[0].ssrc"),
    (base_params, ("encodings", 0, "ssrc"), -1, "rtpParameters.encodings[0].ssrc"),
    (base_params, ("encodings", 0, "ssrc"), 2**32, "rtpParameters.encodings[0].ssrc"),
    (base_params, ("encodings", 1, "rid"), 1, "rtpParameters.encodings[1].rid"),
    (base_params, ("encodings", 0, "rtx"), 1001, "rtpParameters.encodings[0].rtx"),
    (base_params, ("encodings", 0, "rtx", "ssrc"), DELETE,
     "rtpParameters.encodings[0].rtx.ssrc"),
    (base_params, ("encodings", 0, "rtx", "ssrc"), "1001",
     "rtpParameters.encodings[0].rtx.ssrc"),
    (base_params, ("encodings", 0, "dtx"), "yes", "rtpParameters.encodings[0].dtx"),
    (base_params, ("encodings", 0, "scalabilityMode"), 3,
     "rtpParameters.encodings[0].scalabilityMode"),
    (base_params, ("encodings", 0, "maxBitrate"), "fast",
     "rtpParameters.encodings[0].maxBitrate"),
    (base_params, ("encodings", 0, "codecPayloadType"), 300,
     "rtpParameters.encodings[0].codecPayloadType"),
    (base_params, ("rtcp",), "cname", "rtpParameters.rtcp"),
    (base_params, ("rtcp", "cname"), 5, "rtpParameters.rtcp.cname"),
    (base_params, ("rtcp", "reducedSize"), "yes", "rtpParameters.rtcp.reducedSize"),
]


@pytest.mark.parametrize(
    ("make", "path", "value", "field"),
    INVALID_PARAMETERS,
    ids=[f"{case[3]}={case[2]!r}" for case in INVALID_PARAMETERS],
)
def test_validate_rtp_parameters_invalid(
    make: Callable[[], Obj], path: tuple[Any, ...], value: Any, field: str
) -> None:
    params = make()
    mutate(params, path, value)
    with pytest.raises(InvalidParametersError, match="^" + re.escape(field) + ":"):
        ortc.validate_rtp_parameters(params)


def test_validate_rtp_parameters_message_example() -> None:
    params = base_params()
    del params["codecs"][1]["clockRate"]
    with pytest.raises(InvalidParametersError) as info:
        ortc.validate_rtp_parameters(params)
    assert str(info.value) == "rtpParameters.codecs[1].clockRate: missing or not a number"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [None, [], "params", 5])
def test_validate_rtp_parameters_not_object(value: Any) -> None:
    with pytest.raises(InvalidParametersError, match=r"^rtpParameters: not an object"):
        ortc.validate_rtp_parameters(value)


INVALID_CAPABILITIES: list[tuple[tuple[Any, ...], Any, str]] = [
    (("codecs",), {}, "rtpCapabilities.codecs"),
    (("codecs", 0), "opus", "rtpCapabilities.codecs[0]"),
    (("codecs", 0, "mimeType"), DELETE, "rtpCapabilities.codecs[0].mimeType"),
    (("codecs", 0, "mimeType"), "opus", "rtpCapabilities.codecs[0].mimeType"),
    (("codecs", 1, "clockRate"), DELETE, "rtpCapabilities.codecs[1].clockRate"),
    (("codecs", 1, "clockRate"), 9e4, "rtpCapabilities.codecs[1].clockRate"),
    (("codecs", 1, "preferredPayloadType"), "96", "rtpCapabilities.codecs[1].preferredPayloadType"),
    (("codecs", 1, "preferredPayloadType"), 200, "rtpCapabilities.codecs[1].preferredPayloadType"),
    (("codecs", 2, "parameters", "apt"), "96", "rtpCapabilities.codecs[2].parameters.apt"),
    (("codecs", 1, "rtcpFeedback", 0), {"parameter": "pli"},
     "rtpCapabilities.codecs[1].rtcpFeedback[0].type"),
    (("codecs", 0, "channels"), 2.5, "rtpCapabilities.codecs[0].channels"),
    (("headerExtensions",), "mid", "rtpCapabilities.headerExtensions"),
    (("headerExtensions", 4), 1, "rtpCapabilities.headerExtensions[4]"),
    (("headerExtensions", 4, "kind"), DELETE, "rtpCapabilities.headerExtensions[4].kind"),
    (("headerExtensions", 4, "kind"), "data", "rtpCapabilities.headerExtensions[4].kind"),
    (("headerExtensions", 4, "uri"), "", "rtpCapabilities.headerExtensions[4].uri"),
    (("headerExtensions", 4, "preferredId"), DELETE,
     "rtpCapabilities.headerExtensions[4].preferredId"),
    (("headerExtensions", 4, "preferredId"), "14",
     "rtpCapabilities.headerExtensions[4].preferredId"),
    (("headerExtensions", 4, "preferredId"), 0,
     "rtpCapabilities.headerExtensions[4].preferredId"),
    (("headerExtensions", 4, "preferredEncrypt"), "false",
     "rtpCapabilities.headerExtensions[4].preferredEncrypt"),
    (("headerExtensions", 4, "direction"), "both",
     "rtpCapabilities.headerExtensions[4].direction"),
    (("headerExtensions", 4, "direction"), 1,
     "rtpCapabilities.headerExtensions[4].direction"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    INVALID_CAPABILITIES,
    ids=[f"{case[2]}={case[1]!r}" for case in INVALID_CAPABILITIES],
)
def test_validate_rtp_capabilities_invalid(path: tuple[Any, ...], value: Any, field: str) -> None:
    caps = chrome_caps()
    mutate(caps, path, value)
    with pytest.raises(InvalidParametersError, match="^" + re.escape(field) + ":"):
        ortc.validate_rtp_capabilities(caps)


@pytest.mark.parametrize(
    ("validator", "value", "field"),
    [
        (ortc.validate_rtp_capabilities, "caps", "rtpCapabilities"),
        (ortc.validate_rtp_codec_capability, {"mimeType": "audio/opus"}, "codec.clockRate"),
        (ortc.validate_rtp_codec_parameters, {"mimeType": "audio/opus", "clockRate": 48000},
         "codec.payloadType"),
        (ortc.validate_rtp_header_extension, {"kind": "audio", "preferredId": 1},
         "headerExtension.uri"),
        (ortc.validate_rtp_header_extension_parameters, {"uri": URI_MID}, "headerExtension.id"),
        (ortc.validate_rtp_encoding_parameters, {"rid": 5}, "encoding.rid"),
        (ortc.validate_rtcp_parameters, [], "rtcp"),
        (ortc.validate_rtcp_feedback, {"type": 1}, "rtcpFeedback.type"),
    ],
)
def test_validator_default_paths(validator: Callable[[Any], None], value: Any, field: str) -> None:
    with pytest.raises(InvalidParametersError, match="^" + re.escape(field) + ":"):
        validator(value)


def test_validator_custom_path() -> None:
    with pytest.raises(InvalidParametersError, match=r"^remoteCaps\.codecs\[0\]\.clockRate:"):
        ortc.validate_rtp_capabilities({"codecs": [{"mimeType": "audio/opus"}]}, "remoteCaps")


# ---------------------------------------------------------------------------
# Router capabilities.
# ---------------------------------------------------------------------------


def test_router_capabilities_like_mediasoup() -> None:
    media_codecs: list[Obj] = [
        {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2,
         "parameters": {"useinbandfec": 1, "foo": "bar"}},
        {"kind": "video", "mimeType": "video/VP8", "preferredPayloadType": 125,
         "clockRate": 90000},
        {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
         "parameters": {"level-asymmetry-allowed": 1, "profile-level-id": "42e01f", "foo": "bar"},
         "rtcpFeedback": []},
    ]
    original = copy.deepcopy(media_codecs)
    caps = ortc.generate_router_rtp_capabilities(media_codecs)
    assert media_codecs == original, "input must not be mutated"
    video_fb = [
        {"type": "nack", "parameter": ""},
        {"type": "nack", "parameter": "pli"},
        {"type": "ccm", "parameter": "fir"},
        {"type": "goog-remb", "parameter": ""},
        {"type": "transport-cc", "parameter": ""},
    ]
    assert caps["codecs"] == [
        {"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100,
         "clockRate": 48000, "channels": 2, "parameters": {"useinbandfec": 1, "foo": "bar"},
         "rtcpFeedback": [{"type": "nack", "parameter": ""},
                          {"type": "transport-cc", "parameter": ""}]},
        {"kind": "video", "mimeType": "video/VP8", "preferredPayloadType": 125,
         "clockRate": 90000, "parameters": {}, "rtcpFeedback": video_fb},
        {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 101,
         "clockRate": 90000, "parameters": {"apt": 125}, "rtcpFeedback": []},
        {"kind": "video", "mimeType": "video/H264", "preferredPayloadType": 102,
         "clockRate": 90000,
         # No packetization-mode configured: the mode-0 entry matched, so the
         # default 0 is made explicit.
         "parameters": {"packetization-mode": 0, "level-asymmetry-allowed": 1,
                        "profile-level-id": "42e01f", "foo": "bar"},
         "rtcpFeedback": video_fb},
        {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 103,
         "clockRate": 90000, "parameters": {"apt": 102}, "rtcpFeedback": []},
    ]
    assert caps["headerExtensions"] == SUPPORTED_RTP_CAPABILITIES["headerExtensions"]


def test_router_capabilities_fixture_payload_types(router_caps: Obj) -> None:
    assert [(c["mimeType"], c["preferredPayloadType"], c["parameters"].get("apt"))
            for c in router_caps["codecs"]] == [
        ("audio/opus", PT_OPUS, None),
        ("video/VP8", PT_VP8, None),
        ("video/rtx", PT_VP8_RTX, PT_VP8),
        ("video/VP9", PT_VP9, None),
        ("video/rtx", PT_VP9_RTX, PT_VP9),
        ("video/H264", PT_H264_MAIN, None),
        ("video/rtx", PT_H264_MAIN_RTX, PT_H264_MAIN),
        ("video/H264", PT_H264_CB, None),
        ("video/rtx", PT_H264_CB_RTX, PT_H264_CB),
    ]
    assert router_caps["codecs"][1]["parameters"] == {"x-google-start-bitrate": 1000}
    assert router_caps["codecs"][3]["parameters"] == {"profile-id": 2}


def _pts(media_codecs: list[Obj]) -> list[int]:
    caps = ortc.generate_router_rtp_capabilities(media_codecs)
    return [c["preferredPayloadType"] for c in caps["codecs"]]


OPUS: Obj = {"mimeType": "audio/opus", "clockRate": 48000, "channels": 2}
VP8: Obj = {"mimeType": "video/VP8", "clockRate": 90000}


@pytest.mark.parametrize(
    ("media_codecs", "expected"),
    [
        ([OPUS, VP8], [100, 101, 102]),
        ([VP8, OPUS], [100, 101, 102]),
        # A preferred PT in the dynamic range is taken out of the pool.
        ([OPUS, {**VP8, "preferredPayloadType": 101}], [100, 101, 102]),
        # Preferred PTs are reserved up front: an earlier auto-assigned codec
        # never steals a later codec's preferred PT.
        ([OPUS, {**VP8, "preferredPayloadType": 100}], [101, 100, 102]),
        ([VP8, {**OPUS, "preferredPayloadType": 101}], [100, 102, 101]),
        # Two codecs asking for the same PT: the first gets it.
        ([{**OPUS, "preferredPayloadType": 111}, {**VP8, "preferredPayloadType": 111}],
         [111, 100, 101]),
        # Preferred PTs outside the dynamic range are honoured too.
        ([{**OPUS, "preferredPayloadType": 0}], [0]),
        ([{**VP8, "preferredPayloadType": 96}], [96, 100]),
    ],
)
def test_router_payload_type_assignment(media_codecs: list[Obj], expected: list[int]) -> None:
    assert _pts(copy.deepcopy(media_codecs)) == expected


def test_router_payload_types_wrap_to_96() -> None:
    pts = _pts([dict(VP8) for _ in range(16)])
    assert pts == [*range(100, 128), 96, 97, 98, 99]


@pytest.mark.parametrize("count", [17, 33])
def test_router_payload_types_exhausted(count: int) -> None:
    codecs = [dict(VP8) for _ in range(count)] if count == 17 else [dict(OPUS) for _ in range(count)]
    with pytest.raises(InvalidParametersError, match=r"^mediaCodecs\[\d+\]: cannot allocate"):
        ortc.generate_router_rtp_capabilities(codecs)


@pytest.mark.parametrize(
    ("codec", "named"),
    [
        ({"kind": "audio", "mimeType": "audio/chicken", "clockRate": 8000, "channels": 4},
         "audio/chicken"),
        ({"mimeType": "audio/opus", "clockRate": 48000, "channels": 1}, "audio/opus"),
        ({"mimeType": "audio/opus", "clockRate": 48000}, "audio/opus"),
        ({"mimeType": "audio/opus", "clockRate": 16000, "channels": 2}, "audio/opus"),
        ({"mimeType": "video/VP8", "clockRate": 8000}, "video/VP8"),
        ({"mimeType": "video/rtx", "clockRate": 90000}, "video/rtx"),
        ({"mimeType": "video/H265", "clockRate": 90000}, "video/H265"),
        ({"mimeType": "audio/PCMU", "clockRate": 8000}, "audio/PCMU"),
        ({"mimeType": "video/H264", "clockRate": 90000, "parameters": {"packetization-mode": 2}},
         "video/H264"),
        ({"mimeType": "video/H264", "clockRate": 90000,
          "parameters": {"profile-level-id": "zzzzzz"}}, "video/H264"),
    ],
)
def test_router_unsupported_codec(codec: Obj, named: str) -> None:
    with pytest.raises(UnsupportedError, match=re.escape(named)):
        ortc.generate_router_rtp_capabilities([dict(OPUS), codec])


@pytest.mark.parametrize(
    ("media_codecs", "field"),
    [
        ("opus", "mediaCodecs"),
        ({"codecs": []}, "mediaCodecs"),
        ([OPUS, "VP8"], "mediaCodecs[1]"),
        ([OPUS, {"mimeType": "video/VP8"}], "mediaCodecs[1].clockRate"),
        ([{**OPUS, "preferredPayloadType": "100"}], "mediaCodecs[0].preferredPayloadType"),
        ([{**OPUS, "parameters": {"stereo": [1]}}], "mediaCodecs[0].parameters.stereo"),
    ],
)
def test_router_invalid_media_codecs(media_codecs: Any, field: str) -> None:
    with pytest.raises(InvalidParametersError, match="^" + re.escape(field) + ":"):
        ortc.generate_router_rtp_capabilities(copy.deepcopy(media_codecs))


def test_router_empty_and_none() -> None:
    for value in (None, []):
        caps = ortc.generate_router_rtp_capabilities(value)
        assert caps["codecs"] == []
        assert caps["headerExtensions"] == SUPPORTED_RTP_CAPABILITIES["headerExtensions"]


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"packetization-mode": 1}, {"packetization-mode": 1, "level-asymmetry-allowed": 1}),
        ({"packetization-mode": "1"}, {"packetization-mode": "1", "level-asymmetry-allowed": 1}),
        ({}, {"packetization-mode": 0, "level-asymmetry-allowed": 1}),
        ({"packetization-mode": 0, "level-asymmetry-allowed": 0},
         {"packetization-mode": 0, "level-asymmetry-allowed": 0}),
        ({"profile-level-id": "640c1f", "packetization-mode": 1},
         {"packetization-mode": 1, "level-asymmetry-allowed": 1, "profile-level-id": "640c1f"}),
    ],
)
def test_router_h264_parameters(parameters: Obj, expected: Obj) -> None:
    caps = ortc.generate_router_rtp_capabilities(
        [{"mimeType": "video/H264", "clockRate": 90000, "parameters": parameters}]
    )
    assert caps["codecs"][0]["parameters"] == expected


def test_router_canonical_mime_type_and_supported_feedback() -> None:
    caps = ortc.generate_router_rtp_capabilities(
        [{"mimeType": "video/vp8", "clockRate": 90000, "rtcpFeedback": [{"type": "foo"}]}]
    )
    assert caps["codecs"][0]["mimeType"] == "video/VP8"
    assert caps["codecs"][0]["kind"] == "video"
    assert {fb["type"] for fb in caps["codecs"][0]["rtcpFeedback"]} == {
        "nack", "ccm", "goog-remb", "transport-cc"}


def test_router_capabilities_do_not_alias_supported(router_caps: Obj) -> None:
    router_caps["headerExtensions"][0]["preferredId"] = 99
    router_caps["codecs"][1]["rtcpFeedback"].clear()
    assert SUPPORTED_RTP_CAPABILITIES["headerExtensions"][0]["preferredId"] == 1
    assert SUPPORTED_RTP_CAPABILITIES["codecs"][1]["rtcpFeedback"]


def test_router_capabilities_are_valid_and_json(router_caps: Obj) -> None:
    before = copy.deepcopy(router_caps)
    ortc.validate_rtp_capabilities(router_caps)
    assert router_caps == before
    assert json.loads(json.dumps(router_caps)) == router_caps


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["opus", "vp8", "vp9", "h264-1", "h264-0"]),
            st.one_of(st.none(), st.integers(min_value=96, max_value=127)),
        ),
        max_size=8,
    )
)
def test_router_payload_types_property(choices: list[tuple[str, int | None]]) -> None:
    templates: dict[str, Obj] = {
        "opus": OPUS,
        "vp8": VP8,
        "vp9": {"mimeType": "video/VP9", "clockRate": 90000},
        "h264-1": {"mimeType": "video/H264", "clockRate": 90000,
                   "parameters": {"packetization-mode": 1}},
        "h264-0": {"mimeType": "video/H264", "clockRate": 90000},
    }
    media_codecs = []
    for name, pt in choices:
        codec = copy.deepcopy(templates[name])
        if pt is not None:
            codec["preferredPayloadType"] = pt
        media_codecs.append(codec)
    caps = ortc.generate_router_rtp_capabilities(media_codecs)
    codecs = caps["codecs"]
    pts = [c["preferredPayloadType"] for c in codecs]
    assert len(pts) == len(set(pts))
    assert all(pt in ortc.DYNAMIC_PAYLOAD_TYPES for pt in pts)
    claimed: set[int] = set()
    media = [c for c in codecs if not ortc.is_rtx_codec(c)]
    assert len(media) == len(media_codecs)
    for codec, config in zip(media, media_codecs):
        wanted = config.get("preferredPayloadType")
        if wanted is not None and wanted not in claimed:
            assert codec["preferredPayloadType"] == wanted
            claimed.add(wanted)
    for index, codec in enumerate(codecs):
        if codec["kind"] == "video" and not ortc.is_rtx_codec(codec):
            rtx = codecs[index + 1]
            assert ortc.is_rtx_codec(rtx)
            assert rtx["parameters"] == {"apt": codec["preferredPayloadType"]}


# ---------------------------------------------------------------------------
# Codec matching.
# ---------------------------------------------------------------------------


def _h264(params: Obj) -> Obj:
    return {"mimeType": "video/H264", "clockRate": 90000, "parameters": params}


@pytest.mark.parametrize(
    ("a", "b", "strict", "expected"),
    [
        (_h264({"packetization-mode": 1}), _h264({"packetization-mode": 0}), False, True),
        (_h264({"packetization-mode": 1}), _h264({"packetization-mode": 0}), True, False),
        (_h264({"packetization-mode": 1}), _h264({"packetization-mode": "1"}), True, True),
        (_h264({}), _h264({"packetization-mode": 0}), True, True),
        (_h264({"profile-level-id": "42e01f"}), _h264({"profile-level-id": "640c1f"}), True, False),
        (_h264({"profile-level-id": "42e01f"}), _h264({"profile-level-id": "42e034"}), True, True),
        (_h264({"profile-level-id": "42e01f"}), _h264({}), True, True),
        (_h264({"profile-level-id": "4d001f"}), _h264({}), True, False),
        (_h264({"profile-level-id": "bogus!"}), _h264({"profile-level-id": "bogus!"}), True, False),
        ({"mimeType": "video/VP9", "clockRate": 90000, "parameters": {}},
         {"mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 0}},
         True, True),
        ({"mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 2}},
         {"mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 0}},
         True, False),
        ({"mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 2}},
         {"mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 0}},
         False, True),
        ({"mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": "2"}},
         {"mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 2}},
         True, True),
        ({"mimeType": "AUDIO/OPUS", "clockRate": 48000, "channels": 2},
         {"mimeType": "audio/opus", "clockRate": 48000, "channels": 2}, True, True),
        ({"mimeType": "audio/opus", "clockRate": 48000, "channels": 1},
         {"mimeType": "audio/opus", "clockRate": 48000, "channels": 2}, False, False),
        ({"mimeType": "video/VP8", "clockRate": 90000},
         {"mimeType": "video/VP8", "clockRate": 48000}, False, False),
        ({"mimeType": "video/VP8", "clockRate": 90000},
         {"mimeType": "video/VP9", "clockRate": 90000}, False, False),
    ],
)
def test_match_codecs(a: Obj, b: Obj, strict: bool, expected: bool) -> None:
    assert ortc.match_codecs(a, b, strict=strict) is expected


@pytest.mark.parametrize(
    ("a_params", "b_params", "expected_plid"),
    [
        # Level asymmetry on both sides: a's level is kept.
        ({"profile-level-id": "42e034", "level-asymmetry-allowed": 1},
         {"profile-level-id": "42e01f", "level-asymmetry-allowed": 1}, "42e034"),
        # Not on both sides: the lower level wins.
        ({"profile-level-id": "42e034"},
         {"profile-level-id": "42e01f", "level-asymmetry-allowed": 1}, "42e01f"),
        # Level 1b is kept as 1b (between 1 and 1.1).
        ({"profile-level-id": "42f00b"}, {"profile-level-id": "42e01f"}, "42f00b"),
        # Neither has profile-level-id: stays absent.
        ({}, {}, None),
    ],
)
def test_match_codecs_modify_h264(a_params: Obj, b_params: Obj, expected_plid: str | None) -> None:
    a = _h264(dict(a_params))
    assert ortc.match_codecs(a, _h264(b_params), strict=True, modify=True)
    assert a["parameters"].get("profile-level-id") == expected_plid


def test_match_codecs_without_modify_leaves_params() -> None:
    a = _h264({"profile-level-id": "42e034"})
    assert ortc.match_codecs(a, _h264({"profile-level-id": "42e01f"}), strict=True)
    assert a["parameters"] == {"profile-level-id": "42e034"}


# ---------------------------------------------------------------------------
# Producer mapping.
# ---------------------------------------------------------------------------


def test_producer_mapping_vp8_simulcast(router_caps: Obj) -> None:
    params = vp8_simulcast_params()
    ortc.validate_rtp_parameters(params)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
    assert mapping["codecs"] == [
        {"payloadType": 96, "mappedPayloadType": PT_VP8},
        {"payloadType": 97, "mappedPayloadType": PT_VP8_RTX},
    ]
    encodings = mapping["encodings"]
    assert [e.get("rid") for e in encodings] == ["r0", "r1", "r2"]
    assert all("ssrc" not in e for e in encodings)
    assert [e["scalabilityMode"] for e in encodings] == ["L1T3"] * 3
    base = encodings[0]["mappedSsrc"]
    assert [e["mappedSsrc"] for e in encodings] == [base, base + 1, base + 2]
    assert 0 < base and base + 2 < 2**32
    # Each extension the router receives for video, mapped to its preferredId;
    # video-timing is unknown to the router and is dropped.
    assert mapping["headerExtensions"] == [
        {"id": 4, "mappedId": 1, "uri": URI_MID},
        {"id": 10, "mappedId": 2, "uri": URI_RTP_STREAM_ID},
        {"id": 11, "mappedId": 3, "uri": URI_REPAIRED_RTP_STREAM_ID},
        {"id": 2, "mappedId": 4, "uri": URI_ABS_SEND_TIME},
        {"id": 3, "mappedId": 5, "uri": URI_TRANSPORT_WIDE_CC},
        {"id": 13, "mappedId": 11, "uri": URI_VIDEO_ORIENTATION},
        {"id": 14, "mappedId": 12, "uri": URI_TOFFSET},
    ]
    assert json.loads(json.dumps(mapping)) == mapping


def test_producer_mapping_audio(router_caps: Obj) -> None:
    params = opus_params()
    ortc.validate_rtp_parameters(params)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
    assert mapping["codecs"] == [{"payloadType": 111, "mappedPayloadType": PT_OPUS}]
    assert mapping["encodings"] == [{"mappedSsrc": mapping["encodings"][0]["mappedSsrc"],
                                     "ssrc": 1111}]
    assert mapping["headerExtensions"] == [
        {"id": 1, "mappedId": 10, "uri": URI_AUDIO_LEVEL},
        {"id": 2, "mappedId": 4, "uri": URI_ABS_SEND_TIME},
        {"id": 3, "mappedId": 5, "uri": URI_TRANSPORT_WIDE_CC},  # recvonly for audio: received.
        {"id": 4, "mappedId": 1, "uri": URI_MID},
    ]


def test_producer_mapping_kind_override(router_caps: Obj) -> None:
    params = opus_params()
    params["headerExtensions"].append({"uri": URI_VIDEO_ORIENTATION, "id": 9})
    ortc.validate_rtp_parameters(params)
    audio = ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
    assert URI_VIDEO_ORIENTATION not in {e["uri"] for e in audio["headerExtensions"]}
    video = ortc.get_producer_rtp_parameters_mapping(params, router_caps, "video")  # type: ignore[arg-type]
    assert {e["uri"] for e in video["headerExtensions"]} == {
        URI_VIDEO_ORIENTATION, URI_ABS_SEND_TIME, URI_TRANSPORT_WIDE_CC, URI_MID}


def test_producer_mapping_ssrcs_follow_seed(router_caps: Obj) -> None:
    def mapped() -> list[int]:
        params = vp8_simulcast_params()
        ortc.validate_rtp_parameters(params)
        mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
        return [e["mappedSsrc"] for e in mapping["encodings"]]

    ortc.rng.seed(7)
    first = mapped()
    second = mapped()
    ortc.rng.seed(7)
    assert mapped() == first
    assert second != first


@pytest.mark.parametrize(
    ("params", "mapped_pt"),
    [
        (h264_params("42e01f"), PT_H264_CB),
        (h264_params("42e034", **{"level-asymmetry-allowed": 1}), PT_H264_CB),
        (h264_params("4d001f"), PT_H264_MAIN),
        (h264_params("4d0032"), PT_H264_MAIN),
        (vp9_params(2), PT_VP9),
        (vp9_params(None), None),
        (vp9_params(0), None),
        (h264_params("640c1f"), None),
        (h264_params("42e01f", packetization_mode=0), None),
        (h264_params("42001f"), None),  # Baseline != Constrained Baseline.
    ],
)
def test_producer_mapping_codec_matching(router_caps: Obj, params: Obj, mapped_pt: int | None) -> None:
    ortc.validate_rtp_parameters(params)
    if mapped_pt is None:
        with pytest.raises(UnsupportedError, match=re.escape(params["codecs"][0]["mimeType"])):
            ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
        return
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
    assert mapping["codecs"][0] == {"payloadType": params["codecs"][0]["payloadType"],
                                    "mappedPayloadType": mapped_pt}
    if len(params["codecs"]) > 1:
        assert mapping["codecs"][1] == {"payloadType": 107, "mappedPayloadType": mapped_pt + 1}


@pytest.mark.parametrize(
    ("producer_plid", "asymmetry", "rewritten"),
    [
        ("42e034", True, "42e034"),  # Both allow asymmetry: producer's level kept.
        ("42e034", False, "42e01f"),  # Capped to the router's level.
        ("42e00a", False, "42e00a"),
        ("42f00b", False, "42f00b"),  # Level 1b survives.
    ],
)
def test_producer_mapping_rewrites_h264_level(
    router_caps: Obj, producer_plid: str, asymmetry: bool, rewritten: str
) -> None:
    extra = {"level-asymmetry-allowed": 1} if asymmetry else {}
    params = h264_params(producer_plid, **extra)
    ortc.validate_rtp_parameters(params)
    ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
    assert params["codecs"][0]["parameters"]["profile-level-id"] == rewritten


def test_producer_mapping_unsupported_codec() -> None:
    caps = ortc.generate_router_rtp_capabilities(
        [dict(OPUS), {"mimeType": "video/H264", "clockRate": 90000,
                      "parameters": {"packetization-mode": 1, "profile-level-id": "640032"}}]
    )
    params = {"codecs": [{"mimeType": "video/VP8", "payloadType": 120, "clockRate": 90000}],
              "encodings": [{"ssrc": 11111111}], "rtcp": {"cname": "qwerty1234"}}
    ortc.validate_rtp_parameters(params)
    with pytest.raises(UnsupportedError, match=r"video/VP8.*120"):
        ortc.get_producer_rtp_parameters_mapping(params, caps)  # type: ignore[arg-type]


def test_producer_mapping_rtx_without_media_codec(router_caps: Obj) -> None:
    params = vp8_simulcast_params()
    params["codecs"][1]["parameters"]["apt"] = 55
    ortc.validate_rtp_parameters(params)
    with pytest.raises(InvalidParametersError,
                       match=r"^rtpParameters\.codecs\[1\]\.parameters\.apt:"):
        ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]


def test_producer_mapping_rtx_missing_apt(router_caps: Obj) -> None:
    params = vp8_simulcast_params()
    params["codecs"][1]["parameters"] = {}
    ortc.validate_rtp_parameters(params)
    with pytest.raises(InvalidParametersError,
                       match=r"^rtpParameters\.codecs\[1\]\.parameters\.apt:"):
        ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]


def test_producer_mapping_rtx_not_in_router(router_caps: Obj) -> None:
    params = opus_params()
    params["codecs"].append({"mimeType": "audio/rtx", "payloadType": 112, "clockRate": 48000,
                             "parameters": {"apt": 111}})
    ortc.validate_rtp_parameters(params)
    with pytest.raises(UnsupportedError, match=r"no RTX codec.*audio/opus"):
        ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]


def test_producer_mapping_rtx_listed_before_media(router_caps: Obj) -> None:
    params = vp8_simulcast_params()
    params["codecs"].reverse()
    ortc.validate_rtp_parameters(params)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
    # Media codecs first, then RTX (as mediasoup).
    assert mapping["codecs"] == [
        {"payloadType": 96, "mappedPayloadType": PT_VP8},
        {"payloadType": 97, "mappedPayloadType": PT_VP8_RTX},
    ]


# ---------------------------------------------------------------------------
# Consumable parameters.
# ---------------------------------------------------------------------------


def test_consumable_video(router_caps: Obj) -> None:
    params = vp8_simulcast_params()
    mapping, consumable = produce(params, router_caps, "video")
    assert consumable["codecs"] == [
        {"mimeType": "video/VP8", "payloadType": PT_VP8, "clockRate": 90000,
         "parameters": {},  # The producer's parameters, not the router's.
         "rtcpFeedback": router_caps["codecs"][1]["rtcpFeedback"]},
        {"mimeType": "video/rtx", "payloadType": PT_VP8_RTX, "clockRate": 90000,
         "parameters": {"apt": PT_VP8}, "rtcpFeedback": []},
    ]
    assert consumable["encodings"] == [
        {"ssrc": m["mappedSsrc"], "active": True, "maxBitrate": bitrate,
         "scalabilityMode": "L1T3", "dtx": False}
        for m, bitrate in zip(mapping["encodings"], (100000, 300000, 900000))
    ]
    # Router video extensions it may send (recvonly rid/rrid excluded).
    assert consumable["headerExtensions"] == [
        {"uri": uri, "id": ext_id, "encrypt": False, "parameters": {}}
        for uri, ext_id in [
            (URI_MID, 1), (URI_ABS_SEND_TIME, 4), (URI_TRANSPORT_WIDE_CC, 5),
            (URI_VIDEO_ORIENTATION, 11), (URI_TOFFSET, 12), (URI_ABS_CAPTURE_TIME, 13),
            (URI_PLAYOUT_DELAY, 14),
        ]
    ]
    assert consumable["rtcp"] == {"cname": "Jc8uEhqZOqJwd8Ls", "reducedSize": True}
    assert json.loads(json.dumps(consumable)) == consumable


def test_consumable_audio(router_caps: Obj) -> None:
    params = opus_params()
    _, consumable = produce(params, router_caps, "audio")
    assert consumable["codecs"] == [
        {"mimeType": "audio/opus", "payloadType": PT_OPUS, "clockRate": 48000, "channels": 2,
         "parameters": {"minptime": 10, "useinbandfec": 1, "sprop-stereo": 1},
         "rtcpFeedback": [{"type": "nack", "parameter": ""},
                          {"type": "transport-cc", "parameter": ""}]},
    ]
    # transport-cc is recvonly for audio in the router: not sent to consumers.
    assert [e["uri"] for e in consumable["headerExtensions"]] == [
        URI_MID, URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_ABS_CAPTURE_TIME]
    assert [e["id"] for e in consumable["headerExtensions"]] == [1, 4, 10, 13]


def test_consumable_does_not_alias_producer(router_caps: Obj) -> None:
    params = opus_params()
    _, consumable = produce(params, router_caps, "audio")
    consumable["codecs"][0]["parameters"]["minptime"] = 99
    consumable["encodings"][0]["dtx"] = True
    assert params["codecs"][0]["parameters"]["minptime"] == 10
    assert params["encodings"][0]["dtx"] is False


def test_consumable_strips_rid_rtx_codec_payload_type(router_caps: Obj) -> None:
    params = h264_params("42e01f")
    params["encodings"][0]["codecPayloadType"] = 125
    mapping, consumable = produce(params, router_caps, "video")
    assert consumable["encodings"] == [{"ssrc": mapping["encodings"][0]["mappedSsrc"],
                                        "dtx": False}]
    assert [c["payloadType"] for c in consumable["codecs"]] == [PT_H264_CB, PT_H264_CB_RTX]


def test_consumable_without_cname(router_caps: Obj) -> None:
    params = opus_params()
    del params["rtcp"]
    _, consumable = produce(params, router_caps, "audio")
    assert consumable["rtcp"] == {"reducedSize": True}


def test_consumable_inconsistent_mapping(router_caps: Obj) -> None:
    params = vp8_simulcast_params()
    ortc.validate_rtp_parameters(params)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)  # type: ignore[arg-type]
    mapping["encodings"].pop()
    with pytest.raises(InvalidParametersError, match=r"^rtpMapping\.encodings:"):
        ortc.get_consumable_rtp_parameters("video", params, router_caps, mapping)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# can_consume.
# ---------------------------------------------------------------------------


def _without_codecs(caps: Obj, predicate: Callable[[Obj], bool]) -> Obj:
    caps["codecs"] = [c for c in caps["codecs"] if not predicate(c)]
    return caps


def _mime(name: str) -> Callable[[Obj], bool]:
    return lambda c: c["mimeType"].lower() == name


@pytest.mark.parametrize(
    ("make_params", "kind", "caps_edit", "expected"),
    [
        (vp8_simulcast_params, "video", lambda caps: caps, True),
        (vp8_simulcast_params, "video", lambda caps: _without_codecs(caps, _mime("video/vp8")),
         False),
        (vp8_simulcast_params, "video", lambda caps: _without_codecs(caps, _mime("video/rtx")),
         True),
        (opus_params, "audio", lambda caps: caps, True),
        (opus_params, "audio", lambda caps: _without_codecs(caps, _mime("audio/opus")), False),
        (opus_params, "audio",
         lambda caps: {**caps, "codecs": [{**caps["codecs"][0], "channels": 1}]}, False),
        (lambda: h264_params("42e01f"), "video", lambda caps: caps, True),
        (lambda: h264_params("4d0032"), "video", lambda caps: caps, True),  # Main 4d001f in caps.
        (lambda: h264_params("4d0032"), "video",
         lambda caps: _without_codecs(
             caps, lambda c: c["parameters"].get("profile-level-id") == "4d001f"),
         False),
        (lambda: h264_params("42e01f"), "video",
         lambda caps: _without_codecs(
             caps, lambda c: c["parameters"].get("profile-level-id") == "42e01f"),
         False),  # Only Baseline 42001f left: not the same profile.
        (lambda: vp9_params(2), "video", lambda caps: caps, True),
        (lambda: vp9_params(2), "video",
         lambda caps: _without_codecs(caps, lambda c: c["parameters"].get("profile-id") == 2),
         False),
        (vp8_simulcast_params, "video", lambda caps: {}, False),
    ],
)
def test_can_consume(
    router_caps: Obj,
    make_params: Callable[[], Obj],
    kind: str,
    caps_edit: Callable[[Obj], Obj],
    expected: bool,
) -> None:
    _, consumable = produce(make_params(), router_caps, kind)
    assert ortc.can_consume(consumable, caps_edit(chrome_caps())) is expected  # type: ignore[arg-type]


def test_can_consume_only_rtx_matches(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    consumable["codecs"].reverse()  # RTX first: matching list would start with RTX.
    caps = _without_codecs(chrome_caps(), _mime("video/vp8"))
    assert ortc.can_consume(consumable, caps) is False  # type: ignore[arg-type]


def test_can_consume_invalid_caps(router_caps: Obj) -> None:
    _, consumable = produce(opus_params(), router_caps, "audio")
    caps = chrome_caps()
    del caps["codecs"][0]["clockRate"]
    with pytest.raises(InvalidParametersError, match=r"^rtpCapabilities\.codecs\[0\]\.clockRate:"):
        ortc.can_consume(consumable, caps)  # type: ignore[arg-type]


def test_can_consume_normalises_caps(router_caps: Obj) -> None:
    _, consumable = produce(opus_params(), router_caps, "audio")
    caps: Obj = {"codecs": [{"mimeType": "audio/opus", "clockRate": 48000, "channels": 2}]}
    assert ortc.can_consume(consumable, caps) is True  # type: ignore[arg-type]
    assert caps["headerExtensions"] == []
    assert caps["codecs"][0]["kind"] == "audio"


# ---------------------------------------------------------------------------
# Consumer parameters.
# ---------------------------------------------------------------------------


def _consumer(consumable: Obj, caps: Obj, **kwargs: Any) -> Obj:
    return dict(ortc.get_consumer_rtp_parameters(consumable, caps, **kwargs))  # type: ignore[arg-type]


def test_consumer_vp8_simulcast(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    consumer = _consumer(consumable, chrome_caps())
    assert consumer["codecs"] == [
        {"mimeType": "video/VP8", "payloadType": PT_VP8, "clockRate": 90000, "parameters": {},
         # Chrome's feedback, minus goog-remb since transport-cc is negotiated.
         "rtcpFeedback": [{"type": "transport-cc", "parameter": ""},
                          {"type": "ccm", "parameter": "fir"},
                          {"type": "nack", "parameter": ""},
                          {"type": "nack", "parameter": "pli"}]},
        {"mimeType": "video/rtx", "payloadType": PT_VP8_RTX, "clockRate": 90000,
         "parameters": {"apt": PT_VP8}, "rtcpFeedback": []},
    ]
    [encoding] = consumer["encodings"]
    assert isinstance(encoding["ssrc"], int)
    assert encoding["rtx"] == {"ssrc": encoding["ssrc"] + 1}
    assert encoding["scalabilityMode"] == "L3T3"
    assert encoding["maxBitrate"] == 900000
    # URIs kept, ids taken from the remote's preferredId (Chrome's ids);
    # abs-capture-time is not in Chrome's caps and is dropped.
    assert consumer["headerExtensions"] == [
        {"uri": URI_MID, "id": 4, "encrypt": False, "parameters": {}},
        {"uri": URI_ABS_SEND_TIME, "id": 2, "encrypt": False, "parameters": {}},
        {"uri": URI_TRANSPORT_WIDE_CC, "id": 3, "encrypt": False, "parameters": {}},
        {"uri": URI_VIDEO_ORIENTATION, "id": 13, "encrypt": False, "parameters": {}},
        {"uri": URI_TOFFSET, "id": 14, "encrypt": False, "parameters": {}},
        {"uri": URI_PLAYOUT_DELAY, "id": 12, "encrypt": False, "parameters": {}},
    ]
    assert consumer["rtcp"] == {"cname": "Jc8uEhqZOqJwd8Ls", "reducedSize": True}
    assert json.loads(json.dumps(consumer)) == consumer


def test_consumer_like_mediasoup_h264() -> None:
    caps = ortc.generate_router_rtp_capabilities([
        dict(OPUS),
        {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
         "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": 1,
                        "profile-level-id": "4d0032", "bar": "lalala"}},
    ])
    params: Obj = {
        "codecs": [
            {"mimeType": "video/H264", "payloadType": 111, "clockRate": 90000,
             "parameters": {"foo": 1234, "packetization-mode": 1, "profile-level-id": "4d0032"},
             "rtcpFeedback": [{"type": "nack", "parameter": ""},
                              {"type": "nack", "parameter": "pli"},
                              {"type": "goog-remb", "parameter": ""}]},
            {"mimeType": "video/rtx", "payloadType": 112, "clockRate": 90000,
             "parameters": {"apt": 111}, "rtcpFeedback": []},
        ],
        "headerExtensions": [{"uri": URI_MID, "id": 1}, {"uri": URI_VIDEO_ORIENTATION, "id": 2}],
        "encodings": [
            {"ssrc": 11111111, "rtx": {"ssrc": 11111112}, "maxBitrate": 111111,
             "scalabilityMode": "L1T3"},
            {"ssrc": 21111111, "rtx": {"ssrc": 21111112}, "maxBitrate": 222222,
             "scalabilityMode": "L1T3"},
            {"rid": "high", "maxBitrate": 333333, "scalabilityMode": "L1T3"},
        ],
        "rtcp": {"cname": "qwerty1234"},
    }
    mapping, consumable = produce(params, dict(caps), "video")
    assert mapping["codecs"] == [{"payloadType": 111, "mappedPayloadType": 101},
                                 {"payloadType": 112, "mappedPayloadType": 102}]
    remote: Obj = {
        "codecs": [
            {"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100,
             "clockRate": 48000, "channels": 2, "parameters": {}, "rtcpFeedback": []},
            {"kind": "video", "mimeType": "video/H264", "preferredPayloadType": 101,
             "clockRate": 90000,
             "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032", "baz": "LOLOLO"},
             "rtcpFeedback": [{"type": "nack", "parameter": ""},
                              {"type": "nack", "parameter": "pli"},
                              {"type": "foo", "parameter": "FOO"}]},
            {"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 102,
             "clockRate": 90000, "parameters": {"apt": 101}, "rtcpFeedback": []},
        ],
        "headerExtensions": [
            {"kind": "audio", "uri": URI_MID, "preferredId": 1},
            {"kind": "video", "uri": URI_MID, "preferredId": 1},
            {"kind": "video", "uri": URI_RTP_STREAM_ID, "preferredId": 2},
            {"kind": "audio", "uri": URI_AUDIO_LEVEL, "preferredId": 8},
            {"kind": "video", "uri": URI_VIDEO_ORIENTATION, "preferredId": 11},
            {"kind": "video", "uri": URI_TOFFSET, "preferredId": 12},
        ],
    }
    consumer = _consumer(consumable, remote)
    assert consumer["codecs"] == [
        {"mimeType": "video/H264", "payloadType": 101, "clockRate": 90000,
         "parameters": {"foo": 1234, "packetization-mode": 1, "profile-level-id": "4d0032"},
         "rtcpFeedback": [{"type": "nack", "parameter": ""},
                          {"type": "nack", "parameter": "pli"},
                          {"type": "foo", "parameter": "FOO"}]},
        {"mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000,
         "parameters": {"apt": 101}, "rtcpFeedback": []},
    ]
    [encoding] = consumer["encodings"]
    assert encoding["scalabilityMode"] == "L3T3"
    assert encoding["maxBitrate"] == 333333
    assert encoding["rtx"]["ssrc"] == encoding["ssrc"] + 1
    assert consumer["headerExtensions"] == [
        {"uri": URI_MID, "id": 1, "encrypt": False, "parameters": {}},
        {"uri": URI_VIDEO_ORIENTATION, "id": 11, "encrypt": False, "parameters": {}},
        {"uri": URI_TOFFSET, "id": 12, "encrypt": False, "parameters": {}},
    ]
    assert consumer["rtcp"] == {"cname": "qwerty1234", "reducedSize": True}
    pipe = dict(ortc.get_pipe_consumer_rtp_parameters(consumable, enable_rtx=False))  # type: ignore[arg-type]
    assert pipe["codecs"] == [
        {"mimeType": "video/H264", "payloadType": 101, "clockRate": 90000,
         "parameters": {"foo": 1234, "packetization-mode": 1, "profile-level-id": "4d0032"},
         "rtcpFeedback": [{"type": "nack", "parameter": "pli"},
                          {"type": "ccm", "parameter": "fir"}]},
    ]
    assert len(pipe["encodings"]) == 3
    assert all("rtx" not in e and e["scalabilityMode"] == "L1T3" for e in pipe["encodings"])
    ssrcs = [e["ssrc"] for e in pipe["encodings"]]
    assert ssrcs == [ssrcs[0], ssrcs[0] + 1, ssrcs[0] + 2]
    assert [e["uri"] for e in pipe["headerExtensions"]] == [
        URI_VIDEO_ORIENTATION, URI_TOFFSET, URI_ABS_CAPTURE_TIME, URI_PLAYOUT_DELAY]
    assert pipe["rtcp"] == {"cname": "qwerty1234", "reducedSize": True}


def test_pipe_consumer_with_rtx(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    pipe = dict(ortc.get_pipe_consumer_rtp_parameters(consumable, enable_rtx=True))  # type: ignore[arg-type]
    assert [c["mimeType"] for c in pipe["codecs"]] == ["video/VP8", "video/rtx"]
    assert pipe["codecs"][0]["rtcpFeedback"] == [
        {"type": "nack", "parameter": ""},
        {"type": "nack", "parameter": "pli"},
        {"type": "ccm", "parameter": "fir"},
    ]
    rtx_ssrcs = [e["rtx"]["ssrc"] for e in pipe["encodings"]]
    assert rtx_ssrcs == [rtx_ssrcs[0], rtx_ssrcs[0] + 1, rtx_ssrcs[0] + 2]


@pytest.mark.parametrize(
    ("enable_rtx", "drop_remote_rtx", "expect_rtx"),
    [(True, False, True), (False, False, False), (True, True, False), (False, True, False)],
)
def test_consumer_rtx(
    router_caps: Obj, enable_rtx: bool, drop_remote_rtx: bool, expect_rtx: bool
) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    caps = chrome_caps()
    if drop_remote_rtx:
        _without_codecs(caps, _mime("video/rtx"))
    consumer = _consumer(consumable, caps, enable_rtx=enable_rtx)
    mime_types = [c["mimeType"] for c in consumer["codecs"]]
    assert mime_types == (["video/VP8", "video/rtx"] if expect_rtx else ["video/VP8"])
    assert ("rtx" in consumer["encodings"][0]) is expect_rtx
    feedback = consumer["codecs"][0]["rtcpFeedback"]
    # Without enable_rtx, plain NACK is removed (NACK PLI stays).
    assert ({"type": "nack", "parameter": ""} in feedback) is enable_rtx
    assert {"type": "nack", "parameter": "pli"} in feedback


def test_consumer_drops_rtx_whose_media_codec_is_gone(router_caps: Obj) -> None:
    # Consumable has H264 Main + its RTX. Remote supports the RTX (by PT-less
    # match on mimeType/clockRate) but not the Main profile, and VP8 instead.
    _, consumable = produce(h264_params("4d001f"), router_caps, "video")
    _, vp8 = produce(vp8_simulcast_params(), router_caps, "video")
    consumable["codecs"] = vp8["codecs"][:1] + consumable["codecs"]
    caps = _without_codecs(chrome_caps(), lambda c: c["parameters"].get("profile-level-id") == "4d001f")
    consumer = _consumer(consumable, caps)
    assert [(c["mimeType"], c["payloadType"]) for c in consumer["codecs"]] == [
        ("video/VP8", PT_VP8)]
    assert "rtx" not in consumer["encodings"][0]


@pytest.mark.parametrize(
    ("kept_uris", "present", "absent"),
    [
        ({URI_TRANSPORT_WIDE_CC, URI_ABS_SEND_TIME}, "transport-cc", "goog-remb"),
        ({URI_TRANSPORT_WIDE_CC}, "transport-cc", "goog-remb"),
        ({URI_ABS_SEND_TIME}, "goog-remb", "transport-cc"),
        (set(), None, "transport-cc"),
        (set(), None, "goog-remb"),
    ],
)
def test_consumer_bwe_feedback(
    router_caps: Obj, kept_uris: set[str], present: str | None, absent: str
) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    caps = chrome_caps()
    bwe = {URI_TRANSPORT_WIDE_CC, URI_ABS_SEND_TIME}
    caps["headerExtensions"] = [
        e for e in caps["headerExtensions"] if e["uri"] not in bwe or e["uri"] in kept_uris
    ]
    consumer = _consumer(consumable, caps)
    for codec in consumer["codecs"]:
        types = {fb["type"] for fb in codec["rtcpFeedback"]}
        assert absent not in types
        if present is not None and codec["mimeType"] == "video/VP8":
            assert present in types


def test_consumer_no_compatible_codecs(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    caps = _without_codecs(chrome_caps(), _mime("video/vp8"))
    with pytest.raises(UnsupportedError, match="no compatible media codecs"):
        _consumer(consumable, caps)


def test_consumer_no_compatible_codecs_audio(router_caps: Obj) -> None:
    _, consumable = produce(opus_params(), router_caps, "audio")
    with pytest.raises(UnsupportedError, match="no compatible media codecs"):
        _consumer(consumable, {"codecs": [], "headerExtensions": []})


def test_consumer_invalid_remote_caps(router_caps: Obj) -> None:
    _, consumable = produce(opus_params(), router_caps, "audio")
    caps = chrome_caps()
    caps["headerExtensions"][0]["preferredId"] = "1"
    with pytest.raises(InvalidParametersError,
                       match=r"^rtpCapabilities\.headerExtensions\[0\]\.preferredId:"):
        _consumer(consumable, caps)


def test_consumer_audio_extension_ids_per_kind(router_caps: Obj) -> None:
    _, consumable = produce(opus_params(), router_caps, "audio")
    caps = chrome_caps()
    # Same URI, different ids per kind: the audio consumer must use audio's.
    for ext in caps["headerExtensions"]:
        if ext["kind"] == "video" and ext["uri"] == URI_MID:
            ext["preferredId"] = 9
    consumer = _consumer(consumable, caps)
    assert consumer["codecs"][0]["payloadType"] == PT_OPUS
    # The router does not send transport-cc for audio (recvonly), only
    # abs-send-time is negotiated: transport-cc feedback is dropped.
    assert consumer["codecs"][0]["rtcpFeedback"] == []
    assert consumer["headerExtensions"] == [
        {"uri": URI_MID, "id": 4, "encrypt": False, "parameters": {}},
        {"uri": URI_ABS_SEND_TIME, "id": 2, "encrypt": False, "parameters": {}},
        {"uri": URI_AUDIO_LEVEL, "id": 1, "encrypt": False, "parameters": {}},
    ]
    assert consumer["encodings"] == [{"ssrc": consumer["encodings"][0]["ssrc"]}]


def test_consumer_extension_id_collision_in_remote_caps(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    caps = chrome_caps()
    for ext in caps["headerExtensions"]:
        if ext["kind"] == "video" and ext["uri"] == URI_TOFFSET:
            ext["preferredId"] = 13  # Same as video-orientation.
    consumer = _consumer(consumable, caps)
    ids = [e["id"] for e in consumer["headerExtensions"]]
    assert len(ids) == len(set(ids))
    assert URI_TOFFSET not in {e["uri"] for e in consumer["headerExtensions"]}


def test_consumer_extension_ids_same_as_router_for_mediasoup_client(router_caps: Obj) -> None:
    # mediasoup-client derives its device caps from the router caps, so the
    # remote preferredIds equal the router's and nothing gets rewritten.
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    consumer = _consumer(consumable, copy.deepcopy(router_caps))
    assert consumer["headerExtensions"] == consumable["headerExtensions"]


@pytest.mark.parametrize(
    ("modes", "bitrates", "expected_mode"),
    [
        ([None], [None], None),
        (["L1T3"], [None], "L1T3"),
        (["L3T3_KEY"], [500000], "L3T3_KEY"),
        ([None, None, None], [None, None, None], "L3T1"),
        (["L1T2", "L1T2"], [100, 200], "L2T2"),
        (["bogus", None], [None, 5], "L2T1"),
    ],
)
def test_consumer_single_encoding(
    router_caps: Obj, modes: list[str | None], bitrates: list[int | None], expected_mode: str | None
) -> None:
    params = vp8_simulcast_params()
    params["encodings"] = []
    for index, (mode, bitrate) in enumerate(zip(modes, bitrates)):
        encoding: Obj = {"rid": f"r{index}"}
        if mode is not None:
            encoding["scalabilityMode"] = mode
        if bitrate is not None:
            encoding["maxBitrate"] = bitrate
        params["encodings"].append(encoding)
    _, consumable = produce(params, router_caps, "video")
    [encoding] = _consumer(consumable, chrome_caps())["encodings"]
    assert encoding.get("scalabilityMode") == expected_mode
    max_bitrate = max((b for b in bitrates if b), default=None)
    assert encoding.get("maxBitrate") == max_bitrate


def test_consumer_pipe_keeps_encodings(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    consumer = _consumer(consumable, chrome_caps(), pipe=True)
    encodings = consumer["encodings"]
    assert len(encodings) == 3
    ssrcs = [e["ssrc"] for e in encodings]
    assert ssrcs == [ssrcs[0], ssrcs[0] + 1, ssrcs[0] + 2]
    rtx = [e["rtx"]["ssrc"] for e in encodings]
    assert rtx == [rtx[0], rtx[0] + 1, rtx[0] + 2]
    assert [e["maxBitrate"] for e in encodings] == [100000, 300000, 900000]
    no_rtx = _consumer(consumable, chrome_caps(), pipe=True, enable_rtx=False)
    assert all("rtx" not in e for e in no_rtx["encodings"])


def test_consumer_does_not_alias_consumable(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    before = copy.deepcopy(consumable)
    consumer = _consumer(consumable, chrome_caps())
    consumer["codecs"][0]["parameters"]["x"] = 1
    consumer["codecs"][0]["rtcpFeedback"].clear()
    consumer["rtcp"]["cname"] = "changed"
    consumer["headerExtensions"][0]["parameters"]["y"] = 2
    assert consumable == before


def test_consumer_ssrcs_follow_seed(router_caps: Obj) -> None:
    _, consumable = produce(vp8_simulcast_params(), router_caps, "video")
    ortc.rng.seed(99)
    first = _consumer(consumable, chrome_caps())["encodings"]
    ortc.rng.seed(99)
    assert _consumer(consumable, chrome_caps())["encodings"] == first


def test_consumer_h264_profile_selection(router_caps: Obj) -> None:
    # A Constrained Baseline producer is consumable by a remote that has both
    # Baseline (42001f) and Constrained Baseline (42e01f): only the latter matches.
    _, consumable = produce(h264_params("42e01f"), router_caps, "video")
    consumer = _consumer(consumable, chrome_caps())
    assert [(c["mimeType"], c["payloadType"]) for c in consumer["codecs"]] == [
        ("video/H264", PT_H264_CB), ("video/rtx", PT_H264_CB_RTX)]


def test_scalability_mode_parse() -> None:
    assert ortc.parse_scalability_mode("L3T3_KEY") == (3, 3, True)
    assert ortc.parse_scalability_mode("S2T1") == (2, 1, False)
    assert ortc.parse_scalability_mode("L1T3") == (1, 3, False)
    assert ortc.parse_scalability_mode(None) == (1, 1, False)
    assert ortc.parse_scalability_mode("foo") == (1, 1, False)


# ---------------------------------------------------------------------------
# End to end.
# ---------------------------------------------------------------------------


def test_end_to_end_json_round_trip(router_caps: Obj) -> None:
    """Everything survives a JSON round trip (the wire form)."""
    for make, kind in ((vp8_simulcast_params, "video"), (opus_params, "audio"),
                       (lambda: h264_params("4d0032"), "video"), (lambda: vp9_params(2), "video")):
        params = json.loads(json.dumps(make()))
        mapping, consumable = produce(params, router_caps, kind)
        caps = json.loads(json.dumps(chrome_caps()))
        assert ortc.can_consume(consumable, caps)  # type: ignore[arg-type]
        consumer = _consumer(consumable, caps)
        ortc.validate_rtp_parameters(copy.deepcopy(consumer))
        for obj in (mapping, consumable, consumer):
            assert json.loads(json.dumps(obj)) == obj
