/*
 * The slab (slab.h): blocks are WSG_SLAB_BLOCK bytes, aligned to their
 * size, so an object finds its block by masking its address. A block
 * begins with its header; its free objects are linked through their first
 * word. Blocks with a free object are on a doubly linked list, so freeing
 * into a full block and releasing an empty one are O(1).
 */
#include <wsgate/slab.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_PASSTHRU 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_PASSTHRU 1
#endif
#endif
#ifndef SLAB_PASSTHRU
#define SLAB_PASSTHRU 0
#endif

struct wsg_slab_block_s {
    wsg_slab_block_t *prev, *next; /* on the partial list while it has a free object */
    void *free_list;
    unsigned used;
    unsigned on_list;
};

#define HEADER_SIZE ((sizeof(wsg_slab_block_t) + 15) & ~(size_t)15)

void wsg_slab_init(wsg_slab_t *s, size_t size) {
    memset(s, 0, sizeof(*s));
    s->size = (size + 7) & ~(size_t)7;
    s->per_block = (unsigned)((WSG_SLAB_BLOCK - HEADER_SIZE) / s->size);
    s->passthru = SLAB_PASSTHRU;
}

/* WSG_SLAB_BLOCK bytes aligned to WSG_SLAB_BLOCK: twice that is mapped and
 * the misaligned ends are unmapped again. */
static wsg_slab_block_t *map_block(void) {
    size_t len = 2 * WSG_SLAB_BLOCK;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uintptr_t a = ((uintptr_t)p + WSG_SLAB_BLOCK - 1) & ~(uintptr_t)(WSG_SLAB_BLOCK - 1);
    char *b = (char *)a;
    if (b > p)
        munmap(p, (size_t)(b - p));
    if (b + WSG_SLAB_BLOCK < p + len)
        munmap(b + WSG_SLAB_BLOCK, (size_t)(p + len - (b + WSG_SLAB_BLOCK)));
    return (wsg_slab_block_t *)(void *)b;
}

static void list_add(wsg_slab_t *s, wsg_slab_block_t *b) {
    b->prev = NULL;
    b->next = s->partial;
    if (s->partial != NULL)
        s->partial->prev = b;
    s->partial = b;
    b->on_list = 1;
}

static void list_remove(wsg_slab_t *s, wsg_slab_block_t *b) {
    if (b->prev != NULL)
        b->prev->next = b->next;
    else
        s->partial = b->next;
    if (b->next != NULL)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
    b->on_list = 0;
}

/* A fresh block's objects, linked in address order (the first handed out
 * first, so a lightly used block touches few pages). */
static void format_block(wsg_slab_t *s, wsg_slab_block_t *b) {
    char *base = (char *)b + HEADER_SIZE;
    b->free_list = NULL;
    for (unsigned i = s->per_block; i-- > 0;) {
        void **obj = (void **)(void *)(base + (size_t)i * s->size);
        *obj = b->free_list;
        b->free_list = obj;
    }
    b->used = 0;
}

static wsg_slab_block_t *new_block(wsg_slab_t *s) {
    wsg_slab_block_t *b = s->spare;
    if (b != NULL) {
        s->spare = NULL;
    } else {
        if ((b = map_block()) == NULL)
            return NULL;
        s->blocks++;
        format_block(s, b);
    }
    list_add(s, b);
    return b;
}

static void *take(wsg_slab_t *s) {
    wsg_slab_block_t *b = s->partial;
    if (b == NULL && (b = new_block(s)) == NULL)
        return NULL;
    void **obj = b->free_list;
    b->free_list = *obj;
    b->used++;
    if (b->free_list == NULL)
        list_remove(s, b);
    s->in_use++;
    return obj;
}

void *wsg_slab_alloc(wsg_slab_t *s) {
    if (s->passthru) {
        void *obj = calloc(1, s->size);
        s->in_use += obj != NULL;
        return obj;
    }
    void *obj = take(s);
    if (obj != NULL)
        memset(obj, 0, s->size);
    return obj;
}

void *wsg_slab_alloc_raw(wsg_slab_t *s) {
    if (s->passthru) {
        void *obj = malloc(s->size);
        s->in_use += obj != NULL;
        return obj;
    }
    return take(s);
}

void wsg_slab_free(wsg_slab_t *s, void *obj) {
    if (obj == NULL)
        return;
    if (s->passthru) {
        free(obj);
        s->in_use--;
        return;
    }
    wsg_slab_block_t *b =
        (wsg_slab_block_t *)(void *)((uintptr_t)obj & ~(uintptr_t)(WSG_SLAB_BLOCK - 1));
    *(void **)obj = b->free_list;
    b->free_list = obj;
    b->used--;
    s->in_use--;
    if (!b->on_list)
        list_add(s, b);
    if (b->used > 0)
        return;
    list_remove(s, b);
    if (s->spare == NULL) {
        s->spare = b;
        return;
    }
    munmap(b, WSG_SLAB_BLOCK);
    s->blocks--;
}

void wsg_slab_close(wsg_slab_t *s) {
    /* Every block is on the partial list, full (reachable from nowhere:
     * leaked objects), or the spare; only the first and the last can be
     * found, which is why objects must be freed before. */
    while (s->partial != NULL) {
        wsg_slab_block_t *b = s->partial;
        list_remove(s, b);
        munmap(b, WSG_SLAB_BLOCK);
    }
    if (s->spare != NULL)
        munmap(s->spare, WSG_SLAB_BLOCK);
    s->spare = NULL;
    s->blocks = 0;
    s->in_use = 0;
}
