/*
 * Worker threads: one uv loop each, owning its listeners and connections.
 *
 * The server thread creates the listening sockets (so a bind failure is a
 * start-up error it can report) and hands each worker its own file
 * descriptors, bound with SO_REUSEPORT; the kernel then spreads connections
 * over the workers with no accept lock. A worker never touches another's
 * state: the only way in is wsg_worker_request_stop() (an atomic flag plus a
 * uv_async_t wake-up).
 *
 * Every deadline of every connection (handshake, connect, idle, heartbeat,
 * close) lives in one heap per worker behind one uv timer, re-armed only
 * when the earliest deadline changes.
 */
#include <wsgate/worker.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wsgate/conn.h>
#include <wsgate/handshake.h>
#include <wsgate/log.h>
#include <wsgate/uring.h>

#define POOL_MAX_FREE 32 /* cached chunks per worker: 512 KiB at most */
#define BULK_MAX_FREE 8  /* cached bulk chunks per worker: 512 KiB at most */

static void on_timer(uv_timer_t *t);

static void arm(wsg_worker_t *w) {
    wsg_timer_node_t *top = wsg_timer_heap_peek(&w->deadlines);
    if (top == NULL) {
        if (w->timer_due != UINT64_MAX)
            uv_timer_stop(&w->timer);
        w->timer_due = UINT64_MAX;
        return;
    }
    if (top->deadline == w->timer_due)
        return;
    uint64_t now = uv_now(&w->loop);
    w->timer_due = top->deadline;
    uv_timer_start(&w->timer, on_timer, top->deadline > now ? top->deadline - now : 0, 0);
}

void wsg_worker_schedule(wsg_worker_t *w, wsg_timer_node_t *n, uint64_t deadline) {
    if (wsg_timer_node_queued(n) && n->deadline == deadline)
        return;
    if (wsg_timer_heap_schedule(&w->deadlines, n, deadline) != 0) {
        WSG_LOG(WSG_LOG_ERROR, "worker", "out of memory for a deadline");
        return;
    }
    if (deadline < w->timer_due)
        arm(w);
}

void wsg_worker_unschedule(wsg_worker_t *w, wsg_timer_node_t *n) {
    wsg_timer_heap_cancel(&w->deadlines, n);
}

static void on_timer(uv_timer_t *t) {
    wsg_worker_t *w = t->data;
    uint64_t now = uv_now(&w->loop);
    wsg_timer_node_t *n;

    w->timer_due = UINT64_MAX;
    while ((n = wsg_timer_heap_pop_due(&w->deadlines, now)) != NULL)
        if (!wsg_upstreams_on_deadline(w, n, now))
            wsg_conn_on_deadline(n, now);
    arm(w);
}

uint64_t wsg_worker_random(wsg_worker_t *w) {
    /* xorshift64*: plenty for masks and fallback keys, no lock, no syscall. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

const uint64_t wsg_hs_bucket_us[WSG_HS_BUCKETS - 1] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 5000000,
};

const char *const wsg_refused_names[WSG_REFUSED_N] = {
    [WSG_REFUSED_ORIGIN] = "origin",
    [WSG_REFUSED_NO_TOKEN] = "no_token",
    [WSG_REFUSED_BAD_TOKEN] = "invalid_token",
    [WSG_REFUSED_EXPIRED] = "expired_token",
    [WSG_REFUSED_CLAIMS] = "claims",
    [WSG_REFUSED_TWO_TOKENS] = "two_tokens",
    [WSG_REFUSED_RATE] = "handshake_rate",
    [WSG_REFUSED_MESSAGES] = "message_rate",
    [WSG_REFUSED_EXPIRY_CLOSE] = "token_expired",
};

void wsg_worker_count_handshake(wsg_worker_t *w, int status, uint64_t us) {
    wsg_worker_stats_t *st = &w->stats;
    size_t b = 0;
    if (status >= 100 && status < 600) {
        atomic_fetch_add_explicit(&st->handshake_status[status], 1, memory_order_relaxed);
    }
    while (b < WSG_HS_BUCKETS - 1 && us > wsg_hs_bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&st->hs_latency[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->hs_latency_sum_us, us, memory_order_relaxed);
}

void wsg_worker_count_request(wsg_worker_t *w, int status, uint64_t us) {
    wsg_worker_stats_t *st = &w->stats;
    size_t b = 0;
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    atomic_fetch_add_explicit(&st->http_requests[cls], 1, memory_order_relaxed);
    while (b < WSG_HS_BUCKETS - 1 && us > wsg_hs_bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&st->http_latency[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->http_latency_sum_us, us, memory_order_relaxed);
}

static void on_connection(uv_stream_t *s, int status) {
    wsg_wlistener_t *l = s->data;
    if (status < 0) {
        /* EMFILE and friends: libuv already shed the pending connection;
         * say so, and keep listening. */
        WSG_LOG(WSG_LOG_WARN, "listener", "accept failed on %s: %s",
                l->worker->rt->cfg->listeners[l->index].name, uv_strerror(status));
        return;
    }
    wsg_conn_accept(l->worker, l);
}

