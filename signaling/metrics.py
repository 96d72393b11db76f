"""Prometheus metrics of the server (prometheus-client), served at ``/metrics``.

Each :class:`Metrics` has its own ``CollectorRegistry`` (never the global
one), so several applications, and tests, can live in one process.

Two kinds of metrics:

* recorded as things happen: call mode switches and their duration, HTTP
  request latency (:func:`metrics_middleware`), active calls and
  participants (set by the call service), authentication failures and
  rate-limited requests;
* read from the media side on each scrape: workers, rooms, routers,
  transports, producers, consumers (counted from the parent's object model),
  worker deaths and replacements (the room manager's supervision totals),
  admission refusals by limit (``sfu_admission_rejected_total{limit}``),
  transports closed because they never connected, open file descriptors
  against their limit (the server and each worker)
  and the engines' counters (packets and bytes received and sent, drops by
  reason, NACK, PLI, FIR, REMB, retransmissions), plus publishers' loss from
  producer stats. prometheus-client collects synchronously, so
  :meth:`Metrics.refresh` (awaited by :func:`metrics_handler` before the
  exposition) gathers them from the workers into a snapshot that the
  collector then reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, Optional

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .rooms import LIMIT_NAMES

if TYPE_CHECKING:
    from .rooms import RoomManager

logger = logging.getLogger("sfu.signaling.metrics")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Label values of ``sfu_socketio_events_rejected_total`` (signaling.calls.REJECT_REASONS).
SOCKETIO_REJECT_REASONS = ("rate-limit", "invalid-payload", "too-large", "unknown-event", "not-authenticated")

#: Mode switches take from tens of milliseconds (loopback) to the seed's 2 s limit.
MODE_SWITCH_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Engine counters (sfu/_fastpath/_engine.pyx COUNTER_NAMES) -> Prometheus
# counters: (name without _total, help, extra label or None, {engine name: label value}).
ENGINE_COUNTERS: tuple[tuple[str, str, Optional[str], dict[str, Optional[str]]], ...] = (
    ("sfu_received_datagrams", "UDP datagrams received by the media engine.", None, {"rx_datagrams": None}),
    ("sfu_received_bytes", "UDP payload bytes received by the media engine.", None, {"rx_bytes": None}),
    ("sfu_received_packets", "Datagrams received, by kind (RFC 7983 demultiplexing).", "kind",
     {"rx_rtp": "rtp", "rx_rtcp": "rtcp", "rx_stun": "stun", "rx_dtls": "dtls", "rx_unknown": "unknown"}),
    ("sfu_sent_datagrams", "Datagrams sent: forwarded RTP plus RTCP, retransmissions, STUN and DTLS.", None,
     {"tx_datagrams": None}),
    ("sfu_sent_bytes", "Bytes sent (forwarded media and control).", None, {"tx_bytes": None}),
    ("sfu_send_errors", "Datagrams that could not be sent, by cause.", "cause",
     {"tx_errors": "socket", "tx_srtp_errors": "srtp"}),
    ("sfu_dropped_datagrams", "Datagrams received and dropped, by reason.", "reason",
     {name: name[len("drop_"):] for name in (
         "drop_no_transport", "drop_not_connected", "drop_unknown_source", "drop_too_big", "drop_srtp",
         "drop_rtp_malformed", "drop_rtcp_malformed", "drop_unknown_ssrc", "drop_unknown_pt",
         "drop_producer_paused", "drop_rtx", "drop_outbox_full", "drop_upcall_full")}),
    ("sfu_nack_packets", "RTCP NACK packets received from viewers and sent to publishers.", "direction",
     {"rx_nack": "received", "tx_nack": "sent"}),
    ("sfu_pli_packets", "RTCP PLI (keyframe request) packets received and sent.", "direction",
     {"rx_pli": "received", "tx_pli": "sent"}),
    ("sfu_fir_packets", "RTCP FIR packets received.", "direction", {"rx_fir": "received"}),
    ("sfu_remb_packets", "RTCP REMB packets received and sent.", "direction",
     {"rx_remb": "received", "tx_remb": "sent"}),
    ("sfu_rtcp_reports_sent", "RTCP reports sent, by type.", "type",
     {"tx_sr": "sr", "tx_rr": "rr", "tx_twcc": "transport-cc"}),
    ("sfu_retransmissions", "Packets retransmitted to viewers in answer to NACKs.", None,
     {"tx_retransmissions": None}),
    ("sfu_retransmission_misses", "NACKed packets no longer in the retransmission buffer.", None,
     {"retransmission_misses": None}),
    ("sfu_rtx_received", "RTX (retransmitted) packets received from publishers.", None, {"rx_rtx": None}),
    ("sfu_keyframe_retries", "Keyframe requests repeated for viewers still waiting for one.", None,
     {"keyframe_retries": None}),
    ("sfu_stun_unvalidated_dropped", "STUN from tuples ICE has not validated, dropped by the engine's "
     "admission (rate limit or queue share).", None, {"drop_stun_unvalidated": None}),
    ("sfu_ssrc_learned", "Publisher streams bound to their SSRC from MID/RID (no SSRC signalled).", None,
     {"ssrc_learned": None}),
    ("sfu_engine_syscalls", "recvmmsg/sendmmsg calls of the engine I/O thread.", "call",
     {"recv_calls": "recvmmsg", "send_calls": "sendmmsg"}),
    ("sfu_engine_loop_iterations", "Wake-ups of the engine I/O thread.", None, {"loop_iterations": None}),
    ("sfu_engine_timer_runs", "Runs of the engine's timer work (at the soonest unit deadline).", None,
     {"timer_runs": None}),
    ("sfu_direct_transport_dropped", "Packets for a DirectTransport dropped: its queue was full.",
     None, {"drop_direct_full": None}),
)


@dataclass
class MediaSnapshot:
    """What the last :meth:`Metrics.refresh` read from the media side."""

    at: float = 0.0
    workers: int = 0
    workers_alive: int = 0
    rooms: int = 0
    routers: int = 0
    transports: int = 0
    producers: dict[str, int] = field(default_factory=dict)  # kind -> count
    consumers: dict[str, int] = field(default_factory=dict)
    engine: dict[str, dict[str, int]] = field(default_factory=dict)  # worker pid -> counters
    producer_packets: int = 0
    producer_packets_lost: int = 0
    producer_stats_complete: bool = True
    worker_deaths: int = 0
    worker_replacements: int = 0
    worker_replacement_failures: int = 0
    workers_replacing: int = 0
    rooms_lost: int = 0
    rooms_spread: int = 0
    admission_rejected: dict[str, int] = field(default_factory=dict)  # limit -> refusals
    transports_closed_unconnected: int = 0
    fds: list[dict[str, Any]] = field(default_factory=list)  # RoomManager.fd_state()


class _MediaCollector:
    """Reports the snapshot of a :class:`Metrics` (a custom collector)."""

    def __init__(self, metrics: "Metrics") -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        s = self._metrics.snapshot

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("sfu_workers", "Media worker processes configured.", s.workers)
        yield gauge("sfu_workers_alive", "Media worker processes running.", s.workers_alive)
        yield gauge("sfu_workers_replacing", "Worker slots whose worker died and whose replacement is starting.",
                    s.workers_replacing)
        for name, doc, value in (
                ("sfu_worker_deaths", "Media workers that died (exited without being asked to).", s.worker_deaths),
                ("sfu_worker_replacements", "Replacement workers started for workers that died.",
                 s.worker_replacements),
                ("sfu_worker_replacement_failures", "Attempts to start a replacement worker that failed "
                 "(each is retried).", s.worker_replacement_failures),
                ("sfu_rooms_lost", "Rooms closed because their worker died.", s.rooms_lost),
                ("sfu_room_routers_added", "Routers added to rooms on other workers (consumer budget per "
                 "worker reached; producers piped to them).", s.rooms_spread)):
            yield CounterMetricFamily(name, doc, value=value)
        rejected = CounterMetricFamily("sfu_admission_rejected", "Requests refused by an admission limit, by limit.",
                                       labels=["limit"])
        for limit in sorted(set(LIMIT_NAMES) | set(s.admission_rejected)):
            rejected.add_metric([limit], s.admission_rejected.get(limit, 0))
        yield rejected
        yield CounterMetricFamily("sfu_transports_closed_unconnected",
                                  "Transports closed because ICE/DTLS had not completed within the connect timeout.",
                                  value=s.transports_closed_unconnected)
        open_fds = GaugeMetricFamily("sfu_open_fds", "Open file descriptors, by process (server or worker).",
                                     labels=["process", "pid"])
        max_fds = GaugeMetricFamily("sfu_max_fds", "Open-files limit (soft RLIMIT_NOFILE), by process.",
                                    labels=["process", "pid"])
        for f in s.fds:
            open_fds.add_metric([f["process"], str(f["pid"])], f["open"])
            max_fds.add_metric([f["process"], str(f["pid"])], f["limit"])
        yield open_fds
        yield max_fds
        yield gauge("sfu_rooms", "Rooms (one router each) open in the room manager.", s.rooms)
        yield gauge("sfu_routers", "Routers open on the running workers.", s.routers)
        yield gauge("sfu_transports", "Transports open.", s.transports)
        for name, doc, counts in (("sfu_producers", "Producers open, by kind.", s.producers),
                                  ("sfu_consumers", "Consumers open, by kind.", s.consumers)):
            g = GaugeMetricFamily(name, doc, labels=["kind"])
            for kind in sorted(set(counts) | {"audio", "video"}):
                g.add_metric([kind], counts.get(kind, 0))
            yield g
        yield gauge("sfu_producer_packets_received",
                    "RTP packets received from publishers, summed over open producers (drops when one closes).",
                    s.producer_packets)
        yield gauge("sfu_producer_packets_lost",
                    "RTP packets lost between publishers and the SFU (RFC 3550 cumulative loss), summed over "
                    "open producers.", s.producer_packets_lost)
        yield gauge("sfu_media_snapshot_timestamp_seconds", "When the media figures were last read (Unix time).",
                    s.at)
        for name, doc, label, mapping in ENGINE_COUNTERS:
            labels = ["worker"] + ([label] if label else [])
            c = CounterMetricFamily(name, doc, labels=labels)
            for pid, counters in sorted(s.engine.items()):
                for engine_name, value in mapping.items():
                    if engine_name in counters:
                        c.add_metric([pid] + ([value] if label else []), counters[engine_name])  # type: ignore[list-item]
            yield c
        busy = CounterMetricFamily("sfu_engine_busy_seconds", "Time the engine I/O thread spent working.",
                                   labels=["worker"])
        for pid, counters in sorted(s.engine.items()):
            if "loop_busy_ns" in counters:
                busy.add_metric([pid], counters["loop_busy_ns"] / 1e9)
        yield busy


class Metrics:
    """The server's metrics, on a registry of their own.

    Recorded by the application: ``mode_switches`` (Counter, label
    ``to_mode``), ``mode_switch_seconds`` (Histogram), ``http_request_seconds``
    (Histogram, labels ``method``, ``route``, ``status``; see
    :func:`metrics_middleware`), ``calls_active`` and ``participants_active``
    (Gauges), ``auth_failures`` and ``rate_limited`` (Counters),
    ``socketio_events_rejected`` (Counter, label ``reason``) and
    ``socketio_abuse_disconnects`` (Counter).
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None, worker_timeout_s: float = 2.0,
                 max_producer_stats: int = 500) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.mode_switches = Counter("sfu_call_mode_switches", "Call mode switches (P2P <-> SFU), by new mode.",
                                     ["to_mode"], registry=r)
        self.mode_switch_seconds = Histogram(
            "sfu_call_mode_switch_seconds",
            "Time from the decision to switch a call's mode until media flows on the new path.",
            buckets=MODE_SWITCH_BUCKETS, registry=r)
        self.http_request_seconds = Histogram(
            "sfu_http_request_seconds", "HTTP request latency, by method, route (the route pattern) and status.",
            ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=r)
        self.calls_active = Gauge("sfu_calls_active", "Calls in progress.", registry=r)
        self.participants_active = Gauge("sfu_participants_active", "Participants in calls in progress.",
                                         registry=r)
        self.auth_failures = Counter("sfu_auth_failures", "Requests and connections refused for a missing or "
                                     "invalid token.", registry=r)
        self.rate_limited = Counter("sfu_rate_limited_requests", "Requests refused with 429 by the rate limiter.",
                                    registry=r)
        self.socketio_events_rejected = Counter(
            "sfu_socketio_events_rejected", "Socket.IO events refused before their handler ran, by reason "
            "(rate-limit, invalid-payload, too-large, unknown-event, not-authenticated).", ["reason"], registry=r)
        for reason in SOCKETIO_REJECT_REASONS:
            self.socketio_events_rejected.labels(reason=reason)
        self.socketio_abuse_disconnects = Counter(
            "sfu_socketio_abuse_disconnects", "Socket.IO connections disconnected for exceeding the event rate "
            "limit for too long.", registry=r)
        self.recordings_active = Gauge("sfu_recordings_active", "Recordings running.", registry=r)
        self.recording_bytes = Counter("sfu_recording_bytes", "Encoded bytes written by finished recordings.",
                                       registry=r)
        self.recording_frames_dropped = Counter(
            "sfu_recording_frames_dropped", "Frames finished recordings could not write (loss, waiting for a "
            "keyframe).", registry=r)
        self.worker_timeout_s = worker_timeout_s
        self.max_producer_stats = max_producer_stats
        self.snapshot = MediaSnapshot()
        self._rooms: Optional["RoomManager"] = None
        r.register(_MediaCollector(self))

    def bind_rooms(self, rooms: "RoomManager") -> None:
        """Reports the workers and rooms of ``rooms`` from now on."""
        self._rooms = rooms

    def observe_mode_switch(self, to_mode: str, seconds: float) -> None:
        """Counts a completed switch to ``to_mode`` and records its duration."""
        self.mode_switches.labels(to_mode=to_mode).inc()
        self.mode_switch_seconds.observe(seconds)

    async def refresh(self) -> MediaSnapshot:
        """Reads the media figures (object counts, engine counters, producer
        loss) into :attr:`snapshot`. A worker that does not answer within
        ``worker_timeout_s`` keeps its previous counters."""
        rooms = self._rooms
        s = MediaSnapshot(at=time.time())
        if rooms is None:
            self.snapshot = s
            return s
        workers = list(rooms.workers)
        alive = [w for w in workers if not w.closed]
        s.workers, s.workers_alive = len(workers), len(alive)
        s.worker_deaths = getattr(rooms, "worker_deaths", 0)
        s.worker_replacements = getattr(rooms, "worker_replacements", 0)
        s.worker_replacement_failures = getattr(rooms, "worker_replacement_failures", 0)
        s.rooms_lost = getattr(rooms, "rooms_lost", 0)
        s.rooms_spread = getattr(rooms, "rooms_spread", 0)
        s.workers_replacing = len(rooms.replacing()) if hasattr(rooms, "replacing") else 0
        limits = getattr(rooms, "limits", None)
        if limits is not None:
            s.admission_rejected = dict(limits.rejected)
        s.transports_closed_unconnected = getattr(rooms, "transports_closed_unconnected", 0)
        if hasattr(rooms, "fd_state"):
            s.fds = rooms.fd_state()
        s.rooms = sum(1 for room in list(rooms.rooms.values()) if not room.router.closed)
        producers = []
        for w in alive:
            for router in w.routers:
                if router.closed:
                    continue
                s.routers += 1
                for t in router.transports:
                    if t.closed:
                        continue
                    s.transports += 1
                    for p in t.producers:
                        if not p.closed:
                            s.producers[p.kind] = s.producers.get(p.kind, 0) + 1
                            producers.append(p)
                    for c in t.consumers:
                        if not c.closed:
                            s.consumers[c.kind] = s.consumers.get(c.kind, 0) + 1
        previous = self.snapshot.engine
        counters = await asyncio.gather(*(self._worker_counters(w) for w in alive))
        for w, got in zip(alive, counters):
            key = str(w.pid)
            if got is not None:
                s.engine[key] = got
            elif key in previous:
                s.engine[key] = previous[key]
        s.producer_stats_complete = len(producers) <= self.max_producer_stats
        stats = await asyncio.gather(*(self._producer_stats(p) for p in producers[: self.max_producer_stats]))
        for streams in stats:
            for st in streams:
                s.producer_packets += int(st.get("packetCount") or 0)
                s.producer_packets_lost += int(st.get("packetsLost") or 0)
        self.snapshot = s
        return s

    async def _worker_counters(self, worker: Any) -> Optional[dict[str, int]]:
        try:
            return await asyncio.wait_for(worker.get_counters(), self.worker_timeout_s)
        except asyncio.TimeoutError:
            logger.warning("worker %s did not return its counters within %.1f s", worker.pid, self.worker_timeout_s)
        except Exception as exc:  # a worker closing or dying mid-scrape
            logger.debug("counters of worker %s unavailable: %s", worker.pid, exc)
        return None

    async def _producer_stats(self, producer: Any) -> list[dict[str, Any]]:
        try:
            return await asyncio.wait_for(producer.get_stats(), self.worker_timeout_s)
        except Exception as exc:  # closed meanwhile, or its worker is gone
            logger.debug("stats of producer %s unavailable: %s", producer.id, exc)
            return []


