/* Unit tests for the sticky cookie codec (SPEC §10): values, tampering,
 * pools, secrets, expiry, and the Cookie / Set-Cookie header work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/sticky_cookie.h>

#define SECRET "0123456789abcdef-sticky"
#define SLEN (sizeof(SECRET) - 1)
#define NOW 1790000000u

static void enc(const char *pool, const char *addr, uint32_t issued, char out[]) {
    ck_assert_int_eq(wsg_sticky_encode(SECRET, SLEN, pool, addr, issued, out), 0);
}

static wsg_sticky_status_t ver(const char *pool, const char *addr, const char *v, uint64_t now,
                               unsigned max_age) {
    return wsg_sticky_verify(SECRET, SLEN, pool, addr, v, strlen(v), now, max_age);
}

START_TEST(test_encode_decode_round_trip) {
    char v[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW, v);
    ck_assert_uint_eq(strlen(v), WSG_STICKY_VALUE_LEN);
    /* base64url: a cookie value needs no quoting. */
    ck_assert_uint_eq(strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                      WSG_STICKY_VALUE_LEN);
    wsg_sticky_value_t pv;
    ck_assert_int_eq(wsg_sticky_parse(v, strlen(v), &pv), WSG_STICKY_OK);
    ck_assert_uint_eq(pv.issued, NOW);
    ck_assert_uint_eq(pv.id, wsg_sticky_id(SECRET, SLEN, "chat", "10.0.0.11:9000"));
    ck_assert_int_eq(ver("chat", "10.0.0.11:9000", v, NOW, 0), WSG_STICKY_OK);
    /* Deterministic: another instance with the same secret writes the same. */
    char w[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW, w);
    ck_assert_str_eq(v, w);
}
END_TEST

START_TEST(test_ids_differ_by_backend_pool_and_secret) {
    uint32_t a = wsg_sticky_id(SECRET, SLEN, "chat", "10.0.0.11:9000");
    ck_assert_uint_ne(a, wsg_sticky_id(SECRET, SLEN, "chat", "10.0.0.12:9000"));
    ck_assert_uint_ne(a, wsg_sticky_id(SECRET, SLEN, "chat2", "10.0.0.11:9000"));
    ck_assert_uint_ne(a, wsg_sticky_id("another-secret-16b", 18, "chat", "10.0.0.11:9000"));
}
END_TEST

START_TEST(test_every_byte_flipped_is_refused) {
    char v[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW, v);
    for (size_t i = 0; i < WSG_STICKY_VALUE_LEN; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            char t[WSG_STICKY_VALUE_LEN + 1];
            memcpy(t, v, sizeof t);
            t[i] = (char)(t[i] ^ (1u << bit));
            wsg_sticky_status_t st = wsg_sticky_verify(SECRET, SLEN, "chat", "10.0.0.11:9000",
                                                       t, WSG_STICKY_VALUE_LEN, NOW, 0);
            ck_assert_msg(st != WSG_STICKY_OK, "byte %zu bit %u flipped still verifies", i, bit);
        }
    }
}
END_TEST

START_TEST(test_every_character_replaced_is_refused) {
    /* Within the alphabet too: a flip that stays base64url still fails the MAC. */
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char v[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW, v);
    for (size_t i = 0; i < WSG_STICKY_VALUE_LEN; i++) {
        for (size_t k = 0; k < sizeof(alpha) - 1; k++) {
            if (alpha[k] == v[i])
                continue;
            char t[WSG_STICKY_VALUE_LEN + 1];
            memcpy(t, v, sizeof t);
            t[i] = alpha[k];
            ck_assert_msg(ver("chat", "10.0.0.11:9000", t, NOW, 0) != WSG_STICKY_OK,
                          "position %zu as '%c' still verifies", i, alpha[k]);
        }
    }
}
END_TEST

START_TEST(test_wrong_pool_backend_or_secret) {
    char v[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW, v);
    ck_assert_int_eq(ver("chat2", "10.0.0.11:9000", v, NOW, 0), WSG_STICKY_FORGED);
    ck_assert_int_eq(ver("chat", "10.0.0.12:9000", v, NOW, 0), WSG_STICKY_FORGED);
    static const char other[] = "0123456789abcdef-stickY";
    ck_assert_int_eq(wsg_sticky_verify(other, sizeof(other) - 1, "chat", "10.0.0.11:9000", v,
                                       strlen(v), NOW, 0),
                     WSG_STICKY_FORGED);
}
END_TEST

