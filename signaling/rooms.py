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
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
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
                 listen_ip: str, announced_ip: Optional[str]) -> None:
        self.id = room_id
        self.router = router
        self.webrtc_server = webrtc_server
        self.listen_ip = listen_ip
        self.announced_ip = announced_ip
        self.participants: dict[str, Participant] = {}
        self.guard: Optional[RoomGuard] = None
        #: Set when the room was closed because its worker died (see :meth:`lost`).
        self.closed_reason: Optional[str] = None
        self._lost_producers: list[dict[str, Any]] = []

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
        p = Participant(id=pid, token=secrets.token_urlsafe(24), owner=owner, member=member)
        self.participants[p.id] = p
        return p

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
        if self.webrtc_server is not None:
            t = await self.router.create_webrtc_transport(webrtc_server=self.webrtc_server,
                                                          app_data={"participantId": p.id, "direction": direction})
        else:
            t = await self.router.create_webrtc_transport(listen_ip=self.listen_ip, announced_ip=self.announced_ip,
                                                          app_data={"participantId": p.id, "direction": direction})
        p.transports[t.id] = t
        t.observer.once("close", lambda: p.transports.pop(t.id, None))
        return t

    async def produce(self, p: Participant, transport_id: str, kind: str, rtp_parameters: Any) -> sfu.Producer:
        t = self.transport_of(p, transport_id)
        if self.guard is not None:
            self.guard.check_produce(self, p, kind)
        if not isinstance(rtp_parameters, dict):
            raise ApiError(400, "rtpParameters: required, an object")
        producer = await t.produce(kind, rtp_parameters, app_data={"participantId": p.id})
        p.producers[producer.id] = producer

        def closed() -> None:
            p.producers.pop(producer.id, None)
            if self.router.worker.died:  # the whole room goes: "room-closed" will name it
                self._lost_producers.append({"participantId": p.id, "producerId": producer.id, "kind": kind})
                return
            asyncio.ensure_future(self.broadcast("producer-closed", {"participantId": p.id,
                                                                      "producerId": producer.id}))

        producer.observer.once("close", closed)
        await self.broadcast("new-producer", {"participantId": p.id, "producerId": producer.id, "kind": kind},
                             exclude=p.id)
        return producer

    async def consume(self, p: Participant, transport_id: str, producer_id: str, caps: Any,
                      mid: Optional[str] = None) -> sfu.Consumer:
        """A paused consumer of ``producer_id`` for ``p``; ``mid`` is the
        viewer's m-section for it when the viewer's SDP chose one (WHEP)."""
        t = self.transport_of(p, transport_id)
        if self.router.get_producer(producer_id) is None:
            raise ApiError(404, f"producerId: producer {producer_id} not found in room {self.id}")
        if self.guard is not None:
            self.guard.check_consume(self, p, self.producer_owner(producer_id))
        if not isinstance(caps, dict):
            raise ApiError(400, "rtpCapabilities: required, an object")
        consumer = await t.consume(producer_id, caps, paused=True, app_data={"participantId": p.id}, mid=mid)
        p.consumers[consumer.id] = consumer
        consumer.observer.once("close", lambda: p.consumers.pop(consumer.id, None))
        return consumer

    async def leave(self, p: Participant) -> None:
        for t in list(p.transports.values()):
            t.close()
        self.participants.pop(p.id, None)
        for ws in list(p.sockets):
            await ws.close()
        await self.broadcast("participant-left", {"participantId": p.id})

    def close(self) -> None:
        """Closes the router (and with it every transport of the room)."""
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
                 crash_loop_s: float = 10.0) -> None:
        self.workers = workers
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

    def _least_loaded(self) -> sfu.Worker:
        alive = [w for w in self.workers if not w.closed]
        if not alive:
            starting = " (a replacement is starting)" if self._replacing else ""
            raise ApiError(503, f"no media worker is running{starting}")
        return min(alive, key=lambda w: sum(len(r.transports) for r in w.routers) + len(w.routers))

    # ---------------------------------------------------------------- rooms

    async def create_room(self, room_id: str) -> tuple[Room, bool]:
        async with self._lock:
            room = self.rooms.get(room_id)
            if room is not None and not room.router.closed:
                return room, False
            worker = self._least_loaded()
            router = await worker.create_router(self.media_codecs)
            room = Room(room_id, router, self.servers.get(worker.pid), self.listen_ip, self.announced_ip)
            self.rooms[room_id] = room

            def router_closed() -> None:
                if self.rooms.get(room_id) is room:
                    self.rooms.pop(room_id, None)
                if worker.died:  # the "died" handler, right after this, tells the room
                    self._lost.setdefault(worker.pid, []).append(room)

            router.observer.once("close", router_closed)
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
