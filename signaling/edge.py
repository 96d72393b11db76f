"""WHEP viewers served by an edge node (``sfu-server --edge-viewers``, issue 15).

In a cluster (:mod:`signaling.cluster`) a room is held by one node, its
*owner*. With ``--edge-viewers``, a WHEP offer reaching another node is not
forwarded: that node becomes an *edge* of the room. It makes a local room
(viewers only; its publishers are the owner's, seen through a pipe), joins
its router to the owner's room router with a pair of
:class:`~sfu.pipe_transport.PipeTransport` (SRTP over UDP between the
nodes' listen IPs, keys exchanged in the signed requests; one pair per room
and edge, reused by every viewer), and
for each producer of the owner's room the owner consumes it on its end (a
:class:`~sfu.pipe_transport.PipeConsumer`) and the edge produces it with the
same id on its end. The viewer is then answered by the edge: media goes
owner -> edge -> viewer in the engines; keyframe requests go back over the
pipe's RTCP.

Node-to-node control is an internal HTTP API (``/_cluster/...``) whose
requests carry ``X-Sfu-Cluster-Auth: <unix time>:<hex HMAC-SHA256>`` of the
time, method, path and body, keyed with the cluster's shared secret (the
HS256 JWT secret); others are refused with 403.

    POST /_cluster/rooms/{rid}/pipe                           (owner) make its pipe end, connect it to the edge's
    POST /_cluster/rooms/{rid}/pipes/{pipeId}/consume         (owner) pipe the producers the edge lacks
    POST /_cluster/rooms/{rid}/pipes/{pipeId}/producer-closed (edge)  a piped producer closed on the owner
    POST /_cluster/rooms/{rid}/pipes/{pipeId}/closed          (either) the other end of the pipe closed
    GET  /_cluster/state                                      this node's pipes (owner and edge side)
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import aiohttp
from aiohttp import web

import sfu
from sfu.pipe_transport import PipeConsumer, PipeTransport

from .cluster import AUTH_HEADER, EDGE_OWNER, Cluster, NodeInfo, sign, verify
from .rooms import ApiError, Participant, Room, RoomManager

logger = logging.getLogger("sfu.signaling.edge")

@dataclass
class OwnerPipe:
    """The owner's end of a pipe to an edge."""

    room: Room
    transport: PipeTransport
    edge_node: str
    edge_url: str
    consumers: dict[str, PipeConsumer] = field(default_factory=dict)  # producer id ->
    #: producers of the edge's own participants, piped here (--edge-rooms)
    inbound: dict[str, sfu.Producer] = field(default_factory=dict)  # producer id ->


@dataclass
class EdgeLink:
    """The edge's end of its pipe to the owner of a room."""

    room: Room
    owner: NodeInfo
    pipe_id: str  # the owner's pipe transport id
    transport: PipeTransport
    producers: dict[str, sfu.Producer] = field(default_factory=dict)  # the owner's, piped here
    #: producers of this edge's own participants, piped to the owner (--edge-rooms)
    pushed: dict[str, PipeConsumer] = field(default_factory=dict)  # producer id ->


