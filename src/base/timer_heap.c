/*
 * Timer heap: a binary min-heap of deadlines, one per worker.
 *
 * The heap stores pointers to nodes embedded in their owners (connections,
 * health checks) and writes each node's position back into the node, so
 * cancelling or moving a node is O(log n) without a search. It does no I/O
 * and never looks at a clock: the caller passes "now" in milliseconds and
 * arms its single uv_timer from wsg_timer_heap_peek(). It does not own the
 * nodes and never frees them; only the pointer array is allocated.
 *
 * Ordering is by (deadline, seq), where seq is a per-heap counter stamped on
 * every schedule call. That makes equal deadlines fire first-in first-out,
 * which keeps the order in which connections are serviced stable and
 * predictable in tests, and keeps the comparison a strict total order (no two
 * queued nodes ever compare equal).
 */
#include <assert.h>
#include <stdlib.h>

#include <wsgate/timer_heap.h>

/* -ENOMEM as libuv spells it (UV_ENOMEM), without pulling uv.h into a pure
 * module. */
#define HEAP_ENOMEM (-12)

/* The first allocation; small because most workers hold few timers at
 * start and the array doubles as needed. */
#define HEAP_MIN_CAP 16u

void wsg_timer_heap_init(wsg_timer_heap_t *h) {
    h->nodes = NULL;
    h->count = 0;
    h->cap = 0;
    h->next_seq = 0;
}

void wsg_timer_heap_close(wsg_timer_heap_t *h) {
    /* Nodes still queued are left as they are: they belong to their owners,
     * which are being torn down with the worker anyway. */
    free(h->nodes);
    h->nodes = NULL;
    h->count = 0;
    h->cap = 0;
}

void wsg_timer_node_init(wsg_timer_node_t *n) {
    n->deadline = 0;
    n->seq = 0;
    n->index = WSG_TIMER_NOT_QUEUED;
}

/* Strict "a fires before b". */
static int before(const wsg_timer_node_t *a, const wsg_timer_node_t *b) {
    if (a->deadline != b->deadline)
        return a->deadline < b->deadline;
    return a->seq < b->seq;
}

static void place(wsg_timer_heap_t *h, uint32_t i, wsg_timer_node_t *n) {
    h->nodes[i] = n;
    n->index = i;
}

/* Moves the node at <i> towards the root while it fires before its parent. */
static void sift_up(wsg_timer_heap_t *h, uint32_t i) {
    wsg_timer_node_t *n = h->nodes[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!before(n, h->nodes[parent]))
            break;
        place(h, i, h->nodes[parent]);
        i = parent;
    }
    place(h, i, n);
}

/* Moves the node at <i> towards the leaves while a child fires before it. */
static void sift_down(wsg_timer_heap_t *h, uint32_t i) {
    wsg_timer_node_t *n = h->nodes[i];
    for (;;) {
        /* 64-bit arithmetic: 2 * i + 1 can exceed UINT32_MAX for very large
         * heaps even though count cannot. */
        uint64_t child = 2 * (uint64_t)i + 1;
        if (child >= h->count)
            break;
        if (child + 1 < h->count && before(h->nodes[child + 1], h->nodes[child]))
            child++;
        if (!before(h->nodes[child], n))
            break;
        place(h, i, h->nodes[child]);
        i = (uint32_t)child;
    }
    place(h, i, n);
}

static int grow(wsg_timer_heap_t *h) {
    /* WSG_TIMER_NOT_QUEUED (UINT32_MAX) is reserved, so the largest usable
     * capacity is UINT32_MAX - 1 slots (indices 0 .. UINT32_MAX - 2). */
    const uint32_t max_cap = UINT32_MAX - 1;
    if (h->cap >= max_cap)
        return HEAP_ENOMEM;
    uint32_t cap = h->cap == 0 ? HEAP_MIN_CAP : (h->cap > max_cap / 2 ? max_cap : h->cap * 2);
    /* Only a 32-bit size_t can overflow here. */
    size_t bytes = (size_t)cap * sizeof(*h->nodes);
    if (bytes / sizeof(*h->nodes) != cap)
        return HEAP_ENOMEM;
    wsg_timer_node_t **nodes = realloc(h->nodes, bytes);
    if (nodes == NULL)
        return HEAP_ENOMEM;
    h->nodes = nodes;
    h->cap = cap;
    return 0;
}

/* Takes the node at <i> out and restores the heap property around the hole
 * by moving the last node into it. */
static void remove_at(wsg_timer_heap_t *h, uint32_t i) {
    wsg_timer_node_t *gone = h->nodes[i];
    uint32_t last = --h->count;
    gone->index = WSG_TIMER_NOT_QUEUED;
    if (i == last)
        return;
    place(h, i, h->nodes[last]);
    /* The moved node came from another subtree, so it may belong above or
     * below its new slot; only one of the two sifts can move it. */
    if (i > 0 && before(h->nodes[i], h->nodes[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

int wsg_timer_heap_schedule(wsg_timer_heap_t *h, wsg_timer_node_t *n, uint64_t deadline) {
    if (wsg_timer_node_queued(n)) {
        assert(n->index < h->count && h->nodes[n->index] == n);
        uint32_t i = n->index;
        /* A rescheduled node counts as newly scheduled for FIFO purposes:
         * it queues behind nodes already waiting for the same deadline. */
        n->deadline = deadline;
        n->seq = h->next_seq++;
        if (i > 0 && before(n, h->nodes[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
        return 0;
    }
    if (h->count == h->cap) {
        int rc = grow(h);
        if (rc != 0)
            return rc;
    }
    n->deadline = deadline;
    n->seq = h->next_seq++;
    place(h, h->count, n);
    h->count++;
    sift_up(h, n->index);
    return 0;
}

void wsg_timer_heap_cancel(wsg_timer_heap_t *h, wsg_timer_node_t *n) {
    if (!wsg_timer_node_queued(n))
        return;
    assert(n->index < h->count && h->nodes[n->index] == n);
    remove_at(h, n->index);
}

wsg_timer_node_t *wsg_timer_heap_peek(const wsg_timer_heap_t *h) {
    return h->count > 0 ? h->nodes[0] : NULL;
}

wsg_timer_node_t *wsg_timer_heap_pop_due(wsg_timer_heap_t *h, uint64_t now) {
    if (h->count == 0 || h->nodes[0]->deadline > now)
        return NULL;
    wsg_timer_node_t *n = h->nodes[0];
    remove_at(h, 0);
    return n;
}
