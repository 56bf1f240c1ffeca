/*
 * The admin HTTP endpoint: a small HTTP/1.1 server on the server thread's
 * loop for the dashboard (/), /healthz, /status, /metrics, drain, enable and
 * reload (SPEC §7).
 *
 * It reads state (the runtime's backends, the workers' counters summed by
 * wsg_server_stats()) and asks the server to act (wsg_server_drain,
 * wsg_server_enable, wsg_server_reload); it changes nothing by itself and
 * never runs on a worker, so a slow or hostile admin client can delay only
 * other admin clients. It is not a general HTTP server: no request bodies
 * beyond WSG_ADMIN_MAX_BODY (only adding a backend reads one), no chunked
 * uploads, one request in progress per connection.
 *
 * Key design choices: every resource is bounded (connections, bytes per
 * request, time per request, per response and per idle keep-alive), and a
 * connection that is answering its request survives wsg_admin_stop(), because
 * POST /reload makes the server stop this very endpoint from inside the
 * handler and the operator still deserves the answer.
 */
#include <wsgate/admin.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <wsgate/balancer.h>
#include <wsgate/dashboard.h>
#include <wsgate/dns.h>
#include <wsgate/handshake.h>
#include <wsgate/log.h>
#include <wsgate/metrics.h>
#include <wsgate/pct.h>
#include <wsgate/worker.h>

#ifndef WSG_VERSION
#define WSG_VERSION "unknown"
#endif

#define IN_CAP (WSG_ADMIN_MAX_HEAD + WSG_ADMIN_MAX_BODY)
#define MAX_SEGS 8

typedef struct aconn_s {
    wsg_admin_t *a;
    struct aconn_s *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer; /* request, write or idle deadline */
    uv_write_t wreq;
    unsigned handles; /* open handles (tcp, timer) */
    bool closing;
    bool reading;
    bool writing;          /* a response is being written */
    bool busy;             /* a request is being handled (see wsg_admin_stop) */
    bool close_after;      /* close once the response is written */
    bool in_request;       /* bytes of a request have arrived */
    bool head_only;        /* the request was HEAD */
    uint64_t since;        /* loop time at which it went idle or its request began */
    wsg_http_head_t *head; /* owned: the parser of the current request */
    const char *body;      /* into <in>: the current request's body, <blen> bytes */
    size_t blen;
    char *out;             /* owned until the write completes */
    char peer[64];
    size_t inlen;
    char in[IN_CAP];
} aconn_t;

struct wsg_admin_s {
    wsg_server_t *srv;
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listener_open;
    char *bind;        /* owned copy */
    char *token;       /* owned copy, NULL: no authentication */
    aconn_t *conns;    /* live connections, newest first */
    unsigned nconns;   /* in the list (closing ones included) */
    unsigned nclosing; /* of which closing: they no longer count toward the cap */
    bool stopping;
    uint64_t refused_log_ms; /* last "too many connections" line */
    uint64_t shed_log_ms;    /* last "closing an idle connection" line */
    unsigned shed_unlogged;  /* sheddings since that line */
};

/* Process-wide counters for /metrics. They live outside wsg_admin_t because
 * a reload that changes the admin section replaces the endpoint, and a
 * Prometheus counter must not go back to zero. Server thread only. */
static uint64_t shed_total;    /* connections closed to admit a new one */
static uint64_t refused_total; /* connections closed at accept: no slot to free */

/* ---- lifetime ----------------------------------------------------------- */

static void maybe_free(wsg_admin_t *a) {
    if (!a->stopping || a->listener_open || a->nconns != 0)
        return;
    free(a->bind);
    free(a->token);
    free(a);
}

static void on_listener_closed(uv_handle_t *h) {
    wsg_admin_t *a = h->data;
    a->listener_open = false;
    maybe_free(a);
}

