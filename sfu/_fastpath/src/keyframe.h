/* Keyframe detection from the RTP payload, without decoding.
 *
 * VP8 (RFC 7741 4.2/4.3): start of partition 0 (S=1, PID=0) and the VP8
 * payload header's P bit clear. VP9 (RFC 9628 4.2): not inter-predicted
 * (P=0) and start of a frame (B=1). H264 (RFC 6184): an IDR slice (NAL type
 * 5) or an SPS (7), alone, inside a STAP-A (24) or at the start of an FU-A
 * (28). Every read is bounds-checked.
 */
#ifndef SFU_KEYFRAME_H
#define SFU_KEYFRAME_H

#include <stddef.h>
#include <stdint.h>

enum { SFU_CODEC_NONE = 0, SFU_CODEC_VP8 = 1, SFU_CODEC_VP9 = 2, SFU_CODEC_H264 = 3 };

static inline int sfu_vp8_is_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    uint8_t b0 = p[0];
    if (!(b0 & 0x10) || (b0 & 0x07) != 0) /* S=1, PID=0 */
        return 0;
    size_t off = 1;
    if (b0 & 0x80) { /* X */
        if (n < off + 1)
            return 0;
        uint8_t x = p[off++];
        if (x & 0x80) { /* I: picture id, 7 or 15 bits */
            if (n < off + 1)
                return 0;
            off += (p[off] & 0x80) ? 2 : 1;
        }
        if (x & 0x40) /* L: TL0PICIDX */
            off += 1;
        if (x & 0x30) /* T or K: TID/Y/KEYIDX */
            off += 1;
    }
    if (n < off + 1)
        return 0;
    return (p[off] & 0x01) == 0; /* P bit: 0 = key frame */
}

/* The first packet of a VP9 key picture (RFC 9628): P=0 and B=1 in its
 * spatial layer 0. The upper spatial layers of a key picture are not
 * inter-picture predicted either (P=0, B=1 on their first packets), but a
 * decoder cannot start there: they predict from layer 0. */
static inline int sfu_vp9_is_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1 || (p[0] & 0x40) || !(p[0] & 0x08))
        return 0;
    if (!(p[0] & 0x20)) /* L=0: no layer indices, one spatial layer */
        return 1;
    size_t off = 1;
    if (p[0] & 0x80) { /* I: a 7- or 15-bit picture id */
        if (n < 2)
            return 0;
        off += (p[1] & 0x80) ? 2 : 1;
    }
    if (n < off + 1)
        return 0;
    return ((p[off] >> 1) & 0x07) == 0; /* SID */
}

static inline int sfu_h264_nal_is_key(uint8_t nal)
{
    uint8_t t = nal & 0x1f;
    return t == 5 || t == 7;
}

static inline int sfu_h264_is_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    uint8_t t = p[0] & 0x1f;
    if (t >= 1 && t <= 23)
        return sfu_h264_nal_is_key(p[0]);
    if (t == 24) { /* STAP-A: 16-bit size + NAL unit, repeated */
        size_t off = 1;
        while (off + 2 < n) {
            size_t sz = ((size_t)p[off] << 8) | p[off + 1];
            off += 2;
            if (sz == 0 || off + sz > n)
                return 0;
            if (sfu_h264_nal_is_key(p[off]))
                return 1;
            off += sz;
        }
        return 0;
    }
    if (t == 28) { /* FU-A: start bit and the fragmented NAL's type */
        if (n < 2)
            return 0;
        return (p[1] & 0x80) && sfu_h264_nal_is_key(p[1]);
    }
    return 0;
}

static inline int sfu_is_keyframe(int codec, const uint8_t *p, size_t n)
{
    switch (codec) {
    case SFU_CODEC_VP8:
        return sfu_vp8_is_keyframe(p, n);
    case SFU_CODEC_VP9:
        return sfu_vp9_is_keyframe(p, n);
    case SFU_CODEC_H264:
        return sfu_h264_is_keyframe(p, n);
    default:
        return 0;
    }
}

#endif
