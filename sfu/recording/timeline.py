"""One timeline for all tracks of a participant, from RTCP sender reports.

Each track maps its RTP timestamps to the local clock (the ``arrival``
times the caller passes in, seconds):

* before the track's first sender report, the first frame's arrival time
  anchors its timestamps;
* the track's first sender report anchors them on the report's NTP <-> RTP
  mapping. NTP times are the sender's clock; the offset between the
  sender's clock and the local clock is measured once per participant, at
  the first report of any of its tracks, and shared by all its tracks, so
  audio and video keep the relation the sender stated (A/V sync) whatever
  their network delays;
* later reports move the anchor by an eighth of their disagreement with it
  (senders such as aiortc pair "now" with the last packet's timestamp, so
  each report is off by up to a frame interval; jumping to each one would
  move frames backwards in the file); a disagreement over
  ``REANCHOR_S`` (a timestamp jump, a new clock) re-anchors at once.

32-bit RTP timestamps are unwrapped (extended) per track.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

REANCHOR_S = 0.1  # a report disagreeing by more than this re-anchors at once
SLEW = 1 / 8  # otherwise the anchor moves by this share of the disagreement


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
        wall, ext = ntp_seconds + tl.sender_offset, self.extend(rtp_timestamp)
        if self.synced and self._anchor is not None:
            error = wall - (self._anchor[0] + (ext - self._anchor[1]) / self.clock_rate)
            if abs(error) <= REANCHOR_S:
                wall = wall - error + error * SLEW
            else:
                log.debug("sender report off by %.3f s: re-anchored", error)
        self._anchor = (wall, ext)
        self.synced = True

    def local_time(self, timestamp: int, arrival: float) -> float:
        """Local time (seconds) of the media instant ``timestamp``; the first
        call anchors an unsynced track on ``arrival``."""
        ext = self.extend(timestamp)
        if self._anchor is None:
            self._anchor = (arrival, ext)
        wall, anchor_ext = self._anchor
        return wall + (ext - anchor_ext) / self.clock_rate
