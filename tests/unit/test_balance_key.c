/*
 * Unit tests of sticky-key extraction: each key kind, present, absent and
 * empty, several cookies and Cookie headers, query string edge cases.
 */
#include <wsgate/balance_key.h>

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct req_s {
    wsg_http_head_t *h;
    char *buf;
} req_t;

static req_t req(const char *target, const char *headers) {
    req_t r;
    size_t cap = strlen(target) + strlen(headers) + 64;
    int n;

    r.buf = malloc(cap);
    ck_assert_ptr_nonnull(r.buf);
    n = snprintf(r.buf, cap, "GET %s HTTP/1.1\r\nHost: example.com\r\n%s\r\n", target, headers);
    ck_assert_int_gt(n, 0);
    r.h = wsg_http_head_new(WSG_HTTP_REQUEST, 8192);
    ck_assert_ptr_nonnull(r.h);
    ck_assert_int_eq(wsg_http_head_feed(r.h, r.buf, (size_t)n), WSG_HEAD_COMPLETE);
    return r;
}

static void req_free(req_t *r) {
    wsg_http_head_free(r->h);
    free(r->buf);
}

/* Extracts the key of <kind>:<name> from a request; NULL when absent. The
 * returned string is static (one call at a time). */
static const char *key_of(wsg_key_kind_t kind, const char *name, const char *target,
                          const char *headers) {
    static char out[256];
    wsg_balance_conf_t bal = {.key = kind, .key_name = (char *)name};
    req_t r = req(target, headers);
    const char *k = (const char *)&bal; /* must be overwritten */
    size_t len = 12345;
    int found = wsg_balance_key(&bal, r.h, r.buf, "198.51.100.9", NULL, &k, &len);

    ck_assert_int_ge(found, 0);
    ck_assert_int_le(found, 1);
    if (!found) {
        req_free(&r);
        return NULL;
    }
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_lt(len, sizeof(out));
    /* The key points into the request or the client address, not a copy. */
    ck_assert((k >= r.buf && k + len <= r.buf + strlen(r.buf)) || strcmp(k, "198.51.100.9") == 0);
    memcpy(out, k, len);
    out[len] = '\0';
    req_free(&r);
    return out;
}

#define assert_key(got, want)                                                                      \
    do {                                                                                           \
        const char *g_ = (got);                                                                    \
        const char *w_ = (want);                                                                   \
        if (w_ == NULL)                                                                            \
            ck_assert_msg(g_ == NULL, "expected absent, got \"%s\"", g_);                          \
        else                                                                                       \
            ck_assert_msg(g_ != NULL && strcmp(g_, w_) == 0, "expected \"%s\", got \"%s\"", w_,    \
                          g_ ? g_ : "(absent)");                                                   \
    } while (0)

/* ---- ip ------------------------------------------------------------------------ */

START_TEST(test_balance_key_ip) {
    wsg_balance_conf_t bal = {.key = WSG_KEY_IP};
    req_t r = req("/", "");
    const char *k;
    size_t len;

    ck_assert_int_eq(wsg_balance_key(&bal, r.h, r.buf, "2001:db8::1", NULL, &k, &len), 1);
    ck_assert_uint_eq(len, 11);
    ck_assert(memcmp(k, "2001:db8::1", 11) == 0);
    ck_assert_int_eq(wsg_balance_key(&bal, r.h, r.buf, "", NULL, &k, &len), 0);
    ck_assert_int_eq(wsg_balance_key(&bal, r.h, r.buf, NULL, NULL, &k, &len), 0);
    req_free(&r);
}
END_TEST

/* ---- header ---------------------------------------------------------------------- */

START_TEST(test_balance_key_header) {
    assert_key(key_of(WSG_KEY_HEADER, "X-User", "/", "X-User: alice\r\n"), "alice");
    /* Case-insensitive name, trimmed value. */
    assert_key(key_of(WSG_KEY_HEADER, "x-user", "/", "X-USER:   bob smith  \r\n"), "bob smith");
    /* The first of several. */
    assert_key(key_of(WSG_KEY_HEADER, "X-User", "/", "X-User: one\r\nX-User: two\r\n"), "one");
    assert_key(key_of(WSG_KEY_HEADER, "X-User", "/", "X-Other: x\r\n"), NULL);
    assert_key(key_of(WSG_KEY_HEADER, "X-User", "/", "X-User:\r\n"), NULL);
    assert_key(key_of(WSG_KEY_HEADER, "X-User", "/", "X-User:    \r\n"), NULL);
    /* Not a prefix match. */
    assert_key(key_of(WSG_KEY_HEADER, "X-User", "/", "X-User-Id: 7\r\n"), NULL);
    assert_key(key_of(WSG_KEY_HEADER, "Host", "/", ""), "example.com");
}
END_TEST

