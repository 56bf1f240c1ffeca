/*
 * Unit tests of the handshake module: head parsing (whole, byte by byte with
 * the buffer moving between calls, against a PROT_NONE guard page), limits,
 * validation, accept key, response checks and bodies, the upstream head and
 * wsgate's own error responses.
 */
#include <wsgate/handshake.h>

#include <arpa/inet.h>
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#define WS_REQ_HEADERS                                                                             \
    "Host: example.com\r\n"                                                                        \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n"                                                                      \
    "Sec-WebSocket-Key: " RFC_KEY "\r\n"                                                           \
    "Sec-WebSocket-Version: 13\r\n"

#define WS_REQ "GET /chat?room=1 HTTP/1.1\r\n" WS_REQ_HEADERS "\r\n"

/* ---- guard pages ------------------------------------------------------------ */

/* A region whose last byte sits just before a PROT_NONE page: reading or
 * writing one byte too far crashes the test instead of passing silently. */
typedef struct guard_s {
    char *map;
    size_t maplen;
    char *end; /* first byte of the protected page */
} guard_t;

static void guard_init(guard_t *g, size_t cap) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (cap + pg - 1) / pg + 1;

    g->maplen = pages * pg;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(g->map, MAP_FAILED);
    g->end = g->map + (pages - 1) * pg;
    ck_assert_int_eq(mprotect(g->end, pg, PROT_NONE), 0);
}

/* Copies <n> bytes of <s> so that they end at the guard page. */
static char *guard_put(guard_t *g, const char *s, size_t n) {
    char *p = g->end - n;

    memcpy(p, s, n);
    return p;
}

static void guard_free(guard_t *g) {
    munmap(g->map, g->maplen);
}

/* ---- parsing helpers ------------------------------------------------------------ */

typedef struct summary_s {
    int result;
    size_t head_len;
    size_t count;
    size_t off[WSG_HTTP_MAX_HEADERS][4];
    size_t url_off, url_len;
    int version;
} summary_t;

static void summarize(summary_t *s, const wsg_http_head_t *h, const char *buf, int result) {
    memset(s, 0, sizeof(*s));
    s->result = result;
    if (result != WSG_HEAD_COMPLETE)
        return;
    s->head_len = wsg_http_head_len(h);
    s->count = wsg_http_head_count(h);
    for (size_t i = 0; i < s->count; i++) {
        const char *n, *v;
        size_t nl, vl;
        wsg_http_head_at(h, buf, i, &n, &nl, &v, &vl);
        s->off[i][0] = (size_t)(n - buf);
        s->off[i][1] = nl;
        s->off[i][2] = (size_t)(v - buf);
        s->off[i][3] = vl;
    }
    const char *u;
    wsg_http_head_url(h, buf, &u, &s->url_len);
    s->url_off = (size_t)(u - buf);
    s->version = wsg_http_head_version(h);
}

/* Feeds <s> in one call, from a guarded copy. */
static int feed_whole(wsg_http_kind_t kind, const char *s, size_t n, size_t max, summary_t *sum) {
    guard_t g;
    wsg_http_head_t *h = wsg_http_head_new(kind, max);
    char *buf;
    int r;

    ck_assert_ptr_nonnull(h);
    guard_init(&g, n);
    buf = guard_put(&g, s, n);
    r = wsg_http_head_feed(h, buf, n);
    /* Results are sticky. */
    ck_assert_int_eq(wsg_http_head_feed(h, buf, n), r);
    summarize(sum, h, buf, r);
    wsg_http_head_free(h);
    guard_free(&g);
    return r;
}

/* Feeds <s> one byte more per call; the buffer moves before every call (as
 * a realloc may move it) and always ends at the guard page, so a read past
 * <len> crashes. */
static int feed_bytewise(wsg_http_kind_t kind, const char *s, size_t n, size_t max,
                         summary_t *sum) {
    guard_t g;
    wsg_http_head_t *h = wsg_http_head_new(kind, max);
    char *buf = NULL;
    int r = WSG_HEAD_INCOMPLETE;

    ck_assert_ptr_nonnull(h);
    guard_init(&g, n + 1);
    for (size_t i = 1; i <= n && r == WSG_HEAD_INCOMPLETE; i++) {
        buf = guard_put(&g, s, i);
        r = wsg_http_head_feed(h, buf, i);
    }
    summarize(sum, h, buf, r);
    wsg_http_head_free(h);
    guard_free(&g);
    return r;
}

static void assert_same(const summary_t *a, const summary_t *b, const char *label) {
    ck_assert_msg(a->result == b->result, "%s: result %d vs %d", label, a->result, b->result);
    ck_assert_msg(a->head_len == b->head_len, "%s: head_len %zu vs %zu", label, a->head_len,
                  b->head_len);
    ck_assert_msg(a->count == b->count, "%s: count", label);
    ck_assert_msg(memcmp(a->off, b->off, sizeof(a->off)) == 0, "%s: header spans", label);
    ck_assert_msg(a->url_off == b->url_off && a->url_len == b->url_len, "%s: url", label);
    ck_assert_msg(a->version == b->version, "%s: version", label);
}

/* Parses a complete request from a plain (heap) copy kept in *bufp. */
static wsg_http_head_t *parse(wsg_http_kind_t kind, const char *s, char **bufp) {
    size_t n = strlen(s);
    wsg_http_head_t *h = wsg_http_head_new(kind, 65536);

    ck_assert_ptr_nonnull(h);
    *bufp = malloc(n + 1);
    ck_assert_ptr_nonnull(*bufp);
    memcpy(*bufp, s, n + 1);
    ck_assert_msg(wsg_http_head_feed(h, *bufp, n) == WSG_HEAD_COMPLETE, "not complete: %s", s);
    return h;
}

static void assert_header(const wsg_http_head_t *h, const char *buf, size_t i, const char *name,
                          const char *value) {
    const char *n, *v;
    size_t nl, vl;

    wsg_http_head_at(h, buf, i, &n, &nl, &v, &vl);
    ck_assert_msg(nl == strlen(name) && memcmp(n, name, nl) == 0, "header %zu name %.*s", i,
                  (int)nl, n);
    ck_assert_msg(vl == strlen(value) && memcmp(v, value, vl) == 0, "header %zu value %.*s", i,
                  (int)vl, v);
}

/* ---- TCase parse ------------------------------------------------------------------ */

