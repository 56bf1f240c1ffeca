/*
 * Unit tests for the RFC 6455 frame-header codec.
 *
 * Parser tests are tables of (input stream, expected frames, label). Every
 * stream is fed whole, then split in two at EVERY split point, then byte by
 * byte, and each piece is copied so that it ends right before a PROT_NONE
 * guard page: a parser that reads one byte past its input crashes the test.
 * Payloads between the headers are skipped the way the relay skips them and
 * unmasked in odd-sized pieces with wsg_ws_unmask's offset, so the payload
 * checks also exercise unmasking across arbitrary boundaries.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <check.h>

#include <wsgate/ws_frame.h>

/* ---- guard page ---------------------------------------------------------- */

#define GUARD_SPAN (256u * 1024u)

/* The end of GUARD_SPAN readable bytes followed by an inaccessible page. */
static uint8_t *guard_end(void) {
    static uint8_t *end;
    if (end == NULL) {
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        size_t span = (GUARD_SPAN + pg - 1) / pg * pg;
        uint8_t *m =
            mmap(NULL, span + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ck_assert(m != MAP_FAILED);
        ck_assert_int_eq(mprotect(m + span, pg, PROT_NONE), 0);
        end = m + span;
    }
    return end;
}

/* Copies <len> bytes so that they end exactly at the guard page. */
static uint8_t *at_guard(const uint8_t *src, size_t len) {
    ck_assert_uint_le(len, GUARD_SPAN);
    uint8_t *dst = guard_end() - len;
    if (len != 0)
        memmove(dst, src, len);
    return dst;
}

/* ---- stream driver ------------------------------------------------------- */

#define MAX_FRAMES 8
#define KEEP 128

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
#define FNV_BASIS 0xcbf29ce484222325ull

typedef struct {
    int rc;
    wsg_ws_frame_t f;
    size_t start;       /* stream offset of the header */
    uint64_t got;       /* payload bytes seen */
    uint64_t sum;       /* FNV-1a of the unmasked payload */
    uint8_t head[KEEP]; /* first unmasked payload bytes */
} got_t;

typedef struct {
    got_t fr[MAX_FRAMES];
    size_t n;
    int mid_header; /* the parser held part of a header at the end */
} run_t;

/* Unmasks payload bytes in pieces of 61 (not a multiple of 4 or 8) so that
 * every piece starts at a different mask offset. */
static void take_payload(got_t *g, const uint8_t *data, size_t n) {
    uint8_t tmp[61];
    while (n > 0) {
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
        memcpy(tmp, data, k);
        if (g->f.masked) {
            uint64_t end = wsg_ws_unmask(tmp, k, g->f.mask, g->got);
            ck_assert_uint_eq(end, g->got + k);
        }
        for (size_t i = 0; i < k && g->got + i < KEEP; i++)
            g->head[g->got + i] = tmp[i];
        g->sum = fnv(g->sum, tmp, k);
        g->got += k;
        data += k;
        n -= k;
    }
}

/* Feeds <in> to a fresh parser as a first chunk of <first> bytes, then
 * chunks of <step> bytes (0: the rest at once), each chunk against the
 * guard page, and records every header result until the first error. */
static void run_stream(const uint8_t *in, size_t len, size_t first, size_t step, int from_client,
                       uint64_t max_payload, run_t *r) {
    wsg_ws_parser_t p;
    uint64_t skip = 0;
    size_t off = 0, next_start = 0;
    int stop = 0;

    memset(r, 0, sizeof(*r));
    wsg_ws_parser_init(&p, from_client, max_payload);
    ck_assert(!wsg_ws_parser_mid_header(&p));

    for (size_t k = 0; (off < len || k == 0) && !stop; k++) {
        size_t clen = k == 0 ? first : step != 0 ? step : len - off;
        if (clen > len - off)
            clen = len - off;
        const uint8_t *c = at_guard(in + off, clen);
        size_t pos = 0;

        if (skip == 0) {
            /* An empty read changes nothing, even mid-header. */
            size_t used = 99;
            wsg_ws_frame_t f;
            int had = wsg_ws_parser_mid_header(&p);
            ck_assert_int_eq(wsg_ws_parse(&p, guard_end(), 0, &used, &f), WSG_WS_INCOMPLETE);
            ck_assert_uint_eq(used, 0);
            ck_assert_int_eq(wsg_ws_parser_mid_header(&p), had);
        }
        while (pos < clen) {
            if (skip != 0) {
                size_t take = skip < clen - pos ? (size_t)skip : clen - pos;
                take_payload(&r->fr[r->n - 1], c + pos, take);
                pos += take;
                skip -= take;
                continue;
            }
            size_t used = (size_t)-1;
            wsg_ws_frame_t f;
            memset(&f, 0xAA, sizeof(f));
            int rc = wsg_ws_parse(&p, c + pos, clen - pos, &used, &f);
            if (rc == WSG_WS_INCOMPLETE) {
                ck_assert_uint_eq(used, clen - pos);
                ck_assert(wsg_ws_parser_mid_header(&p));
                break;
            }
            ck_assert_uint_lt(r->n, MAX_FRAMES);
            got_t *g = &r->fr[r->n++];
            g->rc = rc;
            g->f = f;
            g->start = next_start;
            g->sum = FNV_BASIS;
            if (rc != WSG_WS_OK) {
                stop = 1;
                break;
            }
            ck_assert_uint_le(used, clen - pos);
            ck_assert(!wsg_ws_parser_mid_header(&p));
            pos += used;
            skip = f.payload_len;
            next_start += f.header_len + f.payload_len;
        }
        off += clen;
    }
    r->mid_header = wsg_ws_parser_mid_header(&p);
}

/* ---- the parser table ---------------------------------------------------- */

typedef struct {
    int rc;
    uint8_t fin, rsv, opcode, masked, header_len;
    uint64_t payload_len;
    const char *payload; /* expected unmasked payload, NULL = not in the stream */
} exp_t;

typedef struct {
    const char *label;
    const uint8_t *in;
    size_t len;
    int from_client;
    uint64_t max_payload;
    int mid_header; /* expected at the end (ignored after an error) */
    size_t nexp;
    exp_t exp[4];
} frame_case_t;

#define BYTES(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})
#define CLIENT 1
#define SERVER 0
#define OK WSG_WS_OK

/* RFC 6455 §5.7: masked "Hello" with key 37 fa 21 3d. */
#define HELLO_MASKED 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58

static const frame_case_t cases[] = {
    /* RFC 6455 §5.7 examples */
    {"rfc 5.7 single-frame unmasked text",
     BYTES(0x81, 0x05, 'H', 'e', 'l', 'l', 'o'),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x1, 0, 2, 5, "Hello"}}},
    {"rfc 5.7 single-frame masked text",
     BYTES(0x81, HELLO_MASKED),
     CLIENT,
     0,
     0,
     1,
     {{OK, 1, 0, 0x1, 1, 6, 5, "Hello"}}},
    {"rfc 5.7 fragmented unmasked text",
     BYTES(0x01, 0x03, 'H', 'e', 'l', 0x80, 0x02, 'l', 'o'),
     SERVER,
     0,
     0,
     2,
     {{OK, 0, 0, 0x1, 0, 2, 3, "Hel"}, {OK, 1, 0, 0x0, 0, 2, 2, "lo"}}},
    {"rfc 5.7 unmasked ping",
     BYTES(0x89, 0x05, 'H', 'e', 'l', 'l', 'o'),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x9, 0, 2, 5, "Hello"}}},
    {"rfc 5.7 masked pong",
     BYTES(0x8a, HELLO_MASKED),
     CLIENT,
     0,
     0,
     1,
     {{OK, 1, 0, 0xA, 1, 6, 5, "Hello"}}},
    {"rfc 5.7 256 bytes binary (16-bit length)",
     BYTES(0x82, 0x7E, 0x01, 0x00),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 0, 4, 256, NULL}}},
    {"rfc 5.7 64 KiB binary (64-bit length)",
     BYTES(0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 0, 10, 65536, NULL}}},

    /* every payload-length form, masked and unmasked */
    {"empty unmasked", BYTES(0x82, 0x00), SERVER, 0, 0, 1, {{OK, 1, 0, 0x2, 0, 2, 0, ""}}},
    {"empty masked",
     BYTES(0x82, 0x80, 1, 2, 3, 4),
     CLIENT,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 1, 6, 0, ""}}},
    {"125 in 7 bits", BYTES(0x82, 0x7D), SERVER, 0, 0, 1, {{OK, 1, 0, 0x2, 0, 2, 125, NULL}}},
    {"125 in 7 bits masked",
     BYTES(0x82, 0xFD, 9, 8, 7, 6),
     CLIENT,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 1, 6, 125, NULL}}},
    {"126 in 16 bits",
     BYTES(0x82, 0x7E, 0x00, 0x7E),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 0, 4, 126, NULL}}},
    {"126 in 16 bits masked",
     BYTES(0x82, 0xFE, 0x00, 0x7E, 1, 2, 3, 4),
     CLIENT,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 1, 8, 126, NULL}}},
    {"65535 in 16 bits",
     BYTES(0x82, 0x7E, 0xFF, 0xFF),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 0, 4, 65535, NULL}}},
    {"65536 in 64 bits masked",
     BYTES(0x82, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0xA, 0xB, 0xC, 0xD),
     CLIENT,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 1, 14, 65536, NULL}}},
    {"largest legal 64-bit length",
     BYTES(0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x2, 0, 10, 0x7FFFFFFFFFFFFFFFull, NULL}}},

    /* RSV bits pass through (permessage-deflate sets RSV1) */
    {"rsv1 reported",
     BYTES(0xC1, 0x02, 0xAB, 0xCD),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 4, 0x1, 0, 2, 2, "\xAB\xCD"}}},
    {"all rsv bits reported",
     BYTES(0xF2, 0x80, 1, 2, 3, 4),
     CLIENT,
     0,
     0,
     1,
     {{OK, 1, 7, 0x2, 1, 6, 0, ""}}},

    /* control frames and fragmentation (RFC 6455 §5.4, §5.5) */
    {"close with code",
     BYTES(0x88, 0x02, 0x03, 0xE8),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x8, 0, 2, 2, "\x03\xE8"}}},
    {"control frame of 125 bytes",
     BYTES(0x89, 0x7D),
     SERVER,
     0,
     0,
     1,
     {{OK, 1, 0, 0x9, 0, 2, 125, NULL}}},
    {"ping between fragments",
     BYTES(0x01, 0x01, 'a', 0x89, 0x00, 0x80, 0x01, 'b'),
     SERVER,
     0,
     0,
     3,
     {{OK, 0, 0, 0x1, 0, 2, 1, "a"}, {OK, 1, 0, 0x9, 0, 2, 0, ""}, {OK, 1, 0, 0x0, 0, 2, 1, "b"}}},
    {"three masked fragments", /* 'x','y','z' XOR 0x01 */
     BYTES(0x02, 0x81, 1, 2, 3, 4, 0x79, 0x00, 0x81, 1, 2, 3, 4, 0x78, 0x80, 0x81, 1, 2, 3, 4,
           0x7B),
     CLIENT,
     0,
     0,
     3,
     {{OK, 0, 0, 0x2, 1, 6, 1, "x"}, {OK, 0, 0, 0x0, 1, 6, 1, "y"}, {OK, 1, 0, 0x0, 1, 6, 1, "z"}}},
    {"two messages in a row",
     BYTES(0x81, 0x01, 'a', 0x82, 0x01, 'b'),
     SERVER,
     0,
     0,
     2,
     {{OK, 1, 0, 0x1, 0, 2, 1, "a"}, {OK, 1, 0, 0x2, 0, 2, 1, "b"}}},
    {"close inside a fragmented message",
     BYTES(0x01, 0x00, 0x88, 0x00, 0x80, 0x00),
     SERVER,
     0,
     0,
     3,
     {{OK, 0, 0, 0x1, 0, 2, 0, ""}, {OK, 1, 0, 0x8, 0, 2, 0, ""}, {OK, 1, 0, 0x0, 0, 2, 0, ""}}},

    /* max_payload */
    {"exactly max_payload", BYTES(0x82, 0x0A), SERVER, 10, 0, 1, {{OK, 1, 0, 0x2, 0, 2, 10, NULL}}},
    {"16-bit length at max_payload",
     BYTES(0x82, 0x7E, 0x03, 0xE8),
     SERVER,
     1000,
     0,
     1,
     {{OK, 1, 0, 0x2, 0, 4, 1000, NULL}}},
    {"7-bit length over max_payload",
     BYTES(0x82, 0x0B),
     SERVER,
     10,
     0,
     1,
     {{WSG_WS_ERR_TOO_BIG, 1, 0, 0x2, 0, 2, 11, NULL}}},
    {"16-bit length over max_payload",
     BYTES(0x82, 0x7E, 0x03, 0xE9),
     SERVER,
     1000,
     0,
     1,
     {{WSG_WS_ERR_TOO_BIG, 1, 0, 0x2, 0, 4, 1001, NULL}}},
    {"64-bit length over max_payload, masked",
     BYTES(0x82, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 1, 2, 3, 4),
     CLIENT,
     65536,
     0,
     1,
     {{WSG_WS_ERR_TOO_BIG, 1, 0, 0x2, 1, 14, 65537, NULL}}},
    {"control frame over max_payload",
     BYTES(0x89, 0x0B),
     SERVER,
     10,
     0,
     1,
     {{WSG_WS_ERR_TOO_BIG, 1, 0, 0x9, 0, 2, 11, NULL}}},
    {"too big after a good frame",
     BYTES(0x81, 0x01, 'a', 0x82, 0x7E, 0x01, 0x00),
     SERVER,
     255,
     0,
     2,
     {{OK, 1, 0, 0x1, 0, 2, 1, "a"}, {WSG_WS_ERR_TOO_BIG, 1, 0, 0x2, 0, 4, 256, NULL}}},

    /* masking (RFC 6455 §5.1) */
    {"unmasked client frame",
     BYTES(0x81, 0x05, 'H', 'e', 'l', 'l', 'o'),
     CLIENT,
     0,
     0,
     1,
     {{WSG_WS_ERR_MASK, 1, 0, 0x1, 0, 2, 5, NULL}}},
    {"masked server frame",
     BYTES(0x81, HELLO_MASKED),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_MASK, 1, 0, 0x1, 1, 6, 5, NULL}}},
    {"unmasked client close",
     BYTES(0x88, 0x00),
     CLIENT,
     0,
     0,
     1,
     {{WSG_WS_ERR_MASK, 1, 0, 0x8, 0, 2, 0, NULL}}},

    /* reserved opcodes (the full 0..15 sweep is a separate test) */
    {"reserved data opcode 3",
     BYTES(0x83, 0x00),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_OPCODE, 1, 0, 0x3, 0, 2, 0, NULL}}},
    {"reserved control opcode 0xF",
     BYTES(0x8F, 0x80, 1, 2, 3, 4),
     CLIENT,
     0,
     0,
     1,
     {{WSG_WS_ERR_OPCODE, 1, 0, 0xF, 1, 6, 0, NULL}}},

    /* control frame limits (RFC 6455 §5.5) */
    {"ping of 126 bytes (16-bit)",
     BYTES(0x89, 0x7E, 0x00, 0x7E),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_CONTROL_LEN, 1, 0, 0x9, 0, 4, 0, NULL}}},
    {"close with a 64-bit length",
     BYTES(0x88, 0x7F, 0, 0, 0, 0, 0, 0, 0, 2),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_CONTROL_LEN, 1, 0, 0x8, 0, 10, 0, NULL}}},
    {"fragmented ping",
     BYTES(0x09, 0x00),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_CONTROL_FRAG, 0, 0, 0x9, 0, 2, 0, NULL}}},
    {"fragmented close, masked",
     BYTES(0x08, 0x82, 1, 2, 3, 4, 0x02, 0xEA),
     CLIENT,
     0,
     0,
     1,
     {{WSG_WS_ERR_CONTROL_FRAG, 0, 0, 0x8, 1, 6, 2, NULL}}},

    /* length encodings (RFC 6455 §5.2) */
    {"125 in 16 bits",
     BYTES(0x82, 0x7E, 0x00, 0x7D),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_LENGTH, 1, 0, 0x2, 0, 4, 125, NULL}}},
    {"0 in 16 bits",
     BYTES(0x82, 0x7E, 0x00, 0x00),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_LENGTH, 1, 0, 0x2, 0, 4, 0, NULL}}},
    {"65535 in 64 bits",
     BYTES(0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_LENGTH, 1, 0, 0x2, 0, 10, 65535, NULL}}},
    {"0 in 64 bits, masked",
     BYTES(0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4),
     CLIENT,
     0,
     0,
     1,
     {{WSG_WS_ERR_LENGTH, 1, 0, 0x2, 1, 14, 0, NULL}}},
    {"64-bit length with the MSB set",
     BYTES(0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_LENGTH, 1, 0, 0x2, 0, 10, 0x8000000000000000ull, NULL}}},
    {"64-bit length all ones",
     BYTES(0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_LENGTH, 1, 0, 0x2, 0, 10, UINT64_MAX, NULL}}},

    /* message order (RFC 6455 §5.4) */
    {"continuation without a message",
     BYTES(0x80, 0x00),
     SERVER,
     0,
     0,
     1,
     {{WSG_WS_ERR_CONTINUATION, 1, 0, 0x0, 0, 2, 0, NULL}}},
    {"continuation after a finished message",
     BYTES(0x81, 0x01, 'a', 0x80, 0x01, 'b'),
     SERVER,
     0,
     0,
     2,
     {{OK, 1, 0, 0x1, 0, 2, 1, "a"}, {WSG_WS_ERR_CONTINUATION, 1, 0, 0x0, 0, 2, 1, NULL}}},
    {"text inside a fragmented message",
     BYTES(0x01, 0x01, 'a', 0x81, 0x01, 'b'),
     SERVER,
     0,
     0,
     2,
     {{OK, 0, 0, 0x1, 0, 2, 1, "a"}, {WSG_WS_ERR_NOT_CONTINUATION, 1, 0, 0x1, 0, 2, 1, NULL}}},
    {"binary after a ping inside a message",
     BYTES(0x02, 0x80, 1, 2, 3, 4, 0x89, 0x80, 1, 2, 3, 4, 0x02, 0x80, 1, 2, 3, 4),
     CLIENT,
     0,
     0,
     3,
     {{OK, 0, 0, 0x2, 1, 6, 0, ""},
      {OK, 1, 0, 0x9, 1, 6, 0, ""},
      {WSG_WS_ERR_NOT_CONTINUATION, 0, 0, 0x2, 1, 6, 0, NULL}}},

    /* streams that end inside a header */
    {"only the first byte", BYTES(0x81), SERVER, 0, 1, 0, {{0}}},
    {"16-bit length cut short", BYTES(0x82, 0x7E, 0x01), SERVER, 0, 1, 0, {{0}}},
    {"mask key cut short", BYTES(0x81, 0x85, 0x37, 0xfa), CLIENT, 0, 1, 0, {{0}}},
    {"second header cut short",
     BYTES(0x81, 0x01, 'a', 0x82, 0x7F, 0, 0, 0),
     SERVER,
     0,
     1,
     1,
     {{OK, 1, 0, 0x1, 0, 2, 1, "a"}}},
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void expect_run(const frame_case_t *c, const run_t *r, const char *how) {
    ck_assert_msg(r->n == c->nexp, "%s (%s): %zu results, expected %zu", c->label, how, r->n,
                  c->nexp);
    for (size_t i = 0; i < c->nexp; i++) {
        const exp_t *e = &c->exp[i];
        const got_t *g = &r->fr[i];
        const wsg_ws_frame_t *f = &g->f;
        ck_assert_msg(g->rc == e->rc, "%s (%s): frame %zu: rc %d (%s), expected %d (%s)", c->label,
                      how, i, g->rc, wsg_ws_strerror(g->rc), e->rc, wsg_ws_strerror(e->rc));
        ck_assert_msg(f->fin == e->fin && f->rsv == e->rsv && f->opcode == e->opcode &&
                          f->masked == e->masked && f->header_len == e->header_len &&
                          f->payload_len == e->payload_len,
                      "%s (%s): frame %zu: fin %u rsv %u op %u masked %u hlen %u len %llu",
                      c->label, how, i, f->fin, f->rsv, f->opcode, f->masked, f->header_len,
                      (unsigned long long)f->payload_len);
        if (e->rc == OK && f->masked) {
            ck_assert_msg(memcmp(f->mask, c->in + g->start + f->header_len - 4, 4) == 0,
                          "%s (%s): frame %zu: wrong mask key", c->label, how, i);
        } else {
            static const uint8_t zero[4];
            ck_assert_msg(memcmp(f->mask, zero, 4) == 0, "%s (%s): frame %zu: mask not zeroed",
                          c->label, how, i);
        }
        if (e->payload != NULL) {
            size_t plen = strlen(e->payload);
            ck_assert_msg(g->got == plen && memcmp(g->head, e->payload, plen) == 0,
                          "%s (%s): frame %zu: wrong payload", c->label, how, i);
        }
    }
    if (c->nexp == 0 || c->exp[c->nexp - 1].rc >= 0)
        ck_assert_msg(r->mid_header == c->mid_header, "%s (%s): mid_header %d, expected %d",
                      c->label, how, r->mid_header, c->mid_header);
}

