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

Calls (automatic P2P <-> SFU switching, roles) are in ``signaling/calls.py``:
``/api/calls...`` and Socket.IO at ``/socket.io/``. Also ``/metrics``
(Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness), the demo pages
``/`` and ``/call``.

Authentication. With an :class:`~signaling.auth.Authenticator` (``sfu-server``
always has one), every request under ``/api/``, ``/whip/`` and ``/whep/``
needs a JWT (``Authorization: Bearer <JWT>``, or ``?token=`` where headers
cannot be set), and every Socket.IO connection one in its ``auth`` payload
``{token}``. The user is the token's ``sub``; a room participant belongs to
the user that joined it, and requests choose which of their participants acts
with ``X-Participant-Id: <participantId>`` (or ``?participantId=``), which may
be left out when the user has a single participant in the room. Without an
authenticator (``create_app(rooms)``, for embedding applications that
authenticate by other means) the room API works as before: the
participant token returned by join is the bearer token, and every call
caller is the user ``anonymous``.

A participant can only act on its own transports, producers and consumers
(403 on another's). Errors are JSON ``{"error": "..."}`` with a 4xx status
naming the problem; nothing a request does can disturb another room.

CORS. Pages of other origins may call /api, /whip and /whep only from the
origins of a :class:`CorsPolicy` (none by default: same-origin only);
:func:`cors_middleware` is the one place that answers preflights (without a
token) and adds ``Access-Control-*`` headers, also to error answers. The
same origins may open Socket.IO connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping, Optional
from urllib.parse import urlsplit

import socketio
from aiohttp import WSCloseCode, WSMsgType, web

import sfu

from .auth import AuthError, Authenticator, Identity, auth_middleware, check_room_grant
from .calls import ANONYMOUS, CallService
from .metrics import METRICS, Metrics, metrics_handler, metrics_middleware
from .ratelimit import RateLimiter, rate_limit_middleware
from .rooms import (
    ROOM_CREATOR,
    ApiError,
    Limits,
    Participant,
    Room,
    RoomManager,
    WorkerSettings,
    count_sdp_sections,
    fd_usage,
    raise_fd_limit,
)
from .store import CallStore

if TYPE_CHECKING:
    from .cluster import Cluster

logger = logging.getLogger("sfu.signaling")

ROOMS = web.AppKey("rooms", RoomManager)
AUTH = web.AppKey("auth", Authenticator)
CALLS = web.AppKey("calls", CallService)
SIO = web.AppKey("sio", socketio.AsyncServer)
STORE = web.AppKey("store", CallStore)

#: Paths that need a token when the app has an authenticator (Socket.IO
#: checks its own connections: the token travels in the connect packet).
PROTECTED_PREFIXES = ("/api/", "/whip/", "/whep/")

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
    except web.HTTPRequestEntityTooLarge:  # over client_max_size (the request_body limit)
        exc = request.app[ROOMS].limits.body_too_large()
        return web.json_response({"error": exc.message}, status=exc.status)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)


# ------------------------------------------------------- admission limits

