/* Layer allocation of a transport's consumers (allocator.h). */
#include "allocator.h"

#include <stdlib.h>

#include "bwe.h"
#include "consumer.h"
#include "timers.h"

#define SFU_ALLOC_MAX 256 /* simulcast consumers considered per transport */

uint32_t sfu_allocator_layer_bps(const sfu_producer_t *p, int stream)
{
    if (!p || stream < 0 || stream >= p->nstreams)
        return 0;
    uint64_t r = p->streams[stream].alloc_rate_bps;
    return r > UINT32_MAX ? UINT32_MAX : (uint32_t)r;
}

static int consumer_active(const sfu_consumer_t *c)
{
    return c->producer && !c->paused && !c->producer_paused;
}

/* A consumer's layers: the encodings of a simulcast producer, or the
 * spatial layers of a VP9 SVC stream (svc: each layer's rate is what it
 * needs with the layers under it). */
static int nlayers(const sfu_consumer_t *c)
{
    const sfu_producer_t *p = c->producer;
    return c->svc ? p->streams[0].svc_layers : p->nstreams;
}

static uint32_t layer_bps(const sfu_consumer_t *c, int s)
{
    const sfu_producer_t *p = c->producer;
    if (!c->svc)
        return sfu_allocator_layer_bps(p, s);
    if (s < 0 || s >= SFU_SVC_LAYERS)
        return 0;
    uint64_t r = 0;
    for (int l = 0; l <= s; l++)
        r += p->streams[0].svc_rate_bps[l];
    if (!p->streams[0].svc_rate_bps[s])
        return 0; /* not measured yet */
    return r > UINT32_MAX ? UINT32_MAX : (uint32_t)r;
}

static int layer_active(const sfu_consumer_t *c, int s, uint64_t now_ms)
{
    const sfu_producer_stream_t *st = &c->producer->streams[c->svc ? 0 : s];
    if (c->svc)
        return s < SFU_SVC_LAYERS && st->svc_last_ms[s] && now_ms < st->svc_last_ms[s] + SFU_ALLOC_ACTIVE_MS;
    return st->seq_started && now_ms < st->last_packet_ms + SFU_ALLOC_ACTIVE_MS;
}

/* The lowest layer above `from` (exclusive) and up to `max` that the
 * publisher sends and whose rate is known, or -1. */
static int next_active(const sfu_consumer_t *c, int from, int max, uint64_t now_ms)
{
    for (int s = from + 1; s <= max && s < nlayers(c); s++)
        if (layer_active(c, s, now_ms) && layer_bps(c, s) > 0)
            return s;
    return -1;
}

/* No limit: the highest active layer up to `max` (max itself when none is
 * known to be active yet). */
static int highest_active(const sfu_consumer_t *c, int max, uint64_t now_ms)
{
    if (max >= nlayers(c))
        max = nlayers(c) - 1;
    for (int s = max; s >= 0; s--)
        if (layer_active(c, s, now_ms))
            return s;
    return max < 0 ? 0 : max;
}

/* A layer the publisher sends whose rate is not measured yet (its first
 * second): the consumer keeps its target until it is. */
static int rates_unknown(const sfu_consumer_t *c, uint64_t now_ms)
{
    for (int s = 0; s <= c->preferred_stream && s < nlayers(c); s++)
        if (layer_active(c, s, now_ms) && layer_bps(c, s) == 0)
            return 1;
    return 0;
}

/* The lowest active layer up to `max`, 0 when none. */
static int lowest_active(const sfu_consumer_t *c, int max, uint64_t now_ms)
{
    for (int s = 0; s <= max && s < nlayers(c); s++)
        if (layer_active(c, s, now_ms))
            return s;
    return 0;
}

void sfu_allocator_request(sfu_engine_t *e, sfu_transport_t *t)
{
    t->next_alloc_ms = 0;
    sfu_timer_pull(e, 0);
}

void sfu_allocator_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    if (!t->nsimulcast)
        return;
    if (now_ms >= t->next_alloc_ms) {
        uint32_t est = t->bwe ? sfu_bwe_limit(t, now_ms) : UINT32_MAX;
        uint32_t next_step = 0;
        t->next_alloc_ms = now_ms + SFU_ALLOC_INTERVAL_MS; /* (a held climb may bring it forward) */
        uint32_t allocated = sfu_allocator_run(e, t, est, now_ms, &next_step);
        if (t->bwe)
            sfu_bwe_allocated(e, t, est, allocated, next_step);
    }
    sfu_timer_pull(e, t->next_alloc_ms);
}

