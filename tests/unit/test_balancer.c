/*
 * Unit tests for the run-time balancer: the bounded-load rule (SPEC §2/§5,
 * consistent hashing with bounded loads: with load_factor c no backend ever
 * holds more than ceil(c x mean) connections, even when the keys are
 * heavily skewed), down and draining backends skipped with only their own
 * keys moving, and the rise/fall rules of active checks.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/balancer.h>
#include <wsgate/hash_ring.h>
#include <wsgate/log.h>

#define NB 10

typedef struct {
    wsg_pool_conf_t pc;
    wsg_backend_conf_t be[NB];
    char addr[NB][40];
} pool_t;

static void pool_init(pool_t *p, size_t n, double load_factor, wsg_health_type_t type) {
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        snprintf(p->addr[i], sizeof(p->addr[i]), "10.0.0.%zu:9000", i + 1);
        p->be[i].address = p->addr[i];
        p->be[i].weight = 1;
    }
    p->pc.name = "p";
    p->pc.backends = p->be;
    p->pc.nbackends = n;
    p->pc.balance.load_factor = load_factor;
    p->pc.health.type = type;
    p->pc.health.interval_ms = 2000;
    p->pc.health.timeout_ms = 1000;
    p->pc.health.rise = 2;
    p->pc.health.fall = 3;
}

static uint64_t mix(uint64_t x) {
    /* splitmix64 finaliser: independent-looking key hashes from a counter. */
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* A skewed key stream: 60% one hot key, 20% a handful of warm keys, the
 * rest distinct. */
static uint64_t skewed_key(unsigned i) {
    uint64_t r = mix(i * 7919u + 1) % 100;
    if (r < 60)
        return wsg_ring_hash("hot-user", 8);
    if (r < 80)
        return mix(1000000 + r % 3);
    return mix(i);
}

static uint64_t active(const wsg_balancer_t *b, size_t i) {
    return atomic_load(&b->backends[i]->active);
}

static unsigned pick(wsg_balancer_t *b, uint64_t key) {
    unsigned out[NB];
    size_t n = wsg_balancer_candidates(b, key, 1000, out, NB);
    ck_assert_uint_gt(n, 0);
    return out[0];
}

/* ---- bounded loads ------------------------------------------------------ */

START_TEST(test_balancer_bounded_load_holds_under_skewed_keys) {
    pool_t p;
    pool_init(&p, NB, 1.25, WSG_HEALTH_NONE);
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    ck_assert_ptr_nonnull(b);

    for (unsigned i = 0; i < 2000; i++) {
        unsigned idx = pick(b, skewed_key(i));
        wsg_balancer_conn_start(b, idx);
        uint64_t total = i + 1;
        uint64_t bound = (uint64_t)ceil(1.25 * (double)total / NB);
        for (size_t k = 0; k < NB; k++)
            ck_assert_msg(active(b, k) <= bound,
                          "after %llu connections backend %zu holds %llu > %llu",
                          (unsigned long long)total, k, (unsigned long long)active(b, k),
                          (unsigned long long)bound);
    }
    ck_assert_uint_eq(atomic_load(&b->active), 2000);
    wsg_balancer_free(b);
}
END_TEST

/* With connections also ending, the rule is checked where it applies: a
 * backend given a connection holds at most ceil(c x mean) including it. */
START_TEST(test_balancer_bounded_load_holds_with_churn) {
    pool_t p;
    pool_init(&p, NB, 1.25, WSG_HEALTH_NONE);
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    enum { LIVE = 400 };
    int live[LIVE];
    for (int i = 0; i < LIVE; i++)
        live[i] = -1;

    for (unsigned i = 0; i < 5000; i++) {
        unsigned slot = (unsigned)(mix(i) % LIVE);
        if (live[slot] >= 0)
            wsg_balancer_conn_end(b, (unsigned)live[slot]);
        unsigned idx = pick(b, skewed_key(i));
        wsg_balancer_conn_start(b, idx);
        live[slot] = (int)idx;
        uint64_t total = atomic_load(&b->active);
        uint64_t bound = (uint64_t)ceil(1.25 * (double)total / NB);
        ck_assert_msg(active(b, idx) <= bound, "step %u: backend %u holds %llu > %llu", i, idx,
                      (unsigned long long)active(b, idx), (unsigned long long)bound);
    }
    wsg_balancer_free(b);
}
END_TEST

