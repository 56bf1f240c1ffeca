/*
 * Unit tests for logging. stderr is replaced (dup2) by one end of a
 * SOCK_SEQPACKET socket pair, which keeps the boundary of every write(2):
 * each received packet is one write, so the tests can check both the exact
 * bytes of a line and that it was written in one call. JSON lines are also
 * parsed back with jansson, an independent parser.
 */
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include <wsgate/log.h>

#define TS_LEN 24 /* 2026-11-24T10:00:00.123Z */
#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"
#define MAX_WRITES 64

/* --- capture ---------------------------------------------------------------- */

typedef struct {
    char *data[MAX_WRITES];
    size_t len[MAX_WRITES];
    size_t n;
} writes_t;

static int cap_rd = -1, saved_stderr = -1;

static void capture_start(void) {
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ne(saved_stderr, -1);
    ck_assert_int_ne(dup2(sv[1], STDERR_FILENO), -1);
    close(sv[1]);
    cap_rd = sv[0];
}

/* Restores stderr and collects what was written, one entry per write. */
static void capture_end(writes_t *w) {
    ck_assert_int_ne(dup2(saved_stderr, STDERR_FILENO), -1);
    close(saved_stderr);
    w->n = 0;
    for (;;) {
        char buf[8192];
        ssize_t r = recv(cap_rd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r <= 0)
            break;
        ck_assert_uint_lt(w->n, MAX_WRITES);
        w->data[w->n] = malloc((size_t)r + 1);
        memcpy(w->data[w->n], buf, (size_t)r);
        w->data[w->n][r] = '\0';
        w->len[w->n] = (size_t)r;
        w->n++;
    }
    close(cap_rd);
}

static void writes_free(writes_t *w) {
    for (size_t i = 0; i < w->n; i++)
        free(w->data[i]);
    w->n = 0;
}

