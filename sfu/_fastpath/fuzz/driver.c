/* A self-contained mutation fuzzer for the targets of targets.c, so the
 * suite needs nothing but gcc and its sanitizers (libFuzzer is optional:
 * docs/fuzzing.md).
 *
 *   fuzz TARGET ITERATIONS SEED [SEED_FILE...]
 *
 * Starts from the seed files (real packets: the .bin files of tests/fixtures) plus a few
 * built-in shapes, and feeds ITERATIONS mutated inputs to TARGET: bit flips,
 * byte writes of interesting values, inserts, deletes, truncation, splices
 * of two corpus entries, and (for the engine) records of several datagrams.
 * An input that grows the target's coverage is not tracked (no
 * instrumentation); the sanitizers make any memory error or undefined
 * behaviour fatal. Prints one line: target, inputs run, seconds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "targets.h"

#define MAX_INPUT 8192
#define MAX_CORPUS 256

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

typedef struct {
    uint8_t *data;
    size_t len;
} entry_t;

static entry_t corpus[MAX_CORPUS];
static int ncorpus;

static void corpus_add(const uint8_t *d, size_t n)
{
    if (ncorpus == MAX_CORPUS || n > MAX_INPUT)
        return;
    corpus[ncorpus].data = malloc(n ? n : 1);
    if (!corpus[ncorpus].data)
        return;
    memcpy(corpus[ncorpus].data, d, n);
    corpus[ncorpus].len = n;
    ncorpus++;
}

static void corpus_add_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    uint8_t buf[MAX_INPUT];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    corpus_add(buf, n);
}

static const uint8_t interesting[] = {0x00, 0x01, 0x02, 0x0f, 0x10, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0xbe, 0xde,
                                      0xc8, 0xc9, 0xcd, 0xce, 0xff, 0xfe, 0x20, 0x40};

/* Mutates buf (len bytes, MAX_INPUT capacity) in place; returns the new length. */
static size_t mutate(uint8_t *buf, size_t len)
{
    int rounds = 1 + (int)rnd_below(6);
    for (int r = 0; r < rounds; r++) {
        switch (rnd_below(9)) {
        case 0: /* flip a bit */
            if (len)
                buf[rnd_below(len)] ^= (uint8_t)(1u << rnd_below(8));
            break;
        case 1: /* an interesting byte */
            if (len)
                buf[rnd_below(len)] = interesting[rnd_below(sizeof(interesting))];
            break;
        case 2: /* a random byte */
            if (len)
                buf[rnd_below(len)] = (uint8_t)rnd();
            break;
        case 3: { /* insert bytes */
            size_t n = 1 + rnd_below(16), at = rnd_below(len + 1);
            if (len + n > MAX_INPUT)
                break;
            memmove(buf + at + n, buf + at, len - at);
            for (size_t i = 0; i < n; i++)
                buf[at + i] = (uint8_t)rnd();
            len += n;
            break;
        }
        case 4: { /* delete bytes */
            if (!len)
                break;
            size_t at = rnd_below(len), n = 1 + rnd_below(len - at);
            memmove(buf + at, buf + at + n, len - at - n);
            len -= n;
            break;
        }
        case 5: /* truncate */
            len = rnd_below(len + 1);
            break;
        case 6: { /* splice another entry's tail */
            const entry_t *o = &corpus[rnd_below((size_t)ncorpus)];
            size_t at = rnd_below(len + 1), from = rnd_below(o->len + 1), n = o->len - from;
            if (at + n > MAX_INPUT)
                n = MAX_INPUT - at;
            memcpy(buf + at, o->data + from, n);
            len = at + n;
            break;
        }
        case 7: { /* a 16-bit big-endian value (lengths, counts, sequence numbers) */
            if (len < 2)
                break;
            size_t at = rnd_below(len - 1);
            uint16_t v = rnd_below(2) ? (uint16_t)rnd() : (uint16_t)(len - at + rnd_below(8) - 4);
            buf[at] = (uint8_t)(v >> 8);
            buf[at + 1] = (uint8_t)v;
            break;
        }
        default: { /* duplicate a chunk */
            if (!len)
                break;
            size_t at = rnd_below(len), n = 1 + rnd_below(len - at);
            if (len + n > MAX_INPUT)
                break;
            memmove(buf + at + n, buf + at, len - at);
            len += n;
            break;
        }
        }
    }
    return len;
}

/* The engine target reads records [socket][source][dt][len16][datagram]:
 * wrap 1 to 8 corpus packets, each mutated, into one input. */
