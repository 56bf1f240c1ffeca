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
 * compare-and-swap so that exactly one worker logs each transition; the
 * winner also records it in a small process-wide ring of recent changes
 * (under a mutex: transitions are rare, lookups never take it).
 */
#include <wsgate/balancer.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wsgate/jwt.h>
#include <wsgate/log.h>
#include <wsgate/sticky_cookie.h>
#include <wsgate/tls.h>

#define RANK_STACK 64

const char *wsg_health_type_name(wsg_health_type_t t) {
    switch (t) {
    case WSG_HEALTH_TCP:
        return "tcp";
    case WSG_HEALTH_HTTP:
        return "http";
    case WSG_HEALTH_WEBSOCKET:
        return "websocket";
    default:
        return "passive";
    }
}

void wsg_backend_traffic(wsg_backend_t *be, uint64_t frames[2], uint64_t bytes[2]) {
    frames[0] = frames[1] = bytes[0] = bytes[1] = 0;
    for (unsigned i = 0; i < WSG_BACKEND_STRIPES; i++) {
        for (int d = 0; d < 2; d++) {
            frames[d] += atomic_load_explicit(&be->traffic[i].frames[d], memory_order_relaxed);
            bytes[d] += atomic_load_explicit(&be->traffic[i].bytes[d], memory_order_relaxed);
        }
    }
}

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

static wsg_backend_t *backend_new(const char *pool, const char *address) {
    /* 64-aligned: each traffic stripe owns its cache line. */
    size_t size = (sizeof(wsg_backend_t) + 63) & ~(size_t)63;
    wsg_backend_t *be = aligned_alloc(64, size);
    if (be == NULL)
        return NULL;
    memset(be, 0, size);
    be->address = strdup(address);
    be->pool = strdup(pool);
    if (be->address == NULL || be->pool == NULL) {
        free(be->address);
        free(be->pool);
        free(be);
        return NULL;
    }
    atomic_init(&be->state, WSG_BACKEND_UP);
    atomic_init(&be->refcount, 1);
    return be;
}

wsg_backend_t *wsg_backend_ref(wsg_backend_t *be) {
    atomic_fetch_add_explicit(&be->refcount, 1, memory_order_relaxed);
    return be;
}

void wsg_backend_unref(wsg_backend_t *be) {
    if (be == NULL || atomic_fetch_sub_explicit(&be->refcount, 1, memory_order_acq_rel) != 1)
        return;
    free(be->address);
    free(be->pool);
    free(be);
}

static wsg_pool_counters_t *counters_take(const wsg_balancer_t *prev) {
    if (prev != NULL && prev->counters != NULL) {
        atomic_fetch_add_explicit(&prev->counters->refcount, 1, memory_order_relaxed);
        return prev->counters;
    }
    wsg_pool_counters_t *pc = calloc(1, sizeof(*pc));
    if (pc != NULL)
        atomic_init(&pc->refcount, 1);
    return pc;
}

static void counters_unref(wsg_pool_counters_t *pc) {
    if (pc != NULL && atomic_fetch_sub_explicit(&pc->refcount, 1, memory_order_acq_rel) == 1)
        free(pc);
}

static int find_leaving(const wsg_balancer_t *b, const char *address) {
    for (size_t i = 0; i < b->nleaving; i++)
        if (strcmp(b->leaving[i].be->address, address) == 0)
            return (int)i;
    return -1;
}

static void record_change(const wsg_balancer_t *b, const wsg_backend_t *be, int from, int to,
                          const char *why);

/* The backend of <prev> for <addr>: one of its backends, or a leaving one,
 * which is listed again and so back up. NULL: a new backend. */
