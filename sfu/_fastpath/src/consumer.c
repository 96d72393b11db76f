/* Consumers: the send side (consumer.h). */
#include "consumer.h"

#include <stdlib.h>
#include <string.h>

#include "allocator.h"
#include "bwe.h"
#include "keyframe.h"
#include "keyframe_policy.h"
#include "outbox.h"
#include "rtcp_nack.h"
#include "rtx.h"
#include "timers.h"
#include "transport.h"
#include "vp8.h"
#include "vp9.h"

static int producer_has_codec(const sfu_producer_t *p, int codec)
{
    for (int pt = 0; pt < 128; pt++)
        if (p->codec_of_pt[pt] == codec)
            return 1;
    return 0;
}

uint32_t sfu_consumer_add_locked(sfu_engine_t *e, uint32_t th, uint32_t ph, uint32_t ssrc, uint32_t rtx_ssrc,
                                 uint32_t clock_rate, const uint8_t pt_map[128], const uint8_t ext_map[256],
                                 int paused, uint16_t initial_seq)
{
    sfu_transport_t *t = sfu_transport_get(e, th);
    sfu_producer_t *p = sfu_producer_get(e, ph);
    if (!t || !p || clock_rate == 0)
        return 0;
    if (p->nconsumers == p->consumers_cap) {
        uint32_t ncap = p->consumers_cap ? p->consumers_cap * 2 : 8;
        sfu_consumer_t **cs = realloc(p->consumers, ncap * sizeof(*cs));
        if (!cs)
            return 0;
        p->consumers = cs;
        p->consumers_cap = ncap;
    }
    sfu_consumer_t *c = calloc(1, sizeof(*c));
    if (!c)
        return 0;
    c->transport = t;
    c->producer = p;
    c->stream = c->target_stream = 0;
    c->preferred_stream = p->nstreams - 1; /* the top layer, unless told or the estimate says otherwise */
    c->preferred_temporal = SFU_ALL_TEMPORAL_LAYERS;
    if (p->kind_video) {
        c->vp8 = malloc(sizeof(*c->vp8));
        if (!c->vp8) {
            free(c);
            return 0;
        }
        sfu_vp8_fwd_init(c->vp8);
        if (p->nstreams == 1 && producer_has_codec(p, SFU_CODEC_VP9)) {
            /* one VP9 stream: its spatial layers are the consumer's layers
             * (SVC; a stream without layer indices is all layer 0) */
            c->vp9 = malloc(sizeof(*c->vp9));
            if (!c->vp9) {
                free(c->vp8);
                free(c);
                return 0;
            }
            sfu_vp9_fwd_init(c->vp9);
            c->svc = 1;
            c->svc_sid = -1;
            c->target_stream = c->preferred_stream = SFU_SVC_LAYERS - 1; /* all, until the allocation says */
        }
    }
    c->priority = 1;
    c->paused = paused;
    c->producer_paused = p->paused;
    c->ssrc = ssrc;
    c->rtx_ssrc = rtx_ssrc;
    c->clock_rate = clock_rate;
    memcpy(c->pt_map, pt_map, 128);
    memcpy(c->ext_map, ext_map, 256);
    c->ext_identity = sfu_map_is_identity(c->ext_map, 256);
    sfu_seqmgr_init(&c->seq, initial_seq);
    c->handle = sfu_table_add(&e->consumers, c);
    if (!c->handle) {
        sfu_consumer_free(c);
        return 0;
    }
    if (t->nconsumers == t->consumers_cap) {
        uint32_t ncap = t->consumers_cap ? t->consumers_cap * 2 : 8;
        sfu_consumer_t **cs = realloc(t->consumers, ncap * sizeof(*cs));
        if (!cs) {
            sfu_table_del(&e->consumers, c->handle);
            sfu_consumer_free(c);
            return 0;
        }
        t->consumers = cs;
        t->consumers_cap = ncap;
    }
    c->score = 10;
    p->consumers[p->nconsumers++] = c;
    t->consumers[t->nconsumers++] = c;
    sfu_keyframe_consumer_waits(e, c); /* it starts at a keyframe */
    if (p->nstreams > 1 || c->svc) { /* the allocation picks its layer */
        c->simulcast = 1;
        t->nsimulcast++;
        sfu_allocator_request(e, t);
    }
    return c->handle;
}

