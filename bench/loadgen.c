/*
 * loadgen: the WebSocket load generator of wsgate's benchmark (bench/compare).
 *
 * One libuv loop, one thread, the client side of RFC 6455 done by hand: a
 * random Sec-WebSocket-Key per connection and the Sec-WebSocket-Accept of
 * the 101 checked (§4.1-4.2), every frame masked with a fresh key (§5.3),
 * pings answered, the closing handshake done (§7). Modes:
 *   pingpong   C connections, one S-byte message in flight on each;
 *   stream     the same with W messages in flight per connection;
 *   idle       N connections opened (spread over source addresses
 *              127.0.0.2.. so that one address's port range is no limit),
 *              held, optionally each carrying one message and its echo;
 *   handshake  K loops of connect, upgrade, close handshake, repeat.
 * Every echoed payload is checked byte for byte: each message starts with an
 * 8-byte stamp (connection id, sequence number) followed by a fixed random
 * pattern, so a lost, duplicated, reordered or corrupted message is an error.
 * The run has a warm-up, then a measured window (a duration or a message
 * count); with --pid the CPU time (utime+stime from /proc/PID/stat) and RSS
 * of the process under test are sampled at the edges of that window, so the
 * figures cover exactly the messages counted. Output: a human summary on
 * stderr and one JSON line on stdout.
 *
 * With --tls every mode runs over TLS (wss): OpenSSL 3 on the same loop,
 * SNI sent (localhost unless --sni), ALPN http/1.1 offered, the server's
 * certificate not verified, and a full handshake on every connection (no
 * session is ever offered for resumption; the JSON counts resumed sessions
 * and the tickets servers send, to show it).
 *
 * It does not do extensions, subprotocols or fragmentation on send
 * (fragmented echoes are reassembled and checked all the same), and it keeps
 * no history beyond latency samples.
 *
 * Key design choice: nothing is allocated per message. Each connection has
 * two output buffers (one being filled, one pinned under a uv_write) and
 * sends with uv_try_write first, so a message normally costs one send(2);
 * reads go into one loop-wide buffer and frames are parsed and verified
 * straight from it. The generator must cost well under the proxy it drives.
 * TLS goes through a small custom BIO instead of memory BIOs: its read side
 * serves the ciphertext of the current read straight from that loop-wide
 * buffer, and its write side hands each ciphertext flight to uv_try_write
 * at once, queueing only what the socket did not take; decrypted bytes land
 * in a second loop-wide buffer. Without --tls none of this is on the path.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <uv.h>

#define RBUF_SIZE (256u * 1024u)
#define HEAD_MAX 4096u
#define CTRL_MAX 125u
#define MAX_PIDS 8
#define LAT_CAP (32u * 1024u * 1024u) /* latency samples kept (128 MiB) */
#define TICK_MS 50
#define CLOSE_WAIT_MS 2000 /* bound on a closing handshake */
#define STAMP_LEN 8
#define PBUF_SIZE (64u * 1024u) /* plaintext taken per SSL_read (records are <= 16 KiB) */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

enum mode { MODE_PINGPONG, MODE_STREAM, MODE_IDLE, MODE_HANDSHAKE };
static const char *const mode_names[] = {"pingpong", "stream", "idle", "handshake"};

/* Connection states:
 *
 *   CONNECTING --connect--> UPGRADING --101 ok--> OPEN --close sent--> CLOSING
 *        |                      |                   |                     |
 *        +--------error---------+--------error------+----close/EOF/timeout+--> DEAD
 *
 * DEAD means uv_close was called; the slot is reusable after its close_cb. */
enum cstate { CS_FREE, CS_CONNECTING, CS_UPGRADING, CS_OPEN, CS_CLOSING, CS_DEAD };

/* Run phases: SETUP (connecting) -> WARMUP -> MEASURE -> DRAIN (no new
 * messages, in-flight ones come back) -> CLOSE (closing handshakes) -> END.
 * Idle mode goes SETUP -> SETTLE -> PING -> SETTLE2 -> HOLD -> CLOSE. */
enum phase {
    PH_SETUP,
    PH_WARMUP,
    PH_MEASURE,
    PH_DRAIN,
    PH_SETTLE,
    PH_PING,
    PH_SETTLE2,
    PH_HOLD,
    PH_CLOSE,
    PH_END
};

typedef struct opts_s {
    enum mode mode;
    const char *host;
    int port;
    const char *path;
    unsigned conns;       /* connections (idle) or loops (handshake) */
    size_t size;          /* payload bytes per message */
    unsigned window;      /* messages in flight per connection */
    double duration;      /* measured seconds (0 with --messages) */
    double warmup;        /* seconds before the window opens */
    uint64_t messages;    /* end the window after this many echoes (0 = by time) */
    unsigned src_addrs;   /* bind to 127.0.0.2..(1+n); 0 = let the kernel pick */
    unsigned concurrency; /* connection attempts in progress at once */
    bool idle_ping;       /* idle: one message per connection once all are open */
    double settle;        /* idle: seconds to wait before sampling RSS */
    double hold;          /* idle: seconds to hold after the last sample */
    double timeout;       /* overall bound, seconds */
    pid_t pids[MAX_PIDS]; /* processes whose CPU and RSS are sampled (summed) */
    unsigned npids;
    pid_t backend_pid; /* sampled separately, for the record */
    const char *label;
    bool quiet;
    bool tls;            /* wss: TLS to the server */
    const char *sni;     /* server name sent in the ClientHello */
    int tls_version;     /* 0 = 1.2 or 1.3 as negotiated, else TLS1_2_VERSION / TLS1_3_VERSION */
} opts_t;

typedef struct obuf_s {
    uint8_t *p;
    size_t len, cap;
} obuf_t;

typedef struct lg_s lg_t;

typedef struct conn_s {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    lg_t *lg;
    uint32_t id;
    enum cstate st;
    uint64_t t_start;  /* ns: connect started */
    uint64_t deadline; /* ns: bound on the current state (0 = none) */
    char *head;        /* response head while UPGRADING, HEAD_MAX bytes */
    size_t head_len;
    char accept[32];      /* expected Sec-WebSocket-Accept */
    obuf_t ob;            /* being filled */
    obuf_t wb;            /* pinned under wreq while <writing> */
    bool writing;
    bool sent_close;      /* our close frame is queued */
    bool got_close;       /* the peer's close frame arrived */
    bool counted;         /* handshake mode: the cycle completed */
    /* Server-to-client frame parser (RFC 6455 §5.2; frames are unmasked). */
    uint8_t fh[14];
    unsigned fh_len, fh_need;
    uint8_t op;     /* opcode of the frame being read */
    bool fin;       /* FIN bit of the frame being read */
    uint64_t frem;  /* payload bytes left in that frame */
    bool in_msg;    /* a data message is under way (continuations expected) */
    uint64_t moff;  /* bytes of that message seen so far */
    bool bad_msg;   /* that message already failed verification */
    uint8_t ctrl[CTRL_MAX];
    unsigned ctrl_len;
    /* Messages. */
    uint64_t sent, recvd; /* data messages sent / echoed on this connection */
    uint64_t *ts;         /* send time of message seq at ts[seq % window] */
    /* TLS (--tls only): ob holds plaintext, cq ciphertext the socket has not
     * taken yet (wb is then the part of it under wreq). */
    SSL *ssl;
    obuf_t cq;
    bool tls_up;   /* handshake complete */
    bool tls_werr; /* a ciphertext write failed inside an OpenSSL call */
} conn_t;

#define MAX_CPUS 64

typedef struct cpu_sample_s {
    double proxy_s, backend_s, self_s; /* CPU seconds */
    double busy_s[MAX_CPUS];           /* per CPU, from /proc/stat */
    double steal_s[MAX_CPUS];
    unsigned ncpu;
    long proxy_rss_kb;
    uint64_t t; /* ns */
} cpu_sample_t;

struct lg_s {
    opts_t o;
    uv_loop_t *loop;
    uv_timer_t phase_timer, tick, guard;
    uv_signal_t sigint, sigterm;
    struct sockaddr_in dst;
    conn_t *conns;
    unsigned nconns;
    unsigned next;     /* next slot to start during SETUP */
    unsigned pending;  /* slots CONNECTING or UPGRADING */
    unsigned open;     /* slots OPEN */
    unsigned settled;  /* idle/setup: slots that are open or failed */
    unsigned live;     /* slots with an open uv handle */
    unsigned pinged;   /* idle: echoes of the one message */
    unsigned n_est;    /* connections open when SETUP ended */
    unsigned half;     /* idle: pause the setup here to sample RSS (0 = no) */
    int half_state;    /* 0 before the pause, 1 during, 2 after */
    unsigned n_half;   /* connections open at the pause */
    uint64_t inflight; /* data messages sent and not yet echoed */
    uint8_t *rbuf;
    uint8_t *pattern; /* payload pattern, <size> bytes */
    uint64_t rng;
    enum phase phase;
    bool measuring;
    bool aborted;
    const char *abort_reason;
    char req[512]; /* request head template up to the key */
    size_t req_len;
    /* Counters of the measured window. */
    uint64_t msgs, bytes, handshakes;
    uint64_t msgs_total, handshakes_total;
    struct {
        uint64_t connect, upgrade, payload, protocol, eof, timeout, write, lost, tls;
    } err;
    uint32_t *lat; /* ns, one per message or handshake of the window */
    size_t nlat, lat_cap;
    uint64_t lat_dropped;
    cpu_sample_t s0, s1;
    long rss_base_kb, rss_half_kb, rss_open_kb, rss_ping_kb;
    double setup_s, ping_s;
    uint64_t t_setup0, t_ping0;
    /* TLS. */
    SSL_CTX *ssl_ctx;
    BIO_METHOD *biom;
    uint8_t *pbuf;          /* decrypted bytes, PBUF_SIZE */
    conn_t *tin_conn;       /* whose ciphertext tin is */
    const uint8_t *tin;     /* ciphertext of the current read not yet given to OpenSSL */
    size_t tin_len;
    uint64_t tls_hs, tls_resumed, tls_tickets;
    char tls_version[16], tls_cipher[64], tls_group[32], tls_alpn[32];
};

