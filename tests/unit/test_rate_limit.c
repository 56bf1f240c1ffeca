/*
 * Unit tests for the token buckets and the shared per-address table: the
 * bucket rule of SPEC §11 (burst 0 = one second's worth, Retry-After in
 * whole seconds, at least 1), byte shaping, and the table's exactness under
 * threads, its fixed memory under a flood of addresses, and slot reuse.
 * Time is simulated: every call is given its "now", nothing sleeps.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <uv.h>

#include <wsgate/rate_limit.h>

START_TEST(test_rate_limit_bucket_allows_burst_then_rate) {
    wsg_rate_t r;
    wsg_rate_bucket_t b = {0};
    uint64_t wait = 0;
    ck_assert_int_eq(wsg_rate_init(&r, 10, 5), 0);
    uint64_t now = 123456;
    for (int i = 0; i < 5; i++)
        ck_assert_msg(wsg_rate_take(&b, &r, now, &wait), "take %d of the burst", i);
    ck_assert(!wsg_rate_take(&b, &r, now, &wait));
    ck_assert_uint_eq(wait, 100); /* one token every 100 ms */
    ck_assert(!wsg_rate_take(&b, &r, now + 99, &wait));
    ck_assert_uint_eq(wait, 1);
    ck_assert(wsg_rate_take(&b, &r, now + 100, &wait));
    ck_assert(!wsg_rate_take(&b, &r, now + 100, &wait));
    /* a long rest refills to the burst, never beyond */
    now += 100000;
    for (int i = 0; i < 5; i++)
        ck_assert(wsg_rate_take(&b, &r, now, NULL));
    ck_assert(!wsg_rate_take(&b, &r, now, NULL));
    /* over a long run, the rate is per_s exactly: one at +100 ms ... +10 s */
    int ok = 0;
    for (uint64_t t = now; t <= now + 10000; t++)
        ok += wsg_rate_take(&b, &r, t, NULL);
    ck_assert_int_eq(ok, 100);
}
END_TEST

START_TEST(test_rate_limit_burst_zero_is_one_second) {
    wsg_rate_t r;
    wsg_rate_bucket_t b = {0};
    ck_assert_int_eq(wsg_rate_init(&r, 3, 0), 0);
    ck_assert_uint_eq(r.burst, 3);
    for (int i = 0; i < 3; i++) /* 1 s / 3 rounds up: the burst must still fit */
        ck_assert(wsg_rate_take(&b, &r, 0, NULL));
    ck_assert(!wsg_rate_take(&b, &r, 0, NULL));
    ck_assert_int_eq(wsg_rate_init(&r, 0, 5), -EINVAL);
}
END_TEST

START_TEST(test_rate_limit_time_going_back_refills_nothing) {
    wsg_rate_t r;
    wsg_rate_bucket_t b = {0};
    wsg_rate_init(&r, 1, 1);
    ck_assert(wsg_rate_take(&b, &r, 5000, NULL));
    ck_assert(!wsg_rate_take(&b, &r, 1000, NULL));
    ck_assert(!wsg_rate_take(&b, &r, 5999, NULL));
    ck_assert(wsg_rate_take(&b, &r, 6000, NULL));
}
END_TEST

START_TEST(test_rate_limit_retry_after_is_whole_seconds) {
    ck_assert_uint_eq(wsg_rate_retry_after_s(0), 1);
    ck_assert_uint_eq(wsg_rate_retry_after_s(1), 1);
    ck_assert_uint_eq(wsg_rate_retry_after_s(1000), 1);
    ck_assert_uint_eq(wsg_rate_retry_after_s(1001), 2);
    ck_assert_uint_eq(wsg_rate_retry_after_s(59999), 60);
    /* from a real refusal: 1 per 10 s, burst 1 */
    wsg_rate_t r;
    wsg_rate_bucket_t b = {0};
    uint64_t wait = 0;
    wsg_rate_init(&r, 1, 1);
    ck_assert(wsg_rate_take(&b, &r, 0, &wait));
    ck_assert(!wsg_rate_take(&b, &r, 250, &wait));
    ck_assert_uint_eq(wait, 750);
    ck_assert_uint_eq(wsg_rate_retry_after_s(wait), 1);
}
END_TEST

/* A 10 MiB upload shaped to 1 MiB/s (burst one second's worth) takes 9 s
 * of pauses: the first MiB goes at once, the rest at the rate. */
