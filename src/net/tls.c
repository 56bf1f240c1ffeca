/*
 * TLS on the libuv loop: OpenSSL 3 contexts built from the configuration,
 * and a transport (struct wsg_transport_ops) that runs an SSL object over a
 * side's uv_tcp_t so the handshake and relay code see plaintext only.
 *
 * What it does not do: decide timeouts (the connection's deadline covers a
 * slow handshake), log (it keeps a reason string the caller logs), or
 * parse anything above TLS. Client certificates, OCSP stapling and session
 * resumption towards backends are not implemented.
 *
 * Key design choice: OpenSSL talks to a tiny custom BIO instead of a
 * socket or a memory BIO. Its read side hands out the ciphertext of the
 * last recv() straight from the buffer libuv filled, and its write side
 * appends to a growable buffer that becomes one uv_write. Nothing is kept
 * between reads: the recv buffer is freed once OpenSSL consumed it, the
 * output buffer once the kernel took it, and SSL_MODE_RELEASE_BUFFERS
 * lets OpenSSL drop its own record buffers when idle, so an idle TLS
 * connection costs the SSL object and this struct, no 16 KiB buffers.
 * Memory BIOs would keep their high-water allocation for the life of the
 * connection, and a BIO pair allocates both rings up front.
 *
 * Writes keep the caller's accounting honest: only one ciphertext write
 * ("flight") is in the kernel's hands at a time, plaintext is encrypted
 * when the previous flight completed (at most BATCH bytes ahead), and a
 * caller's write callback runs when the flight holding the last of its
 * bytes completed. try_write encrypts record by record while the socket
 * takes whole records, so at most one record's tail is ever held without
 * the caller counting it.
 *
 * Every user callback runs from a loop callback (socket read, write
 * completion, the side's idle handle, close), never inside the API call
 * that armed it. The idle handle is how work is deferred: buffered
 * plaintext after a read_start, a handshake to kick off, a failure to
 * report.
 */
#include <wsgate/tls.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define RBUF_SIZE (32 * 1024)         /* ciphertext taken per recv() */
#define RECORD_MAX 16384              /* largest TLS plaintext record (RFC 8446 §5.1) */
#define BATCH (32 * 1024)             /* plaintext encrypted per flight */
#define OUT_STACK (RECORD_MAX + 1024) /* one record plus any cipher's overhead */
#define READ_SUGGEST 65536            /* suggested_size passed to the caller's alloc_cb */

/* Mozilla "intermediate" for TLS 1.2 (forward secret AEAD only); the TLS
 * 1.3 suites keep OpenSSL's defaults, which are all fine. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"

static const unsigned char alpn_http11[] = "\x08http/1.1";

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

_Static_assert(offsetof(wsg_side_t, tcp) == 0, "a side's uv_tcp_t must be its first member");

/* ---- contexts ----------------------------------------------------------- */

typedef struct sni_entry_s {
    char *name;   /* owned: lower-case exact name or "*.suffix" */
    SSL_CTX *ssl; /* owned */
} sni_entry_t;

struct wsg_tls_ctx_s {
    atomic_int refs;
    int is_server;
    int verify;       /* client: verify the peer */
    SSL_CTX *ssl;     /* owned: the default (server) or only (client) context */
    sni_entry_t *sni; /* owned */
    size_t nsni;
    char *server_name; /* owned, client: the pool's fixed name, or NULL */
    BIO_METHOD *bio;   /* owned: the bridge between OpenSSL and a side */
};

/* Fills <err> and drops whatever OpenSSL queued on this thread, so the
 * next connection handled by the thread does not inherit it. */
static int errf(char *err, size_t cap, const char *fmt, ...) {
    if (err != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    ERR_clear_error();
    return UV_EINVAL;
}

static const char *ossl_reason(void) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : "unknown OpenSSL error";
}

/* Never prompt on a terminal for an encrypted key: fail instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static void format_time(const ASN1_TIME *t, char *out, size_t cap) {
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) == 1)
        strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else
        snprintf(out, cap, "an unreadable date");
}

/* Loads a certificate chain file and its key into <c>, checking each. */
static int load_pair(SSL_CTX *c, const char *certf, const char *keyf, char *err, size_t cap) {
    char when[64];
    X509 *x, *ca;
    EVP_PKEY *k;
    FILE *f;

    ERR_clear_error();
    if ((f = fopen(certf, "r")) == NULL)
        return errf(err, cap, "%s: cannot open certificate: %s", certf, strerror(errno));
    x = PEM_read_X509_AUX(f, NULL, no_passphrase, NULL);
    if (x == NULL) {
        fclose(f);
        return errf(err, cap, "%s: no PEM certificate found (%s)", certf, ossl_reason());
    }
    if (SSL_CTX_use_certificate(c, x) != 1) {
        fclose(f);
        X509_free(x);
        return errf(err, cap, "%s: certificate not usable: %s", certf, ossl_reason());
    }
    /* The rest of the file is the chain, leaf first (as nginx and HAProxy
     * expect); the end of the file shows up as "no start line". */
    while ((ca = PEM_read_X509(f, NULL, no_passphrase, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(c, ca) != 1) {
            X509_free(ca);
            fclose(f);
            X509_free(x);
            return errf(err, cap, "%s: chain certificate not usable: %s", certf, ossl_reason());
        }
    }
    fclose(f);
    unsigned long e = ERR_peek_last_error();
    if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        X509_free(x);
        return errf(err, cap, "%s: bad certificate in the chain: %s", certf, ossl_reason());
    }
    ERR_clear_error();
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        format_time(X509_get0_notAfter(x), when, sizeof(when));
        X509_free(x);
        return errf(err, cap, "%s: certificate expired on %s", certf, when);
    }
    X509_free(x);

    if ((f = fopen(keyf, "r")) == NULL)
        return errf(err, cap, "%s: cannot open private key: %s", keyf, strerror(errno));
    k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    if (k == NULL)
        return errf(err, cap, "%s: no usable private key (PEM, not encrypted): %s", keyf,
                    ossl_reason());
    int ok = SSL_CTX_use_PrivateKey(c, k) == 1 && SSL_CTX_check_private_key(c) == 1;
    EVP_PKEY_free(k);
    if (!ok)
        return errf(err, cap, "%s: private key does not match certificate %s", keyf, certf);
    return 0;
}