static void on_conn_closed(uv_handle_t *h) {
    aconn_t *c = h->data;
    wsg_admin_t *a = c->a;
    if (--c->handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->nconns--;
    a->nclosing--;
    wsg_http_head_free(c->head);
    free(c->out);
    free(c);
    maybe_free(a);
}

static void close_conn(aconn_t *c) {
    if (c->closing)
        return;
    c->closing = true;
    c->a->nclosing++;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

/* ---- responses ---------------------------------------------------------- */

static const char *reason(int status) {
    switch (status) {
    case 413:
        return "Content Too Large";
    case 422:
        return "Unprocessable Content";
    default:
        return wsg_http_reason(status);
    }
}

static void on_timer(uv_timer_t *t);
static void process(aconn_t *c);

static void arm(aconn_t *c, uint64_t ms) {
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_write(uv_write_t *req, int status) {
    aconn_t *c = req->data;
    c->writing = false;
    free(c->out);
    c->out = NULL;
    if (c->closing)
        return;
    if (status < 0 || c->close_after || c->a->stopping) {
        close_conn(c);
        return;
    }
    process(c); /* a pipelined request, or wait for the next one */
}

/* Sends one response. <extra> holds whole header lines ("Allow: GET\r\n").
 * The connection stops reading until it is written. */
static void respond(aconn_t *c, int status, const char *ctype, const char *body, size_t blen,
                    const char *extra, bool keepalive) {
    size_t cap = 512 + strlen(ctype) + strlen(extra) + blen;
    char *out = malloc(cap);

    if (out == NULL) {
        close_conn(c);
        return;
    }
    c->close_after = !keepalive || c->a->stopping;
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                     status, reason(status), ctype, blen, c->close_after ? "close" : "keep-alive",
                     extra);
    size_t len = (size_t)n;
    if (!c->head_only) {
        memcpy(out + len, body, blen);
        len += blen;
    }
    c->out = out;
    c->writing = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    arm(c, WSG_ADMIN_WRITE_MS);
    uv_buf_t buf = uv_buf_init(out, (unsigned)len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
        c->writing = false;
        free(c->out);
        c->out = NULL;
        close_conn(c);
    }
}

/* Sends <j> (taken) as a JSON response. */
static void send_json(aconn_t *c, int status, json_t *j, const char *extra, bool keepalive) {
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (text == NULL) {
        static const char oom[] = "{\"error\": \"out of memory\"}\n";
        respond(c, 500, "application/json", oom, sizeof(oom) - 1, "", false);
        return;
    }
    size_t n = strlen(text);
    char *body = realloc(text, n + 2);
    if (body == NULL) {
        free(text);
        close_conn(c);
        return;
    }
    body[n++] = '\n';
    respond(c, status, "application/json", body, n, extra, keepalive);
    free(body);
}

static void json_error(aconn_t *c, int status, const char *extra, bool keepalive, const char *fmt,
                       ...) WSG_PRINTF(5, 6);

static void json_error(aconn_t *c, int status, const char *extra, bool keepalive, const char *fmt,
                       ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    send_json(c, status, json_pack("{s:s}", "error", msg), extra, keepalive);
}

/* ---- request helpers ---------------------------------------------------- */

/* Whether the comma-separated header value <v> holds <token>
 * (case-insensitive), as in "Connection: keep-alive, Upgrade". */
static bool has_token(const char *v, size_t n, const char *token) {
    size_t tl = strlen(token), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return true;
    }
    return false;
}

/* Percent-decodes <s>[0..n) into <out> (NUL-terminated; <out> holds at least
 * n + 1 bytes). Returns -1 on a bad escape or an encoded NUL. */
static int pct_decode(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        if (i + 2 >= n)
            return -1;
        int hi = wsg_pct_hexval(s[i + 1]), lo = wsg_pct_hexval(s[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return -1;
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return 0;
}

/* The value of query parameter <name> in <q>[0..n), percent-decoded into
 * <out> (<cap> bytes). Returns 1 if present, 0 if absent, -1 if malformed
 * or too long. */
static int query_param(const char *q, size_t n, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name), i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && q[i] != '&')
            i++;
        if (i - s > nl && strncmp(q + s, name, nl) == 0 && q[s + nl] == '=') {
            size_t vs = s + nl + 1, vl = i - vs;
            if (vl + 1 > cap)
                return -1;
            return pct_decode(q + vs, vl, out) == 0 ? 1 : -1;
        }
        if (i - s == nl && strncmp(q + s, name, nl) == 0) {
            out[0] = '\0';
            return 1;
        }
        i++;
    }
    return 0;
}

/* Compares the presented token with the configured one in constant time:
 * both are hashed first, so neither the position of the first difference
 * nor the length of the secret shows in the timing. */
static bool token_ok(const wsg_admin_t *a, const char *got, size_t glen) {
    unsigned char h1[EVP_MAX_MD_SIZE], h2[EVP_MAX_MD_SIZE];
    unsigned l1 = 0, l2 = 0;
    if (EVP_Digest(a->token, strlen(a->token), h1, &l1, EVP_sha256(), NULL) != 1 ||
        EVP_Digest(got, glen, h2, &l2, EVP_sha256(), NULL) != 1 || l1 != l2)
        return false;
    return CRYPTO_memcmp(h1, h2, l1) == 0;
}

static bool authorized(aconn_t *c) {
    size_t vl;
    const char *v;
    if (c->a->token == NULL)
        return true;
    v = wsg_http_head_get(c->head, c->in, "Authorization", &vl);
    /* RFC 6750 §2.1: "Bearer" (case-insensitive), one or more spaces, the
     * token. */
    if (v == NULL || vl < 7 || strncasecmp(v, "Bearer ", 7) != 0)
        return false;
    v += 7;
    vl -= 7;
    while (vl > 0 && *v == ' ') {
        v++;
        vl--;
    }
    return vl > 0 && token_ok(c->a, v, vl);
}

/* ---- handlers ----------------------------------------------------------- */

