/*
 * The WebSocket opening handshake (SPEC §3, RFC 6455 §4).
 *
 * This module parses HTTP/1.1 request and response heads with llhttp, decides
 * whether a request is a valid WebSocket upgrade, computes the accept key,
 * writes the head forwarded to the backend, checks the backend's answer and
 * formats wsgate's own small error responses. It does no I/O: the connection
 * code owns the sockets, the buffers and the timers (408 is its business).
 *
 * Key design choice: a head is never copied. The caller keeps the bytes in one
 * contiguous buffer and we record the request target and every header as
 * (offset, length) pairs into it, so the buffer may be reallocated between
 * reads. llhttp is paused from on_headers_complete, which makes it stop exactly
 * after the blank line whatever the request looks like (with or without
 * Upgrade), so bytes after the head (early frames, a response body) are never
 * consumed by the head parser. Since the llhttp shipped by distributions is
 * built in its loose mode, a second pass over the finished head rejects what
 * a strict parser would (bare LF, obs-fold, whitespace in field names,
 * versions other than 1.x).
 */
#include <wsgate/handshake.h>

#include "head_writer.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <llhttp.h>
#include <openssl/evp.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* Offsets into the caller's buffer. 32 bits are plenty (max_header_bytes
 * is at most 1 MiB) and halve the header table, which is most of a parser's
 * size and allocated once per handshake. */
typedef struct span_s {
    uint32_t off;
    uint32_t len;
} span_t;

typedef struct header_s {
    span_t name;
    span_t value;
    bool value_started;
    uint8_t id; /* wsg_http_hdr_t */
} header_t;

typedef enum {
    IN_NONE = 0,
    IN_FIELD,
    IN_VALUE,
} in_span_t;

struct wsg_http_head_s {
    llhttp_t parser;
    wsg_http_kind_t kind;
    size_t max_bytes;
    size_t seen;     /* bytes of the buffer already given to llhttp */
    size_t head_len; /* valid once result == WSG_HEAD_COMPLETE */
    int result;      /* sticky result of wsg_http_head_feed() */

    /* The buffer of the wsg_http_head_feed() call in progress; callbacks turn
     * llhttp's pointers into offsets from it. NULL outside of a feed. */
    const char *cur;

    span_t url;
    bool url_started;
    header_t hdrs[WSG_HTTP_MAX_HEADERS];
    size_t nhdrs;
    /* Per wsg_http_hdr_t: how many headers have it (WSG_HTTP_MAX_HEADERS
     * fits), and the index of the first one. */
    uint8_t id_count[WSG_H_COUNT];
    uint8_t id_first[WSG_H_COUNT];
    in_span_t in;
    bool too_many;

    bool headers_done; /* on_headers_complete has run: we are past the head */
    bool has_ctl;      /* the head holds a control byte other than HTAB, CR, LF */
    bool body_done;    /* the whole message has been seen */
    bool body_error;
    bool no_body;      /* a response to HEAD: no body whatever its framing says */

    /* Framing of the message, saved when the head completes. */
    uint16_t flags;
    uint64_t content_length;

    /* Body tracking (wsg_http_body_track): the last decoded body bytes, and
     * whether what was fed ends between two chunks. */
    bool track;
    bool chunk_paused; /* on_chunk_complete paused the parser */
    bool chunk_edge;   /* the bytes fed so far end at a chunk boundary (or none came) */
    uint8_t ntail;
    char tail[4];
    uint64_t chunk_size; /* of the chunk being read */
};

/* ---- llhttp callbacks ---------------------------------------------------- */

/* Extends <s> with the llhttp span [at, at + n). llhttp delivers a span in
 * several pieces when it straddles two reads; because the caller's buffer is
 * contiguous the pieces are adjacent and the span is simply lengthened. */
static void span_add(wsg_http_head_t *h, span_t *s, bool *started, const char *at, size_t n) {
    size_t off = (size_t)(at - h->cur);

    if (!*started) {
        s->off = (uint32_t)off;
        s->len = (uint32_t)n;
        *started = true;
    } else {
        s->len = (uint32_t)(off + n - s->off);
    }
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
    wsg_http_head_t *h = p->data;

    if (h->headers_done)
        return 0;
    span_add(h, &h->url, &h->url_started, at, n);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
    wsg_http_head_t *h = p->data;
    header_t *hd;

    /* After the head, llhttp may parse trailers or the next response of a 1xx
     * sequence: those are body bytes to us. */
    if (h->headers_done || h->too_many)
        return 0;
    if (h->in != IN_FIELD) {
        /* One header too many: remembered, and the head is refused when it
         * ends (on_headers_complete), so that a head both too long and
         * malformed gets the same verdict however its bytes were cut. */
        if (h->nhdrs == WSG_HTTP_MAX_HEADERS) {
            h->too_many = true;
            return 0;
        }
        hd = &h->hdrs[h->nhdrs++];
        memset(hd, 0, sizeof(*hd));
        h->in = IN_FIELD;
        bool started = false;
        span_add(h, &hd->name, &started, at, n);
        return 0;
    }
    hd = &h->hdrs[h->nhdrs - 1];
    bool started = true;
    span_add(h, &hd->name, &started, at, n);
    return 0;
}

