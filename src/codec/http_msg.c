/*
 * Plain HTTP messages through the proxy (see http_msg.h).
 *
 * The proxy forwards bodies unchanged and states their framing itself, so
 * what matters here is that wsgate and the backend can never disagree on
 * where a message ends: a request is forwarded only when its framing has one
 * reading (RFC 9112 §6.3, §11.2), and the headers that describe a single hop
 * are dropped rather than passed on (RFC 9110 §7.6.1).
 */
#include "wsgate/http_msg.h"

#include "head_writer.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- small helpers --------------------------------------------------------- */

static bool eq_nocase(const char *a, size_t n, const char *lit) {
    size_t k = strlen(lit);
    return n == k && strncasecmp(a, lit, k) == 0;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *n) {
    while (*n > 0 && is_ows(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*s)[*n - 1]))
        (*n)--;
}

/* Calls <fn> on each element of a comma-separated list value, trimmed and
 * non-empty; stops early when <fn> returns true and returns true then. */
typedef bool (*elem_fn)(const char *e, size_t n, void *arg);

static bool each_elem(const char *v, size_t n, elem_fn fn, void *arg) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        const char *e = v + i;
        size_t en = j - i;
        trim(&e, &en);
        if (en > 0 && fn(e, en, arg))
            return true;
        i = j + 1;
    }
    return false;
}

static bool elem_is(const char *e, size_t n, void *lit) { return eq_nocase(e, n, lit); }

/* The element up to its parameters (";q=0.9"), trimmed. */
static bool elem_type_is(const char *e, size_t n, void *lit) {
    size_t k = 0;
    while (k < n && e[k] != ';')
        k++;
    trim(&e, &k);
    return eq_nocase(e, k, lit);
}

/* Whether an element of any header <id> (several are one list) makes <fn>
 * return true. */
static bool any_header_has(const wsg_http_head_t *h, const char *buf, wsg_http_hdr_t id,
                           elem_fn fn, void *arg) {
    size_t n = wsg_http_head_count(h);
    for (size_t i = wsg_http_head_first_id(h, id), left = wsg_http_head_has(h, id);
         left > 0 && i < n; i++) {
        const char *hn, *hv;
        size_t hnl, hvl;
        if (wsg_http_head_id(h, i) != id)
            continue;
        left--;
        wsg_http_head_at(h, buf, i, &hn, &hnl, &hv, &hvl);
        trim(&hv, &hvl);
        if (each_elem(hv, hvl, fn, arg))
            return true;
    }
    return false;
}

/* ---- the smuggling rules ----------------------------------------------------- */

/* A control byte other than HTAB, CR and LF in a head the feed's strict
 * pass accepted (so its CRs and LFs are line ends already checked). */
static const char *check_head_bytes(const char *buf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 0x20 && c != 0x7f)
            continue; /* nearly every byte */
        if (c != '\t' && c != '\r' && c != '\n')
            return "control character in the head";
    }
    return NULL;
}

typedef struct {
    int count;       /* Transfer-Encoding codings seen */
    int chunked_at;  /* index of the (last) chunked coding, -1 if none */
    int chunked_n;
} te_scan_t;

static bool te_elem(const char *e, size_t n, void *arg) {
    te_scan_t *t = arg;
    size_t k = 0;
    while (k < n && e[k] != ';')
        k++;
    trim(&e, &k);
    if (eq_nocase(e, k, "chunked")) {
        t->chunked_at = t->count;
        t->chunked_n++;
    }
    t->count++;
    return false;
}

