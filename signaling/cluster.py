"""A cluster of ``sfu-server`` nodes sharing one Redis (issue 15).

Without ``--redis-url`` a server is a cluster of one and none of this runs.
With it, every node:

* **registers** itself under ``{prefix}:node:{id}`` (a hash: its URL, its
  load, when it started), refreshed every ``heartbeat_s`` with a time to
  live of ``ttl_s``: a node that stops refreshing (killed, hung, cut off)
  disappears from the cluster when the key expires;
* **places rooms atomically**: ``{prefix}:room:{roomId}`` names the node
  that holds the room. A request that creates a room (WHIP/WHEP offers,
  joins, room and call creation) runs one Lua script that keeps the current
  owner while that owner is alive and otherwise names the least-loaded live
  node, in one step, so two nodes racing for a new room never both create
  it;
* **answers requests for rooms it does not hold** by proxying them to the
  owner (HTTP, and the room's WebSocket): clients keep one URL and need no
  redirect support (WHIP clients such as OBS or GStreamer's whipsink do not
  all follow one). The owner handles it as if it came directly; the
  ``X-Sfu-Node`` response header says which node answered;
* **re-places the rooms of a dead node** on the next request for them, once
  its registration has expired: participants come back by re-posting their
  WHIP/WHEP offers or re-joining (the pages do so when media stops).

What Redis holds is only this placement and the node registry; media, room
and call state stay in the node that owns the room. Socket.IO call pages
connect with ``?call=<id>`` in their query (the call page does): a node
that does not hold the call forwards the whole Socket.IO connection to the
node that does (a connection without it is answered by the node it
reached).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

import aiohttp
from aiohttp import web

logger = logging.getLogger("sfu.signaling.cluster")

#: a request forwarded by another node carries this header (its node id):
#: it is answered here, never forwarded again
PROXIED_HEADER = "X-Sfu-Proxied-By"
#: which node answered a request for a room
NODE_HEADER = "X-Sfu-Node"

#: node-to-node requests are signed: ``<unix time>:<hex HMAC-SHA256>`` of the
#: time, method, path and body, keyed with the cluster's shared secret (the
#: HS256 JWT secret)
AUTH_HEADER = "X-Sfu-Cluster-Auth"
#: how far a signed request's time may be from ours
MAX_SKEW_S = 60.0


def sign(secret: bytes, method: str, path: str, body: bytes, now: Optional[float] = None) -> str:
    """The value of :data:`AUTH_HEADER` for a request."""
    ts = str(int(now if now is not None else time.time()))
    mac = hmac.new(secret, b"\n".join([ts.encode(), method.upper().encode(), path.encode(), body]), hashlib.sha256)
    return f"{ts}:{mac.hexdigest()}"


def verify(secret: bytes, header: Optional[str], method: str, path: str, body: bytes) -> bool:
    """Whether ``header`` signs this request (and is recent)."""
    if not header or ":" not in header:
        return False
    ts, _, _mac = header.partition(":")
    try:
        when = int(ts)
    except ValueError:
        return False
    if abs(time.time() - when) > MAX_SKEW_S:
        return False
    return hmac.compare_digest(sign(secret, method, path, body, when), header)


#: request key: the room's owner, when this node answers as its edge
EDGE_OWNER = "sfu_edge_owner"

#: a room placed here and not open this long after is released
RELEASE_GRACE_S = 30.0

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length"}

# KEYS[1] = the room's key; ARGV[1] = the node to place it on if it has no
# live owner; ARGV[2] = the node keys' prefix. Returns the owner.
_PLACE = """
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[2] .. cur) == 1 then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
# KEYS[1] = the room's key; ARGV[1] = this node. Deletes the claim if it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ClusterError(RuntimeError):
    """The cluster cannot be used (Redis unreachable, a node id in use)."""


@dataclass(frozen=True)
class NodeInfo:
    """A live node of the cluster."""

    id: str
    url: str
    load: float
    started: float


