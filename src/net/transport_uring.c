/*
 * The io_uring transport: plain TCP sides whose reads and writes go through
 * the worker's ring, behind the same ops table as transport_tcp.c.
 *
 * Reads are one multishot recv per side into a buffer ring shared by the
 * worker, so an idle side holds no buffer: a completion's bytes are copied
 * into the caller's buffer (its alloc_cb, as libuv does) and the ring buffer
 * goes back at once. try_write is a direct non-blocking send(): the common
 * case of the relay, one message that fits the socket, costs one syscall and
 * no copy, as on epoll. write() (the socket was full) queues a send on the
 * ring, one in flight per side so the stream stays in order.
 *
 * Every request carries the address of the side's state object (tagged with
 * the kind of request in its low bits) as user_data; that object is freed
 * only after the last completion that names it, and only then is the libuv
 * handle (which owns the fd) closed. Cancels name a request by user_data:
 * by fd the kernel would walk every armed request of the ring.
 */
#include <wsgate/uring.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <liburing.h>

#define SQ_ENTRIES 256
#define CQ_ENTRIES 8192 /* one multishot recv per side can post at any time */
#define BR_ENTRIES 256  /* buffers the ring can hold: a power of two */
#define BR_SIZE 16384   /* the size of one, as the libuv path reads */
/* Buffers given to the ring at first, and added each time it runs dry: the
 * kernel takes them in ring order, so every buffer ever given is touched
 * again and again; growing on demand keeps RSS at what the load needs
 * (the e2e RSS bounds saw +4 MiB with all 256 given at once). */
#define BR_START 16
#define BR_GROW 16
#define BR_GROUP 0
/* A side receives one buffer per request (single-shot) for this many
 * completions when it starts, when its caller stops reading (backpressure)
 * and when a receive fills a whole buffer (its peer sends faster than it is
 * read); after that many that each fit in a buffer and were taken whole,
 * one multishot recv serves it. A multishot recv fills as many ring buffers
 * as data and free buffers allow before a stop can cancel it, and what the
 * caller does not take waits in the side's stash, past
 * limits.buffer_bytes: one at a time, at most a buffer does. */
#define SINGLE_RECVS 16
#define READ_SUGGEST 65536 /* suggested_size for the caller's alloc_cb, as libuv */

enum { T_RECV = 1, T_SEND = 2, T_SHUT = 3, T_CANCEL = 4, T_MASK = 7 };

typedef struct wreq_s {
    struct wreq_s *next;
    uv_write_t *req;
    uv_write_cb cb;
    uv_buf_t *bufs; /* <small> or owned */
    unsigned nbufs, idx;
    size_t off; /* into bufs[idx] */
    struct msghdr mh;
    struct iovec *iov; /* owned, for sendmsg of several buffers */
    uv_buf_t small[2];
} wreq_t;

/* Bytes (or an end) that arrived while the caller was not reading: a recv
 * completes before its cancel does, and libuv delivers nothing after
 * read_stop. Rare; handed over at the next read_start. */
typedef struct stash_s {
    struct stash_s *next;
    size_t len, off;
    char data[];
} stash_t;

typedef struct wsg_uring_side_s {
    wsg_uring_t *ring;
    wsg_side_t *side;
    int fd;
    unsigned inflight; /* requests whose last completion has not come */
    uv_alloc_cb alloc_cb;
    uv_read_cb read_cb;
    bool reading;      /* the caller wants bytes */
    bool recv_armed;   /* a recv is in the kernel (multishot: <recv_multi>) */
    bool recv_cancel;  /* and its cancel is on the way */
    bool recv_multi;   /* the recv in the kernel is multishot */
    bool send_busy;    /* the head of <wq> is in the kernel */
    bool shut_busy;
    bool closing;
    bool queued;       /* on the ring's work list */
    uint8_t single;    /* single-shot recvs left before multishot again */
    int end;           /* UV_EOF or an error read but not yet delivered; 0: none */
    int werr;          /* a failed send: later writes fail with it */
    wreq_t *wq, **wq_tail;
    uv_shutdown_t *shut;
    stash_t *stash, **stash_tail;
    uv_close_cb close_cb;
    struct wsg_uring_side_s *next_work;
} us_t;