/* The same stream without load_factor piles the hot key onto one backend:
 * the skew is real, so the bounded test above can fail. */
START_TEST(test_balancer_unbounded_skew_exceeds_the_bound) {
    pool_t p;
    pool_init(&p, NB, 0, WSG_HEALTH_NONE);
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    for (unsigned i = 0; i < 2000; i++)
        wsg_balancer_conn_start(b, pick(b, skewed_key(i)));
    uint64_t max = 0;
    for (size_t k = 0; k < NB; k++)
        max = active(b, k) > max ? active(b, k) : max;
    ck_assert_uint_gt(max, (uint64_t)ceil(1.25 * 2000 / NB));
    wsg_balancer_free(b);
}
END_TEST

/* A key whose own backend is under the bound stays there: bounded loads
 * only move the overflow. */
START_TEST(test_balancer_bounded_load_keeps_keys_home_when_light) {
    pool_t p;
    pool_init(&p, NB, 1.25, WSG_HEALTH_NONE);
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    for (unsigned i = 0; i < 200; i++) {
        uint64_t k = mix(i);
        ck_assert_uint_eq(pick(b, k), wsg_ring_lookup(b->ring, k));
    }
    wsg_balancer_free(b);
}
END_TEST

/* ---- down and draining -------------------------------------------------- */

START_TEST(test_balancer_skips_down_and_draining_and_moves_only_their_keys) {
    pool_t p;
    pool_init(&p, NB, 0, WSG_HEALTH_TCP);
    p.pc.health.fall = 1;
    p.pc.health.rise = 1;
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    enum { K = 3000 };
    unsigned *home = malloc(K * sizeof(*home));
    for (unsigned i = 0; i < K; i++)
        home[i] = pick(b, mix(i));

    wsg_balancer_check_result(b, 2, false, 5, "connection refused");
    ck_assert_int_eq(atomic_load(&b->backends[2]->state), WSG_BACKEND_DOWN);
    ck_assert_int_eq(wsg_balancer_set_draining(b, 7), WSG_BACKEND_UP);
    for (unsigned i = 0; i < K; i++) {
        unsigned out[NB];
        size_t n = wsg_balancer_candidates(b, mix(i), 1000, out, NB);
        ck_assert_uint_eq(n, NB - 2);
        for (size_t j = 0; j < n; j++)
            ck_assert(out[j] != 2 && out[j] != 7);
        if (home[i] != 2 && home[i] != 7)
            ck_assert_uint_eq(out[0], home[i]); /* other keys stay */
        /* The fast path (one answer) agrees. */
        ck_assert_uint_eq(wsg_balancer_candidates(b, mix(i), 1000, out, 1), 1);
        ck_assert(out[0] != 2 && out[0] != 7);
    }

    /* Back up (rise 1) and enabled: their keys return home. */
    wsg_balancer_check_result(b, 2, true, 1, "");
    ck_assert_int_eq(wsg_balancer_enable(b, 7), WSG_BACKEND_DRAINING);
    for (unsigned i = 0; i < K; i++)
        ck_assert_uint_eq(pick(b, mix(i)), home[i]);
    free(home);
    wsg_balancer_free(b);
}
END_TEST

START_TEST(test_balancer_no_candidate_when_all_down) {
    pool_t p;
    pool_init(&p, 3, 1.25, WSG_HEALTH_HTTP);
    p.pc.health.fall = 1;
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    unsigned out[NB];
    for (unsigned i = 0; i < 3; i++)
        wsg_balancer_check_result(b, i, false, 1, "status 503");
    ck_assert_uint_eq(wsg_balancer_candidates(b, 42, 1000, out, NB), 0);
    ck_assert_uint_eq(wsg_balancer_candidates(b, 42, 1000, out, 1), 0);
    wsg_balancer_free(b);
}
END_TEST