static int on_header_field_complete(llhttp_t *p) {
    wsg_http_head_t *h = p->data;

    if (h->in == IN_FIELD) {
        size_t i = h->nhdrs - 1;
        header_t *hd = &h->hdrs[i];
        hd->id = (uint8_t)wsg_http_header_id(h->cur + hd->name.off, hd->name.len);
        if (h->id_count[hd->id]++ == 0)
            h->id_first[hd->id] = (uint8_t)i;
    }
    h->in = IN_NONE;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
    wsg_http_head_t *h = p->data;
    header_t *hd;

    if (h->headers_done || h->nhdrs == 0 || h->too_many)
        return 0;
    hd = &h->hdrs[h->nhdrs - 1];
    h->in = IN_VALUE;
    span_add(h, &hd->value, &hd->value_started, at, n);
    return 0;
}

static int on_header_value_complete(llhttp_t *p) {
    wsg_http_head_t *h = p->data;

    h->in = IN_NONE;
    return 0;
}

/* Pausing here is what makes llhttp stop right after the blank line, for a
 * request without Upgrade as well as with one; llhttp_get_error_pos() then
 * points just past the head. */
static int on_headers_complete(llhttp_t *p) {
    wsg_http_head_t *h = p->data;

    /* 1xx, 204 and 304 answers never have a body whatever their framing
     * headers say (RFC 9112 §6.3 item 1), but llhttp only honours that when
     * told. Returning 1 ("no body") would lose the pause, so the flag that
     * return value sets is set directly. */
    if (h->kind == WSG_HTTP_RESPONSE &&
        (p->status_code / 100 == 1 || p->status_code == 204 || p->status_code == 304 ||
         h->no_body))
        p->flags |= F_SKIPBODY;
    if (h->headers_done)
        return 0;
    if (h->too_many)
        return HPE_USER;
    h->headers_done = true;
    h->flags = p->flags;
    h->content_length = p->content_length;
    return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *p) {
    wsg_http_head_t *h = p->data;
    int status = p->status_code;

    /* An interim 1xx answer (100, 103...) is followed by the real response,
     * which belongs to the same exchange: keep parsing. 101 is final. */
    if (h->kind == WSG_HTTP_RESPONSE && status / 100 == 1 && status != 101)
        return 0;
    h->body_done = true;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
    wsg_http_head_t *h = p->data;

    if (!h->track || n == 0)
        return 0;
    if (n >= sizeof(h->tail)) {
        memcpy(h->tail, at + n - sizeof(h->tail), sizeof(h->tail));
        h->ntail = sizeof(h->tail);
        return 0;
    }
    size_t keep = h->ntail + n > sizeof(h->tail) ? sizeof(h->tail) - n : h->ntail;
    memmove(h->tail, h->tail + h->ntail - keep, keep);
    memcpy(h->tail + keep, at, n);
    h->ntail = (uint8_t)(keep + n);
    return 0;
}

static int on_chunk_header(llhttp_t *p) {
    wsg_http_head_t *h = p->data;
    h->chunk_size = p->content_length;
    return 0;
}

/* Tracking pauses after every chunk but the last (whose completion runs
 * straight into the message's), so that the feed learns where chunks end. */
static int on_chunk_complete(llhttp_t *p) {
    wsg_http_head_t *h = p->data;
    if (!h->track || h->chunk_size == 0)
        return 0;
    h->chunk_paused = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* ---- small string helpers -------------------------------------------------- */

static bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

void wsg_http_trim(const char **s, size_t *n) {
    while (*n > 0 && is_ows(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*s)[*n - 1]))
        (*n)--;
}

static bool eq_nocase(const char *a, size_t alen, const char *b) {
    size_t blen = strlen(b);

    return alen == blen && strncasecmp(a, b, blen) == 0;
}

/* RFC 9110 §5.6.2 token characters: "!#$%&'*+-.^_`|~", digits, letters. */
static bool is_tchar(unsigned char c) {
    static const uint32_t bits[8] = {
        0x00000000, 0x03ff6cfa, /* 0x20-0x3f: ! # $ % & ' * + - . 0-9 */
        0xc7fffffe, 0x57ffffff, /* 0x40-0x7f: A-Z ^ _ ` a-z | ~ */
    };
    return (bits[c >> 5] >> (c & 31)) & 1;
}

static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* <a>[0..n) equals the lower-case literal <lit> of the same length,
 * ignoring case. */
