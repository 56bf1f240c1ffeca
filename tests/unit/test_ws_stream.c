/*
 * Unit tests for the relay's frame walk (ws_stream.c).
 *
 * A small model of the relay drives the walker: the stream is cut into
 * reads, each read is appended to the bytes the previous walk kept, and the
 * buffer handed to the walker is allocated at exactly its length, so under
 * ASan a walk that reads past its input fails the test. Forwarded bytes
 * (DATA and CONTROL segments) are collected and compared with the input;
 * every control frame must come out whole and exactly once, however the
 * reads fell. Every stream is fed whole, cut in two at every point, cut in
 * three at every pair of points (small streams), and byte by byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/ws_stream.h>

/* ---- frames ------------------------------------------------------------------ */

#define MAX_STREAM (80u * 1024u)

typedef struct {
    uint8_t b[MAX_STREAM];
    size_t n;
} stream_t;

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends one frame with any FIN/RSV/opcode (wsg_ws_build only writes FIN
 * frames) to <s>. */
static void put_frame(stream_t *s, int fin, uint8_t rsv, uint8_t op, const void *payload,
                      size_t len, int masked) {
    uint8_t *o = s->b + s->n;
    size_t h = 0;

    o[h++] = (uint8_t)((fin ? 0x80 : 0) | (rsv << 4) | op);
    uint8_t m = masked ? 0x80 : 0;
    if (len < 126) {
        o[h++] = (uint8_t)(m | len);
    } else if (len <= 0xFFFF) {
        o[h++] = m | 126;
        o[h++] = (uint8_t)(len >> 8);
        o[h++] = (uint8_t)len;
    } else {
        o[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            o[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (masked) {
        memcpy(o + h, MASK, 4);
        h += 4;
    }
    ck_assert_uint_le(s->n + h + len, MAX_STREAM);
    memcpy(o + h, payload, len);
    if (masked)
        wsg_ws_unmask(o + h, len, MASK, 0);
    s->n += h + len;
}

static void put_close(stream_t *s, uint16_t code, const char *reason, size_t rlen, int masked) {
    uint8_t p[125];
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    memcpy(p + 2, reason, rlen);
    put_frame(s, 1, 0, WSG_WS_OP_CLOSE, p, 2 + rlen, masked);
}

/* ---- the model relay ---------------------------------------------------------- */

typedef struct {
    uint8_t op;
    uint8_t len;
    uint8_t payload[125];
} ctl_t;

typedef struct {
    uint8_t *fwd; /* MAX_STREAM */
    size_t nfwd;
    ctl_t ctl[16];
    int nctl;
    int ndata_frames;
    int nruns; /* runs taken by a walk with side->runs */
    size_t discarded;
    size_t max_held;
    int err;
} result_t;

typedef struct {
    int from_client;
    uint8_t rsv_first, rsv_other;
    uint64_t max_payload;
    int runs; /* the model relay takes runs of small messages (wsg_ws_stream_run) */
} side_t;

static const side_t CLIENT = {1, 0, 0, 0, 0};
static const side_t SERVER = {0, 0, 0, 0, 0};

static void result_init(result_t *r) {
    uint8_t *keep = r->fwd;
    memset(r, 0, sizeof(*r));
    r->fwd = keep != NULL ? keep : malloc(MAX_STREAM);
    ck_assert_ptr_nonnull(r->fwd);
}

/* wsg_ws_stream_done()'s promise, where it says the walk may stop: the next
 * call would return 0, keep nothing and change nothing. */
static void check_done(wsg_ws_stream_t *w, const uint8_t *buf, size_t total) {
    if (!wsg_ws_stream_done(w, total))
        return;
    wsg_ws_stream_t before = *w;
    wsg_ws_seg_t seg;
    ck_assert_int_eq(wsg_ws_stream_next(w, buf, total, &seg), 0);
    ck_assert_uint_eq(seg.start, total);
    ck_assert(memcmp(&before, w, sizeof(before)) == 0);
}

/* Walks one read (<piece>[0..len)) behind the <held> bytes kept in *kept.
 * Returns 0 to go on, 1 once the stream failed. */
static int walk_read(wsg_ws_stream_t *w, uint8_t **kept, const uint8_t *piece, size_t len,
                     int runs, result_t *r) {
    size_t held = w->held, total = held + len;
    uint8_t *buf = malloc(total ? total : 1);
    ck_assert_ptr_nonnull(buf);
    if (held)
        memcpy(buf, *kept, held);
    memcpy(buf + held, piece, len);
    free(*kept);
    *kept = NULL;

    wsg_ws_stream_begin(w);
    size_t at = held; /* segments come in order and never overlap */
    for (;;) {
        wsg_ws_seg_t seg;
        check_done(w, buf, total);
        size_t run = runs ? wsg_ws_stream_run(w, buf, total, &seg) : 0;
        if (run > 0) {
            /* whole frames, from where the walk was, in place of as many
             * DATA segments */
            ck_assert_int_eq(seg.kind, WSG_WS_SEG_DATA);
            ck_assert(seg.frame_begin && seg.frame_end);
            ck_assert(seg.start == at || seg.start == 0);
            ck_assert_uint_lt(seg.start, seg.end);
            ck_assert_uint_le(seg.end, total);
            ck_assert_uint_ge(seg.end - seg.start, 2 * run);
            at = seg.end;
            r->ndata_frames += (int)run;
            r->nruns++;
            memcpy(r->fwd + r->nfwd, buf + seg.start, seg.end - seg.start);
            r->nfwd += seg.end - seg.start;
            continue;
        }
        int rc = wsg_ws_stream_next(w, buf, total, &seg);
        if (rc < 0) {
            r->err = rc;
            free(buf);
            return 1;
        }
        if (rc == 0) {
            ck_assert_uint_le(seg.start, total);
            size_t keep = total - seg.start;
            ck_assert_uint_eq(keep, w->held);
            ck_assert_uint_le(keep, WSG_WS_MAX_HEADER + WSG_WS_MAX_CONTROL_PAYLOAD);
            if (keep > r->max_held)
                r->max_held = keep;
            if (keep) {
                *kept = malloc(keep);
                memcpy(*kept, buf + seg.start, keep);
            }
            free(buf);
            return 0;
        }
        ck_assert_uint_lt(seg.start, seg.end); /* no empty segment */
        ck_assert_uint_le(seg.end, total);
        /* a kept unit is presented again from offset 0, anything else
         * continues where the last segment ended */
        ck_assert(seg.start == at || seg.start == 0);
        at = seg.end;
        switch (seg.kind) {
        case WSG_WS_SEG_DATA:
            r->ndata_frames += seg.frame_begin;
            memcpy(r->fwd + r->nfwd, buf + seg.start, seg.end - seg.start);
            r->nfwd += seg.end - seg.start;
            break;
        case WSG_WS_SEG_CONTROL: {
            ck_assert_int_lt(r->nctl, 16);
            ctl_t *c = &r->ctl[r->nctl++];
            c->op = seg.opcode;
            c->len = seg.plen;
            memcpy(c->payload, seg.payload, seg.plen);
            /* whole: header + payload, nothing else */
            ck_assert_uint_eq(seg.end - seg.start,
                              (size_t)seg.plen + ((buf[seg.start + 1] & 0x80) ? 6 : 2));
            memcpy(r->fwd + r->nfwd, buf + seg.start, seg.end - seg.start);
            r->nfwd += seg.end - seg.start;
            break;
        }
        case WSG_WS_SEG_DISCARD:
            r->discarded += seg.end - seg.start;
            break;
        default:
            ck_abort_msg("unknown segment kind %d", seg.kind);
        }
    }
}

/* Feeds <s> cut at cuts[0..ncuts) (increasing offsets) into a fresh walk. */
static void run_cuts(const stream_t *s, const side_t *side, const size_t *cuts, size_t ncuts,
                     result_t *r) {
    wsg_ws_stream_t w;
    uint8_t *kept = NULL;
    size_t prev = 0;

    result_init(r);
    wsg_ws_stream_init(&w, side->from_client, side->max_payload, side->rsv_first,
                       side->rsv_other);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : s->n;
        if (walk_read(&w, &kept, s->b + prev, end - prev, side->runs, r))
            break;
        prev = end;
    }
    free(kept);
}

static void run_bytewise(const stream_t *s, const side_t *side, result_t *r) {
    wsg_ws_stream_t w;
    uint8_t *kept = NULL;

    result_init(r);
    wsg_ws_stream_init(&w, side->from_client, side->max_payload, side->rsv_first,
                       side->rsv_other);
    for (size_t i = 0; i < s->n; i++) {
        if (walk_read(&w, &kept, s->b + i, 1, side->runs, r))
            break;
    }
    free(kept);
}

static void same_result(const result_t *a, const result_t *b, const char *how) {
    ck_assert_msg(a->err == b->err, "%s: error %d, whole %d", how, b->err, a->err);
    ck_assert_msg(a->nfwd == b->nfwd && memcmp(a->fwd, b->fwd, a->nfwd) == 0,
                  "%s: forwarded %zu bytes differ from whole (%zu)", how, b->nfwd, a->nfwd);
    ck_assert_msg(a->nctl == b->nctl, "%s: %d control frames, whole %d", how, b->nctl, a->nctl);
    for (int i = 0; i < a->nctl; i++) {
        ck_assert_uint_eq(a->ctl[i].op, b->ctl[i].op);
        ck_assert_uint_eq(a->ctl[i].len, b->ctl[i].len);
        ck_assert_mem_eq(a->ctl[i].payload, b->ctl[i].payload, a->ctl[i].len);
    }
    ck_assert_int_eq(a->ndata_frames, b->ndata_frames);
    ck_assert_uint_eq(a->discarded, b->discarded);
}

/* The whole-buffer result (segment by segment), then the same for every cut
 * in two, every cut in three (when the stream is small), and byte by byte,
 * each walked segment by segment and again taking runs. */
static void check_all_splits(const stream_t *s, const side_t *side0, result_t *whole) {
    result_t r = {0};
    char how[64];
    side_t sides[2] = {*side0, *side0};
    sides[0].runs = 0;
    sides[1].runs = 1;

    run_cuts(s, &sides[0], NULL, 0, whole);
    for (int m = 0; m < 2; m++) {
        const side_t *side = &sides[m];
        const char *mode = m ? "runs" : "segments";
        run_cuts(s, side, NULL, 0, &r);
        snprintf(how, sizeof(how), "whole, %s", mode);
        same_result(whole, &r, how);
        for (size_t i = 0; i <= s->n; i++) {
            run_cuts(s, side, &i, 1, &r);
            snprintf(how, sizeof(how), "cut at %zu, %s", i, mode);
            same_result(whole, &r, how);
        }
        if (s->n <= 400) {
            for (size_t i = 1; i < s->n; i++) {
                for (size_t j = i; j < s->n; j++) {
                    size_t cuts[2] = {i, j};
                    run_cuts(s, side, cuts, 2, &r);
                    snprintf(how, sizeof(how), "cuts at %zu, %zu, %s", i, j, mode);
                    same_result(whole, &r, how);
                }
            }
        }
        run_bytewise(s, side, &r);
        snprintf(how, sizeof(how), "byte by byte, %s", mode);
        same_result(whole, &r, how);
    }
    free(r.fwd);
}

/* ---- valid streams: every byte forwarded, every control frame whole ------------- */

static void build_mixed(stream_t *s, int masked) {
    static uint8_t big[300];
    memset(big, 0xa5, sizeof(big));
    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "hello", 5, masked);
    put_frame(s, 1, 0, WSG_WS_OP_PING, "p", 1, masked);
    put_frame(s, 1, 0, WSG_WS_OP_BINARY, big, sizeof(big), masked);
    put_frame(s, 1, 0, WSG_WS_OP_PONG, "", 0, masked);
    put_frame(s, 0, 0, WSG_WS_OP_TEXT, "ab", 2, masked);
    put_frame(s, 1, 0, WSG_WS_OP_PING, big, 125, masked);
    put_frame(s, 0, 0, WSG_WS_OP_CONT, "", 0, masked);
    put_frame(s, 1, 0, WSG_WS_OP_CONT, "cd", 2, masked);
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "", 0, masked);
    put_close(s, 1000, "bye", 3, masked);
}

