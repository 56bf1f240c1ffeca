/*
 * Unit tests for the JWT module: key sets, verification and the token-source
 * helpers.
 *
 * main() makes throwaway keys with the openssl CLI (RSA 2048 twice, RSA
 * 1024, P-256, P-384, P-521, Ed25519, a self-signed certificate) in a
 * temporary directory, removed after the run; no key is committed. Tokens
 * are signed here through the OpenSSL API with the private keys, with this
 * file's own base64url encoder and its own DER -> r||s conversion for ECDSA,
 * so the module's decoding and conversion are checked against an
 * independent implementation. The known-answer vectors of RFC 7515
 * Appendix A.1-A.3 and RFC 8037 Appendix A.4 must verify as published.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <uv.h>

#include <wsgate/jwt.h>

#include "../../src/sec/jwt_int.h" /* wsg__jwt_b64url_decode, for its own table */

#define NOW_S 1700000000LL
#define NOW_MS (NOW_S * 1000)

static char dir[64];

static const char *P(const char *name) {
    static char bufs[8][128];
    static unsigned n;
    char *b = bufs[n++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
    return b;
}

static void write_file(const char *name, const void *data, size_t len) {
    FILE *f = fopen(P(name), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* ---- the test's own encoders and signer -------------------------------------------- */

static size_t b64url(const unsigned char *in, size_t n, char *out) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = al[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = al[v & 63];
    }
    out[o] = '\0';
    return o;
}

static char *b64s(const char *s) {
    char *out = malloc(strlen(s) * 2 + 4);
    b64url((const unsigned char *)s, strlen(s), out);
    return out;
}

static EVP_PKEY *load_priv(const char *name) {
    FILE *f = fopen(P(name), "r");
    ck_assert_ptr_nonnull(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_ptr_nonnull(k);
    return k;
}

static const char *md_of(const char *alg) {
    if (strstr(alg, "256"))
        return "SHA256";
    if (strstr(alg, "384"))
        return "SHA384";
    if (strstr(alg, "512"))
        return "SHA512";
    return NULL;
}

/* Signs input[0..n) for <alg> with <pkey> or <secret>; returns the raw
 * JOSE signature length written to <sig>. */
static size_t sign_raw(const char *alg, EVP_PKEY *pkey, const unsigned char *secret,
                       size_t secret_len, const char *input, size_t n, unsigned char *sig) {
    const EVP_MD *md = md_of(alg) ? EVP_get_digestbyname(md_of(alg)) : NULL;
    if (alg[0] == 'H') {
        unsigned int len = 0;
        ck_assert_ptr_nonnull(
            HMAC(md, secret, (int)secret_len, (const unsigned char *)input, n, sig, &len));
        return len;
    }
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    ck_assert_int_eq(EVP_DigestSignInit(mctx, &pctx, md, NULL, pkey), 1);
    if (alg[0] == 'P') {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    unsigned char der[1024];
    size_t dlen = sizeof(der);
    ck_assert_int_eq(EVP_DigestSign(mctx, der, &dlen, (const unsigned char *)input, n), 1);
    EVP_MD_CTX_free(mctx);
    if (alg[0] != 'E' || strcmp(alg, "EdDSA") == 0) {
        memcpy(sig, der, dlen);
        return dlen;
    }
    /* DER SEQUENCE { r, s } -> r || s, each padded to the field size. */
    size_t size = strcmp(alg, "ES256") == 0 ? 32 : strcmp(alg, "ES384") == 0 ? 48 : 66;
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    ck_assert_ptr_nonnull(es);
    ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)size), (int)size);
    ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + size, (int)size), (int)size);
    ECDSA_SIG_free(es);
    return 2 * size;
}

/* A compact token with header <hdr> and payload <pay> (JSON texts). */
static char *make_token(const char *alg, EVP_PKEY *pkey, const unsigned char *secret,
                        size_t secret_len, const char *hdr, const char *pay) {
    char *h = b64s(hdr), *p = b64s(pay);
    size_t n = strlen(h) + 1 + strlen(p);
    char *tok = malloc(n + 1200);
    snprintf(tok, n + 1, "%s.%s", h, p);
    unsigned char sig[1024];
    size_t slen = sign_raw(alg, pkey, secret, secret_len, tok, n, sig);
    tok[n] = '.';
    b64url(sig, slen, tok + n + 1);
    free(h);
    free(p);
    return tok;
}

static char default_payload[512];

static const char *payload_default(void) {
    snprintf(default_payload, sizeof(default_payload),
             "{\"sub\":\"alice\",\"iss\":\"https://id.example.com\",\"aud\":\"chat\","
             "\"exp\":%lld,\"nbf\":%lld,\"iat\":%lld}",
             NOW_S + 3600, NOW_S - 60, NOW_S - 60);
    return default_payload;
}

