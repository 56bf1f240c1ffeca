/*
 * The relay: once the backend said 101, frames flow both ways through here.
 *
 * One routine serves both directions, parameterised by the sending side. A
 * read lands in a chunk from the worker's pool; the frame headers in it are
 * parsed in place (ws_frame.c) only to learn where frames start and end, and
 * the bytes go out unchanged in ONE write, normally straight from the read
 * chunk with uv_try_write, so a relayed message costs one recv, one send and
 * no copy. What the receiver cannot take stays in the chunk, queued; at
 * buffer_bytes queued the sender is no longer read (backpressure). A chunk
 * goes back to the pool as soon as its bytes are written, so a quiet
 * connection holds no buffer.
 *
 * The relay changes the stream in three ways only, each at a frame
 * boundary: it drops the pongs answering its own heartbeat pings, it inserts
 * its own pings and close frames, and it stops forwarding on a protocol
 * error. To keep to frame boundaries, an unfinished header or control frame
 * at the end of a read is held back (at most 14 + 125 bytes) and completed by
 * the next read; data frame payloads stream through as they arrive and are
 * never gathered.
 *
 * Deadlines (idle, heartbeat, close) are timestamps compared lazily when the
 * connection's single deadline-heap node fires; relaying a frame never
 * touches a timer.
 */
#include "conn_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HB_PAYLOAD_LEN 18 /* "wsgate-hb-" + 8 hex digits */

static const wsg_config_t *cfg_of(const wsg_conn_t *c) { return c->rt->cfg; }

#define RLOG(c, level, ...)                                                            \
    do {                                                                               \
        if ((level) >= wsg_log_threshold()) {                                          \
            wsg_log_ctx_t ctx_;                                                        \
            wsg__conn_log_ctx((c), &ctx_);                                             \
            wsg_log_write((level), "relay", &ctx_, __VA_ARGS__);                       \
        }                                                                              \
    } while (0)

/* Worker counters have one writer (the worker's thread): a relaxed load and
 * store is enough for readers on other threads to see whole values, and
 * avoids a locked read-modify-write per read on the hot path. */
#define STAT_ADD(field, n)                                                             \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n), \
                          memory_order_relaxed)

static const char *side_name(int side) { return side == WSG_CLIENT ? "client" : "backend"; }

/* The reason text of a close frame wsgate sends: why the connection ends
 * when that is known ("idle timeout", "unmasked client frame"), else what
 * the code means. */
static const char *close_text(const wsg_conn_t *c, uint16_t code) {
    if (code == WSG_WS_CLOSE_SERVICE_RESTART)
        return "service restart";
    if (c->end_reason != NULL)
        return c->end_reason;
    return code == WSG_WS_CLOSE_INTERNAL_ERROR ? "backend connection lost" : "going away";
}

static void hb_payload(uint32_t seq, char out[HB_PAYLOAD_LEN + 1]) {
    snprintf(out, HB_PAYLOAD_LEN + 1, "wsgate-hb-%08x", (unsigned)seq);
}

/* The RSV bits the extensions in the backend's 101 define; both directions
 * use the same extensions (RFC 6455 §9.1). */
static void negotiated_rsv(const wsg_conn_t *c, uint8_t *first, uint8_t *other) {
    const wsg_http_head_t *h = c->hs != NULL ? c->hs->resp_head : NULL;
    *first = *other = 0;
    if (h == NULL)
        return;
    for (size_t i = 0, n = wsg_http_head_count(h); i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        wsg_http_head_at(h, c->hs->resp, i, &name, &nl, &value, &vl);
        if (nl == 24 && strncasecmp(name, "Sec-WebSocket-Extensions", 24) == 0)
            wsg_ws_rsv_add_extensions(value, vl, first, other);
    }
}

