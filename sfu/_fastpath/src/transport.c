/* Transports (transport.h). */
#include "transport.h"

#include "bwe.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outbox.h"
#include "producer_stream.h"
#include "rtp_listener.h"
#include "timers.h"

uint32_t sfu_transport_add_locked(sfu_engine_t *e, uint32_t rtp_socket, uint32_t rtcp_socket, int flags)
{
    int ice = (flags & SFU_TRANSPORT_ICE) != 0;
    sfu_socket_t *rs = sfu_socket_get(e, rtp_socket);
    if (!rs || (!ice && rs->transport))
        return 0;
    sfu_socket_t *cs = NULL;
    if (ice && rtcp_socket && rtcp_socket != rtp_socket)
        return 0; /* ICE transports multiplex RTCP */
    if (rtcp_socket && rtcp_socket != rtp_socket) {
        cs = sfu_socket_get(e, rtcp_socket);
        if (!cs || cs->transport)
            return 0;
    }
    sfu_transport_t *t = calloc(1, sizeof(*t));
    if (!t)
        return 0;
    t->rtp_socket = rtp_socket;
    t->rtcp_socket = cs ? rtcp_socket : rtp_socket;
    t->comedia = (flags & SFU_TRANSPORT_COMEDIA) != 0;
    t->ice = ice;
    t->require_srtp = ice || (flags & SFU_TRANSPORT_REQUIRE_SRTP) != 0;
    sfu_rtt_init(&t->rtt);
    t->handle = sfu_table_add(&e->transports, t);
    if (!t->handle) {
        free(t);
        return 0;
    }
    /* Reports and rates: in the engine's round of reports, so that all
     * transports share one deadline a second (one pass over them, not one
     * per transport); the first transport starts the round at once. */
    if (e->rr_round_ms) {
        t->last_rr_ms = e->rr_round_ms;
        t->rr_joined = 1;
    }
    sfu_timer_pull(e, t->last_rr_ms + SFU_RTCP_INTERVAL_MS);
    if (ice)
        return t->handle; /* sources come from the socket's tuple map */
    rs->transport = t->handle;
    rs->is_rtcp = 0;
    if (cs) {
        cs->transport = t->handle;
        cs->is_rtcp = 1;
    }
    return t->handle;
}

/* A plain transport has one remote per socket: connect() the socket to it, so
 * the kernel filters other sources and sends skip the per-datagram route
 * lookup (about 10% of a saturated worker's CPU). ICE sockets are shared. */
static void socket_connect(sfu_engine_t *e, uint32_t sh, const sfu_addr_t *remote)
{
    sfu_socket_t *s = sfu_socket_get(e, sh);
    if (!s || s->fd < 0)
        return;
    if (remote->set) {
        s->connected = connect(s->fd, (const struct sockaddr *)&remote->addr, remote->len) == 0;
    } else if (s->connected) {
        struct sockaddr unspec;
        memset(&unspec, 0, sizeof(unspec));
        unspec.sa_family = AF_UNSPEC;
        connect(s->fd, &unspec, sizeof(unspec));
        s->connected = 0;
    }
}

int sfu_transport_connect_locked(sfu_engine_t *e, uint32_t h, const struct sockaddr *rtp, socklen_t rtp_len,
                                 const struct sockaddr *rtcp, socklen_t rtcp_len)
{
    sfu_transport_t *t = sfu_transport_get(e, h);
    if (!t)
        return -1;
    if (e->flush)
        e->flush(e); /* queued datagrams keep their old destination */
    sfu_addr_set(&t->remote, rtp, rtp_len);
    if (t->rtcp_socket == t->rtp_socket || !rtcp)
        sfu_addr_set(&t->remote_rtcp, rtp, rtp_len);
    else
        sfu_addr_set(&t->remote_rtcp, rtcp, rtcp_len);
    if (!t->ice) {
        socket_connect(e, t->rtp_socket, &t->remote);
        if (t->rtcp_socket != t->rtp_socket)
            socket_connect(e, t->rtcp_socket, &t->remote_rtcp);
    }
    if (t->nconsumers)
        sfu_timer_pull(e, 0); /* its consumers may wait for a keyframe */
    return 0;
}

