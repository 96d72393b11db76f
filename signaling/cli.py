"""`sfu-server`: the standalone SFU with its HTTP + WebSocket API, the call
service (Socket.IO) and the demo pages.

Every option also reads an environment variable (SFU_LISTEN_IP, ...).
It listens on 127.0.0.1 unless told otherwise. Authentication is always on:
give a JWT key (--jwt-secret for HS256, or --jwt-public-key for RS256/ES256
tokens minted elsewhere), or ask for --dev-auth, which generates a secret and
prints tokens and demo URLs (development only).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from typing import Optional

from aiohttp import web

from .auth import AuthConfig, Authenticator
from .metrics import Metrics
from .ratelimit import Rate, RateLimiter, parse_rate
from .calls import SocketLimits
from .rooms import Limits, RoomManager
from .server import CALLS, CorsPolicy, create_app, drain, start_rooms
from .store import CallStore, StoreError

logger = logging.getLogger("sfu.signaling")

DEV_USERS = ("alice", "bob", "carol")
#: The demos --dev-auth prints get rooms of their own: a call's SFU room is
#: the call's (joined with ?as=), so the room demo cannot share its name.
DEMO_CALL = "demo-call"
DEMO_ROOM = "demo-room"


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def _rate(spec: str) -> Optional[Rate]:
    if spec.strip().lower() in ("off", "none", "0"):
        return None
    try:
        return parse_rate(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(spec: str) -> int:
    """Bytes: ``65536``, ``64k``/``64kB``, ``1m``/``1MB``."""
    text = spec.strip().lower().removesuffix("b")
    scale = 1
    if text.endswith("k"):
        scale, text = 1024, text[:-1]
    elif text.endswith("m"):
        scale, text = 1024 * 1024, text[:-1]
    try:
        value = int(text.strip()) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r} is not a size (e.g. 65536, 64k, 1m)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{spec!r}: must not be negative")
    return value


def _count(spec: str) -> int:
    try:
        value = int(spec)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{spec!r}: must not be negative (0 turns the limit off)")
    return value


#: (option, Limits field, environment variable, type, help)
LIMIT_OPTIONS: tuple[tuple[str, str, str, object, str], ...] = (
    ("--max-whip-sections", "whip_sections", "SFU_MAX_WHIP_SECTIONS", _count, "m-lines per WHIP offer"),
    ("--max-whep-sections", "whep_sections", "SFU_MAX_WHEP_SECTIONS", _count, "m-lines per WHEP offer"),
    ("--max-transports-per-participant", "transports_per_participant", "SFU_MAX_TRANSPORTS_PER_PARTICIPANT",
     _count, "transports per participant (a WHIP/WHEP session is one participant with one transport)"),
    ("--max-transports-per-room", "transports_per_room", "SFU_MAX_TRANSPORTS_PER_ROOM", _count,
     "transports per room"),
    ("--max-participants-per-room", "participants_per_room", "SFU_MAX_PARTICIPANTS_PER_ROOM", _count,
     "participants per room (WHIP/WHEP sessions included)"),
    ("--max-consumers-per-transport", "consumers_per_transport", "SFU_MAX_CONSUMERS_PER_TRANSPORT", _count,
     "consumers per transport"),
    ("--max-request-body", "request_body_bytes", "SFU_MAX_REQUEST_BODY", _size,
     "request body size (SDP offers, JSON), bytes or 64k"),
    ("--max-rooms-per-user", "rooms_per_user", "SFU_MAX_ROOMS_PER_USER", _count,
     "open rooms an authenticated user may have created"),
    ("--transport-connect-timeout", "connect_timeout_s", "SFU_TRANSPORT_CONNECT_TIMEOUT", float,
     "seconds a transport may take to complete ICE + DTLS before it is closed"),
    ("--fd-reserve", "fd_reserve", "SFU_FD_RESERVE", _count,
     "file descriptors kept free in each worker: a transport that would use one is refused (503)"),
)


def _limit_default(field: str) -> str:
    value = getattr(Limits(), field)
    if field == "request_body_bytes" and value % 1024 == 0:
        return f"{value // 1024}k"
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sfu-server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen-ip", default=_env("SFU_LISTEN_IP", "127.0.0.1"), help="IP for HTTP and media (SFU_LISTEN_IP)")
    p.add_argument("--announced-ip", default=_env("SFU_ANNOUNCED_IP", None),
                   help="IP given to clients in ICE candidates, for servers behind NAT (SFU_ANNOUNCED_IP)")
    p.add_argument("--http-port", type=int, default=int(_env("SFU_HTTP_PORT", "8080") or 8080),
                   help="HTTP port (SFU_HTTP_PORT)")
    p.add_argument("--rtc-port", type=int, default=int(_env("SFU_RTC_PORT", "0") or 0),
                   help="shared WebRTC UDP port of the first worker, +1 per worker; 0 = a port per transport (SFU_RTC_PORT)")
    p.add_argument("--rtc-min-port", type=int, default=int(_env("SFU_RTC_MIN_PORT", "0") or 0) or None,
                   help="lowest UDP port for per-transport ports (SFU_RTC_MIN_PORT)")
    p.add_argument("--rtc-max-port", type=int, default=int(_env("SFU_RTC_MAX_PORT", "0") or 0) or None,
                   help="highest UDP port for per-transport ports (SFU_RTC_MAX_PORT)")
    p.add_argument("--workers", type=int, default=int(_env("SFU_WORKERS", str(os.cpu_count() or 1)) or 1),
                   help="media workers, one per core by default (SFU_WORKERS)")
    p.add_argument("--consumers-per-worker", type=int, metavar="N",
                   default=int(_env("SFU_CONSUMERS_PER_WORKER", "0") or 0),
                   help="consumer budget of a worker: past it, a room's new participants go to a router of the "
                        "room on another worker, producers piped between them (0, the default: a room stays on "
                        "one worker) (SFU_CONSUMERS_PER_WORKER)")
    p.add_argument("--keyframe-interval-ms", type=int, default=int(_env("SFU_KEYFRAME_INTERVAL_MS", "350") or 350),
                   help="keyframe requests (PLI) to a publisher are coalesced to one per interval; Chrome ignores "
                        "requests less than 300 ms apart, so shorter intervals lose requests "
                        "(SFU_KEYFRAME_INTERVAL_MS, default 350)")
    p.add_argument("--log-level", default=_env("SFU_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"], help="(SFU_LOG_LEVEL)")
    a = p.add_argument_group("authentication (JWT; one of --jwt-secret, --jwt-public-key, --dev-auth)")
    a.add_argument("--jwt-secret", default=_env("SFU_JWT_SECRET", None),
                   help="HS256 shared secret that signs the tokens (SFU_JWT_SECRET; prefer the variable: "
                        "arguments show in ps)")
    a.add_argument("--jwt-public-key", metavar="FILE", default=_env("SFU_JWT_PUBLIC_KEY", None),
                   help="PEM public key (or certificate) verifying RS256/ES256 tokens (SFU_JWT_PUBLIC_KEY)")
    a.add_argument("--jwt-algorithms", default=_env("SFU_JWT_ALGORITHMS", None),
                   help="accepted algorithms, comma-separated (default: HS256 with a secret, the key's "
                        "natural one with a public key) (SFU_JWT_ALGORITHMS)")
    a.add_argument("--jwt-audience", default=_env("SFU_JWT_AUDIENCE", None),
                   help="required 'aud' claim (SFU_JWT_AUDIENCE)")
    a.add_argument("--jwt-issuer", default=_env("SFU_JWT_ISSUER", None), help="required 'iss' claim (SFU_JWT_ISSUER)")
    a.add_argument("--dev-auth", action="store_true", default=_env("SFU_DEV_AUTH", "") not in ("", "0"),
                   help="development mode: a random secret (unless --jwt-secret), and tokens plus demo URLs "
                        "printed at start (SFU_DEV_AUTH=1)")
    a.add_argument("--require-grants", action="store_true",
                   default=_env("SFU_REQUIRE_GRANTS", "") not in ("", "0"),
                   help="refuse (403) tokens without a room grant ('video' claim) in rooms; without this they "
                        "may use every room, which is deprecated (SFU_REQUIRE_GRANTS=1)")
    r = p.add_argument_group("rate limits (REST, WHIP and WHEP requests; RATE/s or RATE/m with :BURST, or 'off')")
    r.add_argument("--rate-limit-user", type=_rate, default=_env("SFU_RATE_LIMIT_USER", "10/s:40"),
                   help="per authenticated user (SFU_RATE_LIMIT_USER, default 10/s:40)")
    r.add_argument("--rate-limit-ip", type=_rate, default=_env("SFU_RATE_LIMIT_IP", "50/s:200"),
                   help="per client IP address (SFU_RATE_LIMIT_IP, default 50/s:200)")
    w = p.add_argument_group("browsers (CORS)")
    w.add_argument("--cors-origin", metavar="ORIGIN", action="append", default=None,
                   help="let pages of ORIGIN (scheme://host[:port]) call /api, /whip, /whep and Socket.IO; "
                        "repeatable; '*' allows any origin, 'none' none (SFU_CORS_ORIGINS, comma-separated; "
                        "default: none, i.e. same-origin pages only, but any origin with --dev-auth)")
    lim = p.add_argument_group("admission limits (0 turns one off; refusals are 429/413/400 naming the limit)")
    for option, name, env, kind, text in LIMIT_OPTIONS:
        default = _limit_default(name)
        metavar = "BYTES" if kind is _size else "SECONDS" if kind is float else "N"
        lim.add_argument(option, dest=f"limit_{name}", metavar=metavar, type=kind,  # type: ignore[arg-type]
                         default=_env(env, default),
                         help=f"{text} ({env}, default {default})")
    p.add_argument("--empty-room-grace", metavar="SECONDS", type=float,
                   default=float(_env("SFU_EMPTY_ROOM_GRACE", "30") or 30),
                   help="seconds an empty room stays open before its router is closed; 0 keeps empty rooms "
                        "(SFU_EMPTY_ROOM_GRACE, default 30)")
    c = p.add_argument_group("calls")
    c.add_argument("--db", default=_env("SFU_DB", "sfu-calls.sqlite3"),
                   help="SQLite file of the call records, or :memory: (SFU_DB, default ./sfu-calls.sqlite3)")
    c.add_argument("--drain-timeout", type=float, default=float(_env("SFU_DRAIN_TIMEOUT", "10") or 10),
                   help="seconds a graceful shutdown (first SIGTERM/SIGINT) gives requests in flight and "
                        "Socket.IO connections to finish; a second signal exits at once (SFU_DRAIN_TIMEOUT)")
    s = p.add_argument_group("Socket.IO limits (per connection)")
    s.add_argument("--socketio-rate", type=_rate, default=_env("SFU_SOCKETIO_RATE", "20/s:40"),
                   help="events per connection, RATE/s or RATE/m with :BURST, or 'off'; over it an event is "
                        "refused (call:error, 429) (SFU_SOCKETIO_RATE, default 20/s:40)")
    s.add_argument("--socketio-disconnect-after", type=_count,
                   default=_env("SFU_SOCKETIO_DISCONNECT_AFTER", "200"),
                   help="refusals for the rate limit (draining at the rate) after which the connection is "
                        "closed; 0: never (SFU_SOCKETIO_DISCONNECT_AFTER, default 200)")
    s.add_argument("--socketio-max-event", type=_size, default=_env("SFU_SOCKETIO_MAX_EVENT", "128k"),
                   help="largest event payload, bytes or 128k (SFU_SOCKETIO_MAX_EVENT, default 128k)")
    c.add_argument("--disconnect-grace", type=float, default=float(_env("SFU_DISCONNECT_GRACE", "5") or 5),
                   help="seconds a call participant may lose its Socket.IO connection before it is made "
                        "to leave (SFU_DISCONNECT_GRACE)")
    c.add_argument("--recordings-dir", default=_env("SFU_RECORDINGS_DIR", None),
                   help="directory for recordings; enables /api/rooms/{id}/recordings (SFU_RECORDINGS_DIR)")
    c.add_argument("--recording-pattern", default=_env("SFU_RECORDING_PATTERN", None),
                   help="file name of a recording under --recordings-dir, with {room}, {participant}, "
                        "{recording}, {time}, {ext} (SFU_RECORDING_PATTERN, default "
                        "{room}/{time}-{participant}-{recording}.{ext})")
    c.add_argument("--record-publishers", action="store_true",
                   default=(_env("SFU_RECORD_PUBLISHERS", "0") or "0") not in ("0", "false", "no"),
                   help="record every participant when it starts publishing, e.g. each candidate of a "
                        "proctoring call (needs --recordings-dir) (SFU_RECORD_PUBLISHERS=1)")
    c.add_argument("--no-call-standby", dest="call_standby", action="store_false",
                   default=(_env("SFU_CALL_STANDBY", "1") or "1") not in ("0", "false", "no"),
                   help="do not keep an SFU room ready for P2P calls of two (the switch to the SFU then "
                        "sets up every session when the third joins) (SFU_CALL_STANDBY=0)")
    k = p.add_argument_group("cluster (several sfu-server nodes sharing one Redis; see docs/scaling.md)")
    k.add_argument("--redis-url", default=_env("SFU_REDIS_URL", None),
                   help="Redis of the cluster, e.g. redis://10.0.0.5:6379/0; without it this server is a "
                        "single node and needs no Redis (SFU_REDIS_URL)")
    k.add_argument("--node-id", default=_env("SFU_NODE_ID", None),
                   help="this node's name in the cluster (SFU_NODE_ID, default <hostname>-<pid>)")
    k.add_argument("--node-url", default=_env("SFU_NODE_URL", None),
                   help="how the other nodes reach this one over HTTP (SFU_NODE_URL, default "
                        "http://<listen-ip>:<http-port>)")
    k.add_argument("--edge-viewers", action="store_true",
                   default=_env("SFU_EDGE_VIEWERS", "") not in ("", "0"),
                   help="answer WHEP offers for rooms held by other nodes here, with the room's media piped "
                        "from its node (needs SFU_JWT_SECRET, the same on every node; see docs/cluster.md) "
                        "(SFU_EDGE_VIEWERS=1)")
    k.add_argument("--edge-rooms", action="store_true",
                   default=_env("SFU_EDGE_ROOMS", "") not in ("", "0"),
                   help="answer every room request (room API, WHIP, WHEP) for rooms held by other nodes here: "
                        "participants on this node and on the room's node see each other through pipes "
                        "between the nodes (implies --edge-viewers; see docs/cluster.md) (SFU_EDGE_ROOMS=1)")
    args = p.parse_args(argv)
    if args.edge_rooms:
        args.edge_viewers = True
    if (args.node_id or args.node_url) and not args.redis_url:
        p.error("--node-id/--node-url need --redis-url")
    if args.edge_viewers and not args.redis_url:
        p.error("--edge-viewers needs --redis-url (a cluster)")
    if args.edge_viewers and not args.jwt_secret:
        p.error("--edge-viewers needs SFU_JWT_SECRET (--jwt-secret), the same on every node: it signs the "
                "nodes' internal requests")
    if args.record_publishers and not args.recordings_dir:
        p.error("--record-publishers needs --recordings-dir")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.consumers_per_worker < 0:
        p.error("--consumers-per-worker must be >= 0")
    if args.empty_room_grace < 0:
        p.error("--empty-room-grace / SFU_EMPTY_ROOM_GRACE: must not be negative (0 keeps empty rooms)")
    for name, kind in (("socketio_disconnect_after", _count), ("socketio_max_event", _size)):
        if isinstance(getattr(args, name), str):
            try:
                setattr(args, name, kind(getattr(args, name)))
            except argparse.ArgumentTypeError as exc:
                p.error(f"--{name.replace('_', '-')}: {exc}")
    if args.drain_timeout < 0:
        p.error("--drain-timeout must not be negative")
    for name in ("rate_limit_user", "rate_limit_ip", "socketio_rate"):  # defaults from the environment come as strings
        if isinstance(getattr(args, name), str):
            try:
                setattr(args, name, _rate(getattr(args, name)))
            except argparse.ArgumentTypeError as exc:
                p.error(f"--{name.replace('_', '-')}: {exc}")
    limits: dict[str, object] = {}
    for option, name, env, kind, _ in LIMIT_OPTIONS:
        value = getattr(args, f"limit_{name}")
        if isinstance(value, str):  # a default from the environment (or ours) comes as a string
            try:
                value = kind(value)  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                p.error(f"{option} / {env}: {exc}")
        if isinstance(value, float) and value < 0:
            p.error(f"{option} / {env}: must not be negative")
        limits[name] = value
    args.limits = Limits(**limits)  # type: ignore[arg-type]
    if args.cors_origin is None:  # the options win over the environment
        env = _env("SFU_CORS_ORIGINS", None)
        if env is not None:
            args.cors_origin = [env]
        elif args.dev_auth:
            args.cors_origin = ["*"]  # development: a page on another dev server may call us (tokens still needed)
    try:
        args.cors = CorsPolicy.parse(args.cors_origin or [])
    except ValueError as exc:
        p.error(f"--cors-origin / SFU_CORS_ORIGINS: {exc}")
    try:
        args.auth_config = AuthConfig.from_options(
            secret=args.jwt_secret, public_key_file=args.jwt_public_key, algorithms=args.jwt_algorithms,
            audience=args.jwt_audience, issuer=args.jwt_issuer, dev=args.dev_auth,
            require_grants=args.require_grants)
    except ValueError as exc:
        p.error(f"{exc}\n(sfu-server always authenticates: give --jwt-secret / SFU_JWT_SECRET, "
                "--jwt-public-key FILE, or --dev-auth for development)")
    return args


def dev_banner(base: str, auth: Authenticator, cors: CorsPolicy) -> list[str]:
    """What --dev-auth prints: tokens in the URLs of the call demo (one per
    user of :data:`DEV_USERS`, call :data:`DEMO_CALL`) and of the room demo
    (room :data:`DEMO_ROOM`)."""
    lines = ["DEVELOPMENT MODE (--dev-auth): tokens below are valid for 24 h; do not use in production",
             f"  call demo, call {DEMO_CALL}:"]
    for user in DEV_USERS:
        token = auth.mint(user, name=user.capitalize(), ttl_s=24 * 3600, rooms=[DEMO_CALL])
        lines.append(f"  {user}: {base}/call?call={DEMO_CALL}&token={token}")
    lines.append("  open the URLs in separate tabs: two run peer-to-peer, the third moves the call to the SFU")
    lines.append(f"  room demo (WHIP/WHEP only), room {DEMO_ROOM}: "
                 f"{base}/?room={DEMO_ROOM}&token={auth.mint('dev', ttl_s=24 * 3600, rooms=[DEMO_ROOM])}")
    lines.append(f"  CORS: pages of {cors.describe()} may call the API (--cors-origin to choose)")
    return lines


def socket_limits(args: argparse.Namespace) -> SocketLimits:
    """The Socket.IO limits the options ask for."""
    rate = args.socketio_rate
    return SocketLimits(rate_per_s=rate[0] if rate else None, burst=rate[1] if rate else 1,
                        disconnect_after=args.socketio_disconnect_after, max_event_bytes=args.socketio_max_event)


def _exit_now(rooms: Optional[RoomManager], code: int) -> None:
    """The second signal: no more waiting. Kills the media workers (they
    would exit on their own once the control channel closes) and exits."""
    for w in list(rooms.workers) if rooms is not None else []:
        pid = getattr(w, "pid", None)
        if pid and not w.closed:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    logging.shutdown()
    os._exit(code)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    state: dict[str, object] = {"signals": 0, "rooms": None}

    def on_signal(sig: signal.Signals) -> None:
        state["signals"] = int(state["signals"]) + 1  # type: ignore[call-overload]
        if state["signals"] == 1:
            logger.warning("%s: shutting down gracefully (send it again to exit at once)", sig.name)
            print(f"sfu-server: {sig.name}, shutting down (again to exit at once)", flush=True)
            stop.set()
        else:
            logger.warning("%s again: exiting at once", sig.name)
            _exit_now(state["rooms"], 128 + int(sig))  # type: ignore[arg-type]

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    auth = Authenticator(args.auth_config)
    try:
        store = CallStore(args.db)
    except StoreError as exc:
        raise SystemExit(f"sfu-server: {exc}") from None
    rooms = await start_rooms(
        workers=args.workers, listen_ip=args.listen_ip, announced_ip=args.announced_ip, rtc_port=args.rtc_port,
        rtc_min_port=args.rtc_min_port, rtc_max_port=args.rtc_max_port,
        log_level="warning" if args.log_level == "info" else args.log_level,
        keyframe_request_interval_ms=args.keyframe_interval_ms, limits=args.limits,
        consumers_per_worker=args.consumers_per_worker,
    )
    state["rooms"] = rooms
    cluster = None
    if args.redis_url:
        from .cluster import Cluster, ClusterError

        cluster = Cluster(args.redis_url, args.node_id or f"{socket.gethostname()}-{os.getpid()}",
                          args.node_url or f"http://{args.listen_ip}:{args.http_port}",
                          load=lambda: float(sum(len(r.participants) for r in rooms.rooms.values())))
        try:
            await cluster.start()
        except ClusterError as exc:
            await rooms.close()
            raise SystemExit(f"sfu-server: {exc}") from None
    limiter = None
    if args.rate_limit_user or args.rate_limit_ip:
        limiter = RateLimiter(per_identity=args.rate_limit_user, per_ip=args.rate_limit_ip)
    app = create_app(rooms, auth=auth, limiter=limiter, metrics=Metrics(), store=store,
                     disconnect_grace_s=args.disconnect_grace, cors=args.cors, limits=args.limits,
                     empty_room_grace_s=args.empty_room_grace, call_sfu_standby=args.call_standby,
                     recordings_dir=args.recordings_dir, recording_pattern=args.recording_pattern,
                     record_publishers=args.record_publishers, cluster=cluster)
    app[CALLS].socket_limits = socket_limits(args)
    edge = None
    if cluster is not None and args.jwt_secret:
        cluster.secret = args.jwt_secret.encode()
        # every node of the cluster answers the internal API (an owner pipes its rooms to edges);
        # only --edge-viewers nodes act as edges
        from .edge import EDGE, EdgeViewers

        edge = EdgeViewers(cluster, rooms, args.jwt_secret, args.listen_ip)
        edge.add_routes(app)
        app[EDGE] = edge
        cluster.edge_owned = edge.owned_here
        if args.edge_rooms:
            cluster.edge_here = edge.serves_rooms
            cluster.edge_enter = lambda room_id, owner: edge.prepare(room_id, owner, sync=False)
        elif args.edge_viewers:
            cluster.edge_here = edge.serves
    runner = web.AppRunner(app, shutdown_timeout=max(1.0, args.drain_timeout))
    await runner.setup()
    site = web.TCPSite(runner, args.listen_ip, args.http_port)
    await site.start()
    base = f"http://{args.listen_ip}:{args.http_port}"
    logger.info("sfu-server: %d worker(s), %s/, calls in %s, CORS origins: %s", len(rooms.workers), base, args.db,
                args.cors.describe())
    print(f"sfu-server listening on {base}/ with {len(rooms.workers)} worker(s)", flush=True)
    if args.dev_auth:
        for line in dev_banner(base, auth, args.cors):
            print(line, flush=True)
    if cluster is not None:
        print(f"sfu-server: cluster node {cluster.node_id} ({cluster.node_url}) on {args.redis_url}", flush=True)
    await stop.wait()
    if cluster is not None:
        await cluster.stop()  # its rooms are placed elsewhere from now on
    await drain(app, timeout_s=args.drain_timeout)
    await runner.cleanup()
    if edge is not None:
        await edge.close()
    await rooms.close()
    store.close()
    logger.info("sfu-server stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