START_TEST(test_rate_limit_charge_shapes_bytes) {
    wsg_rate_t r;
    wsg_rate_bucket_t b = {0};
    ck_assert_int_eq(wsg_rate_init(&r, 1 << 20, 0), 0);
    uint64_t now = 1000, sent = 0;
    while (sent < 10u << 20) {
        uint64_t pause = wsg_rate_charge(&b, &r, 65536, now);
        sent += 65536;
        now += pause; /* reads resume after the pause */
    }
    uint64_t took = now - 1000;
    ck_assert_msg(took >= 8990 && took <= 9010, "took %llu ms", (unsigned long long)took);
    /* a small charge within the burst never pauses */
    wsg_rate_bucket_t c = {0};
    ck_assert_uint_eq(wsg_rate_charge(&c, &r, 1000, 0), 0);
}
END_TEST

/* ---- the shared table ---------------------------------------------------------- */

static size_t key4(unsigned char k[17], uint32_t ip) {
    struct sockaddr_in in;
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(ip);
    return wsg_rate_addr_key((const struct sockaddr *)&in, k);
}

START_TEST(test_rate_limit_table_limits_each_address) {
    wsg_rate_table_t *t = wsg_rate_table_new(1000);
    ck_assert_uint_eq(wsg_rate_table_slots(t), 1024);
    wsg_rate_t r;
    wsg_rate_init(&r, 2, 3);
    unsigned char a[17], b[17];
    size_t al = key4(a, 0x0a000001), bl = key4(b, 0x0a000002);
    uint64_t wait = 0;
    for (int i = 0; i < 3; i++)
        ck_assert(wsg_rate_table_take(t, &r, a, al, 5000, &wait));
    ck_assert(!wsg_rate_table_take(t, &r, a, al, 5000, &wait));
    ck_assert_uint_eq(wait, 500);
    ck_assert(wsg_rate_table_take(t, &r, b, bl, 5000, &wait)); /* b has its own bucket */
    ck_assert(wsg_rate_table_take(t, &r, a, al, 5500, &wait));
    ck_assert(!wsg_rate_table_take(t, &r, a, al, 5500, &wait));
    ck_assert_uint_eq(wsg_rate_table_evictions(t), 0);
    wsg_rate_table_free(t);
}
END_TEST

START_TEST(test_rate_limit_addr_key) {
    unsigned char k1[17], k2[17];
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    memset(&in, 0, sizeof(in));
    memset(&in6, 0, sizeof(in6));
    in.sin_family = AF_INET;
    in.sin_port = htons(1234);
    inet_pton(AF_INET, "192.0.2.7", &in.sin_addr);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(999);
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6.sin6_addr);
    size_t n1 = wsg_rate_addr_key((struct sockaddr *)&in, k1),
           n2 = wsg_rate_addr_key((struct sockaddr *)&in6, k2);
    ck_assert_uint_eq(n1, 5);
    ck_assert(n1 == n2 && memcmp(k1, k2, n1) == 0); /* one client on a dual-stack socket */
    inet_pton(AF_INET6, "2001:db8::7", &in6.sin6_addr);
    ck_assert_uint_eq(wsg_rate_addr_key((struct sockaddr *)&in6, k2), 17);
    struct sockaddr un = {.sa_family = AF_UNIX};
    ck_assert_uint_eq(wsg_rate_addr_key(&un, k1), 0);
}
END_TEST

/* A flood of distinct addresses, far more than the table holds, neither
 * grows memory nor frees an address that has used up its burst: its
 * bucket is the least full of its group and is taken over last. */
START_TEST(test_rate_limit_table_flood_keeps_memory_and_limits) {
    wsg_rate_table_t *t = wsg_rate_table_new(1024);
    wsg_rate_t r;
    wsg_rate_init(&r, 1, 10);
    unsigned char v[17], k[17];
    size_t vl = key4(v, 0xc0000201);
    for (int i = 0; i < 10; i++)
        ck_assert(wsg_rate_table_take(t, &r, v, vl, 1000, NULL));
    ck_assert(!wsg_rate_table_take(t, &r, v, vl, 1000, NULL));
    /* Each new one is full, save a newcomer whose 16-bit tag, in v's group,
     * is v's (the hash is seeded per table: about one run in forty, once):
     * it shares v's spent bucket. More than a few would be a broken table. */
    unsigned shared_bucket = 0;
    for (uint32_t i = 0; i < 200000; i++) {
        size_t kl = key4(k, 0x0b000000 + i);
        shared_bucket += !wsg_rate_table_take(t, &r, k, kl, 1000, NULL);
    }
    ck_assert_uint_le(shared_bucket, 3);
    ck_assert_uint_gt(wsg_rate_table_evictions(t), 0);
    ck_assert_uint_eq(wsg_rate_table_slots(t), 1024);
    ck_assert(!wsg_rate_table_take(t, &r, v, vl, 1000, NULL));
    wsg_rate_table_free(t);
}
END_TEST

