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

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
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

/* Every key of <obj> must be in <known> (NULL-terminated). */
static void check_keys(struct ctx *c, json_t *obj, const char *const *known) {
    size_t nknown = 0;
    while (known[nknown] != NULL)
        nknown++;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (size_t i = 0; i < nknown && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (ok)
            continue;
        size_t m = push_key(c, key);
        const char *hint = near_miss(key, known, nknown);
        if (hint != NULL)
            errf(c, "unknown key, did you mean \"%s\"?", hint);
        else
            errf(c, "unknown key");
        pop(c, m);
    }
}

/* ------------------------------------------------------------------------ */
/* Typed field readers. Each one checks <obj>[<key>] when present, reports a
 * problem under the key's path, and leaves *out untouched unless the value
 * is good (so the default stays in place).                                  */

static char *xstrdup(struct ctx *c, const char *s) {
    char *d = strdup(s);
    if (d == NULL)
        c->oom = true;
    return d;
}

static void range_text(char *buf, size_t cap, uint64_t lo, uint64_t hi, const char *note) {
    if (hi == UINT64_MAX && lo == 0)
        snprintf(buf, cap, "a non-negative integer%s", note);
    else if (hi == UINT64_MAX)
        snprintf(buf, cap, "an integer >= %llu%s", (unsigned long long)lo, note);
    else
        snprintf(buf, cap, "an integer from %llu to %llu%s", (unsigned long long)lo,
                 (unsigned long long)hi, note);
}

static void check_uint(struct ctx *c, json_t *v, uint64_t lo, uint64_t hi, const char *note,
                       uint64_t *out) {
    char what[160];
    range_text(what, sizeof what, lo, hi, note);
    if (!json_is_integer(v)) {
        bad_type(c, v, what);
        return;
    }
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < lo || (uint64_t)i > hi) {
        bad_value(c, v, what);
        return;
    }
    *out = (uint64_t)i;
}

static void get_u64(struct ctx *c, json_t *obj, const char *key, uint64_t lo, uint64_t hi,
                    const char *note, uint64_t *out) {
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return;
    size_t m = push_key(c, key);
    check_uint(c, v, lo, hi, note, out);
    pop(c, m);
}

static void get_unsigned(struct ctx *c, json_t *obj, const char *key, unsigned lo, unsigned hi,
                         unsigned *out) {
    uint64_t x = *out;
    get_u64(c, obj, key, lo, hi, "", &x);
    *out = (unsigned)x;
}

/* A duration in milliseconds; <zero> says what 0 means, NULL when 0 is
 * not allowed. */
static void get_ms(struct ctx *c, json_t *obj, const char *key, const char *zero, uint64_t *out) {
    char note[64];
    snprintf(note, sizeof note, " (milliseconds%s%s)", zero ? ", 0 = " : "", zero ? zero : "");
    get_u64(c, obj, key, zero ? 0 : 1, DUR_MAX, note, out);
}

static void get_bool(struct ctx *c, json_t *obj, const char *key, bool *out) {
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return;
    size_t m = push_key(c, key);
    if (json_is_boolean(v))
        *out = json_is_true(v);
    else
        bad_type(c, v, "true or false");
    pop(c, m);
}

/* Picks one of <names> (NULL-terminated); *out is the index. */
static void get_enum(struct ctx *c, json_t *obj, const char *key, const char *const *names,
                     const char *what, int *out) {
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return;
    size_t m = push_key(c, key);
    if (!json_is_string(v)) {
        bad_type(c, v, what);
    } else {
        int i = 0;
        while (names[i] != NULL && strcmp(names[i], json_string_value(v)) != 0)
            i++;
        if (names[i] != NULL)
            *out = i;
        else
            bad_value(c, v, what);
    }
    pop(c, m);
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
    static const char *const keys[] = {"server_name", "cert", "key", NULL};
    static const char *const host_what = "a host name or \"*.suffix\"";
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, keys);
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
    static const char *const keys[] = {"cert", "key", "sni", "min_version", NULL};
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
    t->min_version = TLS_1_2;
    check_keys(c, v, keys);
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

    static const char *const versions[] = {"1.2", "1.3", NULL};
    int ver = 0;
    get_enum(c, v, "min_version", versions, "\"1.2\" or \"1.3\"", &ver);
    t->min_version = ver == 1 ? TLS_1_3 : TLS_1_2;
}

