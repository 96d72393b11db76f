/* Sender-side bandwidth estimation of one transport (bwe.c).
 *
 * What a transport sends toward its remote (consumers' media, their
 * retransmissions, probes) carries our own transport-wide sequence number
 * when the remote negotiated the extension, and is kept in a send history
 * (twcc_send.h). The remote's transport-cc feedback gives each packet's
 * arrival time or loss; the estimator (gcc.h: delay-based and loss-based
 * controllers, probe results) turns them into the rate the path carries. A
 * remote that sends REMB instead of transport-cc gives that rate directly.
 *
 * The estimate drives the layer allocation (allocator.h): about once a
 * second, and at once when it falls below what is allocated or rises past
 * what the next upgrade needs. When a
 * consumer is held below its preferred layer by the estimate, a probe tests
 * whether the next layer would fit: for SFU_BWE_PROBE_DURATION_MS, what the
 * transport sends (media, and padding-only packets on a consumer's RTX
 * stream, RFC 4588, that the remote drops after counting them, filling the
 * gap) is one cluster sent at
 * 1.15 times what the next layer needs (at least 1.25 times the estimate,
 * at most 3 times). A probe that did not raise the estimate enough
 * doubles the wait before the next one, up to SFU_BWE_PROBE_MAX_INTERVAL_MS;
 * one that did is followed by another after SFU_BWE_PROBE_AGAIN_MS.
 *
 * Until the first feedback, an ICE transport's consumers are held to the
 * start estimate (a browser sends feedback within a fraction of a second);
 * a plain transport's are not limited (a plain RTP receiver given a
 * browser's capabilities may never send any), nor an ICE transport's whose
 * remote sent none within SFU_BWE_SILENT_MS.
 *
 * Time: the engine's milliseconds; the history and the estimator take
 * microseconds (now_ms * 1000).
 */
#ifndef SFU_BWE_H
#define SFU_BWE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "gcc.h"
#include "twcc_send.h"

#define SFU_BWE_START_BPS 600000     /* before the first feedback */
#define SFU_BWE_MIN_BPS 30000
#define SFU_BWE_MAX_BPS 30000000
#define SFU_BWE_JUDGE_MS 1000         /* a probe's effect is judged this long after it ends */
#define SFU_BWE_SILENT_MS 5000       /* no feedback at all this long after the first consumer: no limit */
#define SFU_BWE_PROBE_MIN_INTERVAL_MS 2000
#define SFU_BWE_PROBE_MAX_INTERVAL_MS 3000
#define SFU_BWE_PROBE_AGAIN_MS 500        /* after a probe that reached its goal */
#define SFU_BWE_PROBE_DURATION_MS 50
#define SFU_BWE_PROBE_TICK_MS 5
#define SFU_BWE_PADDING 255          /* padding octets of one probe packet (the most RTP allows) */

typedef struct sfu_bwe {
    sfu_twcc_send_t history;
    sfu_gcc_t gcc;
    int started;                   /* its first timer run happened (created_ms set) */
    uint64_t created_ms;
    uint64_t feedbacks;            /* transport-cc feedback packets used */
    uint64_t rembs;
    uint64_t last_feedback_ms;
    uint32_t allocated_bps;        /* what the last allocation gave out */
    uint32_t alloc_estimate_bps;   /* the estimate it used */
    uint32_t next_step_bps;        /* the estimate that would allow one more upgrade (0: none wanted) */
    /* probing */
    uint16_t probe_cluster;        /* running cluster (0: none) */
    uint32_t probe_bps;
    uint32_t probe_goal_bps;       /* the estimate a successful probe reaches */
    uint64_t probe_start_ms, probe_end_ms, probe_sent_bytes, probe_packets;
    uint64_t next_probe_ms;
    uint32_t probe_interval_ms;
    uint64_t probes, probes_failed, padding_packets, padding_bytes;
} sfu_bwe_t;

/* Creates the transport's estimator on first use (a consumer whose remote
 * gives feedback). Returns 0, or -1 without memory. */
int sfu_bwe_enable(sfu_engine_t *e, sfu_transport_t *t);
void sfu_bwe_free(sfu_bwe_t *b);

/* The transport-wide sequence number of a packet of `size` octets (on the
 * wire) about to be sent; probe: its cluster (0: not a probe). */
static inline uint16_t sfu_bwe_number(sfu_bwe_t *b, uint64_t now_ms, size_t size, uint16_t probe)
{
    return sfu_twcc_send_next(&b->history, (int64_t)now_ms * 1000, (uint32_t)size, probe);
}

/* A transport-cc feedback packet (RTPFB FMT=15) from the remote. */
void sfu_bwe_on_feedback(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *pkt, size_t len, uint64_t now_ms);
/* A REMB from the remote (used while it sends no transport-cc feedback). */
void sfu_bwe_on_remb(sfu_engine_t *e, sfu_transport_t *t, uint64_t bps, uint64_t now_ms);

/* The current estimate (bits per second). */
uint32_t sfu_bwe_estimate(const sfu_bwe_t *b);

/* What stats report (0: the transport has no estimate, *out untouched). */
typedef struct {
    uint32_t estimate_bps, allocated_bps, acked_bps, next_step_bps;
    int usage;
    uint64_t feedbacks, rembs, probes, probes_failed, padding_packets, padding_bytes;
} sfu_bwe_stats_t;
int sfu_bwe_stats(const sfu_transport_t *t, sfu_bwe_stats_t *out);

/* Timer work: the allocation, probes (timers.h). */
void sfu_bwe_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms);

/* The limit the allocation works with (allocator.h): the estimate, or
 * UINT32_MAX when no limit is known (no feedback, see above). */
uint32_t sfu_bwe_limit(const sfu_transport_t *t, uint64_t now_ms);
/* What the allocation gave out with that limit, and the estimate that would
 * allow one more upgrade (0: none wanted): the goal of the next probe. */
void sfu_bwe_allocated(sfu_engine_t *e, sfu_transport_t *t, uint32_t limit_bps, uint32_t allocated_bps,
                       uint32_t next_step_bps);

#endif
