/*
 * Configuration: the JSON file of SPEC §2 turned into a validated, immutable
 * wsg_config_t.
 *
 * The whole schema is checked here, including the parts other modules act
 * on (TLS, admin, health, pool TLS, logging), so that `wsgate -t` is the one
 * place an operator learns what is wrong with a file. This module does not
 * open certificates or keys, bind sockets or apply anything: it only says
 * what the file means. Names are resolved with getaddrinfo() when asked to,
 * which is the only I/O besides reading the file.
 *
 * Key design choice: validation never stops at the first problem. Every
 * check records a complete line ("<file>: <json.path>: expected X, got Y")
 * and carries on with a default, so one run lists every mistake. The JSON
 * path of the value being checked lives in one growable buffer that each
 * nested parser extends and truncates again (push/pop), so no path string
 * is built unless an error needs it.
 */
#include <wsgate/config.h>
#include <wsgate/origin.h>
#include <wsgate/sticky_cookie.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Durations are capped at one year: larger values are surely typos, and the
 * cap keeps "now + duration" far from overflowing a uint64_t. */
#define DUR_MAX UINT64_C(31536000000)

/* A configuration file larger than this is not a configuration file. */
#define FILE_MAX (16u << 20)

/* How much of a bad string value is quoted back in an error message. */
#define QUOTE_MAX 80

#define TLS_1_2 0x0303
#define TLS_1_3 0x0304

/* ------------------------------------------------------------------------ */
/* String builder                                                            */

struct sb {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_addn(struct sb *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(struct sb *b, const char *s) {
    sb_addn(b, s, strlen(s));
}

static void sb_vprintf(struct sb *b, const char *fmt, va_list ap) {
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        sb_addn(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
        b->oom = true;
        return;
    }
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    sb_addn(b, big, (size_t)n);
    free(big);
}

static void sb_printf(struct sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(b, fmt, ap);
    va_end(ap);
}

/* Appends <s> as a JSON string literal, so that what the operator wrote can
 * be recognised and control characters cannot break the one-line format.
 * Long strings are cut at a UTF-8 boundary and marked with "...". */
static void sb_quote(struct sb *b, const char *s, size_t max) {
    size_t n = strlen(s);
    bool cut = false;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
        cut = true;
    }
    sb_add(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            sb_addn(b, esc, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            sb_printf(b, "\\u%04x", ch);
        } else {
            sb_addn(b, (const char *)&s[i], 1);
        }
    }
    sb_add(b, cut ? "\"..." : "\"");
}

/* ------------------------------------------------------------------------ */
/* Error collection and JSON paths                                           */

struct ctx {
    const char *file;
    wsg_config_errors_t *errs;
    struct sb path; /* JSON path of the value being checked */
    size_t nerrors; /* counted even when errs is NULL */
    bool resolve;
    bool oom;
    bool *route_bad; /* per route: host or path_prefix was invalid */
};

static void add_msg(struct ctx *c, struct sb *msg) {
    c->nerrors++;
    if (msg->oom || msg->p == NULL) {
        c->oom = true;
        free(msg->p);
        return;
    }
    if (c->errs == NULL) {
        free(msg->p);
        return;
    }
    char **v = realloc(c->errs->msgs, (c->errs->count + 1) * sizeof *v);
    if (v == NULL) {
        c->oom = true;
        free(msg->p);
        return;
    }
    c->errs->msgs = v;
    v[c->errs->count++] = msg->p;
}

/* Records "<file>: <path>: <message>" (no path part at the top level). */
static void errf(struct ctx *c, const char *fmt, ...) {
    struct sb m = {0};
    sb_add(&m, c->file);
    sb_add(&m, ": ");
    if (c->path.len > 0) {
        sb_add(&m, c->path.p);
        sb_add(&m, ": ");
    }
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&m, fmt, ap);
    va_end(ap);
    add_msg(c, &m);
}

/* Keys made of letters, digits, '_' and '-' are written ".key"; any other
 * key (a pool called "a.b", say) as ["key"], so that the path stays
 * unambiguous. */
static bool plain_key(const char *k) {
    if (*k == '\0')
        return false;
    for (; *k; k++) {
        unsigned char ch = (unsigned char)*k;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static size_t push_key(struct ctx *c, const char *key) {
    size_t mark = c->path.len;
    if (plain_key(key)) {
        if (c->path.len > 0)
            sb_add(&c->path, ".");
        sb_add(&c->path, key);
    } else {
        sb_add(&c->path, "[");
        sb_quote(&c->path, key, SIZE_MAX);
        sb_add(&c->path, "]");
    }
    if (c->path.oom)
        c->oom = true;
    return mark;
}

static size_t push_index(struct ctx *c, size_t i) {
    size_t mark = c->path.len;
    sb_printf(&c->path, "[%zu]", i);
    if (c->path.oom)
        c->oom = true;
    return mark;
}

static void pop(struct ctx *c, size_t mark) {
    if (c->path.p != NULL && mark <= c->path.len) {
        c->path.len = mark;
        c->path.p[mark] = '\0';
    }
}

/* What a JSON value looks like in "got ...". <typed> adds the type word to
 * strings ("a string \"5\"") for type mismatches, where the quotes alone
 * would not show the operator why "5" is wrong. */
static void describe(struct sb *b, const json_t *v, bool typed) {
    switch (v == NULL ? JSON_NULL : json_typeof(v)) {
    case JSON_OBJECT:
        sb_add(b, json_object_size(v) ? "an object" : "an empty object");
        break;
    case JSON_ARRAY:
        sb_add(b, json_array_size(v) ? "an array" : "an empty array");
        break;
    case JSON_STRING:
        if (typed)
            sb_add(b, "a string ");
        sb_quote(b, json_string_value(v), QUOTE_MAX);
        break;
    case JSON_INTEGER:
        sb_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL: {
        char num[64];
        snprintf(num, sizeof num, "%.15g", json_real_value(v));
        /* Keep 5.0 looking like a real, or "expected an integer, got 5"
         * would be a riddle. */
        if (strpbrk(num, ".eEn") == NULL)
            strcat(num, ".0");
        sb_add(b, num);
        break;
    }
    case JSON_TRUE:
        sb_add(b, "true");
        break;
    case JSON_FALSE:
        sb_add(b, "false");
        break;
    case JSON_NULL:
        sb_add(b, v == NULL ? "nothing" : "null");
        break;
    }
}

static void expected(struct ctx *c, const json_t *v, bool typed, const char *what) {
    struct sb got = {0};
    describe(&got, v, typed);
    errf(c, "expected %s, got %s", what, got.oom || got.p == NULL ? "?" : got.p);
    if (got.oom)
        c->oom = true;
    free(got.p);
}

/* A value of the wrong JSON type. */
static void bad_type(struct ctx *c, const json_t *v, const char *what) {
    expected(c, v, true, what);
}

/* A value of the right type that is out of range or malformed. */
static void bad_value(struct ctx *c, const json_t *v, const char *what) {
    expected(c, v, false, what);
}

/* Reports the required key <key> of the current object as missing. */
static void missing(struct ctx *c, const char *key, const char *what) {
    size_t m = push_key(c, key);
    errf(c, "missing, expected %s", what);
    pop(c, m);
}

/* ------------------------------------------------------------------------ */
/* "Did you mean" hints                                                      */

static int lower(int ch) {
    return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
}

/* Case-insensitive edit distance counting a swap of two neighbours as one
 * edit ("optimal string alignment"), since "balnce" and "caht" are the
 * typos people make. For hints only: long strings report "far". */
static size_t distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return SIZE_MAX;
    unsigned char d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned char)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned char)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ai = lower((unsigned char)a[i - 1]), bj = lower((unsigned char)b[j - 1]);
            unsigned best = d[i - 1][j - 1] + (ai != bj ? 1u : 0u);
            if (d[i - 1][j] + 1u < best)
                best = d[i - 1][j] + 1u;
            if (d[i][j - 1] + 1u < best)
                best = d[i][j - 1] + 1u;
            if (i > 1 && j > 1 && ai == lower((unsigned char)b[j - 2]) &&
                lower((unsigned char)a[i - 2]) == bj && d[i - 2][j - 2] + 1u < best)
                best = d[i - 2][j - 2] + 1u;
            d[i][j] = (unsigned char)best;
        }
    }
    return d[la][lb];
}

/* Returns the candidate closest to <s> if it is close enough to be a typo
 * (one edit for short words, two otherwise), else NULL. */
