/* A compiled plain-RTP load generator for the SFU benchmarks.
 *
 * It plays N participants. Each has one bound UDP socket (the SFU's plain
 * transport for that participant is connected to it) and publishes
 *   - an Opus-like audio stream: audio_pps packets/s of audio_payload bytes;
 *   - a VP8-like video stream: video_fps frames/s at video_bps, every frame
 *     split into equal packets of at most max_packet bytes (marker on the
 *     last), a keyframe keyframe_factor times the average frame size every
 *     keyframe_interval_s (phases spread over participants), the packets of
 *     a frame spread evenly over the frame interval (a pacer);
 *   - or, with video_layers > 1, that many such streams (simulcast
 *     encodings, each its own SSRC, sequence and share of video_bps), their
 *     frames captured at the same instants and their keyframes together.
 * The VP8 payload descriptor is one byte (S bit), or with vp8_picture_id
 * what libwebrtc sends: X, I (15-bit picture id), L (TL0PICIDX), T (TID of
 * an L1T3 pattern 0,2,1,2 restarting at each keyframe).
 * Everything the SFU forwards is received on the same sockets (epoll +
 * recvmmsg). Every payload ends with a 20-byte trailer
 *     magic u32 | send time u64 (CLOCK_MONOTONIC ns) | publisher u16 |
 *     kind u8 | flags u8 | publisher's packet count u32       (host order)
 * (flags: 1 keyframe, 2 first packet of a frame, 4 last, bits 4-5 the
 * simulcast layer; the count is per stream)
 * so that the receiver knows who sent a packet, when, and which stream it
 * belongs to whatever SSRC/sequence numbers the SFU rewrote; loss is
 * counted per received stream from the (rewritten) RTP sequence numbers
 * and against what the publisher sent, and one-way latency goes into a
 * log-linear histogram of microseconds.
 *
 * Single-threaded, no Python: the caller releases the GIL around lg_run().
 * Every loop is bounded by the clock (duration + drain + a hard margin).
 */
#define _GNU_SOURCE
#include "_loadgen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define LG_RECV_BATCH 64
#define LG_RECV_ROUNDS 4
#define LG_SEND_BATCH_MAX 64
#define LG_EVENTS 64

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s) /* xorshift64* */
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC in ns, read as tightly as possible. */
static int64_t realtime_offset(void)
{
    int64_t best = 0;
    uint64_t best_span = UINT64_MAX;
    for (int i = 0; i < 5; i++) {
        struct timespec a, r, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        clock_gettime(CLOCK_REALTIME, &r);
        clock_gettime(CLOCK_MONOTONIC, &b);
        int64_t ma = (int64_t)a.tv_sec * 1000000000 + a.tv_nsec;
        int64_t mb = (int64_t)b.tv_sec * 1000000000 + b.tv_nsec;
        int64_t rt = (int64_t)r.tv_sec * 1000000000 + r.tv_nsec;
        if ((uint64_t)(mb - ma) < best_span) {
            best_span = (uint64_t)(mb - ma);
            best = rt - (ma + mb) / 2;
        }
    }
    return best;
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

/* ------------------------------------------------------------------ histogram */

int lg_hist_index(uint64_t us)
{
    if (us < LG_HIST_LINEAR)
        return (int)us;
    int msb = 63 - __builtin_clzll(us); /* >= 8 */
    int shift = msb - 7;                /* keeps 128 sub-buckets */
    int idx = LG_HIST_LINEAR + (msb - 8) * LG_HIST_SUB + (int)((us >> shift) - LG_HIST_SUB);
    return idx < LG_HIST_BUCKETS ? idx : LG_HIST_BUCKETS - 1;
}

uint64_t lg_hist_bucket_low(int idx)
{
    if (idx < LG_HIST_LINEAR)
        return (uint64_t)idx;
    int k = idx - LG_HIST_LINEAR;
    int msb = 8 + k / LG_HIST_SUB;
    uint64_t sub = (uint64_t)(k % LG_HIST_SUB + LG_HIST_SUB);
    return sub << (msb - 7);
}

/* ------------------------------------------------------------------ CPU sampling */

static int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return (int)n;
}

/* utime + stime (clock ticks) of a process, summed over its threads. */
static int proc_ticks(int pid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (read_file(path, buf, sizeof(buf)) < 0)
        return -1;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    /* fields after ")": state(3) ppid(4) ... utime(14) stime(15) */
    unsigned long long ut = 0, st = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            ut = strtoull(tok, NULL, 10);
        else if (field == 15) {
            st = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field < 15)
        return -1;
    *ticks = ut + st;
    return 0;
}

/* Machine-wide busy/total/softirq ticks from /proc/stat. */
static void sys_ticks(uint64_t *busy, uint64_t *total, uint64_t *softirq)
{
    char buf[512];
    *busy = *total = *softirq = 0;
    if (read_file("/proc/stat", buf, sizeof(buf)) < 0)
        return;
    unsigned long long v[8] = {0};
    if (sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
               &v[7]) < 7)
        return;
    *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    *total = *busy + v[3] + v[4];
    *softirq = v[6];
}

static uint64_t tv_us(struct timeval tv) { return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec; }

/* ------------------------------------------------------------------ participants */

