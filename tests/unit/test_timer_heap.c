/*
 * Unit tests for the timer heap: basic behaviour, then long random
 * sequences of schedule / cancel / reschedule / pop checked step by step
 * against a linear-scan reference model.
 */
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include <wsgate/timer_heap.h>

/* Checks the heap property and the index back-pointers of every node. */
static void check_invariants(const wsg_timer_heap_t *h) {
    ck_assert_uint_le(h->count, h->cap);
    for (uint32_t i = 0; i < h->count; i++) {
        const wsg_timer_node_t *n = h->nodes[i];
        ck_assert_uint_eq(n->index, i);
        if (i > 0) {
            const wsg_timer_node_t *p = h->nodes[(i - 1) / 2];
            ck_assert(p->deadline < n->deadline || (p->deadline == n->deadline && p->seq < n->seq));
        }
    }
}

START_TEST(test_timer_heap_empty) {
    wsg_timer_heap_t h;
    wsg_timer_heap_init(&h);
    ck_assert_ptr_null(wsg_timer_heap_peek(&h));
    ck_assert_ptr_null(wsg_timer_heap_pop_due(&h, UINT64_MAX));
    wsg_timer_heap_close(&h);
    /* close is idempotent on an empty heap */
    wsg_timer_heap_close(&h);
}
END_TEST

START_TEST(test_timer_heap_pop_due_respects_now) {
    wsg_timer_heap_t h;
    wsg_timer_node_t a, b, c;
    wsg_timer_heap_init(&h);
    wsg_timer_node_init(&a);
    wsg_timer_node_init(&b);
    wsg_timer_node_init(&c);
    ck_assert(!wsg_timer_node_queued(&a));

    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &a, 300), 0);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &b, 100), 0);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &c, 200), 0);
    ck_assert(wsg_timer_node_queued(&a));
    ck_assert_ptr_eq(wsg_timer_heap_peek(&h), &b);

    ck_assert_ptr_null(wsg_timer_heap_pop_due(&h, 99));
    ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, 100), &b);
    ck_assert(!wsg_timer_node_queued(&b));
    ck_assert_ptr_null(wsg_timer_heap_pop_due(&h, 199));
    ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, 1000), &c);
    ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, 1000), &a);
    ck_assert_ptr_null(wsg_timer_heap_pop_due(&h, 1000));
    ck_assert_ptr_null(wsg_timer_heap_peek(&h));
    wsg_timer_heap_close(&h);
}
END_TEST

START_TEST(test_timer_heap_ties_are_fifo) {
    enum { N = 50 };
    wsg_timer_heap_t h;
    wsg_timer_node_t n[N];
    wsg_timer_heap_init(&h);
    /* Schedule in a scrambled slot order, all at the same deadline: they
     * must come out in scheduling order, not slot order. */
    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = (i * 17) % N; /* 17 is coprime with 50: a permutation */
    for (int i = 0; i < N; i++) {
        wsg_timer_node_init(&n[order[i]]);
        ck_assert_int_eq(wsg_timer_heap_schedule(&h, &n[order[i]], 42), 0);
    }
    check_invariants(&h);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, 42), &n[order[i]]);
    ck_assert_ptr_null(wsg_timer_heap_pop_due(&h, 42));
    wsg_timer_heap_close(&h);
}
END_TEST

START_TEST(test_timer_heap_reschedule_moves_behind_equals) {
    wsg_timer_heap_t h;
    wsg_timer_node_t a, b;
    wsg_timer_heap_init(&h);
    wsg_timer_node_init(&a);
    wsg_timer_node_init(&b);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &a, 10), 0);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &b, 10), 0);
    /* Rescheduling a to the same deadline queues it behind b. */
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &a, 10), 0);
    ck_assert_uint_eq(h.count, 2);
    ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, 10), &b);
    ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, 10), &a);

    /* Moving earlier and later. */
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &a, 50), 0);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &b, 60), 0);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &b, 5), 0);
    ck_assert_ptr_eq(wsg_timer_heap_peek(&h), &b);
    ck_assert_uint_eq(b.deadline, 5);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &b, 500), 0);
    ck_assert_ptr_eq(wsg_timer_heap_peek(&h), &a);
    ck_assert_uint_eq(h.count, 2);
    wsg_timer_heap_close(&h);
}
END_TEST

