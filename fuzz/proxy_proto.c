/*
 * Fuzz target: the PROXY protocol v1/v2 parser (src/codec/proxy_proto.c).
 *
 * The connection calls the parser again on the whole buffer after every
 * read, so the parser must judge every prefix consistently. Checked: the
 * header length never exceeds the input or WSG_PROXY_MAX; the parse of the
 * header alone equals the parse of the whole input; every shorter prefix is
 * NEED_MORE or MALFORMED, and once a prefix is MALFORMED every longer one
 * is too (a connection closed early would otherwise have been a valid one);
 * addresses are of the family their length says.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <wsgate/proxy_proto.h>

#include "fuzz_util.h"

static wsg_proxy_status_t parse_copy(const uint8_t *data, size_t len, size_t *consumed,
                                     wsg_proxy_result_t *out) {
    uint8_t *copy = malloc(len ? len : 1); /* exact size: over-reads are seen */
    memcpy(copy, data, len);
    wsg_proxy_status_t st = wsg_proxy_parse(copy, len, consumed, out);
    free(copy);
    return st;
}

static void check_addr(const struct sockaddr_storage *ss, socklen_t len) {
    if (len == sizeof(struct sockaddr_in))
        FUZZ_CHECK(ss->ss_family == AF_INET);
    else if (len == sizeof(struct sockaddr_in6))
        FUZZ_CHECK(ss->ss_family == AF_INET6);
    else
        FUZZ_CHECK(!"address length of neither family");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t consumed = 0, c2 = 0;
    wsg_proxy_result_t whole, head;
    wsg_proxy_status_t st = parse_copy(data, size, &consumed, &whole);

    if (st == WSG_PROXY_DONE) {
        FUZZ_CHECK(consumed > 0 && consumed <= size && consumed <= WSG_PROXY_MAX);
        FUZZ_CHECK(whole.version == 1 || whole.version == 2);
        if (!whole.local) {
            check_addr(&whole.src, whole.src_len);
            check_addr(&whole.dst, whole.dst_len);
        }
        FUZZ_CHECK(parse_copy(data, consumed, &c2, &head) == WSG_PROXY_DONE);
        FUZZ_CHECK(c2 == consumed && head.version == whole.version && head.local == whole.local);
        FUZZ_CHECK(head.src_len == whole.src_len && memcmp(&head.src, &whole.src, head.src_len) == 0);
    } else if (st == WSG_PROXY_MALFORMED) {
        FUZZ_CHECK(whole.reason != NULL);
    }
    /* every prefix shorter than the verdict's point */
    size_t end = st == WSG_PROXY_DONE ? consumed : size;
    if (end > WSG_PROXY_MAX + 1)
        end = WSG_PROXY_MAX + 1; /* past that every verdict is in */
    int malformed = 0;
    for (size_t k = 0; k < end; k++) {
        wsg_proxy_result_t r;
        size_t c = 0;
        wsg_proxy_status_t s = parse_copy(data, k, &c, &r);
        FUZZ_CHECK(s != WSG_PROXY_DONE);
        if (malformed)
            FUZZ_CHECK(s == WSG_PROXY_MALFORMED);
        malformed = s == WSG_PROXY_MALFORMED;
    }
    if (malformed)
        FUZZ_CHECK(st == WSG_PROXY_MALFORMED);
    return 0;
}