/* One video stream (a simulcast encoding) of a participant. */
typedef struct {
    uint32_t ssrc;
    uint16_t seq;
    uint32_t ts;
    uint32_t count;
    uint64_t f_next;      /* start of the next frame */
    uint32_t f_index;
    int f_left, f_total;  /* packets of the current frame */
    int f_key;
    uint32_t f_size_base, f_size_extra;
    uint64_t f_pkt_next, f_pkt_gap;
    uint16_t pic_id;      /* VP8 picture id (15 bits) of the current frame */
    uint8_t tl0;          /* TL0PICIDX of the current frame */
    uint8_t tid;          /* its temporal layer */
    uint32_t tl_pos;      /* frames since the last keyframe */
    int key_request;      /* a PLI / FIR asked for a keyframe */
} vstream_t;

typedef struct {
    int fd;
    const struct sockaddr_storage *dest;
    socklen_t dest_len;
    uint32_t a_ssrc;
    uint16_t a_seq;
    uint32_t a_ts;
    uint32_t a_count;
    uint64_t a_next;
    uint32_t kf_phase;
    vstream_t v[LG_MAX_LAYERS];
    uint64_t rng;
    void *srtp_out, *srtp_in;
    uint64_t stun_next;
} part_t;

typedef struct {
    const lg_config_t *cfg;
    lg_result_t *res;
    uint64_t *sent, *sent_layers;
    lg_rx_stream_t *rx;
    uint32_t *hist;
    part_t *parts;
    uint64_t audio_gap, frame_gap;
    int kf_every;         /* frames between keyframes */
    int nlayers;          /* video streams per participant */
    double key_bytes[LG_MAX_LAYERS], delta_bytes[LG_MAX_LAYERS];
    int desc_len;         /* VP8 payload descriptor bytes */
    int max_payload;
    int send_batch;
    uint64_t late_ns;
    int kernel_ts;
    int64_t rt_offset;    /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
    /* SRTP mode: (subscriber, SSRC) -> rx stream index, open addressing */
    uint64_t *map_keys;   /* (sub << 32 | ssrc) + 1; 0 = empty */
    int32_t *map_vals;
    uint32_t map_mask;
    /* the batch being built (one socket at a time) */
    struct mmsghdr msgs[LG_SEND_BATCH_MAX];
    struct iovec iovs[LG_SEND_BATCH_MAX];
    uint8_t bufs[LG_SEND_BATCH_MAX][LG_MAX_PACKET + 64]; /* + SRTP tag */
    uint64_t sched[LG_SEND_BATCH_MAX];
    int nbatch;
    part_t *batch_part;
} gen_t;

static void rtp_header(uint8_t *b, int marker, uint8_t pt, uint16_t seq, uint32_t ts, uint32_t ssrc)
{
    b[0] = 0x80;
    b[1] = (uint8_t)((marker ? 0x80 : 0) | (pt & 0x7f));
    b[2] = (uint8_t)(seq >> 8);
    b[3] = (uint8_t)seq;
    b[4] = (uint8_t)(ts >> 24);
    b[5] = (uint8_t)(ts >> 16);
    b[6] = (uint8_t)(ts >> 8);
    b[7] = (uint8_t)ts;
    b[8] = (uint8_t)(ssrc >> 24);
    b[9] = (uint8_t)(ssrc >> 16);
    b[10] = (uint8_t)(ssrc >> 8);
    b[11] = (uint8_t)ssrc;
}

static void write_trailer(uint8_t *end, uint64_t send_ns, uint16_t pub, uint8_t kind, uint8_t flags, uint32_t count)
{
    uint8_t *t = end - LG_TRAILER;
    uint32_t magic = LG_MAGIC;
    memcpy(t, &magic, 4);
    memcpy(t + 4, &send_ns, 8);
    memcpy(t + 12, &pub, 2);
    t[14] = kind;
    t[15] = flags;
    memcpy(t + 16, &count, 4);
}

static void flush_batch(gen_t *g)
{
    if (g->nbatch == 0)
        return;
    part_t *p = g->batch_part;
    uint64_t now = now_ns();
    for (int i = 0; i < g->nbatch; i++) {
        /* stamp the send time into each trailer (its offset is len - 20 + 4) */
        uint8_t *t = g->bufs[i] + g->iovs[i].iov_len - LG_TRAILER;
        memcpy(t + 4, &now, 8);
        if (p->srtp_out) {
            int l = (int)g->iovs[i].iov_len;
            if (g->cfg->srtp_protect(p->srtp_out, g->bufs[i], &l) != 0)
                g->res->protect_errors++; /* sent as is: the SFU drops and counts it */
            else
                g->iovs[i].iov_len = (size_t)l;
        }
        uint64_t lag = now > g->sched[i] ? now - g->sched[i] : 0;
        if (lag > g->res->max_send_lag_ns)
            g->res->max_send_lag_ns = lag;
        g->res->total_send_lag_ns += lag;
    }
    int sent = 0;
    for (int guard = 0; sent < g->nbatch && guard < 4 * LG_SEND_BATCH_MAX; guard++) {
        int r = sendmmsg(p->fd, g->msgs + sent, (unsigned)(g->nbatch - sent), MSG_DONTWAIT);
        g->res->send_calls++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            g->res->send_errors++;
            sent++; /* drop the head and go on */
            continue;
        }
        for (int k = sent; k < sent + r; k++) {
            g->res->sent_packets++;
            g->res->sent_bytes += g->iovs[k].iov_len;
        }
        sent += r;
    }
    g->nbatch = 0;
}