static const char *near_miss(const char *s, const char *const *cands, size_t n) {
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (cands[i] == NULL)
            continue;
        size_t d = distance(s, cands[i]);
        size_t limit = strlen(cands[i]) <= 4 ? 1 : 2;
        if (d <= limit && d < bestd) {
            best = cands[i];
            bestd = d;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------ */
/* The key table                                                             */

/*
 * Every key the file may hold is described once, here: its name, JSON type,
 * whether it is required or may be null, its range or choices, its default
 * and a one-line description. The table drives the unknown-key check, the
 * type, range and choice checks of scalar values, the defaults stored before
 * a file is read, and the JSON Schema that `wsgate --schema` prints
 * (wsg_config_schema()). What JSON Schema cannot say (that a name resolves,
 * that a route is reachable, that a pool named by a route exists) stays in
 * the section parsers below, which read the table's entries for everything
 * else, so that the schema and the parser cannot drift apart.
 *
 * Keys of later SPEC sections (§9–§12) that this parser does not implement
 * yet are listed as KT_LATER: the file is refused with "not implemented yet"
 * rather than "unknown key", and the schema leaves them out.
 */

enum ktype {
    KT_OBJECT, /* sub: the object's keys, ended by an entry without a name */
    KT_ARRAY,  /* sub: one entry describing every element */
    KT_MAP,    /* object of NAME -> value; sub: one entry describing the values */
    KT_BOOL,
    KT_UINT,   /* lo..hi; hi == UINT64_MAX: no upper bound */
    KT_FACTOR, /* a number: 0, or >= 1.0 */
    KT_ENUM,   /* one of enums[] */
    KT_AUTOBOOL, /* "auto", true or false, stored as 0, 1, 2 (ST_INT) */
    KT_STRING, /* fmt says which strings the section parser accepts */
    KT_LATER,  /* a key of a later SPEC section, not implemented yet */
};

/* What a KT_STRING holds; each has a pattern in the schema and a validator
 * with its own error message in the section parsers. */
enum kfmt {
    KF_ANY,
    KF_FILE,    /* a path to a file, non-empty */
    KF_ADDR,    /* "host:port", "[v6]:port" */
    KF_NAME,    /* letters, digits, '_', '-', '.' */
    KF_HOST,    /* a host name or IPv4 address */
    KF_HOSTPAT, /* a host name or "*.suffix" */
    KF_ORIGIN,  /* "scheme://host[:port]", as RFC 6454 serialises it */
    KF_PATH,    /* a request path (query allowed) */
    KF_PREFIX,  /* a request path prefix (no query) */
    KF_TOKEN,   /* printable ASCII without spaces */
    KF_STICKY,  /* "ip", "header:NAME", "cookie:NAME", "query:NAME", "jwt:CLAIM" */
    KF_POOLREF, /* the name of a pool under "pools" */
    KF_HEADER,  /* a header name (RFC 9110 token) */
    KF_FROM,    /* "header", "subprotocol", "cookie:NAME", "query:NAME" */
    KF_COOKIE,  /* a cookie name (an RFC 9110 token) */
    KF_SECRET,  /* a secret of at least WSG_STICKY_MIN_SECRET bytes, or "env:NAME" */
    KF_CPATH,   /* a cookie Path: "/..." without spaces, controls or ';' */
};

/* Where read_fields() and set_defaults() store a scalar: the C type at
 * <off> bytes into the struct the section is parsed into. ST_NONE: the
 * section parser reads the key itself. */
enum kstore { ST_NONE, ST_U64, ST_UNS, ST_BOOL, ST_INT, ST_DBL, ST_STR };

#define KR_REQUIRED 1u /* must be present */
#define KR_NULL 2u     /* null is accepted and means "absent" */
#define KR_NONEMPTY 4u /* strings, arrays and maps must not be empty */

struct key {
    const char *name;
    enum ktype type;
    unsigned flags;           /* KR_* */
    enum kfmt fmt;            /* KT_STRING; KT_MAP: the names */
    uint64_t lo, hi;          /* KT_UINT */
    const char *unit;         /* KT_UINT: "milliseconds", "bytes" or NULL */
    const char *zero;         /* KT_UINT: what 0 means, NULL when it means nothing special */
    const char *const *enums; /* KT_ENUM: the names, NULL-terminated */
    const int *values;        /* KT_ENUM: the value stored for each name; NULL: its index */
    const char *def;          /* the default as JSON text; NULL: none */
    const char *example;      /* JSON text, for keys without a default */
    enum kstore store;
    size_t off;
    const struct key *sub; /* KT_OBJECT, KT_ARRAY, KT_MAP */
    const char *desc;      /* KT_LATER: the SPEC section that adds it */
};

#define MS "milliseconds"
#define BYTES "bytes"
#define OFF(type, field) .off = offsetof(type, field)
#define LATER(n, section)                                                                          \
    { .name = (n), .type = KT_LATER, .desc = (section) }

static const char *const versions_e[] = {"1.2", "1.3", NULL};
static const int versions_v[] = {TLS_1_2, TLS_1_3};
static const char *const fallbacks_e[] = {"ip", "random", NULL};
static const char *const htypes_e[] = {"tcp", "http", "websocket", NULL};
static const int htypes_v[] = {WSG_HEALTH_TCP, WSG_HEALTH_HTTP, WSG_HEALTH_WEBSOCKET};
static const char *const levels_e[] = {"debug", "info", "warn", "error", NULL};
static const char *const formats_e[] = {"text", "json", NULL};
static const char *const io_e[] = {"auto", "epoll", "uring", NULL};
static const char *const same_site_e[] = {"lax", "strict", "none", NULL};
static const int same_site_v[] = {WSG_SAME_SITE_LAX, WSG_SAME_SITE_STRICT, WSG_SAME_SITE_NONE};

/* The table is kept one key to a few lines, as a table reads best. */
/* clang-format off */
static const struct key k_sni[] = {
    {.name = "server_name", .type = KT_STRING, .flags = KR_REQUIRED, .fmt = KF_HOSTPAT,
     .example = "\"chat.example.com\"",
     .desc = "Server name (exact or \"*.suffix\") this certificate is chosen for."},
    {.name = "cert", .type = KT_STRING, .flags = KR_REQUIRED | KR_NONEMPTY, .fmt = KF_FILE,
     .example = "\"certs/chat.pem\"", .desc = "Certificate chain file (PEM)."},
    {.name = "key", .type = KT_STRING, .flags = KR_REQUIRED | KR_NONEMPTY, .fmt = KF_FILE,
     .example = "\"certs/chat.key\"", .desc = "Private key file (PEM)."},
    {0},
};
static const struct key k_sni_item = {.type = KT_OBJECT, .sub = k_sni,
                                      .desc = "A certificate chosen by the client's server name."};

static const struct key k_tls[] = {
    {.name = "cert", .type = KT_STRING, .flags = KR_REQUIRED | KR_NONEMPTY, .fmt = KF_FILE,
     .example = "\"certs/site.pem\"",
     .desc = "Certificate chain file (PEM), the default certificate."},
    {.name = "key", .type = KT_STRING, .flags = KR_REQUIRED | KR_NONEMPTY, .fmt = KF_FILE,
     .example = "\"certs/site.key\"", .desc = "Private key file (PEM)."},
    {.name = "sni", .type = KT_ARRAY, .def = "[]", .sub = &k_sni_item,
     .desc = "Certificates chosen by the client's server name (SNI)."},
    {.name = "min_version", .type = KT_ENUM, .enums = versions_e, .values = versions_v,
     .def = "\"1.2\"", .store = ST_INT, OFF(wsg_tls_conf_t, min_version),
     .desc = "Lowest TLS version accepted."},
    {0},
};

static const struct key k_listener[] = {
    {.name = "name", .type = KT_STRING, .flags = KR_REQUIRED, .fmt = KF_NAME,
     .example = "\"public\"", .desc = "Unique listener name, used in logs."},
    {.name = "bind", .type = KT_STRING, .flags = KR_REQUIRED, .fmt = KF_ADDR,
     .example = "\"0.0.0.0:8080\"", .desc = "Address to listen on, \"host:port\" or \"[v6]:port\"."},
    {.name = "tls", .type = KT_OBJECT, .flags = KR_NULL, .def = "null", .sub = k_tls,
     .desc = "Serve wss:// with these certificates; absent or null: plain ws://."},
    {.name = "proxy_protocol", .type = KT_BOOL, .def = "false", .store = ST_BOOL,
     OFF(wsg_listener_conf_t, proxy_protocol),
     .desc = "Expect a PROXY protocol v1 or v2 header first and take the client address from it."},
    {0},
};
static const struct key k_listener_item = {.type = KT_OBJECT, .sub = k_listener,
                                           .desc = "A listening address."};

static const struct key k_admin[] = {
    {.name = "bind", .type = KT_STRING, .flags = KR_REQUIRED, .fmt = KF_ADDR,
     .example = "\"127.0.0.1:9090\"",
     .desc = "Address of the admin HTTP endpoint; must differ from every listener's."},
    {.name = "token", .type = KT_STRING, .flags = KR_NULL | KR_NONEMPTY, .fmt = KF_TOKEN,
     .def = "null", .example = "\"s3cr3t-admin-token\"",
     .desc = "When set, every admin path but /healthz needs \"Authorization: Bearer TOKEN\"."},
    {0},
};

static const struct key k_origin_item = {
    .type = KT_STRING, .fmt = KF_ORIGIN, .example = "\"https://chat.example.com\"",
    .desc = "An origin: scheme://host[:port] (default ports may be left out)."};

static const struct key k_route[] = {
    {.name = "host", .type = KT_STRING, .flags = KR_NULL, .fmt = KF_HOSTPAT, .def = "null",
     .example = "\"chat.example.com\"",
     .desc = "Host the request must name (exact or \"*.suffix\", case-insensitive, port "
             "ignored); absent or null: any host."},
    {.name = "path_prefix", .type = KT_STRING, .fmt = KF_PREFIX, .def = "\"/\"", .store = ST_STR,
     OFF(wsg_route_conf_t, path_prefix), .desc = "Plain string prefix of the request path."},
    {.name = "pool", .type = KT_STRING, .flags = KR_REQUIRED, .fmt = KF_POOLREF,
     .example = "\"app\"", .desc = "Name of the pool under \"pools\" that serves the route."},
    {.name = "http", .type = KT_BOOL, .def = "true", .store = ST_BOOL,
     OFF(wsg_route_conf_t, http),
     .desc = "Plain HTTP requests on this route are proxied; false: they get 426."},
    {.name = "websocket", .type = KT_BOOL, .def = "true", .store = ST_BOOL,
     OFF(wsg_route_conf_t, websocket),
     .desc = "WebSocket upgrades on this route are proxied; false: an upgrade gets 404."},
    {.name = "origins", .type = KT_ARRAY, .flags = KR_NULL, .def = "null",
     .sub = &k_origin_item, .example = "[\"https://chat.example.com\"]",
     .desc = "Origins a WebSocket upgrade may come from (exact, as a browser sends them); "
             "another gets 403; absent or null: Origin is not checked."},
    {.name = "allow_no_origin", .type = KT_BOOL, .def = "false", .store = ST_BOOL,
     OFF(wsg_route_conf_t, allow_no_origin),
     .desc = "With origins set: an upgrade without an Origin header (not a browser) passes."},
    {.name = "auth", .type = KT_STRING, .flags = KR_NULL, .fmt = KF_NAME, .def = "null",
     .example = "\"app\"",
     .desc = "Name of a verifier under \"auth\": requests and upgrades need a valid token "
             "(401/403 otherwise); absent or null: no token needed."},
    {0},
};
static const struct key k_route_item = {.type = KT_OBJECT, .sub = k_route,
                                        .desc = "A route; the first that matches wins."};

static const struct key k_backend[] = {
    {.name = "address", .type = KT_STRING, .flags = KR_REQUIRED, .fmt = KF_ADDR,
     .example = "\"10.0.0.11:9000\"",
     .desc = "\"host:port\" of the backend; as written, its identity on the hash ring and in "
             "the admin API."},
    {.name = "weight", .type = KT_UINT, .lo = 1, .hi = 256, .def = "1", .store = ST_UNS,
     OFF(wsg_backend_conf_t, weight), .desc = "Share of the keys."},
    {.name = "resolve", .type = KT_BOOL, .def = "false", .store = ST_BOOL,
     OFF(wsg_backend_conf_t, resolve),
     .desc = "The address's host name stands for every address it resolves to (A and AAAA), "
             "each a backend \"NAME#IP:PORT\" with this weight, looked up again every "
             "resolve_ms."},
    {0},
};
static const struct key k_backend_item = {.type = KT_OBJECT, .sub = k_backend,
                                          .desc = "A backend server."};

#define CKIE(field) OFF(wsg_cookie_conf_t, field)
static const struct key k_cookie[] = {
    {.name = "name", .type = KT_STRING, .fmt = KF_COOKIE, .def = "\"wsg\"", .store = ST_STR,
     CKIE(name), .desc = "Name of the cookie (a token)."},
    {.name = "secret", .type = KT_STRING, .flags = KR_REQUIRED, .fmt = KF_SECRET,
     .example = "\"change-me-to-32-random-characters\"", .store = ST_NONE,
     .desc = "HMAC-SHA256 key the cookie is signed with, at least 16 bytes; \"env:NAME\" "
             "reads it from the environment variable NAME."},
    {.name = "max_age_s", .type = KT_UINT, .lo = 0, .hi = 315360000, .unit = "seconds",
     .zero = "a session cookie", .def = "0", .store = ST_UNS, CKIE(max_age_s),
     .desc = "Max-Age of the cookie; a cookie older than this is ignored."},
    {.name = "secure", .type = KT_AUTOBOOL, .def = "\"auto\"", .store = ST_INT, CKIE(secure),
     .desc = "Secure attribute: \"auto\" on TLS listeners only, true always, false never "
             "(same_site \"none\" forces it)."},
    {.name = "same_site", .type = KT_ENUM, .enums = same_site_e, .values = same_site_v,
     .def = "\"lax\"", .store = ST_INT, CKIE(same_site), .desc = "SameSite attribute."},
    {.name = "path", .type = KT_STRING, .fmt = KF_CPATH, .def = "\"/\"", .store = ST_STR,
     CKIE(path), .desc = "Path attribute."},
    {0},
};

static const struct key k_balance[] = {
    {.name = "key", .type = KT_STRING, .fmt = KF_STICKY, .def = "\"ip\"",
     .desc = "The sticky key: \"ip\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or "
             "\"jwt:CLAIM\" (a claim of the verified token)."},
    {.name = "fallback", .type = KT_ENUM, .enums = fallbacks_e, .def = "\"ip\"", .store = ST_INT,
     OFF(wsg_balance_conf_t, fallback), .desc = "Used when the request lacks the key."},
    {.name = "load_factor", .type = KT_FACTOR, .def = "0", .store = ST_DBL,
     OFF(wsg_balance_conf_t, load_factor),
     .desc = "0 = unbounded; else at least 1.0, and a backend holds at most "
             "ceil(load_factor x mean) connections."},
    {.name = "cookie", .type = KT_OBJECT, .flags = KR_NULL, .def = "null", .sub = k_cookie,
     .desc = "A sticky cookie wsgate sets and honours before the key (SPEC §10); absent or "
             "null: none."},
    {0},
};

static const struct key k_health[] = {
    {.name = "type", .type = KT_ENUM, .flags = KR_REQUIRED, .enums = htypes_e,
     .values = htypes_v, .example = "\"websocket\"", .store = ST_INT,
     OFF(wsg_health_conf_t, type),
     .desc = "tcp: connect; http: GET path, 2xx or 3xx passes; websocket: a full handshake on "
             "path, then a close."},
    {.name = "path", .type = KT_STRING, .fmt = KF_PATH, .def = "\"/\"", .store = ST_STR,
     OFF(wsg_health_conf_t, path), .desc = "Request path of http and websocket checks."},
    {.name = "interval_ms", .type = KT_UINT, .lo = 1, .hi = DUR_MAX, .unit = MS, .def = "2000",
     .store = ST_U64, OFF(wsg_health_conf_t, interval_ms), .desc = "Time between checks."},
    {.name = "timeout_ms", .type = KT_UINT, .lo = 1, .hi = DUR_MAX, .unit = MS, .def = "1000",
     .store = ST_U64, OFF(wsg_health_conf_t, timeout_ms), .desc = "Time a check may take."},
    {.name = "rise", .type = KT_UINT, .lo = 1, .hi = 1000, .def = "2", .store = ST_UNS,
     OFF(wsg_health_conf_t, rise), .desc = "Passed checks in a row that bring a backend up."},
    {.name = "fall", .type = KT_UINT, .lo = 1, .hi = 1000, .def = "3", .store = ST_UNS,
     OFF(wsg_health_conf_t, fall), .desc = "Failures in a row that take a backend down."},
    {0},
};

static const struct key k_pool_tls[] = {
    {.name = "ca", .type = KT_STRING, .flags = KR_NULL | KR_NONEMPTY, .fmt = KF_FILE,
     .def = "null", .example = "\"certs/internal-ca.pem\"",
     .desc = "CA file that verifies the backends; null: the system trust store."},
    {.name = "verify", .type = KT_BOOL, .def = "true", .store = ST_BOOL,
     OFF(wsg_pool_tls_conf_t, verify), .desc = "Verify the backend's certificate."},
    {.name = "server_name", .type = KT_STRING, .flags = KR_NULL, .fmt = KF_HOST, .def = "null",
     .example = "\"api.internal\"", .desc = "SNI and the name to verify; null: the host of the backend's address."},
    {0},
};

#define POOLR(field) OFF(wsg_pool_conf_t, rebalance.field)
static const struct key k_rebalance[] = {
    {.name = "max_per_s", .type = KT_UINT, .flags = KR_REQUIRED, .lo = 1, .hi = 100000,
     .example = "50", .store = ST_UNS, POOLR(max_per_s),
     .desc = "Most connections closed with 1012 a second, all workers together."},
    {0},
};

static const struct key k_pool[] = {
    {.name = "backends", .type = KT_ARRAY, .flags = KR_REQUIRED | KR_NONEMPTY,
     .sub = &k_backend_item, .desc = "The servers of the pool."},
    {.name = "balance", .type = KT_OBJECT, .sub = k_balance,
     .desc = "How a request picks its backend (consistent hashing of a sticky key)."},
    {.name = "health", .type = KT_OBJECT, .flags = KR_NULL, .def = "null", .sub = k_health,
     .desc = "Active health checks; absent or null: passive checks only."},
    {.name = "connect_timeout_ms", .type = KT_UINT, .lo = 1, .hi = DUR_MAX, .unit = MS,
     .def = "3000", .store = ST_U64, OFF(wsg_pool_conf_t, connect_timeout_ms),
     .desc = "Connect timeout to a backend."},
    {.name = "retries", .type = KT_UINT, .lo = 0, .hi = 100, .def = "2", .store = ST_UNS,
     OFF(wsg_pool_conf_t, retries),
     .desc = "Further backends tried when a connect fails before any byte is sent."},
    {.name = "tls", .type = KT_OBJECT, .flags = KR_NULL, .def = "null", .sub = k_pool_tls,
     .desc = "Connect to the backends over TLS; absent or null: plain TCP."},
    {.name = "keepalive", .type = KT_UINT, .lo = 0, .hi = 100000, .zero = "no reuse",
     .def = "32", .store = ST_UNS, OFF(wsg_pool_conf_t, keepalive),
     .desc = "Idle backend connections kept for reuse by plain HTTP requests, per worker "
             "and backend."},
    {.name = "resolve_ms", .type = KT_UINT, .lo = 0, .hi = DUR_MAX, .unit = MS,
     .zero = "only at start and reload", .def = "5000", .store = ST_U64,
     OFF(wsg_pool_conf_t, resolve_ms),
     .desc = "How often the names of backends with \"resolve\": true are looked up again "
             "(sooner when the answer's TTL is shorter, but not under a second)."},
    {.name = "rebalance", .type = KT_OBJECT, .flags = KR_NULL, .def = "null", .sub = k_rebalance,
     .desc = "After a backend is added, close with 1012 the live connections whose key now maps "
             "to it; absent or null: off."},
    {0},
};
static const struct key k_pool_item = {.type = KT_OBJECT, .sub = k_pool,
                                       .desc = "A pool of backends."};

#define CFG(field) OFF(wsg_config_t, field)

static const struct key k_timeouts[] = {
    {.name = "handshake_ms", .type = KT_UINT, .lo = 1, .hi = DUR_MAX, .unit = MS,
     .def = "5000", .store = ST_U64, CFG(timeouts.handshake_ms),
     .desc = "Time a client has to send a complete request, else 408."},
    {.name = "idle_ms", .type = KT_UINT, .lo = 0, .hi = DUR_MAX, .unit = MS, .zero = "never",
     .def = "300000", .store = ST_U64, CFG(timeouts.idle_ms),
     .desc = "No data frame either way for this long closes the connection with 1001."},
    {.name = "drain_ms", .type = KT_UINT, .lo = 1, .hi = DUR_MAX, .unit = MS, .def = "10000",
     .store = ST_U64, CFG(timeouts.drain_ms),
     .desc = "How long a closing or draining connection, or a shutdown, may take."},
    {.name = "keepalive_ms", .type = KT_UINT, .lo = 0, .hi = DUR_MAX, .unit = MS,
     .zero = "close after each response", .def = "60000", .store = ST_U64,
     CFG(timeouts.keepalive_ms),
     .desc = "How long a client connection may wait between two HTTP requests."},
    {.name = "upstream_idle_ms", .type = KT_UINT, .lo = 1, .hi = DUR_MAX, .unit = MS,
     .def = "4000", .store = ST_U64, CFG(timeouts.upstream_idle_ms),
     .desc = "An idle kept-alive backend connection is closed after this long."},
    {.name = "response_idle_ms", .type = KT_UINT, .lo = 1, .hi = DUR_MAX, .unit = MS,
     .def = "120000", .store = ST_U64, CFG(timeouts.response_idle_ms),
     .desc = "Longest silence of a backend while an HTTP response is due or streaming; "
             "no response head in that time gets 504."},
    {.name = "max_lifetime_ms", .type = KT_UINT, .lo = 0, .hi = DUR_MAX, .unit = MS,
     .zero = "off", .def = "0", .store = ST_U64, CFG(timeouts.max_lifetime_ms),
     .desc = "A WebSocket older than this (plus up to 10% jitter) is closed with 1001 "
             "\"max lifetime\"."},
    {0},
};

static const struct key k_heartbeat[] = {
    {.name = "interval_ms", .type = KT_UINT, .lo = 0, .hi = DUR_MAX, .unit = MS,
     .zero = "disabled", .def = "30000", .store = ST_U64, CFG(heartbeat.interval_ms),
     .desc = "A side silent this long gets a ping."},
    {.name = "timeout_ms", .type = KT_UINT, .lo = 0, .hi = DUR_MAX, .unit = MS,
     .zero = "disabled", .def = "10000", .store = ST_U64, CFG(heartbeat.timeout_ms),
     .desc = "No byte from that side within this after the ping: it is dead."},
    {0},
};

static const struct key k_limits[] = {
    {.name = "max_connections", .type = KT_UINT, .lo = 1, .hi = UINT64_MAX, .def = "100000",
     .store = ST_U64, CFG(limits.max_connections),
     .desc = "Client connections at once, all workers together."},
    {.name = "max_connections_per_ip", .type = KT_UINT, .lo = 0, .hi = UINT64_MAX,
     .zero = "unlimited", .def = "0", .store = ST_U64, CFG(limits.max_connections_per_ip),
     .desc = "Client connections at once per client address; one more gets 429."},
    {.name = "max_header_bytes", .type = KT_UINT, .lo = 256, .hi = 1048576, .unit = BYTES,
     .def = "8192", .store = ST_U64, CFG(limits.max_header_bytes),
     .desc = "Largest request head, else 431."},
    /* 125 bytes: the largest control frame (RFC 6455 §5.5) must pass. */
    {.name = "max_frame_bytes", .type = KT_UINT, .lo = 125, .hi = UINT64_MAX, .unit = BYTES,
     .def = "16777216", .store = ST_U64, CFG(limits.max_frame_bytes),
     .desc = "Larger frames close the connection with 1009."},
    {.name = "buffer_bytes", .type = KT_UINT, .lo = 1024, .hi = 1073741824, .unit = BYTES,
     .def = "65536", .store = ST_U64, CFG(limits.buffer_bytes),
     .desc = "Bytes held per direction before reading from the sender stops."},
    {.name = "max_body_bytes", .type = KT_UINT, .lo = 0, .hi = UINT64_MAX, .unit = BYTES,
     .zero = "unlimited", .def = "1048576", .store = ST_U64, CFG(limits.max_body_bytes),
     .desc = "Largest HTTP request body; a larger one gets 413."},
    {.name = "handshakes_per_ip_per_s", .type = KT_UINT, .lo = 0, .hi = UINT32_MAX,
     .zero = "off", .def = "0", .store = ST_U64, CFG(limits.handshakes_per_ip_per_s),
     .desc = "Upgrades and HTTP requests a second per client address, all workers together; "
             "past the bucket: 429 with Retry-After."},
    {.name = "handshake_burst", .type = KT_UINT, .lo = 0, .hi = UINT32_MAX,
     .zero = "the rate", .def = "0", .store = ST_U64, CFG(limits.handshake_burst),
     .desc = "Requests an address may make at once before handshakes_per_ip_per_s applies."},
    {.name = "messages_per_s", .type = KT_UINT, .lo = 0, .hi = UINT32_MAX,
     .zero = "off", .def = "0", .store = ST_U64, CFG(limits.messages_per_s),
     .desc = "Data messages a second a client may send on one WebSocket; past the bucket: "
             "close 1008 \"rate limit\"."},
    {.name = "message_burst", .type = KT_UINT, .lo = 0, .hi = UINT32_MAX,
     .zero = "the rate", .def = "0", .store = ST_U64, CFG(limits.message_burst),
     .desc = "Messages a client may send at once before messages_per_s applies."},
    {.name = "client_bytes_per_s", .type = KT_UINT, .lo = 0, .hi = UINT32_MAX, .unit = BYTES,
     .zero = "off", .def = "0", .store = ST_U64, CFG(limits.client_bytes_per_s),
     .desc = "The client side of a WebSocket is read no faster than this (reads pause)."},
    {0},
};

static const struct key k_from_item = {
    .type = KT_STRING, .fmt = KF_FROM, .example = "\"header\"",
    .desc = "\"header\" (Authorization: Bearer), \"subprotocol\" (Sec-WebSocket-Protocol: "
            "bearer, TOKEN), \"cookie:NAME\" or \"query:NAME\"."};
static const struct key k_claim_header = {
    .type = KT_STRING, .fmt = KF_HEADER, .example = "\"X-User-Id\"",
    .desc = "The request header the claim is set as (a client copy of it is dropped)."};

#define AUTH(field) OFF(wsg_auth_conf_t, field)
static const struct key k_auth[] = {
    {.name = "keys", .type = KT_STRING, .flags = KR_REQUIRED | KR_NONEMPTY, .fmt = KF_FILE,
     .example = "\"keys/jwks.json\"",
     .desc = "A JWKS file, a PEM public key or an HMAC secret file, told apart by content; read "
             "at start and on reload."},
    {.name = "issuer", .type = KT_STRING, .flags = KR_NULL | KR_NONEMPTY, .def = "null",
     .example = "\"https://id.example.com\"",
     .desc = "The iss a token must carry (else 403); null: not checked."},
    {.name = "audience", .type = KT_STRING, .flags = KR_NULL | KR_NONEMPTY, .def = "null",
     .example = "\"chat\"", .desc = "A value aud must hold (else 403); null: not checked."},
    {.name = "leeway_ms", .type = KT_UINT, .lo = 0, .hi = DUR_MAX, .unit = MS, .def = "0",
     .store = ST_U64, AUTH(leeway_ms), .desc = "Clock skew allowed on exp, nbf and iat."},
    {.name = "from", .type = KT_ARRAY, .flags = KR_NONEMPTY,
     .def = "[\"header\", \"subprotocol\"]", .sub = &k_from_item,
     .desc = "Where the token is looked for; the first that holds one is used."},
    {.name = "claims_to_headers", .type = KT_MAP, .fmt = KF_TOKEN, .def = "{}",
     .sub = &k_claim_header, .desc = "Claims of the verified token set as request headers."},
    {.name = "close_on_expiry", .type = KT_BOOL, .def = "false", .store = ST_BOOL,
     AUTH(close_on_expiry),
     .desc = "A relayed WebSocket whose token expires gets close 1008 \"token expired\"."},
    {0},
};
static const struct key k_auth_item = {.type = KT_OBJECT, .sub = k_auth,
                                       .desc = "A JWT verifier (SPEC §11)."};

static const struct key k_log[] = {
    {.name = "level", .type = KT_ENUM, .enums = levels_e, .def = "\"info\"", .store = ST_INT,
     CFG(log.level), .desc = "Lowest level written."},
    {.name = "format", .type = KT_ENUM, .enums = formats_e, .def = "\"text\"", .store = ST_INT,
     CFG(log.format), .desc = "text or json lines on stderr."},
    {.name = "access", .type = KT_BOOL, .def = "true", .store = ST_BOOL, CFG(log.access),
     .desc = "One line per ended connection."},
    {0},
};

static const struct key k_dns_server_item = {
    .type = KT_STRING, .fmt = KF_ADDR, .example = "\"127.0.0.1:53\"",
    .desc = "A DNS server: \"ip:port\" or \"[v6]:port\" (an address, not a name)."};

static const struct key k_dns[] = {
    {.name = "servers", .type = KT_ARRAY, .flags = KR_REQUIRED | KR_NONEMPTY,
     .sub = &k_dns_server_item, .example = "[\"127.0.0.1:5353\"]",
     .desc = "The servers that resolve backends with \"resolve\": true, tried in order."},
    {0},
};

static const struct key k_root[] = {
    {.name = "$schema", .type = KT_STRING, .example = "\"./wsgate.schema.json\"",
     .desc = "Ignored by wsgate: the JSON Schema that editors check this file against."},
    {.name = "workers", .type = KT_UINT, .lo = 0, .hi = 1024, .zero = "one per CPU",
     .def = "0", .store = ST_UNS, CFG(workers_configured), .desc = "Event-loop threads."},
    {.name = "io", .type = KT_ENUM, .enums = io_e, .def = "\"auto\"", .store = ST_INT, CFG(io),
     .desc = "How plain TCP sides do their I/O: libuv's epoll or io_uring (docs/io.md)."},
    {.name = "listeners", .type = KT_ARRAY, .flags = KR_REQUIRED | KR_NONEMPTY,
     .sub = &k_listener_item, .desc = "Where clients connect."},
    {.name = "admin", .type = KT_OBJECT, .flags = KR_NULL, .def = "null", .sub = k_admin,
     .desc = "The admin HTTP endpoint; absent or null: disabled."},
    {.name = "routes", .type = KT_ARRAY, .flags = KR_REQUIRED | KR_NONEMPTY,
     .sub = &k_route_item, .desc = "Request to pool, first match wins."},
    {.name = "pools", .type = KT_MAP, .flags = KR_REQUIRED | KR_NONEMPTY, .fmt = KF_NAME,
     .sub = &k_pool_item, .desc = "Backend pools by name."},
    {.name = "timeouts", .type = KT_OBJECT, .sub = k_timeouts, .desc = "Client-side timeouts."},
    {.name = "heartbeat", .type = KT_OBJECT, .sub = k_heartbeat,
     .desc = "Pings to silent sides of a relayed WebSocket."},
    {.name = "limits", .type = KT_OBJECT, .sub = k_limits, .desc = "Connection and size limits."},
    {.name = "log", .type = KT_OBJECT, .sub = k_log, .desc = "Logging on stderr."},
    {.name = "auth", .type = KT_MAP, .fmt = KF_NAME, .sub = &k_auth_item,
     .desc = "JWT verifiers by name, for routes[].auth."},
    {.name = "dns", .type = KT_OBJECT, .flags = KR_NULL, .def = "null", .sub = k_dns,
     .desc = "Where backends with \"resolve\": true are looked up; absent or null: the "
             "system's resolver (/etc/resolv.conf, /etc/hosts)."},
    {0},
};

/* clang-format on */

/* The entry for <name> among <keys>. Every caller names a key of its own
 * table, so a miss is a bug. */
static const struct key *key_get(const struct key *keys, const char *name) {
    for (const struct key *k = keys; k->name != NULL; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    assert(!"key not in the table");
    return NULL;
}

/* Every key of <obj> must be in <keys>. A key of a later SPEC section gets
 * its own message, so that an operator reading the SPEC learns that this
 * wsgate is older than the file, not that the key is misspelt. */
static void check_keys(struct ctx *c, json_t *obj, const struct key *keys) {
    const char *names[48];
    size_t n = 0;
    for (const struct key *k = keys; k->name != NULL; k++) {
        assert(n < sizeof names / sizeof names[0]);
        if (k->type != KT_LATER)
            names[n++] = k->name;
    }
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        const struct key *k = keys;
        while (k->name != NULL && strcmp(k->name, key) != 0)
            k++;
        if (k->name != NULL && k->type != KT_LATER)
            continue;
        size_t m = push_key(c, key);
        const char *hint = k->name == NULL ? near_miss(key, names, n) : NULL;
        if (k->name != NULL)
            errf(c, "not implemented yet by this wsgate (%s adds it)", k->desc);
        else if (hint != NULL)
            errf(c, "unknown key, did you mean \"%s\"?", hint);
        else
            errf(c, "unknown key");
        pop(c, m);
    }
}

/* ------------------------------------------------------------------------ */
/* Typed field readers. Each one checks a value against its table entry,
 * reports a problem under the key's path, and leaves the stored value
 * untouched unless the value is good (so the default stays in place).      */

static char *xstrdup(struct ctx *c, const char *s) {
    char *d = strdup(s);
    if (d == NULL)
        c->oom = true;
    return d;
}

/* "an integer from 1 to 256", "an integer >= 1 (milliseconds, 0 = never)"... */
static void uint_what(char *buf, size_t cap, const struct key *k) {
    char note[96] = "";
    if (k->unit != NULL && k->zero != NULL)
        snprintf(note, sizeof note, " (%s, 0 = %s)", k->unit, k->zero);
    else if (k->unit != NULL)
        snprintf(note, sizeof note, " (%s)", k->unit);
    else if (k->zero != NULL)
        snprintf(note, sizeof note, " (0 = %s)", k->zero);
    if (k->hi == UINT64_MAX && k->lo == 0)
        snprintf(buf, cap, "a non-negative integer%s", note);
    else if (k->hi == UINT64_MAX)
        snprintf(buf, cap, "an integer >= %llu%s", (unsigned long long)k->lo, note);
    else
        snprintf(buf, cap, "an integer from %llu to %llu%s", (unsigned long long)k->lo,
                 (unsigned long long)k->hi, note);
}

/* "\"ip\" or \"random\"", "\"tcp\", \"http\" or \"websocket\"". */
static void enum_what(struct sb *b, const struct key *k) {
    for (size_t i = 0; k->enums[i] != NULL; i++) {
        if (i > 0)
            sb_add(b, k->enums[i + 1] == NULL ? " or " : ", ");
        sb_printf(b, "\"%s\"", k->enums[i]);
    }
}

static void store_int(const struct key *k, void *base, long long x) {
    char *p = (char *)base + k->off;
    switch (k->store) {
    case ST_U64:
        *(uint64_t *)(void *)p = (uint64_t)x;
        break;
    case ST_UNS:
        *(unsigned *)(void *)p = (unsigned)x;
        break;
    case ST_BOOL:
        *(bool *)(void *)p = x != 0;
        break;
    case ST_INT:
        *(int *)(void *)p = (int)x;
        break;
    default:
        assert(!"not an integer field");
    }
}

/* Checks the present value <v> of key <k> (the key is on the path) and
 * stores it into <base> when it is good. */
static void read_field(struct ctx *c, const struct key *k, json_t *v, void *base) {
    switch (k->type) {
    case KT_UINT: {
        char what[160];
        uint_what(what, sizeof what, k);
        if (!json_is_integer(v)) {
            bad_type(c, v, what);
            return;
        }
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t)i < k->lo || (uint64_t)i > k->hi)
            bad_value(c, v, what);
        else
            store_int(k, base, (long long)i);
        return;
    }
    case KT_BOOL:
        if (json_is_boolean(v))
            store_int(k, base, json_is_true(v));
        else
            bad_type(c, v, "true or false");
        return;
    case KT_ENUM: {
        struct sb what = {0};
        enum_what(&what, k);
        const char *w = what.p != NULL ? what.p : "?";
        c->oom |= what.oom;
        if (!json_is_string(v)) {
            bad_type(c, v, w);
        } else {
            int i = 0;
            while (k->enums[i] != NULL && strcmp(k->enums[i], json_string_value(v)) != 0)
                i++;
            if (k->enums[i] == NULL)
                bad_value(c, v, w);
            else
                store_int(k, base, k->values != NULL ? k->values[i] : i);
        }
        free(what.p);
        return;
    }
    case KT_AUTOBOOL:
        if (json_is_boolean(v))
            store_int(k, base, json_is_true(v) ? 1 : 2);
        else if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0)
            store_int(k, base, 0);
        else
            bad_value(c, v, "\"auto\", true or false");
        return;
    case KT_FACTOR: {
        static const char *const what = "0 or a number >= 1.0";
        assert(k->store == ST_DBL);
        if (!json_is_number(v))
            bad_type(c, v, what);
        else if (json_number_value(v) != 0 && !(json_number_value(v) >= 1.0))
            bad_value(c, v, what);
        else
            *(double *)(void *)((char *)base + k->off) = json_number_value(v);
        return;
    }
    default:
        assert(!"no generic reader for this type");
    }
}

