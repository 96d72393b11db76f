/* Transport-wide congestion control feedback: receiver, builder, parser
 * (see twcc.h). */
#include "twcc.h"

#include <string.h>

#include "sfu_bytes.h"

#define TWCC_PT 205
#define TWCC_FMT 15
#define RUN_MAX 8191      /* 13-bit run length */
#define SLOT(e) ((size_t)((uint64_t)(e) & (SFU_TWCC_WINDOW - 1)))

void sfu_twcc_recv_init(sfu_twcc_recv_t *r)
{
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < SFU_TWCC_WINDOW; i++)
        r->seq[i] = -1;
}

int sfu_twcc_read_ext(const uint8_t *ext_data, size_t len, uint16_t *seq)
{
    if (ext_data == NULL || len < 2)
        return -1;
    *seq = sfu_load_be16(ext_data);
    return 0;
}

int sfu_twcc_on_packet(sfu_twcc_recv_t *r, uint16_t transport_seq, uint64_t arrival_us)
{
    int64_t ext;
    if (!r->started) {
        /* Start well above 0 so that reordered packets before the first one
         * keep non-negative unwrapped numbers. */
        ext = ((int64_t)1 << 20) + transport_seq;
        r->started = 1;
        r->highest = ext;
        r->begin = ext;
    } else {
        ext = r->highest + (int16_t)(uint16_t)(transport_seq - (uint16_t)r->highest);
    }
    if (ext <= r->highest - SFU_TWCC_WINDOW) {
        r->late++;
        return 0;
    }
    if (ext < r->begin) {
        if (r->reported) {
            r->late++; /* already reported (as not received) */
            return 0;
        }
        r->begin = ext; /* nothing reported yet: widen the first feedback */
    }
    size_t slot = SLOT(ext);
    if (r->seq[slot] == ext) {
        r->duplicates++;
        return 0;
    }
    r->seq[slot] = ext;
    r->arrival_us[slot] = arrival_us;
    r->received++;
    if (ext > r->highest) {
        r->highest = ext;
        if (r->highest - r->begin >= SFU_TWCC_WINDOW)
            r->begin = r->highest - SFU_TWCC_WINDOW + 1;
    }
    /* The first feedback must not outgrow the window either. */
    if (r->highest - r->begin >= SFU_TWCC_WINDOW)
        r->begin = r->highest - SFU_TWCC_WINDOW + 1;
    return 1;
}

int sfu_twcc_pending(const sfu_twcc_recv_t *r)
{
    return r->started && r->highest >= r->begin;
}

static size_t run_length(const uint8_t *st, size_t i, size_t n)
{
    size_t r = 1;
    while (i + r < n && st[i + r] == st[i] && r < RUN_MAX)
        r++;
    return r;
}

/* Greedy chunk encoder. Every chunk but the last covers at least 7
 * symbols, so at most ceil(n/7) chunks are written. Returns bytes written. */
static size_t encode_chunks(const uint8_t *st, size_t n, uint8_t *out)
{
    size_t i = 0, pos = 0;
    while (i < n) {
        size_t rem = n - i;
        size_t run = run_length(st, i, n);
        size_t look = rem < 14 ? rem : 14;
        int has_large = 0;
        for (size_t j = 0; j < look; j++)
            has_large |= st[i + j] == SFU_TWCC_LARGE;
        uint16_t c;
        if (run >= 14 || run == rem || (run >= 7 && has_large)) {
            c = (uint16_t)(((uint16_t)st[i] << 13) | run);
            i += run;
        } else if (!has_large) {
            c = 0x8000;
            for (size_t j = 0; j < look; j++)
                c |= (uint16_t)((st[i + j] & 1) << (13 - j));
            i += look;
        } else {
            size_t k = rem < 7 ? rem : 7;
            c = 0xC000;
            for (size_t j = 0; j < k; j++)
                c |= (uint16_t)((st[i + j] & 3) << (12 - 2 * j));
            i += k;
        }
        sfu_store_be16(out + pos, c);
        pos += 2;
    }
    return pos;
}

