#include "rtcp_build.h"

#include <string.h>

#include "rtcp.h"
#include "rtp.h"
#include "sfu_bytes.h"

static inline void rtcp_header(uint8_t *p, uint8_t count, uint8_t pt, size_t total)
{
    p[0] = (uint8_t)(0x80 | (count & 0x1f));
    p[1] = pt;
    sfu_store_be16(p + 2, (uint16_t)(total / 4 - 1));
}

/* Checks version, type and the length field of one RTCP packet; returns its
 * length in bytes (header included, padding excluded) or a negative code. */
static int rtcp_check(const uint8_t *pkt, size_t len, uint8_t pt, size_t *body_len)
{
    if (!pkt || len < 4)
        return SFU_RB_ETOO_SHORT;
    if ((pkt[0] >> 6) != 2)
        return SFU_RB_EVERSION;
    if (pkt[1] != pt)
        return SFU_RB_ETYPE;
    size_t total = ((size_t)sfu_load_be16(pkt + 2) + 1) * 4;
    if (total > len)
        return SFU_RB_ELENGTH;
    size_t pad = 0;
    if (pkt[0] & 0x20) {
        pad = pkt[total - 1];
        if (pad == 0 || pad > total - 4)
            return SFU_RB_ELENGTH;
    }
    *body_len = total - pad;
    return 0;
}

/* ---------------------------------------------------------------- NACK */

#define NACK_WORDS (65536 / 64)

/* First set bit at or after `from` (linear), -1 if none. */
static int bitmap_next(const uint64_t *bm, int from)
{
    if (from >= 65536)
        return -1;
    int w = from >> 6;
    uint64_t word = bm[w] & (~0ULL << (from & 63));
    for (;;) {
        if (word)
            return (w << 6) + __builtin_ctzll(word);
        if (++w >= NACK_WORDS)
            return -1;
        word = bm[w];
    }
}

static inline int bitmap_test(const uint64_t *bm, uint16_t s) { return (bm[s >> 6] >> (s & 63)) & 1; }
static inline void bitmap_clear(uint64_t *bm, uint16_t s) { bm[s >> 6] &= ~(1ULL << (s & 63)); }

int sfu_rtcp_build_nack(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                        const uint16_t *seqs, int n)
{
    if (!out || !seqs || n <= 0)
        return SFU_RB_EINVAL;
    if (cap < 16)
        return SFU_RB_ENO_ROOM;
    uint64_t bm[NACK_WORDS]; /* 8 KiB: dedups and orders the numbers */
    memset(bm, 0, sizeof(bm));
    for (int i = 0; i < n; i++)
        bm[seqs[i] >> 6] |= 1ULL << (seqs[i] & 63);

    /* Start after the largest circular gap between consecutive numbers. */
    int first = bitmap_next(bm, 0), prev = first, start = first, best_gap = -1, count = 0;
    for (int s = first; s >= 0; s = bitmap_next(bm, s + 1)) {
        count++;
        if (s != first && s - prev > best_gap) {
            best_gap = s - prev;
            start = s;
        }
        prev = s;
    }
    if (first + 65536 - prev > best_gap) /* gap from the last back to the first */
        start = first;

    size_t pos = 12;
    int pos_seq = start;
    while (count > 0) {
        int s = bitmap_next(bm, pos_seq);
        if (s < 0)
            s = bitmap_next(bm, 0);
        if (pos + 4 > cap)
            return SFU_RB_ENO_ROOM;
        uint16_t pid = (uint16_t)s;
        uint16_t blp = 0;
        bitmap_clear(bm, pid);
        count--;
        for (int k = 1; k <= 16; k++) {
            uint16_t q = (uint16_t)(pid + k);
            if (bitmap_test(bm, q)) {
                blp |= (uint16_t)(1u << (k - 1));
                bitmap_clear(bm, q);
                count--;
            }
        }
        sfu_store_be16(out + pos, pid);
        sfu_store_be16(out + pos + 2, blp);
        pos += 4;
        pos_seq = (pid + 17) & 0xffff;
    }
    if (pos / 4 - 1 > 0xffff)
        return SFU_RB_ENO_ROOM;
    rtcp_header(out, SFU_RTCP_FMT_NACK, SFU_RTCP_RTPFB, pos);
    sfu_store_be32(out + 4, sender_ssrc);
    sfu_store_be32(out + 8, media_ssrc);
    return (int)pos;
}

