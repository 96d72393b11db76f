/* The receive side of one producer stream (one encoding) (producer_stream.c):
 * RTX decapsulation, payload type and header extension maps, NACK
 * generation, statistics, keyframe detection; then the packet goes to the
 * producer's consumers. */
#ifndef SFU_PRODUCER_STREAM_H
#define SFU_PRODUCER_STREAM_H

#include "engine.h"
#include "rtp.h"

/* A parsed, routed RTP packet (buf may be rewritten in place; cap is its size). */
void sfu_producer_stream_receive(sfu_engine_t *e, sfu_transport_t *t, const struct sfu_route *r, uint8_t *buf,
                                 size_t len, size_t cap, sfu_rtp_t *rtp, uint64_t now_ms);
/* NACKs what the stream is missing and is due (RFC 4585 generic NACK). */
void sfu_producer_stream_send_nacks(sfu_engine_t *e, sfu_producer_t *p, int stream, uint64_t now_ms);

#endif
