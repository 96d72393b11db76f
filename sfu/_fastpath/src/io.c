/* The I/O shell around the engine core: one thread per engine that waits on
 * epoll, drains readable sockets with recvmmsg, hands each datagram to
 * sfu_engine_receive() and sends the outbox with sendmmsg, grouped by socket.
 * No Python runs here; the GIL is never taken. */
#define _GNU_SOURCE
#include "engine.h"
#include "timers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define SFU_RECV_BATCH 64
#define SFU_SEND_BATCH 256
#define SFU_RECV_ROUNDS 8 /* batches per socket per wake-up, for fairness */

uint64_t sfu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int sfu_io_watch_locked(sfu_engine_t *e, uint32_t h)
{
    sfu_socket_t *s = sfu_socket_get(e, h);
    if (!s || s->fd < 0 || e->epoll_fd < 0)
        return -1;
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u32 = h;
    return epoll_ctl(e->epoll_fd, EPOLL_CTL_ADD, s->fd, &ev);
}

void sfu_io_flush_locked(sfu_engine_t *e)
{
    struct mmsghdr msgs[SFU_SEND_BATCH];
    struct iovec iovs[SFU_SEND_BATCH];

    for (uint32_t d = 0; d < e->ndirty; d++) {
        sfu_socket_t *s = sfu_socket_get(e, e->dirty_sockets[d]);
        if (!s)
            continue;
        if (s->fd < 0) {
            /* virtual socket: a DirectTransport's queue takes its datagrams;
             * otherwise nothing to send (sans-IO use) */
            if (s->direct)
                sfu_direct_append_locked(e, s);
            continue;
        }
        uint32_t idx = s->pending_head;
        while (idx != UINT32_MAX) {
            int n = 0;
            while (idx != UINT32_MAX && n < SFU_SEND_BATCH) {
                sfu_slot_t *slot = &e->outbox[idx];
                iovs[n].iov_base = slot->data;
                iovs[n].iov_len = slot->len;
                memset(&msgs[n].msg_hdr, 0, sizeof(msgs[n].msg_hdr));
                msgs[n].msg_hdr.msg_name = s->connected ? NULL : &slot->dest;
                msgs[n].msg_hdr.msg_namelen = s->connected ? 0 : slot->dest_len;
                msgs[n].msg_hdr.msg_iov = &iovs[n];
                msgs[n].msg_hdr.msg_iovlen = 1;
                n++;
                idx = slot->next;
            }
            int sent = 0;
            while (sent < n) {
                int r = sendmmsg(s->fd, msgs + sent, (unsigned)(n - sent), MSG_DONTWAIT);
                e->counters[SFU_C_SEND_CALLS]++;
                if (r < 0) {
                    if (errno == EINTR)
                        continue;
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
                        /* socket buffer full: the rest of this batch is lost
                         * (one syscall, not one per datagram) */
                        e->counters[SFU_C_TX_ERRORS] += (uint64_t)(n - sent);
                        break;
                    }
                    /* a per-datagram error (ICMP unreachable, size): drop
                     * the datagram at the head and go on with the rest */
                    e->counters[SFU_C_TX_ERRORS]++;
                    sent++;
                    continue;
                }
                for (int k = sent; k < sent + r; k++) {
                    e->counters[SFU_C_TX_DATAGRAMS]++;
                    e->counters[SFU_C_TX_BYTES] += iovs[k].iov_len;
                }
                sent += r;
            }
        }
    }
    sfu_outbox_clear(e);
}

