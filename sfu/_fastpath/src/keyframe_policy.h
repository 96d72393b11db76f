/* When the SFU asks a publisher for a keyframe (keyframe_policy.c). All of
 * it is here; the control plane never decides it.
 *
 *   - A video consumer starts at a keyframe: a new one, a resumed one, one
 *     whose producer resumed (sfu_keyframe_consumer_waits). What comes before
 *     the keyframe cannot be decoded and is not sent. A consumer told to
 *     forward another simulcast layer keeps its current one and switches
 *     at a keyframe of the new one, which is asked for the same way.
 *   - A waiting consumer gets a request (PLI) as soon as its transport can
 *     carry media (remote known, SRTP keys in): asking earlier would only
 *     use up the throttle window.
 *   - A viewer's PLI or FIR, a viewer's NACK of a packet the SFU can no
 *     longer resend (sfu_consumer_retransmit), and a NACK generator that gave
 *     up on a hole (or saw a jump too large to NACK), ask for one too.
 *   - Throttling: at most one PLI per producer stream per
 *     e->keyframe_request_interval_ms; requests meanwhile are deferred to
 *     the end of the window, coalesced into one. A keyframe passing reopens
 *     the window (whoever asked gets that keyframe).
 *   - Retries: while a consumer still waits, the request is repeated, but
 *     only while the publisher sends (a silent publisher starts with a
 *     keyframe anyway): the PLI or the keyframe may have been lost, a viewer
 *     that has received no video never sends a PLI of its own, and an
 *     encoder may ignore a PLI that comes right after a keyframe of its own
 *     (Chromium does, within about 300 ms). Retries come every
 *     max(SFU_KEYFRAME_RETRY_MS, interval); a first request sent less than
 *     SFU_KEYFRAME_FIRST_RETRY_MS after a keyframe of the stream passed is
 *     retried after max(interval, SFU_KEYFRAME_FIRST_RETRY_MS) instead.
 */
#ifndef SFU_KEYFRAME_POLICY_H
#define SFU_KEYFRAME_POLICY_H

#include "engine.h"

/* A PLI for one producer stream now, or deferred to the end of the
 * throttle window. */
void sfu_keyframe_request(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms);

/* A consumer (re)starts and must wait for a keyframe. */
void sfu_keyframe_consumer_waits(sfu_engine_t *e, sfu_consumer_t *c);

/* Whether a packet may start a waiting consumer (keyframe: -1 when the codec
 * gives no way to tell, e.g. audio, else whether it starts a keyframe). */
static inline int sfu_keyframe_can_start(int keyframe) { return keyframe != 0; }

/* A keyframe of the stream passed: the window reopens. */
static inline void sfu_keyframe_arrived(sfu_producer_stream_t *st, uint64_t now_ms)
{
    st->keyframes++;
    st->kf_unanswered = 0;
    st->last_keyframe_ms = now_ms;
    st->last_keyframe_request_ms = 0;
    st->keyframe_pending = 0;
}

/* Timer work: deferred requests whose window ended (once per tick), and
 * requests/retries for the waiting consumers of a producer. */
void sfu_keyframe_run_deferred(sfu_engine_t *e, uint64_t now_ms);
void sfu_keyframe_producer_timers(sfu_engine_t *e, sfu_producer_t *p, uint64_t now_ms);

#endif
