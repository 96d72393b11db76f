/* Google Congestion Control: delay-based (trendline + adaptive threshold +
 * AIMD), loss-based, acknowledged bitrate, probe results (see gcc.h). */
#include "gcc.h"

#include <string.h>

#define GROUP_US 5000               /* packets sent within 5 ms form a group */
#define BURST_US 5000
#define MAX_BURST_US 100000
#define ARRIVAL_JUMP_MS 3000.0      /* a larger arrival/send offset: the remote clock jumped */
#define SMOOTHING 0.9
#define THRESHOLD_GAIN 4.0
#define MAX_DELTAS 60
#define OVERUSE_TIME_MS 10.0
#define K_UP 0.0087
#define K_DOWN 0.039
#define MAX_ADAPT_OFFSET 15.0
#define BETA 0.85
/* results with times beyond +-this are ignored, and the local clock is
 * clamped to it: differences (and differences of differences) of two
 * times then fit in 64 bits */
#define TIME_LIMIT_US ((int64_t)1 << 60)

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

static int time_ok(int64_t t) { return t > -TIME_LIMIT_US && t < TIME_LIMIT_US; }

static int64_t clamp_now(int64_t t) { return t < -TIME_LIMIT_US ? -TIME_LIMIT_US : t > TIME_LIMIT_US ? TIME_LIMIT_US : t; }

/* small math helpers, so the unit needs no libm */
static double absd(double v) { return v < 0 ? -v : v; }

static double sqrtd(double v)
{
    if (!(v > 0))
        return 0;
    double x = v > 1 ? v : 1;
    for (int i = 0; i < 60; i++) {
        double nx = 0.5 * (x + v / x);
        if (absd(nx - x) <= 1e-12 * x)
            return nx;
        x = nx;
    }
    return x;
}

/* 1.08^t - 1 for t in [0, 1] (series of exp(t ln 1.08), error < 1e-9) */
static double growth_108(double t)
{
    double y = t * 0.076961041136128, term = y, sum = 0;
    for (int i = 1; i < 8; i++) {
        sum += term;
        term *= y / (i + 1);
    }
    return sum;
}

static void trend_reset(sfu_gcc_t *g)
{
    g->grp_open = 0;
    g->prev_valid = 0;
    g->acc_delay = g->smoothed_delay = 0;
    g->win_n = g->win_head = 0;
    g->first_arrival_us = -1;
    g->num_deltas = 0;
    g->trend = g->prev_trend = g->modified_trend = 0;
    g->time_over_using_ms = -1;
    g->overuse_counter = 0;
    g->usage = SFU_GCC_NORMAL;
}

void sfu_gcc_init(sfu_gcc_t *g, uint32_t start_bps, uint32_t min_bps, uint32_t max_bps)
{
    memset(g, 0, sizeof(*g));
    if (min_bps == 0)
        min_bps = 1;
    if (max_bps < min_bps)
        max_bps = min_bps;
    g->min_bps = min_bps;
    g->max_bps = max_bps;
    double start = clampd(start_bps, min_bps, max_bps);
    g->target_bps = (uint32_t)start;
    g->rtt_ms = 100;
    g->last_feedback_us = -1;
    trend_reset(g);
    g->threshold = 12.5;
    g->threshold_update_us = -1;
    g->delay_bps = start;
    g->rc_state = SFU_GCC_HOLD;
    g->rc_last_change_us = -1;
    g->rc_last_decrease_us = -1;
    g->link_kbps = -1;
    g->link_var = 0.4;
    g->probe_us = -1;
    g->acked_kbps = -1;
    g->acked_var = 50;
    g->ack_prev_recv_us = -1;
    g->loss_bps = start;
    g->loss_last_decrease_us = -1;
    g->remb_us = -1;
    g->next_probe_id = 1;
}

/* ------------------------------------------------------------ acked bitrate */