static bool is_name(const char *a, const char *lit, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

wsg_http_hdr_t wsg_http_header_id(const char *name, size_t n) {
    /* By length, then the first letter where two names share one. */
#define IS(lit, id) (is_name(name, lit, sizeof(lit) - 1) ? (id) : WSG_H_OTHER)
    switch (n) {
    case 2:
        return IS("te", WSG_H_TE);
    case 4:
        return IS("host", WSG_H_HOST);
    case 6:
        return IS("accept", WSG_H_ACCEPT);
    case 7:
        return lower((unsigned char)name[0]) == 't' ? IS("trailer", WSG_H_TRAILER)
                                                     : IS("upgrade", WSG_H_UPGRADE);
    case 9:
        return IS("x-real-ip", WSG_H_X_REAL_IP);
    case 10:
        return lower((unsigned char)name[0]) == 'c' ? IS("connection", WSG_H_CONNECTION)
                                                     : IS("keep-alive", WSG_H_KEEP_ALIVE);
    case 12:
        return IS("content-type", WSG_H_CONTENT_TYPE);
    case 14:
        return IS("content-length", WSG_H_CONTENT_LENGTH);
    case 15:
        return IS("x-forwarded-for", WSG_H_X_FORWARDED_FOR);
    case 16:
        return lower((unsigned char)name[0]) == 'p' ? IS("proxy-connection", WSG_H_PROXY_CONNECTION)
                                                     : IS("x-forwarded-host", WSG_H_X_FORWARDED_HOST);
    case 17:
        switch (lower((unsigned char)name[0])) {
        case 's':
            return IS("sec-websocket-key", WSG_H_SEC_WEBSOCKET_KEY);
        case 't':
            return IS("transfer-encoding", WSG_H_TRANSFER_ENCODING);
        default:
            return IS("x-forwarded-proto", WSG_H_X_FORWARDED_PROTO);
        }
    case 20:
        return IS("sec-websocket-accept", WSG_H_SEC_WEBSOCKET_ACCEPT);
    case 21:
        return IS("sec-websocket-version", WSG_H_SEC_WEBSOCKET_VERSION);
    default:
        return WSG_H_OTHER;
    }
#undef IS
}

wsg_http_hdr_t wsg_http_head_id(const wsg_http_head_t *h, size_t i) {
    assert(i < h->nhdrs);
    return (wsg_http_hdr_t)h->hdrs[i].id;
}

size_t wsg_http_head_has(const wsg_http_head_t *h, wsg_http_hdr_t id) {
    return id < WSG_H_COUNT ? h->id_count[id] : 0;
}

size_t wsg_http_head_first_id(const wsg_http_head_t *h, wsg_http_hdr_t id) {
    return wsg_http_head_has(h, id) > 0 ? h->id_first[id] : h->nhdrs;
}

/* Whether the comma-separated list <v> holds <token> (case-insensitive),
 * as for Connection (RFC 9110 §7.6.1) and Upgrade (§7.8). */
static bool list_has_token(const char *v, size_t n, const char *token) {
    size_t i = 0;

    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        const char *e = v + i;
        size_t elen = j - i;
        wsg_http_trim(&e, &elen);
        if (eq_nocase(e, elen, token))
            return true;
        i = j + 1;
    }
    return false;
}

/* Whether any header <id> holds <token> in its list; several Connection
 * headers are one list (RFC 9110 §5.3). */
static bool headers_have_token(const wsg_http_head_t *h, const char *buf, wsg_http_hdr_t id,
                               const char *token, size_t *count) {
    bool found = false;

    *count = h->id_count[id];
    for (size_t i = *count ? h->id_first[id] : h->nhdrs, left = *count; left > 0 && i < h->nhdrs;
         i++) {
        const header_t *hd = &h->hdrs[i];
        if (hd->id != id)
            continue;
        left--;
        if (list_has_token(buf + hd->value.off, hd->value.len, token))
            found = true;
    }
    return found;
}

static size_t header_count(const wsg_http_head_t *h, wsg_http_hdr_t id) { return h->id_count[id]; }

/* ---- head parsing ------------------------------------------------------------ */

wsg_http_head_t *wsg_http_head_new(wsg_http_kind_t kind, size_t max_bytes) {
    wsg_http_head_t *h = malloc(sizeof(*h));
    if (h != NULL)
        wsg_http_head_reset(h, kind, max_bytes);
    return h;
}

void wsg_http_head_reset(wsg_http_head_t *h, wsg_http_kind_t kind, size_t max_bytes) {
    /* The header table is written entry by entry as headers arrive; zeroing
     * its 100 slots for every handshake would be most of the cost. */
    memset(h, 0, offsetof(struct wsg_http_head_s, hdrs));
    memset(&h->nhdrs, 0, sizeof(*h) - offsetof(struct wsg_http_head_s, nhdrs));
    h->kind = kind;
    h->max_bytes = max_bytes;
    h->result = WSG_HEAD_INCOMPLETE;
    llhttp_init(&h->parser, kind == WSG_HTTP_RESPONSE ? HTTP_RESPONSE : HTTP_REQUEST, &settings);
    h->parser.data = h;
}

size_t wsg_http_head_size(void) { return sizeof(wsg_http_head_t); }

void wsg_http_head_free(wsg_http_head_t *h) {
    free(h);
}

