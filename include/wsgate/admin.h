/*
 * The admin HTTP endpoint (SPEC §7): its own listener on the server thread's
 * loop, never on a worker, so nothing it does can stall the proxy.
 *
 *   GET  /                                   the dashboard (HTML, dashboard.h)
 *   GET  /healthz                            200 "ok", 503 "draining" once stopping
 *   GET  /status                             JSON: version, uptime, connections, pools
 *   GET  /metrics                            Prometheus text (docs/metrics.md)
 *   POST /pools/P/backends/ADDR/drain        [?spread_ms=N] close 1012, no new connections
 *   POST /pools/P/backends/ADDR/enable       back to normal checking
 *   POST /pools/P/backends                   add a backend (body: a backends[] entry)
 *   DELETE /pools/P/backends/ADDR            [?spread_ms=N] remove it, its clients get 1012
 *   POST /reload                             as SIGHUP; answers with the check's result
 *   anything else                            404 / 405, JSON {"error": ...}
 *
 * HTTP/1.1 with keep-alive. Bounded: at most WSG_ADMIN_MAX_CONNS connections
 * (at the cap a new one is admitted by closing the one idle the longest, else
 * the one whose request began first, so /healthz stays answerable; it is
 * closed at accept only when every connection is being answered), requests of at most WSG_ADMIN_MAX_HEAD bytes of
 * head and WSG_ADMIN_MAX_BODY of body, one request in progress per
 * connection, and time limits on a request, a response and an idle
 * connection. With a token, every path but /healthz and / needs
 * "Authorization: Bearer TOKEN" (else 401); / then carries no data unless
 * the request has it. A POST whose Origin is not this endpoint gets 403.
 */
#ifndef WSGATE_ADMIN_H
#define WSGATE_ADMIN_H

#include <stddef.h>

#include <wsgate/config.h>
#include <wsgate/server.h>

#define WSG_ADMIN_MAX_CONNS 64
#define WSG_ADMIN_MAX_HEAD 8192
#define WSG_ADMIN_MAX_BODY 8192
#define WSG_ADMIN_REQUEST_MS 10000 /* a request must arrive whole within this */
#define WSG_ADMIN_WRITE_MS 10000   /* a response must be taken within this */
#define WSG_ADMIN_IDLE_MS 30000    /* a keep-alive connection may wait this long */

typedef struct wsg_admin_s wsg_admin_t;

/* Binds <conf>->addr (SO_REUSEADDR, no SO_REUSEPORT: a second wsgate on the
 * same admin address must fail) on wsg_server_loop(<srv>) and starts
 * serving. <conf> is copied (bind text and token); it need not outlive the
 * call. Returns a new endpoint, or NULL with a message in <err> such as
 * "cannot bind admin 127.0.0.1:9090: Address already in use". Server thread
 * only. */
wsg_admin_t *wsg_admin_start(wsg_server_t *srv, const wsg_admin_conf_t *conf, char *err,
                             size_t errcap);

/* Closes the listener at once (the address can be bound again when this
 * returns) and every admin connection; a response being written, or being
 * built by the caller's own request (POST /reload stops the endpoint from
 * inside its handler), is finished first and then the connection closes.
 * The object frees itself once its last handle is closed. <a> may be NULL.
 * Server thread only. */
void wsg_admin_stop(wsg_admin_t *a);

#endif /* WSGATE_ADMIN_H */
