"""A recording of some producers of a router, outside the forwarding path.

The router sends the producers' RTP (and the consumers' RTCP sender
reports) through a :class:`~sfu.plain_transport.PlainTransport` to a UDP
socket of this process on 127.0.0.1, as it would to any receiver: the
worker's forwarding never waits for the recording. A thread of the session
reads the socket every ``read_interval`` (20 ms; each datagram keeps its
kernel arrival time), not at every datagram, so that the worker does not
pay a wake-up of the thread per packet it sends (kernel buffer of
``socket_buffer`` bytes: when the thread
falls behind, the kernel drops datagrams, counted as ``packets_dropped``),
feeds the sans-IO :class:`~sfu.recording.Recorder` and writes the file. A
video consumer starts at a keyframe, which the SFU asks the publisher for.

    session = await RecordingSession.start(router, [audio, video], "call.webm")
    ...
    info = await session.stop()   # the file is complete once this returns
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sfu.recording.recorder import Recorder, RecordingError
from sfu.recording.rtp import parse_sender_reports

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.plain_transport import PlainTransport
    from sfu.producer import Producer
    from sfu.router import Router

log = logging.getLogger(__name__)

_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: drop count in each datagram's ancillary data
_POLL_S = 0.05
_SO_TIMESTAMPNS = 35  # Linux (SO_TIMESTAMPNS_OLD; SCM_TIMESTAMPNS is the same number): arrival time per datagram
#: the thread drains its socket this often (seconds) instead of waking at
#: every datagram: a sleeping reader costs the worker a wake-up per packet
#: it sends (measured in docs/recording.md, "Cost of recording")
READ_INTERVAL_S = 0.02
_ANC_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(16)
KEYFRAME_ASK_S = 0.5


@dataclass
class RecordingInfo:
    """What a recording session did (``RecordingSession.info()``)."""

    path: str
    container: str
    producer_ids: list[str]
    started_at: float                 # time.time()
    stopped_at: Optional[float] = None
    packets_received: int = 0
    packets_dropped: int = 0          # by the kernel: the session's thread fell behind
    frames_written: int = 0
    frames_dropped: int = 0           # loss, waiting for a keyframe
    bytes_written: int = 0            # encoded bytes (the file adds container overhead)
    keyframes_asked: int = 0          # after a frame lost for good
    nacked: int = 0                   # sequence numbers asked again (generic NACK to the SFU)
    error: Optional[str] = None
    tracks: list[dict[str, Any]] = field(default_factory=list)
    thread_id: Optional[int] = None   # the session thread's native id (its CPU: /proc/<pid>/task/<id>/stat)


class RecordingSession:
    """Records ``producers`` of one router into one file (WebM: VP8/VP9 +
    Opus; Matroska, ``container="mkv"``: H.264 too). Use :meth:`start`."""

    def __init__(self, path: Path, container: str, producers: list["Producer"], socket_buffer: int,
                 read_interval: float = READ_INTERVAL_S) -> None:
        self.path = path
        self.container = container
        self.producers = producers
        self._recorder = Recorder(path, container)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, socket_buffer)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
            self._overflow = True
        except OSError:
            self._overflow = False
        try:  # the kernel's arrival time, so that reading in batches does not move it
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            pass
        self._sock.bind(("127.0.0.1", 0))
        self._read_interval = max(0.0, read_interval)
        if self._read_interval > 0:
            self._sock.setblocking(False)
        else:
            self._sock.settimeout(_POLL_S)
        self._transport: Optional["PlainTransport"] = None
        self._consumers: list["Consumer"] = []
        self._tracks: dict[int, Any] = {}          # ssrc -> recorder Track
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._info = RecordingInfo(str(path), container, [p.id for p in producers], time.time())
        self._keyframes_asked = 0
        self._askers: list[tuple[Any, Any]] = []  # (track, ask): asked again while a track waits
        self._nacks: dict[int, _NackState] = {}   # ssrc -> what is missing and asked for
        self._sfu_addr: Optional[tuple[str, int]] = None

    @classmethod
    async def start(cls, router: "Router", producers: list["Producer"], path: str | Path, *,
                    container: str = "webm", socket_buffer: int = 4 << 20,
                    read_interval: float = READ_INTERVAL_S) -> "RecordingSession":
        """Starts recording: one plain transport of ``router`` toward this
        process, one consumer per producer; the thread reads the socket
        every ``read_interval`` seconds (0: at every datagram). Raises :class:`RecordingError`
        when a producer's codec cannot go into ``container`` (nothing is
        left behind then)."""
        if not producers:
            raise RecordingError("nothing to record: no producer given")
        self = cls(Path(path), container, list(producers), socket_buffer, read_interval)
        try:
            port = self._sock.getsockname()[1]
            self._transport = await router.create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=True,
                                                                   comedia=False)
            await self._transport.connect(ip="127.0.0.1", port=port)
            loop = asyncio.get_running_loop()
            self._sfu_addr = (self._transport.tuple["localIp"], int(self._transport.tuple["localPort"]))
            # no RTX: what the session NACKs comes back as the original packet
            # and no bandwidth estimation (no transport-cc or REMB from us)
            caps = dict(router.rtp_capabilities)
            caps["codecs"] = [{**c, "rtcpFeedback": [fb for fb in c.get("rtcpFeedback") or []
                                                     if fb.get("type") in ("nack", "ccm")]}
                              for c in caps["codecs"] if not c["mimeType"].lower().endswith("/rtx")]
            for producer in self.producers:
                consumer = await self._transport.consume(producer.id, caps)
                self._consumers.append(consumer)
                codec = consumer.rtp_parameters["codecs"][0]
                track = self._recorder.add_track(consumer.kind, codec["mimeType"], codec["clockRate"],
                                                 channels=codec.get("channels", 2),
                                                 on_keyframe_needed=self._keyframe_asker(loop, consumer))
                self._askers.append((track, track.assembler.on_keyframe_needed))
                ssrc = consumer.rtp_parameters["encodings"][0]["ssrc"]
                self._tracks[ssrc] = track
                self._nacks[ssrc] = _NackState()
        except BaseException:
            self._close_media()
            self._sock.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"recording {self.path.name}", daemon=True)
        self._thread.start()
        log.info("recording %s: %d track(s) of %s", self.path, len(self._tracks),
                 ", ".join(p.id for p in self.producers))
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def info(self) -> RecordingInfo:
        """The counters so far (a copy)."""
        with self._lock:
            r = self._recorder
            i = self._info
            i.frames_written, i.frames_dropped, i.bytes_written = r.frames_written, r.frames_dropped, r.bytes_written
            i.keyframes_asked = self._keyframes_asked
            i.tracks = [{"kind": t.kind, "codec": t.codec, **vars(t.stats)} for t in r.tracks]
            return RecordingInfo(**{**vars(i), "producer_ids": list(i.producer_ids), "tracks": list(i.tracks)})

    async def stop(self) -> RecordingInfo:
        """Stops the consumers, lets the thread write what it holds and the
        file's trailer; returns the final counters."""
        self._close_media()
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._sock.close()
        with self._lock:
            self._info.stopped_at = time.time()
        info = self.info()
        log.info("recording %s stopped: %d frames (%d dropped), %d packets dropped by the kernel",
                 self.path, info.frames_written, info.frames_dropped, info.packets_dropped)
        return info

    def _close_media(self) -> None:
        for c in self._consumers:
            if not c.closed:
                c.close()
        if self._transport is not None and not self._transport.closed:
            self._transport.close()

    def _keyframe_asker(self, loop: asyncio.AbstractEventLoop, consumer: "Consumer") -> Any:
        """A callback for the recorder's thread: a track lost a frame for
        good and waits for a keyframe; ask the publisher (at most every
        KEYFRAME_ASK_S; the SFU throttles requests too)."""
        last = [0.0]

        def ask() -> None:
            now = time.monotonic()
            if now - last[0] < KEYFRAME_ASK_S or consumer.closed:
                return
            last[0] = now
            self._keyframes_asked += 1
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._ask(consumer)))

        return ask

    async def _ask(self, consumer: "Consumer") -> None:
        try:
            await consumer.request_key_frame()
        except Exception as exc:  # closed meanwhile
            log.debug("recording %s: keyframe request: %s", self.path, exc)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        with self._lock:
            self._info.thread_id = threading.get_native_id()
        sock = self._sock
        next_poll = 0.0
        try:
            while not self._stop.is_set():
                if self._read_interval > 0:
                    t0 = time.monotonic()
                    if not self._drain():
                        break
                    now = time.monotonic()
                    if now >= next_poll:  # timers: losses declared, keyframes asked again
                        next_poll = now + _POLL_S
                        self._poll(now)
                    self._stop.wait(max(0.0, self._read_interval - (time.monotonic() - t0)))
                    continue
                try:
                    data, anc, _, _ = sock.recvmsg(2048, _ANC_SPACE)
                except socket.timeout:
                    data = None
                except OSError:
                    break
                now = time.monotonic()
                if data is not None:
                    arrival = self._count_drops(anc, now - time.time())
                    with self._lock:
                        self._info.packets_received += 1
                        self._feed(data, now if arrival is None else arrival)
                if now >= next_poll:  # timers: losses declared, keyframes asked again
                    next_poll = now + _POLL_S
                    self._poll(now)
            # what is still in the socket, then the tail of every track
            sock.setblocking(False)
            self._drain()
        except Exception as exc:  # a recording error must not go unseen; forwarding is not affected
            log.exception("recording %s failed", self.path)
            with self._lock:
                self._info.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                try:
                    self._recorder.close()
                except Exception as exc:
                    log.exception("recording %s: closing the file failed", self.path)
                    self._info.error = self._info.error or f"{type(exc).__name__}: {exc}"

    def _drain(self) -> bool:
        """Feeds what the (non-blocking) socket holds, each datagram at its
        kernel arrival time; False once the socket is closed."""
        batch = []
        offset = time.monotonic() - time.time()  # CLOCK_REALTIME (the timestamps) to monotonic
        while True:
            try:
                data, anc, _, _ = self._sock.recvmsg(2048, _ANC_SPACE)
            except BlockingIOError:
                break
            except OSError:
                return False
            arrival = self._count_drops(anc, offset)
            batch.append((data, time.monotonic() if arrival is None else arrival))
        if batch:
            with self._lock:
                self._info.packets_received += len(batch)
                for data, arrival in batch:
                    self._feed(data, arrival)
        return True

    def _feed(self, data: bytes, now: float) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        if 200 <= data[1] <= 207:  # RTCP (rtcp-mux): the consumers' sender reports
            for sr in parse_sender_reports(data):
                track = self._tracks.get(sr.ssrc)
                if track is not None:
                    track.push_sender_report(sr.ntp_seconds, sr.rtp_timestamp, now)
            return
        ssrc = struct.unpack_from("!I", data, 8)[0]
        track = self._tracks.get(ssrc)
        if track is not None:  # (probes have other SSRCs)
            self._nacks[ssrc].on_packet(struct.unpack_from("!H", data, 2)[0], now)
            track.push_rtp(data, now)

    def _poll(self, now: float) -> None:
        with self._lock:
            for track in self._recorder.tracks:
                track.poll(now)
            waiting = [ask for track, ask in self._askers if track.needs_keyframe and track.stats.packets_received]
            nacks = [(ssrc, st.due(now)) for ssrc, st in self._nacks.items()]
        for ask in waiting:  # (each asks at most every KEYFRAME_ASK_S)
            ask()
        for ssrc, seqs in nacks:
            if seqs and self._sfu_addr is not None:
                try:
                    self._sock.sendto(build_nack(ssrc, seqs), self._sfu_addr)
                except OSError:
                    pass
                with self._lock:
                    self._info.nacked += len(seqs)

    def _count_drops(self, anc: list[tuple[int, int, bytes]], offset: float) -> Optional[float]:
        """Reads a datagram's ancillary data: the socket's drops so far into
        the counters; returns its arrival time on the monotonic clock (the
        kernel's realtime stamp + ``offset``), or None without one."""
        arrival = None
        for level, kind, value in anc:
            if level != socket.SOL_SOCKET:
                continue
            if kind == _SO_RXQ_OVFL and len(value) >= 4:
                with self._lock:
                    self._info.packets_dropped = struct.unpack("=I", value[:4])[0]
            elif kind == _SO_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = struct.unpack("=qq", value[:16])
                arrival = sec + nsec * 1e-9 + offset
        return arrival


