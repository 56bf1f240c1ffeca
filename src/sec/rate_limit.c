/*
 * Token buckets (GCRA form) and the lock-free per-address bucket table for
 * SPEC §11 "Rate limits".
 *
 * The single-bucket functions are plain arithmetic on one uint64_t in
 * nanoseconds, for per-connection budgets (messages_per_s, bytes/s shaping)
 * owned by one worker. The table is for handshakes_per_ip_per_s, where every
 * worker must see the same bucket for an address: it is an array of 64-bit
 * words, each holding a 16-bit tag of the address's hash and a 48-bit TAT in
 * 1/16 ms ticks, so reading and updating a bucket is one atomic load and one
 * compare-and-swap, with no lock and no allocation after creation.
 *
 * Slots are grouped by eights (one 64-byte cache line); an address hashes to
 * one group and lives in any slot of it. A bucket whose TAT has passed is
 * full, which is exactly what a new bucket is, so such a slot can be handed
 * to another address without losing anything: memory is bounded by design
 * rather than by expiry sweeps. Only when all eight slots hold buckets still
 * refilling does a newcomer take the one nearest to full (counted as an
 * eviction). A refused take writes nothing, so a flood of refused requests
 * costs loads only. The hash is seeded per table, so which addresses share a
 * group cannot be predicted from outside. Two threads adding the same new
 * address at once pick the same victim slot, so one CAS wins and the other
 * finds the entry on its next pass; only if the group changes in between can
 * an address end up in two slots, and the second copy is then never found
 * first, goes idle and is reused: at worst one extra burst, never a lock.
 *
 * What it deliberately does not do: key IPv6 clients by prefix (/64) rather
 * than by address; that is a policy the caller can apply to the key.
 */
#include <wsgate/rate_limit.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define NS_PER_S 1000000000ULL
#define NS_PER_MS 1000000ULL

/* <a> * NS_PER_S / <per_s>, rounded up, saturating; exact for any a. */
static uint64_t ns_for(uint64_t a, uint32_t per_s) {
    uint64_t whole = a / per_s, rem = a % per_s;
    if (whole > UINT64_MAX / NS_PER_S / 2)
        return UINT64_MAX / 2;
    return whole * NS_PER_S + (rem * NS_PER_S + per_s - 1) / per_s;
}

int wsg_rate_init(wsg_rate_t *r, uint32_t per_s, uint32_t burst) {
    if (per_s == 0)
        return -EINVAL;
    r->per_s = per_s;
    r->burst = burst == 0 ? per_s : burst;
    r->interval_ns = ns_for(1, per_s);
    /* The window is a whole number of intervals, so that exactly <burst>
     * takes fit in a full bucket whatever the rounding of the interval. */
    r->window_ns = (uint64_t)r->burst * r->interval_ns;
    return 0;
}

static uint64_t ceil_ms(uint64_t ns) {
    return (ns + NS_PER_MS - 1) / NS_PER_MS;
}

static uint64_t now_ns_of(uint64_t now_ms) {
    return now_ms > UINT64_MAX / NS_PER_MS / 2 ? UINT64_MAX / 2 : now_ms * NS_PER_MS;
}

bool wsg_rate_take(wsg_rate_bucket_t *b, const wsg_rate_t *r, uint64_t now_ms, uint64_t *wait_ms) {
    uint64_t now = now_ns_of(now_ms);
    uint64_t t0 = b->tat_ns > now ? b->tat_ns : now, next = t0 + r->interval_ns;
    if (next - now > r->window_ns) {
        if (wait_ms != NULL)
            *wait_ms = ceil_ms(next - r->window_ns - now);
        return false;
    }
    b->tat_ns = next;
    return true;
}

uint64_t wsg_rate_charge(wsg_rate_bucket_t *b, const wsg_rate_t *r, uint64_t cost,
                         uint64_t now_ms) {
    uint64_t now = now_ns_of(now_ms);
    uint64_t t0 = b->tat_ns > now ? b->tat_ns : now, c = ns_for(cost, r->per_s);
    b->tat_ns = t0 + c < t0 ? UINT64_MAX / 2 : t0 + c;
    return b->tat_ns - now > r->window_ns ? ceil_ms(b->tat_ns - r->window_ns - now) : 0;
}

