/*
 * Route matching: picks the first configured route whose host and path
 * prefix fit a request (SPEC §2 "routes", §3 step 2).
 *
 * The module is pure: it compares the raw Host header value and request
 * target with the routes in place, without copying, allocating or
 * normalising into a buffer. It does not decode percent-escapes, resolve
 * dot segments or validate the Host header's syntax; a malformed value simply
 * matches no route that names a host. The key design choice is that both
 * sides are reduced to the same comparable form by one function (host_part:
 * trim, drop the port, drop one trailing dot) and then compared
 * ASCII-case-insensitively (RFC 3986 §3.2.2: the host is case-insensitive),
 * so "Chat.Example.COM:443", "chat.example.com." and a route host written
 * with a port all compare equal. Paths are compared byte for byte as a plain
 * string prefix: "/ws" also matches "/wsx", as in nginx's prefix locations.
 */
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include <wsgate/route.h>

/* ASCII only: host names are compared without locale (RFC 4343). */
static unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static bool ieq(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

/* Narrows [*s, *s + *n) to the host of a Host header value (RFC 9110 §7.2:
 * uri-host [ ":" port ]). Surrounding blanks go; "[v6]:port" keeps its
 * brackets and loses the port; "name:port" loses the port; a value with
 * several colons and no brackets is taken as a bare IPv6 literal and kept
 * whole. One trailing dot (the fully-qualified spelling "example.com.") is
 * dropped so it names the same host. */
static void host_part(const char **s, size_t *n) {
    const char *p = *s;
    size_t len = *n;

    while (len > 0 && (p[0] == ' ' || p[0] == '\t')) {
        p++;
        len--;
    }
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;

    if (len == 0) {
        *n = 0;
        return;
    }
    if (p[0] == '[') {
        const char *close = memchr(p, ']', len);
        if (close != NULL)
            len = (size_t)(close - p) + 1;
        *s = p;
        *n = len;
        return;
    }

    const char *colon = memchr(p, ':', len);
    if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon - p) - 1) == NULL)
        len = (size_t)(colon - p);
    if (len > 1 && p[len - 1] == '.')
        len--;
    *s = p;
    *n = len;
}

/* An IPv6 literal is written "[::1]" in a Host header but an operator may
 * write the route host either way; compare without the brackets then. */
static void unbracket(const char **s, size_t *n) {
    if (*n >= 2 && (*s)[0] == '[' && (*s)[*n - 1] == ']') {
        (*s)++;
        *n -= 2;
    }
}

static bool host_matches(const char *route_host, const char *host, size_t hostlen) {
    if (route_host == NULL)
        return true; /* absent = any host, including none at all */
    if (host == NULL)
        hostlen = 0;
    host_part(&host, &hostlen);
    if (hostlen == 0)
        return false;

    const char *rh = route_host;
    size_t rlen = strlen(rh);

    /* "*.suffix": one or more labels in front of ".suffix", never the bare
     * suffix itself (the convention of TLS wildcard names, RFC 6125 §6.4.3,
     * extended to several labels as nginx's "*.example.com" does). */
    if (rlen >= 2 && rh[0] == '*' && rh[1] == '.') {
        const char *suffix = rh + 1; /* keeps the dot: ".example.com" */
        size_t slen = rlen - 1;
        if (slen > 1 && suffix[slen - 1] == '.')
            slen--;
        return hostlen > slen && ieq(host + hostlen - slen, suffix, slen);
    }

    host_part(&rh, &rlen);
    if (rlen == 0)
        return false;
    unbracket(&host, &hostlen);
    unbracket(&rh, &rlen);
    return rlen == hostlen && ieq(rh, host, hostlen);
}

/* Narrows a request target to its path. Origin-form ("/a/b?q") is the usual
 * case; absolute-form ("http://h/a/b?q", RFC 9112 §3.2.2), which a server
 * must accept, is reduced to its path too, "/" when it has none. The query
 * and fragment are cut off. */
static void path_part(const char **s, size_t *n) {
    const char *p = *s;
    size_t len = *n;

    if (len > 0 && p[0] != '/') {
        /* Absolute-form when the first '/' is the start of "://" right
         * after a non-empty scheme. */
        const char *slash = memchr(p, '/', len);
        if (slash != NULL && slash > p + 1 && slash[-1] == ':' && slash + 1 < p + len &&
            slash[1] == '/') {
            const char *auth = slash + 2;
            size_t rest = len - (size_t)(auth - p);
            size_t i = 0;
            while (i < rest && auth[i] != '/' && auth[i] != '?' && auth[i] != '#')
                i++;
            if (i == rest || auth[i] != '/') {
                *s = "/";
                *n = 1;
                return;
            }
            p = auth + i;
            len = rest - i;
        }
    }

    for (size_t i = 0; i < len; i++) {
        if (p[i] == '?' || p[i] == '#') {
            len = i;
            break;
        }
    }
    *s = p;
    *n = len;
}

static bool path_matches(const char *prefix, const char *path, size_t pathlen) {
    if (prefix == NULL)
        prefix = "/"; /* the configured default */
    size_t plen = strlen(prefix);
    return pathlen >= plen && memcmp(path, prefix, plen) == 0;
}

int wsg_route_match(const wsg_route_conf_t *routes, size_t n, const char *host, size_t hostlen,
                    const char *path, size_t pathlen) {
    if (path == NULL)
        pathlen = 0;
    else
        path_part(&path, &pathlen);

    for (size_t i = 0; i < n; i++) {
        if (!host_matches(routes[i].host, host, hostlen))
            continue;
        if (!path_matches(routes[i].path_prefix, path != NULL ? path : "", pathlen))
            continue;
        /* Route tables are small; an index beyond int is a config bug. */
        return i > (size_t)INT_MAX ? -1 : (int)i;
    }
    return -1;
}
