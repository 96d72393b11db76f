/* Picture Loss Indication (RFC 4585 section 6.3.1): PSFB (PT 206), FMT 1,
 * no FCI. 12 bytes:
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P| FMT=1   |    PT=206     |          length=2             |
 * |                  SSRC of packet sender                        |
 * |                  SSRC of media source                         |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
#ifndef SFU_RTCP_PLI_H
#define SFU_RTCP_PLI_H

#include <stddef.h>
#include <stdint.h>

#include "rtcp.h"

#define SFU_RTCP_FMT_PLI 1
#define SFU_RTCP_PLI_SIZE 12

/* Returns 12, or SFU_RB_ENO_ROOM. */
int sfu_rtcp_build_pli(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc);
/* Returns 0 and the media source SSRC, or a negative SFU_RB_* code. */
int sfu_rtcp_parse_pli(const uint8_t *pkt, size_t len, uint32_t *media_ssrc);

#endif
