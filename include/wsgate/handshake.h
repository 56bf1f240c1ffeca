/*
 * The WebSocket opening handshake (SPEC §3, RFC 6455 §4): HTTP/1.1 head
 * parsing with llhttp, Upgrade validation, the request forwarded upstream,
 * the backend's answer checked, and wsgate's own small error responses.
 *
 * No I/O. The caller accumulates the bytes of a head in ONE contiguous
 * buffer it owns and calls wsg_http_head_feed() after each read with the
 * whole buffer; the parser records headers as offsets into that buffer, so
 * the buffer may move (realloc) between calls but its contents must not
 * change. A wsg_http_head_t lives only for the handshake and is freed when
 * the relay starts.
 */
#ifndef WSGATE_HANDSHAKE_H
#define WSGATE_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WSG_HTTP_MAX_HEADERS 100
#define WSG_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

typedef struct wsg_http_head_s wsg_http_head_t;

typedef enum {
    WSG_HTTP_REQUEST = 0,
    WSG_HTTP_RESPONSE = 1,
} wsg_http_kind_t;

/* Results of wsg_http_head_feed(). */
enum {
    WSG_HEAD_INCOMPLETE = 0, /* need more bytes */
    WSG_HEAD_COMPLETE = 1,   /* head parsed; wsg_http_head_len() bytes long */
    WSG_HEAD_MALFORMED = -1, /* not HTTP/1.x: answer 400 (request) / 502 (response) */
    WSG_HEAD_TOO_LARGE = -2, /* over max_bytes or WSG_HTTP_MAX_HEADERS: 431 / 502 */
};

/* Creates a parser for one request or response head of at most <max_bytes>
 * bytes (request line + headers + blank line). Returns NULL on ENOMEM. */
wsg_http_head_t *wsg_http_head_new(wsg_http_kind_t kind, size_t max_bytes);
void wsg_http_head_free(wsg_http_head_t *h);
/* Makes <h> a new parser, as wsg_http_head_new() would, in place: the next
 * message of a keep-alive connection needs no allocation. */
void wsg_http_head_reset(wsg_http_head_t *h, wsg_http_kind_t kind, size_t max_bytes);
/* The bytes a head takes, for a caller that keeps heads in its own
 * allocator (a worker's slab): wsg_http_head_reset() makes such memory,
 * suitably aligned for pointers and 64-bit integers, a head; it is freed
 * by that allocator, never by wsg_http_head_free(). */
size_t wsg_http_head_size(void);

/* Parses the bytes of <buf>[0..len) not yet seen (<len> only grows between
 * calls). Bytes after the end of the head are not consumed: they are early
 * frames (request) or the first bytes of the body / of the relay (response)
 * and start at buf + wsg_http_head_len(h). Once a result other than
 * WSG_HEAD_INCOMPLETE is returned, further calls return the same result. */
int wsg_http_head_feed(wsg_http_head_t *h, const char *buf, size_t len);

/* Length of the head in bytes, including the final CRLF CRLF (valid after
 * WSG_HEAD_COMPLETE). */
size_t wsg_http_head_len(const wsg_http_head_t *h);
/* Whether a complete head holds a control byte other than HTAB, CR and LF
 * (the strict pass of the feed notes it; wsg_http_check_message() refuses
 * such a head). */
bool wsg_http_head_has_ctl(const wsg_http_head_t *h);

/* Fields of a complete head. Pointers are into the <buf> passed to the last
 * wsg_http_head_feed() and valid while it is. */
const char *wsg_http_head_method(const wsg_http_head_t *h); /* "GET"; "" for a response */
void wsg_http_head_url(const wsg_http_head_t *h, const char *buf, const char **url, size_t *len);
int wsg_http_head_version(const wsg_http_head_t *h); /* major * 10 + minor: 11 */
int wsg_http_head_status(const wsg_http_head_t *h);  /* responses only */
size_t wsg_http_head_count(const wsg_http_head_t *h);
void wsg_http_head_at(const wsg_http_head_t *h, const char *buf, size_t i, const char **name,
                      size_t *namelen, const char **value, size_t *valuelen);
/* The headers wsgate itself reads, named once as each header is parsed:
 * a later look-up compares small integers instead of names. */