/* ---- rise and fall ------------------------------------------------------ */

START_TEST(test_balancer_check_results_apply_rise_and_fall) {
    pool_t p;
    pool_init(&p, 2, 0, WSG_HEALTH_WEBSOCKET); /* rise 2, fall 3 */
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    wsg_backend_t *be = b->backends[0];

    wsg_balancer_check_result(b, 0, false, 1000, "timeout after 1000 ms");
    wsg_balancer_check_result(b, 0, false, 1000, "timeout after 1000 ms");
    ck_assert_int_eq(atomic_load(&be->state), WSG_BACKEND_UP);
    wsg_balancer_check_result(b, 0, false, 3, "no pong");
    ck_assert_int_eq(atomic_load(&be->state), WSG_BACKEND_DOWN);
    ck_assert(be->last_check.done);
    ck_assert(!be->last_check.ok);
    ck_assert_str_eq(be->last_check.error, "no pong");
    ck_assert_uint_eq(be->last_check.ms, 3);
    ck_assert_uint_eq(atomic_load(&be->failures), 3);

    wsg_balancer_check_result(b, 0, true, 2, "");
    ck_assert_int_eq(atomic_load(&be->state), WSG_BACKEND_DOWN);
    wsg_balancer_check_result(b, 0, false, 2, "status 503"); /* resets the passes */
    wsg_balancer_check_result(b, 0, true, 2, "");
    ck_assert_int_eq(atomic_load(&be->state), WSG_BACKEND_DOWN);
    wsg_balancer_check_result(b, 0, true, 2, "");
    ck_assert_int_eq(atomic_load(&be->state), WSG_BACKEND_UP);
    ck_assert(be->last_check.ok);
    ck_assert_str_eq(be->last_check.error, "");
    wsg_balancer_free(b);
}
END_TEST

START_TEST(test_balancer_draining_stays_draining_under_checks) {
    pool_t p;
    pool_init(&p, 2, 0, WSG_HEALTH_TCP);
    p.pc.health.fall = 1;
    p.pc.health.rise = 1;
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    wsg_balancer_set_draining(b, 1);
    wsg_balancer_check_result(b, 1, false, 1, "connection refused");
    ck_assert_int_eq(atomic_load(&b->backends[1]->state), WSG_BACKEND_DRAINING);
    wsg_balancer_check_result(b, 1, true, 1, "");
    ck_assert_int_eq(atomic_load(&b->backends[1]->state), WSG_BACKEND_DRAINING);
    ck_assert(b->backends[1]->last_check.done); /* still checked */
    wsg_balancer_free(b);
}
END_TEST

/* Every logged transition is kept, newest first, with its reason; the
 * ring keeps only the last WSG_BACKEND_CHANGES. (Check forks each test,
 * but the counts are taken relative to what is there, for CK_FORK=no.) */
START_TEST(test_balancer_changes_are_kept_newest_first) {
    static wsg_backend_change_t got[WSG_BACKEND_CHANGES + 1];
    pool_t p;
    pool_init(&p, 2, 0, WSG_HEALTH_TCP);
    p.pc.health.fall = 1;
    p.pc.health.rise = 1;
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    uint64_t seq0 = wsg_balancer_changes(got, 1) ? got[0].seq : 0;

    wsg_balancer_check_result(b, 1, false, 7, "connection refused");
    wsg_balancer_check_result(b, 1, false, 7, "connection refused"); /* no change */
    wsg_balancer_set_draining(b, 0);
    wsg_balancer_enable(b, 0);
    size_t n = wsg_balancer_changes(got, 3);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(got[0].seq, seq0 + 3);
    ck_assert_int_eq(got[0].from, WSG_BACKEND_DRAINING);
    ck_assert_int_eq(got[0].to, WSG_BACKEND_UP);
    ck_assert_str_eq(got[0].why, "admin request");
    ck_assert_str_eq(got[0].address, b->backends[0]->address);
    ck_assert_int_eq(got[1].to, WSG_BACKEND_DRAINING);
    ck_assert_uint_eq(got[2].seq, seq0 + 1);
    ck_assert_int_eq(got[2].from, WSG_BACKEND_UP);
    ck_assert_int_eq(got[2].to, WSG_BACKEND_DOWN);
    ck_assert_str_eq(got[2].address, b->backends[1]->address);
    ck_assert_ptr_nonnull(strstr(got[2].why, "connection refused"));
    ck_assert_str_eq(got[2].pool, p.pc.name);
    ck_assert_uint_gt(got[2].at_ms, 1700000000000ull); /* wall clock */

    for (int i = 0; i < WSG_BACKEND_CHANGES; i++) {
        wsg_balancer_set_draining(b, 0);
        wsg_balancer_enable(b, 0);
    }
    n = wsg_balancer_changes(got, WSG_BACKEND_CHANGES + 1);
    ck_assert_uint_eq(n, WSG_BACKEND_CHANGES);
    ck_assert_uint_eq(got[0].seq, seq0 + 3 + 2 * WSG_BACKEND_CHANGES);
    ck_assert_uint_eq(got[n - 1].seq, got[0].seq - (WSG_BACKEND_CHANGES - 1));
    wsg_balancer_free(b);
}
END_TEST