def _sdp_post_kind(request: web.Request) -> Optional[str]:
    """``"whip"``/``"whep"`` for the POST of an SDP offer (``/whip/{roomId}``)."""
    if request.method != "POST":
        return None
    parts = request.path.split("/")
    if len(parts) == 3 and parts[1] in ("whip", "whep") and parts[2]:
        return parts[1]
    return None


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Limits checked before a handler allocates anything: the m-lines of a
    WHIP/WHEP offer (counted on the raw body, which aiohttp's
    ``client_max_size`` bounds: 413 ``request body``), and the user a room
    created by this request counts against (:data:`ROOM_CREATOR`, for
    /api/rooms and /whip). Put it innermost (after errors_middleware)."""
    kind = _sdp_post_kind(request)
    if kind is not None and request.content_type == "application/sdp":
        body = await request.read()  # cached: the handler reads it again
        request.app[ROOMS].limits.check_offer_sections(kind, count_sdp_sections(body))
    ident = identity(request)
    if ident is None or not request.path.startswith(("/api/rooms/", "/whip/")):
        return await handler(request)
    token = ROOM_CREATOR.set(ident.user_id)
    try:
        return await handler(request)
    finally:
        ROOM_CREATOR.reset(token)


# ------------------------------------------------------------------ CORS

#: What a page of another origin may send (If-Match: WHIP's PATCH) ...
CORS_ALLOW_METHODS = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "If-Match", "X-Participant-Id")
#: ... and which response headers its script may read: RFC 9725 (WHIP) asks
#: for Location, Link and ETag; X-Sfu-Participant-Id names the WHIP/WHEP
#: session's participant, X-Sfu-Consumers a WHEP session's consumers
#: ("<mid>=<consumer id>,..."); Retry-After comes with 429.
CORS_EXPOSE_HEADERS = ("Location", "Link", "ETag", "X-Sfu-Participant-Id", "X-Sfu-Consumers", "Retry-After")
#: Seconds a browser may cache a preflight's answer (Chromium caps it at 7200).
CORS_MAX_AGE_S = 600
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(value: str) -> str:
    """An origin written as browsers send it in ``Origin``: lower-case
    ``scheme://host``, ``:port`` unless the scheme's default, no trailing
    slash (ValueError naming the value when it is not an origin)."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an origin: {exc}") from None
    if (not parts.scheme or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment
            or "@" in parts.netloc):
        raise ValueError(f"{value!r} is not an origin (scheme://host[:port], e.g. https://app.example.com)")
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class CorsPolicy:
    """Which other origins' pages may use /api, /whip and /whep (and
    Socket.IO). ``origins``: exact origins (see :func:`normalize_origin`);
    ``any_origin``: every origin. The default allows none: same-origin
    pages only (the browser needs no CORS for those)."""

    origins: frozenset[str] = frozenset()
    any_origin: bool = False

    @classmethod
    def parse(cls, values: Iterable[str]) -> "CorsPolicy":
        """From option values, each an origin, a comma-separated list of
        them, ``*`` (any origin) or ``none`` (ValueError naming a value that
        is none of these)."""
        origins: set[str] = set()
        any_origin = False
        for value in values:
            for item in value.split(","):
                item = item.strip()
                if not item or item.lower() == "none":
                    continue
                if item == "*":
                    any_origin = True
                else:
                    origins.add(normalize_origin(item))
        return cls(frozenset(origins), any_origin)

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.origins)

    def allows(self, origin: Optional[str]) -> bool:
        """True for an allowed origin. ``null`` (sandboxed frames, file:
        pages) never is: any page can claim it."""
        if not origin or origin == "null":
            return False
        return self.any_origin or origin in self.origins

    def describe(self) -> str:
        if self.any_origin:
            return "any origin (*)"
        if self.origins:
            return ", ".join(sorted(self.origins))
        return "none (same-origin pages only)"


def _is_preflight(request: web.BaseRequest) -> bool:
    return (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers)


def _vary_origin(headers: Any) -> None:
    vary = headers.get("Vary", "")
    if "origin" not in {v.strip().lower() for v in vary.split(",")}:
        headers["Vary"] = f"{vary}, Origin" if vary.strip() else "Origin"


def _apply_cors(headers: Any, policy: CorsPolicy, origin: Optional[str]) -> None:
    """The CORS headers of an actual (non-preflight) answer; Access-Control-*
    headers a handler set are replaced, so this is the only place."""
    for name in {k for k in headers if k.lower().startswith("access-control-")}:
        del headers[name]
    if policy.enabled:
        _vary_origin(headers)
    if policy.allows(origin):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = ", ".join(CORS_EXPOSE_HEADERS)


def _preflight(request: web.BaseRequest, policy: CorsPolicy) -> web.Response:
    """204 with the Access-Control-Allow-* headers, or 403 naming why not
    (the browser then refuses the request it was asking about)."""
    origin = request.headers["Origin"]
    method = request.headers["Access-Control-Request-Method"].strip().upper()
    wanted = [h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
    allowed_headers = {h.lower() for h in CORS_ALLOW_HEADERS}
    problem = None
    if not policy.allows(origin):
        problem = (f"CORS: origin {origin} may not use this API (this server allows "
                   f"{'other origins only when listed' if policy.enabled else 'no other origin'}: "
                   "sfu-server --cors-origin / SFU_CORS_ORIGINS)")
    elif method not in CORS_ALLOW_METHODS:
        problem = f"CORS: method {method} is not allowed (allowed: {', '.join(CORS_ALLOW_METHODS)})"
    else:
        extra = [h for h in wanted if h.lower() not in allowed_headers]
        if extra:
            problem = (f"CORS: request header(s) {', '.join(extra)} not allowed "
                       f"(allowed: {', '.join(CORS_ALLOW_HEADERS)})")
    if problem is not None:
        logger.info("preflight for %s %s refused: %s", method, request.path, problem)
        return web.json_response({"error": problem}, status=403, headers={"Vary": "Origin"})
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Allow-Methods": ", ".join(CORS_ALLOW_METHODS),
        "Access-Control-Allow-Headers": ", ".join(CORS_ALLOW_HEADERS),
        "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
    }
    if request.path.startswith(("/whip/", "/whep/")):
        headers["Accept-Post"] = "application/sdp"
    return web.Response(status=204, headers=headers)


