#include "nack.h"

#include <string.h>

#include "seqmgr.h" /* sfu_seq_newer */

void sfu_nack_init(sfu_nack_gen_t *g)
{
    memset(g, 0, sizeof(*g));
}

/* Drops the k oldest entries. */
static void nack_drop_front(sfu_nack_gen_t *g, int k)
{
    if (k <= 0)
        return;
    if (k >= g->count) {
        g->gave_up += (uint64_t)g->count;
        g->count = 0;
        return;
    }
    memmove(g->list, g->list + k, (size_t)(g->count - k) * sizeof(g->list[0]));
    g->count -= k;
    g->gave_up += (uint64_t)k;
}

static void nack_request_keyframe(sfu_nack_gen_t *g)
{
    g->keyframe_needed = 1;
    g->keyframe_requests++;
}

/* Lists the numbers strictly between g->highest and seq (gap = seq - highest). */
static void nack_add_gap(sfu_nack_gen_t *g, uint16_t gap, uint64_t now_ms)
{
    int missing = (int)gap - 1;
    if (missing <= 0)
        return;
    uint16_t first = (uint16_t)(g->highest + 1);
    if (missing > SFU_NACK_MAX_LIST) {
        /* the oldest skipped numbers never get listed */
        int skip = missing - SFU_NACK_MAX_LIST;
        g->gave_up += (uint64_t)skip;
        first = (uint16_t)(first + skip);
        missing = SFU_NACK_MAX_LIST;
    }
    int overflow = g->count + missing - SFU_NACK_MAX_LIST;
    if (overflow > 0 || missing < (int)gap - 1) {
        nack_drop_front(g, overflow);
        nack_request_keyframe(g);
    }
    for (int i = 0; i < missing; i++) {
        sfu_nack_entry_t *e = &g->list[g->count++];
        e->seq = (uint16_t)(first + i);
        e->first_ms = (uint32_t)now_ms;
        e->sent_ms = 0;
        e->retries = 0;
    }
}

int sfu_nack_on_packet(sfu_nack_gen_t *g, uint16_t seq, int is_recovered, uint64_t now_ms)
{
    g->last_ms = now_ms;
    if (!g->started) {
        g->started = 1;
        g->highest = seq;
        return 1;
    }
    uint16_t d = (uint16_t)(seq - g->highest);
    if (d == 0)
        return 0;
    if (d < 0x8000) { /* newer than everything so far */
        if (d > SFU_NACK_MAX_JUMP) {
            g->gave_up += (uint64_t)g->count;
            g->count = 0;
            nack_request_keyframe(g);
        } else {
            nack_add_gap(g, d, now_ms);
        }
        g->highest = seq;
        return 1;
    }
    /* older: fills a hole if listed */
    for (int i = 0; i < g->count; i++) {
        if (g->list[i].seq != seq)
            continue;
        memmove(g->list + i, g->list + i + 1, (size_t)(g->count - i - 1) * sizeof(g->list[0]));
        g->count--;
        if (is_recovered)
            g->recovered++;
        else
            g->late++;
        return 1;
    }
    return 0;
}

int sfu_nack_poll(sfu_nack_gen_t *g, uint64_t now_ms, uint32_t rtt_ms, uint16_t *out, int max)
{
    uint32_t rtt = sfu_nack_effective_rtt(rtt_ms);
    uint32_t now = (uint32_t)now_ms;
    int n = 0, w = 0;
    if (now_ms > g->last_ms)
        g->last_ms = now_ms;
    for (int i = 0; i < g->count; i++) {
        sfu_nack_entry_t e = g->list[i];
        int32_t age = (int32_t)(now - e.first_ms);
        int due = e.retries == 0 || (int32_t)(now - e.sent_ms) >= (int32_t)rtt;
        if (age > SFU_NACK_MAX_AGE_MS ||
            (due && e.retries >= SFU_NACK_MAX_RETRIES && age >= SFU_NACK_MIN_GIVE_UP_MS)) {
            g->gave_up++;
            /* a packet lost for good leaves a frame no viewer can decode: a
             * keyframe now rather than when each viewer's decoder gives up */
            nack_request_keyframe(g);
            continue; /* dropped */
        }
        if (due && e.retries >= SFU_NACK_MAX_RETRIES)
            due = 0; /* out of retries: kept until SFU_NACK_MIN_GIVE_UP_MS, asked no more */
        if (due && n < max) {
            out[n++] = e.seq;
            e.sent_ms = now;
            e.retries++;
            g->nacked++;
        }
        g->list[w++] = e;
    }
    g->count = w;
    return n;
}

int sfu_nack_keyframe_needed(sfu_nack_gen_t *g)
{
    int k = g->keyframe_needed;
    g->keyframe_needed = 0;
    return k;
}

/* An entry time (low 32 bits) back to 64 bits, near g->last_ms. */
static inline int64_t nack_full_ms(const sfu_nack_gen_t *g, uint32_t t)
{
    return (int64_t)g->last_ms + (int32_t)(t - (uint32_t)g->last_ms);
}

int64_t sfu_nack_next_deadline_ms(const sfu_nack_gen_t *g, uint32_t rtt_ms)
{
    uint32_t rtt = sfu_nack_effective_rtt(rtt_ms);
    int64_t best = -1;
    for (int i = 0; i < g->count; i++) {
        const sfu_nack_entry_t *e = &g->list[i];
        int64_t expire = nack_full_ms(g, e->first_ms) + SFU_NACK_MAX_AGE_MS + 1;
        int64_t t = e->retries == 0 ? nack_full_ms(g, e->first_ms) : nack_full_ms(g, e->sent_ms) + rtt;
        if (e->retries >= SFU_NACK_MAX_RETRIES && t < nack_full_ms(g, e->first_ms) + SFU_NACK_MIN_GIVE_UP_MS)
            t = nack_full_ms(g, e->first_ms) + SFU_NACK_MIN_GIVE_UP_MS; /* given up when both have passed */
        if (expire < t)
            t = expire;
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}