/* RFC 7301 §3.2: wsgate speaks HTTP/1.1 only; a client that offers ALPN
 * without it gets the fatal no_application_protocol alert. A client that
 * offers no ALPN at all is fine. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
    unsigned char *sel;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof(alpn_http11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int host_ieq(const char *a, const char *b, size_t n) {
    return strncasecmp(a, b, n) == 0;
}

/* The SNI entry for <name>: an exact name first, then the first "*.suffix"
 * in configuration order that matches one or more labels before the
 * suffix (the convention routes use). NULL: the default certificate. */
static SSL_CTX *sni_pick(const wsg_tls_ctx_t *ctx, const char *name) {
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '.')
        n--; /* "example.com." is "example.com" */
    for (size_t i = 0; i < ctx->nsni; i++) {
        const char *e = ctx->sni[i].name;
        if (e[0] != '*' && strlen(e) == n && host_ieq(e, name, n))
            return ctx->sni[i].ssl;
    }
    for (size_t i = 0; i < ctx->nsni; i++) {
        const char *e = ctx->sni[i].name;
        if (e[0] == '*' && e[1] == '.') {
            size_t sl = strlen(e + 1); /* ".suffix" */
            if (n > sl && host_ieq(name + n - sl, e + 1, sl))
                return ctx->sni[i].ssl;
        }
    }
    return NULL;
}

/* Runs early in the handshake (RFC 6066 §3): switching the SSL_CTX swaps
 * the certificate; every context is configured alike, and session tickets
 * stay keyed by the listener's default context. */
