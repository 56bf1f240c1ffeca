/*
 * Unit tests for the io_uring transport over a loopback TCP pair in a uv
 * loop: one end is a side on a ring, the other a plain socket the test
 * drives. Under ASan they also show that closing frees the ring, its buffer
 * ring and every side's state. Skipped (77) where the kernel refuses
 * io_uring.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include <wsgate/transport.h>
#include <wsgate/uring.h>

typedef struct {
    uv_loop_t loop;
    wsg_uring_t *ring;
    wsg_side_t side;
    int peer; /* the other end, non-blocking */
    char got[1 << 16];
    size_t ngot;
    int nreads;
    ssize_t last; /* the last nread */
    int eofs;
    int writes_done, write_status;
    int shut_done, shut_status;
    int closed;
    int stop_after; /* read_stop once ngot reaches it, 0: never */
    char abuf[4096];
} fx_t;

static fx_t *F;

static void pair(int *a, int *b) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    ck_assert_int_ge(l, 0);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(l, 1), 0);
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    *b = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(*b, (struct sockaddr *)&sa, sizeof(sa)), 0);
    *a = accept(l, NULL, NULL);
    ck_assert_int_ge(*a, 0);
    close(l);
    fcntl(*b, F_SETFL, fcntl(*b, F_GETFL) | O_NONBLOCK);
}

static void setup(void) {
    int a;
    F = calloc(1, sizeof(*F));
    ck_assert_int_eq(uv_loop_init(&F->loop), 0);
    ck_assert_int_eq(wsg_uring_new(&F->loop, &F->ring), 0);
    pair(&a, &F->peer);
    ck_assert_int_eq(wsg_side_init_tcp(&F->loop, &F->side), 0);
    ck_assert_int_eq(uv_tcp_open(&F->side.tcp, a), 0);
    F->side.tcp.data = F;
    ck_assert_int_eq(wsg_side_use_uring(&F->side, F->ring), 0);
    ck_assert_ptr_eq(F->side.ops, &wsg_transport_uring);
}

static void on_timeout(uv_timer_t *t) {
    *(int *)t->data = 1;
    /* A timer run at the top of an iteration would else leave uv_run to
     * block in its poll. */
    uv_stop(t->loop);
}

/* Runs the loop until *<flag> is set (or, with <flag> NULL, for <ms>);
 * every wait is bounded. Returns whether the flag was set. */
static int run_until(int *flag, uint64_t ms) {
    uv_timer_t t;
    int expired = 0;
    uv_timer_init(&F->loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_timeout, ms, 0);
    while (!expired && (flag == NULL || !*flag))
        uv_run(&F->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&F->loop, UV_RUN_NOWAIT);
    return flag != NULL && *flag;
}

static void on_closed(uv_handle_t *h) {
    fx_t *f = h->data;
    f->closed++;
}