static json_t *last_check_json(const wsg_backend_t *be) {
    if (!be->last_check.done)
        return json_null();
    return json_pack("{s:b,s:I,s:o}", "ok", be->last_check.ok, "ms", (json_int_t)be->last_check.ms,
                     "error", be->last_check.ok ? json_null() : json_string(be->last_check.error));
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static json_t *backend_json(wsg_backend_t *be, unsigned weight) {
    uint64_t fr[2], by[2];
    wsg_backend_traffic(be, fr, by);
    json_t *o = json_pack("{s:s,s:I,s:s,s:I,s:I,s:I,s:o}", "address", be->address, "weight",
                          (json_int_t)weight, "state",
                          wsg_backend_state_name((wsg_backend_state_t)LOAD(be->state)), "active",
                          (json_int_t)LOAD(be->active), "total", (json_int_t)LOAD(be->total),
                          "failures", (json_int_t)LOAD(be->failures), "last_check",
                          last_check_json(be));
    /* Directions as in "traffic": what the clients sent the backend, and
     * what it sent them. */
    json_object_set_new(o, "traffic",
                        json_pack("{s:{s:I,s:I},s:{s:I,s:I}}", "frames", "client_to_backend",
                                  (json_int_t)fr[0], "backend_to_client", (json_int_t)fr[1],
                                  "bytes", "client_to_backend", (json_int_t)by[0],
                                  "backend_to_client", (json_int_t)by[1]));
    /* Plain HTTP's backend connections: kept alive in the workers' pools,
     * and carrying an exchange now. */
    json_object_set_new(o, "upstream",
                        json_pack("{s:I,s:I}", "idle", (json_int_t)LOAD(be->http_idle), "busy",
                                  (json_int_t)LOAD(be->http_busy)));
    return o;
}

/* A pool as /status shows it: its backends in configuration order, then
 * those removed at run time whose connections have not all ended yet
 * (draining, "removed": true). */
static json_t *pool_json(const wsg_balancer_t *b) {
    json_t *arr = json_array();
    for (size_t i = 0; i < b->nbackends; i++)
        json_array_append_new(arr, backend_json(b->backends[i], b->conf->backends[i].weight));
    for (size_t i = 0; i < b->nleaving; i++) {
        if (LOAD(b->leaving[i].be->active) == 0)
            continue;
        json_t *o = backend_json(b->leaving[i].be, b->leaving[i].weight);
        json_object_set_new(o, "removed", json_true());
        json_array_append_new(arr, o);
    }
    return json_pack("{s:s,s:o}", "health", wsg_health_type_name(b->conf->health.type),
                     "backends", arr);
}

/* The resolve entries of pool <pool> (SPEC §12): the name, the addresses
 * in use and the last lookup. NULL when the pool has none. */
static json_t *resolve_json(wsg_server_t *srv, const char *pool) {
    wsg_dns_t *d = wsg_server_dns(srv);
    json_t *arr = NULL;
    for (size_t k = 0; k < wsg_dns_count(d); k++) {
        wsg_dns_status_t st;
        wsg_dns_status(d, k, &st);
        if (strcmp(st.pool, pool) != 0)
            continue;
        json_t *addrs = json_array();
        for (size_t i = 0; i < st.current->naddrs; i++) {
            char ip[64];
            if (wsg_dns_addr_format(&st.current->addrs[i], ip, sizeof(ip)) == 0)
                json_array_append_new(addrs, json_string(ip));
        }
        if (arr == NULL)
            arr = json_array();
        json_array_append_new(arr, json_pack("{s:s,s:I,s:o,s:{s:I,s:s}}", "name", st.name,
                                             "weight", (json_int_t)st.weight, "addresses", addrs,
                                             "last_lookup", "at_ms", (json_int_t)st.at_ms,
                                             "result", wsg_dns_result_name(st.result)));
    }
    return arr;
}

static void get_status(aconn_t *c, bool keepalive) {
    wsg_server_t *srv = c->a->srv;
    wsg_runtime_t *rt = wsg_server_runtime(srv);
    wsg_stats_t *st = malloc(sizeof(*st));
    json_t *pools = json_object();

    if (st == NULL || pools == NULL) {
        free(st);
        json_decref(pools);
        send_json(c, 500, NULL, "", false);
        return;
    }
    wsg_server_stats(srv, st);
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        json_t *pj = pool_json(rt->pools[p]);
        json_t *res = resolve_json(srv, rt->pools[p]->conf->name);
        if (res != NULL)
            json_object_set_new(pj, "resolve", res);
        json_object_set_new(pools, rt->pools[p]->conf->name, pj);
    }
    json_t *listeners = json_array();
    for (size_t i = 0; i < rt->cfg->nlisteners; i++) {
        const wsg_listener_conf_t *l = &rt->cfg->listeners[i];
        json_array_append_new(listeners, json_pack("{s:s,s:s,s:b,s:b}", "name", l->name, "bind",
                                                   l->bind, "tls", l->tls != NULL, "proxy_protocol",
                                                   l->proxy_protocol));
    }
    wsg_backend_change_t *ch = malloc(WSG_BACKEND_CHANGES * sizeof(*ch));
    json_t *changes = json_array();
    size_t nch = ch ? wsg_balancer_changes(ch, WSG_BACKEND_CHANGES) : 0;
    for (size_t i = 0; i < nch; i++)
        json_array_append_new(
            changes, json_pack("{s:I,s:I,s:s,s:s,s:s,s:s,s:s}", "seq", (json_int_t)ch[i].seq,
                               "at_ms", (json_int_t)ch[i].at_ms, "pool", ch[i].pool, "backend",
                               ch[i].address, "from", wsg_backend_state_name(ch[i].from), "to",
                               wsg_backend_state_name(ch[i].to), "reason", ch[i].why));
    free(ch);
    uint64_t up_ms = wsg_server_uptime_ms(srv);
    /* uptime_ms and the traffic counters let a poller (the dashboard)
     * compute rates from two samples without trusting its own clock. */
    json_t *j = json_pack(
        "{s:s,s:I,s:I,s:i,s:b,s:{s:I,s:I,s:I},s:{s:{s:I,s:I},s:{s:I,s:I}},s:o,s:o}", "version",
        WSG_VERSION, "uptime_s", (json_int_t)(up_ms / 1000), "uptime_ms", (json_int_t)up_ms,
        "workers", (int)wsg_server_nworkers(srv), "stopping", wsg_server_stopping(srv),
        "connections", "active", (json_int_t)st->conns_active, "total", (json_int_t)st->conns_total,
        "rejected", (json_int_t)st->conns_rejected, "traffic", "frames", "client_to_backend",
        (json_int_t)st->frames[0], "backend_to_client", (json_int_t)st->frames[1], "bytes",
        "client_to_backend", (json_int_t)st->bytes[0], "backend_to_client",
        (json_int_t)st->bytes[1], "listeners", listeners, "pools", pools);
    json_object_set_new(j, "changes", changes);
    json_object_set_new(j, "io", json_string(wsg_server_io(srv)));
    free(st);
    send_json(c, 200, j, "", keepalive);
}

