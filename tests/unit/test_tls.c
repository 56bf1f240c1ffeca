/*
 * Unit tests for the TLS module: context loading and its error messages,
 * and the TLS transport driven on a real libuv loop over 127.0.0.1 with
 * both ends going through wsg_transport_tls (or a raw TCP peer where the
 * point is to misbehave).
 *
 * A throwaway PKI (two CAs, leaf certificates for several names, an
 * expired one, an encrypted key) is generated with the OpenSSL API into a
 * temporary directory by main() before the suite runs, and removed after.
 * No key is ever committed. Every loop test ends with uv_loop_close() == 0
 * and runs under a watchdog timer.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include <wsgate/tls.h>
#include <wsgate/transport.h>

/* ---- the throwaway PKI ---------------------------------------------------- */

static char certdir[64];

static const char *const pki_files[] = {
    "ca1.pem",     "ca2.pem",     "local.pem", "local.key", "default.pem", "default.key",
    "a.pem",       "a.key",       "wild.pem",  "wild.key",  "other.pem",   "other.key",
    "expired.pem", "expired.key", "bad.pem",   "enc.key",
};

/* Path of a PKI file; a few rotating buffers so several can be live. */
static const char *P(const char *name) {
    static char bufs[8][128];
    static unsigned n;
    char *b = bufs[n++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", certdir, name);
    return b;
}

static void die(const char *what) {
    fprintf(stderr, "test PKI: %s failed\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value) {
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (e == NULL || X509_add_ext(x, e, -1) != 1)
        die("X509_add_ext");
    X509_EXTENSION_free(e);
}

/* A certificate for <key>, valid from now+from_s to now+to_s seconds,
 * signed by <issuer>/<ikey> or self-signed when issuer is NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer, EVP_PKEY *ikey,
                       int ca, long from_s, long to_s) {
    static long serial = 1;
    X509 *x = X509_new();
    X509V3_CTX v3;

    if (x == NULL)
        die("X509_new");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : n);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    add_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    add_ext(x, &v3, NID_subject_key_identifier, "hash");
    if (ca) {
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, &v3, NID_authority_key_identifier, "keyid");
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
    }
    if (san != NULL)
        add_ext(x, &v3, NID_subject_alt_name, san);
    if (X509_sign(x, ikey != NULL ? ikey : key, EVP_sha256()) == 0)
        die("X509_sign");
    return x;
}

static void write_cert(const char *name, X509 *x, X509 *chain) {
    FILE *f = fopen(P(name), "w");
    if (f == NULL || PEM_write_X509(f, x) != 1 || (chain && PEM_write_X509(f, chain) != 1))
        die(name);
    fclose(f);
}

static void write_key(const char *name, EVP_PKEY *k, const char *pass) {
    FILE *f = fopen(P(name), "w");
    const EVP_CIPHER *c = pass ? EVP_aes_128_cbc() : NULL;
    if (f == NULL || PEM_write_PrivateKey(f, k, c, (unsigned char *)(uintptr_t)pass,
                                          pass ? (int)strlen(pass) : 0, NULL, NULL) != 1)
        die(name);
    fclose(f);
}

static void leaf(const char *base, const char *cn, const char *san, X509 *ca, EVP_PKEY *cakey,
                 long from_s, long to_s, int with_chain) {
    char cert[64], key[64];
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL)
        die("EVP_EC_gen");
    X509 *x = make_cert(k, cn, san, ca, cakey, 0, from_s, to_s);
    snprintf(cert, sizeof(cert), "%s.pem", base);
    snprintf(key, sizeof(key), "%s.key", base);
    write_cert(cert, x, with_chain ? ca : NULL);
    write_key(key, k, NULL);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void make_pki(void) {
    const long day = 86400;
    EVP_PKEY *k1 = EVP_EC_gen("P-256"), *k2 = EVP_EC_gen("P-256");
    if (k1 == NULL || k2 == NULL)
        die("EVP_EC_gen");
    X509 *ca1 = make_cert(k1, "wsgate test CA 1", NULL, NULL, NULL, 1, -day, 30 * day);
    X509 *ca2 = make_cert(k2, "wsgate test CA 2", NULL, NULL, NULL, 1, -day, 30 * day);
    write_cert("ca1.pem", ca1, NULL);
    write_cert("ca2.pem", ca2, NULL);
    leaf("local", "localhost", "DNS:localhost,IP:127.0.0.1", ca1, k1, -day, 30 * day, 1);
    leaf("default", "default.test", "DNS:default.test", ca1, k1, -day, 30 * day, 0);
    leaf("a", "a.test", "DNS:a.test", ca1, k1, -day, 30 * day, 0);
    leaf("wild", "*.b.test", "DNS:*.b.test", ca1, k1, -day, 30 * day, 0);
    leaf("other", "localhost", "DNS:localhost,IP:127.0.0.1", ca2, k2, -day, 30 * day, 0);
    leaf("expired", "localhost", "DNS:localhost", ca1, k1, -10 * day, -day, 0);
    write_key("enc.key", k1, "secret");
    FILE *f = fopen(P("bad.pem"), "w");
    if (f == NULL)
        die("bad.pem");
    fputs("this is not a certificate\n", f);
    fclose(f);
    X509_free(ca1);
    X509_free(ca2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

static void remove_pki(void) {
    for (size_t i = 0; i < sizeof(pki_files) / sizeof(pki_files[0]); i++)
        unlink(P(pki_files[i]));
    rmdir(certdir);
}

/* ---- contexts ------------------------------------------------------------- */

static wsg_tls_conf_t server_conf(const char *cert, const char *key) {
    wsg_tls_conf_t c = {.cert = (char *)P(cert), .key = (char *)P(key), .min_version = 0};
    return c;
}

static wsg_tls_ctx_t *server_ctx(const char *cert, const char *key, wsg_sni_conf_t *sni,
                                 size_t nsni, int min_version) {
    char err[WSG_TLS_ERR_MAX];
    wsg_tls_ctx_t *ctx = NULL;
    wsg_tls_conf_t c = server_conf(cert, key);
    c.sni = sni;
    c.nsni = nsni;
    c.min_version = min_version;
    int r = wsg_tls_server_ctx_new(&c, &ctx, err, sizeof(err));
    ck_assert_msg(r == 0, "server ctx: %s", err);
    return ctx;
}

static wsg_tls_ctx_t *client_ctx(const char *ca, int verify, const char *server_name) {
    char err[WSG_TLS_ERR_MAX];
    wsg_tls_ctx_t *ctx = NULL;
    wsg_pool_tls_conf_t c = {.enabled = true,
                             .ca = ca ? (char *)P(ca) : NULL,
                             .verify = verify,
                             .server_name = (char *)server_name};
    int r = wsg_tls_client_ctx_new(&c, &ctx, err, sizeof(err));
    ck_assert_msg(r == 0, "client ctx: %s", err);
    return ctx;
}

/* Expects a load failure whose message contains each of <want> (NULL
 * terminated). */
static void expect_load_error(const wsg_tls_conf_t *c, const char *const *want) {
    char err[WSG_TLS_ERR_MAX] = "";
    wsg_tls_ctx_t *ctx = (wsg_tls_ctx_t *)(uintptr_t)1;
    int r = wsg_tls_server_ctx_new(c, &ctx, err, sizeof(err));
    ck_assert_int_eq(r, UV_EINVAL);
    ck_assert_ptr_null(ctx);
    for (; *want != NULL; want++)
        ck_assert_msg(strstr(err, *want) != NULL, "error \"%s\" lacks \"%s\"", err, *want);
    ck_assert_int_eq(wsg_tls_check_conf(c, err, sizeof(err)), UV_EINVAL);
    ck_assert_uint_eq(ERR_peek_error(), 0); /* nothing left for the next connection */
}

START_TEST(test_tls_load_ok) {
    char err[WSG_TLS_ERR_MAX] = "untouched";
    wsg_sni_conf_t sni[] = {{(char *)"a.test", (char *)P("a.pem"), (char *)P("a.key")},
                            {(char *)"*.b.test", (char *)P("wild.pem"), (char *)P("wild.key")}};
    wsg_tls_conf_t c = server_conf("local.pem", "local.key");
    c.sni = sni;
    c.nsni = 2;
    ck_assert_int_eq(wsg_tls_check_conf(&c, err, sizeof(err)), 0);
    ck_assert_str_eq(err, "untouched");
    c.min_version = 0x0304;
    ck_assert_int_eq(wsg_tls_check_conf(&c, err, sizeof(err)), 0);
    wsg_tls_ctx_t *ctx = client_ctx("ca1.pem", 1, NULL);
    ck_assert_ptr_eq(wsg_tls_ctx_ref(ctx), ctx);
    wsg_tls_ctx_unref(ctx);
    wsg_tls_ctx_unref(ctx);
    wsg_tls_ctx_unref(NULL);
    ctx = client_ctx(NULL, 1, "backend.test"); /* system trust store */
    wsg_tls_ctx_unref(ctx);
}
END_TEST

START_TEST(test_tls_load_unreadable_file) {
    wsg_tls_conf_t c = server_conf("missing.pem", "local.key");
    expect_load_error(
        &c, (const char *const[]){"missing.pem", "cannot open certificate", "No such file", NULL});
    c = server_conf("local.pem", "missing.key");
    expect_load_error(&c, (const char *const[]){"missing.key", "cannot open private key", NULL});
    c = server_conf("bad.pem", "local.key");
    expect_load_error(&c, (const char *const[]){"bad.pem", "no PEM certificate", NULL});
}
END_TEST

START_TEST(test_tls_load_key_mismatch) {
    wsg_tls_conf_t c = server_conf("a.pem", "default.key");
    expect_load_error(
        &c, (const char *const[]){"default.key", "does not match certificate", "a.pem", NULL});
}
END_TEST

START_TEST(test_tls_load_expired) {
    wsg_tls_conf_t c = server_conf("expired.pem", "expired.key");
    expect_load_error(&c, (const char *const[]){"expired.pem", "certificate expired on", NULL});
}
END_TEST

START_TEST(test_tls_load_encrypted_key_refused) {
    /* No passphrase support: it must fail, never prompt on a terminal. */
    wsg_tls_conf_t c = server_conf("ca1.pem", "enc.key");
    expect_load_error(&c, (const char *const[]){"enc.key", "no usable private key", NULL});
}
END_TEST

START_TEST(test_tls_load_sni_error_names_sni_file) {
    wsg_sni_conf_t sni[] = {{(char *)"a.test", (char *)P("a.pem"), (char *)P("a.key")},
                            {(char *)"*.b.test", (char *)P("wild.pem"), (char *)P("a.key")}};
    wsg_tls_conf_t c = server_conf("local.pem", "local.key");
    c.sni = sni;
    c.nsni = 2;
    expect_load_error(&c, (const char *const[]){"a.key", "does not match", "wild.pem", NULL});
}
END_TEST

START_TEST(test_tls_load_bad_min_version) {
    wsg_tls_conf_t c = server_conf("local.pem", "local.key");
    c.min_version = 0x0302;
    expect_load_error(&c, (const char *const[]){"min_version", NULL});
}
END_TEST

START_TEST(test_tls_load_client_ca_errors) {
    char err[WSG_TLS_ERR_MAX] = "";
    wsg_tls_ctx_t *ctx = NULL;
    wsg_pool_tls_conf_t c = {.enabled = true, .ca = (char *)P("nope-ca.pem"), .verify = true};
    ck_assert_int_eq(wsg_tls_client_ctx_new(&c, &ctx, err, sizeof(err)), UV_EINVAL);
    ck_assert_ptr_null(ctx);
    ck_assert_msg(strstr(err, "nope-ca.pem: cannot open CA file") != NULL, "%s", err);
    c.ca = (char *)P("bad.pem");
    ck_assert_int_eq(wsg_tls_client_ctx_new(&c, &ctx, err, sizeof(err)), UV_EINVAL);
    ck_assert_msg(strstr(err, "bad.pem: no usable CA certificate") != NULL, "%s", err);
}
END_TEST

/* ---- loop harness ----------------------------------------------------------- */

enum { MODE_EXCHANGE, MODE_PING };

typedef struct tp_s tp_t;

typedef struct tpeer_s {
    wsg_side_t side; /* first: tcp.data points at the peer */
    tp_t *tp;
    int server;
    /* what this peer sends */
    size_t total, next, acked, inflight;
    uint32_t rng;
    int wcbs, werr, wcancel;
    /* what it receives */
    size_t received;
    int nreads, zero_reads, pause_every, small_every;
    int end; /* read end reported (0: none yet) */
    int ends;
    uv_timer_t resume;
    char rbuf[65536];
    /* handshake */
    int hs_calls, hs_status;
    char err[256];
    char peer_cn[128];
    char version[32];
    char alpn[16];
    int reused;
    /* ending */
    uv_shutdown_t shut;
    int shut_sent, shut_calls, shut_status;
    int close_calls;
    int opened;
} tpeer_t;

struct tp_s {
    uv_loop_t loop;
    uv_tcp_t lst;
    uv_timer_t watchdog, later;
    uv_connect_t creq;
    tpeer_t s, c;
    int mode;
    wsg_tls_ctx_t *sctx, *cctx;
    const char *name; /* client's server name */
    size_t qlimit;    /* bytes a peer keeps queued */
    size_t piece_max;
    int server_reads_late; /* backpressure: the server reads only after `later` fires */
    int renegotiate;       /* ping mode: the client asks for a renegotiation instead */
    int small_buffers;
    void (*client_setup)(tp_t *);
    SSL_SESSION *resume_with; /* client: resume this session */
    SSL_SESSION *session;     /* client: the session it got */
    size_t acked_when_checked;
    int finished;
};

static uint8_t pattern(int dir, size_t i) {
    return (uint8_t)(i ^ (i >> 8) ^ (i >> 16) ^ (dir ? 0xA5u : 0x3Cu));
}

static uint32_t rnd(uint32_t *s) {
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static tpeer_t *peer_of(const void *h) {
    return (tpeer_t *)((const uv_handle_t *)h)->data;
}
static tpeer_t *other(tpeer_t *p) {
    return p->server ? &p->tp->c : &p->tp->s;
}

static void on_timer_closed(uv_handle_t *h) {
    (void)h;
}

static void finish(tp_t *tp) {
    if (tp->finished)
        return;
    tp->finished = 1;
    uv_close((uv_handle_t *)&tp->lst, NULL);
    uv_close((uv_handle_t *)&tp->watchdog, NULL);
    uv_close((uv_handle_t *)&tp->later, NULL);
    uv_close((uv_handle_t *)&tp->s.resume, on_timer_closed);
    uv_close((uv_handle_t *)&tp->c.resume, on_timer_closed);
}

static void on_side_closed(uv_handle_t *h) {
    tpeer_t *p = peer_of(h);
    p->close_calls++;
    ck_assert_ptr_null(p->side.tls); /* the TLS state is gone before the callback */
    tpeer_t *q = other(p);
    if (q->close_calls > 0 || !q->opened)
        finish(p->tp);
}

static void close_peer(tpeer_t *p) {
    if (p->close_calls == 0 && p->side.tls != NULL) {
        snprintf(p->err, sizeof(p->err), "%s", wsg_tls_last_error(&p->side));
        p->side.ops->close(&p->side, on_side_closed);
    }
}

typedef struct {
    uv_write_t req;
    tpeer_t *p;
    size_t len;
    char data[];
} tw_t;

static void maybe_shutdown(tpeer_t *p);
static void send_more(tpeer_t *p);

static void on_tw(uv_write_t *req, int status) {
    tw_t *w = (tw_t *)(void *)req;
    tpeer_t *p = w->p;
    ck_assert_ptr_eq(req->handle, (uv_stream_t *)&p->side.tcp);
    p->inflight -= w->len;
    p->wcbs++;
    if (status == 0)
        p->acked += w->len;
    else if (status == UV_ECANCELED)
        p->wcancel++;
    else
        p->werr++;
    free(w);
    if (status == 0 && p->tp->mode == MODE_EXCHANGE) {
        send_more(p);
        maybe_shutdown(p);
    }
}

/* As conn.c sends: try_write when nothing is queued, write the rest. */
static void send_bytes(tpeer_t *p, const char *data, size_t n) {
    size_t off = 0;
    if (p->inflight == 0) {
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)data, (unsigned)n);
        int k = p->side.ops->try_write(&p->side, &b, 1);
        ck_assert_msg(k > 0 || k == UV_EAGAIN, "try_write: %s", uv_strerror(k));
        if (k > 0)
            off = (size_t)k;
    }
    p->acked += off;
    if (off == n)
        return;
    tw_t *w = malloc(sizeof(*w) + n - off);
    ck_assert_ptr_nonnull(w);
    w->p = p;
    w->len = n - off;
    memcpy(w->data, data + off, n - off);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int r = p->side.ops->write(&p->side, &w->req, &b, 1, on_tw);
    ck_assert_msg(r == 0, "write: %s", uv_strerror(r));
    p->inflight += w->len;
}

static void send_more(tpeer_t *p) {
    static char piece[65536];
    while (p->next < p->total && p->inflight < p->tp->qlimit && p->close_calls == 0) {
        size_t n = 1 + rnd(&p->rng) % p->tp->piece_max;
        if (n > p->total - p->next)
            n = p->total - p->next;
        for (size_t i = 0; i < n; i++)
            piece[i] = (char)pattern(p->server, p->next + i);
        p->next += n;
        send_bytes(p, piece, n);
    }
}

static void on_shut(uv_shutdown_t *req, int status) {
    tpeer_t *p = (tpeer_t *)(void *)((char *)req - offsetof(tpeer_t, shut));
    ck_assert_ptr_eq(req->handle, (uv_stream_t *)&p->side.tcp);
    p->shut_calls++;
    p->shut_status = status;
    if (p->end != 0 || p->tp->mode == MODE_PING)
        close_peer(p);
}

/* Exchange mode: once everything went both ways, close_notify + FIN. */
static void maybe_shutdown(tpeer_t *p) {
    if (p->shut_sent || p->acked != p->total || p->received != other(p)->total)
        return;
    p->shut_sent = 1;
    ck_assert_int_eq(p->side.ops->shutdown(&p->side, &p->shut, on_shut), 0);
    ck_assert_int_eq(p->shut_calls, 0); /* never inside the call */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    tpeer_t *p = peer_of(h);
    ck_assert_uint_gt(suggested, 0);
    size_t n = sizeof(p->rbuf);
    /* Small buffers now and then leave decrypted bytes inside OpenSSL. */
    if (p->small_every && p->nreads % p->small_every == 0)
        n = 1 + rnd(&p->rng) % 300;
    *buf = uv_buf_init(p->rbuf, (unsigned)n);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void on_resume(uv_timer_t *t) {
    tpeer_t *p = t->data;
    if (p->close_calls == 0 && p->end == 0)
        ck_assert_int_eq(p->side.ops->read_start(&p->side, on_alloc, on_read), 0);
}

static void ping_client_got(tpeer_t *p) {
    SSL *ssl = wsg_tls_ssl(&p->side);
    p->reused = SSL_session_reused(ssl);
    p->tp->session = SSL_get1_session(ssl);
    /* close_notify first: OpenSSL marks the session of an SSL freed
     * without it as not resumable. */
    p->shut_sent = 1;
    ck_assert_int_eq(p->side.ops->shutdown(&p->side, &p->shut, on_shut), 0);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    tpeer_t *p = peer_of(st);
    tp_t *tp = p->tp;

    ck_assert_int_eq(p->end, 0); /* nothing after the end */
    if (nread == 0) {
        p->zero_reads++;
        return;
    }
    if (nread < 0) {
        p->end = (int)nread;
        p->ends++;
        snprintf(p->err, sizeof(p->err), "%s", wsg_tls_last_error(&p->side));
        /* Exchange: an EOF may overtake our own last write callbacks; the
         * side closes once its shutdown completed too (on_shut). */
        if (tp->mode == MODE_PING || p->shut_calls > 0 || p->end != UV_EOF)
            close_peer(p);
        return;
    }
    ck_assert_ptr_eq(buf->base, p->rbuf);
    if (tp->mode == MODE_PING) {
        ck_assert_uint_le(p->received + (size_t)nread, 4);
        memcpy(p->rbuf + 1024 + p->received, buf->base, (size_t)nread);
        p->received += (size_t)nread;
        if (p->received < 4)
            return;
        if (p->server) {
            ck_assert_int_eq(memcmp(p->rbuf + 1024, "ping", 4), 0);
            send_bytes(p, "pong", 4);
        } else {
            ck_assert_int_eq(memcmp(p->rbuf + 1024, "pong", 4), 0);
            if (!tp->renegotiate) /* else: read on, the refusal comes */
                ping_client_got(p);
        }
        return;
    }
    for (ssize_t i = 0; i < nread; i++)
        if ((uint8_t)buf->base[i] != pattern(!p->server, p->received + (size_t)i))
            ck_abort_msg("%s: byte %zu differs", p->server ? "server" : "client",
                         p->received + (size_t)i);
    p->received += (size_t)nread;
    p->nreads++;
    ck_assert_uint_le(p->received, other(p)->total);
    if (p->pause_every && p->nreads % p->pause_every == 0) {
        ck_assert_int_eq(p->side.ops->read_stop(&p->side), 0);
        uv_timer_start(&p->resume, on_resume, 1, 0);
    }
    maybe_shutdown(p);
}

static void peer_read_start(tpeer_t *p) {
    ck_assert_int_eq(p->side.ops->read_start(&p->side, on_alloc, on_read), 0);
}

static void on_client_hs(wsg_side_t *s, int status) {
    tpeer_t *p = (tpeer_t *)(void *)s;
    p->hs_calls++;
    p->hs_status = status;
    ck_assert_int_eq(status == 0, wsg_tls_handshake_done(s));
    if (status < 0) {
        close_peer(p);
        return;
    }
    X509 *x = SSL_get0_peer_certificate(wsg_tls_ssl(s));
    if (x != NULL)
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, p->peer_cn,
                                  sizeof(p->peer_cn));
    snprintf(p->version, sizeof(p->version), "%s", wsg_tls_version(s));
    ck_assert_str_ne(wsg_tls_cipher(s), "");
    const unsigned char *alpn;
    unsigned alen;
    SSL_get0_alpn_selected(wsg_tls_ssl(s), &alpn, &alen);
    snprintf(p->alpn, sizeof(p->alpn), "%.*s", (int)alen, (const char *)alpn);
    if (p->tp->renegotiate) {
        /* Our client context refuses renegotiation too: lift that for
         * this SSL only. The next SSL_read sends the new ClientHello. */
        SSL *ssl = wsg_tls_ssl(s);
        peer_read_start(p);
        send_bytes(p, "ping", 4);
        ck_assert_uint_eq(p->acked, 4);
        SSL_clear_options(ssl, SSL_OP_NO_RENEGOTIATION);
        ck_assert_int_eq(SSL_renegotiate(ssl), 1);
        return;
    }
    if (p->tp->mode == MODE_PING) {
        peer_read_start(p);
        send_bytes(p, "ping", 4);
    }
}

static void on_server_hs(wsg_side_t *s, int status) {
    tpeer_t *p = (tpeer_t *)(void *)s;
    p->hs_calls++;
    p->hs_status = status;
    snprintf(p->version, sizeof(p->version), "%s", wsg_tls_version(s));
}

static void on_later(uv_timer_t *t) {
    tp_t *tp = t->data;
    /* Backpressure: the server has not read a byte, so the client's write
     * callbacks cannot all have run; what did run is bounded by what the
     * kernel's small buffers could take. */
    tp->acked_when_checked = tp->c.acked;
    ck_assert_uint_lt(tp->c.acked, tp->c.total / 4);
    ck_assert_uint_gt(tp->c.inflight, 0);
    uv_buf_t b = uv_buf_init((char *)"x", 1);
    ck_assert_int_eq(tp->c.side.ops->try_write(&tp->c.side, &b, 1), UV_EAGAIN);
    peer_read_start(&tp->s);
}

static void on_connection(uv_stream_t *lst, int status) {
    tp_t *tp = lst->data;
    tpeer_t *p = &tp->s;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(p->opened, 0);
    ck_assert_int_eq(wsg_side_init_tls(&tp->loop, &p->side, tp->sctx, 1, NULL), 0);
    p->side.tcp.data = p;
    p->opened = 1;
    ck_assert_int_eq(uv_accept(lst, (uv_stream_t *)&p->side.tcp), 0);
    if (tp->small_buffers) {
        int v = 16384;
        uv_recv_buffer_size((uv_handle_t *)&p->side.tcp, &v);
    }
    if (tp->server_reads_late) {
        ck_assert_int_eq(wsg_tls_handshake(&p->side, on_server_hs), 0);
        ck_assert_int_eq(wsg_tls_handshake(&p->side, on_server_hs), UV_EALREADY);
        uv_timer_start(&tp->later, on_later, 300, 0);
    } else {
        peer_read_start(p);
    }
    if (tp->mode == MODE_EXCHANGE)
        send_more(p); /* queued until the handshake completes */
}

static void on_connect(uv_connect_t *req, int status) {
    tp_t *tp = req->data;
    tpeer_t *p = &tp->c;
    ck_assert_int_eq(status, 0);
    if (tp->small_buffers) {
        int v = 16384;
        uv_send_buffer_size((uv_handle_t *)&p->side.tcp, &v);
    }
    if (tp->resume_with != NULL)
        ck_assert_int_eq(SSL_set_session(wsg_tls_ssl(&p->side), tp->resume_with), 1);
    if (tp->client_setup != NULL)
        tp->client_setup(tp);
    ck_assert_int_eq(wsg_tls_handshake(&p->side, on_client_hs), 0);
    ck_assert_int_eq(p->hs_calls, 0);
    if (tp->mode == MODE_EXCHANGE) {
        peer_read_start(p);
        send_more(p);
    }
}

static void on_watchdog(uv_timer_t *t) {
    tp_t *tp = t->data;
    ck_abort_msg("watchdog: server received %zu/%zu, client received %zu/%zu, ends %d/%d",
                 tp->s.received, tp->c.total, tp->c.received, tp->s.total, tp->s.end, tp->c.end);
}

static void tp_init(tp_t *tp, int mode) {
    memset(tp, 0, sizeof(*tp));
    tp->mode = mode;
    tp->qlimit = 256 * 1024;
    tp->piece_max = 40000;
    tp->s.tp = tp->c.tp = tp;
    tp->s.server = 1;
    tp->s.rng = 7;
    tp->c.rng = 11;
    ck_assert_int_eq(uv_loop_init(&tp->loop), 0);
}

/* Listens on 127.0.0.1 port 0, connects the client, runs to the end. */
static void tp_run(tp_t *tp) {
    struct sockaddr_in a;
    struct sockaddr_storage bound;
    int len = sizeof(bound);

    uv_ip4_addr("127.0.0.1", 0, &a);
    ck_assert_int_eq(uv_tcp_init(&tp->loop, &tp->lst), 0);
    tp->lst.data = tp;
    ck_assert_int_eq(uv_tcp_bind(&tp->lst, (const struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&tp->lst, 8, on_connection), 0);
    ck_assert_int_eq(uv_tcp_getsockname(&tp->lst, (struct sockaddr *)&bound, &len), 0);
    uv_timer_init(&tp->loop, &tp->watchdog);
    uv_timer_init(&tp->loop, &tp->later);
    uv_timer_init(&tp->loop, &tp->s.resume);
    uv_timer_init(&tp->loop, &tp->c.resume);
    tp->watchdog.data = tp->later.data = tp;
    tp->s.resume.data = &tp->s;
    tp->c.resume.data = &tp->c;
    uv_timer_start(&tp->watchdog, on_watchdog, 20000, 0);
    uv_unref((uv_handle_t *)&tp->watchdog);

    ck_assert_int_eq(wsg_side_init_tls(&tp->loop, &tp->c.side, tp->cctx, 0, tp->name), 0);
    ck_assert_ptr_eq(tp->c.side.ops, &wsg_transport_tls);
    tp->c.side.tcp.data = &tp->c;
    tp->c.opened = 1;
    tp->creq.data = tp;
    ck_assert_int_eq(
        uv_tcp_connect(&tp->creq, &tp->c.side.tcp, (struct sockaddr *)&bound, on_connect), 0);
    uv_run(&tp->loop, UV_RUN_DEFAULT);
    ck_assert_msg(tp->finished, "loop ended before both sides closed");
    uv_run(&tp->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&tp->loop), 0);
}

/* ---- exchange: 1 MiB each way ------------------------------------------- */

static void client_max_tls12(tp_t *tp) {
    ck_assert_int_eq(SSL_set_max_proto_version(wsg_tls_ssl(&tp->c.side), TLS1_2_VERSION), 1);
}

static void run_exchange(void (*setup)(tp_t *), const char *want_version) {
    tp_t tp;
    tp_init(&tp, MODE_EXCHANGE);
    tp.sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);
    tp.cctx = client_ctx("ca1.pem", 1, NULL);
    tp.name = "localhost";
    tp.client_setup = setup;
    tp.s.total = tp.c.total = 1024 * 1024;
    tp.s.pause_every = 5;
    tp.c.pause_every = 7;
    tp.s.small_every = 3;
    tp.c.small_every = 4;
    tp_run(&tp);

    for (int i = 0; i < 2; i++) {
        tpeer_t *p = i ? &tp.s : &tp.c;
        const char *who = i ? "server" : "client";
        ck_assert_msg(p->received == 1024 * 1024, "%s received %zu", who, p->received);
        ck_assert_msg(p->acked == 1024 * 1024, "%s acked %zu", who, p->acked);
        ck_assert_int_eq(p->inflight, 0);
        ck_assert_int_eq(p->werr, 0);
        ck_assert_int_eq(p->wcancel, 0);
        /* The end came as the peer's close_notify, once. */
        ck_assert_msg(p->end == UV_EOF, "%s end %s (%s)", who, uv_err_name(p->end), p->err);
        ck_assert_int_eq(p->ends, 1);
        ck_assert_int_eq(p->shut_calls, 1);
        ck_assert_int_eq(p->shut_status, 0);
        ck_assert_int_eq(p->close_calls, 1);
        ck_assert_str_eq(p->err, "");
    }
    ck_assert_int_eq(tp.c.hs_calls, 1);
    ck_assert_int_eq(tp.c.hs_status, 0);
    ck_assert_str_eq(tp.c.peer_cn, "localhost");
    ck_assert_str_eq(tp.c.version, want_version);
    ck_assert_str_eq(tp.c.alpn, "http/1.1");
    wsg_tls_ctx_unref(tp.sctx);
    wsg_tls_ctx_unref(tp.cctx);
}

