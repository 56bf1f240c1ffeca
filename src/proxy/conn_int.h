/*
 * Private layout of a connection, shared by conn.c (accept, handshake,
 * teardown) and relay.c (the frame pump). Nothing outside those two files
 * includes this header.
 */
#ifndef WSGATE_CONN_INT_H
#define WSGATE_CONN_INT_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <wsgate/balancer.h>
#include <wsgate/conn.h>
#include <wsgate/handshake.h>
#include <wsgate/log.h>
#include <wsgate/transport.h>
#include <wsgate/worker.h>
#include <wsgate/ws_frame.h>
#include <wsgate/ws_stream.h>

#include "upstream.h"
#include "edge.h"

enum { WSG_CLIENT = 0, WSG_BACKEND = 1 };
#define WSG_OTHER(side) (1 - (side))

/*
 * Connection states and what moves between them:
 *
 *   accept --(proxy_protocol)--> PROXY --(header parsed)--+
 *     |                             | malformed / timeout  |
 *     v                             v (closed)             |
 *   HS_READ <----------------------------------------------+
 *     |        head complete, route + backend found
 *   HS_READ ------------------------------------------> CONNECTING <---+
 *     |  bad request / timeout (4xx)                        |   |      | connect failed or
 *     |                                                     |   +------+ timed out, retries left
 *     |                             connected, request sent v
 *     |                                                 UPSTREAM
 *     |                       101 + right accept  /        |         \  other status
 *     |                                         v          |          v
 *     |                                      RELAY         |       PASSTHRU (response and
 *     |   close frame / EOF / error / timeout  |           |         body relayed as sent)
 *     |                                        v           v          |
 *     +------------------------------------> CLOSING <----------------+
 *                                              | every handle closed
 *                                              v
 *                                            (freed)
 *
 * PROXY..UPSTREAM and PASSTHRU own a wsg_hs_t; RELAY and CLOSING do not.
 */
typedef enum {
    WSG_CONN_PROXY = 0,
    WSG_CONN_HS_READ,
    WSG_CONN_CONNECTING,
    WSG_CONN_UPSTREAM,
    WSG_CONN_PASSTHRU,
    WSG_CONN_RELAY,
    WSG_CONN_CLOSING,
} wsg_conn_state_t;

/* A buffer-pool chunk: header, then data up to WSG_CHUNK_SIZE in total.
 * While queued for writing it is owned by its write request. */
typedef struct wsg_chunk_s {
    uv_write_t req;
    uv_buf_t buf;            /* what is being written */
    struct wsg_conn_s *conn;
    uint8_t to;              /* side it is written to */
    uint8_t bulk;            /* from the worker's bulk pool (WSG_BULK_SIZE) */
    _Alignas(max_align_t) char data[];
} wsg_chunk_t;

#define WSG_CHUNK_DATA (WSG_CHUNK_SIZE - offsetof(wsg_chunk_t, data))
#define WSG_BULK_DATA (WSG_BULK_SIZE - offsetof(wsg_chunk_t, data))
_Static_assert(WSG_BULK_DATA <= UINT16_MAX, "wsg_peer_t.room holds a read's size");

/* Queued writes per direction at most, besides buffer_bytes: each holds a
 * whole chunk, so a sender trickling tiny pieces to a stalled receiver
 * could otherwise pin 16 KiB per byte. Bounds a direction's memory to
 * WSG_MAX_WRITES chunks. */
#define WSG_MAX_WRITES 16
/* How long a finished close waits for the backend's FIN once the client is
 * gone (the backend closes first, so TIME_WAIT stays on its side). */
#define WSG_BACKEND_FIN_WAIT_MS 1000

/* One side of a connection: its transport, what it sends us (parsed as a
 * frame stream) and what we owe it. */
