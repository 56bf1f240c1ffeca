/*
 * A worker: one thread, one uv loop, and everything accepted on it.
 *
 * Workers share nothing mutable on the hot path. Each owns its loop, its
 * listening sockets (SO_REUSEPORT: the kernel spreads new connections), its
 * connections, a buffer pool, a deadline heap driven by a single uv timer, and
 * its counters, which readers sum. The server talks to a worker only through
 * wsg_worker_post() (a uv_async_t), the one mechanism by which shutdown (and
 * later reload and drain) reaches every worker.
 */
#ifndef WSGATE_WORKER_H
#define WSGATE_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include <wsgate/balancer.h>
#include <wsgate/bufpool.h>
#include <wsgate/slab.h>
#include <wsgate/timer_heap.h>

typedef struct wsg_worker_s wsg_worker_t;
typedef struct wsg_conn_s wsg_conn_t;
typedef struct wsg_server_s wsg_server_t;

/* Handshake latency histogram bounds, in microseconds (the last bucket is
 * +Inf). */
#define WSG_HS_BUCKETS 14
extern const uint64_t wsg_hs_bucket_us[WSG_HS_BUCKETS - 1];

/* Why the edge checks (SPEC §11) refused a request or closed a WebSocket:
 * the reason label of wsgate_refused_total. */
typedef enum {
    WSG_REFUSED_ORIGIN = 0,   /* Origin not allowed, missing or repeated: 403 */
    WSG_REFUSED_NO_TOKEN,     /* 401 with WWW-Authenticate: Bearer */
    WSG_REFUSED_BAD_TOKEN,    /* malformed, bad signature, unknown key: 401 */
    WSG_REFUSED_EXPIRED,      /* expired or not yet valid: 401 */
    WSG_REFUSED_CLAIMS,       /* wrong iss or aud: 403 */
    WSG_REFUSED_TWO_TOKENS,   /* two different tokens in one request: 401 */
    WSG_REFUSED_RATE,         /* handshakes_per_ip_per_s: 429 */
    WSG_REFUSED_MESSAGES,     /* messages_per_s: close 1008 */
    WSG_REFUSED_EXPIRY_CLOSE, /* close_on_expiry: close 1008 */
    WSG_REFUSED_N,
} wsg_refused_t;

/* The label of each reason ("origin", "no_token", ...). */
extern const char *const wsg_refused_names[WSG_REFUSED_N];

/* Counters of one worker, written only by its thread (relaxed atomics so a
 * reader on another thread gets whole values). */
typedef struct wsg_worker_stats_s {
    _Atomic uint64_t conns_total;
    _Atomic uint64_t conns_active;
    _Atomic uint64_t conns_rejected;
    _Atomic uint64_t frames[2];     /* [0] client->backend, [1] backend->client */
    _Atomic uint64_t bytes[2];
    _Atomic uint64_t closes[16];    /* 1000..1015 by code - 1000; others in [15] */
    _Atomic uint64_t heartbeat_timeouts;
    _Atomic uint64_t idle_timeouts;
    _Atomic uint64_t protocol_errors;
    _Atomic uint64_t handshake_status[600];
    _Atomic uint64_t hs_latency[WSG_HS_BUCKETS];
    _Atomic uint64_t hs_latency_sum_us;
    /* Plain HTTP exchanges (SPEC §9): by status class ([1]..[5] for 1xx..5xx,
     * [0] none), their durations, and the backend connections they opened. */
    _Atomic uint64_t http_requests[6];
    _Atomic uint64_t http_latency[WSG_HS_BUCKETS];
    _Atomic uint64_t http_latency_sum_us;
    _Atomic uint64_t upstream_opened;
    _Atomic uint64_t upstream_reused;  /* exchanges sent on a kept-alive backend connection */
    _Atomic uint64_t upstream_retried; /* requests resent after a kept-alive connection failed */
    _Atomic uint64_t upstream_idle;    /* idle in the pool now */
    _Atomic uint64_t http_streaming;   /* responses being relayed now */
    _Atomic uint64_t sse_heartbeats;   /* comments injected into silent SSE responses */
    _Atomic uint64_t refused[WSG_REFUSED_N];
    _Atomic uint64_t buffers_in_use; /* pool chunks held by connections now */
    _Atomic uint64_t buffers_cached; /* pool chunks kept for reuse */
    _Atomic uint64_t bulk_in_use;    /* WSG_BULK_SIZE chunks held by streaming peers now */
    _Atomic uint64_t bulk_cached;    /* and kept for reuse */
} wsg_worker_stats_t;

/* Records one finished handshake (status sent to the client, time since
 * accept). Worker thread only. */
void wsg_worker_count_handshake(wsg_worker_t *w, int status, uint64_t us);

/* Records one finished plain HTTP exchange: the status the client got (0:
 * none) and the time from its request head to the end of its response. */
void wsg_worker_count_request(wsg_worker_t *w, int status, uint64_t us);

/* A listening socket of this worker. Heap-allocated: a reload moves kept
 * listeners into a new array while their handles stay where they are. */
typedef struct wsg_wlistener_s {
    uv_tcp_t tcp;
    wsg_worker_t *worker;
    size_t index; /* into w->rt->cfg->listeners */
} wsg_wlistener_t;

/* Messages from the server thread (wsg_worker_post). */
typedef enum {
    WSG_MSG_STOP = 0,    /* graceful shutdown */
    WSG_MSG_RUNTIME,     /* reload: new runtime and listeners */
    WSG_MSG_DRAIN,       /* send 1012 to the clients of a backend */
    WSG_MSG_REBALANCE,   /* send 1012 to the clients whose keys moved to an added backend */
} wsg_msg_kind_t;

