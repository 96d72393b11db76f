"""ORTC negotiation of RTP capabilities and parameters (mediasoup's ``ortc.ts``).

All inputs and outputs are plain dicts in the camelCase wire form described in
:mod:`sfu.rtp_parameters`.

* ``validate_*`` check types and required fields, fill mediasoup's defaults
  and mutate their argument in place. Every problem raises
  :class:`~sfu.errors.InvalidParametersError` whose message starts with the
  path of the faulty field, e.g.
  ``"rtpParameters.codecs[1].clockRate: missing or not a number"``.
* :func:`generate_router_rtp_capabilities` builds a router's capabilities
  from its configured media codecs.
* :func:`get_producer_rtp_parameters_mapping`,
  :func:`get_consumable_rtp_parameters`, :func:`can_consume` and
  :func:`get_consumer_rtp_parameters` implement the producer -> router ->
  consumer pipeline.

Random SSRCs come from the module-level :data:`rng`; tests may seed it.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Mapping
from typing import Any, Final, cast

from sfu import h264
from sfu.errors import InvalidParametersError, UnsupportedError
from sfu.rtp_parameters import (
    MediaKind,
    RtcpFeedback,
    RtpCapabilities,
    RtpCodecCapability,
    RtpCodecParameters,
    RtpEncodingMapping,
    RtpEncodingParameters,
    RtpHeaderExtensionMapping,
    RtpHeaderExtensionParameters,
    RtpMapping,
    RtpParameters,
)
from sfu.supported_rtp_capabilities import (
    URI_ABS_SEND_TIME,
    URI_MID,
    URI_TRANSPORT_WIDE_CC,
    get_supported_rtp_capabilities,
)

DYNAMIC_PAYLOAD_TYPES: Final[tuple[int, ...]] = (
    *range(100, 128),
    *range(96, 100),
)
"""Dynamic payload types in mediasoup's allocation order: 100..127 then 96..99."""

HEADER_EXTENSION_DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})

rng: random.Random = random.Random()
"""Source of random SSRCs. Seed it (``ortc.rng.seed(n)``) for reproducible tests."""

_MIME_TYPE_RE: Final = re.compile(r"^(audio|video)/(.+)", re.IGNORECASE)
_RTX_MIME_TYPE_RE: Final = re.compile(r".+/rtx$", re.IGNORECASE)
_SCALABILITY_MODE_RE: Final = re.compile(r"^[LS]([1-9]\d?)T([1-9]\d?)(_KEY)?")

_MAX_PAYLOAD_TYPE: Final = 127
_MAX_EXTENSION_ID: Final = 255
_MAX_SSRC: Final = 0xFFFFFFFF

Obj = dict[str, Any]


# ---------------------------------------------------------------------------
# Small type helpers.
# ---------------------------------------------------------------------------


