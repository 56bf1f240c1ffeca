/*
 * The frame walk of one relayed direction (see ws_stream.h).
 *
 * The walk is a small state machine over one buffer at a time: a phase
 * (header, data payload, closed) and a cursor. A header and a control frame
 * are units: one that is not all in the buffer is kept, from its first byte,
 * for the next buffer, whose walk starts over at it with the phase
 * unchanged. Parsing a header again is cheap (at most 14 bytes, and a
 * header changes no state until it is whole and is a data frame's) and
 * means nothing of a split unit lives in the walker: a control frame is
 * judged once, whole, however the reads fell.
 */
#include "wsgate/ws_stream.h"

#include <string.h>

enum { PH_HEADER, PH_DATA, PH_CLOSED };

void wsg_ws_stream_init(wsg_ws_stream_t *s, int from_client, uint64_t max_payload,
                        uint8_t rsv_first, uint8_t rsv_other) {
    memset(s, 0, sizeof(*s));
    s->max_payload = max_payload;
    s->from_client = from_client != 0;
    s->phase = PH_HEADER;
    s->rsv_first = rsv_first & WSG_WS_RSV_ALL;
    s->rsv_other = rsv_other & WSG_WS_RSV_ALL;
}

void wsg_ws_stream_begin(wsg_ws_stream_t *s) {
    s->pos = 0; /* what was kept is the start of the unit in progress */
    s->held = 0;
}

int wsg_ws_stream_closed(const wsg_ws_stream_t *s) { return s->phase == PH_CLOSED; }

int wsg_ws_stream_mid_data(const wsg_ws_stream_t *s) { return s->phase == PH_DATA; }

static int fail(wsg_ws_stream_t *s, int err) {
    s->err = (int8_t)err;
    return err;
}

/* The buffer is done: buf[keep..len) is the unit in progress, if any. */
static int end(wsg_ws_stream_t *s, size_t len, size_t keep, wsg_ws_seg_t *seg) {
    s->held = (uint8_t)(len - keep);
    s->pos = (uint32_t)len;
    seg->start = keep;
    seg->end = len;
    return 0;
}

static void data_seg(wsg_ws_stream_t *s, size_t start, size_t len, int begin, wsg_ws_seg_t *seg) {
    size_t take = len - s->pos;

    if (take > s->payload_left)
        take = (size_t)s->payload_left;
    s->pos += (uint32_t)take;
    s->payload_left -= take;
    seg->kind = WSG_WS_SEG_DATA;
    seg->start = start;
    seg->end = s->pos;
    seg->frame_begin = (uint8_t)begin;
    seg->frame_end = s->payload_left == 0;
    seg->opcode = (uint8_t)s->opcode;
    /* The fields are bits: a write is a read-modify-write, and in a run of
     * whole small frames the phase stays what it is. */
    unsigned phase = s->payload_left > 0 ? PH_DATA : PH_HEADER;
    if (s->phase != phase)
        s->phase = phase;
}

/* The control frame <f> at buf[start..s->pos) is whole: unmask, judge,
 * report. */
static int control_seg(wsg_ws_stream_t *s, const uint8_t *buf, size_t start,
                       const wsg_ws_frame_t *f, wsg_ws_seg_t *seg) {
    size_t plen = (size_t)f->payload_len;

    memcpy(seg->payload, buf + start + f->header_len, plen);
    if (f->masked)
        wsg_ws_unmask(seg->payload, plen, f->mask, 0);
    seg->kind = WSG_WS_SEG_CONTROL;
    seg->start = start;
    seg->end = s->pos;
    seg->frame_begin = seg->frame_end = 1;
    seg->opcode = f->opcode;
    seg->plen = (uint8_t)plen;
    s->phase = PH_HEADER;
    if (f->opcode == WSG_WS_OP_CLOSE) {
        int r = wsg_ws_check_close(seg->payload, plen);
        if (r != WSG_WS_OK)
            return fail(s, r);
        s->phase = PH_CLOSED;
    }
    return 1;
}

/* The frame nearly every message is: the first (or only) frame of a text
 * or binary message, a 7-bit length, masked as its sender must, no RSV bit
 * but those allowed, header whole in the buffer. For it the checks of
 * wsg_ws_parse_header() come down to these tests, so it is walked here
 * without decoding a frame struct; any other frame returns 0 and takes the
 * general path, which decides it alike. */
static int simple_frame(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg) {
    size_t start = s->pos;
    if (len - start < 2 || s->in_message)
        return 0;
    unsigned b0 = buf[start], b1 = buf[start + 1], len7 = b1 & 0x7fu, op = b0 & 0xfu;
    unsigned hlen = 2u + ((b1 >> 7) ? 4u : 0u);
    if ((op != WSG_WS_OP_TEXT && op != WSG_WS_OP_BINARY) || len7 >= 126 ||
        (b1 >> 7) != s->from_client || ((b0 >> 4) & 0x7u & ~s->rsv_first) != 0 ||
        len - start < hlen || (s->max_payload != 0 && len7 > s->max_payload))
        return 0;
    if (!(b0 >> 7))
        s->in_message = 1;
    s->pos = (uint32_t)(start + hlen);
    s->payload_left = len7;
    if (s->opcode != op)
        s->opcode = op;
    data_seg(s, start, len, 1, seg);
    return 1;
}

