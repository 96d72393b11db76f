# Test hooks for the loss-recovery C units: src/nack.h (NACK generator),
# src/rtx_buffer.h (packet store, sequence map) and src/rtcp_nack.h, rtcp_report.h, rtx.h
# (NACK / SR / RR builders and parsers, RTX, NTP). Included by _engine.pyx.
from libc.stdint cimport int32_t, int64_t

cdef extern from "src/nack.h" nogil:
    int SFU_NACK_MAX_LIST
    int SFU_NACK_MAX_RETRIES
    int SFU_NACK_MAX_AGE_MS
    int SFU_NACK_MAX_JUMP
    ctypedef struct sfu_nack_entry_t:
        uint32_t first_ms
        uint32_t sent_ms
        uint16_t seq
        uint16_t retries
    ctypedef struct sfu_nack_gen_t:
        int started
        uint16_t highest
        int keyframe_needed
        uint64_t nacked
        uint64_t recovered
        uint64_t late
        uint64_t gave_up
        uint64_t keyframe_requests
        int count
        sfu_nack_entry_t list[256]
    void sfu_nack_init(sfu_nack_gen_t *g)
    int sfu_nack_on_packet(sfu_nack_gen_t *g, uint16_t seq, int is_recovered, uint64_t now_ms)
    int sfu_nack_poll(sfu_nack_gen_t *g, uint64_t now_ms, uint32_t rtt_ms, uint16_t *out, int max)
    int sfu_nack_keyframe_needed(sfu_nack_gen_t *g)
    int64_t sfu_nack_next_deadline_ms(const sfu_nack_gen_t *g, uint32_t rtt_ms)

cdef extern from "src/rtx_buffer.h" nogil:
    int SFU_STORE_MAX_PACKET
    int SFU_SEQ_MAP_SIZE
    ctypedef struct sfu_store_slot_t:
        pass
    ctypedef struct sfu_packet_store_t:
        uint32_t capacity
        uint64_t stored
        uint64_t hits
        uint64_t misses
    int sfu_packet_store_init(sfu_packet_store_t *s, uint32_t capacity)
    void sfu_packet_store_free(sfu_packet_store_t *s)
    void sfu_packet_store_clear(sfu_packet_store_t *s)
    int sfu_packet_store_put(sfu_packet_store_t *s, uint16_t seq, const uint8_t *pkt, size_t len, uint64_t now_ms)
    const uint8_t *sfu_packet_store_get(sfu_packet_store_t *s, uint16_t seq, size_t *len, uint64_t now_ms, uint32_t max_age_ms)
    int sfu_packet_store_expired(const sfu_packet_store_t *s, uint16_t seq, uint64_t now_ms, uint32_t max_age_ms)
    ctypedef struct sfu_seq_map_t:
        pass
    void sfu_seq_map_init(sfu_seq_map_t *m)
    void sfu_seq_map_put(sfu_seq_map_t *m, uint16_t out_seq, uint16_t in_seq)
    int sfu_seq_map_get(const sfu_seq_map_t *m, uint16_t out_seq, uint16_t *in_seq)
    int sfu_seq_map_may_resend(sfu_seq_map_t *m, uint16_t out_seq, uint64_t now_ms, uint32_t rtt_ms)

cdef extern from "src/rtcp_nack.h" nogil:
    pass

cdef extern from "src/rtx.h" nogil:
    pass