static void drain_socket(sfu_engine_t *e, sfu_socket_t *s, uint64_t now_ms)
{
    static __thread uint8_t bufs[SFU_RECV_BATCH][SFU_SLOT_SIZE];
    struct mmsghdr msgs[SFU_RECV_BATCH];
    struct iovec iovs[SFU_RECV_BATCH];
    struct sockaddr_in6 addrs[SFU_RECV_BATCH];
    uint32_t h = s->handle;

    for (int round = 0; round < SFU_RECV_ROUNDS; round++) {
        for (int i = 0; i < SFU_RECV_BATCH; i++) {
            iovs[i].iov_base = bufs[i];
            /* leave room for SRTP trailers and extension growth */
            iovs[i].iov_len = SFU_MAX_DATAGRAM + 1;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(s->fd, msgs, SFU_RECV_BATCH, MSG_DONTWAIT, NULL);
        e->counters[SFU_C_RECV_CALLS]++;
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++) {
            size_t len = msgs[i].msg_len;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                e->counters[SFU_C_RX_DATAGRAMS]++;
                e->counters[SFU_C_DROP_TOO_BIG]++;
                continue;
            }
            sfu_engine_receive(e, h, (struct sockaddr *)&addrs[i], msgs[i].msg_hdr.msg_namelen, bufs[i], len,
                               SFU_SLOT_SIZE, now_ms);
            /* the socket may have been removed by nothing here (control
             * calls wait for the lock), so s stays valid */
        }
        if (n < SFU_RECV_BATCH)
            return;
    }
}

static void *io_main(void *arg)
{
    sfu_engine_t *e = arg;
    struct epoll_event events[64];

    /* Sleeps until a socket is readable, the soonest timer deadline
     * (sfu_engine_tick's answer, at most SFU_TIMER_MAX_WAIT_MS), or the
     * eventfd: sfu_io_stop, or a control call that added timer work due
     * before the planned wake-up (timers.h). */
    int timeout = 0;
    for (;;) {
        int n = epoll_wait(e->epoll_fd, events, 64, timeout);
        if (n < 0 && errno != EINTR)
            break;
        uint64_t t0 = now_ns();
        int stop = 0;
        pthread_mutex_lock(&e->lock);
        e->io_wake_ms = 0; /* awake: pulls need no eventfd write */
        e->counters[SFU_C_LOOP_ITERATIONS]++;
        uint64_t now_ms = t0 / 1000000u;
        for (int i = 0; i < n; i++) {
            uint32_t h = events[i].data.u32;
            if (h == 0) {
                uint64_t v;
                ssize_t r = read(e->stop_fd, &v, sizeof(v)); /* reset it (non-blocking) */
                (void)r;
                stop = !e->running;
                continue;
            }
            sfu_socket_t *s = sfu_socket_get(e, h);
            if (s && s->fd >= 0)
                drain_socket(e, s, now_ms);
        }
        int next = sfu_engine_tick(e, now_ms);
        timeout = next < 0 || next > SFU_TIMER_MAX_WAIT_MS ? SFU_TIMER_MAX_WAIT_MS : next;
        sfu_io_flush_locked(e);
        e->loop_busy_ns += now_ns() - t0;
        /* epoll_wait never returns early; truncated ms keep deadlines due */
        e->io_wake_ms = now_ms + (uint64_t)timeout;
        pthread_mutex_unlock(&e->lock);
        if (stop || !e->running)
            break;
    }
    return NULL;
}

int sfu_io_start(sfu_engine_t *e)
{
    if (e->running)
        return 0;
    e->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epoll_fd < 0)
        return -errno;
    e->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->stop_fd < 0)
        return -errno;
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u32 = 0;
    epoll_ctl(e->epoll_fd, EPOLL_CTL_ADD, e->stop_fd, &ev);
    pthread_mutex_lock(&e->lock);
    for (uint32_t i = 1; i < e->sockets.cap; i++) {
        sfu_socket_t *s = e->sockets.items[i];
        if (s && s->fd >= 0)
            sfu_io_watch_locked(e, s->handle);
    }
    e->flush = sfu_io_flush_locked;
    e->running = 1;
    pthread_mutex_unlock(&e->lock);
    int rc = pthread_create(&e->thread, NULL, io_main, e);
    if (rc != 0) {
        e->running = 0;
        return -rc;
    }
    return 0;
}

void sfu_io_stop(sfu_engine_t *e)
{
    if (!e->running)
        return;
    e->running = 0;
    uint64_t one = 1;
    ssize_t r = write(e->stop_fd, &one, sizeof(one));
    (void)r;
    pthread_join(e->thread, NULL);
    pthread_mutex_lock(&e->lock);
    e->io_wake_ms = 0; /* no thread to wake */
    close(e->stop_fd);
    close(e->epoll_fd);
    e->stop_fd = -1;
    e->epoll_fd = -1;
    e->flush = NULL;
    pthread_mutex_unlock(&e->lock);
}