START_TEST(test_ws_stream_forwards_every_byte_at_every_split) {
    stream_t *s = malloc(sizeof(*s));
    result_t whole = {0};
    int masked = _i;

    build_mixed(s, masked);
    check_all_splits(s, masked ? &CLIENT : &SERVER, &whole);
    ck_assert_int_eq(whole.err, 0);
    ck_assert_uint_eq(whole.nfwd, s->n);
    ck_assert_mem_eq(whole.fwd, s->b, s->n);
    ck_assert_int_eq(whole.nctl, 4);
    ck_assert_uint_eq(whole.ctl[0].op, WSG_WS_OP_PING);
    ck_assert_mem_eq(whole.ctl[0].payload, "p", 1);
    ck_assert_uint_eq(whole.ctl[1].op, WSG_WS_OP_PONG);
    ck_assert_uint_eq(whole.ctl[2].len, 125);
    ck_assert_uint_eq(whole.ctl[3].op, WSG_WS_OP_CLOSE);
    ck_assert_mem_eq(whole.ctl[3].payload, "\x03\xe8" "bye", 5);
    ck_assert_int_eq(whole.ndata_frames, 6);
    free(whole.fwd);
    free(s);
}
END_TEST

/* 16- and 64-bit lengths: cut everywhere near the headers, sparsely in the
 * payload (a 70 KB stream cut at every byte would take minutes). */