static void get_metrics(aconn_t *c, bool keepalive) {
    wsg_server_t *srv = c->a->srv;
    wsg_stats_t *st = malloc(sizeof(*st));
    wsg_metrics_buf_t b = {0};

    if (st == NULL) {
        send_json(c, 500, NULL, "", false);
        return;
    }
    wsg_server_stats(srv, st);
    wsg_metrics_input_t in = {
        .stats = st,
        .rt = wsg_server_runtime(srv),
        .hs_bounds_us = wsg_hs_bucket_us,
        .hs_nbuckets = WSG_HS_BUCKETS,
        .version = WSG_VERSION,
        .uptime_ms = wsg_server_uptime_ms(srv),
        .workers = wsg_server_nworkers(srv),
        .admin_connections = c->a->nconns - c->a->nclosing,
        .admin_shed = shed_total,
        .admin_refused = refused_total,
        .dns_lookups = wsg_server_dns_lookups(srv),
    };
    int r = wsg_metrics_render(&b, &in);
    free(st);
    if (r != 0)
        send_json(c, 500, NULL, "", false);
    else
        respond(c, 200, WSG_METRICS_CONTENT_TYPE, b.data, b.len, "", keepalive);
    wsg_metrics_buf_free(&b);
}

/* Browsers send Origin with every POST a script makes (Fetch, "append a
 * request Origin header"), and a page of any site may POST to a loopback
 * admin address: without a token, that would let a web page drain
 * backends through the operator's browser. A state-changing request whose
 * Origin is present and is not this endpoint ("http://" + Host) is refused.
 * Clients that are not browsers send no Origin and are not affected. */
static bool cross_origin(aconn_t *c) {
    size_t ol, hl;
    const char *o = wsg_http_head_get(c->head, c->in, "Origin", &ol);
    const char *h = wsg_http_head_get(c->head, c->in, "Host", &hl);
    if (o == NULL)
        return false;
    if (h == NULL || ol != 7 + hl || strncasecmp(o, "http://", 7) != 0)
        return true;
    return strncasecmp(o + 7, h, hl) != 0;
}

/* GET /: the dashboard. Its data is written into the page only when it
 * may be read: no token is set, or the request carries the right one (a
 * browser's navigation does not, so with a token the page asks for it). */
static void get_dashboard(aconn_t *c, bool keepalive) {
    wsg_server_t *srv = c->a->srv;
    bool with_data = c->a->token == NULL || authorized(c);
    wsg_stats_t *st = with_data ? malloc(sizeof(*st)) : NULL;
    wsg_metrics_buf_t b = {0};
    char extra[1024];

    if (with_data && st == NULL) {
        send_json(c, 500, NULL, "", false);
        return;
    }
    if (st != NULL)
        wsg_server_stats(srv, st);
    wsg_dashboard_input_t in = {
        .rt = with_data ? wsg_server_runtime(srv) : NULL,
        .stats = st,
        .version = WSG_VERSION,
        .uptime_ms = wsg_server_uptime_ms(srv),
        .workers = wsg_server_nworkers(srv),
        .stopping = wsg_server_stopping(srv),
    };
    int r = wsg_dashboard_render(&b, &in);
    free(st);
    snprintf(extra, sizeof(extra),
             "Content-Security-Policy: %s\r\nX-Content-Type-Options: nosniff\r\n"
             "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n",
             wsg_dashboard_csp);
    if (r != 0)
        send_json(c, 500, NULL, "", false);
    else
        respond(c, 200, "text/html; charset=utf-8", b.data, b.len, extra, keepalive);
    wsg_metrics_buf_free(&b);
}

static void post_reload(aconn_t *c, bool keepalive) {
    wsg_config_errors_t errs = {0};

    WSG_LOG(WSG_LOG_INFO, "admin", "reload requested by %s", c->peer);
    /* This may stop and restart the admin endpoint itself; c->busy keeps
     * this connection alive until it has answered. */
    int r = wsg_server_reload(c->a->srv, &errs);
    if (r == 0) {
        wsg_config_errors_free(&errs);
        send_json(c, 200, json_pack("{s:b}", "reloaded", 1), "", keepalive);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < errs.count; i++)
        json_array_append_new(arr, json_string(errs.msgs[i]));
    if (errs.count == 0)
        json_array_append_new(arr, json_string("reload failed (see the log)"));
    wsg_config_errors_free(&errs);
    send_json(c, 422, json_pack("{s:b,s:o}", "reloaded", 0, "errors", arr), "", keepalive);
}

static int spread_param(aconn_t *c, const char *query, size_t qlen, uint64_t *spread,
                        bool keepalive);

static void post_backend(aconn_t *c, const char *pool, const char *addr, bool drain,
                         const char *query, size_t qlen, bool keepalive) {
    wsg_server_t *srv = c->a->srv;
    wsg_runtime_t *rt = wsg_server_runtime(srv);
    wsg_balancer_t *b = wsg_runtime_pool(rt, pool);
    uint64_t spread = 0;

    if (drain && spread_param(c, query, qlen, &spread, keepalive) != 0)
        return;
    if (b == NULL) {
        json_error(c, 404, "", keepalive, "no pool \"%s\"", pool);
        return;
    }
    int idx = wsg_balancer_find(b, addr);
    if (idx < 0) {
        json_error(c, 404, "", keepalive, "no backend \"%s\" in pool \"%s\"", addr, pool);
        return;
    }
    int r = drain ? wsg_server_drain(srv, pool, addr, spread) : wsg_server_enable(srv, pool, addr);
    if (r != 0) {
        json_error(c, 404, "", keepalive, "no backend \"%s\" in pool \"%s\"", addr, pool);
        return;
    }
    WSG_LOG(WSG_LOG_INFO, "admin", "%s of backend %s in pool %s requested by %s",
            drain ? "drain" : "enable", addr, pool, c->peer);
    /* The state as it is now (a reload inside the call is impossible, but
     * the runtime is looked up again in case the server replaced it). */
    rt = wsg_server_runtime(srv);
    b = wsg_runtime_pool(rt, pool);
    idx = b ? wsg_balancer_find(b, addr) : -1;
    const char *state =
        idx >= 0 ? wsg_backend_state_name((wsg_backend_state_t)LOAD(b->backends[idx]->state))
                 : (drain ? "draining" : "up");
    json_t *j = drain ? json_pack("{s:s,s:s,s:s,s:I}", "pool", pool, "backend", addr, "state",
                                  state, "spread_ms", (json_int_t)spread)
                      : json_pack("{s:s,s:s,s:s}", "pool", pool, "backend", addr, "state", state);
    send_json(c, 200, j, "", keepalive);
}

