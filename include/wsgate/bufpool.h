/*
 * Per-worker pool of fixed-size I/O chunks.
 *
 * Read buffers are taken from the pool when a socket becomes readable and go
 * back as soon as their bytes are written on, so a connection with nothing
 * in flight holds no buffer at all. Freed chunks are kept on a free list up
 * to a bound and released to malloc beyond it, so a burst does not pin its
 * peak memory forever. Not thread-safe: one pool per worker.
 */
#ifndef WSGATE_BUFPOOL_H
#define WSGATE_BUFPOOL_H

#include <stddef.h>

typedef struct wsg_bufpool_s {
    void *free_list;    /* private: singly linked through the chunks */
    size_t chunk_size;  /* read-only */
    size_t nfree;       /* read-only: chunks on the free list */
    size_t max_free;    /* read-only: bound on nfree */
    size_t in_use;      /* read-only: chunks handed out and not returned */
    size_t peak_in_use; /* read-only */
} wsg_bufpool_t;

/* <chunk_size> >= sizeof(void *); <max_free> chunks are cached at most. */
void wsg_bufpool_init(wsg_bufpool_t *p, size_t chunk_size, size_t max_free);
/* Frees the cached chunks. Chunks still in use are the caller's bug; they
 * are not tracked and must be returned before. */
void wsg_bufpool_close(wsg_bufpool_t *p);
/* Returns a chunk of chunk_size bytes (uninitialised), or NULL on ENOMEM. */
void *wsg_bufpool_get(wsg_bufpool_t *p);
/* Gives <chunk> back. NULL is a no-op. */
void wsg_bufpool_put(wsg_bufpool_t *p, void *chunk);

#endif /* WSGATE_BUFPOOL_H */