START_TEST(test_ws_stream_long_frames) {
    stream_t *s = malloc(sizeof(*s));
    static uint8_t big[70000];
    result_t whole = {0}, r = {0};
    int masked = _i;
    const side_t *side = masked ? &CLIENT : &SERVER;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_BINARY, big, 1000, masked);
    put_frame(s, 1, 0, WSG_WS_OP_PING, "x", 1, masked);
    put_frame(s, 1, 0, WSG_WS_OP_BINARY, big, sizeof(big), masked);
    put_frame(s, 1, 0, WSG_WS_OP_PONG, big, 125, masked);
    run_cuts(s, side, NULL, 0, &whole);
    ck_assert_int_eq(whole.err, 0);
    ck_assert_uint_eq(whole.nfwd, s->n);
    ck_assert_mem_eq(whole.fwd, s->b, s->n);
    for (size_t i = 0; i <= s->n; i += (i < 1100 || i + 200 > s->n) ? 1 : 997) {
        run_cuts(s, side, &i, 1, &r);
        same_result(&whole, &r, "cut");
    }
    free(whole.fwd);
    free(r.fwd);
    free(s);
}
END_TEST

/* The crash of issue 8: a control frame whose header ends a read. Its
 * payload must never be taken for a frame header (or forwarded as frame
 * bytes): the frame comes out once, whole. */
