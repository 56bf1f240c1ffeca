/*
 * Backend pools at run time: the consistent-hash ring of each pool plus the
 * live state of its backends (up / down / draining, failure counters, active
 * connections), shared by every worker.
 *
 * The ring and the backend list are immutable once built. Backend state is
 * written with atomics by whichever worker observes a connect succeed or fail
 * (passive health) and, later, by health checks and the admin endpoint; every
 * worker reads it with relaxed loads on the handshake path. Nothing here is
 * touched once a connection is relaying.
 */
#ifndef WSGATE_BALANCER_H
#define WSGATE_BALANCER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wsgate/config.h>
#include <wsgate/hash_ring.h>

typedef enum {
    WSG_BACKEND_UP = 0,
    WSG_BACKEND_DOWN = 1,
    WSG_BACKEND_DRAINING = 2,
} wsg_backend_state_t;

typedef struct wsg_backend_s {
    const wsg_backend_conf_t *conf; /* borrowed from the runtime's config */
    _Atomic int state;              /* wsg_backend_state_t */
    _Atomic unsigned fails;         /* consecutive failed connects / handshake timeouts */
    _Atomic uint64_t retry_at_ms;   /* DOWN by passive checks: eligible again from then */
    _Atomic uint64_t active;        /* connections relaying or connecting to it */
    _Atomic uint64_t total;         /* connections it was given */
    _Atomic uint64_t failures;      /* failed connects, ever */
} wsg_backend_t;

typedef struct wsg_balancer_s {
    const wsg_pool_conf_t *conf; /* borrowed */
    wsg_ring_t *ring;            /* owned */
    wsg_backend_t *backends;     /* owned array, conf->nbackends long, config order */
    size_t nbackends;
    _Atomic uint64_t active;     /* sum of backends[].active, for load_factor */
} wsg_balancer_t;

/* Builds the run-time state of pool <conf>: ring and backends, all up.
 * Returns a new balancer or NULL on ENOMEM. */
wsg_balancer_t *wsg_balancer_new(const wsg_pool_conf_t *conf);
void wsg_balancer_free(wsg_balancer_t *b);

/* The order in which backends are tried for a key hashed to <key_hash>:
 * the ring's ranking with down, draining and (with load_factor) full
 * backends left out. A backend that passive checks took down and whose
 * retry time has come is included (one connection probes it). Writes up to
 * <cap> backend indices to <out> and returns their number; 0 means no
 * healthy backend (503). <now_ms> is a monotonic clock in ms. */
size_t wsg_balancer_candidates(wsg_balancer_t *b, uint64_t key_hash, uint64_t now_ms,
                               unsigned *out, size_t cap);

/* Passive health: a connect to backend <idx> succeeded / failed (refused,
 * timed out, or no answer to the handshake in time). After conf->health.fall
 * failures in a row the backend goes down (logged with <why>) and is retried
 * after the health interval. A success brings a passively-downed backend
 * back up. */
void wsg_balancer_report_success(wsg_balancer_t *b, unsigned idx);
void wsg_balancer_report_failure(wsg_balancer_t *b, unsigned idx, uint64_t now_ms,
                                 const char *why);

/* Connection accounting for load_factor and /status. */
void wsg_balancer_conn_start(wsg_balancer_t *b, unsigned idx);
void wsg_balancer_conn_end(wsg_balancer_t *b, unsigned idx);

const char *wsg_backend_state_name(wsg_backend_state_t s);

/* Everything a connection needs that a reload may replace: the config and
 * the pools' balancers built from it. Shared by all workers, reference
 * counted; connections keep the runtime they started with. */
typedef struct wsg_runtime_s {
    wsg_config_t *cfg;         /* owned reference */
    wsg_balancer_t **pools;    /* owned, cfg->npools long, same order */
    _Atomic int refcount;
} wsg_runtime_t;

/* Takes a reference to <cfg>. Returns NULL on ENOMEM. */
wsg_runtime_t *wsg_runtime_new(wsg_config_t *cfg);
wsg_runtime_t *wsg_runtime_ref(wsg_runtime_t *rt);
void wsg_runtime_unref(wsg_runtime_t *rt);

#endif /* WSGATE_BALANCER_H */
