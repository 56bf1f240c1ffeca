/*
 * RFC 6455 frame-header codec: pure, incremental, no I/O, no allocation.
 *
 * The relay never buffers whole messages; it only needs to know where each
 * frame starts, how long it is and what kind it is. wsg_ws_parser_t
 * consumes the bytes of one frame header (2..14 bytes) that may arrive split
 * across any number of reads, validates it against the rules of the side it
 * came from, and reports the header. The payload is not touched: the caller
 * skips payload_len bytes and then feeds the next header.
 */
#ifndef WSGATE_WS_FRAME_H
#define WSGATE_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define WSG_WS_MAX_HEADER 14
#define WSG_WS_MAX_CONTROL_PAYLOAD 125

enum {
    WSG_WS_OP_CONT = 0x0,
    WSG_WS_OP_TEXT = 0x1,
    WSG_WS_OP_BINARY = 0x2,
    WSG_WS_OP_CLOSE = 0x8,
    WSG_WS_OP_PING = 0x9,
    WSG_WS_OP_PONG = 0xA,
};

/* Close codes used by wsgate (RFC 6455 §7.4.1). */
enum {
    WSG_WS_CLOSE_NORMAL = 1000,
    WSG_WS_CLOSE_GOING_AWAY = 1001,
    WSG_WS_CLOSE_PROTOCOL_ERROR = 1002,
    WSG_WS_CLOSE_NO_STATUS = 1005,   /* never sent; "close frame without a code" */
    WSG_WS_CLOSE_ABNORMAL = 1006,    /* never sent; "no close frame at all" */
    WSG_WS_CLOSE_INVALID_DATA = 1007, /* e.g. a close reason that is not UTF-8 */
    WSG_WS_CLOSE_POLICY = 1008,
    WSG_WS_CLOSE_TOO_BIG = 1009,
    WSG_WS_CLOSE_INTERNAL_ERROR = 1011,
    WSG_WS_CLOSE_SERVICE_RESTART = 1012,
};

/* Result codes of wsg_ws_parse(). Errors are negative. */
enum {
    WSG_WS_OK = 0,          /* a whole header was parsed into *frame */
    WSG_WS_INCOMPLETE = 1,  /* all input consumed, header not complete yet */
    WSG_WS_ERR_MASK = -1,           /* client frame unmasked or backend frame masked: 1002 */
    WSG_WS_ERR_OPCODE = -2,         /* reserved opcode 3-7, B-F: 1002 */
    WSG_WS_ERR_CONTROL_LEN = -3,    /* control frame payload > 125: 1002 */
    WSG_WS_ERR_CONTROL_FRAG = -4,   /* control frame without FIN: 1002 */
    WSG_WS_ERR_LENGTH = -5,         /* non-minimal length encoding or 64-bit MSB set: 1002 */
    WSG_WS_ERR_TOO_BIG = -6,        /* payload > max_frame_bytes: 1009 */
    WSG_WS_ERR_CONTINUATION = -7,   /* continuation frame with no message open: 1002 */
    WSG_WS_ERR_NOT_CONTINUATION = -8, /* new data frame while a message is open: 1002 */
    /* Reported by the stream walker (ws_stream.h), which knows what the
     * handshake negotiated and sees control payloads whole. */
    WSG_WS_ERR_RSV = -9,            /* RSV bit no negotiated extension defines: 1002 */
    WSG_WS_ERR_CLOSE_LEN = -10,     /* close payload of 1 byte: 1002 */
    WSG_WS_ERR_CLOSE_CODE = -11,    /* close code that may not be sent: 1002 */
    WSG_WS_ERR_CLOSE_UTF8 = -12,    /* close reason that is not UTF-8: 1007 */
};

/* One parsed frame header. */
typedef struct wsg_ws_frame_s {
    uint64_t payload_len;
    uint8_t fin;         /* 0 or 1 */
    uint8_t rsv;         /* RSV1..3 as the 3 bits 0x4,0x2,0x1 (RSV1 = 0x4) */
    uint8_t opcode;      /* WSG_WS_OP_* */
    uint8_t masked;      /* 0 or 1 */
    uint8_t mask[4];     /* valid when masked */
    uint8_t header_len;  /* 2..14: bytes the header occupies on the wire */
} wsg_ws_frame_t;

/* Incremental parser for the frames of ONE direction of ONE connection.
 * Embed it; initialise with wsg_ws_parser_init(). All fields are private. */