typedef struct wsg_peer_s {
    /* The client's transport is embedded in the connection; the backend's is
     * an upstream (upstream.h), which may come from and go back to the
     * worker's pool. Valid while <open>, and for the backend until its
     * handle's close callback. */
    wsg_side_t *io;

    /* --- the stream this peer sends --- */
    wsg_ws_stream_t ws;      /* the frame walk of what it sends */
    /* Owned, while ws.held > 0 one or the other (<parked> says which):
     * the read chunk kept across reads, whose first ws.held bytes are an
     * unfinished header or control frame, not forwarded yet; or, once the
     * peer went quiet there (a hostile client, a stalled one), those bytes
     * alone in a buffer of their size. Between reads of a busy peer the
     * chunk may also be kept with ws.held == 0. */
    union {
        wsg_chunk_t *rchunk; /* !parked (NULL: none) */
        uint8_t *park;       /* parked */
    };
    /* Loop time of the last byte received from this peer, or, while a
     * wsgate ping is out (ping_out), the time that ping was sent: any byte
     * clears ping_out and sets it again, so one field serves both. */
    uint64_t last_rx;
    uint64_t bytes;          /* received from this peer */
    uint64_t frames;
    uint32_t queued;         /* bytes handed to write and not completed (to this peer) */
    uint32_t ping_seq;       /* payload of the last ping sent to this peer */
    uint16_t room;           /* bytes the last read was offered (at most WSG_BULK_DATA) */
    uint16_t close_owed;     /* close code wsgate must still send it (0: none) */
    uint16_t nwrites;        /* write requests queued to this peer */

    unsigned mid_frame : 1;  /* a forwarded data frame's payload is still streaming,
                                so nothing may be injected into the other peer's stream */
    unsigned close_rx : 1;   /* this peer sent a close frame */
    unsigned eof : 1;        /* this peer's stream ended (EOF or error) */
    unsigned reading : 1;    /* read_start is in effect */
    unsigned paused : 1;     /* reading stopped because the other side is full */
    unsigned ping_out : 1;   /* a wsgate ping went out and no byte came back since */
    unsigned ping_wanted : 1;/* a ping is due but the stream to this peer is mid-frame */
    unsigned close_sent : 1; /* wsgate (or the other peer) sent it a close frame */
    unsigned open : 1;       /* the handle is initialised and not closing */
    unsigned shut : 1;       /* shutdown(SHUT_WR) requested */
    unsigned want_shut : 1;  /* shut down once queued drains */
    unsigned bulk : 1;       /* it streams: its reads take WSG_BULK_SIZE chunks */
    unsigned parked : 1;     /* the held bytes are in <park>, not in a chunk */
} wsg_peer_t;

/* Handshake-time state, freed when the relay starts. The request and
 * response buffers start small (a typical head is a few hundred bytes) and
 * grow by doubling up to their limit, so a burst of handshakes in flight
 * costs a few KiB each, not max_header_bytes twice. */