void wsg__relay_start(wsg_conn_t *c) {
    const wsg_config_t *cfg = cfg_of(c);
    uint64_t now = uv_now(&c->w->loop);
    uint8_t rsv_first, rsv_other;

    negotiated_rsv(c, &rsv_first, &rsv_other);
    c->state = WSG_CONN_RELAY;
    c->last_data = now;
    if (cfg->timeouts.max_lifetime_ms) {
        /* The jitter spreads the reconnects of clients that came together
         * (after a deploy, say) instead of closing them together again. */
        uint64_t max = cfg->timeouts.max_lifetime_ms;
        c->lifetime_at = now + max + wsg_worker_random(c->w) % (max / 10 + 1);
    }
    if (wsg__edge_relay_start(c) != 0) {
        wsg_conn_abort(c, "out of memory");
        return;
    }
    for (int s = 0; s < 2; s++) {
        wsg_peer_t *p = &c->peer[s];
        wsg_ws_stream_init(&p->ws, s == WSG_CLIENT, cfg->limits.max_frame_bytes, rsv_first,
                           rsv_other);
        p->last_rx = now;
    }
    wsg__conn_resume_read(c, WSG_CLIENT);
    wsg__conn_resume_read(c, WSG_BACKEND);
    wsg__conn_reschedule(c);
}

/* ---- frames wsgate writes itself ------------------------------------------ */

/* Frames to the backend are masked (wsgate is its client, RFC 6455 §5.3);
 * the mask only has to be unpredictable to scripts, which never see it. */
static const uint8_t *mask_for(wsg_conn_t *c, int to, uint8_t mask[4]) {
    if (to == WSG_CLIENT)
        return NULL;
    uint64_t r = wsg_worker_random(c->w);
    memcpy(mask, &r, 4);
    return mask;
}

/* Writes what wsgate owes <to> (a close, else a ping) if the stream to it is
 * at a frame boundary. */
static void try_inject(wsg_conn_t *c, int to) {
    wsg_peer_t *q = &c->peer[to];
    wsg_peer_t *src = &c->peer[WSG_OTHER(to)];
    uint8_t frame[WSG_WS_MAX_HEADER + WSG_WS_MAX_CONTROL_PAYLOAD], mask[4];
    size_t n;

    if (!q->open || q->shut || q->want_shut || q->eof) {
        q->close_owed = 0;
        q->ping_wanted = 0;
        return;
    }
    if (src->mid_frame)
        return; /* retried when the frame being forwarded ends */
    if (q->close_owed) {
        n = wsg_ws_build_close(frame, sizeof(frame), q->close_owed,
                               close_text(c, q->close_owed), mask_for(c, to, mask));
        RLOG(c, WSG_LOG_DEBUG, "sending close %u to the %s", q->close_owed, side_name(to));
        q->close_owed = 0;
        q->close_sent = 1;
        q->ping_wanted = 0;
        wsg__conn_send(c, to, frame, n);
        return;
    }
    if (q->ping_wanted && !q->close_sent) {
        char payload[HB_PAYLOAD_LEN + 1];
        q->ping_wanted = 0;
        q->ping_seq++;
        hb_payload(q->ping_seq, payload);
        n = wsg_ws_build(frame, sizeof(frame), WSG_WS_OP_PING, payload, HB_PAYLOAD_LEN,
                         mask_for(c, to, mask));
        q->ping_out = 1;
        q->last_rx = uv_now(&c->w->loop); /* the ping's time while it is out */
        wsg__conn_send(c, to, frame, n);
        wsg__conn_reschedule(c);
    }
}

void wsg__relay_close(wsg_conn_t *c, uint16_t client_code, uint16_t backend_code) {
    if (c->state != WSG_CONN_RELAY)
        return;
    if (c->close_code == 0)
        c->close_code = client_code ? client_code : backend_code;
    if (c->closed_by == WSG_BY_NONE)
        c->closed_by = WSG_BY_WSGATE;
    wsg_peer_t *cl = &c->peer[WSG_CLIENT], *be = &c->peer[WSG_BACKEND];
    wsg__edge_release(c);
    if (client_code && !cl->close_sent)
        cl->close_owed = client_code;
    if (backend_code && !be->close_sent)
        be->close_owed = backend_code;
    /* CLOSING first: try_inject and the read path then stop forwarding new
     * frames, and finish() waits for the owed frames before shutting down. */
    wsg__conn_finish(c);
    try_inject(c, WSG_CLIENT);
    try_inject(c, WSG_BACKEND);
    wsg__conn_finish(c);
}

