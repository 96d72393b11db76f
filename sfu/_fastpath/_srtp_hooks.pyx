# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Test and benchmark hooks of the engine's SRTP unit (src/srtp.c).

`SrtpContext(profile, key, outbound)` wraps one `sfu_srtp_t`;
protect/unprotect/protect_rtcp/unprotect_rtcp take and return bytes and raise
`SrtpError` (with `.code`, a negative SFU_SRTP_E_*) on failure.
`bench_protect` and `bench_libsrtp_protect` time protect in a C loop without
the GIL. Tests and benchmarks only; the engine links src/srtp.c itself.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_FromStringAndSize


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC


cdef extern from "src/srtp.h" nogil:
    ctypedef struct sfu_srtp_t:
        pass
    int SFU_SRTP_AES128_CM_SHA1_80, SFU_SRTP_AES128_CM_SHA1_32, SFU_SRTP_AEAD_AES_128_GCM, SFU_SRTP_AEAD_AES_256_GCM
    int SFU_SRTP_E_MALFORMED, SFU_SRTP_E_NO_ROOM, SFU_SRTP_E_AUTH, SFU_SRTP_E_REPLAY
    int SFU_SRTP_E_TOO_MANY_STREAMS, SFU_SRTP_E_CRYPTO, SFU_SRTP_E_DIRECTION, SFU_SRTP_E_EXHAUSTED
    int SFU_SRTP_E_NO_MEMORY
    int SFU_SRTP_MAX_STREAMS, SFU_SRTP_REPLAY_WINDOW
    sfu_srtp_t *sfu_srtp_new(int profile, const uint8_t *key, size_t len, int outbound)
    void sfu_srtp_free(sfu_srtp_t *s)
    int sfu_srtp_protect(sfu_srtp_t *s, uint8_t *buf, size_t *len, size_t cap)
    int sfu_srtp_unprotect(sfu_srtp_t *s, uint8_t *buf, size_t *len)
    int sfu_srtp_protect_rtcp(sfu_srtp_t *s, uint8_t *buf, size_t *len, size_t cap)
    int sfu_srtp_unprotect_rtcp(sfu_srtp_t *s, uint8_t *buf, size_t *len)
    size_t sfu_srtp_max_overhead()
    int sfu_srtp_remove_stream(sfu_srtp_t *s, uint32_t ssrc)
    size_t sfu_srtp_stream_count(const sfu_srtp_t *s)


ctypedef int (*libsrtp_fn)(void *ctx, void *buf, int *len) nogil

AES128_CM_SHA1_80 = SFU_SRTP_AES128_CM_SHA1_80
AES128_CM_SHA1_32 = SFU_SRTP_AES128_CM_SHA1_32
AEAD_AES_128_GCM = SFU_SRTP_AEAD_AES_128_GCM
AEAD_AES_256_GCM = SFU_SRTP_AEAD_AES_256_GCM
E_MALFORMED = SFU_SRTP_E_MALFORMED
E_NO_ROOM = SFU_SRTP_E_NO_ROOM
E_AUTH = SFU_SRTP_E_AUTH
E_REPLAY = SFU_SRTP_E_REPLAY
E_TOO_MANY_STREAMS = SFU_SRTP_E_TOO_MANY_STREAMS
E_CRYPTO = SFU_SRTP_E_CRYPTO
E_DIRECTION = SFU_SRTP_E_DIRECTION
E_EXHAUSTED = SFU_SRTP_E_EXHAUSTED
E_NO_MEMORY = SFU_SRTP_E_NO_MEMORY
MAX_STREAMS = SFU_SRTP_MAX_STREAMS
REPLAY_WINDOW = SFU_SRTP_REPLAY_WINDOW


def max_overhead():
    return sfu_srtp_max_overhead()


class SrtpError(Exception):
    """An sfu_srtp_* call returned `code` (a negative SFU_SRTP_E_*)."""

    def __init__(self, code):
        super().__init__(f"SRTP error {code}")
        self.code = code


