/*
 * The Prometheus text exposition of wsgate's counters (format 0.0.4).
 *
 * It turns one snapshot (a wsg_stats_t summed over the workers, plus the
 * live backend states of a runtime) into text; it does not collect, keep or
 * reset anything, and it does no I/O, so the admin endpoint calls it on the
 * server thread for each scrape and the unit tests call it directly.
 *
 * Design choices: each family is written whole (HELP, TYPE, then its
 * samples), as the format requires; label sets that an operator will graph
 * from the start (handshake status 101, the close codes wsgate itself
 * records) are always present, even at zero, so that rate() works before
 * the first event, while other statuses and codes appear once seen, and
 * the families of a feature not in use (DNS lookups without "resolve", the
 * io_uring rings on epoll) not at all. The histogram's cumulative buckets
 * and _count are computed from the same per-bucket counts, so le="+Inf"
 * always equals _count even though the workers keep counting while the
 * snapshot is summed.
 */
#include <wsgate/metrics.h>

#include <wsgate/dns.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(wsg_metrics_buf_t *b, size_t extra) {
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static void put(wsg_metrics_buf_t *b, const char *s, size_t n) {
    if (grow(b, n) != 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(wsg_metrics_buf_t *b, const char *s) {
    put(b, s, strlen(s));
}

void wsg_metrics_buf_put(wsg_metrics_buf_t *b, const char *s, size_t n) {
    put(b, s, n);
}

void wsg_metrics_buf_printf(wsg_metrics_buf_t *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        put(b, small, (size_t)n);
        return;
    }
    if (grow(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Every writer here formats through the exported appender. */
#define putf wsg_metrics_buf_printf

void wsg_metrics_buf_free(wsg_metrics_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void wsg_metrics_escape_label(wsg_metrics_buf_t *out, const char *s, size_t len) {
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        const char *esc = s[i] == '\\'   ? "\\\\"
                          : s[i] == '"'  ? "\\\""
                          : s[i] == '\n' ? "\\n"
                                         : NULL;
        if (esc == NULL)
            continue;
        put(out, s + run, i - run);
        put(out, esc, 2);
        run = i + 1;
    }
    put(out, s + run, len - run);
}

/* HELP text escapes only backslash and line feed (the text format's rule
 * for docstrings); ours are constants, but keep them well-formed. */
static void family(wsg_metrics_buf_t *b, const char *name, const char *type, const char *help) {
    putf(b, "# HELP %s ", name);
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            puts_(b, "\\\\");
        else if (*p == '\n')
            puts_(b, "\\n");
        else
            put(b, p, 1);
    }
    putf(b, "\n# TYPE %s %s\n", name, type);
}

static void label(wsg_metrics_buf_t *b, const char *name, const char *value, int first) {
    putf(b, "%s%s=\"", first ? "" : ",", name);
    wsg_metrics_escape_label(b, value, strlen(value));
    put(b, "\"", 1);
}

/* Seconds from microseconds, exactly: "0.0005", "1", "2.5". */
static void put_seconds(wsg_metrics_buf_t *b, uint64_t us) {
    char frac[8];
    uint64_t f = us % 1000000;
    putf(b, "%" PRIu64, us / 1000000);
    if (f == 0)
        return;
    int n = snprintf(frac, sizeof(frac), "%06" PRIu64, f);
    while (n > 0 && frac[n - 1] == '0')
        n--;
    put(b, ".", 1);
    put(b, frac, (size_t)n);
}

static void simple(wsg_metrics_buf_t *b, const char *name, const char *type, const char *help,
                   uint64_t v) {
    family(b, name, type, help);
    putf(b, "%s %" PRIu64 "\n", name, v);
}

static void by_direction(wsg_metrics_buf_t *b, const char *name, const char *help,
                         const uint64_t v[2]) {
    static const char *const dir[2] = {"client_to_backend", "backend_to_client"};
    family(b, name, "counter", help);
    for (int i = 0; i < 2; i++)
        putf(b, "%s{direction=\"%s\"} %" PRIu64 "\n", name, dir[i], v[i]);
}

static void handshakes(wsg_metrics_buf_t *b, const wsg_stats_t *st) {
    family(b, "wsgate_handshakes_total", "counter",
           "Handshakes answered, by the HTTP status sent to the client (101: relaying).");
    for (int s = 100; s < 600; s++)
        if (s == 101 || st->handshake_status[s] != 0)
            putf(b, "wsgate_handshakes_total{status=\"%d\"} %" PRIu64 "\n", s,
                 st->handshake_status[s]);
}

static void closes(wsg_metrics_buf_t *b, const wsg_stats_t *st) {
    /* The codes wsgate sends or records itself (RFC 6455 §7.4.1): always
     * present. */
    static const int always[] = {1000, 1001, 1002, 1009, 1011, 1012};
    family(b, "wsgate_closes_total", "counter",
           "Relayed connections ended, by close code: the first close frame seen, or the code "
           "wsgate sent (\"other\": codes outside 1000-1014).");
    for (int code = 1000; code < 1015; code++) {
        int show = st->closes[code - 1000] != 0;
        for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
            show |= always[i] == code;
        if (show)
            putf(b, "wsgate_closes_total{code=\"%d\"} %" PRIu64 "\n", code,
                 st->closes[code - 1000]);
    }
    if (st->closes[15] != 0)
        putf(b, "wsgate_closes_total{code=\"other\"} %" PRIu64 "\n", st->closes[15]);
}

static void histogram(wsg_metrics_buf_t *b, const wsg_metrics_input_t *in, const char *name,
                      const char *help, const uint64_t *buckets, uint64_t sum_us) {
    size_t n = in->hs_nbuckets;
    uint64_t cum = 0;

    if (n > WSG_HS_BUCKETS)
        n = WSG_HS_BUCKETS;
    family(b, name, "histogram", help);
    for (size_t i = 0; i + 1 < n; i++) {
        cum += buckets[i];
        putf(b, "%s_bucket{le=\"", name);
        put_seconds(b, in->hs_bounds_us[i]);
        putf(b, "\"} %" PRIu64 "\n", cum);
    }
    if (n > 0)
        cum += buckets[n - 1];
    putf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    putf(b, "%s_sum ", name);
    put_seconds(b, sum_us);
    putf(b, "\n%s_count %" PRIu64 "\n", name, cum);
}

/* One sample per backend of every pool: <value> picks the number. */
typedef uint64_t (*backend_value_fn)(const wsg_backend_t *be);

static void backend_labels(wsg_metrics_buf_t *b, const char *name, const wsg_backend_t *be) {
    puts_(b, name);
    put(b, "{", 1);
    label(b, "pool", be->pool, 1);
    label(b, "backend", be->address, 0);
}

static void per_backend(wsg_metrics_buf_t *b, const wsg_runtime_t *rt, const char *name,
                        const char *type, const char *help, backend_value_fn value) {
    family(b, name, type, help);
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        const wsg_balancer_t *bal = rt->pools[p];
        for (size_t i = 0; i < bal->nbackends; i++) {
            backend_labels(b, name, bal->backends[i]);
            putf(b, "} %" PRIu64 "\n", value(bal->backends[i]));
        }
    }
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static uint64_t v_up(const wsg_backend_t *be) {
    return LOAD(((wsg_backend_t *)be)->state) == WSG_BACKEND_UP;
}
static uint64_t v_active(const wsg_backend_t *be) {
    return LOAD(((wsg_backend_t *)be)->active);
}
static uint64_t v_total(const wsg_backend_t *be) {
    return LOAD(((wsg_backend_t *)be)->total);
}
static uint64_t v_failures(const wsg_backend_t *be) {
    return LOAD(((wsg_backend_t *)be)->failures);
}

static uint64_t v_idle(const wsg_backend_t *be) {
    return LOAD(((wsg_backend_t *)be)->http_idle);
}
static uint64_t v_busy(const wsg_backend_t *be) {
    return LOAD(((wsg_backend_t *)be)->http_busy);
}

static void backends(wsg_metrics_buf_t *b, const wsg_runtime_t *rt) {
    static const wsg_backend_state_t states[] = {WSG_BACKEND_UP, WSG_BACKEND_DOWN,
                                                 WSG_BACKEND_DRAINING};
    per_backend(b, rt, "wsgate_backend_up", "gauge",
                "1 when the backend takes new connections (state up), else 0.", v_up);

    family(b, "wsgate_backend_state", "gauge",
           "The backend's state: 1 for the current one of up, down and draining.");
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        const wsg_balancer_t *bal = rt->pools[p];
        for (size_t i = 0; i < bal->nbackends; i++) {
            wsg_backend_t *be = bal->backends[i];
            int cur = LOAD(be->state);
            for (size_t s = 0; s < 3; s++) {
                backend_labels(b, "wsgate_backend_state", be);
                label(b, "state", wsg_backend_state_name(states[s]), 0);
                putf(b, "} %d\n", cur == (int)states[s]);
            }
        }
    }

    per_backend(b, rt, "wsgate_backend_active_connections", "gauge",
                "Connections relaying to (or connecting to) the backend now.", v_active);
    per_backend(b, rt, "wsgate_backend_connections_total", "counter",
                "Connections the balancer gave to the backend.", v_total);
    per_backend(b, rt, "wsgate_backend_failures_total", "counter",
                "Failed connects, handshake timeouts and failed active checks.", v_failures);
    per_backend(b, rt, "wsgate_backend_upstream_idle", "gauge",
                "Kept-alive plain HTTP connections to the backend idle in the pools now.", v_idle);
    per_backend(b, rt, "wsgate_backend_upstream_busy", "gauge",
                "Connections to the backend carrying a plain HTTP exchange now.", v_busy);

    family(b, "wsgate_rebalanced_total", "counter",
           "Connections closed with 1012 because their key moved to an added backend.");
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        puts_(b, "wsgate_rebalanced_total{");
        label(b, "pool", rt->pools[p]->conf->name, 1);
        putf(b, "} %" PRIu64 "\n", LOAD(rt->pools[p]->counters->rebalanced));
    }

    family(b, "wsgate_pool_http_requests_total", "counter",
           "Plain HTTP requests routed to the pool, by the status class the client got.");
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        for (int k = 1; k < 6; k++) {
            puts_(b, "wsgate_pool_http_requests_total{");
            label(b, "pool", rt->pools[p]->conf->name, 1);
            putf(b, ",class=\"%dxx\"} %" PRIu64 "\n", k,
                 LOAD(rt->pools[p]->counters->http_requests[k]));
        }
    }

    /* The last active check: only backends that have had one. last_check is
     * written on the server thread, where this runs. */
    family(b, "wsgate_backend_check_success", "gauge",
           "1 when the backend's last active health check passed, else 0.");
    for (size_t p = 0; p < rt->cfg->npools; p++)
        for (size_t i = 0; i < rt->pools[p]->nbackends; i++) {
            const wsg_backend_t *be = rt->pools[p]->backends[i];
            if (!be->last_check.done)
                continue;
            backend_labels(b, "wsgate_backend_check_success", be);
            putf(b, "} %d\n", be->last_check.ok ? 1 : 0);
        }
    family(b, "wsgate_backend_check_duration_seconds", "gauge",
           "How long the backend's last active health check took.");
    for (size_t p = 0; p < rt->cfg->npools; p++)
        for (size_t i = 0; i < rt->pools[p]->nbackends; i++) {
            const wsg_backend_t *be = rt->pools[p]->backends[i];
            if (!be->last_check.done)
                continue;
            backend_labels(b, "wsgate_backend_check_duration_seconds", be);
            put(b, "} ", 2);
            put_seconds(b, be->last_check.ms * 1000);
            put(b, "\n", 1);
        }
}

