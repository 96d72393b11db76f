/* SRTP and SRTCP (RFC 3711, RFC 7714) on OpenSSL's libcrypto; see srtp.h.
 *
 * Per context: the session keys are derived once (RFC 3711 §4.3, AES-CM
 * PRF, key derivation rate 0); one EVP_CIPHER_CTX for RTP and one for RTCP
 * hold the key schedule, and each packet only sets the IV. HMAC-SHA1 keeps
 * the SHA-1 states after the key's inner and outer pads and copies them per
 * packet (no allocation; EVP_MAC's re-init duplicates digest contexts on
 * the heap in OpenSSL 3.0). Build with -DSFU_SRTP_HMAC_EVP_MAC (or on an
 * OpenSSL without the deprecated SHA1_* API) to use EVP_MAC instead.
 */
#if !defined(SFU_SRTP_HMAC_EVP_MAC)
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA1_Init/Update/Final: precomputed HMAC pads */
#endif
#include "srtp.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#if defined(OPENSSL_NO_DEPRECATED_3_0) && !defined(SFU_SRTP_HMAC_EVP_MAC)
#define SFU_SRTP_HMAC_EVP_MAC 1
#endif
#ifdef SFU_SRTP_HMAC_EVP_MAC
#include <openssl/core_names.h>
#include <openssl/params.h>
#endif

#define GCM_TAG 16
#define SRTCP_TRAILER 4
#define SRTCP_E 0x80000000u
#define MAX_PACKET 65535u
#define TABLE_MIN_BITS 4

/* ------------------------------------------------------------------ streams */

typedef struct {
    __uint128_t rtp_window;  /* inbound: bit i set = index rtp_index - i accepted */
    __uint128_t rtcp_window; /* inbound: bit i set = SRTCP index rtcp_index - i accepted */
    uint64_t rtp_index;      /* highest 48-bit RTP index (ROC << 16 | SEQ) protected/accepted */
    uint32_t ssrc;
    uint32_t rtcp_index;     /* outbound: last SRTCP index sent; inbound: highest accepted */
    uint8_t used;
    uint8_t rtp_set;         /* rtp_index is valid (an RTP packet was seen) */
    uint8_t rtcp_set;
} stream_t;

/* ------------------------------------------------------------------ HMAC-SHA1 */

#ifndef SFU_SRTP_HMAC_EVP_MAC
typedef struct {
    SHA_CTX inner, outer; /* SHA-1 after (key ^ ipad) and after (key ^ opad) */
} hmac_t;

static int hmac_init(hmac_t *h, const uint8_t *key, size_t n)
{
    uint8_t pad[64];
    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < n; i++)
        pad[i] ^= key[i];
    if (!SHA1_Init(&h->inner) || !SHA1_Update(&h->inner, pad, 64))
        return -1;
    memset(pad, 0x5c, sizeof(pad));
    for (size_t i = 0; i < n; i++)
        pad[i] ^= key[i];
    if (!SHA1_Init(&h->outer) || !SHA1_Update(&h->outer, pad, 64))
        return -1;
    OPENSSL_cleanse(pad, sizeof(pad));
    return 0;
}

/* HMAC-SHA1(a || b) into out[20] */
static int hmac(hmac_t *h, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t out[20])
{
    SHA_CTX c = h->inner;
    SHA1_Update(&c, a, an);
    SHA1_Update(&c, b, bn);
    SHA1_Final(out, &c);
    c = h->outer;
    SHA1_Update(&c, out, 20);
    SHA1_Final(out, &c);
    return 0;
}

static void hmac_free(hmac_t *h) { OPENSSL_cleanse(h, sizeof(*h)); }
#else
typedef struct {
    EVP_MAC_CTX *ctx;
} hmac_t;

static int hmac_init(hmac_t *h, const uint8_t *key, size_t n)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return -1;
    h->ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (!h->ctx)
        return -1;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA1", 0), OSSL_PARAM_construct_end()};
    return EVP_MAC_init(h->ctx, key, n, params) ? 0 : -1;
}

static int hmac(hmac_t *h, const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t out[20])
{
    size_t outl = 0;
    if (!EVP_MAC_init(h->ctx, NULL, 0, NULL) || !EVP_MAC_update(h->ctx, a, an) || !EVP_MAC_update(h->ctx, b, bn) ||
        !EVP_MAC_final(h->ctx, out, &outl, 20) || outl != 20)
        return -1;
    return 0;
}