START_TEST(test_tls_exchange_1mib_tls13) {
    run_exchange(NULL, "TLSv1.3");
}
END_TEST

START_TEST(test_tls_exchange_1mib_tls12) {
    run_exchange(client_max_tls12, "TLSv1.2");
}
END_TEST

/* Write callbacks wait for the socket: with a peer that does not read and
 * small kernel buffers, 4 MiB of writes cannot complete, and try_write
 * queues behind them; once the peer reads, everything arrives in order. */
START_TEST(test_tls_write_callbacks_follow_the_socket) {
    tp_t tp;
    tp_init(&tp, MODE_EXCHANGE);
    tp.sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);
    tp.cctx = client_ctx("ca1.pem", 1, NULL);
    tp.name = "127.0.0.1"; /* verified against the certificate's IP address */
    tp.c.total = 4 * 1024 * 1024;
    tp.s.total = 0;
    tp.qlimit = 8 * 1024 * 1024;
    tp.piece_max = 65536;
    tp.server_reads_late = 1;
    tp.small_buffers = 1;
    tp_run(&tp);
    ck_assert_uint_lt(tp.acked_when_checked, tp.c.total / 4);
    ck_assert_int_eq(tp.s.hs_calls, 1);
    ck_assert_int_eq(tp.s.hs_status, 0);
    ck_assert_uint_eq(tp.s.received, tp.c.total);
    ck_assert_uint_eq(tp.c.acked, tp.c.total);
    ck_assert_int_eq(tp.c.end, UV_EOF);
    ck_assert_int_eq(tp.s.end, UV_EOF);
    wsg_tls_ctx_unref(tp.sctx);
    wsg_tls_ctx_unref(tp.cctx);
}
END_TEST

