/*
 * Unit tests for the weighted consistent-hash ring: the SPEC §5 quality
 * bounds over 1,000,000 keys from a fixed-seed PRNG (balance, minimal
 * movement on add and remove, weights), golden values that pin the hash and
 * the mapping (several wsgate instances must agree with no shared state),
 * and the ranking used for failover.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/hash_ring.h>

#define NKEYS 1000000u
#define MAX_MEMBERS 512

/* splitmix64: a fixed-seed key generator, so every run sees the same keys. */
static uint64_t next_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Key hashes of NKEYS random 8-byte keys, hashed like real sticky keys. */
static uint64_t *random_key_hashes(void) {
    uint64_t *h = malloc(NKEYS * sizeof(*h));
    uint64_t state = 20261124;
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < NKEYS; i++) {
        uint64_t k = next_rand(&state);
        h[i] = wsg_ring_hash(&k, sizeof(k));
    }
    return h;
}

/* Members "10.0.0.<first+1>:9000" .. as a ring; ids live in <ids>. */
typedef struct {
    char ids[MAX_MEMBERS][32];
    wsg_ring_member_t m[MAX_MEMBERS];
    size_t n;
} members_t;

static void add_member(members_t *ms, unsigned host, unsigned weight) {
    ck_assert_uint_lt(ms->n, MAX_MEMBERS);
    snprintf(ms->ids[ms->n], sizeof(ms->ids[0]), "10.0.%u.%u:9000", host / 250, host % 250 + 1);
    ms->m[ms->n].id = ms->ids[ms->n];
    ms->m[ms->n].weight = weight;
    ms->n++;
}

static members_t *make_members(size_t n, unsigned weight) {
    members_t *ms = calloc(1, sizeof(*ms));
    ck_assert_ptr_nonnull(ms);
    for (unsigned i = 0; i < n; i++)
        add_member(ms, i, weight);
    return ms;
}

static wsg_ring_t *ring_of(const members_t *ms) {
    wsg_ring_t *r = wsg_ring_new(ms->m, ms->n);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(wsg_ring_size(r), ms->n);
    return r;
}

/* ---- determinism --------------------------------------------------------- */

/* These values are the contract between wsgate instances (SPEC §5): if this
 * test fails, the hash or the ranking changed and a rolling upgrade would
 * remap sticky sessions. They were cross-checked with an independent
 * reimplementation of the algorithm described in src/lb/hash_ring.c. */
START_TEST(test_hash_ring_golden_hash) {
    ck_assert_uint_eq(wsg_ring_hash("", 0), 0xefd01f60ba992926ull);
    ck_assert_uint_eq(wsg_ring_hash("hello", 5), 0xe9c562c0fdb23244ull);
    ck_assert_uint_eq(wsg_ring_hash("10.0.0.1:9000", 13), 0x4ee5b727da2aa88cull);
}
END_TEST

START_TEST(test_hash_ring_golden_mapping) {
    static const struct {
        const char *key;
        unsigned order[10];
    } golden[] = {
        {"alice", {8, 4, 6, 5, 0, 2, 3, 1, 9, 7}},
        {"bob", {2, 6, 5, 9, 8, 7, 1, 0, 3, 4}},
        {"carol", {8, 7, 9, 5, 2, 0, 3, 6, 4, 1}},
        {"dave", {2, 7, 4, 3, 6, 9, 1, 8, 5, 0}},
        {"eve", {9, 0, 6, 8, 7, 5, 1, 4, 3, 2}},
        {"session-1", {1, 8, 5, 6, 0, 4, 9, 7, 3, 2}},
        {"session-2", {4, 7, 1, 2, 9, 5, 6, 0, 3, 8}},
        {"192.168.1.10", {8, 9, 0, 7, 1, 6, 4, 2, 3, 5}},
        {"2001:db8::1", {7, 3, 4, 2, 0, 5, 8, 6, 9, 1}},
        {"f3a9c0de-7d1b-4c55-9e2a-0b6f2d8e1a44", {7, 5, 9, 4, 1, 2, 8, 6, 0, 3}},
        {"", {5, 9, 6, 4, 1, 2, 3, 7, 8, 0}},
        {"x", {3, 1, 6, 8, 9, 0, 7, 2, 4, 5}},
    };
    members_t *ms = make_members(10, 1);
    wsg_ring_t *r = ring_of(ms);
    ck_assert_str_eq(ms->m[0].id, "10.0.0.1:9000");
    ck_assert_str_eq(ms->m[9].id, "10.0.0.10:9000");

    for (size_t k = 0; k < sizeof(golden) / sizeof(golden[0]); k++) {
        uint64_t h = wsg_ring_hash(golden[k].key, strlen(golden[k].key));
        unsigned order[10];
        ck_assert_uint_eq(wsg_ring_rank(r, h, order, 10), 10);
        ck_assert_msg(wsg_ring_lookup(r, h) == golden[k].order[0], "key \"%s\": lookup %u, want %u",
                      golden[k].key, wsg_ring_lookup(r, h), golden[k].order[0]);
        for (size_t i = 0; i < 10; i++)
            ck_assert_msg(order[i] == golden[k].order[i], "key \"%s\": rank[%zu] = %u, want %u",
                          golden[k].key, i, order[i], golden[k].order[i]);
    }
    wsg_ring_free(r);
    free(ms);
}
END_TEST

