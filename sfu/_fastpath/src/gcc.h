/* Sender-side bandwidth estimation of one transport: Google Congestion
 * Control (draft-ietf-rmcat-gcc-02, in the form libwebrtc runs it now).
 *
 * Input: per transport-cc feedback, the results of the send history
 * (twcc_send.h: send time, size, remote arrival time or lost, probe
 * cluster), the RTT, REMB from remotes without transport-cc, and a timer.
 * Output: the target send rate (sfu_gcc_estimate_bps).
 *
 *  - Delay-based: packets sent within 5 ms form a group (a burst that
 *    arrives faster than it was sent joins the group too); the variation of
 *    the one-way delay between consecutive groups is accumulated, smoothed
 *    (0.9) and a least-squares trend over the last 20 groups is compared,
 *    scaled by min(groups, 60) x 4, to an adaptive threshold (starts at
 *    12.5, moves toward |trend| at 0.039/ms below it and 0.0087/ms above,
 *    held in [6, 600], not moved by jumps over threshold + 15): above it for
 *    over 10 ms and growing = OVERUSE, below minus it = UNDERUSE.
 *  - AIMD rate control on that signal: OVERUSE -> decrease to 0.85 x the
 *    acknowledged bitrate (at most once per RTT, clamped to 10..200 ms,
 *    unless the estimate is over twice the acknowledged rate), then hold;
 *    UNDERUSE -> hold; NORMAL -> increase: multiplicative, 8 %/s, while no
 *    link capacity is known, additive (about one packet per RTT + 100 ms)
 *    near the acknowledged rate of the last decreases (the link capacity
 *    estimate, reset when the acknowledged rate leaves its +-3 deviations).
 *    An increase never goes above 1.5 x the acknowledged bitrate + 10 kbit/s.
 *  - Acknowledged bitrate: bytes reported received per window of remote
 *    arrival time (500 ms until the first sample, then 150 ms), smoothed by
 *    a Bayesian filter whose trust in a sample falls with its distance
 *    from the estimate.
 *  - Loss-based: the fraction lost over at least 20 reported packets;
 *    under 2 % the loss-based rate may rise to 1.08 x the lowest target of
 *    the last second + 1 kbit/s; over 10 % it falls to target x (1 - loss/2),
 *    at most once per 300 ms + RTT; between, it holds.
 *  - Probes: a cluster of packets (sfu_gcc_start_probe) sent at a rate
 *    above the estimate. Once SFU_GCC_PROBE_MIN_PACKETS of it are reported
 *    received, its rate is min(send rate, receive rate) (each over the
 *    cluster's span, the last sent / first received packet's bytes left
 *    out); if no overuse was signalled, an estimate below it is raised to it.
 *    For SFU_GCC_PROBE_FRESH_US after, the first decrease starts from the
 *    larger of the acknowledged bitrate and that result (the acknowledged
 *    bitrate still lags the new rate then); the decreases after it start
 *    from the acknowledged bitrate (a false reading, through a path that
 *    bunches delivery, must not hold the estimate above the link).
 *  - REMB: while no transport-cc feedback came in the last
 *    SFU_GCC_TWCC_ACTIVE_US, the estimate follows the REMB (down only once
 *    transport-cc feedback has been seen: feedback that stopped is no
 *    reason to trust a higher REMB); with feedback, a REMB younger than
 *    SFU_GCC_REMB_TTL_US caps it.
 *  - No feedback for SFU_GCC_FEEDBACK_TIMEOUT_US: nothing grows (the
 *    increase does not count the silent time).
 *
 * Final estimate = min(delay-based, loss-based [, REMB]), in [min, max].
 * Doubles, per feedback (not per packet). No syscalls, no allocation: times
 * are passed in (microseconds); remote arrival times only by difference.
 */
#ifndef SFU_GCC_H
#define SFU_GCC_H

#include <stdint.h>

#include "twcc_send.h"

