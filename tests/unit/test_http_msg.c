/*
 * Unit tests for the plain-HTTP message decisions (http_msg.c): the smuggling
 * rules, body framing, keep-alive, the heads wsgate writes each way, and its
 * own error answers. Heads are parsed with the real head parser first, and
 * every head wsgate writes is parsed again to prove it is well-formed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/handshake.h>
#include <wsgate/http_msg.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct {
    wsg_http_head_t *h;
    const char *buf;
} parsed_t;

static parsed_t parse(wsg_http_kind_t kind, const char *text) {
    parsed_t p = {wsg_http_head_new(kind, 16384), text};
    ck_assert_ptr_nonnull(p.h);
    p.buf = text;
    int r = wsg_http_head_feed(p.h, text, strlen(text));
    ck_assert_msg(r == WSG_HEAD_COMPLETE, "head did not parse (%d): %s", r, text);
    return p;
}

/* The forwarding verdict: refused by the parser or by the smuggling rules. */
static int verdict(wsg_http_kind_t kind, const char *text, const char **why) {
    wsg_http_head_t *h = wsg_http_head_new(kind, 16384);
    int r = wsg_http_head_feed(h, text, strlen(text));
    int st;
    if (r != WSG_HEAD_COMPLETE) {
        *why = "parser";
        st = kind == WSG_HTTP_REQUEST ? 400 : 502;
    } else {
        st = wsg_http_check_message(h, text, why);
    }
    wsg_http_head_free(h);
    return st;
}

/* ---- smuggling ---------------------------------------------------------------- */

typedef struct {
    const char *text;
    int status; /* 0: forwarded */
} smuggle_case_t;

#define REQ(lines) "POST /api HTTP/1.1\r\nHost: x\r\n" lines "\r\n"
static const smuggle_case_t request_cases[] = {
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
    {REQ("Content-Length: 5\r\n"), 0},
    {REQ("Content-Length: 5\r\nContent-Length: 5\r\n"), -1 /* either way, never two readings */},
    {REQ("Transfer-Encoding: chunked\r\n"), 0},
    {REQ("Transfer-Encoding: gzip, chunked\r\n"), 0},
    {REQ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400},
    {REQ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), 400},
    {REQ("Content-Length: 5\r\nContent-Length: 6\r\n"), 400},
    {REQ("Content-Length: 5, 6\r\n"), 400},
    {REQ("Content-Length: -1\r\n"), 400},
    {REQ("Content-Length: 18446744073709551616\r\n"), 400},
    {REQ("Content-Length: 0x10\r\n"), 400},
    {REQ("Content-Length: 5 5\r\n"), 400},
    {REQ("Transfer-Encoding: gzip\r\n"), 400},
    {REQ("Transfer-Encoding: chunked, gzip\r\n"), 400},
    {REQ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400},
    {REQ("Transfer-Encoding: chunked, chunked\r\n"), 400},
    {REQ("Transfer-Encoding : chunked\r\n"), 400},
    {REQ(" Transfer-Encoding: chunked\r\n"), 400},
    {REQ("X-A: 1\r\n b\r\n"), 400},
    {REQ("X-A: a\x01" "b\r\n"), 400},
    {REQ("X-A: a\x7f" "b\r\n"), 400},
    {REQ("X-A: a\rb\r\n"), 400},
    {REQ("X-A: a\nX-B: b\r\n"), 400},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
    {REQ("X-A: caf\xc3\xa9\r\n"), 0}, /* obs-text is allowed in values */
};

START_TEST(test_http_msg_request_smuggling) {
    const smuggle_case_t *c = &request_cases[_i];
    const char *why = NULL;
    int st = verdict(WSG_HTTP_REQUEST, c->text, &why);
    if (c->status < 0)
        return; /* only: it did not crash and had one verdict */
    ck_assert_msg(st == c->status, "case %d: %d (%s), want %d", _i, st, why, c->status);
    ck_assert_ptr_nonnull(why);
}
END_TEST