/* Reads each of the first <n> keys of <keys> that has a generic reader
 * (KT_UINT, KT_BOOL, KT_ENUM, KT_FACTOR with a store) from <obj> into
 * <base>. */
static void read_fields_n(struct ctx *c, json_t *obj, const struct key *keys, size_t n,
                          void *base) {
    for (const struct key *k = keys; k->name != NULL && n > 0; k++, n--) {
        if (k->store == ST_NONE || k->store == ST_STR)
            continue;
        json_t *v = json_object_get(obj, k->name);
        if (v == NULL || (json_is_null(v) && (k->flags & KR_NULL)))
            continue;
        size_t m = push_key(c, k->name);
        read_field(c, k, v, base);
        pop(c, m);
    }
}

static void read_fields(struct ctx *c, json_t *obj, const struct key *keys, void *base) {
    read_fields_n(c, obj, keys, SIZE_MAX, base);
}

/* Stores the default of every key of <keys> that has one and a store, so
 * that the C struct starts out as the table says. */
static void set_defaults(struct ctx *c, const struct key *keys, void *base) {
    for (const struct key *k = keys; k->name != NULL; k++) {
        if (k->store == ST_NONE || k->def == NULL)
            continue;
        const char *d = k->def;
        switch (k->type) {
        case KT_UINT:
            store_int(k, base, (long long)strtoull(d, NULL, 10));
            break;
        case KT_BOOL:
            store_int(k, base, strcmp(d, "true") == 0);
            break;
        case KT_AUTOBOOL:
            store_int(k, base, strcmp(d, "true") == 0 ? 1 : strcmp(d, "false") == 0 ? 2 : 0);
            break;
        case KT_FACTOR:
            *(double *)(void *)((char *)base + k->off) = strtod(d, NULL);
            break;
        case KT_ENUM: {
            size_t len = strlen(d);
            int i = 0;
            assert(len >= 2 && d[0] == '"');
            while (k->enums[i] != NULL &&
                   (strlen(k->enums[i]) != len - 2 || strncmp(k->enums[i], d + 1, len - 2) != 0))
                i++;
            assert(k->enums[i] != NULL);
            store_int(k, base, k->values != NULL ? k->values[i] : i);
            break;
        }
        case KT_STRING: {
            /* Defaults of strings are plain words: no escapes to undo. */
            size_t len = strlen(d);
            assert(k->store == ST_STR && len >= 2 && d[0] == '"');
            char **dst = (char **)(void *)((char *)base + k->off);
            free(*dst);
            *dst = strndup(d + 1, len - 2);
            if (*dst == NULL)
                c->oom = true;
            break;
        }
        default:
            assert(!"no default for this type");
        }
    }
}