static int matches(const char *re, const char *s) {
    regex_t rx;
    ck_assert_int_eq(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
    int ok = regexec(&rx, s, 0, NULL, 0) == 0;
    regfree(&rx);
    return ok;
}

/* Asserts that <line> is "<timestamp> <rest>" and returns <rest>. */
static const char *after_ts(const char *line) {
    char ts[TS_LEN + 1];
    ck_assert_uint_gt(strlen(line), TS_LEN + 1);
    memcpy(ts, line, TS_LEN);
    ts[TS_LEN] = '\0';
    ck_assert_msg(matches("^" TS_RE "$", ts), "bad timestamp in: %s", line);
    ck_assert_int_eq(line[TS_LEN], ' ');
    return line + TS_LEN + 1;
}

/* Asserts that <line> starts with {"ts":"<timestamp>" and returns what follows. */
static const char *after_json_ts(const char *line) {
    ck_assert_msg(strncmp(line, "{\"ts\":\"", 7) == 0, "not a JSON line: %s", line);
    char ts[TS_LEN + 1];
    memcpy(ts, line + 7, TS_LEN);
    ts[TS_LEN] = '\0';
    ck_assert_msg(matches("^" TS_RE "$", ts), "bad timestamp in: %s", line);
    ck_assert_int_eq(line[7 + TS_LEN], '"');
    return line + 7 + TS_LEN + 1;
}

/* Parses one JSON line (which must end with exactly one newline). */
static json_t *parse_line(const char *line, size_t len) {
    json_error_t err;
    ck_assert_uint_gt(len, 0);
    ck_assert_int_eq(line[len - 1], '\n');
    ck_assert_ptr_null(memchr(line, '\n', len - 1));
    json_t *j = json_loadb(line, len - 1, JSON_ALLOW_NUL, &err);
    ck_assert_msg(j != NULL, "invalid JSON (%s) at %d: %.300s", err.text, err.position, line);
    ck_assert(json_is_object(j));
    return j;
}

static void setup(void) {
    wsg_log_configure(WSG_LOG_INFO, WSG_LOG_TEXT);
}

/* --- settings ---------------------------------------------------------------- */

START_TEST(test_log_level_parse) {
    ck_assert_int_eq(wsg_log_level_parse("debug"), WSG_LOG_DEBUG);
    ck_assert_int_eq(wsg_log_level_parse("info"), WSG_LOG_INFO);
    ck_assert_int_eq(wsg_log_level_parse("warn"), WSG_LOG_WARN);
    ck_assert_int_eq(wsg_log_level_parse("error"), WSG_LOG_ERROR);
    ck_assert_int_eq(wsg_log_level_parse("warning"), -1);
    ck_assert_int_eq(wsg_log_level_parse("INFO"), -1);
    ck_assert_int_eq(wsg_log_level_parse("info "), -1);
    ck_assert_int_eq(wsg_log_level_parse(""), -1);
    ck_assert_int_eq(wsg_log_level_parse(NULL), -1);
    for (int l = WSG_LOG_DEBUG; l <= WSG_LOG_ERROR; l++)
        ck_assert_int_eq(wsg_log_level_parse(wsg_log_level_name((wsg_log_level_t)l)), l);
    ck_assert_str_eq(wsg_log_level_name((wsg_log_level_t)42), "unknown");
}
END_TEST

START_TEST(test_log_configure_roundtrip) {
    ck_assert_int_eq(wsg_log_threshold(), WSG_LOG_INFO);
    ck_assert_int_eq(wsg_log_format(), WSG_LOG_TEXT);
    wsg_log_configure(WSG_LOG_ERROR, WSG_LOG_JSON);
    ck_assert_int_eq(wsg_log_threshold(), WSG_LOG_ERROR);
    ck_assert_int_eq(wsg_log_format(), WSG_LOG_JSON);
    wsg_log_configure(WSG_LOG_DEBUG, WSG_LOG_TEXT);
    ck_assert_int_eq(wsg_log_threshold(), WSG_LOG_DEBUG);
    ck_assert_int_eq(wsg_log_format(), WSG_LOG_TEXT);
}
END_TEST

START_TEST(test_log_timestamp_format) {
    char ts[32];
    wsg_log_timestamp(ts, sizeof(ts));
    ck_assert_uint_eq(strlen(ts), TS_LEN);
    ck_assert_msg(matches("^" TS_RE "$", ts), "bad timestamp %s", ts);

    /* It is UTC "now": parse it back and compare with time(). The bound is
     * generous; this checks the time zone and fields, not speed. */
    struct tm tm = {0};
    ck_assert_ptr_nonnull(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t parsed = timegm(&tm);
    time_t now = time(NULL);
    ck_assert_int_le(labs((long)(now - parsed)), 60);

    /* The documented minimum of 25 bytes is enough. */
    char exact[25];
    wsg_log_timestamp(exact, sizeof(exact));
    ck_assert_uint_eq(strlen(exact), TS_LEN);

    /* A smaller buffer gets a truncated, terminated string. */
    char small[8];
    memset(small, 'x', sizeof(small));
    wsg_log_timestamp(small, sizeof(small));
    ck_assert_uint_eq(strlen(small), 7);
    wsg_log_timestamp(small, 0); /* writes nothing */
}
END_TEST

/* --- level filtering ------------------------------------------------------------ */

static int evaluated;
static int bump(void) {
    return ++evaluated;
}

START_TEST(test_log_macro_skips_arguments_below_threshold) {
    writes_t w;
    wsg_log_ctx_t ctx = {.worker = 1, .conn = 2, .phase = "relaying"};
    evaluated = 0;
    wsg_log_configure(WSG_LOG_WARN, WSG_LOG_TEXT);
    capture_start();
    WSG_LOG(WSG_LOG_DEBUG, "test", "n=%d", bump());
    WSG_LOG(WSG_LOG_INFO, "test", "n=%d", bump());
    WSG_LOG_CONN(WSG_LOG_INFO, "test", &ctx, "n=%d", bump());
    capture_end(&w);
    ck_assert_int_eq(evaluated, 0);
    ck_assert_uint_eq(w.n, 0);

    capture_start();
    WSG_LOG(WSG_LOG_WARN, "test", "n=%d", bump());
    WSG_LOG_CONN(WSG_LOG_ERROR, "test", &ctx, "n=%d", bump());
    capture_end(&w);
    ck_assert_int_eq(evaluated, 2);
    ck_assert_uint_eq(w.n, 2);
    ck_assert_str_eq(after_ts(w.data[0]), "warn test n=1\n");
    ck_assert_str_eq(after_ts(w.data[1]), "error test [w1 #2 relaying] n=2\n");
    writes_free(&w);
}
END_TEST

START_TEST(test_log_threshold_levels) {
    static const char *const want[4][4] = {
        /* threshold debug */ {"debug", "info", "warn", "error"},
        /* threshold info  */ {"info", "warn", "error", NULL},
        /* threshold warn  */ {"warn", "error", NULL, NULL},
        /* threshold error */ {"error", NULL, NULL, NULL},
    };
    for (int t = WSG_LOG_DEBUG; t <= WSG_LOG_ERROR; t++) {
        writes_t w;
        wsg_log_configure((wsg_log_level_t)t, WSG_LOG_TEXT);
        capture_start();
        WSG_LOG(WSG_LOG_DEBUG, "m", "x");
        WSG_LOG(WSG_LOG_INFO, "m", "x");
        WSG_LOG(WSG_LOG_WARN, "m", "x");
        WSG_LOG(WSG_LOG_ERROR, "m", "x");
        capture_end(&w);
        size_t expect = 0;
        while (expect < 4 && want[t][expect] != NULL)
            expect++;
        ck_assert_uint_eq(w.n, expect);
        for (size_t i = 0; i < w.n; i++) {
            char line[64];
            snprintf(line, sizeof(line), "%s m x\n", want[t][i]);
            ck_assert_str_eq(after_ts(w.data[i]), line);
        }
        writes_free(&w);
    }
}
END_TEST

/* --- text format ---------------------------------------------------------------- */

START_TEST(test_log_text_format) {
    writes_t w;
    capture_start();
    WSG_LOG(WSG_LOG_INFO, "listener", "%s bound %s", "public", "0.0.0.0:8080");
    capture_end(&w);
    ck_assert_uint_eq(w.n, 1);
    ck_assert_msg(matches("^" TS_RE " info listener public bound 0\\.0\\.0\\.0:8080\n$", w.data[0]),
                  "got: %s", w.data[0]);
    ck_assert_str_eq(after_ts(w.data[0]), "info listener public bound 0.0.0.0:8080\n");
    writes_free(&w);
}
END_TEST

START_TEST(test_log_text_with_ctx) {
    writes_t w;
    wsg_log_ctx_t ctx = {.worker = 0, .conn = 17, .phase = "relaying"};
    wsg_log_ctx_t nophase = {.worker = 3, .conn = UINT64_MAX, .phase = NULL};
    capture_start();
    WSG_LOG_CONN(WSG_LOG_WARN, "relay", &ctx, "backend closed without close frame");
    WSG_LOG_CONN(WSG_LOG_INFO, "conn", &nophase, "bye");
    WSG_LOG_CONN(WSG_LOG_INFO, "conn", NULL, "no ctx");
    wsg_log_write(WSG_LOG_INFO, NULL, NULL, "no module");
    capture_end(&w);
    ck_assert_uint_eq(w.n, 4);
    ck_assert_str_eq(after_ts(w.data[0]),
                     "warn relay [w0 #17 relaying] backend closed without close frame\n");
    ck_assert_str_eq(after_ts(w.data[1]), "info conn [w3 #18446744073709551615] bye\n");
    ck_assert_str_eq(after_ts(w.data[2]), "info conn no ctx\n");
    ck_assert_str_eq(after_ts(w.data[3]), "info - no module\n");
    writes_free(&w);
}
END_TEST

START_TEST(test_log_text_escapes_control_chars) {
    writes_t w;
    capture_start();
    /* A forged second line must not become one. */
    WSG_LOG(WSG_LOG_INFO, "handshake", "path=%s",
            "/a\r\n2026-01-01T00:00:00.000Z error x\ty\x01\x7f");
    WSG_LOG(WSG_LOG_INFO, "m", "q=\"%s\" \\ é", "v");
    WSG_LOG(WSG_LOG_INFO, "m", "a%cb", 0);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 3);
    ck_assert_str_eq(
        after_ts(w.data[0]),
        "info handshake path=/a\\r\\n2026-01-01T00:00:00.000Z error x\\ty\\x01\\x7f\n");
    /* Outside quoted fields, quotes, backslashes and UTF-8 are left alone. */
    ck_assert_str_eq(after_ts(w.data[1]), "info m q=\"v\" \\ é\n");
    ck_assert_str_eq(after_ts(w.data[2]), "info m a\\x00b\n");
    writes_free(&w);
}
END_TEST

START_TEST(test_log_text_truncates_long_message) {
    writes_t w;
    size_t n = 10000;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    capture_start();
    WSG_LOG(WSG_LOG_INFO, "m", "%s", big);
    WSG_LOG(WSG_LOG_INFO, "m", "after");
    capture_end(&w);
    ck_assert_uint_eq(w.n, 2); /* one write each, however long */
    ck_assert_uint_le(w.len[0], 4096);
    ck_assert_uint_ge(w.len[0], 4000);
    ck_assert_str_eq(w.data[0] + w.len[0] - 5, "a...\n");
    ck_assert_ptr_null(memchr(w.data[0], '\n', w.len[0] - 1));
    ck_assert_str_eq(after_ts(w.data[1]), "info m after\n");
    writes_free(&w);

    /* Cut in a run of escapes: never half an escape before the "...". */
    memset(big, '\x01', n);
    capture_start();
    WSG_LOG(WSG_LOG_INFO, "m", "%s", big);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 1);
    ck_assert_uint_le(w.len[0], 4096);
    ck_assert_msg(matches("^" TS_RE " info m (\\\\x01)+\\.\\.\\.\n$", w.data[0]), "got: %.80s",
                  w.data[0]);
    writes_free(&w);
    free(big);
}
END_TEST

