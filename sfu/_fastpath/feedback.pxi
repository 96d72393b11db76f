# Test hooks for the feedback layer: src/remb, src/twcc, src/rtp_stats.
# Thin wrappers so that tests drive the C units directly, in virtual time.

from libc.stdint cimport int32_t, int64_t

cdef extern from "src/remb.h":
    ctypedef struct sfu_remb_agg_t:
        uint64_t last_sent_bps
    int sfu_remb_parse(const uint8_t *pkt, size_t len, uint64_t *bitrate_bps,
                       uint32_t *ssrcs, int max_ssrcs)
    int sfu_remb_build(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t bitrate_bps,
                       const uint32_t *ssrcs, int n)
    void sfu_remb_encode_bitrate(uint64_t bitrate_bps, uint8_t *exp, uint32_t *mantissa)
    void sfu_remb_agg_init(sfu_remb_agg_t *a)
    int sfu_remb_agg_update(sfu_remb_agg_t *a, uint32_t consumer_id, uint64_t bitrate_bps,
                            uint64_t now_ms)
    int sfu_remb_agg_remove(sfu_remb_agg_t *a, uint32_t consumer_id)
    int sfu_remb_agg_poll(sfu_remb_agg_t *a, uint64_t now_ms, uint64_t floor_bps, uint64_t *out_bps)
    int sfu_remb_agg_count(const sfu_remb_agg_t *a)

cdef extern from "src/twcc.h":
    ctypedef struct sfu_twcc_recv_t:
        int64_t highest
        int64_t begin
        uint8_t fb_count
        uint64_t received
        uint64_t duplicates
        uint64_t late
    void sfu_twcc_recv_init(sfu_twcc_recv_t *r)
    int sfu_twcc_on_packet(sfu_twcc_recv_t *r, uint16_t transport_seq, uint64_t arrival_us)
    int sfu_twcc_pending(const sfu_twcc_recv_t *r)
    int sfu_twcc_build_feedback(sfu_twcc_recv_t *r, uint8_t *out, size_t cap,
                                uint32_t sender_ssrc, uint32_t media_ssrc)
    int sfu_twcc_read_ext(const uint8_t *ext_data, size_t len, uint16_t *seq)
    int sfu_twcc_parse_feedback(const uint8_t *pkt, size_t len, uint16_t *base_seq,
                                uint16_t *status_count, int32_t *ref_time, uint8_t *fb_count,
                                uint8_t *statuses, int32_t *deltas_250us, int max)

cdef extern from "src/rtp_stats.h":
    ctypedef struct sfu_stats_block_t:
        uint32_t ssrc
        uint8_t fraction_lost
        int32_t cumulative_lost
        uint32_t ext_highest_seq
        uint32_t jitter
        uint32_t lsr
        uint32_t dlsr
    ctypedef struct sfu_rtp_stats_t:
        uint32_t clock_rate
    void sfu_rtp_stats_init(sfu_rtp_stats_t *s, uint32_t clock_rate)
    int sfu_rtp_stats_update(sfu_rtp_stats_t *s, uint16_t seq, uint32_t rtp_ts, uint64_t arrival_ms)
    int sfu_rtp_stats_report_block(sfu_rtp_stats_t *s, uint32_t ssrc, uint64_t now_ms, uint32_t lsr,
                                   uint64_t last_sr_arrival_ms, sfu_stats_block_t *out)
    uint32_t sfu_rtp_stats_ext_highest_seq(const sfu_rtp_stats_t *s)
    uint32_t sfu_rtp_stats_expected(const sfu_rtp_stats_t *s)
    uint32_t sfu_rtp_stats_received(const sfu_rtp_stats_t *s)
    int64_t sfu_rtp_stats_packets_lost(const sfu_rtp_stats_t *s)
    uint32_t sfu_rtp_stats_jitter(const sfu_rtp_stats_t *s)
    uint32_t sfu_rtp_stats_jitter_ms(const sfu_rtp_stats_t *s)
    int sfu_stream_score(uint8_t fraction_lost_recent, uint32_t expected_recent, uint32_t repaired_recent)
    int sfu_rtp_stats_score(const sfu_rtp_stats_t *s, uint32_t repaired_recent)


# ------------------------------------------------------------------ REMB

def remb_parse(bytes data, int max_ssrcs=255):
    """(n, bitrate_bps, [ssrc, ...]) -- n is negative (an SFU_REMB_E* code)
    with bitrate 0 and no SSRCs when the packet is refused."""
    cdef uint64_t br = 0
    cdef uint32_t ssrcs[255]
    if max_ssrcs < 0 or max_ssrcs > 255:
        raise ValueError("max_ssrcs must be 0..255")
    cdef int n = sfu_remb_parse(<const uint8_t *>PyBytes_AS_STRING(data), len(data), &br,
                                ssrcs, max_ssrcs)
    if n < 0:
        return (n, 0, [])
    return (n, br, [ssrcs[i] for i in range(min(n, max_ssrcs))])