START_TEST(test_handshake_parses_request_fields) {
    char *buf;
    wsg_http_head_t *h = parse(WSG_HTTP_REQUEST, WS_REQ "\x81\x85", &buf);
    const char *url, *v;
    size_t urllen, vl;

    ck_assert_str_eq(wsg_http_head_method(h), "GET");
    wsg_http_head_url(h, buf, &url, &urllen);
    ck_assert_uint_eq(urllen, strlen("/chat?room=1"));
    ck_assert(memcmp(url, "/chat?room=1", urllen) == 0);
    ck_assert_int_eq(wsg_http_head_version(h), 11);
    ck_assert_uint_eq(wsg_http_head_len(h), strlen(WS_REQ));
    ck_assert_uint_eq(wsg_http_head_count(h), 5);
    assert_header(h, buf, 0, "Host", "example.com");
    assert_header(h, buf, 3, "Sec-WebSocket-Key", RFC_KEY);
    v = wsg_http_head_get(h, buf, "sec-websocket-version", &vl);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(vl, 2);
    ck_assert(memcmp(v, "13", 2) == 0);
    ck_assert_ptr_null(wsg_http_head_get(h, buf, "Origin", &vl));
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

START_TEST(test_handshake_get_trims_and_takes_first) {
    char *buf;
    wsg_http_head_t *h = parse(WSG_HTTP_REQUEST,
                               "GET / HTTP/1.1\r\nHost: a\r\nX-A:   one two \t\r\nx-a: second\r\n"
                               "Empty:\r\nBlank:   \r\n\r\n",
                               &buf);
    const char *v;
    size_t vl;

    v = wsg_http_head_get(h, buf, "X-A", &vl);
    ck_assert_uint_eq(vl, 7);
    ck_assert(memcmp(v, "one two", 7) == 0);
    v = wsg_http_head_get(h, buf, "Empty", &vl);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(vl, 0);
    v = wsg_http_head_get(h, buf, "Blank", &vl);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(vl, 0);
    ck_assert_uint_eq(wsg_http_head_count(h), 5);
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

static const struct {
    const char *label;
    const char *input;
    int result;
    size_t head_len; /* 0: strlen(input) when complete */
} heads[] = {
    {"websocket upgrade", WS_REQ, WSG_HEAD_COMPLETE, 0},
    {"upgrade with early frames",
     WS_REQ "\x81\x83\x01\x02\x03\x04"
            "abc",
     WSG_HEAD_COMPLETE, sizeof(WS_REQ) - 1},
    {"no upgrade, then pipelined request",
     "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", WSG_HEAD_COMPLETE, 27},
    {"no upgrade, bytes after", "GET / HTTP/1.1\r\nHost: a\r\n\r\nxyz", WSG_HEAD_COMPLETE, 27},
    {"chunked request: head only",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n", WSG_HEAD_COMPLETE,
     56},
    {"content-length request: head only",
     "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", WSG_HEAD_COMPLETE, 46},
    {"no headers at all", "GET / HTTP/1.1\r\n\r\n", WSG_HEAD_COMPLETE, 0},
    {"leading empty line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", WSG_HEAD_COMPLETE, 0},
    {"absolute target", "GET http://a.example/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", WSG_HEAD_COMPLETE,
     0},
    {"obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", WSG_HEAD_COMPLETE,
     0},
    {"incomplete", "GET / HTTP/1.1\r\nHost: a\r\n", WSG_HEAD_INCOMPLETE, 0},
    {"incomplete request line", "GET /abc HT", WSG_HEAD_INCOMPLETE, 0},
    {"unknown method", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"bad version", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"no version (HTTP/0.9)", "GET /\r\nHost: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", WSG_HEAD_MALFORMED, 0},
    {"bare LF after request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"bare LF after header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"bare LF at end", "GET / HTTP/1.1\r\nHost: a\r\n\n", WSG_HEAD_MALFORMED, 0},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"obs-fold of empty value", "GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\tc\r\n\r\n",
     WSG_HEAD_MALFORMED, 0},
    {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"space in name", "GET / HTTP/1.1\r\nHo st: a\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"control char in value", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"CR without LF", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", WSG_HEAD_MALFORMED, 0},
    {"final CR followed by another byte", "GET / HTTP/1.1\r\nHost: a\r\n\r,", WSG_HEAD_MALFORMED,
     0},
    {"final CR, another byte, then LF", "GET / HTTP/1.1\r\nHost: a\r\n\r,\n", WSG_HEAD_MALFORMED,
     0},
    {"two Content-Length", "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
     WSG_HEAD_MALFORMED, 0},
    {"Content-Length and chunked",
     "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     WSG_HEAD_MALFORMED, 0},
    {"bad Content-Length", "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", WSG_HEAD_MALFORMED, 0},
};

START_TEST(test_handshake_head_table_whole_and_bytewise) {
    const char *in = heads[_i].input;
    size_t n = strlen(in);
    summary_t whole, bytes;
    int r;

    /* The early-frame inputs contain no NUL, so strlen is their length. */
    r = feed_whole(WSG_HTTP_REQUEST, in, n, 8192, &whole);
    ck_assert_msg(r == heads[_i].result, "%s: result %d, expected %d", heads[_i].label, r,
                  heads[_i].result);
    if (r == WSG_HEAD_COMPLETE) {
        size_t want = heads[_i].head_len != 0 ? heads[_i].head_len : n;
        ck_assert_msg(whole.head_len == want, "%s: head_len %zu, expected %zu", heads[_i].label,
                      whole.head_len, want);
    }
    feed_bytewise(WSG_HTTP_REQUEST, in, n, 8192, &bytes);
    assert_same(&whole, &bytes, heads[_i].label);
}
END_TEST

START_TEST(test_handshake_head_leaves_early_frames) {
    /* A masked text frame "Hi" pipelined with the request (SPEC §3.7). */
    static const char frame[] = "\x81\x82\x11\x22\x33\x44\x59\x4b";
    char in[512];
    size_t n = (size_t)snprintf(in, sizeof(in), "%s", WS_REQ);
    summary_t whole, bytes;

    memcpy(in + n, frame, sizeof(frame) - 1);
    n += sizeof(frame) - 1;
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, in, n, 8192, &whole), WSG_HEAD_COMPLETE);
    ck_assert_uint_eq(whole.head_len, strlen(WS_REQ));
    ck_assert_int_eq(feed_bytewise(WSG_HTTP_REQUEST, in, n, 8192, &bytes), WSG_HEAD_COMPLETE);
    assert_same(&whole, &bytes, "early frames");

    /* The frame bytes are where head_len says, untouched. */
    ck_assert(memcmp(in + whole.head_len, frame, sizeof(frame) - 1) == 0);
}
END_TEST

START_TEST(test_handshake_head_size_limit) {
    const char *in = WS_REQ;
    size_t n = strlen(in);
    summary_t s, b;
    char more[1024];

    /* Exactly max_bytes: fine, whole or byte by byte. */
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, in, n, n, &s), WSG_HEAD_COMPLETE);
    ck_assert_uint_eq(s.head_len, n);
    ck_assert_int_eq(feed_bytewise(WSG_HTTP_REQUEST, in, n, n, &b), WSG_HEAD_COMPLETE);
    assert_same(&s, &b, "exact max");

    /* One byte over: 431, whole or byte by byte. */
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, in, n, n - 1, &s), WSG_HEAD_TOO_LARGE);
    ck_assert_int_eq(feed_bytewise(WSG_HTTP_REQUEST, in, n, n - 1, &s), WSG_HEAD_TOO_LARGE);

    /* A head at exactly max_bytes followed by early frames is not too large:
     * only the head counts. */
    snprintf(more, sizeof(more), "%s\x81\x80\x01\x02\x03\x04", in);
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, more, strlen(more), n, &s), WSG_HEAD_COMPLETE);
    ck_assert_uint_eq(s.head_len, n);

    /* A partial head shorter than the limit just waits... */
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, in, n - 3, n, &s), WSG_HEAD_INCOMPLETE);
    /* ...but a partial head that already fills the limit cannot fit. */
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, in, n - 1, n - 1, &s), WSG_HEAD_TOO_LARGE);
}
END_TEST

static void build_many_headers(char *out, size_t cap, int nheaders) {
    size_t len = (size_t)snprintf(out, cap, "GET / HTTP/1.1\r\n");

    for (int i = 0; i < nheaders; i++)
        len += (size_t)snprintf(out + len, cap - len, "X-H%d: %d\r\n", i, i);
    snprintf(out + len, cap - len, "\r\n");
}

START_TEST(test_handshake_too_many_headers) {
    static char in[8192];
    summary_t s, b;

    build_many_headers(in, sizeof(in), WSG_HTTP_MAX_HEADERS);
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, in, strlen(in), 65536, &s), WSG_HEAD_COMPLETE);
    ck_assert_uint_eq(s.count, WSG_HTTP_MAX_HEADERS);

    build_many_headers(in, sizeof(in), WSG_HTTP_MAX_HEADERS + 1);
    ck_assert_int_eq(feed_whole(WSG_HTTP_REQUEST, in, strlen(in), 65536, &s), WSG_HEAD_TOO_LARGE);
    ck_assert_int_eq(feed_bytewise(WSG_HTTP_REQUEST, in, strlen(in), 65536, &b),
                     WSG_HEAD_TOO_LARGE);
}
END_TEST