static wsg_backend_t *take_over(const wsg_balancer_t *b, const wsg_balancer_t *prev,
                                const char *addr) {
    int i;
    if (prev == NULL)
        return NULL;
    if ((i = wsg_balancer_find(prev, addr)) >= 0)
        return wsg_backend_ref(prev->backends[i]);
    if ((i = find_leaving(prev, addr)) < 0)
        return NULL;
    wsg_backend_t *be = wsg_backend_ref(prev->leaving[i].be);
    atomic_store(&be->fails, 0);
    atomic_store(&be->passes, 0);
    atomic_store(&be->retry_at_ms, 0);
    int was = atomic_exchange(&be->state, WSG_BACKEND_UP);
    if (was != WSG_BACKEND_UP) {
        WSG_LOG(WSG_LOG_WARN, "health", "backend %s of pool %s is up (was %s): listed again",
                be->address, b->conf->name, wsg_backend_state_name(was));
        record_change(b, be, was, WSG_BACKEND_UP, "listed again");
    }
    return be;
}

/* Carries over the leaving backends of <prev> that still have connections
 * and that <b> does not list again. */
static int carry_leaving(wsg_balancer_t *b, const wsg_balancer_t *prev) {
    for (size_t i = 0; prev != NULL && i < prev->nleaving; i++) {
        wsg_backend_t *be = prev->leaving[i].be;
        if (atomic_load(&be->active) == 0 || wsg_balancer_find(b, be->address) >= 0)
            continue;
        wsg_leaving_t *l = realloc(b->leaving, (b->nleaving + 1) * sizeof(*l));
        if (l == NULL)
            return -1;
        b->leaving = l;
        l[b->nleaving].be = wsg_backend_ref(be);
        l[b->nleaving++].weight = prev->leaving[i].weight;
    }
    return 0;
}

int wsg_balancer_add_leaving(wsg_balancer_t *b, wsg_backend_t *be, unsigned weight) {
    int prev = atomic_exchange(&be->state, WSG_BACKEND_DRAINING);
    if (prev != WSG_BACKEND_DRAINING) {
        WSG_LOG(WSG_LOG_WARN, "health", "backend %s of pool %s is draining (was %s): removed",
                be->address, b->conf->name, wsg_backend_state_name(prev));
        record_change(b, be, prev, WSG_BACKEND_DRAINING, "removed");
    }
    if (find_leaving(b, be->address) >= 0)
        return 0;
    wsg_leaving_t *l = realloc(b->leaving, (b->nleaving + 1) * sizeof(*l));
    if (l == NULL)
        return -1;
    b->leaving = l;
    l[b->nleaving].be = wsg_backend_ref(be);
    l[b->nleaving++].weight = weight;
    return 0;
}

bool wsg_balancer_moved(const wsg_balancer_t *b, uint64_t key_hash,
                        const wsg_backend_t *current) {
    if (b->ring == NULL)
        return false;
    unsigned first = wsg_ring_lookup(b->ring, key_hash);
    return b->added[first] && b->backends[first] != current;
}

int wsg_balancer_find(const wsg_balancer_t *b, const char *address) {
    for (size_t i = 0; i < b->nbackends; i++)
        if (strcmp(b->backends[i]->address, address) == 0)
            return (int)i;
    return -1;
}

/* Each backend's cookie id, computed once per configuration, so that a
 * cookie finds its backend with one HMAC to check, not one per backend. */
static int sticky_ids(wsg_balancer_t *b) {
    const wsg_cookie_conf_t *ck = &b->conf->balance.cookie;
    b->sticky_ids = calloc(b->nbackends, sizeof(*b->sticky_ids));
    if (b->sticky_ids == NULL)
        return -1;
    for (size_t i = 0; i < b->nbackends; i++)
        b->sticky_ids[i] = wsg_sticky_id(ck->secret, ck->secret_len, b->conf->name,
                                         b->conf->backends[i].address);
    return 0;
}

