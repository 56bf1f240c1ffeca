/*
 * The sticky cookie on the session (SPEC §10): what conn.c and exchange.c
 * call at four points of an exchange, so that the cookie stays out of their
 * way. The codec is src/lb/sticky_cookie.c; the cookie-to-backend lookup is
 * wsg_balancer_sticky().
 *
 *   placing     a valid cookie for an up backend puts that backend first
 *               (before the key's order, past load_factor)
 *   forwarding  the cookie is cut out of the request the backend gets
 *   answering   the response head (plain HTTP or the 101) gets Set-Cookie
 *               when the request had no valid cookie for the backend that
 *               served it, or always with max_age_s > 0 (to refresh it)
 */
#include "conn_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <wsgate/balance_key.h>
#include <wsgate/sticky_cookie.h>

#define LINE_MAX_ 1024 /* a Set-Cookie line: name and path are bounded by config */

#define SLOG(c, level, ...)                                                                \
    do {                                                                                   \
        if ((level) >= wsg_log_threshold()) {                                              \
            wsg_log_ctx_t ctx_;                                                            \
            wsg__conn_log_ctx((c), &ctx_);                                                 \
            wsg_log_write((level), "cookie", &ctx_, __VA_ARGS__);                          \
        }                                                                                  \
    } while (0)

static const wsg_cookie_conf_t *cookie_of(const wsg_conn_t *c) {
    if (c->pool < 0)
        return NULL;
    const wsg_cookie_conf_t *ck = &c->rt->cfg->pools[c->pool].balance.cookie;
    return ck->enabled ? ck : NULL;
}

/* Moves backend <idx> to the front of the candidates, keeping the key's
 * order behind it for retries. */
static void pin_first(wsg_hs_t *hs, unsigned idx, size_t cap) {
    size_t n = 0;
    unsigned out[sizeof(hs->cand) / sizeof(hs->cand[0])];
    out[n++] = idx;
    for (size_t i = 0; i < hs->ncand && n < cap; i++)
        if (hs->cand[i] != idx)
            out[n++] = hs->cand[i];
    memcpy(hs->cand, out, n * sizeof(out[0]));
    hs->ncand = n;
}

void wsg__sticky_place(wsg_conn_t *c, size_t cap) {
    wsg_hs_t *hs = c->hs;
    const wsg_cookie_conf_t *ck = cookie_of(c);
    const char *v, *why;
    size_t n;

    hs->sticky_be = -1;
    if (ck == NULL)
        return;
    /* The codec of balance.key finds a cookie in every Cookie header. */
    wsg_balance_conf_t find = {.key = WSG_KEY_COOKIE, .key_name = ck->name};
    if (!wsg_balance_key(&find, hs->req_head, hs->req, "", NULL, &v, &n))
        return;
    int idx = wsg_balancer_sticky(c->rt->pools[c->pool], v, n, (uint64_t)time(NULL), &why);
    if (idx < 0) {
        SLOG(c, WSG_LOG_DEBUG, "cookie %s ignored: %s", ck->name, why);
        return;
    }
    hs->sticky_be = idx;
    c->sticky = 1;
    if (cap > sizeof(hs->cand) / sizeof(hs->cand[0]))
        cap = sizeof(hs->cand) / sizeof(hs->cand[0]);
    pin_first(hs, (unsigned)idx, cap);
}

size_t wsg__sticky_filter(const wsg_conn_t *c, char *head, size_t len) {
    const wsg_cookie_conf_t *ck = cookie_of(c);
    return ck == NULL ? len : wsg_sticky_filter_head(head, len, ck->name);
}

/* The Set-Cookie line this response needs into out[LINE_MAX_], or 0. */
static size_t set_cookie_line(wsg_conn_t *c, char *out) {
    const wsg_cookie_conf_t *ck = cookie_of(c);
    wsg_hs_t *hs = c->hs;
    char value[WSG_STICKY_VALUE_LEN + 1];

    if (ck == NULL || c->backend < 0 || (hs->sticky_be == c->backend && ck->max_age_s == 0))
        return 0;
    const char *address = c->rt->cfg->pools[c->pool].backends[c->backend].address;
    if (wsg_sticky_encode(ck->secret, ck->secret_len, c->rt->cfg->pools[c->pool].name, address,
                          (uint32_t)time(NULL), value) != 0) {
        SLOG(c, WSG_LOG_WARN, "cannot sign the sticky cookie (OpenSSL): none set");
        return 0;
    }
    bool tls = c->rt->listener_tls[c->listener] != NULL;
    ssize_t n = wsg_sticky_set_cookie(ck, value, tls, out, LINE_MAX_);
    if (n < 0) {
        SLOG(c, WSG_LOG_WARN, "Set-Cookie longer than %d bytes: none set", LINE_MAX_);
        return 0;
    }
    c->sticky = 1;
    return (size_t)n;
}

ssize_t wsg__sticky_response(wsg_conn_t *c, char *head, size_t len, size_t cap) {
    char line[LINE_MAX_];
    size_t n = set_cookie_line(c, line);
    if (n == 0)
        return (ssize_t)len;
    ssize_t r = wsg_sticky_head_insert(head, len, cap, line, n);
    if (r < 0) {
        SLOG(c, WSG_LOG_WARN, "no room for Set-Cookie in the response head: none set");
        return (ssize_t)len;
    }
    return r;
}

int wsg__sticky_send_head(wsg_conn_t *c, const char *head, size_t len) {
    char line[LINE_MAX_ + 2];
    size_t n = set_cookie_line(c, line);
    /* The backend's head as it came, with the cookie as its last header. */
    if (n == 0 || len < 4 || memcmp(head + len - 4, "\r\n\r\n", 4) != 0)
        return wsg__conn_send(c, WSG_CLIENT, head, len);
    memcpy(line + n, "\r\n", 2);
    int r = wsg__conn_send(c, WSG_CLIENT, head, len - 2);
    return r < 0 ? r : wsg__conn_send(c, WSG_CLIENT, line, n + 2);
}

size_t wsg__sticky_room(void) { return LINE_MAX_; }