START_TEST(test_handshake_results_are_sticky) {
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_REQUEST, 8192);
    const char *bad = "FOO / HTTP/1.1\r\n\r\n";
    char buf[64];

    strcpy(buf, bad);
    ck_assert_int_eq(wsg_http_head_feed(h, buf, strlen(buf)), WSG_HEAD_MALFORMED);
    /* Even with good bytes the parser stays failed. */
    strcpy(buf, "GET / HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(wsg_http_head_feed(h, buf, strlen(buf)), WSG_HEAD_MALFORMED);
    wsg_http_head_free(h);
}
END_TEST

/* ---- TCase validate -------------------------------------------------------------- */

#define REQ_LINE "GET /ws HTTP/1.1\r\n"
#define H_HOST "Host: example.com\r\n"
#define H_UPGRADE "Upgrade: websocket\r\n"
#define H_CONN "Connection: Upgrade\r\n"
#define H_KEY "Sec-WebSocket-Key: " RFC_KEY "\r\n"
#define H_VER "Sec-WebSocket-Version: 13\r\n"

static const struct {
    const char *label;
    const char *input;
    int status;
    const char *reason;
} validations[] = {
    {"valid", REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY H_VER "\r\n", 0, "ok"},
    {"valid, odd case and lists",
     REQ_LINE "host: x\r\nupgrade: foo/2, WebSocket\r\nconnection: keep-alive, UPGRADE\r\n"
              "sec-websocket-key: " RFC_KEY "\r\nsec-websocket-version: 13\r\n\r\n",
     0, "ok"},
    {"valid, two Connection headers",
     REQ_LINE H_HOST H_UPGRADE "Connection: keep-alive\r\nConnection: upgrade\r\n" H_KEY H_VER
                               "\r\n",
     0, "ok"},
    {"valid, Content-Length: 0",
     REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY H_VER "Content-Length: 0\r\n\r\n", 0, "ok"},
    {"valid, protocol and extensions",
     REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY H_VER
     "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
     0, "ok"},
    {"no Upgrade", REQ_LINE H_HOST H_CONN H_KEY H_VER "\r\n", 426, "no Upgrade header"},
    {"plain GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 426, "no Upgrade header"},
    {"Upgrade h2c", REQ_LINE H_HOST "Upgrade: h2c\r\n" H_CONN H_KEY H_VER "\r\n", 400,
     "Upgrade is not websocket"},
    {"Upgrade websockets", REQ_LINE H_HOST "Upgrade: websockets\r\n" H_CONN H_KEY H_VER "\r\n", 400,
     "Upgrade is not websocket"},
    {"POST", "POST /ws HTTP/1.1\r\n" H_HOST H_UPGRADE H_CONN H_KEY H_VER "\r\n", 400,
     "method is not GET"},
    {"HTTP/1.0", "GET /ws HTTP/1.0\r\n" H_HOST H_UPGRADE H_CONN H_KEY H_VER "\r\n", 400,
     "not HTTP/1.1"},
    {"no Connection", REQ_LINE H_HOST H_UPGRADE H_KEY H_VER "\r\n", 400,
     "Connection lacks upgrade"},
    {"Connection keep-alive",
     REQ_LINE H_HOST H_UPGRADE "Connection: keep-alive\r\n" H_KEY H_VER "\r\n", 400,
     "Connection lacks upgrade"},
    {"Connection upgrades", REQ_LINE H_HOST H_UPGRADE "Connection: upgrades\r\n" H_KEY H_VER "\r\n",
     400, "Connection lacks upgrade"},
    {"no key", REQ_LINE H_HOST H_UPGRADE H_CONN H_VER "\r\n", 400, "missing Sec-WebSocket-Key"},
    {"two keys", REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY H_KEY H_VER "\r\n", 400,
     "duplicate Sec-WebSocket-Key"},
    {"key without padding",
     REQ_LINE H_HOST H_UPGRADE H_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n" H_VER "\r\n",
     400, "invalid Sec-WebSocket-Key"},
    {"key of 15 bytes",
     REQ_LINE H_HOST H_UPGRADE H_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ===\r\n" H_VER
                                      "\r\n",
     400, "invalid Sec-WebSocket-Key"},
    {"key of 17 bytes",
     REQ_LINE H_HOST H_UPGRADE H_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAB\r\n" H_VER
                                      "\r\n",
     400, "invalid Sec-WebSocket-Key"},
    {"key with bad char",
     REQ_LINE H_HOST H_UPGRADE H_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n" H_VER
                                      "\r\n",
     400, "invalid Sec-WebSocket-Key"},
    {"empty key", REQ_LINE H_HOST H_UPGRADE H_CONN "Sec-WebSocket-Key:\r\n" H_VER "\r\n", 400,
     "invalid Sec-WebSocket-Key"},
    {"no version", REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY "\r\n", 426,
     "missing Sec-WebSocket-Version"},
    {"version 8", REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY "Sec-WebSocket-Version: 8\r\n\r\n", 426,
     "unsupported Sec-WebSocket-Version"},
    {"version 13, 8", REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY "Sec-WebSocket-Version: 13, 8\r\n\r\n",
     426, "unsupported Sec-WebSocket-Version"},
    {"Content-Length body",
     REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY H_VER "Content-Length: 4\r\n\r\n", 400,
     "request has a body"},
    {"chunked body",
     REQ_LINE H_HOST H_UPGRADE H_CONN H_KEY H_VER "Transfer-Encoding: chunked\r\n\r\n", 400,
     "request has a body"},
    {"no Host", REQ_LINE H_UPGRADE H_CONN H_KEY H_VER "\r\n", 400, "missing Host"},
    {"two Hosts", REQ_LINE H_HOST H_HOST H_UPGRADE H_CONN H_KEY H_VER "\r\n", 400,
     "duplicate Host"},
};

START_TEST(test_handshake_validate_table) {
    char *buf;
    wsg_http_head_t *h = parse(WSG_HTTP_REQUEST, validations[_i].input, &buf);
    const char *reason = NULL;
    int status = wsg_handshake_validate(h, buf, &reason);

    ck_assert_msg(status == validations[_i].status, "%s: status %d, expected %d (%s)",
                  validations[_i].label, status, validations[_i].status,
                  reason ? reason : "(null)");
    ck_assert_ptr_nonnull(reason);
    ck_assert_msg(strcmp(reason, validations[_i].reason) == 0, "%s: reason \"%s\"",
                  validations[_i].label, reason);
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

START_TEST(test_handshake_validate_rejects_incomplete_head) {
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_REQUEST, 8192);
    const char *buf = "GET / HTTP/1.1\r\n";
    const char *reason = NULL;

    ck_assert_int_eq(wsg_http_head_feed(h, buf, strlen(buf)), WSG_HEAD_INCOMPLETE);
    ck_assert_int_eq(wsg_handshake_validate(h, buf, &reason), 400);
    ck_assert_ptr_nonnull(reason);
    wsg_http_head_free(h);
}
END_TEST

/* ---- TCase accept ------------------------------------------------------------------ */

START_TEST(test_handshake_accept_rfc6455_sample) {
    char out[WSG_WS_ACCEPT_LEN + 1];

    /* RFC 6455 §1.3 (SHA-1 0xb3 0x7a 0x4f 0x2c 0xc0 0x62 0x4f 0x16...). */
    wsg_ws_accept(RFC_KEY, strlen(RFC_KEY), out);
    ck_assert_str_eq(out, RFC_ACCEPT);
    /* The key is used as sent: another key, another accept. */
    wsg_ws_accept("x3JJHMbDL1EzLkh9GBhXDw==", 24, out);
    ck_assert_str_eq(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}
END_TEST

/* ---- TCase response ----------------------------------------------------------------- */

#define RESP_101                                                                                   \
    "HTTP/1.1 101 Switching Protocols\r\n"                                                         \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n"

static const struct {
    const char *label;
    const char *input;
    int expect;
} responses[] = {
    {"good accept", RESP_101 "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n", WSG_RESP_UPGRADE},
    {"good accept, spaces", RESP_101 "Sec-WebSocket-Accept:   " RFC_ACCEPT "  \r\n\r\n",
     WSG_RESP_UPGRADE},
    {"good accept, odd case",
     "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: upgrade\r\n"
     "sec-websocket-accept: " RFC_ACCEPT "\r\n\r\n",
     WSG_RESP_UPGRADE},
    {"wrong accept", RESP_101 "Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n",
     WSG_RESP_BAD_ACCEPT},
    {"accept of other case", RESP_101 "Sec-WebSocket-Accept: S3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
     WSG_RESP_BAD_ACCEPT},
    {"accept truncated", RESP_101 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n",
     WSG_RESP_BAD_ACCEPT},
    {"missing accept", RESP_101 "\r\n", WSG_RESP_BAD_ACCEPT},
    {"101 without Upgrade",
     "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n",
     WSG_RESP_BAD_ACCEPT},
    {"101 upgrading to h2c",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n",
     WSG_RESP_BAD_ACCEPT},
    {"101 without Connection",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
     "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n",
     WSG_RESP_BAD_ACCEPT},
    {"403", "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", WSG_RESP_OTHER},
    {"200 with accept", "HTTP/1.1 200 OK\r\nSec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n",
     WSG_RESP_OTHER},
};

START_TEST(test_handshake_check_response_table) {
    char *buf;
    wsg_http_head_t *h = parse(WSG_HTTP_RESPONSE, responses[_i].input, &buf);
    char accept[WSG_WS_ACCEPT_LEN + 1];

    wsg_ws_accept(RFC_KEY, strlen(RFC_KEY), accept);
    ck_assert_msg(wsg_handshake_check_response(h, buf, accept) == responses[_i].expect,
                  "%s: got %d", responses[_i].label, wsg_handshake_check_response(h, buf, accept));
    ck_assert_str_eq(wsg_http_head_method(h), "");
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

START_TEST(test_handshake_response_101_leaves_frames) {
    const char *in = RESP_101 "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n\x81\x02hi";
    summary_t whole, bytes;
    size_t head = strlen(in) - 4;

    ck_assert_int_eq(feed_whole(WSG_HTTP_RESPONSE, in, strlen(in), 8192, &whole),
                     WSG_HEAD_COMPLETE);
    ck_assert_uint_eq(whole.head_len, head);
    ck_assert_int_eq(feed_bytewise(WSG_HTTP_RESPONSE, in, strlen(in), 8192, &bytes),
                     WSG_HEAD_COMPLETE);
    assert_same(&whole, &bytes, "101 + frame");
}
END_TEST

START_TEST(test_handshake_response_status_and_malformed) {
    char *buf;
    wsg_http_head_t *h =
        parse(WSG_HTTP_RESPONSE, "HTTP/1.1 503 Busy\r\nRetry-After: 1\r\n\r\n", &buf);
    summary_t s;

    ck_assert_int_eq(wsg_http_head_status(h), 503);
    ck_assert_int_eq(wsg_http_head_version(h), 11);
    wsg_http_head_free(h);
    free(buf);

    ck_assert_int_eq(feed_whole(WSG_HTTP_RESPONSE, "HTTP/1.1 abc\r\n\r\n", 16, 8192, &s),
                     WSG_HEAD_MALFORMED);
    ck_assert_int_eq(feed_whole(WSG_HTTP_RESPONSE, "SSH-2.0-OpenSSH\r\n", 17, 8192, &s),
                     WSG_HEAD_MALFORMED);
    ck_assert_int_eq(feed_whole(WSG_HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nX: a\n\r\n", 24, 8192, &s),
                     WSG_HEAD_MALFORMED);
    ck_assert_int_eq(feed_whole(WSG_HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nX: a\r\n", 23, 16, &s),
                     WSG_HEAD_TOO_LARGE);
}
END_TEST

/* Parses the head of <in> (a response), then feeds the rest in pieces of
 * <step> bytes, and returns at which byte offset of <in> the body
 * completed (0 if it did not). */
static size_t body_completes_at(const char *in, size_t n, size_t step) {
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);
    guard_t g;
    size_t at = 0;

    guard_init(&g, n);
    /* Only the head is given to the head parser, as a caller that has just
     * read it would. */
    const char *end = strstr(in, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    size_t head = (size_t)(end - in) + 4;
    char *buf = guard_put(&g, in, head);
    ck_assert_int_eq(wsg_http_head_feed(h, buf, head), WSG_HEAD_COMPLETE);
    ck_assert_uint_eq(wsg_http_head_len(h), head);
    if (wsg_http_body_complete(h)) {
        at = head;
        goto out;
    }
    for (size_t off = head; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        char *piece = guard_put(&g, in + off, k);
        int r = wsg_http_body_feed(h, piece, k);
        ck_assert_int_ge(r, 0);
        if (r == 1) {
            ck_assert(wsg_http_body_complete(h));
            at = off + k;
            break;
        }
        ck_assert(!wsg_http_body_complete(h));
    }
out:
    wsg_http_head_free(h);
    guard_free(&g);
    return at;
}

START_TEST(test_handshake_body_content_length) {
    const char *in = "HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nforbidden\n";
    size_t n = strlen(in);

    ck_assert_uint_eq(body_completes_at(in, n, 1), n);
    ck_assert_uint_eq(body_completes_at(in, n, 3), n);
    ck_assert_uint_eq(body_completes_at(in, n, 100), n);
}
END_TEST

START_TEST(test_handshake_body_chunked) {
    const char *in = "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    size_t n = strlen(in);

    /* Complete on the very last byte, not before. */
    ck_assert_uint_eq(body_completes_at(in, n, 1), n);
    ck_assert_uint_eq(body_completes_at(in, n, 7), n);
    ck_assert_uint_eq(body_completes_at(in, n, n), n);
}
END_TEST

START_TEST(test_handshake_body_until_eof) {
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);

    ck_assert_int_eq(wsg_http_head_feed(h, head, strlen(head)), WSG_HEAD_COMPLETE);
    ck_assert(!wsg_http_body_complete(h));
    ck_assert_int_eq(wsg_http_body_feed(h, "some ", 5), 0);
    ck_assert_int_eq(wsg_http_body_feed(h, "text", 4), 0);
    ck_assert_int_eq(wsg_http_body_feed(h, NULL, 0), 1);
    ck_assert(wsg_http_body_complete(h));
    ck_assert_int_eq(wsg_http_body_feed(h, NULL, 0), 1);
    wsg_http_head_free(h);
}
END_TEST

/* SSE heartbeat support: after every prefix of a chunked event stream, fed
 * whole or byte by byte, "a comment may go here" holds exactly at chunk
 * boundaries whose decoded body ends with a blank line; tracking changes
 * neither where the message ends nor what is left after it. */
static bool expect_event_end(const char *body, size_t k, const size_t *edges, size_t nedges) {
    bool edge = false;
    for (size_t i = 0; i < nedges; i++)
        edge |= edges[i] == k;
    if (!edge)
        return false;
    /* Decode the chunks up to k and look at the tail. */
    char dec[256];
    size_t d = 0, i = 0;
    while (i < k) {
        size_t sz = strtoul(body + i, NULL, 16);
        i = (size_t)(strstr(body + i, "\r\n") - body) + 2;
        memcpy(dec + d, body + i, sz);
        d += sz;
        i += sz + 2;
    }
    if (d == 0)
        return true;
    size_t e = dec[d - 1] == '\n' && d >= 2 && dec[d - 2] == '\r' ? d - 2 : d - 1;
    if (dec[d - 1] != '\n' && dec[d - 1] != '\r')
        return false;
    return e > 0 && (dec[e - 1] == '\n' || dec[e - 1] == '\r');
}

START_TEST(test_handshake_body_sse_event_ends_chunked) {
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    /* One event; an event cut in two chunks; CRLF, CR and LF lines. */
    static const char *const chunks[] = {"data: a\n\n", "data: b", "\n\n",
                                         "id: 1\r\n\r\ndata: c\r\r: x\n"};
    char body[512];
    size_t n = 0, edges[8], nedges = 0;
    edges[nedges++] = 0;
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        n += (size_t)snprintf(body + n, sizeof(body) - n, "%zx\r\n%s\r\n", strlen(chunks[i]),
                              chunks[i]);
        edges[nedges++] = n;
    }
    size_t msg_end = n + 5;
    n += (size_t)snprintf(body + n, sizeof(body) - n, "0\r\n\r\nGET /next");
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        for (size_t k = 0; k < msg_end; k++) {
            wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);
            size_t used;
            ck_assert_int_eq(wsg_http_head_feed(h, head, strlen(head)), WSG_HEAD_COMPLETE);
            wsg_http_body_track(h);
            ck_assert(wsg_http_body_at_event_end(h));
            if (bytewise) {
                for (size_t i = 0; i < k; i++) {
                    ck_assert_int_eq(wsg_http_body_feed_n(h, body + i, 1, &used), 0);
                    ck_assert_uint_eq(used, 1);
                    ck_assert_msg(wsg_http_body_at_event_end(h) ==
                                      expect_event_end(body, i + 1, edges, nedges),
                                  "byte by byte, after %zu bytes", i + 1);
                }
            } else if (k > 0) {
                ck_assert_int_eq(wsg_http_body_feed_n(h, body, k, &used), 0);
                ck_assert_uint_eq(used, k);
            }
            ck_assert_msg(wsg_http_body_at_event_end(h) == expect_event_end(body, k, edges, nedges),
                          "after %zu bytes", k);
            ck_assert_int_eq(wsg_http_body_feed_n(h, body + k, n - k, &used), 1);
            ck_assert_uint_eq(used, msg_end - k);
            ck_assert(!wsg_http_body_at_event_end(h)); /* the message is over */
            wsg_http_head_free(h);
        }
    }
}
END_TEST

START_TEST(test_handshake_body_sse_event_ends_until_eof) {
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
    const char *body = "data: x\n\ndata: y\r\n\r\n: c\r\rretry: 5\n";
    /* prefixes after which a blank line ends what came */
    const size_t ends[] = {0, 9, 19, 20, 25}; /* 19: \\r\\n then a lone \\r */
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);
    size_t used;

    ck_assert_int_eq(wsg_http_head_feed(h, head, strlen(head)), WSG_HEAD_COMPLETE);
    wsg_http_body_track(h);
    for (size_t k = 0; k <= strlen(body); k++) {
        bool want = false;
        for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
            want |= ends[i] == k;
        ck_assert_msg(wsg_http_body_at_event_end(h) == want, "after %zu bytes", k);
        if (body[k] != '\0')
            ck_assert_int_eq(wsg_http_body_feed_n(h, body + k, 1, &used), 0);
    }
    ck_assert_int_eq(wsg_http_body_feed(h, NULL, 0), 1);
    wsg_http_head_free(h);
}
END_TEST

