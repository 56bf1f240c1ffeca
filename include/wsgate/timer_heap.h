/*
 * A min-heap of deadlines: pure, no I/O; one per worker.
 *
 * Connections do not own libuv timers. Each embeds one wsg_timer_node_t and
 * keeps its own timestamps (last byte in, last data frame, ...); the worker
 * keeps them all in this heap keyed by the earliest moment anything could be
 * due, and one uv_timer per worker fires for the top. A fired node works out
 * what is really due from its timestamps and re-inserts itself for the next
 * deadline, so the hot path (a frame relayed) never touches the heap.
 */
#ifndef WSGATE_TIMER_HEAP_H
#define WSGATE_TIMER_HEAP_H

#include <stddef.h>
#include <stdint.h>

#define WSG_TIMER_NOT_QUEUED UINT32_MAX

/* Embed in the owning object; initialise with wsg_timer_node_init(). */
typedef struct wsg_timer_node_s {
    uint64_t deadline; /* read-only: ms on the loop's clock */
    uint64_t seq;      /* private: insertion order, breaks ties FIFO */
    uint32_t index;    /* private: WSG_TIMER_NOT_QUEUED when not in a heap */
} wsg_timer_node_t;

typedef struct wsg_timer_heap_s {
    wsg_timer_node_t **nodes; /* owned array of borrowed nodes */
    uint32_t count;
    uint32_t cap;
    uint64_t next_seq;
} wsg_timer_heap_t;

void wsg_timer_heap_init(wsg_timer_heap_t *h);
/* Frees the array; the nodes are not touched. */
void wsg_timer_heap_close(wsg_timer_heap_t *h);

void wsg_timer_node_init(wsg_timer_node_t *n);
static inline int wsg_timer_node_queued(const wsg_timer_node_t *n) {
    return n->index != WSG_TIMER_NOT_QUEUED;
}

/* Queues <n> for <deadline>, or moves it there if already queued.
 * Returns 0, or UV_ENOMEM-style -12 if the array cannot grow. */
int wsg_timer_heap_schedule(wsg_timer_heap_t *h, wsg_timer_node_t *n, uint64_t deadline);
/* Removes <n> if queued; a no-op otherwise. */
void wsg_timer_heap_cancel(wsg_timer_heap_t *h, wsg_timer_node_t *n);
/* The earliest node, or NULL when empty. */
wsg_timer_node_t *wsg_timer_heap_peek(const wsg_timer_heap_t *h);
/* Removes and returns the earliest node whose deadline is <= <now>, or NULL.
 * Equal deadlines come out in the order they were scheduled. */
wsg_timer_node_t *wsg_timer_heap_pop_due(wsg_timer_heap_t *h, uint64_t now);

#endif /* WSGATE_TIMER_HEAP_H */
