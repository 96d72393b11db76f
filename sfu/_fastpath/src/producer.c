/* Producers (producer.h). */
#include "producer.h"

#include <stdlib.h>
#include <string.h>

#include "keyframe_policy.h"
#include "producer_stream.h"
#include "rtp_listener.h"
#include "timers.h"
#include "transport.h"

uint32_t sfu_producer_add_locked(sfu_engine_t *e, uint32_t th, int kind_video, int nstreams, const uint32_t *ssrcs,
                                 const uint32_t *rtx_ssrcs, const uint8_t pt_map[128], const uint8_t ext_map[256],
                                 int paused)
{
    sfu_transport_t *t = sfu_transport_get(e, th);
    if (!t || nstreams < 1 || nstreams > SFU_MAX_STREAMS)
        return 0;
    sfu_producer_t *p = calloc(1, sizeof(*p));
    if (!p)
        return 0;
    p->transport = t;
    p->kind_video = kind_video;
    p->paused = paused;
    p->nstreams = nstreams;
    memcpy(p->pt_map, pt_map, 128);
    memcpy(p->ext_map, ext_map, 256);
    p->ext_identity = sfu_map_is_identity(p->ext_map, 256);
    uint32_t nroutes_before = t->nroutes, npending_before = t->npending;
    memset(p->rtx_apt, 0xff, sizeof(p->rtx_apt));
    sfu_remb_agg_init(&p->remb);
    for (int i = 0; i < nstreams; i++) {
        sfu_nack_init(&p->streams[i].nack);
        sfu_rtp_stats_init(&p->streams[i].stats, kind_video ? 90000 : 48000);
        p->streams[i].score = 10;
        p->streams[i].ssrc = ssrcs[i];
        p->streams[i].rtx_ssrc = rtx_ssrcs ? rtx_ssrcs[i] : 0;
        /* an SSRC of 0 was not signalled: learned later (MID/RID) */
        int rc = ssrcs[i] ? sfu_rtp_listener_add(t, ssrcs[i], p, i, 0) : sfu_rtp_listener_add_pending(t, p, i, 0);
        if (rc == 0)
            rc = p->streams[i].rtx_ssrc ? sfu_rtp_listener_add(t, p->streams[i].rtx_ssrc, p, i, 1) : sfu_rtp_listener_add_pending(t, p, i, 1);
        if (rc < 0) {
            t->nroutes = nroutes_before;
            t->npending = npending_before;
            free(p);
            return 0;
        }
    }
    p->handle = sfu_table_add(&e->producers, p);
    if (!p->handle) {
        t->nroutes = nroutes_before;
        t->npending = npending_before;
        free(p);
        return 0;
    }
    return p->handle;
}

int sfu_producer_set_rtp_ids_locked(sfu_engine_t *e, uint32_t h, const char *mid, const char *const *rids,
                                    uint8_t mid_ext_in, uint8_t rid_ext_in, uint8_t rrid_ext_in)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    p->mid_len = sfu_rtp_id_copy(p->mid, mid);
    for (int i = 0; i < p->nstreams; i++)
        p->streams[i].rid_len = sfu_rtp_id_copy(p->streams[i].rid, rids ? rids[i] : NULL);
    p->mid_ext_in = mid_ext_in;
    p->rid_ext_in = rid_ext_in;
    p->rrid_ext_in = rrid_ext_in;
    return 0;
}

int sfu_producer_set_paused_locked(sfu_engine_t *e, uint32_t h, int paused)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    if (p->paused && !paused)
        for (uint32_t i = 0; i < p->nconsumers; i++)
            sfu_keyframe_consumer_waits(e, p->consumers[i]);
    p->paused = paused;
    for (uint32_t i = 0; i < p->nconsumers; i++)
        p->consumers[i]->producer_paused = paused;
    return 0;
}

int sfu_producer_set_codecs_locked(sfu_engine_t *e, uint32_t h, const uint8_t codec_of_pt[128])
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    memcpy(p->codec_of_pt, codec_of_pt, 128);
    return 0;
}

int sfu_producer_set_feedback_locked(sfu_engine_t *e, uint32_t h, int nack, const uint8_t rtx_apt[128],
                                     uint8_t twcc_ext_id, uint64_t remb_floor_bps, uint32_t clock_rate)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    p->nack_enabled = nack;
    if (rtx_apt)
        memcpy(p->rtx_apt, rtx_apt, 128);
    p->twcc_ext_id = twcc_ext_id;
    p->remb_floor_bps = remb_floor_bps;
    if (clock_rate)
        for (int i = 0; i < p->nstreams; i++)
            sfu_rtp_stats_init(&p->streams[i].stats, clock_rate);
    return 0;
}