int sfu_rtcp_parse_nack(const uint8_t *pkt, size_t len, uint16_t *out, int max)
{
    size_t body;
    int rc = rtcp_check(pkt, len, SFU_RTCP_RTPFB, &body);
    if (rc < 0)
        return rc;
    if ((pkt[0] & 0x1f) != SFU_RTCP_FMT_NACK)
        return SFU_RB_ETYPE;
    if (body < 12)
        return SFU_RB_ETOO_SHORT;
    int n = 0;
    for (size_t off = 12; off + 4 <= body && n < max; off += 4) {
        uint16_t pid = sfu_load_be16(pkt + off);
        uint16_t blp = sfu_load_be16(pkt + off + 2);
        out[n++] = pid;
        for (int k = 0; k < 16 && n < max; k++)
            if (blp & (1u << k))
                out[n++] = (uint16_t)(pid + k + 1);
    }
    return n;
}

uint32_t sfu_rtcp_nack_media_ssrc(const uint8_t *pkt, size_t len)
{
    return (pkt && len >= 12) ? sfu_load_be32(pkt + 8) : 0;
}

/* ---------------------------------------------------------------- SR / RR */

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
    rtcp_header(out, (uint8_t)n, SFU_RTCP_RR, total);
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
    rtcp_header(out, (uint8_t)n, SFU_RTCP_SR, total);
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
    int rc = rtcp_check(pkt, len, SFU_RTCP_SR, &body);
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
    int rc = rtcp_check(pkt, len, pt, &body);
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

/* ---------------------------------------------------------------- RTX */

int sfu_rtx_encapsulate(uint8_t *pkt, size_t *len, size_t cap, uint8_t rtx_pt, uint32_t rtx_ssrc,
                        uint16_t rtx_seq)
{
    sfu_rtp_t p;
    int rc = sfu_rtp_parse(pkt, *len, &p);
    if (rc < 0)
        return rc;
    size_t hdr = p.header_length, payload = p.payload_length;
    size_t total = hdr + 2 + payload;
    if (total > cap)
        return SFU_RB_ENO_ROOM;
    memmove(pkt + hdr + 2, pkt + hdr, payload); /* padding (after payload) is dropped */
    sfu_store_be16(pkt + hdr, p.seq);
    pkt[0] &= (uint8_t)~0x20;
    sfu_rtp_set_payload_type(pkt, rtx_pt);
    sfu_rtp_set_seq(pkt, rtx_seq);
    sfu_rtp_set_ssrc(pkt, rtx_ssrc);
    *len = total;
    return 0;
}

int sfu_rtx_decapsulate(uint8_t *pkt, size_t *len, uint8_t media_pt, uint32_t media_ssrc)
{
    sfu_rtp_t p;
    int rc = sfu_rtp_parse(pkt, *len, &p);
    if (rc < 0)
        return rc;
    if (p.payload_length < 2)
        return SFU_RB_ETOO_SHORT;
    size_t hdr = p.header_length;
    uint16_t osn = sfu_load_be16(pkt + hdr);
    memmove(pkt + hdr, pkt + hdr + 2, *len - hdr - 2); /* payload and padding */
    *len -= 2;
    sfu_rtp_set_payload_type(pkt, media_pt);
    sfu_rtp_set_seq(pkt, osn);
    sfu_rtp_set_ssrc(pkt, media_ssrc);
    return osn;
}
