/* Fuzz targets for the C core: every parser, and the engine fed arbitrary
 * datagrams in a configured room.
 *
 * Each target is `int sfu_fuzz_<name>(const uint8_t *data, size_t size)`.
 * They are driven by driver.c (a self-contained mutation loop, built with
 * gcc and ASan+UBSan by tests/test_fuzz.py) or, with -DSFU_LIBFUZZER and
 * clang's -fsanitize=fuzzer, by libFuzzer (SFU_FUZZ_TARGET picks the target;
 * see docs/fuzzing.md). A target must never crash, leak past its input, or
 * read outside it: the sanitizers turn any of that into a failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "../src/engine.h"
#include "../src/keyframe.h"
#include "../src/nack.h"
#include "../src/remb.h"
#include "../src/rtcp.h"
#include "../src/rtcp_fir.h"
#include "../src/rtcp_nack.h"
#include "../src/rtcp_pli.h"
#include "../src/rtcp_report.h"
#include "../src/rtx.h"
#include "../src/rtp.h"
#include "../src/rtp_stats.h"
#include "../src/rtx_buffer.h"
#include "../src/seqmgr.h"
#include "../src/srtp.h"
#include "../src/twcc.h"

#include "targets.h"

/* ------------------------------------------------------------------ RTP */

