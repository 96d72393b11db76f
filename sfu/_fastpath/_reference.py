"""Pure-Python reference of the compiled packet core (src/rtp.c, rtcp.c, seqmgr.h).

This module is the readable specification of the C packet logic and the
differential oracle the tests compare it with (tests/test_differential.py).
It is never used at runtime and deliberately imports nothing from the
compiled module: every function here has the same name, arguments, results
and ValueError texts as its counterpart in `sfu._fastpath._engine`.

    classify(data)               RFC 7983 demultiplexing on the first byte
    parse_rtp(data)              RFC 3550 5.1 header -> dict
    rtp_extensions(data)         RFC 8285 one-byte/two-byte elements
    map_extensions(data, map)    re-encodes the extension block with new ids
    parse_rtcp(data)             splits/validates a compound (RFC 3550 6, 5506)
    SeqManager                   sequence number rewriting (seqmgr.h)

`build_rtp` is the inverse of `parse_rtp` (plus an element list), for tests.
"""

from __future__ import annotations

import struct

RTP_ERRORS = {
    -1: "packet shorter than the 12-byte RTP header",
    -2: "RTP version is not 2",
    -3: "CSRC list runs past the end of the packet",
    -4: "header extension header runs past the end of the packet",
    -5: "header extension length runs past the end of the packet",
    -6: "invalid padding length",
    -7: "malformed header extension element",
    -8: "no room to rewrite header extensions",
}

RTCP_ERRORS = {
    -1: "RTCP packet shorter than its 4-byte header",
    -2: "RTCP version is not 2",
    -3: "RTCP length runs past the end of the datagram",
    -4: "RTCP padding is invalid or not on the last packet",
    -5: "RTCP packet type is outside 192..223",
    -6: "RTCP packet too short for its report count",
    -7: "too many RTCP packets in one compound",
}

ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # the low 4 bits ("appbits") may be anything
MAX_EXTENSIONS = 32  # elements per packet (SFU_RTP_MAX_EXTENSIONS)
MAX_RTCP_ITEMS = 64  # packets per compound (SFU_RTCP_MAX_ITEMS)
MAP_EXTRA_ROOM = 9000  # map_extensions' buffer: len(data) + 9000 bytes


def _rtp_error(code: int) -> ValueError:
    return ValueError(RTP_ERRORS[code])


def _rtcp_error(code: int) -> ValueError:
    return ValueError(RTCP_ERRORS[code])


def _check_bytes(data: object) -> bytes:
    if type(data) is not bytes:
        raise TypeError(f"Argument 'data' has incorrect type (expected bytes, got {type(data).__name__})")
    return data


# --------------------------------------------------------------- demultiplexing


def classify(data: bytes) -> str:
    """'stun' (0..3), 'dtls' (20..63), 'rtp'/'rtcp' (128..191) or 'unknown'.

    Inside 128..191 the second byte (marker + payload type) decides: 192..223
    is RTCP (RFC 5761 section 4). A one-byte datagram there is 'unknown'.
    """
    _check_bytes(data)
    if not data:
        return "unknown"
    b = data[0]
    if b <= 3:
        return "stun"
    if 20 <= b <= 63:
        return "dtls"
    if 128 <= b <= 191:
        if len(data) < 2:
            return "unknown"
        return "rtcp" if 192 <= data[1] <= 223 else "rtp"
    return "unknown"


# --------------------------------------------------------------- RTP


def _parse(data: bytes) -> dict:
    """The fields of sfu_rtp_t, or raises the first structural problem."""
    n = len(data)
    if n < 12:
        raise _rtp_error(-1)
    if data[0] >> 6 != 2:
        raise _rtp_error(-2)
    h = {
        "version": 2,
        "padding": (data[0] >> 5) & 1,
        "extension": (data[0] >> 4) & 1,
        "csrc_count": data[0] & 0x0F,
        "marker": data[1] >> 7,
        "payload_type": data[1] & 0x7F,
    }
    h["seq"], h["timestamp"], h["ssrc"] = struct.unpack_from("!HII", data, 2)
    off = 12 + 4 * h["csrc_count"]
    if off > n:
        raise _rtp_error(-3)
    h["ext_profile"] = h["ext_offset"] = h["ext_length"] = 0
    if h["extension"]:
        if off + 4 > n:
            raise _rtp_error(-4)
        profile, words = struct.unpack_from("!HH", data, off)
        off += 4
        if off + 4 * words > n:
            raise _rtp_error(-5)
        h["ext_profile"], h["ext_offset"], h["ext_length"] = profile, off, 4 * words
        off += 4 * words
    h["header_length"] = off
    pad = 0
    if h["padding"]:
        if n == off:
            raise _rtp_error(-6)
        pad = data[-1]
        if pad == 0 or pad > n - off:
            raise _rtp_error(-6)
    h["padding_length"] = pad
    h["payload_length"] = n - off - pad
    return h


