/* Layer allocation of a transport's consumers (allocator.h). */
#include "allocator.h"

#include <stdlib.h>

#include "consumer.h"

#define SFU_ALLOC_MAX 256 /* simulcast consumers considered per transport */

uint32_t sfu_allocator_layer_bps(const sfu_producer_t *p, int stream)
{
    if (!p || stream < 0 || stream >= p->nstreams)
        return 0;
    uint64_t r = p->streams[stream].rate_bps;
    return r > UINT32_MAX ? UINT32_MAX : (uint32_t)r;
}

static int consumer_active(const sfu_consumer_t *c)
{
    return c->producer && !c->paused && !c->producer_paused;
}

/* The lowest layer above `from` (exclusive) and up to `max` that the
 * publisher sends, or -1. */
static int next_active(const sfu_producer_t *p, int from, int max)
{
    for (int s = from + 1; s <= max && s < p->nstreams; s++)
        if (sfu_allocator_layer_bps(p, s) > 0)
            return s;
    return -1;
}

uint32_t sfu_allocator_run(sfu_engine_t *e, sfu_transport_t *t, uint32_t estimate_bps, uint32_t *next_step_bps)
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
        if (!p->kind_video || p->nstreams < 2 || n == SFU_ALLOC_MAX) {
            fixed += sfu_allocator_layer_bps(p, c->stream);
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
            sfu_consumer_retarget(e, sim[i], sim[i]->preferred_stream);
        if (next_step_bps)
            *next_step_bps = 0;
        return UINT32_MAX;
    }
    budget -= (int64_t)fixed;
    uint64_t allocated = fixed;
    for (int i = 0; i < n; i++) {
        sfu_consumer_t *c = sim[i];
        int max = c->preferred_stream < c->producer->nstreams ? c->preferred_stream : c->producer->nstreams - 1;
        int first = next_active(c->producer, -1, max);
        layer[i] = first >= 0 ? first : 0;
        uint32_t r = sfu_allocator_layer_bps(c->producer, layer[i]);
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
            sfu_producer_t *p = c->producer;
            int max = c->preferred_stream < p->nstreams ? c->preferred_stream : p->nstreams - 1;
            int next = next_active(p, layer[i], max);
            if (next < 0)
                continue;
            uint32_t rn = sfu_allocator_layer_bps(p, next);
            uint32_t rc = sfu_allocator_layer_bps(p, layer[i]);
            int64_t need = (int64_t)rn - rc;
            if (next > c->stream)
                need += (int64_t)rn * SFU_ALLOC_UP_MARGIN_PCT / 100;
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
    for (int i = 0; i < n; i++)
        sfu_consumer_retarget(e, sim[i], layer[i]);
    if (next_step_bps)
        *next_step_bps = step < 0 ? 0 : (uint32_t)((int64_t)estimate_bps + step > UINT32_MAX ? UINT32_MAX
                                                                                        : estimate_bps + step);
    return allocated > UINT32_MAX ? UINT32_MAX : (uint32_t)allocated;
}
