/*
 * The client<->backend session: accept, the handshake's I/O, and teardown.
 *
 * A connection is born on accept and reads the client's request head into
 * one buffer (handshake.c parses it), routes it, picks backends, connects
 * (trying the next backend on a failed connect), forwards the request and
 * reads the backend's answer. A good 101 hands the connection to relay.c;
 * anything else ends it with an HTTP answer. Parsing, validation and the
 * frame pump live elsewhere: this file owns lifetimes and phases.
 *
 * Ownership: the connection owns its two uv_tcp_t handles (embedded) and
 * frees itself in the close callback of the last one; every write chunk
 * holds a pointer to the connection and is finished (with UV_ECANCELED at
 * worst) before that close callback runs. Timers are not handles here: one
 * node in the worker's deadline heap covers every deadline of every phase.
 */
#include "conn_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <wsgate/balance_key.h>
#include <wsgate/ip_limit.h>
#include <wsgate/proxy_proto.h>
#include <wsgate/route.h>
#include <wsgate/tls.h>

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_side_closed(uv_handle_t *h);
static void connect_next(wsg_conn_t *c);
static void reject(wsg_conn_t *c, int status, const char *why);
static void on_request_bytes(wsg_conn_t *c, size_t n);

static const char *const phase_names[] = {
    [WSG_CONN_PROXY] = "proxy header",  [WSG_CONN_HS_READ] = "handshake",   [WSG_CONN_CONNECTING] = "connecting",
    [WSG_CONN_UPSTREAM] = "upstream",   [WSG_CONN_PASSTHRU] = "response",
    [WSG_CONN_RELAY] = "relaying",      [WSG_CONN_CLOSING] = "closing",
};

static const wsg_config_t *cfg_of(const wsg_conn_t *c) { return c->rt->cfg; }

static wsg_conn_t *conn_of_stream(uv_handle_t *h, int *side) {
    /* Both handles point at the connection while it owns them; the client's
     * is the one embedded in it. */
    wsg_conn_t *c = (wsg_conn_t *)h->data;
    *side = (h == (uv_handle_t *)&c->client_io.tcp) ? WSG_CLIENT : WSG_BACKEND;
    return c;
}

void wsg__conn_log_ctx(const wsg_conn_t *c, wsg_log_ctx_t *ctx) {
    ctx->worker = c->w->id;
    ctx->conn = c->id;
    ctx->phase = phase_names[c->state];
}

#define CLOG(c, level, ...)                                                            \
    do {                                                                               \
        if ((level) >= wsg_log_threshold()) {                                          \
            wsg_log_ctx_t ctx_;                                                        \
            wsg__conn_log_ctx((c), &ctx_);                                             \
            wsg_log_write((level), "conn", &ctx_, __VA_ARGS__);                        \
        }                                                                              \
    } while (0)

void wsg__conn_client_ip(const wsg_conn_t *c, char *out, size_t cap) {
    if (c->client_addr.sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &c->client_addr.in6.sin6_addr, out, (socklen_t)cap);
    else if (c->client_addr.sa.sa_family == AF_INET && cap >= INET_ADDRSTRLEN)
        wsg_ipv4_text(&c->client_addr.in4.sin_addr, out);
    else
        snprintf(out, cap, "unknown");
}

wsg_forward_info_t wsg__conn_forward_info(const wsg_conn_t *c, char *ip) {
    wsg__conn_client_ip(c, ip, INET6_ADDRSTRLEN);
    return (wsg_forward_info_t){
        .client_ip = ip,
        .proto = cfg_of(c)->listeners[c->listener].tls ? "https" : "http",
    };
}

static unsigned client_port(const wsg_conn_t *c) {
    if (c->client_addr.sa.sa_family == AF_INET6)
        return ntohs(c->client_addr.in6.sin6_port);
    return ntohs(c->client_addr.in4.sin_port);
}

/* ---- buffers and writes ------------------------------------------------ */

/* Publishes the pool's accounting for /metrics: one writer (this worker),
 * so plain relaxed stores. */
static void publish_pool(wsg_worker_t *w) {
    atomic_store_explicit(&w->stats.buffers_in_use, w->bufs.in_use, memory_order_relaxed);
    atomic_store_explicit(&w->stats.buffers_cached, w->bufs.nfree, memory_order_relaxed);
}

static void publish_bulk(wsg_worker_t *w) {
    atomic_store_explicit(&w->stats.bulk_in_use, w->bulk.in_use, memory_order_relaxed);
    atomic_store_explicit(&w->stats.bulk_cached, w->bulk.nfree, memory_order_relaxed);
}

wsg_chunk_t *wsg__chunk_get(wsg_conn_t *c) {
    wsg_chunk_t *ch = wsg_bufpool_get(&c->w->bufs);
    if (ch != NULL) {
        ch->conn = c;
        ch->bulk = 0;
    }
    publish_pool(c->w);
    return ch;
}

wsg_chunk_t *wsg__chunk_get_bulk(wsg_conn_t *c) {
    wsg_chunk_t *ch = wsg_bufpool_get(&c->w->bulk);
    if (ch != NULL) {
        ch->conn = c;
        ch->bulk = 1;
    }
    publish_bulk(c->w);
    return ch;
}

void wsg__chunk_put(wsg_conn_t *c, wsg_chunk_t *ch) {
    if (ch->bulk) {
        wsg_bufpool_put(&c->w->bulk, ch);
        publish_bulk(c->w);
        return;
    }
    wsg_bufpool_put(&c->w->bufs, ch);
    publish_pool(c->w);
}

static void on_write(uv_write_t *req, int status) {
    wsg_chunk_t *ch = (wsg_chunk_t *)(void *)req;
    wsg_conn_t *c = ch->conn;
    int to = ch->to;
    wsg_peer_t *p = &c->peer[to];

    p->queued -= (uint32_t)ch->buf.len;
    p->nwrites--;
    wsg__chunk_put(c, ch);
    if (status == UV_ECANCELED || !p->open)
        return;
    if (status < 0) {
        /* The peer is gone while we still had bytes for it: nothing more can
         * reach it, so it counts as having ended its stream. */
        CLOG(c, WSG_LOG_DEBUG, "write to %s failed: %s", to == WSG_CLIENT ? "client" : "backend",
             uv_strerror(status));
        p->eof = 1;
        p->close_owed = 0;
        if (c->state == WSG_CONN_RELAY) {
            c->end_reason = to == WSG_CLIENT ? "client connection lost" : "backend connection lost";
            wsg__relay_close(c, to == WSG_CLIENT ? 0 : WSG_WS_CLOSE_INTERNAL_ERROR,
                             to == WSG_CLIENT ? WSG_WS_CLOSE_GOING_AWAY : 0);
        } else if (to == WSG_BACKEND && c->hs != NULL && c->hs->http &&
                   (c->state == WSG_CONN_UPSTREAM || c->state == WSG_CONN_PASSTHRU)) {
            /* As if it had closed: a dead kept-alive connection may be
             * retried on a new one. */
            wsg__conn_pause_read(c, WSG_BACKEND);
            wsg__http_backend_eof(c);
        } else {
            wsg__conn_finish(c);
        }
        return;
    }
    if (p->queued == 0 && p->want_shut)
        wsg__conn_finish(c);
    wsg__relay_on_drained(c, to);
}

int wsg__conn_send_chunk(wsg_conn_t *c, int to, wsg_chunk_t *ch, size_t len) {
    wsg_peer_t *p = &c->peer[to];
    size_t off = 0;

    if (!p->open || p->shut || p->want_shut) {
        wsg__chunk_put(c, ch);
        return UV_EPIPE;
    }
    if (len == 0) {
        wsg__chunk_put(c, ch);
        return 0;
    }
    /* Write now when nothing is queued ahead of us: the common case costs
     * one send() and no request, callback or held buffer. */
    if (p->queued == 0) {
        uv_buf_t b = uv_buf_init(ch->data, (unsigned)len);
        int n = p->io->ops->try_write(p->io, &b, 1);
        if (n == (int)len) {
            wsg__chunk_put(c, ch);
            return 0;
        }
        if (n < 0 && n != UV_EAGAIN) {
            wsg__chunk_put(c, ch);
            return n;
        }
        if (n > 0)
            off = (size_t)n;
    }
    ch->conn = c;
    ch->to = (uint8_t)to;
    ch->buf = uv_buf_init(ch->data + off, (unsigned)(len - off));
    int r = p->io->ops->write(p->io, &ch->req, &ch->buf, 1, on_write);
    if (r < 0) {
        wsg__chunk_put(c, ch);
        return r;
    }
    p->queued += (uint32_t)(len - off);
    p->nwrites++;
    return 0;
}