enum { SFU_GCC_NORMAL = 0, SFU_GCC_OVERUSE = 1, SFU_GCC_UNDERUSE = 2 };
enum { SFU_GCC_HOLD = 0, SFU_GCC_INCREASE = 1, SFU_GCC_DECREASE = 2 };
enum { SFU_GCC_PROBE_FREE = 0, SFU_GCC_PROBE_PENDING = 1, SFU_GCC_PROBE_DONE = 2, SFU_GCC_PROBE_FAILED = 3 };

#define SFU_GCC_TREND_WINDOW 20
#define SFU_GCC_PROBE_SLOTS 8
#define SFU_GCC_PROBE_MIN_PACKETS 5
#define SFU_GCC_PROBE_TIMEOUT_US 2000000      /* a cluster without a result by then failed */
#define SFU_GCC_PROBE_FRESH_US 2000000        /* a probe result counts as delivered rate that long */
#define SFU_GCC_LOSS_HISTORY 32
#define SFU_GCC_FEEDBACK_TIMEOUT_US 500000
#define SFU_GCC_TWCC_ACTIVE_US 2000000
#define SFU_GCC_REMB_TTL_US 5000000

typedef struct {
    uint16_t id;
    uint8_t state;            /* SFU_GCC_PROBE_* */
    uint32_t target_bps;
    uint32_t result_bps;      /* 0 until done */
    int64_t created_us;
    uint32_t start_estimate_bps; /* the estimate when it started */
    uint8_t touched;          /* got results in the feedback being read */
    int sent;                 /* packets the sender put in it (sfu_gcc_end_probe); 0: still sending */
    /* over the packets reported received */
    int received, lost;
    uint64_t bytes;
    int64_t first_send_us, last_send_us, first_recv_us, last_recv_us;
    uint32_t last_send_size, first_recv_size;
} sfu_gcc_probe_t;

typedef struct {
    uint32_t min_bps, max_bps;
    uint32_t target_bps;      /* what sfu_gcc_estimate_bps returns */
    uint32_t rtt_ms;
    int64_t last_feedback_us; /* local; -1 none yet */

    /* packet groups (send and remote arrival times, us) */
    int grp_open, prev_valid;
    int64_t grp_first_send, grp_last_send, grp_first_recv, grp_last_recv;
    int64_t prev_send, prev_recv;

    /* trendline filter and overuse detector (ms) */
    double acc_delay, smoothed_delay;
    double win_x[SFU_GCC_TREND_WINDOW], win_y[SFU_GCC_TREND_WINDOW];
    int win_n, win_head;
    int64_t first_arrival_us; /* -1 none */
    int num_deltas;
    double trend, prev_trend, modified_trend;
    double threshold;
    int64_t threshold_update_us; /* remote arrival time; -1 none */
    double time_over_using_ms;   /* -1 = not over */
    int overuse_counter;
    int usage;                   /* SFU_GCC_NORMAL / OVERUSE / UNDERUSE */

    /* AIMD rate control */
    double delay_bps;
    int rc_state;                /* SFU_GCC_HOLD / INCREASE / DECREASE */
    int64_t rc_last_change_us;   /* local; -1 none */
    int64_t rc_last_decrease_us;
    double link_kbps;            /* link capacity estimate, < 0 = none */
    double link_var;
    double probe_bps;            /* the last probe result applied; counts as delivered for SFU_GCC_PROBE_FRESH_US */
    int64_t probe_us;            /* local; -1 none */

    /* acknowledged bitrate */
    double acked_kbps;           /* < 0 = none yet */
    double acked_var;
    double ack_sum_bytes;
    double ack_window_ms;
    int64_t ack_prev_recv_us;    /* -1 none */

    /* loss-based */
    double loss_bps;
    uint32_t loss_lost, loss_expected;
    double last_loss;
    int64_t loss_last_decrease_us;
    int loss_hist_n;
    int64_t loss_hist_us[SFU_GCC_LOSS_HISTORY];
    double loss_hist_bps[SFU_GCC_LOSS_HISTORY];

    /* REMB */
    uint32_t remb_bps;
    int64_t remb_us;             /* -1 none */

    /* probes */
    uint16_t next_probe_id;
    uint16_t last_probe_id;      /* the latest started, 0 none */
    sfu_gcc_probe_t probes[SFU_GCC_PROBE_SLOTS];

    /* counters (stats, tests) */
    uint64_t feedbacks;
    uint64_t overuse_signals;
    uint64_t decreases;          /* delay-based */
    uint64_t loss_decreases;
    uint64_t probes_applied;
    uint64_t reordered_groups;
    uint64_t ignored_results;    /* out-of-range times */
} sfu_gcc_t;