static void conn_start(conn_t *c);
static void conn_kill(conn_t *c);
static void conn_flush(conn_t *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void send_upgrade(conn_t *c);
static void tls_start(conn_t *c);
static void tls_read(conn_t *c, const uint8_t *p, size_t n);
static void phase_next(lg_t *lg);
static void lg_abort(lg_t *lg, const char *why);

/* ---- small helpers ------------------------------------------------------- */

static uint64_t now_ns(void) { return uv_hrtime(); }

/* xorshift64*: masks and keys only need to be unpredictable to a script in
 * the payload (RFC 6455 §10.3), not cryptographically strong. */
static uint64_t rnd(lg_t *lg) {
    uint64_t x = lg->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    lg->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void stamp_bytes(uint32_t id, uint64_t seq, uint8_t out[STAMP_LEN]) {
    uint64_t v = ((uint64_t)id << 40) | (seq & ((1ULL << 40) - 1));
    for (int i = 0; i < STAMP_LEN; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields are counted
     * from the last ')'. utime and stime are fields 14 and 15 (proc(5)). */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kb(pid_t pid) {
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Busy and stolen time of every CPU (proc(5), /proc/stat): with the
 * processes' own times, it tells how much of a CPU went to other programs
 * during the window, i.e. how noisy the measurement was. */
static void proc_cpus(cpu_sample_t *s) {
    char line[512];
    double tck = (double)sysconf(_SC_CLK_TCK);
    FILE *f = fopen("/proc/stat", "r");
    s->ncpu = 0;
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned id;
        unsigned long long us, ni, sy, idle, io, irq, sirq, st;
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
            continue;
        if (sscanf(line + 3, "%u %llu %llu %llu %llu %llu %llu %llu %llu", &id, &us, &ni, &sy,
                   &idle, &io, &irq, &sirq, &st) != 9 ||
            id >= MAX_CPUS)
            continue;
        s->busy_s[id] = (double)(us + ni + sy + irq + sirq) / tck;
        s->steal_s[id] = (double)st / tck;
        if (id + 1 > s->ncpu)
            s->ncpu = id + 1;
    }
    fclose(f);
}

static void sample(lg_t *lg, cpu_sample_t *s) {
    struct rusage ru;
    proc_cpus(s);
    s->proxy_s = 0;
    s->proxy_rss_kb = 0;
    for (unsigned i = 0; i < lg->o.npids; i++) {
        double v = proc_cpu_s(lg->o.pids[i]);
        long r = proc_rss_kb(lg->o.pids[i]);
        s->proxy_s += v > 0 ? v : 0;
        s->proxy_rss_kb += r > 0 ? r : 0;
    }
    s->backend_s = lg->o.backend_pid > 0 ? proc_cpu_s(lg->o.backend_pid) : 0;
    getrusage(RUSAGE_SELF, &ru);
    s->self_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    s->t = now_ns();
}

static long rss_now(lg_t *lg) {
    long sum = 0;
    for (unsigned i = 0; i < lg->o.npids; i++) {
        long r = proc_rss_kb(lg->o.pids[i]);
        sum += r > 0 ? r : 0;
    }
    return sum;
}

static void lat_add(lg_t *lg, uint64_t ns) {
    if (lg->nlat == lg->lat_cap) {
        if (lg->lat_cap >= LAT_CAP) {
            lg->lat_dropped++;
            return;
        }
        size_t cap = lg->lat_cap ? lg->lat_cap * 2 : 65536;
        uint32_t *p = realloc(lg->lat, cap * sizeof(*p));
        if (p == NULL) {
            lg->lat_dropped++;
            return;
        }
        lg->lat = p;
        lg->lat_cap = cap;
    }
    lg->lat[lg->nlat++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of the sorted samples, in microseconds. */
static double pct_us(const lg_t *lg, double p) {
    if (lg->nlat == 0)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)lg->nlat + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > lg->nlat)
        rank = lg->nlat;
    return lg->lat[rank - 1] / 1000.0;
}

/* ---- output buffers ------------------------------------------------------ */

static uint8_t *ob_grow(obuf_t *b, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL)
            return NULL;
        b->p = p;
        b->cap = cap;
    }
    uint8_t *at = b->p + b->len;
    b->len += n;
    return at;
}

/* Appends a masked client frame header (RFC 6455 §5.2) for <len> payload
 * bytes and returns where the payload goes; <mask> receives the key. */
static uint8_t *put_header(obuf_t *b, uint8_t b0, size_t len, uint8_t mask[4], lg_t *lg) {
    size_t hl = 2 + (len < 126 ? 0 : len <= 0xffff ? 2 : 8) + 4;
    uint8_t *h = ob_grow(b, hl + len);
    if (h == NULL)
        return NULL;
    h[0] = b0;
    if (len < 126) {
        h[1] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    uint64_t r = rnd(lg);
    memcpy(mask, &r, 4);
    memcpy(h + hl - 4, mask, 4);
    return h + hl;
}

/* XORs <n> bytes at <p> with the repeating 4-byte <mask>, 8 bytes a step. */
static void mask_bytes(uint8_t *p, size_t n, const uint8_t mask[4]) {
    uint64_t m;
    memcpy(&m, mask, 4);
    memcpy((uint8_t *)&m + 4, mask, 4);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= m;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] ^= mask[i & 3];
}

static bool send_ctrl(conn_t *c, uint8_t op, const uint8_t *data, size_t len) {
    uint8_t mask[4];
    uint8_t *p = put_header(&c->ob, (uint8_t)(0x80 | op), len, mask, c->lg);
    if (p == NULL)
        return false;
    if (len)
        memcpy(p, data, len);
    mask_bytes(p, len, mask);
    return true;
}

/* Queues data message number c->sent: stamp then pattern, masked. */
static bool send_msg(conn_t *c) {
    lg_t *lg = c->lg;
    size_t n = lg->o.size;
    uint8_t mask[4], st[STAMP_LEN];
    uint8_t *p = put_header(&c->ob, 0x80 | 0x2, n, mask, lg);
    if (p == NULL)
        return false;
    memcpy(p, lg->pattern, n);
    stamp_bytes(c->id, c->sent, st);
    memcpy(p, st, n < STAMP_LEN ? n : STAMP_LEN);
    mask_bytes(p, n, mask);
    c->ts[c->sent % lg->o.window] = now_ns();
    c->sent++;
    lg->inflight++;
    return true;
}

static void send_close(conn_t *c, uint16_t code) {
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    if (c->sent_close)
        return;
    c->sent_close = true;
    send_ctrl(c, 0x8, p, 2);
}

static void on_write(uv_write_t *req, int status) {
    conn_t *c = req->data;
    c->writing = false;
    c->wb.len = 0;
    if (status < 0) {
        if (status != UV_ECANCELED && c->st != CS_DEAD) {
            c->lg->err.write++;
            conn_kill(c);
        }
        return;
    }
    if (c->st != CS_DEAD)
        conn_flush(c);
}

/* Sends the bytes queued in <q> (c->ob, or c->cq under TLS): uv_try_write
 * first, and only what the socket did not take goes into a uv_write, from
 * the buffer swapped out of the way. */
static void send_q(conn_t *c, obuf_t *q) {
    if (c->writing || q->len == 0 || c->st == CS_DEAD)
        return;
    uv_buf_t b = uv_buf_init((char *)q->p, (unsigned)q->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        c->lg->err.write++;
        conn_kill(c);
        return;
    }
    if ((size_t)n == q->len) {
        q->len = 0;
        return;
    }
    obuf_t t = c->wb;
    c->wb = *q;
    *q = t;
    q->len = 0;
    b = uv_buf_init((char *)c->wb.p + n, (unsigned)(c->wb.len - (size_t)n));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        c->lg->err.write++;
        conn_kill(c);
        return;
    }
    c->writing = true;
}

static void tls_flush(conn_t *c);

static void conn_flush(conn_t *c) {
    if (c->ssl != NULL)
        tls_flush(c);
    else
        send_q(c, &c->ob);
}

/* ---- connection life ----------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
    conn_t *c = h->data;
    lg_t *lg = c->lg;
    free(c->head);
    c->head = NULL;
    if (c->ssl != NULL) {
        SSL_free(c->ssl); /* no close_notify: the socket is gone already */
        c->ssl = NULL;
    }
    c->st = CS_FREE;
    lg->live--;
    if (lg->o.mode == MODE_HANDSHAKE && c->counted) {
        uint64_t t = now_ns();
        lg->handshakes_total++;
        if (lg->measuring) {
            lg->handshakes++;
            lat_add(lg, t - c->t_start);
        }
    }
    if (lg->o.mode == MODE_HANDSHAKE && !lg->aborted &&
        (lg->phase == PH_WARMUP || lg->phase == PH_MEASURE || lg->phase == PH_SETUP)) {
        conn_start(c); /* the next cycle of this loop */
        return;
    }
    if ((lg->phase == PH_CLOSE || lg->phase == PH_DRAIN || lg->aborted) && lg->live == 0)
        phase_next(lg);
}

