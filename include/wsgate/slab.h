/*
 * Per-worker slab of fixed-size objects: the connection and backend
 * connection structs, which live as long as their sockets.
 *
 * Why not malloc: a connection storm interleaves these long-lived structs
 * with short-lived handshake state (request heads, parsed headers), and
 * when the handshake state is freed malloc's heap is left with holes that
 * the connections pin: resident memory per idle connection ends up well
 * above the struct size. Here the objects sit packed in 64 KiB blocks of
 * their own, with no per-object header, and a block that empties goes back
 * to the kernel (one spare is kept, so a connection opening and closing at
 * a block's edge does not map and unmap each time).
 *
 * Under AddressSanitizer every object is its own calloc() instead, so
 * that LeakSanitizer still reports a leaked connection and ASan an overrun
 * of one (<passthru> says which applies).
 *
 * Not thread-safe: one slab per object type per worker.
 */
#ifndef WSGATE_SLAB_H
#define WSGATE_SLAB_H

#include <stddef.h>

#define WSG_SLAB_BLOCK ((size_t)64 * 1024)

typedef struct wsg_slab_block_s wsg_slab_block_t;

typedef struct wsg_slab_s {
    wsg_slab_block_t *partial; /* private: blocks with a free object */
    wsg_slab_block_t *spare;   /* private: one empty block kept mapped */
    size_t size;               /* read-only: object size, a multiple of 8: the
                                  alignment of the pointers and 64-bit integers
                                  the structs it holds are made of */
    unsigned per_block;        /* read-only: objects in a block */
    size_t in_use;             /* read-only: objects handed out */
    size_t blocks;             /* read-only: blocks mapped, the spare included */
    int passthru;              /* read-only: objects come from calloc (ASan builds) */
} wsg_slab_t;

/* <size> > 0 and at most what a block holds after its header. */
void wsg_slab_init(wsg_slab_t *s, size_t size);
/* Unmaps every block; objects still in use must not be touched again. */
void wsg_slab_close(wsg_slab_t *s);
/* A zeroed object, or NULL on ENOMEM. */
void *wsg_slab_alloc(wsg_slab_t *s);
/* An object as its last user left it, or NULL on ENOMEM: for a type that
 * initialises only what it uses (a head parser's table of 100 headers is
 * written as headers arrive, so zeroing its 2.2 KB for every head would be
 * work for nothing). */
void *wsg_slab_alloc_raw(wsg_slab_t *s);
/* Gives <obj> (from either alloc on this slab) back. NULL is a no-op. */
void wsg_slab_free(wsg_slab_t *s, void *obj);

#endif /* WSGATE_SLAB_H */
