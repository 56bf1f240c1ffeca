/*
 * The worker's pool of idle backend connections (SPEC §9).
 *
 * Per worker, because a libuv handle belongs to one loop: a backend
 * connection is reused only by the worker that opened it, so the pool needs
 * no lock. Idle connections of one backend sit in that backend's slot,
 * newest first: the newest is the one least likely to have been closed by
 * the backend. All of them also sit in one worker-wide list, newest first,
 * so that expiry pops from its tail and one deadline node (the pool's) does
 * for every idle connection.
 *
 * An idle connection is read: a backend that closes it (its own idle
 * timeout, a restart) is noticed at once and the connection is closed, and
 * bytes it was not asked for mean it cannot be trusted with a request.
 */
#include "upstream.h"

#include <wsgate/slab.h>

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <wsgate/conn.h>
#include <wsgate/log.h>

typedef struct wsg_uidle_s uidle_t;

struct wsg_uslot_s {
    wsg_backend_t *be;          /* borrowed: its idle upstreams hold references */
    uidle_t *head;              /* newest first */
    unsigned n;
    wsg_uslot_t *next;
};

/* An idle upstream's place in the pool, from its park to its take or
 * close: in its backend's slot (newest first, taken from the front) and in
 * the worker's list (newest first, expired from the back). */
struct wsg_uidle_s {
    wsg_upstream_t *u;
    wsg_uslot_t *slot;
    uidle_t *snext, *sprev;
    uidle_t *lnext, *lprev;
    uint64_t expires;           /* closed at this loop time */
};

struct wsg_upstreams_s {
    wsg_worker_t *w;
    wsg_uslot_t *slots;         /* only backends with idle connections */
    uidle_t *newest, *oldest;
    uint64_t nidle;
    wsg_timer_node_t timer;     /* due when <oldest> expires */
    bool closed;                /* the worker is stopping: nothing is kept */
    wsg_slab_t slab;            /* where every upstream of the worker lives */
    uv_alloc_cb alloc_cb;       /* the attached connections' read callbacks */
    uv_read_cb read_cb;
    char scratch[256];          /* where unasked-for idle bytes are read to */
};

/* The pool of the worker whose loop <u>'s handle is on. */
static struct wsg_upstreams_s *home_of(const wsg_upstream_t *u) {
    const char *loop = (const char *)u->io.tcp.loop;
    return ((const wsg_worker_t *)(const void *)(loop - offsetof(wsg_worker_t, loop)))->upstreams;
}

static uidle_t *idle_of(const wsg_upstream_t *u) { return u->io.tcp.data; }

static void publish(struct wsg_upstreams_s *p) {
    atomic_store_explicit(&p->w->stats.upstream_idle, p->nidle, memory_order_relaxed);
}

int wsg_upstreams_init(wsg_worker_t *w) {
    struct wsg_upstreams_s *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return UV_ENOMEM;
    p->w = w;
    wsg_slab_init(&p->slab, sizeof(wsg_upstream_t));
    wsg_timer_node_init(&p->timer);
    w->upstreams = p;
    return 0;
}

void wsg_upstreams_free(wsg_worker_t *w) {
    if (w->upstreams != NULL)
        wsg_slab_close(&w->upstreams->slab);
    free(w->upstreams);
    w->upstreams = NULL;
}

wsg_upstream_t *wsg__upstream_new(wsg_worker_t *w, wsg_backend_t *be, bool tls) {
    wsg_upstream_t *u = wsg_slab_alloc(&w->upstreams->slab);
    if (u == NULL)
        return NULL;
    if (wsg_side_init_tcp(&w->loop, &u->io) != 0) {
        wsg_slab_free(&w->upstreams->slab, u);
        return NULL;
    }
    u->be = wsg_backend_ref(be);
    u->tls = tls;
    return u;
}

void wsg__upstream_set_busy(wsg_upstream_t *u, bool busy) {
    if (u->busy == busy)
        return;
    u->busy = busy;
    if (busy)
        atomic_fetch_add_explicit(&u->be->http_busy, 1, memory_order_relaxed);
    else
        atomic_fetch_sub_explicit(&u->be->http_busy, 1, memory_order_relaxed);
}

void wsg__upstream_free(wsg_upstream_t *u) {
    wsg__upstream_set_busy(u, false);
    wsg_backend_unref(u->be);
    wsg_slab_free(&home_of(u)->slab, u);
}

/* ---- the idle lists ------------------------------------------------------------- */

static wsg_uslot_t *slot_find(struct wsg_upstreams_s *p, const wsg_backend_t *be) {
    for (wsg_uslot_t *s = p->slots; s != NULL; s = s->next)
        if (s->be == be)
            return s;
    return NULL;
}

static void reschedule(struct wsg_upstreams_s *p) {
    if (p->oldest == NULL)
        wsg_worker_unschedule(p->w, &p->timer);
    else
        wsg_worker_schedule(p->w, &p->timer, p->oldest->expires);
}

/* Takes <u> off both idle lists (and frees its slot when it empties, and
 * its record): it is no longer idle. */
static void unlink_idle(struct wsg_upstreams_s *p, wsg_upstream_t *u) {
    uidle_t *i = idle_of(u);
    wsg_uslot_t *s = i->slot;

    if (i->sprev)
        i->sprev->snext = i->snext;
    else
        s->head = i->snext;
    if (i->snext)
        i->snext->sprev = i->sprev;
    if (--s->n == 0) {
        wsg_uslot_t **pp = &p->slots;
        while (*pp != s)
            pp = &(*pp)->next;
        *pp = s->next;
        free(s);
    }
    if (i->lprev)
        i->lprev->lnext = i->lnext;
    else
        p->newest = i->lnext;
    if (i->lnext)
        i->lnext->lprev = i->lprev;
    else
        p->oldest = i->lprev;
    free(i);
    u->io.tcp.data = NULL;
    u->idle = 0;
    p->nidle--;
    atomic_fetch_sub_explicit(&u->be->http_idle, 1, memory_order_relaxed);
    publish(p);
}