/* simple_frame()'s conditions, narrowed to a message of one frame (FIN set,
 * no fragmented message open) whose payload is in the buffer too: each
 * frame then costs three compares, and the walker's state is written once,
 * when the run ends. */
size_t wsg_ws_stream_run(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg) {
    if (s->phase != PH_HEADER || s->in_message || s->err || s->pos >= len)
        return 0;
    size_t start = s->pos, pos = start, frames = 0;
    size_t hlen = s->from_client ? 6u : 2u;
    /* b0 with the allowed RSV bits cleared must be FIN + text or binary:
     * 0x81 or 0x82. b1 less the mask bit this side must set is the 7-bit
     * length, which must be within the limit (a wrong mask bit puts it
     * out of range either way). */
    unsigned b0_keep = 0xffu & ~((unsigned)s->rsv_first << 4);
    unsigned b1_mask = s->from_client ? 0x80u : 0u;
    unsigned max7 = s->max_payload != 0 && s->max_payload < 125 ? (unsigned)s->max_payload : 125u;
    unsigned op = s->opcode;
    while (len - pos >= hlen) {
        unsigned t0 = (buf[pos] & b0_keep) - 0x81u, len7 = buf[pos + 1] - b1_mask;
        if (t0 > 1u || len7 > max7 || len - pos - hlen < len7)
            break;
        pos += hlen + len7;
        op = t0 + 1u;
        frames++;
    }
    if (frames == 0)
        return 0;
    s->pos = (uint32_t)pos;
    if (s->opcode != op)
        s->opcode = op;
    seg->kind = WSG_WS_SEG_DATA;
    seg->start = start;
    seg->end = pos;
    seg->frame_begin = seg->frame_end = 1;
    seg->opcode = (uint8_t)op;
    return frames;
}
/* A unit starts at s->pos: a data frame's header, or a control frame. */
static int header(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg) {
    size_t start = s->pos;
    wsg_ws_frame_t f;

    if (simple_frame(s, buf, len, seg))
        return 1;

    int r = wsg_ws_parse_header(buf + start, len - start, s->from_client, s->in_message,
                                s->max_payload, &f);
    if (r == WSG_WS_INCOMPLETE)
        return end(s, len, start, seg);
    if (r < 0)
        return fail(s, r);
    int first = !(f.opcode & 0x8) && f.opcode != WSG_WS_OP_CONT;
    if (f.rsv & ~(first ? s->rsv_first : s->rsv_other))
        return fail(s, WSG_WS_ERR_RSV);
    if (f.opcode & 0x8) {
        size_t whole = f.header_len + (size_t)f.payload_len; /* payload <= 125 */
        if (len - start < whole)
            return end(s, len, start, seg); /* kept; judged whole next time */
        s->pos = (uint32_t)(start + whole);
        return control_seg(s, buf, start, &f, seg);
    }
    s->in_message = !f.fin;
    s->pos = (uint32_t)(start + f.header_len);
    s->payload_left = f.payload_len;
    s->opcode = f.opcode;
    data_seg(s, start, len, 1, seg);
    return 1;
}

int wsg_ws_stream_next(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg) {
    if (s->err)
        return s->err;
    if (s->pos >= len)
        return end(s, len, len, seg);
    switch (s->phase) {
    case PH_CLOSED:
        seg->kind = WSG_WS_SEG_DISCARD;
        seg->start = s->pos;
        seg->end = len;
        s->pos = (uint32_t)len;
        seg->frame_begin = seg->frame_end = 0;
        return 1;
    case PH_DATA:
        data_seg(s, s->pos, len, 0, seg);
        return 1;
    default:
        return header(s, buf, len, seg);
    }
}

/* ---- Sec-WebSocket-Extensions ------------------------------------------------ */

static int is_ows(char ch) { return ch == ' ' || ch == '\t'; }

static int name_is(const char *a, size_t n, const char *lit) {
    size_t k = strlen(lit);
    if (n != k)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = a[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != lit[i])
            return 0;
    }
    return 1;
}

/* RFC 6455 §9.1: extension = name *( ";" param ), comma-separated; a
 * parameter value may be a quoted string, which can hold a comma. */
void wsg_ws_rsv_add_extensions(const char *v, size_t n, uint8_t *rsv_first, uint8_t *rsv_other) {
    size_t i = 0;

    while (v != NULL && i < n) {
        while (i < n && (is_ows(v[i]) || v[i] == ','))
            i++;
        size_t name = i;
        while (i < n && v[i] != ';' && v[i] != ',' && !is_ows(v[i]))
            i++;
        size_t name_len = i - name;
        int quoted = 0;
        while (i < n && (quoted || v[i] != ',')) {
            if (v[i] == '"')
                quoted = !quoted;
            else if (quoted && v[i] == '\\' && i + 1 < n)
                i++;
            i++;
        }
        if (name_len == 0)
            continue;
        if (name_is(v + name, name_len, "permessage-deflate")) {
            *rsv_first |= 0x4;
        } else {
            *rsv_first = WSG_WS_RSV_ALL;
            *rsv_other = WSG_WS_RSV_ALL;
        }
    }
}
