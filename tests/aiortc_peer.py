"""aiortc driven through its ORTC objects, as an independent WebRTC peer for
tests (no SDP, no client-side WebRTC code of ours)."""

from __future__ import annotations

import asyncio

import pytest
from aioice import ice as aioice_ice
from aiortc import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceCandidate,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
)


class AiortcPeer:
    """aiortc's ICE + DTLS transports pointed at one of our WebRTC transports."""

    def __init__(self) -> None:
        self.gatherer = RTCIceGatherer(iceServers=[])
        self.ice = RTCIceTransport(self.gatherer)
        self.ice._connection.ice_controlling = True  # ORTC: the full agent controls a lite server
        self.certificate = RTCCertificate.generateCertificate()
        self.dtls = RTCDtlsTransport(self.ice, [self.certificate])

    def dtls_parameters(self, role: str = "server") -> dict:
        return {"role": role, "fingerprints": [
            {"algorithm": f.algorithm, "value": f.value} for f in self.dtls.getLocalParameters().fingerprints]}

    async def connect(self, transport: object, password: str | None = None,
                      timeout: float = 10.0) -> None:
        """transport: anything with ice_parameters / ice_candidates (mediasoup shapes), or a dict."""
        await self.gatherer.gather()
        params = transport["iceParameters"] if isinstance(transport, dict) else transport.ice_parameters
        candidates = transport["iceCandidates"] if isinstance(transport, dict) else transport.ice_candidates
        for c in candidates:
            await self.ice.addRemoteCandidate(RTCIceCandidate(
                component=1, foundation=c["foundation"], ip=c["ip"], port=c["port"], priority=c["priority"],
                protocol=c["protocol"], type=c["type"]))
        await self.ice.addRemoteCandidate(None)
        await asyncio.wait_for(self.ice.start(RTCIceParameters(
            usernameFragment=params["usernameFragment"], password=password or params["password"], iceLite=True)),
            timeout)

    async def start_dtls(self, transport: object) -> None:
        dtls = transport["dtlsParameters"] if isinstance(transport, dict) else transport.dtls_parameters
        fps = [RTCDtlsFingerprint(algorithm=f["algorithm"], value=f["value"]) for f in dtls["fingerprints"]]
        await asyncio.wait_for(self.dtls.start(RTCDtlsParameters(fingerprints=fps, role="client")), 10)

    async def close(self) -> None:
        await self.dtls.stop()
        await self.ice.stop()


async def wait_until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)




def pin_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers host candidates on 127.0.0.1 only (it skips loopback by default)."""
    monkeypatch.setattr(aioice_ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
