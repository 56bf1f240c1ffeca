/*
 * The Prometheus text exposition (format 0.0.4) of wsgate's counters, for
 * GET /metrics (SPEC §7). Every metric name and label is documented in
 * docs/metrics.md.
 *
 * A pure text writer: it reads a wsg_stats_t (the workers' counters already
 * summed by wsg_server_stats()) and the backend states of a runtime, and
 * appends text to a growable buffer. It does no I/O and touches no loop, so
 * it is unit-tested without a server. It allocates: the buffer grows with
 * realloc().
 */
#ifndef WSGATE_METRICS_H
#define WSGATE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <wsgate/balancer.h>
#include <wsgate/server.h>

/* The Content-Type of the exposition. */
#define WSG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A growable text buffer. Zero-initialise it; release with
 * wsg_metrics_buf_free(). After an allocation failure <oom> is set, further
 * appends do nothing, and the text must not be used. */
typedef struct wsg_metrics_buf_s {
    char *data; /* owned; NUL-terminated when len > 0 */
    size_t len;
    size_t cap;
    int oom;
} wsg_metrics_buf_t;

void wsg_metrics_buf_free(wsg_metrics_buf_t *b);

/* Append <s>[0..n) / printf-formatted text to <b> (other text writers, such
 * as the dashboard, share the buffer type). */
void wsg_metrics_buf_put(wsg_metrics_buf_t *b, const char *s, size_t n);
void wsg_metrics_buf_printf(wsg_metrics_buf_t *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Everything one exposition reads. All pointers are borrowed for the call. */
typedef struct wsg_metrics_input_s {
    const wsg_stats_t *stats; /* required */
    const wsg_runtime_t *rt;  /* backend states; NULL: no backend metrics */
    /* The handshake latency histogram: hs_nbuckets buckets (at most
     * WSG_HS_BUCKETS), of which the first hs_nbuckets - 1 have the ascending
     * upper bounds hs_bounds_us (microseconds) and the last is +Inf. The
     * counts are stats->hs_latency_buckets, per bucket (not cumulative). */
    const uint64_t *hs_bounds_us;
    size_t hs_nbuckets;
    const char *version; /* wsgate version for wsgate_build_info */
    uint64_t uptime_ms;
    unsigned workers;
    /* The admin endpoint's own connections (src/ctl/admin.c): open now, and
     * the counts of those closed to admit a new one at the cap (shed) and
     * of new ones closed at accept because none could be (refused). */
    uint64_t admin_connections, admin_shed, admin_refused;
    /* DNS discovery's lookups by result (WSG_DNS_NRESULTS counters, in the
     * order of wsg_dns_result_t); NULL: none shown. */
    const uint64_t *dns_lookups;
} wsg_metrics_input_t;

/* Appends the whole exposition for <in> to <out>. Returns 0, or UV_ENOMEM
 * (-12) when the buffer could not grow (<out>->oom is then set). Call on
 * the server thread: it reads the backends' last_check. */
int wsg_metrics_render(wsg_metrics_buf_t *out, const wsg_metrics_input_t *in);

/* Appends <s>[0..len) to <out> as a label value, escaped per the text
 * format (backslash, double quote and line feed). Exposed for tests. */
void wsg_metrics_escape_label(wsg_metrics_buf_t *out, const char *s, size_t len);

#endif /* WSGATE_METRICS_H */