cdef class SrtpContext:
    cdef sfu_srtp_t *s
    cdef readonly int profile
    cdef readonly bint outbound

    def __cinit__(self, int profile, bytes key, bint outbound):
        self.s = sfu_srtp_new(profile, <const uint8_t *>key, len(key), outbound)
        if self.s == NULL:
            raise ValueError(f"bad SRTP profile {profile} or key length {len(key)}")
        self.profile = profile
        self.outbound = outbound

    def __dealloc__(self):
        sfu_srtp_free(self.s)
        self.s = NULL

    cdef bytes _run(self, int op, bytes packet, Py_ssize_t cap):
        cdef size_t n = len(packet)
        if cap < 0:
            cap = <Py_ssize_t>n + <Py_ssize_t>sfu_srtp_max_overhead()
        cdef size_t alloc = max(<size_t>cap, n) + 1
        cdef uint8_t *buf = <uint8_t *>malloc(alloc)
        cdef int rc
        if buf == NULL:
            raise MemoryError()
        try:
            memcpy(buf, <const uint8_t *>packet, n)
            if op == 0:
                rc = sfu_srtp_protect(self.s, buf, &n, <size_t>cap)
            elif op == 1:
                rc = sfu_srtp_unprotect(self.s, buf, &n)
            elif op == 2:
                rc = sfu_srtp_protect_rtcp(self.s, buf, &n, <size_t>cap)
            else:
                rc = sfu_srtp_unprotect_rtcp(self.s, buf, &n)
            if rc != 0:
                raise SrtpError(rc)
            return PyBytes_FromStringAndSize(<char *>buf, n)
        finally:
            free(buf)

    def protect(self, bytes packet, Py_ssize_t cap=-1):
        """cap: the buffer size passed to C (default: len + max_overhead())."""
        return self._run(0, packet, cap)

    def unprotect(self, bytes packet):
        return self._run(1, packet, -1)

    def protect_rtcp(self, bytes packet, Py_ssize_t cap=-1):
        return self._run(2, packet, cap)

    def unprotect_rtcp(self, bytes packet):
        return self._run(3, packet, -1)

    def remove_stream(self, uint32_t ssrc):
        return sfu_srtp_remove_stream(self.s, ssrc) == 1

    @property
    def stream_count(self):
        return sfu_srtp_stream_count(self.s)

    @property
    def address(self):
        return <uintptr_t>self.s


cdef inline void fill_packet(uint8_t *buf, int size):
    memset(buf, 0x5a, size)
    buf[0] = 0x80
    buf[1] = 96
    buf[4] = 0; buf[5] = 0; buf[6] = 0x10; buf[7] = 0


def bench_protect(SrtpContext ctx, int size, uint64_t count, int n_ssrc=1, uint32_t first_ssrc=0x12345678,
                  int first_seq=1):
    """ns per sfu_srtp_protect of a `size`-byte RTP packet, `count` times in a
    C loop (no GIL), round-robin over `n_ssrc` SSRCs (first_ssrc + k), each
    SSRC's sequence number advancing by one per packet of it."""
    return _bench(0, <uintptr_t>ctx.s, size, count, n_ssrc, first_ssrc, first_seq)


def bench_libsrtp_protect(uintptr_t protect_addr, uintptr_t session_addr, int size, uint64_t count, int n_ssrc=1,
                          uint32_t first_ssrc=0x12345678, int first_seq=1):
    """The same loop on libsrtp's srtp_protect (address from
    sfu.srtp.engine_functions()[0]) and an srtp_t (SrtpContext(...).address)."""
    if protect_addr == 0 or session_addr == 0:
        raise ValueError("addresses must be non-zero")
    return _bench(protect_addr, session_addr, size, count, n_ssrc, first_ssrc, first_seq)


cdef double _bench(uintptr_t fn_addr, uintptr_t ctx, int size, uint64_t count, int n_ssrc, uint32_t first_ssrc,
                   int first_seq) except -1.0:
    cdef uint8_t buf[2048]
    cdef uint64_t i
    cdef int k = 0, il, rc = 0
    cdef size_t l
    cdef uint16_t seq = <uint16_t>first_seq
    cdef uint32_t ssrc
    cdef timespec t0, t1
    cdef libsrtp_fn fn = <libsrtp_fn>fn_addr
    if size < 12 or size > 2048 - 160:
        raise ValueError("size must be 12..1888")
    if count == 0 or n_ssrc < 1 or ctx == 0:
        raise ValueError("count, n_ssrc and the context must be non-zero")
    fill_packet(buf, size)
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        for i in range(count):
            ssrc = first_ssrc + <uint32_t>k
            buf[2] = <uint8_t>(seq >> 8)
            buf[3] = <uint8_t>seq
            buf[8] = <uint8_t>(ssrc >> 24); buf[9] = <uint8_t>(ssrc >> 16)
            buf[10] = <uint8_t>(ssrc >> 8); buf[11] = <uint8_t>ssrc
            if fn_addr == 0:
                l = <size_t>size
                rc = sfu_srtp_protect(<sfu_srtp_t *>ctx, buf, &l, sizeof(buf))
            else:
                il = size
                rc = fn(<void *>ctx, buf, &il)
            if rc != 0:
                break
            k += 1
            if k == n_ssrc:
                k = 0
                seq += 1
        clock_gettime(CLOCK_MONOTONIC, &t1)
    if rc != 0:
        raise RuntimeError(f"protect failed with status {rc}")
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / count