int sfu_producer_remove_locked(sfu_engine_t *e, uint32_t h)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    for (uint32_t i = 0; i < p->nconsumers; i++)
        p->consumers[i]->producer = NULL;
    sfu_rtp_listener_remove_producer(p->transport, p);
    if (p->transport->srtp_in) { /* its SRTP stream state, so that the slots are reused */
        for (int s = 0; s < p->nstreams; s++) {
            if (p->streams[s].ssrc)
                sfu_srtp_remove_stream(p->transport->srtp_in, p->streams[s].ssrc);
            if (p->streams[s].rtx_ssrc)
                sfu_srtp_remove_stream(p->transport->srtp_in, p->streams[s].rtx_ssrc);
        }
    }
    sfu_table_del(&e->producers, h);
    sfu_producer_free(p);
    return 0;
}

static void send_remb(sfu_engine_t *e, sfu_producer_t *p, uint64_t bps)
{
    uint32_t ssrcs[SFU_MAX_STREAMS];
    for (int i = 0; i < p->nstreams; i++)
        ssrcs[i] = p->streams[i].ssrc;
    uint8_t pkt[64];
    int len = sfu_remb_build(pkt, sizeof(pkt), 1, bps, ssrcs, p->nstreams);
    if (len > 0) {
        sfu_transport_send_rtcp(e, p->transport, pkt, (size_t)len);
        p->last_remb_bps = bps;
        e->counters[SFU_C_TX_REMB]++;
    }
}

/* A consumer's new estimate: the producer's REMB is due at once for its
 * first one or a drop of more than 25% (the only way the minimum drops is
 * this value), else at the end of the interval. */
static void remb_schedule(sfu_engine_t *e, sfu_producer_t *p, uint64_t bps, uint64_t now_ms)
{
    const sfu_remb_agg_t *a = &p->remb;
    uint64_t v = bps < p->remb_floor_bps ? p->remb_floor_bps : bps;
    if (!a->sent_any || (v < a->last_sent_bps && a->last_sent_bps - v > a->last_sent_bps / 4))
        sfu_timer_pull(e, now_ms);
    else
        sfu_timer_pull(e, a->last_sent_ms + SFU_REMB_INTERVAL_MS);
}

void sfu_producer_on_remb(sfu_engine_t *e, sfu_producer_t *p, sfu_consumer_t *c, uint64_t bps, uint64_t now_ms)
{
    if (sfu_remb_agg_update(&p->remb, c->handle, bps, now_ms))
        remb_schedule(e, p, bps, now_ms);
}

static int remb_has_estimates(const sfu_remb_agg_t *a)
{
    for (int i = 0; i < SFU_REMB_AGG_SLOTS; i++)
        if (a->entries[i].used)
            return 1;
    return 0;
}

void sfu_producer_timers(sfu_engine_t *e, sfu_producer_t *p, uint64_t now_ms)
{
    if (p->nack_enabled) {
        for (int s = 0; s < p->nstreams; s++) {
            sfu_nack_gen_t *g = &p->streams[s].nack;
            if (!sfu_nack_missing_count(g))
                continue;
            int64_t due = sfu_nack_next_deadline_ms(g, sfu_rtt_ms(&p->transport->rtt));
            if (due >= 0 && (uint64_t)due <= now_ms) {
                sfu_producer_stream_send_nacks(e, p, s, now_ms);
                due = sfu_nack_next_deadline_ms(g, sfu_rtt_ms(&p->transport->rtt));
            }
            if (due >= 0)
                sfu_timer_pull(e, (uint64_t)due);
        }
    }
    if (p->kind_video)
        sfu_keyframe_producer_timers(e, p, now_ms);
    sfu_remb_agg_t *a = &p->remb;
    uint64_t bps;
    if (sfu_remb_agg_poll(a, now_ms, p->remb_floor_bps, &bps))
        send_remb(e, p, bps);
    if (remb_has_estimates(a)) /* estimates still live after the poll */
        sfu_timer_pull(e, a->last_sent_ms + SFU_REMB_INTERVAL_MS);
}

void sfu_producer_free(sfu_producer_t *p)
{
    for (int i = 0; i < p->nstreams; i++)
        sfu_packet_store_free(&p->streams[i].store);
    free(p->consumers);
    free(p);
}