#define RESP(lines) "HTTP/1.1 200 OK\r\n" lines "\r\n"
static const smuggle_case_t response_cases[] = {
    {RESP("Content-Length: 2\r\n"), 0},
    {RESP("Transfer-Encoding: chunked\r\n"), 0},
    {RESP("Transfer-Encoding: gzip\r\n"), 0}, /* a response may: it runs to the close */
    {RESP("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"), 502},
    {RESP("Content-Length: 2\r\nContent-Length: 3\r\n"), 502},
    {RESP("Transfer-Encoding: chunked, chunked\r\n"), 502},
    {RESP("X-A: a\x01\r\n"), 502},
};

START_TEST(test_http_msg_response_smuggling) {
    const smuggle_case_t *c = &response_cases[_i];
    const char *why = NULL;
    int st = verdict(WSG_HTTP_RESPONSE, c->text, &why);
    ck_assert_msg(st == c->status, "case %d: %d (%s), want %d", _i, st, why, c->status);
}
END_TEST

/* ---- framing and keep-alive ---------------------------------------------------------- */

typedef struct {
    const char *text;
    bool head_request;
    wsg_body_kind_t kind;
    uint64_t length;
} framing_case_t;

static const framing_case_t req_framing[] = {
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, WSG_BODY_NONE, 0},
    {REQ("Content-Length: 5\r\n"), false, WSG_BODY_LENGTH, 5},
    {REQ("Content-Length: 0\r\n"), false, WSG_BODY_NONE, 0},
    {REQ("Transfer-Encoding: chunked\r\n"), false, WSG_BODY_CHUNKED, 0},
    {REQ("Content-Length: 18446744073709551615\r\n"), false, WSG_BODY_LENGTH, UINT64_MAX},
};

static const framing_case_t resp_framing[] = {
    {RESP("Content-Length: 2\r\n"), false, WSG_BODY_LENGTH, 2},
    {RESP("Transfer-Encoding: chunked\r\n"), false, WSG_BODY_CHUNKED, 0},
    {RESP("Transfer-Encoding: gzip\r\n"), false, WSG_BODY_EOF, 0},
    {RESP(""), false, WSG_BODY_EOF, 0},
    {RESP("Content-Length: 2\r\n"), true, WSG_BODY_NONE, 0},
    {"HTTP/1.1 204 No Content\r\n\r\n", false, WSG_BODY_NONE, 0},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, WSG_BODY_NONE, 0},
    {"HTTP/1.1 100 Continue\r\n\r\n", false, WSG_BODY_NONE, 0},
    {"HTTP/1.0 200 OK\r\n\r\n", false, WSG_BODY_EOF, 0},
};

START_TEST(test_http_msg_request_framing) {
    const framing_case_t *c = &req_framing[_i];
    parsed_t p = parse(WSG_HTTP_REQUEST, c->text);
    wsg_body_t b;
    wsg_http_request_body(p.h, p.buf, &b);
    ck_assert_int_eq(b.kind, c->kind);
    ck_assert_uint_eq(b.length, c->length);
    wsg_http_head_free(p.h);
}
END_TEST

START_TEST(test_http_msg_response_framing) {
    const framing_case_t *c = &resp_framing[_i];
    parsed_t p = parse(WSG_HTTP_RESPONSE, c->text);
    wsg_body_t b;
    wsg_http_response_body(p.h, p.buf, c->head_request, &b);
    ck_assert_msg(b.kind == c->kind, "case %d: kind %d, want %d", _i, b.kind, c->kind);
    ck_assert_uint_eq(b.length, c->length);
    wsg_http_head_free(p.h);
}
END_TEST

typedef struct {
    const char *text;
    bool keep;
} keep_case_t;

static const keep_case_t keep_cases[] = {
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true},
    {"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false},
    {"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, Close\r\n\r\n", false},
    {"GET / HTTP/1.0\r\n\r\n", false},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive, x-foo\r\n\r\n", true},
};

START_TEST(test_http_msg_keep_alive) {
    parsed_t p = parse(WSG_HTTP_REQUEST, keep_cases[_i].text);
    ck_assert_int_eq(wsg_http_keeps_alive(p.h, p.buf), keep_cases[_i].keep);
    wsg_http_head_free(p.h);
}
END_TEST