/* Closes the socket now (no closing handshake). */
static void conn_kill(conn_t *c) {
    lg_t *lg = c->lg;
    if (c->st == CS_DEAD || c->st == CS_FREE)
        return;
    if (c->st == CS_CONNECTING || c->st == CS_UPGRADING) {
        lg->pending--;
        if (lg->phase == PH_SETUP)
            lg->settled++;
    } else if (c->st == CS_OPEN || c->st == CS_CLOSING) {
        lg->open--;
        /* Messages that will never come back no longer count as in flight. */
        lg->inflight -= c->sent - c->recvd;
    }
    c->st = CS_DEAD;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* Starts our closing handshake (RFC 6455 §7.1.2): close frame, then wait for
 * the peer's close frame and its FIN, under a bound. */
static void conn_close(conn_t *c) {
    if (c->st != CS_OPEN)
        return;
    c->st = CS_CLOSING;
    c->deadline = now_ns() + (uint64_t)CLOSE_WAIT_MS * 1000000u;
    send_close(c, 1000);
    conn_flush(c);
}

static void start_more(lg_t *lg) {
    unsigned limit = lg->half_state == 0 && lg->half > 0 ? lg->half : lg->nconns;
    while (lg->phase == PH_SETUP && lg->next < limit && lg->pending < lg->o.concurrency)
        conn_start(&lg->conns[lg->next++]);
}

static void setup_check(lg_t *lg);

static void on_half(uv_timer_t *t) {
    lg_t *lg = t->data;
    lg->rss_half_kb = rss_now(lg);
    lg->n_half = lg->open;
    lg->half_state = 2;
    setup_check(lg);
}

/* Idle mode samples RSS halfway too, after a pause: the growth between the
 * half and the whole is the marginal cost of a connection, free of fixed
 * costs such as the memory the first handshakes leave behind. */
static void setup_check(lg_t *lg) {
    if (lg->phase != PH_SETUP || lg->half_state == 1)
        return;
    if (lg->half_state == 0 && lg->half > 0 && lg->settled >= lg->half) {
        lg->half_state = 1;
        uv_timer_start(&lg->phase_timer, on_half, (uint64_t)(lg->o.settle * 1000.0 + 0.5), 0);
        return;
    }
    start_more(lg);
    if (lg->settled == lg->nconns)
        phase_next(lg);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    (void)hint;
    conn_t *c = h->data;
    *buf = uv_buf_init((char *)c->lg->rbuf, RBUF_SIZE);
}

static void on_connect(uv_connect_t *req, int status) {
    conn_t *c = req->data;
    lg_t *lg = c->lg;
    if (c->st != CS_CONNECTING)
        return;
    if (status < 0) {
        lg->err.connect++;
        if (lg->err.connect == 1 && !lg->o.quiet)
            fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(status));
        conn_kill(c);
        setup_check(lg);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->st = CS_UPGRADING;
    c->head_len = 0;
    if (c->head == NULL)
        c->head = malloc(HEAD_MAX);
    if (c->head == NULL || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        lg->err.connect++;
        conn_kill(c);
        setup_check(lg);
        return;
    }
    if (lg->ssl_ctx != NULL)
        tls_start(c); /* the upgrade request follows the TLS handshake */
    else
        send_upgrade(c);
}

/* Queues and sends the upgrade request. */
static void send_upgrade(conn_t *c) {
    lg_t *lg = c->lg;
    /* The request head; the key is 16 random bytes in base64 (§4.1). */
    uint8_t raw[16], digest[SHA_DIGEST_LENGTH];
    char key[32], cat[64 + sizeof(ws_guid)];
    uint64_t a = rnd(lg), b = rnd(lg);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *)key, raw, 16);
    int kl = snprintf(cat, sizeof(cat), "%s%s", key, ws_guid);
    SHA1((const unsigned char *)cat, (size_t)kl, digest);
    EVP_EncodeBlock((unsigned char *)c->accept, digest, SHA_DIGEST_LENGTH);

    uint8_t *p = ob_grow(&c->ob, lg->req_len + 24 + 4);
    if (p == NULL) {
        conn_kill(c);
        setup_check(lg);
        return;
    }
    memcpy(p, lg->req, lg->req_len);
    memcpy(p + lg->req_len, key, 24);
    memcpy(p + lg->req_len + 24, "\r\n\r\n", 4);
    conn_flush(c);
}

/* Opens slot <c>: a new socket, bound to a spread source address when asked
 * (IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(), so each
 * address gets a whole port range per destination). */
static void conn_start(conn_t *c) {
    lg_t *lg = c->lg;
    int rc;
    c->st = CS_CONNECTING;
    c->writing = false;
    c->sent_close = c->got_close = c->counted = false;
    c->ob.len = c->wb.len = 0;
    c->fh_len = 0;
    c->fh_need = 2;
    c->in_msg = false;
    c->frem = 0;
    c->sent = c->recvd = 0;
    c->cq.len = 0;
    c->tls_up = c->tls_werr = false;
    c->t_start = now_ns();
    c->deadline = c->t_start + 10ULL * 1000000000u;
    lg->pending++;
    lg->live++;
    if ((rc = uv_tcp_init_ex(lg->loop, &c->tcp, AF_INET)) < 0)
        goto fail;
    c->tcp.data = c;
    if (lg->o.src_addrs > 0) {
        struct sockaddr_in src;
        char ip[32];
        uv_os_fd_t fd;
        int one = 1;
        snprintf(ip, sizeof(ip), "127.0.0.%u", 2 + c->id % lg->o.src_addrs);
        uv_ip4_addr(ip, 0, &src);
        uv_fileno((uv_handle_t *)&c->tcp, &fd);
#ifdef IP_BIND_ADDRESS_NO_PORT
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#else
        (void)one;
#endif
        if ((rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0)) < 0) {
            c->st = CS_DEAD;
            lg->pending--;
            lg->err.connect++;
            if (lg->phase == PH_SETUP)
                lg->settled++;
            uv_close((uv_handle_t *)&c->tcp, on_closed);
            return;
        }
    }
    c->creq.data = c;
    if ((rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&lg->dst, on_connect)) <
        0) {
        c->st = CS_DEAD;
        lg->pending--;
        lg->err.connect++;
        if (lg->phase == PH_SETUP)
            lg->settled++;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    return;
fail:
    lg->live--;
    lg->pending--;
    lg->err.connect++;
    c->st = CS_FREE;
    lg_abort(lg, uv_strerror(rc));
}

/* ---- the upgrade response ------------------------------------------------ */

/* True when the comma-separated list <v> (up to <end>) holds <tok>. */
static bool has_token(const char *v, const char *end, const char *tok) {
    size_t tl = strlen(tok);
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *e = v;
        while (e < end && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == tl && strncasecmp(v, tok, tl) == 0)
            return true;
        v = e;
    }
    return false;
}

/* Checks the 101 (RFC 6455 §4.2.2 / §4.1 client requirements 1-4). */
static bool check_response(conn_t *c, const char *h, size_t len) {
    const char *end = h + len;
    if (len < 12 || memcmp(h, "HTTP/1.1 101", 12) != 0)
        return false;
    bool up = false, co = false, acc = false;
    const char *line = memchr(h, '\n', len);
    while (line != NULL && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            break;
        const char *le = eol;
        if (le > line && le[-1] == '\r')
            le--;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (colon != NULL) {
            size_t nl = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = le;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (nl == 7 && strncasecmp(line, "upgrade", 7) == 0)
                up = has_token(v, ve, "websocket");
            else if (nl == 10 && strncasecmp(line, "connection", 10) == 0)
                co = has_token(v, ve, "upgrade");
            else if (nl == 20 && strncasecmp(line, "sec-websocket-accept", 20) == 0)
                acc = (size_t)(ve - v) == 28 && memcmp(v, c->accept, 28) == 0;
        }
        line = eol;
    }
    return up && co && acc;
}

static void on_open(conn_t *c) {
    lg_t *lg = c->lg;
    lg->pending--;
    lg->open++;
    c->st = CS_OPEN;
    c->deadline = 0;
    if (lg->o.mode == MODE_HANDSHAKE) {
        conn_close(c);
        return;
    }
    if (lg->phase == PH_SETUP)
        lg->settled++;
    setup_check(lg);
}

/* ---- frames from the server ---------------------------------------------- */

