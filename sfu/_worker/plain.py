"""A plain RTP transport in the worker (mediasoup's PlainTransport): one UDP
socket (two without rtcp-mux), a remote given by connect() or learnt from
the first packet (comedia), optional SRTP with SDES-style keys.

It has the interface every transport of the worker has (`connect`,
`stats`, `restart_ice`, `on_datagram`, `close`), as WebRtcTransportState
does, so the worker's request handlers need no branch per kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParametersError, InvalidStateError
from ..srtp import CryptoSuite, decode_srtp_parameters, encode_srtp_parameters, generate_key

if TYPE_CHECKING:
    from .._fastpath._engine import Engine


@dataclass
class PlainTransportState:
    id: str
    router_id: str
    engine: "Engine"
    handle: int
    sockets: list[int]
    local_ip: str
    local_port: int
    rtcp_local_port: int | None
    comedia: bool
    rtcp_mux: bool
    srtp_suite: CryptoSuite | None = None
    srtp_local_key: bytes | None = None
    srtp_remote_key: bytes | None = None
    producer_ids: set[str] = field(default_factory=set)
    consumer_ids: set[str] = field(default_factory=set)

    def enable_srtp(self, suite: CryptoSuite) -> dict[str, str]:
        """Our outbound key (the engine makes its context from it); returns
        the srtpParameters the remote needs."""
        self.srtp_suite = suite
        self.srtp_local_key = generate_key(suite)
        self.engine.set_transport_srtp(self.handle, suite.profile, out_key=self.srtp_local_key)
        return encode_srtp_parameters(suite, self.srtp_local_key)

    def connect(self, data: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        ip, port = data.get("ip"), data.get("port")
        if self.srtp_suite is not None:
            if data.get("srtpParameters") is None:
                raise InvalidParametersError("srtpParameters: required because SRTP is enabled on this transport")
            suite, key = decode_srtp_parameters(data["srtpParameters"])
            # A context whose suite and key do not change stays, with its
            # rollover counters and replay windows: a fresh receiver would
            # assume ROC 0 and refuse every packet after the sender's first
            # sequence-number wrap.
            out_key = None
            if suite != self.srtp_suite:
                # Follow the remote's suite: both directions use one suite.
                self.srtp_suite = suite
                self.srtp_local_key = out_key = generate_key(suite)
                self.srtp_remote_key = None
            in_key = key if key != self.srtp_remote_key else None
            if in_key is not None or out_key is not None:
                # The engine makes its contexts from the bytes and swaps them in under its lock.
                self.engine.set_transport_srtp(self.handle, suite.profile, in_key=in_key, out_key=out_key)
            self.srtp_remote_key = key
            assert self.srtp_local_key is not None
            result["srtpParameters"] = encode_srtp_parameters(self.srtp_suite, self.srtp_local_key)
        elif data.get("srtpParameters") is not None:
            raise InvalidParametersError("srtpParameters: given but SRTP is not enabled on this transport")
        if ip is not None:
            rtcp_addr = (ip, int(data["rtcpPort"])) if (not self.rtcp_mux and data.get("rtcpPort")) else None
            self.engine.connect_transport(self.handle, (ip, int(port)), rtcp_addr)
            result["tuple"] = {
                "localIp": self.local_ip, "localAddress": self.local_ip, "localPort": self.local_port,
                "remoteIp": ip, "remotePort": int(port), "protocol": "udp",
            }
            if rtcp_addr:
                result["rtcpTuple"] = {
                    "localIp": self.local_ip, "localAddress": self.local_ip, "localPort": self.rtcp_local_port,
                    "remoteIp": ip, "remotePort": rtcp_addr[1], "protocol": "udp",
                }
        return result

    def stats(self) -> dict[str, Any]:
        stats = self.engine.transport_stats(self.handle)
        rtp, _rtcp = self.engine.transport_tuple(self.handle)
        stats.update({"type": "plain-rtp-transport", "transportId": self.id})
        if rtp:
            stats["tuple"] = {"localIp": self.local_ip, "localPort": self.local_port, "remoteIp": rtp[0],
                              "remotePort": rtp[1], "protocol": "udp"}
        return stats

    def restart_ice(self) -> dict[str, Any]:
        raise InvalidStateError("restartIce: not a WebRTC transport")

    def on_datagram(self, kind: str, data: bytes, addr: tuple[str, int]) -> bool:
        """STUN and DTLS are not for a plain transport: not handled."""
        return False

    def close(self) -> None:
        """Removes the engine transport (its SRTP contexts go with it) and its sockets."""
        self.engine.remove_transport(self.handle)
        for h in self.sockets:
            self.engine.remove_socket(h)
