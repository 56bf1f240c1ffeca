/*
 * JWT verification (RFC 7519 over the JWS compact serialisation, RFC 7515
 * §7.1) with OpenSSL 3 and jansson, for SPEC §11 "Tokens".
 *
 * A token is checked in a fixed order: size, shape (three base64url parts,
 * canonical encoding), JOSE header (alg, kid, crit), signature, then the
 * payload's JSON and its claims.
 * Claims are only looked at once the signature holds, so an attacker learns
 * nothing from error codes about which claim rules are configured without
 * a validly signed token. Keys are picked by kid, then filtered by what the
 * header's alg fits (RFC 8725 §3.1: never let the token choose how a key is
 * used); each remaining key is tried, which handles key rotation where two
 * keys briefly share a kid or neither has one.
 *
 * What it deliberately does not do: JWE (encrypted tokens), the JWS JSON
 * serialisation, unencoded payloads (RFC 7797, which needs "crit"), nested
 * JWTs, "jku"/"x5u" key URLs (keys come only from the configured file), or
 * any claim rule SPEC §11 does not list (no "sub" or "jti" checks).
 *
 * Every path that may have left errors in OpenSSL's per-thread queue clears
 * it before returning, so that the TLS code on the same worker thread, which
 * reads that queue after SSL_read/SSL_write, never sees a stale error.
 */
#include "jwt_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

typedef struct claim_s {
    char *name;  /* owned */
    char *value; /* owned, NUL-terminated string form */
    size_t len;
} claim_t;

struct wsg_jwt_s {
    const wsg__jwt_alg_t *alg; /* static */
    int has_exp;
    int64_t exp_ms;
    claim_t *claims; /* owned array of nclaims */
    size_t nclaims;
};

/* ---- signatures ------------------------------------------------------------------ */

static int verify_hmac(const wsg__jwt_key_t *k, const wsg__jwt_alg_t *a, const unsigned char *in,
                       size_t inlen, const unsigned char *sig, size_t siglen) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    const EVP_MD *md = EVP_get_digestbyname(a->md);
    if (md == NULL || HMAC(md, k->secret, (int)k->secret_len, in, inlen, mac, &maclen) == NULL)
        return 0;
    /* The lengths are public (they follow from alg); the bytes are compared
     * in constant time so that timing does not reveal a correct prefix. */
    int ok = siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok;
}

/* JOSE carries an ECDSA signature as r || s, each the field size, big-endian
 * (RFC 7518 §3.4); OpenSSL verifies the DER SEQUENCE { r, s } of X9.62.
 * Returns a new DER buffer (OPENSSL_free) and its length, or NULL. */
static unsigned char *ecdsa_der(const unsigned char *sig, size_t size, int *derlen) {
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)size, NULL), *s = BN_bin2bn(sig + size, (int)size, NULL);
    unsigned char *der = NULL;
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NULL;
    }
    *derlen = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es); /* frees r and s too */
    return *derlen > 0 ? der : NULL;
}

static int verify_pkey(const wsg__jwt_key_t *k, const wsg__jwt_alg_t *a, const unsigned char *in,
                       size_t inlen, const unsigned char *sig, size_t siglen) {
    unsigned char *der = NULL;
    const EVP_MD *md = NULL;
    if (a->md != NULL && (md = EVP_get_digestbyname(a->md)) == NULL)
        return 0;
    switch (a->kty) {
    case WSG__JWT_RSA:
        /* The signature is exactly the modulus' length (RFC 8017 §8.2.2). */
        if (siglen != (size_t)EVP_PKEY_get_size(k->pkey))
            return 0;
        break;
    case WSG__JWT_EC: {
        if (siglen != 2 * a->size)
            return 0;
        int derlen = 0;
        if ((der = ecdsa_der(sig, a->size, &derlen)) == NULL)
            return 0;
        sig = der;
        siglen = (size_t)derlen;
        break;
    }
    case WSG__JWT_ED25519:
        if (siglen != 64) /* RFC 8032 §5.1.6 */
            return 0;
        break;
    default:
        return 0;
    }
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = mctx != NULL && EVP_DigestVerifyInit(mctx, &pctx, md, NULL, k->pkey) == 1;
    if (ok && a->kty == WSG__JWT_RSA && a->pss) {
        /* RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash. */
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1;
    } else if (ok && a->kty == WSG__JWT_RSA) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    }
    ok = ok && EVP_DigestVerify(mctx, sig, siglen, in, inlen) == 1;
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(der);
    return ok;
}

