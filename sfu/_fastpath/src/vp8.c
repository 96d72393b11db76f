/* VP8 payload descriptor parsing and temporal-layer forwarding (vp8.h). */
#include "vp8.h"

#include <string.h>

int sfu_vp8_parse(const uint8_t *p, size_t len, sfu_vp8_desc_t *d)
{
    memset(d, 0, sizeof(*d));
    if (!p || len < 1)
        return SFU_VP8_ETRUNCATED;
    uint8_t b0 = p[0];
    d->extended = b0 >> 7;
    d->non_reference = (b0 >> 5) & 1;
    d->start_of_partition = (b0 >> 4) & 1;
    d->partition_id = b0 & 0x07;
    size_t i = 1;
    if (d->extended) {
        if (i >= len)
            return SFU_VP8_ETRUNCATED;
        uint8_t x = p[i++];
        int has_i = x >> 7, has_l = (x >> 6) & 1, has_t = (x >> 5) & 1, has_k = (x >> 4) & 1;
        if (has_i) {
            if (i >= len)
                return SFU_VP8_ETRUNCATED;
            d->has_picture_id = 1;
            d->picture_id_offset = i;
            if (p[i] & 0x80) {
                if (i + 1 >= len)
                    return SFU_VP8_ETRUNCATED;
                d->picture_id = (uint16_t)(((p[i] & 0x7f) << 8) | p[i + 1]);
                d->picture_id_bits = 15;
                i += 2;
            } else {
                d->picture_id = p[i] & 0x7f;
                d->picture_id_bits = 7;
                i += 1;
            }
        }
        if (has_l) {
            if (i >= len)
                return SFU_VP8_ETRUNCATED;
            d->has_tl0picidx = 1;
            d->tl0picidx_offset = i;
            d->tl0picidx = p[i++];
        }
        if (has_t || has_k) {
            if (i >= len)
                return SFU_VP8_ETRUNCATED;
            uint8_t t = p[i++];
            if (has_t) {
                d->has_tid = 1;
                d->tid = t >> 6;
                d->layer_sync = (t >> 5) & 1;
            }
            if (has_k) {
                d->has_keyidx = 1;
                d->keyidx = t & 0x1f;
            }
        }
    }
    d->descriptor_len = i;
    if (i >= len)
        return SFU_VP8_EINVALID; /* no VP8 payload after the descriptor */
    /* VP8 payload header (RFC 7741 4.3): P is bit 0 of its first byte */
    d->keyframe = d->start_of_partition && d->partition_id == 0 && !(p[i] & 0x01);
    return 0;
}

void sfu_vp8_fwd_init(sfu_vp8_fwd_t *f)
{
    memset(f, 0, sizeof(*f));
}

/* a newer than b in serial arithmetic of the given width (7 or 15 bits) */
static int pid_newer(uint16_t a, uint16_t b, int bits)
{
    uint16_t mask = bits == 7 ? 0x7f : 0x7fff;
    uint16_t dist = (uint16_t)((a - b) & mask);
    return dist != 0 && dist <= (mask >> 1);
}

static sfu_vp8_frame_t *find_frame(sfu_vp8_fwd_t *f, uint16_t pid, int bits)
{
    for (int k = 0; k < f->nframes; k++) {
        sfu_vp8_frame_t *fr = &f->frames[k];
        if (fr->in_pid == pid && fr->bits == bits)
            return fr;
    }
    return NULL;
}

/* The output id of a new forwarded frame: the last one plus the input
 * ids passed since the last forwarded frame, less the frames dropped here
 * in between (a frame lost before reaching us keeps its gap). +1 when there
 * is no forwarded frame of this stream yet or the count is inconsistent. */
static uint16_t next_out_pid(const sfu_vp8_fwd_t *f, uint16_t pid, int bits)
{
    int step = 1;
    if (f->have_fwd_in) {
        uint16_t mask = bits == 7 ? 0x7f : 0x7fff;
        int passed = (pid - f->last_fwd_in) & mask;
        int s = passed - (int)f->dropped_since;
        if (s >= 1 && s <= SFU_VP8_MAX_PID_GAP)
            step = s;
    }
    return (uint16_t)((f->out_pid + step) & 0x7fff);
}

static void forget_stream(sfu_vp8_fwd_t *f)
{
    f->have_fwd_in = 0;
    f->dropped_since = 0;
    f->started = 0;
    f->nframes = 0;
    f->head = 0;
    f->have_tl0 = 0;
}

/* signed distance a - b in serial arithmetic of the given width */
static int pid_diff(uint16_t a, uint16_t b, int bits)
{
    int m = bits == 7 ? 0x80 : 0x8000;
    int d = (a - b) & (m - 1);
    return d >= m / 2 ? d - m : d;
}

/* A late frame (older than the newest, never seen) is forwarded where the
 * output left its slot: between the nearest remembered frames on either
 * side, both forwarded, whose output ids are as far apart as their input
 * ids (no frame dropped here between them, so a lost frame kept its gap)
 * and within the current temporal layer. NULL: no such place (it is
 * dropped, as before). */
