/*
 * Fuzz target: the request head parser, the upgrade validation and the
 * request wsgate writes to the backend (src/codec/handshake.c).
 *
 * Input: byte 0 seeds the read sizes; the rest is what a client sends. The
 * head is parsed twice, whole and as the buffer grows read by read (as the
 * connection feeds it), and checked:
 *   - both parses agree on the result, the head length and every header;
 *   - every name and value lies inside the head;
 *   - validation answers 0, 400 or 426 with a reason;
 *   - the upstream request fits the documented bound (2 * head + 512) and
 *     parses again as one complete head, with the headers SPEC §3.4 implies;
 *   - a plain HTTP request that passes the smuggling rules is rewritten
 *     (http_msg.c) into a head that parses, passes them again and has the
 *     same body framing: what the backend reads is what wsgate forwards.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <wsgate/handshake.h>
#include <wsgate/http_msg.h>

#include "fuzz_util.h"

#define MAX_HEAD 8192

static void check_spans(const wsg_http_head_t *h, const char *buf, size_t head_len) {
    for (size_t i = 0; i < wsg_http_head_count(h); i++) {
        const char *name, *value;
        size_t nl, vl;
        wsg_http_head_at(h, buf, i, &name, &nl, &value, &vl);
        FUZZ_CHECK(name >= buf && name + nl <= buf + head_len);
        FUZZ_CHECK(value >= buf && value + vl <= buf + head_len);
    }
    const char *url;
    size_t ul;
    wsg_http_head_url(h, buf, &url, &ul);
    FUZZ_CHECK(ul == 0 || (url >= buf && url + ul <= buf + head_len));
}

static void same_heads(const wsg_http_head_t *a, const char *abuf, const wsg_http_head_t *b,
                       const char *bbuf) {
    FUZZ_CHECK(wsg_http_head_count(a) == wsg_http_head_count(b));
    for (size_t i = 0; i < wsg_http_head_count(a); i++) {
        const char *an, *av, *bn, *bv;
        size_t anl, avl, bnl, bvl;
        wsg_http_head_at(a, abuf, i, &an, &anl, &av, &avl);
        wsg_http_head_at(b, bbuf, i, &bn, &bnl, &bv, &bvl);
        FUZZ_CHECK(anl == bnl && memcmp(an, bn, anl) == 0);
        FUZZ_CHECK(avl == bvl && memcmp(av, bv, avl) == 0);
    }
}

static int name_is(const char *n, size_t len, const char *lit) {
    return strlen(lit) == len && strncasecmp(n, lit, len) == 0;
}

/* What build_upstream does to the header list (SPEC §3.4): the client's
 * X-Forwarded-Proto, X-Forwarded-Host and X-Real-IP go; X-Forwarded-Proto
 * and X-Real-IP come back, X-Forwarded-For is added when the client sent
 * none (else appended to), X-Forwarded-Host when there is a Host. */
static size_t expected_upstream_count(const wsg_http_head_t *h, const char *buf) {
    size_t n = wsg_http_head_count(h), dropped = 0;
    int xff = 0, host = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        wsg_http_head_at(h, buf, i, &name, &nl, &value, &vl);
        if (name_is(name, nl, "X-Forwarded-Proto") || name_is(name, nl, "X-Forwarded-Host") ||
            name_is(name, nl, "X-Real-IP"))
            dropped++;
        xff |= name_is(name, nl, "X-Forwarded-For");
        host |= name_is(name, nl, "Host");
    }
    return n - dropped + 2 + !xff + host;
}

