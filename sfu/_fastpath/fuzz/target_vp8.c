/* Fuzz target: the VP8 and VP9 payload descriptor units (src/vp8.c,
 * src/vp9.c): both parsers and both forwarding states.
 *
 * The input (first byte even) is a series of records: a control byte, a
 * length byte, then that many payload bytes (the last record takes what
 * is left); with the first byte odd, records of 4 bytes pick, edit and
 * replay built-in real payload heads (see the edit mode below). Each
 * payload is parsed as VP8 and as VP9; a parsed one goes through a VP8
 * forwarder / VP9 filter kept across the records of the input, with the
 * stream-switch flag and the target layers taken from the control byte.
 * The VP8 output is a heap copy of exactly the payload's size (ASan sees
 * any write past it). Any broken invariant aborts. Registered in
 * targets.c as "vp8".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/vp8.h"
#include "../src/vp9.h"

int sfu_fuzz_vp8(const uint8_t *data, size_t size);

/* generated from the .rtp captures of tests/fixtures (real VP8/VP9 payload heads) and
 * test_vp9.py's hand-built SVC descriptors */
static const uint8_t seed_heads[][32] = {
    {0x90, 0xe0, 0x83, 0xe8, 0x00, 0x20, 0xb0, 0x1c},
    {0x80, 0xe0, 0x83, 0xe8, 0x00, 0x20, 0xcd, 0xbe},
    {0xb0, 0xe0, 0x83, 0xe9, 0x00, 0xa0, 0xb1, 0x04},
    {0xb0, 0xe0, 0x83, 0xea, 0x00, 0x60, 0x71, 0x04},
    {0xb0, 0xe0, 0x83, 0xeb, 0x00, 0x80, 0x11, 0x05},
    {0x90, 0xe0, 0x83, 0xec, 0x01, 0x00, 0xb1, 0x05},
    {0xb0, 0xe0, 0x83, 0xed, 0x01, 0xa0, 0x91, 0x05},
    {0xb0, 0xe0, 0x83, 0xee, 0x01, 0x60, 0x31, 0x05},
    {0xb0, 0xe0, 0x83, 0xef, 0x01, 0x80, 0x91, 0x05},
    {0x90, 0xe0, 0x83, 0xf0, 0x02, 0x00, 0xb1, 0x05},
    {0xb0, 0xe0, 0x83, 0xf1, 0x02, 0xa0, 0x71, 0x05},
    {0xb0, 0xe0, 0x83, 0xf2, 0x02, 0x60, 0xb1, 0x04},
    {0xb0, 0xe0, 0x83, 0xf3, 0x02, 0x80, 0xd1, 0x05},
    {0x90, 0xe0, 0x83, 0xf4, 0x03, 0x20, 0x10, 0x1a},
    {0x90, 0xe0, 0xff, 0xe4, 0x00, 0x20, 0x70, 0x36},
    {0x80, 0xe0, 0xff, 0xe4, 0x00, 0x20, 0xd5, 0x29},
    {0x80, 0xe0, 0xff, 0xe4, 0x00, 0x20, 0xd1, 0x59},
    {0x80, 0xe0, 0xff, 0xe4, 0x00, 0x20, 0xbe, 0xc7},
    {0x80, 0xe0, 0xff, 0xe4, 0x00, 0x20, 0x7f, 0xbc},
    {0x80, 0xe0, 0xff, 0xe4, 0x00, 0x20, 0x68, 0x8a},
    {0xb0, 0xe0, 0xff, 0xe5, 0x00, 0xa0, 0x31, 0x11},
    {0xa0, 0xe0, 0xff, 0xe5, 0x00, 0xa0, 0x8c, 0x59},
    {0x90, 0x80, 0x64, 0x70, 0x14, 0x00, 0x9d, 0x01},
    {0x80, 0x80, 0x64, 0xe9, 0x2a, 0x1b, 0x9f, 0xc0},
    {0x90, 0x80, 0x65, 0x11, 0x05, 0x00, 0x10, 0x10},
    {0x8e, 0xc8, 0x22, 0x18, 0x01, 0x40, 0x00, 0xf0, 0x01, 0x04, 0x01, 0xb1, 0x24, 0xc1},
    {0xcc, 0xc8, 0x23, 0xb3, 0x00, 0x20, 0x49, 0x4e, 0x40, 0x25, 0x20, 0x00, 0x01, 0x80},
    {0xcc, 0xc8, 0x24, 0xb3, 0x00, 0x20, 0x49, 0x4e, 0x40, 0x2a, 0x40, 0x00, 0x01, 0x80},
    {0xaa, 0x80, 0x64, 0x00, 0x00, 0x58, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x05, 0x00, 0x02, 0xd0, 0x04, 0x04, 0x04, 0x54, 0x01, 0x34, 0x02, 0x44, 0x01, 0xb3, 0x00, 0x20, 0x49, 0x4e},
    {0xa8, 0x80, 0x64, 0x03, 0x00, 0xb3, 0x00, 0x20, 0x49, 0x4e, 0x40, 0x25, 0x20, 0x00, 0x01},
    {0xa8, 0x80, 0x64, 0x05, 0x00, 0xb3, 0x00, 0x20, 0x49, 0x4e, 0x40, 0x25, 0x20, 0x00, 0x01},
    {0xe8, 0x80, 0x65, 0x50, 0x00, 0xb3, 0x00, 0x20, 0x49, 0x4e, 0x40, 0x25, 0x20, 0x00, 0x01},
    {0xe8, 0x80, 0x65, 0x53, 0x00, 0xb3, 0x00, 0x20, 0x49, 0x4e, 0x40, 0x25, 0x20, 0x00, 0x01},
    {0xe8, 0x80, 0x65, 0x55, 0x00, 0xb3, 0x00, 0x20, 0x49, 0x4e, 0x40, 0x25, 0x20, 0x00, 0x01},
};
static const uint8_t seed_lens[] = {8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 14, 14, 14, 32, 15, 15, 15, 15, 15};

