/*
 * RFC 6455 frame-header codec. The parser consumes the 2..14 bytes of one
 * frame header at a time, however the network splits them, validates the
 * header against the rules of the side that sent it (masking, opcodes,
 * control-frame limits, minimal length encodings, fragmentation order,
 * max_frame_bytes) and reports it; the builder writes whole frames for the
 * few frames wsgate originates (close, ping, pong); unmask XORs payloads in
 * pieces.
 *
 * What it does not do: it never looks at payloads (no UTF-8 validation, no
 * permessage-deflate: RSV bits are reported, never rejected, so extensions
 * negotiated end to end pass through), never buffers a message, does no I/O
 * and never allocates.
 *
 * Key design choice: a fast path that decodes straight from the caller's
 * buffer when the parser is at a frame boundary and the whole header is in
 * the input (the common case on the relay's hot path: no copy), and a slow
 * path that gathers a split header into the parser's 14-byte buffer. Both
 * paths run the same validation functions, so a header split at any point
 * yields exactly the same result as the header read in one piece; the slow
 * path only reports header-level errors earlier, as soon as the bytes that
 * prove them have arrived.
 */
#include <string.h>

#include <wsgate/ws_frame.h>

/* Opcodes defined by RFC 6455 §5.2 (0, 1, 2, 8, 9, 0xA) as a bit set, so
 * the reserved-opcode check is one shift instead of a switch. */
#define VALID_OPCODES                                                                              \
    ((1u << WSG_WS_OP_CONT) | (1u << WSG_WS_OP_TEXT) | (1u << WSG_WS_OP_BINARY) |                  \
     (1u << WSG_WS_OP_CLOSE) | (1u << WSG_WS_OP_PING) | (1u << WSG_WS_OP_PONG))

/* Control frames are the opcodes with the high bit set (RFC 6455 §5.5). */
#define IS_CONTROL(op) (((op)&0x8) != 0)

/* Written as shifts rather than byte loops: compilers turn these into a
 * single load and byte swap, and they do not care about alignment. */
static uint16_t load_be16(const uint8_t *b) {
    return (uint16_t)((unsigned)b[0] << 8 | b[1]);
}

static uint64_t load_be64(const uint8_t *b) {
    return (uint64_t)b[0] << 56 | (uint64_t)b[1] << 48 | (uint64_t)b[2] << 40 |
           (uint64_t)b[3] << 32 | (uint64_t)b[4] << 24 | (uint64_t)b[5] << 16 |
           (uint64_t)b[6] << 8 | (uint64_t)b[7];
}

static void store_be16(uint8_t *b, uint16_t v) {
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}

