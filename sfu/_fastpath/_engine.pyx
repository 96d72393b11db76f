# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled forwarding engine and its packet helpers.

`Engine` owns UDP sockets, transports, producers and consumers of one worker
and forwards RTP between them on an I/O thread of its own (see io.c); every
method here is control plane. `Engine.receive` / `Engine.take_outbox` drive the
same core without sockets or threads (sans-IO), for tests and benchmarks.

The module-level helpers (`parse_rtp`, `rtp_extensions`, `map_extensions`,
`parse_rtcp`, `SeqManager`) expose the C packet logic for tests.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from sfu._fastpath._cdefs cimport *
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC  # benchmark hooks

COUNTER_NAMES = (
    "rx_datagrams", "rx_bytes", "rx_rtp", "rx_rtcp", "rx_stun", "rx_dtls", "rx_unknown",
    "drop_no_transport", "drop_not_connected", "drop_unknown_source", "drop_too_big",
    "drop_srtp", "drop_rtp_malformed", "drop_rtcp_malformed", "drop_unknown_ssrc",
    "drop_unknown_pt", "drop_producer_paused", "drop_rtx", "drop_outbox_full",
    "drop_upcall_full", "tx_datagrams", "tx_bytes", "tx_errors", "tx_srtp_errors",
    "recv_calls", "send_calls", "loop_iterations", "rx_pli", "rx_fir", "tx_pli",
    "rx_nack", "tx_nack", "rx_rtx", "tx_retransmissions", "retransmission_misses", "rx_remb", "tx_remb",
    "tx_sr", "tx_rr", "tx_twcc", "keyframe_retries", "ssrc_learned",
    "drop_stun_unvalidated", "timer_runs",
)

def _rtp_id(value, what):
    """A MID or RID as the engine takes it: 1 to 16 ASCII bytes, or None."""
    if value is None or value == "":
        return None
    b = value.encode("ascii", "strict") if isinstance(value, str) else bytes(value)
    if len(b) > 16 or b"\0" in b:
        raise ValueError(f"{what}: at most 16 bytes, got {value!r}")
    return b


CODEC_IDS = {"vp8": 1, "video/vp8": 1, "vp9": 2, "video/vp9": 2, "h264": 3, "video/h264": 3}

PACKET_KINDS = {1: "stun", 2: "dtls", 3: "rtp", 4: "rtcp", 5: "unknown"}

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


# ----------------------------------------------------------------- helpers

cdef int _sockaddr(object addr, sockaddr_storage *ss, socklen_t *ln) except -1:
    ip, port = addr
    cdef bytes b = str(ip).encode()
    if sfu_sockaddr_from_ip(b, int(port), ss, ln) != 0:
        raise ValueError(f"invalid address {addr!r}")
    return 0


cdef object _addr_tuple(const sockaddr_storage *ss):
    cdef char ip[64]
    cdef int port = sfu_sockaddr_to_ip(ss, ip)
    if port < 0:
        return None
    return (ip.decode(), port)


cdef void _fill_map(uint8_t *out, int n, object mapping, uint8_t unmapped, int max_value=255) except *:
    """out[k] = mapping[k], and `unmapped` for keys not in mapping (0xFF for
    payload types = drop; 0 for extension ids = remove). Values above
    max_value are rejected (payload types are 7-bit)."""
    cdef int i
    for i in range(n):
        out[i] = unmapped
    if mapping:
        for k, v in mapping.items():
            if not (0 <= k < n) or not (0 <= v <= max_value):
                raise ValueError(f"map entry {k}->{v} out of range")
            out[k] = v


def set_srtp_functions(uintptr_t protect, uintptr_t unprotect, uintptr_t protect_rtcp, uintptr_t unprotect_rtcp):
    """Installs libsrtp's srtp_protect/unprotect(_rtcp) entry points (addresses)."""
    sfu_srtp_set_functions(<sfu_srtp_fn>protect, <sfu_srtp_fn>unprotect,
                           <sfu_srtp_fn>protect_rtcp, <sfu_srtp_fn>unprotect_rtcp)


def now_ms():
    """The engine's monotonic clock in milliseconds."""
    return sfu_now_ms()


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


# ----------------------------------------------------------------- engine

