/*
 * Fuzz target: the backend's response head and body framing (Content-Length,
 * chunked, to-EOF, interim 1xx) in src/codec/handshake.c.
 *
 * Input: byte 0 seeds the read sizes, byte 1 bit 0 says whether the backend
 * then closes (EOF); the rest is what the backend sends. Parsed twice, whole
 * and read by read, and checked: the head results, head lengths and headers
 * agree; the body state (complete, malformed, EOF verdict) agrees, so the
 * framing never depends on how the bytes were cut.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/handshake.h>

#include "fuzz_util.h"

#define MAX_HEAD 8192

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
