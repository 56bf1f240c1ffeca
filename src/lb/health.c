/*
 * Active health checks: one small state machine per backend, on the server
 * thread's loop.
 *
 *   IDLE --interval timer--> CONNECTING --connected--> tcp: pass
 *                                |          \--request sent--> HEAD --2xx/3xx--> http: pass
 *                                |                               |   --101 + right accept--.
 *                                v                               v                         |
 *                    fail: refused, timeout       fail: status N, wrong accept,            |
 *                                                 EOF, malformed, timeout                  |
 *                                                                                          v
 *     fail: no pong (timeout, close, EOF) <-- PONG (masked ping sent) <--------------------'
 *                                               |  its pong: pass
 *                                               v
 *                                  CLOSING (close 1000 sent) --close, EOF or timeout--> end
 *
 *   every path ends by closing the TCP handle; its close callback arms the
 *   interval timer for the next check (so checks of one backend never overlap).
 *
 * What it does not do: decide states (wsg_balancer_check_result() applies
 * rise and fall and logs transitions), resolve names (addresses come resolved
 * in the config), or speak TLS: for a pool with "tls" an `http` or `websocket`
 * check is done as a `tcp` check (logged at start), because the plain-text
 * request would only earn a TLS alert and take every backend down.
 *
 * Key design choice: a check is bounded as a whole by one timeout timer
 * started with the connect, not per read, so a backend that trickles bytes
 * cannot hold a check past health.timeout_ms; and the next check is timed
 * from the start of the previous one, so a backend that stops answering is
 * declared down within about interval_ms x fall.
 */
#include <wsgate/health.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include <wsgate/handshake.h>
#include <wsgate/log.h>
#include <wsgate/ws_frame.h>

#ifndef WSG_VERSION
#define WSG_VERSION "unknown"
#endif

#define HEAD_MAX 8192     /* largest response head a check accepts */
#define PING_LEN 8        /* payload of our ping */
#define FIRST_SPREAD_MS 3 /* gap between the first checks of successive backends */

typedef enum {
    PH_IDLE = 0,
    PH_CONNECTING,
    PH_HEAD,    /* request sent, reading the response head */
    PH_PONG,    /* websocket: ping sent, waiting for its pong */
    PH_CLOSING, /* websocket: result reported, close 1000 sent */
} phase_t;

typedef struct check_s {
    struct wsg_health_s *h;
    wsg_balancer_t *b;         /* borrowed from h->rt */
    unsigned idx;              /* backend index in b */
    const wsg_pool_conf_t *pc; /* borrowed from h->rt's config */
    const wsg_backend_conf_t *bc;
    wsg_health_type_t type; /* the check done (see check_type()) */
    uv_timer_t interval;    /* arms the next check */
    uv_timer_t timeout;     /* bounds the running check */
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq_req, wreq_ping, wreq_close;
    bool tcp_open; /* tcp initialised and not yet closed */
    bool tcp_closing;
    bool reported; /* this check's result was given */
    phase_t phase;
    uint64_t started_ns; /* uv_hrtime() at the start of the check */
    uint64_t started_ms; /* uv_now() at the start */
    char *req;           /* owned: the request (http, websocket) */
    size_t reqcap, reqlen;
    wsg_http_head_t *head; /* owned during PH_HEAD */
    char rbuf[HEAD_MAX];
    size_t rlen;
    char accept[WSG_WS_ACCEPT_LEN + 1];
    uint8_t ping_payload[PING_LEN];
    uint8_t ping[2 + 4 + PING_LEN];
    uint8_t closef[2 + 4 + 2];
    /* Frames from the backend after the 101. */
    wsg_ws_parser_t wp;
    wsg_ws_frame_t fr;
    bool in_payload;
    uint64_t payload_left;
    uint8_t ctl[WSG_WS_MAX_CONTROL_PAYLOAD];
    size_t ctl_len;
} check_t;

struct wsg_health_s {
    uv_loop_t *loop;
    wsg_runtime_t *rt; /* owned reference */
    check_t *checks;   /* owned array */
    size_t nchecks;
    unsigned open_handles;
    bool stopping;
    uint64_t rng; /* xorshift64 state: jitter, keys, masks */
};

static uint64_t rnd(wsg_health_t *h) {
    /* xorshift64 (Marsaglia): the values only need to differ between checks;
     * nothing here is a secret (RFC 6455 §10.3's masking protects
     * intermediaries from a hostile client, and wsgate is not one). */
    uint64_t x = h->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    h->rng = x;
    return x;
}

