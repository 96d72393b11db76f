/* Full Intra Request (RFC 5104 section 4.3.1): PSFB (PT 206), FMT 4. The
 * media source field is unused (0); each FCI entry names one SSRC:
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P| FMT=4   |    PT=206     |          length               |
 * |                  SSRC of packet sender                        |
 * |                  SSRC of media source (0)                     |
 * |                              SSRC                             |  (FCI, repeated)
 * | Seq nr.       |    Reserved                                   |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
#ifndef SFU_RTCP_FIR_H
#define SFU_RTCP_FIR_H

#include <stddef.h>
#include <stdint.h>

#include "rtcp.h"

#define SFU_RTCP_FMT_FIR 4

typedef struct {
    uint32_t ssrc;
    uint8_t seq_nr;
} sfu_fir_entry_t;

/* One FIR with one entry: returns 20, or SFU_RB_ENO_ROOM. */
int sfu_rtcp_build_fir(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t ssrc, uint8_t seq_nr);
/* Writes up to max entries and returns how many the packet holds (>= 1;
 * entries beyond max are counted, not written), or a negative SFU_RB_* code. */
int sfu_rtcp_parse_fir(const uint8_t *pkt, size_t len, sfu_fir_entry_t *out, int max);

#endif
