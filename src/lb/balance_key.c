/*
 * Sticky-key extraction (SPEC §2 "balance.key"): the bytes of a request that
 * choose its backend on the hash ring.
 *
 * The module only finds the key; it does not hash it, apply the fallback or
 * decode it (a cookie or query value is used as raw bytes, so that two
 * spellings of one value may map differently, as they do in HAProxy's
 * "balance url_param"). It is pure: the key points into the request buffer or
 * into the client address string, nothing is copied or allocated.
 *
 * An empty value counts as absent, so "session=" does not send every
 * anonymous client to the same backend.
 */
#include <wsgate/balance_key.h>

#include <stdbool.h>
#include <string.h>
#include <strings.h>

static bool eq(const char *a, size_t alen, const char *b, size_t blen) {
    return alen == blen && memcmp(a, b, blen) == 0;
}

/* Looks for cookie <name> in one Cookie header value. RFC 6265 §4.2.1 says
 * pairs are separated by "; ", but clients and intermediaries are sloppy
 * about the space, so any whitespace around names and values is dropped.
 * Returns 1 (found, possibly empty) or 0. */
static int cookie_in(const char *v, size_t n, const char *name, size_t namelen, const char **val,
                     size_t *vallen) {
    size_t i = 0;

    while (i < n) {
        size_t j = i;
        while (j < n && v[j] != ';')
            j++;
        const char *pair = v + i;
        size_t plen = j - i;
        const char *eqs = memchr(pair, '=', plen);
        if (eqs != NULL) {
            const char *k = pair;
            size_t klen = (size_t)(eqs - pair);
            const char *c = eqs + 1;
            size_t clen = plen - klen - 1;
            wsg_http_trim(&k, &klen);
            wsg_http_trim(&c, &clen);
            if (eq(k, klen, name, namelen)) {
                /* RFC 6265 §4.1.1: cookie-value may be a DQUOTE'd string;
                 * the quotes are not part of the value. */
                if (clen >= 2 && c[0] == '"' && c[clen - 1] == '"') {
                    c++;
                    clen -= 2;
                }
                *val = c;
                *vallen = clen;
                return 1;
            }
        }
        i = j + 1;
    }
    return 0;
}

static int cookie_key(const char *name, const wsg_http_head_t *h, const char *buf, const char **key,
                      size_t *len) {
    size_t namelen = strlen(name);
    size_t count = wsg_http_head_count(h);

    /* The first occurrence wins, across every Cookie header (HTTP/1.1 clients
     * send one, but proxies or HTTP/2 gateways may have split it). */
    for (size_t i = 0; i < count; i++) {
        const char *hn, *hv;
        size_t hnlen, hvlen;
        wsg_http_head_at(h, buf, i, &hn, &hnlen, &hv, &hvlen);
        if (hnlen != 6 || strncasecmp(hn, "Cookie", 6) != 0)
            continue;
        if (cookie_in(hv, hvlen, name, namelen, key, len))
            return *len > 0;
    }
    return 0;
}

/* The query is what follows the first '?' of the target, up to a '#'
 * (RFC 3986 §3.4); a fragment is not supposed to be sent, but is not
 * mistaken for part of a value if it is. */
static int query_key(const char *name, const wsg_http_head_t *h, const char *buf, const char **key,
                     size_t *len) {
    const char *url, *q, *end;
    size_t urllen, namelen = strlen(name);

    wsg_http_head_url(h, buf, &url, &urllen);
    end = memchr(url, '#', urllen);
    if (end == NULL)
        end = url + urllen;
    q = memchr(url, '?', (size_t)(end - url));
    if (q == NULL)
        return 0;
    q++;

    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pend = amp != NULL ? amp : end;
        const char *eqs = memchr(q, '=', (size_t)(pend - q));
        const char *kend = eqs != NULL ? eqs : pend;

        if (eq(q, (size_t)(kend - q), name, namelen)) {
            /* "?NAME" without '=' has no value: absent, like "?NAME=". */
            if (eqs == NULL)
                return 0;
            *key = eqs + 1;
            *len = (size_t)(pend - *key);
            return *len > 0;
        }
        if (amp == NULL)
            break;
        q = amp + 1;
    }
    return 0;
}

int wsg_balance_key(const wsg_balance_conf_t *bal, const wsg_http_head_t *h, const char *buf,
                    const char *client_ip, const wsg_jwt_t *jwt, const char **key, size_t *len) {
    const char *v;
    size_t n;

    *key = NULL;
    *len = 0;
    switch (bal->key) {
    case WSG_KEY_IP:
        if (client_ip == NULL || client_ip[0] == '\0')
            return 0;
        *key = client_ip;
        *len = strlen(client_ip);
        return 1;
    case WSG_KEY_HEADER:
        if (bal->key_name == NULL)
            return 0;
        v = wsg_http_head_get(h, buf, bal->key_name, &n);
        if (v == NULL || n == 0)
            return 0;
        *key = v;
        *len = n;
        return 1;
    case WSG_KEY_COOKIE:
        if (bal->key_name == NULL)
            return 0;
        if (cookie_key(bal->key_name, h, buf, &v, &n) != 1)
            return 0;
        *key = v;
        *len = n;
        return 1;
    case WSG_KEY_QUERY:
        if (bal->key_name == NULL)
            return 0;
        if (query_key(bal->key_name, h, buf, &v, &n) != 1)
            return 0;
        *key = v;
        *len = n;
        return 1;
    case WSG_KEY_JWT:
        /* Only a verified token's claims count: an unverified one is any
         * string the client likes. */
        if (bal->key_name == NULL || jwt == NULL || !wsg_jwt_claim(jwt, bal->key_name, &v, &n))
            return 0;
        *key = v;
        *len = n;
        return 1;
    }
    return 0;
}
