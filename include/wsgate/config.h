/*
 * wsgate configuration: the JSON file (SPEC §2) parsed into a validated,
 * immutable struct.
 *
 * A wsg_config_t is built once by wsg_config_load()/wsg_config_parse() and
 * never modified afterwards, so every worker thread may read it without
 * locks. It is reference counted: the process holds one reference for the
 * running configuration and every connection that needs it past a reload
 * holds its own (wsg_config_ref / wsg_config_unref, atomic).
 *
 * Every string in the struct is owned by the config and freed with it.
 */
#ifndef WSGATE_CONFIG_H
#define WSGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define WSG_CONFIG_DEFAULT_PATH "wsgate.json"
#define WSG_CONFIG_FALLBACK_PATH "config/wsgate.json"

/* A resolved "host:port" (IPv6 as "[addr]:port"). */
typedef struct wsg_sockaddr_s {
    struct sockaddr_storage ss;
    socklen_t len;
} wsg_sockaddr_t;

typedef struct wsg_sni_conf_s {
    char *server_name; /* exact name or "*.suffix", lower-cased */
    char *cert;        /* path */
    char *key;         /* path */
} wsg_sni_conf_t;

/* min_version is stored as the OpenSSL protocol constant value
 * (TLS1_2_VERSION = 0x0303, TLS1_3_VERSION = 0x0304) so that config.h does
 * not depend on OpenSSL headers. */
typedef struct wsg_tls_conf_s {
    char *cert;
    char *key;
    wsg_sni_conf_t *sni;
    size_t nsni;
    int min_version; /* default 0x0303 ("1.2"); "1.3" -> 0x0304 */
} wsg_tls_conf_t;

typedef struct wsg_listener_conf_s {
    char *name;
    char *bind; /* as written, "host:port" */
    wsg_sockaddr_t addr;
    wsg_tls_conf_t *tls; /* NULL: plain ws:// */
    bool proxy_protocol;
} wsg_listener_conf_t;

typedef struct wsg_admin_conf_s {
    bool enabled; /* false when "admin" is absent or null */
    char *bind;
    wsg_sockaddr_t addr;
    char *token; /* NULL: no auth */
} wsg_admin_conf_t;

typedef struct wsg_route_conf_s {
    char *host;        /* NULL: any host; lower-cased; "*.suffix" allowed */
    char *path_prefix; /* default "/" */
    char *pool;        /* pool name */
    size_t pool_index; /* index into wsg_config_t.pools, resolved at load */
    bool http;         /* plain HTTP proxied (default true; false: 426) */
    bool websocket;    /* upgrades proxied (default true; false: 404) */
    /* SPEC §11: NULL = Origin not checked; else the allowed origins,
     * normalised (wsg_origin_normalize), <norigins> of them (maybe 0). */
    char **origins;
    size_t norigins;
    bool allow_no_origin; /* an upgrade without Origin passes the list */
    /* SPEC §11: NULL = no token needed; else the name of a verifier under
     * "auth", at index <auth_index> of wsg_config_t.auths. */
    char *auth;
    size_t auth_index;
} wsg_route_conf_t;

/* SPEC §11 "from": where a verifier looks for the token, in order. The
 * values are those of wsg_jwt_from_kind_t (<wsgate/jwt.h>). */
typedef enum {
    WSG_FROM_HEADER = 1,  /* Authorization: Bearer TOKEN */
    WSG_FROM_SUBPROTOCOL, /* Sec-WebSocket-Protocol: bearer, TOKEN */
    WSG_FROM_COOKIE,      /* cookie NAME */
    WSG_FROM_QUERY,       /* query parameter NAME */
} wsg_from_kind_t;

typedef struct wsg_auth_from_s {
    wsg_from_kind_t kind;
    char *name; /* COOKIE, QUERY; NULL otherwise */
} wsg_auth_from_t;

typedef struct wsg_claim_header_s {
    char *claim;  /* a top-level claim of the verified token */
    char *header; /* the request header it is set as */
} wsg_claim_header_t;

/* auth.NAME: a JWT verifier (SPEC §11). The key file is read by the
 * runtime (wsg_runtime_load_auth), not here: the config stays free of
 * key material. */
