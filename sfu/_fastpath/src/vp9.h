/* VP9 RTP payload descriptor (RFC 9628, formerly draft-ietf-payload-vp9)
 * and the per-consumer SVC layer filter.
 *
 *        0 1 2 3 4 5 6 7
 *       +-+-+-+-+-+-+-+-+
 *       |I|P|L|F|B|E|V|Z| (REQUIRED)
 *       +-+-+-+-+-+-+-+-+
 *  I:   |M| PICTURE ID  | (present when I=1; M=1: 15-bit, one more byte)
 *  M:   | EXTENDED PID  |
 *  L:   | TID |U| SID |D| (present when L=1)
 *       |   TL0PICIDX   | (present when L=1 and F=0, non-flexible mode)
 *  P,F: | P_DIFF      |N| (flexible mode with P=1: up to 3, N=1: another)
 *  V:   | SS            | (scalability structure, present when V=1)
 *
 *  I: picture id present          P: inter-picture predicted
 *  L: layer indices present       F: flexible mode
 *  B: start of a layer frame      E: end of a layer frame
 *  V: scalability structure       Z: not a reference for upper spatial layers
 *  TID: temporal layer, U: switching up point, SID: spatial layer,
 *  D: inter-layer dependency (the frame depends on layer SID-1 of the same
 *  picture).
 *
 * Scalability structure (SS):
 *       | N_S |Y|G|-|-|-|     N_S + 1 spatial layers
 *       |   WIDTH (16)  |  } N_S + 1 times when Y=1
 *       |  HEIGHT (16)  |  }
 *       |      N_G      |     when G=1: N_G pictures in the picture group
 *       | TID |U| R |-|-|  } N_G times, each followed by R P_DIFF bytes
 *       |    P_DIFF     |  }
 *
 * The RTP marker bit marks the end of a picture (the last packet of its
 * highest spatial layer frame). sfu_vp9_fwd_packet's set_marker tells the
 * caller to set it on a forwarded packet because the higher layers of that
 * picture are dropped; the caller sends marker = original marker ||
 * set_marker. Dropped packets (return 0) go to sfu_seqmgr_drop as for VP8
 * (vp8.h).
 */
#ifndef SFU_VP9_H
#define SFU_VP9_H

#include <stddef.h>
#include <stdint.h>

#define SFU_VP9_ETRUNCATED (-1) /* a field of the descriptor or SS is missing */
#define SFU_VP9_EINVALID (-2)   /* no payload after the descriptor */

#define SFU_VP9_MAX_SPATIAL 8 /* N_S is 3 bits */
#define SFU_VP9_MAX_REFS 3

typedef struct {
    int has_picture_id; /* I */
    int inter_picture_predicted; /* P */
    int has_layer_indices;       /* L */
    int flexible;                /* F */
    int begin_of_frame;          /* B */
    int end_of_frame;            /* E */
    int has_ss;                  /* V */
    int not_reference;           /* Z */
    int picture_id_bits;         /* 7 or 15 (0 without a picture id) */
    uint16_t picture_id;
    size_t picture_id_offset;
    uint8_t tid; /* 0 without layer indices */
    int switching_up_point;     /* U */
    uint8_t sid;                /* 0 without layer indices */
    int inter_layer_dependency; /* D */
    int has_tl0picidx;          /* L=1 and F=0 */
    uint8_t tl0picidx;
    size_t tl0picidx_offset;
    int num_ref; /* flexible mode, P=1: reference indices read */
    uint8_t p_diff[SFU_VP9_MAX_REFS];
    /* scalability structure (V=1) */
    int ss_spatial_layers; /* N_S + 1 */
    int ss_has_resolutions; /* Y */
    uint16_t ss_width[SFU_VP9_MAX_SPATIAL];
    uint16_t ss_height[SFU_VP9_MAX_SPATIAL];
    int ss_has_group; /* G */
    int ss_group_size; /* N_G */
    int keyframe;      /* P=0, B=1 and SID=0 */
    size_t descriptor_len;
} sfu_vp9_desc_t;

/* Parses the descriptor of payload[0..len), every read bounds-checked
 * (the SS and the reference indices are walked, not trusted). Returns 0,
 * SFU_VP9_ETRUNCATED or SFU_VP9_EINVALID (no payload byte after it). */
int sfu_vp9_parse(const uint8_t *payload, size_t len, sfu_vp9_desc_t *d);

typedef struct sfu_vp9_fwd {
    int started; /* a key frame was seen: layers are set */
    int sid;     /* current spatial layer: frames with SID > sid dropped */
    int tid;     /* current temporal layer: frames with TID > tid dropped */
    int have_picture; /* picture_id / last picture known */
    uint16_t picture_id;
    int spatial_layers; /* from the last SS seen (0: unknown) */
} sfu_vp9_fwd_t;

void sfu_vp9_fwd_init(sfu_vp9_fwd_t *f);

/* Decides whether the packet is forwarded (1) or dropped (0) for a
 * consumer that wants spatial layer target_sid and temporal layer
 * target_tid; ksvc: the stream is K-SVC (inter-layer prediction on key
 * pictures only) rather than full SVC. Packets are dropped until the first
 * key frame (the layers start there at the targets).
 *
 * A packet goes through when SID <= f->sid and TID <= f->tid (packets
 * without layer indices count as SID 0 / TID 0). The current layers move:
 *  - at the start of a key picture: both to the targets;
 *  - at the start of a new picture (new picture id; without picture id, a
 *    frame start of SID 0): down to a lower target, spatial or temporal;
 *  - temporal up: at a forwarded frame with U=1 (later pictures of higher
 *    temporal layers do not depend on pictures before it), to the target;
 *  - spatial up, full SVC only: at the start (B=1) of a layer frame of
 *    SID = f->sid + 1 <= target that is not inter-picture predicted (P=0:
 *    it depends only on lower layers of this picture, which are forwarded).
 *    K-SVC upper layers depend on their own previous frames, so K-SVC moves
 *    up only at key pictures. An up-switch in the middle of a picture
 *    leaves the marker already set on the lower layer's end of frame of
 *    that picture (a receiver sees two markers for that one picture).
 *
 * *set_marker = 1 on a forwarded packet that ends a layer frame (E=1) of
 * the highest spatial layer forwarded: f->sid, or the stream's top layer
 * when the SS said it has fewer. Otherwise 0. */
int sfu_vp9_fwd_packet(sfu_vp9_fwd_t *f, const sfu_vp9_desc_t *d, int target_sid, int target_tid, int ksvc,
                       int *set_marker);

#endif