def cors_middleware(policy: CorsPolicy, applies: Callable[[str], bool] = lambda path: _protected(path)) -> Any:
    """aiohttp middleware for the paths ``applies`` to: answers preflights
    itself (no token needed: put it before the auth middleware) and adds
    Access-Control-Allow-Origin (the request's origin, when ``policy``
    allows it) and Access-Control-Expose-Headers to every other answer,
    401, 429 and errors included. A request from an origin not allowed is
    still served (same-origin requests carry an Origin too) but gets no
    Access-Control-Allow-Origin, so a browser does not give its answer to
    the page."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not applies(request.path):
            return await handler(request)
        if _is_preflight(request):
            return _preflight(request, policy)
        origin = request.headers.get("Origin")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _apply_cors(exc.headers, policy, origin)
            raise
        if not response.prepared:  # a WebSocket's headers are gone already (and CORS does not apply)
            _apply_cors(response.headers, policy, origin)
        return response

    return middleware


def _socketio_origins(policy: CorsPolicy) -> Any:
    """python-engineio's ``cors_allowed_origins`` for ``policy``: its own
    same-origin check when nothing is allowed, else the page's own origin
    plus the allowed ones."""
    if not policy.enabled:
        return None
    if policy.any_origin:
        return "*"

    def allowed(origin: Optional[str], environ: Mapping[str, Any]) -> bool:
        if policy.allows(origin):
            return True
        scheme = str(environ.get("wsgi.url_scheme", "http")).split(",")[0].strip()
        hosts = (environ.get("HTTP_HOST"), environ.get("HTTP_X_FORWARDED_HOST"))
        return origin in {f"{scheme}://{str(h).split(',')[0].strip()}" for h in hosts if h}

    return allowed


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "body: not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: must be a JSON object")
    return data


def check_grant(request: web.Request, room_id: str, *, publish: bool = False, subscribe: bool = False) -> None:
    """403 unless the caller's token grants room ``room_id`` (and publishing
    / subscribing when asked): see :func:`signaling.auth.check_room_grant`.
    A call's room accepts tokens without a grant (its roles decide)."""
    auth = request.app.get(AUTH)
    calls = request.app.get(CALLS)
    check_room_grant(identity(request), room_id, publish=publish, subscribe=subscribe,
                     require=auth is not None and auth.config.require_grants,
                     call=calls is not None and calls.owns_room(room_id))


def _room(request: web.Request) -> Room:
    room_id = request.match_info["roomId"]
    check_grant(request, room_id)  # before the lookup: a room not granted is 403 whether it exists or not
    return request.app[ROOMS].room(room_id)


def identity(request: web.Request) -> Optional[Identity]:
    """The verified caller (None when the app runs without authenticator)."""
    return request.get("identity")


def _participant(request: web.Request, room: Room) -> Participant:
    ident = identity(request)
    if ident is None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else request.query.get("token", "")
        if not token:
            raise ApiError(401, "missing participant token (Authorization: Bearer <token>)")
        return room.participant_by_token(token)
    wanted = request.headers.get("X-Participant-Id") or request.query.get("participantId")
    if wanted:
        p = room.participants.get(wanted)
        if p is None:
            raise ApiError(404, f"participant {wanted} not found in room {room.id}")
        if p.owner != ident.user_id:
            raise ApiError(403, f"participant {wanted} belongs to another user")
        return p
    mine = room.owned_by(ident.user_id)
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise ApiError(403, f"you have no participant in room {room.id} (join it first)")
    raise ApiError(400, "you have several participants in this room: choose one with X-Participant-Id")


