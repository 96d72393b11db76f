/* Full Intra Request (rtcp_fir.h). */
#include "rtcp_fir.h"

#include "sfu_bytes.h"

int sfu_rtcp_build_fir(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t ssrc, uint8_t seq_nr)
{
    if (!out || cap < 20)
        return SFU_RB_ENO_ROOM;
    sfu_rtcp_header(out, SFU_RTCP_FMT_FIR, SFU_RTCP_PSFB, 20);
    sfu_store_be32(out + 4, sender_ssrc);
    sfu_store_be32(out + 8, 0);
    sfu_store_be32(out + 12, ssrc);
    out[16] = seq_nr;
    out[17] = out[18] = out[19] = 0;
    return 20;
}

int sfu_rtcp_parse_fir(const uint8_t *pkt, size_t len, sfu_fir_entry_t *out, int max)
{
    size_t body;
    int rc = sfu_rtcp_check(pkt, len, SFU_RTCP_PSFB, &body);
    if (rc < 0)
        return rc;
    if ((pkt[0] & 0x1f) != SFU_RTCP_FMT_FIR)
        return SFU_RB_ETYPE;
    if (body < 20)
        return SFU_RB_ETOO_SHORT;
    int n = (int)((body - 12) / 8);
    for (int i = 0; i < n && i < max; i++) {
        out[i].ssrc = sfu_load_be32(pkt + 12 + 8 * i);
        out[i].seq_nr = pkt[16 + 8 * i];
    }
    return n;
}
