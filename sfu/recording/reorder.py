"""Puts RTP packets back in sequence-number order and reports gaps.

A small jitter window: a packet that arrives out of order is held until the
missing ones arrive, or until the window is full (``max_packets``) or the
oldest held packet has waited ``max_delay`` seconds; then the missing
sequence numbers are declared lost (a :class:`Gap`). Sequence numbers are
extended past 16-bit wrap-around. Time is passed in (sans-IO).
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.recording.rtp import RtpPacket

# A jump this large is a sender restart, not loss: re-synchronise on it.
_RESYNC_JUMP = 3000


@dataclass(frozen=True, slots=True)
class Gap:
    """``count`` packets are missing before the next released packet (0:
    an unknown number, the sender's numbering jumped)."""

    count: int


@dataclass(frozen=True, slots=True)
class Arrived:
    """A packet released in order, with its arrival time (seconds)."""

    packet: RtpPacket
    arrival: float


class ReorderBuffer:
    """Sequence-number ordering with a bounded wait for missing packets."""

    def __init__(self, max_packets: int = 64, max_delay: float = 0.25) -> None:
        self.max_packets = max_packets
        self.max_delay = max_delay
        self._highest: int | None = None  # highest extended sequence number seen
        self._next: int | None = None  # extended sequence number released next
        self._held: dict[int, Arrived] = {}
        self.packets_lost = 0
        self.packets_late = 0  # arrived after their place was declared lost, or duplicates

    def _extend(self, seq: int) -> int:
        if self._highest is None:
            self._highest = seq
            return seq
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        ext = self._highest + delta
        self._highest = max(self._highest, ext)
        return ext

    def push(self, packet: RtpPacket, arrival: float) -> list[Arrived | Gap]:
        """Add a packet; returns what can now be released, in order."""
        ext = self._extend(packet.sequence_number)
        if self._next is None:
            self._next = ext
        elif abs(ext - self._next) > _RESYNC_JUMP:
            out = self.flush()
            out.append(Gap(0))  # what the old and new numbering lost is unknown
            self._highest = self._next = ext
            self._held[ext] = Arrived(packet, arrival)
            out.extend(self._release(arrival))
            return out
        if ext < self._next or ext in self._held:
            self.packets_late += 1
            return []
        self._held[ext] = Arrived(packet, arrival)
        return self._release(arrival)

    def poll(self, now: float) -> list[Arrived | Gap]:
        """Release what has waited longer than ``max_delay`` by ``now``
        (nothing before the first packet)."""
        if self._next is None:
            return []
        return self._release(now)

    def flush(self) -> list[Arrived | Gap]:
        """Release everything held (end of stream), declaring the gaps."""
        out: list[Arrived | Gap] = []
        while self._held:
            out.extend(self._skip_to_oldest())
        return out

    def _skip_to_oldest(self) -> list[Arrived | Gap]:
        assert self._next is not None
        first = min(self._held)
        out: list[Arrived | Gap] = []
        if first > self._next:
            self.packets_lost += first - self._next
            out.append(Gap(first - self._next))
            self._next = first
        out.extend(self._in_order())
        return out

    def _in_order(self) -> list[Arrived | Gap]:
        assert self._next is not None
        out: list[Arrived | Gap] = []
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        return out

    def _release(self, now: float) -> list[Arrived | Gap]:
        out = self._in_order()
        while self._held and (
            len(self._held) > self.max_packets
            or now - min(a.arrival for a in self._held.values()) > self.max_delay
        ):
            out.extend(self._skip_to_oldest())
        return out
