/*
 * Shared by the fuzz targets: a deterministic source of read sizes, so that
 * a target can feed the same input whole and in "random" reads and compare
 * the two, and a failure replays exactly from its input file.
 */
#ifndef WSGATE_FUZZ_UTIL_H
#define WSGATE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    uint64_t s;
} fuzz_rng_t;

static inline void fuzz_rng_init(fuzz_rng_t *r, uint8_t seed, size_t len) {
    r->s = 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 32) ^ (uint64_t)len;
    if (r->s == 0)
        r->s = 1;
}

/* xorshift64*: good enough to cut a stream into reads. */
static inline uint64_t fuzz_rng_next(fuzz_rng_t *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* The size of the next read: mostly small (1..16 bytes, where the header
 * bugs are), sometimes up to <big>. */
static inline size_t fuzz_read_size(fuzz_rng_t *r, size_t big) {
    uint64_t x = fuzz_rng_next(r);
    if ((x & 3) != 0)
        return 1 + (size_t)((x >> 8) % 16);
    return 1 + (size_t)((x >> 8) % (big ? big : 1));
}

/* An invariant broken: abort, so libFuzzer (and the replay driver) reports
 * the input as a crash. */
#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#endif /* WSGATE_FUZZ_UTIL_H */
