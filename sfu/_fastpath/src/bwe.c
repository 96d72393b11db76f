/* Sender-side bandwidth estimation of a transport (bwe.h). */
#include "bwe.h"

#include <stdlib.h>
#include <string.h>

#include "allocator.h"
#include "outbox.h"
#include "rtp.h"
#include "timers.h"
#include "transport.h"

#define SFU_BWE_FEEDBACK_MAX 1024     /* packets one feedback may report */
#define SFU_BWE_PROBE_MAX_PACKETS 64  /* per timer tick */

int sfu_bwe_enable(sfu_engine_t *e, sfu_transport_t *t)
{
    if (t->bwe)
        return 0;
    sfu_bwe_t *b = calloc(1, sizeof(*b));
    if (!b)
        return -1;
    sfu_twcc_send_init(&b->history);
    sfu_gcc_init(&b->gcc, SFU_BWE_START_BPS, SFU_BWE_MIN_BPS, SFU_BWE_MAX_BPS);
    b->probe_interval_ms = SFU_BWE_PROBE_MIN_INTERVAL_MS;
    t->bwe = b; /* its clock starts at its first timer run */
    sfu_allocator_request(e, t);
    return 0;
}

void sfu_bwe_free(sfu_bwe_t *b) { free(b); }

uint32_t sfu_bwe_estimate(const sfu_bwe_t *b) { return sfu_gcc_estimate_bps(&b->gcc); }

int sfu_bwe_stats(const sfu_transport_t *t, sfu_bwe_stats_t *out)
{
    const sfu_bwe_t *b = t->bwe;
    if (!b)
        return 0;
    out->estimate_bps = sfu_bwe_estimate(b);
    out->allocated_bps = b->allocated_bps;
    out->acked_bps = sfu_gcc_acked_bps(&b->gcc);
    out->next_step_bps = b->next_step_bps;
    out->usage = sfu_gcc_usage(&b->gcc);
    out->feedbacks = b->feedbacks;
    out->rembs = b->rembs;
    out->probes = b->probes;
    out->probes_failed = b->probes_failed;
    out->padding_packets = b->padding_packets;
    out->padding_bytes = b->padding_bytes;
    return 1;
}

uint32_t sfu_bwe_limit(const sfu_transport_t *t, uint64_t now_ms)
{
    const sfu_bwe_t *b = t->bwe;
    if (!b)
        return UINT32_MAX;
    if (!b->feedbacks && !b->rembs && (!t->ice || !b->started || now_ms >= b->created_ms + SFU_BWE_SILENT_MS))
        return UINT32_MAX; /* no feedback (yet, from a plain receiver): no limit known */
    return sfu_bwe_estimate(b);
}

void sfu_bwe_allocated(sfu_engine_t *e, sfu_transport_t *t, uint32_t limit_bps, uint32_t allocated_bps,
                       uint32_t next_step_bps)
{
    sfu_bwe_t *b = t->bwe;
    (void)e;
    b->allocated_bps = limit_bps == UINT32_MAX ? 0 : allocated_bps;
    b->alloc_estimate_bps = limit_bps;
    b->next_step_bps = limit_bps == UINT32_MAX ? 0 : next_step_bps;
}

/* After new information: at once when the estimate fell below what is
 * allocated, or rose past the next upgrade's need. */
static void after_estimate(sfu_engine_t *e, sfu_transport_t *t)
{
    sfu_bwe_t *b = t->bwe;
    uint32_t est = sfu_bwe_estimate(b);
    if (est < b->allocated_bps || (b->next_step_bps && est >= b->next_step_bps))
        sfu_allocator_request(e, t);
}

void sfu_bwe_on_feedback(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *pkt, size_t len, uint64_t now_ms)
{
    sfu_bwe_t *b = t->bwe;
    if (!b)
        return;
    static __thread sfu_twcc_result_t results[SFU_BWE_FEEDBACK_MAX];
    int n = sfu_twcc_send_on_feedback(&b->history, pkt, len, results, SFU_BWE_FEEDBACK_MAX);
    if (n < 0) {
        e->counters[SFU_C_DROP_RTCP_MALFORMED]++;
        return;
    }
    b->feedbacks++;
    b->last_feedback_ms = now_ms;
    if (t->rtt.rtt_ms)
        sfu_gcc_on_rtt(&b->gcc, t->rtt.rtt_ms);
    if (n > 0)
        sfu_gcc_on_feedback(&b->gcc, results, n, (int64_t)now_ms * 1000);
    after_estimate(e, t);
}

