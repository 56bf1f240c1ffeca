/*
 * Logging: SPEC §8 lines on stderr, as text or as one JSON object per line.
 *
 * Every line is built in a fixed stack buffer and handed to the kernel with a
 * single write(2). That is what keeps lines from several worker threads from
 * interleaving without a lock: a write of at most PIPE_BUF bytes to a pipe is
 * atomic (POSIX write(2)), and so is an O_APPEND write to a file in practice.
 * LINE_CAP is therefore 4096 (Linux's PIPE_BUF) and an over-long message is
 * cut, marked with "...", rather than split over two writes. The module does
 * no allocation, uses no stdio stream (stdio's buffering would split or merge
 * lines between threads) and depends on nothing but libc: the JSON escaper is
 * our own, so logging works before and without any other module.
 *
 * What it does not do: filter by level (the WSG_LOG* macros do, before any
 * argument is evaluated), decide whether access lines are wanted (the caller
 * checks log.access), rotate files or log anywhere but stderr. The level and
 * format are the only process-wide state; they are C11 atomics read with
 * relaxed ordering, since a line logged with the old setting a moment after
 * a reload is harmless and the hot path must stay one load and one compare.
 *
 * Messages may carry bytes from the network (header values, paths). In text
 * lines control characters are escaped (\n, \r, \t, \xHH) so a line is always
 * one line; in JSON, strings are escaped per RFC 8259 §7 and bytes that are
 * not valid UTF-8 (RFC 3629 §4) become U+FFFD, so every line stays parseable.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <wsgate/log.h>

/* One line, newline included; equal to PIPE_BUF on Linux (see above). */
#define LINE_CAP 4096

/* Caps, in output bytes after escaping, for the short strings of a line.
 * They bound everything that follows the message in a JSON line, so the
 * message can be given all the rest of the buffer. */
#define NAME_CAP 64
#define FIELD_CAP 256
#define REASON_CAP 512

/* Room kept after the JSON message for the context fields:
 * ,"worker":4294967295,"conn":18446744073709551615,"phase":"<NAME_CAP>"}\n */
#define JSON_TAIL_CAP (10 + 10 + 8 + 20 + 9 + NAME_CAP + 2 + 2 + 16)

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* The two process-wide settings (see the header). */
static atomic_int log_level = WSG_LOG_INFO;
static atomic_int log_format = WSG_LOG_TEXT;

void wsg_log_configure(wsg_log_level_t level, wsg_log_format_t format) {
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&log_format, (int)format, memory_order_relaxed);
}

wsg_log_level_t wsg_log_threshold(void) {
    return (wsg_log_level_t)atomic_load_explicit(&log_level, memory_order_relaxed);
}

wsg_log_format_t wsg_log_format(void) {
    return (wsg_log_format_t)atomic_load_explicit(&log_format, memory_order_relaxed);
}

