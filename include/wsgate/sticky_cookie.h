/*
 * The sticky cookie of SPEC §10: a value that names a pool's backend,
 * authenticated with HMAC-SHA256 under the pool's secret, so that any wsgate
 * instance with the same secret decodes it with no shared state; and the
 * header work around it (finding it in a Cookie header, removing it from the
 * request the backend gets, writing the Set-Cookie line). Pure: no I/O, no
 * allocation, no clock (the caller passes the time).
 *
 * A value is 34 characters of base64url (no padding) over 25 bytes:
 *
 *   [0]      version, 1
 *   [1..4]   backend id: HMAC(secret, "wsg-id" 0 pool 0 address), first 4 bytes,
 *            so that a decoder finds the backend without trying each one,
 *            and the value says nothing of the address to whoever holds it
 *   [5..8]   issue time, seconds since the Unix epoch, big-endian
 *   [9..24]  HMAC(secret, "wsg-v1" 0 pool 0 address 0 bytes[0..9)), first 16 bytes
 *
 * A client cannot make a value that names another backend (or another
 * pool, or is younger than it is) without the secret; the whole value is
 * compared in constant time (CRYPTO_memcmp).
 */
#ifndef WSGATE_STICKY_COOKIE_H
#define WSGATE_STICKY_COOKIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <wsgate/config.h>

#define WSG_STICKY_MIN_SECRET 16  /* bytes; -t refuses a shorter secret */
#define WSG_STICKY_VALUE_LEN 34   /* characters of an encoded value */
#define WSG_STICKY_SKEW_S 300     /* an issue time this far ahead of our clock passes */

typedef enum {
    WSG_STICKY_OK = 0,
    WSG_STICKY_MALFORMED, /* not a value wsgate writes: length, alphabet, version */
    WSG_STICKY_FORGED,    /* its MAC does not match: other secret, pool or backend, or tampered */
    WSG_STICKY_EXPIRED,   /* older than max_age_s, or issued too far in the future */
} wsg_sticky_status_t;

/* What a well-formed value says, before its MAC is checked. */
typedef struct wsg_sticky_value_s {
    uint32_t id;     /* wsg_sticky_id() of the backend it claims */
    uint32_t issued; /* seconds since the epoch */
} wsg_sticky_value_t;

/* The id of backend <address> of <pool> under <secret>[0..slen). */
uint32_t wsg_sticky_id(const char *secret, size_t slen, const char *pool, const char *address);

/* Writes the value naming backend <address> of <pool>, issued at <issued>,
 * into <out> (WSG_STICKY_VALUE_LEN characters and a NUL). Returns 0, or -1
 * if OpenSSL failed (out is then ""). */
int wsg_sticky_encode(const char *secret, size_t slen, const char *pool, const char *address,
                      uint32_t issued, char out[WSG_STICKY_VALUE_LEN + 1]);

/* Reads the structure of <v>[0..n) into <out>: WSG_STICKY_OK or
 * WSG_STICKY_MALFORMED. Says nothing of its authenticity. */
wsg_sticky_status_t wsg_sticky_parse(const char *v, size_t n, wsg_sticky_value_t *out);

/* Whether <v>[0..n) is a genuine value for backend <address> of <pool>
 * under <secret>, not older than <max_age_s> (0: no limit) at <now_s>. */
wsg_sticky_status_t wsg_sticky_verify(const char *secret, size_t slen, const char *pool,
                                      const char *address, const char *v, size_t n,
                                      uint64_t now_s, unsigned max_age_s);

const char *wsg_sticky_status_name(wsg_sticky_status_t s);

/* Removes every cookie named <name> from the Cookie header value
 * <v>[0..n), in place, keeping the others and their order ("a=1; b=2").
 * Returns the new length (0: nothing is left, drop the header). */
size_t wsg_sticky_strip(char *v, size_t n, const char *name);

/* Applies wsg_sticky_strip() to every Cookie header of the request head
 * <head>[0..len) that wsgate built for the backend ("Name: value" lines,
 * CRLF, ending with an empty line), in place, and drops a Cookie header
 * left empty. Returns the new length. */
size_t wsg_sticky_filter_head(char *head, size_t len, const char *name);

/* Writes "Set-Cookie: NAME=VALUE; Path=P; HttpOnly; SameSite=S[; Secure]
 * [; Max-Age=N]\r\n" for <ck> into <out>: Secure when ck->secure says so,
 * "auto" meaning <tls> (the listener serves TLS), and always with
 * SameSite=None. Returns the length, or -1 if <cap> is too small. */
ssize_t wsg_sticky_set_cookie(const wsg_cookie_conf_t *ck, const char *value, bool tls,
                              char *out, size_t cap);

/* Inserts <line>[0..n) as the last header of the complete head
 * <head>[0..len) (which ends with "\r\n\r\n"), within <cap>. Returns the
 * new length, or -1 when it does not fit or the head does not end so. */
ssize_t wsg_sticky_head_insert(char *head, size_t len, size_t cap, const char *line, size_t n);

#endif /* WSGATE_STICKY_COOKIE_H */
