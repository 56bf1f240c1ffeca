/*
 * Percent-encoding (RFC 3986 §2.1): the value of one hex digit of a "%XX"
 * escape. Header-only and pure (no I/O, no allocation), so that both the
 * admin endpoint (src/ctl/admin.c) and the echo backend (bench/demo_http.c,
 * which does not link wsgate_core) can use it.
 *
 * The decoding loops stay with their callers because they differ on
 * purpose: the admin endpoint rejects an encoded NUL and keeps '+' as is,
 * the demo backend decodes '+' as a space (HTML forms) and takes any byte.
 */
#ifndef WSGATE_PCT_H
#define WSGATE_PCT_H

/* The value 0..15 of hex digit <ch> (either case), or -1 if it is none. */
static inline int wsg_pct_hexval(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

#endif /* WSGATE_PCT_H */