static void acked_sample(sfu_gcc_t *g, double kbps)
{
    if (g->acked_kbps < 0) {
        g->acked_kbps = kbps;
        return;
    }
    double est = g->acked_kbps > 1e-3 ? g->acked_kbps : 1e-3;
    double unc = 10.0 * absd(est - kbps) / est;
    double svar = unc * unc;
    double pvar = g->acked_var + 5.0;
    if (svar + pvar <= 0) {
        g->acked_kbps = kbps;
        return;
    }
    g->acked_kbps = (svar * g->acked_kbps + pvar * kbps) / (svar + pvar);
    if (g->acked_kbps < 0)
        g->acked_kbps = 0;
    g->acked_var = svar * pvar / (svar + pvar);
}

static void acked_packet(sfu_gcc_t *g, int64_t recv_us, uint32_t size)
{
    double window_ms = g->acked_kbps < 0 ? 500.0 : 150.0;
    if (g->ack_prev_recv_us >= 0 && recv_us > g->ack_prev_recv_us)
        g->ack_window_ms += (double)(recv_us - g->ack_prev_recv_us) / 1000.0;
    if (g->ack_prev_recv_us < 0 || recv_us > g->ack_prev_recv_us)
        g->ack_prev_recv_us = recv_us;
    if (g->ack_window_ms >= window_ms) {
        /* bits over the arrival time that carried them (an idle gap lowers it) */
        acked_sample(g, g->ack_sum_bytes * 8.0 / g->ack_window_ms);
        g->ack_window_ms = 0;
        g->ack_sum_bytes = 0;
    }
    g->ack_sum_bytes += size;
}

/* ------------------------------------------------------------ trendline, detector */

static void update_threshold(sfu_gcc_t *g, double modified, int64_t arrival_us)
{
    if (g->threshold_update_us < 0)
        g->threshold_update_us = arrival_us;
    double a = absd(modified);
    if (a > g->threshold + MAX_ADAPT_OFFSET) {
        g->threshold_update_us = arrival_us; /* a spike: do not adapt to it */
        return;
    }
    double k = a < g->threshold ? K_DOWN : K_UP;
    double dt = clampd((double)(arrival_us - g->threshold_update_us) / 1000.0, 0, 100);
    g->threshold = clampd(g->threshold + k * (a - g->threshold) * dt, 6.0, 600.0);
    g->threshold_update_us = arrival_us;
}

static double window_slope(const sfu_gcc_t *g)
{
    double sx = 0, sy = 0;
    int n = g->win_n;
    for (int i = 0; i < n; i++) {
        sx += g->win_x[i];
        sy += g->win_y[i];
    }
    double mx = sx / n, my = sy / n, num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += (g->win_x[i] - mx) * (g->win_y[i] - my);
        den += (g->win_x[i] - mx) * (g->win_x[i] - mx);
    }
    return den > 0 ? num / den : g->prev_trend;
}

