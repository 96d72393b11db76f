"""WHIP (RFC 9725) publish and WHEP subscribe: SDP offer in, SDP answer out.

    POST   /whip/{roomId}              application/sdp offer -> 201 answer, Location: /whip/{roomId}/{session}
    PATCH  /whip/{roomId}/{session}    application/trickle-ice-sdpfrag: ICE restart (new
                                       ice-ufrag/ice-pwd -> 200 with the SFU's new ones), or
                                       trickled candidates (204; ignored: the SFU is ICE-lite)
    DELETE /whip/{roomId}/{session}    ends the session (its producers close)
    POST   /whep/{roomId}[?participant=ID]  recvonly offer -> 201 answer with the room's newest
                                            audio/video producers (or those of participant ID)
    DELETE /whep/{roomId}/{session}

The SFU answers as an ICE-lite agent and DTLS server (a=setup:passive) with
its candidate in the answer, so no trickle ICE is needed. A session is a
hidden participant of the room; its URL carries the participant's secret
token, so only the client that made it can end it.

When the server authenticates, the POSTs need a JWT (``Authorization:
Bearer``). A call's SFU room (its id is the call id) also needs
``?as=<participantId>``, one of the caller's participants of that call: a WHIP
session then publishes as that participant (``?participant=`` of WHEP names
call participants), and the call's roles decide who may publish and view
whom (403 otherwise). A call in P2P mode has no room (409).

Room grants (the token's ``video`` claim, see :mod:`signaling.auth`): WHIP
needs the room and ``canPublish``, WHEP the room and ``canSubscribe``, DELETE
the room; refusals are 403 naming the missing grant.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from urllib.parse import quote
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from aiohttp import web

import sfu

from .cluster import CLUSTER, EDGE_OWNER
from .edge import EDGE
from .rooms import ApiError, Participant, Room
from .sdp import (
    SdpError,
    answer_setup,
    build_answer,
    candidate_line,
    offer_to_consumer_capabilities,
    parse_offer,
    whip_media_answers,
)
from .server import CALLS, ROOMS, check_grant, identity

logger = logging.getLogger("sfu.signaling.whip")

SDP = "application/sdp"


async def _read_offer(request: web.Request) -> Any:
    if request.content_type != SDP:
        raise ApiError(415, f"Content-Type: must be {SDP}, got {request.content_type or 'none'}")
    body = await request.read()
    try:
        text = body.decode("utf-8")  # RFC 8866 §5: SDP is UTF-8, whatever charset the header claims
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"SDP offer: not UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start})") from None
    return parse_offer(text)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _sdp_errors_are_400(handler: Handler) -> Handler:
    """Any :class:`SdpError` of the handler (parsing, mapping, answering) is the
    client's offer at fault: a 400 naming the problem, never a 500."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except SdpError as exc:
            raise ApiError(400, f"SDP offer: {exc}") from None

    return wrapped


def _dtls_for_offer(offer: Any) -> dict[str, Any]:
    """Our answer's setup decides the remote's DTLS role."""
    ours = answer_setup(offer.setup)
    return {"role": "client" if ours == "passive" else "server", "fingerprints": offer.fingerprints}


def _answer(request: web.Request, kind: str, room: Room, p: Participant, sdp: str,
            consumers: Optional[list[tuple[str, str]]] = None) -> web.Response:
    location = f"/{kind}/{quote(room.id, safe='')}/{p.token}"
    p.ice_etag = secrets.token_hex(8)
    headers = {"Location": location, "X-Sfu-Participant-Id": p.id, "ETag": f'"{p.ice_etag}"'}
    if consumers:
        # which consumer serves each m-section (mid): for the REST stats and
        # layer routes, with the session's token
        headers["X-Sfu-Consumers"] = ",".join(f"{mid}={cid}" for mid, cid in consumers)
    return web.Response(status=201, text=sdp, content_type=SDP, headers=headers)


def _call_room(request: web.Request) -> bool:
    calls = request.app.get(CALLS)
    return calls is not None and calls.owns_room(request.match_info["roomId"])


