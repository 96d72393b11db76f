"""SRTP crypto suites and keys as the control plane handles them.

The engine protects and unprotects with contexts of its own (the C unit
sfu/_fastpath/src/srtp.c, on OpenSSL's libcrypto), created from the key
bytes and the suite's profile number given here: Python never holds an SRTP
context the I/O thread uses.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from .errors import InvalidParametersError, UnsupportedError


@dataclass(frozen=True)
class CryptoSuite:
    """An SRTP protection profile (RFC 3711, RFC 7714)."""

    name: str
    profile: int  # the DTLS-SRTP protection profile number (RFC 5764 4.1.2, RFC 7714 14.2)
    key_length: int
    salt_length: int

    @property
    def master_length(self) -> int:
        return self.key_length + self.salt_length


CRYPTO_SUITES: dict[str, CryptoSuite] = {
    s.name: s
    for s in (
        CryptoSuite("AEAD_AES_256_GCM", 8, 32, 12),
        CryptoSuite("AEAD_AES_128_GCM", 7, 16, 12),
        CryptoSuite("AES_CM_128_HMAC_SHA1_80", 1, 16, 14),
        CryptoSuite("AES_CM_128_HMAC_SHA1_32", 2, 16, 14),
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
