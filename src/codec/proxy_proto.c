/*
 * PROXY protocol v1 and v2 header parser (HAProxy's "The PROXY protocol",
 * versions 1 and 2, sections 2.1 and 2.2).
 *
 * It answers one question about the bytes at the start of a connection:
 * is there a complete, valid PROXY header, how long is it and which source
 * address does it carry. It does no I/O, allocates nothing and keeps no
 * state: the caller re-parses its accumulated buffer after every read,
 * which costs nothing measurable for headers of at most 107 (v1) or 2048
 * (v2, wsgate's bound) bytes and leaves no partial state to get wrong.
 *
 * It deliberately does not interpret v2 TLVs (ALPN, authority, SSL info,
 * unique id): they are skipped by length. Rejection is eager: every byte
 * available is checked as soon as it is seen, so a client that speaks
 * HTTP or TLS straight away fails on its first byte instead of holding a
 * connection until the handshake deadline.
 */
#include <wsgate/proxy_proto.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_prefix[] = "PROXY ";

static wsg_proxy_status_t bad(wsg_proxy_result_t *out, const char *why) {
    out->reason = why;
    return WSG_PROXY_MALFORMED;
}

/* ---- version 1: "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n" ---------------- */

/* Copies the next space-terminated token of line[*pos..len) into <tok>
 * (NUL-terminated). Tokens are separated by exactly one space (§2.1:
 * "a single space"). Returns its length, or -1 if it is empty or longer
 * than cap - 1. */
static int next_token(const char *line, size_t len, size_t *pos, char *tok, size_t cap) {
    size_t start = *pos, i = start;
    while (i < len && line[i] != ' ')
        i++;
    if (i == start || i - start >= cap)
        return -1;
    memcpy(tok, line + start, i - start);
    tok[i - start] = '\0';
    *pos = i;
    return (int)(i - start);
}

/* A port: 1 to 5 decimal digits, 0..65535. */
static int parse_port(const char *s, uint16_t *port) {
    unsigned v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

static int fill_addr(int family, const char *ip, uint16_t port, struct sockaddr_storage *ss,
                     socklen_t *sslen) {
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)(void *)ss;
        if (inet_pton(AF_INET, ip, &in->sin_addr) != 1)
            return -1;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        *sslen = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)ss;
        if (inet_pton(AF_INET6, ip, &in6->sin6_addr) != 1)
            return -1;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *sslen = sizeof(*in6);
    }
    return 0;
}

/* <line> is the header without its CRLF, starting with "PROXY ". */
static wsg_proxy_status_t parse_v1_line(const char *line, size_t len, wsg_proxy_result_t *out) {
    char proto[8], src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], sport[8], dport[8];
    size_t pos = sizeof(v1_prefix) - 1;
    uint16_t sp, dp;
    int family;

    /* "UNKNOWN" may be followed by anything up to the CRLF, which the
     * receiver must ignore (§2.1). */
    if (len - pos >= 7 && memcmp(line + pos, "UNKNOWN", 7) == 0 &&
        (len - pos == 7 || line[pos + 7] == ' ')) {
        out->local = 1;
        return WSG_PROXY_DONE;
    }
    if (next_token(line, len, &pos, proto, sizeof(proto)) < 0)
        return bad(out, "v1: missing protocol");
    if (strcmp(proto, "TCP4") == 0)
        family = AF_INET;
    else if (strcmp(proto, "TCP6") == 0)
        family = AF_INET6;
    else
        return bad(out, "v1: protocol is not TCP4, TCP6 or UNKNOWN");

    char *toks[4] = {src, dst, sport, dport};
    size_t caps[4] = {sizeof(src), sizeof(dst), sizeof(sport), sizeof(dport)};
    for (int i = 0; i < 4; i++) {
        if (pos >= len || line[pos] != ' ')
            return bad(out, "v1: expected source, destination, source port, destination port");
        pos++;
        if (next_token(line, len, &pos, toks[i], caps[i]) < 0)
            return bad(out, i < 2 ? "v1: bad address" : "v1: bad port");
    }
    if (pos != len)
        return bad(out, "v1: unexpected bytes after the destination port");
    if (parse_port(sport, &sp) < 0 || parse_port(dport, &dp) < 0)
        return bad(out, "v1: bad port");
    if (fill_addr(family, src, sp, &out->src, &out->src_len) < 0 ||
        fill_addr(family, dst, dp, &out->dst, &out->dst_len) < 0)
        return bad(out, family == AF_INET ? "v1: bad IPv4 address" : "v1: bad IPv6 address");
    return WSG_PROXY_DONE;
}

