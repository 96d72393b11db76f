/* Round-trip time to one remote peer, measured from our side with RTCP
 * timestamps the peer echoes back, one estimator per transport.
 *
 * Two sources, both "now - echoed timestamp - the peer's holding delay" in
 * compact NTP units (the middle 32 bits of a 64-bit NTP time: 16.16 fixed
 * point seconds, 1/65536 s), computed in 32-bit wrapping arithmetic so the
 * wrap of the middle 32 bits every 65536 s (~18.2 h) does not matter:
 *
 *  - DLRR (RFC 3611 4.5), the answer to the RRTR blocks (4.4) we send with
 *    our receiver reports: RTT = A - LRR - DLRR, A the compact NTP time of
 *    the DLRR's arrival. This is the source toward a publisher, to which we
 *    send no media (no SR, so no LSR/DLSR from it). Each RRTR we send is
 *    remembered (sfu_rtt_on_rrtr_sent, SFU_RTT_HISTORY of them); a DLRR
 *    whose LRR is not one of them, or whose RRTR already gave a sample, or
 *    is older than SFU_RTT_MAX_AGE_MS, gives no sample. Repeated answers to
 *    one RRTR reuse the same forward transit, so only the first counts.
 *  - Report blocks (RFC 3550 6.4.1) about our SRs, on a transport that also
 *    carries our consumers: RTT = A - LSR - DLSR. LSR 0 means the peer has
 *    no SR of ours; an LSR already used (the peer repeats it until our next
 *    SR reaches it) gives no new sample. LSRs are not matched against the
 *    SRs we sent (those are per consumer stream, not per transport): the
 *    bounds below are their only check. Feed at most one block per received
 *    RR/SR packet (e.g. the one with the newest LSR), or one packet fills
 *    the window.
 *
 * A result below -1 ms (-66 units) or above SFU_RTT_MAX_MS is refused (a
 * peer's bug, a foreign timestamp); one between -1 ms and 0 is the
 * rounding of the peer's 1/65536 s delay on a near-zero path and counts
 * as 0.
 *
 * Smoothing: rtt_ms is the median of the last SFU_RTT_WINDOW (5) samples
 * (of an even count, the lower middle one), rounded to ms and at least 1.
 * Samples come at RTCP rate (about one a second), not per packet as in
 * TCP, and RTCP-derived samples have occasional upward outliers (a report
 * queued behind a media burst in the peer's pacer, a late RTCP thread). A
 * median of 5 ignores up to 2 outliers outright and follows a step change
 * after 3 samples; an RFC 6298 SRTT (alpha 1/8) would move only 33% of a
 * step after 3 samples (16 samples for 88%) and carries every outlier
 * into the estimate for many seconds. NACK retry timing wants the typical
 * current RTT, which the median is.
 *
 * Sans-IO: time is passed in (now_ms, monotonic; NTP compact values from
 * the same clock the RRTRs/SRs were stamped with). No malloc, no syscalls.
 */
#ifndef SFU_RTT_H
#define SFU_RTT_H

#include <stdint.h>

#define SFU_RTT_HISTORY 32        /* RRTRs remembered: 32 s of RRs at 1/s */
#define SFU_RTT_WINDOW 5          /* samples in the median */
#define SFU_RTT_LSR_SEEN 8        /* LSRs remembered to skip repeats */
#define SFU_RTT_MAX_MS 10000      /* larger results are refused */
#define SFU_RTT_MAX_AGE_MS 60000  /* a DLRR for an older RRTR is refused */
#define SFU_RTT_NEG_TOLERANCE 66  /* 1/65536 s units (~1 ms) below 0 taken as 0 */

enum {
    SFU_RTT_ENO_TIMESTAMP = -1, /* LRR / LSR is 0: the peer has none of ours */
    SFU_RTT_EUNKNOWN = -2,      /* LRR is not an RRTR we sent (or forgotten) */
    SFU_RTT_EDUPLICATE = -3,    /* that RRTR / LSR already gave a sample */
    SFU_RTT_ESTALE = -4,        /* that RRTR is older than SFU_RTT_MAX_AGE_MS */
    SFU_RTT_ENEGATIVE = -5,     /* result below -1 ms */
    SFU_RTT_ETOO_LARGE = -6,    /* result above SFU_RTT_MAX_MS */
};

typedef struct {
    uint64_t sent_ms; /* now_ms when sent */
    uint32_t ntp;     /* compact NTP of the RRTR we sent */
    uint8_t valid;
    uint8_t used;     /* a DLRR for it gave a sample */
} sfu_rtt_sent_t;

typedef struct {
    sfu_rtt_sent_t sent[SFU_RTT_HISTORY]; /* ring, next = oldest */
    uint32_t sent_next;
    uint32_t lsr_seen[SFU_RTT_LSR_SEEN]; /* ring of LSRs that gave a sample */
    uint32_t lsr_next;
    uint32_t window_us[SFU_RTT_WINDOW];  /* ring of the last samples, us */
    uint32_t window_n, window_next;
    uint32_t rtt_ms;     /* median of the window; 0 = no sample yet */
    uint32_t last_us;    /* last accepted sample */
    uint64_t samples;    /* accepted samples (both sources) */
    uint64_t rejected;   /* refused DLRRs / blocks (not counting ENO_TIMESTAMP) */
} sfu_rtt_t;

void sfu_rtt_init(sfu_rtt_t *r);

/* We sent an RRTR stamped with this compact NTP time (sfu_ntp_compact of
 * the 64-bit NTP written into it) at now_ms. */
void sfu_rtt_on_rrtr_sent(sfu_rtt_t *r, uint32_t ntp_compact, uint64_t now_ms);

/* A DLRR sub-block addressed to us (its SSRC is the SSRC of our XR
 * packets) arrived at now_ms, compact NTP now_compact. Returns the sample
 * in microseconds (>= 0; rtt_ms updated), or a negative SFU_RTT_E* code. */
int sfu_rtt_on_dlrr(sfu_rtt_t *r, uint32_t lrr, uint32_t dlrr, uint32_t now_compact, uint64_t now_ms);

/* A report block about one of our SRs (LSR/DLSR) arrived at compact NTP
 * now_compact. Returns the sample in us or a negative SFU_RTT_E* code. */
int sfu_rtt_on_report_block(sfu_rtt_t *r, uint32_t lsr, uint32_t dlsr, uint32_t now_compact);

/* Smoothed RTT in ms, 0 = unknown (the convention of nack.h's rtt_ms). */
static inline uint32_t sfu_rtt_ms(const sfu_rtt_t *r)
{
    return r->rtt_ms;
}

#endif