/* The ring's counters, as wsg_uring_stats() reports them. One writer, the
 * ring's thread; the admin endpoint's /metrics reads them from the server
 * thread while the worker runs (wsg_server_stats). So each is a relaxed
 * atomic changed with a relaxed load and a relaxed store, not a
 * read-modify-write: for the one writer that is the plain add it was (no
 * locked instruction on x86-64, no exclusive pair on arm64), and a reader
 * on another thread gets whole values, never torn ones. */
typedef struct counters_s {
    _Atomic uint64_t submits, cqes, enobufs, sides, buffers, stashed;
} counters_t;

static void count_up(_Atomic uint64_t *c, uint64_t n) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static void count_down(_Atomic uint64_t *c, uint64_t n) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

static uint64_t count_get(const _Atomic uint64_t *c) {
    return atomic_load_explicit(c, memory_order_relaxed);
}

struct wsg_uring_s {
    struct io_uring ring;
    uv_loop_t *loop;
    uv_poll_t poll; /* on <efd> */
    uv_prepare_t prep;
    int efd;        /* the ring's registered eventfd */
    int handles;    /* open libuv handles, for wsg_uring_close */
    struct io_uring_buf_ring *br;
    char *bufs;       /* BR_ENTRIES * BR_SIZE, touched only as buffers are given */
    unsigned nbufs;   /* buffers given to the ring so far */
    us_t *work; /* sides with something to do outside a completion */
    counters_t st;
};

static uint64_t ud(us_t *u, unsigned tag) { return (uint64_t)(uintptr_t)u | tag; }

static int neg_errno(void) { return errno > 0 ? -errno : -EIO; }

/* ---- the ring ------------------------------------------------------------ */

/* An SQE with user_data set (liburing 2.3's prep helpers leave it as the
 * slot's last user had it). Submits to make room when the queue is full. */
static struct io_uring_sqe *sqe_get(wsg_uring_t *r) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) {
        io_uring_submit(&r->ring);
        count_up(&r->st.submits, 1);
        sqe = io_uring_get_sqe(&r->ring);
    }
    return sqe;
}

static void recycle(wsg_uring_t *r, unsigned bid) {
    io_uring_buf_ring_add(r->br, r->bufs + (size_t)bid * BR_SIZE, BR_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BR_ENTRIES), 0);
    io_uring_buf_ring_advance(r->br, 1);
}

/* More buffers for the ring, after it ran dry. */
static void grow(wsg_uring_t *r) {
    unsigned n = 0;
    while (r->nbufs < BR_ENTRIES && n < BR_GROW) {
        io_uring_buf_ring_add(r->br, r->bufs + (size_t)r->nbufs * BR_SIZE, BR_SIZE,
                              (unsigned short)r->nbufs, io_uring_buf_ring_mask(BR_ENTRIES), (int)n);
        r->nbufs++;
        n++;
    }
    if (n > 0)
        io_uring_buf_ring_advance(r->br, (int)n);
    atomic_store_explicit(&r->st.buffers, r->nbufs, memory_order_relaxed);
}

static void keep_alive(wsg_uring_t *r) {
    /* Like an active libuv stream, a side on the ring keeps the loop
     * running; an idle ring must not. */
    if (count_get(&r->st.sides) > 0)
        uv_ref((uv_handle_t *)&r->poll);
    else
        uv_unref((uv_handle_t *)&r->poll);
}

static void work_add(us_t *u) {
    if (u->queued)
        return;
    u->queued = true;
    u->next_work = u->ring->work;
    u->ring->work = u;
}

/* ---- reads --------------------------------------------------------------- */

