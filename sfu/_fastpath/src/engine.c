/* The forwarding engine core: object tables and the per-packet path.
 * No syscalls here except through e->flush (io.c) and the upcall eventfd. */
#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#include "keyframe.h"
#include "rtcp.h"
#include "timers.h"

static sfu_srtp_fn srtp_protect_fn, srtp_unprotect_fn, srtp_protect_rtcp_fn, srtp_unprotect_rtcp_fn;

void sfu_srtp_set_functions(sfu_srtp_fn protect, sfu_srtp_fn unprotect, sfu_srtp_fn protect_rtcp,
                            sfu_srtp_fn unprotect_rtcp)
{
    srtp_protect_fn = protect;
    srtp_unprotect_fn = unprotect;
    srtp_protect_rtcp_fn = protect_rtcp;
    srtp_unprotect_rtcp_fn = unprotect_rtcp;
}

/* ------------------------------------------------------------------ tables */

uint32_t sfu_table_add(sfu_table_t *t, void *obj)
{
    if (t->count + 1 >= t->cap) {
        uint32_t ncap = t->cap ? t->cap * 2 : 64;
        if (ncap > SFU_HANDLE_INDEX_MASK + 1)
            return 0;
        void **items = realloc(t->items, ncap * sizeof(void *));
        if (!items)
            return 0;
        t->items = items;
        uint32_t *gens = realloc(t->gens, ncap * sizeof(uint32_t));
        if (!gens)
            return 0;
        t->gens = gens;
        for (uint32_t i = t->cap; i < ncap; i++) {
            t->items[i] = NULL;
            t->gens[i] = 1;
        }
        t->cap = ncap;
    }
    uint32_t i = t->hint;
    for (uint32_t n = 0; n < t->cap; n++, i++) {
        if (i == 0 || i >= t->cap)
            i = 1;
        if (!t->items[i]) {
            t->items[i] = obj;
            t->count++;
            t->hint = i + 1;
            return (t->gens[i] << SFU_HANDLE_INDEX_BITS) | i;
        }
    }
    return 0;
}

void sfu_table_del(sfu_table_t *t, uint32_t h)
{
    uint32_t i = h & SFU_HANDLE_INDEX_MASK;
    if (!sfu_table_get(t, h))
        return;
    t->items[i] = NULL;
    t->gens[i] = (t->gens[i] + 1) & ((1u << (32 - SFU_HANDLE_INDEX_BITS)) - 1);
    if (t->gens[i] == 0)
        t->gens[i] = 1;
    t->count--;
}

sfu_socket_t *sfu_socket_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->sockets, h); }
sfu_transport_t *sfu_transport_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->transports, h); }
sfu_producer_t *sfu_producer_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->producers, h); }
sfu_consumer_t *sfu_consumer_get(sfu_engine_t *e, uint32_t h) { return sfu_table_get(&e->consumers, h); }

/* ------------------------------------------------------------------ engine */

/* Unix time minus the monotonic clock, taken once: SR timestamps are NTP
 * (wall clock) while the engine's `now_ms` is monotonic. */
static int64_t wallclock_offset_ms;

static uint64_t ntp_now(uint64_t now_ms)
{
    return sfu_ntp_from_ms((uint64_t)((int64_t)now_ms + wallclock_offset_ms));
}

sfu_engine_t *sfu_engine_new(void)
{
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    wallclock_offset_ms = ((int64_t)rt.tv_sec - (int64_t)mono.tv_sec) * 1000 +
                          ((int64_t)rt.tv_nsec - (int64_t)mono.tv_nsec) / 1000000;

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

/* timers.h: a control call made timer work due before the I/O thread's
 * planned wake-up. */
void sfu_timer_wake(sfu_engine_t *e)
{
    e->io_wake_ms = 0; /* one write until the thread has ticked */
    if (e->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(e->stop_fd, &one, sizeof(one));
        (void)r;
    }
}

static void free_table(sfu_table_t *t, void (*fn)(void *))
{
    for (uint32_t i = 1; i < t->cap; i++)
        if (t->items[i] && fn)
            fn(t->items[i]);
    free(t->items);
    free(t->gens);
}

static void free_socket(void *p)
{
    sfu_socket_t *s = p;
    if (s->fd >= 0)
        close(s->fd);
    free(s->tuples.slots);
    free(s);
}

static void free_transport(void *p)
{
    sfu_transport_t *t = p;
    free(t->routes);
    free(t->pending);
    free(t->consumers);
    free(t->twcc);
    free(t);
}

static void free_consumer(void *p)
{
    sfu_consumer_t *c = p;
    free(c->seq_map);
    free(c);
}

static void free_producer(void *p)
{
    sfu_producer_t *pr = p;
    for (int i = 0; i < pr->nstreams; i++)
        sfu_packet_store_free(&pr->streams[i].store);
    free(pr->consumers);
    free(pr);
}

void sfu_engine_free(sfu_engine_t *e)
{
    if (!e)
        return;
    sfu_io_stop(e);
    free_table(&e->consumers, free_consumer);
    free_table(&e->producers, free_producer);
    free_table(&e->transports, free_transport);
    free_table(&e->sockets, free_socket);
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

/* ------------------------------------------------------------------ sockets */

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

/* ------------------------------------------------------------------ addresses */

static void addr_set(sfu_addr_t *a, const struct sockaddr *sa, socklen_t len)
{
    if (!sa || len == 0 || len > sizeof(a->addr)) {
        a->set = 0;
        return;
    }
    memset(&a->addr, 0, sizeof(a->addr));
    memcpy(&a->addr, sa, len);
    a->len = len;
    a->set = 1;
}

/* Same IP (and, with ports, same port). */
static int addr_match(const sfu_addr_t *a, const struct sockaddr *sa, int ports)
{
    if (a->addr.ss_family != sa->sa_family)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->addr;
        const struct sockaddr_in *y = (const struct sockaddr_in *)sa;
        return (!ports || x->sin_port == y->sin_port) && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->addr;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)sa;
        return (!ports || x->sin6_port == y->sin6_port) && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return 0;
}

static int addr_equal(const sfu_addr_t *a, const struct sockaddr *sa)
{
    return addr_match(a, sa, 1);
}

static int sockaddr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return 0;
}

static uint32_t sockaddr_hash(const struct sockaddr *sa)
{
    uint32_t h = 2166136261u;
    const uint8_t *p;
    size_t n;
    uint16_t port;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        p = (const uint8_t *)&a->sin_addr;
        n = 4;
        port = a->sin_port;
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        p = (const uint8_t *)&a->sin6_addr;
        n = 16;
        port = a->sin6_port;
    }
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    h = (h ^ (port & 0xff)) * 16777619u;
    h = (h ^ (port >> 8)) * 16777619u;
    return h;
}

uint32_t sfu_tuple_lookup(const sfu_socket_t *s, const struct sockaddr *addr)
{
    const sfu_tuple_map_t *m = &s->tuples;
    if (!m->count)
        return 0;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = sockaddr_hash(addr) & mask;; i = (i + 1) & mask) {
        const sfu_tuple_slot_t *slot = &m->slots[i];
        if (!slot->transport)
            return 0;
        if (sockaddr_equal((const struct sockaddr *)&slot->addr, addr))
            return slot->transport;
    }
}

