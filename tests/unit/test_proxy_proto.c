/*
 * Unit tests for the PROXY protocol parser: a table of (bytes, expected
 * outcome, label), each fed whole and then as every prefix (the byte by
 * byte arrival the stateless parser sees), always copied so that it ends
 * right before a PROT_NONE page: reading one byte too far crashes the test.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <check.h>

#include <wsgate/proxy_proto.h>

typedef struct {
    unsigned char *base;
    size_t page;
} guard_t;

static void guard_open(guard_t *g) {
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    g->base = mmap(NULL, 3 * g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(g->base, MAP_FAILED);
    ck_assert_int_eq(mprotect(g->base + 2 * g->page, g->page, PROT_NONE), 0);
}

static void guard_close(guard_t *g) {
    munmap(g->base, 3 * g->page);
}

/* Copies data[0..len) to end exactly at the guard page. */
static const unsigned char *guarded(guard_t *g, const void *data, size_t len) {
    ck_assert_uint_le(len, 2 * g->page);
    unsigned char *dst = g->base + 2 * g->page - len;
    memcpy(dst, data, len);
    return dst;
}

typedef struct {
    const char *label;
    const char *data; /* may contain NULs: see len */
    size_t len;
    wsg_proxy_status_t want;
    size_t consumed; /* DONE: header length */
    int version;     /* DONE */
    int local;       /* DONE */
    int family;      /* DONE && !local */
    const char *src; /* DONE && !local: source address text */
    uint16_t sport;
    const char *dst;
    uint16_t dport;
    size_t fail_at; /* MALFORMED: shortest prefix already refused (0: not checked) */
} pp_case_t;

#define S(lit) lit, sizeof(lit) - 1

/* v2 fixed part: signature, version/command, family/transport, length. */
#define SIG "\r\n\r\n\0\r\nQUIT\n"
#define V2_TCP4 SIG "\x21\x11\x00\x0c"
#define V2_TCP4_ADDR                                                                               \
    "\xc0\x00\x02\x01"                                                                             \
    "\x0a\x00\x00\x01"                                                                             \
    "\x30\x39"                                                                                     \
    "\x01\xbb"
#define V2_TCP6_ADDR                                                                               \
    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07"                             \
    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08"                             \
    "\xff\xff"                                                                                     \
    "\x00\x50"