static void arm_recv(us_t *u) {
    struct io_uring_sqe *sqe = sqe_get(u->ring);
    if (sqe == NULL) {
        u->end = UV_ENOMEM;
        work_add(u);
        return;
    }
    u->recv_multi = u->single == 0;
    if (u->recv_multi)
        io_uring_prep_recv_multishot(sqe, u->fd, NULL, 0, 0);
    else
        io_uring_prep_recv(sqe, u->fd, NULL, BR_SIZE, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BR_GROUP;
    io_uring_sqe_set_data64(sqe, ud(u, T_RECV));
    u->recv_armed = true;
    u->inflight++;
}

static void cancel(us_t *u, unsigned tag) {
    struct io_uring_sqe *sqe = sqe_get(u->ring);
    if (sqe == NULL)
        return; /* the request ends by itself when the peer does */
    io_uring_prep_cancel64(sqe, ud(u, tag), 0);
    io_uring_sqe_set_data64(sqe, ud(u, T_CANCEL));
    u->inflight++;
}

static void stash_bytes(us_t *u, const char *p, size_t n) {
    stash_t *s = malloc(sizeof(*s) + n);
    if (s == NULL) {
        u->end = UV_ENOMEM;
        return;
    }
    s->next = NULL;
    s->len = n;
    s->off = 0;
    memcpy(s->data, p, n);
    count_up(&u->ring->st.stashed, n);
    *u->stash_tail = s;
    u->stash_tail = &s->next;
}

/* Hands <n> bytes at <p> to the caller, as many buffers as its alloc_cb
 * gives; keeps what it did not take (it stopped reading or closed). */
static size_t deliver(us_t *u, const char *p, size_t n) {
    uv_stream_t *st = (uv_stream_t *)&u->side->tcp;
    size_t done = 0;
    while (done < n && u->reading && !u->closing) {
        uv_buf_t b = uv_buf_init(NULL, 0);
        u->alloc_cb((uv_handle_t *)st, READ_SUGGEST, &b);
        if (b.base == NULL || b.len == 0) {
            u->read_cb(st, UV_ENOBUFS, &b);
            break;
        }
        size_t k = n - done < b.len ? n - done : b.len;
        memcpy(b.base, p + done, k);
        done += k;
        u->read_cb(st, (ssize_t)k, &b);
    }
    return done;
}

static void deliver_end(us_t *u) {
    uv_stream_t *st = (uv_stream_t *)&u->side->tcp;
    uv_buf_t b = uv_buf_init(NULL, 0);
    int e = u->end;
    /* libuv reports EOF again to a caller that reads again; errors too. */
    u->read_cb(st, e, &b);
}

/* What arrived while the caller was not reading, now that it is. */
static void deliver_stash(us_t *u) {
    while (u->stash != NULL && u->reading && !u->closing) {
        stash_t *s = u->stash;
        s->off += deliver(u, s->data + s->off, s->len - s->off);
        if (s->off < s->len)
            return;
        if ((u->stash = s->next) == NULL)
            u->stash_tail = &u->stash;
        count_down(&u->ring->st.stashed, s->len);
        free(s);
    }
    if (u->stash == NULL && u->end != 0 && u->reading && !u->closing)
        deliver_end(u);
}

/* Cancels the side's recv with a submission of its own: left for the
 * prepare callback, every system call made meanwhile (each send of the
 * relay) would let the kernel complete more receives for this side
 * (COOP_TASKRUN runs them on the way out of any syscall). */
static void cancel_recv_now(us_t *u) {
    u->recv_cancel = true;
    cancel(u, T_RECV);
    io_uring_submit(&u->ring->ring);
    count_up(&u->ring->st.submits, 1);
}

/* Receives one buffer at a time from now on (SINGLE_RECVS): a multishot
 * recv in the kernel is cancelled, and the next one armed is single-shot. */
static void go_single(us_t *u) {
    u->single = SINGLE_RECVS;
    if (u->recv_armed && u->recv_multi && !u->recv_cancel && !u->closing)
        cancel_recv_now(u);
}

static void on_recv(us_t *u, struct io_uring_cqe *cqe) {
    wsg_uring_t *r = u->ring;
    bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more) {
        u->recv_armed = false;
        u->recv_cancel = false;
        u->inflight--;
    }
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        const char *p = r->bufs + (size_t)bid * BR_SIZE;
        size_t n = (size_t)cqe->res, k = 0;
        if (u->stash == NULL && u->reading)
            k = deliver(u, p, n);
        if (n == BR_SIZE)
            go_single(u); /* the peer sends faster than one buffer a wake-up */
        else if (k == n && u->reading && u->single > 0)
            u->single--;
        if (k < n && !u->closing) {
            stash_bytes(u, p + k, n - k);
            if (u->reading)
                work_add(u); /* kept behind earlier bytes: handed over from the loop */
        }
        recycle(r, bid);
    } else if (cqe->res == 0) {
        u->end = UV_EOF;
    } else if (cqe->res == -ENOBUFS) {
        count_up(&r->st.enobufs, 1); /* ended the multishot: armed again below */
        grow(r);
    } else if (cqe->res < 0 && cqe->res != -ECANCELED) {
        u->end = cqe->res; /* UV_E* are negated errnos on Linux */
    }
    if (u->closing)
        return;
    if (u->end != 0 && u->stash == NULL && u->reading) {
        deliver_end(u);
        return;
    }
    if (!more && u->reading && u->end == 0 && !u->recv_armed)
        arm_recv(u);
}

