/* Generic NACK (RFC 4585 section 6.2.1): RTPFB (PT 205), FMT 1
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P| FMT=1   |    PT=205     |          length               |
 * |                  SSRC of packet sender                        |
 * |                  SSRC of media source                         |
 * |            PID                |             BLP               |  (FCI, repeated)
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   PID lost, and PID+i+1 lost for each bit i (LSB = 0) set in BLP.
 *
 * Builders write into out[0..cap) and return the byte length or a negative
 * SFU_RB_E* code (nothing useful is written then). Parsers read only inside
 * [pkt, pkt+len) and return a count/0 or a negative code.
 */
#ifndef SFU_RTCP_NACK_H
#define SFU_RTCP_NACK_H

#include <stddef.h>
#include <stdint.h>

#include "rtcp.h"

#define SFU_RTCP_FMT_NACK 1

/* seqs: any order, duplicates and wrap-around allowed (grouping starts after
 * the largest circular gap between the numbers, so a set straddling 65535->0
 * comes out in serial order). n >= 1. Length 12 + 4 * (number of FCIs);
 * SFU_RB_ENO_ROOM if they do not all fit. */
int sfu_rtcp_build_nack(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                        const uint16_t *seqs, int n);
/* One RTPFB FMT=1 packet (len may exceed its length field: the rest is
 * ignored). Writes up to max numbers (PID, then its BLP bits in order) and
 * returns the count written; the FCIs beyond max are ignored. */
int sfu_rtcp_parse_nack(const uint8_t *pkt, size_t len, uint16_t *out, int max);
/* Media source SSRC of a feedback packet (bytes 8..11), 0 if len < 12. */
uint32_t sfu_rtcp_nack_media_ssrc(const uint8_t *pkt, size_t len);

#endif