START_TEST(test_handshake_body_truncated_by_eof) {
    const char *head = "HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\n";
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);

    ck_assert_int_eq(wsg_http_head_feed(h, head, strlen(head)), WSG_HEAD_COMPLETE);
    ck_assert_int_eq(wsg_http_body_feed(h, "forb", 4), 0);
    ck_assert_int_eq(wsg_http_body_feed(h, NULL, 0), -1);
    ck_assert(!wsg_http_body_complete(h));
    wsg_http_head_free(h);
}
END_TEST

START_TEST(test_handshake_body_empty_feed_is_not_eof) {
    /* A caller may pass the (empty) rest of the buffer right after the head:
     * that must not be taken for EOF. */
    const char *in = "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n";
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);
    size_t head;

    ck_assert_int_eq(wsg_http_head_feed(h, in, strlen(in)), WSG_HEAD_COMPLETE);
    head = wsg_http_head_len(h);
    ck_assert_int_eq(wsg_http_body_feed(h, in + head, 0), 0);
    ck_assert_int_eq(wsg_http_body_feed(h, "n", 1), 0);
    ck_assert_int_eq(wsg_http_body_feed(h, "o", 0), 0);
    ck_assert_int_eq(wsg_http_body_feed(h, "o", 1), 1);
    wsg_http_head_free(h);

    /* Without a body, the empty feed already reports the end. */
    in = "HTTP/1.1 204 No Content\r\n\r\n";
    h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);
    ck_assert_int_eq(wsg_http_head_feed(h, in, strlen(in)), WSG_HEAD_COMPLETE);
    ck_assert_int_eq(wsg_http_body_feed(h, in + strlen(in), 0), 1);
    wsg_http_head_free(h);
}
END_TEST