typedef enum {
    WSG_H_OTHER = 0,
    WSG_H_ACCEPT,
    WSG_H_CONNECTION,
    WSG_H_CONTENT_LENGTH,
    WSG_H_CONTENT_TYPE,
    WSG_H_HOST,
    WSG_H_KEEP_ALIVE,
    WSG_H_PROXY_CONNECTION,
    WSG_H_SEC_WEBSOCKET_ACCEPT,
    WSG_H_SEC_WEBSOCKET_KEY,
    WSG_H_SEC_WEBSOCKET_VERSION,
    WSG_H_TE,
    WSG_H_TRAILER,
    WSG_H_TRANSFER_ENCODING,
    WSG_H_UPGRADE,
    WSG_H_X_FORWARDED_FOR,
    WSG_H_X_FORWARDED_HOST,
    WSG_H_X_FORWARDED_PROTO,
    WSG_H_X_REAL_IP,
    WSG_H_COUNT
} wsg_http_hdr_t;

/* The id of the header name <name>[0..n) (case-insensitive), WSG_H_OTHER
 * for any name not in the list. */
wsg_http_hdr_t wsg_http_header_id(const char *name, size_t n);
/* The id of header <i> of a complete head, and how many headers have <id>. */
wsg_http_hdr_t wsg_http_head_id(const wsg_http_head_t *h, size_t i);
size_t wsg_http_head_has(const wsg_http_head_t *h, wsg_http_hdr_t id);
/* The index of the first header with <id>, wsg_http_head_count() when none:
 * a walk over the headers of one id starts there and ends after
 * wsg_http_head_has() of them, not at the last header. */
size_t wsg_http_head_first_id(const wsg_http_head_t *h, wsg_http_hdr_t id);

/* First header named <name> (case-insensitive), value with surrounding
 * whitespace trimmed; NULL when absent. */
const char *wsg_http_head_get(const wsg_http_head_t *h, const char *buf, const char *name,
                              size_t *valuelen);
/* The same for a known header: no name compared. */
const char *wsg_http_head_get_id(const wsg_http_head_t *h, const char *buf, wsg_http_hdr_t id,
                                 size_t *valuelen);

/* Feeds body bytes of a response whose head is complete (non-101 answers
 * are relayed with their body). Returns 1 once the message is complete,
 * 0 when more is expected, -1 if the body is malformed. With <data> == NULL
 * (and <len> 0) it signals EOF from the backend: returns 1 if EOF
 * legitimately ends the message, else -1 (truncated). A non-NULL <data>
 * with <len> == 0 (nothing after the head yet) changes nothing and returns
 * the current state: 1 right away for a message without a body (101, 204,
 * 304, "Content-Length: 0"). Bytes after the end of the message are
 * ignored. An interim 1xx head (100, 103) is followed by the final
 * response, which is treated as part of its body. */
int wsg_http_body_feed(wsg_http_head_t *h, const char *data, size_t len);

/* Like wsg_http_body_feed, for a request's body as well as a response's,
 * and says how many of the bytes belonged to the message: *used (the rest
 * starts the next message on the connection). */
int wsg_http_body_feed_n(wsg_http_head_t *h, const char *data, size_t len, size_t *used);

/* Server-Sent Events heartbeat support: from now on the body fed is
 * watched, so that wsg_http_body_at_event_end() can say whether a comment
 * may go in after what was fed: the decoded body so far ends with a blank
 * line (or is empty) and, for a chunked body, the bytes fed end between two
 * chunks. False once the message ended or failed. */
void wsg_http_body_track(wsg_http_head_t *h);
/* The message's body is chunked (Transfer-Encoding ending in chunked). */
bool wsg_http_head_chunked(const wsg_http_head_t *h);
bool wsg_http_body_at_event_end(const wsg_http_head_t *h);

/* Marks a response head, before any byte is fed, as the answer to a HEAD
 * request: it has no body whatever its framing headers say. */
void wsg_http_head_no_body(wsg_http_head_t *h);

/* True once the whole message has been seen: right after the head for a
 * message without a body (a request without one; a 101, 204, 304 or
 * "Content-Length: 0" response), else once a body feed returned 1. */
