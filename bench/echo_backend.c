/*
 * echo_backend: a small WebSocket echo server on libuv, the backend that
 * wsgate's end-to-end tests and benchmarks put behind the proxy.
 *
 * It answers the server side of RFC 6455: a hand-rolled HTTP/1.1 Upgrade
 * parser, the 101 with Sec-WebSocket-Accept (SHA-1 + base64 from OpenSSL),
 * then an echo of every data frame, frame by frame. A few short text messages
 * are commands the tests use: "whoami" answers the server's name, "headers"
 * a JSON object of the request headers it received (lower-cased names, so the
 * X-Forwarded-* headers added by a proxy can be checked) and "request" the
 * request line. Pings get pongs and a close frame gets the same close frame
 * back.
 *
 * Requests without Upgrade are plain HTTP/1.1 (and 1.0), kept alive and
 * pipelined: GET /healthz answers "200 ok" for health checks, and the demo
 * that `make run` shows in a browser lives in demo_http.c (the page, an SSE
 * stream, a long poll and a chat room that the text messages of WebSockets
 * opened at /chat also post to). This file reads the request head and a
 * Content-Length body of at most BODY_MAX bytes; that file answers.
 *
 * It deliberately shares no code with wsgate (it must be an independent
 * implementation to test against) and does not negotiate extensions or
 * subprotocols, validate UTF-8 or enforce a frame size limit.
 *
 * Key design choice: it never buffers a message. Each read buffer is
 * rewritten in place: masked client headers are replaced by the (4 bytes
 * shorter) unmasked server headers and the payload is unmasked as it slides
 * down, so the echo of a read is one uv_write of (a slice of) the very buffer
 * the kernel filled, whatever the frame sizes. A small headroom in front of
 * each buffer absorbs the one header that may straddle two reads. The buffer
 * is reference counted by the writes that point into it. Reading stops while
 * the socket's write queue is over a high-water mark (backpressure), so the
 * memory a connection can hold is bounded and an idle one holds none.
 * --threads N runs N event loops on SO_REUSEPORT sockets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <uv.h>

#include "demo_http.h"

#define HEAD_MAX 16384      /* a request head larger than this gets a 431 */
#define BODY_MAX 1024       /* a plain request's body larger than this gets a 413 */
#define BUF_MAX (HEAD_MAX + BODY_MAX)
#define RBUF_SIZE 65536     /* bytes per read */
#define HEADROOM 16         /* see "in-place rewrite" below */
#define WQ_HIGH (1u << 20)  /* stop reading over this many unsent bytes */
#define WQ_LOW (256u << 10) /* resume under this */
#define SMALL_MAX 125       /* frames buffered whole: control frames, commands */
#define MAX_HEADERS 100
#define FREELIST_MAX 64
#define MAX_THREADS 64

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

typedef struct worker_s worker_t;

/* A read buffer. <refs> counts the writes pointing into it plus one held by
 * the code that is filling it; the last unref returns it to the free list. */
typedef struct rbuf_s {
    struct rbuf_s *next;
    worker_t *w;
    unsigned refs;
    char mem[HEADROOM + RBUF_SIZE];
} rbuf_t;

struct worker_s {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    uv_signal_t sigterm, sigint; /* only on worker 0 */
    uv_thread_t thread;
    rbuf_t *free;
    unsigned nfree;
    const char *name;
    demo_room_t *room;
};

enum phase { PH_HEAD, PH_WS, PH_CLOSING };
enum fmode { FM_STREAM, FM_BUFFER, FM_DISCARD };

struct conn_s {
    uv_tcp_t tcp; /* first member: the handle's address is the conn's */
    worker_t *w;
    enum phase phase;
    bool paused;   /* reading stopped by backpressure */
    bool full;     /* reading stopped: the buffer is full while a request is served */
    bool shutdown; /* uv_shutdown issued */
    uv_shutdown_t sreq;

    /* While PH_HEAD: what was read (BUF_MAX bytes), then NULL. The request
     * being served takes its first <req_len> bytes (0: none parsed yet),
     * pipelined ones may follow. */
    char *head;
    size_t head_len;
    size_t req_len;
    demo_req_t req;
    bool in_input; /* http_input() is running: conn_done() must not nest it */
    demo_conn_t dc;

    char *hdrs_json; /* answer to "headers", built from the request */
    size_t hdrs_json_len;
    char *req_line;  /* answer to "request" */
    char *chat_user; /* a WebSocket opened at /chat: its messages go to the room */

