/*
 * Buffer pool: fixed-size I/O chunks for one worker.
 *
 * A worker reads into chunks taken from here and gives each back once its
 * bytes have been written on, so an idle connection holds no buffer (SPEC §4)
 * and a busy worker does not pay malloc/free per read. The pool is a plain
 * LIFO free list threaded through the free chunks themselves (the first
 * pointer-sized bytes of a free chunk hold the next link), so it needs no
 * bookkeeping memory of its own; LIFO also hands back the chunk most likely
 * to still be in cache. It is deliberately not thread-safe and does not track
 * chunks in use: one pool per worker, and every chunk goes back to the pool
 * it came from. The free list is bounded by max_free so that memory taken
 * during a burst is returned to malloc instead of being pinned for good.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/bufpool.h>

/* The link is read and written with memcpy: a chunk is raw bytes to the
 * caller, and this keeps the free-list access free of aliasing questions. */
static void *next_of(void *chunk) {
    void *next;
    memcpy(&next, chunk, sizeof(next));
    return next;
}

static void set_next(void *chunk, void *next) {
    memcpy(chunk, &next, sizeof(next));
}

void wsg_bufpool_init(wsg_bufpool_t *p, size_t chunk_size, size_t max_free) {
    assert(chunk_size >= sizeof(void *));
    /* A chunk must be able to hold the free-list link. */
    if (chunk_size < sizeof(void *))
        chunk_size = sizeof(void *);
    p->free_list = NULL;
    p->chunk_size = chunk_size;
    p->nfree = 0;
    p->max_free = max_free;
    p->in_use = 0;
    p->peak_in_use = 0;
}

void wsg_bufpool_close(wsg_bufpool_t *p) {
    assert(p->in_use == 0);
    void *c = p->free_list;
    while (c != NULL) {
        void *next = next_of(c);
        free(c);
        c = next;
    }
    p->free_list = NULL;
    p->nfree = 0;
}

void *wsg_bufpool_get(wsg_bufpool_t *p) {
    void *c = p->free_list;
    if (c != NULL) {
        p->free_list = next_of(c);
        p->nfree--;
    } else {
        c = malloc(p->chunk_size);
        if (c == NULL)
            return NULL;
    }
    p->in_use++;
    if (p->in_use > p->peak_in_use)
        p->peak_in_use = p->in_use;
    return c;
}

void wsg_bufpool_put(wsg_bufpool_t *p, void *chunk) {
    if (chunk == NULL)
        return;
    assert(p->in_use > 0);
    p->in_use--;
    if (p->nfree >= p->max_free) {
        free(chunk);
        return;
    }
    set_next(chunk, p->free_list);
    p->free_list = chunk;
    p->nfree++;
}
