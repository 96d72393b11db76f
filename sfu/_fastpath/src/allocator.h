/* Which simulcast layer each consumer of a transport forwards, from the
 * transport's bandwidth estimate (allocator.c).
 *
 *   - It runs per transport that has simulcast consumers, about once a
 *     second (layers start and stop as the publisher's own estimate
 *     changes), and at once when asked (sfu_allocator_request: a consumer
 *     came or went, a preference changed, the estimate fell or rose past
 *     the next step, bwe.h).
 *   - A transport without an estimate (bwe.h: none, or no feedback) has no
 *     limit: each consumer gets the highest active layer up to its
 *     preferred one.
 *   - A layer is active while its packets arrive (the last one less than
 *     SFU_ALLOC_ACTIVE_MS ago): an encoder stops sending its upper layers
 *     when its own link is short.
 *   - Audio consumers and video consumers of single-encoding producers take
 *     what their stream sends, first.
 *   - Simulcast consumers, highest priority first, each get the lowest
 *     active layer (an encoding the publisher sends: a measured rate), then
 *     one layer more per round, in priority order, while the next layer's
 *     extra rate fits in what is left, never above the consumer's preferred
 *     layer. A consumer never goes without video: the lowest layer stays
 *     even when it does not fit.
 *   - Hysteresis, so that layers do not flap (each switch costs a keyframe
 *     that every viewer of the layer receives): a layer above the consumer's
 *     target needs its extra rate plus SFU_ALLOC_UP_MARGIN_PCT of its own
 *     rate to fit, and the estimate must allow it for SFU_ALLOC_UP_HOLD_MS
 *     before the consumer climbs, one layer at a time (a probe's or a
 *     burst's overshoot shows once the consumer sends more, and falls back); keeping the target needs its rate less
 *     SFU_ALLOC_KEEP_SLACK_PCT, so a small dip does not send it down. A
 *     consumer that has sent nothing yet, or whose preferred layer was just
 *     set (set_preferred_layers), goes to the layer that fits at once.
 *   - A climb that falls back within SFU_ALLOC_FAILED_CLIMB_MS failed (the
 *     estimate that allowed it overshot): the next climb to that layer
 *     waits twice the hold, up to SFU_ALLOC_FAILED_HOLD_MAX_MS, until a
 *     climb to it lasts or the estimate reaches twice the layer's rate (the
 *     link changed).
 *   - The result becomes each consumer's target layer (the switch happens
 *     at the target's keyframe, keyframe_policy.h).
 *
 * estimate_bps UINT32_MAX: no limit known, each consumer gets its preferred
 * layer. Returns the total allocated; *next_step_bps is the estimate that would
 * allow one more upgrade (0 when every consumer has its preferred layer),
 * the probe goal of bwe.c.
 */
#ifndef SFU_ALLOCATOR_H
#define SFU_ALLOCATOR_H

#include <stdint.h>

#include "engine.h"

#define SFU_ALLOC_UP_MARGIN_PCT 10
#define SFU_ALLOC_KEEP_SLACK_PCT 15
#define SFU_ALLOC_UP_HOLD_MS 1500
#define SFU_ALLOC_INTERVAL_MS 1000
#define SFU_ALLOC_ACTIVE_MS 1500
#define SFU_ALLOC_FAILED_CLIMB_MS 8000 /* a climb that falls back sooner failed */
#define SFU_ALLOC_FAILED_HOLD_MAX_MS 6000

uint32_t sfu_allocator_run(sfu_engine_t *e, sfu_transport_t *t, uint32_t estimate_bps, uint64_t now_ms,
                           uint32_t *next_step_bps);

/* The allocation of t is due at once. */
void sfu_allocator_request(sfu_engine_t *e, sfu_transport_t *t);

/* Timer work (timers.h): the allocation when due. */
void sfu_allocator_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms);

/* The bit rate a layer of a producer sends (measured), 0 when inactive. */
uint32_t sfu_allocator_layer_bps(const sfu_producer_t *p, int stream);

#endif