/* ---- control frames ------------------------------------------------------- */

/* A whole control frame arrived from <from> (the walker judged it, close
 * payloads included). Returns 1 to forward it, 0 to drop it. */
static int on_control(wsg_conn_t *c, int from, const wsg_ws_seg_t *seg) {
    wsg_peer_t *p = &c->peer[from];
    wsg_peer_t *q = &c->peer[WSG_OTHER(from)];

    switch (seg->opcode) {
    case WSG_WS_OP_PONG: {
        char expect[HB_PAYLOAD_LEN + 1];
        hb_payload(p->ping_seq, expect);
        /* Our own heartbeat answered: consumed, never forwarded (SPEC §4). */
        return !(p->ping_seq != 0 && seg->plen == HB_PAYLOAD_LEN &&
                 memcmp(seg->payload, expect, HB_PAYLOAD_LEN) == 0);
    }
    case WSG_WS_OP_CLOSE: {
        uint16_t code = wsg_ws_close_code(seg->payload, seg->plen);
        p->close_rx = 1;
        if (c->close_code == 0) {
            c->close_code = code;
            c->closed_by = from == WSG_CLIENT ? WSG_BY_CLIENT : WSG_BY_BACKEND;
        }
        RLOG(c, WSG_LOG_DEBUG, "close %u from the %s", code, side_name(from));
        if (c->state == WSG_CONN_CLOSING || q->close_sent)
            return 0; /* the answer to a close wsgate sent: it ends here */
        q->close_sent = 1;
        return 1;
    }
    default:
        return 1;
    }
}

/* ---- the pump --------------------------------------------------------------- */

/* Forwards the data segment <seg> if it belongs to a frame that is being
 * forwarded. A data frame is forwarded whole or not at all: one that begins
 * after wsgate started closing is dropped, and one already under way is
 * finished so the receiver's stream stays frame-aligned. */
static int forward_data(wsg_conn_t *c, wsg_peer_t *p, const wsg_ws_seg_t *seg) {
    int fwd = seg->frame_begin ? c->state == WSG_CONN_RELAY : p->mid_frame;
    unsigned mid = fwd && !seg->frame_end;
    if (p->mid_frame != mid) /* a bit: most frames leave it as it is */
        p->mid_frame = mid;
    return fwd;
}

/* Walks and forwards ch->data[0..n) received from <from>; bytes
 * [0..p->ws.held) are the unfinished unit of the previous read. Takes <ch>. */
