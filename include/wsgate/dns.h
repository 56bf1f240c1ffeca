/*
 * DNS discovery of backends (SPEC §12): a backend entry with "resolve":
 * true stands for every A and AAAA address of its name, each a backend
 * "NAME#IP:PORT" with the entry's weight, looked up again every
 * pools.NAME.resolve_ms.
 *
 * Two halves. The pure one (src/lb/dns_set.c) turns an answer into backend
 * entries and diffs them against a pool's current ones: what stays, what
 * is added, what leaves. The other (src/ctl/dns.c) asks: c-ares on a libuv
 * loop (its sockets watched with uv_poll, its timeouts with a uv timer),
 * with the servers of dns.servers or the system's, on the server thread's
 * loop, never a worker's; and once, to completion, for start-up, reload
 * and --which.
 */
#ifndef WSGATE_DNS_H
#define WSGATE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <wsgate/config.h>

/* Addresses kept per name; the rest of a larger answer (in address order)
 * is left out and logged. */
#define WSG_DNS_MAX_ADDRS 256

/* How a lookup ended, the label of wsgate_dns_lookups_total. */
typedef enum {
    WSG_DNS_OK = 0,
    WSG_DNS_NXDOMAIN, /* no such name, or no A/AAAA record: no record at all */
    WSG_DNS_SERVFAIL, /* every server failed: SERVFAIL, REFUSED, or refused the packet */
    WSG_DNS_TIMEOUT,  /* no answer in time */
    WSG_DNS_ERROR,    /* anything else (refused, malformed, out of memory) */
    WSG_DNS_NRESULTS,
} wsg_dns_result_t;

const char *wsg_dns_result_name(wsg_dns_result_t r);

typedef struct wsg_dns_addr_s {
    int family;         /* AF_INET or AF_INET6 */
    unsigned char ip[16]; /* 4 or 16 bytes, network order */
} wsg_dns_addr_t;

/* One lookup's outcome. The addresses are sorted and distinct. */
typedef struct wsg_dns_answer_s {
    wsg_dns_result_t result;
    uint32_t ttl_s;   /* lowest TTL of the records kept; UINT32_MAX when none */
    bool truncated;   /* more than WSG_DNS_MAX_ADDRS addresses: the rest left out */
    size_t naddrs;
    wsg_dns_addr_t addrs[WSG_DNS_MAX_ADDRS];
} wsg_dns_answer_t;

/* ---- pure ------------------------------------------------------------- */

/* Empties <a> with result <r> (ttl_s UINT32_MAX). */
void wsg_dns_answer_reset(wsg_dns_answer_t *a, wsg_dns_result_t r);

/* Adds the address <ip> (4 bytes for AF_INET, 16 for AF_INET6) with
 * <ttl_s> to <a>, in order, once. Other families are ignored. */
void wsg_dns_answer_add(wsg_dns_answer_t *a, int family, const void *ip, uint32_t ttl_s);

/* "10.0.0.1" or "fd00::1" into <buf>; returns 0 or -1 (too small). */
int wsg_dns_addr_format(const wsg_dns_addr_t *a, char *buf, size_t cap);

/* The identity of address <a> of the entry whose address is <entry>
 * ("NAME:PORT"): "NAME#IP:PORT", "NAME#[IP]:PORT" for IPv6. Returns 0, or
 * -1 if <entry> is not "host:port" or <buf> too small. */
int wsg_dns_identity(const char *entry, const wsg_dns_addr_t *a, char *buf, size_t cap);

/* A pool's backends after entry <entry> (an index into the pool's
 * resolves, <ent> that entry) answered <ans> (result OK): the current
 * backends <cur> that did not come from this entry, and those that did
 * and whose address is still in the answer, in their order, then the
 * answer's new addresses, in address order, with <ent>'s weight. */
typedef struct wsg_dns_merge_s {
    wsg_backend_conf_t *backends; /* owned, with their addresses; <n> long */
    size_t n;
    size_t *removed; /* owned: indices into <cur> of the entry's backends that left */
    size_t nremoved;
    size_t nadded;
} wsg_dns_merge_t;