static int on_servername(SSL *ssl, int *alert, void *arg) {
    const wsg_tls_ctx_t *ctx = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (name == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    SSL_CTX *pick = sni_pick(ctx, name);
    if (pick != NULL && SSL_set_SSL_CTX(ssl, pick) == NULL)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

static void common_setup(SSL_CTX *c, int min_version) {
    SSL_CTX_set_min_proto_version(c, min_version ? min_version : TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_cipher_list(c, TLS12_CIPHERS);
}

/* One server SSL_CTX for one certificate. */
static int server_ssl_ctx(const wsg_tls_conf_t *conf, const char *certf, const char *keyf,
                          SSL_CTX **out, char *err, size_t cap) {
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (c == NULL) {
        errf(err, cap, "out of memory creating a TLS context");
        return UV_ENOMEM;
    }
    common_setup(c, conf->min_version);
    SSL_CTX_set_alpn_select_cb(c, on_alpn, NULL);
    /* Resumption through stateless tickets only (RFC 5077, RFC 8446
     * §4.6.1): nothing per session is stored, so nothing needs sharing
     * between workers beyond the ticket keys every worker's SSL objects
     * already share through this context. */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(c, (const unsigned char *)"wsgate", 6);
    SSL_CTX_set_num_tickets(c, 1);
    SSL_CTX_set_default_passwd_cb(c, no_passphrase);
    int r = load_pair(c, certf, keyf, err, cap);
    if (r < 0) {
        SSL_CTX_free(c);
        return r;
    }
    *out = c;
    return 0;
}

static int bio_write(BIO *b, const char *data, int len);
static int bio_read(BIO *b, char *buf, int len);
static long bio_ctrl(BIO *b, int cmd, long num, void *ptr);
static int bio_create(BIO *b);
static int bio_destroy(BIO *b);

static wsg_tls_ctx_t *ctx_alloc(int is_server) {
    wsg_tls_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return NULL;
    atomic_init(&ctx->refs, 1);
    ctx->is_server = is_server;
    int idx = BIO_get_new_index();
    ctx->bio = BIO_meth_new((idx > 0 ? idx : 0) | BIO_TYPE_SOURCE_SINK, "wsgate-uv");
    if (ctx->bio == NULL || !BIO_meth_set_write(ctx->bio, bio_write) ||
        !BIO_meth_set_read(ctx->bio, bio_read) || !BIO_meth_set_ctrl(ctx->bio, bio_ctrl) ||
        !BIO_meth_set_create(ctx->bio, bio_create) ||
        !BIO_meth_set_destroy(ctx->bio, bio_destroy)) {
        BIO_meth_free(ctx->bio);
        free(ctx);
        return NULL;
    }
    return ctx;
}

static void ctx_free(wsg_tls_ctx_t *ctx) {
    for (size_t i = 0; i < ctx->nsni; i++) {
        free(ctx->sni[i].name);
        SSL_CTX_free(ctx->sni[i].ssl);
    }
    free(ctx->sni);
    SSL_CTX_free(ctx->ssl);
    free(ctx->server_name);
    BIO_meth_free(ctx->bio);
    free(ctx);
}

wsg_tls_ctx_t *wsg_tls_ctx_ref(wsg_tls_ctx_t *ctx) {
    atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
    return ctx;
}

void wsg_tls_ctx_unref(wsg_tls_ctx_t *ctx) {
    if (ctx != NULL && atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) == 1)
        ctx_free(ctx);
}

int wsg_tls_server_ctx_new(const wsg_tls_conf_t *conf, wsg_tls_ctx_t **out, char *err,
                           size_t errcap) {
    wsg_tls_ctx_t *ctx = ctx_alloc(1);
    int r;

    *out = NULL;
    if (ctx == NULL) {
        errf(err, errcap, "out of memory creating a TLS context");
        return UV_ENOMEM;
    }
    if (conf->min_version != 0 && conf->min_version != TLS1_2_VERSION &&
        conf->min_version != TLS1_3_VERSION) {
        ctx_free(ctx);
        return errf(err, errcap, "min_version 0x%04x is neither TLS 1.2 nor TLS 1.3",
                    (unsigned)conf->min_version);
    }
    if ((r = server_ssl_ctx(conf, conf->cert, conf->key, &ctx->ssl, err, errcap)) < 0)
        goto fail;
    if (conf->nsni > 0) {
        ctx->sni = calloc(conf->nsni, sizeof(*ctx->sni));
        if (ctx->sni == NULL) {
            r = UV_ENOMEM;
            errf(err, errcap, "out of memory creating a TLS context");
            goto fail;
        }
    }
    for (size_t i = 0; i < conf->nsni; i++) {
        const wsg_sni_conf_t *e = &conf->sni[i];
        if ((r = server_ssl_ctx(conf, e->cert, e->key, &ctx->sni[i].ssl, err, errcap)) < 0)
            goto fail;
        ctx->nsni++;
        if ((ctx->sni[i].name = strdup(e->server_name)) == NULL) {
            r = UV_ENOMEM;
            errf(err, errcap, "out of memory creating a TLS context");
            goto fail;
        }
    }
    SSL_CTX_set_tlsext_servername_callback(ctx->ssl, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx->ssl, ctx);
    *out = ctx;
    return 0;
fail:
    ctx_free(ctx);
    return r;
}

int wsg_tls_client_ctx_new(const wsg_pool_tls_conf_t *conf, wsg_tls_ctx_t **out, char *err,
                           size_t errcap) {
    wsg_tls_ctx_t *ctx = ctx_alloc(0);
    int r = UV_ENOMEM;

    *out = NULL;
    if (ctx == NULL || (ctx->ssl = SSL_CTX_new(TLS_client_method())) == NULL)
        goto fail_mem;
    ctx->verify = conf->verify;
    if (conf->server_name != NULL && (ctx->server_name = strdup(conf->server_name)) == NULL)
        goto fail_mem;
    common_setup(ctx->ssl, TLS1_2_VERSION);
    if (SSL_CTX_set_alpn_protos(ctx->ssl, alpn_http11, sizeof(alpn_http11) - 1) != 0)
        goto fail_mem;
    ERR_clear_error();
    if (conf->ca != NULL) {
        FILE *f = fopen(conf->ca, "r");
        if (f == NULL) {
            r = errf(err, errcap, "%s: cannot open CA file: %s", conf->ca, strerror(errno));
            goto fail;
        }
        fclose(f);
        if (SSL_CTX_load_verify_locations(ctx->ssl, conf->ca, NULL) != 1) {
            r = errf(err, errcap, "%s: no usable CA certificate: %s", conf->ca, ossl_reason());
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx->ssl) != 1) {
        r = errf(err, errcap, "cannot load the system's trusted CA certificates: %s",
                 ossl_reason());
        goto fail;
    }
    SSL_CTX_set_verify(ctx->ssl, conf->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    *out = ctx;
    return 0;
fail_mem:
    errf(err, errcap, "out of memory creating a TLS context");
fail:
    if (ctx != NULL)
        ctx_free(ctx);
    return r;
}

int wsg_tls_check_conf(const wsg_tls_conf_t *conf, char *err, size_t errcap) {
    wsg_tls_ctx_t *ctx;
    int r = wsg_tls_server_ctx_new(conf, &ctx, err, errcap);
    wsg_tls_ctx_unref(ctx);
    return r;
}

/* ---- the per-side state ------------------------------------------------- */

/* A caller's write, queued in order. */
typedef struct wreq_s {
    struct wreq_s *next;
    uv_write_t *req; /* the caller's */
    uv_write_cb cb;
    unsigned nbufs;
    unsigned idx;    /* next buffer to encrypt */
    size_t off;      /* bytes of bufs[idx] already encrypted */
    int sealed;      /* every byte encrypted: done when the current flight is */
    uv_buf_t bufs[]; /* copies of the caller's descriptors */
} wreq_t;

enum { SHUT_NONE = 0, SHUT_WANTED, SHUT_ISSUED, SHUT_DONE };

typedef struct tls_s {
    wsg_side_t *side;
    wsg_tls_ctx_t *ctx; /* owned reference */
    SSL *ssl;           /* owned */
    uv_idle_t idle;     /* defers work and callbacks to the loop */

    uv_alloc_cb alloc_cb; /* the caller's, while reading */
    uv_read_cb read_cb;
    wsg_tls_handshake_cb hs_cb;

    /* Ciphertext received and not yet consumed by OpenSSL. Owned. */
    char *in;
    size_t in_off, in_len;
    /* Ciphertext produced by OpenSSL, not yet handed to the socket. Owned
     * unless out_stack (try_write's stack buffer). */
    char *out;
    size_t out_len, out_cap;
    int out_stack;
    /* The one uv_write in progress. Owned. */
    char *flight;
    uv_write_t flight_req;

    wreq_t *wq, **wq_tail; /* the caller's writes, oldest first */
    wreq_t *wq_unsealed;   /* first one not fully encrypted (NULL: none) */

    uv_shutdown_t *shut_req; /* the caller's, until its callback ran */
    uv_shutdown_cb shut_cb;
    uv_shutdown_t tcp_shut;
    int shut_err; /* uv_shutdown() refused at once: reported from the loop */
    uv_close_cb close_cb;

    int sock_end;        /* the socket's EOF or read error, once seen */
    int end;             /* what the reader gets once the plaintext before it is read */
    int wfail;           /* the write side is broken: queued and new writes fail with it */
    int hs_status;       /* why the handshake failed */
    uint8_t reading;     /* the caller wants plaintext */
    uint8_t tcp_reading; /* uv_read_start is in effect on the socket */
    uint8_t hs_started;
    uint8_t hs_done;
    uint8_t failed;   /* TLS failed (handshake or record layer): no more TLS I/O */
    uint8_t notified; /* close_notify produced */
    uint8_t shut;     /* SHUT_* */
    uint8_t closing;
    uint8_t in_drive; /* drive() is on the stack */
    uint8_t idle_on;
    uint8_t parts; /* handles still closing */
    char err[200];
} tls_t;

static tls_t *tls_of(const wsg_side_t *s) {
    return s->ops == &wsg_transport_tls ? (tls_t *)s->tls : NULL;
}

static uv_stream_t *stream_of(tls_t *t) {
    return (uv_stream_t *)&t->side->tcp;
}

static void set_error(tls_t *t, const char *fmt, ...) {
    if (t->err[0] != '\0')
        return; /* keep the first, it is the cause */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof(t->err), fmt, ap);
    va_end(ap);
}

/* Turns OpenSSL's error queue into a reason an operator can act on, then
 * clears it. */
static void note_ssl_error(tls_t *t) {
    unsigned long e = ERR_peek_last_error();
    const char *rs = ossl_reason();
    int server = t->ctx->is_server;
    /* A server that fails before it could parse any ClientHello was not
     * talking to a TLS client, whatever detail OpenSSL gives. */
    int no_hello = server && SSL_get_state(t->ssl) == TLS_ST_BEFORE;

    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        switch (ERR_GET_REASON(e)) {
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
            set_error(t, "plain HTTP request on a TLS port (%s)", rs);
            goto done;
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_UNKNOWN_PROTOCOL:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_RECORD_LENGTH_MISMATCH:
        case SSL_R_UNEXPECTED_RECORD:
            if (!t->hs_done) {
                set_error(t, server ? "not a TLS ClientHello (%s)" : "peer does not speak TLS (%s)",
                          rs);
                goto done;
            }
            break;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_VERSION_TOO_LOW:
        case SSL_R_NO_PROTOCOLS_AVAILABLE:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
            set_error(t, "TLS protocol version refused (%s)", rs);
            goto done;
        case SSL_R_CERTIFICATE_VERIFY_FAILED:
            set_error(t, "certificate verify failed: %s",
                      X509_verify_cert_error_string(SSL_get_verify_result(t->ssl)));
            goto done;
        default:
            break;
        }
    }
    if (no_hello) {
        set_error(t, "not a TLS ClientHello (%s)", e != 0 ? rs : "protocol error");
        goto done;
    }
    /* During the handshake the bare reason: callers log it after their own
     * "TLS handshake failed: " / "TLS to backend failed: ". */
    if (t->hs_done)
        set_error(t, "TLS error: %s", e != 0 ? rs : "protocol error");
    else
        set_error(t, "%s", e != 0 ? rs : "protocol error");
done:
    ERR_clear_error();
}

static void drive(tls_t *t);
static void pump(tls_t *t);
static void update_tcp_reading(tls_t *t);

static void on_idle(uv_idle_t *h);

static void kick(tls_t *t) {
    if (!t->idle_on && !t->closing) {
        uv_idle_start(&t->idle, on_idle);
        t->idle_on = 1;
    }
}

/* ---- the BIO: OpenSSL's view of the socket ------------------------------- */

static int out_reserve(tls_t *t, size_t more) {
    if (t->out_cap - t->out_len >= more)
        return 0;
    size_t cap = t->out_cap > 0 ? t->out_cap : 4096;
    while (cap - t->out_len < more)
        cap *= 2;
    char *p;
    if (t->out_stack) {
        if ((p = malloc(cap)) == NULL)
            return -1;
        memcpy(p, t->out, t->out_len);
        t->out_stack = 0;
    } else if ((p = realloc(t->out, cap)) == NULL) {
        return -1;
    }
    t->out = p;
    t->out_cap = cap;
    return 0;
}

static int bio_write(BIO *b, const char *data, int len) {
    tls_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (out_reserve(t, (size_t)len) < 0)
        return -1;
    memcpy(t->out + t->out_len, data, (size_t)len);
    t->out_len += (size_t)len;
    return len;
}

/* EOF is never signalled here: the transport reports the socket's end
 * itself once OpenSSL consumed what came before it, so OpenSSL only ever
 * sees "no more bytes for now". */
static int bio_read(BIO *b, char *buf, int len) {
    tls_t *t = BIO_get_data(b);
    size_t avail = t->in_len - t->in_off;
    BIO_clear_retry_flags(b);
    if (avail == 0 || len <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = (size_t)len < avail ? (size_t)len : avail;
    memcpy(buf, t->in + t->in_off, n);
    t->in_off += n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static int bio_destroy(BIO *b) {
    BIO_set_data(b, NULL);
    return 1;
}

/* ---- writing -------------------------------------------------------------- */

static wreq_t *wq_pop(tls_t *t) {
    wreq_t *w = t->wq;
    t->wq = w->next;
    if (t->wq == NULL)
        t->wq_tail = &t->wq;
    if (t->wq_unsealed == w)
        t->wq_unsealed = w->next;
    return w;
}

static void complete(wreq_t *w, int status) {
    uv_write_t *req = w->req;
    uv_write_cb cb = w->cb;
    free(w);
    if (cb != NULL)
        cb(req, status);
}

/* Loop context only: finishes writes that need no flight, i.e. every
 * queued write once the write side broke, or zero-length writes. */
static void settle_writes(tls_t *t) {
    while (!t->closing && t->flight == NULL && t->wq != NULL && (t->wfail || t->wq->sealed))
        complete(wq_pop(t), t->wfail);
}

static void finish_shutdown(tls_t *t, int status) {
    uv_shutdown_t *req = t->shut_req;
    uv_shutdown_cb cb = t->shut_cb;
    if (req == NULL)
        return;
    t->shut_req = NULL;
    t->shut_cb = NULL;
    if (cb != NULL)
        cb(req, status);
}

static void on_tcp_shutdown(uv_shutdown_t *r, int status) {
    tls_t *t = container_of(r, tls_t, tcp_shut);
    t->shut = SHUT_DONE;
    finish_shutdown(t, status);
}

static int seal(tls_t *t, const void *p, size_t n) {
    size_t w = 0;
    ERR_clear_error();
    /* A hint only: the BIO grows the buffer if a cipher needs more. */
    if (out_reserve(t, n + 64 * (n / RECORD_MAX + 1)) < 0)
        return UV_ENOMEM;
    if (SSL_write_ex(t->ssl, p, n, &w) != 1 || w != n) {
        note_ssl_error(t);
        return UV_EPROTO;
    }
    return 0;
}

/* Encrypts queued plaintext, at most BATCH bytes. Small writes are
 * gathered into full records so that a burst of small frames does not cost
 * a record header, a tag and an encryption call each. */
static int encrypt_queue(tls_t *t) {
    char gather[RECORD_MAX];
    size_t glen = 0, budget = BATCH;
    wreq_t *w;
    int r = 0;

    while ((w = t->wq_unsealed) != NULL && budget > 0 && r == 0) {
        while (w->idx < w->nbufs && budget > 0) {
            const uv_buf_t *b = &w->bufs[w->idx];
            size_t n = b->len - w->off;
            if (n > budget)
                n = budget;
            if (glen == 0 && n >= 4096) {
                if ((r = seal(t, b->base + w->off, n)) < 0)
                    break;
            } else {
                if (n > RECORD_MAX - glen)
                    n = RECORD_MAX - glen;
                memcpy(gather + glen, b->base + w->off, n);
                glen += n;
                if (glen == RECORD_MAX) {
                    if ((r = seal(t, gather, glen)) < 0)
                        break;
                    glen = 0;
                }
            }
            w->off += n;
            budget -= n;
            if (w->off == b->len) {
                w->idx++;
                w->off = 0;
            }
        }
        if (r < 0 || w->idx < w->nbufs)
            break;
        w->sealed = 1;
        t->wq_unsealed = w->next;
    }
    if (r == 0 && glen > 0)
        r = seal(t, gather, glen);
    return r;
}

static void on_flight(uv_write_t *r, int status);

static void start_flight(tls_t *t) {
    if (t->out_stack) {
        char *p = malloc(t->out_len);
        if (p == NULL) {
            t->out = NULL;
            t->out_len = t->out_cap = 0;
            t->out_stack = 0;
            t->wfail = UV_ENOMEM;
            kick(t);
            return;
        }
        memcpy(p, t->out, t->out_len);
        t->out = p;
        t->out_stack = 0;
    }
    uv_buf_t b = uv_buf_init(t->out, (unsigned)t->out_len);
    t->flight = t->out;
    t->out = NULL;
    t->out_len = t->out_cap = 0;
    int r = uv_write(&t->flight_req, stream_of(t), &b, 1, on_flight);
    if (r < 0) {
        free(t->flight);
        t->flight = NULL;
        t->wfail = r;
        kick(t);
    }
}

static void drop_output(tls_t *t) {
    if (!t->out_stack)
        free(t->out);
    t->out = NULL;
    t->out_len = t->out_cap = 0;
    t->out_stack = 0;
}

/* Moves output along: encrypts queued writes and close_notify when no
 * flight is in progress, starts the next flight, and issues the TCP
 * shutdown once nothing is left to encrypt. Calls no user callback. */
static void pump(tls_t *t) {
    if (t->closing)
        return;
    if (t->flight == NULL) {
        if (t->wfail || t->shut >= SHUT_ISSUED) {
            drop_output(t); /* nowhere to send it */
        } else {
            if (t->hs_done && !t->failed) {
                int r = encrypt_queue(t);
                if (r < 0) {
                    t->wfail = r;
                    drop_output(t);
                    kick(t);
                    return;
                }
            }
            /* RFC 8446 §6.1: close_notify after the last data record. */
            if (t->shut == SHUT_WANTED && t->wq_unsealed == NULL && t->hs_done && !t->failed &&
                !t->notified) {
                ERR_clear_error();
                SSL_shutdown(t->ssl);
                ERR_clear_error();
                t->notified = 1;
            }
            if (t->out_len > 0)
                start_flight(t);
            else if (t->wq != NULL && t->wq->sealed)
                kick(t); /* zero-length writes complete from the loop */
        }
    }
    /* libuv runs the shutdown after the writes already queued, so it can be
     * issued as soon as everything is encrypted (or can never be). */
    if (t->shut == SHUT_WANTED && t->wq_unsealed == NULL &&
        (t->notified || !t->hs_done || t->failed || t->wfail)) {
        t->shut = SHUT_ISSUED;
        int r = uv_shutdown(&t->tcp_shut, stream_of(t), on_tcp_shutdown);
        if (r < 0) {
            t->shut_err = r;
            kick(t);
        }
    }
}

static void on_flight(uv_write_t *r, int status) {
    tls_t *t = container_of(r, tls_t, flight_req);

    free(t->flight);
    t->flight = NULL;
    if (status < 0 && status != UV_ECANCELED && t->wfail == 0)
        t->wfail = status;
    /* Every write sealed now had its last bytes in this flight. Counted
     * first: a callback may write, and what that seals belongs to the next
     * flight. */
    size_t done = 0;
    for (wreq_t *w = t->wq; w != NULL && w->sealed; w = w->next)
        done++;
    while (done-- > 0 && t->wq != NULL)
        complete(wq_pop(t), status);
    if (t->closing)
        return;
    settle_writes(t);
    if (!t->closing)
        pump(t);
}

/* ---- reading ------------------------------------------------------------- */

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    (void)suggested;
    char *p = malloc(RBUF_SIZE);
    *buf = uv_buf_init(p, p != NULL ? RBUF_SIZE : 0);
}

/* Frees the receive buffer once OpenSSL consumed it; a remainder (reading
 * stopped mid-buffer) moves to an exact-size copy so a paused connection
 * does not pin a whole receive buffer. */
static void trim_input(tls_t *t) {
    if (t->in == NULL)
        return;
    size_t rest = t->in_len - t->in_off;
    if (rest == 0) {
        free(t->in);
        t->in = NULL;
        t->in_off = t->in_len = 0;
    } else if (t->in_off > 0) {
        char *p = malloc(rest);
        if (p == NULL)
            return; /* keep the big one */
        memcpy(p, t->in + t->in_off, rest);
        free(t->in);
        t->in = p;
        t->in_off = 0;
        t->in_len = rest;
    }
}

static void on_tcp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    tls_t *t = ((wsg_side_t *)(void *)st)->tls;

    if (nread <= 0) {
        free(buf->base);
        if (nread == 0)
            return;
        t->sock_end = (int)nread;
        uv_read_stop(st);
        t->tcp_reading = 0;
    } else {
        /* Reading is on only while everything before was consumed. */
        assert(t->in_off == t->in_len);
        free(t->in);
        t->in = buf->base;
        t->in_off = 0;
        t->in_len = (size_t)nread;
    }
    drive(t);
}

/* The socket is read only while OpenSSL needs bytes: during the handshake,
 * or while the caller reads and everything received was consumed. */
static void update_tcp_reading(tls_t *t) {
    int want = !t->closing && !t->sock_end && !t->failed && t->in_off == t->in_len &&
               ((!t->hs_done && t->hs_started) ||
                (t->hs_done && t->reading && !t->end && SSL_pending(t->ssl) == 0));
    if (want == t->tcp_reading)
        return;
    if (want) {
        int r = uv_read_start(stream_of(t), on_tcp_alloc, on_tcp_read);
        if (r < 0) {
            t->sock_end = r;
            kick(t);
            return;
        }
    } else {
        uv_read_stop(stream_of(t));
    }
    t->tcp_reading = (uint8_t)want;
}

static void fail(tls_t *t, int code) {
    /* The alert OpenSSL queued, if any, still goes out; nothing else will. */
    if (t->flight == NULL && t->out_len > 0 && t->wfail == 0 && t->shut < SHUT_ISSUED)
        start_flight(t);
    t->failed = 1;
    t->hs_status = t->hs_done ? 0 : code;
    if (t->end == 0)
        t->end = code;
    if (t->wfail == 0)
        t->wfail = code;
}

/* Returns 1 when the handshake completed or failed (state changed), 0 when
 * it waits for the peer. */
static int handshake_step(tls_t *t) {
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->hs_done = 1;
        pump(t); /* the last flight, and writes queued meanwhile */
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        pump(t);
        if (t->in_off == t->in_len && t->sock_end) {
            if (t->sock_end == UV_EOF)
                set_error(t, "connection closed during the TLS handshake");
            else
                set_error(t, "connection error during the TLS handshake: %s",
                          uv_strerror(t->sock_end));
            fail(t, t->sock_end);
            return 1;
        }
        return 0;
    }
    note_ssl_error(t);
    fail(t, UV_EPROTO);
    return 1;
}