int wsg__conn_send(wsg_conn_t *c, int to, const void *data, size_t len) {
    wsg_peer_t *p = &c->peer[to];
    const char *src = data;

    if (!p->open || p->shut || p->want_shut)
        return UV_EPIPE;
    if (p->queued == 0 && len > 0) {
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)src, (unsigned)len);
        int n = p->io->ops->try_write(p->io, &b, 1);
        if (n < 0 && n != UV_EAGAIN)
            return n;
        if (n > 0) {
            src += n;
            len -= (size_t)n;
        }
    }
    while (len > 0) {
        wsg_chunk_t *ch = wsg__chunk_get(c);
        if (ch == NULL)
            return UV_ENOMEM;
        size_t k = len < WSG_CHUNK_DATA ? len : WSG_CHUNK_DATA;
        memcpy(ch->data, src, k);
        int r = wsg__conn_send_chunk(c, to, ch, k);
        if (r < 0)
            return r;
        src += k;
        len -= k;
    }
    return 0;
}

/* ---- handshake memory ------------------------------------------------------ */

#define HS_BUF_START 1024

/* Makes room for more bytes in a head buffer: doubles it up to <max>.
 * Returns the free space (0 when the buffer is at its limit or memory ran
 * out). The parsers keep offsets, so the buffer may move. */
static size_t buf_room(char **buf, size_t *cap, size_t len, size_t max) {
    if (len < *cap)
        return *cap - len;
    if (*cap >= max)
        return 0;
    size_t ncap = *cap ? *cap * 2 : HS_BUF_START;
    if (ncap > max)
        ncap = max;
    char *nb = realloc(*buf, ncap);
    if (nb == NULL)
        return 0;
    *buf = nb;
    *cap = ncap;
    return ncap - len;
}

wsg_http_head_t *wsg__head_new(wsg_conn_t *c, wsg_http_kind_t kind, size_t max_bytes) {
    wsg_http_head_t *h = wsg_slab_alloc_raw(&c->w->head_slab);
    if (h != NULL)
        wsg_http_head_reset(h, kind, max_bytes);
    return h;
}

void wsg__head_free(wsg_conn_t *c, wsg_http_head_t *h) { wsg_slab_free(&c->w->head_slab, h); }

static wsg_hs_t *hs_new(wsg_conn_t *c, size_t req_max, size_t max_head) {
    wsg_hs_t *hs = calloc(1, sizeof(*hs));
    if (hs == NULL)
        return NULL;
    hs->req_max = req_max;
    hs->req_head = wsg__head_new(c, WSG_HTTP_REQUEST, max_head);
    if (hs->req_head == NULL || buf_room(&hs->req, &hs->req_cap, 0, req_max) == 0) {
        wsg__head_free(c, hs->req_head);
        free(hs->req);
        free(hs);
        return NULL;
    }
    return hs;
}

/* The response parser and buffer, once a backend is connected. */
static int hs_resp_new(wsg_conn_t *c, wsg_hs_t *hs, size_t max) {
    hs->resp_max = max;
    hs->resp_len = 0;
    hs->resp_head = wsg__head_new(c, WSG_HTTP_RESPONSE, max);
    if (hs->resp_head == NULL || buf_room(&hs->resp, &hs->resp_cap, 0, max) == 0)
        return UV_ENOMEM;
    return 0;
}

static void hs_free(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    if (hs == NULL)
        return;
    c->hs = NULL;
    if (hs->streaming)
        atomic_fetch_sub_explicit(&c->w->stats.http_streaming, 1, memory_order_relaxed);
    free(hs->replay);
    wsg__head_free(c, hs->req_head);
    wsg__head_free(c, hs->resp_head);
    free(hs->req);
    free(hs->resp);
    free(hs);
}

/* ---- reading --------------------------------------------------------- */

int wsg__conn_resume_read(wsg_conn_t *c, int side) {
    wsg_peer_t *p = &c->peer[side];
    p->paused = 0;
    if (p->reading || !p->open || p->eof)
        return 0;
    int r = side == WSG_BACKEND
                ? wsg__upstream_read_start((wsg_upstream_t *)(void *)p->io, on_alloc, on_read)
                : p->io->ops->read_start(p->io, on_alloc, on_read);
    if (r == 0)
        p->reading = 1;
    return r;
}

void wsg__conn_pause_read(wsg_conn_t *c, int side) {
    wsg_peer_t *p = &c->peer[side];
    if (p->reading && p->open)
        side == WSG_BACKEND ? wsg__upstream_read_stop((wsg_upstream_t *)(void *)p->io)
                            : (void)p->io->ops->read_stop(p->io);
    p->reading = 0;
}

size_t wsg_conn_struct_size(void) { return sizeof(wsg_conn_t); }

/* ---- deadlines --------------------------------------------------------- */

void wsg__conn_reschedule(wsg_conn_t *c) {
    uint64_t d;
    switch (c->state) {
    case WSG_CONN_RELAY:
        d = wsg__relay_next_deadline(c);
        break;
    case WSG_CONN_CLOSING:
        d = c->close_deadline;
        break;
    default:
        d = c->hs->deadline;
        if (c->state == WSG_CONN_PASSTHRU && c->hs->beat && c->hs->beat_at < d)
            d = c->hs->beat_at;
        if (c->close_deadline != 0 && c->close_deadline < d)
            d = c->close_deadline;
        break;
    }
    if (d == UINT64_MAX)
        wsg_worker_unschedule(c->w, &c->timer);
    else
        wsg_worker_schedule(c->w, &c->timer, d);
}

void wsg_conn_on_deadline(wsg_timer_node_t *node, uint64_t now) {
    wsg_conn_t *c = (wsg_conn_t *)(void *)((char *)node - offsetof(wsg_conn_t, timer));

    /* A plain exchange finishing after shutdown began has drain_ms. */
    if (c->close_deadline != 0 && now >= c->close_deadline && c->state != WSG_CONN_RELAY &&
        c->state != WSG_CONN_CLOSING) {
        wsg_conn_abort(c, "exchange not complete within drain_ms of the shutdown");
        return;
    }

    switch (c->state) {
    case WSG_CONN_PROXY:
        if (now < c->hs->deadline)
            break;
        wsg_conn_abort(c, "PROXY header not complete within handshake_ms");
        return;
    case WSG_CONN_HS_READ:
        if (now < c->hs->deadline)
            break;
        if (c->hs->kept_alive && c->hs->req_len == 0) {
            /* keepalive_ms between two requests: a quiet end, no answer. */
            c->logged = 1;
            c->end_reason = "keep-alive timeout";
            wsg__conn_finish(c);
            return;
        }
        if (wsg_side_is_tls(c->peer[WSG_CLIENT].io) &&
            !wsg_tls_handshake_done(c->peer[WSG_CLIENT].io)) {
            wsg_conn_abort(c, "TLS handshake not complete within handshake_ms");
            return;
        }
        reject(c, 408, "request head not complete within handshake_ms");
        return;
    case WSG_CONN_CONNECTING:
        if (now < c->hs->deadline)
            break;
        /* Closing the handle cancels the connect: on_connect sees
         * UV_ECANCELED and moves on to the next backend. */
        c->end_reason = "connect timeout";
        wsg__conn_close_side(c, WSG_BACKEND);
        return;
    case WSG_CONN_UPSTREAM:
        if (now < c->hs->deadline)
            break;
        wsg_balancer_report_failure(c->rt->pools[c->pool], (unsigned)c->backend, now,
                                    "no handshake answer in time");
        if (c->hs->http)
            reject(c, 504, "no response head within response_idle_ms");
        else
            reject(c, 504, "backend did not answer the handshake within handshake_ms");
        return;
    case WSG_CONN_PASSTHRU:
        if (now < c->hs->deadline) {
            if (c->hs->beat && now >= c->hs->beat_at)
                wsg__http_heartbeat(c, now);
            break;
        }
        wsg_conn_abort(c, c->hs->http ? "backend silent for response_idle_ms in a response"
                                      : "response body not complete within drain_ms");
        return;
    case WSG_CONN_RELAY:
        wsg__relay_on_deadline(c, now);
        return;
    case WSG_CONN_CLOSING:
        if (now < c->close_deadline)
            break;
        if (!c->peer[WSG_CLIENT].open && c->peer[WSG_BACKEND].close_rx &&
            c->peer[WSG_BACKEND].close_sent) {
            /* Only the backend's FIN was missing: the close itself is done. */
            wsg__conn_close_side(c, WSG_BACKEND);
            return;
        }
        wsg_conn_abort(c, "close not complete within drain_ms");
        return;
    }
    wsg__conn_reschedule(c);
}