START_TEST(test_ws_stream_control_split_after_header) {
    static const uint8_t close_frame[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};
    /* a ping whose payload is a text frame and a 2^62-byte header */
    static const uint8_t smuggle[] = {0x81, 0x08, 's', 'm', 'u', 'g', 'g', 'l', 'e', 'd',
                                      0x82, 0x7f, 0x40, 0, 0, 0, 0, 0, 0, 0};
    stream_t *s = malloc(sizeof(*s));
    result_t r = {0};
    size_t cut = 6;

    memcpy(s->b, close_frame, sizeof(close_frame));
    s->n = sizeof(close_frame);
    run_cuts(s, &CLIENT, &cut, 1, &r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_int_eq(r.nctl, 1);
    ck_assert_uint_eq(r.ctl[0].op, WSG_WS_OP_CLOSE);
    ck_assert_mem_eq(r.ctl[0].payload, "\x03\xe8", 2);
    ck_assert_uint_eq(r.nfwd, s->n);
    ck_assert_mem_eq(r.fwd, s->b, s->n);

    /* the same from a server: 88 02 | 03 e8 */
    s->n = 0;
    put_close(s, 1000, "", 0, 0);
    cut = 2;
    run_cuts(s, &SERVER, &cut, 1, &r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_int_eq(r.nctl, 1);
    ck_assert_uint_eq(r.nfwd, 4);

    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_PING, smuggle, sizeof(smuggle), 1);
    cut = 6;
    run_cuts(s, &CLIENT, &cut, 1, &r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_int_eq(r.nctl, 1);
    ck_assert_int_eq(r.ndata_frames, 0);
    ck_assert_uint_eq(r.ctl[0].len, sizeof(smuggle));
    ck_assert_mem_eq(r.ctl[0].payload, smuggle, sizeof(smuggle));
    ck_assert_uint_eq(r.nfwd, s->n);
    ck_assert_mem_eq(r.fwd, s->b, s->n);
    free(r.fwd);
    free(s);
}
END_TEST

/* ---- close frames ------------------------------------------------------------ */

static const uint16_t BAD_CODES[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535};
static const uint16_t GOOD_CODES[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                      1011, 1012, 1013, 1014, 3000, 4999};

static void expect_close_error(const stream_t *s, int err) {
    result_t whole = {0};
    check_all_splits(s, &CLIENT, &whole);
    ck_assert_int_eq(whole.err, err);
    ck_assert_int_eq(whole.nctl, 0); /* judged whole, so never forwarded */
    free(whole.fwd);
}

START_TEST(test_ws_stream_rejects_bad_close_codes) {
    stream_t *s = malloc(sizeof(*s));
    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "t", 1, 1);
    put_close(s, BAD_CODES[_i], "why", 3, 1);
    expect_close_error(s, WSG_WS_ERR_CLOSE_CODE);
    ck_assert_uint_eq(wsg_ws_error_close_code(WSG_WS_ERR_CLOSE_CODE), 1002);
    free(s);
}
END_TEST

START_TEST(test_ws_stream_accepts_good_close_codes) {
    stream_t *s = malloc(sizeof(*s));
    result_t r = {0};
    s->n = 0;
    put_close(s, GOOD_CODES[_i], "ok \xc3\xa9", 5, 1);
    run_cuts(s, &CLIENT, NULL, 0, &r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_int_eq(r.nctl, 1);
    ck_assert_int_eq(wsg_ws_close_code_valid(GOOD_CODES[_i]), 1);
    free(r.fwd);
    free(s);
}
END_TEST

START_TEST(test_ws_stream_rejects_bad_close_payloads) {
    stream_t *s = malloc(sizeof(*s));
    result_t r = {0};

    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_CLOSE, "\x03", 1, 1);
    expect_close_error(s, WSG_WS_ERR_CLOSE_LEN);

    s->n = 0;
    put_close(s, 1000, "\xff\xfe", 2, 1);
    expect_close_error(s, WSG_WS_ERR_CLOSE_UTF8);
    ck_assert_uint_eq(wsg_ws_error_close_code(WSG_WS_ERR_CLOSE_UTF8), 1007);

    s->n = 0; /* a surrogate half, CESU-style */
    put_close(s, 1001, "\xed\xa0\x80", 3, 0);
    run_cuts(s, &SERVER, NULL, 0, &r);
    ck_assert_int_eq(r.err, WSG_WS_ERR_CLOSE_UTF8);

    s->n = 0; /* an empty close is valid: "no status" */
    put_frame(s, 1, 0, WSG_WS_OP_CLOSE, "", 0, 0);
    run_cuts(s, &SERVER, NULL, 0, &r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_int_eq(r.nctl, 1);
    free(r.fwd);
    free(s);
}
END_TEST

/* §5.5.1: nothing after a close frame, however it is cut. */
START_TEST(test_ws_stream_discards_after_close) {
    stream_t *s = malloc(sizeof(*s));
    result_t whole = {0};

    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "before", 6, 1);
    put_close(s, 1000, "", 0, 1);
    size_t close_end = s->n;
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "after", 5, 1);
    put_frame(s, 1, 0, WSG_WS_OP_PING, "p", 1, 1);
    s->b[s->n++] = 0xff; /* not even a valid header: never parsed */
    check_all_splits(s, &CLIENT, &whole);
    ck_assert_int_eq(whole.err, 0);
    ck_assert_uint_eq(whole.nfwd, close_end);
    ck_assert_uint_eq(whole.discarded, s->n - close_end);
    ck_assert_int_eq(whole.nctl, 1);
    free(whole.fwd);
    free(s);
}
END_TEST

