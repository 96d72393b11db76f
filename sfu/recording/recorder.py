"""Records RTP tracks into WebM or Matroska without transcoding.

Sans-IO: the caller passes RTP packets and sender reports in, with their
arrival times; the recorder depacketizes them into encoded frames, places
the frames on the participant's timeline and muxes them with PyAV
(``av.Packet``; no decoder or encoder is ever opened).

The file header needs every track's parameters (a video track's size, the
H.264 parameter sets), so frames are held until each track has its first
frame and its first sender report; without reports, until every track has
a frame and ``start_timeout`` seconds (of arrival time) have passed since
the first packet; in any case no longer than three times that, or until
``max_pending_frames`` are held. Tracks cannot be added after that.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from sfu.recording.frames import Depacketizer, Frame, FrameAssembler
from sfu.recording.h264 import H264Depacketizer
from sfu.recording.opus import OpusDepacketizer, opus_head
from sfu.recording.reorder import ReorderBuffer
from sfu.recording.rtp import parse_rtp
from sfu.recording.timeline import Timeline, TrackClock
from sfu.recording.vp8 import Vp8Depacketizer
from sfu.recording.vp9 import Vp9Depacketizer

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1000)  # Matroska's default timestamp scale (1 ms)

# mime type -> (codec, kind)
_CODECS = {
    "video/vp8": ("vp8", "video"),
    "video/vp9": ("vp9", "video"),
    "video/h264": ("h264", "video"),
    "audio/opus": ("opus", "audio"),
}
_NOT_BUILT = {"video/av1": "AV1 depacketization (RFC 9420-style OBU aggregation) is not built yet"}
# container -> (PyAV format name, codecs it may hold)
_CONTAINERS = {
    "webm": ("webm", {"vp8", "vp9", "opus"}),
    "mkv": ("matroska", {"vp8", "vp9", "opus", "h264"}),
}
# Encoders only lend their codec id to a stream template; they are never opened.
_TEMPLATE_ENCODERS = {
    "vp8": ("libvpx", "vp8"),
    "vp9": ("libvpx-vp9", "vp9"),
    "h264": ("libx264", "h264", "libopenh264"),
    "opus": ("libopus", "opus"),
}


class RecordingError(ValueError):
    """A recorder was asked for something it cannot do."""


@dataclass
class TrackStats:
    """Counters of one track."""

    packets_received: int = 0
    packets_invalid: int = 0
    packets_lost: int = 0
    packets_late: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    frames_before_keyframe: int = 0
    bytes_written: int = 0
    mux_errors: int = 0  # frames the muxer refused (logged, not written)


class Track:
    """One RTP stream being recorded (created by :meth:`Recorder.add_track`)."""

    def __init__(
        self,
        recorder: Recorder,
        kind: str,
        codec: str,
        clock_rate: int,
        channels: int,
        clock: TrackClock,
        depacketizer: Depacketizer,
        on_keyframe_needed: Callable[[], None] | None,
        reorder: ReorderBuffer,
    ) -> None:
        self.recorder = recorder
        self.kind = kind
        self.codec = codec
        self.clock_rate = clock_rate
        self.channels = channels
        self.clock = clock
        self.depacketizer = depacketizer
        self.assembler = FrameAssembler(depacketizer, on_keyframe_needed)
        self.reorder = reorder
        self._stats = TrackStats()
        self._last_arrival = 0.0
        self.pending: list[Frame] = []  # frames waiting for the file header
        self.stream: av.stream.Stream | None = None
        self._held: tuple[int, Frame] | None = None  # written when the next frame gives its duration
        self._last_pts: int | None = None
        self._last_ts: int | None = None  # RTP timestamp of the last frame written
        self._last_duration = 0

    @property
    def needs_keyframe(self) -> bool:
        """True while the track waits for a keyframe (ask the sender for one)."""
        return self.assembler.needs_keyframe

    @property
    def stats(self) -> TrackStats:
        """A snapshot of the counters."""
        s = self._stats
        s.packets_lost = self.reorder.packets_lost
        s.packets_late = self.reorder.packets_late
        s.frames_dropped = self.assembler.frames_dropped
        s.frames_before_keyframe = self.assembler.frames_before_keyframe
        return TrackStats(**vars(s))

    def push_rtp(self, packet: bytes, arrival: float) -> None:
        """Feed one RTP packet received at ``arrival`` (seconds, local clock)."""
        self._stats.packets_received += 1
        self._last_arrival = arrival
        rtp = parse_rtp(packet)
        if rtp is None:
            self._stats.packets_invalid += 1
            return
        frames = self.assembler.push(self.reorder.push(rtp, arrival))
        self.recorder._on_frames(self, frames, arrival)

    def poll(self, now: float) -> None:
        """Release packets that waited ``reorder_delay`` for a missing one
        (call it from a timer when packets may stop arriving)."""
        frames = self.assembler.push(self.reorder.poll(now))
        self.recorder._on_frames(self, frames, now)

    def push_sender_report(self, ntp_seconds: float, rtp_ts: int, arrival: float | None = None) -> None:
        """Feed the NTP <-> RTP mapping of a sender report of this track
        (``arrival`` defaults to the last packet's arrival)."""
        self.clock.push_sender_report(ntp_seconds, rtp_ts, self._last_arrival if arrival is None else arrival)
        self.recorder._maybe_start(self._last_arrival if arrival is None else arrival)

    def _flush(self) -> list[Frame]:
        return self.assembler.push(self.reorder.flush()) + self.assembler.flush()

    def _write(self, frame: Frame, zero: float) -> None:
        assert self.stream is not None
        pts = round((self.clock.local_time(frame.timestamp, frame.arrival) - zero) * 1000)
        if self._last_pts is not None and self._last_ts is not None:
            # frames never come closer than their RTP spacing: a sender report
            # that moved the timeline back by a few ms would overlap Opus
            # frames (decoders go back in time) and put two video frames in
            # one tick of a player's frame clock; a correction back waits for
            # the mapping to move forward again instead
            step = (frame.timestamp - self._last_ts) & 0xFFFFFFFF
            if step < self.clock.clock_rate:  # forward, under a second
                pts = max(pts, self._last_pts + int(step * 1000 // self.clock.clock_rate))
        self._last_ts = frame.timestamp
        if self._last_pts is not None and pts <= self._last_pts:
            log.debug("%s: timestamp %d not after %d, moved", self.codec, pts, self._last_pts)
            pts = self._last_pts + 1
        pts = max(pts, 0)
        self._last_pts = pts
        if self._held is not None:
            self._mux(*self._held, pts - self._held[0])
        self._held = (pts, frame)

    def _mux(self, pts: int, frame: Frame, duration: int) -> None:
        assert self.stream is not None
        packet = av.Packet(frame.data)
        packet.stream = self.stream
        packet.time_base = TIME_BASE
        packet.pts = packet.dts = pts
        packet.duration = max(duration, 1)
        packet.is_keyframe = frame.keyframe
        try:
            self.recorder._container.mux(packet)  # type: ignore[union-attr]
        except av.error.FFmpegError as e:
            # A refused frame must not stop the packet source that feeds us.
            self._stats.mux_errors += 1
            log.warning("%s: muxer refused a frame at %d ms: %s", self.codec, pts, e)
            return
        self._last_duration = duration
        self._stats.frames_written += 1
        self._stats.bytes_written += len(frame.data)

    def _close(self) -> None:
        if self._held is not None:
            default = 20 if self.kind == "audio" else 33
            self._mux(*self._held, self._last_duration or default)
            self._held = None


class Recorder:
    """Writes the tracks of one participant into one file."""

    def __init__(
        self,
        path: str | Path,
        container: str = "webm",
        *,
        start_timeout: float = 2.0,
        max_pending_frames: int = 1000,
        reorder_packets: int = 64,
        reorder_delay: float = 0.25,
    ) -> None:
        if container not in _CONTAINERS:
            raise RecordingError(f"container must be one of {sorted(_CONTAINERS)}, got {container!r}")
        self.path = Path(path)
        self.container = container
        self.start_timeout = start_timeout
        self.max_pending_frames = max_pending_frames
        self.reorder_packets = reorder_packets
        self.reorder_delay = reorder_delay
        self.timeline = Timeline()
        self.tracks: list[Track] = []
        self._container: av.container.OutputContainer | None = None
        self._zero: float | None = None
        self._first_arrival: float | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """True once the file header is written."""
        return self._container is not None

    def add_track(
        self,
        kind: str,
        mime_type: str,
        clock_rate: int,
        *,
        channels: int = 2,
        on_keyframe_needed: Callable[[], None] | None = None,
    ) -> Track:
        """Add a track; raises :class:`RecordingError` if this container
        cannot hold the codec or the recording has started."""
        mime = mime_type.lower()
        if mime in _NOT_BUILT:
            raise RecordingError(f"{mime_type}: {_NOT_BUILT[mime]}")
        if mime not in _CODECS:
            raise RecordingError(f"{mime_type} cannot be recorded (supported: {', '.join(sorted(_CODECS))})")
        codec, codec_kind = _CODECS[mime]
        if kind != codec_kind:
            raise RecordingError(f"{mime_type} is a {codec_kind} codec, the track is {kind}")
        allowed = _CONTAINERS[self.container][1]
        if codec not in allowed:
            hint = " (use container='mkv')" if codec == "h264" else ""
            raise RecordingError(f"{self.container} cannot hold {mime_type}{hint}")
        if self.started or self._closed:
            raise RecordingError("tracks must be added before the recording starts")
        depacketizer: Depacketizer = {
            "vp8": Vp8Depacketizer,
            "vp9": Vp9Depacketizer,
            "h264": H264Depacketizer,
            "opus": OpusDepacketizer,
        }[codec]()
        track = Track(
            self,
            kind,
            codec,
            clock_rate,
            channels,
            self.timeline.clock(clock_rate),
            depacketizer,
            on_keyframe_needed,
            ReorderBuffer(self.reorder_packets, self.reorder_delay),
        )
        self.tracks.append(track)
        return track

    @property
    def frames_written(self) -> int:
        """Frames written, all tracks."""
        return sum(t.stats.frames_written for t in self.tracks)

    @property
    def frames_dropped(self) -> int:
        """Frames dropped (loss, waiting for a keyframe), all tracks."""
        return sum(t.stats.frames_dropped for t in self.tracks)

    @property
    def bytes_written(self) -> int:
        """Encoded bytes written, all tracks (the file adds container overhead)."""
        return sum(t.stats.bytes_written for t in self.tracks)

    def close(self) -> None:
        """Flush what is held (declaring missing packets lost), write the
        trailer. A recording that never got a frame leaves no file."""
        if self._closed:
            return
        self._closed = True
        for track in self.tracks:
            frames = track._flush()
            if self.started:
                for f in frames:
                    track._write(f, self._zero)  # type: ignore[arg-type]
            else:
                track.pending.extend(frames)
        if not self.started and any(t.pending for t in self.tracks):
            self._start()
        if self._container is not None:
            for track in self.tracks:
                track._close()
            self._container.close()
            log.info(
                "recording %s closed: %d frames, %d bytes, %d dropped",
                self.path,
                self.frames_written,
                self.bytes_written,
                self.frames_dropped,
            )
        else:
            log.warning("recording %s closed without a frame; no file written", self.path)

    def _on_frames(self, track: Track, frames: list[Frame], arrival: float) -> None:
        if self._first_arrival is None:
            self._first_arrival = arrival
        if self._closed:
            return
        if self.started:
            for f in frames:
                track._write(f, self._zero)  # type: ignore[arg-type]
            return
        track.pending.extend(frames)
        self._maybe_start(arrival)

    def _maybe_start(self, now: float) -> None:
        if self.started or self._closed or not any(t.pending for t in self.tracks):
            return
        waited = 0.0 if self._first_arrival is None else now - self._first_arrival
        all_framed = all(t.pending for t in self.tracks)
        ready = all_framed and all(t.clock.synced for t in self.tracks)
        # Without a report after start_timeout, or without a frame on some
        # track after three times that, start with what there is.
        timed_out = (all_framed and waited >= self.start_timeout) or waited >= 3 * self.start_timeout
        full = sum(len(t.pending) for t in self.tracks) >= self.max_pending_frames
        if ready or timed_out or full:
            self._start()

    def _start(self) -> None:
        fmt, _ = _CONTAINERS[self.container]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        out = av.open(str(self.path), "w", format=fmt)
        templates = av.open(io.BytesIO(), "w", format="matroska")
        try:
            for track in self.tracks:
                track.stream = self._add_stream(out, templates, track)
        finally:
            templates.close()
        self._container = out
        timed = [
            (t.clock.local_time(f.timestamp, f.arrival), i, t, f)
            for i, t in enumerate(self.tracks)
            for f in t.pending
        ]
        self._zero = min(x[0] for x in timed)
        timed.sort(key=lambda x: (x[0], x[1]))
        for _, _, track, frame in timed:
            track._write(frame, self._zero)
        for track in self.tracks:
            track.pending.clear()
        log.info(
            "recording %s started: %s",
            self.path,
            ", ".join(f"{t.codec}{'' if t.clock.synced else ' (no sender report)'}" for t in self.tracks),
        )

    def _add_stream(self, out: av.container.OutputContainer, templates: av.container.OutputContainer, track: Track) -> av.stream.Stream:
        encoder = next((e for e in _TEMPLATE_ENCODERS[track.codec] if e in av.codecs_available), None)
        if encoder is None:
            raise RecordingError(f"PyAV's FFmpeg knows no {track.codec} codec")
        stream = out.add_stream_from_template(templates.add_stream(encoder), opaque=False)
        ctx = stream.codec_context
        if track.kind == "video":
            d = track.depacketizer
            width, height = getattr(d, "width", None), getattr(d, "height", None)
            if not width or not height:
                log.warning("%s track: no keyframe before the header, size unknown", track.codec)
                width, height = 640, 480
            ctx.width, ctx.height = width, height
            ctx.framerate = Fraction(0, 1)  # variable frame rate: no DefaultDuration
            extradata = getattr(d, "extradata", None)
            if extradata:
                ctx.extradata = extradata
        else:
            ctx.sample_rate = track.clock_rate
            ctx.layout = "stereo" if track.channels == 2 else "mono"
            ctx.extradata = opus_head(track.channels, track.clock_rate)
        stream.time_base = TIME_BASE
        return stream
