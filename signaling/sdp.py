"""SDP for WHIP (RFC 9725) publish and WHEP subscribe, sans-IO.

The SFU is always the answerer, ICE-lite and the DTLS server. This module
turns a client's SDP offer into mediasoup-shaped RTP parameters and
capabilities (see :mod:`sfu.rtp_parameters`) and builds the SDP answer from
the transport's ICE/DTLS parameters and the producers'/consumers' RTP
parameters. It does no I/O and uses only the standard library plus
:mod:`sfu.ortc` for codec matching.

Typical WHIP flow::

    offer = parse_offer(sdp)
    answers = whip_media_answers(offer, router.rtp_capabilities)
    for section, answer in zip(offer.media, answers):
        if answer:
            await transport.produce(section.kind, answer["rtp_parameters"])
    sdp_answer = build_answer(offer, transport, answers)

Robustness: every offer a client can send either parses or raises
:class:`SdpError` naming the line and the problem (the HTTP layer answers
400); nothing else escapes :func:`parse_offer`, :func:`whip_media_answers`,
:func:`offer_to_consumer_capabilities` or :func:`build_answer`
(``tests/test_sdp_fuzz.py`` checks this on mutated real offers). Numbers are
ASCII digits within their protocol range, tokens (media, mid, rid) follow
RFC 8866's ``token`` grammar, duplicate attributes that agree are merged and
ones that contradict each other (a payload type mapped twice, an extmap id
with two URIs, two mids) are errors. Unknown attributes are ignored.

Why no SDP library from PyPI: it would not make the grammar smaller. The
WebRTC semantics (bundle-only, ssrc-groups, simulcast, extmap directions,
mediasoup shapes) and the validation are the bulk and stay ours either way.
``aiortc.sdp`` (already installed) raises IndexError, AssertionError or bare
ValueError on malformed lines and knows no ``a=bundle-only``;
``sdp-transform`` (the PyPI port of the JS grammar) splits lines into
untyped dicts by regex and checks nothing. A small strict parser of our own
keeps one error type with line numbers and no extra dependency in the
request path.

Bundle (RFC 8843, JSEP RFC 8829 §5.2.1 max-bundle): an m-section offered with
port 0 *and* ``a=bundle-only`` whose mid is in the offer's BUNDLE group is
not rejected: it is accepted inside the bundle (Firefox's video and
GStreamer's second section under max-bundle). Only port 0 without that is a
rejected section.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sfu.ortc import is_rtx_codec, match_codecs
from sfu.rtp_parameters import (
    RtcpFeedback,
    RtpCapabilities,
    RtpCodecCapability,
    RtpCodecParameters,
    RtpEncodingParameters,
    RtpHeaderExtension,
    RtpHeaderExtensionParameters,
    RtpParameters,
)

CRLF = "\r\n"
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
SETUP_ROLES = ("actpass", "active", "passive", "holdconn")
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
}
# fmtp keys whose values are never turned into numbers (hex strings etc.).
_STRING_FMTP_KEYS = frozenset({"profile-level-id", "sprop-parameter-sets"})
# RFC 8866 token (media, mid, rid, ...): visible ASCII except separators.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DIGITS = re.compile(r"[0-9]{1,10}")
_LINE_END = re.compile(r"\r\n|\n|\r")
# RFC 8122 hash functions we accept, with their digest sizes in bytes.
_FINGERPRINT_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
_MAX_SSRC = 0xFFFFFFFF
# Bounds that keep one request's parsing linear and small (each far above what
# a browser offers: it is the request body that would be unreasonable).
_MAX_LINES = 10000
_MAX_SECTIONS = 256
_MAX_PER_SECTION = {"ssrc-group": 64, "rid": 32, "fingerprint": 16, "rtcp-fb": 64}


class SdpError(ValueError):
    """The SDP is malformed or lacks something WHIP/WHEP requires."""


# ---------------------------------------------------------------------------
# Parsed offer.
# ---------------------------------------------------------------------------


@dataclass
class Codec:
    """One payload type of an m-section (``a=rtpmap``/``a=fmtp``/``a=rtcp-fb``)."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    parameters: dict[str, str | int] = field(default_factory=dict)
    rtcp_feedback: list[RtcpFeedback] = field(default_factory=list)

    @property
    def is_rtx(self) -> bool:
        """True for an ``rtx`` codec."""
        return self.name.lower() == "rtx"


@dataclass
class Extmap:
    """An ``a=extmap`` line (``direction`` as the offerer wrote it, e.g. Firefox's ``2/recvonly``)."""

    id: int
    uri: str
    direction: str | None = None


@dataclass
class Rid:
    """An ``a=rid`` line (RFC 8851)."""

    id: str
    direction: str
    params: str = ""


@dataclass
class MediaSection:
    """One ``m=`` section of an offer."""

    kind: str
    port: int
    protocol: str
    formats: list[str]
    mid: str | None = None
    direction: str = "sendrecv"
    codecs: list[Codec] = field(default_factory=list)
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast_send: list[str] = field(default_factory=list)
    simulcast_recv: list[str] = field(default_factory=list)
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    msid: str | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[dict[str, str]] = field(default_factory=list)
    setup: str | None = None
    #: ``a=bundle-only`` was present (RFC 8843 §6).
    bundle_only: bool = False
    #: the mid is in the offer's (first) BUNDLE group; set by :func:`parse_offer`.
    in_bundle: bool = False

    @property
    def rejected(self) -> bool:
        """True when the offerer disabled the section: port 0 and not a
        bundle-only section of the BUNDLE group (RFC 8843 §6)."""
        return self.port == 0 and not (self.bundle_only and self.in_bundle)

    @property
    def cname(self) -> str | None:
        """The first ``a=ssrc:... cname:`` value."""
        return next((a["cname"] for a in self.ssrcs.values() if "cname" in a), None)

    @property
    def fid(self) -> dict[int, int]:
        """Media SSRC -> RTX SSRC from ``a=ssrc-group:FID``."""
        return {g[0]: g[1] for sem, g in self.ssrc_groups if sem == "FID" and len(g) == 2}

    @property
    def msid_track(self) -> str | None:
        """The track id of ``a=msid:<stream> <track>`` (``-`` streams included)."""
        parts = (self.msid or "").split()
        return parts[1] if len(parts) > 1 else None

    def codec(self, payload_type: int) -> Codec | None:
        """The codec with the given payload type, if any."""
        return next((c for c in self.codecs if c.payload_type == payload_type), None)


