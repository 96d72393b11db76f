"""libsrtp (the one bundled in the pylibsrtp wheel) for the load generator
and the SRTP benchmark: an implementation independent of the engine's, on
the clients' side. Its C functions' addresses come from pylibsrtp's cffi
module, so the generator's C loop can call them without the GIL."""

from __future__ import annotations

import pylibsrtp
from pylibsrtp._binding import ffi, lib

from sfu.srtp import CryptoSuite


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
    """One direction of SRTP with libsrtp; keeps the session alive."""

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
        """The `srtp_t` handed to the C loop."""
        return int(ffi.cast("uintptr_t", self.session._srtp[0]))
