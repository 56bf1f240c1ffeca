/*
 * DNS discovery, the asking half: c-ares driven by a libuv loop.
 *
 * c-ares tells which sockets it wants watched through its socket-state
 * callback; each gets a uv_poll, and readiness goes back with
 * ares_process_fd(). Its retransmissions and timeouts are driven by one
 * uv timer set to ares_timeout() after every step. A resolver is that
 * channel plus its handles; it frees itself once they are closed.
 *
 * The running server has one wsg_dns_t per file configuration (a reload
 * makes a new one): an entry timer per resolve entry on the server
 * thread's loop, so a lookup never runs on a worker's. Start-up, reload
 * and --which use a resolver on a loop of their own, run to completion.
 */
#include <wsgate/dns.h>

#include <arpa/inet.h>
#include <ares.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wsgate/log.h>

/* c-ares retries: 1 s, then 2 s (it doubles per round), per server. */
#define LOOKUP_TIMEOUT_MS 1000
#define LOOKUP_TRIES 2

typedef struct resolver_s resolver_t;

typedef struct sock_s {
    uv_poll_t poll;
    ares_socket_t fd;
    resolver_t *r;
    struct sock_s *next;
} sock_t;

struct resolver_s {
    uv_loop_t *loop;
    ares_channel ch;
    bool have_ch;
    uv_timer_t timer;
    sock_t *socks;
    unsigned pending;     /* lookups not answered yet */
    unsigned handles;     /* open uv handles (timer + polls) */
    bool closing;
};

/* One lookup in flight: where its answer goes. */
typedef struct query_s {
    resolver_t *r;
    void (*done)(void *arg, const wsg_dns_answer_t *ans);
    void *arg;
    char name[256];
} query_t;

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc = ARES_SUCCESS;
static void ares_global_init(void) { ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL); }

static void resolver_maybe_free(resolver_t *r) {
    if (r->closing && r->handles == 0)
        free(r);
}

static void on_handle_closed(uv_handle_t *h) {
    resolver_t *r = h->data;
    r->handles--;
    resolver_maybe_free(r);
}

static void on_poll_closed(uv_handle_t *h) {
    sock_t *s = (sock_t *)(void *)h;
    resolver_t *r = s->r;
    free(s);
    r->handles--;
    resolver_maybe_free(r);
}

static void on_timer(uv_timer_t *t);

