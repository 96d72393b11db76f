/* An incoming RTCP compound on a transport: unprotected, validated, and
 * each packet handed to the unit of its type (PLI/FIR: keyframe_policy,
 * REMB: producer and bwe, NACK: consumer, transport-cc: bwe, SR/RR:
 * reports). Declared in transport.h. */
#include "bwe.h"
#include "consumer.h"
#include "keyframe_policy.h"
#include "producer.h"
#include "remb.h"
#include "reports.h"
#include "rtcp.h"
#include "rtcp_fir.h"
#include "rtcp_nack.h"
#include "rtcp_pli.h"
#include "transport.h"

/* One RTCP packet of a compound received on transport t, to the unit that
 * handles its type. */
static void on_rtcp_item(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *pk, const sfu_rtcp_item_t *it,
                         uint64_t now_ms)
{
    size_t len = it->length;
    switch (it->packet_type) {
    case SFU_RTCP_PSFB:
        if (it->count == SFU_RTCP_FMT_PLI) {
            uint32_t media;
            if (sfu_rtcp_parse_pli(pk, len, &media) < 0)
                break;
            e->counters[SFU_C_RX_PLI]++;
            sfu_consumer_t *c = sfu_transport_consumer_by_ssrc(t, media);
            if (c) {
                c->pli_received++;
                if (c->producer)
                    sfu_keyframe_request(e, c->producer, c->stream, now_ms);
            }
        } else if (it->count == SFU_RTCP_FMT_FIR) {
            sfu_fir_entry_t fir[8];
            int n = sfu_rtcp_parse_fir(pk, len, fir, 8);
            if (n < 1)
                break;
            e->counters[SFU_C_RX_FIR]++;
            for (int i = 0; i < n && i < 8; i++) {
                sfu_consumer_t *c = sfu_transport_consumer_by_ssrc(t, fir[i].ssrc);
                if (c) {
                    c->fir_received++;
                    if (c->producer)
                        sfu_keyframe_request(e, c->producer, c->stream, now_ms);
                }
            }
        } else if (it->count == SFU_REMB_FMT) {
            uint64_t bps;
            uint32_t ssrcs[16];
            int n = sfu_remb_parse(pk, len, &bps, ssrcs, 16);
            if (n < 0)
                break;
            e->counters[SFU_C_RX_REMB]++;
            /* the viewer's estimate of its downlink: this transport's
             * estimate (while it gives no transport-cc), and the floor of
             * what a single-encoding publisher sends; a simulcast publisher
             * is not slowed down for one viewer, whose layer follows its
             * estimate instead */
            sfu_bwe_on_remb(e, t, bps, now_ms);
            for (int i = 0; i < n && i < 16; i++) {
                sfu_consumer_t *c = sfu_transport_consumer_by_ssrc(t, ssrcs[i]);
                if (c && c->producer && (c->producer->nstreams < 2 || !t->bwe))
                    sfu_producer_on_remb(e, c->producer, c, bps, now_ms);
            }
        }
        break;
    case SFU_RTCP_RTPFB:
        if (it->count == SFU_RTCP_FMT_NACK && len >= 16) {
            sfu_consumer_t *c = sfu_transport_consumer_by_ssrc(t, sfu_rtcp_nack_media_ssrc(pk, len));
            if (c && c->nack_enabled)
                sfu_consumer_retransmit(e, c, pk, len, now_ms);
        } else if (it->count == SFU_RTCP_FMT_TWCC) {
            sfu_bwe_on_feedback(e, t, pk, len, now_ms); /* about what this transport sent */
        }
        break;
    case SFU_RTCP_SR:
        sfu_reports_on_sr(t, pk, len, now_ms);
        sfu_reports_on_blocks(t, pk, len, now_ms); /* an SR carries report blocks too */
        break;
    case SFU_RTCP_RR:
        sfu_reports_on_blocks(t, pk, len, now_ms);
        break;
    case SFU_RTCP_XR:
        sfu_reports_on_xr(t, pk, len, now_ms);
        break;
    default:
        break;
    }
}

void sfu_transport_receive_rtcp(sfu_engine_t *e, sfu_transport_t *t, uint8_t *buf, size_t len,
                                const struct sfu_latch *latch, uint64_t now_ms)
{
    if (t->require_srtp && !t->srtp_in) {
        e->counters[SFU_C_DROP_SRTP]++;
        t->drops++;
        return;
    }
    if (t->srtp_in && sfu_srtp_unprotect_rtcp(t->srtp_in, buf, &len) != 0) {
        e->counters[SFU_C_DROP_SRTP]++;
        t->drops++;
        return;
    }
    sfu_rtcp_item_t items[SFU_RTCP_MAX_ITEMS];
    int n = sfu_rtcp_parse_compound(buf, len, items, SFU_RTCP_MAX_ITEMS);
    if (n < 0) {
        e->counters[SFU_C_DROP_RTCP_MALFORMED]++;
        t->drops++;
        return;
    }
    sfu_transport_latch_apply(e, t, latch);
    t->rtcp_in.packets++;
    t->rtcp_in.bytes += len;
    for (int i = 0; i < n; i++)
        on_rtcp_item(e, t, buf + items[i].offset, &items[i], now_ms);
}