static void teardown(void) {
    if (!F->closed && !uv_is_closing((uv_handle_t *)&F->side.tcp)) {
        F->side.ops->close(&F->side, on_closed);
        ck_assert(run_until(&F->closed, 5000));
    }
    ck_assert_int_eq(F->closed, 1);
    wsg_uring_close(F->ring);
    uv_run(&F->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&F->loop), 0);
    close(F->peer);
    free(F);
    F = NULL;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    fx_t *f = h->data;
    (void)suggested;
    *b = uv_buf_init(f->abuf, sizeof(f->abuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    fx_t *f = s->data;
    ck_assert_ptr_eq(s, (uv_stream_t *)&f->side.tcp);
    f->last = n;
    if (n == UV_EOF) {
        f->eofs++;
        return;
    }
    ck_assert_int_ge(n, 0);
    ck_assert_ptr_eq(b->base, f->abuf);
    ck_assert_uint_le(f->ngot + (size_t)n, sizeof(f->got));
    memcpy(f->got + f->ngot, b->base, (size_t)n);
    f->ngot += (size_t)n;
    f->nreads++;
    if (f->stop_after && f->ngot >= (size_t)f->stop_after)
        f->side.ops->read_stop(&f->side);
}

static int got_at_least(size_t n) { return F->ngot >= n; }

static void on_write(uv_write_t *req, int status) {
    fx_t *f = req->data;
    f->writes_done++;
    f->write_status = status;
}

static void on_shut(uv_shutdown_t *req, int status) {
    fx_t *f = req->data;
    f->shut_done++;
    f->shut_status = status;
}

static void peer_send(const char *s) {
    ck_assert_int_eq(send(F->peer, s, strlen(s), 0), (ssize_t)strlen(s));
}

/* Reads what the peer has now; returns the count (0 when nothing). */
static size_t peer_drain(char *out, size_t cap) {
    size_t n = 0;
    while (n < cap) {
        ssize_t k = recv(F->peer, out + n, cap - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    return n;
}

START_TEST(test_read_delivers_bytes) {
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    peer_send("hello");
    for (int i = 0; i < 100 && !got_at_least(5); i++)
        run_until(NULL, 50);
    ck_assert_uint_eq(F->ngot, 5);
    ck_assert_mem_eq(F->got, "hello", 5);
    peer_send(" world");
    for (int i = 0; i < 100 && !got_at_least(11); i++)
        run_until(NULL, 50);
    ck_assert_mem_eq(F->got, "hello world", 11);
}
END_TEST

START_TEST(test_eof) {
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    peer_send("bye");
    shutdown(F->peer, SHUT_WR);
    ck_assert(run_until(&F->eofs, 5000));
    ck_assert_int_eq(F->eofs, 1);
    ck_assert_uint_eq(F->ngot, 3);
    ck_assert_int_eq(F->last, UV_EOF);
}
END_TEST

START_TEST(test_try_write_and_write_cb_once) {
    uv_buf_t b = uv_buf_init("abc", 3);
    ck_assert_int_eq(F->side.ops->try_write(&F->side, &b, 1), 3);
    uv_write_t req;
    req.data = F;
    uv_buf_t b2[2] = {uv_buf_init("de", 2), uv_buf_init("f", 1)};
    ck_assert_int_eq(F->side.ops->write(&F->side, &req, b2, 2, on_write), 0);
    /* A write is queued: try_write must not jump ahead of it. */
    ck_assert_int_eq(F->side.ops->try_write(&F->side, &b, 1), UV_EAGAIN);
    ck_assert(run_until(&F->writes_done, 5000));
    run_until(NULL, 50);
    ck_assert_int_eq(F->writes_done, 1);
    ck_assert_int_eq(F->write_status, 0);
    char out[16];
    ck_assert_uint_eq(peer_drain(out, sizeof(out)), 6);
    ck_assert_mem_eq(out, "abcdef", 6);
}
END_TEST

/* More than the socket holds while the peer reads nothing: the send comes
 * back short or waits, and the rest must follow in order. */
START_TEST(test_large_write_completes) {
    enum { N = 4 << 20 };
    char *data = malloc(N), *out = malloc(N);
    for (size_t i = 0; i < N; i++)
        data[i] = (char)(i * 131 + (i >> 13));
    uv_write_t req;
    req.data = F;
    uv_buf_t b = uv_buf_init(data, N);
    ck_assert_int_eq(F->side.ops->write(&F->side, &req, &b, 1, on_write), 0);
    run_until(NULL, 20);
    ck_assert_int_eq(F->writes_done, 0); /* 4 MiB cannot be in the kernel yet */
    size_t n = 0;
    uint64_t until = uv_hrtime() + 20 * 1000000000ULL;
    while (n < N && uv_hrtime() < until) {
        n += peer_drain(out + n, N - n);
        run_until(NULL, 1);
    }
    ck_assert_uint_eq(n, N);
    ck_assert(run_until(&F->writes_done, 5000));
    ck_assert_uint_eq(n, N);
    ck_assert_int_eq(F->writes_done, 1);
    ck_assert_int_eq(F->write_status, 0);
    ck_assert(memcmp(data, out, N) == 0);
    free(data);
    free(out);
}
END_TEST

START_TEST(test_close_with_read_armed) {
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    run_until(NULL, 20); /* the recv is in the kernel now */
    wsg_uring_stats_t st;
    wsg_uring_stats(F->ring, &st);
    ck_assert_uint_eq(st.sides, 1);
    F->side.ops->close(&F->side, on_closed);
    ck_assert_int_eq(F->closed, 0); /* never inside close() */
    ck_assert(run_until(&F->closed, 5000));
    ck_assert_int_eq(F->closed, 1);
    ck_assert_ptr_null(F->side.uring);
    wsg_uring_stats(F->ring, &st);
    ck_assert_uint_eq(st.sides, 0);
    /* The peer sees the close: the fd really went. */
    char c;
    for (int i = 0; i < 100; i++) {
        ssize_t k = recv(F->peer, &c, 1, 0);
        if (k == 0 || (k < 0 && errno != EAGAIN))
            return;
        run_until(NULL, 10);
    }
    ck_abort_msg("the peer never saw the close");
}
END_TEST

START_TEST(test_close_cancels_pending_write) {
    enum { N = 8 << 20 };
    char *data = calloc(1, N);
    int small = 4096;
    setsockopt(F->peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    uv_write_t req;
    req.data = F;
    uv_buf_t b = uv_buf_init(data, N);
    ck_assert_int_eq(F->side.ops->write(&F->side, &req, &b, 1, on_write), 0);
    run_until(NULL, 20);
    F->side.ops->close(&F->side, on_closed);
    ck_assert(run_until(&F->closed, 5000));
    ck_assert_int_eq(F->writes_done, 1);
    ck_assert_int_eq(F->write_status, UV_ECANCELED);
    free(data);
}
END_TEST

START_TEST(test_read_stop_and_start) {
    F->stop_after = 1;
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    peer_send("a");
    for (int i = 0; i < 100 && !got_at_least(1); i++)
        run_until(NULL, 50);
    ck_assert_uint_eq(F->ngot, 1);
    /* Stopped inside the callback: nothing more until read_start. */
    peer_send("bc");
    run_until(NULL, 100);
    ck_assert_uint_eq(F->ngot, 1);
    F->stop_after = 0;
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    for (int i = 0; i < 100 && !got_at_least(3); i++)
        run_until(NULL, 50);
    ck_assert_uint_eq(F->ngot, 3);
    ck_assert_mem_eq(F->got, "abc", 3);
    /* And stopped outside a callback, then started again. */
    F->side.ops->read_stop(&F->side);
    peer_send("de");
    run_until(NULL, 100);
    ck_assert_uint_eq(F->ngot, 3);
    F->side.ops->read_start(&F->side, on_alloc, on_read);
    for (int i = 0; i < 100 && !got_at_least(5); i++)
        run_until(NULL, 50);
    ck_assert_mem_eq(F->got, "abcde", 5);
}
END_TEST

START_TEST(test_shutdown_after_write) {
    uv_write_t req;
    uv_shutdown_t sreq;
    req.data = F;
    sreq.data = F;
    uv_buf_t b = uv_buf_init("xyz", 3);
    ck_assert_int_eq(F->side.ops->write(&F->side, &req, &b, 1, on_write), 0);
    ck_assert_int_eq(F->side.ops->shutdown(&F->side, &sreq, on_shut), 0);
    ck_assert(run_until(&F->shut_done, 5000));
    ck_assert_int_eq(F->writes_done, 1);
    ck_assert_int_eq(F->shut_status, 0);
    char out[8];
    ck_assert_uint_eq(peer_drain(out, sizeof(out)), 3);
    ck_assert_int_eq(recv(F->peer, out, 1, 0), 0); /* the FIN after the bytes */
}
END_TEST

/* ---- many sides: the buffer ring runs dry and grows ----------------------- */

enum { MANY = 48, MANY_BYTES = 1000 };

typedef struct {
    wsg_side_t side;
    int peer;
    size_t got;
    int closed;
    char buf[2048];
} many_t;

static void many_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    many_t *m = h->data;
    (void)suggested;
    *b = uv_buf_init(m->buf, sizeof(m->buf));
}

static size_t many_total;

static void many_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    many_t *m = s->data;
    (void)b;
    ck_assert_int_ge(n, 0);
    m->got += (size_t)n;
    many_total += (size_t)n;
}

static void many_closed(uv_handle_t *h) {
    many_t *m = h->data;
    m->closed = 1;
}

/* More sides with bytes waiting than the ring starts with buffers: the
 * receives that find it empty end with ENOBUFS, the ring grows, they are
 * armed again, and every byte arrives. */
START_TEST(test_buffer_ring_grows_on_enobufs) {
    uv_loop_t loop;
    wsg_uring_t *ring;
    many_t *m = calloc(MANY, sizeof(*m));
    char data[MANY_BYTES];
    memset(data, 'x', sizeof(data));
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(wsg_uring_new(&loop, &ring), 0);
    wsg_uring_stats_t st;
    wsg_uring_stats(ring, &st);
    uint64_t start_bufs = st.buffers;
    ck_assert_uint_lt(start_bufs, MANY);
    many_total = 0;
    for (int i = 0; i < MANY; i++) {
        int a;
        pair(&a, &m[i].peer);
        ck_assert_int_eq(wsg_side_init_tcp(&loop, &m[i].side), 0);
        ck_assert_int_eq(uv_tcp_open(&m[i].side.tcp, a), 0);
        m[i].side.tcp.data = &m[i];
        ck_assert_int_eq(wsg_side_use_uring(&m[i].side, ring), 0);
        ck_assert_int_eq(send(m[i].peer, data, sizeof(data), 0), (ssize_t)sizeof(data));
    }
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(m[i].side.ops->read_start(&m[i].side, many_alloc, many_read), 0);
    uint64_t until = uv_hrtime() + 10 * 1000000000ULL;
    while (many_total < (size_t)MANY * MANY_BYTES && uv_hrtime() < until)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < MANY; i++)
        ck_assert_uint_eq(m[i].got, MANY_BYTES);
    wsg_uring_stats(ring, &st);
    ck_assert_uint_ge(st.enobufs, 1);
    ck_assert_uint_gt(st.buffers, start_bufs);
    for (int i = 0; i < MANY; i++)
        m[i].side.ops->close(&m[i].side, many_closed);
    until = uv_hrtime() + 10 * 1000000000ULL;
    for (int i = 0; i < MANY; i++)
        while (!m[i].closed && uv_hrtime() < until)
            uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < MANY; i++) {
        ck_assert(m[i].closed);
        close(m[i].peer);
    }
    wsg_uring_close(ring);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    free(m);
}
END_TEST

