/*
 * The process: start-up order, workers, signals and shutdown.
 *
 * The server thread binds every listening socket once per worker before
 * any worker runs, so a bind failure is reported before anything is
 * served. It then only waits on its own small loop for signals and for
 * workers to finish. Shutdown is one message to every worker; each worker
 * ends its own connections and its loop, then tells the server.
 */
#include <wsgate/server.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wsgate/admin.h>
#include <wsgate/balancer.h>
#include <wsgate/dns.h>
#include <wsgate/health.h>
#include <wsgate/ip_limit.h>
#include <wsgate/rate_limit.h>
#include <wsgate/listener.h>
#include <wsgate/log.h>
#include <wsgate/tls.h>
#include <wsgate/uring.h>
#include <wsgate/worker.h>

struct wsg_server_s {
    uv_loop_t loop;
    uint64_t started_ms;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_async_t done;           /* a worker finished */
    uv_timer_t deadline;       /* shutdown safety net */
    wsg_runtime_t *rt;
    wsg_worker_t *workers;
    unsigned nworkers;
    _Atomic unsigned finished;
    _Atomic uint64_t active;   /* client connections, all workers */
    unsigned signals;
    const char *io; /* "epoll", "uring" or "mixed": what plain sides use (config "io") */
    wsg_io_mode_t io_conf; /* config "io" at start: a reload cannot change it */
    bool stopping;
    wsg_admin_t *admin;        /* NULL when disabled */
    wsg_admin_conf_t admin_conf; /* what <admin> was started with (borrowed strings) */
    wsg_health_t *health;      /* active checks of the current runtime */
    wsg_ip_limit_t *ip_limit;  /* connections per client address */
    wsg_rate_table_t *rate_table; /* handshakes_per_ip_per_s buckets, kept across reloads */
    wsg_dns_t *dns;            /* lookups of the file's resolve entries; NULL: none */
    uint64_t dns_lookups[WSG_DNS_NRESULTS]; /* by result, since start (server thread) */
};

wsg_dns_t *wsg_server_dns(wsg_server_t *srv) { return srv->dns; }
const uint64_t *wsg_server_dns_lookups(const wsg_server_t *srv) { return srv->dns_lookups; }

wsg_ip_limit_t *wsg_server_ip_limit(wsg_server_t *srv) { return srv->ip_limit; }
wsg_rate_table_t *wsg_server_rate_table(wsg_server_t *srv) { return srv->rate_table; }

