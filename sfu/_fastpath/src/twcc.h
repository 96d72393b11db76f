/* Transport-wide congestion control feedback
 * (draft-holmer-rmcat-transport-wide-cc-extensions-01).
 *
 * The header extension carries a 16-bit transport-wide sequence number.
 * The receiver records when each one arrived and reports it back in an
 * RTPFB FMT=15 packet:
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P|  FMT=15 |    PT=205     |           length              |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                     SSRC of packet sender                     |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                      SSRC of media source                     |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |      base sequence number     |      packet status count      |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                 reference time                | fb pkt. count |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |          packet chunk         |         packet chunk          |
 * ...                 (then the recv deltas, then zero padding to 32 bits)
 *
 * Packet status chunks (16 bits):
 *   run length:    0 | S(2) | run length(13)         -- S repeated
 *   status vector: 1 | 0 | 14 x 1-bit symbols        -- 0 not received, 1 small delta
 *                  1 | 1 |  7 x 2-bit symbols        -- 00 not received, 01 small,
 *                                                       10 large/negative, 11 reserved
 * Receive deltas in 250 us units: small = 1 byte unsigned (0..255), large =
 * 2 bytes signed. The first delta is relative to the reference time (24-bit
 * signed, 64 ms units), each next one to the previous received packet.
 *
 * No syscalls; arrival times are passed in (microseconds, any epoch).
 */
#ifndef SFU_TWCC_H
#define SFU_TWCC_H

#include <stddef.h>
#include <stdint.h>

enum {
    SFU_TWCC_ETOO_SHORT = -1,
    SFU_TWCC_EHEADER = -2,     /* not V=2, PT=205, FMT=15 */
    SFU_TWCC_ECHUNK = -3,      /* reserved status symbol / zero-length run */
    SFU_TWCC_ENO_ROOM = -4,    /* output (buffer or arrays) too small */
    SFU_TWCC_EARG = -5,
};

enum { SFU_TWCC_NOT_RECEIVED = 0, SFU_TWCC_SMALL = 1, SFU_TWCC_LARGE = 2 };

#define SFU_TWCC_WINDOW 1024           /* sequence numbers remembered */
#define SFU_TWCC_HEADER 20             /* RTCP header + FCI fixed part */
#define SFU_TWCC_REF_UNIT_US 64000
#define SFU_TWCC_DELTA_UNIT_US 250
#define SFU_RTCP_FMT_TWCC 15           /* RTPFB FMT of transport-cc feedback */

typedef struct {
    int64_t seq[SFU_TWCC_WINDOW];         /* unwrapped seq held by the slot, -1 = none */
    uint64_t arrival_us[SFU_TWCC_WINDOW];
    int64_t highest;      /* highest unwrapped seq received */
    int64_t begin;        /* first seq the next feedback covers */
    uint8_t started;
    uint8_t fb_count;     /* feedback packet count of the next feedback */
    uint8_t reported;     /* a feedback was built */
    uint64_t received;    /* counters (stats/tests) */
    uint64_t duplicates;
    uint64_t late;        /* arrived after its seq was reported or left the window */
} sfu_twcc_recv_t;

void sfu_twcc_recv_init(sfu_twcc_recv_t *r);

/* Records the arrival of a transport-wide sequence number. Returns 1 when
 * recorded, 0 when ignored (duplicate, already reported, or older than the
 * window). Sequence numbers are unwrapped against the highest one seen. */
int sfu_twcc_on_packet(sfu_twcc_recv_t *r, uint16_t transport_seq, uint64_t arrival_us);

/* 1 when a feedback would report something. */
int sfu_twcc_pending(const sfu_twcc_recv_t *r);

/* Builds ONE feedback packet covering the sequence numbers since the last
 * feedback (up to the highest received). Returns its length (a multiple of
 * 4), 0 when there is nothing to report, or a negative code (cap too small
 * for even one packet). When everything does not fit in cap, or a delta
 * does not fit in 16 bits, the packet ends early: call again until it
 * returns 0. Each packet increments the 8-bit feedback packet count. */
int sfu_twcc_build_feedback(sfu_twcc_recv_t *r, uint8_t *out, size_t cap,
                            uint32_t sender_ssrc, uint32_t media_ssrc);

/* Reads the transport-wide sequence number from a header extension
 * element's data (2 bytes). Returns 0 or -1 when too short. */
int sfu_twcc_read_ext(const uint8_t *ext_data, size_t len, uint16_t *seq);

/* Parses one feedback packet. statuses[i] (SFU_TWCC_NOT_RECEIVED/SMALL/
 * LARGE) and deltas_250us[i] (0 when not received) for each of the
 * status_count packets from base_seq; ref_time is sign-extended from 24
 * bits. Returns status_count, or a negative code (SFU_TWCC_ENO_ROOM when it
 * exceeds max). Pointers other than pkt may be NULL except the arrays when
 * status_count > 0. */
int sfu_twcc_parse_feedback(const uint8_t *pkt, size_t len, uint16_t *base_seq,
                            uint16_t *status_count, int32_t *ref_time, uint8_t *fb_count,
                            uint8_t *statuses, int32_t *deltas_250us, int max);

#endif
