/* RTX (RFC 4588 section 4): RTP header of the RTX stream (its PT, SSRC
 *   and seq; marker, timestamp, CSRCs and header extensions of the original)
 *   | OSN (original seq, 16 bits) | original payload.
 *
 * Builders write into out[0..cap) and return the byte length or a negative
 * SFU_RB_E* code (nothing useful is written then). Parsers read only inside
 * [pkt, pkt+len) and return a count/0 or a negative code.
 */
#ifndef SFU_RTX_H
#define SFU_RTX_H

#include <stddef.h>
#include <stdint.h>

#include "rtcp.h"

/* The packet is rewritten in place. The functions return the SFU_RTP_E*
 * codes of rtp.h for a malformed RTP packet (all in -1..-8), SFU_RB_*
 * otherwise. */
/* Makes an RTX packet of an RTP packet: inserts the OSN before the payload,
 * sets PT, SSRC and seq; keeps marker, timestamp, CSRCs and header
 * extensions; drops padding (P cleared). Needs cap >= header + 2 + payload.
 * Returns 0. */
int sfu_rtx_encapsulate(uint8_t *pkt, size_t *len, size_t cap, uint8_t rtx_pt, uint32_t rtx_ssrc,
                        uint16_t rtx_seq);
/* The original packet of an RTX packet: removes the OSN, sets seq = OSN, PT
 * and SSRC; keeps padding. Returns the OSN (0..65535), SFU_RB_ETOO_SHORT if
 * the payload is shorter than 2 bytes. */
int sfu_rtx_decapsulate(uint8_t *pkt, size_t *len, uint8_t media_pt, uint32_t media_ssrc);

#endif
