/* The forwarding engine: the objects of one worker (sockets, transports,
 * producers and consumers), its public control API and its data-plane entry
 * point. The units that implement it, one concern each:
 *
 *   engine.c          lifecycle, sockets, sfu_engine_receive() (demux by
 *                     packet kind and source; STUN admission)
 *   table.c           handle tables
 *   tuple_map.c       remote addresses and the ICE tuple map
 *   outbox.c          the outbox (datagrams to send) and the upcall queue
 *   transport.c       transports: remotes, SRTP, RTP/RTCP in and out, transport-cc
 *   rtp_listener.c    which producer stream a packet belongs to (SSRC, MID, RID)
 *   producer.c        producers: control, NACK retries, REMB toward the publisher
 *   producer_stream.c the receive side of one encoding: RTX decapsulation,
 *                     payload type and extension maps, NACK generation,
 *                     statistics, keyframe detection
 *   consumer.c        consumers: the send side (SSRC, sequence number,
 *                     timestamp, payload type and extension rewrite),
 *                     retransmissions
 *   keyframe_policy.c when a keyframe is requested (PLI): throttling,
 *                     deferral, retries, the "start at a keyframe" rule
 *   reports.c         SR/RR we send and receive, rates, RTT
 *   rtcp_receive.c    an incoming RTCP compound, dispatched by type
 *   timers.c          time-driven work and the soonest deadline (timers.h)
 *   io.c              the I/O thread: recvmmsg, epoll, sendmmsg
 *
 * The core is sans-IO: sfu_engine_receive() takes one datagram, the socket it
 * arrived on, its source address and the time, and leaves its decisions in
 * the outbox and the upcall queue. io.c is the thin shell that feeds it from
 * real sockets and drains the outbox on its own thread.
 *
 * Locking: the caller holds the engine lock (sfu_engine_lock) around every
 * *_locked function, sfu_engine_receive() and sfu_engine_tick(); the I/O
 * thread holds it while it processes a batch. The Cython layer takes it for
 * each control call.
 */
#ifndef SFU_ENGINE_H
#define SFU_ENGINE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "nack.h"
#include "remb.h"
#include "rtcp_report.h"
#include "rtp.h"
#include "rtp_stats.h"
#include "rtt.h"
#include "rtx_buffer.h"
#include "seqmgr.h"
#include "table.h"
#include "tuple_map.h"
#include "twcc.h"

#define SFU_SLOT_SIZE 2048        /* one datagram + SRTP trailer room */
#define SFU_MAX_DATAGRAM 1600     /* larger RTP/RTCP datagrams are dropped */
#define SFU_OUTBOX_SLOTS 4096
#define SFU_MAX_STREAMS 4         /* encodings per producer */
#define SFU_MAX_RTP_ID 16         /* longest MID / RID (one-byte extension element) */
#define SFU_SRTP_TRAILER_ROOM 160 /* tag + MKI + SRTCP index */
#define SFU_PT_NONE 0xff
#define SFU_SVC_LAYERS 4           /* VP9 spatial layers a consumer can be given (L3 is WebRTC's most) */
#define SFU_ALL_TEMPORAL_LAYERS 7  /* VP8's TID has 2 bits: 7 keeps them all */

