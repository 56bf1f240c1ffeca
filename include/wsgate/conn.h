/*
 * A proxied connection: the client side, the backend side, and the session
 * between them from accept to the last handle closed.
 */
#ifndef WSGATE_CONN_H
#define WSGATE_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <wsgate/timer_heap.h>
#include <wsgate/worker.h>

/* Accepts one pending connection on listener <l> of worker <w>. Errors are
 * logged and counted; nothing is returned. */
void wsg_conn_accept(wsg_worker_t *w, wsg_wlistener_t *l);

/* Starts a graceful close of <c> because wsgate is going away: client and
 * backend get close 1001 "going away", and the connection ends within
 * drain_ms. Connections still in the handshake are closed. */
void wsg_conn_going_away(wsg_conn_t *c);

/* If <c> is relaying to <backend>, schedules close 1012 "service restart"
 * to its client (and 1001 to the backend) at loop time <at>. */
void wsg_conn_drain(wsg_conn_t *c, const wsg_backend_t *backend, uint64_t at);

/* Rebalance (SPEC §12): if <c> is relaying, its backend was chosen from
 * its sticky key (or the ip fallback, not at random) and no drain is
 * pending, gives its pool's name, that key's hash and its backend, and
 * returns true. */
bool wsg_conn_placement(const wsg_conn_t *c, const char **pool, uint64_t *key_hash,
                        const wsg_backend_t **backend);

/* Schedules close 1012 to the client of relaying <c> at loop time <at>
 * because its key now maps to another backend (logged as "rebalanced"). */
void wsg_conn_rebalance(wsg_conn_t *c, uint64_t at);

/* Closes every handle of <c> now, without close frames (drain deadline). */
void wsg_conn_abort(wsg_conn_t *c, const char *why);

/* sizeof(wsg_conn_t), for the worker's slab of them. */
size_t wsg_conn_struct_size(void);

/* Called by the worker when <c>'s deadline node fires. */
void wsg_conn_on_deadline(wsg_timer_node_t *node, uint64_t now);

/* The worker's pool of idle backend connections (plain HTTP reuse, SPEC §9):
 * made at worker start, closed (every idle connection, and nothing kept
 * from then on) when the worker stops, freed at join. */
int wsg_upstreams_init(wsg_worker_t *w);
void wsg_upstreams_close(wsg_worker_t *w);
void wsg_upstreams_free(wsg_worker_t *w);
/* Returns true when <n> is the pool's deadline node (and handles it). */
bool wsg_upstreams_on_deadline(wsg_worker_t *w, wsg_timer_node_t *n, uint64_t now);

/* The next connection of the worker's list (for iteration at shutdown). */
wsg_conn_t *wsg_conn_next(wsg_conn_t *c);

#endif /* WSGATE_CONN_H */
