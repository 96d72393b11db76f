/* NACK generator: receive side of generic NACK (RFC 4585 section 6.2.1),
 * one per producer stream, a fixed-size struct embedded in the stream.
 *
 * on_packet() follows the highest sequence number in 16-bit serial
 * arithmetic (RFC 1982). A jump forward lists every skipped number as
 * missing; a packet that arrives later (late original or RTX) removes its
 * entry. poll() returns the numbers to NACK now: a newly missing number at
 * once, then again each time one RTT has passed since its last NACK, at most
 * SFU_NACK_MAX_RETRIES NACKs per number. Entries past their retries (and at
 * least SFU_NACK_MIN_GIVE_UP_MS old) or older than SFU_NACK_MAX_AGE_MS are
 * dropped (gave_up) and set keyframe_needed: the frame they belonged to
 * cannot be decoded. A jump of more than
 * SFU_NACK_MAX_JUMP, or a list overflow (oldest entries are dropped), sets
 * keyframe_needed instead: a keyframe is cheaper than thousands of NACKs.
 *
 * The missing list is kept in serial order (oldest first): entries are only
 * appended for numbers newer than every listed one. Times are stored as the
 * low 32 bits of now_ms and compared by wrapping difference; no malloc, no
 * syscalls, time is passed in.
 */
#ifndef SFU_NACK_H
#define SFU_NACK_H

#include <stdint.h>

#define SFU_NACK_MAX_LIST 256
#define SFU_NACK_MAX_RETRIES 10
#define SFU_NACK_MAX_AGE_MS 1000
/* an entry out of retries is dropped (and a keyframe asked) no sooner than
 * this after it went missing: on a short RTT the retries run out in a few
 * tens of ms, before a busy publisher's retransmission comes */
#define SFU_NACK_MIN_GIVE_UP_MS 400
#define SFU_NACK_MAX_JUMP 1000
#define SFU_NACK_MIN_RTT_MS 10
#define SFU_NACK_DEFAULT_RTT_MS 100

typedef struct {
    uint32_t first_ms;   /* low 32 bits of now_ms when it went missing */
    uint32_t sent_ms;    /* low 32 bits of now_ms of the last NACK (valid if retries) */
    uint16_t seq;
    uint16_t retries;    /* NACKs sent so far */
} sfu_nack_entry_t;      /* 12 bytes */

typedef struct {
    int started;
    uint16_t highest;
    int keyframe_needed;
    uint64_t last_ms;    /* latest now_ms seen: restores the high bits of entry times */
    uint64_t nacked;     /* sequence numbers put in NACKs (retries included) */
    uint64_t recovered;  /* listed numbers that arrived by RTX */
    uint64_t late;       /* listed numbers whose original arrived late */
    uint64_t gave_up;    /* listed numbers dropped (retries, age, overflow, skipped) */
    uint64_t keyframe_requests; /* times keyframe_needed was set */
    int count;
    sfu_nack_entry_t list[SFU_NACK_MAX_LIST];
} sfu_nack_gen_t;

void sfu_nack_init(sfu_nack_gen_t *g);

/* Returns 1 for a new packet (newest so far, or filling a listed hole),
 * 0 for a duplicate or one older than anything tracked. */
int sfu_nack_on_packet(sfu_nack_gen_t *g, uint16_t seq, int is_recovered, uint64_t now_ms);

/* Writes up to max numbers to NACK now (oldest first) and returns the count.
 * rtt_ms 0 means unknown (SFU_NACK_DEFAULT_RTT_MS); below SFU_NACK_MIN_RTT_MS
 * is raised to it. Numbers due but beyond max stay due for the next poll. */
int sfu_nack_poll(sfu_nack_gen_t *g, uint64_t now_ms, uint32_t rtt_ms, uint16_t *out, int max);

/* Read-and-clear. */
int sfu_nack_keyframe_needed(sfu_nack_gen_t *g);

/* The earliest time poll() has something to do (a NACK or a drop), -1 if the
 * list is empty. May be <= now (due already). */
int64_t sfu_nack_next_deadline_ms(const sfu_nack_gen_t *g, uint32_t rtt_ms);

static inline int sfu_nack_missing_count(const sfu_nack_gen_t *g) { return g->count; }

static inline uint32_t sfu_nack_effective_rtt(uint32_t rtt_ms)
{
    if (rtt_ms == 0)
        return SFU_NACK_DEFAULT_RTT_MS;
    return rtt_ms < SFU_NACK_MIN_RTT_MS ? SFU_NACK_MIN_RTT_MS : rtt_ms;
}

#endif