def parse_rtp(data: bytes) -> dict:
    """The header fields, CSRCs, extension block and payload of an RTP packet."""
    _check_bytes(data)
    h = _parse(data)
    ext = bool(h["extension"])
    hl = h["header_length"]
    return {
        "version": h["version"],
        "padding": bool(h["padding"]),
        "extension": ext,
        "marker": bool(h["marker"]),
        "payload_type": h["payload_type"],
        "sequence_number": h["seq"],
        "timestamp": h["timestamp"],
        "ssrc": h["ssrc"],
        "csrcs": [int.from_bytes(data[12 + 4 * i : 16 + 4 * i], "big") for i in range(h["csrc_count"])],
        "extension_profile": h["ext_profile"] if ext else None,
        "extension_data": data[h["ext_offset"] : h["ext_offset"] + h["ext_length"]] if ext else b"",
        "header_length": hl,
        "payload": data[hl : hl + h["payload_length"]],
        "padding_length": h["padding_length"],
    }


def _elements(data: bytes, h: dict) -> list[tuple[int, int, int]]:
    """[(id, offset of the element data, length)] of the extension block.

    One-byte (0xBEDE): a zero byte is padding, id 15 ends the block, length
    is the low nibble + 1. Two-byte (0x100X): a zero byte is padding, then
    id and length bytes (length may be 0). Any other profile is opaque: no
    elements. At most 32 elements; an element past the block (or whose data
    starts beyond offset 65535) is malformed.
    """
    if not h["extension"] or h["ext_length"] == 0:
        return []
    pos = h["ext_offset"]
    end = pos + h["ext_length"]
    out: list[tuple[int, int, int]] = []
    if h["ext_profile"] == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            eid = b >> 4
            if eid == 0:
                pos += 1
                continue
            if eid == 15:
                break
            elen = (b & 0x0F) + 1
            if pos + 1 + elen > end or pos + 1 > 0xFFFF:
                raise _rtp_error(-7)
            if len(out) >= MAX_EXTENSIONS:
                raise _rtp_error(-7)
            out.append((eid, pos + 1, elen))
            pos += 1 + elen
        return out
    if h["ext_profile"] & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < end:
            eid = data[pos]
            if eid == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise _rtp_error(-7)
            elen = data[pos + 1]
            if pos + 2 + elen > end or pos + 2 > 0xFFFF:
                raise _rtp_error(-7)
            if len(out) >= MAX_EXTENSIONS:
                raise _rtp_error(-7)
            out.append((eid, pos + 2, elen))
            pos += 2 + elen
        return out
    return []


def rtp_extensions(data: bytes) -> list[tuple[int, bytes]]:
    """[(id, data)] of the header extension elements, in packet order."""
    _check_bytes(data)
    h = _parse(data)
    return [(eid, data[off : off + ln]) for eid, off, ln in _elements(data, h)]


def _id_map(mapping: dict) -> list[int]:
    """mapping {old id: new id} as a 256-entry table (0 = remove)."""
    table = [0] * 256
    if mapping:
        for k, v in mapping.items():
            if not (0 <= k < 256) or not (0 <= v < 256):
                raise ValueError(f"map entry {k}->{v} out of range")
            table[k] = v
    table[0] = 0
    return table


def map_extensions(data: bytes, mapping: dict) -> bytes:
    """Rewrites each element id through `mapping`; ids it lacks (or maps to
    0) are removed. The block is re-encoded one-byte when every kept id is
    1..14 and every kept length 1..16, else two-byte (profile 0x1000, appbits
    cleared), zero-padded to a word. When no element is kept the block goes
    and the X bit is cleared. Payload and padding are kept byte for byte.
    A packet without elements (no block, only padding, an opaque profile) is
    returned unchanged.
    """
    _check_bytes(data)
    if mapping is not None and type(mapping) is not dict:
        raise TypeError(f"Argument 'mapping' has incorrect type (expected dict, got {type(mapping).__name__})")
    table = _id_map(mapping)
    h = _parse(data)
    elems = _elements(data, h)
    if not elems:
        return data
    kept = [(table[eid], data[off : off + ln]) for eid, off, ln in elems if table[eid]]
    out = _with_block(data, h, kept)
    _parse(out)  # the C code re-parses its result (cannot fail)
    return out


