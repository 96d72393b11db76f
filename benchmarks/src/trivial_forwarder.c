/* The kernel floor for bench_forward: a trivial plain-UDP mesh forwarder.
 *
 *   trivial_forwarder PORT0 PORT1 ... PORTn-1
 *
 * binds one UDP socket per participant on 127.0.0.1, prints their ports on
 * one line, then forwards every datagram that arrives on socket i to every
 * participant j != i (127.0.0.1:PORTj) from socket j, as the SFU does with
 * one plain transport per participant. Per wake-up: recvmmsg (64) on each
 * readable socket, then one sendmmsg per destination socket whose iovecs
 * point into the receive buffers (no copy, no parsing, no rewriting).
 * Runs until SIGTERM/SIGINT or stdin closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define MAXN 256

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    int n = argc - 1;
    if (n < 2 || n > MAXN) {
        fprintf(stderr, "usage: %s PORT0 PORT1 ... (2..%d participants)\n", argv[0], MAXN);
        return 2;
    }
    static int fds[MAXN];
    static struct sockaddr_in dest[MAXN];
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int buf = 4 * 1024 * 1024;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
        setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fds[i], (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("bind");
            return 1;
        }
        dest[i].sin_family = AF_INET;
        dest[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        dest[i].sin_port = htons((uint16_t)atoi(argv[i + 1]));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a;
        socklen_t l = sizeof(a);
        getsockname(fds[i], (struct sockaddr *)&a, &l);
        printf("%s%d", i ? " " : "", ntohs(a.sin_port));
    }
    printf("\n");
    fflush(stdout);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev); /* stdin closed: exit */

    static uint8_t bufs[BATCH][2048];
    static struct mmsghdr rmsgs[BATCH], smsgs[BATCH];
    static struct iovec riovs[BATCH], siovs[BATCH];
    struct epoll_event events[64];
    unsigned long long rx = 0, tx = 0, sends = 0;
    while (!stop) {
        int ne = epoll_wait(ep, events, 64, 200);
        if (ne < 0 && errno != EINTR)
            break;
        for (int e = 0; e < ne; e++) {
            uint32_t i = events[e].data.u32;
            if (i == UINT32_MAX) {
                stop = 1;
                break;
            }
            for (int round = 0; round < 8; round++) {
                for (int k = 0; k < BATCH; k++) {
                    riovs[k].iov_base = bufs[k];
                    riovs[k].iov_len = sizeof(bufs[k]);
                    memset(&rmsgs[k].msg_hdr, 0, sizeof(rmsgs[k].msg_hdr));
                    rmsgs[k].msg_hdr.msg_iov = &riovs[k];
                    rmsgs[k].msg_hdr.msg_iovlen = 1;
                }
                int r = recvmmsg(fds[i], rmsgs, BATCH, MSG_DONTWAIT, NULL);
                if (r <= 0)
                    break;
                rx += (unsigned)r;
                for (int j = 0; j < n; j++) {
                    if (j == (int)i)
                        continue;
                    for (int k = 0; k < r; k++) {
                        siovs[k].iov_base = bufs[k];
                        siovs[k].iov_len = rmsgs[k].msg_len;
                        memset(&smsgs[k].msg_hdr, 0, sizeof(smsgs[k].msg_hdr));
                        smsgs[k].msg_hdr.msg_name = &dest[j];
                        smsgs[k].msg_hdr.msg_namelen = sizeof(dest[j]);
                        smsgs[k].msg_hdr.msg_iov = &siovs[k];
                        smsgs[k].msg_hdr.msg_iovlen = 1;
                    }
                    int sent = 0;
                    while (sent < r) {
                        int s = sendmmsg(fds[j], smsgs + sent, (unsigned)(r - sent), MSG_DONTWAIT);
                        sends++;
                        if (s <= 0) {
                            sent++; /* drop */
                            continue;
                        }
                        sent += s;
                        tx += (unsigned)s;
                    }
                }
                if (r < BATCH)
                    break;
            }
        }
    }
    fprintf(stderr, "trivial_forwarder: %llu in, %llu out, %llu sendmmsg\n", rx, tx, sends);
    return 0;
}
