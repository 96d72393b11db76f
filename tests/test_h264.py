"""Tests of sfu.h264 (RFC 6184 profile-level-id parsing and negotiation)."""

from __future__ import annotations

from typing import Any

import pytest

from sfu.errors import UnsupportedError
from sfu.h264 import (
    DEFAULT_PROFILE_LEVEL_ID,
    Level,
    Profile,
    ProfileLevelId,
    generate_profile_level_id_for_answer,
    is_level_asymmetry_allowed,
    is_same_profile,
    parse_profile_level_id,
    parse_sdp_profile_level_id,
    profile_level_id_to_string,
)


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        " 42e01f",
        "4242e01f",
        "e01f",
        "gggggg",
        "42e0zz",
        "000000",
        # Invalid levels.
        "42e000",
        "42e00f",
        "42e0ff",
        # Invalid profiles.
        "42e11f",
        "58601f",
        "64e01f",
        "650c1f",
    ],
)
def test_parse_invalid(value: Any) -> None:
    assert parse_profile_level_id(value) is None


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("42e01f", Level.L3_1),
        ("42e00b", Level.L1_1),
        ("42f00b", Level.L1_b),  # constraint_set3 + level_idc 11 -> 1b
        ("42100b", Level.L1_b),
        ("4d100b", Level.L1_b),
        ("42e00a", Level.L1),
        ("42C02A", Level.L4_2),
        ("640c34", Level.L5_2),
        ("640c1f", Level.L3_1),
        ("4d0032", Level.L5),
    ],
)
def test_parse_level(value: str, level: Level) -> None:
    parsed = parse_profile_level_id(value)
    assert parsed is not None
    assert parsed.level == level


@pytest.mark.parametrize(
    ("value", "profile"),
    [
        ("42e01f", Profile.ConstrainedBaseline),
        ("42C02A", Profile.ConstrainedBaseline),
        ("4de01f", Profile.ConstrainedBaseline),
        ("58f01f", Profile.ConstrainedBaseline),
        ("42a01f", Profile.Baseline),
        ("58A01F", Profile.Baseline),
        ("42001f", Profile.Baseline),
        ("4D401f", Profile.Main),
        ("4d001f", Profile.Main),
        ("64001f", Profile.High),
        ("640c1f", Profile.ConstrainedHigh),
        ("f4001f", Profile.PredictiveHigh444),
    ],
)
def test_parse_profile(value: str, profile: Profile) -> None:
    parsed = parse_profile_level_id(value)
    assert parsed is not None
    assert parsed.profile == profile


@pytest.mark.parametrize(
    ("profile_level_id", "expected"),
    [
        (ProfileLevelId(Profile.ConstrainedBaseline, Level.L3_1), "42e01f"),
        (ProfileLevelId(Profile.Baseline, Level.L1), "42000a"),
        (ProfileLevelId(Profile.Main, Level.L3_1), "4d001f"),
        (ProfileLevelId(Profile.ConstrainedHigh, Level.L4_2), "640c2a"),
        (ProfileLevelId(Profile.High, Level.L4_2), "64002a"),
        (ProfileLevelId(Profile.PredictiveHigh444, Level.L5_1), "f40033"),
        # Level 1b special cases.
        (ProfileLevelId(Profile.ConstrainedBaseline, Level.L1_b), "42f00b"),
        (ProfileLevelId(Profile.Baseline, Level.L1_b), "42100b"),
        (ProfileLevelId(Profile.Main, Level.L1_b), "4d100b"),
        # Level 1b is not allowed for the High profiles.
        (ProfileLevelId(Profile.High, Level.L1_b), None),
        (ProfileLevelId(Profile.ConstrainedHigh, Level.L1_b), None),
    ],
)
def test_to_string(profile_level_id: ProfileLevelId, expected: str | None) -> None:
    assert profile_level_id_to_string(profile_level_id) == expected


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("42e01f", "42e01f"),
        ("42E01F", "42e01f"),
        ("4d100b", "4d100b"),
        ("4D100B", "4d100b"),
        ("640c2a", "640c2a"),
        ("640C2A", "640c2a"),
        ("42c02a", "42e02a"),  # Constrained Baseline is canonicalised to 42e0.
    ],
)
def test_round_trip(value: str, canonical: str) -> None:
    parsed = parse_profile_level_id(value)
    assert parsed is not None
    assert profile_level_id_to_string(parsed) == canonical


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (None, DEFAULT_PROFILE_LEVEL_ID),
        ({}, DEFAULT_PROFILE_LEVEL_ID),
        ({"profile-level-id": ""}, DEFAULT_PROFILE_LEVEL_ID),
        ({"packetization-mode": 1}, DEFAULT_PROFILE_LEVEL_ID),
        ({"profile-level-id": "640c2a"}, ProfileLevelId(Profile.ConstrainedHigh, Level.L4_2)),
        ({"profile-level-id": "foobar"}, None),
    ],
)
def test_parse_sdp_profile_level_id(params: dict[str, Any] | None, expected: Any) -> None:
    assert parse_sdp_profile_level_id(params) == expected