static int tuple_map_put(sfu_tuple_map_t *m, const struct sockaddr *addr, socklen_t len, uint32_t transport)
{
    if (len > sizeof(struct sockaddr_in6))
        return -1;
    if ((m->count + 1) * 2 > m->cap) {
        uint32_t ncap = m->cap ? m->cap * 2 : 16;
        sfu_tuple_slot_t *ns = calloc(ncap, sizeof(*ns));
        if (!ns)
            return -1;
        for (uint32_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].transport)
                continue;
            uint32_t j = sockaddr_hash((struct sockaddr *)&m->slots[i].addr) & (ncap - 1);
            while (ns[j].transport)
                j = (j + 1) & (ncap - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    uint32_t mask = m->cap - 1;
    uint32_t i = sockaddr_hash(addr) & mask;
    for (;; i = (i + 1) & mask) {
        sfu_tuple_slot_t *slot = &m->slots[i];
        if (!slot->transport) {
            memset(&slot->addr, 0, sizeof(slot->addr));
            memcpy(&slot->addr, addr, len);
            slot->transport = transport;
            m->count++;
            return 0;
        }
        if (sockaddr_equal((struct sockaddr *)&slot->addr, addr)) {
            slot->transport = transport;
            return 0;
        }
    }
}

static void tuple_map_delete_at(sfu_tuple_map_t *m, uint32_t i)
{
    uint32_t mask = m->cap - 1;
    m->slots[i].transport = 0;
    m->count--;
    /* backward-shift the entries that probed past the hole */
    for (uint32_t j = (i + 1) & mask; m->slots[j].transport; j = (j + 1) & mask) {
        uint32_t home = sockaddr_hash((struct sockaddr *)&m->slots[j].addr) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j].transport = 0;
            i = j;
        }
    }
}

static void tuple_map_remove_transport(sfu_tuple_map_t *m, uint32_t transport)
{
    for (uint32_t i = 0; i < m->cap;) {
        if (m->slots[i].transport == transport)
            tuple_map_delete_at(m, i); /* re-examine slot i: something may have shifted in */
        else
            i++;
    }
}

int sfu_tuple_bind_locked(sfu_engine_t *e, uint32_t sh, const struct sockaddr *addr, socklen_t len, uint32_t th)
{
    sfu_socket_t *s = sfu_socket_get(e, sh);
    sfu_transport_t *t = sfu_transport_get(e, th);
    if (!s || !t || !t->ice)
        return -1;
    return tuple_map_put(&s->tuples, addr, len, th);
}

int sfu_tuple_unbind_locked(sfu_engine_t *e, uint32_t sh, const struct sockaddr *addr, socklen_t len)
{
    (void)len;
    sfu_socket_t *s = sfu_socket_get(e, sh);
    if (!s || !s->tuples.count)
        return -1;
    uint32_t mask = s->tuples.cap - 1;
    for (uint32_t i = sockaddr_hash(addr) & mask; s->tuples.slots[i].transport; i = (i + 1) & mask) {
        if (sockaddr_equal((struct sockaddr *)&s->tuples.slots[i].addr, addr)) {
            tuple_map_delete_at(&s->tuples, i);
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------ transports */

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
    addr_set(&t->remote, rtp, rtp_len);
    if (t->rtcp_socket == t->rtp_socket || !rtcp)
        addr_set(&t->remote_rtcp, rtp, rtp_len);
    else
        addr_set(&t->remote_rtcp, rtcp, rtcp_len);
    if (!t->ice) {
        socket_connect(e, t->rtp_socket, &t->remote);
        if (t->rtcp_socket != t->rtp_socket)
            socket_connect(e, t->rtcp_socket, &t->remote_rtcp);
    }
    if (t->nconsumers)
        sfu_timer_pull(e, 0); /* its consumers may wait for a keyframe */
    return 0;
}

int sfu_transport_set_srtp_locked(sfu_engine_t *e, uint32_t h, void *srtp_in, void *srtp_out)
{
    sfu_transport_t *t = sfu_transport_get(e, h);
    if (!t)
        return -1;
    if ((srtp_in || srtp_out) && !srtp_protect_fn)
        return -2;
    t->srtp_in = srtp_in;
    t->srtp_out = srtp_out;
    if (srtp_out && t->nconsumers)
        sfu_timer_pull(e, 0); /* its consumers may wait for a keyframe */
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
        tuple_map_remove_transport(&s->tuples, h);
    }
    s = sfu_socket_get(e, t->rtcp_socket);
    if (s && s->transport == h)
        s->transport = 0;
    sfu_table_del(&e->transports, h);
    free_transport(t);
    return 0;
}

/* ------------------------------------------------------------------ producers */

static int route_add(sfu_transport_t *t, uint32_t ssrc, sfu_producer_t *p, int stream, int is_rtx)
{
    for (uint32_t i = 0; i < t->nroutes; i++)
        if (t->routes[i].ssrc == ssrc)
            return -1;
    if (t->nroutes == t->routes_cap) {
        uint32_t ncap = t->routes_cap ? t->routes_cap * 2 : 8;
        struct sfu_route *r = realloc(t->routes, ncap * sizeof(*r));
        if (!r)
            return -1;
        t->routes = r;
        t->routes_cap = ncap;
    }
    t->routes[t->nroutes].ssrc = ssrc;
    t->routes[t->nroutes].producer = p;
    t->routes[t->nroutes].stream = (uint16_t)stream;
    t->routes[t->nroutes].is_rtx = (uint16_t)is_rtx;
    t->nroutes++;
    return 0;
}

static int pending_add(sfu_transport_t *t, sfu_producer_t *p, int stream, int is_rtx)
{
    if (t->npending == t->pending_cap) {
        uint32_t ncap = t->pending_cap ? t->pending_cap * 2 : 8;
        struct sfu_route *r = realloc(t->pending, ncap * sizeof(*r));
        if (!r)
            return -1;
        t->pending = r;
        t->pending_cap = ncap;
    }
    t->pending[t->npending].ssrc = 0;
    t->pending[t->npending].producer = p;
    t->pending[t->npending].stream = (uint16_t)stream;
    t->pending[t->npending].is_rtx = (uint16_t)is_rtx;
    t->npending++;
    return 0;
}

static void routes_remove_producer(sfu_transport_t *t, sfu_producer_t *p)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < t->nroutes; i++)
        if (t->routes[i].producer != p)
            t->routes[j++] = t->routes[i];
    t->nroutes = j;
    j = 0;
    for (uint32_t i = 0; i < t->npending; i++)
        if (t->pending[i].producer != p)
            t->pending[j++] = t->pending[i];
    t->npending = j;
}

static int map_is_identity(const uint8_t *map, int n)
{
    for (int i = 1; i < n; i++)
        if (map[i] != i)
            return 0;
    return 1;
}

uint32_t sfu_producer_add_locked(sfu_engine_t *e, uint32_t th, int kind_video, int nstreams, const uint32_t *ssrcs,
                                 const uint32_t *rtx_ssrcs, const uint8_t pt_map[128], const uint8_t ext_map[256],
                                 int paused)
{
    sfu_transport_t *t = sfu_transport_get(e, th);
    if (!t || nstreams < 1 || nstreams > SFU_MAX_STREAMS)
        return 0;
    sfu_producer_t *p = calloc(1, sizeof(*p));
    if (!p)
        return 0;
    p->transport = t;
    p->kind_video = kind_video;
    p->paused = paused;
    p->nstreams = nstreams;
    memcpy(p->pt_map, pt_map, 128);
    memcpy(p->ext_map, ext_map, 256);
    p->ext_identity = map_is_identity(p->ext_map, 256);
    uint32_t nroutes_before = t->nroutes, npending_before = t->npending;
    memset(p->rtx_apt, 0xff, sizeof(p->rtx_apt));
    sfu_remb_agg_init(&p->remb);
    for (int i = 0; i < nstreams; i++) {
        sfu_nack_init(&p->streams[i].nack);
        sfu_rtp_stats_init(&p->streams[i].stats, kind_video ? 90000 : 48000);
        p->streams[i].score = 10;
        p->streams[i].ssrc = ssrcs[i];
        p->streams[i].rtx_ssrc = rtx_ssrcs ? rtx_ssrcs[i] : 0;
        /* an SSRC of 0 was not signalled: learned later (MID/RID) */
        int rc = ssrcs[i] ? route_add(t, ssrcs[i], p, i, 0) : pending_add(t, p, i, 0);
        if (rc == 0)
            rc = p->streams[i].rtx_ssrc ? route_add(t, p->streams[i].rtx_ssrc, p, i, 1) : pending_add(t, p, i, 1);
        if (rc < 0) {
            t->nroutes = nroutes_before;
            t->npending = npending_before;
            free(p);
            return 0;
        }
    }
    p->handle = sfu_table_add(&e->producers, p);
    if (!p->handle) {
        t->nroutes = nroutes_before;
        t->npending = npending_before;
        free(p);
        return 0;
    }
    return p->handle;
}