int wsg_balancer_sticky(const wsg_balancer_t *b, const char *v, size_t n, uint64_t now_s,
                        const char **why) {
    const wsg_cookie_conf_t *ck = &b->conf->balance.cookie;
    wsg_sticky_value_t pv;
    wsg_sticky_status_t st = WSG_STICKY_FORGED;

    *why = "no cookie";
    if (b->sticky_ids == NULL)
        return -1;
    if (wsg_sticky_parse(v, n, &pv) != WSG_STICKY_OK) {
        *why = wsg_sticky_status_name(WSG_STICKY_MALFORMED);
        return -1;
    }
    /* Ids are 32 bits: two backends may share one, so each that does is
     * checked until the MAC says which. */
    for (size_t i = 0; i < b->nbackends; i++) {
        if (b->sticky_ids[i] != pv.id)
            continue;
        st = wsg_sticky_verify(ck->secret, ck->secret_len, b->conf->name,
                               b->conf->backends[i].address, v, n, now_s, ck->max_age_s);
        if (st == WSG_STICKY_EXPIRED)
            break;
        if (st != WSG_STICKY_OK)
            continue;
        if (atomic_load_explicit(&b->backends[i]->state, memory_order_relaxed) != WSG_BACKEND_UP) {
            *why = "its backend is not up";
            return -1;
        }
        *why = NULL;
        return (int)i;
    }
    *why = st == WSG_STICKY_EXPIRED ? wsg_sticky_status_name(st)
                                    : "names no backend of this pool under this secret";
    return -1;
}