static void process(wsg_conn_t *c, int from, wsg_chunk_t *ch, size_t n) {
    wsg_peer_t *p = &c->peer[from];
    int to = WSG_OTHER(from);
    uint8_t *data = (uint8_t *)ch->data;
    size_t out = 0, keep = n;
    int err = 0, saw_data = 0, limited = 0;
    uint64_t frames = 0, fresh = n - p->ws.held;
    wsg_ws_seg_t seg;

    p->rchunk = NULL;
    if (wsg_ws_stream_error(&p->ws)) {
        /* This side broke the protocol and was sent a close: what it sends
         * now is read only to see its FIN, and dropped. */
        wsg__chunk_put(c, ch);
        return;
    }
    wsg_ws_stream_begin(&p->ws);
    /* Runs of whole small messages are walked as one segment, except where
     * messages_per_s must judge each message. */
    int runs = from != WSG_CLIENT || c->rt->message_rate.per_s == 0;

    for (;;) {
        size_t run = runs ? wsg_ws_stream_run(&p->ws, data, n, &seg) : 0;
        int r = run > 0 ? 1 : wsg_ws_stream_next(&p->ws, data, n, &seg);
        if (r <= 0) {
            if (r == 0)
                keep = seg.start;
            err = r;
            break;
        }
        int fwd = 0;
        frames += run > 0 ? run : seg.frame_begin;
        if (seg.kind == WSG_WS_SEG_DATA) {
            saw_data = 1;
            /* messages_per_s counts messages: the first frame of one. Past
             * it, no data frame is forwarded any more. */
            if (run == 0 && from == WSG_CLIENT && seg.frame_begin && seg.opcode != WSG_WS_OP_CONT &&
                c->state == WSG_CONN_RELAY && !limited && wsg__edge_message(c) != 0)
                limited = 1;
            fwd = !limited && forward_data(c, p, &seg);
        } else if (seg.kind == WSG_WS_SEG_CONTROL) {
            fwd = on_control(c, from, &seg) && c->state == WSG_CONN_RELAY;
        }
        /* Forwarding compacts in place, so dropped frames leave no gap. */
        if (fwd) {
            if (out != seg.start)
                memmove(data + out, data + seg.start, seg.end - seg.start);
            out += seg.end - seg.start;
        }
        if (wsg_ws_stream_done(&p->ws, n))
            break; /* keep stays n: nothing is left over */
    }
    size_t tail = n - keep;

    wsg_worker_stats_t *st = &c->w->stats;
    p->frames += frames;
    STAT_ADD(st->frames[from], frames);
    STAT_ADD(st->bytes[from], fresh);
    wsg_backend_count(wsg__conn_backend(c), c->w->id, from == WSG_CLIENT ? 0 : 1, frames, fresh);
    if (saw_data)
        c->last_data = uv_now(&c->w->loop);

    /* Keep the unfinished unit for the next read. When the chunk itself is
     * about to be written out, the unit (at most 139 bytes) moves to a new
     * chunk; otherwise it slides to the front of this one. */
    int oom = 0;
    if (tail > 0 && out > 0) {
        wsg_chunk_t *nc = wsg__chunk_get(c);
        if (nc == NULL) {
            oom = 1;
        } else {
            memcpy(nc->data, data + keep, tail);
            p->rchunk = nc;
        }
    } else if (tail > 0) {
        if (keep > 0)
            memmove(data, data + keep, tail);
        p->rchunk = ch;
        ch = NULL;
    }
    if (ch != NULL) {
        if (out > 0)
            wsg__conn_send_chunk(c, to, ch, out);
        else
            wsg__chunk_put(c, ch);
    }

    if (oom) {
        wsg_conn_abort(c, "out of memory for a partial frame header");
        return;
    }
    if (limited && c->state == WSG_CONN_RELAY) {
        /* After what went out before the refused message: the close frames
         * follow the data the backend already has. */
        wsg__edge_message_limited(c);
        return;
    }
    if (err < 0) {
        uint16_t code = wsg_ws_error_close_code(err);
        atomic_fetch_add_explicit(&st->protocol_errors, 1, memory_order_relaxed);
        RLOG(c, WSG_LOG_INFO, "protocol error from the %s: %s: closing with %u", side_name(from),
             wsg_ws_strerror(err), code);
        c->end_reason = wsg_ws_strerror(err);
        c->closed_by = WSG_BY_WSGATE;
        c->close_code = code;
        wsg__conn_pause_read(c, from);
        wsg__relay_close(c, code, code);
        return;
    }

    wsg_peer_t *q = &c->peer[to];
    if (c->state == WSG_CONN_RELAY) {
        if (p->close_rx && q->close_rx) {
            wsg__conn_finish(c); /* both directions carried a close frame */
            return;
        }
        if (p->close_rx && c->close_deadline == 0) {
            c->close_deadline = uv_now(&c->w->loop) + cfg_of(c)->timeouts.drain_ms;
            wsg__conn_reschedule(c);
        }
        if ((q->queued >= cfg_of(c)->limits.buffer_bytes || q->nwrites >= WSG_MAX_WRITES) &&
            p->reading) {
            wsg__conn_pause_read(c, from);
            p->paused = 1;
        }
    }
    if (!p->mid_frame && (q->close_owed || q->ping_wanted))
        try_inject(c, to);
    /* While closing, every read may have completed a close handshake (the
     * peer's answer to our close) or released an owed close frame. */
    if (c->state == WSG_CONN_CLOSING)
        wsg__conn_finish(c);
}