static void parse_listener(struct ctx *c, json_t *v, wsg_listener_conf_t *l) {
    static const char *const keys[] = {"name", "bind", "tls", "proxy_protocol", NULL};
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, keys);
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
    get_bool(c, v, "proxy_protocol", &l->proxy_protocol);
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
    static const char *const keys[] = {"bind", "token", NULL};
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
    check_keys(c, v, keys);
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
            bad_value(c, p, query ? "a path without spaces or '#'"
                                  : "a path without spaces, '?' or '#'");
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

static bool parse_route(struct ctx *c, json_t *v, wsg_route_conf_t *r) {
    static const char *const keys[] = {"host", "path_prefix", "pool", NULL};
    static const char *const host_what = "null, a host name or \"*.suffix\"";
    size_t before = c->nerrors;
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return false;
    }
    check_keys(c, v, keys);
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
        cfg->routes[i].path_prefix = xstrdup(c, "/");
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

static void parse_balance(struct ctx *c, json_t *v, wsg_balance_conf_t *b) {
    static const char *const keys[] = {"key", "fallback", "load_factor", NULL};
    static const char *const key_what =
        "\"ip\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"";
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, keys);
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
    static const char *const fallbacks[] = {"ip", "random", NULL};
    int fb = (int)b->fallback;
    get_enum(c, v, "fallback", fallbacks, "\"ip\" or \"random\"", &fb);
    b->fallback = (wsg_fallback_t)fb;

    json_t *lf = json_object_get(v, "load_factor");
    if (lf != NULL) {
        size_t m = push_key(c, "load_factor");
        static const char *const lf_what = "0 or a number >= 1.0";
        if (!json_is_number(lf))
            bad_type(c, lf, lf_what);
        else if (json_number_value(lf) != 0 && !(json_number_value(lf) >= 1.0))
            bad_value(c, lf, lf_what);
        else
            b->load_factor = json_number_value(lf);
        pop(c, m);
    }
}

static void parse_health(struct ctx *c, json_t *v, wsg_health_conf_t *h) {
    static const char *const keys[] = {"type", "path", "interval_ms", "timeout_ms",
                                       "rise", "fall", NULL};
    static const char *const type_what = "\"tcp\", \"http\" or \"websocket\"";
    if (v == NULL || json_is_null(v))
        return;
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object");
        return;
    }
    check_keys(c, v, keys);
    if (json_object_get(v, "type") == NULL) {
        missing(c, "type", type_what);
    } else {
        static const char *const types[] = {"tcp", "http", "websocket", NULL};
        int t = -1;
        get_enum(c, v, "type", types, type_what, &t);
        if (t >= 0)
            h->type = (wsg_health_type_t)(WSG_HEALTH_TCP + t);
    }
    get_path(c, v, "path", true, &h->path);
    get_ms(c, v, "interval_ms", NULL, &h->interval_ms);
    get_ms(c, v, "timeout_ms", NULL, &h->timeout_ms);
    get_unsigned(c, v, "rise", 1, 1000, &h->rise);
    get_unsigned(c, v, "fall", 1, 1000, &h->fall);
}

