/* Retransmission storage (send side), mediasoup's shared-packet idea: the
 * packets live once per producer stream, keyed by the stream's input
 * sequence number; each consumer keeps only a small map from its output
 * sequence numbers to input numbers (plus a resend rate limit).
 *
 *   NACK(out_seq) from a consumer's receiver
 *     -> sfu_seq_map_get(consumer map, out_seq) = in_seq
 *     -> sfu_seq_map_may_resend(...)            (once per RTT per number)
 *     -> sfu_packet_store_get(producer stream store, in_seq)
 *     -> copy, rewrite for the consumer, sfu_rtx_encapsulate (rtcp_build.h)
 *
 * sfu_packet_store_t: a ring of `capacity` slots (power of two) allocated
 * once by sfu_packet_store_init(); put/get do not allocate. A slot holds one
 * router-level RTP packet of at most SFU_STORE_MAX_PACKET bytes. A number
 * `capacity` or more behind the newest stored one is gone (its slot belongs
 * to a newer number), so put() ignores it and get() returns NULL. A jump
 * forward empties the slots of the skipped numbers (at most `capacity`), so
 * a slot never returns a packet from 65536 numbers ago.
 *
 * sfu_seq_map_t: fixed size, SFU_SEQ_MAP_SIZE entries indexed by
 * out_seq % SFU_SEQ_MAP_SIZE, each remembering its out_seq (no aliasing);
 * like the store, a jump forward forgets the skipped numbers.
 * Resend rate limit: the same output number is resent at most once per RTT
 * (rtt_ms 0 = unknown: SFU_SEQ_MAP_DEFAULT_RTT_MS), as in mediasoup's
 * RtpStreamSend. A receiver retries a NACK only after its own RTT, so a
 * second NACK within one RTT is a duplicate (overlapping FCIs, several
 * NACKs in flight) and resending would only waste bandwidth.
 */
#ifndef SFU_RTX_BUFFER_H
#define SFU_RTX_BUFFER_H

#include <stddef.h>
#include <stdint.h>

#define SFU_STORE_MAX_PACKET 1500
#define SFU_STORE_DEFAULT_CAPACITY 512
#define SFU_STORE_MAX_CAPACITY 32768

typedef struct {
    uint64_t stored_ms;
    uint16_t seq;
    uint16_t len;        /* 0 = empty */
    uint8_t data[SFU_STORE_MAX_PACKET];
} sfu_store_slot_t;

typedef struct {
    sfu_store_slot_t *slots; /* NULL before init / after free */
    uint32_t capacity;       /* power of two */
    uint32_t mask;
    int started;
    uint16_t highest;        /* newest stored sequence number */
    uint64_t stored;         /* put() calls that stored a packet */
    uint64_t hits, misses;   /* get() results */
} sfu_packet_store_t;

/* capacity: power of two in 1..SFU_STORE_MAX_CAPACITY. Returns 0, or -1 for a
 * bad capacity or out of memory (the store is then empty and unusable). */
int sfu_packet_store_init(sfu_packet_store_t *s, uint32_t capacity);
void sfu_packet_store_free(sfu_packet_store_t *s);
/* Forgets every packet (e.g. the producer stream restarted). */
void sfu_packet_store_clear(sfu_packet_store_t *s);

/* Returns 1 if stored, 0 if ignored (len 0 or > SFU_STORE_MAX_PACKET, too old,
 * store not initialised). */
int sfu_packet_store_put(sfu_packet_store_t *s, uint16_t seq, const uint8_t *pkt, size_t len,
                         uint64_t now_ms);

/* The stored packet (valid until the next put), or NULL if absent,
 * overwritten, or stored more than max_age_ms ago (0 = no age limit). */
const uint8_t *sfu_packet_store_get(sfu_packet_store_t *s, uint16_t seq, size_t *len,
                                    uint64_t now_ms, uint32_t max_age_ms);

/* 1 if seq is past resending: older than the window the store holds, or
 * stored more than max_age_ms ago; 0 if it is stored and fresh, or was never
 * stored within the window (lost on the way in: maybe still on its way). */
int sfu_packet_store_expired(const sfu_packet_store_t *s, uint16_t seq, uint64_t now_ms, uint32_t max_age_ms);

#define SFU_SEQ_MAP_SIZE 1024 /* power of two */
#define SFU_SEQ_MAP_DEFAULT_RTT_MS 100

typedef struct {
    uint32_t resent_ms;  /* low 32 bits of now_ms of the last resend */
    uint16_t out_seq;
    uint16_t in_seq;
    uint8_t valid;
    uint8_t resent;      /* resent_ms is set */
} sfu_seq_map_entry_t;   /* 12 bytes */

typedef struct {
    int started;
    uint16_t highest;    /* newest output number put */
    sfu_seq_map_entry_t e[SFU_SEQ_MAP_SIZE];
} sfu_seq_map_t;

void sfu_seq_map_init(sfu_seq_map_t *m);
/* Records out_seq -> in_seq (and clears its resend time). Ignored if out_seq is
 * SFU_SEQ_MAP_SIZE or more behind the newest output number. */
void sfu_seq_map_put(sfu_seq_map_t *m, uint16_t out_seq, uint16_t in_seq);
/* 1 and *in_seq if known, else 0. */
int sfu_seq_map_get(const sfu_seq_map_t *m, uint16_t out_seq, uint16_t *in_seq);
/* 1 if out_seq is known and was not resent within the last RTT (and then
 * records now_ms as its resend time), else 0. */
int sfu_seq_map_may_resend(sfu_seq_map_t *m, uint16_t out_seq, uint64_t now_ms, uint32_t rtt_ms);

#endif