/* Decrypts one buffer's worth for the caller. Returns 1 when it made
 * progress, 0 when OpenSSL needs more ciphertext. */
static int read_one(tls_t *t) {
    uv_stream_t *st = stream_of(t);
    uv_buf_t buf = uv_buf_init(NULL, 0);
    size_t n = 0;

    t->alloc_cb((uv_handle_t *)st, READ_SUGGEST, &buf);
    if (buf.base == NULL || buf.len == 0) {
        /* libuv reports UV_ENOBUFS and waits for the next readiness; with
         * the bytes already here there is no next readiness, so it is the
         * end of this stream. */
        t->end = UV_ENOBUFS;
        t->reading = 0;
        t->read_cb(st, UV_ENOBUFS, &buf);
        return 1;
    }
    ERR_clear_error();
    int r = SSL_read_ex(t->ssl, buf.base, buf.len, &n);
    if (r == 1) {
        pump(t); /* e.g. a KeyUpdate answer (RFC 8446 §4.6.3) */
        t->read_cb(st, (ssize_t)n, &buf);
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        pump(t);
        t->read_cb(st, 0, &buf); /* gives the buffer back, as libuv does on EAGAIN */
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        t->end = UV_EOF; /* the peer's close_notify */
    } else {
        note_ssl_error(t);
        fail(t, UV_EPROTO);
    }
    t->reading = 0;
    t->read_cb(st, t->end, &buf);
    return 1;
}

