/*
 * Weighted consistent hashing: pure, deterministic, no I/O.
 *
 * The "ring" is weighted rendezvous (highest-random-weight) hashing over a
 * fixed space of WSG_RING_SLOTS slots: a key hashes to a slot, and each slot
 * ranks every member by score = -weight / ln(u), where u in (0,1) is a hash of
 * (slot, member id). The first choice of every slot is precomputed into a
 * table, so a lookup is one hash and one array read; the full ranking (the
 * "next backend on the ring", used to skip down, draining or full backends and
 * for retries) is computed on demand.
 *
 * Why rendezvous and not a vnode ring or Maglev: it balances within a
 * fraction of a percent with no virtual nodes, and adding a member moves only
 * the slots the new member wins, all of them to the new member (Maglev
 * also moves keys between old members). Members are identified by their id
 * string (the configured address), never by position, so the same members
 * and weights give the same mapping in every process on every machine.
 */
#ifndef WSGATE_HASH_RING_H
#define WSGATE_HASH_RING_H

#include <stddef.h>
#include <stdint.h>

#define WSG_RING_SLOTS 65536u

typedef struct wsg_ring_s wsg_ring_t;

typedef struct wsg_ring_member_s {
    const char *id;  /* borrowed during wsg_ring_new() only */
    unsigned weight; /* >= 1 */
} wsg_ring_member_t;

/* Builds a ring over <n> (1..65535) members. Returns a new ring (free with
 * wsg_ring_free) or NULL on bad arguments / out of memory. Cost is
 * O(WSG_RING_SLOTS * n) hashes, paid at configuration load. */
wsg_ring_t *wsg_ring_new(const wsg_ring_member_t *members, size_t n);
void wsg_ring_free(wsg_ring_t *ring);

size_t wsg_ring_size(const wsg_ring_t *ring);

/* 64-bit hash of a sticky key. Stable across platforms and releases. */
uint64_t wsg_ring_hash(const void *key, size_t len);

/* First-choice member index for <key_hash>. */
unsigned wsg_ring_lookup(const wsg_ring_t *ring, uint64_t key_hash);

/* Writes member indices into <order>, best first, for <key_hash>: the order
 * in which backends are tried. Writes min(cap, size) entries and returns that
 * count. order[0] == wsg_ring_lookup(). */
size_t wsg_ring_rank(const wsg_ring_t *ring, uint64_t key_hash, unsigned *order, size_t cap);

#endif /* WSGATE_HASH_RING_H */
