/* Sequence number rewriting for one outgoing stream (the job of mediasoup's
 * SeqManager). Output stays contiguous across drops, pause/resume (sync) and
 * reordering:
 *
 *   output = input + base - (number of dropped inputs older than input)
 *
 * sync(i)  : the next input i+1 continues right after the highest output.
 * drop(i)  : an input newer than every input so far is skipped; later
 *            outputs close the hole. Older inputs are not recorded (their
 *            output slot has already been passed, so the receiver sees a gap).
 * input(i) : maps i; fails for an input that was dropped.
 *
 * Dropped inputs live in a small array ordered oldest first. Entries older
 * than SFU_SEQ_FOLD_DISTANCE behind the newest input, or the oldest when the
 * array is full, are folded into base (every input after them is newer).
 */
#ifndef SFU_SEQMGR_H
#define SFU_SEQMGR_H

#include <stdint.h>

#define SFU_SEQ_DROPPED_MAX 64
#define SFU_SEQ_FOLD_DISTANCE 4096

typedef struct {
    int started;
    uint16_t base;
    uint16_t max_input;
    uint16_t max_output;
    int ndropped;
    /* After a sync, inputs not newer than the sync point would map onto
     * outputs already sent before it: they are rejected until the stream
     * is SFU_SEQ_FLOOR_SPAN past that point. */
    int has_floor;
    uint16_t floor;
    uint16_t dropped[SFU_SEQ_DROPPED_MAX];
} sfu_seqmgr_t;

#define SFU_SEQ_FLOOR_SPAN 16384

/* a is newer than b in 16-bit serial number arithmetic (RFC 1982). */
static inline int sfu_seq_newer(uint16_t a, uint16_t b)
{
    uint16_t d = (uint16_t)(a - b);
    return d != 0 && d < 0x8000;
}

static inline void sfu_seqmgr_init(sfu_seqmgr_t *m, uint16_t initial_output)
{
    m->started = 0;
    m->base = 0;
    m->max_input = 0;
    m->max_output = initial_output;
    m->ndropped = 0;
    m->has_floor = 0;
    m->floor = 0;
}

static inline void sfu_seqmgr_sync(sfu_seqmgr_t *m, uint16_t input)
{
    m->base = (uint16_t)(m->max_output - input);
    m->max_input = input;
    m->ndropped = 0;
    m->started = 1;
    m->has_floor = 1;
    m->floor = input;
}

static inline void sfu_seqmgr_fold(sfu_seqmgr_t *m, int k)
{
    m->base = (uint16_t)(m->base - k);
    for (int i = k; i < m->ndropped; i++)
        m->dropped[i - k] = m->dropped[i];
    m->ndropped -= k;
}

/* Folds the dropped entries SFU_SEQ_FOLD_DISTANCE or more behind max_input. */
static inline void sfu_seqmgr_fold_old(sfu_seqmgr_t *m)
{
    int k = 0;
    while (k < m->ndropped && (uint16_t)(m->max_input - m->dropped[k]) >= SFU_SEQ_FOLD_DISTANCE)
        k++;
    if (k)
        sfu_seqmgr_fold(m, k);
}

static inline void sfu_seqmgr_drop(sfu_seqmgr_t *m, uint16_t input)
{
    if (m->started && !sfu_seq_newer(input, m->max_input))
        return;
    if (!m->started) {
        /* Nothing was output yet: the hole is closed by moving base. */
        m->started = 1;
        m->max_input = input;
        m->base = (uint16_t)(m->max_output - input);
        m->has_floor = 1;
        m->floor = input;
        return;
    }
    m->max_input = input;
    if (m->ndropped == SFU_SEQ_DROPPED_MAX)
        sfu_seqmgr_fold(m, 1);
    m->dropped[m->ndropped++] = input;
    sfu_seqmgr_fold_old(m);
}

static inline int sfu_seqmgr_input(sfu_seqmgr_t *m, uint16_t input, uint16_t *output)
{
    if (m->has_floor) {
        if (!sfu_seq_newer(input, m->floor))
            return 0;
        if ((uint16_t)(input - m->floor) >= SFU_SEQ_FLOOR_SPAN)
            m->has_floor = 0;
    }
    /* Fold here too: a stream that stops dropping must not keep old entries
     * until serial arithmetic wraps (gap at +32768, false drop at +65536). */
    if (m->started && m->ndropped && sfu_seq_newer(input, m->max_input)) {
        m->max_input = input;
        sfu_seqmgr_fold_old(m);
    }
    uint16_t base = m->base;
    for (int i = 0; i < m->ndropped; i++) {
        uint16_t d = m->dropped[i];
        if (d == input)
            return 0;
        if (sfu_seq_newer(input, d))
            base--;
        else
            break;
    }
    uint16_t out = (uint16_t)(input + base);
    if (!m->started) {
        m->started = 1;
        m->max_input = input;
        m->max_output = out;
    } else {
        if (sfu_seq_newer(input, m->max_input))
            m->max_input = input;
        if (sfu_seq_newer(out, m->max_output))
            m->max_output = out;
    }
    *output = out;
    return 1;
}

#endif