int sfu_transport_set_srtp_locked(sfu_engine_t *e, uint32_t h, int profile, const uint8_t *in_key, size_t in_len,
                                  const uint8_t *out_key, size_t out_len)
{
    sfu_transport_t *t = sfu_transport_get(e, h);
    if (!t)
        return -1;
    if (profile == 0) {
        sfu_srtp_free(t->srtp_in);
        sfu_srtp_free(t->srtp_out);
        t->srtp_in = t->srtp_out = NULL;
        return 0;
    }
    /* both new contexts first: a bad key changes nothing */
    sfu_srtp_t *in = NULL, *out = NULL;
    if (in_key && !(in = sfu_srtp_new(profile, in_key, in_len, 0)))
        return -2;
    if (out_key && !(out = sfu_srtp_new(profile, out_key, out_len, 1))) {
        sfu_srtp_free(in);
        return -2;
    }
    /* The I/O thread uses the contexts only under the engine lock, which the
     * caller holds: the old ones can go at once. */
    if (in) {
        sfu_srtp_free(t->srtp_in);
        t->srtp_in = in;
    }
    if (out) {
        sfu_srtp_free(t->srtp_out);
        t->srtp_out = out;
        if (t->nconsumers)
            sfu_timer_pull(e, 0); /* its consumers may wait for a keyframe */
    }
    return 0;
}

int sfu_transport_remove_locked(sfu_engine_t *e, uint32_t h)
{
    sfu_transport_t *t = sfu_transport_get(e, h);
    if (!t)
        return -1;
    /* Children first (the control plane normally closed them already). */
    for (uint32_t i = 1; i < e->consumers.cap; i++) {
        sfu_consumer_t *c = e->consumers.items[i];
        if (c && c->transport == t)
            sfu_consumer_remove_locked(e, c->handle);
    }
    for (uint32_t i = 1; i < e->producers.cap; i++) {
        sfu_producer_t *p = e->producers.items[i];
        if (p && p->transport == t)
            sfu_producer_remove_locked(e, p->handle);
    }
    if (e->flush)
        e->flush(e);
    sfu_socket_t *s = sfu_socket_get(e, t->rtp_socket);
    if (s) {
        if (s->transport == h)
            s->transport = 0;
        sfu_tuple_map_remove_transport(&s->tuples, h);
    }
    s = sfu_socket_get(e, t->rtcp_socket);
    if (s && s->transport == h)
        s->transport = 0;
    sfu_table_del(&e->transports, h);
    sfu_transport_free(t);
    return 0;
}

void sfu_transport_latch_apply(sfu_engine_t *e, sfu_transport_t *t, const struct sfu_latch *l)
{
    if (!l->socket)
        return;
    sfu_addr_set(l->remote, l->src, l->src_len);
    if (!l->socket->is_rtcp && t->rtcp_socket == t->rtp_socket)
        sfu_addr_set(&t->remote_rtcp, l->src, l->src_len);
    socket_connect(e, l->socket->handle, l->remote);
    sfu_upcall_push(e, SFU_UP_TUPLE, l->socket, t->handle, 0, l->src, l->src_len, NULL, 0);
    if (t->nconsumers)
        sfu_timer_pull(e, 0); /* its consumers may wait for a keyframe */
}

/* transport-cc counts every arrival (probes, retransmissions and duplicates
 * included): the sender's estimator needs all of them. */
static void twcc_arrival(sfu_engine_t *e, sfu_transport_t *t, const sfu_producer_t *p,
                         const sfu_producer_stream_t *st, const uint8_t *buf, const sfu_rtp_t *rtp, uint64_t now_ms)
{
    sfu_rtp_ext_elem_t elems[SFU_RTP_MAX_EXTENSIONS];
    int n = sfu_rtp_ext_elements(buf, rtp, elems, SFU_RTP_MAX_EXTENSIONS);
    for (int i = 0; i < n; i++) {
        uint8_t id = p->ext_identity ? elems[i].id : p->ext_map[elems[i].id];
        uint16_t tseq;
        if (id == p->twcc_ext_id && sfu_twcc_read_ext(buf + elems[i].offset, elems[i].length, &tseq) == 0) {
            if (!t->twcc && (t->twcc = malloc(sizeof(*t->twcc))) != NULL)
                sfu_twcc_recv_init(t->twcc);
            if (t->twcc) {
                sfu_twcc_on_packet(t->twcc, tseq, now_ms * 1000);
                t->twcc_media_ssrc = st->ssrc;
                if (!t->twcc_armed) { /* the first arrival to report */
                    t->twcc_armed = 1;
                    sfu_timer_pull(e, t->last_twcc_ms + SFU_TWCC_INTERVAL_MS);
                }
            }
            break;
        }
    }
}