typedef struct wsg_ws_parser_s {
    uint64_t max_payload;  /* max_frame_bytes; 0 = no limit */
    uint8_t buf[WSG_WS_MAX_HEADER]; /* header bytes gathered across reads */
    uint8_t have;          /* bytes in buf */
    uint8_t from_client;   /* 1: frames must be masked; 0: must not be */
    uint8_t in_message;    /* a fragmented data message is open */
} wsg_ws_parser_t;

/* Prepares <p> for the frames sent by a client (<from_client> = 1: every
 * frame must be masked) or by a server (0: no frame may be masked), with
 * <max_payload> bytes the largest accepted payload (0 = unlimited). */
void wsg_ws_parser_init(wsg_ws_parser_t *p, int from_client, uint64_t max_payload);

/* Consumes header bytes from <data>[0..len). On WSG_WS_OK, *frame holds the
 * header and *consumed the number of bytes of <data> that belonged to it (the
 * payload starts at data + *consumed). On WSG_WS_INCOMPLETE, *consumed == len
 * and the bytes are kept inside <p>. On an error, *frame is filled as far as
 * it was decoded and the stream must be closed (wsg_ws_error_close_code()).
 * <len> may be 0. The parser tracks message fragmentation, so every header
 * of the direction must go through it in order. */
int wsg_ws_parse(wsg_ws_parser_t *p, const uint8_t *data, size_t len, size_t *consumed,
                 wsg_ws_frame_t *frame);

/* The stateless form of wsg_ws_parse(), for a caller that keeps the bytes
 * of a split header itself and presents them again, from the header's first
 * byte, with the next read (ws_stream.c): judges the header at
 * <data>[0..len) by the rules of its direction (<from_client>, the largest
 * payload <max_payload>, 0 = unlimited) and the message state
 * <in_message> (a fragmented data message is open). Returns WSG_WS_OK with
 * the header in *frame (it is frame->header_len bytes long), WSG_WS_INCOMPLETE
 * when more bytes are needed and those present are valid so far, or the
 * error as soon as the bytes present prove it (as wsg_ws_parse() would
 * report it at the same point). Tracks nothing: after a valid data frame
 * header the caller's message is open exactly when frame->fin is 0. */
int wsg_ws_parse_header(const uint8_t *data, size_t len, int from_client, int in_message,
                        uint64_t max_payload, wsg_ws_frame_t *frame);

/* True while the parser holds part of a header (not at a frame boundary). */
static inline int wsg_ws_parser_mid_header(const wsg_ws_parser_t *p) { return p->have != 0; }

/* The close code for a parse error: 1009 for WSG_WS_ERR_TOO_BIG, 1007 for
 * WSG_WS_ERR_CLOSE_UTF8, else 1002. */
uint16_t wsg_ws_error_close_code(int err);

/* A short human-readable reason for a parse error ("unmasked client frame"). */
const char *wsg_ws_strerror(int err);

/* Writes one complete frame (FIN set) into <out>: header, then <payload>
 * (masked with <mask> when <mask> is non-NULL). Returns bytes written, or 0
 * if <cap> is too small or <len> exceeds 125 for a control opcode. */
size_t wsg_ws_build(uint8_t *out, size_t cap, uint8_t opcode, const void *payload, size_t len,
                    const uint8_t *mask);

/* Writes a close frame carrying <code> and <reason> (truncated to fit the
 * 125-byte control limit). Same return and masking rules as wsg_ws_build. */
size_t wsg_ws_build_close(uint8_t *out, size_t cap, uint16_t code, const char *reason,
                          const uint8_t *mask);

/* XORs <len> bytes of <data> with <mask>, starting at mask position
 * <offset> % 4 (for payloads unmasked in pieces). Returns offset + len. */
uint64_t wsg_ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset);

/* The close code carried by an (unmasked) close payload: 1005 when the
 * payload is empty, 1002 when it is 1 byte long (malformed), else the code. */
uint16_t wsg_ws_close_code(const uint8_t *payload, size_t len);

/* Whether an endpoint may put <code> in a close frame (RFC 6455 §7.4.1,
 * §7.4.2 and the IANA registry): 1000-1003, 1007-1014, 3000-4999. 1005,
 * 1006 and 1015 are reserved for reporting and never appear on the wire. */
int wsg_ws_close_code_valid(uint16_t code);

/* Validates an unmasked close payload (RFC 6455 §5.5.1): empty, or a valid
 * code followed by a UTF-8 reason. Returns WSG_WS_OK or
 * WSG_WS_ERR_CLOSE_LEN / _CODE / _UTF8. */
int wsg_ws_check_close(const uint8_t *payload, size_t len);

/* Whether <s>[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
int wsg_utf8_valid(const uint8_t *s, size_t n);

#endif /* WSGATE_WS_FRAME_H */