int sfu_consumer_set_mid_locked(sfu_engine_t *e, uint32_t h, uint8_t ext_id, const char *mid)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    uint8_t len = sfu_rtp_id_copy(c->mid, mid);
    if (ext_id && !len)
        return -2;
    c->mid_len = ext_id ? len : 0;
    c->mid_ext_id = ext_id;
    return 0;
}

int sfu_consumer_set_paused_locked(sfu_engine_t *e, uint32_t h, int paused)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    if (c->paused && !paused)
        sfu_keyframe_consumer_waits(e, c); /* it restarts at a keyframe */
    c->paused = paused;
    return 0;
}

/* A video producer's stream keeps its packets for retransmission from now
 * on (its store allocated once); -1 when there is no memory for it. */
static int consumer_keep_packets(sfu_producer_t *p, int stream)
{
    if (!p->kind_video || stream < 0 || stream >= p->nstreams || p->streams[stream].store.slots)
        return 0;
    return sfu_packet_store_init(&p->streams[stream].store, SFU_STORE_DEFAULT_CAPACITY) < 0 ? -1 : 0;
}

int sfu_consumer_retarget(sfu_engine_t *e, sfu_consumer_t *c, int stream)
{
    sfu_producer_t *p = c->producer;
    if (!p)
        return 0;
    if (stream < 0)
        stream = 0;
    if (c->svc) {
        /* a spatial layer of the one stream: down at the next picture, up
         * at a key picture (K-SVC upper layers predict from their own
         * earlier frames), which the keyframe policy asks for (vp9.h) */
        if (stream >= SFU_SVC_LAYERS)
            stream = SFU_SVC_LAYERS - 1;
        if (stream == c->target_stream)
            return 0;
        c->target_stream = stream;
        /* a drop after the viewer reported loss asks for one too: what
         * was lost in the congestion may be the lower layers' own chain,
         * which the viewer's decoder cannot go on without */
        if (c->svc_sid >= 0 && (stream > c->svc_sid || c->fraction_lost)) {
            c->svc_key_wanted = 1;
            c->keyframe_wanted = 1;
            sfu_timer_pull(e, 0);
        }
        return 0;
    }
    if (stream >= p->nstreams)
        stream = p->nstreams - 1;
    if (stream == c->target_stream)
        return 0;
    c->target_stream = stream;
    if (stream != c->stream) {
        /* retransmissions after the switch come from that layer's store */
        if (c->nack_enabled && consumer_keep_packets(p, stream) < 0)
            return -2;
        /* the current layer flows until a keyframe of the target, which
         * the keyframe policy asks for (a consumer that has not started
         * yet starts at whichever of the two comes first) */
        c->keyframe_wanted = 1;
        sfu_timer_pull(e, 0);
    }
    return 0;
}

int sfu_consumer_set_target_stream_locked(sfu_engine_t *e, uint32_t h, int stream)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    sfu_producer_t *p = c->producer;
    if (!p)
        return 0;
    if (stream < 0)
        stream = 0;
    int top = c->svc ? SFU_SVC_LAYERS - 1 : p->nstreams - 1;
    if (stream > top)
        stream = top;
    c->preferred_stream = stream;
    c->preference_changed = 1;
    if (c->simulcast) { /* the allocation decides, under the preference */
        sfu_allocator_request(e, c->transport);
        return 0;
    }
    return sfu_consumer_retarget(e, c, stream);
}

int sfu_consumer_set_temporal_locked(sfu_engine_t *e, uint32_t h, int temporal)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    c->preferred_temporal = temporal < 0 || temporal > SFU_ALL_TEMPORAL_LAYERS ? SFU_ALL_TEMPORAL_LAYERS : temporal;
    return 0;
}