cdef extern from "src/rtcp_report.h" nogil:
    ctypedef struct sfu_report_block_t:
        uint32_t ssrc
        uint8_t fraction_lost
        int32_t cumulative_lost
        uint32_t ext_highest_seq
        uint32_t jitter
        uint32_t lsr
        uint32_t dlsr
    int sfu_rtcp_build_nack(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc, const uint16_t *seqs, int n)
    int sfu_rtcp_parse_nack(const uint8_t *pkt, size_t len, uint16_t *out, int max)
    uint32_t sfu_rtcp_nack_media_ssrc(const uint8_t *pkt, size_t len)
    int sfu_rtcp_build_rr(uint8_t *out, size_t cap, uint32_t sender_ssrc, const sfu_report_block_t *blocks, int n)
    int sfu_rtcp_build_sr(uint8_t *out, size_t cap, uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts, uint32_t packets, uint32_t octets, const sfu_report_block_t *blocks, int n)
    int sfu_rtcp_parse_sr(const uint8_t *pkt, size_t len, uint32_t *ssrc, uint64_t *ntp, uint32_t *rtp_ts, uint32_t *packets, uint32_t *octets)
    int sfu_rtcp_parse_report_blocks(const uint8_t *pkt, size_t len, sfu_report_block_t *out, int max)
    int sfu_rtx_encapsulate(uint8_t *pkt, size_t *len, size_t cap, uint8_t rtx_pt, uint32_t rtx_ssrc, uint16_t rtx_seq)
    int sfu_rtx_decapsulate(uint8_t *pkt, size_t *len, uint8_t media_pt, uint32_t media_ssrc)
    uint64_t sfu_ntp_from_ms(uint64_t unix_ms)
    uint64_t sfu_ntp_to_ms(uint64_t ntp)
    uint32_t sfu_ntp_compact(uint64_t ntp)
    uint32_t sfu_rtcp_rtt_ms(uint32_t now_compact, uint32_t lsr, uint32_t dlsr)

NACK_MAX_LIST = SFU_NACK_MAX_LIST
NACK_MAX_RETRIES = SFU_NACK_MAX_RETRIES
NACK_MAX_AGE_MS = SFU_NACK_MAX_AGE_MS
NACK_MAX_JUMP = SFU_NACK_MAX_JUMP
STORE_MAX_PACKET = SFU_STORE_MAX_PACKET
SEQ_MAP_SIZE = SFU_SEQ_MAP_SIZE


class RtcpBuildError(ValueError):
    """A negative return code of src/rtcp_build.c (or of the RTP parser for RTX)."""
    def __init__(self, int code):
        ValueError.__init__(self, f"error {code}")
        self.code = code


cdef class NackGenerator:
    """Receive-side NACK generator (src/nack.h), in virtual time."""
    cdef sfu_nack_gen_t g

    def __cinit__(self):
        sfu_nack_init(&self.g)

    def on_packet(self, int seq, bint recovered=False, uint64_t now_ms=0):
        return sfu_nack_on_packet(&self.g, <uint16_t>seq, recovered, now_ms) == 1

    def poll(self, uint64_t now_ms, uint32_t rtt_ms=0, int limit=256):
        cdef uint16_t out[256]
        if limit > 256:
            limit = 256
        cdef int n = sfu_nack_poll(&self.g, now_ms, rtt_ms, out, limit)
        return [out[i] for i in range(n)]

    def keyframe_needed(self):
        return bool(sfu_nack_keyframe_needed(&self.g))

    def next_deadline(self, uint32_t rtt_ms=0):
        cdef int64_t t = sfu_nack_next_deadline_ms(&self.g, rtt_ms)
        return None if t < 0 else t

    @property
    def missing(self):
        return [self.g.list[i].seq for i in range(self.g.count)]

    @property
    def highest(self):
        return self.g.highest

    @property
    def counters(self):
        return {"nacked": self.g.nacked, "recovered": self.g.recovered, "late": self.g.late,
                "gave_up": self.g.gave_up, "keyframe_requests": self.g.keyframe_requests}


cdef class PacketStore:
    """Producer-stream packet store (src/rtx_buffer.h)."""
    cdef sfu_packet_store_t s

    def __cinit__(self, uint32_t capacity=512):
        if sfu_packet_store_init(&self.s, capacity) != 0:
            raise ValueError("capacity must be a power of two in 1..32768")

    def __dealloc__(self):
        sfu_packet_store_free(&self.s)

    def put(self, int seq, bytes pkt, uint64_t now_ms=0):
        return sfu_packet_store_put(&self.s, <uint16_t>seq, <const uint8_t *>PyBytes_AS_STRING(pkt),
                                    len(pkt), now_ms) == 1

    def expired(self, int seq, uint64_t now_ms=0, uint32_t max_age_ms=0):
        return bool(sfu_packet_store_expired(&self.s, <uint16_t>seq, now_ms, max_age_ms))

    def get(self, int seq, uint64_t now_ms=0, uint32_t max_age_ms=0):
        cdef size_t n = 0
        cdef const uint8_t *p = sfu_packet_store_get(&self.s, <uint16_t>seq, &n, now_ms, max_age_ms)
        if p == NULL:
            return None
        return PyBytes_FromStringAndSize(<const char *>p, n)

    def clear(self):
        sfu_packet_store_clear(&self.s)

    @property
    def counters(self):
        return {"stored": self.s.stored, "hits": self.s.hits, "misses": self.s.misses}