/* A required non-empty string (a file path, typically). */
static void req_string(struct ctx *c, json_t *obj, const char *key, const char *what, char **out) {
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        missing(c, key, what);
        return;
    }
    size_t m = push_key(c, key);
    if (!json_is_string(v))
        bad_type(c, v, what);
    else if (json_string_length(v) == 0)
        bad_value(c, v, what);
    else
        *out = xstrdup(c, json_string_value(v));
    pop(c, m);
}

/* An optional string that may also be null (absent and null both leave
 * *out NULL). */
static void opt_string(struct ctx *c, json_t *obj, const char *key, const char *what, char **out) {
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return;
    size_t m = push_key(c, key);
    if (!json_is_string(v))
        bad_type(c, v, what);
    else if (json_string_length(v) == 0)
        bad_value(c, v, what);
    else
        *out = xstrdup(c, json_string_value(v));
    pop(c, m);
}

/* ------------------------------------------------------------------------ */
/* Names, host patterns and addresses                                        */

static bool is_alnum(int ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* Listener and pool names appear in logs, metrics and admin URLs
 * (/pools/P/...), so they are kept to characters that need no escaping. */
static bool valid_name(const char *s) {
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!is_alnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
            return false;
    return true;
}

#define NAME_WHAT "a name of letters, digits, '_', '-' and '.'"

/* A DNS name (RFC 1123 §2.1 labels, '_' tolerated as resolvers do) or a
 * dotted IPv4 address. A name whose last label is all digits must be an IPv4
 * address: no top-level domain is numeric (RFC 3696 §2), and this keeps
 * "10.0.0.300" or inet_aton's "10.1" from being taken for host names. */
static bool valid_hostname(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    const char *label = s;
    bool digits_only = true;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t len = (size_t)(p - label);
            if (len == 0 || len > 63 || label[0] == '-' || p[-1] == '-')
                return false;
            if (*p == '\0')
                break;
            label = p + 1;
            digits_only = true;
            continue;
        }
        if (!is_alnum((unsigned char)*p) && *p != '-' && *p != '_')
            return false;
        if (*p < '0' || *p > '9')
            digits_only = false;
    }
    if (digits_only) {
        struct in_addr a;
        return inet_pton(AF_INET, s, &a) == 1;
    }
    return true;
}

/* Route hosts and SNI names: an exact host name or "*.suffix" (the wildcard
 * is only allowed as the whole first label). Returns a lower-cased copy, or
 * NULL if <s> is not such a pattern (*oom tells allocation failure apart). */
static char *host_pattern(const char *s, bool *oom) {
    *oom = false;
    const char *rest = strncmp(s, "*.", 2) == 0 ? s + 2 : s;
    if (strchr(rest, '*') != NULL || !valid_hostname(rest))
        return NULL;
    char *d = strdup(s);
    if (d == NULL) {
        *oom = true;
        return NULL;
    }
    for (char *p = d; *p; p++)
        *p = (char)lower((unsigned char)*p);
    return d;
}

enum hp_err {
    HP_OK = 0,
    HP_SYNTAX,  /* not host:port at all */
    HP_PORT,    /* port not in 1..65535 */
    HP_V6,      /* unbracketed IPv6 */
    HP_BRACKET, /* brackets around something that is not IPv6 */
    HP_HOST,    /* bad characters in the host */
    HP_TOOLONG, /* host does not fit the caller's buffer */
};

static enum hp_err split_hostport(const char *s, char *host, size_t hostcap, uint16_t *port,
                                  bool *bracketed) {
    const char *hs, *he, *ps;
    *bracketed = false;
    if (s[0] == '[') {
        he = strchr(s, ']');
        if (he == NULL || he[1] != ':')
            return HP_SYNTAX;
        hs = s + 1;
        ps = he + 2;
        /* Brackets are for IPv6 literals only (RFC 3986 §3.2.2). */
        if (he == hs || memchr(hs, ':', (size_t)(he - hs)) == NULL)
            return HP_BRACKET;
        *bracketed = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL)
            return HP_SYNTAX;
        hs = s;
        he = colon;
        ps = colon + 1;
        if (memchr(hs, ':', (size_t)(he - hs)) != NULL)
            return HP_V6;
        if (he == hs)
            return HP_SYNTAX;
    }
    if (*ps == '\0')
        return HP_SYNTAX;
    unsigned long p = 0;
    for (const char *q = ps; *q; q++) {
        if (*q < '0' || *q > '9')
            return HP_SYNTAX;
        if (p <= 65535)
            p = p * 10 + (unsigned long)(*q - '0');
    }
    if (p < 1 || p > 65535)
        return HP_PORT;
    size_t hl = (size_t)(he - hs);
    if (hl + 1 > hostcap)
        return HP_TOOLONG;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    for (size_t i = 0; i < hl; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '/' || ch == '[' || ch == ']' || ch == '@')
            return HP_HOST;
    }
    *port = (uint16_t)p;
    return HP_OK;
}

int wsg_config_split_hostport(const char *s, char *host, size_t hostcap, uint16_t *port) {
    bool br;
    return split_hostport(s, host, hostcap, port, &br) == HP_OK ? 0 : -1;
}

/* Parses the "host:port" string <v> into <text> (a copy of what was
 * written) and <addr>. Numeric addresses are always converted; names are
 * resolved only when c->resolve is set (first getaddrinfo result), else
 * they keep AF_UNSPEC. */
static void parse_addr(struct ctx *c, json_t *v, char **text, wsg_sockaddr_t *addr) {
    static const char *const what = "\"host:port\"";
    if (!json_is_string(v)) {
        bad_type(c, v, what);
        return;
    }
    const char *s = json_string_value(v);
    char host[256];
    uint16_t port = 0;
    bool br;
    switch (split_hostport(s, host, sizeof host, &port, &br)) {
    case HP_OK:
        break;
    case HP_PORT:
        bad_value(c, v, "\"host:port\" with a port from 1 to 65535");
        return;
    case HP_V6:
        bad_value(c, v, "\"host:port\" with IPv6 addresses as \"[addr]:port\"");
        return;
    case HP_BRACKET:
        bad_value(c, v, "\"host:port\" with brackets only around an IPv6 address");
        return;
    case HP_HOST:
    case HP_TOOLONG:
        bad_value(c, v, "\"host:port\" with a valid host name or IP address");
        return;
    default:
        bad_value(c, v, what);
        return;
    }

    memset(addr, 0, sizeof *addr);
    if (br) {
        /* getaddrinfo() rather than inet_pton() so that scoped addresses
         * ("[fe80::1%eth0]") work; AI_NUMERICHOST keeps it off the network. */
        struct addrinfo hints = {0}, *res = NULL;
        char ps[8];
        snprintf(ps, sizeof ps, "%u", port);
        hints.ai_family = AF_INET6;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        if (getaddrinfo(host, ps, &hints, &res) != 0 || res == NULL) {
            bad_value(c, v, "\"host:port\" with a valid IPv6 address in brackets");
            return;
        }
        memcpy(&addr->ss, res->ai_addr, res->ai_addrlen);
        addr->len = (socklen_t)res->ai_addrlen;
        freeaddrinfo(res);
    } else if (!valid_hostname(host)) {
        bad_value(c, v, "\"host:port\" with a valid host name or IP address");
        return;
    } else {
        struct sockaddr_in sin = {0};
        if (inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
            sin.sin_family = AF_INET;
            sin.sin_port = htons(port);
            memcpy(&addr->ss, &sin, sizeof sin);
            addr->len = sizeof sin;
        } else if (c->resolve) {
            struct addrinfo hints = {0}, *res = NULL;
            char ps[8];
            snprintf(ps, sizeof ps, "%u", port);
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            hints.ai_flags = AI_NUMERICSERV;
            int rc = getaddrinfo(host, ps, &hints, &res);
            if (rc != 0 || res == NULL) {
                struct sb q = {0};
                sb_quote(&q, host, QUOTE_MAX);
                errf(c, "cannot resolve %s: %s", q.p ? q.p : host,
                     rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
                free(q.p);
                return;
            }
            memcpy(&addr->ss, res->ai_addr, res->ai_addrlen);
            addr->len = (socklen_t)res->ai_addrlen;
            freeaddrinfo(res);
        } else {
            addr->ss.ss_family = AF_UNSPEC;
        }
    }
    *text = xstrdup(c, s);
}

static void req_addr(struct ctx *c, json_t *obj, const char *key, char **text,
                     wsg_sockaddr_t *addr) {
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        missing(c, key, "\"host:port\"");
        return;
    }
    size_t m = push_key(c, key);
    parse_addr(c, v, text, addr);
    pop(c, m);
}

/* Two "host:port" strings name the same endpoint if they are the same text
 * up to host case and port spelling, or resolved to the same address. */
static bool same_endpoint(const char *a, const wsg_sockaddr_t *aa, const char *b,
                          const wsg_sockaddr_t *ba) {
    if (a == NULL || b == NULL)
        return false;
    if (aa->ss.ss_family != AF_UNSPEC && aa->ss.ss_family == ba->ss.ss_family &&
        aa->len == ba->len && memcmp(&aa->ss, &ba->ss, aa->len) == 0)
        return true;
    char ha[256], hb[256];
    uint16_t pa, pb;
    if (wsg_config_split_hostport(a, ha, sizeof ha, &pa) != 0 ||
        wsg_config_split_hostport(b, hb, sizeof hb, &pb) != 0)
        return false;
    return pa == pb && strcasecmp(ha, hb) == 0;
}

/* ------------------------------------------------------------------------ */
/* Sections                                                                  */

