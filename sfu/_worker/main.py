"""Entry point of a worker subprocess: `python -m sfu._worker.main --channel-fd N`.

The process owns one compiled :class:`~sfu._fastpath._engine.Engine` (whose
I/O thread forwards media) and answers control requests from the parent over
the channel. The asyncio loop here only runs control plane work: requests,
upcalls from the engine (comedia tuples; STUN/DTLS datagrams later) and stats.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

from ..channel import FrameReader, encode_binary_frame, encode_frame
from .state import WorkerState

logger = logging.getLogger("sfu.worker")


class WorkerProcess:
    """Reads requests from the channel socket and dispatches them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.state = WorkerState(self.notify)
        self.state.notify_binary = self.notify_binary
        self.writer: asyncio.StreamWriter | None = None
        self.done = asyncio.Event()

    def notify(self, target_id: str, event: str, data: Any = None) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode_frame({"targetId": target_id, "event": event, "data": data}))

    def notify_binary(self, target_id: str, event: str, records: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode_binary_frame(target_id, event, records))

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        frames = FrameReader()
        self.state.start(self.loop)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break  # parent is gone: exit
                for msg in frames.feed(data):
                    self._handle(msg)
                await self.writer.drain()
        finally:
            self.state.close()

    def _handle(self, msg: dict[str, Any]) -> None:
        if "method" not in msg and msg.get("event") == "send":
            # a binary frame: datagrams for a DirectTransport's producers
            self.state.direct_send(msg.get("targetId", ""), msg.get("data") or [])
            return
        rid = msg.get("id")
        method = msg.get("method", "")
        try:
            result = self.state.handle(method, msg.get("handlerId"), msg.get("data") or {})
            reply = {"id": rid, "accepted": True, "data": result}
        except Exception as exc:
            if not isinstance(exc, (ValueError, TypeError, KeyError, LookupError)) and type(exc).__name__ not in (
                "InvalidParametersError",
                "UnsupportedError",
                "InvalidStateError",
            ):
                logger.exception("request %s failed", method)
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            reply = {"id": rid, "error": type(exc).__name__, "reason": f"{method}: {reason}"}
        assert self.writer is not None
        self.writer.write(encode_frame(reply))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sfu-worker")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format=f"sfu-worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The parent owns the terminal: Ctrl-C there must not kill workers first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=args.channel_fd)

    async def runner() -> None:
        await WorkerProcess(sock).run()

    asyncio.run(runner())


if __name__ == "__main__":
    main()
