/*
 * floor_uv: floor_relay (bench/floor_relay.c) on libuv, to show what libuv's
 * loop and stream path cost against the edge-triggered epoll floor with no
 * parsing at all.
 *
 * The same relay, written as a careful libuv program would write it: one
 * uv_loop, a uv_tcp_t listener, per accepted client a uv_tcp_t pair (client
 * and backend, TCP_NODELAY on both), uv_read_start on both into one 64 KiB
 * buffer shared by every connection, and per read one uv_try_write of what
 * was read to the other side. The semantics are floor_relay's:
 *
 *  - the client is not read until the backend connect completes (its bytes
 *    wait in the kernel); a failed connect closes the pair;
 *  - a short write copies the rest into one malloc'd block, uv_writes it and
 *    stops reading the source side until that write completes;
 *  - an EOF shuts the other side down for writing (uv_shutdown, after what
 *    is queued to it); EOF on both sides, or an error anywhere, closes both.
 *
 * An idle pair holds two descriptors and one struct (the two handles and
 * one request), nothing else.
 *
 *   floor_uv --port P --backend-port B [--backend-host 127.0.0.1]
 *
 * Prints "listening on P" once it accepts. Not a product: no timeouts, no
 * limits, no logging; it stops on SIGINT/SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "floor_args.h"

#define BUF_SIZE 65536

typedef struct {
    uv_tcp_t end[2];   /* 0: client, 1: backend; both handles' data is the pair */
    union {            /* never both in use: the connect is done before any read */
        uv_connect_t connect;
        uv_shutdown_t shutdown; /* at most one: the second EOF closes the pair */
    } req;
    unsigned eof[2];   /* end[i] has sent its EOF */
    unsigned closing;  /* uv_close'd: freed once both handles are closed */
    unsigned closed;   /* handles whose close callback has run */
} pair_t;

/* A write of what uv_try_write left, the copy in the same block. */
typedef struct {
    uv_write_t req;
    uv_stream_t *src; /* not read until this write completes */
    char data[];
} pending_t;

static char g_buf[BUF_SIZE]; /* the floor's only buffer, shared */
static struct sockaddr_in g_backend;

static void on_closed(uv_handle_t *h) {
    pair_t *p = h->data;
    if (++p->closed == 2)
        free(p);
}

static void pair_close(pair_t *p) {
    if (p->closing)
        return;
    p->closing = 1;
    uv_close((uv_handle_t *)&p->end[0], on_closed);
    uv_close((uv_handle_t *)&p->end[1], on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    (void)h;
    (void)hint;
    *buf = uv_buf_init(g_buf, BUF_SIZE);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    (void)req; /* as floor_relay: the outcome of a shutdown changes nothing */
    (void)status;
}

static void on_read(uv_stream_t *src, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
    pending_t *w = (pending_t *)req;
    pair_t *p = w->src->data;
    uv_stream_t *src = w->src;
    free(w);
    if (status < 0)
        pair_close(p); /* also UV_ECANCELED: the pair is closing already */
    else if (uv_read_start(src, on_alloc, on_read) != 0)
        pair_close(p);
}

static void on_read(uv_stream_t *src, ssize_t n, const uv_buf_t *buf) {
    pair_t *p = src->data;
    int s = src == (uv_stream_t *)&p->end[0] ? 0 : 1;
    uv_stream_t *dst = (uv_stream_t *)&p->end[1 - s];
    if (n == 0)
        return; /* EAGAIN */
    if (n == UV_EOF) {
        p->eof[s] = 1;
        if (p->eof[1 - s] || uv_shutdown(&p->req.shutdown, dst, on_shutdown) != 0)
            pair_close(p);
        return;
    }
    if (n < 0) {
        pair_close(p);
        return;
    }
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    int w = uv_try_write(dst, &b, 1);
    if (w == UV_EAGAIN)
        w = 0;
    if (w < 0) {
        pair_close(p);
        return;
    }
    if (w == n)
        return;
    size_t rest = (size_t)n - (size_t)w;
    pending_t *pw = malloc(sizeof *pw + rest);
    if (!pw) {
        pair_close(p);
        return;
    }
    memcpy(pw->data, buf->base + w, rest);
    pw->src = src;
    b = uv_buf_init(pw->data, (unsigned)rest);
    if (uv_write(&pw->req, dst, &b, 1, on_written) != 0) {
        free(pw);
        pair_close(p);
        return;
    }
    uv_read_stop(src);
}

static void on_connect(uv_connect_t *req, int status) {
    pair_t *p = req->handle->data;
    if (status < 0 ||
        uv_read_start((uv_stream_t *)&p->end[0], on_alloc, on_read) != 0 ||
        uv_read_start((uv_stream_t *)&p->end[1], on_alloc, on_read) != 0)
        pair_close(p); /* also UV_ECANCELED: closing already */
}

static void on_accept(uv_stream_t *server, int status) {
    if (status < 0)
        return;
    pair_t *p = calloc(1, sizeof *p);
    if (!p)
        return; /* the connection waits in the backlog for the next accept */
    uv_tcp_init(server->loop, &p->end[0]);
    p->end[0].data = p;
    if (uv_accept(server, (uv_stream_t *)&p->end[0]) != 0) {
        p->closed = 1; /* the backend handle does not exist yet */
        p->closing = 1;
        uv_close((uv_handle_t *)&p->end[0], on_closed);
        return;
    }
    /* The backend socket now, as floor_relay's socket(): TCP_NODELAY
     * before the connect. */
    if (uv_tcp_init_ex(server->loop, &p->end[1], AF_INET) != 0) {
        p->closed = 1;
        p->closing = 1;
        uv_close((uv_handle_t *)&p->end[0], on_closed);
        return;
    }
    p->end[1].data = p;
    uv_tcp_nodelay(&p->end[0], 1);
    uv_tcp_nodelay(&p->end[1], 1);
    if (uv_tcp_connect(&p->req.connect, &p->end[1], (const struct sockaddr *)&g_backend,
                       on_connect) != 0)
        pair_close(p);
}

static void on_signal(uv_signal_t *h, int sig) {
    (void)sig;
    uv_stop(h->loop);
}

static void close_any(uv_handle_t *h, void *arg) {
    (void)arg;
    if (uv_is_closing(h))
        return;
    if (h->data)
        pair_close(h->data);
    else
        uv_close(h, NULL);
}

int main(int argc, char **argv) {
    int port;
    if (floor_args(argc, argv, "floor_uv", &port, &g_backend) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t listener;
    uv_signal_t sigint, sigterm;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    int r = uv_tcp_init(loop, &listener);
    listener.data = NULL;
    if (r == 0)
        r = uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&listener, 4096, on_accept);
    if (r != 0) {
        fprintf(stderr, "floor_uv: listen: %s\n", uv_strerror(r));
        return 1;
    }
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    sigint.data = sigterm.data = NULL;
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    printf("listening on %d\n", port);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    /* Stopped by a signal: close every handle, let the callbacks run. */
    uv_walk(loop, close_any, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