/* A chunk for the next read of <p>, with the bytes it parked in front. */
static wsg_chunk_t *read_chunk(wsg_conn_t *c, wsg_peer_t *p) {
    if (!p->parked && p->rchunk != NULL)
        return p->rchunk;
    wsg_chunk_t *ch = p->bulk ? wsg__chunk_get_bulk(c) : NULL; /* none left: a small one will do */
    if (ch == NULL && (ch = wsg__chunk_get(c)) == NULL)
        return NULL; /* what is parked stays parked */
    if (p->parked) {
        memcpy(ch->data, p->park, p->ws.held);
        free(p->park);
        p->parked = 0;
    }
    p->rchunk = ch;
    return ch;
}

/* The peer has nothing more to read for now but holds part of a header or
 * control frame (at most 139 bytes): keep those in a buffer of their size
 * and give the 16 KiB chunk back, so that a peer that stops there (a
 * hostile client, a stalled one) costs what an idle one costs. */
static void park(wsg_conn_t *c, wsg_peer_t *p) {
    uint8_t *b = malloc(p->ws.held);
    if (b == NULL)
        return; /* keep the chunk: correct, only dearer */
    memcpy(b, p->rchunk->data, p->ws.held);
    wsg__chunk_put(c, p->rchunk);
    p->park = b;
    p->parked = 1;
}

void wsg__relay_alloc(wsg_conn_t *c, int from, uv_buf_t *buf) {
    wsg_peer_t *p = &c->peer[from];
    wsg_peer_t *q = &c->peer[WSG_OTHER(from)];

    if (read_chunk(c, p) == NULL) {
        *buf = uv_buf_init(NULL, 0); /* the read callback sees UV_ENOBUFS */
        return;
    }
    size_t room = wsg__chunk_cap(p->rchunk) - p->ws.held;
    uint64_t limit = cfg_of(c)->limits.buffer_bytes;
    /* Never read more than the receiver may still queue: buffer_bytes is a
     * bound, not a threshold. */
    if (c->state == WSG_CONN_RELAY && q->queued < limit && limit - q->queued < room)
        room = (size_t)(limit - q->queued);
    p->room = (uint16_t)room;
    *buf = uv_buf_init(p->rchunk->data + p->ws.held, (unsigned)room);
}

static void on_peer_eof(wsg_conn_t *c, int from, ssize_t err) {
    wsg_peer_t *p = &c->peer[from];

    if (p->mid_frame) {
        /* Part of a data frame went out and the rest never will: no close
         * frame can be sent inside a frame, so the other side's connection
         * ends now rather than after drain_ms with a truncated frame. */
        RLOG(c, WSG_LOG_INFO, "%s connection ended inside a frame (%s): ending the %s's too",
             side_name(from), err == UV_EOF ? "EOF" : uv_strerror((int)err),
             side_name(WSG_OTHER(from)));
        if (c->closed_by == WSG_BY_NONE)
            c->closed_by = from == WSG_CLIENT ? WSG_BY_CLIENT : WSG_BY_BACKEND;
        p->eof = 1;
        p->reading = 0;
        wsg_conn_abort(c, from == WSG_CLIENT ? "client lost mid-frame" : "backend lost mid-frame");
        return;
    }
    if (c->state == WSG_CONN_RELAY && !p->close_rx) {
        /* The TCP connection ended without a close frame (SPEC §4): the
         * client learns with 1011, the backend with 1001. */
        RLOG(c, WSG_LOG_INFO, "%s connection ended without a close frame (%s)", side_name(from),
             err == UV_EOF ? "EOF" : uv_strerror((int)err));
        if (c->closed_by == WSG_BY_NONE)
            c->closed_by = from == WSG_CLIENT ? WSG_BY_CLIENT : WSG_BY_BACKEND;
        c->end_reason = from == WSG_CLIENT ? "client connection lost" : "backend connection lost";
        p->eof = 1;
        p->reading = 0;
        if (from == WSG_BACKEND)
            wsg__relay_close(c, WSG_WS_CLOSE_INTERNAL_ERROR, 0);
        else
            wsg__relay_close(c, 0, WSG_WS_CLOSE_GOING_AWAY);
        wsg__conn_side_eof(c, from);
        return;
    }
    wsg__conn_side_eof(c, from);
}

