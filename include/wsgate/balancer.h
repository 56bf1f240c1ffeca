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
#include <wsgate/rate_limit.h>

typedef enum {
    WSG_BACKEND_UP = 0,
    WSG_BACKEND_DOWN = 1,
    WSG_BACKEND_DRAINING = 2,
} wsg_backend_state_t;

/* The live state of one backend. It outlives configurations: a reload that
 * keeps a pool's backend (same pool name, same address) hands the same
 * object to the new balancer, so health state, counters and the identity
 * that drain uses survive the reload. Reference counted. */
/* Traffic of one backend, striped by worker so that each worker adds to its
 * own cache line (workers past WSG_BACKEND_STRIPES share, correctly). */
#define WSG_BACKEND_STRIPES 8
typedef struct wsg_backend_traffic_s {
    _Alignas(64) _Atomic uint64_t frames[2]; /* [0] client to backend, [1] backend to client */
    _Atomic uint64_t bytes[2];
} wsg_backend_traffic_t;

typedef struct wsg_backend_s {
    wsg_backend_traffic_t traffic[WSG_BACKEND_STRIPES]; /* first: the struct is 64-aligned */
    char *address;                  /* owned copy: "host:port" as configured */
    char *pool;                     /* owned copy: pool name */
    _Atomic int state;              /* wsg_backend_state_t */
    _Atomic unsigned fails;         /* consecutive failures (passive and active) */
    _Atomic unsigned passes;        /* consecutive active-check passes while down */
    _Atomic uint64_t retry_at_ms;   /* DOWN by passive checks only: eligible again from then */
    _Atomic uint64_t active;        /* connections relaying or connecting to it */
    _Atomic uint64_t total;         /* connections it was given */
    _Atomic uint64_t failures;      /* failed connects / checks, ever */
    _Atomic uint64_t http_idle;     /* kept-alive connections idle in the workers' pools */
    _Atomic uint64_t http_busy;     /* connections carrying a plain HTTP exchange now */
    /* Last active check, written and read on the server thread only. */
    struct {
        bool done;                  /* a check has completed */
        bool ok;
        uint64_t ms;                /* how long it took */
        char error[96];             /* why it failed, "" when ok */
    } last_check;
    _Atomic int refcount;
} wsg_backend_t;

/* Counts <frames> WebSocket frames and <bytes> bytes that went through
 * <be> in direction <dir> (0: to the backend, 1: to the client), from
 * worker <worker>. Lock-free; a relaxed add on the worker's own line. */
static inline void wsg_backend_count(wsg_backend_t *be, unsigned worker, int dir,
                                     uint64_t frames, uint64_t bytes) {
    wsg_backend_traffic_t *t = &be->traffic[worker % WSG_BACKEND_STRIPES];
    if (frames)
        atomic_fetch_add_explicit(&t->frames[dir], frames, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->bytes[dir], bytes, memory_order_relaxed);
}

/* The sums over every worker, for /status. */
void wsg_backend_traffic(wsg_backend_t *be, uint64_t frames[2], uint64_t bytes[2]);

/* Reference counting of a backend's state (atomic; any thread). A worker
 * message that names a backend holds a reference, and so does an idle
 * backend connection in a worker's pool. unref(NULL) is a no-op. */
wsg_backend_t *wsg_backend_ref(wsg_backend_t *be);
void wsg_backend_unref(wsg_backend_t *be);

/* Counters of a pool that outlive configurations like its backends do
 * (handed from balancer to balancer by pool name). Reference counted. */
typedef struct wsg_pool_counters_s {
    _Atomic uint64_t rebalanced; /* connections given 1012 by a rebalance */
    _Atomic uint64_t http_requests[6]; /* plain HTTP requests routed to the pool, by
                                          status class ([1]..[5]; [0] none) */
    _Atomic int refcount;
} wsg_pool_counters_t;

/* A backend removed at run time (admin API) whose connections are being
 * drained: listed as draining until they have ended (SPEC §12). */