/* The io_uring transport's counters (wsg_uring_stats_t, summed over the
 * workers on io_uring). Written only when a worker runs on io_uring: on
 * epoll they would be zeros that say nothing, and their absence tells a
 * dashboard which method runs, as the other absent-until-used families do. */
static void uring(wsg_metrics_buf_t *b, const wsg_stats_t *st) {
    if (st->uring_workers == 0)
        return;
    simple(b, "wsgate_io_uring_workers", "gauge",
           "Workers whose plain TCP sides run on io_uring (\"io\": \"uring\").",
           st->uring_workers);
    simple(b, "wsgate_io_uring_submits_total", "counter",
           "io_uring_enter calls that submitted requests to the workers' rings.",
           st->uring_submits);
    simple(b, "wsgate_io_uring_completions_total", "counter",
           "Completions reaped from the workers' rings.", st->uring_cqes);
    simple(b, "wsgate_io_uring_enobufs_total", "counter",
           "Receives that found the buffer ring empty (ENOBUFS); each gives the ring more "
           "buffers.",
           st->uring_enobufs);
    simple(b, "wsgate_io_uring_sides", "gauge",
           "Client and backend sockets on the workers' rings now.", st->uring_sides);
    simple(b, "wsgate_io_uring_recv_buffers", "gauge",
           "Receive buffers (16 KiB each) given to the workers' buffer rings; grows on ENOBUFS "
           "up to 256 per worker, never shrinks.",
           st->uring_buffers);
    simple(b, "wsgate_io_uring_stashed_bytes", "gauge",
           "Bytes received on the rings for sides whose reader is stopped (backpressure), held "
           "until it reads again.",
           st->uring_stashed);
}

