/* Fuzz target: the transport-cc send history (src/twcc_send.c) and the GCC
 * estimator (src/gcc.c).
 *
 * A send history kept across inputs (so its 16-bit sequence numbers wrap),
 * with some more packets sent (how many: the input's first byte), reads the input
 * as one feedback packet, then as records [len16][feedback] between which
 * more packets are sent, probes started and ticks given; every result goes
 * to the estimator. Then results made of raw input bytes (any times, sizes,
 * clusters) go to the estimator directly. Checked: the result count is
 * within bounds, each result is a packet we sent (its send time and size
 * encode its number), the estimate stays in [min, max]. To be registered in
 * targets.c as "gcc".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/gcc.h"
#include "../src/twcc.h"
#include "../src/twcc_send.h"

int sfu_fuzz_gcc(const uint8_t *data, size_t size);

#define MIN_BPS 30000
#define MAX_BPS 20000000
#define MAX_RESULTS 512

static sfu_twcc_send_t fz_hist;
static sfu_twcc_recv_t fz_recv;
static sfu_gcc_t fz_gcc;
static sfu_twcc_result_t fz_res[MAX_RESULTS];
static int64_t fz_now;
static uint32_t fz_sent;
static unsigned long long fz_feedbacks, fz_results; /* feedbacks read, results given */

static void print_stats(void)
{
    if (getenv("SFU_FUZZ_STATS"))
        fprintf(stderr, "gcc: feedbacks read %llu results %llu\n", fz_feedbacks, fz_results);
}

static void send_some(int n, uint16_t cluster)
{
    for (int i = 0; i < n; i++) {
        fz_now += 1000;
        /* send time and size both tell the packet's number */
        sfu_twcc_send_next(&fz_hist, (int64_t)fz_sent * 1000, 100 + fz_sent % 1000, cluster);
        fz_sent++;
    }
}

static void check_estimate(void)
{
    uint32_t e = sfu_gcc_estimate_bps(&fz_gcc);
    if (e < MIN_BPS || e > MAX_BPS)
        abort();
    int u = sfu_gcc_usage(&fz_gcc);
    if (u != SFU_GCC_NORMAL && u != SFU_GCC_OVERUSE && u != SFU_GCC_UNDERUSE)
        abort();
}

static void feed(const uint8_t *pkt, size_t len, int max)
{
    int n = sfu_twcc_send_on_feedback(&fz_hist, pkt, len, fz_res, max);
    if (n > max)
        abort();
    if (n < 0)
        return;
    fz_feedbacks++;
    fz_results += (unsigned long long)n;
    for (int i = 0; i < n; i++) {
        const sfu_twcc_result_t *r = &fz_res[i];
        if (r->send_us % 1000 != 0 || r->send_us < 0 || r->send_us / 1000 >= fz_sent)
            abort();
        if (r->size != 100 + (uint32_t)(r->send_us / 1000) % 1000)
            abort();
        if (r->recv_us < -1)
            abort();
        if (i > 0 && r->send_us <= fz_res[i - 1].send_us)
            abort(); /* sequence order */
    }
    fz_now += 20000;
    sfu_gcc_on_feedback(&fz_gcc, fz_res, n, fz_now);
    check_estimate();
}

int sfu_fuzz_gcc(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    /* one history for all inputs (its sequence numbers wrap as inputs go
     * by), one estimator per input */
    static int started;
    if (!started) {
        sfu_twcc_send_init(&fz_hist);
        fz_now = 1000000;
        started = 1;
        atexit(print_stats);
    }
    uint8_t cfg = size ? data[0] : 0;
    sfu_gcc_init(&fz_gcc, 300000, MIN_BPS, MAX_BPS);
    send_some(cfg & 0x3f, 0);

    /* the whole input as one feedback (the corpus holds real ones) */
    feed(data, size, (cfg & 1) ? 7 : MAX_RESULTS);

    /* records: [len16][feedback], with sends, probes, ticks between */
    size_t pos = 1;
    int k = 0;
    while (pos + 2 <= size) {
        size_t len = (size_t)data[pos] << 8 | data[pos + 1];
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        uint16_t cluster = 0;
        if (k % 3 == 1)
            cluster = sfu_gcc_start_probe(&fz_gcc, 100000u * (1 + (uint32_t)(len % 50)), fz_now);
        send_some(1 + (int)(len % 40), cluster);
        uint8_t *copy = malloc(len ? len : 1); /* exactly len bytes: ASan sees overreads */
        if (!copy)
            return 0;
        memcpy(copy, data + pos, len);
        feed(copy, len, MAX_RESULTS);
        free(copy);
        if (cluster)
            (void)sfu_gcc_probe_done(&fz_gcc, cluster);
        (void)sfu_gcc_probe_wanted_bps(&fz_gcc, 5000000, 2000000, fz_now);
        if (k % 4 == 2) {
            fz_now += 700000;
            sfu_gcc_on_tick(&fz_gcc, fz_now);
            sfu_gcc_on_rtt(&fz_gcc, (uint32_t)len);
        }
        if (k % 5 == 4)
            sfu_gcc_on_remb(&fz_gcc, (uint32_t)len * 1000, fz_now);
        check_estimate();
        pos += len;
        k++;
    }

    /* real feedback: the receiver of twcc.c gets some of the packets just
     * sent (which, and when, from the input pairs), its feedback is read,
     * now and then with one byte changed */
    sfu_twcc_recv_init(&fz_recv);
    send_some(64, 0);
    uint64_t at = (uint64_t)fz_now;
    for (size_t p = 1; p + 2 <= size && p < 1 + 2 * 256; p += 2) {
        uint16_t seq = (uint16_t)(fz_hist.next_seq - 1 - (data[p] & 0x7f));
        at += (uint64_t)data[p + 1] * 100;
        sfu_twcc_on_packet(&fz_recv, seq, at);
        if (data[p] & 0x80) {
            uint8_t fb[1500];
            int len;
            while ((len = sfu_twcc_build_feedback(&fz_recv, fb, sizeof(fb), 1, 2)) > 0) {
                if (data[p + 1] & 1)
                    fb[data[p + 1] % (size_t)len] ^= data[p];
                feed(fb, (size_t)len, MAX_RESULTS);
            }
        }
    }

    /* raw results: any values reach the estimator */
    int n = 0;
    for (size_t p = 1; p + 20 <= size && n < MAX_RESULTS; p += 20, n++) {
        int64_t a, b;
        uint32_t sz;
        uint16_t cl;
        memcpy(&a, data + p, 8);
        memcpy(&b, data + p + 8, 8);
        memcpy(&sz, data + p + 16, 4);
        cl = (uint16_t)(data[p + 19] & 3);
        fz_res[n].send_us = a;
        fz_res[n].recv_us = (data[p] & 7) == 0 ? -1 : b;
        fz_res[n].size = sz;
        fz_res[n].probe_cluster = cl;
    }
    if (n) {
        sfu_gcc_on_feedback(&fz_gcc, fz_res, n, fz_now + 50000);
        check_estimate();
        sfu_gcc_on_feedback(&fz_gcc, fz_res, n, INT64_MAX / 2);
        check_estimate();
    }
    return 0;
}