/* Buckets whose time has passed are full, so their slots are reused for
 * new addresses without counting an eviction. */
START_TEST(test_rate_limit_table_reuses_idle_slots) {
    wsg_rate_table_t *t = wsg_rate_table_new(1024);
    wsg_rate_t r;
    /* A burst of 2, not 1: the hash is seeded per table, and two of 1,024
     * addresses sharing a 16-bit tag in one group (about one run in
     * twenty) share a bucket; with 2 tokens that costs neither a take. */
    wsg_rate_init(&r, 10, 2);
    unsigned char k[17];
    for (uint32_t i = 0; i < 1024; i++) { /* fills the table (some groups overflow) */
        size_t kl = key4(k, i);
        ck_assert(wsg_rate_table_take(t, &r, k, kl, 1000, NULL));
    }
    uint64_t before = wsg_rate_table_evictions(t);
    /* 1 s later every bucket is full again: 64 newcomers (a handful per
     * group of 8) take idle slots, which is no eviction. */
    for (uint32_t i = 5000; i < 5064; i++) {
        size_t kl = key4(k, i);
        ck_assert(wsg_rate_table_take(t, &r, k, kl, 2000, NULL));
    }
    ck_assert_uint_eq(wsg_rate_table_evictions(t), before);
    /* and a newcomer is limited like anyone else: its second token, then no more */
    size_t kl = key4(k, 5000);
    ck_assert(wsg_rate_table_take(t, &r, k, kl, 2000, NULL));
    ck_assert(!wsg_rate_table_take(t, &r, k, kl, 2000, NULL));
    wsg_rate_table_free(t);
}
END_TEST

/* Four threads hammer two addresses at one instant, released together by
 * a barrier, with a burst larger than one thread's share so that the takes
 * that succeed really race: exactly <burst> succeed per address in total
 * (no lost or doubled update). */
#define TAKES 100000
#define BURST 150000
static wsg_rate_table_t *shared;
static wsg_rate_t shared_rate;
static uv_barrier_t start;
static int successes[4];

static void hammer(void *arg) {
    int id = (int)(intptr_t)arg;
    unsigned char k[17];
    size_t kl = key4(k, id % 2 == 0 ? 0x01010101 : 0x02020202);
    uv_barrier_wait(&start);
    for (int i = 0; i < TAKES; i++)
        successes[id] += wsg_rate_table_take(shared, &shared_rate, k, kl, 777, NULL);
}

START_TEST(test_rate_limit_table_is_exact_across_threads) {
    shared = wsg_rate_table_new(4096);
    wsg_rate_init(&shared_rate, 1, BURST);
    uv_barrier_init(&start, 4);
    uv_thread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(uv_thread_create(&th[i], hammer, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&th[i]);
    uv_barrier_destroy(&start);
    ck_assert_int_eq(successes[0] + successes[2], BURST);
    ck_assert_int_eq(successes[1] + successes[3], BURST);
    wsg_rate_table_free(shared);
}
END_TEST

static Suite *wsg_rate_limit_suite(void) {
    Suite *s = suite_create("rate_limit");
    TCase *tc = tcase_create("bucket");
    tcase_add_test(tc, test_rate_limit_bucket_allows_burst_then_rate);
    tcase_add_test(tc, test_rate_limit_burst_zero_is_one_second);
    tcase_add_test(tc, test_rate_limit_time_going_back_refills_nothing);
    tcase_add_test(tc, test_rate_limit_retry_after_is_whole_seconds);
    tcase_add_test(tc, test_rate_limit_charge_shapes_bytes);
    suite_add_tcase(s, tc);
    tc = tcase_create("table");
    tcase_add_test(tc, test_rate_limit_table_limits_each_address);
    tcase_add_test(tc, test_rate_limit_addr_key);
    tcase_add_test(tc, test_rate_limit_table_flood_keeps_memory_and_limits);
    tcase_add_test(tc, test_rate_limit_table_reuses_idle_slots);
    tcase_add_test(tc, test_rate_limit_table_is_exact_across_threads);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_rate_limit_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