static uint8_t *batch_slot(gen_t *g, part_t *p, size_t len, uint64_t sched)
{
    if (g->batch_part != p || g->nbatch == g->send_batch)
        flush_batch(g);
    g->batch_part = p;
    int i = g->nbatch++;
    g->iovs[i].iov_base = g->bufs[i];
    g->iovs[i].iov_len = len;
    memset(&g->msgs[i].msg_hdr, 0, sizeof(g->msgs[i].msg_hdr));
    g->msgs[i].msg_hdr.msg_name = (void *)p->dest;
    g->msgs[i].msg_hdr.msg_namelen = p->dest_len;
    g->msgs[i].msg_hdr.msg_iov = &g->iovs[i];
    g->msgs[i].msg_hdr.msg_iovlen = 1;
    g->sched[i] = sched;
    return g->bufs[i];
}

static void emit_audio(gen_t *g, part_t *p, int idx)
{
    size_t len = 12 + (size_t)g->cfg->audio_payload;
    uint8_t *b = batch_slot(g, p, len, p->a_next);
    rtp_header(b, 0, g->cfg->audio_pt, p->a_seq, p->a_ts, p->a_ssrc);
    b[12] = 0xfc; /* Opus TOC: CELT FB 20 ms, stereo, one frame */
    write_trailer(b + len, 0, (uint16_t)idx, LG_KIND_AUDIO, 0, p->a_count);
    g->sent[idx * 2 + LG_KIND_AUDIO]++;
    p->a_seq++;
    p->a_ts += (uint32_t)(48000.0 / g->cfg->audio_pps);
    p->a_count++;
    p->a_next += g->audio_gap;
}

static void start_frame(gen_t *g, part_t *p, int layer)
{
    const lg_config_t *c = g->cfg;
    vstream_t *v = &p->v[layer];
    /* an encoder starts with a keyframe (and an SFU starts new consumers at one) */
    v->f_key = v->f_index == 0 || v->key_request || ((v->f_index + p->kf_phase) % (uint32_t)g->kf_every) == 0;
    v->key_request = 0;
    double size = v->f_key ? g->key_bytes[layer]
                           : g->delta_bytes[layer] * (1.0 + c->frame_jitter * (2.0 * rng_unit(&p->rng) - 1.0));
    int min_payload = LG_TRAILER + g->desc_len + 10;
    int npkts = (int)((size + g->max_payload - 1) / g->max_payload);
    if (npkts < 1)
        npkts = 1;
    uint32_t bytes = (uint32_t)size;
    if (bytes < (uint32_t)(npkts * min_payload))
        bytes = (uint32_t)(npkts * min_payload);
    v->f_total = v->f_left = npkts;
    v->f_size_base = bytes / (uint32_t)npkts;
    v->f_size_extra = bytes % (uint32_t)npkts;
    v->f_pkt_next = v->f_next;
    v->f_pkt_gap = g->frame_gap / (uint64_t)npkts;
    v->f_next += g->frame_gap;
    /* L1T3: temporal layers 0,2,1,2 from each keyframe; TL0PICIDX counts
     * the layer-0 frames, the picture id every frame */
    static const uint8_t tid_of[4] = {0, 2, 1, 2};
    if (v->f_key)
        v->tl_pos = 0;
    v->tid = tid_of[v->tl_pos % 4];
    if (v->f_index > 0) {
        v->pic_id = (uint16_t)((v->pic_id + 1) & 0x7fff);
        if (v->tid == 0)
            v->tl0++;
    }
    v->tl_pos++;
    v->f_index++;
}

static void emit_video_packet(gen_t *g, part_t *p, int idx, int layer)
{
    vstream_t *v = &p->v[layer];
    int k = v->f_total - v->f_left; /* packet index in the frame */
    size_t payload = v->f_size_base + ((uint32_t)k < v->f_size_extra ? 1 : 0);
    size_t len = 12 + payload;
    int last = v->f_left == 1;
    uint8_t *b = batch_slot(g, p, len, v->f_pkt_next);
    rtp_header(b, last, g->cfg->video_pt, v->seq, v->ts, v->ssrc);
    uint8_t *pl = b + 12;
    if (g->desc_len == 1) {
        pl[0] = k == 0 ? 0x10 : 0x00; /* VP8 payload descriptor: S bit on the first packet */
    } else {
        pl[0] = (uint8_t)(0x80 | (k == 0 ? 0x10 : 0x00)); /* X, S on the first packet, PID 0 */
        pl[1] = 0xe0;                                     /* I, L, T */
        pl[2] = (uint8_t)(0x80 | (v->pic_id >> 8));       /* M: 15-bit picture id */
        pl[3] = (uint8_t)v->pic_id;
        pl[4] = v->tl0;
        pl[5] = (uint8_t)((v->tid << 6) | (v->tid > 0 ? 0x20 : 0x00)); /* TID, Y (sync) above 0, KEYIDX 0 */
    }
    if (k == 0) {
        uint8_t *tag = pl + g->desc_len;
        /* VP8 frame tag: P=0 for a keyframe, show_frame=1 */
        tag[0] = v->f_key ? 0x10 : 0x11;
        tag[1] = 0x02;
        tag[2] = 0x00;
        if (v->f_key) { /* start code and the size: 1280x720 for the top layer, halved per layer below */
            int shift = g->nlayers - 1 - layer;
            uint16_t w = (uint16_t)(1280 >> shift), h = (uint16_t)(720 >> shift);
            tag[3] = 0x9d;
            tag[4] = 0x01;
            tag[5] = 0x2a;
            tag[6] = (uint8_t)w;
            tag[7] = (uint8_t)(w >> 8);
            tag[8] = (uint8_t)h;
            tag[9] = (uint8_t)(h >> 8);
        }
    }
    uint8_t flags = (uint8_t)((v->f_key ? 1 : 0) | (k == 0 ? 2 : 0) | (last ? 4 : 0) | (layer << 4));
    write_trailer(b + len, 0, (uint16_t)idx, LG_KIND_VIDEO, flags, v->count);
    g->sent[idx * 2 + LG_KIND_VIDEO]++;
    g->sent_layers[idx * LG_MAX_LAYERS + layer]++;
    v->seq++;
    v->count++;
    v->f_left--;
    v->f_pkt_next += v->f_pkt_gap;
    if (v->f_left == 0)
        v->ts += (uint32_t)(90000.0 / g->cfg->video_fps);
}

