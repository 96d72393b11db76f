# Test and benchmark hooks of the engine: the sans-IO driver (SansIOEngine:
# feed datagrams, take the outbox, tick in virtual time), the C packet
# helpers and the loss-recovery/feedback units. Included by _testhooks.pyx
# after _engine.pyx; the production module _engine does not contain them.
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

# ----------------------------------------------------------------- packet helpers

def classify(bytes data):
    """RFC 7983 demultiplexing: 'stun', 'dtls', 'rtp', 'rtcp' or 'unknown'."""
    return PACKET_KINDS[sfu_classify(<const uint8_t *>PyBytes_AS_STRING(data), len(data))]


def parse_rtp(bytes data):
    """Parses an RTP packet; raises ValueError naming the first problem."""
    cdef sfu_rtp_t p
    cdef int rc = sfu_rtp_parse(<const uint8_t *>PyBytes_AS_STRING(data), len(data), &p)
    if rc < 0:
        raise ValueError(RTP_ERRORS[rc])
    cdef const uint8_t *b = <const uint8_t *>PyBytes_AS_STRING(data)
    csrcs = [int.from_bytes(data[12 + 4 * i: 16 + 4 * i], "big") for i in range(p.csrc_count)]
    return {
        "version": p.version, "padding": bool(p.padding), "extension": bool(p.extension),
        "marker": bool(p.marker), "payload_type": p.payload_type, "sequence_number": p.seq,
        "timestamp": p.timestamp, "ssrc": p.ssrc, "csrcs": csrcs,
        "extension_profile": p.ext_profile if p.extension else None,
        "extension_data": data[p.ext_offset:p.ext_offset + p.ext_length] if p.extension else b"",
        "header_length": p.header_length,
        "payload": data[p.header_length:p.header_length + p.payload_length],
        "padding_length": p.padding_length,
    }


def rtp_extensions(bytes data):
    """[(id, bytes)] of the one-byte/two-byte header extension elements."""
    cdef sfu_rtp_t p
    cdef sfu_rtp_ext_elem_t elems[32]
    cdef const uint8_t *b = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef int rc = sfu_rtp_parse(b, len(data), &p)
    if rc < 0:
        raise ValueError(RTP_ERRORS[rc])
    cdef int n = sfu_rtp_ext_elements(b, &p, elems, 32)
    if n < 0:
        raise ValueError(RTP_ERRORS[n])
    return [(elems[i].id, data[elems[i].offset:elems[i].offset + elems[i].length]) for i in range(n)]


def map_extensions(bytes data, dict mapping):
    """Rewrites extension ids through `mapping` (ids not in it are removed)."""
    cdef uint8_t m[256]
    cdef sfu_rtp_t p
    cdef size_t n = len(data)
    cdef size_t cap = n + 9000
    cdef uint8_t *buf = <uint8_t *>malloc(cap)
    if buf == NULL:
        raise MemoryError()
    try:
        _fill_map(m, 256, mapping, 0)
        m[0] = 0
        memcpy(buf, PyBytes_AS_STRING(data), n)
        rc = sfu_rtp_parse(buf, n, &p)
        if rc < 0:
            raise ValueError(RTP_ERRORS[rc])
        rc = sfu_rtp_map_extensions(buf, &n, cap, &p, m)
        if rc < 0:
            raise ValueError(RTP_ERRORS[rc])
        return PyBytes_FromStringAndSize(<char *>buf, n)
    finally:
        free(buf)


def rewrite_extensions(bytes data, dict mapping, int add_id=0, bytes add=b""):
    """A copy of the packet with extension ids mapped through `mapping` (ids
    not in it removed) and, when add_id is non-zero, the element mapped to
    add_id replaced by (add_id, add), appended when absent (what a consumer
    does to write its own MID)."""
    cdef uint8_t m[256]
    cdef sfu_rtp_t p
    cdef size_t n = len(data)
    cdef size_t cap = n + 9000
    if not (0 <= add_id < 256) or len(add) > 255 or (add_id and not add):
        raise ValueError("add_id 0..255 and 1..255 bytes of add")
    cdef uint8_t *buf = <uint8_t *>malloc(cap)
    if buf == NULL:
        raise MemoryError()
    try:
        _fill_map(m, 256, mapping, 0)
        m[0] = 0
        rc = sfu_rtp_parse(<const uint8_t *>PyBytes_AS_STRING(data), n, &p)
        if rc < 0:
            raise ValueError(RTP_ERRORS[rc])
        out = sfu_rtp_copy_rewrite_extensions(buf, cap, <const uint8_t *>PyBytes_AS_STRING(data), n, &p, m,
                                              <uint8_t>add_id, <const uint8_t *>PyBytes_AS_STRING(add),
                                              <uint8_t>len(add))
        if out < 0:
            raise ValueError(RTP_ERRORS[out])
        return PyBytes_FromStringAndSize(<char *>buf, out)
    finally:
        free(buf)