int sfu_consumer_set_fixed_stream_locked(sfu_engine_t *e, uint32_t h, int stream)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    sfu_producer_t *p = c->producer;
    if (!p)
        return 0;
    if (stream < 0 || stream >= p->nstreams)
        return -2;
    if (c->svc) { /* the whole VP9 stream, every spatial layer, unfiltered */
        free(c->vp9);
        c->vp9 = NULL;
        c->svc = 0;
        c->svc_sid = -1;
        c->svc_key_wanted = 0;
    }
    if (c->simulcast) { /* out of the transport's layer allocation */
        c->simulcast = 0;
        c->transport->nsimulcast--;
        sfu_allocator_request(e, c->transport);
    }
    c->stream = c->target_stream = c->preferred_stream = stream;
    c->keyframe_wanted = 0;
    sfu_keyframe_consumer_waits(e, c); /* it starts at a keyframe of that stream */
    return 0;
}

int sfu_consumer_set_priority_locked(sfu_engine_t *e, uint32_t h, int priority)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    c->priority = (uint8_t)(priority < 1 ? 1 : priority > 255 ? 255 : priority);
    if (c->simulcast)
        sfu_allocator_request(e, c->transport);
    return 0;
}

int sfu_consumer_set_twcc_locked(sfu_engine_t *e, uint32_t h, uint8_t ext_id, int remb)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    c->twcc_ext_id = ext_id;
    if ((ext_id || remb) && !c->transport->bwe && sfu_bwe_enable(e, c->transport) < 0)
        return -2;
    return 0;
}

int sfu_consumer_remove_locked(sfu_engine_t *e, uint32_t h)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    sfu_producer_t *p = c->producer;
    if (p) {
        for (uint32_t i = 0; i < p->nconsumers; i++) {
            if (p->consumers[i] == c) {
                p->consumers[i] = p->consumers[--p->nconsumers];
                break;
            }
        }
    }
    sfu_transport_t *t = c->transport;
    for (uint32_t i = 0; i < t->nconsumers; i++) {
        if (t->consumers[i] == c) {
            t->consumers[i] = t->consumers[--t->nconsumers];
            break;
        }
    }
    if (p)
        sfu_remb_agg_remove(&p->remb, c->handle);
    if (t->srtp_out) { /* its SRTP stream state, so that the slots are reused */
        sfu_srtp_remove_stream(t->srtp_out, c->ssrc);
        if (c->rtx_ssrc)
            sfu_srtp_remove_stream(t->srtp_out, c->rtx_ssrc);
    }
    if (c->simulcast) {
        t->nsimulcast--;
        sfu_allocator_request(e, t);
    } else if (t->nsimulcast) {
        sfu_allocator_request(e, t); /* its rate is given to the others */
    }
    sfu_table_del(&e->consumers, h);
    sfu_consumer_free(c);
    return 0;
}

int sfu_consumer_set_feedback_locked(sfu_engine_t *e, uint32_t h, int nack, uint8_t rtx_pt)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    c->nack_enabled = nack;
    c->rtx_pt = rtx_pt;
    if (nack && !c->seq_map) {
        c->seq_map = malloc(sizeof(*c->seq_map));
        if (!c->seq_map)
            return -2;
        sfu_seq_map_init(c->seq_map);
    }
    /* the producer keeps its packets for retransmission from now on: of the
     * layer the consumer forwards and of the one it is moving to (the
     * allocator may have retargeted it between add_consumer and this call,
     * when a retarget did not allocate a store, not knowing of NACK yet) */
    sfu_producer_t *p = c->producer;
    if (nack && p) {
        if (consumer_keep_packets(p, c->stream) < 0)
            return -2;
        /* an SVC consumer's target is a spatial layer of its one stream */
        if (!c->svc && consumer_keep_packets(p, c->target_stream) < 0)
            return -2;
    }
    return 0;
}