/* A byte the peer sends while the loop is blocked must wake it at once.
 * The ring is driven through its eventfd: with IORING_SETUP_DEFER_TASKRUN,
 * Linux 6.18 signalled that eventfd a grace period late (16 to 40 ms per
 * completion), which the 50 ms slices of the tests above hide. The bound
 * is on the median of a few rounds and is 5x under the lateness it
 * catches; the peer sends from a thread that waits 2 ms first, so the loop
 * is asleep in epoll_wait by then. */
typedef struct {
    int fd;
    uint64_t sent_at;
} late_peer_t;

static void *late_send(void *arg) {
    late_peer_t *p = arg;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    p->sent_at = uv_hrtime();
    ck_assert_int_eq(send(p->fd, "x", 1, 0), 1);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_completion_wakes_the_loop) {
    enum { ROUNDS = 9 };
    uint64_t lat[ROUNDS];
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    run_until(NULL, 1); /* the receive is armed */
    for (int i = 0; i < ROUNDS; i++) {
        late_peer_t p = {.fd = F->peer};
        pthread_t th;
        uv_timer_t t; /* the bound: 1 s */
        int expired = 0;
        size_t want = F->ngot + 1;
        uv_timer_init(&F->loop, &t);
        t.data = &expired;
        uv_timer_start(&t, on_timeout, 1000, 0);
        ck_assert_int_eq(pthread_create(&th, NULL, late_send, &p), 0);
        while (!expired && F->ngot < want)
            uv_run(&F->loop, UV_RUN_ONCE);
        uint64_t now = uv_hrtime();
        uv_close((uv_handle_t *)&t, NULL);
        uv_run(&F->loop, UV_RUN_NOWAIT);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_uint_eq(F->ngot, want);
        lat[i] = now - p.sent_at;
    }
    qsort(lat, ROUNDS, sizeof(lat[0]), cmp_u64);
    ck_assert_msg(lat[ROUNDS / 2] < 5 * 1000 * 1000ULL,
                  "median wake-up %.1f ms after the peer's send (min %.1f, max %.1f)",
                  lat[ROUNDS / 2] / 1e6, lat[0] / 1e6, lat[ROUNDS - 1] / 1e6);
}
END_TEST