int sfu_twcc_build_feedback(sfu_twcc_recv_t *r, uint8_t *out, size_t cap,
                            uint32_t sender_ssrc, uint32_t media_ssrc)
{
    if (!sfu_twcc_pending(r))
        return 0;
    if (out == NULL || cap < SFU_TWCC_HEADER + 4)
        return SFU_TWCC_ENO_ROOM;
    if (cap > 65536 * 4)
        cap = 65536 * 4;

    uint8_t st[SFU_TWCC_WINDOW];
    int32_t dl[SFU_TWCC_WINDOW];
    int64_t span = r->highest - r->begin + 1; /* <= SFU_TWCC_WINDOW */
    int64_t prev_ticks = 0;
    uint32_t ref_time = 0;
    int have_ref = 0;
    size_t delta_bytes = 0, n = 0;
    for (int64_t i = 0; i < span; i++) {
        int64_t e = r->begin + i;
        size_t slot = SLOT(e);
        if (r->seq[slot] != e) {
            st[i] = SFU_TWCC_NOT_RECEIVED;
            dl[i] = 0;
            continue;
        }
        uint64_t a = r->arrival_us[slot];
        int64_t ticks = (int64_t)(a / SFU_TWCC_DELTA_UNIT_US);
        if (!have_ref) {
            uint64_t ref = a / SFU_TWCC_REF_UNIT_US;
            ref_time = (uint32_t)(ref & 0xFFFFFF);
            prev_ticks = (int64_t)(ref * (SFU_TWCC_REF_UNIT_US / SFU_TWCC_DELTA_UNIT_US));
        }
        int64_t d = ticks - prev_ticks;
        uint8_t sym;
        size_t bytes;
        if (d >= 0 && d <= 255) {
            sym = SFU_TWCC_SMALL;
            bytes = 1;
        } else if (d >= INT16_MIN && d <= INT16_MAX) {
            sym = SFU_TWCC_LARGE;
            bytes = 2;
        } else {
            break; /* next feedback, with its own reference time */
        }
        size_t count = (size_t)i + 1;
        size_t need = SFU_TWCC_HEADER + 2 * ((count + 6) / 7) + delta_bytes + bytes;
        need = (need + 3) & ~(size_t)3;
        if (need > cap)
            break;
        have_ref = 1;
        prev_ticks = ticks;
        st[i] = sym;
        dl[i] = (int32_t)d;
        delta_bytes += bytes;
        n = count; /* ends with a received packet */
    }
    if (n == 0)
        return SFU_TWCC_ENO_ROOM;

    size_t pos = SFU_TWCC_HEADER;
    pos += encode_chunks(st, n, out + pos);
    for (size_t i = 0; i < n; i++) {
        if (st[i] == SFU_TWCC_SMALL) {
            out[pos++] = (uint8_t)dl[i];
        } else if (st[i] == SFU_TWCC_LARGE) {
            sfu_store_be16(out + pos, (uint16_t)(int16_t)dl[i]);
            pos += 2;
        }
    }
    while (pos & 3)
        out[pos++] = 0;

    out[0] = 0x80 | TWCC_FMT;
    out[1] = TWCC_PT;
    sfu_store_be16(out + 2, (uint16_t)(pos / 4 - 1));
    sfu_store_be32(out + 4, sender_ssrc);
    sfu_store_be32(out + 8, media_ssrc);
    sfu_store_be16(out + 12, (uint16_t)r->begin);
    sfu_store_be16(out + 14, (uint16_t)n);
    sfu_store_be24(out + 16, ref_time);
    out[19] = r->fb_count;

    r->fb_count++;
    r->reported = 1;
    r->begin += (int64_t)n;
    return (int)pos;
}

int sfu_twcc_parse_feedback(const uint8_t *pkt, size_t len, uint16_t *base_seq,
                            uint16_t *status_count, int32_t *ref_time, uint8_t *fb_count,
                            uint8_t *statuses, int32_t *deltas_250us, int max)
{
    if (pkt == NULL || len < SFU_TWCC_HEADER)
        return SFU_TWCC_ETOO_SHORT;
    if ((pkt[0] >> 6) != 2 || (pkt[0] & 0x1f) != TWCC_FMT || pkt[1] != TWCC_PT)
        return SFU_TWCC_EHEADER;
    size_t plen = ((size_t)sfu_load_be16(pkt + 2) + 1) * 4;
    if (plen > len)
        return SFU_TWCC_ETOO_SHORT;
    if (pkt[0] & 0x20) {
        size_t pad = pkt[plen - 1];
        if (pad == 0 || pad > plen)
            return SFU_TWCC_EHEADER;
        plen -= pad;
    }
    if (plen < SFU_TWCC_HEADER)
        return SFU_TWCC_ETOO_SHORT;
    uint16_t count = sfu_load_be16(pkt + 14);
    uint32_t ref = sfu_load_be24(pkt + 16);
    if (base_seq)
        *base_seq = sfu_load_be16(pkt + 12);
    if (status_count)
        *status_count = count;
    if (ref_time)
        *ref_time = (int32_t)(ref ^ 0x800000) - 0x800000; /* sign-extend 24 bits */
    if (fb_count)
        *fb_count = pkt[19];
    if (count > 0 && (statuses == NULL || deltas_250us == NULL))
        return SFU_TWCC_EARG;
    if ((int)count > max)
        return SFU_TWCC_ENO_ROOM;

    size_t pos = SFU_TWCC_HEADER;
    int k = 0;
    while (k < count) {
        if (pos + 2 > plen)
            return SFU_TWCC_ETOO_SHORT;
        uint16_t c = sfu_load_be16(pkt + pos);
        pos += 2;
        if (!(c & 0x8000)) {
            uint8_t sym = (uint8_t)((c >> 13) & 3);
            int run = c & RUN_MAX;
            if (sym == 3)
                return SFU_TWCC_ECHUNK;
            for (int j = 0; j < run && k < count; j++)
                statuses[k++] = sym;
        } else if (!(c & 0x4000)) {
            for (int j = 0; j < 14 && k < count; j++)
                statuses[k++] = (uint8_t)((c >> (13 - j)) & 1);
        } else {
            for (int j = 0; j < 7 && k < count; j++) {
                uint8_t sym = (uint8_t)((c >> (12 - 2 * j)) & 3);
                if (sym == 3)
                    return SFU_TWCC_ECHUNK;
                statuses[k++] = sym;
            }
        }
    }
    for (k = 0; k < count; k++) {
        if (statuses[k] == SFU_TWCC_SMALL) {
            if (pos + 1 > plen)
                return SFU_TWCC_ETOO_SHORT;
            deltas_250us[k] = pkt[pos++];
        } else if (statuses[k] == SFU_TWCC_LARGE) {
            if (pos + 2 > plen)
                return SFU_TWCC_ETOO_SHORT;
            deltas_250us[k] = (int16_t)sfu_load_be16(pkt + pos);
            pos += 2;
        } else {
            deltas_250us[k] = 0;
        }
    }
    return count;
}
