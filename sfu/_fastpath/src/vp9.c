/* VP9 payload descriptor parsing and the SVC layer filter (vp9.h). */
#include "vp9.h"

#include <string.h>

/* Walks the scalability structure at p[*i..len). */
static int parse_ss(const uint8_t *p, size_t len, size_t *i, sfu_vp9_desc_t *d)
{
    size_t k = *i;
    if (k >= len)
        return SFU_VP9_ETRUNCATED;
    uint8_t b = p[k++];
    int n_s = (b >> 5) + 1;
    d->ss_spatial_layers = n_s;
    d->ss_has_resolutions = (b >> 4) & 1;
    d->ss_has_group = (b >> 3) & 1;
    if (d->ss_has_resolutions) {
        if (len - k < (size_t)n_s * 4)
            return SFU_VP9_ETRUNCATED;
        for (int s = 0; s < n_s; s++) {
            d->ss_width[s] = (uint16_t)((p[k] << 8) | p[k + 1]);
            d->ss_height[s] = (uint16_t)((p[k + 2] << 8) | p[k + 3]);
            k += 4;
        }
    }
    if (d->ss_has_group) {
        if (k >= len)
            return SFU_VP9_ETRUNCATED;
        int n_g = p[k++];
        d->ss_group_size = n_g;
        for (int g = 0; g < n_g; g++) {
            if (k >= len)
                return SFU_VP9_ETRUNCATED;
            int r = (p[k++] >> 2) & 0x03;
            if (len - k < (size_t)r)
                return SFU_VP9_ETRUNCATED;
            k += (size_t)r; /* P_DIFF bytes */
        }
    }
    *i = k;
    return 0;
}

int sfu_vp9_parse(const uint8_t *p, size_t len, sfu_vp9_desc_t *d)
{
    memset(d, 0, sizeof(*d));
    if (!p || len < 1)
        return SFU_VP9_ETRUNCATED;
    uint8_t b0 = p[0];
    d->has_picture_id = b0 >> 7;
    d->inter_picture_predicted = (b0 >> 6) & 1;
    d->has_layer_indices = (b0 >> 5) & 1;
    d->flexible = (b0 >> 4) & 1;
    d->begin_of_frame = (b0 >> 3) & 1;
    d->end_of_frame = (b0 >> 2) & 1;
    d->has_ss = (b0 >> 1) & 1;
    d->not_reference = b0 & 1;
    size_t i = 1;
    if (d->has_picture_id) {
        if (i >= len)
            return SFU_VP9_ETRUNCATED;
        d->picture_id_offset = i;
        if (p[i] & 0x80) {
            if (i + 1 >= len)
                return SFU_VP9_ETRUNCATED;
            d->picture_id = (uint16_t)(((p[i] & 0x7f) << 8) | p[i + 1]);
            d->picture_id_bits = 15;
            i += 2;
        } else {
            d->picture_id = p[i] & 0x7f;
            d->picture_id_bits = 7;
            i += 1;
        }
    }
    if (d->has_layer_indices) {
        if (i >= len)
            return SFU_VP9_ETRUNCATED;
        uint8_t b = p[i++];
        d->tid = b >> 5;
        d->switching_up_point = (b >> 4) & 1;
        d->sid = (b >> 1) & 0x07;
        d->inter_layer_dependency = b & 1;
        if (!d->flexible) {
            if (i >= len)
                return SFU_VP9_ETRUNCATED;
            d->has_tl0picidx = 1;
            d->tl0picidx_offset = i;
            d->tl0picidx = p[i++];
        }
    }
    if (d->flexible && d->inter_picture_predicted) {
        int more = 1;
        while (more) {
            if (d->num_ref == SFU_VP9_MAX_REFS)
                return SFU_VP9_ETRUNCATED; /* N=1 on the third index: no room for a fourth */
            if (i >= len)
                return SFU_VP9_ETRUNCATED;
            uint8_t r = p[i++];
            d->p_diff[d->num_ref++] = r >> 1;
            more = r & 1;
        }
    }
    if (d->has_ss) {
        int rc = parse_ss(p, len, &i, d);
        if (rc < 0)
            return rc;
    }
    d->descriptor_len = i;
    if (i >= len)
        return SFU_VP9_EINVALID;
    d->keyframe = !d->inter_picture_predicted && d->begin_of_frame && d->sid == 0;
    return 0;
}

void sfu_vp9_fwd_init(sfu_vp9_fwd_t *f)
{
    memset(f, 0, sizeof(*f));
}

/* Whether the packet starts a picture not seen before. */
static int new_picture(sfu_vp9_fwd_t *f, const sfu_vp9_desc_t *d)
{
    if (d->has_picture_id) {
        int fresh = !f->have_picture || d->picture_id != f->picture_id;
        f->have_picture = 1;
        f->picture_id = d->picture_id;
        return fresh;
    }
    return d->begin_of_frame && d->sid == 0;
}

int sfu_vp9_fwd_packet(sfu_vp9_fwd_t *f, const sfu_vp9_desc_t *d, int target_sid, int target_tid, int ksvc,
                       int *set_marker)
{
    *set_marker = 0;
    if (target_sid < 0)
        target_sid = 0;
    if (target_tid < 0)
        target_tid = 0;
    if (d->has_ss && d->ss_spatial_layers > 0)
        f->spatial_layers = d->ss_spatial_layers;
    int picture_start = new_picture(f, d);
    if (d->keyframe) {
        /* a key picture: every layer may start here */
        f->started = 1;
        f->sid = target_sid;
        f->tid = target_tid;
    } else if (!f->started) {
        return 0;
    } else if (picture_start) {
        if (target_sid < f->sid)
            f->sid = target_sid;
        if (target_tid < f->tid)
            f->tid = target_tid;
    }
    if (!ksvc && d->begin_of_frame && !d->inter_picture_predicted && d->sid == f->sid + 1 && d->sid <= target_sid)
        f->sid = d->sid;
    if (d->sid > f->sid || d->tid > f->tid)
        return 0;
    if (d->switching_up_point && target_tid > f->tid)
        f->tid = target_tid;
    int top = f->sid;
    if (f->spatial_layers > 0 && top > f->spatial_layers - 1)
        top = f->spatial_layers - 1;
    if (d->end_of_frame && d->sid >= top)
        *set_marker = 1;
    return 1;
}
