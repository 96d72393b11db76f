"""SRTP crypto suites and the bridge from pylibsrtp to the compiled engine.

The engine calls libsrtp's srtp_protect/unprotect from C; the functions are
the ones exported by the libsrtp bundled in the pylibsrtp wheel, whose cffi
module gives their addresses. Sessions are created here with pylibsrtp's
Python API and handed to the engine as `srtp_t` addresses.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import pylibsrtp
from pylibsrtp._binding import ffi, lib

from .errors import InvalidParametersError, UnsupportedError


@dataclass(frozen=True)
class CryptoSuite:
    """An SRTP protection profile (RFC 3711, RFC 7714)."""

    name: str
    profile: int
    key_length: int
    salt_length: int

    @property
    def master_length(self) -> int:
        return self.key_length + self.salt_length


CRYPTO_SUITES: dict[str, CryptoSuite] = {
    s.name: s
    for s in (
        CryptoSuite("AEAD_AES_256_GCM", lib.srtp_profile_aead_aes_256_gcm, 32, 12),
        CryptoSuite("AEAD_AES_128_GCM", lib.srtp_profile_aead_aes_128_gcm, 16, 12),
        CryptoSuite("AES_CM_128_HMAC_SHA1_80", lib.srtp_profile_aes128_cm_sha1_80, 16, 14),
        CryptoSuite("AES_CM_128_HMAC_SHA1_32", lib.srtp_profile_aes128_cm_sha1_32, 16, 14),
    )
}


def crypto_suite(name: str) -> CryptoSuite:
    """Looks up a suite by its mediasoup/SDES name."""
    try:
        return CRYPTO_SUITES[name]
    except KeyError:
        raise UnsupportedError(
            f"unsupported SRTP crypto suite {name!r} (supported: {', '.join(CRYPTO_SUITES)})"
        ) from None


def generate_key(suite: CryptoSuite) -> bytes:
    return os.urandom(suite.master_length)


def decode_srtp_parameters(params: object, field: str = "srtpParameters") -> tuple[CryptoSuite, bytes]:
    """Validates mediasoup's {cryptoSuite, keyBase64} and returns (suite, key)."""
    if not isinstance(params, dict):
        raise InvalidParametersError(f"{field}: must be an object with cryptoSuite and keyBase64")
    name = params.get("cryptoSuite")
    if not isinstance(name, str):
        raise InvalidParametersError(f"{field}.cryptoSuite: missing or not a string")
    suite = crypto_suite(name)
    key64 = params.get("keyBase64")
    if not isinstance(key64, str):
        raise InvalidParametersError(f"{field}.keyBase64: missing or not a string")
    try:
        key = base64.b64decode(key64, validate=True)
    except ValueError:
        raise InvalidParametersError(f"{field}.keyBase64: not valid base64") from None
    if len(key) != suite.master_length:
        raise InvalidParametersError(
            f"{field}.keyBase64: {suite.name} needs a {suite.master_length}-byte master key+salt, got {len(key)}"
        )
    return suite, key


def encode_srtp_parameters(suite: CryptoSuite, key: bytes) -> dict[str, str]:
    return {"cryptoSuite": suite.name, "keyBase64": base64.b64encode(key).decode()}


def _address(name: str) -> int:
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def engine_functions() -> tuple[int, int, int, int]:
    """Addresses of srtp_protect, srtp_unprotect, srtp_protect_rtcp, srtp_unprotect_rtcp."""
    return (
        _address("srtp_protect"),
        _address("srtp_unprotect"),
        _address("srtp_protect_rtcp"),
        _address("srtp_unprotect_rtcp"),
    )


class SrtpContext:
    """One direction of SRTP for a transport; keeps the libsrtp session alive."""

    def __init__(self, suite: CryptoSuite, key: bytes, outbound: bool) -> None:
        policy = pylibsrtp.Policy(
            key=key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=suite.profile,
        )
        if outbound:
            # Retransmissions resend the same sequence number.
            policy.allow_repeat_tx = True
        self.suite = suite
        self.session = pylibsrtp.Session(policy=policy)

    @property
    def address(self) -> int:
        """The `srtp_t` handed to the engine."""
        return int(ffi.cast("uintptr_t", self.session._srtp[0]))