START_TEST(test_malformed_values) {
    static const char *const bad[] = {
        "", "x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   /* 33 */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",          /* 35 */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",           /* padding */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+/",           /* plain base64 */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",           /* version 0 */
    };
    wsg_sticky_value_t pv;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(wsg_sticky_parse(bad[i], strlen(bad[i]), &pv), WSG_STICKY_MALFORMED);
        ck_assert_int_eq(ver("chat", "10.0.0.11:9000", bad[i], NOW, 0), WSG_STICKY_MALFORMED);
    }
    /* The unused low bits of the last character must be zero: one spelling. */
    char v[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW, v);
    v[WSG_STICKY_VALUE_LEN - 1] = (char)(v[WSG_STICKY_VALUE_LEN - 1] == 'A' ? 'B' : 'A' + 1);
    ck_assert_int_ne(ver("chat", "10.0.0.11:9000", v, NOW, 0), WSG_STICKY_OK);
}
END_TEST

START_TEST(test_expiry) {
    char v[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW, v);
    ck_assert_int_eq(ver("chat", "10.0.0.11:9000", v, NOW + 3600, 3600), WSG_STICKY_OK);
    ck_assert_int_eq(ver("chat", "10.0.0.11:9000", v, NOW + 3601, 3600), WSG_STICKY_EXPIRED);
    /* max_age_s 0: a session cookie, no age limit here. */
    ck_assert_int_eq(ver("chat", "10.0.0.11:9000", v, NOW + 10u * 365 * 86400, 0), WSG_STICKY_OK);
    /* Clocks of two instances differ a little, not by hours. */
    ck_assert_int_eq(ver("chat", "10.0.0.11:9000", v, NOW - WSG_STICKY_SKEW_S, 60), WSG_STICKY_OK);
    ck_assert_int_eq(ver("chat", "10.0.0.11:9000", v, NOW - WSG_STICKY_SKEW_S - 1, 60),
                     WSG_STICKY_EXPIRED);
    /* The issue time is under the MAC: a client cannot make it younger. */
    wsg_sticky_value_t pv;
    ck_assert_int_eq(wsg_sticky_parse(v, strlen(v), &pv), WSG_STICKY_OK);
    char w[WSG_STICKY_VALUE_LEN + 1];
    enc("chat", "10.0.0.11:9000", NOW + 7200, w);
    memcpy(w + 12, v + 12, WSG_STICKY_VALUE_LEN - 12); /* new time, old MAC */
    ck_assert_int_ne(ver("chat", "10.0.0.11:9000", w, NOW + 7200, 3600), WSG_STICKY_OK);
}
END_TEST

static void strip_is(const char *in, const char *name, const char *want) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", in);
    size_t n = wsg_sticky_strip(buf, strlen(buf), name);
    buf[n] = '\0';
    ck_assert_msg(strcmp(buf, want) == 0, "strip(\"%s\", %s) = \"%s\", want \"%s\"", in, name, buf,
                  want);
}

START_TEST(test_strip_keeps_other_cookies) {
    strip_is("wsg=abc", "wsg", "");
    strip_is("a=1; wsg=abc; b=2", "wsg", "a=1; b=2");
    strip_is("wsg=abc; a=1", "wsg", "a=1");
    strip_is("a=1; wsg=abc", "wsg", "a=1");
    strip_is("a=1;b=2", "wsg", "a=1;b=2");
    strip_is("a=1;wsg=x;b=2", "wsg", "a=1; b=2"); /* room for the space */
    strip_is("wsg=1; wsg=2; io=abc", "wsg", "io=abc");
    strip_is("wsgx=1; xwsg=2; WSG=3", "wsg", "wsgx=1; xwsg=2; WSG=3");
    strip_is("a=1;  ;wsg = v ; b=\"q\"", "wsg", "a=1; b=\"q\"");
    strip_is("a=1", "wsg", "a=1");
    strip_is("", "wsg", "");
}
END_TEST

