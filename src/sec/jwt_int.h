/*
 * Private to the jwt module (jwt.c, jwt_keys.c): the algorithm table, the
 * key set's layout and the strict base64url decoder both halves use.
 */
#ifndef WSGATE_JWT_INT_H
#define WSGATE_JWT_INT_H

#include <stddef.h>

#include <openssl/evp.h>

#include <wsgate/jwt.h>

typedef enum {
    WSG__JWT_HMAC = 1, /* kty oct, or a secret file */
    WSG__JWT_RSA,      /* RS* and PS* */
    WSG__JWT_EC,       /* ES*, each tied to one curve */
    WSG__JWT_ED25519,  /* EdDSA */
} wsg__jwt_kty_t;

typedef struct wsg__jwt_alg_s {
    const char *name; /* JOSE "alg" (RFC 7518 §3.1, RFC 8037 §3.1) */
    wsg__jwt_kty_t kty;
    const char *md; /* digest name for EVP_get_digestbyname; NULL for EdDSA */
    /* HMAC: least key length (RFC 7518 §3.2, the hash size); EC: octets of
     * r and of s, i.e. of the curve's field (RFC 7518 §3.4); else 0. */
    size_t size;
    int pss; /* RSA: 1 for PS* (RSASSA-PSS), 0 for RS* (PKCS #1 v1.5) */
} wsg__jwt_alg_t;

/* The supported algorithms; NULL when <name>[0..n) is none of them. */
const wsg__jwt_alg_t *wsg__jwt_alg_find(const char *name, size_t n);

typedef struct wsg__jwt_key_s {
    wsg__jwt_kty_t kty;
    char *kid;                 /* owned; NULL: the key has no kid */
    const wsg__jwt_alg_t *alg; /* static; NULL: any algorithm of kty fits */
    EVP_PKEY *pkey;            /* owned; RSA, EC and ED25519 */
    unsigned char *secret;     /* owned; HMAC */
    size_t secret_len;
    size_t ec_size; /* EC: field octets (32, 48, 66) */
} wsg__jwt_key_t;

struct wsg_jwt_keys_s {
    wsg__jwt_key_t *keys; /* owned array of n */
    size_t n;
};

/* Decodes unpadded base64url (RFC 7515 §2, RFC 4648 §5) in[0..n) into
 * <out>, which has room for n / 4 * 3 + 2 bytes. Refuses '=', characters
 * outside the alphabet, a length of 4k + 1 and non-zero unused trailing
 * bits (so each byte string has exactly one accepted encoding). Returns the
 * decoded length, or -1. */
long wsg__jwt_b64url_decode(const char *in, size_t n, unsigned char *out);

#endif /* WSGATE_JWT_INT_H */