/* ---- handshakes: ping / pong ------------------------------------------------- */

typedef struct {
    int c_hs;  /* client's handshake status */
    int s_end; /* server's read end */
    int c_end; /* client's read end (renegotiation test) */
    char c_err[256], s_err[256];
    char cn[128];
    char version[32];
    int reused;
    SSL_SESSION *session;
} ping_result_t;

static void run_ping_x(wsg_tls_ctx_t *sctx, wsg_tls_ctx_t *cctx, const char *name,
                       void (*setup)(tp_t *), SSL_SESSION *resume, int renegotiate,
                       ping_result_t *res) {
    tp_t tp;
    tp_init(&tp, MODE_PING);
    tp.renegotiate = renegotiate;
    tp.sctx = sctx;
    tp.cctx = cctx;
    tp.name = name;
    tp.client_setup = setup;
    tp.resume_with = resume;
    tp_run(&tp);
    memset(res, 0, sizeof(*res));
    res->c_hs = tp.c.hs_status;
    res->s_end = tp.s.end;
    snprintf(res->c_err, sizeof(res->c_err), "%s", tp.c.err);
    snprintf(res->s_err, sizeof(res->s_err), "%s", tp.s.err);
    snprintf(res->cn, sizeof(res->cn), "%s", tp.c.peer_cn);
    snprintf(res->version, sizeof(res->version), "%s", tp.c.version);
    res->reused = tp.c.reused;
    res->session = tp.session;
    ck_assert_int_eq(tp.c.hs_calls, 1);
    ck_assert_int_eq(tp.c.close_calls, 1);
    ck_assert_int_eq(tp.s.close_calls, 1);
    ck_assert_int_eq(tp.s.ends, 1);
    if (res->c_hs == 0 && !renegotiate)
        ck_assert_uint_eq(tp.s.received, 4);
    if (renegotiate) {
        res->c_end = tp.c.end;
        snprintf(res->c_err, sizeof(res->c_err), "%s", tp.c.err);
    }
}