START_TEST(test_handshake_body_malformed_chunk) {
    const char *head = "HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n";
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);

    ck_assert_int_eq(wsg_http_head_feed(h, head, strlen(head)), WSG_HEAD_COMPLETE);
    ck_assert_int_eq(wsg_http_body_feed(h, "zz\r\n", 4), -1);
    ck_assert_int_eq(wsg_http_body_feed(h, "0\r\n\r\n", 5), -1);
    wsg_http_head_free(h);
}
END_TEST

START_TEST(test_handshake_body_none) {
    static const char *const none[] = {
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        RESP_101 "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
    };

    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        size_t n = strlen(none[i]);
        ck_assert_msg(body_completes_at(none[i], n, 1) == n, "%s", none[i]);
    }
}
END_TEST

START_TEST(test_handshake_body_after_interim_1xx) {
    /* 103 Early Hints, then the real answer: relayed as one. */
    const char *in = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                     "HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n";
    size_t n = strlen(in);

    ck_assert_uint_eq(body_completes_at(in, n, 1), n);
    ck_assert_uint_eq(body_completes_at(in, n, n), n);
}
END_TEST

/* ---- TCase upstream --------------------------------------------------------------- */

static const wsg_forward_info_t fwd = {.client_ip = "192.0.2.7", .proto = "https"};

