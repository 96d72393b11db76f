"""Recordings of a room's participants (issue 14), over
:class:`sfu.recording.session.RecordingSession`: each recording is one
participant's audio and video in one file, written outside the forwarding
path without transcoding.

REST (JSON; the caller needs the room's recording right, see
:func:`check_record_grant`)::

    POST /api/rooms/{roomId}/recordings               {participantId?, container?}
         -> 201 {recordings: [...]}: that participant, or every one publishing now
    GET  /api/rooms/{roomId}/recordings               -> {recordings: [...]} (running and finished)
    POST /api/rooms/{roomId}/recordings/{id}/stop     -> {recording}
    GET  /api/rooms/{roomId}/recordings/{id}/file     -> the file (once stopped; 409 before)

Each recording's description is kept beside its file (``<file>.json``,
written when it starts and when it stops), so the list survives a server
restart: on start-up the service reads them back; one that was still
recording when the server stopped is listed as ``interrupted`` (its file
holds what was written until then). A call's recording also keeps the
users who could see it then (the call's creator and proctors): once the
call is gone, they (or a token with the room's ``roomRecord`` grant) still
may list and download it.

With ``record_publishers`` (``sfu-server --record-publishers``) every
participant is recorded when it starts publishing (proctoring: each
candidate), and its recording stops when it leaves. Room events
``recording-started`` / ``recording-stopped`` go to the room's WebSocket
clients (and through a call's guard to its members).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from aiohttp import web

from sfu.recording import RecordingError
from sfu.recording.session import RecordingInfo, RecordingSession

from .auth import AuthError
from .rooms import ApiError, Room, RoomManager

if TYPE_CHECKING:
    from .metrics import Metrics

logger = logging.getLogger("sfu.signaling.recording")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: a publisher's producers are awaited this long before its automatic recording starts
AUTO_START_S = 0.5


def _safe(text: str) -> str:
    return _SAFE.sub("_", text)[:64] or "_"


@dataclass
class Recording:
    id: str
    room_id: str
    participant_id: str
    path: Path
    container: str
    session: Optional[RecordingSession]
    started_at: float
    automatic: bool = False
    stopped_at: Optional[float] = None
    final: Optional[RecordingInfo] = None
    stopping: Optional["asyncio.Future[None]"] = None
    #: users who may list and download it once its call is gone (None: not a call's)
    call_users: Optional[list[str]] = None
    #: the description read back from disk (a recording of an earlier server run)
    saved: Optional[dict[str, Any]] = None

    @property
    def finished(self) -> bool:
        """Its file will not grow any more (stopped, or of an earlier run)."""
        return self.stopped_at is not None or self.saved is not None

    def view(self) -> dict[str, Any]:
        if self.saved is not None:
            return dict(self.saved)
        info = self.final if self.final is not None else (self.session.info() if self.session else None)
        state = "stopped" if self.stopped_at else "stopping" if self.stopping else "recording"
        out: dict[str, Any] = {
            "recordingId": self.id, "roomId": self.room_id, "participantId": self.participant_id,
            "container": self.container, "file": self.path.name, "state": state,
            "startedAt": self.started_at, "stoppedAt": self.stopped_at, "automatic": self.automatic,
        }
        if info is not None:
            out.update({"framesWritten": info.frames_written, "framesDropped": info.frames_dropped,
                        "bytesWritten": info.bytes_written, "packetsDropped": info.packets_dropped,
                        "keyframesAsked": info.keyframes_asked, "nacked": info.nacked, "tracks": info.tracks,
                        "packetsReceived": info.packets_received, "threadId": info.thread_id,
                        "error": info.error})
        return out


class RecordingService:
    """Recordings of the rooms of ``rooms``, written under ``directory``
    (``pattern`` fields: {room}, {participant}, {recording}, {time}, {ext})."""

    def __init__(self, rooms: RoomManager, directory: str | Path, *,
                 pattern: str = "{room}/{time}-{participant}-{recording}.{ext}", record_publishers: bool = False,
                 container: str = "webm", metrics: Optional["Metrics"] = None,
                 call_users: Optional[Callable[[str], Optional[list[str]]]] = None) -> None:
        self.rooms = rooms
        self.directory = Path(directory)
        self.pattern = pattern
        self.record_publishers = record_publishers
        self.container = container
        self.metrics = metrics
        #: room id -> the users of its call who may see its recordings (None: not a call's room)
        self.call_users = call_users
        self.recordings: dict[str, Recording] = {}
        self._auto_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._load()
        rooms.on_room_event.append(self._on_room_event)

    # ------------------------------------------------------- persistence

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    def _save(self, rec: Recording) -> None:
        """Writes ``rec``'s description beside its file (atomically)."""
        meta = {**rec.view(), "path": str(rec.path.relative_to(self.directory.resolve())),
                "callUsers": rec.call_users}
        target = self._meta_path(rec.path)
        tmp = target.with_name(target.name + ".tmp")
        try:
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, target)
        except OSError as exc:  # the recording goes on; only its listing after a restart is lost
            logger.warning("recording %s: cannot write %s: %s", rec.id, target, exc)

    def _load(self) -> None:
        """Reads back the recordings of earlier runs of the server."""
        if not self.directory.is_dir():
            return
        root = self.directory.resolve()
        for meta_path in sorted(root.rglob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
                rec_id, room_id, pid = meta["recordingId"], meta["roomId"], meta["participantId"]
                path = (root / meta["path"]).resolve()
                if root not in path.parents or not all(isinstance(v, str) for v in (rec_id, room_id, pid)):
                    raise ValueError("names a file outside the recordings directory")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("recordings: %s is not a recording's description (%s): skipped", meta_path, exc)
                continue
            if meta.get("state") in ("recording", "stopping"):
                meta["state"] = "interrupted"  # the server stopped before the recording did
            meta.pop("path", None)
            users = meta.pop("callUsers", None)
            rec = Recording(rec_id, room_id, pid, path, str(meta.get("container") or "webm"), None,
                            float(meta.get("startedAt") or 0.0), automatic=bool(meta.get("automatic")),
                            stopped_at=meta.get("stoppedAt"), saved=meta,
                            call_users=[str(u) for u in users] if isinstance(users, list) else None)
            self.recordings[rec_id] = rec
        if self.recordings:
            logger.info("recordings: %d of earlier runs listed from %s", len(self.recordings), root)

    def allowed_users(self, room_id: str) -> Optional[set[str]]:
        """The users who may see the recordings of ``room_id`` kept from its
        call (None when none of them was a call's)."""
        users: Optional[set[str]] = None
        for r in self.recordings.values():
            if r.room_id == room_id and r.call_users is not None:
                users = (users or set()) | set(r.call_users)
        return users

    # ------------------------------------------------------------ control

    def _path(self, room_id: str, participant_id: str, rec_id: str, container: str) -> Path:
        name = self.pattern.format(room=_safe(room_id), participant=_safe(participant_id), recording=rec_id,
                                   time=time.strftime("%Y%m%dT%H%M%S"), ext="mkv" if container == "mkv" else "webm")
        path = (self.directory / name).resolve()
        if self.directory.resolve() not in path.parents:
            raise ApiError(400, "the recording path pattern leaves the recordings directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def running_for(self, room_id: str, participant_id: str) -> Optional[Recording]:
        for r in self.recordings.values():
            if r.room_id == room_id and r.participant_id == participant_id and r.stopping is None:
                return r
        return None

    async def start(self, room: Room, participant_id: Optional[str] = None, container: Optional[str] = None,
                    automatic: bool = False) -> list[Recording]:
        """Records ``participant_id`` (or every participant publishing now).
        400 naming the problem for an unknown participant, nothing to record
        or a codec the container cannot hold; 409 if it is recorded already."""
        container = container or self.container
        if container not in ("webm", "mkv"):
            raise ApiError(400, f"container: 'webm' or 'mkv', got {container!r}")
        if participant_id is not None:
            p = room.participants.get(participant_id)
            if p is None:
                raise ApiError(404, f"participant {participant_id} not found in room {room.id}")
            if self.running_for(room.id, participant_id):
                raise ApiError(409, f"participant {participant_id} is being recorded already")
            targets = [p]
        else:
            targets = [p for p in room.participants.values()
                       if any(not pr.closed for pr in p.producers.values()) and not self.running_for(room.id, p.id)]
        out = []
        for p in targets:
            producers = [pr for pr in p.producers.values() if not pr.closed]
            if not producers:
                if participant_id is not None:
                    raise ApiError(400, f"participant {p.id} publishes nothing to record")
                continue
            rec_id = secrets.token_hex(6)
            path = self._path(room.id, p.id, rec_id, container)
            try:
                session = await RecordingSession.start(room.router, producers, path, container=container)
            except RecordingError as exc:
                raise ApiError(400, f"cannot record participant {p.id}: {exc}") from None
            rec = Recording(rec_id, room.id, p.id, path, container, session, time.time(), automatic=automatic,
                            call_users=self.call_users(room.id) if self.call_users else None)
            self.recordings[rec_id] = rec
            self._save(rec)
            out.append(rec)
            logger.info("room %s: recording %s of %s started (%s)", room.id, rec_id, p.id, path)
            self._spawn(room.broadcast("recording-started", rec.view()))
        if participant_id is None and not out:
            raise ApiError(400, f"nothing to record: no participant of room {room.id} publishes (or all are "
                                "recorded already)")
        self._update_metrics()
        return out

    async def stop(self, rec: Recording) -> Recording:
        """Stops ``rec``; returns once its file is complete (concurrent
        calls wait for the same stop)."""
        if rec.saved is not None:
            return rec  # of an earlier run: nothing runs
        if rec.stopping is None:
            rec.stopping = asyncio.ensure_future(self._stop(rec))
        await asyncio.shield(rec.stopping)
        return rec

    async def _stop(self, rec: Recording) -> None:
        if rec.session is None:
            return
        rec.final = await rec.session.stop()
        rec.stopped_at = time.time()
        if self.call_users is not None:
            users = self.call_users(rec.room_id)
            if users is not None:  # proctors who joined since it started
                rec.call_users = sorted(set(rec.call_users or ()) | set(users))
        self._save(rec)
        if self.metrics is not None:
            self.metrics.recording_bytes.inc(rec.final.bytes_written)
            self.metrics.recording_frames_dropped.inc(rec.final.frames_dropped)
        logger.info("room %s: recording %s of %s stopped: %d frames, %d bytes", rec.room_id, rec.id,
                    rec.participant_id, rec.final.frames_written, rec.final.bytes_written)
        room = self.rooms.rooms.get(rec.room_id)
        if room is not None:
            self._spawn(room.broadcast("recording-stopped", rec.view()))
        self._update_metrics()

    def get(self, room_id: str, rec_id: str) -> Recording:
        rec = self.recordings.get(rec_id)
        if rec is None or rec.room_id != room_id:
            raise ApiError(404, f"recording {rec_id} not found in room {room_id}")
        return rec

    def list(self, room_id: str) -> list[dict[str, Any]]:
        return [r.view() for r in self.recordings.values() if r.room_id == room_id]

    async def close(self) -> None:
        """Stops every recording (the files are complete when this returns)."""
        for handle in self._auto_timers.values():
            handle.cancel()
        self._auto_timers.clear()
        for rec in list(self.recordings.values()):
            if not rec.finished:
                await self.stop(rec)
        if self._on_room_event in self.rooms.on_room_event:
            self.rooms.on_room_event.remove(self._on_room_event)

    # ------------------------------------------------------- room events

    def _on_room_event(self, room: Room, event: str, data: dict[str, Any]) -> None:
        pid = data.get("participantId")
        if event == "new-producer" and self.record_publishers and isinstance(pid, str):
            key = (room.id, pid)
            old = self._auto_timers.pop(key, None)
            if old is not None:
                old.cancel()
            if self.running_for(room.id, pid) is None:
                # wait a moment for the publisher's other producer (audio + video in one file)
                self._auto_timers[key] = asyncio.get_running_loop().call_later(
                    AUTO_START_S, lambda: self._spawn(self._auto_start(room, pid)))
        elif event in ("participant-left", "room-closed"):
            for rec in list(self.recordings.values()):
                if rec.room_id == room.id and not rec.finished and (event == "room-closed" or
                                                                          rec.participant_id == pid):
                    self._spawn(self.stop(rec))

    async def _auto_start(self, room: Room, pid: str) -> None:
        self._auto_timers.pop((room.id, pid), None)
        if room.router.closed or pid not in room.participants or self.running_for(room.id, pid):
            return
        try:
            await self.start(room, pid, automatic=True)
        except ApiError as exc:
            logger.warning("room %s: automatic recording of %s not started: %s", room.id, pid, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _update_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.recordings_active.set(sum(1 for r in self.recordings.values() if not r.finished))


# ------------------------------------------------------------- REST side

RECORDINGS = web.AppKey("recordings", RecordingService)


def check_record_grant(request: web.Request, room_id: str) -> None:
    """403 unless the caller may record in ``room_id``: without
    authentication anyone; in a call's room its creator or a member that is
    not a candidate (role ``publisher``); elsewhere a token whose room grant
    (``video`` claim) allows the room and has ``roomRecord: true``, or a
    token without grant on a server that does not require one."""
    from .server import AUTH, CALLS, identity

    ident = identity(request)
    if ident is None:
        return
    calls = request.app.get(CALLS)
    if calls is not None and calls.owns_room(room_id):
        call = calls.calls[room_id]
        if call.created_by == ident.user_id:
            return
        if any(m.user_id == ident.user_id and m.role != "publisher" for m in call.members.values()):
            return
        raise AuthError(403, f"only the call's creator or its proctors may access recordings of call {room_id}")
    service = request.app.get(RECORDINGS)
    kept = service.allowed_users(room_id) if service is not None else None
    grant = ident.grant
    if kept is not None:
        # recordings of a call that is over: its creator and proctors, or a recording grant for the room
        if ident.user_id in kept or (grant is not None and grant.allows_room(room_id) and grant.can_record):
            return
        raise AuthError(403, f"only the creator or the proctors of call {room_id} (or a token with its "
                             "roomRecord grant) may access its recordings")
    if grant is None:
        auth = request.app.get(AUTH)
        if auth is not None and auth.config.require_grants:
            raise AuthError(403, f"token grants no access to room {room_id}: it has no room grant")
        return
    if not grant.allows_room(room_id):
        raise AuthError(403, f"token grants no access to room {room_id}")
    if not grant.can_record:
        raise AuthError(403, "token may not record (its grant lacks roomRecord: true)")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "body: must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object")
    return body


async def start_recording(request: web.Request) -> web.Response:
    from .server import ROOMS

    room_id = request.match_info["roomId"]
    check_record_grant(request, room_id)
    room = request.app[ROOMS].room(room_id)
    body = await _body(request)
    pid, container = body.get("participantId"), body.get("container")
    if pid is not None and not isinstance(pid, str):
        raise ApiError(400, "participantId: must be a string")
    if container is not None and not isinstance(container, str):
        raise ApiError(400, "container: must be a string")
    recs = await request.app[RECORDINGS].start(room, pid, container)
    return web.json_response({"recordings": [r.view() for r in recs]}, status=201)


async def list_recordings(request: web.Request) -> web.Response:
    room_id = request.match_info["roomId"]
    check_record_grant(request, room_id)
    return web.json_response({"recordings": request.app[RECORDINGS].list(room_id)})


async def stop_recording(request: web.Request) -> web.Response:
    room_id = request.match_info["roomId"]
    check_record_grant(request, room_id)
    service = request.app[RECORDINGS]
    rec = await service.stop(service.get(room_id, request.match_info["recordingId"]))
    return web.json_response({"recording": rec.view()})


async def recording_file(request: web.Request) -> web.StreamResponse:
    room_id = request.match_info["roomId"]
    check_record_grant(request, room_id)
    rec = request.app[RECORDINGS].get(room_id, request.match_info["recordingId"])
    if not rec.finished:
        raise ApiError(409, f"recording {rec.id} is still running: stop it first")
    if not rec.path.exists():
        raise ApiError(404, f"recording {rec.id} has no file (it never got a frame)")
    mime = "video/x-matroska" if rec.container == "mkv" else "video/webm"
    return web.FileResponse(rec.path, headers={"Content-Type": mime,
                                               "Content-Disposition": f'attachment; filename="{rec.path.name}"'})


def add_routes(app: web.Application, service: RecordingService) -> None:
    app[RECORDINGS] = service
    r = app.router
    r.add_post("/api/rooms/{roomId}/recordings", start_recording)
    r.add_get("/api/rooms/{roomId}/recordings", list_recordings)
    r.add_post("/api/rooms/{roomId}/recordings/{recordingId}/stop", stop_recording)
    r.add_get("/api/rooms/{roomId}/recordings/{recordingId}/file", recording_file)

    async def on_cleanup(app: web.Application) -> None:
        await service.close()

    app.on_cleanup.insert(0, on_cleanup)