def is_keyframe(str codec, bytes payload):
    """Whether an RTP payload of codec 'vp8' | 'vp9' | 'h264' starts a keyframe."""
    if codec.lower() not in CODEC_IDS:
        raise ValueError(f"unknown codec {codec!r}")
    return bool(sfu_is_keyframe(CODEC_IDS[codec.lower()], <const uint8_t *>PyBytes_AS_STRING(payload), len(payload)))


def parse_rtcp(bytes data):
    """[(packet_type, count, offset, length)] of a compound RTCP packet."""
    cdef sfu_rtcp_item_t items[64]
    cdef int n = sfu_rtcp_parse_compound(<const uint8_t *>PyBytes_AS_STRING(data), len(data), items, 64)
    if n < 0:
        raise ValueError(RTCP_ERRORS[n])
    return [(items[i].packet_type, items[i].count, items[i].offset, items[i].length) for i in range(n)]


cdef class SeqManager:
    """mediasoup-style sequence number rewriter (see src/seqmgr.h)."""
    cdef sfu_seqmgr_t m

    def __cinit__(self, int initial_output=0):
        sfu_seqmgr_init(&self.m, <uint16_t>initial_output)

    def sync(self, int value):
        sfu_seqmgr_sync(&self.m, <uint16_t>value)

    def drop(self, int value):
        sfu_seqmgr_drop(&self.m, <uint16_t>value)

    def input(self, int value):
        """The output number, or None when `value` was dropped."""
        cdef uint16_t out
        if sfu_seqmgr_input(&self.m, <uint16_t>value, &out):
            return out
        return None

    @property
    def max_output(self):
        return self.m.max_output



# ----------------------------------------------------------------- sans-IO engine