START_TEST(test_handshake_upstream_adds_forwarding_headers) {
    char *buf;
    wsg_http_head_t *h =
        parse(WSG_HTTP_REQUEST,
              "GET /chat?room=1 HTTP/1.1\r\n"
              "Host: example.com:8080\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Cookie: a=1; b=2\r\n"
              "Sec-WebSocket-Key: " RFC_KEY "\r\n"
              "Sec-WebSocket-Protocol: chat, superchat\r\n"
              "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
              "Sec-WebSocket-Version: 13\r\n"
              "\r\n",
              &buf);
    const char *want = "GET /chat?room=1 HTTP/1.1\r\n"
                       "Host: example.com:8080\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Cookie: a=1; b=2\r\n"
                       "Sec-WebSocket-Key: " RFC_KEY "\r\n"
                       "Sec-WebSocket-Protocol: chat, superchat\r\n"
                       "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "X-Forwarded-For: 192.0.2.7\r\n"
                       "X-Forwarded-Proto: https\r\n"
                       "X-Forwarded-Host: example.com:8080\r\n"
                       "X-Real-IP: 192.0.2.7\r\n"
                       "\r\n";
    char out[2048];
    ssize_t n = wsg_handshake_build_upstream(h, buf, &fwd, out, sizeof(out));

    ck_assert_int_eq(n, (ssize_t)strlen(want));
    ck_assert_msg(memcmp(out, want, (size_t)n) == 0, "got:\n%.*s", (int)n, out);
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

START_TEST(test_handshake_upstream_appends_and_replaces) {
    char *buf;
    wsg_http_head_t *h = parse(WSG_HTTP_REQUEST,
                               "GET / HTTP/1.1\r\n"
                               "X-Real-IP: 6.6.6.6\r\n"
                               "Host: a.example\r\n"
                               "X-Forwarded-For: 10.0.0.1\r\n"
                               "x-forwarded-proto: gopher\r\n"
                               "X-Custom: keep me \r\n"
                               "X-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n"
                               "X-Forwarded-Host: evil.example\r\n"
                               "X-REAL-IP: 7.7.7.7\r\n"
                               "Upgrade: websocket\r\n"
                               "\r\n",
                               &buf);
    const char *want = "GET / HTTP/1.1\r\n"
                       "Host: a.example\r\n"
                       "X-Forwarded-For: 10.0.0.1\r\n"
                       "X-Custom: keep me\r\n"
                       "X-Forwarded-For: 10.0.0.2, 10.0.0.3, ::1\r\n"
                       "Upgrade: websocket\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "X-Forwarded-Host: a.example\r\n"
                       "X-Real-IP: ::1\r\n"
                       "\r\n";
    wsg_forward_info_t info = {.client_ip = "::1", .proto = "http"};
    char out[2048];
    ssize_t n = wsg_handshake_build_upstream(h, buf, &info, out, sizeof(out));

    ck_assert_int_eq(n, (ssize_t)strlen(want));
    ck_assert_msg(memcmp(out, want, (size_t)n) == 0, "got:\n%.*s", (int)n, out);
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

START_TEST(test_handshake_upstream_output_parses) {
    char *buf;
    wsg_http_head_t *h = parse(WSG_HTTP_REQUEST, WS_REQ, &buf);
    char out[2048];
    ssize_t n = wsg_handshake_build_upstream(h, buf, &fwd, out, sizeof(out));
    wsg_http_head_t *again = wsg_http_head_new(WSG_HTTP_REQUEST, 8192);
    const char *reason;

    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(wsg_http_head_feed(again, out, (size_t)n), WSG_HEAD_COMPLETE);
    ck_assert_uint_eq(wsg_http_head_len(again), (size_t)n);
    ck_assert_int_eq(wsg_handshake_validate(again, out, &reason), 0);
    ck_assert_uint_eq(wsg_http_head_count(again), wsg_http_head_count(h) + 4);
    wsg_http_head_free(again);
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

START_TEST(test_handshake_upstream_cap_too_small) {
    char *buf;
    wsg_http_head_t *h = parse(WSG_HTTP_REQUEST, WS_REQ, &buf);
    char full[2048];
    ssize_t n = wsg_handshake_build_upstream(h, buf, &fwd, full, sizeof(full));
    guard_t g;

    ck_assert_int_gt(n, 0);
    guard_init(&g, (size_t)n);
    /* Every cap short of the length fails, writing nothing past cap (the
     * guard page would fault). */
    for (size_t cap = 0; cap < (size_t)n; cap++) {
        char *out = g.end - cap;
        ck_assert_int_eq(wsg_handshake_build_upstream(h, buf, &fwd, out, cap), -1);
    }
    /* An exact cap is enough. */
    char *out = g.end - n;
    ck_assert_int_eq(wsg_handshake_build_upstream(h, buf, &fwd, out, (size_t)n), n);
    ck_assert(memcmp(out, full, (size_t)n) == 0);
    guard_free(&g);
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

START_TEST(test_handshake_upstream_documented_bound) {
    /* Worst case for growth: many headers written without a space after the
     * colon, a huge Host repeated as X-Forwarded-Host, an XFF to extend and
     * the longest textual IPv6 address. */
    static char in[16384];
    size_t len = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost:");
    char *buf;

    for (int i = 0; i < 3000; i++)
        in[len++] = 'h';
    len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\nX-Forwarded-For:1\r\n");
    for (int i = 0; i < WSG_HTTP_MAX_HEADERS - 2; i++)
        len += (size_t)snprintf(in + len, sizeof(in) - len, "A:%d\r\n", i % 10);
    snprintf(in + len, sizeof(in) - len, "\r\n");

    wsg_http_head_t *h = parse(WSG_HTTP_REQUEST, in, &buf);
    wsg_forward_info_t info = {.client_ip = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
                               .proto = "https"};
    size_t cap = 2 * wsg_http_head_len(h) + 512;
    char *out = malloc(cap);
    ssize_t n;

    ck_assert_ptr_nonnull(out);
    n = wsg_handshake_build_upstream(h, buf, &info, out, cap);
    ck_assert_int_gt(n, (ssize_t)wsg_http_head_len(h) + 3000);
    free(out);
    wsg_http_head_free(h);
    free(buf);
}
END_TEST

/* ---- TCase errors --------------------------------------------------------------------- */

static const int error_statuses[] = {400, 404, 405, 408, 426, 431, 500, 502, 503, 504};

START_TEST(test_handshake_error_responses_parse) {
    int status = error_statuses[_i];
    char out[512], expect_body[64];
    size_t n = wsg_http_error_response(status, out, sizeof(out));
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, 8192);
    const char *v;
    size_t vl, head;

    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(wsg_http_head_feed(h, out, n), WSG_HEAD_COMPLETE);
    ck_assert_int_eq(wsg_http_head_status(h), status);
    ck_assert_int_eq(wsg_http_head_version(h), 11);
    head = wsg_http_head_len(h);

    snprintf(expect_body, sizeof(expect_body), "%d %s\n", status, wsg_http_reason(status));
    ck_assert_uint_eq(n - head, strlen(expect_body));
    ck_assert(memcmp(out + head, expect_body, n - head) == 0);
    ck_assert_int_eq(wsg_http_body_feed(h, out + head, n - head), 1);

    v = wsg_http_head_get(h, out, "Connection", &vl);
    ck_assert(v != NULL && vl == 5 && memcmp(v, "close", 5) == 0);
    v = wsg_http_head_get(h, out, "Content-Type", &vl);
    ck_assert(v != NULL && vl == 10 && memcmp(v, "text/plain", 10) == 0);
    v = wsg_http_head_get(h, out, "Upgrade", &vl);
    if (status == 426) {
        ck_assert(v != NULL && vl == 9 && memcmp(v, "websocket", 9) == 0);
        v = wsg_http_head_get(h, out, "Sec-WebSocket-Version", &vl);
        ck_assert(v != NULL && vl == 2 && memcmp(v, "13", 2) == 0);
    } else {
        ck_assert_ptr_null(v);
    }
    wsg_http_head_free(h);
}
END_TEST

START_TEST(test_handshake_error_response_cap) {
    char out[512];
    size_t n = wsg_http_error_response(404, out, sizeof(out));
    guard_t g;

    ck_assert_uint_gt(n, 0);
    ck_assert(memmem(out, n, "\r\n\r\n404 Not Found\n", 18) != NULL);
    guard_init(&g, n);
    ck_assert_uint_eq(wsg_http_error_response(404, g.end - n, n), n);
    ck_assert(memcmp(g.end - n, out, n) == 0);
    ck_assert_uint_eq(wsg_http_error_response(404, g.end - (n - 1), n - 1), 0);
    ck_assert_uint_eq(wsg_http_error_response(404, g.end, 0), 0);
    guard_free(&g);
}
END_TEST

START_TEST(test_handshake_reason_phrases) {
    ck_assert_str_eq(wsg_http_reason(404), "Not Found");
    ck_assert_str_eq(wsg_http_reason(405), "Method Not Allowed");
    ck_assert_str_eq(wsg_http_reason(426), "Upgrade Required");
    ck_assert_str_eq(wsg_http_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(wsg_http_reason(500), "Internal Server Error");
    ck_assert_str_eq(wsg_http_reason(502), "Bad Gateway");
    ck_assert_ptr_nonnull(wsg_http_reason(799));
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------- */

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- Host syntax (RFC 9112 §3.2, RFC 3986 §3.2.2) ---------------------------- */

typedef struct {
    const char *v;
    bool ok;
} host_case_t;

static const host_case_t host_cases[] = {
    {"example.com", true},       {"example.com:8080", true}, {"127.0.0.1", true},
    {"127.0.0.1:1", true},       {"[::1]", true},            {"[::1]:443", true},
    {"[2001:db8::a]:65535", true}, {"a-b_c~d", true},        {"", true},
    {"host:", true}, /* port = *DIGIT */
    {"a b", false},              {"user@127.0.0.1", false},  {"exa/mple", false},
    {"x?y", false},              {"x#y", false},             {"a%41", false},
    {"127.0.0.1:99999", false},  {"127.0.0.1:65536", false}, {"h:123456", false},
    {"host:8x", false},          {"[::1", false},            {"[]", false},
    {"[::1]x", false},           {"[::g]", false},           {"a:1:2", false},
    {"tab\there", false},
};

START_TEST(test_handshake_host_syntax) {
    const host_case_t *c = &host_cases[_i];
    ck_assert_msg(wsg_http_host_valid(c->v, strlen(c->v)) == c->ok, "Host \"%s\"", c->v);
    ck_assert(!wsg_http_host_valid(NULL, 0));
}
END_TEST


/* ---- header ids ------------------------------------------------------------------ */

START_TEST(test_handshake_header_ids_by_name) {
    static const struct {
        const char *name;
        wsg_http_hdr_t id;
    } cases[] = {
        {"Host", WSG_H_HOST},
        {"hOST", WSG_H_HOST},
        {"Hos", WSG_H_OTHER},
        {"Hosts", WSG_H_OTHER},
        {"Connection", WSG_H_CONNECTION},
        {"Content-Length", WSG_H_CONTENT_LENGTH},
        {"content-length", WSG_H_CONTENT_LENGTH},
        {"Content_Length", WSG_H_OTHER},
        {"Content-Type", WSG_H_CONTENT_TYPE},
        {"Transfer-Encoding", WSG_H_TRANSFER_ENCODING},
        {"TE", WSG_H_TE},
        {"te", WSG_H_TE},
        {"T", WSG_H_OTHER},
        {"Trailer", WSG_H_TRAILER},
        {"Upgrade", WSG_H_UPGRADE},
        {"Keep-Alive", WSG_H_KEEP_ALIVE},
        {"Proxy-Connection", WSG_H_PROXY_CONNECTION},
        {"Accept", WSG_H_ACCEPT},
        {"Accept-Encoding", WSG_H_OTHER},
        {"Sec-WebSocket-Key", WSG_H_SEC_WEBSOCKET_KEY},
        {"Sec-WebSocket-Version", WSG_H_SEC_WEBSOCKET_VERSION},
        {"Sec-WebSocket-Accept", WSG_H_SEC_WEBSOCKET_ACCEPT},
        {"X-Forwarded-For", WSG_H_X_FORWARDED_FOR},
        {"X-Forwarded-Host", WSG_H_X_FORWARDED_HOST},
        {"X-Forwarded-Proto", WSG_H_X_FORWARDED_PROTO},
        {"X-Real-IP", WSG_H_X_REAL_IP},
        {"X-Real-IQ", WSG_H_OTHER},
        {"", WSG_H_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(wsg_http_header_id(cases[i].name, strlen(cases[i].name)) == cases[i].id,
                      "%s", cases[i].name);
    /* Only the <n> bytes given count. */
    ck_assert_int_eq(wsg_http_header_id("Hostname", 4), WSG_H_HOST);
}
END_TEST

/* The ids and counts of a parsed head, fed whole and byte by byte (a name
 * cut between two reads is named once it is whole), and the look-ups that
 * use them. */
START_TEST(test_handshake_head_ids_and_lookups) {
    static const char req[] = "GET / HTTP/1.1\r\n"
                              "host: a.example\r\n"
                              "X-Custom: 1\r\n"
                              "x-forwarded-for: 10.0.0.1\r\n"
                              "Connection: keep-alive\r\n"
                              "X-FORWARDED-FOR: 10.0.0.2\r\n"
                              "X-Hostile: Host\r\n"
                              "\r\n";
    size_t n = sizeof(req) - 1;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_REQUEST, 4096);
        char *buf = malloc(n);
        int r = WSG_HEAD_INCOMPLETE;
        for (size_t len = bytewise ? 1 : n; len <= n && r == WSG_HEAD_INCOMPLETE; len++) {
            memcpy(buf, req, len);
            r = wsg_http_head_feed(h, buf, len);
        }
        ck_assert_int_eq(r, WSG_HEAD_COMPLETE);
        ck_assert_uint_eq(wsg_http_head_count(h), 6);
        static const wsg_http_hdr_t want[] = {WSG_H_HOST, WSG_H_OTHER, WSG_H_X_FORWARDED_FOR,
                                              WSG_H_CONNECTION, WSG_H_X_FORWARDED_FOR,
                                              WSG_H_OTHER};
        for (size_t i = 0; i < 6; i++)
            ck_assert_int_eq(wsg_http_head_id(h, i), want[i]);
        ck_assert_uint_eq(wsg_http_head_has(h, WSG_H_X_FORWARDED_FOR), 2);
        ck_assert_uint_eq(wsg_http_head_has(h, WSG_H_HOST), 1);
        ck_assert_uint_eq(wsg_http_head_has(h, WSG_H_UPGRADE), 0);
        ck_assert_uint_eq(wsg_http_head_first_id(h, WSG_H_X_FORWARDED_FOR), 2);
        ck_assert_uint_eq(wsg_http_head_first_id(h, WSG_H_CONNECTION), 3);
        ck_assert_uint_eq(wsg_http_head_first_id(h, WSG_H_HOST), 0);
        ck_assert_uint_eq(wsg_http_head_first_id(h, WSG_H_UPGRADE), 6);
        size_t vl;
        const char *v = wsg_http_head_get(h, buf, "X-Forwarded-For", &vl);
        ck_assert_ptr_nonnull(v);
        ck_assert_uint_eq(vl, 8);
        ck_assert(memcmp(v, "10.0.0.1", 8) == 0);
        v = wsg_http_head_get(h, buf, "HOST", &vl);
        ck_assert(v != NULL && vl == 9 && memcmp(v, "a.example", 9) == 0);
        v = wsg_http_head_get(h, buf, "x-custom", &vl); /* a name with no id */
        ck_assert(v != NULL && vl == 1 && v[0] == '1');
        ck_assert_ptr_null(wsg_http_head_get(h, buf, "Upgrade", &vl));
        v = wsg_http_head_get_id(h, buf, WSG_H_X_FORWARDED_FOR, &vl); /* the first one */
        ck_assert(v != NULL && vl == 8 && memcmp(v, "10.0.0.1", 8) == 0);
        ck_assert_ptr_null(wsg_http_head_get_id(h, buf, WSG_H_UPGRADE, &vl));
        ck_assert_uint_eq(vl, 0);
        ck_assert_ptr_null(wsg_http_head_get_id(h, buf, WSG_H_OTHER, &vl));
        ck_assert_ptr_null(wsg_http_head_get(h, buf, "X-Missing", &vl));
        wsg_http_head_free(h);
        free(buf);
    }
}
END_TEST

/* Field names are tokens (RFC 9110 §5.6.2): every tchar is taken, every
 * other byte refuses the head. */
START_TEST(test_handshake_header_name_tchars) {
    static const char tchars[] = "!#$%&'*+-.^_`|~";
    for (int c = 1; c < 256; c++) {
        char req[64];
        if (c == ':')
            continue; /* ends the name: "X:Y: 1" is X with the value "Y: 1" */
        int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX%cY: 1\r\n\r\n", c);
        wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_REQUEST, 4096);
        int r = wsg_http_head_feed(h, req, (size_t)n);
        bool tchar = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                     (c >= 'A' && c <= 'Z') || strchr(tchars, c) != NULL;
        if (tchar)
            ck_assert_msg(r == WSG_HEAD_COMPLETE, "byte 0x%02x refused", c);
        else
            ck_assert_msg(r != WSG_HEAD_COMPLETE, "byte 0x%02x taken in a name", c);
        wsg_http_head_free(h);
    }
}
END_TEST

/* The strict pass looks at a head a word at a time and takes the first
 * control byte of a word from its bit mask, where the marks above a tab
 * may be wrong (a borrow): each case at every alignment of a 16-byte pad,
 * whole and byte by byte. */
START_TEST(test_handshake_strict_pass_every_alignment) {
    static const struct {
        const char *tail; /* after "X: " and the pad */
        int result;
    } cases[] = {
        {"\tb\r\n\r\n", WSG_HEAD_COMPLETE},         /* a tab, then the line's CRLF */
        {"\t \t b\r\n\r\n", WSG_HEAD_COMPLETE},     /* tabs whose borrows mark spaces */
        {"\t\rY: b\r\n\r\n", WSG_HEAD_MALFORMED},   /* a bare CR right after a tab */
        {"\t b\nY: c\r\n\r\n", WSG_HEAD_MALFORMED}, /* a bare LF after a tab and a space */
        {"b\r\n c\r\n\r\n", WSG_HEAD_MALFORMED},    /* obs-fold */
        {"b\r\n\r,", WSG_HEAD_MALFORMED},           /* the final CR without its LF */
        {"b\r\n\r\n", WSG_HEAD_COMPLETE},
    };
    for (size_t k = 0; k < N(cases); k++) {
        for (size_t pad = 0; pad <= 16; pad++) {
            char req[128], label[64];
            int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX: %.*s%s",
                             (int)pad, "aaaaaaaaaaaaaaaa", cases[k].tail);
            summary_t whole, bytes;
            snprintf(label, sizeof(label), "case %zu, pad %zu", k, pad);
            int r = feed_whole(WSG_HTTP_REQUEST, req, (size_t)n, 4096, &whole);
            ck_assert_msg(r == cases[k].result, "%s: result %d, expected %d", label, r,
                          cases[k].result);
            feed_bytewise(WSG_HTTP_REQUEST, req, (size_t)n, 4096, &bytes);
            assert_same(&whole, &bytes, label);
        }
    }
}
END_TEST

START_TEST(test_handshake_ipv4_text) {
    static const char *const addrs[] = {"0.0.0.0", "255.255.255.255", "127.0.0.1", "10.20.3.45",
                                        "1.22.133.9", "99.100.9.10"};
    for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
        struct in_addr a;
        char out[16];
        ck_assert_int_eq(inet_pton(AF_INET, addrs[i], &a), 1);
        memset(out, 'x', sizeof(out));
        wsg_ipv4_text(&a, out);
        ck_assert_str_eq(out, addrs[i]);
    }
    /* Every byte value, against inet_ntop. */
    for (unsigned v = 0; v < 256; v++) {
        unsigned char b[4] = {(unsigned char)v, (unsigned char)(255 - v), (unsigned char)(v / 2),
                              (unsigned char)(v * 7)};
        char want[INET_ADDRSTRLEN], got[16];
        inet_ntop(AF_INET, b, want, sizeof(want));
        wsg_ipv4_text(b, got);
        ck_assert_str_eq(got, want);
    }
}
END_TEST

Suite *wsg_handshake_suite(void) {
    Suite *s = suite_create("handshake");
    TCase *tc;

    tc = tcase_create("parse");
    tcase_add_test(tc, test_handshake_parses_request_fields);
    tcase_add_test(tc, test_handshake_get_trims_and_takes_first);
    tcase_add_loop_test(tc, test_handshake_head_table_whole_and_bytewise, 0, N(heads));
    tcase_add_test(tc, test_handshake_head_leaves_early_frames);
    tcase_add_test(tc, test_handshake_head_size_limit);
    tcase_add_test(tc, test_handshake_too_many_headers);
    tcase_add_test(tc, test_handshake_results_are_sticky);
    tcase_add_test(tc, test_handshake_header_ids_by_name);
    tcase_add_test(tc, test_handshake_head_ids_and_lookups);
    tcase_add_test(tc, test_handshake_header_name_tchars);
    tcase_add_test(tc, test_handshake_strict_pass_every_alignment);
    tcase_add_test(tc, test_handshake_ipv4_text);
    suite_add_tcase(s, tc);

    tc = tcase_create("validate");
    tcase_add_loop_test(tc, test_handshake_validate_table, 0, N(validations));
    tcase_add_test(tc, test_handshake_validate_rejects_incomplete_head);
    suite_add_tcase(s, tc);

    tc = tcase_create("accept");
    tcase_add_test(tc, test_handshake_accept_rfc6455_sample);
    suite_add_tcase(s, tc);

    tc = tcase_create("response");
    tcase_add_loop_test(tc, test_handshake_check_response_table, 0, N(responses));
    tcase_add_test(tc, test_handshake_response_101_leaves_frames);
    tcase_add_test(tc, test_handshake_response_status_and_malformed);
    tcase_add_test(tc, test_handshake_body_content_length);
    tcase_add_test(tc, test_handshake_body_chunked);
    tcase_add_test(tc, test_handshake_body_until_eof);
    tcase_add_test(tc, test_handshake_body_truncated_by_eof);
    tcase_add_test(tc, test_handshake_body_empty_feed_is_not_eof);
    tcase_add_test(tc, test_handshake_body_malformed_chunk);
    tcase_add_test(tc, test_handshake_body_none);
    tcase_add_test(tc, test_handshake_body_after_interim_1xx);
    tcase_add_test(tc, test_handshake_body_sse_event_ends_chunked);
    tcase_add_test(tc, test_handshake_body_sse_event_ends_until_eof);
    suite_add_tcase(s, tc);

    tc = tcase_create("upstream");
    tcase_add_test(tc, test_handshake_upstream_adds_forwarding_headers);
    tcase_add_test(tc, test_handshake_upstream_appends_and_replaces);
    tcase_add_test(tc, test_handshake_upstream_output_parses);
    tcase_add_test(tc, test_handshake_upstream_cap_too_small);
    tcase_add_test(tc, test_handshake_upstream_documented_bound);
    suite_add_tcase(s, tc);

    tc = tcase_create("host");
    tcase_add_loop_test(tc, test_handshake_host_syntax, 0, N(host_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_loop_test(tc, test_handshake_error_responses_parse, 0, N(error_statuses));
    tcase_add_test(tc, test_handshake_error_response_cap);
    tcase_add_test(tc, test_handshake_reason_phrases);
    suite_add_tcase(s, tc);

    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_handshake_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
