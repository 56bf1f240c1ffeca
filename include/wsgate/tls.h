/*
 * TLS for both sides of a connection: wss:// termination for listeners and
 * TLS to backends, behind the same struct wsg_transport_ops as plain TCP
 * (transport.h), so the handshake and relay code do not change.
 *
 * Contexts (wsg_tls_ctx_t) are built from the immutable configuration: one
 * per TLS listener (server: default certificate + SNI certificates) and
 * one per TLS pool (client: trust store, verification). A context is
 * thread-safe and shared by every worker; it is reference counted and
 * every TLS side holds a reference, so it may be released while
 * connections still use it (reload).
 *
 * A side becomes TLS either from the start (wsg_side_init_tls) or after
 * plain bytes were read or a connect completed on its socket
 * (wsg_side_start_tls: PROXY protocol header first, or a backend connect).
 * From then on the ops table is wsg_transport_tls and:
 *
 *   - read_start(alloc_cb, read_cb): ciphertext is read into memory owned
 *     by the transport (taken per read, given back once OpenSSL consumed
 *     it); the handshake is driven as needed; plaintext is decrypted into
 *     buffers from the caller's alloc_cb and handed to read_cb, with
 *     libuv's conventions: nread > 0 data, 0 = nothing (the buffer is just
 *     given back), UV_EOF on close_notify or TCP EOF, UV_EPROTO when the
 *     TLS handshake or record layer fails (reason: wsg_tls_last_error), any
 *     other negative code from the socket. After an end is reported,
 *     reading stops (as libuv does); read_start again reports it again.
 *     read_stop leaves decrypted and undecrypted bytes inside the
 *     transport; the next read_start delivers them (from the loop, never
 *     from inside read_start).
 *   - try_write(bufs): encrypts and sends now. Returns UV_EAGAIN while the
 *     handshake is not done or anything is queued. Returns the number of
 *     plaintext bytes consumed; when the socket takes only part of the
 *     last record's ciphertext, the rest of that one record (at most 16 KiB
 *     of plaintext, about 16.4 KiB on the wire) stays queued inside the
 *     transport and goes before anything written later. That record is
 *     the only slack in the caller's `queued` accounting.
 *   - write(req, bufs, cb): queued in order after earlier writes and, on a
 *     side whose handshake is not done, until it is. <cb> runs only once
 *     the ciphertext for those bytes was handed to the kernel
 *     (uv_write completion), or with an error / UV_ECANCELED (close).
 *     Plaintext is encrypted lazily, at most 32 KiB ahead of the socket, so
 *     queued plaintext is not duplicated as ciphertext.
 *   - shutdown(req, cb): after every queued write, sends close_notify (if
 *     the handshake completed and did not fail) and then shuts down the TCP
 *     write side; <cb> runs when that TCP shutdown completes. Reading goes
 *     on (the peer's close_notify/EOF arrives as UV_EOF).
 *   - close(cb): cancels what is pending (an armed wsg_tls_handshake
 *     callback, then write, then shutdown callbacks run with UV_ECANCELED
 *     first), frees the TLS state (side->tls becomes NULL), and runs <cb>
 *     with the side's uv_tcp_t as handle once the socket is closed. Always
 *     use ops->close on a TLS side, never uv_close().
 *
 * Callback timing: no callback ever runs inside the call that arms it
 * (read_start, write, try_write, shutdown, wsg_tls_handshake) and a call
 * that fails fires no callback. Callbacks run from the loop; inside any of
 * them the caller may call any function of this API on the same side,
 * close included (the state stays valid until close's callback).
 * Callbacks receive (uv_stream_t *)&side->tcp / req as libuv would; the
 * write and shutdown requests get their `handle` field set to &side->tcp.
 *
 * Renegotiation is refused (TLS 1.2 clients asking for it get a
 * no_renegotiation alert; TLS 1.3 has none). The handshake timeout is the
 * caller's: it closes the side when its deadline passes.
 */
#ifndef WSGATE_TLS_H
#define WSGATE_TLS_H

#include <stddef.h>

#include <uv.h>

#include <wsgate/config.h>
#include <wsgate/transport.h>

typedef struct wsg_tls_ctx_s wsg_tls_ctx_t;

/* Longest message wsg_tls_*_ctx_new / wsg_tls_check_conf write, NUL included. */
#define WSG_TLS_ERR_MAX 512

/*
 * Builds the server context of a TLS listener: the top-level cert/key as
 * the default certificate, one certificate per conf->sni[] entry chosen by
 * the client's server name (exact name first, then "*.suffix" entries in
 * configuration order; "*.suffix" matches one or more labels before the
 * suffix, as routes do), TLS 1.2+ (conf->min_version; 0 means 1.2), a
 * modern cipher list for TLS 1.2, ALPN "http/1.1", stateless session
 * tickets (keys shared by the workers of this process, new on reload).
 *
 * Each file is checked as it is loaded: unreadable, not PEM, key not
 * matching its certificate, certificate expired. Paths are opened as
 * written (relative to the working directory).
 *
 * Returns 0 with *out = a new context (refcount 1), or a negative UV_E*
 * code (UV_EINVAL for a bad file or setting, UV_ENOMEM) with <err> holding
 * one line naming the file and the problem, e.g.
 *   "certs/site.key: private key does not match certificate certs/site.pem"
 * <err> may be NULL; errcap of WSG_TLS_ERR_MAX is always enough. Blocks
 * reading files: call at start-up / reload, not on a loop.
 */