enum sfu_counter {
    SFU_C_RX_DATAGRAMS,
    SFU_C_RX_BYTES,
    SFU_C_RX_RTP,
    SFU_C_RX_RTCP,
    SFU_C_RX_STUN,
    SFU_C_RX_DTLS,
    SFU_C_RX_UNKNOWN,
    SFU_C_DROP_NO_TRANSPORT,
    SFU_C_DROP_NOT_CONNECTED,
    SFU_C_DROP_UNKNOWN_SOURCE,
    SFU_C_DROP_TOO_BIG,
    SFU_C_DROP_SRTP,
    SFU_C_DROP_RTP_MALFORMED,
    SFU_C_DROP_RTCP_MALFORMED,
    SFU_C_DROP_UNKNOWN_SSRC,
    SFU_C_DROP_UNKNOWN_PT,
    SFU_C_DROP_PRODUCER_PAUSED,
    SFU_C_DROP_RTX,
    SFU_C_DROP_OUTBOX_FULL,
    SFU_C_DROP_UPCALL_FULL,
    SFU_C_TX_DATAGRAMS,
    SFU_C_TX_BYTES,
    SFU_C_TX_ERRORS,
    SFU_C_TX_SRTP_ERRORS,
    SFU_C_RECV_CALLS,
    SFU_C_SEND_CALLS,
    SFU_C_LOOP_ITERATIONS,
    SFU_C_RX_PLI,
    SFU_C_RX_FIR,
    SFU_C_TX_PLI,
    SFU_C_RX_NACK,
    SFU_C_TX_NACK,
    SFU_C_RX_RTX,
    SFU_C_TX_RETRANSMISSIONS,
    SFU_C_RETRANSMISSION_MISSES,
    SFU_C_RX_REMB,
    SFU_C_TX_REMB,
    SFU_C_TX_SR,
    SFU_C_TX_RR,
    SFU_C_TX_TWCC,
    SFU_C_KEYFRAME_RETRIES,
    SFU_C_SSRC_LEARNED,
    SFU_C_DROP_STUN_UNVALIDATED,
    SFU_C_TIMER_RUNS,      /* ticks that found timer work due (timers.h) */
    SFU_C_DROP_DIRECT_FULL, /* datagrams for a DirectTransport whose queue was full */
    SFU_C_COUNT
};

typedef struct {
    uint64_t packets;
    uint64_t bytes;
} sfu_count_t;


/* One outgoing datagram waiting for sendmmsg. */
typedef struct {
    uint32_t socket;
    uint32_t len;
    uint32_t next;         /* next slot of the same socket, or UINT32_MAX */
    socklen_t dest_len;
    struct sockaddr_in6 dest; /* IPv4 or IPv6 */
    uint8_t data[SFU_SLOT_SIZE];
} sfu_slot_t;

typedef struct sfu_socket {
    uint32_t handle;
    int fd;                /* -1 for a virtual socket (sans-IO tests) */
    uint32_t transport;    /* dedicated plain transport, 0 if none */
    sfu_tuple_map_t tuples;
    int is_rtcp;           /* the RTCP socket of a non-muxed transport */
    uint32_t pending_head, pending_tail, pending_count;
    int dirty;
    int connected;         /* connect()ed to its one remote: sends need no address */
    struct sfu_direct_queue *direct; /* a DirectTransport's virtual socket (fd -1), else NULL */
} sfu_socket_t;

/* A DirectTransport's queue: what the engine sends on its virtual socket is
 * appended here at flush as records [u32 length, little-endian][datagram],
 * bounded by cap bytes (a full queue drops and counts); the control thread
 * takes the whole queue at once (sfu_direct_take_locked). Owned and freed by
 * the engine with the socket. */
typedef struct sfu_direct_queue {
    uint8_t *buf;
    uint32_t used, cap;
    uint64_t packets, bytes, drops;
} sfu_direct_queue_t;

struct sfu_srtp;

