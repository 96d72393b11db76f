"""WebRTC transports: ICE-lite + DTLS-SRTP, for browsers and WebRTC libraries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .errors import InvalidParametersError
from .events import EventEmitter
from .transport import Transport

if TYPE_CHECKING:
    from .router import Router
    from .worker import Worker


class WebRtcServer(EventEmitter):
    """One UDP port shared by many WebRTC transports of a worker (demultiplexed
    by ICE username on first contact, by 5-tuple afterwards)."""

    def __init__(self, server_id: str, worker: "Worker", ip: str, port: int) -> None:
        super().__init__()
        self.id = server_id
        self.worker = worker
        self.ip = ip
        self.port = port
        self._closed = False
        self.observer = EventEmitter()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Closes the server and the transports that use it."""
        if self._closed:
            return
        self._closed = True
        self.worker._request_nowait("worker.closeWebRtcServer", self.id)
        for router in self.worker.routers:
            for t in router.transports:
                if isinstance(t, WebRtcTransport) and t.webrtc_server is self:
                    t._router_closed()
        self.observer.emit("close")


class WebRtcTransport(Transport):
    """Events (besides :class:`Transport`'s): ``"icestatechange"(state)``,
    ``"iceselectedtuplechange"(tuple)``, ``"dtlsstatechange"(state)``. A
    failed DTLS handshake (including a fingerprint mismatch) closes the
    transport; :attr:`close_reason` says why."""

    def __init__(
        self,
        transport_id: str,
        router: "Router",
        data: dict[str, Any],
        webrtc_server: Optional[WebRtcServer],
        app_data: Any,
    ) -> None:
        super().__init__(transport_id, router, app_data)
        self.ice_role: str = data["iceRole"]
        self.ice_parameters: dict[str, Any] = data["iceParameters"]
        self.ice_candidates: list[dict[str, Any]] = data["iceCandidates"]
        self.dtls_parameters: dict[str, Any] = data["dtlsParameters"]
        self.ice_state: str = data["iceState"]
        self.dtls_state: str = data["dtlsState"]
        self.ice_selected_tuple: Optional[dict[str, Any]] = None
        self.srtp_crypto_suite: Optional[str] = None
        self.webrtc_server = webrtc_server
        self.close_reason: Optional[str] = None

    async def connect(self, dtls_parameters: dict[str, Any]) -> None:  # type: ignore[override]
        """Gives the remote ``dtlsParameters`` ({role, fingerprints}); DTLS starts
        as soon as ICE is connected."""
        self._check_open()
        if not isinstance(dtls_parameters, dict):
            raise InvalidParametersError("dtls_parameters: must be an object with role and fingerprints")
        role = dtls_parameters.get("role", "auto")
        if role not in ("auto", "client", "server"):
            raise InvalidParametersError(f"dtlsParameters.role: must be 'auto', 'client' or 'server', got {role!r}")
        fps = dtls_parameters.get("fingerprints")
        if not isinstance(fps, list) or not fps:
            raise InvalidParametersError("dtlsParameters.fingerprints: a non-empty list is required")
        data = await self.router.worker._request("transport.connect", self.id, {"dtlsParameters": dtls_parameters})
        self.dtls_parameters = dict(self.dtls_parameters, role=data.get("dtlsLocalRole", self.dtls_parameters["role"]))

    async def restart_ice(self) -> dict[str, Any]:
        """New ICE username fragment and password; returns the iceParameters."""
        self._check_open()
        data = await self.router.worker._request("transport.restartIce", self.id)
        self.ice_parameters = data["iceParameters"]
        return self.ice_parameters

    def _on_notification(self, event: str, data: Any) -> None:
        if event == "icestatechange":
            self.ice_state = data["iceState"]
            self.emit("icestatechange", self.ice_state)
        elif event == "iceselectedtuplechange":
            self.ice_selected_tuple = data
            self.emit("iceselectedtuplechange", data)
        elif event == "dtlsstatechange":
            self.dtls_state = data["dtlsState"]
            if data.get("srtpCryptoSuite"):
                self.srtp_crypto_suite = data["srtpCryptoSuite"]
            self.emit("dtlsstatechange", self.dtls_state)
        elif event == "close":
            # The worker closed it (DTLS failure); close our side with the reason.
            self.close_reason = data.get("reason")
            self.close()
