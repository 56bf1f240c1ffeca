/*
 * SPEC §11 at the edge of a connection: what a request must show before
 * any byte of it reaches a backend, and what a relayed client may do.
 *
 * Before routing: the per-address request bucket (the table shared by all
 * workers). After routing, for upgrades and plain requests alike: Origin
 * (upgrades only; a present, unlisted one is refused before the token is
 * looked at, a missing one is decided after it), then the route's token:
 * every configured source is searched, two different tokens are refused,
 * the token is verified against the verifier's keys with the wall clock,
 * and the request head is rewritten in the request buffer for the backend:
 * the token removed from every place it was found, the claims of
 * claims_to_headers set and the client's copies of those headers dropped.
 * The head is then parsed again, so everything after this (sticky key,
 * forwarding) reads the rewritten request and nothing else needs to know.
 *
 * The token never appears in a log line, an error or an access line: only
 * wsg_jwt_strerror()'s static reasons do.
 */
#include "conn_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <wsgate/origin.h>

_Static_assert((int)WSG_FROM_HEADER == (int)WSG_JWT_FROM_HEADER &&
                   (int)WSG_FROM_SUBPROTOCOL == (int)WSG_JWT_FROM_SUBPROTOCOL &&
                   (int)WSG_FROM_COOKIE == (int)WSG_JWT_FROM_COOKIE &&
                   (int)WSG_FROM_QUERY == (int)WSG_JWT_FROM_QUERY,
               "config.h's token sources mirror jwt.h's");

#define BEARER "WWW-Authenticate: Bearer\r\n"
#define BEARER_INVALID "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"

static const wsg_config_t *cfg_of(const wsg_conn_t *c) { return c->rt->cfg; }

#define ELOG(c, level, ...)                                                            \
    do {                                                                               \
        if ((level) >= wsg_log_threshold()) {                                          \
            wsg_log_ctx_t ctx_;                                                        \
            wsg__conn_log_ctx((c), &ctx_);                                             \
            wsg_log_write((level), "edge", &ctx_, __VA_ARGS__);                        \
        }                                                                              \
    } while (0)