/* --- JSON format ---------------------------------------------------------------- */

START_TEST(test_log_json_format) {
    writes_t w;
    wsg_log_ctx_t ctx = {.worker = 0, .conn = 17, .phase = "relaying"};
    wsg_log_ctx_t nophase = {.worker = 2, .conn = 5, .phase = NULL};
    wsg_log_configure(WSG_LOG_INFO, WSG_LOG_JSON);
    capture_start();
    WSG_LOG(WSG_LOG_INFO, "listener", "public bound %s", "0.0.0.0:8080");
    WSG_LOG_CONN(WSG_LOG_WARN, "relay", &ctx, "backend closed without close frame");
    WSG_LOG_CONN(WSG_LOG_ERROR, "conn", &nophase, "x");
    wsg_log_write(WSG_LOG_INFO, NULL, NULL, "m");
    capture_end(&w);
    ck_assert_uint_eq(w.n, 4);
    ck_assert_str_eq(after_json_ts(w.data[0]), ",\"level\":\"info\",\"module\":\"listener\","
                                               "\"msg\":\"public bound 0.0.0.0:8080\"}\n");
    ck_assert_str_eq(after_json_ts(w.data[1]),
                     ",\"level\":\"warn\",\"module\":\"relay\","
                     "\"msg\":\"backend closed without close frame\","
                     "\"worker\":0,\"conn\":17,\"phase\":\"relaying\"}\n");
    ck_assert_str_eq(after_json_ts(w.data[2]),
                     ",\"level\":\"error\",\"module\":\"conn\",\"msg\":\"x\","
                     "\"worker\":2,\"conn\":5,\"phase\":null}\n");
    ck_assert_str_eq(after_json_ts(w.data[3]),
                     ",\"level\":\"info\",\"module\":null,\"msg\":\"m\"}\n");

    json_t *j = parse_line(w.data[1], w.len[1]);
    ck_assert_str_eq(json_string_value(json_object_get(j, "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(j, "module")), "relay");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "conn")), 17);
    ck_assert_str_eq(json_string_value(json_object_get(j, "phase")), "relaying");
    ck_assert(matches("^" TS_RE "$", json_string_value(json_object_get(j, "ts"))));
    json_decref(j);
    writes_free(&w);
}
END_TEST

START_TEST(test_log_json_escaping) {
    /* Quotes, backslashes, every kind of control character, valid UTF-8 of
     * each length, then bytes that are not UTF-8: a lone continuation byte,
     * 0xff, an overlong '/', a UTF-16 surrogate, a code point past U+10FFFF
     * and a sequence cut short at the end. */
    static const char nasty[] = "q\"b\\s/\n\r\t\x01\x1f\x7f"
                                "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80"
                                "|\x80|\xff|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe6\x97";
    static const char escaped[] = "q\\\"b\\\\s/\\u000a\\u000d\\u0009\\u0001\\u001f\x7f"
                                  "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80"
                                  "|\\ufffd|\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd"
                                  "|\\ufffd\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd";
    static const char decoded[] = "q\"b\\s/\n\r\t\x01\x1f\x7f"
                                  "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80"
                                  "|\xef\xbf\xbd|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd"
                                  "|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                  "|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                  "|\xef\xbf\xbd\xef\xbf\xbd";
    writes_t w;
    wsg_log_ctx_t ctx = {.worker = 1, .conn = 2, .phase = "tls \"handshake\""};
    char want[512];

    wsg_log_configure(WSG_LOG_DEBUG, WSG_LOG_JSON);
    capture_start();
    WSG_LOG_CONN(WSG_LOG_DEBUG, "mod\"ule", &ctx, "%s", nasty);
    WSG_LOG(WSG_LOG_DEBUG, "m", "a%cb", 0);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 2);

    snprintf(want, sizeof(want),
             ",\"level\":\"debug\",\"module\":\"mod\\\"ule\",\"msg\":\"%s\","
             "\"worker\":1,\"conn\":2,\"phase\":\"tls \\\"handshake\\\"\"}\n",
             escaped);
    ck_assert_str_eq(after_json_ts(w.data[0]), want);

    /* jansson rejects invalid UTF-8 and raw control characters, so this
     * also proves the line is valid JSON. */
    json_t *j = parse_line(w.data[0], w.len[0]);
    ck_assert_str_eq(json_string_value(json_object_get(j, "msg")), decoded);
    ck_assert_str_eq(json_string_value(json_object_get(j, "module")), "mod\"ule");
    ck_assert_str_eq(json_string_value(json_object_get(j, "phase")), "tls \"handshake\"");
    json_decref(j);

    ck_assert_str_eq(after_json_ts(w.data[1]),
                     ",\"level\":\"debug\",\"module\":\"m\",\"msg\":\"a\\u0000b\"}\n");
    j = parse_line(w.data[1], w.len[1]);
    ck_assert_uint_eq(json_string_length(json_object_get(j, "msg")), 3);
    json_decref(j);
    writes_free(&w);
}
END_TEST

START_TEST(test_log_json_truncates_long_message) {
    /* Long messages of plain bytes, of escapes, and of 4-byte characters
     * are cut on a character boundary; the line stays valid JSON and keeps
     * its context fields. */
    static const char *const fills[] = {"a", "\x01", "\"", "\xf0\x9f\x98\x80", "\xff"};
    size_t n = 12000;
    char *big = malloc(n + 1);
    /* jansson's integers are signed 64-bit, so no UINT64_MAX here. */
    wsg_log_ctx_t ctx = {.worker = 4294967295u, .conn = INT64_MAX, .phase = "relaying"};
    wsg_log_configure(WSG_LOG_INFO, WSG_LOG_JSON);

    for (size_t f = 0; f < sizeof(fills) / sizeof(fills[0]); f++) {
        size_t fl = strlen(fills[f]);
        for (size_t i = 0; i + fl <= n; i += fl)
            memcpy(big + i, fills[f], fl);
        big[n - n % fl] = '\0';

        writes_t w;
        capture_start();
        WSG_LOG_CONN(WSG_LOG_INFO, "relay", &ctx, "%s", big);
        capture_end(&w);
        ck_assert_uint_eq(w.n, 1);
        ck_assert_uint_le(w.len[0], 4096);
        ck_assert_uint_ge(w.len[0], 3500);
        json_t *j = parse_line(w.data[0], w.len[0]);
        const char *msg = json_string_value(json_object_get(j, "msg"));
        ck_assert_ptr_nonnull(msg);
        size_t ml = strlen(msg);
        ck_assert_uint_gt(ml, 3);
        ck_assert_str_eq(msg + ml - 3, "...");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "conn")), INT64_MAX);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 4294967295);
        ck_assert_str_eq(json_string_value(json_object_get(j, "phase")), "relaying");
        json_decref(j);
        writes_free(&w);
    }
    free(big);
}
END_TEST