int wsg_log_level_parse(const char *s) {
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *wsg_log_level_name(wsg_log_level_t level) {
    if ((unsigned)level < sizeof(level_names) / sizeof(level_names[0]))
        return level_names[level];
    return "unknown";
}

void wsg_log_timestamp(char *out, size_t cap) {
    struct timespec ts;
    struct tm tm;
    if (cap == 0)
        return;
    if (clock_gettime(CLOCK_REALTIME, &ts) == -1) {
        ts.tv_sec = 0;
        ts.tv_nsec = 0;
    }
    if (gmtime_r(&ts.tv_sec, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
}

/* --- line buffer ---------------------------------------------------------- */

/* Appends clip at the end of the buffer instead of overflowing; the caps
 * above are chosen so that in practice only the message is ever cut, and it
 * is cut on purpose (put_esc) with a visible "...". */
typedef struct {
    char buf[LINE_CAP];
    size_t len;
} line_t;

static size_t room(const line_t *l) {
    return LINE_CAP - l->len;
}

static void put(line_t *l, const char *s, size_t n) {
    if (n > room(l))
        n = room(l);
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_s(line_t *l, const char *s) {
    put(l, s, strlen(s));
}

static void put_u64(line_t *l, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    put(l, tmp, (size_t)n);
}

static void put_int(line_t *l, int v) {
    char tmp[16];
    int n = snprintf(tmp, sizeof(tmp), "%d", v);
    put(l, tmp, (size_t)n);
}

/* --- escaping ------------------------------------------------------------- */

typedef enum {
    ESC_TEXT,   /* control characters only: keeps a text line one line */
    ESC_QUOTED, /* text inside "...": also '"' and '\' */
    ESC_JSON,   /* a JSON string body (RFC 8259 §7), valid UTF-8 out */
} esc_mode_t;

/* Length of the well-formed UTF-8 sequence at <s>, or 0 if the bytes there
 * are not one (RFC 3629 §4: no overlongs, no surrogates, nothing past
 * U+10FFFF). The second byte's range depends on the first; the rest are
 * plain continuation bytes. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* beyond U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Escapes the character starting at <s> into <out> (room for 6 bytes).
 * Returns the output length; *used gets the input bytes consumed. */
static size_t esc_unit(const unsigned char *s, size_t n, esc_mode_t mode, char out[6],
                       size_t *used) {
    static const char hex[] = "0123456789abcdef";
    unsigned char c = s[0];
    *used = 1;

    if (mode == ESC_JSON) {
        if (c == '"' || c == '\\') {
            out[0] = '\\';
            out[1] = (char)c;
            return 2;
        }
        if (c < 0x20) {
            memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4];
            out[5] = hex[c & 0xF];
            return 6;
        }
        if (c < 0x80) {
            out[0] = (char)c;
            return 1;
        }
        size_t k = utf8_len(s, n);
        if (k == 0) {
            /* One replacement per bad byte: simple, and never swallows a
             * good character that follows a bad one. */
            memcpy(out, "\\ufffd", 6);
            return 6;
        }
        memcpy(out, s, k);
        *used = k;
        return k;
    }

    if (c < 0x20 || c == 0x7F) {
        out[0] = '\\';
        switch (c) {
        case '\n':
            out[1] = 'n';
            return 2;
        case '\r':
            out[1] = 'r';
            return 2;
        case '\t':
            out[1] = 't';
            return 2;
        default:
            out[1] = 'x';
            out[2] = hex[c >> 4];
            out[3] = hex[c & 0xF];
            return 4;
        }
    }
    if (mode == ESC_QUOTED && (c == '"' || c == '\\')) {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    out[0] = (char)c;
    return 1;
}

/* Appends <s>[0..n) escaped, using at most <budget> output bytes. When it
 * does not fit, or <cut> says the input was already truncated, as many whole
 * characters as fit are kept and "..." ends it: an escape sequence or a UTF-8
 * character is never split. */
static void put_esc(line_t *l, const char *s, size_t n, size_t budget, esc_mode_t mode, bool cut) {
    const unsigned char *u = (const unsigned char *)s;
    char tmp[6];
    size_t used, total = 0;

    if (budget > room(l))
        budget = room(l);
    if (budget < 3)
        return;
    /* First pass: does it all fit? Lines are short, two passes are cheap. */
    for (size_t i = 0; i < n && total <= budget; i += used)
        total += esc_unit(u + i, n - i, mode, tmp, &used);
    if (total <= budget && !cut) {
        for (size_t i = 0; i < n; i += used)
            put(l, tmp, esc_unit(u + i, n - i, mode, tmp, &used));
        return;
    }
    size_t limit = budget - 3, w = 0;
    for (size_t i = 0; i < n; i += used) {
        size_t k = esc_unit(u + i, n - i, mode, tmp, &used);
        if (w + k > limit)
            break;
        put(l, tmp, k);
        w += k;
    }
    put(l, "...", 3);
}

/* A JSON string value, or null for NULL. <budget> counts the quotes. */
static void put_json_str(line_t *l, const char *s, size_t budget) {
    if (s == NULL) {
        put_s(l, "null");
        return;
    }
    put(l, "\"", 1);
    put_esc(l, s, strlen(s), budget - 2, ESC_JSON, false);
    put(l, "\"", 1);
}

/* A text field value; NULL and "" are "-" so the field is never blank. */
static void put_text_field(line_t *l, const char *s, size_t budget) {
    if (s == NULL || s[0] == '\0')
        put(l, "-", 1);
    else
        put_esc(l, s, strlen(s), budget, ESC_TEXT, false);
}

/* Writes the whole line with one write(2), see the top of the file. A short
 * write (a signal, a full disk) finishes with further writes rather than
 * losing the end of the line; EAGAIN on a non-blocking stderr drops the line,
 * since blocking a worker loop for a log line would be worse. */
static void emit(const line_t *l) {
    const char *p = l->buf;
    size_t n = l->len;
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* "<ts> <level> <module> " or {"ts":"<ts>","level":"<level>","module":<m> */
static void put_head(line_t *l, bool json, wsg_log_level_t level, const char *module) {
    char ts[32];
    wsg_log_timestamp(ts, sizeof(ts));
    if (json) {
        put_s(l, "{\"ts\":\"");
        put_s(l, ts);
        put_s(l, "\",\"level\":\"");
        put_s(l, wsg_log_level_name(level));
        put_s(l, "\",\"module\":");
        put_json_str(l, module, NAME_CAP);
    } else {
        put_s(l, ts);
        put(l, " ", 1);
        put_s(l, wsg_log_level_name(level));
        put(l, " ", 1);
        put_text_field(l, module, NAME_CAP);
        put(l, " ", 1);
    }
}

void wsg_log_write(wsg_log_level_t level, const char *module, const wsg_log_ctx_t *ctx,
                   const char *fmt, ...) {
    /* A log call must not disturb the errno its caller may be about to
     * report or test. */
    int saved_errno = errno;
    bool json = wsg_log_format() == WSG_LOG_JSON;
    char msg[LINE_CAP];
    size_t mlen;
    bool cut = false;
    line_t l;
    l.len = 0;

    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r < 0) {
        mlen = 0;
        cut = true;
    } else if ((size_t)r >= sizeof(msg)) {
        mlen = sizeof(msg) - 1;
        cut = true;
    } else {
        mlen = (size_t)r;
    }

    put_head(&l, json, level, module);
    if (json) {
        put_s(&l, ",\"msg\":\"");
        size_t budget = room(&l) > JSON_TAIL_CAP ? room(&l) - JSON_TAIL_CAP : 0;
        put_esc(&l, msg, mlen, budget, ESC_JSON, cut);
        put(&l, "\"", 1);
        if (ctx != NULL) {
            put_s(&l, ",\"worker\":");
            put_u64(&l, ctx->worker);
            put_s(&l, ",\"conn\":");
            put_u64(&l, ctx->conn);
            put_s(&l, ",\"phase\":");
            put_json_str(&l, ctx->phase, NAME_CAP);
        }
        put(&l, "}", 1);
    } else {
        if (ctx != NULL) {
            put_s(&l, "[w");
            put_u64(&l, ctx->worker);
            put_s(&l, " #");
            put_u64(&l, ctx->conn);
            if (ctx->phase != NULL) {
                put(&l, " ", 1);
                put_esc(&l, ctx->phase, strlen(ctx->phase), NAME_CAP, ESC_TEXT, false);
            }
            put_s(&l, "] ");
        }
        put_esc(&l, msg, mlen, room(&l) - 1, ESC_TEXT, cut);
    }
    /* The newline always fits: every step above leaves room for it. */
    if (room(&l) == 0)
        l.len--;
    put(&l, "\n", 1);
    emit(&l);
    errno = saved_errno;
}

/* --- access lines --------------------------------------------------------- */

static void put_text_kv(line_t *l, const char *key, const char *value) {
    put(l, " ", 1);
    put_s(l, key);
    put(l, "=", 1);
    put_text_field(l, value, FIELD_CAP);
}

static void put_text_ku(line_t *l, const char *key, uint64_t v) {
    put(l, " ", 1);
    put_s(l, key);
    put(l, "=", 1);
    put_u64(l, v);
}

static void put_json_key(line_t *l, const char *key) {
    put_s(l, ",\"");
    put_s(l, key);
    put_s(l, "\":");
}

static void put_json_ks(line_t *l, const char *key, const char *value, size_t budget) {
    put_json_key(l, key);
    put_json_str(l, value, budget);
}

static void put_json_ku(line_t *l, const char *key, uint64_t v) {
    put_json_key(l, key);
    put_u64(l, v);
}

void wsg_log_access(const wsg_access_rec_t *rec) {
    int saved_errno = errno;
    bool json = wsg_log_format() == WSG_LOG_JSON;
    line_t l;
    l.len = 0;

    /* Access lines are info lines of the "access" module, but they are not
     * filtered by level: the caller asked for them by enabling log.access. */
    put_head(&l, json, WSG_LOG_INFO, "access");
    if (json) {
        put_json_ks(&l, "client", rec->client, FIELD_CAP);
        put_json_ks(&l, "listener", rec->listener, FIELD_CAP);
        put_json_ks(&l, "route", rec->route, FIELD_CAP);
        put_json_ks(&l, "pool", rec->pool, FIELD_CAP);
        put_json_ks(&l, "backend", rec->backend, FIELD_CAP);
        if (rec->request != NULL)
            put_json_ks(&l, "request", rec->request, FIELD_CAP);
        if (rec->upstream != NULL)
            put_json_ks(&l, "upstream", rec->upstream, FIELD_CAP);
        put_json_key(&l, "status");
        put_int(&l, rec->status);
        put_json_ku(&l, "duration_ms", rec->duration_ms);
        put_json_ku(&l, "bytes_in", rec->bytes_in);
        put_json_ku(&l, "bytes_out", rec->bytes_out);
        put_json_ku(&l, "frames_in", rec->frames_in);
        put_json_ku(&l, "frames_out", rec->frames_out);
        put_json_key(&l, "close");
        if (rec->close_code == 0)
            put_s(&l, "null");
        else
            put_int(&l, rec->close_code);
        put_json_ks(&l, "closed_by", rec->closed_by, FIELD_CAP);
        put_json_ks(&l, "reason", rec->reason, REASON_CAP);
        put_json_ku(&l, "worker", rec->worker);
        put_json_ku(&l, "conn", rec->conn);
        put(&l, "}", 1);
    } else {
        /* put_head left "access " and the fields bring their own leading
         * space; drop the extra one. */
        l.len--;
        put_text_kv(&l, "client", rec->client);
        put_text_kv(&l, "listener", rec->listener);
        put_text_kv(&l, "route", rec->route);
        put_text_kv(&l, "pool", rec->pool);
        put_text_kv(&l, "backend", rec->backend);
        if (rec->request != NULL) {
            put_s(&l, " request=\"");
            put_esc(&l, rec->request, strlen(rec->request), FIELD_CAP, ESC_QUOTED, false);
            put(&l, "\"", 1);
        }
        if (rec->upstream != NULL)
            put_text_kv(&l, "upstream", rec->upstream);
        put_s(&l, " status=");
        put_int(&l, rec->status);
        put_text_ku(&l, "duration_ms", rec->duration_ms);
        put_text_ku(&l, "bytes_in", rec->bytes_in);
        put_text_ku(&l, "bytes_out", rec->bytes_out);
        put_text_ku(&l, "frames_in", rec->frames_in);
        put_text_ku(&l, "frames_out", rec->frames_out);
        put_s(&l, " close=");
        if (rec->close_code == 0)
            put(&l, "-", 1);
        else
            put_int(&l, rec->close_code);
        put_text_kv(&l, "closed_by", rec->closed_by);
        if (rec->reason != NULL) {
            put_s(&l, " reason=\"");
            put_esc(&l, rec->reason, strlen(rec->reason), REASON_CAP, ESC_QUOTED, false);
            put(&l, "\"", 1);
        }
    }
    if (room(&l) == 0)
        l.len--;
    put(&l, "\n", 1);
    emit(&l);
    errno = saved_errno;
}
