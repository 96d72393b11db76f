/* What wakes the I/O thread: the engine's timer deadline.
 *
 * Every unit with time-driven work keeps its own deadline:
 *   - NACK retries of a producer stream: sfu_nack_next_deadline_ms()
 *     (a retry one RTT after the last NACK, or the entry's expiry);
 *   - keyframe-request retries for consumers still waiting for a keyframe:
 *     the last request + max(SFU_KEYFRAME_RETRY_MS, the request interval),
 *     or the next packet of the publisher when that time has passed but the
 *     publisher has been silent since (st->kf_retry_wait);
 *   - deferred keyframe requests (kf_pending): the last request + the
 *     request interval;
 *   - REMB toward a producer: the last REMB + SFU_REMB_INTERVAL_MS while
 *     consumers have live estimates, at once on a drop of more than 25%;
 *   - transport-cc feedback while arrivals are unreported: the last
 *     feedback + SFU_TWCC_INTERVAL_MS;
 *   - SR/RR and rates, per transport: the last report + SFU_RTCP_INTERVAL_MS;
 *     a new transport joins the round of the others (e->rr_round_ms), so
 *     reports cost one pass a second whatever the number of transports.
 *
 * The engine caches the soonest of them in e->next_deadline_ms (UINT64_MAX:
 * nothing scheduled). sfu_engine_tick() returns at once, without looking at
 * any unit, while now < next_deadline_ms; otherwise it runs what is due in
 * every unit and recomputes the minimum. Whatever creates timer work between
 * two ticks (a new NACK hole, a REMB drop, the first transport-cc arrival, a
 * new transport, a consumer that waits for a keyframe, a deferred keyframe
 * request) calls sfu_timer_pull() with the time it becomes due: a cached
 * deadline may be too early (the tick then finds nothing due and recomputes)
 * but never too late.
 *
 * The I/O thread (io.c) sleeps in epoll_wait for the tick's answer, at most
 * SFU_TIMER_MAX_WAIT_MS, and publishes the time it will wake in
 * e->io_wake_ms (0 while it is awake and holds the lock, and when it does not
 * run). A pull from a control call (Python, lock held) earlier than that
 * writes the engine's eventfd (e->stop_fd, which also stops the thread) so
 * the thread wakes and ticks at once; pulls on the I/O thread itself (the
 * per-packet path) cost one comparison and never a syscall.
 */
#ifndef SFU_TIMERS_H
#define SFU_TIMERS_H

#include <stdint.h>

#include "engine.h"

#define SFU_TIMER_NONE UINT64_MAX
#define SFU_TIMER_MAX_WAIT_MS 1000 /* longest epoll_wait of the I/O thread */

/* Writes the wake-up eventfd (engine.c). */
void sfu_timer_wake(sfu_engine_t *e);

/* Timer work becomes due at `when_ms` (0: at once). */
static inline void sfu_timer_pull(sfu_engine_t *e, uint64_t when_ms)
{
    if (when_ms < e->next_deadline_ms) {
        e->next_deadline_ms = when_ms;
        if (when_ms < e->io_wake_ms)
            sfu_timer_wake(e);
    }
}

#endif