/* Members are identified by id, not position: any order of the same members
 * maps every key to the same id. */
START_TEST(test_hash_ring_mapping_ignores_member_order) {
    members_t *a = make_members(10, 1);
    members_t *b = calloc(1, sizeof(*b));
    ck_assert_ptr_nonnull(b);
    static const unsigned perm[10] = {7, 2, 9, 0, 4, 1, 8, 3, 6, 5};
    for (size_t i = 0; i < 10; i++)
        add_member(b, perm[i], 1);
    wsg_ring_t *ra = ring_of(a), *rb = ring_of(b);
    uint64_t state = 1;
    for (size_t k = 0; k < 100000; k++) {
        uint64_t h = next_rand(&state);
        ck_assert_str_eq(a->m[wsg_ring_lookup(ra, h)].id, b->m[wsg_ring_lookup(rb, h)].id);
    }
    /* and two rings built from the same input are identical */
    wsg_ring_t *ra2 = ring_of(a);
    for (size_t k = 0; k < 100000; k++) {
        uint64_t h = next_rand(&state);
        ck_assert_uint_eq(wsg_ring_lookup(ra, h), wsg_ring_lookup(ra2, h));
    }
    wsg_ring_free(ra2);
    wsg_ring_free(rb);
    wsg_ring_free(ra);
    free(b);
    free(a);
}
END_TEST

/* ---- SPEC §5 quality ----------------------------------------------------- */

START_TEST(test_hash_ring_balances_equal_members) {
    members_t *ms = make_members(10, 1);
    wsg_ring_t *r = ring_of(ms);
    uint64_t *keys = random_key_hashes();
    size_t count[10] = {0}, max = 0, min = NKEYS;

    for (size_t i = 0; i < NKEYS; i++)
        count[wsg_ring_lookup(r, keys[i])]++;
    for (size_t i = 0; i < 10; i++) {
        max = count[i] > max ? count[i] : max;
        min = count[i] < min ? count[i] : min;
    }
    /* SPEC §5: the busiest member holds at most 1.05 x the mean */
    ck_assert_msg(max * 10 <= NKEYS / 100 * 105, "busiest member holds %zu keys, mean %u", max,
                  NKEYS / 10);
    ck_assert_msg(min * 10 >= NKEYS / 100 * 95, "idlest member holds %zu keys, mean %u", min,
                  NKEYS / 10);
    free(keys);
    wsg_ring_free(r);
    free(ms);
}
END_TEST

/* Low-entropy keys ("user-1", "user-2", ...) spread as well as random ones. */
START_TEST(test_hash_ring_balances_sequential_keys) {
    members_t *ms = make_members(10, 1);
    wsg_ring_t *r = ring_of(ms);
    size_t count[10] = {0}, max = 0;
    char key[32];

    for (unsigned i = 0; i < NKEYS; i++) {
        int len = snprintf(key, sizeof(key), "user-%u", i);
        count[wsg_ring_lookup(r, wsg_ring_hash(key, (size_t)len))]++;
    }
    for (size_t i = 0; i < 10; i++)
        max = count[i] > max ? count[i] : max;
    ck_assert_msg(max * 10 <= NKEYS / 100 * 105, "busiest member holds %zu keys", max);
    wsg_ring_free(r);
    free(ms);
}
END_TEST