static void parse_sni(struct ctx *c, json_t *v, wsg_sni_conf_t *s) {
    static const char *const host_what = "a host name or \"*.suffix\"";
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, k_sni);
    json_t *sn = json_object_get(v, "server_name");
    if (sn == NULL) {
        missing(c, "server_name", host_what);
    } else {
        size_t m = push_key(c, "server_name");
        bool oom = false;
        if (!json_is_string(sn))
            bad_type(c, sn, host_what);
        else if ((s->server_name = host_pattern(json_string_value(sn), &oom)) == NULL && !oom)
            bad_value(c, sn, host_what);
        c->oom |= oom;
        pop(c, m);
    }
    req_string(c, v, "cert", "a non-empty string (certificate file)", &s->cert);
    req_string(c, v, "key", "a non-empty string (private key file)", &s->key);
}

static void parse_tls(struct ctx *c, json_t *v, wsg_tls_conf_t **out) {
    if (v == NULL || json_is_null(v))
        return;
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object");
        return;
    }
    wsg_tls_conf_t *t = calloc(1, sizeof *t);
    if (t == NULL) {
        c->oom = true;
        return;
    }
    *out = t;
    set_defaults(c, k_tls, t);
    check_keys(c, v, k_tls);
    req_string(c, v, "cert", "a non-empty string (certificate file)", &t->cert);
    req_string(c, v, "key", "a non-empty string (private key file)", &t->key);

    json_t *sni = json_object_get(v, "sni");
    if (sni != NULL) {
        size_t m = push_key(c, "sni");
        if (!json_is_array(sni)) {
            bad_type(c, sni, "an array");
        } else if (json_array_size(sni) > 0) {
            t->nsni = json_array_size(sni);
            t->sni = calloc(t->nsni, sizeof *t->sni);
            if (t->sni == NULL) {
                t->nsni = 0;
                c->oom = true;
            }
            for (size_t i = 0; i < t->nsni; i++) {
                size_t mi = push_index(c, i);
                parse_sni(c, json_array_get(sni, i), &t->sni[i]);
                for (size_t j = 0; j < i && t->sni[i].server_name != NULL; j++) {
                    if (t->sni[j].server_name == NULL ||
                        strcmp(t->sni[j].server_name, t->sni[i].server_name) != 0)
                        continue;
                    size_t mk = push_key(c, "server_name");
                    errf(c, "expected a unique server name, got \"%s\" (also sni[%zu])",
                         t->sni[i].server_name, j);
                    pop(c, mk);
                    break;
                }
                pop(c, mi);
            }
        }
        pop(c, m);
    }
    read_fields(c, v, k_tls, t);
}

static void parse_listener(struct ctx *c, json_t *v, wsg_listener_conf_t *l) {
    set_defaults(c, k_listener, l);
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, k_listener);
    json_t *name = json_object_get(v, "name");
    if (name == NULL) {
        missing(c, "name", NAME_WHAT);
    } else {
        size_t m = push_key(c, "name");
        if (!json_is_string(name))
            bad_type(c, name, NAME_WHAT);
        else if (!valid_name(json_string_value(name)))
            bad_value(c, name, NAME_WHAT);
        else
            l->name = xstrdup(c, json_string_value(name));
        pop(c, m);
    }
    req_addr(c, v, "bind", &l->bind, &l->addr);
    json_t *tls = json_object_get(v, "tls");
    if (tls != NULL) {
        size_t m = push_key(c, "tls");
        parse_tls(c, tls, &l->tls);
        pop(c, m);
    }
    read_fields(c, v, k_listener, l);
}

/* The required, non-empty top-level array <key>: reports it missing or of
 * the wrong type, else pushes <key> on the path (*m to pop), allocates
 * *out with *n zeroed elements of <size> bytes and returns the array. */
static json_t *top_array(struct ctx *c, json_t *root, const char *key, const char *what,
                         size_t size, void **out, size_t *n, size_t *m) {
    json_t *v = json_object_get(root, key);
    if (v == NULL) {
        missing(c, key, what);
        return NULL;
    }
    *m = push_key(c, key);
    if (!json_is_array(v) || json_array_size(v) == 0) {
        bad_type(c, v, what);
        pop(c, *m);
        return NULL;
    }
    *n = json_array_size(v);
    *out = calloc(*n, size);
    if (*out == NULL) {
        *n = 0;
        c->oom = true;
    }
    return v;
}

static void parse_listeners(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    size_t m;
    void *arr = NULL;
    json_t *v = top_array(c, root, "listeners", "a non-empty array of listeners",
                          sizeof *cfg->listeners, &arr, &cfg->nlisteners, &m);
    if (v == NULL)
        return;
    cfg->listeners = arr;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        wsg_listener_conf_t *l = &cfg->listeners[i];
        size_t mi = push_index(c, i);
        parse_listener(c, json_array_get(v, i), l);
        for (size_t j = 0; j < i && l->name != NULL; j++) {
            if (cfg->listeners[j].name != NULL && strcmp(cfg->listeners[j].name, l->name) == 0) {
                size_t mk = push_key(c, "name");
                errf(c, "expected a unique listener name, got \"%s\" (also listeners[%zu])",
                     l->name, j);
                pop(c, mk);
                break;
            }
        }
        for (size_t j = 0; j < i && l->bind != NULL; j++) {
            const wsg_listener_conf_t *o = &cfg->listeners[j];
            if (same_endpoint(o->bind, &o->addr, l->bind, &l->addr)) {
                size_t mk = push_key(c, "bind");
                errf(c,
                     "expected an address no other listener binds, got \"%s\" "
                     "(listeners[%zu] binds \"%s\")",
                     l->bind, j, o->bind);
                pop(c, mk);
                break;
            }
        }
        pop(c, mi);
    }
    pop(c, m);
}

static void parse_admin(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    static const char *const token_what = "null or a non-empty string of printable characters "
                                          "without spaces";
    json_t *v = json_object_get(root, "admin");
    if (v == NULL || json_is_null(v))
        return;
    size_t m = push_key(c, "admin");
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object with \"bind\"");
        pop(c, m);
        return;
    }
    cfg->admin.enabled = true;
    check_keys(c, v, k_admin);
    req_addr(c, v, "bind", &cfg->admin.bind, &cfg->admin.addr);
    json_t *tok = json_object_get(v, "token");
    if (tok != NULL && !json_is_null(tok)) {
        size_t mk = push_key(c, "token");
        /* The token travels in "Authorization: Bearer TOKEN"; a space or a
         * control character could never be matched (RFC 6750 §2.1). */
        bool ok = json_is_string(tok) && json_string_length(tok) > 0;
        for (const char *p = ok ? json_string_value(tok) : ""; ok && *p; p++)
            ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f;
        if (!json_is_string(tok))
            bad_type(c, tok, token_what);
        else if (!ok)
            bad_value(c, tok, token_what);
        else
            cfg->admin.token = xstrdup(c, json_string_value(tok));
        pop(c, mk);
    }
    for (size_t i = 0; i < cfg->nlisteners && cfg->admin.bind != NULL; i++) {
        const wsg_listener_conf_t *l = &cfg->listeners[i];
        if (same_endpoint(l->bind, &l->addr, cfg->admin.bind, &cfg->admin.addr)) {
            size_t mk = push_key(c, "bind");
            errf(c,
                 "expected an address no listener binds, got \"%s\" (listeners[%zu] binds "
                 "\"%s\")",
                 cfg->admin.bind, i, l->bind);
            pop(c, mk);
            break;
        }
    }
    pop(c, m);
}

/* Returns false when host or path_prefix was given but invalid, so that the
 * shadowing check does not mistake the route for a catch-all. */
/* Optional key <key> of <v>: a request path starting with "/" without
 * spaces, control characters or '#' (and without '?' unless <query>, for
 * a prefix compared against paths only). Replaces *dst when valid. */
static void get_path(struct ctx *c, json_t *v, const char *key, bool query, char **dst) {
    json_t *p = json_object_get(v, key);
    if (p == NULL)
        return;
    size_t m = push_key(c, key);
    if (!json_is_string(p)) {
        bad_type(c, p, "a path starting with \"/\"");
    } else {
        const char *s = json_string_value(p);
        bool clean = true;
        for (const char *q = s; *q && clean; q++)
            clean = (unsigned char)*q > 0x20 && *q != 0x7f && *q != '#' && (query || *q != '?');
        if (s[0] != '/') {
            bad_value(c, p, "a path starting with \"/\"");
        } else if (!clean) {
            bad_value(c, p,
                      query ? "a path without spaces or '#'" : "a path without spaces, '?' or '#'");
        } else {
            char *d = xstrdup(c, s);
            if (d != NULL) {
                free(*dst);
                *dst = d;
            }
        }
    }
    pop(c, m);
}

/* routes[].origins: each normalised now, so that a request's Origin is
 * matched with a byte compare; what cannot be an origin is an error here,
 * not a silent never-match. */
static void parse_origins(struct ctx *c, json_t *v, wsg_route_conf_t *r) {
    if (v == NULL || json_is_null(v))
        return;
    size_t m = push_key(c, "origins");
    if (!json_is_array(v)) {
        bad_type(c, v, "an array of origins such as \"https://chat.example.com\"");
        pop(c, m);
        return;
    }
    size_t n = json_array_size(v);
    r->origins = calloc(n ? n : 1, sizeof(*r->origins));
    if (r->origins == NULL) {
        c->oom = true;
        pop(c, m);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        size_t mi = push_index(c, i);
        char norm[WSG_ORIGIN_MAX + 1];
        size_t len;
        const char *why = NULL;
        if (!json_is_string(e)) {
            bad_type(c, e, "an origin such as \"https://chat.example.com\"");
        } else if (wsg_origin_normalize(json_string_value(e), json_string_length(e), norm,
                                        sizeof(norm), &len, &why) != WSG_ORIGIN_OK) {
            errf(c, "%s, got \"%s\"", why ? why : "not an origin", json_string_value(e));
        } else if ((r->origins[r->norigins] = xstrdup(c, norm)) != NULL) {
            r->norigins++;
        }
        pop(c, mi);
    }
    pop(c, m);
}

static bool parse_route(struct ctx *c, json_t *v, wsg_route_conf_t *r) {
    static const char *const host_what = "null, a host name or \"*.suffix\"";
    size_t before = c->nerrors;
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return false;
    }
    check_keys(c, v, k_route);
    json_t *h = json_object_get(v, "host");
    if (h != NULL && !json_is_null(h)) {
        size_t m = push_key(c, "host");
        bool oom = false;
        if (!json_is_string(h))
            bad_type(c, h, host_what);
        else if ((r->host = host_pattern(json_string_value(h), &oom)) == NULL && !oom)
            bad_value(c, h, host_what);
        c->oom |= oom;
        pop(c, m);
    }
    get_path(c, v, "path_prefix", false, &r->path_prefix);
    read_fields(c, v, k_route, r); /* http, websocket, allow_no_origin */
    parse_origins(c, json_object_get(v, "origins"), r);
    opt_string(c, v, "auth", "null or the name of a verifier under \"auth\"", &r->auth);
    if (!r->http && !r->websocket)
        errf(c, "serves nothing: \"http\" and \"websocket\" are both false");
    bool ok = c->nerrors == before;
    json_t *pool = json_object_get(v, "pool");
    if (pool == NULL) {
        missing(c, "pool", "the name of a pool");
    } else {
        size_t m = push_key(c, "pool");
        if (!json_is_string(pool))
            bad_type(c, pool, "the name of a pool");
        else
            r->pool = xstrdup(c, json_string_value(pool));
        pop(c, m);
    }
    return ok;
}

static void parse_routes(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    size_t m;
    void *arr = NULL;
    json_t *v = top_array(c, root, "routes", "a non-empty array of routes", sizeof *cfg->routes,
                          &arr, &cfg->nroutes, &m);
    if (v == NULL)
        return;
    cfg->routes = arr;
    c->route_bad = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof *c->route_bad);
    if (c->route_bad == NULL)
        c->oom = true;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        size_t mi = push_index(c, i);
        set_defaults(c, k_route, &cfg->routes[i]);
        bool ok = parse_route(c, json_array_get(v, i), &cfg->routes[i]);
        if (c->route_bad != NULL)
            c->route_bad[i] = !ok;
        pop(c, mi);
    }
    pop(c, m);
}

/* Does host pattern <a> (NULL = any) match every host that <b> matches? */
static bool host_covers(const char *a, const char *b) {
    if (a == NULL)
        return true;
    if (b == NULL)
        return false;
    if (a[0] != '*')
        return b[0] != '*' && strcmp(a, b) == 0;
    const char *asuf = a + 1; /* ".suffix" */
    size_t al = strlen(asuf);
    const char *bs = b[0] == '*' ? b + 1 : b;
    size_t bl = strlen(bs);
    if (bl < al || strcmp(bs + bl - al, asuf) != 0)
        return false;
    /* "*.s" matches "x.s" but not "s" itself; it covers "*.s" and "*.y.s". */
    return b[0] == '*' || bl > al;
}

/* Checks that need the sorted pools: each route's pool exists, and no route
 * is shadowed by an earlier one (first match wins, so it could never be
 * used: always an editing mistake). */
static void check_routes(struct ctx *c, wsg_config_t *cfg, bool have_pools) {
    size_t m = push_key(c, "routes");
    const char **names = calloc(cfg->npools ? cfg->npools : 1, sizeof *names);
    if (names == NULL)
        c->oom = true;
    for (size_t i = 0; names != NULL && i < cfg->npools; i++)
        names[i] = cfg->pools[i].name;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        wsg_route_conf_t *r = &cfg->routes[i];
        size_t mi = push_index(c, i);
        const wsg_pool_conf_t *p = r->pool ? wsg_config_pool(cfg, r->pool) : NULL;
        if (p != NULL) {
            r->pool_index = (size_t)(p - cfg->pools);
        } else if (r->pool != NULL && have_pools) {
            size_t mk = push_key(c, "pool");
            const char *hint = names ? near_miss(r->pool, names, cfg->npools) : NULL;
            struct sb q = {0};
            sb_quote(&q, r->pool, QUOTE_MAX);
            if (hint != NULL)
                errf(c, "expected the name of a pool, got %s, did you mean \"%s\"?",
                     q.p ? q.p : "?", hint);
            else
                errf(c, "expected the name of a pool, got %s", q.p ? q.p : "?");
            free(q.p);
            pop(c, mk);
        }
        for (size_t j = 0; j < i && c->route_bad != NULL && !c->route_bad[i]; j++) {
            const wsg_route_conf_t *e = &cfg->routes[j];
            if (c->route_bad[j] || e->path_prefix == NULL || r->path_prefix == NULL)
                continue;
            if (host_covers(e->host, r->host) &&
                strncmp(r->path_prefix, e->path_prefix, strlen(e->path_prefix)) == 0) {
                errf(c,
                     "never used: routes[%zu] comes first and matches every request this "
                     "route matches",
                     j);
                break;
            }
        }
        pop(c, mi);
    }
    free(names);
    pop(c, m);
}

