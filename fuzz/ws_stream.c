/*
 * Fuzz target: the relay's frame walk (src/codec/ws_stream.c) fed a stream in
 * random reads, the way TCP delivers it.
 *
 * Input: byte 0 chooses the side and the negotiated extensions, byte 1 the
 * frame size limit, byte 2 seeds the read sizes; the rest is the stream.
 * The stream is walked twice, whole and in reads, by a model of the relay
 * (kept bytes are put in front of the next read, buffers are allocated at
 * their exact size so ASan sees any over-read), and checked; the walk in
 * reads also takes runs of small messages (wsg_ws_stream_run) where the
 * random sequence says so, as the relay does:
 *   - both walks agree on the forwarded bytes, the data frames, the control
 *     frames, the dropped bytes and the error;
 *   - a run is whole frames that the segment walk takes one by one;
 *   - segments come in order, are not empty, and stay inside their buffer;
 *   - a CONTROL segment is one whole frame whose payload is what the wire
 *     carries; a DATA segment that begins a frame begins with a valid header;
 *   - nothing is lost: forwarded + dropped + kept == input unless an error
 *     ended the walk;
 *   - at most 14 + 125 bytes are ever kept.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/ws_stream.h>

#include "fuzz_util.h"

typedef struct {
    uint8_t *fwd;
    size_t nfwd;
    size_t dropped;
    size_t kept;  /* the unfinished unit at the end of the stream */
    size_t nctl;
    size_t ndata; /* data frames begun */
    uint8_t ctl[64][1 + 1 + WSG_WS_MAX_CONTROL_PAYLOAD]; /* opcode, len, payload */
    int err;
} walk_t;

typedef struct {
    int from_client;
    uint8_t rsv_first, rsv_other;
    uint64_t max_payload;
} side_t;

static void check_control(const side_t *side, const uint8_t *f, size_t n, const wsg_ws_seg_t *seg) {
    FUZZ_CHECK(n >= 2);
    int masked = (f[1] & 0x80) != 0;
    size_t hlen = masked ? 6 : 2;
    FUZZ_CHECK(masked == side->from_client);
    FUZZ_CHECK((size_t)(f[1] & 0x7f) == seg->plen);
    FUZZ_CHECK(n == hlen + seg->plen);
    FUZZ_CHECK((f[0] & 0x0f) == seg->opcode && (seg->opcode & 0x8));
    for (size_t i = 0; i < seg->plen; i++) {
        uint8_t b = f[hlen + i];
        if (masked)
            b ^= f[2 + (i & 3)];
        FUZZ_CHECK(b == seg->payload[i]);
    }
    if (seg->opcode == WSG_WS_OP_CLOSE)
        FUZZ_CHECK(wsg_ws_check_close(seg->payload, seg->plen) == WSG_WS_OK);
}

/* A frame's first bytes parse as a header under a fresh parser with the
 * same side rules (fragmentation state aside, which a fresh parser lacks). */
static void check_data_header(const side_t *side, const uint8_t *f, size_t n) {
    wsg_ws_parser_t p;
    wsg_ws_frame_t fr;
    size_t used;
    wsg_ws_parser_init(&p, side->from_client, side->max_payload);
    int r = wsg_ws_parse(&p, f, n, &used, &fr);
    FUZZ_CHECK(r == WSG_WS_OK || r == WSG_WS_ERR_CONTINUATION);
    FUZZ_CHECK(!(fr.opcode & 0x8));
}

/* A run: exactly <k> whole unfragmented data frames of 7-bit length. */
static void check_run(const side_t *side, const uint8_t *f, size_t n, size_t k) {
    size_t at = 0, hlen = side->from_client ? 6 : 2;
    for (size_t i = 0; i < k; i++) {
        FUZZ_CHECK(n - at >= hlen);
        uint8_t op = f[at] & 0x0f;
        FUZZ_CHECK((f[at] & 0x80) && (op == WSG_WS_OP_TEXT || op == WSG_WS_OP_BINARY));
        FUZZ_CHECK(((f[at + 1] & 0x80) != 0) == side->from_client);
        size_t len7 = f[at + 1] & 0x7f;
        FUZZ_CHECK(len7 <= 125 && n - at - hlen >= len7);
        FUZZ_CHECK(side->max_payload == 0 || len7 <= side->max_payload);
        check_data_header(side, f + at, hlen + len7);
        at += hlen + len7;
    }
    FUZZ_CHECK(at == n);
}

static void on_seg(const side_t *side, walk_t *w, const uint8_t *buf, const wsg_ws_seg_t *seg) {
    const uint8_t *f = buf + seg->start;
    size_t n = seg->end - seg->start;

    switch (seg->kind) {
    case WSG_WS_SEG_CONTROL:
        check_control(side, f, n, seg);
        if (w->nctl < 64) {
            w->ctl[w->nctl][0] = seg->opcode;
            w->ctl[w->nctl][1] = seg->plen;
            memcpy(w->ctl[w->nctl] + 2, seg->payload, seg->plen);
        }
        w->nctl++;
        break;
    case WSG_WS_SEG_DATA:
        if (seg->frame_begin) {
            check_data_header(side, f, n);
            w->ndata++;
        }
        break;
    case WSG_WS_SEG_DISCARD:
        w->dropped += n;
        return;
    default:
        FUZZ_CHECK(!"unknown segment kind");
    }
    memcpy(w->fwd + w->nfwd, f, n);
    w->nfwd += n;
}

