/* Unit tests for the per-address connection counts. */
#include <arpa/inet.h>
#include <stdio.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <wsgate/ip_limit.h>

static struct sockaddr_storage v4(const char *ip, unsigned port) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &in->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *ip) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;
    in->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &in->sin6_addr);
    return ss;
}

#define SA(x) ((const struct sockaddr *)&(x))

START_TEST(test_ip_limit_bounds_one_address_not_others) {
    wsg_ip_limit_t *t = wsg_ip_limit_new();
    struct sockaddr_storage a = v4("10.0.0.1", 1000), a2 = v4("10.0.0.1", 2000),
                            b = v4("10.0.0.2", 1000);
    ck_assert(wsg_ip_limit_acquire(t, SA(a), 2));
    ck_assert(wsg_ip_limit_acquire(t, SA(a2), 2)); /* the port does not matter */
    ck_assert(!wsg_ip_limit_acquire(t, SA(a), 2));
    ck_assert(wsg_ip_limit_acquire(t, SA(b), 2));
    ck_assert_uint_eq(wsg_ip_limit_size(t), 2);
    wsg_ip_limit_release(t, SA(a));
    ck_assert(wsg_ip_limit_acquire(t, SA(a), 2));
    wsg_ip_limit_free(t);
}
END_TEST

START_TEST(test_ip_limit_frees_entries_at_zero) {
    wsg_ip_limit_t *t = wsg_ip_limit_new();
    char ip[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        struct sockaddr_storage s = v4(ip, 1);
        ck_assert(wsg_ip_limit_acquire(t, SA(s), 1));
    }
    ck_assert_uint_eq(wsg_ip_limit_size(t), 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        struct sockaddr_storage s = v4(ip, 1);
        wsg_ip_limit_release(t, SA(s));
    }
    ck_assert_uint_eq(wsg_ip_limit_size(t), 0);
    wsg_ip_limit_free(t);
}
END_TEST

START_TEST(test_ip_limit_separates_families) {
    wsg_ip_limit_t *t = wsg_ip_limit_new();
    struct sockaddr_storage a = v6("::1"), b = v4("0.0.0.1", 0);
    ck_assert(wsg_ip_limit_acquire(t, SA(a), 1));
    ck_assert(wsg_ip_limit_acquire(t, SA(b), 1));
    ck_assert(!wsg_ip_limit_acquire(t, SA(a), 1));
    wsg_ip_limit_release(t, SA(a));
    wsg_ip_limit_release(t, SA(b));
    ck_assert_uint_eq(wsg_ip_limit_size(t), 0);
    wsg_ip_limit_free(t);
}
END_TEST

static wsg_ip_limit_t *shared;
static void hammer(void *arg) {
    struct sockaddr_storage s = v4((const char *)arg, 9);
    for (int i = 0; i < 20000; i++) {
        if (wsg_ip_limit_acquire(shared, SA(s), 1000000))
            wsg_ip_limit_release(shared, SA(s));
    }
}

START_TEST(test_ip_limit_is_thread_safe) {
    uv_thread_t th[4];
    const char *ips[4] = {"1.1.1.1", "1.1.1.1", "2.2.2.2", "3.3.3.3"};
    shared = wsg_ip_limit_new();
    for (int i = 0; i < 4; i++)
        uv_thread_create(&th[i], hammer, (void *)ips[i]);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&th[i]);
    ck_assert_uint_eq(wsg_ip_limit_size(shared), 0);
    wsg_ip_limit_free(shared);
}
END_TEST

static Suite *wsg_ip_limit_suite(void) {
    Suite *s = suite_create("ip_limit");
    TCase *tc = tcase_create("counts");
    tcase_add_test(tc, test_ip_limit_bounds_one_address_not_others);
    tcase_add_test(tc, test_ip_limit_frees_entries_at_zero);
    tcase_add_test(tc, test_ip_limit_separates_families);
    tcase_add_test(tc, test_ip_limit_is_thread_safe);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_ip_limit_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
