/*
 * JWT key sets: a JWKS, PEM public keys or an HMAC secret, told apart by
 * the file's content (SPEC §11 "keys"), turned into OpenSSL 3 EVP_PKEYs
 * and secrets that wsg_jwt_verify() uses read-only from any thread.
 *
 * Loading is where keys get judged, once, instead of on every token: an
 * RSA modulus under 2048 bits, an EC point not on its curve, an HMAC
 * secret shorter than 32 bytes, a key whose "alg" contradicts its type
 * are configuration errors with the JSON path in the message. What it
 * deliberately does not do: fetch a JWKS over HTTP (a file is read at start
 * and on reload), keep private key material (a PEM private key is refused,
 * a JWK's "d" is ignored), or support X.509 chains in "x5c".
 */
#include "jwt_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* A key file larger than this is refused: a JWKS of a few dozen keys is
 * tens of kilobytes, and a reload must not read an arbitrary file whole. */
#define MAX_KEY_FILE (1024 * 1024)
#define MIN_RSA_BITS 2048 /* RFC 7518 §3.3 and §3.5 */
#define MIN_SECRET 32     /* RFC 7518 §3.2 for HS256; longer for HS384/512 */

static const wsg__jwt_alg_t algs[] = {
    {"HS256", WSG__JWT_HMAC, "SHA256", 32, 0}, {"HS384", WSG__JWT_HMAC, "SHA384", 48, 0},
    {"HS512", WSG__JWT_HMAC, "SHA512", 64, 0}, {"RS256", WSG__JWT_RSA, "SHA256", 0, 0},
    {"RS384", WSG__JWT_RSA, "SHA384", 0, 0},   {"RS512", WSG__JWT_RSA, "SHA512", 0, 0},
    {"PS256", WSG__JWT_RSA, "SHA256", 0, 1},   {"PS384", WSG__JWT_RSA, "SHA384", 0, 1},
    {"PS512", WSG__JWT_RSA, "SHA512", 0, 1},   {"ES256", WSG__JWT_EC, "SHA256", 32, 0},
    {"ES384", WSG__JWT_EC, "SHA384", 48, 0},   {"ES512", WSG__JWT_EC, "SHA512", 66, 0},
    {"EdDSA", WSG__JWT_ED25519, NULL, 0, 0},
};

const wsg__jwt_alg_t *wsg__jwt_alg_find(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        if (strlen(algs[i].name) == n && memcmp(algs[i].name, name, n) == 0)
            return &algs[i];
    }
    return NULL;
}

/* ---- base64url ----------------------------------------------------------------- */