cdef class SansIOEngine(Engine):
    """An Engine driven by hand: datagrams in (`receive`), decisions out
    (`take_outbox`, `poll_upcalls`), time passed in (`tick`)."""

    def request_keyframe(self, uint32_t h, uint64_t now_ms):
        """Sends a PLI to the consumer's producer (throttled per stream)."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_request_keyframe_locked(self.e, h, now_ms)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

    def request_producer_keyframe(self, uint32_t h, uint64_t now_ms):
        """Sends a PLI for each stream of a producer (throttled per stream)."""
        sfu_engine_lock(self.e)
        rc = sfu_producer_request_keyframe_locked(self.e, h, now_ms)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown producer handle {h}")

    def tick(self, uint64_t now_ms):
        """Time-driven work, as the I/O thread does; returns ms until the next
        due work or -1."""
        sfu_engine_lock(self.e)
        rc = sfu_engine_tick(self.e, now_ms)
        sfu_engine_unlock(self.e)
        return rc

    # -- sans-IO driving and upcalls

    def receive(self, uint32_t socket, object addr, bytes data, uint64_t now_ms):
        """Feeds one datagram as if it arrived on `socket` from `addr`."""
        cdef sockaddr_storage ss
        cdef socklen_t sl
        cdef uint8_t buf[2048]
        cdef size_t n = len(data)
        _sockaddr(addr, &ss, &sl)
        if n > 2048:
            # Larger than a receive buffer: counted like io.c's truncated reads.
            sfu_engine_lock(self.e)
            self.e.counters[0] += 1   # rx_datagrams
            self.e.counters[10] += 1  # drop_too_big
            sfu_engine_unlock(self.e)
            return
        memcpy(buf, PyBytes_AS_STRING(data), n)
        with nogil:
            sfu_engine_lock(self.e)
            sfu_engine_receive(self.e, socket, <sockaddr *>&ss, sl, buf, n, 2048, now_ms)
            sfu_engine_unlock(self.e)

    def receive_many(self, uint32_t socket, object addr, list datagrams, uint64_t now_ms):
        """Feeds several datagrams under one lock (benchmarks)."""
        cdef sockaddr_storage ss
        cdef socklen_t sl
        cdef uint8_t buf[2048]
        cdef bytes d
        cdef size_t n
        _sockaddr(addr, &ss, &sl)
        sfu_engine_lock(self.e)
        try:
            for d in datagrams:
                n = len(d)
                if n > 2048:
                    continue
                memcpy(buf, PyBytes_AS_STRING(d), n)
                sfu_engine_receive(self.e, socket, <sockaddr *>&ss, sl, buf, n, 2048, now_ms)
        finally:
            sfu_engine_unlock(self.e)

    def outbox_size(self):
        return self.e.outbox_used

    def take_outbox(self):
        """[(socket, (ip, port), bytes)] queued by the core, then clears it."""
        cdef uint32_t i
        cdef sfu_slot_t *s
        cdef sockaddr_storage dest
        out = []
        sfu_engine_lock(self.e)
        try:
            for i in range(self.e.outbox_used):
                s = &self.e.outbox[i]
                memset(&dest, 0, sizeof(dest))
                memcpy(&dest, &s.dest, s.dest_len)  # slots are not sockaddr_storage-aligned
                out.append((s.socket, _addr_tuple(&dest),
                            PyBytes_FromStringAndSize(<char *>s.data, s.len)))
            sfu_outbox_clear(self.e)
        finally:
            sfu_engine_unlock(self.e)
        return out

    def clear_outbox(self):
        sfu_engine_lock(self.e)
        sfu_outbox_clear(self.e)
        sfu_engine_unlock(self.e)

    def bench_receive(self, uint32_t socket, object addr, bytes packet, uint64_t count, uint64_t now_ms):
        """Feeds `packet` `count` times through the sans-IO core under one hold
        of the engine lock, without the GIL, adding 1 to its RTP sequence
        number each time and clearing the outbox after every call. Returns the
        elapsed nanoseconds per input packet.

        The header bytes are restored before every call because the core may
        rewrite them in place (payload type, extension ids)."""
        cdef sockaddr_storage ss
        cdef socklen_t sl
        cdef uint8_t buf[2048]
        cdef uint8_t orig[2048]
        cdef size_t n = len(packet)
        cdef size_t hdr
        cdef sfu_rtp_t p
        cdef uint16_t seq
        cdef uint64_t i
        cdef timespec t0, t1
        if count == 0:
            raise ValueError("count must be > 0")
        _sockaddr(addr, &ss, &sl)
        if n < 12 or n > 1600:
            raise ValueError("packet must be 12..1600 bytes")
        memcpy(orig, PyBytes_AS_STRING(packet), n)
        if sfu_rtp_parse(orig, n, &p) < 0:
            raise ValueError("packet is not RTP")
        hdr = p.header_length
        seq = p.seq
        memcpy(buf, orig, n)
        with nogil:
            sfu_engine_lock(self.e)
            clock_gettime(CLOCK_MONOTONIC, &t0)
            for i in range(count):
                memcpy(buf, orig, hdr)
                buf[2] = <uint8_t>(seq >> 8)
                buf[3] = <uint8_t>seq
                sfu_engine_receive(self.e, socket, <sockaddr *>&ss, sl, buf, n, 2048, now_ms)
                sfu_outbox_clear(self.e)
                seq += 1
            clock_gettime(CLOCK_MONOTONIC, &t1)
            sfu_engine_unlock(self.e)
        return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / count



# ----------------------------------------------------------------- benchmark hooks

ctypedef int (*libsrtp_protect_fn)(void *ctx, void *buf, int *len) noexcept nogil


def bench_srtp_direct(uintptr_t srtp_ctx_addr, int size, uint64_t count, uintptr_t protect_addr, int first_seq=1):
    """Calls libsrtp's srtp_protect directly from a C loop (no GIL) on one
    `size`-byte RTP packet `count` times, adding 1 to its sequence number and
    resetting its length before every call; returns nanoseconds per packet.

    protect_addr: libsrtp's srtp_protect (benchmarks.libsrtp.engine_functions()[0]).
    first_seq: the first sequence
    number (a later call on the same session must continue after the last
    one, or libsrtp's replay check refuses the packets)."""
    cdef uint8_t buf[2048]
    cdef uint64_t i
    cdef int l, rc = 0
    cdef uint16_t seq = <uint16_t>first_seq
    cdef timespec t0, t1
    cdef libsrtp_protect_fn fn = <libsrtp_protect_fn>protect_addr
    if size < 12 or size > 2048 - 160:
        raise ValueError("size must be 12..1888")
    if count == 0 or srtp_ctx_addr == 0:
        raise ValueError("count and srtp_ctx_addr must be non-zero")
    memset(buf, 0x5a, sizeof(buf))
    buf[0] = 0x80
    buf[1] = 96
    buf[4] = 0; buf[5] = 0; buf[6] = 0x10; buf[7] = 0
    buf[8] = 0x12; buf[9] = 0x34; buf[10] = 0x56; buf[11] = 0x78
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        for i in range(count):
            buf[2] = <uint8_t>(seq >> 8)
            buf[3] = <uint8_t>seq
            l = size
            rc = fn(<void *>srtp_ctx_addr, buf, &l)
            if rc != 0:
                break
            seq += 1
        clock_gettime(CLOCK_MONOTONIC, &t1)
    if rc != 0:
        raise RuntimeError(f"srtp_protect failed with status {rc}")
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / count


# ----------------------------------------------------------------- loss recovery test hooks
include "nack.pxi"
include "feedback.pxi"