START_TEST(test_http_msg_accepts) {
    parsed_t p = parse(WSG_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: x\r\n"
                                         "Accept: text/html, Application/JSON;q=0.9\r\n"
                                         "Accept: text/event-stream\r\n\r\n");
    ck_assert(wsg_http_accepts(p.h, p.buf, "application/json"));
    ck_assert(wsg_http_accepts(p.h, p.buf, "text/event-stream"));
    ck_assert(!wsg_http_accepts(p.h, p.buf, "application/js"));
    ck_assert(!wsg_http_accepts(p.h, p.buf, "text/plain"));
    wsg_http_head_free(p.h);
}
END_TEST

/* ---- heads wsgate writes -------------------------------------------------------------- */

static bool out_has(const char *out, const char *line) { return strstr(out, line) != NULL; }

static size_t count_of(const char *out, const char *needle) {
    size_t n = 0;
    for (const char *p = out; (p = strcasestr(p, needle)) != NULL; p++)
        n++;
    return n;
}

START_TEST(test_http_msg_request_head_drops_hop_by_hop) {
    const char *in = "POST /api?x=1 HTTP/1.1\r\n"
                     "Host: example.com\r\n"
                     "Connection: keep-alive, X-Hop\r\n"
                     "X-Hop: secret\r\n"
                     "Keep-Alive: timeout=5\r\n"
                     "Proxy-Connection: keep-alive\r\n"
                     "TE: trailers\r\n"
                     "Trailer: X-T\r\n"
                     "Upgrade: h2c\r\n"
                     "X-Forwarded-For: 10.0.0.1\r\n"
                     "X-Forwarded-Proto: gopher\r\n"
                     "X-Real-IP: 6.6.6.6\r\n"
                     "Transfer-Encoding: chunked\r\n"
                     "Cookie: a=b\r\n"
                     "\r\n";
    parsed_t p = parse(WSG_HTTP_REQUEST, in);
    wsg_forward_info_t info = {.client_ip = "192.0.2.7", .proto = "https"};
    wsg_body_t body;
    const char *why;
    char out[4096];

    ck_assert_int_eq(wsg_http_check_message(p.h, p.buf, &why), 0);
    wsg_http_request_body(p.h, p.buf, &body);
    ssize_t n = wsg_http_build_request(p.h, p.buf, &info, &body, true, out, sizeof(out));
    ck_assert_int_gt(n, 0);
    out[n] = '\0';
    ck_assert_msg(strncmp(out, "POST /api?x=1 HTTP/1.1\r\n", 24) == 0, "%s", out);
    ck_assert(out_has(out, "\r\nHost: example.com\r\n"));
    ck_assert(out_has(out, "\r\nCookie: a=b\r\n"));
    ck_assert(out_has(out, "\r\nX-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"));
    ck_assert(out_has(out, "\r\nX-Forwarded-Proto: https\r\n"));
    ck_assert(out_has(out, "\r\nX-Forwarded-Host: example.com\r\n"));
    ck_assert(out_has(out, "\r\nX-Real-IP: 192.0.2.7\r\n"));
    ck_assert(out_has(out, "\r\nTransfer-Encoding: chunked\r\n"));
    ck_assert_uint_eq(count_of(out, "Transfer-Encoding"), 1);
    ck_assert_uint_eq(count_of(out, "X-Forwarded-For"), 1);
    ck_assert_uint_eq(count_of(out, "X-Real-IP"), 1);
    const char *gone[] = {"X-Hop", "Keep-Alive", "Proxy-Connection", "TE:", "Trailer",
                          "Upgrade", "gopher", "6.6.6.6", "Connection"};
    for (int i = 0; i < N(gone); i++)
        ck_assert_msg(strcasestr(out, gone[i]) == NULL, "%s forwarded:\n%s", gone[i], out);

    /* the bound, and what it writes parses as one complete head */
    ck_assert_uint_le((size_t)n, 2 * wsg_http_head_len(p.h) + 512);
    parsed_t again = parse(WSG_HTTP_REQUEST, out);
    ck_assert_uint_eq(wsg_http_head_len(again.h), (size_t)n);
    wsg_http_head_free(again.h);

    /* no reuse: the backend is told */
    n = wsg_http_build_request(p.h, p.buf, &info, &body, false, out, sizeof(out));
    out[n] = '\0';
    ck_assert(out_has(out, "\r\nConnection: close\r\n"));
    /* too small a buffer: -1, never a partial head */
    ck_assert_int_eq(wsg_http_build_request(p.h, p.buf, &info, &body, true, out, 40), -1);
    wsg_http_head_free(p.h);
}
END_TEST