static bool valid_token(const char *s) {
    /* RFC 9110 §5.6.2 tchar; cookie names are tokens too (RFC 6265 §4.1.1). */
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!is_alnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return false;
    return true;
}

static bool valid_query_name(const char *s) {
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f || strchr("&=#?", *s) != NULL)
            return false;
    return true;
}

/* A JWT claim name as jwt:CLAIM and claims_to_headers name it. */
static bool valid_claim_name(const char *s) {
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* balance.cookie.secret: the text itself, or "env:NAME", read now, so that
 * -t refuses a missing variable as it refuses a short secret. */
static void cookie_secret(struct ctx *c, json_t *v, wsg_cookie_conf_t *ck) {
    static const char *const what =
        "a string of at least 16 bytes, or \"env:NAME\" naming such an environment variable";
    size_t m = push_key(c, "secret");
    if (!json_is_string(v)) {
        bad_type(c, v, what);
        pop(c, m);
        return;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strncmp(s, "env:", 4) == 0) {
        const char *e = getenv(s + 4);
        if (s[4] == '\0' || e == NULL) {
            errf(c, "expected %s, got \"%s\": the environment variable is not set", what, s);
        } else if (strlen(e) < WSG_STICKY_MIN_SECRET) {
            errf(c, "expected %s, got \"%s\": it holds %zu bytes", what, s, strlen(e));
        } else {
            s = e;
            n = strlen(e);
        }
        if (s != e) {
            pop(c, m);
            return;
        }
    } else if (n < WSG_STICKY_MIN_SECRET) {
        /* The secret itself is never echoed. */
        errf(c, "expected %s, got a string of %zu bytes", what, n);
        pop(c, m);
        return;
    }
    ck->secret = malloc(n + 1);
    if (ck->secret == NULL) {
        c->oom = true;
    } else {
        memcpy(ck->secret, s, n + 1);
        ck->secret_len = n;
    }
    pop(c, m);
}

static void parse_cookie(struct ctx *c, json_t *v, wsg_cookie_conf_t *ck) {
    if (v == NULL || json_is_null(v))
        return;
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object");
        return;
    }
    ck->enabled = true;
    set_defaults(c, k_cookie, ck);
    check_keys(c, v, k_cookie);
    json_t *name = json_object_get(v, "name");
    if (name != NULL) {
        size_t m = push_key(c, "name");
        if (!json_is_string(name) || !valid_token(json_string_value(name)) ||
            json_string_length(name) > 64) {
            bad_value(c, name, "a cookie name of at most 64 letters, digits and !#$%&'*+-.^_`|~");
        } else {
            char *d = xstrdup(c, json_string_value(name));
            if (d != NULL) {
                free(ck->name);
                ck->name = d;
            }
        }
        pop(c, m);
    }
    json_t *sec = json_object_get(v, "secret");
    if (sec == NULL)
        missing(c, "secret", "a string of at least 16 bytes, or \"env:NAME\"");
    else
        cookie_secret(c, sec, ck);
    read_fields(c, v, k_cookie, ck);
    json_t *path = json_object_get(v, "path");
    if (path != NULL && json_is_string(path) &&
        (strchr(json_string_value(path), ';') != NULL || json_string_length(path) > 512)) {
        size_t m = push_key(c, "path");
        bad_value(c, path, "a path of at most 512 bytes without ';'");
        pop(c, m);
    } else {
        get_path(c, v, "path", false, &ck->path);
    }
}

static void parse_balance(struct ctx *c, json_t *v, wsg_balance_conf_t *b) {
    static const char *const key_what =
        "\"ip\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"jwt:CLAIM\"";
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, k_balance);
    json_t *k = json_object_get(v, "key");
    if (k != NULL) {
        size_t m = push_key(c, "key");
        if (!json_is_string(k)) {
            bad_type(c, k, key_what);
        } else {
            static const struct {
                const char *prefix;
                wsg_key_kind_t kind;
                bool (*valid)(const char *);
                const char *what;
            } kinds[] = {
                {"header:", WSG_KEY_HEADER, valid_token, "\"header:NAME\" with NAME a header name"},
                {"cookie:", WSG_KEY_COOKIE, valid_token, "\"cookie:NAME\" with NAME a cookie name"},
                {"query:", WSG_KEY_QUERY, valid_query_name,
                 "\"query:NAME\" with NAME a query parameter name"},
                {"jwt:", WSG_KEY_JWT, valid_claim_name,
                 "\"jwt:CLAIM\" with CLAIM a claim name (printable ASCII, no spaces)"},
            };
            const char *s = json_string_value(k);
            bool done = false;
            if (strcmp(s, "ip") == 0) {
                b->key = WSG_KEY_IP;
                done = true;
            }
            for (size_t i = 0; !done && i < sizeof kinds / sizeof kinds[0]; i++) {
                size_t pl = strlen(kinds[i].prefix);
                if (strncmp(s, kinds[i].prefix, pl) != 0)
                    continue;
                done = true;
                if (!kinds[i].valid(s + pl)) {
                    bad_value(c, k, kinds[i].what);
                } else {
                    b->key = kinds[i].kind;
                    b->key_name = xstrdup(c, s + pl);
                }
            }
            if (!done)
                bad_value(c, k, key_what);
        }
        pop(c, m);
    }
    read_fields(c, v, k_balance, b);
    json_t *ck = json_object_get(v, "cookie");
    if (ck != NULL) {
        size_t m = push_key(c, "cookie");
        parse_cookie(c, ck, &b->cookie);
        pop(c, m);
    }
}

static void parse_health(struct ctx *c, json_t *v, wsg_health_conf_t *h) {
    if (v == NULL || json_is_null(v))
        return;
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object");
        return;
    }
    check_keys(c, v, k_health);
    if (json_object_get(v, "type") == NULL) {
        struct sb what = {0};
        enum_what(&what, key_get(k_health, "type"));
        missing(c, "type", what.p != NULL ? what.p : "?");
        c->oom |= what.oom;
        free(what.p);
    }
    /* In the table's order, so that messages come in the file's usual
     * order: the type, the path, then the timings. */
    const struct key *type = key_get(k_health, "type");
    read_fields_n(c, v, type, 1, h);
    get_path(c, v, "path", true, &h->path);
    read_fields_n(c, v, type + 1, SIZE_MAX, h);
}

static void parse_pool_tls(struct ctx *c, json_t *v, wsg_pool_tls_conf_t *t) {
    if (v == NULL || json_is_null(v))
        return;
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object");
        return;
    }
    t->enabled = true;
    check_keys(c, v, k_pool_tls);
    opt_string(c, v, "ca", "null or a non-empty string (CA file)", &t->ca);
    read_fields(c, v, k_pool_tls, t);
    json_t *sn = json_object_get(v, "server_name");
    if (sn != NULL && !json_is_null(sn)) {
        static const char *const what = "null or a host name";
        size_t m = push_key(c, "server_name");
        if (!json_is_string(sn))
            bad_type(c, sn, what);
        else if (!valid_hostname(json_string_value(sn)))
            bad_value(c, sn, what);
        else
            t->server_name = xstrdup(c, json_string_value(sn));
        pop(c, m);
    }
}

/* Read into the pool itself (its rebalance fields), so <p> is the pool. */
static void parse_rebalance(struct ctx *c, json_t *v, wsg_pool_conf_t *p) {
    if (v == NULL || json_is_null(v))
        return;
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object");
        return;
    }
    check_keys(c, v, k_rebalance);
    if (json_object_get(v, "max_per_s") == NULL)
        missing(c, "max_per_s", "an integer from 1 to 100000");
    read_fields(c, v, k_rebalance, p);
}

static void parse_backend(struct ctx *c, json_t *v, wsg_backend_conf_t *b) {
    set_defaults(c, k_backend, b);
    if (!json_is_object(v)) {
        bad_type(c, v, "an object with \"address\"");
        return;
    }
    check_keys(c, v, k_backend);
    /* A name that DNS discovery looks up is not resolved here: its
     * addresses come from the server's lookups (dns.servers), and one that
     * does not resolve now is not an error of the file (SPEC §12). */
    bool want = json_is_true(json_object_get(v, "resolve"));
    bool resolve = c->resolve;
    c->resolve = resolve && !want;
    req_addr(c, v, "address", &b->address, &b->addr);
    c->resolve = resolve;
    read_fields(c, v, k_backend, b);
    if (b->resolve && b->address != NULL && b->addr.ss.ss_family != AF_UNSPEC) {
        size_t m = push_key(c, "address");
        errf(c, "expected a host name with \"resolve\": true, got the IP address \"%s\"",
             b->address);
        pop(c, m);
    }
}

/* Moves the entries with "resolve": true of <p>'s backends to its
 * resolves, keeping the order of each. */
static void split_resolves(struct ctx *c, wsg_pool_conf_t *p) {
    size_t n = 0;
    for (size_t i = 0; i < p->nbackends; i++)
        n += p->backends[i].resolve;
    if (n == 0)
        return;
    p->resolves = calloc(n, sizeof(*p->resolves));
    if (p->resolves == NULL) {
        c->oom = true;
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < p->nbackends; i++) {
        if (p->backends[i].resolve)
            p->resolves[p->nresolves++] = p->backends[i];
        else
            p->backends[kept++] = p->backends[i];
    }
    p->nbackends = kept;
}

static void parse_pool(struct ctx *c, json_t *v, wsg_pool_conf_t *p) {
    /* The sub-sections hold their defaults even when absent: health keeps
     * its timings for passive checks, and the balance key is "ip". */
    set_defaults(c, k_pool, p);
    set_defaults(c, k_balance, &p->balance);
    set_defaults(c, k_health, &p->health);
    set_defaults(c, k_pool_tls, &p->tls);
    p->balance.key = WSG_KEY_IP;
    p->health.type = WSG_HEALTH_NONE;
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, k_pool);

    static const char *const bwhat = "a non-empty array of backends";
    json_t *bs = json_object_get(v, "backends");
    if (bs == NULL) {
        missing(c, "backends", bwhat);
    } else {
        size_t m = push_key(c, "backends");
        if (!json_is_array(bs) || json_array_size(bs) == 0) {
            bad_type(c, bs, bwhat);
        } else {
            p->nbackends = json_array_size(bs);
            p->backends = calloc(p->nbackends, sizeof *p->backends);
            if (p->backends == NULL) {
                p->nbackends = 0;
                c->oom = true;
            }
            for (size_t i = 0; i < p->nbackends; i++) {
                wsg_backend_conf_t *b = &p->backends[i];
                size_t mi = push_index(c, i);
                parse_backend(c, json_array_get(bs, i), b);
                /* The address as written is the backend's identity on the
                 * hash ring and in the admin API, so it must be unique. */
                for (size_t j = 0; j < i && b->address != NULL; j++) {
                    wsg_sockaddr_t none = {0};
                    if (same_endpoint(p->backends[j].address, &none, b->address, &none)) {
                        size_t mk = push_key(c, "address");
                        errf(c,
                             "expected a unique backend address, got \"%s\" (also "
                             "backends[%zu])",
                             b->address, j);
                        pop(c, mk);
                        break;
                    }
                }
                pop(c, mi);
            }
            split_resolves(c, p);
        }
        pop(c, m);
    }

    json_t *bal = json_object_get(v, "balance");
    if (bal != NULL) {
        size_t m = push_key(c, "balance");
        parse_balance(c, bal, &p->balance);
        pop(c, m);
    }
    json_t *h = json_object_get(v, "health");
    if (h != NULL) {
        size_t m = push_key(c, "health");
        parse_health(c, h, &p->health);
        pop(c, m);
    }
    read_fields(c, v, k_pool, p);
    json_t *rb = json_object_get(v, "rebalance");
    if (rb != NULL) {
        size_t m = push_key(c, "rebalance");
        parse_rebalance(c, rb, p);
        pop(c, m);
    }
    json_t *t = json_object_get(v, "tls");
    if (t != NULL) {
        size_t m = push_key(c, "tls");
        parse_pool_tls(c, t, &p->tls);
        pop(c, m);
    }
}

static int pool_cmp(const void *a, const void *b) {
    const wsg_pool_conf_t *pa = a, *pb = b;
    if (pa->name == NULL || pb->name == NULL)
        return (pa->name == NULL) - (pb->name == NULL);
    return strcmp(pa->name, pb->name);
}

/* Returns whether "pools" was an object, so that route checks know whether
 * a missing pool is worth reporting. */
static bool parse_pools(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    static const char *const what = "a non-empty object of pools";
    json_t *v = json_object_get(root, "pools");
    if (v == NULL) {
        missing(c, "pools", what);
        return false;
    }
    size_t m = push_key(c, "pools");
    if (!json_is_object(v) || json_object_size(v) == 0) {
        bad_type(c, v, what);
        pop(c, m);
        return false;
    }
    cfg->npools = json_object_size(v);
    cfg->pools = calloc(cfg->npools, sizeof *cfg->pools);
    if (cfg->pools == NULL) {
        cfg->npools = 0;
        c->oom = true;
    }
    size_t i = 0;
    const char *name;
    json_t *pv;
    json_object_foreach(v, name, pv) {
        if (i >= cfg->npools)
            break;
        wsg_pool_conf_t *p = &cfg->pools[i++];
        size_t mp = push_key(c, name);
        if (!valid_name(name)) {
            struct sb q = {0};
            sb_quote(&q, name, QUOTE_MAX);
            errf(c, "expected a pool name of letters, digits, '_', '-' and '.', got %s",
                 q.p ? q.p : "?");
            free(q.p);
        }
        /* Kept even when invalid so that routes naming it are not reported
         * a second time. */
        p->name = xstrdup(c, name);
        parse_pool(c, pv, p);
        pop(c, mp);
    }
    if (cfg->npools > 1)
        qsort(cfg->pools, cfg->npools, sizeof *cfg->pools, pool_cmp);
    pop(c, m);
    return true;
}

/* ------------------------------------------------------------------------ */
/* auth: JWT verifiers (SPEC §11)                                            */

/* One entry of "from". The names follow what jwt_from.c can find: a cookie
 * name is a token, a query key has no space, '&', '=', '#', '?', ';', ','. */