NACK_RETRY_S = 0.04
NACK_TRIES = 5
NACK_MAX_MISSING = 64


class _NackState:
    """The sequence numbers missing in one stream: each is asked for at once,
    then every NACK_RETRY_S, NACK_TRIES times at most (the recorder waits
    ``reorder_delay`` for them)."""

    def __init__(self) -> None:
        self.highest: Optional[int] = None
        self.missing: dict[int, list[float]] = {}  # seq -> [next ask, tries]

    def on_packet(self, seq: int, now: float) -> None:
        self.missing.pop(seq, None)
        if self.highest is None:
            self.highest = seq
            return
        ahead = (seq - self.highest) & 0xFFFF
        if ahead == 0 or ahead >= 0x8000:
            return  # a duplicate, or late (maybe one we asked for)
        if ahead > 1:
            if ahead - 1 > NACK_MAX_MISSING:
                self.missing.clear()  # too much: the recorder waits for a keyframe
            else:
                for k in range(1, ahead):
                    self.missing[(self.highest + k) & 0xFFFF] = [now, 0]
        self.highest = seq

    def due(self, now: float) -> list[int]:
        out = []
        for seq, entry in list(self.missing.items()):
            if entry[1] >= NACK_TRIES:
                del self.missing[seq]
            elif now >= entry[0]:
                entry[0], entry[1] = now + NACK_RETRY_S, entry[1] + 1
                out.append(seq)
        return out


def build_nack(media_ssrc: int, seqs: list[int]) -> bytes:
    """An RTCP generic NACK (RFC 4585 6.2.1) for ``seqs`` of ``media_ssrc``."""
    seqs = sorted(set(seqs), key=lambda s: s)
    fci = []
    i = 0
    while i < len(seqs):
        pid, blp = seqs[i], 0
        j = i + 1
        while j < len(seqs) and 0 < ((seqs[j] - pid) & 0xFFFF) <= 16:
            blp |= 1 << (((seqs[j] - pid) & 0xFFFF) - 1)
            j += 1
        fci.append(struct.pack("!HH", pid, blp))
        i = j
    body = b"".join(fci)
    return struct.pack("!BBHII", 0x81, 205, 2 + len(body) // 4, 1, media_ssrc) + body
