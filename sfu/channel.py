"""The control channel between the parent process and a worker subprocess.

Frames are a 4-byte big-endian length followed by a UTF-8 JSON object:

* request:      {"id": n, "method": "router.createPlainTransport", "handlerId": "...", "data": {...}}
* response:     {"id": n, "accepted": true, "data": {...}}
                {"id": n, "error": "TypeError", "reason": "..."}
* notification: {"targetId": "...", "event": "tuple", "data": {...}}

A binary frame (the length's top bit set) carries datagrams for the parent
(a DirectTransport's RTP): u16 target id length, the id, u8 event length,
the event, then records [u32 little-endian length][datagram]...; it is
decoded to a notification whose data is the list of datagrams.

Both sides use :class:`FrameReader` / :func:`encode_frame`; the parent wraps
them in :class:`Channel`, which matches responses to pending requests and
fails every pending and later request once the worker is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct
from typing import Any, Callable

from .errors import ChannelError, InvalidParametersError, UnsupportedError, WorkerDiedError

logger = logging.getLogger("sfu.channel")

MAX_FRAME = 16 * 1024 * 1024

_ERRORS: dict[str, type[Exception]] = {
    "InvalidParametersError": InvalidParametersError,
    "UnsupportedError": UnsupportedError,
    "TypeError": InvalidParametersError,
    "ValueError": InvalidParametersError,
}


def encode_frame(message: dict[str, Any]) -> bytes:
    """Serialises one message as a length-prefixed JSON frame."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"channel message too large ({len(body)} bytes)")
    return struct.pack("!I", len(body)) + body


BINARY_FLAG = 0x80000000


def encode_binary_frame(target_id: str, event: str, records: bytes) -> bytes:
    """A binary notification: `records` is [u32 LE length][datagram]... as
    the engine queues them (no per-datagram work here)."""
    tid, ev = target_id.encode(), event.encode()
    n = 2 + len(tid) + 1 + len(ev) + len(records)
    if n > MAX_FRAME:
        raise ValueError(f"channel message too large ({n} bytes)")
    return struct.pack("!IH", n | BINARY_FLAG, len(tid)) + tid + bytes([len(ev)]) + ev + records


def split_records(buf: bytes, offset: int = 0) -> list[bytes]:
    """[u32 LE length][datagram]... -> the datagrams (a truncated tail is ignored)."""
    out = []
    end = len(buf)
    unpack = struct.unpack_from
    while offset + 4 <= end:
        (n,) = unpack("<I", buf, offset)
        offset += 4
        if offset + n > end:
            break
        out.append(buf[offset : offset + n])
        offset += n
    return out


def _decode_binary(body: bytes) -> dict[str, Any]:
    (tl,) = struct.unpack_from("!H", body)
    tid = body[2 : 2 + tl].decode()
    el = body[2 + tl]
    event = body[3 + tl : 3 + tl + el].decode()
    return {"targetId": tid, "event": event, "data": split_records(body, 3 + tl + el)}


class FrameReader:
    """Incremental decoder: feed bytes, get complete messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (n,) = struct.unpack_from("!I", self._buf)
            binary = bool(n & BINARY_FLAG)
            n &= ~BINARY_FLAG
            if n > MAX_FRAME:
                raise ValueError(f"channel frame too large ({n} bytes)")
            if len(self._buf) < 4 + n:
                break
            body = bytes(self._buf[4 : 4 + n])
            out.append(_decode_binary(body) if binary else json.loads(body))
            del self._buf[: 4 + n]
        return out


class Channel:
    """Parent side: request/response over a stream pair, plus notifications."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_notification: Callable[[str, str, Any], None],
        timeout: float = 15.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_notification = on_notification
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._closed_error: Exception | None = None
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        self.on_eof: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    async def request(self, method: str, handler_id: str | None = None, data: Any = None) -> Any:
        """Sends a request and waits for its response.

        Raises :class:`WorkerDiedError` if the worker is gone (before or
        while waiting) and the mapped error class if the worker rejected it.
        """
        if self._closed_error is not None:
            raise self._closed_error
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(encode_frame({"id": rid, "method": method, "handlerId": handler_id, "data": data}))
        except Exception as exc:  # broken pipe while the death is not noticed yet
            self._pending.pop(rid, None)
            raise WorkerDiedError(f"worker channel is broken: {exc}") from exc
        try:
            return await asyncio.wait_for(fut, self._timeout)
        except asyncio.TimeoutError:
            raise ChannelError(f"worker did not answer {method!r} within {self._timeout} s") from None
        finally:
            self._pending.pop(rid, None)

    def request_nowait(self, method: str, handler_id: str | None = None, data: Any = None) -> None:
        """Sends a request now (keeping channel order) without waiting for
        its answer; a failure is only logged. Used by synchronous close()."""
        if self._closed_error is not None:
            return
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut

        def done(f: asyncio.Future[Any]) -> None:
            self._pending.pop(rid, None)
            if not f.cancelled() and f.exception() is not None:
                logger.debug("%s failed: %s", method, f.exception())

        fut.add_done_callback(done)
        try:
            self._writer.write(encode_frame({"id": rid, "method": method, "handlerId": handler_id, "data": data}))
        except Exception as exc:
            self._pending.pop(rid, None)
            logger.debug("%s not sent: %s", method, exc)

    def send_binary(self, target_id: str, event: str, records: bytes) -> None:
        """A binary frame to the worker (a DirectTransport's datagrams)."""
        if self._closed_error is not None:
            raise self._closed_error
        self._writer.write(encode_binary_frame(target_id, event, records))

    def close(self, error: Exception) -> None:
        """Fails every pending and future request with `error`."""
        if self._closed_error is not None:
            return
        self._closed_error = error
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
        self._read_task.cancel()
        try:
            self._writer.close()
        except Exception:
            pass

    async def _read_loop(self) -> None:
        frames = FrameReader()
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for msg in frames.feed(data):
                    self._dispatch(msg)
        except asyncio.CancelledError:
            return
        except ConnectionError as exc:
            logger.debug("worker channel closed: %s", exc)
        except Exception:
            logger.exception("worker channel read failed")
        if self.on_eof is not None:
            self.on_eof()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            fut = self._pending.get(msg["id"])
            if fut is None or fut.done():
                return
            if msg.get("accepted"):
                fut.set_result(msg.get("data"))
            else:
                cls = _ERRORS.get(msg.get("error", ""), ChannelError)
                fut.set_exception(cls(msg.get("reason", "request failed")))
            return
        try:
            self._on_notification(msg.get("targetId", ""), msg.get("event", ""), msg.get("data"))
        except Exception:
            logger.exception("notification handler failed")
