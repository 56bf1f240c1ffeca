/*
 * Backend pools at run time: which backend a key goes to, given what is up.
 *
 * The mapping itself is the pool's hash ring (hash_ring.c); this module adds
 * the live part: backends that are down or draining are passed over (the key
 * goes to the next backend in its ring order, so when a backend returns only
 * its own keys move back), backends at their bounded-load limit likewise, and
 * passive health turns failed connects into state changes.
 *
 * State is shared by all workers through relaxed atomics: a decision made on
 * a slightly stale view costs at most one extra connect attempt, which is
 * cheaper than any lock on the handshake path. State changes are decided with
 * compare-and-swap so that exactly one worker logs each transition.
 */
#include <wsgate/balancer.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/log.h>

#define RANK_STACK 64

const char *wsg_backend_state_name(wsg_backend_state_t s) {
    switch (s) {
    case WSG_BACKEND_UP:
        return "up";
    case WSG_BACKEND_DOWN:
        return "down";
    case WSG_BACKEND_DRAINING:
        return "draining";
    }
    return "unknown";
}

wsg_balancer_t *wsg_balancer_new(const wsg_pool_conf_t *conf) {
    wsg_balancer_t *b = calloc(1, sizeof(*b));
    wsg_ring_member_t *members = calloc(conf->nbackends, sizeof(*members));
    if (b == NULL || members == NULL)
        goto fail;
    b->conf = conf;
    b->nbackends = conf->nbackends;
    b->backends = calloc(conf->nbackends, sizeof(*b->backends));
    if (b->backends == NULL)
        goto fail;
    for (size_t i = 0; i < conf->nbackends; i++) {
        b->backends[i].conf = &conf->backends[i];
        atomic_init(&b->backends[i].state, WSG_BACKEND_UP);
        members[i].id = conf->backends[i].address;
        members[i].weight = conf->backends[i].weight;
    }
    b->ring = wsg_ring_new(members, conf->nbackends);
    if (b->ring == NULL)
        goto fail;
    free(members);
    return b;
fail:
    free(members);
    wsg_balancer_free(b);
    return NULL;
}

void wsg_balancer_free(wsg_balancer_t *b) {
    if (b == NULL)
        return;
    wsg_ring_free(b->ring);
    free(b->backends);
    free(b);
}

/* Whether backend <be> may take a new connection now, ignoring load. */
static int eligible(wsg_backend_t *be, uint64_t now_ms) {
    int st = atomic_load_explicit(&be->state, memory_order_relaxed);
    if (st == WSG_BACKEND_UP)
        return 1;
    if (st == WSG_BACKEND_DOWN)
        return now_ms >= atomic_load_explicit(&be->retry_at_ms, memory_order_relaxed);
    return 0;
}

size_t wsg_balancer_candidates(wsg_balancer_t *b, uint64_t key_hash, uint64_t now_ms,
                               unsigned *out, size_t cap) {
    unsigned stack[RANK_STACK];
    unsigned *order = stack;
    size_t n = b->nbackends, found = 0, usable = 0;

    if (cap == 0)
        return 0;
    /* Fast path: the key's own backend is up and no load bound applies, and
     * the caller wants only one answer. */
    if (cap == 1 && b->conf->balance.load_factor <= 0) {
        unsigned first = wsg_ring_lookup(b->ring, key_hash);
        if (eligible(&b->backends[first], now_ms)) {
            out[0] = first;
            return 1;
        }
    }
    if (n > RANK_STACK && (order = malloc(n * sizeof(*order))) == NULL)
        return 0;
    n = wsg_ring_rank(b->ring, key_hash, order, n);

    uint64_t bound = UINT64_MAX;
    if (b->conf->balance.load_factor > 0) {
        for (size_t i = 0; i < n; i++)
            usable += eligible(&b->backends[order[i]], now_ms);
        if (usable > 0) {
            /* Consistent hashing with bounded loads (Mirrokni et al.): a
             * backend may hold at most ceil(c * (m + 1) / n) connections,
             * m being the pool's current total and n the usable backends. */
            double mean = (double)(atomic_load_explicit(&b->active, memory_order_relaxed) + 1) /
                          (double)usable;
            bound = (uint64_t)ceil(b->conf->balance.load_factor * mean);
        }
    }
    for (size_t i = 0; i < n && found < cap; i++) {
        wsg_backend_t *be = &b->backends[order[i]];
        if (!eligible(be, now_ms))
            continue;
        if (atomic_load_explicit(&be->active, memory_order_relaxed) >= bound)
            continue;
        out[found++] = order[i];
    }
    if (order != stack)
        free(order);
    return found;
}

