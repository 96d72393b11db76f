/* RTP packet view (RFC 3550 section 5.1) and header extensions (RFC 8285).
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P|X|  CC   |M|     PT      |       sequence number         |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                           timestamp                           |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |           synchronization source (SSRC) identifier            |
 * +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
 * |            contributing source (CSRC) identifiers             |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |      defined by profile       |           length              |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                        header extension                       |
 *
 * The parser reads only inside [buf, buf+len) and reports the first
 * structural problem as a negative SFU_RTP_E* code.
 */
#ifndef SFU_RTP_H
#define SFU_RTP_H

#include <stddef.h>
#include <stdint.h>
#include "sfu_bytes.h"

#define SFU_RTP_FIXED_HEADER 12
#define SFU_RTP_EXT_ONE_BYTE 0xBEDE
#define SFU_RTP_EXT_TWO_BYTE 0x1000 /* low 4 bits are "appbits" */
#define SFU_RTP_MAX_EXTENSIONS 32

enum {
    SFU_RTP_OK = 0,
    SFU_RTP_ETOO_SHORT = -1,
    SFU_RTP_EVERSION = -2,
    SFU_RTP_ECSRC = -3,
    SFU_RTP_EEXT_HEADER = -4,
    SFU_RTP_EEXT_LENGTH = -5,
    SFU_RTP_EPADDING = -6,
    SFU_RTP_EEXT_ELEMENT = -7,
    SFU_RTP_ENO_ROOM = -8,
};

typedef struct {
    uint8_t version;
    uint8_t padding;       /* P bit */
    uint8_t extension;     /* X bit */
    uint8_t csrc_count;
    uint8_t marker;
    uint8_t payload_type;
    uint16_t seq;
    uint32_t timestamp;
    uint32_t ssrc;
    uint16_t ext_profile;  /* "defined by profile" when X=1 */
    uint32_t ext_offset;   /* offset of extension data (after its 4-byte header) */
    uint32_t ext_length;   /* bytes of extension data (multiple of 4) */
    uint32_t header_length;/* fixed header + CSRCs + extension block */
    uint32_t payload_length;
    uint32_t padding_length;
} sfu_rtp_t;

typedef struct {
    uint8_t id;
    uint8_t length;   /* bytes of element data */
    uint16_t offset;  /* offset of element data in the packet */
} sfu_rtp_ext_elem_t;

int sfu_rtp_parse(const uint8_t *buf, size_t len, sfu_rtp_t *out);

/* Elements of a one-byte or two-byte header extension block. Returns the
 * count (0 for no extension or an unknown profile) or a negative error. */
int sfu_rtp_ext_elements(const uint8_t *buf, const sfu_rtp_t *p,
                         sfu_rtp_ext_elem_t *elems, int max);

/* Rewrites the header extension block in place, mapping each element id
 * through map[id] (0 removes the element). The block is re-encoded one-byte
 * (0xBEDE) when every id is 1..14 and every length 1..16, else two-byte.
 * *len is updated; cap is the buffer capacity. `p` is refreshed on success. */
int sfu_rtp_map_extensions(uint8_t *buf, size_t *len, size_t cap, sfu_rtp_t *p,
                           const uint8_t map[256]);

/* Copies the packet `src` (parsed as `p`, len bytes) to `dst` (cap bytes)
 * with its header extensions re-encoded: each element id goes through
 * map[id] (0 removes it) and, when add_id is non-zero, the element mapped to
 * add_id is replaced by (add_id, add[0..add_len)), which is appended when
 * the packet had none (a packet without extensions gains a block). An
 * unknown extension profile is copied unchanged. One copy of the payload.
 * Returns the new length or a negative SFU_RTP_E* code. */
long sfu_rtp_copy_rewrite_extensions(uint8_t *dst, size_t cap, const uint8_t *src, size_t len, const sfu_rtp_t *p,
                                     const uint8_t map[256], uint8_t add_id, const uint8_t *add, uint8_t add_len);

/* An element written by the SFU itself (e.g. the consumer's MID, our
 * transport-wide sequence number). */
#define SFU_RTP_MAX_ADDS 2
typedef struct {
    uint8_t id;            /* 0: none */
    uint8_t len;
    const uint8_t *data;
} sfu_rtp_ext_add_t;

/* The same with up to SFU_RTP_MAX_ADDS added elements (each replaces the
 * element mapped to its id). */
long sfu_rtp_copy_rewrite_extensions_n(uint8_t *dst, size_t cap, const uint8_t *src, size_t len, const sfu_rtp_t *p,
                                       const uint8_t map[256], const sfu_rtp_ext_add_t *adds, int nadds);

/* True when map[id] == id for every id present in the packet (nothing to do). */
int sfu_rtp_ext_map_is_noop(const uint8_t *buf, const sfu_rtp_t *p, const uint8_t map[256]);

static inline void sfu_rtp_set_seq(uint8_t *buf, uint16_t seq) { sfu_store_be16(buf + 2, seq); }
static inline void sfu_rtp_set_timestamp(uint8_t *buf, uint32_t ts) { sfu_store_be32(buf + 4, ts); }
static inline void sfu_rtp_set_ssrc(uint8_t *buf, uint32_t ssrc) { sfu_store_be32(buf + 8, ssrc); }
static inline void sfu_rtp_set_payload_type(uint8_t *buf, uint8_t pt)
{
    buf[1] = (uint8_t)((buf[1] & 0x80) | (pt & 0x7f));
}

/* RFC 7983 demultiplexing on the first byte. */
enum { SFU_PKT_STUN = 1, SFU_PKT_DTLS = 2, SFU_PKT_RTP = 3, SFU_PKT_RTCP = 4, SFU_PKT_UNKNOWN = 5 };

static inline int sfu_classify(const uint8_t *buf, size_t len)
{
    if (len == 0)
        return SFU_PKT_UNKNOWN;
    uint8_t b = buf[0];
    if (b <= 3)
        return SFU_PKT_STUN;
    if (b >= 20 && b <= 63)
        return SFU_PKT_DTLS;
    if (b >= 128 && b <= 191) {
        if (len < 2)
            return SFU_PKT_UNKNOWN;
        uint8_t pt = buf[1];
        /* RFC 5761 section 4: RTCP packet types 192..223 (with the marker bit). */
        if (pt >= 192 && pt <= 223)
            return SFU_PKT_RTCP;
        return SFU_PKT_RTP;
    }
    return SFU_PKT_UNKNOWN;
}

#endif
