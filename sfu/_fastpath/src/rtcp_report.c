/* Sender and receiver reports (rtcp_report.h). */
#include "rtcp_report.h"

#include <string.h>

#include "sfu_bytes.h"

static void write_block(uint8_t *p, const sfu_report_block_t *b)
{
    int32_t lost = b->cumulative_lost;
    if (lost > 0x7fffff)
        lost = 0x7fffff;
    if (lost < -0x800000)
        lost = -0x800000;
    sfu_store_be32(p, b->ssrc);
    p[4] = b->fraction_lost;
    sfu_store_be24(p + 5, (uint32_t)lost & 0xffffff);
    sfu_store_be32(p + 8, b->ext_highest_seq);
    sfu_store_be32(p + 12, b->jitter);
    sfu_store_be32(p + 16, b->lsr);
    sfu_store_be32(p + 20, b->dlsr);
}

static void read_block(const uint8_t *p, sfu_report_block_t *b)
{
    b->ssrc = sfu_load_be32(p);
    b->fraction_lost = p[4];
    uint32_t lost = sfu_load_be24(p + 5);
    b->cumulative_lost = (lost & 0x800000) ? (int32_t)lost - 0x1000000 : (int32_t)lost;
    b->ext_highest_seq = sfu_load_be32(p + 8);
    b->jitter = sfu_load_be32(p + 12);
    b->lsr = sfu_load_be32(p + 16);
    b->dlsr = sfu_load_be32(p + 20);
}

int sfu_rtcp_build_rr(uint8_t *out, size_t cap, uint32_t sender_ssrc,
                      const sfu_report_block_t *blocks, int n)
{
    if (!out || n < 0 || n > SFU_RTCP_MAX_REPORT_BLOCKS || (n > 0 && !blocks))
        return SFU_RB_EINVAL;
    size_t total = 8 + (size_t)n * SFU_RTCP_REPORT_BLOCK_SIZE;
    if (total > cap)
        return SFU_RB_ENO_ROOM;
    sfu_rtcp_header(out, (uint8_t)n, SFU_RTCP_RR, total);
    sfu_store_be32(out + 4, sender_ssrc);
    for (int i = 0; i < n; i++)
        write_block(out + 8 + (size_t)i * SFU_RTCP_REPORT_BLOCK_SIZE, &blocks[i]);
    return (int)total;
}

int sfu_rtcp_build_sr(uint8_t *out, size_t cap, uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts,
                      uint32_t packets, uint32_t octets, const sfu_report_block_t *blocks, int n)
{
    if (!out || n < 0 || n > SFU_RTCP_MAX_REPORT_BLOCKS || (n > 0 && !blocks))
        return SFU_RB_EINVAL;
    size_t total = 28 + (size_t)n * SFU_RTCP_REPORT_BLOCK_SIZE;
    if (total > cap)
        return SFU_RB_ENO_ROOM;
    sfu_rtcp_header(out, (uint8_t)n, SFU_RTCP_SR, total);
    sfu_store_be32(out + 4, ssrc);
    sfu_store_be32(out + 8, (uint32_t)(ntp >> 32));
    sfu_store_be32(out + 12, (uint32_t)ntp);
    sfu_store_be32(out + 16, rtp_ts);
    sfu_store_be32(out + 20, packets);
    sfu_store_be32(out + 24, octets);
    for (int i = 0; i < n; i++)
        write_block(out + 28 + (size_t)i * SFU_RTCP_REPORT_BLOCK_SIZE, &blocks[i]);
    return (int)total;
}

int sfu_rtcp_parse_sr(const uint8_t *pkt, size_t len, uint32_t *ssrc, uint64_t *ntp,
                      uint32_t *rtp_ts, uint32_t *packets, uint32_t *octets)
{
    size_t body;
    int rc = sfu_rtcp_check(pkt, len, SFU_RTCP_SR, &body);
    if (rc < 0)
        return rc;
    if (body < 28)
        return SFU_RB_ETOO_SHORT;
    if (28 + (size_t)(pkt[0] & 0x1f) * SFU_RTCP_REPORT_BLOCK_SIZE > body)
        return SFU_RB_ELENGTH;
    if (ssrc)
        *ssrc = sfu_load_be32(pkt + 4);
    if (ntp)
        *ntp = ((uint64_t)sfu_load_be32(pkt + 8) << 32) | sfu_load_be32(pkt + 12);
    if (rtp_ts)
        *rtp_ts = sfu_load_be32(pkt + 16);
    if (packets)
        *packets = sfu_load_be32(pkt + 20);
    if (octets)
        *octets = sfu_load_be32(pkt + 24);
    return 0;
}

int sfu_rtcp_parse_report_blocks(const uint8_t *pkt, size_t len, sfu_report_block_t *out, int max)
{
    if (!pkt || len < 2)
        return SFU_RB_ETOO_SHORT;
    uint8_t pt = pkt[1];
    if (pt != SFU_RTCP_SR && pt != SFU_RTCP_RR)
        return SFU_RB_ETYPE;
    size_t body;
    int rc = sfu_rtcp_check(pkt, len, pt, &body);
    if (rc < 0)
        return rc;
    size_t first = pt == SFU_RTCP_SR ? 28 : 8;
    int count = pkt[0] & 0x1f;
    if (body < first || first + (size_t)count * SFU_RTCP_REPORT_BLOCK_SIZE > body)
        return SFU_RB_ELENGTH;
    int n = 0;
    for (; n < count && n < max; n++)
        read_block(pkt + first + (size_t)n * SFU_RTCP_REPORT_BLOCK_SIZE, &out[n]);
    return n;
}

