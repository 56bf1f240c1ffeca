/*
 * Active health checks (SPEC §6): per pool, `tcp` (the connect succeeds),
 * `http` (GET health.path answers 2xx or 3xx) or `websocket` (a full
 * handshake on health.path with a correct Sec-WebSocket-Accept, a masked
 * ping answered by its pong, then a close 1000).
 *
 * The checks run on the server thread's loop, never on a worker, and each is
 * bounded by health.timeout_ms, so a slow or hostile backend can delay
 * nothing but its own next check. Every result goes to
 * wsg_balancer_check_result(), which applies rise/fall, records last_check
 * and logs state changes.
 *
 * Lifetime: one wsg_health_t serves one runtime. On reload the server stops
 * the old one and starts one for the new runtime; backend state objects are
 * shared between runtimes, so a kept backend keeps its state and counters.
 */
#ifndef WSGATE_HEALTH_H
#define WSGATE_HEALTH_H

#include <uv.h>

#include <wsgate/balancer.h>
#include <wsgate/server.h>

typedef struct wsg_health_s wsg_health_t;

/* Starts checks on wsg_server_loop(<srv>) for every pool of <rt> whose
 * health.type is not NONE: each backend is checked at once (the first checks
 * of a pool are spread over a few ms), then every health.interval_ms (less a
 * small random jitter, so that checks do not stay in step), and each check
 * gives up after health.timeout_ms. Takes a reference to <rt>. Returns a new
 * object, or NULL on ENOMEM. Server thread only. */
wsg_health_t *wsg_health_start(wsg_server_t *srv, wsg_runtime_t *rt);

/* The same on any loop (for tests and tools). */
wsg_health_t *wsg_health_start_on(uv_loop_t *loop, wsg_runtime_t *rt);

/* Cancels every check (a check in progress reports nothing) and closes the
 * handles. The object frees itself, and drops its reference to the
 * runtime, once the last handle is closed, i.e. during a later turn of the
 * loop (or at once when no pool has checks). <h> may be NULL. Not to be
 * called from a health check callback. */
void wsg_health_stop(wsg_health_t *h);

#endif /* WSGATE_HEALTH_H */