/* More Connection options than wsgate gathers up front (16), over two
 * Connection headers: every header they name is still dropped. */
START_TEST(test_http_msg_many_connection_options) {
    char in[4096];
    size_t k = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive");
    for (int i = 0; i < 20; i++)
        k += (size_t)snprintf(in + k, sizeof(in) - k, "%sX-Opt%d", i == 10 ? "\r\nConnection: " : ", ",
                              i);
    k += (size_t)snprintf(in + k, sizeof(in) - k, "\r\n");
    for (int i = 0; i < 20; i++)
        k += (size_t)snprintf(in + k, sizeof(in) - k, "x-opt%d: v\r\n", i);
    snprintf(in + k, sizeof(in) - k, "X-Opt20: kept\r\n\r\n");
    parsed_t p = parse(WSG_HTTP_REQUEST, in);
    wsg_forward_info_t info = {.client_ip = "192.0.2.7", .proto = "http"};
    wsg_body_t body;
    char out[4096];

    wsg_http_request_body(p.h, p.buf, &body);
    ssize_t n = wsg_http_build_request(p.h, p.buf, &info, &body, true, out, sizeof(out));
    ck_assert_int_gt(n, 0);
    out[n] = '\0';
    ck_assert_msg(out_has(out, "\r\nX-Opt20: kept\r\n"), "%s", out);
    ck_assert_uint_eq(count_of(out, "x-opt"), 1);
    ck_assert_uint_eq(count_of(out, "Connection"), 0);
    wsg_http_head_free(p.h);
}
END_TEST

/* Every byte value at every position within a word of the value (the
 * strict pass reads 8 bytes at a time): a control byte other than HTAB is
 * refused (by llhttp or by the smuggling rules), every other byte taken. */
START_TEST(test_http_msg_control_bytes_at_every_alignment) {
    for (int pad = 0; pad < 16; pad++) {
        for (int c = 1; c < 256; c++) {
            char in[128];
            int n = snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: h\r\nX: %.*s%cz\r\n\r\n", pad,
                             "aaaaaaaaaaaaaaaa", c);
            ck_assert_int_lt(n, (int)sizeof(in));
            const char *why;
            int st = verdict(WSG_HTTP_REQUEST, in, &why);
            if (c == '\r' || c == '\n' || (c < 0x20 && c != '\t') || c == 0x7f)
                ck_assert_msg(st == 400, "pad %d byte 0x%02x: %d %s", pad, c, st, why);
            else
                ck_assert_msg(st == 0, "pad %d byte 0x%02x: %d %s", pad, c, st, why);
            /* llhttp lets control bytes through in a reason phrase: only
             * the strict pass's note of them refuses the response. */
            n = snprintf(in, sizeof(in), "HTTP/1.1 200 %.*s%cz\r\nContent-Length: 0\r\n\r\n", pad,
                         "aaaaaaaaaaaaaaaa", c);
            st = verdict(WSG_HTTP_RESPONSE, in, &why);
            if (c == '\r' || c == '\n')
                ck_assert_msg(st == 502, "pad %d byte 0x%02x: %d %s", pad, c, st, why);
            else if ((c < 0x20 && c != '\t') || c == 0x7f)
                ck_assert_msg(st == 502 && strcmp(why, "control character in the head") == 0,
                              "response: pad %d byte 0x%02x: %d %s", pad, c, st, why);
            else
                ck_assert_msg(st == 0, "response: pad %d byte 0x%02x: %d %s", pad, c, st, why);
        }
    }
}
END_TEST

