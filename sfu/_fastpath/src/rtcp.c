#include "rtcp.h"

static int check_item(const sfu_rtcp_item_t *it, uint32_t pad)
{
    uint32_t words = (it->length - pad) / 4; /* incl. header word, padding excluded */
    switch (it->packet_type) {
    case SFU_RTCP_SR:
        /* header + SSRC + 5 words sender info + 6 words per report block */
        if (words < 7u + 6u * it->count)
            return SFU_RTCP_ECOUNT;
        break;
    case SFU_RTCP_RR:
        if (words < 2u + 6u * it->count)
            return SFU_RTCP_ECOUNT;
        break;
    case SFU_RTCP_BYE:
        if (words < 1u + it->count)
            return SFU_RTCP_ECOUNT;
        break;
    case SFU_RTCP_RTPFB:
    case SFU_RTCP_PSFB:
        /* header + sender SSRC + media SSRC */
        if (words < 3)
            return SFU_RTCP_ECOUNT;
        break;
    case SFU_RTCP_APP:
        if (words < 3)
            return SFU_RTCP_ECOUNT;
        break;
    default:
        break;
    }
    return SFU_RTCP_OK;
}

int sfu_rtcp_parse_compound(const uint8_t *buf, size_t len, sfu_rtcp_item_t *items, int max)
{
    if (len < 4)
        return SFU_RTCP_ETOO_SHORT;
    size_t pos = 0;
    int n = 0;
    while (pos < len) {
        if (len - pos < 4)
            return SFU_RTCP_ETOO_SHORT;
        const uint8_t *h = buf + pos;
        if ((h[0] >> 6) != 2)
            return SFU_RTCP_EVERSION;
        uint8_t pt = h[1];
        if (pt < 192 || pt > 223)
            return SFU_RTCP_ETYPE;
        size_t plen = 4 * ((size_t)sfu_load_be16(h + 2) + 1);
        if (plen > len - pos)
            return SFU_RTCP_ELENGTH;
        if (n >= max)
            return SFU_RTCP_ETOO_MANY;
        sfu_rtcp_item_t *it = &items[n];
        it->packet_type = pt;
        it->count = h[0] & 0x1f;
        it->padding = (h[0] >> 5) & 1;
        it->offset = (uint32_t)pos;
        it->length = (uint32_t)plen;
        uint8_t pad = 0;
        if (it->padding) {
            /* Only the last packet of a compound may be padded. */
            if (pos + plen != len)
                return SFU_RTCP_EPADDING;
            pad = buf[pos + plen - 1];
            if (pad == 0 || pad > plen - 4)
                return SFU_RTCP_EPADDING;
        }
        int rc = check_item(it, pad);
        if (rc < 0)
            return rc;
        n++;
        pos += plen;
    }
    return n;
}

int sfu_rtcp_check(const uint8_t *pkt, size_t len, uint8_t pt, size_t *body_len)
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