static void run_ping(wsg_tls_ctx_t *sctx, wsg_tls_ctx_t *cctx, const char *name,
                     void (*setup)(tp_t *), SSL_SESSION *resume, ping_result_t *res) {
    run_ping_x(sctx, cctx, name, setup, resume, 0, res);
}

static const char *sni_cn(wsg_tls_ctx_t *sctx, wsg_tls_ctx_t *cctx, const char *name, char *out,
                          size_t cap) {
    ping_result_t r;
    run_ping(sctx, cctx, name, NULL, NULL, &r);
    ck_assert_msg(r.c_hs == 0, "%s: handshake %s: %s", name ? name : "(none)", uv_err_name(r.c_hs),
                  r.c_err);
    SSL_SESSION_free(r.session);
    snprintf(out, cap, "%s", r.cn);
    return out;
}

START_TEST(test_tls_sni_selects_certificate) {
    char cn[128];
    wsg_sni_conf_t sni[] = {{(char *)"a.test", (char *)P("a.pem"), (char *)P("a.key")},
                            {(char *)"*.b.test", (char *)P("wild.pem"), (char *)P("wild.key")}};
    wsg_tls_ctx_t *sctx = server_ctx("default.pem", "default.key", sni, 2, 0);
    wsg_tls_ctx_t *cctx = client_ctx(NULL, 0, NULL);

    ck_assert_str_eq(sni_cn(sctx, cctx, "a.test", cn, sizeof(cn)), "a.test");
    ck_assert_str_eq(sni_cn(sctx, cctx, "A.Test", cn, sizeof(cn)), "a.test");
    ck_assert_str_eq(sni_cn(sctx, cctx, "x.b.test", cn, sizeof(cn)), "*.b.test");
    ck_assert_str_eq(sni_cn(sctx, cctx, "deep.x.b.test", cn, sizeof(cn)), "*.b.test");
    ck_assert_str_eq(sni_cn(sctx, cctx, "b.test", cn, sizeof(cn)), "default.test");
    ck_assert_str_eq(sni_cn(sctx, cctx, "unknown.test", cn, sizeof(cn)), "default.test");
    ck_assert_str_eq(sni_cn(sctx, cctx, NULL, cn, sizeof(cn)), "default.test");
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}
END_TEST