/* One delta between consecutive groups. Returns 1 when it signalled OVERUSE. */
static int trend_delta(sfu_gcc_t *g, double recv_delta_ms, double send_delta_ms, int64_t arrival_us)
{
    double d = recv_delta_ms - send_delta_ms;
    if (g->num_deltas < 1000)
        g->num_deltas++;
    g->acc_delay += d;
    g->smoothed_delay = SMOOTHING * g->smoothed_delay + (1 - SMOOTHING) * g->acc_delay;
    if (g->first_arrival_us < 0)
        g->first_arrival_us = arrival_us;
    int slot = g->win_n < SFU_GCC_TREND_WINDOW ? g->win_n++ : g->win_head;
    if (g->win_n == SFU_GCC_TREND_WINDOW && slot == g->win_head)
        g->win_head = (g->win_head + 1) % SFU_GCC_TREND_WINDOW;
    g->win_x[slot] = (double)(arrival_us - g->first_arrival_us) / 1000.0;
    g->win_y[slot] = g->smoothed_delay;
    double trend = g->win_n == SFU_GCC_TREND_WINDOW ? window_slope(g) : g->prev_trend;
    g->trend = trend;

    int signalled = 0;
    if (g->num_deltas < 2) {
        g->usage = SFU_GCC_NORMAL;
    } else {
        double m = (g->num_deltas < MAX_DELTAS ? g->num_deltas : MAX_DELTAS) * trend * THRESHOLD_GAIN;
        g->modified_trend = m;
        if (m > g->threshold) {
            if (g->time_over_using_ms < 0)
                g->time_over_using_ms = send_delta_ms / 2;
            else
                g->time_over_using_ms += send_delta_ms;
            g->overuse_counter++;
            if (g->time_over_using_ms > OVERUSE_TIME_MS && g->overuse_counter > 1 && trend >= g->prev_trend) {
                g->time_over_using_ms = 0;
                g->overuse_counter = 0;
                g->usage = SFU_GCC_OVERUSE;
                g->overuse_signals++;
                signalled = 1;
            }
        } else if (m < -g->threshold) {
            g->time_over_using_ms = -1;
            g->overuse_counter = 0;
            g->usage = SFU_GCC_UNDERUSE;
        } else {
            g->time_over_using_ms = -1;
            g->overuse_counter = 0;
            g->usage = SFU_GCC_NORMAL;
        }
        update_threshold(g, m, arrival_us);
    }
    g->prev_trend = trend;
    return signalled;
}

/* Closes the open group against the previous one. Returns 1 on OVERUSE. */
static int group_close(sfu_gcc_t *g)
{
    int over = 0;
    if (g->prev_valid) {
        int64_t send_delta = g->grp_last_send - g->prev_send;
        int64_t recv_delta = g->grp_last_recv - g->prev_recv;
        if (recv_delta < 0) {
            g->reordered_groups++;
            return 0; /* keep the previous group as the reference */
        }
        double sd = (double)send_delta / 1000.0, rd = (double)recv_delta / 1000.0;
        if (rd - sd > ARRIVAL_JUMP_MS || rd - sd < -ARRIVAL_JUMP_MS) {
            trend_reset(g); /* the remote's clock jumped (or a long stall) */
        } else {
            over = trend_delta(g, rd, sd, g->grp_last_recv);
        }
    }
    g->prev_valid = 1;
    g->prev_send = g->grp_last_send;
    g->prev_recv = g->grp_last_recv;
    return over;
}

static int delay_packet(sfu_gcc_t *g, int64_t send_us, int64_t recv_us)
{
    int over = 0;
    if (g->grp_open) {
        if (send_us < g->grp_first_send)
            return 0; /* sent before the open group (a late report): no use */
        int64_t send_d = send_us - g->grp_last_send;
        int64_t recv_d = recv_us - g->grp_last_recv;
        int same = send_us - g->grp_first_send <= GROUP_US;
        /* a burst: arrives within 5 ms of the previous, faster than it was sent */
        if (!same && recv_d - send_d < 0 && recv_d <= BURST_US && recv_us - g->grp_first_recv < MAX_BURST_US)
            same = 1;
        if (same) {
            if (send_us > g->grp_last_send)
                g->grp_last_send = send_us;
            if (recv_us > g->grp_last_recv)
                g->grp_last_recv = recv_us;
            return 0;
        }
        over = group_close(g);
    }
    g->grp_open = 1;
    g->grp_first_send = g->grp_last_send = send_us;
    g->grp_first_recv = g->grp_last_recv = recv_us;
    return over;
}

/* ------------------------------------------------------------ AIMD */

static void link_update(sfu_gcc_t *g, double kbps)
{
    if (g->link_kbps < 0) {
        g->link_kbps = kbps;
    } else {
        g->link_kbps = 0.95 * g->link_kbps + 0.05 * kbps;
    }
    double norm = g->link_kbps > 1.0 ? g->link_kbps : 1.0;
    double err = g->link_kbps - kbps;
    g->link_var = clampd(0.95 * g->link_var + 0.05 * err * err / norm, 0.4, 2.5);
}