int sfu_fuzz_rtp(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    sfu_rtp_t p;
    if (sfu_rtp_parse(data, size, &p) < 0)
        return 0;
    sfu_rtp_ext_elem_t elems[SFU_RTP_MAX_EXTENSIONS];
    int n = sfu_rtp_ext_elements(data, &p, elems, SFU_RTP_MAX_EXTENSIONS);
    for (int i = 0; i < n; i++)
        if ((size_t)elems[i].offset + elems[i].length > size)
            abort(); /* an element outside the packet */
    uint8_t map[256];
    for (int i = 0; i < 256; i++)
        map[i] = (uint8_t)(size ? data[i % size] : 0);
    map[0] = 0;
    /* in place, with room to grow (as the engine's receive buffer) */
    size_t cap = size + 9000;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    size_t len = size;
    sfu_rtp_t q = p;
    if (sfu_rtp_map_extensions(buf, &len, cap, &q, map) == 0 && len > cap)
        abort();
    /* copied for a consumer that writes its own MID */
    uint8_t out[SFU_SLOT_SIZE];
    const uint8_t mid[] = "video-17";
    long w = sfu_rtp_copy_rewrite_extensions(out, sizeof(out), data, size, &p, map, (uint8_t)(1 + size % 255), mid,
                                             (uint8_t)(1 + size % 8));
    if (w > (long)sizeof(out))
        abort();
    if (w > 0 && sfu_rtp_parse(out, (size_t)w, &q) < 0)
        abort(); /* the rewrite must give a valid packet */
    for (int codec = SFU_CODEC_VP8; codec <= SFU_CODEC_H264; codec++)
        (void)sfu_is_keyframe(codec, data + p.header_length, p.payload_length);
    /* RTX both ways */
    len = size;
    memcpy(buf, data, size);
    if (sfu_rtx_decapsulate(buf, &len, 96, 0x1234) == 0 && len > size)
        abort();
    len = size;
    memcpy(buf, data, size);
    (void)sfu_rtx_encapsulate(buf, &len, cap, 97, 0x5678, 7);
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------ RTCP */

int sfu_fuzz_rtcp(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    sfu_rtcp_item_t items[64];
    int n = sfu_rtcp_parse_compound(data, size, items, 64);
    for (int i = 0; i < n; i++) {
        const uint8_t *pk = data + items[i].offset;
        size_t len = items[i].length;
        if ((size_t)items[i].offset + len > size)
            abort();
        uint16_t seqs[512];
        (void)sfu_rtcp_parse_nack(pk, len, seqs, 512);
        (void)sfu_rtcp_nack_media_ssrc(pk, len);
        uint32_t ssrc, rtp_ts, packets, octets;
        uint64_t ntp;
        (void)sfu_rtcp_parse_sr(pk, len, &ssrc, &ntp, &rtp_ts, &packets, &octets);
        sfu_report_block_t blocks[31];
        (void)sfu_rtcp_parse_report_blocks(pk, len, blocks, 31);
        uint64_t bps;
        uint32_t ssrcs[16];
        (void)sfu_remb_parse(pk, len, &bps, ssrcs, 16);
        uint16_t base, count;
        int32_t ref;
        uint8_t fb_count;
        static uint8_t statuses[65536];
        static int32_t deltas[65536];
        (void)sfu_twcc_parse_feedback(pk, len, &base, &count, &ref, &fb_count, statuses, deltas, 65536);
        uint32_t media;
        (void)sfu_rtcp_parse_pli(pk, len, &media);
        sfu_fir_entry_t fir[8];
        (void)sfu_rtcp_parse_fir(pk, len, fir, 8);
    }
    /* the per-type parsers also take a datagram the compound parser refused */
    uint32_t media;
    (void)sfu_rtcp_parse_pli(data, size, &media);
    sfu_fir_entry_t fir[8];
    (void)sfu_rtcp_parse_fir(data, size, fir, 8);
    uint16_t seqs[512];
    (void)sfu_rtcp_parse_nack(data, size, seqs, 512);
    sfu_report_block_t blocks[31];
    (void)sfu_rtcp_parse_report_blocks(data, size, blocks, 31);
    return 0;
}

/* ------------------------------------------------------------------ receive-side state machines */

/* The input is a list of (seq: u16, dt_ms: u8, flags: u8) records driving the
 * NACK generator, receive statistics, the packet store, the sequence map,
 * the sequence manager and the transport-cc receiver together. */
int sfu_fuzz_streams(const uint8_t *data, size_t size)
{
    sfu_nack_gen_t nack;
    sfu_rtp_stats_t stats;
    sfu_packet_store_t store;
    sfu_seq_map_t map;
    sfu_seqmgr_t seq;
    sfu_twcc_recv_t twcc;
    sfu_nack_init(&nack);
    sfu_rtp_stats_init(&stats, 90000);
    if (sfu_packet_store_init(&store, 64) < 0)
        return 0;
    sfu_seq_map_init(&map);
    sfu_seqmgr_init(&seq, size ? data[0] : 0);
    sfu_twcc_recv_init(&twcc);
    uint64_t now = 1000;
    uint8_t pkt[64] = {0x80, 96};
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint16_t s = (uint16_t)(data[i] << 8 | data[i + 1]);
        uint8_t dt = data[i + 2], fl = data[i + 3];
        now += dt;
        (void)sfu_nack_on_packet(&nack, s, fl & 1, now);
        uint16_t lost[128];
        (void)sfu_nack_poll(&nack, now, fl & 2 ? 0 : 100, lost, 128);
        (void)sfu_nack_keyframe_needed(&nack);
        (void)sfu_nack_next_deadline_ms(&nack, 100);
        (void)sfu_rtp_stats_update(&stats, s, (uint32_t)now * 90, now);
        pkt[2] = (uint8_t)(s >> 8);
        pkt[3] = (uint8_t)s;
        (void)sfu_packet_store_put(&store, s, pkt, 12 + (fl & 31), now);
        size_t len;
        (void)sfu_packet_store_get(&store, (uint16_t)(s - (fl >> 4)), &len, now, 1000);
        uint16_t out;
        if (fl & 4)
            sfu_seqmgr_drop(&seq, s);
        else if (fl & 8)
            sfu_seqmgr_sync(&seq, s);
        else if (sfu_seqmgr_input(&seq, s, &out))
            sfu_seq_map_put(&map, out, s);
        uint16_t in;
        (void)sfu_seq_map_get(&map, s, &in);
        (void)sfu_seq_map_may_resend(&map, s, now, 50);
        (void)sfu_twcc_on_packet(&twcc, s, now * 1000);
        if (fl & 16) {
            uint8_t fb[2048];
            (void)sfu_twcc_build_feedback(&twcc, fb, sizeof(fb), 1, 2);
        }
        if (fl & 32) {
            sfu_stats_block_t b;
            (void)sfu_rtp_stats_report_block(&stats, 0x1111, now, (uint32_t)now, now - dt, &b);
            (void)sfu_rtp_stats_score(&stats, fl);
        }
    }
    sfu_packet_store_free(&store);
    return 0;
}