typedef struct wsg_auth_conf_s {
    char *name;
    char *keys;     /* path of a JWKS, PEM or HMAC secret file */
    char *issuer;   /* NULL: iss not checked */
    char *audience; /* NULL: aud not checked */
    uint64_t leeway_ms; /* 0 */
    wsg_auth_from_t *from; /* default header, subprotocol */
    size_t nfrom;
    wsg_claim_header_t *claims; /* claims_to_headers, in file order */
    size_t nclaims;
    bool close_on_expiry; /* false */
} wsg_auth_conf_t;

typedef struct wsg_backend_conf_s {
    char *address; /* as written: the identity used for hashing; for an
                      address found by DNS, "NAME#IP:PORT" (SPEC §12) */
    wsg_sockaddr_t addr;
    unsigned weight; /* 1..256, default 1 */
    bool resolve;    /* an entry of the file that stands for every address of its name */
    size_t from;     /* found by DNS: 1 + the index of its entry in the pool's
                        resolves; 0: written in the file or added over the API */
} wsg_backend_conf_t;

typedef enum {
    WSG_KEY_IP = 0,
    WSG_KEY_HEADER,
    WSG_KEY_COOKIE,
    WSG_KEY_QUERY,
    WSG_KEY_JWT, /* "jwt:CLAIM": a claim of the route's verified token */
} wsg_key_kind_t;

typedef enum {
    WSG_FALLBACK_IP = 0,
    WSG_FALLBACK_RANDOM,
} wsg_fallback_t;

/* pools.NAME.balance.cookie "secure": "auto", true or false. */
typedef enum {
    WSG_COOKIE_SECURE_AUTO = 0, /* Secure on TLS listeners */
    WSG_COOKIE_SECURE_ON,
    WSG_COOKIE_SECURE_OFF,
} wsg_cookie_secure_t;

typedef enum {
    WSG_SAME_SITE_LAX = 0,
    WSG_SAME_SITE_STRICT,
    WSG_SAME_SITE_NONE, /* forces Secure */
} wsg_same_site_t;

/* The sticky cookie of SPEC §10 (sticky_cookie.h). */
typedef struct wsg_cookie_conf_s {
    bool enabled;           /* false when "cookie" is absent or null */
    char *name;             /* default "wsg" */
    char *secret;           /* the secret itself: "env:NAME" is read at load */
    size_t secret_len;      /* at least WSG_STICKY_MIN_SECRET */
    unsigned max_age_s;     /* 0: a session cookie, never expires here */
    int secure;             /* wsg_cookie_secure_t */
    int same_site;          /* wsg_same_site_t */
    char *path;             /* default "/" */
} wsg_cookie_conf_t;

typedef struct wsg_balance_conf_s {
    wsg_key_kind_t key;     /* default WSG_KEY_IP */
    char *key_name;         /* header/cookie/query name or claim; NULL for ip */
    wsg_fallback_t fallback; /* default WSG_FALLBACK_IP */
    double load_factor;     /* 0 = unbounded */
    wsg_cookie_conf_t cookie;
} wsg_balance_conf_t;

typedef enum {
    WSG_HEALTH_NONE = 0, /* "health" absent: passive checks only */
    WSG_HEALTH_TCP,
    WSG_HEALTH_HTTP,
    WSG_HEALTH_WEBSOCKET,
} wsg_health_type_t;

typedef struct wsg_health_conf_s {
    wsg_health_type_t type;
    char *path;           /* default "/" */
    uint64_t interval_ms; /* default 2000 */
    uint64_t timeout_ms;  /* default 1000 */
    unsigned rise;        /* default 2 */
    unsigned fall;        /* default 3 */
} wsg_health_conf_t;

typedef struct wsg_pool_tls_conf_s {
    bool enabled; /* false when "tls" is absent or null */
    char *ca;     /* NULL: system default trust store */
    bool verify;  /* default true */
    char *server_name; /* NULL: the backend's host part */
} wsg_pool_tls_conf_t;

