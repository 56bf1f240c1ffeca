/*
 * Connections per client address, shared by all workers
 * (limits.max_connections_per_ip).
 *
 * A hash table split into stripes, each behind its own mutex, so workers
 * accepting from different addresses rarely meet on a lock. Entries exist
 * only while an address has connections, so memory follows the number of
 * distinct clients connected now, not all ever seen. Used only when the
 * limit is set: with max_connections_per_ip 0 nothing here is called.
 */
#ifndef WSGATE_IP_LIMIT_H
#define WSGATE_IP_LIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct wsg_ip_limit_s wsg_ip_limit_t;

/* Returns a new, empty table, or NULL on ENOMEM. */
wsg_ip_limit_t *wsg_ip_limit_new(void);
void wsg_ip_limit_free(wsg_ip_limit_t *t);

/* Counts one more connection from <sa>'s address (the port is ignored;
 * AF_INET or AF_INET6) if it has fewer than <max>; returns true then.
 * Returns false (nothing counted) when the address is at <max>, or when
 * memory for a new entry cannot be had. Thread-safe. */
bool wsg_ip_limit_acquire(wsg_ip_limit_t *t, const struct sockaddr *sa, uint64_t max);

/* Gives back one connection counted by wsg_ip_limit_acquire() for the same
 * address. Thread-safe. */
void wsg_ip_limit_release(wsg_ip_limit_t *t, const struct sockaddr *sa);

/* Addresses with at least one connection (for tests). */
uint64_t wsg_ip_limit_size(wsg_ip_limit_t *t);

#endif /* WSGATE_IP_LIMIT_H */
