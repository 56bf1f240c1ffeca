/*
 * Unit tests for route matching: tables of (host, target, expected route)
 * against a few route lists. Each host and target is copied so that it ends
 * right before a PROT_NONE page and carries no NUL, so reading one byte past
 * the given length crashes the test (header values from llhttp are not
 * NUL-terminated).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <check.h>

#include <wsgate/route.h>

#define NROUTES(r) (sizeof(r) / sizeof((r)[0]))

typedef struct {
    const char *host; /* NULL: no Host header */
    const char *path;
    int want;
} route_case_t;

/* Two pages: the data ends where the second, inaccessible one starts. */
typedef struct {
    unsigned char *base;
    size_t page;
} guard_t;

static void guard_open(guard_t *g) {
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    g->base = mmap(NULL, 2 * g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(g->base, MAP_FAILED);
    ck_assert_int_eq(mprotect(g->base + g->page, g->page, PROT_NONE), 0);
}

static void guard_close(guard_t *g) {
    munmap(g->base, 2 * g->page);
}

/* Copies <s> (without NUL) to end exactly at the guard page. */
static const char *guarded(guard_t *g, const char *s, size_t *len) {
    *len = strlen(s);
    ck_assert_uint_le(*len, g->page);
    char *dst = (char *)g->base + g->page - *len;
    memcpy(dst, s, *len);
    return dst;
}

static void run_cases(const wsg_route_conf_t *routes, size_t n, const route_case_t *cases,
                      size_t ncases) {
    guard_t gh, gp;
    guard_open(&gh);
    guard_open(&gp);
    for (size_t i = 0; i < ncases; i++) {
        const route_case_t *c = &cases[i];
        size_t hlen = 0, plen = 0;
        const char *h = c->host != NULL ? guarded(&gh, c->host, &hlen) : NULL;
        const char *p = guarded(&gp, c->path, &plen);
        int got = wsg_route_match(routes, n, h, hlen, p, plen);
        ck_assert_msg(got == c->want, "case %zu: host=%s%s%s path=\"%s\": got %d, want %d", i,
                      c->host ? "\"" : "", c->host ? c->host : "(none)", c->host ? "\"" : "",
                      c->path, got, c->want);
    }
    guard_close(&gh);
    guard_close(&gp);
}

#define ROUTE(h, p) {.host = (char *)(h), .path_prefix = (char *)(p), .pool = (char *)"x"}

/* A table in the spirit of SPEC §2: specific host first, wildcard, an IPv6
 * literal, then host-less routes. */
static const wsg_route_conf_t main_routes[] = {
    ROUTE("chat.example.com", "/ws"), /* 0 */
    ROUTE("*.example.com", "/"),      /* 1 */
    ROUTE("[::1]", "/v6"),            /* 2 */
    ROUTE(NULL, "/api"),              /* 3 */
    ROUTE(NULL, "/"),                 /* 4 */
};

START_TEST(test_route_host_exact_and_case) {
    static const route_case_t cases[] = {
        {"chat.example.com", "/ws", 0},
        {"CHAT.Example.COM", "/ws", 0},
        {"chat.example.com", "/ws/room", 0},
        {"chat.example.co", "/ws", 4},
        {"chat.example.comx", "/ws", 4},
        {"hat.example.com", "/ws", 1}, /* only the wildcard fits */
        {" chat.example.com\t", "/ws", 0},
        {"chat.example.com.", "/ws", 0}, /* fully-qualified spelling */
    };
    run_cases(main_routes, NROUTES(main_routes), cases, NROUTES(cases));
}
END_TEST

START_TEST(test_route_host_port_stripped) {
    static const route_case_t cases[] = {
        {"chat.example.com:8080", "/ws", 0},
        {"Chat.Example.Com:443", "/ws", 0},
        {"chat.example.com:", "/ws", 0},
        {"a.example.com:80", "/", 1},
        {"[::1]:8080", "/v6/x", 2},
        {"[::1]", "/v6", 2},
        {"[::1]:8080", "/api", 3},
        {"[::2]:8080", "/v6", 4},
        {"[::1", "/v6", 4}, /* malformed: no closing bracket */
        {"::1", "/v6", 2},  /* bare literal, not valid in Host but unambiguous */
    };
    run_cases(main_routes, NROUTES(main_routes), cases, NROUTES(cases));
}
END_TEST

START_TEST(test_route_host_wildcard) {
    static const route_case_t cases[] = {
        {"a.example.com", "/", 1},
        {"a.b.example.com", "/anything", 1},
        {"A.B.EXAMPLE.COM:9000", "/", 1},
        {"chat.example.com", "/other", 1}, /* exact route's path fails */
        {"example.com", "/", 4},           /* the bare suffix is not covered */
        {"badexample.com", "/", 4},        /* label boundary respected */
        {".example.com", "/", 4},          /* no label in front */
        {"example.com.evil.org", "/", 4},
        {"a.example.com.", "/", 1},
    };
    run_cases(main_routes, NROUTES(main_routes), cases, NROUTES(cases));
}
END_TEST

START_TEST(test_route_host_absent) {
    static const route_case_t cases[] = {
        {NULL, "/ws", 4}, /* no Host: only host-less routes */
        {"", "/ws", 4},
        {"   ", "/api", 3},
        {NULL, "/api/v1", 3},
        {"unknown.org", "/api", 3},
        {"unknown.org", "/", 4},
    };
    run_cases(main_routes, NROUTES(main_routes), cases, NROUTES(cases));
}
END_TEST

START_TEST(test_route_path_prefix) {
    static const route_case_t cases[] = {
        {"chat.example.com", "/wsx", 0}, /* plain string prefix */
        {"chat.example.com", "/w", 1},
        {"chat.example.com", "/ws?token=1", 0},
        {"chat.example.com", "/w?s", 1}, /* query is not part of the path */
        {"chat.example.com", "/w#s", 1}, /* nor the fragment */
        {"other.org", "/ap?i", 4},
        {"other.org", "/apI", 4}, /* paths are case-sensitive */
        {"other.org", "/api#frag", 3},
        {"other.org", "", -1},
        {"other.org", "*", -1},
        {"other.org", "?x", -1},
        /* absolute-form request targets are reduced to their path */
        {"chat.example.com", "http://chat.example.com/ws/a?b", 0},
        {"chat.example.com", "ws://chat.example.com:80/ws", 0},
        {"chat.example.com", "http://chat.example.com", 1},
        {"chat.example.com", "http://chat.example.com?/ws", 1},
        {"other.org", "https://other.org/api/x", 3},
    };
    run_cases(main_routes, NROUTES(main_routes), cases, NROUTES(cases));
}
END_TEST

START_TEST(test_route_first_match_wins) {
    static const wsg_route_conf_t routes[] = {
        ROUTE(NULL, "/a"),          /* 0 */
        ROUTE("h.example", "/a/b"), /* 1: shadowed by 0 */
        ROUTE("*.example", "/"),    /* 2 */
        ROUTE("h.example", "/"),    /* 3: shadowed by 2 */
        ROUTE(NULL, NULL),          /* 4: default prefix "/" */
        ROUTE(NULL, "/"),           /* 5: shadowed by 4 */
    };
    static const route_case_t cases[] = {
        {"h.example", "/a/b", 0},
        {"h.example", "/x", 2},
        {"example", "/x", 4},
        {NULL, "/z", 4},
        {NULL, "z", -1},
    };
    run_cases(routes, NROUTES(routes), cases, NROUTES(cases));
}
END_TEST

START_TEST(test_route_no_match) {
    static const wsg_route_conf_t routes[] = {
        ROUTE("a.example", "/ws"),
        ROUTE("*.b.example", "/ws"),
    };
    static const route_case_t cases[] = {
        {"a.example", "/ws", 0},
        {"x.b.example", "/ws", 1},
        {"a.example", "/", -1},
        {"b.example", "/ws", -1},
        {NULL, "/ws", -1},
        {"", "/ws", -1},
        {"c.example", "/ws", -1},
    };
    run_cases(routes, NROUTES(routes), cases, NROUTES(cases));
    /* An empty route list matches nothing. */
    ck_assert_int_eq(wsg_route_match(routes, 0, "a.example", 9, "/ws", 3), -1);
    /* A NULL path is an empty one. */
    ck_assert_int_eq(wsg_route_match(routes, 2, "a.example", 9, NULL, 0), -1);
}
END_TEST

START_TEST(test_route_route_host_spellings) {
    /* Config lower-cases route hosts, but matching must not depend on it,
     * and a route host written with a port, a trailing dot or a bare IPv6
     * literal names the same host. */
    static const wsg_route_conf_t routes[] = {
        ROUTE("Mixed.Example", "/"),      /* 0 */
        ROUTE("port.example:8080", "/"),  /* 1 */
        ROUTE("dot.example.", "/"),       /* 2 */
        ROUTE("::1", "/"),                /* 3 */
        ROUTE("127.0.0.1", "/"),          /* 4 */
        ROUTE("*.Wild.Example.", "/"),    /* 5 */
        ROUTE("[2001:DB8::1]", "/"),      /* 6 */
    };
    static const route_case_t cases[] = {
        {"mixed.example", "/", 0},
        {"port.example", "/", 1},
        {"port.example:1", "/", 1},
        {"dot.example", "/", 2},
        {"[::1]:80", "/", 3},
        {"127.0.0.1:8080", "/", 4},
        {"127.0.0.1", "/", 4},
        {"127.0.0.2", "/", -1},
        {"x.wild.example", "/", 5},
        {"wild.example", "/", -1},
        {"[2001:db8::1]:443", "/", 6},
    };
    run_cases(routes, NROUTES(routes), cases, NROUTES(cases));
}
END_TEST

START_TEST(test_route_respects_lengths) {
    /* Lengths, not NULs, delimit the inputs. */
    static const wsg_route_conf_t routes[] = {
        ROUTE("a.example", "/ws"),
        ROUTE(NULL, "/"),
    };
    const char *host = "a.example.evil:80";
    const char *path = "/ws/tail";
    ck_assert_int_eq(wsg_route_match(routes, 2, host, 9, path, 3), 0);
    ck_assert_int_eq(wsg_route_match(routes, 2, host, 10, path, 3), 0); /* trailing dot */
    ck_assert_int_eq(wsg_route_match(routes, 2, host, 11, path, 3), 1);
    ck_assert_int_eq(wsg_route_match(routes, 2, host, 9, path, 2), 1);
    ck_assert_int_eq(wsg_route_match(routes, 2, host, 0, path, 3), 1);
    ck_assert_int_eq(wsg_route_match(routes, 2, host, 9, path, 0), -1);
}
END_TEST

Suite *wsg_route_suite(void) {
    Suite *s = suite_create("route");

    TCase *tc = tcase_create("host");
    tcase_add_test(tc, test_route_host_exact_and_case);
    tcase_add_test(tc, test_route_host_port_stripped);
    tcase_add_test(tc, test_route_host_wildcard);
    tcase_add_test(tc, test_route_host_absent);
    tcase_add_test(tc, test_route_route_host_spellings);
    suite_add_tcase(s, tc);

    tc = tcase_create("path");
    tcase_add_test(tc, test_route_path_prefix);
    suite_add_tcase(s, tc);

    tc = tcase_create("order");
    tcase_add_test(tc, test_route_first_match_wins);
    tcase_add_test(tc, test_route_no_match);
    tcase_add_test(tc, test_route_respects_lengths);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_route_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