    /* Frame parser state (RFC 6455 §5.2). */
    uint8_t fh[14];
    unsigned fh_len, fh_need;
    uint8_t op;
    bool masked;
    uint8_t mask[4];
    unsigned mpos; /* payload offset modulo 4, for unmasking */
    uint64_t remaining;
    enum fmode mode;
    bool in_fragment; /* a fragmented data message is under way */
    uint8_t small[SMALL_MAX];
    unsigned small_len;
};

/* A write: either a slice of a read buffer (<rb>) or its own heap copy. */
typedef struct wreq_s {
    uv_write_t req;
    rbuf_t *rb;
    char *heap;
} wreq_t;

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void conn_close(conn_t *c);

/* ---- buffers ---------------------------------------------------------- */

static rbuf_t *rbuf_get(worker_t *w) {
    rbuf_t *rb = w->free;
    if (rb != NULL) {
        w->free = rb->next;
        w->nfree--;
    } else {
        rb = malloc(sizeof(*rb));
        if (rb == NULL)
            return NULL;
        rb->w = w;
    }
    rb->next = NULL;
    rb->refs = 1;
    return rb;
}

static void rbuf_unref(rbuf_t *rb) {
    if (--rb->refs > 0)
        return;
    worker_t *w = rb->w;
    if (w->nfree < FREELIST_MAX) {
        rb->next = w->free;
        w->free = rb;
        w->nfree++;
    } else {
        free(rb);
    }
}

/* ---- writes ----------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
    wreq_t *wr = (wreq_t *)req;
    conn_t *c = req->handle->data;
    if (wr->rb != NULL)
        rbuf_unref(wr->rb);
    free(wr->heap);
    free(wr);
    if (status < 0 || c == NULL || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->paused && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WQ_LOW) {
        c->paused = false;
        if (!c->full)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

/* Queues <len> bytes at <base>. With <rb>, base points into it and the write
 * takes a reference; else <heap> (taken, may be NULL) is freed when done. */
static int queue_write(conn_t *c, rbuf_t *rb, char *heap, char *base, size_t len) {
    wreq_t *wr = malloc(sizeof(*wr));
    if (wr == NULL) {
        free(heap);
        return UV_ENOMEM;
    }
    wr->rb = rb;
    wr->heap = heap;
    if (rb != NULL)
        rb->refs++;
    uv_buf_t b = uv_buf_init(base, (unsigned)len);
    int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        if (rb != NULL)
            rbuf_unref(rb);
        free(heap);
        free(wr);
    }
    return rc;
}

static int queue_copy(conn_t *c, const void *data, size_t len) {
    char *p = malloc(len ? len : 1);
    if (p == NULL)
        return UV_ENOMEM;
    memcpy(p, data, len);
    return queue_write(c, NULL, p, p, len);
}

/* Writes an unmasked server frame header for <len> bytes at <out>; returns
 * its length (2, 4 or 10: RFC 6455 §5.2). */
static size_t put_header(uint8_t *out, uint8_t b0, uint64_t len) {
    out[0] = b0;
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

static int send_frame(conn_t *c, uint8_t op, const void *payload, size_t len) {
    char *p = malloc(10 + len);
    if (p == NULL)
        return UV_ENOMEM;
    size_t h = put_header((uint8_t *)p, (uint8_t)(0x80 | op), len);
    if (len)
        memcpy(p + h, payload, len);
    return queue_write(c, NULL, p, p, h + len);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    (void)req;
    (void)status;
    /* Keep reading (and discarding) until the peer closes: closing with
     * unread input would send a RST that can destroy our last frame. */
}

/* Ends the conversation once the queued writes are out: FIN after them, then
 * the handle is closed when the peer's EOF arrives. */
static void finish(conn_t *c) {
    c->phase = PH_CLOSING;
    if (c->shutdown || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c->shutdown = true;
    if (c->paused || c->full) {
        c->paused = c->full = false;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

static void send_close(conn_t *c, uint16_t code) {
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_frame(c, 0x8, p, 2);
    finish(c);
}

/* ---- the HTTP handshake ----------------------------------------------- */

static void send_http(conn_t *c, const char *status, const char *extra, const char *body) {
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "X-Backend: %s\r\n%sConnection: close\r\n\r\n%s",
                     status, strlen(body), c->w->name, extra, body);
    queue_copy(c, buf, (size_t)n);
    finish(c);
}

typedef struct hdr_s {
    char *name; /* lower-cased in place, inside the head buffer */
    char *value;
} hdr_t;

/* True when the comma-separated list <v> holds <token> (case-insensitive). */
static bool has_token(const char *v, const char *token) {
    size_t tl = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == tl && strncasecmp(v, token, tl) == 0)
            return true;
        v = e;
    }
    return false;
}

static void json_str(char **pp, const char *s) {
    char *p = *pp;
    *p++ = '"';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20) {
            p += sprintf(p, "\\u%04x", ch);
        } else {
            *p++ = (char)ch;
        }
    }
    *p++ = '"';
    *pp = p;
}