def _not_a_call_room(request: web.Request) -> None:
    calls = request.app.get(CALLS)
    room_id = request.match_info["roomId"]
    if calls is not None and calls.owns_room(room_id):
        raise ApiError(403, f"room {room_id} belongs to a call: join it with POST /api/calls/{room_id}/participants")


def _require(data: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ApiError(400, f"{key}: required, {what}")
    return value


async def create_room(request: web.Request) -> web.Response:
    check_grant(request, request.match_info["roomId"])
    _not_a_call_room(request)
    room, created = await request.app[ROOMS].create_room(request.match_info["roomId"])
    return web.json_response(
        {"roomId": room.id, "routerId": room.router.id, "rtpCapabilities": room.router.rtp_capabilities},
        status=201 if created else 200,
    )


async def join(request: web.Request) -> web.Response:
    _not_a_call_room(request)
    room = _room(request)
    ident = identity(request)
    p = room.join(owner=ident.user_id if ident else None)
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
    t = room.transport_of(p, request.match_info["transportId"])
    await t.connect(_require(data, "dtlsParameters", dict, "an object with role and fingerprints"))
    return web.json_response({"connected": True})


async def produce(request: web.Request) -> web.Response:
    check_grant(request, request.match_info["roomId"], publish=True)
    room = _room(request)
    p = _participant(request, room)
    data = await _body(request)
    kind = _require(data, "kind", str, "'audio' or 'video'")
    producer = await room.produce(p, request.match_info["transportId"], kind, data.get("rtpParameters"))
    return web.json_response({"id": producer.id, "producerId": producer.id}, status=201)


async def consume(request: web.Request) -> web.Response:
    check_grant(request, request.match_info["roomId"], subscribe=True)
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
    consumer = room.consumer_of(p, request.match_info["consumerId"])
    if request.match_info["action"] == "resume":
        await consumer.resume()
    else:
        await consumer.pause()
    return web.json_response({"paused": consumer.paused})


async def consumer_preferred_layers(request: web.Request) -> web.Response:
    """Moves a viewer between a simulcast producer's encodings
    ({"spatialLayer": n, "temporalLayer"?: m}, mediasoup's shape)."""
    room = _room(request)
    p = _participant(request, room)
    consumer = room.consumer_of(p, request.match_info["consumerId"])
    data = await _body(request)
    spatial, temporal = data.get("spatialLayer"), data.get("temporalLayer")
    if not isinstance(spatial, int) or isinstance(spatial, bool) or spatial < 0:
        raise ApiError(400, "spatialLayer: required, an integer >= 0")
    if temporal is not None and (not isinstance(temporal, int) or isinstance(temporal, bool) or temporal < 0):
        raise ApiError(400, "temporalLayer: an integer >= 0 when given")
    await consumer.set_preferred_layers(spatial, temporal)
    return web.json_response({"preferredLayers": consumer.preferred_layers})


async def consumer_stats(request: web.Request) -> web.Response:
    """The consumer's statistics (layers, packets, score) and its
    transport's (the bandwidth estimate toward the viewer:
    availableOutgoingBitrate)."""
    room = _room(request)
    p = _participant(request, room)
    consumer = room.consumer_of(p, request.match_info["consumerId"])
    stats = (await consumer.get_stats())[0]
    transport = (await consumer.transport.get_stats())[0]
    return web.json_response({"consumer": stats, "transport": transport})


async def consumer_priority(request: web.Request) -> web.Response:
    """Orders the viewer's consumers for its link's bandwidth ({"priority":
    1..255}, higher first; mediasoup's setPriority)."""
    room = _room(request)
    p = _participant(request, room)
    consumer = room.consumer_of(p, request.match_info["consumerId"])
    data = await _body(request)
    priority = data.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 1 <= priority <= 255:
        raise ApiError(400, "priority: required, an integer from 1 to 255")
    await consumer.set_priority(priority)
    return web.json_response({"priority": consumer.priority})


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
    """Liveness: the process answers and at least one media worker runs
    (503 otherwise). The body reports the worker pool: workers alive, dead
    ones being replaced, deaths and replacements so far, the last death."""
    rooms = request.app[ROOMS]
    pool = rooms.pool_state()
    alive = pool["alive"]
    if not alive:
        status = "no worker"
    elif alive < pool["configured"]:
        status = "degraded"
    else:
        status = "ok"
    fds = rooms.fd_state()
    if status == "ok" and any(f["low"] for f in fds):
        status = "degraded"
    return web.json_response({"status": status, "workers": alive, "rooms": len(rooms.rooms), "pool": pool,
                              "fileDescriptors": fds},
                             status=200 if alive else 503)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: every worker runs, the call store answers, and the server
    is not shutting down (503 naming what is not ready otherwise). A worker
    that died is not ready until its replacement runs."""
    rooms = request.app[ROOMS]
    problems = []
    dead = sum(1 for w in rooms.workers if w.closed)
    if not rooms.workers or dead:
        problem = f"{dead} of {len(rooms.workers)} media worker(s) not running"
        starting = rooms.replacing()
        if starting:
            problem += "; replacing " + ", ".join(
                f"worker {d.pid} (slot {d.slot}, died: {d.error}; attempt {d.attempts}"
                + (f", last failure: {d.last_error}" if d.last_error else "") + ")" for d in starting)
        problems.append(problem)
    problems.extend(rooms.fd_problems())
    try:
        request.app[STORE].active_calls()
    except Exception as exc:  # the database is gone or locked
        problems.append(f"call store: {exc}")
    if request.app[LIFECYCLE]["closing"]:
        problems.append("shutting down")
    calls = request.app[CALLS]
    body = {"ready": not problems, "workers": len(rooms.workers) - dead, "calls": len(calls.calls),
            "problems": problems}
    return web.json_response(body, status=200 if not problems else 503)


# ------------------------------------------------------------------ calls

def _caller(request: web.Request) -> Identity:
    return identity(request) or ANONYMOUS


def _check_call_grant(request: web.Request, call_id: Any) -> None:
    """A token with a room grant must name the call (or ``*``); calls accept
    tokens without a grant (their roles decide)."""
    ident = identity(request)
    if ident is None or ident.grant is None:
        return
    if not isinstance(call_id, str):  # a new call of a random id: only a grant of every room covers it
        if ident.grant.rooms is not None:
            raise AuthError(403, "token grants no access to a new call of a random id: give callId, "
                                 "a room the token's grant names")
        return
    check_room_grant(ident, call_id, call=True)


async def create_call(request: web.Request) -> web.Response:
    body = await _body(request)
    _check_call_grant(request, body.get("callId"))
    return web.json_response(await request.app[CALLS].create_call(_caller(request), body), status=201)


async def get_call(request: web.Request) -> web.Response:
    return web.json_response(request.app[CALLS].get(_caller(request), request.match_info["callId"]))


async def join_call(request: web.Request) -> web.Response:
    _check_call_grant(request, request.match_info["callId"])
    return web.json_response(
        await request.app[CALLS].join(_caller(request), request.match_info["callId"], await _body(request)),
        status=201)


async def leave_call(request: web.Request) -> web.Response:
    data = await _body(request)
    pid = data.get("participantId")
    if pid is not None and not isinstance(pid, str):
        raise ApiError(400, "participantId: must be a string")
    await request.app[CALLS].leave(_caller(request), request.match_info["callId"], pid)
    return web.json_response({"left": True})


async def end_call(request: web.Request) -> web.Response:
    await request.app[CALLS].end(_caller(request), request.match_info["callId"])
    return web.json_response({"ended": True})


STATIC = Path(__file__).resolve().parent / "static"


async def demo_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def demo_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "demo.js", headers={"Content-Type": "text/javascript"})


async def call_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "call.html")


async def call_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "call.js", headers={"Content-Type": "text/javascript"})


async def socketio_client_script(request: web.Request) -> web.FileResponse:
    """socket.io-client's browser build (vendored, static/vendor/README.md)."""
    return web.FileResponse(STATIC / "vendor" / "socket.io.min.js", headers={"Content-Type": "text/javascript"})


LIFECYCLE = web.AppKey("lifecycle", dict)
CORS = web.AppKey("cors", CorsPolicy)

# ---------------------------------------------------------------- shutdown

#: Paths still served while the server drains: Socket.IO (the connections
#: being told the calls end; new ones are refused by the call service), the
#: probes (/readyz answers 503 itself) and the metrics.
DRAIN_EXEMPT_PREFIXES = ("/socket.io/", "/healthz", "/readyz", "/metrics")
SHUTDOWN_REASON = "server-shutdown"


@web.middleware
async def draining_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """While the server drains (:func:`drain`), new requests get ``503``
    (``Retry-After``, ``Connection: close``); otherwise counts the requests
    in flight (WebSockets and Socket.IO excepted) that :func:`drain` waits for."""
    life = request.app[LIFECYCLE]
    if life.get("draining") and not request.path.startswith(DRAIN_EXEMPT_PREFIXES):
        return web.json_response({"error": "server is shutting down"}, status=503,
                                 headers={"Retry-After": "5", "Connection": "close"})
    tracked = (not request.path.startswith("/socket.io/")
               and request.headers.get("Upgrade", "").lower() != "websocket")
    if not tracked:
        return await handler(request)
    life["inflight"] = life.get("inflight", 0) + 1
    try:
        return await handler(request)
    finally:
        life["inflight"] -= 1


async def drain(app: web.Application, reason: str = SHUTDOWN_REASON, timeout_s: float = 10.0) -> None:
    """Graceful shutdown, before the runner's cleanup (``sfu-server`` calls
    it on SIGTERM/SIGINT): new HTTP requests get 503 and new Socket.IO
    connections are refused; every call in progress ends with ``reason``
    (``call:ended`` to its participants, ended in the store); the room
    WebSockets get ``room-closed {roomId, reason}`` and close (1001); the
    requests in flight get up to ``timeout_s`` to finish; then the Socket.IO
    connections close once what was sent to them has gone out. Idempotent.
    (``on_shutdown`` alone, as in tests that stop the app, leaves the calls
    in progress: the next start ends them with ``server-restart``.)"""
    life = app[LIFECYCLE]
    if life.get("draining"):
        return
    life["draining"] = life["closing"] = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    logger.warning("draining (%s): new requests get 503", reason)
    calls = app[CALLS]
    await calls.end_all(reason, lock_timeout_s=max(0.1, min(5.0, timeout_s)))
    for room in list(app[ROOMS].rooms.values()):
        sockets = [ws for p in room.participants.values() for ws in p.sockets]
        if not sockets:
            continue
        await room.broadcast("room-closed", {"roomId": room.id, "reason": reason})
        for ws in sockets:
            try:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=reason.encode())
            except Exception as exc:  # already gone
                logger.debug("room %s: websocket: %s", room.id, exc)
    while life.get("inflight", 0) > 0 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if life.get("inflight", 0) > 0:
        logger.warning("%d request(s) still in flight after %.0f s", life["inflight"], timeout_s)
    await calls.disconnect_all(timeout_s=max(0.5, deadline - loop.time()))