static double link_dev(const sfu_gcc_t *g) { return sqrtd(g->link_var * (g->link_kbps > 0 ? g->link_kbps : 0)); }

static int time_to_reduce(const sfu_gcc_t *g, int64_t now_us)
{
    if (g->rc_last_change_us < 0)
        return 1;
    int64_t rtt_us = (int64_t)clampd(g->rtt_ms, 10, 200) * 1000;
    if (now_us - g->rc_last_change_us >= rtt_us)
        return 1;
    if (g->acked_kbps >= 0 && g->delay_bps / 2 > g->acked_kbps * 1000)
        return 1;
    return 0;
}

static void aimd_update(sfu_gcc_t *g, int signal, int64_t now_us)
{
    double acked = g->acked_kbps >= 0 ? g->acked_kbps * 1000 : -1;
    if (signal == SFU_GCC_OVERUSE && g->probe_us >= 0 && now_us - g->probe_us < SFU_GCC_PROBE_FRESH_US &&
        g->probe_bps > acked) {
        /* right after a probe: what it measured, for one decrease (a false
         * reading must not anchor the ones after it) */
        acked = g->probe_bps;
        g->probe_us = -1;
    }
    if (signal == SFU_GCC_OVERUSE)
        g->rc_state = SFU_GCC_DECREASE;
    else if (signal == SFU_GCC_UNDERUSE)
        g->rc_state = SFU_GCC_HOLD;
    else if (g->rc_state == SFU_GCC_HOLD)
        g->rc_state = SFU_GCC_INCREASE;

    double cur = g->delay_bps;
    double dt_s = g->rc_last_change_us < 0 ? 0 : clampd((double)(now_us - g->rc_last_change_us) / 1e6, 0, 1.0);
    switch (g->rc_state) {
    case SFU_GCC_INCREASE: {
        if (acked >= 0 && g->link_kbps >= 0 && acked / 1000 > g->link_kbps + 3 * link_dev(g))
            g->link_kbps = -1; /* delivered more than the old capacity: it moved */
        double limit = acked >= 0 ? 1.5 * acked + 10000 : 1e18;
        if (cur < limit) {
            double inc;
            if (g->link_kbps >= 0) {
                /* additive: about one packet per response time */
                double response_ms = (double)g->rtt_ms + 100.0;
                double bits_per_frame = cur / 30.0;
                double packets = (double)(int64_t)(bits_per_frame / (1200.0 * 8)) + 1;
                double pkt_bits = packets > 0 ? bits_per_frame / packets : 1200.0 * 8;
                double per_s = pkt_bits * 1000.0 / response_ms;
                if (per_s < 4000)
                    per_s = 4000;
                inc = per_s * dt_s;
            } else {
                inc = cur * growth_108(dt_s);
                if (dt_s > 0 && inc < 1000 * dt_s)
                    inc = 1000 * dt_s;
            }
            double nb = cur + inc;
            g->delay_bps = nb < limit ? nb : limit;
        }
        g->rc_last_change_us = now_us;
        break;
    }
    case SFU_GCC_DECREASE: {
        double nb;
        if (acked >= 0) {
            nb = BETA * acked;
            if (nb > cur && g->link_kbps >= 0)
                nb = BETA * g->link_kbps * 1000;
            if (acked / 1000 < g->link_kbps - 3 * link_dev(g))
                g->link_kbps = -1; /* far below the old capacity: it moved */
            link_update(g, acked / 1000);
        } else {
            nb = BETA * cur;
        }
        if (nb < cur)
            g->delay_bps = nb;
        g->decreases++;
        g->rc_state = SFU_GCC_HOLD;
        g->rc_last_change_us = now_us;
        g->rc_last_decrease_us = now_us;
        break;
    }
    default:
        g->rc_last_change_us = now_us;
        break;
    }
    g->delay_bps = clampd(g->delay_bps, g->min_bps, g->max_bps);
}