static int b64v(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long wsg__jwt_b64url_decode(const char *in, size_t n, unsigned char *out) {
    if (n % 4 == 1)
        return -1;
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        int a = b64v((unsigned char)in[i]), b = b64v((unsigned char)in[i + 1]),
            c = b64v((unsigned char)in[i + 2]), d = b64v((unsigned char)in[i + 3]);
        if ((a | b | c | d) < 0)
            return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    /* A tail of 2 characters carries 12 bits for one byte, 3 carry 18 for
     * two: the 4 or 2 bits left over must be zero, otherwise several
     * strings would decode to the same bytes (RFC 4648 §3.5). */
    if (n - i == 2) {
        int a = b64v((unsigned char)in[i]), b = b64v((unsigned char)in[i + 1]);
        if ((a | b) < 0 || (b & 0x0f) != 0)
            return -1;
        out[o++] = (unsigned char)(a << 2 | b >> 4);
    } else if (n - i == 3) {
        int a = b64v((unsigned char)in[i]), b = b64v((unsigned char)in[i + 1]),
            c = b64v((unsigned char)in[i + 2]);
        if ((a | b | c) < 0 || (c & 0x03) != 0)
            return -1;
        uint32_t v = (uint32_t)a << 12 | (uint32_t)b << 6 | (uint32_t)c;
        out[o++] = (unsigned char)(v >> 10);
        out[o++] = (unsigned char)(v >> 2);
    }
    return (long)o;
}

/* ---- errors -------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t cap;
} err_t;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
fail(err_t *e, const char *fmt, ...) {
    if (e->cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->buf, e->cap, fmt, ap);
        va_end(ap);
    }
    ERR_clear_error();
    return -EINVAL;
}

static int oom(err_t *e) {
    if (e->cap > 0)
        snprintf(e->buf, e->cap, "out of memory");
    ERR_clear_error();
    return -ENOMEM;
}

/* ---- the set under construction -------------------------------------------------- */

static void key_clear(wsg__jwt_key_t *k) {
    free(k->kid);
    EVP_PKEY_free(k->pkey);
    if (k->secret != NULL)
        OPENSSL_cleanse(k->secret, k->secret_len);
    free(k->secret);
    memset(k, 0, sizeof(*k));
}

void wsg_jwt_keys_free(wsg_jwt_keys_t *keys) {
    if (keys == NULL)
        return;
    for (size_t i = 0; i < keys->n; i++)
        key_clear(&keys->keys[i]);
    free(keys->keys);
    free(keys);
}

size_t wsg_jwt_keys_count(const wsg_jwt_keys_t *keys) {
    return keys->n;
}

/* Appends *k (taken: cleared here either way). */
static int add_key(wsg_jwt_keys_t *set, wsg__jwt_key_t *k, err_t *e) {
    wsg__jwt_key_t *nk = realloc(set->keys, (set->n + 1) * sizeof(*nk));
    if (nk == NULL) {
        key_clear(k);
        return oom(e);
    }
    set->keys = nk;
    set->keys[set->n++] = *k;
    memset(k, 0, sizeof(*k));
    return 0;
}

/* Judges an EVP_PKEY from PEM (taken) and fills *k, where <what> names it. */
static int key_from_pkey(EVP_PKEY *pkey, wsg__jwt_key_t *k, const char *what, err_t *e) {
    k->pkey = pkey;
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        k->kty = WSG__JWT_RSA;
        if (EVP_PKEY_get_bits(pkey) < MIN_RSA_BITS)
            return fail(e, "%s: RSA key of %d bits, at least %d needed (RFC 7518 §3.3)", what,
                        EVP_PKEY_get_bits(pkey), MIN_RSA_BITS);
        return 0;
    case EVP_PKEY_EC: {
        char group[64];
        size_t glen = 0;
        k->kty = WSG__JWT_EC;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) != 1)
            return fail(e, "%s: EC key without a named curve", what);
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            k->ec_size = 32;
        else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            k->ec_size = 48;
        else if (strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0)
            k->ec_size = 66;
        else
            return fail(e, "%s: EC curve %s, expected P-256, P-384 or P-521", what, group);
        return 0;
    }
    case EVP_PKEY_ED25519:
        k->kty = WSG__JWT_ED25519;
        return 0;
    default:
        return fail(e, "%s: unsupported key type %s (RSA, EC or Ed25519 expected)", what,
                    OBJ_nid2sn(EVP_PKEY_get_base_id(pkey)));
    }
}

/* ---- PEM ------------------------------------------------------------------------ */

static int parse_pem(const void *data, size_t len, wsg_jwt_keys_t *set, err_t *e) {
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL)
        return oom(e);
    int rc = 0;
    for (int block = 1;; block++) {
        char *name = NULL, *header = NULL;
        unsigned char *der = NULL;
        long derlen = 0;
        if (PEM_read_bio(bio, &name, &header, &der, &derlen) != 1) {
            unsigned long err = ERR_peek_last_error();
            ERR_clear_error();
            if (ERR_GET_REASON(err) != PEM_R_NO_START_LINE || block == 1)
                rc = fail(e, "PEM block %d: unreadable", block);
            break;
        }
        char what[48];
        snprintf(what, sizeof(what), "PEM block %d", block);
        const unsigned char *p = der;
        EVP_PKEY *pkey = NULL;
        if (strcmp(name, "PUBLIC KEY") == 0) {
            pkey = d2i_PUBKEY(NULL, &p, derlen);
        } else if (strcmp(name, "CERTIFICATE") == 0) {
            X509 *x = d2i_X509(NULL, &p, derlen);
            if (x != NULL)
                pkey = X509_get_pubkey(x);
            X509_free(x);
        } else if (strstr(name, "PRIVATE KEY") != NULL) {
            rc = fail(e, "%s: a private key; give the public key (openssl pkey -pubout)", what);
        } else {
            rc = fail(e, "%s: \"%s\", expected PUBLIC KEY or CERTIFICATE", what, name);
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(der);
        if (rc != 0)
            break;
        if (pkey == NULL) {
            rc = fail(e, "%s: not a valid key", what);
            break;
        }
        wsg__jwt_key_t k = {0};
        if ((rc = key_from_pkey(pkey, &k, what, e)) != 0) {
            key_clear(&k);
            break;
        }
        if ((rc = add_key(set, &k, e)) != 0)
            break;
    }
    BIO_free(bio);
    return rc;
}