def _protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES)


def create_app(
    rooms: RoomManager,
    *,
    auth: Optional[Authenticator] = None,
    limiter: Optional[RateLimiter] = None,
    metrics: Optional[Metrics] = None,
    store: Optional[CallStore] = None,
    disconnect_grace_s: float = 5.0,
    switch_timeout_s: float = 15.0,
    cors: Optional[CorsPolicy] = None,
    limits: Optional[Limits] = None,
    empty_room_grace_s: Optional[float] = None,
    call_sfu_standby: bool = True,
    recordings_dir: Optional[str] = None,
    recording_pattern: Optional[str] = None,
    record_publishers: bool = False,
    cluster: Optional["Cluster"] = None,
) -> web.Application:
    """The aiohttp application around an existing :class:`RoomManager`.

    ``auth``: tokens required on /api, /whip, /whep and Socket.IO (None: no
    authentication, see the module docstring). ``limiter``: rate limits on
    those paths (429 + Retry-After). ``metrics``: served at /metrics (a
    fresh :class:`Metrics` when None). ``store``: the durable call record (an
    in-memory SQLite store when None; calls left in progress by a previous
    run are ended at start-up). ``disconnect_grace_s``: how long a call
    participant may lose its Socket.IO connection before it is made to leave.
    ``cors``: the other origins whose pages may use the API (None: none).
    ``recordings_dir``: where recordings are written (None: no recording
    routes); ``recording_pattern``: their file names (see
    :class:`signaling.recording.RecordingService`); ``record_publishers``:
    record every participant when it starts publishing.
    ``cluster``: this node's :class:`signaling.cluster.Cluster` (started by
    the caller): requests for rooms another node holds are forwarded there,
    new rooms are placed on the least-loaded node (None: a single node).
    ``call_sfu_standby``: a P2P call of two keeps an SFU room ready, its
    participants connected to it with their senders off (the switch to the
    SFU then only turns them on).
    ``limits``: the admission limits (None: those of ``rooms``, by default
    :class:`~signaling.rooms.Limits`' defaults); given, they replace
    ``rooms.limits``. ``limits.request_body_bytes`` is the app's
    ``client_max_size``. ``empty_room_grace_s``: seconds an empty room stays
    open before its router is closed (None: that of ``rooms``, 30 s by
    default; 0: empty rooms stay open). Room grants: ``auth.config.require_grants``
    (see :func:`check_grant`).
    """
    if limits is not None:
        rooms.limits = limits
    if empty_room_grace_s is not None:
        if empty_room_grace_s < 0:
            raise ValueError("empty_room_grace_s: must be >= 0 (0 keeps empty rooms open)")
        rooms.empty_room_grace_s = empty_room_grace_s
    limits = rooms.limits
    metrics = metrics if metrics is not None else Metrics()
    metrics.bind_rooms(rooms)
    cors = cors if cors is not None else CorsPolicy()
    middlewares: list[Any] = [metrics_middleware(metrics), cors_middleware(cors), draining_middleware]
    if auth is not None:
        middlewares.append(auth_middleware(auth, exempt=lambda path: not _protected(path),
                                           on_failure=lambda exc, req: metrics.auth_failures.inc()))
    if limiter is not None:
        middlewares.append(rate_limit_middleware(
            limiter, applies=_protected, on_limited=lambda req, wait: metrics.rate_limited.inc(),
            exempt=cluster.forwarded_by_node if cluster is not None else (lambda req: False)))
    middlewares.append(errors_middleware)
    middlewares.append(admission_middleware)
    if cluster is not None:
        from .cluster import CLUSTER, cluster_middleware

        middlewares.append(cluster_middleware(cluster))
    app = web.Application(middlewares=middlewares, client_max_size=limits.request_body_bytes)
    if cluster is not None:
        app[CLUSTER] = cluster

        def release_closed_room(room: Room, event: str, data: dict[str, Any]) -> None:
            if event == "room-closed":
                asyncio.ensure_future(cluster.release(room.id))

        rooms.on_room_event.append(release_closed_room)
        cluster.is_open = lambda room_id: room_id in rooms.rooms or room_id in app[CALLS].calls
    app[ROOMS] = rooms
    app[METRICS] = metrics
    app[CORS] = cors
    own_store = store is None
    store = store if store is not None else CallStore(":memory:")
    app[STORE] = store
    if auth is not None:
        app[AUTH] = auth
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False,
                               cors_allowed_origins=_socketio_origins(cors), cors_credentials=False)
    sio.attach(app)
    app[SIO] = sio
    calls = CallService(rooms, store, sio, auth=auth, metrics=metrics, disconnect_grace_s=disconnect_grace_s,
                        switch_timeout_s=switch_timeout_s, sfu_standby=call_sfu_standby)
    app[CALLS] = calls
    if recordings_dir is not None:
        from .recording import RecordingService, add_routes as add_recording_routes

        kw = {"pattern": recording_pattern} if recording_pattern else {}

        def call_users(room_id: str) -> Optional[list[str]]:
            """A call's creator and proctors (who may see its recordings)."""
            if not calls.owns_room(room_id):
                return None
            call = calls.calls[room_id]
            users = {m.user_id for m in call.members.values() if m.role != "publisher"}
            return sorted(users | ({call.created_by} if call.created_by else set()))

        add_recording_routes(app, RecordingService(rooms, recordings_dir, record_publishers=record_publishers,
                                                   metrics=app.get(METRICS), call_users=call_users, **kw))
    elif record_publishers:
        raise ValueError("record_publishers needs recordings_dir")
    app[LIFECYCLE] = {"closing": False, "draining": False, "inflight": 0}
    calls.recover()

    async def on_shutdown(app: web.Application) -> None:
        app[LIFECYCLE]["closing"] = True
        await calls.close()
        if own_store:
            store.close()

    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/", demo_page)
    r.add_get("/demo.js", demo_script)
    r.add_get("/call", call_page)
    r.add_get("/call.js", call_script)
    r.add_get("/vendor/socket.io.min.js", socketio_client_script)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics_handler)
    r.add_post("/api/calls", create_call)
    r.add_get("/api/calls/{callId}", get_call)
    r.add_post("/api/calls/{callId}/participants", join_call)
    r.add_post("/api/calls/{callId}/leave", leave_call)
    r.add_post("/api/calls/{callId}/end", end_call)
    r.add_post("/api/rooms/{roomId}/create", create_room)
    r.add_post("/api/rooms/{roomId}/participants", join)
    r.add_get("/api/rooms/{roomId}/producers", list_producers)
    r.add_post("/api/rooms/{roomId}/transports", create_transport)
    r.add_post("/api/rooms/{roomId}/transports/{transportId}/connect", connect_transport)
    r.add_post("/api/rooms/{roomId}/transports/{transportId}/produce", produce)
    r.add_post("/api/rooms/{roomId}/consume", consume)
    r.add_post("/api/rooms/{roomId}/consumers/{consumerId}/{action:resume|pause}", consumer_action)
    r.add_post("/api/rooms/{roomId}/consumers/{consumerId}/preferred-layers", consumer_preferred_layers)
    r.add_post("/api/rooms/{roomId}/consumers/{consumerId}/priority", consumer_priority)
    r.add_get("/api/rooms/{roomId}/consumers/{consumerId}/stats", consumer_stats)
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
    keyframe_request_interval_ms: int | None = None,
    limits: Limits | None = None,
    consumers_per_worker: int = 0,
) -> RoomManager:
    """Starts the workers (and, with ``rtc_port``, one shared WebRTC port per
    worker: rtc_port, rtc_port+1, ...). ``keyframe_request_interval_ms``:
    the workers' PLI coalescing interval (None: the worker default). A worker
    that dies is replaced with the same settings, its port included (see
    :class:`~signaling.rooms.RoomManager`). ``limits``: the admission limits
    (None: :class:`~signaling.rooms.Limits`' defaults). ``consumers_per_worker``:
    the consumer budget of a worker, past which a room's new participants go
    to a router of the room on another worker (0: rooms stay on one worker).

    The open-files soft limit is first raised to the hard limit (the workers
    inherit it); the descriptor budget is logged."""
    before, soft, hard = raise_fd_limit()
    options: dict[str, Any] = {"log_level": log_level, "rtc_min_port": rtc_min_port, "rtc_max_port": rtc_max_port}
    if keyframe_request_interval_ms is not None:
        options["keyframe_request_interval_ms"] = keyframe_request_interval_ms
    settings = WorkerSettings(listen_ip=listen_ip, announced_ip=announced_ip, rtc_port=rtc_port,
                              announced_rtc_port=announced_rtc_port, worker_options=options)
    started: list[sfu.Worker] = []
    servers: dict[int, sfu.WebRtcServer] = {}
    try:
        for i in range(workers):
            w, server = await settings.start(i)
            started.append(w)
            if server is not None:
                servers[w.pid] = server
    except BaseException:
        for w in started:
            w.close()
        raise
    manager = RoomManager(started, servers, listen_ip, announced_ip, settings=settings, limits=limits,
                          consumers_per_worker=consumers_per_worker)
    _log_fd_budget(manager, before, soft, hard)
    return manager


def _log_fd_budget(manager: RoomManager, before: int, soft: int, hard: int) -> None:
    raised = f" (raised from {before})" if soft != before else ""
    usage = fd_usage()
    logger.info("open-files limit %d%s, hard limit %s; this process uses %s", soft, raised,
                "unlimited" if hard == -1 else hard, usage[0] if usage else "?")
    for state in manager.fd_state():
        if state["process"] != "worker":
            continue
        if state["fdsPerTransport"]:
            logger.info("media worker %d: %d of %d descriptors free: about %d transports (1 each, a UDP port "
                        "per transport; %d kept in reserve)", state["pid"], state["free"], state["limit"],
                        state["transportsLeft"], manager.limits.fd_reserve)
        else:
            logger.info("media worker %d: %d of %d descriptors free; transports share its WebRTC port",
                        state["pid"], state["free"], state["limit"])
        if state["low"] or (state["transportsLeft"] is not None and state["transportsLeft"] < 100):
            logger.warning("media worker %d has few file descriptors left (%d of %d): raise its hard limit "
                           "(ulimit -Hn, LimitNOFILE=) or use a shared port (--rtc-port)", state["pid"],
                           state["free"], state["limit"])
