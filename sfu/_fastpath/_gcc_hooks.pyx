# cython: language_level=3
"""Test hooks of the sender-side bandwidth estimation units: the send
history (src/twcc_send.c), the estimator (src/gcc.c) and, to build real
feedback packets, the transport-cc receiver (src/twcc.c):
sfu._fastpath._gcc_hooks, for tests only (the engine does not import it)."""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc


cdef extern from "src/twcc.h" nogil:
    ctypedef struct sfu_twcc_recv_t:
        uint64_t received
        uint64_t duplicates
        uint64_t late
    void sfu_twcc_recv_init(sfu_twcc_recv_t *r)
    int sfu_twcc_on_packet(sfu_twcc_recv_t *r, uint16_t transport_seq, uint64_t arrival_us)
    int sfu_twcc_pending(const sfu_twcc_recv_t *r)
    int sfu_twcc_build_feedback(sfu_twcc_recv_t *r, uint8_t *out, size_t cap,
                                uint32_t sender_ssrc, uint32_t media_ssrc)


cdef extern from "src/twcc_send.h" nogil:
    int SFU_TWCC_SEND_HISTORY
    ctypedef struct sfu_twcc_result_t:
        int64_t send_us
        int64_t recv_us
        uint32_t size
        uint16_t probe_cluster
    ctypedef struct sfu_twcc_send_t:
        int64_t next_seq
        uint64_t sent
        uint64_t feedbacks
        uint64_t fb_duplicates
        uint64_t fb_malformed
        uint64_t reported_received
        uint64_t reported_lost
        uint64_t recovered
        uint64_t unknown
        uint64_t repeated
    void sfu_twcc_send_init(sfu_twcc_send_t *s)
    uint16_t sfu_twcc_send_next(sfu_twcc_send_t *s, int64_t send_us, uint32_t size, uint16_t probe_cluster)
    int sfu_twcc_send_on_feedback(sfu_twcc_send_t *s, const uint8_t *pkt, size_t len, sfu_twcc_result_t *out, int max)
    void sfu_twcc_write_ext(uint8_t *p, uint16_t seq)


cdef extern from "src/gcc.h" nogil:
    int SFU_GCC_NORMAL
    int SFU_GCC_OVERUSE
    int SFU_GCC_UNDERUSE
    ctypedef struct sfu_gcc_t:
        uint32_t rtt_ms
        double threshold
        double modified_trend
        double trend
        double delay_bps
        double loss_bps
        double link_kbps
        double last_loss
        int rc_state
        uint64_t feedbacks
        uint64_t overuse_signals
        uint64_t decreases
        uint64_t loss_decreases
        uint64_t probes_applied
        uint64_t reordered_groups
        uint64_t ignored_results
    void sfu_gcc_init(sfu_gcc_t *g, uint32_t start_bps, uint32_t min_bps, uint32_t max_bps)
    void sfu_gcc_on_feedback(sfu_gcc_t *g, const sfu_twcc_result_t *r, int n, int64_t now_us)
    void sfu_gcc_on_rtt(sfu_gcc_t *g, uint32_t rtt_ms)
    void sfu_gcc_on_remb(sfu_gcc_t *g, uint32_t bps, int64_t now_us)
    void sfu_gcc_on_tick(sfu_gcc_t *g, int64_t now_us)
    uint32_t sfu_gcc_estimate_bps(const sfu_gcc_t *g)
    uint32_t sfu_gcc_acked_bps(const sfu_gcc_t *g)
    int sfu_gcc_usage(const sfu_gcc_t *g)
    uint16_t sfu_gcc_start_probe(sfu_gcc_t *g, uint32_t target_bps, int64_t now_us)
    int sfu_gcc_probe_done(const sfu_gcc_t *g, uint16_t cluster)
    uint32_t sfu_gcc_probe_result_bps(const sfu_gcc_t *g, uint16_t cluster)
    uint32_t sfu_gcc_probe_wanted_bps(const sfu_gcc_t *g, uint32_t demand_bps, int64_t interval_us, int64_t now_us)


HISTORY = SFU_TWCC_SEND_HISTORY
NORMAL = SFU_GCC_NORMAL
OVERUSE = SFU_GCC_OVERUSE
UNDERUSE = SFU_GCC_UNDERUSE


def write_ext(uint16_t seq):
    cdef uint8_t b[2]
    sfu_twcc_write_ext(b, seq)
    return bytes(b[:2])


cdef class Receiver:
    """sfu_twcc_recv_t (src/twcc.h): the receiver side, building real feedback."""
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

    def build_feedback(self, uint32_t sender_ssrc=1, uint32_t media_ssrc=2, size_t cap=1200):
        """Every feedback packet pending now (a list of bytes)."""
        cdef uint8_t buf[4096]
        if cap > 4096:
            cap = 4096
        out = []
        cdef int rc
        while True:
            rc = sfu_twcc_build_feedback(self.r, buf, cap, sender_ssrc, media_ssrc)
            if rc <= 0:
                if rc < 0:
                    raise ValueError(f"twcc build error {rc}")
                return out
            out.append(bytes(buf[:rc]))


