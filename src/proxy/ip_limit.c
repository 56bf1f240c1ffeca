/*
 * Per-address connection counts for limits.max_connections_per_ip.
 *
 * 64 stripes, each a mutex and a small chained hash table that grows by
 * doubling. The key is the address family and its 4 or 16 address bytes;
 * an entry is freed as soon as its count returns to zero. The table is on
 * the accept path only (never per frame), so a mutex is cheap enough; the
 * stripes keep two workers from contending unless their clients hash alike.
 */
#include <wsgate/ip_limit.h>

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define STRIPES 64

typedef struct entry_s {
    struct entry_s *next;
    uint64_t count;
    uint8_t family;
    uint8_t addr[16];
} entry_t;

typedef struct stripe_s {
    uv_mutex_t lock;
    entry_t **buckets;
    size_t nbuckets; /* power of two */
    size_t nentries;
} stripe_t;

struct wsg_ip_limit_s {
    stripe_t stripes[STRIPES];
};

/* Extracts the family and address bytes of <sa>; 0 for other families. */
static int key_of(const struct sockaddr *sa, uint8_t *family, uint8_t addr[16]) {
    memset(addr, 0, 16);
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    } else {
        return 0;
    }
    *family = (uint8_t)sa->sa_family;
    return 1;
}

static uint64_t hash_of(uint8_t family, const uint8_t addr[16]) {
    uint64_t h = 0xcbf29ce484222325ULL ^ family;
    for (int i = 0; i < 16; i++)
        h = (h ^ addr[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    return h;
}

wsg_ip_limit_t *wsg_ip_limit_new(void) {
    wsg_ip_limit_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    for (int i = 0; i < STRIPES; i++) {
        stripe_t *s = &t->stripes[i];
        s->nbuckets = 16;
        s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
        if (s->buckets == NULL || uv_mutex_init(&s->lock) != 0) {
            free(s->buckets);
            s->buckets = NULL;
            for (int j = 0; j < i; j++) {
                uv_mutex_destroy(&t->stripes[j].lock);
                free(t->stripes[j].buckets);
            }
            free(t);
            return NULL;
        }
    }
    return t;
}

void wsg_ip_limit_free(wsg_ip_limit_t *t) {
    if (t == NULL)
        return;
    for (int i = 0; i < STRIPES; i++) {
        stripe_t *s = &t->stripes[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            for (entry_t *e = s->buckets[b], *next; e != NULL; e = next) {
                next = e->next;
                free(e);
            }
        }
        free(s->buckets);
        uv_mutex_destroy(&s->lock);
    }
    free(t);
}

static void grow(stripe_t *s) {
    size_t n = s->nbuckets * 2;
    entry_t **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return; /* longer chains, still correct */
    for (size_t b = 0; b < s->nbuckets; b++) {
        for (entry_t *e = s->buckets[b], *next; e != NULL; e = next) {
            next = e->next;
            size_t i = (size_t)(hash_of(e->family, e->addr) >> 6) & (n - 1);
            e->next = nb[i];
            nb[i] = e;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
}

bool wsg_ip_limit_acquire(wsg_ip_limit_t *t, const struct sockaddr *sa, uint64_t max) {
    uint8_t family, addr[16];
    if (!key_of(sa, &family, addr))
        return true; /* not an IP address: nothing to limit by */
    uint64_t h = hash_of(family, addr);
    stripe_t *s = &t->stripes[h % STRIPES];
    bool ok = false;

    uv_mutex_lock(&s->lock);
    size_t i = (size_t)(h >> 6) & (s->nbuckets - 1);
    entry_t *e = s->buckets[i];
    while (e != NULL && (e->family != family || memcmp(e->addr, addr, 16) != 0))
        e = e->next;
    if (e != NULL) {
        if (e->count < max) {
            e->count++;
            ok = true;
        }
    } else if (max > 0 && (e = calloc(1, sizeof(*e))) != NULL) {
        e->family = family;
        memcpy(e->addr, addr, 16);
        e->count = 1;
        e->next = s->buckets[i];
        s->buckets[i] = e;
        if (++s->nentries > s->nbuckets * 2)
            grow(s);
        ok = true;
    }
    uv_mutex_unlock(&s->lock);
    return ok;
}

void wsg_ip_limit_release(wsg_ip_limit_t *t, const struct sockaddr *sa) {
    uint8_t family, addr[16];
    if (!key_of(sa, &family, addr))
        return;
    uint64_t h = hash_of(family, addr);
    stripe_t *s = &t->stripes[h % STRIPES];

    uv_mutex_lock(&s->lock);
    size_t i = (size_t)(h >> 6) & (s->nbuckets - 1);
    for (entry_t **pp = &s->buckets[i]; *pp != NULL; pp = &(*pp)->next) {
        entry_t *e = *pp;
        if (e->family != family || memcmp(e->addr, addr, 16) != 0)
            continue;
        if (--e->count == 0) {
            *pp = e->next;
            free(e);
            s->nentries--;
        }
        break;
    }
    uv_mutex_unlock(&s->lock);
}

uint64_t wsg_ip_limit_size(wsg_ip_limit_t *t) {
    uint64_t n = 0;
    for (int i = 0; i < STRIPES; i++) {
        uv_mutex_lock(&t->stripes[i].lock);
        n += t->stripes[i].nentries;
        uv_mutex_unlock(&t->stripes[i].lock);
    }
    return n;
}