typedef struct sfu_transport {
    uint32_t handle;
    uint32_t rtp_socket;
    uint32_t rtcp_socket;  /* == rtp_socket when rtcp-mux */
    int comedia;           /* plain: learn the remote from the first packet */
    int ice;               /* sources are the tuples bound in the socket's map */
    int require_srtp;      /* drop media until srtp_in is installed */
    struct sfu_srtp *srtp_in;  /* SRTP contexts (srtp.h), created and freed by the engine */
    struct sfu_srtp *srtp_out;
    sfu_count_t rtp_in, rtp_out, rtcp_in, rtcp_out;
    uint64_t drops;
    sfu_addr_t remote;     /* (after the fields every forwarded packet reads) */
    sfu_addr_t remote_rtcp;
    /* feedback */
    struct sfu_consumer **consumers;  /* consumers sending on this transport */
    uint32_t consumers_cap;
    sfu_twcc_recv_t *twcc;            /* transport-wide CC receiver (lazy) */
    uint32_t twcc_media_ssrc;         /* a producer SSRC, for the feedback's media SSRC */
    uint64_t last_rr_ms;
    uint64_t last_twcc_ms;
    int twcc_armed;                   /* transport-cc feedback is scheduled (timers.h) */
    int rr_joined;                    /* joined the report round: no rates at the first one */
    /* SSRC -> producer stream table (linear: a transport sends few streams) */
    uint32_t nroutes, routes_cap;
    struct sfu_route { uint32_t ssrc; struct sfu_producer *producer; uint16_t stream; uint16_t is_rtx; } *routes;
    /* streams whose SSRC the producer did not signal: learned from the first
     * packet that carries the producer's MID and/or the stream's RID (RRID
     * for RTX), as mediasoup's RtpListener does; then moved to routes */
    uint32_t npending, pending_cap;
    struct sfu_route *pending;
    uint32_t nconsumers;   /* consumers sending on this transport */
    /* round trip to the remote (reports.c): the publisher's DLRR answers to
     * our RRTRs, or its receiver reports about our SRs; drives NACK timing */
    sfu_rtt_t rtt;
    /* sender-side bandwidth estimation of what this transport sends, and
     * the layer allocation it drives (bwe.h); NULL until a consumer whose
     * remote gives feedback (transport-cc or REMB) is added */
    struct sfu_bwe *bwe;
    /* layer allocation of its simulcast consumers (allocator.h) */
    uint32_t nsimulcast;   /* consumers of multi-encoding producers */
    uint64_t next_alloc_ms;
    /* the publisher's NTP clock (its SRs) on our monotonic clock: the least
     * (arrival - NTP time) of its SRs, every stream of the transport alike
     * (reports.c): consumer SRs map with it, free of SR arrival jitter */
    int64_t sr_clock_offset_ms;
    uint64_t sr_clock_offset_at_ms;
    int sr_clock_valid;
} sfu_transport_t;

typedef struct {
    uint32_t ssrc;
    uint32_t rtx_ssrc;     /* 0 = none */
    sfu_count_t received;
    uint16_t max_seq;
    int seq_started;
    uint64_t last_packet_ms;
    uint64_t last_keyframe_request_ms;
    uint64_t keyframe_requests;     /* PLIs sent to the producer */
    int keyframe_pending;           /* asked for within the interval: send when it ends */
    int kf_retry_wait;              /* a keyframe retry is due at the next packet (timers.h) */
    uint32_t kf_unanswered;         /* PLIs sent since the last keyframe arrived */
    uint64_t keyframes;             /* keyframe packets seen */
    uint64_t last_keyframe_ms;
    /* loss recovery and statistics */
    sfu_nack_gen_t nack;
    sfu_rtp_stats_t stats;
    sfu_packet_store_t store;       /* router-level packets for consumers' retransmissions (lazy) */
    uint32_t sr_lsr;                /* middle 32 bits of the last SR's NTP time */
    uint64_t sr_arrival_ms;
    uint32_t sr_rtp_ts;             /* RTP time of the last SR (sr_valid: one arrived) */
    uint64_t sr_ntp_ms;             /* its NTP time (publisher's clock), ms since 1900 */
    int sr_valid;
    uint64_t rtx_received;
    uint64_t nack_packets_sent;
    uint64_t bytes_at_last_rate, rate_bps;
    /* the rate the layer allocation uses: rate_bps averaged over ~3 s (a
     * keyframe, several times a delta frame, must not read as a rate that
     * sends every viewer of the layer down) */
    uint64_t alloc_rate_bps;
    /* VP9 SVC: what each spatial layer (SID) of this stream sends
     * (producer_stream.c; the rates in reports.c), for the allocation */
    uint8_t svc_layers; /* highest SID seen + 1, or the SS's count (0: none) */
    uint64_t svc_bytes[SFU_SVC_LAYERS], svc_bytes_at_last_rate[SFU_SVC_LAYERS];
    uint64_t svc_rate_bps[SFU_SVC_LAYERS], svc_last_ms[SFU_SVC_LAYERS];
    uint8_t last_fraction_lost;
    int score;
    uint8_t rid_len;                /* RID of the stream (0: none) */
    uint8_t rid[SFU_MAX_RTP_ID];
} sfu_producer_stream_t;