/* ---- runs of small messages (wsg_ws_stream_run) ------------------------------------- */

/* Small messages in runs broken by every kind of unit a run must not take:
 * a control frame, a 16-bit length, a fragmented message, a close. */
static void build_runs(stream_t *s, int masked) {
    static uint8_t big[200];
    memset(big, 0x5a, sizeof(big));
    s->n = 0;
    for (int i = 0; i < 20; i++) {
        char m[8];
        snprintf(m, sizeof(m), "m%02d", i);
        put_frame(s, 1, 0, WSG_WS_OP_TEXT, m, 3, masked);
    }
    put_frame(s, 1, 0, WSG_WS_OP_PING, "p", 1, masked);
    static const size_t lens[5] = {0, 1, 64, 124, 125};
    for (int i = 0; i < 5; i++)
        put_frame(s, 1, 0, WSG_WS_OP_BINARY, big, lens[i], masked);
    put_frame(s, 1, 0, WSG_WS_OP_BINARY, big, 126, masked);
    put_frame(s, 0, 0, WSG_WS_OP_TEXT, "ab", 2, masked);
    put_frame(s, 1, 0, WSG_WS_OP_CONT, "cd", 2, masked);
    for (int i = 0; i < 3; i++)
        put_frame(s, 1, 0, WSG_WS_OP_TEXT, "xyz", 3, masked);
    put_close(s, 1000, "", 0, masked);
}

START_TEST(test_ws_stream_runs_walk_as_segments_do) {
    stream_t *s = malloc(sizeof(*s));
    result_t whole = {0}, r = {0};
    int masked = _i;
    side_t side = masked ? CLIENT : SERVER;

    build_runs(s, masked);
    check_all_splits(s, &side, &whole);
    ck_assert_int_eq(whole.err, 0);
    ck_assert_uint_eq(whole.nfwd, s->n);
    ck_assert_int_eq(whole.ndata_frames, 20 + 5 + 1 + 2 + 3);
    ck_assert_int_eq(whole.nctl, 2);
    /* in one buffer: the three runs, nothing else taken as one */
    side.runs = 1;
    run_cuts(s, &side, NULL, 0, &r);
    ck_assert_int_eq(r.nruns, 3);
    free(whole.fwd);
    free(r.fwd);
    free(s);
}
END_TEST

/* The calls one by one: what each run takes and where it stops. */
START_TEST(test_ws_stream_run_stops_where_it_must) {
    stream_t *s = malloc(sizeof(*s));
    wsg_ws_stream_t w;
    wsg_ws_seg_t seg;
    int masked = _i;
    size_t h = masked ? 6 : 2;

    build_runs(s, masked);
    wsg_ws_stream_init(&w, masked, 0, 0, 0);
    wsg_ws_stream_begin(&w);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 20);
    ck_assert_uint_eq(seg.start, 0);
    ck_assert_uint_eq(seg.end, 20 * (h + 3));
    ck_assert_uint_eq(seg.opcode, WSG_WS_OP_TEXT);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0); /* the ping */
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), 1);
    ck_assert_int_eq(seg.kind, WSG_WS_SEG_CONTROL);
    size_t at = seg.end;
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 5);
    ck_assert_uint_eq(seg.start, at);
    ck_assert_uint_eq(seg.end, at + 5 * h + 0 + 1 + 64 + 124 + 125);
    ck_assert_uint_eq(seg.opcode, WSG_WS_OP_BINARY);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0); /* 16-bit length */
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), 1);
    ck_assert(seg.frame_begin && seg.frame_end);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0); /* FIN not set */
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), 1);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0); /* in a message */
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), 1);
    ck_assert_uint_eq(seg.opcode, WSG_WS_OP_CONT);
    at = seg.end;
    /* a run ends at the end of the buffer, and one that would not fit
     * stops before the frame the buffer cuts (in its payload, then in its
     * header) */
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, at + 2 * (h + 3) + h + 1, &seg), 2);
    ck_assert_uint_eq(seg.end, at + 2 * (h + 3));
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, at + 2 * (h + 3) + 1, &seg), 0);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, at + 3 * (h + 3), &seg), 1);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0); /* the close */
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), 1);
    ck_assert_int_eq(seg.kind, WSG_WS_SEG_CONTROL);
    ck_assert(wsg_ws_stream_closed(&w));
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0); /* closed */
    free(s);
}
END_TEST