static void msg_done(conn_t *c, uint64_t now) {
    lg_t *lg = c->lg;
    uint64_t sent_at = c->ts[c->recvd % lg->o.window];
    c->recvd++;
    lg->inflight--;
    lg->msgs_total++;
    if (lg->measuring) {
        lg->msgs++;
        lg->bytes += lg->o.size;
        lat_add(lg, now - sent_at);
    }
    if (lg->o.mode == MODE_IDLE) {
        lg->pinged++;
        if (lg->pinged + (lg->nconns - lg->open) >= lg->nconns && lg->phase == PH_PING)
            phase_next(lg);
        return;
    }
    if (lg->measuring && lg->o.messages > 0 && lg->msgs >= lg->o.messages) {
        phase_next(lg); /* the window is full: on to DRAIN */
        return;
    }
    if (lg->phase == PH_WARMUP || lg->phase == PH_MEASURE)
        send_msg(c);
    else if (lg->phase == PH_DRAIN && lg->inflight == 0)
        phase_next(lg);
}

/* Checks <k> payload bytes of the current data message against what was sent
 * as message number c->recvd. */
static bool verify(conn_t *c, const uint8_t *p, size_t k) {
    lg_t *lg = c->lg;
    size_t size = lg->o.size;
    uint64_t off = c->moff;
    if (off + k > size)
        return false;
    if (off < STAMP_LEN) {
        uint8_t st[STAMP_LEN];
        stamp_bytes(c->id, c->recvd, st);
        while (k > 0 && off < STAMP_LEN) {
            if (*p != st[off])
                return false;
            p++;
            k--;
            off++;
        }
    }
    return k == 0 || memcmp(p, lg->pattern + off, k) == 0;
}

static void proto_error(conn_t *c, const char *what) {
    lg_t *lg = c->lg;
    lg->err.protocol++;
    if (lg->err.protocol == 1 && !lg->o.quiet)
        fprintf(stderr, "loadgen: conn %u: %s\n", c->id, what);
    conn_kill(c);
}

/* A whole control frame arrived (payload in c->ctrl). */
static void on_control(conn_t *c) {
    switch (c->op) {
    case 0x9: /* ping: pong with the same payload (§5.5.2) */
        send_ctrl(c, 0xA, c->ctrl, c->ctrl_len);
        break;
    case 0xA: /* unsolicited pong: ignored (§5.5.3) */
        break;
    case 0x8:
        c->got_close = true;
        if (c->st == CS_CLOSING) {
            if (c->lg->o.mode == MODE_HANDSHAKE)
                c->counted = true;
            /* Wait for the server's FIN (§7.1.1: it closes TCP first). */
        } else {
            c->lg->err.protocol++;
            if (c->lg->err.protocol == 1 && !c->lg->o.quiet)
                fprintf(stderr, "loadgen: conn %u: unexpected close frame from server\n", c->id);
            c->st = CS_CLOSING; /* still counted in <open> until killed */
            c->deadline = now_ns() + (uint64_t)CLOSE_WAIT_MS * 1000000u;
            send_close(c, 1000);
        }
        break;
    default:
        break;
    }
}

/* Parses and checks server frames in <n> bytes at <p>. Returns false when
 * the connection was killed. */
static bool feed(conn_t *c, const uint8_t *p, size_t n, uint64_t now) {
    const uint8_t *end = p + n;
    while (p < end) {
        if (c->fh_len < c->fh_need) {
            while (p < end && c->fh_len < c->fh_need) {
                c->fh[c->fh_len++] = *p++;
                if (c->fh_len == 2) {
                    unsigned l7 = c->fh[1] & 0x7f;
                    if (c->fh[1] & 0x80) {
                        proto_error(c, "masked frame from server");
                        return false;
                    }
                    c->fh_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
                }
            }
            if (c->fh_len < c->fh_need)
                break;
            unsigned l7 = c->fh[1] & 0x7f;
            uint64_t len = l7;
            if (l7 == 126)
                len = (uint64_t)c->fh[2] << 8 | c->fh[3];
            else if (l7 == 127)
                for (int i = 0; i < 8; i++)
                    len = (len << 8) | c->fh[2 + i];
            c->op = c->fh[0] & 0x0f;
            c->fin = (c->fh[0] & 0x80) != 0;
            c->frem = len;
            c->ctrl_len = 0;
            if (c->fh[0] & 0x70) {
                proto_error(c, "RSV bits set by server");
                return false;
            }
            if (c->op & 0x8) {
                if (len > CTRL_MAX || !c->fin) {
                    proto_error(c, "bad control frame from server");
                    return false;
                }
            } else if (c->op == 0x0) {
                if (!c->in_msg) {
                    proto_error(c, "continuation with no message");
                    return false;
                }
            } else {
                if (c->in_msg) {
                    proto_error(c, "new message inside a fragmented one");
                    return false;
                }
                if (c->op != 0x2 || c->recvd >= c->sent) {
                    proto_error(c, "unexpected data message from server");
                    return false;
                }
                c->in_msg = true;
                c->moff = 0;
                c->bad_msg = false;
            }
        }
        size_t k = (size_t)(end - p);
        if (k > c->frem)
            k = (size_t)c->frem;
        if (c->op & 0x8) {
            memcpy(c->ctrl + c->ctrl_len, p, k);
            c->ctrl_len += (unsigned)k;
        } else if (k > 0) {
            if (!c->bad_msg && !verify(c, p, k)) {
                c->bad_msg = true;
                c->lg->err.payload++;
                if (c->lg->err.payload == 1 && !c->lg->o.quiet)
                    fprintf(stderr, "loadgen: conn %u: message %" PRIu64 " differs from what was sent\n",
                            c->id, c->recvd);
            }
            c->moff += k;
        }
        p += k;
        c->frem -= k;
        if (c->frem > 0)
            break;
        /* The frame is complete. */
        c->fh_len = 0;
        c->fh_need = 2;
        if (c->op & 0x8) {
            on_control(c);
            if (c->st == CS_DEAD)
                return false;
        } else if (c->fin) {
            c->in_msg = false;
            if (c->moff != c->lg->o.size && !c->bad_msg) {
                c->lg->err.payload++;
                if (c->lg->err.payload == 1 && !c->lg->o.quiet)
                    fprintf(stderr, "loadgen: conn %u: echo of %" PRIu64 " bytes, sent %zu\n",
                            c->id, c->moff, c->lg->o.size);
            }
            msg_done(c, now);
            if (c->st == CS_DEAD)
                return false;
        }
    }
    return true;
}

/* The server's byte stream ended (EOF, a read error, or TLS close_notify). */
static void on_read_end(conn_t *c, ssize_t nread) {
    lg_t *lg = c->lg;
    if (c->st == CS_CLOSING && (c->got_close || nread == UV_EOF)) {
        if (!c->got_close && lg->o.mode == MODE_HANDSHAKE)
            lg->err.eof++;
        conn_kill(c);
        return;
    }
    if (c->st == CS_UPGRADING)
        lg->err.upgrade++;
    else
        lg->err.eof++;
    if (lg->err.eof + lg->err.upgrade == 1 && !lg->o.quiet)
        fprintf(stderr, "loadgen: conn %u: %s from server\n", c->id,
                nread == UV_EOF ? "EOF" : uv_strerror((int)nread));
    conn_kill(c);
    setup_check(lg);
}

