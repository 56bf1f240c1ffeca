/*
 * Plain HTTP messages through the proxy (SPEC §9): the pure decisions of an
 * exchange, no I/O.
 *
 * Given a parsed head (handshake.h), this module says whether the message
 * may be forwarded at all (the smuggling rules), how its body is framed, and
 * whether the connection stays open after it, and it writes the head wsgate
 * sends on: hop-by-hop headers dropped, X-Forwarded-* set, and wsgate's own
 * framing and Connection header. Everything is decided from the header
 * values themselves, independently of what llhttp concluded, so a disagreement
 * between the two (the root of request smuggling) is refused, never guessed.
 */
#ifndef WSGATE_HTTP_MSG_H
#define WSGATE_HTTP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wsgate/handshake.h"

typedef enum {
    WSG_BODY_NONE = 0, /* no body: a GET without framing headers, 1xx/204/304, HEAD's answer */
    WSG_BODY_LENGTH,   /* Content-Length bytes */
    WSG_BODY_CHUNKED,  /* Transfer-Encoding ending in chunked */
    WSG_BODY_EOF,      /* a response with neither: ends when the backend closes */
} wsg_body_kind_t;

typedef struct wsg_body_s {
    wsg_body_kind_t kind;
    uint64_t length; /* WSG_BODY_LENGTH */
} wsg_body_t;

/* The smuggling rules of SPEC §9 over a complete head and its raw bytes
 * buf[0..head_len): no control byte (NUL, bare CR or LF, DEL...) anywhere in
 * the head, no obsolete line folding, no whitespace before a colon; at most
 * one distinct Content-Length, made of digits; never both Content-Length and
 * Transfer-Encoding; a Transfer-Encoding must end in chunked, and only
 * chunked may appear once. Returns 0 when the message may be forwarded,
 * else 400 for a request or 502 for a response, with *reason set. */
int wsg_http_check_message(const wsg_http_head_t *h, const char *buf, const char **reason);

/* How the body of a checked request is framed (RFC 9112 §6.3). */
void wsg_http_request_body(const wsg_http_head_t *h, const char *buf, wsg_body_t *out);

/* How the body of a checked response is framed, for a request whose method
 * was HEAD or not (<head_request>): none for HEAD, 1xx, 204 and 304. */
void wsg_http_response_body(const wsg_http_head_t *resp, const char *buf, bool head_request,
                            wsg_body_t *out);

/* Whether the sender of <h> keeps its connection open after this message:
 * HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection:
 * keep-alive". */
bool wsg_http_keeps_alive(const wsg_http_head_t *h, const char *buf);

/* The request head wsgate sends to the backend: "METHOD TARGET HTTP/1.1",
 * every header except the hop-by-hop ones (Connection and every header it
 * names, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 * Upgrade), Content-Length and the X-Forwarded-* / X-Real-IP that wsgate
 * sets (as for an upgrade, SPEC §3.4); then those, the framing of <body>
 * ("Content-Length: N" or "Transfer-Encoding: chunked", the body itself
 * passing unchanged), and "Connection: close" unless <reuse>. Returns the
 * length, or -1 if <cap> is too small; 2 * head_len + 512 is always enough. */
ssize_t wsg_http_build_request(const wsg_http_head_t *h, const char *buf,
                               const wsg_forward_info_t *info, const wsg_body_t *body,
                               bool reuse, char *out, size_t cap);

/* The response head wsgate sends to the client: "HTTP/1.1 STATUS REASON"
 * with the backend's status and reason phrase, every header except the
 * hop-by-hop ones (and Content-Length, restated for a body; kept for the
 * answer to HEAD and a 304), then the framing of <body> and
 * "Connection: keep-alive" (for an HTTP/1.0 client that asked for it) or
 * "Connection: close" as <keep_alive> says. A body framed by the backend's
 * close cannot be delimited on a kept-alive connection, so the caller passes
 * keep_alive = false for WSG_BODY_EOF (the connection then ends with the
 * body). Same return and bound as wsg_http_build_request. */
ssize_t wsg_http_build_response(const wsg_http_head_t *resp, const char *buf,
                                const wsg_body_t *body, bool keep_alive, int client_version,
                                char *out, size_t cap);

/* wsgate's own answer for <status> with a one-line <reason>: text, or
 * {"error": REASON, "status": N} when <json>; "Retry-After: N" when
 * <retry_after> > 0 (an EventSource retries after it); "Connection: close"
 * unless <keep_alive>. Returns the length, or 0 if <cap> is too small. */
size_t wsg_http_error(int status, const char *reason, bool json, unsigned retry_after,
                      bool keep_alive, char *out, size_t cap);

/* Whether the request's Accept names <type> (e.g. "application/json",
 * "text/event-stream"), parameters and q-values aside. */
bool wsg_http_accepts(const wsg_http_head_t *h, const char *buf, const char *type);

#endif /* WSGATE_HTTP_MSG_H */