void sfu_bwe_on_remb(sfu_engine_t *e, sfu_transport_t *t, uint64_t bps, uint64_t now_ms)
{
    sfu_bwe_t *b = t->bwe;
    if (!b)
        return;
    b->rembs++;
    if (b->feedbacks)
        return; /* transport-cc measures it better */
    sfu_gcc_on_remb(&b->gcc, bps > UINT32_MAX ? UINT32_MAX : (uint32_t)bps, (int64_t)now_ms * 1000);
    after_estimate(e, t);
}

/* A consumer whose RTX stream can carry padding: video, RTX negotiated,
 * numbered, already sending (its timestamps are known). */
static sfu_consumer_t *padding_carrier(sfu_transport_t *t)
{
    for (uint32_t i = 0; i < t->nconsumers; i++) {
        sfu_consumer_t *c = t->consumers[i];
        if (c->producer && c->producer->kind_video && c->rtx_ssrc && c->rtx_pt && c->twcc_ext_id &&
            c->ts_started && !c->paused && !c->producer_paused)
            return c;
    }
    return NULL;
}

/* One padding-only packet on the consumer's RTX stream: the P bit set and
 * SFU_BWE_PADDING octets of padding, the consumer's MID and a transport-wide
 * sequence number in its header extension. */
static int send_padding(sfu_engine_t *e, sfu_transport_t *t, sfu_consumer_t *c, uint64_t now_ms)
{
    sfu_socket_t *s = sfu_socket_get(e, t->rtp_socket);
    if (!s)
        return -1;
    sfu_slot_t *slot = sfu_outbox_reserve(e);
    if (!slot)
        return -1;
    uint8_t *out = slot->data;
    int one_byte = c->twcc_ext_id <= 14 && (!c->mid_ext_id || (c->mid_ext_id <= 14 && c->mid_len >= 1));
    size_t pos = SFU_RTP_FIXED_HEADER + 4;
    size_t ext_start = pos;
    uint8_t *tw;
    if (one_byte) {
        if (c->mid_ext_id) {
            out[pos++] = (uint8_t)((c->mid_ext_id << 4) | (c->mid_len - 1));
            memcpy(out + pos, c->mid, c->mid_len);
            pos += c->mid_len;
        }
        out[pos++] = (uint8_t)((c->twcc_ext_id << 4) | 1);
    } else {
        if (c->mid_ext_id) {
            out[pos++] = c->mid_ext_id;
            out[pos++] = c->mid_len;
            memcpy(out + pos, c->mid, c->mid_len);
            pos += c->mid_len;
        }
        out[pos++] = c->twcc_ext_id;
        out[pos++] = 2;
    }
    tw = out + pos;
    pos += 2;
    while ((pos - ext_start) % 4)
        out[pos++] = 0;
    out[0] = 0x80 | 0x20 | 0x10; /* V=2, padding, extension */
    out[1] = c->rtx_pt & 0x7f;
    sfu_rtp_set_seq(out, ++c->rtx_seq);
    sfu_rtp_set_timestamp(out, c->last_ts);
    sfu_rtp_set_ssrc(out, c->rtx_ssrc);
    sfu_store_be16(out + SFU_RTP_FIXED_HEADER, one_byte ? SFU_RTP_EXT_ONE_BYTE : SFU_RTP_EXT_TWO_BYTE);
    sfu_store_be16(out + SFU_RTP_FIXED_HEADER + 2, (uint16_t)((pos - ext_start) / 4));
    memset(out + pos, 0, SFU_BWE_PADDING - 1);
    out[pos + SFU_BWE_PADDING - 1] = SFU_BWE_PADDING;
    pos += SFU_BWE_PADDING;
    uint16_t tseq = sfu_bwe_number(t->bwe, now_ms, pos + 16, t->bwe->probe_cluster);
    tw[0] = (uint8_t)(tseq >> 8);
    tw[1] = (uint8_t)tseq;
    size_t olen = pos;
    if (sfu_transport_protect(e, t, out, &olen) < 0)
        return -1;
    sfu_outbox_commit(e, slot, s, &t->remote, (uint32_t)olen);
    t->rtp_out.packets++;
    t->rtp_out.bytes += olen;
    t->bwe->padding_packets++;
    t->bwe->padding_bytes += olen;
    t->bwe->probe_sent_bytes += olen;
    t->bwe->probe_packets++;
    return 0;
}