#define NSEEDS (sizeof(seed_lens) / sizeof(seed_lens[0]))

/* what the inputs reached, printed at exit with SFU_FUZZ_STATS set */
static struct {
    unsigned long vp8_parsed, vp8_rewritten, vp8_dropped, vp9_parsed, vp9_forwarded, vp9_dropped, vp9_markers;
} st;

static void print_stats(void)
{
    fprintf(stderr,
            "vp8: parsed %lu rewritten %lu dropped %lu; vp9: parsed %lu forwarded %lu dropped %lu markers %lu\n",
            st.vp8_parsed, st.vp8_rewritten, st.vp8_dropped, st.vp9_parsed, st.vp9_forwarded, st.vp9_dropped,
            st.vp9_markers);
}

static void check_vp8(sfu_vp8_fwd_t *f, const uint8_t *p, size_t n, uint8_t ctl)
{
    sfu_vp8_desc_t d;
    if (sfu_vp8_parse(p, n, &d) < 0)
        return;
    st.vp8_parsed++;
    if (d.descriptor_len >= n || d.descriptor_len > 6 || d.partition_id > 7)
        abort();
    if (d.has_picture_id) {
        if (!(d.picture_id_bits == 7 || d.picture_id_bits == 15) || d.picture_id >> d.picture_id_bits)
            abort();
        if (d.picture_id_offset + (d.picture_id_bits == 15 ? 2 : 1) > d.descriptor_len)
            abort();
    }
    if (d.has_tl0picidx && d.tl0picidx_offset >= d.descriptor_len)
        abort();
    if (d.tid > 3 || d.keyidx > 31)
        abort();
    uint8_t *out = malloc(n);
    if (!out)
        return;
    memcpy(out, p, n);
    int switched = (ctl >> 7) & 1, target = (ctl >> 5) & 3;
    /* a short out buffer is refused without touching it */
    if (d.descriptor_len > 0 && sfu_vp8_fwd_packet(f, &d, 0, target, out, d.descriptor_len - 1) >= 0 &&
        d.has_picture_id)
        abort();
    int had_out = f->have_out;
    uint16_t before = f->out_pid;
    int rc = sfu_vp8_fwd_packet(f, &d, switched, target, out, n);
    if (rc != 0 && rc != 1)
        abort();
    if (f->tid < 0 || f->tid > 3 || f->out_pid > 0x7fff)
        abort();
    if (had_out && f->out_pid != before) {
        /* a new forwarded frame: the output id moves forward by 1..MAX_PID_GAP */
        uint16_t step = (uint16_t)((f->out_pid - before) & 0x7fff);
        if (step < 1 || step > SFU_VP8_MAX_PID_GAP)
            abort();
    }
    if (rc == 0)
        st.vp8_dropped++;
    if (rc == 1 && d.has_picture_id)
        st.vp8_rewritten++;
    if (rc == 1) {
        sfu_vp8_desc_t o;
        if (sfu_vp8_parse(out, n, &o) != 0 || o.descriptor_len != d.descriptor_len ||
            o.has_picture_id != d.has_picture_id || o.picture_id_bits != d.picture_id_bits ||
            o.has_tid != d.has_tid || o.tid != d.tid || o.keyframe != d.keyframe)
            abort();
        if (memcmp(out + d.descriptor_len, p + d.descriptor_len, n - d.descriptor_len) != 0)
            abort(); /* only descriptor bytes are rewritten */
        if (!d.has_picture_id && memcmp(out, p, n) != 0)
            abort();
    }
    free(out);
}