/* After every step: the timer follows c-ares's next timeout. */
static void rearm(resolver_t *r) {
    if (r->closing)
        return;
    struct timeval tv;
    if (r->pending == 0 || ares_timeout(r->ch, NULL, &tv) == NULL) {
        uv_timer_stop(&r->timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)(tv.tv_usec + 999) / 1000;
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t) {
    resolver_t *r = t->data;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(r);
}

static void on_poll(uv_poll_t *p, int status, int events) {
    sock_t *s = (sock_t *)(void *)p;
    resolver_t *r = s->r;
    ares_socket_t fd = s->fd;
    /* An error on the socket: let c-ares read and write it, and find out. */
    bool rd = status < 0 || (events & UV_READABLE);
    bool wr = status < 0 || (events & UV_WRITABLE);
    ares_process_fd(r->ch, rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
    rearm(r);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable) {
    resolver_t *r = data;
    sock_t **pp = &r->socks;
    while (*pp != NULL && (*pp)->fd != fd)
        pp = &(*pp)->next;
    sock_t *s = *pp;
    if (!readable && !writable) {
        if (s != NULL) {
            *pp = s->next;
            uv_close((uv_handle_t *)&s->poll, on_poll_closed);
        }
        return;
    }
    if (s == NULL) {
        if ((s = calloc(1, sizeof(*s))) == NULL)
            return; /* the lookup then times out */
        if (uv_poll_init_socket(r->loop, &s->poll, fd) != 0) {
            free(s);
            return;
        }
        s->fd = fd;
        s->r = r;
        s->poll.data = r;
        s->next = r->socks;
        r->socks = s;
        r->handles++;
    }
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

/* "ip:port,[v6]:port" for ares_set_servers_ports_csv(). */
static char *servers_csv(const wsg_config_t *cfg) {
    size_t len = 1;
    for (size_t i = 0; i < cfg->dns.nservers; i++)
        len += strlen(cfg->dns.servers[i]) + 1;
    char *csv = malloc(len);
    if (csv == NULL)
        return NULL;
    csv[0] = '\0';
    for (size_t i = 0; i < cfg->dns.nservers; i++) {
        if (i > 0)
            strcat(csv, ",");
        strcat(csv, cfg->dns.servers[i]);
    }
    return csv;
}

/* A resolver on <loop> for <cfg>'s dns settings, or NULL (logged). */
static resolver_t *resolver_new(uv_loop_t *loop, const wsg_config_t *cfg) {
    pthread_once(&ares_once, ares_global_init);
    if (ares_init_rc != ARES_SUCCESS) {
        WSG_LOG(WSG_LOG_ERROR, "dns", "c-ares: %s", ares_strerror(ares_init_rc));
        return NULL;
    }
    resolver_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->loop = loop;
    struct ares_options o = {0};
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = r;
    o.timeout = LOOKUP_TIMEOUT_MS;
    o.tries = LOOKUP_TRIES;
    if (cfg->dns.nservers > 0) {
        /* The named servers instead of the system's resolver: /etc/hosts
         * is the system's too. */
        o.lookups = (char *)"b";
        mask |= ARES_OPT_LOOKUPS;
    }
    int rc = ares_init_options(&r->ch, &o, mask);
    char *csv = NULL;
    if (rc == ARES_SUCCESS && cfg->dns.nservers > 0) {
        r->have_ch = true;
        csv = servers_csv(cfg);
        rc = csv == NULL ? ARES_ENOMEM : ares_set_servers_ports_csv(r->ch, csv);
    } else if (rc == ARES_SUCCESS) {
        r->have_ch = true;
    }
    free(csv);
    if (rc != ARES_SUCCESS) {
        WSG_LOG(WSG_LOG_ERROR, "dns", "c-ares: cannot start a resolver: %s", ares_strerror(rc));
        if (r->have_ch)
            ares_destroy(r->ch);
        free(r);
        return NULL;
    }
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->handles = 1;
    return r;
}

/* Ends every lookup (their callbacks run now, as cancelled) and closes
 * the handles; <r> frees itself after. */
static void resolver_close(resolver_t *r) {
    if (r == NULL || r->closing)
        return;
    ares_destroy(r->ch); /* closes its sockets: on_sock_state closes their polls */
    r->closing = true;
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

static wsg_dns_result_t result_of(int status) {
    switch (status) {
    case ARES_SUCCESS:
        return WSG_DNS_OK;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return WSG_DNS_NXDOMAIN;
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
    case ARES_ECONNREFUSED:
        /* c-ares passes over a server that answers SERVFAIL or REFUSED to
         * the next one, and when none is left says "could not contact". */
        return WSG_DNS_SERVFAIL;
    case ARES_ETIMEOUT:
        return WSG_DNS_TIMEOUT;
    default:
        return WSG_DNS_ERROR;
    }
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
    query_t *q = arg;
    (void)timeouts;
    q->r->pending--;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        ares_freeaddrinfo(res);
        free(q);
        return;
    }
    if (status != ARES_SUCCESS)
        WSG_LOG(WSG_LOG_DEBUG, "dns", "lookup of %s: c-ares: %s", q->name, ares_strerror(status));
    wsg_dns_answer_t *a = malloc(sizeof(*a));
    if (a != NULL) {
        wsg_dns_answer_reset(a, result_of(status));
        for (struct ares_addrinfo_node *n = res ? res->nodes : NULL; n && status == ARES_SUCCESS;
             n = n->ai_next) {
            uint32_t ttl = n->ai_ttl > 0 ? (uint32_t)n->ai_ttl : 0;
            if (n->ai_family == AF_INET)
                wsg_dns_answer_add(a, AF_INET, &((struct sockaddr_in *)n->ai_addr)->sin_addr, ttl);
            else if (n->ai_family == AF_INET6)
                wsg_dns_answer_add(a, AF_INET6, &((struct sockaddr_in6 *)n->ai_addr)->sin6_addr,
                                   ttl);
        }
        if (a->result == WSG_DNS_OK && a->naddrs == 0)
            a->result = WSG_DNS_NXDOMAIN; /* no record at all */
        if (a->truncated)
            WSG_LOG(WSG_LOG_WARN, "dns", "%s: more than %d addresses: the lowest %d are used",
                    q->name, WSG_DNS_MAX_ADDRS, WSG_DNS_MAX_ADDRS);
    }
    ares_freeaddrinfo(res);
    if (a != NULL) {
        q->done(q->arg, a);
    } else {
        wsg_dns_answer_t err = {.result = WSG_DNS_ERROR, .ttl_s = UINT32_MAX};
        q->done(q->arg, &err);
    }
    free(a);
    free(q);
}

/* Asks for every A and AAAA address of the host of <entry> ("NAME:PORT");
 * <done> gets the answer (not when the resolver is closed first). Returns
 * 0 or -1 (ENOMEM). */
static int resolver_lookup(resolver_t *r, const char *entry,
                           void (*done)(void *arg, const wsg_dns_answer_t *ans), void *arg) {
    uint16_t port;
    query_t *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return -1;
    if (wsg_config_split_hostport(entry, q->name, sizeof(q->name), &port) != 0) {
        free(q);
        return -1;
    }
    q->r = r;
    q->done = done;
    q->arg = arg;
    r->pending++;
    /* Sorted here (by address), not by c-ares's RFC 6724 sort, which
     * connects a socket per address. */
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT};
    ares_getaddrinfo(r->ch, q->name, NULL, &hints, on_addrinfo, q); /* may answer at once */
    rearm(r);
    return 0;
}

static void log_failure(const char *pool, const char *name, const wsg_dns_answer_t *a,
                        const char *keep) {
    WSG_LOG(WSG_LOG_WARN, "dns", "pool %s: lookup of %s failed (%s): %s", pool, name,
            wsg_dns_result_name(a->result), keep);
}

/* ---- once, to completion ------------------------------------------------ */

typedef struct sync_slot_s {
    wsg_dns_answer_t *out;
    uint64_t *counts;
} sync_slot_t;

static void sync_done(void *arg, const wsg_dns_answer_t *ans) {
    sync_slot_t *s = arg;
    *s->out = *ans;
    if (s->counts != NULL)
        s->counts[ans->result]++;
}

int wsg_dns_lookup_all(const wsg_config_t *cfg, wsg_dns_answer_t *out, uint64_t *counts) {
    size_t n = wsg_dns_nentries(cfg);
    for (size_t k = 0; k < n; k++)
        wsg_dns_answer_reset(&out[k], WSG_DNS_ERROR);
    if (n == 0)
        return 0;
    uv_loop_t loop;
    sync_slot_t *slots = calloc(n, sizeof(*slots));
    if (slots == NULL || uv_loop_init(&loop) != 0) {
        free(slots);
        return -1;
    }
    resolver_t *r = resolver_new(&loop, cfg);
    size_t k = 0;
    for (size_t p = 0; r != NULL && p < cfg->npools; p++) {
        for (size_t e = 0; e < cfg->pools[p].nresolves; e++, k++) {
            slots[k] = (sync_slot_t){.out = &out[k], .counts = counts};
            resolver_lookup(r, cfg->pools[p].resolves[e].address, sync_done, &slots[k]);
        }
    }
    /* Bounded: c-ares ends every lookup by its timeouts, which the timer
     * drives; a loop with nothing left to wait on ends it too. */
    while (r != NULL && r->pending > 0)
        if (uv_run(&loop, UV_RUN_ONCE) == 0 && r->pending > 0)
            break;
    resolver_close(r);
    uv_run(&loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
    uv_loop_close(&loop);
    k = 0;
    for (size_t p = 0; p < cfg->npools; p++) {
        for (size_t e = 0; e < cfg->pools[p].nresolves; e++, k++) {
            if (out[k].result != WSG_DNS_OK)
                log_failure(cfg->pools[p].name, cfg->pools[p].resolves[e].address, &out[k],
                            "none of its addresses is known");
        }
    }
    free(slots);
    return r != NULL ? 0 : -1;
}

/* ---- the running configuration's lookups --------------------------------- */

typedef struct entry_s {
    wsg_dns_t *d;
    size_t pool, entry; /* indices in the configuration */
    const wsg_backend_conf_t *conf;
    uv_timer_t timer;
    bool asking;
    uint64_t at_ms;
    wsg_dns_result_t result;
    wsg_dns_answer_t current; /* the last good answer */
} entry_t;

struct wsg_dns_s {
    uv_loop_t *loop;
    wsg_config_t *cfg;
    resolver_t *r;
    entry_t *entries;
    size_t n;
    unsigned handles;
    bool stopping;
    uint64_t *counts;
    wsg_dns_cb cb;
    void *arg;
};

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_entry_timer(uv_timer_t *t);

static void schedule(entry_t *e, const wsg_dns_answer_t *ans) {
    uint64_t every = e->d->cfg->pools[e->pool].resolve_ms;
    if (every == 0 || e->d->stopping)
        return;
    uv_timer_start(&e->timer, on_entry_timer, wsg_dns_next_ms(every, ans), 0);
}

static void entry_done(void *arg, const wsg_dns_answer_t *ans) {
    entry_t *e = arg;
    wsg_dns_t *d = e->d;
    e->asking = false;
    e->at_ms = wall_ms();
    e->result = ans->result;
    d->counts[ans->result]++;
    if (ans->result == WSG_DNS_OK) {
        e->current = *ans;
        if (!d->stopping)
            d->cb(d->arg, e->pool, e->entry, ans);
    } else {
        log_failure(d->cfg->pools[e->pool].name, e->conf->address, ans,
                    "its last known addresses stay");
    }
    schedule(e, ans);
}

static void on_entry_timer(uv_timer_t *t) {
    entry_t *e = t->data;
    if (e->d->stopping || e->asking)
        return;
    e->asking = true;
    if (resolver_lookup(e->d->r, e->conf->address, entry_done, e) != 0) {
        e->asking = false;
        wsg_dns_answer_t err = {.result = WSG_DNS_ERROR, .ttl_s = UINT32_MAX};
        schedule(e, &err);
    }
}

static void dns_maybe_free(wsg_dns_t *d) {
    if (!d->stopping || d->handles > 0)
        return;
    wsg_config_unref(d->cfg);
    free(d->entries);
    free(d);
}

static void on_entry_closed(uv_handle_t *h) {
    entry_t *e = h->data;
    wsg_dns_t *d = e->d;
    d->handles--;
    dns_maybe_free(d);
}

wsg_dns_t *wsg_dns_start(uv_loop_t *loop, wsg_config_t *cfg, const wsg_dns_answer_t *first,
                         uint64_t *counts, wsg_dns_cb cb, void *arg) {
    wsg_dns_t *d = calloc(1, sizeof(*d));
    size_t n = wsg_dns_nentries(cfg);
    if (d == NULL || (d->entries = calloc(n ? n : 1, sizeof(*d->entries))) == NULL) {
        free(d);
        return NULL;
    }
    if (n > 0 && (d->r = resolver_new(loop, cfg)) == NULL) {
        free(d->entries);
        free(d);
        return NULL;
    }
    d->loop = loop;
    d->cfg = wsg_config_ref(cfg);
    d->n = n;
    d->counts = counts;
    d->cb = cb;
    d->arg = arg;
    uint64_t now = wall_ms();
    size_t k = 0;
    for (size_t p = 0; p < cfg->npools; p++) {
        for (size_t i = 0; i < cfg->pools[p].nresolves; i++, k++) {
            entry_t *e = &d->entries[k];
            e->d = d;
            e->pool = p;
            e->entry = i;
            e->conf = &cfg->pools[p].resolves[i];
            e->at_ms = now;
            e->result = first[k].result;
            if (first[k].naddrs > 0)
                e->current = first[k];
            else
                wsg_dns_answer_reset(&e->current, first[k].result);
            uv_timer_init(loop, &e->timer);
            e->timer.data = e;
            d->handles++;
            schedule(e, &first[k]);
        }
        const wsg_pool_conf_t *pc = &cfg->pools[p];
        if (pc->nresolves > 0 && pc->resolve_ms > 0)
            WSG_LOG(WSG_LOG_INFO, "dns", "pool %s: %zu name%s looked up again every %llu ms",
                    pc->name, pc->nresolves, pc->nresolves == 1 ? "" : "s",
                    (unsigned long long)pc->resolve_ms);
        else if (pc->nresolves > 0)
            WSG_LOG(WSG_LOG_INFO, "dns", "pool %s: %zu name%s looked up only at start and reload",
                    pc->name, pc->nresolves, pc->nresolves == 1 ? "" : "s");
    }
    return d;
}

void wsg_dns_stop(wsg_dns_t *d) {
    if (d == NULL || d->stopping)
        return;
    d->stopping = true;
    resolver_close(d->r); /* callbacks of lookups in flight run now, as cancelled */
    for (size_t k = 0; k < d->n; k++)
        uv_close((uv_handle_t *)&d->entries[k].timer, on_entry_closed);
    dns_maybe_free(d);
}

size_t wsg_dns_count(const wsg_dns_t *d) { return d != NULL ? d->n : 0; }

void wsg_dns_status(const wsg_dns_t *d, size_t k, wsg_dns_status_t *out) {
    const entry_t *e = &d->entries[k];
    out->pool = d->cfg->pools[e->pool].name;
    out->name = e->conf->address;
    out->weight = e->conf->weight;
    out->at_ms = e->at_ms;
    out->result = e->result;
    out->current = &e->current;
}

const wsg_dns_answer_t *wsg_dns_current(const wsg_dns_t *d, const char *pool, const char *name) {
    for (size_t k = 0; d != NULL && k < d->n; k++) {
        const entry_t *e = &d->entries[k];
        if (strcmp(d->cfg->pools[e->pool].name, pool) == 0 && strcmp(e->conf->address, name) == 0 &&
            e->current.naddrs > 0)
            return &e->current;
    }
    return NULL;
}