START_TEST(test_ws_frame_parses_table_whole_split_and_per_byte) {
    const frame_case_t *c = &cases[_i];
    char how[64];
    run_t r;

    run_stream(c->in, c->len, c->len, 0, c->from_client, c->max_payload, &r);
    expect_run(c, &r, "whole");
    for (size_t s = 0; s <= c->len; s++) {
        snprintf(how, sizeof(how), "split at %zu", s);
        run_stream(c->in, c->len, s, 0, c->from_client, c->max_payload, &r);
        expect_run(c, &r, how);
    }
    run_stream(c->in, c->len, 1, 1, c->from_client, c->max_payload, &r);
    expect_run(c, &r, "byte by byte");
    run_stream(c->in, c->len, 0, 1, c->from_client, c->max_payload, &r);
    expect_run(c, &r, "empty read, then byte by byte");
    for (size_t step = 2; step <= 5; step++) {
        snprintf(how, sizeof(how), "%zu bytes at a time", step);
        run_stream(c->in, c->len, step, step, c->from_client, c->max_payload, &r);
        expect_run(c, &r, how);
    }
}
END_TEST

/* The stateless wsg_ws_parse_header() judges every prefix of every header
 * of the table exactly as the incremental parser does when fed that prefix
 * at a frame boundary, given the message state the caller tracks (open
 * after a data frame without FIN). This is what the relay's walk relies on
 * when it parses a kept header again from its first byte. */
