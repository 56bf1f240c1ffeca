/*
 * The frame walk of one direction of a relayed WebSocket: pure, no I/O, no
 * allocation.
 *
 * The relay receives a byte stream in reads of any size and must forward it
 * frame-aligned: data payloads stream through as they arrive, while a frame
 * header or a whole control frame is judged only once it is complete. The
 * walker turns each read buffer into a sequence of segments that say what
 * every byte is, so the relay never reasons about split points itself:
 *
 *   DATA     [start,end): bytes of one data frame; frame_begin when the range
 *            starts with its header (the header is always whole), frame_end
 *            when it ends the frame's payload.
 *   CONTROL  [start,end): one whole control frame, header included, with
 *            its payload unmasked in seg.payload. Close payloads are
 *            validated (RFC 6455 §5.5.1, §7.4); a bad one is an error, not a
 *            segment.
 *   DISCARD  [start,end): bytes after this side's close frame (§5.5.1:
 *            nothing follows a close); never forwarded.
 *
 * When a buffer ends inside a header or inside a control frame, the walk
 * ends with seg.start < len: the caller keeps buf[start..len) (at most
 * 14 + 125 bytes) and puts it, unchanged, at the front of the next buffer,
 * whose walk starts over at those bytes: the header is parsed again from its
 * first byte (which has no side effect until it is whole) and a control
 * frame is judged once it is all there. The walker keeps no copy of them:
 * its state is what must survive between reads and nothing else, since a
 * relay holds one per direction of every idle connection.
 */
#ifndef WSGATE_WS_STREAM_H
#define WSGATE_WS_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "wsgate/ws_frame.h"

enum { WSG_WS_SEG_DATA = 1, WSG_WS_SEG_CONTROL, WSG_WS_SEG_DISCARD };

/* RSV bits as in wsg_ws_frame_t.rsv (RSV1 = 0x4). */
#define WSG_WS_RSV_ALL 0x7

typedef struct wsg_ws_seg_s {
    size_t start, end;
    uint8_t kind;         /* WSG_WS_SEG_* */
    uint8_t frame_begin;  /* DATA: the range starts with the frame's header */
    uint8_t frame_end;    /* DATA: the range ends the frame's payload */
    uint8_t opcode;       /* of the frame the range belongs to */
    uint8_t plen;         /* CONTROL: payload length */
    uint8_t payload[WSG_WS_MAX_CONTROL_PAYLOAD]; /* CONTROL: unmasked payload */
} wsg_ws_seg_t;

typedef struct wsg_ws_stream_s {
    uint64_t payload_left;  /* of the current data frame, not yet walked */
    uint64_t max_payload;   /* the largest payload accepted (0: no limit) */
    uint32_t pos;           /* cursor in the current buffer (which is at most
                               UINT32_MAX bytes long) */
    uint8_t held;           /* bytes the next buffer starts with (at most 14 + 125) */
    int8_t err;             /* once failed, every later walk returns it */
    unsigned phase : 2;     /* private: header, data payload, closed */
    unsigned opcode : 4;    /* of the current frame */
    unsigned from_client : 1; /* its frames must be masked (else must not be) */
    unsigned in_message : 1;  /* a fragmented data message is open */
    unsigned rsv_first : 3; /* RSV bits allowed on the first frame of a data message */
    unsigned rsv_other : 3; /* ... on continuations and control frames */
} wsg_ws_stream_t;

/* Prepares the walk of the frames one side sends (<from_client>: they must
 * be masked), with <max_payload> the largest payload (0 = no limit) and the
 * RSV bits the negotiated extensions define (wsg_ws_rsv_add_extensions). */
void wsg_ws_stream_init(wsg_ws_stream_t *s, int from_client, uint64_t max_payload,
                        uint8_t rsv_first, uint8_t rsv_other);

/* Starts the walk of a new buffer, whose first s->held bytes are the ones the
 * previous walk asked to keep. */
void wsg_ws_stream_begin(wsg_ws_stream_t *s);

/* Walks buf[0..len), len <= UINT32_MAX. Returns 1 with the next segment in *seg; 0 when the
 * buffer is done, with seg->start the offset of the bytes to keep (len when
 * none); or a negative WSG_WS_ERR_* when the stream is broken (everything
 * before the error was returned as segments). */
int wsg_ws_stream_next(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg);

/* True when the walk has reached the end of buf[0..len) at a segment's end,
 * so that the next wsg_ws_stream_next() would only return 0 with nothing to
 * keep (seg->start == len) and change nothing: the caller may stop without
 * that call. The common case, a read that ends with a message. */
static inline int wsg_ws_stream_done(const wsg_ws_stream_t *s, size_t len) {
    return !s->err && s->pos >= len;
}

/* Walks, from where wsg_ws_stream_next() would go on, the longest run of
 * whole unfragmented data messages of one frame each (text or binary,
 * payload of at most 125 bytes and within max_payload, header and payload
 * all in buf[0..len)), and returns how many: the bulk of small-message
 * traffic, walked in one call instead of one segment each. With k > 0 they
 * are one DATA segment in *seg (frame_begin and frame_end set, opcode the
 * last frame's) and the walk goes on after them; 0 (nothing walked, *seg
 * untouched) when the next unit is anything else, which
 * wsg_ws_stream_next() then walks as usual. Mixing the two calls in any
 * order walks a stream exactly as wsg_ws_stream_next() alone does. */
size_t wsg_ws_stream_run(wsg_ws_stream_t *s, const uint8_t *buf, size_t len, wsg_ws_seg_t *seg);

/* True once this side's close frame has been walked. */
int wsg_ws_stream_closed(const wsg_ws_stream_t *s);

/* The error that broke the stream, or 0. */
static inline int wsg_ws_stream_error(const wsg_ws_stream_t *s) { return s->err; }

/* True while a data frame's payload is still to come (the stream is not at a
 * frame boundary). */
int wsg_ws_stream_mid_data(const wsg_ws_stream_t *s);

/* Adds to *rsv_first / *rsv_other the RSV bits the extensions of one
 * Sec-WebSocket-Extensions line of a 101 (<v>[0..n)) define; start both at
 * 0 and add every line. permessage-deflate allows RSV1 on the first frame of
 * a data message only (RFC 7692 §6); an extension wsgate does not know may
 * use any bit on any frame, so nothing is enforced then. */
void wsg_ws_rsv_add_extensions(const char *v, size_t n, uint8_t *rsv_first, uint8_t *rsv_other);

#endif /* WSGATE_WS_STREAM_H */