/* Copies a MID/RID string; 0 when absent or longer than SFU_MAX_RTP_ID. */
static uint8_t rtp_id_copy(uint8_t dst[SFU_MAX_RTP_ID], const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n == 0 || n > SFU_MAX_RTP_ID)
        return 0;
    memcpy(dst, src, n);
    return (uint8_t)n;
}

int sfu_producer_set_rtp_ids_locked(sfu_engine_t *e, uint32_t h, const char *mid, const char *const *rids,
                                    uint8_t mid_ext_in, uint8_t rid_ext_in, uint8_t rrid_ext_in)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    p->mid_len = rtp_id_copy(p->mid, mid);
    for (int i = 0; i < p->nstreams; i++)
        p->streams[i].rid_len = rtp_id_copy(p->streams[i].rid, rids ? rids[i] : NULL);
    p->mid_ext_in = mid_ext_in;
    p->rid_ext_in = rid_ext_in;
    p->rrid_ext_in = rrid_ext_in;
    return 0;
}

int sfu_producer_set_paused_locked(sfu_engine_t *e, uint32_t h, int paused)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    if (p->paused && !paused && p->nconsumers) {
        for (uint32_t i = 0; i < p->nconsumers; i++)
            p->consumers[i]->sync_required = 1;
        sfu_timer_pull(e, 0); /* they wait for a keyframe */
    }
    p->paused = paused;
    for (uint32_t i = 0; i < p->nconsumers; i++)
        p->consumers[i]->producer_paused = paused;
    return 0;
}

int sfu_producer_set_codecs_locked(sfu_engine_t *e, uint32_t h, const uint8_t codec_of_pt[128])
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    memcpy(p->codec_of_pt, codec_of_pt, 128);
    return 0;
}

int sfu_producer_set_feedback_locked(sfu_engine_t *e, uint32_t h, int nack, const uint8_t rtx_apt[128],
                                     uint8_t twcc_ext_id, uint64_t remb_floor_bps, uint32_t clock_rate)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    p->nack_enabled = nack;
    if (rtx_apt)
        memcpy(p->rtx_apt, rtx_apt, 128);
    p->twcc_ext_id = twcc_ext_id;
    p->remb_floor_bps = remb_floor_bps;
    if (clock_rate)
        for (int i = 0; i < p->nstreams; i++)
            sfu_rtp_stats_init(&p->streams[i].stats, clock_rate);
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
    /* the producer keeps its packets for retransmission from now on */
    sfu_producer_t *p = c->producer;
    if (nack && p && p->kind_video && c->stream < p->nstreams && !p->streams[c->stream].store.slots) {
        if (sfu_packet_store_init(&p->streams[c->stream].store, SFU_STORE_DEFAULT_CAPACITY) < 0)
            return -2;
    }
    return 0;
}

int sfu_producer_remove_locked(sfu_engine_t *e, uint32_t h)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    for (uint32_t i = 0; i < p->nconsumers; i++)
        p->consumers[i]->producer = NULL;
    routes_remove_producer(p->transport, p);
    sfu_table_del(&e->producers, h);
    free_producer(p);
    return 0;
}

/* ------------------------------------------------------------------ consumers */

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
    c->stream = 0;
    c->paused = paused;
    c->producer_paused = p->paused;
    c->sync_required = 1;
    c->ssrc = ssrc;
    c->rtx_ssrc = rtx_ssrc;
    c->clock_rate = clock_rate;
    memcpy(c->pt_map, pt_map, 128);
    memcpy(c->ext_map, ext_map, 256);
    c->ext_identity = map_is_identity(c->ext_map, 256);
    sfu_seqmgr_init(&c->seq, initial_seq);
    c->handle = sfu_table_add(&e->consumers, c);
    if (!c->handle) {
        free(c);
        return 0;
    }
    if (t->nconsumers == t->consumers_cap) {
        uint32_t ncap = t->consumers_cap ? t->consumers_cap * 2 : 8;
        sfu_consumer_t **cs = realloc(t->consumers, ncap * sizeof(*cs));
        if (!cs) {
            sfu_table_del(&e->consumers, c->handle);
            free(c);
            return 0;
        }
        t->consumers = cs;
        t->consumers_cap = ncap;
    }
    c->score = 10;
    p->consumers[p->nconsumers++] = c;
    t->consumers[t->nconsumers++] = c;
    if (p->kind_video)
        sfu_timer_pull(e, 0); /* it waits for a keyframe */
    return c->handle;
}

int sfu_consumer_set_mid_locked(sfu_engine_t *e, uint32_t h, uint8_t ext_id, const char *mid)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    uint8_t len = rtp_id_copy(c->mid, mid);
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
    if (c->paused && !paused) {
        c->sync_required = 1;
        sfu_timer_pull(e, 0); /* it waits for a keyframe */
    }
    c->paused = paused;
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
    free(c->seq_map);
    sfu_table_del(&e->consumers, h);
    free(c);
    return 0;
}

/* ------------------------------------------------------------------ outbox and upcalls */

void sfu_outbox_clear(sfu_engine_t *e)
{
    for (uint32_t i = 0; i < e->ndirty; i++) {
        sfu_socket_t *s = sfu_socket_get(e, e->dirty_sockets[i]);
        if (s) {
            s->pending_head = s->pending_tail = UINT32_MAX;
            s->pending_count = 0;
            s->dirty = 0;
        }
    }
    e->ndirty = 0;
    e->outbox_used = 0;
}

static inline sfu_slot_t *outbox_reserve(sfu_engine_t *e)
{
    if (e->outbox_used == SFU_OUTBOX_SLOTS) {
        if (e->flush)
            e->flush(e);
        if (e->outbox_used == SFU_OUTBOX_SLOTS) {
            e->counters[SFU_C_DROP_OUTBOX_FULL]++;
            return NULL;
        }
    }
    return &e->outbox[e->outbox_used];
}

static inline void outbox_commit(sfu_engine_t *e, sfu_slot_t *slot, sfu_socket_t *s, const sfu_addr_t *dest,
                                 uint32_t len)
{
    uint32_t idx = e->outbox_used++;
    slot->socket = s->handle;
    slot->len = len;
    slot->next = UINT32_MAX;
    slot->dest_len = dest->len;
    memcpy(&slot->dest, &dest->addr, dest->len <= sizeof(slot->dest) ? dest->len : sizeof(slot->dest));
    if (s->pending_tail == UINT32_MAX)
        s->pending_head = idx;
    else
        e->outbox[s->pending_tail].next = idx;
    s->pending_tail = idx;
    s->pending_count++;
    if (!s->dirty) {
        s->dirty = 1;
        e->dirty_sockets[e->ndirty++] = s->handle;
    }
}

