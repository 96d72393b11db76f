/* When the SFU asks a publisher for a keyframe (keyframe_policy.h). */
#include "keyframe_policy.h"
#include "vp9.h"

#include <stdlib.h>

#include "rtcp_pli.h"
#include "timers.h"
#include "transport.h"

void sfu_keyframe_request(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms)
{
    if (!p->kind_video || stream < 0 || stream >= p->nstreams)
        return;
    sfu_producer_stream_t *st = &p->streams[stream];
    if (!st->ssrc)
        return; /* SSRC not learned yet: nothing to address */
    if (st->last_keyframe_request_ms && now_ms - st->last_keyframe_request_ms < e->keyframe_request_interval_ms) {
        /* Coalesce: one more request when the interval ends, whatever the
         * number of viewers asking meanwhile (a viewer that joined after
         * the last keyframe passed still gets one). */
        if (!st->keyframe_pending) {
            if (e->nkf_pending == e->kf_pending_cap) {
                uint32_t ncap = e->kf_pending_cap ? e->kf_pending_cap * 2 : 16;
                uint32_t *n = realloc(e->kf_pending, ncap * sizeof(*n));
                if (!n)
                    return;
                e->kf_pending = n;
                e->kf_pending_cap = ncap;
            }
            e->kf_pending[e->nkf_pending++] = p->handle;
            st->keyframe_pending = 1;
            sfu_timer_pull(e, st->last_keyframe_request_ms + e->keyframe_request_interval_ms);
        }
        return;
    }
    st->keyframe_pending = 0;
    uint8_t pli[SFU_RTCP_PLI_SIZE];
    /* sender SSRC 1: the SFU has none of its own toward a publisher */
    sfu_rtcp_build_pli(pli, sizeof(pli), 1, st->ssrc);
    if (sfu_transport_send_rtcp(e, p->transport, pli, sizeof(pli)) < 0)
        return;
    st->last_keyframe_request_ms = now_ms ? now_ms : 1;
    st->keyframe_requests++;
    st->kf_unanswered++;
    e->counters[SFU_C_TX_PLI]++;
}

void sfu_keyframe_consumer_waits(sfu_engine_t *e, sfu_consumer_t *c)
{
    c->sync_required = 1;
    if (c->producer && c->producer->kind_video) {
        c->keyframe_wanted = 1;
        sfu_timer_pull(e, 0); /* the timer asks once its transport can carry media */
    }
}

/* How long after the last request a stream's next retry is due. */
static uint64_t retry_period(const sfu_engine_t *e, const sfu_producer_stream_t *st)
{
    uint64_t interval = e->keyframe_request_interval_ms;
    /* a first request that came right after a keyframe of the stream was
     * probably ignored by the encoder: retried sooner */
    int maybe_ignored = st->kf_unanswered == 1 && st->last_keyframe_ms &&
                        st->last_keyframe_request_ms >= st->last_keyframe_ms &&
                        st->last_keyframe_request_ms - st->last_keyframe_ms < SFU_KEYFRAME_FIRST_RETRY_MS;
    if (maybe_ignored)
        return interval > SFU_KEYFRAME_FIRST_RETRY_MS ? interval : SFU_KEYFRAME_FIRST_RETRY_MS;
    return interval > SFU_KEYFRAME_RETRY_MS ? interval : SFU_KEYFRAME_RETRY_MS;
}

/* For each stream of a video producer with a consumer ready to send but
 * waiting for a keyframe: a request at once for a consumer that has not
 * asked yet; else a retry while packets without a keyframe keep coming,
 * one interval after the first unanswered request, then every
 * SFU_KEYFRAME_RETRY_MS (or the interval, if longer). */