void wsg__relay_on_read(wsg_conn_t *c, int from, ssize_t nread) {
    wsg_peer_t *p = &c->peer[from];

    if (nread <= 0) {
        /* Nothing read (EAGAIN) or the end: the chunk goes back unless it
         * holds part of a frame. */
        if (!p->parked && p->rchunk != NULL && (p->ws.held == 0 || nread < 0)) {
            wsg__chunk_put(c, p->rchunk);
            p->rchunk = NULL;
            p->ws.held = 0;
        }
        if (nread < 0)
            on_peer_eof(c, from, nread);
        return;
    }
    p->last_rx = uv_now(&c->w->loop);
    p->ping_out = 0; /* any byte proves the peer alive */
    p->bytes += (uint64_t)nread;
    if (!p->open || p->eof) {
        wsg__chunk_put(c, p->rchunk);
        p->rchunk = NULL;
        return;
    }
    uint32_t room = p->room;
    size_t whole = wsg__chunk_cap(p->rchunk) - p->ws.held;
    /* Adaptive bulk reads: a read that filled a whole chunk (not one cut
     * short by buffer_bytes) says the peer streams, so its next reads take
     * 64 KiB, a quarter of the recv and send calls; one that would have
     * fitted a small chunk goes back to small ones. Idle peers hold none. */
    if ((size_t)nread == room && room == whole)
        p->bulk = 1;
    else if ((size_t)nread < WSG_CHUNK_DATA)
        p->bulk = 0;
    process(c, from, p->rchunk, p->ws.held + (size_t)nread);
    if (from == WSG_CLIENT)
        wsg__edge_client_read(c, (size_t)nread);
    /* A read that did not fill its buffer drained the socket: if it ended
     * inside a unit, the peer may now stay silent for long. */
    if ((size_t)nread < room && p->rchunk != NULL && p->ws.held > 0 && p->open)
        park(c, p);
}

void wsg__relay_feed(wsg_conn_t *c, int from, const char *data, size_t len) {
    wsg_peer_t *p = &c->peer[from];

    while (len > 0 && c->state == WSG_CONN_RELAY) {
        if (read_chunk(c, p) == NULL) {
            wsg_conn_abort(c, "out of memory");
            return;
        }
        size_t room = wsg__chunk_cap(p->rchunk) - p->ws.held;
        size_t k = len < room ? len : room;
        memcpy(p->rchunk->data + p->ws.held, data, k);
        p->bytes += k;
        process(c, from, p->rchunk, p->ws.held + k);
        data += k;
        len -= k;
    }
}

void wsg__relay_on_drained(wsg_conn_t *c, int to) {
    wsg_peer_t *q = &c->peer[to];
    wsg_peer_t *src = &c->peer[WSG_OTHER(to)];

    if (src->paused && q->queued <= cfg_of(c)->limits.buffer_bytes / 2 &&
        q->nwrites <= WSG_MAX_WRITES / 2 && !wsg__edge_holds(c, WSG_OTHER(to)))
        wsg__conn_resume_read(c, WSG_OTHER(to));
}

/* ---- deadlines --------------------------------------------------------------- */