/* The pool's server_name overrides the per-backend name. */
START_TEST(test_tls_client_pool_server_name_wins) {
    char cn[128];
    wsg_sni_conf_t sni[] = {{(char *)"a.test", (char *)P("a.pem"), (char *)P("a.key")}};
    wsg_tls_ctx_t *sctx = server_ctx("default.pem", "default.key", sni, 1, 0);
    wsg_tls_ctx_t *cctx = client_ctx("ca1.pem", 1, "a.test");
    ck_assert_str_eq(sni_cn(sctx, cctx, "127.0.0.1", cn, sizeof(cn)), "a.test");
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}
END_TEST

START_TEST(test_tls_min_version_13_refuses_12_client) {
    ping_result_t r;
    wsg_tls_ctx_t *sctx = server_ctx("local.pem", "local.key", NULL, 0, TLS1_3_VERSION);
    wsg_tls_ctx_t *cctx = client_ctx("ca1.pem", 1, NULL);

    run_ping(sctx, cctx, "localhost", client_max_tls12, NULL, &r);
    ck_assert_int_eq(r.c_hs, UV_EPROTO);
    ck_assert_int_eq(r.s_end, UV_EPROTO);
    ck_assert_msg(strstr(r.s_err, "protocol version") != NULL, "server: %s", r.s_err);
    ck_assert_msg(r.c_err[0] != '\0', "client has no reason");

    run_ping(sctx, cctx, "localhost", NULL, NULL, &r); /* a 1.3 client is fine */
    ck_assert_int_eq(r.c_hs, 0);
    ck_assert_str_eq(r.version, "TLSv1.3");
    SSL_SESSION_free(r.session);
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}
END_TEST

