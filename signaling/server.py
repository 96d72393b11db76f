"""The HTTP + WebSocket signaling API of `sfu-server` (aiohttp).

REST (JSON bodies, mediasoup's parameter shapes), after the seed design's
"P2P to SFU Transition Flow":

    POST /api/rooms/{roomId}/create                         -> {roomId, routerId, rtpCapabilities}
    POST /api/rooms/{roomId}/participants                   -> {participantId, token, rtpCapabilities}
    GET  /api/rooms/{roomId}/producers                      -> {producers: [{participantId, producerId, kind}]}
    POST /api/rooms/{roomId}/transports  {direction}        -> {id, iceParameters, iceCandidates, dtlsParameters}
    POST /api/rooms/{roomId}/transports/{id}/connect  {dtlsParameters}
    POST /api/rooms/{roomId}/transports/{id}/produce  {kind, rtpParameters}           -> {id}
    POST /api/rooms/{roomId}/consume  {transportId, producerId, rtpCapabilities}      -> consumer (paused)
    POST /api/rooms/{roomId}/consumers/{id}/resume | /pause
    POST /api/rooms/{roomId}/participants/{participantId}/leave
    GET  /api/rooms/{roomId}/ws?token=...   WebSocket: new-producer, producer-closed, participant-left

Every call but create/join carries ``Authorization: Bearer <token>`` (the
token returned by join); a participant can only act on its own transports,
producers and consumers. Errors are JSON ``{"error": "..."}`` with a 4xx
status naming the problem; nothing a request does can disturb another room.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

import sfu

from .rooms import ApiError, Participant, Room, RoomManager

logger = logging.getLogger("sfu.signaling")

ROOMS = web.AppKey("rooms", RoomManager)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Maps every failure to a JSON error with a status a client can act on."""
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    except (sfu.InvalidParametersError, sfu.UnsupportedError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except sfu.WorkerDiedError as exc:
        return web.json_response({"error": str(exc)}, status=503)
    except sfu.InvalidStateError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "body: not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: must be a JSON object")
    return data


def _room(request: web.Request) -> Room:
    return request.app[ROOMS].room(request.match_info["roomId"])


def _participant(request: web.Request, room: Room) -> Participant:
    auth = request.headers.get("Authorization", "")
    token = auth[7:] if auth.startswith("Bearer ") else request.query.get("token", "")
    if not token:
        raise ApiError(401, "missing participant token (Authorization: Bearer <token>)")
    return room.participant_by_token(token)