typedef struct wsg_leaving_s {
    wsg_backend_t *be; /* owned reference */
    unsigned weight;   /* as it was configured */
} wsg_leaving_t;

typedef struct wsg_balancer_s {
    const wsg_pool_conf_t *conf; /* borrowed from the runtime's config */
    wsg_ring_t *ring;            /* owned */
    wsg_backend_t **backends;    /* owned references, conf->nbackends long, config order */
    size_t nbackends;
    bool *added;                 /* owned, per backend: not in the previous balancer (which
                                    existed): what a rebalance moves keys to */
    wsg_leaving_t *leaving;      /* owned, <nleaving> long */
    size_t nleaving;
    wsg_pool_counters_t *counters; /* owned reference */
    uint32_t *sticky_ids;        /* owned, per backend: its sticky cookie id (SPEC §10);
                                    NULL when the pool has no cookie */
    bool active_checks;          /* conf->health.type != NONE */
    _Atomic uint64_t active;     /* sum of the backends' active, for load_factor */
} wsg_balancer_t;

/* Builds the run-time state of pool <conf>: the ring, and backends that are
 * taken over from <prev> (the same pool of the previous runtime, matched by
 * address; may be NULL) or new and up. A backend that <prev> lists as
 * leaving and <conf> lists again is taken over and back up. The leaving
 * backends of <prev> that still have connections stay leaving. Returns a
 * new balancer or NULL on ENOMEM. */
wsg_balancer_t *wsg_balancer_new(const wsg_pool_conf_t *conf, const wsg_balancer_t *prev);
void wsg_balancer_free(wsg_balancer_t *b);

/* Lists <be> (a backend of the previous balancer that <b>'s config no
 * longer has) as leaving <b>, with <weight>, and sets it draining. Returns
 * 0 or -1 (ENOMEM: it is then only not listed). */
int wsg_balancer_add_leaving(wsg_balancer_t *b, wsg_backend_t *be, unsigned weight);

/* Rebalance (SPEC §12): whether a connection placed by <key_hash> that is
 * on <current> must move, because the key's first choice on <b>'s ring is
 * a backend added to it (b->added) other than <current>. Pure. */
bool wsg_balancer_moved(const wsg_balancer_t *b, uint64_t key_hash, const wsg_backend_t *current);

/* The order in which backends are tried for a key hashed to <key_hash>:
 * the ring's ranking with down, draining and (with load_factor) full
 * backends left out. A backend that passive checks took down and whose
 * retry time has come is included (one connection probes it). Writes up to
 * <cap> backend indices to <out> and returns their number; 0 means no
 * healthy backend (503). <now_ms> is a monotonic clock in ms. */
size_t wsg_balancer_candidates(wsg_balancer_t *b, uint64_t key_hash, uint64_t now_ms,
                               unsigned *out, size_t cap);

/* SPEC §10: the backend that sticky cookie value <v>[0..n) names, when it
 * is genuine (the pool's secret, this pool, a backend it has), not older
 * than the cookie's max_age_s at <now_s> (wall clock, seconds), and that
 * backend is up. Returns its index, or -1 with *why saying why not (a
 * static string): the request is then placed by its key. load_factor is
 * not applied: a client that holds a cookie stays where it is. */
int wsg_balancer_sticky(const wsg_balancer_t *b, const char *v, size_t n, uint64_t now_s,
                        const char **why);

/* Passive health: a connect to backend <idx> succeeded / failed (refused,
 * timed out, or no answer to the handshake in time). After conf->health.fall
 * failures in a row the backend goes down (logged with <why>) and is retried
 * after the health interval. A success brings a passively-downed backend
 * back up. */
void wsg_balancer_report_success(wsg_balancer_t *b, unsigned idx);
void wsg_balancer_report_failure(wsg_balancer_t *b, unsigned idx, uint64_t now_ms,
                                 const char *why);

/* Active health checks (health.c): one check of backend <idx> passed or
 * failed. Applies rise/fall, logs every state change with <why>. A
 * draining backend stays draining. */