/* A reload keeps the state objects of backends that stay. */
START_TEST(test_balancer_state_survives_rebuild) {
    pool_t p, q;
    pool_init(&p, 3, 0, WSG_HEALTH_TCP);
    p.pc.health.fall = 1;
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    wsg_balancer_check_result(b, 1, false, 1, "connection refused");
    pool_init(&q, 4, 0, WSG_HEALTH_TCP);
    wsg_balancer_t *b2 = wsg_balancer_new(&q.pc, b);
    ck_assert_ptr_eq(b2->backends[1], b->backends[1]);
    ck_assert_int_eq(atomic_load(&b2->backends[1]->state), WSG_BACKEND_DOWN);
    ck_assert_int_eq(atomic_load(&b2->backends[3]->state), WSG_BACKEND_UP);
    wsg_balancer_free(b);
    ck_assert_int_eq(atomic_load(&b2->backends[1]->state), WSG_BACKEND_DOWN);
    wsg_balancer_free(b2);
}
END_TEST

/* Rebalance (SPEC §12): over many keys placed on a 10-backend pool, an
 * 11th backend is added; wsg_balancer_moved() selects exactly the keys
 * whose first choice on the new ring is the new backend (all of them, and
 * nothing else), which are the only keys whose first choice changed. A key
 * already on the new backend is not moved, nor is anything when no backend
 * was added. */
START_TEST(test_balancer_moved_keys_are_exactly_the_new_backends) {
    pool_t p, q;
    pool_init(&p, NB - 1, 0, WSG_HEALTH_NONE);
    pool_init(&q, NB, 0, WSG_HEALTH_NONE);
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    wsg_balancer_t *b2 = wsg_balancer_new(&q.pc, b);
    ck_assert(!b->added[0]); /* a first build has nothing to rebalance to */
    for (size_t i = 0; i < NB - 1; i++)
        ck_assert(!b2->added[i]);
    ck_assert(b2->added[NB - 1]);
    unsigned moved = 0, keys = 200000;
    for (unsigned k = 0; k < keys; k++) {
        uint64_t h = mix(k);
        const wsg_backend_t *cur = b->backends[wsg_ring_lookup(b->ring, h)];
        unsigned now = wsg_ring_lookup(b2->ring, h);
        bool m = wsg_balancer_moved(b2, h, cur);
        ck_assert_int_eq(m, b2->backends[now] != cur);
        if (m) {
            ck_assert_uint_eq(now, NB - 1);
            moved++;
        }
        /* Once it is on the new backend it stays. */
        ck_assert(!wsg_balancer_moved(b2, h, b2->backends[NB - 1]));
        /* A rebuild that adds nothing moves nothing. */
        ck_assert(!wsg_balancer_moved(b, h, b->backends[(k + 1) % (NB - 1)]));
    }
    /* About 1/NB of the keys, as the ring's quality bound says. */
    ck_assert_uint_gt(moved, keys / NB * 9 / 10);
    ck_assert_uint_lt(moved, keys / NB * 11 / 10);
    wsg_balancer_free(b);
    wsg_balancer_free(b2);
}
END_TEST