/* Keeps a resumed stream's timestamps moving forward: when the source's
 * timeline jumped (a new encoder, a long pause with a reset clock), re-base
 * so that output advances by the wall-clock time elapsed. */
static void consumer_sync_timestamp(sfu_consumer_t *c, uint32_t ts, uint64_t now_ms, int new_timeline)
{
    if (!c->ts_started)
        return;
    uint32_t cand = ts + c->ts_offset;
    int32_t diff = (int32_t)(cand - c->last_ts);
    uint64_t elapsed = now_ms > c->last_ts_ms ? now_ms - c->last_ts_ms : 0;
    int64_t expected = (int64_t)(elapsed * c->clock_rate / 1000);
    int64_t slack = c->clock_rate; /* one second */
    if (new_timeline || diff <= 0 || (int64_t)diff > expected + slack) {
        uint32_t step = expected > 0 ? (uint32_t)expected : 1;
        c->ts_offset = c->last_ts + step - ts;
    }
}

/* Writes a router-level packet into `out` as one consumer sends it: SSRC,
 * sequence number, timestamp, payload type, and header extensions (ids
 * through the consumer's map, RID/RRID removed, the consumer's own MID and
 * our transport-wide sequence number written). One copy. Returns the
 * length, or -1 when it does not fit. */
static inline long consumer_write(const sfu_consumer_t *c, uint8_t *out, const uint8_t *src, size_t len,
                                  const sfu_rtp_t *rtp, uint16_t seq, uint32_t ts, uint8_t pt, int twcc,
                                  uint16_t twcc_seq)
{
    long olen;
    if (c->mid_ext_id || twcc || (!c->ext_identity && rtp->extension)) {
        uint8_t tw[2] = {(uint8_t)(twcc_seq >> 8), (uint8_t)twcc_seq};
        sfu_rtp_ext_add_t adds[2] = {{c->mid_ext_id, c->mid_len, c->mid}, {twcc ? c->twcc_ext_id : 0, 2, tw}};
        olen = sfu_rtp_copy_rewrite_extensions_n(out, SFU_SLOT_SIZE - SFU_SRTP_TRAILER_ROOM, src, len, rtp,
                                                 c->ext_map, adds, 2);
        if (olen < 0)
            return -1;
    } else {
        memcpy(out, src, len);
        olen = (long)len;
    }
    sfu_rtp_set_ssrc(out, c->ssrc);
    sfu_rtp_set_seq(out, seq);
    sfu_rtp_set_timestamp(out, ts);
    sfu_rtp_set_payload_type(out, pt);
    return olen;
}

/* Numbers a packet of about `len` octets for the transport's estimate: the
 * wire size is the written packet plus the extension and the SRTP tag
 * (close enough for a rate). */
static inline int consumer_twcc(const sfu_consumer_t *c, uint64_t now_ms, size_t len, uint16_t *tseq)
{
    sfu_bwe_t *b = c->transport->bwe;
    if (!c->twcc_ext_id || !b)
        return 0;
    /* media sent while a probe runs is part of it: the padding only fills
     * the gap up to the probe's rate (bwe.h) */
    uint16_t cluster = b->probe_cluster;
    *tseq = sfu_bwe_number(b, now_ms, len + 24, cluster);
    if (cluster) {
        b->probe_sent_bytes += len + 24;
        b->probe_packets++;
    }
    return 1;
}

