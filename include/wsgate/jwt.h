/*
 * JSON Web Tokens (RFC 7519) in the JWS compact form (RFC 7515 §7.1):
 * key sets, signature verification, claim checks (SPEC §11 "Tokens") and
 * the pure string helpers that find a token in a request and strip it.
 *
 * No I/O besides wsg_jwt_keys_load() reading one file, no event loop, no
 * global state: a key set is immutable once loaded and may be shared by
 * every worker thread; wsg_jwt_verify() is thread-safe.
 *
 * Algorithms: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512
 * and EdDSA (Ed25519 only). "none" is never accepted, and a token is only
 * checked against keys its "alg" fits: an HS token against an RSA or EC
 * key is refused, not "verified" with the public key as an HMAC secret.
 */
#ifndef WSGATE_JWT_H
#define WSGATE_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest token accepted, in bytes (a larger one is MALFORMED unread). */
#define WSG_JWT_MAX_TOKEN 8192

/* ---- key sets --------------------------------------------------------------- */

typedef struct wsg_jwt_keys_s wsg_jwt_keys_t;

/*
 * Reads the key file at <path> and returns a new key set in *out (caller
 * frees with wsg_jwt_keys_free()). The kind is told by content, after
 * leading whitespace:
 *   '{'          a JWKS (RFC 7517 §5): an object with a "keys" array. Keys
 *                of kty RSA (n, e; 2048 bits or more), EC (crv P-256, P-384,
 *                P-521; x, y), OKP (crv Ed25519; x) and oct (k, 32 bytes or
 *                more); optional "kid" and "alg" (pins the key to that one
 *                algorithm). Keys with "use" other than "sig" are skipped.
 *   "-----BEGIN" one or more PEM blocks, each a PUBLIC KEY or a CERTIFICATE
 *                (its public key is used); a private key is an error.
 *   otherwise    an HMAC secret: the file's bytes, one trailing "\n" or
 *                "\r\n" removed; at least 32 bytes (RFC 7518 §3.2).
 * Returns 0, or -EINVAL (bad content), -ENOENT/-EACCES/... (cannot read),
 * -ENOMEM, -EFBIG (over 1 MiB). On error *out is NULL and <err> (when
 * <errlen> > 0) holds one line saying where and what, without the path,
 * e.g. "keys[1].crv: expected \"P-256\", \"P-384\" or \"P-521\", got \"P-192\"".
 */
int wsg_jwt_keys_load(const char *path, wsg_jwt_keys_t **out, char *err, size_t errlen);

/* Same as wsg_jwt_keys_load() for file contents already in memory. */
int wsg_jwt_keys_parse(const void *data, size_t len, wsg_jwt_keys_t **out, char *err,
                       size_t errlen);

/* Frees a key set; NULL is fine. No wsg_jwt_verify() may be running on it. */
void wsg_jwt_keys_free(wsg_jwt_keys_t *keys);

/* Number of keys in the set (at least 1 for any set that loaded). */
size_t wsg_jwt_keys_count(const wsg_jwt_keys_t *keys);

/* ---- verification ----------------------------------------------------------- */

typedef enum {
    WSG_JWT_OK = 0,
    WSG_JWT_EMALFORMED = -1, /* too long, not 3 base64url parts, bad JSON, crit, bad claim type */
    WSG_JWT_EALG = -2,       /* alg none or unknown, or no key the alg fits */
    WSG_JWT_ENOKEY = -3,     /* no key with the token's kid */
    WSG_JWT_ESIGNATURE = -4, /* no fitting key verifies the signature */
    WSG_JWT_EEXPIRED = -5,   /* now >= exp + leeway */
    WSG_JWT_ENOTYET = -6,    /* now + leeway < nbf, or iat in the future by more than leeway */
    WSG_JWT_EISSUER = -7,    /* iss absent or not the configured issuer */
    WSG_JWT_EAUDIENCE = -8,  /* aud absent or without the configured audience */
    WSG_JWT_ENOMEM = -9,
} wsg_jwt_status_t;

/* What a verifier checks besides the signature. Zero-initialised = only
 * exp/nbf/iat without leeway. */
typedef struct wsg_jwt_rules_s {
    const char *issuer;   /* borrowed; NULL: iss not checked */
    const char *audience; /* borrowed; NULL: aud not checked */
    uint64_t leeway_ms;   /* clock skew allowed on exp, nbf and iat */
} wsg_jwt_rules_t;

/* A verified token's claims. */
typedef struct wsg_jwt_s wsg_jwt_t;

/*
 * Verifies token[0..len) (no NUL needed; no surrounding whitespace) at wall
 * clock time <now_ms> (milliseconds since the Unix epoch, not a monotonic
 * clock) against <keys> and <rules>:
 *   - the JOSE header must be a JSON object with a known "alg" (never
 *     "none"), no "crit" (RFC 7515 §4.1.11: wsgate understands no extension),
 *     and a string "kid" if any;
 *   - candidate keys are those whose kid equals the token's, or that have
 *     none (all keys when the token has no kid); among them those the alg
 *     fits; each is tried until one verifies;
 *   - exp, nbf and iat, when present, must be numbers (NumericDate);
 *     iss and aud are checked when <rules> names them.
 * JSON with duplicate member names, trailing bytes, non-canonical or padded
 * base64url is MALFORMED. The token is never copied into an error message.
 * On WSG_JWT_OK and <out> not NULL, *out is a new wsg_jwt_t (caller frees
 * with wsg_jwt_free()); otherwise *out is NULL. Thread-safe.
 */
