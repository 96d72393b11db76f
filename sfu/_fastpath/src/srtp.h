/* SRTP and SRTCP (RFC 3711, RFC 7714) on OpenSSL's libcrypto: one context
 * per transport and direction, created from the DTLS-SRTP (or SDES) master
 * key and salt, with the per-SSRC stream state (rollover counter, replay
 * windows, SRTCP index) in an open-addressing table keyed by SSRC.
 *
 * Interoperates with libsrtp configured as sfu/srtp.py does: an outbound
 * context behaves as an SSRC_ANY_OUTBOUND session with allow_repeat_tx, an
 * inbound one as SSRC_ANY_INBOUND (a stream is created by the first packet
 * of an SSRC that authenticates).
 *
 * Threads: no internal locking; a context is used by one thread at a time.
 * Allocation: sfu_srtp_new allocates the context, its OpenSSL cipher/MAC
 * contexts and a 16-slot stream table; the table doubles when a new SSRC
 * needs room (at most SFU_SRTP_MAX_STREAMS streams). Nothing else is
 * allocated per packet.
 */
#ifndef SFU_SRTP_H
#define SFU_SRTP_H

#include <stddef.h>
#include <stdint.h>

/* DTLS-SRTP protection profile numbers (RFC 5764 §4.1.2, RFC 7714 §14.2) */
enum {
    SFU_SRTP_AES128_CM_SHA1_80 = 1,
    SFU_SRTP_AES128_CM_SHA1_32 = 2,
    SFU_SRTP_AEAD_AES_128_GCM = 7,
    SFU_SRTP_AEAD_AES_256_GCM = 8,
};

/* Return codes (0 is success) */
enum {
    SFU_SRTP_OK = 0,
    SFU_SRTP_E_MALFORMED = -1,     /* too short, bad RTP header, CSRC/extension past the end, > 65535 bytes */
    SFU_SRTP_E_NO_ROOM = -2,       /* cap too small for the tag/trailer */
    SFU_SRTP_E_AUTH = -3,          /* authentication tag mismatch (state unchanged) */
    SFU_SRTP_E_REPLAY = -4,        /* inbound index already seen or older than the window */
    SFU_SRTP_E_TOO_MANY_STREAMS = -5, /* a new SSRC and SFU_SRTP_MAX_STREAMS already */
    SFU_SRTP_E_CRYPTO = -6,        /* an OpenSSL call failed */
    SFU_SRTP_E_DIRECTION = -7,     /* protect on an inbound context or unprotect on an outbound one */
    SFU_SRTP_E_EXHAUSTED = -8,     /* SRTCP index past 2^31-1 or ROC past 2^32-1: the key must be replaced */
    SFU_SRTP_E_NO_MEMORY = -9,     /* the stream table could not grow */
};

#define SFU_SRTP_MAX_STREAMS 4096
#define SFU_SRTP_REPLAY_WINDOW 128

typedef struct sfu_srtp sfu_srtp_t;

/* Master key followed by master salt: 16+14 bytes for the AES-CM profiles,
 * 16+12 for AEAD_AES_128_GCM, 32+12 for AEAD_AES_256_GCM. NULL on an unknown
 * profile, a wrong length, or an allocation/OpenSSL failure. */
sfu_srtp_t *sfu_srtp_new(int profile, const uint8_t *master_key_and_salt, size_t len, int outbound);
void sfu_srtp_free(sfu_srtp_t *s);

/* RTP in place: buf[0..*len) is the packet; protect appends the tag (cap is
 * the buffer's size), unprotect removes it. 0 or a negative SFU_SRTP_E_*. On
 * an error *len is unchanged and the bytes of buf are unspecified (an AEAD
 * packet that fails authentication has been decrypted in place). */
int sfu_srtp_protect(sfu_srtp_t *s, uint8_t *buf, size_t *len, size_t cap);
int sfu_srtp_unprotect(sfu_srtp_t *s, uint8_t *buf, size_t *len);
/* RTCP (compound) in place: the E flag + SRTCP index trailer and the tag. */
int sfu_srtp_protect_rtcp(sfu_srtp_t *s, uint8_t *buf, size_t *len, size_t cap);
int sfu_srtp_unprotect_rtcp(sfu_srtp_t *s, uint8_t *buf, size_t *len);

/* Worst-case bytes protect/protect_rtcp add (20: a 16-byte GCM tag and the
 * 4-byte SRTCP trailer). */
size_t sfu_srtp_max_overhead(void);

/* Forgets the state of one SSRC (RTP and RTCP), e.g. when a consumer
 * closes, so its slot is reused. 1 if it was known, 0 otherwise. An inbound
 * stream forgotten is created again by its next authentic packet (with a
 * fresh replay window); an outbound one restarts its SRTCP index at 1. */
int sfu_srtp_remove_stream(sfu_srtp_t *s, uint32_t ssrc);
/* Asks the CPU for the cache line of an SSRC's stream state ahead of a
 * protect/unprotect (the forwarding loop calls it a consumer ahead). */
void sfu_srtp_prefetch(const sfu_srtp_t *s, uint32_t ssrc);
/* Number of SSRCs with state. */
size_t sfu_srtp_stream_count(const sfu_srtp_t *s);
int sfu_srtp_profile(const sfu_srtp_t *s);

#endif
