/*
 * Plain HTTP on the session (SPEC §9): one request and its response, on a
 * client connection that may carry another exchange after it, or an
 * upgrade that turns it into a relayed WebSocket.
 *
 * conn.c owns the connection's life and phases (reading a head, choosing
 * and connecting a backend, teardown) for upgrades and plain requests
 * alike; this file is what a plain exchange does inside those phases:
 * forward the request with wsgate's own framing (http_msg.c decides it),
 * stream its body, relay the response the moment its bytes arrive, and at
 * its end either start reading the next request or end the connection.
 *
 * Bodies are never gathered. The request body streams from the request
 * buffer (what the client sent after the head, read into hs->req) to the
 * backend; the response streams from the response buffer to the client;
 * each direction stops reading its sender while buffer_bytes wait for the
 * receiver, as the WebSocket relay does. llhttp, fed the body bytes, says
 * where each message ends; http_msg.c has already refused any message whose
 * framing the two could read differently.
 *
 * The backend connection goes back to the worker's pool (upstream.c) when
 * the exchange ends cleanly on it: the request all sent, the response
 * delimited and complete with nothing after it, and neither side said
 * "close". An idempotent request without a body whose connection dies
 * before any response byte comes back is resent (SPEC §9): once on a new
 * connection if a kept-alive one had died, else to the next candidate
 * backend; anything else gets 502.
 *
 * A Server-Sent Events response whose backend stays silent for
 * heartbeat.interval_ms gets a comment line between two events, so that
 * NATs and browsers keep it open; the client ignores comments.
 */
#include "conn_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <wsgate/http_msg.h>

static const wsg_config_t *cfg_of(const wsg_conn_t *c) { return c->rt->cfg; }

/* Bytes of the exchange, for the backend's traffic in /status. */
static void count(wsg_conn_t *c, int dir, uint64_t n) {
    if (c->backend >= 0 && n > 0)
        wsg_backend_count(wsg__conn_backend(c), c->w->id, dir, 0, n);
}

#define XLOG(c, level, ...)                                                                \
    do {                                                                                   \
        if ((level) >= wsg_log_threshold()) {                                              \
            wsg_log_ctx_t ctx_;                                                            \
            wsg__conn_log_ctx((c), &ctx_);                                                 \
            wsg_log_write((level), "http", &ctx_, __VA_ARGS__);                            \
        }                                                                                  \
    } while (0)

/* "METHOD /path" for the access line: the query may carry tokens and is
 * cut, as are control bytes. */
static void remember_line(wsg_hs_t *hs) {
    const char *url;
    size_t n, k = 0;
    const char *m = wsg_http_head_method(hs->req_head);

    wsg_http_head_url(hs->req_head, hs->req, &url, &n);
    size_t mlen = strlen(m);
    if (mlen + 1 < sizeof(hs->line)) {
        memcpy(hs->line, m, mlen);
        hs->line[mlen] = ' ';
        k = mlen + 1;
    }
    for (size_t i = 0; i < n && url[i] != '?' && k + 1 < sizeof(hs->line); i++)
        hs->line[k++] = (unsigned char)url[i] > 0x20 && url[i] != 0x7f ? url[i] : '?';
    hs->line[k] = '\0';
}

void wsg__http_classify(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    hs->http = 1;
    hs->json = wsg_http_accepts(hs->req_head, hs->req, "application/json");
    hs->sse = wsg_http_accepts(hs->req_head, hs->req, "text/event-stream");
    remember_line(hs);
}

