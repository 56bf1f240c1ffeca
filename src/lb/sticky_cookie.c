/*
 * The sticky cookie's codec (SPEC §10); the layout is in sticky_cookie.h.
 *
 * The MAC covers the pool and the backend's address as configured (its
 * identity on the hash ring), so a value stays good across reloads and
 * across instances as long as the backend keeps its address, and goes stale
 * by itself when the backend is removed or renamed.
 */
#include <wsgate/sticky_cookie.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define RAW_LEN 25 /* 1 + 4 + 4 + 16 */
#define MAC_LEN 16

/* HMAC-SHA256(secret, tag 0 pool 0 address [0 extra]) into md[32].
 * Returns 0 or -1. */
static int mac(const char *secret, size_t slen, const char *tag, const char *pool,
               const char *address, const unsigned char *extra, size_t elen,
               unsigned char md[32]) {
    static const unsigned char zero = 0;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m != NULL ? EVP_MAC_CTX_new(m) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    size_t outl = 0;
    int ok = ctx != NULL &&
             EVP_MAC_init(ctx, (const unsigned char *)secret, slen, params) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)tag, strlen(tag)) == 1 &&
             EVP_MAC_update(ctx, &zero, 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)pool, strlen(pool)) == 1 &&
             EVP_MAC_update(ctx, &zero, 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)address, strlen(address)) == 1 &&
             (extra == NULL || (EVP_MAC_update(ctx, &zero, 1) == 1 &&
                                EVP_MAC_update(ctx, extra, elen) == 1)) &&
             EVP_MAC_final(ctx, md, &outl, 32) == 1 && outl == 32;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return ok ? 0 : -1;
}

