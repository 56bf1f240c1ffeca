/*
 * floor_uring: the floor relay (floor_relay.c) on io_uring instead of
 * epoll, to show what that I/O path costs on the machine.
 *
 * No parsing: each accepted client gets one backend connection and bytes
 * go both ways as they come. Multishot accept; a multishot recv per socket
 * into one shared ring of provided 64 KiB buffers (so an idle pair holds
 * no buffer); the buffer received is sent to the peer as it is, one send
 * in flight per socket (later ones wait their turn, so a short send cannot
 * reorder the stream), and goes back to the ring once sent. Every
 * submission of a loop iteration goes to the kernel in one
 * io_uring_submit_and_wait; the ring is SINGLE_ISSUER + DEFER_TASKRUN where
 * the kernel has them.
 *
 * Closing follows what io_uring needs: an armed multishot recv is
 * cancelled by its user_data (never by fd, which scans every request) and
 * the sockets are closed only once the pair's last request completed.
 *
 *   floor_uring --port P --backend-port B [--backend-host 127.0.0.1]
 *
 * Prints "listening on P" once it accepts. Not a product: no timeouts, no
 * limits; it stops on SIGINT/SIGTERM. Exits 3 when io_uring is not
 * available (bench/compare then leaves the row out).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_args.h"

#define BUF_SIZE 65536
#define NBUFS 1024 /* a power of two; pages are touched only as they are used */
#define BGID 0

enum { OP_ACCEPT = 0, OP_RECV = 1, OP_SEND = 2, OP_CONNECT = 3, OP_CANCEL = 4 };

typedef struct pair_s pair_t;

/* A buffer waiting to be sent to an end, behind the one in flight. */
typedef struct pend_s {
    struct pend_s *next;
    unsigned bid, off, len;
} pend_t;

typedef struct end_s {
    pair_t *pair;
    struct end_s *next_starved; /* on g_starved while <starved> */
    int fd;
    unsigned eof : 1;      /* its recv saw EOF */
    unsigned armed : 1;    /* its multishot recv is armed */
    unsigned busy : 1;     /* a send to it is in flight */
    unsigned shut : 1;     /* shutdown(SHUT_WR) done */
    unsigned starved : 1;  /* its recv ended for want of buffers: re-arm on a return */
    unsigned bid, off, len; /* the send in flight */
    pend_t *head, *tail;
} end_t;

struct pair_s {
    end_t end[2]; /* 0: client, 1: backend */
    int refs;     /* requests of its own not completed yet */
    int dead;
    int connected;
};

static struct io_uring g_ring;
static struct io_uring_buf_ring *g_br;
static char *g_bufs;
static volatile sig_atomic_t g_stop;
static int g_lfd;
static struct sockaddr_in g_backend;
static struct end_s *g_starved; /* ends whose recv stopped for want of buffers */

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static struct io_uring_sqe *sqe_get(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&g_ring);
    if (sqe == NULL) {
        io_uring_submit(&g_ring);
        sqe = io_uring_get_sqe(&g_ring);
    }
    return sqe;
}

/* liburing 2.3's prep helpers do not reset user_data: always set it. */
static void set_ud(struct io_uring_sqe *sqe, void *p, int op) {
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)p | (uint64_t)op);
}

static void buf_return(unsigned bid) {
    io_uring_buf_ring_add(g_br, g_bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUFS), 0);
    io_uring_buf_ring_advance(g_br, 1);
}

static end_t *peer_of(end_t *e) { return &e->pair->end[e == &e->pair->end[0] ? 1 : 0]; }