void sfu_transport_receive_rtp(sfu_engine_t *e, sfu_transport_t *t, uint8_t *buf, size_t len, size_t cap,
                               uint64_t now_ms, const struct sfu_latch *latch)
{
    if (t->require_srtp && !t->srtp_in) {
        /* SRTP is on but the remote keys are not known yet. */
        e->counters[SFU_C_DROP_SRTP]++;
        t->drops++;
        return;
    }
    if (t->srtp_in && sfu_srtp_unprotect(t->srtp_in, buf, &len) != 0) {
        e->counters[SFU_C_DROP_SRTP]++;
        t->drops++;
        return;
    }
    sfu_rtp_t rtp;
    if (sfu_rtp_parse(buf, len, &rtp) < 0) {
        e->counters[SFU_C_DROP_RTP_MALFORMED]++;
        t->drops++;
        return;
    }
    sfu_transport_latch_apply(e, t, latch);
    t->rtp_in.packets++;
    t->rtp_in.bytes += len;

    struct sfu_route *r = sfu_rtp_listener_find(e, t, buf, &rtp);
    if (!r) {
        e->counters[SFU_C_DROP_UNKNOWN_SSRC]++;
        t->drops++;
        return;
    }
    sfu_producer_t *p = r->producer;
    sfu_producer_stream_t *st = &p->streams[r->stream];
    if (p->twcc_ext_id && rtp.extension)
        twcc_arrival(e, t, p, st, buf, &rtp, now_ms);
    sfu_producer_stream_receive(e, t, r, buf, len, cap, &rtp, now_ms);
}

int sfu_transport_send_rtcp(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *data, size_t len)
{
    if (!t->remote_rtcp.set || len > SFU_SLOT_SIZE - SFU_SRTP_TRAILER_ROOM)
        return -1;
    if (t->require_srtp && !t->srtp_out)
        return -1;
    sfu_socket_t *s = sfu_socket_get(e, t->rtcp_socket);
    if (!s)
        return -1;
    sfu_slot_t *slot = sfu_outbox_reserve(e);
    if (!slot)
        return -1;
    memcpy(slot->data, data, len);
    size_t l = len;
    if (t->srtp_out && sfu_srtp_protect_rtcp(t->srtp_out, slot->data, &l, SFU_SLOT_SIZE) != 0) {
        e->counters[SFU_C_TX_SRTP_ERRORS]++;
        return -1;
    }
    sfu_outbox_commit(e, slot, s, &t->remote_rtcp, (uint32_t)l);
    t->rtcp_out.packets++;
    t->rtcp_out.bytes += (uint64_t)l;
    return 0;
}

sfu_consumer_t *sfu_transport_consumer_by_ssrc(sfu_transport_t *t, uint32_t ssrc)
{
    for (uint32_t i = 0; i < t->nconsumers; i++)
        if (t->consumers[i]->ssrc == ssrc)
            return t->consumers[i];
    return NULL;
}

void sfu_transport_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    if (t->twcc_armed) {
        if (t->twcc && sfu_twcc_pending(t->twcc) && now_ms - t->last_twcc_ms >= SFU_TWCC_INTERVAL_MS) {
            uint8_t pkt[1200];
            for (int k = 0; k < 8; k++) {
                int len = sfu_twcc_build_feedback(t->twcc, pkt, sizeof(pkt), 1, t->twcc_media_ssrc);
                if (len <= 0)
                    break;
                sfu_transport_send_rtcp(e, t, pkt, (size_t)len);
                e->counters[SFU_C_TX_TWCC]++;
            }
            t->last_twcc_ms = now_ms;
        }
        t->twcc_armed = t->twcc && sfu_twcc_pending(t->twcc);
        if (t->twcc_armed)
            sfu_timer_pull(e, t->last_twcc_ms + SFU_TWCC_INTERVAL_MS);
    }
}

void sfu_transport_free(sfu_transport_t *t)
{
    sfu_srtp_free(t->srtp_in);
    sfu_srtp_free(t->srtp_out);
    free(t->routes);
    free(t->pending);
    free(t->consumers);
    free(t->twcc);
    sfu_bwe_free(t->bwe);
    free(t);
}