/* ---- cookie ---------------------------------------------------------------------- */

START_TEST(test_balance_key_cookie) {
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: session=abc123\r\n"), "abc123");
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: a=1; session=xyz; b=2\r\n"), "xyz");
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: a=1; b=2; session=last\r\n"),
               "last");
    /* Whitespace around separators and values is tolerated. */
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: a=1;session = sp ;b=2\r\n"), "sp");
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie:a=1 ;  session=x\t\r\n"), "x");
    /* Quoted values lose their quotes. */
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: session=\"q v\"\r\n"), "q v");
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: session=\"\"\r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: session=\"\r\n"), "\"");
    /* Values may hold '='. */
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: session=a=b==\r\n"), "a=b==");
    /* Names are case-sensitive and exact. */
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: Session=no; sessions=no\r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: xsession=no; session_=no\r\n"),
               NULL);
    /* Empty = absent. */
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: session=; a=1\r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: session\r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: ;;; ; \r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie:\r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", ""), NULL);
    /* Only Cookie headers count. */
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Set-Cookie: session=no\r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "X-Cookie: session=no\r\n"), NULL);
}
END_TEST

START_TEST(test_balance_key_cookie_several_headers) {
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/",
                      "Cookie: a=1; b=2\r\nX-Other: session=no\r\ncookie: c=3; session=s2\r\n"),
               "s2");
    /* The first occurrence wins, across headers. */
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/",
                      "Cookie: session=first\r\nCookie: session=second\r\n"),
               "first");
    assert_key(key_of(WSG_KEY_COOKIE, "session", "/", "Cookie: a=1; session=one; session=two\r\n"),
               "one");
}
END_TEST

/* ---- query ------------------------------------------------------------------------ */

START_TEST(test_balance_key_query) {
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=42", ""), "42");
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?a=1&room=42&b=2", ""), "42");
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?a=1&room=last", ""), "last");
    /* Raw, not percent-decoded. */
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=a%20b+c", ""), "a%20b+c");
    /* The first of several. */
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=1&room=2", ""), "1");
    /* Values may hold '='; a fragment ends the query. */
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=a=b", ""), "a=b");
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=abc#frag", ""), "abc");
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?a=1#room=no", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws#x?room=no", ""), NULL);
    /* Absolute-form targets work too. */
    assert_key(key_of(WSG_KEY_QUERY, "room", "http://example.com/ws?room=7", ""), "7");
}
END_TEST

START_TEST(test_balance_key_query_absent_or_empty) {
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room&a=1", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=&a=1", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?room=#x", ""), NULL);
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?&&&", ""), NULL);
    /* Names are exact and case-sensitive. */
    assert_key(key_of(WSG_KEY_QUERY, "room", "/ws?Room=1&rooms=2&xroom=3", ""), NULL);
    /* The path is not the query. */
    assert_key(key_of(WSG_KEY_QUERY, "room", "/room=1", ""), NULL);
}
END_TEST

START_TEST(test_balance_key_without_name) {
    /* A config always sets key_name for these kinds; be safe anyway. */
    assert_key(key_of(WSG_KEY_HEADER, NULL, "/", "X: 1\r\n"), NULL);
    assert_key(key_of(WSG_KEY_COOKIE, NULL, "/", "Cookie: a=1\r\n"), NULL);
    assert_key(key_of(WSG_KEY_QUERY, NULL, "/?a=1", ""), NULL);
}
END_TEST

Suite *wsg_balance_key_suite(void) {
    Suite *s = suite_create("balance_key");
    TCase *tc;

    tc = tcase_create("ip");
    tcase_add_test(tc, test_balance_key_ip);
    suite_add_tcase(s, tc);

    tc = tcase_create("header");
    tcase_add_test(tc, test_balance_key_header);
    suite_add_tcase(s, tc);

    tc = tcase_create("cookie");
    tcase_add_test(tc, test_balance_key_cookie);
    tcase_add_test(tc, test_balance_key_cookie_several_headers);
    suite_add_tcase(s, tc);

    tc = tcase_create("query");
    tcase_add_test(tc, test_balance_key_query);
    tcase_add_test(tc, test_balance_key_query_absent_or_empty);
    suite_add_tcase(s, tc);

    tc = tcase_create("misc");
    tcase_add_test(tc, test_balance_key_without_name);
    suite_add_tcase(s, tc);

    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_balance_key_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