static void hmac_free(hmac_t *h)
{
    EVP_MAC_CTX_free(h->ctx);
    h->ctx = NULL;
}
#endif

/* ------------------------------------------------------------------ context */

struct sfu_srtp {
    int profile;
    int outbound;
    int gcm;
    size_t rtp_tag;  /* 10 or 4 (AES-CM), 16 (GCM) */
    size_t rtcp_tag; /* 10 (both AES-CM profiles, RFC 5764 §4.1.2), 16 (GCM) */
    EVP_CIPHER_CTX *rtp_cipher, *rtcp_cipher;
    /* stream table: open addressing, linear probing, 2^bits slots, at most half full */
    stream_t *slots;
    uint32_t bits;
    uint32_t count;
    uint8_t rtp_salt[14], rtcp_salt[14]; /* session salts (12 bytes used for GCM) */
    /* (the fields above are read for every packet: in the first cache lines) */
    hmac_t rtp_mac, rtcp_mac; /* AES-CM profiles only */
};

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t slot_of(uint32_t ssrc, uint32_t bits) { return (uint32_t)(ssrc * 2654435761u) >> (32 - bits); }

void sfu_srtp_prefetch(const sfu_srtp_t *s, uint32_t ssrc)
{
    __builtin_prefetch(&s->slots[slot_of(ssrc, s->bits)]);
}

static stream_t *stream_find(sfu_srtp_t *s, uint32_t ssrc)
{
    uint32_t mask = (1u << s->bits) - 1;
    for (uint32_t i = slot_of(ssrc, s->bits);; i = (i + 1) & mask) {
        stream_t *st = &s->slots[i];
        if (!st->used)
            return NULL;
        if (st->ssrc == ssrc)
            return st;
    }
}

/* Makes room for one more stream: SFU_SRTP_E_TOO_MANY_STREAMS at the cap,
 * or doubles the table when it would pass half full. */
static int stream_reserve(sfu_srtp_t *s)
{
    if (s->count >= SFU_SRTP_MAX_STREAMS)
        return SFU_SRTP_E_TOO_MANY_STREAMS;
    if ((s->count + 1) * 2 <= (1u << s->bits))
        return 0;
    uint32_t bits = s->bits + 1, mask = (1u << bits) - 1;
    stream_t *slots = calloc((size_t)1 << bits, sizeof(stream_t));
    if (!slots)
        return SFU_SRTP_E_NO_MEMORY;
    for (uint32_t j = 0; j < (1u << s->bits); j++) {
        if (!s->slots[j].used)
            continue;
        uint32_t i = slot_of(s->slots[j].ssrc, bits);
        while (slots[i].used)
            i = (i + 1) & mask;
        slots[i] = s->slots[j];
    }
    free(s->slots);
    s->slots = slots;
    s->bits = bits;
    return 0;
}

/* Inserts an SSRC known to be absent; stream_reserve must have succeeded. */
static stream_t *stream_insert(sfu_srtp_t *s, uint32_t ssrc)
{
    uint32_t mask = (1u << s->bits) - 1, i = slot_of(ssrc, s->bits);
    while (s->slots[i].used)
        i = (i + 1) & mask;
    stream_t *st = &s->slots[i];
    memset(st, 0, sizeof(*st));
    st->used = 1;
    st->ssrc = ssrc;
    s->count++;
    return st;
}

static int stream_get(sfu_srtp_t *s, uint32_t ssrc, stream_t **out)
{
    stream_t *st = stream_find(s, ssrc);
    if (!st) {
        int rc = stream_reserve(s);
        if (rc)
            return rc;
        st = stream_insert(s, ssrc);
    }
    *out = st;
    return 0;
}

int sfu_srtp_remove_stream(sfu_srtp_t *s, uint32_t ssrc)
{
    uint32_t mask = (1u << s->bits) - 1;
    stream_t *st = stream_find(s, ssrc);
    if (!st)
        return 0;
    /* backward-shift deletion: move later members of the probe run into the hole */
    uint32_t hole = (uint32_t)(st - s->slots);
    for (uint32_t j = (hole + 1) & mask; s->slots[j].used; j = (j + 1) & mask) {
        uint32_t home = slot_of(s->slots[j].ssrc, s->bits);
        /* j may move to the hole unless its home lies cyclically in (hole, j] */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            s->slots[hole] = s->slots[j];
            hole = j;
        }
    }
    memset(&s->slots[hole], 0, sizeof(stream_t));
    s->count--;
    return 1;
}