/* Token times are wall clock (NumericDate), not the loop's monotonic ms. */
static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One writer per worker counter: a relaxed load and store. */
static void count(wsg_conn_t *c, wsg_refused_t reason) {
    _Atomic uint64_t *n = &c->w->stats.refused[reason];
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Answers <status> with <headers> (lines, or NULL), counted under <reason>;
 * reject's log line and the access line carry <why>. Returns -1. */
static int refuse(wsg_conn_t *c, wsg_refused_t reason, int status, const char *why,
                  const char *headers) {
    count(c, reason);
    wsg__conn_refuse(c, status, why, headers);
    return -1;
}

static bool name_is(const char *name, size_t nl, const char *want) {
    size_t wl = strlen(want);
    return nl == wl && strncasecmp(name, want, wl) == 0;
}

/* ---- rate ---------------------------------------------------------------------- */

int wsg__edge_rate(wsg_conn_t *c) {
    const wsg_rate_t *r = &c->rt->handshake_rate;
    unsigned char key[17];
    uint64_t wait = 0;

    if (r->per_s == 0)
        return 0;
    size_t kl = wsg_rate_addr_key(&c->client_addr.sa, key);
    if (kl == 0 || wsg_rate_table_take(wsg_server_rate_table(c->w->server), r, key, kl,
                                       uv_now(&c->w->loop), &wait))
        return 0;
    char h[48];
    snprintf(h, sizeof(h), "Retry-After: %u\r\n", (unsigned)wsg_rate_retry_after_s(wait));
    return refuse(c, WSG_REFUSED_RATE, 429, "handshakes_per_ip_per_s reached", h);
}

/* ---- Origin ---------------------------------------------------------------------- */

/* With routes[].origins set, an upgrade from a page of another site is
 * refused before any backend hears of it (cross-site WebSocket hijacking,
 * RFC 6455 §10.2). Returns -1 when it answered 403; sets *missing when the
 * request has no Origin (decided once the token is known). */
static int origin_check(wsg_conn_t *c, const wsg_route_conf_t *route, bool *missing) {
    wsg_hs_t *hs = c->hs;
    const char *origin = NULL;
    size_t olen = 0, nseen = 0;

    for (size_t i = 0, n = wsg_http_head_count(hs->req_head); i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        wsg_http_head_at(hs->req_head, hs->req, i, &name, &nl, &value, &vl);
        if (name_is(name, nl, "Origin")) {
            nseen++;
            origin = value;
            olen = vl;
        }
    }
    if (nseen > 1)
        return refuse(c, WSG_REFUSED_ORIGIN, 403, "more than one Origin header", NULL);
    wsg_origin_verdict_t v = wsg_origin_check((const char *const *)route->origins,
                                              route->norigins, origin, olen);
    if (v == WSG_ORIGIN_REFUSED) {
        ELOG(c, WSG_LOG_INFO, "Origin %.*s is not in the route's origins",
             (int)(olen > 200 ? 200 : olen), origin);
        return refuse(c, WSG_REFUSED_ORIGIN, 403, "Origin not allowed", NULL);
    }
    *missing = v == WSG_ORIGIN_MISSING;
    return 0;
}

/* ---- finding the token -------------------------------------------------------------- */

typedef struct found_s {
    const char *tok; /* into hs->req */
    size_t len;
} found_t;

/* Records a token; -1 when another, different one was found before. */
static int found_add(found_t *f, const char *t, size_t n) {
    if (f->tok != NULL && (f->len != n || memcmp(f->tok, t, n) != 0))
        return -1;
    f->tok = t;
    f->len = n;
    return 0;
}

static const char *source_header(wsg_from_kind_t kind) {
    switch (kind) {
    case WSG_FROM_HEADER:
        return "Authorization";
    case WSG_FROM_SUBPROTOCOL:
        return "Sec-WebSocket-Protocol";
    case WSG_FROM_COOKIE:
        return "Cookie";
    default:
        return NULL;
    }
}

/* One header value of source <f>: the token, and the value to forward in
 * rest[0..*rest_len) when <rest> is not NULL (Authorization: nothing). */
static wsg_jwt_src_t find_in_value(const wsg_auth_from_t *f, const char *v, size_t n,
                                   const char **t, size_t *tl, char *rest, size_t *rest_len) {
    switch (f->kind) {
    case WSG_FROM_HEADER:
        if (rest_len != NULL)
            *rest_len = 0;
        return wsg_jwt_from_authorization(v, n, t, tl);
    case WSG_FROM_SUBPROTOCOL:
        return wsg_jwt_from_subprotocol(v, n, t, tl, rest, rest_len);
    case WSG_FROM_COOKIE:
        return wsg_jwt_from_cookie(v, n, f->name, strlen(f->name), t, tl, rest, rest_len);
    default:
        return WSG_JWT_SRC_NONE;
    }
}

/* Searches source <f> of the request (every header it may be in) and adds
 * what it holds to <out>. A subprotocol is only looked at on an upgrade. */
static wsg_jwt_src_t find_in(const wsg_hs_t *hs, const wsg_auth_from_t *f, bool websocket,
                             found_t *out) {
    const char *t;
    size_t tl;
    wsg_jwt_src_t res = WSG_JWT_SRC_NONE;

    if (f->kind == WSG_FROM_QUERY) {
        const char *url;
        size_t ul;
        wsg_http_head_url(hs->req_head, hs->req, &url, &ul);
        res = wsg_jwt_from_query(url, ul, f->name, strlen(f->name), &t, &tl, NULL, NULL);
        if (res == WSG_JWT_SRC_FOUND && found_add(out, t, tl) != 0)
            return WSG_JWT_SRC_CONFLICT;
        return res;
    }
    if (f->kind == WSG_FROM_SUBPROTOCOL && !websocket)
        return WSG_JWT_SRC_NONE;
    const char *want = source_header(f->kind);
    for (size_t i = 0, n = wsg_http_head_count(hs->req_head); i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        wsg_http_head_at(hs->req_head, hs->req, i, &name, &nl, &value, &vl);
        if (!name_is(name, nl, want))
            continue;
        wsg_jwt_src_t r = find_in_value(f, value, vl, &t, &tl, NULL, NULL);
        if (r < 0)
            return r;
        if (r == WSG_JWT_SRC_FOUND) {
            if (found_add(out, t, tl) != 0)
                return WSG_JWT_SRC_CONFLICT;
            res = r;
        }
    }
    return res;
}

/* ---- the head the backend sees ----------------------------------------------------- */

typedef struct writer_s {
    char *p;
    size_t len;
} writer_t;

static void put(writer_t *w, const char *s, size_t n) {
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void put_header(writer_t *w, const char *name, size_t nl, const char *v, size_t vl) {
    put(w, name, nl);
    put(w, ": ", 2);
    put(w, v, vl);
    put(w, "\r\n", 2);
}

static bool is_claim_header(const wsg_auth_conf_t *a, const char *name, size_t nl) {
    for (size_t i = 0; i < a->nclaims; i++)
        if (name_is(name, nl, a->claims[i].header))
            return true;
    return false;
}

/* Strips the token from one header value, through every source of <a> of
 * the header's kind, ping-ponging between two scratch buffers of at least
 * vl bytes. Returns false when the header is to be dropped; else *v and *vl are
 * what to forward. */
static bool strip_value(const wsg_auth_conf_t *a, wsg_from_kind_t kind, const char **v,
                        size_t *vl, char *scratch[2]) {
    int flip = 0;
    for (size_t k = 0; k < a->nfrom; k++) {
        const wsg_auth_from_t *f = &a->from[k];
        const char *t;
        size_t tl, rl = 0;
        if (f->kind != kind)
            continue;
        if (find_in_value(f, *v, *vl, &t, &tl, scratch[flip], &rl) != WSG_JWT_SRC_FOUND)
            continue;
        if (rl == 0)
            return false;
        *v = scratch[flip];
        *vl = rl;
        flip ^= 1;
    }
    return true;
}

/* The request line, with the token cut from the query by every query
 * source. */
static void write_request_line(const wsg_hs_t *hs, const wsg_auth_conf_t *a, writer_t *w,
                               char *scratch) {
    const char *url, *buf = hs->req;
    size_t ul;
    wsg_http_head_url(hs->req_head, buf, &url, &ul);
    put(w, buf, (size_t)(url - buf));
    size_t at = w->len;
    put(w, url, ul);
    for (size_t k = 0; k < a->nfrom; k++) {
        const wsg_auth_from_t *f = &a->from[k];
        const char *t;
        size_t tl, rl;
        if (f->kind != WSG_FROM_QUERY)
            continue;
        if (wsg_jwt_from_query(w->p + at, w->len - at, f->name, strlen(f->name), &t, &tl, scratch,
                               &rl) != WSG_JWT_SRC_FOUND)
            continue;
        memcpy(w->p + at, scratch, rl);
        w->len = at + rl;
    }
    /* " HTTP/1.1\r\n": the parser refused a line not ended by CRLF. */
    const char *end = url + ul;
    const char *crlf = memmem(end, wsg_http_head_len(hs->req_head) - (size_t)(end - buf), "\r\n", 2);
    put(w, end, (size_t)(crlf - end) + 2);
}

/* Writes the head for the backend into w (room: the old head plus the
 * claim headers). */
static void write_head(const wsg_conn_t *c, const wsg_auth_conf_t *a, bool websocket,
                       writer_t *w, char *scratch[2]) {
    const wsg_hs_t *hs = c->hs;
    write_request_line(hs, a, w, scratch[0]);
    for (size_t i = 0, n = wsg_http_head_count(hs->req_head); i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        wsg_http_head_at(hs->req_head, hs->req, i, &name, &nl, &value, &vl);
        if (is_claim_header(a, name, nl))
            continue; /* the client's copy: only wsgate sets these */
        wsg_from_kind_t kind = 0;
        if (name_is(name, nl, "Authorization"))
            kind = WSG_FROM_HEADER;
        else if (websocket && name_is(name, nl, "Sec-WebSocket-Protocol"))
            kind = WSG_FROM_SUBPROTOCOL;
        else if (name_is(name, nl, "Cookie"))
            kind = WSG_FROM_COOKIE;
        if (kind != 0 && !strip_value(a, kind, &value, &vl, scratch))
            continue;
        put_header(w, name, nl, value, vl);
    }
    for (size_t i = 0; i < a->nclaims; i++) {
        const char *v;
        size_t vl;
        const char *h = a->claims[i].header;
        if (wsg_jwt_claim(c->edge->jwt, a->claims[i].claim, &v, &vl))
            put_header(w, h, strlen(h), v, vl);
    }
    put(w, "\r\n", 2);
}

/* Replaces the head in hs->req by the one for the backend, keeping what
 * followed it (early frames, the body), and parses it again. */
static int rewrite_request(wsg_conn_t *c, const wsg_auth_conf_t *a, bool websocket) {
    wsg_hs_t *hs = c->hs;
    size_t head = wsg_http_head_len(hs->req_head), after = hs->req_len - head;
    size_t room = head + 2;

    for (size_t i = 0; i < a->nclaims; i++) {
        const char *v;
        size_t vl;
        if (wsg_jwt_claim(c->edge->jwt, a->claims[i].claim, &v, &vl))
            room += strlen(a->claims[i].header) + vl + 4;
    }
    size_t cap = room + after > hs->req_cap ? room + after : hs->req_cap;
    char *nb = malloc(cap), *sc = malloc(2 * head + 2);
    wsg_http_head_t *nh = NULL;
    if (nb != NULL && sc != NULL) {
        writer_t w = {nb, 0};
        char *scratch[2] = {sc, sc + head + 1};
        write_head(c, a, websocket, &w, scratch);
        memcpy(nb + w.len, hs->req + head, after);
        size_t max = cfg_of(c)->limits.max_header_bytes;
        nh = wsg__head_new(c, WSG_HTTP_REQUEST, w.len > max ? w.len : max);
        if (nh != NULL && (wsg_http_head_feed(nh, nb, w.len + after) != WSG_HEAD_COMPLETE ||
                           wsg_http_head_len(nh) != w.len)) {
            wsg__head_free(c, nh);
            nh = NULL;
        }
        if (nh != NULL) {
            free(hs->req);
            hs->req = nb;
            hs->req_cap = cap;
            hs->req_len = w.len + after;
            if (cap > hs->req_max)
                hs->req_max = cap;
            wsg__head_free(c, hs->req_head);
            hs->req_head = nh;
        }
    }
    free(sc);
    if (nh == NULL) {
        free(nb);
        wsg__conn_reject(c, 500, "cannot rewrite the request for the backend");
        return -1;
    }
    return 0;
}

/* ---- the token -------------------------------------------------------------------- */

static wsg_refused_t reason_of(wsg_jwt_status_t st) {
    switch (st) {
    case WSG_JWT_EEXPIRED:
    case WSG_JWT_ENOTYET:
        return WSG_REFUSED_EXPIRED;
    case WSG_JWT_EISSUER:
    case WSG_JWT_EAUDIENCE:
        return WSG_REFUSED_CLAIMS;
    default:
        return WSG_REFUSED_BAD_TOKEN;
    }
}

/* The connection's edge state, made when first needed; NULL on ENOMEM. */
static wsg_edge_t *edge_of(wsg_conn_t *c) {
    if (c->edge == NULL)
        c->edge = calloc(1, sizeof(*c->edge));
    return c->edge;
}

static int check_token(wsg_conn_t *c, const wsg_route_conf_t *route, bool websocket) {
    const wsg_auth_conf_t *a = &cfg_of(c)->auths[route->auth_index];
    found_t f = {0};
    bool bearer = false;

    for (size_t i = 0; i < a->nfrom; i++) {
        wsg_jwt_src_t r = find_in(c->hs, &a->from[i], websocket, &f);
        if (r == WSG_JWT_SRC_CONFLICT)
            return refuse(c, WSG_REFUSED_TWO_TOKENS, 401, "two different tokens", BEARER_INVALID);
        if (r == WSG_JWT_SRC_MALFORMED)
            return refuse(c, WSG_REFUSED_BAD_TOKEN, 401, "malformed token", BEARER_INVALID);
        if (r == WSG_JWT_SRC_FOUND && a->from[i].kind == WSG_FROM_SUBPROTOCOL)
            bearer = true;
    }
    if (f.tok == NULL)
        return refuse(c, WSG_REFUSED_NO_TOKEN, 401, "no token", BEARER);
    wsg_edge_t *e = edge_of(c);
    if (e == NULL) {
        wsg__conn_reject(c, 500, "out of memory");
        return -1;
    }
    wsg_jwt_rules_t rules = {a->issuer, a->audience, a->leeway_ms};
    wsg_jwt_status_t st = wsg_jwt_verify(c->rt->auth_keys[route->auth_index], &rules, f.tok, f.len,
                                         wall_ms(), &e->jwt);
    if (st != WSG_JWT_OK) {
        int status = wsg_jwt_http_status(st);
        if (status == 500) {
            wsg__conn_reject(c, 500, "out of memory");
            return -1;
        }
        return refuse(c, reason_of(st), status, wsg_jwt_strerror(st),
                      status == 401 ? BEARER_INVALID : NULL);
    }
    e->bearer = bearer;
    int64_t exp;
    if (a->close_on_expiry && wsg_jwt_exp_ms(e->jwt, &exp))
        e->exp_ms = exp + (int64_t)a->leeway_ms;
    return rewrite_request(c, a, websocket);
}

static void edge_reset(wsg_edge_t *e) {
    if (e == NULL)
        return;
    wsg_jwt_free(e->jwt);
    e->jwt = NULL;
    e->exp_ms = 0;
    e->bearer = 0;
}

int wsg__edge_admit(wsg_conn_t *c, const wsg_route_conf_t *route, bool websocket) {
    bool missing = false;

    edge_reset(c->edge); /* a kept-alive connection's previous request */
    if (websocket && route->origins != NULL && origin_check(c, route, &missing) != 0)
        return -1;
    if (route->auth != NULL && check_token(c, route, websocket) != 0)
        return -1;
    /* A verified token vouches for a client without Origin (SPEC §11). */
    if (missing && !route->allow_no_origin && wsg__edge_jwt(c) == NULL)
        return refuse(c, WSG_REFUSED_ORIGIN, 403, "no Origin header", NULL);
    return 0;
}

const wsg_jwt_t *wsg__edge_jwt(const wsg_conn_t *c) {
    return c->edge != NULL ? c->edge->jwt : NULL;
}

void wsg__edge_free(wsg_conn_t *c) {
    edge_reset(c->edge);
    free(c->edge);
    c->edge = NULL;
}

/* ---- the 101 ------------------------------------------------------------------- */

int wsg__edge_answer(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    static const char proto[] = "Sec-WebSocket-Protocol: bearer\r\n";

    if (c->edge == NULL || !c->edge->bearer)
        return 0;
    size_t head = wsg_http_head_len(hs->resp_head), after = hs->resp_len - head;
    size_t cap = head + sizeof(proto) + after;
    char *nb = malloc(cap);
    if (nb == NULL)
        return -1;
    writer_t w = {nb, 0};
    const char *crlf = memmem(hs->resp, head, "\r\n", 2);
    put(&w, hs->resp, (size_t)(crlf - hs->resp) + 2);
    for (size_t i = 0, n = wsg_http_head_count(hs->resp_head); i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        wsg_http_head_at(hs->resp_head, hs->resp, i, &name, &nl, &value, &vl);
        if (!name_is(name, nl, "Sec-WebSocket-Protocol"))
            put_header(&w, name, nl, value, vl);
    }
    put(&w, proto, sizeof(proto) - 1);
    put(&w, "\r\n", 2);
    memcpy(nb + w.len, hs->resp + head, after);
    size_t max = hs->resp_max > w.len ? hs->resp_max : w.len;
    wsg_http_head_t *nh = wsg__head_new(c, WSG_HTTP_RESPONSE, max);
    if (nh == NULL || wsg_http_head_feed(nh, nb, w.len + after) != WSG_HEAD_COMPLETE) {
        wsg__head_free(c, nh);
        free(nb);
        return -1;
    }
    free(hs->resp);
    hs->resp = nb;
    hs->resp_cap = cap;
    hs->resp_len = w.len + after;
    hs->resp_max = max;
    wsg__head_free(c, hs->resp_head);
    hs->resp_head = nh;
    return 0;
}

/* ---- the relay -------------------------------------------------------------------- */

int wsg__edge_relay_start(wsg_conn_t *c) {
    int64_t exp_ms = c->edge != NULL ? c->edge->exp_ms : 0;
    /* The claims were used; the relay needs only the deadline and the
     * client's rate buckets, and a connection with neither keeps nothing.
     * Otherwise the handshake's state stays (its buckets were not used yet),
     * without the token. */
    if (exp_ms == 0 && c->rt->message_rate.per_s == 0 && c->rt->client_bytes_rate.per_s == 0) {
        wsg__edge_free(c);
        return 0;
    }
    edge_reset(c->edge);
    wsg_edge_t *e = edge_of(c);
    if (e == NULL)
        return -1;
    if (exp_ms != 0) {
        int64_t left = exp_ms - wall_ms();
        e->expiry_at = uv_now(&c->w->loop) + (left > 0 ? (uint64_t)left : 0);
    }
    return 0;
}

uint64_t wsg__edge_deadline(const wsg_conn_t *c, uint64_t d) {
    const wsg_edge_t *e = c->edge;
    if (e == NULL)
        return d;
    if (e->expiry_at && e->expiry_at < d)
        d = e->expiry_at;
    if (e->read_at && e->read_at < d)
        d = e->read_at;
    return d;
}

int wsg__edge_on_deadline(wsg_conn_t *c, uint64_t now) {
    wsg_edge_t *e = c->edge;
    if (e == NULL)
        return 0;
    if (e->expiry_at && now >= e->expiry_at) {
        e->expiry_at = 0;
        count(c, WSG_REFUSED_EXPIRY_CLOSE);
        c->end_reason = "token expired";
        ELOG(c, WSG_LOG_INFO, "token expired: closing");
        wsg__relay_close(c, WSG_WS_CLOSE_POLICY, WSG_WS_CLOSE_GOING_AWAY);
        return 1;
    }
    if (e->read_at && now >= e->read_at) {
        e->read_at = 0;
        if (c->peer[WSG_CLIENT].paused)
            wsg__relay_on_drained(c, WSG_BACKEND); /* resumes once the backend's queue allows */
        else
            wsg__conn_resume_read(c, WSG_CLIENT);
    }
    return 0;
}

int wsg__edge_message(wsg_conn_t *c) {
    const wsg_rate_t *r = &c->rt->message_rate;
    /* relay_start made the state when a rate is configured. */
    if (r->per_s == 0 || wsg_rate_take(&c->edge->msgs, r, uv_now(&c->w->loop), NULL))
        return 0;
    return -1;
}

void wsg__edge_message_limited(wsg_conn_t *c) {
    count(c, WSG_REFUSED_MESSAGES);
    c->end_reason = "rate limit";
    ELOG(c, WSG_LOG_INFO, "client past messages_per_s: closing");
    wsg__relay_close(c, WSG_WS_CLOSE_POLICY, WSG_WS_CLOSE_GOING_AWAY);
}

void wsg__edge_client_read(wsg_conn_t *c, size_t n) {
    const wsg_rate_t *r = &c->rt->client_bytes_rate;
    if (r->per_s == 0 || c->state != WSG_CONN_RELAY)
        return;
    uint64_t now = uv_now(&c->w->loop);
    uint64_t wait = wsg_rate_charge(&c->edge->bytes, r, n, now);
    if (wait == 0)
        return;
    wsg__conn_pause_read(c, WSG_CLIENT);
    c->edge->read_at = now + wait;
    wsg__conn_reschedule(c);
}

bool wsg__edge_holds(const wsg_conn_t *c, int side) {
    return side == WSG_CLIENT && c->edge != NULL && c->edge->read_at != 0;
}

void wsg__edge_release(wsg_conn_t *c) {
    if (c->edge == NULL || c->edge->read_at == 0)
        return;
    c->edge->read_at = 0;
    if (!c->peer[WSG_CLIENT].paused)
        wsg__conn_resume_read(c, WSG_CLIENT);
}