static void parse_from_entry(struct ctx *c, json_t *e, wsg_auth_from_t *f) {
    static const char *const what =
        "\"header\", \"subprotocol\", \"cookie:NAME\" or \"query:NAME\"";
    if (!json_is_string(e)) {
        bad_type(c, e, what);
        return;
    }
    const char *s = json_string_value(e);
    if (strcmp(s, "header") == 0) {
        f->kind = WSG_FROM_HEADER;
    } else if (strcmp(s, "subprotocol") == 0) {
        f->kind = WSG_FROM_SUBPROTOCOL;
    } else if (strncmp(s, "cookie:", 7) == 0) {
        if (!valid_token(s + 7))
            bad_value(c, e, "\"cookie:NAME\" with NAME a cookie name");
        else if ((f->name = xstrdup(c, s + 7)) != NULL)
            f->kind = WSG_FROM_COOKIE;
    } else if (strncmp(s, "query:", 6) == 0) {
        if (!valid_query_name(s + 6) || strpbrk(s + 6, ";,") != NULL)
            bad_value(c, e, "\"query:NAME\" with NAME a query parameter name");
        else if ((f->name = xstrdup(c, s + 6)) != NULL)
            f->kind = WSG_FROM_QUERY;
    } else {
        bad_value(c, e, what);
    }
}

static void parse_from(struct ctx *c, json_t *v, wsg_auth_conf_t *a) {
    static const char *const what = "a non-empty array of token sources";
    size_t n = v == NULL ? 2 : json_array_size(v);
    a->from = calloc(n ? n : 1, sizeof *a->from);
    if (a->from == NULL) {
        c->oom = true;
        return;
    }
    if (v == NULL) { /* the default: the two that are neither ambient nor in URLs */
        a->from[0].kind = WSG_FROM_HEADER;
        a->from[1].kind = WSG_FROM_SUBPROTOCOL;
        a->nfrom = 2;
        return;
    }
    size_t m = push_key(c, "from");
    if (!json_is_array(v) || n == 0) {
        bad_type(c, v, what);
        pop(c, m);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t mi = push_index(c, i);
        parse_from_entry(c, json_array_get(v, i), &a->from[a->nfrom]);
        if (a->from[a->nfrom].kind != 0)
            a->nfrom++;
        pop(c, mi);
    }
    pop(c, m);
}

static void parse_claims(struct ctx *c, json_t *v, wsg_auth_conf_t *a) {
    if (v == NULL)
        return;
    size_t m = push_key(c, "claims_to_headers");
    if (!json_is_object(v)) {
        bad_type(c, v, "an object of claim -> header name");
        pop(c, m);
        return;
    }
    a->claims = calloc(json_object_size(v) ? json_object_size(v) : 1, sizeof *a->claims);
    if (a->claims == NULL) {
        c->oom = true;
        pop(c, m);
        return;
    }
    const char *claim;
    json_t *h;
    json_object_foreach(v, claim, h) {
        size_t mk = push_key(c, claim);
        if (!valid_claim_name(claim)) {
            errf(c, "expected a claim name of printable ASCII without spaces");
        } else if (!json_is_string(h)) {
            bad_type(c, h, "a header name");
        } else if (!valid_token(json_string_value(h))) {
            bad_value(c, h, "a header name");
        } else {
            wsg_claim_header_t *ch = &a->claims[a->nclaims];
            ch->claim = xstrdup(c, claim);
            ch->header = xstrdup(c, json_string_value(h));
            a->nclaims++;
        }
        pop(c, mk);
    }
    pop(c, m);
}

static void parse_auth(struct ctx *c, json_t *v, wsg_auth_conf_t *a) {
    set_defaults(c, k_auth, a);
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, k_auth);
    req_string(c, v, "keys", "the path of a JWKS, PEM or secret file", &a->keys);
    opt_string(c, v, "issuer", "null or the issuer (a non-empty string)", &a->issuer);
    opt_string(c, v, "audience", "null or the audience (a non-empty string)", &a->audience);
    read_fields(c, v, k_auth, a);
    parse_from(c, json_object_get(v, "from"), a);
    parse_claims(c, json_object_get(v, "claims_to_headers"), a);
}

static int auth_cmp(const void *a, const void *b) {
    const wsg_auth_conf_t *pa = a, *pb = b;
    if (pa->name == NULL || pb->name == NULL)
        return (pa->name == NULL) - (pb->name == NULL);
    return strcmp(pa->name, pb->name);
}

static void parse_auths(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    json_t *v = json_object_get(root, "auth");
    if (v == NULL)
        return;
    size_t m = push_key(c, "auth");
    if (!json_is_object(v)) {
        bad_type(c, v, "an object of verifiers by name");
        pop(c, m);
        return;
    }
    cfg->auths = calloc(json_object_size(v) ? json_object_size(v) : 1, sizeof *cfg->auths);
    if (cfg->auths == NULL) {
        c->oom = true;
        pop(c, m);
        return;
    }
    const char *name;
    json_t *av;
    json_object_foreach(v, name, av) {
        wsg_auth_conf_t *a = &cfg->auths[cfg->nauths++];
        size_t ma = push_key(c, name);
        if (!valid_name(name))
            errf(c, "expected a verifier name of letters, digits, '_', '-' and '.'");
        a->name = xstrdup(c, name);
        parse_auth(c, av, a);
        pop(c, ma);
    }
    if (cfg->nauths > 1)
        qsort(cfg->auths, cfg->nauths, sizeof *cfg->auths, auth_cmp);
    pop(c, m);
}

/* Each routes[].auth names a verifier under "auth". */
static void check_route_auth(struct ctx *c, wsg_config_t *cfg) {
    for (size_t i = 0; i < cfg->nroutes; i++) {
        wsg_route_conf_t *r = &cfg->routes[i];
        if (r->auth == NULL)
            continue;
        const wsg_auth_conf_t *a = wsg_config_auth(cfg, r->auth);
        if (a != NULL) {
            r->auth_index = (size_t)(a - cfg->auths);
            continue;
        }
        size_t m = push_key(c, "routes"), mi = push_index(c, i), mk = push_key(c, "auth");
        struct sb q = {0};
        sb_quote(&q, r->auth, QUOTE_MAX);
        errf(c, "expected the name of a verifier under \"auth\", got %s", q.p ? q.p : "?");
        free(q.p);
        pop(c, mk);
        pop(c, mi);
        pop(c, m);
    }
}

/* The optional top-level object <key>, whose keys are all scalars the
 * table describes: checked and read into <cfg>. */
static void section(struct ctx *c, json_t *root, const char *key, wsg_config_t *cfg) {
    json_t *v = json_object_get(root, key);
    if (v == NULL)
        return;
    const struct key *k = key_get(k_root, key);
    size_t m = push_key(c, key);
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
    } else {
        check_keys(c, v, k->sub);
        read_fields(c, v, k->sub, cfg);
    }
    pop(c, m);
}

/* dns.servers: addresses, since a name would itself need a resolver. */
static void parse_dns_servers(struct ctx *c, json_t *v, wsg_config_t *cfg) {
    static const char *const what = "a non-empty array of \"ip:port\"";
    if (v == NULL) {
        missing(c, "servers", what);
        return;
    }
    size_t m = push_key(c, "servers");
    if (!json_is_array(v) || json_array_size(v) == 0) {
        bad_type(c, v, what);
        pop(c, m);
        return;
    }
    size_t n = json_array_size(v);
    if ((cfg->dns.servers = calloc(n, sizeof(*cfg->dns.servers))) == NULL) {
        c->oom = true;
        pop(c, m);
        return;
    }
    bool resolve = c->resolve;
    c->resolve = false;
    for (size_t i = 0; i < n; i++) {
        size_t mi = push_index(c, i);
        char *text = NULL;
        wsg_sockaddr_t addr;
        parse_addr(c, json_array_get(v, i), &text, &addr);
        if (text != NULL && addr.ss.ss_family == AF_UNSPEC) {
            bad_value(c, json_array_get(v, i), "\"ip:port\" with an IP address, not a name");
            free(text);
        } else if (text != NULL) {
            cfg->dns.servers[cfg->dns.nservers++] = text;
        }
        pop(c, mi);
    }
    c->resolve = resolve;
    pop(c, m);
}

static void parse_dns(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    json_t *v = json_object_get(root, "dns");
    if (v == NULL || json_is_null(v))
        return;
    size_t m = push_key(c, "dns");
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object with \"servers\"");
    } else {
        check_keys(c, v, k_dns);
        parse_dns_servers(c, json_object_get(v, "servers"), cfg);
    }
    pop(c, m);
}

static void parse_root(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    check_keys(c, root, k_root);
    read_fields(c, root, k_root, cfg);
    json_t *schema = json_object_get(root, "$schema");
    if (schema != NULL && !json_is_string(schema)) {
        size_t m = push_key(c, "$schema");
        bad_type(c, schema, "a string (the URI of a JSON Schema)");
        pop(c, m);
    }

    unsigned w = cfg->workers_configured;
    if (w == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        w = n < 1 ? 1 : n > 1024 ? 1024 : (unsigned)n;
    }
    cfg->workers = w;

    parse_listeners(c, root, cfg);
    parse_admin(c, root, cfg);
    parse_routes(c, root, cfg);
    bool have_pools = parse_pools(c, root, cfg);
    check_routes(c, cfg, have_pools);
    parse_auths(c, root, cfg);
    check_route_auth(c, cfg);

    section(c, root, "timeouts", cfg);
    section(c, root, "heartbeat", cfg);
    section(c, root, "limits", cfg);
    section(c, root, "log", cfg);
    parse_dns(c, root, cfg);
}

/* ------------------------------------------------------------------------ */
/* JSON Schema (draft 2020-12), from the key table                          */

/* Patterns of the string formats, in the subset of regular expressions
 * that ECMA-262 and every schema validator share. They check the shape
 * only; the parser's validators above are stricter where a pattern would
 * be unreadable (IPv4 octets, label lengths). */
static const char *fmt_pattern(enum kfmt f) {
    switch (f) {
    case KF_ADDR:
        return "^(\\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$";
    case KF_NAME:
        return "^[A-Za-z0-9_.-]+$";
    case KF_HOST:
        return "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$";
    case KF_HOSTPAT:
        return "^(\\*\\.)?[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$";
    case KF_ORIGIN:
        return "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\\u0000-\\u0020\\u007f]+$";
    case KF_PATH:
        return "^/[^\\u0000-\\u0020\\u007f#]*$";
    case KF_PREFIX:
        return "^/[^\\u0000-\\u0020\\u007f#?]*$";
    case KF_TOKEN:
        return "^[!-~]+$";
    case KF_COOKIE:
        return "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
    case KF_SECRET:
        return "^(env:.+|.{16,})$";
    case KF_CPATH:
        return "^/[^\\u0000-\\u0020\\u007f;]*$";
    case KF_STICKY:
        return "^(ip|(header|cookie):[!#$%&'*+.^_`|~0-9A-Za-z-]+|query:[^\\u0000-\\u0020\\u007f&=#?"
               "]+|jwt:[!-~]+)$";
    case KF_HEADER:
        return "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
    case KF_FROM:
        return "^(header|subprotocol|cookie:[!#$%&'*+.^_`|~0-9A-Za-z-]+|query:[^\\u0000-\\u0020"
               "\\u007f&=#?;,]+)$";
    default:
        return NULL;
    }
}

/* Sets "type" to <t>, or to [<t>, "null"] when null is accepted. */
static int set_type(json_t *o, const char *t, bool nullable) {
    if (!nullable)
        return json_object_set_new(o, "type", json_string(t));
    json_t *a = json_array();
    if (a == NULL || json_array_append_new(a, json_string(t)) != 0 ||
        json_array_append_new(a, json_string("null")) != 0) {
        json_decref(a);
        return -1;
    }
    return json_object_set_new(o, "type", a);
}

/* A JSON value written as JSON text in the table. */
static json_t *json_text(const char *s) {
    json_error_t e;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &e);
    assert(v != NULL);
    return v;
}

static json_t *key_schema(const struct key *k);

/* "properties", "required" and "additionalProperties": false. */
static int object_schema(json_t *o, const struct key *keys) {
    json_t *props = json_object(), *req = json_array();
    int rc = props == NULL || req == NULL ? -1 : 0;
    for (const struct key *k = keys; rc == 0 && k->name != NULL; k++) {
        if (k->type == KT_LATER)
            continue;
        json_t *ks = key_schema(k);
        rc = ks == NULL ? -1 : json_object_set_new(props, k->name, ks);
        if (rc == 0 && (k->flags & KR_REQUIRED))
            rc = json_array_append_new(req, json_string(k->name));
    }
    if (rc == 0)
        rc = json_object_set_new(o, "properties", props);
    else
        json_decref(props);
    if (rc == 0 && json_array_size(req) > 0)
        rc = json_object_set_new(o, "required", req);
    else
        json_decref(req);
    if (rc == 0)
        rc = json_object_set_new(o, "additionalProperties", json_false());
    return rc;
}