size_t sfu_srtp_stream_count(const sfu_srtp_t *s) { return s->count; }
int sfu_srtp_profile(const sfu_srtp_t *s) { return s->profile; }
size_t sfu_srtp_max_overhead(void) { return GCM_TAG + SRTCP_TRAILER; }

/* ------------------------------------------------------------------ key derivation */

/* RFC 3711 §4.3.3 AES-CM PRF with kdr 0: the keystream of the master key
 * with IV = (master salt ^ label at octet 7) || 0x0000, n bytes. The salt
 * is 14 bytes, or 12 (GCM, RFC 7714 §11) padded with two zero bytes. */
static int kdf(const EVP_CIPHER *aes_ctr, const uint8_t *key, const uint8_t *salt, size_t salt_len, uint8_t label,
               uint8_t *out, size_t n)
{
    uint8_t iv[16] = {0};
    memcpy(iv, salt, salt_len);
    iv[7] ^= label;
    memset(out, 0, n);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl = 0, ok = c && EVP_EncryptInit_ex(c, aes_ctr, NULL, key, iv) && EVP_EncryptUpdate(c, out, &outl, out, (int)n);
    EVP_CIPHER_CTX_free(c);
    return ok && outl == (int)n ? 0 : -1;
}

sfu_srtp_t *sfu_srtp_new(int profile, const uint8_t *mk, size_t len, int outbound)
{
    size_t key_len, salt_len;
    const EVP_CIPHER *ctr, *cipher;
    switch (profile) {
    case SFU_SRTP_AES128_CM_SHA1_80:
    case SFU_SRTP_AES128_CM_SHA1_32:
        key_len = 16, salt_len = 14, ctr = cipher = EVP_aes_128_ctr();
        break;
    case SFU_SRTP_AEAD_AES_128_GCM:
        key_len = 16, salt_len = 12, ctr = EVP_aes_128_ctr(), cipher = EVP_aes_128_gcm();
        break;
    case SFU_SRTP_AEAD_AES_256_GCM:
        key_len = 32, salt_len = 12, ctr = EVP_aes_256_ctr(), cipher = EVP_aes_256_gcm();
        break;
    default:
        return NULL;
    }
    if (!mk || len != key_len + salt_len)
        return NULL;
    sfu_srtp_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->profile = profile;
    s->outbound = !!outbound;
    s->gcm = profile >= SFU_SRTP_AEAD_AES_128_GCM;
    s->rtp_tag = s->gcm ? GCM_TAG : profile == SFU_SRTP_AES128_CM_SHA1_32 ? 4 : 10;
    s->rtcp_tag = s->gcm ? GCM_TAG : 10;
    s->bits = TABLE_MIN_BITS;
    s->slots = calloc((size_t)1 << s->bits, sizeof(stream_t));
    s->rtp_cipher = EVP_CIPHER_CTX_new();
    s->rtcp_cipher = EVP_CIPHER_CTX_new();
    if (!s->slots || !s->rtp_cipher || !s->rtcp_cipher)
        goto fail;

    const uint8_t *master_salt = mk + key_len;
    uint8_t k[32], a[20];
    int ok = 1;
    /* labels: SRTP 0 key, 1 auth, 2 salt; SRTCP 3 key, 4 auth, 5 salt */
    for (int rtcp = 0; rtcp < 2 && ok; rtcp++) {
        uint8_t base = rtcp ? 3 : 0;
        EVP_CIPHER_CTX *c = rtcp ? s->rtcp_cipher : s->rtp_cipher;
        uint8_t *salt = rtcp ? s->rtcp_salt : s->rtp_salt;
        ok = kdf(ctr, mk, master_salt, salt_len, base, k, key_len) == 0 &&
             kdf(ctr, mk, master_salt, salt_len, base + 2, salt, salt_len) == 0;
        /* AES-CTR encrypts and decrypts alike; GCM is set up for the context's direction */
        if (ok)
            ok = (s->gcm && !s->outbound) ? EVP_DecryptInit_ex(c, cipher, NULL, k, NULL)
                                          : EVP_EncryptInit_ex(c, cipher, NULL, k, NULL);
        if (ok && !s->gcm)
            ok = kdf(ctr, mk, master_salt, salt_len, base + 1, a, sizeof(a)) == 0 &&
                 hmac_init(rtcp ? &s->rtcp_mac : &s->rtp_mac, a, sizeof(a)) == 0;
    }
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(a, sizeof(a));
    if (ok)
        return s;
fail:
    sfu_srtp_free(s);
    return NULL;
}