/* ------------------------------------------------------------------ the engine */

/* A room configured like a browser call: a plain producer transport (VP8 with
 * RTX, NACK, transport-cc, MID/RID extensions), a comedia transport with an
 * SSRC-less producer (MID + RIDs, simulcast), an ICE transport with a bound
 * tuple, and consumers on each with their own MID, RTX and NACK. The engine
 * lives across inputs (as a server's does) and is renewed every 2,000
 * (SFU_FUZZ_RENEW). */
static sfu_engine_t *fuzz_engine;
static uint32_t fz_sock[4];
static unsigned fz_inputs;

static void addr4(struct sockaddr_in *a, uint32_t ip, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(ip);
    a->sin_port = htons(port);
}

static void engine_setup(void)
{
    sfu_engine_t *e = fuzz_engine = sfu_engine_new();
    if (!e)
        abort();
    for (int i = 0; i < 4; i++)
        fz_sock[i] = sfu_socket_add_locked(e, -1);
    struct sockaddr_in pub, view;
    addr4(&pub, 0x7f000001, 5000);
    addr4(&view, 0x7f000001, 7000);
    uint32_t t_pub = sfu_transport_add_locked(e, fz_sock[0], 0, 0);
    sfu_transport_connect_locked(e, t_pub, (struct sockaddr *)&pub, sizeof(pub), NULL, 0);
    uint32_t t_com = sfu_transport_add_locked(e, fz_sock[1], 0, SFU_TRANSPORT_COMEDIA);
    uint32_t t_ice = sfu_transport_add_locked(e, fz_sock[2], 0, SFU_TRANSPORT_ICE);
    sfu_tuple_bind_locked(e, fz_sock[2], (struct sockaddr *)&view, sizeof(view), t_ice);
    sfu_transport_connect_locked(e, t_ice, (struct sockaddr *)&view, sizeof(view), NULL, 0);
    /* the ICE transport is keyed (AES-GCM, both ways): its datagrams go through
     * SRTP/SRTCP unprotect, what it forwards through protect */
    static const uint8_t key[28] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28};
    if (sfu_transport_set_srtp_locked(e, t_ice, SFU_SRTP_AEAD_AES_128_GCM, key, sizeof(key), key, sizeof(key)) != 0)
        abort();
    uint32_t t_view = sfu_transport_add_locked(e, fz_sock[3], 0, 0);
    sfu_transport_connect_locked(e, t_view, (struct sockaddr *)&view, sizeof(view), NULL, 0);

    uint8_t pt_map[128], ext_map[256], apt[128], codecs[128];
    memset(pt_map, 0xff, sizeof(pt_map));
    pt_map[96] = 101;
    pt_map[97] = 102;
    memset(ext_map, 0, sizeof(ext_map));
    ext_map[1] = 1;   /* mid */
    ext_map[2] = 2;   /* rid */
    ext_map[3] = 3;   /* rrid */
    ext_map[5] = 5;   /* transport-cc */
    memset(apt, 0xff, sizeof(apt));
    apt[97] = 96;
    memset(codecs, 0, sizeof(codecs));
    codecs[101] = SFU_CODEC_VP8;
    uint32_t ssrcs[1] = {0x1111}, rtx[1] = {0x2222};
    uint32_t p1 = sfu_producer_add_locked(e, t_pub, 1, 1, ssrcs, rtx, pt_map, ext_map, 0);
    uint8_t codecs_vp9[128];
    memcpy(codecs_vp9, codecs, sizeof(codecs_vp9));
    codecs_vp9[101] = SFU_CODEC_VP9; /* one VP9 stream: its consumers are SVC consumers */
    sfu_producer_set_codecs_locked(e, p1, codecs_vp9);
    sfu_producer_set_feedback_locked(e, p1, 1, apt, 5, 30000, 90000);
    uint32_t none[3] = {0, 0, 0};
    uint32_t p2 = sfu_producer_add_locked(e, t_com, 1, 3, none, none, pt_map, ext_map, 0);
    sfu_producer_set_codecs_locked(e, p2, codecs);
    sfu_producer_set_feedback_locked(e, p2, 1, apt, 5, 30000, 90000);
    const char *rids[3] = {"q", "h", "f"};
    sfu_producer_set_rtp_ids_locked(e, p2, "v", rids, 1, 2, 3);
    uint32_t p3 = sfu_producer_add_locked(e, t_ice, 0, 1, (uint32_t[]){0x3333}, NULL, pt_map, ext_map, 0);

    uint8_t c_pt[128], c_ext[256];
    memset(c_pt, 0xff, sizeof(c_pt));
    c_pt[101] = 96;
    c_pt[102] = 97;
    memset(c_ext, 0, sizeof(c_ext));
    c_ext[5] = 7;
    uint32_t producers[3] = {p1, p2, p3};
    uint32_t transports[2] = {t_ice, t_view};
    uint32_t next_ssrc = 0xC000;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 2; j++) {
            uint32_t c = sfu_consumer_add_locked(e, transports[j], producers[i], next_ssrc, next_ssrc + 1, 90000,
                                                 c_pt, c_ext, 0, (uint16_t)(1000 * i + j));
            next_ssrc += 2;
            sfu_consumer_set_feedback_locked(e, c, 1, (j == 0) ? 97 : 0);
            sfu_consumer_set_mid_locked(e, c, (uint8_t)(j == 0 ? 1 : 14), j == 0 ? "0" : "video-long-mid");
            if (i == 1) /* the simulcast producer: one viewer wants its top layer */
                sfu_consumer_set_target_stream_locked(e, c, j == 0 ? 2 : 1);
            if (i < 2) { /* video: our transport-wide numbering, the estimate, the allocation, probes */
                sfu_consumer_set_twcc_locked(e, c, (uint8_t)(j == 0 ? 9 : 3), j == 1);
                sfu_consumer_set_priority_locked(e, c, 1 + j);
            }
        }
    }
}

