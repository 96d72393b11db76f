/* RTX encapsulation (rtx.h). */
#include "rtx.h"

#include <string.h>

#include "rtp.h"
#include "sfu_bytes.h"

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