static int ur_read_start(wsg_side_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
    us_t *u = s->uring;
    if (u->closing)
        return UV_EINVAL;
    u->alloc_cb = alloc_cb;
    u->read_cb = read_cb;
    u->reading = true;
    if (u->stash != NULL || u->end != 0)
        work_add(u); /* delivered from the loop, never inside read_start */
    else if (!u->recv_armed)
        arm_recv(u);
    /* armed and being cancelled: the last completion arms it again */
    return 0;
}

static int ur_read_stop(wsg_side_t *s) {
    us_t *u = s->uring;
    u->reading = false;
    /* Keeping the recv armed would let the kernel fill buffers for a caller
     * that wants no more (backpressure): cancel it, single-shot or not. */
    go_single(u);
    if (u->recv_armed && !u->recv_cancel && !u->closing)
        cancel_recv_now(u);
    return 0;
}

/* ---- writes -------------------------------------------------------------- */

static int ur_try_write(wsg_side_t *s, const uv_buf_t *bufs, unsigned nbufs) {
    us_t *u = s->uring;
    if (u->wq != NULL || u->closing)
        return UV_EAGAIN;
    if (u->werr != 0)
        return u->werr;
    ssize_t n;
    if (nbufs == 1) {
        n = send(u->fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
        struct msghdr mh = {.msg_iov = (struct iovec *)(uintptr_t)bufs, .msg_iovlen = nbufs};
        n = sendmsg(u->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return UV_EAGAIN;
    return neg_errno();
}

static void start_shutdown(us_t *u);

static void start_send(us_t *u) {
    wreq_t *w = u->wq;
    struct io_uring_sqe *sqe = sqe_get(u->ring);
    if (sqe == NULL) {
        u->werr = UV_ENOMEM;
        work_add(u);
        return;
    }
    /* MSG_WAITALL: the kernel finishes a short send itself; the remainder
     * is sent again below if it still comes back short. */
    if (w->idx + 1 == w->nbufs) {
        io_uring_prep_send(sqe, u->fd, w->bufs[w->idx].base + w->off, w->bufs[w->idx].len - w->off,
                           MSG_NOSIGNAL | MSG_WAITALL);
    } else {
        unsigned n = w->nbufs - w->idx;
        for (unsigned i = 0; i < n; i++) {
            w->iov[i].iov_base = w->bufs[w->idx + i].base + (i == 0 ? w->off : 0);
            w->iov[i].iov_len = w->bufs[w->idx + i].len - (i == 0 ? w->off : 0);
        }
        memset(&w->mh, 0, sizeof(w->mh));
        w->mh.msg_iov = w->iov;
        w->mh.msg_iovlen = n;
        io_uring_prep_sendmsg(sqe, u->fd, &w->mh, MSG_NOSIGNAL | MSG_WAITALL);
    }
    io_uring_sqe_set_data64(sqe, ud(u, T_SEND));
    u->send_busy = true;
    u->inflight++;
}

static void wreq_free(wreq_t *w) {
    if (w->bufs != w->small)
        free(w->bufs);
    free(w->iov);
    free(w);
}

static void complete_write(us_t *u, wreq_t *w, int status) {
    (void)u;
    uv_write_t *req = w->req;
    uv_write_cb cb = w->cb;
    wreq_free(w);
    if (cb != NULL)
        cb(req, status);
}

static wreq_t *wq_pop(us_t *u) {
    wreq_t *w = u->wq;
    if ((u->wq = w->next) == NULL)
        u->wq_tail = &u->wq;
    return w;
}

static void on_send(us_t *u, struct io_uring_cqe *cqe) {
    wreq_t *w = u->wq;
    int res = cqe->res;
    u->send_busy = false;
    u->inflight--;
    if (res == -EAGAIN || res == -EINTR) {
        res = 0; /* nothing sent: again */
    } else if (res < 0) {
        u->werr = res;
        /* Nothing after a failed send can reach the peer. */
        while (u->wq != NULL)
            complete_write(u, wq_pop(u), u->closing ? UV_ECANCELED : res);
        return;
    }
    size_t left = (size_t)res;
    while (w->idx < w->nbufs && left >= w->bufs[w->idx].len - w->off) {
        left -= w->bufs[w->idx].len - w->off;
        w->idx++;
        w->off = 0;
    }
    w->off += left;
    if (w->idx < w->nbufs) {
        if (!u->closing)
            start_send(u);
        return; /* closing: finish() cancels it */
    }
    wq_pop(u);
    /* The next one goes first, so a write() from the callback only queues. */
    if (u->wq != NULL && !u->closing)
        start_send(u);
    complete_write(u, w, 0);
    if (u->wq == NULL && u->shut != NULL && !u->shut_busy && !u->closing)
        start_shutdown(u);
}

static int ur_write(wsg_side_t *s, uv_write_t *req, const uv_buf_t *bufs, unsigned nbufs,
                    uv_write_cb cb) {
    us_t *u = s->uring;
    if (u->closing || u->shut != NULL)
        return UV_EPIPE;
    if (u->werr != 0)
        return u->werr;
    if (nbufs == 0)
        return UV_EINVAL;
    wreq_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return UV_ENOMEM;
    w->bufs = nbufs <= 2 ? w->small : malloc(nbufs * sizeof(*bufs));
    if (w->bufs != NULL && nbufs > 1)
        w->iov = malloc(nbufs * sizeof(*w->iov));
    if (w->bufs == NULL || (nbufs > 1 && w->iov == NULL)) {
        wreq_free(w);
        return UV_ENOMEM;
    }
    memcpy(w->bufs, bufs, nbufs * sizeof(*bufs));
    w->nbufs = nbufs;
    w->req = req;
    w->cb = cb;
    /* The public fields a libuv write request has, for callers that look. */
    req->type = UV_WRITE;
    req->handle = (uv_stream_t *)&s->tcp;
    req->cb = cb;
    *u->wq_tail = w;
    u->wq_tail = &w->next;
    if (!u->send_busy)
        start_send(u);
    return 0;
}

/* ---- shutdown ------------------------------------------------------------ */

static void start_shutdown(us_t *u) {
    struct io_uring_sqe *sqe = sqe_get(u->ring);
    if (sqe == NULL) {
        u->werr = UV_ENOMEM;
        work_add(u);
        return;
    }
    io_uring_prep_shutdown(sqe, u->fd, SHUT_WR);
    io_uring_sqe_set_data64(sqe, ud(u, T_SHUT));
    u->shut_busy = true;
    u->inflight++;
}

static void on_shut(us_t *u, struct io_uring_cqe *cqe) {
    uv_shutdown_t *req = u->shut;
    u->shut = NULL;
    u->shut_busy = false;
    u->inflight--;
    if (req != NULL && req->cb != NULL)
        req->cb(req, u->closing ? UV_ECANCELED : cqe->res < 0 ? cqe->res : 0);
}

static int ur_shutdown(wsg_side_t *s, uv_shutdown_t *req, uv_shutdown_cb cb) {
    us_t *u = s->uring;
    if (u->closing || u->shut != NULL)
        return UV_ENOTCONN;
    req->type = UV_SHUTDOWN;
    req->handle = (uv_stream_t *)&s->tcp;
    req->cb = cb;
    u->shut = req;
    if (u->wq == NULL)
        start_shutdown(u);
    return 0;
}

/* ---- close --------------------------------------------------------------- */

/* The last completion has come: cancel what never reached the kernel, free
 * the state, and hand the handle (and the fd) to libuv to close. */
static void finish(us_t *u) {
    wsg_uring_t *r = u->ring;
    wsg_side_t *s = u->side;
    while (u->wq != NULL)
        complete_write(u, wq_pop(u), UV_ECANCELED);
    if (u->shut != NULL) {
        uv_shutdown_t *req = u->shut;
        u->shut = NULL;
        if (req->cb != NULL)
            req->cb(req, UV_ECANCELED);
    }
    while (u->stash != NULL) {
        stash_t *st = u->stash;
        u->stash = st->next;
        count_down(&u->ring->st.stashed, st->len);
        free(st);
    }
    uv_close_cb cb = u->close_cb;
    free(u);
    s->uring = NULL;
    s->ops = &wsg_transport_tcp;
    count_down(&r->st.sides, 1);
    keep_alive(r);
    uv_close((uv_handle_t *)&s->tcp, cb);
}

static void ur_close(wsg_side_t *s, uv_close_cb cb) {
    us_t *u = s->uring;
    if (u->closing)
        return;
    u->closing = true;
    u->reading = false;
    u->close_cb = cb;
    /* A close() of the fd would not end an armed multishot recv (the
     * request holds the file): cancel, and close after its last CQE. */
    if (u->recv_armed && !u->recv_cancel) {
        u->recv_cancel = true;
        cancel(u, T_RECV);
    }
    if (u->send_busy)
        cancel(u, T_SEND);
    if (u->shut_busy)
        cancel(u, T_SHUT);
    work_add(u); /* finish() runs from the loop once nothing is in flight */
}

/* ---- the loop side ------------------------------------------------------- */

static void on_cqe(wsg_uring_t *r, struct io_uring_cqe *cqe) {
    uint64_t d = io_uring_cqe_get_data64(cqe);
    us_t *u = (us_t *)(uintptr_t)(d & ~(uint64_t)T_MASK);
    count_up(&r->st.cqes, 1);
    if (u == NULL)
        return;
    switch (d & T_MASK) {
    case T_RECV:
        on_recv(u, cqe);
        break;
    case T_SEND:
        on_send(u, cqe);
        break;
    case T_SHUT:
        on_shut(u, cqe);
        break;
    case T_CANCEL:
        u->inflight--;
        break;
    }
    if (u->closing && u->inflight == 0)
        work_add(u);
}

static void reap(wsg_uring_t *r) {
    struct io_uring_cqe *cqe;
    /* One at a time: a callback may submit (a full SQ), which must not see
     * a batch we are still walking. */
    while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
        struct io_uring_cqe c = *cqe;
        io_uring_cqe_seen(&r->ring, cqe);
        on_cqe(r, &c);
    }
}

static void run_work(wsg_uring_t *r) {
    /* Bounded: a callback may queue its side again. */
    for (int round = 0; r->work != NULL && round < 8; round++) {
        us_t *list = r->work;
        r->work = NULL;
        while (list != NULL) {
            us_t *u = list;
            list = u->next_work;
            u->queued = false;
            if (u->closing) {
                if (u->inflight == 0)
                    finish(u);
                /* else: its last completion queues it again */
                continue;
            }
            if (u->reading)
                deliver_stash(u);
            if (!u->closing && u->reading && u->stash == NULL && u->end == 0 && !u->recv_armed)
                arm_recv(u);
            if (!u->closing && u->werr != 0 && u->wq != NULL && !u->send_busy)
                while (u->wq != NULL)
                    complete_write(u, wq_pop(u), u->werr);
        }
    }
}

static void flush(wsg_uring_t *r) {
    for (int round = 0; round < 4; round++) {
        run_work(r);
        if (io_uring_sq_ready(&r->ring) == 0)
            break;
        io_uring_submit(&r->ring);
        count_up(&r->st.submits, 1);
        reap(r); /* completed at submission: no wake-up needed for those */
    }
}

static void on_prepare(uv_prepare_t *h) { flush(h->data); }

static void on_ring(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    wsg_uring_t *r = h->data;
    uint64_t n;
    /* Reset before reaping, so a completion from now on wakes us again.
     * The read is a system call too: task work waiting for this thread
     * (COOP_TASKRUN) runs on its way back, so what it completes is reaped
     * here. */
    ssize_t k = read(r->efd, &n, sizeof n);
    (void)k; /* EAGAIN: a spurious wake-up, nothing lost */
    reap(r);
    run_work(r);
}

static int ring_init(struct io_uring *ring) {
    struct io_uring_params p;
    /* COOP_TASKRUN: completions are made when the thread next enters the
     * kernel, without an interrupt; SINGLE_ISSUER (6.0) lets the kernel skip
     * the submission lock. Not DEFER_TASKRUN, though it wakes the thread
     * less: its completions reach the eventfd that wakes the loop late (14
     * to 40 ms each on this machine's Linux 6.18; docs/io.md), and the
     * ring's own fd does not wake epoll for them at all. */
    const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int r = -EINVAL;
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        memset(&p, 0, sizeof(p));
        p.flags = tries[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = CQ_ENTRIES;
        r = io_uring_queue_init_params(SQ_ENTRIES, ring, &p);
        if (r != -EINVAL)
            return r;
    }
    return r;
}

int wsg_uring_new(uv_loop_t *loop, wsg_uring_t **out) {
    wsg_uring_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->efd = -1;
    int e = ring_init(&r->ring);
    if (e < 0) {
        free(r);
        return e;
    }
    r->loop = loop;
    struct io_uring_buf_reg reg = {.ring_entries = BR_ENTRIES, .bgid = BR_GROUP};
    size_t brlen = BR_ENTRIES * sizeof(struct io_uring_buf);
    void *brmem = NULL;
    if (posix_memalign(&brmem, (size_t)sysconf(_SC_PAGESIZE), brlen) != 0 ||
        (r->bufs = malloc((size_t)BR_ENTRIES * BR_SIZE)) == NULL) {
        e = -ENOMEM;
        goto fail;
    }
    r->br = brmem;
    io_uring_buf_ring_init(r->br);
    reg.ring_addr = (uint64_t)(uintptr_t)r->br;
    if ((e = io_uring_register_buf_ring(&r->ring, &reg, 0)) < 0)
        goto fail;
    while (r->nbufs < BR_START)
        grow(r);
    /* An eventfd, not the ring's own fd, under the poll: with DEFER_TASKRUN
     * the ring fd does not wake epoll for work waiting to be run, and
     * without it a completion posted while the thread returns from an
     * interrupted epoll_wait was seen to wake nobody. The eventfd is
     * signalled for both. */
    if ((r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        e = neg_errno();
        goto fail;
    }
    if ((e = io_uring_register_eventfd(&r->ring, r->efd)) < 0)
        goto fail;
    if ((e = uv_poll_init(loop, &r->poll, r->efd)) != 0)
        goto fail;
    r->poll.data = r;
    r->handles++;
    uv_prepare_init(loop, &r->prep);
    r->prep.data = r;
    r->handles++;
    uv_poll_start(&r->poll, UV_READABLE, on_ring);
    uv_prepare_start(&r->prep, on_prepare);
    uv_unref((uv_handle_t *)&r->prep);
    keep_alive(r);
    *out = r;
    return 0;
fail:
    if (r->efd >= 0)
        close(r->efd);
    io_uring_queue_exit(&r->ring);
    free(r->bufs);
    free(brmem);
    free(r);
    return e;
}

static void on_handle_closed(uv_handle_t *h) {
    wsg_uring_t *r = h->data;
    if (--r->handles > 0)
        return;
    /* The listener and every side are gone: nothing names the ring now. */
    io_uring_queue_exit(&r->ring);
    close(r->efd);
    free(r->bufs);
    free(r->br);
    free(r);
}

void wsg_uring_close(wsg_uring_t *r) {
    if (r == NULL)
        return;
    if (!uv_is_closing((uv_handle_t *)&r->poll))
        uv_close((uv_handle_t *)&r->poll, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&r->prep))
        uv_close((uv_handle_t *)&r->prep, on_handle_closed);
}

void wsg_uring_stats(const wsg_uring_t *r, wsg_uring_stats_t *out) {
    if (r == NULL)
        memset(out, 0, sizeof(*out));
    else {
        out->submits = count_get(&r->st.submits);
        out->cqes = count_get(&r->st.cqes);
        out->enobufs = count_get(&r->st.enobufs);
        out->sides = count_get(&r->st.sides);
        out->buffers = count_get(&r->st.buffers);
        out->stashed = count_get(&r->st.stashed);
    }
}

/* ---- sides ----------------------------------------------------------------- */

const struct wsg_transport_ops wsg_transport_uring = {
    .name = "uring",
    .read_start = ur_read_start,
    .read_stop = ur_read_stop,
    .try_write = ur_try_write,
    .write = ur_write,
    .shutdown = ur_shutdown,
    .close = ur_close,
};

int wsg_side_use_uring(wsg_side_t *s, wsg_uring_t *r) {
    uv_os_fd_t fd;
    if (r == NULL || s->ops != &wsg_transport_tcp || s->uring != NULL)
        return UV_EINVAL;
    int e = uv_fileno((uv_handle_t *)&s->tcp, &fd);
    if (e != 0)
        return e;
    us_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return UV_ENOMEM;
    u->ring = r;
    u->side = s;
    u->fd = fd;
    u->wq_tail = &u->wq;
    u->stash_tail = &u->stash;
    u->single = SINGLE_RECVS;
    s->uring = u;
    s->ops = &wsg_transport_uring;
    count_up(&r->st.sides, 1);
    keep_alive(r);
    return 0;
}

/* ---- the probe -------------------------------------------------------------- */

static int read_sysctl(const char *path) {
    FILE *f = fopen(path, "r");
    int v = -1;
    if (f != NULL) {
        if (fscanf(f, "%d", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static bool kernel_at_least(int major, int minor) {
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return false;
    return ma > major || (ma == major && mi >= minor);
}

int wsg_uring_probe(char *why, size_t cap) {
    struct io_uring ring;
    int e = ring_init(&ring);
    if (e < 0) {
        int dis = read_sysctl("/proc/sys/kernel/io_uring_disabled");
        if (dis == 2)
            snprintf(why, cap, "io_uring is disabled by the sysctl kernel.io_uring_disabled = 2");
        else if (e == -EPERM && dis == 1)
            snprintf(why, cap,
                     "io_uring is limited by the sysctl kernel.io_uring_disabled = 1 to the "
                     "group kernel.io_uring_group");
        else if (e == -EPERM)
            snprintf(why, cap, "io_uring_setup is not permitted (a seccomp profile such as "
                               "Docker's default?)");
        else if (e == -ENOSYS)
            snprintf(why, cap, "the kernel has no io_uring (ENOSYS)");
        else
            snprintf(why, cap, "io_uring_setup failed: %s", strerror(-e));
        return e;
    }
    static const struct {
        int op;
        const char *name;
    } need[] = {
        {IORING_OP_RECV, "RECV"},
        {IORING_OP_SEND, "SEND"},
        {IORING_OP_SENDMSG, "SENDMSG"},
        {IORING_OP_SHUTDOWN, "SHUTDOWN"},
        {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    };
    struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
    e = 0;
    if (p == NULL) {
        snprintf(why, cap, "the kernel cannot list its io_uring opcodes (older than 5.6)");
        e = -ENOSYS;
    }
    for (size_t i = 0; e == 0 && i < sizeof need / sizeof need[0]; i++)
        if (!io_uring_opcode_supported(p, need[i].op)) {
            snprintf(why, cap, "the kernel's io_uring has no %s", need[i].name);
            e = -ENOSYS;
        }
    io_uring_free_probe(p);
    if (e == 0) {
        /* Buffer rings (5.19) and multishot recv (6.0) are not opcodes:
         * register a one-entry ring to see. */
        void *mem = NULL;
        struct io_uring_buf_reg reg = {.ring_entries = 1, .bgid = 0};
        if (posix_memalign(&mem, (size_t)sysconf(_SC_PAGESIZE), sizeof(struct io_uring_buf)) != 0) {
            snprintf(why, cap, "out of memory");
            e = -ENOMEM;
        } else {
            reg.ring_addr = (uint64_t)(uintptr_t)mem;
            if ((e = io_uring_register_buf_ring(&ring, &reg, 0)) < 0)
                snprintf(why, cap, "the kernel's io_uring has no buffer rings (older than 5.19)");
            else
                io_uring_unregister_buf_ring(&ring, 0);
        }
        /* Multishot recv has no opcode or flag to probe: a 5.19 kernel
         * would take the request and fail every connection with EINVAL. */
        if (e == 0 && !kernel_at_least(6, 0)) {
            snprintf(why, cap, "the kernel has no multishot recv (older than 6.0)");
            e = -ENOSYS;
        }
        io_uring_queue_exit(&ring);
        free(mem);
        return e;
    }
    io_uring_queue_exit(&ring);
    return e;
}