/* <n> bytes from the server (plaintext): the upgrade response, then frames. */
static void on_data(conn_t *c, const uint8_t *p, size_t n) {
    lg_t *lg = c->lg;
    uint64_t now = now_ns();
    if (c->st == CS_UPGRADING) {
        size_t take = n;
        if (take > HEAD_MAX - c->head_len)
            take = HEAD_MAX - c->head_len;
        memcpy(c->head + c->head_len, p, take);
        size_t old = c->head_len;
        c->head_len += take;
        char *e = memmem(c->head, c->head_len, "\r\n\r\n", 4);
        if (e == NULL) {
            if (c->head_len == HEAD_MAX) {
                lg->err.upgrade++;
                conn_kill(c);
                setup_check(lg);
            }
            return;
        }
        size_t used = (size_t)(e + 4 - c->head);
        if (!check_response(c, c->head, used)) {
            lg->err.upgrade++;
            if (lg->err.upgrade == 1 && !lg->o.quiet) {
                char *eol = memchr(c->head, '\r', used);
                fprintf(stderr, "loadgen: bad upgrade response: %.*s\n",
                        (int)(eol ? eol - c->head : 40), c->head);
            }
            conn_kill(c);
            setup_check(lg);
            return;
        }
        free(c->head); /* an open connection keeps no head buffer */
        c->head = NULL;
        on_open(c);
        if (c->st == CS_DEAD)
            return;
        /* Bytes after the head belong to the frame stream. */
        p += used - old;
        n -= used - old;
    }
    if (n > 0)
        feed(c, p, n, now);
    /* The caller flushes what the bytes made us queue, once per read. */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn_t *c = s->data;
    if (c->st == CS_DEAD)
        return;
    if (nread < 0) {
        on_read_end(c, nread);
        return;
    }
    if (nread == 0)
        return;
    if (c->ssl != NULL) {
        tls_read(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    on_data(c, (const uint8_t *)buf->base, (size_t)nread);
    conn_flush(c);
}

/* ---- TLS (--tls) --------------------------------------------------------- */

/* The BIO between OpenSSL and a connection. Read: the ciphertext of the read
 * being processed (lg->tin), nothing otherwise. Write: straight to the
 * socket with uv_try_write when nothing is queued ahead, the rest appended to
 * c->cq, which tls_out sends once OpenSSL returns. */
static int bio_write(BIO *b, const char *data, int len) {
    conn_t *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0 || c->st == CS_DEAD || c->tls_werr)
        return len; /* the connection is going: what it says no longer matters */
    const char *p = data;
    size_t n = (size_t)len;
    if (!c->writing && c->cq.len == 0) {
        uv_buf_t ub = uv_buf_init((char *)p, (unsigned)n);
        int w = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
        if (w == UV_EAGAIN || w == UV_ENOSYS)
            w = 0;
        if (w < 0) {
            c->tls_werr = true; /* killed by tls_out, outside OpenSSL */
            return len;
        }
        p += w;
        n -= (size_t)w;
    }
    if (n > 0) {
        uint8_t *q = ob_grow(&c->cq, n);
        if (q == NULL) {
            c->tls_werr = true;
            return len;
        }
        memcpy(q, p, n);
    }
    return len;
}

static int bio_read(BIO *b, char *out, int len) {
    conn_t *c = BIO_get_data(b);
    lg_t *lg = c->lg;
    BIO_clear_retry_flags(b);
    if (lg->tin_conn != c || lg->tin_len == 0 || len <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t k = lg->tin_len < (size_t)len ? lg->tin_len : (size_t)len;
    memcpy(out, lg->tin, k);
    lg->tin += k;
    lg->tin_len -= k;
    return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

/* Sends the ciphertext OpenSSL produced during the call that just returned,
 * or ends the connection if writing it failed. */
static void tls_out(conn_t *c) {
    if (c->st == CS_DEAD)
        return;
    if (c->tls_werr) {
        c->lg->err.write++;
        conn_kill(c);
        return;
    }
    send_q(c, &c->cq);
}

/* Encrypts the queued plaintext (c->ob) and sends it. Like the plain path,
 * nothing new is encrypted while a uv_write is in flight, so one flight
 * carries everything queued meanwhile. */
static void tls_flush(conn_t *c) {
    if (c->writing || c->st == CS_DEAD)
        return;
    if (c->tls_up && c->ob.len > 0) {
        int r = SSL_write(c->ssl, c->ob.p, (int)c->ob.len);
        c->ob.len = 0;
        if (r <= 0) {
            c->lg->err.tls++;
            ERR_clear_error();
            conn_kill(c);
            return;
        }
    }
    tls_out(c);
}

static void tls_error(conn_t *c, const char *what, int r) {
    lg_t *lg = c->lg;
    int e = SSL_get_error(c->ssl, r);
    lg->err.tls++;
    if (lg->err.tls == 1 && !lg->o.quiet) {
        unsigned long code = ERR_peek_last_error();
        fprintf(stderr, "loadgen: conn %u: TLS %s failed: %s\n", c->id, what,
                e == SSL_ERROR_SSL && code != 0 ? ERR_reason_error_string(code)
                : e == SSL_ERROR_SYSCALL        ? "write error"
                                                : "unexpected state");
    }
    ERR_clear_error();
    conn_kill(c);
    setup_check(lg);
}

/* The handshake is done: note what was negotiated (first time) and send the
 * upgrade request. */
static void tls_done(conn_t *c) {
    lg_t *lg = c->lg;
    c->tls_up = true;
    lg->tls_hs++;
    if (SSL_session_reused(c->ssl))
        lg->tls_resumed++;
    if (lg->tls_version[0] == '\0') {
        const unsigned char *alpn = NULL;
        unsigned alen = 0;
        int g = SSL_get_negotiated_group(c->ssl);
        const char *gn = g > 0 ? OBJ_nid2sn(g) : NULL;
        snprintf(lg->tls_version, sizeof(lg->tls_version), "%s", SSL_get_version(c->ssl));
        snprintf(lg->tls_cipher, sizeof(lg->tls_cipher), "%s", SSL_get_cipher_name(c->ssl));
        snprintf(lg->tls_group, sizeof(lg->tls_group), "%s", gn != NULL ? gn : "?");
        SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
        snprintf(lg->tls_alpn, sizeof(lg->tls_alpn), "%.*s", (int)alen,
                 alen ? (const char *)alpn : "");
    }
    send_upgrade(c);
}

/* Starts the client handshake on a connected socket (state UPGRADING). */
static void tls_start(conn_t *c) {
    lg_t *lg = c->lg;
    BIO *b = NULL;
    c->ssl = SSL_new(lg->ssl_ctx);
    if (c->ssl != NULL)
        b = BIO_new(lg->biom);
    if (c->ssl == NULL || b == NULL ||
        SSL_set_tlsext_host_name(c->ssl, lg->o.sni) != 1) {
        BIO_free(b);
        lg->err.tls++;
        ERR_clear_error();
        conn_kill(c);
        setup_check(lg);
        return;
    }
    BIO_set_data(b, c);
    SSL_set_bio(c->ssl, b, b);
    SSL_set_connect_state(c->ssl);
    int r = SSL_do_handshake(c->ssl); /* writes the ClientHello */
    if (r <= 0 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
        tls_error(c, "handshake", r);
        return;
    }
    tls_out(c);
}

/* <n> bytes of ciphertext from the server: the handshake, then records,
 * decrypted into lg->pbuf and handled as the plain path handles reads. All
 * of it is given to OpenSSL before returning (it is in the loop-wide read
 * buffer, which the next read overwrites). */
static void tls_read(conn_t *c, const uint8_t *p, size_t n) {
    lg_t *lg = c->lg;
    lg->tin_conn = c;
    lg->tin = p;
    lg->tin_len = n;
    if (!c->tls_up) {
        int r = SSL_do_handshake(c->ssl);
        if (r <= 0) {
            if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ)
                tls_out(c);
            else
                tls_error(c, "handshake", r);
            goto out;
        }
        tls_out(c); /* the client Finished */
        if (c->st == CS_DEAD)
            goto out;
        tls_done(c);
        if (c->st == CS_DEAD)
            goto out;
    }
    while (c->st != CS_DEAD) {
        int r = SSL_read(c->ssl, lg->pbuf, PBUF_SIZE);
        if (r > 0) {
            on_data(c, lg->pbuf, (size_t)r);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the stream ends here */
            ERR_clear_error();
            on_read_end(c, UV_EOF);
            goto out;
        }
        tls_error(c, "read", r);
        goto out;
    }
    conn_flush(c); /* what the records made us queue, and any handshake bytes */
out:
    lg->tin_conn = NULL;
    lg->tin = NULL;
    lg->tin_len = 0;
}

/* Counts the session tickets servers send (TLS 1.3 sends them after the
 * handshake); none is kept, so none can be resumed. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
    lg_t *lg = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    (void)sess;
    lg->tls_tickets++;
    return 0; /* not kept: OpenSSL frees it */
}

static int tls_init(lg_t *lg) {
    static const unsigned char alpn[] = "\x08http/1.1";
    const opts_t *o = &lg->o;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return -1;
    lg->ssl_ctx = ctx;
    SSL_CTX_set_app_data(ctx, lg);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* a benchmark, not a client to trust */
    SSL_CTX_set_min_proto_version(ctx, o->tls_version ? o->tls_version : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, o->tls_version ? o->tls_version : TLS1_3_VERSION);
    /* Idle connections keep no record buffers (thousands are held open). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* The callback sees every ticket; the internal cache stores none. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) /* 0 is success */
        return -1;
    lg->biom = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "loadgen-uv");
    if (lg->biom == NULL || !BIO_meth_set_write(lg->biom, bio_write) ||
        !BIO_meth_set_read(lg->biom, bio_read) || !BIO_meth_set_ctrl(lg->biom, bio_ctrl) ||
        !BIO_meth_set_create(lg->biom, bio_create))
        return -1;
    lg->pbuf = malloc(PBUF_SIZE);
    return lg->pbuf != NULL ? 0 : -1;
}

/* ---- phases -------------------------------------------------------------- */

static void on_phase_timer(uv_timer_t *t) { phase_next(t->data); }

static void arm(lg_t *lg, double seconds) {
    uv_timer_start(&lg->phase_timer, on_phase_timer, (uint64_t)(seconds * 1000.0 + 0.5), 0);
}

static void close_all(lg_t *lg) {
    for (unsigned i = 0; i < lg->nconns; i++) {
        conn_t *c = &lg->conns[i];
        if (c->st == CS_OPEN)
            conn_close(c);
        else if (c->st == CS_CONNECTING || c->st == CS_UPGRADING)
            conn_kill(c);
    }
}

static void lg_end(lg_t *lg) {
    lg->phase = PH_END;
    uv_timer_stop(&lg->phase_timer);
    uv_close((uv_handle_t *)&lg->phase_timer, NULL);
    uv_close((uv_handle_t *)&lg->tick, NULL);
    uv_close((uv_handle_t *)&lg->guard, NULL);
    uv_close((uv_handle_t *)&lg->sigint, NULL);
    uv_close((uv_handle_t *)&lg->sigterm, NULL);
}