int wsg__http_begin(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    const wsg_config_t *cfg = cfg_of(c);
    const char *why;
    wsg_body_t body;

    int st = wsg_http_check_request(hs->req_head, hs->req, &why);
    if (st == 0)
        st = wsg_http_check_message(hs->req_head, hs->req, &why);
    if (st != 0) {
        wsg__conn_reject(c, st, why);
        return -1;
    }
    const char *method = wsg_http_head_method(hs->req_head);
    if (strcmp(method, "CONNECT") == 0) {
        /* A tunnel to anywhere is not what a reverse proxy offers. */
        wsg__conn_reject(c, 405, "CONNECT is not proxied");
        return -1;
    }
    wsg_http_request_body(hs->req_head, hs->req, &body);
    /* llhttp reads a request that asks for another protocol (Upgrade: h2c)
     * as ending at its head; a body there would be taken for the next
     * request by one of the two readings. */
    if (body.kind != WSG_BODY_NONE && wsg_http_body_complete(hs->req_head)) {
        wsg__conn_reject(c, 400, "body on a request asking to switch protocols");
        return -1;
    }
    uint64_t max = cfg->limits.max_body_bytes;
    if (max != 0 && body.kind == WSG_BODY_LENGTH && body.length > max) {
        wsg__conn_reject(c, 413, "request body larger than max_body_bytes");
        return -1;
    }
    hs->head_req = strcmp(method, "HEAD") == 0;
    hs->replayable = body.kind == WSG_BODY_NONE &&
                     (strcmp(method, "GET") == 0 || hs->head_req || strcmp(method, "OPTIONS") == 0);
    hs->keep = cfg->timeouts.keepalive_ms > 0 && wsg_http_keeps_alive(hs->req_head, hs->req);
    hs->req_done = wsg_http_body_complete(hs->req_head);
    return 0;
}

/* The body went wrong (malformed chunk, over max_body_bytes): the backend
 * must never see a complete request, so its connection ends; the client
 * gets <status> if no byte of a response reached it yet, else it loses the
 * connection. */
static void body_failed(wsg_conn_t *c, int status, const char *why) {
    XLOG(c, WSG_LOG_INFO, "request body refused: %s", why);
    wsg__conn_close_side(c, WSG_BACKEND);
    if (!c->hs->resp_started)
        wsg__conn_reject(c, status, why);
    else
        wsg_conn_abort(c, why);
}

/* Forwards what of the request body is in hs->req; what follows the body
 * (the next request) stays there. Returns -1 when the exchange ended. */
static int forward_body(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    const wsg_config_t *cfg = cfg_of(c);
    size_t used;

    if (hs->req_done || hs->req_len == 0)
        return 0;
    int r = wsg_http_body_feed_n(hs->req_head, hs->req, hs->req_len, &used);
    if (r < 0) {
        body_failed(c, 400, "malformed request body");
        return -1;
    }
    /* Counted as sent: a chunked body's framing counts too. */
    hs->req_body += used;
    hs->x_in += used;
    count(c, 0, used);
    if (cfg->limits.max_body_bytes != 0 && hs->req_body > cfg->limits.max_body_bytes) {
        body_failed(c, 413, "request body larger than max_body_bytes");
        return -1;
    }
    if (used > 0 && c->peer[WSG_BACKEND].open &&
        wsg__conn_send(c, WSG_BACKEND, hs->req, used) < 0) {
        /* The backend went away; its EOF ends the exchange. */
        XLOG(c, WSG_LOG_DEBUG, "request body could not be sent to the backend");
    }
    memmove(hs->req, hs->req + used, hs->req_len - used);
    hs->req_len -= used;
    if (r == 1)
        hs->req_done = 1;
    wsg_peer_t *be = &c->peer[WSG_BACKEND], *cl = &c->peer[WSG_CLIENT];
    if (be->queued >= cfg->limits.buffer_bytes || be->nwrites >= WSG_MAX_WRITES) {
        if (cl->reading) {
            wsg__conn_pause_read(c, WSG_CLIENT);
            cl->paused = 1; /* resumed when the backend's queue drains */
        }
    } else if (!cl->reading && !cl->eof && cl->open && !hs->req_done) {
        /* Reading stopped while the buffer was full (the body came before
         * the backend was connected): there is room again. */
        cl->paused = 0;
        if (wsg__conn_resume_read(c, WSG_CLIENT) != 0) {
            wsg_conn_abort(c, "cannot read from the client");
            return -1;
        }
    }
    return 0;
}

bool wsg__http_replayable(const wsg_conn_t *c) { return c->hs->replayable; }

/* The same request again, on a new connection after one died before
 * answering (conn.c's retry): the head was already taken out of the
 * request buffer, so it is the copy. */
static int resend_request(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    int r = wsg__conn_send(c, WSG_BACKEND, hs->replay, hs->replay_len);
    count(c, 0, hs->replay_len);
    hs->deadline = uv_now(&c->w->loop) + cfg_of(c)->timeouts.response_idle_ms;
    return r;
}

