/*
 * Origin normalisation and allowlist matching (RFC 6454, SPEC §11).
 *
 * A browser sends the Origin of the page that opens a WebSocket, already
 * serialised (RFC 6454 §6.2: scheme "://" host [":" port], lower case,
 * default port omitted). Operators write origins by hand. Both go through
 * the same normaliser, so that the comparison is a plain byte compare and
 * "https://Chat.example.com:443" in a config means what it says. It does
 * deliberately not accept patterns ("*.example.com"): SPEC §11 lists exact
 * origins, and a wildcard is how allowlists end up admitting
 * "evil-example.com". Nor does it accept the RFC 6454 §7 origin-list form
 * (several origins separated by spaces), which browsers never send.
 */
#include <wsgate/origin.h>

#include <string.h>

static char lower(char c) {
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}
static int alpha(char c) {
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}
static int digit(char c) {
    return c >= '0' && c <= '9';
}

static wsg_origin_status_t bad(const char **reason, const char *why) {
    if (reason != NULL)
        *reason = why;
    return WSG_ORIGIN_EINVAL;
}

wsg_origin_status_t wsg_origin_normalize(const char *in, size_t n, char *out, size_t cap,
                                         size_t *outlen, const char **reason) {
    char buf[WSG_ORIGIN_MAX + 16]; /* o <= n <= WSG_ORIGIN_MAX + 8 below */
    size_t o = 0, i = 0, start;
    while (n > 0 && (in[0] == ' ' || in[0] == '\t')) {
        in++;
        n--;
    }
    while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\t'))
        n--;
    if (n > WSG_ORIGIN_MAX + 8) /* room for a default port that will be dropped */
        return WSG_ORIGIN_ENOSPC;
    if (n == 4 && memcmp(in, "null", 4) == 0)
        return bad(reason, "\"null\" is the origin of sandboxed and file: pages; it cannot be "
                           "allowed");

    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )  (RFC 3986 §3.1) */
    if (n == 0 || !alpha(in[0]))
        return bad(reason, "expected scheme://host[:port]");
    while (i < n && (alpha(in[i]) || digit(in[i]) || in[i] == '+' || in[i] == '-' || in[i] == '.'))
        buf[o++] = lower(in[i++]);
    size_t scheme_len = o;
    if (n - i < 3 || memcmp(in + i, "://", 3) != 0)
        return bad(reason, "expected scheme://host[:port]");
    memcpy(buf + o, "://", 3);
    o += 3;
    i += 3;

    /* host: an IP literal in brackets, or a registered name / IPv4. */
    start = i;
    if (i < n && in[i] == '[') {
        buf[o++] = in[i++];
        while (i < n && (digit(in[i]) || ((in[i] | 0x20) >= 'a' && (in[i] | 0x20) <= 'f') ||
                         in[i] == ':' || in[i] == '.'))
            buf[o++] = lower(in[i++]);
        if (i >= n || in[i] != ']' || i == start + 1)
            return bad(reason, "bad IPv6 literal");
        buf[o++] = in[i++];
    } else {
        while (i < n &&
               (alpha(in[i]) || digit(in[i]) || in[i] == '-' || in[i] == '.' || in[i] == '_'))
            buf[o++] = lower(in[i++]);
        if (i == start)
            return bad(reason, "empty host");
    }

    if (i < n && in[i] == ':') {
        unsigned long port = 0;
        size_t digits = 0;
        i++;
        while (i < n && digit(in[i]) && digits < 6) {
            port = port * 10 + (unsigned long)(in[i++] - '0');
            digits++;
        }
        if (digits == 0 || (i < n && digit(in[i])) || port == 0 || port > 65535)
            return bad(reason, "port must be 1-65535");
        unsigned long def = 0;
        if ((scheme_len == 4 && memcmp(buf, "http", 4) == 0) ||
            (scheme_len == 2 && memcmp(buf, "ws", 2) == 0))
            def = 80;
        else if ((scheme_len == 5 && memcmp(buf, "https", 5) == 0) ||
                 (scheme_len == 3 && memcmp(buf, "wss", 3) == 0))
            def = 443;
        if (port != def) {
            char p[8];
            int pn = 0;
            for (unsigned long v = port; v > 0; v /= 10)
                p[pn++] = (char)('0' + v % 10);
            buf[o++] = ':';
            while (pn > 0)
                buf[o++] = p[--pn];
        }
    }
    if (i < n) {
        switch (in[i]) {
        case '/':
            return bad(reason, "an origin has no path (no trailing slash either)");
        case '?':
        case '#':
            return bad(reason, "an origin has no query or fragment");
        case '@':
            return bad(reason, "an origin has no user info");
        default:
            return bad(reason, "unexpected character (non-ASCII hosts go in punycode)");
        }
    }
    if (o > WSG_ORIGIN_MAX || o + 1 > cap)
        return WSG_ORIGIN_ENOSPC;
    memcpy(out, buf, o);
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return WSG_ORIGIN_OK;
}

wsg_origin_verdict_t wsg_origin_check(const char *const *list, size_t count, const char *origin,
                                      size_t len) {
    char norm[WSG_ORIGIN_MAX + 1];
    size_t nlen = 0;
    if (list == NULL)
        return WSG_ORIGIN_ALLOWED;
    if (origin == NULL)
        return WSG_ORIGIN_MISSING;
    if (wsg_origin_normalize(origin, len, norm, sizeof(norm), &nlen, NULL) != WSG_ORIGIN_OK)
        return WSG_ORIGIN_REFUSED;
    for (size_t i = 0; i < count; i++) {
        if (strlen(list[i]) == nlen && memcmp(list[i], norm, nlen) == 0)
            return WSG_ORIGIN_ALLOWED;
    }
    return WSG_ORIGIN_REFUSED;
}