START_TEST(test_hash_ring_adding_a_member_moves_keys_only_to_it) {
    members_t *ms = make_members(11, 1);
    ms->n = 10;
    wsg_ring_t *r10 = ring_of(ms);
    ms->n = 11;
    wsg_ring_t *r11 = ring_of(ms);
    uint64_t *keys = random_key_hashes();
    size_t moved = 0;

    for (size_t i = 0; i < NKEYS; i++) {
        unsigned before = wsg_ring_lookup(r10, keys[i]);
        unsigned after = wsg_ring_lookup(r11, keys[i]);
        if (before != after) {
            ck_assert_msg(after == 10, "key %zu moved from %u to %u, not to the new member", i,
                          before, after);
            moved++;
        }
    }
    /* SPEC §5: at most 1.1 x 1/11 of the keys move; and the new member
     * gets a fair share (not, say, nothing) */
    ck_assert_msg(moved * 11 * 10 <= (size_t)NKEYS * 11, "%zu keys moved", moved);
    ck_assert_msg(moved * 11 * 10 >= (size_t)NKEYS * 9, "only %zu keys moved", moved);
    free(keys);
    wsg_ring_free(r11);
    wsg_ring_free(r10);
    free(ms);
}
END_TEST

START_TEST(test_hash_ring_removing_a_member_moves_only_its_keys) {
    members_t *all = make_members(10, 1);
    members_t *rest = calloc(1, sizeof(*rest));
    const unsigned gone = 3;
    ck_assert_ptr_nonnull(rest);
    for (unsigned i = 0; i < 10; i++)
        if (i != gone)
            add_member(rest, i, 1);
    wsg_ring_t *r10 = ring_of(all), *r9 = ring_of(rest);
    uint64_t *keys = random_key_hashes();
    size_t moved = 0, to[10] = {0};

    for (size_t i = 0; i < NKEYS; i++) {
        const char *before = all->m[wsg_ring_lookup(r10, keys[i])].id;
        unsigned a = wsg_ring_lookup(r9, keys[i]);
        if (strcmp(before, rest->m[a].id) != 0) {
            ck_assert_str_eq(before, all->m[gone].id);
            to[a]++;
            moved++;
        } else {
            ck_assert_str_ne(before, all->m[gone].id);
        }
    }
    /* the orphaned keys spread over all the others */
    ck_assert_uint_gt(moved, 0);
    for (size_t i = 0; i < 9; i++)
        ck_assert_msg(to[i] * 9 * 10 >= moved * 8, "member %zu got %zu of %zu keys", i, to[i],
                      moved);
    free(keys);
    wsg_ring_free(r9);
    wsg_ring_free(r10);
    free(rest);
    free(all);
}
END_TEST

START_TEST(test_hash_ring_honours_weights) {
    members_t *ms = calloc(1, sizeof(*ms));
    ck_assert_ptr_nonnull(ms);
    /* five of weight 1, five of weight 2, interleaved */
    for (unsigned i = 0; i < 10; i++)
        add_member(ms, i, i % 2 + 1);
    wsg_ring_t *r = ring_of(ms);
    uint64_t *keys = random_key_hashes();
    size_t count[10] = {0}, light = 0;

    for (size_t i = 0; i < NKEYS; i++)
        count[wsg_ring_lookup(r, keys[i])]++;
    for (size_t i = 0; i < 10; i += 2)
        light += count[i];
    /* each weight-2 member holds twice the mean weight-1 member, within 5% */
    double mean_light = (double)light / 5;
    for (size_t i = 1; i < 10; i += 2) {
        double ratio = (double)count[i] / mean_light;
        ck_assert_msg(ratio >= 1.9 && ratio <= 2.1, "weight-2 member %zu: %.3f x weight 1", i,
                      ratio);
    }
    /* and every member holds its share of the total (1/15 or 2/15), within 5% */
    for (size_t i = 0; i < 10; i++) {
        double share = (double)count[i] * 15 / NKEYS / (double)(i % 2 + 1);
        ck_assert_msg(share >= 0.95 && share <= 1.05, "member %zu: %.3f of its share", i, share);
    }
    free(keys);
    wsg_ring_free(r);
    free(ms);
}
END_TEST