uint32_t sfu_allocator_run(sfu_engine_t *e, sfu_transport_t *t, uint32_t estimate_bps, uint64_t now_ms,
                           uint32_t *next_step_bps)
{
    sfu_consumer_t *sim[SFU_ALLOC_MAX];
    int layer[SFU_ALLOC_MAX];
    int n = 0;
    int64_t budget = estimate_bps;
    uint64_t fixed = 0;
    for (uint32_t i = 0; i < t->nconsumers; i++) {
        sfu_consumer_t *c = t->consumers[i];
        if (!consumer_active(c))
            continue;
        sfu_producer_t *p = c->producer;
        if (!p->kind_video || nlayers(c) < 2 || n == SFU_ALLOC_MAX ||
            (estimate_bps != UINT32_MAX && rates_unknown(c, now_ms))) {
            fixed += c->svc ? p->streams[0].alloc_rate_bps : sfu_allocator_layer_bps(p, c->stream);
            continue;
        }
        /* priority order, higher first (insertion: a transport has few) */
        int j = n++;
        while (j > 0 && sim[j - 1]->priority < c->priority) {
            sim[j] = sim[j - 1];
            j--;
        }
        sim[j] = c;
    }
    if (estimate_bps == UINT32_MAX) { /* no limit known: the preferred layers */
        for (int i = 0; i < n; i++)
            sfu_consumer_retarget(e, sim[i], highest_active(sim[i], sim[i]->preferred_stream, now_ms));
        if (next_step_bps)
            *next_step_bps = 0;
        return UINT32_MAX;
    }
    budget -= (int64_t)fixed;
    uint64_t allocated = fixed;
    for (int i = 0; i < n; i++) {
        sfu_consumer_t *c = sim[i];
        int max = c->preferred_stream < nlayers(c) ? c->preferred_stream : nlayers(c) - 1;
        layer[i] = lowest_active(c, max, now_ms);
        uint32_t r = layer_bps(c, layer[i]);
        budget -= r;
        allocated += r;
    }
    /* one layer more per consumer and round, highest priority first */
    int64_t step = -1; /* smallest extra estimate that would allow an upgrade */
    for (int changed = 1; changed;) {
        changed = 0;
        step = -1;
        for (int i = 0; i < n; i++) {
            sfu_consumer_t *c = sim[i];
            int max = c->preferred_stream < nlayers(c) ? c->preferred_stream : nlayers(c) - 1;
            int next = next_active(c, layer[i], max, now_ms);
            if (next < 0)
                continue;
            uint32_t rn = layer_bps(c, next);
            uint32_t rc = layer_bps(c, layer[i]);
            int64_t need = (int64_t)rn - rc;
            if (next > c->target_stream)
                need += (int64_t)rn * SFU_ALLOC_UP_MARGIN_PCT / 100; /* climbing */
            else
                need -= (int64_t)rn * SFU_ALLOC_KEEP_SLACK_PCT / 100; /* keeping it */
            if (budget >= need) {
                budget -= (int64_t)rn - rc;
                allocated += rn - rc;
                layer[i] = next;
                changed = 1;
            } else if (step < 0 || need - budget < step) {
                step = need - budget;
            }
        }
    }
    /* a climb waits until the estimate has allowed it for
     * SFU_ALLOC_UP_HOLD_MS (a probe's or a burst's overshoot falls back
     * sooner); a consumer that has sent nothing yet starts where it fits */
    uint64_t recheck = 0;
    for (int i = 0; i < n; i++) {
        sfu_consumer_t *c = sim[i];
        if (c->climbed_ms && now_ms >= c->climbed_ms + SFU_ALLOC_FAILED_CLIMB_MS) {
            if (c->target_stream >= c->climbed_stream && c->failed_stream <= c->climbed_stream)
                c->failed_stream = 0; /* the climb lasted */
            c->climbed_ms = 0;
        }
        if (layer[i] > c->target_stream && c->ts_started && !c->preference_changed) {
            /* one layer at a time: the estimate proves itself on the
             * way (a probe measured through a bursty path overshoots) */
            int up = next_active(c, c->target_stream, layer[i], now_ms);
            if (up > 0)
                layer[i] = up;
            uint64_t hold = SFU_ALLOC_UP_HOLD_MS;
            if (c->failed_stream && layer[i] == c->failed_stream) {
                if ((uint64_t)estimate_bps >= 2ull * layer_bps(c, layer[i]))
                    c->failed_stream = 0; /* far above what failed: the link changed */
                else
                    hold = c->failed_hold_ms;
            }
            if (!c->up_since_ms)
                c->up_since_ms = now_ms;
            if (now_ms < c->up_since_ms + hold) {
                uint64_t due = c->up_since_ms + hold;
                if (!recheck || due < recheck)
                    recheck = due;
                continue;
            }
            c->climbed_ms = now_ms;
            c->climbed_stream = layer[i];
        } else if (layer[i] < c->target_stream && !c->preference_changed && c->climbed_ms &&
                   c->climbed_stream == c->target_stream) {
            /* the last climb fell back soon: the next one to it waits longer */
            uint32_t h = c->failed_stream == c->target_stream ? c->failed_hold_ms * 2 : SFU_ALLOC_UP_HOLD_MS * 2;
            c->failed_hold_ms = h < SFU_ALLOC_FAILED_HOLD_MAX_MS ? h : SFU_ALLOC_FAILED_HOLD_MAX_MS;
            c->failed_stream = c->target_stream;
            c->climbed_ms = 0;
        }
        c->up_since_ms = 0;
        c->preference_changed = 0;
        sfu_consumer_retarget(e, c, layer[i]);
    }
    if (recheck && recheck < t->next_alloc_ms)
        t->next_alloc_ms = recheck;
    if (next_step_bps)
        *next_step_bps = step < 0 ? 0 : (uint32_t)((int64_t)estimate_bps + step > UINT32_MAX ? UINT32_MAX
                                                                                        : estimate_bps + step);
    return allocated > UINT32_MAX ? UINT32_MAX : (uint32_t)allocated;
}