/* Makes all the progress possible with what has been received, calling
 * the caller's callbacks, then decides whether the socket is read. */
static void drive(tls_t *t) {
    if (t->in_drive || t->closing)
        return;
    t->in_drive = 1;
    while (!t->closing) {
        if (!t->hs_done && !t->failed) {
            if (!t->hs_started || handshake_step(t) == 0)
                break;
            continue;
        }
        if (t->hs_cb != NULL) {
            wsg_tls_handshake_cb cb = t->hs_cb;
            t->hs_cb = NULL;
            cb(t->side, t->hs_done ? 0 : t->hs_status);
            continue;
        }
        if (!t->reading)
            break;
        if (t->end == 0 && SSL_pending(t->ssl) == 0 && t->in_off == t->in_len) {
            if (t->sock_end == 0)
                break; /* wait for ciphertext */
            t->end = t->sock_end;
        }
        if (t->end != 0) {
            uv_buf_t none = uv_buf_init(NULL, 0);
            t->reading = 0;
            t->read_cb(stream_of(t), t->end, &none);
            continue;
        }
        if (read_one(t) == 0)
            break;
    }
    t->in_drive = 0;
    if (!t->closing)
        settle_writes(t);
    if (!t->closing) {
        pump(t);
        trim_input(t);
        update_tcp_reading(t);
    }
}