/* --- access lines ---------------------------------------------------------------- */

static const wsg_access_rec_t full_rec = {
    .worker = 1,
    .conn = 42,
    .client = "1.2.3.4:5678",
    .listener = "public",
    .route = "/",
    .pool = "chat",
    .backend = "10.0.0.11:9000",
    .status = 101,
    .duration_ms = 1234,
    .bytes_in = 10,
    .bytes_out = 20,
    .frames_in = 1,
    .frames_out = 2,
    .close_code = 1000,
    .closed_by = "client",
    .reason = NULL,
};

START_TEST(test_log_access_text) {
    writes_t w;
    wsg_access_rec_t rec = full_rec;
    wsg_access_rec_t bare = {.status = 404, .reason = "no \"route\" \\ here\n"};

    /* Access lines ignore the level threshold: the caller decides. */
    wsg_log_configure(WSG_LOG_ERROR, WSG_LOG_TEXT);
    capture_start();
    wsg_log_access(&rec);
    rec.reason = "idle timeout";
    rec.close_code = 1001;
    rec.closed_by = "wsgate";
    wsg_log_access(&rec);
    wsg_log_access(&bare);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 3);
    ck_assert_str_eq(after_ts(w.data[0]),
                     "info access client=1.2.3.4:5678 listener=public route=/ pool=chat "
                     "backend=10.0.0.11:9000 status=101 duration_ms=1234 bytes_in=10 "
                     "bytes_out=20 frames_in=1 frames_out=2 close=1000 closed_by=client\n");
    ck_assert_str_eq(after_ts(w.data[1]),
                     "info access client=1.2.3.4:5678 listener=public route=/ pool=chat "
                     "backend=10.0.0.11:9000 status=101 duration_ms=1234 bytes_in=10 "
                     "bytes_out=20 frames_in=1 frames_out=2 close=1001 closed_by=wsgate "
                     "reason=\"idle timeout\"\n");
    ck_assert_str_eq(after_ts(w.data[2]),
                     "info access client=- listener=- route=- pool=- backend=- status=404 "
                     "duration_ms=0 bytes_in=0 bytes_out=0 frames_in=0 frames_out=0 close=- "
                     "closed_by=- reason=\"no \\\"route\\\" \\\\ here\\n\"\n");
    writes_free(&w);
}
END_TEST