static void window_open(lg_t *lg) {
    lg->measuring = true;
    lg->msgs = lg->bytes = lg->handshakes = 0;
    lg->nlat = 0;
    sample(lg, &lg->s0);
}

static void window_close(lg_t *lg) {
    sample(lg, &lg->s1);
    lg->measuring = false;
}

/* Moves to the next phase; called by the phase timer and by events. */
static void phase_next(lg_t *lg) {
    enum mode m = lg->o.mode;
    if (lg->phase == PH_END)
        return;
    if (lg->aborted && lg->phase != PH_CLOSE) {
        lg->phase = PH_CLOSE;
        close_all(lg);
        if (lg->live == 0)
            lg_end(lg);
        return;
    }
    switch (lg->phase) {
    case PH_SETUP:
        lg->setup_s = (double)(now_ns() - lg->t_setup0) / 1e9;
        lg->n_est = lg->open;
        if (m == MODE_IDLE) {
            if (lg->open == 0) {
                lg_abort(lg, "no connection could be opened");
                return;
            }
            lg->phase = PH_SETTLE;
            arm(lg, lg->o.settle);
            return;
        }
        if (m != MODE_HANDSHAKE && lg->open == 0) {
            lg_abort(lg, "no connection could be opened");
            return;
        }
        lg->phase = PH_WARMUP;
        if (m != MODE_HANDSHAKE)
            for (unsigned i = 0; i < lg->nconns; i++) {
                conn_t *c = &lg->conns[i];
                if (c->st != CS_OPEN)
                    continue;
                for (unsigned w = 0; w < lg->o.window; w++)
                    send_msg(c);
                conn_flush(c);
            }
        if (lg->o.warmup > 0) {
            arm(lg, lg->o.warmup);
            return;
        }
        /* fall through: no warm-up */
        /* FALLTHROUGH */
    case PH_WARMUP:
        lg->phase = PH_MEASURE;
        window_open(lg);
        if (lg->o.messages == 0 || lg->o.duration > 0)
            arm(lg, lg->o.duration > 0 ? lg->o.duration : 3600);
        return;
    case PH_MEASURE:
        window_close(lg);
        uv_timer_stop(&lg->phase_timer);
        lg->phase = PH_DRAIN;
        if (m == MODE_HANDSHAKE) {
            /* Loops end their current cycle; on_closed does not restart them. */
            for (unsigned i = 0; i < lg->nconns; i++)
                if (lg->conns[i].st == CS_OPEN)
                    conn_close(&lg->conns[i]);
            arm(lg, CLOSE_WAIT_MS / 1000.0 + 1);
            if (lg->live == 0)
                phase_next(lg);
            return;
        }
        arm(lg, CLOSE_WAIT_MS / 1000.0);
        if (lg->inflight == 0)
            phase_next(lg);
        return;
    case PH_DRAIN:
        uv_timer_stop(&lg->phase_timer);
        /* Echoes still missing after the drain bound never came back: a
         * proxy that loses a message must not merely look slower. */
        if (m != MODE_HANDSHAKE)
            lg->err.lost += lg->inflight;
        lg->phase = PH_CLOSE;
        close_all(lg);
        if (lg->live == 0)
            lg_end(lg);
        return;
    case PH_SETTLE:
        lg->rss_open_kb = rss_now(lg);
        if (lg->o.idle_ping) {
            lg->phase = PH_PING;
            lg->t_ping0 = now_ns();
            for (unsigned i = 0; i < lg->nconns; i++) {
                conn_t *c = &lg->conns[i];
                if (c->st != CS_OPEN)
                    continue;
                send_msg(c);
                conn_flush(c);
            }
            arm(lg, 30); /* bound on the pings */
            if (lg->open == 0)
                phase_next(lg);
            return;
        }
        lg->phase = PH_SETTLE2; /* nothing to wait for */
        arm(lg, 0);
        return;
    case PH_PING:
        lg->ping_s = (double)(now_ns() - lg->t_ping0) / 1e9;
        uv_timer_stop(&lg->phase_timer);
        if (lg->pinged < lg->open)
            lg->err.timeout += lg->open - lg->pinged;
        lg->phase = PH_SETTLE2;
        arm(lg, lg->o.settle);
        return;
    case PH_SETTLE2:
        if (lg->o.idle_ping)
            lg->rss_ping_kb = rss_now(lg);
        lg->phase = PH_HOLD;
        arm(lg, lg->o.hold);
        return;
    case PH_HOLD:
        lg->phase = PH_CLOSE;
        close_all(lg);
        if (lg->live == 0)
            lg_end(lg);
        return;
    case PH_CLOSE:
        if (lg->live == 0)
            lg_end(lg);
        return;
    case PH_END:
        return;
    }
}

/* Stops the run early (signal, guard timeout, fatal error) and reports what
 * was measured so far. */
static void lg_abort(lg_t *lg, const char *why) {
    if (lg->aborted || lg->phase == PH_END)
        return;
    lg->aborted = true;
    lg->abort_reason = why;
    if (lg->measuring)
        window_close(lg);
    uv_timer_stop(&lg->phase_timer);
    phase_next(lg);
}

static void on_tick(uv_timer_t *t) {
    lg_t *lg = t->data;
    uint64_t now = now_ns();
    for (unsigned i = 0; i < lg->nconns; i++) {
        conn_t *c = &lg->conns[i];
        if (c->deadline == 0 || now < c->deadline)
            continue;
        if (c->st == CS_CONNECTING || c->st == CS_UPGRADING) {
            lg->err.timeout++;
            conn_kill(c);
            setup_check(lg);
        } else if (c->st == CS_CLOSING) {
            /* The close handshake did not finish in time: counted only when it
             * is what is measured. */
            if (lg->o.mode == MODE_HANDSHAKE && !c->counted)
                lg->err.timeout++;
            conn_kill(c);
        }
    }
}

static void on_guard(uv_timer_t *t) { lg_abort(t->data, "overall timeout (--timeout)"); }

static void on_signal(uv_signal_t *s, int signum) {
    (void)signum;
    lg_abort(s->data, "interrupted");
}