static void store_be64(uint8_t *b, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* Bytes of extended payload length announced by the second header byte:
 * 7-bit values 126 and 127 select a 16-bit and a 64-bit length (§5.2). */
static unsigned ext_len(uint8_t b1) {
    unsigned len7 = b1 & 0x7Fu;
    return len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
}

static unsigned header_len(uint8_t b1) {
    return 2 + ext_len(b1) + ((b1 & 0x80u) ? 4 : 0);
}

/* What a header is judged by: the direction's settings and its message
 * state. The parser keeps them; wsg_ws_parse_header() gets them passed. */
typedef struct {
    uint64_t max_payload;
    uint8_t from_client;
    uint8_t in_message;
} rules_t;

static rules_t rules_of(const wsg_ws_parser_t *p) {
    return (rules_t){p->max_payload, p->from_client, p->in_message};
}

/* Decodes and validates everything the first two bytes tell. It depends on
 * nothing but those bytes and the rules, and the message state changes only
 * when a header completes, so the slow path may call it again on every read
 * of a split header. */
static int check_head(const rules_t *p, uint8_t b0, uint8_t b1, wsg_ws_frame_t *f) {
    unsigned len7 = b1 & 0x7Fu;

    f->fin = (uint8_t)(b0 >> 7);
    f->rsv = (uint8_t)((b0 >> 4) & 0x7u);
    f->opcode = (uint8_t)(b0 & 0xFu);
    f->masked = (uint8_t)(b1 >> 7);
    memset(f->mask, 0, sizeof(f->mask));
    f->header_len = (uint8_t)header_len(b1);
    f->payload_len = len7 < 126 ? len7 : 0;

    if (!((VALID_OPCODES >> f->opcode) & 1u))
        return WSG_WS_ERR_OPCODE;
    /* §5.1: a client masks every frame, a server never does. */
    if (f->masked != p->from_client)
        return WSG_WS_ERR_MASK;
    if (IS_CONTROL(f->opcode)) {
        /* §5.5: control frames are never fragmented and carry at most 125
         * bytes, which also rules out both extended length forms. Control
         * frames may sit between the fragments of a message (§5.4), so they
         * neither need nor change the message state. */
        if (!f->fin)
            return WSG_WS_ERR_CONTROL_FRAG;
        if (len7 > WSG_WS_MAX_CONTROL_PAYLOAD)
            return WSG_WS_ERR_CONTROL_LEN;
    } else if (f->opcode == WSG_WS_OP_CONT) {
        if (!p->in_message)
            return WSG_WS_ERR_CONTINUATION;
    } else if (p->in_message) {
        /* §5.4: the fragments of one message may not be interleaved with
         * another data message. */
        return WSG_WS_ERR_NOT_CONTINUATION;
    }
    if (len7 < 126 && p->max_payload != 0 && len7 > p->max_payload)
        return WSG_WS_ERR_TOO_BIG;
    return WSG_WS_OK;
}

/* Validates the extended payload length; <hdr> holds at least 2 + ext_len
 * bytes. §5.2: "the minimal number of bytes MUST be used to encode the
 * length", and the most significant bit of the 64-bit form MUST be 0. */
static int check_len(const rules_t *p, const uint8_t *hdr, wsg_ws_frame_t *f) {
    unsigned len7 = hdr[1] & 0x7Fu;
    uint64_t v;

    if (len7 == 126) {
        v = load_be16(hdr + 2);
        f->payload_len = v;
        if (v < 126)
            return WSG_WS_ERR_LENGTH;
    } else if (len7 == 127) {
        v = load_be64(hdr + 2);
        f->payload_len = v;
        if ((v >> 63) != 0 || v <= 0xFFFFu)
            return WSG_WS_ERR_LENGTH;
    } else {
        return WSG_WS_OK;
    }
    if (p->max_payload != 0 && v > p->max_payload)
        return WSG_WS_ERR_TOO_BIG;
    return WSG_WS_OK;
}

/* Decodes and validates a complete header. */
static int decode(const rules_t *r, const uint8_t *hdr, wsg_ws_frame_t *f) {
    int rc = check_head(r, hdr[0], hdr[1], f);
    if (rc != WSG_WS_OK)
        return rc;
    rc = check_len(r, hdr, f);
    if (rc != WSG_WS_OK)
        return rc;
    if (f->masked)
        memcpy(f->mask, hdr + 2 + ext_len(hdr[1]), 4);
    return WSG_WS_OK;
}

/* Decodes a complete header and, when it is valid, advances the message
 * state. Data frames leave a message open exactly when FIN is clear: a
 * first fragment opens it, a final continuation closes it (§5.4). */
static int finish(wsg_ws_parser_t *p, const uint8_t *hdr, wsg_ws_frame_t *f) {
    rules_t r = rules_of(p);
    int rc = decode(&r, hdr, f);
    if (rc == WSG_WS_OK && !IS_CONTROL(f->opcode))
        p->in_message = (uint8_t)!f->fin;
    return rc;
}

/* The slow path: the header is split across reads, or the parser already
 * holds part of it. Copies at most the missing header bytes into p->buf and
 * checks what can be checked so far, so that a bad frame is refused without
 * waiting for the rest of its header. */
static int gather(wsg_ws_parser_t *p, const uint8_t *data, size_t len, size_t *consumed,
                  wsg_ws_frame_t *f) {
    size_t used = 0;
    size_t take;
    unsigned need;
    int rc;

    if (p->have < 2) {
        take = 2u - p->have;
        if (take > len)
            take = len;
        if (take != 0)
            memcpy(p->buf + p->have, data, take);
        p->have = (uint8_t)(p->have + take);
        used = take;
        if (p->have < 2) {
            *consumed = used;
            return WSG_WS_INCOMPLETE;
        }
    }

    rules_t r = rules_of(p);
    rc = check_head(&r, p->buf[0], p->buf[1], f);
    if (rc != WSG_WS_OK) {
        *consumed = used;
        return rc;
    }

    need = header_len(p->buf[1]);
    take = need - p->have;
    if (take > len - used)
        take = len - used;
    if (take != 0)
        memcpy(p->buf + p->have, data + used, take);
    p->have = (uint8_t)(p->have + take);
    used += take;

    if (p->have >= 2 + ext_len(p->buf[1])) {
        rc = check_len(&r, p->buf, f);
        if (rc != WSG_WS_OK) {
            *consumed = used;
            return rc;
        }
    }
    if (p->have < need) {
        *consumed = used; /* == len: everything went into p->buf */
        return WSG_WS_INCOMPLETE;
    }

    rc = finish(p, p->buf, f);
    p->have = 0;
    *consumed = used;
    return rc;
}

void wsg_ws_parser_init(wsg_ws_parser_t *p, int from_client, uint64_t max_payload) {
    memset(p, 0, sizeof(*p));
    p->max_payload = max_payload;
    p->from_client = (uint8_t)(from_client != 0);
}

int wsg_ws_parse(wsg_ws_parser_t *p, const uint8_t *data, size_t len, size_t *consumed,
                 wsg_ws_frame_t *frame) {
    if (p->have == 0 && len >= 2) {
        unsigned need = header_len(data[1]);
        if (len >= need) {
            *consumed = need;
            return finish(p, data, frame);
        }
    }
    return gather(p, data, len, consumed, frame);
}

/* The same checks as gather() makes, in the same order, on bytes that are
 * all in one place: a split header fails as soon as the bytes that prove it
 * are there, and a whole one exactly as wsg_ws_parse() would fail it. */
int wsg_ws_parse_header(const uint8_t *data, size_t len, int from_client, int in_message,
                        uint64_t max_payload, wsg_ws_frame_t *frame) {
    rules_t r = {max_payload, (uint8_t)(from_client != 0), (uint8_t)(in_message != 0)};

    if (len < 2)
        return WSG_WS_INCOMPLETE;
    if (len >= header_len(data[1]))
        return decode(&r, data, frame);
    int rc = check_head(&r, data[0], data[1], frame);
    if (rc != WSG_WS_OK)
        return rc;
    if (len >= 2 + ext_len(data[1]) && (rc = check_len(&r, data, frame)) != WSG_WS_OK)
        return rc;
    return WSG_WS_INCOMPLETE;
}

uint16_t wsg_ws_error_close_code(int err) {
    if (err == WSG_WS_ERR_TOO_BIG)
        return WSG_WS_CLOSE_TOO_BIG;
    if (err == WSG_WS_ERR_CLOSE_UTF8)
        return WSG_WS_CLOSE_INVALID_DATA; /* §8.1 */
    return WSG_WS_CLOSE_PROTOCOL_ERROR;
}

const char *wsg_ws_strerror(int err) {
    switch (err) {
    case WSG_WS_OK:
        return "ok";
    case WSG_WS_INCOMPLETE:
        return "incomplete frame header";
    case WSG_WS_ERR_MASK:
        return "wrong masking for the sender (unmasked client frame or masked server frame)";
    case WSG_WS_ERR_OPCODE:
        return "reserved opcode";
    case WSG_WS_ERR_CONTROL_LEN:
        return "control frame longer than 125 bytes";
    case WSG_WS_ERR_CONTROL_FRAG:
        return "fragmented control frame";
    case WSG_WS_ERR_LENGTH:
        return "invalid payload length encoding";
    case WSG_WS_ERR_TOO_BIG:
        return "frame larger than max_frame_bytes";
    case WSG_WS_ERR_CONTINUATION:
        return "continuation frame without a message";
    case WSG_WS_ERR_NOT_CONTINUATION:
        return "new data frame inside a fragmented message";
    case WSG_WS_ERR_RSV:
        return "RSV bit set that no negotiated extension defines";
    case WSG_WS_ERR_CLOSE_LEN:
        return "close frame with a 1-byte payload";
    case WSG_WS_ERR_CLOSE_CODE:
        return "close frame with a code that may not be sent";
    case WSG_WS_ERR_CLOSE_UTF8:
        return "close reason is not UTF-8";
    default:
        return "unknown frame error";
    }
}

size_t wsg_ws_build(uint8_t *out, size_t cap, uint8_t opcode, const void *payload, size_t len,
                    const uint8_t *mask) {
    size_t hlen;
    uint8_t mbit = mask != NULL ? 0x80 : 0;

    /* Reserved opcodes are allowed on purpose: tests use the builder to
     * craft the bad frames the parser must refuse. */
    if (opcode > 0xF || (IS_CONTROL(opcode) && len > WSG_WS_MAX_CONTROL_PAYLOAD))
        return 0;
    hlen = 2 + (len < 126 ? 0 : len <= 0xFFFFu ? 2 : 8) + (mask != NULL ? 4 : 0);
    if (cap < hlen || len > cap - hlen)
        return 0;

    out[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[1] = (uint8_t)(mbit | len);
    } else if (len <= 0xFFFFu) {
        out[1] = (uint8_t)(mbit | 126);
        store_be16(out + 2, (uint16_t)len);
    } else {
        out[1] = (uint8_t)(mbit | 127);
        store_be64(out + 2, (uint64_t)len);
    }
    if (mask != NULL)
        memcpy(out + hlen - 4, mask, 4);
    if (len != 0) {
        memmove(out + hlen, payload, len);
        if (mask != NULL)
            wsg_ws_unmask(out + hlen, len, mask, 0);
    }
    return hlen + len;
}

size_t wsg_ws_build_close(uint8_t *out, size_t cap, uint16_t code, const char *reason,
                          const uint8_t *mask) {
    uint8_t body[WSG_WS_MAX_CONTROL_PAYLOAD];
    size_t max_reason = sizeof(body) - 2;
    size_t rlen = reason != NULL ? strnlen(reason, max_reason + 1) : 0;

    /* §5.5.1: the reason is UTF-8 and a peer must fail the connection on
     * invalid UTF-8 (§8.1), so never cut a multi-byte character in half:
     * back off over continuation bytes (10xxxxxx) to the start of the
     * character that does not fit. */
    if (rlen > max_reason) {
        rlen = max_reason;
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0u) == 0x80u)
            rlen--;
    }
    store_be16(body, code);
    if (rlen != 0)
        memcpy(body + 2, reason, rlen);
    return wsg_ws_build(out, cap, WSG_WS_OP_CLOSE, body, rlen + 2, mask);
}