static sfu_upcall_t *upcall_push(sfu_engine_t *e, int type, sfu_socket_t *s, uint32_t transport, int kind,
                                 const struct sockaddr *addr, socklen_t addr_len, const uint8_t *data, size_t len)
{
    if (e->up_count == SFU_UPCALL_CAP) {
        e->counters[SFU_C_DROP_UPCALL_FULL]++;
        return NULL;
    }
    sfu_upcall_t *up = &e->upcalls[(e->up_head + e->up_count) % SFU_UPCALL_CAP];
    memset(up, 0, sizeof(*up));
    if (len) {
        up->data = malloc(len);
        if (!up->data) {
            e->counters[SFU_C_DROP_UPCALL_FULL]++;
            return NULL;
        }
        memcpy(up->data, data, len);
    }
    up->type = type;
    up->socket = s ? s->handle : 0;
    up->transport = transport;
    up->is_rtcp = s ? s->is_rtcp : 0;
    up->kind = kind;
    if (addr && addr_len <= sizeof(up->addr)) {
        memcpy(&up->addr, addr, addr_len);
        up->addr_len = addr_len;
    }
    up->len = (uint32_t)len;
    e->up_count++;
    if (e->up_count == 1 && e->notify_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(e->notify_fd, &one, sizeof(one));
        (void)r;
    }
    return up;
}

int sfu_upcall_pop_locked(sfu_engine_t *e, sfu_upcall_t *up)
{
    if (e->up_count == 0)
        return 0;
    *up = e->upcalls[e->up_head];
    e->upcalls[e->up_head].data = NULL;
    if (up->unvalidated)
        e->up_unvalidated--;
    e->up_head = (e->up_head + 1) % SFU_UPCALL_CAP;
    e->up_count--;
    return 1;
}

/* ------------------------------------------------------------------ the packet path */

static void request_keyframe(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms);
static int send_rtcp(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *data, size_t len);
static void send_nacks(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms);

/* A comedia transport's first valid packet sets its remote address. */
struct sfu_latch {
    sfu_socket_t *socket;  /* NULL: nothing to learn */
    sfu_addr_t *remote;
    const struct sockaddr *src;
    socklen_t src_len;
};

static void latch_apply(sfu_engine_t *e, sfu_transport_t *t, const struct sfu_latch *l)
{
    if (!l->socket)
        return;
    addr_set(l->remote, l->src, l->src_len);
    if (!l->socket->is_rtcp && t->rtcp_socket == t->rtp_socket)
        addr_set(&t->remote_rtcp, l->src, l->src_len);
    socket_connect(e, l->socket->handle, l->remote);
    upcall_push(e, SFU_UP_TUPLE, l->socket, t->handle, 0, l->src, l->src_len, NULL, 0);
    if (t->nconsumers)
        sfu_timer_pull(e, 0); /* its consumers may wait for a keyframe */
}

/* Keeps a resumed stream's timestamps moving forward: when the source's
 * timeline jumped (a new encoder, a long pause with a reset clock), re-base
 * so that output advances by the wall-clock time elapsed. */
static void consumer_sync_timestamp(sfu_consumer_t *c, uint32_t ts, uint64_t now_ms)
{
    if (!c->ts_started)
        return;
    uint32_t cand = ts + c->ts_offset;
    int32_t diff = (int32_t)(cand - c->last_ts);
    uint64_t elapsed = now_ms > c->last_ts_ms ? now_ms - c->last_ts_ms : 0;
    int64_t expected = (int64_t)(elapsed * c->clock_rate / 1000);
    int64_t slack = c->clock_rate; /* one second */
    if (diff <= 0 || (int64_t)diff > expected + slack) {
        uint32_t step = expected > 0 ? (uint32_t)expected : 1;
        c->ts_offset = c->last_ts + step - ts;
    }
}

/* Writes a router-level packet into `out` as one consumer sends it: SSRC,
 * sequence number, timestamp, payload type, and header extensions (ids
 * through the consumer's map, RID/RRID removed, the consumer's own MID
 * written). One copy. Returns the length, or -1 when it does not fit. */