static char *hdr_for(const char *alg, const char *kid) {
    static char buf[128];
    if (kid != NULL)
        snprintf(buf, sizeof(buf), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
    else
        snprintf(buf, sizeof(buf), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    return buf;
}

static wsg_jwt_keys_t *keys_text(const char *text) {
    char err[256];
    wsg_jwt_keys_t *k = NULL;
    int rc = wsg_jwt_keys_parse(text, strlen(text), &k, err, sizeof(err));
    ck_assert_msg(rc == 0, "keys: %s", err);
    return k;
}

static wsg_jwt_keys_t *keys_file(const char *name) {
    char err[256];
    wsg_jwt_keys_t *k = NULL;
    int rc = wsg_jwt_keys_load(P(name), &k, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s: %s", name, err);
    return k;
}

static const wsg_jwt_rules_t no_rules = {0};

static wsg_jwt_status_t verify(const wsg_jwt_keys_t *k, const wsg_jwt_rules_t *r, const char *t,
                               int64_t now) {
    return wsg_jwt_verify(k, r, t, strlen(t), now, NULL);
}

/* A JWK (public members only) for <pkey>, with <kid> and <alg> when not NULL. */
static json_t *jwk_of(EVP_PKEY *pkey, const char *kid, const char *alg) {
    json_t *j = json_object();
    char b[1200];
    unsigned char raw[600];
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        BIGNUM *n = NULL, *e = NULL;
        ck_assert_int_eq(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n), 1);
        ck_assert_int_eq(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e), 1);
        json_object_set_new(j, "kty", json_string("RSA"));
        b64url(raw, (size_t)BN_bn2bin(n, raw), b);
        json_object_set_new(j, "n", json_string(b));
        b64url(raw, (size_t)BN_bn2bin(e, raw), b);
        json_object_set_new(j, "e", json_string(b));
        BN_free(n);
        BN_free(e);
    } else if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC) {
        BIGNUM *x = NULL, *y = NULL;
        int bits = EVP_PKEY_get_bits(pkey), size = (bits + 7) / 8;
        ck_assert_int_eq(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
        ck_assert_int_eq(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
        json_object_set_new(j, "kty", json_string("EC"));
        json_object_set_new(j, "crv",
                            json_string(bits == 256   ? "P-256"
                                        : bits == 384 ? "P-384"
                                                      : "P-521"));
        BN_bn2binpad(x, raw, size);
        b64url(raw, (size_t)size, b);
        json_object_set_new(j, "x", json_string(b));
        BN_bn2binpad(y, raw, size);
        b64url(raw, (size_t)size, b);
        json_object_set_new(j, "y", json_string(b));
        BN_free(x);
        BN_free(y);
    } else {
        size_t len = sizeof(raw);
        ck_assert_int_eq(EVP_PKEY_get_raw_public_key(pkey, raw, &len), 1);
        json_object_set_new(j, "kty", json_string("OKP"));
        json_object_set_new(j, "crv", json_string("Ed25519"));
        b64url(raw, len, b);
        json_object_set_new(j, "x", json_string(b));
    }
    if (kid != NULL)
        json_object_set_new(j, "kid", json_string(kid));
    if (alg != NULL)
        json_object_set_new(j, "alg", json_string(alg));
    return j;
}

/* A JWKS text of the given JWKs (taken). */
static char *jwks_of(json_t *a, json_t *b, json_t *c) {
    json_t *keys = json_array(), *root = json_object();
    json_t *all[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (all[i] != NULL)
            json_array_append_new(keys, all[i]);
    }
    json_object_set_new(root, "keys", keys);
    char *s = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    return s;
}

static const unsigned char secret64[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* ---- known-answer vectors ---------------------------------------------------------- */

/* RFC 7515 A.1-A.3 sign this payload; its exp is 1300819380. */
#define RFC_PAYLOAD                                                                                \
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVl" \
    "fQ"
#define RFC_BEFORE_EXP 1300819379000LL

START_TEST(test_jwt_rfc7515_a1_hs256_verifies) {
    wsg_jwt_keys_t *k =
        keys_text("{\"keys\":[{\"kty\":\"oct\",\"k\":\"AyM1SysPpbyDfgZld3umj1qzKOb"
                  "wVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow\"}]}");
    const char *t = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." RFC_PAYLOAD
                    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    wsg_jwt_t *jwt = NULL;
    ck_assert_int_eq(wsg_jwt_verify(k, &no_rules, t, strlen(t), RFC_BEFORE_EXP, &jwt), WSG_JWT_OK);
    const char *v;
    size_t n;
    int64_t exp;
    ck_assert(wsg_jwt_claim(jwt, "iss", &v, &n));
    ck_assert_str_eq(v, "joe");
    ck_assert(wsg_jwt_claim(jwt, "http://example.com/is_root", &v, &n));
    ck_assert_str_eq(v, "true");
    ck_assert(wsg_jwt_exp_ms(jwt, &exp));
    ck_assert_int_eq(exp, 1300819380000LL);
    ck_assert_str_eq(wsg_jwt_alg(jwt), "HS256");
    wsg_jwt_free(jwt);
    ck_assert_int_eq(verify(k, &no_rules, t, 1300819380000LL), WSG_JWT_EEXPIRED);
    wsg_jwt_keys_free(k);
}
END_TEST

START_TEST(test_jwt_rfc7515_a2_rs256_verifies) {
    wsg_jwt_keys_t *k = keys_text("{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":"
                                  "\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQ"
                                  "oTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-"
                                  "SFd2lZS-pCgNMsD1W_YpRPEwOWvG6"
                                  "b32690r2jZ47soMZo9wGzjb_7OMg0LOL-"
                                  "bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg"
                                  "665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-"
                                  "DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91"
                                  "kzk2PAcDTW9gb54h4FRWyuXpoQ\"}]}");
    const char *t =
        "eyJhbGciOiJSUzI1NiJ9." RFC_PAYLOAD
        ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2"
        "Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_"
        "nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBM"
        "Hlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-"
        "eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w"
        "9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    ck_assert_int_eq(verify(k, &no_rules, t, RFC_BEFORE_EXP), WSG_JWT_OK);
    wsg_jwt_keys_free(k);
}
END_TEST

START_TEST(test_jwt_rfc7515_a3_es256_verifies) {
    wsg_jwt_keys_t *k = keys_text("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
                                  "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                                  "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}");
    const char *t =
        "eyJhbGciOiJFUzI1NiJ9." RFC_PAYLOAD
        ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3"
        "-Kg6NU1Q";
    ck_assert_int_eq(verify(k, &no_rules, t, RFC_BEFORE_EXP), WSG_JWT_OK);
    wsg_jwt_keys_free(k);
}
END_TEST

/* RFC 8037 A.4 signs the text "Example of Ed25519 signing", not a JSON
 * object: a correct signature gets past the signature check and fails on
 * the payload (MALFORMED); any other gets SIGNATURE. */
START_TEST(test_jwt_rfc8037_ed25519_signature_verifies) {
    wsg_jwt_keys_t *k = keys_text("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                                  "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}");
    char t[] = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt"
               "7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_EMALFORMED);
    char *s = strrchr(t, '.') + 5;
    *s = *s == 'A' ? 'B' : 'A';
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_ESIGNATURE);
    wsg_jwt_keys_free(k);
}
END_TEST

START_TEST(test_jwt_b64url_is_strict) {
    static const struct {
        const char *in;
        long len;
        const char *label;
    } t[] = {
        {"QQ", 1, "one byte"},
        {"QUI", 2, "two bytes"},
        {"QUJD", 3, "three bytes"},
        {"-_-_", 3, "url alphabet"},
        {"QR", -1, "non-zero unused bits (1 byte)"},
        {"QUJ", -1, "non-zero unused bits (2 bytes)"},
        {"QQ==", -1, "padding"},
        {"Q", -1, "length 4k+1"},
        {"+/+/", -1, "standard alphabet"},
        {"QU I", -1, "space"},
        {"", 0, "empty"},
    };
    unsigned char out[16];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_msg(wsg__jwt_b64url_decode(t[i].in, strlen(t[i].in), out) == t[i].len, "%s",
                      t[i].label);
    ck_assert(wsg__jwt_b64url_decode("QUJD", 4, out) == 3 && memcmp(out, "ABC", 3) == 0);
}
END_TEST

/* ---- every algorithm, with keys made for this run ------------------------------------ */

static const struct {
    const char *alg, *priv, *pub;
} algs[] = {
    {"HS256", NULL, NULL},
    {"HS384", NULL, NULL},
    {"HS512", NULL, NULL},
    {"RS256", "rsa1.key", "rsa1.pub"},
    {"RS384", "rsa1.key", "rsa1.pub"},
    {"RS512", "rsa1.key", "rsa1.pub"},
    {"PS256", "rsa1.key", "rsa1.pub"},
    {"PS384", "rsa1.key", "rsa1.pub"},
    {"PS512", "rsa1.key", "rsa1.pub"},
    {"ES256", "p256.key", "p256.pub"},
    {"ES384", "p384.key", "p384.pub"},
    {"ES512", "p521.key", "p521.pub"},
    {"EdDSA", "ed.key", "ed.pub"},
};
#define NALGS (sizeof(algs) / sizeof(algs[0]))

static char *token_for(size_t i, const char *kid, const char *payload) {
    EVP_PKEY *pk = algs[i].priv ? load_priv(algs[i].priv) : NULL;
    char *t = make_token(algs[i].alg, pk, secret64, 64, hdr_for(algs[i].alg, kid), payload);
    EVP_PKEY_free(pk);
    return t;
}

static wsg_jwt_keys_t *pem_keys_for(size_t i) {
    return algs[i].pub ? keys_file(algs[i].pub) : keys_file("secret64");
}

START_TEST(test_jwt_every_algorithm_verifies) {
    wsg_jwt_rules_t rules = {.issuer = "https://id.example.com", .audience = "chat"};
    for (size_t i = 0; i < NALGS; i++) {
        char *t = token_for(i, NULL, payload_default());
        /* from the PEM file (or secret file) */
        wsg_jwt_keys_t *k = pem_keys_for(i);
        wsg_jwt_t *jwt = NULL;
        ck_assert_msg(wsg_jwt_verify(k, &rules, t, strlen(t), NOW_MS, &jwt) == WSG_JWT_OK, "%s",
                      algs[i].alg);
        const char *v;
        size_t n;
        ck_assert(wsg_jwt_claim(jwt, "sub", &v, &n) && n == 5 && strcmp(v, "alice") == 0);
        ck_assert_str_eq(wsg_jwt_alg(jwt), algs[i].alg);
        wsg_jwt_free(jwt);
        wsg_jwt_keys_free(k);
        /* from a JWKS made of the same key */
        if (algs[i].priv != NULL) {
            EVP_PKEY *pk = load_priv(algs[i].priv);
            char *jwks = jwks_of(jwk_of(pk, "k1", NULL), NULL, NULL);
            k = keys_text(jwks);
            ck_assert_msg(verify(k, &rules, t, NOW_MS) == WSG_JWT_OK, "%s jwks", algs[i].alg);
            wsg_jwt_keys_free(k);
            free(jwks);
            EVP_PKEY_free(pk);
        }
        free(t);
    }
}
END_TEST

START_TEST(test_jwt_tampering_any_byte_fails) {
    for (size_t i = 0; i < NALGS; i++) {
        char *t = token_for(i, NULL, payload_default());
        wsg_jwt_keys_t *k = pem_keys_for(i);
        size_t len = strlen(t);
        ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
        for (size_t j = 0; j < len; j++) {
            char was = t[j];
            if (was == '.')
                continue;
            t[j] = was == 'A' ? 'B' : 'A';
            wsg_jwt_status_t st = verify(k, &no_rules, t, NOW_MS);
            ck_assert_msg(st != WSG_JWT_OK, "%s: byte %zu of %zu changed, still OK", algs[i].alg, j,
                          len);
            t[j] = was;
        }
        /* a signature bit flipped rather than a character swapped */
        char *sig = strrchr(t, '.') + 1;
        unsigned char raw[1024];
        long n = wsg__jwt_b64url_decode(sig, strlen(sig), raw);
        ck_assert_int_gt(n, 0);
        for (long b = 0; b < n; b++) {
            raw[b] ^= 0x01;
            b64url(raw, (size_t)n, sig);
            ck_assert_msg(verify(k, &no_rules, t, NOW_MS) == WSG_JWT_ESIGNATURE, "%s: sig byte %ld",
                          algs[i].alg, b);
            raw[b] ^= 0x01;
        }
        b64url(raw, (size_t)n, sig);
        ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
        wsg_jwt_keys_free(k);
        free(t);
    }
}
END_TEST

START_TEST(test_jwt_signature_from_another_key_fails) {
    EVP_PKEY *rsa2 = load_priv("rsa2.key");
    char *t = make_token("RS256", rsa2, NULL, 0, hdr_for("RS256", NULL), payload_default());
    wsg_jwt_keys_t *k = keys_file("rsa1.pub");
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_ESIGNATURE);
    wsg_jwt_keys_free(k);
    free(t);
    /* an HMAC with another secret */
    t = make_token("HS256", NULL, (const unsigned char *)"another secret of at least 32 bytes..",
                   37, hdr_for("HS256", NULL), payload_default());
    k = keys_file("secret64");
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_ESIGNATURE);
    wsg_jwt_keys_free(k);
    free(t);
    EVP_PKEY_free(rsa2);
}
END_TEST

