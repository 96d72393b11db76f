"""Rooms, participants and the worker pool behind the REST API.

A room is one router on the least-loaded worker. Every transport, producer
and consumer created through the API belongs to the participant that asked
for it, and a participant can only act on its own objects (acting on another
participant's transport or consumer is a 403).

A room may carry a :class:`RoomGuard` (the call service sets one on a call's
room): it decides who may produce and who may consume whose producers, and
hears the room's events.

Supervision: the manager watches its workers. A worker that dies (mediasoup's
``"died"``: the process exited without being asked to) closes its routers;
every room on it is closed with reason ``worker-died`` (its WebSocket clients
get ``room-closed`` naming what was lost, its participants, WHIP and WHEP
sessions included, are removed) and, when the manager knows how to start
workers (a :class:`WorkerSettings`), a replacement with the same settings,
the same shared WebRTC port included, takes the dead worker's slot. A worker
closed on purpose (``Worker.close()``) is not replaced.

Empty rooms: a room nobody is in (created and not joined, or left by its
last participant) is closed after :attr:`RoomManager.empty_room_grace_s`
(30 s by default; 0 keeps empty rooms open), which frees its router; a
participant joining within that time keeps it open. A room with a
:class:`RoomGuard` (a call's) is left to its owner: the call service
releases a call's room with the call.

Admission limits (:class:`Limits`): a room refuses, before anything is
allocated, a participant, transport, consumer or room beyond its limit with a
:class:`LimitError` (an :class:`ApiError`, mostly 429) whose message names
the limit (``transports per participant: limit 4 reached``), and counts the
refusal in :attr:`Limits.rejected`. Transports whose ICE/DTLS has not
completed within ``Limits.connect_timeout_s`` are closed (counted in
:attr:`RoomManager.transports_closed_unconnected`). With a port per
transport (no shared WebRTC port) every transport holds a file descriptor of
its worker: a transport that would leave its worker fewer than
``Limits.fd_reserve`` free descriptors is refused (503), see
:meth:`RoomManager.fd_state`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import resource
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import sfu

logger = logging.getLogger("sfu.signaling")

DEFAULT_MEDIA_CODECS: list[dict[str, Any]] = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
    {"kind": "video", "mimeType": "video/VP9", "clockRate": 90000, "parameters": {"profile-id": 0}},
    {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
     "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1}},
]


class ApiError(Exception):
    """An error with an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Event = Callable[[str, dict[str, Any]], Awaitable[None]]


# ------------------------------------------------------------ admission limits

#: Every admission limit: its metric label -> how messages name it.
LIMIT_NAMES: dict[str, str] = {
    "whip_sections": "m-lines per WHIP offer",
    "whep_sections": "m-lines per WHEP offer",
    "transports_per_participant": "transports per participant",
    "transports_per_room": "transports per room",
    "participants_per_room": "participants per room",
    "consumers_per_transport": "consumers per transport",
    "request_body": "request body",
    "rooms_per_user": "rooms per user",
    "file_descriptors": "file descriptors",
}

#: The user a request acts for, when it may create a room (set by the
#: server for /api/rooms and /whip requests): :meth:`RoomManager.create_room`
#: counts the room against that user's ``rooms_per_user``.
ROOM_CREATOR: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("sfu_room_creator", default=None)


class LimitError(ApiError):
    """A request refused by an admission limit; ``limit`` is its
    :data:`LIMIT_NAMES` key (the ``limit`` label of
    ``sfu_admission_rejected_total``)."""

    def __init__(self, limit: str, status: int, message: str) -> None:
        super().__init__(status, message)
        self.limit = limit


def format_bytes(n: int) -> str:
    """``65536`` -> ``64 kB``, ``1048576`` -> ``1024 kB``, ``1000`` -> ``1000 bytes``."""
    return f"{n // 1024} kB" if n % 1024 == 0 else f"{n} bytes"


@dataclass
class Limits:
    """Admission limits of the server (0 turns one off).

    ``whip_sections``/``whep_sections``: m-lines per WHIP/WHEP offer (a
    publisher sends audio + video; a viewer's every recvonly section becomes
    a consumer). ``transports_per_participant``, ``transports_per_room``,
    ``participants_per_room`` (call members joining their call's room are
    bounded by the call's own size and never refused, but count),
    ``consumers_per_transport`` (200: a viewer's one receiving transport in
    a full room gets audio + video of the 99 others), ``request_body_bytes`` (aiohttp's
    ``client_max_size``: SDP offers and JSON bodies), ``rooms_per_user``
    (open rooms an authenticated user created; when the user is at the
    limit, the oldest of those rooms that nobody is in is closed to make
    room, and only when none is empty is the request refused).
    ``connect_timeout_s``: a transport whose ICE + DTLS has not completed by
    then is closed. ``fd_reserve``: descriptors kept free in each worker (a
    transport that would use one of them is refused, 503);
    ``fd_low_fraction``: /readyz reports not ready when a process has less
    than this fraction of its descriptors left.

    :attr:`rejected` counts refusals by limit (read by the metrics)."""

    whip_sections: int = 2
    whep_sections: int = 4
    transports_per_participant: int = 4
    transports_per_room: int = 200
    participants_per_room: int = 100
    consumers_per_transport: int = 200
    request_body_bytes: int = 64 * 1024
    rooms_per_user: int = 10
    connect_timeout_s: float = 30.0
    fd_reserve: int = 64
    fd_low_fraction: float = 0.10
    rejected: Counter = field(default_factory=Counter, compare=False, repr=False)

    def refuse(self, limit: str, status: int, message: str) -> LimitError:
        """Counts a refusal by ``limit`` and returns the error to raise."""
        self.rejected[limit] += 1
        logger.info("admission refused (%s): %s", limit, message)
        return LimitError(limit, status, message)

    def check_count(self, limit: str, current: int, detail: str = "") -> None:
        """429 when ``current`` (what exists already) has reached the
        limit named ``limit`` (an attribute of this class)."""
        value = getattr(self, limit)
        if value and current >= value:
            raise self.refuse(limit, 429, f"{LIMIT_NAMES[limit]}: limit {value} reached{detail}")

    def check_offer_sections(self, kind: str, count: int) -> None:
        """An SDP offer of ``kind`` ``"whip"`` or ``"whep"`` with ``count``
        m-lines: 400 naming the limit when it has more than allowed. Call it
        before anything is created for the offer."""
        if kind not in ("whip", "whep"):
            raise ValueError(f"kind: 'whip' or 'whep', not {kind!r}")
        limit = f"{kind}_sections"
        value = getattr(self, limit)
        if value and count > value:
            raise self.refuse(limit, 400, f"{LIMIT_NAMES[limit]}: limit {value}, the offer has {count}"
                                          + (" (audio + video)" if kind == "whip" and value == 2 else ""))

    def body_too_large(self) -> LimitError:
        """The refusal of a request body over ``request_body_bytes`` (413)."""
        return self.refuse("request_body", 413, f"request body: limit {format_bytes(self.request_body_bytes)}")


