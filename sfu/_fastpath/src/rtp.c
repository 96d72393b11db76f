#include "rtp.h"

int sfu_rtp_parse(const uint8_t *buf, size_t len, sfu_rtp_t *p)
{
    if (len < SFU_RTP_FIXED_HEADER)
        return SFU_RTP_ETOO_SHORT;
    p->version = buf[0] >> 6;
    if (p->version != 2)
        return SFU_RTP_EVERSION;
    p->padding = (buf[0] >> 5) & 1;
    p->extension = (buf[0] >> 4) & 1;
    p->csrc_count = buf[0] & 0x0f;
    p->marker = buf[1] >> 7;
    p->payload_type = buf[1] & 0x7f;
    p->seq = sfu_load_be16(buf + 2);
    p->timestamp = sfu_load_be32(buf + 4);
    p->ssrc = sfu_load_be32(buf + 8);

    size_t off = SFU_RTP_FIXED_HEADER + 4u * p->csrc_count;
    if (off > len)
        return SFU_RTP_ECSRC;

    p->ext_profile = 0;
    p->ext_offset = 0;
    p->ext_length = 0;
    if (p->extension) {
        if (off + 4 > len)
            return SFU_RTP_EEXT_HEADER;
        p->ext_profile = sfu_load_be16(buf + off);
        size_t words = sfu_load_be16(buf + off + 2);
        off += 4;
        if (off + 4 * words > len)
            return SFU_RTP_EEXT_LENGTH;
        p->ext_offset = (uint32_t)off;
        p->ext_length = (uint32_t)(4 * words);
        off += 4 * words;
    }
    p->header_length = (uint32_t)off;

    size_t pad = 0;
    if (p->padding) {
        if (len == off)
            return SFU_RTP_EPADDING;
        pad = buf[len - 1];
        if (pad == 0 || pad > len - off)
            return SFU_RTP_EPADDING;
    }
    p->padding_length = (uint32_t)pad;
    p->payload_length = (uint32_t)(len - off - pad);
    return SFU_RTP_OK;
}

int sfu_rtp_ext_elements(const uint8_t *buf, const sfu_rtp_t *p, sfu_rtp_ext_elem_t *elems, int max)
{
    if (!p->extension || p->ext_length == 0)
        return 0;
    size_t pos = p->ext_offset;
    size_t end = p->ext_offset + p->ext_length;
    int n = 0;

    if (p->ext_profile == SFU_RTP_EXT_ONE_BYTE) {
        while (pos < end) {
            uint8_t b = buf[pos];
            uint8_t id = b >> 4;
            if (id == 0) { /* padding byte */
                pos += 1;
                continue;
            }
            if (id == 15) /* reserved: stop processing (RFC 8285 4.2) */
                break;
            size_t elen = (size_t)(b & 0x0f) + 1;
            /* element data must lie in the block and its offset fit elems[].offset */
            if (pos + 1 + elen > end || pos + 1 > UINT16_MAX)
                return SFU_RTP_EEXT_ELEMENT;
            if (n >= max)
                return SFU_RTP_EEXT_ELEMENT;
            elems[n].id = id;
            elems[n].length = (uint8_t)elen;
            elems[n].offset = (uint16_t)(pos + 1);
            n++;
            pos += 1 + elen;
        }
        return n;
    }
    if ((p->ext_profile & 0xfff0) == SFU_RTP_EXT_TWO_BYTE) {
        while (pos < end) {
            uint8_t id = buf[pos];
            if (id == 0) {
                pos += 1;
                continue;
            }
            if (pos + 2 > end)
                return SFU_RTP_EEXT_ELEMENT;
            size_t elen = buf[pos + 1];
            if (pos + 2 + elen > end || pos + 2 > UINT16_MAX)
                return SFU_RTP_EEXT_ELEMENT;
            if (n >= max)
                return SFU_RTP_EEXT_ELEMENT;
            elems[n].id = id;
            elems[n].length = (uint8_t)elen;
            elems[n].offset = (uint16_t)(pos + 2);
            n++;
            pos += 2 + elen;
        }
        return n;
    }
    return 0; /* unknown profile: opaque, left untouched */
}