/* ------------------------------------------------------------ loss-based */

static void loss_hist_push(sfu_gcc_t *g, int64_t now_us, double bps)
{
    /* keeps increasing values (the front is the minimum of the last second) */
    while (g->loss_hist_n > 0 && g->loss_hist_bps[g->loss_hist_n - 1] >= bps)
        g->loss_hist_n--;
    if (g->loss_hist_n == SFU_GCC_LOSS_HISTORY) {
        memmove(g->loss_hist_us, g->loss_hist_us + 1, sizeof(g->loss_hist_us[0]) * (SFU_GCC_LOSS_HISTORY - 1));
        memmove(g->loss_hist_bps, g->loss_hist_bps + 1, sizeof(g->loss_hist_bps[0]) * (SFU_GCC_LOSS_HISTORY - 1));
        g->loss_hist_n--;
    }
    g->loss_hist_us[g->loss_hist_n] = now_us;
    g->loss_hist_bps[g->loss_hist_n] = bps;
    g->loss_hist_n++;
}

static double loss_hist_min(sfu_gcc_t *g, int64_t now_us)
{
    int drop = 0;
    while (drop < g->loss_hist_n - 1 && now_us - g->loss_hist_us[drop] > 1000000)
        drop++;
    if (drop) {
        memmove(g->loss_hist_us, g->loss_hist_us + drop, sizeof(g->loss_hist_us[0]) * (size_t)(g->loss_hist_n - drop));
        memmove(g->loss_hist_bps, g->loss_hist_bps + drop, sizeof(g->loss_hist_bps[0]) * (size_t)(g->loss_hist_n - drop));
        g->loss_hist_n -= drop;
    }
    return g->loss_hist_n ? g->loss_hist_bps[0] : (double)g->target_bps;
}

static void loss_update(sfu_gcc_t *g, int lost, int expected, int64_t now_us)
{
    g->loss_lost += (uint32_t)lost;
    g->loss_expected += (uint32_t)expected;
    if (g->loss_expected < 20)
        return;
    double loss = (double)g->loss_lost / g->loss_expected;
    g->last_loss = loss;
    g->loss_lost = g->loss_expected = 0;
    double target = g->target_bps;
    if (loss < 0.02) {
        g->loss_bps = 1.08 * loss_hist_min(g, now_us) + 1000;
    } else if (loss > 0.10) {
        int64_t wait = 300000 + (int64_t)g->rtt_ms * 1000;
        if (g->loss_last_decrease_us < 0 || now_us - g->loss_last_decrease_us >= wait) {
            double nb = target * (1.0 - 0.5 * loss);
            if (nb < g->loss_bps)
                g->loss_bps = nb;
            g->loss_last_decrease_us = now_us;
            g->loss_decreases++;
        }
    }
    g->loss_bps = clampd(g->loss_bps, g->min_bps, g->max_bps);
}

/* ------------------------------------------------------------ probes */

static sfu_gcc_probe_t *probe_find(sfu_gcc_t *g, uint16_t id)
{
    if (id == 0)
        return NULL;
    for (int i = 0; i < SFU_GCC_PROBE_SLOTS; i++)
        if (g->probes[i].state != SFU_GCC_PROBE_FREE && g->probes[i].id == id)
            return &g->probes[i];
    return NULL;
}

static const sfu_gcc_probe_t *probe_find_c(const sfu_gcc_t *g, uint16_t id)
{
    return probe_find((sfu_gcc_t *)g, id);
}

