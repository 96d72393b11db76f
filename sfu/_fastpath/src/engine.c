/* The engine (engine.h): lifecycle, sockets, and the data-plane entry point
 * sfu_engine_receive(), which demultiplexes a datagram by kind (STUN, DTLS,
 * RTP, RTCP) and source, admits STUN, and hands media to its transport.
 * The only syscalls: e->flush (io.c) when the outbox is full, the upcall
 * eventfd, the wake-up eventfd (timers.c), and connect() of a plain
 * transport's socket (transport.c). */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer.h"
#include "outbox.h"
#include "producer.h"
#include "reports.h"
#include "timers.h"
#include "transport.h"

sfu_socket_t *sfu_socket_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->sockets, h); }
sfu_transport_t *sfu_transport_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->transports, h); }
sfu_producer_t *sfu_producer_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->producers, h); }
sfu_consumer_t *sfu_consumer_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->consumers, h); }

sfu_engine_t *sfu_engine_new(void)
{
    sfu_ntp_init();
    sfu_engine_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    pthread_mutex_init(&e->lock, NULL);
    e->stun_tokens_milli = (uint64_t)SFU_STUN_UNVALIDATED_BURST * 1000;
    e->outbox = malloc(sizeof(sfu_slot_t) * SFU_OUTBOX_SLOTS);
    e->upcalls = calloc(SFU_UPCALL_CAP, sizeof(sfu_upcall_t));
    if (!e->outbox || !e->upcalls) {
        free(e->outbox);
        free(e->upcalls);
        free(e);
        return NULL;
    }
    e->notify_fd = -1;
    e->keyframe_request_interval_ms = SFU_KEYFRAME_REQUEST_INTERVAL_MS;
    e->epoll_fd = -1;
    e->stop_fd = -1;
    e->next_deadline_ms = SFU_TIMER_NONE;
    e->io_wake_ms = 0;
    return e;
}

static void free_socket(void *p)
{
    sfu_socket_t *s = p;
    if (s->fd >= 0)
        close(s->fd);
    sfu_tuple_map_free(&s->tuples);
    if (s->direct) {
        free(s->direct->buf);
        free(s->direct);
    }
    free(s);
}