START_TEST(test_ws_frame_stateless_header_agrees_at_every_prefix) {
    const frame_case_t *c = &cases[_i];
    wsg_ws_parser_t p;
    size_t off = 0;
    int in_message = 0;

    wsg_ws_parser_init(&p, c->from_client, c->max_payload);
    while (off < c->len) {
        size_t rest = c->len - off;
        int whole_rc = WSG_WS_INCOMPLETE;
        for (size_t k = 0; k <= rest && k <= WSG_WS_MAX_HEADER; k++) {
            const uint8_t *in = at_guard(c->in + off, k);
            wsg_ws_parser_t q = p; /* at a frame boundary: nothing gathered */
            wsg_ws_frame_t f1, f2;
            size_t used;
            memset(&f1, 0xAA, sizeof(f1));
            memset(&f2, 0x55, sizeof(f2));
            int rc1 = wsg_ws_parse_header(in, k, c->from_client, in_message, c->max_payload, &f1);
            int rc2 = wsg_ws_parse(&q, in, k, &used, &f2);
            ck_assert_msg(rc1 == rc2, "%s: frame at %zu, %zu bytes: %d, the parser says %d",
                          c->label, off, k, rc1, rc2);
            if (rc1 == WSG_WS_OK) {
                ck_assert_msg(f1.fin == f2.fin && f1.rsv == f2.rsv && f1.opcode == f2.opcode &&
                                  f1.masked == f2.masked && f1.header_len == f2.header_len &&
                                  f1.payload_len == f2.payload_len &&
                                  memcmp(f1.mask, f2.mask, 4) == 0 && used == f1.header_len,
                              "%s: frame at %zu: fields differ", c->label, off);
            }
            if (rc1 != WSG_WS_INCOMPLETE) {
                whole_rc = rc1;
                break;
            }
        }
        if (whole_rc != WSG_WS_OK)
            return; /* an error, or the stream ends inside a header */
        wsg_ws_frame_t f;
        size_t used;
        ck_assert_int_eq(wsg_ws_parse(&p, c->in + off, rest, &used, &f), WSG_WS_OK);
        if (!(f.opcode & 0x8))
            in_message = !f.fin;
        if (f.payload_len > rest - used)
            return;
        off += used + (size_t)f.payload_len;
    }
}
END_TEST