typedef struct sfu_producer {
    uint32_t handle;
    struct sfu_transport *transport;
    int kind_video;
    int paused;
    int nstreams;
    sfu_producer_stream_t streams[SFU_MAX_STREAMS];
    uint8_t pt_map[128];   /* incoming payload type -> router payload type */
    uint8_t ext_map[256];  /* incoming extension id -> router id (0 drops) */
    int ext_identity;
    uint8_t codec_of_pt[128]; /* router payload type -> SFU_CODEC_* (keyframe detection) */
    int nack_enabled;         /* the producer negotiated generic NACK */
    uint8_t rtx_apt[128];     /* incoming RTX payload type -> incoming media payload type (0xff: none) */
    uint8_t twcc_ext_id;      /* router id of the transport-cc extension (0: not negotiated) */
    sfu_remb_agg_t remb;
    uint64_t remb_floor_bps;
    uint64_t last_remb_bps;
    uint32_t nconsumers, consumers_cap;
    struct sfu_consumer **consumers;
    /* SSRC-less routing: the producer's MID and the incoming ids of the MID,
     * RID and repaired-RID extensions (0: not negotiated) */
    uint8_t mid_len;
    uint8_t mid[SFU_MAX_RTP_ID];
    uint8_t mid_ext_in, rid_ext_in, rrid_ext_in;
} sfu_producer_t;