static uint64_t next_event(const gen_t *g, const part_t *p)
{
    uint64_t t = UINT64_MAX;
    if (g->cfg->audio_enabled && p->a_next < t)
        t = p->a_next;
    if (g->cfg->video_enabled) {
        for (int l = 0; l < g->nlayers; l++) {
            const vstream_t *v = &p->v[l];
            uint64_t x = v->f_left > 0 ? v->f_pkt_next : v->f_next;
            if (x < t)
                t = x;
        }
    }
    return t;
}

/* Emits every packet of participant idx scheduled at or before now (and
 * before t_end), earliest first. */
static void emit_due(gen_t *g, int idx, uint64_t now, uint64_t t_end)
{
    part_t *p = &g->parts[idx];
    for (int guard = 0; guard < 100000; guard++) {
        uint64_t ta = g->cfg->audio_enabled ? p->a_next : UINT64_MAX;
        uint64_t tv = UINT64_MAX;
        int lv = 0;
        if (g->cfg->video_enabled) {
            for (int l = 0; l < g->nlayers; l++) {
                vstream_t *v = &p->v[l];
                if (v->f_left == 0 && v->f_next <= now && v->f_next < t_end)
                    start_frame(g, p, l);
                if (v->f_left > 0 && v->f_pkt_next < tv) {
                    tv = v->f_pkt_next;
                    lv = l;
                }
            }
        }
        uint64_t t = ta < tv ? ta : tv;
        if (t > now || t >= t_end)
            break;
        if (ta <= tv)
            emit_audio(g, p, idx);
        else
            emit_video_packet(g, p, idx, lv);
    }
    flush_batch(g);
}

/* ------------------------------------------------------------------ receiving */

static int32_t map_find(const gen_t *g, int sub, uint32_t ssrc)
{
    if (!g->map_keys)
        return -1;
    uint64_t key = (((uint64_t)(uint32_t)sub << 32) | ssrc) + 1;
    uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & g->map_mask;
    for (uint32_t probe = 0; probe <= g->map_mask; probe++) {
        uint32_t i = (h + probe) & g->map_mask;
        if (g->map_keys[i] == key)
            return g->map_vals[i];
        if (g->map_keys[i] == 0)
            return -1;
    }
    return -1;
}

static int map_build(gen_t *g, const lg_config_t *cfg)
{
    if (cfg->nmap <= 0)
        return 0;
    uint32_t cap = 16;
    while (cap < (uint32_t)cfg->nmap * 2)
        cap <<= 1;
    g->map_keys = calloc(cap, sizeof(uint64_t));
    g->map_vals = calloc(cap, sizeof(int32_t));
    if (!g->map_keys || !g->map_vals)
        return -ENOMEM;
    g->map_mask = cap - 1;
    int n = cfg->nparts;
    for (int k = 0; k < cfg->nmap; k++) {
        int sub = cfg->map_sub[k], pub = cfg->map_pub[k], kind = cfg->map_kind[k];
        if (sub < 0 || sub >= n || pub < 0 || pub >= n || kind < 0 || kind > 1)
            return -EINVAL;
        uint64_t key = (((uint64_t)(uint32_t)sub << 32) | cfg->map_ssrc[k]) + 1;
        uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & g->map_mask;
        while (g->map_keys[h] && g->map_keys[h] != key)
            h = (h + 1) & g->map_mask;
        g->map_keys[h] = key;
        g->map_vals[h] = (int32_t)(((size_t)sub * n + pub) * 2 + kind);
    }
    return 0;
}

/* Reads the trailer at the end of a clear RTP packet (after its padding).
 * Returns 0 and fills the fields, or -1. */