wsg_balancer_t *wsg_balancer_new(const wsg_pool_conf_t *conf, const wsg_balancer_t *prev) {
    wsg_balancer_t *b = calloc(1, sizeof(*b));
    /* A pool may have no backend yet: its only entries are names that DNS
     * has not resolved (SPEC §12). It has no ring then, and answers 503. */
    size_t cap = conf->nbackends ? conf->nbackends : 1;
    wsg_ring_member_t *members = calloc(cap, sizeof(*members));
    if (b == NULL || members == NULL)
        goto fail;
    b->conf = conf;
    b->nbackends = conf->nbackends;
    b->active_checks = conf->health.type != WSG_HEALTH_NONE;
    b->backends = calloc(cap, sizeof(*b->backends));
    b->added = calloc(cap, sizeof(*b->added));
    b->counters = counters_take(prev);
    if (b->backends == NULL || b->added == NULL || b->counters == NULL)
        goto fail;
    for (size_t i = 0; i < conf->nbackends; i++) {
        const char *addr = conf->backends[i].address;
        if ((b->backends[i] = take_over(b, prev, addr)) == NULL) {
            if ((b->backends[i] = backend_new(conf->name, addr)) == NULL)
                goto fail;
            b->added[i] = prev != NULL;
        }
        members[i].id = addr;
        members[i].weight = conf->backends[i].weight;
    }
    if (conf->balance.cookie.enabled && sticky_ids(b) != 0)
        goto fail;
    b->ring = conf->nbackends ? wsg_ring_new(members, conf->nbackends) : NULL;
    if ((b->ring == NULL && conf->nbackends > 0) || carry_leaving(b, prev) != 0)
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
    for (size_t i = 0; b->backends != NULL && i < b->nbackends; i++)
        wsg_backend_unref(b->backends[i]);
    for (size_t i = 0; i < b->nleaving; i++)
        wsg_backend_unref(b->leaving[i].be);
    free(b->backends);
    free(b->added);
    free(b->sticky_ids);
    free(b->leaving);
    counters_unref(b->counters);
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

    if (cap == 0 || n == 0)
        return 0;
    /* Fast path: the key's own backend is up and no load bound applies, and
     * the caller wants only one answer. */
    if (cap == 1 && b->conf->balance.load_factor <= 0) {
        unsigned first = wsg_ring_lookup(b->ring, key_hash);
        if (eligible(b->backends[first], now_ms)) {
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
            usable += eligible(b->backends[order[i]], now_ms);
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
        wsg_backend_t *be = b->backends[order[i]];
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

/* The ring of recent changes: <changes_n> recorded so far, the newest at
 * index (changes_n - 1) % WSG_BACKEND_CHANGES. */
static pthread_mutex_t changes_lock = PTHREAD_MUTEX_INITIALIZER;
static wsg_backend_change_t changes[WSG_BACKEND_CHANGES];
static uint64_t changes_n;

static void record_change(const wsg_balancer_t *b, const wsg_backend_t *be, int from, int to,
                          const char *why) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&changes_lock);
    wsg_backend_change_t *c = &changes[changes_n % WSG_BACKEND_CHANGES];
    c->seq = ++changes_n;
    c->at_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    c->from = (wsg_backend_state_t)from;
    c->to = (wsg_backend_state_t)to;
    snprintf(c->pool, sizeof(c->pool), "%s", b->conf->name);
    snprintf(c->address, sizeof(c->address), "%s", be->address);
    snprintf(c->why, sizeof(c->why), "%s", why);
    pthread_mutex_unlock(&changes_lock);
}

size_t wsg_balancer_changes(wsg_backend_change_t *out, size_t cap) {
    size_t n = 0;
    pthread_mutex_lock(&changes_lock);
    for (uint64_t i = changes_n; i > 0 && n < cap && n < WSG_BACKEND_CHANGES; i--)
        out[n++] = changes[(i - 1) % WSG_BACKEND_CHANGES];
    pthread_mutex_unlock(&changes_lock);
    return n;
}

static void set_state(wsg_balancer_t *b, wsg_backend_t *be, int from, int to, const char *why) {
    if (atomic_compare_exchange_strong(&be->state, &from, to)) {
        WSG_LOG(WSG_LOG_WARN, "health", "backend %s of pool %s is %s (was %s): %s", be->address,
                b->conf->name, wsg_backend_state_name(to), wsg_backend_state_name(from), why);
        record_change(b, be, from, to, why);
    }
}

void wsg_balancer_report_success(wsg_balancer_t *b, unsigned idx) {
    wsg_backend_t *be = b->backends[idx];
    atomic_store_explicit(&be->fails, 0, memory_order_relaxed);
    /* With active checks, only they bring a backend back (after rise
     * passes); without, a successful probe connection does. */
    if (!b->active_checks)
        set_state(b, be, WSG_BACKEND_DOWN, WSG_BACKEND_UP, "a connection succeeded");
}

void wsg_balancer_report_failure(wsg_balancer_t *b, unsigned idx, uint64_t now_ms,
                                 const char *why) {
    wsg_backend_t *be = b->backends[idx];
    unsigned fall = b->conf->health.fall ? b->conf->health.fall : 1;
    unsigned fails = atomic_fetch_add_explicit(&be->fails, 1, memory_order_relaxed) + 1;
    char msg[160];

    atomic_fetch_add_explicit(&be->failures, 1, memory_order_relaxed);
    /* Without active checks a passively downed backend is probed again by
     * real traffic after one health interval; a failed probe pushes the
     * next one out. With active checks, the checks decide. */
    atomic_store_explicit(&be->retry_at_ms,
                          b->active_checks ? UINT64_MAX : now_ms + b->conf->health.interval_ms,
                          memory_order_relaxed);
    if (fails < fall)
        return;
    snprintf(msg, sizeof(msg), "%u failures in a row, last: %s", fails, why);
    set_state(b, be, WSG_BACKEND_UP, WSG_BACKEND_DOWN, msg);
}

void wsg_balancer_check_result(wsg_balancer_t *b, unsigned idx, bool ok, uint64_t ms,
                               const char *why) {
    wsg_backend_t *be = b->backends[idx];
    char msg[192];

    be->last_check.done = true;
    be->last_check.ok = ok;
    be->last_check.ms = ms;
    snprintf(be->last_check.error, sizeof(be->last_check.error), "%s", ok ? "" : why);
    if (ok) {
        atomic_store_explicit(&be->fails, 0, memory_order_relaxed);
        unsigned passes = atomic_fetch_add_explicit(&be->passes, 1, memory_order_relaxed) + 1;
        if (passes >= b->conf->health.rise) {
            snprintf(msg, sizeof(msg), "%u %s check%s passed", passes,
                     wsg_health_type_name(b->conf->health.type), passes == 1 ? "" : "s");
            set_state(b, be, WSG_BACKEND_DOWN, WSG_BACKEND_UP, msg);
        }
        return;
    }
    atomic_store_explicit(&be->passes, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&be->failures, 1, memory_order_relaxed);
    atomic_store_explicit(&be->retry_at_ms, UINT64_MAX, memory_order_relaxed);
    unsigned fails = atomic_fetch_add_explicit(&be->fails, 1, memory_order_relaxed) + 1;
    if (fails >= b->conf->health.fall) {
        snprintf(msg, sizeof(msg), "%u %s checks failed, last: %s", fails,
                 wsg_health_type_name(b->conf->health.type), why);
        set_state(b, be, WSG_BACKEND_UP, WSG_BACKEND_DOWN, msg);
    }
}

wsg_backend_state_t wsg_balancer_set_draining(wsg_balancer_t *b, unsigned idx) {
    wsg_backend_t *be = b->backends[idx];
    int prev = atomic_exchange(&be->state, WSG_BACKEND_DRAINING);
    if (prev != WSG_BACKEND_DRAINING) {
        WSG_LOG(WSG_LOG_WARN, "health", "backend %s of pool %s is draining (was %s): admin request",
                be->address, b->conf->name, wsg_backend_state_name(prev));
        record_change(b, be, prev, WSG_BACKEND_DRAINING, "admin request");
    }
    return (wsg_backend_state_t)prev;
}

wsg_backend_state_t wsg_balancer_enable(wsg_balancer_t *b, unsigned idx) {
    wsg_backend_t *be = b->backends[idx];
    atomic_store(&be->fails, 0);
    atomic_store(&be->passes, 0);
    atomic_store(&be->retry_at_ms, 0);
    int prev = atomic_exchange(&be->state, WSG_BACKEND_UP);
    if (prev != WSG_BACKEND_UP) {
        WSG_LOG(WSG_LOG_WARN, "health", "backend %s of pool %s is up (was %s): admin request",
                be->address, b->conf->name, wsg_backend_state_name(prev));
        record_change(b, be, prev, WSG_BACKEND_UP, "admin request");
    }
    return (wsg_backend_state_t)prev;
}

void wsg_balancer_conn_start(wsg_balancer_t *b, unsigned idx) {
    atomic_fetch_add_explicit(&b->backends[idx]->active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->backends[idx]->total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->active, 1, memory_order_relaxed);
}

void wsg_balancer_conn_end(wsg_balancer_t *b, unsigned idx) {
    atomic_fetch_sub_explicit(&b->backends[idx]->active, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&b->active, 1, memory_order_relaxed);
}

wsg_balancer_t *wsg_runtime_pool(const wsg_runtime_t *rt, const char *name) {
    for (size_t i = 0; i < rt->cfg->npools; i++)
        if (strcmp(rt->cfg->pools[i].name, name) == 0)
            return rt->pools[i];
    return NULL;
}

wsg_runtime_t *wsg_runtime_new(wsg_config_t *cfg, const wsg_runtime_t *prev) {
    wsg_runtime_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        return NULL;
    rt->pools = calloc(cfg->npools ? cfg->npools : 1, sizeof(*rt->pools));
    rt->pool_tls = calloc(cfg->npools ? cfg->npools : 1, sizeof(*rt->pool_tls));
    rt->listener_tls = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*rt->listener_tls));
    if (rt->pools == NULL || rt->pool_tls == NULL || rt->listener_tls == NULL) {
        free(rt->pools);
        free(rt->pool_tls);
        free(rt->listener_tls);
        free(rt);
        return NULL;
    }
    rt->auth_keys = calloc(cfg->nauths ? cfg->nauths : 1, sizeof(*rt->auth_keys));
    rt->cfg = wsg_config_ref(cfg);
    atomic_init(&rt->refcount, 1);
    if (rt->auth_keys == NULL) {
        wsg_runtime_unref(rt);
        return NULL;
    }
    /* The rates were range-checked by the config: init cannot fail on a
     * non-zero one, and a zero one stays all-zero ("off"). */
    if (cfg->limits.handshakes_per_ip_per_s)
        wsg_rate_init(&rt->handshake_rate, (uint32_t)cfg->limits.handshakes_per_ip_per_s,
                      (uint32_t)cfg->limits.handshake_burst);
    if (cfg->limits.messages_per_s)
        wsg_rate_init(&rt->message_rate, (uint32_t)cfg->limits.messages_per_s,
                      (uint32_t)cfg->limits.message_burst);
    if (cfg->limits.client_bytes_per_s)
        wsg_rate_init(&rt->client_bytes_rate, (uint32_t)cfg->limits.client_bytes_per_s, 0);
    for (size_t i = 0; i < cfg->npools; i++) {
        const wsg_balancer_t *old = prev ? wsg_runtime_pool(prev, cfg->pools[i].name) : NULL;
        rt->pools[i] = wsg_balancer_new(&cfg->pools[i], old);
        if (rt->pools[i] == NULL) {
            wsg_runtime_unref(rt);
            return NULL;
        }
    }
    return rt;
}

