/* The engine's sans-IO output: the outbox (datagrams to send, linked per
 * socket for sendmmsg) and the upcall queue (datagrams and events for the
 * Python control plane). */
#ifndef SFU_OUTBOX_H
#define SFU_OUTBOX_H

#include <string.h>

#include "engine.h"

/* A free slot to write a datagram into (the outbox is flushed through
 * e->flush when full); NULL, counted, when it stays full. */
static inline sfu_slot_t *sfu_outbox_reserve(sfu_engine_t *e)
{
    if (e->outbox_used == SFU_OUTBOX_SLOTS) {
        if (e->flush)
            e->flush(e);
        if (e->outbox_used == SFU_OUTBOX_SLOTS) {
            e->counters[SFU_C_DROP_OUTBOX_FULL]++;
            return NULL;
        }
    }
    return &e->outbox[e->outbox_used];
}
/* Queues the slot written last toward `dest` on socket s. */
static inline void sfu_outbox_commit(sfu_engine_t *e, sfu_slot_t *slot, sfu_socket_t *s, const sfu_addr_t *dest,
                                 uint32_t len)
{
    uint32_t idx = e->outbox_used++;
    slot->socket = s->handle;
    slot->len = len;
    slot->next = UINT32_MAX;
    slot->dest_len = dest->len;
    memcpy(&slot->dest, &dest->addr, dest->len <= sizeof(slot->dest) ? dest->len : sizeof(slot->dest));
    if (s->pending_tail == UINT32_MAX)
        s->pending_head = idx;
    else
        e->outbox[s->pending_tail].next = idx;
    s->pending_tail = idx;
    s->pending_count++;
    if (!s->dirty) {
        s->dirty = 1;
        e->dirty_sockets[e->ndirty++] = s->handle;
    }
}

/* Queues a datagram (copied) or an event for Python; NULL, counted, when the
 * queue is full. Writes e->notify_fd when the queue was empty. */
sfu_upcall_t *sfu_upcall_push(sfu_engine_t *e, int type, sfu_socket_t *s, uint32_t transport, int kind,
                              const struct sockaddr *addr, socklen_t addr_len, const uint8_t *data, size_t len);

#endif