int wsg__http_send_request(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    char ip[INET6_ADDRSTRLEN];
    wsg_body_t body;
    size_t head = wsg_http_head_len(hs->req_head);
    size_t need = 2 * head + 512; /* see wsg_http_build_request */
    char stack[4096];

    if (hs->head_sent)
        return resend_request(c);
    char *out = need <= sizeof(stack) ? stack : malloc(need);
    if (out == NULL)
        return UV_ENOMEM;
    wsg_forward_info_t fi = wsg__conn_forward_info(c, ip);
    wsg_http_request_body(hs->req_head, hs->req, &body);
    hs->up_keep = cfg_of(c)->pools[c->pool].keepalive > 0;
    ssize_t n = wsg_http_build_request(hs->req_head, hs->req, &fi, &body, hs->up_keep, out, need);
    if (n > 0)
        n = (ssize_t)wsg__sticky_filter(c, out, (size_t)n);
    int r = n < 0 ? UV_ENOBUFS : wsg__conn_send(c, WSG_BACKEND, out, (size_t)n);
    if (r == 0 && hs->replayable && (hs->replay = malloc((size_t)n)) != NULL) {
        memcpy(hs->replay, out, (size_t)n);
        hs->replay_len = (size_t)n;
    }
    if (out != stack)
        free(out);
    if (r < 0)
        return r;
    count(c, 0, (uint64_t)n);
    hs->head_sent = 1;
    /* The head is forwarded; what follows it moves to the front. The
     * request parser keeps only its body state from here on. */
    memmove(hs->req, hs->req + head, hs->req_len - head);
    hs->req_len -= head;
    if (hs->head_req)
        wsg_http_head_no_body(hs->resp_head);
    hs->deadline = uv_now(&c->w->loop) + cfg_of(c)->timeouts.response_idle_ms;
    forward_body(c);
    return 0;
}

void wsg__http_client_bytes(wsg_conn_t *c, size_t n) {
    wsg_hs_t *hs = c->hs;

    hs->req_len += n;
    if (hs->head_sent && forward_body(c) < 0)
        return;
    /* Bytes the exchange cannot take yet (a body before the backend is
     * connected, the next pipelined request) wait; when they fill the
     * buffer, the rest waits in the socket. */
    if (c->hs != NULL && hs->req_len == hs->req_max && c->peer[WSG_CLIENT].reading)
        wsg__conn_pause_read(c, WSG_CLIENT);
}

/* ---- the response ---------------------------------------------------------------- */

static void exchange_done(wsg_conn_t *c, bool reusable);

/* Sends the response body bytes data[0..n); the message may end inside. */
/* Sends the response body bytes data[0..n); the message may end inside.
 * <ch>, when not NULL, is the read chunk holding them (data == ch->data):
 * it goes to the client's write queue as it is, without a copy. <head>
 * (the response head, <hlen> bytes, in a buffer of <hcap>) goes first, in
 * the same write when the body bytes fit behind it. */
static void response_body(wsg_conn_t *c, const char *data, size_t n, wsg_chunk_t *ch,
                          char *head, size_t hlen, size_t hcap) {
    wsg_hs_t *hs = c->hs;
    size_t used = 0;
    int r = n > 0 || ch == NULL ? wsg_http_body_feed_n(hs->resp_head, data, n, &used) : 0;
    int sent = 0;

    if (r < 0) {
        if (ch != NULL)
            wsg__chunk_put(c, ch);
        wsg_conn_abort(c, "malformed response body from the backend");
        return;
    }
    if (hlen > 0 && ch == NULL && hlen + used <= hcap) {
        memcpy(head + hlen, data, used); /* one write for a small response */
        sent = wsg__conn_send(c, WSG_CLIENT, head, hlen + used);
    } else {
        if (hlen > 0)
            sent = wsg__conn_send(c, WSG_CLIENT, head, hlen);
        if (ch != NULL && sent < 0)
            wsg__chunk_put(c, ch);
        else if (ch != NULL)
            sent = wsg__conn_send_chunk(c, WSG_CLIENT, ch, used);
        else if (sent == 0 && used > 0)
            sent = wsg__conn_send(c, WSG_CLIENT, data, used);
    }
    if (sent < 0) {
        wsg_conn_abort(c, "client gone during the response");
        return;
    }
    hs->x_out += used;
    count(c, 1, used);
    if (r == 1) {
        /* Bytes after the response: the backend's framing and ours
         * disagree, so its connection cannot be trusted with another. */
        if (used < n)
            XLOG(c, WSG_LOG_WARN, "backend sent %zu bytes after its response: not reused",
                 n - used);
        exchange_done(c, used == n);
        return;
    }
    wsg_peer_t *cl = &c->peer[WSG_CLIENT];
    if ((cl->queued >= cfg_of(c)->limits.buffer_bytes || cl->nwrites >= WSG_MAX_WRITES) &&
        c->peer[WSG_BACKEND].reading) {
        wsg__conn_pause_read(c, WSG_BACKEND);
        c->peer[WSG_BACKEND].paused = 1;
    }
}