START_TEST(test_ws_frame_empty_input_is_incomplete) {
    wsg_ws_parser_t p;
    wsg_ws_frame_t f;
    size_t used = 7;
    wsg_ws_parser_init(&p, 1, 0);
    ck_assert_int_eq(wsg_ws_parse(&p, guard_end(), 0, &used, &f), WSG_WS_INCOMPLETE);
    ck_assert_uint_eq(used, 0);
    ck_assert(!wsg_ws_parser_mid_header(&p));
}
END_TEST

/* Every opcode, with and without FIN: only 0x1, 0x2, 0x8, 0x9, 0xA open a
 * frame outside a message (0x0 needs one; 0x8-0xA need FIN). */
START_TEST(test_ws_frame_checks_every_opcode) {
    for (unsigned op = 0; op < 16; op++) {
        for (unsigned fin = 0; fin < 2; fin++) {
            uint8_t in[2] = {(uint8_t)(fin << 7 | op), 0x00};
            int valid = op == 1 || op == 2 || op == 8 || op == 9 || op == 0xA;
            int expect = !valid            ? (op == 0 ? WSG_WS_ERR_CONTINUATION : WSG_WS_ERR_OPCODE)
                         : op >= 8 && !fin ? WSG_WS_ERR_CONTROL_FRAG
                                           : WSG_WS_OK;
            wsg_ws_parser_t p;
            wsg_ws_frame_t f;
            size_t used;
            wsg_ws_parser_init(&p, 0, 0);
            int rc = wsg_ws_parse(&p, at_guard(in, 2), 2, &used, &f);
            ck_assert_msg(rc == expect, "opcode %u fin %u: rc %d, expected %d", op, fin, rc,
                          expect);
            ck_assert_uint_eq(f.opcode, op);
            ck_assert_uint_eq(f.fin, fin);
        }
    }
}
END_TEST