/* ---- JWKS (RFC 7517, RFC 7518 §6, RFC 8037 §2) ----------------------------------- */

/* Decodes the base64url string member <name> of <jwk> into a new buffer. */
static int b64_member(json_t *jwk, const char *name, const char *path, unsigned char **out,
                      size_t *outlen, err_t *e) {
    json_t *v = json_object_get(jwk, name);
    if (v == NULL)
        return fail(e, "%s.%s: missing", path, name);
    if (!json_is_string(v))
        return fail(e, "%s.%s: expected a base64url string", path, name);
    size_t n = json_string_length(v);
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    if (buf == NULL)
        return oom(e);
    long got = wsg__jwt_b64url_decode(json_string_value(v), n, buf);
    if (got <= 0) {
        free(buf);
        return fail(e, "%s.%s: not unpadded base64url", path, name);
    }
    *out = buf;
    *outlen = (size_t)got;
    return 0;
}

/* Builds an EVP_PKEY of <type> ("RSA", "EC") from <params>. */
static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld) {
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static int jwk_rsa(json_t *jwk, const char *path, wsg__jwt_key_t *k, err_t *e) {
    unsigned char *n = NULL, *ex = NULL;
    size_t nlen = 0, exlen = 0;
    int rc;
    if ((rc = b64_member(jwk, "n", path, &n, &nlen, e)) != 0 ||
        (rc = b64_member(jwk, "e", path, &ex, &exlen, e)) != 0)
        goto out;
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(ex, (int)exlen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bn != NULL && be != NULL && bld != NULL &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        pkey = from_params("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    if (pkey == NULL) {
        rc = fail(e, "%s: not a valid RSA public key", path);
        goto out;
    }
    rc = key_from_pkey(pkey, k, path, e);
out:
    free(n);
    free(ex);
    return rc;
}

static int jwk_ec(json_t *jwk, const char *path, wsg__jwt_key_t *k, err_t *e) {
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    size_t size;
    if (crv != NULL && strcmp(crv, "P-256") == 0)
        size = 32;
    else if (crv != NULL && strcmp(crv, "P-384") == 0)
        size = 48;
    else if (crv != NULL && strcmp(crv, "P-521") == 0)
        size = 66;
    else
        return fail(e, "%s.crv: expected \"P-256\", \"P-384\" or \"P-521\", got %s%s%s", path,
                    crv ? "\"" : "", crv ? crv : "nothing", crv ? "\"" : "");
    unsigned char *x = NULL, *y = NULL, point[1 + 2 * 66];
    size_t xlen = 0, ylen = 0;
    int rc;
    if ((rc = b64_member(jwk, "x", path, &x, &xlen, e)) != 0 ||
        (rc = b64_member(jwk, "y", path, &y, &ylen, e)) != 0)
        goto out;
    /* RFC 7518 §6.2.1.2: x and y are the full field size, leading zeros kept. */
    if (xlen != size || ylen != size) {
        rc = fail(e, "%s: x and y must be %zu bytes each for %s, got %zu and %zu", path, size, crv,
                  xlen, ylen);
        goto out;
    }
    point[0] = 0x04; /* SEC 1 §2.3.3 uncompressed point */
    memcpy(point + 1, x, size);
    memcpy(point + 1 + size, y, size);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld != NULL &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, crv, 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size) == 1)
        pkey = from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    /* fromdata decodes the point; the explicit check makes sure it is on
     * the curve, so an invalid-curve point never reaches a verification. */
    EVP_PKEY_CTX *ctx = pkey ? EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL) : NULL;
    int ok = ctx != NULL && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(pkey);
        rc = fail(e, "%s: not a valid %s public key (point not on the curve?)", path, crv);
        goto out;
    }
    rc = key_from_pkey(pkey, k, path, e);
