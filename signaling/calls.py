"""The call service: calls that run peer-to-peer with two participants and
move to the SFU when a third joins (and back), plus one-to-many calls with
roles (proctoring).

REST (JSON; every call needs ``Authorization: Bearer <JWT>``; the user is the
token's ``sub``)::

    POST /api/calls                      {roles?, candidatesSeeEachOther?}  -> 201 {callId, ...}
    GET  /api/calls/{callId}                                                -> the call as the caller sees it
    POST /api/calls/{callId}/participants {role?, socketId?}                -> 201 join: {participantId, mode, peers, ...}
    POST /api/calls/{callId}/leave       {participantId?}                   -> {left: true}
    POST /api/calls/{callId}/end                                            -> {ended: true} (the creator only)

Socket.IO (default namespace; token in the ``auth`` payload ``{token}``, the
``token`` query parameter or an ``Authorization`` header). Server to client:
``call:joined``, ``call:participant-joined``, ``call:participant-left``,
``call:mode-switch``, ``call:mode-switched``, ``call:ended``,
``call:media-lost`` and ``call:room-replaced`` (the SFU room's worker died),
``call:sfu-standby`` (a P2P call of two has its SFU room ready),
``webrtc:offer``/``webrtc:answer``/``webrtc:ice-candidate`` (relayed, with
``from``), ``new-producer``, ``producer-closed``. Client to server:
``call:attach {callId, participantId}`` (or ``socketId`` in the join body),
``webrtc:*`` ``{to?, ...}`` (relayed to the other participant of the call),
``call:media-ready {mode}`` (my media flows on the new path),
``pause-consumer`` / ``resume-consumer`` ``{consumerId}`` or
``{participantId}`` (everything I receive from that participant).
Every client event is acknowledged with ``{ok: true, ...}`` or
``{error, status}``. See docs/calls.md for the whole flow.

Every client event is checked before its handler runs (:class:`SocketLimits`):
the connection's rate limit (a token bucket, 20 events/s with a burst of 40
by default), the payload's size, type and required fields, and whether the
event exists. A refused event is acknowledged with ``{error, status, reason,
event}`` (400 ``invalid-payload``, 413 ``too-large``, 404 ``unknown-event``,
429 ``rate-limit`` with ``limit`` and ``retryAfterMs``) and also answered
with a ``call:error`` event of the same shape (for the rate limit, at most
one a second); a connection that keeps over the rate limit is disconnected
(``call:error`` with ``disconnect: true`` first). Refusals are counted in
``sfu_socketio_events_rejected_total{reason}`` and never log a traceback.

At a graceful shutdown (:meth:`CallService.end_all`, from
:func:`signaling.server.drain`) every call ends with reason
``server-shutdown``: ``call:ended`` to its participants, ended in the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import parse_qs

import socketio

from .auth import Authenticator, AuthError, Identity
from .metrics import SOCKETIO_REJECT_REASONS, Metrics
from .rooms import ApiError, Participant, Room, RoomGuard, RoomManager
from .store import CallSession, CallStore

logger = logging.getLogger("sfu.signaling.calls")

P2P, SFU = "p2p", "sfu"
BOTH, PUBLISHER, SUBSCRIBER = "both", "publisher", "subscriber"
ROLES = (BOTH, PUBLISHER, SUBSCRIBER)

#: The identity of every caller when the app runs without an authenticator
#: (an embedding application that authenticates by other means).
ANONYMOUS = Identity(user_id="anonymous", name=None, claims={})

CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class Member:
    """An active participant of a call, in memory."""

    id: str
    user_id: str
    name: Optional[str]
    role: str
    order: int
    sids: set[str] = field(default_factory=set)
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)  # room participants acting for it (WHEP sessions)
    media_mode: Optional[str] = None
    disconnect_timer: Optional[asyncio.TimerHandle] = None

    @property
    def publishes(self) -> bool:
        return self.role in (BOTH, PUBLISHER)

    def view(self) -> dict[str, Any]:
        return {"participantId": self.id, "userId": self.user_id, "name": self.name, "role": self.role}


@dataclass
class Switch:
    """A mode switch in progress: who has not yet reported media on the new path."""

    id: str
    mode: str
    started: float
    waiting: set[str]
    timer: Optional[asyncio.TimerHandle] = None


@dataclass
class Call:
    """A call in progress (in memory; the store keeps the durable record)."""

    id: str
    created_by: str
    roles: bool
    candidates_see_each_other: bool
    mode: str = P2P
    members: dict[str, Member] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    switch: Optional[Switch] = None
    room: Optional[Room] = None
    joins: int = 0
    ended: bool = False
    stored_mode: tuple[str, Optional[str]] = (P2P, None)

    def can_view(self, viewer: Member, target: Member) -> bool:
        """May ``viewer`` receive ``target``'s media? (The role policy.)"""
        if viewer.id == target.id or not target.publishes:
            return False
        if viewer.role in (BOTH, SUBSCRIBER):
            return True
        # a publisher-only participant (candidate) sees other candidates only when the call allows it
        return self.roles and self.candidates_see_each_other and target.role == PUBLISHER


class CallRoomGuard(RoomGuard):
    """Enforces a call's roles in its SFU room and forwards the room's
    producer events to the call's sockets."""

    def __init__(self, service: "CallService", call: Call) -> None:
        self.service = service
        self.call = call

    def _member(self, p: Participant) -> Member:
        m = self.call.members.get(p.member or "")
        if m is None:
            raise ApiError(403, f"not an active participant of call {self.call.id}")
        return m

    def check_produce(self, room: Room, p: Participant, kind: str) -> None:
        m = self._member(p)
        if not m.publishes:
            raise ApiError(403, f"role {m.role!r} cannot publish in call {self.call.id}")

    def check_consume(self, room: Room, p: Participant, producer_owner: Optional[Participant]) -> None:
        viewer = self._member(p)
        target = self.call.members.get(producer_owner.member or "") if producer_owner else None
        if target is None:
            raise ApiError(403, "that producer does not belong to a participant of this call")
        if not self.call.can_view(viewer, target):
            raise ApiError(403, f"role {viewer.role!r} may not receive participant {target.id} "
                                f"(role {target.role!r}) in call {self.call.id}")

    def on_event(self, room: Room, event: str, data: dict[str, Any]) -> None:
        if event in ("new-producer", "producer-closed"):
            asyncio.ensure_future(self.service._forward_producer_event(self.call, room, event, data))
        elif event == "room-closed":
            asyncio.ensure_future(self.service._room_lost(self.call, room, data))


