/*
 * demo_http: the page, the event stream, the long poll and the chat room of
 * the echo backend (see demo_http.h for the split with echo_backend.c).
 *
 *   GET  /          the demo page (bench/demo_page.html, embedded at build
 *                   time by tools/embed_html.py), the backend's name in it
 *   GET  /events    Server-Sent Events: "hello" at once, then the kept
 *                   messages after Last-Event-ID, then a "tick" every
 *                   tick_ms and every new "message"
 *   GET  /poll      ?since=N: 200 with the messages after N as soon as there
 *                   is one, or an empty list after poll_ms
 *   POST /messages  ?user=NAME, the text as the body: a new message
 *   GET  /healthz   200 "ok"
 * HEAD works wherever GET does; other methods get 405, other paths 404, a
 * plain request to /chat (the WebSocket endpoint) 426. Every response has
 * X-Backend: NAME, so that a client behind a proxy sees who answered.
 *
 * A room is one event loop's: ticks and messages share one id sequence
 * (the SSE ids); the last KEEP messages are kept for replays and polls.
 * Everything a room holds is bounded: KEEP messages of at most TEXT_MAX
 * bytes, and a stream whose client does not read is dropped once
 * STREAM_QUEUE_MAX bytes wait for it.
 */
#include "demo_http.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/pct.h>

#include "demo_page.h"

#define KEEP 64
#define TEXT_MAX 500
#define USER_MAX 32
#define BACKEND_NAME_MAX 64
#define STREAM_QUEUE_MAX (256u << 10)
#define RETRY_MS 1000 /* the EventSource's reconnection delay we ask for */

typedef struct msg_s {
    uint64_t id;
    char *json; /* the event's data line */
    size_t len;
} msg_t;

struct demo_room_s {
    uv_timer_t tick;     /* runs while a stream is open */
    uv_timer_t deadline; /* the oldest held poll's */
    uv_loop_t *loop;
    const char *name;
    char *name_json; /* the name as a JSON string, quotes included */
    char *page;      /* rendered once: the name never changes */
    size_t page_len;
    unsigned tick_ms, poll_ms;
    uint64_t last_id;
    msg_t msgs[KEEP]; /* a ring, oldest at <first> */
    unsigned first, count;
    demo_conn_t streams, polls; /* list heads; polls in deadline order */
    unsigned nstreams, npolls;
};

/* What a response must say about framing, kept beyond the request for a
 * held poll. */
typedef struct reply_s {
    bool head, http10, keep_alive;
} reply_t;

/* ---- small text helpers ------------------------------------------------ */

/* Writes <s> (<n> bytes) as a JSON string at <out>, which has 6n + 2 bytes;
 * returns the length. Bytes >= 0x80 pass as they are (the caller checked
 * UTF-8). */
static size_t json_put(char *out, const char *s, size_t n) {
    char *p = out;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            p += sprintf(p, "\\u%04x", ch);
        } else {
            *p++ = (char)ch;
        }
    }
    *p++ = '"';
    return (size_t)(p - out);
}

static bool utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            k = 1, cp = b & 0x1f;
        } else if ((b & 0xf0) == 0xe0) {
            k = 2, cp = b & 0x0f;
        } else if ((b & 0xf8) == 0xf0) {
            k = 3, cp = b & 0x07;
        } else {
            return false;
        }
        if (n - i <= k) /* cut short */
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        /* Overlong forms, surrogates and code points past U+10FFFF. */
        static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return false;
        i += k + 1;
    }
    return true;
}

bool demo_valid_user(const char *user) {
    size_t n = strlen(user);
    if (n == 0 || n > USER_MAX || !utf8_ok((const unsigned char *)user, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)user[i] < 0x20 || user[i] == 0x7f)
            return false;
    return true;
}

int demo_query_param(const char *query, const char *key, char *out, size_t cap) {
    size_t kl = strlen(key);
    for (const char *s = query; *s;) {
        const char *e = strchr(s, '&');
        if (e == NULL)
            e = s + strlen(s);
        if ((size_t)(e - s) > kl && strncmp(s, key, kl) == 0 && s[kl] == '=') {
            size_t n = 0;
            for (const char *p = s + kl + 1; p < e; p++) {
                int ch = (unsigned char)*p;
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%') {
                    int hi, lo;
                    if (e - p < 3 || (hi = wsg_pct_hexval(p[1])) < 0 ||
                        (lo = wsg_pct_hexval(p[2])) < 0)
                        return -1;
                    ch = hi * 16 + lo;
                    p += 2;
                }
                if (n + 1 >= cap)
                    return -1;
                out[n++] = (char)ch;
            }
            out[n] = '\0';
            return 1;
        }
        s = *e ? e + 1 : e;
    }
    return 0;
}