def remb_build(uint32_t sender_ssrc, uint64_t bitrate_bps, ssrcs=(), int cap=1500):
    """The REMB packet; raises ValueError with the negative code on failure."""
    cdef uint8_t buf[1500]
    cdef uint32_t arr[256]
    cdef int n = len(ssrcs)
    if cap < 0 or cap > 1500:
        raise ValueError("cap must be 0..1500")
    for i in range(min(n, 256)):
        arr[i] = ssrcs[i]
    cdef int rc = sfu_remb_build(buf, cap, sender_ssrc, bitrate_bps, arr, n)
    if rc < 0:
        raise ValueError(rc)
    return PyBytes_FromStringAndSize(<char *>buf, rc)


def remb_encode_bitrate(uint64_t bitrate_bps):
    """(exp, mantissa) chosen by the builder."""
    cdef uint8_t e = 0
    cdef uint32_t m = 0
    sfu_remb_encode_bitrate(bitrate_bps, &e, &m)
    return (e, m)


cdef class RembAggregator:
    """sfu_remb_agg_t for one producer, driven in virtual time."""
    cdef sfu_remb_agg_t a

    def __cinit__(self):
        sfu_remb_agg_init(&self.a)

    def update(self, uint32_t consumer_id, uint64_t bitrate_bps, uint64_t now_ms):
        return sfu_remb_agg_update(&self.a, consumer_id, bitrate_bps, now_ms)

    def remove(self, uint32_t consumer_id):
        return sfu_remb_agg_remove(&self.a, consumer_id)

    def poll(self, uint64_t now_ms, uint64_t floor_bps=0):
        """The bitrate to send now, or None."""
        cdef uint64_t out = 0
        if sfu_remb_agg_poll(&self.a, now_ms, floor_bps, &out):
            return out
        return None

    @property
    def count(self):
        return sfu_remb_agg_count(&self.a)


# ------------------------------------------------------------------ transport-cc

def twcc_read_ext(bytes data):
    cdef uint16_t seq = 0
    if sfu_twcc_read_ext(<const uint8_t *>PyBytes_AS_STRING(data), len(data), &seq) < 0:
        return None
    return seq


def twcc_parse_feedback(bytes data, int max=65535):
    """A negative SFU_TWCC_E* code, or a dict with base_seq, status_count,
    ref_time, fb_count, statuses and deltas (250 us units)."""
    cdef uint16_t base = 0, count = 0
    cdef int32_t ref = 0
    cdef uint8_t fbc = 0
    if max < 0 or max > 65535:
        raise ValueError("max must be 0..65535")
    cdef uint8_t *st = <uint8_t *>malloc(max + 1)
    cdef int32_t *dl = <int32_t *>malloc((max + 1) * sizeof(int32_t))
    cdef int rc
    if st == NULL or dl == NULL:
        free(st)
        free(dl)
        raise MemoryError()
    try:
        rc = sfu_twcc_parse_feedback(<const uint8_t *>PyBytes_AS_STRING(data), len(data),
                                     &base, &count, &ref, &fbc, st, dl, max)
        if rc < 0:
            return rc
        return {
            "base_seq": base,
            "status_count": count,
            "ref_time": ref,
            "fb_count": fbc,
            "statuses": [st[i] for i in range(rc)],
            "deltas": [dl[i] for i in range(rc)],
        }
    finally:
        free(st)
        free(dl)


cdef class TwccReceiver:
    """sfu_twcc_recv_t for one transport, driven in virtual time."""
    cdef sfu_twcc_recv_t *r

    def __cinit__(self):
        self.r = <sfu_twcc_recv_t *>malloc(sizeof(sfu_twcc_recv_t))
        if self.r == NULL:
            raise MemoryError()
        sfu_twcc_recv_init(self.r)

    def __dealloc__(self):
        free(self.r)

    def on_packet(self, uint16_t seq, uint64_t arrival_us):
        return sfu_twcc_on_packet(self.r, seq, arrival_us)

    @property
    def pending(self):
        return bool(sfu_twcc_pending(self.r))

    def build_feedback(self, uint32_t sender_ssrc=1, uint32_t media_ssrc=2, int cap=1200):
        """One feedback packet (b"" when nothing to report); ValueError(code)."""
        cdef uint8_t buf[4096]
        if cap < 0 or cap > 4096:
            raise ValueError("cap must be 0..4096")
        cdef int rc = sfu_twcc_build_feedback(self.r, buf, cap, sender_ssrc, media_ssrc)
        if rc < 0:
            raise ValueError(rc)
        return PyBytes_FromStringAndSize(<char *>buf, rc)

    @property
    def counters(self):
        return {"received": self.r.received, "duplicates": self.r.duplicates,
                "late": self.r.late, "fb_count": self.r.fb_count}


