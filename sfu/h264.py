"""H.264 ``profile-level-id`` parsing and negotiation (RFC 6184, section 8.1).

Behaves like the ``h264-profile-level-id`` npm package used by mediasoup
(itself a port of libwebrtc's ``h264_profile_level_id.cc``):

* ``profile-level-id`` is three hex bytes: ``profile_idc``, ``profile_iop``
  (constraint flags) and ``level_idc``;
* the profile is derived from ``profile_idc`` plus a bit pattern on
  ``profile_iop``;
* ``level_idc == 11`` with constraint_set3 set means level 1b (for the
  Baseline/Main families);
* when ``profile-level-id`` is absent, ``42e01f`` (Constrained Baseline, level
  3.1) is assumed, as libwebrtc does for backwards compatibility.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sfu.errors import UnsupportedError


class Profile(IntEnum):
    """H.264 profiles distinguished by WebRTC."""

    ConstrainedBaseline = 1
    Baseline = 2
    Main = 3
    ConstrainedHigh = 4
    High = 5
    PredictiveHigh444 = 6


class Level(IntEnum):
    """H.264 levels; the value is ``level_idc`` except for 1b (0)."""

    L1_b = 0
    L1 = 10
    L1_1 = 11
    L1_2 = 12
    L1_3 = 13
    L2 = 20
    L2_1 = 21
    L2_2 = 22
    L3 = 30
    L3_1 = 31
    L3_2 = 32
    L4 = 40
    L4_1 = 41
    L4_2 = 42
    L5 = 50
    L5_1 = 51
    L5_2 = 52


@dataclass(frozen=True)
class ProfileLevelId:
    """A parsed ``profile-level-id``."""

    profile: Profile
    level: Level


DEFAULT_PROFILE_LEVEL_ID = ProfileLevelId(Profile.ConstrainedBaseline, Level.L3_1)
"""Assumed when ``profile-level-id`` is absent (i.e. ``42e01f``)."""

_CONSTRAINT_SET3_FLAG = 0x10


@dataclass(frozen=True)
class _BitPattern:
    """A byte pattern such as ``x1xx0000`` where ``x`` matches either bit."""

    mask: int
    value: int

    @classmethod
    def of(cls, pattern: str) -> _BitPattern:
        mask = 0
        value = 0
        for char in pattern:
            mask = (mask << 1) | (char != "x")
            value = (value << 1) | (char == "1")
        return cls(mask, value)

    def matches(self, byte: int) -> bool:
        return (byte & self.mask) == self.value


# (profile_idc, profile_iop pattern, profile), from RFC 6184 section 8.1.
_PROFILE_PATTERNS: tuple[tuple[int, _BitPattern, Profile], ...] = (
    (0x42, _BitPattern.of("x1xx0000"), Profile.ConstrainedBaseline),
    (0x4D, _BitPattern.of("1xxx0000"), Profile.ConstrainedBaseline),
    (0x58, _BitPattern.of("11xx0000"), Profile.ConstrainedBaseline),
    (0x42, _BitPattern.of("x0xx0000"), Profile.Baseline),
    (0x58, _BitPattern.of("10xx0000"), Profile.Baseline),
    (0x4D, _BitPattern.of("0x0x0000"), Profile.Main),
    (0x64, _BitPattern.of("00000000"), Profile.High),
    (0x64, _BitPattern.of("00001100"), Profile.ConstrainedHigh),
    (0xF4, _BitPattern.of("00000000"), Profile.PredictiveHigh444),
)

# Canonical profile_idc + profile_iop hex for serialisation.
_PROFILE_IDC_IOP: dict[Profile, str] = {
    Profile.ConstrainedBaseline: "42e0",
    Profile.Baseline: "4200",
    Profile.Main: "4d00",
    Profile.ConstrainedHigh: "640c",
    Profile.High: "6400",
    Profile.PredictiveHigh444: "f400",
}

# Level 1b has its own encodings (level_idc 11 + constraint_set3).
_LEVEL_1B_STRINGS: dict[Profile, str] = {
    Profile.ConstrainedBaseline: "42f00b",
    Profile.Baseline: "42100b",
    Profile.Main: "4d100b",
}

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _parse_level(level_idc: int, profile_iop: int) -> Level | None:
    """Map ``level_idc`` to a :class:`Level`, handling the 1b special case."""
    if level_idc == Level.L1_1:
        return Level.L1_b if profile_iop & _CONSTRAINT_SET3_FLAG else Level.L1_1
    if level_idc == Level.L1_b:
        return None  # 0 is never a valid level_idc on the wire.
    try:
        return Level(level_idc)
    except ValueError:
        return None


def _parse_profile(profile_idc: int, profile_iop: int) -> Profile | None:
    """Map ``profile_idc``/``profile_iop`` to a :class:`Profile`."""
    for idc, pattern, profile in _PROFILE_PATTERNS:
        if idc == profile_idc and pattern.matches(profile_iop):
            return profile
    return None


def parse_profile_level_id(value: Any) -> ProfileLevelId | None:
    """Parse a ``profile-level-id`` string (3 hex bytes, case-insensitive).

    Returns ``None`` when the string is malformed or its profile or level is
    not recognised.
    """
    if not isinstance(value, str) or len(value) != 6 or not set(value) <= _HEX_DIGITS:
        return None
    numeric = int(value, 16)
    if numeric == 0:
        return None
    level_idc = numeric & 0xFF
    profile_iop = (numeric >> 8) & 0xFF
    profile_idc = (numeric >> 16) & 0xFF
    level = _parse_level(level_idc, profile_iop)
    if level is None:
        return None
    profile = _parse_profile(profile_idc, profile_iop)
    if profile is None:
        return None
    return ProfileLevelId(profile, level)


def profile_level_id_to_string(profile_level_id: ProfileLevelId) -> str | None:
    """Canonical lowercase hex form, or ``None`` if the combination is invalid."""
    if profile_level_id.level == Level.L1_b:
        return _LEVEL_1B_STRINGS.get(profile_level_id.profile)
    idc_iop = _PROFILE_IDC_IOP.get(profile_level_id.profile)
    if idc_iop is None:
        return None
    return f"{idc_iop}{int(profile_level_id.level):02x}"


def parse_sdp_profile_level_id(params: Mapping[str, Any] | None) -> ProfileLevelId | None:
    """Parse ``profile-level-id`` from codec parameters.

    Returns :data:`DEFAULT_PROFILE_LEVEL_ID` when the key is absent or empty,
    and ``None`` when it is present but invalid.
    """
    value = (params or {}).get("profile-level-id")
    if not value:
        return DEFAULT_PROFILE_LEVEL_ID
    return parse_profile_level_id(value)


def is_same_profile(
    params1: Mapping[str, Any] | None, params2: Mapping[str, Any] | None
) -> bool:
    """True if both codec parameter sets have the same valid H.264 profile.

    Levels are not compared.
    """
    plid1 = parse_sdp_profile_level_id(params1)
    plid2 = parse_sdp_profile_level_id(params2)
    return plid1 is not None and plid2 is not None and plid1.profile == plid2.profile


def is_level_asymmetry_allowed(params: Mapping[str, Any] | None) -> bool:
    """True if ``level-asymmetry-allowed`` is ``1`` (number, string or ``True``)."""
    value = (params or {}).get("level-asymmetry-allowed")
    return value is True or (not isinstance(value, bool) and value in (1, "1"))


def _is_less_level(a: Level, b: Level) -> bool:
    """True if level ``a`` is lower than ``b``; 1b sits between 1 and 1.1.

    Follows libwebrtc's ``IsLess``. (The npm port returns ``a != L1`` for
    ``b == 1b``, which inverts the comparison; we do not copy that.)
    """
    if a == Level.L1_b:
        return b not in (Level.L1, Level.L1_b)
    if b == Level.L1_b:
        return a == Level.L1
    return a < b


def _min_level(a: Level, b: Level) -> Level:
    return a if _is_less_level(a, b) else b


def generate_profile_level_id_for_answer(
    local_supported_params: Mapping[str, Any] | None,
    remote_offered_params: Mapping[str, Any] | None,
) -> str | None:
    """``profile-level-id`` to put in an answer.

    Both parameter sets must carry the same profile (the caller is expected to
    have checked :func:`is_same_profile`). Returns ``None`` when neither side
    has ``profile-level-id`` (both use the default). When both sides allow
    level asymmetry the local level is answered, otherwise the lower of the
    two levels.

    Raises :class:`~sfu.errors.UnsupportedError` if either side's
    ``profile-level-id`` is invalid or the profiles differ.
    """
    local = local_supported_params or {}
    remote = remote_offered_params or {}
    if not local.get("profile-level-id") and not remote.get("profile-level-id"):
        return None
    local_plid = parse_sdp_profile_level_id(local)
    remote_plid = parse_sdp_profile_level_id(remote)
    if local_plid is None:
        raise UnsupportedError(
            f"invalid local H264 profile-level-id {local.get('profile-level-id')!r}"
        )
    if remote_plid is None:
        raise UnsupportedError(
            f"invalid remote H264 profile-level-id {remote.get('profile-level-id')!r}"
        )
    if local_plid.profile != remote_plid.profile:
        raise UnsupportedError(
            f"H264 profile mismatch [local:{local_plid.profile.name}, "
            f"remote:{remote_plid.profile.name}]"
        )
    asymmetry = is_level_asymmetry_allowed(local) and is_level_asymmetry_allowed(remote)
    level = local_plid.level if asymmetry else _min_level(local_plid.level, remote_plid.level)
    return profile_level_id_to_string(ProfileLevelId(local_plid.profile, level))


__all__ = [
    "DEFAULT_PROFILE_LEVEL_ID",
    "Level",
    "Profile",
    "ProfileLevelId",
    "generate_profile_level_id_for_answer",
    "is_level_asymmetry_allowed",
    "is_same_profile",
    "parse_profile_level_id",
    "parse_sdp_profile_level_id",
    "profile_level_id_to_string",
]