/* The bytes of <x> below 0x20 or equal to DEL, as the high bit of each:
 * those are the only bytes the strict pass has to look at, about one in
 * thirty in a head (each line's CR LF), so it tests 16 bytes at a time
 * where SSE2 is there (every x86-64) and a word at a time else. The
 * lowest marked byte is exact (a borrow only runs upwards, from a byte that
 * is itself marked); the marks above it may be wrong, so the caller takes
 * the lowest and loads the next word after it. */
static uint64_t ctl_bytes(uint64_t x) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t y = x ^ (ones * 0x7f);
    return (((x - ones * 0x20) & ~x) | ((y - ones) & ~y)) & highs;
}

/* The offset of the first byte at or after <i> that is below 0x20 or DEL,
 * or <len>. */
static size_t next_ctl(const char *buf, size_t i, size_t len) {
#if defined(__SSE2__)
    /* 16 at a time: x <= 0x1f unsigned is min(x, 0x1f) == x. The mask is
     * exact for every byte. */
    const __m128i c1f = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
    for (; i + 16 <= len; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + i));
        __m128i ctl = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(x, c1f), x), _mm_cmpeq_epi8(x, del));
        unsigned m = (unsigned)_mm_movemask_epi8(ctl);
        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
    }
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, buf + i, 8);
        uint64_t m = ctl_bytes(x);
        if (m != 0)
            return i + ((size_t)__builtin_ctzll(m) >> 3);
    }
#endif
    for (; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 || c == 0x7f)
            break;
    }
    return i;
}

/* The strict pass over a complete head (RFC 9112 §2.2, §5.1, §5.2): every
 * line ends in CRLF and no CR stands alone, no line of the head starts with
 * whitespace (obs-fold, which a server must reject or rewrite; we forward
 * headers, so we reject), and field names are tokens with no whitespace
 * before the colon. */
static bool head_is_strict(wsg_http_head_t *h, const char *buf) {
    size_t len = h->head_len;
    /* llhttp also takes HTTP/0.9 request lines and HTTP/2.0 ones. */
    if (h->parser.http_major != 1)
        return false;
    for (size_t i = next_ctl(buf, 0, len); i < len; i = next_ctl(buf, i + 1, len)) {
        unsigned char c = (unsigned char)buf[i];
        /* llhttp (loose mode) takes any byte after the CR that ends the
         * head for its LF: "\r\n\r," would end the head and leave the
         * LF that follows it as the first byte of the body or frames. */
        if (c == '\r') {
            /* A line's end, CR and LF taken together: the search goes on
             * after the LF. */
            if (i + 1 >= len || buf[i + 1] != '\n')
                return false;
            if (++i + 1 < len && is_ows(buf[i + 1]))
                return false;
            continue;
        }
        if (c == '\n')
            return false; /* every LF after a CR was taken with it */
        h->has_ctl |= c != '\t';
    }
    for (size_t i = 0; i < h->nhdrs; i++) {
        const header_t *hd = &h->hdrs[i];
        if (hd->name.len == 0)
            return false;
        /* A name with an id matched one of the literals, all tokens. */
        if (hd->id != WSG_H_OTHER)
            continue;
        for (size_t j = 0; j < hd->name.len; j++) {
            if (!is_tchar((unsigned char)buf[hd->name.off + j]))
                return false;
        }
    }
    return true;
}

/* A head is complete: let llhttp decide, without consuming a byte, whether
 * the message already ends here (a request without a body; a 1xx, 204, 304
 * or "Content-Length: 0" response), so that wsg_http_body_complete() can
 * tell the caller not to wait for a body. llhttp runs the non-consuming steps after the pause even on an
 * empty input. */
static void settle_response(wsg_http_head_t *h, const char *buf) {
    llhttp_errno_t err;

    llhttp_resume(&h->parser);
    err = llhttp_execute(&h->parser, buf + h->head_len, 0);
    if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
        h->body_error = true;
}

int wsg_http_head_feed(wsg_http_head_t *h, const char *buf, size_t len) {
    llhttp_errno_t err;
    size_t lim;

    if (h->result != WSG_HEAD_INCOMPLETE)
        return h->result;

    /* Never hand llhttp more than max_bytes: a head that is not complete
     * within them is too large whatever follows. */
    lim = len < h->max_bytes ? len : h->max_bytes;
    if (lim > h->seen) {
        h->cur = buf;
        err = llhttp_execute(&h->parser, buf + h->seen, lim - h->seen);
        h->cur = NULL;
        if (err == HPE_PAUSED && h->headers_done) {
            h->head_len = (size_t)(llhttp_get_error_pos(&h->parser) - buf);
            h->seen = h->head_len;
            if (!head_is_strict(h, buf)) {
                h->result = WSG_HEAD_MALFORMED;
                return h->result;
            }
            settle_response(h, buf);
            h->result = WSG_HEAD_COMPLETE;
            return h->result;
        }
        if (err != HPE_OK) {
            h->result = h->too_many && err == HPE_CB_HEADERS_COMPLETE ? WSG_HEAD_TOO_LARGE
                                                                    : WSG_HEAD_MALFORMED;
            return h->result;
        }
        h->seen = lim;
    }
    if (len >= h->max_bytes)
        h->result = WSG_HEAD_TOO_LARGE;
    return h->result;
}

