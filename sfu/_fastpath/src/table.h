/* Handle tables: the engine's objects addressed by generation-checked
 * handles, so that a stale handle from Python never reaches a newer object
 * in the same slot. A handle is (generation << 20) | index, never 0. */
#ifndef SFU_TABLE_H
#define SFU_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define SFU_HANDLE_INDEX_BITS 20
#define SFU_HANDLE_INDEX_MASK ((1u << SFU_HANDLE_INDEX_BITS) - 1)

typedef struct {
    void **items;
    uint32_t *gens;
    uint32_t cap;
    uint32_t count;
    uint32_t hint;
} sfu_table_t;

/* Returns the new object's handle, 0 when the table is full or out of memory. */
uint32_t sfu_table_add(sfu_table_t *t, void *obj);
void sfu_table_del(sfu_table_t *t, uint32_t h);
/* Calls fn on every object, then frees the table's arrays. */
void sfu_table_free(sfu_table_t *t, void (*fn)(void *));

static inline void *sfu_table_get(const sfu_table_t *t, uint32_t h)
{
    uint32_t i = h & SFU_HANDLE_INDEX_MASK;
    if (i == 0 || i >= t->cap || t->gens[i] != (h >> SFU_HANDLE_INDEX_BITS))
        return NULL;
    return t->items[i];
}

#endif
