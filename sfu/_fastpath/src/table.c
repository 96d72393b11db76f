/* Handle tables (table.h). */
#include "table.h"

#include <stdlib.h>

uint32_t sfu_table_add(sfu_table_t *t, void *obj)
{
    if (t->count + 1 >= t->cap) {
        uint32_t ncap = t->cap ? t->cap * 2 : 64;
        if (ncap > SFU_HANDLE_INDEX_MASK + 1)
            return 0;
        void **items = realloc(t->items, ncap * sizeof(void *));
        if (!items)
            return 0;
        t->items = items;
        uint32_t *gens = realloc(t->gens, ncap * sizeof(uint32_t));
        if (!gens)
            return 0;
        t->gens = gens;
        for (uint32_t i = t->cap; i < ncap; i++) {
            t->items[i] = NULL;
            t->gens[i] = 1;
        }
        t->cap = ncap;
    }
    uint32_t i = t->hint;
    for (uint32_t n = 0; n < t->cap; n++, i++) {
        if (i == 0 || i >= t->cap)
            i = 1;
        if (!t->items[i]) {
            t->items[i] = obj;
            t->count++;
            t->hint = i + 1;
            return (t->gens[i] << SFU_HANDLE_INDEX_BITS) | i;
        }
    }
    return 0;
}

void sfu_table_del(sfu_table_t *t, uint32_t h)
{
    uint32_t i = h & SFU_HANDLE_INDEX_MASK;
    if (!sfu_table_get(t, h))
        return;
    t->items[i] = NULL;
    t->gens[i] = (t->gens[i] + 1) & ((1u << (32 - SFU_HANDLE_INDEX_BITS)) - 1);
    if (t->gens[i] == 0)
        t->gens[i] = 1;
    t->count--;
}

void sfu_table_free(sfu_table_t *t, void (*fn)(void *))
{
    for (uint32_t i = 1; i < t->cap; i++)
        if (t->items[i] && fn)
            fn(t->items[i]);
    free(t->items);
    free(t->gens);
}