/* ---- teardown ---------------------------------------------------------- */

/* One access line per WebSocket connection, and per HTTP exchange (then
 * with the request and that exchange's bytes and time). */
void wsg__conn_log_access(wsg_conn_t *c) {
    wsg_worker_t *w = c->w;
    const wsg_config_t *cfg = cfg_of(c);
    const wsg_hs_t *hs = c->hs;

    c->logged = 1;
    if (hs != NULL && hs->http && c->pool >= 0) {
        int cls = c->status >= 100 && c->status < 600 ? c->status / 100 : 0;
        atomic_fetch_add_explicit(&c->rt->pools[c->pool]->counters->http_requests[cls], 1,
                                  memory_order_relaxed);
    }
    if (hs != NULL && hs->http)
        wsg_worker_count_request(w, c->status,
                                 (uv_hrtime() - (hs->t_begin_ns ? hs->t_begin_ns : c->t_start_ns)) /
                                     1000);
    if (!cfg->log.access)
        return;
    char ip[INET6_ADDRSTRLEN], client[INET6_ADDRSTRLEN + 16], route[512];
    static const char *const by[] = {NULL, "client", "backend", "wsgate"};
    bool http = hs != NULL && hs->http;
    uint64_t t0 = http && hs->t_begin_ns ? hs->t_begin_ns : c->t_start_ns;
    wsg__conn_client_ip(c, ip, sizeof(ip));
    snprintf(client, sizeof(client), c->client_addr.sa.sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
             ip, client_port(c));
    if (c->route >= 0) {
        const wsg_route_conf_t *r = &cfg->routes[c->route];
        snprintf(route, sizeof(route), "%s%s", r->host ? r->host : "", r->path_prefix);
    }
    wsg_access_rec_t rec = {
        .worker = w->id,
        .conn = c->id,
        .client = client,
        .listener = cfg->listeners[c->listener].name,
        .route = c->route >= 0 ? route : NULL,
        .pool = c->pool >= 0 ? cfg->pools[c->pool].name : NULL,
        .backend = c->backend >= 0 ? cfg->pools[c->pool].backends[c->backend].address : NULL,
        .request = http && hs->line[0] ? hs->line : NULL,
        .upstream = !http || c->backend < 0 ? NULL : hs->reused ? "reused" : "new",
        .status = c->status,
        .duration_ms = (uv_hrtime() - t0) / 1000000,
        .bytes_in = http ? hs->x_in : c->peer[WSG_CLIENT].bytes,
        .bytes_out = http ? hs->x_out : c->peer[WSG_BACKEND].bytes,
        .frames_in = c->peer[WSG_CLIENT].frames,
        .frames_out = c->peer[WSG_BACKEND].frames,
        .close_code = c->close_code,
        .closed_by = by[c->closed_by],
        .reason = c->end_reason,
    };
    wsg_log_access(&rec);
}

static void conn_free(wsg_conn_t *c) {
    wsg_worker_t *w = c->w;

    if (!c->logged)
        wsg__conn_log_access(c);
    if (c->close_code >= 1000 && c->close_code < 1015)
        atomic_fetch_add_explicit(&w->stats.closes[c->close_code - 1000], 1, memory_order_relaxed);
    else if (c->close_code != 0)
        atomic_fetch_add_explicit(&w->stats.closes[15], 1, memory_order_relaxed);
    if (c->counted_backend)
        wsg_balancer_conn_end(c->rt->pools[c->pool], (unsigned)c->backend);
    if (c->counted_ip)
        wsg_ip_limit_release(wsg_server_ip_limit(w->server), &c->client_addr.sa);
    hs_free(c);
    wsg__edge_free(c);
    for (int s = 0; s < 2; s++) {
        if (c->peer[s].parked)
            free(c->peer[s].park);
        else if (c->peer[s].rchunk != NULL)
            wsg__chunk_put(c, c->peer[s].rchunk);
    }
    wsg_worker_unschedule(w, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&w->stats.conns_active, 1, memory_order_relaxed);
    wsg_server_conn_release(w->server);
    wsg_runtime_unref(c->rt);
    wsg_slab_free(&w->conn_slab, c);
}

static void on_side_closed(uv_handle_t *h) {
    int side;
    wsg_conn_t *c = conn_of_stream(h, &side);

    if (side == WSG_BACKEND) {
        /* A next attempt may already have its own upstream. */
        wsg_upstream_t *u = wsg__upstream_of(h);
        if (c->peer[WSG_BACKEND].io == &u->io)
            c->peer[WSG_BACKEND].io = NULL;
        wsg__upstream_free(u);
    }
    if (--c->handles == 0)
        conn_free(c);
}