int wsg_tls_server_ctx_new(const wsg_tls_conf_t *conf, wsg_tls_ctx_t **out, char *err,
                           size_t errcap);

/*
 * Builds the client context of a TLS pool: trust store from conf->ca (else
 * the system's default paths), peer verification when conf->verify (chain
 * and host name), ALPN "http/1.1", TLS 1.2+. conf->server_name, when set,
 * is the name sent as SNI and verified for every backend of the pool;
 * otherwise the name given to wsg_side_init_tls / wsg_side_start_tls is
 * used. Returns as wsg_tls_server_ctx_new (an unreadable CA file is named).
 */
int wsg_tls_client_ctx_new(const wsg_pool_tls_conf_t *conf, wsg_tls_ctx_t **out, char *err,
                           size_t errcap);

/* Loads every file of a listener's TLS settings and discards the result:
 * for `wsgate -t` and start-up checks. Returns as wsg_tls_server_ctx_new. */
int wsg_tls_check_conf(const wsg_tls_conf_t *conf, char *err, size_t errcap);

/* Reference counting (atomic; any thread). unref(NULL) is a no-op. */
wsg_tls_ctx_t *wsg_tls_ctx_ref(wsg_tls_ctx_t *ctx);
void wsg_tls_ctx_unref(wsg_tls_ctx_t *ctx);

extern const struct wsg_transport_ops wsg_transport_tls;

/* Whether <s> is a TLS side whose TLS state is not freed yet (it is until
 * its close callback). */
static inline int wsg_side_is_tls(const wsg_side_t *s) {
    return s->ops == &wsg_transport_tls && s->tls != NULL;
}

/*
 * Sets up <s> as a TLS side on <loop>: uv_tcp_init() plus the TLS state.
 * <is_server> must match the context's kind (else UV_EINVAL). For a client
 * side, <server_name> is the backend's host (SNI and verified name unless
 * the pool sets server_name; an IP literal is verified as an IP address
 * and not sent as SNI); it is copied. Ignored (may be NULL) for a server.
 * Nothing happens on the network until read_start, write, try_write or
 * wsg_tls_handshake is called: accept or connect first, as for plain TCP.
 * Takes a reference on <ctx>. Returns 0 or a UV_E* code (nothing to clean
 * up then).
 */
int wsg_side_init_tls(uv_loop_t *loop, wsg_side_t *s, wsg_tls_ctx_t *ctx, int is_server,
                      const char *server_name);

/*
 * Turns a plain TCP side (wsg_side_init_tcp, already accepted or connected)
 * into a TLS side. Its reading is stopped; <early>[0..early_len) are bytes
 * already read from the socket that belong to the TLS stream (e.g. what
 * followed a PROXY protocol header); they are copied. Other arguments and
 * return as wsg_side_init_tls; on error the side stays a plain one.
 */
int wsg_side_start_tls(wsg_side_t *s, wsg_tls_ctx_t *ctx, int is_server, const char *server_name,
                       const void *early, size_t early_len);

/* <status> is 0 when the handshake completed (the peer verified, for a
 * verifying client), else UV_EPROTO (reason: wsg_tls_last_error) or the
 * socket's error / UV_EOF. */
typedef void (*wsg_tls_handshake_cb)(wsg_side_t *s, int status);

/*
 * Starts the handshake now (a client sends its ClientHello, a server waits
 * for one) and calls <cb> once, from the loop, when it completes or fails,
 * whether or not the side is reading; calling it after completion still
 * calls <cb> (with 0) from the loop. If the side is closed first, <cb>
 * runs with UV_ECANCELED before the close callback (as a pending
 * uv_connect would), so a deadline that closes the side mid-handshake
 * still ends in this callback. Application data that arrives behind
 * the handshake stays buffered until read_start. Optional: read_start and
 * write start the handshake too; this is for callers that must know its
 * outcome first (a backend with a bad certificate is a failed connect).
 * Returns 0, UV_EINVAL (not TLS, or closing) or UV_EALREADY (a cb is armed).
 */
int wsg_tls_handshake(wsg_side_t *s, wsg_tls_handshake_cb cb);

/* 1 once the handshake completed, else 0 (also for a plain side). */
int wsg_tls_handshake_done(const wsg_side_t *s);

/* Why the TLS layer failed, for the log, e.g. "plain HTTP request on a TLS
 * port", "not a TLS ClientHello (wrong version number)", "certificate
 * verify failed: unable to get local issuer certificate", or OpenSSL's
 * reason alone ("no application protocol"); it does not say "TLS handshake
 * failed" itself, the caller's log line does (a failure after the handshake
 * reads "TLS error: ..."). Borrowed, valid until the side is closed; ""
 * when nothing failed or for a plain side. */
const char *wsg_tls_last_error(const wsg_side_t *s);

/* Negotiated protocol ("TLSv1.3") and cipher, for logs; "" before the
 * handshake completed or for a plain side. Static strings. */
const char *wsg_tls_version(const wsg_side_t *s);
const char *wsg_tls_cipher(const wsg_side_t *s);

/* Server side: the name the client asked for with SNI, or NULL. Borrowed,
 * valid until the side is closed. */
const char *wsg_tls_sni(const wsg_side_t *s);

/* The side's OpenSSL object (an SSL *), for tests and diagnostics; NULL for
 * a plain side. Borrowed; do not change its state or BIOs. */
struct ssl_st *wsg_tls_ssl(const wsg_side_t *s);

#endif /* WSGATE_TLS_H */