typedef struct sfu_consumer {
    /* Hot: read or written for every packet forwarded (sfu_consumers_forward),
     * kept together in the first cache lines; 25 participants make ~1,200
     * consumers, more than the caches hold, so each line costs a miss. */
    struct sfu_transport *transport;
    struct sfu_producer *producer; /* NULL once the producer is gone */
    int stream;            /* producer stream (simulcast layer) forwarded */
    int target_stream;     /* the one wanted: a switch happens at its next keyframe;
                            * the preferred one, lowered by the transport's
                            * bandwidth allocation (allocator.h) */
    uint8_t paused;
    uint8_t producer_paused;
    uint8_t sync_required; /* waits for a keyframe (keyframe_policy.h) */
    uint8_t keyframe_wanted; /* waits, and no request was made for it yet */
    uint8_t ext_identity;
    /* The consumer's own MID, written on every packet it sends in place of
     * the publisher's (RFC 8843 9.2: the receiver files packets by it) */
    uint8_t mid_ext_id;    /* consumer id of the MID extension (0: none) */
    uint8_t mid_len;
    uint8_t ts_started;
    /* consumer id of the transport-wide sequence number extension: the
     * transport numbers what it sends for its bandwidth estimate (bwe.h);
     * 0 when the remote did not negotiate it */
    uint8_t twcc_ext_id;
    uint32_t ssrc;
    uint32_t ts_offset;
    uint32_t last_ts;
    uint64_t last_ts_ms;
    sfu_seq_map_t *seq_map;   /* output seq -> producer seq (lazy) */
    sfu_count_t sent;
    uint64_t payload_bytes;   /* RTP payload octets sent (for sender reports) */
    uint64_t dropped;
    sfu_seqmgr_t seq;
    uint8_t pt_map[128];   /* router payload type -> consumer payload type */
    uint8_t mid[SFU_MAX_RTP_ID];
    uint8_t ext_map[256];  /* router extension id -> consumer id (0 drops) */
    /* cold: control, retransmissions, statistics */
    uint32_t handle;
    uint32_t rtx_ssrc;
    uint32_t clock_rate;
    int nack_enabled;
    uint8_t rtx_pt;           /* consumer RTX payload type (0: plain retransmission) */
    uint16_t rtx_seq;
    uint64_t nack_packets_received, nacked_seqs, retransmitted, pli_received, fir_received;
    uint64_t last_sr_ms;
    uint32_t rtt_ms;
    uint8_t fraction_lost;    /* from the remote's receiver reports */
    int32_t packets_lost;
    uint32_t jitter;
    uint64_t bytes_at_last_rate, rate_bps;
    int score;
    int preferred_stream;     /* the highest layer the application wants (default: the top one) */
    int preferred_temporal;   /* the highest temporal layer (VP8 TID) forwarded (default: all) */
    struct sfu_vp8_fwd *vp8;  /* VP8 picture id / TL0PICIDX continuity, temporal filter (lazy) */
    struct sfu_vp9_fwd *vp9;  /* svc: the VP9 spatial/temporal layer filter (vp9.h) */
    uint8_t svc;              /* a one-stream VP9 producer: its layers are the spatial layers of
                               * that stream (target_stream / preferred_stream are SIDs) */
    int svc_sid;              /* svc: the spatial layer forwarded now (-1: none yet) */
    uint8_t svc_key_wanted;   /* svc: a key picture is asked for (a climb, or a drop after loss) */
    uint8_t priority;         /* bandwidth allocation order: higher first (default 1) */
    uint64_t layer_changes;   /* times `stream` changed (the worker reports them) */
    uint8_t simulcast;        /* counted in its transport's nsimulcast */
    uint64_t up_since_ms;     /* the allocation has allowed a higher layer since (allocator.h) */
    uint8_t preference_changed; /* set_preferred_layers since the last allocation: no climbing hold */
    uint64_t climbed_ms;      /* the allocator's last climb, to climbed_stream (allocator.h) */
    int climbed_stream;
    int failed_stream;        /* a layer whose climb fell back soon (0: none) ... */
    uint32_t failed_hold_ms;  /* ... and the hold its next climb waits */
} sfu_consumer_t;

/* A datagram or an event for Python. */
/* SFU_UP_LAYERS: a consumer (handle in `transport`) switched to the
 * simulcast layer in `kind`. */
enum { SFU_UP_PACKET = 1, SFU_UP_TUPLE = 2, SFU_UP_LAYERS = 3 };

typedef struct {
    int type;
    uint32_t socket;
    uint32_t transport;
    int is_rtcp;
    int kind;              /* SFU_PKT_* for packets */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint32_t len;
    uint8_t *data;         /* malloc'd, owned by the consumer of the queue */
    int unvalidated;       /* STUN from a tuple no ICE check has bound yet */
} sfu_upcall_t;

#define SFU_UPCALL_CAP 8192
/* STUN admission: STUN from tuples ICE has not validated (new candidates,
 * or anyone who can reach a port) may hold at most this share of the upcall
 * queue and is rate limited (a token bucket), so that a flood of unknown
 * checks never crowds out the checks, consent and DTLS of live transports. */
#define SFU_UPCALL_UNVALIDATED_CAP (SFU_UPCALL_CAP / 4)
#define SFU_STUN_UNVALIDATED_PER_S 4000
#define SFU_STUN_UNVALIDATED_BURST 2048