static inline long consumer_write(const sfu_consumer_t *c, uint8_t *out, const uint8_t *src, size_t len,
                                  const sfu_rtp_t *rtp, uint16_t seq, uint32_t ts, uint8_t pt)
{
    long olen;
    if (c->mid_ext_id || (!c->ext_identity && rtp->extension)) {
        olen = sfu_rtp_copy_rewrite_extensions(out, SFU_SLOT_SIZE - SFU_SRTP_TRAILER_ROOM, src, len, rtp,
                                               c->ext_map, c->mid_ext_id, c->mid, c->mid_len);
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

/* SRTP-protects an outgoing RTP packet in place when the transport has keys. */
static inline int transport_protect(sfu_engine_t *e, sfu_transport_t *t, uint8_t *out, size_t *olen)
{
    if (!t->srtp_out)
        return 0;
    int l = (int)*olen;
    if (srtp_protect_fn(t->srtp_out, out, &l) != 0) {
        e->counters[SFU_C_TX_SRTP_ERRORS]++;
        return -1;
    }
    *olen = (size_t)l;
    return 0;
}

/* A destination is known and, on an ICE transport, the SRTP keys are in:
 * media never leaves in cleartext before DTLS is done. */
static inline int transport_can_send_media(const sfu_transport_t *t)
{
    return t->remote.set && (!t->require_srtp || t->srtp_out);
}

/* keyframe: -1 when the codec gives no way to tell (audio, unknown video
 * codec), else whether this packet starts a keyframe. */
static void forward_rtp(sfu_engine_t *e, sfu_producer_t *p, int stream, const uint8_t *buf, size_t len,
                        const sfu_rtp_t *rtp, uint64_t now_ms, int keyframe)
{
    for (uint32_t i = 0; i < p->nconsumers; i++) {
        sfu_consumer_t *c = p->consumers[i];
        if (c->paused || c->producer_paused || c->stream != stream)
            continue;
        sfu_transport_t *t = c->transport;
        if (!transport_can_send_media(t))
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
        if (c->sync_required) {
            /* A new or resumed video consumer starts at a keyframe: what comes
             * before it cannot be decoded (mediasoup does the same). */
            if (keyframe == 0) {
                c->dropped++;
                continue;
            }
            sfu_seqmgr_sync(&c->seq, (uint16_t)(rtp->seq - 1));
            consumer_sync_timestamp(c, rtp->timestamp, now_ms);
            c->sync_required = 0;
        }
        uint16_t oseq;
        if (!sfu_seqmgr_input(&c->seq, rtp->seq, &oseq)) {
            c->dropped++;
            continue;
        }
        if (c->seq_map)
            sfu_seq_map_put(c->seq_map, oseq, rtp->seq);
        sfu_slot_t *slot = outbox_reserve(e);
        if (!slot)
            return;
        uint8_t *out = slot->data;
        uint32_t ots = rtp->timestamp + c->ts_offset;
        long wlen = consumer_write(c, out, buf, len, rtp, oseq, ots, opt);
        if (wlen < 0) {
            c->dropped++;
            continue;
        }
        size_t olen = (size_t)wlen;
        if (transport_protect(e, t, out, &olen) < 0)
            continue;
        outbox_commit(e, slot, s, &t->remote, (uint32_t)olen);
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

static const sfu_rtp_ext_elem_t *ext_find(const sfu_rtp_ext_elem_t *elems, int n, uint8_t id)
{
    if (!id)
        return NULL;
    for (int i = 0; i < n; i++)
        if (elems[i].id == id)
            return &elems[i];
    return NULL;
}

static int ext_equals(const uint8_t *buf, const sfu_rtp_ext_elem_t *el, const uint8_t *value, uint8_t len)
{
    return el && len && el->length == len && memcmp(buf + el->offset, value, len) == 0;
}

/* A packet from an SSRC no route knows: the first pending stream it names
 * (mediasoup's RtpListener order: the producer's MID, then the stream's RID,
 * or the repaired RID for RTX) is bound to its SSRC from now on. */
static struct sfu_route *route_learn(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *buf, const sfu_rtp_t *rtp)
{
    if (!rtp->extension)
        return NULL;
    sfu_rtp_ext_elem_t elems[SFU_RTP_MAX_EXTENSIONS];
    int n = sfu_rtp_ext_elements(buf, rtp, elems, SFU_RTP_MAX_EXTENSIONS);
    if (n <= 0)
        return NULL;
    for (uint32_t i = 0; i < t->npending; i++) {
        struct sfu_route pr = t->pending[i];
        sfu_producer_t *p = pr.producer;
        int is_rtx = p->rtx_apt[rtp->payload_type] != 0xff;
        if (is_rtx != pr.is_rtx || (!is_rtx && p->pt_map[rtp->payload_type] == SFU_PT_NONE))
            continue;
        const sfu_rtp_ext_elem_t *mid = ext_find(elems, n, p->mid_ext_in);
        int mid_ok = ext_equals(buf, mid, p->mid, p->mid_len);
        if (mid && p->mid_len && !mid_ok)
            continue; /* another producer's MID */
        sfu_producer_stream_t *st = &p->streams[pr.stream];
        int stream_ok;
        if (st->rid_len) {
            const sfu_rtp_ext_elem_t *rid = ext_find(elems, n, is_rtx ? p->rrid_ext_in : p->rid_ext_in);
            if (!rid && is_rtx)
                rid = ext_find(elems, n, p->rid_ext_in);
            stream_ok = ext_equals(buf, rid, st->rid, st->rid_len);
        } else {
            stream_ok = mid_ok && p->nstreams == 1;
        }
        if (!stream_ok)
            continue;
        if (route_add(t, rtp->ssrc, p, pr.stream, pr.is_rtx) < 0)
            return NULL;
        if (is_rtx)
            st->rtx_ssrc = rtp->ssrc;
        else
            st->ssrc = rtp->ssrc;
        t->pending[i] = t->pending[--t->npending];
        e->counters[SFU_C_SSRC_LEARNED]++;
        return &t->routes[t->nroutes - 1];
    }
    return NULL;
}

static void receive_rtp(sfu_engine_t *e, sfu_transport_t *t, uint8_t *buf, size_t len, size_t cap, uint64_t now_ms,
                        const struct sfu_latch *latch)
{
    if (t->require_srtp && !t->srtp_in) {
        /* SRTP is on but the remote keys are not known yet. */
        e->counters[SFU_C_DROP_SRTP]++;
        t->drops++;
        return;
    }
    if (t->srtp_in) {
        int l = (int)len;
        if (srtp_unprotect_fn(t->srtp_in, buf, &l) != 0) {
            e->counters[SFU_C_DROP_SRTP]++;
            t->drops++;
            return;
        }
        len = (size_t)l;
    }
    sfu_rtp_t rtp;
    if (sfu_rtp_parse(buf, len, &rtp) < 0) {
        e->counters[SFU_C_DROP_RTP_MALFORMED]++;
        t->drops++;
        return;
    }
    latch_apply(e, t, latch);
    t->rtp_in.packets++;
    t->rtp_in.bytes += len;

    struct sfu_route *r = NULL;
    for (uint32_t i = 0; i < t->nroutes; i++) {
        if (t->routes[i].ssrc == rtp.ssrc) {
            r = &t->routes[i];
            break;
        }
    }
    if (!r && t->npending)
        r = route_learn(e, t, buf, &rtp);
    if (!r) {
        e->counters[SFU_C_DROP_UNKNOWN_SSRC]++;
        t->drops++;
        return;
    }
    sfu_producer_t *p = r->producer;
    sfu_producer_stream_t *st = &p->streams[r->stream];
    if (p->twcc_ext_id && rtp.extension) {
        /* transport-cc counts every arrival (probes, retransmissions and
         * duplicates included): the sender's estimator needs all of them */
        sfu_rtp_ext_elem_t elems[SFU_RTP_MAX_EXTENSIONS];
        int n = sfu_rtp_ext_elements(buf, &rtp, elems, SFU_RTP_MAX_EXTENSIONS);
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
    int recovered = 0;
    if (r->is_rtx) {
        /* RFC 4588: the original sequence number leads the payload. */
        uint8_t apt = p->rtx_apt[rtp.payload_type];
        if (apt == 0xff || rtp.payload_length < 2) {
            e->counters[SFU_C_DROP_RTX]++;
            return;
        }
        if (rtp.payload_length == 2 || sfu_rtx_decapsulate(buf, &len, apt, st->ssrc) < 0 ||
            sfu_rtp_parse(buf, len, &rtp) < 0) {
            e->counters[SFU_C_DROP_RTX]++; /* padding-only probes land here too */
            return;
        }
        e->counters[SFU_C_RX_RTX]++;
        st->rtx_received++;
        recovered = 1;
    }
    uint8_t mpt = p->pt_map[rtp.payload_type];
    if (mpt == SFU_PT_NONE) {
        e->counters[SFU_C_DROP_UNKNOWN_PT]++;
        t->drops++;
        return;
    }
    if (rtp.extension && !p->ext_identity) {
        if (sfu_rtp_map_extensions(buf, &len, cap - SFU_SRTP_TRAILER_ROOM, &rtp, p->ext_map) < 0) {
            e->counters[SFU_C_DROP_RTP_MALFORMED]++;
            t->drops++;
            return;
        }
    }
    if (p->nack_enabled) {
        int missing_before = sfu_nack_missing_count(&st->nack);
        if (!sfu_nack_on_packet(&st->nack, rtp.seq, recovered, now_ms) && recovered)
            return; /* a retransmission of something we already have */
        /* a new gap is NACKed at once; retries are the timer's job */
        if (sfu_nack_missing_count(&st->nack) > missing_before) {
            send_nacks(e, p, r->stream, now_ms);
            int64_t due = sfu_nack_next_deadline_ms(&st->nack, 0);
            if (due >= 0)
                sfu_timer_pull(e, (uint64_t)due);
        }
        if (sfu_nack_keyframe_needed(&st->nack))
            request_keyframe(e, p, r->stream, now_ms);
    }
    /* retransmissions stay out of the statistics (their transit time would
     * count as jitter), as in mediasoup */
    if (!recovered)
        sfu_rtp_stats_update(&st->stats, rtp.seq, rtp.timestamp, now_ms);
    st->received.packets++;
    st->received.bytes += len;
    if (!st->seq_started || sfu_seq_newer(rtp.seq, st->max_seq)) {
        st->max_seq = rtp.seq;
        st->seq_started = 1;
    }
    st->last_packet_ms = now_ms;
    if (st->kf_retry_wait) { /* a keyframe retry waited for the publisher to send */
        st->kf_retry_wait = 0;
        sfu_timer_pull(e, now_ms);
    }
    int codec = p->kind_video ? p->codec_of_pt[mpt] : SFU_CODEC_NONE;
    int keyframe = codec == SFU_CODEC_NONE ? -1 : sfu_is_keyframe(codec, buf + rtp.header_length, rtp.payload_length);
    if (keyframe == 1) {
        st->keyframes++;
        st->last_keyframe_ms = now_ms;
        /* The keyframe asked for has arrived: whoever asked meanwhile gets
         * it too, and the next request may go out at once. */
        st->last_keyframe_request_ms = 0;
        st->keyframe_pending = 0;
    }
    if (p->paused) {
        e->counters[SFU_C_DROP_PRODUCER_PAUSED]++;
        return;
    }
    if (mpt != rtp.payload_type) {
        sfu_rtp_set_payload_type(buf, mpt);
        rtp.payload_type = mpt;
    }
    if (st->store.slots)
        sfu_packet_store_put(&st->store, rtp.seq, buf, len, now_ms);
    forward_rtp(e, p, r->stream, buf, len, &rtp, now_ms, keyframe);
}

/* Sends a PLI (RFC 4585 6.3.1) for one producer stream, at most once per
 * e->keyframe_request_interval_ms: requests from many consumers coalesce. */
static void request_keyframe(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms)
{
    if (!p->kind_video || stream < 0 || stream >= p->nstreams)
        return;
    sfu_producer_stream_t *st = &p->streams[stream];
    if (!st->ssrc)
        return; /* SSRC not learned yet: nothing to address */
    if (st->last_keyframe_request_ms && now_ms - st->last_keyframe_request_ms < e->keyframe_request_interval_ms) {
        /* Coalesce: one more request when the interval ends, whatever the
         * number of viewers asking meanwhile (a viewer that joined after
         * the last keyframe passed still gets one). */
        if (!st->keyframe_pending) {
            if (e->nkf_pending == e->kf_pending_cap) {
                uint32_t ncap = e->kf_pending_cap ? e->kf_pending_cap * 2 : 16;
                uint32_t *n = realloc(e->kf_pending, ncap * sizeof(*n));
                if (!n)
                    return;
                e->kf_pending = n;
                e->kf_pending_cap = ncap;
            }
            e->kf_pending[e->nkf_pending++] = p->handle;
            st->keyframe_pending = 1;
            sfu_timer_pull(e, st->last_keyframe_request_ms + e->keyframe_request_interval_ms);
        }
        return;
    }
    st->keyframe_pending = 0;
    uint8_t pli[12];
    pli[0] = 0x80 | 1; /* V=2, FMT=1 (PLI) */
    pli[1] = SFU_RTCP_PSFB;
    sfu_store_be16(pli + 2, 2);
    sfu_store_be32(pli + 4, 1);          /* sender SSRC: the SFU has none of its own here */
    sfu_store_be32(pli + 8, st->ssrc);   /* media source */
    if (send_rtcp(e, p->transport, pli, sizeof(pli)) < 0)
        return;
    st->last_keyframe_request_ms = now_ms ? now_ms : 1;
    st->keyframe_requests++;
    e->counters[SFU_C_TX_PLI]++;
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
    uint8_t pkt[8 + 31 * 24];
    int len = sfu_rtcp_build_rr(pkt, sizeof(pkt), 1, blocks, n);
    if (len > 0) {
        send_rtcp(e, t, pkt, (size_t)len);
        e->counters[SFU_C_TX_RR]++;
    }
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
    if (p && c->stream < p->nstreams && p->streams[c->stream].sr_valid && now_ms >= p->streams[c->stream].sr_arrival_ms) {
        const sfu_producer_stream_t *st = &p->streams[c->stream];
        rtp_ts = st->sr_rtp_ts + c->ts_offset + (uint32_t)((now_ms - st->sr_arrival_ms) * c->clock_rate / 1000);
    } else {
        rtp_ts = c->last_ts + (uint32_t)((now_ms - c->last_ts_ms) * c->clock_rate / 1000);
    }
    uint8_t pkt[64];
    int len = sfu_rtcp_build_sr(pkt, sizeof(pkt), c->ssrc, ntp_now(now_ms), rtp_ts, (uint32_t)c->sent.packets,
                                (uint32_t)c->payload_bytes, NULL, 0); /* RFC 3550 6.4.1: payload octets */
    if (len > 0) {
        send_rtcp(e, c->transport, pkt, (size_t)len);
        e->counters[SFU_C_TX_SR]++;
    }
}

static void send_remb(sfu_engine_t *e, sfu_producer_t *p, uint64_t bps)
{
    uint32_t ssrcs[SFU_MAX_STREAMS];
    for (int i = 0; i < p->nstreams; i++)
        ssrcs[i] = p->streams[i].ssrc;
    uint8_t pkt[64];
    int len = sfu_remb_build(pkt, sizeof(pkt), 1, bps, ssrcs, p->nstreams);
    if (len > 0) {
        send_rtcp(e, p->transport, pkt, (size_t)len);
        p->last_remb_bps = bps;
        e->counters[SFU_C_TX_REMB]++;
    }
}

/* ------------------------------------------------------------------ timer work
 * (timers.h): each unit runs what is due and reports its next deadline with
 * sfu_timer_pull(); sfu_engine_tick() runs them only when the soonest cached
 * deadline has come. */

/* Asks again for a keyframe on each stream of a video producer that has a
 * consumer ready to send but still waiting for its first keyframe, once
 * SFU_KEYFRAME_RETRY_MS (or the request interval, if longer) has passed
 * since the last request and packets without a keyframe keep coming. */
static void retry_keyframe_requests(sfu_engine_t *e, sfu_producer_t *p, uint64_t now_ms)
{
    uint64_t retry = e->keyframe_request_interval_ms > SFU_KEYFRAME_RETRY_MS ? e->keyframe_request_interval_ms
                                                                           : SFU_KEYFRAME_RETRY_MS;
    unsigned waiting = 0; /* streams with a consumer waiting for a keyframe */
    for (uint32_t i = 0; i < p->nconsumers; i++) {
        sfu_consumer_t *c = p->consumers[i];
        if (!c->sync_required || c->paused || c->producer_paused || p->paused)
            continue;
        if (c->stream < 0 || c->stream >= p->nstreams)
            continue;
        if (!transport_can_send_media(c->transport))
            continue;
        waiting |= 1u << c->stream;
    }
    for (int s = 0; s < p->nstreams; s++) {
        sfu_producer_stream_t *st = &p->streams[s];
        st->kf_retry_wait = 0;
        if (!(waiting & (1u << s)) || st->keyframe_pending)
            continue; /* nobody waits, or a deferred request is already due */
        uint64_t due = st->last_keyframe_request_ms ? st->last_keyframe_request_ms + retry : 0;
        if (now_ms < due) {
            sfu_timer_pull(e, due);
            continue;
        }
        /* only while the publisher sends (a silent one starts with a keyframe) */
        if (!st->seq_started || st->last_packet_ms <= st->last_keyframe_request_ms) {
            st->kf_retry_wait = 1; /* its next packet pulls the deadline in */
            continue;
        }
        request_keyframe(e, p, s, now_ms);
        e->counters[SFU_C_KEYFRAME_RETRIES]++;
        /* next retry one period on (also when the PLI could not be sent) */
        sfu_timer_pull(e, now_ms + retry);
    }
}

/* Deferred keyframe requests whose throttle window has ended. */
static void run_deferred_keyframe_requests(sfu_engine_t *e, uint64_t now_ms)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < e->nkf_pending; i++) {
        sfu_producer_t *p = sfu_producer_get(e, e->kf_pending[i]);
        if (!p)
            continue;
        int still = 0;
        for (int s = 0; s < p->nstreams; s++) {
            sfu_producer_stream_t *st = &p->streams[s];
            if (!st->keyframe_pending)
                continue;
            uint64_t due = st->last_keyframe_request_ms + e->keyframe_request_interval_ms;
            if (now_ms >= due) {
                st->keyframe_pending = 0;
                request_keyframe(e, p, s, now_ms);
            } else {
                still = 1;
                sfu_timer_pull(e, due);
            }
        }
        if (still)
            e->kf_pending[j++] = e->kf_pending[i];
    }
    e->nkf_pending = j;
}

static int remb_has_estimates(const sfu_remb_agg_t *a)
{
    for (int i = 0; i < SFU_REMB_AGG_SLOTS; i++)
        if (a->entries[i].used)
            return 1;
    return 0;
}

static void producer_timers(sfu_engine_t *e, sfu_producer_t *p, uint64_t now_ms)
{
    if (p->nack_enabled) {
        for (int s = 0; s < p->nstreams; s++) {
            sfu_nack_gen_t *g = &p->streams[s].nack;
            if (!sfu_nack_missing_count(g))
                continue;
            int64_t due = sfu_nack_next_deadline_ms(g, 0);
            if (due >= 0 && (uint64_t)due <= now_ms) {
                send_nacks(e, p, s, now_ms);
                due = sfu_nack_next_deadline_ms(g, 0);
            }
            if (due >= 0)
                sfu_timer_pull(e, (uint64_t)due);
        }
    }
    if (p->kind_video)
        retry_keyframe_requests(e, p, now_ms);
    sfu_remb_agg_t *a = &p->remb;
    uint64_t bps;
    if (sfu_remb_agg_poll(a, now_ms, p->remb_floor_bps, &bps))
        send_remb(e, p, bps);
    if (remb_has_estimates(a)) /* estimates still live after the poll */
        sfu_timer_pull(e, a->last_sent_ms + SFU_REMB_INTERVAL_MS);
}

static void transport_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms)
{
    if (t->twcc_armed) {
        if (t->twcc && sfu_twcc_pending(t->twcc) && now_ms - t->last_twcc_ms >= SFU_TWCC_INTERVAL_MS) {
            uint8_t pkt[1200];
            for (int k = 0; k < 8; k++) {
                int len = sfu_twcc_build_feedback(t->twcc, pkt, sizeof(pkt), 1, t->twcc_media_ssrc);
                if (len <= 0)
                    break;
                send_rtcp(e, t, pkt, (size_t)len);
                e->counters[SFU_C_TX_TWCC]++;
            }
            t->last_twcc_ms = now_ms;
        }
        t->twcc_armed = t->twcc && sfu_twcc_pending(t->twcc);
        if (t->twcc_armed)
            sfu_timer_pull(e, t->last_twcc_ms + SFU_TWCC_INTERVAL_MS);
    }
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
            if (elapsed)
                st->rate_bps = (st->received.bytes - st->bytes_at_last_rate) * 8000 / elapsed;
            st->bytes_at_last_rate = st->received.bytes;
        }
    }
    sfu_timer_pull(e, t->last_rr_ms + SFU_RTCP_INTERVAL_MS);
}

