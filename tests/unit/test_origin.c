/* Unit tests for Origin normalisation and the allowlist check (SPEC §11). */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/origin.h>

START_TEST(test_origin_normalizes_as_rfc6454_serialises) {
    static const struct {
        const char *in, *out;
    } t[] = {
        {"https://chat.example.com", "https://chat.example.com"},
        {"HTTPS://Chat.Example.COM", "https://chat.example.com"},
        {"https://chat.example.com:443", "https://chat.example.com"},
        {"http://chat.example.com:80", "http://chat.example.com"},
        {"wss://chat.example.com:443", "wss://chat.example.com"},
        {"ws://chat.example.com:80", "ws://chat.example.com"},
        {"http://chat.example.com:443", "http://chat.example.com:443"},
        {"https://chat.example.com:80", "https://chat.example.com:80"},
        {"https://chat.example.com:08443", "https://chat.example.com:8443"},
        {"https://chat.example.com:0443", "https://chat.example.com"},
        {"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
        {"http://[::1]:8080", "http://[::1]:8080"},
        {"http://[FE80::A]", "http://[fe80::a]"},
        {"  https://a.example  ", "https://a.example"},
        {"chrome-extension://abcdef", "chrome-extension://abcdef"},
        {"https://xn--caf-dma.example", "https://xn--caf-dma.example"},
        {"https://a.example.:65535", "https://a.example.:65535"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char out[WSG_ORIGIN_MAX + 1];
        size_t n = 0;
        const char *why = NULL;
        wsg_origin_status_t st =
            wsg_origin_normalize(t[i].in, strlen(t[i].in), out, sizeof(out), &n, &why);
        ck_assert_msg(st == WSG_ORIGIN_OK, "'%s': %s", t[i].in, why ? why : "?");
        ck_assert_str_eq(out, t[i].out);
        ck_assert_uint_eq(n, strlen(t[i].out));
    }
}
END_TEST

START_TEST(test_origin_rejects_what_is_not_an_origin) {
    static const struct {
        const char *in, *why;
    } t[] = {
        {"null", "null"},
        {"https://chat.example.com/", "trailing slash"},
        {"https://chat.example.com/app", "no path"},
        {"https://chat.example.com?x=1", "no query"},
        {"https://chat.example.com#x", "no query or fragment"},
        {"https://user@chat.example.com", "user info"},
        {"https://", "empty host"},
        {"https://:443", "empty host"},
        {"chat.example.com", "scheme://"},
        {"//chat.example.com", "scheme://"},
        {"1http://a", "scheme://"},
        {"https:/chat.example.com", "scheme://"},
        {"https://chat.example.com:", "port"},
        {"https://chat.example.com:0", "port"},
        {"https://chat.example.com:65536", "port"},
        {"https://chat.example.com:1234567", "port"},
        {"https://chat.example.com:44x", "unexpected"},
        {"https://caf\xc3\xa9.example", "punycode"},
        {"https://a.example https://b.example", "unexpected"},
        {"http://[::1", "IPv6"},
        {"http://[]", "IPv6"},
        {"http://[::g]", "IPv6"},
        {"", "scheme://"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char out[WSG_ORIGIN_MAX + 1] = "untouched";
        const char *why = NULL;
        wsg_origin_status_t st =
            wsg_origin_normalize(t[i].in, strlen(t[i].in), out, sizeof(out), NULL, &why);
        ck_assert_msg(st == WSG_ORIGIN_EINVAL, "'%s' accepted as '%s'", t[i].in, out);
        ck_assert_msg(why != NULL && strstr(why, t[i].why) != NULL, "'%s': reason '%s'", t[i].in,
                      why ? why : "(none)");
        ck_assert_str_eq(out, "untouched");
    }
}
END_TEST

START_TEST(test_origin_bounds_lengths) {
    char big[WSG_ORIGIN_MAX + 64], out[WSG_ORIGIN_MAX + 1];
    size_t n = 0;
    memcpy(big, "https://", 8);
    memset(big + 8, 'a', sizeof(big) - 8);
    /* exactly WSG_ORIGIN_MAX is fine, one more is not */
    ck_assert_int_eq(wsg_origin_normalize(big, WSG_ORIGIN_MAX, out, sizeof(out), &n, NULL),
                     WSG_ORIGIN_OK);
    ck_assert_uint_eq(n, WSG_ORIGIN_MAX);
    ck_assert_int_eq(wsg_origin_normalize(big, WSG_ORIGIN_MAX + 1, out, sizeof(out), &n, NULL),
                     WSG_ORIGIN_ENOSPC);
    ck_assert_int_eq(wsg_origin_normalize(big, sizeof(big), out, sizeof(out), &n, NULL),
                     WSG_ORIGIN_ENOSPC);
    /* a default port that is dropped makes it fit */
    memcpy(big + WSG_ORIGIN_MAX, ":443", 4);
    ck_assert_int_eq(wsg_origin_normalize(big, WSG_ORIGIN_MAX + 4, out, sizeof(out), &n, NULL),
                     WSG_ORIGIN_OK);
    /* and the caller's buffer is respected */
    char small[8];
    ck_assert_int_eq(wsg_origin_normalize("https://a.example", 17, small, sizeof(small), &n, NULL),
                     WSG_ORIGIN_ENOSPC);
    char fits[10]; /* "http://ab" and its NUL exactly */
    ck_assert_int_eq(wsg_origin_normalize("http://ab", 9, fits, sizeof(fits), &n, NULL),
                     WSG_ORIGIN_OK);
    ck_assert_int_eq(wsg_origin_normalize("http://abc", 10, fits, sizeof(fits), &n, NULL),
                     WSG_ORIGIN_ENOSPC);
}
END_TEST

START_TEST(test_origin_check_against_list) {
    const char *list[] = {"https://chat.example.com", "http://localhost:3000"};
    static const struct {
        const char *origin;
        wsg_origin_verdict_t want;
    } t[] = {
        {"https://chat.example.com", WSG_ORIGIN_ALLOWED},
        {"https://CHAT.example.com:443", WSG_ORIGIN_ALLOWED},
        {"http://localhost:3000", WSG_ORIGIN_ALLOWED},
        {"http://chat.example.com", WSG_ORIGIN_REFUSED},
        {"https://chat.example.com:8443", WSG_ORIGIN_REFUSED},
        {"https://chat.example.com/", WSG_ORIGIN_REFUSED},
        {"https://evil-chat.example.com", WSG_ORIGIN_REFUSED},
        {"https://chat.example.com.evil.net", WSG_ORIGIN_REFUSED},
        {"http://localhost", WSG_ORIGIN_REFUSED},
        {"null", WSG_ORIGIN_REFUSED},
        {"", WSG_ORIGIN_REFUSED},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_msg(wsg_origin_check(list, 2, t[i].origin, strlen(t[i].origin)) == t[i].want,
                      "'%s'", t[i].origin);
    ck_assert_int_eq(wsg_origin_check(list, 2, NULL, 0), WSG_ORIGIN_MISSING);
    /* no list: not checked at all */
    ck_assert_int_eq(wsg_origin_check(NULL, 0, "https://evil.example", 20), WSG_ORIGIN_ALLOWED);
    ck_assert_int_eq(wsg_origin_check(NULL, 0, NULL, 0), WSG_ORIGIN_ALLOWED);
    /* an empty list allows no present Origin */
    ck_assert_int_eq(wsg_origin_check(list, 0, "https://chat.example.com", 24), WSG_ORIGIN_REFUSED);
    /* the origin need not be NUL-terminated */
    ck_assert_int_eq(wsg_origin_check(list, 2, "https://chat.example.comXYZ", 24),
                     WSG_ORIGIN_ALLOWED);
}
END_TEST

static Suite *wsg_origin_suite(void) {
    Suite *s = suite_create("origin");
    TCase *tc = tcase_create("normalize");
    tcase_add_test(tc, test_origin_normalizes_as_rfc6454_serialises);
    tcase_add_test(tc, test_origin_rejects_what_is_not_an_origin);
    tcase_add_test(tc, test_origin_bounds_lengths);
    suite_add_tcase(s, tc);
    tc = tcase_create("check");
    tcase_add_test(tc, test_origin_check_against_list);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_origin_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