uint32_t wsg_rate_retry_after_s(uint64_t wait_ms) {
    uint64_t s = (wait_ms + 999) / 1000;
    return s == 0 ? 1 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* ---- the shared table ------------------------------------------------------------ */

#define GROUP 8
#define TICKS_PER_MS 16
#define TAT_BITS 48
#define TAT_MASK ((UINT64_C(1) << TAT_BITS) - 1)

struct wsg_rate_table_s {
    _Atomic uint64_t *slots; /* owned; tag << 48 | tat; 0 = empty */
    size_t mask;             /* slots - 1 */
    uint64_t seed;
    _Atomic uint64_t evictions;
};

wsg_rate_table_t *wsg_rate_table_new(size_t slots) {
    size_t n = 64;
    while (n < slots && n < ((size_t)1 << 40))
        n <<= 1;
    wsg_rate_table_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    /* 64-byte alignment puts each group of 8 in one cache line. */
    t->slots = aligned_alloc(64, n * sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        atomic_init(&t->slots[i], 0);
    t->mask = n - 1;
    atomic_init(&t->evictions, 0);
    if (getrandom(&t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed))
        t->seed = (uint64_t)(uintptr_t)t ^ (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL;
    return t;
}

void wsg_rate_table_free(wsg_rate_table_t *t) {
    if (t == NULL)
        return;
    free(t->slots);
    free(t);
}

size_t wsg_rate_table_slots(const wsg_rate_table_t *t) {
    return t->mask + 1;
}

uint64_t wsg_rate_table_evictions(const wsg_rate_table_t *t) {
    return atomic_load_explicit(&((wsg_rate_table_t *)t)->evictions, memory_order_relaxed);
}

/* FNV-1a over the key from a per-table seed, then a 64-bit finaliser
 * (MurmurHash3 fmix64) so that the group index and the tag, taken from
 * different ends of the word, are both well mixed. */
static uint64_t hash_key(uint64_t seed, const unsigned char *k, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

bool wsg_rate_table_take(wsg_rate_table_t *t, const wsg_rate_t *r, const void *key, size_t len,
                         uint64_t now_ms, uint64_t *wait_ms) {
    uint64_t h = hash_key(t->seed, key, len);
    uint64_t tag = h >> TAT_BITS;
    if (tag == 0)
        tag = 1; /* 0 marks an empty slot */
    tag <<= TAT_BITS;
    _Atomic uint64_t *group = &t->slots[(size_t)h & t->mask & ~(size_t)(GROUP - 1)];

    /* Ticks of 1/16 ms: 48 bits hold 557 years of milliseconds, so any
     * clock wsgate passes (monotonic or wall) fits without an epoch. */
    uint64_t now = now_ms >= TAT_MASK / TICKS_PER_MS ? TAT_MASK : now_ms * TICKS_PER_MS;
    uint64_t interval = (TICKS_PER_MS * 1000 + r->per_s - 1) / r->per_s;
    uint64_t window = (uint64_t)r->burst * interval;

    /* Each pass reads the group once and either decides without writing
     * (a refusal) or tries one CAS; a failed CAS means another thread
     * changed that slot, and the decision is remade from fresh values.
     * Relaxed ordering suffices: a slot's word is the whole bucket, and no
     * other memory is published through it. */
    for (;;) {
        uint64_t w = 0, victim_w = 0, victim_tat = UINT64_MAX;
        _Atomic uint64_t *slot = NULL, *victim = NULL;
        for (int i = 0; i < GROUP; i++) {
            uint64_t v = atomic_load_explicit(&group[i], memory_order_relaxed);
            if (v != 0 && (v & ~TAT_MASK) == tag) {
                slot = &group[i];
                w = v;
                break;
            }
            /* An empty slot counts as TAT 0: the best victim of all. */
            uint64_t vt = v & TAT_MASK;
            if (vt < victim_tat) {
                victim_tat = vt;
                victim = &group[i];
                victim_w = v;
            }
        }
        uint64_t tat = 0;
        if (slot != NULL) {
            tat = w & TAT_MASK;
        } else {
            slot = victim;
            w = victim_w;
        }
        uint64_t t0 = tat > now ? tat : now, next = t0 + interval;
        if (next - now > window) {
            if (wait_ms != NULL)
                *wait_ms = (next - window - now + TICKS_PER_MS - 1) / TICKS_PER_MS;
            return false;
        }
        if (next > TAT_MASK)
            next = TAT_MASK;
        if (atomic_compare_exchange_weak_explicit(slot, &w, tag | next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            if (slot == victim && victim_w != 0 && victim_tat > now)
                atomic_fetch_add_explicit(&t->evictions, 1, memory_order_relaxed);
            return true;
        }
    }
}

size_t wsg_rate_addr_key(const struct sockaddr *sa, unsigned char key[17]) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 5;
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, mapped, 12) == 0) {
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
            return 5;
        }
        key[0] = 6;
        memcpy(key + 1, a, 16);
        return 17;
    }
    return 0;
}