/* A run takes nothing the segment walk would refuse: the frame it stops
 * at is judged by wsg_ws_stream_next(), which fails the stream. */
START_TEST(test_ws_stream_run_leaves_bad_frames_to_the_walk) {
    stream_t *s = malloc(sizeof(*s));
    wsg_ws_stream_t w;
    wsg_ws_seg_t seg;
    uint8_t eleven[11] = {0};

    /* over max_payload */
    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, eleven, 10, 1);
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, eleven, 11, 1);
    wsg_ws_stream_init(&w, 1, 10, 0, 0);
    wsg_ws_stream_begin(&w);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 1);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), WSG_WS_ERR_TOO_BIG);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0); /* failed */

    /* the mask bit wrong for the side, either way */
    for (int masked = 0; masked < 2; masked++) {
        s->n = 0;
        put_frame(s, 1, 0, WSG_WS_OP_BINARY, "x", 1, masked);
        wsg_ws_stream_init(&w, !masked, 0, 0, 0);
        wsg_ws_stream_begin(&w);
        ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0);
        ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), WSG_WS_ERR_MASK);
    }

    /* RSV1: taken when permessage-deflate allows it, else refused */
    s->n = 0;
    put_frame(s, 1, 0x4, WSG_WS_OP_TEXT, "x", 1, 1);
    wsg_ws_stream_init(&w, 1, 0, 0x4, 0);
    wsg_ws_stream_begin(&w);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 1);
    wsg_ws_stream_init(&w, 1, 0, 0, 0);
    wsg_ws_stream_begin(&w);
    ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), WSG_WS_ERR_RSV);

    /* an opcode no run takes: reserved 3, continuation outside a message */
    for (uint8_t op = 0; op < 16; op += 3) {
        s->n = 0;
        put_frame(s, 1, 0, op, "x", 1, 1);
        wsg_ws_stream_init(&w, 1, 0, 0, 0);
        wsg_ws_stream_begin(&w);
        ck_assert_uint_eq(wsg_ws_stream_run(&w, s->b, s->n, &seg), 0);
    }
    free(s);
}
END_TEST

/* ---- RSV bits against the negotiated extensions ----------------------------------- */

