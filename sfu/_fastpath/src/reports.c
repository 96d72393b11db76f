/* RTCP reports: SR/RR sent and received (reports.h). */
#include "reports.h"

#include <time.h>

#include "rtcp_xr.h"
#include "timers.h"
#include "transport.h"

/* Unix time minus the monotonic clock, taken once: SR timestamps are NTP
 * (wall clock) while the engine's `now_ms` is monotonic. */
static int64_t wallclock_offset_ms;

void sfu_ntp_init(void)
{
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    wallclock_offset_ms = ((int64_t)rt.tv_sec - (int64_t)mono.tv_sec) * 1000 +
                          ((int64_t)rt.tv_nsec - (int64_t)mono.tv_nsec) / 1000000;
}

uint64_t sfu_ntp_now(uint64_t now_ms)
{
    return sfu_ntp_from_ms((uint64_t)((int64_t)now_ms + wallclock_offset_ms));
}

/* Receiver reports for the producer streams of a transport (RFC 3550 6.4.2). */
static void send_receiver_reports(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    sfu_report_block_t blocks[31];
    int n = 0;
    for (uint32_t i = 0; i < t->nroutes && n < 31; i++) {
        struct sfu_route *r = &t->routes[i];
        if (r->is_rtx)
            continue;
        sfu_producer_stream_t *st = &r->producer->streams[r->stream];
        sfu_stats_block_t b;
        if (!sfu_rtp_stats_report_block(&st->stats, st->ssrc, now_ms, st->sr_lsr, st->sr_arrival_ms, &b))
            continue;
        st->last_fraction_lost = b.fraction_lost;
        st->score = sfu_rtp_stats_score(&st->stats, 0);
        blocks[n].ssrc = b.ssrc;
        blocks[n].fraction_lost = b.fraction_lost;
        blocks[n].cumulative_lost = b.cumulative_lost;
        blocks[n].ext_highest_seq = b.ext_highest_seq;
        blocks[n].jitter = b.jitter;
        blocks[n].lsr = b.lsr;
        blocks[n].dlsr = b.dlsr;
        n++;
    }
    if (!n)
        return;
    uint8_t pkt[8 + 31 * 24 + 20];
    int len = sfu_rtcp_build_rr(pkt, sizeof(pkt), SFU_RTCP_RECEIVER_SSRC, blocks, n);
    if (len <= 0)
        return;
    /* RFC 3611 4.4: a receiver reference time after the RR in the same
     * compound; the publisher's DLRR answer gives us the round trip, which
     * a pure receiver cannot get from SR/RR */
    uint64_t ntp = sfu_ntp_now(now_ms);
    int xl = sfu_rtcp_build_xr_rrtr(pkt + len, sizeof(pkt) - (size_t)len, SFU_RTCP_RECEIVER_SSRC, ntp);
    if (xl > 0) {
        len += xl;
        sfu_rtt_on_rrtr_sent(&t->rtt, sfu_ntp_compact(ntp), now_ms);
    }
    if (sfu_transport_send_rtcp(e, t, pkt, (size_t)len) == 0)
        e->counters[SFU_C_TX_RR]++;
}

/* A sender report for one consumer stream: NTP now and the RTP time that
 * corresponds to it on the consumer's (rewritten) timeline. With a sender
 * report from the publisher, that RTP time follows the publisher's own
 * mapping (its last SR's RTP time, at that SR's arrival, plus the time
 * since), so every SR of the consumer describes one media clock and a
 * publisher's audio and video keep their relative timing. Without one, it
 * is extrapolated from the last packet forwarded. */
static void send_sender_report(sfu_engine_t *e, sfu_consumer_t *c, uint64_t now_ms)
{
    if (!c->ts_started)
        return;
    uint32_t rtp_ts;
    const sfu_producer_t *p = c->producer;
    if (p && c->stream < p->nstreams && p->streams[c->stream].sr_valid && p->transport &&
        p->transport->sr_clock_valid) {
        /* the instant of the publisher's last SR on our clock: its NTP time
         * plus the transport's clock offset (not its own arrival, which
         * carries that packet's queuing delay) */
        const sfu_producer_stream_t *st = &p->streams[c->stream];
        int64_t sr_local_ms = (int64_t)st->sr_ntp_ms + p->transport->sr_clock_offset_ms;
        int64_t since_ms = (int64_t)now_ms - sr_local_ms;
        rtp_ts = st->sr_rtp_ts + c->ts_offset + (uint32_t)(int32_t)(since_ms * (int64_t)c->clock_rate / 1000);
    } else {
        rtp_ts = c->last_ts + (uint32_t)((now_ms - c->last_ts_ms) * c->clock_rate / 1000);
    }
    uint8_t pkt[64];
    int len = sfu_rtcp_build_sr(pkt, sizeof(pkt), c->ssrc, sfu_ntp_now(now_ms), rtp_ts, (uint32_t)c->sent.packets,
                                (uint32_t)c->payload_bytes, NULL, 0); /* RFC 3550 6.4.1: payload octets */
    if (len > 0) {
        sfu_transport_send_rtcp(e, c->transport, pkt, (size_t)len);
        e->counters[SFU_C_TX_SR]++;
    }
}