static void rnd_bytes(wsg_health_t *h, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rnd(h);
        memcpy(out + i, &v, n - i < 8 ? n - i : 8);
    }
}

static void maybe_free(wsg_health_t *h) {
    if (!h->stopping || h->open_handles != 0)
        return;
    for (size_t i = 0; i < h->nchecks; i++) {
        free(h->checks[i].req);
        wsg_http_head_free(h->checks[i].head);
    }
    free(h->checks);
    wsg_runtime_unref(h->rt);
    free(h);
}

static void on_handle_closed(uv_handle_t *handle) {
    check_t *c = handle->data;
    wsg_health_t *h = c->h;
    h->open_handles--;
    maybe_free(h);
}

static void on_interval(uv_timer_t *t);

/* The TCP handle of a check is closed: the check is over; arm the next one.
 * The next start is interval_ms after this one's start, less a jitter of up
 * to a tenth of the interval, so that a backend that fails is seen down
 * within interval_ms x fall and checks do not stay in step. */
static void on_tcp_closed(uv_handle_t *handle) {
    check_t *c = handle->data;
    wsg_health_t *h = c->h;

    c->tcp_open = false;
    c->tcp_closing = false;
    c->phase = PH_IDLE;
    h->open_handles--;
    if (h->stopping) {
        maybe_free(h);
        return;
    }
    uint64_t interval = c->pc->health.interval_ms;
    uint64_t jitter = rnd(h) % (interval / 10 + 1);
    uint64_t elapsed = uv_now(h->loop) - c->started_ms;
    uint64_t delay = elapsed + jitter < interval ? interval - elapsed - jitter : 0;
    uv_timer_start(&c->interval, on_interval, delay, 0);
}