static void check_vp9(sfu_vp9_fwd_t *f, const uint8_t *p, size_t n, uint8_t ctl)
{
    sfu_vp9_desc_t d;
    if (sfu_vp9_parse(p, n, &d) < 0)
        return;
    st.vp9_parsed++;
    if (d.descriptor_len >= n || d.sid > 7 || d.tid > 7 || d.num_ref > SFU_VP9_MAX_REFS)
        abort();
    if (d.has_ss && (d.ss_spatial_layers < 1 || d.ss_spatial_layers > SFU_VP9_MAX_SPATIAL))
        abort();
    if (d.has_picture_id && d.picture_id >> d.picture_id_bits)
        abort();
    if (d.has_tl0picidx && d.tl0picidx_offset >= d.descriptor_len)
        abort();
    int tsid = ctl & 3, ttid = (ctl >> 2) & 3, ksvc = (ctl >> 4) & 1;
    int marker = -1;
    int rc = sfu_vp9_fwd_packet(f, &d, tsid, ttid, ksvc, &marker);
    if (rc != 0 && rc != 1)
        abort();
    if (marker != 0 && marker != 1)
        abort();
    if (marker && (!rc || !d.end_of_frame))
        abort();
    st.vp9_forwarded += rc == 1;
    st.vp9_dropped += rc == 0;
    st.vp9_markers += marker == 1;
    if (rc == 1 && (d.sid > f->sid || d.tid > f->tid))
        abort();
    if (f->started && (f->sid < 0 || f->sid > 7 || f->tid < 0 || f->tid > 7))
        abort();
}

int sfu_fuzz_vp8(const uint8_t *data, size_t size)
{
    static int registered;
    if (!registered) {
        registered = 1;
        if (getenv("SFU_FUZZ_STATS"))
            atexit(print_stats);
    }
    if (size > 65536)
        return 0;
    sfu_vp8_fwd_t f8;
    sfu_vp9_fwd_t f9;
    sfu_vp8_fwd_init(&f8);
    sfu_vp9_fwd_init(&f9);
    if (size && (data[0] & 1)) {
        /* edit mode: records of 4 bytes (control, seed head, position,
         * xor value) replay real descriptors, in any order, slightly
         * edited, so the forwarding states see frames and layers */
        for (size_t i = 1; i + 4 <= size; i += 4) {
            size_t k = data[i + 1] % NSEEDS;
            size_t n = seed_lens[k];
            uint8_t *p = malloc(n);
            if (!p)
                return 0;
            memcpy(p, seed_heads[k], n);
            p[data[i + 2] % n] ^= data[i + 3];
            check_vp8(&f8, p, n, data[i]);
            check_vp9(&f9, p, n, data[i]);
            free(p);
        }
        return 0;
    }
    size_t i = 0;
    while (i < size) {
        uint8_t ctl = data[i++];
        size_t n = size - i;
        if (i < size) {
            size_t want = data[i++];
            n = size - i;
            if (want && want < n)
                n = want;
        }
        /* each payload in a heap block of its own size */
        uint8_t *p = malloc(n ? n : 1);
        if (!p)
            return 0;
        memcpy(p, data + i, n);
        check_vp8(&f8, p, n, ctl);
        check_vp9(&f9, p, n, ctl);
        free(p);
        i += n;
    }
    return 0;
}