static uint64_t fz_sent; /* datagrams the engine queued to send, all engines */

static void drain(sfu_engine_t *e)
{
    fz_sent += sfu_outbox_count(e);
    sfu_outbox_clear(e);
    sfu_upcall_t up;
    while (sfu_upcall_pop_locked(e, &up))
        free(up.data);
}

/* The input is a list of records: [socket: 1 byte][source: 1 byte]
 * [dt_ms: 1 byte][len: 2 bytes][datagram: len bytes]. */
int sfu_fuzz_engine(const uint8_t *data, size_t size)
{
    static unsigned renew;
    if (!renew) {
        const char *r = getenv("SFU_FUZZ_RENEW");
        renew = r && atoi(r) > 0 ? (unsigned)atoi(r) : 2000;
    }
    if (!fuzz_engine || ++fz_inputs % renew == 0) {
        if (fuzz_engine)
            sfu_engine_free(fuzz_engine);
        engine_setup();
    }
    sfu_engine_t *e = fuzz_engine;
    static uint64_t now = 10000;
    static const uint16_t ports[4] = {5000, 7000, 5004, 5005};
    uint8_t buf[SFU_MAX_DATAGRAM + SFU_SRTP_TRAILER_ROOM + 64];
    size_t i = 0;
    while (i + 5 <= size) {
        uint8_t sock = data[i], src = data[i + 1], dt = data[i + 2];
        size_t len = (size_t)(data[i + 3] << 8 | data[i + 4]) % (SFU_MAX_DATAGRAM + 64);
        i += 5;
        if (len > size - i)
            len = size - i;
        memcpy(buf, data + i, len);
        i += len;
        now += dt;
        struct sockaddr_in a;
        addr4(&a, 0x7f000001 + (src >> 4), ports[src & 3]);
        sfu_engine_receive(e, fz_sock[sock & 3], (struct sockaddr *)&a, sizeof(a), buf, len, sizeof(buf), now);
        if (dt & 1)
            (void)sfu_engine_tick(e, now);
        if (dt & 2)
            drain(e);
    }
    drain(e);
    return 0;
}

