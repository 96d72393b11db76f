/* A compiled plain-RTP load generator (see _loadgen.c next to this file). */
#ifndef LG_LOADGEN_H
#define LG_LOADGEN_H

#include <stdint.h>
#include <sys/socket.h>

#define LG_MAGIC 0x4c470001u    /* "LG", version 1 */
#define LG_TRAILER 20           /* bytes at the end of every payload */
#define LG_MAX_PACKET 1500
#define LG_HIST_SUB 128         /* sub-buckets per octave above LG_HIST_LINEAR */
#define LG_HIST_LINEAR 256      /* 1-us buckets below this */
#define LG_HIST_BUCKETS (LG_HIST_LINEAR + LG_HIST_SUB * 30)
#define LG_KIND_AUDIO 0
#define LG_KIND_VIDEO 1
#define LG_MAX_LAYERS 3         /* simulcast encodings per publisher */

/* libsrtp's srtp_protect / srtp_unprotect (addresses from pylibsrtp's
 * bundled libsrtp, as the engine uses them) */
typedef int (*lg_srtp_fn)(void *ctx, void *buf, int *len);

typedef struct {
    int nparts;
    const int *fds;                       /* one bound, non-blocking UDP socket each */
    const struct sockaddr_storage *dests; /* where participant i sends (its SFU transport) */
    const socklen_t *dest_lens;
    const uint32_t *audio_ssrcs;
    const uint32_t *video_ssrcs;          /* [nparts * video_layers]: participant i's layer l at i*L+l */
    int video_layers;                     /* simulcast encodings per publisher (1..LG_MAX_LAYERS; 0 = 1) */
    double layer_share[LG_MAX_LAYERS];    /* share of video_bps of each layer (lowest first; 1 layer: 1) */
    const uint32_t *layer_subs;           /* [nparts * video_layers] receivers of each layer (expected
                                             counts); NULL: every video layer to nsubscribers */
    int vp8_picture_id;                   /* VP8 descriptor with a 15-bit picture id, TL0PICIDX and
                                             TID (an L1T3 pattern 0,2,1,2), as libwebrtc sends; 0: the
                                             one-byte descriptor (no picture id) */
    const uint32_t *nsubscribers;         /* receivers of each publisher's packets (for early stop) */
    uint8_t audio_pt, video_pt;
    int audio_enabled, video_enabled;
    double audio_pps;                     /* 50 */
    int audio_payload;                    /* bytes, >= LG_TRAILER (100) */
    double video_fps;                     /* 30 */
    double video_bps;                     /* 1e6 */
    double keyframe_interval_s;           /* 3 */
    double keyframe_factor;               /* keyframe size / average frame size (5) */
    double frame_jitter;                  /* +-fraction of delta frame sizes (0.2) */
    int max_packet;                       /* RTP packet size limit (1200) */
    int send_batch;                       /* max datagrams per sendmmsg (32) */
    double duration_s;                    /* sending time */
    double drain_s;                       /* max wait after sending for stragglers */
    double start_delay_s;                 /* before the first packet */
    double start_spread_s;                /* participants start at random times within this
                                             (people join one by one; 0: all within one frame) */
    uint64_t seed;
    int worker_pid;                       /* sampled from /proc at start/end of sending (0: none) */
    double late_ms;                       /* a packet this much later than sent counts as late (100) */
    double tick_us;                       /* >0: wake every tick to send what is due and read what
                                             arrived (sendmmsg batches); 0: wait on epoll until the
                                             next send (a wake-up per arrival) */
    int kernel_timestamps;                /* latency from SO_TIMESTAMPNS (arrival in the socket)
                                             rather than from when the loop reads the datagram */
    const int *extra_pids;                /* more processes whose CPU counts as the server's */
    int nextra_pids;
    /* SRTP (WebRTC transports): every packet sent is protected; received
     * packets are counted from their (clear) RTP headers, streams found by
     * SSRC in the map below, and one in decrypt_every per stream is
     * unprotected to read its trailer (latency). */
    lg_srtp_fn srtp_protect, srtp_unprotect;
    lg_srtp_fn srtp_unprotect_rtcp;       /* for keyframe requests under SRTP (NULL: none read) */
    void *const *srtp_out;                /* srtp_t per participant (NULL: plain RTP) */
    void *const *srtp_in;
    int decrypt_every;                    /* >= 1 */
    const uint32_t *map_ssrc;             /* received SSRC (as rewritten by the SFU) ... */
    const int32_t *map_sub, *map_pub, *map_kind; /* ... at subscriber map_sub is publisher map_pub's kind */
    int nmap;
    /* ICE consent: a STUN binding request per participant, resent every interval */
    const uint8_t *const *stun;
    const int *stun_len;
    double stun_interval_s;
    /* An encoder's answer to the SFU's PLI / FIR (RTCP on the participant's
     * socket): the next frame of the named video stream is a keyframe. */
    int keyframe_on_request;
    /* Out (NULL: not kept): utime+stime ticks of each sampled process apart,
     * [worker_pid, extra_pids...] at the start of the window, then the same
     * at its end (2 * (1 + nextra_pids) entries). */
    uint64_t *pid_ticks;
} lg_config_t;