void sfu_srtp_free(sfu_srtp_t *s)
{
    if (!s)
        return;
    EVP_CIPHER_CTX_free(s->rtp_cipher);
    EVP_CIPHER_CTX_free(s->rtcp_cipher);
    if (!s->gcm) {
        hmac_free(&s->rtp_mac);
        hmac_free(&s->rtcp_mac);
    }
    free(s->slots);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

/* ------------------------------------------------------------------ packet index and replay */

/* RFC 3711 Appendix A: the 48-bit index of SEQ given the highest index so
 * far; the ROC guess is never below 0 (as libsrtp: while the highest index
 * is small the sequence number cannot have wrapped). -1 past ROC 2^32-1. */
static inline int estimate_index(uint64_t highest, uint16_t seq, uint64_t *index)
{
    int64_t roc = (int64_t)(highest >> 16);
    uint16_t s_l = (uint16_t)highest;
    if (s_l < 32768) {
        if (seq > s_l && seq - s_l > 32768)
            roc -= 1;
    } else if (s_l - 32768 > seq) {
        roc += 1;
    }
    if (roc < 0)
        roc = 0;
    if (roc > 0xffffffffLL)
        return -1;
    *index = (uint64_t)roc << 16 | seq;
    return 0;
}

/* Inbound replay check against a 128-bit window (highest, window). */
static inline int replay_check(int set, uint64_t highest, __uint128_t window, uint64_t index)
{
    if (!set || index > highest)
        return 0;
    uint64_t back = highest - index;
    if (back >= SFU_SRTP_REPLAY_WINDOW)
        return SFU_SRTP_E_REPLAY;
    return (window >> back) & 1 ? SFU_SRTP_E_REPLAY : 0;
}

static inline void replay_add(uint8_t *set, uint64_t *highest, __uint128_t *window, uint64_t index)
{
    if (!*set) {
        *set = 1;
        *highest = index;
        *window = 1;
    } else if (index > *highest) {
        uint64_t d = index - *highest;
        *window = d >= SFU_SRTP_REPLAY_WINDOW ? 1 : (*window << d) | 1;
        *highest = index;
    } else {
        *window |= (__uint128_t)1 << (*highest - index);
    }
}

/* ------------------------------------------------------------------ RTP */

/* Length of the RTP header with CSRCs and extension, or -1. */
static inline long rtp_header_length(const uint8_t *buf, size_t len)
{
    if (len < 12 || (buf[0] >> 6) != 2)
        return -1;
    size_t h = 12 + 4 * (size_t)(buf[0] & 0x0f);
    if (buf[0] & 0x10) {
        if (len < h + 4)
            return -1;
        h += 4 + 4 * (size_t)rd16(buf + h + 2);
    }
    return h <= len ? (long)h : -1;
}

static inline void cm_iv(uint8_t iv[16], const uint8_t salt[14], uint32_t ssrc, uint64_t index)
{
    memcpy(iv, salt, 14);
    iv[14] = iv[15] = 0;
    iv[4] ^= (uint8_t)(ssrc >> 24), iv[5] ^= (uint8_t)(ssrc >> 16), iv[6] ^= (uint8_t)(ssrc >> 8), iv[7] ^= (uint8_t)ssrc;
    for (int i = 0; i < 6; i++)
        iv[8 + i] ^= (uint8_t)(index >> (40 - 8 * i));
}

/* RFC 7714 §8.1 / §9.1: 00 00 || SSRC || ROC or 00 00 || SEQ or index, xor salt */
static inline void gcm_iv(uint8_t iv[12], const uint8_t salt[12], uint32_t ssrc, uint32_t hi, uint32_t lo16_or_32,
                          int lo_bytes)
{
    memcpy(iv, salt, 12);
    iv[2] ^= (uint8_t)(ssrc >> 24), iv[3] ^= (uint8_t)(ssrc >> 16), iv[4] ^= (uint8_t)(ssrc >> 8), iv[5] ^= (uint8_t)ssrc;
    if (lo_bytes == 2) { /* RTP: ROC (4) || SEQ (2) in octets 6..11 */
        iv[6] ^= (uint8_t)(hi >> 24), iv[7] ^= (uint8_t)(hi >> 16), iv[8] ^= (uint8_t)(hi >> 8), iv[9] ^= (uint8_t)hi;
        iv[10] ^= (uint8_t)(lo16_or_32 >> 8), iv[11] ^= (uint8_t)lo16_or_32;
    } else { /* RTCP: 00 00 || 0 || index (31 bits) in octets 6..11 */
        iv[8] ^= (uint8_t)(lo16_or_32 >> 24), iv[9] ^= (uint8_t)(lo16_or_32 >> 16);
        iv[10] ^= (uint8_t)(lo16_or_32 >> 8), iv[11] ^= (uint8_t)lo16_or_32;
    }
}

static inline int ctr_xor(EVP_CIPHER_CTX *c, const uint8_t iv[16], uint8_t *p, size_t n)
{
    int outl = 0;
    if (!EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv))
        return -1;
    if (n && (!EVP_EncryptUpdate(c, p, &outl, p, (int)n) || outl != (int)n))
        return -1;
    return 0;
}