int sfu_rtp_ext_map_is_noop(const uint8_t *buf, const sfu_rtp_t *p, const uint8_t map[256])
{
    sfu_rtp_ext_elem_t elems[SFU_RTP_MAX_EXTENSIONS];
    int n = sfu_rtp_ext_elements(buf, p, elems, SFU_RTP_MAX_EXTENSIONS);
    if (n <= 0)
        return 1;
    for (int i = 0; i < n; i++)
        if (map[elems[i].id] != elems[i].id)
            return 0;
    return 1;
}

/* Encodes the extension block of `src` (parsed as `p`) into `block`: each
 * element id goes through map[id] (0 removes it); an element whose mapped id
 * is the id of one of the `nadds` added elements is left out, and the added
 * elements are appended instead (each only while the block holds fewer than
 * SFU_RTP_MAX_EXTENSIONS elements). One-byte form (0xBEDE) when every id is
 * 1..14 and every length 1..16, else two-byte. Returns the padded block
 * length (0: no element left) and sets *profile; negative on a malformed
 * block. */
static int encode_block(const uint8_t *src, const sfu_rtp_t *p, const uint8_t map[256],
                        const sfu_rtp_ext_add_t *adds, int nadds, uint8_t *block, uint16_t *profile, int *nelems)
{
    sfu_rtp_ext_elem_t elems[SFU_RTP_MAX_EXTENSIONS];
    int n = sfu_rtp_ext_elements(src, p, elems, SFU_RTP_MAX_EXTENSIONS);
    if (n < 0)
        return n;
    *nelems = n;
    int one_byte = 1;
    int kept = 0;
    for (int i = 0; i < n; i++) {
        uint8_t id = map[elems[i].id];
        int replaced = 0;
        for (int a = 0; a < nadds; a++)
            replaced |= adds[a].id && id == adds[a].id;
        if (id == 0 || replaced) {
            elems[i].id = 0; /* dropped below */
            continue;
        }
        elems[i].id = id;
        kept++;
        if (id > 14 || elems[i].length == 0 || elems[i].length > 16)
            one_byte = 0;
    }
    int room = SFU_RTP_MAX_EXTENSIONS - kept; /* more elements: the packet would not parse */
    uint8_t add_on[SFU_RTP_MAX_ADDS] = {0};
    for (int a = 0; a < nadds && a < SFU_RTP_MAX_ADDS; a++) {
        if (!adds[a].id || room <= 0)
            continue;
        add_on[a] = 1;
        room--;
        if (adds[a].id > 14 || adds[a].len == 0 || adds[a].len > 16)
            one_byte = 0;
    }
    size_t blen = 0;
    for (int i = 0; i < n; i++) {
        if (elems[i].id == 0)
            continue;
        if (one_byte) {
            block[blen++] = (uint8_t)((elems[i].id << 4) | (elems[i].length - 1));
        } else {
            block[blen++] = elems[i].id;
            block[blen++] = elems[i].length;
        }
        memcpy(block + blen, src + elems[i].offset, elems[i].length);
        blen += elems[i].length;
    }
    for (int a = 0; a < nadds && a < SFU_RTP_MAX_ADDS; a++) {
        if (!add_on[a])
            continue;
        if (one_byte) {
            block[blen++] = (uint8_t)((adds[a].id << 4) | (adds[a].len - 1));
        } else {
            block[blen++] = adds[a].id;
            block[blen++] = adds[a].len;
        }
        memcpy(block + blen, adds[a].data, adds[a].len);
        blen += adds[a].len;
        kept++;
    }
    size_t padded = (blen + 3) & ~(size_t)3;
    memset(block + blen, 0, padded - blen);
    *profile = one_byte ? SFU_RTP_EXT_ONE_BYTE : SFU_RTP_EXT_TWO_BYTE;
    return kept ? (int)padded : 0;
}

/* The largest block: 32 two-byte elements of 255 bytes plus the added ones. */
#define SFU_RTP_MAX_BLOCK ((SFU_RTP_MAX_EXTENSIONS + SFU_RTP_MAX_ADDS) * 257 + 4)