/* A 1xx other than 101 (100 Continue, 103 Early Hints) goes to the client
 * at once; the final response follows on the same connection. */
static void interim(wsg_conn_t *c, size_t head) {
    wsg_hs_t *hs = c->hs;
    wsg_body_t none = {WSG_BODY_NONE, 0};
    char out[4096];
    ssize_t n = wsg_http_build_response(hs->resp_head, hs->resp, &none, true, 11, out, sizeof(out));

    /* An HTTP/1.0 client cannot take a 1xx (RFC 9110 §15.2). */
    if (n > 0 && wsg_http_head_version(hs->req_head) >= 11)
        wsg__conn_send(c, WSG_CLIENT, out, (size_t)n);
    memmove(hs->resp, hs->resp + head, hs->resp_len - head);
    hs->resp_len -= head;
    wsg_http_head_reset(hs->resp_head, WSG_HTTP_RESPONSE, hs->resp_max);
    if (hs->head_req)
        wsg_http_head_no_body(hs->resp_head);
}

/* A 200 text/event-stream whose framing lets wsgate add bytes: chunked (a
 * chunk of its own) or up to the close (plain bytes); a Content-Length body
 * has no room. Its events are followed, for the heartbeat (SPEC §9) and for
 * a clean end at shutdown. */
static void watch_event_stream(wsg_conn_t *c, const wsg_body_t *body) {
    wsg_hs_t *hs = c->hs;
    uint64_t every = cfg_of(c)->heartbeat.interval_ms;
    size_t n;
    const char *ct = wsg_http_head_get_id(hs->resp_head, hs->resp, WSG_H_CONTENT_TYPE, &n);
    static const char sse[] = "text/event-stream";

    if (ct == NULL || wsg_http_head_status(hs->resp_head) != 200 ||
        (body->kind != WSG_BODY_CHUNKED && body->kind != WSG_BODY_EOF) || n < sizeof(sse) - 1 ||
        strncasecmp(ct, sse, sizeof(sse) - 1) != 0 ||
        (n > sizeof(sse) - 1 && ct[sizeof(sse) - 1] != ';' && ct[sizeof(sse) - 1] != ' '))
        return;
    wsg_http_body_track(hs->resp_head);
    hs->event_stream = 1;
    hs->beat = every > 0;
    hs->beat_at = uv_now(&c->w->loop) + every;
}

void wsg__http_heartbeat(wsg_conn_t *c, uint64_t now) {
    static const char plain[] = ": wsgate\n\n", chunk[] = "a\r\n: wsgate\n\n\r\n";
    wsg_hs_t *hs = c->hs;
    wsg_peer_t *cl = &c->peer[WSG_CLIENT];
    bool chunked = wsg_http_head_chunked(hs->resp_head);

    hs->beat_at = now + cfg_of(c)->heartbeat.interval_ms;
    /* Between two events only, and never onto a client that is not
     * reading what it already has. */
    if (!wsg_http_body_at_event_end(hs->resp_head) || cl->queued > 0)
        return;
    size_t n = chunked ? sizeof(chunk) - 1 : sizeof(plain) - 1;
    if (wsg__conn_send(c, WSG_CLIENT, chunked ? chunk : plain, n) < 0)
        return;
    hs->x_out += n;
    atomic_fetch_add_explicit(&c->w->stats.sse_heartbeats, 1, memory_order_relaxed);
}

