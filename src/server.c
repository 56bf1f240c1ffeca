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

#include <wsgate/balancer.h>
#include <wsgate/listener.h>
#include <wsgate/log.h>
#include <wsgate/worker.h>

struct wsg_server_s {
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_async_t done;           /* a worker finished */
    uv_timer_t deadline;       /* shutdown safety net */
    wsg_runtime_t *rt;
    wsg_worker_t *workers;
    unsigned nworkers;
    _Atomic unsigned finished;
    _Atomic uint64_t active;   /* client connections, all workers */
    unsigned signals;
};

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
        WSG_LOG(WSG_LOG_WARN, "server", "SIGHUP: reload is not available in this version");
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

static int bind_all(wsg_server_t *srv, int **fds_out) {
    const wsg_config_t *cfg = srv->rt->cfg;
    size_t n = (size_t)srv->nworkers * cfg->nlisteners;
    int *fds = malloc((n ? n : 1) * sizeof(*fds));
    char err[512];

    if (fds == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        fds[i] = -1;
    for (unsigned w = 0; w < srv->nworkers; w++) {
        for (size_t l = 0; l < cfg->nlisteners; l++) {
            const wsg_listener_conf_t *lc = &cfg->listeners[l];
            char what[256];
            snprintf(what, sizeof(what), "listener %s", lc->name);
            int fd = wsg_listener_bind(what, lc->bind, &lc->addr, err, sizeof(err));
            if (fd < 0) {
                fprintf(stderr, "wsgate: %s\n", err);
                for (size_t i = 0; i < n; i++)
                    if (fds[i] >= 0)
                        close(fds[i]);
                free(fds);
                return -1;
            }
            fds[w * cfg->nlisteners + l] = fd;
        }
    }
    *fds_out = fds;
    return 0;
}

int wsg_server_run(wsg_config_t *cfg) {
    wsg_server_t srv;
    int *fds = NULL;

    memset(&srv, 0, sizeof(srv));
    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error code, not a death */
    wsg_log_configure(cfg->log.level, cfg->log.format);
    srv.rt = wsg_runtime_new(cfg);
    if (srv.rt == NULL) {
        fprintf(stderr, "wsgate: out of memory\n");
        return WSG_EXIT_STARTUP;
    }
    srv.nworkers = cfg->workers ? cfg->workers : 1;
    if (bind_all(&srv, &fds) != 0) {
        wsg_runtime_unref(srv.rt);
        return WSG_EXIT_STARTUP;
    }
    srv.workers = calloc(srv.nworkers, sizeof(*srv.workers));
    uv_loop_init(&srv.loop);
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

    for (unsigned i = 0; i < srv.nworkers; i++) {
        int r = wsg_worker_init(&srv.workers[i], &srv, i, srv.rt, fds + i * cfg->nlisteners);
        if (r != 0) {
            fprintf(stderr, "wsgate: worker %u: %s\n", i, uv_strerror(r));
            _exit(WSG_EXIT_STARTUP);
        }
        srv.workers[i].on_exit = worker_finished;
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

    uv_run(&srv.loop, UV_RUN_DEFAULT);

    for (unsigned i = 0; i < srv.nworkers; i++)
        wsg_worker_join(&srv.workers[i]);
    uv_run(&srv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv.loop);
    free(srv.workers);
    wsg_runtime_unref(srv.rt);
    WSG_LOG(WSG_LOG_INFO, "server", "stopped");
    return WSG_EXIT_OK;
}