/* ---- build + parse round trips ------------------------------------------- */

static void round_trip(size_t len, const uint8_t *mask) {
    size_t cap = len + WSG_WS_MAX_HEADER;
    uint8_t *payload = malloc(len + 1);
    uint8_t *frame = malloc(cap);
    size_t hlen = 2 + (len < 126 ? 0 : len < 65536 ? 2 : 8) + (mask ? 4 : 0);
    char how[64];
    run_t r;

    ck_assert_ptr_nonnull(payload);
    ck_assert_ptr_nonnull(frame);
    for (size_t i = 0; i < len; i++)
        payload[i] = (uint8_t)(i * 7 + 3 + (i >> 8));
    size_t n = wsg_ws_build(frame, cap, WSG_WS_OP_BINARY, payload, len, mask);
    ck_assert_uint_eq(n, hlen + len);
    if (mask != NULL && len >= 8)
        ck_assert(memcmp(frame + hlen, payload, len) != 0);

    uint64_t sum = fnv(FNV_BASIS, payload, len);
    /* whole, byte by byte, split across the header and in the payload */
    size_t splits[] = {n, 1, 0, hlen - 1, hlen, hlen + 1, hlen + len / 2, n - 1};
    for (size_t k = 0; k < sizeof(splits) / sizeof(splits[0]) + hlen; k++) {
        size_t first = k < sizeof(splits) / sizeof(splits[0]) ? splits[k] : k - 8;
        size_t step = k == 1 ? 1 : 0;
        snprintf(how, sizeof(how), "len %zu %s, first chunk %zu step %zu", len,
                 mask ? "masked" : "unmasked", first, step);
        run_stream(frame, n, first, step, mask != NULL, 0, &r);
        ck_assert_msg(r.n == 1 && r.fr[0].rc == WSG_WS_OK, "%s: rc", how);
        ck_assert_msg(r.fr[0].f.header_len == hlen && r.fr[0].f.payload_len == len &&
                          r.fr[0].f.opcode == WSG_WS_OP_BINARY && r.fr[0].f.fin == 1 &&
                          r.fr[0].f.rsv == 0 && r.fr[0].f.masked == (mask != NULL),
                      "%s: header fields", how);
        ck_assert_msg(r.fr[0].got == len && r.fr[0].sum == sum, "%s: payload", how);
        ck_assert(!r.mid_header);
    }
    free(frame);
    free(payload);
}