bool wsg_http_body_complete(const wsg_http_head_t *h);

/* Whether a request asks for a WebSocket (an Upgrade header naming
 * websocket); wsg_handshake_validate() then judges the rest. */
bool wsg_handshake_is_websocket(const wsg_http_head_t *h, const char *buf);

/* The checks every request passes, upgrade or not: a request target
 * without '#', spaces or control bytes, and exactly one valid Host (none is
 * allowed for HTTP/1.0). Returns 0, or 400 with *reason set. */
int wsg_http_check_request(const wsg_http_head_t *h, const char *buf, const char **reason);

/* Validates a complete request head as a WebSocket upgrade (SPEC §3.3).
 * Returns 0 when valid, else the HTTP status to answer (400 or 426) and sets
 * *reason to a short static string for logs ("missing Sec-WebSocket-Key"). */
int wsg_handshake_validate(const wsg_http_head_t *h, const char *buf, const char **reason);

/* Whether a Host value (trimmed) is uri-host [":" port] (RFC 9112 §3.2,
 * RFC 3986 §3.2.2): a reg-name or IPv4 address, or an IPv6 literal in
 * brackets, and a port of at most 5 digits up to 65535. Empty is valid (a
 * target without authority); NULL is not. */
bool wsg_http_host_valid(const char *v, size_t n);

/* Computes Sec-WebSocket-Accept for <key>: base64(SHA-1(key + GUID)).
 * Writes WSG_WS_ACCEPT_LEN chars and a NUL into <out>. */
void wsg_ws_accept(const char *key, size_t keylen, char out[WSG_WS_ACCEPT_LEN + 1]);

/* What to add when forwarding the request upstream (SPEC §3.4). */
typedef struct wsg_forward_info_s {
    const char *client_ip; /* textual client address, e.g. "127.0.0.1" or "::1" */
    const char *proto;     /* "http" or "https" */
} wsg_forward_info_t;

/* The dotted quad of the IPv4 address <in_addr> (a struct in_addr, network
 * order) at <out>, NUL-terminated; what inet_ntop() writes, without its
 * sprintf (this runs for every forwarded request). */
void wsg_ipv4_text(const void *in_addr, char out[16]);

/* Writes the request head to send to the backend into <out>: request line
 * and every header unchanged except that the client's address is appended to
 * X-Forwarded-For, and X-Forwarded-Proto, X-Forwarded-Host (from Host) and
 * X-Real-IP are set, replacing any the client sent. Returns the length, or
 * -1 if <cap> is too small (nothing is written past <cap>). A <cap> of
 * 2 * wsg_http_head_len(h) + 512 is always enough (client_ip up to 64 bytes,
 * proto up to 8): each header may gain a space after its colon and
 * X-Forwarded-Host repeats Host. */
ssize_t wsg_handshake_build_upstream(const wsg_http_head_t *h, const char *buf,
                                     const wsg_forward_info_t *info, char *out, size_t cap);

/* Checks a complete response head from the backend against the client's
 * key. */
enum {
    WSG_RESP_UPGRADE = 0,    /* 101 with the right Sec-WebSocket-Accept: relay */
    WSG_RESP_BAD_ACCEPT = 1, /* 101 but accept missing or wrong: answer 502 */
    WSG_RESP_OTHER = 2,      /* any other status: relay it with its body, then close */
};
int wsg_handshake_check_response(const wsg_http_head_t *resp, const char *buf,
                                 const char expected_accept[WSG_WS_ACCEPT_LEN + 1]);

/* Writes wsgate's own complete error response for <status> (400, 404, 408,
 * 426, 431, 502, 503, 504) with a one-line text body, "Connection: close",
 * and for 426 "Upgrade: websocket" and "Sec-WebSocket-Version: 13".
 * Returns the length, or 0 if <cap> is too small. */
size_t wsg_http_error_response(int status, char *out, size_t cap);

/* Narrows <s>[0..*n) to exclude leading and trailing spaces and tabs
 * (HTTP optional whitespace). */
void wsg_http_trim(const char **s, size_t *n);

/* The reason phrase for <status> ("Not Found"). */
const char *wsg_http_reason(int status);

#endif /* WSGATE_HANDSHAKE_H */