START_TEST(test_ws_stream_rsv_rules) {
    stream_t *s = malloc(sizeof(*s));
    result_t r = {0};
    side_t none = CLIENT, pmd = CLIENT, other = CLIENT;
    none.runs = pmd.runs = other.runs = _i;
    pmd.rsv_first = 0x4;
    other.rsv_first = other.rsv_other = WSG_WS_RSV_ALL;

    /* RSV1 without an extension: 1002 */
    s->n = 0;
    put_frame(s, 1, 0x4, WSG_WS_OP_TEXT, "x", 1, 1);
    run_cuts(s, &none, NULL, 0, &r);
    ck_assert_int_eq(r.err, WSG_WS_ERR_RSV);
    ck_assert_uint_eq(r.nfwd, 0);
    ck_assert_uint_eq(wsg_ws_error_close_code(WSG_WS_ERR_RSV), 1002);

    /* permessage-deflate: RSV1 on a message's first frame only */
    run_cuts(s, &pmd, NULL, 0, &r);
    ck_assert_int_eq(r.err, 0);
    s->n = 0;
    put_frame(s, 0, 0x4, WSG_WS_OP_TEXT, "x", 1, 1);
    put_frame(s, 1, 0x4, WSG_WS_OP_CONT, "y", 1, 1);
    run_cuts(s, &pmd, NULL, 0, &r);
    ck_assert_int_eq(r.err, WSG_WS_ERR_RSV);
    ck_assert_int_eq(r.ndata_frames, 1);
    s->n = 0;
    put_frame(s, 1, 0x4, WSG_WS_OP_PING, "x", 1, 1);
    run_cuts(s, &pmd, NULL, 0, &r);
    ck_assert_int_eq(r.err, WSG_WS_ERR_RSV);
    s->n = 0;
    put_frame(s, 1, 0x2, WSG_WS_OP_BINARY, "x", 1, 1);
    run_cuts(s, &pmd, NULL, 0, &r);
    ck_assert_int_eq(r.err, WSG_WS_ERR_RSV);

    /* an extension wsgate does not know: anything goes */
    s->n = 0;
    put_frame(s, 0, 0x7, WSG_WS_OP_TEXT, "x", 1, 1);
    put_frame(s, 1, 0x2, WSG_WS_OP_PING, "x", 1, 1);
    put_frame(s, 1, 0x1, WSG_WS_OP_CONT, "y", 1, 1);
    run_cuts(s, &other, NULL, 0, &r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_uint_eq(r.nfwd, s->n);
    free(r.fwd);
    free(s);
}
END_TEST

typedef struct {
    const char *value;
    uint8_t first, other;
} ext_case_t;

static const ext_case_t EXT_CASES[] = {
    {"", 0, 0},
    {"permessage-deflate", 0x4, 0},
    {"PerMessage-Deflate; client_max_window_bits=15; server_no_context_takeover", 0x4, 0},
    {"  permessage-deflate ;x=\"a,b\"", 0x4, 0},
    {"x-webkit-deflate-frame", 0x7, 0x7},
    {"permessage-deflate, x-foo", 0x7, 0x7},
    {",, ,", 0, 0},
};

START_TEST(test_ws_stream_reads_extensions) {
    const ext_case_t *c = &EXT_CASES[_i];
    uint8_t first = 0, other = 0;
    wsg_ws_rsv_add_extensions(c->value, strlen(c->value), &first, &other);
    ck_assert_msg(first == c->first && other == c->other, "\"%s\": %x/%x, want %x/%x",
                  c->value, first, other, c->first, c->other);
}
END_TEST

/* Protocol errors of the header parser come through, and stick. */
START_TEST(test_ws_stream_reports_parser_errors_and_stays_failed) {
    stream_t *s = malloc(sizeof(*s));
    result_t r = {0};
    wsg_ws_stream_t w;
    wsg_ws_seg_t seg;

    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "ok", 2, 1);
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "unmasked", 8, 0);
    run_cuts(s, &CLIENT, NULL, 0, &r);
    ck_assert_int_eq(r.err, WSG_WS_ERR_MASK);
    ck_assert_int_eq(r.ndata_frames, 1);

    wsg_ws_stream_init(&w, 1, 4, 0, 0);
    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_BINARY, "12345", 5, 1);
    wsg_ws_stream_begin(&w);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), WSG_WS_ERR_TOO_BIG);
    wsg_ws_stream_begin(&w);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, s->n, &seg), WSG_WS_ERR_TOO_BIG);
    free(r.fwd);
    free(s);
}
END_TEST

/* A kept header is parsed again from its first byte with the next read:
 * the message state must come out as if it had been read in one piece
 * (a continuation without a message, a new message inside one), at every
 * cut, and a header that is wrong in its first bytes fails at once, before
 * the rest of it arrives. */
START_TEST(test_ws_stream_fragmentation_errors_at_every_split) {
    stream_t *s = malloc(sizeof(*s));
    result_t whole = {0}, r = {0};
    wsg_ws_stream_t w;
    wsg_ws_seg_t seg;

    s->n = 0;
    put_frame(s, 0, 0, WSG_WS_OP_TEXT, "ab", 2, 1);
    put_frame(s, 1, 0, WSG_WS_OP_PING, "p", 1, 1);
    put_frame(s, 0, 0, WSG_WS_OP_CONT, "c", 1, 1);
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "new", 3, 1);
    check_all_splits(s, &CLIENT, &whole);
    ck_assert_int_eq(whole.err, WSG_WS_ERR_NOT_CONTINUATION);
    ck_assert_int_eq(whole.ndata_frames, 2);
    ck_assert_int_eq(whole.nctl, 1);

    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_TEXT, "done", 4, 1);
    put_frame(s, 1, 0, WSG_WS_OP_CONT, "late", 4, 1);
    check_all_splits(s, &CLIENT, &whole);
    ck_assert_int_eq(whole.err, WSG_WS_ERR_CONTINUATION);
    ck_assert_int_eq(whole.ndata_frames, 1);

    /* unmasked, with a 64-bit length: wrong from its second byte on */
    static const uint8_t bad[] = {0x82, 0x7f, 0, 0};
    wsg_ws_stream_init(&w, 1, 0, 0, 0);
    wsg_ws_stream_begin(&w);
    ck_assert_int_eq(wsg_ws_stream_next(&w, bad, 1, &seg), 0);
    ck_assert_uint_eq(w.held, 1);
    wsg_ws_stream_begin(&w);
    ck_assert_int_eq(wsg_ws_stream_next(&w, bad, 2, &seg), WSG_WS_ERR_MASK);
    free(whole.fwd);
    free(r.fwd);
    free(s);
}
END_TEST

/* The walk is embedded twice in every relayed connection: what it keeps
 * between reads is a frame's remaining length, the limit, a cursor and a
 * few bits, never a copy of a split header or control frame. */
START_TEST(test_ws_stream_state_stays_small) {
    ck_assert_uint_le(sizeof(wsg_ws_stream_t), 24);
}
END_TEST

