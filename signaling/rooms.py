"""Rooms, participants and the worker pool behind the REST API.

A room is one router on the least-loaded worker. Every transport, producer
and consumer created through the API belongs to the participant that asked
for it, and a participant can only act on its own objects (acting on another
participant's transport or consumer is a 403).

A room may carry a :class:`RoomGuard` (the call service sets one on a call's
room): it decides who may produce and who may consume whose producers, and
hears the room's events.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
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


class RoomManager:
    """Workers (one per core by default) and the rooms placed on them."""

    def __init__(self, workers: list[sfu.Worker], servers: dict[int, sfu.WebRtcServer],
                 listen_ip: str, announced_ip: Optional[str],
                 media_codecs: Optional[list[dict[str, Any]]] = None) -> None:
        self.workers = workers
        self.servers = servers
        self.listen_ip = listen_ip
        self.announced_ip = announced_ip
        self.media_codecs = media_codecs or DEFAULT_MEDIA_CODECS
        self.rooms: dict[str, Room] = {}
        self._lock = asyncio.Lock()

    def _least_loaded(self) -> sfu.Worker:
        alive = [w for w in self.workers if not w.closed]
        if not alive:
            raise ApiError(503, "no media worker is running")
        return min(alive, key=lambda w: sum(len(r.transports) for r in w.routers) + len(w.routers))

    async def create_room(self, room_id: str) -> tuple[Room, bool]:
        async with self._lock:
            room = self.rooms.get(room_id)
            if room is not None and not room.router.closed:
                return room, False
            worker = self._least_loaded()
            router = await worker.create_router(self.media_codecs)
            room = Room(room_id, router, self.servers.get(worker.pid), self.listen_ip, self.announced_ip)
            self.rooms[room_id] = room
            router.observer.once("close", lambda: self.rooms.pop(room_id, None) if self.rooms.get(room_id) is room else None)
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
        for w in self.workers:
            w.close()
        for w in self.workers:
            try:
                await asyncio.wait_for(w.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