static void arm_recv(end_t *e) {
    struct io_uring_sqe *sqe = sqe_get();
    if (sqe == NULL)
        return;
    io_uring_prep_recv_multishot(sqe, e->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    set_ud(sqe, e, OP_RECV);
    e->armed = 1;
    e->pair->refs++;
}

static void submit_send(end_t *e) {
    struct io_uring_sqe *sqe = sqe_get();
    if (sqe == NULL)
        return;
    /* MSG_WAITALL: a send completes whole or fails, never short. */
    io_uring_prep_send(sqe, e->fd, g_bufs + (size_t)e->bid * BUF_SIZE + e->off, e->len - e->off,
                       MSG_NOSIGNAL | MSG_WAITALL);
    set_ud(sqe, e, OP_SEND);
    e->busy = 1;
    e->pair->refs++;
}

static void unstarve(end_t *e) {
    for (end_t **pp = &g_starved; *pp != NULL; pp = &(*pp)->next_starved) {
        if (*pp == e) {
            *pp = e->next_starved;
            break;
        }
    }
    e->starved = 0;
}

static void pair_free(pair_t *p) {
    for (int i = 0; i < 2; i++) {
        if (p->end[i].starved)
            unstarve(&p->end[i]);
    }
    for (int i = 0; i < 2; i++) {
        end_t *e = &p->end[i];
        close(e->fd);
        if (e->busy)
            buf_return(e->bid);
        for (pend_t *q = e->head, *n; q != NULL; q = n) {
            n = q->next;
            buf_return(q->bid);
            free(q);
        }
    }
    free(p);
}

/* Ends the pair: armed recvs are cancelled by user_data; the sockets close
 * once the last request of the pair completed (every completion handler
 * ends by checking). */
static void pair_kill(pair_t *p) {
    if (p->dead)
        return;
    p->dead = 1;
    for (int i = 0; i < 2; i++) {
        end_t *e = &p->end[i];
        if (!e->armed)
            continue;
        struct io_uring_sqe *sqe = sqe_get();
        if (sqe == NULL) {
            /* No room even after a submit: shutting the socket down ends
             * the armed recv (a 0 completion) as the cancel would. */
            shutdown(e->fd, SHUT_RDWR);
            continue;
        }
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)e | OP_RECV, 0);
        set_ud(sqe, NULL, OP_CANCEL);
    }
    /* Freed by the completion handler that runs this, once refs is 0. */
}

static void maybe_done(pair_t *p) {
    end_t *a = &p->end[0], *b = &p->end[1];
    if (a->eof && b->eof && !a->busy && !b->busy)
        pair_kill(p);
}

/* The peer of <dst> is at EOF and nothing more goes to <dst>: pass the FIN on. */
static void maybe_shut(end_t *dst) {
    if (peer_of(dst)->eof && !dst->busy && !dst->shut) {
        shutdown(dst->fd, SHUT_WR);
        dst->shut = 1;
    }
}

static void queue_send(end_t *dst, unsigned bid, unsigned len) {
    if (!dst->busy) {
        dst->bid = bid;
        dst->off = 0;
        dst->len = len;
        submit_send(dst);
        return;
    }
    pend_t *q = malloc(sizeof(*q));
    if (q == NULL) {
        buf_return(bid);
        pair_kill(dst->pair);
        return;
    }
    *q = (pend_t){NULL, bid, 0, len};
    if (dst->tail)
        dst->tail->next = q;
    else
        dst->head = q;
    dst->tail = q;
}

static void on_recv(end_t *e, int res, unsigned flags) {
    pair_t *p = e->pair;
    int more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) {
        e->armed = 0;
        p->refs--;
    }
    if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (p->dead) {
            buf_return(bid);
        } else {
            queue_send(peer_of(e), bid, (unsigned)res);
            if (!more && !p->dead)
                arm_recv(e);
        }
    } else if (res == 0) {
        e->eof = 1;
        maybe_shut(peer_of(e));
        maybe_done(p);
    } else if (res == -ENOBUFS) {
        if (!p->dead && !e->starved) { /* re-armed when a buffer comes back */
            e->starved = 1;
            e->next_starved = g_starved;
            g_starved = e;
        }
    } else if (res < 0 && res != -ECANCELED) {
        pair_kill(p);
    }
    if (p->dead && p->refs == 0)
        pair_free(p);
}

static void on_send(end_t *e, int res) {
    pair_t *p = e->pair;
    p->refs--;
    e->busy = 0;
    if (res < 0 || p->dead) {
        buf_return(e->bid);
        pair_kill(p);
    } else if ((unsigned)res < e->len - e->off) {
        e->off += (unsigned)res;
        submit_send(e);
    } else {
        buf_return(e->bid);
        while (g_starved != NULL) { /* a buffer is back: recvs that ran dry go on */
            end_t *s = g_starved;
            g_starved = s->next_starved;
            s->starved = 0;
            if (!s->pair->dead && !s->armed && !s->eof)
                arm_recv(s);
        }
        pend_t *q = e->head;
        if (q != NULL) {
            e->head = q->next;
            if (e->head == NULL)
                e->tail = NULL;
            e->bid = q->bid;
            e->off = q->off;
            e->len = q->len;
            free(q);
            submit_send(e);
        } else {
            maybe_shut(e);
            maybe_done(p);
        }
    }
    if (p->dead && p->refs == 0)
        pair_free(p);
}