void sfu_keyframe_producer_timers(sfu_engine_t *e, sfu_producer_t *p, uint64_t now_ms)
{
    unsigned waiting = 0; /* streams with a consumer waiting for a keyframe */
    unsigned fresh = 0;   /* ... one of which has not asked yet */
    for (uint32_t i = 0; i < p->nconsumers; i++) {
        sfu_consumer_t *c = p->consumers[i];
        /* a consumer waits for a keyframe of the layer it (re)starts on, or of
         * the layer it is to switch to */
        int want;
        if (c->svc) /* SVC: one stream; a key picture starts it or lets it climb a spatial layer */
            want = c->sync_required || c->svc_key_wanted ? 0 : -1;
        else
            want = c->target_stream != c->stream ? c->target_stream : c->sync_required ? c->stream : -1;
        if (want < 0 || want >= p->nstreams || c->paused || c->producer_paused || p->paused)
            continue;
        if (!sfu_transport_can_send_media(c->transport))
            continue; /* its transport pulls the timer when it becomes ready */
        waiting |= 1u << want;
        if (c->keyframe_wanted) {
            fresh |= 1u << want;
            c->keyframe_wanted = 0;
        }
    }
    for (int s = 0; s < p->nstreams; s++) {
        sfu_producer_stream_t *st = &p->streams[s];
        st->kf_retry_wait = 0;
        if (!(waiting & (1u << s)))
            continue; /* nobody waits */
        if (fresh & (1u << s)) {
            sfu_keyframe_request(e, p, s, now_ms); /* now, or deferred to the window's end */
            if (st->last_keyframe_request_ms)
                sfu_timer_pull(e, st->last_keyframe_request_ms + retry_period(e, st));
            continue;
        }
        if (st->keyframe_pending)
            continue; /* a deferred request is already due */
        uint64_t due = st->last_keyframe_request_ms ? st->last_keyframe_request_ms + retry_period(e, st) : 0;
        if (now_ms < due) {
            sfu_timer_pull(e, due);
            continue;
        }
        /* only while the publisher sends (a silent one starts with a keyframe) */
        if (!st->seq_started || st->last_packet_ms <= st->last_keyframe_request_ms) {
            st->kf_retry_wait = 1; /* its next packet pulls the deadline in */
            continue;
        }
        sfu_keyframe_request(e, p, s, now_ms);
        e->counters[SFU_C_KEYFRAME_RETRIES]++;
        /* next retry one period on (also when the PLI could not be sent) */
        sfu_timer_pull(e, now_ms + retry_period(e, st));
    }
}

void sfu_keyframe_run_deferred(sfu_engine_t *e, uint64_t now_ms)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < e->nkf_pending; i++) {
        sfu_producer_t *p = sfu_producer_get(e, e->kf_pending[i]);
        if (!p)
            continue;
        int still = 0;
        for (int s = 0; s < p->nstreams; s++) {
            sfu_producer_stream_t *st = &p->streams[s];
            if (!st->keyframe_pending)
                continue;
            uint64_t due = st->last_keyframe_request_ms + e->keyframe_request_interval_ms;
            if (now_ms >= due) {
                st->keyframe_pending = 0;
                sfu_keyframe_request(e, p, s, now_ms);
            } else {
                still = 1;
                sfu_timer_pull(e, due);
            }
        }
        if (still)
            e->kf_pending[j++] = e->kf_pending[i];
    }
    e->nkf_pending = j;
}

int sfu_producer_request_keyframe_locked(sfu_engine_t *e, uint32_t h, uint64_t now_ms)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    for (int s = 0; s < p->nstreams; s++)
        sfu_keyframe_request(e, p, s, now_ms);
    return 0;
}

int sfu_consumer_request_keyframe_locked(sfu_engine_t *e, uint32_t h, uint64_t now_ms)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    /* A keyframe is useless to a consumer whose transport cannot carry media
     * yet; asking now would only use up the throttle window. A consumer
     * that waits asks by itself once its transport is ready. */
    if (!sfu_transport_can_send_media(c->transport))
        return 0;
    if (c->producer)
        sfu_keyframe_request(e, c->producer, c->stream, now_ms);
    return 0;
}