START_TEST(test_ws_frame_round_trips_every_length_form) {
    static const size_t lens[] = {0, 1, 5, 124, 125, 126, 127, 1000, 65535, 65536, 70001};
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        round_trip(lens[i], NULL);
        round_trip(lens[i], mask);
    }
}
END_TEST

START_TEST(test_ws_frame_builds_rfc_examples) {
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    static const uint8_t unmasked[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    static const uint8_t masked[] = {0x81, HELLO_MASKED};
    static const uint8_t pong[] = {0x8a, HELLO_MASKED};
    static const uint8_t big16[] = {0x82, 0x7E, 0x01, 0x00};
    static const uint8_t big64[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0};
    static uint8_t out[65536 + 16];
    static uint8_t zeros[65536];

    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_TEXT, "Hello", 5, NULL), 7);
    ck_assert_mem_eq(out, unmasked, 7);
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_TEXT, "Hello", 5, mask), 11);
    ck_assert_mem_eq(out, masked, 11);
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_PONG, "Hello", 5, mask), 11);
    ck_assert_mem_eq(out, pong, 11);
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_BINARY, zeros, 256, NULL), 260);
    ck_assert_mem_eq(out, big16, 4);
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_BINARY, zeros, 65536, NULL), 65546);
    ck_assert_mem_eq(out, big64, 10);
    /* an empty payload may be NULL */
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_PING, NULL, 0, NULL), 2);
    ck_assert_uint_eq(out[0], 0x89);
    ck_assert_uint_eq(out[1], 0x00);
}
END_TEST

START_TEST(test_ws_frame_build_respects_cap_and_limits) {
    static const uint8_t mask[4] = {1, 2, 3, 4};
    uint8_t payload[200];
    uint8_t out[256];
    memset(payload, 'p', sizeof(payload));

    /* every cap below the frame size fails, without writing past cap */
    for (size_t len = 0; len <= 130; len += 5) {
        for (int m = 0; m < 2; m++) {
            size_t need = 2 + (len >= 126 ? 2 : 0) + (m ? 4 : 0) + len;
            for (size_t cap = 0; cap < need; cap++) {
                uint8_t *o = at_guard(out, cap);
                ck_assert_uint_eq(
                    wsg_ws_build(o, cap, WSG_WS_OP_BINARY, payload, len, m ? mask : NULL), 0);
            }
            uint8_t *o = at_guard(out, need);
            ck_assert_uint_eq(
                wsg_ws_build(o, need, WSG_WS_OP_BINARY, payload, len, m ? mask : NULL), need);
        }
    }
    /* control frames are limited to 125 bytes (RFC 6455 §5.5) */
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_PING, payload, 125, NULL), 127);
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_PING, payload, 126, NULL), 0);
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_CLOSE, payload, 126, mask), 0);
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), WSG_WS_OP_PONG, payload, 200, NULL), 0);
    /* opcodes are 4 bits */
    ck_assert_uint_eq(wsg_ws_build(out, sizeof(out), 0x10, payload, 1, NULL), 0);
}
END_TEST

/* ---- close frames -------------------------------------------------------- */