typedef struct wsg_worker_msg_s {
    struct wsg_worker_msg_s *next;
    wsg_msg_kind_t kind;
    wsg_runtime_t *rt;        /* RUNTIME, REBALANCE: a reference the worker takes over */
    int *fds;                 /* RUNTIME: per listener of rt: fd to adopt, or -1 to keep
                                 the worker's listener bound to the same address; owned */
    wsg_backend_t *backend;   /* DRAIN: a reference the worker takes over */
    uint64_t spread_ms;       /* DRAIN */
    size_t pool;              /* REBALANCE: index into rt's pools */
    uint64_t interval_us;     /* REBALANCE: this worker's closes are this far apart */
} wsg_worker_msg_t;

struct wsg_worker_s {
    unsigned id;                  /* read-only */
    wsg_server_t *server;         /* read-only, borrowed */
    uv_loop_t loop;               /* private */
    uv_thread_t thread;           /* private */
    uv_async_t async;             /* private: wakes the loop for posted messages */
    uv_mutex_t mq_lock;           /* private: guards mq_head/mq_tail */
    wsg_worker_msg_t *mq_head, *mq_tail;
    uv_timer_t timer;             /* private: fires for the top of <deadlines> */
    uint64_t timer_due;           /* private: what <timer> is armed for, UINT64_MAX idle */
    wsg_timer_heap_t deadlines;   /* private */
    wsg_bufpool_t bufs;           /* private */
    wsg_bufpool_t bulk;           /* private: WSG_BULK_SIZE chunks for streaming bodies */
    wsg_slab_t conn_slab;         /* private: where its wsg_conn_t structs live */
    wsg_slab_t head_slab;         /* private: the HTTP heads its connections parse */
    wsg_runtime_t *rt;            /* owned reference: what new connections use */
    wsg_wlistener_t **listeners;  /* owned array of owned listeners */
    size_t nlisteners;
    wsg_conn_t *conns;            /* private: intrusive list of live connections */
    struct wsg_upstreams_s *upstreams; /* private: idle backend connections (proxy/upstream.c) */
    uint64_t next_conn_id;
    uint64_t rng;                 /* private: xorshift state for masks and jitter */
    bool stopping;
    bool want_uring;              /* read-only: set by the server before start (config "io") */
    struct wsg_uring_s *ring;     /* private: plain sides' io_uring, NULL on epoll */
    bool on_uring;                /* read-only once started: the ring came up */
    uv_sem_t started;             /* private: posted by the thread once its I/O is set up */
    /* Called on the worker's thread once its loop has ended. */
    void (*on_exit)(wsg_server_t *srv);
    wsg_worker_stats_t stats;
};

/* Size of a buffer-pool chunk: the unit of reads and queued writes. */
#define WSG_CHUNK_SIZE (16 * 1024)
/* The bigger chunk a plain HTTP response body is read into once it streams
 * (a read filled a whole chunk): four times fewer reads and writes. */
#define WSG_BULK_SIZE (64 * 1024)

/* Prepares worker <id> with the listening sockets <fds> (one per listener of
 * <rt>'s config, already bound). Takes a reference to <rt>. Returns 0 or a
 * UV_E* code. Runs on the server thread. */
int wsg_worker_init(wsg_worker_t *w, wsg_server_t *srv, unsigned id, wsg_runtime_t *rt,
                    const int *fds);
/* Starts the worker's thread and returns once it has set up its I/O (its
 * ring, when it wants one), so that what the process holds and reports
 * (on_uring) is settled before the admin endpoint answers. */
int wsg_worker_start(wsg_worker_t *w);
/* Hands <msg> (heap-allocated, taken) to the worker; thread-safe. */
void wsg_worker_post(wsg_worker_t *w, wsg_worker_msg_t *msg);
/* Asks the worker to stop gracefully (thread-safe). */
void wsg_worker_request_stop(wsg_worker_t *w);
/* Waits for the thread and frees the worker's resources. */
void wsg_worker_join(wsg_worker_t *w);

/* The counters of the worker's io_uring (wsgate/uring.h) into <out>, and
 * true; false with <out> zeroed when the worker runs on epoll. Server
 * thread only, from wsg_worker_start() (the ring exists once it returns)
 * to wsg_worker_join() (which frees it; false after that): the ring keeps
 * its counters as atomics, so they are read while the worker runs. */
struct wsg_uring_stats_s;
bool wsg_worker_uring_stats(const wsg_worker_t *w, struct wsg_uring_stats_s *out);

/* Deadline service for the worker's connections (worker thread only). */
void wsg_worker_schedule(wsg_worker_t *w, wsg_timer_node_t *n, uint64_t deadline);
void wsg_worker_unschedule(wsg_worker_t *w, wsg_timer_node_t *n);

/* A 64-bit pseudo-random number from the worker's own generator. */
uint64_t wsg_worker_random(wsg_worker_t *w);

/* The per-address token buckets of handshakes_per_ip_per_s (borrowed). */
struct wsg_rate_table_s *wsg_server_rate_table(wsg_server_t *srv);
/* The per-address counts for max_connections_per_ip (borrowed). */
struct wsg_ip_limit_s *wsg_server_ip_limit(wsg_server_t *srv);

/* The server-wide count of open client connections (max_connections). */
bool wsg_server_conn_admit(wsg_server_t *srv, uint64_t max);
void wsg_server_conn_release(wsg_server_t *srv);

#endif /* WSGATE_WORKER_H */