static sfu_vp8_frame_t *place_late_frame(sfu_vp8_fwd_t *f, const sfu_vp8_desc_t *d, uint16_t pid, int bits,
                                         int target_tid)
{
    const sfu_vp8_frame_t *before = NULL, *after = NULL;
    int d_before = 0, d_after = 0;
    for (int k = 0; k < f->nframes; k++) {
        const sfu_vp8_frame_t *x = &f->frames[k];
        if (x->bits != bits)
            continue;
        int dist = pid_diff(x->in_pid, pid, bits);
        if (dist < 0 && (!before || dist > d_before)) {
            before = x;
            d_before = dist;
        } else if (dist > 0 && (!after || dist < d_after)) {
            after = x;
            d_after = dist;
        }
    }
    if (!before || !after || !before->forwarded || !after->forwarded)
        return NULL;
    if (pid_diff(after->out_pid, before->out_pid, 15) != d_after - d_before)
        return NULL;
    int tid = d->has_tid ? d->tid : 0;
    if (tid > f->tid || (target_tid >= 0 && tid > target_tid))
        return NULL;
    sfu_vp8_frame_t *fr = &f->frames[f->head];
    f->head = (f->head + 1) % SFU_VP8_FWD_HISTORY;
    if (f->nframes < SFU_VP8_FWD_HISTORY)
        f->nframes++;
    fr->in_pid = pid;
    fr->bits = (uint8_t)bits;
    fr->forwarded = 1;
    fr->out_pid = (uint16_t)((before->out_pid - d_before) & 0x7fff);
    return fr;
}

/* The decision for a new frame; moves the current temporal layer. */
static int decide_frame(sfu_vp8_fwd_t *f, const sfu_vp8_desc_t *d, int target_tid)
{
    int tid = d->has_tid ? d->tid : 0;
    if (target_tid < 0)
        target_tid = 0;
    if (!f->started) {
        f->tid = target_tid;
    } else if (target_tid < f->tid) {
        f->tid = target_tid;
    } else if (target_tid > f->tid) {
        if (d->keyframe)
            f->tid = target_tid;
        else if (d->has_tid && d->layer_sync && tid > f->tid && tid <= target_tid)
            f->tid = tid;
    }
    return tid <= f->tid;
}

int sfu_vp8_fwd_packet(sfu_vp8_fwd_t *f, const sfu_vp8_desc_t *d, int stream_switched, int target_tid,
                       uint8_t *out, size_t out_len)
{
    if (stream_switched)
        forget_stream(f);
    if (!d->has_picture_id)
        return 1;
    if (out && out_len < d->descriptor_len)
        return SFU_VP8_EINVALID;
    int bits = d->picture_id_bits == 7 ? 7 : 15;
    uint16_t pid = d->picture_id;
    sfu_vp8_frame_t *fr = find_frame(f, pid, bits);
    if (!fr && f->started && f->newest_bits == bits && !pid_newer(pid, f->newest, bits)) {
        /* a frame older than the newest, never seen: all its packets came
         * after a newer frame's (a loss recovered late) */
        fr = place_late_frame(f, d, pid, bits, target_tid);
        if (!fr)
            return 0; /* no place for it in the output order */
    }
    if (!fr) {
        int fwd = decide_frame(f, d, target_tid);
        f->started = 1;
        f->newest = pid;
        f->newest_bits = bits;
        fr = &f->frames[f->head];
        f->head = (f->head + 1) % SFU_VP8_FWD_HISTORY;
        if (f->nframes < SFU_VP8_FWD_HISTORY)
            f->nframes++;
        fr->in_pid = pid;
        fr->bits = (uint8_t)bits;
        fr->forwarded = (uint8_t)fwd;
        if (!fwd) {
            f->dropped_since++;
        } else {
            f->out_pid = f->have_out ? next_out_pid(f, pid, bits) : pid;
            f->have_out = 1;
            f->have_fwd_in = 1;
            f->last_fwd_in = pid;
            f->dropped_since = 0;
            fr->out_pid = f->out_pid;
            if (d->has_tl0picidx && !f->have_tl0) {
                /* first TL0PICIDX of this stream: continue the output's */
                uint8_t want = f->have_out_tl0 ? (uint8_t)(f->out_tl0 + ((d->has_tid ? d->tid : 0) == 0)) : d->tl0picidx;
                f->tl0_delta = (uint8_t)(want - d->tl0picidx);
                f->have_tl0 = 1;
            }
            if (d->has_tl0picidx && f->have_tl0) {
                f->out_tl0 = (uint8_t)(d->tl0picidx + f->tl0_delta);
                f->have_out_tl0 = 1;
            }
        }
    }
    if (!fr->forwarded)
        return 0;
    if (out) {
        size_t o = d->picture_id_offset;
        if (bits == 15) {
            out[o] = (uint8_t)(0x80 | ((fr->out_pid >> 8) & 0x7f));
            out[o + 1] = (uint8_t)(fr->out_pid & 0xff);
        } else {
            out[o] = (uint8_t)(fr->out_pid & 0x7f);
        }
        if (d->has_tl0picidx && f->have_tl0)
            out[d->tl0picidx_offset] = (uint8_t)(d->tl0picidx + f->tl0_delta);
    }
    return 1;
}
