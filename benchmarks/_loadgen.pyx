# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython wrapper of the compiled plain-RTP load generator (src/_loadgen.c).

`run()` blocks while the C loop sends and receives (without the GIL) and
returns a dict of results. Use it from its own process
(`benchmarks.loadgen`), never from the asyncio process that drives the SFU.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, int32_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

import os
import socket as _socket

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct sockaddr_storage:
        unsigned short ss_family

cdef extern from "<netinet/in.h>":
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    uint16_t htons(uint16_t)

cdef extern from "<arpa/inet.h>":
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "_loadgen.h" nogil:
    ctypedef int (*lg_srtp_fn)(void *ctx, void *buf, int *len)
    int LG_HIST_BUCKETS
    int LG_TRAILER
    int LG_MAX_LAYERS
    ctypedef struct lg_config_t:
        int nparts
        const int *fds
        const sockaddr_storage *dests
        const socklen_t *dest_lens
        const uint32_t *audio_ssrcs
        const uint32_t *video_ssrcs
        int video_layers
        double layer_share[3]
        const uint32_t *layer_subs
        int vp8_picture_id
        const uint32_t *nsubscribers
        uint8_t audio_pt, video_pt
        int audio_enabled, video_enabled
        double audio_pps
        int audio_payload
        double video_fps
        double video_bps
        double keyframe_interval_s
        double keyframe_factor
        double frame_jitter
        int max_packet
        int send_batch
        double duration_s
        double drain_s
        double start_delay_s
        double start_spread_s
        uint64_t seed
        int worker_pid
        double late_ms
        double tick_us
        int kernel_timestamps
        const int *extra_pids
        int nextra_pids
        lg_srtp_fn srtp_protect
        lg_srtp_fn srtp_unprotect
        lg_srtp_fn srtp_unprotect_rtcp
        void **srtp_out
        void **srtp_in
        int decrypt_every
        const uint32_t *map_ssrc
        const int32_t *map_sub
        const int32_t *map_pub
        const int32_t *map_kind
        int nmap
        const uint8_t **stun
        const int *stun_len
        double stun_interval_s
        int keyframe_on_request
        uint64_t *pid_ticks
    ctypedef struct lg_rx_stream_t:
        uint32_t ssrc
        uint32_t ssrc_changes
        int started
        int64_t base_ext, max_ext
        uint64_t packets, bytes
        uint64_t reordered
        uint64_t first_ns, last_ns
        uint32_t last_pub_seq
        uint64_t layer_packets[3]
    ctypedef struct lg_result_t:
        uint64_t t_start_ns, t_end_ns, t_done_ns
        uint64_t sent_packets, sent_bytes, send_errors, send_calls
        uint64_t recv_packets, recv_bytes, recv_calls, recv_foreign
        uint64_t recv_in_window, recv_during_window, recv_late, recv_timed, decrypt_errors
        uint64_t protect_errors, stun_sent
        uint64_t max_send_lag_ns, total_send_lag_ns
        uint64_t expected_total
        uint64_t self_utime_us, self_stime_us
        uint64_t worker_ticks_start, worker_ticks_end
        uint64_t sys_busy_start, sys_total_start, sys_busy_end, sys_total_end, sys_softirq_start, sys_softirq_end
        int worker_sampled
        uint64_t ticks, ticks_missed
        int64_t clock_drift_ns
        uint64_t key_requests, rtcp_errors
        int error
    int lg_run(const lg_config_t *cfg, lg_result_t *res, uint64_t *sent, uint64_t *sent_layers, lg_rx_stream_t *rx,
               uint32_t *hist)
    uint64_t lg_hist_bucket_low(int idx)
    int lg_hist_index(uint64_t us)

HIST_BUCKETS = LG_HIST_BUCKETS
MAX_LAYERS = LG_MAX_LAYERS
TRAILER_BYTES = LG_TRAILER


def bucket_low(int idx):
    """Lower bound in microseconds of latency histogram bucket `idx`."""
    return lg_hist_bucket_low(idx)


def bucket_index(uint64_t us):
    return lg_hist_index(us)


QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))


def percentiles(dict hist):
    """{"p50": us, "p90", "p99", "p999"} from a sparse histogram
    {bucket_low_us: count}; each value is its bucket's lower bound (1 us
    resolution below 256 us, 1/128 relative above)."""
    total = sum(hist.values())
    out = {}
    if not total:
        return {name: None for name, _ in QUANTILES}
    items = sorted((int(k), v) for k, v in hist.items())
    for name, q in QUANTILES:
        target = q * total
        acc = 0
        for low, count in items:
            acc += count
            if acc >= target:
                out[name] = low
                break
    return out


cdef dict _sparse(uint32_t *h):
    cdef int i
    return {lg_hist_bucket_low(i): h[i] for i in range(LG_HIST_BUCKETS) if h[i]}


def run(list fds, list dests, list audio_ssrcs, list video_ssrcs, list nsubscribers, *,
        int audio_pt=111, int video_pt=96, bint audio=True, bint video=True,
        double audio_pps=50.0, int audio_payload=100, double video_fps=30.0, double video_bps=1e6,
        double keyframe_interval=3.0, double keyframe_factor=5.0, double frame_jitter=0.2,
        int max_packet=1200, int send_batch=32, double duration=5.0, double drain=1.0,
        double start_delay=0.05, double start_spread=0.0, uint64_t seed=1, int worker_pid=0, double late_ms=100.0,
        double tick_us=1000.0, bint kernel_timestamps=True, list extra_pids=None,
        list srtp_out=None, list srtp_in=None, tuple srtp_functions=None, int decrypt_every=8,
        list ssrc_map=None, list stun=None, double stun_interval=5.0,
        int video_layers=1, layer_share=None, layer_subs=None, bint vp8_picture_id=False,
        bint keyframe_on_request=False):
    """Runs the load and returns its results.

    fds: bound non-blocking UDP sockets, one per participant; dests: the
    (ip, port) each participant sends to; nsubscribers: how many receivers
    get each participant's packets (for early stop and expected counts).

    SRTP (WebRTC): srtp_out/srtp_in are the `srtp_t` addresses of each
    participant's sessions, srtp_functions the addresses of libsrtp's
    (srtp_protect, srtp_unprotect); ssrc_map lists (subscriber, ssrc,
    publisher, kind 0|1) for every stream a participant receives, since
    the trailer is encrypted; one packet in decrypt_every per stream is
    decrypted for its send time. stun: a binding request per participant
    sent every stun_interval seconds (ICE consent).

    Simulcast: video_layers encodings per publisher (video_ssrcs then holds
    n * video_layers SSRCs, participant i's layer l at i * video_layers + l),
    layer_share their shares of video_bps (lowest first, normalized),
    layer_subs (n * video_layers) how many receivers get each layer (for the
    expected counts; None: every layer to nsubscribers). vp8_picture_id:
    the VP8 descriptor libwebrtc sends (picture id, TL0PICIDX, TID).
    keyframe_on_request: a PLI or FIR from the SFU for one of a publisher's
    video streams makes its next frame a keyframe (under SRTP it needs
    srtp_unprotect_rtcp as srtp_functions[2])."""
    cdef int n = len(fds)
    if not (len(dests) == len(audio_ssrcs) == len(nsubscribers) == n) or n < 1:
        raise ValueError("fds, dests, ssrcs and nsubscribers must have one entry per participant")
    if not 1 <= video_layers <= LG_MAX_LAYERS:
        raise ValueError(f"video_layers: 1 to {LG_MAX_LAYERS}")
    cdef int nl = video_layers
    if len(video_ssrcs) != n * nl:
        raise ValueError("video_ssrcs: one per participant and layer")
    if layer_share is None:
        layer_share = (1.0,) * nl
    if len(layer_share) != nl or any(not x > 0 for x in layer_share):
        raise ValueError("layer_share: one positive share per layer")
    if layer_subs is not None and len(layer_subs) != n * nl:
        raise ValueError("layer_subs: one count per participant and layer")
    cdef lg_config_t cfg
    cdef lg_result_t res
    memset(&cfg, 0, sizeof(cfg))
    memset(&res, 0, sizeof(res))
    cdef int *c_fds = <int *>calloc(n, sizeof(int))
    cdef sockaddr_storage *c_dests = <sockaddr_storage *>calloc(n, sizeof(sockaddr_storage))
    cdef socklen_t *c_lens = <socklen_t *>calloc(n, sizeof(socklen_t))
    cdef uint32_t *c_a = <uint32_t *>calloc(n, sizeof(uint32_t))
    cdef uint32_t *c_v = <uint32_t *>calloc(n * nl, sizeof(uint32_t))
    cdef uint32_t *c_lsubs = <uint32_t *>calloc(n * nl, sizeof(uint32_t))
    cdef uint64_t *sent_layers = <uint64_t *>calloc(n * LG_MAX_LAYERS, sizeof(uint64_t))
    cdef uint32_t *c_subs = <uint32_t *>calloc(n, sizeof(uint32_t))
    cdef uint64_t *sent = <uint64_t *>calloc(2 * n, sizeof(uint64_t))
    cdef lg_rx_stream_t *rx = <lg_rx_stream_t *>calloc(2 * n * n, sizeof(lg_rx_stream_t))
    cdef uint32_t *hist = <uint32_t *>calloc(2 * LG_HIST_BUCKETS, sizeof(uint32_t))
    cdef sockaddr_in *sin
    cdef int rc, i, j, k
    cdef bytes ipb
    cdef lg_rx_stream_t *s
    cdef int nx = len(extra_pids or [])
    cdef int nm = len(ssrc_map or [])
    cdef int *c_pids = <int *>calloc(nx + 1, sizeof(int))
    cdef uint64_t *c_pid_ticks = <uint64_t *>calloc(2 * (nx + 1), sizeof(uint64_t))
    cdef void **c_out = <void **>calloc(n, sizeof(void *))
    cdef void **c_in = <void **>calloc(n, sizeof(void *))
    cdef uint32_t *c_mssrc = <uint32_t *>calloc(nm + 1, sizeof(uint32_t))
    cdef int32_t *c_msub = <int32_t *>calloc(nm + 1, sizeof(int32_t))
    cdef int32_t *c_mpub = <int32_t *>calloc(nm + 1, sizeof(int32_t))
    cdef int32_t *c_mkind = <int32_t *>calloc(nm + 1, sizeof(int32_t))
    cdef const uint8_t **c_stun = <const uint8_t **>calloc(n, sizeof(uint8_t *))
    cdef int *c_stun_len = <int *>calloc(n, sizeof(int))
    cdef list keep = []
    try:
        if not (c_pids and c_pid_ticks and c_out and c_in and c_mssrc and c_msub and c_mpub and c_mkind and c_stun and c_stun_len):
            raise MemoryError()
        for i in range(nx):
            c_pids[i] = extra_pids[i]
        cfg.extra_pids = c_pids
        cfg.nextra_pids = nx
        cfg.pid_ticks = c_pid_ticks
        if srtp_out is not None or srtp_in is not None:
            if srtp_out is None or srtp_in is None or len(srtp_out) != n or len(srtp_in) != n or not srtp_functions:
                raise ValueError("SRTP needs srtp_out, srtp_in (one per participant) and srtp_functions")
            if decrypt_every < 1:
                raise ValueError("decrypt_every must be >= 1")
            for i in range(n):
                c_out[i] = <void *><uintptr_t>srtp_out[i]
                c_in[i] = <void *><uintptr_t>srtp_in[i]
            cfg.srtp_out = c_out
            cfg.srtp_in = c_in
            cfg.srtp_protect = <lg_srtp_fn><uintptr_t>srtp_functions[0]
            cfg.srtp_unprotect = <lg_srtp_fn><uintptr_t>srtp_functions[1]
            if len(srtp_functions) > 2 and srtp_functions[2]:
                cfg.srtp_unprotect_rtcp = <lg_srtp_fn><uintptr_t>srtp_functions[2]
            cfg.decrypt_every = decrypt_every
        for i in range(nm):
            sub, ssrc, pub, kind = ssrc_map[i]
            c_msub[i], c_mssrc[i], c_mpub[i], c_mkind[i] = sub, ssrc, pub, kind
        cfg.map_ssrc = c_mssrc
        cfg.map_sub = c_msub
        cfg.map_pub = c_mpub
        cfg.map_kind = c_mkind
        cfg.nmap = nm
        if stun:
            if len(stun) != n:
                raise ValueError("stun: one request per participant")
            for i in range(n):
                b = bytes(stun[i])
                keep.append(b)
                c_stun[i] = <const uint8_t *><char *>b
                c_stun_len[i] = len(b)
            cfg.stun = c_stun
            cfg.stun_len = c_stun_len
            cfg.stun_interval_s = stun_interval
        if not (c_fds and c_dests and c_lens and c_a and c_v and c_subs and sent and rx and hist and c_lsubs
                and sent_layers):
            raise MemoryError()
        for i in range(n * nl):
            c_v[i] = video_ssrcs[i]
            if layer_subs is not None:
                c_lsubs[i] = layer_subs[i]
        cfg.video_layers = nl
        for i in range(nl):
            cfg.layer_share[i] = layer_share[i]
        cfg.layer_subs = c_lsubs if layer_subs is not None else NULL
        cfg.vp8_picture_id = vp8_picture_id
        cfg.keyframe_on_request = keyframe_on_request
        for i in range(n):
            c_fds[i] = fds[i]
            ip, port = dests[i]
            sin = <sockaddr_in *>&c_dests[i]
            sin.sin_family = _socket.AF_INET
            sin.sin_port = htons(<uint16_t>port)
            ipb = str(ip).encode()
            if inet_pton(_socket.AF_INET, ipb, &sin.sin_addr) != 1:
                raise ValueError(f"only IPv4 destinations are supported, got {ip!r}")
            c_lens[i] = sizeof(sockaddr_in)
            c_a[i] = audio_ssrcs[i]
            c_subs[i] = nsubscribers[i]
        cfg.nparts = n
        cfg.fds = c_fds
        cfg.dests = c_dests
        cfg.dest_lens = c_lens
        cfg.audio_ssrcs = c_a
        cfg.video_ssrcs = c_v
        cfg.nsubscribers = c_subs
        cfg.audio_pt = <uint8_t>audio_pt
        cfg.video_pt = <uint8_t>video_pt
        cfg.audio_enabled = audio
        cfg.video_enabled = video
        cfg.audio_pps = audio_pps
        cfg.audio_payload = audio_payload
        cfg.video_fps = video_fps
        cfg.video_bps = video_bps
        cfg.keyframe_interval_s = keyframe_interval
        cfg.keyframe_factor = keyframe_factor
        cfg.frame_jitter = frame_jitter
        cfg.max_packet = max_packet
        cfg.send_batch = send_batch
        cfg.duration_s = duration
        cfg.drain_s = drain
        cfg.start_delay_s = start_delay
        cfg.start_spread_s = start_spread
        cfg.seed = seed
        cfg.worker_pid = worker_pid
        cfg.late_ms = late_ms
        cfg.tick_us = tick_us
        cfg.kernel_timestamps = kernel_timestamps
        with nogil:
            rc = lg_run(&cfg, &res, sent, sent_layers, rx, hist)
        if rc != 0:
            raise OSError(-rc, f"load generator failed: {os.strerror(-rc)}")

        streams = []
        for j in range(n):          # subscriber
            for i in range(n):      # publisher
                for k in range(2):
                    s = &rx[(j * n + i) * 2 + k]
                    if s.started:
                        streams.append({
                            "subscriber": j, "publisher": i, "kind": "audio" if k == 0 else "video",
                            "ssrc": s.ssrc, "packets": s.packets, "bytes": s.bytes,
                            "expected_seq": s.max_ext - s.base_ext + 1,
                            "expected_sent": sent[i * 2 + k],
                            "reordered": s.reordered, "ssrc_changes": s.ssrc_changes,
                            "active_s": (s.last_ns - s.first_ns) / 1e9,
                            "layer_packets": [s.layer_packets[l] for l in range(nl)],
                        })
        hist_audio = _sparse(hist)
        hist_video = _sparse(hist + LG_HIST_BUCKETS)
        hist_all = dict(hist_audio)
        for low, c in hist_video.items():
            hist_all[low] = hist_all.get(low, 0) + c
        window = (res.t_end_ns - res.t_start_ns) / 1e9
        clk = os.sysconf("SC_CLK_TCK")
        sys_total = res.sys_total_end - res.sys_total_start
        out = {
            "participants": n,
            "duration_s": window,
            "elapsed_s": (res.t_done_ns - res.t_start_ns) / 1e9,
            "sent_packets": res.sent_packets, "sent_bytes": res.sent_bytes,
            "send_errors": res.send_errors, "send_calls": res.send_calls,
            "sent_per_stream": [[sent[2 * i], sent[2 * i + 1]] for i in range(n)],
            "sent_per_layer": [[sent_layers[i * LG_MAX_LAYERS + l] for l in range(nl)] for i in range(n)],
            "video_layers": nl, "vp8_picture_id": bool(vp8_picture_id),
            "key_requests": res.key_requests, "rtcp_errors": res.rtcp_errors,
            "recv_packets": res.recv_packets, "recv_bytes": res.recv_bytes,
            "recv_calls": res.recv_calls, "recv_foreign": res.recv_foreign,
            "recv_in_window": res.recv_in_window,
            "recv_during_window": res.recv_during_window,
            "recv_late": res.recv_late, "late_ms": late_ms, "recv_timed": res.recv_timed,
            "decrypt_errors": res.decrypt_errors, "protect_errors": res.protect_errors,
            "stun_sent": res.stun_sent, "srtp": srtp_out is not None, "decrypt_every": decrypt_every,
            "tick_us": tick_us, "ticks": res.ticks, "ticks_missed": res.ticks_missed,
            "kernel_timestamps": bool(kernel_timestamps), "clock_drift_ns": res.clock_drift_ns,
            "expected_total": res.expected_total,
            "max_send_lag_us": res.max_send_lag_ns / 1e3,
            "mean_send_lag_us": (res.total_send_lag_ns / res.sent_packets / 1e3) if res.sent_packets else 0.0,
            "gen_cpu_s": (res.self_utime_us + res.self_stime_us) / 1e6,
            "gen_cpu_pct": 100.0 * (res.self_utime_us + res.self_stime_us) / 1e6 / window if window else 0.0,
            "worker_cpu_pct": (100.0 * (res.worker_ticks_end - res.worker_ticks_start) / clk / window
                               if res.worker_sampled and window else None),
            # each sampled process apart: [worker_pid, *extra_pids]
            "pid_cpu_pct": ([100.0 * (c_pid_ticks[nx + 1 + i] - c_pid_ticks[i]) / clk / window
                             for i in range(nx + 1)] if res.worker_sampled and window else None),
            "machine_busy_pct": (100.0 * (res.sys_busy_end - res.sys_busy_start) / sys_total if sys_total else None),
            "machine_softirq_pct": (100.0 * (res.sys_softirq_end - res.sys_softirq_start) / sys_total
                                    if sys_total else None),
            "streams": streams,
            "latency_hist_us": {"audio": hist_audio, "video": hist_video},
            "latency_us": {name: percentiles(h) for name, h in
                           (("all", hist_all), ("audio", hist_audio), ("video", hist_video))},
            "latency_max_us": max(hist_all) if hist_all else None,
        }
        return out
    finally:
        free(c_fds)
        free(c_dests)
        free(c_lens)
        free(c_a)
        free(c_v)
        free(c_lsubs)
        free(sent_layers)
        free(c_subs)
        free(sent)
        free(rx)
        free(hist)
        free(c_pids)
        free(c_pid_ticks)
        free(c_out)
        free(c_in)
        free(c_mssrc)
        free(c_msub)
        free(c_mpub)
        free(c_mkind)
        free(c_stun)
        free(c_stun_len)
