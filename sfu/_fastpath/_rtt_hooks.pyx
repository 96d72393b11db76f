# cython: language_level=3
"""Test hooks of the RTCP XR unit (src/rtcp_xr.c) and the RTT estimator
(src/rtt.c): sfu._fastpath._rtt_hooks, for tests only (the engine does not
import it)."""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc


cdef extern from "src/rtcp_xr.h" nogil:
    int SFU_XR_RRTR_PACKET_SIZE
    int SFU_XR_MAX_DLRR_SUBS
    ctypedef struct sfu_xr_dlrr_t:
        uint32_t ssrc
        uint32_t lrr
        uint32_t dlrr
    ctypedef struct sfu_xr_info_t:
        uint32_t sender_ssrc
        uint64_t rrtr_ntp
        int nrrtr
        int ndlrr
        int nblocks
        int nunknown
    int sfu_rtcp_build_xr_rrtr(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t ntp)
    int sfu_rtcp_build_xr_dlrr(uint8_t *out, size_t cap, uint32_t sender_ssrc, const sfu_xr_dlrr_t *subs, int n)
    int sfu_rtcp_parse_xr(const uint8_t *pkt, size_t len, sfu_xr_info_t *info, sfu_xr_dlrr_t *dlrr, int max)


cdef extern from "src/rtcp_report.h" nogil:
    uint64_t sfu_ntp_from_ms(uint64_t unix_ms)
    uint32_t sfu_ntp_compact(uint64_t ntp)


cdef extern from "src/rtt.h" nogil:
    int SFU_RTT_HISTORY
    int SFU_RTT_WINDOW
    int SFU_RTT_MAX_MS
    int SFU_RTT_MAX_AGE_MS
    int SFU_RTT_ENO_TIMESTAMP
    int SFU_RTT_EUNKNOWN
    int SFU_RTT_EDUPLICATE
    int SFU_RTT_ESTALE
    int SFU_RTT_ENEGATIVE
    int SFU_RTT_ETOO_LARGE
    ctypedef struct sfu_rtt_t:
        uint32_t last_us
        uint64_t samples
        uint64_t rejected
    void sfu_rtt_init(sfu_rtt_t *r)
    void sfu_rtt_on_rrtr_sent(sfu_rtt_t *r, uint32_t ntp_compact, uint64_t now_ms)
    int sfu_rtt_on_dlrr(sfu_rtt_t *r, uint32_t lrr, uint32_t dlrr, uint32_t now_compact, uint64_t now_ms)
    int sfu_rtt_on_report_block(sfu_rtt_t *r, uint32_t lsr, uint32_t dlsr, uint32_t now_compact)
    uint32_t sfu_rtt_ms(const sfu_rtt_t *r)


RRTR_PACKET_SIZE = SFU_XR_RRTR_PACKET_SIZE
MAX_DLRR_SUBS = SFU_XR_MAX_DLRR_SUBS
HISTORY = SFU_RTT_HISTORY
WINDOW = SFU_RTT_WINDOW
MAX_MS = SFU_RTT_MAX_MS
MAX_AGE_MS = SFU_RTT_MAX_AGE_MS
ENO_TIMESTAMP = SFU_RTT_ENO_TIMESTAMP
EUNKNOWN = SFU_RTT_EUNKNOWN
EDUPLICATE = SFU_RTT_EDUPLICATE
ESTALE = SFU_RTT_ESTALE
ENEGATIVE = SFU_RTT_ENEGATIVE
ETOO_LARGE = SFU_RTT_ETOO_LARGE


class XrError(ValueError):
    """A negative SFU_RB_* code of the XR builders / parser (rtcp.h)."""

    def __init__(self, code):
        super().__init__(f"rtcp xr error {code}")
        self.code = code


def ntp_from_ms(uint64_t unix_ms):
    return sfu_ntp_from_ms(unix_ms)