/* Whether a token signed with <a> may be checked against <k>. */
static int fits(const wsg__jwt_key_t *k, const wsg__jwt_alg_t *a) {
    if (k->kty != a->kty || (k->alg != NULL && k->alg != a))
        return 0;
    if (k->kty == WSG__JWT_EC)
        return k->ec_size == a->size; /* ES256 is P-256 only, and so on */
    if (k->kty == WSG__JWT_HMAC)
        return k->secret_len >= a->size;
    return 1;
}

/* ---- JSON parts -------------------------------------------------------------------- */

/* Decodes and parses one base64url JSON object part; NULL if it is not one.
 * Duplicate member names are refused: two "alg"s or two "exp"s could be
 * read differently by the signer and by us (RFC 7515 §5.2 step 4). */
static json_t *json_part(const char *s, size_t n, unsigned char *scratch) {
    long len = wsg__jwt_b64url_decode(s, n, scratch);
    if (len <= 0)
        return NULL;
    json_t *j = json_loadb((const char *)scratch, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* A NumericDate (RFC 7519 §2) as milliseconds: 1 ok, 0 absent, -1 not a
 * number or out of range. Fractional seconds are allowed and kept. */
static int numeric_date(json_t *payload, const char *name, int64_t *ms) {
    json_t *v = json_object_get(payload, name);
    if (v == NULL)
        return 0;
    if (json_is_integer(v)) {
        json_int_t s = json_integer_value(v);
        if (s > INT64_MAX / 1000 || s < -(INT64_MAX / 1000))
            return -1;
        *ms = (int64_t)s * 1000;
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v) * 1000.0;
        if (!isfinite(d) || d > 9.0e18 || d < -9.0e18)
            return -1;
        *ms = (int64_t)floor(d);
        return 1;
    }
    return -1;
}

static int64_t sat_add(int64_t a, uint64_t b) {
    if (b > (uint64_t)INT64_MAX || a > INT64_MAX - (int64_t)b)
        return INT64_MAX;
    return a + (int64_t)b;
}

static int string_is(json_t *v, const char *want) {
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, json_string_length(v)) == 0;
}

static wsg_jwt_status_t check_claims(json_t *payload, const wsg_jwt_rules_t *rules, int64_t now_ms,
                                     int64_t *exp_ms, int *has_exp) {
    int64_t nbf_ms = 0, iat_ms = 0;
    int e = numeric_date(payload, "exp", exp_ms), nb = numeric_date(payload, "nbf", &nbf_ms),
        ia = numeric_date(payload, "iat", &iat_ms);
    if (e < 0 || nb < 0 || ia < 0)
        return WSG_JWT_EMALFORMED;
    *has_exp = e;
    /* RFC 7519 §4.1.4: the current time must be before exp; §4.1.5: on or
     * after nbf. The leeway widens both ends. */
    if (e && now_ms >= sat_add(*exp_ms, rules->leeway_ms))
        return WSG_JWT_EEXPIRED;
    if (nb && sat_add(now_ms, rules->leeway_ms) < nbf_ms)
        return WSG_JWT_ENOTYET;
    /* An iat in the future (beyond the leeway) means a token from a clock
     * that is wrong or a forgery's guess; it is refused like an early nbf. */
    if (ia && sat_add(now_ms, rules->leeway_ms) < iat_ms)
        return WSG_JWT_ENOTYET;

    if (rules->issuer != NULL && !string_is(json_object_get(payload, "iss"), rules->issuer))
        return WSG_JWT_EISSUER;
    if (rules->audience != NULL) {
        /* RFC 7519 §4.1.3: a single string or an array of strings. */
        json_t *aud = json_object_get(payload, "aud");
        int ok = string_is(aud, rules->audience);
        for (size_t i = 0; !ok && json_is_array(aud) && i < json_array_size(aud); i++)
            ok = string_is(json_array_get(aud, i), rules->audience);
        if (!ok)
            return WSG_JWT_EAUDIENCE;
    }
    return WSG_JWT_OK;
}

