/* Picture Loss Indication (rtcp_pli.h). */
#include "rtcp_pli.h"

#include "sfu_bytes.h"

int sfu_rtcp_build_pli(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc)
{
    if (!out || cap < SFU_RTCP_PLI_SIZE)
        return SFU_RB_ENO_ROOM;
    sfu_rtcp_header(out, SFU_RTCP_FMT_PLI, SFU_RTCP_PSFB, SFU_RTCP_PLI_SIZE);
    sfu_store_be32(out + 4, sender_ssrc);
    sfu_store_be32(out + 8, media_ssrc);
    return SFU_RTCP_PLI_SIZE;
}

int sfu_rtcp_parse_pli(const uint8_t *pkt, size_t len, uint32_t *media_ssrc)
{
    size_t body;
    int rc = sfu_rtcp_check(pkt, len, SFU_RTCP_PSFB, &body);
    if (rc < 0)
        return rc;
    if ((pkt[0] & 0x1f) != SFU_RTCP_FMT_PLI)
        return SFU_RB_ETYPE;
    if (body < SFU_RTCP_PLI_SIZE)
        return SFU_RB_ETOO_SHORT;
    *media_ssrc = sfu_load_be32(pkt + 8);
    return 0;
}