static wsg_wlistener_t *listener_open(wsg_worker_t *w, size_t index, int fd) {
    wsg_wlistener_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->worker = w;
    l->index = index;
    uv_tcp_init(&w->loop, &l->tcp);
    l->tcp.data = l;
    int r = uv_tcp_open(&l->tcp, fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
    if (r != 0) {
        WSG_LOG(WSG_LOG_ERROR, "listener", "worker %u cannot listen on %s: %s", w->id,
                w->rt->cfg->listeners[index].bind, uv_strerror(r));
        uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
        return NULL;
    }
    return l;
}

static void listener_close(wsg_wlistener_t *l) {
    if (l != NULL)
        uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
}

static void close_listeners(wsg_worker_t *w) {
    for (size_t i = 0; i < w->nlisteners; i++) {
        listener_close(w->listeners[i]);
        w->listeners[i] = NULL;
    }
}

static void begin_stop(wsg_worker_t *w) {
    if (w->stopping)
        return;
    w->stopping = true;
    close_listeners(w);
    /* From now on only live connections keep the loop running; the deadline
     * timer still fires for them but must not hold the worker up once they
     * are gone. */
    uv_unref((uv_handle_t *)&w->timer);
    wsg_upstreams_close(w);
    /* Every relayed client hears 1001 "going away" (SPEC §8); the
     * connections then end by themselves within drain_ms, each bounded by
     * its own close deadline. */
    for (wsg_conn_t *c = w->conns, *next; c != NULL; c = next) {
        next = wsg_conn_next(c);
        wsg_conn_going_away(c);
    }
    uv_close((uv_handle_t *)&w->async, NULL);
}

static bool same_addr(const wsg_sockaddr_t *a, const wsg_sockaddr_t *b) {
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Reload: adopt the new runtime. Listeners bound to an address that stays
 * are kept as they are (their accept queue is never dropped), new ones are
 * adopted from the fds the server bound, removed ones are closed. Live
 * connections keep the runtime they started with. */
static void apply_runtime(wsg_worker_t *w, wsg_worker_msg_t *m) {
    const wsg_config_t *ncfg = m->rt->cfg, *ocfg = w->rt->cfg;
    wsg_wlistener_t **nl = calloc(ncfg->nlisteners ? ncfg->nlisteners : 1, sizeof(*nl));

    if (nl == NULL) {
        WSG_LOG(WSG_LOG_ERROR, "worker", "worker %u: out of memory applying a reload", w->id);
        wsg_runtime_unref(m->rt);
        return;
    }
    for (size_t i = 0; i < ncfg->nlisteners; i++) {
        if (m->fds[i] >= 0) {
            nl[i] = listener_open(w, i, m->fds[i]);
            continue;
        }
        for (size_t j = 0; j < w->nlisteners; j++) {
            wsg_wlistener_t *old = w->listeners[j];
            if (old && same_addr(&ocfg->listeners[old->index].addr, &ncfg->listeners[i].addr)) {
                nl[i] = old;
                old->index = i;
                w->listeners[j] = NULL;
                break;
            }
        }
    }
    close_listeners(w);
    free(w->listeners);
    w->listeners = nl;
    w->nlisteners = ncfg->nlisteners;
    wsg_runtime_unref(w->rt);
    w->rt = m->rt; /* the message's reference */
    if (w->stopping)
        close_listeners(w);
}

static void apply_drain(wsg_worker_t *w, wsg_worker_msg_t *m) {
    uint64_t now = uv_now(&w->loop);
    for (wsg_conn_t *c = w->conns, *next; c != NULL; c = next) {
        next = wsg_conn_next(c);
        uint64_t at = now;
        /* Spread with jitter so the clients do not all reconnect at once. */
        if (m->spread_ms > 0)
            at += wsg_worker_random(w) % m->spread_ms;
        wsg_conn_drain(c, m->backend, at);
    }
}

/* Rebalance: the connections whose key now maps to an added backend get
 * 1012, one per interval (at a random point within it), so that at most
 * this worker's share of max_per_s reconnect each second and not in
 * lockstep with the other workers. */
static void apply_rebalance(wsg_worker_t *w, wsg_worker_msg_t *m) {
    const wsg_balancer_t *b = m->rt->pools[m->pool];
    uint64_t now = uv_now(&w->loop), n = 0, step = m->interval_us ? m->interval_us : 1;
    for (wsg_conn_t *c = w->conns; c != NULL; c = wsg_conn_next(c)) {
        const char *pool;
        uint64_t h;
        const wsg_backend_t *be;
        if (!wsg_conn_placement(c, &pool, &h, &be) || strcmp(pool, b->conf->name) != 0 ||
            !wsg_balancer_moved(b, h, be))
            continue;
        uint64_t at_us = n * step + wsg_worker_random(w) % step;
        wsg_conn_rebalance(c, now + at_us / 1000);
        n++;
    }
    if (n == 0)
        return;
    atomic_fetch_add_explicit(&b->counters->rebalanced, n, memory_order_relaxed);
    WSG_LOG(WSG_LOG_INFO, "worker",
            "worker %u: pool %s: %llu connection%s moved to an added backend: 1012 over %llu ms",
            w->id, b->conf->name, (unsigned long long)n, n == 1 ? "" : "s",
            (unsigned long long)(n * step / 1000));
}

static void msg_free(wsg_worker_msg_t *m) {
    if (m->rt) {
        for (size_t i = 0; m->fds && i < m->rt->cfg->nlisteners; i++)
            if (m->fds[i] >= 0)
                close(m->fds[i]);
        wsg_runtime_unref(m->rt);
    }
    wsg_backend_unref(m->backend);
    free(m->fds);
    free(m);
}

static void on_async(uv_async_t *a) {
    wsg_worker_t *w = a->data;
    wsg_worker_msg_t *m;

    uv_mutex_lock(&w->mq_lock);
    m = w->mq_head;
    w->mq_head = w->mq_tail = NULL;
    uv_mutex_unlock(&w->mq_lock);
    while (m != NULL) {
        wsg_worker_msg_t *next = m->next;
        switch (m->kind) {
        case WSG_MSG_STOP:
            begin_stop(w);
            break;
        case WSG_MSG_RUNTIME:
            /* The runtime and the fds are the worker's now (or closed). */
            apply_runtime(w, m);
            m->rt = NULL;
            break;
        case WSG_MSG_DRAIN:
            apply_drain(w, m);
            break;
        case WSG_MSG_REBALANCE:
            apply_rebalance(w, m);
            break;
        }
        msg_free(m);
        m = next;
    }
}

void wsg_worker_post(wsg_worker_t *w, wsg_worker_msg_t *msg) {
    msg->next = NULL;
    uv_mutex_lock(&w->mq_lock);
    if (w->mq_tail)
        w->mq_tail->next = msg;
    else
        w->mq_head = msg;
    w->mq_tail = msg;
    uv_mutex_unlock(&w->mq_lock);
    uv_async_send(&w->async);
}

int wsg_worker_init(wsg_worker_t *w, wsg_server_t *srv, unsigned id, wsg_runtime_t *rt,
                    const int *fds) {
    int r;
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->server = srv;
    w->timer_due = UINT64_MAX;
    w->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)id << 32) ^ uv_hrtime();
    if (w->rng == 0)
        w->rng = 1;
    if ((r = uv_loop_init(&w->loop)) != 0)
        return r;
    if ((r = uv_mutex_init(&w->mq_lock)) != 0)
        return r;
    wsg_timer_heap_init(&w->deadlines);
    wsg_bufpool_init(&w->bufs, WSG_CHUNK_SIZE, POOL_MAX_FREE);
    wsg_bufpool_init(&w->bulk, WSG_BULK_SIZE, BULK_MAX_FREE);
    wsg_slab_init(&w->conn_slab, wsg_conn_struct_size());
    wsg_slab_init(&w->head_slab, wsg_http_head_size());
    if ((r = wsg_upstreams_init(w)) != 0)
        return r;
    uv_timer_init(&w->loop, &w->timer);
    w->timer.data = w;
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    w->rt = wsg_runtime_ref(rt);
    w->nlisteners = rt->cfg->nlisteners;
    w->listeners = calloc(w->nlisteners ? w->nlisteners : 1, sizeof(*w->listeners));
    if (w->listeners == NULL)
        return UV_ENOMEM;
    for (size_t i = 0; i < w->nlisteners; i++)
        if ((w->listeners[i] = listener_open(w, i, fds[i])) == NULL)
            return UV_EINVAL;
    return 0;
}