/* Builds {"name": "value", ...}; repeated headers are joined with ", " as
 * RFC 9110 §5.3 allows, so an appended X-Forwarded-For reads the same
 * whether the proxy rewrote the line or added a second one. */
static char *headers_json(hdr_t *h, size_t n, size_t *outlen) {
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += 6 * (strlen(h[i].name) + strlen(h[i].value)) + 10;
    char *out = malloc(cap), *p = out;
    if (out == NULL)
        return NULL;
    *p++ = '{';
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(h[j].name, h[i].name) == 0;
        if (seen)
            continue;
        if (!first)
            *p++ = ',';
        first = false;
        json_str(&p, h[i].name);
        *p++ = ':';
        /* Concatenate the values of every line with this name. */
        size_t total = 0;
        for (size_t j = i; j < n; j++)
            if (strcmp(h[j].name, h[i].name) == 0)
                total += strlen(h[j].value) + 2;
        char *joined = malloc(total + 1), *q = joined;
        if (joined == NULL) {
            free(out);
            return NULL;
        }
        for (size_t j = i; j < n; j++) {
            if (strcmp(h[j].name, h[i].name) != 0)
                continue;
            if (q != joined) {
                *q++ = ',';
                *q++ = ' ';
            }
            size_t l = strlen(h[j].value);
            memcpy(q, h[j].value, l);
            q += l;
        }
        *q = '\0';
        json_str(&p, joined);
        free(joined);
    }
    *p++ = '}';
    *p = '\0';
    *outlen = (size_t)(p - out);
    return out;
}

static bool valid_key(const char *k) {
    /* Base64 of 16 bytes: 22 characters and "==" (RFC 6455 §4.1). */
    unsigned char raw[18];
    if (strlen(k) != 24 || k[22] != '=' || k[23] != '=')
        return false;
    return EVP_DecodeBlock(raw, (const unsigned char *)k, 24) == 18;
}

static void accept_key(const char *key, char out[29]) {
    unsigned char md[SHA_DIGEST_LENGTH];
    char cat[64 + sizeof(ws_guid)];
    int n = snprintf(cat, sizeof(cat), "%s%s", key, ws_guid);
    SHA1((const unsigned char *)cat, (size_t)n, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

/* A plain request (no Upgrade): checks its framing and keep-alive and
 * fills c->req for demo_http.c. False when refused (answered and closing). */
static bool plain_request(conn_t *c, char *method, char *target, char *version, hdr_t *hs,
                          size_t n, size_t used) {
    bool http10 = strcmp(version, "HTTP/1.0") == 0;
    if (!http10 && strcmp(version, "HTTP/1.1") != 0) {
        send_http(c, "505 HTTP Version Not Supported", "", "HTTP/1.1 or 1.0\n");
        return false;
    }
    if (target[0] != '/') {
        send_http(c, "400 Bad Request", "", "the target must start with /\n");
        return false;
    }
    const char *connection = NULL, *length = NULL, *last_id = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(hs[i].name, "transfer-encoding") == 0) {
            /* RFC 9112 §6.3 lets a server ask for a length instead. */
            send_http(c, "411 Length Required", "", "send a Content-Length\n");
            return false;
        } else if (strcmp(hs[i].name, "content-length") == 0) {
            if (length != NULL && strcmp(length, hs[i].value) != 0) {
                send_http(c, "400 Bad Request", "", "two Content-Lengths\n");
                return false;
            }
            length = hs[i].value;
        } else if (strcmp(hs[i].name, "connection") == 0) {
            connection = hs[i].value;
        } else if (strcmp(hs[i].name, "last-event-id") == 0) {
            last_id = hs[i].value;
        }
    }
    size_t body = 0;
    if (length != NULL) {
        size_t dl = strlen(length);
        if (dl == 0 || dl > 9 || strspn(length, "0123456789") != dl) {
            send_http(c, "400 Bad Request", "", "bad Content-Length\n");
            return false;
        }
        body = strtoul(length, NULL, 10);
        if (body > BODY_MAX) {
            send_http(c, "413 Content Too Large", "", "a body is at most 1024 bytes here\n");
            return false;
        }
    }
    char *query = strchr(target, '?');
    if (query != NULL)
        *query++ = '\0';
    else
        query = target + strlen(target);
    c->req = (demo_req_t){
        .method = method,
        .path = target,
        .query = query,
        .last_event_id = last_id,
        .body = c->head + used,
        .body_len = body,
        .http10 = http10,
        .keep_alive = http10 ? connection != NULL && has_token(connection, "keep-alive")
                             : connection == NULL || !has_token(connection, "close"),
    };
    c->req_len = used + body;
    return true;
}