START_TEST(test_filter_head) {
    char head[512];
    snprintf(head, sizeof head,
             "GET / HTTP/1.1\r\nHost: a\r\nCookie: wsg=abc; io=1\r\nX: cookie: wsg=1\r\n"
             "cookie: wsg=zzz\r\nCookie2: wsg=1\r\n\r\n");
    size_t n = wsg_sticky_filter_head(head, strlen(head), "wsg");
    head[n] = '\0';
    ck_assert_str_eq(head, "GET / HTTP/1.1\r\nHost: a\r\nCookie: io=1\r\nX: cookie: wsg=1\r\n"
                           "Cookie2: wsg=1\r\n\r\n");
    snprintf(head, sizeof head, "GET / HTTP/1.1\r\nCookie: a=b\r\n\r\n");
    n = wsg_sticky_filter_head(head, strlen(head), "wsg");
    ck_assert_uint_eq(n, strlen("GET / HTTP/1.1\r\nCookie: a=b\r\n\r\n"));
}
END_TEST

static wsg_cookie_conf_t conf(void) {
    wsg_cookie_conf_t ck = {.enabled = true, .name = "wsg", .path = "/",
                            .secure = WSG_COOKIE_SECURE_AUTO, .same_site = WSG_SAME_SITE_LAX};
    return ck;
}

START_TEST(test_set_cookie_line) {
    char out[256];
    wsg_cookie_conf_t ck = conf();
    ssize_t n = wsg_sticky_set_cookie(&ck, "VALUE", false, out, sizeof out);
    ck_assert_int_gt(n, 0);
    ck_assert_str_eq(out, "Set-Cookie: wsg=VALUE; Path=/; HttpOnly; SameSite=Lax\r\n");
    wsg_sticky_set_cookie(&ck, "VALUE", true, out, sizeof out);
    ck_assert_str_eq(out, "Set-Cookie: wsg=VALUE; Path=/; HttpOnly; SameSite=Lax; Secure\r\n");
    ck.secure = WSG_COOKIE_SECURE_OFF;
    wsg_sticky_set_cookie(&ck, "VALUE", true, out, sizeof out);
    ck_assert_str_eq(out, "Set-Cookie: wsg=VALUE; Path=/; HttpOnly; SameSite=Lax\r\n");
    ck.same_site = WSG_SAME_SITE_NONE; /* forces Secure */
    ck.max_age_s = 3600;
    ck.path = "/app";
    ck.name = "lb";
    wsg_sticky_set_cookie(&ck, "V", false, out, sizeof out);
    ck_assert_str_eq(out,
                     "Set-Cookie: lb=V; Path=/app; HttpOnly; SameSite=None; Secure; Max-Age=3600\r\n");
    ck.same_site = WSG_SAME_SITE_STRICT;
    ck.secure = WSG_COOKIE_SECURE_ON;
    ck.max_age_s = 0;
    wsg_sticky_set_cookie(&ck, "V", false, out, sizeof out);
    ck_assert_str_eq(out, "Set-Cookie: lb=V; Path=/app; HttpOnly; SameSite=Strict; Secure\r\n");
    ck_assert_int_eq(wsg_sticky_set_cookie(&ck, "V", false, out, 20), -1);
}
END_TEST

START_TEST(test_head_insert) {
    char head[128] = "HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
    const char *line = "Set-Cookie: x=y\r\n";
    ssize_t n = wsg_sticky_head_insert(head, strlen(head), sizeof head, line, strlen(line));
    ck_assert_int_gt(n, 0);
    head[n] = '\0';
    ck_assert_str_eq(head, "HTTP/1.1 200 OK\r\nA: b\r\nSet-Cookie: x=y\r\n\r\n");
    ck_assert_int_eq(wsg_sticky_head_insert(head, (size_t)n, (size_t)n + 3, line, strlen(line)), -1);
    char partial[] = "HTTP/1.1 200 OK\r\n";
    ck_assert_int_eq(wsg_sticky_head_insert(partial, strlen(partial), 64, line, strlen(line)), -1);
}
END_TEST

static Suite *sticky_suite(void) {
    Suite *s = suite_create("sticky_cookie");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_encode_decode_round_trip);
    tcase_add_test(tc, test_ids_differ_by_backend_pool_and_secret);
    tcase_add_test(tc, test_every_byte_flipped_is_refused);
    tcase_add_test(tc, test_every_character_replaced_is_refused);
    tcase_add_test(tc, test_wrong_pool_backend_or_secret);
    tcase_add_test(tc, test_malformed_values);
    tcase_add_test(tc, test_expiry);
    tcase_add_test(tc, test_strip_keeps_other_cookies);
    tcase_add_test(tc, test_filter_head);
    tcase_add_test(tc, test_set_cookie_line);
    tcase_add_test(tc, test_head_insert);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(sticky_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