START_TEST(test_timer_heap_cancel) {
    wsg_timer_heap_t h;
    wsg_timer_node_t a, b, c, idle;
    wsg_timer_heap_init(&h);
    wsg_timer_node_init(&a);
    wsg_timer_node_init(&b);
    wsg_timer_node_init(&c);
    wsg_timer_node_init(&idle);

    /* Cancelling a node that was never queued changes nothing. */
    wsg_timer_heap_cancel(&h, &idle);
    ck_assert_uint_eq(h.count, 0);

    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &a, 1), 0);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &b, 2), 0);
    ck_assert_int_eq(wsg_timer_heap_schedule(&h, &c, 3), 0);
    wsg_timer_heap_cancel(&h, &idle);
    ck_assert_uint_eq(h.count, 3);

    wsg_timer_heap_cancel(&h, &a);
    ck_assert(!wsg_timer_node_queued(&a));
    ck_assert_uint_eq(h.count, 2);
    check_invariants(&h);
    /* Twice is a no-op too. */
    wsg_timer_heap_cancel(&h, &a);
    ck_assert_uint_eq(h.count, 2);

    wsg_timer_heap_cancel(&h, &c);
    ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, 100), &b);
    ck_assert_ptr_null(wsg_timer_heap_pop_due(&h, 100));

    /* A popped node is not queued: cancelling it is a no-op as well. */
    wsg_timer_heap_cancel(&h, &b);
    ck_assert_uint_eq(h.count, 0);
    wsg_timer_heap_close(&h);
}
END_TEST

START_TEST(test_timer_heap_grows) {
    enum { N = 1000 };
    wsg_timer_heap_t h;
    wsg_timer_node_t *n = calloc(N, sizeof(*n));
    ck_assert_ptr_nonnull(n);
    wsg_timer_heap_init(&h);
    /* Descending deadlines make every insert sift all the way up. */
    for (int i = 0; i < N; i++) {
        wsg_timer_node_init(&n[i]);
        ck_assert_int_eq(wsg_timer_heap_schedule(&h, &n[i], (uint64_t)(N - i)), 0);
    }
    ck_assert_uint_eq(h.count, N);
    ck_assert_uint_ge(h.cap, N);
    check_invariants(&h);
    for (int i = N - 1; i >= 0; i--)
        ck_assert_ptr_eq(wsg_timer_heap_pop_due(&h, UINT64_MAX), &n[i]);
    wsg_timer_heap_close(&h);
    free(n);
}
END_TEST

/* --- random sequences against a reference model -------------------------- */

/* xorshift64*: a fixed-seed PRNG so that a failure reproduces exactly. */
static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

enum { MODEL_N = 64 };

typedef struct {
    int queued;
    uint64_t deadline;
    uint64_t order; /* the model's own FIFO stamp */
    unsigned scheduled, fired, cancelled;
} model_t;

/* The model's answer to pop_due: linear scan for the smallest
 * (deadline, order) among queued entries with deadline <= now. */
static int model_pop(model_t *m, uint64_t now) {
    int best = -1;
    for (int i = 0; i < MODEL_N; i++) {
        if (!m[i].queued || m[i].deadline > now)
            continue;
        if (best < 0 || m[i].deadline < m[best].deadline ||
            (m[i].deadline == m[best].deadline && m[i].order < m[best].order))
            best = i;
    }
    if (best >= 0) {
        m[best].queued = 0;
        m[best].fired++;
    }
    return best;
}