START_TEST(test_tls_verify_fails_for_other_ca) {
    ping_result_t r;
    wsg_tls_ctx_t *sctx = server_ctx("other.pem", "other.key", NULL, 0, 0);
    wsg_tls_ctx_t *cctx = client_ctx("ca1.pem", 1, NULL);

    run_ping(sctx, cctx, "localhost", NULL, NULL, &r);
    ck_assert_int_eq(r.c_hs, UV_EPROTO);
    ck_assert_msg(strstr(r.c_err, "certificate verify failed") != NULL, "client: %s", r.c_err);
    ck_assert_int_eq(r.s_end, UV_EPROTO); /* the client's alert */
    ck_assert_msg(r.s_err[0] != '\0', "server has no reason");
    wsg_tls_ctx_unref(cctx);

    /* Without verification the same server is accepted. */
    cctx = client_ctx("ca1.pem", 0, NULL);
    run_ping(sctx, cctx, "localhost", NULL, NULL, &r);
    ck_assert_int_eq(r.c_hs, 0);
    SSL_SESSION_free(r.session);
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}
END_TEST

START_TEST(test_tls_verify_checks_host_name) {
    ping_result_t r;
    wsg_tls_ctx_t *sctx = server_ctx("a.pem", "a.key", NULL, 0, 0);
    wsg_tls_ctx_t *cctx = client_ctx("ca1.pem", 1, NULL);

    run_ping(sctx, cctx, "localhost", NULL, NULL, &r);
    ck_assert_int_eq(r.c_hs, UV_EPROTO);
    ck_assert_msg(strstr(r.c_err, "certificate verify failed") != NULL &&
                      strstr(r.c_err, "mismatch") != NULL,
                  "client: %s", r.c_err);
    run_ping(sctx, cctx, "a.test", NULL, NULL, &r);
    ck_assert_int_eq(r.c_hs, 0);
    SSL_SESSION_free(r.session);
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}
END_TEST

static void client_offers_h2_only(tp_t *tp) {
    static const unsigned char h2[] = "\x02h2";
    ck_assert_int_eq(SSL_set_alpn_protos(wsg_tls_ssl(&tp->c.side), h2, sizeof(h2) - 1), 0);
}

/* RFC 7301 §3.2: no protocol in common is a fatal alert; wsgate speaks
 * HTTP/1.1 only. */
START_TEST(test_tls_alpn_without_http11_refused) {
    ping_result_t r;
    wsg_tls_ctx_t *sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);
    wsg_tls_ctx_t *cctx = client_ctx("ca1.pem", 1, NULL);
    run_ping(sctx, cctx, "localhost", client_offers_h2_only, NULL, &r);
    ck_assert_int_eq(r.c_hs, UV_EPROTO);
    ck_assert_int_eq(r.s_end, UV_EPROTO);
    ck_assert_msg(strstr(r.c_err, "no application protocol") != NULL, "client: %s", r.c_err);
    /* The caller's log line says "TLS handshake failed: "; the reason must
     * not say it again. */
    ck_assert_msg(strstr(r.c_err, "handshake failed") == NULL, "client: %s", r.c_err);
    ck_assert_msg(strstr(r.s_err, "handshake failed") == NULL, "server: %s", r.s_err);
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}
END_TEST

/* A TLS 1.2 client asking to renegotiate is refused (no_renegotiation),
 * which OpenSSL's client treats as fatal; the server reports the client's
 * alert as the end of the stream and nothing crashes or leaks. */
START_TEST(test_tls_renegotiation_refused) {
    ping_result_t r;
    wsg_tls_ctx_t *sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);
    wsg_tls_ctx_t *cctx = client_ctx("ca1.pem", 1, NULL);
    run_ping_x(sctx, cctx, "localhost", client_max_tls12, NULL, 1, &r);
    ck_assert_int_eq(r.c_hs, 0);
    ck_assert_int_eq(r.c_end, UV_EPROTO);
    ck_assert_msg(strstr(r.c_err, "renegotiation") != NULL, "client: %s", r.c_err);
    ck_assert_int_eq(r.s_end, UV_EPROTO);
    SSL_SESSION_free(r.session);
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}
END_TEST

static void run_resumption(void (*setup)(tp_t *)) {
    ping_result_t r1, r2;
    wsg_tls_ctx_t *sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);
    wsg_tls_ctx_t *cctx = client_ctx("ca1.pem", 1, NULL);

    run_ping(sctx, cctx, "localhost", setup, NULL, &r1);
    ck_assert_int_eq(r1.c_hs, 0);
    ck_assert_int_eq(r1.reused, 0);
    ck_assert_ptr_nonnull(r1.session);
    ck_assert_int_eq(SSL_SESSION_is_resumable(r1.session), 1);
    run_ping(sctx, cctx, "localhost", setup, r1.session, &r2);
    ck_assert_int_eq(r2.c_hs, 0);
    ck_assert_int_eq(r2.reused, 1);
    SSL_SESSION_free(r1.session);
    SSL_SESSION_free(r2.session);
    wsg_tls_ctx_unref(sctx);
    wsg_tls_ctx_unref(cctx);
}

START_TEST(test_tls_session_ticket_resumes_tls13) {
    run_resumption(NULL);
}
END_TEST

START_TEST(test_tls_session_ticket_resumes_tls12) {
    run_resumption(client_max_tls12);
}
END_TEST

/* ---- a raw TCP client that is not TLS -------------------------------------- */

typedef struct {
    uv_loop_t loop;
    uv_tcp_t lst, raw;
    uv_timer_t watchdog;
    uv_connect_t creq;
    uv_write_t wreq;
    tpeer_t s;
    tp_t dummy;
    const char *bytes;
    size_t len;
    int close_after_write;
    int raw_closed;
    size_t raw_got;
    int raw_end;
} rawt_t;

static void raw_maybe_done(rawt_t *rt) {
    if (rt->raw_closed && rt->s.close_calls) {
        uv_close((uv_handle_t *)&rt->lst, NULL);
        uv_close((uv_handle_t *)&rt->watchdog, NULL);
    }
}

static void on_raw_closed(uv_handle_t *h) {
    rawt_t *rt = h->data;
    rt->raw_closed = 1;
    raw_maybe_done(rt);
}

static void on_raw_srv_closed(uv_handle_t *h) {
    tpeer_t *p = peer_of(h);
    p->close_calls++;
    raw_maybe_done((rawt_t *)(void *)((char *)p - offsetof(rawt_t, s)));
}

static void on_raw_srv_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    tpeer_t *p = peer_of(st);
    (void)buf;
    ck_assert_msg(nread <= 0, "plaintext from a non-TLS client");
    if (nread == 0)
        return;
    p->end = (int)nread;
    p->ends++;
    snprintf(p->err, sizeof(p->err), "%s", wsg_tls_last_error(&p->side));
    p->side.ops->close(&p->side, on_raw_srv_closed);
}

static void on_raw_srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    tpeer_t *p = peer_of(h);
    (void)suggested;
    *buf = uv_buf_init(p->rbuf, sizeof(p->rbuf));
}

static void on_raw_conn(uv_stream_t *lst, int status) {
    rawt_t *rt = lst->data;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(wsg_side_init_tls(&rt->loop, &rt->s.side, rt->dummy.sctx, 1, NULL), 0);
    rt->s.side.tcp.data = &rt->s;
    ck_assert_int_eq(uv_accept(lst, (uv_stream_t *)&rt->s.side.tcp), 0);
    ck_assert_int_eq(rt->s.side.ops->read_start(&rt->s.side, on_raw_srv_alloc, on_raw_srv_read), 0);
}

static void on_raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    static char b[4096];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(b, sizeof(b));
}

static void on_raw_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    rawt_t *rt = st->data;
    (void)buf;
    if (nread > 0)
        rt->raw_got += (size_t)nread; /* an alert, perhaps */
    if (nread < 0) {
        rt->raw_end = (int)nread;
        uv_close((uv_handle_t *)&rt->raw, on_raw_closed);
    }
}

static void on_raw_written(uv_write_t *req, int status) {
    rawt_t *rt = req->data;
    ck_assert_int_eq(status, 0);
    if (rt->close_after_write)
        uv_close((uv_handle_t *)&rt->raw, on_raw_closed);
}