def rewrite_extensions(data: bytes, mapping: dict, add_id: int = 0, add: bytes = b"") -> bytes:
    """A copy of the packet with element ids mapped through `mapping` (ids it
    lacks removed); with add_id, an element mapped to add_id is left out and
    (add_id, add) appended after the others. Unlike map_extensions, an empty
    block is always dropped (X cleared) and a packet without a block gains
    one when something is added; an opaque profile is copied unchanged."""
    _check_bytes(data)
    if not (0 <= add_id < 256) or len(add) > 255 or (add_id and not add):
        raise ValueError("add_id 0..255 and 1..255 bytes of add")
    table = _id_map(mapping)
    h = _parse(data)
    if h["extension"] and h["ext_profile"] != ONE_BYTE_PROFILE and (
            h["ext_profile"] & 0xFFF0) != TWO_BYTE_PROFILE:
        return data
    elems = _elements(data, h)
    kept = [(table[eid], data[off : off + ln]) for eid, off, ln in elems
            if table[eid] and table[eid] != add_id]
    if add_id and len(kept) < 32:  # at most 32 elements, as the parser reads
        kept.append((add_id, add))
    return _with_block(data, h, kept)


def _with_block(data: bytes, h: dict, kept: list[tuple[int, bytes]]) -> bytes:
    """The packet with its extension block replaced by the elements `kept`:
    one-byte when every id is 1..14 and every length 1..16, else two-byte
    (profile 0x1000, appbits cleared), zero-padded to a word; no block (X
    cleared) when nothing is kept. Payload and padding byte for byte."""
    one_byte = all(eid <= 14 and 1 <= len(value) <= 16 for eid, value in kept)
    block = bytearray()
    for eid, value in kept:
        if one_byte:
            block.append((eid << 4) | (len(value) - 1))
        else:
            block += bytes((eid, len(value)))
        block += value
    block += bytes(-len(block) % 4)
    csrc_end = 12 + 4 * h["csrc_count"]
    tail = data[h["header_length"] :]  # payload + padding
    if kept:
        profile = ONE_BYTE_PROFILE if one_byte else TWO_BYTE_PROFILE
        first = data[0] | 0x10
        ext = struct.pack("!HH", profile, len(block) // 4) + bytes(block)
    else:
        first = data[0] & ~0x10 & 0xFF
        ext = b""
    if csrc_end + len(ext) + len(tail) > len(data) + MAP_EXTRA_ROOM:
        raise _rtp_error(-8)
    return bytes((first,)) + data[1:csrc_end] + ext + tail


def build_rtp(
    *,
    payload_type: int = 96,
    sequence_number: int = 0,
    timestamp: int = 0,
    ssrc: int = 0,
    marker: bool = False,
    csrcs: tuple[int, ...] | list[int] = (),
    extensions: list[tuple[int, bytes]] | None = None,
    two_byte: bool | None = None,
    payload: bytes = b"",
    padding: int = 0,
) -> bytes:
    """An RTP packet; `extensions` [(id, data)] are encoded one-byte unless
    two_byte is set (or an id/length needs it). `padding` counts the whole
    padding including its length byte."""
    first = 0x80 | len(csrcs)
    ext = b""
    if extensions is not None:
        first |= 0x10
        if two_byte is None:
            two_byte = not all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in extensions)
        block = bytearray()
        for i, v in extensions:
            block += bytes((i, len(v))) if two_byte else bytes(((i << 4) | (len(v) - 1),))
            block += v
        block += bytes(-len(block) % 4)
        ext = struct.pack("!HH", TWO_BYTE_PROFILE if two_byte else ONE_BYTE_PROFILE, len(block) // 4) + bytes(block)
    if padding:
        first |= 0x20
    head = struct.pack("!BBHII", first, (0x80 if marker else 0) | payload_type, sequence_number & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc)
    head += b"".join(struct.pack("!I", c) for c in csrcs)
    pad = bytes(padding - 1) + bytes((padding,)) if padding else b""
    return head + ext + payload + pad


# --------------------------------------------------------------- RTCP

# Minimum words (header included, padding excluded) for a packet type and
# its count field; types not listed only need their header.
_RTCP_MIN_WORDS = {
    200: lambda count: 7 + 6 * count,  # SR: SSRC + sender info + report blocks
    201: lambda count: 2 + 6 * count,  # RR: SSRC + report blocks
    203: lambda count: 1 + count,  # BYE: one SSRC/CSRC per count
    204: lambda count: 3,  # APP: SSRC + name
    205: lambda count: 3,  # RTPFB: sender SSRC + media SSRC
    206: lambda count: 3,  # PSFB: sender SSRC + media SSRC
}


def parse_rtcp(data: bytes) -> list[tuple[int, int, int, int]]:
    """[(packet_type, count, offset, length)] of a compound RTCP packet.

    Every packet must be version 2, of type 192..223 and fit the datagram;
    only the last may be padded (padding 1..length-4); SR/RR/BYE/APP/RTPFB/
    PSFB must be long enough for their count; at most 64 packets.
    """
    _check_bytes(data)
    n = len(data)
    if n < 4:
        raise _rtcp_error(-1)
    pos = 0
    items: list[tuple[int, int, int, int]] = []
    while pos < n:
        if n - pos < 4:
            raise _rtcp_error(-1)
        if data[pos] >> 6 != 2:
            raise _rtcp_error(-2)
        pt = data[pos + 1]
        if not 192 <= pt <= 223:
            raise _rtcp_error(-5)
        plen = 4 * (int.from_bytes(data[pos + 2 : pos + 4], "big") + 1)
        if plen > n - pos:
            raise _rtcp_error(-3)
        if len(items) >= MAX_RTCP_ITEMS:
            raise _rtcp_error(-7)
        count = data[pos] & 0x1F
        pad = 0
        if data[pos] & 0x20:
            if pos + plen != n:
                raise _rtcp_error(-4)
            pad = data[pos + plen - 1]
            if pad == 0 or pad > plen - 4:
                raise _rtcp_error(-4)
        need = _RTCP_MIN_WORDS.get(pt)
        if need is not None and (plen - pad) // 4 < need(count):
            raise _rtcp_error(-6)
        items.append((pt, count, pos, plen))
        pos += plen
    return items


# --------------------------------------------------------------- sequence numbers

DROPPED_MAX = 64
FOLD_DISTANCE = 4096
FLOOR_SPAN = 16384


def seq_newer(a: int, b: int) -> bool:
    """a is newer than b in 16-bit serial number arithmetic (RFC 1982)."""
    d = (a - b) & 0xFFFF
    return d != 0 and d < 0x8000


class SeqManager:
    """Rewrites one stream's sequence numbers so the output stays contiguous
    across drops, pause/resume (sync) and reordering:

        output = input + base - (number of dropped inputs older than input)

    sync(i):  the next input i+1 follows the highest output so far.
    drop(i):  an input newer than every input so far is skipped and later
              outputs close the hole; an older one is ignored (its output
              slot was already passed). Before anything started, a drop just
              moves base so the next input follows max_output.
    input(i): the output for i, or None if i was dropped.

    Dropped inputs are kept oldest first, at most 64; the oldest is folded
    into base (base -= 1) when the list is full, and entries 4096 or more
    behind the newest input are folded whenever the newest input advances
    (in drop() and input()). A folded input is treated like any older one.
    """

    def __init__(self, initial_output: int = 0) -> None:
        self.started = False
        self.base = 0
        self.max_input = 0
        self._max_output = initial_output & 0xFFFF
        self.dropped: list[int] = []
        # after a sync, inputs not newer than the sync point are rejected
        # until the stream is FLOOR_SPAN past it (they would reuse outputs)
        self.floor: int | None = None

    @property
    def max_output(self) -> int:
        return self._max_output

    def sync(self, value: int) -> None:
        value &= 0xFFFF
        self.base = (self._max_output - value) & 0xFFFF
        self.max_input = value
        self.dropped = []
        self.started = True
        self.floor = value

    def _fold(self, k: int) -> None:
        self.base = (self.base - k) & 0xFFFF
        del self.dropped[:k]

    def _fold_old(self) -> None:
        k = 0
        while k < len(self.dropped) and (self.max_input - self.dropped[k]) & 0xFFFF >= FOLD_DISTANCE:
            k += 1
        if k:
            self._fold(k)

    def drop(self, value: int) -> None:
        value &= 0xFFFF
        if not self.started:
            self.started = True
            self.max_input = value
            self.base = (self._max_output - value) & 0xFFFF
            self.floor = value
            return
        if not seq_newer(value, self.max_input):
            return
        self.max_input = value
        if len(self.dropped) == DROPPED_MAX:
            self._fold(1)
        self.dropped.append(value)
        self._fold_old()

    def input(self, value: int) -> int | None:
        value &= 0xFFFF
        if self.floor is not None:
            if not seq_newer(value, self.floor):
                return None
            if (value - self.floor) & 0xFFFF >= FLOOR_SPAN:
                self.floor = None
        if self.started and self.dropped and seq_newer(value, self.max_input):
            self.max_input = value
            self._fold_old()
        base = self.base
        for d in self.dropped:
            if d == value:
                return None
            if not seq_newer(value, d):
                break
            base -= 1
        out = (value + base) & 0xFFFF
        if not self.started:
            self.started = True
            self.max_input = value
            self._max_output = out
        else:
            if seq_newer(value, self.max_input):
                self.max_input = value
            if seq_newer(out, self._max_output):
                self._max_output = out
        return out
