/*
 * Where a request carries its token (SPEC §11 "from"), as pure string
 * functions over header values and the request target: find the token,
 * and write what is to be forwarded without it.
 *
 * They neither allocate nor decode: a token is a span of the input, and
 * the "rest" is rebuilt into a caller's buffer no longer than the input.
 * Each function looks at one header value; finding the same source in
 * several headers (two Cookie lines) and comparing tokens across sources
 * ("two different tokens -> 401") is the caller's job. Within one value,
 * the same token twice is one token and is stripped everywhere; two
 * different ones are CONFLICT, never "the first wins", so a token cannot
 * be smuggled past whatever reads the other one.
 */
#include <wsgate/jwt.h>

#include <errno.h>
#include <string.h>
#include <strings.h>

static int ows(char c) {
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n) {
    while (*n > 0 && ows(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ows((*s)[*n - 1]))
        (*n)--;
}

/* Characters that may not be in a cookie name or a query key as wsgate
 * matches them: separators of the Cookie header and of the query string. */
static int bad_name_char(unsigned char c) {
    return c <= 0x20 || c == 0x7f || strchr(";,=&?#\"", c) != NULL;
}

int wsg_jwt_from_parse(const char *s, wsg_jwt_from_t *out) {
    memset(out, 0, sizeof(*out));
    const char *name = NULL;
    if (strcmp(s, "header") == 0) {
        out->kind = WSG_JWT_FROM_HEADER;
        return 0;
    }
    if (strcmp(s, "subprotocol") == 0) {
        out->kind = WSG_JWT_FROM_SUBPROTOCOL;
        return 0;
    }
    if (strncmp(s, "cookie:", 7) == 0) {
        out->kind = WSG_JWT_FROM_COOKIE;
        name = s + 7;
    } else if (strncmp(s, "query:", 6) == 0) {
        out->kind = WSG_JWT_FROM_QUERY;
        name = s + 6;
    } else {
        return -EINVAL;
    }
    if (*name == '\0')
        return -EINVAL;
    for (const char *p = name; *p != '\0'; p++) {
        if (bad_name_char((unsigned char)*p))
            return -EINVAL;
    }
    out->name = name;
    out->name_len = strlen(name);
    return 0;
}

/* RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static int b64token(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') ||
                     (s[i] >= '0' && s[i] <= '9') || strchr("-._~+/", s[i]) != NULL))
        i++;
    if (i == 0)
        return 0;
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

wsg_jwt_src_t wsg_jwt_from_authorization(const char *v, size_t n, const char **tok, size_t *tlen) {
    trim(&v, &n);
    if (n < 6 || strncasecmp(v, "Bearer", 6) != 0 || (n > 6 && !ows(v[6])))
        return WSG_JWT_SRC_NONE; /* another scheme (Basic, Digest...) */
    v += 6;
    n -= 6;
    trim(&v, &n);
    if (!b64token(v, n))
        return WSG_JWT_SRC_MALFORMED;
    *tok = v;
    *tlen = n;
    return WSG_JWT_SRC_FOUND;
}

/* Appends element e[0..n) of the list at <base> to rest at *len. Every
 * element but the first written keeps the separator that preceded it in the
 * input (the ',' or ';' at e - base - 1 and the whitespace after it), so
 * the rest is the input with the token's elements cut out, and can never be
 * longer than the input. <raw> is where the element's span began, before
 * its leading whitespace was trimmed. */
static void append(char *rest, size_t *len, const char *base, const char *raw, const char *e,
                   size_t n) {
    if (rest == NULL)
        return;
    if (*len > 0 && raw > base) {
        size_t sep = (size_t)(e - (raw - 1));
        memcpy(rest + *len, raw - 1, sep);
        *len += sep;
    }
    memcpy(rest + *len, e, n);
    *len += n;
}

/* Records token t[0..tn) in *tok: 0 when it is the first or the same, -1
 * when it differs from one already seen. */
static int note(const char **tok, size_t *tlen, int *found, const char *t, size_t tn) {
    if (*found && (*tlen != tn || memcmp(*tok, t, tn) != 0))
        return -1;
    *tok = t;
    *tlen = tn;
    *found = 1;
    return 0;
}

/* The common end of the three finders: what the first pass found and the
 * second wrote, handed to the caller. */
static wsg_jwt_src_t found_tail(int found, const char *t, size_t tn, size_t rlen,
                                const char **tok, size_t *tlen, size_t *rest_len) {
    if (!found)
        return WSG_JWT_SRC_NONE;
    *tok = t;
    *tlen = tn;
    if (rest_len != NULL)
        *rest_len = rlen;
    return WSG_JWT_SRC_FOUND;
}