typedef struct sfu_engine {
    pthread_mutex_t lock;

    /* object tables; a handle is (generation << 20) | index, never 0 */
    sfu_table_t sockets, transports, producers, consumers;

    sfu_slot_t *outbox;
    uint32_t outbox_used;
    uint32_t dirty_sockets[SFU_OUTBOX_SLOTS];
    uint32_t ndirty;
    /* called when the outbox is full, with the lock held (io.c: sendmmsg) */
    void (*flush)(struct sfu_engine *e);

    sfu_upcall_t *upcalls;
    uint32_t up_head, up_count;
    uint32_t up_unvalidated;       /* unvalidated STUN among them */
    uint64_t stun_tokens_milli;    /* token bucket of unvalidated STUN, in 1/1000 tokens */
    uint64_t stun_tokens_ms;       /* when it was last refilled */
    int notify_fd;             /* eventfd written when upcalls arrive (-1: none) */

    uint64_t counters[SFU_C_COUNT];

    /* timers.h: the soonest deadline of the units' timer work
     * (SFU_TIMER_NONE: none), and when the I/O thread will wake (0: awake) */
    uint64_t next_deadline_ms;
    uint64_t io_wake_ms;
    uint64_t rr_round_ms;  /* when the last SR/RR round ran (0: none yet) */
    uint32_t keyframe_request_interval_ms; /* at most one PLI per producer stream per interval */

    /* producers with a deferred keyframe request (see sfu_engine_tick) */
    uint32_t *kf_pending;
    uint32_t nkf_pending, kf_pending_cap;

    /* io.c */
    int epoll_fd;
    pthread_t thread;
    int running;
    int stop_fd;           /* eventfd: stops the thread (running = 0) or wakes it for timer work */
    uint64_t loop_busy_ns;
} sfu_engine_t;

sfu_engine_t *sfu_engine_new(void);
void sfu_engine_free(sfu_engine_t *e);

void sfu_engine_lock(sfu_engine_t *e);
void sfu_engine_unlock(sfu_engine_t *e);


/* Control plane (lock held by caller). Handles are > 0; 0 means failure. */
uint32_t sfu_socket_add_locked(sfu_engine_t *e, int fd);
int sfu_socket_remove_locked(sfu_engine_t *e, uint32_t s);
/* A virtual socket for a DirectTransport, with a queue of cap bytes (0 on failure). */
uint32_t sfu_direct_socket_add_locked(sfu_engine_t *e, uint32_t cap);
/* Appends the socket's pending outbox datagrams to its queue (flush). */
void sfu_direct_append_locked(sfu_engine_t *e, sfu_socket_t *s);

#define SFU_TRANSPORT_COMEDIA 1
#define SFU_TRANSPORT_ICE 2
#define SFU_TRANSPORT_REQUIRE_SRTP 4
uint32_t sfu_transport_add_locked(sfu_engine_t *e, uint32_t rtp_socket, uint32_t rtcp_socket, int flags);
/* ICE transports: a remote tuple that passed connectivity checks. */
int sfu_tuple_bind_locked(sfu_engine_t *e, uint32_t socket, const struct sockaddr *addr, socklen_t len, uint32_t transport);
int sfu_tuple_unbind_locked(sfu_engine_t *e, uint32_t socket, const struct sockaddr *addr, socklen_t len);
/* Queues one datagram from the control plane (STUN, DTLS) and sends it. */
int sfu_send_raw_locked(sfu_engine_t *e, uint32_t socket, const struct sockaddr *addr, socklen_t len,
                        const uint8_t *data, size_t n);
int sfu_transport_connect_locked(sfu_engine_t *e, uint32_t t, const struct sockaddr *rtp, socklen_t rtp_len,
                                 const struct sockaddr *rtcp, socklen_t rtcp_len);
/* SRTP keys of a transport (profile: SFU_SRTP_* of srtp.h; key = master key
 * and salt): the engine creates the contexts from the bytes, swaps them in
 * and frees the old ones, all under its lock. A NULL key keeps that
 * direction; profile 0 removes both. 0, or -2 for a bad profile or key
 * length (nothing changed), -1 for an unknown transport. */
