/* Producers (producer.c): creation and settings from the control plane,
 * their timer work (NACK retries, REMB toward the publisher) and REMB
 * aggregation of their consumers' estimates. */
#ifndef SFU_PRODUCER_H
#define SFU_PRODUCER_H

#include "engine.h"

/* A consumer's receiver estimate (REMB) for its producer. */
void sfu_producer_on_remb(sfu_engine_t *e, sfu_producer_t *p, sfu_consumer_t *c, uint64_t bps, uint64_t now_ms);
void sfu_producer_timers(sfu_engine_t *e, sfu_producer_t *p, uint64_t now_ms);
void sfu_producer_free(sfu_producer_t *p);

#endif