/* ---- claims as strings ----------------------------------------------------------- */

static int usable_string(const char *s, size_t n) {
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* Renders every scalar top-level claim into jwt->claims. */
static int flatten(json_t *payload, wsg_jwt_t *jwt) {
    size_t cap = json_object_size(payload);
    const char *name;
    json_t *v;
    if (cap == 0)
        return 0;
    if ((jwt->claims = calloc(cap, sizeof(*jwt->claims))) == NULL)
        return -1;
    json_object_foreach(payload, name, v) {
        char num[32];
        const char *s = NULL;
        size_t n = 0;
        if (json_is_string(v)) {
            s = json_string_value(v);
            n = json_string_length(v);
            if (!usable_string(s, n))
                continue;
        } else if (json_is_integer(v)) {
            n = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            s = num;
        } else if (json_is_real(v)) {
            n = (size_t)snprintf(num, sizeof(num), "%.17g", json_real_value(v));
            s = num;
        } else if (json_is_boolean(v)) {
            s = json_is_true(v) ? "true" : "false";
            n = strlen(s);
        } else {
            continue; /* null, object, array */
        }
        claim_t *c = &jwt->claims[jwt->nclaims];
        c->name = strdup(name);
        c->value = malloc(n + 1);
        if (c->name == NULL || c->value == NULL) {
            free(c->name);
            free(c->value);
            return -1;
        }
        memcpy(c->value, s, n);
        c->value[n] = '\0';
        c->len = n;
        jwt->nclaims++;
    }
    return 0;
}

void wsg_jwt_free(wsg_jwt_t *jwt) {
    if (jwt == NULL)
        return;
    for (size_t i = 0; i < jwt->nclaims; i++) {
        free(jwt->claims[i].name);
        free(jwt->claims[i].value);
    }
    free(jwt->claims);
    free(jwt);
}

bool wsg_jwt_exp_ms(const wsg_jwt_t *jwt, int64_t *exp_ms) {
    if (!jwt->has_exp)
        return false;
    *exp_ms = jwt->exp_ms;
    return true;
}

const char *wsg_jwt_alg(const wsg_jwt_t *jwt) {
    return jwt->alg->name;
}

bool wsg_jwt_claim(const wsg_jwt_t *jwt, const char *name, const char **value, size_t *len) {
    for (size_t i = 0; i < jwt->nclaims; i++) {
        if (strcmp(jwt->claims[i].name, name) == 0) {
            *value = jwt->claims[i].value;
            *len = jwt->claims[i].len;
            return true;
        }
    }
    return false;
}

/* ---- the whole check ------------------------------------------------------------- */

wsg_jwt_status_t wsg_jwt_verify(const wsg_jwt_keys_t *keys, const wsg_jwt_rules_t *rules,
                                const char *token, size_t len, int64_t now_ms, wsg_jwt_t **out) {
    /* The decoded parts never exceed the token, so one stack buffer of the
     * largest accepted token holds any of them. */
    unsigned char scratch[WSG_JWT_MAX_TOKEN / 4 * 3 + 3], sig[WSG_JWT_MAX_TOKEN / 4 * 3 + 3];
    json_t *header = NULL, *payload = NULL;
    wsg_jwt_status_t st = WSG_JWT_EMALFORMED;
    const wsg__jwt_alg_t *alg = NULL;
    if (out != NULL)
        *out = NULL;
    if (len == 0 || len > WSG_JWT_MAX_TOKEN)
        return WSG_JWT_EMALFORMED;

    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return WSG_JWT_EMALFORMED; /* not exactly three parts: maybe a JWE (five) */
    size_t hlen = (size_t)(dot1 - token), plen = (size_t)(dot2 - dot1 - 1),
           slen = len - (size_t)(dot2 + 1 - token);

    if ((header = json_part(token, hlen, scratch)) == NULL)
        goto done;
    json_t *a = json_object_get(header, "alg"), *kid = json_object_get(header, "kid");
    if (!json_is_string(a) || (kid != NULL && !json_is_string(kid)) ||
        json_object_get(header, "crit") != NULL)
        goto done;
    if ((alg = wsg__jwt_alg_find(json_string_value(a), json_string_length(a))) == NULL) {
        st = WSG_JWT_EALG; /* "none" included: it is not in the table */
        goto done;
    }
    long siglen = wsg__jwt_b64url_decode(dot2 + 1, slen, sig);
    if (siglen <= 0)
        goto done;

    /* kid selection, then alg fitting, then the signature. */
    const char *want = kid ? json_string_value(kid) : NULL;
    int named = 0, fitting = 0, verified = 0;
    for (size_t i = 0; i < keys->n && !verified; i++) {
        const wsg__jwt_key_t *k = &keys->keys[i];
        if (want != NULL && k->kid != NULL && strcmp(want, k->kid) != 0)
            continue;
        named++;
        if (!fits(k, alg))
            continue;
        fitting++;
        const unsigned char *in = (const unsigned char *)token;
        size_t inlen = hlen + 1 + plen; /* the signing input: header.payload */
        verified = k->kty == WSG__JWT_HMAC ? verify_hmac(k, alg, in, inlen, sig, (size_t)siglen)
                                           : verify_pkey(k, alg, in, inlen, sig, (size_t)siglen);
    }
    if (!verified) {
        st = named == 0 ? WSG_JWT_ENOKEY : fitting == 0 ? WSG_JWT_EALG : WSG_JWT_ESIGNATURE;
        goto done;
    }

    /* The payload is parsed only once it is known to be the signer's: no
     * attacker-made JSON reaches the parser past the header. */
    if ((payload = json_part(dot1 + 1, plen, scratch)) == NULL)
        goto done;
    int64_t exp_ms = 0;
    int has_exp = 0;
    if ((st = check_claims(payload, rules, now_ms, &exp_ms, &has_exp)) != WSG_JWT_OK)
        goto done;
    if (out != NULL) {
        wsg_jwt_t *jwt = calloc(1, sizeof(*jwt));
        if (jwt == NULL || flatten(payload, jwt) != 0) {
            wsg_jwt_free(jwt);
            st = WSG_JWT_ENOMEM;
            goto done;
        }
        jwt->alg = alg;
        jwt->has_exp = has_exp;
        jwt->exp_ms = exp_ms;
        *out = jwt;
    }
done:
    json_decref(header);
    json_decref(payload);
    OPENSSL_cleanse(scratch, sizeof(scratch));
    ERR_clear_error();
    return st;
}

const char *wsg_jwt_strerror(wsg_jwt_status_t status) {
    switch (status) {
    case WSG_JWT_OK:
        return "ok";
    case WSG_JWT_EMALFORMED:
        return "malformed token";
    case WSG_JWT_EALG:
        return "algorithm not allowed";
    case WSG_JWT_ENOKEY:
        return "unknown key id";
    case WSG_JWT_ESIGNATURE:
        return "bad signature";
    case WSG_JWT_EEXPIRED:
        return "token expired";
    case WSG_JWT_ENOTYET:
        return "token not yet valid";
    case WSG_JWT_EISSUER:
        return "wrong issuer";
    case WSG_JWT_EAUDIENCE:
        return "wrong audience";
    case WSG_JWT_ENOMEM:
        return "out of memory";
    }
    return "unknown error";
}

int wsg_jwt_http_status(wsg_jwt_status_t status) {
    switch (status) {
    case WSG_JWT_OK:
        return 0;
    case WSG_JWT_EISSUER:
    case WSG_JWT_EAUDIENCE:
        return 403;
    case WSG_JWT_ENOMEM:
        return 500;
    default:
        return 401;
    }
}