/* Parses a built close frame as the peer would and returns its payload. */
static size_t parse_close(const uint8_t *frame, size_t n, int masked, uint8_t *body) {
    run_t r;
    run_stream(frame, n, n, 0, masked, 0, &r);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.fr[0].rc, WSG_WS_OK);
    ck_assert_uint_eq(r.fr[0].f.opcode, WSG_WS_OP_CLOSE);
    ck_assert_uint_le(r.fr[0].f.payload_len, WSG_WS_MAX_CONTROL_PAYLOAD);
    ck_assert_uint_eq(r.fr[0].got, r.fr[0].f.payload_len);
    memcpy(body, r.fr[0].head, (size_t)r.fr[0].got);
    return (size_t)r.fr[0].got;
}

START_TEST(test_ws_frame_builds_close_frames) {
    static const uint8_t mask[4] = {0xde, 0xad, 0xbe, 0xef};
    uint8_t out[256], body[KEEP];
    size_t n, blen;

    n = wsg_ws_build_close(out, sizeof(out), WSG_WS_CLOSE_GOING_AWAY, "going away", NULL);
    ck_assert_uint_eq(n, 2 + 2 + 10);
    blen = parse_close(out, n, 0, body);
    ck_assert_uint_eq(wsg_ws_close_code(body, blen), 1001);
    ck_assert_mem_eq(body + 2, "going away", 10);

    n = wsg_ws_build_close(out, sizeof(out), WSG_WS_CLOSE_SERVICE_RESTART, "service restart", mask);
    ck_assert_uint_eq(n, 2 + 4 + 2 + 15);
    blen = parse_close(out, n, 1, body);
    ck_assert_uint_eq(wsg_ws_close_code(body, blen), 1012);
    ck_assert_mem_eq(body + 2, "service restart", 15);

    n = wsg_ws_build_close(out, sizeof(out), WSG_WS_CLOSE_PROTOCOL_ERROR, NULL, NULL);
    ck_assert_uint_eq(n, 4);
    ck_assert_uint_eq(out[0], 0x88);
    ck_assert_uint_eq(out[1], 0x02);
    ck_assert_uint_eq(wsg_ws_close_code(out + 2, 2), 1002);

    n = wsg_ws_build_close(out, sizeof(out), WSG_WS_CLOSE_TOO_BIG, "", mask);
    ck_assert_uint_eq(n, 8);
    blen = parse_close(out, n, 1, body);
    ck_assert_uint_eq(blen, 2);
    ck_assert_uint_eq(wsg_ws_close_code(body, blen), 1009);

    /* too small a buffer */
    ck_assert_uint_eq(wsg_ws_build_close(out, 3, 1000, NULL, NULL), 0);
}
END_TEST