/* Backpressure: a caller that stops reading after 16 KiB while the peer has
 * sent 1 MiB leaves at most a buffer or two received and waiting (the
 * side's stash). A multishot recv left armed until the loop's next
 * submission filled every buffer of the ring first (240 KiB and more here,
 * megabytes under a relay's sends). */
START_TEST(test_read_stop_bounds_what_is_received) {
    static char data[1 << 20];
    size_t sent = 0;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 23);
    F->stop_after = 16384;
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    while (sent < sizeof(data)) {
        ssize_t k = send(F->peer, data + sent, sizeof(data) - sent, 0);
        if (k <= 0)
            break; /* the socket buffers are full */
        sent += (size_t)k;
    }
    ck_assert_uint_gt(sent, 256 * 1024);
    for (int i = 0; i < 100 && !got_at_least(16384); i++)
        run_until(NULL, 20);
    run_until(NULL, 100); /* whatever else would arrive */
    wsg_uring_stats_t st;
    wsg_uring_stats(F->ring, &st);
    ck_assert_uint_le(F->ngot, 16384 + sizeof(F->abuf));
    ck_assert_msg(st.stashed <= 2 * 16384, "%llu bytes received past the stop",
                  (unsigned long long)st.stashed);
    /* Reading again: the bytes go on in order (as many as got[] holds). */
    F->stop_after = (int)(sizeof(F->got) - sizeof(F->abuf));
    ck_assert_int_eq(F->side.ops->read_start(&F->side, on_alloc, on_read), 0);
    for (int i = 0; i < 200 && !got_at_least((size_t)F->stop_after); i++)
        run_until(NULL, 20);
    ck_assert_uint_ge(F->ngot, (size_t)F->stop_after);
    ck_assert_mem_eq(F->got, data, F->ngot);
}
END_TEST

Suite *transport_uring_suite(void) {
    Suite *s = suite_create("transport_uring");
    TCase *tc = tcase_create("io");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_read_delivers_bytes);
    tcase_add_test(tc, test_eof);
    tcase_add_test(tc, test_try_write_and_write_cb_once);
    tcase_add_test(tc, test_large_write_completes);
    tcase_add_test(tc, test_close_with_read_armed);
    tcase_add_test(tc, test_close_cancels_pending_write);
    tcase_add_test(tc, test_read_stop_and_start);
    tcase_add_test(tc, test_shutdown_after_write);
    tcase_add_test(tc, test_completion_wakes_the_loop);
    tcase_add_test(tc, test_read_stop_bounds_what_is_received);
    suite_add_tcase(s, tc);
    tc = tcase_create("many");
    tcase_add_test(tc, test_buffer_ring_grows_on_enobufs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    char why[160];
    if (wsg_uring_probe(why, sizeof(why)) != 0) {
        printf("skipped: %s\n", why);
        return 77;
    }
    SRunner *sr = srunner_create(transport_uring_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
