/*
 * Backend connections and the worker's pool of idle ones (SPEC §9).
 *
 * A backend connection is allocated apart from the client connection that
 * uses it, so that it can outlive that client in the pool and serve the
 * next plain HTTP request for the same backend on this worker. Private to
 * src/proxy: conn.c attaches and detaches upstreams, exchange.c decides
 * whether one may be kept.
 */
#ifndef WSGATE_UPSTREAM_H
#define WSGATE_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <wsgate/balancer.h>
#include <wsgate/transport.h>
#include <wsgate/worker.h>

typedef struct wsg_upstream_s wsg_upstream_t;
typedef struct wsg_uslot_s wsg_uslot_t;

/* Every relayed WebSocket holds one while its backend connection is open,
 * so it carries only what an attached connection needs: what the pool
 * needs of an idle one (its place in the idle lists, its expiry) is a
 * record of its own, allocated when it is parked (upstream.c). */
struct wsg_upstream_s {
    wsg_side_t io;              /* first: the handle's address is the upstream's; its
                                   data is the attached connection, or while idle
                                   the pool's record of it */
    wsg_backend_t *be;          /* owned reference: the backend it is connected to */
    unsigned tls : 1;           /* connected through the pool's TLS */
    unsigned busy : 1;          /* counted as carrying a plain HTTP exchange */
    unsigned reading : 1;       /* read_start is in effect on its socket */
    unsigned idle : 1;          /* parked in the pool: io.tcp.data is its record */
};

/* A new upstream for <be> with an initialised, unconnected TCP side.
 * Returns NULL on ENOMEM. */
wsg_upstream_t *wsg__upstream_new(wsg_worker_t *w, wsg_backend_t *be, bool tls);

/* An idle connection to <be> (plain or TLS as <tls> says), newest first, or
 * NULL. With <probe>, one that the backend closed since the loop last
 * looked (a FIN waiting in the socket) is skipped: for a request that
 * could not be retried if it failed. The upstream may still be reading
 * (u->reading); its handle's data is the caller's to set. */
wsg_upstream_t *wsg__upstream_take(wsg_worker_t *w, wsg_backend_t *be, bool tls, bool probe);

/* Keeps <u> (connected, nothing queued) idle for at most
 * <idle_ms>, when its backend has fewer than <keep> idle connections on this
 * worker. Returns false when it was not kept: the caller closes it. */
bool wsg__upstream_park(wsg_worker_t *w, wsg_upstream_t *u, unsigned keep, uint64_t idle_ms);

/* Reading, for the connection it is attached to: <alloc_cb> and <read_cb>
 * get the bytes (the same pair for every upstream of a worker: they are
 * kept once, in the pool, not in each upstream). The socket stays registered for reading across a park and
 * a take (the pool reads an idle connection anyway), so that reuse costs
 * no epoll_ctl. Returns 0 or a UV_E* code. */
int wsg__upstream_read_start(wsg_upstream_t *u, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
void wsg__upstream_read_stop(wsg_upstream_t *u);

/* Marks <u> as carrying a plain HTTP exchange (busy in /status), or not. */
void wsg__upstream_set_busy(wsg_upstream_t *u, bool busy);

/* Frees <u> once its handle has closed. */
void wsg__upstream_free(wsg_upstream_t *u);

static inline wsg_upstream_t *wsg__upstream_of(uv_handle_t *h) {
    return (wsg_upstream_t *)(void *)h;
}

#endif /* WSGATE_UPSTREAM_H */