cdef class SeqMap:
    """Per-consumer output -> input sequence map with resend limit (src/rtx_buffer.h)."""
    cdef sfu_seq_map_t *m

    def __cinit__(self):
        self.m = <sfu_seq_map_t *>malloc(sizeof(sfu_seq_map_t))
        if self.m == NULL:
            raise MemoryError()
        sfu_seq_map_init(self.m)

    def __dealloc__(self):
        free(self.m)

    def put(self, int out_seq, int in_seq):
        sfu_seq_map_put(self.m, <uint16_t>out_seq, <uint16_t>in_seq)

    def get(self, int out_seq):
        cdef uint16_t v
        if sfu_seq_map_get(self.m, <uint16_t>out_seq, &v):
            return v
        return None

    def may_resend(self, int out_seq, uint64_t now_ms, uint32_t rtt_ms=0):
        return sfu_seq_map_may_resend(self.m, <uint16_t>out_seq, now_ms, rtt_ms) == 1


def rtcp_build_nack(uint32_t sender_ssrc, uint32_t media_ssrc, seqs, int cap=1500):
    cdef int n = len(seqs)
    cdef uint16_t *arr = <uint16_t *>malloc(max(n, 1) * sizeof(uint16_t))
    cdef uint8_t *out = <uint8_t *>malloc(max(cap, 1))
    cdef int rc
    if arr == NULL or out == NULL:
        free(arr); free(out)
        raise MemoryError()
    try:
        for i in range(n):
            arr[i] = <uint16_t>(seqs[i] & 0xFFFF)
        rc = sfu_rtcp_build_nack(out, cap, sender_ssrc, media_ssrc, arr, n)
        if rc < 0:
            raise RtcpBuildError(rc)
        return PyBytes_FromStringAndSize(<const char *>out, rc)
    finally:
        free(arr)
        free(out)


def rtcp_parse_nack(bytes pkt, int limit=65536):
    cdef uint16_t *out = <uint16_t *>malloc(max(limit, 1) * sizeof(uint16_t))
    if out == NULL:
        raise MemoryError()
    try:
        rc = sfu_rtcp_parse_nack(<const uint8_t *>PyBytes_AS_STRING(pkt), len(pkt), out, limit)
        if rc < 0:
            raise RtcpBuildError(rc)
        return [out[i] for i in range(rc)]
    finally:
        free(out)


def rtcp_nack_media_ssrc(bytes pkt):
    return sfu_rtcp_nack_media_ssrc(<const uint8_t *>PyBytes_AS_STRING(pkt), len(pkt))


cdef int _fill_blocks(blocks, sfu_report_block_t *out) except -1:
    cdef int n = len(blocks)
    if n > 31:
        n = 32  # let the C side reject it
    for i in range(min(n, 31)):
        b = blocks[i]
        out[i].ssrc = b["ssrc"]
        out[i].fraction_lost = b.get("fraction_lost", 0)
        out[i].cumulative_lost = b.get("cumulative_lost", 0)
        out[i].ext_highest_seq = b.get("ext_highest_seq", 0)
        out[i].jitter = b.get("jitter", 0)
        out[i].lsr = b.get("lsr", 0)
        out[i].dlsr = b.get("dlsr", 0)
    return n


cdef dict _block_dict(const sfu_report_block_t *b):
    return {"ssrc": b.ssrc, "fraction_lost": b.fraction_lost, "cumulative_lost": b.cumulative_lost,
            "ext_highest_seq": b.ext_highest_seq, "jitter": b.jitter, "lsr": b.lsr, "dlsr": b.dlsr}