uint16_t sfu_gcc_start_probe(sfu_gcc_t *g, uint32_t target_bps, int64_t now_us)
{
    now_us = clamp_now(now_us);
    sfu_gcc_probe_t *slot = NULL;
    for (int i = 0; i < SFU_GCC_PROBE_SLOTS && !slot; i++)
        if (g->probes[i].state == SFU_GCC_PROBE_FREE)
            slot = &g->probes[i];
    if (!slot) { /* reuse the oldest */
        slot = &g->probes[0];
        for (int i = 1; i < SFU_GCC_PROBE_SLOTS; i++)
            if (g->probes[i].created_us < slot->created_us)
                slot = &g->probes[i];
    }
    memset(slot, 0, sizeof(*slot));
    slot->id = g->next_probe_id++;
    if (g->next_probe_id == 0)
        g->next_probe_id = 1;
    slot->state = SFU_GCC_PROBE_PENDING;
    slot->target_bps = target_bps;
    slot->created_us = now_us;
    slot->start_estimate_bps = g->target_bps;
    g->last_probe_id = slot->id;
    return slot->id;
}

void sfu_gcc_end_probe(sfu_gcc_t *g, uint16_t cluster, int packets)
{
    sfu_gcc_probe_t *p = probe_find(g, cluster);
    if (p && p->state == SFU_GCC_PROBE_PENDING)
        p->sent = packets > 0 ? packets : 1;
}

int sfu_gcc_probe_done(const sfu_gcc_t *g, uint16_t cluster)
{
    const sfu_gcc_probe_t *p = probe_find_c(g, cluster);
    if (!p || p->state == SFU_GCC_PROBE_FAILED)
        return -1;
    return p->state == SFU_GCC_PROBE_DONE;
}

uint32_t sfu_gcc_probe_result_bps(const sfu_gcc_t *g, uint16_t cluster)
{
    const sfu_gcc_probe_t *p = probe_find_c(g, cluster);
    return p ? p->result_bps : 0;
}

static void probe_packet(sfu_gcc_t *g, const sfu_twcc_result_t *r)
{
    sfu_gcc_probe_t *p = probe_find(g, r->probe_cluster);
    if (!p || p->state == SFU_GCC_PROBE_FAILED)
        return;
    p->touched = 1;
    if (r->recv_us < 0) {
        p->lost++;
        return;
    }
    if (p->received == 0 || r->send_us < p->first_send_us)
        p->first_send_us = r->send_us;
    if (p->received == 0 || r->send_us >= p->last_send_us) {
        p->last_send_us = r->send_us;
        p->last_send_size = r->size;
    }
    if (p->received == 0 || r->recv_us < p->first_recv_us) {
        p->first_recv_us = r->recv_us;
        p->first_recv_size = r->size;
    }
    if (p->received == 0 || r->recv_us > p->last_recv_us)
        p->last_recv_us = r->recv_us;
    p->received++;
    p->bytes += r->size;
}

/* The rate of a cluster with enough packets, 0 when not measurable. */
static double probe_rate(const sfu_gcc_probe_t *p)
{
    if (p->received < SFU_GCC_PROBE_MIN_PACKETS)
        return 0;
    if (p->sent > 0 && p->received + p->lost < p->sent)
        return 0; /* not all reported yet */
    if (p->lost * 5 > p->received + p->lost)
        return 0; /* over 20 % lost: saturated beyond measure */
    int64_t send_span = p->last_send_us - p->first_send_us;
    int64_t recv_span = p->last_recv_us - p->first_recv_us;
    if (send_span <= 0 || send_span > 1000000 || recv_span <= 0 || recv_span > 1000000)
        return 0;
    if (recv_span * 10 < send_span * 7)
        return 0; /* it arrived bunched up (a path that delivers in batches
                   * after a stall): its receive rate says nothing of capacity */
    double send_bps = (double)(p->bytes - p->last_send_size) * 8e6 / (double)send_span;
    double recv_bps = (double)(p->bytes - p->first_recv_size) * 8e6 / (double)recv_span;
    return send_bps < recv_bps ? send_bps : recv_bps;
}