static void response_head(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    const char *why;

    for (;;) {
        int r = wsg_http_head_feed(hs->resp_head, hs->resp, hs->resp_len);
        if (r == WSG_HEAD_INCOMPLETE) {
            if (hs->resp_len == hs->resp_max)
                wsg__conn_reject(c, 502, "backend response head too large");
            return;
        }
        if (r != WSG_HEAD_COMPLETE) {
            wsg__conn_reject(c, 502, r == WSG_HEAD_TOO_LARGE ? "backend response head too large"
                                                             : "malformed response from the backend");
            return;
        }
        if (wsg_http_check_message(hs->resp_head, hs->resp, &why) != 0) {
            XLOG(c, WSG_LOG_WARN, "backend response refused: %s", why);
            wsg__conn_reject(c, 502, why);
            return;
        }
        int st = wsg_http_head_status(hs->resp_head);
        if (st == 101) {
            wsg__conn_reject(c, 502, "backend switched protocols on a plain HTTP request");
            return;
        }
        size_t head = wsg_http_head_len(hs->resp_head);
        if (st / 100 != 1)
            break;
        interim(c, head);
    }

    size_t head = wsg_http_head_len(hs->resp_head);
    wsg_body_t body;
    wsg_http_response_body(hs->resp_head, hs->resp, hs->head_req, &body);
    /* The client connection carries another request only if this response
     * can be delimited and the request is all read. */
    if (body.kind == WSG_BODY_EOF || !hs->req_done)
        hs->keep = 0;
    watch_event_stream(c, &body);
    /* Read now: the body overwrites the head's bytes. */
    if (body.kind == WSG_BODY_EOF || !wsg_http_keeps_alive(hs->resp_head, hs->resp) ||
        wsg_http_head_version(hs->resp_head) < 11)
        hs->up_keep = 0;
    c->status = (uint16_t)wsg_http_head_status(hs->resp_head);
    size_t need = 2 * head + 512 + wsg__sticky_room();
    char stack[4096];
    char *out = need <= sizeof(stack) ? stack : malloc(need);
    ssize_t n = out == NULL ? -1
                            : wsg_http_build_response(hs->resp_head, hs->resp, &body, hs->keep,
                                                      wsg_http_head_version(hs->req_head), out,
                                                      need);
    if (n > 0)
        n = wsg__sticky_response(c, out, (size_t)n, need);
    if (n <= 0) {
        if (out != stack)
            free(out);
        wsg_conn_abort(c, "out of memory");
        return;
    }
    hs->resp_started = 1;
    hs->streaming = 1;
    atomic_fetch_add_explicit(&c->w->stats.http_streaming, 1, memory_order_relaxed);
    hs->x_out += (uint64_t)n;
    count(c, 1, (uint64_t)n);
    c->state = WSG_CONN_PASSTHRU;
    if (hs->beat)
        wsg__conn_reschedule(c);
    size_t rest = hs->resp_len - head;
    hs->resp_len = 0;
    response_body(c, hs->resp + head, rest, NULL, out, (size_t)n,
                  out == stack ? sizeof(stack) : need);
    if (out != stack)
        free(out);
}

void wsg__http_backend_bytes(wsg_conn_t *c, size_t n) {
    wsg_hs_t *hs = c->hs;

    /* response_idle_ms: between two reads from the backend; a heartbeat is
     * due only after as long a silence as its interval. */
    hs->deadline = uv_now(&c->w->loop) + cfg_of(c)->timeouts.response_idle_ms;
    if (hs->beat)
        hs->beat_at = uv_now(&c->w->loop) + cfg_of(c)->heartbeat.interval_ms;
    wsg__conn_reschedule(c);
    if (hs->replay != NULL) { /* the connection answers: no resending now */
        free(hs->replay);
        hs->replay = NULL;
    }
    if (c->state == WSG_CONN_UPSTREAM) {
        hs->resp_len += n;
        response_head(c);
        return;
    }
    wsg_peer_t *be = &c->peer[WSG_BACKEND];
    wsg_chunk_t *ch = be->rchunk;
    be->rchunk = NULL;
    if (ch != NULL && !ch->bulk && n == WSG_CHUNK_DATA)
        hs->bulk = 1; /* it streams: bigger reads from now on */
    response_body(c, ch != NULL ? ch->data : hs->resp, n, ch, NULL, 0, 0);
}