/* AES-GCM seal in place: aad1||aad2 authenticated, p[0..n) encrypted, tag written */
static int gcm_seal(EVP_CIPHER_CTX *c, const uint8_t iv[12], const uint8_t *aad1, size_t a1, const uint8_t *aad2,
                    size_t a2, uint8_t *p, size_t n, uint8_t *tag)
{
    int outl = 0;
    if (!EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv))
        return -1;
    if (a1 && !EVP_EncryptUpdate(c, NULL, &outl, aad1, (int)a1))
        return -1;
    if (a2 && !EVP_EncryptUpdate(c, NULL, &outl, aad2, (int)a2))
        return -1;
    if (n && (!EVP_EncryptUpdate(c, p, &outl, p, (int)n) || outl != (int)n))
        return -1;
    if (!EVP_EncryptFinal_ex(c, p + n, &outl) || outl != 0)
        return -1;
    return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, GCM_TAG, tag) ? 0 : -1;
}

/* AES-GCM open in place: 0, SFU_SRTP_E_AUTH or SFU_SRTP_E_CRYPTO */
static int gcm_open(EVP_CIPHER_CTX *c, const uint8_t iv[12], const uint8_t *aad1, size_t a1, const uint8_t *aad2,
                    size_t a2, uint8_t *p, size_t n, const uint8_t *tag)
{
    int outl = 0;
    if (!EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv))
        return SFU_SRTP_E_CRYPTO;
    if (a1 && !EVP_DecryptUpdate(c, NULL, &outl, aad1, (int)a1))
        return SFU_SRTP_E_CRYPTO;
    if (a2 && !EVP_DecryptUpdate(c, NULL, &outl, aad2, (int)a2))
        return SFU_SRTP_E_CRYPTO;
    if (n && (!EVP_DecryptUpdate(c, p, &outl, p, (int)n) || outl != (int)n))
        return SFU_SRTP_E_CRYPTO;
    if (!EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG, (void *)tag))
        return SFU_SRTP_E_CRYPTO;
    uint8_t end[16];
    return EVP_DecryptFinal_ex(c, end, &outl) > 0 ? 0 : SFU_SRTP_E_AUTH;
}