START_TEST(test_jwt_refuses_alg_none) {
    wsg_jwt_keys_t *k = keys_file("secret64");
    const char *nones[] = {"none", "None", "NONE", "nOnE", ""};
    for (size_t i = 0; i < sizeof(nones) / sizeof(nones[0]); i++) {
        char hdr[64], *h, *p = b64s(payload_default()), tok[1024];
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"}", nones[i]);
        h = b64s(hdr);
        snprintf(tok, sizeof(tok), "%s.%s.", h, p);
        ck_assert_int_eq(verify(k, &no_rules, tok, NOW_MS), WSG_JWT_EALG);
        snprintf(tok, sizeof(tok), "%s.%s.c2ln", h, p);
        ck_assert_int_eq(verify(k, &no_rules, tok, NOW_MS), WSG_JWT_EALG);
        free(h);
        free(p);
    }
    wsg_jwt_keys_free(k);
}
END_TEST

/* The classic confusion: an HS256 token whose "secret" is the RSA public
 * key file itself. It must never be checked as an HMAC. */
START_TEST(test_jwt_refuses_hs_token_against_rsa_or_ec_key) {
    const char *pubs[] = {"rsa1.pub", "p256.pub", "ed.pub"};
    for (size_t i = 0; i < 3; i++) {
        FILE *f = fopen(P(pubs[i]), "rb");
        unsigned char pem[4096];
        size_t n = fread(pem, 1, sizeof(pem), f);
        fclose(f);
        char *t = make_token("HS256", NULL, pem, n, hdr_for("HS256", NULL), payload_default());
        wsg_jwt_keys_t *k = keys_file(pubs[i]);
        ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_EALG);
        wsg_jwt_keys_free(k);
        free(t);
    }
}
END_TEST

START_TEST(test_jwt_key_alg_and_curve_pin_the_algorithm) {
    EVP_PKEY *rsa = load_priv("rsa1.key"), *p256 = load_priv("p256.key");
    char *jwks = jwks_of(jwk_of(rsa, NULL, "RS256"), NULL, NULL);
    wsg_jwt_keys_t *k = keys_text(jwks);
    char *t = make_token("PS256", rsa, NULL, 0, hdr_for("PS256", NULL), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_EALG);
    free(t);
    t = make_token("RS256", rsa, NULL, 0, hdr_for("RS256", NULL), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    free(t);
    wsg_jwt_keys_free(k);
    free(jwks);
    /* ES384 names P-384: a P-256 key does not fit it. */
    k = keys_file("p256.pub");
    char hdr[] = "{\"alg\":\"ES384\"}";
    t = make_token("ES256", p256, NULL, 0, hdr, payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_EALG);
    free(t);
    wsg_jwt_keys_free(k);
    /* a 32-byte secret is long enough for HS256, not for HS512 (RFC 7518 §3.2) */
    k = keys_text("0123456789abcdef0123456789abcdef");
    t = make_token("HS512", NULL, (const unsigned char *)"0123456789abcdef0123456789abcdef", 32,
                   hdr_for("HS512", NULL), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_EALG);
    free(t);
    t = make_token("HS256", NULL, (const unsigned char *)"0123456789abcdef0123456789abcdef", 32,
                   hdr_for("HS256", NULL), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    free(t);
    wsg_jwt_keys_free(k);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p256);
}
END_TEST

/* The TLS code on a worker reads OpenSSL's per-thread error queue after
 * SSL_read/SSL_write: a failed verification or key load must leave it empty. */
START_TEST(test_jwt_leaves_no_openssl_errors) {
    for (size_t i = 0; i < NALGS; i++) {
        char *t = token_for(i, NULL, payload_default());
        wsg_jwt_keys_t *k = pem_keys_for(i);
        char *sig = strrchr(t, '.') + 1;
        sig[3] = sig[3] == 'A' ? 'B' : 'A';
        ERR_clear_error();
        ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_ESIGNATURE);
        ck_assert_msg(ERR_peek_error() == 0, "%s left an error", algs[i].alg);
        wsg_jwt_keys_free(k);
        free(t);
    }
    const char *bad[] = {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                         "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":"
                         "\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\",\"y\":"
                         "\"x_FFzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}"};
    for (size_t i = 0; i < 2; i++) {
        char err[256];
        wsg_jwt_keys_t *k = NULL;
        ck_assert_int_eq(wsg_jwt_keys_parse(bad[i], strlen(bad[i]), &k, err, sizeof(err)), -EINVAL);
        ck_assert_msg(ERR_peek_error() == 0, "key load %zu left an error", i);
        ck_assert_msg(strstr(err, i == 0 ? "not a valid key" : "not a valid P-256") != NULL,
                      "%s", err); /* failed inside OpenSSL, not before */
    }
}
END_TEST