void sfu_consumers_forward(sfu_engine_t *e, sfu_producer_t *p, int stream, const uint8_t *buf, size_t len,
                           const sfu_rtp_t *rtp, uint64_t now_ms, int keyframe)
{
    sfu_consumer_t *const *cs = p->consumers;
    uint32_t n = p->nconsumers;
    /* VP8: the payload descriptor, read once for every consumer (picture
     * id continuity and temporal layers, vp8.h) */
    sfu_vp8_desc_t vd;
    int vp8 = p->codec_of_pt[rtp->payload_type & 0x7f] == SFU_CODEC_VP8 &&
              sfu_vp8_parse(buf + rtp->header_length, rtp->payload_length, &vd) == 0 && vd.has_picture_id;
    /* VP9: the descriptor's layer indices, for SVC consumers (vp9.h) */
    sfu_vp9_desc_t d9;
    int vp9 = p->codec_of_pt[rtp->payload_type & 0x7f] == SFU_CODEC_VP9 &&
              sfu_vp9_parse(buf + rtp->header_length, rtp->payload_length, &d9) == 0;
    for (uint32_t i = 0; i < n; i++) {
        sfu_consumer_t *c = cs[i];
        /* A room's consumers do not fit in the caches, and each one's data
         * is a chain of pointers (consumer -> transport -> SRTP context ->
         * stream slot): a pipeline requests each link a few consumers ahead,
         * the link before it having arrived by then (one consumer's write
         * and AES-GCM take far longer than a memory access). */
        if (i + 4 < n) {
            __builtin_prefetch(cs[i + 4]);
            __builtin_prefetch((const char *)cs[i + 4] + 64);
        }
        if (i + 3 < n) {
            __builtin_prefetch(cs[i + 3]->transport);
            __builtin_prefetch(&cs[i + 3]->pt_map[rtp->payload_type]);
            if (cs[i + 3]->seq_map)
                __builtin_prefetch(cs[i + 3]->seq_map);
        }
        if (i + 2 < n && cs[i + 2]->transport->srtp_out)
            __builtin_prefetch(cs[i + 2]->transport->srtp_out);
        if (i + 1 < n && cs[i + 1]->transport->srtp_out)
            sfu_srtp_prefetch(cs[i + 1]->transport->srtp_out, cs[i + 1]->ssrc);
        if (c->paused || c->producer_paused)
            continue;
        /* another layer: only its keyframe, when it is the one wanted,
         * switches the consumer to it */
        int switching = c->stream != stream;
        if (switching && (stream != c->target_stream || keyframe != 1))
            continue;
        sfu_transport_t *t = c->transport;
        if (!sfu_transport_can_send_media(t))
            continue; /* no destination yet, or DTLS not done: never send cleartext */
        sfu_socket_t *s = sfu_socket_get(e, t->rtp_socket);
        if (!s)
            continue;
        uint8_t opt = c->pt_map[rtp->payload_type];
        if (opt == SFU_PT_NONE) {
            sfu_seqmgr_drop(&c->seq, rtp->seq);
            c->dropped++;
            continue;
        }
        int resync = 0;
        if (c->sync_required || switching) {
            if (!switching && !sfu_keyframe_can_start(keyframe)) {
                c->dropped++;
                continue;
            }
            if (switching) {
                c->stream = stream;
                c->layer_changes++;
                sfu_upcall_push(e, SFU_UP_LAYERS, NULL, c->handle, stream, NULL, 0, NULL, 0);
                if (c->seq_map) /* its entries name the other layer's packets */
                    sfu_seq_map_init(c->seq_map);
            }
            /* output sequence numbers and timestamps continue across the
             * resync (each layer has its own sequence and RTP clock base) */
            sfu_seqmgr_sync(&c->seq, (uint16_t)(rtp->seq - 1));
            consumer_sync_timestamp(c, rtp->timestamp, now_ms, switching);
            c->sync_required = 0;
            c->keyframe_wanted = 0;
            resync = 1;
        }
        if (vp8 && c->vp8) {
            /* whole frames above the wanted temporal layer are dropped, and
             * their sequence numbers skipped */
            int fwd = sfu_vp8_fwd_packet(c->vp8, &vd, resync, c->preferred_temporal, NULL, 0);
            if (fwd <= 0) {
                if (fwd == 0)
                    sfu_seqmgr_drop(&c->seq, rtp->seq);
                c->dropped++;
                continue;
            }
        }
        int set_marker = 0;
        if (vp9 && c->vp9) {
            /* spatial layers above the target and temporal layers above
             * the preference are dropped at picture boundaries; the marker
             * moves to the end of the highest layer forwarded */
            int fwd = sfu_vp9_fwd_packet(c->vp9, &d9, c->target_stream, c->preferred_temporal, 1, &set_marker);
            int now_sid = c->vp9->started ? c->vp9->sid : -1;
            if (c->vp9->spatial_layers > 0 && now_sid >= c->vp9->spatial_layers)
                now_sid = c->vp9->spatial_layers - 1; /* the stream's top layer is all it has */
            if (now_sid != c->svc_sid) {
                c->svc_sid = now_sid;
                c->layer_changes++;
                sfu_upcall_push(e, SFU_UP_LAYERS, NULL, c->handle, now_sid, NULL, 0, NULL, 0);
            }
            if (!fwd) {
                sfu_seqmgr_drop(&c->seq, rtp->seq);
                c->dropped++;
                continue;
            }
            if (d9.keyframe)
                c->svc_key_wanted = 0;
        }
        uint16_t oseq;
        if (!sfu_seqmgr_input(&c->seq, rtp->seq, &oseq)) {
            c->dropped++;
            continue;
        }
        if (c->seq_map)
            sfu_seq_map_put(c->seq_map, oseq, rtp->seq);
        sfu_slot_t *slot = sfu_outbox_reserve(e);
        if (!slot)
            return;
        uint8_t *out = slot->data;
        uint32_t ots = rtp->timestamp + c->ts_offset;
        uint16_t tseq = 0;
        int twcc = consumer_twcc(c, now_ms, len, &tseq);
        long wlen = consumer_write(c, out, buf, len, rtp, oseq, ots, opt, twcc, tseq);
        if (wlen < 0) {
            c->dropped++;
            continue;
        }
        if (vp8 && c->vp8) { /* the consumer's own picture id and TL0PICIDX */
            size_t poff = (size_t)wlen - (len - rtp->header_length);
            sfu_vp8_fwd_packet(c->vp8, &vd, 0, c->preferred_temporal, out + poff, (size_t)wlen - poff);
        }
        if (set_marker)
            out[1] |= 0x80;
        size_t olen = (size_t)wlen;
        if (sfu_transport_protect(e, t, out, &olen) < 0)
            continue;
        sfu_outbox_commit(e, slot, s, &t->remote, (uint32_t)olen);
        c->sent.packets++;
        c->sent.bytes += olen;
        c->payload_bytes += rtp->payload_length;
        t->rtp_out.packets++;
        t->rtp_out.bytes += olen;
        if (!c->ts_started || (int32_t)(ots - c->last_ts) > 0) {
            c->ts_started = 1;
            c->last_ts = ots;
            c->last_ts_ms = now_ms;
        }
    }
}