def test_default_is_42e01f() -> None:
    assert profile_level_id_to_string(DEFAULT_PROFILE_LEVEL_ID) == "42e01f"


@pytest.mark.parametrize(
    ("params1", "params2", "expected"),
    [
        ({"foo": "foo"}, {"bar": "bar"}, True),
        ({"profile-level-id": "42e01f"}, {"profile-level-id": "42C02A"}, True),
        ({"profile-level-id": "42a01f"}, {"profile-level-id": "58A01F"}, True),
        ({"profile-level-id": "42e01f"}, None, True),
        ({"profile-level-id": "640c1f"}, {"profile-level-id": "640c34"}, True),
        (None, {"profile-level-id": "4d001f"}, False),
        ({"profile-level-id": "42a01f"}, {"profile-level-id": "640c1f"}, False),
        ({"profile-level-id": "42000a"}, {"profile-level-id": "64002a"}, False),
        ({"profile-level-id": "42e01f"}, {"profile-level-id": "42001f"}, False),
        ({"profile-level-id": "640c1f"}, {"profile-level-id": "64001f"}, False),
        ({"profile-level-id": "zzzzzz"}, {"profile-level-id": "zzzzzz"}, False),
    ],
)
def test_is_same_profile(
    params1: dict[str, Any] | None, params2: dict[str, Any] | None, expected: bool
) -> None:
    assert is_same_profile(params1, params2) is expected
    assert is_same_profile(params2, params1) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, True), ("1", True), (True, True), (0, False), ("0", False), (False, False), (None, False)],
)
def test_level_asymmetry_allowed(value: Any, expected: bool) -> None:
    params = {} if value is None else {"level-asymmetry-allowed": value}
    assert is_level_asymmetry_allowed(params) is expected


LOW = {"profile-level-id": "42e015"}
HIGH = {"profile-level-id": "42e01f"}
ASYM = {"level-asymmetry-allowed": "1"}


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        # Neither side has profile-level-id: nothing to answer.
        (None, None, None),
        ({}, {"level-asymmetry-allowed": 1}, None),
        # Symmetric levels: the answer is capped to the lower level.
        (LOW, HIGH, "42e015"),
        (HIGH, LOW, "42e015"),
        # Asymmetry on one side only is not enough.
        ({**HIGH, **ASYM}, LOW, "42e015"),
        (HIGH, {**LOW, **ASYM}, "42e015"),
        # Asymmetry allowed on both sides: the local level is answered.
        ({**HIGH, **ASYM}, {**LOW, **ASYM}, "42e01f"),
        ({**LOW, **ASYM}, {**HIGH, "level-asymmetry-allowed": 1}, "42e015"),
        # A missing profile-level-id on one side is the default 42e01f.
        ({}, LOW, "42e015"),
        (LOW, {}, "42e015"),
        ({"profile-level-id": "42e034"}, {}, "42e01f"),
        # Level 1b is lower than 1.1 but higher than 1.
        ({"profile-level-id": "42f00b"}, {"profile-level-id": "42e00c"}, "42f00b"),
        ({"profile-level-id": "42e00c"}, {"profile-level-id": "42f00b"}, "42f00b"),
        ({"profile-level-id": "42f00b"}, {"profile-level-id": "42e00a"}, "42e00a"),
        ({"profile-level-id": "42e00a"}, {"profile-level-id": "42f00b"}, "42e00a"),
        ({"profile-level-id": "42f00b"}, {"profile-level-id": "42f00b"}, "42f00b"),
        ({"profile-level-id": "4d100b"}, {"profile-level-id": "4d0015"}, "4d100b"),
        # Other profiles keep their profile in the answer.
        ({"profile-level-id": "640c34"}, {"profile-level-id": "640c1f"}, "640c1f"),
        ({"profile-level-id": "4d0032"}, {"profile-level-id": "4d0032"}, "4d0032"),
    ],
)
def test_generate_answer(
    local: dict[str, Any] | None, remote: dict[str, Any] | None, expected: str | None
) -> None:
    assert generate_profile_level_id_for_answer(local, remote) == expected


@pytest.mark.parametrize(
    ("local", "remote", "message"),
    [
        ({"profile-level-id": "42e01f"}, {"profile-level-id": "640c1f"}, "profile mismatch"),
        ({"profile-level-id": "4d001f"}, {}, "profile mismatch"),
        ({"profile-level-id": "foobar"}, {"profile-level-id": "42e01f"}, "invalid local"),
        ({"profile-level-id": "42e01f"}, {"profile-level-id": "42e0ff"}, "invalid remote"),
    ],
)
def test_generate_answer_errors(
    local: dict[str, Any], remote: dict[str, Any], message: str
) -> None:
    with pytest.raises(UnsupportedError, match=message):
        generate_profile_level_id_for_answer(local, remote)