def _require(data: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ApiError(400, f"{key}: required, {what}")
    return value


async def create_room(request: web.Request) -> web.Response:
    room, created = await request.app[ROOMS].create_room(request.match_info["roomId"])
    return web.json_response(
        {"roomId": room.id, "routerId": room.router.id, "rtpCapabilities": room.router.rtp_capabilities},
        status=201 if created else 200,
    )


async def join(request: web.Request) -> web.Response:
    room = _room(request)
    p = room.join()
    return web.json_response(
        {"participantId": p.id, "token": p.token, "rtpCapabilities": room.router.rtp_capabilities}, status=201
    )


async def list_producers(request: web.Request) -> web.Response:
    room = _room(request)
    _participant(request, room)
    producers = [
        {"participantId": p.id, "producerId": prod.id, "kind": prod.kind}
        for p in room.participants.values()
        for prod in p.producers.values()
        if not prod.closed
    ]
    return web.json_response({"producers": producers})


async def create_transport(request: web.Request) -> web.Response:
    room = _room(request)
    p = _participant(request, room)
    data = await _body(request)
    t = await room.create_transport(p, _require(data, "direction", str, "'send' or 'recv'"))
    return web.json_response(
        {
            "id": t.id,
            "transportId": t.id,
            "iceParameters": t.ice_parameters,
            "iceCandidates": t.ice_candidates,
            "dtlsParameters": t.dtls_parameters,
        },
        status=201,
    )


async def connect_transport(request: web.Request) -> web.Response:
    room = _room(request)
    p = _participant(request, room)
    data = await _body(request)
    t = p.transport(request.match_info["transportId"])
    await t.connect(_require(data, "dtlsParameters", dict, "an object with role and fingerprints"))
    return web.json_response({"connected": True})


async def produce(request: web.Request) -> web.Response:
    room = _room(request)
    p = _participant(request, room)
    data = await _body(request)
    kind = _require(data, "kind", str, "'audio' or 'video'")
    producer = await room.produce(p, request.match_info["transportId"], kind, data.get("rtpParameters"))
    return web.json_response({"id": producer.id, "producerId": producer.id}, status=201)


async def consume(request: web.Request) -> web.Response:
    room = _room(request)
    p = _participant(request, room)
    data = await _body(request)
    consumer = await room.consume(
        p,
        _require(data, "transportId", str, "the id of one of your transports"),
        _require(data, "producerId", str, "a producer id of this room"),
        data.get("rtpCapabilities"),
    )
    return web.json_response(
        {
            "id": consumer.id,
            "consumerId": consumer.id,
            "producerId": consumer.producer_id,
            "kind": consumer.kind,
            "rtpParameters": consumer.rtp_parameters,
            "type": consumer.type,
            "producerPaused": consumer.producer_paused,
        },
        status=201,
    )


async def consumer_action(request: web.Request) -> web.Response:
    room = _room(request)
    p = _participant(request, room)
    consumer = p.consumer(request.match_info["consumerId"])
    if request.match_info["action"] == "resume":
        await consumer.resume()
    else:
        await consumer.pause()
    return web.json_response({"paused": consumer.paused})


async def leave(request: web.Request) -> web.Response:
    room = _room(request)
    p = _participant(request, room)
    if request.match_info["participantId"] != p.id:
        raise ApiError(403, "a participant can only make itself leave")
    await room.leave(p)
    return web.json_response({"left": True})


async def websocket(request: web.Request) -> web.StreamResponse:
    room = _room(request)
    p = _participant(request, room)
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    p.sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str("pong")
    finally:
        p.sockets.discard(ws)
    return ws


async def healthz(request: web.Request) -> web.Response:
    workers = request.app[ROOMS].workers
    alive = sum(1 for w in workers if not w.closed)
    return web.json_response({"workers": alive, "rooms": len(request.app[ROOMS].rooms)},
                             status=200 if alive else 503)


STATIC = Path(__file__).resolve().parent / "static"


async def demo_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def demo_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "demo.js", headers={"Content-Type": "text/javascript"})


def create_app(rooms: RoomManager) -> web.Application:
    """The aiohttp application around an existing :class:`RoomManager`."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=1024 * 1024)
    app[ROOMS] = rooms
    r = app.router
    r.add_get("/", demo_page)
    r.add_get("/demo.js", demo_script)
    r.add_get("/healthz", healthz)
    r.add_post("/api/rooms/{roomId}/create", create_room)
    r.add_post("/api/rooms/{roomId}/participants", join)
    r.add_get("/api/rooms/{roomId}/producers", list_producers)
    r.add_post("/api/rooms/{roomId}/transports", create_transport)
    r.add_post("/api/rooms/{roomId}/transports/{transportId}/connect", connect_transport)
    r.add_post("/api/rooms/{roomId}/transports/{transportId}/produce", produce)
    r.add_post("/api/rooms/{roomId}/consume", consume)
    r.add_post("/api/rooms/{roomId}/consumers/{consumerId}/{action:resume|pause}", consumer_action)
    r.add_post("/api/rooms/{roomId}/participants/{participantId}/leave", leave)
    r.add_get("/api/rooms/{roomId}/ws", websocket)
    from .whip import add_routes as add_whip_routes

    add_whip_routes(app)
    return app


async def start_rooms(
    workers: int = 1,
    listen_ip: str = "127.0.0.1",
    announced_ip: str | None = None,
    rtc_port: int = 0,
    rtc_min_port: int | None = None,
    rtc_max_port: int | None = None,
    log_level: str = "warning",
    announced_rtc_port: int | None = None,
) -> RoomManager:
    """Starts the workers (and, with ``rtc_port``, one shared WebRTC port per
    worker: rtc_port, rtc_port+1, ...)."""
    started: list[sfu.Worker] = []
    servers: dict[int, sfu.WebRtcServer] = {}
    for i in range(workers):
        w = await sfu.create_worker(log_level=log_level, rtc_min_port=rtc_min_port, rtc_max_port=rtc_max_port)
        started.append(w)
        if rtc_port:
            servers[w.pid] = await w.create_webrtc_server(
                listen_ip, rtc_port + i, announced_ip, announced_rtc_port + i if announced_rtc_port else None
            )
    return RoomManager(started, servers, listen_ip, announced_ip)