/* ------------------------------------------------------------------ SRTP */

/* Contexts of each profile with a fixed key, kept across inputs (the stream
 * tables fill up to their cap) and created again every 4096 inputs. */
#define FZ_SRTP_PROFILES 4
static sfu_srtp_t *fz_srtp_out[FZ_SRTP_PROFILES], *fz_srtp_in[FZ_SRTP_PROFILES];
static unsigned fz_srtp_inputs;
static unsigned long long fz_srtp_round_trips; /* protected and unprotected back to the same bytes */

static void fz_srtp_free(void)
{
    for (int i = 0; i < FZ_SRTP_PROFILES; i++) {
        sfu_srtp_free(fz_srtp_out[i]);
        sfu_srtp_free(fz_srtp_in[i]);
        fz_srtp_out[i] = fz_srtp_in[i] = NULL;
    }
}

/* unprotect of a copy of exactly `size` bytes (ASan sees any read past it) */
static void fz_srtp_unprotect(sfu_srtp_t *in, const uint8_t *data, size_t size, int rtcp)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return;
    memcpy(buf, data, size);
    size_t len = size;
    int rc = rtcp ? sfu_srtp_unprotect_rtcp(in, buf, &len) : sfu_srtp_unprotect(in, buf, &len);
    if (rc == 0 && len >= size)
        abort(); /* a tag or trailer must have been removed */
    if (rc != 0 && len != size)
        abort();
    free(buf);
}

/* protect arbitrary bytes; what is protected must unprotect to the same
 * bytes on the inbound context (or be refused as a replay / over the cap) */
static void fz_srtp_round_trip(sfu_srtp_t *out, sfu_srtp_t *in, const uint8_t *data, size_t size, int rtcp)
{
    size_t cap = size + sfu_srtp_max_overhead();
    uint8_t *buf = malloc(cap);
    if (!buf)
        return;
    /* a buffer with no room must be refused without a write past it */
    memcpy(buf, data, size);
    size_t len = size;
    int rc = rtcp ? sfu_srtp_protect_rtcp(out, buf, &len, size) : sfu_srtp_protect(out, buf, &len, size);
    if (rc == 0 || len != size)
        abort();
    memcpy(buf, data, size);
    rc = rtcp ? sfu_srtp_protect_rtcp(out, buf, &len, cap) : sfu_srtp_protect(out, buf, &len, cap);
    if (rc != 0) {
        if (len != size)
            abort();
        free(buf);
        return;
    }
    if (len <= size || len > cap)
        abort();
    rc = rtcp ? sfu_srtp_unprotect_rtcp(in, buf, &len) : sfu_srtp_unprotect(in, buf, &len);
    if (rc == 0 && (len != size || memcmp(buf, data, size) != 0))
        abort(); /* the round trip changed the packet */
    fz_srtp_round_trips += rc == 0;
    if (rc != 0 && rc != SFU_SRTP_E_REPLAY && rc != SFU_SRTP_E_TOO_MANY_STREAMS)
        abort(); /* our own packet failed authentication */
    free(buf);
}