def count_sdp_sections(body: bytes) -> int:
    """The m-lines of an SDP (lines starting with ``m=``), without parsing it."""
    return sum(1 for line in body.split(b"\n") if line.lstrip().startswith(b"m="))


#: Descriptor limits above this are reported as this (RLIM_INFINITY).
_FD_CEILING = 1 << 20


def fd_usage(pid: Optional[int] = None) -> Optional[tuple[int, int]]:
    """(open descriptors, soft RLIMIT_NOFILE) of process ``pid`` (this one
    when None), from /proc; None when it cannot be read."""
    try:
        open_fds = len(os.listdir(f"/proc/{pid or 'self'}/fd"))
        if pid is None or pid == os.getpid():
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        else:
            soft, _ = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft > _FD_CEILING:
        soft = _FD_CEILING
    return open_fds, soft


def raise_fd_limit() -> tuple[int, int, int]:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit (workers
    started afterwards inherit it). Returns (soft before, soft now, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, _FD_CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            logger.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, now, hard


@dataclass
class Participant:
    """One client of a room. ``owner`` is the authenticated user (JWT ``sub``)
    that made it, when the server authenticates; ``member`` the call
    participant it acts for, in a call's room."""

    id: str
    token: str
    owner: Optional[str] = None
    member: Optional[str] = None
    transports: dict[str, sfu.WebRtcTransport] = field(default_factory=dict)
    producers: dict[str, sfu.Producer] = field(default_factory=dict)
    consumers: dict[str, sfu.Consumer] = field(default_factory=dict)
    sockets: set[Any] = field(default_factory=set)  # WebSocket responses
    pending_transports: int = 0  # being created (counted by the transports_per_* limits)
    #: a WHIP/WHEP session's ICE: the entity tag of its ICE session (RFC 9725
    #: §4.3) and the client's current username fragment
    ice_etag: Optional[str] = None
    remote_ice_ufrag: Optional[str] = None
    #: the room's router its transports are on (set at its first transport;
    #: another worker's when the room's worker is over its consumer budget)
    router: Optional[sfu.Router] = None

    def transport(self, transport_id: str) -> sfu.WebRtcTransport:
        t = self.transports.get(transport_id)
        if t is None or t.closed:
            raise ApiError(404, f"transport {transport_id} not found for this participant")
        return t

    def consumer(self, consumer_id: str) -> sfu.Consumer:
        c = self.consumers.get(consumer_id)
        if c is None or c.closed:
            raise ApiError(404, f"consumer {consumer_id} not found for this participant")
        return c


class RoomGuard:
    """Policy and event hooks of a room (the default allows everything).

    The ``check_*`` methods raise :class:`ApiError` (403) to refuse."""

    def check_produce(self, room: "Room", p: Participant, kind: str) -> None:
        """May ``p`` publish a ``kind`` track?"""

    def check_consume(self, room: "Room", p: Participant, producer_owner: Optional[Participant]) -> None:
        """May ``p`` receive a producer of ``producer_owner``?"""

    def on_event(self, room: "Room", event: str, data: dict[str, Any]) -> None:
        """Called for every event the room broadcasts (new-producer, ...)."""


class Room:
    """One call: a router and its participants."""

    def __init__(self, room_id: str, router: sfu.Router, webrtc_server: Optional[sfu.WebRtcServer],
                 listen_ip: str, announced_ip: Optional[str], *, manager: Optional["RoomManager"] = None,
                 created_by: Optional[str] = None) -> None:
        self.id = room_id
        self.manager = manager
        self._own_limits = Limits()
        #: The authenticated user that created the room (counted in ``rooms_per_user``).
        self.created_by = created_by
        self._pending_transports = 0
        self._connect_watched: set[str] = set()  # transports whose connect timer runs
        self._pending_consumers: dict[str, int] = {}
        self.router = router
        #: every router of the room: the first one, then those on other
        #: workers that took participants when the first one's worker was
        #: over the manager's consumer budget (each producer of the room is
        #: piped to all of them)
        self.routers: list[sfu.Router] = [router]
        #: awaited after a participant's producer is made, before the answer
        #: (in a cluster: an edge room pushes it to the room's node, the
        #: room's node tells its edges; signaling/edge.py)
        self.producer_hooks: list[Callable[[Participant, sfu.Producer], Awaitable[None]]] = []
        #: asked by consume() for a producer the room does not know (an edge
        #: room pulls it from the room's node): True once the room has it
        self.missing_producer: Optional[Callable[[str], Awaitable[bool]]] = None
        self._placement_lock = asyncio.Lock()
        self.webrtc_server = webrtc_server
        self.listen_ip = listen_ip
        self.announced_ip = announced_ip
        self.participants: dict[str, Participant] = {}
        self.guard: Optional[RoomGuard] = None
        #: Set when the room was closed because its worker died (see :meth:`lost`).
        self.closed_reason: Optional[str] = None
        self._lost_producers: list[dict[str, Any]] = []
        self._empty_timer: Optional[asyncio.TimerHandle] = None

    @property
    def limits(self) -> Limits:
        """The manager's admission limits (defaults for a room without one)."""
        return self.manager.limits if self.manager is not None else self._own_limits

    @property
    def worker(self) -> sfu.Worker:
        """The worker process the room's router lives on."""
        return self.router.worker

    def participant_by_token(self, token: str) -> Participant:
        for p in self.participants.values():
            if secrets.compare_digest(p.token, token):
                return p
        raise ApiError(401, "unknown or missing participant token (Authorization: Bearer <token>)")

    def join(self, participant_id: Optional[str] = None, owner: Optional[str] = None,
             member: Optional[str] = None) -> Participant:
        """A new participant (a random id unless one is given; ApiError 409
        when that id is taken)."""
        pid = participant_id or secrets.token_hex(8)
        if pid in self.participants:
            raise ApiError(409, f"participant {pid} already exists in room {self.id}")
        if participant_id is None:  # a call member (its own id) is bounded by its call's size
            self.limits.check_count("participants_per_room", len(self.participants), f" in room {self.id}")
        p = Participant(id=pid, token=secrets.token_urlsafe(24), owner=owner, member=member)
        self.participants[p.id] = p
        self._cancel_empty_close()
        return p

    # ------------------------------------------------------- empty rooms

    def schedule_empty_close(self) -> None:
        """Closes the room after the manager's ``empty_room_grace_s`` unless
        somebody joins meanwhile (nothing without a manager, with a grace
        of 0, or when the room is closed already). Restarts a running
        grace period."""
        self._cancel_empty_close()
        grace = self.manager.empty_room_grace_s if self.manager is not None else 0
        if not grace or grace <= 0 or self.router.closed or self.guard is not None:
            return
        self._empty_timer = asyncio.get_running_loop().call_later(grace, self._close_if_empty)

    def _cancel_empty_close(self) -> None:
        if self._empty_timer is not None:
            self._empty_timer.cancel()
            self._empty_timer = None

    @property
    def closing_when_empty(self) -> bool:
        """True while the room's grace period runs (it is empty)."""
        return self._empty_timer is not None

    def _close_if_empty(self) -> None:
        self._empty_timer = None
        if self.participants or self.router.closed or self.guard is not None:
            return  # joined meanwhile, gone already, or a call's room (the call service releases it)
        manager = self.manager
        assert manager is not None
        logger.info("room %s: empty for %.0f s, closed (router %s freed)", self.id, manager.empty_room_grace_s,
                    self.router.id)
        manager.rooms_closed_empty += 1
        if manager.rooms.get(self.id) is self:
            manager.close_room(self.id)
        else:
            self.close()

    def owned_by(self, user_id: str) -> list[Participant]:
        """The participants an authenticated user made."""
        return [p for p in self.participants.values() if p.owner == user_id]

    def transport_of(self, p: Participant, transport_id: str) -> sfu.WebRtcTransport:
        """``p``'s transport; 403 when it is another participant's, 404 when
        there is none with that id."""
        t = p.transports.get(transport_id)
        if t is not None and not t.closed:
            return t
        if any(transport_id in other.transports for other in self.participants.values()):
            raise ApiError(403, f"transport {transport_id} belongs to another participant")
        raise ApiError(404, f"transport {transport_id} not found for this participant")

    def consumer_of(self, p: Participant, consumer_id: str) -> sfu.Consumer:
        """``p``'s consumer; 403 when it is another participant's, 404 when
        there is none with that id."""
        c = p.consumers.get(consumer_id)
        if c is not None and not c.closed:
            return c
        if any(consumer_id in other.consumers for other in self.participants.values()):
            raise ApiError(403, f"consumer {consumer_id} belongs to another participant")
        raise ApiError(404, f"consumer {consumer_id} not found for this participant")

    def producer_owner(self, producer_id: str) -> Optional[Participant]:
        """The participant whose producer this is (None if unknown)."""
        for p in self.participants.values():
            if producer_id in p.producers:
                return p
        return None

    async def broadcast(self, event: str, data: dict[str, Any], exclude: Optional[str] = None) -> None:
        if self.guard is not None:
            try:
                self.guard.on_event(self, event, data)
            except Exception:  # a listener's bug must not break the room
                logger.exception("room %s: guard failed on %s", self.id, event)
        for listener in list(self.manager.on_room_event) if self.manager is not None else ():
            try:
                listener(self, event, data)
            except Exception:
                logger.exception("room %s: listener failed on %s", self.id, event)
        for p in list(self.participants.values()):
            if p.id == exclude:
                continue
            for ws in list(p.sockets):
                try:
                    await ws.send_json({"event": event, "data": data})
                except Exception as exc:  # a dead socket must not disturb the others
                    logger.debug("dropping websocket of %s: %s", p.id, exc)
                    p.sockets.discard(ws)

    async def create_transport(self, p: Participant, direction: str) -> sfu.WebRtcTransport:
        if direction not in ("send", "recv"):
            raise ApiError(400, "direction: must be 'send' or 'recv'")
        limits = self.limits
        limits.check_count("transports_per_participant", len(p.transports) + p.pending_transports)
        limits.check_count("transports_per_room", self.transport_count() + self._pending_transports,
                           f" in room {self.id}")
        router = await self.router_for(p)
        server = self.webrtc_server
        if router is not self.router and self.manager is not None:
            server = self.manager.servers.get(router.worker.pid) if self.webrtc_server is not None else None
        if server is None and self.manager is not None:  # a UDP socket (fd) per transport
            self.manager.check_fds(router.worker)
        p.pending_transports += 1
        self._pending_transports += 1
        if self.manager is not None:
            self.manager.pending_transports += 1
        try:
            if server is not None:
                t = await router.create_webrtc_transport(
                    webrtc_server=server, app_data={"participantId": p.id, "direction": direction})
            else:
                t = await router.create_webrtc_transport(
                    listen_ip=self.listen_ip, announced_ip=self.announced_ip,
                    app_data={"participantId": p.id, "direction": direction})
        finally:
            p.pending_transports -= 1
            self._pending_transports -= 1
            if self.manager is not None:
                self.manager.pending_transports -= 1
        if p.id not in self.participants or self.router.closed or router.closed:
            t.close()  # the participant left (or the room closed) while the transport was made
            raise ApiError(409, f"participant {p.id} left room {self.id} while its transport was created")
        p.transports[t.id] = t
        t.observer.once("close", lambda: p.transports.pop(t.id, None))
        return t

    async def router_for(self, p: Participant) -> sfu.Router:
        """The router ``p``'s transports go to: the one it has; else the
        room's first router on a worker under the manager's consumer budget
        (``consumers_per_worker``; 0, the default: always the first router);
        else a new router of the room on the worker with the fewest consumers
        that has none of the room yet, to which every producer of the room
        is piped (or, when every worker has one, the room's router on the
        least-loaded worker)."""
        if p.router is not None and not p.router.closed:
            return p.router
        manager = self.manager
        budget = manager.consumers_per_worker if manager is not None else 0
        if manager is None or budget <= 0:
            p.router = self.router
            return self.router
        async with self._placement_lock:
            routers = [r for r in self.routers if not r.closed]
            chosen = next((r for r in routers if manager.worker_consumers(r.worker) < budget), None)
            if chosen is None:
                used = {r.worker.pid for r in routers}
                free = [w for w in manager.workers if not w.closed and w.pid not in used]
                if free:
                    worker = min(free, key=manager.worker_consumers)
                    chosen = await worker.create_router(manager.media_codecs)
                    self.routers.append(chosen)
                    chosen.observer.once("close", lambda r=chosen: self._extra_router_closed(r))
                    manager.rooms_spread += 1
                    logger.info("room %s: worker(s) %s at the budget of %d consumers; participants now also "
                                "go to router %s on worker %d", self.id, sorted(used), budget, chosen.id,
                                worker.pid)
                    for origin, producer in self._room_producers():
                        await self._pipe(origin, producer.id, chosen)
                else:
                    chosen = min(routers, key=lambda r: manager.worker_consumers(r.worker))
            p.router = chosen
            return chosen

    def _extra_router_closed(self, router: sfu.Router) -> None:
        """A router the room added on another worker is gone. When its
        worker died, its participants leave the room (``participant-left``;
        their WebSockets close, so their clients join again, on a router
        that runs); the room and its other participants go on."""
        if router in self.routers:
            self.routers.remove(router)
        if not router.worker.died or self.router.closed:
            return
        gone = [p for p in self.participants.values() if p.router is router]
        logger.warning("room %s: router %s on worker %d lost with its worker: %d participant(s) leave", self.id,
                       router.id, router.worker.pid, len(gone))
        for p in gone:
            p.router = None
            asyncio.ensure_future(self.leave(p))

    def _room_producers(self) -> list[tuple[sfu.Router, sfu.Producer]]:
        """The participants' own producers (not the piped copies), with their router."""
        return [(prod.transport.router, prod) for q in self.participants.values()
                for prod in q.producers.values() if not prod.closed]

    async def _pipe(self, origin: sfu.Router, producer_id: str, router: sfu.Router) -> None:
        """Pipes a producer of the room to another router of the room, once."""
        if router.closed or origin.closed or router is origin or router.get_producer(producer_id) is not None:
            return
        try:
            await origin.pipe_to_router(producer_id, router)
        except (sfu.InvalidStateError, sfu.ChannelError):
            if router.get_producer(producer_id) is None and origin.get_producer(producer_id) is not None:
                raise  # not a concurrent pipe of the same producer: a real failure

    def transport_count(self) -> int:
        """Open transports of the room's participants."""
        return sum(len(p.transports) for p in self.participants.values())

    def _watch_connect(self, p: Participant, t: sfu.WebRtcTransport) -> None:
        """Closes ``t`` unless its DTLS is connected within
        ``limits.connect_timeout_s`` of its first producer or consumer; a
        participant left with nothing (no transport, producer, consumer or
        WebSocket; not a call member's own) then leaves the room.

        The timer starts with the first media, not at creation: mediasoup-
        client connects a receiving transport only at its first consume(),
        which may come long after it joined (a proctor waiting for
        candidates). Idle transports are bounded by the transport limits."""
        timeout = self.limits.connect_timeout_s
        if not timeout or timeout <= 0 or t.id in self._connect_watched or t.dtls_state == "connected":
            return
        self._connect_watched.add(t.id)
        t.observer.once("close", lambda: self._connect_watched.discard(t.id))
        loop = asyncio.get_running_loop()

        def expire() -> None:
            t.off("dtlsstatechange", on_state)
            if t.closed or t.dtls_state == "connected":
                return
            logger.info("room %s: transport %s of participant %s not connected after %.0f s (ICE %s, DTLS %s): "
                        "closed", self.id, t.id, p.id, timeout, t.ice_state, t.dtls_state)
            if self.manager is not None:
                self.manager.transports_closed_unconnected += 1
            t.close()
            if (p.id in self.participants and (p.member is None or p.member != p.id) and not p.transports
                    and not p.producers and not p.consumers and not p.sockets):
                asyncio.ensure_future(self.leave(p))

        def on_state(state: str) -> None:
            if state == "connected":
                handle.cancel()
                t.off("dtlsstatechange", on_state)

        handle = loop.call_later(timeout, expire)
        t.on("dtlsstatechange", on_state)
        t.observer.once("close", handle.cancel)

    async def produce(self, p: Participant, transport_id: str, kind: str, rtp_parameters: Any) -> sfu.Producer:
        t = self.transport_of(p, transport_id)
        if self.guard is not None:
            self.guard.check_produce(self, p, kind)
        if not isinstance(rtp_parameters, dict):
            raise ApiError(400, "rtpParameters: required, an object")
        producer = await t.produce(kind, rtp_parameters, app_data={"participantId": p.id})
        p.producers[producer.id] = producer
        self._watch_connect(p, t)

        def closed() -> None:
            p.producers.pop(producer.id, None)
            if t.router.worker.died and t.router is self.router:  # the whole room goes: "room-closed" will name it
                self._lost_producers.append({"participantId": p.id, "producerId": producer.id, "kind": kind})
                return
            asyncio.ensure_future(self.broadcast("producer-closed", {"participantId": p.id,
                                                                      "producerId": producer.id}))

        producer.observer.once("close", closed)
        for router in list(self.routers):  # consumable on every router of the room
            if router is not t.router:
                try:
                    await self._pipe(t.router, producer.id, router)
                except sfu.SfuError as exc:  # that router's consumers pipe it on demand (consume)
                    logger.warning("room %s: producer %s not piped to router %s: %s", self.id, producer.id,
                                   router.id, exc)
        await self.broadcast("new-producer", {"participantId": p.id, "producerId": producer.id, "kind": kind},
                             exclude=p.id)
        for hook in list(self.producer_hooks):
            try:
                await hook(p, producer)
            except (ApiError, sfu.SfuError) as exc:  # it is still consumable here
                logger.warning("room %s: producer %s: %s", self.id, producer.id,
                               exc.message if isinstance(exc, ApiError) else exc)
        return producer

    async def consume(self, p: Participant, transport_id: str, producer_id: str, caps: Any,
                      mid: Optional[str] = None, paused: bool = True) -> sfu.Consumer:
        """A consumer of ``producer_id`` for ``p``, paused unless told (a
        mediasoup-client app resumes it once its side is ready); ``mid`` is the
        viewer's m-section for it when the viewer's SDP chose one (WHEP)."""
        t = self.transport_of(p, transport_id)
        if t.router.get_producer(producer_id) is None:
            origin = next((r for r, prod in self._room_producers() if prod.id == producer_id), None)
            if origin is None and self.missing_producer is not None and await self.missing_producer(producer_id):
                origin = next((r for r, prod in self._room_producers() if prod.id == producer_id), None)
            if origin is None:
                raise ApiError(404, f"producerId: producer {producer_id} not found in room {self.id}")
            await self._pipe(origin, producer_id, t.router)  # made while this router was being added
        if self.guard is not None:
            self.guard.check_consume(self, p, self.producer_owner(producer_id))
        if not isinstance(caps, dict):
            raise ApiError(400, "rtpCapabilities: required, an object")
        pending = self._pending_consumers.get(t.id, 0)
        self.limits.check_count("consumers_per_transport", sum(1 for c in t.consumers if not c.closed) + pending,
                                f" on transport {t.id}")
        self._pending_consumers[t.id] = pending + 1
        try:
            consumer = await t.consume(producer_id, caps, paused=paused, app_data={"participantId": p.id}, mid=mid)
        finally:
            left = self._pending_consumers.get(t.id, 1) - 1
            if left > 0:
                self._pending_consumers[t.id] = left
            else:
                self._pending_consumers.pop(t.id, None)
        self._watch_connect(p, t)
        p.consumers[consumer.id] = consumer
        consumer.observer.once("close", lambda: p.consumers.pop(consumer.id, None))
        return consumer

    async def leave(self, p: Participant) -> None:
        for t in list(p.transports.values()):
            t.close()
        self.participants.pop(p.id, None)
        if not self.participants:
            self.schedule_empty_close()
        for ws in list(p.sockets):
            await ws.close()
        await self.broadcast("participant-left", {"participantId": p.id})

    def close(self) -> None:
        """Closes the router (and with it every transport of the room)."""
        self._cancel_empty_close()
        for router in list(self.routers[1:]):
            if not router.closed:
                router.close()
        if not self.router.closed:
            self.router.close()

    async def lost(self, reason: str, detail: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """The room is gone with its router (its worker died): broadcasts
        ``room-closed`` naming what was lost (the guard hears it too), then
        removes every participant (WHIP/WHEP sessions included) and closes
        their WebSockets. Returns the event's data."""
        self.close()
        self.closed_reason = reason
        participants = list(self.participants.values())
        data: dict[str, Any] = {
            "roomId": self.id,
            "reason": reason,
            "routerId": self.router.id,
            **(detail or {}),
            "participants": [p.id for p in participants],
            "producers": list(self._lost_producers),
            "consumers": sum(len(p.consumers) for p in participants),
        }
        await self.broadcast("room-closed", data)
        self.participants.clear()
        for p in participants:
            for t in list(p.transports.values()):
                t.close()
            p.transports.clear()
            p.producers.clear()
            p.consumers.clear()
            for ws in list(p.sockets):
                try:
                    await ws.close(code=1011, message=reason.encode())
                except Exception as exc:  # already gone
                    logger.debug("websocket of %s: %s", p.id, exc)
            p.sockets.clear()
        return data


@dataclass
class WorkerSettings:
    """How the manager starts a worker (at start-up and to replace one that
    died): the :func:`sfu.create_worker` keywords and, with ``rtc_port``, a
    shared WebRTC port per worker slot (``rtc_port + slot``, announced as
    ``announced_rtc_port + slot`` when given)."""

    listen_ip: str = "127.0.0.1"
    announced_ip: Optional[str] = None
    rtc_port: int = 0
    announced_rtc_port: Optional[int] = None
    worker_options: dict[str, Any] = field(default_factory=dict)

    async def start(self, slot: int) -> tuple[sfu.Worker, Optional[sfu.WebRtcServer]]:
        """A worker for ``slot`` and its WebRTC server (None without
        ``rtc_port``). Nothing is left running when this raises."""
        worker = await sfu.create_worker(**self.worker_options)
        if not self.rtc_port:
            return worker, None
        try:
            server = await worker.create_webrtc_server(
                self.listen_ip, self.rtc_port + slot, self.announced_ip,
                self.announced_rtc_port + slot if self.announced_rtc_port else None)
        except BaseException:
            worker.close()
            raise
        return worker, server


@dataclass
class WorkerDeath:
    """One worker that died, and its replacement."""

    slot: int
    pid: int
    error: str
    at: float  # Unix time
    rooms: list[str]
    attempts: int = 0
    replaced_by: Optional[int] = None
    replaced_after_s: Optional[float] = None
    last_error: Optional[str] = None

    def view(self) -> dict[str, Any]:
        return {"slot": self.slot, "pid": self.pid, "error": self.error, "at": self.at, "rooms": list(self.rooms),
                "attempts": self.attempts, "replacedBy": self.replaced_by,
                "replacedAfterS": None if self.replaced_after_s is None else round(self.replaced_after_s, 3),
                "lastError": self.last_error}


class RoomManager:
    """Workers (one per core by default) and the rooms placed on them.

    With ``settings`` (how to start a worker), a worker that dies is replaced
    in its slot: at once, then, while starting fails (its WebRTC port still
    held, ...), again after ``retry_s`` doubling up to ``retry_max_s``. A
    slot whose worker dies again within ``crash_loop_s`` of being started
    waits before its next replacement too (a crash loop must not spin).
    ``on_worker_died``/``on_worker_replaced`` listeners are called with the
    :class:`WorkerDeath`."""

    def __init__(self, workers: list[sfu.Worker], servers: dict[int, sfu.WebRtcServer],
                 listen_ip: str, announced_ip: Optional[str],
                 media_codecs: Optional[list[dict[str, Any]]] = None, *,
                 settings: Optional[WorkerSettings] = None, retry_s: float = 0.1, retry_max_s: float = 2.0,
                 crash_loop_s: float = 10.0, limits: Optional[Limits] = None,
                 empty_room_grace_s: float = 30.0, consumers_per_worker: int = 0) -> None:
        if consumers_per_worker < 0:
            raise ValueError("consumers_per_worker: must be >= 0 (0: no budget)")
        if empty_room_grace_s < 0:
            raise ValueError("empty_room_grace_s: must be >= 0 (0 keeps empty rooms open)")
        self.workers = workers
        #: Seconds an empty room stays open before it is closed (0: forever).
        self.empty_room_grace_s = empty_room_grace_s
        #: Consumers a worker should carry: a room whose routers' workers are
        #: all at it places new participants on a router of the room on
        #: another worker, producers piped between them (0: no budget, a
        #: room stays on one worker).
        self.consumers_per_worker = consumers_per_worker
        #: Routers added to rooms on other workers (since start).
        self.rooms_spread = 0
        #: Rooms closed because they stayed empty (since start).
        self.rooms_closed_empty = 0
        #: Admission limits of every room (see :class:`Limits`).
        self.limits = limits if limits is not None else Limits()
        #: Transports being created right now (counted against the fd budget).
        self.pending_transports = 0
        #: Transports closed because ICE/DTLS did not complete in time (since start).
        self.transports_closed_unconnected = 0
        self.servers = servers
        self.listen_ip = listen_ip
        self.announced_ip = announced_ip
        self.media_codecs = media_codecs or DEFAULT_MEDIA_CODECS
        self.rooms: dict[str, Room] = {}
        self._lock = asyncio.Lock()
        self.settings = settings
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.crash_loop_s = crash_loop_s
        #: Totals since start (read by the metrics).
        self.worker_deaths = 0
        self.worker_replacements = 0
        self.worker_replacement_failures = 0
        self.rooms_lost = 0
        #: The last deaths, newest last (at most 20).
        self.deaths: list[WorkerDeath] = []
        self.on_worker_died: list[Callable[[WorkerDeath], Any]] = []
        #: called with (room, event, data) for every event a room broadcasts
        #: (new-producer, producer-closed, participant-left, room-closed, ...)
        self.on_room_event: list[Callable[["Room", str, dict[str, Any]], Any]] = []
        self.on_worker_replaced: list[Callable[[WorkerDeath], Any]] = []
        self._replacing: dict[int, tuple[WorkerDeath, asyncio.Task[None]]] = {}
        self._started_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}
        self._lost: dict[int, list[Room]] = {}  # worker pid -> its rooms, between router close and "died"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pool_changed = asyncio.Event()
        self._closing = False
        for slot, w in enumerate(workers):
            self._supervise(slot, w)

    # ------------------------------------------------------------ the pool

    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self.workers if not w.closed)

    def replacing(self) -> list[WorkerDeath]:
        """Deaths whose replacement is still starting."""
        return [death for death, _ in self._replacing.values()]

    def pool_state(self) -> dict[str, Any]:
        """The worker pool as /healthz reports it."""
        return {
            "configured": len(self.workers),
            "alive": self.workers_alive,
            "pids": [w.pid for w in self.workers if not w.closed],
            "replacing": [d.view() for d in self.replacing()],
            "deaths": self.worker_deaths,
            "replacements": self.worker_replacements,
            "replacementFailures": self.worker_replacement_failures,
            "roomsLost": self.rooms_lost,
            "lastDeath": self.deaths[-1].view() if self.deaths else None,
        }

    async def wait_for_worker(self, timeout: float) -> bool:
        """Waits until some worker runs (True), at most ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.workers_alive:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                return False
            self._pool_changed.clear()
            try:
                await asyncio.wait_for(self._pool_changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return True

    def _spawn_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _supervise(self, slot: int, worker: sfu.Worker) -> None:
        self._started_at[worker.pid] = time.monotonic()
        worker.on("died", lambda error: self._on_died(slot, worker, error))

    def _on_died(self, slot: int, worker: sfu.Worker, error: Exception) -> None:
        """``worker`` died: its routers are closed already (so its rooms are
        out of :attr:`rooms`); tell the rooms, start a replacement."""
        lost = self._lost.pop(worker.pid, [])
        self.servers.pop(worker.pid, None)
        self.worker_deaths += 1
        self.rooms_lost += len(lost)
        death = WorkerDeath(slot=slot, pid=worker.pid, error=str(error), at=time.time(), rooms=[r.id for r in lost])
        self.deaths.append(death)
        del self.deaths[:-20]
        lived = time.monotonic() - self._started_at.pop(worker.pid, 0.0)
        self._quick_deaths[slot] = self._quick_deaths.get(slot, 0) + 1 if lived < self.crash_loop_s else 0
        logger.error("media worker %d (slot %d) died: %s; %d room(s) lost%s%s", worker.pid, slot, error, len(lost),
                     f" ({', '.join(death.rooms)})" if lost else "",
                     "; starting a replacement" if self.settings is not None and not self._closing else "")
        detail = {"workerPid": worker.pid, "error": str(error)}
        for room in lost:
            self._spawn_task(self._tell_room(room, detail))
        for listener in list(self.on_worker_died):
            try:
                listener(death)
            except Exception:
                logger.exception("on_worker_died listener failed")
        if self.settings is not None and not self._closing and slot not in self._replacing:
            task = self._spawn_task(self._replace(slot, death))
            self._replacing[slot] = (death, task)

    async def _tell_room(self, room: Room, detail: dict[str, Any]) -> None:
        try:
            await room.lost("worker-died", detail)
        except Exception:
            logger.exception("room %s: telling its participants failed", room.id)

    async def _replace(self, slot: int, death: WorkerDeath) -> None:
        assert self.settings is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = self.retry_s
        quick = self._quick_deaths.get(slot, 0)
        try:
            if quick > 1:  # died again soon after its own replacement: a crash loop
                wait = min(self.retry_s * 2 ** (quick - 1), self.retry_max_s * 5)
                logger.warning("worker slot %d: %d quick deaths in a row, waiting %.1f s before restarting",
                               slot, quick, wait)
                await asyncio.sleep(wait)
            while not self._closing:
                death.attempts += 1
                try:
                    worker, server = await self.settings.start(slot)
                except Exception as exc:
                    self.worker_replacement_failures += 1
                    death.last_error = str(exc)
                    logger.warning("worker slot %d: replacement attempt %d failed: %s; retrying in %.1f s",
                                   slot, death.attempts, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                if self._closing:
                    worker.close()
                    return
                self.workers[slot] = worker
                if server is not None:
                    self.servers[worker.pid] = server
                self._supervise(slot, worker)
                self.worker_replacements += 1
                death.replaced_by = worker.pid
                death.replaced_after_s = loop.time() - started
                logger.warning("media worker %d replaces %d in slot %d after %.3f s (%d attempt(s))",
                               worker.pid, death.pid, slot, death.replaced_after_s, death.attempts)
                self._pool_changed.set()
                for listener in list(self.on_worker_replaced):
                    try:
                        listener(death)
                    except Exception:
                        logger.exception("on_worker_replaced listener failed")
                return
        finally:
            current = self._replacing.get(slot)
            if current is not None and current[0] is death:
                del self._replacing[slot]

    @staticmethod
    def worker_consumers(worker: sfu.Worker) -> int:
        """Consumers (pipe consumers included) on the routers of ``worker``."""
        return sum(len(t.consumers) for r in worker.routers for t in r.transports)

    def _least_loaded(self) -> sfu.Worker:
        alive = [w for w in self.workers if not w.closed]
        if not alive:
            starting = " (a replacement is starting)" if self._replacing else ""
            raise ApiError(503, f"no media worker is running{starting}")
        return min(alive, key=lambda w: sum(len(r.transports) for r in w.routers) + len(w.routers))

    # --------------------------------------------------- file descriptors

    def fds_per_transport(self, worker: sfu.Worker) -> int:
        """Descriptors a new WebRTC transport takes in ``worker``: its own
        UDP socket with a port per transport, none on a shared port."""
        return 0 if self.servers.get(worker.pid) is not None else 1

    def fd_state(self) -> list[dict[str, Any]]:
        """Open descriptors against RLIMIT_NOFILE of this process and of
        every running worker: ``{process, pid, open, limit, free,
        fdsPerTransport, transportsLeft, low}`` (``low``: less than
        ``limits.fd_low_fraction`` of the limit left)."""
        out = []
        procs: list[tuple[str, int, Optional[sfu.Worker]]] = [("server", os.getpid(), None)]
        procs += [("worker", w.pid, w) for w in self.workers if not w.closed]
        for name, pid, worker in procs:
            usage = fd_usage(pid)
            if usage is None:
                continue
            open_fds, limit = usage
            free = max(limit - open_fds, 0)
            per = self.fds_per_transport(worker) if worker is not None else 0
            out.append({"process": name, "pid": pid, "open": open_fds, "limit": limit, "free": free,
                        "fdsPerTransport": per,
                        "transportsLeft": max(free - self.limits.fd_reserve, 0) // per if per else None,
                        "low": free < self.limits.fd_low_fraction * limit})
        return out

    def fd_problems(self) -> list[str]:
        """What /readyz reports about descriptors (empty when enough are left)."""
        return [f"file descriptors low: {s['process']} {s['pid']} has {s['free']} of {s['limit']} left "
                f"(less than {self.limits.fd_low_fraction:.0%})" for s in self.fd_state() if s["low"]]

    def check_fds(self, worker: sfu.Worker) -> None:
        """503 (limit ``file_descriptors``) when one more transport would leave
        ``worker`` fewer than ``limits.fd_reserve`` free descriptors."""
        per = self.fds_per_transport(worker)
        if not per:
            return
        usage = fd_usage(worker.pid)
        if usage is None:
            return
        open_fds, limit = usage
        free = limit - open_fds - per * self.pending_transports
        if free - per < self.limits.fd_reserve:
            raise self.limits.refuse(
                "file_descriptors", 503,
                f"file descriptors: limit reached in media worker {worker.pid} ({max(free, 0)} of {limit} left, "
                f"{self.limits.fd_reserve} kept in reserve); no new transport until some close")

    # ---------------------------------------------------------------- rooms

    def rooms_created_by(self, user_id: str) -> list[Room]:
        """The open rooms ``user_id`` created, oldest first."""
        return [r for r in self.rooms.values() if r.created_by == user_id and not r.router.closed]

    def _admit_room_for(self, user_id: str) -> None:
        limit = self.limits.rooms_per_user
        if not limit:
            return
        mine = self.rooms_created_by(user_id)
        while len(mine) >= limit:
            idle = next((r for r in mine if not r.participants), None)
            if idle is None:
                shown = ", ".join(r.id for r in mine[:10])
                raise self.limits.refuse("rooms_per_user", 429, f"rooms per user: limit {limit} reached "
                                                                f"(rooms you created that are in use: {shown})")
            logger.info("user %s is at %d rooms: closing its room %s, which nobody is in", user_id, limit, idle.id)
            self.close_room(idle.id)
            mine.remove(idle)

    async def create_room(self, room_id: str, creator: Optional[str] = None) -> tuple[Room, bool]:
        """The room ``room_id``, created (True) unless it is open already.
        ``creator`` (by default :data:`ROOM_CREATOR`, the user the current
        request acts for): the user the new room counts against
        (``rooms_per_user``)."""
        creator = creator if creator is not None else ROOM_CREATOR.get()
        async with self._lock:
            room = self.rooms.get(room_id)
            if room is not None and not room.router.closed:
                return room, False
            if creator is not None:
                self._admit_room_for(creator)
            worker = self._least_loaded()
            router = await worker.create_router(self.media_codecs)
            room = Room(room_id, router, self.servers.get(worker.pid), self.listen_ip, self.announced_ip,
                        manager=self, created_by=creator)
            self.rooms[room_id] = room

            def router_closed() -> None:
                if self.rooms.get(room_id) is room:
                    self.rooms.pop(room_id, None)
                if worker.died:  # the "died" handler, right after this, tells the room
                    self._lost.setdefault(worker.pid, []).append(room)

            router.observer.once("close", router_closed)
            room.schedule_empty_close()  # nobody is in it yet
            return room, True

    def close_room(self, room_id: str) -> bool:
        """Closes a room's router; False when there was no such room."""
        room = self.rooms.pop(room_id, None)
        if room is None:
            return False
        room.close()
        return True

    def room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None or room.router.closed:
            raise ApiError(404, f"room {room_id} not found (create it with POST /api/rooms/{room_id}/create)")
        return room

    async def close(self) -> None:
        self._closing = True
        for room in list(self.rooms.values()):
            room._cancel_empty_close()
        pending = [task for _, task in self._replacing.values()]
        if pending:  # a replacement that is starting closes its worker itself when it sees _closing
            _, late = await asyncio.wait(pending, timeout=5)
            for task in late:
                task.cancel()
        for w in self.workers:
            w.close()
        for w in self.workers:
            try:
                await asyncio.wait_for(w.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
