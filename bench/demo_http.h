/*
 * demo_http: the plain-HTTP side of the echo backend (bench/echo_backend.c),
 * the part `make run`'s demo shows in a browser: the page at "/", a
 * Server-Sent Events stream at "/events", a long poll at "/poll" and
 * "POST /messages", around one chat room per event loop.
 *
 * echo_backend.c owns the connection (reading, the request head and body,
 * keep-alive and pipelining); this file gets a parsed request and answers
 * it, at once or later (a held poll, a stream), through the four conn_*
 * functions below.
 */
#ifndef ECHO_DEMO_HTTP_H
#define ECHO_DEMO_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct conn_s conn_t;

/* Provided by echo_backend.c. */
int conn_send(conn_t *c, const void *data, size_t len); /* queues a copy; < 0 on failure */
size_t conn_queued(conn_t *c);                          /* bytes queued, not yet sent */
void conn_done(conn_t *c, bool keep_alive);             /* the response is complete */
void conn_drop(conn_t *c);                              /* closes now */

/* A parsed request; every pointer is into the connection's buffer and valid
 * only during demo_request(). */
typedef struct demo_req_s {
    const char *method;
    const char *path;          /* the target up to '?' */
    const char *query;         /* after '?', "" when none */
    const char *last_event_id; /* NULL when absent */
    const char *body;
    size_t body_len;
    bool http10;
    bool keep_alive; /* what the client asked, after the version's default */
} demo_req_t;

enum demo_kind { DEMO_NONE, DEMO_SSE, DEMO_POLL };

/* A connection's place in its room: in the list of streams or of held
 * polls, or in neither. Embedded in the connection. */
typedef struct demo_conn_s {
    conn_t *c;
    struct demo_conn_s *prev, *next;
    enum demo_kind kind;
    bool chunked;    /* SSE over HTTP/1.1 */
    bool http10, keep_alive; /* of the held poll */
    uint64_t since;  /* of the held poll */
    uint64_t deadline;
} demo_conn_t;

typedef struct demo_room_s demo_room_t;

/* One room per event loop (a connection never leaves its loop, so nothing
 * is shared between threads). <tick_ms> is the SSE tick period, <poll_ms>
 * how long a poll is held. NULL when out of memory. */
demo_room_t *demo_room_new(uv_loop_t *loop, const char *name, unsigned tick_ms,
                           unsigned poll_ms);
/* After the loop has ended (its timers are closed by then). */
void demo_room_free(demo_room_t *r);

void demo_request(demo_room_t *r, demo_conn_t *dc, const demo_req_t *req);
/* A text message <len> bytes at <text> from a WebSocket opened at /chat. */
void demo_chat(demo_room_t *r, const char *user, const void *text, size_t len);
/* The connection is closing: it leaves every list. */
void demo_conn_gone(demo_room_t *r, demo_conn_t *dc);

/* The percent-decoded value of <key> in the query string <query>, into
 * <out> (<cap> bytes with the NUL): 1, or 0 when absent, -1 when too long
 * or badly encoded. */
int demo_query_param(const char *query, const char *key, char *out, size_t cap);
/* True when a chat user name: 1 to 32 bytes of UTF-8, no control bytes. */
bool demo_valid_user(const char *user);

#endif