def ntp_compact(uint64_t ntp):
    return sfu_ntp_compact(ntp)


def build_rrtr(uint32_t sender_ssrc, uint64_t ntp, size_t cap=64):
    cdef uint8_t buf[64]
    if cap > 64:
        cap = 64
    cdef int n = sfu_rtcp_build_xr_rrtr(buf, cap, sender_ssrc, ntp)
    if n < 0:
        raise XrError(n)
    return bytes(buf[:n])


def build_dlrr(uint32_t sender_ssrc, subs, cap=None):
    """subs: [(ssrc, lrr, dlrr), ...]"""
    cdef int n = len(subs)
    cdef size_t c = 12 + 12 * n if cap is None else cap
    cdef sfu_xr_dlrr_t *arr = <sfu_xr_dlrr_t *>malloc(sizeof(sfu_xr_dlrr_t) * (n if n > 0 else 1))
    cdef uint8_t *out = <uint8_t *>malloc(c if c > 0 else 1)
    cdef int i, rc
    try:
        if arr == NULL or out == NULL:
            raise MemoryError()
        for i in range(n):
            arr[i].ssrc, arr[i].lrr, arr[i].dlrr = subs[i]
        rc = sfu_rtcp_build_xr_dlrr(out, c, sender_ssrc, arr, n)
        if rc < 0:
            raise XrError(rc)
        return bytes(out[:rc])
    finally:
        free(arr)
        free(out)


def parse_xr(const uint8_t[:] pkt, int limit=64):
    """Returns dict(sender_ssrc, rrtr_ntp (None without an RRTR), nrrtr,
    ndlrr, nblocks, nunknown, dlrr=[(ssrc, lrr, dlrr), ...]) or raises XrError."""
    cdef sfu_xr_info_t info
    cdef sfu_xr_dlrr_t *arr = <sfu_xr_dlrr_t *>malloc(sizeof(sfu_xr_dlrr_t) * (limit if limit > 0 else 1))
    cdef int rc, i
    cdef const uint8_t *p = NULL
    if arr == NULL:
        raise MemoryError()
    try:
        if pkt.shape[0] > 0:
            p = &pkt[0]
        rc = sfu_rtcp_parse_xr(p, pkt.shape[0], &info, arr, limit)
        if rc < 0:
            raise XrError(rc)
        return dict(
            sender_ssrc=info.sender_ssrc,
            rrtr_ntp=info.rrtr_ntp if info.nrrtr else None,
            nrrtr=info.nrrtr, ndlrr=info.ndlrr, nblocks=info.nblocks, nunknown=info.nunknown,
            dlrr=[(arr[i].ssrc, arr[i].lrr, arr[i].dlrr) for i in range(rc)],
        )
    finally:
        free(arr)


cdef class RttEstimator:
    """sfu_rtt_t (src/rtt.h): the methods return the sample in us or a
    negative SFU_RTT_E* code, as the C functions do."""
    cdef sfu_rtt_t r

    def __cinit__(self):
        sfu_rtt_init(&self.r)

    def rrtr_sent(self, uint32_t ntp_compact, uint64_t now_ms):
        sfu_rtt_on_rrtr_sent(&self.r, ntp_compact, now_ms)

    def on_dlrr(self, uint32_t lrr, uint32_t dlrr, uint32_t now_compact, uint64_t now_ms):
        return sfu_rtt_on_dlrr(&self.r, lrr, dlrr, now_compact, now_ms)

    def on_report_block(self, uint32_t lsr, uint32_t dlsr, uint32_t now_compact):
        return sfu_rtt_on_report_block(&self.r, lsr, dlsr, now_compact)

    @property
    def rtt_ms(self):
        return sfu_rtt_ms(&self.r)

    @property
    def samples(self):
        return self.r.samples

    @property
    def rejected(self):
        return self.r.rejected

    @property
    def last_us(self):
        return self.r.last_us
