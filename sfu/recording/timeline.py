"""One timeline for all tracks of a participant, from RTCP sender reports.

Each track maps its RTP timestamps to the local clock (the ``arrival``
times the caller passes in, seconds):

* before the track's first sender report, the first frame's arrival time
  anchors its timestamps;
* once a sender report arrives, the report's NTP <-> RTP mapping anchors
  them. NTP times are the sender's clock; the offset between the sender's
  clock and the local clock is measured once per participant, at the first
  report of any of its tracks, and shared by all its tracks, so audio and
  video keep the relation the sender stated (A/V sync) whatever their
  network delays.

32-bit RTP timestamps are unwrapped (extended) per track.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Timeline:
    """The clock shared by the tracks of one participant."""

    def __init__(self) -> None:
        self.sender_offset: float | None = None  # local time - sender NTP time

    def clock(self, clock_rate: int) -> TrackClock:
        """A new track clock on this timeline."""
        return TrackClock(self, clock_rate)


class TrackClock:
    """RTP timestamp -> local seconds for one track."""

    def __init__(self, timeline: Timeline, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.timeline = timeline
        self.clock_rate = clock_rate
        self._last_ext: int | None = None
        self._anchor: tuple[float, int] | None = None  # (local seconds, extended timestamp)
        self.synced = False  # anchored by a sender report

    def extend(self, timestamp: int) -> int:
        """Unwrap a 32-bit RTP timestamp relative to the last one seen."""
        if self._last_ext is None:
            self._last_ext = timestamp
            return timestamp
        delta = (timestamp - self._last_ext) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        ext = self._last_ext + delta
        self._last_ext = max(self._last_ext, ext)
        return ext

    def push_sender_report(self, ntp_seconds: float, rtp_timestamp: int, arrival: float) -> None:
        """Anchor the track on a sender report received at ``arrival``."""
        tl = self.timeline
        if tl.sender_offset is None:
            tl.sender_offset = arrival - ntp_seconds
            log.debug("sender clock offset %.6f s", tl.sender_offset)
        self._anchor = (ntp_seconds + tl.sender_offset, self.extend(rtp_timestamp))
        self.synced = True

    def local_time(self, timestamp: int, arrival: float) -> float:
        """Local time (seconds) of the media instant ``timestamp``; the first
        call anchors an unsynced track on ``arrival``."""
        ext = self.extend(timestamp)
        if self._anchor is None:
            self._anchor = (arrival, ext)
        wall, anchor_ext = self._anchor
        return wall + (ext - anchor_ext) / self.clock_rate