cdef class SendHistory:
    """sfu_twcc_send_t (src/twcc_send.h)."""
    cdef sfu_twcc_send_t *s
    cdef sfu_twcc_result_t *res

    def __cinit__(self):
        self.s = <sfu_twcc_send_t *>malloc(sizeof(sfu_twcc_send_t))
        self.res = <sfu_twcc_result_t *>malloc(sizeof(sfu_twcc_result_t) * 65536)
        if self.s == NULL or self.res == NULL:
            raise MemoryError()
        sfu_twcc_send_init(self.s)

    def __dealloc__(self):
        free(self.s)
        free(self.res)

    def next(self, int64_t send_us, uint32_t size, uint16_t probe_cluster=0):
        return sfu_twcc_send_next(self.s, send_us, size, probe_cluster)

    cdef int _feed(self, const uint8_t[:] pkt, int max):
        cdef const uint8_t *p = NULL
        if pkt.shape[0] > 0:
            p = &pkt[0]
        if max > 65536:
            max = 65536
        return sfu_twcc_send_on_feedback(self.s, p, pkt.shape[0], self.res, max)

    def on_feedback(self, const uint8_t[:] pkt, int max=65536):
        """[(send_us, recv_us or -1, size, probe_cluster)] or a negative code."""
        cdef int n = self._feed(pkt, max)
        if n < 0:
            return n
        return [(self.res[i].send_us, self.res[i].recv_us, self.res[i].size, self.res[i].probe_cluster)
                for i in range(n)]

    @property
    def counters(self):
        s = self.s
        return dict(sent=s.sent, feedbacks=s.feedbacks, fb_duplicates=s.fb_duplicates,
                    fb_malformed=s.fb_malformed, reported_received=s.reported_received,
                    reported_lost=s.reported_lost, recovered=s.recovered, unknown=s.unknown,
                    repeated=s.repeated)


cdef class Gcc:
    """sfu_gcc_t (src/gcc.h)."""
    cdef sfu_gcc_t *g
    cdef sfu_twcc_result_t *res

    def __cinit__(self, uint32_t start_bps=300000, uint32_t min_bps=30000, uint32_t max_bps=10000000):
        self.g = <sfu_gcc_t *>malloc(sizeof(sfu_gcc_t))
        self.res = <sfu_twcc_result_t *>malloc(sizeof(sfu_twcc_result_t) * 65536)
        if self.g == NULL or self.res == NULL:
            raise MemoryError()
        sfu_gcc_init(self.g, start_bps, min_bps, max_bps)

    def __dealloc__(self):
        free(self.g)
        free(self.res)

    def on_results(self, results, int64_t now_us):
        """results: [(send_us, recv_us or -1, size, probe_cluster)]"""
        cdef int n = min(len(results), 65536)
        cdef int i
        for i in range(n):
            self.res[i].send_us, self.res[i].recv_us, self.res[i].size, self.res[i].probe_cluster = results[i]
        sfu_gcc_on_feedback(self.g, self.res, n, now_us)

    def on_feedback_packet(self, SendHistory h, const uint8_t[:] pkt, int64_t now_us):
        """The engine's path: the send history reads the packet, the results go to the estimator. Returns the count or a negative code."""
        cdef int n = h._feed(pkt, 65536)
        if n > 0:
            sfu_gcc_on_feedback(self.g, h.res, n, now_us)
        return n

    def on_rtt(self, uint32_t rtt_ms):
        sfu_gcc_on_rtt(self.g, rtt_ms)

    def on_remb(self, uint32_t bps, int64_t now_us):
        sfu_gcc_on_remb(self.g, bps, now_us)

    def on_tick(self, int64_t now_us):
        sfu_gcc_on_tick(self.g, now_us)

    def start_probe(self, uint32_t target_bps, int64_t now_us):
        return sfu_gcc_start_probe(self.g, target_bps, now_us)

    def probe_done(self, uint16_t cluster):
        return sfu_gcc_probe_done(self.g, cluster)

    def probe_result(self, uint16_t cluster):
        return sfu_gcc_probe_result_bps(self.g, cluster)

    def probe_wanted(self, uint32_t demand_bps, int64_t interval_us, int64_t now_us):
        return sfu_gcc_probe_wanted_bps(self.g, demand_bps, interval_us, now_us)

    @property
    def estimate(self):
        return sfu_gcc_estimate_bps(self.g)

    @property
    def acked(self):
        return sfu_gcc_acked_bps(self.g)

    @property
    def usage(self):
        return sfu_gcc_usage(self.g)

    @property
    def state(self):
        g = self.g
        return dict(delay_bps=g.delay_bps, loss_bps=g.loss_bps, threshold=g.threshold,
                    modified_trend=g.modified_trend, trend=g.trend, link_kbps=g.link_kbps,
                    last_loss=g.last_loss, rc_state=g.rc_state, rtt_ms=g.rtt_ms, feedbacks=g.feedbacks,
                    overuse_signals=g.overuse_signals, decreases=g.decreases,
                    loss_decreases=g.loss_decreases, probes_applied=g.probes_applied,
                    reordered_groups=g.reordered_groups, ignored_results=g.ignored_results)