@dataclass
class Offer:
    """A parsed SDP offer: transport-wide ICE/DTLS data and the m-sections."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[dict[str, str]]
    setup: str
    bundle_mids: list[str]
    media: list[MediaSection]
    ice_lite: bool = False
    ice_options: list[str] = field(default_factory=list)
    extmap_allow_mixed: bool = False


# ---------------------------------------------------------------------------
# Parsing.
# ---------------------------------------------------------------------------


def _int(value: str, what: str, low: int = 0, high: int = _MAX_SSRC) -> int:
    """An ASCII decimal in ``[low, high]``, or :class:`SdpError` naming ``what``.

    (``int()`` alone would take ``" 1_0"``, ``"+5"`` or non-ASCII digits.)
    """
    if not _DIGITS.fullmatch(value):
        if re.fullmatch(r"[0-9]+", value):
            raise SdpError(f"{what}: {value[:20]}{'...' if len(value) > 20 else ''} is out of range [{low}, {high}]")
        raise SdpError(f"{what}: {value[:40]!r} is not an integer")
    number = int(value)
    if not low <= number <= high:
        raise SdpError(f"{what}: {number} is out of range [{low}, {high}]")
    return number


def _token(value: str, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise SdpError(f"{what}: {value!r} is not a token")
    return value


def _fmtp_value(key: str, value: str) -> str | int:
    """Numeric fmtp values become ints (as sdp-transform does), hex ids stay strings."""
    if key not in _STRING_FMTP_KEYS and _DIGITS.fullmatch(value):
        return int(value)
    return value


def parse_fmtp(config: str) -> dict[str, str | int]:
    """``a=fmtp`` parameters, e.g. ``"apt=96;x=y"`` -> ``{"apt": 96, "x": "y"}``.

    Tokens without ``=`` (telephone-event's ``0-16``) map to ``""``.
    """
    params: dict[str, str | int] = {}
    for token in config.split(";"):
        token = token.strip()
        if not token:
            continue
        key, sep, value = token.partition("=")
        params[key.strip()] = _fmtp_value(key.strip(), value.strip()) if sep else ""
    return params


def _parse_m_line(value: str, lineno: int) -> MediaSection:
    """``m=<kind> <port>[/n] <proto> <fmt>...``."""
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"line {lineno}: bad m-line 'm={value}'")
    kind = _token(parts[0], f"line {lineno}: m-line media")
    port_text, _, count = parts[1].partition("/")
    if not _DIGITS.fullmatch(port_text) or (count and not _DIGITS.fullmatch(count)):
        raise SdpError(f"line {lineno}: bad m-line port {parts[1]!r}")
    port = _int(port_text, f"line {lineno}: m-line port", 0, 65535)
    formats = list(dict.fromkeys(parts[3:]))  # a repeated format counts once
    section = MediaSection(kind=kind, port=port, protocol=parts[2], formats=formats)
    if section.kind in ("audio", "video"):
        for fmt in section.formats:
            _int(fmt, f"line {lineno}: m-line payload type", 0, 127)
    return section


def _parse_rtpmap(section: MediaSection, value: str, where: str) -> None:
    """``a=rtpmap:<pt> <name>/<clock>[/<channels>]``; a repeated identical line counts once."""
    pt, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    if len(parts) < 2 or len(parts) > 3:
        raise SdpError(f"{where}: bad a=rtpmap:{value}")
    codec = Codec(
        payload_type=_int(pt, f"{where}: a=rtpmap payload type", 0, 127),
        name=_token(parts[0], f"{where}: a=rtpmap encoding name"),
        clock_rate=_int(parts[1], f"{where}: a=rtpmap clock rate", 1),
        channels=_int(parts[2], f"{where}: a=rtpmap channels", 1, 255) if len(parts) > 2 else None,
    )
    previous = section.codec(codec.payload_type)
    if previous is None:
        section.codecs.append(codec)
    elif (previous.name.lower(), previous.clock_rate, previous.channels or 1) != (
        codec.name.lower(), codec.clock_rate, codec.channels or 1
    ):
        raise SdpError(f"{where}: payload type {codec.payload_type} mapped twice (a=rtpmap:{value})")


def _parse_rtcp_fb(value: str, where: str) -> tuple[str, RtcpFeedback]:
    """``a=rtcp-fb:<pt|*> <type> [<parameter>]`` -> (pt, feedback)."""
    parts = value.split()
    if len(parts) < 2:
        raise SdpError(f"{where}: bad a=rtcp-fb:{value}")
    return parts[0], {"type": parts[1], "parameter": " ".join(parts[2:])}


def _parse_extmap(section: MediaSection, value: str, where: str) -> None:
    """``a=extmap:<id>[/<direction>] <uri> [<attributes>]`` (RFC 8285).

    The same id with the same URI again counts once; with another URI it is
    an error.
    """
    parts = value.split()
    if len(parts) < 2:
        raise SdpError(f"{where}: bad a=extmap:{value}")
    ext_id, _, direction = parts[0].partition("/")
    if direction and direction not in DIRECTIONS:
        raise SdpError(f"{where}: bad a=extmap direction {direction!r}")
    ext = Extmap(_int(ext_id, f"{where}: a=extmap id", 1, 255), parts[1], direction or None)
    previous = next((e for e in section.extmaps if e.id == ext.id), None)
    if previous is None:
        section.extmaps.append(ext)
    elif previous.uri != ext.uri:
        raise SdpError(f"{where}: a=extmap id {ext.id} used for {previous.uri} and {ext.uri}")


def _parse_ssrc(section: MediaSection, value: str, where: str) -> None:
    """``a=ssrc:<ssrc> <attribute>[:<value>]``."""
    ssrc, _, attr = value.partition(" ")
    attrs = section.ssrcs.setdefault(_int(ssrc, f"{where}: a=ssrc"), {})
    name, _, attr_value = attr.strip().partition(":")
    if name and name not in attrs:
        attrs[name] = attr_value


def _parse_ssrc_group(section: MediaSection, value: str, where: str) -> None:
    """``a=ssrc-group:<semantics> <ssrc>...`` (FID and FEC-FR pair two SSRCs, SIM lists layers)."""
    parts = value.split()
    if len(parts) < 2:
        raise SdpError(f"{where}: bad a=ssrc-group:{value}")
    semantics = parts[0].upper()
    ssrcs = [_int(s, f"{where}: a=ssrc-group") for s in parts[1:]]
    if len(set(ssrcs)) != len(ssrcs):
        raise SdpError(f"{where}: a=ssrc-group:{value} repeats an SSRC")
    if semantics in ("FID", "FEC-FR") and len(ssrcs) != 2:
        raise SdpError(f"{where}: a=ssrc-group:{semantics} needs two SSRCs, got {len(ssrcs)}")
    if (semantics, ssrcs) not in section.ssrc_groups:
        _check_count(len(section.ssrc_groups), "ssrc-group", where)
        section.ssrc_groups.append((semantics, ssrcs))


def _check_count(count: int, attribute: str, where: str) -> None:
    """:class:`SdpError` when an m-section already has the most ``a=<attribute>`` lines we take."""
    if count >= _MAX_PER_SECTION[attribute]:
        raise SdpError(f"{where}: more than {_MAX_PER_SECTION[attribute]} different a={attribute} in one m-section")


def _simulcast_rids(alternatives: str) -> list[str]:
    """Rids of a simulcast stream list ``"h;m;~l"`` (first alternative, paused kept).

    Old Firefox wrote ``rid=h;m;l``: the ``rid=`` prefix is dropped.
    """
    if alternatives.startswith("rid="):
        alternatives = alternatives[4:]
    rids = [s.split(",")[0].lstrip("~") for s in alternatives.split(";") if s]
    return list(dict.fromkeys(r for r in rids if _TOKEN.fullmatch(r)))


def _parse_simulcast(section: MediaSection, value: str, where: str) -> None:
    """``a=simulcast:send <list> [recv <list>]`` (RFC 8853); a malformed line is ignored."""
    parts = value.split()
    if len(parts) % 2:
        return
    for direction, streams in zip(parts[::2], parts[1::2]):
        if direction == "send":
            section.simulcast_send = _simulcast_rids(streams)
        elif direction == "recv":
            section.simulcast_recv = _simulcast_rids(streams)


def _parse_fingerprint(section: MediaSection, value: str, where: str) -> None:
    """``a=fingerprint:<algorithm> <hex:pairs>``; hashes we cannot check are skipped."""
    parts = value.split()
    if len(parts) != 2:
        raise SdpError(f"{where}: bad a=fingerprint:{value}")
    algorithm, digest = parts[0].lower(), parts[1].upper()
    size = _FINGERPRINT_BYTES.get(algorithm)
    if size is None:
        return  # e.g. md5: another line may carry a hash we support
    if not re.fullmatch(r"[0-9A-F]{2}(:[0-9A-F]{2})*", digest) or len(digest) != 3 * size - 1:
        raise SdpError(f"{where}: bad a=fingerprint:{value} (expected {size} hex bytes)")
    fingerprint = {"algorithm": algorithm, "value": digest}
    if fingerprint not in section.fingerprints:
        _check_count(len(section.fingerprints), "fingerprint", where)
        section.fingerprints.append(fingerprint)


def _parse_rid(section: MediaSection, value: str, where: str) -> None:
    """``a=rid:<id> <send|recv> [<params>]``; a malformed or repeated rid is ignored."""
    parts = value.split(maxsplit=2)
    if len(parts) < 2 or parts[1] not in ("send", "recv") or not _TOKEN.fullmatch(parts[0]):
        return
    if any(r.id == parts[0] for r in section.rids):
        return
    _check_count(len(section.rids), "rid", where)
    section.rids.append(Rid(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))


def _parse_setup(section: MediaSection, value: str, where: str) -> None:
    """``a=setup:<actpass|active|passive|holdconn>``."""
    role = value.lower()
    if role not in SETUP_ROLES:
        raise SdpError(f"{where}: bad a=setup:{value}")
    section.setup = section.setup or role


def _parse_mid(section: MediaSection, value: str, where: str) -> None:
    mid = _token(value, f"{where}: a=mid")
    if section.mid is not None and section.mid != mid:
        raise SdpError(f"{where}: a second a=mid:{mid} in the m-section of a=mid:{section.mid}")
    section.mid = mid


def _first(name: str) -> Callable[[MediaSection, str, str], None]:
    """Sets attribute ``name`` unless an earlier line did (duplicates: the first wins)."""

    def apply(section: MediaSection, value: str, where: str) -> None:
        if getattr(section, name) is None:
            setattr(section, name, value)

    return apply


_FLAG_ATTRIBUTES = {"rtcp-mux": "rtcp_mux", "rtcp-rsize": "rtcp_rsize", "bundle-only": "bundle_only"}
_SECTION_PARSERS: dict[str, Callable[[MediaSection, str, str], None]] = {
    "mid": _parse_mid,
    "msid": _first("msid"),
    "ice-ufrag": _first("ice_ufrag"),
    "ice-pwd": _first("ice_pwd"),
    "rtpmap": _parse_rtpmap,
    "extmap": _parse_extmap,
    "ssrc": _parse_ssrc,
    "ssrc-group": _parse_ssrc_group,
    "rid": _parse_rid,
    "simulcast": _parse_simulcast,
    "fingerprint": _parse_fingerprint,
    "setup": _parse_setup,
}


class _Parser:
    """Line-by-line state machine: session level, then one m-section at a time."""

    def __init__(self) -> None:
        self.session = MediaSection(kind="session", port=0, protocol="", formats=[])
        self.media: list[MediaSection] = []
        self.fmtp: list[tuple[MediaSection, str, str]] = []
        self.rtcp_fb: list[tuple[MediaSection, str, RtcpFeedback, str]] = []
        self.bundle_mids: list[str] | None = None
        self.ice_lite = False
        self.ice_options: list[str] = []
        self.extmap_allow_mixed = False
        self.explicit_direction: set[int] = set()  # id() of sections with their own a=<direction>

    @property
    def current(self) -> MediaSection:
        return self.media[-1] if self.media else self.session

    def line(self, lineno: int, line: str) -> None:
        """Dispatch one ``x=value`` line."""
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {lineno}: not a '<type>=<value>' line: {line[:80]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            if len(self.media) >= _MAX_SECTIONS:
                raise SdpError(f"line {lineno}: more than {_MAX_SECTIONS} m-sections")
            self.media.append(_parse_m_line(value, lineno))
        elif kind == "a":
            name, _, attr_value = value.partition(":")
            self.attribute(name.strip(), attr_value.strip(), f"line {lineno}")

    def attribute(self, name: str, value: str, where: str) -> None:
        """Apply one ``a=`` attribute to the current section (or the session)."""
        s = self.current
        if name in _FLAG_ATTRIBUTES:
            setattr(s, _FLAG_ATTRIBUTES[name], True)
        elif name in DIRECTIONS:
            if id(s) not in self.explicit_direction:  # duplicates: the first wins
                s.direction = name
                self.explicit_direction.add(id(s))
        elif name in _SECTION_PARSERS:
            _SECTION_PARSERS[name](s, value, where)
        elif name == "fmtp":
            pt, _, config = value.partition(" ")
            self.fmtp.append((s, pt, config))
        elif name == "rtcp-fb":
            self.rtcp_fb.append((s, *_parse_rtcp_fb(value, where), where))
        else:
            self.session_attribute(name, value)

    def session_attribute(self, name: str, value: str) -> None:
        """BUNDLE group, ice-lite, ice-options, extmap-allow-mixed; unknown attributes are ignored."""
        if name == "group":
            parts = value.split()
            # one BUNDLE transport: the first group is ours, later groups would need transports of their own
            if parts and parts[0] == "BUNDLE" and self.bundle_mids is None:
                self.bundle_mids = list(dict.fromkeys(parts[1:]))
        elif name == "ice-lite":
            self.ice_lite = True
        elif name == "ice-options":
            self.ice_options = list(dict.fromkeys(self.ice_options + value.split()))
        elif name == "extmap-allow-mixed":
            self.extmap_allow_mixed = True

    def finish(self) -> None:
        """Session-level defaults, static payload types, fmtp and rtcp-fb, bundle membership."""
        bundle = set(self.bundle_mids or [])
        mids: set[str] = set()
        for section in self.media:
            if id(section) not in self.explicit_direction and id(self.session) in self.explicit_direction:
                section.direction = self.session.direction  # RFC 8866: session level is the default
            if section.kind in ("audio", "video"):
                known = {e.id for e in section.extmaps}
                section.extmaps += [copy.copy(e) for e in self.session.extmaps if e.id not in known]
            if section.mid is not None:
                if section.mid in mids:
                    raise SdpError(f"a=mid:{section.mid} is used by two m-sections")
                mids.add(section.mid)
            section.in_bundle = section.mid is not None and section.mid in bundle
            self._add_static_codecs(section)
        for section, pt, config in self.fmtp:
            codec = section.codec(int(pt)) if _DIGITS.fullmatch(pt) else None
            if codec is not None:
                codec.parameters.update(parse_fmtp(config))
        seen: dict[int, set[tuple[str, str]]] = {}  # id(codec) -> its (type, parameter)s
        for section, pt, fb, where in self.rtcp_fb:
            targets = section.codecs if pt == "*" else [section.codec(int(pt))] if _DIGITS.fullmatch(pt) else []
            for codec in targets:
                if codec is None:
                    continue
                known = seen.setdefault(id(codec), set())
                if (fb["type"], fb["parameter"]) not in known:
                    _check_count(len(known), "rtcp-fb", where)
                    known.add((fb["type"], fb["parameter"]))
                    codec.rtcp_feedback.append(dict(fb))  # type: ignore[arg-type]

    @staticmethod
    def _add_static_codecs(section: MediaSection) -> None:
        """Codecs in m-line order; static payload types without rtpmap get defaults."""
        if section.kind not in ("audio", "video"):
            return
        by_pt = {c.payload_type: c for c in section.codecs}
        for fmt in section.formats:
            pt = int(fmt)
            if pt not in by_pt and pt in _STATIC_PAYLOAD_TYPES:
                name, clock, channels = _STATIC_PAYLOAD_TYPES[pt]
                by_pt[pt] = Codec(pt, name, clock, channels)
        section.codecs = [by_pt[int(f)] for f in section.formats if int(f) in by_pt]


def _transport_attr(parser: _Parser, name: str) -> Any:
    """Session-level value of an ICE/DTLS attribute, else the first media-level one."""
    for section in [parser.session, *parser.media]:
        value = getattr(section, name)
        if value:
            return value
    return None


def parse_offer(sdp: str) -> Offer:
    """Parse an SDP offer (WHIP or WHEP).

    Lines may end in CRLF, LF or CR. ICE credentials, DTLS fingerprints and
    setup may be at session or media level (the session level wins). Raises
    :class:`SdpError` naming the line or attribute on malformed input or
    when ``a=ice-ufrag``, ``a=ice-pwd`` or ``a=fingerprint`` is missing
    everywhere.
    """
    if not isinstance(sdp, str):
        raise SdpError("the offer must be text")
    sdp = sdp.removeprefix("\ufeff")  # a byte-order mark some editors and tools add
    lines = [ln for ln in _LINE_END.split(sdp) if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("line 1: SDP must start with 'v='")
    if len(lines) > _MAX_LINES:
        raise SdpError(f"{len(lines)} lines: more than {_MAX_LINES}")
    parser = _Parser()
    for lineno, line in enumerate(lines, start=1):
        parser.line(lineno, line.strip())
    if not parser.media:
        raise SdpError("no m= section")
    parser.finish()
    values = {n: _transport_attr(parser, n) for n in ("ice_ufrag", "ice_pwd", "fingerprints")}
    for name, attr in (("ice_ufrag", "ice-ufrag"), ("ice_pwd", "ice-pwd")):
        if not values[name]:
            raise SdpError(f"missing a={attr}")
    if not values["fingerprints"]:
        raise SdpError("missing a=fingerprint (with a sha-1/-224/-256/-384/-512 hash)")
    return Offer(
        ice_ufrag=values["ice_ufrag"],
        ice_pwd=values["ice_pwd"],
        fingerprints=copy.deepcopy(values["fingerprints"]),
        setup=_transport_attr(parser, "setup") or "actpass",
        bundle_mids=parser.bundle_mids or [],
        media=parser.media,
        ice_lite=parser.ice_lite,
        ice_options=parser.ice_options,
        extmap_allow_mixed=parser.extmap_allow_mixed,
    )

# ---------------------------------------------------------------------------
# Offer -> mediasoup RTP parameters / capabilities.
# ---------------------------------------------------------------------------


def codec_to_parameters(kind: str, codec: Codec) -> RtpCodecParameters:
    """A parsed codec as mediasoup ``RtpCodecParameters``."""
    params: RtpCodecParameters = {
        "mimeType": f"{kind}/{codec.name}",
        "payloadType": codec.payload_type,
        "clockRate": codec.clock_rate,
        "parameters": dict(codec.parameters),
        "rtcpFeedback": copy.deepcopy(codec.rtcp_feedback),
    }
    if kind == "audio":
        params["channels"] = codec.channels or 1
    return params


def _router_codec(codec: RtpCodecParameters, router_codecs: list[Any]) -> Any:
    """The router codec (non-RTX) matching ``codec`` strictly (H264 profile, VP9 profile-id)."""
    return next(
        (c for c in router_codecs if not is_rtx_codec(c) and match_codecs(cast(Any, codec), c, strict=True)),
        None,
    )


def _router_has_rtx(router_codecs: list[Any], payload_type: int) -> bool:
    """True if the router has an RTX codec for its codec ``payload_type``."""
    return any(
        is_rtx_codec(c) and (c.get("parameters") or {}).get("apt") == payload_type for c in router_codecs
    )


def _supported_feedback(codec: RtpCodecParameters, router_codec: Any) -> list[RtcpFeedback]:
    """The offer's rtcp-fb entries the router codec also lists."""
    router_fb = {(f["type"], f.get("parameter", "")) for f in router_codec.get("rtcpFeedback") or []}
    return [f for f in codec.get("rtcpFeedback", []) if (f["type"], f.get("parameter", "")) in router_fb]


def _producer_codecs(section: MediaSection, router_codecs: list[Any]) -> list[RtpCodecParameters]:
    """Offered codecs the router supports, each followed by its offered RTX codec."""
    result: list[RtpCodecParameters] = []
    rtx_by_apt = {c.parameters.get("apt"): c for c in section.codecs if c.is_rtx}
    for codec in section.codecs:
        if codec.is_rtx:
            continue
        params = codec_to_parameters(section.kind, codec)
        router_codec = _router_codec(params, router_codecs)
        if router_codec is None:
            continue
        params["rtcpFeedback"] = _supported_feedback(params, router_codec)
        result.append(params)
        rtx = rtx_by_apt.get(codec.payload_type)
        if rtx is not None and _router_has_rtx(router_codecs, router_codec["preferredPayloadType"]):
            rtx_params = codec_to_parameters(section.kind, rtx)
            rtx_params["rtcpFeedback"] = []
            result.append(rtx_params)
    return result


def _producer_header_extensions(
    section: MediaSection, router_extensions: list[Any]
) -> list[RtpHeaderExtensionParameters]:
    """Offered extmaps whose URI the router receives for this kind (not those
    the offerer marked ``/recvonly`` or ``/inactive``: it will not send them)."""
    supported = {
        e["uri"]
        for e in router_extensions
        if e.get("kind") == section.kind and e.get("direction", "sendrecv") in ("sendrecv", "recvonly")
    }
    return [
        {"uri": e.uri, "id": e.id, "encrypt": False, "parameters": {}}
        for e in section.extmaps
        if e.uri in supported and e.direction not in ("recvonly", "inactive")
    ]


def _ssrc_encodings(section: MediaSection) -> list[RtpEncodingParameters]:
    """Encodings from a=ssrc and a=ssrc-group, whatever order the lines came in.

    The SIM group's SSRCs, else the first ``a=ssrc`` that is not the second
    SSRC of a FID (RTX) or FEC-FR group, else the first SSRC of a FID group
    (``a=ssrc-group:FID 2 1`` with only ``a=ssrc:1``). RTX SSRCs come from FID.
    Raises :class:`SdpError` when the groups contradict each other.
    """
    where = f"m-section mid={section.mid}"
    fid: dict[int, int] = {}
    for semantics, group in section.ssrc_groups:
        if semantics == "FID":
            media, rtx = group
            if fid.setdefault(media, rtx) != rtx:
                raise SdpError(f"{where}: SSRC {media} has two a=ssrc-group:FID (RTX {fid[media]} and {rtx})")
    secondary = {g[1] for sem, g in section.ssrc_groups if sem in ("FID", "FEC-FR")}
    sim = next((g for sem, g in section.ssrc_groups if sem == "SIM"), None)
    if sim is not None:
        primaries = sim
    else:
        candidates = [s for s in section.ssrcs if s not in secondary]
        candidates = candidates or [g[0] for sem, g in section.ssrc_groups if sem == "FID"]
        if not candidates:
            raise SdpError(f"{where}: no media SSRC (every a=ssrc is the RTX/FEC SSRC of an a=ssrc-group)")
        primaries = candidates[:1]
    encodings: list[RtpEncodingParameters] = []
    used: set[int] = set()
    for ssrc in primaries:
        if ssrc in secondary:
            raise SdpError(f"{where}: SSRC {ssrc} is both a media SSRC and an RTX/FEC SSRC")
        encoding: RtpEncodingParameters = {"ssrc": ssrc}
        ssrcs = [ssrc]
        if ssrc in fid:
            encoding["rtx"] = {"ssrc": fid[ssrc]}
            ssrcs.append(fid[ssrc])
        if used.intersection(ssrcs):
            raise SdpError(f"{where}: SSRC {used.intersection(ssrcs).pop()} is used twice")
        used.update(ssrcs)
        encodings.append(encoding)
    return encodings


def offer_encodings(section: MediaSection) -> list[RtpEncodingParameters]:
    """Producer encodings of a send m-section.

    An ``a=ssrc-group:SIM`` gives one encoding per SSRC; otherwise simulcast
    rids (``a=simulcast:send``, else the ``a=rid ... send`` lines) give one
    encoding per rid; otherwise the first non-RTX ``a=ssrc``. RTX SSRCs come
    from ``a=ssrc-group:FID``. Raises :class:`SdpError` if there is neither.
    """
    has_sim = any(sem == "SIM" for sem, _ in section.ssrc_groups)
    rids = section.simulcast_send or [r.id for r in section.rids if r.direction == "send"]
    if rids and not has_sim:
        return [{"rid": rid} for rid in rids]
    if section.ssrcs or section.ssrc_groups:
        return _ssrc_encodings(section)
    raise SdpError(f"m-section mid={section.mid}: no a=ssrc or a=rid to identify the stream")


def offer_to_producer_parameters(
    offer_media: MediaSection, router_rtp_capabilities: RtpCapabilities
) -> RtpParameters:
    """mediasoup ``RtpParameters`` for ``transport.produce(kind, ...)`` from a WHIP m-section.

    Keeps the offered codecs the router supports (with the offer's payload
    types, their RTX codecs and the rtcp-fb both sides list), the extmaps
    whose URI the router receives, encodings from a=ssrc/FID or rids, rtcp
    cname/reduced-size and the mid. Raises :class:`SdpError` when the section
    is rejected, has no supported codec or no stream identification.
    """
    if offer_media.rejected:
        raise SdpError(f"m-section mid={offer_media.mid}: rejected (port 0)")
    caps = cast(Mapping[str, Any], router_rtp_capabilities)
    codecs = _producer_codecs(offer_media, list(caps.get("codecs") or []))
    if not codecs:
        offered = ", ".join(f"{c.name}/{c.clock_rate}" for c in offer_media.codecs) or "none"
        raise SdpError(f"m-section mid={offer_media.mid}: no codec supported by the router (offered: {offered})")
    params: RtpParameters = {
        "codecs": codecs,
        "headerExtensions": _producer_header_extensions(offer_media, list(caps.get("headerExtensions") or [])),
        "encodings": offer_encodings(offer_media),
        "rtcp": {"reducedSize": offer_media.rtcp_rsize},
    }
    if offer_media.cname:
        params["rtcp"]["cname"] = offer_media.cname
    if offer_media.mid is not None:
        params["mid"] = offer_media.mid
    return params


def offer_to_consumer_capabilities(offer_media: MediaSection) -> RtpCapabilities:
    """mediasoup ``RtpCapabilities`` of a WHEP (recvonly) viewer for one m-section.

    Every offered codec (RTX included when its ``apt`` names an offered
    codec) with the offer's payload type as
    ``preferredPayloadType`` and its rtcp-fb; every extmap as a header
    extension with the offer's id as ``preferredId`` (except those the
    offerer marked ``/sendonly`` or ``/inactive``).
    """
    kind = offer_media.kind
    codecs: list[RtpCodecCapability] = []
    media_pts = {c.payload_type for c in offer_media.codecs if not c.is_rtx}
    for codec in offer_media.codecs:
        if codec.is_rtx and codec.parameters.get("apt") not in media_pts:
            continue  # an RTX codec without a=fmtp apt=<one of this section's codecs> repairs nothing
        params = codec_to_parameters(kind, codec)
        cap: RtpCodecCapability = {
            "kind": cast(Any, kind),
            "mimeType": params["mimeType"],
            "preferredPayloadType": codec.payload_type,
            "clockRate": codec.clock_rate,
            "parameters": params["parameters"],
            "rtcpFeedback": params["rtcpFeedback"],
        }
        if "channels" in params:
            cap["channels"] = params["channels"]
        codecs.append(cap)
    extensions: list[RtpHeaderExtension] = [
        {"kind": cast(Any, kind), "uri": e.uri, "preferredId": e.id, "preferredEncrypt": False, "direction": "sendrecv"}
        for e in offer_media.extmaps
        if e.direction not in ("sendonly", "inactive")  # the viewer would not receive them
    ]
    return {"codecs": codecs, "headerExtensions": extensions}


def _encoding_ssrcs(params: RtpParameters) -> set[int]:
    ssrcs: set[int] = set()
    for encoding in params.get("encodings") or []:
        if "ssrc" in encoding:
            ssrcs.add(encoding["ssrc"])
        if "rtx" in encoding:
            ssrcs.add(encoding["rtx"]["ssrc"])
    return ssrcs


def whip_media_answers(
    offer: Offer, router_rtp_capabilities: RtpCapabilities, problems: list[str] | None = None
) -> list[dict[str, Any] | None]:
    """One ``media_answers`` entry per m-section for a WHIP publish.

    ``None`` (rejected) for port-0 sections (bundle-only ones are accepted),
    non-audio/video or non-sending sections, sections without a mid, without
    a codec the router supports or whose SSRCs another section already uses;
    otherwise ``{"direction": "recvonly", "rtp_parameters": ...}``. With
    ``problems`` given, the reason for each rejected audio/video section is
    appended to it (for the 400 when nothing is accepted).
    """
    answers: list[dict[str, Any] | None] = []
    taken: dict[int, str] = {}  # SSRC -> mid of the section that uses it
    for section in offer.media:
        reason = None
        if section.kind not in ("audio", "video"):
            answers.append(None)
            continue
        if section.rejected:
            reason = "rejected by the offer (port 0 without a=bundle-only in the BUNDLE group)"
        elif section.direction not in ("sendrecv", "sendonly"):
            reason = f"a={section.direction}: nothing to publish"
        elif section.mid is None:
            reason = "no a=mid"
        if reason is None:
            try:
                params = offer_to_producer_parameters(section, router_rtp_capabilities)
                clash = sorted(_encoding_ssrcs(params).intersection(taken))
                if clash:
                    raise SdpError(f"SSRC {clash[0]} is already used by m-section mid={taken[clash[0]]}")
            except SdpError as exc:
                reason = str(exc).removeprefix(f"m-section mid={section.mid}: ")
        if reason is not None:
            if problems is not None:
                problems.append(f"{section.kind} m-section mid={section.mid}: {reason}")
            answers.append(None)
            continue
        taken.update(dict.fromkeys(_encoding_ssrcs(params), str(section.mid)))
        answers.append({"direction": "recvonly", "rtp_parameters": params})
    return answers


# ---------------------------------------------------------------------------
# Answer.
# ---------------------------------------------------------------------------


def _get(obj: Any, snake: str, camel: str) -> Any:
    """``obj[snake]``/``obj[camel]`` for mappings, else ``obj.snake`` (a WebRtcTransport)."""
    if isinstance(obj, Mapping):
        return obj[snake] if snake in obj else obj[camel]
    return getattr(obj, snake)


def answer_setup(offer_setup: str) -> str:
    """DTLS role of the SFU: passive (server) unless the offerer insists on passive."""
    return "active" if offer_setup == "passive" else "passive"


def _fingerprint_lines(dtls_parameters: Mapping[str, Any]) -> list[str]:
    """``a=fingerprint`` for sha-256 (else every fingerprint given)."""
    fps = list(dtls_parameters.get("fingerprints") or [])
    sha256 = [f for f in fps if str(f["algorithm"]).lower() == "sha-256"]
    chosen = sha256 or fps
    if not chosen:
        raise SdpError("transport dtls_parameters have no fingerprint")
    return [f"a=fingerprint:{f['algorithm']} {f['value']}" for f in chosen]


def candidate_line(candidate: Mapping[str, Any]) -> str:
    """``a=candidate:...`` (component 1) from a mediasoup-shaped ICE candidate."""
    ip = candidate.get("ip") or candidate.get("address")
    protocol = str(candidate.get("protocol", "udp")).lower()
    line = (
        f"a=candidate:{candidate['foundation']} 1 {protocol} {candidate['priority']} "
        f"{ip} {candidate['port']} typ {candidate.get('type', 'host')}"
    )
    if protocol == "tcp":
        line += f" tcptype {candidate.get('tcpType', 'passive')}"
    return line


def _codec_lines(codec: Mapping[str, Any]) -> list[str]:
    """``a=rtpmap``, ``a=rtcp-fb`` and ``a=fmtp`` lines of one codec."""
    name = str(codec["mimeType"]).split("/", 1)[1]
    pt = codec["payloadType"]
    rtpmap = f"a=rtpmap:{pt} {name}/{codec['clockRate']}"
    if str(codec["mimeType"]).lower().startswith("audio/") and codec.get("channels", 1) > 1:
        rtpmap += f"/{codec['channels']}"
    lines = [rtpmap]
    for fb in codec.get("rtcpFeedback") or []:
        lines.append(f"a=rtcp-fb:{pt} {fb['type']}" + (f" {fb['parameter']}" if fb.get("parameter") else ""))
    params = codec.get("parameters") or {}
    if params:
        lines.append(f"a=fmtp:{pt} " + ";".join(f"{k}={v}" if v != "" else k for k, v in params.items()))
    return lines


def _ssrc_lines(params: Mapping[str, Any], msid: str) -> list[str]:
    """``a=ssrc``/``a=ssrc-group:FID`` lines of a sending (WHEP) section."""
    cname = (params.get("rtcp") or {}).get("cname") or "sfu"
    lines: list[str] = []
    for encoding in params.get("encodings") or []:
        ssrcs = [encoding["ssrc"]] if "ssrc" in encoding else []
        if "rtx" in encoding and ssrcs:
            ssrcs.append(encoding["rtx"]["ssrc"])
            lines.append(f"a=ssrc-group:FID {ssrcs[0]} {ssrcs[1]}")
        for ssrc in ssrcs:
            lines += [f"a=ssrc:{ssrc} cname:{cname}", f"a=ssrc:{ssrc} msid:{msid}"]
    return lines


def _rejected_section(section: MediaSection, transport_lines: list[str], setup: str) -> list[str]:
    """A port-0 m-section mirroring the offered one.

    ICE credentials, fingerprint, setup, rtcp-mux and the offered rtpmaps are
    repeated (no candidates): some stacks (aiortc) validate them on every
    m-section, rejected or not. ``a=inactive`` keeps such stacks from sending.
    """
    lines = [f"m={section.kind} 0 {section.protocol} {' '.join(section.formats)}", "c=IN IP4 0.0.0.0"]
    lines += transport_lines[:-1] + [f"a=setup:{setup}"]
    if section.mid is not None:
        lines.append(f"a=mid:{section.mid}")
    lines += ["a=inactive", "a=rtcp-mux"]
    for codec in section.codecs if section.kind in ("audio", "video") else []:
        lines += [ln for ln in _codec_lines(codec_to_parameters(section.kind, codec)) if "rtcp-fb" not in ln]
    return lines


def _accepted_section(
    section: MediaSection, answer: Mapping[str, Any], transport_lines: list[str], setup: str
) -> list[str]:
    """One accepted m-section of the answer."""
    params = answer["rtp_parameters"]
    direction = answer.get("direction", "recvonly")
    pts = " ".join(str(c["payloadType"]) for c in params["codecs"])
    lines = [f"m={section.kind} 9 {section.protocol} {pts}", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0"]
    lines += transport_lines[:-1]  # ICE credentials and fingerprints; candidates go last
    lines += [f"a=setup:{setup}", f"a=mid:{section.mid}"]
    offered = {e.id: e.direction for e in section.extmaps}
    for ext in params.get("headerExtensions") or []:
        # RFC 8285 §6: the answer mirrors an offered direction (2/recvonly -> 2/sendonly)
        ext_direction = {"recvonly": "/sendonly", "sendonly": "/recvonly"}.get(offered.get(ext["id"]) or "", "")
        lines.append(f"a=extmap:{ext['id']}{ext_direction} {ext['uri']}")
    lines.append(f"a={direction}")
    msid = answer.get("msid") or f"sfu-{section.mid} {section.kind}-{section.mid}"
    if direction in ("sendonly", "sendrecv"):
        lines.append(f"a=msid:{msid}")
    lines.append("a=rtcp-mux")
    if section.rtcp_rsize and (params.get("rtcp") or {}).get("reducedSize", True):
        lines.append("a=rtcp-rsize")  # RFC 5506: only when the offer had it
    for codec in params["codecs"]:
        lines += _codec_lines(codec)
    if direction in ("sendonly", "sendrecv"):
        lines += _ssrc_lines(params, msid)
    rids = [str(e["rid"]) for e in params.get("encodings") or [] if e.get("rid")]
    if direction == "recvonly" and len(rids) > 1:
        # RFC 8851/8853: the offered send rids, received; without these lines
        # the offerer falls back to one encoding
        lines += [f"a=rid:{rid} recv" for rid in rids]
        lines.append("a=simulcast:recv " + ";".join(rids))
    return lines + transport_lines[-1].split(CRLF)


def _transport_lines(transport_params: Any) -> list[str]:
    """ICE credentials, fingerprints and (as one joined last item) candidates."""
    ice = _get(transport_params, "ice_parameters", "iceParameters")
    candidates = _get(transport_params, "ice_candidates", "iceCandidates")
    dtls = _get(transport_params, "dtls_parameters", "dtlsParameters")
    lines = [f"a=ice-ufrag:{ice['usernameFragment']}", f"a=ice-pwd:{ice['password']}"]
    lines += _fingerprint_lines(dtls)
    candidate_block = [candidate_line(c) for c in candidates] + ["a=end-of-candidates"]
    return lines + [CRLF.join(candidate_block)]


def _answer_bundle(offer: Offer, accepted: list[int]) -> list[str]:
    """Mids of the answer's BUNDLE group: every accepted mid, those of the
    offer's BUNDLE group first and in its order, so the first mid of the
    offer's group that we accept is the answerer-tagged one (RFC 8843 §7.3.1)."""
    mids = [str(offer.media[i].mid) for i in accepted]
    return [m for m in offer.bundle_mids if m in mids] + [m for m in mids if m not in offer.bundle_mids]


def build_answer(
    offer: Offer, transport_params: Any, media_answers: Sequence[Mapping[str, Any] | None]
) -> str:
    """The SDP answer of the SFU (ICE-lite, DTLS server), CRLF-terminated.

    ``transport_params`` is a mapping with ``ice_parameters``,
    ``ice_candidates`` and ``dtls_parameters`` (camelCase keys also work) or
    a :class:`~sfu.webrtc_transport.WebRtcTransport`. ``media_answers`` has
    one entry per offer m-section: ``None`` (or ``{"rejected": True}``) for a
    section we reject (port 0 and ``a=inactive`` in the answer, as is every
    section the offer rejected; bundle-only sections are not rejected), else
    ``{"direction", "rtp_parameters"[, "msid"]}`` with the producer's parameters (WHIP, ``recvonly``) or the consumer's (WHEP,
    ``sendonly``; ssrc/FID/msid lines are added). Raises :class:`SdpError`
    if the counts differ or nothing is accepted.

    Every accepted section (a bundle-only one too) gets port 9, our ICE
    credentials, fingerprint, candidates and ``a=rtcp-mux``, and its mid is
    in our BUNDLE group (see :func:`_answer_bundle` for the order).
    """
    if len(media_answers) != len(offer.media):
        raise SdpError(f"{len(media_answers)} media answers for {len(offer.media)} m-sections")
    transport_lines = _transport_lines(transport_params)
    setup = answer_setup(offer.setup)
    accepted = [
        i for i, (s, a) in enumerate(zip(offer.media, media_answers)) if a and not a.get("rejected") and not s.rejected
    ]
    if not accepted:
        raise SdpError("no m-section accepted")
    for i in accepted:
        if offer.media[i].mid is None:
            raise SdpError(f"m-section {i}: missing a=mid")
    session_id = random.randint(1, 2**62)
    lines = ["v=0", f"o=- {session_id} 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    mids = " ".join(_answer_bundle(offer, accepted))
    lines += [f"a=group:BUNDLE {mids}", "a=ice-lite", "a=msid-semantic: WMS *"]
    for i, (section, answer) in enumerate(zip(offer.media, media_answers)):
        if i in accepted and answer:
            lines += _accepted_section(section, answer, transport_lines, setup)
        else:
            lines += _rejected_section(section, transport_lines, setup)
    return CRLF.join(lines) + CRLF


__all__ = [
    "Codec",
    "Extmap",
    "MediaSection",
    "Offer",
    "Rid",
    "SdpError",
    "answer_setup",
    "build_answer",
    "candidate_line",
    "codec_to_parameters",
    "offer_encodings",
    "offer_to_consumer_capabilities",
    "offer_to_producer_parameters",
    "parse_fmtp",
    "parse_offer",
    "whip_media_answers",
]