/* An upgrade request: the 101 and the switch to PH_WS, or a refusal. */
static bool upgrade_request(conn_t *c, char *method, char *target, char *version, hdr_t *hs,
                            size_t n) {
    const char *upgrade = NULL, *connection = NULL, *key = NULL, *ver = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(hs[i].name, "upgrade") == 0)
            upgrade = hs[i].value;
        else if (strcmp(hs[i].name, "connection") == 0)
            connection = hs[i].value;
        else if (strcmp(hs[i].name, "sec-websocket-key") == 0)
            key = hs[i].value;
        else if (strcmp(hs[i].name, "sec-websocket-version") == 0)
            ver = hs[i].value;
    }
    if (strcmp(method, "GET") != 0 || strcmp(version, "HTTP/1.1") != 0 ||
        !has_token(upgrade, "websocket") || connection == NULL ||
        !has_token(connection, "upgrade") || key == NULL || !valid_key(key)) {
        send_http(c, "400 Bad Request", "", "bad websocket upgrade\n");
        return false;
    }
    if (ver == NULL || strcmp(ver, "13") != 0) {
        send_http(c, "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n", "version 13\n");
        return false;
    }
    size_t rl = strlen(method) + strlen(target) + strlen(version) + 3;
    c->req_line = malloc(rl);
    c->hdrs_json = headers_json(hs, n, &c->hdrs_json_len);
    if (c->req_line == NULL || c->hdrs_json == NULL) {
        send_http(c, "503 Service Unavailable", "", "out of memory\n");
        return false;
    }
    snprintf(c->req_line, rl, "%s %s %s", method, target, version);
    if (strncmp(target, "/chat", 5) == 0 && (target[5] == '\0' || target[5] == '?')) {
        /* A bad or missing name is not worth refusing the chat for. */
        char user[64];
        const char *q = target[5] == '?' ? target + 6 : "";
        if (demo_query_param(q, "user", user, sizeof(user)) <= 0 || !demo_valid_user(user))
            strcpy(user, "anonymous");
        c->chat_user = strdup(user);
    }
    char acc[29], resp[256];
    accept_key(key, acc);
    int len = snprintf(resp, sizeof(resp),
                       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                       acc);
    queue_copy(c, resp, (size_t)len);
    c->phase = PH_WS;
    c->fh_need = 2;
    return true;
}

/* Parses the complete head at c->head (NUL-terminated at the blank line,
 * <used> bytes with it). Returns true for a plain request to serve (c->req
 * filled); false when the connection switched to WebSocket or was refused. */
static bool handle_head(conn_t *c, size_t used) {
    char *line = c->head, *eol = strstr(line, "\r\n");
    *eol = '\0';
    char *method = line, *sp1 = strchr(line, ' '), *target, *version;
    if (sp1 == NULL || (*sp1 = '\0', target = sp1 + 1, version = strchr(target, ' ')) == NULL) {
        send_http(c, "400 Bad Request", "", "bad request line\n");
        return false;
    }
    *version++ = '\0';

    hdr_t hs[MAX_HEADERS];
    size_t n = 0;
    for (line = eol + 2; *line; line = eol + 2) {
        eol = strstr(line, "\r\n"); /* the head ends with "\r\n\0": never NULL */
        *eol = '\0';
        char *colon = strchr(line, ':');
        if (colon == NULL || colon == line || n == MAX_HEADERS) {
            send_http(c, "400 Bad Request", "", "bad header\n");
            return false;
        }
        *colon = '\0';
        for (char *p = line; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        char *v = colon + 1, *ve = eol;
        while (*v == ' ' || *v == '\t')
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        hs[n].name = line;
        hs[n].value = v;
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(hs[i].name, "upgrade") == 0) {
            upgrade_request(c, method, target, version, hs, n);
            return false;
        }
    }
    return plain_request(c, method, target, version, hs, n, used);
}

/* ---- frames ----------------------------------------------------------- */

/* Unmasks <n> bytes from <src> to <dst> (dst <= src, the regions may
 * overlap: every 8-byte block is loaded before the store that could reach
 * it). <pos> is the payload offset of src[0] modulo 4. */
