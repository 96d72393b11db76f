/* Round-trip time from DLRR and report blocks (rtt.h). */
#include "rtt.h"

#include <string.h>

void sfu_rtt_init(sfu_rtt_t *r)
{
    memset(r, 0, sizeof(*r));
}

void sfu_rtt_on_rrtr_sent(sfu_rtt_t *r, uint32_t ntp_compact, uint64_t now_ms)
{
    uint32_t newest = (r->sent_next + SFU_RTT_HISTORY - 1) % SFU_RTT_HISTORY;
    if (r->sent[newest].valid && r->sent[newest].ntp == ntp_compact)
        return; /* the same timestamp twice: one entry */
    sfu_rtt_sent_t *s = &r->sent[r->sent_next];
    s->ntp = ntp_compact;
    s->sent_ms = now_ms;
    s->valid = 1;
    s->used = 0;
    r->sent_next = (r->sent_next + 1) % SFU_RTT_HISTORY;
}

/* Median of the window (lower middle of an even count), in us. */
static uint32_t window_median(const sfu_rtt_t *r)
{
    uint32_t v[SFU_RTT_WINDOW];
    uint32_t n = r->window_n;
    for (uint32_t i = 0; i < n; i++) {
        /* insertion sort of at most 5 values */
        uint32_t x = r->window_us[i], j = i;
        while (j > 0 && v[j - 1] > x) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    return v[(n - 1) / 2];
}

/* Checks a result d (compact NTP units, signed) and adds it to the window.
 * Returns the sample in us or a negative code. */
static int take_sample(sfu_rtt_t *r, int32_t d)
{
    if (d < -SFU_RTT_NEG_TOLERANCE)
        return SFU_RTT_ENEGATIVE;
    if (d < 0)
        d = 0;
    uint64_t us = ((uint64_t)d * 1000000u + 32768u) >> 16;
    if (us > (uint64_t)SFU_RTT_MAX_MS * 1000u)
        return SFU_RTT_ETOO_LARGE;
    r->window_us[r->window_next] = (uint32_t)us;
    r->window_next = (r->window_next + 1) % SFU_RTT_WINDOW;
    if (r->window_n < SFU_RTT_WINDOW)
        r->window_n++;
    uint32_t ms = (window_median(r) + 500u) / 1000u;
    r->rtt_ms = ms ? ms : 1;
    r->last_us = (uint32_t)us;
    r->samples++;
    return (int)us;
}

int sfu_rtt_on_dlrr(sfu_rtt_t *r, uint32_t lrr, uint32_t dlrr, uint32_t now_compact, uint64_t now_ms)
{
    if (lrr == 0)
        return SFU_RTT_ENO_TIMESTAMP;
    sfu_rtt_sent_t *s = NULL;
    for (uint32_t k = 1; k <= SFU_RTT_HISTORY; k++) {
        /* newest first */
        sfu_rtt_sent_t *e = &r->sent[(r->sent_next + SFU_RTT_HISTORY - k) % SFU_RTT_HISTORY];
        if (e->valid && e->ntp == lrr) {
            s = e;
            break;
        }
    }
    int rc;
    if (!s)
        rc = SFU_RTT_EUNKNOWN;
    else if (s->used)
        rc = SFU_RTT_EDUPLICATE;
    else if (now_ms > s->sent_ms + SFU_RTT_MAX_AGE_MS)
        rc = SFU_RTT_ESTALE;
    else
        rc = take_sample(r, (int32_t)(now_compact - lrr - dlrr));
    if (rc < 0) {
        r->rejected++;
        return rc;
    }
    s->used = 1;
    return rc;
}

int sfu_rtt_on_report_block(sfu_rtt_t *r, uint32_t lsr, uint32_t dlsr, uint32_t now_compact)
{
    if (lsr == 0)
        return SFU_RTT_ENO_TIMESTAMP;
    for (uint32_t k = 0; k < SFU_RTT_LSR_SEEN; k++) {
        if (r->lsr_seen[k] == lsr) {
            r->rejected++;
            return SFU_RTT_EDUPLICATE;
        }
    }
    int rc = take_sample(r, (int32_t)(now_compact - lsr - dlsr));
    if (rc < 0) {
        r->rejected++;
        return rc;
    }
    r->lsr_seen[r->lsr_next] = lsr;
    r->lsr_next = (r->lsr_next + 1) % SFU_RTT_LSR_SEEN;
    return rc;
}