static void probes_expire(sfu_gcc_t *g, int64_t now_us)
{
    for (int i = 0; i < SFU_GCC_PROBE_SLOTS; i++) {
        sfu_gcc_probe_t *p = &g->probes[i];
        if (p->state == SFU_GCC_PROBE_PENDING && now_us - p->created_us > SFU_GCC_PROBE_TIMEOUT_US)
            p->state = SFU_GCC_PROBE_FAILED;
    }
}

/* ------------------------------------------------------------ target */

static void refresh_target(sfu_gcc_t *g, int64_t now_us)
{
    double t = g->delay_bps < g->loss_bps ? g->delay_bps : g->loss_bps;
    int twcc_active = g->last_feedback_us >= 0 && now_us - g->last_feedback_us < SFU_GCC_TWCC_ACTIVE_US;
    if (twcc_active && g->remb_us >= 0 && now_us - g->remb_us < SFU_GCC_REMB_TTL_US && g->remb_bps < t)
        t = g->remb_bps;
    g->target_bps = (uint32_t)clampd(t, g->min_bps, g->max_bps);
}


void sfu_gcc_on_feedback(sfu_gcc_t *g, const sfu_twcc_result_t *r, int n, int64_t now_us)
{
    now_us = clamp_now(now_us);
    if (r == NULL || n <= 0)
        return;
    g->feedbacks++;
    g->last_feedback_us = now_us;
    int overuse = 0, lost = 0, expected = 0, probed = 0;
    for (int i = 0; i < n; i++) {
        const sfu_twcc_result_t *p = &r[i];
        if (!time_ok(p->send_us) || (p->recv_us != -1 && (p->recv_us < 0 || !time_ok(p->recv_us)))) {
            g->ignored_results++;
            continue;
        }
        expected++;
        if (p->probe_cluster) {
            probe_packet(g, p);
            probed = 1;
        }
        if (p->recv_us < 0) {
            lost++;
            continue;
        }
        acked_packet(g, p->recv_us, p->size);
        overuse |= delay_packet(g, p->send_us, p->recv_us);
    }
    /* an overuse in this feedback (or still on) decreases once per RTT at most */
    int signal = overuse ? SFU_GCC_OVERUSE : g->usage;
    if (signal != SFU_GCC_OVERUSE || time_to_reduce(g, now_us))
        aimd_update(g, signal, now_us);
    refresh_target(g, now_us);
    loss_update(g, lost, expected, now_us);

    if (probed) {
        for (int i = 0; i < SFU_GCC_PROBE_SLOTS; i++) {
            sfu_gcc_probe_t *p = &g->probes[i];
            if (!p->touched)
                continue;
            p->touched = 0;
            if (p->state != SFU_GCC_PROBE_PENDING && p->state != SFU_GCC_PROBE_DONE)
                continue;
            if (p->sent > 0 && p->state == SFU_GCC_PROBE_DONE)
                continue; /* an ended cluster is measured once, whole */
            double rate = probe_rate(p);
            if (rate <= 0 || rate < p->result_bps)
                continue;
            p->result_bps = (uint32_t)clampd(rate, 0, 4e9);
            p->state = SFU_GCC_PROBE_DONE;
            if (!overuse && g->usage != SFU_GCC_OVERUSE) {
                double v = clampd(rate, g->min_bps, g->max_bps);
                if (v > g->delay_bps) {
                    g->probe_bps = v;
                    g->probe_us = now_us;
                    g->delay_bps = v;
                    g->rc_state = SFU_GCC_HOLD;
                    g->rc_last_change_us = now_us;
                    g->probes_applied++;
                }
                if (v > g->loss_bps) {
                    g->loss_bps = v;
                    g->loss_hist_n = 0; /* the loss-based increase starts from here */
                }
            }
        }
    }
    probes_expire(g, now_us);
    refresh_target(g, now_us);
    loss_hist_push(g, now_us, g->target_bps);
}

