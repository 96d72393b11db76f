"""Routers: one per call. A router owns transports and knows its producers,
so any transport of the router can consume any of them."""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import TYPE_CHECKING, Any, Optional

from . import ortc
from .errors import InvalidParametersError, InvalidStateError
from .events import EventEmitter
from .rtp_parameters import RtpCapabilities

if TYPE_CHECKING:
    from .direct_transport import DirectTransport
    from .pipe_transport import PipeToRouterResult, PipeTransport
    from .plain_transport import PlainTransport
    from .producer import Producer
    from .transport import Transport
    from .webrtc_transport import WebRtcServer, WebRtcTransport
    from .worker import Worker


class Router(EventEmitter):
    """Events: ``"workerclose"``; observer: ``"close"``, ``"newtransport"(t)``."""

    def __init__(self, router_id: str, worker: "Worker", rtp_capabilities: RtpCapabilities, app_data: Any) -> None:
        super().__init__()
        self.id = router_id
        self.worker = worker
        self._rtp_capabilities = rtp_capabilities
        self._closed = False
        self._transports: dict[str, "Transport"] = {}
        self._producers: dict[str, "Producer"] = {}
        self.app_data = app_data
        self.observer = EventEmitter()
        # the pipe transport pair shared with each other router (keyed by its
        # id), as a future: concurrent pipe_to_router calls wait for one pair
        self._pipe_pairs: dict[str, "asyncio.Future[dict[str, PipeTransport]]"] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def rtp_capabilities(self) -> RtpCapabilities:
        """The router's RTP capabilities (codecs with payload types, header
        extensions), in mediasoup's JSON shape. A copy: safe to send/modify."""
        return copy.deepcopy(self._rtp_capabilities)

    @property
    def transports(self) -> list["Transport"]:
        return list(self._transports.values())

    def get_producer(self, producer_id: str) -> Optional["Producer"]:
        return self._producers.get(producer_id)

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError(f"router {self.id} is closed")

    async def create_plain_transport(
        self,
        listen_ip: str = "127.0.0.1",
        announced_ip: Optional[str] = None,
        port: int = 0,
        rtcp_mux: bool = True,
        comedia: bool = False,
        enable_srtp: bool = False,
        srtp_crypto_suite: str = "AES_CM_128_HMAC_SHA1_80",
        port_range: Optional[tuple[int, int]] = None,
        app_data: Any = None,
    ) -> "PlainTransport":
        """Creates a plain RTP/RTCP transport over UDP (optionally SRTP).

        ``port=0`` takes a free port (from ``port_range`` or the worker's
        range when given). With ``comedia`` the remote address is learnt from
        the first packet received; otherwise call :meth:`PlainTransport.connect`.
        """
        from .plain_transport import PlainTransport
        from .srtp import crypto_suite

        self._check_open()
        _validate_listen(listen_ip, port, port_range)
        if enable_srtp:
            crypto_suite(srtp_crypto_suite)  # raises UnsupportedError naming it
        transport_id = str(uuid.uuid4())
        data = await self.worker._request(
            "router.createPlainTransport",
            self.id,
            {
                "transportId": transport_id,
                "listenIp": listen_ip,
                "announcedIp": announced_ip,
                "port": port,
                "portRange": list(port_range) if port_range else None,
                "rtcpMux": rtcp_mux,
                "comedia": comedia,
                "enableSrtp": enable_srtp,
                "srtpCryptoSuite": srtp_crypto_suite,
            },
        )
        transport = PlainTransport(transport_id, self, data, rtcp_mux=rtcp_mux, comedia=comedia, app_data=app_data)
        self._add_transport(transport)
        return transport

    async def create_webrtc_transport(
        self,
        listen_ip: str = "127.0.0.1",
        announced_ip: Optional[str] = None,
        port: int = 0,
        port_range: Optional[tuple[int, int]] = None,
        webrtc_server: Optional["WebRtcServer"] = None,
        srtp_crypto_suites: Optional[list[str]] = None,
        app_data: Any = None,
    ) -> "WebRtcTransport":
        """Creates an ICE-lite + DTLS-SRTP transport.

        With ``webrtc_server`` it shares that server's UDP port; otherwise it
        binds its own (``port``, or a free one from ``port_range`` / the
        worker's range). ``srtp_crypto_suites`` is the DTLS-SRTP preference
        order (default: AEAD_AES_256_GCM, AEAD_AES_128_GCM,
        AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32).
        """
        from .srtp import crypto_suite
        from .webrtc_transport import WebRtcTransport

        self._check_open()
        if webrtc_server is not None:
            if webrtc_server.closed or webrtc_server.worker is not self.worker:
                raise InvalidParametersError("webrtc_server: closed or belongs to another worker")
        else:
            _validate_listen(listen_ip, port, port_range)
        for name in srtp_crypto_suites or []:
            crypto_suite(name)
        transport_id = str(uuid.uuid4())
        data = await self.worker._request(
            "router.createWebRtcTransport",
            self.id,
            {
                "transportId": transport_id,
                "listenIp": listen_ip,
                "announcedIp": announced_ip,
                "port": port,
                "portRange": list(port_range) if port_range else None,
                "webRtcServerId": webrtc_server.id if webrtc_server else None,
                "srtpCryptoSuites": srtp_crypto_suites,
            },
        )
        transport = WebRtcTransport(transport_id, self, data, webrtc_server, app_data)
        self._add_transport(transport)
        return transport

    async def create_direct_transport(
        self, max_queue_bytes: int = 4 * 1024 * 1024, app_data: Any = None
    ) -> "DirectTransport":
        """Creates a transport between the router and Python (no network).

        What its consumers send is queued by the engine (at most
        ``max_queue_bytes``; beyond it packets are dropped and counted in the
        worker's ``drop_direct_full``) and delivered in batches about every
        20 ms; :meth:`DirectTransport.send` injects RTP for its producers.
        """
        from .direct_transport import DirectTransport

        self._check_open()
        if not isinstance(max_queue_bytes, int) or not 4096 <= max_queue_bytes <= 256 * 1024 * 1024:
            raise InvalidParametersError(f"max_queue_bytes: 4096 to 268435456, got {max_queue_bytes!r}")
        transport_id = str(uuid.uuid4())
        data = await self.worker._request(
            "router.createDirectTransport", self.id, {"transportId": transport_id, "maxQueueBytes": max_queue_bytes}
        )
        transport = DirectTransport(transport_id, self, data, app_data)
        self._add_transport(transport)
        return transport

    async def create_pipe_transport(self, listen_ip: str = "127.0.0.1", port: int = 0,
                                    enable_srtp: bool = False, app_data: Any = None) -> "PipeTransport":
        """Creates one end of a pipe (plain RTP, RTCP-muxed; SRTP with
        ``enable_srtp``, AES_CM_128_HMAC_SHA1_80); connect it to the other
        end's ``tuple`` (and ``srtp_parameters``) with
        :meth:`PipeTransport.connect`. :meth:`pipe_to_router` makes and
        connects the pairs itself."""
        from .pipe_transport import PipeTransport

        self._check_open()
        _validate_listen(listen_ip, port, None)
        transport_id = str(uuid.uuid4())
        data = await self.worker._request(
            "router.createPlainTransport",
            self.id,
            {"transportId": transport_id, "listenIp": listen_ip, "announcedIp": None, "port": port,
             "portRange": None, "rtcpMux": True, "comedia": False, "enableSrtp": bool(enable_srtp),
             "srtpCryptoSuite": "AES_CM_128_HMAC_SHA1_80"},
        )
        transport = PipeTransport(transport_id, self, data, rtcp_mux=True, comedia=False, app_data=app_data)
        self._add_transport(transport)
        return transport

    async def pipe_to_router(self, producer_id: str, router: "Router",
                             listen_ip: str = "127.0.0.1", enable_srtp: bool = False) -> "PipeToRouterResult":
        """Makes a producer of this router consumable in ``router`` too
        (mediasoup's ``pipeToRouter``), for a router of another worker of this
        host or of the same worker.

        The two routers share one pair of pipe transports (created at the
        first call, over UDP on ``listen_ip``, and reused for every producer
        piped either way; ``enable_srtp`` encrypts it, as decided by the
        call that creates the pair). This router consumes the producer on its end
        (a :class:`~sfu.pipe_transport.PipeConsumer`: every encoding, so
        simulcast survives), and ``router`` gets a producer with the same id
        and the pipe consumer's RTP parameters. Pausing or resuming the
        producer pauses or resumes the piped one; closing the producer (or
        the pipe consumer, or the pipe transports) closes the piped one, and
        closing the piped producer closes the pipe consumer. Keyframe requests
        of ``router``'s consumers travel back over the pipe's RTCP to the
        producer's publisher.

        Returns ``(pipe_consumer, pipe_producer)``. Raises
        :class:`~sfu.errors.InvalidParametersError` for an unknown producer or
        when ``router`` is this router, and
        :class:`~sfu.errors.InvalidStateError` when either router is closed or
        the producer is already in ``router`` (piped before: as mediasoup, a
        second pipe of one producer to one router is an error; use
        ``router.get_producer(producer_id)``).
        """
        from .pipe_transport import PipeToRouterResult

        self._check_open()
        if not isinstance(router, Router):
            raise InvalidParametersError(f"router: a Router, got {type(router).__name__}")
        if router is self:
            raise InvalidParametersError("router: cannot pipe a producer to its own router")
        if router.closed:
            raise InvalidStateError(f"router {router.id} (the destination) is closed")
        producer = self._producers.get(producer_id)
        if producer is None:
            raise InvalidParametersError(f"producer_id: producer {producer_id!r} not found in this router")
        if router.get_producer(producer_id) is not None:
            raise InvalidStateError(f"producer {producer_id} is already in router {router.id} (piped before)")
        pair = await self._pipe_pair(router, listen_ip, enable_srtp)
        local, remote = pair[self.id], pair[router.id]
        pipe_consumer = await local.consume(producer_id)
        pipe_producer = None
        try:
            pipe_producer = await remote.produce(
                pipe_consumer.kind, pipe_consumer.rtp_parameters, paused=producer.paused,
                app_data=producer.app_data, producer_id=producer.id,
                # one worker knows each id once: the piped producer of a router
                # of the same worker is known there by another
                _handler_id=f"{producer.id}@{router.id}" if router.worker is self.worker else None,
            )
            if producer.closed or pipe_consumer.closed:
                raise InvalidStateError(f"producer {producer_id} closed while it was being piped")
            if pipe_producer.paused != producer.paused:
                await (pipe_producer.pause() if producer.paused else pipe_producer.resume())
        except BaseException as exc:
            pipe_consumer.close()
            if pipe_producer is not None:
                pipe_producer.close()
            other = router.get_producer(producer_id)
            if pipe_producer is None and other is not None and isinstance(exc, Exception):
                # a concurrent pipe_to_router of the same producer won
                raise InvalidStateError(f"producer {producer_id} is already in router {router.id} "
                                        "(piped concurrently)") from exc
            raise
        _mirror(pipe_consumer, pipe_producer)
        return PipeToRouterResult(pipe_consumer, pipe_producer)

    async def _pipe_pair(self, router: "Router", listen_ip: str, enable_srtp: bool) -> dict[str, "PipeTransport"]:
        """The pipe transports shared with ``router``, made and connected once."""
        fut = self._pipe_pairs.get(router.id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._pipe_pairs[router.id] = fut
            router._pipe_pairs[self.id] = fut
            local: Optional["PipeTransport"] = None
            remote: Optional["PipeTransport"] = None
            try:
                local, remote = await asyncio.gather(
                    self.create_pipe_transport(listen_ip, enable_srtp=enable_srtp),
                    router.create_pipe_transport(listen_ip, enable_srtp=enable_srtp))
                await asyncio.gather(
                    local.connect(ip=remote.tuple["localIp"], port=remote.tuple["localPort"],
                                  srtp_parameters=remote.srtp_parameters),
                    remote.connect(ip=local.tuple["localIp"], port=local.tuple["localPort"],
                                   srtp_parameters=local.srtp_parameters),
                )
            except BaseException as exc:
                for t in (local, remote):
                    if t is not None:
                        t.close()
                self._forget_pipe_pair(router, fut)
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: waiters get it, nobody else must
                raise
            pair = {self.id: local, router.id: remote}

            def on_close() -> None:
                local.close()
                remote.close()
                self._forget_pipe_pair(router, fut)

            local.observer.once("close", on_close)
            remote.observer.once("close", on_close)
            fut.set_result(pair)
            return pair
        return await asyncio.shield(fut)

    def _forget_pipe_pair(self, router: "Router", fut: "asyncio.Future[Any]") -> None:
        if self._pipe_pairs.get(router.id) is fut:
            del self._pipe_pairs[router.id]
        if router._pipe_pairs.get(self.id) is fut:
            del router._pipe_pairs[self.id]

    def _add_transport(self, transport: "Transport") -> None:
        self._transports[transport.id] = transport
        self.worker._register(transport.id, transport)

        def on_close() -> None:
            self._transports.pop(transport.id, None)
            self.worker._unregister(transport.id)

        transport.observer.once("close", on_close)
        self.observer.emit("newtransport", transport)

    def _add_producer(self, producer: "Producer") -> None:
        self._producers[producer.id] = producer
        producer.observer.once("close", lambda: self._producers.pop(producer.id, None))

    def can_consume(self, producer_id: str, rtp_capabilities: RtpCapabilities) -> bool:
        """Whether a peer with these capabilities can consume the producer."""
        producer = self._producers.get(producer_id)
        if producer is None:
            return False
        try:
            caps = copy.deepcopy(rtp_capabilities)
            ortc.validate_rtp_capabilities(caps)
        except Exception:
            return False
        return ortc.can_consume(producer.consumable_rtp_parameters, caps)

    def close(self) -> None:
        """Closes the router and, with it, its transports."""
        if self._closed:
            return
        self._closed = True
        self.worker._request_nowait("worker.closeRouter", self.id)
        self._close_children()
        self.observer.emit("close")

    def _close_children(self) -> None:
        for transport in list(self._transports.values()):
            transport._router_closed()
        self._producers.clear()

    def _worker_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_children()
        self.emit("workerclose")
        self.observer.emit("close")


def _validate_listen(listen_ip: str, port: int, port_range: Optional[tuple[int, int]]) -> None:
    """Checks where a transport listens; errors name the argument."""
    if not isinstance(listen_ip, str) or not listen_ip:
        raise InvalidParametersError("listen_ip: must be an IP address string")
    if not isinstance(port, int) or not (0 <= port <= 65535):
        raise InvalidParametersError(f"port: must be 0..65535, got {port!r}")
    if port_range is not None and (
        len(port_range) != 2 or not (1 <= port_range[0] <= port_range[1] <= 65535)
    ):
        raise InvalidParametersError(f"port_range: invalid range {port_range!r}")


def _mirror(pipe_consumer: Any, pipe_producer: "Producer") -> None:
    """Pause/resume/close of the pipe consumer (the source producer's) onto
    the piped producer, in order, and the piped producer's close back."""
    chain: list[Optional[asyncio.Future[Any]]] = [None]

    def later(action: str) -> None:
        prev = chain[0]

        async def run() -> None:
            if prev is not None:
                await asyncio.wait([prev])
            if pipe_producer.closed:
                return
            try:
                await (pipe_producer.pause() if action == "pause" else pipe_producer.resume())
            except InvalidStateError:
                pass  # closed meanwhile

        chain[0] = asyncio.ensure_future(run())

    pipe_consumer.observer.on("pause", lambda: later("pause"))
    pipe_consumer.observer.on("resume", lambda: later("resume"))
    pipe_consumer.observer.once("close", pipe_producer.close)
    pipe_producer.observer.once("close", pipe_consumer.close)