wsg_jwt_src_t wsg_jwt_from_subprotocol(const char *v, size_t n, const char **tok, size_t *tlen,
                                       char *rest, size_t *rest_len) {
    int found = 0, pending = 0, conflict = 0, malformed = 0;
    size_t rlen = 0;
    const char *t = NULL;
    size_t tn = 0;
    /* Two passes over the elements: the first finds the pairs, the second
     * (only when there is one) writes the rest, so <rest> is never written
     * for a NONE, CONFLICT or MALFORMED answer. */
    for (int pass = 0; pass < 2; pass++) {
        size_t i = 0;
        pending = 0;
        while (i <= n) {
            size_t j = i;
            while (j < n && v[j] != ',')
                j++;
            const char *e = v + i;
            size_t en = j - i, i0 = i;
            trim(&e, &en);
            i = j + 1;
            if (en == 0)
                continue; /* RFC 7230 §7: empty list elements are ignored */
            if (pending) {
                pending = 0;
                if (pass == 0 && note(&t, &tn, &found, e, en) != 0)
                    conflict = 1;
                continue;
            }
            if (en == 6 && strncasecmp(e, "bearer", 6) == 0) {
                pending = 1;
                continue;
            }
            if (pass == 1)
                append(rest, &rlen, v, v + i0, e, en);
        }
        if (pass == 0) {
            malformed = pending;
            if (conflict)
                return WSG_JWT_SRC_CONFLICT;
            if (malformed)
                return WSG_JWT_SRC_MALFORMED;
            if (!found)
                return WSG_JWT_SRC_NONE;
            if (rest == NULL)
                break;
        }
    }
    return found_tail(found, t, tn, rlen, tok, tlen, rest_len);
}

wsg_jwt_src_t wsg_jwt_from_cookie(const char *v, size_t n, const char *name, size_t name_len,
                                  const char **tok, size_t *tlen, char *rest, size_t *rest_len) {
    int found = 0;
    const char *t = NULL;
    size_t tn = 0, rlen = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t i = 0;
        while (i <= n) {
            size_t j = i;
            while (j < n && v[j] != ';')
                j++;
            const char *e = v + i;
            size_t en = j - i, i0 = i;
            trim(&e, &en);
            i = j + 1;
            if (en == 0)
                continue;
            const char *eq = memchr(e, '=', en);
            const char *k = e;
            size_t kn = eq ? (size_t)(eq - e) : en;
            trim(&k, &kn);
            if (eq != NULL && kn == name_len && memcmp(k, name, kn) == 0) {
                const char *c = eq + 1;
                /* what follows the '=': the key may have been trimmed of
                 * spaces before it, so its length says nothing here */
                size_t cn = (size_t)((e + en) - (eq + 1));
                trim(&c, &cn);
                if (cn >= 2 && c[0] == '"' && c[cn - 1] == '"') {
                    c++;
                    cn -= 2;
                }
                if (cn == 0)
                    goto keep; /* "token=": nothing to verify, forwarded as is */
                if (pass == 0 && note(&t, &tn, &found, c, cn) != 0)
                    return WSG_JWT_SRC_CONFLICT;
                continue;
            }
        keep:
            if (pass == 1)
                append(rest, &rlen, v, v + i0, e, en);
        }
        if (pass == 0 && (!found || rest == NULL))
            break;
    }
    return found_tail(found, t, tn, rlen, tok, tlen, rest_len);
}

wsg_jwt_src_t wsg_jwt_from_query(const char *target, size_t n, const char *name, size_t name_len,
                                 const char **tok, size_t *tlen, char *rest, size_t *rest_len) {
    const char *q = memchr(target, '?', n);
    if (q == NULL)
        return WSG_JWT_SRC_NONE;
    size_t path_len = (size_t)(q - target), qs = path_len + 1;
    int found = 0;
    const char *t = NULL;
    size_t tn = 0, rlen = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t i = qs, kept = 0;
        if (pass == 1 && rest != NULL) {
            memcpy(rest, target, path_len);
            rlen = path_len;
        }
        while (i <= n) {
            size_t j = i;
            while (j < n && target[j] != '&')
                j++;
            const char *e = target + i;
            size_t en = j - i;
            i = j + 1;
            if (en == 0)
                continue;
            const char *eq = memchr(e, '=', en);
            if (eq != NULL && (size_t)(eq - e) == name_len && memcmp(e, name, name_len) == 0 &&
                en > name_len + 1) {
                if (pass == 0 && note(&t, &tn, &found, eq + 1, en - name_len - 1) != 0)
                    return WSG_JWT_SRC_CONFLICT;
                continue;
            }
            if (pass == 1 && rest != NULL) {
                rest[rlen++] = kept++ == 0 ? '?' : '&';
                memcpy(rest + rlen, e, en);
                rlen += en;
            }
        }
        if (pass == 0 && (!found || rest == NULL))
            break;
    }
    return found_tail(found, t, tn, rlen, tok, tlen, rest_len);
}
