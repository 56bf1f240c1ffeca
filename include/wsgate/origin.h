/*
 * Origin allowlist (SPEC §11 "Origin"): normalise an origin as RFC 6454
 * §6.2 serialises it and match a request's Origin header against a
 * configured list, the defence against cross-site WebSocket hijacking
 * (RFC 6455 §10.2). Pure: no I/O, no allocation, no state.
 */
#ifndef WSGATE_ORIGIN_H
#define WSGATE_ORIGIN_H

#include <stddef.h>

/* Longest origin accepted, serialised, without the NUL. */
#define WSG_ORIGIN_MAX 512

typedef enum {
    WSG_ORIGIN_OK = 0,
    WSG_ORIGIN_EINVAL = -1, /* not a serialised origin; *reason says why */
    WSG_ORIGIN_ENOSPC = -2, /* longer than WSG_ORIGIN_MAX or <cap> */
} wsg_origin_status_t;

/*
 * Normalises in[0..n), surrounding spaces and tabs ignored, to
 * "scheme://host[:port]" in <out> (<cap> bytes, NUL-terminated; *outlen
 * without the NUL): scheme and host in lower case (ASCII only: an
 * internationalised name must be given in its punycode form, as browsers
 * send it), IPv6 literals in brackets, the port in decimal without leading
 * zeros and dropped when it is the scheme's default (http and ws 80, https
 * and wss 443). Refused, with a static reason in *reason: "null" (the
 * opaque origin of sandboxed and file: pages, which any site can produce),
 * a path or trailing slash, a query or fragment, user info, an empty
 * host, a port of 0 or over 65535, and any other character. Used on
 * configured origins once at load and on each request's Origin header.
 */
wsg_origin_status_t wsg_origin_normalize(const char *in, size_t n, char *out, size_t cap,
                                         size_t *outlen, const char **reason);

typedef enum {
    WSG_ORIGIN_ALLOWED = 0, /* in the list, or no list configured */
    WSG_ORIGIN_REFUSED = 1, /* present and not in the list (invalid and "null" included): 403 */
    WSG_ORIGIN_MISSING = 2, /* no Origin header and a list is set: decided after the token */
} wsg_origin_verdict_t;

/*
 * Decides a request's Origin against <list> (<count> origins, each already
 * normalised by wsg_origin_normalize(); borrowed). <list> NULL means no
 * list is configured: everything is ALLOWED. <origin> NULL means the
 * request has no Origin header. Matching is exact after normalisation, so
 * "https://Chat.Example.com:443" matches "https://chat.example.com" and
 * "http://chat.example.com" does not.
 */
wsg_origin_verdict_t wsg_origin_check(const char *const *list, size_t count, const char *origin,
                                      size_t len);

#endif /* WSGATE_ORIGIN_H */
