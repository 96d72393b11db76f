"""Workers: one subprocess per core, each running the compiled engine.

`await create_worker()` spawns ``python -m sfu._worker.main`` with one end of
a socketpair as its control channel (see :mod:`sfu.channel`). If the process
exits without being asked to, the worker emits ``"died"`` with a
:class:`~sfu.errors.WorkerDiedError`, every pending and later request fails
with that error, and its routers close (``"workerclose"``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from typing import Any, Optional

from .channel import Channel
from .errors import InvalidParametersError, InvalidStateError, WorkerDiedError
from .events import EventEmitter
from .rtp_parameters import RtpCodecCapability

logger = logging.getLogger("sfu.worker")

LOG_LEVELS = ("debug", "info", "warning", "error", "none")


class Worker(EventEmitter):
    """A worker subprocess. Events: ``"died"(error)``; observer: ``"close"``,
    ``"newrouter"(router)``."""

    def __init__(self, process: asyncio.subprocess.Process, channel: Channel, app_data: Any) -> None:
        super().__init__()
        self._process = process
        self._channel = channel
        self._closed = False
        self._died = False
        self._routers: dict[str, Any] = {}
        self.dtls_fingerprints: list[dict[str, str]] = []
        self._handlers: dict[str, Any] = {}
        self.app_data = app_data
        self.observer = EventEmitter()
        channel.on_eof = self._on_channel_eof
        self._wait_task = asyncio.get_running_loop().create_task(self._wait_exit())

    @property
    def pid(self) -> int:
        """The worker process id."""
        return self._process.pid

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def died(self) -> bool:
        return self._died

    @property
    def routers(self) -> list[Any]:
        return list(self._routers.values())

    # -- requests (used by routers, transports, ...)

    async def _request(self, method: str, handler_id: Optional[str] = None, data: Any = None) -> Any:
        if self._closed:
            raise self._closed_error()
        return await self._channel.request(method, handler_id, data)

    def _request_nowait(self, method: str, handler_id: Optional[str] = None, data: Any = None) -> None:
        """Fire-and-forget request used by synchronous close() calls; it is
        written at once, so later requests see its effect."""
        if not self._closed:
            self._channel.request_nowait(method, handler_id, data)

    def _closed_error(self) -> Exception:
        if self._died:
            return WorkerDiedError(f"worker {self.pid} died")
        return InvalidStateError(f"worker {self.pid} is closed")

    def _register(self, target_id: str, handler: Any) -> None:
        self._handlers[target_id] = handler

    def _unregister(self, target_id: str) -> None:
        self._handlers.pop(target_id, None)

    def _on_notification(self, target_id: str, event: str, data: Any) -> None:
        handler = self._handlers.get(target_id)
        if handler is not None:
            handler._on_notification(event, data)

    # -- API

    async def create_router(
        self, media_codecs: Optional[list[RtpCodecCapability]] = None, app_data: Any = None
    ) -> "Router":
        """Creates a router (one per call/room) with the given media codecs."""
        from . import ortc
        from .router import Router

        if self._closed:
            raise self._closed_error()
        if media_codecs is not None and not isinstance(media_codecs, list):
            raise InvalidParametersError("media_codecs: must be a list of RtpCodecCapability")
        caps = ortc.generate_router_rtp_capabilities(media_codecs or [])
        router_id = str(uuid.uuid4())
        await self._request("worker.createRouter", None, {"routerId": router_id})
        router = Router(router_id, self, caps, app_data)
        self._routers[router_id] = router
        router.observer.once("close", lambda: self._routers.pop(router_id, None))
        self.observer.emit("newrouter", router)
        return router

    async def create_webrtc_server(
        self,
        listen_ip: str = "127.0.0.1",
        port: int = 0,
        announced_ip: Optional[str] = None,
        announced_port: Optional[int] = None,
    ) -> "WebRtcServer":
        """Binds one UDP port that WebRTC transports of this worker can share.

        ``announced_ip``/``announced_port`` go into ICE candidates instead of
        the bound address, for a server behind NAT or port forwarding."""
        from .webrtc_transport import WebRtcServer

        if self._closed:
            raise self._closed_error()
        server_id = str(uuid.uuid4())
        data = await self._request(
            "worker.createWebRtcServer", None,
            {"webRtcServerId": server_id, "listenIp": listen_ip, "port": port, "announcedIp": announced_ip,
             "announcedPort": announced_port},
        )
        return WebRtcServer(server_id, self, announced_ip or listen_ip, data["localPort"])

    async def get_resource_usage(self) -> dict[str, Any]:
        """getrusage() of the worker process."""
        return await self._request("worker.getResourceUsage")

    async def get_counters(self) -> dict[str, int]:
        """Engine counters: datagrams, drops by reason, syscalls."""
        return await self._request("worker.getCounters")

    async def dump(self) -> dict[str, Any]:
        return await self._request("worker.dump")

    def close(self) -> None:
        """Closes the worker: its routers close and the process exits."""
        if self._closed:
            return
        self._closed = True
        self._channel.close(InvalidStateError(f"worker {self.pid} is closed"))
        if self._process.returncode is None:
            try:
                self._process.terminate()
            except ProcessLookupError:
                pass
        for router in list(self._routers.values()):
            router._worker_closed()
        self.observer.emit("close")

    async def wait_closed(self) -> None:
        """Waits until the process has exited."""
        await asyncio.shield(self._wait_task)

    # -- death

    async def _wait_exit(self) -> None:
        code = await self._process.wait()
        self._on_exit(code)

    def _on_channel_eof(self) -> None:
        # The channel closes a moment before wait() returns; report then.
        pass

    def _on_exit(self, code: int) -> None:
        if self._closed:
            return
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        error = WorkerDiedError(f"worker {self.pid} died unexpectedly ({how})")
        logger.error("%s", error)
        self._died = True
        self._closed = True
        self._channel.close(error)
        for router in list(self._routers.values()):
            router._worker_closed()
        self.emit("died", error)
        self.observer.emit("close")


async def create_worker(
    *,
    log_level: str = "warning",
    rtc_min_port: Optional[int] = None,
    rtc_max_port: Optional[int] = None,
    request_timeout: float = 15.0,
    dtls_certificate_file: Optional[str] = None,
    dtls_private_key_file: Optional[str] = None,
    keyframe_request_interval_ms: int = 500,
    remb_floor_bps: int = 30000,
    app_data: Any = None,
) -> Worker:
    """Starts a worker subprocess and returns it once it answers.

    ``rtc_min_port``/``rtc_max_port`` bound the UDP ports that transports
    without an explicit port use (default: any free port).
    Keyframe requests (PLI) toward a publisher are coalesced to at most one
    per ``keyframe_request_interval_ms``; REMB sent to publishers never goes
    below ``remb_floor_bps``.

    The DTLS certificate is an ECDSA P-256 one generated per worker unless
    ``dtls_certificate_file``/``dtls_private_key_file`` (PEM) are given.
    """
    if log_level not in LOG_LEVELS:
        raise InvalidParametersError(f"log_level: must be one of {LOG_LEVELS}, got {log_level!r}")
    if (rtc_min_port is None) != (rtc_max_port is None):
        raise InvalidParametersError("rtc_min_port and rtc_max_port must be given together")
    if rtc_min_port is not None and not (1 <= rtc_min_port <= rtc_max_port <= 65535):  # type: ignore[operator]
        raise InvalidParametersError(f"rtc port range {rtc_min_port}-{rtc_max_port} is invalid")
    if not isinstance(keyframe_request_interval_ms, int) or not 0 <= keyframe_request_interval_ms <= 60000:
        raise InvalidParametersError("keyframe_request_interval_ms: must be an int between 0 and 60000")
    if not isinstance(remb_floor_bps, int) or remb_floor_bps < 0:
        raise InvalidParametersError("remb_floor_bps: must be a non-negative int")
    if (dtls_certificate_file is None) != (dtls_private_key_file is None):
        raise InvalidParametersError("dtls_certificate_file and dtls_private_key_file must be given together")
    for path in (dtls_certificate_file, dtls_private_key_file):
        if path is not None and not os.path.isfile(path):
            raise InvalidParametersError(f"DTLS certificate/key file not found: {path}")
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The child must import the same `sfu` as this process, whatever the
        # current directory holds: -P keeps the cwd off sys.path and
        # PYTHONPATH starts with the directory this package was imported from.
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        level = "critical" if log_level == "none" else log_level
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "sfu._worker.main",
            "--channel-fd",
            str(child_sock.fileno()),
            "--log-level",
            level,
            pass_fds=(child_sock.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
        )
    finally:
        child_sock.close()
    reader, writer = await asyncio.open_connection(sock=parent_sock)
    worker: Optional[Worker] = None

    def on_notification(target_id: str, event: str, data: Any) -> None:
        if worker is not None:
            worker._on_notification(target_id, event, data)

    channel = Channel(reader, writer, on_notification, timeout=request_timeout)
    worker = Worker(process, channel, app_data)
    try:
        data = await worker._request(
            "worker.configure",
            None,
            {
                "rtcMinPort": rtc_min_port,
                "rtcMaxPort": rtc_max_port,
                "dtlsCertificateFile": os.path.abspath(dtls_certificate_file) if dtls_certificate_file else None,
                "dtlsPrivateKeyFile": os.path.abspath(dtls_private_key_file) if dtls_private_key_file else None,
                "keyframeRequestIntervalMs": keyframe_request_interval_ms,
                "rembFloorBps": remb_floor_bps,
            },
        )
        worker.dtls_fingerprints = data["fingerprints"]
    except BaseException:  # a cancelled start too: never leave the child running
        worker.close()
        raise
    return worker


from .router import Router  # noqa: E402  (type reference for create_router)
from .webrtc_transport import WebRtcServer  # noqa: E402