static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                        unsigned pos) {
    size_t i = 0;
    uint8_t m8[8];
    for (int k = 0; k < 8; k++)
        m8[k] = mask[(pos + (unsigned)k) & 3];
    uint64_t m;
    memcpy(&m, m8, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= m;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ m8[i & 7];
}

/* A buffered frame (control frame or short single-frame text) is complete. */
static void handle_small(conn_t *c) {
    const uint8_t *p = c->small;
    size_t n = c->small_len;
    switch (c->op) {
    case 0x9:
        send_frame(c, 0xA, p, n);
        break;
    case 0xA:
        break;
    case 0x8:
        /* RFC 6455 §5.5.1: answer with a close frame, echoing the code. */
        if (n == 1) {
            send_close(c, 1002);
            return;
        }
        send_frame(c, 0x8, p, n);
        finish(c);
        break;
    case 0x1:
        if (n == 6 && memcmp(p, "whoami", 6) == 0)
            send_frame(c, 0x1, c->w->name, strlen(c->w->name));
        else if (n == 7 && memcmp(p, "headers", 7) == 0)
            send_frame(c, 0x1, c->hdrs_json, c->hdrs_json_len);
        else if (n == 7 && memcmp(p, "request", 7) == 0)
            send_frame(c, 0x1, c->req_line, strlen(c->req_line));
        else {
            send_frame(c, 0x1, p, n);
            if (c->chat_user != NULL)
                demo_chat(c->w->room, c->chat_user, p, n);
        }
        break;
    default:
        break;
    }
}

/* Validates the header in c->fh and prepares the payload phase. Returns the
 * close code for a protocol error, or 0. */
static uint16_t parse_header(conn_t *c) {
    uint8_t b0 = c->fh[0], b1 = c->fh[1];
    bool fin = b0 & 0x80;
    unsigned l7 = b1 & 0x7f, off = 2;
    c->op = b0 & 0x0f;
    c->masked = b1 & 0x80;
    if (l7 == 126) {
        c->remaining = ((uint64_t)c->fh[2] << 8) | c->fh[3];
        off = 4;
    } else if (l7 == 127) {
        c->remaining = 0;
        for (int i = 0; i < 8; i++)
            c->remaining = (c->remaining << 8) | c->fh[2 + i];
        off = 10;
        if (c->remaining >> 63)
            return 1002;
    } else {
        c->remaining = l7;
    }
    if (c->masked)
        memcpy(c->mask, c->fh + off, 4);
    c->mpos = 0;
    if (c->op >= 0x8) {
        if (c->op > 0xA || !fin || c->remaining > SMALL_MAX)
            return 1002;
        c->mode = FM_BUFFER;
    } else if (c->op > 0x2) {
        return 1002;
    } else if (c->op == 0x0 ? !c->in_fragment : c->in_fragment) {
        return 1002; /* RFC 6455 §5.4: continuation without start, or nested */
    } else if (c->op == 0x1 && fin && !(b0 & 0x70) && c->remaining <= SMALL_MAX) {
        c->mode = FM_BUFFER; /* maybe a command */
    } else {
        c->mode = FM_STREAM;
        if (c->op != 0x0)
            c->in_fragment = !fin;
        else if (fin)
            c->in_fragment = false;
    }
    c->small_len = 0;
    return 0;
}

/* Processes <n> bytes at <data> (inside <rb>, after its headroom).
 *
 * In-place rewrite: the output cursor <o> starts HEADROOM bytes before the
 * data and never passes the input cursor <p>. Each masked header shrinks by
 * 4 bytes on output, payload bytes keep their size, so the gap only narrows
 * when a header straddles two reads; that happens at most once per buffer,
 * at its start, and costs at most 9 bytes of the 16 of headroom. */
static void feed(conn_t *c, rbuf_t *rb, uint8_t *data, size_t n) {
    uint8_t *p = data, *end = data + n;
    uint8_t *o = (uint8_t *)rb->mem, *seg = o;

    while (p < end && c->phase == PH_WS) {
        if (c->fh_len < c->fh_need) {
            while (p < end && c->fh_len < c->fh_need) {
                c->fh[c->fh_len++] = *p++;
                if (c->fh_len == 2) {
                    unsigned l7 = c->fh[1] & 0x7f;
                    c->fh_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) +
                                 ((c->fh[1] & 0x80) ? 4 : 0);
                }
            }
            if (c->fh_len < c->fh_need)
                break;
            uint16_t err = parse_header(c);
            if (err) {
                if (o > seg)
                    queue_write(c, rb, NULL, (char *)seg, (size_t)(o - seg));
                seg = o;
                send_close(c, err);
                break;
            }
            if (c->mode == FM_STREAM) {
                uint8_t h[10];
                /* RSV bits and opcode are echoed as received. */
                size_t hl = put_header(h, c->fh[0], c->remaining);
                if (o + hl > p) { /* cannot happen, see above; stay safe */
                    if (o > seg)
                        queue_write(c, rb, NULL, (char *)seg, (size_t)(o - seg));
                    queue_copy(c, h, hl);
                    seg = o;
                } else {
                    memcpy(o, h, hl);
                    o += hl;
                }
            }
        } else {
            size_t k = (size_t)(end - p);
            if (k > c->remaining)
                k = (size_t)c->remaining;
            if (c->mode == FM_STREAM) {
                if (c->masked)
                    unmask_copy(o, p, k, c->mask, c->mpos);
                else if (o != p)
                    memmove(o, p, k);
                o += k;
            } else if (c->mode == FM_BUFFER) {
                if (c->masked)
                    unmask_copy(c->small + c->small_len, p, k, c->mask, c->mpos);
                else
                    memcpy(c->small + c->small_len, p, k);
                c->small_len += (unsigned)k;
            }
            c->mpos = (unsigned)((c->mpos + k) & 3);
            c->remaining -= k;
            p += k;
        }
        if (c->fh_len == c->fh_need && c->remaining == 0) {
            if (c->mode == FM_BUFFER) {
                if (o > seg)
                    queue_write(c, rb, NULL, (char *)seg, (size_t)(o - seg));
                seg = o;
                handle_small(c);
            }
            c->fh_len = 0;
            c->fh_need = 2;
        }
    }
    if (o > seg)
        queue_write(c, rb, NULL, (char *)seg, (size_t)(o - seg));
}