/* One key set, verified from several threads at once (workers share it). */
static wsg_jwt_keys_t *mt_keys;
static char *mt_tokens[NALGS];
static int mt_ok[4];

static void mt_verify(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < NALGS; i++)
            mt_ok[id] += verify(mt_keys, &no_rules, mt_tokens[i], NOW_MS) == WSG_JWT_OK;
    }
}

START_TEST(test_jwt_verify_is_thread_safe) {
    EVP_PKEY *r1 = load_priv("rsa1.key"), *p256 = load_priv("p256.key"),
             *p384 = load_priv("p384.key"), *p521 = load_priv("p521.key"),
             *ed = load_priv("ed.key");
    json_t *keys = json_array(), *root = json_object();
    EVP_PKEY *all[] = {r1, p256, p384, p521, ed};
    for (size_t i = 0; i < 5; i++)
        json_array_append_new(keys, jwk_of(all[i], NULL, NULL));
    json_t *oct = json_object();
    char k64[128];
    b64url(secret64, 64, k64);
    json_object_set_new(oct, "kty", json_string("oct"));
    json_object_set_new(oct, "k", json_string(k64));
    json_array_append_new(keys, oct);
    json_object_set_new(root, "keys", keys);
    char *text = json_dumps(root, 0);
    json_decref(root);
    mt_keys = keys_text(text);
    free(text);
    for (size_t i = 0; i < NALGS; i++)
        mt_tokens[i] = token_for(i, NULL, payload_default());
    uv_thread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(uv_thread_create(&th[i], mt_verify, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&th[i]);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(mt_ok[i], 20 * (int)NALGS);
    for (size_t i = 0; i < NALGS; i++)
        free(mt_tokens[i]);
    wsg_jwt_keys_free(mt_keys);
    for (size_t i = 0; i < 5; i++)
        EVP_PKEY_free(all[i]);
}
END_TEST

/* ---- malformed tokens ------------------------------------------------------------- */

static char *hs(const char *hdr, const char *pay) {
    return make_token("HS256", NULL, secret64, 64, hdr, pay);
}

START_TEST(test_jwt_refuses_malformed_tokens) {
    wsg_jwt_keys_t *k = keys_file("secret64");
    const char *H = "{\"alg\":\"HS256\"}";
    static char exp_string[] = "{\"exp\":\"tomorrow\"}";
    struct {
        char *tok;
        const char *label;
    } t[] = {
        {hs("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", payload_default()), "duplicate alg"},
        {hs("{\"alg\":\"HS256\"} x", payload_default()), "garbage after header"},
        {hs("[\"HS256\"]", payload_default()), "header not an object"},
        {hs("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", payload_default()), "crit"},
        {hs("{\"alg\":\"HS256\",\"kid\":7}", payload_default()), "kid not a string"},
        {hs("{\"alg\":256}", payload_default()), "alg not a string"},
        {hs(H, "{\"exp\":1,\"exp\":99999999999}"), "duplicate exp"},
        {hs(H, "not json"), "payload not JSON"},
        {hs(H, "[1,2]"), "payload not an object"},
        {hs(H, exp_string), "exp not a number"},
        {hs(H, "{\"nbf\":true}"), "nbf not a number"},
        {hs(H, "{\"exp\":1e300}"), "exp out of range"},
        {hs(H, "{\"sub\":\"a\"}  {}"), "two payload objects"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ck_assert_msg(verify(k, &no_rules, t[i].tok, NOW_MS) == WSG_JWT_EMALFORMED, "%s: %d",
                      t[i].label, verify(k, &no_rules, t[i].tok, NOW_MS));
        free(t[i].tok);
    }

    char *good = hs(H, payload_default());
    size_t len = strlen(good);
    char buf[WSG_JWT_MAX_TOKEN + 64];
    ck_assert_int_eq(verify(k, &no_rules, good, NOW_MS), WSG_JWT_OK);
    const char *shapes[] = {"", ".", "..", "a.b", "a.b.c.d", "abc"};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        ck_assert_msg(verify(k, &no_rules, shapes[i], NOW_MS) == WSG_JWT_EMALFORMED, "'%s'",
                      shapes[i]);
    /* a fourth and fifth part (a JWE has five) */
    snprintf(buf, sizeof(buf), "%s.x.y", good);
    ck_assert_int_eq(verify(k, &no_rules, buf, NOW_MS), WSG_JWT_EMALFORMED);
    /* padded base64 on the signature, and on the header */
    snprintf(buf, sizeof(buf), "%s=", good);
    ck_assert_int_eq(verify(k, &no_rules, buf, NOW_MS), WSG_JWT_EMALFORMED);
    snprintf(buf, sizeof(buf), "eyJhbGciOiJIUzI1NiJ9=%s", strchr(good, '.'));
    ck_assert_int_eq(verify(k, &no_rules, buf, NOW_MS), WSG_JWT_EMALFORMED);
    /* truncated signature, by one character and by a whole group */
    memcpy(buf, good, len - 1);
    ck_assert_int_ne(wsg_jwt_verify(k, &no_rules, buf, len - 1, NOW_MS, NULL), WSG_JWT_OK);
    ck_assert_int_ne(wsg_jwt_verify(k, &no_rules, good, len - 4, NOW_MS, NULL), WSG_JWT_OK);
    /* ... and by a whole byte, canonically re-encoded: a wrong-length MAC */
    {
        char *sig = strrchr(good, '.') + 1;
        unsigned char raw[128];
        long n = wsg__jwt_b64url_decode(sig, strlen(sig), raw);
        snprintf(buf, sizeof(buf), "%.*s", (int)(sig - good), good);
        b64url(raw, (size_t)n - 1, buf + (sig - good));
        ck_assert_int_eq(verify(k, &no_rules, buf, NOW_MS), WSG_JWT_ESIGNATURE);
    }
    /* whitespace around or inside */
    snprintf(buf, sizeof(buf), " %s", good);
    ck_assert_int_eq(verify(k, &no_rules, buf, NOW_MS), WSG_JWT_EMALFORMED);
    /* over the size cap, even with a valid token as its prefix */
    memset(buf, 'A', sizeof(buf));
    memcpy(buf, good, len);
    ck_assert_int_eq(wsg_jwt_verify(k, &no_rules, buf, WSG_JWT_MAX_TOKEN + 1, NOW_MS, NULL),
                     WSG_JWT_EMALFORMED);
    free(good);
    /* unknown algorithm */
    good = hs("{\"alg\":\"HS257\"}", payload_default());
    ck_assert_int_eq(verify(k, &no_rules, good, NOW_MS), WSG_JWT_EALG);
    free(good);
    wsg_jwt_keys_free(k);
}
END_TEST

/* ---- claims ------------------------------------------------------------------------ */

static wsg_jwt_status_t claims_case(const char *payload, const wsg_jwt_rules_t *r) {
    wsg_jwt_keys_t *k = keys_file("secret64");
    char *t = hs("{\"alg\":\"HS256\"}", payload);
    wsg_jwt_status_t st = verify(k, r, t, NOW_MS);
    free(t);
    wsg_jwt_keys_free(k);
    return st;
}

START_TEST(test_jwt_checks_time_claims_with_leeway) {
    char p[128];
    wsg_jwt_rules_t r = {0}, lee = {.leeway_ms = 2000};
    snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW_S - 1);
    ck_assert_int_eq(claims_case(p, &r), WSG_JWT_EEXPIRED);
    ck_assert_int_eq(claims_case(p, &lee), WSG_JWT_OK);
    snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW_S); /* exp == now: expired (RFC 7519 §4.1.4) */
    ck_assert_int_eq(claims_case(p, &r), WSG_JWT_EEXPIRED);
    snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW_S - 3);
    ck_assert_int_eq(claims_case(p, &lee), WSG_JWT_EEXPIRED);
    snprintf(p, sizeof(p), "{\"exp\":%lld.5}", NOW_S); /* fractional NumericDate */
    ck_assert_int_eq(claims_case(p, &r), WSG_JWT_OK);
    snprintf(p, sizeof(p), "{\"nbf\":%lld}", NOW_S + 1);
    ck_assert_int_eq(claims_case(p, &r), WSG_JWT_ENOTYET);
    ck_assert_int_eq(claims_case(p, &lee), WSG_JWT_OK);
    snprintf(p, sizeof(p), "{\"nbf\":%lld}", NOW_S);
    ck_assert_int_eq(claims_case(p, &r), WSG_JWT_OK);
    snprintf(p, sizeof(p), "{\"iat\":%lld}", NOW_S + 10);
    ck_assert_int_eq(claims_case(p, &r), WSG_JWT_ENOTYET);
    snprintf(p, sizeof(p), "{\"iat\":%lld}", NOW_S - 86400);
    ck_assert_int_eq(claims_case(p, &r), WSG_JWT_OK);
    ck_assert_int_eq(claims_case("{}", &r), WSG_JWT_OK); /* no exp: valid, never expires */
    ck_assert_int_eq(wsg_jwt_http_status(WSG_JWT_EEXPIRED), 401);
    ck_assert_int_eq(wsg_jwt_http_status(WSG_JWT_ENOTYET), 401);
}
END_TEST