typedef struct wsg_pool_conf_s {
    char *name;
    wsg_backend_conf_t *backends;
    size_t nbackends;
    wsg_balance_conf_t balance;
    wsg_health_conf_t health; /* fields hold defaults even when type is NONE */
    uint64_t connect_timeout_ms; /* default 3000 */
    unsigned retries;            /* default 2 */
    unsigned keepalive;          /* idle backend connections per worker and backend, 32; 0 = no reuse */
    wsg_pool_tls_conf_t tls;
    struct {
        unsigned max_per_s; /* 0: "rebalance" absent or null, off */
    } rebalance;
    /* The entries with "resolve": true, apart from <backends> (which holds
     * the other entries, then the addresses DNS found for these, once the
     * server has looked them up): address "NAME:PORT" as written, addr
     * unresolved. Shared by every config derived from this one. */
    wsg_backend_conf_t *resolves;
    size_t nresolves;
    uint64_t resolve_ms; /* 5000; 0 = looked up only at start and reload */
} wsg_pool_conf_t;

typedef enum {
    WSG_LOG_DEBUG = 0,
    WSG_LOG_INFO,
    WSG_LOG_WARN,
    WSG_LOG_ERROR,
} wsg_log_level_t;

typedef enum {
    WSG_LOG_TEXT = 0,
    WSG_LOG_JSON,
} wsg_log_format_t;

/* How plain TCP sides do their I/O (top-level "io"). */
typedef enum {
    WSG_IO_AUTO = 0, /* the default: see docs/io.md for what it picks */
    WSG_IO_EPOLL,    /* libuv's event loop */
    WSG_IO_URING,    /* io_uring, falling back to epoll when the kernel refuses it */
} wsg_io_mode_t;

typedef struct wsg_config_s {
    char *path; /* file it came from (wsg_config_parse: <name>, "<string>" if NULL) */

    unsigned workers; /* 0 in the file = one per CPU; resolved value here */
    unsigned workers_configured; /* as written */
    wsg_io_mode_t io; /* auto; read at start only, like workers */

    wsg_listener_conf_t *listeners;
    size_t nlisteners;

    wsg_admin_conf_t admin;

    wsg_route_conf_t *routes;
    size_t nroutes;

    /* Sorted by name so that pool lookup and iteration order are stable. */
    wsg_pool_conf_t *pools;
    size_t npools;

    /* JWT verifiers (SPEC §11), sorted by name like the pools. */
    wsg_auth_conf_t *auths;
    size_t nauths;

    struct {
        uint64_t handshake_ms; /* 5000 */
        uint64_t idle_ms;      /* 300000, 0 = never */
        uint64_t drain_ms;     /* 10000 */
        uint64_t keepalive_ms; /* 60000, 0 = close after each HTTP response */
        uint64_t response_idle_ms; /* 120000 */
        uint64_t upstream_idle_ms; /* 4000 */
        uint64_t max_lifetime_ms;  /* 0 = off */
    } timeouts;

    struct {
        uint64_t interval_ms; /* 30000, 0 = disabled */
        uint64_t timeout_ms;  /* 10000, 0 = a silent side is never declared dead */
    } heartbeat;

    struct {
        uint64_t max_connections;        /* 100000 */
        uint64_t max_connections_per_ip; /* 0 = unlimited */
        uint64_t max_header_bytes;       /* 8192 */
        uint64_t max_frame_bytes;        /* 16777216 */
        uint64_t buffer_bytes;           /* 65536 */
        uint64_t max_body_bytes;         /* 1048576, 0 = unlimited */
        /* SPEC §11 token buckets; 0 = off (a burst of 0 = the rate). */
        uint64_t handshakes_per_ip_per_s;
        uint64_t handshake_burst;
        uint64_t messages_per_s;
        uint64_t message_burst;
        uint64_t client_bytes_per_s;
    } limits;

    struct {
        char **servers; /* "ip:port" as written, <nservers> of them; 0: the system's resolver */
        size_t nservers;
    } dns;

    struct {
        wsg_log_level_t level;   /* info */
        wsg_log_format_t format; /* text */
        bool access;             /* true */
    } log;

    int refcount; /* private: atomic */
    /* private: a config made by wsg_config_with_backends() shares every
     * string and array with <base> (a reference it holds) but its own
     * pools array and the backends of the pools marked in owns_backends. */
    struct wsg_config_s *base;
    bool *owns_backends;
} wsg_config_t;

/* Errors collected during a load: every problem found, not just the first.
 * Each message is a complete line such as
 *   wsgate.json: pools.chat.backends[1].address: expected "host:port", got "10.0.0.1"
 * Owned by the struct; release with wsg_config_errors_free(). */
