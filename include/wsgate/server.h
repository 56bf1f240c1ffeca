/*
 * The server: the running process. It owns the current runtime (config +
 * pools), the listening sockets and the workers, and turns signals into
 * actions on all workers (graceful shutdown; reload later).
 */
#ifndef WSGATE_SERVER_H
#define WSGATE_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include <wsgate/balancer.h>
#include <wsgate/config.h>
#include <wsgate/worker.h>

/* Exit statuses (SPEC §1). */
enum {
    WSG_EXIT_OK = 0,
    WSG_EXIT_CONFIG = 1,
    WSG_EXIT_USAGE = 2,
    WSG_EXIT_STARTUP = 3,
};

typedef struct wsg_server_s wsg_server_t;

/* Everything below but wsg_server_run() is for modules that run on the
 * server thread's loop (admin endpoint, health checks) and must be called
 * on that thread. */

uv_loop_t *wsg_server_loop(wsg_server_t *srv);
/* The runtime new connections get (borrowed: valid until the next reload;
 * take a reference to keep it longer). */
wsg_runtime_t *wsg_server_runtime(wsg_server_t *srv);
uint64_t wsg_server_uptime_ms(const wsg_server_t *srv);
bool wsg_server_stopping(const wsg_server_t *srv);
unsigned wsg_server_nworkers(const wsg_server_t *srv);
/* "epoll", "uring" or "mixed": the I/O of plain TCP sides (config "io",
 * after the probe and each worker's own ring set-up). */
const char *wsg_server_io(const wsg_server_t *srv);

/* A sum over all workers of their counters (metrics are summed when read). */
typedef struct wsg_stats_s {
    uint64_t conns_active, conns_total, conns_rejected;
    uint64_t handshake_status[600]; /* by exact status */
    uint64_t frames[2], bytes[2];  /* [0] client->backend, [1] backend->client */
    uint64_t closes[16];           /* [code - 1000] for 1000..1014, [15] any other */
    uint64_t heartbeat_timeouts, idle_timeouts, protocol_errors;
    uint64_t hs_latency_buckets[WSG_HS_BUCKETS]; /* cumulative-ready counts per bucket */
    uint64_t hs_latency_count;
    uint64_t hs_latency_sum_us;
    uint64_t http_requests[6];     /* [1]..[5]: 1xx..5xx, [0]: no status */
    uint64_t http_latency_buckets[WSG_HS_BUCKETS];
    uint64_t http_latency_sum_us;
    uint64_t upstream_opened, upstream_reused, upstream_retried;
    uint64_t upstream_idle;        /* gauge: in the workers' pools now */
    uint64_t http_streaming;       /* gauge: responses being relayed now */
    uint64_t sse_heartbeats;
    uint64_t refused[WSG_REFUSED_N]; /* by wsg_refused_t */
    uint64_t buffers_in_use, buffers_cached; /* I/O chunks of WSG_CHUNK_SIZE bytes */
    uint64_t bulk_in_use, bulk_cached;       /* of WSG_BULK_SIZE bytes */
    /* The io_uring transport (wsg_uring_stats_t), summed over the workers
     * that run on io_uring, <uring_workers> of them; all 0 on epoll. */
    uint64_t uring_workers;
    uint64_t uring_submits, uring_cqes, uring_enobufs; /* counters */
    uint64_t uring_sides, uring_buffers, uring_stashed; /* gauges: now */
} wsg_stats_t;
void wsg_server_stats(const wsg_server_t *srv, wsg_stats_t *out);

/* Re-reads the configuration file (SPEC §8). On success the new listeners,
 * routes and pools serve new connections, live connections are untouched,
 * and 0 is returned. On failure nothing changes, -1 is returned and <errs>
 * (zeroed by the caller) holds every error. */
int wsg_server_reload(wsg_server_t *srv, wsg_config_errors_t *errs);

/* Admin drain / enable of backend <address> in pool <pool> (SPEC §6):
 * draining takes no new connections and its clients get close 1012, all at
 * once or spread over <spread_ms>. Return 0, or -1 if no such backend. */
int wsg_server_drain(wsg_server_t *srv, const char *pool, const char *address,
                     uint64_t spread_ms);
int wsg_server_enable(wsg_server_t *srv, const char *pool, const char *address);

/* Runtime changes of a pool's backends (SPEC §12), applied like a reload
 * of that pool alone: only the keys of the added or removed backend move,
 * the other backends keep their state and counters, live connections stay
 * (but a removed backend's, drained with 1012 spread over <spread_ms>, and
 * with rebalance set, those whose key moved to an added backend). The
 * next reload replaces them with the file's backends. */
typedef enum {
    WSG_CHANGE_OK = 0,
    WSG_CHANGE_NO_POOL,    /* no such pool */
    WSG_CHANGE_NO_BACKEND, /* no such backend in the pool */
    WSG_CHANGE_EXISTS,     /* the pool has a backend at that address already */
    WSG_CHANGE_LAST,       /* the pool's last backend cannot be removed */
    WSG_CHANGE_STOPPING,   /* shutdown has begun */
    WSG_CHANGE_NOMEM,
} wsg_change_t;
/* <bc> is checked by the caller (wsg_config_parse_backend) and copied. */
wsg_change_t wsg_server_add_backend(wsg_server_t *srv, const char *pool,
                                    const wsg_backend_conf_t *bc);
wsg_change_t wsg_server_remove_backend(wsg_server_t *srv, const char *pool, const char *address,
                                       uint64_t spread_ms);

/* DNS discovery (SPEC §12): the lookups of the running file's resolve
 * entries (NULL when it has none), and the lookups done since start by
 * result, WSG_DNS_NRESULTS counters (see wsgate/dns.h). */
typedef struct wsg_dns_s wsg_dns_t;
wsg_dns_t *wsg_server_dns(wsg_server_t *srv);
const uint64_t *wsg_server_dns_lookups(const wsg_server_t *srv);

/* Runs wsgate with <cfg> (borrowed; the server takes its own reference)
 * until a graceful shutdown completes. Returns the process exit status. */
int wsg_server_run(wsg_config_t *cfg);

#endif /* WSGATE_SERVER_H */