/* Walks <in> in reads whose sizes come from <rng> (NULL: one read). */
static void walk(const side_t *side, const uint8_t *in, size_t len, fuzz_rng_t *rng, walk_t *w) {
    wsg_ws_stream_t s;
    uint8_t kept[WSG_WS_MAX_HEADER + WSG_WS_MAX_CONTROL_PAYLOAD];
    size_t at = 0;

    wsg_ws_stream_init(&s, side->from_client, side->max_payload, side->rsv_first,
                       side->rsv_other);
    while (at < len || (at == 0 && len == 0)) {
        size_t k = rng ? fuzz_read_size(rng, 4096) : len;
        if (k > len - at)
            k = len - at;
        size_t held = s.held, total = held + k;
        uint8_t *buf = malloc(total ? total : 1);
        memcpy(buf, kept, held);
        memcpy(buf + held, in + at, k);
        at += k;

        wsg_ws_stream_begin(&s);
        size_t next = held;
        int first = 1;
        for (;;) {
            wsg_ws_seg_t seg;
            if (wsg_ws_stream_done(&s, total)) {
                /* where the relay stops: the next call must say 0, keep
                 * nothing and change nothing */
                wsg_ws_stream_t before = s;
                FUZZ_CHECK(wsg_ws_stream_next(&s, buf, total, &seg) == 0 && seg.start == total);
                FUZZ_CHECK(memcmp(&before, &s, sizeof(s)) == 0);
            }
            size_t run = rng && (fuzz_rng_next(rng) & 1) ? wsg_ws_stream_run(&s, buf, total, &seg) : 0;
            if (run > 0) {
                FUZZ_CHECK(seg.kind == WSG_WS_SEG_DATA && seg.frame_begin && seg.frame_end);
                FUZZ_CHECK(seg.start == next || (first && held > 0 && seg.start == 0));
                FUZZ_CHECK(seg.start < seg.end && seg.end <= total);
                check_run(side, buf + seg.start, seg.end - seg.start, run);
                first = 0;
                next = seg.end;
                w->ndata += run;
                memcpy(w->fwd + w->nfwd, buf + seg.start, seg.end - seg.start);
                w->nfwd += seg.end - seg.start;
                continue;
            }
            int r = wsg_ws_stream_next(&s, buf, total, &seg);
            if (r < 0) {
                w->err = r;
                free(buf);
                return;
            }
            if (r == 0) {
                FUZZ_CHECK(seg.start <= total && seg.end == total);
                FUZZ_CHECK(total - seg.start == s.held);
                FUZZ_CHECK(s.held <= sizeof(kept));
                memcpy(kept, buf + seg.start, s.held);
                w->kept = s.held;
                break;
            }
            FUZZ_CHECK(seg.start < seg.end && seg.end <= total);
            /* kept bytes come back first, as the start of their unit */
            FUZZ_CHECK(seg.start == next || (first && held > 0 && seg.start == 0));
            first = 0;
            next = seg.end;
            on_seg(side, w, buf, &seg);
        }
        free(buf);
        if (len == 0)
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint64_t limits[4] = {0, 125, 65536, 1};
    if (size < 3)
        return 0;
    side_t side = {.from_client = data[0] & 1, .max_payload = limits[data[1] & 3]};
    switch ((data[0] >> 1) & 3) {
    case 1:
        side.rsv_first = 0x4;
        break;
    case 2:
        side.rsv_first = side.rsv_other = WSG_WS_RSV_ALL;
        break;
    default:
        break;
    }
    const uint8_t *in = data + 3;
    size_t len = size - 3;
    walk_t a = {.fwd = malloc(len + 1)}, b = {.fwd = malloc(len + 1)};
    fuzz_rng_t rng;
    fuzz_rng_init(&rng, data[2], len);

    walk(&side, in, len, NULL, &a);
    walk(&side, in, len, &rng, &b);

    FUZZ_CHECK(a.err == b.err);
    FUZZ_CHECK(a.nfwd == b.nfwd && memcmp(a.fwd, b.fwd, a.nfwd) == 0);
    FUZZ_CHECK(a.dropped == b.dropped);
    FUZZ_CHECK(a.nctl == b.nctl);
    FUZZ_CHECK(a.ndata == b.ndata);
    for (size_t i = 0; i < a.nctl && i < 64; i++)
        FUZZ_CHECK(memcmp(a.ctl[i], b.ctl[i], 2 + a.ctl[i][1]) == 0);
    /* forwarded bytes are the input, in order; the walk drops only what
     * follows a close frame */
    FUZZ_CHECK(memcmp(a.fwd, in, a.nfwd) == 0);
    if (a.err == 0) {
        FUZZ_CHECK(a.kept == b.kept);
        FUZZ_CHECK(a.nfwd + a.dropped + a.kept == len);
    }
    free(a.fwd);
    free(b.fwd);
    return 0;
}
