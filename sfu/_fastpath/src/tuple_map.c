/* Remote addresses and the tuple map (tuple_map.h). */
#include "tuple_map.h"

#include <stdlib.h>
#include <string.h>

void sfu_addr_set(sfu_addr_t *a, const struct sockaddr *sa, socklen_t len)
{
    if (!sa || len == 0 || len > sizeof(a->addr)) {
        a->set = 0;
        return;
    }
    memset(&a->addr, 0, sizeof(a->addr));
    memcpy(&a->addr, sa, len);
    a->len = len;
    a->set = 1;
}

int sfu_addr_match(const sfu_addr_t *a, const struct sockaddr *sa, int ports)
{
    if (a->addr.ss_family != sa->sa_family)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->addr;
        const struct sockaddr_in *y = (const struct sockaddr_in *)sa;
        return (!ports || x->sin_port == y->sin_port) && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->addr;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)sa;
        return (!ports || x->sin6_port == y->sin6_port) && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return 0;
}

static int sockaddr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return 0;
}

static uint32_t sockaddr_hash(const struct sockaddr *sa)
{
    uint32_t h = 2166136261u;
    const uint8_t *p;
    size_t n;
    uint16_t port;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        p = (const uint8_t *)&a->sin_addr;
        n = 4;
        port = a->sin_port;
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        p = (const uint8_t *)&a->sin6_addr;
        n = 16;
        port = a->sin6_port;
    }
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    h = (h ^ (port & 0xff)) * 16777619u;
    h = (h ^ (port >> 8)) * 16777619u;
    return h;
}

uint32_t sfu_tuple_map_get(const sfu_tuple_map_t *m, const struct sockaddr *addr)
{
    if (!m->count)
        return 0;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = sockaddr_hash(addr) & mask;; i = (i + 1) & mask) {
        const sfu_tuple_slot_t *slot = &m->slots[i];
        if (!slot->transport)
            return 0;
        if (sockaddr_equal((const struct sockaddr *)&slot->addr, addr))
            return slot->transport;
    }
}

int sfu_tuple_map_put(sfu_tuple_map_t *m, const struct sockaddr *addr, socklen_t len, uint32_t transport)
{
    if (len > sizeof(struct sockaddr_in6))
        return -1;
    if ((m->count + 1) * 2 > m->cap) {
        uint32_t ncap = m->cap ? m->cap * 2 : 16;
        sfu_tuple_slot_t *ns = calloc(ncap, sizeof(*ns));
        if (!ns)
            return -1;
        for (uint32_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].transport)
                continue;
            uint32_t j = sockaddr_hash((struct sockaddr *)&m->slots[i].addr) & (ncap - 1);
            while (ns[j].transport)
                j = (j + 1) & (ncap - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    uint32_t mask = m->cap - 1;
    uint32_t i = sockaddr_hash(addr) & mask;
    for (;; i = (i + 1) & mask) {
        sfu_tuple_slot_t *slot = &m->slots[i];
        if (!slot->transport) {
            memset(&slot->addr, 0, sizeof(slot->addr));
            memcpy(&slot->addr, addr, len);
            slot->transport = transport;
            m->count++;
            return 0;
        }
        if (sockaddr_equal((struct sockaddr *)&slot->addr, addr)) {
            slot->transport = transport;
            return 0;
        }
    }
}

static void delete_at(sfu_tuple_map_t *m, uint32_t i)
{
    uint32_t mask = m->cap - 1;
    m->slots[i].transport = 0;
    m->count--;
    /* backward-shift the entries that probed past the hole */
    for (uint32_t j = (i + 1) & mask; m->slots[j].transport; j = (j + 1) & mask) {
        uint32_t home = sockaddr_hash((struct sockaddr *)&m->slots[j].addr) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j].transport = 0;
            i = j;
        }
    }
}

void sfu_tuple_map_remove_transport(sfu_tuple_map_t *m, uint32_t transport)
{
    for (uint32_t i = 0; i < m->cap;) {
        if (m->slots[i].transport == transport)
            delete_at(m, i); /* re-examine slot i: something may have shifted in */
        else
            i++;
    }
}

int sfu_tuple_map_del(sfu_tuple_map_t *m, const struct sockaddr *addr)
{
    if (!m->count)
        return -1;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = sockaddr_hash(addr) & mask; m->slots[i].transport; i = (i + 1) & mask) {
        if (sockaddr_equal((const struct sockaddr *)&m->slots[i].addr, addr)) {
            delete_at(m, i);
            return 0;
        }
    }
    return -1;
}

void sfu_tuple_map_free(sfu_tuple_map_t *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}