static const pp_case_t cases[] = {
    /* ---- version 1 ---- */
    {"v1 tcp4", S("PROXY TCP4 192.0.2.1 10.0.0.1 12345 443\r\n"), WSG_PROXY_DONE, 41, 1, 0, AF_INET,
     "192.0.2.1", 12345, "10.0.0.1", 443, 0},
    {"v1 tcp4 then request", S("PROXY TCP4 192.0.2.1 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n"),
     WSG_PROXY_DONE, 35, 1, 0, AF_INET, "192.0.2.1", 1, "10.0.0.1", 2, 0},
    {"v1 tcp6", S("PROXY TCP6 2001:db8::7 2001:db8::8 65535 80\r\n"), WSG_PROXY_DONE, 45, 1, 0,
     AF_INET6, "2001:db8::7", 65535, "2001:db8::8", 80, 0},
    {"v1 tcp6 mapped v4", S("PROXY TCP6 ::ffff:192.0.2.9 ::1 0 0\r\n"), WSG_PROXY_DONE, 37, 1, 0,
     AF_INET6, "::ffff:192.0.2.9", 0, "::1", 0, 0},
    {"v1 unknown", S("PROXY UNKNOWN\r\n"), WSG_PROXY_DONE, 15, 1, 1, 0, NULL, 0, NULL, 0, 0},
    {"v1 unknown with junk", S("PROXY UNKNOWN ffff::1 x y z\r\nGET"), WSG_PROXY_DONE, 29, 1, 1, 0,
     NULL, 0, NULL, 0, 0},
    {"v1 longest (107 bytes)",
     S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
     WSG_PROXY_DONE, 104, 1, 0, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 0},
    {"v1 unknown 107 bytes",
     S("PROXY UNKNOWN 0123456789012345678901234567890123456789012345678901234567890123456789"
       "012345678901234567890\r\n"),
     WSG_PROXY_DONE, 107, 1, 1, 0, NULL, 0, NULL, 0, 0},

    {"http request", S("GET / HTTP/1.1\r\n\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0, NULL, 0,
     1},
    {"tls clienthello", S("\x16\x03\x01\x02\x00\x01"), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0,
     NULL, 0, 1},
    {"lowercase proxy", S("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 1},
    {"v1 no space after PROXY", S("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0,
     0, 0, NULL, 0, NULL, 0, 6},
    {"v1 unknown protocol", S("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0,
     0, NULL, 0, NULL, 0, 0},
    {"v1 empty protocol", S("PROXY \r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0, NULL, 0, 8},
    {"v1 unknownx", S("PROXY UNKNOWNX\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0, NULL, 0, 0},
    {"v1 bare LF", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0,
     NULL, 0, 31},
    {"v1 CR without LF", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 32},
    {"v1 NUL byte", S("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 19},
    {"v1 too long",
     S("PROXY UNKNOWN 0123456789012345678901234567890123456789012345678901234567890123456789"
       "0123456789012345678901\r\n"),
     WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0, NULL, 0, 107},
    {"v1 no CRLF in 107 bytes",
     S("PROXY TCP4 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
     WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0, NULL, 0, 107},
    {"v1 v6 address for tcp4", S("PROXY TCP4 ::1 ::1 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 0},
    {"v1 v4 address for tcp6", S("PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0,
     0, 0, NULL, 0, NULL, 0, 0},
    {"v1 octet too big", S("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 0},
    {"v1 port too big", S("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0,
     0, NULL, 0, NULL, 0, 0},
    {"v1 port not a number", S("PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0,
     0, NULL, 0, NULL, 0, 0},
    {"v1 negative port", S("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 0},
    {"v1 missing port", S("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 0},
    {"v1 extra field", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 0},
    {"v1 double space", S("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 0},
    {"v1 trailing space", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 0},

    /* ---- version 2 ---- */
    {"v2 tcp4", S(V2_TCP4 V2_TCP4_ADDR), WSG_PROXY_DONE, 28, 2, 0, AF_INET, "192.0.2.1", 12345,
     "10.0.0.1", 443, 0},
    {"v2 tcp4 then request", S(V2_TCP4 V2_TCP4_ADDR "GET / HTTP/1.1\r\n"), WSG_PROXY_DONE, 28, 2, 0,
     AF_INET, "192.0.2.1", 12345, "10.0.0.1", 443, 0},
    {"v2 tcp6", S(SIG "\x21\x21\x00\x24" V2_TCP6_ADDR), WSG_PROXY_DONE, 52, 2, 0, AF_INET6,
     "2001:db8::7", 65535, "2001:db8::8", 80, 0},
    {"v2 tcp4 with TLVs",
     S(SIG "\x21\x11\x00\x1b" V2_TCP4_ADDR "\x01\x00\x08http/1.1"
           "\x04\x00\x01\x00"),
     WSG_PROXY_DONE, 43, 2, 0, AF_INET, "192.0.2.1", 12345, "10.0.0.1", 443, 0},
    {"v2 local", S(SIG "\x20\x00\x00\x00"), WSG_PROXY_DONE, 16, 2, 1, 0, NULL, 0, NULL, 0, 0},
    {"v2 local with addresses", S(SIG "\x20\x11\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_DONE, 28, 2, 1, 0,
     NULL, 0, NULL, 0, 0},
    {"v2 proxy unspec", S(SIG "\x21\x00\x00\x03xyz"), WSG_PROXY_DONE, 19, 2, 1, 0, NULL, 0, NULL, 0,
     0},
    {"v2 udp4 is local", S(SIG "\x21\x12\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_DONE, 28, 2, 1, 0, NULL,
     0, NULL, 0, 0},

    {"v2 bad signature", S("\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c" V2_TCP4_ADDR),
     WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0, NULL, 0, 11},
    {"v2 version 1", S(SIG "\x11\x11\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL,
     0, NULL, 0, 13},
    {"v2 version 3", S(SIG "\x31\x11\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL,
     0, NULL, 0, 13},
    {"v2 command 2", S(SIG "\x22\x11\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL,
     0, NULL, 0, 13},
    {"v2 family 4", S(SIG "\x21\x41\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL,
     0, NULL, 0, 14},
    {"v2 transport 3", S(SIG "\x21\x13\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 14},
    {"v2 tcp4 too short",
     S(SIG "\x21\x11\x00\x0b"
           "\xc0\x00\x02\x01\x0a\x00\x00\x01\x30\x39\x01"),
     WSG_PROXY_MALFORMED, 0, 0, 0, 0, NULL, 0, NULL, 0, 16},
    {"v2 tcp6 too short", S(SIG "\x21\x21\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 16},
    {"v2 unix too short", S(SIG "\x21\x31\x00\x0c" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 16},
    {"v2 length over bound", S(SIG "\x21\x11\x07\xf1" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0,
     0, NULL, 0, NULL, 0, 16},
    {"v2 length 65535", S(SIG "\x21\x11\xff\xff" V2_TCP4_ADDR), WSG_PROXY_MALFORMED, 0, 0, 0, 0,
     NULL, 0, NULL, 0, 16},
};

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap, uint16_t *port) {
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)cap);
        *port = ntohs(in->sin_port);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)cap);
        *port = ntohs(in6->sin6_port);
    }
}

static void check_done(const pp_case_t *c, const wsg_proxy_result_t *r, size_t consumed) {
    char ip[INET6_ADDRSTRLEN];
    uint16_t port;

    ck_assert_msg(consumed == c->consumed, "%s: consumed %zu, want %zu", c->label, consumed,
                  c->consumed);
    ck_assert_msg(r->version == c->version, "%s: version %d", c->label, r->version);
    ck_assert_msg(r->local == c->local, "%s: local %d", c->label, r->local);
    if (c->local)
        return;
    ck_assert_msg(r->src.ss_family == c->family, "%s: family %d", c->label, r->src.ss_family);
    ck_assert_uint_eq(r->src_len, c->family == AF_INET ? sizeof(struct sockaddr_in)
                                                       : sizeof(struct sockaddr_in6));
    addr_text(&r->src, ip, sizeof(ip), &port);
    ck_assert_msg(strcmp(ip, c->src) == 0 && port == c->sport, "%s: src %s:%u", c->label, ip, port);
    addr_text(&r->dst, ip, sizeof(ip), &port);
    ck_assert_msg(strcmp(ip, c->dst) == 0 && port == c->dport, "%s: dst %s:%u", c->label, ip, port);
}

START_TEST(test_proxy_proto_table_whole) {
    guard_t g;
    guard_open(&g);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pp_case_t *c = &cases[i];
        wsg_proxy_result_t r;
        size_t consumed = 99;
        wsg_proxy_status_t st =
            wsg_proxy_parse(guarded(&g, c->data, c->len), c->len, &consumed, &r);
        ck_assert_msg(st == c->want, "%s: status %d, want %d (%s)", c->label, st, c->want,
                      r.reason ? r.reason : "");
        if (st == WSG_PROXY_DONE)
            check_done(c, &r, consumed);
        else
            ck_assert_msg(r.reason != NULL && consumed == 0, "%s: no reason", c->label);
    }
    guard_close(&g);
}
END_TEST

/* Every prefix: a complete header is NEED_MORE until its last byte and
 * DONE from there on with the same result; a malformed input is never
 * DONE, and once refused stays refused (eagerly, at fail_at when given). */
START_TEST(test_proxy_proto_table_byte_by_byte) {
    guard_t g;
    guard_open(&g);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pp_case_t *c = &cases[i];
        int refused = 0;
        for (size_t k = 0; k <= c->len; k++) {
            wsg_proxy_result_t r;
            size_t consumed;
            wsg_proxy_status_t st = wsg_proxy_parse(guarded(&g, c->data, k), k, &consumed, &r);
            if (c->want == WSG_PROXY_DONE) {
                if (k < c->consumed) {
                    ck_assert_msg(st == WSG_PROXY_NEED_MORE, "%s: prefix %zu: status %d (%s)",
                                  c->label, k, st, r.reason ? r.reason : "");
                } else {
                    ck_assert_msg(st == WSG_PROXY_DONE, "%s: prefix %zu: status %d", c->label, k,
                                  st);
                    check_done(c, &r, consumed);
                }
                continue;
            }
            ck_assert_msg(st != WSG_PROXY_DONE, "%s: prefix %zu: DONE", c->label, k);
            if (refused)
                ck_assert_msg(st == WSG_PROXY_MALFORMED, "%s: prefix %zu accepted again", c->label,
                              k);
            if (st == WSG_PROXY_MALFORMED && !refused) {
                refused = 1;
                if (c->fail_at)
                    ck_assert_msg(k == c->fail_at, "%s: refused at %zu, want %zu", c->label, k,
                                  c->fail_at);
            }
        }
        if (c->want == WSG_PROXY_MALFORMED)
            ck_assert_msg(refused, "%s: never refused", c->label);
    }
    guard_close(&g);
}
END_TEST

START_TEST(test_proxy_proto_empty_needs_more) {
    wsg_proxy_result_t r;
    size_t consumed = 5;
    ck_assert_int_eq(wsg_proxy_parse("", 0, &consumed, &r), WSG_PROXY_NEED_MORE);
    ck_assert_uint_eq(consumed, 0);
}
END_TEST

/* The v2 bound: a header of exactly WSG_PROXY_V2_MAX bytes (TLVs filling
 * it) is accepted, one byte more is refused as soon as the length shows. */
START_TEST(test_proxy_proto_v2_bound) {
    guard_t g;
    unsigned char buf[WSG_PROXY_V2_MAX + 1];
    wsg_proxy_result_t r;
    size_t consumed;

    guard_open(&g);
    memset(buf, 0, sizeof(buf));
    memcpy(buf, SIG "\x21\x11", 14);
    size_t body = WSG_PROXY_V2_MAX - 16;
    buf[14] = (unsigned char)(body >> 8);
    buf[15] = (unsigned char)(body & 0xff);
    memcpy(buf + 16, V2_TCP4_ADDR, 12);
    ck_assert_int_eq(wsg_proxy_parse(guarded(&g, buf, WSG_PROXY_V2_MAX - 1), WSG_PROXY_V2_MAX - 1,
                                     &consumed, &r),
                     WSG_PROXY_NEED_MORE);
    ck_assert_int_eq(
        wsg_proxy_parse(guarded(&g, buf, WSG_PROXY_V2_MAX), WSG_PROXY_V2_MAX, &consumed, &r),
        WSG_PROXY_DONE);
    ck_assert_uint_eq(consumed, WSG_PROXY_V2_MAX);
    body++;
    buf[14] = (unsigned char)(body >> 8);
    buf[15] = (unsigned char)(body & 0xff);
    ck_assert_int_eq(wsg_proxy_parse(guarded(&g, buf, 16), 16, &consumed, &r), WSG_PROXY_MALFORMED);
    guard_close(&g);
}
END_TEST

Suite *wsg_proxy_proto_suite(void) {
    Suite *s = suite_create("proxy_proto");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_proxy_proto_table_whole);
    tcase_add_test(tc, test_proxy_proto_table_byte_by_byte);
    suite_add_tcase(s, tc);

    tc = tcase_create("bounds");
    tcase_add_test(tc, test_proxy_proto_empty_needs_more);
    tcase_add_test(tc, test_proxy_proto_v2_bound);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_proxy_proto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