static void parse_pool_tls(struct ctx *c, json_t *v, wsg_pool_tls_conf_t *t) {
    static const char *const keys[] = {"ca", "verify", "server_name", NULL};
    if (v == NULL || json_is_null(v))
        return;
    if (!json_is_object(v)) {
        bad_type(c, v, "null or an object");
        return;
    }
    t->enabled = true;
    check_keys(c, v, keys);
    opt_string(c, v, "ca", "null or a non-empty string (CA file)", &t->ca);
    get_bool(c, v, "verify", &t->verify);
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

static void parse_backend(struct ctx *c, json_t *v, wsg_backend_conf_t *b) {
    static const char *const keys[] = {"address", "weight", NULL};
    if (!json_is_object(v)) {
        bad_type(c, v, "an object with \"address\"");
        return;
    }
    check_keys(c, v, keys);
    req_addr(c, v, "address", &b->address, &b->addr);
    get_unsigned(c, v, "weight", 1, 256, &b->weight);
}

static void parse_pool(struct ctx *c, json_t *v, wsg_pool_conf_t *p) {
    static const char *const keys[] = {"backends", "balance", "health", "connect_timeout_ms",
                                       "retries",  "tls",     NULL};
    p->balance.key = WSG_KEY_IP;
    p->balance.fallback = WSG_FALLBACK_IP;
    p->health.type = WSG_HEALTH_NONE;
    p->health.path = xstrdup(c, "/");
    p->health.interval_ms = 2000;
    p->health.timeout_ms = 1000;
    p->health.rise = 2;
    p->health.fall = 3;
    p->connect_timeout_ms = 3000;
    p->retries = 2;
    p->tls.verify = true;
    if (!json_is_object(v)) {
        bad_type(c, v, "an object");
        return;
    }
    check_keys(c, v, keys);

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
                b->weight = 1;
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
    get_ms(c, v, "connect_timeout_ms", NULL, &p->connect_timeout_ms);
    get_unsigned(c, v, "retries", 0, 100, &p->retries);
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

static json_t *section(struct ctx *c, json_t *root, const char *key, const char *const *keys) {
    json_t *v = json_object_get(root, key);
    if (v == NULL)
        return NULL;
    if (!json_is_object(v)) {
        size_t m = push_key(c, key);
        bad_type(c, v, "an object");
        pop(c, m);
        return NULL;
    }
    size_t m = push_key(c, key);
    check_keys(c, v, keys);
    pop(c, m);
    return v;
}

static void parse_root(struct ctx *c, json_t *root, wsg_config_t *cfg) {
    static const char *const keys[] = {"workers",  "listeners", "admin",  "routes", "pools",
                                       "timeouts", "heartbeat", "limits", "log",    NULL};
    check_keys(c, root, keys);

    uint64_t w = 0;
    get_u64(c, root, "workers", 0, 1024, " (0 = one per CPU)", &w);
    cfg->workers_configured = (unsigned)w;
    if (w == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        w = n < 1 ? 1 : n > 1024 ? 1024 : (uint64_t)n;
    }
    cfg->workers = (unsigned)w;

    parse_listeners(c, root, cfg);
    parse_admin(c, root, cfg);
    parse_routes(c, root, cfg);
    bool have_pools = parse_pools(c, root, cfg);
    check_routes(c, cfg, have_pools);

    static const char *const tkeys[] = {"handshake_ms", "idle_ms", "drain_ms", NULL};
    json_t *t = section(c, root, "timeouts", tkeys);
    if (t != NULL) {
        size_t m = push_key(c, "timeouts");
        get_ms(c, t, "handshake_ms", NULL, &cfg->timeouts.handshake_ms);
        get_ms(c, t, "idle_ms", "never", &cfg->timeouts.idle_ms);
        get_ms(c, t, "drain_ms", NULL, &cfg->timeouts.drain_ms);
        pop(c, m);
    }

    static const char *const hkeys[] = {"interval_ms", "timeout_ms", NULL};
    json_t *h = section(c, root, "heartbeat", hkeys);
    if (h != NULL) {
        size_t m = push_key(c, "heartbeat");
        get_ms(c, h, "interval_ms", "disabled", &cfg->heartbeat.interval_ms);
        get_ms(c, h, "timeout_ms", "disabled", &cfg->heartbeat.timeout_ms);
        pop(c, m);
    }

    static const char *const lkeys[] = {"max_connections",  "max_connections_per_ip",
                                        "max_header_bytes", "max_frame_bytes",
                                        "buffer_bytes",     NULL};
    json_t *l = section(c, root, "limits", lkeys);
    if (l != NULL) {
        size_t m = push_key(c, "limits");
        get_u64(c, l, "max_connections", 1, UINT64_MAX, "", &cfg->limits.max_connections);
        get_u64(c, l, "max_connections_per_ip", 0, UINT64_MAX, " (0 = unlimited)",
                &cfg->limits.max_connections_per_ip);
        get_u64(c, l, "max_header_bytes", 256, 1048576, " (bytes)", &cfg->limits.max_header_bytes);
        /* 125 bytes: the largest control frame (RFC 6455 §5.5) must pass. */
        get_u64(c, l, "max_frame_bytes", 125, UINT64_MAX, " (bytes)", &cfg->limits.max_frame_bytes);
        get_u64(c, l, "buffer_bytes", 1024, 1073741824, " (bytes)", &cfg->limits.buffer_bytes);
        pop(c, m);
    }

    static const char *const gkeys[] = {"level", "format", "access", NULL};
    json_t *g = section(c, root, "log", gkeys);
    if (g != NULL) {
        size_t m = push_key(c, "log");
        static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
        static const char *const formats[] = {"text", "json", NULL};
        int lv = (int)cfg->log.level, fm = (int)cfg->log.format;
        get_enum(c, g, "level", levels, "\"debug\", \"info\", \"warn\" or \"error\"", &lv);
        get_enum(c, g, "format", formats, "\"text\" or \"json\"", &fm);
        cfg->log.level = (wsg_log_level_t)lv;
        cfg->log.format = (wsg_log_format_t)fm;
        get_bool(c, g, "access", &cfg->log.access);
        pop(c, m);
    }
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

static void config_free(wsg_config_t *cfg) {
    if (cfg == NULL)
        return;
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
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->npools; i++) {
        wsg_pool_conf_t *p = &cfg->pools[i];
        free(p->name);
        for (size_t j = 0; j < p->nbackends; j++)
            free(p->backends[j].address);
        free(p->backends);
        free(p->balance.key_name);
        free(p->health.path);
        free(p->tls.ca);
        free(p->tls.server_name);
    }
    free(cfg->pools);
    free(cfg->path);
    free(cfg);
}

static void set_defaults(wsg_config_t *cfg) {
    cfg->timeouts.handshake_ms = 5000;
    cfg->timeouts.idle_ms = 300000;
    cfg->timeouts.drain_ms = 10000;
    cfg->heartbeat.interval_ms = 30000;
    cfg->heartbeat.timeout_ms = 10000;
    cfg->limits.max_connections = 100000;
    cfg->limits.max_connections_per_ip = 0;
    cfg->limits.max_header_bytes = 8192;
    cfg->limits.max_frame_bytes = 16777216;
    cfg->limits.buffer_bytes = 65536;
    cfg->log.level = WSG_LOG_INFO;
    cfg->log.format = WSG_LOG_TEXT;
    cfg->log.access = true;
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

wsg_config_t *wsg_config_parse(const char *text, size_t len, const char *name,
                               const wsg_config_opts_t *opts, wsg_config_errors_t *errs) {
    struct ctx c = {0};
    c.file = name != NULL ? name : "<string>";
    c.errs = errs;
    c.resolve = opts == NULL || opts->resolve;

    json_error_t jerr;
    json_t *root = json_loadb(text != NULL ? text : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        raw_error(&c, "%s:%d:%d: JSON syntax error: %s", c.file, jerr.line, jerr.column, jerr.text);
        finish_errors(&c);
        return NULL;
    }

    wsg_config_t *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        c.oom = true;
        goto fail;
    }
    set_defaults(cfg);
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
