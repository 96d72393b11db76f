/* Which simulcast layer each consumer of a transport forwards, from the
 * transport's bandwidth estimate (allocator.c).
 *
 *   - Audio consumers and video consumers of single-encoding producers take
 *     what their stream sends, first.
 *   - Simulcast consumers, highest priority first, each get the lowest
 *     active layer (an encoding the publisher sends: a measured rate), then
 *     one layer more per round, in priority order, while the next layer's
 *     extra rate fits in what is left, never above the consumer's preferred
 *     layer. A consumer never goes without video: the lowest layer stays
 *     even when it does not fit.
 *   - Hysteresis: a layer above the one a consumer forwards now needs its
 *     extra rate plus SFU_ALLOC_UP_MARGIN_PCT of its own rate to fit; keeping
 *     the current one needs only its rate. The estimate must therefore grow
 *     past a layer's rate by a margin before the consumer climbs, and a
 *     small dip does not send it down.
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

uint32_t sfu_allocator_run(sfu_engine_t *e, sfu_transport_t *t, uint32_t estimate_bps, uint32_t *next_step_bps);

/* The bit rate a layer of a producer sends (measured), 0 when inactive. */
uint32_t sfu_allocator_layer_bps(const sfu_producer_t *p, int stream);

#endif