# ------------------------------------------------------------------ RTP statistics

def stream_score(uint8_t fraction_lost, uint32_t expected=0, uint32_t repaired=0):
    return sfu_stream_score(fraction_lost, expected, repaired)


cdef class RtpStats:
    """sfu_rtp_stats_t for one received stream, driven in virtual time."""
    cdef sfu_rtp_stats_t s

    def __cinit__(self, uint32_t clock_rate=90000):
        sfu_rtp_stats_init(&self.s, clock_rate)

    def update(self, uint16_t seq, uint32_t rtp_ts, uint64_t arrival_ms):
        return sfu_rtp_stats_update(&self.s, seq, rtp_ts, arrival_ms)

    def report_block(self, uint32_t ssrc, uint64_t now_ms, uint32_t lsr=0, uint64_t last_sr_arrival_ms=0):
        cdef sfu_stats_block_t b
        cdef int rc = sfu_rtp_stats_report_block(&self.s, ssrc, now_ms, lsr, last_sr_arrival_ms, &b)
        return {
            "valid": rc, "ssrc": b.ssrc, "fraction_lost": b.fraction_lost,
            "cumulative_lost": b.cumulative_lost, "ext_highest_seq": b.ext_highest_seq,
            "jitter": b.jitter, "lsr": b.lsr, "dlsr": b.dlsr,
        }

    def score(self, uint32_t repaired=0):
        return sfu_rtp_stats_score(&self.s, repaired)

    @property
    def packets_lost(self):
        return sfu_rtp_stats_packets_lost(&self.s)

    @property
    def jitter(self):
        return sfu_rtp_stats_jitter(&self.s)

    @property
    def jitter_ms(self):
        return sfu_rtp_stats_jitter_ms(&self.s)

    @property
    def received(self):
        return sfu_rtp_stats_received(&self.s)

    @property
    def expected(self):
        return sfu_rtp_stats_expected(&self.s)

    @property
    def ext_highest_seq(self):
        return sfu_rtp_stats_ext_highest_seq(&self.s)


# ----------------------------------------------------------------- PLI / FIR (src/rtcp_pli.h, rtcp_fir.h)

cdef extern from "src/rtcp_pli.h" nogil:
    int sfu_rtcp_build_pli(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc)
    int sfu_rtcp_parse_pli(const uint8_t *pkt, size_t len, uint32_t *media_ssrc)

cdef extern from "src/rtcp_fir.h" nogil:
    ctypedef struct sfu_fir_entry_t:
        uint32_t ssrc
        uint8_t seq_nr
    int sfu_rtcp_build_fir(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t ssrc, uint8_t seq_nr)
    int sfu_rtcp_parse_fir(const uint8_t *pkt, size_t len, sfu_fir_entry_t *out, int max)


def rtcp_build_pli(uint32_t sender_ssrc, uint32_t media_ssrc, int cap=12):
    cdef uint8_t buf[64]
    cdef int rc = sfu_rtcp_build_pli(buf, min(cap, 64), sender_ssrc, media_ssrc)
    if rc < 0:
        raise RtcpBuildError(rc)
    return PyBytes_FromStringAndSize(<char *>buf, rc)


def rtcp_parse_pli(bytes pkt):
    """The media source SSRC of a PLI."""
    cdef uint32_t media
    cdef int rc = sfu_rtcp_parse_pli(<const uint8_t *>PyBytes_AS_STRING(pkt), len(pkt), &media)
    if rc < 0:
        raise RtcpBuildError(rc)
    return media


def rtcp_build_fir(uint32_t sender_ssrc, uint32_t ssrc, int seq_nr):
    cdef uint8_t buf[32]
    cdef int rc = sfu_rtcp_build_fir(buf, 32, sender_ssrc, ssrc, <uint8_t>seq_nr)
    if rc < 0:
        raise RtcpBuildError(rc)
    return PyBytes_FromStringAndSize(<char *>buf, rc)


def rtcp_parse_fir(bytes pkt, int limit=8):
    """[(ssrc, seq_nr)] of a FIR's entries (at most `limit`)."""
    cdef sfu_fir_entry_t entries[64]
    cdef int rc = sfu_rtcp_parse_fir(<const uint8_t *>PyBytes_AS_STRING(pkt), len(pkt), entries, min(limit, 64))
    if rc < 0:
        raise RtcpBuildError(rc)
    return [(entries[i].ssrc, entries[i].seq_nr) for i in range(min(rc, limit, 64))]