METRICS = web.AppKey("metrics", Metrics)


def route_label(request: web.Request) -> str:
    """The route pattern a request matched (``/api/calls/{callId}/leave``),
    ``unmatched`` for none: bounded cardinality, unlike raw paths."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


def metrics_middleware(
    metrics: Metrics, exclude: Callable[[str], bool] = lambda path: path.startswith("/socket.io")
) -> Any:
    """aiohttp middleware timing each request into ``http_request_seconds``.

    Put it first (outermost), so 401 and 429 answers are timed too.
    WebSocket responses (whose duration is the connection's) and paths
    ``exclude`` matches (by default Socket.IO's, whose long-polls wait for
    events) are not recorded."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exclude(request.path):
            return await handler(request)
        start = time.perf_counter()
        status: Optional[int] = 500
        try:
            response = await handler(request)
            status = None if isinstance(response, web.WebSocketResponse) else response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            if status is not None:
                metrics.http_request_seconds.labels(request.method, route_label(request), str(status)).observe(
                    time.perf_counter() - start)

    return middleware


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: refreshes the media figures, then serves the
    exposition of ``request.app[METRICS]`` (OpenMetrics when asked for)."""
    metrics = request.app[METRICS]
    await metrics.refresh()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(metrics.registry), headers={"Content-Type": content_type})
