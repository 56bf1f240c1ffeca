/*
 * The admin dashboard (SPEC §7, GET /): one self-contained HTML page, kept in
 * the binary (src/ctl/dashboard.html, turned into a C array at build time).
 *
 * A pure text writer, like metrics.h: it reads a runtime and a stats
 * snapshot and appends HTML to a wsg_metrics_buf_t; it does no I/O. With a
 * runtime, the pools, backends and listeners are written into the page, so
 * it is readable without JavaScript; without one (an admin token is set and
 * the request is not yet authenticated) the page carries no data and its
 * script asks for the token. Either way the script then follows /status.
 */
#ifndef WSGATE_DASHBOARD_H
#define WSGATE_DASHBOARD_H

#include <stdbool.h>
#include <stdint.h>

#include <wsgate/balancer.h>
#include <wsgate/metrics.h>
#include <wsgate/server.h>

/* What one page shows. Pointers are borrowed for the call. */
typedef struct wsg_dashboard_input_s {
    const wsg_runtime_t *rt;  /* NULL: the page without data */
    const wsg_stats_t *stats; /* required when rt is set */
    const char *version;
    uint64_t uptime_ms;
    unsigned workers;
    bool stopping;
} wsg_dashboard_input_t;

/* The Content-Security-Policy the page must be served with: its own inline
 * style and script by hash, requests to its own origin, nothing else. */
extern const char wsg_dashboard_csp[];

/* Appends the whole page for <in> to <out>. Returns 0, or UV_ENOMEM (-12)
 * when the buffer could not grow. Server thread only when <in>->rt is set
 * (it reads the backends' last_check). */
int wsg_dashboard_render(wsg_metrics_buf_t *out, const wsg_dashboard_input_t *in);

#endif /* WSGATE_DASHBOARD_H */