START_TEST(test_log_access_json) {
    writes_t w;
    wsg_access_rec_t rec = full_rec;
    wsg_access_rec_t bare = {.status = 404, .reason = "bad \"x\"\x01"};
    rec.bytes_in = UINT64_MAX;

    wsg_log_configure(WSG_LOG_ERROR, WSG_LOG_JSON);
    capture_start();
    wsg_log_access(&rec);
    wsg_log_access(&bare);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 2);
    ck_assert_str_eq(after_json_ts(w.data[0]),
                     ",\"level\":\"info\",\"module\":\"access\",\"client\":\"1.2.3.4:5678\","
                     "\"listener\":\"public\",\"route\":\"/\",\"pool\":\"chat\","
                     "\"backend\":\"10.0.0.11:9000\",\"status\":101,\"duration_ms\":1234,"
                     "\"bytes_in\":18446744073709551615,\"bytes_out\":20,\"frames_in\":1,"
                     "\"frames_out\":2,\"close\":1000,\"closed_by\":\"client\",\"reason\":null,"
                     "\"worker\":1,\"conn\":42}\n");
    ck_assert_str_eq(after_json_ts(w.data[1]),
                     ",\"level\":\"info\",\"module\":\"access\",\"client\":null,"
                     "\"listener\":null,\"route\":null,\"pool\":null,\"backend\":null,"
                     "\"status\":404,\"duration_ms\":0,\"bytes_in\":0,\"bytes_out\":0,"
                     "\"frames_in\":0,\"frames_out\":0,\"close\":null,\"closed_by\":null,"
                     "\"reason\":\"bad \\\"x\\\"\\u0001\",\"worker\":0,\"conn\":0}\n");

    json_t *j = parse_line(w.data[1], w.len[1]);
    ck_assert(json_is_null(json_object_get(j, "client")));
    ck_assert(json_is_null(json_object_get(j, "close")));
    ck_assert(json_is_integer(json_object_get(j, "status")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), 404);
    ck_assert_str_eq(json_string_value(json_object_get(j, "reason")), "bad \"x\"\x01");
    json_decref(j);
    writes_free(&w);
}
END_TEST