out:
    free(x);
    free(y);
    return rc;
}

static int jwk_okp(json_t *jwk, const char *path, wsg__jwt_key_t *k, err_t *e) {
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    if (crv == NULL || strcmp(crv, "Ed25519") != 0)
        return fail(e, "%s.crv: expected \"Ed25519\", got %s%s%s", path, crv ? "\"" : "",
                    crv ? crv : "nothing", crv ? "\"" : "");
    unsigned char *x = NULL;
    size_t xlen = 0;
    int rc = b64_member(jwk, "x", path, &x, &xlen, e);
    if (rc != 0)
        return rc;
    EVP_PKEY *pkey = NULL;
    if (xlen == 32)
        pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen);
    free(x);
    if (pkey == NULL)
        return fail(e, "%s.x: expected a 32-byte Ed25519 public key, got %zu bytes", path, xlen);
    return key_from_pkey(pkey, k, path, e);
}

static int jwk_oct(json_t *jwk, const char *path, wsg__jwt_key_t *k, err_t *e) {
    k->kty = WSG__JWT_HMAC;
    int rc = b64_member(jwk, "k", path, &k->secret, &k->secret_len, e);
    if (rc != 0)
        return rc;
    if (k->secret_len < MIN_SECRET)
        return fail(e, "%s.k: %zu bytes, at least %d needed (RFC 7518 §3.2)", path, k->secret_len,
                    MIN_SECRET);
    return 0;
}

/* Fills *k from keys[i]; returns 1 when the key is to be skipped. */
static int parse_jwk(json_t *jwk, size_t i, wsg__jwt_key_t *k, err_t *e) {
    char path[32];
    snprintf(path, sizeof(path), "keys[%zu]", i);
    if (!json_is_object(jwk))
        return fail(e, "%s: expected an object", path);
    json_t *use = json_object_get(jwk, "use");
    if (use != NULL && !json_is_string(use))
        return fail(e, "%s.use: expected a string", path);
    if (use != NULL && strcmp(json_string_value(use), "sig") != 0)
        return 1; /* an encryption key published next to the signing keys */

    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    int rc;
    if (kty == NULL)
        return fail(e, "%s.kty: missing or not a string", path);
    if (strcmp(kty, "RSA") == 0)
        rc = jwk_rsa(jwk, path, k, e);
    else if (strcmp(kty, "EC") == 0)
        rc = jwk_ec(jwk, path, k, e);
    else if (strcmp(kty, "OKP") == 0)
        rc = jwk_okp(jwk, path, k, e);
    else if (strcmp(kty, "oct") == 0)
        rc = jwk_oct(jwk, path, k, e);
    else
        return fail(e, "%s.kty: expected \"RSA\", \"EC\", \"OKP\" or \"oct\", got \"%s\"", path,
                    kty);
    if (rc != 0)
        return rc;

    json_t *kid = json_object_get(jwk, "kid");
    if (kid != NULL) {
        if (!json_is_string(kid))
            return fail(e, "%s.kid: expected a string", path);
        if ((k->kid = strdup(json_string_value(kid))) == NULL)
            return oom(e);
    }
    json_t *alg = json_object_get(jwk, "alg");
    if (alg != NULL) {
        const char *a = json_string_value(alg);
        if (a == NULL)
            return fail(e, "%s.alg: expected a string", path);
        k->alg = wsg__jwt_alg_find(a, strlen(a));
        if (k->alg == NULL)
            return fail(e, "%s.alg: unsupported \"%s\"", path, a);
        if (k->alg->kty != k->kty || (k->kty == WSG__JWT_EC && k->alg->size != k->ec_size) ||
            (k->kty == WSG__JWT_HMAC && k->secret_len < k->alg->size))
            return fail(e, "%s.alg: \"%s\" does not fit this %s key", path, a, kty);
    }
    return 0;
}

