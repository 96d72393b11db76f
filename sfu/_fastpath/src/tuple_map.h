/* Remote addresses: sfu_addr_t (one remote of a transport) and the tuple
 * map (remote address -> transport) of a socket that serves ICE transports
 * (a shared port, or a port whose transport accepts several tuples).
 * Open addressing with linear probing and backward-shift deletion. */
#ifndef SFU_TUPLE_MAP_H
#define SFU_TUPLE_MAP_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct {
    int set;
    socklen_t len;
    struct sockaddr_storage addr;
} sfu_addr_t;

typedef struct {
    struct sockaddr_in6 addr; /* IPv4 or IPv6 */
    uint32_t transport;       /* 0 = empty slot */
} sfu_tuple_slot_t;

typedef struct {
    sfu_tuple_slot_t *slots;
    uint32_t cap;             /* power of two, or 0 */
    uint32_t count;
} sfu_tuple_map_t;

/* Sets `a` to the address (unset when sa is NULL or len is 0 or too long). */
void sfu_addr_set(sfu_addr_t *a, const struct sockaddr *sa, socklen_t len);
/* Same IP (and, with ports, same port). */
int sfu_addr_match(const sfu_addr_t *a, const struct sockaddr *sa, int ports);
static inline int sfu_addr_equal(const sfu_addr_t *a, const struct sockaddr *sa) { return sfu_addr_match(a, sa, 1); }

/* The transport bound to a remote address, 0 when none. */
uint32_t sfu_tuple_map_get(const sfu_tuple_map_t *m, const struct sockaddr *addr);
/* Binds (or rebinds) an address; -1 on a bad length or out of memory. */
int sfu_tuple_map_put(sfu_tuple_map_t *m, const struct sockaddr *addr, socklen_t len, uint32_t transport);
/* Removes an address; -1 when it was not bound. */
int sfu_tuple_map_del(sfu_tuple_map_t *m, const struct sockaddr *addr);
/* Removes every address bound to a transport. */
void sfu_tuple_map_remove_transport(sfu_tuple_map_t *m, uint32_t transport);
void sfu_tuple_map_free(sfu_tuple_map_t *m);

#endif