static void on_idle(uv_idle_t *h) {
    tls_t *t = h->data;
    uv_idle_stop(h);
    t->idle_on = 0;
    if (t->closing)
        return;
    if (t->shut == SHUT_ISSUED && t->shut_err != 0) {
        int r = t->shut_err;
        t->shut_err = 0;
        t->shut = SHUT_DONE;
        finish_shutdown(t, r);
        if (t->closing)
            return;
    }
    settle_writes(t);
    if (!t->closing)
        pump(t);
    drive(t);
}

/* ---- the ops table ------------------------------------------------------- */

static int tls_read_start(wsg_side_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
    tls_t *t = s->tls;
    if (t->closing)
        return UV_EINVAL;
    t->alloc_cb = alloc_cb;
    t->read_cb = read_cb;
    t->reading = 1;
    t->hs_started = 1;
    if (t->in_drive)
        return 0; /* the running drive() sees it */
    /* Anything already here is delivered from the loop; otherwise it is
     * only a matter of reading the socket. */
    if (!t->hs_done || t->end || t->failed || t->sock_end || t->in_off < t->in_len ||
        SSL_pending(t->ssl) > 0 || t->hs_cb != NULL)
        kick(t);
    else
        update_tcp_reading(t);
    return 0;
}

static int tls_read_stop(wsg_side_t *s) {
    tls_t *t = s->tls;
    t->reading = 0;
    if (!t->in_drive && !t->closing)
        update_tcp_reading(t);
    return 0;
}

