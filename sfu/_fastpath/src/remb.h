/* Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb-03).
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P| FMT=15  |   PT=206      |             length            |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                  SSRC of packet sender                        |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                  SSRC of media source (0)                     |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |  Unique identifier 'R' 'E' 'M' 'B'                            |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |  Num SSRC     | BR Exp    |  BR Mantissa                      |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |   SSRC feedback                                               |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * bitrate = mantissa << exp (bits per second). No syscalls; time is passed in.
 */
#ifndef SFU_REMB_H
#define SFU_REMB_H

#include <stddef.h>
#include <stdint.h>

enum {
    SFU_REMB_ETOO_SHORT = -1,  /* shorter than the fixed part / its SSRC list */
    SFU_REMB_EHEADER = -2,     /* not V=2, PT=206, FMT=15 */
    SFU_REMB_ENOT_REMB = -3,   /* another application-layer feedback message */
    SFU_REMB_ENO_ROOM = -4,    /* output buffer too small */
    SFU_REMB_EARG = -5,        /* bad argument (e.g. more than 255 SSRCs) */
};

#define SFU_REMB_FMT 15
#define SFU_REMB_MANTISSA_BITS 18
#define SFU_REMB_MANTISSA_MAX ((1u << SFU_REMB_MANTISSA_BITS) - 1)

/* Parses one PSFB packet (pkt points at its first byte, len bytes available;
 * the packet's own length field bounds it). On success returns the number of
 * SSRCs the packet lists (0..255), stores the bitrate in *bitrate_bps
 * (saturated to UINT64_MAX when mantissa << exp does not fit in 64 bits) and
 * the first min(return, max_ssrcs) SSRCs in ssrcs (may be NULL when
 * max_ssrcs is 0). Returns a negative SFU_REMB_E* code otherwise. */
int sfu_remb_parse(const uint8_t *pkt, size_t len, uint64_t *bitrate_bps,
                   uint32_t *ssrcs, int max_ssrcs);

/* Writes a REMB packet (20 + 4*n bytes) announcing bitrate_bps for the n
 * SSRCs. The exponent is the smallest for which the mantissa fits in 18 bits;
 * the bitrate is rounded down. Returns the length or a negative code. */
int sfu_remb_build(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t bitrate_bps,
                   const uint32_t *ssrcs, int n);

/* Encoding helpers (exposed for tests): value = mantissa << exp. */
void sfu_remb_encode_bitrate(uint64_t bitrate_bps, uint8_t *exp, uint32_t *mantissa);

/* ---- Aggregation of consumers' estimates for one producer ----
 *
 * Every consumer of a producer reports its own estimate (from its REMB, or
 * from its congestion controller). The producer is told the minimum over
 * the consumers heard from in the last SFU_REMB_EXPIRE_MS, never below the
 * floor, at most once per SFU_REMB_INTERVAL_MS, but at once when that
 * minimum dropped by more than 25% since the value last sent.
 */
#define SFU_REMB_AGG_SLOTS 64
#define SFU_REMB_EXPIRE_MS 5000
#define SFU_REMB_INTERVAL_MS 1000

typedef struct {
    uint32_t consumer_id;
    uint8_t used;
    uint64_t bitrate_bps;
    uint64_t updated_ms;
} sfu_remb_agg_entry_t;

typedef struct {
    sfu_remb_agg_entry_t entries[SFU_REMB_AGG_SLOTS];
    uint64_t last_sent_bps;
    uint64_t last_sent_ms;
    uint8_t sent_any;
} sfu_remb_agg_t;

void sfu_remb_agg_init(sfu_remb_agg_t *a);

/* Records a consumer's estimate. When every slot is taken (by consumers
 * heard from in the last SFU_REMB_EXPIRE_MS), the new value replaces the
 * highest one if it is lower, else it is dropped: the lowest values are
 * kept. Returns 1 when stored, 0 when dropped. */
int sfu_remb_agg_update(sfu_remb_agg_t *a, uint32_t consumer_id, uint64_t bitrate_bps,
                        uint64_t now_ms);

/* Forgets a consumer (closed). Returns 1 when it was present. */
int sfu_remb_agg_remove(sfu_remb_agg_t *a, uint32_t consumer_id);

/* Returns 1 and stores the bitrate to announce in *out_bps when a REMB
 * should be sent to the producer now, 0 otherwise (also when no consumer
 * has a live estimate). Expires entries older than SFU_REMB_EXPIRE_MS. */
int sfu_remb_agg_poll(sfu_remb_agg_t *a, uint64_t now_ms, uint64_t floor_bps, uint64_t *out_bps);

/* Number of live entries (for tests and stats). */
int sfu_remb_agg_count(const sfu_remb_agg_t *a);

#endif