START_TEST(test_log_access_long_fields_stay_valid) {
    /* Oversized strings are cut, but the line keeps every key and stays
     * one valid JSON object within one write. */
    char *big = malloc(5001);
    memset(big, 'r', 5000);
    big[5000] = '\0';
    wsg_access_rec_t rec = full_rec;
    rec.client = rec.listener = rec.route = rec.pool = rec.backend = rec.closed_by = big;
    rec.reason = big;
    writes_t w;

    wsg_log_configure(WSG_LOG_INFO, WSG_LOG_JSON);
    capture_start();
    wsg_log_access(&rec);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 1);
    ck_assert_uint_le(w.len[0], 4096);
    json_t *j = parse_line(w.data[0], w.len[0]);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "conn")), 42);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "close")), 1000);
    json_decref(j);
    writes_free(&w);

    wsg_log_configure(WSG_LOG_INFO, WSG_LOG_TEXT);
    capture_start();
    wsg_log_access(&rec);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 1);
    ck_assert_uint_le(w.len[0], 4096);
    ck_assert_str_eq(w.data[0] + w.len[0] - 5, "...\"\n");
    ck_assert_ptr_nonnull(strstr(w.data[0], " status=101 "));
    writes_free(&w);
    free(big);
}
END_TEST

/* --- robustness ---------------------------------------------------------------- */