static void check_upstream(const wsg_http_head_t *h, const char *buf, size_t head_len) {
    const char *reason = NULL;
    int st = wsg_handshake_validate(h, buf, &reason);
    FUZZ_CHECK(st == 0 || st == 400 || st == 426);
    FUZZ_CHECK(reason != NULL);

    wsg_forward_info_t info = {.client_ip = "2001:db8::1", .proto = "https"};
    size_t cap = 2 * head_len + 512;
    char *out = malloc(cap);
    ssize_t n = wsg_handshake_build_upstream(h, buf, &info, out, cap);
    FUZZ_CHECK(n > 0 && (size_t)n <= cap);

    wsg_http_head_t *again = wsg_http_head_new(WSG_HTTP_REQUEST, (size_t)n);
    int r = wsg_http_head_feed(again, out, (size_t)n);
    FUZZ_CHECK(r == WSG_HEAD_COMPLETE || r == WSG_HEAD_TOO_LARGE);
    if (r == WSG_HEAD_COMPLETE) {
        FUZZ_CHECK(wsg_http_head_len(again) == (size_t)n);
        FUZZ_CHECK(wsg_http_head_count(again) == expected_upstream_count(h, buf));
        FUZZ_CHECK(strcmp(wsg_http_head_method(again), wsg_http_head_method(h)) == 0);
    }
    wsg_http_head_free(again);
    free(out);
}

static void check_plain_http(const wsg_http_head_t *h, const char *buf, size_t head_len) {
    const char *why;
    if (wsg_http_check_message(h, buf, &why) != 0)
        return;
    wsg_body_t body, again_body;
    wsg_http_request_body(h, buf, &body);
    wsg_forward_info_t info = {.client_ip = "192.0.2.1", .proto = "http"};
    size_t cap = 2 * head_len + 512;
    char *out = malloc(cap);
    ssize_t n = wsg_http_build_request(h, buf, &info, &body, true, out, cap);
    FUZZ_CHECK(n > 0 && (size_t)n <= cap);
    wsg_http_head_t *again = wsg_http_head_new(WSG_HTTP_REQUEST, (size_t)n);
    int r = wsg_http_head_feed(again, out, (size_t)n);
    FUZZ_CHECK(r == WSG_HEAD_COMPLETE || r == WSG_HEAD_TOO_LARGE);
    if (r == WSG_HEAD_COMPLETE) {
        FUZZ_CHECK(wsg_http_head_len(again) == (size_t)n);
        FUZZ_CHECK(wsg_http_check_message(again, out, &why) == 0);
        wsg_http_request_body(again, out, &again_body);
        FUZZ_CHECK(again_body.kind == body.kind && again_body.length == body.length);
    }
    wsg_http_head_free(again);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    fuzz_rng_t rng;
    fuzz_rng_init(&rng, data[0], size);
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    char *whole = malloc(len + 1);
    memcpy(whole, in, len);
    wsg_http_head_t *a = wsg_http_head_new(WSG_HTTP_REQUEST, MAX_HEAD);
    int ra = wsg_http_head_feed(a, whole, len);

    /* The connection's way: one buffer that grows read by read. */
    char *grow = malloc(len + 1);
    wsg_http_head_t *b = wsg_http_head_new(WSG_HTTP_REQUEST, MAX_HEAD);
    int rb = WSG_HEAD_INCOMPLETE;
    size_t have = 0;
    while (have < len && rb == WSG_HEAD_INCOMPLETE) {
        size_t k = fuzz_read_size(&rng, 512);
        if (k > len - have)
            k = len - have;
        memcpy(grow + have, in + have, k);
        have += k;
        rb = wsg_http_head_feed(b, grow, have);
    }
    FUZZ_CHECK(ra == rb);
    if (ra == WSG_HEAD_COMPLETE) {
        size_t hl = wsg_http_head_len(a);
        FUZZ_CHECK(hl == wsg_http_head_len(b) && hl <= len && hl <= MAX_HEAD);
        check_spans(a, whole, hl);
        same_heads(a, whole, b, grow);
        check_upstream(a, whole, hl);
        check_plain_http(a, whole, hl);
    }
    wsg_http_head_free(a);
    wsg_http_head_free(b);
    free(whole);
    free(grow);
    return 0;
}