static void run(void *arg) {
    wsg_worker_t *w = arg;
    /* The ring is made here, on the thread that submits to it (it is
     * single-issuer); the server's probe said it would work. */
    if (w->want_uring) {
        int r = wsg_uring_new(&w->loop, &w->ring);
        if (r < 0)
            WSG_LOG(WSG_LOG_WARN, "worker", "worker %u: no io_uring (%s): using epoll", w->id,
                    strerror(-r));
    }
    w->on_uring = w->ring != NULL;
    uv_sem_post(&w->started);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->on_exit != NULL)
        w->on_exit(w->server);
}

int wsg_worker_start(wsg_worker_t *w) {
    int r = uv_sem_init(&w->started, 0);
    if (r != 0)
        return r;
    if ((r = uv_thread_create(&w->thread, run, w)) == 0)
        uv_sem_wait(&w->started);
    uv_sem_destroy(&w->started);
    return r;
}

/* w->ring is written on the worker's thread before it posts <started>
 * (wsg_worker_start waits for that) and cleared by wsg_worker_join on the
 * server thread, the one this runs on: reading the pointer is ordered, and
 * the ring's own counters are atomics. */
bool wsg_worker_uring_stats(const wsg_worker_t *w, wsg_uring_stats_t *out) {
    wsg_uring_stats(w->ring, out);
    return w->ring != NULL;
}

