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

#include <wsgate/conn.h>
#include <wsgate/log.h>

#define POOL_MAX_FREE 1024 /* cached chunks per worker: 16 MiB at most */

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

static void close_listeners(wsg_worker_t *w) {
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].open) {
            w->listeners[i].open = false;
            uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
        }
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
    /* Every relayed client hears 1001 "going away" (SPEC §8); the
     * connections then end by themselves within drain_ms, each bounded by
     * its own close deadline. */
    for (wsg_conn_t *c = w->conns, *next; c != NULL; c = next) {
        next = wsg_conn_next(c);
        wsg_conn_going_away(c, 1001, "going away");
    }
    uv_close((uv_handle_t *)&w->async, NULL);
}

static void on_async(uv_async_t *a) {
    wsg_worker_t *w = a->data;
    if (atomic_load(&w->stop_requested))
        begin_stop(w);
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
    wsg_timer_heap_init(&w->deadlines);
    wsg_bufpool_init(&w->bufs, WSG_CHUNK_SIZE, POOL_MAX_FREE);
    uv_timer_init(&w->loop, &w->timer);
    w->timer.data = w;
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    w->rt = wsg_runtime_ref(rt);
    w->nlisteners = rt->cfg->nlisteners;
    w->listeners = calloc(w->nlisteners, sizeof(*w->listeners));
    if (w->listeners == NULL)
        return UV_ENOMEM;
    for (size_t i = 0; i < w->nlisteners; i++) {
        wsg_wlistener_t *l = &w->listeners[i];
        l->worker = w;
        l->index = i;
        uv_tcp_init(&w->loop, &l->tcp);
        l->tcp.data = l;
        l->open = true;
        if ((r = uv_tcp_open(&l->tcp, fds[i])) != 0)
            return r;
        if ((r = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection)) != 0)
            return r;
    }
    return 0;
}

static void run(void *arg) {
    wsg_worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->on_exit != NULL)
        w->on_exit(w->server);
}

int wsg_worker_start(wsg_worker_t *w) { return uv_thread_create(&w->thread, run, w); }

void wsg_worker_request_stop(wsg_worker_t *w) {
    atomic_store(&w->stop_requested, 1);
    uv_async_send(&w->async);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void wsg_worker_join(wsg_worker_t *w) {
    uv_thread_join(&w->thread);
    /* The loop ended because nothing is left but the timer; close it and
     * anything else still open, and let the close callbacks run. */
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) != 0)
        WSG_LOG(WSG_LOG_WARN, "worker", "worker %u: loop closed with handles open", w->id);
    wsg_timer_heap_close(&w->deadlines);
    wsg_bufpool_close(&w->bufs);
    wsg_runtime_unref(w->rt);
    free(w->listeners);
}