static json_t *key_schema(const struct key *k) {
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    bool nullable = (k->flags & KR_NULL) != 0;
    int rc = 0;
    if (k->type == KT_UINT && (k->unit != NULL || k->zero != NULL)) {
        /* "Event-loop threads (0 = one per CPU)." as in the messages. */
        struct sb d = {0};
        size_t n = strlen(k->desc);
        sb_addn(&d, k->desc, n > 0 && k->desc[n - 1] == '.' ? n - 1 : n);
        sb_printf(&d, " (%s%s%s%s).", k->unit ? k->unit : "", k->unit && k->zero ? ", " : "",
                  k->zero ? "0 = " : "", k->zero ? k->zero : "");
        rc = d.oom ? -1 : json_object_set_new(o, "description", json_string(d.p));
        free(d.p);
    } else if (k->desc != NULL) {
        rc = json_object_set_new(o, "description", json_string(k->desc));
    }
    switch (k->type) {
    case KT_OBJECT:
        rc = rc ? rc : set_type(o, "object", nullable);
        rc = rc ? rc : object_schema(o, k->sub);
        break;
    case KT_ARRAY:
        rc = rc ? rc : set_type(o, "array", nullable);
        if (rc == 0 && (k->flags & KR_NONEMPTY))
            rc = json_object_set_new(o, "minItems", json_integer(1));
        rc = rc ? rc : json_object_set_new(o, "items", key_schema(k->sub));
        break;
    case KT_MAP: {
        rc = rc ? rc : set_type(o, "object", nullable);
        if (rc == 0 && (k->flags & KR_NONEMPTY))
            rc = json_object_set_new(o, "minProperties", json_integer(1));
        json_t *names = json_object();
        if (rc == 0 && names != NULL && fmt_pattern(k->fmt) != NULL)
            rc = json_object_set_new(names, "pattern", json_string(fmt_pattern(k->fmt)));
        rc = rc ? rc : json_object_set_new(o, "propertyNames", names);
        rc = rc ? rc : json_object_set_new(o, "additionalProperties", key_schema(k->sub));
        break;
    }
    case KT_BOOL:
        rc = rc ? rc : set_type(o, "boolean", nullable);
        break;
    case KT_UINT:
        rc = rc ? rc : set_type(o, "integer", nullable);
        rc = rc ? rc : json_object_set_new(o, "minimum", json_integer((json_int_t)k->lo));
        if (rc == 0 && k->hi != UINT64_MAX)
            rc = json_object_set_new(o, "maximum", json_integer((json_int_t)k->hi));
        break;
    case KT_AUTOBOOL: {
        json_t *e = json_pack("[s, b, b]", "auto", 1, 0);
        rc = rc ? rc : e == NULL ? -1 : json_object_set_new(o, "enum", e);
        break;
    }
    case KT_FACTOR: {
        /* 0, or at least 1.0: "not strictly between 0 and 1". */
        rc = rc ? rc : set_type(o, "number", nullable);
        rc = rc ? rc : json_object_set_new(o, "minimum", json_integer(0));
        json_t *gap = json_pack("{s:i, s:i}", "exclusiveMinimum", 0, "exclusiveMaximum", 1);
        rc = rc ? rc : json_object_set_new(o, "not", gap);
        break;
    }
    case KT_ENUM: {
        json_t *e = json_array();
        for (size_t i = 0; e != NULL && k->enums[i] != NULL; i++)
            if (json_array_append_new(e, json_string(k->enums[i])) != 0)
                rc = -1;
        rc = rc ? rc : set_type(o, "string", nullable);
        rc = rc ? rc : json_object_set_new(o, "enum", e);
        break;
    }
    case KT_STRING:
        rc = rc ? rc : set_type(o, "string", nullable);
        if (rc == 0 && (k->flags & KR_NONEMPTY))
            rc = json_object_set_new(o, "minLength", json_integer(1));
        if (rc == 0 && fmt_pattern(k->fmt) != NULL)
            rc = json_object_set_new(o, "pattern", json_string(fmt_pattern(k->fmt)));
        break;
    case KT_LATER:
        assert(!"later keys have no schema");
        break;
    }
    if (rc == 0 && k->def != NULL)
        rc = json_object_set_new(o, "default", json_text(k->def));
    if (rc == 0 && k->example != NULL) {
        json_t *ex = json_array();
        rc = ex == NULL ? -1 : json_array_append_new(ex, json_text(k->example));
        rc = rc ? rc : json_object_set_new(o, "examples", ex);
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *wsg_config_schema(void) {
    static const struct key root = {
        .type = KT_OBJECT,
        .sub = k_root,
        .desc = "The configuration file of wsgate, a WebSocket-aware load balancer. This "
                "schema is printed by `wsgate --schema` from the table the parser uses; "
                "`wsgate -t` also checks what a schema cannot (names resolve, routes name "
                "existing pools and can be reached, certificate files load).",
    };
    json_t *s = json_object();
    if (s == NULL)
        return NULL;
    json_t *body = key_schema(&root);
    int rc = body == NULL ? -1 : 0;
    rc = rc ? rc
            : json_object_set_new(s, "$schema",
                                  json_string("https://json-schema.org/draft/2020-12/schema"));
    rc = rc ? rc : json_object_set_new(s, "title", json_string("wsgate configuration"));
    rc = rc ? rc : json_object_update(s, body);
    json_decref(body);
    char *text = rc == 0 ? json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(s);
    return text;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

static void free_tls(wsg_tls_conf_t *t) {
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nsni; i++) {
        free(t->sni[i].server_name);
        free(t->sni[i].cert);
        free(t->sni[i].key);
    }
    free(t->sni);
    free(t->cert);
    free(t->key);
    free(t);
}

static void free_backends(wsg_backend_conf_t *bs, size_t n) {
    for (size_t j = 0; j < n; j++)
        wsg_config_backend_clear(&bs[j]);
    free(bs);
}

/* A derived config owns only its pools array and the backends it marks. */
static void derived_free(wsg_config_t *cfg) {
    for (size_t i = 0; i < cfg->npools; i++)
        if (cfg->owns_backends[i])
            free_backends(cfg->pools[i].backends, cfg->pools[i].nbackends);
    free(cfg->pools);
    free(cfg->owns_backends);
    wsg_config_unref(cfg->base);
    free(cfg);
}

static void config_free(wsg_config_t *cfg) {
    if (cfg == NULL)
        return;
    if (cfg->base != NULL) {
        derived_free(cfg);
        return;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        free(cfg->listeners[i].name);
        free(cfg->listeners[i].bind);
        free_tls(cfg->listeners[i].tls);
    }
    free(cfg->listeners);
    free(cfg->admin.bind);
    free(cfg->admin.token);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].host);
        free(cfg->routes[i].path_prefix);
        free(cfg->routes[i].pool);
        for (size_t k = 0; k < cfg->routes[i].norigins; k++)
            free(cfg->routes[i].origins[k]);
        free(cfg->routes[i].origins);
        free(cfg->routes[i].auth);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->nauths; i++) {
        wsg_auth_conf_t *a = &cfg->auths[i];
        free(a->name);
        free(a->keys);
        free(a->issuer);
        free(a->audience);
        for (size_t k = 0; k < a->nfrom; k++)
            free(a->from[k].name);
        free(a->from);
        for (size_t k = 0; k < a->nclaims; k++) {
            free(a->claims[k].claim);
            free(a->claims[k].header);
        }
        free(a->claims);
    }
    free(cfg->auths);
    for (size_t i = 0; i < cfg->npools; i++) {
        wsg_pool_conf_t *p = &cfg->pools[i];
        free(p->name);
        free_backends(p->backends, p->nbackends);
        free_backends(p->resolves, p->nresolves);
        free(p->balance.key_name);
        free(p->balance.cookie.name);
        free(p->balance.cookie.path);
        if (p->balance.cookie.secret != NULL)
            OPENSSL_cleanse(p->balance.cookie.secret, p->balance.cookie.secret_len);
        free(p->balance.cookie.secret);
        free(p->health.path);
        free(p->tls.ca);
        free(p->tls.server_name);
    }
    free(cfg->pools);
    for (size_t i = 0; i < cfg->dns.nservers; i++)
        free(cfg->dns.servers[i]);
    free(cfg->dns.servers);
    free(cfg->path);
    free(cfg);
}

/* Adds a message that has no JSON path (syntax errors, I/O errors). */
static void raw_error(struct ctx *c, const char *fmt, ...) {
    struct sb m = {0};
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&m, fmt, ap);
    va_end(ap);
    add_msg(c, &m);
}

/* Makes sure a failed load never returns without a message, even when the
 * failure was running out of memory while recording messages. */
static void finish_errors(struct ctx *c) {
    if (c->oom && c->errs != NULL && c->errs->count == 0) {
        bool was = c->oom;
        raw_error(c, "%s: out of memory", c->file);
        c->oom = was;
    }
}

/* A parse's context, and its JSON text loaded (NULL, with the error
 * recorded, when it is not JSON). */
static json_t *parse_start(struct ctx *c, const char *text, size_t len, const char *name,
                           const wsg_config_opts_t *opts, wsg_config_errors_t *errs) {
    json_error_t jerr;
    c->file = name != NULL ? name : "<string>";
    c->errs = errs;
    c->resolve = opts == NULL || opts->resolve;
    json_t *root = json_loadb(text != NULL ? text : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        raw_error(c, "%s:%d:%d: JSON syntax error: %s", c->file, jerr.line, jerr.column,
                  jerr.text);
    return root;
}

wsg_config_t *wsg_config_parse(const char *text, size_t len, const char *name,
                               const wsg_config_opts_t *opts, wsg_config_errors_t *errs) {
    struct ctx c = {0};
    json_t *root = parse_start(&c, text, len, name, opts, errs);
    if (root == NULL) {
        finish_errors(&c);
        return NULL;
    }

    wsg_config_t *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        c.oom = true;
        goto fail;
    }
    set_defaults(&c, k_root, cfg);
    set_defaults(&c, k_timeouts, cfg);
    set_defaults(&c, k_heartbeat, cfg);
    set_defaults(&c, k_limits, cfg);
    set_defaults(&c, k_log, cfg);
    cfg->path = xstrdup(&c, c.file);
    if (!json_is_object(root))
        bad_type(&c, root, "a JSON object at the top level");
    else
        parse_root(&c, root, cfg);
    if (c.nerrors > 0 || c.oom)
        goto fail;
    json_decref(root);
    free(c.path.p);
    free(c.route_bad);
    __atomic_store_n(&cfg->refcount, 1, __ATOMIC_RELEASE);
    return cfg;

fail:
    config_free(cfg);
    json_decref(root);
    free(c.path.p);
    free(c.route_bad);
    finish_errors(&c);
    return NULL;
}

wsg_config_t *wsg_config_load(const char *path, const wsg_config_opts_t *opts,
                              wsg_config_errors_t *errs) {
    struct ctx c = {0};
    c.file = path;
    c.errs = errs;

    /* Read the file ourselves rather than with json_load_file(), so that an
     * I/O error is reported with errno's words rather than as a syntax
     * error, and a huge file is refused before it is parsed. */
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        raw_error(&c, "%s: cannot open: %s", path, strerror(errno));
        finish_errors(&c);
        return NULL;
    }
    struct sb buf = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && buf.len <= FILE_MAX)
        sb_addn(&buf, chunk, n);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    wsg_config_t *cfg = NULL;
    if (rerr != 0)
        raw_error(&c, "%s: cannot read: %s", path, strerror(rerr));
    else if (buf.len > FILE_MAX)
        raw_error(&c, "%s: file too large (more than %u bytes)", path, FILE_MAX);
    else if (buf.oom)
        c.oom = true;
    else
        cfg = wsg_config_parse(buf.p, buf.len, path, opts, errs);
    free(buf.p);
    finish_errors(&c);
    return cfg;
}

wsg_config_t *wsg_config_ref(wsg_config_t *cfg) {
    __atomic_add_fetch(&cfg->refcount, 1, __ATOMIC_RELAXED);
    return cfg;
}

void wsg_config_unref(wsg_config_t *cfg) {
    if (cfg == NULL)
        return;
    /* Release/acquire so that the thread that frees sees every other
     * thread's last reads completed (the usual refcount pattern). */
    if (__atomic_sub_fetch(&cfg->refcount, 1, __ATOMIC_ACQ_REL) == 0)
        config_free(cfg);
}

void wsg_config_errors_free(wsg_config_errors_t *errs) {
    if (errs == NULL)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->count = 0;
}

const wsg_pool_conf_t *wsg_config_pool(const wsg_config_t *cfg, const char *name) {
    size_t lo = 0, hi = cfg->npools;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *pn = cfg->pools[mid].name;
        int r = pn == NULL ? 1 : strcmp(pn, name);
        if (r == 0)
            return &cfg->pools[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Runtime changes of a pool's backends                                      */

void wsg_config_backend_clear(wsg_backend_conf_t *b) {
    if (b == NULL)
        return;
    free(b->address);
    b->address = NULL;
}

int wsg_config_parse_backend(const char *text, size_t len, const char *name,
                             const wsg_config_opts_t *opts, wsg_backend_conf_t *out,
                             wsg_config_errors_t *errs) {
    struct ctx c = {0};
    json_t *root = parse_start(&c, text, len, name, opts, errs);
    if (root != NULL) {
        /* The very parser of the file's pools.NAME.backends[i]: the same
         * keys, ranges, defaults and messages. */
        parse_backend(&c, root, out);
        json_decref(root);
    }
    free(c.path.p);
    finish_errors(&c);
    if (c.nerrors == 0 && !c.oom && out->address != NULL)
        return 0;
    wsg_config_backend_clear(out);
    return -1;
}

int wsg_config_find_backend(const wsg_pool_conf_t *p, const char *address) {
    wsg_sockaddr_t none = {0};
    for (size_t i = 0; i < p->nbackends; i++)
        if (same_endpoint(p->backends[i].address, &none, address, &none))
            return (int)i;
    return -1;
}

void wsg_config_backend_authority(const char *address, char *out, size_t cap) {
    const char *hash = strchr(address, '#');
    const char *colon = strrchr(address, ':');
    if (hash == NULL || colon == NULL || colon < hash)
        snprintf(out, cap, "%s", address);
    else
        snprintf(out, cap, "%.*s%s", (int)(hash - address), address, colon);
}

static wsg_backend_conf_t *copy_backends(const wsg_backend_conf_t *bs, size_t n) {
    wsg_backend_conf_t *out = calloc(n ? n : 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[i] = bs[i];
        if ((out[i].address = strdup(bs[i].address)) == NULL) {
            free_backends(out, i);
            return NULL;
        }
    }
    return out;
}

wsg_config_t *wsg_config_with_backends(wsg_config_t *cfg, size_t pool,
                                       const wsg_backend_conf_t *bs, size_t n) {
    if (pool >= cfg->npools || (n == 0 && cfg->pools[pool].nresolves == 0))
        return NULL;
    wsg_config_t *d = malloc(sizeof(*d));
    wsg_pool_conf_t *pools = malloc(cfg->npools * sizeof(*pools));
    bool *owns = calloc(cfg->npools, sizeof(*owns));
    if (d == NULL || pools == NULL || owns == NULL)
        goto fail;
    *d = *cfg;
    memcpy(pools, cfg->pools, cfg->npools * sizeof(*pools));
    d->pools = pools;
    d->owns_backends = owns;
    /* Always the original: a chain of runtime changes never grows a chain
     * of configs, each keeping the one before alive. */
    d->base = wsg_config_ref(cfg->base != NULL ? cfg->base : cfg);
    __atomic_store_n(&d->refcount, 1, __ATOMIC_RELEASE);
    for (size_t i = 0; i < cfg->npools; i++) {
        const wsg_backend_conf_t *src = NULL;
        size_t cnt = 0;
        if (i == pool) {
            src = bs;
            cnt = n;
        } else if (cfg->owns_backends != NULL && cfg->owns_backends[i]) {
            src = cfg->pools[i].backends; /* <cfg>'s own: it may go before <d> */
            cnt = cfg->pools[i].nbackends;
        } else {
            continue;
        }
        if ((pools[i].backends = copy_backends(src, cnt)) == NULL) {
            for (size_t j = 0; j < i; j++)
                if (owns[j])
                    free_backends(pools[j].backends, pools[j].nbackends);
            wsg_config_unref(d->base);
            goto fail;
        }
        pools[i].nbackends = cnt;
        owns[i] = true;
    }
    return d;
fail:
    free(d);
    free(pools);
    free(owns);
    return NULL;
}

const wsg_auth_conf_t *wsg_config_auth(const wsg_config_t *cfg, const char *name) {
    size_t lo = 0, hi = cfg->nauths;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *an = cfg->auths[mid].name;
        int r = an == NULL ? 1 : strcmp(an, name);
        if (r == 0)
            return &cfg->auths[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