/* Answers a runtime change with the pool's new state, or its error. */
static void change_answer(aconn_t *c, wsg_change_t r, int ok_status, const char *pool,
                          const char *addr, bool keepalive) {
    switch (r) {
    case WSG_CHANGE_OK: {
        wsg_balancer_t *b = wsg_runtime_pool(wsg_server_runtime(c->a->srv), pool);
        json_t *j = b ? pool_json(b) : NULL;
        if (j != NULL)
            json_object_set_new(j, "pool", json_string(pool));
        send_json(c, ok_status, j, "", keepalive);
        return;
    }
    case WSG_CHANGE_NO_POOL:
        json_error(c, 404, "", keepalive, "no pool \"%s\"", pool);
        return;
    case WSG_CHANGE_NO_BACKEND:
        json_error(c, 404, "", keepalive, "no backend \"%s\" in pool \"%s\"", addr, pool);
        return;
    case WSG_CHANGE_EXISTS:
        json_error(c, 409, "", keepalive, "pool \"%s\" has a backend \"%s\" already", pool,
                   addr);
        return;
    case WSG_CHANGE_LAST:
        json_error(c, 409, "", keepalive,
                   "\"%s\" is the last backend of pool \"%s\": a pool keeps at least one", addr,
                   pool);
        return;
    case WSG_CHANGE_STOPPING:
        json_error(c, 503, "", keepalive, "wsgate is shutting down");
        return;
    case WSG_CHANGE_NOMEM:
        break;
    }
    json_error(c, 500, "", false, "out of memory");
}

/* POST /pools/P/backends: the body is one backends[] entry of the file,
 * checked by the file's own parser. */
static void post_add_backend(aconn_t *c, const char *pool, bool keepalive) {
    wsg_config_errors_t errs = {0};
    wsg_backend_conf_t bc = {0};

    if (wsg_runtime_pool(wsg_server_runtime(c->a->srv), pool) == NULL) {
        json_error(c, 404, "", keepalive, "no pool \"%s\"", pool);
        return;
    }
    if (wsg_config_parse_backend(c->body, c->blen, "request body", NULL, &bc, &errs) != 0) {
        json_t *arr = json_array();
        for (size_t i = 0; i < errs.count; i++) {
            WSG_LOG(WSG_LOG_INFO, "admin", "%s: add a backend to pool %s: 400: %s", c->peer,
                    pool, errs.msgs[i]);
            json_array_append_new(arr, json_string(errs.msgs[i]));
        }
        json_t *j = json_pack("{s:s,s:o}", "error",
                              errs.count ? errs.msgs[0] : "request body: not a backend", "errors",
                              arr);
        wsg_config_errors_free(&errs);
        send_json(c, 400, j, "", keepalive);
        return;
    }
    if (bc.resolve) {
        /* Its addresses would need lookups of their own, which follow the
         * file; a name that DNS discovers is written there. */
        json_error(c, 400, "", keepalive,
                   "request body: resolve: a name to look up is added in the file (and a "
                   "reload), not over the API");
        wsg_config_backend_clear(&bc);
        return;
    }
    wsg_change_t r = wsg_server_add_backend(c->a->srv, pool, &bc);
    WSG_LOG(WSG_LOG_INFO, "admin", "add of backend %s (weight %u) to pool %s requested by %s%s",
            bc.address, bc.weight, pool, c->peer, r == WSG_CHANGE_OK ? "" : ": refused");
    change_answer(c, r, 201, pool, bc.address, keepalive);
    wsg_config_backend_clear(&bc);
}

/* The ?spread_ms=N of a drain or a removal: 0 when absent, -1 (answered
 * 400) when malformed. */
static int spread_param(aconn_t *c, const char *query, size_t qlen, uint64_t *spread,
                        bool keepalive) {
    char val[32];
    int q = query_param(query, qlen, "spread_ms", val, sizeof(val));
    *spread = 0;
    if (q == 0)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = q > 0 && val[0] >= '0' && val[0] <= '9' ? strtoull(val, &end, 10) : 0;
    if (q < 0 || end == NULL || *end != '\0' || errno != 0) {
        json_error(c, 400, "", keepalive,
                   "spread_ms: expected a non-negative integer (milliseconds)");
        return -1;
    }
    *spread = v;
    return 0;
}

/* DELETE /pools/P/backends/ADDR[?spread_ms=N]. */
static void delete_backend(aconn_t *c, const char *pool, const char *addr, const char *query,
                           size_t qlen, bool keepalive) {
    uint64_t spread;
    if (spread_param(c, query, qlen, &spread, keepalive) != 0)
        return;
    wsg_change_t r = wsg_server_remove_backend(c->a->srv, pool, addr, spread);
    WSG_LOG(WSG_LOG_INFO, "admin", "removal of backend %s from pool %s requested by %s%s", addr,
            pool, c->peer, r == WSG_CHANGE_OK ? "" : ": refused");
    change_answer(c, r, 200, pool, addr, keepalive);
}