static void probe_step(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    sfu_bwe_t *b = t->bwe;
    sfu_consumer_t *c = padding_carrier(t);
    if (!c || !sfu_transport_can_send_media(t)) {
        sfu_gcc_end_probe(&b->gcc, b->probe_cluster, (int)b->probe_packets);
        b->probe_cluster = 0;
        return;
    }
    uint64_t elapsed = now_ms - b->probe_start_ms + SFU_BWE_PROBE_TICK_MS;
    uint64_t due = (uint64_t)b->probe_bps / 8 * elapsed / 1000;
    for (int i = 0; i < SFU_BWE_PROBE_MAX_PACKETS && b->probe_sent_bytes < due; i++)
        if (send_padding(e, t, c, now_ms) < 0)
            break;
}

static void maybe_start_probe(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    sfu_bwe_t *b = t->bwe;
    if (b->probe_cluster || b->probe_goal_bps || !b->next_step_bps || now_ms < b->next_probe_ms)
        return;
    if (!b->feedbacks || sfu_gcc_usage(&b->gcc) == SFU_GCC_OVERUSE || !padding_carrier(t))
        return;
    uint32_t est = sfu_bwe_estimate(b);
    uint64_t goal = (uint64_t)b->next_step_bps * 23 / 20;
    uint64_t rate = goal > (uint64_t)est * 5 / 4 ? goal : (uint64_t)est * 5 / 4;
    if (rate > (uint64_t)est * 3)
        rate = (uint64_t)est * 3;
    b->probe_bps = rate > UINT32_MAX ? UINT32_MAX : (uint32_t)rate;
    b->probe_goal_bps = b->next_step_bps;
    b->probe_cluster = sfu_gcc_start_probe(&b->gcc, b->probe_bps, (int64_t)now_ms * 1000);
    b->probe_start_ms = now_ms;
    b->probe_end_ms = now_ms + SFU_BWE_PROBE_DURATION_MS;
    b->probe_sent_bytes = 0;
    b->probe_packets = 0;
    b->probes++;
}

/* A probe ended a while ago: did the estimate reach its goal? */
static void judge_probe(sfu_bwe_t *b, uint64_t now_ms)
{
    if (!b->probe_goal_bps || b->probe_cluster || now_ms < b->probe_end_ms + SFU_BWE_JUDGE_MS)
        return;
    if (sfu_bwe_estimate(b) >= b->probe_goal_bps) {
        /* it fitted: the next layer may fit too, probe again soon */
        b->probe_interval_ms = SFU_BWE_PROBE_MIN_INTERVAL_MS;
        b->probe_goal_bps = 0;
        b->next_probe_ms = now_ms + SFU_BWE_PROBE_AGAIN_MS;
        return;
    } else {
        b->probes_failed++;
        b->probe_interval_ms *= 2;
        if (b->probe_interval_ms > SFU_BWE_PROBE_MAX_INTERVAL_MS)
            b->probe_interval_ms = SFU_BWE_PROBE_MAX_INTERVAL_MS;
    }
    b->probe_goal_bps = 0;
    b->next_probe_ms = now_ms + b->probe_interval_ms;
}

void sfu_bwe_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    sfu_bwe_t *b = t->bwe;
    if (!b)
        return;
    if (!b->started) {
        b->started = 1;
        b->created_ms = now_ms;
        b->next_probe_ms = now_ms + SFU_BWE_PROBE_MIN_INTERVAL_MS;
    }
    sfu_gcc_on_tick(&b->gcc, (int64_t)now_ms * 1000);
    if (b->probe_cluster) {
        if (now_ms >= b->probe_end_ms) {
            sfu_gcc_end_probe(&b->gcc, b->probe_cluster, (int)b->probe_packets);
            b->probe_cluster = 0;
        } else {
            probe_step(e, t, now_ms);
        }
    }
    judge_probe(b, now_ms);
    maybe_start_probe(e, t, now_ms);
    if (b->probe_cluster) {
        probe_step(e, t, now_ms);
        sfu_timer_pull(e, now_ms + SFU_BWE_PROBE_TICK_MS);
    }
    if (b->probe_goal_bps && !b->probe_cluster)
        sfu_timer_pull(e, b->probe_end_ms + SFU_BWE_JUDGE_MS);
    else if (b->next_step_bps && !b->probe_cluster)
        sfu_timer_pull(e, b->next_probe_ms > now_ms ? b->next_probe_ms : now_ms + SFU_BWE_PROBE_MIN_INTERVAL_MS);
}