def rtcp_build_rr(uint32_t sender_ssrc, blocks=(), int cap=1500):
    """blocks: dicts with the sfu_report_block_t field names."""
    cdef sfu_report_block_t b[32]
    cdef uint8_t out[1500]
    cdef int n = _fill_blocks(blocks, b)
    cdef int rc = sfu_rtcp_build_rr(out, min(cap, 1500), sender_ssrc, b, n)
    if rc < 0:
        raise RtcpBuildError(rc)
    return PyBytes_FromStringAndSize(<const char *>out, rc)


def rtcp_build_sr(uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts, uint32_t packets, uint32_t octets,
                  blocks=(), int cap=1500):
    cdef sfu_report_block_t b[32]
    cdef uint8_t out[1500]
    cdef int n = _fill_blocks(blocks, b)
    cdef int rc = sfu_rtcp_build_sr(out, min(cap, 1500), ssrc, ntp, rtp_ts, packets, octets, b, n)
    if rc < 0:
        raise RtcpBuildError(rc)
    return PyBytes_FromStringAndSize(<const char *>out, rc)


def rtcp_parse_sr(bytes pkt):
    """(ssrc, ntp, rtp_ts, packets, octets)"""
    cdef uint32_t ssrc = 0, rtp_ts = 0, packets = 0, octets = 0
    cdef uint64_t ntp = 0
    cdef int rc = sfu_rtcp_parse_sr(<const uint8_t *>PyBytes_AS_STRING(pkt), len(pkt),
                                    &ssrc, &ntp, &rtp_ts, &packets, &octets)
    if rc < 0:
        raise RtcpBuildError(rc)
    return (ssrc, ntp, rtp_ts, packets, octets)


def rtcp_parse_report_blocks(bytes pkt, int limit=31):
    cdef sfu_report_block_t b[31]
    if limit > 31:
        limit = 31
    cdef int rc = sfu_rtcp_parse_report_blocks(<const uint8_t *>PyBytes_AS_STRING(pkt), len(pkt), b, limit)
    if rc < 0:
        raise RtcpBuildError(rc)
    return [_block_dict(&b[i]) for i in range(rc)]


def rtx_encapsulate(bytes pkt, int rtx_pt, uint32_t rtx_ssrc, int rtx_seq, int cap=-1):
    """The RTX packet of `pkt` (cap: buffer capacity, default len + 2)."""
    cdef size_t n = len(pkt)
    cdef size_t bufcap = n + 2 if cap < 0 else <size_t>cap
    cdef uint8_t *buf = <uint8_t *>malloc(bufcap if bufcap > n else n + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        memcpy(buf, PyBytes_AS_STRING(pkt), n)
        rc = sfu_rtx_encapsulate(buf, &n, bufcap, <uint8_t>rtx_pt, rtx_ssrc, <uint16_t>rtx_seq)
        if rc < 0:
            raise RtcpBuildError(rc)
        return PyBytes_FromStringAndSize(<const char *>buf, n)
    finally:
        free(buf)


def rtx_decapsulate(bytes pkt, int media_pt, uint32_t media_ssrc):
    """(osn, original packet)"""
    cdef size_t n = len(pkt)
    cdef uint8_t *buf = <uint8_t *>malloc(n + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        memcpy(buf, PyBytes_AS_STRING(pkt), n)
        rc = sfu_rtx_decapsulate(buf, &n, <uint8_t>media_pt, media_ssrc)
        if rc < 0:
            raise RtcpBuildError(rc)
        return rc, PyBytes_FromStringAndSize(<const char *>buf, n)
    finally:
        free(buf)


def ntp_from_ms(uint64_t unix_ms):
    return sfu_ntp_from_ms(unix_ms)


def ntp_to_ms(uint64_t ntp):
    return sfu_ntp_to_ms(ntp)


def ntp_compact(uint64_t ntp):
    return sfu_ntp_compact(ntp)


def rtcp_rtt_ms(uint32_t now_compact, uint32_t lsr, uint32_t dlsr):
    return sfu_rtcp_rtt_ms(now_compact, lsr, dlsr)