@dataclass
class SocketLimits:
    """Limits on the events of one Socket.IO connection.

    ``rate_per_s`` / ``burst``: a token bucket per connection (None: no rate
    limit); an event over it is refused (``rate-limit``, status 429).
    ``disconnect_after``: refusals for the rate limit a connection may
    accumulate (they drain at ``rate_per_s``) before it is disconnected
    (0: never). ``max_event_bytes``: the largest event payload (its strings
    and numbers counted roughly as JSON would; ``too-large``, 413).
    ``notice_interval_s``: at most one ``call:error`` for the rate limit per
    interval and connection (the acknowledgements still answer each event)."""

    rate_per_s: Optional[float] = 20.0
    burst: int = 40
    disconnect_after: int = 200
    max_event_bytes: int = 128 * 1024
    notice_interval_s: float = 1.0

    def describe(self) -> str:
        if self.rate_per_s is None:
            return "no rate limit"
        return f"{self.rate_per_s:g} events/s with a burst of {self.burst} per connection"


#: Why a Socket.IO event was refused before its handler ran (the ``reason``
#: of the error and the label of ``sfu_socketio_events_rejected_total``).
REJECT_REASONS = SOCKETIO_REJECT_REASONS


@dataclass
class SocketInfo:
    identity: Identity
    attached: set[tuple[str, str]] = field(default_factory=set)  # (callId, participantId)
    tokens: float = 0.0
    tokens_at: float = 0.0
    strikes: float = 0.0
    strikes_at: float = 0.0
    last_notice: float = float("-inf")
    kicked: bool = False