/* As RTX when the consumer negotiated it, else as the original packet. */
void sfu_consumer_retransmit(sfu_engine_t *e, sfu_consumer_t *c, const uint8_t *pkt, size_t plen, uint64_t now_ms)
{
    uint16_t seqs[256];
    int n = sfu_rtcp_parse_nack(pkt, plen, seqs, 256);
    c->nack_packets_received++;
    e->counters[SFU_C_RX_NACK]++;
    sfu_producer_t *p = c->producer;
    if (n <= 0)
        return;
    if (!c->seq_map || !p || c->stream >= p->nstreams || !p->streams[c->stream].store.slots) {
        e->counters[SFU_C_RETRANSMISSION_MISSES] += (uint64_t)n; /* nothing kept to resend from */
        return;
    }
    sfu_producer_stream_t *st = &p->streams[c->stream];
    sfu_transport_t *t = c->transport;
    sfu_socket_t *s = sfu_socket_get(e, t->rtp_socket);
    if (!s || !sfu_transport_can_send_media(t))
        return;
    int missed = 0;
    for (int i = 0; i < n; i++) {
        uint16_t out_seq = seqs[i], in_seq;
        size_t len;
        c->nacked_seqs++;
        if (!sfu_seq_map_get(c->seq_map, out_seq, &in_seq)) {
            e->counters[SFU_C_RETRANSMISSION_MISSES]++;
            continue;
        }
        const uint8_t *orig = sfu_packet_store_get(&st->store, in_seq, &len, now_ms, SFU_RETRANSMISSION_MAX_AGE_MS);
        if (!orig) {
            e->counters[SFU_C_RETRANSMISSION_MISSES]++;
            /* too old to resend (a viewer whose path was down): lost for good;
             * one never stored was lost on the way in and may still be
             * recovered from the publisher (its NACK generator asks for a
             * keyframe if not) */
            if (sfu_packet_store_expired(&st->store, in_seq, now_ms, SFU_RETRANSMISSION_MAX_AGE_MS))
                missed = 1;
            continue;
        }
        if (!sfu_seq_map_may_resend(c->seq_map, out_seq, now_ms, c->rtt_ms))
            continue;
        sfu_rtp_t rtp;
        if (sfu_rtp_parse(orig, len, &rtp) < 0)
            continue;
        uint8_t opt = c->pt_map[rtp.payload_type];
        if (opt == SFU_PT_NONE)
            continue;
        sfu_slot_t *slot = sfu_outbox_reserve(e);
        if (!slot)
            return;
        uint8_t *out = slot->data;
        uint16_t tseq = 0;
        int twcc = consumer_twcc(c, now_ms, len, &tseq);
        long wlen = consumer_write(c, out, orig, len, &rtp, out_seq, rtp.timestamp + c->ts_offset, opt, twcc, tseq);
        if (wlen < 0)
            continue;
        sfu_vp8_desc_t vd;
        if (c->vp8 && p->codec_of_pt[rtp.payload_type & 0x7f] == SFU_CODEC_VP8 &&
            sfu_vp8_parse(orig + rtp.header_length, rtp.payload_length, &vd) == 0 && vd.has_picture_id) {
            /* the picture id it was sent with (a frame too old to be
             * remembered cannot be rewritten: not resent) */
            size_t poff = (size_t)wlen - (len - rtp.header_length);
            if (sfu_vp8_fwd_packet(c->vp8, &vd, 0, c->preferred_temporal, out + poff, (size_t)wlen - poff) != 1)
                continue;
        }
        sfu_vp9_desc_t d9;
        if (c->vp9 && p->codec_of_pt[rtp.payload_type & 0x7f] == SFU_CODEC_VP9 &&
            sfu_vp9_parse(orig + rtp.header_length, rtp.payload_length, &d9) == 0 && d9.end_of_frame &&
            c->svc_sid >= 0 && d9.sid >= c->svc_sid)
            out[1] |= 0x80; /* it ended the highest layer forwarded (as when first sent) */
        size_t olen = (size_t)wlen;
        if (c->rtx_pt && c->rtx_ssrc) {
            c->rtx_seq++;
            if (sfu_rtx_encapsulate(out, &olen, SFU_SLOT_SIZE - SFU_SRTP_TRAILER_ROOM, c->rtx_pt, c->rtx_ssrc,
                                    c->rtx_seq) < 0)
                continue;
        }
        if (sfu_transport_protect(e, t, out, &olen) < 0)
            continue;
        sfu_outbox_commit(e, slot, s, &t->remote, (uint32_t)olen);
        c->retransmitted++;
        t->rtp_out.packets++;
        t->rtp_out.bytes += olen;
        e->counters[SFU_C_TX_RETRANSMISSIONS]++;
    }
    /* the viewer lost a packet too old to resend (a path that was down for
     * a while): its decoder needs a keyframe, ask now rather than when it
     * gives up and sends a PLI of its own */
    if (missed)
        sfu_keyframe_request(e, p, c->stream, now_ms);
}

void sfu_consumer_free(sfu_consumer_t *c)
{
    free(c->vp8);
    free(c->vp9);
    free(c->seq_map);
    free(c);
}