typedef struct wsg_config_errors_s {
    char **msgs;
    size_t count;
} wsg_config_errors_t;

/* Options that change how a file is loaded. */
typedef struct wsg_config_opts_s {
    /* Resolve backend, listener and admin names with getaddrinfo(). When
     * false only numeric addresses are accepted as resolved and names keep
     * an AF_UNSPEC address (used by --which and unit tests). */
    bool resolve;
} wsg_config_opts_t;

/* Reads and validates the file at <path>. Returns a new config with a
 * refcount of 1, or NULL with <errs> filled (errs must be zeroed by the
 * caller; messages are appended; it may be NULL to discard them). <opts>
 * may be NULL (resolve = true). Blocks in getaddrinfo() when resolving. */
wsg_config_t *wsg_config_load(const char *path, const wsg_config_opts_t *opts,
                              wsg_config_errors_t *errs);

/* Same, from a JSON text in memory (<text> need not be NUL-terminated);
 * <name> is used as the file name in error messages ("<string>" if NULL). */
wsg_config_t *wsg_config_parse(const char *text, size_t len, const char *name,
                               const wsg_config_opts_t *opts, wsg_config_errors_t *errs);

wsg_config_t *wsg_config_ref(wsg_config_t *cfg);
void wsg_config_unref(wsg_config_t *cfg);

void wsg_config_errors_free(wsg_config_errors_t *errs);

/* Returns the pool named <name>, or NULL. Borrowed from <cfg>. */
const wsg_pool_conf_t *wsg_config_pool(const wsg_config_t *cfg, const char *name);

/* Returns the verifier auth.<name>, or NULL. Borrowed from <cfg>. */
const wsg_auth_conf_t *wsg_config_auth(const wsg_config_t *cfg, const char *name);

/* The JSON Schema (draft 2020-12) of the configuration file, generated from
 * the key table the parser checks files with: every key it accepts, with
 * its type, range, default and description, and no key it refuses. Returns
 * new JSON text (indented, ending without a newline; free() it), or NULL
 * when out of memory. */
char *wsg_config_schema(void);

/* Parses "host:port" / "[v6]:port" into <host> (NUL-terminated, without
 * brackets, at most <hostcap> bytes) and <port>. Returns 0 or -1. Pure. */
int wsg_config_split_hostport(const char *s, char *host, size_t hostcap, uint16_t *port);

/* Runtime changes of a pool's backends (SPEC §12). */

/* Checks the JSON text <text> as one entry of a pool's "backends" array,
 * with the file's own rules, and fills <out> (zeroed by the caller; free
 * with wsg_config_backend_clear). Errors are named from <name>
 * ("request body: weight: expected an integer from 1 to 256, got 0").
 * Returns 0, or -1 with <errs> filled. Blocks in getaddrinfo() when
 * resolving (opts as for wsg_config_parse). */
int wsg_config_parse_backend(const char *text, size_t len, const char *name,
                             const wsg_config_opts_t *opts, wsg_backend_conf_t *out,
                             wsg_config_errors_t *errs);
void wsg_config_backend_clear(wsg_backend_conf_t *b);

/* Index of the backend of <p> that names the same endpoint as <address>
 * by the file's uniqueness rule (host case and port spelling aside), or
 * -1. */
int wsg_config_find_backend(const wsg_pool_conf_t *p, const char *address);

/* The "host:port" backend <address> is reached as, for a Host header or a
 * TLS server name: <address> itself, or for one found by DNS
 * ("NAME#IP:PORT") "NAME:PORT". Writes at most <cap> bytes to <out>. */
void wsg_config_backend_authority(const char *address, char *out, size_t cap);

/* A new configuration (refcount 1) equal to <cfg> but for pool <pool> (an
 * index), whose backends become the <n> entries of <bs> (copied; n >= 1
 * unless the pool has resolve entries, whose addresses may be none yet).
 * Everything else is shared with <cfg>, so the copy costs the pools array
 * and the changed backends, however large the file. NULL on ENOMEM. */
wsg_config_t *wsg_config_with_backends(wsg_config_t *cfg, size_t pool,
                                       const wsg_backend_conf_t *bs, size_t n);

#endif /* WSGATE_CONFIG_H */