static void close_left(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* ---- report -------------------------------------------------------------- */

static void report(lg_t *lg) {
    const opts_t *o = &lg->o;
    uint64_t errors = lg->err.connect + lg->err.upgrade + lg->err.payload + lg->err.protocol +
                      lg->err.eof + lg->err.timeout + lg->err.write + lg->err.lost +
                      lg->err.tls;
    double win = lg->s1.t > lg->s0.t ? (double)(lg->s1.t - lg->s0.t) / 1e9 : 0;
    double pcpu = lg->s1.proxy_s - lg->s0.proxy_s;
    double bcpu = lg->s1.backend_s - lg->s0.backend_s;
    double scpu = lg->s1.self_s - lg->s0.self_s;
    if (lg->nlat > 1)
        qsort(lg->lat, lg->nlat, sizeof(*lg->lat), cmp_u32);
    double p50 = pct_us(lg, 50), p90 = pct_us(lg, 90), p99 = pct_us(lg, 99),
           pmax = lg->nlat ? lg->lat[lg->nlat - 1] / 1000.0 : 0;
    char lab[160] = "";
    if (o->label != NULL)
        snprintf(lab, sizeof(lab), "\"label\":\"%s\",", o->label);

    printf("{%s\"mode\":\"%s\",\"conns\":%u,\"size\":%zu,\"window\":%u,", lab,
           mode_names[o->mode], o->conns, o->size, o->window);
    if (o->mode == MODE_IDLE) {
        unsigned n = lg->n_est;
        double per = n ? (double)(lg->rss_open_kb - lg->rss_base_kb) * 1024.0 / n : 0;
        double per2 = n && o->idle_ping
                          ? (double)(lg->rss_ping_kb - lg->rss_base_kb) * 1024.0 / n
                          : 0;
        double marg = n > lg->n_half && lg->half_state == 2
                          ? (double)(lg->rss_open_kb - lg->rss_half_kb) * 1024.0 /
                                (double)(n - lg->n_half)
                          : 0;
        printf("\"established\":%u,\"setup_s\":%.3f,\"ping\":%s,\"pinged\":%u,\"ping_s\":%.3f,"
               "\"rss_base_kb\":%ld,\"rss_half_kb\":%ld,\"half_conns\":%u,\"rss_open_kb\":%ld,"
               "\"rss_ping_kb\":%ld,\"rss_per_conn_b\":%.1f,\"rss_per_conn_after_ping_b\":%.1f,"
               "\"rss_marginal_per_conn_b\":%.1f,",
               n, lg->setup_s, o->idle_ping ? "true" : "false", lg->pinged, lg->ping_s,
               lg->rss_base_kb, lg->rss_half_kb, lg->n_half, lg->rss_open_kb, lg->rss_ping_kb, per,
               per2, marg);
    } else {
        uint64_t count = o->mode == MODE_HANDSHAKE ? lg->handshakes : lg->msgs;
        double rate = win > 0 ? (double)count / win : 0;
        printf("\"window_s\":%.3f,", win);
        if (o->mode == MODE_HANDSHAKE)
            printf("\"handshakes\":%" PRIu64 ",\"handshakes_per_s\":%.1f,", count, rate);
        else
            printf("\"messages\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"mbytes_per_s\":%.2f,", count,
                   rate, win > 0 ? (double)lg->bytes / win / 1e6 : 0);
        printf("\"lat_us\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"max\":%.2f,\"n\":%zu},", p50,
               p90, p99, pmax, lg->nlat);
        printf("\"proxy_cpu_s\":%.3f,\"backend_cpu_s\":%.3f,\"loadgen_cpu_s\":%.3f,", pcpu, bcpu,
               scpu);
        unsigned nc = lg->s0.ncpu < lg->s1.ncpu ? lg->s0.ncpu : lg->s1.ncpu;
        printf("\"cpu_busy_s\":[");
        for (unsigned i = 0; i < nc; i++)
            printf("%s%.3f", i ? "," : "", lg->s1.busy_s[i] - lg->s0.busy_s[i]);
        printf("],\"cpu_steal_s\":[");
        for (unsigned i = 0; i < nc; i++)
            printf("%s%.3f", i ? "," : "", lg->s1.steal_s[i] - lg->s0.steal_s[i]);
        printf("],");
        if (o->npids > 0 && count > 0) {
            if (o->mode == MODE_HANDSHAKE)
                printf("\"cpu_us_per_handshake\":%.3f,", pcpu * 1e6 / (double)count);
            else
                /* Each echoed message crosses the proxy twice. */
                printf("\"cpu_us_per_fwd\":%.4f,\"cpu_us_per_echo\":%.4f,",
                       pcpu * 1e6 / (2.0 * (double)count), pcpu * 1e6 / (double)count);
        }
    }
    if (o->tls)
        printf("\"tls\":{\"version\":\"%s\",\"cipher\":\"%s\",\"group\":\"%s\",\"alpn\":\"%s\","
               "\"handshakes\":%" PRIu64 ",\"resumed\":%" PRIu64 ",\"tickets\":%" PRIu64 "},",
               lg->tls_version, lg->tls_cipher, lg->tls_group, lg->tls_alpn, lg->tls_hs,
               lg->tls_resumed, lg->tls_tickets);
    printf("\"errors\":%" PRIu64 ",\"err\":{\"connect\":%" PRIu64 ",\"upgrade\":%" PRIu64
           ",\"payload\":%" PRIu64 ",\"protocol\":%" PRIu64 ",\"eof\":%" PRIu64
           ",\"timeout\":%" PRIu64 ",\"write\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"tls\":%" PRIu64 "},\"aborted\":%s%s%s%s}\n",
           errors, lg->err.connect, lg->err.upgrade, lg->err.payload, lg->err.protocol,
           lg->err.eof, lg->err.timeout, lg->err.write, lg->err.lost, lg->err.tls,
           lg->aborted ? "true" : "false",
           lg->aborted ? ",\"abort_reason\":\"" : "", lg->aborted ? lg->abort_reason : "",
           lg->aborted ? "\"" : "");
    fflush(stdout);

    if (o->quiet)
        return;
    fprintf(stderr, "loadgen %s %s://%s:%d%s: ", mode_names[o->mode], o->tls ? "wss" : "ws",
            o->host, o->port, o->path);
    if (o->mode == MODE_IDLE) {
        unsigned n = lg->n_est;
        fprintf(stderr, "%u/%u connections open in %.2f s\n", n, o->conns, lg->setup_s);
        if (o->npids > 0) {
            fprintf(stderr, "  RSS %ld kB -> %ld kB open", lg->rss_base_kb, lg->rss_open_kb);
            if (o->idle_ping)
                fprintf(stderr, " -> %ld kB after one message each (%.2f s)", lg->rss_ping_kb,
                        lg->ping_s);
            fprintf(stderr, "\n  per connection: %.0f B idle",
                    n ? (double)(lg->rss_open_kb - lg->rss_base_kb) * 1024.0 / n : 0.0);
            if (o->idle_ping)
                fprintf(stderr, ", %.0f B after a message",
                        n ? (double)(lg->rss_ping_kb - lg->rss_base_kb) * 1024.0 / n : 0.0);
            if (lg->half_state == 2 && n > lg->n_half)
                fprintf(stderr, "; marginal %.0f B (from %u to %u connections)",
                        (double)(lg->rss_open_kb - lg->rss_half_kb) * 1024.0 /
                            (double)(n - lg->n_half),
                        lg->n_half, n);
            fprintf(stderr, "\n");
        }
    } else {
        uint64_t count = o->mode == MODE_HANDSHAKE ? lg->handshakes : lg->msgs;
        fprintf(stderr, "%u %s, %.2f s window\n", o->conns,
                o->mode == MODE_HANDSHAKE ? "loops" : "connections", win);
        fprintf(stderr, "  %" PRIu64 " %s, %.0f/s; latency us p50 %.1f p90 %.1f p99 %.1f max %.1f\n",
                count, o->mode == MODE_HANDSHAKE ? "handshakes" : "echoes",
                win > 0 ? (double)count / win : 0, p50, p90, p99, pmax);
        if (o->npids > 0 && count > 0)
            fprintf(stderr, "  proxy CPU %.2f s = %.3f us per %s\n", pcpu,
                    o->mode == MODE_HANDSHAKE ? pcpu * 1e6 / (double)count
                                              : pcpu * 1e6 / (2.0 * (double)count),
                    o->mode == MODE_HANDSHAKE ? "handshake" : "forwarded message");
        fprintf(stderr, "  loadgen CPU %.2f s, backend CPU %.2f s\n", scpu, bcpu);
    }
    if (o->tls && lg->tls_hs == 0)
        fprintf(stderr, "  TLS: no handshake completed\n");
    else if (o->tls)
        fprintf(stderr, "  TLS %s %s %s ALPN \"%s\": %" PRIu64 " handshakes, %" PRIu64
                        " of them resumed, %.2f tickets received per handshake\n",
                lg->tls_version, lg->tls_cipher, lg->tls_group, lg->tls_alpn, lg->tls_hs,
                lg->tls_resumed, lg->tls_hs ? (double)lg->tls_tickets / (double)lg->tls_hs : 0.0);
    if (errors > 0 || lg->aborted)
        fprintf(stderr, "  ERRORS %" PRIu64 " (connect %" PRIu64 ", upgrade %" PRIu64
                        ", payload %" PRIu64 ", protocol %" PRIu64 ", eof %" PRIu64
                        ", timeout %" PRIu64 ", write %" PRIu64 ", lost %" PRIu64
                        ", tls %" PRIu64 ")%s%s\n",
                errors, lg->err.connect, lg->err.upgrade, lg->err.payload, lg->err.protocol,
                lg->err.eof, lg->err.timeout, lg->err.write, lg->err.lost, lg->err.tls,
                lg->aborted ? "; aborted: " : "",
                lg->aborted ? lg->abort_reason : "");
}

/* ---- command line -------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: loadgen MODE --port N [options]\n"
            "modes: pingpong | stream | idle | handshake\n"
            "  --host A            server address (127.0.0.1)\n"
            "  --port N            server port\n"
            "  --path P            request target (/)\n"
            "  -c, --conns N       connections, or loops in handshake mode (100; idle 1000;\n"
            "                      handshake 32)\n"
            "  -s, --size N        payload bytes per message (64)\n"
            "  -w, --window N      messages in flight per connection (pingpong 1, stream 16)\n"
            "  -d, --duration S    measured seconds (5)\n"
            "  --warmup S          seconds before measuring (1)\n"
            "  -n, --messages N    end the window after N echoes instead of a duration\n"
            "  --src-addrs N       bind to 127.0.0.2 .. 127.0.0.(N+1), round robin\n"
            "  --concurrency N     connection attempts at once (256)\n"
            "  --ping              idle: one message per connection once all are open\n"
            "  --settle S          idle: wait before each RSS sample (1)\n"
            "  --hold S            idle: hold the connections this long at the end (0)\n"
            "  --pid P             sample CPU and RSS of process P (repeatable, summed)\n"
            "  --backend-pid P     sample CPU of the backend too\n"
            "  --timeout S         overall bound (default: warmup + duration + 60)\n"
            "  --tls               TLS to the server (wss); certificate not verified, no\n"
            "                      session resumption, ALPN http/1.1 offered\n"
            "  --sni NAME          server name sent with --tls (localhost)\n"
            "  --tls-version V     1.2 or 1.3 only (default: either, as negotiated)\n"
            "  --label L           copied into the JSON line\n"
            "  -q, --quiet         JSON line only\n");
}

static bool parse_num(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || v < 0)
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, opts_t *o) {
    bool have_conns = false, have_window = false, have_timeout = false;
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = -1;
    o->path = "/";
    o->size = 64;
    o->duration = 5;
    o->warmup = 1;
    o->concurrency = 256;
    o->settle = 1;
    o->sni = "localhost";
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 1;
    }
    bool found = false;
    for (int m = 0; m < 4; m++)
        if (strcmp(argv[1], mode_names[m]) == 0) {
            o->mode = (enum mode)m;
            found = true;
        }
    if (!found) {
        fprintf(stderr, "loadgen: unknown mode \"%s\"\n", argv[1]);
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--ping") == 0) {
            o->idle_ping = true;
            continue;
        }
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (strcmp(a, "--tls") == 0) {
            o->tls = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loadgen: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        double d = 0;
        bool num = parse_num(v, &d);
        if (strcmp(a, "--host") == 0) {
            o->host = v;
            continue;
        }
        if (strcmp(a, "--path") == 0) {
            o->path = v;
            continue;
        }
        if (strcmp(a, "--label") == 0) {
            o->label = v;
            continue;
        }
        if (strcmp(a, "--sni") == 0) {
            o->sni = v;
            continue;
        }
        if (strcmp(a, "--tls-version") == 0) {
            if (strcmp(v, "1.2") == 0) {
                o->tls_version = TLS1_2_VERSION;
            } else if (strcmp(v, "1.3") == 0) {
                o->tls_version = TLS1_3_VERSION;
            } else {
                fprintf(stderr, "loadgen: --tls-version: 1.2 or 1.3, not \"%s\"\n", v);
                return 2;
            }
            continue;
        }
        if (!num) {
            fprintf(stderr, "loadgen: %s: expected a non-negative number, got \"%s\"\n", a, v);
            return 2;
        }
        if (strcmp(a, "--port") == 0 && d <= 65535) {
            o->port = (int)d;
        } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--conns") == 0) && d >= 1 && d <= 1e6) {
            o->conns = (unsigned)d;
            have_conns = true;
        } else if ((strcmp(a, "-s") == 0 || strcmp(a, "--size") == 0) && d <= 64e6) {
            o->size = (size_t)d;
        } else if ((strcmp(a, "-w") == 0 || strcmp(a, "--window") == 0) && d >= 1 && d <= 1e5) {
            o->window = (unsigned)d;
            have_window = true;
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--duration") == 0) {
            o->duration = d;
        } else if (strcmp(a, "--warmup") == 0) {
            o->warmup = d;
        } else if (strcmp(a, "-n") == 0 || strcmp(a, "--messages") == 0) {
            o->messages = (uint64_t)d;
        } else if (strcmp(a, "--src-addrs") == 0 && d <= 250) {
            o->src_addrs = (unsigned)d;
        } else if (strcmp(a, "--concurrency") == 0 && d >= 1) {
            o->concurrency = (unsigned)d;
        } else if (strcmp(a, "--settle") == 0) {
            o->settle = d;
        } else if (strcmp(a, "--hold") == 0) {
            o->hold = d;
        } else if (strcmp(a, "--timeout") == 0 && d > 0) {
            o->timeout = d;
            have_timeout = true;
        } else if (strcmp(a, "--pid") == 0 && d >= 1 && o->npids < MAX_PIDS) {
            o->pids[o->npids++] = (pid_t)d;
        } else if (strcmp(a, "--backend-pid") == 0 && d >= 1) {
            o->backend_pid = (pid_t)d;
        } else {
            fprintf(stderr, "loadgen: bad option or value: %s %s\n", a, v);
            return 2;
        }
    }
    if (o->port <= 0) {
        fprintf(stderr, "loadgen: --port is required\n");
        return 2;
    }
    if (o->messages > 0 && o->duration == 5)
        o->duration = 0; /* a count replaces the default duration */
    if (!have_conns)
        o->conns = o->mode == MODE_IDLE ? 1000 : o->mode == MODE_HANDSHAKE ? 32 : 100;
    if (!have_window)
        o->window = o->mode == MODE_STREAM ? 16 : 1;
    if (o->mode != MODE_STREAM && o->window != 1) {
        fprintf(stderr, "loadgen: --window is for stream mode\n");
        return 2;
    }
    if (o->mode != MODE_IDLE && o->idle_ping) {
        fprintf(stderr, "loadgen: --ping is for idle mode\n");
        return 2;
    }
    if (o->duration == 0 && o->messages == 0 && o->mode != MODE_IDLE) {
        fprintf(stderr, "loadgen: give a --duration or a --messages count\n");
        return 2;
    }
    if (o->tls_version != 0 && !o->tls) {
        fprintf(stderr, "loadgen: --tls-version needs --tls\n");
        return 2;
    }
    if (!have_timeout)
        o->timeout = o->mode == MODE_IDLE
                         ? 120 + 3 * o->settle + o->hold
                         : o->warmup + (o->duration > 0 ? o->duration : 600) + 60;
    return 0;
}