START_TEST(test_jwt_checks_issuer_and_audience) {
    wsg_jwt_rules_t r = {.issuer = "https://id.example.com", .audience = "chat"};
    ck_assert_int_eq(claims_case("{\"iss\":\"https://id.example.com\",\"aud\":\"chat\"}", &r),
                     WSG_JWT_OK);
    ck_assert_int_eq(
        claims_case("{\"iss\":\"https://id.example.com\",\"aud\":[\"x\",\"chat\"]}", &r),
        WSG_JWT_OK);
    ck_assert_int_eq(claims_case("{\"iss\":\"https://evil.example.com\",\"aud\":\"chat\"}", &r),
                     WSG_JWT_EISSUER);
    ck_assert_int_eq(claims_case("{\"iss\":\"https://id.example.com/\",\"aud\":\"chat\"}", &r),
                     WSG_JWT_EISSUER);
    ck_assert_int_eq(claims_case("{\"aud\":\"chat\"}", &r), WSG_JWT_EISSUER);
    ck_assert_int_eq(claims_case("{\"iss\":\"https://id.example.com\",\"aud\":\"chat2\"}", &r),
                     WSG_JWT_EAUDIENCE);
    ck_assert_int_eq(claims_case("{\"iss\":\"https://id.example.com\",\"aud\":[\"x\",1]}", &r),
                     WSG_JWT_EAUDIENCE);
    ck_assert_int_eq(claims_case("{\"iss\":\"https://id.example.com\",\"aud\":[]}", &r),
                     WSG_JWT_EAUDIENCE);
    ck_assert_int_eq(claims_case("{\"iss\":\"https://id.example.com\"}", &r), WSG_JWT_EAUDIENCE);
    ck_assert_int_eq(claims_case("{\"iss\":\"https://id.example.com\",\"aud\":{\"chat\":1}}", &r),
                     WSG_JWT_EAUDIENCE);
    /* not configured: not checked */
    ck_assert_int_eq(claims_case("{\"iss\":\"x\",\"aud\":\"y\"}", &no_rules), WSG_JWT_OK);
    ck_assert_int_eq(wsg_jwt_http_status(WSG_JWT_EISSUER), 403);
    ck_assert_int_eq(wsg_jwt_http_status(WSG_JWT_EAUDIENCE), 403);
    ck_assert_int_eq(wsg_jwt_http_status(WSG_JWT_ESIGNATURE), 401);
    ck_assert_int_eq(wsg_jwt_http_status(WSG_JWT_OK), 0);
    for (int s = WSG_JWT_ENOMEM; s <= 0; s++)
        ck_assert(strlen(wsg_jwt_strerror((wsg_jwt_status_t)s)) > 0);
}
END_TEST

START_TEST(test_jwt_claims_as_strings) {
    wsg_jwt_keys_t *k = keys_file("secret64");
    char *t = hs("{\"alg\":\"HS256\"}",
                 "{\"sub\":\"u-1\",\"n\":42,\"neg\":-7,\"r\":1.5,\"t\":true,\"f\":false,"
                 "\"nul\":null,\"o\":{\"a\":1},\"a\":[1],\"e\":\"\",\"crlf\":\"a\\r\\nX-Evil: 1\","
                 "\"zero\":\"a\\u0000b\",\"utf\":\"caf\\u00e9\",\"exp\":1700003600.25}");
    wsg_jwt_t *jwt = NULL;
    ck_assert_int_eq(wsg_jwt_verify(k, &no_rules, t, strlen(t), NOW_MS, &jwt), WSG_JWT_EMALFORMED);
    free(t);
    /* the same without the NUL (jansson refuses \u0000 by default: MALFORMED above) */
    t = hs("{\"alg\":\"HS256\"}",
           "{\"sub\":\"u-1\",\"n\":42,\"neg\":-7,\"r\":1.5,\"t\":true,\"f\":false,"
           "\"nul\":null,\"o\":{\"a\":1},\"a\":[1],\"e\":\"\",\"crlf\":\"a\\r\\nX-Evil: 1\","
           "\"utf\":\"caf\\u00e9\",\"exp\":1700003600.25}");
    ck_assert_int_eq(wsg_jwt_verify(k, &no_rules, t, strlen(t), NOW_MS, &jwt), WSG_JWT_OK);
    static const struct {
        const char *name, *value;
    } want[] = {{"sub", "u-1"},
                {"n", "42"},
                {"neg", "-7"},
                {"r", "1.5"},
                {"t", "true"},
                {"f", "false"},
                {"utf", "caf\xc3\xa9"},
                {"nul", NULL},
                {"o", NULL},
                {"a", NULL},
                {"e", NULL},
                {"crlf", NULL},
                {"missing", NULL},
                {"SUB", NULL}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *v = NULL;
        size_t n = 0;
        bool got = wsg_jwt_claim(jwt, want[i].name, &v, &n);
        if (want[i].value == NULL) {
            ck_assert_msg(!got, "%s should be absent", want[i].name);
        } else {
            ck_assert_msg(got, "%s missing", want[i].name);
            ck_assert_str_eq(v, want[i].value);
            ck_assert_uint_eq(n, strlen(want[i].value));
        }
    }
    int64_t exp = 0;
    ck_assert(wsg_jwt_exp_ms(jwt, &exp));
    ck_assert_int_eq(exp, 1700003600250LL);
    wsg_jwt_free(jwt);
    free(t);
    t = hs("{\"alg\":\"HS256\"}", "{}");
    ck_assert_int_eq(wsg_jwt_verify(k, &no_rules, t, strlen(t), NOW_MS, &jwt), WSG_JWT_OK);
    ck_assert(!wsg_jwt_exp_ms(jwt, &exp));
    wsg_jwt_free(jwt);
    free(t);
    wsg_jwt_keys_free(k);
}
END_TEST