wsg_jwt_status_t wsg_jwt_verify(const wsg_jwt_keys_t *keys, const wsg_jwt_rules_t *rules,
                                const char *token, size_t len, int64_t now_ms, wsg_jwt_t **out);

void wsg_jwt_free(wsg_jwt_t *jwt);

/* The token's exp in milliseconds since the epoch in *exp_ms, and true;
 * false when it has none. Add the leeway for a close_on_expiry deadline. */
bool wsg_jwt_exp_ms(const wsg_jwt_t *jwt, int64_t *exp_ms);

/* The token's "alg" ("RS256"); borrowed, valid while <jwt> lives. */
const char *wsg_jwt_alg(const wsg_jwt_t *jwt);

/*
 * Top-level claim <name> as a string, for `jwt:CLAIM` sticky keys and
 * claims_to_headers: a JSON string as is, an integer in decimal, another
 * number as printf "%.17g", true/false as "true"/"false". Returns true and
 * sets *value / *len (borrowed, NUL-terminated, valid while <jwt> lives).
 * Returns false when the claim is absent, null, an object or an array, or
 * a string that is empty or holds a control character (it could not be a
 * header value).
 */
bool wsg_jwt_claim(const wsg_jwt_t *jwt, const char *name, const char **value, size_t *len);

/* A short static reason for logs ("token expired"); never the token. */
const char *wsg_jwt_strerror(wsg_jwt_status_t status);

/* The HTTP status SPEC §11 answers <status> with: 0 for OK, 403 for
 * ISSUER and AUDIENCE, 500 for ENOMEM, 401 for the rest (with
 * `WWW-Authenticate: Bearer error="invalid_token"`). */
int wsg_jwt_http_status(wsg_jwt_status_t status);

/* ---- where the token comes from (SPEC §11 "from") ----------------------------- */

typedef enum {
    WSG_JWT_FROM_HEADER = 1,  /* "header": Authorization: Bearer TOKEN */
    WSG_JWT_FROM_SUBPROTOCOL, /* "subprotocol": Sec-WebSocket-Protocol: bearer, TOKEN */
    WSG_JWT_FROM_COOKIE,      /* "cookie:NAME" */
    WSG_JWT_FROM_QUERY,       /* "query:NAME" */
} wsg_jwt_from_kind_t;

typedef struct wsg_jwt_from_s {
    wsg_jwt_from_kind_t kind;
    const char *name; /* COOKIE and QUERY: borrowed from the parsed string */
    size_t name_len;
} wsg_jwt_from_t;

/* Parses one entry of "from". Returns 0, or -EINVAL when <s> is none of
 * the four forms or NAME is empty or holds a character that cannot be in a
 * cookie name or query key (space, ';', ',', '=', '&', '?', '#', a CTL). */
int wsg_jwt_from_parse(const char *s, wsg_jwt_from_t *out);

typedef enum {
    WSG_JWT_SRC_NONE = 0,       /* this source holds no token */
    WSG_JWT_SRC_FOUND = 1,      /* *tok / *tlen point into the input */
    WSG_JWT_SRC_CONFLICT = -1,  /* two different tokens in it: 401 */
    WSG_JWT_SRC_MALFORMED = -2, /* it names a token but holds none ("Bearer", "bearer" last) */
} wsg_jwt_src_t;

/* One Authorization header value: scheme "Bearer" (case-insensitive), one
 * or more spaces, a b64token (RFC 6750 §2.1). Another scheme is NONE. The
 * caller drops the header when it forwards a request whose token it used. */
wsg_jwt_src_t wsg_jwt_from_authorization(const char *v, size_t n, const char **tok, size_t *tlen);

/*
 * The functions below also write what is to be forwarded without the token
 * to <rest> (at least <n> bytes; the result is never longer than the input;
 * not NUL-terminated) and its length to *rest_len, when they return FOUND
 * and <rest> is not NULL. A *rest_len of 0 means: drop the header.
 */

/* One Sec-WebSocket-Protocol value, a comma list: the element "bearer"
 * (case-insensitive) and the element after it are the pair; rest is the
 * value with the pair cut out (the other elements and the separators before
 * them as sent). The same pair twice is one token. */
wsg_jwt_src_t wsg_jwt_from_subprotocol(const char *v, size_t n, const char **tok, size_t *tlen,
                                       char *rest, size_t *rest_len);

/* One Cookie header value ("a=1; NAME=TOKEN; b=2", RFC 6265 §4.2.1): the
 * value of cookie <name> (case-sensitive), surrounding double quotes
 * removed; an empty value is NONE. Rest is the value with every NAME=TOKEN
 * cut out (the other cookies and the separators before them as sent). */
wsg_jwt_src_t wsg_jwt_from_cookie(const char *v, size_t n, const char *name, size_t name_len,
                                  const char **tok, size_t *tlen, char *rest, size_t *rest_len);

/* A request target ("/p?a=1&NAME=TOKEN"): the raw (not percent-decoded)
 * value of query parameter <name>; an empty value is NONE. Rest is the path
 * and the other parameters in order ("/p?a=1"; "/p" when none is left). */
wsg_jwt_src_t wsg_jwt_from_query(const char *target, size_t n, const char *name, size_t name_len,
                                 const char **tok, size_t *tlen, char *rest, size_t *rest_len);

#endif /* WSGATE_JWT_H */
