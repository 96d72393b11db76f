/* RTCP builders and parsers for loss recovery and reports, and RTX.
 *
 *   Generic NACK (RFC 4585 section 6.2.1): RTPFB (PT 205), FMT 1
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P| FMT=1   |    PT=205     |          length               |
 * |                  SSRC of packet sender                        |
 * |                  SSRC of media source                         |
 * |            PID                |             BLP               |  (FCI, repeated)
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   PID lost, and PID+i+1 lost for each bit i (LSB = 0) set in BLP.
 *
 *   SR (RFC 3550 section 6.4.1): header (RC, PT 200), SSRC, NTP timestamp
 *   (64 bits), RTP timestamp, sender's packet count, octet count, then RC
 *   report blocks. RR (6.4.2): header (RC, PT 201), SSRC, RC report blocks.
 *   Report block, 24 bytes: SSRC | fraction lost (8) | cumulative lost (24,
 *   signed) | extended highest seq | jitter | LSR | DLSR.
 *
 *   RTX (RFC 4588 section 4): RTP header of the RTX stream (its PT, SSRC
 *   and seq; marker, timestamp, CSRCs and header extensions of the original)
 *   | OSN (original seq, 16 bits) | original payload.
 *
 * Builders write into out[0..cap) and return the byte length or a negative
 * SFU_RB_E* code (nothing useful is written then). Parsers read only inside
 * [pkt, pkt+len) and return a count/0 or a negative code.
 */
#ifndef SFU_RTCP_BUILD_H
#define SFU_RTCP_BUILD_H

#include <stddef.h>
#include <stdint.h>

enum {
    SFU_RB_ENO_ROOM = -20,   /* caller buffer too small */
    SFU_RB_EINVAL = -21,     /* bad argument (n out of range, ...) */
    SFU_RB_ETOO_SHORT = -22, /* packet shorter than its fixed part */
    SFU_RB_EVERSION = -23,   /* version is not 2 */
    SFU_RB_ETYPE = -24,      /* wrong packet type / FMT */
    SFU_RB_ELENGTH = -25,    /* length field or count does not fit the bytes */
};
/* The RTX functions return the SFU_RTP_E* codes of rtp.h for a malformed
 * RTP packet (all in -1..-8), SFU_RB_* otherwise. */

#define SFU_RTCP_REPORT_BLOCK_SIZE 24
#define SFU_RTCP_MAX_REPORT_BLOCKS 31
#define SFU_RTCP_FMT_NACK 1

typedef struct {
    uint32_t ssrc;
    uint8_t fraction_lost;
    int32_t cumulative_lost; /* 24-bit signed on the wire (clamped when built) */
    uint32_t ext_highest_seq, jitter, lsr, dlsr;
} sfu_report_block_t;

/* ---- generic NACK */

/* seqs: any order, duplicates and wrap-around allowed (grouping starts after
 * the largest circular gap between the numbers, so a set straddling 65535->0
 * comes out in serial order). n >= 1. Length 12 + 4 * (number of FCIs);
 * SFU_RB_ENO_ROOM if they do not all fit. */
int sfu_rtcp_build_nack(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                        const uint16_t *seqs, int n);
/* One RTPFB FMT=1 packet (len may exceed its length field: the rest is
 * ignored). Writes up to max numbers (PID, then its BLP bits in order) and
 * returns the count written; the FCIs beyond max are ignored. */
int sfu_rtcp_parse_nack(const uint8_t *pkt, size_t len, uint16_t *out, int max);
/* Media source SSRC of a feedback packet (bytes 8..11), 0 if len < 12. */
uint32_t sfu_rtcp_nack_media_ssrc(const uint8_t *pkt, size_t len);

/* ---- SR / RR (n in 0..31) */

int sfu_rtcp_build_rr(uint8_t *out, size_t cap, uint32_t sender_ssrc,
                      const sfu_report_block_t *blocks, int n);
int sfu_rtcp_build_sr(uint8_t *out, size_t cap, uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts,
                      uint32_t packets, uint32_t octets, const sfu_report_block_t *blocks, int n);
/* Returns 0 and the sender info (any output pointer may be NULL). */
int sfu_rtcp_parse_sr(const uint8_t *pkt, size_t len, uint32_t *ssrc, uint64_t *ntp,
                      uint32_t *rtp_ts, uint32_t *packets, uint32_t *octets);
/* Report blocks of one SR or RR: returns min(RC, max) blocks written. */
int sfu_rtcp_parse_report_blocks(const uint8_t *pkt, size_t len, sfu_report_block_t *out, int max);

/* ---- RTX (RFC 4588). The packet is rewritten in place. */

/* Makes an RTX packet of an RTP packet: inserts the OSN before the payload,
 * sets PT, SSRC and seq; keeps marker, timestamp, CSRCs and header
 * extensions; drops padding (P cleared). Needs cap >= header + 2 + payload.
 * Returns 0. */
int sfu_rtx_encapsulate(uint8_t *pkt, size_t *len, size_t cap, uint8_t rtx_pt, uint32_t rtx_ssrc,
                        uint16_t rtx_seq);
/* The original packet of an RTX packet: removes the OSN, sets seq = OSN, PT
 * and SSRC; keeps padding. Returns the OSN (0..65535), SFU_RB_ETOO_SHORT if
 * the payload is shorter than 2 bytes. */
int sfu_rtx_decapsulate(uint8_t *pkt, size_t *len, uint8_t media_pt, uint32_t media_ssrc);

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