bool wsg_http_head_has_ctl(const wsg_http_head_t *h) { return h->has_ctl; }

size_t wsg_http_head_len(const wsg_http_head_t *h) {
    return h->result == WSG_HEAD_COMPLETE ? h->head_len : 0;
}

const char *wsg_http_head_method(const wsg_http_head_t *h) {
    if (h->kind != WSG_HTTP_REQUEST || !h->headers_done)
        return "";
    return llhttp_method_name((llhttp_method_t)h->parser.method);
}

void wsg_http_head_url(const wsg_http_head_t *h, const char *buf, const char **url, size_t *len) {
    *url = buf + h->url.off;
    *len = h->url.len;
}

int wsg_http_head_version(const wsg_http_head_t *h) {
    return h->parser.http_major * 10 + h->parser.http_minor;
}

int wsg_http_head_status(const wsg_http_head_t *h) {
    return h->kind == WSG_HTTP_RESPONSE ? h->parser.status_code : 0;
}

size_t wsg_http_head_count(const wsg_http_head_t *h) {
    return h->nhdrs;
}

void wsg_http_head_at(const wsg_http_head_t *h, const char *buf, size_t i, const char **name,
                      size_t *namelen, const char **value, size_t *valuelen) {
    assert(i < h->nhdrs);
    *name = buf + h->hdrs[i].name.off;
    *namelen = h->hdrs[i].name.len;
    *value = buf + h->hdrs[i].value.off;
    *valuelen = h->hdrs[i].value.len;
}

/* The trimmed value of header <i>. */
static const char *value_of(const wsg_http_head_t *h, const char *buf, size_t i, size_t *valuelen) {
    const char *v = buf + h->hdrs[i].value.off;
    size_t n = h->hdrs[i].value.len;
    wsg_http_trim(&v, &n);
    *valuelen = n;
    return v;
}

const char *wsg_http_head_get_id(const wsg_http_head_t *h, const char *buf, wsg_http_hdr_t id,
                                 size_t *valuelen) {
    if (id != WSG_H_OTHER && id < WSG_H_COUNT && h->id_count[id] > 0)
        return value_of(h, buf, h->id_first[id], valuelen);
    *valuelen = 0;
    return NULL;
}

const char *wsg_http_head_get(const wsg_http_head_t *h, const char *buf, const char *name,
                              size_t *valuelen) {
    size_t len = strlen(name);
    wsg_http_hdr_t id = wsg_http_header_id(name, len);
    if (id != WSG_H_OTHER)
        return wsg_http_head_get_id(h, buf, id, valuelen);
    for (size_t i = 0; i < h->nhdrs; i++) {
        const header_t *hd = &h->hdrs[i];
        if (hd->name.len == len && strncasecmp(buf + hd->name.off, name, len) == 0)
            return value_of(h, buf, i, valuelen);
    }
    *valuelen = 0;
    return NULL;
}

/* ---- response body -------------------------------------------------------------- */

bool wsg_http_body_complete(const wsg_http_head_t *h) {
    return h->result == WSG_HEAD_COMPLETE && h->body_done;
}

void wsg_http_head_no_body(wsg_http_head_t *h) { h->no_body = true; }

int wsg_http_body_feed_n(wsg_http_head_t *h, const char *data, size_t len, size_t *used) {
    llhttp_errno_t err;

    *used = 0;
    if (h->result != WSG_HEAD_COMPLETE)
        return -1;
    if (h->body_done)
        return 1;
    if (h->body_error)
        return -1;

    if (data == NULL) {
        /* EOF ends a body delimited by the connection (RFC 9112 §6.3 item 8);
         * anywhere else it truncates the message. llhttp_finish() runs
         * on_message_complete in the first case and fails in the second. */
        llhttp_finish(&h->parser);
        if (h->body_done)
            return 1;
        h->body_error = true;
        return -1;
    }
    if (len == 0)
        return 0;
    const char *at = data;
    size_t left = len;
    h->chunk_edge = false;
    for (;;) {
        err = llhttp_execute(&h->parser, at, left);
        if (err != HPE_PAUSED || !h->chunk_paused)
            break;
        /* A chunk ended (tracking): go on after it. */
        const char *pos = llhttp_get_error_pos(&h->parser);
        h->chunk_paused = false;
        llhttp_resume(&h->parser);
        if (pos == NULL || pos < at || pos > at + left) {
            err = HPE_INTERNAL;
            break;
        }
        left -= (size_t)(pos - at);
        at = pos;
        if (left == 0) {
            h->chunk_edge = true;
            err = HPE_OK;
            break;
        }
    }
    if (h->body_done) {
        /* on_message_complete paused the parser right after the message. */
        const char *end = err == HPE_PAUSED ? llhttp_get_error_pos(&h->parser) : data + len;
        *used = end != NULL && end >= data && end <= data + len ? (size_t)(end - data) : len;
        return 1;
    }
    if (err == HPE_OK) {
        *used = len;
        return 0;
    }
    h->body_error = true;
    return -1;
}