static void on_raw_connect(uv_connect_t *req, int status) {
    rawt_t *rt = req->data;
    ck_assert_int_eq(status, 0);
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)rt->bytes, (unsigned)rt->len);
    rt->wreq.data = rt;
    ck_assert_int_eq(uv_write(&rt->wreq, (uv_stream_t *)&rt->raw, &b, 1, on_raw_written), 0);
    if (!rt->close_after_write)
        ck_assert_int_eq(uv_read_start((uv_stream_t *)&rt->raw, on_raw_alloc, on_raw_read), 0);
}

/* Sends <bytes> from a plain TCP client to a TLS server side; returns the
 * server's read end and reason. */
static int run_raw(const char *bytes, size_t len, int close_after_write, char *err, size_t cap) {
    rawt_t rt;
    struct sockaddr_in a;
    struct sockaddr_storage bound;
    int blen = sizeof(bound);

    memset(&rt, 0, sizeof(rt));
    rt.bytes = bytes;
    rt.len = len;
    rt.close_after_write = close_after_write;
    rt.dummy.sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);
    ck_assert_int_eq(uv_loop_init(&rt.loop), 0);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&rt.loop, &rt.lst);
    rt.lst.data = &rt;
    ck_assert_int_eq(uv_tcp_bind(&rt.lst, (const struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&rt.lst, 8, on_raw_conn), 0);
    ck_assert_int_eq(uv_tcp_getsockname(&rt.lst, (struct sockaddr *)&bound, &blen), 0);
    uv_timer_init(&rt.loop, &rt.watchdog);
    rt.watchdog.data = &rt.dummy;
    uv_timer_start(&rt.watchdog, on_watchdog, 20000, 0);
    uv_unref((uv_handle_t *)&rt.watchdog);
    uv_tcp_init(&rt.loop, &rt.raw);
    rt.raw.data = &rt;
    rt.creq.data = &rt;
    ck_assert_int_eq(uv_tcp_connect(&rt.creq, &rt.raw, (struct sockaddr *)&bound, on_raw_connect),
                     0);
    uv_run(&rt.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(rt.raw_closed, 1);
    ck_assert_int_eq(rt.s.close_calls, 1);
    ck_assert_int_eq(rt.s.ends, 1);
    ck_assert_int_eq(uv_loop_close(&rt.loop), 0);
    wsg_tls_ctx_unref(rt.dummy.sctx);
    snprintf(err, cap, "%s", rt.s.err);
    return rt.s.end;
}

START_TEST(test_tls_plain_http_to_tls_port) {
    static const char req[] = "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n";
    char err[256];
    ck_assert_int_eq(run_raw(req, sizeof(req) - 1, 0, err, sizeof(err)), UV_EPROTO);
    ck_assert_msg(strstr(err, "plain HTTP request on a TLS port") != NULL, "%s", err);
}
END_TEST

START_TEST(test_tls_garbage_instead_of_clienthello) {
    char junk[600], err[256];
    uint32_t s = 99;
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)rnd(&s);
    /* A complete record, but of application data before any handshake.
     * (A record announcing more bytes than ever come is left to the
     * caller's handshake deadline.) */
    junk[0] = 0x17;
    junk[1] = 0x03;
    junk[2] = 0x03;
    junk[3] = 0x01;
    junk[4] = 0x00;
    ck_assert_int_eq(run_raw(junk, sizeof(junk), 0, err, sizeof(err)), UV_EPROTO);
    ck_assert_msg(strstr(err, "not a TLS ClientHello") != NULL, "%s", err);

    /* Bytes that look like nothing at all. */
    memset(junk, 0xff, sizeof(junk));
    ck_assert_int_eq(run_raw(junk, sizeof(junk), 0, err, sizeof(err)), UV_EPROTO);
    ck_assert_msg(strstr(err, "not a TLS ClientHello (wrong version number)") != NULL, "%s", err);
}
END_TEST

START_TEST(test_tls_client_gone_mid_handshake) {
    /* The start of a ClientHello record, then the client closes. */
    static const char part[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    char err[256];
    ck_assert_int_eq(run_raw(part, sizeof(part) - 1, 1, err, sizeof(err)), UV_EOF);
    ck_assert_msg(strstr(err, "closed during the TLS handshake") != NULL, "%s", err);
}
END_TEST

/* ---- wsg_side_start_tls: a PROXY header in plain text, then TLS --------------- */

typedef struct {
    uv_loop_t loop;
    uv_tcp_t lst;
    uv_timer_t watchdog;
    uv_connect_t creq;
    tp_t tp; /* the ping peers */
    char head[256];
    size_t head_len;
    size_t early;
    int switched;
} st_t;

static const char proxy_line[] = "PROXY TCP4 192.0.2.1 127.0.0.1 5555 443\r\n";

static void on_plain_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    st_t *st = (st_t *)(void *)((char *)peer_of(h) - offsetof(st_t, tp.s));
    (void)suggested;
    *buf = uv_buf_init(st->head + st->head_len, (unsigned)(sizeof(st->head) - st->head_len));
}

/* Reads in plain text until the PROXY line and at least one TLS byte are
 * in, then hands the rest to the TLS transport. */
static void on_plain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    tpeer_t *p = peer_of(s);
    st_t *st = (st_t *)(void *)((char *)p - offsetof(st_t, tp.s));
    size_t hl = sizeof(proxy_line) - 1;
    (void)buf;
    ck_assert_int_ge(nread, 0);
    st->head_len += (size_t)nread;
    if (st->head_len <= hl)
        return;
    ck_assert_int_eq(memcmp(st->head, proxy_line, hl), 0);
    st->early = st->head_len - hl;
    ck_assert_int_eq(wsg_side_start_tls(&p->side, st->tp.sctx, 1, NULL, st->head + hl, st->early),
                     0);
    ck_assert_ptr_eq(p->side.ops, &wsg_transport_tls);
    st->switched = 1;
    peer_read_start(p);
}

static void on_st_conn(uv_stream_t *lst, int status) {
    st_t *st = lst->data;
    tpeer_t *p = &st->tp.s;
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(wsg_side_init_tcp(&st->loop, &p->side), 0);
    p->side.tcp.data = p;
    p->opened = 1;
    ck_assert_int_eq(uv_accept(lst, (uv_stream_t *)&p->side.tcp), 0);
    ck_assert_int_eq(p->side.ops->read_start(&p->side, on_plain_alloc, on_plain_read), 0);
}

static void on_st_connect(uv_connect_t *req, int status) {
    st_t *st = req->data;
    tpeer_t *p = &st->tp.c;
    ck_assert_int_eq(status, 0);
    uv_buf_t b = uv_buf_init((char *)proxy_line, sizeof(proxy_line) - 1);
    ck_assert_int_eq(p->side.ops->try_write(&p->side, &b, 1), (int)b.len);
    /* A client side may switch too (a backend connect, then TLS). */
    ck_assert_int_eq(wsg_side_start_tls(&p->side, st->tp.sctx, 0, "localhost", NULL, 0),
                     UV_EINVAL); /* a server context for a client: refused */
    ck_assert_ptr_eq(p->side.ops, &wsg_transport_tcp);
    ck_assert_int_eq(wsg_side_start_tls(&p->side, st->tp.cctx, 0, "localhost", NULL, 0), 0);
    ck_assert_int_eq(wsg_tls_handshake(&p->side, on_client_hs), 0);
}