/* Ends the check's I/O: stops its timeout and closes its connection. */
static void end(check_t *c) {
    uv_timer_stop(&c->timeout);
    if (c->tcp_open && !c->tcp_closing) {
        c->tcp_closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
}

static void send_bytes(check_t *c, uv_write_t *req, const void *data, size_t len);

/* Gives the check's result, once. A websocket check that passed then closes
 * politely (RFC 6455 §7.1.2: close frame, then wait for the server to answer
 * or to end TCP) within what is left of the timeout; every other check ends
 * here. */
static void finish(check_t *c, bool ok, const char *why) {
    if (c->reported)
        return;
    c->reported = true;
    uint64_t ms = (uv_hrtime() - c->started_ns) / 1000000;
    if (ok)
        WSG_LOG(WSG_LOG_DEBUG, "health", "%s check of %s (pool %s): ok in %llu ms",
                wsg_health_type_name(c->type), c->bc->address, c->pc->name, (unsigned long long)ms);
    else
        WSG_LOG(WSG_LOG_DEBUG, "health", "%s check of %s (pool %s) failed after %llu ms: %s",
                wsg_health_type_name(c->type), c->bc->address, c->pc->name, (unsigned long long)ms,
                why);
    wsg_balancer_check_result(c->b, c->idx, ok, ms, ok ? "" : why);
    if (ok && c->phase == PH_PONG) {
        uint8_t mask[4];
        rnd_bytes(c->h, mask, sizeof(mask));
        size_t n =
            wsg_ws_build_close(c->closef, sizeof(c->closef), WSG_WS_CLOSE_NORMAL, NULL, mask);
        c->phase = PH_CLOSING;
        send_bytes(c, &c->wreq_close, c->closef, n);
        return;
    }
    end(c);
}

static void failf(check_t *c, const char *fmt, ...) WSG_PRINTF(2, 3);

static void failf(check_t *c, const char *fmt, ...) {
    char why[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    finish(c, false, why);
}

static void on_timeout(uv_timer_t *t) {
    check_t *c = t->data;
    if (c->reported) {
        end(c); /* the server never answered our close: give up on it */
        return;
    }
    if (c->phase == PH_PONG)
        failf(c, "no pong within %llu ms", (unsigned long long)c->pc->health.timeout_ms);
    else
        failf(c, "timeout after %llu ms", (unsigned long long)c->pc->health.timeout_ms);
}

static void on_write(uv_write_t *req, int status) {
    check_t *c = req->data;
    if (status == 0 || status == UV_ECANCELED || c->h->stopping || c->tcp_closing)
        return;
    if (!c->reported)
        failf(c, "cannot send the request: %s", uv_strerror(status));
    else
        end(c);
}

static void send_bytes(check_t *c, uv_write_t *req, const void *data, size_t len) {
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    req->data = c;
    int r = uv_write(req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (r != 0) {
        if (!c->reported)
            failf(c, "cannot send the request: %s", uv_strerror(r));
        else
            end(c);
    }
}

/* A whole frame from the backend has been read (control payloads are in
 * c->ctl). */
static void frame_done(check_t *c) {
    c->in_payload = false;
    if (c->fr.opcode == WSG_WS_OP_PONG && c->phase == PH_PONG) {
        /* RFC 6455 §5.5.3: the pong answering a ping carries its payload;
         * an unsolicited pong (any other payload) is not an answer. */
        if (c->ctl_len == PING_LEN && memcmp(c->ctl, c->ping_payload, PING_LEN) == 0)
            finish(c, true, "");
        return;
    }
    if (c->fr.opcode == WSG_WS_OP_CLOSE) {
        if (c->phase == PH_PONG)
            failf(c, "no pong: the backend closed with %u",
                  (unsigned)wsg_ws_close_code(c->ctl, c->ctl_len));
        else
            end(c); /* our close was answered */
    }
    /* Data frames, pings and other pongs are skipped. */
}

static void frames(check_t *c, const uint8_t *data, size_t len) {
    while (c->tcp_open && !c->tcp_closing && (len > 0 || c->in_payload)) {
        if (!c->in_payload) {
            size_t used = 0;
            int r = wsg_ws_parse(&c->wp, data, len, &used, &c->fr);
            data += used;
            len -= used;
            if (r == WSG_WS_INCOMPLETE)
                return;
            if (r < 0) {
                if (!c->reported)
                    failf(c, "protocol error: %s", wsg_ws_strerror(r));
                else
                    end(c);
                return;
            }
            c->in_payload = true;
            c->payload_left = c->fr.payload_len;
            c->ctl_len = 0;
        }
        size_t n = c->payload_left < len ? (size_t)c->payload_left : len;
        if (c->fr.opcode >= WSG_WS_OP_CLOSE && n > 0) {
            /* Control payloads are at most 125 bytes (checked by the parser)
             * and never masked by a server. */
            memcpy(c->ctl + c->ctl_len, data, n);
            c->ctl_len += n;
        }
        data += n;
        len -= n;
        c->payload_left -= n;
        if (c->payload_left > 0)
            return;
        frame_done(c);
    }
}

/* The response head is complete. */
static void head_done(check_t *c) {
    int status = wsg_http_head_status(c->head);
    size_t hlen = wsg_http_head_len(c->head);

    if (c->type == WSG_HEALTH_HTTP) {
        if (status >= 200 && status < 400)
            finish(c, true, "");
        else
            failf(c, "status %d", status);
        return;
    }
    if (status != 101) {
        failf(c, "status %d", status);
        return;
    }
    if (wsg_handshake_check_response(c->head, c->rbuf, c->accept) != WSG_RESP_UPGRADE) {
        failf(c, "wrong Sec-WebSocket-Accept");
        return;
    }
    /* Upgraded: ping (masked, RFC 6455 §5.3: every client frame is) and wait
     * for the pong. Bytes after the head are already frames. */
    uint8_t mask[4];
    rnd_bytes(c->h, c->ping_payload, PING_LEN);
    rnd_bytes(c->h, mask, sizeof(mask));
    size_t n =
        wsg_ws_build(c->ping, sizeof(c->ping), WSG_WS_OP_PING, c->ping_payload, PING_LEN, mask);
    c->phase = PH_PONG;
    wsg_ws_parser_init(&c->wp, 0, 0);
    c->in_payload = false;
    send_bytes(c, &c->wreq_ping, c->ping, n);
    if (c->tcp_closing)
        return;
    size_t rest = c->rlen - hlen;
    uint8_t tmp[HEAD_MAX];
    memcpy(tmp, c->rbuf + hlen, rest);
    c->rlen = 0;
    frames(c, tmp, rest);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    check_t *c = handle->data;
    (void)suggested;
    if (c->phase == PH_HEAD)
        *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(sizeof(c->rbuf) - c->rlen));
    else
        *buf = uv_buf_init(c->rbuf, (unsigned)sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    check_t *c = s->data;
    (void)buf;

    if (c->h->stopping || c->tcp_closing || nread == 0)
        return;
    if (nread < 0) {
        if (c->reported) {
            end(c);
        } else if (nread == UV_EOF) {
            if (c->phase == PH_PONG)
                failf(c, "no pong: the connection was closed");
            else
                failf(c, "connection closed before the response");
        } else if (nread == UV_ENOBUFS) {
            failf(c, "response head larger than %d bytes", HEAD_MAX);
        } else {
            failf(c, "%s", uv_strerror((int)nread));
        }
        return;
    }
    if (c->phase != PH_HEAD) {
        frames(c, (const uint8_t *)c->rbuf, (size_t)nread);
        return;
    }
    c->rlen += (size_t)nread;
    switch (wsg_http_head_feed(c->head, c->rbuf, c->rlen)) {
    case WSG_HEAD_COMPLETE:
        head_done(c);
        break;
    case WSG_HEAD_INCOMPLETE:
        if (c->rlen == sizeof(c->rbuf))
            failf(c, "response head larger than %d bytes", HEAD_MAX);
        break;
    case WSG_HEAD_TOO_LARGE:
        failf(c, "response head larger than %d bytes", HEAD_MAX);
        break;
    default:
        failf(c, "malformed response");
        break;
    }
}

static void build_request(check_t *c) {
    const char *path = c->pc->health.path ? c->pc->health.path : "/";
    char host[320]; /* a backend found by DNS is asked for by its name */
    int n;
    wsg_config_backend_authority(c->bc->address, host, sizeof(host));
    if (c->type == WSG_HEALTH_HTTP) {
        n = snprintf(c->req, c->reqcap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: wsgate-health/%s\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n",
                     path, host, WSG_VERSION);
    } else {
        /* RFC 6455 §4.1: a fresh random 16-byte nonce, base64-encoded. */
        uint8_t nonce[16];
        char key[25];
        rnd_bytes(c->h, nonce, sizeof(nonce));
        EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce));
        wsg_ws_accept(key, strlen(key), c->accept);
        n = snprintf(c->req, c->reqcap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: wsgate-health/%s\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, host, WSG_VERSION, key);
    }
    c->reqlen = n > 0 && (size_t)n < c->reqcap ? (size_t)n : 0;
}

static void on_connect(uv_connect_t *req, int status) {
    check_t *c = req->data;

    if (status == UV_ECANCELED || c->h->stopping || c->tcp_closing)
        return;
    if (status < 0) {
        failf(c, "%s", uv_strerror(status));
        return;
    }
    if (c->type == WSG_HEALTH_TCP) {
        finish(c, true, "");
        return;
    }
    build_request(c);
    wsg_http_head_free(c->head);
    c->head = wsg_http_head_new(WSG_HTTP_RESPONSE, HEAD_MAX);
    if (c->head == NULL || c->reqlen == 0) {
        failf(c, "out of memory");
        return;
    }
    c->rlen = 0;
    c->phase = PH_HEAD;
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0) {
        failf(c, "%s", uv_strerror(r));
        return;
    }
    send_bytes(c, &c->wreq_req, c->req, c->reqlen);
}

