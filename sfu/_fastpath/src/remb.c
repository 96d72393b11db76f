/* REMB parse/build and the per-producer aggregator (see remb.h). */
#include "remb.h"

#include <string.h>

#include "sfu_bytes.h"

#define REMB_PT 206
#define REMB_FMT 15
#define REMB_FIXED 20

int sfu_remb_parse(const uint8_t *pkt, size_t len, uint64_t *bitrate_bps,
                   uint32_t *ssrcs, int max_ssrcs)
{
    if (pkt == NULL || len < REMB_FIXED)
        return SFU_REMB_ETOO_SHORT;
    if ((pkt[0] >> 6) != 2 || (pkt[0] & 0x1f) != REMB_FMT || pkt[1] != REMB_PT)
        return SFU_REMB_EHEADER;
    size_t plen = ((size_t)sfu_load_be16(pkt + 2) + 1) * 4;
    if (plen > len)
        return SFU_REMB_ETOO_SHORT;
    if (pkt[0] & 0x20) { /* padding: its count is the last byte */
        size_t pad = pkt[plen - 1];
        if (pad == 0 || pad > plen)
            return SFU_REMB_EHEADER;
        plen -= pad;
    }
    if (plen < REMB_FIXED)
        return SFU_REMB_ETOO_SHORT;
    if (memcmp(pkt + 12, "REMB", 4) != 0)
        return SFU_REMB_ENOT_REMB;
    int n = pkt[16];
    if ((size_t)REMB_FIXED + 4 * (size_t)n > plen)
        return SFU_REMB_ETOO_SHORT;
    uint32_t exp = pkt[17] >> 2;
    uint64_t mantissa = ((uint64_t)(pkt[17] & 0x03) << 16) | ((uint64_t)pkt[18] << 8) | pkt[19];
    uint64_t br;
    if (mantissa == 0)
        br = 0;
    else if (exp > 0 && (mantissa >> (64 - exp)) != 0)
        br = UINT64_MAX; /* exp is at most 63: saturate when bits fall off */
    else
        br = mantissa << exp;
    if (bitrate_bps)
        *bitrate_bps = br;
    if (ssrcs != NULL) {
        int k = n < max_ssrcs ? n : max_ssrcs;
        for (int i = 0; i < k; i++)
            ssrcs[i] = sfu_load_be32(pkt + REMB_FIXED + 4 * i);
    }
    return n;
}

void sfu_remb_encode_bitrate(uint64_t bitrate_bps, uint8_t *exp, uint32_t *mantissa)
{
    uint8_t e = 0;
    while ((bitrate_bps >> e) > SFU_REMB_MANTISSA_MAX)
        e++;
    *exp = e;
    *mantissa = (uint32_t)(bitrate_bps >> e);
}

int sfu_remb_build(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t bitrate_bps,
                   const uint32_t *ssrcs, int n)
{
    if (n < 0 || n > 255 || (n > 0 && ssrcs == NULL) || out == NULL)
        return SFU_REMB_EARG;
    size_t total = REMB_FIXED + 4 * (size_t)n;
    if (cap < total)
        return SFU_REMB_ENO_ROOM;
    uint8_t exp;
    uint32_t mantissa;
    sfu_remb_encode_bitrate(bitrate_bps, &exp, &mantissa);
    out[0] = 0x80 | REMB_FMT;
    out[1] = REMB_PT;
    sfu_store_be16(out + 2, (uint16_t)(total / 4 - 1));
    sfu_store_be32(out + 4, sender_ssrc);
    sfu_store_be32(out + 8, 0);
    memcpy(out + 12, "REMB", 4);
    out[16] = (uint8_t)n;
    out[17] = (uint8_t)((exp << 2) | ((mantissa >> 16) & 0x03));
    out[18] = (uint8_t)(mantissa >> 8);
    out[19] = (uint8_t)mantissa;
    for (int i = 0; i < n; i++)
        sfu_store_be32(out + REMB_FIXED + 4 * i, ssrcs[i]);
    return (int)total;
}

