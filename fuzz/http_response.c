/*
 * Fuzz target: the backend's response head and body framing (Content-Length,
 * chunked, to-EOF, interim 1xx) in src/codec/handshake.c.
 *
 * Input: byte 0 seeds the read sizes, byte 1 bit 0 says whether the backend
 * then closes (EOF); the rest is what the backend sends. Parsed twice, whole
 * and read by read, and checked: the head results, head lengths and headers
 * agree; the body state (complete, malformed, EOF verdict) agrees, so the
 * framing never depends on how the bytes were cut. A response that passes the
 * smuggling rules is rewritten for the client (http_msg.c) into a head that
 * parses, passes them again and frames its body the same way.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/handshake.h>
#include <wsgate/http_msg.h>

#include "fuzz_util.h"

#define MAX_HEAD 8192

static void check_rewrite(const wsg_http_head_t *h, const char *buf) {
    const char *why;
    if (wsg_http_check_message(h, buf, &why) != 0)
        return;
    wsg_body_t body, again_body;
    wsg_http_response_body(h, buf, false, &body);
    size_t cap = 2 * wsg_http_head_len(h) + 512;
    char *out = malloc(cap);
    ssize_t n = wsg_http_build_response(h, buf, &body, true, 11, out, cap);
    FUZZ_CHECK(n > 0 && (size_t)n <= cap);
    wsg_http_head_t *again = wsg_http_head_new(WSG_HTTP_RESPONSE, (size_t)n);
    int r = wsg_http_head_feed(again, out, (size_t)n);
    FUZZ_CHECK(r == WSG_HEAD_COMPLETE || r == WSG_HEAD_TOO_LARGE);
    if (r == WSG_HEAD_COMPLETE) {
        FUZZ_CHECK(wsg_http_check_message(again, out, &why) == 0);
        FUZZ_CHECK(wsg_http_head_status(again) == wsg_http_head_status(h));
        wsg_http_response_body(again, out, false, &again_body);
        FUZZ_CHECK(again_body.kind == body.kind && again_body.length == body.length);
    }
    wsg_http_head_free(again);
    free(out);
}

typedef struct {
    int head;
    size_t head_len;
    size_t nhdrs;
    int body;     /* last wsg_http_body_feed() result */
    int eof;      /* result of the EOF signal, 2 when not sent */
    int complete;
} outcome_t;

static void run(const char *in, size_t len, int eof, fuzz_rng_t *rng, outcome_t *o) {
    char *buf = malloc(len + 1);
    wsg_http_head_t *h = wsg_http_head_new(WSG_HTTP_RESPONSE, MAX_HEAD);
    size_t have = 0;

    memset(o, 0, sizeof(*o));
    o->head = WSG_HEAD_INCOMPLETE;
    o->eof = 2;
    while (have < len && o->head == WSG_HEAD_INCOMPLETE) {
        size_t k = rng ? fuzz_read_size(rng, 512) : len;
        if (k > len - have)
            k = len - have;
        memcpy(buf + have, in + have, k);
        have += k;
        o->head = wsg_http_head_feed(h, buf, have);
    }
    if (o->head == WSG_HEAD_COMPLETE) {
        o->head_len = wsg_http_head_len(h);
        o->nhdrs = wsg_http_head_count(h);
        FUZZ_CHECK(o->head_len <= have);
        if (rng == NULL)
            check_rewrite(h, buf);
        /* The body: what came after the head in the last read, then the
         * rest, in reads. */
        size_t at = o->head_len;
        o->body = wsg_http_body_feed(h, buf + at, have - at);
        at = have;
        while (at < len && o->body == 0) {
            size_t k = rng ? fuzz_read_size(rng, 4096) : len - at;
            if (k > len - at)
                k = len - at;
            o->body = wsg_http_body_feed(h, in + at, k);
            at += k;
        }
        if (eof && o->body == 0)
            o->eof = wsg_http_body_feed(h, NULL, 0);
        FUZZ_CHECK(o->body >= -1 && o->body <= 1);
        o->complete = wsg_http_body_complete(h);
        if (o->body == 1)
            FUZZ_CHECK(o->complete);
    }
    wsg_http_head_free(h);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    fuzz_rng_t rng;
    fuzz_rng_init(&rng, data[0], size);
    int eof = data[1] & 1;
    outcome_t a, b;

    run((const char *)data + 2, size - 2, eof, NULL, &a);
    run((const char *)data + 2, size - 2, eof, &rng, &b);
    FUZZ_CHECK(a.head == b.head);
    FUZZ_CHECK(a.head_len == b.head_len && a.nhdrs == b.nhdrs);
    FUZZ_CHECK(a.body == b.body);
    FUZZ_CHECK(a.eof == b.eof);
    FUZZ_CHECK(a.complete == b.complete);
    return 0;
}