/* A decimal id of at most 19 digits: what this backend hands out. */
static bool parse_id(const char *s, uint64_t *out) {
    size_t n = strlen(s);
    if (n == 0 || n > 19 || strspn(s, "0123456789") != n)
        return false;
    *out = strtoull(s, NULL, 10);
    return true;
}

static uint64_t wall_ms(void) {
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* ---- lists ------------------------------------------------------------- */

static void list_init(demo_conn_t *head) {
    head->next = head->prev = head;
}

static bool list_empty(const demo_conn_t *head) {
    return head->next == head;
}

static void list_append(demo_conn_t *head, demo_conn_t *dc) {
    dc->prev = head->prev;
    dc->next = head;
    head->prev->next = dc;
    head->prev = dc;
}

static void list_unlink(demo_conn_t *dc) {
    dc->prev->next = dc->next;
    dc->next->prev = dc->prev;
    dc->prev = dc->next = NULL;
}

/* ---- responses --------------------------------------------------------- */

static const char *connection_header(const reply_t *how) {
    if (!how->keep_alive)
        return "Connection: close\r\n";
    return how->http10 ? "Connection: keep-alive\r\n" : "";
}

/* A complete response with a Content-Length (no body for HEAD); <extra>
 * holds more header lines. */
static void respond(demo_room_t *r, conn_t *c, const reply_t *how, const char *status,
                    const char *ctype, const char *extra, const void *body, size_t len) {
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "X-Backend: %s\r\nCache-Control: no-store\r\n%s%s\r\n",
                     status, ctype, len, r->name, extra, connection_header(how));
    if (n < 0 || (size_t)n >= sizeof(head) || conn_send(c, head, (size_t)n) < 0 ||
        (!how->head && len > 0 && conn_send(c, body, len) < 0)) {
        conn_drop(c);
        return;
    }
    conn_done(c, how->keep_alive);
}

static void reply_text(demo_room_t *r, conn_t *c, const reply_t *how, const char *status,
                       const char *extra, const char *text) {
    respond(r, c, how, status, "text/plain; charset=utf-8", extra, text, strlen(text));
}

/* ---- the room ---------------------------------------------------------- */

static void on_tick(uv_timer_t *t);
static void on_deadline(uv_timer_t *t);

demo_room_t *demo_room_new(uv_loop_t *loop, const char *name, unsigned tick_ms,
                           unsigned poll_ms) {
    size_t nl = strlen(name);
    if (nl == 0 || nl > BACKEND_NAME_MAX)
        return NULL;
    for (size_t i = 0; i < nl; i++)
        if (name[i] < 0x21 || name[i] > 0x7e) /* it goes into a header line */
            return NULL;
    demo_room_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->loop = loop;
    r->name = name;
    r->tick_ms = tick_ms;
    r->poll_ms = poll_ms;
    list_init(&r->streams);
    list_init(&r->polls);
    r->name_json = malloc(6 * nl + 3);
    /* The page: head, the name HTML-escaped, tail. */
    r->page = malloc(sizeof(demo_page_head) + 6 * nl + sizeof(demo_page_tail));
    if (r->name_json == NULL || r->page == NULL) {
        demo_room_free(r);
        return NULL;
    }
    r->name_json[json_put(r->name_json, name, nl)] = '\0';
    char *p = r->page;
    memcpy(p, demo_page_head, sizeof(demo_page_head));
    p += sizeof(demo_page_head);
    for (size_t i = 0; i < nl; i++) {
        switch (name[i]) {
        case '&': p += sprintf(p, "&amp;"); break;
        case '<': p += sprintf(p, "&lt;"); break;
        case '>': p += sprintf(p, "&gt;"); break;
        case '"': p += sprintf(p, "&quot;"); break;
        case '\'': p += sprintf(p, "&#39;"); break;
        default: *p++ = name[i];
        }
    }
    memcpy(p, demo_page_tail, sizeof(demo_page_tail));
    r->page_len = (size_t)(p - r->page) + sizeof(demo_page_tail);
    uv_timer_init(loop, &r->tick);
    uv_timer_init(loop, &r->deadline);
    r->tick.data = r->deadline.data = r;
    return r;
}

