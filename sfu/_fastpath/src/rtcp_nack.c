/* Generic NACK (rtcp_nack.h). */
#include "rtcp_nack.h"

#include <string.h>

#include "sfu_bytes.h"

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
    sfu_rtcp_header(out, SFU_RTCP_FMT_NACK, SFU_RTCP_RTPFB, pos);
    sfu_store_be32(out + 4, sender_ssrc);
    sfu_store_be32(out + 8, media_ssrc);
    return (int)pos;
}

int sfu_rtcp_parse_nack(const uint8_t *pkt, size_t len, uint16_t *out, int max)
{
    size_t body;
    int rc = sfu_rtcp_check(pkt, len, SFU_RTCP_RTPFB, &body);
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