void wsg__conn_close_side(wsg_conn_t *c, int side) {
    wsg_peer_t *p = &c->peer[side];
    if (!p->open)
        return;
    p->open = 0;
    p->reading = 0;
    p->io->ops->close(p->io, on_side_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    wsg_conn_t *c = req->data;
    int side = (req->handle == (uv_stream_t *)&c->client_io.tcp) ? WSG_CLIENT : WSG_BACKEND;
    free(req);
    wsg_peer_t *p = &c->peer[side];
    /* Closed now if the shutdown failed, or if it only had to carry a TLS
     * close_notify after a finished close handshake. */
    if (status < 0 || p->eof || (p->close_rx && p->close_sent))
        wsg__conn_close_side(c, side);
}

/* Moves one side towards closed: flush what is queued; then close at once
 * if the peer finished its close handshake, else send FIN and read until the
 * peer's FIN (so unread bytes never turn our close into a reset that destroys
 * the answer we just sent), bounded by the close deadline. */
static void end_side(wsg_conn_t *c, int side) {
    wsg_peer_t *p = &c->peer[side];

    if (!p->open || p->close_owed)
        return;
    if (p->queued > 0) {
        p->want_shut = 1;
        return;
    }
    p->want_shut = 0;
    /* The close handshake with this peer is complete (RFC 6455 §7.1.1: the
     * server closes the TCP connection then), or the peer is gone: close.
     * Its close frame was the last thing it may send, so no unread byte can
     * turn our close into a reset. */
    bool done = p->close_rx && p->close_sent;
    /* Towards the backend wsgate is the WebSocket client, and there the
     * same rule has the backend close first: waiting for its FIN leaves the
     * TIME_WAIT with the backend, not on one of the few ephemeral ports
     * wsgate has towards each backend address. Once the client is gone
     * the wait is short (a backend that never closes would otherwise hold
     * the connection for drain_ms); then on_deadline closes it anyway. */
    if (done && side == WSG_BACKEND && !p->eof && !wsg_side_is_tls(p->io)) {
        if (!c->peer[WSG_CLIENT].open) {
            uint64_t d = uv_now(&c->w->loop) + WSG_BACKEND_FIN_WAIT_MS;
            if (c->close_deadline == 0 || d < c->close_deadline) {
                c->close_deadline = d;
                wsg__conn_reschedule(c);
            }
        }
        wsg__conn_resume_read(c, side);
        return;
    }
    if (p->eof || (done && (!wsg_side_is_tls(p->io) || p->shut))) {
        wsg__conn_close_side(c, side);
        return;
    }
    /* A TLS peer is owed a close_notify (RFC 8446 §6.1) before the TCP
     * close: the shutdown sends it, and on_shutdown closes the side. */
    if (!p->shut) {
        uv_shutdown_t *req = malloc(sizeof(*req));
        p->shut = 1;
        if (req == NULL) {
            wsg__conn_close_side(c, side);
            return;
        }
        req->data = c;
        if (p->io->ops->shutdown(p->io, req, on_shutdown) < 0) {
            free(req);
            wsg__conn_close_side(c, side);
            return;
        }
    }
    wsg__conn_resume_read(c, side);
}

void wsg__conn_finish(wsg_conn_t *c) {
    if (c->state != WSG_CONN_CLOSING) {
        c->state = WSG_CONN_CLOSING;
        uint64_t d = uv_now(&c->w->loop) + cfg_of(c)->timeouts.drain_ms;
        if (c->close_deadline == 0 || d < c->close_deadline)
            c->close_deadline = d;
        wsg__conn_reschedule(c);
    }
    end_side(c, WSG_CLIENT);
    end_side(c, WSG_BACKEND);
}

void wsg_conn_abort(wsg_conn_t *c, const char *why) {
    if (c->end_reason == NULL)
        c->end_reason = why;
    CLOG(c, WSG_LOG_DEBUG, "closing: %s", why); /* the access line carries it too */
    c->state = WSG_CONN_CLOSING;
    wsg__conn_close_side(c, WSG_CLIENT);
    wsg__conn_close_side(c, WSG_BACKEND);
}

wsg_conn_t *wsg_conn_next(wsg_conn_t *c) { return c->next; }

void wsg_conn_drain(wsg_conn_t *c, const wsg_backend_t *backend, uint64_t at) {
    if (c->state != WSG_CONN_RELAY || c->backend < 0 ||
        c->rt->pools[c->pool]->backends[c->backend] != backend)
        return;
    c->drain_at = at ? at : 1;
    wsg__conn_reschedule(c);
}

bool wsg_conn_placement(const wsg_conn_t *c, const char **pool, uint64_t *key_hash,
                        const wsg_backend_t **backend) {
    if (c->state != WSG_CONN_RELAY || c->backend < 0 || !c->keyed || c->sticky || c->drain_at)
        return false;
    *pool = c->rt->cfg->pools[c->pool].name;
    *key_hash = c->key_hash;
    *backend = wsg__conn_backend(c);
    return true;
}

void wsg_conn_rebalance(wsg_conn_t *c, uint64_t at) {
    if (c->state != WSG_CONN_RELAY)
        return;
    c->drain_at = at ? at : 1;
    c->rebalanced = 1;
    wsg__conn_reschedule(c);
}

void wsg_conn_going_away(wsg_conn_t *c) {
    if (c->state == WSG_CONN_RELAY) {
        if (c->closed_by == WSG_BY_NONE)
            c->closed_by = WSG_BY_WSGATE;
        wsg__relay_close(c, WSG_WS_CLOSE_GOING_AWAY, WSG_WS_CLOSE_GOING_AWAY);
    } else if (c->hs != NULL && c->hs->http && c->state >= WSG_CONN_CONNECTING &&
               c->state <= WSG_CONN_PASSTHRU) {
        wsg__http_going_away(c);
    } else if (c->state == WSG_CONN_HS_READ && c->hs->kept_alive && c->hs->req_len == 0) {
        /* Between two requests: nothing is lost by closing at once, and no
         * answer is owed that a reset could destroy. */
        c->logged = 1;
        wsg_conn_abort(c, "wsgate is shutting down");
    } else if (c->state != WSG_CONN_CLOSING) {
        wsg_conn_abort(c, "wsgate is shutting down");
    }
}

/* Puts the header lines <h> before the blank line that ends the head in
 * buf[0..n); returns the new length (n when they do not fit). */
static size_t add_headers(char *buf, size_t n, size_t cap, const char *h) {
    size_t hl = strlen(h);
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (end == NULL || n + hl > cap)
        return n;
    size_t at = (size_t)(end - buf) + 2;
    memmove(buf + at + hl, buf + at, n - at);
    memcpy(buf + at, h, hl);
    return n + hl;
}

/* Answers the client with wsgate's own HTTP error, with the header lines
 * <headers> when not NULL, and ends the connection. */
void wsg__conn_refuse(wsg_conn_t *c, int status, const char *why, const char *headers) {
    char buf[1024];
    size_t n, base = 768; /* the rest is room for <headers> */

    if (c->hs != NULL && c->hs->http) {
        /* An EventSource retries a 503 with Retry-After; anything else it
         * cannot be served ends it for good (SPEC §9). */
        if (c->hs->sse && status >= 500)
            status = 503;
        n = wsg__http_error(c, status, why, buf, base);
    } else {
        n = wsg_http_error_response(status, buf, base);
    }
    if (headers != NULL && n > 0)
        n = add_headers(buf, n, sizeof(buf), headers);

    c->status = (uint16_t)status;
    if (c->end_reason == NULL)
        c->end_reason = why;
    if (c->hs == NULL || !c->hs->http) /* a plain request counts when its line is written */
        wsg_worker_count_handshake(c->w, status, (uv_hrtime() - c->t_start_ns) / 1000);
    CLOG(c, status >= 500 ? WSG_LOG_WARN : WSG_LOG_INFO, "answered %d: %s", status, why);
    wsg__conn_pause_read(c, WSG_CLIENT);
    wsg__conn_close_side(c, WSG_BACKEND);
    if (n > 0)
        wsg__conn_send(c, WSG_CLIENT, buf, n);
    wsg__conn_finish(c);
}

static void reject(wsg_conn_t *c, int status, const char *why) {
    wsg__conn_refuse(c, status, why, NULL);
}

void wsg__conn_reject(wsg_conn_t *c, int status, const char *why) { reject(c, status, why); }

/* limits.max_connections_per_ip, checked once the client's address is
 * final (after the PROXY header, if any). Over the limit the client gets
 * 429 and the connection ends. Returns 0 when admitted. */
static int admit_ip(wsg_conn_t *c) {
    uint64_t max = cfg_of(c)->limits.max_connections_per_ip;
    if (max == 0)
        return 0;
    if (wsg_ip_limit_acquire(wsg_server_ip_limit(c->w->server), &c->client_addr.sa, max)) {
        c->counted_ip = 1;
        return 0;
    }
    atomic_fetch_add_explicit(&c->w->stats.conns_rejected, 1, memory_order_relaxed);
    reject(c, 429, "max_connections_per_ip reached");
    return -1;
}

/* ---- accept -------------------------------------------------------------- */

static void reject_at_accept(wsg_worker_t *w, wsg_wlistener_t *l) {
    /* Over max_connections: accept so the client hears a 503 now instead of
     * waiting in the backlog, and close at once. A TLS client could not read
     * a plaintext answer: it is only closed. */
    bool tls = w->rt->listener_tls[l->index] != NULL;
    uv_tcp_t *t = malloc(sizeof(*t));
    char buf[256];
    size_t n = wsg_http_error_response(503, buf, sizeof(buf));

    atomic_fetch_add_explicit(&w->stats.conns_rejected, 1, memory_order_relaxed);
    if (t == NULL || uv_tcp_init(&w->loop, t) != 0) {
        free(t);
        return;
    }
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)t) == 0 && !tls) {
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        (void)uv_try_write((uv_stream_t *)t, &b, 1);
    }
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