/* §5.3: byte i of the payload is XORed with mask[i % 4]. The mask is
 * rotated by <offset> and repeated into a 64-bit word so that the bulk of
 * the payload is processed 8 bytes per step; memcpy keeps the loads and
 * stores free of alignment and aliasing problems and compiles to plain
 * (often vectorised) moves. */
uint64_t wsg_ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset) {
    uint8_t m8[8];
    uint64_t m;
    size_t i = 0;

    for (unsigned k = 0; k < 8; k++)
        m8[k] = mask[(offset + k) & 3u];
    memcpy(&m, m8, sizeof(m));

    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, sizeof(w));
        w ^= m;
        memcpy(data + i, &w, sizeof(w));
    }
    for (; i < len; i++)
        data[i] ^= m8[i & 7u];
    return offset + len;
}

uint16_t wsg_ws_close_code(const uint8_t *payload, size_t len) {
    /* §5.5.1 / §7.1.5: no body means no status code (reported as 1005); a
     * 1-byte body cannot hold one and is a protocol error. */
    if (len == 0)
        return WSG_WS_CLOSE_NO_STATUS;
    if (len == 1)
        return WSG_WS_CLOSE_PROTOCOL_ERROR;
    return load_be16(payload);
}

int wsg_ws_close_code_valid(uint16_t code) {
    if (code >= 3000 && code <= 4999)
        return 1; /* libraries, frameworks and applications (§7.4.2) */
    if (code < 1000 || code > 1014)
        return 0;
    /* 1004 is reserved; 1005 and 1006 only report the absence of a code or
     * of a close frame and "MUST NOT be set as a status code" (§7.4.1). */
    return code != 1004 && code != 1005 && code != 1006;
}

int wsg_ws_check_close(const uint8_t *payload, size_t len) {
    if (len == 0)
        return WSG_WS_OK;
    if (len == 1)
        return WSG_WS_ERR_CLOSE_LEN;
    if (!wsg_ws_close_code_valid(load_be16(payload)))
        return WSG_WS_ERR_CLOSE_CODE;
    if (!wsg_utf8_valid(payload + 2, len - 2))
        return WSG_WS_ERR_CLOSE_UTF8;
    return WSG_WS_OK;
}

/* RFC 3629 §4: the second byte's range depends on the first, which is what
 * rules out overlong forms (E0, F0), surrogates (ED) and code points past
 * U+10FFFF (F4); every further byte is a plain 80..BF continuation. */
int wsg_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;

    while (i < n) {
        uint8_t b = s[i];
        unsigned need;
        uint8_t lo = 0x80, hi = 0xBF;

        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0)
                lo = 0xA0;
            else if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0)
                lo = 0x90;
            else if (b == 0xF4)
                hi = 0x8F;
        } else {
            return 0;
        }
        if (n - i <= need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (unsigned k = 2; k <= need; k++) {
            if ((s[i + k] & 0xC0u) != 0x80u)
                return 0;
        }
        i += need + 1;
    }
    return 1;
}