int sfu_engine_tick(sfu_engine_t *e, uint64_t now_ms)
{
    if (now_ms >= e->next_deadline_ms) {
        /* something is due: run every unit's due work, and recompute the
         * soonest deadline from scratch (each unit pulls its own in) */
        e->counters[SFU_C_TIMER_RUNS]++;
        e->next_deadline_ms = SFU_TIMER_NONE;
        run_deferred_keyframe_requests(e, now_ms);
        for (uint32_t i = 1; i < e->producers.cap; i++) {
            sfu_producer_t *p = e->producers.items[i];
            if (p)
                producer_timers(e, p, now_ms);
        }
        for (uint32_t i = 1; i < e->transports.cap; i++) {
            sfu_transport_t *t = e->transports.items[i];
            if (t)
                transport_timers(e, t, now_ms);
        }
    }
    if (e->next_deadline_ms == SFU_TIMER_NONE)
        return -1;
    if (e->next_deadline_ms <= now_ms)
        return 0;
    uint64_t wait = e->next_deadline_ms - now_ms;
    return wait > INT32_MAX ? INT32_MAX : (int)wait;
}

int sfu_producer_request_keyframe_locked(sfu_engine_t *e, uint32_t h, uint64_t now_ms)
{
    sfu_producer_t *p = sfu_producer_get(e, h);
    if (!p)
        return -1;
    for (int s = 0; s < p->nstreams; s++)
        request_keyframe(e, p, s, now_ms);
    return 0;
}