/* A heavy member among many (weight 256 is the config's maximum). */
START_TEST(test_hash_ring_honours_large_weights) {
    members_t *ms = make_members(20, 1);
    ms->m[5].weight = 256;
    wsg_ring_t *r = ring_of(ms);
    uint64_t state = 99;
    size_t heavy = 0;
    for (size_t i = 0; i < 200000; i++)
        heavy += wsg_ring_lookup(r, next_rand(&state)) == 5;
    double share = (double)heavy / 200000 / (256.0 / 275.0);
    ck_assert_msg(share >= 0.98 && share <= 1.02, "heavy member: %.4f of its share", share);
    wsg_ring_free(r);
    free(ms);
}
END_TEST

/* ---- ranking ------------------------------------------------------------- */

static void check_permutation(const unsigned *order, size_t n) {
    unsigned char seen[MAX_MEMBERS] = {0};
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_lt(order[i], n);
        ck_assert_msg(!seen[order[i]], "member %u ranked twice", order[i]);
        seen[order[i]] = 1;
    }
}

static void check_rank(const wsg_ring_t *r, size_t n, uint64_t h) {
    unsigned full[MAX_MEMBERS + 1], part[MAX_MEMBERS];
    full[n] = 12345;
    ck_assert_uint_eq(wsg_ring_rank(r, h, full, n + 1), n); /* cap > size */
    ck_assert_uint_eq(full[n], 12345);
    check_permutation(full, n);
    ck_assert_uint_eq(full[0], wsg_ring_lookup(r, h));
    /* a shorter ranking is a prefix of the full one */
    static const size_t caps[] = {1, 2, 3, 127, 128, 129, 200};
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]) && caps[c] <= n; c++) {
        ck_assert_uint_eq(wsg_ring_rank(r, h, part, caps[c]), caps[c]);
        ck_assert_mem_eq(part, full, caps[c] * sizeof(part[0]));
    }
}

START_TEST(test_hash_ring_rank_is_a_permutation_led_by_lookup) {
    static const size_t sizes[] = {1, 2, 3, 10, 11, 128, 129, 300};
    uint64_t state = 7;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        members_t *ms = make_members(sizes[s], 1);
        for (size_t i = 0; i < ms->n; i++)
            ms->m[i].weight = (unsigned)(i % 3 + 1);
        wsg_ring_t *r = ring_of(ms);
        size_t keys = sizes[s] > 100 ? 50 : 2000;
        for (size_t k = 0; k < keys; k++)
            check_rank(r, ms->n, next_rand(&state));
        unsigned one;
        ck_assert_uint_eq(wsg_ring_rank(r, 42, &one, 0), 0);
        wsg_ring_free(r);
        free(ms);
    }
}
END_TEST

/* Skipping a down member in the ranking sends its keys exactly where they
 * would go if it were removed, and keeps every other key's order: "the next
 * backend on the ring" is well defined. Checked with 10 members and with
 * 300 (several ranking rounds). */
static void check_skip_equals_removal(size_t n, size_t nkeys) {
    members_t *all = make_members(n, 1), *rest = calloc(1, sizeof(*rest));
    ck_assert_ptr_nonnull(rest);
    const unsigned gone = (unsigned)(n / 3);
    for (unsigned i = 0; i < n; i++)
        all->m[i].weight = i % 4 + 1;
    for (unsigned i = 0; i < n; i++)
        if (i != gone)
            add_member(rest, i, i % 4 + 1);
    wsg_ring_t *ra = ring_of(all), *rr = ring_of(rest);
    unsigned *oa = malloc(n * sizeof(*oa)), *orr = malloc(n * sizeof(*orr));
    uint64_t state = 3;
    ck_assert_ptr_nonnull(oa);
    ck_assert_ptr_nonnull(orr);

    for (size_t k = 0; k < nkeys; k++) {
        uint64_t h = next_rand(&state);
        wsg_ring_rank(ra, h, oa, n);
        wsg_ring_rank(rr, h, orr, n - 1);
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            if (oa[i] == gone)
                continue;
            ck_assert_str_eq(all->m[oa[i]].id, rest->m[orr[j]].id);
            j++;
        }
        ck_assert_uint_eq(j, n - 1);
    }
    free(orr);
    free(oa);
    wsg_ring_free(rr);
    wsg_ring_free(ra);
    free(rest);
    free(all);
}

START_TEST(test_hash_ring_rank_skip_equals_removal) {
    check_skip_equals_removal(10, 20000);
    check_skip_equals_removal(300, 100);
}
END_TEST