/* What one participant received from one publisher's stream (key:
 * (subscriber * nparts + publisher) * 2 + kind). */
typedef struct {
    uint32_t ssrc;          /* as rewritten by the SFU */
    uint32_t ssrc_changes;
    int started;
    int64_t base_ext, max_ext;  /* extended RTP sequence numbers */
    uint64_t packets, bytes;
    uint64_t reordered;     /* not newer than the highest so far (late or duplicate) */
    uint64_t first_ns, last_ns; /* arrival of the first and the last packet */
    uint32_t last_pub_seq;
    uint64_t layer_packets[LG_MAX_LAYERS]; /* by the layer in the trailer (packets whose trailer was read) */
} lg_rx_stream_t;

typedef struct {
    uint64_t t_start_ns, t_end_ns, t_done_ns;  /* CLOCK_MONOTONIC: send window and end */
    uint64_t sent_packets, sent_bytes, send_errors, send_calls;
    uint64_t recv_packets, recv_bytes, recv_calls, recv_foreign;
    uint64_t recv_in_window;  /* sent within the send window */
    uint64_t recv_during_window; /* received within the send window */
    uint64_t recv_late;       /* latency above late_ms (of the packets whose send time was read) */
    uint64_t recv_timed;      /* packets whose send time was read (all of them without SRTP) */
    uint64_t decrypt_errors;  /* sampled packets srtp_unprotect refused */
    uint64_t protect_errors, stun_sent;
    uint64_t max_send_lag_ns, total_send_lag_ns;
    uint64_t expected_total;  /* sum of publisher packets x nsubscribers */
    /* CPU over the send window */
    uint64_t self_utime_us, self_stime_us;
    uint64_t worker_ticks_start, worker_ticks_end;   /* utime+stime of worker_pid + extra_pids */
    uint64_t sys_busy_start, sys_total_start, sys_busy_end, sys_total_end, sys_softirq_start, sys_softirq_end;
    int worker_sampled;
    uint64_t ticks, ticks_missed;
    int64_t clock_drift_ns;   /* change of CLOCK_REALTIME - CLOCK_MONOTONIC over the run */
    uint64_t key_requests;    /* PLI / FIR read for one of our video streams */
    uint64_t rtcp_errors;     /* RTCP that did not unprotect or parse */
    int error;               /* 0 or an errno */
} lg_result_t;

/* Runs the whole load (blocking). sent: [nparts*2] packets per publisher
 * and kind (video: all its layers); sent_layers: [nparts*LG_MAX_LAYERS]
 * video packets per layer; rx: [nparts*nparts*2]; hist: [2][LG_HIST_BUCKETS] latency (us)
 * per kind. Returns 0 or -errno. */
int lg_run(const lg_config_t *cfg, lg_result_t *res, uint64_t *sent, uint64_t *sent_layers, lg_rx_stream_t *rx,
           uint32_t *hist);

/* Lower bound (us) of a histogram bucket. */
uint64_t lg_hist_bucket_low(int idx);
int lg_hist_index(uint64_t us);

#endif