START_TEST(test_log_preserves_errno) {
    writes_t w;
    capture_start();
    errno = ENOENT;
    WSG_LOG(WSG_LOG_INFO, "m", "x");
    ck_assert_int_eq(errno, ENOENT);
    errno = EAGAIN;
    wsg_log_access(&full_rec);
    ck_assert_int_eq(errno, EAGAIN);
    capture_end(&w);
    ck_assert_uint_eq(w.n, 2);
    writes_free(&w);
}
END_TEST

/* Several threads log at once into a pipe-like sink (a temporary file here,
 * so nobody has to drain it concurrently); every line must come out whole. */
enum { THREADS = 4, LINES_PER_THREAD = 200 };

static void *log_thread(void *arg) {
    unsigned id = (unsigned)(size_t)arg;
    wsg_log_ctx_t ctx = {.worker = id, .conn = 0, .phase = "relaying"};
    for (unsigned i = 0; i < LINES_PER_THREAD; i++) {
        ctx.conn = i;
        WSG_LOG_CONN(WSG_LOG_INFO, "relay", &ctx, "thread %u line %u %s", id, i,
                     "padding-padding-padding-padding-padding-padding-padding-padding");
    }
    return NULL;
}

START_TEST(test_log_threads_do_not_interleave) {
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ne(dup2(fileno(f), STDERR_FILENO), -1);

    pthread_t t[THREADS];
    for (size_t i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, log_thread, (void *)i), 0);
    for (size_t i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    ck_assert_int_ne(dup2(saved, STDERR_FILENO), -1);
    close(saved);
    rewind(f);

    regex_t rx;
    ck_assert_int_eq(regcomp(&rx,
                             "^" TS_RE " info relay \\[w([0-9]) #([0-9]+) relaying\\] thread "
                             "([0-9]) line ([0-9]+) (padding-){7}padding\n$",
                             REG_EXTENDED),
                     0);
    char line[512];
    unsigned count = 0, seen[THREADS] = {0};
    while (fgets(line, sizeof(line), f) != NULL) {
        regmatch_t m[5];
        ck_assert_msg(regexec(&rx, line, 5, m, 0) == 0, "mangled line: %s", line);
        unsigned w = (unsigned)atoi(line + m[1].rm_so);
        unsigned c = (unsigned)atoi(line + m[2].rm_so);
        ck_assert_uint_eq(w, (unsigned)atoi(line + m[3].rm_so));
        ck_assert_uint_eq(c, (unsigned)atoi(line + m[4].rm_so));
        ck_assert_uint_lt(w, THREADS);
        /* each thread's lines are in its own order */
        ck_assert_uint_eq(c, seen[w]);
        seen[w]++;
        count++;
    }
    regfree(&rx);
    fclose(f);
    ck_assert_uint_eq(count, THREADS * LINES_PER_THREAD);
}
END_TEST

