/*
 * Unit tests for the slab: objects are zeroed, distinct and whole (ASan
 * flags an overrun in its calloc mode), accounting, and, in block mode,
 * that objects pack into blocks, an emptied block is kept as the one spare
 * and further empty blocks are unmapped.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/slab.h>

START_TEST(test_slab_rounds_size_and_fits_blocks) {
    wsg_slab_t s;
    wsg_slab_init(&s, 821);
    ck_assert_uint_eq(s.size, 824);
    ck_assert_uint_ge(s.per_block, 70);
    ck_assert_uint_le((size_t)s.per_block * s.size, WSG_SLAB_BLOCK);
    wsg_slab_close(&s);
}
END_TEST

START_TEST(test_slab_objects_zeroed_distinct_and_reused) {
    enum { N = 300 };
    wsg_slab_t s;
    unsigned char *o[N];
    wsg_slab_init(&s, 100);
    for (int i = 0; i < N; i++) {
        o[i] = wsg_slab_alloc(&s);
        ck_assert_ptr_nonnull(o[i]);
        for (size_t k = 0; k < s.size; k++)
            ck_assert_uint_eq(o[i][k], 0);
        memset(o[i], 0xA5, s.size); /* all of it is ours */
        for (int j = 0; j < i; j++)
            ck_assert_ptr_ne(o[i], o[j]);
    }
    ck_assert_uint_eq(s.in_use, N);
    wsg_slab_free(&s, o[7]);
    ck_assert_uint_eq(s.in_use, N - 1);
    unsigned char *again = wsg_slab_alloc(&s);
    if (!s.passthru)
        ck_assert_ptr_eq(again, o[7]); /* the freed slot comes back first */
    for (size_t k = 0; k < s.size; k++)
        ck_assert_uint_eq(again[k], 0); /* zeroed again */
    o[7] = again;
    for (int i = 0; i < N; i++)
        wsg_slab_free(&s, o[i]);
    ck_assert_uint_eq(s.in_use, 0);
    wsg_slab_free(&s, NULL);
    wsg_slab_close(&s);
}
END_TEST

/* The raw allocation hands out the same slots, counted alike, and mixes
 * with the zeroing one on one slab. */
START_TEST(test_slab_raw_objects_distinct_counted_and_shared) {
    enum { N = 300 };
    wsg_slab_t s;
    unsigned char *o[N];
    wsg_slab_init(&s, 100);
    for (int i = 0; i < N; i++) {
        o[i] = i % 2 ? wsg_slab_alloc_raw(&s) : wsg_slab_alloc(&s);
        ck_assert_ptr_nonnull(o[i]);
        memset(o[i], 0x5A, s.size); /* all of it is ours */
        for (int j = 0; j < i; j++)
            ck_assert_ptr_ne(o[i], o[j]);
    }
    ck_assert_uint_eq(s.in_use, N);
    wsg_slab_free(&s, o[9]);
    unsigned char *again = wsg_slab_alloc_raw(&s);
    if (!s.passthru)
        ck_assert_ptr_eq(again, o[9]); /* the freed slot comes back first */
    o[9] = again;
    wsg_slab_free(&s, o[8]);
    o[8] = wsg_slab_alloc(&s);
    for (size_t k = 0; k < s.size; k++)
        ck_assert_uint_eq(o[8][k], 0); /* the zeroing one still zeroes */
    for (int i = 0; i < N; i++)
        wsg_slab_free(&s, o[i]);
    ck_assert_uint_eq(s.in_use, 0);
    wsg_slab_close(&s);
}
END_TEST

START_TEST(test_slab_empty_blocks_spare_then_unmapped) {
    wsg_slab_t s;
    wsg_slab_init(&s, 1000);
    if (s.passthru) {
        wsg_slab_close(&s);
        return; /* calloc mode: no blocks to account */
    }
    unsigned per = s.per_block, n = 3 * per;
    void **o = calloc(n, sizeof(*o));
    ck_assert_ptr_nonnull(o);
    for (unsigned i = 0; i < n; i++) {
        o[i] = wsg_slab_alloc(&s);
        ck_assert_ptr_nonnull(o[i]);
        /* Each object lies inside its block, past the header. */
        uintptr_t blk = (uintptr_t)o[i] & ~(uintptr_t)(WSG_SLAB_BLOCK - 1);
        ck_assert_uint_gt((uintptr_t)o[i], blk);
        ck_assert_uint_le((uintptr_t)o[i] + s.size, blk + WSG_SLAB_BLOCK);
    }
    ck_assert_uint_eq(s.blocks, 3);
    /* Emptying the first block keeps it as the spare... */
    for (unsigned i = 0; i < per; i++)
        wsg_slab_free(&s, o[i]);
    ck_assert_uint_eq(s.blocks, 3);
    /* ...emptying the second unmaps it... */
    for (unsigned i = per; i < 2 * per; i++)
        wsg_slab_free(&s, o[i]);
    ck_assert_uint_eq(s.blocks, 2);
    /* ...and a new block's worth comes from the spare, not a new mapping. */
    for (unsigned i = 0; i < per; i++)
        ck_assert_ptr_nonnull(o[i] = wsg_slab_alloc(&s));
    ck_assert_uint_eq(s.blocks, 2);
    ck_assert_uint_eq(s.in_use, 2 * per);
    for (unsigned i = 0; i < per; i++)
        wsg_slab_free(&s, o[i]);
    for (unsigned i = 2 * per; i < n; i++)
        wsg_slab_free(&s, o[i]);
    ck_assert_uint_eq(s.in_use, 0);
    ck_assert_uint_eq(s.blocks, 1); /* the spare */
    free(o);
    wsg_slab_close(&s);
    ck_assert_uint_eq(s.blocks, 0);
}
END_TEST

START_TEST(test_slab_free_into_full_block_makes_it_partial) {
    wsg_slab_t s;
    wsg_slab_init(&s, 4000);
    unsigned per = s.passthru ? 4 : s.per_block;
    void **o = calloc(per + 1, sizeof(*o));
    ck_assert_ptr_nonnull(o);
    for (unsigned i = 0; i <= per; i++)
        ck_assert_ptr_nonnull(o[i] = wsg_slab_alloc(&s));
    /* The first block is full; freeing one of its objects and allocating
     * again must hand that one out, not map more. */
    size_t blocks = s.blocks;
    wsg_slab_free(&s, o[0]);
    void *again = wsg_slab_alloc(&s);
    ck_assert_ptr_nonnull(again);
    if (!s.passthru) {
        ck_assert_ptr_eq(again, o[0]);
        ck_assert_uint_eq(s.blocks, blocks);
    }
    o[0] = again;
    for (unsigned i = 0; i <= per; i++)
        wsg_slab_free(&s, o[i]);
    free(o);
    wsg_slab_close(&s);
}
END_TEST

static Suite *slab_suite(void) {
    Suite *s = suite_create("slab");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_slab_rounds_size_and_fits_blocks);
    tcase_add_test(tc, test_slab_objects_zeroed_distinct_and_reused);
    tcase_add_test(tc, test_slab_raw_objects_distinct_counted_and_shared);
    tcase_add_test(tc, test_slab_empty_blocks_spare_then_unmapped);
    tcase_add_test(tc, test_slab_free_into_full_block_makes_it_partial);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(slab_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
