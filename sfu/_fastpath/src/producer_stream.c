/* The receive side of one producer stream (producer_stream.h). */
#include "producer_stream.h"

#include "consumer.h"
#include "keyframe.h"
#include "keyframe_policy.h"
#include "vp9.h"
#include "rtcp_nack.h"
#include "rtx.h"
#include "timers.h"
#include "transport.h"

/* VP9: the bytes and the last packet time of each spatial layer (the
 * allocation's layer rates), and how many layers the stream has. */
static void svc_account(sfu_producer_stream_t *st, const uint8_t *payload, size_t plen, size_t len, uint64_t now_ms)
{
    sfu_vp9_desc_t d;
    if (sfu_vp9_parse(payload, plen, &d) != 0 || !d.has_layer_indices || d.sid >= SFU_SVC_LAYERS)
        return;
    st->svc_bytes[d.sid] += len;
    st->svc_last_ms[d.sid] = now_ms;
    int n = d.sid + 1;
    if (d.has_ss && d.ss_spatial_layers > n)
        n = d.ss_spatial_layers < SFU_SVC_LAYERS ? d.ss_spatial_layers : SFU_SVC_LAYERS;
    if (n > st->svc_layers)
        st->svc_layers = (uint8_t)n;
}

void sfu_producer_stream_receive(sfu_engine_t *e, sfu_transport_t *t, const struct sfu_route *r, uint8_t *buf,
                                 size_t len, size_t cap, sfu_rtp_t *rtp, uint64_t now_ms)
{
    sfu_producer_t *p = r->producer;
    sfu_producer_stream_t *st = &p->streams[r->stream];
    int recovered = 0;
    if (r->is_rtx) {
        /* RFC 4588: the original sequence number leads the payload. */
        uint8_t apt = p->rtx_apt[rtp->payload_type];
        if (apt == 0xff || rtp->payload_length < 2) {
            e->counters[SFU_C_DROP_RTX]++;
            return;
        }
        if (rtp->payload_length == 2 || sfu_rtx_decapsulate(buf, &len, apt, st->ssrc) < 0 ||
            sfu_rtp_parse(buf, len, rtp) < 0) {
            e->counters[SFU_C_DROP_RTX]++; /* padding-only probes land here too */
            return;
        }
        e->counters[SFU_C_RX_RTX]++;
        st->rtx_received++;
        recovered = 1;
    }
    uint8_t mpt = p->pt_map[rtp->payload_type];
    if (mpt == SFU_PT_NONE) {
        e->counters[SFU_C_DROP_UNKNOWN_PT]++;
        t->drops++;
        return;
    }
    if (rtp->extension && !p->ext_identity) {
        if (sfu_rtp_map_extensions(buf, &len, cap - SFU_SRTP_TRAILER_ROOM, rtp, p->ext_map) < 0) {
            e->counters[SFU_C_DROP_RTP_MALFORMED]++;
            t->drops++;
            return;
        }
    }
    if (p->nack_enabled) {
        int missing_before = sfu_nack_missing_count(&st->nack);
        if (!sfu_nack_on_packet(&st->nack, rtp->seq, recovered, now_ms) && recovered)
            return; /* a retransmission of something we already have */
        /* a new gap is NACKed at once; retries are the timer's job */
        if (sfu_nack_missing_count(&st->nack) > missing_before) {
            sfu_producer_stream_send_nacks(e, p, r->stream, now_ms);
            int64_t due = sfu_nack_next_deadline_ms(&st->nack, sfu_rtt_ms(&t->rtt));
            if (due >= 0)
                sfu_timer_pull(e, (uint64_t)due);
        }
        if (sfu_nack_keyframe_needed(&st->nack))
            sfu_keyframe_request(e, p, r->stream, now_ms);
    }
    /* retransmissions stay out of the statistics (their transit time would
     * count as jitter), as in mediasoup */
    if (!recovered)
        sfu_rtp_stats_update(&st->stats, rtp->seq, rtp->timestamp, now_ms);
    st->received.packets++;
    st->received.bytes += len;
    if (!st->seq_started || sfu_seq_newer(rtp->seq, st->max_seq)) {
        st->max_seq = rtp->seq;
        st->seq_started = 1;
    }
    st->last_packet_ms = now_ms;
    if (st->kf_retry_wait) { /* a keyframe retry waited for the publisher to send */
        st->kf_retry_wait = 0;
        sfu_timer_pull(e, now_ms);
    }
    int codec = p->kind_video ? p->codec_of_pt[mpt] : SFU_CODEC_NONE;
    int keyframe = codec == SFU_CODEC_NONE ? -1 : sfu_is_keyframe(codec, buf + rtp->header_length, rtp->payload_length);
    if (codec == SFU_CODEC_VP9)
        svc_account(st, buf + rtp->header_length, rtp->payload_length, len, now_ms);
    if (keyframe == 1)
        sfu_keyframe_arrived(st, now_ms); /* whoever asked meanwhile gets it too */
    if (p->paused) {
        e->counters[SFU_C_DROP_PRODUCER_PAUSED]++;
        return;
    }
    if (mpt != rtp->payload_type) {
        sfu_rtp_set_payload_type(buf, mpt);
        rtp->payload_type = mpt;
    }
    if (st->store.slots)
        sfu_packet_store_put(&st->store, rtp->seq, buf, len, now_ms);
    sfu_consumers_forward(e, p, r->stream, buf, len, rtp, now_ms, keyframe);
}

void sfu_producer_stream_send_nacks(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms)
{
    sfu_producer_stream_t *st = &p->streams[stream];
    uint16_t seqs[64];
    int n = sfu_nack_poll(&st->nack, now_ms, sfu_rtt_ms(&p->transport->rtt), seqs, 64);
    if (sfu_nack_keyframe_needed(&st->nack)) /* gave up on a packet */
        sfu_keyframe_request(e, p, stream, now_ms);
    if (n <= 0)
        return;
    uint8_t pkt[512];
    int len = sfu_rtcp_build_nack(pkt, sizeof(pkt), 1, st->ssrc, seqs, n);
    if (len <= 0)
        return;
    sfu_transport_send_rtcp(e, p->transport, pkt, (size_t)len);
    st->nack_packets_sent++;
    e->counters[SFU_C_TX_NACK]++;
}