static void on_idle_closed(uv_handle_t *h) { wsg__upstream_free(wsg__upstream_of(h)); }

static void close_idle(struct wsg_upstreams_s *p, wsg_upstream_t *u, const char *why) {
    WSG_LOG(WSG_LOG_DEBUG, "upstream", "closing an idle connection to %s: %s", u->be->address,
            why);
    unlink_idle(p, u);
    u->io.ops->close(&u->io, on_idle_closed);
}

/* One pair of read callbacks for the life of the socket: bytes go to the
 * attached connection, or, while idle, mean the connection is done. */
static void on_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    wsg_upstream_t *u = wsg__upstream_of(h);
    struct wsg_upstreams_s *p = home_of(u);
    if (!u->idle) {
        p->alloc_cb(h, suggested, buf);
        return;
    }
    *buf = uv_buf_init(p->scratch, sizeof(p->scratch));
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    wsg_upstream_t *u = wsg__upstream_of((uv_handle_t *)s);
    if (!u->idle) {
        home_of(u)->read_cb(s, nread, buf);
        return;
    }
    if (nread == 0)
        return;
    close_idle(home_of(u), u, nread > 0 ? "the backend sent bytes nobody asked for"
                                     : "the backend closed it");
}

int wsg__upstream_read_start(wsg_upstream_t *u, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
    struct wsg_upstreams_s *p = home_of(u);
    p->alloc_cb = alloc_cb;
    p->read_cb = read_cb;
    if (u->reading)
        return 0;
    int r = u->io.ops->read_start(&u->io, on_up_alloc, on_up_read);
    if (r == 0)
        u->reading = 1;
    return r;
}

void wsg__upstream_read_stop(wsg_upstream_t *u) {
    if (u->reading)
        u->io.ops->read_stop(&u->io);
    u->reading = 0;
}

bool wsg__upstream_park(wsg_worker_t *w, wsg_upstream_t *u, unsigned keep, uint64_t idle_ms) {
    struct wsg_upstreams_s *p = w->upstreams;
    wsg_uslot_t *s = slot_find(p, u->be);
    uidle_t *i;

    if (p->closed || keep == 0 || (s != NULL && s->n >= keep))
        return false;
    if ((i = calloc(1, sizeof(*i))) == NULL)
        return false;
    if (s == NULL) {
        if ((s = calloc(1, sizeof(*s))) == NULL) {
            free(i);
            return false;
        }
        s->be = u->be;
        s->next = p->slots;
        p->slots = s;
    }
    if (!u->reading && u->io.ops->read_start(&u->io, on_up_alloc, on_up_read) != 0) {
        if (s->n == 0) {
            p->slots = s->next;
            free(s);
        }
        free(i);
        return false;
    }
    u->reading = 1;
    u->idle = 1;
    u->io.tcp.data = i;
    wsg__upstream_set_busy(u, false);
    i->u = u;
    i->slot = s;
    i->snext = s->head;
    if (s->head)
        s->head->sprev = i;
    s->head = i;
    s->n++;
    i->lnext = p->newest;
    if (p->newest)
        p->newest->lprev = i;
    else
        p->oldest = i;
    p->newest = i;
    /* A reload may shorten upstream_idle_ms: the list stays in park order,
     * so a connection parked after it may wait for an older one's time. */
    i->expires = uv_now(&w->loop) + idle_ms;
    p->nidle++;
    atomic_fetch_add_explicit(&u->be->http_idle, 1, memory_order_relaxed);
    publish(p);
    if (p->oldest == i)
        reschedule(p);
    return true;
}

/* A FIN or a reset already waiting in the socket (one recv that does not
 * consume). TLS records would be read by the loop before we get here, so
 * any byte waiting is just as bad. */
static bool looks_closed(wsg_upstream_t *u) {
    uv_os_fd_t fd;
    char b;
    if (uv_fileno((uv_handle_t *)&u->io.tcp, &fd) != 0)
        return true;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

wsg_upstream_t *wsg__upstream_take(wsg_worker_t *w, wsg_backend_t *be, bool tls, bool probe) {
    struct wsg_upstreams_s *p = w->upstreams;
    wsg_uslot_t *s;
    wsg_upstream_t *got = NULL;

    while (got == NULL && (s = slot_find(p, be)) != NULL) {
        wsg_upstream_t *u = s->head->u;
        if (u->tls != tls) {
            /* The pool's TLS setting changed with a reload: of no use now. */
            close_idle(p, u, "the pool's TLS setting changed");
        } else if (probe && looks_closed(u)) {
            close_idle(p, u, "the backend closed it");
        } else {
            unlink_idle(p, u);
            got = u;
        }
    }
    reschedule(p);
    return got;
}

/* ---- expiry and shutdown ------------------------------------------------------------ */

bool wsg_upstreams_on_deadline(wsg_worker_t *w, wsg_timer_node_t *n, uint64_t now) {
    struct wsg_upstreams_s *p = w->upstreams;
    if (p == NULL || n != &p->timer)
        return false;
    while (p->oldest != NULL && p->oldest->expires <= now)
        close_idle(p, p->oldest->u, "upstream_idle_ms");
    reschedule(p);
    return true;
}

void wsg_upstreams_close(wsg_worker_t *w) {
    struct wsg_upstreams_s *p = w->upstreams;
    if (p == NULL)
        return;
    p->closed = true;
    while (p->oldest != NULL)
        close_idle(p, p->oldest->u, "wsgate is shutting down");
    reschedule(p);
}