int sfu_fuzz_srtp(const uint8_t *data, size_t size)
{
    static const int profiles[FZ_SRTP_PROFILES] = {SFU_SRTP_AES128_CM_SHA1_80, SFU_SRTP_AES128_CM_SHA1_32,
                                                   SFU_SRTP_AEAD_AES_128_GCM, SFU_SRTP_AEAD_AES_256_GCM};
    static const size_t key_len[FZ_SRTP_PROFILES] = {30, 30, 28, 44};
    uint8_t key[44];
    if (size > 4096)
        return 0;
    if (fz_srtp_inputs++ % 4096 == 0)
        fz_srtp_free();
    for (int i = 0; i < FZ_SRTP_PROFILES; i++) {
        if (!fz_srtp_out[i]) {
            for (size_t k = 0; k < sizeof(key); k++)
                key[k] = (uint8_t)(0x41 + 13 * k);
            fz_srtp_out[i] = sfu_srtp_new(profiles[i], key, key_len[i], 1);
            fz_srtp_in[i] = sfu_srtp_new(profiles[i], key, key_len[i], 0);
            if (!fz_srtp_out[i] || !fz_srtp_in[i] || sfu_srtp_new(profiles[i], key, key_len[i] - 1, 0))
                abort();
        }
        fz_srtp_unprotect(fz_srtp_in[i], data, size, 0);
        fz_srtp_unprotect(fz_srtp_in[i], data, size, 1);
        fz_srtp_round_trip(fz_srtp_out[i], fz_srtp_in[i], data, size, 0);
        fz_srtp_round_trip(fz_srtp_out[i], fz_srtp_in[i], data, size, 1);
        if (size >= 12 && (data[size - 1] & 0x3f) == 0) {
            /* now and then forget the RTP SSRC on both sides (neither keeps state for it) */
            uint32_t ssrc = (uint32_t)data[8] << 24 | (uint32_t)data[9] << 16 | (uint32_t)data[10] << 8 | data[11];
            sfu_srtp_remove_stream(fz_srtp_out[i], ssrc);
            sfu_srtp_remove_stream(fz_srtp_in[i], ssrc);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ dispatch */

const sfu_fuzz_target_t sfu_fuzz_targets[] = {
    {"rtp", sfu_fuzz_rtp},
    {"rtcp", sfu_fuzz_rtcp},
    {"streams", sfu_fuzz_streams},
    {"engine", sfu_fuzz_engine},
    {"srtp", sfu_fuzz_srtp},
    {"rtcp_xr", sfu_fuzz_rtcp_xr},
    {"gcc", sfu_fuzz_gcc},
    {"vp8", sfu_fuzz_vp8},
    {NULL, NULL},
};

const sfu_fuzz_target_t *sfu_fuzz_find(const char *name)
{
    for (const sfu_fuzz_target_t *t = sfu_fuzz_targets; name && t->name; t++)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

void sfu_fuzz_cleanup(void)
{
    if (fz_srtp_inputs && getenv("SFU_FUZZ_STATS"))
        fprintf(stderr, "srtp: round trips %llu\n", fz_srtp_round_trips);
    fz_srtp_free();
    if (fuzz_engine && getenv("SFU_FUZZ_STATS")) {
        /* what the last engine saw: shows the inputs reach forwarding */
        const uint64_t *c = fuzz_engine->counters;
        fprintf(stderr, "engine: rx_rtp %llu rx_rtcp %llu rx_stun %llu queued to send (all engines) %llu ssrc_learned %llu "
                "tx_retransmissions %llu tx_pli %llu drop_rtp_malformed %llu drop_unknown_ssrc %llu\n",
                (unsigned long long)c[SFU_C_RX_RTP], (unsigned long long)c[SFU_C_RX_RTCP],
                (unsigned long long)c[SFU_C_RX_STUN], (unsigned long long)fz_sent,
                (unsigned long long)c[SFU_C_SSRC_LEARNED], (unsigned long long)c[SFU_C_TX_RETRANSMISSIONS],
                (unsigned long long)c[SFU_C_TX_PLI], (unsigned long long)c[SFU_C_DROP_RTP_MALFORMED],
                (unsigned long long)c[SFU_C_DROP_UNKNOWN_SSRC]);
    }
    if (fuzz_engine)
        sfu_engine_free(fuzz_engine);
    fuzz_engine = NULL;
}

#ifdef SFU_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const sfu_fuzz_target_t *t;
    if (!t) {
        t = sfu_fuzz_find(getenv("SFU_FUZZ_TARGET"));
        if (!t)
            abort(); /* set SFU_FUZZ_TARGET to rtp, rtcp, streams or engine */
    }
    return t->fn(data, size);
}
#endif