class EdgeViewers:
    """Both roles of a node: owner (pipes its rooms' producers to edges) and
    edge (views rooms of other nodes through a pipe)."""

    def __init__(self, cluster: Cluster, rooms: RoomManager, secret: str, listen_ip: str) -> None:
        if not secret:
            raise ValueError("--edge-viewers needs the cluster's shared secret (SFU_JWT_SECRET, HS256)")
        self.cluster = cluster
        self.rooms = rooms
        self.secret = secret.encode()
        self.listen_ip = listen_ip
        self.pipes: dict[str, OwnerPipe] = {}  # owner side, by pipe transport id
        self.links: dict[str, EdgeLink] = {}  # edge side, by room id
        self.pipes_made = 0  # edge side: pipe pairs set up
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: Optional[aiohttp.ClientSession] = None
        self._hooked: "weakref.WeakSet[Room]" = weakref.WeakSet()  # rooms whose producers reach the pipes

    # ------------------------------------------------------------ client

    async def _call(self, base: str, method: str, path: str, data: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        body = json.dumps(data).encode()
        headers = {AUTH_HEADER: sign(self.secret, method, path, body), "Content-Type": "application/json"}
        try:
            async with self._http.request(method, base + path, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise ApiError(502 if resp.status >= 500 else resp.status,
                                   f"node at {base}: {method} {path}: {resp.status} {text[:300]}")
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ApiError(503, f"node at {base} does not answer ({type(exc).__name__}); retry shortly") from None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -------------------------------------------------------------- edge

    def serves(self, request: web.Request, room_id: str) -> bool:
        """Whether this node answers ``request`` (for a room held by another
        node) as the room's edge: WHEP offers (not a call's: ``?as=``), and
        the sessions of its edge rooms."""
        if not request.path.startswith("/whep/") or "as" in request.query:
            return False
        resource = request.match_info.route.resource
        if request.method == "POST" and resource is not None and resource.canonical == "/whep/{roomId}":
            return True
        # a session of a viewer here: a room of this id open on this node while another node
        # holds it can only be an edge room (its pipe may have closed already)
        room = self.rooms.rooms.get(room_id)
        return room is not None and not room.router.closed

    def serves_rooms(self, request: web.Request, room_id: str) -> bool:
        """``--edge-rooms``: whether this node answers ``request`` (for a room
        held by another node) in its own edge room of it: the room API, WHIP
        and WHEP (not a call's sessions, ``?as=``, nor recordings, which are
        the owner's)."""
        if "as" in request.query or "/recordings" in request.path:
            return False
        return request.path.startswith(("/whip/", "/whep/", "/api/rooms/"))

    async def prepare(self, room_id: str, owner: NodeInfo, sync: bool = True) -> Room:
        """The local edge room of ``room_id`` (held by ``owner``), its pipe
        made once; with ``sync``, every producer of the owner's room is piped
        here (without, each comes when a consumer asks for it, or when the
        owner tells of it)."""
        async with self._lock(room_id):
            room, _ = await self.rooms.create_room(room_id)
            link = self.links.get(room_id)
            fresh = link is None or link.room is not room or link.transport.closed or link.owner.id != owner.id
            if fresh:
                if link is not None:
                    link.transport.close()
                link = await self._connect(room, owner)
                self.links[room_id] = link
            if sync or fresh:
                await self._sync(link)
            return room

    def owned_here(self, room_id: str) -> None:
        """This node holds ``room_id`` now (its node died and the room was
        placed here): the edge room goes on as the room, its pipe to the old
        node closes (the producers that came through it close with it)."""
        link = self.links.pop(room_id, None)
        if link is not None:
            logger.info("room %s: held here now; pipe to node %s closed", room_id, link.owner.id)
            link.transport.close()

    def _lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    async def _pull(self, room: Room, producer_id: str) -> bool:
        """An edge room's consumer wants a producer it does not know: pipes
        here what the owner has (True if that includes it)."""
        link = self.links.get(room.id)
        if link is None or link.room is not room or link.transport.closed:
            return False
        async with self._lock(room.id):
            await self._sync(link)
        return producer_id in link.producers

    async def _push(self, p: Participant, prod: sfu.Producer) -> None:
        """An edge room's own participant made a producer: it is piped to the
        room's node, which adds it to the room (and tells its other edges)."""
        link = next((lk for lk in self.links.values() if lk.room.participants.get(p.id) is p), None)
        if link is None or link.transport.closed or prod.id in link.producers or prod.id in link.pushed:
            return
        router = link.transport.router
        if router.get_producer(prod.id) is None:  # the participant is on another worker's router of the room
            await link.room._pipe(prod.transport.router, prod.id, router)
        consumer = await link.transport.consume(prod.id)
        link.pushed[prod.id] = consumer
        path = f"/_cluster/rooms/{link.room.id}/pipes/{link.pipe_id}"

        def gone() -> None:
            if link.pushed.pop(prod.id, None) is not None and not link.transport.closed:
                self._tell(link.owner.url, f"{path}/producer-closed", {"producerId": prod.id},
                           f"room {link.room.id}: owner {link.owner.id} not told producer {prod.id} closed")

        consumer.observer.once("close", gone)
        await self._call(link.owner.url, "POST", f"{path}/produce", {
            "producerId": prod.id, "participantId": p.id, "kind": consumer.kind,
            "rtpParameters": consumer.rtp_parameters})

    def _adopt(self, room: Room, participant_id: str, prod: sfu.Producer, forget: Callable[[], None]) -> None:
        """A producer piped in from another node joins ``room`` as a
        producer of ``participant_id`` (a participant here with producers
        only); the room's clients hear of it (new-producer), and of its end."""
        p = room.participants.get(participant_id)
        if p is None:
            p = Participant(id=participant_id, token=secrets.token_urlsafe(24))
            room.participants[participant_id] = p
        p.producers[prod.id] = prod

        def closed() -> None:
            forget()
            p.producers.pop(prod.id, None)
            if not room.router.closed:
                asyncio.ensure_future(room.broadcast("producer-closed", {"participantId": p.id,
                                                                          "producerId": prod.id}))
            if not p.producers and not p.transports and room.participants.get(p.id) is p:
                del room.participants[p.id]
                if not room.participants:
                    room.schedule_empty_close()

        prod.observer.once("close", closed)
        asyncio.ensure_future(room.broadcast("new-producer", {"participantId": p.id, "producerId": prod.id,
                                                              "kind": prod.kind}, exclude=p.id))

    async def _connect(self, room: Room, owner: NodeInfo) -> EdgeLink:
        t = await room.router.create_pipe_transport(listen_ip=self.listen_ip, enable_srtp=True)
        try:
            answer = await self._call(owner.url, "POST", f"/_cluster/rooms/{room.id}/pipe", {
                "edgeNode": self.cluster.node_id, "edgeUrl": self.cluster.node_url,
                "ip": t.tuple["localIp"], "port": t.tuple["localPort"], "srtp": t.srtp_parameters})
            await t.connect(ip=answer["ip"], port=int(answer["port"]), srtp_parameters=answer["srtp"])
        except BaseException:
            t.close()
            raise
        self.pipes_made += 1
        pipe_id = str(answer["pipeId"])

        def closed() -> None:  # the edge room closed (or the owner told us): the owner's end closes too
            link = self.links.get(room.id)
            if link is not None and link.transport is t:
                del self.links[room.id]
                self._tell(owner.url, f"/_cluster/rooms/{room.id}/pipes/{pipe_id}/closed", {},
                           f"room {room.id}: owner {owner.id} not told pipe {pipe_id} closed")

        t.observer.once("close", closed)
        if room not in self._hooked:
            self._hooked.add(room)
            room.producer_hooks.append(self._push)
            room.missing_producer = lambda producer_id: self._pull(room, producer_id)
        logger.info("room %s: edge of node %s, pipe %s:%s <-> %s:%s", room.id, owner.id, t.tuple["localIp"],
                    t.tuple["localPort"], answer["ip"], answer["port"])
        return EdgeLink(room, owner, pipe_id, t)

    async def _sync(self, link: EdgeLink) -> None:
        """Pipes here the owner's producers this edge lacks."""
        have = [pid for pid, prod in link.producers.items() if not prod.closed] + list(link.pushed)
        answer = await self._call(link.owner.url, "POST",
                                  f"/_cluster/rooms/{link.room.id}/pipes/{link.pipe_id}/consume", {"have": have})
        for item in answer.get("producers", []):
            pid, owner_id = str(item["producerId"]), str(item["participantId"])
            if pid in link.producers and not link.producers[pid].closed:
                continue
            # never paused here: pause/resume is not mirrored, the pipe consumer on the owner simply
            # sends nothing while the producer is paused
            prod = await link.transport.produce(item["kind"], item["rtpParameters"], paused=False,
                                                producer_id=pid, app_data={"participantId": owner_id})
            link.producers[pid] = prod
            # the owner's publisher, as a participant of the edge room that only has producers
            self._adopt(link.room, owner_id, prod, lambda pid=pid: link.producers.pop(pid, None))

    # ------------------------------------------------------------ routes

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        if not verify(self.secret, request.headers.get(AUTH_HEADER), request.method, request.path, body):
            raise ApiError(403, f"{request.path}: internal cluster API; the request is not signed by a node "
                                f"of this cluster ({AUTH_HEADER})")
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            raise ApiError(400, "body: not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body: a JSON object")
        return data

    async def open_pipe(self, request: web.Request) -> web.Response:
        """Owner: makes its pipe end for an edge, connected to the edge's."""
        data = await self._body(request)
        room = self.rooms.room(request.match_info["rid"])
        if not isinstance(data.get("ip"), str) or not isinstance(data.get("port"), int) \
                or not isinstance(data.get("srtp"), dict):
            raise ApiError(400, "ip, port, srtp: the edge's pipe tuple and SRTP parameters")
        t = await room.router.create_pipe_transport(listen_ip=self.listen_ip, enable_srtp=True)
        try:
            await t.connect(ip=data["ip"], port=data["port"], srtp_parameters=data["srtp"])
        except BaseException:
            t.close()
            raise
        pipe = OwnerPipe(room, t, str(data.get("edgeNode", "?")), str(data.get("edgeUrl", "")))
        self.pipes[t.id] = pipe

        def closed() -> None:  # the room closed here (or the edge asked): the edge's end closes too
            if self.pipes.pop(t.id, None) is not None and pipe.edge_url:
                self._tell(pipe.edge_url, f"/_cluster/rooms/{room.id}/pipes/{t.id}/closed", {},
                           f"room {room.id}: edge {pipe.edge_node} not told pipe {t.id} closed")

        t.observer.once("close", closed)
        if room not in self._hooked:  # its new producers: the edges hear of them
            self._hooked.add(room)
            room.producer_hooks.append(self._tell_edges)
        logger.info("room %s: pipe %s to edge %s", room.id, t.id, pipe.edge_node)
        return web.json_response({"pipeId": t.id, "ip": t.tuple["localIp"], "port": t.tuple["localPort"],
                                  "srtp": t.srtp_parameters})

    async def consume(self, request: web.Request) -> web.Response:
        """Owner: consumes on the pipe every producer of the room the edge
        does not have yet; answers their RTP parameters."""
        data = await self._body(request)
        pipe = self.pipes.get(request.match_info["pipeId"])
        if pipe is None or pipe.transport.closed or pipe.room.id != request.match_info["rid"]:
            raise ApiError(404, f"pipe {request.match_info['pipeId']} not found in room {request.match_info['rid']}")
        have = set(data.get("have") or [])
        room = pipe.room
        out = []
        for origin, prod in room._room_producers():
            if prod.id in have or prod.id in pipe.inbound or \
                    (prod.id in pipe.consumers and not pipe.consumers[prod.id].closed):
                continue
            if room.router.get_producer(prod.id) is None:  # on another worker's router of the room
                await room._pipe(origin, prod.id, room.router)
            consumer = await pipe.transport.consume(prod.id)
            pipe.consumers[prod.id] = consumer
            consumer.observer.once("close", lambda pid=prod.id: self._consumer_closed(pipe, pid))
            owner = room.producer_owner(prod.id)
            out.append({"producerId": prod.id, "participantId": owner.id if owner else "unknown",
                        "kind": consumer.kind, "rtpParameters": consumer.rtp_parameters, "paused": prod.paused})
        return web.json_response({"producers": out})

    def _consumer_closed(self, pipe: OwnerPipe, producer_id: str) -> None:
        pipe.consumers.pop(producer_id, None)
        if pipe.transport.closed or not pipe.edge_url:
            return
        self._tell(pipe.edge_url, f"/_cluster/rooms/{pipe.room.id}/pipes/{pipe.transport.id}/producer-closed",
                   {"producerId": producer_id},
                   f"room {pipe.room.id}: edge {pipe.edge_node} not told producer {producer_id} closed")

    def _tell(self, base: str, path: str, data: dict[str, Any], failure: str) -> None:
        """A notification to another node, in the background (logged if it fails)."""

        async def run() -> None:
            try:
                await self._call(base, "POST", path, data)
            except ApiError as exc:
                logger.warning("%s: %s", failure, exc.message)

        asyncio.ensure_future(run())

    async def producer_closed(self, request: web.Request) -> web.Response:
        """Either side: a producer closed on the node it came from; its piped
        copy here closes."""
        data = await self._body(request)
        pid = str(data.get("producerId"))
        link = self.links.get(request.match_info["rid"])
        prod: Optional[sfu.Producer] = None
        if link is not None and link.pipe_id == request.match_info["pipeId"]:
            prod = link.producers.get(pid)
        pipe = self.pipes.get(request.match_info["pipeId"])
        if prod is None and pipe is not None and pipe.room.id == request.match_info["rid"]:
            prod = pipe.inbound.get(pid)
        if prod is not None:
            prod.close()
        return web.json_response({"closed": prod is not None})

    async def _tell_edges(self, p: Participant, prod: sfu.Producer, origin: Optional[OwnerPipe] = None) -> None:
        """Owner: a new producer in a room; each of its edges (but the one it
        came from) pulls it."""
        for pipe_id, pipe in list(self.pipes.items()):
            if pipe is origin or pipe.transport.closed or not pipe.edge_url or pipe.room.participants.get(p.id) is not p:
                continue
            self._tell(pipe.edge_url, f"/_cluster/rooms/{pipe.room.id}/pipes/{pipe_id}/producer-added",
                       {"producerId": prod.id},
                       f"room {pipe.room.id}: edge {pipe.edge_node} not told of producer {prod.id}")

    async def produce(self, request: web.Request) -> web.Response:
        """Owner: a producer of an edge's participant, piped here, joins the
        room (as a producer of that participant)."""
        data = await self._body(request)
        pipe = self.pipes.get(request.match_info["pipeId"])
        if pipe is None or pipe.transport.closed or pipe.room.id != request.match_info["rid"]:
            raise ApiError(404, f"pipe {request.match_info['pipeId']} not found in room {request.match_info['rid']}")
        pid, participant_id, kind = data.get("producerId"), data.get("participantId"), data.get("kind")
        if not isinstance(pid, str) or not isinstance(participant_id, str) or kind not in ("audio", "video") \
                or not isinstance(data.get("rtpParameters"), dict):
            raise ApiError(400, "producerId, participantId, kind, rtpParameters: the edge's piped producer")
        room = pipe.room
        local = room.participants.get(participant_id)
        if local is not None and local.transports:
            raise ApiError(409, f"participantId: {participant_id} is a participant of this node")
        prod = await pipe.transport.produce(kind, data["rtpParameters"], paused=False, producer_id=pid,
                                            app_data={"participantId": participant_id})
        pipe.inbound[pid] = prod
        self._adopt(room, participant_id, prod, lambda: pipe.inbound.pop(pid, None))
        owner = room.participants[participant_id]
        await self._tell_edges(owner, prod, origin=pipe)
        return web.json_response({"producerId": pid})

    async def producer_added(self, request: web.Request) -> web.Response:
        """Edge: the owner's room has a new producer; piped here (in the
        background: the owner is not kept waiting)."""
        await self._body(request)
        link = self.links.get(request.match_info["rid"])
        if link is None or link.pipe_id != request.match_info["pipeId"]:
            return web.json_response({"pulled": False})
        room = link.room

        async def pull() -> None:
            try:
                await self._pull(room, "")
            except (ApiError, sfu.SfuError) as exc:
                logger.warning("room %s: producers of node %s not piped here: %s", room.id, link.owner.id,
                               exc.message if isinstance(exc, ApiError) else exc)

        asyncio.ensure_future(pull())
        return web.json_response({"pulled": True})

    async def pipe_closed(self, request: web.Request) -> web.Response:
        """Either side: the other end of a pipe closed; this end closes too
        (on the edge its piped producers close with it)."""
        await self._body(request)
        rid, pipe_id = request.match_info["rid"], request.match_info["pipeId"]
        link = self.links.get(rid)
        if link is not None and link.pipe_id == pipe_id:
            del self.links[rid]
            link.transport.close()
            return web.json_response({"closed": True})
        pipe = self.pipes.get(pipe_id)
        if pipe is not None and pipe.room.id == rid:
            pipe.edge_url = ""  # it knows
            pipe.transport.close()
            return web.json_response({"closed": True})
        return web.json_response({"closed": False})

    async def state(self, request: web.Request) -> web.Response:
        """This node's pipes, both sides."""
        await self._body(request)
        return web.json_response({
            "pipesMade": self.pipes_made,
            "edge": {rid: {"owner": link.owner.id, "pipeId": link.pipe_id, "open": not link.transport.closed,
                           "srtp": link.transport.srtp_parameters is not None,
                           "producers": sorted(p for p, prod in link.producers.items() if not prod.closed),
                           "pushed": sorted(link.pushed)}
                     for rid, link in self.links.items()},
            "owner": {pid: {"room": pipe.room.id, "edge": pipe.edge_node, "producers": sorted(pipe.consumers),
                            "inbound": sorted(pipe.inbound)}
                      for pid, pipe in self.pipes.items() if not pipe.transport.closed},
        })

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/_cluster/rooms/{rid}/pipe", self.open_pipe)
        r.add_post("/_cluster/rooms/{rid}/pipes/{pipeId}/consume", self.consume)
        r.add_post("/_cluster/rooms/{rid}/pipes/{pipeId}/producer-closed", self.producer_closed)
        r.add_post("/_cluster/rooms/{rid}/pipes/{pipeId}/produce", self.produce)
        r.add_post("/_cluster/rooms/{rid}/pipes/{pipeId}/producer-added", self.producer_added)
        r.add_post("/_cluster/rooms/{rid}/pipes/{pipeId}/closed", self.pipe_closed)
        r.add_get("/_cluster/state", self.state)


EDGE = web.AppKey("edge", EdgeViewers)
__all__ = ["EDGE", "EDGE_OWNER", "AUTH_HEADER", "EdgeViewers", "sign", "verify"]