bool wsg_http_head_chunked(const wsg_http_head_t *h) { return (h->flags & F_CHUNKED) != 0; }

void wsg_http_body_track(wsg_http_head_t *h) {
    h->track = true;
    h->chunk_edge = true;
    h->ntail = 0;
}

bool wsg_http_body_at_event_end(const wsg_http_head_t *h) {
    if (!h->track || h->body_done || h->body_error)
        return false;
    if ((h->flags & F_CHUNKED) && !h->chunk_edge)
        return false;
    size_t n = h->ntail, k;
    if (n == 0)
        return true; /* nothing of the body yet */
    if (h->tail[n - 1] == '\n')
        k = n >= 2 && h->tail[n - 2] == '\r' ? n - 2 : n - 1;
    else if (h->tail[n - 1] == '\r')
        k = n - 1;
    else
        return false;
    /* The last line ended, and so did the one before it: a blank line. */
    return k > 0 && (h->tail[k - 1] == '\n' || h->tail[k - 1] == '\r');
}

int wsg_http_body_feed(wsg_http_head_t *h, const char *data, size_t len) {
    size_t used;
    if (h->kind != WSG_HTTP_RESPONSE)
        return -1;
    return wsg_http_body_feed_n(h, data, len, &used);
}

/* ---- validation (SPEC §3.3, RFC 6455 §4.2.1) -------------------------------------- */

static bool is_b64(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* RFC 6455 §4.1: the key is 16 random bytes, base64 encoded: 22 significant
 * characters and "==". */
static bool key_is_valid(const char *k, size_t n) {
    if (n != 24 || k[22] != '=' || k[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        if (!is_b64((unsigned char)k[i]))
            return false;
    }
    return true;
}

/* RFC 3986 §3.2.2 reg-name and IPv4 characters: unreserved and sub-delims.
 * A space, '@' (userinfo), '/', '?' or '#' makes a value that host routing
 * and X-Forwarded-Host must never see; pct-encoding is refused too, as no
 * DNS name needs it and it would give one host two spellings. */
static bool is_reg_name_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("-._~!$&'()*+,;=", ch) != NULL);
}