/* ------------------------------------------------------------ aggregator */

void sfu_remb_agg_init(sfu_remb_agg_t *a)
{
    memset(a, 0, sizeof(*a));
}

static int expired(const sfu_remb_agg_entry_t *e, uint64_t now_ms)
{
    /* An entry stamped in the "future" (clock handed in out of order) is live. */
    return now_ms > e->updated_ms && now_ms - e->updated_ms > SFU_REMB_EXPIRE_MS;
}

int sfu_remb_agg_update(sfu_remb_agg_t *a, uint32_t consumer_id, uint64_t bitrate_bps,
                        uint64_t now_ms)
{
    sfu_remb_agg_entry_t *free_slot = NULL, *highest = NULL;
    for (int i = 0; i < SFU_REMB_AGG_SLOTS; i++) {
        sfu_remb_agg_entry_t *e = &a->entries[i];
        if (e->used && e->consumer_id == consumer_id) {
            e->bitrate_bps = bitrate_bps;
            e->updated_ms = now_ms;
            return 1;
        }
    }
    for (int i = 0; i < SFU_REMB_AGG_SLOTS; i++) {
        sfu_remb_agg_entry_t *e = &a->entries[i];
        if (!e->used || expired(e, now_ms)) {
            if (free_slot == NULL)
                free_slot = e;
        } else if (highest == NULL || e->bitrate_bps > highest->bitrate_bps) {
            highest = e;
        }
    }
    sfu_remb_agg_entry_t *slot = free_slot;
    if (slot == NULL) {
        if (highest == NULL || bitrate_bps >= highest->bitrate_bps)
            return 0;
        slot = highest;
    }
    slot->used = 1;
    slot->consumer_id = consumer_id;
    slot->bitrate_bps = bitrate_bps;
    slot->updated_ms = now_ms;
    return 1;
}

int sfu_remb_agg_remove(sfu_remb_agg_t *a, uint32_t consumer_id)
{
    for (int i = 0; i < SFU_REMB_AGG_SLOTS; i++) {
        sfu_remb_agg_entry_t *e = &a->entries[i];
        if (e->used && e->consumer_id == consumer_id) {
            e->used = 0;
            return 1;
        }
    }
    return 0;
}

int sfu_remb_agg_count(const sfu_remb_agg_t *a)
{
    int n = 0;
    for (int i = 0; i < SFU_REMB_AGG_SLOTS; i++)
        n += a->entries[i].used;
    return n;
}

int sfu_remb_agg_poll(sfu_remb_agg_t *a, uint64_t now_ms, uint64_t floor_bps, uint64_t *out_bps)
{
    int live = 0;
    uint64_t min = UINT64_MAX;
    for (int i = 0; i < SFU_REMB_AGG_SLOTS; i++) {
        sfu_remb_agg_entry_t *e = &a->entries[i];
        if (!e->used)
            continue;
        if (expired(e, now_ms)) {
            e->used = 0;
            continue;
        }
        live = 1;
        if (e->bitrate_bps < min)
            min = e->bitrate_bps;
    }
    if (!live)
        return 0;
    uint64_t v = min < floor_bps ? floor_bps : min;
    int send;
    if (!a->sent_any)
        send = 1;
    else if (now_ms < a->last_sent_ms || now_ms - a->last_sent_ms >= SFU_REMB_INTERVAL_MS)
        send = 1;
    else /* dropped by more than 25% (overflow-free form of v < 0.75 * last) */
        send = v < a->last_sent_bps && a->last_sent_bps - v > a->last_sent_bps / 4;
    if (!send)
        return 0;
    a->sent_any = 1;
    a->last_sent_bps = v;
    a->last_sent_ms = now_ms;
    if (out_bps)
        *out_bps = v;
    return 1;
}