typedef struct wsg_hs_s {
    char *req;               /* owned: client's request head, then early frame bytes */
    size_t req_len, req_cap, req_max;
    wsg_http_head_t *req_head;
    char *resp;              /* owned: backend's response head, then its first frame bytes */
    size_t resp_len, resp_cap, resp_max;
    wsg_http_head_t *resp_head;
    char accept[WSG_WS_ACCEPT_LEN + 1];
    uv_connect_t *creq;      /* the current connect attempt's request (each attempt
                                allocates its own, freed by on_connect, which a
                                cancelled one still reaches) */
    unsigned cand[8];        /* backends to try, in order */
    size_t ncand, tried;
    uint64_t deadline;       /* of the current phase */

    /* A plain HTTP exchange (SPEC §9, exchange.c). Once its head is sent
     * upstream, req[0..req_len) holds what the client sent after it: the
     * rest of the body, then the next requests. */
    uint64_t req_body;       /* request body bytes forwarded so far */
    uint64_t x_in, x_out;    /* bytes of this request (head + body) and of its response */
    uint64_t t_begin_ns;     /* uv_hrtime() when its request head was complete */
    char *replay;            /* owned: a retryable request as sent, kept until the
                                response starts so that it can be resent if its
                                connection dies before answering */
    size_t replay_len;
    uint64_t beat_at;        /* SSE: loop time of the next heartbeat comment */
    char line[160];          /* "METHOD /path" for the access line (query cut) */
    int32_t sticky_be;       /* the backend a valid sticky cookie of the request names, or -1 */
    unsigned http : 1;       /* this exchange is plain HTTP, not an upgrade */
    unsigned head_sent : 1;  /* the request head went to the backend */
    unsigned req_done : 1;   /* the whole request was forwarded */
    unsigned resp_started : 1; /* a byte of the final response went to the client */
    unsigned keep : 1;       /* the client connection may carry another request */
    unsigned head_req : 1;   /* the request is HEAD: its answer has no body */
    unsigned json : 1;       /* the client accepts application/json (error bodies) */
    unsigned sse : 1;        /* the client asked for text/event-stream */
    unsigned kept_alive : 1; /* not the connection's first request */
    unsigned reused : 1;     /* its backend connection came from the pool */
    unsigned fresh_only : 1; /* a kept-alive connection failed it: new connections only */
    unsigned up_keep : 1;    /* the backend was not told "Connection: close", nor told
                                us so: its connection may serve another request */
    unsigned replayable : 1; /* GET, HEAD or OPTIONS without a body: may be resent */
    unsigned streaming : 1;  /* counted in http_streaming */
    unsigned event_stream : 1; /* an SSE response wsgate follows event by event */
    unsigned bulk : 1;       /* the response body streams: read it in bulk chunks */
    unsigned beat : 1;       /* and sends comment heartbeats while the backend is silent */
} wsg_hs_t;

/* Lives as long as the client's socket: every idle WebSocket holds one,
 * so its fields are ordered to leave no padding, and what only a phase or a
 * rare feature needs lives elsewhere (wsg_hs_t, wsg_edge_t). */
struct wsg_conn_s {
    wsg_peer_t peer[2];
    wsg_side_t client_io;    /* peer[WSG_CLIENT].io */
    wsg_worker_t *w;
    wsg_runtime_t *rt;       /* owned reference: the config this connection started with */
    wsg_conn_t *prev, *next; /* worker's list */
    wsg_timer_node_t timer;
    wsg_hs_t *hs;            /* owned; NULL once relaying */
    wsg_edge_t *edge;        /* owned: SPEC §11 state (the token, expiry, client rates;
                                edge.c), NULL while there is none: an idle
                                connection without them holds nothing */
    const char *end_reason;  /* static string for the access log */
    uint64_t id;
    uint64_t t_start_ns;     /* uv_hrtime() at accept, for the handshake histogram */
    uint64_t last_data;      /* loop time of the last data frame byte either way */
    uint64_t close_deadline; /* CLOSING: force-close at this time */
    uint64_t drain_at;       /* RELAY: admin drain sends 1012 at this time (0: none) */
    uint64_t lifetime_at;    /* RELAY: max_lifetime_ms (with its jitter) ends it then (0: never) */
    uint64_t key_hash;       /* the hash its backend was chosen by (rebalance) */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } client_addr;
    uint32_t listener;       /* index into rt->cfg->listeners */
    int32_t route;           /* -1 until routed */
    int32_t pool;
    int32_t backend;         /* -1 until a backend is chosen */
    uint16_t status;         /* HTTP status the client got */
    uint16_t close_code;     /* first close code seen or sent */
    uint8_t closed_by;       /* WSG_BY_* */
    uint8_t state;           /* wsg_conn_state_t */
    uint8_t handles;         /* open uv handles; freed at 0 */
    unsigned counted_backend : 1; /* wsg_balancer_conn_start() was called */
    unsigned counted_ip : 1; /* counted in the server's per-address table */
    unsigned logged : 1;     /* the access line of the current exchange is written */
    unsigned keyed : 1;      /* key_hash comes from the sticky key or the ip fallback */
    unsigned rebalanced : 1; /* drain_at was set by a rebalance, not a drain */
    unsigned sticky : 1;     /* the client holds a sticky cookie for its backend: a
                                rebalance leaves it alone (SPEC §10) */
};

