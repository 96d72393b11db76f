/* Transport-wide congestion control, sender side: the send history and the
 * reading of feedback against it (see twcc_send.h). */
#include "twcc_send.h"

#include <string.h>

#define SEND_SLOT(e) ((size_t)((uint64_t)(e) & (SFU_TWCC_SEND_HISTORY - 1)))
#define SEQ_START ((int64_t)1 << 20) /* unwrapped numbers stay positive */
#define FB_WINDOW 64                  /* feedback counts remembered */
#define FB_RESYNC 8                   /* "too old" feedbacks in a row: the remote restarted its count */

void sfu_twcc_send_init(sfu_twcc_send_t *s)
{
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < SFU_TWCC_SEND_HISTORY; i++)
        s->ring[i].seq = -1;
    s->next_seq = SEQ_START;
}

uint16_t sfu_twcc_send_next(sfu_twcc_send_t *s, int64_t send_us, uint32_t size, uint16_t probe_cluster)
{
    int64_t e = s->next_seq++;
    sfu_twcc_sent_t *p = &s->ring[SEND_SLOT(e)];
    p->seq = e;
    p->send_us = send_us;
    p->size = size;
    p->probe_cluster = probe_cluster;
    p->state = SFU_TWCC_SENT_UNREPORTED;
    s->sent++;
    return (uint16_t)e;
}

/* 1 when a feedback with this packet count is to be read, 0 when it was
 * seen already (or is too old to tell); marks it seen. */
static int accept_fb_count(sfu_twcc_send_t *s, uint8_t c)
{
    if (!s->fb_started) {
        s->fb_started = 1;
        s->fb_highest = 256 + c;
        s->fb_seen = 1;
        return 1;
    }
    int d = (int8_t)(uint8_t)(c - (uint8_t)s->fb_highest);
    if (d > 0) {
        s->fb_seen = d >= FB_WINDOW ? 0 : s->fb_seen << d;
        s->fb_seen |= 1;
        s->fb_highest += d;
        s->fb_stale_run = 0;
        return 1;
    }
    if (-d < FB_WINDOW) {
        uint64_t bit = (uint64_t)1 << -d;
        if (s->fb_seen & bit)
            return 0;
        s->fb_seen |= bit;
        s->fb_stale_run = 0;
        return 1;
    }
    /* older than the window: a very late duplicate, or the remote's count
     * restarted; after FB_RESYNC of them in a row, follow the new count */
    if (++s->fb_stale_run < FB_RESYNC)
        return 0;
    s->fb_stale_run = 0;
    s->fb_highest += d;
    s->fb_seen = 1;
    return 1;
}

int sfu_twcc_send_on_feedback(sfu_twcc_send_t *s, const uint8_t *pkt, size_t len, sfu_twcc_result_t *out,
                              int max)
{
    uint16_t base = 0, count = 0;
    int32_t ref = 0;
    uint8_t fbc = 0;
    int rc = sfu_twcc_parse_feedback(pkt, len, &base, &count, &ref, &fbc, s->statuses, s->deltas,
                                     SFU_TWCC_SEND_HISTORY);
    if (rc < 0) {
        s->fb_malformed++;
        return rc;
    }
    if (out == NULL || max < 0)
        max = 0;
    if (!accept_fb_count(s, fbc)) {
        s->fb_duplicates++;
        return 0;
    }
    s->feedbacks++;

    /* reference time, unwrapped against the previous feedback's (24 bits) */
    if (!s->ref_started) {
        s->ref_started = 1;
        /* offset so that arrival times stay positive (-1 means lost) */
        s->ref_last = (int64_t)ref + ((int64_t)1 << 24);
    } else {
        int32_t d = (int32_t)((((uint32_t)ref - (uint32_t)s->ref_last) & 0xFFFFFF) ^ 0x800000) - 0x800000;
        s->ref_last += d;
    }
    int64_t t = s->ref_last * SFU_TWCC_REF_UNIT_US;

    /* base sequence number, unwrapped against the highest one sent */
    int64_t highest = s->next_seq - 1;
    int64_t first = highest + (int16_t)(uint16_t)(base - (uint16_t)highest);
    int n = 0;
    for (int i = 0; i < (int)count; i++) {
        uint8_t st = s->statuses[i];
        if (st != SFU_TWCC_NOT_RECEIVED)
            t += (int64_t)s->deltas[i] * SFU_TWCC_DELTA_UNIT_US;
        int64_t e = first + i;
        sfu_twcc_sent_t *p = &s->ring[SEND_SLOT(e)];
        if (e > highest || p->seq != e) {
            s->unknown++;
            continue;
        }
        if (p->state == SFU_TWCC_SENT_RECEIVED || (p->state == SFU_TWCC_SENT_LOST && st == SFU_TWCC_NOT_RECEIVED)) {
            s->repeated++;
            continue;
        }
        if (n >= max)
            break; /* the rest stays unreported */
        sfu_twcc_result_t *r = &out[n++];
        r->send_us = p->send_us;
        r->size = p->size;
        r->probe_cluster = p->probe_cluster;
        if (st == SFU_TWCC_NOT_RECEIVED) {
            r->recv_us = -1;
            p->state = SFU_TWCC_SENT_LOST;
            s->reported_lost++;
        } else {
            r->recv_us = t;
            if (p->state == SFU_TWCC_SENT_LOST)
                s->recovered++;
            p->state = SFU_TWCC_SENT_RECEIVED;
            s->reported_received++;
        }
    }
    return n;
}