/* Routes one complete request. */
static void dispatch(aconn_t *c) {
    const char *method = wsg_http_head_method(c->head);
    const char *url, *v;
    size_t ulen, vl;
    bool keepalive;

    wsg_http_head_url(c->head, c->in, &url, &ulen);
    v = wsg_http_head_get(c->head, c->in, "Connection", &vl);
    if (wsg_http_head_version(c->head) >= 11)
        keepalive = v == NULL || !has_token(v, vl, "close");
    else
        keepalive = v != NULL && has_token(v, vl, "keep-alive");
    c->head_only = strcmp(method, "HEAD") == 0;
    bool get = strcmp(method, "GET") == 0 || c->head_only;
    bool post = strcmp(method, "POST") == 0;
    bool del = strcmp(method, "DELETE") == 0;

    /* Split the target into path and query, and the path into decoded
     * segments: a pool name or an address may hold escaped characters
     * ("%5B::1%5D:9001"), and an escaped "/" stays inside its segment. */
    size_t plen = 0;
    while (plen < ulen && url[plen] != '?')
        plen++;
    const char *query = plen < ulen ? url + plen + 1 : "";
    size_t qlen = plen < ulen ? ulen - plen - 1 : 0;
    char decoded[WSG_ADMIN_MAX_HEAD + MAX_SEGS];
    char *seg[MAX_SEGS];
    size_t nseg = 0, used = 0;
    bool bad = false, too_many = false;
    if (plen == 0 || url[0] != '/') {
        too_many = true; /* absolute-form or "*": nothing of ours */
    } else {
        size_t i = 1;
        for (;;) {
            size_t s = i;
            while (i < plen && url[i] != '/')
                i++;
            if (nseg == MAX_SEGS) {
                too_many = true;
                break;
            }
            seg[nseg] = decoded + used;
            if (pct_decode(url + s, i - s, seg[nseg]) != 0) {
                bad = true;
                break;
            }
            used += strlen(seg[nseg]) + 1;
            nseg++;
            if (i >= plen)
                break;
            i++;
        }
    }

    WSG_LOG(WSG_LOG_DEBUG, "admin", "%s %s %.*s", c->peer, method, (int)ulen, url);
    if (bad) {
        json_error(c, 400, "", false, "bad percent-encoding in the path");
        return;
    }
    if (!too_many && nseg == 1 && strcmp(seg[0], "healthz") == 0) {
        if (!get) {
            json_error(c, 405, "Allow: GET, HEAD\r\n", keepalive, "method %s not allowed", method);
            return;
        }
        if (wsg_server_stopping(c->a->srv))
            respond(c, 503, "text/plain; charset=utf-8", "draining\n", 9, "", keepalive);
        else
            respond(c, 200, "text/plain; charset=utf-8", "ok\n", 3, "", keepalive);
        return;
    }
    if (!too_many && nseg == 1 && seg[0][0] == '\0') {
        if (!get) {
            json_error(c, 405, "Allow: GET, HEAD\r\n", keepalive, "method %s not allowed", method);
            return;
        }
        get_dashboard(c, keepalive);
        return;
    }
    if (!authorized(c)) {
        WSG_LOG(WSG_LOG_INFO, "admin", "%s %s %.*s: 401 (missing or wrong bearer token)", c->peer,
                method, (int)ulen, url);
        json_error(c, 401, "WWW-Authenticate: Bearer realm=\"wsgate\"\r\n", keepalive,
                   "unauthorized: this path needs Authorization: Bearer TOKEN");
        return;
    }
    enum { R_NONE, R_STATUS, R_METRICS, R_RELOAD, R_DRAIN, R_ENABLE, R_ADD, R_REMOVE } route =
        R_NONE;
    if (!too_many && nseg == 1 && strcmp(seg[0], "status") == 0)
        route = R_STATUS;
    else if (!too_many && nseg == 1 && strcmp(seg[0], "metrics") == 0)
        route = R_METRICS;
    else if (!too_many && nseg == 1 && strcmp(seg[0], "reload") == 0)
        route = R_RELOAD;
    else if (!too_many && nseg == 5 && strcmp(seg[0], "pools") == 0 &&
             strcmp(seg[2], "backends") == 0 && seg[1][0] != '\0' && seg[3][0] != '\0')
        route = strcmp(seg[4], "drain") == 0    ? R_DRAIN
                : strcmp(seg[4], "enable") == 0 ? R_ENABLE
                                                : R_NONE;
    else if (!too_many && nseg == 3 && strcmp(seg[0], "pools") == 0 &&
             strcmp(seg[2], "backends") == 0 && seg[1][0] != '\0')
        route = R_ADD;
    else if (!too_many && nseg == 4 && strcmp(seg[0], "pools") == 0 &&
             strcmp(seg[2], "backends") == 0 && seg[1][0] != '\0' && seg[3][0] != '\0')
        route = R_REMOVE;

    switch (route) {
    case R_NONE:
        json_error(c, 404, "", keepalive, "not found");
        return;
    case R_STATUS:
    case R_METRICS:
        if (!get) {
            json_error(c, 405, "Allow: GET, HEAD\r\n", keepalive, "method %s not allowed", method);
            return;
        }
        if (route == R_STATUS)
            get_status(c, keepalive);
        else
            get_metrics(c, keepalive);
        return;
    case R_RELOAD:
    case R_DRAIN:
    case R_ENABLE:
    case R_ADD:
    case R_REMOVE:
        if (route == R_REMOVE ? !del : !post) {
            json_error(c, 405, route == R_REMOVE ? "Allow: DELETE\r\n" : "Allow: POST\r\n",
                       keepalive, "method %s not allowed", method);
            return;
        }
        if (cross_origin(c)) {
            WSG_LOG(WSG_LOG_WARN, "admin", "%s %s %.*s: 403 (cross-origin request from a browser)",
                    c->peer, method, (int)ulen, url);
            json_error(c, 403, "", keepalive,
                       "forbidden: a browser request from another origin cannot change state");
            return;
        }
        if (route == R_RELOAD)
            post_reload(c, keepalive);
        else if (route == R_ADD)
            post_add_backend(c, seg[1], keepalive);
        else if (route == R_REMOVE)
            delete_backend(c, seg[1], seg[3], query, qlen, keepalive);
        else
            post_backend(c, seg[1], seg[3], route == R_DRAIN, query, qlen, keepalive);
        return;
    }
}