int wsg_metrics_render(wsg_metrics_buf_t *out, const wsg_metrics_input_t *in) {
    const wsg_stats_t *st = in->stats;

    family(out, "wsgate_build_info", "gauge", "Always 1; the version label says which wsgate.");
    puts_(out, "wsgate_build_info{");
    label(out, "version", in->version ? in->version : "unknown", 1);
    puts_(out, "} 1\n");
    family(out, "wsgate_uptime_seconds", "gauge", "Seconds since wsgate started.");
    puts_(out, "wsgate_uptime_seconds ");
    put_seconds(out, in->uptime_ms * 1000);
    put(out, "\n", 1);
    simple(out, "wsgate_workers", "gauge", "Worker threads (event loops).", in->workers);

    simple(out, "wsgate_connections_active", "gauge", "Client connections open now.",
           st->conns_active);
    simple(out, "wsgate_connections_total", "counter", "Client connections accepted.",
           st->conns_total);
    simple(out, "wsgate_connections_rejected_total", "counter",
           "Client connections refused by limits.max_connections or max_connections_per_ip.",
           st->conns_rejected);
    simple(out, "wsgate_buffers_in_use", "gauge",
           "I/O buffers (16 KiB each) held by connections now; 0 when every connection is idle.",
           st->buffers_in_use);
    simple(out, "wsgate_buffers_cached", "gauge",
           "I/O buffers (16 KiB each) kept by the workers' pools for reuse.", st->buffers_cached);
    simple(out, "wsgate_bulk_buffers_in_use", "gauge",
           "Bulk I/O buffers (64 KiB each) held by connections that stream now.",
           st->bulk_in_use);
    simple(out, "wsgate_bulk_buffers_cached", "gauge",
           "Bulk I/O buffers (64 KiB each) kept by the workers' pools for reuse.",
           st->bulk_cached);
    uring(out, st);
    handshakes(out, st);
    by_direction(out, "wsgate_frames_total", "WebSocket frames relayed, by direction.", st->frames);
    by_direction(out, "wsgate_bytes_total",
                 "Bytes relayed after the handshake (frame headers included), by direction.",
                 st->bytes);
    closes(out, st);
    simple(out, "wsgate_heartbeat_timeouts_total", "counter",
           "Connections closed because a side did not answer wsgate's ping in time.",
           st->heartbeat_timeouts);
    simple(out, "wsgate_idle_timeouts_total", "counter",
           "Connections closed after timeouts.idle_ms without a data frame.", st->idle_timeouts);
    simple(out, "wsgate_protocol_errors_total", "counter",
           "Connections closed for a WebSocket protocol error (1002) or a frame too big (1009).",
           st->protocol_errors);
    histogram(out, in, "wsgate_handshake_duration_seconds",
              "Time from accepting a client connection to the handshake answer (101 or error).",
              st->hs_latency_buckets, st->hs_latency_sum_us);
    family(out, "wsgate_http_requests_total", "counter",
           "Plain HTTP requests answered, by the status class the client got.");
    for (int k = 1; k < 6; k++)
        putf(out, "wsgate_http_requests_total{class=\"%dxx\"} %" PRIu64 "\n", k,
             st->http_requests[k]);
    if (st->http_requests[0] != 0)
        putf(out, "wsgate_http_requests_total{class=\"none\"} %" PRIu64 "\n",
             st->http_requests[0]);
    histogram(out, in, "wsgate_http_request_duration_seconds",
              "Time from a plain HTTP request's head to the end of its response.",
              st->http_latency_buckets, st->http_latency_sum_us);
    simple(out, "wsgate_upstream_connections_total", "counter",
           "Backend connections opened for plain HTTP exchanges.", st->upstream_opened);
    simple(out, "wsgate_upstream_reused_total", "counter",
           "Plain HTTP requests sent on a kept-alive backend connection from the pool.",
           st->upstream_reused);
    simple(out, "wsgate_upstream_retries_total", "counter",
           "Idempotent requests resent because their backend connection died before "
           "answering.",
           st->upstream_retried);
    simple(out, "wsgate_upstream_idle_connections", "gauge",
           "Kept-alive backend connections idle in the workers' pools now.", st->upstream_idle);
    simple(out, "wsgate_http_streaming_responses", "gauge",
           "Plain HTTP responses being relayed to clients now (SSE and long polls included).",
           st->http_streaming);
    simple(out, "wsgate_sse_heartbeats_total", "counter",
           "Comment lines sent into Server-Sent Events responses whose backend was silent for "
           "heartbeat.interval_ms.",
           st->sse_heartbeats);
    family(out, "wsgate_refused_total", "counter",
           "Requests refused and WebSockets closed by the edge checks (SPEC 11), by reason.");
    for (int k = 0; k < WSG_REFUSED_N; k++)
        putf(out, "wsgate_refused_total{reason=\"%s\"} %" PRIu64 "\n", wsg_refused_names[k],
             st->refused[k]);
    simple(out, "wsgate_admin_connections", "gauge", "Admin endpoint connections open now.",
           in->admin_connections);
    simple(out, "wsgate_admin_connections_shed_total", "counter",
           "Admin connections closed (idle first) to admit a new one at the connection cap.",
           in->admin_shed);
    simple(out, "wsgate_admin_connections_refused_total", "counter",
           "New admin connections closed at accept: the cap was reached and every connection "
           "was answering.",
           in->admin_refused);
    if (in->dns_lookups != NULL) {
        family(out, "wsgate_dns_lookups_total", "counter",
               "Lookups of backend names with \"resolve\": true, by result (ok, nxdomain, "
               "servfail, timeout, error).");
        for (int r = 0; r < WSG_DNS_NRESULTS; r++)
            putf(out, "wsgate_dns_lookups_total{result=\"%s\"} %" PRIu64 "\n",
                 wsg_dns_result_name((wsg_dns_result_t)r), in->dns_lookups[r]);
    }
    if (in->rt != NULL)
        backends(out, in->rt);
    return out->oom ? UV_ENOMEM : 0;
}