START_TEST(test_http_msg_request_head_restates_length) {
    parsed_t p = parse(WSG_HTTP_REQUEST, "PUT /x HTTP/1.0\r\nHost: h\r\ncontent-length: 7\r\n\r\n");
    wsg_forward_info_t info = {.client_ip = "::1", .proto = "http"};
    wsg_body_t body;
    char out[1024];
    wsg_http_request_body(p.h, p.buf, &body);
    ssize_t n = wsg_http_build_request(p.h, p.buf, &info, &body, true, out, sizeof(out));
    out[n] = '\0';
    ck_assert(strncmp(out, "PUT /x HTTP/1.1\r\n", 17) == 0); /* wsgate speaks 1.1 upstream */
    ck_assert(out_has(out, "\r\nContent-Length: 7\r\n"));
    ck_assert_uint_eq(count_of(out, "content-length"), 1);
    wsg_http_head_free(p.h);
}
END_TEST

START_TEST(test_http_msg_response_head) {
    const char *in = "HTTP/1.1 201 Made It\r\n"
                     "Content-Type: text/plain\r\n"
                     "Connection: X-Private\r\n"
                     "X-Private: 1\r\n"
                     "Keep-Alive: timeout=4\r\n"
                     "Set-Cookie: s=1\r\n"
                     "Content-Length: 2\r\n"
                     "\r\n";
    parsed_t p = parse(WSG_HTTP_RESPONSE, in);
    wsg_body_t body;
    char out[2048];

    wsg_http_response_body(p.h, p.buf, false, &body);
    ssize_t n = wsg_http_build_response(p.h, p.buf, &body, true, 11, out, sizeof(out));
    ck_assert_int_gt(n, 0);
    out[n] = '\0';
    ck_assert_msg(strncmp(out, "HTTP/1.1 201 Made It\r\n", 22) == 0, "%s", out);
    ck_assert(out_has(out, "\r\nContent-Length: 2\r\n"));
    ck_assert(out_has(out, "\r\nSet-Cookie: s=1\r\n"));
    ck_assert(strcasestr(out, "X-Private") == NULL && strcasestr(out, "Keep-Alive") == NULL);
    ck_assert(strcasestr(out, "Connection") == NULL); /* 1.1 keeps alive by default */
    parsed_t again = parse(WSG_HTTP_RESPONSE, out);
    ck_assert_int_eq(wsg_http_head_status(again.h), 201);
    wsg_http_head_free(again.h);

    /* an HTTP/1.0 client that asked to keep the connection is told it is kept */
    n = wsg_http_build_response(p.h, p.buf, &body, true, 10, out, sizeof(out));
    out[n] = '\0';
    ck_assert(out_has(out, "\r\nConnection: keep-alive\r\n"));
    n = wsg_http_build_response(p.h, p.buf, &body, false, 11, out, sizeof(out));
    out[n] = '\0';
    ck_assert(out_has(out, "\r\nConnection: close\r\n"));
    wsg_http_head_free(p.h);

    /* a body that ends at the backend's close ends the client's connection too */
    p = parse(WSG_HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
    wsg_http_response_body(p.h, p.buf, false, &body);
    ck_assert_int_eq(body.kind, WSG_BODY_EOF);
    n = wsg_http_build_response(p.h, p.buf, &body, true, 11, out, sizeof(out));
    out[n] = '\0';
    ck_assert(out_has(out, "\r\nConnection: close\r\n"));
    wsg_http_head_free(p.h);

    /* 1xx and 204: no framing, 1xx no Connection */
    p = parse(WSG_HTTP_RESPONSE, "HTTP/1.1 100 Continue\r\n\r\n");
    wsg_http_response_body(p.h, p.buf, false, &body);
    n = wsg_http_build_response(p.h, p.buf, &body, true, 11, out, sizeof(out));
    out[n] = '\0';
    ck_assert_str_eq(out, "HTTP/1.1 100 Continue\r\n\r\n");
    wsg_http_head_free(p.h);
    p = parse(WSG_HTTP_RESPONSE, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    wsg_http_response_body(p.h, p.buf, false, &body);
    n = wsg_http_build_response(p.h, p.buf, &body, true, 11, out, sizeof(out));
    out[n] = '\0';
    ck_assert_str_eq(out, "HTTP/1.1 204 No Content\r\n\r\n");
    wsg_http_head_free(p.h);
}
END_TEST

START_TEST(test_http_msg_response_without_reason_phrase) {
    parsed_t p = parse(WSG_HTTP_RESPONSE, "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n");
    wsg_body_t body;
    char out[512];
    wsg_http_response_body(p.h, p.buf, false, &body);
    ssize_t n = wsg_http_build_response(p.h, p.buf, &body, true, 11, out, sizeof(out));
    out[n] = '\0';
    ck_assert_msg(strncmp(out, "HTTP/1.1 404 Not Found\r\n", 24) == 0, "%s", out);
    wsg_http_head_free(p.h);
}
END_TEST

/* ---- wsgate's answers ------------------------------------------------------------------- */

START_TEST(test_http_msg_error_answers) {
    char out[1024];
    size_t n = wsg_http_error(503, "no healthy \"backend\"", true, 1, false, out, sizeof(out));
    ck_assert_uint_gt(n, 0);
    out[n] = '\0';
    parsed_t p = parse(WSG_HTTP_RESPONSE, out);
    ck_assert_int_eq(wsg_http_head_status(p.h), 503);
    size_t vl;
    const char *ct = wsg_http_head_get(p.h, out, "Content-Type", &vl);
    ck_assert(ct != NULL && strncmp(ct, "application/json", vl) == 0);
    ck_assert_ptr_nonnull(wsg_http_head_get(p.h, out, "Retry-After", &vl));
    ck_assert_ptr_nonnull(wsg_http_head_get(p.h, out, "Connection", &vl));
    const char *cl = wsg_http_head_get(p.h, out, "Content-Length", &vl);
    const char *body = out + wsg_http_head_len(p.h);
    ck_assert_int_eq(atoi(cl), (int)strlen(body));
    ck_assert_str_eq(body, "{\"error\": \"no healthy ?backend?\", \"status\": 503}\n");
    wsg_http_head_free(p.h);

    n = wsg_http_error(404, "no route", false, 0, true, out, sizeof(out));
    out[n] = '\0';
    ck_assert(strstr(out, "Connection") == NULL && strstr(out, "Retry-After") == NULL);
    ck_assert(strstr(out, "\r\n\r\n404 Not Found: no route\n") != NULL);
    ck_assert_uint_eq(wsg_http_error(404, "x", false, 0, true, out, 20), 0);
    ck_assert_uint_eq(wsg_http_error(99, "x", false, 0, true, out, sizeof(out)), 0);
}
END_TEST

static Suite *http_msg_suite(void) {
    Suite *s = suite_create("http_msg");
    TCase *tc = tcase_create("smuggling");
    tcase_add_loop_test(tc, test_http_msg_request_smuggling, 0, N(request_cases));
    tcase_add_loop_test(tc, test_http_msg_response_smuggling, 0, N(response_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("framing");
    tcase_add_loop_test(tc, test_http_msg_request_framing, 0, N(req_framing));
    tcase_add_loop_test(tc, test_http_msg_response_framing, 0, N(resp_framing));
    tcase_add_loop_test(tc, test_http_msg_keep_alive, 0, N(keep_cases));
    tcase_add_test(tc, test_http_msg_accepts);
    suite_add_tcase(s, tc);

    tc = tcase_create("heads");
    tcase_add_test(tc, test_http_msg_request_head_drops_hop_by_hop);
    tcase_add_test(tc, test_http_msg_request_head_restates_length);
    tcase_add_test(tc, test_http_msg_many_connection_options);
    tcase_add_test(tc, test_http_msg_control_bytes_at_every_alignment);
    tcase_add_test(tc, test_http_msg_response_head);
    tcase_add_test(tc, test_http_msg_response_without_reason_phrase);
    tcase_add_test(tc, test_http_msg_error_answers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(http_msg_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