void demo_room_free(demo_room_t *r) {
    if (r == NULL)
        return;
    for (unsigned i = 0; i < r->count; i++)
        free(r->msgs[(r->first + i) % KEEP].json);
    free(r->name_json);
    free(r->page);
    free(r);
}

/* Writes an event to one stream, as a chunk on HTTP/1.1. A client that
 * lets STREAM_QUEUE_MAX bytes pile up is dropped. */
static void stream_write(demo_room_t *r, demo_conn_t *dc, const char *ev, size_t len) {
    char *buf = malloc(len + 32);
    size_t n = 0;
    if (buf != NULL) {
        if (dc->chunked)
            n = (size_t)sprintf(buf, "%zx\r\n", len);
        memcpy(buf + n, ev, len);
        n += len;
        if (dc->chunked)
            n += (size_t)sprintf(buf + n, "\r\n");
    }
    if (buf == NULL || conn_send(dc->c, buf, n) < 0 || conn_queued(dc->c) > STREAM_QUEUE_MAX) {
        conn_t *c = dc->c;
        demo_conn_gone(r, dc);
        conn_drop(c);
    }
    free(buf);
}

/* "id: N\nevent: TYPE\ndata: JSON\n\n" into a new buffer. */
static char *format_event(uint64_t id, const char *type, const char *json, size_t jlen,
                          size_t *len) {
    char *ev = malloc(jlen + 64);
    if (ev == NULL)
        return NULL;
    int n = sprintf(ev, "id: %" PRIu64 "\nevent: %s\ndata: ", id, type);
    memcpy(ev + n, json, jlen);
    memcpy(ev + (size_t)n + jlen, "\n\n", 2);
    *len = (size_t)n + jlen + 2;
    return ev;
}

static void broadcast(demo_room_t *r, uint64_t id, const char *type, const char *json,
                      size_t jlen) {
    size_t len;
    char *ev = format_event(id, type, json, jlen, &len);
    if (ev == NULL)
        return;
    for (demo_conn_t *dc = r->streams.next, *next; dc != &r->streams; dc = next) {
        next = dc->next; /* a dropped stream unlinks itself */
        stream_write(r, dc, ev, len);
    }
    free(ev);
}

static void on_tick(uv_timer_t *t) {
    demo_room_t *r = t->data;
    uint64_t id = ++r->last_id;
    char json[256];
    int n = snprintf(json, sizeof(json),
                     "{\"id\":%" PRIu64 ",\"backend\":%s,\"time\":%" PRIu64 ",\"streams\":%u}",
                     id, r->name_json, wall_ms(), r->nstreams);
    broadcast(r, id, "tick", json, (size_t)n);
}

static bool has_messages_after(const demo_room_t *r, uint64_t since) {
    return r->count > 0 && r->msgs[(r->first + r->count - 1) % KEEP].id > since;
}

/* {"backend":..,"last":N,"messages":[...]}: the kept messages after <since>. */
static char *poll_body(demo_room_t *r, uint64_t since, size_t *len) {
    size_t cap = strlen(r->name_json) + 80;
    for (unsigned i = 0; i < r->count; i++)
        cap += r->msgs[(r->first + i) % KEEP].len + 1;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t n = (size_t)sprintf(out, "{\"backend\":%s,\"last\":%" PRIu64 ",\"messages\":[",
                               r->name_json, r->last_id);
    bool first = true;
    for (unsigned i = 0; i < r->count; i++) {
        const msg_t *m = &r->msgs[(r->first + i) % KEEP];
        if (m->id <= since)
            continue;
        if (!first)
            out[n++] = ',';
        first = false;
        memcpy(out + n, m->json, m->len);
        n += m->len;
    }
    n += (size_t)sprintf(out + n, "]}");
    *len = n;
    return out;
}

static void answer_poll(demo_room_t *r, conn_t *c, const reply_t *how, uint64_t since) {
    size_t len;
    char *body = poll_body(r, since, &len);
    if (body == NULL) {
        reply_text(r, c, how, "503 Service Unavailable", "", "out of memory\n");
        return;
    }
    respond(r, c, how, "200 OK", "application/json", "", body, len);
    free(body);
}

/* Answers the polls held now. One that a nested post already answered and
 * that came back for more (a pipelined poll) has nothing new: it is held
 * again rather than answered empty. */
static void answer_held_polls(demo_room_t *r) {
    for (unsigned n = r->npolls; n > 0 && !list_empty(&r->polls); n--) {
        demo_conn_t *dc = r->polls.next;
        list_unlink(dc);
        if (!has_messages_after(r, dc->since)) {
            list_append(&r->polls, dc);
            continue;
        }
        r->npolls--;
        dc->kind = DEMO_NONE;
        reply_t how = {false, dc->http10, dc->keep_alive};
        answer_poll(r, dc->c, &how, dc->since);
    }
    if (list_empty(&r->polls))
        uv_timer_stop(&r->deadline);
}

