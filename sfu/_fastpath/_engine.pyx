# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled forwarding engine and its packet helpers.

`Engine` owns UDP sockets, transports, producers and consumers of one worker
and forwards RTP between them on an I/O thread of its own (see io.c); every
method here is control plane. The hooks that drive the same core without
sockets or threads (sans-IO) and expose its C units to tests and benchmarks
are in a separate module, `sfu._fastpath._testhooks` (hooks.pxi), which the
production code never imports.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from sfu._fastpath._cdefs cimport *

COUNTER_NAMES = (
    "rx_datagrams", "rx_bytes", "rx_rtp", "rx_rtcp", "rx_stun", "rx_dtls", "rx_unknown",
    "drop_no_transport", "drop_not_connected", "drop_unknown_source", "drop_too_big",
    "drop_srtp", "drop_rtp_malformed", "drop_rtcp_malformed", "drop_unknown_ssrc",
    "drop_unknown_pt", "drop_producer_paused", "drop_rtx", "drop_outbox_full",
    "drop_upcall_full", "tx_datagrams", "tx_bytes", "tx_errors", "tx_srtp_errors",
    "recv_calls", "send_calls", "loop_iterations", "rx_pli", "rx_fir", "tx_pli",
    "rx_nack", "tx_nack", "rx_rtx", "tx_retransmissions", "retransmission_misses", "rx_remb", "tx_remb",
    "tx_sr", "tx_rr", "tx_twcc", "keyframe_retries", "ssrc_learned",
    "drop_stun_unvalidated", "timer_runs", "drop_direct_full",
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


def now_ms():
    """The engine's monotonic clock in milliseconds."""
    return sfu_now_ms()


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

    def add_direct_socket(self, uint32_t capacity=4 * 1024 * 1024):
        """A virtual socket for a DirectTransport: what the engine sends on it
        is queued (at most `capacity` bytes; a full queue drops and counts
        drop_direct_full) until :meth:`direct_take`. Freed by remove_socket."""
        cdef uint32_t h
        with nogil:
            sfu_engine_lock(self.e)
            h = sfu_direct_socket_add_locked(self.e, capacity)
            sfu_engine_unlock(self.e)
        if h == 0:
            raise ValueError(f"could not add a direct socket of {capacity} bytes (at least 1504)")
        return h

    def direct_take(self, uint32_t h):
        """Takes a direct socket's queue: (records, drops so far), records being
        [u32 little-endian length][datagram]... as one bytes object."""
        cdef sfu_socket_t *s
        sfu_engine_lock(self.e)
        try:
            s = sfu_socket_get(self.e, h)
            if s == NULL or s.direct == NULL:
                raise KeyError(f"unknown direct socket {h}")
            out = PyBytes_FromStringAndSize(<char *>s.direct.buf, s.direct.used)
            s.direct.used = 0
            return out, s.direct.drops
        finally:
            sfu_engine_unlock(self.e)

    def direct_send(self, uint32_t h, object src, bytes data):
        """Feeds one datagram to the engine as if received on socket `h` from
        `src` (a DirectTransport's producer), then sends what it caused."""
        cdef sockaddr_storage a
        cdef socklen_t al = 0
        cdef size_t n = len(data)
        cdef uint8_t *buf
        if n == 0 or n > 1500:
            raise ValueError(f"an RTP/RTCP datagram of 1..1500 bytes, got {n}")
        _sockaddr(src, &a, &al)
        buf = <uint8_t *>malloc(n + 256)
        if buf == NULL:
            raise MemoryError()
        memcpy(buf, PyBytes_AS_STRING(data), n)
        try:
            sfu_engine_lock(self.e)
            if sfu_socket_get(self.e, h) == NULL:
                sfu_engine_unlock(self.e)
                raise KeyError(f"unknown socket {h}")
            sfu_engine_receive(self.e, h, <sockaddr *>&a, al, buf, n, n + 256, sfu_now_ms())
            if self.e.flush != NULL:
                self.e.flush(self.e)
            sfu_engine_unlock(self.e)
        finally:
            free(buf)

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

    def set_transport_srtp(self, uint32_t h, int profile, bytes in_key=None, bytes out_key=None):
        """SRTP keys of a transport: profile is the DTLS-SRTP profile number
        (1, 2, 7, 8; 0 removes both directions), each key the master key and
        salt. The engine makes its own contexts from the bytes and frees the
        old ones; a key of None keeps that direction as it is."""
        cdef const uint8_t *ik = NULL
        cdef const uint8_t *ok = NULL
        cdef size_t il = 0, ol = 0
        if in_key is not None:
            ik = <const uint8_t *>PyBytes_AS_STRING(in_key)
            il = len(in_key)
        if out_key is not None:
            ok = <const uint8_t *>PyBytes_AS_STRING(out_key)
            ol = len(out_key)
        sfu_engine_lock(self.e)
        rc = sfu_transport_set_srtp_locked(self.e, h, profile, ik, il, ok, ol)
        sfu_engine_unlock(self.e)
        if rc == -2:
            raise ValueError(f"SRTP profile {profile} with keys of {il} and {ol} bytes: unknown profile or wrong key length")
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
        cdef sfu_bwe_stats_t bs
        sfu_engine_lock(self.e)
        try:
            t = sfu_transport_get(self.e, h)
            if t == NULL:
                raise KeyError(f"unknown transport handle {h}")
            d = {
                "rtpPacketsReceived": t.rtp_in.packets, "rtpBytesReceived": t.rtp_in.bytes,
                "rtpPacketsSent": t.rtp_out.packets, "rtpBytesSent": t.rtp_out.bytes,
                "rtcpPacketsReceived": t.rtcp_in.packets, "rtcpBytesReceived": t.rtcp_in.bytes,
                "rtcpPacketsSent": t.rtcp_out.packets, "rtcpBytesSent": t.rtcp_out.bytes,
                "packetsDiscarded": t.drops,
                "roundTripTime": t.rtt.rtt_ms or None,  # ms: DLRR answers or reports about our SRs
                "rttSamples": t.rtt.samples,
            }
            if sfu_bwe_stats(t, &bs):
                d["availableOutgoingBitrate"] = bs.estimate_bps
                d["bwe"] = {"estimate": bs.estimate_bps, "allocated": bs.allocated_bps,
                            "acknowledged": bs.acked_bps, "nextStep": bs.next_step_bps, "usage": ("normal", "overuse", "underuse")[bs.usage]
                            if 0 <= bs.usage < 3 else "normal",
                            "feedbacks": bs.feedbacks, "rembs": bs.rembs, "probes": bs.probes,
                            "probesFailed": bs.probes_failed, "paddingPackets": bs.padding_packets,
                            "paddingBytes": bs.padding_bytes}
            return d
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
                # the NACK generator toward the publisher: numbers asked
                # (retries included), recovered by RTX, arrived late anyway, given up
                "nackedPackets": p.streams[i].nack.nacked, "nackRecovered": p.streams[i].nack.recovered,
                "nackLate": p.streams[i].nack.late, "nackGaveUp": p.streams[i].nack.gave_up,
                "pliCount": p.streams[i].keyframe_requests,
                "retransmittedPackets": p.streams[i].rtx_received,
                "bitrate": p.streams[i].rate_bps,
                # VP9 SVC: each spatial layer's own rate (bit/s), lowest first
                "spatialLayerBitrates": [p.streams[i].svc_rate_bps[l] for l in range(min(p.streams[i].svc_layers, 4))],
                "score": p.streams[i].score,
                "keyframeRequests": p.streams[i].keyframe_requests,
                "keyframes": p.streams[i].keyframes,
                "roundTripTime": p.transport.rtt.rtt_ms or None,  # ms, toward the publisher
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

    def set_consumer_target_stream(self, uint32_t h, int stream):
        """The simulcast layer (producer stream) the consumer should forward;
        it switches at that layer's next keyframe, which the engine asks for."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_target_stream_locked(self.e, h, stream)
        sfu_engine_unlock(self.e)
        if rc == -1:
            raise KeyError(f"unknown consumer handle {h}")
        if rc != 0:
            raise MemoryError("could not allocate the layer's retransmission store")

    def set_consumer_fixed_stream(self, uint32_t h, int stream):
        """Pins the consumer to one producer stream, forwarded whole and from
        a keyframe of it on (a pipe consumer's part: one per encoding)."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_fixed_stream_locked(self.e, h, stream)
        sfu_engine_unlock(self.e)
        if rc == -1:
            raise KeyError(f"unknown consumer handle {h}")
        if rc == -2:
            raise ValueError(f"the producer has no stream {stream}")

    def set_consumer_temporal_layer(self, uint32_t h, int temporal):
        """The highest VP8 temporal layer the consumer forwards (negative: all)."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_temporal_locked(self.e, h, temporal)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

    def set_consumer_priority(self, uint32_t h, int priority):
        """Bandwidth allocation order of the consumer's transport (1..255, higher first)."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_priority_locked(self.e, h, priority)
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

    def request_consumer_keyframe(self, uint32_t h):
        """Ask the consumer's publisher for a keyframe (throttled with the others)."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_request_keyframe_locked(self.e, h, sfu_now_ms())
        sfu_engine_unlock(self.e)
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

    def set_consumer_twcc(self, uint32_t h, int ext_id, bint remb=False):
        """The consumer's transport-wide sequence number extension id (0:
        none) and whether its remote sends REMB; either gives the consumer's
        transport a bandwidth estimate and a layer allocation."""
        sfu_engine_lock(self.e)
        rc = sfu_consumer_set_twcc_locked(self.e, h, <uint8_t>ext_id, remb)
        sfu_engine_unlock(self.e)
        if rc == -2:
            raise MemoryError("no memory for the bandwidth estimator")
        if rc != 0:
            raise KeyError(f"unknown consumer handle {h}")

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
                    "jitter": c.jitter, "bitrate": c.rate_bps, "score": c.score,
                    "spatialLayer": (c.svc_sid if c.svc_sid >= 0 else None) if c.svc else c.stream,
                    "targetSpatialLayer": c.target_stream, "svc": bool(c.svc),
                    "preferredSpatialLayer": c.preferred_stream, "priority": c.priority,
                    "preferredTemporalLayer": c.preferred_temporal,
                    "layerChanges": c.layer_changes,
                    "enginePaused": bool(c.paused or c.producer_paused),
                    "waitingForKeyframe": bool(c.sync_required or c.svc_key_wanted)}
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

    def poll_upcalls(self):
        """Pops queued upcalls: ('packet', socket, transport, kind, addr, bytes),
        ('tuple', socket, transport, is_rtcp, addr) or ('layers', consumer,
        spatial layer)."""
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
                    elif up.type == SFU_UP_LAYERS:
                        out.append(("layers", up.transport, up.kind))
                finally:
                    free(up.data)
        finally:
            sfu_engine_unlock(self.e)
        return out