class EventRefused(Exception):
    """A Socket.IO event refused before its handler ran."""

    def __init__(self, reason: str, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message
        self.extra = extra


def payload_size(value: Any, budget: int) -> int:
    """Roughly the JSON size of ``value`` in bytes, counted without
    serialising it and without recursion; stops counting once over
    ``budget`` (so a huge payload costs no more than ``budget`` to measure)."""
    size = 0
    stack = [value]
    while stack and size <= budget:
        v = stack.pop()
        if isinstance(v, str):
            size += len(v) + 3
        elif isinstance(v, dict):
            size += 2 + len(v)
            for k, x in v.items():
                size += len(k) + 3 if isinstance(k, str) else 8
                stack.append(x)
        elif isinstance(v, (list, tuple)):
            size += 2 + len(v)
            stack.extend(v)
        elif isinstance(v, (bytes, bytearray)):
            size += len(v)
        else:
            size += 8
    return size


def _optional_str(data: dict[str, Any], key: str, max_len: int = 128) -> None:
    value = data.get(key)
    if value is not None and not (isinstance(value, str) and 0 < len(value) <= max_len):
        raise EventRefused("invalid-payload", 400, f"{key}: must be a string of 1 to {max_len} characters")


def _check_common(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise EventRefused("invalid-payload", 400, f"event data: must be an object, got {_json_type(data)}")
    call_id = data.get("callId")
    if call_id is not None and not (isinstance(call_id, str) and CALL_ID.fullmatch(call_id)):
        raise EventRefused("invalid-payload", 400, "callId: 1 to 64 letters, digits, '-' or '_'")
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    return type(value).__name__


def _check_attach(data: Any) -> None:
    data = _check_common(data)
    if not isinstance(data.get("callId"), str):
        raise EventRefused("invalid-payload", 400, "callId: required")
    _optional_str(data, "participantId")


def _check_relay(field_name: str, nullable: bool = False) -> Any:
    def check(data: Any) -> None:
        data = _check_common(data)
        _optional_str(data, "to")
        if field_name not in data:
            raise EventRefused("invalid-payload", 400, f"{field_name}: required")
        value = data[field_name]
        if not (isinstance(value, dict) or nullable and value is None):
            raise EventRefused("invalid-payload", 400, f"{field_name}: must be an object"
                               + (" or null" if nullable else "") + f", got {_json_type(value)}")
        sdp = value.get("sdp") if isinstance(value, dict) else None
        if sdp is not None and not isinstance(sdp, str):
            raise EventRefused("invalid-payload", 400, f"{field_name}.sdp: must be a string")

    return check


def _check_media_ready(data: Any) -> None:
    data = _check_common(data)
    if data.get("mode") not in (P2P, SFU):
        raise EventRefused("invalid-payload", 400, "mode: must be 'p2p' or 'sfu'")
    _optional_str(data, "switchId")


def _check_consumer_action(data: Any) -> None:
    data = _check_common(data)
    _optional_str(data, "consumerId")
    _optional_str(data, "participantId")
    if data.get("consumerId") is None and data.get("participantId") is None:
        raise EventRefused("invalid-payload", 400, "consumerId or participantId: required")


def _now() -> float:
    return time.time()


class CallService:
    """Calls, their participants and mode switches, over a :class:`RoomManager`.

    ``store`` is a :class:`~signaling.store.CallStore` (durable record);
    ``sio`` the Socket.IO server the events go through; ``metrics`` an
    optional :class:`~signaling.metrics.Metrics`."""

    def __init__(self, rooms: RoomManager, store: CallStore, sio: socketio.AsyncServer, *,
                 auth: Optional[Authenticator] = None, metrics: Optional[Metrics] = None,
                 disconnect_grace_s: float = 5.0, switch_timeout_s: float = 15.0,
                 max_participants: int = 50, sfu_standby: bool = True) -> None:
        self.rooms = rooms
        self.store = store
        self.sio = sio
        self.auth = auth
        self.metrics = metrics
        self.disconnect_grace_s = disconnect_grace_s
        self.switch_timeout_s = switch_timeout_s
        self.max_participants = max_participants
        #: a P2P call of two keeps its SFU room ready (see :meth:`_standby`)
        self.sfu_standby = sfu_standby
        self.calls: dict[str, Call] = {}
        self.sockets: dict[str, SocketInfo] = {}
        self._create_lock = asyncio.Lock()
        self._closing = False
        self._draining = False
        #: Limits on each connection's events (replace or change before clients connect).
        self.socket_limits = SocketLimits()
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        for event, handler, check in (
            ("call:attach", self._on_attach, _check_attach),
            ("webrtc:offer", self._relay("webrtc:offer"), _check_relay("offer")),
            ("webrtc:answer", self._relay("webrtc:answer"), _check_relay("answer")),
            ("webrtc:ice-candidate", self._relay("webrtc:ice-candidate"), _check_relay("candidate", nullable=True)),
            ("call:media-ready", self._on_media_ready, _check_media_ready),
            ("pause-consumer", self._consumer_action("pause"), _check_consumer_action),
            ("resume-consumer", self._consumer_action("resume"), _check_consumer_action),
        ):
            sio.on(event, self._guarded(event, handler, check))
        sio.on("*", self._on_unknown_event)
        self._check_packets(sio)

    # ----------------------------------------------------------- lifecycle

    def recover(self) -> list[str]:
        """Ends the calls a previous run left in progress (reason
        ``server-restart``): their media sessions died with that process.
        Returns their ids."""
        ended = self.store.recover_after_restart(_now())
        if ended:
            logger.warning("recovered after restart: %d call(s) in progress were ended (server-restart)",
                           len(ended))
        else:
            logger.info("store: no call was in progress at the last shutdown")
        return ended

    async def close(self) -> None:
        """Disconnects the sockets, cancels timers and releases the SFU rooms
        of calls in progress (they stay in progress in the store: the next
        start ends them with reason ``server-restart``)."""
        self._closing = True
        for sid in list(self.sockets):
            try:
                await self.sio.disconnect(sid)
            except Exception as exc:  # already gone
                logger.debug("socket %s: %s", sid, exc)
        for call in list(self.calls.values()):
            for m in call.members.values():
                if m.disconnect_timer:
                    m.disconnect_timer.cancel()
            if call.switch and call.switch.timer:
                call.switch.timer.cancel()
            self._release_room(call)

    async def end_all(self, reason: str = "server-shutdown", lock_timeout_s: float = 5.0) -> list[str]:
        """Graceful shutdown: refuses new Socket.IO connections from now on and
        ends every call in progress with ``reason`` (its participants get
        ``call:ended {callId, reason}``, the store records the end, the SFU
        rooms are released). Returns the ids of the calls ended. A call
        whose lock is held longer than ``lock_timeout_s`` is ended anyway."""
        self._draining = True
        ended = []
        for call in list(self.calls.values()):
            locked = False
            try:
                await asyncio.wait_for(call.lock.acquire(), lock_timeout_s)
                locked = True
            except asyncio.TimeoutError:
                logger.warning("call %s: busy for %.0f s, ended without its lock", call.id, lock_timeout_s)
            try:
                if not call.ended:
                    await self._end(call, reason)
                    ended.append(call.id)
            except Exception:  # one call's failure must not keep the others in progress
                logger.exception("call %s: could not be ended (%s)", call.id, reason)
            finally:
                if locked:
                    call.lock.release()
        self._update_gauges()
        if ended:
            logger.info("%s: ended %d call(s): %s", reason, len(ended), ", ".join(ended))
        return ended

    async def disconnect_all(self, timeout_s: float = 5.0) -> None:
        """Disconnects every Socket.IO connection, after what was sent to it
        (``call:ended``) has gone out, waiting at most ``timeout_s``."""
        sids = list(self.sockets)
        if not sids:
            return

        async def one(sid: str) -> None:
            try:
                await self.sio.disconnect(sid)
            except Exception as exc:  # already gone
                logger.debug("socket %s: %s", sid, exc)

        tasks = [asyncio.ensure_future(one(sid)) for sid in sids]
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            logger.warning("%d Socket.IO connection(s) did not close within %.0f s", len(late), timeout_s)

    def owns_room(self, room_id: str) -> bool:
        """True when ``room_id`` is the SFU room of a call (its id is the call id)."""
        return room_id in self.calls

    # ------------------------------------------------------------- helpers

    def _store_mode(self, call: Call, mode: str, router_id: Optional[str]) -> None:
        """Records the mode and router of the call (once per change)."""
        if call.stored_mode != (mode, router_id):
            self.store.set_mode(call.id, mode, router_id=router_id)
            call.stored_mode = (mode, router_id)

    def _update_gauges(self) -> None:
        if self.metrics is None:
            return
        self.metrics.calls_active.set(len(self.calls))
        self.metrics.participants_active.set(sum(len(c.members) for c in self.calls.values()))

    def _call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is not None:
            return call
        stored = self.store.get_call(call_id)
        if stored is None:
            raise ApiError(404, f"call {call_id} not found")
        raise ApiError(409, f"call {call_id} has ended ({stored.end_reason}); create it again to restart it")

    def _own_member(self, call: Call, identity: Identity, participant_id: Optional[str]) -> Member:
        if participant_id:
            m = call.members.get(participant_id)
            if m is None:
                raise ApiError(404, f"participant {participant_id} is not active in call {call.id}")
            if m.user_id != identity.user_id:
                raise AuthError(403, f"participant {participant_id} belongs to another user")
            return m
        mine = [m for m in call.members.values() if m.user_id == identity.user_id]
        if not mine:
            raise AuthError(403, f"you are not a participant of call {call.id}")
        if len(mine) > 1:
            raise ApiError(400, "participantId: required, you have several participants in this call")
        return mine[0]

    def _sfu_info(self, call: Call, m: Optional[Member]) -> dict[str, Any]:
        if call.room is None:
            return {}
        room = call.room
        info: dict[str, Any] = {
            "roomId": room.id,
            "routerId": room.router.id,
            "rtpCapabilities": room.router.rtp_capabilities,
            "routerRtpCapabilities": room.router.rtp_capabilities,
            "producers": self._visible_producers(call, m) if m else [],
        }
        if m is not None:
            info["whip"] = f"/whip/{room.id}?as={m.id}"
            info["whep"] = f"/whep/{room.id}?as={m.id}&participant="
            info["api"] = f"/api/rooms/{room.id}"
        return info

    def _visible_producers(self, call: Call, viewer: Member) -> list[dict[str, Any]]:
        out = []
        if call.room is None:
            return out
        for p in call.room.participants.values():
            target = call.members.get(p.member or "")
            if target is None or not call.can_view(viewer, target):
                continue
            for prod in p.producers.values():
                if not prod.closed:
                    out.append({"participantId": target.id, "producerId": prod.id, "kind": prod.kind})
        return out

    def state(self, call: Call, m: Optional[Member]) -> dict[str, Any]:
        """The call as participant ``m`` sees it."""
        out: dict[str, Any] = {
            "callId": call.id,
            "mode": call.mode,
            "roles": call.roles,
            "candidatesSeeEachOther": call.candidates_see_each_other,
            "participants": [x.view() for x in sorted(call.members.values(), key=lambda x: x.order)],
            "switch": ({"switchId": call.switch.id, "mode": call.switch.mode} if call.switch else None),
        }
        if m is not None:
            out["participantId"] = m.id
            out["role"] = m.role
            out["peers"] = [x.view() for x in sorted(call.members.values(), key=lambda x: x.order) if x.id != m.id]
        if call.mode == SFU:
            out.update(self._sfu_info(call, m))
        elif call.room is not None and m is not None:
            out["standby"] = self._sfu_info(call, m)
        return out

    async def _send(self, m: Member, event: str, data: dict[str, Any]) -> None:
        """To every socket of ``m``, or queued until one attaches."""
        if not m.sids:
            m.pending.append((event, data))
            del m.pending[:-200]
            return
        for sid in list(m.sids):
            await self.sio.emit(event, data, to=sid)

    async def _send_all(self, call: Call, event: str, data: dict[str, Any], exclude: Optional[str] = None) -> None:
        for m in list(call.members.values()):
            if m.id != exclude:
                await self._send(m, event, data)

    # ------------------------------------------------------ the SFU room

    async def _ensure_room(self, call: Call) -> Room:
        if call.room is not None and not call.room.router.closed:
            return call.room
        room, _ = await self.rooms.create_room(call.id)
        room.guard = CallRoomGuard(self, call)
        call.room = room
        logger.info("call %s: SFU room on router %s", call.id, room.router.id)
        return room

    def _ensure_room_participant(self, call: Call, m: Member) -> Participant:
        assert call.room is not None
        p = call.room.participants.get(m.id)
        if p is None:
            p = call.room.join(participant_id=m.id, owner=m.user_id, member=m.id)
        return p

    async def _standby(self, call: Call, members: list[Member]) -> None:
        """A P2P call of two keeps its SFU room ready: both members get its
        details (``call:sfu-standby``, shaped like the SFU part of
        ``call:joined``; the joiner finds them under ``standby`` in its
        ``call:joined``) and may publish and view through it while P2P
        carries their media, with their senders inactive. A third participant
        then finds the path up: the switch only turns the senders on."""
        for m in members:
            self._ensure_room_participant(call, m)
            data = {"callId": call.id}
            data.update(self._sfu_info(call, m))
            await self._send(m, "call:sfu-standby", data)

    def _release_room(self, call: Call) -> None:
        if call.room is not None:
            logger.info("call %s: SFU room released (router %s)", call.id, call.room.router.id)
            if self.rooms.rooms.get(call.room.id) is call.room:
                self.rooms.close_room(call.room.id)
            else:
                call.room.close()
            call.room = None
            for m in call.members.values():
                m.sessions.clear()

    def _record_media(self, call: Call, m: Member) -> None:
        """Stores the member's current SFU transport and producer ids."""
        room = call.room
        mine = [room.participants[p] for p in (m.id, *m.sessions) if room and p in room.participants]
        self.store.update_participant(
            m.id, transport_ids=[t for p in mine for t in p.transports],
            producer_ids=[x for p in mine for x, prod in p.producers.items() if not prod.closed])

    async def _close_member_media(self, call: Call, m: Member) -> None:
        room = call.room
        if room is None:
            return
        for pid in [m.id, *m.sessions]:
            p = room.participants.get(pid)
            if p is not None:
                await room.leave(p)
        m.sessions.clear()

    async def _forward_producer_event(self, call: Call, room: Room, event: str, data: dict[str, Any]) -> None:
        if self._closing:  # producers closed by the shutdown: nobody to tell, the store is closed
            return
        owner = room.participants.get(data.get("participantId", ""))
        member_id = owner.member if owner is not None else None
        if member_id is None:  # producer-closed after the owner left: find it by id
            member_id = data.get("participantId")
        target = call.members.get(member_id or "")
        payload = {"callId": call.id, "participantId": member_id, "producerId": data.get("producerId"),
                   "kind": data.get("kind")}
        if target is not None:
            self._record_media(call, target)
        for m in list(call.members.values()):
            if m.id == member_id:
                continue
            if event == "new-producer" and (target is None or not call.can_view(m, target)):
                continue
            await self._send(m, event, payload)

    async def _room_lost(self, call: Call, room: Room, data: dict[str, Any]) -> None:
        """The call's SFU room closed under it (its media worker died): every
        member is told at once with ``call:media-lost`` {callId, reason,
        roomId, routerId, workerPid, lostProducers, mode}. A call still in SFU
        mode then gets a new room as soon as a worker runs, announced with
        ``call:room-replaced`` (the SFU details, as in ``call:joined``): the
        members publish and view again through the same WHIP/WHEP URLs.
        Getting media back is up to the clients."""
        async with call.lock:
            if call.ended or call.room is None:  # ended, or released meanwhile (back to P2P)
                return
            if call.room is room:
                call.room = None
            # else a join made a new room meanwhile: the media was lost all the same
            for m in call.members.values():
                m.sessions = {pid for pid in m.sessions if call.room is not None and pid in call.room.participants}
                self._record_media(call, m)
            lost = [{"participantId": x.get("participantId"), "producerId": x.get("producerId"),
                     "kind": x.get("kind")} for x in data.get("producers", [])]
            payload = {"callId": call.id, "reason": data.get("reason", "worker-died"), "roomId": room.id,
                       "routerId": room.router.id, "workerPid": data.get("workerPid"), "lostProducers": lost,
                       "mode": call.mode}
            logger.warning("call %s: SFU room lost (%s, worker %s); %d producer(s) gone", call.id,
                           payload["reason"], payload["workerPid"], len(lost))
            await self._send_all(call, "call:media-lost", payload)
            standby = self.sfu_standby and call.mode == P2P and len(call.members) == 2 and not call.roles
            if call.mode != SFU and not standby:
                return
        if not await self.rooms.wait_for_worker(max(self.switch_timeout_s, 30.0)):
            logger.error("call %s: no media worker came back; the call has no SFU room until one does", call.id)
            return
        async with call.lock:
            if call.ended or self._closing:
                return
            if call.mode == P2P:
                if self.sfu_standby and len(call.members) == 2 and not call.roles:
                    try:
                        await self._ensure_room(call)
                        await self._standby(call, list(call.members.values()))
                    except Exception as exc:
                        logger.warning("call %s: no new standby SFU room: %s", call.id, exc)
                return
            try:
                new_room = await self._ensure_room(call)  # the one a join made meanwhile, if any
            except Exception as exc:  # ApiError 503, or the new worker died too
                logger.error("call %s: no new SFU room: %s", call.id, exc)
                return
            for m in call.members.values():
                self._ensure_room_participant(call, m)
            self._store_mode(call, SFU, new_room.router.id)
            for m in list(call.members.values()):
                info = {"callId": call.id, "reason": payload["reason"], "mode": call.mode}
                info.update(self._sfu_info(call, m))
                await self._send(m, "call:room-replaced", info)

    # ---------------------------------------------------------- REST side

    async def create_call(self, identity: Identity, body: dict[str, Any]) -> dict[str, Any]:
        """A new call, in P2P mode (or SFU at the first join when it has roles)."""
        roles = body.get("roles", False)
        see = body.get("candidatesSeeEachOther", False)
        wanted = body.get("callId")
        if not isinstance(roles, bool):
            raise ApiError(400, "roles: must be true or false")
        if not isinstance(see, bool):
            raise ApiError(400, "candidatesSeeEachOther: must be true or false")
        if wanted is not None and not (isinstance(wanted, str) and CALL_ID.fullmatch(wanted)):
            raise ApiError(400, "callId: 1 to 64 letters, digits, '-' or '_'")
        async with self._create_lock:
            if wanted is not None:
                if wanted in self.calls:
                    raise ApiError(409, f"call {wanted} is already in progress")
                if wanted in self.rooms.rooms:
                    raise ApiError(409, f"callId: {wanted} is the id of an SFU room in use")
                call_id = wanted
            else:
                call_id = secrets.token_hex(8)
                while call_id in self.rooms.rooms or self.store.get_call(call_id) is not None:
                    call_id = secrets.token_hex(8)
            self.store.create_call(call_id, mode=SFU if roles else P2P, roles_enabled=roles,
                                   allow_candidates_see_each_other=see, created_at=_now())
            call = Call(call_id, identity.user_id, roles, see, mode=SFU if roles else P2P,
                        stored_mode=(SFU if roles else P2P, None))
            self.calls[call_id] = call
        logger.info("call %s created by %s%s", call_id, identity.user_id, " (with roles)" if roles else "")
        self._update_gauges()
        return self.state(call, None)

    def get(self, identity: Identity, call_id: str) -> dict[str, Any]:
        """The call as the caller sees it (its creator or a participant)."""
        call = self.calls.get(call_id)
        if call is None:
            stored = self.store.get_call(call_id)
            if stored is None:
                raise ApiError(404, f"call {call_id} not found")
            if not any(pp.user_id == identity.user_id for pp in self.store.participants(stored.session_id)):
                raise AuthError(403, f"you were not a participant of call {call_id}")
            return self._stored_view(stored)
        mine = [m for m in call.members.values() if m.user_id == identity.user_id]
        if call.created_by != identity.user_id and not mine:
            raise AuthError(403, f"you are not a participant of call {call_id}")
        return self.state(call, mine[0] if len(mine) == 1 else None)

    def _stored_view(self, stored: CallSession) -> dict[str, Any]:
        return {"callId": stored.id, "mode": stored.mode, "createdAt": stored.created_at,
                "endedAt": stored.ended_at, "endReason": stored.end_reason, "ended": not stored.active,
                "participants": []}

    async def join(self, identity: Identity, call_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Adds a participant; with a third one a P2P call moves to the SFU."""
        call = self._call(call_id)
        role = body.get("role", BOTH)
        if role not in ROLES:
            raise ApiError(400, f"role: must be one of {', '.join(ROLES)}")
        if role != BOTH and not call.roles:
            raise ApiError(400, f"role: call {call_id} was created without roles; only 'both' is possible")
        socket_id = body.get("socketId")
        if socket_id is not None:
            info = self.sockets.get(socket_id) if isinstance(socket_id, str) else None
            if info is None:
                raise ApiError(400, "socketId: not a connected Socket.IO session of this server")
            if info.identity.user_id != identity.user_id:
                raise AuthError(403, "socketId: that Socket.IO session belongs to another user")
        async with call.lock:
            if call.ended or call_id not in self.calls:
                raise ApiError(409, f"call {call_id} has ended")
            if len(call.members) >= self.max_participants:
                raise ApiError(409, f"call {call_id} is full ({self.max_participants} participants)")
            if call.roles or len(call.members) >= 2:
                await self._ensure_room(call)  # first: if no worker can take it, nothing has changed
            elif self.sfu_standby and len(call.members) == 1:
                try:
                    await self._ensure_room(call)  # the standby room of two (a P2P call works without)
                except ApiError as exc:
                    logger.warning("call %s: no standby SFU room: %s", call_id, exc)
            call.joins += 1
            m = Member(id=secrets.token_hex(8), user_id=identity.user_id, name=identity.name, role=role,
                       order=call.joins)
            self.store.add_participant(call_id, m.user_id, role=role, participant_id=m.id, joined_at=_now())
            existing = list(call.members.values())
            call.members[m.id] = m
            if socket_id:
                await self._attach(socket_id, call, m)
            logger.info("call %s: %s joined as %s (%s, %d participant(s))", call_id, m.user_id, m.id, role,
                        len(call.members))
            await self._send_all(call, "call:participant-joined", {"callId": call.id, "participant": m.view()},
                                 exclude=m.id)
            extra: dict[str, Any] = {}
            if call.roles:  # one-to-many: always through the SFU
                room = await self._ensure_room(call)
                self._store_mode(call, SFU, room.router.id)
                self._ensure_room_participant(call, m)
            elif call.mode == P2P and len(call.members) >= 3:
                await self._switch_to_sfu(call, existing, m)
            elif call.mode == SFU:
                await self._ensure_room(call)
                self._ensure_room_participant(call, m)
                if call.switch is not None and call.switch.mode == SFU:
                    call.switch.waiting.add(m.id)
            else:
                extra = {"initiator": bool(existing), "peer": existing[0].id if existing else None}
                if call.room is not None:
                    await self._standby(call, existing)
                    self._ensure_room_participant(call, m)
            result = self.state(call, m)
            result.update(extra)
            await self._send(m, "call:joined", result)
        self._update_gauges()
        return result

    async def _switch_to_sfu(self, call: Call, existing: list[Member], newcomer: Member) -> None:
        room = await self._ensure_room(call)
        call.mode = SFU
        for m in call.members.values():
            self._ensure_room_participant(call, m)
        self._store_mode(call, SFU, room.router.id)
        switch = self._start_switch(call, SFU)
        for m in existing:
            data = {"callId": call.id, "mode": SFU, "switchId": switch.id, "reason": "participant-joined"}
            data.update(self._sfu_info(call, m))
            await self._send(m, "call:mode-switch", data)
        logger.info("call %s: mode switch %s to SFU (%d participants)", call.id, switch.id, len(call.members))

    def _start_switch(self, call: Call, mode: str) -> Switch:
        if call.switch is not None:
            if call.switch.timer:
                call.switch.timer.cancel()
            logger.info("call %s: switch %s to %s superseded", call.id, call.switch.id, call.switch.mode)
        switch = Switch(id=secrets.token_hex(4), mode=mode, started=time.monotonic(),
                        waiting=set(call.members))
        loop = asyncio.get_running_loop()
        switch.timer = loop.call_later(self.switch_timeout_s,
                                       lambda: asyncio.ensure_future(self._switch_timed_out(call, switch)))
        call.switch = switch
        return switch

    async def _switch_timed_out(self, call: Call, switch: Switch) -> None:
        async with call.lock:
            if call.switch is not switch:
                return
            logger.warning("call %s: switch %s to %s timed out after %.0f s; no media report from %s",
                           call.id, switch.id, switch.mode, self.switch_timeout_s, sorted(switch.waiting))
            await self._finish_switch(call, success=False)

    async def _finish_switch(self, call: Call, success: bool) -> None:
        switch = call.switch
        if switch is None:
            return
        call.switch = None
        if switch.timer:
            switch.timer.cancel()
        seconds = time.monotonic() - switch.started
        if success and self.metrics is not None:
            self.metrics.observe_mode_switch(switch.mode, seconds)
        if switch.mode == P2P:
            if not (self.sfu_standby and len(call.members) == 2 and call.room is not None):
                self._release_room(call)
            self._store_mode(call, P2P, None)
        data = {"callId": call.id, "mode": switch.mode, "success": success, "switchId": switch.id,
                "durationMs": round(seconds * 1000, 1)}
        if not success:
            data["missing"] = sorted(switch.waiting)
        logger.info("call %s: switch %s to %s %s in %.0f ms", call.id, switch.id, switch.mode,
                    "completed" if success else "gave up", seconds * 1000)
        await self._send_all(call, "call:mode-switched", data)

    async def leave(self, identity: Identity, call_id: str, participant_id: Optional[str],
                    reason: str = "left") -> None:
        """Removes one of the caller's participants; at two the call goes back to P2P."""
        call = self._call(call_id)
        async with call.lock:
            m = self._own_member(call, identity, participant_id)
            await self._remove(call, m, reason)
        self._update_gauges()

    async def _remove(self, call: Call, m: Member, reason: str) -> None:
        """Under the call's lock."""
        call.members.pop(m.id, None)
        if m.disconnect_timer:
            m.disconnect_timer.cancel()
        for sid in m.sids:
            info = self.sockets.get(sid)
            if info:
                info.attached.discard((call.id, m.id))
        self.store.mark_left(m.id, at=_now())
        await self._close_member_media(call, m)
        logger.info("call %s: %s (%s) left: %s; %d remain", call.id, m.id, m.user_id, reason, len(call.members))
        await self._send_all(call, "call:participant-left", {"callId": call.id, "participantId": m.id,
                                                             "reason": reason})
        if not call.members:
            await self._end(call, "all-left")
            return
        if call.switch is not None:
            call.switch.waiting.discard(m.id)
        if not call.roles and call.mode == SFU and len(call.members) <= 2:
            await self._switch_to_p2p(call)
        elif call.switch is not None and not call.switch.waiting:
            await self._finish_switch(call, success=True)
        elif not call.roles and call.mode == P2P and len(call.members) < 2 and call.switch is None:
            self._release_room(call)  # no standby for one

    async def _switch_to_p2p(self, call: Call) -> None:
        call.mode = P2P
        self._store_mode(call, P2P, call.room.router.id if call.room else None)
        switch = self._start_switch(call, P2P)
        members = sorted(call.members.values(), key=lambda x: x.order)
        logger.info("call %s: mode switch %s back to P2P", call.id, switch.id)
        for i, m in enumerate(members):
            peer = members[1 - i] if len(members) == 2 else None
            data = {
                "callId": call.id, "mode": P2P, "switchId": switch.id, "reason": "participant-left",
                "initiator": i == 0 and peer is not None, "peer": peer.id if peer else None,
            }
            if self.sfu_standby and peer is not None and call.room is not None:
                data["standby"] = self._sfu_info(call, m)  # the SFU sessions stay, senders off
            await self._send(m, "call:mode-switch", data)
        if len(members) < 2:  # nobody to connect to: nothing has to flow
            await self._finish_switch(call, success=True)

    async def end(self, identity: Identity, call_id: str) -> None:
        """Ends a call for everyone (its creator only)."""
        call = self._call(call_id)
        if call.created_by != identity.user_id:
            raise AuthError(403, f"only the creator of call {call_id} can end it")
        async with call.lock:
            await self._end(call, "ended-by-creator")
        self._update_gauges()

    async def _end(self, call: Call, reason: str) -> None:
        if call.ended:
            return
        call.ended = True
        if call.switch is not None and call.switch.timer:
            call.switch.timer.cancel()
        call.switch = None
        for m in list(call.members.values()):
            if m.disconnect_timer:
                m.disconnect_timer.cancel()
            await self._send(m, "call:ended", {"callId": call.id, "reason": reason})
            for sid in m.sids:
                info = self.sockets.get(sid)
                if info:
                    info.attached.discard((call.id, m.id))
        call.members.clear()
        self._release_room(call)
        self.store.end_call(call.id, reason, at=_now())
        self.calls.pop(call.id, None)
        logger.info("call %s ended: %s", call.id, reason)

    # ------------------------------------------------- WHIP/WHEP sessions

    def _media_member(self, identity: Optional[Identity], room_id: str, as_id: Optional[str]) -> tuple[Call, Member]:
        call = self.calls[room_id]
        if call.room is None:
            raise ApiError(409, f"call {call.id} is in P2P mode: there is no SFU session to join")
        if not as_id:
            raise ApiError(400, "as: required for a call's room, your participantId (?as=...)")
        return call, self._own_member(call, identity or ANONYMOUS, as_id)

    def publisher_session(self, identity: Optional[Identity], room_id: str,
                          as_id: Optional[str]) -> tuple[Room, Participant, bool]:
        """(room, the member's room participant, created now) for a WHIP publish."""
        call, m = self._media_member(identity, room_id, as_id)
        if not m.publishes:
            raise AuthError(403, f"role {m.role!r} cannot publish in call {call.id}")
        assert call.room is not None
        fresh = m.id not in call.room.participants
        return call.room, self._ensure_room_participant(call, m), fresh

    def viewer_session(self, identity: Optional[Identity], room_id: str,
                       as_id: Optional[str]) -> tuple[Room, Participant]:
        """(room, a new hidden room participant acting for the member) for a WHEP view."""
        call, m = self._media_member(identity, room_id, as_id)
        assert call.room is not None
        if m.role == PUBLISHER and not (call.roles and call.candidates_see_each_other):
            raise AuthError(403, f"role {m.role!r} cannot receive media in call {call.id}")
        p = call.room.join(owner=m.user_id, member=m.id)
        m.sessions.add(p.id)
        return call.room, p

    # ------------------------------------------------------ Socket.IO side

    def _token_of(self, environ: dict[str, Any], auth: Any) -> Optional[str]:
        if isinstance(auth, dict) and isinstance(auth.get("token"), str):
            return auth["token"]
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if query.get("token"):
            return query["token"][0]
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.auth is None:
            identity = ANONYMOUS
        else:
            try:
                identity = self.auth.verify(self._token_of(environ, auth))
            except AuthError as exc:
                logger.info("socket %s refused: %s", sid, exc.message)
                if self.metrics is not None:
                    self.metrics.auth_failures.inc()
                raise socketio.exceptions.ConnectionRefusedError(exc.message, {"status": exc.status}) from None
        if self._draining or self._closing:
            raise socketio.exceptions.ConnectionRefusedError("server is shutting down", {"status": 503})
        now = time.monotonic()
        self.sockets[sid] = SocketInfo(identity, tokens=float(self.socket_limits.burst), tokens_at=now,
                                       strikes_at=now)
        logger.debug("socket %s connected as %s", sid, identity.user_id)

    async def _on_disconnect(self, sid: str, *args: Any) -> None:
        info = self.sockets.pop(sid, None)
        if info is None or self._closing:
            return
        for call_id, pid in list(info.attached):
            call = self.calls.get(call_id)
            m = call.members.get(pid) if call else None
            if m is None:
                continue
            m.sids.discard(sid)
            if not m.sids and self.disconnect_grace_s >= 0:
                loop = asyncio.get_running_loop()
                if m.disconnect_timer:
                    m.disconnect_timer.cancel()
                m.disconnect_timer = loop.call_later(
                    self.disconnect_grace_s,
                    lambda call=call, m=m: asyncio.ensure_future(self._disconnected(call, m)))

    async def _disconnected(self, call: Call, m: Member) -> None:
        async with call.lock:
            if m.sids or call.members.get(m.id) is not m:
                return
            logger.info("call %s: %s lost its socket for %.1f s", call.id, m.id, self.disconnect_grace_s)
            await self._remove(call, m, "disconnected")
        self._update_gauges()

    async def _attach(self, sid: str, call: Call, m: Member) -> None:
        """Binds a socket to a participant and delivers what was queued for it."""
        info = self.sockets.get(sid)
        if info is None:  # disconnected meanwhile: events stay queued for the next socket
            return
        info.attached.add((call.id, m.id))
        if not m.sids:
            self.store.update_participant(m.id, status="connected")
        m.sids.add(sid)
        if m.disconnect_timer:
            m.disconnect_timer.cancel()
            m.disconnect_timer = None
        pending, m.pending = m.pending, []
        for event, data in pending:
            await self.sio.emit(event, data, to=sid)

    # ---------------------------------------- event admission (validation, rate limit)

    def _take_token(self, info: SocketInfo, now: float) -> bool:
        limits = self.socket_limits
        if limits.rate_per_s is None:
            return True
        info.tokens = min(float(limits.burst), info.tokens + max(0.0, now - info.tokens_at) * limits.rate_per_s)
        info.tokens_at = now
        if info.tokens >= 1.0:
            info.tokens -= 1.0
            return True
        return False

    def _admit(self, sid: str, event: str, args: tuple[Any, ...], check: Any) -> Any:
        """The data of an event that may run its handler, or raises
        :class:`EventRefused` (rate limit first: a refused event costs no
        validation)."""
        info = self.sockets.get(sid)
        if info is None:
            raise EventRefused("not-authenticated", 401, "socket is not authenticated")
        limits = self.socket_limits
        now = time.monotonic()
        if not self._take_token(info, now):
            assert limits.rate_per_s is not None
            retry = (1.0 - info.tokens) / limits.rate_per_s
            raise EventRefused("rate-limit", 429, f"rate limit exceeded: {limits.describe()}; "
                               f"retry in {retry * 1000:.0f} ms",
                               limit=limits.describe(), retryAfterMs=max(1, round(retry * 1000)))
        if check is None:
            raise EventRefused("unknown-event", 404, f"unknown event {event[:64]!r}")
        if len(args) != 1:
            raise EventRefused("invalid-payload", 400,
                               f"event data: expected one object, got {len(args)} arguments")
        data = args[0]
        if payload_size(data, limits.max_event_bytes) > limits.max_event_bytes:
            raise EventRefused("too-large", 413, f"event data: larger than {limits.max_event_bytes} bytes "
                               "(the limit of one event)", limit=limits.max_event_bytes)
        check(data)
        return data

    async def _refuse(self, sid: str, event: str, exc: EventRefused) -> dict[str, Any]:
        """Counts the refusal, tells the client (the acknowledgement, plus a
        ``call:error`` event, at most one a ``notice_interval_s`` for the
        rate limit) and disconnects a connection that keeps exceeding the
        rate limit. Never logs a traceback: this is the client's error."""
        body: dict[str, Any] = {"error": exc.message, "status": exc.status, "reason": exc.reason,
                                "event": event[:64], **exc.extra}
        if self.metrics is not None:
            self.metrics.socketio_events_rejected.labels(reason=exc.reason).inc()
        info = self.sockets.get(sid)
        if info is None or info.kicked:
            return body
        limits = self.socket_limits
        now = time.monotonic()
        notify = True
        if exc.reason == "rate-limit":
            rate = limits.rate_per_s or 1.0
            info.strikes = max(0.0, info.strikes - (now - info.strikes_at) * rate) + 1.0
            info.strikes_at = now
            if limits.disconnect_after and info.strikes > limits.disconnect_after:
                info.kicked = True
                logger.warning("socket %s (%s): disconnected, over the event rate limit (%s) for more than "
                               "%d events", sid, info.identity.user_id, limits.describe(), limits.disconnect_after)
                if self.metrics is not None:
                    self.metrics.socketio_abuse_disconnects.inc()
                await self._emit_quietly("call:error", {**body, "disconnect": True}, sid)
                try:  # bounded: a flooder that does not read would keep the close waiting for its queue
                    await asyncio.wait_for(self.sio.disconnect(sid), 10.0)
                except Exception as err:  # gone meanwhile, or timed out
                    logger.debug("socket %s: %r", sid, err)
                return {**body, "disconnect": True}
            notify = now - info.last_notice >= limits.notice_interval_s
            if notify:
                info.last_notice = now
                logger.info("socket %s (%s): events over the rate limit (%s)", sid, info.identity.user_id,
                            limits.describe())
        else:
            logger.debug("socket %s: %s refused: %s", sid, event[:64], exc.message)
        if notify:
            await self._emit_quietly("call:error", body, sid)
        return body

    async def _emit_quietly(self, event: str, data: dict[str, Any], sid: str) -> None:
        try:
            await self.sio.emit(event, data, to=sid)
        except Exception as err:  # the socket went away meanwhile
            logger.debug("socket %s: %s not sent: %s", sid, event, err)

    def _guarded(self, event: str, handler: Any, check: Any) -> Any:
        """``handler(sid, data)`` behind :meth:`_admit`: any number of
        arguments reaches it without a TypeError, and what it does not
        accept is answered with ``{error, status, reason, event}``."""

        async def guarded(sid: str, *args: Any) -> dict[str, Any]:
            try:
                data = self._admit(sid, event, args, check)
            except EventRefused as exc:
                return await self._refuse(sid, event, exc)
            return await handler(sid, data)

        guarded.__name__ = f"on_{event}"
        return guarded

    def _check_packets(self, sio: socketio.AsyncServer) -> None:
        """Malformed packets from raw clients (``42[]``, ``42[{}]``, invalid
        JSON) make python-socketio itself fail, with a traceback in the log,
        before any handler runs: an event packet whose first element is not
        the event name is refused here, and a packet that cannot be decoded
        is logged in one line. Both are counted (``invalid-payload``) and
        take a token from the connection's rate limit. (Hooks python-socketio's
        event dispatch; without it, only the Engine.IO message guard is left.)"""
        dispatch = getattr(sio, "_handle_event", None)
        if dispatch is not None:
            async def checked_event(eio_sid: str, namespace: Optional[str], ack_id: Any, data: Any) -> Any:
                if isinstance(data, list) and data and isinstance(data[0], str):
                    return await dispatch(eio_sid, namespace, ack_id, data)
                await self._refuse_packet(eio_sid, namespace, "event packet: must be an array that starts "
                                                              "with the event name")
                return None

            sio._handle_event = checked_event  # type: ignore[method-assign]
        on_message = sio.eio.handlers.get("message") if hasattr(sio.eio, "handlers") else None
        if on_message is not None:
            async def checked_message(eio_sid: str, data: Any) -> Any:
                try:
                    return await on_message(eio_sid, data)
                except Exception as exc:  # a packet python-socketio could not decode or dispatch
                    logger.debug("Socket.IO packet of %s failed", eio_sid, exc_info=True)
                    await self._refuse_packet(eio_sid, "/", f"malformed Socket.IO packet ({type(exc).__name__})")
                    return None

            sio.eio.on("message", checked_message)

    async def _refuse_packet(self, eio_sid: str, namespace: Optional[str], message: str) -> None:
        try:
            sid = self.sio.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        except Exception:  # not connected to that namespace
            sid = None
        info = self.sockets.get(sid) if sid else None
        if sid is None or info is None:
            logger.info("Socket.IO session %s: %s", eio_sid, message)
            if self.metrics is not None:
                self.metrics.socketio_events_rejected.labels(reason="invalid-payload").inc()
            return
        if self._take_token(info, time.monotonic()):
            exc = EventRefused("invalid-payload", 400, message)
        else:
            limits = self.socket_limits
            exc = EventRefused("rate-limit", 429, f"rate limit exceeded: {limits.describe()}",
                               limit=limits.describe())
        await self._refuse(sid, "", exc)

    async def _on_unknown_event(self, event: Any, sid: str, *args: Any) -> dict[str, Any]:
        name = event if isinstance(event, str) else repr(event)
        try:
            self._admit(sid, name, args, None)
        except EventRefused as exc:
            return await self._refuse(sid, name, exc)
        raise AssertionError("unreachable: an unknown event is always refused")

    def _error(self, exc: Exception) -> dict[str, Any]:
        if isinstance(exc, ApiError):
            return {"error": exc.message, "status": exc.status}
        logger.exception("socket event failed")
        return {"error": "internal error", "status": 500}

    def _socket_member(self, sid: str, data: Any) -> tuple[Call, Member]:
        info = self.sockets.get(sid)
        if info is None:
            raise AuthError(401, "socket is not authenticated")
        if not isinstance(data, dict):
            raise ApiError(400, "event data: must be an object")
        call_id = data.get("callId")
        attached = [(c, p) for c, p in info.attached if not call_id or c == call_id]
        if not attached:
            raise AuthError(403, "this socket is not attached to a participant of "
                                 f"{'call ' + call_id if call_id else 'any call'} (emit call:attach first)")
        if len(attached) > 1:
            raise ApiError(400, "callId: required, this socket is attached to several calls")
        cid, pid = attached[0]
        call = self.calls.get(cid)
        m = call.members.get(pid) if call else None
        if call is None or m is None:
            info.attached.discard((cid, pid))
            raise AuthError(403, f"participant {pid} is no longer in call {cid}")
        return call, m

    async def _on_attach(self, sid: str, data: Any) -> dict[str, Any]:
        try:
            info = self.sockets.get(sid)
            if info is None:
                raise AuthError(401, "socket is not authenticated")
            if not isinstance(data, dict) or not isinstance(data.get("callId"), str):
                raise ApiError(400, "callId: required")
            call = self._call(data["callId"])
            async with call.lock:
                m = self._own_member(call, info.identity, data.get("participantId"))
                await self._attach(sid, call, m)
                return {"ok": True, **self.state(call, m)}
        except Exception as exc:
            return self._error(exc)

    def _relay(self, event: str) -> Any:
        async def handler(sid: str, data: Any) -> dict[str, Any]:
            try:
                call, m = self._socket_member(sid, data)
                to = data.get("to")
                if to is None:
                    others = [x for x in call.members.values() if x.id != m.id]
                    if len(others) != 1:
                        raise ApiError(400, f"to: required, call {call.id} has {len(others)} other participants")
                    target = others[0]
                else:
                    target = call.members.get(to)
                    if target is None:
                        raise AuthError(403, f"to: participant {to} is not in call {call.id}")
                    if target.id == m.id:
                        raise ApiError(400, "to: cannot signal yourself")
                payload = {k: v for k, v in data.items() if k != "to"}
                payload.update({"callId": call.id, "from": m.id})
                await self._send(target, event, payload)
                return {"ok": True}
            except Exception as exc:
                return self._error(exc)

        return handler

    async def _on_media_ready(self, sid: str, data: Any) -> dict[str, Any]:
        try:
            call, m = self._socket_member(sid, data)
            mode = data.get("mode")
            if mode not in (P2P, SFU):
                raise ApiError(400, "mode: must be 'p2p' or 'sfu'")
            async with call.lock:
                m.media_mode = mode
                switch = call.switch
                if switch is None or switch.mode != mode:
                    return {"ok": True, "pending": False}
                switch.waiting.discard(m.id)
                logger.debug("call %s: %s reports media on %s (%d still waited for)", call.id, m.id, mode,
                             len(switch.waiting))
                if not switch.waiting:
                    await self._finish_switch(call, success=True)
                return {"ok": True, "pending": bool(switch.waiting)}
        except Exception as exc:
            return self._error(exc)

    def _consumer_action(self, action: str) -> Any:
        async def handler(sid: str, data: Any) -> dict[str, Any]:
            try:
                call, m = self._socket_member(sid, data)
                room = call.room
                if room is None:
                    raise ApiError(409, f"call {call.id} has no SFU session (P2P mode)")
                mine = [room.participants[p] for p in (m.id, *m.sessions) if p in room.participants]
                consumers = []
                if isinstance(data.get("consumerId"), str):
                    cid = data["consumerId"]
                    found = [p.consumers[cid] for p in mine if cid in p.consumers]
                    if not found:
                        if any(cid in p.consumers for p in room.participants.values()):
                            raise AuthError(403, f"consumer {cid} belongs to another participant")
                        raise ApiError(404, f"consumer {cid} not found for this participant")
                    consumers = found
                elif isinstance(data.get("participantId"), str):
                    target = room.participants.get(data["participantId"])
                    own = set(target.producers) if target else set()
                    consumers = [c for p in mine for c in p.consumers.values() if c.producer_id in own]
                    if not consumers:
                        raise ApiError(404, f"you receive nothing from participant {data['participantId']}")
                else:
                    raise ApiError(400, "consumerId or participantId: required")
                for c in consumers:
                    await (c.pause() if action == "pause" else c.resume())
                return {"ok": True, "paused": action == "pause", "consumerIds": [c.id for c in consumers]}
            except Exception as exc:
                return self._error(exc)

        return handler