START_TEST(test_tls_start_tls_after_plain_bytes) {
    st_t st;
    struct sockaddr_in a;
    struct sockaddr_storage bound;
    int blen = sizeof(bound);

    memset(&st, 0, sizeof(st));
    tp_init(&st.tp, MODE_PING);
    st.tp.sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);
    st.tp.cctx = client_ctx("ca1.pem", 1, NULL);
    ck_assert_int_eq(uv_loop_close(&st.tp.loop), 0); /* st.loop is used instead */
    ck_assert_int_eq(uv_loop_init(&st.loop), 0);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&st.loop, &st.tp.lst);
    st.tp.lst.data = &st;
    ck_assert_int_eq(uv_tcp_bind(&st.tp.lst, (const struct sockaddr *)&a, 0), 0);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&st.tp.lst, 8, on_st_conn), 0);
    ck_assert_int_eq(uv_tcp_getsockname(&st.tp.lst, (struct sockaddr *)&bound, &blen), 0);
    uv_timer_init(&st.loop, &st.tp.watchdog);
    uv_timer_init(&st.loop, &st.tp.later);
    uv_timer_init(&st.loop, &st.tp.s.resume);
    uv_timer_init(&st.loop, &st.tp.c.resume);
    st.tp.watchdog.data = &st.tp;
    uv_timer_start(&st.tp.watchdog, on_watchdog, 20000, 0);
    uv_unref((uv_handle_t *)&st.tp.watchdog);
    ck_assert_int_eq(wsg_side_init_tcp(&st.loop, &st.tp.c.side), 0);
    st.tp.c.side.tcp.data = &st.tp.c;
    st.tp.c.opened = 1;
    st.creq.data = &st;
    ck_assert_int_eq(
        uv_tcp_connect(&st.creq, &st.tp.c.side.tcp, (struct sockaddr *)&bound, on_st_connect), 0);
    uv_run(&st.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(st.tp.finished, 1);
    ck_assert_int_eq(uv_loop_close(&st.loop), 0);

    ck_assert_int_eq(st.switched, 1);
    ck_assert_uint_gt(st.early, 0); /* the ClientHello's first bytes came with the header */
    ck_assert_int_eq(st.tp.c.hs_status, 0);
    ck_assert_str_eq(st.tp.c.peer_cn, "localhost");
    ck_assert_uint_eq(st.tp.s.received, 4);
    ck_assert_int_eq(st.tp.s.close_calls, 1);
    ck_assert_int_eq(st.tp.c.close_calls, 1);
    SSL_SESSION_free(st.tp.session);
    wsg_tls_ctx_unref(st.tp.sctx);
    wsg_tls_ctx_unref(st.tp.cctx);
}
END_TEST

/* ---- API edges without a peer ----------------------------------------------- */

static int closed_calls;
static int lonely_order; /* 1: handshake cb, 2: write cb, 3: close cb */
static int lonely_hs = 1, lonely_hs_at, lonely_w_at, lonely_close_at;
static void on_lonely_closed(uv_handle_t *h) {
    (void)h;
    closed_calls++;
    lonely_close_at = ++lonely_order;
}

static void on_lonely_write(uv_write_t *req, int status) {
    int *st = req->data;
    *st = status;
    lonely_w_at = ++lonely_order;
}

static void on_lonely_hs(wsg_side_t *s, int status) {
    lonely_hs = status;
    lonely_hs_at = ++lonely_order;
    ck_assert_ptr_nonnull(s->tls); /* still usable (closing) inside the callback */
    uv_buf_t b = uv_buf_init((char *)"x", 1);
    ck_assert_int_eq(s->ops->try_write(s, &b, 1), UV_EBADF);
}

START_TEST(test_tls_close_cancels_queued_writes) {
    uv_loop_t loop;
    wsg_side_t s;
    uv_write_t req;
    int status = 1;
    wsg_tls_ctx_t *cctx = client_ctx(NULL, 0, NULL);
    wsg_tls_ctx_t *sctx = server_ctx("local.pem", "local.key", NULL, 0, 0);

    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(wsg_side_init_tls(&loop, &s, sctx, 0, NULL), UV_EINVAL); /* wrong kind */
    ck_assert_int_eq(wsg_side_init_tls(&loop, &s, cctx, 0, "x.test"), 0);
    ck_assert_int_eq(wsg_tls_handshake_done(&s), 0);
    ck_assert_str_eq(wsg_tls_last_error(&s), "");
    ck_assert_str_eq(wsg_tls_version(&s), "");
    ck_assert_ptr_null(wsg_tls_sni(&s));
    uv_buf_t b = uv_buf_init((char *)"data", 4);
    req.data = &status;
    ck_assert_int_eq(s.ops->write(&s, &req, &b, 1, on_lonely_write), 0);
    ck_assert_int_eq(status, 1); /* not before the handshake, not inside the call */
    ck_assert_int_eq(wsg_tls_handshake(&s, on_lonely_hs), 0);
    s.ops->close(&s, on_lonely_closed);
    ck_assert_int_eq(s.ops == &wsg_transport_tls, 1);
    ck_assert_int_eq(wsg_tls_handshake(&s, on_lonely_hs), UV_EINVAL); /* closing */
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(status, UV_ECANCELED);
    ck_assert_int_eq(lonely_hs, UV_ECANCELED);
    ck_assert_int_eq(closed_calls, 1);
    /* libuv's order: the pending "connect", the writes, then close. */
    ck_assert_int_eq(lonely_hs_at, 1);
    ck_assert_int_eq(lonely_w_at, 2);
    ck_assert_int_eq(lonely_close_at, 3);
    ck_assert_int_eq(uv_loop_close(&loop), 0);

    /* Plain sides answer the TLS queries harmlessly. */
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(wsg_side_init_tcp(&loop, &s), 0);
    ck_assert_int_eq(wsg_tls_handshake(&s, NULL), UV_EINVAL);
    ck_assert_str_eq(wsg_tls_last_error(&s), "");
    ck_assert_ptr_null(wsg_tls_ssl(&s));
    s.ops->close(&s, on_lonely_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    wsg_tls_ctx_unref(cctx);
    wsg_tls_ctx_unref(sctx);
}
END_TEST

Suite *wsg_tls_suite(void) {
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("load");
    tcase_add_test(tc, test_tls_load_ok);
    tcase_add_test(tc, test_tls_load_unreadable_file);
    tcase_add_test(tc, test_tls_load_key_mismatch);
    tcase_add_test(tc, test_tls_load_expired);
    tcase_add_test(tc, test_tls_load_encrypted_key_refused);
    tcase_add_test(tc, test_tls_load_sni_error_names_sni_file);
    tcase_add_test(tc, test_tls_load_bad_min_version);
    tcase_add_test(tc, test_tls_load_client_ca_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("transport");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tls_exchange_1mib_tls13);
    tcase_add_test(tc, test_tls_exchange_1mib_tls12);
    tcase_add_test(tc, test_tls_write_callbacks_follow_the_socket);
    tcase_add_test(tc, test_tls_start_tls_after_plain_bytes);
    tcase_add_test(tc, test_tls_close_cancels_queued_writes);
    suite_add_tcase(s, tc);

    tc = tcase_create("handshake");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tls_sni_selects_certificate);
    tcase_add_test(tc, test_tls_client_pool_server_name_wins);
    tcase_add_test(tc, test_tls_min_version_13_refuses_12_client);
    tcase_add_test(tc, test_tls_verify_fails_for_other_ca);
    tcase_add_test(tc, test_tls_verify_checks_host_name);
    tcase_add_test(tc, test_tls_session_ticket_resumes_tls13);
    tcase_add_test(tc, test_tls_session_ticket_resumes_tls12);
    tcase_add_test(tc, test_tls_alpn_without_http11_refused);
    tcase_add_test(tc, test_tls_renegotiation_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("not_tls");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tls_plain_http_to_tls_port);
    tcase_add_test(tc, test_tls_garbage_instead_of_clienthello);
    tcase_add_test(tc, test_tls_client_gone_mid_handshake);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    snprintf(certdir, sizeof(certdir), "/tmp/wsg_tls_test_XXXXXX");
    if (mkdtemp(certdir) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    make_pki();
    SRunner *sr = srunner_create(wsg_tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_pki();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