@_sdp_errors_are_400
async def whip_publish(request: web.Request) -> web.Response:
    room_id = request.match_info["roomId"]
    check_grant(request, room_id, publish=True)  # 403 "token may not publish" / "... no access to room"
    offer = await _read_offer(request)
    # on the parsed offer, whatever its line ends: nothing is created before
    request.app[ROOMS].limits.check_offer_sections("whip", len(offer.media))
    ident = identity(request)
    created = False
    if _call_room(request):
        room, p, fresh = request.app[CALLS].publisher_session(ident, room_id, request.query.get("as"))
    else:
        room, created = await request.app[ROOMS].create_room(room_id)
        p, fresh = None, True
    problems: list[str] = []
    answers = whip_media_answers(offer, room.router.rtp_capabilities, problems)
    if not any(answers):
        if created and not room.participants:
            request.app[ROOMS].close_room(room_id)  # a refused offer leaves no router behind
        raise ApiError(400, "SDP offer: no sending audio/video section with a codec the SFU supports "
                            "(opus, VP8, VP9, H264 constrained baseline)"
                            + (f": {'; '.join(problems)}" if problems else ""))
    if p is None:
        try:
            p = room.join(owner=ident.user_id if ident else None)
        except ApiError:
            if created and not room.participants:
                request.app[ROOMS].close_room(room_id)
            raise
    t = None
    try:
        t = await room.create_transport(p, "send")
        for section, answer in zip(offer.media, answers):
            if answer is not None:
                await room.produce(p, t.id, section.kind, answer["rtp_parameters"])
        await t.connect(_dtls_for_offer(offer))
        p.remote_ice_ufrag = offer.ice_ufrag
        sdp = build_answer(offer, t, answers)
    except Exception:
        if fresh:
            await room.leave(p)
        elif t is not None:
            t.close()
        raise
    return _answer(request, "whip", room, p, sdp)


def _pick_producer(room: Room, kind: str, participant_id: Optional[str],
                   viewer: Participant) -> tuple[Optional[sfu.Producer], Optional[str]]:
    """The newest producer of `kind` (of `participant_id` if given) and its participant's id."""
    newest: Optional[sfu.Producer] = None
    owner: Optional[str] = None
    for p in room.participants.values():
        if p.id == viewer.id or (participant_id and p.id != participant_id):
            continue
        if viewer.member is not None and p.member == viewer.member:
            continue  # a call participant's own media
        for prod in p.producers.values():
            if prod.kind == kind and not prod.closed:
                newest, owner = prod, p.id  # dicts keep insertion order: the last one is the newest
    return newest, owner


@_sdp_errors_are_400
async def whep_view(request: web.Request) -> web.Response:
    check_grant(request, request.match_info["roomId"], subscribe=True)
    offer = await _read_offer(request)
    request.app[ROOMS].limits.check_offer_sections("whep", len(offer.media))
    ident = identity(request)
    wanted = request.query.get("participant")
    edge_owner = request.get(EDGE_OWNER)
    if edge_owner is not None:
        # the room is held by another node: viewed here through a pipe from it (signaling/edge.py)
        try:
            room = await request.app[EDGE].prepare(request.match_info["roomId"], edge_owner)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return await request.app[CLUSTER].proxy(request, edge_owner)  # a call's room: its node answers
        p = room.join(owner=ident.user_id if ident else None)
    elif _call_room(request):
        room, p = request.app[CALLS].viewer_session(ident, request.match_info["roomId"], request.query.get("as"))
    else:
        room = request.app[ROOMS].room(request.match_info["roomId"])
        p = room.join(owner=ident.user_id if ident else None)
    try:
        t = await room.create_transport(p, "recv")
        answers: list[Optional[dict[str, Any]]] = []
        consumers: list[sfu.Consumer] = []
        for section in offer.media:
            producer, owner = None, None
            # section.rejected is False for bundle-only sections (RFC 8843): they are viewed too
            if not section.rejected and section.mid is not None and section.kind in ("audio", "video") \
                    and section.direction in ("recvonly", "sendrecv"):
                producer, owner = _pick_producer(room, section.kind, wanted, p)
            if producer is None:
                answers.append(None)
                continue
            caps = offer_to_consumer_capabilities(section)
            try:
                # the forwarded RTP carries the viewer's own mid (issue #9): the engine writes it
                # per consumer; a mid longer than 16 bytes cannot be sent in RTP (a 400 naming it).
                # Not paused: the engine starts each video consumer at a keyframe it asks for
                # once the viewer's DTLS is done (sfu/_fastpath/src/keyframe_policy.h).
                consumer = await room.consume(p, t.id, producer.id, caps, mid=section.mid, paused=False)
            except sfu.UnsupportedError:
                answers.append(None)
                continue
            consumers.append(consumer)
            # one stream id per publisher: the viewer puts a publisher's audio and video into one
            # MediaStream, and Chromium synchronizes (lip sync) only the receivers of one stream
            answers.append({"direction": "sendonly", "rtp_parameters": consumer.rtp_parameters,
                            "msid": f"sfu-{owner} {section.kind}-{section.mid}"})
        if not consumers:
            raise ApiError(404 if not any(pp.producers for pp in room.participants.values()) else 400,
                           "nothing to view: no producer in this room matches the offer's recvonly sections")
        await t.connect(_dtls_for_offer(offer))
        p.remote_ice_ufrag = offer.ice_ufrag
        sdp = build_answer(offer, t, answers)
    except Exception:
        await room.leave(p)
        raise
    return _answer(request, "whep", room, p, sdp,
                   [(str(c.rtp_parameters.get("mid")), c.id) for c in consumers])


