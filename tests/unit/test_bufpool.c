/*
 * Unit tests for the buffer pool: accounting (in_use, peak, nfree), the
 * max_free bound, reuse, and that close releases everything (run under
 * ASan/LSan to catch leaks and chunk overruns).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/bufpool.h>

START_TEST(test_bufpool_init_state) {
    wsg_bufpool_t p;
    wsg_bufpool_init(&p, 4096, 8);
    ck_assert_ptr_null(p.free_list);
    ck_assert_uint_eq(p.chunk_size, 4096);
    ck_assert_uint_eq(p.max_free, 8);
    ck_assert_uint_eq(p.nfree, 0);
    ck_assert_uint_eq(p.in_use, 0);
    ck_assert_uint_eq(p.peak_in_use, 0);
    wsg_bufpool_close(&p);
}
END_TEST

START_TEST(test_bufpool_get_put_accounting) {
    enum { N = 10 };
    wsg_bufpool_t p;
    void *c[N];
    wsg_bufpool_init(&p, 256, 4);

    for (int i = 0; i < N; i++) {
        c[i] = wsg_bufpool_get(&p);
        ck_assert_ptr_nonnull(c[i]);
        /* The whole chunk is usable (ASan flags an overrun). */
        memset(c[i], 0xA5, p.chunk_size);
        ck_assert_uint_eq(p.in_use, (size_t)i + 1);
        ck_assert_uint_eq(p.peak_in_use, (size_t)i + 1);
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            ck_assert_ptr_ne(c[i], c[j]);

    for (int i = 0; i < N; i++) {
        wsg_bufpool_put(&p, c[i]);
        ck_assert_uint_eq(p.in_use, (size_t)(N - 1 - i));
        ck_assert_uint_le(p.nfree, p.max_free);
    }
    ck_assert_uint_eq(p.in_use, 0);
    ck_assert_uint_eq(p.nfree, 4);
    ck_assert_uint_eq(p.peak_in_use, N);
    wsg_bufpool_close(&p);
    ck_assert_uint_eq(p.nfree, 0);
    ck_assert_ptr_null(p.free_list);
}
END_TEST

START_TEST(test_bufpool_reuses_cached_chunk) {
    wsg_bufpool_t p;
    wsg_bufpool_init(&p, 64, 2);
    void *a = wsg_bufpool_get(&p);
    void *b = wsg_bufpool_get(&p);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    wsg_bufpool_put(&p, a);
    wsg_bufpool_put(&p, b);
    ck_assert_uint_eq(p.nfree, 2);
    /* Last in, first out: the warmest chunk comes back first. */
    ck_assert_ptr_eq(wsg_bufpool_get(&p), b);
    ck_assert_uint_eq(p.nfree, 1);
    ck_assert_ptr_eq(wsg_bufpool_get(&p), a);
    ck_assert_uint_eq(p.nfree, 0);
    ck_assert_uint_eq(p.in_use, 2);
    ck_assert_uint_eq(p.peak_in_use, 2);
    wsg_bufpool_put(&p, a);
    wsg_bufpool_put(&p, b);
    wsg_bufpool_close(&p);
}
END_TEST

START_TEST(test_bufpool_max_free_zero_caches_nothing) {
    wsg_bufpool_t p;
    wsg_bufpool_init(&p, 128, 0);
    void *a = wsg_bufpool_get(&p);
    ck_assert_ptr_nonnull(a);
    wsg_bufpool_put(&p, a);
    ck_assert_uint_eq(p.nfree, 0);
    ck_assert_ptr_null(p.free_list);
    ck_assert_uint_eq(p.in_use, 0);
    wsg_bufpool_close(&p);
}
END_TEST

START_TEST(test_bufpool_put_null_is_noop) {
    wsg_bufpool_t p;
    wsg_bufpool_init(&p, 128, 4);
    void *a = wsg_bufpool_get(&p);
    wsg_bufpool_put(&p, NULL);
    ck_assert_uint_eq(p.in_use, 1);
    ck_assert_uint_eq(p.nfree, 0);
    wsg_bufpool_put(&p, a);
    wsg_bufpool_put(&p, NULL);
    ck_assert_uint_eq(p.in_use, 0);
    ck_assert_uint_eq(p.nfree, 1);
    wsg_bufpool_close(&p);
}
END_TEST

START_TEST(test_bufpool_smallest_chunk) {
    /* A chunk exactly one pointer wide still carries the free-list link. */
    wsg_bufpool_t p;
    wsg_bufpool_init(&p, sizeof(void *), 3);
    void *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = wsg_bufpool_get(&p);
        ck_assert_ptr_nonnull(c[i]);
        memset(c[i], 0xFF, sizeof(void *));
    }
    for (int i = 0; i < 3; i++)
        wsg_bufpool_put(&p, c[i]);
    for (int i = 0; i < 3; i++)
        c[i] = wsg_bufpool_get(&p);
    ck_assert_uint_eq(p.nfree, 0);
    for (int i = 0; i < 3; i++)
        wsg_bufpool_put(&p, c[i]);
    wsg_bufpool_close(&p);
}
END_TEST

/* A random walk of gets and puts, checking the counters against our own
 * tally after every step. */
START_TEST(test_bufpool_random_walk) {
    enum { SLOTS = 40, STEPS = 5000 };
    wsg_bufpool_t p;
    void *held[SLOTS] = {0};
    size_t nheld = 0, peak = 0;
    uint32_t x = 2463534242u; /* xorshift32, fixed seed */

    wsg_bufpool_init(&p, 512, 7);
    for (int step = 0; step < STEPS; step++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t i = x % SLOTS;
        if (held[i] == NULL) {
            held[i] = wsg_bufpool_get(&p);
            ck_assert_ptr_nonnull(held[i]);
            /* Stamp the chunk with its slot to detect a chunk handed out
             * twice. */
            memset(held[i], (int)i, p.chunk_size);
            nheld++;
            if (nheld > peak)
                peak = nheld;
        } else {
            unsigned char *b = held[i];
            ck_assert_uint_eq(b[p.chunk_size - 1], i);
            ck_assert_uint_eq(b[sizeof(void *)], i);
            wsg_bufpool_put(&p, held[i]);
            held[i] = NULL;
            nheld--;
        }
        ck_assert_uint_eq(p.in_use, nheld);
        ck_assert_uint_eq(p.peak_in_use, peak);
        ck_assert_uint_le(p.nfree, p.max_free);
    }
    for (size_t i = 0; i < SLOTS; i++)
        wsg_bufpool_put(&p, held[i]); /* NULL slots are no-ops */
    ck_assert_uint_eq(p.in_use, 0);
    ck_assert_uint_eq(p.nfree, 7);
    wsg_bufpool_close(&p);
    ck_assert_uint_eq(p.nfree, 0);
}
END_TEST

Suite *wsg_bufpool_suite(void) {
    Suite *s = suite_create("bufpool");

    TCase *tc = tcase_create("accounting");
    tcase_add_test(tc, test_bufpool_init_state);
    tcase_add_test(tc, test_bufpool_get_put_accounting);
    tcase_add_test(tc, test_bufpool_put_null_is_noop);
    tcase_add_test(tc, test_bufpool_random_walk);
    suite_add_tcase(s, tc);

    tc = tcase_create("free_list");
    tcase_add_test(tc, test_bufpool_reuses_cached_chunk);
    tcase_add_test(tc, test_bufpool_max_free_zero_caches_nothing);
    tcase_add_test(tc, test_bufpool_smallest_chunk);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_bufpool_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