static wsg_proxy_status_t parse_v1(const char *d, size_t len, size_t *consumed,
                                   wsg_proxy_result_t *out) {
    size_t plen = sizeof(v1_prefix) - 1;
    size_t n = len < plen ? len : plen;

    if (memcmp(d, v1_prefix, n) != 0)
        return bad(out, "not a PROXY protocol header");
    /* Scan for the CRLF within the 107-byte bound, checking each byte so a
     * binary or bare-LF stream is refused as soon as it shows. */
    for (size_t i = plen; i < len && i < WSG_PROXY_V1_MAX; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '\r') {
            if (i + 1 >= WSG_PROXY_V1_MAX)
                return bad(out, "v1: header longer than 107 bytes");
            if (i + 1 >= len)
                return WSG_PROXY_NEED_MORE;
            if (d[i + 1] != '\n')
                return bad(out, "v1: CR not followed by LF");
            wsg_proxy_status_t r = parse_v1_line(d, i, out);
            if (r == WSG_PROXY_DONE) {
                out->version = 1;
                *consumed = i + 2;
            }
            return r;
        }
        if (c == '\n')
            return bad(out, "v1: bare LF");
        if (c < 0x20 || c > 0x7e)
            return bad(out, "v1: non-printable byte in the header");
    }
    if (len >= WSG_PROXY_V1_MAX)
        return bad(out, "v1: header longer than 107 bytes");
    return WSG_PROXY_NEED_MORE;
}

/* ---- version 2: binary ---------------------------------------------------- */

/* Byte 13: protocol version (high nibble, must be 2) and command (low
 * nibble: 0 LOCAL, 1 PROXY). Byte 14: address family and transport; §2.2
 * lists the only valid combinations and says others must be rejected. */
static wsg_proxy_status_t check_v2_fixed(const unsigned char *d, size_t len,
                                         wsg_proxy_result_t *out) {
    if (len > 12) {
        if ((d[12] >> 4) != 2)
            return bad(out, "v2: unsupported protocol version");
        if ((d[12] & 0x0f) > 1)
            return bad(out, "v2: unknown command");
    }
    if (len > 13) {
        switch (d[13]) {
        case 0x00: /* UNSPEC */
        case 0x11: /* TCP over IPv4 */
        case 0x12: /* UDP over IPv4 */
        case 0x21: /* TCP over IPv6 */
        case 0x22: /* UDP over IPv6 */
        case 0x31: /* UNIX stream */
        case 0x32: /* UNIX datagram */
            break;
        default:
            return bad(out, "v2: invalid address family or transport");
        }
    }
    return WSG_PROXY_NEED_MORE;
}

static wsg_proxy_status_t parse_v2(const unsigned char *d, size_t len, size_t *consumed,
                                   wsg_proxy_result_t *out) {
    size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);

    if (memcmp(d, v2_sig, n) != 0)
        return bad(out, "not a PROXY protocol header");
    if (check_v2_fixed(d, len, out) == WSG_PROXY_MALFORMED)
        return WSG_PROXY_MALFORMED;
    if (len < 16)
        return WSG_PROXY_NEED_MORE;

    size_t body = ((size_t)d[14] << 8) | d[15];
    size_t total = 16 + body;
    if (total > WSG_PROXY_V2_MAX)
        return bad(out, "v2: header longer than wsgate accepts (2048 bytes)");
    /* The address block must fit in the announced length whatever the
     * command; checked before waiting for the body so a short length fails
     * at once. */
    size_t need = 0;
    switch (d[13] >> 4) {
    case 1:
        need = 12; /* 2 x 4-byte address, 2 x 2-byte port */
        break;
    case 2:
        need = 36; /* 2 x 16-byte address, 2 x 2-byte port */
        break;
    case 3:
        need = 216; /* 2 x 108-byte path */
        break;
    default:
        break;
    }
    if ((d[12] & 0x0f) == 1 && body < need)
        return bad(out, "v2: address block shorter than its family needs");
    if (len < total)
        return WSG_PROXY_NEED_MORE;

    out->version = 2;
    *consumed = total;
    /* LOCAL: the proxy's own connection (health check); UNSPEC, UNIX and
     * datagram transports carry no address a TCP client could have. The
     * bytes past the address block are TLVs, skipped whole. */
    if ((d[12] & 0x0f) == 0 || (d[13] != 0x11 && d[13] != 0x21)) {
        out->local = 1;
        return WSG_PROXY_DONE;
    }
    const unsigned char *a = d + 16;
    if (d[13] == 0x11) {
        struct sockaddr_in *s = (struct sockaddr_in *)(void *)&out->src;
        struct sockaddr_in *t = (struct sockaddr_in *)(void *)&out->dst;
        s->sin_family = t->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&t->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2); /* both in network order already */
        memcpy(&t->sin_port, a + 10, 2);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)(void *)&out->src;
        struct sockaddr_in6 *t = (struct sockaddr_in6 *)(void *)&out->dst;
        s->sin6_family = t->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&t->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&t->sin6_port, a + 34, 2);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in6);
    }
    return WSG_PROXY_DONE;
}

wsg_proxy_status_t wsg_proxy_parse(const void *data, size_t len, size_t *consumed,
                                   wsg_proxy_result_t *out) {
    const unsigned char *d = data;

    memset(out, 0, sizeof(*out));
    *consumed = 0;
    if (len == 0)
        return WSG_PROXY_NEED_MORE;
    /* The first byte tells the versions apart: 'P' or CR. */
    if (d[0] == v2_sig[0])
        return parse_v2(d, len, consumed, out);
    return parse_v1(data, len, consumed, out);
}
