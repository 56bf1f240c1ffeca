/*
 * Sticky-key extraction (SPEC §2 "balance.key"): which bytes of a request
 * decide its backend. Pure: no I/O, no allocation.
 */
#ifndef WSGATE_BALANCE_KEY_H
#define WSGATE_BALANCE_KEY_H

#include <stddef.h>

#include <wsgate/config.h>
#include <wsgate/handshake.h>
#include <wsgate/jwt.h>

/* Finds the sticky key of a complete request head <h> (parsed from <buf>)
 * per <bal>:
 *   ip           -> <client_ip>
 *   header:NAME  -> the value of the first NAME header (trimmed)
 *   cookie:NAME  -> the value of cookie NAME in any Cookie header
 *                   ("a=1; NAME=v; b=2"; surrounding double quotes removed)
 *   query:NAME   -> the raw (not percent-decoded) value of NAME in the
 *                   request target's query string ("?x=1&NAME=v")
 *   jwt:CLAIM    -> claim CLAIM of <jwt>, the request's verified token
 *                   (wsg_jwt_claim's rendering); absent without one
 * Returns 1 and sets *key and *len (pointing into <buf> or <client_ip>) when the
 * key is present and non-empty. Returns 0 when it is absent or empty: the
 * caller then applies bal->fallback (ip: use <client_ip>; random). */
int wsg_balance_key(const wsg_balance_conf_t *bal, const wsg_http_head_t *h, const char *buf,
                    const char *client_ip, const wsg_jwt_t *jwt, const char **key, size_t *len);

#endif /* WSGATE_BALANCE_KEY_H */