int sfu_rtp_map_extensions(uint8_t *buf, size_t *len, size_t cap, sfu_rtp_t *p, const uint8_t map[256])
{
    if (!p->extension || p->ext_length == 0)
        return SFU_RTP_OK;
    if (p->ext_profile != SFU_RTP_EXT_ONE_BYTE && (p->ext_profile & 0xfff0) != SFU_RTP_EXT_TWO_BYTE)
        return SFU_RTP_OK; /* unknown profile: opaque, left untouched */
    uint8_t block[SFU_RTP_MAX_BLOCK];
    uint16_t profile;
    int n = 0;
    int padded = encode_block(buf, p, map, NULL, 0, block, &profile, &n);
    if (padded < 0)
        return padded;
    if (n == 0)
        return SFU_RTP_OK; /* only padding: nothing to map */

    size_t csrc_end = SFU_RTP_FIXED_HEADER + 4u * p->csrc_count;
    size_t old_header = p->header_length;
    size_t tail = *len - old_header; /* payload + padding */
    size_t new_header = csrc_end + (padded ? 4 + (size_t)padded : 0);
    if (new_header + tail > cap)
        return SFU_RTP_ENO_ROOM;

    if (new_header != old_header)
        memmove(buf + new_header, buf + old_header, tail);
    if (padded) {
        sfu_store_be16(buf + csrc_end, profile);
        sfu_store_be16(buf + csrc_end + 2, (uint16_t)(padded / 4));
        memcpy(buf + csrc_end + 4, block, (size_t)padded);
        buf[0] |= 0x10;
    } else {
        buf[0] &= (uint8_t)~0x10;
    }
    *len = new_header + tail;
    return sfu_rtp_parse(buf, *len, p);
}

long sfu_rtp_copy_rewrite_extensions_n(uint8_t *dst, size_t cap, const uint8_t *src, size_t len, const sfu_rtp_t *p,
                                       const uint8_t map[256], const sfu_rtp_ext_add_t *adds, int nadds)
{
    int known = p->extension && (p->ext_profile == SFU_RTP_EXT_ONE_BYTE ||
                                 (p->ext_profile & 0xfff0) == SFU_RTP_EXT_TWO_BYTE);
    if (p->extension && !known) {
        /* unknown profile: opaque, copied as it is */
        if (len > cap)
            return SFU_RTP_ENO_ROOM;
        memcpy(dst, src, len);
        return (long)len;
    }
    uint8_t block[SFU_RTP_MAX_BLOCK];
    uint16_t profile = SFU_RTP_EXT_ONE_BYTE;
    int n = 0;
    int padded = encode_block(src, p, map, adds, nadds, block, &profile, &n);
    if (padded < 0)
        return padded;
    size_t csrc_end = SFU_RTP_FIXED_HEADER + 4u * p->csrc_count;
    size_t tail = len - p->header_length;
    size_t new_header = csrc_end + (padded ? 4 + (size_t)padded : 0);
    if (new_header + tail > cap)
        return SFU_RTP_ENO_ROOM;
    memcpy(dst, src, csrc_end);
    if (padded) {
        sfu_store_be16(dst + csrc_end, profile);
        sfu_store_be16(dst + csrc_end + 2, (uint16_t)(padded / 4));
        memcpy(dst + csrc_end + 4, block, (size_t)padded);
        dst[0] |= 0x10;
    } else {
        dst[0] &= (uint8_t)~0x10;
    }
    memcpy(dst + new_header, src + p->header_length, tail);
    return (long)(new_header + tail);
}

long sfu_rtp_copy_rewrite_extensions(uint8_t *dst, size_t cap, const uint8_t *src, size_t len, const sfu_rtp_t *p,
                                     const uint8_t map[256], uint8_t add_id, const uint8_t *add, uint8_t add_len)
{
    sfu_rtp_ext_add_t a = {add_id, add_len, add};
    return sfu_rtp_copy_rewrite_extensions_n(dst, cap, src, len, p, map, &a, add_id ? 1 : 0);
}