def _fail(path: str, problem: str) -> InvalidParametersError:
    return InvalidParametersError(f"{path}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _present(obj: Mapping[str, Any], key: str) -> bool:
    """A key counts as absent when missing or ``None`` (JSON ``null``)."""
    return obj.get(key) is not None


def _require_object(value: Any, path: str) -> Obj:
    if not isinstance(value, dict):
        raise _fail(path, "not an object")
    return value


def _require_int_in(obj: Obj, key: str, path: str, low: int, high: int) -> None:
    value = obj.get(key)
    if not _is_int(value):
        raise _fail(f"{path}.{key}", "missing or not a number")
    if not low <= value <= high:
        raise _fail(f"{path}.{key}", f"out of range [{low}, {high}]")


def _optional_int_in(obj: Obj, key: str, path: str, low: int, high: int) -> None:
    if _present(obj, key):
        value = obj[key]
        if not _is_int(value) or not low <= value <= high:
            raise _fail(f"{path}.{key}", f"not an integer in [{low}, {high}]")


def _require_str(obj: Obj, key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(f"{path}.{key}", "missing or not a string")
    return value


def _optional_str(obj: Obj, key: str, path: str) -> None:
    if _present(obj, key) and not isinstance(obj[key], str):
        raise _fail(f"{path}.{key}", "not a string")


def _default_bool(obj: Obj, key: str, path: str, default: bool) -> None:
    if not _present(obj, key):
        obj[key] = default
    elif not isinstance(obj[key], bool):
        raise _fail(f"{path}.{key}", "not a boolean")


def _default_list(obj: Obj, key: str, path: str) -> list[Any]:
    if not _present(obj, key):
        obj[key] = []
    elif not isinstance(obj[key], list):
        raise _fail(f"{path}.{key}", "not an array")
    return cast(list[Any], obj[key])


def _media_kind(mime_type: str, path: str) -> MediaKind:
    match = _MIME_TYPE_RE.match(mime_type)
    if match is None:
        raise _fail(f"{path}.mimeType", f"invalid {mime_type!r} (expected audio/... or video/...)")
    return cast(MediaKind, match.group(1).lower())


def is_rtx_codec(codec: Mapping[str, Any]) -> bool:
    """True if the codec's mimeType is ``audio/rtx`` or ``video/rtx``."""
    return bool(_RTX_MIME_TYPE_RE.match(str(codec.get("mimeType", ""))))


def _kind_of(codec: Mapping[str, Any]) -> MediaKind | None:
    match = _MIME_TYPE_RE.match(str(codec.get("mimeType", "")))
    return cast(MediaKind, match.group(1).lower()) if match else None


def _generate_random_number() -> int:
    """Random SSRC-like number (same range as mediasoup: 9 decimal digits)."""
    return rng.randint(100_000_000, 999_999_999)


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


def validate_rtp_capabilities(caps: Any, path: str = "rtpCapabilities") -> None:
    """Validate RtpCapabilities; default ``codecs``/``headerExtensions`` to ``[]``."""
    caps = _require_object(caps, path)
    for i, codec in enumerate(_default_list(caps, "codecs", path)):
        validate_rtp_codec_capability(codec, f"{path}.codecs[{i}]")
    for i, ext in enumerate(_default_list(caps, "headerExtensions", path)):
        validate_rtp_header_extension(ext, f"{path}.headerExtensions[{i}]")


def _validate_codec_common(codec: Obj, path: str) -> MediaKind:
    """Checks shared by codec capabilities and codec parameters.

    Validates mimeType, clockRate, channels (default 1 for audio, removed for
    video), parameters and rtcpFeedback. Returns the kind from the mimeType.
    """
    kind = _media_kind(_require_str(codec, "mimeType", path), path)
    clock_rate = codec.get("clockRate")
    if not _is_int(clock_rate) or clock_rate <= 0:
        raise _fail(f"{path}.clockRate", "missing or not a number")
    if kind == "audio":
        if not _present(codec, "channels"):
            codec["channels"] = 1
        elif not _is_int(codec["channels"]) or codec["channels"] < 1:
            raise _fail(f"{path}.channels", "not a positive integer")
    else:
        codec.pop("channels", None)
    _validate_parameters(codec, path, check_apt=True)
    for i, fb in enumerate(_default_list(codec, "rtcpFeedback", path)):
        validate_rtcp_feedback(fb, f"{path}.rtcpFeedback[{i}]")
    return kind


def _validate_parameters(obj: Obj, path: str, *, check_apt: bool) -> None:
    """Default ``parameters`` to ``{}``; values must be strings or numbers."""
    if not _present(obj, "parameters"):
        obj["parameters"] = {}
    params = _require_object(obj["parameters"], f"{path}.parameters")
    for key, value in params.items():
        if not isinstance(key, str):
            raise _fail(f"{path}.parameters", f"non-string key {key!r}")
        if value is None:
            params[key] = value = ""
        if not isinstance(value, str) and not _is_number(value):
            raise _fail(f"{path}.parameters.{key}", "not a string or number")
        if check_apt and key == "apt" and not _is_int(value):
            raise _fail(f"{path}.parameters.apt", "not a number")


def validate_rtp_codec_capability(codec: Any, path: str = "codec") -> None:
    """Validate an RtpCodecCapability; ``kind`` is overwritten from mimeType."""
    codec = _require_object(codec, path)
    codec["kind"] = _validate_codec_common(codec, path)
    _optional_int_in(codec, "preferredPayloadType", path, 0, _MAX_PAYLOAD_TYPE)


def validate_rtcp_feedback(fb: Any, path: str = "rtcpFeedback") -> None:
    """Validate an RtcpFeedback; ``parameter`` defaults to ``""``."""
    fb = _require_object(fb, path)
    _require_str(fb, "type", path)
    if not _present(fb, "parameter"):
        fb["parameter"] = ""
    elif not isinstance(fb["parameter"], str):
        raise _fail(f"{path}.parameter", "not a string")


def validate_rtp_header_extension(ext: Any, path: str = "headerExtension") -> None:
    """Validate an RtpHeaderExtension (capability).

    ``preferredEncrypt`` defaults to ``False`` and ``direction`` to
    ``"sendrecv"``.
    """
    ext = _require_object(ext, path)
    if ext.get("kind") not in ("audio", "video"):
        raise _fail(f"{path}.kind", "missing or not 'audio'/'video'")
    _require_str(ext, "uri", path)
    _require_int_in(ext, "preferredId", path, 1, _MAX_EXTENSION_ID)
    _default_bool(ext, "preferredEncrypt", path, False)
    if not _present(ext, "direction"):
        ext["direction"] = "sendrecv"
    elif ext["direction"] not in HEADER_EXTENSION_DIRECTIONS:
        raise _fail(f"{path}.direction", f"invalid {ext['direction']!r}")


def validate_rtp_parameters(params: Any, path: str = "rtpParameters") -> None:
    """Validate RtpParameters.

    ``codecs`` is mandatory; ``headerExtensions`` and ``encodings`` default to
    ``[]`` and ``rtcp`` to ``{}`` (then filled by
    :func:`validate_rtcp_parameters`).
    """
    params = _require_object(params, path)
    _optional_str(params, "mid", path)
    if not isinstance(params.get("codecs"), list):
        raise _fail(f"{path}.codecs", "missing or not an array")
    for i, codec in enumerate(params["codecs"]):
        validate_rtp_codec_parameters(codec, f"{path}.codecs[{i}]")
    for i, ext in enumerate(_default_list(params, "headerExtensions", path)):
        validate_rtp_header_extension_parameters(ext, f"{path}.headerExtensions[{i}]")
    for i, encoding in enumerate(_default_list(params, "encodings", path)):
        validate_rtp_encoding_parameters(encoding, f"{path}.encodings[{i}]")
    if not _present(params, "rtcp"):
        params["rtcp"] = {}
    validate_rtcp_parameters(params["rtcp"], f"{path}.rtcp")


def validate_rtp_codec_parameters(codec: Any, path: str = "codec") -> None:
    """Validate RtpCodecParameters (a codec with a concrete payloadType)."""
    codec = _require_object(codec, path)
    _validate_codec_common(codec, path)
    _require_int_in(codec, "payloadType", path, 0, _MAX_PAYLOAD_TYPE)


def validate_rtp_header_extension_parameters(ext: Any, path: str = "headerExtension") -> None:
    """Validate RtpHeaderExtensionParameters; ``encrypt`` defaults to ``False``."""
    ext = _require_object(ext, path)
    _require_str(ext, "uri", path)
    _require_int_in(ext, "id", path, 1, _MAX_EXTENSION_ID)
    _default_bool(ext, "encrypt", path, False)
    _validate_parameters(ext, path, check_apt=False)


def validate_rtp_encoding_parameters(enc: Any, path: str = "encoding") -> None:
    """Validate RtpEncodingParameters; ``dtx`` defaults to ``False``."""
    enc = _require_object(enc, path)
    _optional_int_in(enc, "ssrc", path, 0, _MAX_SSRC)
    _optional_str(enc, "rid", path)
    _optional_int_in(enc, "codecPayloadType", path, 0, _MAX_PAYLOAD_TYPE)
    if _present(enc, "rtx"):
        rtx = _require_object(enc["rtx"], f"{path}.rtx")
        _require_int_in(rtx, "ssrc", f"{path}.rtx", 0, _MAX_SSRC)
    _default_bool(enc, "dtx", path, False)
    _optional_str(enc, "scalabilityMode", path)
    if _present(enc, "maxBitrate") and (not _is_number(enc["maxBitrate"]) or enc["maxBitrate"] < 0):
        raise _fail(f"{path}.maxBitrate", "not a non-negative number")


def validate_rtcp_parameters(rtcp: Any, path: str = "rtcp") -> None:
    """Validate RtcpParameters; ``reducedSize`` defaults to ``True``."""
    rtcp = _require_object(rtcp, path)
    _optional_str(rtcp, "cname", path)
    _default_bool(rtcp, "reducedSize", path, True)


# ---------------------------------------------------------------------------
# Codec matching.
# ---------------------------------------------------------------------------


def _int_param(params: Mapping[str, Any], key: str, default: int = 0) -> Any:
    """A numeric fmtp parameter as int (``"1"`` == ``1``); absent -> default."""
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _match_h264_strict(a: Obj, b: Obj, modify: bool) -> bool:
    a_params = a.get("parameters") or {}
    b_params = b.get("parameters") or {}
    if _int_param(a_params, "packetization-mode") != _int_param(b_params, "packetization-mode"):
        return False
    if not h264.is_same_profile(a_params, b_params):
        return False
    try:
        selected = h264.generate_profile_level_id_for_answer(a_params, b_params)
    except UnsupportedError:
        return False
    if modify:
        a["parameters"] = a_params
        if selected:
            a_params["profile-level-id"] = selected
        else:
            a_params.pop("profile-level-id", None)
    return True


def match_codecs(a: Obj, b: Obj, *, strict: bool = False, modify: bool = False) -> bool:
    """True if codecs ``a`` and ``b`` are the same codec.

    Compares mimeType (case-insensitive), clockRate and channels. With
    ``strict`` also H264 packetization-mode/profile (and a valid answer
    level) and VP9 profile-id. With ``modify`` the H264 ``profile-level-id``
    of ``a`` is rewritten to the negotiated answer.
    """
    mime_type = str(a.get("mimeType", "")).lower()
    if mime_type != str(b.get("mimeType", "")).lower():
        return False
    if a.get("clockRate") != b.get("clockRate") or a.get("channels") != b.get("channels"):
        return False
    if not strict:
        return True
    if mime_type == "video/h264":
        return _match_h264_strict(a, b, modify)
    if mime_type == "video/vp9":
        a_params = a.get("parameters") or {}
        b_params = b.get("parameters") or {}
        return bool(_int_param(a_params, "profile-id") == _int_param(b_params, "profile-id"))
    return True


def _match_supported_codec(media_codec: Obj, supported_codec: Obj) -> bool:
    """Loose match used for router capabilities: also H264 packetization-mode."""
    if not match_codecs(media_codec, supported_codec, strict=False):
        return False
    if str(media_codec["mimeType"]).lower() != "video/h264":
        return True
    media_mode = _int_param(media_codec["parameters"], "packetization-mode")
    return bool(media_mode == _int_param(supported_codec["parameters"], "packetization-mode"))


# ---------------------------------------------------------------------------
# Router capabilities.
# ---------------------------------------------------------------------------


def _claim_preferred_payload_types(codecs: list[Obj]) -> list[int | None]:
    """First codec asking for a given preferredPayloadType gets it; later ones don't."""
    claimed: set[int] = set()
    honoured: list[int | None] = []
    for codec in codecs:
        pt = codec.get("preferredPayloadType")
        if pt is not None and pt not in claimed:
            claimed.add(pt)
            honoured.append(pt)
        else:
            honoured.append(None)
    return honoured


def _take_payload_type(pool: list[int], path: str) -> int:
    if not pool:
        raise _fail(path, "cannot allocate more dynamic payload types")
    return pool.pop(0)


def _check_h264_profile(codec: Obj, path: str) -> None:
    value = codec["parameters"].get("profile-level-id")
    if value and h264.parse_profile_level_id(value) is None:
        raise UnsupportedError(
            f"{path}: unsupported H264 profile-level-id {value!r} "
            f"[mimeType:{codec['mimeType']}]"
        )


def _router_codec(media: Obj, supported: Obj, payload_type: int) -> RtpCodecCapability:
    codec: Obj = {
        "kind": supported["kind"],
        "mimeType": supported["mimeType"],
        "preferredPayloadType": payload_type,
        "clockRate": supported["clockRate"],
    }
    if "channels" in supported:
        codec["channels"] = supported["channels"]
    codec["parameters"] = {**supported["parameters"], **copy.deepcopy(media["parameters"])}
    codec["rtcpFeedback"] = copy.deepcopy(supported["rtcpFeedback"])
    return cast(RtpCodecCapability, codec)


def _rtx_codec(codec: RtpCodecCapability, payload_type: int) -> RtpCodecCapability:
    return {
        "kind": codec["kind"],
        "mimeType": f"{codec['kind']}/rtx",
        "preferredPayloadType": payload_type,
        "clockRate": codec["clockRate"],
        "parameters": {"apt": codec["preferredPayloadType"]},
        "rtcpFeedback": [],
    }


def generate_router_rtp_capabilities(media_codecs: Any = None) -> RtpCapabilities:
    """Router RTP capabilities for the configured media codecs.

    Each media codec is validated (on a copy) and matched against
    :data:`~sfu.supported_rtp_capabilities.SUPPORTED_RTP_CAPABILITIES` by
    mimeType, clockRate, channels and, for H264, packetization-mode. The
    result takes the supported codec's rtcpFeedback, the merged parameters
    (supported ones overridden by configured ones) and a payload type: the
    configured ``preferredPayloadType`` if no earlier codec claimed it,
    otherwise the next free dynamic one. Every video codec is followed by a
    ``video/rtx`` codec with ``apt``. All supported header extensions are
    included.

    Raises :class:`UnsupportedError` naming the mimeType for codecs that are
    not supported, and :class:`InvalidParametersError` for malformed input or
    when dynamic payload types run out.
    """
    if media_codecs is None:
        media_codecs = []
    if not isinstance(media_codecs, list):
        raise _fail("mediaCodecs", "not an array")
    codecs: list[Obj] = copy.deepcopy(media_codecs)
    for i, media in enumerate(codecs):
        validate_rtp_codec_capability(media, f"mediaCodecs[{i}]")
    supported = get_supported_rtp_capabilities()
    honoured = _claim_preferred_payload_types(codecs)
    pool = [pt for pt in DYNAMIC_PAYLOAD_TYPES if pt not in honoured]
    result: list[RtpCodecCapability] = []
    for i, (media, preferred) in enumerate(zip(codecs, honoured)):
        path = f"mediaCodecs[{i}]"
        matched = next((s for s in supported["codecs"] if _match_supported_codec(media, s)), None)
        if matched is None:
            raise UnsupportedError(
                f"{path}: media codec not supported [mimeType:{media['mimeType']}, "
                f"clockRate:{media['clockRate']}, channels:{media.get('channels')}]"
            )
        payload_type = preferred
        if payload_type is None:
            payload_type = matched.get("preferredPayloadType")
        if payload_type is None:
            payload_type = _take_payload_type(pool, path)
        codec = _router_codec(media, matched, payload_type)
        if codec["mimeType"].lower() == "video/h264":
            _check_h264_profile(cast(Obj, codec), path)
        result.append(codec)
        if codec["kind"] == "video":
            result.append(_rtx_codec(codec, _take_payload_type(pool, path)))
    return {"codecs": result, "headerExtensions": supported["headerExtensions"]}


# ---------------------------------------------------------------------------
# Producer -> router mapping.
# ---------------------------------------------------------------------------


def _map_media_codecs(params: Obj, caps: Obj) -> list[tuple[Obj, Obj]]:
    """Pair every non-RTX producer codec with a router codec (strict match)."""
    pairs: list[tuple[Obj, Obj]] = []
    for codec in params["codecs"]:
        if is_rtx_codec(codec):
            continue
        cap = next(
            (c for c in caps["codecs"] if match_codecs(codec, c, strict=True, modify=True)), None
        )
        if cap is None:
            raise UnsupportedError(
                f"unsupported codec [mimeType:{codec['mimeType']}, "
                f"payloadType:{codec['payloadType']}]"
            )
        pairs.append((codec, cap))
    return pairs


def _map_rtx_codecs(
    params: Obj, caps: Obj, media_pairs: list[tuple[Obj, Obj]]
) -> list[tuple[Obj, Obj]]:
    """Pair every producer RTX codec with the router RTX codec of its media codec."""
    pairs: list[tuple[Obj, Obj]] = []
    for i, codec in enumerate(params["codecs"]):
        if not is_rtx_codec(codec):
            continue
        apt = (codec.get("parameters") or {}).get("apt")
        media_cap = next((cap for media, cap in media_pairs if media["payloadType"] == apt), None)
        if media_cap is None:
            raise _fail(
                f"rtpParameters.codecs[{i}].parameters.apt",
                f"no media codec with payloadType {apt!r} for RTX payloadType "
                f"{codec['payloadType']}",
            )
        rtx_cap = _find_rtx_codec(caps, media_cap["preferredPayloadType"])
        if rtx_cap is None:
            raise UnsupportedError(
                f"no RTX codec for capability codec [mimeType:{media_cap['mimeType']}, "
                f"payloadType:{media_cap['preferredPayloadType']}]"
            )
        pairs.append((codec, rtx_cap))
    return pairs


def _find_rtx_codec(caps: Obj, apt: Any) -> Obj | None:
    """The RTX codec in ``caps`` whose ``apt`` is the given payload type."""
    return next(
        (c for c in caps["codecs"] if is_rtx_codec(c) and c["parameters"].get("apt") == apt),
        None,
    )


def _map_encodings(encodings: list[Obj]) -> list[RtpEncodingMapping]:
    """Consecutive mapped SSRCs from one random base, one per encoding."""
    mapped_ssrc = _generate_random_number()
    result: list[RtpEncodingMapping] = []
    for offset, encoding in enumerate(encodings):
        entry: RtpEncodingMapping = {"mappedSsrc": mapped_ssrc + offset}
        if encoding.get("rid"):
            entry["rid"] = encoding["rid"]
        if encoding.get("ssrc") is not None:
            entry["ssrc"] = encoding["ssrc"]
        if encoding.get("scalabilityMode"):
            entry["scalabilityMode"] = encoding["scalabilityMode"]
        result.append(entry)
    return result


def _map_header_extensions(
    extensions: list[Obj], caps: Obj, kind: MediaKind | None
) -> list[RtpHeaderExtensionMapping]:
    """Producer extensions the router receives for ``kind`` -> router preferredId."""
    result: list[RtpHeaderExtensionMapping] = []
    for ext in extensions:
        cap = next(
            (
                c
                for c in caps["headerExtensions"]
                if c["kind"] == kind
                and c["uri"] == ext["uri"]
                and c.get("direction", "sendrecv") in ("sendrecv", "recvonly")
            ),
            None,
        )
        if cap is not None:
            result.append({"id": ext["id"], "mappedId": cap["preferredId"], "uri": ext["uri"]})
    return result


def get_producer_rtp_parameters_mapping(
    params: RtpParameters, caps: RtpCapabilities, kind: MediaKind | None = None
) -> RtpMapping:
    """Map a producer's payload types, SSRCs and extension ids to the router's.

    ``params`` must have been validated with :func:`validate_rtp_parameters`
    and ``caps`` are the router's capabilities. Like mediasoup, matching H264
    codecs get their ``profile-level-id`` rewritten in ``params`` to the
    negotiated value. ``kind`` defaults to the kind of the first codec.

    Raises :class:`UnsupportedError` if a codec (or the RTX of a codec) is not
    in the router capabilities, :class:`InvalidParametersError` if an RTX
    codec's ``apt`` names no media codec.
    """
    p = cast(Obj, params)
    c = cast(Obj, caps)
    media_pairs = _map_media_codecs(p, c)
    rtx_pairs = _map_rtx_codecs(p, c, media_pairs)
    if kind is None and p["codecs"]:
        kind = _kind_of(p["codecs"][0])
    return {
        "codecs": [
            {"payloadType": codec["payloadType"], "mappedPayloadType": cap["preferredPayloadType"]}
            for codec, cap in media_pairs + rtx_pairs
        ],
        "encodings": _map_encodings(p.get("encodings") or []),
        "headerExtensions": _map_header_extensions(p.get("headerExtensions") or [], c, kind),
    }


# ---------------------------------------------------------------------------
# Consumable parameters.
# ---------------------------------------------------------------------------


def _consumable_codec(codec: Obj, caps: Obj, mapping: RtpMapping) -> list[RtpCodecParameters]:
    """Router version of a producer media codec, followed by its router RTX codec."""
    mapped_pt = next(
        (
            entry["mappedPayloadType"]
            for entry in mapping["codecs"]
            if entry["payloadType"] == codec["payloadType"]
        ),
        None,
    )
    cap = next((c for c in caps["codecs"] if c["preferredPayloadType"] == mapped_pt), None)
    if cap is None:
        raise _fail("rtpMapping.codecs", f"no mapping for payloadType {codec['payloadType']}")
    result: Obj = {
        "mimeType": cap["mimeType"],
        "payloadType": cap["preferredPayloadType"],
        "clockRate": cap["clockRate"],
    }
    if "channels" in cap:
        result["channels"] = cap["channels"]
    result["parameters"] = copy.deepcopy(codec.get("parameters") or {})  # Producer's.
    result["rtcpFeedback"] = copy.deepcopy(cap["rtcpFeedback"])
    codecs = [cast(RtpCodecParameters, result)]
    rtx = _find_rtx_codec(caps, result["payloadType"])
    if rtx is not None:
        codecs.append(
            {
                "mimeType": rtx["mimeType"],
                "payloadType": rtx["preferredPayloadType"],
                "clockRate": rtx["clockRate"],
                "parameters": copy.deepcopy(rtx["parameters"]),
                "rtcpFeedback": copy.deepcopy(rtx["rtcpFeedback"]),
            }
        )
    return codecs


def _consumable_header_extensions(kind: str, caps: Obj) -> list[RtpHeaderExtensionParameters]:
    return [
        {
            "uri": ext["uri"],
            "id": ext["preferredId"],
            "encrypt": ext.get("preferredEncrypt", False),
            "parameters": {},
        }
        for ext in caps["headerExtensions"]
        if ext["kind"] == kind and ext.get("direction", "sendrecv") in ("sendrecv", "sendonly")
    ]


def _consumable_encodings(encodings: list[Obj], mapping: RtpMapping) -> list[RtpEncodingParameters]:
    if len(encodings) != len(mapping["encodings"]):
        raise _fail("rtpMapping.encodings", "length differs from rtpParameters.encodings")
    result: list[RtpEncodingParameters] = []
    for encoding, mapped in zip(encodings, mapping["encodings"]):
        rest = {
            k: copy.deepcopy(v)
            for k, v in encoding.items()
            if k not in ("ssrc", "rid", "rtx", "codecPayloadType")
        }
        result.append(cast(RtpEncodingParameters, {"ssrc": mapped["mappedSsrc"], **rest}))
    return result


def get_consumable_rtp_parameters(
    kind: MediaKind | str, params: RtpParameters, caps: RtpCapabilities, mapping: RtpMapping
) -> RtpParameters:
    """The router-side version of a producer's parameters, shared by its consumers.

    Codecs are the router's (payload types, rtcpFeedback; each followed by
    its router RTX codec) with the producer's codec parameters. Header
    extensions are the router's for ``kind`` that the router may send
    (``sendrecv``/``sendonly``). Encodings carry the mapped SSRCs, without
    rid/rtx/codecPayloadType. RTCP keeps the producer's cname, reduced-size.
    """
    p = cast(Obj, params)
    c = cast(Obj, caps)
    codecs: list[RtpCodecParameters] = []
    for codec in p["codecs"]:
        if not is_rtx_codec(codec):
            codecs.extend(_consumable_codec(codec, c, mapping))
    rtcp: Obj = {}
    if (p.get("rtcp") or {}).get("cname") is not None:
        rtcp["cname"] = p["rtcp"]["cname"]
    rtcp["reducedSize"] = True
    return {
        "codecs": codecs,
        "headerExtensions": _consumable_header_extensions(kind, c),
        "encodings": _consumable_encodings(p.get("encodings") or [], mapping),
        "rtcp": cast(Any, rtcp),
    }


def can_consume(consumable_params: RtpParameters, caps: RtpCapabilities) -> bool:
    """True if an endpoint with ``caps`` can receive at least one media codec.

    ``caps`` are validated (and normalised) first; this may raise
    :class:`InvalidParametersError`.
    """
    validate_rtp_capabilities(caps)
    c = cast(Obj, caps)
    matching = [
        codec
        for codec in cast(Obj, consumable_params)["codecs"]
        if any(match_codecs(cap, codec, strict=True) for cap in c["codecs"])
    ]
    return bool(matching) and not is_rtx_codec(matching[0])


# ---------------------------------------------------------------------------
# Consumer parameters.
# ---------------------------------------------------------------------------


def _consumer_codecs(consumable: Obj, caps: Obj, enable_rtx: bool) -> tuple[list[Obj], bool]:
    """Consumable codecs the remote supports, with the remote's rtcpFeedback.

    Returns the codecs and whether RTX survives (RTX codecs whose media codec
    was dropped are removed).
    """
    codecs: list[Obj] = []
    for codec in copy.deepcopy(consumable["codecs"]):
        if not enable_rtx and is_rtx_codec(codec):
            continue
        cap = next((c for c in caps["codecs"] if match_codecs(c, codec, strict=True)), None)
        if cap is None:
            continue
        codec["rtcpFeedback"] = [
            copy.deepcopy(fb)
            for fb in cap["rtcpFeedback"]
            if enable_rtx or fb["type"] != "nack" or fb.get("parameter")
        ]
        codecs.append(codec)
    media_pts = {c["payloadType"] for c in codecs if not is_rtx_codec(c)}
    codecs = [c for c in codecs if not is_rtx_codec(c) or c["parameters"].get("apt") in media_pts]
    return codecs, any(is_rtx_codec(c) for c in codecs)


def _consumer_header_extensions(consumable: Obj, caps: Obj, kind: MediaKind | None) -> list[Obj]:
    """Consumable extensions the remote supports, with the remote's preferredId."""
    result: list[Obj] = []
    used_ids: set[int] = set()
    for ext in consumable.get("headerExtensions") or []:
        cap = next(
            (c for c in caps["headerExtensions"] if c["kind"] == kind and c["uri"] == ext["uri"]),
            None,
        )
        if cap is None or cap["preferredId"] in used_ids:
            continue
        used_ids.add(cap["preferredId"])
        result.append(
            {
                "uri": ext["uri"],
                "id": cap["preferredId"],
                "encrypt": ext.get("encrypt", False),
                "parameters": copy.deepcopy(ext.get("parameters") or {}),
            }
        )
    return result


def _reduce_bwe_feedback(codecs: list[Obj], extensions: list[Obj]) -> None:
    """Keep transport-cc if its extension is negotiated, else REMB if abs-send-time is."""
    uris = {ext["uri"] for ext in extensions}
    if URI_TRANSPORT_WIDE_CC in uris:
        dropped = {"goog-remb"}
    elif URI_ABS_SEND_TIME in uris:
        dropped = {"transport-cc"}
    else:
        dropped = {"transport-cc", "goog-remb"}
    for codec in codecs:
        codec["rtcpFeedback"] = [fb for fb in codec["rtcpFeedback"] if fb["type"] not in dropped]


def parse_scalability_mode(mode: str | None) -> tuple[int, int, bool]:
    """(spatial layers, temporal layers, ksvc) of e.g. ``"L3T3_KEY"``; (1, 1, False) if absent."""
    match = _SCALABILITY_MODE_RE.match(mode or "")
    if match is None:
        return 1, 1, False
    return int(match.group(1)), int(match.group(2)), match.group(3) is not None


def _single_consumer_encoding(encodings: list[Obj], rtx: bool) -> RtpEncodingParameters:
    """One encoding for a regular consumer, summarising the producer's layers."""
    encoding: RtpEncodingParameters = {"ssrc": _generate_random_number()}
    if rtx:
        encoding["rtx"] = {"ssrc": encoding["ssrc"] + 1}
    mode = next((e["scalabilityMode"] for e in encodings if e.get("scalabilityMode")), None)
    if len(encodings) > 1:
        _, temporal_layers, _ = parse_scalability_mode(mode)
        mode = f"L{len(encodings)}T{temporal_layers}"
    if mode:
        encoding["scalabilityMode"] = mode
    max_bitrate = max((e.get("maxBitrate") or 0 for e in encodings), default=0)
    if max_bitrate:
        encoding["maxBitrate"] = max_bitrate
    return encoding


def _pipe_encodings(encodings: list[Obj], rtx: bool) -> list[RtpEncodingParameters]:
    """All consumable encodings, with fresh consecutive SSRCs (and RTX SSRCs)."""
    base_ssrc = _generate_random_number()
    base_rtx_ssrc = _generate_random_number()
    result: list[RtpEncodingParameters] = []
    for offset, encoding in enumerate(copy.deepcopy(encodings)):
        encoding["ssrc"] = base_ssrc + offset
        if rtx:
            encoding["rtx"] = {"ssrc": base_rtx_ssrc + offset}
        else:
            encoding.pop("rtx", None)
        result.append(cast(RtpEncodingParameters, encoding))
    return result


def get_consumer_rtp_parameters(
    consumable_params: RtpParameters,
    remote_rtp_capabilities: RtpCapabilities,
    pipe: bool = False,
    enable_rtx: bool = True,
) -> RtpParameters:
    """RTP parameters of one consumer, reduced to what the remote can receive.

    Codecs are the consumable ones the remote supports (RTX dropped when
    ``enable_rtx`` is false or its media codec is gone), with the remote's
    rtcpFeedback (plain ``nack`` dropped without RTX; transport-cc/REMB
    reduced to the negotiated BWE extension). Header extensions keep their
    URI but take the *remote's* preferredId for that URI and kind. A non-pipe
    consumer gets a single encoding with a random SSRC (and RTX SSRC + 1);
    a pipe consumer keeps all encodings with fresh SSRCs.

    ``remote_rtp_capabilities`` are validated (may raise
    :class:`InvalidParametersError`). Raises
    :class:`UnsupportedError("no compatible media codecs")` when nothing
    matches.
    """
    validate_rtp_capabilities(remote_rtp_capabilities)
    consumable = cast(Obj, consumable_params)
    caps = cast(Obj, remote_rtp_capabilities)
    codecs, rtx_supported = _consumer_codecs(consumable, caps, enable_rtx)
    if not codecs or is_rtx_codec(codecs[0]):
        raise UnsupportedError("no compatible media codecs")
    extensions = _consumer_header_extensions(consumable, caps, _kind_of(codecs[0]))
    _reduce_bwe_feedback(codecs, extensions)
    encodings = consumable.get("encodings") or []
    if pipe:
        consumer_encodings = _pipe_encodings(encodings, rtx_supported)
    else:
        consumer_encodings = [_single_consumer_encoding(encodings, rtx_supported)]
    return {
        "codecs": cast(list[RtpCodecParameters], codecs),
        "headerExtensions": cast(list[RtpHeaderExtensionParameters], extensions),
        "encodings": consumer_encodings,
        "rtcp": copy.deepcopy(consumable.get("rtcp") or {}),
    }


def get_pipe_consumer_rtp_parameters(
    consumable_params: RtpParameters, enable_rtx: bool = False
) -> RtpParameters:
    """RTP parameters of a consumer on a pipe transport (router to router).

    Keeps all codecs (RTX only with ``enable_rtx``) and encodings (fresh
    SSRCs), feedback reduced to PLI/FIR (+ plain NACK with RTX), and drops the
    MID and BWE header extensions.
    """
    consumable = cast(Obj, consumable_params)
    codecs: list[Obj] = []
    for codec in copy.deepcopy(consumable["codecs"]):
        if not enable_rtx and is_rtx_codec(codec):
            continue
        codec["rtcpFeedback"] = [
            fb for fb in codec.get("rtcpFeedback") or [] if _is_pipe_feedback(fb, enable_rtx)
        ]
        codecs.append(codec)
    dropped_uris = {URI_MID, URI_ABS_SEND_TIME, URI_TRANSPORT_WIDE_CC}
    extensions = [
        copy.deepcopy(ext)
        for ext in consumable.get("headerExtensions") or []
        if ext["uri"] not in dropped_uris
    ]
    return {
        "codecs": cast(list[RtpCodecParameters], codecs),
        "headerExtensions": extensions,
        "encodings": _pipe_encodings(consumable.get("encodings") or [], enable_rtx),
        "rtcp": copy.deepcopy(consumable.get("rtcp") or {}),
    }


def _is_pipe_feedback(fb: RtcpFeedback | Obj, enable_rtx: bool) -> bool:
    fb_type, parameter = fb["type"], fb.get("parameter", "")
    return (
        (fb_type == "nack" and parameter == "pli")
        or (fb_type == "ccm" and parameter == "fir")
        or (enable_rtx and fb_type == "nack" and not parameter)
    )


__all__ = [
    "DYNAMIC_PAYLOAD_TYPES",
    "can_consume",
    "generate_router_rtp_capabilities",
    "get_consumable_rtp_parameters",
    "get_consumer_rtp_parameters",
    "get_pipe_consumer_rtp_parameters",
    "get_producer_rtp_parameters_mapping",
    "is_rtx_codec",
    "match_codecs",
    "parse_scalability_mode",
    "rng",
    "validate_rtcp_feedback",
    "validate_rtcp_parameters",
    "validate_rtp_capabilities",
    "validate_rtp_codec_capability",
    "validate_rtp_codec_parameters",
    "validate_rtp_encoding_parameters",
    "validate_rtp_header_extension",
    "validate_rtp_header_extension_parameters",
    "validate_rtp_parameters",
]