/* Stores and announces a message; NULL when out of memory. */
static const msg_t *room_post(demo_room_t *r, const char *user, const char *via,
                              const char *text, size_t len) {
    size_t ul = strlen(user);
    char *json = malloc(6 * (ul + len) + strlen(r->name_json) + 160);
    if (json == NULL)
        return NULL;
    uint64_t id = ++r->last_id;
    size_t n = (size_t)sprintf(json, "{\"id\":%" PRIu64 ",\"user\":", id);
    n += json_put(json + n, user, ul);
    n += (size_t)sprintf(json + n, ",\"text\":");
    n += json_put(json + n, text, len);
    n += (size_t)sprintf(json + n, ",\"via\":\"%s\",\"backend\":%s,\"time\":%" PRIu64 "}", via,
                         r->name_json, wall_ms());
    if (r->count == KEEP) {
        free(r->msgs[r->first].json);
        r->first = (r->first + 1) % KEEP;
        r->count--;
    }
    msg_t *m = &r->msgs[(r->first + r->count) % KEEP];
    r->count++;
    m->id = id;
    m->json = json;
    m->len = n;
    broadcast(r, id, "message", json, n);
    answer_held_polls(r);
    return m;
}

void demo_chat(demo_room_t *r, const char *user, const void *text, size_t len) {
    /* A chat message that cannot be shown is just echoed (the WebSocket
     * side does not check UTF-8, so this is the place that must). */
    if (len == 0 || len > TEXT_MAX || !utf8_ok(text, len))
        return;
    room_post(r, user, "websocket", text, len);
}

void demo_conn_gone(demo_room_t *r, demo_conn_t *dc) {
    if (dc->kind == DEMO_SSE) {
        list_unlink(dc);
        if (--r->nstreams == 0)
            uv_timer_stop(&r->tick);
    } else if (dc->kind == DEMO_POLL) {
        list_unlink(dc);
        r->npolls--;
    }
    dc->kind = DEMO_NONE;
}

/* ---- the endpoints ----------------------------------------------------- */

static void start_stream(demo_room_t *r, demo_conn_t *dc, const demo_req_t *q,
                         const reply_t *how) {
    uint64_t since = 0;
    if (q->last_event_id != NULL && !parse_id(q->last_event_id, &since)) {
        reply_text(r, dc->c, how, "400 Bad Request", "", "bad Last-Event-ID\n");
        return;
    }
    /* An HTTP/1.0 client cannot take chunks: its stream ends at our close. */
    bool chunked = !q->http10;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     "Cache-Control: no-store\r\nX-Backend: %s\r\n%s\r\n",
                     r->name,
                     chunked ? "Transfer-Encoding: chunked\r\n" : "Connection: close\r\n");
    if (conn_send(dc->c, head, (size_t)n) < 0) {
        conn_drop(dc->c);
        return;
    }
    if (how->head) {
        conn_done(dc->c, chunked && how->keep_alive);
        return;
    }
    dc->kind = DEMO_SSE;
    dc->chunked = chunked;
    list_append(&r->streams, dc);
    if (++r->nstreams == 1)
        uv_timer_start(&r->tick, on_tick, r->tick_ms, r->tick_ms);
    char hello[256];
    n = snprintf(hello, sizeof(hello),
                 "retry: %d\nevent: hello\ndata: {\"backend\":%s,\"last\":%" PRIu64 "}\n\n",
                 RETRY_MS, r->name_json, r->last_id);
    stream_write(r, dc, hello, (size_t)n);
    for (unsigned i = 0; i < r->count && dc->kind == DEMO_SSE; i++) {
        const msg_t *m = &r->msgs[(r->first + i) % KEEP];
        if (m->id <= since)
            continue;
        size_t len;
        char *ev = format_event(m->id, "message", m->json, m->len, &len);
        if (ev != NULL)
            stream_write(r, dc, ev, len);
        free(ev);
    }
}