START_TEST(test_ws_stream_mid_data_and_closed_flags) {
    stream_t *s = malloc(sizeof(*s));
    wsg_ws_stream_t w;
    wsg_ws_seg_t seg;

    s->n = 0;
    put_frame(s, 1, 0, WSG_WS_OP_BINARY, "abcdef", 6, 0);
    put_close(s, 1000, "", 0, 0);
    wsg_ws_stream_init(&w, 0, 0, 0, 0);
    wsg_ws_stream_begin(&w);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, 5, &seg), 1);
    ck_assert(seg.frame_begin && !seg.frame_end);
    ck_assert_int_eq(wsg_ws_stream_mid_data(&w), 1);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b, 5, &seg), 0);
    ck_assert_uint_eq(seg.start, 5);
    /* the next read: the rest of the payload and the close */
    wsg_ws_stream_begin(&w);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b + 5, s->n - 5, &seg), 1);
    ck_assert(!seg.frame_begin && seg.frame_end);
    ck_assert_uint_eq(seg.end - seg.start, 3);
    ck_assert_int_eq(wsg_ws_stream_mid_data(&w), 0);
    ck_assert_int_eq(wsg_ws_stream_closed(&w), 0);
    ck_assert_int_eq(wsg_ws_stream_next(&w, s->b + 5, s->n - 5, &seg), 1);
    ck_assert_uint_eq(seg.kind, WSG_WS_SEG_CONTROL);
    ck_assert_int_eq(wsg_ws_stream_closed(&w), 1);
    free(s);
}
END_TEST

/* ---- UTF-8 ----------------------------------------------------------------------- */

typedef struct {
    const char *s;
    size_t n;
    int ok;
} utf8_case_t;

#define U(lit, ok) {lit, sizeof(lit) - 1, ok}
static const utf8_case_t UTF8_CASES[] = {
    U("", 1), U("plain ascii", 1), U("\xc3\xa9", 1), U("\xe2\x82\xac", 1),
    U("\xf0\x9f\x98\x80", 1), U("\xf4\x8f\xbf\xbf", 1), U("\xed\x9f\xbf", 1),
    U("\xef\xbf\xbf", 1),
    U("\xc0\x80", 0), U("\xc1\xbf", 0), U("\xe0\x80\x80", 0), U("\xe0\x9f\xbf", 0),
    U("\xed\xa0\x80", 0), U("\xed\xbf\xbf", 0), U("\xf0\x8f\xbf\xbf", 0),
    U("\xf4\x90\x80\x80", 0), U("\xf5\x80\x80\x80", 0), U("\x80", 0), U("\xbf", 0),
    U("\xe2\x82", 0), U("a\xc3", 0), U("\xff", 0), U("\xfe", 0), U("\xc3\x28", 0),
    U("\xe2\x28\xa1", 0), U("\xf0\x9f\x98", 0),
};

START_TEST(test_ws_stream_utf8_validation) {
    const utf8_case_t *c = &UTF8_CASES[_i];
    ck_assert_msg(wsg_utf8_valid((const uint8_t *)c->s, c->n) == c->ok, "case %d", _i);
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *wsg_ws_stream_suite(void) {
    Suite *s = suite_create("ws_stream");
    TCase *tc;

    tc = tcase_create("splits");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_ws_stream_forwards_every_byte_at_every_split, 0, 2);
    tcase_add_loop_test(tc, test_ws_stream_long_frames, 0, 2);
    tcase_add_loop_test(tc, test_ws_stream_runs_walk_as_segments_do, 0, 2);
    tcase_add_loop_test(tc, test_ws_stream_run_stops_where_it_must, 0, 2);
    tcase_add_test(tc, test_ws_stream_run_leaves_bad_frames_to_the_walk);
    tcase_add_test(tc, test_ws_stream_control_split_after_header);
    tcase_add_test(tc, test_ws_stream_mid_data_and_closed_flags);
    tcase_add_test(tc, test_ws_stream_state_stays_small);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_ws_stream_rejects_bad_close_codes, 0, N(BAD_CODES));
    tcase_add_loop_test(tc, test_ws_stream_accepts_good_close_codes, 0, N(GOOD_CODES));
    tcase_add_test(tc, test_ws_stream_rejects_bad_close_payloads);
    tcase_add_test(tc, test_ws_stream_discards_after_close);
    suite_add_tcase(s, tc);

    tc = tcase_create("rsv");
    tcase_add_loop_test(tc, test_ws_stream_rsv_rules, 0, 2);
    tcase_add_loop_test(tc, test_ws_stream_reads_extensions, 0, N(EXT_CASES));
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_ws_stream_reports_parser_errors_and_stays_failed);
    tcase_add_test(tc, test_ws_stream_fragmentation_errors_at_every_split);
    tcase_add_loop_test(tc, test_ws_stream_utf8_validation, 0, N(UTF8_CASES));
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_ws_stream_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