static void start_handshake(tls_t *t) {
    if (!t->hs_started) {
        t->hs_started = 1;
        kick(t);
    }
}

static int write_refused(tls_t *t) {
    if (t->closing)
        return UV_EBADF;
    if (t->wfail)
        return t->wfail;
    if (t->shut != SHUT_NONE)
        return UV_EPIPE;
    return 0;
}

static int tls_try_write(wsg_side_t *s, const uv_buf_t *bufs, unsigned nbufs) {
    tls_t *t = s->tls;
    char stackbuf[OUT_STACK];
    size_t total = 0;
    int r = write_refused(t);

    if (r < 0)
        return r;
    if (!t->hs_done) {
        start_handshake(t);
        return UV_EAGAIN;
    }
    if (t->flight != NULL || t->wq != NULL || t->out_len > 0)
        return UV_EAGAIN; /* order: after what is queued */
    drop_output(t);
    t->out = stackbuf;
    t->out_cap = sizeof(stackbuf);
    t->out_len = 0;
    t->out_stack = 1;
    /* One record at a time while the socket takes whole records: once it
     * does not, the tail of that record is queued and the rest of the
     * caller's bytes stay the caller's. */
    for (unsigned i = 0; i < nbufs && r == 0; i++) {
        size_t off = 0;
        while (off < bufs[i].len) {
            size_t n = bufs[i].len - off < RECORD_MAX ? bufs[i].len - off : RECORD_MAX;
            if ((r = seal(t, bufs[i].base + off, n)) < 0)
                break;
            off += n;
            total += n;
            uv_buf_t c = uv_buf_init(t->out, (unsigned)t->out_len);
            int k = uv_try_write(stream_of(t), &c, 1);
            if (k == (int)t->out_len) {
                t->out_len = 0;
                continue;
            }
            if (k < 0 && k != UV_EAGAIN) {
                r = k;
                break;
            }
            if (k > 0) {
                memmove(t->out, t->out + k, t->out_len - (size_t)k);
                t->out_len -= (size_t)k;
            }
            goto partial;
        }
    }
    drop_output(t);
    if (r < 0) {
        /* Records may have been produced and lost: the stream is broken. */
        t->wfail = r;
        kick(t);
        return r;
    }
    return (int)total;
partial:
    pump(t); /* starts a flight with the tail, copied off the stack */
    return (int)total;
}

static int tls_write(wsg_side_t *s, uv_write_t *req, const uv_buf_t *bufs, unsigned nbufs,
                     uv_write_cb cb) {
    tls_t *t = s->tls;
    int r = write_refused(t);

    if (r < 0)
        return r;
    wreq_t *w = malloc(sizeof(*w) + (size_t)nbufs * sizeof(uv_buf_t));
    if (w == NULL)
        return UV_ENOMEM;
    w->next = NULL;
    w->req = req;
    w->cb = cb;
    w->nbufs = nbufs;
    w->idx = 0;
    w->off = 0;
    w->sealed = 0;
    memcpy(w->bufs, bufs, (size_t)nbufs * sizeof(uv_buf_t));
    req->type = UV_WRITE;
    req->handle = stream_of(t);
    req->send_handle = NULL;
    req->cb = cb;
    *t->wq_tail = w;
    t->wq_tail = &w->next;
    if (t->wq_unsealed == NULL)
        t->wq_unsealed = w;
    if (!t->hs_done)
        start_handshake(t);
    else
        pump(t);
    return 0;
}

static int tls_shutdown(wsg_side_t *s, uv_shutdown_t *req, uv_shutdown_cb cb) {
    tls_t *t = s->tls;
    if (t->closing || t->shut != SHUT_NONE)
        return UV_ENOTCONN; /* as uv_shutdown on a closing or shut stream */
    req->type = UV_SHUTDOWN;
    req->handle = stream_of(t);
    req->cb = cb;
    t->shut_req = req;
    t->shut_cb = cb;
    t->shut = SHUT_WANTED;
    pump(t);
    return 0;
}

static void tls_free(tls_t *t) {
    wsg_tls_ctx_t *ctx = t->ctx;
    SSL_free(t->ssl); /* frees the BIO too */
    free(t->in);
    drop_output(t);
    free(t->flight);
    free(t);
    wsg_tls_ctx_unref(ctx);
}