int sfu_srtp_protect(sfu_srtp_t *s, uint8_t *buf, size_t *len, size_t cap)
{
    if (!s->outbound)
        return SFU_SRTP_E_DIRECTION;
    size_t n = *len;
    long h = n <= MAX_PACKET ? rtp_header_length(buf, n) : -1;
    if (h < 0)
        return SFU_SRTP_E_MALFORMED;
    if (cap < n + s->rtp_tag || n + s->rtp_tag > MAX_PACKET)
        return SFU_SRTP_E_NO_ROOM;
    uint16_t seq = rd16(buf + 2);
    uint32_t ssrc = rd32(buf + 8);
    stream_t *st;
    int rc = stream_get(s, ssrc, &st);
    if (rc)
        return rc;
    uint64_t index = seq;
    if (st->rtp_set && estimate_index(st->rtp_index, seq, &index) < 0)
        return SFU_SRTP_E_EXHAUSTED;
    uint32_t roc = (uint32_t)(index >> 16);
    if (s->gcm) {
        uint8_t iv[12];
        gcm_iv(iv, s->rtp_salt, ssrc, roc, seq, 2);
        if (gcm_seal(s->rtp_cipher, iv, buf, (size_t)h, NULL, 0, buf + h, n - (size_t)h, buf + n) < 0)
            return SFU_SRTP_E_CRYPTO;
    } else {
        uint8_t iv[16], rocb[4], tag[20];
        cm_iv(iv, s->rtp_salt, ssrc, index);
        if (ctr_xor(s->rtp_cipher, iv, buf + h, n - (size_t)h) < 0)
            return SFU_SRTP_E_CRYPTO;
        wr32(rocb, roc);
        if (hmac(&s->rtp_mac, buf, n, rocb, 4, tag) < 0)
            return SFU_SRTP_E_CRYPTO;
        memcpy(buf + n, tag, s->rtp_tag);
    }
    /* allow_repeat_tx: an index already sent is protected again; the highest only moves forward */
    if (!st->rtp_set || index > st->rtp_index) {
        st->rtp_set = 1;
        st->rtp_index = index;
    }
    *len = n + s->rtp_tag;
    return 0;
}

int sfu_srtp_unprotect(sfu_srtp_t *s, uint8_t *buf, size_t *len)
{
    if (s->outbound)
        return SFU_SRTP_E_DIRECTION;
    size_t n = *len;
    long h = n <= MAX_PACKET ? rtp_header_length(buf, n) : -1;
    if (h < 0 || n < (size_t)h + s->rtp_tag)
        return SFU_SRTP_E_MALFORMED;
    uint16_t seq = rd16(buf + 2);
    uint32_t ssrc = rd32(buf + 8);
    stream_t *st = stream_find(s, ssrc);
    uint64_t index = seq;
    if (st && st->rtp_set) {
        if (estimate_index(st->rtp_index, seq, &index) < 0)
            return SFU_SRTP_E_REPLAY;
        int rc = replay_check(1, st->rtp_index, st->rtp_window, index);
        if (rc)
            return rc;
    } else if (!st) {
        int rc = stream_reserve(s); /* room for the stream before any work; created after authentication */
        if (rc)
            return rc;
    }
    uint32_t roc = (uint32_t)(index >> 16);
    size_t body = n - s->rtp_tag; /* header + encrypted payload */
    if (s->gcm) {
        uint8_t iv[12];
        gcm_iv(iv, s->rtp_salt, ssrc, roc, seq, 2);
        int rc = gcm_open(s->rtp_cipher, iv, buf, (size_t)h, NULL, 0, buf + h, body - (size_t)h, buf + body);
        if (rc)
            return rc;
    } else {
        uint8_t iv[16], rocb[4], tag[20];
        wr32(rocb, roc);
        if (hmac(&s->rtp_mac, buf, body, rocb, 4, tag) < 0)
            return SFU_SRTP_E_CRYPTO;
        if (CRYPTO_memcmp(tag, buf + body, s->rtp_tag) != 0)
            return SFU_SRTP_E_AUTH;
        cm_iv(iv, s->rtp_salt, ssrc, index);
        if (ctr_xor(s->rtp_cipher, iv, buf + h, body - (size_t)h) < 0)
            return SFU_SRTP_E_CRYPTO;
    }
    if (!st)
        st = stream_insert(s, ssrc);
    replay_add(&st->rtp_set, &st->rtp_index, &st->rtp_window, index);
    *len = body;
    return 0;
}

/* ------------------------------------------------------------------ RTCP */