uint64_t wsg__relay_next_deadline(const wsg_conn_t *c) {
    const wsg_config_t *cfg = cfg_of(c);
    uint64_t d = UINT64_MAX;

    if (c->close_deadline)
        d = c->close_deadline;
    if (c->drain_at && c->drain_at < d)
        d = c->drain_at;
    if (c->lifetime_at && c->lifetime_at < d)
        d = c->lifetime_at;
    d = wsg__edge_deadline(c, d);
    if (cfg->timeouts.idle_ms && c->last_data + cfg->timeouts.idle_ms < d)
        d = c->last_data + cfg->timeouts.idle_ms;
    if (cfg->heartbeat.interval_ms) {
        for (int s = 0; s < 2; s++) {
            const wsg_peer_t *p = &c->peer[s];
            uint64_t t;
            if (p->ping_out)
                t = p->last_rx + cfg->heartbeat.timeout_ms;
            else if (!p->ping_wanted)
                t = p->last_rx + cfg->heartbeat.interval_ms;
            else
                continue;
            if (t < d)
                d = t;
        }
    }
    return d;
}

void wsg__relay_on_deadline(wsg_conn_t *c, uint64_t now) {
    const wsg_config_t *cfg = cfg_of(c);
    wsg_worker_stats_t *st = &c->w->stats;

    if (c->close_deadline && now >= c->close_deadline) {
        wsg_conn_abort(c, "close handshake not complete within drain_ms");
        return;
    }
    if (wsg__edge_on_deadline(c, now))
        return;
    if (c->drain_at && now >= c->drain_at) {
        /* The backend is being drained: 1012 tells the client to reconnect,
         * which lands it on another backend (SPEC §6). */
        c->end_reason = c->rebalanced ? "rebalanced" : "backend drained";
        RLOG(c, WSG_LOG_INFO, "%s: sending 1012 to the client",
             c->rebalanced ? "its key maps to a new backend" : "backend draining");
        wsg__relay_close(c, WSG_WS_CLOSE_SERVICE_RESTART, WSG_WS_CLOSE_GOING_AWAY);
        return;
    }
    if (c->lifetime_at && now >= c->lifetime_at) {
        c->end_reason = "max lifetime";
        RLOG(c, WSG_LOG_INFO, "older than max_lifetime_ms: closing");
        wsg__relay_close(c, WSG_WS_CLOSE_GOING_AWAY, WSG_WS_CLOSE_GOING_AWAY);
        return;
    }
    if (cfg->timeouts.idle_ms && now >= c->last_data + cfg->timeouts.idle_ms) {
        atomic_fetch_add_explicit(&st->idle_timeouts, 1, memory_order_relaxed);
        c->end_reason = "idle timeout";
        RLOG(c, WSG_LOG_INFO, "no data frame for %llu ms: closing",
             (unsigned long long)cfg->timeouts.idle_ms);
        wsg__relay_close(c, WSG_WS_CLOSE_GOING_AWAY, WSG_WS_CLOSE_GOING_AWAY);
        return;
    }
    if (cfg->heartbeat.interval_ms) {
        for (int s = 0; s < 2; s++) {
            wsg_peer_t *p = &c->peer[s];
            if (p->ping_out && now >= p->last_rx + cfg->heartbeat.timeout_ms) {
                /* Dead: nothing came back after our ping. The other side
                 * hears 1001; the dead side is simply closed. */
                atomic_fetch_add_explicit(&st->heartbeat_timeouts, 1, memory_order_relaxed);
                c->end_reason = s == WSG_CLIENT ? "client heartbeat timeout"
                                                : "backend heartbeat timeout";
                RLOG(c, WSG_LOG_INFO, "%s sent nothing within %llu ms of a ping: closing",
                     side_name(s), (unsigned long long)cfg->heartbeat.timeout_ms);
                p->eof = 1;
                if (s == WSG_CLIENT)
                    wsg__relay_close(c, 0, WSG_WS_CLOSE_GOING_AWAY);
                else
                    wsg__relay_close(c, WSG_WS_CLOSE_GOING_AWAY, 0);
                wsg__conn_close_side(c, s);
                return;
            }
            if (!p->ping_out && !p->ping_wanted &&
                now >= p->last_rx + cfg->heartbeat.interval_ms) {
                p->ping_wanted = 1;
                try_inject(c, s);
            }
        }
    }
    wsg__conn_reschedule(c);
}
