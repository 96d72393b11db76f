/* The outbox and the upcall queue (outbox.h). */
#include "outbox.h"

#include <stdlib.h>
#include <unistd.h>

void sfu_outbox_clear(sfu_engine_t *e)
{
    for (uint32_t i = 0; i < e->ndirty; i++) {
        sfu_socket_t *s = sfu_socket_get(e, e->dirty_sockets[i]);
        if (s) {
            s->pending_head = s->pending_tail = UINT32_MAX;
            s->pending_count = 0;
            s->dirty = 0;
        }
    }
    e->ndirty = 0;
    e->outbox_used = 0;
}

sfu_upcall_t *sfu_upcall_push(sfu_engine_t *e, int type, sfu_socket_t *s, uint32_t transport, int kind,
                                 const struct sockaddr *addr, socklen_t addr_len, const uint8_t *data, size_t len)
{
    if (e->up_count == SFU_UPCALL_CAP) {
        e->counters[SFU_C_DROP_UPCALL_FULL]++;
        return NULL;
    }
    sfu_upcall_t *up = &e->upcalls[(e->up_head + e->up_count) % SFU_UPCALL_CAP];
    memset(up, 0, sizeof(*up));
    if (len) {
        up->data = malloc(len);
        if (!up->data) {
            e->counters[SFU_C_DROP_UPCALL_FULL]++;
            return NULL;
        }
        memcpy(up->data, data, len);
    }
    up->type = type;
    up->socket = s ? s->handle : 0;
    up->transport = transport;
    up->is_rtcp = s ? s->is_rtcp : 0;
    up->kind = kind;
    if (addr && addr_len <= sizeof(up->addr)) {
        memcpy(&up->addr, addr, addr_len);
        up->addr_len = addr_len;
    }
    up->len = (uint32_t)len;
    e->up_count++;
    if (e->up_count == 1 && e->notify_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(e->notify_fd, &one, sizeof(one));
        (void)r;
    }
    return up;
}

int sfu_upcall_pop_locked(sfu_engine_t *e, sfu_upcall_t *up)
{
    if (e->up_count == 0)
        return 0;
    *up = e->upcalls[e->up_head];
    e->upcalls[e->up_head].data = NULL;
    if (up->unvalidated)
        e->up_unvalidated--;
    e->up_head = (e->up_head + 1) % SFU_UPCALL_CAP;
    e->up_count--;
    return 1;
}

int sfu_send_raw_locked(sfu_engine_t *e, uint32_t sh, const struct sockaddr *addr, socklen_t len, const uint8_t *data,
                        size_t n)
{
    sfu_socket_t *s = sfu_socket_get(e, sh);
    if (!s || n > SFU_SLOT_SIZE || len > sizeof(struct sockaddr_in6))
        return -1;
    sfu_slot_t *slot = sfu_outbox_reserve(e);
    if (!slot)
        return -1;
    memcpy(slot->data, data, n);
    sfu_addr_t dest;
    memset(&dest, 0, sizeof(dest));
    sfu_addr_set(&dest, addr, len);
    sfu_outbox_commit(e, slot, s, &dest, (uint32_t)n);
    if (e->flush)
        e->flush(e);
    return 0;
}