/* The backend a routed connection uses (pool and backend set), kept alive
 * by its runtime: for traffic counts. */
static inline wsg_backend_t *wsg__conn_backend(const wsg_conn_t *c) {
    return c->rt->pools[c->pool]->backends[c->backend];
}

enum { WSG_BY_NONE = 0, WSG_BY_CLIENT, WSG_BY_BACKEND, WSG_BY_WSGATE };

/* conn.c */
wsg_chunk_t *wsg__chunk_get(wsg_conn_t *c);
/* A WSG_BULK_SIZE chunk (WSG_BULK_DATA bytes of data); wsg__chunk_put takes
 * it back like any other. */
wsg_chunk_t *wsg__chunk_get_bulk(wsg_conn_t *c);
void wsg__chunk_put(wsg_conn_t *c, wsg_chunk_t *ch);
/* A head parser from the worker's slab (not malloc: a handshake's heads
 * come and go between long-lived connection structs, and a slab of their
 * own keeps them from leaving holes in malloc's heap, and costs less);
 * NULL on ENOMEM. Every head a wsg_hs_t holds comes from here. */
wsg_http_head_t *wsg__head_new(wsg_conn_t *c, wsg_http_kind_t kind, size_t max_bytes);
/* NULL is a no-op. */
void wsg__head_free(wsg_conn_t *c, wsg_http_head_t *h);
/* The data bytes <ch> holds. */
static inline size_t wsg__chunk_cap(const wsg_chunk_t *ch) {
    return ch->bulk ? WSG_BULK_DATA : WSG_CHUNK_DATA;
}
/* Sends bytes to side <to> after whatever is queued; copies what cannot be
 * written now. Returns 0 or a UV_E* code. */
int wsg__conn_send(wsg_conn_t *c, int to, const void *data, size_t len);
/* Sends ch->data[0..len) to <to>; takes ownership of <ch>. */
int wsg__conn_send_chunk(wsg_conn_t *c, int to, wsg_chunk_t *ch, size_t len);
void wsg__conn_reschedule(wsg_conn_t *c);
/* Ends the connection: flush, shut down both sides, wait for their EOF
 * (bounded by drain_ms), close. */
void wsg__conn_finish(wsg_conn_t *c);
/* <side> ended its stream (EOF or read error). */
void wsg__conn_side_eof(wsg_conn_t *c, int side);
void wsg__conn_close_side(wsg_conn_t *c, int side);
void wsg__conn_log_ctx(const wsg_conn_t *c, wsg_log_ctx_t *ctx);
int wsg__conn_resume_read(wsg_conn_t *c, int side);
void wsg__conn_pause_read(wsg_conn_t *c, int side);

void wsg__conn_client_ip(const wsg_conn_t *c, char *out, size_t cap);
/* What the forwarded request says of the client: its address (written into
 * ip[INET6_ADDRSTRLEN]) and the listener's scheme. */
wsg_forward_info_t wsg__conn_forward_info(const wsg_conn_t *c, char *ip);
/* The exchange on the backend connection is over: it goes back to the pool
 * when <reusable> and the pool takes it, else it is closed. */
void wsg__conn_release_backend(wsg_conn_t *c, bool reusable);
/* The backend connection of a retryable request (idempotent, no body)
 * failed before a response byte came back (SPEC §9): resend it, on a new
 * connection to the same backend when a kept-alive one had died, else to
 * the next candidate. Returns 0, or -1 when it cannot be retried. */
int wsg__conn_retry(wsg_conn_t *c);
/* Answers the client with wsgate's own error and ends the connection. */
void wsg__conn_reject(wsg_conn_t *c, int status, const char *why);
/* The same with extra header lines ("Retry-After: 2\r\n"), or NULL. */
void wsg__conn_refuse(wsg_conn_t *c, int status, const char *why, const char *headers);
/* Writes the access line of the connection, or of its current exchange. */
void wsg__conn_log_access(wsg_conn_t *c);
/* Starts the next attempt: route, then connect to the first candidate. */
void wsg__conn_connect(wsg_conn_t *c);
/* A new request head is in hs->req: parse what is there. */
void wsg__conn_request_bytes(wsg_conn_t *c, size_t n);