void sfu_reports_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    if (now_ms - t->last_rr_ms >= SFU_RTCP_INTERVAL_MS) {
        uint64_t elapsed = t->last_rr_ms && !t->rr_joined ? now_ms - t->last_rr_ms : 0;
        t->last_rr_ms = now_ms;
        t->rr_joined = 0;
        e->rr_round_ms = now_ms;
        send_receiver_reports(e, t, now_ms);
        for (uint32_t k = 0; k < t->nconsumers; k++) {
            sfu_consumer_t *c = t->consumers[k];
            send_sender_report(e, c, now_ms);
            if (elapsed) {
                c->rate_bps = (c->sent.bytes - c->bytes_at_last_rate) * 8000 / elapsed;
            }
            c->bytes_at_last_rate = c->sent.bytes;
        }
        for (uint32_t k = 0; k < t->nroutes; k++) {
            struct sfu_route *r = &t->routes[k];
            if (r->is_rtx)
                continue;
            sfu_producer_stream_t *st = &r->producer->streams[r->stream];
            if (elapsed) {
                st->rate_bps = (st->received.bytes - st->bytes_at_last_rate) * 8000 / elapsed;
                st->alloc_rate_bps = st->alloc_rate_bps ? (2 * st->alloc_rate_bps + st->rate_bps) / 3 : st->rate_bps;
            }
            st->bytes_at_last_rate = st->received.bytes;
            for (int l = 0; l < st->svc_layers && l < SFU_SVC_LAYERS; l++) {
                if (elapsed) {
                    /* averaged over ~3 s: a key picture (every layer at
                     * once, several times a delta's size, which each
                     * viewer's climb asks for) must not read as a rate
                     * that sends every viewer down */
                    uint64_t r = (st->svc_bytes[l] - st->svc_bytes_at_last_rate[l]) * 8000 / elapsed;
                    st->svc_rate_bps[l] = st->svc_rate_bps[l] ? (2 * st->svc_rate_bps[l] + r) / 3 : r;
                }
                st->svc_bytes_at_last_rate[l] = st->svc_bytes[l];
            }
        }
    }
    sfu_timer_pull(e, t->last_rr_ms + SFU_RTCP_INTERVAL_MS);
}

void sfu_reports_on_sr(sfu_transport_t *t, const uint8_t *pk, size_t len, uint64_t now_ms)
{
    uint32_t ssrc, rtp_ts;
    uint64_t ntp;
    if (sfu_rtcp_parse_sr(pk, len, &ssrc, &ntp, &rtp_ts, NULL, NULL) < 0)
        return;
    for (uint32_t i = 0; i < t->nroutes; i++) {
        struct sfu_route *r = &t->routes[i];
        if (r->ssrc == ssrc && !r->is_rtx) {
            sfu_producer_stream_t *st = &r->producer->streams[r->stream];
            st->sr_lsr = sfu_ntp_compact(ntp);
            st->sr_arrival_ms = now_ms;
            st->sr_rtp_ts = rtp_ts;
            st->sr_ntp_ms = (ntp >> 32) * 1000 + (((ntp & 0xffffffffu) * 1000) >> 32);
            st->sr_valid = 1;
            /* the least offset seen is the one with the least queuing; it
             * may rise 1 ms a second when every SR says so for 5 s (clock
             * drift, a longer path) */
            int64_t off = (int64_t)now_ms - (int64_t)st->sr_ntp_ms;
            if (!t->sr_clock_valid || off <= t->sr_clock_offset_ms) {
                t->sr_clock_offset_ms = off;
                t->sr_clock_offset_at_ms = now_ms;
                t->sr_clock_valid = 1;
            } else if (now_ms - t->sr_clock_offset_at_ms > SFU_SR_CLOCK_RISE_AFTER_MS) {
                t->sr_clock_offset_ms += 1;
                t->sr_clock_offset_at_ms = now_ms - SFU_SR_CLOCK_RISE_AFTER_MS + 1000;
            }
        }
    }
}

void sfu_reports_on_blocks(sfu_transport_t *t, const uint8_t *pk, size_t len, uint64_t now_ms)
{
    sfu_report_block_t blocks[31];
    int n = sfu_rtcp_parse_report_blocks(pk, len, blocks, 31);
    uint32_t now_compact = sfu_ntp_compact(sfu_ntp_now(now_ms));
    int rtt_fed = 0; /* one sample per packet: the blocks share one arrival */
    for (int i = 0; i < n; i++) {
        sfu_consumer_t *c = sfu_transport_consumer_by_ssrc(t, blocks[i].ssrc);
        if (!c)
            continue;
        if (!rtt_fed && blocks[i].lsr)
            rtt_fed = sfu_rtt_on_report_block(&t->rtt, blocks[i].lsr, blocks[i].dlsr, now_compact) >= 0;
        c->fraction_lost = blocks[i].fraction_lost;
        c->packets_lost = blocks[i].cumulative_lost;
        c->jitter = blocks[i].jitter;
        if (blocks[i].lsr)
            c->rtt_ms = sfu_rtcp_rtt_ms(now_compact, blocks[i].lsr, blocks[i].dlsr);
        c->score = sfu_stream_score(c->fraction_lost, 0, 0);
    }
}

void sfu_reports_on_xr(sfu_transport_t *t, const uint8_t *pk, size_t len, uint64_t now_ms)
{
    sfu_xr_info_t info;
    sfu_xr_dlrr_t dlrr[16];
    int n = sfu_rtcp_parse_xr(pk, len, &info, dlrr, 16);
    if (n <= 0)
        return;
    uint32_t now_compact = sfu_ntp_compact(sfu_ntp_now(now_ms));
    for (int i = 0; i < n && i < 16; i++)
        if (dlrr[i].ssrc == SFU_RTCP_RECEIVER_SSRC)
            sfu_rtt_on_dlrr(&t->rtt, dlrr[i].lrr, dlrr[i].dlrr, now_compact, now_ms);
}