Suite *wsg_log_suite(void) {
    Suite *s = suite_create("log");

    TCase *tc = tcase_create("settings");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_log_level_parse);
    tcase_add_test(tc, test_log_configure_roundtrip);
    tcase_add_test(tc, test_log_timestamp_format);
    suite_add_tcase(s, tc);

    tc = tcase_create("filter");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_log_macro_skips_arguments_below_threshold);
    tcase_add_test(tc, test_log_threshold_levels);
    suite_add_tcase(s, tc);

    tc = tcase_create("text");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_log_text_format);
    tcase_add_test(tc, test_log_text_with_ctx);
    tcase_add_test(tc, test_log_text_escapes_control_chars);
    tcase_add_test(tc, test_log_text_truncates_long_message);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_log_json_format);
    tcase_add_test(tc, test_log_json_escaping);
    tcase_add_test(tc, test_log_json_truncates_long_message);
    suite_add_tcase(s, tc);

    tc = tcase_create("access");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_log_access_text);
    tcase_add_test(tc, test_log_access_json);
    tcase_add_test(tc, test_log_access_long_fields_stay_valid);
    suite_add_tcase(s, tc);

    tc = tcase_create("robustness");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_log_preserves_errno);
    tcase_add_test(tc, test_log_threads_do_not_interleave);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_log_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