void wsg_conn_accept(wsg_worker_t *w, wsg_wlistener_t *l) {
    const wsg_config_t *cfg = w->rt->cfg;

    if (!wsg_server_conn_admit(w->server, cfg->limits.max_connections)) {
        WSG_LOG(WSG_LOG_WARN, "listener", "max_connections (%llu) reached: rejecting",
                (unsigned long long)cfg->limits.max_connections);
        reject_at_accept(w, l);
        return;
    }
    /* A TLS listener's sides are TLS from the first byte, unless a PROXY
     * header comes first: then TLS starts once it has been read. */
    wsg_tls_ctx_t *tls = w->rt->listener_tls[l->index];
    bool proxy = cfg->listeners[l->index].proxy_protocol;
    /* A PROXY header (at most WSG_PROXY_MAX bytes) comes first on such
     * listeners and shares the request buffer. */
    size_t req_cap = cfg->limits.max_header_bytes + (proxy ? WSG_PROXY_MAX : 0);
    wsg_conn_t *c = wsg_slab_alloc(&w->conn_slab);
    wsg_hs_t *hs = NULL;
    if (c != NULL) {
        c->w = w;
        hs = hs_new(c, req_cap, cfg->limits.max_header_bytes);
    }
    if (hs == NULL ||
        (tls && !proxy ? wsg_side_init_tls(&w->loop, &c->client_io, tls, 1, NULL)
                       : wsg_side_init_tcp(&w->loop, &c->client_io)) != 0) {
        if (hs != NULL) {
            c->hs = hs;
            hs_free(c);
        }
        wsg_slab_free(&w->conn_slab, c);
        wsg_server_conn_release(w->server);
        reject_at_accept(w, l);
        return;
    }
    c->rt = wsg_runtime_ref(w->rt);
    c->hs = hs;
    c->id = ++w->next_conn_id;
    c->t_start_ns = uv_hrtime();
    c->listener = (uint32_t)l->index;
    c->route = c->pool = c->backend = -1;
    c->handles = 1;
    c->state = WSG_CONN_HS_READ;
    c->peer[WSG_CLIENT].open = 1;
    c->peer[WSG_CLIENT].io = &c->client_io;
    c->client_io.tcp.data = c;
    wsg_timer_node_init(&c->timer);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add_explicit(&w->stats.conns_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stats.conns_active, 1, memory_order_relaxed);

    int r = uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->client_io.tcp);
    int len = sizeof(c->client_addr);
    if (r == 0)
        r = uv_tcp_getpeername(&c->client_io.tcp, &c->client_addr.sa, &len);
    if (r != 0) {
        hs->deadline = uv_now(&w->loop);
        wsg_conn_abort(c, "accept failed");
        return;
    }
    /* TCP_NODELAY comes from the listening socket (Linux copies it to
     * accepted sockets), which saves a setsockopt per connection. */
    if (proxy)
        c->state = WSG_CONN_PROXY;
    /* A plain side reads and writes through the worker's io_uring when
     * "io" chose it (on failure it simply stays on libuv). */
    if (w->ring != NULL && tls == NULL)
        (void)wsg_side_use_uring(&c->client_io, w->ring);
    /* The loop's clock is from the start of this iteration, which a burst of
     * accepts can make stale by tens of ms: handshake_ms must not start
     * before the connection did (a clock read from the vDSO, no syscall). */
    uv_update_time(&w->loop);
    hs->deadline = uv_now(&w->loop) + cfg->timeouts.handshake_ms;
    if (wsg__conn_resume_read(c, WSG_CLIENT) != 0) {
        wsg_conn_abort(c, "cannot read from the client");
        return;
    }
    wsg__conn_reschedule(c);
    if (c->state == WSG_CONN_HS_READ)
        admit_ip(c);
}

/* ---- the handshake ------------------------------------------------------- */

static void start_relay(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;

    if (wsg__edge_answer(c) != 0) { /* it may replace the response head */
        reject(c, 500, "out of memory");
        return;
    }
    size_t req_head = wsg_http_head_len(hs->req_head);
    size_t resp_head = wsg_http_head_len(hs->resp_head);
    c->status = 101;
    wsg_worker_count_handshake(c->w, 101, (uv_hrtime() - c->t_start_ns) / 1000);
    if (wsg__sticky_send_head(c, hs->resp, resp_head) < 0) {
        wsg_conn_abort(c, "client gone before the 101 could be sent");
        return;
    }
    wsg__relay_start(c);
    /* Frames the client pipelined behind its request and frames the backend
     * sent right behind its 101 go through the relay like any later bytes. */
    if (hs->req_len > req_head)
        wsg__relay_feed(c, WSG_CLIENT, hs->req + req_head, hs->req_len - req_head);
    if (hs->resp_len > resp_head && c->state == WSG_CONN_RELAY)
        wsg__relay_feed(c, WSG_BACKEND, hs->resp + resp_head, hs->resp_len - resp_head);
    hs_free(c);
}

/* Writes the request head for the backend (SPEC §3.4) and sends it. It is
 * built at each connect into a temporary buffer: the send copies whatever
 * the socket does not take at once. */
static int send_upstream(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    char ip[INET6_ADDRSTRLEN];
    size_t need = 2 * wsg_http_head_len(hs->req_head) + 512; /* see build_upstream */
    char stack[4096];
    char *out = need <= sizeof(stack) ? stack : malloc(need);
    if (out == NULL)
        return UV_ENOMEM;
    wsg_forward_info_t fi = wsg__conn_forward_info(c, ip);
    ssize_t n = wsg_handshake_build_upstream(hs->req_head, hs->req, &fi, out, need);
    if (n > 0)
        n = (ssize_t)wsg__sticky_filter(c, out, (size_t)n);
    int r = n < 0 ? UV_ENOBUFS : wsg__conn_send(c, WSG_BACKEND, out, (size_t)n);
    if (out != stack)
        free(out);
    return r;
}

/* The backend accepted the connection (and the TLS handshake, for a TLS
 * pool), or a kept-alive one was taken from the pool: send the request and
 * wait for its answer. */
static void backend_ready(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    const wsg_config_t *cfg = cfg_of(c);

    if (!hs->reused)
        wsg_balancer_report_success(c->rt->pools[c->pool], (unsigned)c->backend);
    c->state = WSG_CONN_UPSTREAM;
    hs->deadline = uv_now(&c->w->loop) + cfg->timeouts.handshake_ms;
    if (hs->resp_head == NULL && hs_resp_new(c, hs, cfg->limits.max_header_bytes) != 0) {
        reject(c, 500, "out of memory");
        return;
    }
    int sent = hs->http ? wsg__http_send_request(c) : send_upstream(c);
    if (c->state != WSG_CONN_UPSTREAM)
        return; /* the request body was refused while being sent */
    if (sent < 0 || wsg__conn_resume_read(c, WSG_BACKEND) < 0) {
        reject(c, 502, "could not send the request to the backend");
        return;
    }
    wsg__conn_reschedule(c);
}

/* A connect attempt failed before any byte of the request was sent: a
 * passive health failure, and the next backend gets a chance at once (the
 * next attempt has its own upstream). <why> is static. */
static void backend_failed(wsg_conn_t *c, const char *why) {
    wsg_balancer_t *bal = c->rt->pools[c->pool];
    CLOG(c, WSG_LOG_WARN, "connect to %s failed: %s", bal->backends[c->backend]->address, why);
    wsg_balancer_report_failure(bal, (unsigned)c->backend, uv_now(&c->w->loop), why);
    wsg_balancer_conn_end(bal, (unsigned)c->backend);
    c->counted_backend = 0;
    c->end_reason = why;
    wsg__conn_close_side(c, WSG_BACKEND);
    connect_next(c);
}

static void on_backend_tls(wsg_side_t *s, int status) {
    wsg_conn_t *c = s->tcp.data;
    if (c->state != WSG_CONN_CONNECTING || c->peer[WSG_BACKEND].io != s)
        return; /* the connection is being torn down */
    if (status == 0) {
        backend_ready(c);
        return;
    }
    if (status == UV_EPROTO)
        CLOG(c, WSG_LOG_WARN, "TLS to backend failed: %s", wsg_tls_last_error(s));
    backend_failed(c, status == UV_ECANCELED ? "connect timeout" : "TLS handshake failed");
}