/* ---- edge cases ---------------------------------------------------------- */

START_TEST(test_hash_ring_rejects_bad_arguments) {
    wsg_ring_member_t m[2] = {{"a:1", 1}, {"b:1", 1}};
    ck_assert_ptr_null(wsg_ring_new(NULL, 1));
    ck_assert_ptr_null(wsg_ring_new(m, 0));
    ck_assert_ptr_null(wsg_ring_new(m, 65536));
    m[1].weight = 0;
    ck_assert_ptr_null(wsg_ring_new(m, 2));
    m[1].weight = 1;
    m[1].id = NULL;
    ck_assert_ptr_null(wsg_ring_new(m, 2));
    wsg_ring_free(NULL);
}
END_TEST

START_TEST(test_hash_ring_single_member_takes_everything) {
    wsg_ring_member_t m = {"only:1", 3};
    wsg_ring_t *r = wsg_ring_new(&m, 1);
    unsigned order[2] = {9, 9};
    uint64_t state = 5;
    ck_assert_ptr_nonnull(r);
    for (size_t i = 0; i < 10000; i++)
        ck_assert_uint_eq(wsg_ring_lookup(r, next_rand(&state)), 0);
    ck_assert_uint_eq(wsg_ring_rank(r, 1, order, 2), 1);
    ck_assert_uint_eq(order[0], 0);
    ck_assert_uint_eq(order[1], 9);
    wsg_ring_free(r);
}
END_TEST

/* Duplicate ids are a configuration mistake, but the ring stays well
 * defined: the copies tie everywhere and the lower index wins. */
START_TEST(test_hash_ring_duplicate_ids_are_deterministic) {
    wsg_ring_member_t m[3] = {{"dup:1", 1}, {"other:1", 1}, {"dup:1", 1}};
    wsg_ring_t *r = wsg_ring_new(m, 3);
    uint64_t state = 11;
    ck_assert_ptr_nonnull(r);
    for (size_t i = 0; i < 10000; i++) {
        uint64_t h = next_rand(&state);
        unsigned order[3];
        ck_assert_uint_ne(wsg_ring_lookup(r, h), 2);
        wsg_ring_rank(r, h, order, 3);
        check_permutation(order, 3);
        ck_assert_uint_eq(order[0], wsg_ring_lookup(r, h));
    }
    wsg_ring_free(r);
}
END_TEST

/* Even a weak key hash (a small counter) spreads over the members. */
START_TEST(test_hash_ring_spreads_weak_key_hashes) {
    members_t *ms = make_members(4, 1);
    wsg_ring_t *r = ring_of(ms);
    size_t count[4] = {0};
    for (uint64_t h = 0; h < 40000; h++)
        count[wsg_ring_lookup(r, h)]++;
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(count[i] > 9000 && count[i] < 11000, "member %zu: %zu", i, count[i]);
    wsg_ring_free(r);
    free(ms);
}
END_TEST

Suite *wsg_hash_ring_suite(void) {
    Suite *s = suite_create("hash_ring");
    TCase *tc;

    tc = tcase_create("determinism");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hash_ring_golden_hash);
    tcase_add_test(tc, test_hash_ring_golden_mapping);
    tcase_add_test(tc, test_hash_ring_mapping_ignores_member_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("quality");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hash_ring_balances_equal_members);
    tcase_add_test(tc, test_hash_ring_balances_sequential_keys);
    tcase_add_test(tc, test_hash_ring_adding_a_member_moves_keys_only_to_it);
    tcase_add_test(tc, test_hash_ring_removing_a_member_moves_only_its_keys);
    tcase_add_test(tc, test_hash_ring_honours_weights);
    tcase_add_test(tc, test_hash_ring_honours_large_weights);
    suite_add_tcase(s, tc);

    tc = tcase_create("rank");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hash_ring_rank_is_a_permutation_led_by_lookup);
    tcase_add_test(tc, test_hash_ring_rank_skip_equals_removal);
    suite_add_tcase(s, tc);

    tc = tcase_create("edges");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hash_ring_rejects_bad_arguments);
    tcase_add_test(tc, test_hash_ring_single_member_takes_everything);
    tcase_add_test(tc, test_hash_ring_duplicate_ids_are_deterministic);
    tcase_add_test(tc, test_hash_ring_spreads_weak_key_hashes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_hash_ring_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