/* ---- key sets ------------------------------------------------------------------------ */

START_TEST(test_jwt_jwks_selects_key_by_kid) {
    EVP_PKEY *r1 = load_priv("rsa1.key"), *r2 = load_priv("rsa2.key"), *ec = load_priv("p256.key");
    char *jwks = jwks_of(jwk_of(r1, "a", NULL), jwk_of(r2, "b", NULL), jwk_of(ec, "c", NULL));
    wsg_jwt_keys_t *k = keys_text(jwks);
    ck_assert_uint_eq(wsg_jwt_keys_count(k), 3);
    char *t = make_token("RS256", r2, NULL, 0, hdr_for("RS256", "b"), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    free(t);
    t = make_token("RS256", r1, NULL, 0, hdr_for("RS256", "b"), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_ESIGNATURE); /* a is not tried */
    free(t);
    t = make_token("RS256", r1, NULL, 0, hdr_for("RS256", "zzz"), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_ENOKEY);
    free(t);
    t = make_token("RS256", r2, NULL, 0, hdr_for("RS256", NULL), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK); /* no kid: every key */
    free(t);
    t = make_token("ES256", ec, NULL, 0, hdr_for("ES256", "a"), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_EALG); /* kid a is RSA */
    free(t);
    t = make_token("ES256", ec, NULL, 0, hdr_for("ES256", "c"), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    free(t);
    wsg_jwt_keys_free(k);
    free(jwks);
    /* a key with "use": "enc" is skipped, one without a kid fits any kid */
    json_t *enc = jwk_of(r1, "a", NULL);
    json_object_set_new(enc, "use", json_string("enc"));
    jwks = jwks_of(enc, jwk_of(r2, NULL, NULL), NULL);
    k = keys_text(jwks);
    ck_assert_uint_eq(wsg_jwt_keys_count(k), 1);
    t = make_token("RS256", r2, NULL, 0, hdr_for("RS256", "anything"), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    free(t);
    wsg_jwt_keys_free(k);
    free(jwks);
    EVP_PKEY_free(r1);
    EVP_PKEY_free(r2);
    EVP_PKEY_free(ec);
}
END_TEST

START_TEST(test_jwt_loads_pem_certificates_and_secrets) {
    wsg_jwt_keys_t *k = keys_file("p256.crt");
    EVP_PKEY *ec = load_priv("p256.key");
    char *t = make_token("ES256", ec, NULL, 0, hdr_for("ES256", NULL), payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    wsg_jwt_keys_free(k);
    k = keys_file("two.pub"); /* rsa2.pub then p256.pub */
    ck_assert_uint_eq(wsg_jwt_keys_count(k), 2);
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    wsg_jwt_keys_free(k);
    free(t);
    EVP_PKEY_free(ec);
    /* one trailing newline (or CRLF) is not part of the secret */
    const char *s = "a-shared-secret-of-more-than-32-bytes";
    char buf[64];
    snprintf(buf, sizeof(buf), "%s\r\n", s);
    write_file("secret-nl", buf, strlen(buf));
    k = keys_file("secret-nl");
    t = make_token("HS256", NULL, (const unsigned char *)s, strlen(s), hdr_for("HS256", NULL),
                   payload_default());
    ck_assert_int_eq(verify(k, &no_rules, t, NOW_MS), WSG_JWT_OK);
    wsg_jwt_keys_free(k);
    free(t);
}
END_TEST

START_TEST(test_jwt_key_file_errors_say_what) {
    EVP_PKEY *small = load_priv("rsa1024.key"), *ec = load_priv("p256.key");
    char *small_jwks = jwks_of(jwk_of(small, NULL, NULL), NULL, NULL);
    json_t *badpt = jwk_of(ec, NULL, NULL);
    char y[64];
    snprintf(y, sizeof(y), "%s", json_string_value(json_object_get(badpt, "y")));
    y[5] = y[5] == 'A' ? 'B' : 'A';
    json_object_set_new(badpt, "y", json_string(y));
    char *badpt_jwks = jwks_of(badpt, NULL, NULL);
    json_t *mism = jwk_of(ec, NULL, "RS256");
    char *mism_jwks = jwks_of(mism, NULL, NULL);
    FILE *f = fopen(P("rsa1.key"), "rb");
    char priv[4096];
    size_t privlen = fread(priv, 1, sizeof(priv) - 1, f);
    priv[privlen] = '\0';
    fclose(f);

    const struct {
        const char *text, *want;
    } t[] = {
        {"{}", "expected a JWKS"},
        {"{\"keys\":{}}", "expected a JWKS"},
        {"{\"keys\":[]}", "no signature key"},
        {"{\"keys\":[1]}", "keys[0]: expected an object"},
        {"{\"keys\":[{\"kty\":\"XYZ\"}]}", "keys[0].kty: expected"},
        {"{\"keys\":[{\"k\":\"x\"}]}", "keys[0].kty: missing"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-192\",\"x\":\"AA\",\"y\":\"AA\"}]}",
         "keys[0].crv: expected \"P-256\", \"P-384\" or \"P-521\", got \"P-192\""},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
         "must be 32 bytes"},
        {"{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AA\"}]}", "keys[0].crv"},
        {"{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}", "32-byte"},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}", "keys[0].k: 5 bytes"},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ=\"}]}", "keys[0].k: not unpadded base64url"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "keys[0].n: missing"},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\","
         "\"alg\":\"HS999\"}]}",
         "keys[0].alg: unsupported \"HS999\""},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\","
         "\"alg\":\"HS512\"}]}",
         "does not fit"},
        {"{\"keys\":[], \"keys\":[]}", "duplicate"},
        {"{\"keys\":[}", "line 1, column"},
        {small_jwks, "RSA key of 1024 bits, at least 2048"},
        {badpt_jwks, "not a valid P-256 public key"},
        {mism_jwks, "keys[0].alg: \"RS256\" does not fit this EC key"},
        {priv, "a private key"},
        {"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n", "\"FOO\", expected PUBLIC KEY"},
        {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a valid key"},
        {"short secret\n", "HMAC secret of 12 bytes, at least 32"},
        {"", "HMAC secret of 0 bytes"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char err[256] = "untouched";
        wsg_jwt_keys_t *k = (wsg_jwt_keys_t *)1;
        int rc = wsg_jwt_keys_parse(t[i].text, strlen(t[i].text), &k, err, sizeof(err));
        ck_assert_msg(rc == -EINVAL, "case %zu (%s): rc %d", i, t[i].want, rc);
        ck_assert_ptr_null(k);
        ck_assert_msg(strstr(err, t[i].want) != NULL, "case %zu: want '%s' in '%s'", i, t[i].want,
                      err);
    }
    /* files */
    char err[256];
    wsg_jwt_keys_t *k = NULL;
    ck_assert_int_eq(wsg_jwt_keys_load(P("does-not-exist"), &k, err, sizeof(err)), -ENOENT);
    ck_assert(strstr(err, "cannot open") != NULL);
    ck_assert_int_eq(wsg_jwt_keys_load(dir, &k, err, sizeof(err)), -EINVAL);
    ck_assert(strstr(err, "not a regular file") != NULL);
    ck_assert_ptr_null(k);
    free(small_jwks);
    free(badpt_jwks);
    free(mism_jwks);
    EVP_PKEY_free(small);
    EVP_PKEY_free(ec);
}
END_TEST

/* ---- token sources ---------------------------------------------------------------- */

START_TEST(test_jwt_from_parse) {
    wsg_jwt_from_t f;
    ck_assert_int_eq(wsg_jwt_from_parse("header", &f), 0);
    ck_assert_int_eq(f.kind, WSG_JWT_FROM_HEADER);
    ck_assert_int_eq(wsg_jwt_from_parse("subprotocol", &f), 0);
    ck_assert_int_eq(f.kind, WSG_JWT_FROM_SUBPROTOCOL);
    ck_assert_int_eq(wsg_jwt_from_parse("cookie:token", &f), 0);
    ck_assert(f.kind == WSG_JWT_FROM_COOKIE && f.name_len == 5 && memcmp(f.name, "token", 5) == 0);
    ck_assert_int_eq(wsg_jwt_from_parse("query:access_token", &f), 0);
    ck_assert(f.kind == WSG_JWT_FROM_QUERY && f.name_len == 12);
    const char *bad[] = {"",           "Header",    "headers",   "cookie:", "query:", "cookie:a b",
                         "cookie:a;b", "query:a&b", "query:a=b", "jwt:sub", "cookie"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(wsg_jwt_from_parse(bad[i], &f) == -EINVAL, "'%s'", bad[i]);
}
END_TEST

START_TEST(test_jwt_from_authorization) {
    static const struct {
        const char *in, *tok;
        wsg_jwt_src_t st;
    } t[] = {
        {"Bearer abc.def.ghi", "abc.def.ghi", WSG_JWT_SRC_FOUND},
        {"bearer   abc.def-_~+/==", "abc.def-_~+/==", WSG_JWT_SRC_FOUND},
        {"  BEARER\tx.y.z  ", "x.y.z", WSG_JWT_SRC_FOUND},
        {"Basic dXNlcjpwYXNz", NULL, WSG_JWT_SRC_NONE},
        {"Bearerx a.b.c", NULL, WSG_JWT_SRC_NONE},
        {"", NULL, WSG_JWT_SRC_NONE},
        {"Bearer", NULL, WSG_JWT_SRC_MALFORMED},
        {"Bearer   ", NULL, WSG_JWT_SRC_MALFORMED},
        {"Bearer a b", NULL, WSG_JWT_SRC_MALFORMED},
        {"Bearer a,b", NULL, WSG_JWT_SRC_MALFORMED},
        {"Bearer =abc", NULL, WSG_JWT_SRC_MALFORMED},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        const char *tok = NULL;
        size_t tlen = 0;
        wsg_jwt_src_t st = wsg_jwt_from_authorization(t[i].in, strlen(t[i].in), &tok, &tlen);
        ck_assert_msg(st == t[i].st, "'%s': %d", t[i].in, st);
        if (t[i].tok != NULL)
            ck_assert(tlen == strlen(t[i].tok) && memcmp(tok, t[i].tok, tlen) == 0);
    }
}
END_TEST

typedef wsg_jwt_src_t (*from_fn)(const char *v, size_t n, const char **tok, size_t *tlen,
                                 char *rest, size_t *rest_len);

static wsg_jwt_src_t cookie_fn(const char *v, size_t n, const char **tok, size_t *tlen, char *rest,
                               size_t *rest_len) {
    return wsg_jwt_from_cookie(v, n, "token", 5, tok, tlen, rest, rest_len);
}

static wsg_jwt_src_t query_fn(const char *v, size_t n, const char **tok, size_t *tlen, char *rest,
                              size_t *rest_len) {
    return wsg_jwt_from_query(v, n, "access_token", 12, tok, tlen, rest, rest_len);
}

typedef struct {
    const char *in, *tok, *rest;
    wsg_jwt_src_t st;
} src_case_t;

/* Runs a table against <fn>, with <rest> exactly as long as the input and
 * guard bytes after it that must stay untouched. */
static void run_sources(from_fn fn, const src_case_t *t, size_t count) {
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(t[i].in), rlen = 999;
        char *rest = malloc(n + 16);
        memset(rest, 0x5a, n + 16);
        const char *tok = NULL;
        size_t tlen = 0;
        wsg_jwt_src_t st = fn(t[i].in, n, &tok, &tlen, rest, &rlen);
        ck_assert_msg(st == t[i].st, "'%s': got %d, want %d", t[i].in, st, t[i].st);
        for (size_t g = n; g < n + 16; g++)
            ck_assert_msg(rest[g] == 0x5a, "'%s': rest overflowed", t[i].in);
        if (st == WSG_JWT_SRC_FOUND) {
            ck_assert_msg(tlen == strlen(t[i].tok) && memcmp(tok, t[i].tok, tlen) == 0,
                          "'%s': token '%.*s'", t[i].in, (int)tlen, tok);
            ck_assert_msg(rlen == strlen(t[i].rest) && memcmp(rest, t[i].rest, rlen) == 0,
                          "'%s': rest '%.*s', want '%s'", t[i].in, (int)rlen, rest, t[i].rest);
            /* and with no rest wanted */
            ck_assert_int_eq(fn(t[i].in, n, &tok, &tlen, NULL, NULL), WSG_JWT_SRC_FOUND);
        } else {
            ck_assert_uint_eq(rlen, 999); /* untouched */
        }
        free(rest);
    }
}

START_TEST(test_jwt_from_subprotocol) {
    static const src_case_t t[] = {
        {"bearer, a.b.c", "a.b.c", "", WSG_JWT_SRC_FOUND},
        {"chat, bearer, a.b.c, v2.chat", "a.b.c", "chat, v2.chat", WSG_JWT_SRC_FOUND},
        {"bearer,a.b.c,chat", "a.b.c", "chat", WSG_JWT_SRC_FOUND},
        {"a,bearer,T,b,c,d,e,f,g,h,i,j,k,l", "T", "a,b,c,d,e,f,g,h,i,j,k,l", WSG_JWT_SRC_FOUND},
        {"Bearer , t1 ,x", "t1", "x", WSG_JWT_SRC_FOUND},
        {"bearer, A, chat, bearer, A", "A", "chat", WSG_JWT_SRC_FOUND},
        {"bearer, A, bearer, B", NULL, NULL, WSG_JWT_SRC_CONFLICT},
        {"chat, bearer", NULL, NULL, WSG_JWT_SRC_MALFORMED},
        {"chat, bearer, , ", NULL, NULL, WSG_JWT_SRC_MALFORMED},
        {"chat, v2", NULL, NULL, WSG_JWT_SRC_NONE},
        {"bearers, x", NULL, NULL, WSG_JWT_SRC_NONE},
        {"", NULL, NULL, WSG_JWT_SRC_NONE},
    };
    run_sources(wsg_jwt_from_subprotocol, t, sizeof(t) / sizeof(t[0]));
}
END_TEST

START_TEST(test_jwt_from_cookie) {
    static const src_case_t t[] = {
        {"token=a.b.c", "a.b.c", "", WSG_JWT_SRC_FOUND},
        {"a=1; token=a.b.c; b=2", "a.b.c", "a=1; b=2", WSG_JWT_SRC_FOUND},
        {"a=1;token=T;b=2;c=3;d=4;e=5;f=6", "T", "a=1;b=2;c=3;d=4;e=5;f=6", WSG_JWT_SRC_FOUND},
        {"token=\"a.b.c\"; x=y", "a.b.c", "x=y", WSG_JWT_SRC_FOUND},
        {"token=A; s=1; token=A", "A", "s=1", WSG_JWT_SRC_FOUND},
        {"token=; s=1", NULL, NULL, WSG_JWT_SRC_NONE},
        {"xtoken=A; tokenx=B; Token=C", NULL, NULL, WSG_JWT_SRC_NONE},
        {"token", NULL, NULL, WSG_JWT_SRC_NONE},
        {"token=A; token=B", NULL, NULL, WSG_JWT_SRC_CONFLICT},
        {"", NULL, NULL, WSG_JWT_SRC_NONE},
        /* spaces between the name and '=' (found by fuzz_jwt: the value's
         * length was taken from the trimmed name and read past the input) */
        {"a=1; token \t\t=VAL", "VAL", "a=1", WSG_JWT_SRC_FOUND},
        {"token  =\"Q\"; b=2", "Q", "b=2", WSG_JWT_SRC_FOUND},
    };
    run_sources(cookie_fn, t, sizeof(t) / sizeof(t[0]));
}
END_TEST

START_TEST(test_jwt_from_query) {
    static const src_case_t t[] = {
        {"/ws?access_token=a.b.c", "a.b.c", "/ws", WSG_JWT_SRC_FOUND},
        {"/ws?a=1&access_token=a.b.c&b=2", "a.b.c", "/ws?a=1&b=2", WSG_JWT_SRC_FOUND},
        {"/ws?access_token=T&b", "T", "/ws?b", WSG_JWT_SRC_FOUND},
        {"/?access_token=T&access_token=T&x=%41", "T", "/?x=%41", WSG_JWT_SRC_FOUND},
        {"/ws?a&&access_token=T", "T", "/ws?a", WSG_JWT_SRC_FOUND},
        {"/ws?access_token=A&access_token=B", NULL, NULL, WSG_JWT_SRC_CONFLICT},
        {"/ws?access_token=", NULL, NULL, WSG_JWT_SRC_NONE},
        {"/ws?access_token", NULL, NULL, WSG_JWT_SRC_NONE},
        {"/ws?x_access_token=T&access_tokenx=T", NULL, NULL, WSG_JWT_SRC_NONE},
        {"/access_token=T", NULL, NULL, WSG_JWT_SRC_NONE},
        {"/ws", NULL, NULL, WSG_JWT_SRC_NONE},
    };
    run_sources(query_fn, t, sizeof(t) / sizeof(t[0]));
}
END_TEST

/* ---- the throwaway keys ------------------------------------------------------------ */

static void sh(const char *cmd) {
    char full[1024];
    snprintf(full, sizeof(full), "cd '%s' && %s >/dev/null 2>&1", dir, cmd);
    if (system(full) != 0) {
        fprintf(stderr, "test keys: '%s' failed\n", cmd);
        exit(2);
    }
}

static void make_keys(void) {
    sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa1.key");
    sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2.key");
    sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.key");
    sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.key");
    sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out p384.key");
    sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out p521.key");
    sh("openssl genpkey -algorithm ED25519 -out ed.key");
    const char *names[] = {"rsa1", "rsa2", "rsa1024", "p256", "p384", "p521", "ed"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "openssl pkey -in %s.key -pubout -out %s.pub", names[i],
                 names[i]);
        sh(cmd);
    }
    sh("openssl req -x509 -new -key p256.key -subj /CN=wsgate-jwt-test -days 1 -out p256.crt");
    sh("cat rsa2.pub p256.pub | tee two.pub");
    FILE *f = fopen(P("secret64"), "wb");
    if (f == NULL || fwrite(secret64, 1, 64, f) != 64)
        exit(2);
    fclose(f);
}