def _session(request: web.Request) -> tuple[Room, Participant]:
    """The room and participant of the session URL (grant checked first)."""
    check_grant(request, request.match_info["roomId"])
    room = request.app[ROOMS].room(request.match_info["roomId"])
    try:
        return room, room.participant_by_token(request.match_info["session"])
    except ApiError as exc:
        if exc.status != 401:
            raise
        # RFC 9725: an unknown session (ended, or lost with its media worker) is 404
        raise ApiError(404, f"session not found in room {room.id} (ended, or lost with its media worker)") from None


async def end_session(request: web.Request) -> web.Response:
    room, p = _session(request)
    await room.leave(p)
    return web.Response(status=200)


SDPFRAG = "application/trickle-ice-sdpfrag"
_FRAG_ATTR = re.compile(r"^a=(ice-ufrag|ice-pwd):(\S{1,256})\s*$", re.M)
_MAX_FRAG = 64 * 1024


async def patch_session(request: web.Request) -> web.Response:
    """RFC 9725 §4.3: a PATCH of a session with an SDP fragment (RFC 8840).
    New ICE credentials are an ICE restart: the SFU restarts the session's
    ICE and answers 200 with its own new credentials and candidate (and a
    new ETag); the client's checks from wherever it now is then select the
    new path. A fragment with only candidates gets 204: the SFU is ICE-lite
    and learns the client's addresses from its checks."""
    room, p = _session(request)
    if request.content_type != SDPFRAG:
        raise ApiError(415, f"Content-Type: must be {SDPFRAG}, got {request.content_type or 'none'}")
    match = request.headers.get("If-Match")
    if match is None:
        raise ApiError(428, "If-Match: required (the session's ETag, or * for an ICE restart)")
    body = await request.content.read(_MAX_FRAG + 1)
    if len(body) > _MAX_FRAG:
        raise ApiError(413, f"the SDP fragment is over {_MAX_FRAG} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the SDP fragment is not UTF-8") from None
    attrs = {name: value for name, value in _FRAG_ATTR.findall(text)}
    ufrag, pwd = attrs.get("ice-ufrag"), attrs.get("ice-pwd")
    restart = ufrag is not None and ufrag != p.remote_ice_ufrag
    if match.strip() != "*" and match.strip() != f'"{p.ice_etag}"':
        raise ApiError(412, "If-Match: not the session's current ETag")
    transports = [t for t in p.transports.values() if not t.closed]
    if not transports:
        raise ApiError(404, f"session has no transport in room {room.id}")
    if not restart:
        return web.Response(status=204, headers={"ETag": f'"{p.ice_etag}"'})
    if pwd is None:
        raise ApiError(400, "an ICE restart needs a=ice-ufrag and a=ice-pwd")
    t = transports[0]
    try:
        ice = await t.restart_ice()
    except sfu.SfuError as exc:
        raise ApiError(409, f"ICE restart failed: {exc}") from None
    p.remote_ice_ufrag = ufrag
    p.ice_etag = secrets.token_hex(8)
    lines = [f"a=ice-ufrag:{ice['usernameFragment']}", f"a=ice-pwd:{ice['password']}"]
    lines += [candidate_line(c) for c in t.ice_candidates]
    lines.append("a=end-of-candidates")
    logger.info("room %s: session %s restarted ICE", room.id, p.id)
    return web.Response(status=200, body=("\r\n".join(lines) + "\r\n").encode(),
                        headers={"Content-Type": SDPFRAG, "ETag": f'"{p.ice_etag}"'})


async def options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        "Accept-Post": SDP,
    })


def add_routes(app: web.Application) -> None:
    r = app.router
    for kind, handler in (("whip", whip_publish), ("whep", whep_view)):
        r.add_post(f"/{kind}/{{roomId}}", handler)
        r.add_route("OPTIONS", f"/{kind}/{{roomId}}", options)
        r.add_delete(f"/{kind}/{{roomId}}/{{session}}", end_session)
        r.add_patch(f"/{kind}/{{roomId}}/{{session}}", patch_session)
