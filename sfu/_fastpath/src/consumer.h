/* Consumers (consumer.c): the send side. A packet's SSRC, sequence number,
 * timestamp, payload type and header extensions are rewritten here for each
 * consumer (consumer_write), and NACKed packets are retransmitted (RTX). */
#ifndef SFU_CONSUMER_H
#define SFU_CONSUMER_H

#include "engine.h"
#include "rtp.h"

/* Sends a router-level packet of producer stream `stream` to every consumer
 * of p that forwards it. keyframe: -1 when the codec gives no way to tell,
 * else whether the packet starts a keyframe. */
void sfu_consumers_forward(sfu_engine_t *e, sfu_producer_t *p, int stream, const uint8_t *buf, size_t len,
                           const sfu_rtp_t *rtp, uint64_t now_ms, int keyframe);
/* Answers a generic NACK (the RTPFB packet) from the producer's packet store. */
void sfu_consumer_retransmit(sfu_engine_t *e, sfu_consumer_t *c, const uint8_t *pkt, size_t plen, uint64_t now_ms);
void sfu_consumer_free(sfu_consumer_t *c);

/* Sets the layer the consumer should forward (clamped to the producer's
 * streams); the switch happens at that layer's next keyframe, which the
 * keyframe policy asks for. Returns 0, or -2 without memory. */
int sfu_consumer_retarget(sfu_engine_t *e, sfu_consumer_t *c, int stream);

#endif