static int parse_jwks(const void *data, size_t len, wsg_jwt_keys_t *set, err_t *e) {
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(e, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
    int rc = 0;
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(keys)) {
        rc = fail(e, "keys: expected a JWKS, an object with a \"keys\" array");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(keys); i++) {
        wsg__jwt_key_t k = {0};
        rc = parse_jwk(json_array_get(keys, i), i, &k, e);
        if (rc == 1) {
            key_clear(&k);
            rc = 0;
            continue;
        }
        if (rc != 0) {
            key_clear(&k);
            goto out;
        }
        if ((rc = add_key(set, &k, e)) != 0)
            goto out;
    }
    if (set->n == 0)
        rc = fail(e, "keys: no signature key in the set");
out:
    json_decref(root);
    return rc;
}

/* ---- secret --------------------------------------------------------------------- */

static int parse_secret(const unsigned char *data, size_t len, wsg_jwt_keys_t *set, err_t *e) {
    if (len > 0 && data[len - 1] == '\n') {
        len--;
        if (len > 0 && data[len - 1] == '\r')
            len--;
    }
    if (len < MIN_SECRET)
        return fail(e, "HMAC secret of %zu bytes, at least %d needed (RFC 7518 §3.2)", len,
                    MIN_SECRET);
    wsg__jwt_key_t k = {.kty = WSG__JWT_HMAC, .secret_len = len};
    if ((k.secret = malloc(len)) == NULL)
        return oom(e);
    memcpy(k.secret, data, len);
    return add_key(set, &k, e);
}

/* ---- entry points --------------------------------------------------------------- */

int wsg_jwt_keys_parse(const void *data, size_t len, wsg_jwt_keys_t **out, char *err,
                       size_t errlen) {
    err_t e = {err, errlen};
    const unsigned char *p = data;
    size_t skip = 0;
    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    while (skip < len && (p[skip] == ' ' || p[skip] == '\t' || p[skip] == '\r' || p[skip] == '\n'))
        skip++;
    wsg_jwt_keys_t *set = calloc(1, sizeof(*set));
    if (set == NULL)
        return oom(&e);
    int rc;
    if (skip < len && p[skip] == '{')
        rc = parse_jwks(data, len, set, &e);
    else if (len - skip >= 10 && memcmp(p + skip, "-----BEGIN", 10) == 0)
        rc = parse_pem(data, len, set, &e);
    else
        rc = parse_secret(p, len, set, &e);
    if (rc != 0) {
        wsg_jwt_keys_free(set);
        return rc;
    }
    *out = set;
    return 0;
}

int wsg_jwt_keys_load(const char *path, wsg_jwt_keys_t **out, char *err, size_t errlen) {
    err_t e = {err, errlen};
    struct stat st = {0};
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        int rc = -errno;
        if (errlen > 0)
            snprintf(err, errlen, "cannot open: %s", strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size > MAX_KEY_FILE) {
        int rc = -EINVAL;
        if (errlen > 0 && st.st_size > MAX_KEY_FILE)
            snprintf(err, errlen, "larger than %d bytes", MAX_KEY_FILE);
        else if (errlen > 0)
            snprintf(err, errlen, "not a regular file");
        if (st.st_size > MAX_KEY_FILE)
            rc = -EFBIG;
        close(fd);
        return rc;
    }
    size_t size = (size_t)st.st_size, got = 0;
    unsigned char *buf = malloc(size + 1);
    if (buf == NULL) {
        close(fd);
        return oom(&e);
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0) {
            int rc = r == 0 ? -EIO : -errno;
            if (errlen > 0)
                snprintf(err, errlen, "cannot read: %s", strerror(-rc));
            OPENSSL_cleanse(buf, size);
            free(buf);
            close(fd);
            return rc;
        }
        got += (size_t)r;
    }
    close(fd);
    int rc = wsg_jwt_keys_parse(buf, size, out, err, errlen);
    OPENSSL_cleanse(buf, size); /* it may be a shared secret */
    free(buf);
    return rc;
}