void sfu_gcc_init(sfu_gcc_t *g, uint32_t start_bps, uint32_t min_bps, uint32_t max_bps);
/* One feedback's results (sequence order), as sfu_twcc_send_on_feedback gives them. now_us: local clock. */
void sfu_gcc_on_feedback(sfu_gcc_t *g, const sfu_twcc_result_t *r, int n, int64_t now_us);
void sfu_gcc_on_rtt(sfu_gcc_t *g, uint32_t rtt_ms);
/* REMB from the remote (fallback when it sends no transport-cc): the estimate follows it. */
void sfu_gcc_on_remb(sfu_gcc_t *g, uint32_t bps, int64_t now_us);
/* Time passes without feedback (call from a timer, e.g. every 100 ms): no feedback for long -> the estimate must not grow. */
void sfu_gcc_on_tick(sfu_gcc_t *g, int64_t now_us);
uint32_t sfu_gcc_estimate_bps(const sfu_gcc_t *g);      /* target send rate */
uint32_t sfu_gcc_acked_bps(const sfu_gcc_t *g);         /* delivered rate measured from feedback, 0 = none yet */
int sfu_gcc_usage(const sfu_gcc_t *g);                  /* SFU_GCC_NORMAL / _OVERUSE / _UNDERUSE */
/* Probing: the caller sends a cluster of packets (padding, at least
 * SFU_GCC_PROBE_MIN_PACKETS) at target_bps, tagged with the cluster id
 * returned (>0); see above. */
uint16_t sfu_gcc_start_probe(sfu_gcc_t *g, uint32_t target_bps, int64_t now_us);
/* 1 = result known (sfu_gcc_probe_result_bps), 0 = waiting, -1 = failed
 * (no result within SFU_GCC_PROBE_TIMEOUT_US, seen at a tick or feedback)
 * or unknown cluster. */
int sfu_gcc_probe_done(const sfu_gcc_t *g, uint16_t cluster);
/* The sender finished the cluster after `packets` packets: its rate is
 * measured once every one of them is reported (received or lost), over the
 * whole cluster. Measured on its first packets, a shaper's burst allowance
 * would pass for capacity. A cluster never ended this way is measured as
 * soon as SFU_GCC_PROBE_MIN_PACKETS are reported (tests, older callers). */
void sfu_gcc_end_probe(sfu_gcc_t *g, uint16_t cluster, int packets);
uint32_t sfu_gcc_probe_result_bps(const sfu_gcc_t *g, uint16_t cluster);
/* A probing policy for the caller: the rate to probe at now, or 0. With
 * demand_bps (what the caller would send) above the estimate and no probe
 * pending and the delay detector NORMAL: right after a probe whose result
 * reached 0.7 x its target, twice that result (exponential probing);
 * otherwise twice the estimate, at most every interval_us (2 x interval_us
 * after a probe that did not raise the estimate by 10 %), and not within
 * interval_us of a delay- or loss-based decrease. Never above demand or
 * max. */
uint32_t sfu_gcc_probe_wanted_bps(const sfu_gcc_t *g, uint32_t demand_bps, int64_t interval_us, int64_t now_us);

#endif
