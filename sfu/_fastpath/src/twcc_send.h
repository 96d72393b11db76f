/* Transport-wide congestion control, sender side: the send history.
 *
 * Every packet we send on a transport that negotiated transport-cc gets a
 * 16-bit transport-wide sequence number (sfu_twcc_send_next, written in its
 * header extension with sfu_twcc_write_ext). The history remembers, for the
 * last SFU_TWCC_SEND_HISTORY of them, when it was sent, its size on the
 * wire and its probe cluster. A transport-cc feedback from the remote
 * (RTPFB FMT=15, parsed by sfu_twcc_parse_feedback of twcc.c) is turned
 * into one sfu_twcc_result_t per packet it reports that is still in the
 * history: send time, size and the remote's arrival time (or -1 = lost),
 * the input of the bandwidth estimator (gcc.h).
 *
 * Arrival times: the feedback's reference time (24 bits, signed, 64 ms
 * units) plus the cumulative 250-us deltas, in the remote's clock (any
 * epoch: only differences matter). The reference time is unwrapped against
 * the previous feedback's, so its 24-bit wrap does not jump.
 *
 * Each packet is reported to the caller once as received; a packet reported
 * lost can later be reported received (a late arrival the remote reports
 * again), a packet reported received is never reported again, as lost or
 * received. A feedback whose feedback packet count was already seen (a
 * duplicate, or one older than the last 64) is ignored.
 *
 * No syscalls, no allocation; times are passed in (microseconds).
 */
#ifndef SFU_TWCC_SEND_H
#define SFU_TWCC_SEND_H

#include <stddef.h>
#include <stdint.h>

#include "twcc.h"

#define SFU_TWCC_SEND_HISTORY 4096 /* power of two */

/* sfu_twcc_send_on_feedback's errors: the SFU_TWCC_E* codes of twcc.h
 * (malformed packet, or more than SFU_TWCC_SEND_HISTORY statuses). */

typedef struct {
    int64_t send_us;        /* when we sent it */
    int64_t recv_us;        /* remote arrival time (remote clock, us), -1 = reported lost */
    uint32_t size;          /* bytes on the wire (after SRTP) */
    uint16_t probe_cluster; /* 0 = not a probe */
} sfu_twcc_result_t;

enum { SFU_TWCC_SENT_UNREPORTED = 0, SFU_TWCC_SENT_LOST = 1, SFU_TWCC_SENT_RECEIVED = 2 };

typedef struct {
    int64_t seq;            /* unwrapped sequence number held by the slot, -1 = none */
    int64_t send_us;
    uint32_t size;
    uint16_t probe_cluster;
    uint8_t state;          /* SFU_TWCC_SENT_* */
} sfu_twcc_sent_t;

typedef struct {
    sfu_twcc_sent_t ring[SFU_TWCC_SEND_HISTORY];
    int64_t next_seq;       /* unwrapped sequence number of the next packet */
    /* feedback packet counts seen: the highest (unwrapped) and a bitmap of
     * it and the 63 before it (bit i = highest - i) */
    int64_t fb_highest;
    uint64_t fb_seen;
    uint8_t fb_started;
    uint8_t fb_stale_run;   /* consecutive feedbacks refused as too old */
    uint8_t ref_started;
    int64_t ref_last;       /* unwrapped reference time of the last feedback (64 ms units) */
    /* scratch of the parser (kept here, not on the stack) */
    uint8_t statuses[SFU_TWCC_SEND_HISTORY];
    int32_t deltas[SFU_TWCC_SEND_HISTORY];
    /* counters (stats, tests) */
    uint64_t sent;
    uint64_t feedbacks;       /* accepted */
    uint64_t fb_duplicates;   /* ignored: count already seen or too old */
    uint64_t fb_malformed;
    uint64_t reported_received;
    uint64_t reported_lost;
    uint64_t recovered;       /* reported lost, then received */
    uint64_t unknown;         /* statuses about packets not in the history (too old, never sent) */
    uint64_t repeated;        /* statuses about packets already reported received */
} sfu_twcc_send_t;

void sfu_twcc_send_init(sfu_twcc_send_t *s);

/* Registers a packet about to be sent; returns the 16-bit transport-wide
 * sequence number to write in its extension. */
uint16_t sfu_twcc_send_next(sfu_twcc_send_t *s, int64_t send_us, uint32_t size, uint16_t probe_cluster);

/* Parses one transport-cc feedback packet (the RTCP packet, bytes from the
 * wire) and writes one result per packet it reports that is still in the
 * history and not already reported (see above), in sequence order, at most
 * max. Returns the count (0..max), or a negative SFU_TWCC_E* code for a
 * malformed packet (nothing changes then). A feedback ignored as a
 * duplicate returns 0. */
int sfu_twcc_send_on_feedback(sfu_twcc_send_t *s, const uint8_t *pkt, size_t len, sfu_twcc_result_t *out,
                              int max);

/* writes the 2-byte extension data (big-endian) */
static inline void sfu_twcc_write_ext(uint8_t *p, uint16_t seq)
{
    p[0] = (uint8_t)(seq >> 8);
    p[1] = (uint8_t)seq;
}

#endif
