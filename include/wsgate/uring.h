/*
 * One io_uring per worker, driven from the worker's libuv loop: the ring's
 * fd sits under a uv_poll_t (completions are reaped in its callback) and
 * the requests queued during an iteration are submitted together from a
 * uv_prepare_t, just before the loop blocks. Sides move onto the ring with
 * wsg_side_use_uring() (transport.h) once they are connected.
 */
#ifndef WSGATE_URING_H
#define WSGATE_URING_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <wsgate/transport.h>

/* What the io_uring transport needs, tried on a scratch ring: 0 when it
 * works, else a negative errno with <why> (a sentence fragment for the log,
 * e.g. "io_uring is disabled by the kernel.io_uring_disabled sysctl"). */
int wsg_uring_probe(char *why, size_t cap);

/* A ring on <loop>, created on the thread that will run <loop> (the ring
 * is single-issuer). Returns 0 or a negative errno. */
int wsg_uring_new(uv_loop_t *loop, wsg_uring_t **out);

/* Closes the ring's handles; the ring itself is freed by their close
 * callbacks, so the loop must run once more (uv_run) after this. Every side
 * must have been closed and its close callback run first. */
void wsg_uring_close(wsg_uring_t *r);

/* The ring's counters, for /metrics (the wsgate_io_uring_* families,
 * docs/metrics.md). <submits>, <cqes> and <enobufs> only grow; <sides>,
 * <buffers> and <stashed> are levels (<buffers> never shrinks). Callable
 * from any thread while the ring lives (up to wsg_uring_close()): the ring
 * keeps them as relaxed atomics, so each value is whole, though the six
 * are not read at one instant. NULL <r>: all zero. */
typedef struct wsg_uring_stats_s {
    uint64_t submits;      /* io_uring_enter calls that submitted */
    uint64_t cqes;         /* completions reaped */
    uint64_t enobufs;      /* recvs ended by an empty buffer ring (ENOBUFS; each grows it) */
    uint64_t sides;        /* sides on the ring now */
    uint64_t buffers;      /* receive buffers given to the buffer ring (grows on ENOBUFS) */
    uint64_t stashed;      /* bytes received for sides whose caller is not reading now */
} wsg_uring_stats_t;
void wsg_uring_stats(const wsg_uring_t *r, wsg_uring_stats_t *out);

#endif /* WSGATE_URING_H */