static void on_interval(uv_timer_t *t) {
    check_t *c = t->data;
    wsg_health_t *h = c->h;
    int r;

    if (h->stopping || c->tcp_open)
        return;
    c->reported = false;
    c->phase = PH_CONNECTING;
    c->started_ns = uv_hrtime();
    c->started_ms = uv_now(h->loop);
    if ((r = uv_tcp_init(h->loop, &c->tcp)) != 0) {
        /* No handle to close: report and try again at the next interval. */
        c->reported = true;
        wsg_balancer_check_result(c->b, c->idx, false, 0, uv_strerror(r));
        c->phase = PH_IDLE;
        uv_timer_start(&c->interval, on_interval, c->pc->health.interval_ms, 0);
        return;
    }
    c->tcp.data = c;
    c->tcp_open = true;
    c->tcp_closing = false;
    h->open_handles++;
    uv_timer_start(&c->timeout, on_timeout, c->pc->health.timeout_ms, 0);
    if (c->bc->addr.ss.ss_family != AF_INET && c->bc->addr.ss.ss_family != AF_INET6) {
        failf(c, "address not resolved");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->creq.data = c;
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&c->bc->addr.ss, on_connect);
    if (r != 0)
        failf(c, "%s", uv_strerror(r));
}

/* The check really done for pool <pc> (see the head of the file). */
static wsg_health_type_t check_type(const wsg_pool_conf_t *pc) {
    if (pc->tls.enabled && pc->health.type != WSG_HEALTH_NONE)
        return WSG_HEALTH_TCP;
    return pc->health.type;
}