int wsg_runtime_load_tls(wsg_runtime_t *rt, char *err, size_t errcap) {
    const wsg_config_t *cfg = rt->cfg;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const wsg_listener_conf_t *lc = &cfg->listeners[i];
        if (lc->tls == NULL || rt->listener_tls[i] != NULL)
            continue;
        if (wsg_tls_server_ctx_new(lc->tls, &rt->listener_tls[i], err, errcap) != 0)
            return -1;
    }
    for (size_t i = 0; i < cfg->npools; i++) {
        const wsg_pool_conf_t *pc = &cfg->pools[i];
        if (!pc->tls.enabled || rt->pool_tls[i] != NULL)
            continue;
        if (wsg_tls_client_ctx_new(&pc->tls, &rt->pool_tls[i], err, errcap) != 0)
            return -1;
    }
    return 0;
}

int wsg_runtime_load_auth(wsg_runtime_t *rt, char *err, size_t errcap) {
    const wsg_config_t *cfg = rt->cfg;
    for (size_t i = 0; i < cfg->nauths; i++) {
        const wsg_auth_conf_t *a = &cfg->auths[i];
        char why[256];
        if (rt->auth_keys[i] != NULL)
            continue;
        if (wsg_jwt_keys_load(a->keys, &rt->auth_keys[i], why, sizeof(why)) != 0) {
            snprintf(err, errcap, "auth.%s.keys: %s: %s", a->name, a->keys, why);
            return -1;
        }
    }
    return 0;
}

wsg_runtime_t *wsg_runtime_ref(wsg_runtime_t *rt) {
    atomic_fetch_add_explicit(&rt->refcount, 1, memory_order_relaxed);
    return rt;
}

void wsg_runtime_unref(wsg_runtime_t *rt) {
    if (rt == NULL || atomic_fetch_sub_explicit(&rt->refcount, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < rt->cfg->npools; i++) {
        wsg_balancer_free(rt->pools[i]);
        wsg_tls_ctx_unref(rt->pool_tls[i]);
    }
    for (size_t i = 0; i < rt->cfg->nlisteners; i++)
        wsg_tls_ctx_unref(rt->listener_tls[i]);
    for (size_t i = 0; rt->auth_keys != NULL && i < rt->cfg->nauths; i++)
        wsg_jwt_keys_free(rt->auth_keys[i]);
    free(rt->auth_keys);
    free(rt->pools);
    free(rt->pool_tls);
    free(rt->listener_tls);
    wsg_config_unref(rt->cfg);
    free(rt);
}