/* ---- the connection ----------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    aconn_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->in + c->inlen, (unsigned)(IN_CAP - c->inlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    aconn_t *c = s->data;
    (void)buf;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        /* UV_ENOBUFS cannot happen: a request is refused before it fills
         * the buffer (head over MAX_HEAD or body over MAX_BODY). */
        close_conn(c);
        return;
    }
    c->inlen += (size_t)nread;
    process(c);
}

static void start_reading(aconn_t *c) {
    if (c->reading || c->closing)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        close_conn(c);
        return;
    }
    c->reading = true;
}

/* Makes all the progress the buffered bytes allow: parses, answers, and
 * moves on to a pipelined request once the answer is written. */
static void process(aconn_t *c) {
    while (!c->closing && !c->writing) {
        if (c->inlen == 0) {
            c->in_request = false;
            c->since = uv_now(c->a->loop);
            arm(c, WSG_ADMIN_IDLE_MS);
            start_reading(c);
            return;
        }
        if (!c->in_request) {
            c->in_request = true;
            c->since = uv_now(c->a->loop);
            arm(c, WSG_ADMIN_REQUEST_MS);
        }
        if (c->head == NULL &&
            (c->head = wsg_http_head_new(WSG_HTTP_REQUEST, WSG_ADMIN_MAX_HEAD)) == NULL) {
            close_conn(c);
            return;
        }
        c->head_only = false;
        switch (wsg_http_head_feed(c->head, c->in, c->inlen)) {
        case WSG_HEAD_INCOMPLETE:
            start_reading(c);
            return;
        case WSG_HEAD_COMPLETE:
            break;
        case WSG_HEAD_TOO_LARGE:
            json_error(c, 431, "", false, "request head larger than %d bytes", WSG_ADMIN_MAX_HEAD);
            return;
        default:
            json_error(c, 400, "", false, "malformed request");
            return;
        }
        size_t hlen = wsg_http_head_len(c->head), vl;
        const char *v;
        uint64_t blen = 0;
        if (wsg_http_head_get(c->head, c->in, "Transfer-Encoding", &vl) != NULL) {
            json_error(c, 400, "", false, "request bodies need a Content-Length");
            return;
        }
        if ((v = wsg_http_head_get(c->head, c->in, "Content-Length", &vl)) != NULL) {
            if (vl == 0 || vl > 10) {
                json_error(c, vl > 10 ? 413 : 400, "", false, "bad Content-Length");
                return;
            }
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9') {
                    json_error(c, 400, "", false, "bad Content-Length");
                    return;
                }
                blen = blen * 10 + (uint64_t)(v[i] - '0');
            }
            if (blen > WSG_ADMIN_MAX_BODY) {
                json_error(c, 413, "", false, "request body larger than %d bytes",
                           WSG_ADMIN_MAX_BODY);
                return;
            }
        }
        if (c->inlen < hlen + blen) {
            start_reading(c);
            return;
        }
        /* Only POST /pools/P/backends reads its body; others skip it. */
        c->body = c->in + hlen;
        c->blen = (size_t)blen;
        c->busy = true;
        dispatch(c);
        c->busy = false;
        if (c->closing)
            return;
        size_t used = hlen + (size_t)blen;
        memmove(c->in, c->in + used, c->inlen - used);
        c->inlen -= used;
        wsg_http_head_free(c->head);
        c->head = NULL;
        c->in_request = false;
        if (c->a->stopping && !c->writing)
            close_conn(c);
    }
}

static void on_timer(uv_timer_t *t) {
    aconn_t *c = t->data;
    if (c->writing || !c->in_request || c->busy) {
        close_conn(c); /* a reader that does not read, or an idle keep-alive */
        return;
    }
    WSG_LOG(WSG_LOG_INFO, "admin", "%s: request not complete within %d ms", c->peer,
            WSG_ADMIN_REQUEST_MS);
    c->head_only = false;
    json_error(c, 408, "", false, "request not complete within %d ms", WSG_ADMIN_REQUEST_MS);
}

