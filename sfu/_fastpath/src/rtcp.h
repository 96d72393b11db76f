/* RTCP compound packets (RFC 3550 section 6, RFC 4585 section 6, RFC 5506).
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P|  count  |      PT       |             length            |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Validation follows RFC 3550 appendix A.2, relaxed for reduced-size RTCP
 * (RFC 5506): any packet type may come first, every packet must have
 * version 2 and fit, only the last may carry padding, and SR/RR/BYE/
 * feedback packets must be long enough for what their header announces.
 */
#ifndef SFU_RTCP_H
#define SFU_RTCP_H

#include <stddef.h>
#include <stdint.h>
#include "sfu_bytes.h"

#define SFU_RTCP_SR 200
#define SFU_RTCP_RR 201
#define SFU_RTCP_SDES 202
#define SFU_RTCP_BYE 203
#define SFU_RTCP_APP 204
#define SFU_RTCP_RTPFB 205
#define SFU_RTCP_PSFB 206
#define SFU_RTCP_XR 207

#define SFU_RTCP_MAX_ITEMS 64

/* Codes of the per-type builders and parsers (rtcp_nack.h, rtcp_report.h,
 * rtcp_pli.h, rtcp_fir.h, rtx.h). */
enum {
    SFU_RB_ENO_ROOM = -20,   /* caller buffer too small */
    SFU_RB_EINVAL = -21,     /* bad argument (n out of range, ...) */
    SFU_RB_ETOO_SHORT = -22, /* packet shorter than its fixed part */
    SFU_RB_EVERSION = -23,   /* version is not 2 */
    SFU_RB_ETYPE = -24,      /* wrong packet type / FMT */
    SFU_RB_ELENGTH = -25,    /* length field or count does not fit the bytes */
};


enum {
    SFU_RTCP_OK = 0,
    SFU_RTCP_ETOO_SHORT = -1,
    SFU_RTCP_EVERSION = -2,
    SFU_RTCP_ELENGTH = -3,
    SFU_RTCP_EPADDING = -4,
    SFU_RTCP_ETYPE = -5,
    SFU_RTCP_ECOUNT = -6,
    SFU_RTCP_ETOO_MANY = -7,
};

typedef struct {
    uint8_t packet_type;
    uint8_t count;       /* RC / SC / FMT field */
    uint8_t padding;     /* P bit */
    uint32_t offset;     /* offset of the packet's first byte */
    uint32_t length;     /* bytes, header included, padding included */
} sfu_rtcp_item_t;

/* Splits and validates a compound packet. Returns the number of packets
 * (>= 1) written to items, or a negative SFU_RTCP_E* code. */
int sfu_rtcp_parse_compound(const uint8_t *buf, size_t len, sfu_rtcp_item_t *items, int max);

/* The SSRC of the sender of an RTCP packet (bytes 4..7); 0 when absent. */
static inline uint32_t sfu_rtcp_sender_ssrc(const uint8_t *buf, const sfu_rtcp_item_t *it)
{
    return it->length >= 8 ? sfu_load_be32(buf + it->offset + 4) : 0;
}

/* Writes an RTCP common header: V=2, count (RC/FMT), PT, length of `total` bytes. */
static inline void sfu_rtcp_header(uint8_t *p, uint8_t count, uint8_t pt, size_t total)
{
    p[0] = (uint8_t)(0x80 | (count & 0x1f));
    p[1] = pt;
    sfu_store_be16(p + 2, (uint16_t)(total / 4 - 1));
}

/* Checks version, type and the length field of one RTCP packet; sets its
 * length in bytes (header included, padding excluded) and returns 0, or a
 * negative SFU_RB_* code. */
int sfu_rtcp_check(const uint8_t *pkt, size_t len, uint8_t pt, size_t *body_len);

#endif