/* A backend removed at run time is leaving while it has connections: it
 * keeps being listed (draining) across rebuilds, is dropped once idle, and
 * is taken back, up, when the configuration lists it again. */
START_TEST(test_balancer_leaving_backends) {
    pool_t p, q;
    pool_init(&p, 3, 0, WSG_HEALTH_NONE);
    pool_init(&q, 3, 0, WSG_HEALTH_NONE);
    q.pc.nbackends = 2; /* 10.0.0.3 removed */
    wsg_balancer_t *b = wsg_balancer_new(&p.pc, NULL);
    wsg_balancer_conn_start(b, 2);
    wsg_balancer_t *b2 = wsg_balancer_new(&q.pc, b);
    ck_assert_uint_eq(b2->nleaving, 0);
    ck_assert_int_eq(wsg_balancer_add_leaving(b2, b->backends[2], 3), 0);
    ck_assert_uint_eq(b2->nleaving, 1);
    ck_assert_int_eq(atomic_load(&b2->leaving[0].be->state), WSG_BACKEND_DRAINING);
    ck_assert_ptr_eq(b2->counters, b->counters);
    wsg_balancer_t *b3 = wsg_balancer_new(&q.pc, b2); /* still has a connection */
    ck_assert_uint_eq(b3->nleaving, 1);
    ck_assert_uint_eq(b3->leaving[0].weight, 3);
    wsg_balancer_t *b4 = wsg_balancer_new(&p.pc, b3); /* listed again */
    ck_assert_uint_eq(b4->nleaving, 0);
    ck_assert_ptr_eq(b4->backends[2], b->backends[2]);
    ck_assert_int_eq(atomic_load(&b4->backends[2]->state), WSG_BACKEND_UP);
    ck_assert(!b4->added[2]);
    wsg_balancer_conn_end(b, 2);
    wsg_balancer_t *b5 = wsg_balancer_new(&q.pc, b3); /* idle now: dropped */
    ck_assert_uint_eq(b5->nleaving, 0);
    wsg_balancer_free(b);
    wsg_balancer_free(b2);
    wsg_balancer_free(b3);
    wsg_balancer_free(b4);
    wsg_balancer_free(b5);
}
END_TEST

Suite *wsg_balancer_suite(void) {
    Suite *s = suite_create("balancer");
    TCase *tc = tcase_create("bounded_load");
    tcase_add_test(tc, test_balancer_bounded_load_holds_under_skewed_keys);
    tcase_add_test(tc, test_balancer_bounded_load_holds_with_churn);
    tcase_add_test(tc, test_balancer_unbounded_skew_exceeds_the_bound);
    tcase_add_test(tc, test_balancer_bounded_load_keeps_keys_home_when_light);
    suite_add_tcase(s, tc);
    tc = tcase_create("skipping");
    tcase_add_test(tc, test_balancer_skips_down_and_draining_and_moves_only_their_keys);
    tcase_add_test(tc, test_balancer_no_candidate_when_all_down);
    suite_add_tcase(s, tc);
    tc = tcase_create("checks");
    tcase_add_test(tc, test_balancer_check_results_apply_rise_and_fall);
    tcase_add_test(tc, test_balancer_draining_stays_draining_under_checks);
    tcase_add_test(tc, test_balancer_state_survives_rebuild);
    tcase_add_test(tc, test_balancer_changes_are_kept_newest_first);
    suite_add_tcase(s, tc);
    tc = tcase_create("runtime_changes");
    tcase_add_test(tc, test_balancer_moved_keys_are_exactly_the_new_backends);
    tcase_add_test(tc, test_balancer_leaving_backends);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    /* State changes are logged as warnings; keep the test output quiet. */
    wsg_log_configure(WSG_LOG_ERROR, WSG_LOG_TEXT);
    SRunner *sr = srunner_create(wsg_balancer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