static bool str_eq(const char *a, const char *b) {
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* The admin endpoint follows the configuration: restarted only when its
 * address or token changed, so a reload through POST /reload does not drop
 * the connection that asked for it unless it must. */
static int admin_apply(wsg_server_t *srv, const wsg_admin_conf_t *conf, char *err, size_t cap) {
    if (srv->admin != NULL && conf->enabled && str_eq(srv->admin_conf.bind, conf->bind) &&
        str_eq(srv->admin_conf.token, conf->token)) {
        srv->admin_conf = *conf;
        return 0;
    }
    wsg_admin_stop(srv->admin);
    srv->admin = NULL;
    srv->admin_conf = *conf;
    if (!conf->enabled)
        return 0;
    srv->admin = wsg_admin_start(srv, conf, err, cap);
    if (srv->admin == NULL)
        return -1;
    WSG_LOG(WSG_LOG_INFO, "admin", "admin endpoint on %s%s", conf->bind,
            conf->token ? " (bearer token required)" : "");
    return 0;
}

static void server_reconfigured(wsg_server_t *srv) {
    char err[512];
    wsg_health_stop(srv->health);
    srv->health = wsg_health_start(srv, srv->rt);
    if (admin_apply(srv, &srv->rt->cfg->admin, err, sizeof(err)) != 0)
        WSG_LOG(WSG_LOG_ERROR, "admin", "%s: the admin endpoint is off until the next reload",
                err);
}

/* Health checks stop with the traffic; the admin endpoint stays up until
 * the workers are done so /healthz can answer 503 "draining". */
static void server_stopping(wsg_server_t *srv) {
    wsg_health_stop(srv->health);
    srv->health = NULL;
    wsg_dns_stop(srv->dns);
    srv->dns = NULL;
}

uv_loop_t *wsg_server_loop(wsg_server_t *srv) { return &srv->loop; }
wsg_runtime_t *wsg_server_runtime(wsg_server_t *srv) { return srv->rt; }
const char *wsg_server_io(const wsg_server_t *srv) { return srv->io ? srv->io : "epoll"; }

/* Config "io" to what the workers use, with one log line saying which and,
 * when io_uring was wanted but the kernel refuses it, why not. */
static bool choose_io(const wsg_config_t *cfg) {
    char why[160] = "";
    if (cfg->io == WSG_IO_EPOLL) {
        WSG_LOG(WSG_LOG_INFO, "server", "io: epoll (configured)");
        return false;
    }
    /* "auto" is epoll: measured, io_uring does not win here (docs/io.md). */
    if (cfg->io == WSG_IO_AUTO) {
        WSG_LOG(WSG_LOG_INFO, "server", "io: epoll (auto)");
        return false;
    }
    if (wsg_uring_probe(why, sizeof(why)) == 0) {
        WSG_LOG(WSG_LOG_INFO, "server", "io: uring (configured; TLS sides stay on epoll)");
        return true;
    }
    WSG_LOG(WSG_LOG_WARN, "server", "io: epoll: \"io\": \"uring\" is unavailable: %s", why);
    return false;
}

/* What the started workers run on: a worker whose own ring failed to come
 * up logged why and runs on epoll. */
static const char *io_in_use(const wsg_server_t *srv) {
    unsigned n = 0;
    for (unsigned i = 0; i < srv->nworkers; i++)
        n += srv->workers[i].on_uring;
    if (n == srv->nworkers)
        return "uring";
    if (n == 0)
        return "epoll";
    WSG_LOG(WSG_LOG_WARN, "server", "io: %u of %u workers on io_uring, the others on epoll", n,
            srv->nworkers);
    return "mixed";
}

uint64_t wsg_server_uptime_ms(const wsg_server_t *srv) { return uv_now((uv_loop_t *)&srv->loop) - srv->started_ms; }
bool wsg_server_stopping(const wsg_server_t *srv) { return srv->stopping; }
unsigned wsg_server_nworkers(const wsg_server_t *srv) { return srv->nworkers; }

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void wsg_server_stats(const wsg_server_t *srv, wsg_stats_t *out) {
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < srv->nworkers; i++) {
        const wsg_worker_stats_t *st = &srv->workers[i].stats;
        out->conns_active += LOAD(st->conns_active);
        out->conns_total += LOAD(st->conns_total);
        out->conns_rejected += LOAD(st->conns_rejected);
        for (int k = 0; k < 600; k++)
            out->handshake_status[k] += LOAD(st->handshake_status[k]);
        for (int k = 0; k < 2; k++) {
            out->frames[k] += LOAD(st->frames[k]);
            out->bytes[k] += LOAD(st->bytes[k]);
        }
        for (int k = 0; k < 16; k++)
            out->closes[k] += LOAD(st->closes[k]);
        out->heartbeat_timeouts += LOAD(st->heartbeat_timeouts);
        out->idle_timeouts += LOAD(st->idle_timeouts);
        out->protocol_errors += LOAD(st->protocol_errors);
        for (int k = 0; k < WSG_HS_BUCKETS; k++) {
            uint64_t n = LOAD(st->hs_latency[k]);
            out->hs_latency_buckets[k] += n;
            out->hs_latency_count += n;
        }
        out->hs_latency_sum_us += LOAD(st->hs_latency_sum_us);
        for (int k = 0; k < 6; k++)
            out->http_requests[k] += LOAD(st->http_requests[k]);
        for (int k = 0; k < WSG_HS_BUCKETS; k++)
            out->http_latency_buckets[k] += LOAD(st->http_latency[k]);
        out->http_latency_sum_us += LOAD(st->http_latency_sum_us);
        out->upstream_opened += LOAD(st->upstream_opened);
        out->upstream_reused += LOAD(st->upstream_reused);
        out->upstream_retried += LOAD(st->upstream_retried);
        out->upstream_idle += LOAD(st->upstream_idle);
        out->http_streaming += LOAD(st->http_streaming);
        out->sse_heartbeats += LOAD(st->sse_heartbeats);
        for (int k = 0; k < WSG_REFUSED_N; k++)
            out->refused[k] += LOAD(st->refused[k]);
        out->buffers_in_use += LOAD(st->buffers_in_use);
        out->buffers_cached += LOAD(st->buffers_cached);
        out->bulk_in_use += LOAD(st->bulk_in_use);
        out->bulk_cached += LOAD(st->bulk_cached);
        wsg_uring_stats_t u;
        if (wsg_worker_uring_stats(&srv->workers[i], &u)) {
            out->uring_workers++;
            out->uring_submits += u.submits;
            out->uring_cqes += u.cqes;
            out->uring_enobufs += u.enobufs;
            out->uring_sides += u.sides;
            out->uring_buffers += u.buffers;
            out->uring_stashed += u.stashed;
        }
    }
}