void sfu_engine_free(sfu_engine_t *e)
{
    if (!e)
        return;
    sfu_io_stop(e);
    sfu_table_free(&e->consumers, (void (*)(void *))sfu_consumer_free);
    sfu_table_free(&e->producers, (void (*)(void *))sfu_producer_free);
    sfu_table_free(&e->transports, (void (*)(void *))sfu_transport_free);
    sfu_table_free(&e->sockets, free_socket);
    sfu_upcall_t up;
    while (sfu_upcall_pop_locked(e, &up))
        free(up.data);
    free(e->upcalls);
    free(e->outbox);
    free(e->kf_pending);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

void sfu_engine_lock(sfu_engine_t *e) { pthread_mutex_lock(&e->lock); }
void sfu_engine_unlock(sfu_engine_t *e) { pthread_mutex_unlock(&e->lock); }

uint32_t sfu_socket_add_locked(sfu_engine_t *e, int fd)
{
    sfu_socket_t *s = calloc(1, sizeof(*s));
    if (!s)
        return 0;
    s->fd = fd;
    s->pending_head = s->pending_tail = UINT32_MAX;
    s->handle = sfu_table_add(&e->sockets, s);
    if (!s->handle) {
        free(s);
        return 0;
    }
    if (fd >= 0 && e->epoll_fd >= 0 && sfu_io_watch_locked(e, s->handle) < 0) {
        sfu_table_del(&e->sockets, s->handle);
        free(s);
        return 0;
    }
    return s->handle;
}

uint32_t sfu_direct_socket_add_locked(sfu_engine_t *e, uint32_t cap)
{
    if (cap < SFU_SLOT_SIZE + 4)
        return 0;
    sfu_direct_queue_t *q = calloc(1, sizeof(*q));
    if (!q)
        return 0;
    q->buf = malloc(cap);
    if (!q->buf) {
        free(q);
        return 0;
    }
    q->cap = cap;
    uint32_t h = sfu_socket_add_locked(e, -1);
    sfu_socket_t *s = h ? sfu_socket_get(e, h) : NULL;
    if (!s) {
        free(q->buf);
        free(q);
        return 0;
    }
    s->direct = q;
    return h;
}

void sfu_direct_append_locked(sfu_engine_t *e, sfu_socket_t *s)
{
    sfu_direct_queue_t *q = s->direct;
    for (uint32_t idx = s->pending_head; idx != UINT32_MAX; idx = e->outbox[idx].next) {
        const sfu_slot_t *slot = &e->outbox[idx];
        if (slot->len > SFU_SLOT_SIZE || (uint64_t)q->used + 4 + slot->len > q->cap) {
            q->drops++;
            e->counters[SFU_C_DROP_DIRECT_FULL]++;
            continue;
        }
        uint32_t n = slot->len;
        uint8_t *p = q->buf + q->used;
        p[0] = (uint8_t)n;
        p[1] = (uint8_t)(n >> 8);
        p[2] = (uint8_t)(n >> 16);
        p[3] = (uint8_t)(n >> 24);
        memcpy(p + 4, slot->data, n);
        q->used += 4 + n;
        q->packets++;
        q->bytes += n;
        e->counters[SFU_C_TX_DATAGRAMS]++;
        e->counters[SFU_C_TX_BYTES] += n;
    }
}

int sfu_socket_remove_locked(sfu_engine_t *e, uint32_t h)
{
    sfu_socket_t *s = sfu_socket_get(e, h);
    if (!s)
        return -1;
    /* Datagrams still queued for this socket are sent first. */
    if (s->pending_count && e->flush)
        e->flush(e);
    sfu_transport_t *t = sfu_transport_get(e, s->transport);
    if (t) {
        if (t->rtp_socket == h)
            t->rtp_socket = 0;
        if (t->rtcp_socket == h)
            t->rtcp_socket = 0;
    }
    sfu_table_del(&e->sockets, h);
    free_socket(s); /* closing the fd removes it from epoll */
    return 0;
}

int sfu_tuple_bind_locked(sfu_engine_t *e, uint32_t sh, const struct sockaddr *addr, socklen_t len, uint32_t th)
{
    sfu_socket_t *s = sfu_socket_get(e, sh);
    sfu_transport_t *t = sfu_transport_get(e, th);
    if (!s || !t || !t->ice)
        return -1;
    return sfu_tuple_map_put(&s->tuples, addr, len, th);
}

int sfu_tuple_unbind_locked(sfu_engine_t *e, uint32_t sh, const struct sockaddr *addr, socklen_t len)
{
    (void)len;
    sfu_socket_t *s = sfu_socket_get(e, sh);
    if (!s)
        return -1;
    return sfu_tuple_map_del(&s->tuples, addr);
}

/* STUN admission for tuples ICE has not validated: a token bucket
 * (SFU_STUN_UNVALIDATED_PER_S, burst SFU_STUN_UNVALIDATED_BURST) and at most
 * SFU_UPCALL_UNVALIDATED_CAP of them waiting in the upcall queue; the rest
 * is counted and dropped here, before any copy. */
static int stun_admit_unvalidated(sfu_engine_t *e, uint64_t now_ms)
{
    const uint64_t burst = (uint64_t)SFU_STUN_UNVALIDATED_BURST * 1000;
    if (now_ms > e->stun_tokens_ms) {
        uint64_t add = (now_ms - e->stun_tokens_ms) * SFU_STUN_UNVALIDATED_PER_S; /* milli-tokens */
        e->stun_tokens_milli = e->stun_tokens_milli + add > burst ? burst : e->stun_tokens_milli + add;
        e->stun_tokens_ms = now_ms;
    }
    if (e->stun_tokens_milli < 1000 || e->up_unvalidated >= SFU_UPCALL_UNVALIDATED_CAP) {
        e->counters[SFU_C_DROP_STUN_UNVALIDATED]++;
        return 0;
    }
    e->stun_tokens_milli -= 1000;
    return 1;
}

void sfu_engine_receive(sfu_engine_t *e, uint32_t sh, const struct sockaddr *src, socklen_t src_len, uint8_t *buf,
                        size_t len, size_t cap, uint64_t now_ms)
{
    e->counters[SFU_C_RX_DATAGRAMS]++;
    e->counters[SFU_C_RX_BYTES] += len;
    sfu_socket_t *s = sfu_socket_get(e, sh);
    if (!s)
        return;
    /* ICE tuples first (shared or per-transport port), then the socket's
     * dedicated plain transport. */
    uint32_t th = s->tuples.count ? sfu_tuple_map_get(&s->tuples, src) : 0;
    int validated = th != 0;
    if (!th)
        th = s->transport;
    int kind = sfu_classify(buf, len);
    switch (kind) {
    case SFU_PKT_STUN:
        e->counters[SFU_C_RX_STUN]++;
        if (validated) {
            sfu_upcall_push(e, SFU_UP_PACKET, s, th, kind, src, src_len, buf, len);
        } else if (stun_admit_unvalidated(e, now_ms)) {
            sfu_upcall_t *up = sfu_upcall_push(e, SFU_UP_PACKET, s, th, kind, src, src_len, buf, len);
            if (up) {
                up->unvalidated = 1;
                e->up_unvalidated++;
            }
        }
        return;
    case SFU_PKT_DTLS:
        e->counters[SFU_C_RX_DTLS]++;
        /* DTLS only from a tuple ICE validated (anyone can reach a shared port) */
        if (th && sfu_transport_get(e, th))
            sfu_upcall_push(e, SFU_UP_PACKET, s, th, kind, src, src_len, buf, len);
        return;
    case SFU_PKT_UNKNOWN:
        e->counters[SFU_C_RX_UNKNOWN]++; /* counted and dropped here: no copy up to Python */
        return;
    default:
        break;
    }
    if (len > SFU_MAX_DATAGRAM || cap < len + SFU_SRTP_TRAILER_ROOM) {
        e->counters[SFU_C_DROP_TOO_BIG]++;
        return;
    }
    sfu_transport_t *t = sfu_transport_get(e, th);
    if (!t) {
        e->counters[SFU_C_DROP_NO_TRANSPORT]++;
        return;
    }
    sfu_addr_t *remote = s->is_rtcp ? &t->remote_rtcp : &t->remote;
    struct sfu_latch latch = {NULL, NULL, src, src_len};
    /* comedia with RTP and RTCP on one port: senders such as ffmpeg still
     * send RTCP from a port of its own (RTP port + 1), so the tuple is learnt
     * from RTP only, and RTCP is taken from the learnt host on any port */
    int rtcp_from_elsewhere = kind == SFU_PKT_RTCP && t->comedia && !s->is_rtcp && t->rtcp_socket == t->rtp_socket;
    if (t->ice) {
        /* the tuple map already vouched for the source */
    } else if (!remote->set) {
        if (!t->comedia || rtcp_from_elsewhere) {
            e->counters[SFU_C_DROP_NOT_CONNECTED]++;
            t->drops++;
            return;
        }
        /* comedia: learn the remote only from a packet that authenticates
         * and parses (a forged datagram must not capture the tuple) */
        latch.socket = s;
        latch.remote = remote;
    } else if (!sfu_addr_equal(remote, src) && !(rtcp_from_elsewhere && sfu_addr_match(remote, src, 0))) {
        e->counters[SFU_C_DROP_UNKNOWN_SOURCE]++;
        t->drops++;
        return;
    }
    if (kind == SFU_PKT_RTP) {
        e->counters[SFU_C_RX_RTP]++;
        sfu_transport_receive_rtp(e, t, buf, len, cap, now_ms, &latch);
    } else {
        e->counters[SFU_C_RX_RTCP]++;
        sfu_transport_receive_rtcp(e, t, buf, len, &latch, now_ms);
    }
}
