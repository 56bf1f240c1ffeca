/*
 * Weighted consistent hashing by rendezvous (highest-random-weight) hashing
 * over WSG_RING_SLOTS slots. A key hashes to a slot; every slot ranks every
 * member by score = -weight / ln(u), u = hash(slot, member id) mapped into
 * (0,1). The best member of each slot is precomputed into a table of uint16
 * indices at build time, so a lookup is one mix and one array read; the full
 * ranking of a slot (the order in which backends are tried when the first is
 * down, draining or full) is computed on demand by wsg_ring_rank().
 *
 * What it does not do: it knows nothing of backend states or loads (the
 * balancer walks the ranking and skips), does no I/O, and allocates only in
 * wsg_ring_new().
 *
 * Key design choices. Scores depend only on the slot and the member's id
 * hash and weight, never on the member's position or on the other members,
 * so adding a member moves exactly the slots it wins (all of them to it) and
 * removing one moves only its own slots; and every process computes the same
 * table from the same ids and weights. -weight / ln(u) is the weighted form of
 * rendezvous hashing: -ln(u) / weight is exponentially distributed with rate
 * <weight>, so the member with the smallest one (the largest score) wins with
 * probability weight / sum(weights). The hash is our own fixed function
 * (FNV-1a 64 followed by the MurmurHash3 64-bit finaliser), not a library's,
 * so the mapping cannot change under us; it is part of the wire contract
 * between wsgate instances and is pinned by a golden unit test.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/hash_ring.h>

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* Arbitrary odd constants that separate the slot derivation and the
 * per-slot hash from each other and from the key hash itself. */
#define SLOT_SEED 0x9e3779b97f4a7c15ull
#define SCORE_SEED 0xd6e8feb86659fd93ull

/* wsg_ring_rank() sorts candidates in rounds of at most this many, on the
 * stack: one round for any realistic pool, bounded stack for any size. */
#define RANK_CHUNK 128

struct member {
    uint64_t hash; /* wsg_ring_hash of the id */
    double weight;
};

struct wsg_ring_s {
    size_t n;
    uint16_t first[WSG_RING_SLOTS]; /* best member of each slot */
    struct member m[];              /* n members, in the caller's order */
};

/* One ranked candidate. The order is strict and total: score, then id
 * hash, then index, so equal ids or (astronomically unlikely) equal scores
 * still rank the same way everywhere. */
struct cand {
    double score;
    uint64_t hash;
    unsigned idx;
};

/* MurmurHash3's 64-bit finaliser: a bijection in which every input bit
 * affects every output bit. It repairs FNV-1a's weak high bits (FNV mixes
 * upwards only), which matter because the slot is taken from the top. */
static uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

uint64_t wsg_ring_hash(const void *key, size_t len) {
    const uint8_t *p = key;
    uint64_t h = FNV_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return fmix64(h);
}

/* The key hash is mixed once more before its top 16 bits are taken, so that
 * a caller passing a weak 64-bit value (a counter, a random number with a
 * poor high half) still spreads over all slots. */
static unsigned slot_of(uint64_t key_hash) {
    return (unsigned)(fmix64(key_hash ^ SLOT_SEED) >> 48);
}

static uint64_t slot_hash(unsigned slot) {
    return fmix64((uint64_t)slot * SLOT_SEED + SCORE_SEED);
}

/* u = (odd 53-bit integer) / 2^53 lies strictly inside (0,1) and is exact in
 * a double, so ln(u) is finite and negative and the score finite and
 * positive: no special cases for 0 or 1. */
static double score(const struct member *m, uint64_t sh) {
    uint64_t x = fmix64(sh ^ m->hash);
    double u = (double)((x >> 11) | 1u) * 0x1p-53;
    return -m->weight / log(u);
}

static int better(const struct cand *a, const struct cand *b) {
    if (a->score != b->score)
        return a->score > b->score;
    if (a->hash != b->hash)
        return a->hash > b->hash;
    return a->idx < b->idx;
}

static struct cand cand_of(const wsg_ring_t *ring, unsigned i, uint64_t sh) {
    struct cand c = {score(&ring->m[i], sh), ring->m[i].hash, i};
    return c;
}

wsg_ring_t *wsg_ring_new(const wsg_ring_member_t *members, size_t n) {
    wsg_ring_t *ring;

    /* Indices are stored as uint16_t. */
    if (members == NULL || n == 0 || n > UINT16_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (members[i].id == NULL || members[i].weight == 0)
            return NULL;

    ring = malloc(sizeof(*ring) + n * sizeof(ring->m[0]));
    if (ring == NULL)
        return NULL;
    ring->n = n;
    for (size_t i = 0; i < n; i++) {
        ring->m[i].hash = wsg_ring_hash(members[i].id, strlen(members[i].id));
        ring->m[i].weight = (double)members[i].weight;
    }

    /* The same cand_of()/better() as wsg_ring_rank(), so that order[0] is
     * always the table's entry, to the last bit of the score. */
    for (unsigned s = 0; s < WSG_RING_SLOTS; s++) {
        uint64_t sh = slot_hash(s);
        struct cand best = cand_of(ring, 0, sh);
        for (unsigned i = 1; i < n; i++) {
            struct cand c = cand_of(ring, i, sh);
            if (better(&c, &best))
                best = c;
        }
        ring->first[s] = (uint16_t)best.idx;
    }
    return ring;
}

void wsg_ring_free(wsg_ring_t *ring) {
    free(ring);
}

size_t wsg_ring_size(const wsg_ring_t *ring) {
    return ring->n;
}

unsigned wsg_ring_lookup(const wsg_ring_t *ring, uint64_t key_hash) {
    return ring->first[slot_of(key_hash)];
}

/* A partial selection sort in rounds: each round scans all members and keeps,
 * in insertion order, the best RANK_CHUNK of those ranked after the last one
 * already emitted. With n <= RANK_CHUNK (every realistic pool) that is one
 * pass and n scores; larger pools cost ceil(count / RANK_CHUNK) passes but
 * never more than a few kilobytes of stack and no allocation. */
size_t wsg_ring_rank(const wsg_ring_t *ring, uint64_t key_hash, unsigned *order, size_t cap) {
    struct cand buf[RANK_CHUNK];
    struct cand last = {0, 0, 0};
    size_t count = cap < ring->n ? cap : ring->n;
    size_t done = 0;
    uint64_t sh = slot_hash(slot_of(key_hash));

    while (done < count) {
        size_t want = count - done < RANK_CHUNK ? count - done : RANK_CHUNK;
        size_t have = 0;

        for (unsigned i = 0; i < ring->n; i++) {
            struct cand c = cand_of(ring, i, sh);
            size_t j;

            if (done != 0 && !better(&last, &c))
                continue; /* already emitted */
            if (have == want) {
                if (!better(&c, &buf[want - 1]))
                    continue;
                j = want - 1;
            } else {
                j = have++;
            }
            for (; j > 0 && better(&c, &buf[j - 1]); j--)
                buf[j] = buf[j - 1];
            buf[j] = c;
        }
        for (size_t k = 0; k < have; k++)
            order[done + k] = buf[k].idx;
        done += have;
        last = buf[have - 1];
    }
    return count;
}