void wsg_balancer_report_success(wsg_balancer_t *b, unsigned idx) {
    wsg_backend_t *be = &b->backends[idx];
    atomic_store_explicit(&be->fails, 0, memory_order_relaxed);
    int expect = WSG_BACKEND_DOWN;
    if (atomic_compare_exchange_strong(&be->state, &expect, WSG_BACKEND_UP))
        WSG_LOG(WSG_LOG_WARN, "health", "backend %s of pool %s is up (connect succeeded)",
                be->conf->address, b->conf->name);
}

void wsg_balancer_report_failure(wsg_balancer_t *b, unsigned idx, uint64_t now_ms,
                                 const char *why) {
    wsg_backend_t *be = &b->backends[idx];
    unsigned fall = b->conf->health.fall ? b->conf->health.fall : 1;
    unsigned fails = atomic_fetch_add_explicit(&be->fails, 1, memory_order_relaxed) + 1;
    atomic_fetch_add_explicit(&be->failures, 1, memory_order_relaxed);

    /* A backend already down stays down; its probe failed, so push the next
     * probe out by another interval. */
    atomic_store_explicit(&be->retry_at_ms, now_ms + b->conf->health.interval_ms,
                          memory_order_relaxed);
    if (fails < fall)
        return;
    int expect = WSG_BACKEND_UP;
    if (atomic_compare_exchange_strong(&be->state, &expect, WSG_BACKEND_DOWN))
        WSG_LOG(WSG_LOG_WARN, "health",
                "backend %s of pool %s is down (%u failures in a row, last: %s); "
                "retrying in %llu ms",
                be->conf->address, b->conf->name, fails, why,
                (unsigned long long)b->conf->health.interval_ms);
}

void wsg_balancer_conn_start(wsg_balancer_t *b, unsigned idx) {
    atomic_fetch_add_explicit(&b->backends[idx].active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->backends[idx].total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->active, 1, memory_order_relaxed);
}

void wsg_balancer_conn_end(wsg_balancer_t *b, unsigned idx) {
    atomic_fetch_sub_explicit(&b->backends[idx].active, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&b->active, 1, memory_order_relaxed);
}

wsg_runtime_t *wsg_runtime_new(wsg_config_t *cfg) {
    wsg_runtime_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        return NULL;
    rt->pools = calloc(cfg->npools ? cfg->npools : 1, sizeof(*rt->pools));
    if (rt->pools == NULL) {
        free(rt);
        return NULL;
    }
    rt->cfg = wsg_config_ref(cfg);
    atomic_init(&rt->refcount, 1);
    for (size_t i = 0; i < cfg->npools; i++) {
        rt->pools[i] = wsg_balancer_new(&cfg->pools[i]);
        if (rt->pools[i] == NULL) {
            wsg_runtime_unref(rt);
            return NULL;
        }
    }
    return rt;
}

wsg_runtime_t *wsg_runtime_ref(wsg_runtime_t *rt) {
    atomic_fetch_add_explicit(&rt->refcount, 1, memory_order_relaxed);
    return rt;
}

void wsg_runtime_unref(wsg_runtime_t *rt) {
    if (rt == NULL || atomic_fetch_sub_explicit(&rt->refcount, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < rt->cfg->npools; i++)
        wsg_balancer_free(rt->pools[i]);
    free(rt->pools);
    wsg_config_unref(rt->cfg);
    free(rt);
}