static void start_poll(demo_room_t *r, demo_conn_t *dc, const demo_req_t *q,
                       const reply_t *how) {
    char arg[24];
    uint64_t since = 0;
    int found = demo_query_param(q->query, "since", arg, sizeof(arg));
    if (found < 0 || (found > 0 && !parse_id(arg, &since))) {
        reply_text(r, dc->c, how, "400 Bad Request", "", "since must be a message id\n");
        return;
    }
    /* A since past our last id came from another backend or an earlier
     * run of this one: answer at once, so that the client starts over
     * from "last". */
    if (how->head || has_messages_after(r, since) || since > r->last_id) {
        answer_poll(r, dc->c, how, since);
        return;
    }
    dc->kind = DEMO_POLL;
    dc->since = since;
    dc->http10 = how->http10;
    dc->keep_alive = how->keep_alive;
    dc->deadline = uv_now(r->loop) + r->poll_ms;
    list_append(&r->polls, dc);
    if (++r->npolls == 1)
        uv_timer_start(&r->deadline, on_deadline, r->poll_ms, 0);
}

/* The oldest polls whose time is up get an empty answer. */
static void on_deadline(uv_timer_t *t) {
    demo_room_t *r = t->data;
    uint64_t now = uv_now(r->loop);
    while (!list_empty(&r->polls) && r->polls.next->deadline <= now) {
        demo_conn_t *dc = r->polls.next;
        list_unlink(dc);
        r->npolls--;
        dc->kind = DEMO_NONE;
        reply_t how = {false, dc->http10, dc->keep_alive};
        answer_poll(r, dc->c, &how, dc->since);
    }
    /* Answering may have held new polls (pipelined ones), after these. */
    if (!list_empty(&r->polls)) {
        uint64_t d = r->polls.next->deadline;
        uv_timer_start(&r->deadline, on_deadline, d > now ? d - now : 0, 0);
    }
}

static void post_message(demo_room_t *r, conn_t *c, const demo_req_t *q, const reply_t *how) {
    char user[USER_MAX + 1];
    int found = demo_query_param(q->query, "user", user, sizeof(user));
    if (found == 0)
        strcpy(user, "anonymous");
    if (found < 0 || !demo_valid_user(user)) {
        reply_text(r, c, how, "400 Bad Request", "", "user: 1 to 32 bytes of UTF-8\n");
        return;
    }
    if (q->body_len == 0 || !utf8_ok((const unsigned char *)q->body, q->body_len)) {
        reply_text(r, c, how, "400 Bad Request", "", "the body is the message: UTF-8 text\n");
        return;
    }
    if (q->body_len > TEXT_MAX) {
        reply_text(r, c, how, "413 Content Too Large", "", "a message is at most 500 bytes\n");
        return;
    }
    const msg_t *m = room_post(r, user, "http", q->body, q->body_len);
    if (m == NULL)
        reply_text(r, c, how, "503 Service Unavailable", "", "out of memory\n");
    else
        respond(r, c, how, "201 Created", "application/json", "", m->json, m->len);
}

void demo_request(demo_room_t *r, demo_conn_t *dc, const demo_req_t *q) {
    conn_t *c = dc->c;
    bool get = strcmp(q->method, "GET") == 0, head = strcmp(q->method, "HEAD") == 0;
    reply_t how = {head, q->http10, q->keep_alive};
    const char *p = q->path;
    if (strcmp(p, "/messages") == 0) {
        if (strcmp(q->method, "POST") == 0)
            post_message(r, c, q, &how);
        else
            reply_text(r, c, &how, "405 Method Not Allowed", "Allow: POST\r\n", "use POST\n");
        return;
    }
    if (strcmp(p, "/chat") == 0) {
        reply_text(r, c, &how, "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n",
                   "websocket only\n");
        return;
    }
    bool known = strcmp(p, "/") == 0 || strcmp(p, "/events") == 0 ||
                 strcmp(p, "/poll") == 0 || strcmp(p, "/healthz") == 0;
    if (!known) {
        reply_text(r, c, &how, "404 Not Found", "", "no such page\n");
        return;
    }
    if (!get && !head) {
        reply_text(r, c, &how, "405 Method Not Allowed", "Allow: GET, HEAD\r\n",
                   "use GET or HEAD\n");
        return;
    }
    if (strcmp(p, "/") == 0)
        respond(r, c, &how, "200 OK", "text/html; charset=utf-8",
                "Content-Security-Policy: " DEMO_PAGE_CSP "\r\nX-Content-Type-Options: nosniff\r\n",
                r->page, r->page_len);
    else if (strcmp(p, "/events") == 0)
        start_stream(r, dc, q, &how);
    else if (strcmp(p, "/poll") == 0)
        start_poll(r, dc, q, &how);
    else
        reply_text(r, c, &how, "200 OK", "", "ok");
}