/* Returns 0, or -1 on ENOMEM (<out> then empty). */
int wsg_dns_merge(const wsg_backend_conf_t *cur, size_t ncur, size_t entry,
                  const wsg_backend_conf_t *ent, const wsg_dns_answer_t *ans,
                  wsg_dns_merge_t *out);
void wsg_dns_merge_free(wsg_dns_merge_t *m);

/* When to ask again after <ans>: <resolve_ms>, or sooner when the answer's
 * lowest TTL is shorter, but not under a second (a TTL of 0 must not turn
 * into a flood of lookups). */
uint64_t wsg_dns_next_ms(uint64_t resolve_ms, const wsg_dns_answer_t *ans);

/* The entries with "resolve": true of every pool of <cfg>, counted in pool
 * order then entry order: the index of the flat arrays below. */
size_t wsg_dns_nentries(const wsg_config_t *cfg);

/* <cfg> with the backends of every pool that has resolve entries set to
 * its own entries plus the addresses of <answers> (flat, as above; a
 * failed lookup has none, unless the caller put the last good ones in,
 * as a reload does). A new reference
 * (<cfg> itself, referenced again, when it has no resolve entries), or
 * NULL on ENOMEM. */
wsg_config_t *wsg_dns_expand(wsg_config_t *cfg, const wsg_dns_answer_t *answers);

/* ---- lookups (c-ares on libuv) ---------------------------------------- */

/* Looks up every resolve entry of <cfg> at once, with its dns.servers, and
 * waits for all the answers on a loop of its own (bounded by the c-ares
 * timeouts: about 3 s when no server answers). out[k] (wsg_dns_nentries()
 * long) gets the k-th entry's answer; counts[r] += 1 per lookup that ended
 * with r (may be NULL). Logs every failure. Returns 0, or -1 if c-ares
 * could not start (every answer is then ERROR). For start-up, reload and
 * --which; blocks the calling thread. */
int wsg_dns_lookup_all(const wsg_config_t *cfg, wsg_dns_answer_t *out, uint64_t *counts);

/* The periodic lookups of the running configuration, on the server's loop.
 * Each entry is asked again wsg_dns_next_ms() after its last answer
 * (never when its pool's resolve_ms is 0); an OK answer goes to <cb>,
 * which applies it (the answer is borrowed for the call); a failure is
 * logged (one line) and changes nothing. */
typedef struct wsg_dns_s wsg_dns_t;
typedef void (*wsg_dns_cb)(void *arg, size_t pool, size_t entry, const wsg_dns_answer_t *ans);

/* <cfg> (referenced) is the file's configuration; <first> (flat, copied)
 * the answers it was started with; <counts> (WSG_DNS_NRESULTS long,
 * borrowed, outlives the object) counts the lookups by result. NULL on
 * ENOMEM or when c-ares cannot start (logged). */
wsg_dns_t *wsg_dns_start(uv_loop_t *loop, wsg_config_t *cfg, const wsg_dns_answer_t *first,
                         uint64_t *counts, wsg_dns_cb cb, void *arg);
/* Cancels the lookups in flight and frees the object once its handles are
 * closed. NULL is a no-op. */
void wsg_dns_stop(wsg_dns_t *d);

/* What /status shows of entry <k> (flat index). */
typedef struct wsg_dns_status_s {
    const char *pool;
    const char *name;  /* "NAME:PORT" as written */
    unsigned weight;
    uint64_t at_ms;    /* wall clock of the last lookup, ms since the epoch */
    wsg_dns_result_t result; /* of the last lookup */
    const wsg_dns_answer_t *current; /* the last good answer: the addresses in use */
} wsg_dns_status_t;
size_t wsg_dns_count(const wsg_dns_t *d);
void wsg_dns_status(const wsg_dns_t *d, size_t k, wsg_dns_status_t *out);
/* The last good answer of the entry named <name> in pool <pool>, or NULL:
 * what a reload keeps when its own lookup fails. */
const wsg_dns_answer_t *wsg_dns_current(const wsg_dns_t *d, const char *pool, const char *name);

#endif /* WSGATE_DNS_H */