int sfu_transport_set_srtp_locked(sfu_engine_t *e, uint32_t t, int profile, const uint8_t *in_key, size_t in_len,
                                  const uint8_t *out_key, size_t out_len);
int sfu_transport_remove_locked(sfu_engine_t *e, uint32_t t);

uint32_t sfu_producer_add_locked(sfu_engine_t *e, uint32_t t, int kind_video, int nstreams,
                                 const uint32_t *ssrcs, const uint32_t *rtx_ssrcs,
                                 const uint8_t pt_map[128], const uint8_t ext_map[256], int paused);
/* SSRC-less routing (mediasoup's RtpListener: SSRC, then MID, then RID):
 * the producer's MID (may be NULL), its streams' RIDs (rids[i] may be NULL),
 * and the incoming extension ids carrying them. Streams added with SSRC 0
 * are bound to the SSRC of the first packet that names them. */
int sfu_producer_set_rtp_ids_locked(sfu_engine_t *e, uint32_t p, const char *mid, const char *const *rids,
                                    uint8_t mid_ext_in, uint8_t rid_ext_in, uint8_t rrid_ext_in);
int sfu_producer_set_paused_locked(sfu_engine_t *e, uint32_t p, int paused);
/* Which codec each router payload type carries (SFU_CODEC_*), for keyframe detection. */
int sfu_producer_set_codecs_locked(sfu_engine_t *e, uint32_t p, const uint8_t codec_of_pt[128]);
/* NACK (and the RTX payload types to decapsulate: rtx_apt[rtx pt] = media pt,
 * 0xff none), transport-cc extension id (router id, 0 none), REMB floor. */
int sfu_producer_set_feedback_locked(sfu_engine_t *e, uint32_t p, int nack, const uint8_t rtx_apt[128],
                                     uint8_t twcc_ext_id, uint64_t remb_floor_bps, uint32_t clock_rate);
int sfu_consumer_set_feedback_locked(sfu_engine_t *e, uint32_t c, int nack, uint8_t rtx_pt);
int sfu_producer_remove_locked(sfu_engine_t *e, uint32_t p);

uint32_t sfu_consumer_add_locked(sfu_engine_t *e, uint32_t t, uint32_t p, uint32_t ssrc, uint32_t rtx_ssrc,
                                 uint32_t clock_rate, const uint8_t pt_map[128], const uint8_t ext_map[256],
                                 int paused, uint16_t initial_seq);
/* The MID written on every packet of the consumer (ext_id 0: none). */
int sfu_consumer_set_mid_locked(sfu_engine_t *e, uint32_t c, uint8_t ext_id, const char *mid);
int sfu_consumer_set_paused_locked(sfu_engine_t *e, uint32_t c, int paused);
/* The producer stream (simulcast spatial layer) a consumer should forward,
 * clamped to the producer's streams. The consumer keeps its current stream
 * until a keyframe of the target one arrives (the engine asks for it), then
 * switches with sequence numbers and timestamps continuing. */
int sfu_consumer_set_target_stream_locked(sfu_engine_t *e, uint32_t c, int stream);
/* A pipe consumer's part (one per encoding of the producer): forwards the
 * producer stream `stream` and no other, whole (no simulcast allocation, no
 * VP9 layer filtering, no layer switch), from a keyframe of it on, with its
 * own SSRC and continuous sequence numbers. -2: no such stream. */
int sfu_consumer_set_fixed_stream_locked(sfu_engine_t *e, uint32_t c, int stream);
/* The highest layer is the preferred one (set_target_stream); on a transport
 * with a bandwidth estimate (bwe.h) the allocation (allocator.h) may give
 * less. Priority (1..255, higher first) orders the allocation. */
int sfu_consumer_set_priority_locked(sfu_engine_t *e, uint32_t c, int priority);
/* The highest temporal layer forwarded (VP8 TID; negative: all): frames
 * above it are dropped, whole, with the consumer's sequence numbers and
 * picture ids staying continuous (vp8.h). */