int sfu_consumer_request_keyframe_locked(sfu_engine_t *e, uint32_t h, uint64_t now_ms)
{
    sfu_consumer_t *c = sfu_consumer_get(e, h);
    if (!c)
        return -1;
    /* A keyframe is useless to a consumer whose transport cannot carry media
     * yet (DTLS not done); asking now would only use up the throttle window.
     * The control plane asks again when the transport becomes ready. */
    if (c->transport->require_srtp && !c->transport->srtp_out)
        return 0;
    if (c->producer)
        request_keyframe(e, c->producer, c->stream, now_ms);
    return 0;
}

/* A consumer's new estimate: the producer's REMB is due at once for its
 * first one or a drop of more than 25% (the only way the minimum drops is
 * this value), else at the end of the interval. */
static void remb_schedule(sfu_engine_t *e, sfu_producer_t *p, uint64_t bps, uint64_t now_ms)
{
    const sfu_remb_agg_t *a = &p->remb;
    uint64_t v = bps < p->remb_floor_bps ? p->remb_floor_bps : bps;
    if (!a->sent_any || (v < a->last_sent_bps && a->last_sent_bps - v > a->last_sent_bps / 4))
        sfu_timer_pull(e, now_ms);
    else
        sfu_timer_pull(e, a->last_sent_ms + SFU_REMB_INTERVAL_MS);
}

static sfu_consumer_t *consumer_by_ssrc(sfu_transport_t *t, uint32_t ssrc)
{
    for (uint32_t i = 0; i < t->nconsumers; i++)
        if (t->consumers[i]->ssrc == ssrc)
            return t->consumers[i];
    return NULL;
}

/* Queues an RTCP packet built in `data` toward a transport's remote (SRTCP
 * when keyed). Returns 0 when queued, -1 when it cannot go out. */
static int send_rtcp(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *data, size_t len)
{
    if (!t->remote_rtcp.set || len > SFU_SLOT_SIZE - SFU_SRTP_TRAILER_ROOM)
        return -1;
    if (t->require_srtp && !t->srtp_out)
        return -1;
    sfu_socket_t *s = sfu_socket_get(e, t->rtcp_socket);
    if (!s)
        return -1;
    sfu_slot_t *slot = outbox_reserve(e);
    if (!slot)
        return -1;
    memcpy(slot->data, data, len);
    int l = (int)len;
    if (t->srtp_out && srtp_protect_rtcp_fn(t->srtp_out, slot->data, &l) != 0) {
        e->counters[SFU_C_TX_SRTP_ERRORS]++;
        return -1;
    }
    outbox_commit(e, slot, s, &t->remote_rtcp, (uint32_t)l);
    t->rtcp_out.packets++;
    t->rtcp_out.bytes += (uint64_t)l;
    return 0;
}

/* NACKs what the producer stream is missing and is due (RFC 4585 generic NACK). */
static void send_nacks(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms)
{
    sfu_producer_stream_t *st = &p->streams[stream];
    uint16_t seqs[64];
    int n = sfu_nack_poll(&st->nack, now_ms, 0, seqs, 64);
    if (n <= 0)
        return;
    uint8_t pkt[512];
    int len = sfu_rtcp_build_nack(pkt, sizeof(pkt), 1, st->ssrc, seqs, n);
    if (len <= 0)
        return;
    send_rtcp(e, p->transport, pkt, (size_t)len);
    st->nack_packets_sent++;
    e->counters[SFU_C_TX_NACK]++;
}

/* Answers a consumer's NACK from the producer's packet store, as RTX when the
 * consumer negotiated it, else as the original packet. */
static void retransmit(sfu_engine_t *e, sfu_consumer_t *c, const uint8_t *pkt, size_t plen, uint64_t now_ms)
{
    uint16_t seqs[256];
    int n = sfu_rtcp_parse_nack(pkt, plen, seqs, 256);
    c->nack_packets_received++;
    e->counters[SFU_C_RX_NACK]++;
    sfu_producer_t *p = c->producer;
    if (n <= 0 || !c->seq_map || !p || c->stream >= p->nstreams || !p->streams[c->stream].store.slots)
        return;
    sfu_producer_stream_t *st = &p->streams[c->stream];
    sfu_transport_t *t = c->transport;
    sfu_socket_t *s = sfu_socket_get(e, t->rtp_socket);
    if (!s || !transport_can_send_media(t))
        return;
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
        sfu_slot_t *slot = outbox_reserve(e);
        if (!slot)
            return;
        uint8_t *out = slot->data;
        long wlen = consumer_write(c, out, orig, len, &rtp, out_seq, rtp.timestamp + c->ts_offset, opt);
        if (wlen < 0)
            continue;
        size_t olen = (size_t)wlen;
        if (c->rtx_pt && c->rtx_ssrc) {
            c->rtx_seq++;
            if (sfu_rtx_encapsulate(out, &olen, SFU_SLOT_SIZE - SFU_SRTP_TRAILER_ROOM, c->rtx_pt, c->rtx_ssrc,
                                    c->rtx_seq) < 0)
                continue;
        }
        if (transport_protect(e, t, out, &olen) < 0)
            continue;
        outbox_commit(e, slot, s, &t->remote, (uint32_t)olen);
        c->retransmitted++;
        t->rtp_out.packets++;
        t->rtp_out.bytes += olen;
        e->counters[SFU_C_TX_RETRANSMISSIONS]++;
    }
}

