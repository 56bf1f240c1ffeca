/*
 * Fuzz target: the JWT/JWKS code (src/sec/jwt*.c), what a client sends as a
 * token and what an operator gives as keys.
 *
 * Byte 0 chooses what the rest is:
 *   0  key material (JWKS, PEM, or a secret): a set loads with at least one
 *      key, or fails with a message; never both, never neither;
 *   1  a token, verified against a fixed HS256 key: the status is one the
 *      API names; a verified token answers alg, exp and claims; a token
 *      past WSG_JWT_MAX_TOKEN never verifies;
 *   2  a Sec-WebSocket-Protocol, Cookie or query value (byte 1 picks): a
 *      token found lies inside the input, and the rest to forward is never
 *      longer than the input (the callers size their buffer by it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/jwt.h>

#include "fuzz_util.h"

/* 32 bytes: the shortest HS256 secret the loader takes. */
static const char SECRET[] = "wsgate-fuzz-secret-0123456789abc";

static void keys(const uint8_t *d, size_t n) {
    wsg_jwt_keys_t *k = NULL;
    char err[256] = "";
    int r = wsg_jwt_keys_parse(d, n, &k, err, sizeof(err));
    if (r == 0) {
        FUZZ_CHECK(k != NULL && wsg_jwt_keys_count(k) >= 1);
    } else {
        FUZZ_CHECK(k == NULL && err[0] != '\0');
    }
    wsg_jwt_keys_free(k);
}

static void verify(const uint8_t *d, size_t n) {
    static wsg_jwt_keys_t *k;
    if (k == NULL) {
        char err[128];
        FUZZ_CHECK(wsg_jwt_keys_parse(SECRET, strlen(SECRET), &k, err, sizeof(err)) == 0);
    }
    wsg_jwt_rules_t rules = {.leeway_ms = 1000};
    wsg_jwt_t *t = NULL;
    char *tok = malloc(n ? n : 1); /* exact size, not NUL-terminated */
    memcpy(tok, d, n);
    wsg_jwt_status_t st = wsg_jwt_verify(k, &rules, tok, n, 1700000000000LL, &t);
    FUZZ_CHECK(st <= 0 && st >= WSG_JWT_ENOMEM);
    FUZZ_CHECK(wsg_jwt_strerror(st) != NULL);
    if (st == WSG_JWT_OK) {
        FUZZ_CHECK(t != NULL && n <= WSG_JWT_MAX_TOKEN);
        FUZZ_CHECK(wsg_jwt_alg(t) != NULL);
        int64_t exp;
        (void)wsg_jwt_exp_ms(t, &exp);
        const char *v;
        size_t vl;
        if (wsg_jwt_claim(t, "sub", &v, &vl))
            FUZZ_CHECK(vl == strlen(v) && vl > 0);
    } else {
        FUZZ_CHECK(t == NULL);
    }
    wsg_jwt_free(t);
    free(tok);
}

static void sources(uint8_t which, const uint8_t *d, size_t n) {
    const char *v = (const char *)d, *tok = NULL;
    size_t tlen = 0, rest_len = 0;
    char *rest = malloc(n ? n : 1);
    wsg_jwt_src_t r;
    switch (which % 4) {
    case 0:
        r = wsg_jwt_from_subprotocol(v, n, &tok, &tlen, rest, &rest_len);
        break;
    case 1:
        r = wsg_jwt_from_cookie(v, n, "token", 5, &tok, &tlen, rest, &rest_len);
        break;
    case 2:
        r = wsg_jwt_from_query(v, n, "access_token", 12, &tok, &tlen, rest, &rest_len);
        break;
    default:
        r = wsg_jwt_from_authorization(v, n, &tok, &tlen);
        rest_len = 0;
        break;
    }
    if (tok != NULL && tlen > 0)
        FUZZ_CHECK(tok >= v && tok + tlen <= v + n);
    FUZZ_CHECK(rest_len <= n);
    (void)r;
    free(rest);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    switch (data[0] % 3) {
    case 0:
        keys(data + 1, size - 1);
        break;
    case 1:
        verify(data + 1, size - 1);
        break;
    default:
        sources(data[1], data + 2, size - 2);
        break;
    }
    return 0;
}