static void peer_name(uv_tcp_t *t, char *out, size_t cap) {
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[64] = "?";
    snprintf(out, cap, "?");
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        uv_ip4_name(s4, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(s6, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
    }
}

static void free_handle(uv_handle_t *h) {
    free(h);
}

/* The connection to close so that a new one can be admitted at the cap, or
 * NULL. First choice: the one idle the longest, i.e. with no byte of a
 * request buffered (a keep-alive connection between requests, or one that
 * has sent nothing since it was accepted). Second choice, when every
 * connection has a request under way: the one whose request began the
 * longest ago, which is the slowest sender and the likeliest to be holding
 * a slot on purpose. A connection whose answer is being written, or being
 * built (busy), is never chosen: an answer once started is finished. */
static aconn_t *shed_victim(wsg_admin_t *a, bool *idle) {
    aconn_t *best_idle = NULL, *best_req = NULL;
    for (aconn_t *c = a->conns; c != NULL; c = c->next) {
        if (c->closing || c->busy || c->writing)
            continue;
        if (c->inlen == 0) {
            if (best_idle == NULL || c->since <= best_idle->since)
                best_idle = c;
        } else if (best_req == NULL || c->since <= best_req->since) {
            best_req = c;
        }
    }
    *idle = best_idle != NULL;
    return best_idle != NULL ? best_idle : best_req;
}

/* At the cap, frees a slot for the connection being accepted by closing
 * the shed_victim(). This is what keeps GET /healthz answerable when idle or
 * slow clients hold every slot: a liveness probe that had to wait for an
 * idle timeout would restart a healthy wsgate. Returns false when no
 * connection may be closed (every one is answering). Logs at most one line
 * a second, with the count of sheddings it stands for. */
static bool shed_one(wsg_admin_t *a) {
    bool idle;
    aconn_t *v = shed_victim(a, &idle);
    if (v == NULL)
        return false;
    uint64_t now = uv_now(a->loop);
    shed_total++;
    a->shed_unlogged++;
    if (now - a->shed_log_ms >= 1000) {
        WSG_LOG(WSG_LOG_WARN, "admin",
                "%d admin connections: closing %s (%s for %" PRIu64
                " ms) to admit a new one (%u closed so since the last such line)",
                WSG_ADMIN_MAX_CONNS, v->peer, idle ? "idle" : "request incomplete", now - v->since,
                a->shed_unlogged);
        a->shed_log_ms = now;
        a->shed_unlogged = 0;
    }
    close_conn(v);
    return true;
}

static void on_connection(uv_stream_t *server, int status) {
    wsg_admin_t *a = server->data;

    if (status < 0) {
        WSG_LOG(WSG_LOG_WARN, "admin", "accept on %s: %s", a->bind, uv_strerror(status));
        return;
    }
    if (a->stopping)
        return;
    /* Closing connections are on their way out (their handles close on
     * this loop iteration), so they do not hold a slot. */
    if (a->nconns - a->nclosing >= WSG_ADMIN_MAX_CONNS && !shed_one(a)) {
        /* Accept and close at once: left in the backlog, the connection
         * would stop libuv from accepting anything else. */
        uv_tcp_t *t = malloc(sizeof(*t));
        if (t == NULL)
            return;
        uv_tcp_init(a->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0) {
            refused_total++;
            if (uv_now(a->loop) - a->refused_log_ms >= 1000) {
                a->refused_log_ms = uv_now(a->loop);
                WSG_LOG(WSG_LOG_WARN, "admin",
                        "%d admin connections, all answering: closing new ones",
                        WSG_ADMIN_MAX_CONNS);
            }
        }
        uv_close((uv_handle_t *)t, free_handle);
        return;
    }
    aconn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->a = a;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        close_conn(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    peer_name(&c->tcp, c->peer, sizeof(c->peer));
    /* A new connection gets the request deadline, not the idle one. */
    c->in_request = true;
    c->since = uv_now(a->loop);
    arm(c, WSG_ADMIN_REQUEST_MS);
    start_reading(c);
}

/* ---- start / stop ------------------------------------------------------- */

static int bind_fd(const wsg_admin_conf_t *conf, char *err, size_t errcap) {
    int one = 1;
    int fd = socket(conf->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&conf->addr.ss, conf->addr.len) == -1)
        goto fail;
    if (listen(fd, 128) == -1)
        goto fail;
    return fd;
fail : {
    int e = errno;
    snprintf(err, errcap, "cannot bind admin %s: %s", conf->bind, strerror(e));
    if (fd != -1)
        close(fd);
    return -1;
}
}

wsg_admin_t *wsg_admin_start(wsg_server_t *srv, const wsg_admin_conf_t *conf, char *err,
                             size_t errcap) {
    wsg_admin_t *a = calloc(1, sizeof(*a));
    int fd = -1, r;

    if (a == NULL)
        goto fail_alloc;
    a->srv = srv;
    a->loop = wsg_server_loop(srv);
    a->bind = strdup(conf->bind ? conf->bind : "?");
    a->token = conf->token ? strdup(conf->token) : NULL;
    if (a->bind == NULL || (conf->token && a->token == NULL))
        goto fail_alloc;
    if ((fd = bind_fd(conf, err, errcap)) == -1)
        goto fail_free;
    uv_tcp_init(a->loop, &a->listener);
    a->listener.data = a;
    a->listener_open = true;
    if ((r = uv_tcp_open(&a->listener, fd)) != 0 ||
        (r = uv_listen((uv_stream_t *)&a->listener, 128, on_connection)) != 0) {
        snprintf(err, errcap, "cannot listen on admin %s: %s", a->bind, uv_strerror(r));
        /* The handle owns the descriptor now: closing it closes both. */
        a->stopping = true;
        uv_close((uv_handle_t *)&a->listener, on_listener_closed);
        return NULL;
    }
    return a;
fail_alloc:
    snprintf(err, errcap, "cannot start admin %s: out of memory", conf->bind ? conf->bind : "?");
fail_free:
    if (a != NULL) {
        free(a->bind);
        free(a->token);
        free(a);
    }
    return NULL;
}

void wsg_admin_stop(wsg_admin_t *a) {
    if (a == NULL || a->stopping)
        return;
    a->stopping = true;
    /* uv_close() closes the descriptor now, so the address is free for a
     * new endpoint as soon as this returns. */
    uv_close((uv_handle_t *)&a->listener, on_listener_closed);
    for (aconn_t *c = a->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (!c->busy && !c->writing)
            close_conn(c);
    }
    maybe_free(a);
}
