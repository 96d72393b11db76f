"""Groups in-order RTP packets into complete encoded frames.

Codec-independent: a :class:`Depacketizer` turns the payloads of one frame
into the frame's bytes. The assembler handles what loss does to a stream:

* a frame with a missing packet is dropped (``frames_dropped``);
* for video, the frames after a loss are dropped until the next keyframe
  (they reference what was lost), and a stream starts at a keyframe: the
  frames before the first one are dropped too (``frames_before_keyframe``).
  While it waits, ``needs_keyframe`` is true and ``on_keyframe_needed`` is
  called once per wait so the caller can ask the sender for one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sfu.recording.reorder import Arrived, Gap

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete encoded frame."""

    data: bytes
    timestamp: int  # RTP timestamp (32-bit)
    keyframe: bool
    arrival: float  # arrival time of its first packet (seconds)


class Depacketizer(Protocol):
    """Per-codec payload handling."""

    video: bool

    def assemble(self, payloads: list[bytes]) -> tuple[bytes, bool] | None:
        """The frame (bytes, keyframe) carried by these payloads in order, or
        ``None`` if they do not form a whole frame."""


class FrameAssembler:
    """In-order packets and gaps in, complete frames out."""

    def __init__(
        self,
        depacketizer: Depacketizer,
        on_keyframe_needed: Callable[[], None] | None = None,
    ) -> None:
        self.depacketizer = depacketizer
        self.on_keyframe_needed = on_keyframe_needed
        self.needs_keyframe = depacketizer.video
        self._asked = False  # on_keyframe_needed called for the current wait
        self._ts: int | None = None
        self._payloads: list[bytes] = []
        self._arrival = 0.0
        self._broken = False  # the frame in progress lost a packet
        self._gap_before = False  # a gap preceded the next frame's first packet
        self.frames_out = 0
        self.frames_dropped = 0
        self.frames_before_keyframe = 0

    def push(self, items: list[Arrived | Gap]) -> list[Frame]:
        """Feed released packets and gaps; returns the frames completed."""
        out: list[Frame] = []
        for item in items:
            if isinstance(item, Gap):
                if self._ts is not None:
                    self._broken = True
                elif self.depacketizer.video:
                    # The next packet may not be its frame's first. (Audio
                    # frames are one packet each: whole frames were lost.)
                    self._gap_before = True
                if self.depacketizer.video:
                    self._wait_for_keyframe()
                continue
            p = item.packet
            if self._ts is not None and p.timestamp != self._ts:
                self._finish(out)  # the marker packet was not seen: no loss, so trust it
            if self._ts is None:
                self._ts = p.timestamp
                self._arrival = item.arrival
                self._broken = self._gap_before
                self._gap_before = False
            self._payloads.append(p.payload)
            if p.marker or not self.depacketizer.video:
                self._finish(out)
        return out

    def flush(self) -> list[Frame]:
        """End of stream: a frame in progress without its marker is dropped."""
        if self._ts is not None and self.depacketizer.video:
            self._broken = True
        out: list[Frame] = []
        if self._ts is not None:
            self._finish(out)
        return out

    def _wait_for_keyframe(self) -> None:
        if not self.needs_keyframe:
            self.needs_keyframe = True
            self._asked = False
        if not self._asked:
            self._asked = True
            log.debug("waiting for a keyframe")
            if self.on_keyframe_needed is not None:
                self.on_keyframe_needed()

    def _finish(self, out: list[Frame]) -> None:
        assert self._ts is not None
        ts, payloads, broken = self._ts, self._payloads, self._broken
        self._ts, self._payloads, self._broken = None, [], False
        result = None if broken else self.depacketizer.assemble(payloads)
        if result is None:
            self.frames_dropped += 1
            if self.depacketizer.video:
                self._wait_for_keyframe()
            return
        data, key = result
        if self.needs_keyframe:
            if not key:
                if self.frames_out == 0:
                    self.frames_before_keyframe += 1
                self.frames_dropped += 1
                self._wait_for_keyframe()
                return
            self.needs_keyframe = False
            self._asked = False
        self.frames_out += 1
        out.append(Frame(data, ts, key, self._arrival))