cdef class Engine:
    """One worker's forwarding engine. Handles are opaque non-zero ints."""
    cdef sfu_engine_t *e
    cdef bint started

    def __cinit__(self):
        self.e = sfu_engine_new()
        if self.e == NULL:
            raise MemoryError("could not allocate the engine")

    def __dealloc__(self):
        if self.e != NULL:
            sfu_engine_free(self.e)
            self.e = NULL

    # -- I/O thread

    def start(self):
        """Starts the I/O thread (epoll + recvmmsg/sendmmsg)."""
        cdef int rc
        with nogil:
            rc = sfu_io_start(self.e)
        if rc != 0:
            raise OSError(-rc, "could not start the engine I/O thread")
        self.started = True

    def stop(self):
        with nogil:
            sfu_io_stop(self.e)
        self.started = False

    def set_keyframe_request_interval(self, uint32_t ms):
        """At most one keyframe request (PLI) per producer stream per `ms`;
        requests inside the window are deferred to its end (0: no throttle)."""
        sfu_engine_lock(self.e)
        self.e.keyframe_request_interval_ms = ms
        sfu_engine_unlock(self.e)

    def set_notify_fd(self, int fd):
        """An eventfd the I/O thread writes when upcalls become available."""
        sfu_engine_lock(self.e)
        self.e.notify_fd = fd
        sfu_engine_unlock(self.e)

    # -- sockets and transports

    def add_socket(self, int fd):
        """Hands a bound, non-blocking UDP socket fd to the engine (which
        closes it on removal). fd=-1 adds a virtual socket for sans-IO use."""
        cdef uint32_t h
        with nogil:
            sfu_engine_lock(self.e)
            h = sfu_socket_add_locked(self.e, fd)
            sfu_engine_unlock(self.e)
        if h == 0:
            raise OSError("could not add socket to the engine")
        return h

    def remove_socket(self, uint32_t h):
        with nogil:
            sfu_engine_lock(self.e)
            sfu_socket_remove_locked(self.e, h)
            sfu_engine_unlock(self.e)

    def add_transport(self, uint32_t rtp_socket, uint32_t rtcp_socket=0, bint comedia=False,
                      bint ice=False, bint require_srtp=False):
        """A plain transport owns its socket(s); an ICE transport (ice=True)
        shares its socket and accepts media only from tuples bound with
        bind_tuple, and always requires SRTP."""
        cdef uint32_t h
        cdef int flags = ((SFU_TRANSPORT_COMEDIA if comedia else 0) | (SFU_TRANSPORT_ICE if ice else 0)
                          | (SFU_TRANSPORT_REQUIRE_SRTP if require_srtp else 0))
        with nogil:
            sfu_engine_lock(self.e)
            h = sfu_transport_add_locked(self.e, rtp_socket, rtcp_socket, flags)
            sfu_engine_unlock(self.e)
        if h == 0:
            raise ValueError("invalid socket for a new transport")
        return h

    def bind_tuple(self, uint32_t socket, object addr, uint32_t transport):
        """Routes datagrams from `addr` on `socket` to an ICE transport."""
        cdef sockaddr_storage ss
        cdef socklen_t sl
        _sockaddr(addr, &ss, &sl)
        sfu_engine_lock(self.e)
        rc = sfu_tuple_bind_locked(self.e, socket, <sockaddr *>&ss, sl, transport)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"cannot bind {addr!r}: unknown socket or non-ICE transport {transport}")

    def unbind_tuple(self, uint32_t socket, object addr):
        cdef sockaddr_storage ss
        cdef socklen_t sl
        _sockaddr(addr, &ss, &sl)
        sfu_engine_lock(self.e)
        rc = sfu_tuple_unbind_locked(self.e, socket, <sockaddr *>&ss, sl)
        sfu_engine_unlock(self.e)
        return rc == 0

    def send_raw(self, uint32_t socket, object addr, bytes data):
        """Sends a control datagram (STUN, DTLS) from one of the engine's sockets."""
        cdef sockaddr_storage ss
        cdef socklen_t sl
        _sockaddr(addr, &ss, &sl)
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef size_t n = len(data)
        with nogil:
            sfu_engine_lock(self.e)
            rc = sfu_send_raw_locked(self.e, socket, <sockaddr *>&ss, sl, p, n)
            sfu_engine_unlock(self.e)
        if rc != 0:
            raise ValueError(f"cannot send {n} bytes on socket {socket}")

    def connect_transport(self, uint32_t h, object addr, object rtcp_addr=None):
        """Sets the remote RTP (and RTCP) address; addr=None disconnects."""
        cdef sockaddr_storage a, b
        cdef socklen_t al = 0, bl = 0
        if addr is not None:
            _sockaddr(addr, &a, &al)
        if rtcp_addr is not None:
            _sockaddr(rtcp_addr, &b, &bl)
        sfu_engine_lock(self.e)
        rc = sfu_transport_connect_locked(self.e, h, <sockaddr *>&a if al else NULL, al,
                                          <sockaddr *>&b if bl else NULL, bl)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown transport handle {h}")

    def set_transport_srtp(self, uint32_t h, uintptr_t srtp_in, uintptr_t srtp_out):
        """Installs libsrtp contexts (srtp_t addresses; 0 = none). The caller
        keeps them alive until it clears them or removes the transport."""
        sfu_engine_lock(self.e)
        rc = sfu_transport_set_srtp_locked(self.e, h, <void *>srtp_in, <void *>srtp_out)
        sfu_engine_unlock(self.e)
        if rc == -2:
            raise RuntimeError("SRTP functions are not installed (set_srtp_functions)")
        if rc != 0:
            raise KeyError(f"unknown transport handle {h}")

    def remove_transport(self, uint32_t h):
        with nogil:
            sfu_engine_lock(self.e)
            sfu_transport_remove_locked(self.e, h)
            sfu_engine_unlock(self.e)

    def transport_tuple(self, uint32_t h):
        """((ip, port) | None, (ip, port) | None): remote RTP and RTCP addresses."""
        sfu_engine_lock(self.e)
        try:
            t = sfu_transport_get(self.e, h)
            if t == NULL:
                raise KeyError(f"unknown transport handle {h}")
            rtp = _addr_tuple(&t.remote.addr) if t.remote.set else None
            rtcp = _addr_tuple(&t.remote_rtcp.addr) if t.remote_rtcp.set else None
            return rtp, rtcp
        finally:
            sfu_engine_unlock(self.e)

    def transport_stats(self, uint32_t h):
        sfu_engine_lock(self.e)
        try:
            t = sfu_transport_get(self.e, h)
            if t == NULL:
                raise KeyError(f"unknown transport handle {h}")
            return {
                "rtpPacketsReceived": t.rtp_in.packets, "rtpBytesReceived": t.rtp_in.bytes,
                "rtpPacketsSent": t.rtp_out.packets, "rtpBytesSent": t.rtp_out.bytes,
                "rtcpPacketsReceived": t.rtcp_in.packets, "rtcpBytesReceived": t.rtcp_in.bytes,
                "rtcpPacketsSent": t.rtcp_out.packets, "rtcpBytesSent": t.rtcp_out.bytes,
                "packetsDiscarded": t.drops,
            }
        finally:
            sfu_engine_unlock(self.e)

    # -- producers and consumers

    def add_producer(self, uint32_t transport, bint video, list streams, dict pt_map, dict ext_map,
                     bint paused=False, dict codecs=None):
        """streams: [(ssrc, rtx_ssrc or 0)]; pt_map: incoming PT -> router PT;
        ext_map: incoming extension id -> router id (ids absent are removed);
        codecs: router PT -> 'vp8' | 'vp9' | 'h264', for keyframe detection."""
        cdef uint32_t ssrcs[4]
        cdef uint32_t rtx[4]
        cdef uint8_t ptm[128]
        cdef uint8_t extm[256]
        cdef int n = len(streams)
        if n < 1 or n > 4:
            raise ValueError("a producer has 1 to 4 streams")
        for i, (ssrc, rtx_ssrc) in enumerate(streams):
            ssrcs[i] = ssrc
            rtx[i] = rtx_ssrc or 0
        _fill_map(ptm, 128, pt_map, 0xFF, 127)
        _fill_map(extm, 256, ext_map, 0)
        extm[0] = 0
        cdef uint32_t h
        with nogil:
            sfu_engine_lock(self.e)
            h = sfu_producer_add_locked(self.e, transport, video, n, ssrcs, rtx, ptm, extm, paused)
            sfu_engine_unlock(self.e)
        if h == 0:
            raise ValueError("could not add producer (unknown transport or SSRC already in use)")
        cdef uint8_t cod[128]
        if codecs:
            memset(cod, 0, 128)
            for k, v in codecs.items():
                if not (0 <= k < 128):
                    raise ValueError(f"codecs: payload type {k} out of range")
                cod[k] = CODEC_IDS.get(str(v).lower(), 0)
            sfu_engine_lock(self.e)
            sfu_producer_set_codecs_locked(self.e, h, cod)
            sfu_engine_unlock(self.e)
        return h

    def set_producer_feedback(self, uint32_t h, bint nack=False, dict rtx_apt=None, int twcc_ext_id=0,
                              uint64_t remb_floor_bps=30000, uint32_t clock_rate=0):
        """Loss recovery for a producer: NACK its losses (rtx_apt: incoming RTX
        payload type -> media payload type, to decapsulate), transport-cc
        feedback (router extension id), REMB floor, clock rate for jitter."""
        cdef uint8_t apt[128]
        _fill_map(apt, 128, rtx_apt, 0xFF, 127)
        sfu_engine_lock(self.e)
        rc = sfu_producer_set_feedback_locked(self.e, h, nack, apt, <uint8_t>twcc_ext_id, remb_floor_bps, clock_rate)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown producer handle {h}")

    def set_consumer_feedback(self, uint32_t h, bint nack=False, int rtx_pt=0):
        """Answer the consumer's NACKs (as RTX with rtx_pt when non-zero)."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_feedback_locked(self.e, h, nack, <uint8_t>rtx_pt)
        sfu_engine_unlock(self.e)
        if rc == -2:
            raise MemoryError("no memory for the retransmission buffer")
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

    def set_producer_rtp_ids(self, uint32_t h, str mid=None, list rids=None, int mid_ext_id=0,
                             int rid_ext_id=0, int rrid_ext_id=0):
        """SSRC-less routing: the producer's MID, its streams' RIDs (None for
        none) and the incoming extension ids of MID, RID and repaired RID.
        Streams added with SSRC 0 are bound to the first packet naming them."""
        cdef bytes bmid = _rtp_id(mid, "mid")
        brids = [_rtp_id(r, "rid") for r in (rids or [])]
        cdef const char *crids[4]
        cdef int i
        for i in range(4):
            crids[i] = NULL
        for i, r in enumerate(brids[:4]):
            if r is not None:
                crids[i] = <const char *>r
        cdef const char *cmid = NULL
        if bmid is not None:
            cmid = bmid
        sfu_engine_lock(self.e)
        rc = sfu_producer_set_rtp_ids_locked(self.e, h, cmid, crids, <uint8_t>mid_ext_id, <uint8_t>rid_ext_id,
                                             <uint8_t>rrid_ext_id)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown producer handle {h}")

    def set_consumer_mid(self, uint32_t h, int ext_id, str mid):
        """Writes ``mid`` in the MID extension (consumer id ``ext_id``) of every
        packet the consumer sends; ext_id 0 writes none."""
        cdef bytes bmid = _rtp_id(mid, "mid")
        cdef const char *cmid = NULL
        if bmid is not None:
            cmid = bmid
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_mid_locked(self.e, h, <uint8_t>ext_id, cmid)
        sfu_engine_unlock(self.e)
        if rc == -2:
            raise ValueError("mid: required (1 to 16 bytes) when the MID extension is written")
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

    def set_producer_paused(self, uint32_t h, bint paused):
        sfu_engine_lock(self.e)
        rc = sfu_producer_set_paused_locked(self.e, h, paused)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown producer handle {h}")

    def remove_producer(self, uint32_t h):
        with nogil:
            sfu_engine_lock(self.e)
            sfu_producer_remove_locked(self.e, h)
            sfu_engine_unlock(self.e)

    def producer_stats(self, uint32_t h):
        sfu_engine_lock(self.e)
        try:
            p = sfu_producer_get(self.e, h)
            if p == NULL:
                raise KeyError(f"unknown producer handle {h}")
            return [{
                "ssrc": p.streams[i].ssrc, "rtxSsrc": p.streams[i].rtx_ssrc or None,
                "packetCount": p.streams[i].received.packets, "byteCount": p.streams[i].received.bytes,
                "highestSequenceNumber": p.streams[i].max_seq,
                "packetsLost": max(0, sfu_producer_stream_packets_lost(&p.streams[i].stats)),
                "fractionLost": p.streams[i].last_fraction_lost / 256.0,
                "jitter": sfu_producer_stream_jitter(&p.streams[i].stats),
                "nackCount": p.streams[i].nack_packets_sent,
                "pliCount": p.streams[i].keyframe_requests,
                "retransmittedPackets": p.streams[i].rtx_received,
                "bitrate": p.streams[i].rate_bps,
                "score": p.streams[i].score,
                "keyframeRequests": p.streams[i].keyframe_requests,
                "keyframes": p.streams[i].keyframes,
            } for i in range(p.nstreams)]
        finally:
            sfu_engine_unlock(self.e)

    def add_consumer(self, uint32_t transport, uint32_t producer, uint32_t ssrc, uint32_t rtx_ssrc,
                     uint32_t clock_rate, dict pt_map, dict ext_map, bint paused=False, int initial_seq=0):
        """pt_map: router PT -> consumer PT (others dropped); ext_map: router
        extension id -> consumer id (others removed)."""
        cdef uint8_t ptm[128]
        cdef uint8_t extm[256]
        _fill_map(ptm, 128, pt_map, 0xFF, 127)
        _fill_map(extm, 256, ext_map, 0)
        extm[0] = 0
        cdef uint32_t h
        with nogil:
            sfu_engine_lock(self.e)
            h = sfu_consumer_add_locked(self.e, transport, producer, ssrc, rtx_ssrc, clock_rate, ptm, extm,
                                        paused, <uint16_t>initial_seq)
            sfu_engine_unlock(self.e)
        if h == 0:
            raise ValueError("could not add consumer (unknown transport or producer)")
        return h

    def set_consumer_paused(self, uint32_t h, bint paused):
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_paused_locked(self.e, h, paused)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

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
        """Time-driven work (deferred keyframe requests), as the I/O thread
        does every loop; returns ms until the next due work or -1."""
        sfu_engine_lock(self.e)
        rc = sfu_engine_tick(self.e, now_ms)
        sfu_engine_unlock(self.e)
        return rc

    def remove_consumer(self, uint32_t h):
        with nogil:
            sfu_engine_lock(self.e)
            sfu_consumer_remove_locked(self.e, h)
            sfu_engine_unlock(self.e)

    def consumer_stats(self, uint32_t h):
        sfu_engine_lock(self.e)
        try:
            c = sfu_consumer_get(self.e, h)
            if c == NULL:
                raise KeyError(f"unknown consumer handle {h}")
            return {"ssrc": c.ssrc, "packetCount": c.sent.packets, "byteCount": c.sent.bytes,
                    "packetsDiscarded": c.dropped, "producerClosed": c.producer == NULL,
                    "nackCount": c.nack_packets_received, "nackPacketCount": c.nacked_seqs,
                    "retransmittedPackets": c.retransmitted, "pliCount": c.pli_received,
                    "firCount": c.fir_received, "roundTripTime": c.rtt_ms,
                    "fractionLost": c.fraction_lost / 256.0, "packetsLost": c.packets_lost,
                    "jitter": c.jitter, "bitrate": c.rate_bps, "score": c.score}
        finally:
            sfu_engine_unlock(self.e)

    def counters(self):
        """Engine-wide counters (datagrams, drops by reason, syscalls)."""
        sfu_engine_lock(self.e)
        try:
            d = {COUNTER_NAMES[i]: self.e.counters[i] for i in range(len(COUNTER_NAMES))}
            d["loop_busy_ns"] = self.e.loop_busy_ns
            return d
        finally:
            sfu_engine_unlock(self.e)

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

    def poll_upcalls(self):
        """Pops queued upcalls: ('packet', socket, transport, kind, addr, bytes)
        or ('tuple', socket, transport, is_rtcp, addr)."""
        cdef sfu_upcall_t up
        out = []
        sfu_engine_lock(self.e)
        try:
            while sfu_upcall_pop_locked(self.e, &up):
                try:
                    addr = _addr_tuple(&up.addr) if up.addr_len else None
                    if up.type == SFU_UP_PACKET:
                        out.append(("packet", up.socket, up.transport, PACKET_KINDS.get(up.kind, "unknown"),
                                    addr, PyBytes_FromStringAndSize(<char *>up.data, up.len)))
                    elif up.type == SFU_UP_TUPLE:
                        out.append(("tuple", up.socket, up.transport, bool(up.is_rtcp), addr))
                finally:
                    free(up.data)
        finally:
            sfu_engine_unlock(self.e)
        return out

    # ------------------------------------------------------------- benchmark hooks
    # Used by benchmarks/bench_core.py and bench_srtp.py only; not control plane.

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

def bench_srtp_direct(uintptr_t srtp_ctx_addr, int size, uint64_t count, protect_addr=None, int first_seq=1):
    """Calls libsrtp's srtp_protect directly from a C loop (no GIL) on one
    `size`-byte RTP packet `count` times, adding 1 to its sequence number and
    resetting its length before every call; returns nanoseconds per packet.

    protect_addr: the srtp_protect address; by default the one the engine
    installs (sfu.srtp.engine_functions()[0]). first_seq: the first sequence
    number (a later call on the same session must continue after the last
    one, or libsrtp's replay check refuses the packets)."""
    cdef uint8_t buf[2048]
    cdef uint64_t i
    cdef int l, rc = 0
    cdef uint16_t seq = <uint16_t>first_seq
    cdef timespec t0, t1
    cdef sfu_srtp_fn fn
    if protect_addr is None:
        from sfu.srtp import engine_functions
        protect_addr = engine_functions()[0]
    fn = <sfu_srtp_fn><uintptr_t>protect_addr
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