void wsg__http_backend_eof(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;
    size_t used;

    if (c->state == WSG_CONN_PASSTHRU) {
        if (wsg_http_body_feed_n(hs->resp_head, NULL, 0, &used) == 1) {
            hs->keep = 0; /* the body ran to the backend's close */
            exchange_done(c, false);
        } else {
            wsg_conn_abort(c, "backend closed in the middle of the response");
        }
        return;
    }
    if (wsg__conn_retry(c) == 0)
        return;
    wsg__conn_reject(c, 502, "backend closed before answering");
}

void wsg__http_client_eof(wsg_conn_t *c) {
    /* A client may half-close once its request is sent: the answer still
     * goes out, and the connection ends with it. */
    if (c->hs->req_done && c->hs->head_sent) {
        c->hs->keep = 0;
        return;
    }
    wsg_conn_abort(c, "client gone during the request");
}

/* ---- between exchanges ----------------------------------------------------------- */

/* The response is complete (and, with <reusable>, nothing came after it).
 * The backend connection goes back to the pool or is closed; the client
 * connection either waits for its next request or ends. */
static void exchange_done(wsg_conn_t *c, bool reusable) {
    wsg_hs_t *hs = c->hs;
    const wsg_config_t *cfg = cfg_of(c);
    wsg_peer_t *cl = &c->peer[WSG_CLIENT];

    wsg__conn_log_access(c);
    if (hs->streaming) {
        hs->streaming = 0;
        atomic_fetch_sub_explicit(&c->w->stats.http_streaming, 1, memory_order_relaxed);
    }
    wsg__conn_release_backend(c, reusable && hs->up_keep && hs->req_done);
    if (!hs->keep || !hs->req_done || cl->eof || !cl->open) {
        wsg__conn_finish(c);
        return;
    }
    wsg__head_free(c, hs->resp_head);
    hs->resp_head = NULL;
    wsg_http_head_reset(hs->req_head, WSG_HTTP_REQUEST, cfg->limits.max_header_bytes);
    hs->resp_len = 0;
    hs->ncand = hs->tried = 0;
    hs->req_body = 0;
    hs->http = hs->head_sent = hs->req_done = hs->resp_started = 0;
    hs->keep = hs->head_req = hs->json = hs->sse = 0;
    hs->reused = hs->fresh_only = hs->up_keep = hs->replayable = hs->beat = 0;
    hs->event_stream = hs->bulk = 0;
    free(hs->replay);
    hs->replay = NULL;
    hs->kept_alive = 1;
    hs->line[0] = '\0';
    c->route = c->pool = c->backend = -1;
    c->status = 0;
    c->end_reason = NULL;
    c->state = WSG_CONN_HS_READ;
    hs->deadline = uv_now(&c->w->loop) + cfg->timeouts.keepalive_ms;
    wsg__conn_reschedule(c);
    cl->paused = 0;
    if (!cl->reading && wsg__conn_resume_read(c, WSG_CLIENT) != 0) {
        wsg_conn_abort(c, "cannot read from the client");
        return;
    }
    if (hs->req_len > 0) {
        c->logged = 0;
        wsg__conn_request_bytes(c, 0); /* a pipelined request is already here */
    }
}

void wsg__http_going_away(wsg_conn_t *c) {
    wsg_hs_t *hs = c->hs;

    hs->keep = 0;
    c->close_deadline = uv_now(&c->w->loop) + cfg_of(c)->timeouts.drain_ms;
    if (hs->event_stream) {
        /* An event stream never ends by itself: end it now, with the last
         * chunk when it is between two events and chunked, and the
         * EventSource reconnects, to another instance. */
        c->end_reason = "wsgate is shutting down";
        if (wsg_http_body_at_event_end(hs->resp_head) && wsg_http_head_chunked(hs->resp_head))
            wsg__conn_send(c, WSG_CLIENT, "0\r\n\r\n", 5);
        wsg__conn_close_side(c, WSG_BACKEND);
        wsg__conn_finish(c);
        return;
    }
    wsg__conn_reschedule(c);
}

size_t wsg__http_error(const wsg_conn_t *c, int status, const char *why, char *out, size_t cap) {
    const wsg_hs_t *hs = c->hs;
    unsigned retry = hs->sse && status >= 500 ? 1 : 0;
    return wsg_http_error(status, why, hs->json, retry, false, out, cap);
}