uint32_t wsg_sticky_id(const char *secret, size_t slen, const char *pool, const char *address) {
    unsigned char md[32];
    if (mac(secret, slen, "wsg-id", pool, address, NULL, 0, md) != 0)
        return 0;
    uint32_t id = (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
    OPENSSL_cleanse(md, sizeof md);
    return id;
}

static void put32(unsigned char *p, uint32_t x) {
    p[0] = (unsigned char)(x >> 24);
    p[1] = (unsigned char)(x >> 16);
    p[2] = (unsigned char)(x >> 8);
    p[3] = (unsigned char)x;
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding of 25 bytes: 8 groups of 3, then 1 byte as 2
 * characters. */
static void encode64(const unsigned char in[RAW_LEN], char out[WSG_STICKY_VALUE_LEN + 1]) {
    size_t o = 0;
    for (size_t i = 0; i + 3 <= RAW_LEN; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
        out[o++] = b64url[v & 63];
    }
    out[o++] = b64url[in[RAW_LEN - 1] >> 2];
    out[o++] = b64url[(in[RAW_LEN - 1] & 3) << 4];
    out[o] = '\0';
}

static int sextet(char ch) {
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

/* The inverse of encode64; -1 for anything encode64 cannot have written
 * (including the unused low bits of the last character being set, so that
 * each value has exactly one spelling). */
static int decode64(const char *v, unsigned char out[RAW_LEN]) {
    size_t o = 0;
    for (size_t i = 0; i + 4 <= WSG_STICKY_VALUE_LEN; i += 4) {
        int a = sextet(v[i]), b = sextet(v[i + 1]), c = sextet(v[i + 2]), d = sextet(v[i + 3]);
        if ((a | b | c | d) < 0)
            return -1;
        uint32_t x = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (unsigned char)(x >> 16);
        out[o++] = (unsigned char)(x >> 8);
        out[o++] = (unsigned char)x;
    }
    int a = sextet(v[WSG_STICKY_VALUE_LEN - 2]), b = sextet(v[WSG_STICKY_VALUE_LEN - 1]);
    if (a < 0 || b < 0 || (b & 15) != 0)
        return -1;
    out[o] = (unsigned char)(a << 2 | b >> 4);
    return 0;
}

/* The 25 bytes of the value for <address> issued at <issued>. */
static int raw_value(const char *secret, size_t slen, const char *pool, const char *address,
                     uint32_t issued, unsigned char raw[RAW_LEN]) {
    unsigned char md[32];
    raw[0] = 1;
    put32(raw + 1, wsg_sticky_id(secret, slen, pool, address));
    put32(raw + 5, issued);
    if (mac(secret, slen, "wsg-v1", pool, address, raw, 9, md) != 0)
        return -1;
    memcpy(raw + 9, md, MAC_LEN);
    OPENSSL_cleanse(md, sizeof md);
    return 0;
}

int wsg_sticky_encode(const char *secret, size_t slen, const char *pool, const char *address,
                      uint32_t issued, char out[WSG_STICKY_VALUE_LEN + 1]) {
    unsigned char raw[RAW_LEN];
    if (raw_value(secret, slen, pool, address, issued, raw) != 0) {
        out[0] = '\0';
        return -1;
    }
    encode64(raw, out);
    return 0;
}

wsg_sticky_status_t wsg_sticky_parse(const char *v, size_t n, wsg_sticky_value_t *out) {
    unsigned char raw[RAW_LEN];
    if (n != WSG_STICKY_VALUE_LEN || decode64(v, raw) != 0 || raw[0] != 1)
        return WSG_STICKY_MALFORMED;
    out->id = get32(raw + 1);
    out->issued = get32(raw + 5);
    return WSG_STICKY_OK;
}

wsg_sticky_status_t wsg_sticky_verify(const char *secret, size_t slen, const char *pool,
                                      const char *address, const char *v, size_t n,
                                      uint64_t now_s, unsigned max_age_s) {
    wsg_sticky_value_t pv;
    unsigned char want[RAW_LEN], got[RAW_LEN];

    if (wsg_sticky_parse(v, n, &pv) != WSG_STICKY_OK || decode64(v, got) != 0)
        return WSG_STICKY_MALFORMED;
    if (raw_value(secret, slen, pool, address, pv.issued, want) != 0 ||
        CRYPTO_memcmp(want, got, RAW_LEN) != 0)
        return WSG_STICKY_FORGED;
    if (pv.issued > now_s + WSG_STICKY_SKEW_S)
        return WSG_STICKY_EXPIRED;
    if (max_age_s > 0 && now_s > pv.issued && now_s - pv.issued > max_age_s)
        return WSG_STICKY_EXPIRED;
    return WSG_STICKY_OK;
}

const char *wsg_sticky_status_name(wsg_sticky_status_t s) {
    switch (s) {
    case WSG_STICKY_OK:
        return "valid";
    case WSG_STICKY_MALFORMED:
        return "malformed";
    case WSG_STICKY_FORGED:
        return "not signed by this secret for this pool and backend";
    case WSG_STICKY_EXPIRED:
        return "expired";
    }
    return "?";
}

/* ---- headers ----------------------------------------------------------------------- */

static bool ows(char ch) { return ch == ' ' || ch == '\t'; }

size_t wsg_sticky_strip(char *v, size_t n, const char *name) {
    size_t nl = strlen(name), out = 0, i = 0;

    /* RFC 6265 §4.2.1: pairs separated by ";" (and, from lax clients, extra
     * spaces); each kept pair is written back with "; " between. */
    while (i < n) {
        size_t s = i;
        while (s < n && (ows(v[s]) || v[s] == ';'))
            s++;
        size_t e = s;
        while (e < n && v[e] != ';')
            e++;
        size_t t = e;
        while (t > s && ows(v[t - 1]))
            t--;
        i = e;
        if (t == s)
            continue;
        size_t k = s;
        while (k < t && v[k] != '=')
            k++;
        size_t kn = k;
        while (kn > s && ows(v[kn - 1]))
            kn--;
        if (kn - s == nl && memcmp(v + s, name, nl) == 0)
            continue;
        /* The kept text only moves left: a pair starts past the ';' that
         * ended the previous one, so there is room for ";" at least. */
        if (out > 0) {
            v[out++] = ';';
            if (out < s)
                v[out++] = ' ';
        }
        memmove(v + out, v + s, t - s);
        out += t - s;
    }
    return out;
}

size_t wsg_sticky_filter_head(char *head, size_t len, const char *name) {
    size_t i = 0, out = 0;

    while (i < len) {
        char *eol = memchr(head + i, '\n', len - i);
        size_t end = eol != NULL ? (size_t)(eol - head) + 1 : len;
        size_t line = end - i;
        /* "Cookie:" then the value up to the CRLF. */
        if (line > 9 && strncasecmp(head + i, "cookie:", 7) == 0 && head[end - 2] == '\r') {
            size_t vs = i + 7;
            while (vs < end - 2 && ows(head[vs]))
                vs++;
            size_t vn = wsg_sticky_strip(head + vs, end - 2 - vs, name);
            if (vn > 0) {
                size_t keep = vs - i;
                memmove(head + out, head + i, keep + vn);
                out += keep + vn;
                head[out++] = '\r';
                head[out++] = '\n';
            }
        } else {
            memmove(head + out, head + i, line);
            out += line;
        }
        i = end;
    }
    return out;
}

ssize_t wsg_sticky_set_cookie(const wsg_cookie_conf_t *ck, const char *value, bool tls,
                              char *out, size_t cap) {
    static const char *const site[] = {"Lax", "Strict", "None"};
    bool secure = ck->secure == WSG_COOKIE_SECURE_ON ||
                  (ck->secure == WSG_COOKIE_SECURE_AUTO && tls) ||
                  ck->same_site == WSG_SAME_SITE_NONE;
    char age[32] = "";
    if (ck->max_age_s > 0)
        snprintf(age, sizeof age, "; Max-Age=%u", ck->max_age_s);
    int n = snprintf(out, cap, "Set-Cookie: %s=%s; Path=%s; HttpOnly; SameSite=%s%s%s\r\n",
                     ck->name, value, ck->path, site[ck->same_site % 3], secure ? "; Secure" : "",
                     age);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

ssize_t wsg_sticky_head_insert(char *head, size_t len, size_t cap, const char *line, size_t n) {
    if (len < 4 || len > cap || memcmp(head + len - 4, "\r\n\r\n", 4) != 0 || n > cap - len)
        return -1;
    memcpy(head + len - 2 + n, "\r\n", 2);
    memcpy(head + len - 2, line, n);
    return (ssize_t)(len + n);
}