static void add_error(wsg_config_errors_t *errs, const char *msg) {
    char **m = realloc(errs->msgs, (errs->count + 1) * sizeof(*m));
    if (m == NULL)
        return;
    errs->msgs = m;
    if ((m[errs->count] = strdup(msg)) != NULL)
        errs->count++;
}

static bool same_addr(const wsg_sockaddr_t *a, const wsg_sockaddr_t *b) {
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Binds, for every worker, the listeners of <cfg> whose address <old> does
 * not already serve. fds[w * n + i] is the fd or -1 ("keep"). */
static int bind_new(wsg_server_t *srv, const wsg_config_t *cfg, const wsg_config_t *old,
                    int **fds_out, char *err, size_t errcap) {
    size_t n = cfg->nlisteners, total = (size_t)srv->nworkers * n;
    int *fds = malloc((total ? total : 1) * sizeof(*fds));
    if (fds == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < total; i++)
        fds[i] = -1;
    for (size_t l = 0; l < n; l++) {
        const wsg_listener_conf_t *lc = &cfg->listeners[l];
        bool keep = false;
        for (size_t j = 0; old != NULL && j < old->nlisteners && !keep; j++)
            keep = same_addr(&old->listeners[j].addr, &lc->addr);
        if (keep)
            continue;
        char what[256];
        snprintf(what, sizeof(what), "listener %s", lc->name);
        for (unsigned w = 0; w < srv->nworkers; w++) {
            int fd = wsg_listener_bind(what, lc->bind, &lc->addr, err, errcap);
            if (fd < 0) {
                for (size_t i = 0; i < total; i++)
                    if (fds[i] >= 0)
                        close(fds[i]);
                free(fds);
                return -1;
            }
            fds[w * n + l] = fd;
        }
    }
    *fds_out = fds;
    return 0;
}

/* A backend that leaves with a runtime change: its live connections are
 * drained with 1012 (spread over <spread_ms>). */
typedef struct removal_s {
    size_t pool;       /* index into the new runtime's pools */
    wsg_backend_t *be; /* borrowed */
    unsigned weight;
    uint64_t spread_ms;
} removal_t;

static void post_all(wsg_server_t *srv, wsg_worker_msg_t *proto) {
    for (unsigned w = 0; w < srv->nworkers; w++) {
        wsg_worker_msg_t *m = calloc(1, sizeof(*m));
        if (m == NULL)
            abort(); /* a half-applied change is worse than a crash the supervisor restarts */
        *m = *proto;
        if (m->rt)
            wsg_runtime_ref(m->rt);
        if (m->backend)
            wsg_backend_ref(m->backend);
        wsg_worker_post(&srv->workers[w], m);
    }
}

/* After the new runtime: the live connections whose key moved to a
 * backend added to a pool with rebalance set get 1012, at most max_per_s
 * a second over all workers (each worker takes its share). */
static void post_rebalances(wsg_server_t *srv, wsg_runtime_t *rt) {
    for (size_t p = 0; p < rt->cfg->npools; p++) {
        const wsg_pool_conf_t *pc = &rt->cfg->pools[p];
        const wsg_balancer_t *b = rt->pools[p];
        bool any = false;
        for (size_t i = 0; i < b->nbackends && !any; i++)
            any = b->added[i];
        if (!any || pc->rebalance.max_per_s == 0 || srv->stopping)
            continue;
        wsg_worker_msg_t proto = {
            .kind = WSG_MSG_REBALANCE,
            .rt = rt,
            .pool = p,
            .interval_us = (uint64_t)srv->nworkers * 1000000u / pc->rebalance.max_per_s,
        };
        post_all(srv, &proto);
    }
}

/* Makes <rt> (taken) the runtime of new connections on every worker: with
 * the listeners in <fds> (nworkers x listeners, -1 = keep; NULL: all
 * kept), after draining the <nrm> backends of <rm>, then rebalancing. Workers
 * take their messages in order, so a drained backend is still alive in
 * the runtime they hold when they drain it. */
static void install(wsg_server_t *srv, wsg_runtime_t *rt, const int *fds, const removal_t *rm,
                    size_t nrm) {
    size_t n = rt->cfg->nlisteners;
    for (size_t i = 0; i < nrm; i++) {
        wsg_balancer_add_leaving(rt->pools[rm[i].pool], rm[i].be, rm[i].weight);
        wsg_worker_msg_t proto = {.kind = WSG_MSG_DRAIN, .backend = rm[i].be,
                                  .spread_ms = rm[i].spread_ms};
        if (!srv->stopping)
            post_all(srv, &proto);
    }
    for (unsigned w = 0; w < srv->nworkers; w++) {
        wsg_worker_msg_t *m = calloc(1, sizeof(*m));
        int *mine = malloc((n ? n : 1) * sizeof(*mine));
        if (m == NULL || mine == NULL)
            abort(); /* half-applied reload is worse than a crash the supervisor restarts */
        for (size_t i = 0; i < n; i++)
            mine[i] = fds ? fds[w * n + i] : -1;
        m->kind = WSG_MSG_RUNTIME;
        m->rt = wsg_runtime_ref(rt);
        m->fds = mine;
        wsg_worker_post(&srv->workers[w], m);
    }
    post_rebalances(srv, rt);
    wsg_runtime_t *old = srv->rt;
    srv->rt = rt;
    wsg_log_configure(rt->cfg->log.level, rt->cfg->log.format);
    server_reconfigured(srv); /* compares with the old admin settings: old still alive */
    wsg_runtime_unref(old);
}

static void on_resolved(void *arg, size_t p, size_t e, const wsg_dns_answer_t *ans);

/* The configuration to run for the file's <file>: its resolve entries
 * looked up now (blocking this thread, bounded by the lookups' timeouts),
 * a failed one keeping the addresses the running lookups last found
 * (none at start). *answers (new, wsg_dns_nentries() long) gets what was
 * used, for the lookups that follow. NULL on ENOMEM. */
static wsg_config_t *resolve_file(wsg_server_t *srv, wsg_config_t *file,
                                  wsg_dns_answer_t **answers) {
    size_t n = wsg_dns_nentries(file);
    *answers = calloc(n ? n : 1, sizeof(**answers));
    if (*answers == NULL)
        return NULL;
    if (n == 0)
        return wsg_config_ref(file);
    wsg_dns_lookup_all(file, *answers, srv->dns_lookups);
    size_t k = 0;
    for (size_t p = 0; p < file->npools; p++) {
        for (size_t e = 0; e < file->pools[p].nresolves; e++, k++) {
            const wsg_dns_answer_t *last =
                wsg_dns_current(srv->dns, file->pools[p].name, file->pools[p].resolves[e].address);
            if ((*answers)[k].result != WSG_DNS_OK && last != NULL) {
                wsg_dns_result_t r = (*answers)[k].result;
                (*answers)[k] = *last;
                (*answers)[k].result = r; /* the lookup failed; its last addresses stay */
            }
        }
    }
    return wsg_dns_expand(file, *answers);
}

/* The lookups follow the file's configuration <file>, started from the
 * <answers> it was installed with. */
static void restart_dns(wsg_server_t *srv, wsg_config_t *file, const wsg_dns_answer_t *answers) {
    wsg_dns_stop(srv->dns);
    srv->dns = NULL;
    if (srv->stopping || wsg_dns_nentries(file) == 0)
        return;
    srv->dns = wsg_dns_start(&srv->loop, file, answers, srv->dns_lookups, on_resolved, srv);
    if (srv->dns == NULL)
        WSG_LOG(WSG_LOG_ERROR, "dns", "cannot start the lookups: names are resolved again only "
                "at the next reload");
}

int wsg_server_reload(wsg_server_t *srv, wsg_config_errors_t *errs) {
    const char *path = srv->rt->cfg->path;
    char err[512];
    int *fds = NULL;

    if (srv->stopping) {
        add_error(errs, "wsgate is shutting down: reload refused");
        return -1;
    }
    WSG_LOG(WSG_LOG_INFO, "server", "reloading %s", path);
    wsg_config_t *file = wsg_config_load(path, NULL, errs);
    if (file == NULL) {
        for (size_t i = 0; i < errs->count; i++)
            WSG_LOG(WSG_LOG_ERROR, "config", "%s", errs->msgs[i]);
        WSG_LOG(WSG_LOG_ERROR, "server", "reload of %s failed: the running configuration stays",
                path);
        return -1;
    }
    if (file->workers != srv->nworkers)
        WSG_LOG(WSG_LOG_WARN, "server", "workers: %u -> %u takes effect only after a restart",
                srv->nworkers, file->workers);
    if (file->io != srv->io_conf) {
        static const char *const names[] = {"auto", "epoll", "uring"};
        WSG_LOG(WSG_LOG_WARN, "server",
                "io: \"%s\" takes effect only after a restart: wsgate started with \"%s\" and "
                "runs on %s",
                names[file->io], names[srv->io_conf], wsg_server_io(srv));
    }
    wsg_dns_answer_t *answers = NULL;
    wsg_config_t *cfg = resolve_file(srv, file, &answers);
    wsg_runtime_t *rt = cfg ? wsg_runtime_new(cfg, srv->rt) : NULL;
    wsg_config_unref(cfg); /* the runtime holds its own reference */
    /* Certificates are re-read on every reload, so renewed ones are picked
     * up; a bad one fails the reload and changes nothing. */
    if (rt == NULL || wsg_runtime_load_tls(rt, err, sizeof(err)) != 0 ||
        wsg_runtime_load_auth(rt, err, sizeof(err)) != 0 ||
        bind_new(srv, rt->cfg, srv->rt->cfg, &fds, err, sizeof(err)) != 0) {
        if (rt == NULL)
            snprintf(err, sizeof(err), "out of memory");
        add_error(errs, err);
        WSG_LOG(WSG_LOG_ERROR, "server", "reload of %s failed: %s; the running configuration stays",
                path, err);
        wsg_runtime_unref(rt);
        wsg_config_unref(file);
        free(answers);
        return -1;
    }
    size_t n = rt->cfg->nlisteners;
    /* <path> is the old configuration's: once the workers have taken the
     * new runtime, this may be the old one's last reference. */
    path = rt->cfg->path;
    install(srv, rt, fds, NULL, 0);
    restart_dns(srv, file, answers);
    wsg_config_unref(file);
    free(answers);
    free(fds);
    WSG_LOG(WSG_LOG_INFO, "server", "reloaded %s: %zu listener%s, %zu route%s, %zu pool%s", path,
            n, n == 1 ? "" : "s", srv->rt->cfg->nroutes, srv->rt->cfg->nroutes == 1 ? "" : "s",
            srv->rt->cfg->npools, srv->rt->cfg->npools == 1 ? "" : "s");
    return 0;
}

static size_t pool_index(const wsg_runtime_t *rt, const char *name) {
    for (size_t i = 0; i < rt->cfg->npools; i++)
        if (strcmp(rt->cfg->pools[i].name, name) == 0)
            return i;
    return SIZE_MAX;
}

/* The common start of a runtime change of pool <pool>'s backends: none
 * once shutdown has begun (WSG_CHANGE_STOPPING), none to a pool the
 * running configuration does not have (WSG_CHANGE_NO_POOL); otherwise
 * WSG_CHANGE_OK and the pool's index in <*p>. */
static wsg_change_t change_pool(const wsg_server_t *srv, const char *pool, size_t *p) {
    if (srv->stopping)
        return WSG_CHANGE_STOPPING;
    *p = pool_index(srv->rt, pool);
    if (*p == SIZE_MAX)
        return WSG_CHANGE_NO_POOL;
    return WSG_CHANGE_OK;
}

/* The running runtime with pool <p>'s backends replaced by <bs>: the
 * config is derived, not re-read (the file may have changed since), and
 * listeners and certificates are those already loaded. */
static wsg_runtime_t *derive(wsg_server_t *srv, size_t p, const wsg_backend_conf_t *bs, size_t n) {
    const wsg_runtime_t *cur = srv->rt;
    wsg_config_t *cfg = wsg_config_with_backends(cur->cfg, p, bs, n);
    wsg_runtime_t *rt = cfg ? wsg_runtime_new(cfg, cur) : NULL;
    wsg_config_unref(cfg);
    if (rt == NULL)
        return NULL;
    for (size_t i = 0; i < cur->cfg->nlisteners; i++)
        if (cur->listener_tls[i] != NULL)
            rt->listener_tls[i] = wsg_tls_ctx_ref(cur->listener_tls[i]);
    for (size_t i = 0; i < cur->cfg->npools; i++)
        if (cur->pool_tls[i] != NULL)
            rt->pool_tls[i] = wsg_tls_ctx_ref(cur->pool_tls[i]);
    return rt;
}

wsg_change_t wsg_server_add_backend(wsg_server_t *srv, const char *pool,
                                    const wsg_backend_conf_t *bc) {
    size_t p;
    wsg_change_t r = change_pool(srv, pool, &p);
    if (r != WSG_CHANGE_OK)
        return r;
    const wsg_pool_conf_t *pc = &srv->rt->cfg->pools[p];
    if (wsg_config_find_backend(pc, bc->address) >= 0)
        return WSG_CHANGE_EXISTS;
    wsg_backend_conf_t *bs = malloc((pc->nbackends + 1) * sizeof(*bs));
    if (bs == NULL)
        return WSG_CHANGE_NOMEM;
    memcpy(bs, pc->backends, pc->nbackends * sizeof(*bs));
    bs[pc->nbackends] = *bc;
    wsg_runtime_t *rt = derive(srv, p, bs, pc->nbackends + 1);
    free(bs); /* shallow: derive() copied the entries */
    if (rt == NULL)
        return WSG_CHANGE_NOMEM;
    install(srv, rt, NULL, NULL, 0);
    WSG_LOG(WSG_LOG_INFO, "server", "pool %s: backend %s added (weight %u), %zu backends", pool,
            bc->address, bc->weight, srv->rt->pools[p]->nbackends);
    return WSG_CHANGE_OK;
}

wsg_change_t wsg_server_remove_backend(wsg_server_t *srv, const char *pool, const char *address,
                                       uint64_t spread_ms) {
    size_t p;
    wsg_change_t r = change_pool(srv, pool, &p);
    if (r != WSG_CHANGE_OK)
        return r;
    const wsg_pool_conf_t *pc = &srv->rt->cfg->pools[p];
    int idx = wsg_balancer_find(srv->rt->pools[p], address);
    if (idx < 0)
        return WSG_CHANGE_NO_BACKEND;
    if (pc->nbackends == 1)
        return WSG_CHANGE_LAST;
    wsg_backend_conf_t *bs = malloc(pc->nbackends * sizeof(*bs));
    if (bs == NULL)
        return WSG_CHANGE_NOMEM;
    size_t n = 0;
    for (size_t i = 0; i < pc->nbackends; i++)
        if (i != (size_t)idx)
            bs[n++] = pc->backends[i];
    removal_t rm = {.pool = p, .weight = pc->backends[idx].weight, .spread_ms = spread_ms};
    rm.be = wsg_backend_ref(srv->rt->pools[p]->backends[idx]); /* the old runtime goes */
    wsg_runtime_t *rt = derive(srv, p, bs, n);
    free(bs);
    if (rt == NULL) {
        wsg_backend_unref(rm.be);
        return WSG_CHANGE_NOMEM;
    }
    install(srv, rt, NULL, &rm, 1);
    WSG_LOG(WSG_LOG_INFO, "server",
            "pool %s: backend %s removed, its connections drained over %llu ms, %zu backends "
            "left", pool, address, (unsigned long long)spread_ms, n);
    wsg_backend_unref(rm.be);
    return WSG_CHANGE_OK;
}

/* A periodic lookup of entry <e> of pool <p> answered <ans> (OK): applied
 * like a runtime change when the set changed. The removed addresses'
 * connections get 1012 spread over drain_ms, as a drain spreads them:
 * the servers behind them are leaving. */
static void on_resolved(void *arg, size_t p, size_t e, const wsg_dns_answer_t *ans) {
    wsg_server_t *srv = arg;
    if (srv->stopping || p >= srv->rt->cfg->npools || e >= srv->rt->cfg->pools[p].nresolves)
        return;
    const wsg_pool_conf_t *pc = &srv->rt->cfg->pools[p];
    /* Strings of the file's configuration, which the lookups hold. */
    const char *pool = pc->name, *name = pc->resolves[e].address;
    uint64_t spread = srv->rt->cfg->timeouts.drain_ms;
    wsg_dns_merge_t m;
    if (wsg_dns_merge(pc->backends, pc->nbackends, e, &pc->resolves[e], ans, &m) != 0) {
        WSG_LOG(WSG_LOG_ERROR, "dns", "pool %s: %s: out of memory: its backends stay", pool, name);
        return;
    }
    if (m.nadded == 0 && m.nremoved == 0) {
        wsg_dns_merge_free(&m);
        return;
    }
    removal_t *rm = calloc(m.nremoved + 1, sizeof(*rm));
    wsg_runtime_t *rt = rm ? derive(srv, p, m.backends, m.n) : NULL;
    if (rt == NULL) {
        WSG_LOG(WSG_LOG_ERROR, "dns", "pool %s: %s: out of memory: its backends stay", pool, name);
        free(rm);
        wsg_dns_merge_free(&m);
        return;
    }
    for (size_t i = 0; i < m.nremoved; i++) {
        size_t idx = m.removed[i];
        rm[i] = (removal_t){.pool = p, .be = wsg_backend_ref(srv->rt->pools[p]->backends[idx]),
                            .weight = pc->backends[idx].weight, .spread_ms = spread};
    }
    size_t nrm = m.nremoved, nadd = m.nadded;
    install(srv, rt, NULL, rm, nrm);
    WSG_LOG(WSG_LOG_INFO, "dns",
            "pool %s: %s resolves to %zu address%s: %zu backend%s added, %zu removed (drained "
            "over %llu ms), %zu backends",
            pool, name, ans->naddrs, ans->naddrs == 1 ? "" : "es", nadd, nadd == 1 ? "" : "s", nrm,
            (unsigned long long)spread, srv->rt->pools[p]->nbackends);
    for (size_t i = 0; i < nrm; i++)
        wsg_backend_unref(rm[i].be);
    free(rm);
    wsg_dns_merge_free(&m);
}

static int find_backend(wsg_server_t *srv, const char *pool, const char *address,
                        wsg_balancer_t **b) {
    *b = wsg_runtime_pool(srv->rt, pool);
    return *b ? wsg_balancer_find(*b, address) : -1;
}

int wsg_server_drain(wsg_server_t *srv, const char *pool, const char *address,
                     uint64_t spread_ms) {
    wsg_balancer_t *b;
    int idx = find_backend(srv, pool, address, &b);
    if (idx < 0)
        return -1;
    wsg_balancer_set_draining(b, (unsigned)idx);
    if (srv->stopping)
        return 0;
    wsg_worker_msg_t proto = {.kind = WSG_MSG_DRAIN, .backend = b->backends[idx],
                              .spread_ms = spread_ms};
    post_all(srv, &proto);
    return 0;
}

int wsg_server_enable(wsg_server_t *srv, const char *pool, const char *address) {
    wsg_balancer_t *b;
    int idx = find_backend(srv, pool, address, &b);
    if (idx < 0)
        return -1;
    wsg_balancer_enable(b, (unsigned)idx);
    return 0;
}

bool wsg_server_conn_admit(wsg_server_t *srv, uint64_t max) {
    uint64_t n = atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
    if (n < max)
        return true;
    atomic_fetch_sub_explicit(&srv->active, 1, memory_order_relaxed);
    return false;
}

void wsg_server_conn_release(wsg_server_t *srv) {
    atomic_fetch_sub_explicit(&srv->active, 1, memory_order_relaxed);
}

static void on_done(uv_async_t *a) {
    wsg_server_t *srv = a->data;
    if (atomic_load(&srv->finished) < srv->nworkers)
        return;
    wsg_admin_stop(srv->admin);
    srv->admin = NULL;
    wsg_health_stop(srv->health);
    srv->health = NULL;
    wsg_dns_stop(srv->dns);
    srv->dns = NULL;
    uv_close((uv_handle_t *)&srv->sig_term, NULL);
    uv_close((uv_handle_t *)&srv->sig_int, NULL);
    uv_close((uv_handle_t *)&srv->sig_hup, NULL);
    uv_close((uv_handle_t *)&srv->done, NULL);
    uv_close((uv_handle_t *)&srv->deadline, NULL);
}

static void on_deadline(uv_timer_t *t) {
    (void)t;
    WSG_LOG(WSG_LOG_ERROR, "server", "workers did not finish within drain_ms: exiting");
    _exit(WSG_EXIT_OK);
}

static void on_signal(uv_signal_t *s, int signum) {
    wsg_server_t *srv = s->data;

    if (signum == SIGHUP) {
        wsg_config_errors_t errs = {0};
        wsg_server_reload(srv, &errs); /* logs its own outcome */
        wsg_config_errors_free(&errs);
        return;
    }
    if (++srv->signals > 1) {
        /* A second SIGTERM/SIGINT: the operator wants out now. */
        WSG_LOG(WSG_LOG_WARN, "server", "second %s: exiting at once",
                signum == SIGINT ? "SIGINT" : "SIGTERM");
        _exit(WSG_EXIT_OK);
    }
    uint64_t drain = srv->rt->cfg->timeouts.drain_ms;
    WSG_LOG(WSG_LOG_INFO, "server",
            "%s: shutting down: closing listeners, sending 1001 to clients, waiting up to %llu ms",
            signum == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)drain);
    srv->stopping = true;
    server_stopping(srv);
    for (unsigned i = 0; i < srv->nworkers; i++)
        wsg_worker_request_stop(&srv->workers[i]);
    uv_timer_start(&srv->deadline, on_deadline, drain + 1000, 0);
}