static size_t engine_input(uint8_t *buf)
{
    size_t len = 0;
    int n = 1 + (int)rnd_below(8);
    for (int k = 0; k < n; k++) {
        uint8_t pkt[MAX_INPUT];
        const entry_t *o = &corpus[rnd_below((size_t)ncorpus)];
        memcpy(pkt, o->data, o->len);
        size_t plen = rnd_below(4) ? mutate(pkt, o->len) : o->len;
        if (len + 5 + plen > MAX_INPUT)
            break;
        buf[len++] = (uint8_t)rnd_below(4);
        buf[len++] = (uint8_t)(rnd_below(4) ? (rnd() & 0x03) : rnd());
        buf[len++] = (uint8_t)rnd_below(80);
        buf[len++] = (uint8_t)(plen >> 8);
        buf[len++] = (uint8_t)plen;
        memcpy(buf + len, pkt, plen);
        len += plen;
    }
    return len;
}

static void builtin_seeds(void)
{
    /* RTP: VP8 keyframe with one-byte mid/rid/twcc extensions, SSRC-less
     * producer shape (mid "v", rid "q"), RTX, an H264 STAP-A; RTCP: SR+SDES,
     * NACK, PLI, FIR, REMB, TWCC; STUN and DTLS first bytes. */
    static const uint8_t seeds[][64] = {
        {0x90, 0x60, 0x00, 0x01, 0, 0, 0x0b, 0xb8, 0, 0, 0x11, 0x11, 0xbe, 0xde, 0, 2, 0x10, 'v', 0x20, 'q', 0x51,
         0x00, 0x07, 0, 0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a},
        {0x90, 0x60, 0x00, 0x02, 0, 0, 0x0b, 0xb8, 0, 0, 0x77, 0x77, 0xbe, 0xde, 0, 1, 0x10, 'v', 0x20, 'h',
         0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a},
        {0x90, 0x61, 0x00, 0x03, 0, 0, 0x0b, 0xb8, 0, 0, 0x22, 0x22, 0xbe, 0xde, 0, 1, 0x30, 'q', 0, 0, 0x00, 0x01,
         0x10, 0x00},
        {0x80, 0x60, 0x00, 0x04, 0, 0, 0x0b, 0xb8, 0, 0, 0x33, 0x33, 0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x65,
         0x88},
        {0x80, 0xc8, 0x00, 0x06, 0, 0, 0x11, 0x11, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0x0b, 0xb8, 0, 0, 0, 10, 0, 0, 4, 0},
        {0x81, 0xcd, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0xc0, 0x00, 0x03, 0xe9, 0x00, 0x05},
        {0x81, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0xc0, 0x02},
        {0x84, 0xce, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x02, 1, 0, 0, 0},
        {0x8f, 0xce, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 0, 'R', 'E', 'M', 'B', 1, 0x0a, 0xbc, 0xde, 0, 0, 0x11, 0x11},
        {0x8f, 0xcd, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0x11, 0x11, 0x00, 0x10, 0x00, 0x03, 0, 0, 0x01, 0x00, 0x20, 0x03,
         0x04, 0x04, 0x04, 0x00},
        {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
        {0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10},
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        size_t n = 64;
        while (n > 12 && seeds[i][n - 1] == 0)
            n--;
        corpus_add(seeds[i], n);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s TARGET ITERATIONS SEED [SEED_FILE...]\n", argv[0]);
        return 2;
    }
    const sfu_fuzz_target_t *t = sfu_fuzz_find(argv[1]);
    if (!t) {
        fprintf(stderr, "unknown target %s (rtp, rtcp, streams, engine)\n", argv[1]);
        return 2;
    }
    unsigned long long iterations = strtoull(argv[2], NULL, 10);
    rng_state = strtoull(argv[3], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    builtin_seeds();
    for (int i = 4; i < argc; i++)
        corpus_add_file(argv[i]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    static uint8_t buf[MAX_INPUT];
    int is_engine = strcmp(t->name, "engine") == 0;
    for (unsigned long long i = 0; i < iterations; i++) {
        size_t len;
        if (is_engine) {
            len = engine_input(buf);
        } else if (rnd_below(64) == 0) {
            len = rnd_below(256);
            for (size_t k = 0; k < len; k++)
                buf[k] = (uint8_t)rnd();
        } else {
            const entry_t *o = &corpus[rnd_below((size_t)ncorpus)];
            memcpy(buf, o->data, o->len);
            len = mutate(buf, o->len);
        }
        /* a copy of exactly len bytes, so ASan sees any read past the input */
        uint8_t *in = malloc(len ? len : 1);
        if (!in)
            return 3;
        memcpy(in, buf, len);
        t->fn(in, len);
        free(in);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    sfu_fuzz_cleanup();
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s %llu inputs %.1f s\n", t->name, iterations, secs);
    for (int i = 0; i < ncorpus; i++)
        free(corpus[i].data);
    return 0;
}
