#include "rtx_buffer.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- packet store */

int sfu_packet_store_init(sfu_packet_store_t *s, uint32_t capacity)
{
    memset(s, 0, sizeof(*s));
    if (capacity == 0 || capacity > SFU_STORE_MAX_CAPACITY || (capacity & (capacity - 1)))
        return -1;
    /* calloc: large allocations come zeroed from mmap, untouched pages stay free */
    s->slots = calloc(capacity, sizeof(sfu_store_slot_t));
    if (!s->slots)
        return -1;
    s->capacity = capacity;
    s->mask = capacity - 1;
    return 0;
}

void sfu_packet_store_free(sfu_packet_store_t *s)
{
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

void sfu_packet_store_clear(sfu_packet_store_t *s)
{
    for (uint32_t i = 0; i < s->capacity; i++)
        s->slots[i].len = 0;
    s->started = 0;
}

/* seq is within the last `capacity` numbers (newest included). */
static inline int store_in_window(const sfu_packet_store_t *s, uint16_t seq)
{
    uint16_t behind = (uint16_t)(s->highest - seq);
    return behind < s->capacity;
}

int sfu_packet_store_put(sfu_packet_store_t *s, uint16_t seq, const uint8_t *pkt, size_t len,
                         uint64_t now_ms)
{
    if (!s->slots || len == 0 || len > SFU_STORE_MAX_PACKET)
        return 0;
    if (!s->started) {
        s->started = 1;
        s->highest = seq;
    } else {
        uint16_t d = (uint16_t)(seq - s->highest);
        if (d != 0 && d < 0x8000) {
            /* Empty the slots of the skipped numbers, so that none of them
             * can return a packet stored 65536 numbers ago. */
            uint32_t skipped = d - 1u < s->capacity ? d - 1u : s->capacity;
            for (uint32_t i = 1; i <= skipped; i++)
                s->slots[(uint16_t)(s->highest + i) & s->mask].len = 0;
            s->highest = seq;
        } else if (!store_in_window(s, seq))
            return 0; /* too old: its slot belongs to a newer number */
    }
    sfu_store_slot_t *slot = &s->slots[seq & s->mask];
    memcpy(slot->data, pkt, len);
    slot->len = (uint16_t)len;
    slot->seq = seq;
    slot->stored_ms = now_ms;
    s->stored++;
    return 1;
}

const uint8_t *sfu_packet_store_get(sfu_packet_store_t *s, uint16_t seq, size_t *len,
                                    uint64_t now_ms, uint32_t max_age_ms)
{
    if (!s->slots || !s->started || !store_in_window(s, seq))
        goto miss;
    const sfu_store_slot_t *slot = &s->slots[seq & s->mask];
    if (slot->len == 0 || slot->seq != seq)
        goto miss;
    if (max_age_ms && now_ms > slot->stored_ms && now_ms - slot->stored_ms > max_age_ms)
        goto miss;
    s->hits++;
    *len = slot->len;
    return slot->data;
miss:
    s->misses++;
    *len = 0;
    return NULL;
}

int sfu_packet_store_expired(const sfu_packet_store_t *s, uint16_t seq, uint64_t now_ms, uint32_t max_age_ms)
{
    if (!s->slots || !s->started)
        return 0;
    if (!store_in_window(s, seq))
        return (uint16_t)(s->highest - seq) < 0x8000; /* behind the window, not ahead of it */
    const sfu_store_slot_t *slot = &s->slots[seq & s->mask];
    return slot->len != 0 && slot->seq == seq && max_age_ms && now_ms > slot->stored_ms &&
           now_ms - slot->stored_ms > max_age_ms;
}

/* ---------------------------------------------------------------- sequence map */

void sfu_seq_map_init(sfu_seq_map_t *m)
{
    memset(m, 0, sizeof(*m));
}

static inline int seq_map_in_window(const sfu_seq_map_t *m, uint16_t out_seq)
{
    return m->started && (uint16_t)(m->highest - out_seq) < SFU_SEQ_MAP_SIZE;
}

void sfu_seq_map_put(sfu_seq_map_t *m, uint16_t out_seq, uint16_t in_seq)
{
    if (!m->started) {
        m->started = 1;
        m->highest = out_seq;
    } else {
        uint16_t d = (uint16_t)(out_seq - m->highest);
        if (d != 0 && d < 0x8000) {
            /* forget the skipped numbers (no entry from 65536 numbers ago) */
            uint32_t skipped = d - 1u < SFU_SEQ_MAP_SIZE ? d - 1u : SFU_SEQ_MAP_SIZE;
            for (uint32_t i = 1; i <= skipped; i++)
                m->e[(uint16_t)(m->highest + i) & (SFU_SEQ_MAP_SIZE - 1)].valid = 0;
            m->highest = out_seq;
        } else if (!seq_map_in_window(m, out_seq))
            return;
    }
    sfu_seq_map_entry_t *e = &m->e[out_seq & (SFU_SEQ_MAP_SIZE - 1)];
    e->out_seq = out_seq;
    e->in_seq = in_seq;
    e->valid = 1;
    e->resent = 0;
    e->resent_ms = 0;
}

static inline sfu_seq_map_entry_t *seq_map_find(const sfu_seq_map_t *m, uint16_t out_seq)
{
    if (!seq_map_in_window(m, out_seq))
        return NULL;
    const sfu_seq_map_entry_t *e = &m->e[out_seq & (SFU_SEQ_MAP_SIZE - 1)];
    if (!e->valid || e->out_seq != out_seq)
        return NULL;
    return (sfu_seq_map_entry_t *)e;
}

int sfu_seq_map_get(const sfu_seq_map_t *m, uint16_t out_seq, uint16_t *in_seq)
{
    const sfu_seq_map_entry_t *e = seq_map_find(m, out_seq);
    if (!e)
        return 0;
    *in_seq = e->in_seq;
    return 1;
}

int sfu_seq_map_may_resend(sfu_seq_map_t *m, uint16_t out_seq, uint64_t now_ms, uint32_t rtt_ms)
{
    sfu_seq_map_entry_t *e = seq_map_find(m, out_seq);
    if (!e)
        return 0;
    uint32_t interval = rtt_ms ? rtt_ms : SFU_SEQ_MAP_DEFAULT_RTT_MS;
    if (interval > 60000) /* keep the wrapping comparison meaningful */
        interval = 60000;
    uint32_t now = (uint32_t)now_ms;
    if (e->resent && (int32_t)(now - e->resent_ms) < (int32_t)interval)
        return 0;
    e->resent = 1;
    e->resent_ms = now;
    return 1;
}
