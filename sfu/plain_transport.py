"""Plain RTP/RTCP over UDP, optionally with SRTP (SDES-style keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .errors import InvalidParametersError
from .transport import Transport

if TYPE_CHECKING:
    from .router import Router


class PlainTransport(Transport):
    """Events (besides :class:`Transport`'s): ``"tuple"(tuple)`` and
    ``"rtcptuple"(tuple)`` when comedia learns the remote address."""

    def __init__(
        self,
        transport_id: str,
        router: "Router",
        data: dict[str, Any],
        *,
        rtcp_mux: bool,
        comedia: bool,
        app_data: Any,
    ) -> None:
        super().__init__(transport_id, router, app_data)
        self.tuple: dict[str, Any] = data["tuple"]
        self.rtcp_tuple: Optional[dict[str, Any]] = data.get("rtcpTuple")
        self.srtp_parameters: Optional[dict[str, str]] = data.get("srtpParameters")
        self.rtcp_mux = rtcp_mux
        self.comedia = comedia

    async def connect(
        self,
        ip: Optional[str] = None,
        port: Optional[int] = None,
        rtcp_port: Optional[int] = None,
        srtp_parameters: Optional[dict[str, str]] = None,
    ) -> None:
        """Sets the remote address (not with comedia) and the remote's SRTP key."""
        self._check_open()
        if self.comedia and (ip is not None or port is not None):
            raise InvalidParametersError("ip/port: must not be given with comedia (learnt from the first packet)")
        if not self.comedia:
            if not isinstance(ip, str) or not ip:
                raise InvalidParametersError("ip: required (the remote IP address)")
            if not isinstance(port, int) or not (1 <= port <= 65535):
                raise InvalidParametersError(f"port: must be 1..65535, got {port!r}")
            if not self.rtcp_mux and not isinstance(rtcp_port, int):
                raise InvalidParametersError("rtcp_port: required when rtcp_mux is disabled")
        if self.srtp_parameters is not None and srtp_parameters is None:
            raise InvalidParametersError("srtp_parameters: required because SRTP is enabled on this transport")
        if self.srtp_parameters is None and srtp_parameters is not None:
            raise InvalidParametersError("srtp_parameters: given but SRTP is not enabled on this transport")
        if srtp_parameters is not None:
            from .srtp import decode_srtp_parameters

            decode_srtp_parameters(srtp_parameters, "srtp_parameters")
        data = await self.router.worker._request(
            "transport.connect",
            self.id,
            {"ip": ip, "port": port, "rtcpPort": rtcp_port, "srtpParameters": srtp_parameters},
        )
        if data.get("tuple"):
            self.tuple = data["tuple"]
        if data.get("rtcpTuple"):
            self.rtcp_tuple = data["rtcpTuple"]
        if data.get("srtpParameters"):
            self.srtp_parameters = data["srtpParameters"]

    def _on_notification(self, event: str, data: Any) -> None:
        if event == "tuple":
            self.tuple = data
            self.emit("tuple", data)
        elif event == "rtcptuple":
            self.rtcp_tuple = data
            self.emit("rtcptuple", data)
