/*
 * The frame walk of one relayed direction (see ws_stream.h).
 *
 * The walk is a small state machine over one buffer at a time: a phase
 * (header, data payload, control payload, closed) and a cursor. A control
 * frame is never cut into segments: if its payload is not all there, the
 * whole unit from its first header byte is kept for the next buffer, and the
 * walk of that buffer resumes after the kept bytes with the phase unchanged,
 * so the frame is judged once, whole, however the reads fell.
 */
#include "wsgate/ws_stream.h"

#include <string.h>

enum { PH_HEADER, PH_DATA, PH_CONTROL, PH_CLOSED };

#define AGAIN 2 /* a control header was parsed: its payload may be in this buffer */

void wsg_ws_stream_init(wsg_ws_stream_t *s, int from_client, uint64_t max_payload,
                        uint8_t rsv_first, uint8_t rsv_other) {
    memset(s, 0, sizeof(*s));
    wsg_ws_parser_init(&s->parser, from_client, max_payload);
    s->phase = PH_HEADER;
    s->rsv_first = rsv_first & WSG_WS_RSV_ALL;
    s->rsv_other = rsv_other & WSG_WS_RSV_ALL;
}

void wsg_ws_stream_begin(wsg_ws_stream_t *s) {
    s->pos = s->held;
    s->unit = 0; /* what was kept is the start of the unit in progress */
    s->held = 0;
}

int wsg_ws_stream_closed(const wsg_ws_stream_t *s) { return s->phase == PH_CLOSED; }

int wsg_ws_stream_mid_data(const wsg_ws_stream_t *s) { return s->phase == PH_DATA; }

static int fail(wsg_ws_stream_t *s, int err) {
    s->err = err;
    return err;
}

/* The buffer is done: keep the unit in progress, if any. */
static int end(wsg_ws_stream_t *s, size_t len, wsg_ws_seg_t *seg) {
    size_t keep = len;

    if (s->phase == PH_CONTROL || (s->phase == PH_HEADER && wsg_ws_parser_mid_header(&s->parser)))
        keep = s->unit;
    s->held = (uint32_t)(len - keep);
    s->pos = len;
    seg->start = keep;
    seg->end = len;
    return 0;
}

static void data_seg(wsg_ws_stream_t *s, size_t start, size_t len, int begin, wsg_ws_seg_t *seg) {
    size_t take = len - s->pos;

    if (take > s->payload_left)
        take = (size_t)s->payload_left;
    s->pos += take;
    s->payload_left -= take;
    seg->kind = WSG_WS_SEG_DATA;
    seg->start = start;
    seg->end = s->pos;
    seg->frame_begin = (uint8_t)begin;
    seg->frame_end = s->payload_left == 0;
    seg->opcode = s->opcode;
    s->phase = s->payload_left > 0 ? PH_DATA : PH_HEADER;
}

/* The control frame at buf[unit..) is whole: unmask, judge, report. */
static int control_seg(wsg_ws_stream_t *s, const uint8_t *buf, wsg_ws_seg_t *seg) {
    size_t plen = s->pos - s->unit - s->ctl_hlen;

    memcpy(seg->payload, buf + s->unit + s->ctl_hlen, plen);
    if (s->ctl_masked)
        wsg_ws_unmask(seg->payload, plen, s->ctl_mask, 0);
    seg->kind = WSG_WS_SEG_CONTROL;
    seg->start = s->unit;
    seg->end = s->pos;
    seg->frame_begin = seg->frame_end = 1;
    seg->opcode = s->opcode;
    seg->plen = (uint8_t)plen;
    s->phase = PH_HEADER;
    if (s->opcode == WSG_WS_OP_CLOSE) {
        int r = wsg_ws_check_close(seg->payload, plen);
        if (r != WSG_WS_OK)
            return fail(s, r);
        s->phase = PH_CLOSED;
    }
    return 1;
}

static int header(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg) {
    wsg_ws_frame_t f;
    size_t used;

    if (!wsg_ws_parser_mid_header(&s->parser))
        s->unit = s->pos;
    int r = wsg_ws_parse(&s->parser, buf + s->pos, len - s->pos, &used, &f);
    if (r == WSG_WS_INCOMPLETE)
        return end(s, len, seg);
    if (r < 0)
        return fail(s, r);
    s->pos += used;
    int first = !(f.opcode & 0x8) && f.opcode != WSG_WS_OP_CONT;
    if (f.rsv & ~(first ? s->rsv_first : s->rsv_other))
        return fail(s, WSG_WS_ERR_RSV);
    s->payload_left = f.payload_len;
    s->opcode = f.opcode;
    if (f.opcode & 0x8) {
        s->phase = PH_CONTROL;
        s->ctl_hlen = f.header_len;
        s->ctl_masked = f.masked;
        memcpy(s->ctl_mask, f.mask, 4);
        return AGAIN;
    }
    data_seg(s, s->unit, len, 1, seg);
    return 1;
}

int wsg_ws_stream_next(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg) {
    if (s->err)
        return s->err;
    for (;;) {
        switch (s->phase) {
        case PH_CLOSED:
            if (s->pos >= len)
                return end(s, len, seg);
            seg->kind = WSG_WS_SEG_DISCARD;
            seg->start = s->pos;
            seg->end = s->pos = len;
            seg->frame_begin = seg->frame_end = 0;
            return 1;
        case PH_DATA:
            if (s->pos >= len)
                return end(s, len, seg);
            data_seg(s, s->pos, len, 0, seg);
            return 1;
        case PH_CONTROL:
            if (len - s->pos < s->payload_left) {
                s->payload_left -= len - s->pos; /* kept; judged whole next time */
                return end(s, len, seg);
            }
            s->pos += (size_t)s->payload_left;
            s->payload_left = 0;
            return control_seg(s, buf, seg);
        default: {
            if (s->pos >= len)
                return end(s, len, seg);
            int r = header(s, buf, len, seg);
            if (r != AGAIN)
                return r;
            break;
        }
        }
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
