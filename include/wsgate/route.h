/*
 * Host/path -> route matching (SPEC §2 "routes"). Pure: no I/O, no allocation.
 */
#ifndef WSGATE_ROUTE_H
#define WSGATE_ROUTE_H

#include <stddef.h>

#include <wsgate/config.h>

/* Returns the index of the first route in <routes>[0..n) matching the
 * request, or -1. <host> is the Host header value as received (may be NULL /
 * empty, may carry a ":port" suffix or be an "[ipv6]:port" literal; matching
 * ignores the port and case). <path> is the request target; only the part
 * before '?' or '#' is compared against path_prefix (plain string prefix).
 * A route host "*.example.com" matches "a.example.com" and "a.b.example.com"
 * but not "example.com". */
int wsg_route_match(const wsg_route_conf_t *routes, size_t n, const char *host, size_t hostlen,
                    const char *path, size_t pathlen);

#endif /* WSGATE_ROUTE_H */