/* Called on a worker thread when its loop has ended. */
static void worker_finished(wsg_server_t *srv) {
    atomic_fetch_add(&srv->finished, 1);
    uv_async_send(&srv->done);
}

struct worker_arg {
    wsg_server_t *srv;
    wsg_worker_t *w;
};

int wsg_server_run(wsg_config_t *cfg) {
    wsg_server_t srv;
    int *fds = NULL;

    memset(&srv, 0, sizeof(srv));
    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error code, not a death */
    wsg_log_configure(cfg->log.level, cfg->log.format);
    wsg_dns_answer_t *answers = NULL;
    wsg_config_t *run = resolve_file(&srv, cfg, &answers);
    srv.rt = run ? wsg_runtime_new(run, NULL) : NULL;
    wsg_config_unref(run);
    srv.ip_limit = wsg_ip_limit_new();
    /* 64 Ki slots, 512 KiB, fixed: zero pages until addresses are limited,
     * and the same table whatever a reload turns on. */
    srv.rate_table = wsg_rate_table_new(65536);
    char err[512];
    if (srv.rt == NULL || srv.ip_limit == NULL || srv.rate_table == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    if (wsg_runtime_load_tls(srv.rt, err, sizeof(err)) != 0 ||
        wsg_runtime_load_auth(srv.rt, err, sizeof(err)) != 0)
        goto fail;
    srv.nworkers = cfg->workers ? cfg->workers : 1;
    /* Before the listeners exist: once a client can connect, the log says
     * which I/O it gets. */
    bool uring = choose_io(cfg);
    srv.io = uring ? "uring" : "epoll";
    srv.io_conf = cfg->io;
    if (bind_new(&srv, cfg, NULL, &fds, err, sizeof(err)) != 0)
        goto fail;
    srv.workers = calloc(srv.nworkers, sizeof(*srv.workers));
    uv_loop_init(&srv.loop);
    srv.started_ms = uv_now(&srv.loop);
    uv_async_init(&srv.loop, &srv.done, on_done);
    srv.done.data = &srv;
    uv_timer_init(&srv.loop, &srv.deadline);
    uv_unref((uv_handle_t *)&srv.deadline);
    uv_signal_init(&srv.loop, &srv.sig_term);
    uv_signal_init(&srv.loop, &srv.sig_int);
    uv_signal_init(&srv.loop, &srv.sig_hup);
    srv.sig_term.data = srv.sig_int.data = srv.sig_hup.data = &srv;
    uv_signal_start(&srv.sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv.sig_int, on_signal, SIGINT);
    uv_signal_start(&srv.sig_hup, on_signal, SIGHUP);

    if (admin_apply(&srv, &cfg->admin, err, sizeof(err)) != 0) {
        fprintf(stderr, "wsgate: %s\n", err);
        _exit(WSG_EXIT_STARTUP);
    }
    srv.health = wsg_health_start(&srv, srv.rt);
    restart_dns(&srv, cfg, answers);
    free(answers);
    answers = NULL;
    for (unsigned i = 0; i < srv.nworkers; i++) {
        int r = wsg_worker_init(&srv.workers[i], &srv, i, srv.rt, fds + i * cfg->nlisteners);
        if (r != 0) {
            fprintf(stderr, "wsgate: worker %u: %s\n", i, uv_strerror(r));
            _exit(WSG_EXIT_STARTUP);
        }
        srv.workers[i].on_exit = worker_finished;
        srv.workers[i].want_uring = uring;
    }
    free(fds);
    for (size_t l = 0; l < cfg->nlisteners; l++)
        WSG_LOG(WSG_LOG_INFO, "listener", "listener %s bound %s%s", cfg->listeners[l].name,
                cfg->listeners[l].bind, cfg->listeners[l].tls ? " (tls)" : "");
    WSG_LOG(WSG_LOG_INFO, "server", "wsgate %s started: %u worker%s, %zu pool%s", WSG_VERSION,
            srv.nworkers, srv.nworkers == 1 ? "" : "s", cfg->npools, cfg->npools == 1 ? "" : "s");
    for (unsigned i = 0; i < srv.nworkers; i++) {
        if (wsg_worker_start(&srv.workers[i]) != 0) {
            fprintf(stderr, "wsgate: cannot start worker thread %u\n", i);
            _exit(WSG_EXIT_STARTUP);
        }
    }
    if (uring)
        srv.io = io_in_use(&srv);

    uv_run(&srv.loop, UV_RUN_DEFAULT);

    for (unsigned i = 0; i < srv.nworkers; i++)
        wsg_worker_join(&srv.workers[i]);
    uv_run(&srv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv.loop);
    free(srv.workers);
    wsg_ip_limit_free(srv.ip_limit);
    wsg_rate_table_free(srv.rate_table);
    wsg_runtime_unref(srv.rt);
    WSG_LOG(WSG_LOG_INFO, "server", "stopped");
    return WSG_EXIT_OK;

fail:
    fprintf(stderr, "wsgate: %s\n", err);
    free(answers);
    wsg_ip_limit_free(srv.ip_limit);
    wsg_rate_table_free(srv.rate_table);
    if (srv.rt != NULL)
        wsg_runtime_unref(srv.rt);
    return WSG_EXIT_STARTUP;
}