static int read_trailer(const uint8_t *b, size_t len, int n, uint64_t *sent_ns, uint16_t *pub, uint8_t *kind,
                        uint8_t *flags)
{
    if (len < 12 + LG_TRAILER)
        return -1;
    size_t end = len;
    if (b[0] & 0x20) { /* padding */
        size_t pad = b[len - 1];
        if (pad > len - 12 - LG_TRAILER)
            return -1;
        end -= pad;
    }
    const uint8_t *t = b + end - LG_TRAILER;
    uint32_t magic;
    memcpy(&magic, t, 4);
    memcpy(sent_ns, t + 4, 8);
    memcpy(pub, t + 12, 2);
    *kind = t[14];
    *flags = t[15];
    if (magic != LG_MAGIC || *pub >= n || *kind > 1)
        return -1;
    return 0;
}

static void rx_timed(gen_t *g, int kind, uint64_t sent_ns, uint64_t now)
{
    lg_result_t *res = g->res;
    res->recv_timed++;
    if (sent_ns >= res->t_start_ns && sent_ns < res->t_end_ns)
        res->recv_in_window++;
    if (now > sent_ns && now - sent_ns > g->late_ns)
        res->recv_late++;
    uint64_t lat_us = now > sent_ns ? (now - sent_ns) / 1000u : 0;
    g->hist[kind * LG_HIST_BUCKETS + lg_hist_index(lat_us)]++;
}

static void key_request(gen_t *g, int sub, uint32_t ssrc)
{
    part_t *p = &g->parts[sub];
    for (int l = 0; l < g->nlayers; l++) {
        if (p->v[l].ssrc == ssrc) {
            p->v[l].key_request = 1;
            g->res->key_requests++;
            return;
        }
    }
}

/* RTCP the SFU sent to participant sub (a compound packet, unprotected
 * first under SRTP): a PLI or FIR naming one of its video streams makes
 * that stream's next frame a keyframe. */
static void rx_rtcp(gen_t *g, int sub, uint8_t *b, size_t len)
{
    void *srtp_in = g->parts[sub].srtp_in;
    if (srtp_in) {
        if (!g->cfg->srtp_unprotect_rtcp) {
            return;
        }
        int l = (int)len;
        if (g->cfg->srtp_unprotect_rtcp(srtp_in, b, &l) != 0 || l < 0 || (size_t)l > len) {
            g->res->rtcp_errors++;
            return;
        }
        len = (size_t)l;
    }
    size_t off = 0;
    while (off + 4 <= len) {
        const uint8_t *h = b + off;
        size_t plen = ((size_t)((h[2] << 8) | h[3]) + 1) * 4;
        if ((h[0] >> 6) != 2 || plen > len - off) {
            g->res->rtcp_errors++;
            return;
        }
        int fmt = h[0] & 0x1f;
        if (h[1] == 206 && fmt == 1 && plen >= 12) { /* PLI: the media source SSRC */
            key_request(g, sub, ((uint32_t)h[8] << 24) | ((uint32_t)h[9] << 16) | ((uint32_t)h[10] << 8) | h[11]);
        } else if (h[1] == 206 && fmt == 4) { /* FIR: an (SSRC, seq, reserved) entry per stream */
            for (size_t e = 12; e + 8 <= plen; e += 8)
                key_request(g, sub,
                            ((uint32_t)h[e] << 24) | ((uint32_t)h[e + 1] << 16) | ((uint32_t)h[e + 2] << 8) | h[e + 3]);
        }
        off += plen;
    }
}

static void rx_packet(gen_t *g, int sub, uint8_t *b, size_t len, uint64_t now)
{
    lg_result_t *res = g->res;
    int n = g->cfg->nparts;
    res->recv_packets++;
    res->recv_bytes += len;
    if (len < 12 || (b[0] >> 6) != 2 || (b[1] >= 192 && b[1] <= 223)) { /* STUN, RTCP, ... */
        res->recv_foreign++;
        if (g->cfg->keyframe_on_request && len >= 8 && (b[0] >> 6) == 2 && b[1] >= 192 && b[1] <= 223)
            rx_rtcp(g, sub, b, len);
        return;
    }
    uint16_t seq = (uint16_t)((b[2] << 8) | b[3]);
    uint32_t ssrc = ((uint32_t)b[8] << 24) | ((uint32_t)b[9] << 16) | ((uint32_t)b[10] << 8) | b[11];
    lg_rx_stream_t *s;
    uint64_t sent_ns = 0;
    int kind, timed = 0;
    uint8_t flags = 0;
    void *srtp_in = g->parts[sub].srtp_in;
    if (srtp_in) {
        /* The header is in the clear: the stream is known by its SSRC. */
        int32_t idx = map_find(g, sub, ssrc);
        if (idx < 0) {
            res->recv_foreign++;
            return;
        }
        s = &g->rx[idx];
        kind = idx & 1;
    } else {
        uint16_t pub;
        uint8_t k;
        if (read_trailer(b, len, n, &sent_ns, &pub, &k, &flags) < 0) {
            res->recv_foreign++;
            return;
        }
        kind = k;
        s = &g->rx[((size_t)sub * n + pub) * 2 + kind];
        timed = 1;
    }
    if (now >= res->t_start_ns && now < res->t_end_ns)
        res->recv_during_window++;
    if (!s->started) {
        s->started = 1;
        s->ssrc = ssrc;
        s->base_ext = s->max_ext = seq;
    } else {
        if (ssrc != s->ssrc) {
            s->ssrc_changes++;
            s->ssrc = ssrc;
        }
        int16_t d = (int16_t)(uint16_t)(seq - (uint16_t)s->max_ext);
        int64_t ext = s->max_ext + d;
        if (d > 0) {
            s->max_ext = ext;
        } else {
            s->reordered++;
            if (ext < s->base_ext)
                s->base_ext = ext;
        }
    }
    if (!s->first_ns)
        s->first_ns = now;
    s->last_ns = now;
    s->packets++;
    s->bytes += len;
    if (srtp_in && (s->packets - 1) % (uint64_t)g->cfg->decrypt_every == 0) {
        /* a sample is decrypted (in place: the buffer is ours) for its send time */
        int l = (int)len;
        uint16_t pub;
        uint8_t k;
        if (g->cfg->srtp_unprotect(srtp_in, b, &l) != 0 || read_trailer(b, (size_t)l, n, &sent_ns, &pub, &k, &flags) < 0) {
            res->decrypt_errors++;
        } else {
            timed = 1;
        }
    }
    if (timed) {
        rx_timed(g, kind, sent_ns, now);
        int layer = (flags >> 4) & 3;
        if (kind == LG_KIND_VIDEO && layer < LG_MAX_LAYERS)
            s->layer_packets[layer]++;
    }
}

