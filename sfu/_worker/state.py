"""Worker-side object tables: routers, transports, producers, consumers.

Each object mirrors one in the parent and owns its handle in the engine.
Closing cascades here as it does in the parent (router -> transports ->
producers/consumers; producer -> its consumers), so the engine never keeps
an orphan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import resource
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from .._fastpath import _engine
from ..dtls import DEFAULT_SRTP_PROFILES, Certificate
from ..errors import InvalidParametersError, InvalidStateError
from ..ice import username_ufrag
from ..srtp import crypto_suite

from .direct import DIRECT_REMOTE, DirectTransportState
from .plain import PlainTransportState
from .webrtc import WebRtcTransportState

# What every transport of the worker offers (connect, stats, restart_ice,
# on_datagram, close; ids, handle, producer_ids, consumer_ids).
TransportState = Union[PlainTransportState, WebRtcTransportState, DirectTransportState]

DIRECT_PUMP_S = 0.02  # how often DirectTransports' queues go to the parent

logger = logging.getLogger("sfu.worker")

SOCKET_BUFFER = 4 * 1024 * 1024

Notify = Callable[[str, str, Any], None]


@dataclass
class ConsumerState:
    id: str
    handle: int
    transport_id: str
    producer_id: str


@dataclass
class ProducerState:
    id: str
    handle: int
    transport_id: str
    kind: str
    consumer_ids: set[str] = field(default_factory=set)


@dataclass
class RouterState:
    id: str
    transport_ids: set[str] = field(default_factory=set)


def _bind_udp(ip: str, port: int, port_range: tuple[int, int] | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    candidates: list[int]
    if port:
        candidates = [port]
    elif port_range:
        lo, hi = port_range
        candidates = list(range(lo, hi + 1))
        start = random.randrange(len(candidates))
        candidates = candidates[start:] + candidates[:start]
    else:
        candidates = [0]
    last: OSError | None = None
    for p in candidates:
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            s.bind((ip, p))
            s.setblocking(False)
            return s
        except OSError as exc:
            s.close()
            last = exc
    if port:
        raise InvalidParametersError(f"cannot bind UDP {ip}:{port}: {last}")
    raise InvalidParametersError(f"no free UDP port on {ip} in range {port_range}: {last}")


class WorkerState:
    """Handles channel requests against the engine."""

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self.engine = _engine.Engine()
        self.routers: dict[str, RouterState] = {}
        self.transports: dict[str, TransportState] = {}
        self.producers: dict[str, ProducerState] = {}
        self.consumers: dict[str, ConsumerState] = {}
        self.transport_by_handle: dict[int, str] = {}
        self.consumer_by_handle: dict[int, str] = {}
        self.port_range: tuple[int, int] | None = None
        self.remb_floor_bps = 30000
        self._efd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self.certificate: Certificate | None = None
        # WebRTC: shared-port servers, and first-contact demultiplexing
        self.webrtc_servers: dict[str, dict[str, Any]] = {}
        self.socket_owner: dict[int, str] = {}               # dedicated socket -> transport id
        self.ufrag_index: dict[tuple[int, str], str] = {}     # (socket, ufrag) -> transport id
        self.unroutable_stun = 0
        # DirectTransports: their queues go to the parent every DIRECT_PUMP_S
        self.direct: dict[str, DirectTransportState] = {}
        self.notify_binary: Callable[[str, str, bytes], None] = lambda *_: None
        self._pump_handle: asyncio.TimerHandle | None = None

    # -- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.engine.set_notify_fd(self._efd)
        loop.add_reader(self._efd, self._on_upcalls)
        self.engine.start()

    def close(self) -> None:
        if self._pump_handle is not None:
            self._pump_handle.cancel()
        self.engine.stop()

    def _pump_direct(self) -> None:
        self._pump_handle = None
        for t in list(self.direct.values()):
            try:
                t.pump(self.notify_binary)
            except Exception:
                logger.exception("DirectTransport %s: pump failed", t.id)
        if self.direct and self._loop is not None:
            self._pump_handle = self._loop.call_later(DIRECT_PUMP_S, self._pump_direct)

    def direct_send(self, tid: str, datagrams: list[bytes]) -> None:
        """RTP/RTCP the parent sends on a DirectTransport (its producers)."""
        t = self.direct.get(tid)
        if t is None:
            logger.debug("send on unknown DirectTransport %s dropped", tid)
            return
        for d in datagrams:
            try:
                t.send(d)
            except ValueError as exc:
                logger.warning("DirectTransport %s: %s", tid, exc)

    def _on_upcalls(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        for up in self.engine.poll_upcalls():
            if up[0] == "layers":
                _, chandle, spatial = up
                cid = self.consumer_by_handle.get(chandle)
                if cid is not None and cid in self.consumers:
                    self.notify(cid, "layerschange", {"spatialLayer": spatial, "temporalLayer": None})
            elif up[0] == "tuple":
                _, _sock, thandle, is_rtcp, addr = up
                tid = self.transport_by_handle.get(thandle)
                t = self.transports.get(tid or "")
                if t is None or addr is None:
                    continue
                data = {
                    "localIp": t.local_ip,
                    "localPort": t.rtcp_local_port if is_rtcp else t.local_port,
                    "remoteIp": addr[0],
                    "remotePort": addr[1],
                    "protocol": "udp",
                }
                self.notify(t.id, "rtcptuple" if is_rtcp else "tuple", data)
            else:
                _, sock, thandle, kind, addr, data = up
                self._on_datagram(sock, thandle, kind, addr, data)

    def _on_datagram(self, sock: int, thandle: int, kind: str, addr: Any, data: bytes) -> None:
        """STUN and DTLS for WebRTC transports; anything else is dropped."""
        tid = self.transport_by_handle.get(thandle) if thandle else None
        if tid is None and kind == "stun":
            tid = self.socket_owner.get(sock)
            if tid is None:
                ufrag = username_ufrag(data)
                tid = self.ufrag_index.get((sock, ufrag)) if ufrag else None
        t = self.transports.get(tid or "")
        if t is None or addr is None or not t.on_datagram(kind, data, addr):
            if kind == "stun":
                self.unroutable_stun += 1
            logger.debug("dropping %s datagram of %d bytes from %s", kind, len(data), addr)

    # -- dispatch

    def handle(self, method: str, handler_id: str | None, data: dict[str, Any]) -> Any:
        """One channel request: the method's handler from the table below
        (each looks its handler id up by kind: `_router`, `_transport`, ...,
        so an id of the wrong kind is refused by name)."""
        fn = _HANDLERS.get(method)
        if fn is None:
            raise InvalidParametersError(f"unknown method {method!r}")
        return fn(self, handler_id, data)

    # -- worker

    def _worker_configure(self, _h: Any, data: dict[str, Any]) -> dict[str, Any]:
        lo, hi = data.get("rtcMinPort"), data.get("rtcMaxPort")
        if lo and hi:
            self.port_range = (int(lo), int(hi))
        if data.get("keyframeRequestIntervalMs") is not None:
            self.engine.set_keyframe_request_interval(int(data["keyframeRequestIntervalMs"]))
        self.remb_floor_bps = int(data.get("rembFloorBps") or 30000)
        if data.get("dtlsCertificateFile"):
            self.certificate = Certificate.load(data["dtlsCertificateFile"], data["dtlsPrivateKeyFile"])
        else:
            self.certificate = Certificate.generate()
        return {"fingerprints": self.certificate.fingerprints}

    def _worker_createWebRtcServer(self, _h: Any, data: dict[str, Any]) -> dict[str, Any]:
        sid = data["webRtcServerId"]
        sock = _bind_udp(data["listenIp"], int(data.get("port") or 0), self.port_range)
        port = sock.getsockname()[1]
        handle = self.engine.add_socket(sock.detach())
        self.webrtc_servers[sid] = {"socket": handle, "ip": data.get("announcedIp") or data["listenIp"],
                                    "port": int(data.get("announcedPort") or port), "transports": set()}
        return {"localPort": port}

    def _worker_closeWebRtcServer(self, sid: str, _d: Any) -> None:
        server = self.webrtc_servers.pop(sid, None)
        if server is None:
            return
        for tid in list(server["transports"]):
            self._close_transport(tid)
        self.engine.remove_socket(server["socket"])

    def _worker_dump(self, _h: Any, _d: Any) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "routerIds": sorted(self.routers),
            "transportIds": sorted(self.transports),
            "producerIds": sorted(self.producers),
            "consumerIds": sorted(self.consumers),
        }

    def _worker_getResourceUsage(self, _h: Any, _d: Any) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "ru_utime": ru.ru_utime,
            "ru_stime": ru.ru_stime,
            "ru_maxrss": ru.ru_maxrss,
            "ru_nvcsw": ru.ru_nvcsw,
            "ru_nivcsw": ru.ru_nivcsw,
        }

    def _worker_getCounters(self, _h: Any, _d: Any) -> dict[str, int]:
        return self.engine.counters()

    def _worker_createRouter(self, _h: Any, data: dict[str, Any]) -> None:
        rid = data["routerId"]
        if rid in self.routers:
            raise InvalidStateError(f"router {rid} already exists")
        self.routers[rid] = RouterState(rid)

    def _worker_closeRouter(self, rid: str, _d: Any) -> None:
        router = self.routers.pop(rid, None)
        if router is None:
            return
        for tid in list(router.transport_ids):
            self._close_transport(tid)

    # -- router

    def _router(self, rid: str | None) -> RouterState:
        router = self.routers.get(rid or "")
        if router is None:
            raise InvalidStateError(f"router {rid} not found")
        return router

    def _router_createPlainTransport(self, rid: str, data: dict[str, Any]) -> dict[str, Any]:
        router = self._router(rid)
        tid = data["transportId"]
        listen_ip = data["listenIp"]
        port_range = tuple(data["portRange"]) if data.get("portRange") else self.port_range
        rtcp_mux = bool(data.get("rtcpMux", True))
        sockets: list[socket.socket] = [_bind_udp(listen_ip, int(data.get("port") or 0), port_range)]
        if not rtcp_mux:
            try:
                sockets.append(_bind_udp(listen_ip, 0, port_range))
            except Exception:
                sockets[0].close()
                raise
        local_port = sockets[0].getsockname()[1]
        rtcp_port = sockets[1].getsockname()[1] if not rtcp_mux else None
        handles: list[int] = []
        try:
            for s in sockets:
                handles.append(self.engine.add_socket(s.detach()))
            thandle = self.engine.add_transport(
                handles[0],
                handles[1] if len(handles) > 1 else 0,
                comedia=bool(data.get("comedia")),
                require_srtp=bool(data.get("enableSrtp")),
            )
        except Exception:
            for h in handles:
                self.engine.remove_socket(h)
            for s in sockets:
                if s.fileno() >= 0:
                    s.close()
            raise
        t = PlainTransportState(
            id=tid,
            router_id=router.id,
            engine=self.engine,
            handle=thandle,
            sockets=handles,
            local_ip=data.get("announcedIp") or listen_ip,
            local_port=local_port,
            rtcp_local_port=rtcp_port,
            comedia=bool(data.get("comedia")),
            rtcp_mux=rtcp_mux,
        )
        result: dict[str, Any] = {
            "tuple": {"localIp": t.local_ip, "localAddress": t.local_ip, "localPort": local_port, "protocol": "udp"},
            "rtcpTuple": (
                {"localIp": t.local_ip, "localAddress": t.local_ip, "localPort": rtcp_port, "protocol": "udp"}
                if rtcp_port
                else None
            ),
        }
        if data.get("enableSrtp"):
            result["srtpParameters"] = t.enable_srtp(crypto_suite(data.get("srtpCryptoSuite") or "AES_CM_128_HMAC_SHA1_80"))
        self.transports[tid] = t
        self.transport_by_handle[thandle] = tid
        router.transport_ids.add(tid)
        return result

    def _router_createDirectTransport(self, rid: str, data: dict[str, Any]) -> dict[str, Any]:
        router = self._router(rid)
        tid = data["transportId"]
        capacity = int(data.get("maxQueueBytes") or 4 * 1024 * 1024)
        if not 4096 <= capacity <= 256 * 1024 * 1024:
            raise InvalidParametersError(f"maxQueueBytes: 4096 to 268435456, got {capacity}")
        sock = self.engine.add_direct_socket(capacity)
        try:
            thandle = self.engine.add_transport(sock, 0)
            self.engine.connect_transport(thandle, DIRECT_REMOTE, None)
        except Exception:
            self.engine.remove_socket(sock)
            raise
        t = DirectTransportState(id=tid, router_id=router.id, engine=self.engine, handle=thandle, socket=sock,
                                 capacity=capacity)
        self.transports[tid] = t
        self.transport_by_handle[thandle] = tid
        self.direct[tid] = t
        router.transport_ids.add(tid)
        if self._pump_handle is None and self._loop is not None:
            self._pump_handle = self._loop.call_later(DIRECT_PUMP_S, self._pump_direct)
        return {"maxQueueBytes": capacity}

    def _router_closeTransport(self, rid: str, data: dict[str, Any]) -> None:
        self._close_transport(data["transportId"])

    def _router_createWebRtcTransport(self, rid: str, data: dict[str, Any]) -> dict[str, Any]:
        router = self._router(rid)
        tid = data["transportId"]
        server = None
        if data.get("webRtcServerId"):
            server = self.webrtc_servers.get(data["webRtcServerId"])
            if server is None:
                raise InvalidStateError(f"WebRTC server {data['webRtcServerId']} not found")
            sock_handle, local_ip, local_port = server["socket"], server["ip"], server["port"]
        else:
            port_range = tuple(data["portRange"]) if data.get("portRange") else self.port_range
            sock = _bind_udp(data["listenIp"], int(data.get("port") or 0), port_range)
            local_port = sock.getsockname()[1]
            local_ip = data.get("announcedIp") or data["listenIp"]
            sock_handle = self.engine.add_socket(sock.detach())
        assert self._loop is not None and self.certificate is not None
        try:
            t = WebRtcTransportState(
                transport_id=tid, router_id=router.id, engine=self.engine, socket=sock_handle,
                own_socket=server is None, local_ip=local_ip, local_port=local_port,
                certificate=self.certificate,
                srtp_profiles=list(data.get("srtpCryptoSuites") or DEFAULT_SRTP_PROFILES),
                loop=self._loop, notify=self.notify, on_ufrag_change=self._on_ufrag_change,
                on_fatal=self._on_transport_fatal, on_close=self._forget_webrtc_transport,
            )
        except Exception:
            if server is None:
                self.engine.remove_socket(sock_handle)
            raise
        self.transports[tid] = t
        self.transport_by_handle[t.handle] = tid
        router.transport_ids.add(tid)
        if server is None:
            self.socket_owner[sock_handle] = tid
        else:
            server["transports"].add(tid)
        self.ufrag_index[(sock_handle, t.ice.ufrag)] = tid
        return t.parameters()

    def _on_ufrag_change(self, t: WebRtcTransportState, old: str, new: str) -> None:
        self.ufrag_index.pop((t.socket, old), None)
        self.ufrag_index[(t.socket, new)] = t.id

    def _on_transport_fatal(self, t: WebRtcTransportState, reason: str) -> None:
        logger.info("closing transport %s: %s", t.id, reason)
        if self._loop is not None:
            # not while the DTLS endpoint is still inside its own callback
            self._loop.call_soon(self._close_transport, t.id)
        self.notify(t.id, "close", {"reason": reason})

    def _forget_webrtc_transport(self, t: WebRtcTransportState) -> None:
        """The worker's indexes of a WebRTC transport that closed (its
        ufrag, its shared or own socket)."""
        self.ufrag_index.pop((t.socket, t.ice.ufrag), None)
        for server in self.webrtc_servers.values():
            server["transports"].discard(t.id)
        if t.own_socket:
            self.socket_owner.pop(t.socket, None)
            self.engine.remove_socket(t.socket)

    def _transport_restartIce(self, tid: str, _d: Any) -> dict[str, Any]:
        return self._transport(tid).restart_ice()

    # -- transport

    def _transport(self, tid: str | None) -> TransportState:
        t = self.transports.get(tid or "")
        if t is None:
            raise InvalidStateError(f"transport {tid} not found")
        return t

    def _close_transport(self, tid: str) -> None:
        t = self.transports.pop(tid, None)
        if t is None:
            return
        for cid in list(t.consumer_ids):
            self._close_consumer(cid)
        for pid in list(t.producer_ids):
            self._close_producer(pid)
        router = self.routers.get(t.router_id)
        if router:
            router.transport_ids.discard(tid)
        self.transport_by_handle.pop(t.handle, None)
        if self.direct.pop(tid, None) is not None:
            t.pump(self.notify_binary)  # what was queued before the close
        t.close()

    def _transport_connect(self, tid: str, data: dict[str, Any]) -> dict[str, Any]:
        return self._transport(tid).connect(data)

    def _transport_getStats(self, tid: str, _d: Any) -> list[dict[str, Any]]:
        return [self._transport(tid).stats()]

    def _transport_produce(self, tid: str, data: dict[str, Any]) -> None:
        t = self._transport(tid)
        pid = data["producerId"]
        if pid in self.producers:
            raise InvalidStateError(f"producer {pid} already exists")
        streams = [(int(s["ssrc"]), int(s.get("rtxSsrc") or 0)) for s in data["streams"]]
        pt_map = {int(k): int(v) for k, v in data["ptMap"].items()}
        ext_map = {int(k): int(v) for k, v in data["extMap"].items()}
        codecs = {int(k): str(v) for k, v in (data.get("codecs") or {}).items()}
        handle = self.engine.add_producer(
            t.handle, data["kind"] == "video", streams, pt_map, ext_map, bool(data.get("paused")), codecs
        )
        fb = data.get("feedback") or {}
        self.engine.set_producer_feedback(
            handle,
            nack=bool(fb.get("nack")),
            rtx_apt={int(k): int(v) for k, v in (fb.get("rtxApt") or {}).items()},
            twcc_ext_id=int(fb.get("twccExtId") or 0),
            remb_floor_bps=self.remb_floor_bps,
            clock_rate=int(fb.get("clockRate") or 0),
        )
        rids = [s.get("rid") for s in data["streams"]]
        if data.get("mid") or any(rids):
            self.engine.set_producer_rtp_ids(
                handle, data.get("mid"), rids, int(data.get("midExtId") or 0), int(data.get("ridExtId") or 0),
                int(data.get("rridExtId") or 0),
            )
        self.producers[pid] = ProducerState(pid, handle, tid, data["kind"])
        t.producer_ids.add(pid)

    def _transport_consume(self, tid: str, data: dict[str, Any]) -> None:
        t = self._transport(tid)
        cid = data["consumerId"]
        if cid in self.consumers:
            raise InvalidStateError(f"consumer {cid} already exists")
        p = self.producers.get(data["producerId"])
        if p is None:
            raise InvalidStateError(f"producer {data['producerId']} not found")
        pt_map = {int(k): int(v) for k, v in data["ptMap"].items()}
        ext_map = {int(k): int(v) for k, v in data["extMap"].items()}
        handle = self.engine.add_consumer(
            t.handle, p.handle, int(data["ssrc"]), int(data.get("rtxSsrc") or 0), int(data["clockRate"]),
            pt_map, ext_map, bool(data.get("paused")), random.randrange(1, 0x8000),
        )
        fb = data.get("feedback") or {}
        self.engine.set_consumer_feedback(handle, nack=bool(fb.get("nack")), rtx_pt=int(fb.get("rtxPt") or 0))
        if data.get("midExtId"):
            self.engine.set_consumer_mid(handle, int(data["midExtId"]), str(data["mid"]))
        if fb.get("twccExtId") or fb.get("remb"):
            self.engine.set_consumer_twcc(handle, int(fb.get("twccExtId") or 0), bool(fb.get("remb")))
        if data.get("fixedStream") is not None:  # a pipe consumer's part: one encoding, whole
            try:
                self.engine.set_consumer_fixed_stream(handle, int(data["fixedStream"]))
            except ValueError:
                self.engine.remove_consumer(handle)
                raise
        self.consumers[cid] = ConsumerState(cid, handle, tid, p.id)
        self.consumer_by_handle[handle] = cid
        t.consumer_ids.add(cid)
        p.consumer_ids.add(cid)

    # -- producer

    def _producer(self, pid: str | None) -> ProducerState:
        p = self.producers.get(pid or "")
        if p is None:
            raise InvalidStateError(f"producer {pid} not found")
        return p

    def _close_producer(self, pid: str) -> None:
        p = self.producers.pop(pid, None)
        if p is None:
            return
        for cid in list(p.consumer_ids):
            self._close_consumer(cid)
        self.engine.remove_producer(p.handle)
        t = self.transports.get(p.transport_id)
        if t:
            t.producer_ids.discard(pid)

    def _producer_close(self, pid: str, _d: Any) -> None:
        self._close_producer(pid)

    def _producer_pause(self, pid: str, _d: Any) -> None:
        self.engine.set_producer_paused(self._producer(pid).handle, True)

    def _producer_resume(self, pid: str, _d: Any) -> None:
        self.engine.set_producer_paused(self._producer(pid).handle, False)

    def _producer_getStats(self, pid: str, _d: Any) -> list[dict[str, Any]]:
        p = self._producer(pid)
        stats = self.engine.producer_stats(p.handle)
        for s in stats:
            s.update({"type": "inbound-rtp", "kind": p.kind})
        return stats

    # -- consumer

    def _consumer(self, cid: str | None) -> ConsumerState:
        c = self.consumers.get(cid or "")
        if c is None:
            raise InvalidStateError(f"consumer {cid} not found")
        return c

    def _close_consumer(self, cid: str) -> None:
        c = self.consumers.pop(cid, None)
        if c is None:
            return
        self.engine.remove_consumer(c.handle)
        self.consumer_by_handle.pop(c.handle, None)
        t = self.transports.get(c.transport_id)
        if t:
            t.consumer_ids.discard(cid)
        p = self.producers.get(c.producer_id)
        if p:
            p.consumer_ids.discard(cid)

    def _consumer_close(self, cid: str, _d: Any) -> None:
        self._close_consumer(cid)

    def _consumer_pause(self, cid: str, _d: Any) -> None:
        self.engine.set_consumer_paused(self._consumer(cid).handle, True)

    def _consumer_resume(self, cid: str, _d: Any) -> None:
        self.engine.set_consumer_paused(self._consumer(cid).handle, False)

    def _consumer_setPreferredLayers(self, cid: str, data: dict[str, Any]) -> None:
        spatial = data.get("spatialLayer")
        if not isinstance(spatial, int) or isinstance(spatial, bool) or spatial < 0:
            raise InvalidParametersError("spatialLayer: required, an integer >= 0")
        temporal = data.get("temporalLayer")
        if temporal is not None and (not isinstance(temporal, int) or isinstance(temporal, bool) or temporal < 0):
            raise InvalidParametersError("temporalLayer: an integer >= 0, or absent")
        handle = self._consumer(cid).handle
        self.engine.set_consumer_target_stream(handle, spatial)
        self.engine.set_consumer_temporal_layer(handle, -1 if temporal is None else temporal)

    def _consumer_setPriority(self, cid: str, data: dict[str, Any]) -> None:
        priority = data.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool) or not 1 <= priority <= 255:
            raise InvalidParametersError("priority: required, an integer from 1 to 255")
        self.engine.set_consumer_priority(self._consumer(cid).handle, priority)

    def _consumer_requestKeyFrame(self, cid: str, _d: Any) -> None:
        self.engine.request_consumer_keyframe(self._consumer(cid).handle)

    def _consumer_getStats(self, cid: str, _d: Any) -> list[dict[str, Any]]:
        c = self._consumer(cid)
        s = self.engine.consumer_stats(c.handle)
        s.update({"type": "outbound-rtp"})
        return [s]


# The channel's methods (mediasoup's names) and their handlers.
_HANDLERS: dict[str, Callable[[WorkerState, Any, Any], Any]] = {
    "worker.configure": WorkerState._worker_configure,
    "worker.createWebRtcServer": WorkerState._worker_createWebRtcServer,
    "worker.closeWebRtcServer": WorkerState._worker_closeWebRtcServer,
    "worker.dump": WorkerState._worker_dump,
    "worker.getResourceUsage": WorkerState._worker_getResourceUsage,
    "worker.getCounters": WorkerState._worker_getCounters,
    "worker.createRouter": WorkerState._worker_createRouter,
    "worker.closeRouter": WorkerState._worker_closeRouter,
    "router.createPlainTransport": WorkerState._router_createPlainTransport,
    "router.closeTransport": WorkerState._router_closeTransport,
    "router.createDirectTransport": WorkerState._router_createDirectTransport,
    "router.createWebRtcTransport": WorkerState._router_createWebRtcTransport,
    "transport.restartIce": WorkerState._transport_restartIce,
    "transport.connect": WorkerState._transport_connect,
    "transport.getStats": WorkerState._transport_getStats,
    "transport.produce": WorkerState._transport_produce,
    "transport.consume": WorkerState._transport_consume,
    "producer.close": WorkerState._producer_close,
    "producer.pause": WorkerState._producer_pause,
    "producer.resume": WorkerState._producer_resume,
    "producer.getStats": WorkerState._producer_getStats,
    "consumer.close": WorkerState._consumer_close,
    "consumer.pause": WorkerState._consumer_pause,
    "consumer.resume": WorkerState._consumer_resume,
    "consumer.getStats": WorkerState._consumer_getStats,
    "consumer.setPreferredLayers": WorkerState._consumer_setPreferredLayers,
    "consumer.setPriority": WorkerState._consumer_setPriority,
    "consumer.requestKeyFrame": WorkerState._consumer_requestKeyFrame,
}
