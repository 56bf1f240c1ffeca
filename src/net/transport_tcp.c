/*
 * Plain TCP transport: the identity mapping onto libuv's stream calls.
 * It exists so that the TLS transport can take its place without the
 * handshake or relay code changing.
 */
#include <wsgate/transport.h>

static int tcp_read_start(wsg_side_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
    return uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
}

static int tcp_read_stop(wsg_side_t *s) { return uv_read_stop((uv_stream_t *)&s->tcp); }

static int tcp_try_write(wsg_side_t *s, const uv_buf_t *bufs, unsigned nbufs) {
    return uv_try_write((uv_stream_t *)&s->tcp, bufs, nbufs);
}

static int tcp_write(wsg_side_t *s, uv_write_t *req, const uv_buf_t *bufs, unsigned nbufs,
                     uv_write_cb cb) {
    return uv_write(req, (uv_stream_t *)&s->tcp, bufs, nbufs, cb);
}

static int tcp_shutdown(wsg_side_t *s, uv_shutdown_t *req, uv_shutdown_cb cb) {
    return uv_shutdown(req, (uv_stream_t *)&s->tcp, cb);
}

static void tcp_close(wsg_side_t *s, uv_close_cb cb) { uv_close((uv_handle_t *)&s->tcp, cb); }

const struct wsg_transport_ops wsg_transport_tcp = {
    .name = "tcp",
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .try_write = tcp_try_write,
    .write = tcp_write,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
};

int wsg_side_init_tcp(uv_loop_t *loop, wsg_side_t *s) {
    s->ops = &wsg_transport_tcp;
    s->tls = NULL; /* and so no ring either */
    return uv_tcp_init(loop, &s->tcp);
}