static bool is_hex(unsigned char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

bool wsg_http_host_valid(const char *v, size_t n) {
    size_t i = 0;

    if (v == NULL)
        return false;
    if (n > 0 && v[0] == '[') {
        /* IP-literal: an IPv6 address (or IPvFuture) in brackets. */
        for (i = 1; i < n && v[i] != ']'; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (!is_hex(ch) && ch != ':' && ch != '.' && ch != 'v' && ch != 'V')
                return false;
        }
        if (i >= n || i == 1)
            return false;
        i++;
    } else {
        for (; i < n && v[i] != ':'; i++) {
            if (!is_reg_name_char((unsigned char)v[i]))
                return false;
        }
    }
    if (i == n)
        return true;
    if (v[i] != ':')
        return false;
    /* port = *DIGIT, at most 65535 */
    unsigned long port = 0;
    size_t digits = 0;
    for (i++; i < n; i++, digits++) {
        if (v[i] < '0' || v[i] > '9' || digits >= 5)
            return false;
        port = port * 10 + (unsigned long)(v[i] - '0');
    }
    return port <= 65535;
}

/* The fragment belongs to the client (RFC 9110 §7.1): a target carrying
 * '#' was not produced by a conforming client, and a backend could route
 * on it differently from wsgate. Control characters never belong. */
static bool target_valid(const wsg_http_head_t *h, const char *buf) {
    const char *url;
    size_t n;

    wsg_http_head_url(h, buf, &url, &n);
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch == '#' || ch <= 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

bool wsg_handshake_is_websocket(const wsg_http_head_t *h, const char *buf) {
    size_t count;
    return headers_have_token(h, buf, WSG_H_UPGRADE, "websocket", &count);
}

int wsg_http_check_request(const wsg_http_head_t *h, const char *buf, const char **reason) {
    const char *v;
    size_t n, count;

    if (!target_valid(h, buf)) {
        *reason = "invalid request target";
        return 400;
    }
    /* RFC 9112 §3.2: a 1.1 request has exactly one Host; a 1.0 one may
     * have none, but never two. */
    count = header_count(h, WSG_H_HOST);
    if (count > 1) {
        *reason = "duplicate Host";
        return 400;
    }
    if (count == 0 && wsg_http_head_version(h) >= 11) {
        *reason = "missing Host";
        return 400;
    }
    v = wsg_http_head_get_id(h, buf, WSG_H_HOST, &n);
    if (count == 1 && !wsg_http_host_valid(v, n)) {
        *reason = "invalid Host";
        return 400;
    }
    *reason = "ok";
    return 0;
}

int wsg_handshake_validate(const wsg_http_head_t *h, const char *buf, const char **reason) {
    const char *v;
    size_t n, count;

    if (h->kind != WSG_HTTP_REQUEST || h->result != WSG_HEAD_COMPLETE) {
        *reason = "incomplete request";
        return 400;
    }

    bool websocket = headers_have_token(h, buf, WSG_H_UPGRADE, "websocket", &count);
    if (count == 0) {
        /* Plain HTTP is not proxied yet (SPEC §9): 426 tells the client
         * what we do speak. */
        *reason = "no Upgrade header";
        return 426;
    }
    if (!websocket) {
        *reason = "Upgrade is not websocket";
        return 400;
    }
    if (!target_valid(h, buf)) {
        *reason = "invalid request target";
        return 400;
    }
    if (h->parser.method != HTTP_GET) {
        *reason = "method is not GET";
        return 400;
    }
    if (wsg_http_head_version(h) != 11) {
        *reason = "not HTTP/1.1";
        return 400;
    }
    if (!headers_have_token(h, buf, WSG_H_CONNECTION, "upgrade", &count)) {
        *reason = "Connection lacks upgrade";
        return 400;
    }

    count = header_count(h, WSG_H_SEC_WEBSOCKET_KEY);
    if (count == 0) {
        *reason = "missing Sec-WebSocket-Key";
        return 400;
    }
    if (count > 1) {
        /* RFC 6455 §11.3.1: it must not appear more than once. */
        *reason = "duplicate Sec-WebSocket-Key";
        return 400;
    }
    v = wsg_http_head_get_id(h, buf, WSG_H_SEC_WEBSOCKET_KEY, &n);
    if (!key_is_valid(v, n)) {
        *reason = "invalid Sec-WebSocket-Key";
        return 400;
    }

    /* RFC 6455 §4.2.2: an unsupported version is answered with 426 and the
     * versions we support. */
    if (header_count(h, WSG_H_SEC_WEBSOCKET_VERSION) > 1) {
        *reason = "duplicate Sec-WebSocket-Version";
        return 400;
    }
    v = wsg_http_head_get_id(h, buf, WSG_H_SEC_WEBSOCKET_VERSION, &n);
    if (v == NULL) {
        *reason = "missing Sec-WebSocket-Version";
        return 426;
    }
    if (n != 2 || memcmp(v, "13", 2) != 0) {
        *reason = "unsupported Sec-WebSocket-Version";
        return 426;
    }

    /* The upgrade GET carries no body (RFC 6455 §4.1); one would be taken
     * for WebSocket frames by the backend. */
    if ((h->flags & (F_TRANSFER_ENCODING | F_CHUNKED)) || h->content_length > 0) {
        *reason = "request has a body";
        return 400;
    }

    /* RFC 9112 §3.2: a 1.1 request has exactly one Host. */
    count = header_count(h, WSG_H_HOST);
    if (count == 0) {
        *reason = "missing Host";
        return 400;
    }
    if (count > 1) {
        *reason = "duplicate Host";
        return 400;
    }
    v = wsg_http_head_get_id(h, buf, WSG_H_HOST, &n);
    if (!wsg_http_host_valid(v, n)) {
        *reason = "invalid Host";
        return 400;
    }

    *reason = "ok";
    return 0;
}

/* ---- accept key ----------------------------------------------------------------------- */

/* SHA-1 fetched from the default provider once per process and never
 * changed after: OpenSSL 3 would otherwise fetch it by name for every
 * handshake (EVP_sha1() is a legacy handle), which costs more than the
 * digest of 60 bytes itself. */
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha1_md;

static void fetch_sha1(void) { sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL); }

void wsg_ws_accept(const char *key, size_t keylen, char out[WSG_WS_ACCEPT_LEN + 1]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    pthread_once(&sha1_once, fetch_sha1);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL &&
             EVP_DigestInit_ex(ctx, sha1_md != NULL ? sha1_md : EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, key, keylen) == 1 &&
             EVP_DigestUpdate(ctx, WS_GUID, sizeof(WS_GUID) - 1) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20;

    EVP_MD_CTX_free(ctx);
    if (!ok) {
        /* Out of memory: '-' is not in the base64 alphabet, so this value
         * never equals a backend's accept and the handshake fails with 502
         * instead of being wrongly accepted. */
        memset(out, '-', WSG_WS_ACCEPT_LEN);
        out[WSG_WS_ACCEPT_LEN] = '\0';
        return;
    }
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    out[WSG_WS_ACCEPT_LEN] = '\0';
}

void wsg_ipv4_text(const void *in_addr, char out[16]) {
    const unsigned char *b = in_addr;
    size_t k = 0;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            out[k++] = (char)('0' + v / 100);
        if (v >= 10)
            out[k++] = (char)('0' + v / 10 % 10);
        out[k++] = (char)('0' + v % 10);
        out[k++] = i < 3 ? '.' : '\0';
    }
}

/* ---- upstream request (SPEC §3.4) ------------------------------------------------------- */

/* Headers that wsgate sets itself: whatever the client sent under these names
 * is dropped, or a client could claim any address to the backend. */
static bool is_replaced(wsg_http_hdr_t id) {
    return id == WSG_H_X_FORWARDED_PROTO || id == WSG_H_X_FORWARDED_HOST || id == WSG_H_X_REAL_IP;
}

