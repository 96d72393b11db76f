/* Transports (transport.c): where a transport's packets come from and go
 * to, its SRTP keys, the RTP and RTCP it receives (unprotect, parse, latch,
 * route) and sends (protect, queue), and its transport-cc feedback. */
#ifndef SFU_TRANSPORT_H
#define SFU_TRANSPORT_H

#include "engine.h"
#include "rtp.h"
#include "srtp.h"


/* A comedia transport learns its remote from its first valid packet: the
 * source is applied only once the packet authenticated and parsed. */
struct sfu_latch {
    sfu_socket_t *socket;  /* NULL: nothing to learn */
    sfu_addr_t *remote;
    const struct sockaddr *src;
    socklen_t src_len;
};

/* An RTP or RTCP datagram that passed the source checks of sfu_engine_receive(). */
void sfu_transport_receive_rtp(sfu_engine_t *e, sfu_transport_t *t, uint8_t *buf, size_t len, size_t cap,
                               uint64_t now_ms, const struct sfu_latch *latch);
void sfu_transport_receive_rtcp(sfu_engine_t *e, sfu_transport_t *t, uint8_t *buf, size_t len,
                                const struct sfu_latch *latch, uint64_t now_ms);
void sfu_transport_latch_apply(sfu_engine_t *e, sfu_transport_t *t, const struct sfu_latch *l);

/* Queues an RTCP packet built in `data` toward the transport's remote (SRTCP
 * when keyed). Returns 0 when queued, -1 when it cannot go out. */
int sfu_transport_send_rtcp(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *data, size_t len);

/* The consumer of this transport that sends `ssrc`, NULL when none. */
sfu_consumer_t *sfu_transport_consumer_by_ssrc(sfu_transport_t *t, uint32_t ssrc);

/* Timer work: transport-cc feedback while arrivals are unreported. */
void sfu_transport_timers(sfu_engine_t *e, sfu_transport_t *t, uint64_t now_ms);

void sfu_transport_free(sfu_transport_t *t);

/* A destination is known and, on an ICE transport, the SRTP keys are in:
 * media never leaves in cleartext before DTLS is done. */
static inline int sfu_transport_can_send_media(const sfu_transport_t *t)
{
    return t->remote.set && (!t->require_srtp || t->srtp_out);
}

/* SRTP-protects an outgoing RTP packet in place when the transport has keys. */
static inline int sfu_transport_protect(sfu_engine_t *e, sfu_transport_t *t, uint8_t *out, size_t *olen)
{
    if (!t->srtp_out)
        return 0;
    if (sfu_srtp_protect(t->srtp_out, out, olen, SFU_SLOT_SIZE) != 0) {
        e->counters[SFU_C_TX_SRTP_ERRORS]++;
        return -1;
    }
    return 0;
}

#endif