int sfu_srtp_protect_rtcp(sfu_srtp_t *s, uint8_t *buf, size_t *len, size_t cap)
{
    if (!s->outbound)
        return SFU_SRTP_E_DIRECTION;
    size_t n = *len, add = SRTCP_TRAILER + s->rtcp_tag;
    if (n < 8 || n > MAX_PACKET || (buf[0] >> 6) != 2)
        return SFU_SRTP_E_MALFORMED;
    if (cap < n + add || n + add > MAX_PACKET)
        return SFU_SRTP_E_NO_ROOM;
    uint32_t ssrc = rd32(buf + 4);
    stream_t *st;
    int rc = stream_get(s, ssrc, &st);
    if (rc)
        return rc;
    if (st->rtcp_index >= 0x7fffffffu)
        return SFU_SRTP_E_EXHAUSTED;
    uint32_t index = st->rtcp_index + 1; /* the first SRTCP index is 1 (as libsrtp) */
    uint8_t trailer[4];
    wr32(trailer, SRTCP_E | index);
    if (s->gcm) {
        uint8_t iv[12];
        gcm_iv(iv, s->rtcp_salt, ssrc, 0, index, 4);
        /* AAD: the first 8 octets || E || index; then the tag, then the trailer */
        if (gcm_seal(s->rtcp_cipher, iv, buf, 8, trailer, 4, buf + 8, n - 8, buf + n) < 0)
            return SFU_SRTP_E_CRYPTO;
        memcpy(buf + n + GCM_TAG, trailer, 4);
    } else {
        uint8_t iv[16], tag[20];
        cm_iv(iv, s->rtcp_salt, ssrc, index);
        if (ctr_xor(s->rtcp_cipher, iv, buf + 8, n - 8) < 0)
            return SFU_SRTP_E_CRYPTO;
        memcpy(buf + n, trailer, 4);
        if (hmac(&s->rtcp_mac, buf, n + 4, NULL, 0, tag) < 0)
            return SFU_SRTP_E_CRYPTO;
        memcpy(buf + n + 4, tag, s->rtcp_tag);
    }
    st->rtcp_index = index;
    st->rtcp_set = 1;
    *len = n + add;
    return 0;
}

int sfu_srtp_unprotect_rtcp(sfu_srtp_t *s, uint8_t *buf, size_t *len)
{
    if (s->outbound)
        return SFU_SRTP_E_DIRECTION;
    size_t n = *len, add = SRTCP_TRAILER + s->rtcp_tag;
    if (n < 8 + add || n > MAX_PACKET)
        return SFU_SRTP_E_MALFORMED;
    size_t body = n - add; /* the RTCP packet, encrypted after octet 8 */
    uint32_t ssrc = rd32(buf + 4);
    const uint8_t *trailer = s->gcm ? buf + n - 4 : buf + body;
    uint32_t t = rd32(trailer), index = t & 0x7fffffffu;
    int encrypted = (t & SRTCP_E) != 0;
    stream_t *st = stream_find(s, ssrc);
    if (st) {
        int rc = replay_check(st->rtcp_set, st->rtcp_index, st->rtcp_window, index);
        if (rc)
            return rc;
    } else {
        int rc = stream_reserve(s);
        if (rc)
            return rc;
    }
    if (s->gcm) {
        uint8_t iv[12];
        gcm_iv(iv, s->rtcp_salt, ssrc, 0, index, 4);
        const uint8_t *tag = buf + body;
        /* E=1: AAD is octets 0..7 || trailer, the rest is ciphertext; E=0: all of it is AAD */
        int rc = encrypted ? gcm_open(s->rtcp_cipher, iv, buf, 8, trailer, 4, buf + 8, body - 8, tag)
                           : gcm_open(s->rtcp_cipher, iv, buf, body, trailer, 4, NULL, 0, tag);
        if (rc)
            return rc;
    } else {
        uint8_t iv[16], tag[20];
        if (hmac(&s->rtcp_mac, buf, body + 4, NULL, 0, tag) < 0)
            return SFU_SRTP_E_CRYPTO;
        if (CRYPTO_memcmp(tag, buf + body + 4, s->rtcp_tag) != 0)
            return SFU_SRTP_E_AUTH;
        if (encrypted) {
            cm_iv(iv, s->rtcp_salt, ssrc, index);
            if (ctr_xor(s->rtcp_cipher, iv, buf + 8, body - 8) < 0)
                return SFU_SRTP_E_CRYPTO;
        }
    }
    if (!st)
        st = stream_insert(s, ssrc);
    uint64_t hi = st->rtcp_index;
    replay_add(&st->rtcp_set, &hi, &st->rtcp_window, index);
    st->rtcp_index = (uint32_t)hi;
    *len = body;
    return 0;
}