START_TEST(test_ws_frame_close_reason_is_truncated_to_fit) {
    char reason[300];
    uint8_t out[256], body[KEEP];
    size_t n, blen;

    /* ASCII: cut at exactly 123 bytes so that the payload is 125 */
    memset(reason, 'r', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    n = wsg_ws_build_close(out, sizeof(out), 1000, reason, NULL);
    ck_assert_uint_eq(n, 2 + 125);
    blen = parse_close(out, n, 0, body);
    ck_assert_uint_eq(blen, 125);
    ck_assert_uint_eq(wsg_ws_close_code(body, blen), 1000);

    /* a 123-byte reason fits exactly; a 122-byte one too */
    reason[123] = '\0';
    ck_assert_uint_eq(wsg_ws_build_close(out, sizeof(out), 1000, reason, NULL), 127);
    reason[122] = '\0';
    ck_assert_uint_eq(wsg_ws_build_close(out, sizeof(out), 1000, reason, NULL), 126);

    /* UTF-8: never cut inside a character (RFC 6455 §5.5.1, §8.1). 121
     * ASCII bytes + U+20AC (3 bytes) = 124 > 123: the euro sign is dropped. */
    memset(reason, 'r', 121);
    memcpy(reason + 121, "\xE2\x82\xAC", 4);
    n = wsg_ws_build_close(out, sizeof(out), 1000, reason, NULL);
    ck_assert_uint_eq(n, 2 + 2 + 121);
    /* 120 ASCII + the euro sign = 123 bytes: kept whole */
    memset(reason, 'r', 120);
    memcpy(reason + 120, "\xE2\x82\xAC", 4);
    n = wsg_ws_build_close(out, sizeof(out), 1000, reason, NULL);
    ck_assert_uint_eq(n, 2 + 2 + 123);
    ck_assert_mem_eq(out + 4 + 120, "\xE2\x82\xAC", 3);
    /* 122 ASCII + U+00E9 (2 bytes) = 124: dropped */
    memset(reason, 'r', 122);
    memcpy(reason + 122, "\xC3\xA9", 3);
    n = wsg_ws_build_close(out, sizeof(out), 1000, reason, NULL);
    ck_assert_uint_eq(n, 2 + 2 + 122);
}
END_TEST

START_TEST(test_ws_frame_reads_close_codes) {
    static const uint8_t normal[] = {0x03, 0xE8};
    static const uint8_t with_reason[] = {0x03, 0xE9, 'b', 'y', 'e'};
    static const uint8_t app[] = {0x0F, 0xA0};
    static const uint8_t one[] = {0x03};

    ck_assert_uint_eq(wsg_ws_close_code(NULL, 0), WSG_WS_CLOSE_NO_STATUS);
    ck_assert_uint_eq(wsg_ws_close_code(at_guard(one, 1), 1), WSG_WS_CLOSE_PROTOCOL_ERROR);
    ck_assert_uint_eq(wsg_ws_close_code(at_guard(normal, 2), 2), 1000);
    ck_assert_uint_eq(wsg_ws_close_code(with_reason, sizeof(with_reason)), 1001);
    ck_assert_uint_eq(wsg_ws_close_code(app, 2), 4000);
}
END_TEST

/* ---- unmask -------------------------------------------------------------- */

START_TEST(test_ws_frame_unmasks_at_any_offset_and_length) {
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t plain[80], data[80], ref[80];

    for (size_t i = 0; i < sizeof(plain); i++)
        plain[i] = (uint8_t)(i * 31 + 1);
    for (size_t len = 0; len <= 70; len++) {
        for (uint64_t off = 0; off < 9; off++) {
            for (size_t i = 0; i < len; i++)
                ref[i] = plain[i] ^ mask[(off + i) % 4];
            /* against the guard page, so the 8-byte steps never overrun */
            uint8_t *d = at_guard(plain, len);
            ck_assert_uint_eq(wsg_ws_unmask(d, len, mask, off), off + len);
            ck_assert_msg(len == 0 || memcmp(d, ref, len) == 0, "len %zu offset %llu", len,
                          (unsigned long long)off);
            /* unaligned start */
            memcpy(data + 1, plain, len);
            wsg_ws_unmask(data + 1, len, mask, off);
            ck_assert(len == 0 || memcmp(data + 1, ref, len) == 0);
        }
    }
    /* large offsets wrap modulo 4 */
    memcpy(data, plain, 16);
    ck_assert_uint_eq(wsg_ws_unmask(data, 16, mask, UINT64_C(0x100000002)), 0x100000012);
    for (size_t i = 0; i < 16; i++)
        ck_assert_uint_eq(data[i], plain[i] ^ mask[(i + 2) % 4]);
}
END_TEST

START_TEST(test_ws_frame_unmasks_in_pieces) {
    static const uint8_t mask[4] = {0xA5, 0x01, 0xFF, 0x7E};
    uint8_t plain[100], data[100];

    for (size_t i = 0; i < sizeof(plain); i++)
        plain[i] = (uint8_t)(i ^ 0x5A);
    for (size_t s = 0; s <= sizeof(plain); s++) {
        memcpy(data, plain, sizeof(plain));
        uint64_t off = wsg_ws_unmask(data, s, mask, 0);
        off = wsg_ws_unmask(data + s, sizeof(plain) - s, mask, off);
        ck_assert_uint_eq(off, sizeof(plain));
        /* masking is its own inverse */
        wsg_ws_unmask(data, sizeof(plain), mask, 0);
        ck_assert_mem_eq(data, plain, sizeof(plain));
    }
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

START_TEST(test_ws_frame_maps_errors_to_close_codes) {
    static const int errs[] = {WSG_WS_ERR_MASK,         WSG_WS_ERR_OPCODE,
                               WSG_WS_ERR_CONTROL_LEN,  WSG_WS_ERR_CONTROL_FRAG,
                               WSG_WS_ERR_LENGTH,       WSG_WS_ERR_TOO_BIG,
                               WSG_WS_ERR_CONTINUATION, WSG_WS_ERR_NOT_CONTINUATION};
    size_t n = sizeof(errs) / sizeof(errs[0]);
    for (size_t i = 0; i < n; i++) {
        uint16_t want = errs[i] == WSG_WS_ERR_TOO_BIG ? 1009 : 1002;
        ck_assert_uint_eq(wsg_ws_error_close_code(errs[i]), want);
        const char *s = wsg_ws_strerror(errs[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_gt(strlen(s), 0);
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(s, wsg_ws_strerror(errs[j]));
    }
    ck_assert_ptr_nonnull(wsg_ws_strerror(-100));
    ck_assert_ptr_nonnull(wsg_ws_strerror(WSG_WS_OK));
    ck_assert_ptr_nonnull(wsg_ws_strerror(WSG_WS_INCOMPLETE));
}
END_TEST

Suite *wsg_ws_frame_suite(void) {
    Suite *s = suite_create("ws_frame");
    TCase *tc;

    tc = tcase_create("parse");
    tcase_add_loop_test(tc, test_ws_frame_parses_table_whole_split_and_per_byte, 0, (int)NCASES);
    tcase_add_loop_test(tc, test_ws_frame_stateless_header_agrees_at_every_prefix, 0, (int)NCASES);
    tcase_add_test(tc, test_ws_frame_empty_input_is_incomplete);
    tcase_add_test(tc, test_ws_frame_checks_every_opcode);
    suite_add_tcase(s, tc);

    tc = tcase_create("build");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ws_frame_round_trips_every_length_form);
    tcase_add_test(tc, test_ws_frame_builds_rfc_examples);
    tcase_add_test(tc, test_ws_frame_build_respects_cap_and_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_add_test(tc, test_ws_frame_builds_close_frames);
    tcase_add_test(tc, test_ws_frame_close_reason_is_truncated_to_fit);
    tcase_add_test(tc, test_ws_frame_reads_close_codes);
    suite_add_tcase(s, tc);

    tc = tcase_create("unmask");
    tcase_add_test(tc, test_ws_frame_unmasks_at_any_offset_and_length);
    tcase_add_test(tc, test_ws_frame_unmasks_in_pieces);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_ws_frame_maps_errors_to_close_codes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_ws_frame_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
