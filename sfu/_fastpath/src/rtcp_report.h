/* SR (RFC 3550 section 6.4.1): header (RC, PT 200), SSRC, NTP timestamp
 *   (64 bits), RTP timestamp, sender's packet count, octet count, then RC
 *   report blocks. RR (6.4.2): header (RC, PT 201), SSRC, RC report blocks.
 *   Report block, 24 bytes: SSRC | fraction lost (8) | cumulative lost (24,
 *   signed) | extended highest seq | jitter | LSR | DLSR.
 *
 * Builders write into out[0..cap) and return the byte length or a negative
 * SFU_RB_E* code (nothing useful is written then). Parsers read only inside
 * [pkt, pkt+len) and return a count/0 or a negative code.
 */
#ifndef SFU_RTCP_REPORT_H
#define SFU_RTCP_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "rtcp.h"

#define SFU_RTCP_REPORT_BLOCK_SIZE 24
#define SFU_RTCP_MAX_REPORT_BLOCKS 31

typedef struct {
    uint32_t ssrc;
    uint8_t fraction_lost;
    int32_t cumulative_lost; /* 24-bit signed on the wire (clamped when built) */
    uint32_t ext_highest_seq, jitter, lsr, dlsr;
} sfu_report_block_t;

/* n in 0..31 */
int sfu_rtcp_build_rr(uint8_t *out, size_t cap, uint32_t sender_ssrc,
                      const sfu_report_block_t *blocks, int n);
int sfu_rtcp_build_sr(uint8_t *out, size_t cap, uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts,
                      uint32_t packets, uint32_t octets, const sfu_report_block_t *blocks, int n);
/* Returns 0 and the sender info (any output pointer may be NULL). */
int sfu_rtcp_parse_sr(const uint8_t *pkt, size_t len, uint32_t *ssrc, uint64_t *ntp,
                      uint32_t *rtp_ts, uint32_t *packets, uint32_t *octets);
/* Report blocks of one SR or RR: returns min(RC, max) blocks written. */
int sfu_rtcp_parse_report_blocks(const uint8_t *pkt, size_t len, sfu_report_block_t *out, int max);

/* ---- NTP (RFC 3550 section 4) */

#define SFU_NTP_UNIX_OFFSET 2208988800ULL /* seconds 1900-01-01 .. 1970-01-01 */

/* 64-bit NTP timestamp (32.32 fixed point seconds since 1900) of a Unix time. */
static inline uint64_t sfu_ntp_from_ms(uint64_t unix_ms)
{
    uint64_t secs = unix_ms / 1000 + SFU_NTP_UNIX_OFFSET;
    uint64_t frac = ((unix_ms % 1000) << 32) / 1000;
    return (secs << 32) | frac;
}

/* Unix milliseconds of a 64-bit NTP timestamp (fraction rounded to nearest,
 * so that sfu_ntp_to_ms(sfu_ntp_from_ms(ms)) == ms). */
static inline uint64_t sfu_ntp_to_ms(uint64_t ntp)
{
    uint64_t secs = (ntp >> 32) - SFU_NTP_UNIX_OFFSET;
    return secs * 1000 + (((ntp & 0xffffffffu) * 1000 + 0x80000000u) >> 32);
}

/* The middle 32 bits (16.16 seconds), as in LSR / DLSR. */
static inline uint32_t sfu_ntp_compact(uint64_t ntp)
{
    return (uint32_t)(ntp >> 16);
}

/* RTT in ms from a report block (RFC 3550 section 6.4.1): now (compact NTP of
 * the arrival) - LSR - DLSR. 0 if LSR is 0 (no SR received) or negative. */
static inline uint32_t sfu_rtcp_rtt_ms(uint32_t now_compact, uint32_t lsr, uint32_t dlsr)
{
    if (lsr == 0)
        return 0;
    int32_t d = (int32_t)(now_compact - lsr - dlsr);
    if (d <= 0)
        return 0;
    return (uint32_t)(((uint64_t)d * 1000) >> 16);
}

#endif
