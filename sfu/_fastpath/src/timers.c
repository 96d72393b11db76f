/* The engine's timer work and its soonest deadline (timers.h). */
#include "timers.h"

#include <unistd.h>

#include "allocator.h"
#include "bwe.h"
#include "keyframe_policy.h"
#include "producer.h"
#include "reports.h"
#include "transport.h"

/* A control call made timer work due before the I/O thread's planned
 * wake-up. */
void sfu_timer_wake(sfu_engine_t *e)
{
    e->io_wake_ms = 0; /* one write until the thread has ticked */
    if (e->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(e->stop_fd, &one, sizeof(one));
        (void)r;
    }
}

int sfu_engine_tick(sfu_engine_t *e, uint64_t now_ms)
{
    if (now_ms >= e->next_deadline_ms) {
        /* something is due: run every unit's due work, and recompute the
         * soonest deadline from scratch (each unit pulls its own in) */
        e->counters[SFU_C_TIMER_RUNS]++;
        e->next_deadline_ms = SFU_TIMER_NONE;
        /* layer allocation first: a target it changes gets its keyframe
         * request from the producer timers below, in this same tick */
        for (uint32_t i = 1; i < e->transports.cap; i++) {
            sfu_transport_t *t = e->transports.items[i];
            if (t) {
                if (t->bwe)
                    sfu_bwe_timers(e, t, now_ms);
                sfu_allocator_timers(e, t, now_ms);
            }
        }
        sfu_keyframe_run_deferred(e, now_ms);
        for (uint32_t i = 1; i < e->producers.cap; i++) {
            sfu_producer_t *p = e->producers.items[i];
            if (p)
                sfu_producer_timers(e, p, now_ms);
        }
        for (uint32_t i = 1; i < e->transports.cap; i++) {
            sfu_transport_t *t = e->transports.items[i];
            if (t) {
                sfu_transport_timers(e, t, now_ms);
                sfu_reports_timers(e, t, now_ms);
            }
        }
    }
    if (e->next_deadline_ms == SFU_TIMER_NONE)
        return -1;
    if (e->next_deadline_ms <= now_ms)
        return 0;
    uint64_t wait = e->next_deadline_ms - now_ms;
    return wait > INT32_MAX ? INT32_MAX : (int)wait;
}