/* ---- connections ------------------------------------------------------ */

static void on_conn_closed(uv_handle_t *h) {
    conn_t *c = h->data;
    demo_conn_gone(c->w->room, &c->dc);
    free(c->head);
    free(c->hdrs_json);
    free(c->req_line);
    free(c->chat_user);
    free(c);
}

static void conn_close(conn_t *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    (void)hint;
    conn_t *c = h->data;
    if (c->phase == PH_HEAD) {
        *buf = uv_buf_init(c->head + c->head_len, (unsigned)(BUF_MAX - c->head_len));
        return;
    }
    rbuf_t *rb = rbuf_get(c->w);
    *buf = rb ? uv_buf_init(rb->mem + HEADROOM, RBUF_SIZE) : uv_buf_init(NULL, 0);
}

/* The head of the next request, if it is all there: true for a plain
 * request to serve (c->req, c->req_len set), false when more bytes are
 * needed or the connection left PH_HEAD (upgraded, or refused). */
static bool next_head(conn_t *c) {
    /* RFC 9112 §2.2: empty lines before a request line are ignored. */
    size_t skip = 0;
    while (skip + 2 <= c->head_len && c->head[skip] == '\r' && c->head[skip + 1] == '\n')
        skip += 2;
    if (skip > 0) {
        memmove(c->head, c->head + skip, c->head_len - skip);
        c->head_len -= skip;
    }
    char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
    if (end == NULL || end + 4 - c->head > HEAD_MAX) {
        if (end != NULL || c->head_len >= HEAD_MAX)
            send_http(c, "431 Request Header Fields Too Large", "", "too large\n");
        return false;
    }
    size_t used = (size_t)(end + 4 - c->head);
    size_t rest = c->head_len - used;
    end[2] = '\0'; /* keep the last header's CRLF out of the strings */
    if (handle_head(c, used))
        return true;
    if (c->phase == PH_WS && rest > 0) {
        /* Early frames that arrived with the request (RFC 6455 §4.1 lets
         * the client send as soon as it has the 101; a pipelining client
         * may not wait). */
        rbuf_t *early = rbuf_get(c->w);
        if (early != NULL) {
            memcpy(early->mem + HEADROOM, c->head + used, rest);
            feed(c, early, (uint8_t *)early->mem + HEADROOM, rest);
            rbuf_unref(early);
        }
    }
    return false;
}

/* Serves the requests in c->head one after the other, until one is not
 * complete yet or is held (a poll, a stream) or the connection leaves
 * PH_HEAD. */