static void on_part_closed(uv_handle_t *h) {
    tls_t *t = h->type == UV_IDLE ? h->data : ((wsg_side_t *)(void *)h)->tls;
    if (--t->parts > 0)
        return;
    /* libuv already cancelled the flight and the TCP shutdown (their
     * callbacks ran with UV_ECANCELED); what never reached libuv is
     * cancelled here, before the caller's close callback, as libuv does:
     * an armed handshake callback first (it stands for the connect), then
     * the writes, then the shutdown. */
    if (t->hs_cb != NULL) {
        wsg_tls_handshake_cb hcb = t->hs_cb;
        t->hs_cb = NULL;
        hcb(t->side, UV_ECANCELED);
    }
    while (t->wq != NULL)
        complete(wq_pop(t), UV_ECANCELED);
    finish_shutdown(t, UV_ECANCELED);
    wsg_side_t *s = t->side;
    uv_close_cb cb = t->close_cb;
    tls_free(t);
    s->tls = NULL;
    if (cb != NULL)
        cb((uv_handle_t *)&s->tcp);
}

static void tls_close(wsg_side_t *s, uv_close_cb cb) {
    tls_t *t = s->tls;
    if (t->closing)
        return;
    t->closing = 1;
    t->reading = 0;
    t->close_cb = cb;
    t->parts = 2;
    uv_close((uv_handle_t *)&t->idle, on_part_closed);
    uv_close((uv_handle_t *)&s->tcp, on_part_closed);
}

const struct wsg_transport_ops wsg_transport_tls = {
    .name = "tls",
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .try_write = tls_try_write,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

/* ---- setting a side up ---------------------------------------------------- */

static int is_ip_literal(const char *name) {
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

/* Everything but the loop handles; nothing to undo on failure. */
static int tls_new(wsg_tls_ctx_t *ctx, int is_server, const char *server_name, const void *early,
                   size_t early_len, tls_t **out) {
    if (ctx == NULL || ctx->is_server != (is_server != 0))
        return UV_EINVAL;
    tls_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return UV_ENOMEM;
    t->wq_tail = &t->wq;
    if ((t->ssl = SSL_new(ctx->ssl)) == NULL)
        goto fail;
    BIO *b = BIO_new(ctx->bio);
    if (b == NULL)
        goto fail;
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b);
    if (is_server) {
        SSL_set_accept_state(t->ssl);
    } else {
        const char *name = ctx->server_name != NULL ? ctx->server_name : server_name;
        SSL_set_connect_state(t->ssl);
        if (name != NULL && name[0] != '\0') {
            /* RFC 6066 §3: SNI carries DNS names only, never literals. */
            int ip = is_ip_literal(name);
            if (!ip && SSL_set_tlsext_host_name(t->ssl, name) != 1)
                goto fail;
            if (ctx->verify) {
                int ok;
                if (ip) {
                    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name) == 1;
                } else {
                    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                    ok = SSL_set1_host(t->ssl, name) == 1;
                }
                if (!ok)
                    goto fail;
            }
        }
    }
    if (early_len > 0) {
        if ((t->in = malloc(early_len)) == NULL)
            goto fail;
        memcpy(t->in, early, early_len);
        t->in_len = early_len;
    }
    t->ctx = wsg_tls_ctx_ref(ctx);
    *out = t;
    return 0;
fail:
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t->in);
    free(t);
    return UV_ENOMEM;
}

static void attach(wsg_side_t *s, tls_t *t) {
    /* uv_idle_init cannot fail once the loop exists. */
    uv_idle_init(s->tcp.loop, &t->idle);
    t->idle.data = t;
    t->side = s;
    s->tls = t; /* a side on a ring never becomes TLS (wsg_side_start_tls) */
    s->ops = &wsg_transport_tls;
}

int wsg_side_init_tls(uv_loop_t *loop, wsg_side_t *s, wsg_tls_ctx_t *ctx, int is_server,
                      const char *server_name) {
    tls_t *t;
    int r = tls_new(ctx, is_server, server_name, NULL, 0, &t);
    if (r < 0)
        return r;
    if ((r = uv_tcp_init(loop, &s->tcp)) < 0) {
        tls_free(t);
        return r;
    }
    attach(s, t);
    return 0;
}

int wsg_side_start_tls(wsg_side_t *s, wsg_tls_ctx_t *ctx, int is_server, const char *server_name,
                       const void *early, size_t early_len) {
    tls_t *t;
    if (s->ops != &wsg_transport_tcp)
        return UV_EINVAL;
    int r = tls_new(ctx, is_server, server_name, early, early_len, &t);
    if (r < 0)
        return r;
    uv_read_stop((uv_stream_t *)&s->tcp);
    attach(s, t);
    return 0;
}

int wsg_tls_handshake(wsg_side_t *s, wsg_tls_handshake_cb cb) {
    tls_t *t = tls_of(s);
    if (t == NULL || t->closing)
        return UV_EINVAL;
    if (t->hs_cb != NULL)
        return UV_EALREADY;
    t->hs_cb = cb;
    t->hs_started = 1;
    kick(t);
    return 0;
}

int wsg_tls_handshake_done(const wsg_side_t *s) {
    const tls_t *t = tls_of(s);
    return t != NULL && t->hs_done;
}

const char *wsg_tls_last_error(const wsg_side_t *s) {
    const tls_t *t = tls_of(s);
    return t != NULL ? t->err : "";
}

const char *wsg_tls_version(const wsg_side_t *s) {
    const tls_t *t = tls_of(s);
    return t != NULL && t->hs_done ? SSL_get_version(t->ssl) : "";
}

const char *wsg_tls_cipher(const wsg_side_t *s) {
    const tls_t *t = tls_of(s);
    const char *c = t != NULL && t->hs_done ? SSL_get_cipher_name(t->ssl) : NULL;
    return c != NULL ? c : "";
}

const char *wsg_tls_sni(const wsg_side_t *s) {
    const tls_t *t = tls_of(s);
    return t != NULL && t->ctx->is_server ? SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name)
                                          : NULL;
}

struct ssl_st *wsg_tls_ssl(const wsg_side_t *s) {
    const tls_t *t = tls_of(s);
    return t != NULL ? t->ssl : NULL;
}