int main(int argc, char **argv) {
    static lg_t lgs; /* large; zeroed */
    lg_t *lg = &lgs;
    int rc = parse_args(argc, argv, &lg->o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    opts_t *o = &lg->o;

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (uv_ip4_addr(o->host, o->port, &lg->dst) != 0) {
        fprintf(stderr, "loadgen: bad IPv4 address \"%s\"\n", o->host);
        return 2;
    }
    if (RAND_bytes((unsigned char *)&lg->rng, sizeof(lg->rng)) != 1 || lg->rng == 0)
        lg->rng = now_ns() | 1;

    if (o->tls && tls_init(lg) != 0) {
        const char *why = ERR_reason_error_string(ERR_peek_last_error());
        fprintf(stderr, "loadgen: cannot set up TLS: %s\n", why != NULL ? why : "out of memory");
        return 1;
    }

    lg->nconns = o->conns;
    if (o->mode == MODE_IDLE && o->npids > 0 && o->conns >= 2)
        lg->half = o->conns / 2;
    lg->conns = calloc(lg->nconns, sizeof(conn_t));
    lg->rbuf = malloc(RBUF_SIZE);
    lg->pattern = malloc(o->size ? o->size : 1);
    if (lg->conns == NULL || lg->rbuf == NULL || lg->pattern == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < o->size; i += 8) {
        uint64_t r = rnd(lg);
        memcpy(lg->pattern + i, &r, o->size - i < 8 ? o->size - i : 8);
    }
    for (unsigned i = 0; i < lg->nconns; i++) {
        conn_t *c = &lg->conns[i];
        c->lg = lg;
        c->id = i;
        c->st = CS_FREE;
        if (o->mode != MODE_HANDSHAKE) {
            c->ts = calloc(o->window, sizeof(uint64_t));
            if (c->ts == NULL) {
                fprintf(stderr, "loadgen: out of memory\n");
                return 1;
            }
        }
    }
    int n = snprintf(lg->req, sizeof(lg->req),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: ",
                     o->path, o->host, o->port);
    if (n < 0 || (size_t)n >= sizeof(lg->req)) {
        fprintf(stderr, "loadgen: path too long\n");
        return 2;
    }
    lg->req_len = (size_t)n;

    lg->loop = uv_default_loop();
    uv_timer_init(lg->loop, &lg->phase_timer);
    lg->phase_timer.data = lg;
    uv_timer_init(lg->loop, &lg->tick);
    lg->tick.data = lg;
    uv_timer_start(&lg->tick, on_tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&lg->tick);
    uv_timer_init(lg->loop, &lg->guard);
    lg->guard.data = lg;
    uv_timer_start(&lg->guard, on_guard, (uint64_t)(o->timeout * 1000), 0);
    uv_unref((uv_handle_t *)&lg->guard);
    uv_signal_init(lg->loop, &lg->sigint);
    lg->sigint.data = lg;
    uv_signal_start(&lg->sigint, on_signal, SIGINT);
    uv_unref((uv_handle_t *)&lg->sigint);
    uv_signal_init(lg->loop, &lg->sigterm);
    lg->sigterm.data = lg;
    uv_signal_start(&lg->sigterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&lg->sigterm);

    lg->rss_base_kb = rss_now(lg);
    lg->phase = PH_SETUP;
    lg->t_setup0 = now_ns();
    if (o->mode == MODE_HANDSHAKE) {
        /* Loops start at once and count from the warm-up on. */
        lg->phase = PH_WARMUP;
        for (unsigned i = 0; i < lg->nconns; i++)
            conn_start(&lg->conns[i]);
        if (o->warmup > 0)
            arm(lg, o->warmup);
        else
            phase_next(lg);
    } else {
        setup_check(lg);
    }
    uv_run(lg->loop, UV_RUN_DEFAULT);
    if (lg->phase != PH_END) { /* nothing left to wait for, yet not at END */
        lg_end(lg);
        uv_walk(lg->loop, close_left, NULL);
        uv_run(lg->loop, UV_RUN_DEFAULT);
    }
    report(lg);
    uint64_t errors = lg->err.connect + lg->err.upgrade + lg->err.payload + lg->err.protocol +
                      lg->err.eof + lg->err.timeout + lg->err.write + lg->err.lost +
                      lg->err.tls;
    for (unsigned i = 0; i < lg->nconns; i++) {
        free(lg->conns[i].ts);
        free(lg->conns[i].ob.p);
        free(lg->conns[i].wb.p);
        free(lg->conns[i].head);
        free(lg->conns[i].cq.p);
        SSL_free(lg->conns[i].ssl); /* NULL after a normal end */
    }
    free(lg->conns);
    free(lg->rbuf);
    free(lg->pattern);
    free(lg->lat);
    free(lg->pbuf);
    SSL_CTX_free(lg->ssl_ctx);
    BIO_meth_free(lg->biom);
    uv_loop_close(lg->loop);
    return errors > 0 || lg->aborted ? 1 : 0;
}