static void on_connect(end_t *e, int res) {
    pair_t *p = e->pair;
    p->refs--;
    if (res < 0 || p->dead) {
        pair_kill(p);
        if (p->refs == 0)
            pair_free(p);
        return;
    }
    p->connected = 1;
    int one = 1;
    setsockopt(p->end[0].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(p->end[1].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    arm_recv(&p->end[0]);
    arm_recv(&p->end[1]);
}

static void arm_accept(void) {
    struct io_uring_sqe *sqe = sqe_get();
    if (sqe == NULL)
        return;
    io_uring_prep_multishot_accept(sqe, g_lfd, NULL, NULL, 0);
    set_ud(sqe, NULL, OP_ACCEPT);
}

static void on_accept(int res, unsigned flags) {
    if (!(flags & IORING_CQE_F_MORE) && !g_stop)
        arm_accept();
    if (res < 0)
        return;
    int bfd = socket(AF_INET, SOCK_STREAM, 0);
    pair_t *p = calloc(1, sizeof(*p));
    struct io_uring_sqe *sqe = p != NULL && bfd >= 0 ? sqe_get() : NULL;
    if (sqe == NULL) {
        close(res);
        if (bfd >= 0)
            close(bfd);
        free(p);
        return;
    }
    p->end[0] = (end_t){.pair = p, .fd = res};
    p->end[1] = (end_t){.pair = p, .fd = bfd};
    io_uring_prep_connect(sqe, bfd, (struct sockaddr *)&g_backend, sizeof(g_backend));
    set_ud(sqe, &p->end[1], OP_CONNECT);
    p->refs++;
}

static int setup_ring(void) {
    struct io_uring_params prm;
    memset(&prm, 0, sizeof(prm));
    prm.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int r = io_uring_queue_init_params(4096, &g_ring, &prm);
    if (r == -EINVAL) { /* an older kernel: plain task work */
        memset(&prm, 0, sizeof(prm));
        r = io_uring_queue_init_params(4096, &g_ring, &prm);
    }
    if (r < 0)
        return r;
    size_t rlen = NBUFS * sizeof(struct io_uring_buf);
    g_br = mmap(NULL, rlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_bufs = mmap(NULL, (size_t)NBUFS * BUF_SIZE, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_br == MAP_FAILED || g_bufs == MAP_FAILED)
        return -ENOMEM;
    io_uring_buf_ring_init(g_br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)g_br;
    reg.ring_entries = NBUFS;
    reg.bgid = BGID;
    if ((r = io_uring_register_buf_ring(&g_ring, &reg, 0)) < 0)
        return r;
    for (unsigned i = 0; i < NBUFS; i++)
        io_uring_buf_ring_add(g_br, g_bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUFS), (int)i);
    io_uring_buf_ring_advance(g_br, NBUFS);
    return 0;
}

int main(int argc, char **argv) {
    int port;
    if (floor_args(argc, argv, "floor_uring", &port, &g_backend) != 0)
        return 2;
    int r = setup_ring();
    if (r < 0) {
        fprintf(stderr, "floor_uring: io_uring unavailable: %s\n", strerror(-r));
        return 3;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    g_lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(g_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (g_lfd < 0 || bind(g_lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(g_lfd, 4096) < 0) {
        perror("floor_uring: listen");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    arm_accept();
    printf("listening on %d\n", port);
    fflush(stdout);
    while (!g_stop) {
        r = io_uring_submit_and_wait(&g_ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            fprintf(stderr, "floor_uring: %s\n", strerror(-r));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&g_ring, head, cqe) {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            end_t *e = (end_t *)(uintptr_t)(ud & ~(uint64_t)7);
            switch ((int)(ud & 7)) {
            case OP_ACCEPT:
                on_accept(cqe->res, cqe->flags);
                break;
            case OP_RECV:
                on_recv(e, cqe->res, cqe->flags);
                break;
            case OP_SEND:
                on_send(e, cqe->res);
                break;
            case OP_CONNECT:
                on_connect(e, cqe->res);
                break;
            default:
                break;
            }
            n++;
        }
        io_uring_cq_advance(&g_ring, n);
    }
    /* The listener before the ring (a multishot accept holds it). */
    close(g_lfd);
    io_uring_queue_exit(&g_ring);
    return 0;
}