/* Kernel receive time (SO_TIMESTAMPNS, CLOCK_REALTIME) of a datagram as
 * CLOCK_MONOTONIC ns, or `fallback` when there is none. */
static uint64_t rx_time(const gen_t *g, struct msghdr *h, uint64_t fallback)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            int64_t rt = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
            return (uint64_t)(rt - g->rt_offset);
        }
    }
    return fallback;
}

static void drain(gen_t *g, int sub)
{
    static __thread uint8_t bufs[LG_RECV_BATCH][2048];
    static __thread uint64_t ctrl[LG_RECV_BATCH][8]; /* >= CMSG_SPACE(sizeof(struct timespec)) */
    struct mmsghdr msgs[LG_RECV_BATCH];
    struct iovec iovs[LG_RECV_BATCH];
    int fd = g->parts[sub].fd;
    for (int i = 0; i < LG_RECV_BATCH; i++) {
        iovs[i].iov_base = bufs[i];
        iovs[i].iov_len = sizeof(bufs[i]);
    }
    for (int round = 0; round < LG_RECV_ROUNDS; round++) {
        for (int i = 0; i < LG_RECV_BATCH; i++) {
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof(ctrl[i]);
        }
        int r = recvmmsg(fd, msgs, LG_RECV_BATCH, MSG_DONTWAIT, NULL);
        g->res->recv_calls++;
        if (r <= 0)
            return;
        uint64_t now = now_ns();
        for (int i = 0; i < r; i++) {
            uint64_t t = g->kernel_ts ? rx_time(g, &msgs[i].msg_hdr, now) : now;
            if (t > now) /* clock offset jitter: never in the future */
                t = now;
            rx_packet(g, sub, bufs[i], msgs[i].msg_len, t);
        }
        if (r < LG_RECV_BATCH)
            return;
    }
}

/* ------------------------------------------------------------------ main loop */

static void sample(gen_t *g, int end)
{
    lg_result_t *res = g->res;
    static __thread struct rusage ru0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    uint64_t busy, total, softirq;
    sys_ticks(&busy, &total, &softirq);
    uint64_t wt = 0;
    int ok = g->cfg->worker_pid > 0 && proc_ticks(g->cfg->worker_pid, &wt) == 0;
    uint64_t *per_pid = g->cfg->pid_ticks ? g->cfg->pid_ticks + (end ? 1 + g->cfg->nextra_pids : 0) : NULL;
    if (per_pid)
        per_pid[0] = wt;
    for (int i = 0; ok && i < g->cfg->nextra_pids; i++) {
        uint64_t t = 0;
        if (proc_ticks(g->cfg->extra_pids[i], &t) == 0)
            wt += t;
        if (per_pid)
            per_pid[1 + i] = t;
    }
    if (!end) {
        ru0 = ru;
        res->sys_busy_start = busy;
        res->sys_total_start = total;
        res->sys_softirq_start = softirq;
        res->worker_ticks_start = wt;
        res->worker_sampled = ok;
    } else {
        res->self_utime_us = tv_us(ru.ru_utime) - tv_us(ru0.ru_utime);
        res->self_stime_us = tv_us(ru.ru_stime) - tv_us(ru0.ru_stime);
        res->sys_busy_end = busy;
        res->sys_total_end = total;
        res->sys_softirq_end = softirq;
        res->worker_ticks_end = wt;
        res->worker_sampled = res->worker_sampled && ok;
    }
}