static void run_random(uint64_t seed, int ops, uint64_t spread) {
    wsg_timer_heap_t h;
    wsg_timer_node_t n[MODEL_N];
    model_t m[MODEL_N] = {0};
    uint64_t now = 1000, stamp = 0, last_fired = 0;
    unsigned total_popped = 0, live = 0;

    rng_state = seed;
    wsg_timer_heap_init(&h);
    for (int i = 0; i < MODEL_N; i++)
        wsg_timer_node_init(&n[i]);

    for (int op = 0; op < ops; op++) {
        int i = (int)(rng() % MODEL_N);
        unsigned r = (unsigned)(rng() % 100);
        if (r < 45) {
            /* schedule or reschedule; a small spread forces many ties */
            uint64_t d = now + rng() % spread;
            if (m[i].queued)
                m[i].cancelled++; /* the old deadline will never fire */
            else
                live++;
            ck_assert_int_eq(wsg_timer_heap_schedule(&h, &n[i], d), 0);
            m[i].queued = 1;
            m[i].deadline = d;
            m[i].order = stamp++;
            m[i].scheduled++;
        } else if (r < 60) {
            if (m[i].queued) {
                m[i].queued = 0;
                m[i].cancelled++;
                live--;
            }
            wsg_timer_heap_cancel(&h, &n[i]);
        } else if (r < 70) {
            now += rng() % (spread / 2 + 1);
        } else {
            /* pop everything due now, comparing each answer to the model */
            for (;;) {
                int want = model_pop(m, now);
                wsg_timer_node_t *got = wsg_timer_heap_pop_due(&h, now);
                if (want < 0) {
                    ck_assert_ptr_null(got);
                    break;
                }
                ck_assert_ptr_eq(got, &n[want]);
                ck_assert(!wsg_timer_node_queued(got));
                ck_assert_uint_le(got->deadline, now);
                ck_assert_uint_ge(got->deadline, last_fired);
                last_fired = got->deadline;
                total_popped++;
                live--;
            }
        }
        ck_assert_uint_eq(h.count, live);
        const wsg_timer_node_t *top = wsg_timer_heap_peek(&h);
        if (live == 0)
            ck_assert_ptr_null(top);
        else
            ck_assert_ptr_nonnull(top);
        if (op % 64 == 0)
            check_invariants(&h);
    }

    /* Drain: everything left fires, in order. */
    for (;;) {
        int want = model_pop(m, UINT64_MAX);
        wsg_timer_node_t *got = wsg_timer_heap_pop_due(&h, UINT64_MAX);
        if (want < 0) {
            ck_assert_ptr_null(got);
            break;
        }
        ck_assert_ptr_eq(got, &n[want]);
        total_popped++;
    }
    ck_assert_uint_eq(h.count, 0);

    /* Every scheduling fired exactly once unless it was cancelled or
     * superseded by a reschedule. */
    unsigned sum_fired = 0;
    for (int i = 0; i < MODEL_N; i++) {
        ck_assert_uint_eq(m[i].scheduled, m[i].fired + m[i].cancelled);
        sum_fired += m[i].fired;
    }
    ck_assert_uint_eq(sum_fired, total_popped);
    ck_assert_uint_gt(total_popped, 0);
    wsg_timer_heap_close(&h);
}

START_TEST(test_timer_heap_random_matches_model) {
    run_random(0x9e3779b97f4a7c15ull, 10000, 1000);
}
END_TEST

START_TEST(test_timer_heap_random_many_ties) {
    run_random(12345, 10000, 4);
}
END_TEST

Suite *wsg_timer_heap_suite(void) {
    Suite *s = suite_create("timer_heap");

    TCase *tc = tcase_create("basic");
    tcase_add_test(tc, test_timer_heap_empty);
    tcase_add_test(tc, test_timer_heap_pop_due_respects_now);
    tcase_add_test(tc, test_timer_heap_grows);
    suite_add_tcase(s, tc);

    tc = tcase_create("ordering");
    tcase_add_test(tc, test_timer_heap_ties_are_fifo);
    tcase_add_test(tc, test_timer_heap_reschedule_moves_behind_equals);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_add_test(tc, test_timer_heap_cancel);
    suite_add_tcase(s, tc);

    tc = tcase_create("random");
    tcase_add_test(tc, test_timer_heap_random_matches_model);
    tcase_add_test(tc, test_timer_heap_random_many_ties);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_timer_heap_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
