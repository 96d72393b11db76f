/* RTP reception statistics for one received stream (RFC 3550 appendix A.1
 * sequence validation, A.3 loss, A.8 interarrival jitter) and a 0..10
 * stream score. No syscalls; arrival times are passed in (milliseconds). */
#ifndef SFU_RTP_STATS_H
#define SFU_RTP_STATS_H

#include <stddef.h>
#include <stdint.h>

#define SFU_RTP_SEQ_MOD (1u << 16)
#define SFU_RTP_MIN_SEQUENTIAL 2
#define SFU_RTP_MAX_DROPOUT 3000
#define SFU_RTP_MAX_MISORDER 100

/* Same layout as rtcp_build.h's sfu_report_block_t. */
typedef struct {
    uint32_t ssrc;
    uint8_t fraction_lost;   /* since the previous report, 8-bit fixed point */
    int32_t cumulative_lost; /* clamped to 24-bit signed */
    uint32_t ext_highest_seq;
    uint32_t jitter;         /* RTP timestamp units */
    uint32_t lsr;
    uint32_t dlsr;           /* 1/65536 s */
} sfu_stats_block_t;

typedef struct {
    uint32_t clock_rate;
    uint16_t max_seq;        /* highest seq number seen */
    uint32_t cycles;         /* shifted count of seq number cycles */
    uint32_t base_seq;
    uint32_t bad_seq;        /* last 'bad' seq number + 1 */
    uint32_t probation;      /* sequential packets till source is valid */
    uint32_t received;       /* packets received (valid ones) */
    uint32_t expected_prior; /* at the last report block */
    uint32_t received_prior;
    uint32_t transit;        /* relative transit time of the previous packet */
    uint32_t jitter_q4;      /* estimated jitter x16 (A.8) */
    uint8_t started;         /* a first packet was seen */
    uint8_t have_transit;
    uint8_t last_fraction_lost;    /* from the last report block */
    uint32_t last_expected_interval;
} sfu_rtp_stats_t;

void sfu_rtp_stats_init(sfu_rtp_stats_t *s, uint32_t clock_rate);

/* Feeds one received packet. Returns 1 when the packet is valid and
 * counted, 0 while the source is on probation or after a large jump not
 * (yet) confirmed by a second packet (A.1 update_seq). Jitter is updated
 * for every counted packet (A.8: arrival converted to clock_rate units). */
int sfu_rtp_stats_update(sfu_rtp_stats_t *s, uint16_t seq, uint32_t rtp_ts, uint64_t arrival_ms);

/* Fills a report block (A.3) and starts a new reporting interval for the
 * fraction lost. lsr: middle 32 bits of the NTP timestamp of the last SR
 * received from this source (0 if none), last_sr_arrival_ms: when it was
 * received; dlsr is (now - then) in 1/65536 s, 0 when lsr is 0. Returns 1,
 * or 0 when no valid packet was counted yet (block zeroed but for ssrc). */
int sfu_rtp_stats_report_block(sfu_rtp_stats_t *s, uint32_t ssrc, uint64_t now_ms, uint32_t lsr,
                               uint64_t last_sr_arrival_ms, sfu_stats_block_t *out);

uint32_t sfu_rtp_stats_ext_highest_seq(const sfu_rtp_stats_t *s);
uint32_t sfu_rtp_stats_expected(const sfu_rtp_stats_t *s);
uint32_t sfu_rtp_stats_received(const sfu_rtp_stats_t *s);
/* expected - received (negative with duplicates), not clamped. */
int64_t sfu_rtp_stats_packets_lost(const sfu_rtp_stats_t *s);
/* Interarrival jitter in RTP timestamp units. */
uint32_t sfu_rtp_stats_jitter(const sfu_rtp_stats_t *s);
/* Jitter in milliseconds (0 when clock_rate is 0). */
uint32_t sfu_rtp_stats_jitter_ms(const sfu_rtp_stats_t *s);

/* Stream score 0..10, mediasoup-like:
 *   loss      = fraction_lost_recent / 256 (the fraction lost of the last
 *               interval); when expected_recent > 0 the packets repaired by
 *               retransmission are taken off:
 *               lost = loss * expected_recent - repaired_recent (>= 0),
 *               loss = lost / expected_recent
 *   delivered = 1 - loss
 *   score     = round(10 * delivered^4)
 * So 0% -> 10, 1% -> 10, 2% -> 9, 5% -> 8, 10% -> 7, 20% -> 4,
 * 30% -> 2, 50% -> 1, 100% -> 0. */
int sfu_stream_score(uint8_t fraction_lost_recent, uint32_t expected_recent, uint32_t repaired_recent);

/* The score of the last report interval (10 before any report). */
int sfu_rtp_stats_score(const sfu_rtp_stats_t *s, uint32_t repaired_recent);

#endif
