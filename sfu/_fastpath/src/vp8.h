/* VP8 RTP payload descriptor (RFC 7741 section 4.2) and the per-consumer
 * forwarding state that filters temporal layers and keeps the consumer's
 * PictureID / TL0PICIDX sequence continuous (simulcast, L1T2/L1T3).
 *
 *       0 1 2 3 4 5 6 7
 *      +-+-+-+-+-+-+-+-+
 *      |X|R|N|S|R| PID | (REQUIRED)
 *      +-+-+-+-+-+-+-+-+
 * X:   |I|L|T|K| RSV   | (OPTIONAL, present when X=1)
 *      +-+-+-+-+-+-+-+-+
 * I:   |M| PictureID   | (OPTIONAL; M=1: 15-bit PictureID, one more byte)
 *      +-+-+-+-+-+-+-+-+
 *      |   PictureID   |
 *      +-+-+-+-+-+-+-+-+
 * L:   |   TL0PICIDX   | (OPTIONAL)
 *      +-+-+-+-+-+-+-+-+
 * T/K: |TID|Y| KEYIDX  | (OPTIONAL, present when T=1 or K=1)
 *      +-+-+-+-+-+-+-+-+
 *
 * After the descriptor, at the start of partition 0 (S=1, PID=0), the
 * first byte of the VP8 payload header carries the inverse key frame flag
 * P in its lowest bit (P=0: key frame).
 *
 * Forwarding (sfu_vp8_fwd_packet) and RTP sequence numbers: the function
 * decides per packet; the caller keeps the consumer's RTP sequence
 * continuous with its sfu_seqmgr_t (seqmgr.h):
 *
 *     int fwd = sfu_vp8_fwd_packet(&f, &d, switched, target_tid, out, n);
 *     if (fwd == 1)  sfu_seqmgr_input(&m, seq, &out_seq);  // send, out_seq
 *     else if (fwd == 0) sfu_seqmgr_drop(&m, seq);          // not sent
 *     else  (negative: descriptor/out buffer inconsistent) drop the packet
 *           without sfu_seqmgr_drop (as for any packet refused before
 *           the seqmgr: the receiver sees a gap and NACKs it).
 *
 * sfu_seqmgr_drop closes the hole of a dropped packet newer than every
 * input so far; a stream switch is the caller's sfu_seqmgr_sync, with
 * stream_switched=1 passed here on the same packet. Whole frames are
 * dropped (every packet of a frame gets the frame's decision), so the RTP
 * marker of a forwarded frame stays on its last packet.
 */
#ifndef SFU_VP8_H
#define SFU_VP8_H

#include <stddef.h>
#include <stdint.h>

#define SFU_VP8_ETRUNCATED (-1) /* a field or the payload header is missing */
#define SFU_VP8_EINVALID (-2)   /* empty payload, or an out buffer too short */

typedef struct {
    int extended;           /* X */
    int non_reference;      /* N: the frame can be discarded (not referenced) */
    int start_of_partition; /* S */
    int partition_id;       /* PID, 0..7 */
    int has_picture_id;     /* I */
    int picture_id_bits;    /* 7 or 15 (0 without a picture id) */
    uint16_t picture_id;
    size_t picture_id_offset; /* byte offset of the (first) PictureID byte */
    int has_tl0picidx;        /* L */
    uint8_t tl0picidx;
    size_t tl0picidx_offset;
    int has_tid; /* T */
    uint8_t tid;
    int layer_sync; /* Y: the frame depends only on TL0 frames */
    int has_keyidx; /* K */
    uint8_t keyidx;
    int keyframe;          /* S=1, PID=0 and the payload header's P bit is 0 */
    size_t descriptor_len; /* the VP8 payload header starts here */
} sfu_vp8_desc_t;

/* Parses the descriptor of payload[0..len). Every read is bounds-checked.
 * A packet must carry at least one byte after the descriptor. Returns 0 or
 * SFU_VP8_ETRUNCATED / SFU_VP8_EINVALID. */
int sfu_vp8_parse(const uint8_t *payload, size_t len, sfu_vp8_desc_t *d);