static bool parse_length(const char *v, size_t n, uint64_t *out) {
    uint64_t x = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        uint64_t d = (uint64_t)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false; /* past 2^64 - 1 */
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* Content-Length: every value (a line, or a comma list in one line) must be
 * digits and all must agree (RFC 9110 §8.6). */
static const char *scan_lengths(const wsg_http_head_t *h, const char *buf, bool *has,
                                uint64_t *len) {
    *has = false;
    wsg_http_hdr_t id = WSG_H_CONTENT_LENGTH;
    size_t n = wsg_http_head_count(h);
    for (size_t i = wsg_http_head_first_id(h, id), left = wsg_http_head_has(h, id);
         left > 0 && i < n; i++) {
        const char *hn, *hv;
        size_t hnl, hvl;
        if (wsg_http_head_id(h, i) != id)
            continue;
        left--;
        wsg_http_head_at(h, buf, i, &hn, &hnl, &hv, &hvl);
        trim(&hv, &hvl);
        size_t a = 0;
        do {
            size_t b = a;
            while (b < hvl && hv[b] != ',')
                b++;
            const char *e = hv + a;
            size_t en = b - a;
            trim(&e, &en);
            uint64_t x;
            if (!parse_length(e, en, &x))
                return "invalid Content-Length";
            if (*has && x != *len)
                return "several different Content-Lengths";
            *has = true;
            *len = x;
            a = b + 1;
        } while (a <= hvl);
    }
    return NULL;
}

static void scan_te(const wsg_http_head_t *h, const char *buf, te_scan_t *t) {
    t->count = t->chunked_n = 0;
    t->chunked_at = -1;
    any_header_has(h, buf, WSG_H_TRANSFER_ENCODING, te_elem, t);
}

int wsg_http_check_message(const wsg_http_head_t *h, const char *buf, const char **reason) {
    int bad = wsg_http_head_status(h) != 0 ? 502 : 400;
    /* The feed's strict pass has already refused bare CR and LF, obs-fold
     * and names that are not tokens (so no whitespace around a name); it
     * noted whether a control byte is there, the one thing left to find. */
    const char *why = wsg_http_head_has_ctl(h) ? check_head_bytes(buf, wsg_http_head_len(h)) : NULL;
    bool has_len;
    uint64_t len;
    te_scan_t te;

    if (why == NULL)
        why = scan_lengths(h, buf, &has_len, &len);
    if (why == NULL) {
        scan_te(h, buf, &te);
        bool has_te = wsg_http_head_has(h, WSG_H_TRANSFER_ENCODING) > 0;
        if (has_te && has_len)
            why = "both Content-Length and Transfer-Encoding";
        else if (has_te && wsg_http_head_status(h) == 0 &&
                 (te.chunked_at != te.count - 1 || te.chunked_n != 1))
            why = "Transfer-Encoding is not a final chunked";
        else if (has_te && te.chunked_n > 1)
            why = "chunked applied twice";
        else if (has_te && wsg_http_head_version(h) < 11)
            why = "Transfer-Encoding in an HTTP/1.0 message";
    }
    if (why != NULL) {
        *reason = why;
        return bad;
    }
    *reason = "ok";
    return 0;
}

/* ---- framing ------------------------------------------------------------------ */

static void framing(const wsg_http_head_t *h, const char *buf, bool response, wsg_body_t *out) {
    bool has_len;
    uint64_t len = 0;
    te_scan_t te;

    out->kind = WSG_BODY_NONE;
    out->length = 0;
    if (wsg_http_head_has(h, WSG_H_TRANSFER_ENCODING)) {
        scan_te(h, buf, &te);
        /* A response whose codings do not end in chunked runs to the close
         * (RFC 9112 §6.3 item 4); a request like that was refused. */
        out->kind = te.chunked_at == te.count - 1 ? WSG_BODY_CHUNKED : WSG_BODY_EOF;
        return;
    }
    if (scan_lengths(h, buf, &has_len, &len) == NULL && has_len) {
        out->kind = len > 0 ? WSG_BODY_LENGTH : WSG_BODY_NONE;
        out->length = len;
        return;
    }
    if (response)
        out->kind = WSG_BODY_EOF;
}

void wsg_http_request_body(const wsg_http_head_t *h, const char *buf, wsg_body_t *out) {
    framing(h, buf, false, out);
}

void wsg_http_response_body(const wsg_http_head_t *resp, const char *buf, bool head_request,
                            wsg_body_t *out) {
    int st = wsg_http_head_status(resp);
    if (head_request || st / 100 == 1 || st == 204 || st == 304) {
        out->kind = WSG_BODY_NONE;
        out->length = 0;
        return;
    }
    framing(resp, buf, true, out);
}

bool wsg_http_keeps_alive(const wsg_http_head_t *h, const char *buf) {
    if (any_header_has(h, buf, WSG_H_CONNECTION, elem_is, "close"))
        return false;
    if (wsg_http_head_version(h) >= 11)
        return true;
    return any_header_has(h, buf, WSG_H_CONNECTION, elem_is, "keep-alive");
}

bool wsg_http_accepts(const wsg_http_head_t *h, const char *buf, const char *type) {
    return any_header_has(h, buf, WSG_H_ACCEPT, elem_type_is, (void *)type);
}

/* ---- heads wsgate writes ---------------------------------------------------------- */

/* The options of a head's Connection headers, gathered once per head
 * written rather than once per header. */
#define MAX_OPTIONS 16

typedef struct {
    size_t n;
    bool overflow; /* more than MAX_OPTIONS: look in the head itself */
    struct {
        const char *s;
        size_t n;
    } opt[MAX_OPTIONS];
} options_t;

static bool add_option(const char *e, size_t n, void *arg) {
    options_t *o = arg;
    if (o->n == MAX_OPTIONS) {
        o->overflow = true;
        return true;
    }
    o->opt[o->n].s = e;
    o->opt[o->n++].n = n;
    return false;
}

static void connection_options(const wsg_http_head_t *h, const char *buf, options_t *o) {
    o->n = 0;
    o->overflow = false;
    any_header_has(h, buf, WSG_H_CONNECTION, add_option, o);
}

static bool elem_names(const char *e, size_t n, void *arg) {
    const char **name = arg; /* {name, (const char *)len} */
    return n == (size_t)(uintptr_t)name[1] && strncasecmp(e, name[0], n) == 0;
}

/* RFC 9110 §7.6.1: headers meant for one hop, and any the sender's
 * Connection header names (<o>). Header <i> is named <name>[0..n). */
static bool is_hop_by_hop(const wsg_http_head_t *h, const char *buf, const options_t *o,
                          size_t i, const char *name, size_t n) {
    switch (wsg_http_head_id(h, i)) {
    case WSG_H_CONNECTION:
    case WSG_H_KEEP_ALIVE:
    case WSG_H_PROXY_CONNECTION:
    case WSG_H_TE:
    case WSG_H_TRAILER:
    case WSG_H_TRANSFER_ENCODING:
    case WSG_H_UPGRADE:
        return true;
    default:
        break;
    }
    if (!o->overflow) {
        for (size_t k = 0; k < o->n; k++)
            if (o->opt[k].n == n && strncasecmp(o->opt[k].s, name, n) == 0)
                return true;
        return false;
    }
    const char *arg[2] = {name, (const char *)(uintptr_t)n};
    return any_header_has(h, buf, WSG_H_CONNECTION, elem_names, arg);
}

static bool is_forwarding(wsg_http_hdr_t id) {
    return id == WSG_H_X_FORWARDED_FOR || id == WSG_H_X_FORWARDED_PROTO ||
           id == WSG_H_X_FORWARDED_HOST || id == WSG_H_X_REAL_IP;
}

/* <v> in decimal at <out> (20 bytes suffice); returns the length. */
static size_t put_u64(char *out, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static void put_framing(wsg_head_writer_t *w, const wsg_body_t *body) {
    char num[20];
    if (body->kind == WSG_BODY_LENGTH) {
        hw_put_header(w, "Content-Length", 14, num, put_u64(num, body->length));
    } else if (body->kind == WSG_BODY_CHUNKED) {
        hw_put_str(w, "Transfer-Encoding: chunked\r\n");
    }
}

ssize_t wsg_http_build_request(const wsg_http_head_t *h, const char *buf,
                               const wsg_forward_info_t *info, const wsg_body_t *body,
                               bool reuse, char *out, size_t cap) {
    wsg_head_writer_t w = {.out = out, .cap = cap};
    const char *url, *host = NULL, *xff = NULL;
    size_t urllen, hostlen = 0, xfflen = 0;

    options_t opts;

    connection_options(h, buf, &opts);
    wsg_http_head_url(h, buf, &url, &urllen);
    hw_put_str(&w, wsg_http_head_method(h));
    hw_put(&w, " ", 1);
    hw_put(&w, url, urllen);
    hw_put_str(&w, " HTTP/1.1\r\n");
    for (size_t i = 0, n = wsg_http_head_count(h); i < n; i++) {
        const char *hn, *hv;
        size_t hnl, hvl;
        wsg_http_hdr_t id = wsg_http_head_id(h, i);
        wsg_http_head_at(h, buf, i, &hn, &hnl, &hv, &hvl);
        trim(&hv, &hvl);
        if (id == WSG_H_X_FORWARDED_FOR) {
            xff = hv; /* the last one is the list proxies append to */
            xfflen = hvl;
        }
        if (id == WSG_H_HOST && host == NULL) {
            host = hv;
            hostlen = hvl;
        }
        if (is_hop_by_hop(h, buf, &opts, i, hn, hnl) || is_forwarding(id) || id == WSG_H_CONTENT_LENGTH)
            continue; /* Content-Length is restated below */
        hw_put_header(&w, hn, hnl, hv, hvl);
    }
    hw_put_str(&w, "X-Forwarded-For: ");
    if (xff != NULL && xfflen > 0) {
        hw_put(&w, xff, xfflen);
        hw_put(&w, ", ", 2);
    }
    hw_put_str(&w, info->client_ip);
    hw_put(&w, "\r\n", 2);
    hw_put_header(&w, "X-Forwarded-Proto", 17, info->proto, strlen(info->proto));
    if (host != NULL)
        hw_put_header(&w, "X-Forwarded-Host", 16, host, hostlen);
    hw_put_header(&w, "X-Real-IP", 9, info->client_ip, strlen(info->client_ip));
    put_framing(&w, body);
    if (!reuse)
        hw_put_str(&w, "Connection: close\r\n");
    hw_put(&w, "\r\n", 2);
    return w.overflow ? -1 : (ssize_t)w.len;
}

/* The reason phrase of the status line, as the backend wrote it: the text
 * after "HTTP/1.x NNN " up to CRLF (a checked head has its CRLF). */
static void status_reason(const char *buf, size_t head_len, const char **r, size_t *n) {
    size_t i = 0, sp = 0;
    *r = "";
    *n = 0;
    while (i < head_len && buf[i] != '\r') {
        if (buf[i] == ' ' && ++sp == 2) {
            size_t j = i + 1;
            while (j < head_len && buf[j] != '\r')
                j++;
            *r = buf + i + 1;
            *n = j - i - 1;
            return;
        }
        i++;
    }
}

ssize_t wsg_http_build_response(const wsg_http_head_t *resp, const char *buf,
                                const wsg_body_t *body, bool keep_alive, int client_version,
                                char *out, size_t cap) {
    wsg_head_writer_t w = {.out = out, .cap = cap};
    char line[] = "HTTP/1.1 000 ";
    const char *reason;
    size_t rlen;
    int st = wsg_http_head_status(resp);

    options_t opts;

    connection_options(resp, buf, &opts);
    status_reason(buf, wsg_http_head_len(resp), &reason, &rlen);
    /* llhttp takes exactly three digits for a status. */
    line[9] = (char)('0' + st / 100 % 10);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    hw_put(&w, line, sizeof(line) - 1);
    if (rlen > 0)
        hw_put(&w, reason, rlen);
    else
        hw_put_str(&w, wsg_http_reason(st));
    hw_put(&w, "\r\n", 2);
    for (size_t i = 0, n = wsg_http_head_count(resp); i < n; i++) {
        const char *hn, *hv;
        size_t hnl, hvl;
        wsg_http_head_at(resp, buf, i, &hn, &hnl, &hv, &hvl);
        trim(&hv, &hvl);
        if (is_hop_by_hop(resp, buf, &opts, i, hn, hnl))
            continue;
        /* Content-Length is restated for a body; the answer to HEAD and a
         * 304 keep the backend's, which describes the representation
         * (RFC 9110 §8.6); 1xx and 204 may not carry one. */
        if (wsg_http_head_id(resp, i) == WSG_H_CONTENT_LENGTH &&
            (body->kind != WSG_BODY_NONE || st / 100 == 1 || st == 204))
            continue;
        hw_put_header(&w, hn, hnl, hv, hvl);
    }
    /* 1xx, 204 and 304 carry no framing (RFC 9110 §8.6: a 304 may repeat the
     * length of the representation, which it does not carry). */
    if (st / 100 != 1 && st != 204)
        put_framing(&w, body);
    if (st / 100 != 1) {
        if (!keep_alive || body->kind == WSG_BODY_EOF)
            hw_put_str(&w, "Connection: close\r\n");
        else if (client_version < 11)
            hw_put_str(&w, "Connection: keep-alive\r\n");
    }
    hw_put(&w, "\r\n", 2);
    return w.overflow ? -1 : (ssize_t)w.len;
}

/* ---- wsgate's own answers -------------------------------------------------------- */

/* A reason goes into JSON and into a text line: keep it printable ASCII,
 * without the characters JSON would need to escape. */
static void clean_reason(const char *in, char *out, size_t cap) {
    size_t k = 0;
    for (; in != NULL && *in != '\0' && k + 1 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        out[k++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    out[k] = '\0';
}

size_t wsg_http_error(int status, const char *reason, bool json, unsigned retry_after,
                      bool keep_alive, char *out, size_t cap) {
    char why[160], body[256], retry[48] = "", msg[768];
    int blen, n;

    if (status < 100 || status > 599)
        return 0;
    clean_reason(reason != NULL ? reason : wsg_http_reason(status), why, sizeof(why));
    if (json)
        blen = snprintf(body, sizeof(body), "{\"error\": \"%s\", \"status\": %d}\n", why, status);
    else
        blen = snprintf(body, sizeof(body), "%d %s: %s\n", status, wsg_http_reason(status), why);
    if (retry_after > 0)
        snprintf(retry, sizeof(retry), "Retry-After: %u\r\n", retry_after);
    n = snprintf(msg, sizeof(msg),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %d\r\n"
                 "Cache-Control: no-store\r\n"
                 "%s%s"
                 "\r\n"
                 "%s",
                 status, wsg_http_reason(status), json ? "application/json" : "text/plain",
                 blen, retry, keep_alive ? "" : "Connection: close\r\n", body);
    if (n < 0 || (size_t)n >= sizeof(msg) || (size_t)n > cap)
        return 0;
    memcpy(out, msg, (size_t)n);
    return (size_t)n;
}
