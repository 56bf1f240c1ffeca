/*
 * The byte transport under one side of a connection: plain TCP now, TLS
 * later, behind one ops table so the handshake and relay code never know
 * which one they talk through.
 *
 * The interface is libuv's stream interface, narrowed to what wsgate uses:
 * callbacks have libuv's signatures and receive the side's embedded
 * uv_tcp_t as the stream, so a TLS transport can decrypt into the caller's
 * buffers and call the same read callback with plaintext.
 */
#ifndef WSGATE_TRANSPORT_H
#define WSGATE_TRANSPORT_H

#include <uv.h>

typedef struct wsg_side_s wsg_side_t;

struct wsg_transport_ops {
    const char *name;
    /* uv_read_start()/uv_read_stop() semantics. */
    int (*read_start)(wsg_side_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
    int (*read_stop)(wsg_side_t *s);
    /* uv_try_write(): bytes written now (>= 0) or a negative error;
     * UV_EAGAIN when nothing could be written. */
    int (*try_write)(wsg_side_t *s, const uv_buf_t *bufs, unsigned nbufs);
    /* uv_write(): <bufs> must stay valid until <cb>. */
    int (*write)(wsg_side_t *s, uv_write_t *req, const uv_buf_t *bufs, unsigned nbufs,
                 uv_write_cb cb);
    int (*shutdown)(wsg_side_t *s, uv_shutdown_t *req, uv_shutdown_cb cb);
    /* Closes the side; <cb> runs once the handle is closed. */
    void (*close)(wsg_side_t *s, uv_close_cb cb);
};

/* One side (client or backend) of a connection. Embedded in the conn. */
struct wsg_side_s {
    uv_tcp_t tcp;                        /* private: the socket */
    const struct wsg_transport_ops *ops; /* read-only */
    /* Private: the transport's state, the one <ops> names (a side is TLS or
     * on io_uring, never both: only a plain side moves to a ring); NULL for
     * plain TCP on libuv's epoll. Test for TLS with wsg_side_is_tls(). */
    union {
        void *tls;                       /* TLS state (tls.c), NULL once closed */
        struct wsg_uring_side_s *uring;  /* io_uring state (transport_uring.c) */
    };
};

extern const struct wsg_transport_ops wsg_transport_tcp;

/* Sets up <s> as a plain TCP side on <loop>. Returns 0 or a UV_E* code. */
int wsg_side_init_tcp(uv_loop_t *loop, wsg_side_t *s);

/* The io_uring transport (src/net/transport_uring.c): a plain TCP side whose
 * reads and writes go through its worker's ring instead of libuv's epoll. */
extern const struct wsg_transport_ops wsg_transport_uring;
typedef struct wsg_uring_s wsg_uring_t;

/* Moves a connected plain side (wsg_transport_tcp, neither reading nor
 * writing) onto <ring>. Returns 0 or a UV_E* code (the side is unchanged). */
int wsg_side_use_uring(wsg_side_t *s, wsg_uring_t *ring);

#endif /* WSGATE_TRANSPORT_H */