/* exchange.c: plain HTTP on the session (SPEC §9) */
/* The request head is complete and not an upgrade: it is answered as a plain
 * request from now on (error bodies, access line, metrics). */
void wsg__http_classify(wsg_conn_t *c);
/* The request head is complete, routed, not an upgrade: check it, decide its
 * framing. Returns 0 to go on and connect, else it has answered the client. */
int wsg__http_begin(wsg_conn_t *c);
/* The backend is connected: send the request head and what of the body is
 * here. */
int wsg__http_send_request(wsg_conn_t *c);
/* The request may be resent on a new connection if its kept-alive one
 * fails before any response byte (SPEC §9). */
bool wsg__http_replayable(const wsg_conn_t *c);
/* <n> more client bytes are in hs->req after the head was sent. */
void wsg__http_client_bytes(wsg_conn_t *c, size_t n);
/* <n> more backend bytes are in hs->resp (UPSTREAM or PASSTHRU). */
void wsg__http_backend_bytes(wsg_conn_t *c, size_t n);
/* An SSE response's heartbeat is due (<now>): a comment goes to the client
 * if the stream is between two events. */
void wsg__http_heartbeat(wsg_conn_t *c, uint64_t now);
/* wsgate is shutting down during the exchange: it finishes (within
 * drain_ms) and the client connection closes after it; an SSE stream,
 * which would never finish, ends now. */
void wsg__http_going_away(wsg_conn_t *c);
/* The backend's stream ended (EOF or error) during the exchange. */
void wsg__http_backend_eof(wsg_conn_t *c);
/* The client's stream ended during the exchange. */
void wsg__http_client_eof(wsg_conn_t *c);
/* The error answer for an HTTP exchange into out[0..cap). */
size_t wsg__http_error(const wsg_conn_t *c, int status, const char *why, char *out, size_t cap);

/* sticky.c: the sticky cookie (SPEC §10) */
/* The candidates are in hs->cand by the key: a valid cookie for an up
 * backend puts it first (keeping at most <cap>). Sets hs->sticky_be. */
void wsg__sticky_place(wsg_conn_t *c, size_t cap);
/* The request head <head>[0..len) built for the backend, without the
 * cookie; returns its new length. */
size_t wsg__sticky_filter(const wsg_conn_t *c, char *head, size_t len);
/* The response head <head>[0..len) built for the client, with Set-Cookie
 * when this response must set it; returns its new length (within <cap>,
 * which should leave wsg__sticky_room() spare). */
ssize_t wsg__sticky_response(wsg_conn_t *c, char *head, size_t len, size_t cap);
/* Sends the backend's 101 head <head>[0..len) to the client, with
 * Set-Cookie when it must set it. Returns as wsg__conn_send(). */
int wsg__sticky_send_head(wsg_conn_t *c, const char *head, size_t len);
size_t wsg__sticky_room(void);

/* relay.c */
void wsg__relay_start(wsg_conn_t *c);
void wsg__relay_on_read(wsg_conn_t *c, int from, ssize_t nread);
void wsg__relay_alloc(wsg_conn_t *c, int from, uv_buf_t *buf);
void wsg__relay_on_deadline(wsg_conn_t *c, uint64_t now);
uint64_t wsg__relay_next_deadline(const wsg_conn_t *c);
/* wsgate closes the session: close <client_code> to the client and
 * <backend_code> to the backend (0: none), then finish. The close frames
 * carry c->end_reason (set it first) or the code's usual meaning. */
void wsg__relay_close(wsg_conn_t *c, uint16_t client_code, uint16_t backend_code);
/* Output to <to> drained or changed: inject owed frames, resume readers. */
void wsg__relay_on_drained(wsg_conn_t *c, int to);
/* Feeds <len> bytes received from <from> during the handshake. */
void wsg__relay_feed(wsg_conn_t *c, int from, const char *data, size_t len);

#endif /* WSGATE_CONN_INT_H */