static void http_input(conn_t *c) {
    if (c->in_input)
        return; /* conn_done() inside demo_request(): the loop below goes on */
    c->in_input = true;
    while (c->phase == PH_HEAD && c->dc.kind == DEMO_NONE &&
           !uv_is_closing((uv_handle_t *)&c->tcp)) {
        if (c->req_len == 0 && !next_head(c))
            break;
        if (c->head_len < c->req_len)
            break; /* the body is still coming */
        demo_request(c->w->room, &c->dc, &c->req);
        if (c->dc.kind == DEMO_SSE) {
            /* What a stream's client sends next is read and dropped. */
            c->head_len = c->req_len = 0;
        }
        if (c->req_len != 0)
            break; /* held, or closing */
    }
    c->in_input = false;
    if (c->phase != PH_HEAD) {
        free(c->head);
        c->head = NULL;
        return;
    }
    /* A full buffer behind a held request waits: reading resumes when the
     * request is done. */
    bool full = c->head_len == BUF_MAX;
    if (full != c->full && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        c->full = full;
        if (full)
            uv_read_stop((uv_stream_t *)&c->tcp);
        else if (!c->paused)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

/* ---- what demo_http.c calls (demo_http.h) ------------------------------ */

int conn_send(conn_t *c, const void *data, size_t len) {
    if (uv_is_closing((uv_handle_t *)&c->tcp) || c->shutdown)
        return UV_EBADF;
    return queue_copy(c, data, len);
}

size_t conn_queued(conn_t *c) {
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

void conn_drop(conn_t *c) {
    conn_close(c);
}

void conn_done(conn_t *c, bool keep_alive) {
    if (!keep_alive) {
        finish(c);
        return;
    }
    memmove(c->head, c->head + c->req_len, c->head_len - c->req_len);
    c->head_len -= c->req_len;
    c->req_len = 0;
    http_input(c); /* the next pipelined request, if any */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn_t *c = s->data;
    rbuf_t *rb = NULL;
    if (c->phase != PH_HEAD && buf->base != NULL)
        rb = (rbuf_t *)(buf->base - HEADROOM - offsetof(rbuf_t, mem));

    if (nread < 0) {
        if (rb)
            rbuf_unref(rb);
        conn_close(c);
        return;
    }
    if (c->phase == PH_HEAD) {
        if (c->dc.kind != DEMO_SSE) {
            c->head_len += (size_t)nread;
            http_input(c);
        }
    } else if (rb != NULL) {
        if (nread > 0 && c->phase == PH_WS)
            feed(c, rb, (uint8_t *)buf->base, (size_t)nread);
        rbuf_unref(rb);
    }
    if (!c->paused && !c->shutdown && !uv_is_closing((uv_handle_t *)&c->tcp) &&
        uv_stream_get_write_queue_size(s) > WQ_HIGH) {
        c->paused = true;
        uv_read_stop(s);
    }
}

static void on_connection(uv_stream_t *server, int status) {
    worker_t *w = server->data;
    if (status < 0)
        return;
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->w = w;
    c->dc.c = c;
    c->head = malloc(BUF_MAX + 1);
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    if (c->head == NULL || uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- process ---------------------------------------------------------- */

static void close_any(uv_handle_t *h, void *arg) {
    worker_t *w = arg;
    if (uv_is_closing(h))
        return;
    /* Connections carry themselves in data; the worker's own handles do not. */
    bool is_conn = h->type == UV_TCP && h != (uv_handle_t *)&w->listener;
    uv_close(h, is_conn ? on_conn_closed : NULL);
}

static void on_stop(uv_async_t *a) {
    worker_t *w = a->data;
    uv_walk(&w->loop, close_any, w);
}

/* The process: every worker; the signal handles carry a pointer to it. */
typedef struct app_s {
    worker_t workers[MAX_THREADS];
    unsigned nworkers;
} app_t;

static void on_signal(uv_signal_t *s, int signum) {
    app_t *app = s->data;
    (void)signum;
    for (unsigned i = 1; i < app->nworkers; i++)
        uv_async_send(&app->workers[i].stop);
    on_stop(&app->workers[0].stop);
}

static void run_worker(void *arg) {
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static int start_worker(worker_t *w, const struct sockaddr *sa, bool reuseport) {
    int rc;
    if ((rc = uv_loop_init(&w->loop)) < 0)
        return rc;
    uv_async_init(&w->loop, &w->stop, on_stop);
    w->stop.data = w;
    uv_tcp_init_ex(&w->loop, &w->listener, sa->sa_family);
    w->listener.data = w;
    if (reuseport) {
        uv_os_fd_t fd;
        int one = 1;
        uv_fileno((uv_handle_t *)&w->listener, &fd);
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
            return uv_translate_sys_error(errno);
    }
    if ((rc = uv_tcp_bind(&w->listener, sa, 0)) < 0)
        return rc;
    return uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
}

static void usage(FILE *f) {
    fprintf(f, "usage: echo_backend --port N [--host 127.0.0.1] [--name NAME] [--threads N]\n"
               "                    [--tick-ms 1000] [--poll-ms 25000]\n"
               "  port 0 picks a free port; prints \"listening HOST:PORT\" when ready.\n"
               "  Echoes every message; \"whoami\" -> NAME (default echo-PORT),\n"
               "  \"headers\" -> JSON of the request headers, \"request\" -> request line.\n"
               "  Plain HTTP: GET / (the demo page), /events (SSE, a tick every\n"
               "  --tick-ms), /poll?since=N (held up to --poll-ms), POST /messages,\n"
               "  /healthz. One chat room per thread.\n");
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *name = NULL;
    long port = -1, threads = 1, tick_ms = 1000, poll_ms = 25000;
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        char *end = NULL;
        if (strcmp(a, "--port") == 0)
            port = strtol(v, &end, 10);
        else if (strcmp(a, "--host") == 0)
            host = v;
        else if (strcmp(a, "--name") == 0)
            name = v;
        else if (strcmp(a, "--threads") == 0)
            threads = strtol(v, &end, 10);
        else if (strcmp(a, "--tick-ms") == 0)
            tick_ms = strtol(v, &end, 10);
        else if (strcmp(a, "--poll-ms") == 0)
            poll_ms = strtol(v, &end, 10);
        else {
            usage(stderr);
            return 2;
        }
        if (end != NULL && (*end != '\0' || end == v)) {
            usage(stderr);
            return 2;
        }
    }
    if (port < 0 || port > 65535 || threads < 1 || threads > MAX_THREADS || tick_ms < 1 ||
        tick_ms > 3600000 || poll_ms < 1 || poll_ms > 3600000) {
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* 10k+ connections need the fds */
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0) {
        fprintf(stderr, "echo_backend: bad host address \"%s\"\n", host);
        return 2;
    }
    static app_t app_storage; /* too big for the stack; main's alone */
    app_t *app = &app_storage;
    worker_t *workers = app->workers;
    unsigned nworkers = app->nworkers = (unsigned)threads;
    int rc = start_worker(&workers[0], (struct sockaddr *)&ss, nworkers > 1);
    if (rc < 0) {
        fprintf(stderr, "echo_backend: cannot listen on %s:%ld: %s\n", host, port,
                uv_strerror(rc));
        return 1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&workers[0].listener, (struct sockaddr *)&bound, &blen);
    int actual = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    if (ss.ss_family == AF_INET6)
        actual = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);

    char defname[32];
    if (name == NULL) {
        snprintf(defname, sizeof(defname), "echo-%d", actual);
        name = defname;
    }
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)actual);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)actual);
    for (unsigned i = 0; i < nworkers; i++) {
        workers[i].name = name;
        if (i > 0 && (rc = start_worker(&workers[i], (struct sockaddr *)&ss, true)) < 0) {
            fprintf(stderr, "echo_backend: cannot listen on %s:%d: %s\n", host, actual,
                    uv_strerror(rc));
            return 1;
        }
        /* The name goes into a header line and the page. */
        workers[i].room =
            demo_room_new(&workers[i].loop, name, (unsigned)tick_ms, (unsigned)poll_ms);
        if (workers[i].room == NULL) {
            fprintf(stderr, "echo_backend: --name must be 1 to 64 printable characters "
                            "without spaces (or out of memory)\n");
            return 2;
        }
    }
    uv_signal_init(&workers[0].loop, &workers[0].sigterm);
    uv_signal_init(&workers[0].loop, &workers[0].sigint);
    workers[0].sigterm.data = workers[0].sigint.data = app;
    uv_signal_start(&workers[0].sigterm, on_signal, SIGTERM);
    uv_signal_start(&workers[0].sigint, on_signal, SIGINT);

    printf("listening %s:%d\n", host, actual);
    fflush(stdout);

    for (unsigned i = 1; i < nworkers; i++)
        uv_thread_create(&workers[i].thread, run_worker, &workers[i]);
    run_worker(&workers[0]);
    for (unsigned i = 1; i < nworkers; i++)
        uv_thread_join(&workers[i].thread);
    for (unsigned i = 0; i < nworkers; i++) {
        uv_loop_close(&workers[i].loop);
        demo_room_free(workers[i].room);
        while (workers[i].free != NULL) {
            rbuf_t *rb = workers[i].free;
            workers[i].free = rb->next;
            free(rb);
        }
    }
    return 0;
}