class Cluster:
    """This node's membership in the cluster on ``redis_url``.

    ``node_url`` is how the other nodes reach this one over HTTP (its
    sfu-server base URL). ``load`` returns this node's load (lower is
    preferred when a room is placed), read at each heartbeat."""

    def __init__(self, redis_url: str, node_id: str, node_url: str, *, load: Callable[[], float],
                 prefix: str = "sfu", heartbeat_s: float = 0.5, ttl_s: float = 2.0,
                 proxy_timeout_s: float = 15.0) -> None:
        if not node_id or ":" in node_id:
            raise ValueError(f"node id: a non-empty name without ':', got {node_id!r}")
        if not node_url.startswith(("http://", "https://")):
            raise ValueError(f"node URL: http(s)://host:port of this server, got {node_url!r}")
        if ttl_s <= 2 * heartbeat_s:
            raise ValueError(f"the registration's time to live ({ttl_s} s) must exceed two heartbeats "
                             f"({heartbeat_s} s each)")
        self.redis_url = redis_url
        self.node_id = node_id
        self.node_url = node_url.rstrip("/")
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self.proxy_timeout_s = proxy_timeout_s
        self._load = load
        self._redis: Any = None
        self._place: Any = None
        self._release: Any = None
        self._http: Optional[aiohttp.ClientSession] = None
        self._heartbeat: Optional[asyncio.Task[None]] = None
        self.started = time.time()
        #: whether a room (or call) is open on this node; set by the server
        self.is_open: Callable[[str], bool] = lambda room_id: True
        #: whether this node answers a request for a room held by another
        #: node itself, as an edge of that room (set by --edge-viewers: see
        #: signaling/edge.py); the owner is then in ``request[EDGE_OWNER]``
        self.edge_here: Callable[[web.Request, str], bool] = lambda request, room_id: False
        #: awaited before a request answered here as an edge is handled: makes
        #: the edge room and its pipe to the owner (--edge-rooms)
        self.edge_enter: Optional[Callable[[str, "NodeInfo"], Awaitable[Any]]] = None
        #: called when a request finds this node holding a room (placed here
        #: after its node died, say): a pipe of it to its old node is stale
        self.edge_owned: Optional[Callable[[str], None]] = None
        #: the cluster's shared secret (the HS256 JWT secret): signs the
        #: requests this node forwards, so the owner knows them from a
        #: client's (its rate limits counted them here already)
        self.secret: Optional[bytes] = None
        self.rooms_held: dict[str, float] = {}  # room id -> when placed here (monotonic)
        self.proxied = 0  # requests this node forwarded to another

    # ------------------------------------------------------------ keys

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def _room_key(self, room_id: str) -> str:
        return f"{self.prefix}:room:{room_id}"

    # ------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connects to Redis and registers this node (ClusterError when
        Redis does not answer or another live node has this id)."""
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ClusterError("--redis-url needs the redis package: pip install 'sfu[cluster]'") from None
        self._redis = aioredis.from_url(self.redis_url, decode_responses=True, socket_connect_timeout=5)
        try:
            await self._redis.ping()
            holder = await self._redis.hget(self._node_key(self.node_id), "url")
        except Exception as exc:  # redis raises its own ConnectionError/TimeoutError/ResponseError
            await self._redis.aclose()
            self._redis = None
            raise ClusterError(f"cannot use Redis at {self.redis_url}: {exc}") from None
        if holder and holder != self.node_url:
            await self._redis.aclose()
            self._redis = None
            raise ClusterError(f"node id {self.node_id!r} is in use by a live node at {holder}: give another "
                               "--node-id")
        self._place = self._redis.register_script(_PLACE)
        self._release = self._redis.register_script(_RELEASE)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.proxy_timeout_s))
        await self._beat()
        self._heartbeat = asyncio.ensure_future(self._run_heartbeat())
        logger.info("cluster node %s (%s) registered in %s", self.node_id, self.node_url, self.redis_url)

    async def stop(self) -> None:
        """Leaves the cluster: this node's rooms and registration are
        removed (the other nodes place its rooms again at once)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            try:
                await self._heartbeat
            except (asyncio.CancelledError, Exception):
                pass
            self._heartbeat = None
        if self._redis is not None:
            try:
                for room_id in list(self.rooms_held):
                    await self._release(keys=[self._room_key(room_id)], args=[self.node_id])
                await self._redis.delete(self._node_key(self.node_id))
            except Exception as exc:
                logger.warning("cluster node %s: could not deregister cleanly: %s", self.node_id, exc)
            await self._redis.aclose()
            self._redis = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _beat(self) -> None:
        key = self._node_key(self.node_id)
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping={"url": self.node_url, "load": float(self._load()), "started": self.started})
        pipe.pexpire(key, int(self.ttl_s * 1000))
        await pipe.execute()

    async def _run_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
                await self._release_closed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away for a moment: keep trying; our key may expire meanwhile
                logger.warning("cluster node %s: heartbeat failed: %s", self.node_id, exc)

    async def _release_closed(self) -> None:
        """Releases the rooms placed here that are no longer open (after a
        grace, so that a room placed for a request being answered is not
        released before that request opens it)."""
        now = time.monotonic()
        for room_id, since in list(self.rooms_held.items()):
            if now - since > RELEASE_GRACE_S and not self.is_open(room_id):
                await self.release(room_id)

    # --------------------------------------------------------- queries

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (registration not expired), least loaded first."""
        out = []
        async for key in self._redis.scan_iter(match=self._node_key("*"), count=100):
            h = await self._redis.hgetall(key)
            if h.get("url"):
                out.append(NodeInfo(key.rsplit(":", 1)[1], h["url"], float(h.get("load") or 0),
                                    float(h.get("started") or 0)))
        out.sort(key=lambda n: (n.load, n.id != self.node_id, n.id))
        return out

    async def _node(self, node_id: str) -> Optional[NodeInfo]:
        if node_id == self.node_id:
            return NodeInfo(self.node_id, self.node_url, float(self._load()), self.started)
        h = await self._redis.hgetall(self._node_key(node_id))
        if not h.get("url"):
            return None
        return NodeInfo(node_id, h["url"], float(h.get("load") or 0), float(h.get("started") or 0))

    async def owner(self, room_id: str) -> Optional[NodeInfo]:
        """The live node holding ``room_id`` (None: no live node does)."""
        node_id = await self._redis.get(self._room_key(room_id))
        return await self._node(node_id) if node_id else None

    async def place(self, room_id: str, prefer_self: bool = False) -> NodeInfo:
        """The node that holds ``room_id``: its live owner, or else (placed
        now, atomically) the least-loaded live node (this one with
        ``prefer_self``)."""
        if prefer_self:
            chosen = self.node_id
        else:
            live = await self.nodes()
            chosen = live[0].id if live else self.node_id
        node_id = await self._place(keys=[self._room_key(room_id)], args=[chosen, self._node_key("")])
        if node_id == self.node_id:
            self.rooms_held[room_id] = time.monotonic()
        node = await self._node(node_id)
        if node is None:  # placed on a node whose registration expired since: take it here
            await self._redis.set(self._room_key(room_id), self.node_id)
            self.rooms_held[room_id] = time.monotonic()
            return await self._node(self.node_id)  # type: ignore[return-value]
        return node

    async def release(self, room_id: str) -> None:
        """Forgets that this node holds ``room_id`` (the room closed)."""
        self.rooms_held.pop(room_id, None)
        if self._redis is not None:
            await self._release(keys=[self._room_key(room_id)], args=[self.node_id])

    # ----------------------------------------------------------- proxy

    def forwarded_by_node(self, request: web.Request) -> bool:
        """Whether ``request`` was forwarded by another node of the cluster
        (signed with the shared secret; False without one)."""
        by = request.headers.get(PROXIED_HEADER)
        return bool(self.secret and by and verify(self.secret, request.headers.get(AUTH_HEADER), request.method,
                                                  request.rel_url.raw_path_qs, by.encode()))

    async def proxy(self, request: web.Request, node: NodeInfo) -> web.StreamResponse:
        """Forwards ``request`` to ``node`` and returns its answer; 503 with
        Retry-After when that node does not answer (it may be dying: its
        rooms are placed again once its registration expires)."""
        assert self._http is not None
        url = node.url + request.rel_url.raw_path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers[PROXIED_HEADER] = self.node_id
        headers.pop(AUTH_HEADER, None)
        if self.secret:
            headers[AUTH_HEADER] = sign(self.secret, request.method, request.rel_url.raw_path_qs,
                                        self.node_id.encode())
        # the client's Host: the owner answers as this node would (same-origin
        # checks of Socket.IO pass; URLs it builds point the client back here)
        headers["Host"] = request.host
        if request.remote:
            headers["X-Forwarded-For"] = ", ".join(filter(None, (request.headers.get("X-Forwarded-For"),
                                                                 request.remote)))
        self.proxied += 1
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._proxy_websocket(request, url, headers, node)
        body = await request.read()
        try:
            async with self._http.request(request.method, url, headers=headers, data=body,
                                          allow_redirects=False) as resp:
                data = await resp.read()
                out = {k: v for k, v in resp.headers.items()
                       if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding"
                       and not k.lower().startswith("access-control-")}
                return web.Response(status=resp.status, body=data, headers=out)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise web.HTTPServiceUnavailable(
                text=f'{{"error": "the room is held by node {node.id} ({node.url}), which does not answer '
                     f'({type(exc).__name__}); retry shortly"}}',
                content_type="application/json", headers={"Retry-After": "1", NODE_HEADER: node.id}) from None

    async def _proxy_websocket(self, request: web.Request, url: str, headers: dict[str, str],
                               node: NodeInfo) -> web.StreamResponse:
        assert self._http is not None
        for h in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"):
            headers.pop(h, None)
        try:
            upstream = await self._http.ws_connect(url.replace("http", "ws", 1), headers=headers, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            raise web.HTTPException(text=f'{{"error": "node {node.id}: {exc.message}"}}',
                                    content_type="application/json") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise web.HTTPServiceUnavailable(
                text=f'{{"error": "the room is held by node {node.id}, which does not answer '
                     f'({type(exc).__name__}); retry shortly"}}',
                content_type="application/json", headers={"Retry-After": "1"}) from None
        ws = web.WebSocketResponse(autoping=True)
        ws.headers[NODE_HEADER] = node.id
        await ws.prepare(request)

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                else:
                    break

        tasks = [asyncio.ensure_future(pump(ws, upstream)), asyncio.ensure_future(pump(upstream, ws))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await upstream.close()
            await ws.close()
        return ws


CLUSTER = web.AppKey("cluster", Cluster)

# (method, route pattern) of the requests that may create their room: these
# place it; the others only look for its owner
_CREATING = {
    ("POST", "/whip/{roomId}"), ("POST", "/whep/{roomId}"),
    ("POST", "/api/rooms/{roomId}/create"), ("POST", "/api/rooms/{roomId}/participants"),
    ("POST", "/api/calls/{callId}/participants"),
}


def cluster_middleware(cluster: Cluster) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Sends each request for a room to the node that holds it (see the
    module docstring); requests of no room are answered here."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if request.headers.get(PROXIED_HEADER):
            resp = await handler(request)  # the sender found this node the owner: answer
            _mark(resp, cluster.node_id)
            return resp
        room_id = request.match_info.get("roomId") or request.match_info.get("callId")
        info = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        if room_id is None and request.method == "POST" and info == "/api/calls":
            # a new call: a given id is placed like a room; a generated one is claimed here
            try:
                body = await request.json() if request.body_exists else {}
            except ValueError:
                body = {}  # the handler answers 400 naming the problem
            wanted = body.get("callId") if isinstance(body, dict) else None
            if isinstance(wanted, str) and wanted:
                node = await cluster.place(wanted)
                if node.id != cluster.node_id:
                    return await cluster.proxy(request, node)
                resp = await handler(request)
            else:
                resp = await handler(request)
                call_id = getattr(resp, "text", None) and _call_id(resp)
                if call_id:
                    await cluster.place(call_id, prefer_self=True)
            _mark(resp, cluster.node_id)
            return resp
        if room_id is None and request.path.startswith("/socket.io/") and request.query.get("call"):
            # a call page's Socket.IO connection (its ?call=): to the node of the call
            node = await cluster.place(request.query["call"])
            if node.id == cluster.node_id:
                return await handler(request)
            return await cluster.proxy(request, node)
        if room_id is None:
            return await handler(request)
        if (request.method, info) in _CREATING:
            node: Optional[NodeInfo] = await cluster.place(room_id)
        else:
            node = await cluster.owner(room_id)
        if node is not None and node.id == cluster.node_id and cluster.edge_owned is not None:
            cluster.edge_owned(room_id)
        if node is not None and node.id != cluster.node_id and cluster.edge_here(request, room_id):
            request[EDGE_OWNER] = node  # answered here, as an edge of the room
            if cluster.edge_enter is not None:
                await cluster.edge_enter(room_id, node)
            node = None
        if node is None or node.id == cluster.node_id:
            resp = await handler(request)
            _mark(resp, cluster.node_id)
            return resp
        return await cluster.proxy(request, node)

    return middleware


def _mark(resp: web.StreamResponse, node_id: str) -> None:
    if not resp.prepared:
        resp.headers[NODE_HEADER] = node_id


def _call_id(resp: web.StreamResponse) -> Optional[str]:
    import json

    try:
        data = json.loads(resp.text)  # type: ignore[attr-defined]
    except (ValueError, TypeError, AttributeError):
        return None
    value = data.get("callId") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