/* One RTCP packet of a compound received on transport t. */
static void on_rtcp_item(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *pk, const sfu_rtcp_item_t *it,
                         uint64_t now_ms)
{
    size_t len = it->length;
    switch (it->packet_type) {
    case SFU_RTCP_PSFB: {
        if (it->count == 1 && len >= 12) { /* PLI */
            e->counters[SFU_C_RX_PLI]++;
            sfu_consumer_t *c = consumer_by_ssrc(t, sfu_load_be32(pk + 8));
            if (c) {
                c->pli_received++;
                if (c->producer)
                    request_keyframe(e, c->producer, c->stream, now_ms);
            }
        } else if (it->count == 4 && len >= 20) { /* FIR: first FCI entry's SSRC */
            e->counters[SFU_C_RX_FIR]++;
            sfu_consumer_t *c = consumer_by_ssrc(t, sfu_load_be32(pk + 12));
            if (c) {
                c->fir_received++;
                if (c->producer)
                    request_keyframe(e, c->producer, c->stream, now_ms);
            }
        } else if (it->count == 15) { /* REMB: aggregated per producer */
            uint64_t bps;
            uint32_t ssrcs[16];
            int n = sfu_remb_parse(pk, len, &bps, ssrcs, 16);
            if (n < 0)
                break;
            e->counters[SFU_C_RX_REMB]++;
            for (int i = 0; i < n && i < 16; i++) {
                sfu_consumer_t *c = consumer_by_ssrc(t, ssrcs[i]);
                if (c && c->producer && sfu_remb_agg_update(&c->producer->remb, c->handle, bps, now_ms))
                    remb_schedule(e, c->producer, bps, now_ms);
            }
        }
        break;
    }
    case SFU_RTCP_RTPFB:
        if (it->count == 1 && len >= 16) { /* generic NACK */
            sfu_consumer_t *c = consumer_by_ssrc(t, sfu_load_be32(pk + 8));
            if (c && c->nack_enabled)
                retransmit(e, c, pk, len, now_ms);
        }
        break;
    case SFU_RTCP_SR: {
        uint32_t ssrc, rtp_ts;
        uint64_t ntp;
        if (sfu_rtcp_parse_sr(pk, len, &ssrc, &ntp, &rtp_ts, NULL, NULL) >= 0) {
            for (uint32_t i = 0; i < t->nroutes; i++) {
                struct sfu_route *r = &t->routes[i];
                if (r->ssrc == ssrc && !r->is_rtx) {
                    sfu_producer_stream_t *st = &r->producer->streams[r->stream];
                    st->sr_lsr = sfu_ntp_compact(ntp);
                    st->sr_arrival_ms = now_ms;
                    st->sr_rtp_ts = rtp_ts;
                    st->sr_valid = 1;
                }
            }
        }
    }
        /* fall through: an SR carries report blocks too */
    case SFU_RTCP_RR: {
        sfu_report_block_t blocks[31];
        int n = sfu_rtcp_parse_report_blocks(pk, len, blocks, 31);
        uint32_t now_compact = sfu_ntp_compact(ntp_now(now_ms));
        for (int i = 0; i < n; i++) {
            sfu_consumer_t *c = consumer_by_ssrc(t, blocks[i].ssrc);
            if (!c)
                continue;
            c->fraction_lost = blocks[i].fraction_lost;
            c->packets_lost = blocks[i].cumulative_lost;
            c->jitter = blocks[i].jitter;
            if (blocks[i].lsr)
                c->rtt_ms = sfu_rtcp_rtt_ms(now_compact, blocks[i].lsr, blocks[i].dlsr);
            c->score = sfu_stream_score(c->fraction_lost, 0, 0);
        }
        break;
    }
    default:
        break;
    }
}

static void receive_rtcp(sfu_engine_t *e, sfu_transport_t *t, uint8_t *buf, size_t len, const struct sfu_latch *latch,
                         uint64_t now_ms)
{
    if (t->require_srtp && !t->srtp_in) {
        e->counters[SFU_C_DROP_SRTP]++;
        t->drops++;
        return;
    }
    if (t->srtp_in) {
        int l = (int)len;
        if (srtp_unprotect_rtcp_fn(t->srtp_in, buf, &l) != 0) {
            e->counters[SFU_C_DROP_SRTP]++;
            t->drops++;
            return;
        }
        len = (size_t)l;
    }
    sfu_rtcp_item_t items[SFU_RTCP_MAX_ITEMS];
    int n = sfu_rtcp_parse_compound(buf, len, items, SFU_RTCP_MAX_ITEMS);
    if (n < 0) {
        e->counters[SFU_C_DROP_RTCP_MALFORMED]++;
        t->drops++;
        return;
    }
    latch_apply(e, t, latch);
    t->rtcp_in.packets++;
    t->rtcp_in.bytes += len;
    for (int i = 0; i < n; i++)
        on_rtcp_item(e, t, buf + items[i].offset, &items[i], now_ms);
    /* Feedback (NACK, PLI/FIR, REMB, reports) is handled by the loss
     * recovery layer; here the compound is validated and counted. */
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
    uint32_t th = s->tuples.count ? sfu_tuple_lookup(s, src) : 0;
    int validated = th != 0;
    if (!th)
        th = s->transport;
    int kind = sfu_classify(buf, len);
    switch (kind) {
    case SFU_PKT_STUN:
        e->counters[SFU_C_RX_STUN]++;
        if (validated) {
            upcall_push(e, SFU_UP_PACKET, s, th, kind, src, src_len, buf, len);
        } else if (stun_admit_unvalidated(e, now_ms)) {
            sfu_upcall_t *up = upcall_push(e, SFU_UP_PACKET, s, th, kind, src, src_len, buf, len);
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
            upcall_push(e, SFU_UP_PACKET, s, th, kind, src, src_len, buf, len);
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
    } else if (!addr_equal(remote, src) && !(rtcp_from_elsewhere && addr_match(remote, src, 0))) {
        e->counters[SFU_C_DROP_UNKNOWN_SOURCE]++;
        t->drops++;
        return;
    }
    if (kind == SFU_PKT_RTP) {
        e->counters[SFU_C_RX_RTP]++;
        receive_rtp(e, t, buf, len, cap, now_ms, &latch);
    } else {
        e->counters[SFU_C_RX_RTCP]++;
        receive_rtcp(e, t, buf, len, &latch, now_ms);
    }
}

int sfu_send_raw_locked(sfu_engine_t *e, uint32_t sh, const struct sockaddr *addr, socklen_t len, const uint8_t *data,
                        size_t n)
{
    sfu_socket_t *s = sfu_socket_get(e, sh);
    if (!s || n > SFU_SLOT_SIZE || len > sizeof(struct sockaddr_in6))
        return -1;
    sfu_slot_t *slot = outbox_reserve(e);
    if (!slot)
        return -1;
    memcpy(slot->data, data, n);
    sfu_addr_t dest;
    memset(&dest, 0, sizeof(dest));
    addr_set(&dest, addr, len);
    outbox_commit(e, slot, s, &dest, (uint32_t)n);
    if (e->flush)
        e->flush(e);
    return 0;
}
