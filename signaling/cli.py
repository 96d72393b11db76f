"""`sfu-server`: the standalone SFU with its HTTP + WebSocket API.

Every option also reads an environment variable (SFU_LISTEN_IP, ...).
It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from aiohttp import web

from .server import create_app, start_rooms

logger = logging.getLogger("sfu.signaling")


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sfu-server", description=__doc__)
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
    p.add_argument("--log-level", default=_env("SFU_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"], help="(SFU_LOG_LEVEL)")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


async def serve(args: argparse.Namespace) -> None:
    rooms = await start_rooms(
        workers=args.workers, listen_ip=args.listen_ip, announced_ip=args.announced_ip, rtc_port=args.rtc_port,
        rtc_min_port=args.rtc_min_port, rtc_max_port=args.rtc_max_port,
        log_level="warning" if args.log_level == "info" else args.log_level,
    )
    runner = web.AppRunner(create_app(rooms))
    await runner.setup()
    site = web.TCPSite(runner, args.listen_ip, args.http_port)
    await site.start()
    logger.info("sfu-server: %d worker(s), http://%s:%d/", len(rooms.workers), args.listen_ip, args.http_port)
    print(f"sfu-server listening on http://{args.listen_ip}:{args.http_port}/ with {len(rooms.workers)} worker(s)",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await rooms.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
