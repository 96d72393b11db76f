/* Which producer stream an incoming RTP packet belongs to (mediasoup's
 * RtpListener order): its SSRC; for a stream whose SSRC was not signalled,
 * the producer's MID, then the stream's RID (the repaired RID for RTX), read
 * from the first packet that names them, after which the SSRC is bound. */
#ifndef SFU_RTP_LISTENER_H
#define SFU_RTP_LISTENER_H

#include "engine.h"
#include "rtp.h"

/* Routes an SSRC to a producer stream (its media or RTX); -1 when the SSRC
 * is already routed or out of memory. */
int sfu_rtp_listener_add(sfu_transport_t *t, uint32_t ssrc, sfu_producer_t *p, int stream, int is_rtx);
/* A stream whose SSRC will be learned from its MID/RID. */
int sfu_rtp_listener_add_pending(sfu_transport_t *t, sfu_producer_t *p, int stream, int is_rtx);
void sfu_rtp_listener_remove_producer(sfu_transport_t *t, sfu_producer_t *p);
/* The route of a parsed packet, NULL when no stream claims it. */
struct sfu_route *sfu_rtp_listener_find(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *buf, const sfu_rtp_t *rtp);

#endif
