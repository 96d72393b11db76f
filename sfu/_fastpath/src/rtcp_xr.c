/* RTCP XR: RRTR and DLRR report blocks (rtcp_xr.h). */
#include "rtcp_xr.h"

#include "sfu_bytes.h"

int sfu_rtcp_build_xr_rrtr(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t ntp)
{
    if (!out || cap < SFU_XR_RRTR_PACKET_SIZE)
        return SFU_RB_ENO_ROOM;
    sfu_rtcp_header(out, 0, SFU_RTCP_XR, SFU_XR_RRTR_PACKET_SIZE);
    sfu_store_be32(out + 4, sender_ssrc);
    out[8] = SFU_XR_BT_RRTR;
    out[9] = 0;
    sfu_store_be16(out + 10, 2);
    sfu_store_be32(out + 12, (uint32_t)(ntp >> 32));
    sfu_store_be32(out + 16, (uint32_t)ntp);
    return SFU_XR_RRTR_PACKET_SIZE;
}

int sfu_rtcp_build_xr_dlrr(uint8_t *out, size_t cap, uint32_t sender_ssrc, const sfu_xr_dlrr_t *subs, int n)
{
    if (!subs || n < 1 || n > SFU_XR_MAX_DLRR_SUBS)
        return SFU_RB_EINVAL;
    size_t total = 12 + SFU_XR_DLRR_SUB_SIZE * (size_t)n;
    if (!out || cap < total)
        return SFU_RB_ENO_ROOM;
    sfu_rtcp_header(out, 0, SFU_RTCP_XR, total);
    sfu_store_be32(out + 4, sender_ssrc);
    out[8] = SFU_XR_BT_DLRR;
    out[9] = 0;
    sfu_store_be16(out + 10, (uint16_t)(3 * n));
    uint8_t *p = out + 12;
    for (int i = 0; i < n; i++, p += SFU_XR_DLRR_SUB_SIZE) {
        sfu_store_be32(p, subs[i].ssrc);
        sfu_store_be32(p + 4, subs[i].lrr);
        sfu_store_be32(p + 8, subs[i].dlrr);
    }
    return (int)total;
}

int sfu_rtcp_parse_xr(const uint8_t *pkt, size_t len, sfu_xr_info_t *info, sfu_xr_dlrr_t *dlrr, int max)
{
    size_t body;
    int rc = sfu_rtcp_check(pkt, len, SFU_RTCP_XR, &body);
    if (rc < 0)
        return rc;
    if (body < 8)
        return SFU_RB_ETOO_SHORT;
    if (!dlrr || max < 0)
        max = 0;
    sfu_xr_info_t in = {0};
    in.sender_ssrc = sfu_load_be32(pkt + 4);
    int written = 0;
    size_t pos = 8;
    while (pos < body) {
        if (body - pos < 4)
            return SFU_RB_ELENGTH; /* a partial block header (odd padding) */
        const uint8_t *b = pkt + pos;
        size_t words = sfu_load_be16(b + 2);
        size_t blen = 4 + 4 * words; /* header included */
        if (blen > body - pos)
            return SFU_RB_ELENGTH;
        switch (b[0]) {
        case SFU_XR_BT_RRTR:
            if (words != 2)
                return SFU_RB_ELENGTH;
            in.rrtr_ntp = ((uint64_t)sfu_load_be32(b + 4) << 32) | sfu_load_be32(b + 8);
            in.nrrtr++;
            break;
        case SFU_XR_BT_DLRR:
            if (words % 3)
                return SFU_RB_ELENGTH;
            for (size_t k = 0; k < words / 3; k++) {
                const uint8_t *s = b + 4 + SFU_XR_DLRR_SUB_SIZE * k;
                if (written < max) {
                    dlrr[written].ssrc = sfu_load_be32(s);
                    dlrr[written].lrr = sfu_load_be32(s + 4);
                    dlrr[written].dlrr = sfu_load_be32(s + 8);
                    written++;
                }
                in.ndlrr++;
            }
            break;
        default:
            in.nunknown++;
            break;
        }
        in.nblocks++;
        pos += blen;
    }
    if (info)
        *info = in;
    return written;
}
