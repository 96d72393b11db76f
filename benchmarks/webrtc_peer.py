"""ICE + DTLS-SRTP set-up for the load generator's participants.

The generator's participants are WebRTC clients as far as the SFU can tell:
each one sends a STUN binding request with USE-CANDIDATE (it is the
controlling agent, the SFU is ICE-lite), then runs the DTLS handshake as the
client and derives its SRTP keys. After that the compiled loop
(`benchmarks/src/_loadgen.c`) protects and unprotects with libsrtp through
the `srtp_t` sessions made here, and keeps ICE consent alive by resending
the binding request.

Everything runs on the generator's own non-blocking UDP sockets, one per
participant, with a select() loop: no asyncio, since it happens once before
the measured window.
"""

from __future__ import annotations

import os
import select
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from aioice import stun

from sfu.dtls import Certificate, DtlsConnected, DtlsEndpoint, DtlsStateChange, is_dtls
from sfu.srtp import crypto_suite

from .libsrtp import SrtpContext, engine_functions


class HandshakeError(RuntimeError):
    pass


@dataclass
class _Peer:
    sock: socket.socket
    remote: tuple[str, int]
    ufrag: str
    pwd: str
    remote_ufrag: str
    remote_pwd: str
    remote_dtls: dict[str, Any]
    request: bytes = b""
    ice_done: bool = False
    next_check: float = 0.0
    dtls: Optional[DtlsEndpoint] = None
    suite: Optional[str] = None
    srtp_out: Optional[SrtpContext] = None
    srtp_in: Optional[SrtpContext] = None
    failure: Optional[str] = None
    events: list[str] = field(default_factory=list)


def binding_request(remote_ufrag: str, local_ufrag: str, remote_pwd: str, nominate: bool = True) -> bytes:
    """A STUN binding request of a controlling agent (RFC 8445 7.1.1)."""
    req = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    req.attributes["USERNAME"] = f"{remote_ufrag}:{local_ufrag}"
    req.attributes["PRIORITY"] = 1853824767
    req.attributes["ICE-CONTROLLING"] = int.from_bytes(os.urandom(8), "big")
    if nominate:
        req.attributes["USE-CANDIDATE"] = None
    req.add_message_integrity(remote_pwd.encode())
    req.add_fingerprint()
    return bytes(req)


class WebRtcPeers:
    """The WebRTC side of N generator participants (one socket each).

    ``srtp_profiles``: the DTLS-SRTP profiles offered, in order (the SFU
    picks by its own preference among them)."""

    def __init__(self, socks: list[socket.socket], srtp_profiles: list[str]) -> None:
        for name in srtp_profiles:
            crypto_suite(name)
        self.socks = socks
        self.srtp_profiles = list(srtp_profiles)
        self.certificate = Certificate.generate("sfu-bench")
        self.peers: list[_Peer] = []

    @property
    def dtls_parameters(self) -> dict[str, Any]:
        """What the SFU's transport.connect() needs from every participant."""
        return {"role": "client", "fingerprints": self.certificate.fingerprints}

    def handshake(self, remotes: list[dict[str, Any]], timeout: float = 30.0) -> None:
        """ICE then DTLS for every participant, all at once.

        remotes[i]: {"iceParameters": {usernameFragment, password},
        "candidate": [ip, port], "dtlsParameters": {...}} of participant i's
        SFU transport."""
        if len(remotes) != len(self.socks):
            raise ValueError("one remote per participant")
        self.peers = []
        for sock, r in zip(self.socks, remotes):
            ice = r["iceParameters"]
            p = _Peer(sock=sock, remote=(r["candidate"][0], int(r["candidate"][1])),
                      ufrag=secrets.token_hex(4), pwd=secrets.token_hex(12),
                      remote_ufrag=ice["usernameFragment"], remote_pwd=ice["password"],
                      remote_dtls=r["dtlsParameters"])
            p.request = binding_request(p.remote_ufrag, p.ufrag, p.remote_pwd)
            self.peers.append(p)
        by_fd = {p.sock.fileno(): p for p in self.peers}
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            pending = [p for p in self.peers if p.srtp_in is None]
            failed = [p for p in self.peers if p.failure]
            if failed:
                raise HandshakeError(f"{len(failed)} participant(s) failed: {failed[0].failure}")
            if not pending:
                return
            if now > deadline:
                stage = "ICE" if any(not p.ice_done for p in pending) else "DTLS"
                raise HandshakeError(f"{len(pending)} of {len(self.peers)} participants not connected "
                                     f"after {timeout:g} s (stuck in {stage})")
            wake = now + 0.05
            for p in pending:
                if not p.ice_done:
                    if now >= p.next_check:
                        p.sock.sendto(p.request, p.remote)
                        p.next_check = now + 0.2
                    wake = min(wake, p.next_check)
                elif p.dtls is not None:
                    self._send(p, p.dtls.poll(now))
                    t = p.dtls.next_timeout()
                    if t is not None:
                        wake = min(wake, t)
            ready, _, _ = select.select(list(by_fd), [], [], max(0.0, wake - time.monotonic()))
            for fd in ready:
                p = by_fd[fd]
                for _ in range(64):
                    try:
                        data, _addr = p.sock.recvfrom(2048)
                    except BlockingIOError:
                        break
                    self._on_datagram(p, data, time.monotonic())

    def _on_datagram(self, p: _Peer, data: bytes, now: float) -> None:
        if data and data[0] < 2:
            try:
                msg = stun.parse_message(data)
            except ValueError:
                return
            if msg.message_class == stun.Class.RESPONSE and not p.ice_done:
                p.ice_done = True
                p.dtls = DtlsEndpoint(self.certificate, role="client", srtp_profiles=self.srtp_profiles)
                remote_role = p.remote_dtls.get("role")
                self._send(p, p.dtls.connect(p.remote_dtls["fingerprints"],
                                             "server" if remote_role in (None, "auto") else remote_role, now))
            elif msg.message_class == stun.Class.ERROR:
                p.failure = f"ICE binding refused: {msg.attributes.get('ERROR-CODE')}"
        elif is_dtls(data) and p.dtls is not None:
            self._send(p, p.dtls.handle_datagram(data, now))
        # anything else (RTCP from the SFU once connected) is not ours to read yet

    def _send(self, p: _Peer, out: Any) -> None:
        for d in out.datagrams:
            p.sock.sendto(d, p.remote)
        for ev in out.events:
            if isinstance(ev, DtlsConnected):
                suite = crypto_suite(ev.suite)
                p.suite = ev.suite
                p.srtp_out = SrtpContext(suite, ev.local_master, outbound=True)
                p.srtp_in = SrtpContext(suite, ev.remote_master, outbound=False)
            elif isinstance(ev, DtlsStateChange) and ev.state == "failed":
                p.failure = f"DTLS failed: {ev.reason}"

    # -- what the compiled loop needs -------------------------------------

    def run_options(self) -> dict[str, Any]:
        protect, unprotect, _, unprotect_rtcp = engine_functions()
        return {
            "srtp_out": [p.srtp_out.address for p in self.peers],  # type: ignore[union-attr]
            "srtp_in": [p.srtp_in.address for p in self.peers],    # type: ignore[union-attr]
            "srtp_functions": (protect, unprotect, unprotect_rtcp),
            "stun": [binding_request(p.remote_ufrag, p.ufrag, p.remote_pwd, nominate=False) for p in self.peers],
        }

    @property
    def suites(self) -> list[Optional[str]]:
        return [p.suite for p in self.peers]
