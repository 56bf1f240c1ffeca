/*
 * Logging to stderr (SPEC §8): text or JSON, one line per event.
 *
 * The level and format are process-wide settings (set at start-up and on
 * reload, read with relaxed atomics); everything else a line needs is passed
 * in. WSG_LOG() checks the level before its arguments are evaluated, so a
 * suppressed debug line costs one load and one compare.
 */
#ifndef WSGATE_LOG_H
#define WSGATE_LOG_H

#include <stdarg.h>
#include <stdint.h>

#include <wsgate/config.h>

/* Per-connection context carried by connection lines (nginx's "*N" and
 * log->action): worker id, connection id and the phase it is in. */
typedef struct wsg_log_ctx_s {
    unsigned worker;
    uint64_t conn;
    const char *phase; /* "handshake", "connecting", "relaying", "closing" */
} wsg_log_ctx_t;

void wsg_log_configure(wsg_log_level_t level, wsg_log_format_t format);
wsg_log_level_t wsg_log_threshold(void);
wsg_log_format_t wsg_log_format(void);

/* Parses "debug"/"info"/"warn"/"error" (-1 if unknown). */
int wsg_log_level_parse(const char *s);
const char *wsg_log_level_name(wsg_log_level_t level);

#if defined(__GNUC__)
#define WSG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define WSG_PRINTF(a, b)
#endif

/* Writes one line. <module> is a short name ("listener"); <ctx> may be NULL.
 * Use the macros, which skip the call (and argument evaluation) when the
 * level is below the threshold. */
void wsg_log_write(wsg_log_level_t level, const char *module, const wsg_log_ctx_t *ctx,
                   const char *fmt, ...) WSG_PRINTF(4, 5);

#define WSG_LOG(level, module, ...)                                                    \
    do {                                                                               \
        if ((level) >= wsg_log_threshold())                                            \
            wsg_log_write((level), (module), NULL, __VA_ARGS__);                       \
    } while (0)

#define WSG_LOG_CONN(level, module, ctx, ...)                                          \
    do {                                                                               \
        if ((level) >= wsg_log_threshold())                                            \
            wsg_log_write((level), (module), (ctx), __VA_ARGS__);                      \
    } while (0)

/* One access line per ended connection (SPEC §8). Strings may be NULL
 * ("-" in text, null in JSON). */
typedef struct wsg_access_rec_s {
    unsigned worker;
    uint64_t conn;
    const char *client;  /* "ip:port" */
    const char *listener;
    const char *route;   /* "host/prefix" of the matched route */
    const char *pool;
    const char *backend;
    const char *request; /* "METHOD /path" of an HTTP exchange, NULL for an upgrade */
    const char *upstream; /* HTTP exchange: "new" or "reused" backend connection; NULL
                             when none was used (and for an upgrade) */
    int status;          /* HTTP status of the handshake (101, 404, ...) */
    uint64_t duration_ms;
    uint64_t bytes_in, bytes_out;   /* client->backend, backend->client */
    uint64_t frames_in, frames_out;
    int close_code;      /* 0 = none */
    const char *closed_by; /* "client", "backend", "wsgate" */
    const char *reason;  /* short text, may be NULL */
} wsg_access_rec_t;

void wsg_log_access(const wsg_access_rec_t *rec);

/* Formats the current UTC time as 2026-11-24T10:00:00.123Z into <out>
 * (at least 25 bytes). */
void wsg_log_timestamp(char *out, size_t cap);

#endif /* WSGATE_LOG_H */