void sfu_gcc_on_rtt(sfu_gcc_t *g, uint32_t rtt_ms)
{
    if (rtt_ms > 0 && rtt_ms < 60000)
        g->rtt_ms = rtt_ms;
}

void sfu_gcc_on_remb(sfu_gcc_t *g, uint32_t bps, int64_t now_us)
{
    now_us = clamp_now(now_us);
    g->remb_bps = bps;
    g->remb_us = now_us;
    int twcc_active = g->last_feedback_us >= 0 && now_us - g->last_feedback_us < SFU_GCC_TWCC_ACTIVE_US;
    if (!twcc_active) {
        double v = clampd(bps, g->min_bps, g->max_bps);
        /* transport-cc feedback that stopped (a starved or congested
         * receiver) is no reason to believe a higher REMB: it may lower the
         * estimate, not raise it, until feedback comes back */
        if (g->last_feedback_us >= 0 && v > g->target_bps)
            v = g->target_bps;
        g->delay_bps = g->loss_bps = v;
        g->loss_hist_n = 0;
    }
    refresh_target(g, now_us);
}

void sfu_gcc_on_tick(sfu_gcc_t *g, int64_t now_us)
{
    now_us = clamp_now(now_us);
    if (g->last_feedback_us >= 0 && now_us - g->last_feedback_us > SFU_GCC_FEEDBACK_TIMEOUT_US) {
        /* silent: the time without feedback does not count toward an increase */
        g->rc_last_change_us = now_us;
    }
    probes_expire(g, now_us);
    refresh_target(g, now_us);
}

uint32_t sfu_gcc_estimate_bps(const sfu_gcc_t *g) { return g->target_bps; }

uint32_t sfu_gcc_acked_bps(const sfu_gcc_t *g)
{
    return g->acked_kbps < 0 ? 0 : (uint32_t)clampd(g->acked_kbps * 1000, 0, 4e9);
}

int sfu_gcc_usage(const sfu_gcc_t *g) { return g->usage; }

uint32_t sfu_gcc_probe_wanted_bps(const sfu_gcc_t *g, uint32_t demand_bps, int64_t interval_us, int64_t now_us)
{
    now_us = clamp_now(now_us);
    interval_us = interval_us < 0 ? 0 : interval_us > TIME_LIMIT_US ? TIME_LIMIT_US : interval_us;
    double est = g->target_bps;
    if (demand_bps <= est * 1.1 || est >= g->max_bps)
        return 0;
    const sfu_gcc_probe_t *last = probe_find_c(g, g->last_probe_id);
    if ((last && last->state == SFU_GCC_PROBE_PENDING) || g->usage != SFU_GCC_NORMAL)
        return 0;
    double cap = demand_bps < g->max_bps ? demand_bps : g->max_bps;
    if (last && last->state == SFU_GCC_PROBE_DONE && last->result_bps >= 0.7 * last->target_bps &&
        now_us - last->created_us < SFU_GCC_PROBE_TIMEOUT_US) {
        /* continue upward while a probe is not beyond the cap */
        double want = 2.0 * last->result_bps;
        if (want > cap)
            want = cap;
        if (want > last->target_bps && want > est)
            return (uint32_t)want;
    }
    int64_t wait = interval_us;
    if (last && last->result_bps < 1.1 * last->start_estimate_bps)
        wait = 2 * interval_us; /* the last one found nothing */
    if ((g->rc_last_decrease_us >= 0 && now_us - g->rc_last_decrease_us < interval_us) ||
        (g->loss_last_decrease_us >= 0 && now_us - g->loss_last_decrease_us < interval_us))
        return 0;
    if (!last || now_us - last->created_us >= wait) {
        double want = 2.0 * est;
        if (want > cap)
            want = cap;
        if (want > est)
            return (uint32_t)want;
    }
    return 0;
}