ssize_t wsg_handshake_build_upstream(const wsg_http_head_t *h, const char *buf,
                                     const wsg_forward_info_t *info, char *out, size_t cap) {
    wsg_head_writer_t w = {.out = out, .cap = cap};
    const char *url, *host;
    size_t urllen, hostlen;
    /* llhttp reads one digit for each of the major and minor version. */
    char version[] = " HTTP/1.1\r\n";
    size_t last_xff = SIZE_MAX;

    wsg_http_head_url(h, buf, &url, &urllen);
    hw_put_str(&w, wsg_http_head_method(h));
    hw_put(&w, " ", 1);
    hw_put(&w, url, urllen);
    version[6] = (char)('0' + h->parser.http_major % 10);
    version[8] = (char)('0' + h->parser.http_minor % 10);
    hw_put(&w, version, sizeof(version) - 1);

    for (size_t i = 0; h->id_count[WSG_H_X_FORWARDED_FOR] && i < h->nhdrs; i++) {
        if (h->hdrs[i].id == WSG_H_X_FORWARDED_FOR)
            last_xff = i;
    }

    for (size_t i = 0; i < h->nhdrs; i++) {
        const char *name = buf + h->hdrs[i].name.off;
        size_t namelen = h->hdrs[i].name.len;
        const char *value = buf + h->hdrs[i].value.off;
        size_t valuelen = h->hdrs[i].value.len;

        if (is_replaced((wsg_http_hdr_t)h->hdrs[i].id))
            continue;
        wsg_http_trim(&value, &valuelen);
        if (i == last_xff) {
            /* Proxies append to the last X-Forwarded-For, so the list reads
             * client, proxy1, proxy2... in order. */
            hw_put(&w, name, namelen);
            hw_put(&w, ": ", 2);
            if (valuelen > 0) {
                hw_put(&w, value, valuelen);
                hw_put(&w, ", ", 2);
            }
            hw_put_str(&w, info->client_ip);
            hw_put(&w, "\r\n", 2);
            continue;
        }
        hw_put_header(&w, name, namelen, value, valuelen);
    }

    if (last_xff == SIZE_MAX)
        hw_put_header(&w, "X-Forwarded-For", 15, info->client_ip, strlen(info->client_ip));
    hw_put_header(&w, "X-Forwarded-Proto", 17, info->proto, strlen(info->proto));
    host = wsg_http_head_get_id(h, buf, WSG_H_HOST, &hostlen);
    if (host != NULL)
        hw_put_header(&w, "X-Forwarded-Host", 16, host, hostlen);
    hw_put_header(&w, "X-Real-IP", 9, info->client_ip, strlen(info->client_ip));
    hw_put(&w, "\r\n", 2);

    return w.overflow ? -1 : (ssize_t)w.len;
}

/* ---- backend response (RFC 6455 §4.1, client side) ----------------------------------------- */

int wsg_handshake_check_response(const wsg_http_head_t *resp, const char *buf,
                                 const char expected_accept[WSG_WS_ACCEPT_LEN + 1]) {
    const char *v;
    size_t n, count;

    if (resp->kind != WSG_HTTP_RESPONSE || resp->result != WSG_HEAD_COMPLETE ||
        resp->parser.status_code != 101)
        return WSG_RESP_OTHER;

    /* Towards the backend wsgate is the client, and a client must fail the
     * connection when any of these is wrong (RFC 6455 §4.1, items 2-4). */
    if (!headers_have_token(resp, buf, WSG_H_UPGRADE, "websocket", &count))
        return WSG_RESP_BAD_ACCEPT;
    if (!headers_have_token(resp, buf, WSG_H_CONNECTION, "upgrade", &count))
        return WSG_RESP_BAD_ACCEPT;
    v = wsg_http_head_get_id(resp, buf, WSG_H_SEC_WEBSOCKET_ACCEPT, &n);
    if (v == NULL || n != WSG_WS_ACCEPT_LEN || memcmp(v, expected_accept, n) != 0)
        return WSG_RESP_BAD_ACCEPT;
    return WSG_RESP_UPGRADE;
}

/* ---- wsgate's own answers ------------------------------------------------------------------ */

const char *wsg_http_reason(int status) {
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

size_t wsg_http_error_response(int status, char *out, size_t cap) {
    const char *reason = wsg_http_reason(status);
    const char *extra = "";
    char body[64], msg[512];
    int blen, n;

    if (status < 100 || status > 599)
        return 0;
    /* RFC 6455 §4.2.2: tell the client which version we speak. */
    if (status == 426)
        extra = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
    blen = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    n = snprintf(msg, sizeof(msg),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: %d\r\n"
                 "Connection: close\r\n"
                 "%s"
                 "\r\n"
                 "%s",
                 status, reason, blen, extra, body);
    /* Formatted aside so that a response of exactly <cap> bytes fits (no
     * room is needed for a NUL) and nothing partial is left in <out>. */
    if (n < 0 || (size_t)n >= sizeof(msg) || (size_t)n > cap)
        return 0;
    memcpy(out, msg, (size_t)n);
    return (size_t)n;
}