static void on_connect(uv_connect_t *req, int status) {
    wsg_conn_t *c = req->data;
    wsg_peer_t *p = &c->peer[WSG_BACKEND];
    bool current = c->hs != NULL && req == c->hs->creq;

    /* The request lives in no upstream: an idle WebSocket's backend side
     * carries no connect state. */
    free(req);
    if (current)
        c->hs->creq = NULL;
    /* Only the current attempt's connect counts: a timed-out one reports
     * UV_ECANCELED from its close, and so does a torn-down connection. */
    if (c->state != WSG_CONN_CONNECTING || p->io == NULL || !current)
        return;
    if (status != 0) {
        backend_failed(c, status == UV_ECANCELED ? "connect timeout" : uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&p->io->tcp, 1);
    wsg_tls_ctx_t *tls = c->rt->pool_tls[c->pool];
    if (tls == NULL) {
        if (c->w->ring != NULL)
            (void)wsg_side_use_uring(p->io, c->w->ring);
        backend_ready(c);
        return;
    }
    /* TLS to the backend: a certificate that fails verification is a failed
     * connect like any other (next backend, passive health). */
    char host[256], addr[320];
    uint16_t port;
    wsg_config_backend_authority(cfg_of(c)->pools[c->pool].backends[c->backend].address, addr,
                                 sizeof(addr));
    if (wsg_config_split_hostport(addr, host, sizeof(host), &port) != 0 ||
        wsg_side_start_tls(p->io, tls, 0, host, NULL, 0) != 0 ||
        wsg_tls_handshake(p->io, on_backend_tls) != 0)
        backend_failed(c, "cannot start TLS");
}

/* Makes <u> the backend side of <c>, for backend <idx>. */
static void attach_backend(wsg_conn_t *c, wsg_upstream_t *u, unsigned idx) {
    wsg_peer_t *p = &c->peer[WSG_BACKEND];

    p->io = &u->io;
    u->io.tcp.data = c;
    p->eof = p->shut = p->want_shut = p->paused = 0;
    p->reading = u->reading; /* a kept-alive one is still read */
    p->close_rx = p->close_sent = 0;
    p->close_owed = 0;
    p->open = 1;
    c->handles++;
    c->backend = (int32_t)idx;
    wsg_balancer_conn_start(c->rt->pools[c->pool], idx);
    c->counted_backend = 1;
    if (c->hs->http)
        wsg__upstream_set_busy(u, true);
}

/* A kept-alive connection to backend <idx> for a plain request, if the pool
 * has one: the request is sent on it at once. */
static bool reuse_backend(wsg_conn_t *c, unsigned idx) {
    wsg_hs_t *hs = c->hs;
    wsg_backend_t *be = c->rt->pools[c->pool]->backends[idx];

    if (!hs->http || hs->fresh_only || cfg_of(c)->pools[c->pool].keepalive == 0)
        return false;
    /* A request that could not be resent is only put on a connection that
     * shows no sign of having been closed. */
    wsg_upstream_t *u = wsg__upstream_take(c->w, be, c->rt->pool_tls[c->pool] != NULL,
                                           !wsg__http_replayable(c));
    if (u == NULL)
        return false;
    attach_backend(c, u, idx);
    hs->reused = 1;
    atomic_fetch_add_explicit(&c->w->stats.upstream_reused, 1, memory_order_relaxed);
    backend_ready(c);
    return true;
}

static void connect_next(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    const wsg_pool_conf_t *pool = &cfg_of(c)->pools[c->pool];
    wsg_balancer_t *bal = c->rt->pools[c->pool];

    hs->reused = 0;
    while (hs->tried < hs->ncand) {
        unsigned idx = hs->cand[hs->tried++];
        const wsg_backend_conf_t *be = &pool->backends[idx];

        if (reuse_backend(c, idx))
            return;
        wsg_upstream_t *u = wsg__upstream_new(c->w, bal->backends[idx],
                                              c->rt->pool_tls[c->pool] != NULL);
        if (u == NULL)
            break;
        attach_backend(c, u, idx);
        if (hs->http)
            atomic_fetch_add_explicit(&c->w->stats.upstream_opened, 1, memory_order_relaxed);
        uv_connect_t *req = malloc(sizeof(*req));
        if (req == NULL) {
            c->end_reason = "out of memory";
            wsg__conn_close_side(c, WSG_BACKEND);
            break;
        }
        req->data = c;
        hs->creq = req;
        hs->deadline = uv_now(&c->w->loop) + pool->connect_timeout_ms;
        int r = uv_tcp_connect(req, &u->io.tcp, (const struct sockaddr *)&be->addr.ss, on_connect);
        if (r == 0) {
            /* Reading from now on puts POLLIN in the same epoll_ctl as the
             * connect's POLLOUT: libuv forgets a watcher whose events drop
             * to none, so starting to read after the connect costs a failed
             * EPOLL_CTL_ADD (EEXIST) and a MOD. Nothing arrives before the
             * request is sent; a failed connect reports to on_connect only.
             * Not with a ring: the side moves to it once connected, and
             * reads through it. */
            if (c->rt->pool_tls[c->pool] == NULL && c->w->ring == NULL)
                (void)wsg__conn_resume_read(c, WSG_BACKEND);
            wsg__conn_reschedule(c);
            return;
        }
        /* Failed before any packet left (e.g. no route): same as refused. */
        on_connect(req, r);
        return;
    }
    reject(c, 502, c->end_reason ? c->end_reason : "every backend failed");
}

void wsg__conn_release_backend(wsg_conn_t *c, bool reusable) {
    wsg_peer_t *p = &c->peer[WSG_BACKEND];
    const wsg_config_t *cfg = cfg_of(c);

    if (c->counted_backend) {
        wsg_balancer_conn_end(c->rt->pools[c->pool], (unsigned)c->backend);
        c->counted_backend = 0;
    }
    if (!p->open)
        return;
    wsg_upstream_t *u = (wsg_upstream_t *)(void *)p->io;
    if (reusable && p->queued == 0 && p->nwrites == 0 && !p->eof && !p->shut && !p->want_shut) {
        /* Reading goes on: the pool watches the idle connection. */
        if (wsg__upstream_park(c->w, u, cfg->pools[c->pool].keepalive,
                               cfg->timeouts.upstream_idle_ms)) {
            p->open = 0;
            p->io = NULL;
            c->handles--;
            return;
        }
    }
    wsg__conn_close_side(c, WSG_BACKEND);
}

int wsg__conn_retry(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    const char *addr = cfg_of(c)->pools[c->pool].backends[c->backend].address;

    if (hs->replay == NULL || hs->resp_len > 0 || hs->resp_started || hs->tried == 0)
        return -1;
    if (hs->reused && !hs->fresh_only) {
        /* Not the backend's fault (it may close an idle connection when it
         * likes), so no passive health failure: the same backend again, on
         * a new connection. */
        CLOG(c, WSG_LOG_INFO, "kept-alive connection to %s failed before answering: resending %s",
             addr, hs->line);
        hs->fresh_only = 1;
        hs->tried--;
    } else if (hs->tried < hs->ncand) {
        CLOG(c, WSG_LOG_WARN, "%s closed without answering %s: resending it to the next backend",
             addr, hs->line);
        wsg_balancer_report_failure(c->rt->pools[c->pool], (unsigned)c->backend,
                                    uv_now(&c->w->loop), "closed without answering");
    } else {
        return -1;
    }
    atomic_fetch_add_explicit(&c->w->stats.upstream_retried, 1, memory_order_relaxed);
    wsg__conn_release_backend(c, false);
    c->state = WSG_CONN_CONNECTING;
    connect_next(c);
    return 0;
}

/* The request head is complete: route, validate, choose and connect. */
static void on_request(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    const wsg_config_t *cfg = cfg_of(c);
    const char *url, *host, *reason;
    size_t urllen, hostlen;

    /* The client is still read while its backend is chosen and connected:
     * early frames pile up behind the head in the request buffer (reading
     * pauses only if it fills), and a client that leaves is noticed now. */
    wsg_http_head_url(hs->req_head, hs->req, &url, &urllen);
    host = wsg_http_head_get_id(hs->req_head, hs->req, WSG_H_HOST, &hostlen);
    /* Known before routing, so that even a 404 is answered (JSON, counts)
     * as what it is: a plain request or an upgrade. */
    bool websocket = wsg_handshake_is_websocket(hs->req_head, hs->req);
    if (!websocket)
        wsg__http_classify(c);
    if (wsg__edge_rate(c) != 0)
        return;
    c->route = wsg_route_match(cfg->routes, cfg->nroutes, host, host ? hostlen : 0, url, urllen);
    if (c->route < 0) {
        reject(c, 404, "no route matches the request");
        return;
    }
    c->pool = (int32_t)cfg->routes[c->route].pool_index;
    /* One session, a sequence of exchanges: this one is plain HTTP or the
     * upgrade that turns the connection into a relayed WebSocket. */
    c->logged = 0;
    hs->t_begin_ns = uv_hrtime();
    hs->x_in = wsg_http_head_len(hs->req_head);
    hs->x_out = 0;
    const wsg_route_conf_t *route = &cfg->routes[c->route];
    if (!websocket) {
        if (!route->http) {
            /* 426, with the WebSocket version, tells the client what this
             * route does speak. */
            hs->http = 0;
            reject(c, 426, "plain HTTP is off for this route");
            return;
        }
        if (wsg__http_begin(c) != 0)
            return;
    } else {
        if (!route->websocket) {
            reject(c, 404, "the route takes no WebSocket upgrades");
            return;
        }
        int status = wsg_handshake_validate(hs->req_head, hs->req, &reason);
        if (status != 0) {
            reject(c, status, reason);
            return;
        }
    }
    if (wsg__edge_admit(c, route, websocket) != 0)
        return;

    /* The sticky key decides the backend order. */
    const wsg_pool_conf_t *pool = &cfg->pools[c->pool];
    char ip[INET6_ADDRSTRLEN];
    const char *key;
    size_t keylen;
    uint64_t h;
    wsg__conn_client_ip(c, ip, sizeof(ip));
    c->keyed = 1;
    if (wsg_balance_key(&pool->balance, hs->req_head, hs->req, ip, wsg__edge_jwt(c), &key,
                        &keylen))
        h = wsg_ring_hash(key, keylen);
    else if (pool->balance.fallback == WSG_FALLBACK_RANDOM)
        h = wsg_worker_random(c->w), c->keyed = 0;
    else
        h = wsg_ring_hash(ip, strlen(ip));
    c->key_hash = h;
    size_t want = (size_t)pool->retries + 1;
    if (want > sizeof(hs->cand) / sizeof(hs->cand[0]))
        want = sizeof(hs->cand) / sizeof(hs->cand[0]);
    hs->ncand = wsg_balancer_candidates(c->rt->pools[c->pool], h, uv_now(&c->w->loop), hs->cand,
                                        want);
    wsg__sticky_place(c, want);
    if (hs->ncand == 0) {
        reject(c, 503, "no healthy backend in the pool");
        return;
    }

    if (websocket) {
        const char *wskey = wsg_http_head_get_id(hs->req_head, hs->req, WSG_H_SEC_WEBSOCKET_KEY, &keylen);
        wsg_ws_accept(wskey, keylen, hs->accept);
    }
    c->state = WSG_CONN_CONNECTING;
    connect_next(c);
}

void wsg__conn_request_bytes(wsg_conn_t *c, size_t n) { on_request_bytes(c, n); }

static void on_request_bytes(wsg_conn_t *c, size_t n) {
    wsg_hs_t *hs = c->hs;
    /* A kept-alive connection waits keepalive_ms for a request; once one
     * starts, its head has handshake_ms like the first. */
    if (hs->kept_alive && hs->req_len == 0 && n > 0) {
        hs->deadline = uv_now(&c->w->loop) + cfg_of(c)->timeouts.handshake_ms;
        wsg__conn_reschedule(c);
        c->logged = 0; /* a new request: whatever becomes of it gets its line */
        hs->t_begin_ns = uv_hrtime();
    }
    hs->req_len += n;
    switch (wsg_http_head_feed(hs->req_head, hs->req, hs->req_len)) {
    case WSG_HEAD_INCOMPLETE:
        if (hs->req_len == hs->req_max)
            reject(c, 431, "request head larger than max_header_bytes");
        return;
    case WSG_HEAD_COMPLETE:
        /* Early frames filled the buffer: the rest waits in the socket. */
        if (hs->req_len == hs->req_max)
            wsg__conn_pause_read(c, WSG_CLIENT);
        on_request(c);
        return;
    case WSG_HEAD_TOO_LARGE:
        reject(c, 431, "request head larger than max_header_bytes");
        return;
    default:
        reject(c, 400, "malformed request");
        return;
    }
}

/* PROXY protocol (v1/v2): the real client address comes before the
 * request. A malformed header is a broken or hostile hop in front of us: the
 * connection is closed without an HTTP answer, as HAProxy does. */
static void on_proxy_bytes(wsg_conn_t *c, size_t n) {
    wsg_hs_t *hs = c->hs;
    wsg_proxy_result_t res;
    size_t used;

    hs->req_len += n;
    switch (wsg_proxy_parse(hs->req, hs->req_len, &used, &res)) {
    case WSG_PROXY_NEED_MORE:
        if (hs->req_len >= WSG_PROXY_MAX)
            wsg_conn_abort(c, "PROXY header too long");
        return;
    case WSG_PROXY_MALFORMED:
        CLOG(c, WSG_LOG_WARN, "malformed PROXY header: %s", res.reason);
        wsg_conn_abort(c, "malformed PROXY header");
        return;
    case WSG_PROXY_DONE:
        break;
    }
    if (!res.local && res.src_len <= sizeof(c->client_addr))
        memcpy(&c->client_addr, &res.src, res.src_len);
    size_t rest = hs->req_len - used;
    c->state = WSG_CONN_HS_READ;
    wsg_tls_ctx_t *tls = c->rt->listener_tls[c->listener];
    if (tls != NULL) {
        /* What followed the header is the start of the TLS stream. TLS
         * starts before the address check so that a 429 reaches the client
         * encrypted. */
        wsg_peer_t *p = &c->peer[WSG_CLIENT];
        wsg__conn_pause_read(c, WSG_CLIENT);
        hs->req_len = 0;
        if (wsg_side_start_tls(p->io, tls, 1, NULL, hs->req + used, rest) != 0 ||
            wsg__conn_resume_read(c, WSG_CLIENT) != 0) {
            wsg_conn_abort(c, "cannot start TLS");
            return;
        }
        admit_ip(c);
        return;
    }
    if (admit_ip(c) != 0)
        return;
    memmove(hs->req, hs->req + used, rest);
    hs->req_len = 0;
    if (rest > 0)
        on_request_bytes(c, rest);
}

static void on_response_bytes(wsg_conn_t *c, size_t n) {
    wsg_hs_t *hs = c->hs;
    hs->resp_len += n;
    int r = wsg_http_head_feed(hs->resp_head, hs->resp, hs->resp_len);
    if (r == WSG_HEAD_INCOMPLETE) {
        if (hs->resp_len == hs->resp_max)
            reject(c, 502, "backend response head too large");
        return;
    }
    if (r != WSG_HEAD_COMPLETE) {
        reject(c, 502, "malformed response from the backend");
        return;
    }
    switch (wsg_handshake_check_response(hs->resp_head, hs->resp, hs->accept)) {
    case WSG_RESP_UPGRADE:
        start_relay(c);
        return;
    case WSG_RESP_BAD_ACCEPT:
        reject(c, 502, "backend answered 101 with a wrong Sec-WebSocket-Accept");
        return;
    default:
        break;
    }
    /* Any other answer goes to the client as the backend sent it, body
     * included, and then the connection ends (SPEC §3.6). */
    size_t head = wsg_http_head_len(hs->resp_head);
    c->status = (uint16_t)wsg_http_head_status(hs->resp_head);
    c->end_reason = "backend refused the upgrade";
    wsg_worker_count_handshake(c->w, c->status, (uv_hrtime() - c->t_start_ns) / 1000);
    CLOG(c, WSG_LOG_INFO, "backend answered %u: relaying it", c->status);
    c->state = WSG_CONN_PASSTHRU;
    hs->deadline = uv_now(&c->w->loop) + cfg_of(c)->timeouts.drain_ms;
    wsg__conn_reschedule(c);
    wsg__conn_send(c, WSG_CLIENT, hs->resp, hs->resp_len);
    int done = wsg_http_body_feed(hs->resp_head, hs->resp + head, hs->resp_len - head);
    hs->resp_len = 0;
    if (done != 0)
        wsg__conn_finish(c);
}

static void on_passthru_bytes(wsg_conn_t *c, size_t n) {
    wsg_hs_t *hs = c->hs;
    wsg__conn_send(c, WSG_CLIENT, hs->resp, n);
    if (wsg_http_body_feed(hs->resp_head, hs->resp, n) != 0) {
        wsg__conn_finish(c);
        return;
    }
    if (c->peer[WSG_CLIENT].queued >= cfg_of(c)->limits.buffer_bytes ||
        c->peer[WSG_CLIENT].nwrites >= WSG_MAX_WRITES) {
        wsg__conn_pause_read(c, WSG_BACKEND);
        c->peer[WSG_BACKEND].paused = 1;
    }
}

/* Reads that only watch for the peer's FIN after wsgate answered the
 * handshake itself: the bytes are dropped into the handshake buffer. */
static uv_buf_t scratch(wsg_hs_t *hs) { return uv_buf_init(hs->req, (unsigned)hs->req_cap); }

static int relaying(const wsg_conn_t *c) {
    return c->state == WSG_CONN_RELAY || (c->state == WSG_CONN_CLOSING && c->hs == NULL);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    int side;
    wsg_conn_t *c = conn_of_stream(h, &side);
    wsg_hs_t *hs = c->hs;
    (void)suggested;

    if (relaying(c)) {
        wsg__relay_alloc(c, side, buf);
        return;
    }
    if (side == WSG_CLIENT &&
        (c->state <= WSG_CONN_UPSTREAM || (c->state == WSG_CONN_PASSTHRU && hs->http))) {
        size_t room = buf_room(&hs->req, &hs->req_cap, hs->req_len, hs->req_max);
        *buf = uv_buf_init(hs->req + hs->req_len, (unsigned)room);
    } else if (c->state == WSG_CONN_PASSTHRU && side == WSG_BACKEND && hs->http &&
               (c->peer[WSG_BACKEND].rchunk != NULL ||
                (hs->bulk && (c->peer[WSG_BACKEND].rchunk = wsg__chunk_get_bulk(c)) != NULL) ||
                (c->peer[WSG_BACKEND].rchunk = wsg__chunk_get(c)) != NULL)) {
        /* A response body is read a whole chunk at a time, and that chunk
         * goes on to the client's write queue as it is; a body that fills
         * one is read in bulk chunks from then on. */
        wsg_chunk_t *ch = c->peer[WSG_BACKEND].rchunk;
        *buf = uv_buf_init(ch->data, (unsigned)(ch->bulk ? WSG_BULK_DATA : WSG_CHUNK_DATA));
    } else if ((c->state == WSG_CONN_UPSTREAM || c->state == WSG_CONN_PASSTHRU) &&
               side == WSG_BACKEND) {
        size_t room = buf_room(&hs->resp, &hs->resp_cap, hs->resp_len, hs->resp_max);
        *buf = uv_buf_init(hs->resp + hs->resp_len, (unsigned)room);
    } else {
        *buf = scratch(hs);
    }
}

void wsg__conn_side_eof(wsg_conn_t *c, int side) {
    wsg_peer_t *p = &c->peer[side];
    p->eof = 1;
    p->reading = 0;
    if (c->state == WSG_CONN_CLOSING)
        end_side(c, side);
}

/* Frames the client sent behind its request while the backend is being
 * reached: kept for the relay; reading pauses when the buffer is full. */
static void on_early_bytes(wsg_conn_t *c, size_t n) {
    wsg_hs_t *hs = c->hs;
    hs->req_len += n;
    if (hs->req_len == hs->req_max)
        wsg__conn_pause_read(c, WSG_CLIENT);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    int side;
    wsg_conn_t *c = conn_of_stream((uv_handle_t *)s, &side);
    (void)buf;

    if (relaying(c)) {
        wsg__relay_on_read(c, side, nread);
        return;
    }
    if (nread <= 0 && side == WSG_BACKEND && c->peer[WSG_BACKEND].rchunk != NULL) {
        /* Nothing came into the body chunk: it goes back to the pool. */
        wsg__chunk_put(c, c->peer[WSG_BACKEND].rchunk);
        c->peer[WSG_BACKEND].rchunk = NULL;
    }
    if (nread == 0)
        return;
    if (nread < 0) {
        wsg__conn_side_eof(c, side);
        switch (c->state) {
        case WSG_CONN_PROXY:
        case WSG_CONN_HS_READ:
            if (nread == UV_EPROTO && wsg_side_is_tls(c->peer[WSG_CLIENT].io)) {
                /* A failed TLS handshake costs a log line and nothing else. */
                CLOG(c, WSG_LOG_INFO, "TLS handshake failed: %s",
                     wsg_tls_last_error(c->peer[WSG_CLIENT].io));
                wsg_conn_abort(c, "TLS handshake failed");
                return;
            }
            wsg_conn_abort(c, nread == UV_EOF ? "client closed during the handshake"
                                              : "client error during the handshake");
            return;
        case WSG_CONN_CONNECTING:
            if (c->hs->http && side == WSG_CLIENT) {
                wsg__http_client_eof(c);
                if (c->state == WSG_CONN_CONNECTING)
                    wsg_conn_abort(c, "client gone while connecting to the backend");
                return;
            }
            wsg_conn_abort(c, "client gone while connecting to the backend");
            return;
        case WSG_CONN_UPSTREAM:
        case WSG_CONN_PASSTHRU:
            if (c->hs->http) {
                if (side == WSG_BACKEND)
                    wsg__http_backend_eof(c);
                else
                    wsg__http_client_eof(c);
                return;
            }
            if (c->state == WSG_CONN_PASSTHRU)
                goto passthru_eof;
            if (side == WSG_BACKEND)
                reject(c, 502, "backend closed before answering the handshake");
            else
                wsg_conn_abort(c, "client gone while waiting for the backend");
            return;
        passthru_eof:
            if (side == WSG_BACKEND) {
                wsg_http_body_feed(c->hs->resp_head, NULL, 0);
                wsg__conn_finish(c);
            } else {
                wsg_conn_abort(c, "client gone during the response");
            }
            return;
        default:
            return;
        }
    }
    if (c->state == WSG_CONN_PROXY && side == WSG_CLIENT)
        on_proxy_bytes(c, (size_t)nread);
    else if (c->state == WSG_CONN_HS_READ && side == WSG_CLIENT)
        on_request_bytes(c, (size_t)nread);
    else if (side == WSG_CLIENT && c->hs->http &&
             (c->state <= WSG_CONN_UPSTREAM || c->state == WSG_CONN_PASSTHRU))
        wsg__http_client_bytes(c, (size_t)nread);
    else if (side == WSG_CLIENT && c->state <= WSG_CONN_UPSTREAM)
        on_early_bytes(c, (size_t)nread);
    else if (side == WSG_BACKEND && c->hs->http &&
             (c->state == WSG_CONN_UPSTREAM || c->state == WSG_CONN_PASSTHRU))
        wsg__http_backend_bytes(c, (size_t)nread);
    else if (c->state == WSG_CONN_UPSTREAM && side == WSG_BACKEND)
        on_response_bytes(c, (size_t)nread);
    else if (c->state == WSG_CONN_PASSTHRU && side == WSG_BACKEND)
        on_passthru_bytes(c, (size_t)nread);
}