void wsg_balancer_check_result(wsg_balancer_t *b, unsigned idx, bool ok, uint64_t ms,
                               const char *why);

/* Admin: draining takes no new connections; enable returns the backend to
 * normal checking (up, counters reset). Return the previous state. */
wsg_backend_state_t wsg_balancer_set_draining(wsg_balancer_t *b, unsigned idx);
wsg_backend_state_t wsg_balancer_enable(wsg_balancer_t *b, unsigned idx);

/* Index of the backend with <address> in <b>, or -1. */
int wsg_balancer_find(const wsg_balancer_t *b, const char *address);

/* Connection accounting for load_factor and /status. */
void wsg_balancer_conn_start(wsg_balancer_t *b, unsigned idx);
void wsg_balancer_conn_end(wsg_balancer_t *b, unsigned idx);

/* The recent backend state changes, process-wide: every change logged by
 * this module (passive and active health, drain, enable) is also kept in a
 * ring of the last WSG_BACKEND_CHANGES, for /status and the dashboard.
 * Recording takes a mutex, which costs nothing that matters: changes are
 * rare and never on the relay path. */
#define WSG_BACKEND_CHANGES 64
typedef struct wsg_backend_change_s {
    uint64_t seq;   /* 1, 2, ... in the order they happened */
    uint64_t at_ms; /* wall clock, ms since the Unix epoch */
    wsg_backend_state_t from, to;
    char pool[64];     /* truncated if longer */
    char address[272]; /* truncated if longer */
    char why[192];     /* as in the log line, truncated */
} wsg_backend_change_t;

/* Copies up to <cap> of the kept changes into <out>, newest first; returns
 * how many. Any thread. */
size_t wsg_balancer_changes(wsg_backend_change_t *out, size_t cap);

const char *wsg_backend_state_name(wsg_backend_state_t s);
const char *wsg_health_type_name(wsg_health_type_t t);

/* Everything a connection needs that a reload may replace: the config and
 * the pools' balancers built from it. Shared by all workers, reference
 * counted; connections keep the runtime they started with. */
typedef struct wsg_tls_ctx_s wsg_tls_ctx_t;

typedef struct wsg_runtime_s {
    wsg_config_t *cfg;         /* owned reference */
    struct wsg_jwt_keys_s **auth_keys; /* owned, cfg->nauths long: each verifier's keys */
    /* SPEC §11 limits, set up from cfg (per_s 0: off). */
    wsg_rate_t handshake_rate, message_rate, client_bytes_rate;
    wsg_balancer_t **pools;    /* owned, cfg->npools long, same order */
    wsg_tls_ctx_t **listener_tls; /* owned references, per listener; NULL = plain */
    wsg_tls_ctx_t **pool_tls;     /* owned references, per pool; NULL = plain */
    _Atomic int refcount;
} wsg_runtime_t;

/* Takes a reference to <cfg>. Backends of <prev> (may be NULL) that stay
 * keep their state. Returns NULL on ENOMEM. */
wsg_runtime_t *wsg_runtime_new(wsg_config_t *cfg, const wsg_runtime_t *prev);

/* The balancer of the pool named <name>, or NULL. */
wsg_balancer_t *wsg_runtime_pool(const wsg_runtime_t *rt, const char *name);
/* Loads the certificates and keys of every TLS listener and TLS pool of
 * <rt> (blocking file reads: start-up and reload only). Returns 0, or -1
 * with one line in <err> naming the file and the problem. */
int wsg_runtime_load_tls(wsg_runtime_t *rt, char *err, size_t errcap);

/* Reads the key file of every verifier under "auth" (blocking: start-up
 * and reload only; keys are re-read on reload so rotated ones are picked
 * up). Returns 0, or -1 with one line in <err> naming the verifier, the
 * file and the problem. */
int wsg_runtime_load_auth(wsg_runtime_t *rt, char *err, size_t errcap);

wsg_runtime_t *wsg_runtime_ref(wsg_runtime_t *rt);
void wsg_runtime_unref(wsg_runtime_t *rt);

#endif /* WSGATE_BALANCER_H */