int lg_run(const lg_config_t *cfg, lg_result_t *res, uint64_t *sent, uint64_t *sent_layers, lg_rx_stream_t *rx,
           uint32_t *hist)
{
    int n = cfg->nparts;
    memset(res, 0, sizeof(*res));
    if (n < 1 || n > 65535 || cfg->max_packet < 12 + LG_TRAILER + 16 || cfg->max_packet > LG_MAX_PACKET ||
        cfg->audio_payload < LG_TRAILER || cfg->audio_payload + 12 > LG_MAX_PACKET || cfg->duration_s <= 0 ||
        cfg->audio_pps <= 0 || cfg->video_fps <= 0 || cfg->video_bps <= 0 || cfg->video_layers < 0 ||
        cfg->video_layers > LG_MAX_LAYERS)
        return -(res->error = EINVAL);
    int nlayers = cfg->video_layers > 0 ? cfg->video_layers : 1;
    double share_sum = 0;
    for (int l = 0; l < nlayers; l++) {
        if (nlayers > 1 && !(cfg->layer_share[l] > 0))
            return -(res->error = EINVAL);
        share_sum += nlayers > 1 ? cfg->layer_share[l] : 1.0;
    }
    if ((cfg->srtp_out || cfg->srtp_in) &&
        (!cfg->srtp_out || !cfg->srtp_in || !cfg->srtp_protect || !cfg->srtp_unprotect || cfg->decrypt_every < 1))
        return -(res->error = EINVAL);
    memset(sent, 0, sizeof(uint64_t) * 2 * (size_t)n);
    memset(sent_layers, 0, sizeof(uint64_t) * LG_MAX_LAYERS * (size_t)n);
    memset(rx, 0, sizeof(lg_rx_stream_t) * 2 * (size_t)n * (size_t)n);
    memset(hist, 0, sizeof(uint32_t) * 2 * LG_HIST_BUCKETS);

    gen_t *g = calloc(1, sizeof(*g));
    part_t *parts = calloc((size_t)n, sizeof(part_t));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g || !parts || ep < 0) {
        free(g);
        free(parts);
        if (ep >= 0)
            close(ep);
        return -(res->error = ENOMEM);
    }
    g->cfg = cfg;
    g->res = res;
    g->sent = sent;
    g->sent_layers = sent_layers;
    g->nlayers = nlayers;
    g->desc_len = cfg->vp8_picture_id ? 6 : 1;
    g->rx = rx;
    g->hist = hist;
    g->parts = parts;
    g->audio_gap = (uint64_t)(1e9 / cfg->audio_pps);
    g->frame_gap = (uint64_t)(1e9 / cfg->video_fps);
    g->kf_every = (int)(cfg->keyframe_interval_s * cfg->video_fps + 0.5);
    if (g->kf_every < 1)
        g->kf_every = 1;
    for (int l = 0; l < nlayers; l++) {
        /* each layer's share of video_bps (the shares need not add up to 1:
         * they are normalized) */
        double share = nlayers > 1 ? cfg->layer_share[l] / share_sum : 1.0;
        double avg = cfg->video_bps * share / 8.0 / cfg->video_fps;
        g->key_bytes[l] = avg * (cfg->keyframe_factor > 0 ? cfg->keyframe_factor : 1.0);
        if (g->kf_every > 1) {
            g->delta_bytes[l] = (avg * g->kf_every - g->key_bytes[l]) / (g->kf_every - 1);
            if (g->delta_bytes[l] < avg * 0.1)
                g->delta_bytes[l] = avg * 0.1;
        } else {
            g->delta_bytes[l] = g->key_bytes[l];
        }
    }
    g->max_payload = cfg->max_packet - 12;
    g->late_ns = (uint64_t)((cfg->late_ms > 0 ? cfg->late_ms : 100.0) * 1e6);
    g->kernel_ts = cfg->kernel_timestamps;
    g->rt_offset = realtime_offset();
    g->send_batch = cfg->send_batch < 1 ? 1 : cfg->send_batch > LG_SEND_BATCH_MAX ? LG_SEND_BATCH_MAX : cfg->send_batch;
    int rc = map_build(g, cfg);
    if (rc < 0)
        goto out;
    uint64_t stun_gap = (uint64_t)(cfg->stun_interval_s > 0 ? cfg->stun_interval_s * 1e9 : 0);

    uint64_t t0 = now_ns() + (uint64_t)(cfg->start_delay_s * 1e9);
    uint64_t t_end = t0 + (uint64_t)(cfg->duration_s * 1e9);
    uint64_t hard_end = t_end + (uint64_t)(cfg->drain_s * 1e9) + 5000000000ull;
    res->t_start_ns = t0;
    res->t_end_ns = t_end;

    uint64_t tick = (uint64_t)(cfg->tick_us > 0 ? cfg->tick_us * 1000.0 : 0);
    for (int i = 0; i < n; i++) {
        part_t *p = &parts[i];
        p->fd = cfg->fds[i];
        p->dest = &cfg->dests[i];
        p->dest_len = cfg->dest_lens[i];
        p->a_ssrc = cfg->audio_ssrcs[i];
        p->rng = (cfg->seed ? cfg->seed : 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)(i + 1) * 0xD1B54A32D192ED03ULL);
        for (int k = 0; k < 4; k++)
            rng_next(&p->rng);
        p->a_seq = (uint16_t)rng_next(&p->rng);
        p->a_ts = (uint32_t)rng_next(&p->rng);
        for (int l = 0; l < nlayers; l++) {
            vstream_t *v = &p->v[l];
            v->ssrc = cfg->video_ssrcs[(size_t)i * (size_t)nlayers + (size_t)l];
            v->seq = (uint16_t)rng_next(&p->rng);
            v->ts = (uint32_t)rng_next(&p->rng);
            v->pic_id = (uint16_t)(rng_next(&p->rng) & 0x7fff);
            v->tl0 = (uint8_t)rng_next(&p->rng);
        }
        /* phases spread so that participants do not send in lockstep */
        uint64_t join = (uint64_t)(rng_unit(&p->rng) * (cfg->start_spread_s > 0 ? cfg->start_spread_s * 1e9 : 0));
        p->a_next = t0 + join + (uint64_t)(rng_unit(&p->rng) * (double)g->audio_gap);
        uint64_t f_first = t0 + join + (uint64_t)(rng_unit(&p->rng) * (double)g->frame_gap);
        for (int l = 0; l < nlayers; l++)
            p->v[l].f_next = f_first; /* the layers of a frame are captured together */
        p->kf_phase = (uint32_t)(rng_unit(&p->rng) * g->kf_every);
        p->srtp_out = cfg->srtp_out ? cfg->srtp_out[i] : NULL;
        p->srtp_in = cfg->srtp_in ? cfg->srtp_in[i] : NULL;
        p->stun_next = t0 + (uint64_t)(rng_unit(&p->rng) * (double)stun_gap);
        if (g->kernel_ts) {
            int one = 1;
            if (setsockopt(p->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0) {
                rc = -errno;
                goto out;
            }
        }
        if (tick)
            continue; /* tick mode reads every socket every tick: without an
                         epoll registration the sender (the SFU) pays no
                         per-datagram epoll callback on loopback */
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev) < 0) {
            rc = -errno;
            goto out;
        }
    }

    struct epoll_event events[LG_EVENTS];
    int started = 0, ended = 0;
    uint64_t drain_deadline = hard_end;
    uint32_t rr = 0; /* rotates the order in which participants are served */
    uint64_t next_tick = t0;
    for (;;) {
        uint64_t now = now_ns();
        if (!started && now >= t0) {
            sample(g, 0);
            started = 1;
        }
        int sending = now < t_end;
        if (sending && started) {
            for (int k = 0; k < n; k++)
                emit_due(g, (int)((rr + (uint32_t)k) % (uint32_t)n), now, t_end);
            rr++;
            if (stun_gap && cfg->stun) {
                for (int i = 0; i < n; i++) {
                    if (parts[i].stun_next <= now && cfg->stun[i] && cfg->stun_len[i] > 0) {
                        if (sendto(parts[i].fd, cfg->stun[i], (size_t)cfg->stun_len[i], MSG_DONTWAIT,
                                   (const struct sockaddr *)parts[i].dest, parts[i].dest_len) > 0)
                            res->stun_sent++;
                        parts[i].stun_next = now + stun_gap;
                    }
                }
            }
        } else if (!sending && !ended) {
            if (!started) {
                sample(g, 0);
                started = 1;
            }
            sample(g, 1);
            ended = 1;
            uint64_t expected = 0;
            for (int i = 0; i < n; i++) {
                uint64_t subs = cfg->nsubscribers ? cfg->nsubscribers[i] : 0;
                expected += sent[2 * i] * subs;
                if (!cfg->layer_subs) {
                    expected += sent[2 * i + 1] * subs;
                    continue;
                }
                for (int l = 0; l < nlayers; l++)
                    expected += sent_layers[i * LG_MAX_LAYERS + l] * cfg->layer_subs[(size_t)i * (size_t)nlayers + (size_t)l];
            }
            res->expected_total = expected;
            drain_deadline = now + (uint64_t)(cfg->drain_s * 1e9);
        }
        if (ended) {
            uint64_t matched = res->recv_packets - res->recv_foreign;
            if ((res->expected_total && matched >= res->expected_total) || now >= drain_deadline)
                break;
        }
        if (now >= hard_end)
            break;
        uint64_t next;
        if (!started) {
            next = t0;
        } else if (sending) {
            next = t_end;
            for (int i = 0; i < n; i++) {
                uint64_t t = next_event(g, &parts[i]);
                if (t < next)
                    next = t;
            }
        } else {
            next = drain_deadline;
        }
        if (tick && started) {
            /* Tick mode: sleep on the clock (nobody to wake per datagram),
             * then take whatever arrived. */
            next_tick += tick;
            if (next_tick <= now) {
                res->ticks_missed += (now - next_tick) / tick + 1;
                next_tick = now + tick;
            }
            if (next_tick > next && !sending)
                next_tick = next;
            struct timespec until = {(time_t)(next_tick / 1000000000u), (long)(next_tick % 1000000000u)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
            }
            res->ticks++;
            for (int i = 0; i < n; i++)
                drain(g, i);
            continue;
        }
        uint64_t wait = next > now ? next - now : 0;
        struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
        int nev = epoll_pwait2(ep, events, LG_EVENTS, &ts, NULL);
        if (nev < 0 && errno == ENOSYS)
            nev = epoll_wait(ep, events, LG_EVENTS, (int)((wait + 999999) / 1000000));
#else
        (void)ts;
        int nev = epoll_wait(ep, events, LG_EVENTS, (int)((wait + 999999) / 1000000));
#endif
        if (nev < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        for (int i = 0; i < nev; i++)
            drain(g, (int)events[i].data.u32);
    }
    res->t_done_ns = now_ns();
    res->clock_drift_ns = realtime_offset() - g->rt_offset;

out:
    if (rc)
        res->error = -rc;
    free(g->map_keys);
    free(g->map_vals);
    close(ep);
    free(parts);
    free(g);
    return rc;
}
