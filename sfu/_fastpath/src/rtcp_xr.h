/* RTCP Extended Reports (RFC 3611): the XR packet (PT 207) and the two
 * report blocks that measure a round trip from the receiver's side,
 * Receiver Reference Time (RRTR, section 4.4) and DLRR (section 4.5).
 *
 * XR packet (section 2):
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P|reserved |   PT=XR=207   |             length            |
 * |                              SSRC                             |
 * :                         report blocks                         :
 *
 * Every report block starts with BT (8) | type-specific (8) | block length
 * (16): the block's length in 32-bit words minus one, header included, so
 * a block of length L takes 4 + 4 * L bytes and a block of length 0 is a
 * bare header.
 *
 * RRTR (BT 4), 12 bytes:
 * |     BT=4      |   reserved    |       block length = 2        |
 * |              NTP timestamp, most significant word             |
 * |             NTP timestamp, least significant word             |
 *
 * DLRR (BT 5), 4 + 12 * n bytes (block length 3 * n):
 * |     BT=5      |   reserved    |         block length          |
 * |                 SSRC_1 (SSRC of first receiver)               | sub-
 * |                         last RR (LRR)                         | block
 * |                   delay since last RR (DLRR)                  | 1
 * :                              ...                              :
 * LRR is the middle 32 bits of the NTP timestamp of the last RRTR received
 * from SSRC_i (0 if none), DLRR the delay between that reception and the
 * sending of this block in 1/65536 s. SSRC_i is the SSRC field of the XR
 * packet that carried the RRTR.
 *
 * Builders write into out[0..cap) and return the byte length or a negative
 * SFU_RB_E* code (rtcp.h). The parser reads only inside [pkt, pkt+len).
 */
#ifndef SFU_RTCP_XR_H
#define SFU_RTCP_XR_H

#include <stddef.h>
#include <stdint.h>

#include "rtcp.h"

#define SFU_XR_BT_RRTR 4
#define SFU_XR_BT_DLRR 5
#define SFU_XR_RRTR_PACKET_SIZE 20 /* XR header + SSRC + one RRTR block */
#define SFU_XR_DLRR_SUB_SIZE 12
/* the packet's 16-bit length field (words - 1): 3 + 3 * n - 1 <= 65535 */
#define SFU_XR_MAX_DLRR_SUBS 21844

typedef struct {
    uint32_t ssrc; /* SSRC_i: the sender of the RRTR this answers */
    uint32_t lrr;  /* middle 32 bits of that RRTR's NTP timestamp */
    uint32_t dlrr; /* delay since its reception, 1/65536 s */
} sfu_xr_dlrr_t;

typedef struct {
    uint32_t sender_ssrc; /* SSRC field of the XR packet */
    uint64_t rrtr_ntp;    /* NTP timestamp of the last RRTR block (valid if nrrtr) */
    int nrrtr;            /* RRTR blocks seen */
    int ndlrr;            /* DLRR sub-blocks seen (all of them, even past max) */
    int nblocks;          /* report blocks walked */
    int nunknown;         /* blocks of other types, skipped by their length */
} sfu_xr_info_t;

/* An XR packet with one RRTR block: sender_ssrc is our RTCP sender SSRC
 * (the same as the SSRC of the RR it goes with), ntp the 64-bit NTP time
 * of sending. Returns 20 or SFU_RB_ENO_ROOM. */
int sfu_rtcp_build_xr_rrtr(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t ntp);

/* An XR packet with one DLRR block of n sub-blocks (n in 1..SFU_XR_MAX_DLRR_SUBS).
 * Returns 12 + 12 * n, or
 * SFU_RB_EINVAL / SFU_RB_ENO_ROOM. (Tests and fuzzing; we do not answer RRTRs.) */
int sfu_rtcp_build_xr_dlrr(uint8_t *out, size_t cap, uint32_t sender_ssrc, const sfu_xr_dlrr_t *subs, int n);

/* Parses one XR packet (pkt points at its header; len may extend past it:
 * the packet's own length field bounds the walk, padding excluded). Walks
 * every report block by its length: RRTR blocks set info->rrtr_ntp (the
 * last one wins) and count in nrrtr; the sub-blocks of DLRR blocks are
 * written to dlrr[0..max) in order (max may be 0 and dlrr NULL); blocks of
 * any other type are skipped. Returns the number of sub-blocks written
 * (>= 0), or a negative SFU_RB_* code and nothing is to be trusted:
 *   SFU_RB_ETOO_SHORT  fewer than 8 bytes (no SSRC)
 *   SFU_RB_EVERSION / SFU_RB_ETYPE  not version 2 / not PT 207
 *   SFU_RB_ELENGTH  the packet's length overruns len, a block header or a
 *       block's length overruns the packet, an RRTR block whose length is
 *       not 2, or a DLRR block whose length is not a multiple of 3. */
int sfu_rtcp_parse_xr(const uint8_t *pkt, size_t len, sfu_xr_info_t *info, sfu_xr_dlrr_t *dlrr, int max);

#endif