wsg_health_t *wsg_health_start_on(uv_loop_t *loop, wsg_runtime_t *rt) {
    wsg_health_t *h = calloc(1, sizeof(*h));
    size_t n = 0;

    if (h == NULL)
        return NULL;
    for (size_t p = 0; p < rt->cfg->npools; p++)
        if (rt->cfg->pools[p].health.type != WSG_HEALTH_NONE)
            n += rt->pools[p]->nbackends;
    h->checks = calloc(n ? n : 1, sizeof(*h->checks));
    if (h->checks == NULL) {
        free(h);
        return NULL;
    }
    h->loop = loop;
    h->rt = wsg_runtime_ref(rt);
    h->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)h << 16) ^ 0x9E3779B97F4A7C15ULL;
    if (h->rng == 0)
        h->rng = 1;

    size_t k = 0;
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        const wsg_pool_conf_t *pc = &rt->cfg->pools[p];
        if (pc->health.type == WSG_HEALTH_NONE)
            continue;
        size_t pathlen = strlen(pc->health.path ? pc->health.path : "/");
        for (size_t i = 0; i < rt->pools[p]->nbackends; i++, k++) {
            check_t *c = &h->checks[k];
            c->h = h;
            c->b = rt->pools[p];
            c->idx = (unsigned)i;
            c->pc = pc;
            c->bc = &pc->backends[i];
            c->type = check_type(pc);
            if (c->type != WSG_HEALTH_TCP) {
                c->reqcap = pathlen + strlen(c->bc->address) + 256;
                if ((c->req = malloc(c->reqcap)) == NULL)
                    goto fail;
            }
        }
    }
    h->nchecks = n;
    /* Timers last: once a handle exists the object can only be freed
     * through the loop. */
    for (k = 0; k < n; k++) {
        check_t *c = &h->checks[k];
        uv_timer_init(loop, &c->interval);
        uv_timer_init(loop, &c->timeout);
        c->interval.data = c->timeout.data = c;
        h->open_handles += 2;
        uv_timer_start(&c->interval, on_interval, (uint64_t)(k % 20) * FIRST_SPREAD_MS, 0);
    }
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        const wsg_pool_conf_t *pc = &rt->cfg->pools[p];
        if (pc->health.type == WSG_HEALTH_NONE)
            continue;
        if (check_type(pc) != pc->health.type)
            WSG_LOG(WSG_LOG_WARN, "health",
                    "pool %s: its backends speak TLS; %s checks are done as tcp checks", pc->name,
                    wsg_health_type_name(pc->health.type));
        WSG_LOG(WSG_LOG_INFO, "health",
                "pool %s: %s checks of %zu backend%s every %llu ms (timeout %llu ms, rise %u, "
                "fall %u)",
                pc->name, wsg_health_type_name(check_type(pc)), pc->nbackends,
                pc->nbackends == 1 ? "" : "s", (unsigned long long)pc->health.interval_ms,
                (unsigned long long)pc->health.timeout_ms, pc->health.rise, pc->health.fall);
    }
    return h;
fail:
    for (size_t i = 0; i < n; i++)
        free(h->checks[i].req);
    free(h->checks);
    wsg_runtime_unref(h->rt);
    free(h);
    return NULL;
}

wsg_health_t *wsg_health_start(wsg_server_t *srv, wsg_runtime_t *rt) {
    return wsg_health_start_on(wsg_server_loop(srv), rt);
}

void wsg_health_stop(wsg_health_t *h) {
    if (h == NULL || h->stopping)
        return;
    h->stopping = true;
    for (size_t i = 0; i < h->nchecks; i++) {
        check_t *c = &h->checks[i];
        uv_close((uv_handle_t *)&c->interval, on_handle_closed);
        uv_close((uv_handle_t *)&c->timeout, on_handle_closed);
        if (c->tcp_open && !c->tcp_closing) {
            c->tcp_closing = true;
            uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
        }
    }
    maybe_free(h);
}
