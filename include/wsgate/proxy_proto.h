/*
 * PROXY protocol (HAProxy, versions 1 and 2) header parser: pure, no I/O,
 * no allocation.
 *
 * A listener with proxy_protocol: true expects this header as the very
 * first bytes of every connection, before the TLS ClientHello or the HTTP
 * request; the source address it carries replaces the socket's peer
 * address for `ip` stickiness, X-Forwarded-For and logs.
 *
 * The parser keeps no state between calls: the caller accumulates what it
 * has read and calls wsg_proxy_parse() again on the whole buffer whenever
 * it returns WSG_PROXY_NEED_MORE. A buffer that cannot be the start of a
 * PROXY header is rejected as soon as its first byte shows it (no waiting
 * for more), so a client that sends no header fails fast. The time a header
 * may take is the caller's business (the connection's handshake deadline).
 */
#ifndef WSGATE_PROXY_PROTO_H
#define WSGATE_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest version 1 header, CRLF included (the protocol's own bound). */
#define WSG_PROXY_V1_MAX 107
/* Longest version 2 header wsgate accepts: the 16-byte fixed part plus up
 * to 2032 bytes of addresses and TLVs. The protocol allows 65535; a larger
 * header is MALFORMED so a client cannot make us buffer 64 KiB before the
 * request even starts. */
#define WSG_PROXY_V2_MAX 2048
/* Enough bytes to hold any header wsgate accepts. */
#define WSG_PROXY_MAX WSG_PROXY_V2_MAX

typedef enum {
    WSG_PROXY_DONE = 0,       /* a complete header; *consumed bytes are it */
    WSG_PROXY_NEED_MORE = 1,  /* a valid prefix so far: read more, call again */
    WSG_PROXY_MALFORMED = -1, /* not a valid header: close the connection */
} wsg_proxy_status_t;

typedef struct wsg_proxy_result_s {
    int version; /* 1 or 2 (DONE only) */
    /* 1 when the header carries no usable source address: v1 "UNKNOWN",
     * v2 LOCAL (a health check from the proxy itself), v2 UNSPEC or
     * AF_UNIX. The caller then keeps the socket's own peer address. */
    int local;
    /* DONE and !local: source (the real client) and destination as
     * sockaddr_in / sockaddr_in6, port included. */
    struct sockaddr_storage src;
    struct sockaddr_storage dst;
    socklen_t src_len, dst_len;
    /* MALFORMED: a static string saying what is wrong, for the log. */
    const char *reason;
} wsg_proxy_result_t;

/*
 * Parses the PROXY header at the start of data[0..len). Never reads past
 * data[len - 1]; <data> need not be NUL-terminated; len 0 is NEED_MORE.
 *
 * Returns WSG_PROXY_DONE with *consumed = the header's length (the bytes
 * after it are the client's first bytes and belong to the next layer) and
 * <out> filled; WSG_PROXY_NEED_MORE (nothing else set); or
 * WSG_PROXY_MALFORMED with out->reason set. <out> is zeroed first.
 */
wsg_proxy_status_t wsg_proxy_parse(const void *data, size_t len, size_t *consumed,
                                   wsg_proxy_result_t *out);

#endif /* WSGATE_PROXY_PROTO_H */