int sfu_consumer_set_temporal_locked(sfu_engine_t *e, uint32_t c, int temporal);
/* The consumer's transport-wide sequence number extension id (0: none) and
 * whether its remote sends REMB: either gives its transport an estimate. */
int sfu_consumer_set_twcc_locked(sfu_engine_t *e, uint32_t c, uint8_t ext_id, int remb);
/* Time-driven work (timers.h): runs what is due and returns the ms until
 * the soonest deadline of any unit, or -1 when nothing is scheduled. O(1)
 * while nothing is due. */
int sfu_engine_tick(sfu_engine_t *e, uint64_t now_ms);
/* Asks a producer for a keyframe on each of its streams (PLI, throttled). */
int sfu_producer_request_keyframe_locked(sfu_engine_t *e, uint32_t p, uint64_t now_ms);
/* Asks the producer of a consumer for a keyframe (PLI), throttled per stream. */
int sfu_consumer_request_keyframe_locked(sfu_engine_t *e, uint32_t c, uint64_t now_ms);
#define SFU_KEYFRAME_REQUEST_INTERVAL_MS 500
#define SFU_RTCP_INTERVAL_MS 1000        /* SR / RR period */
/* A consumer still waiting for its first keyframe asks again this often: the
 * PLI or the keyframe itself may have been lost, and a viewer that has
 * received no video never sends a PLI of its own. */
#define SFU_KEYFRAME_RETRY_MS 1000
/* ...sooner (one request interval, at least this long) when the first
 * request came this soon after a keyframe: the encoder probably ignored it. */
#define SFU_KEYFRAME_FIRST_RETRY_MS 300
#define SFU_TWCC_INTERVAL_MS 100         /* transport-cc feedback period */
#define SFU_RETRANSMISSION_MAX_AGE_MS 1000
int sfu_consumer_remove_locked(sfu_engine_t *e, uint32_t c);

sfu_socket_t *sfu_socket_get(sfu_engine_t *e, uint32_t h);
sfu_transport_t *sfu_transport_get(sfu_engine_t *e, uint32_t h);
sfu_producer_t *sfu_producer_get(sfu_engine_t *e, uint32_t h);
sfu_consumer_t *sfu_consumer_get(sfu_engine_t *e, uint32_t h);

/* Data plane (lock held). `buf` may be modified in place; cap is its size. */
void sfu_engine_receive(sfu_engine_t *e, uint32_t socket, const struct sockaddr *src, socklen_t src_len,
                        uint8_t *buf, size_t len, size_t cap, uint64_t now_ms);

/* Outbox: the sans-IO output. */
static inline uint32_t sfu_outbox_count(const sfu_engine_t *e) { return e->outbox_used; }
void sfu_outbox_clear(sfu_engine_t *e);

/* Upcalls: pops the oldest; returns 0 when empty. Caller frees up->data. */
int sfu_upcall_pop_locked(sfu_engine_t *e, sfu_upcall_t *up);

/* io.c */
int sfu_io_start(sfu_engine_t *e);
void sfu_io_stop(sfu_engine_t *e);
int sfu_io_watch_locked(sfu_engine_t *e, uint32_t socket);
void sfu_io_flush_locked(sfu_engine_t *e);
uint64_t sfu_now_ms(void);

/* Helpers of the control functions. */
static inline int sfu_map_is_identity(const uint8_t *map, int n)
{
    for (int i = 1; i < n; i++)
        if (map[i] != i)
            return 0;
    return 1;
}

/* Copies a MID/RID string; 0 when absent or longer than SFU_MAX_RTP_ID. */
static inline uint8_t sfu_rtp_id_copy(uint8_t dst[SFU_MAX_RTP_ID], const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n == 0 || n > SFU_MAX_RTP_ID)
        return 0;
    memcpy(dst, src, n);
    return (uint8_t)n;
}

#endif
