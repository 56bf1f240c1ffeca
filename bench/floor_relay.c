/*
 * floor_relay: the least a user-space TCP relay can do, as the floor that
 * bench/compare measures every proxy against.
 *
 * No parsing at all: each accepted client gets one backend connection and
 * bytes are copied both ways as they come. Edge-triggered epoll, recv and
 * send, one recv and one send per readiness event (a second recv only when
 * the first filled the whole buffer), one 64 KiB buffer shared by every
 * connection, and a per-direction copy of what the peer did not take yet
 * only when a send was short. An idle pair holds two descriptors and one
 * small struct, nothing else.
 *
 *   floor_relay --port P --backend-port B [--backend-host 127.0.0.1]
 *
 * Prints "listening on P" once it accepts. Not a product: no timeouts, no
 * limits, no logging; it stops on SIGINT/SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_args.h"

#define BUF_SIZE 65536

typedef struct pair_s pair_t;

/* One socket of a pair. <out> holds what could not be sent to this socket
 * yet (allocated on a short send, freed once drained). */
typedef struct {
    pair_t *pair;
    int fd;
    unsigned eof : 1;      /* read side saw EOF, peer shut down for writing */
    unsigned blocked : 1;  /* not reading: the peer's <out> is not drained */
    char *out;
    size_t out_len, out_off;
} end_t;

struct pair_s {
    end_t end[2]; /* 0: client, 1: backend */
    int connected;
    int dead;            /* closed; freed after the current batch of events */
    pair_t *next_dead;
};

static char g_buf[BUF_SIZE]; /* the floor's only buffer, shared */
static volatile sig_atomic_t g_stop;
static pair_t *g_dead; /* pairs closed in this batch: later events may name them */

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void pair_free(pair_t *p) {
    if (p->dead)
        return;
    for (int i = 0; i < 2; i++) {
        close(p->end[i].fd); /* also leaves the epoll set */
        free(p->end[i].out);
        p->end[i].out = NULL;
    }
    p->dead = 1;
    p->next_dead = g_dead;
    g_dead = p;
}

static void reap(void) {
    while (g_dead) {
        pair_t *p = g_dead;
        g_dead = p->next_dead;
        free(p);
    }
}

static end_t *peer_of(end_t *e) { return &e->pair->end[e == &e->pair->end[0] ? 1 : 0]; }

/* Sends what is pending towards <e>; returns 0 when drained, 1 when some is
 * left, -1 on error. */
static int flush_out(end_t *e) {
    while (e->out_off < e->out_len) {
        ssize_t n = send(e->fd, e->out + e->out_off, e->out_len - e->out_off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        e->out_off += (size_t)n;
    }
    free(e->out);
    e->out = NULL;
    e->out_len = e->out_off = 0;
    return 0;
}

/* Reads from <src> and sends to its peer; returns -1 when the pair must go.
 * <hup>: the peer has shut down, so read on to the EOF rather than waiting
 * for an edge that will not come. */
static int pump(end_t *src, int hup) {
    end_t *dst = peer_of(src);
    while (!src->eof && !src->blocked) {
        ssize_t n = recv(src->fd, g_buf, BUF_SIZE, 0);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (n == 0) {
            src->eof = 1;
            if (!dst->out)
                shutdown(dst->fd, SHUT_WR);
            return src->eof && dst->eof && !src->out && !dst->out ? -1 : 0;
        }
        ssize_t w = send(dst->fd, g_buf, (size_t)n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            return -1;
        if (w < 0)
            w = 0;
        if (w < n) {
            dst->out_len = (size_t)(n - w);
            dst->out = malloc(dst->out_len);
            if (!dst->out)
                return -1;
            memcpy(dst->out, g_buf + w, dst->out_len);
            dst->out_off = 0;
            src->blocked = 1;
            return 0;
        }
        if (n < BUF_SIZE && !hup)
            return 0; /* the socket is very likely drained: wait for the next edge */
    }
    return 0;
}

static int on_writable(end_t *e) {
    end_t *src = peer_of(e);
    int r = flush_out(e);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if (src->eof) {
        shutdown(e->fd, SHUT_WR);
        return src->eof && e->eof && !e->out && !src->out ? -1 : 0;
    }
    src->blocked = 0;
    return pump(src, 0);
}

static void on_event(end_t *e, uint32_t ev) {
    pair_t *p = e->pair;
    if (p->dead)
        return;
    if (!p->connected) {
        if (e != &p->end[1] || !(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return; /* client bytes wait until the backend answers */
        if (ev & (EPOLLERR | EPOLLHUP)) {
            pair_free(p);
            return;
        }
        p->connected = 1;
        if (pump(&p->end[0], 0) < 0) {
            pair_free(p);
            return;
        }
    }
    if ((ev & EPOLLOUT) && e->out && on_writable(e) < 0) {
        pair_free(p);
        return;
    }
    if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
        pump(e, (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) < 0)
        pair_free(p);
}

static int add_fd(int ep, end_t *e) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = e};
    return epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &ev);
}

static void on_accept(int ep, int lfd, const struct sockaddr_in *backend) {
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (cfd < 0)
            return;
        int bfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        pair_t *p = calloc(1, sizeof *p);
        if (bfd < 0 || !p) {
            close(cfd);
            if (bfd >= 0)
                close(bfd);
            free(p);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        p->end[0] = (end_t){.pair = p, .fd = cfd};
        p->end[1] = (end_t){.pair = p, .fd = bfd};
        if ((connect(bfd, (const struct sockaddr *)backend, sizeof *backend) < 0 &&
             errno != EINPROGRESS) ||
            add_fd(ep, &p->end[0]) < 0 || add_fd(ep, &p->end[1]) < 0)
            pair_free(p);
    }
}

int main(int argc, char **argv) {
    int port;
    struct sockaddr_in backend;
    if (floor_args(argc, argv, "floor_relay", &port, &backend) != 0)
        return 2;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("floor_relay: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("floor_relay: epoll");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("listening on %d\n", port);
    fflush(stdout);
    struct epoll_event evs[256];
    while (!g_stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr)
                on_accept(ep, lfd, &backend);
            else
                on_event(evs[i].data.ptr, evs[i].events);
        }
        reap();
    }
    return 0;
}
