"""Worker side of WebRTC transports: ICE-lite and DTLS around the engine.

STUN and DTLS datagrams arrive as engine upcalls; the agents here answer
through `Engine.send_raw`, bind the tuples ICE validated (so the engine
accepts media from them), point the engine at the selected tuple, and
install the SRTP keys DTLS exported. RTP and RTCP never come up here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..dtls import DtlsConnected, DtlsEndpoint, DtlsOutput, DtlsStateChange
from ..ice import IceLiteAgent, IceOutput, IceSelectedTupleChange, IceStateChange, IceTupleAdded, IceTupleRemoved
from ..srtp import crypto_suite

if TYPE_CHECKING:
    from .._fastpath._engine import Engine

logger = logging.getLogger("sfu.worker.webrtc")

Notify = Callable[[str, str, Any], None]


def _tuple_dict(local_ip: str, local_port: int, remote: Optional[tuple[str, int]]) -> Optional[dict[str, Any]]:
    if remote is None:
        return None
    return {"localIp": local_ip, "localAddress": local_ip, "localPort": local_port,
            "remoteIp": remote[0], "remotePort": remote[1], "protocol": "udp"}


class WebRtcTransportState:
    """One WebRTC transport in the worker."""

    def __init__(
        self,
        *,
        transport_id: str,
        router_id: str,
        engine: "Engine",
        socket: int,
        own_socket: bool,
        local_ip: str,
        local_port: int,
        certificate: Any,
        srtp_profiles: list[str],
        loop: asyncio.AbstractEventLoop,
        notify: Notify,
        on_ufrag_change: Callable[["WebRtcTransportState", str, str], None],
        on_fatal: Callable[["WebRtcTransportState", str], None],
        on_close: Callable[["WebRtcTransportState"], None] = lambda t: None,
    ) -> None:
        self.id = transport_id
        self.router_id = router_id
        self.engine = engine
        self.socket = socket
        self.own_socket = own_socket
        self.local_ip = local_ip
        self.local_port = local_port
        self.loop = loop
        self.notify = notify
        self.on_ufrag_change = on_ufrag_change
        self.on_fatal = on_fatal
        self.on_close = on_close
        self.ice = IceLiteAgent()
        self.dtls = DtlsEndpoint(certificate, role="auto", srtp_profiles=srtp_profiles)
        self.handle = engine.add_transport(socket, 0, ice=True)
        self.remote_dtls: Optional[tuple[list[dict], Optional[str]]] = None
        self.dtls_started = False
        self.producer_ids: set[str] = set()
        self.consumer_ids: set[str] = set()
        self.closed = False
        self._timer: Optional[asyncio.TimerHandle] = None

    # -- parameters

    def parameters(self) -> dict[str, Any]:
        return {
            "iceRole": "controlled",
            "iceParameters": self.ice.local_parameters,
            "iceCandidates": [{
                "foundation": "udpcandidate",
                "priority": 1076302079,
                "ip": self.local_ip,
                "address": self.local_ip,
                "protocol": "udp",
                "port": self.local_port,
                "type": "host",
            }],
            "dtlsParameters": self.dtls.local_parameters,
            "iceState": self.ice.state,
            "dtlsState": self.dtls.state,
        }

    # -- inputs

    def on_stun(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self.loop.time()
        self._ice_output(self.ice.handle_stun(data, addr, now))
        self._maybe_start_dtls(now)
        self._schedule()

    def on_dtls(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.ice.is_valid_tuple(addr):
            return
        self._dtls_output(self.dtls.handle_datagram(data, self.loop.time()))
        self._schedule()

    def on_datagram(self, kind: str, data: bytes, addr: tuple[str, int]) -> bool:
        """STUN (ICE) and DTLS datagrams of this transport."""
        if kind == "stun":
            self.on_stun(data, addr)
        elif kind == "dtls":
            self.on_dtls(data, addr)
        else:
            return False
        return True

    def connect(self, data: dict[str, Any]) -> dict[str, Any]:
        """Takes the remote dtlsParameters; DTLS starts once ICE is connected."""
        from ..dtls import _normalize_fingerprints  # validates the shape

        dtls_parameters = data.get("dtlsParameters")
        if not isinstance(dtls_parameters, dict):
            from ..errors import InvalidParametersError

            raise InvalidParametersError("dtlsParameters: required, an object with role and fingerprints")
        if self.remote_dtls is not None:
            from ..errors import InvalidStateError

            raise InvalidStateError("connect() was already called on this transport")
        role = dtls_parameters.get("role")
        fingerprints = _normalize_fingerprints(dtls_parameters.get("fingerprints"))
        self.remote_dtls = (fingerprints, role)
        self._maybe_start_dtls(self.loop.time())
        self._schedule()
        local_role = self.dtls.role or ("client" if role in ("server", "auto") else "server")
        return {"dtlsLocalRole": local_role}

    def restart_ice(self) -> dict[str, Any]:
        old = self.ice.ufrag
        params = self.ice.restart(now=self.loop.time())
        self.on_ufrag_change(self, old, self.ice.ufrag)
        return {"iceParameters": params}

    def stats(self) -> dict[str, Any]:
        s = self.engine.transport_stats(self.handle)
        s.update({
            "type": "webrtc-transport",
            "transportId": self.id,
            "iceRole": "controlled",
            "iceState": self.ice.state,
            "dtlsState": self.dtls.state,
            "iceSelectedTuple": _tuple_dict(self.local_ip, self.local_port, self.ice.selected_tuple),
            "iceStats": dict(self.ice.stats),
            "dtlsStats": dict(self.dtls.stats),
        })
        return s

    # -- internals

    def _maybe_start_dtls(self, now: float) -> None:
        if self.dtls_started or self.remote_dtls is None or self.closed:
            return
        if self.ice.state not in ("connected", "completed"):
            return
        self.dtls_started = True
        fingerprints, role = self.remote_dtls
        self._dtls_output(self.dtls.connect(fingerprints, role, now))

    def _ice_output(self, out: IceOutput) -> None:
        for data, addr in out.responses:
            try:
                self.engine.send_raw(self.socket, addr, data)
            except Exception as exc:
                logger.debug("STUN response to %s not sent: %s", addr, exc)
        for ev in out.events:
            if isinstance(ev, IceTupleAdded):
                self.engine.bind_tuple(self.socket, ev.tuple, self.handle)
            elif isinstance(ev, IceTupleRemoved):
                self.engine.unbind_tuple(self.socket, ev.tuple)
            elif isinstance(ev, IceSelectedTupleChange):
                self.engine.connect_transport(self.handle, ev.tuple)
                self.notify(self.id, "iceselectedtuplechange",
                            _tuple_dict(self.local_ip, self.local_port, ev.tuple))
            elif isinstance(ev, IceStateChange):
                self.notify(self.id, "icestatechange", {"iceState": ev.state})

    def _dtls_output(self, out: DtlsOutput) -> None:
        dest = self.ice.selected_tuple
        if dest is not None:
            for data in out.datagrams:
                try:
                    self.engine.send_raw(self.socket, dest, data)
                except Exception as exc:
                    logger.debug("DTLS datagram to %s not sent: %s", dest, exc)
        for ev in out.events:
            if isinstance(ev, DtlsConnected):
                # the engine makes its SRTP contexts from the exported keys
                # and swaps them in under its lock (a re-key included)
                self.engine.set_transport_srtp(self.handle, crypto_suite(ev.suite).profile,
                                               in_key=ev.remote_master, out_key=ev.local_master)
            elif isinstance(ev, DtlsStateChange):
                data: dict[str, Any] = {"dtlsState": ev.state}
                if ev.reason:
                    data["reason"] = ev.reason
                if ev.state == "connected":
                    data["srtpCryptoSuite"] = self.dtls.srtp_suite
                self.notify(self.id, "dtlsstatechange", data)
                if ev.state == "failed":
                    self.on_fatal(self, f"DTLS failed: {ev.reason or 'unknown reason'}")

    def _schedule(self) -> None:
        if self.closed:
            return
        deadlines = [t for t in (self.ice.next_timeout(), self.dtls.next_timeout()) if t is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            self._timer = self.loop.call_at(min(deadlines), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.loop.time()
        self._ice_output(self.ice.poll(now))
        self._dtls_output(self.dtls.poll(now))
        self._schedule()

    def close(self) -> None:
        """Sends close_notify, stops timers and removes the engine transport
        (the caller closes producers/consumers first and the socket after)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        try:
            dest = self.ice.selected_tuple
            out = self.dtls.close()
            if dest is not None:
                for data in out.datagrams:
                    self.engine.send_raw(self.socket, dest, data)
        except Exception as exc:
            logger.debug("close_notify not sent: %s", exc)
        self.ice.close()
        self.engine.remove_transport(self.handle)
        self.on_close(self)
