/*
 * Token buckets for SPEC §11 "Rate limits": the math (pure, no clock of its
 * own: the caller passes the time in milliseconds) and a fixed-size table of
 * per-address buckets that every worker thread updates without a lock.
 *
 * A bucket is kept in the GCRA form (ITU-T I.371's generic cell rate
 * algorithm): one number, the "theoretical arrival time" (TAT), instead of a
 * token count and a last-refill time. A bucket at rest holds `burst` tokens;
 * each token taken moves the TAT one interval (1 s / per_s) later; a take is
 * allowed while TAT - now stays within burst intervals. This is exactly a
 * token bucket of capacity `burst` refilled at `per_s`, and a single number
 * is what lets the shared table update a bucket with one compare-and-swap.
 */
#ifndef WSGATE_RATE_LIMIT_H
#define WSGATE_RATE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A rate: per_s tokens a second, at most burst at once. */
typedef struct wsg_rate_s {
    uint32_t per_s;       /* read-only */
    uint32_t burst;       /* read-only; 0 given to init becomes per_s */
    uint64_t interval_ns; /* private: 1 s / per_s, rounded up */
    uint64_t window_ns;   /* private: burst * interval_ns */
} wsg_rate_t;

/* Sets up <r> for <per_s> (1 or more; 0, "off", is the caller's business and
 * gives -EINVAL) and <burst> (0 = per_s, "one second's worth" as SPEC §11
 * says). Returns 0 or -EINVAL. */
int wsg_rate_init(wsg_rate_t *r, uint32_t per_s, uint32_t burst);

/* One bucket, e.g. a connection's message budget. All zero = full. Not
 * thread-safe: it belongs to one connection on one worker. */
typedef struct wsg_rate_bucket_s {
    uint64_t tat_ns; /* private */
} wsg_rate_bucket_t;

/*
 * Takes one token from <b> at <now_ms> (any clock that does not go back;
 * a time before the last one counts as that one). Returns true if there was
 * one. Otherwise returns false, takes nothing, and sets *wait_ms (when not
 * NULL) to the milliseconds until a token will be there (at least 1).
 */
bool wsg_rate_take(wsg_rate_bucket_t *b, const wsg_rate_t *r, uint64_t now_ms, uint64_t *wait_ms);

/*
 * Charges <cost> tokens (bytes, for client_bytes_per_s) at <now_ms>, always:
 * the bucket may go into debt. Returns how long to pause before reading
 * more, in milliseconds: 0 while the debt is within the burst. Reading
 * again after each pause keeps the long-run rate at per_s.
 */
uint64_t wsg_rate_charge(wsg_rate_bucket_t *b, const wsg_rate_t *r, uint64_t cost, uint64_t now_ms);

/* Retry-After for a refusal that must wait <wait_ms>: whole seconds,
 * rounded up, at least 1 (SPEC §11). */
uint32_t wsg_rate_retry_after_s(uint64_t wait_ms);

/* ---- per-address buckets shared by all workers ---------------------------------- */

typedef struct wsg_rate_table_s wsg_rate_table_t;

/*
 * A table of <slots> buckets (rounded up to a power of two, at least 64),
 * 8 bytes each, allocated once: memory never grows, whatever the number of
 * distinct addresses. Returns NULL on ENOMEM. The time resolution inside
 * the table is 1/16 ms, so a rate above 16000 per second acts as 16000.
 */
wsg_rate_table_t *wsg_rate_table_new(size_t slots);
void wsg_rate_table_free(wsg_rate_table_t *t);
size_t wsg_rate_table_slots(const wsg_rate_table_t *t);

/*
 * wsg_rate_take() on the bucket of key[0..len) (an address from
 * wsg_rate_addr_key()). Thread-safe and lock-free: any number of threads
 * may call it on one table at once. A key without a bucket gets a full one,
 * taking an empty or idle slot of its group of 8 when there is one, else
 * the busiest-but-nearest-to-full one (counted in evictions): under a flood
 * of distinct addresses larger than the table, limited addresses may
 * occasionally start over with a full bucket, and memory stays fixed.
 */
bool wsg_rate_table_take(wsg_rate_table_t *t, const wsg_rate_t *r, const void *key, size_t len,
                         uint64_t now_ms, uint64_t *wait_ms);

/* Buckets taken over from another key while not yet full (see above). */
uint64_t wsg_rate_table_evictions(const wsg_rate_table_t *t);

/* The key for <sa>'s address (port ignored): a family byte and 4 or 16
 * address bytes; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is keyed as
 * its IPv4 address. Returns the length, or 0 for other families. */
size_t wsg_rate_addr_key(const struct sockaddr *sa, unsigned char key[17]);

#endif /* WSGATE_RATE_LIMIT_H */