void wsg_worker_request_stop(wsg_worker_t *w) {
    wsg_worker_msg_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        abort(); /* cannot even ask for shutdown: nothing sane is left */
    m->kind = WSG_MSG_STOP;
    wsg_worker_post(w, m);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void wsg_worker_join(wsg_worker_t *w) {
    uv_thread_join(&w->thread);
    /* The loop ended because nothing is left but the timer (the listeners
     * closed at stop, every side on the ring has ended): the ring goes with
     * its own callbacks, then anything else still open. */
    wsg_uring_close(w->ring);
    w->ring = NULL;
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) != 0)
        WSG_LOG(WSG_LOG_WARN, "worker", "worker %u: loop closed with handles open", w->id);
    wsg_timer_heap_close(&w->deadlines);
    wsg_bufpool_close(&w->bufs);
    wsg_bufpool_close(&w->bulk);
    wsg_upstreams_free(w);
    wsg_slab_close(&w->conn_slab);
    wsg_slab_close(&w->head_slab);
    wsg_runtime_unref(w->rt);
    free(w->listeners);
    for (wsg_worker_msg_t *m = w->mq_head, *next; m != NULL; m = next) {
        next = m->next;
        msg_free(m);
    }
    uv_mutex_destroy(&w->mq_lock);
}