#define SFU_VP8_FWD_HISTORY 32 /* frames remembered (reordered packets) */
#define SFU_VP8_MAX_PID_GAP 64 /* largest input gap carried to the output */

typedef struct {
    uint16_t in_pid;  /* the input frame's picture id, in its width */
    uint16_t out_pid; /* 15-bit output picture id it was given */
    uint8_t bits;     /* 7 or 15 */
    uint8_t forwarded;
} sfu_vp8_frame_t;

typedef struct sfu_vp8_fwd {
    int started;     /* a frame with a picture id was seen */
    int tid;         /* current temporal layer: frames with TID > tid dropped */
    uint16_t newest; /* newest input picture id (width of newest_bits) */
    int newest_bits;
    int have_fwd_in;      /* a frame of this stream was forwarded */
    uint16_t last_fwd_in; /* its input picture id */
    uint32_t dropped_since; /* frames dropped here since then */
    int have_out;     /* a frame was forwarded: out_pid is valid */
    uint16_t out_pid; /* last output picture id given (15-bit counter) */
    int have_tl0;     /* tl0_delta is set for the current stream */
    uint8_t tl0_delta;
    uint8_t out_tl0; /* newest output TL0PICIDX */
    int have_out_tl0;
    int nframes; /* ring of the last SFU_VP8_FWD_HISTORY frames */
    int head;
    sfu_vp8_frame_t frames[SFU_VP8_FWD_HISTORY];
} sfu_vp8_fwd_t;

void sfu_vp8_fwd_init(sfu_vp8_fwd_t *f);

/* Decides whether the packet described by d is forwarded (1) or dropped
 * (0), and for a forwarded packet rewrites PictureID and TL0PICIDX in
 * out_payload[0..out_len) (the consumer's copy of the payload, same layout
 * as the parsed one; NULL: decide only). Negative: out_len shorter than
 * the descriptor.
 *
 * Temporal layers: frames with TID above the current layer are dropped.
 * The current layer goes down to target_tid at any new frame; it goes up
 * at a key frame (to target_tid) or at a layer sync frame (Y=1) whose TID
 * is above the current layer and not above target_tid (to that TID). A
 * non-key TL0 frame is not an up-switch point: the higher-layer frames
 * after it may reference higher-layer frames from before it, which the
 * receiver did not get; senders mark the safe points with Y. The first
 * frame seen (or the first after stream_switched) starts at target_tid.
 * Packets without TID count as TL0.
 *
 * Frames are told apart by picture id: the packets of one frame share the
 * decision and the output id made on the frame's first packet seen. A
 * packet of a frame older than the newest that is not in the history (a
 * whole frame reordered behind a newer one, or too old) is dropped, since
 * it would break the increasing order of the output ids.
 *
 * Output PictureID: a 15-bit running counter, +1 per forwarded frame
 * (frames dropped here leave no gap), started at the first frame's own id
 * and continued (+1) across a stream switch (stream_switched=1 on the
 * first packet of the new stream: its picture ids are re-based). A frame
 * that never reached us (a gap in the input ids that is not a frame
 * dropped here) keeps its gap in the output, so the receiver still sees
 * it missing; gaps above SFU_VP8_MAX_PID_GAP count as +1. It is written in the
 * width the packet has: with a 7-bit field, the counter modulo 128 (which
 * stays continuous modulo 128, the field's own arithmetic).
 *
 * Output TL0PICIDX: the input plus a per-stream offset (mod 256); TL0
 * frames are never dropped by temporal filtering so the sequence stays
 * continuous. On a stream switch the offset is set so that the new
 * stream's first TL0 frame gets the newest output TL0PICIDX + 1 (a non-TL0
 * first frame gets the newest one).
 *
 * Packets without a picture id are forwarded untouched (return 1). */
int sfu_vp8_fwd_packet(sfu_vp8_fwd_t *f, const sfu_vp8_desc_t *d, int stream_switched, int target_tid,
                       uint8_t *out_payload, size_t out_len);

#endif