static Suite *wsg_jwt_suite(void) {
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("vectors");
    tcase_add_test(tc, test_jwt_rfc7515_a1_hs256_verifies);
    tcase_add_test(tc, test_jwt_rfc7515_a2_rs256_verifies);
    tcase_add_test(tc, test_jwt_rfc7515_a3_es256_verifies);
    tcase_add_test(tc, test_jwt_rfc8037_ed25519_signature_verifies);
    tcase_add_test(tc, test_jwt_b64url_is_strict);
    suite_add_tcase(s, tc);

    tc = tcase_create("algorithms");
    tcase_add_test(tc, test_jwt_every_algorithm_verifies);
    tcase_add_test(tc, test_jwt_tampering_any_byte_fails);
    tcase_add_test(tc, test_jwt_signature_from_another_key_fails);
    tcase_add_test(tc, test_jwt_refuses_alg_none);
    tcase_add_test(tc, test_jwt_refuses_hs_token_against_rsa_or_ec_key);
    tcase_add_test(tc, test_jwt_key_alg_and_curve_pin_the_algorithm);
    tcase_add_test(tc, test_jwt_leaves_no_openssl_errors);
    tcase_add_test(tc, test_jwt_verify_is_thread_safe);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_test(tc, test_jwt_refuses_malformed_tokens);
    suite_add_tcase(s, tc);

    tc = tcase_create("claims");
    tcase_add_test(tc, test_jwt_checks_time_claims_with_leeway);
    tcase_add_test(tc, test_jwt_checks_issuer_and_audience);
    tcase_add_test(tc, test_jwt_claims_as_strings);
    suite_add_tcase(s, tc);

    tc = tcase_create("keys");
    tcase_add_test(tc, test_jwt_jwks_selects_key_by_kid);
    tcase_add_test(tc, test_jwt_loads_pem_certificates_and_secrets);
    tcase_add_test(tc, test_jwt_key_file_errors_say_what);
    suite_add_tcase(s, tc);

    tc = tcase_create("sources");
    tcase_add_test(tc, test_jwt_from_parse);
    tcase_add_test(tc, test_jwt_from_authorization);
    tcase_add_test(tc, test_jwt_from_subprotocol);
    tcase_add_test(tc, test_jwt_from_cookie);
    tcase_add_test(tc, test_jwt_from_query);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/wsg-jwt-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    make_keys();
    SRunner *sr = srunner_create(wsg_jwt_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
