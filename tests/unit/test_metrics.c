/*
 * Unit tests for the Prometheus text writer: the exposition is checked line
 * by line by a small validator of the text format 0.0.4 (HELP and TYPE once
 * per family and before its samples, samples of a family contiguous, metric
 * and label names legal, label values escaped, values numeric), then the
 * values that a test put into a wsg_stats_t and a hand-made runtime are
 * looked up sample by sample.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/metrics.h>

/* Bounds of a small histogram: 1 ms, 5 ms, 25 ms, 0.5 s; then +Inf. */
static const uint64_t bounds[] = {1000, 5000, 25000, 500000};
#define NB (sizeof(bounds) / sizeof(bounds[0]) + 1)

static char *render(const wsg_stats_t *st, const wsg_runtime_t *rt) {
    wsg_metrics_buf_t b = {0};
    wsg_metrics_input_t in = {
        .stats = st,
        .rt = rt,
        .hs_bounds_us = bounds,
        .hs_nbuckets = NB,
        .version = "9.8.7",
        .uptime_ms = 61500,
        .workers = 3,
    };
    ck_assert_int_eq(wsg_metrics_render(&b, &in), 0);
    ck_assert_ptr_nonnull(b.data);
    ck_assert_uint_eq(strlen(b.data), b.len);
    return b.data;
}

/* ---- a validator of the text format ------------------------------------ */

#define MAXFAM 64

typedef struct {
    char name[96];
    char type[128];
    bool help, sampled, closed;
} fam_t;

typedef struct {
    fam_t f[MAXFAM];
    int n;
    int cur; /* family of the previous sample, -1 none */
    int line;
} val_t;

static int find_fam(val_t *v, const char *name) {
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->f[i].name, name) == 0)
            return i;
    return -1;
}

static bool name_ok(const char *s, size_t n) {
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return false;
    return true;
}

/* The family a sample belongs to: for histograms, the name without
 * _bucket/_sum/_count. */
static int sample_family(val_t *v, const char *name) {
    int i = find_fam(v, name);
    if (i >= 0)
        return i;
    static const char *const suffix[] = {"_bucket", "_sum", "_count"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(name), m = strlen(suffix[k]);
        if (n > m && strcmp(name + n - m, suffix[k]) == 0) {
            char base[96];
            snprintf(base, sizeof(base), "%.*s", (int)(n - m), name);
            i = find_fam(v, base);
            if (i >= 0 && strcmp(v->f[i].type, "histogram") == 0)
                return i;
        }
    }
    return -1;
}

/* Validates one sample line; fails the test with the line on error. */
static void check_sample(val_t *v, const char *line) {
    const char *p = line;
    while (*p && *p != '{' && *p != ' ')
        p++;
    char name[96];
    ck_assert_msg((size_t)(p - line) < sizeof(name), "name too long: %s", line);
    snprintf(name, sizeof(name), "%.*s", (int)(p - line), line);
    ck_assert_msg(name_ok(name, strlen(name)), "bad metric name: %s", line);
    int fi = sample_family(v, name);
    ck_assert_msg(fi >= 0, "sample before its TYPE: %s", line);
    ck_assert_msg(v->f[fi].help, "sample without HELP: %s", line);
    ck_assert_msg(!v->f[fi].closed, "family %s split: %s", v->f[fi].name, line);
    if (v->cur >= 0 && v->cur != fi)
        v->f[v->cur].closed = true;
    v->cur = fi;
    v->f[fi].sampled = true;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            const char *ln = p;
            while (*p && *p != '=')
                p++;
            ck_assert_msg(*p == '=' && name_ok(ln, (size_t)(p - ln)), "bad label: %s", line);
            p++;
            ck_assert_msg(*p == '"', "unquoted label value: %s", line);
            p++;
            while (*p && *p != '"') {
                if (*p == '\\') {
                    p++;
                    ck_assert_msg(*p == '\\' || *p == '"' || *p == 'n', "bad escape: %s", line);
                }
                ck_assert_msg(*p != '\n', "raw newline in value: %s", line);
                p++;
            }
            ck_assert_msg(*p == '"', "unterminated label value: %s", line);
            p++;
            if (*p == ',')
                p++;
            else
                ck_assert_msg(*p == '}', "bad label list: %s", line);
        }
        p++;
    }
    ck_assert_msg(*p == ' ', "no space before value: %s", line);
    p++;
    char *end;
    strtod(p, &end);
    ck_assert_msg(end != p && *end == '\0', "bad value: %s", line);
}

static void validate(const char *text) {
    val_t v = {.cur = -1};
    const char *s = text;
    ck_assert_msg(text[strlen(text) - 1] == '\n', "exposition must end with a line feed");
    while (*s) {
        const char *nl = strchr(s, '\n');
        ck_assert_ptr_nonnull(nl);
        char line[1024];
        ck_assert_uint_lt((size_t)(nl - s), sizeof(line));
        snprintf(line, sizeof(line), "%.*s", (int)(nl - s), s);
        v.line++;
        if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
            bool help = line[2] == 'H';
            char name[96] = "", rest[128] = "";
            ck_assert_int_ge(sscanf(line + 7, "%95s %127[^\n]", name, rest), 1);
            ck_assert_msg(name_ok(name, strlen(name)), "bad name: %s", line);
            int i = find_fam(&v, name);
            if (i < 0) {
                ck_assert_int_lt(v.n, MAXFAM);
                i = v.n++;
                snprintf(v.f[i].name, sizeof(v.f[i].name), "%s", name);
            }
            ck_assert_msg(!v.f[i].sampled, "HELP/TYPE after samples: %s", line);
            if (help) {
                ck_assert_msg(!v.f[i].help, "second HELP: %s", line);
                ck_assert_msg(rest[0] != '\0', "empty HELP: %s", line);
                v.f[i].help = true;
            } else {
                ck_assert_msg(v.f[i].type[0] == '\0', "second TYPE: %s", line);
                ck_assert_msg(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0 ||
                                  strcmp(rest, "histogram") == 0,
                              "bad TYPE: %s", line);
                snprintf(v.f[i].type, sizeof(v.f[i].type), "%s", rest);
                if (strcmp(rest, "counter") == 0)
                    ck_assert_msg(strlen(name) > 6 &&
                                      strcmp(name + strlen(name) - 6, "_total") == 0,
                                  "counter without _total: %s", line);
            }
        } else {
            ck_assert_msg(line[0] != '#' && line[0] != '\0', "stray line %d: '%s'", v.line, line);
            check_sample(&v, line);
        }
        s = nl + 1;
    }
    for (int i = 0; i < v.n; i++) {
        ck_assert_msg(strncmp(v.f[i].name, "wsgate_", 7) == 0, "not wsgate_*: %s", v.f[i].name);
        ck_assert_msg(v.f[i].type[0] != '\0', "no TYPE for %s", v.f[i].name);
    }
}

/* The value of the sample written exactly as <series> ("name{labels}"), or
 * -1 if there is no such line. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *s = text; s && *s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : NULL) {
        if (strncmp(s, series, n) == 0 && s[n] == ' ')
            return strtod(s + n + 1, NULL);
    }
    return -1;
}

static bool has_line(const char *text, const char *line) {
    size_t n = strlen(line);
    for (const char *s = text; s && *s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : NULL)
        if (strncmp(s, line, n) == 0 && s[n] == '\n')
            return true;
    return false;
}

/* ---- a hand-made runtime ------------------------------------------------ */

typedef struct {
    wsg_config_t cfg;
    wsg_pool_conf_t pconf[2];
    wsg_balancer_t bal[2];
    wsg_balancer_t *balp[2];
    wsg_backend_t be[3];
    wsg_backend_t *bep0[2], *bep1[1];
    wsg_pool_counters_t counters[2];
    wsg_runtime_t rt;
} fake_rt_t;

static void fake_rt_init(fake_rt_t *f) {
    memset(f, 0, sizeof(*f));
    f->pconf[0].name = "chat";
    f->pconf[1].name = "we\"ird\\pool\nname";
    const char *addr[3] = {"127.0.0.1:9001", "[::1]:9002", "10.0.0.3:9003"};
    for (int i = 0; i < 3; i++) {
        f->be[i].address = (char *)addr[i];
        f->be[i].pool = (char *)f->pconf[i < 2 ? 0 : 1].name;
    }
    atomic_store(&f->be[0].state, WSG_BACKEND_UP);
    atomic_store(&f->be[1].state, WSG_BACKEND_DOWN);
    atomic_store(&f->be[2].state, WSG_BACKEND_DRAINING);
    atomic_store(&f->be[0].active, 5);
    atomic_store(&f->be[0].total, 42);
    atomic_store(&f->be[1].failures, 7);
    f->be[1].last_check.done = true;
    f->be[1].last_check.ok = false;
    f->be[1].last_check.ms = 1000;
    snprintf(f->be[1].last_check.error, sizeof(f->be[1].last_check.error), "timeout");
    f->be[0].last_check.done = true;
    f->be[0].last_check.ok = true;
    f->be[0].last_check.ms = 3;
    f->bep0[0] = &f->be[0];
    f->bep0[1] = &f->be[1];
    f->bep1[0] = &f->be[2];
    atomic_store(&f->counters[0].rebalanced, 4);
    f->bal[0] = (wsg_balancer_t){.conf = &f->pconf[0], .backends = f->bep0, .nbackends = 2,
                                 .counters = &f->counters[0]};
    f->bal[1] = (wsg_balancer_t){.conf = &f->pconf[1], .backends = f->bep1, .nbackends = 1,
                                 .counters = &f->counters[1]};
    f->balp[0] = &f->bal[0];
    f->balp[1] = &f->bal[1];
    f->cfg.pools = f->pconf;
    f->cfg.npools = 2;
    f->rt.cfg = &f->cfg;
    f->rt.pools = f->balp;
}

/* ---- format ------------------------------------------------------------ */

START_TEST(test_metrics_empty_stats_are_valid_exposition) {
    wsg_stats_t st;
    memset(&st, 0, sizeof(st));
    char *t = render(&st, NULL);
    validate(t);
    ck_assert(has_line(t, "# TYPE wsgate_connections_total counter"));
    ck_assert(has_line(t, "# TYPE wsgate_connections_active gauge"));
    ck_assert(has_line(t, "# TYPE wsgate_handshake_duration_seconds histogram"));
    ck_assert(has_line(t, "wsgate_build_info{version=\"9.8.7\"} 1"));
    ck_assert(has_line(t, "wsgate_uptime_seconds 61.5"));
    ck_assert(has_line(t, "wsgate_workers 3"));
    /* Series operators graph from the start exist at zero. */
    ck_assert(has_line(t, "wsgate_handshakes_total{status=\"101\"} 0"));
    ck_assert(has_line(t, "wsgate_closes_total{code=\"1000\"} 0"));
    ck_assert(has_line(t, "wsgate_closes_total{code=\"1012\"} 0"));
    ck_assert(has_line(t, "wsgate_frames_total{direction=\"client_to_backend\"} 0"));
    ck_assert(has_line(t, "wsgate_handshake_duration_seconds_count 0"));
    ck_assert(has_line(t, "# TYPE wsgate_admin_connections_shed_total counter"));
    ck_assert(has_line(t, "wsgate_admin_connections_shed_total 0"));
    ck_assert(has_line(t, "wsgate_admin_connections_refused_total 0"));
    /* No runtime: no backend samples. */
    ck_assert(strstr(t, "wsgate_backend_up{") == NULL);
    free(t);
}
END_TEST

START_TEST(test_metrics_full_exposition_is_valid) {
    wsg_stats_t st;
    fake_rt_t f;
    memset(&st, 0, sizeof(st));
    fake_rt_init(&f);
    st.handshake_status[101] = 10;
    st.handshake_status[404] = 2;
    st.closes[15] = 1;
    st.hs_latency_buckets[0] = 4;
    char *t = render(&st, &f.rt);
    validate(t);
    free(t);
}
END_TEST

START_TEST(test_metrics_label_values_are_escaped) {
    wsg_metrics_buf_t b = {0};
    const char in[] = "a\"b\\c\nd";
    wsg_metrics_escape_label(&b, in, strlen(in));
    ck_assert_str_eq(b.data, "a\\\"b\\\\c\\nd");
    wsg_metrics_buf_free(&b);

    wsg_metrics_escape_label(&b, "plain", 5);
    ck_assert_str_eq(b.data, "plain");
    wsg_metrics_buf_free(&b);

    /* A pool name with every special character, through the writer. */
    wsg_stats_t st;
    fake_rt_t f;
    memset(&st, 0, sizeof(st));
    fake_rt_init(&f);
    char *t = render(&st, &f.rt);
    validate(t);
    ck_assert(has_line(
        t, "wsgate_backend_up{pool=\"we\\\"ird\\\\pool\\nname\",backend=\"10.0.0.3:9003\"} 0"));
    free(t);
}
END_TEST

START_TEST(test_metrics_buffer_grows_past_its_first_block) {
    wsg_metrics_buf_t b = {0};
    char chunk[1000];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 50; i++)
        wsg_metrics_escape_label(&b, chunk, sizeof(chunk));
    ck_assert_uint_eq(b.len, 50000);
    ck_assert_uint_gt(b.cap, b.len);
    ck_assert_int_eq(b.oom, 0);
    ck_assert_uint_eq(strlen(b.data), 50000);
    wsg_metrics_buf_free(&b);
    ck_assert_ptr_null(b.data);
}
END_TEST

/* ---- values ------------------------------------------------------------ */

START_TEST(test_metrics_counters_carry_the_stats) {
    wsg_stats_t st;
    memset(&st, 0, sizeof(st));
    st.conns_active = 3;
    st.conns_total = 1234567890123ULL;
    st.conns_rejected = 4;
    st.frames[0] = 11;
    st.frames[1] = 12;
    st.bytes[0] = 1000;
    st.bytes[1] = 2000;
    st.heartbeat_timeouts = 5;
    st.idle_timeouts = 6;
    st.protocol_errors = 7;
    char *t = render(&st, NULL);
    ck_assert(sample(t, "wsgate_connections_active") == 3);
    ck_assert(has_line(t, "wsgate_connections_total 1234567890123"));
    ck_assert(sample(t, "wsgate_connections_rejected_total") == 4);
    ck_assert(sample(t, "wsgate_frames_total{direction=\"client_to_backend\"}") == 11);
    ck_assert(sample(t, "wsgate_frames_total{direction=\"backend_to_client\"}") == 12);
    ck_assert(sample(t, "wsgate_bytes_total{direction=\"client_to_backend\"}") == 1000);
    ck_assert(sample(t, "wsgate_bytes_total{direction=\"backend_to_client\"}") == 2000);
    ck_assert(sample(t, "wsgate_heartbeat_timeouts_total") == 5);
    ck_assert(sample(t, "wsgate_idle_timeouts_total") == 6);
    ck_assert(sample(t, "wsgate_protocol_errors_total") == 7);
    free(t);
}
END_TEST

START_TEST(test_metrics_handshakes_by_exact_status) {
    wsg_stats_t st;
    memset(&st, 0, sizeof(st));
    st.handshake_status[101] = 9;
    st.handshake_status[404] = 2;
    st.handshake_status[503] = 1;
    st.handshake_status[599] = 1;
    char *t = render(&st, NULL);
    ck_assert(sample(t, "wsgate_handshakes_total{status=\"101\"}") == 9);
    ck_assert(sample(t, "wsgate_handshakes_total{status=\"404\"}") == 2);
    ck_assert(sample(t, "wsgate_handshakes_total{status=\"503\"}") == 1);
    ck_assert(sample(t, "wsgate_handshakes_total{status=\"599\"}") == 1);
    /* Statuses never answered have no series. */
    ck_assert(sample(t, "wsgate_handshakes_total{status=\"400\"}") == -1);
    ck_assert(sample(t, "wsgate_handshakes_total{status=\"100\"}") == -1);
    free(t);
}
END_TEST

START_TEST(test_metrics_closes_by_code) {
    wsg_stats_t st;
    memset(&st, 0, sizeof(st));
    st.closes[0] = 8;  /* 1000 */
    st.closes[12] = 3; /* 1012 */
    st.closes[8] = 1;  /* 1008: not one of wsgate's own, shown once seen */
    st.closes[15] = 2; /* 4000 and the like */
    char *t = render(&st, NULL);
    ck_assert(sample(t, "wsgate_closes_total{code=\"1000\"}") == 8);
    ck_assert(sample(t, "wsgate_closes_total{code=\"1012\"}") == 3);
    ck_assert(sample(t, "wsgate_closes_total{code=\"1008\"}") == 1);
    ck_assert(sample(t, "wsgate_closes_total{code=\"other\"}") == 2);
    ck_assert(sample(t, "wsgate_closes_total{code=\"1001\"}") == 0);
    ck_assert(sample(t, "wsgate_closes_total{code=\"1011\"}") == 0);
    ck_assert(sample(t, "wsgate_closes_total{code=\"1006\"}") == -1);
    ck_assert(sample(t, "wsgate_closes_total{code=\"1003\"}") == -1);
    free(t);
}
END_TEST

START_TEST(test_metrics_histogram_buckets_are_cumulative) {
    wsg_stats_t st;
    memset(&st, 0, sizeof(st));
    /* per bucket: <=1ms 4, <=5ms 0, <=25ms 3, <=0.5s 2, +Inf 1 */
    uint64_t per[NB] = {4, 0, 3, 2, 1};
    memcpy(st.hs_latency_buckets, per, sizeof(per));
    st.hs_latency_count = 999; /* a racing snapshot: ignored for _count */
    st.hs_latency_sum_us = 2500500;
    char *t = render(&st, NULL);
    validate(t);
    const char *n = "wsgate_handshake_duration_seconds";
    char series[128];
    const char *le[NB] = {"0.001", "0.005", "0.025", "0.5", "+Inf"};
    double expect[NB] = {4, 4, 7, 9, 10};
    const char *prev = t;
    for (size_t i = 0; i < NB; i++) {
        snprintf(series, sizeof(series), "%s_bucket{le=\"%s\"}", n, le[i]);
        ck_assert_msg(sample(t, series) == expect[i], "%s", series);
        /* In ascending order of le. */
        const char *at = strstr(t, series);
        ck_assert_ptr_nonnull(at);
        ck_assert(at >= prev);
        prev = at;
    }
    snprintf(series, sizeof(series), "%s_count", n);
    ck_assert(sample(t, series) == 10);
    snprintf(series, sizeof(series), "%s_sum 2.5005", n);
    ck_assert(has_line(t, series));
    /* _sum and _count follow the buckets. */
    ck_assert(strstr(t, "wsgate_handshake_duration_seconds_sum") > prev);
    free(t);
}
END_TEST

START_TEST(test_metrics_backend_states_and_counts) {
    wsg_stats_t st;
    fake_rt_t f;
    memset(&st, 0, sizeof(st));
    fake_rt_init(&f);
    char *t = render(&st, &f.rt);
#define BE_A "pool=\"chat\",backend=\"127.0.0.1:9001\""
#define BE_B "pool=\"chat\",backend=\"[::1]:9002\""
    ck_assert(sample(t, "wsgate_backend_up{" BE_A "}") == 1);
    ck_assert(sample(t, "wsgate_backend_up{" BE_B "}") == 0);
    ck_assert(sample(t, "wsgate_backend_state{" BE_A ",state=\"up\"}") == 1);
    ck_assert(sample(t, "wsgate_backend_state{" BE_A ",state=\"down\"}") == 0);
    ck_assert(sample(t, "wsgate_backend_state{" BE_A ",state=\"draining\"}") == 0);
    ck_assert(sample(t, "wsgate_backend_state{" BE_B ",state=\"down\"}") == 1);
    ck_assert(sample(t, "wsgate_backend_state{" BE_B ",state=\"up\"}") == 0);
    ck_assert(sample(t, "wsgate_backend_state{pool=\"we\\\"ird\\\\pool\\nname\",backend=\"10.0.0.3:"
                        "9003\",state=\"draining\"}") == 1);
    ck_assert(sample(t, "wsgate_backend_active_connections{" BE_A "}") == 5);
    ck_assert(sample(t, "wsgate_backend_connections_total{" BE_A "}") == 42);
    ck_assert(sample(t, "wsgate_backend_failures_total{" BE_B "}") == 7);
    ck_assert(sample(t, "wsgate_rebalanced_total{pool=\"chat\"}") == 4);
    ck_assert(sample(t, "wsgate_backend_check_success{" BE_A "}") == 1);
    ck_assert(sample(t, "wsgate_backend_check_success{" BE_B "}") == 0);
    ck_assert(has_line(t, "wsgate_backend_check_duration_seconds{" BE_B "} 1"));
    ck_assert(has_line(t, "wsgate_backend_check_duration_seconds{" BE_A "} 0.003"));
    /* The drained backend never had a check: no check series. */
    ck_assert(strstr(t, "wsgate_backend_check_success{pool=\"we") == NULL);
#undef BE_A
#undef BE_B
    free(t);
}
END_TEST

START_TEST(test_metrics_uring_absent_on_epoll) {
    wsg_stats_t st;
    fake_rt_t f;
    memset(&st, 0, sizeof(st));
    fake_rt_init(&f);
    st.conns_total = 5;
    char *t = render(&st, &f.rt);
    validate(t);
    ck_assert_ptr_null(strstr(t, "wsgate_io_uring"));
    free(t);
}
END_TEST

START_TEST(test_metrics_uring_counters_when_a_worker_runs_on_it) {
    wsg_stats_t st;
    fake_rt_t f;
    memset(&st, 0, sizeof(st));
    fake_rt_init(&f);
    st.uring_workers = 2;
    st.uring_submits = 101;
    st.uring_cqes = 5000000000ULL; /* past 32 bits */
    st.uring_enobufs = 3;
    st.uring_sides = 4;
    st.uring_buffers = 48;
    st.uring_stashed = 16384;
    char *t = render(&st, &f.rt);
    validate(t);
    ck_assert(has_line(t, "# TYPE wsgate_io_uring_workers gauge"));
    ck_assert(has_line(t, "# TYPE wsgate_io_uring_submits_total counter"));
    ck_assert(has_line(t, "# TYPE wsgate_io_uring_completions_total counter"));
    ck_assert(has_line(t, "# TYPE wsgate_io_uring_enobufs_total counter"));
    ck_assert(has_line(t, "# TYPE wsgate_io_uring_sides gauge"));
    ck_assert(has_line(t, "# TYPE wsgate_io_uring_recv_buffers gauge"));
    ck_assert(has_line(t, "# TYPE wsgate_io_uring_stashed_bytes gauge"));
    ck_assert(has_line(t, "wsgate_io_uring_workers 2"));
    ck_assert(has_line(t, "wsgate_io_uring_submits_total 101"));
    ck_assert(has_line(t, "wsgate_io_uring_completions_total 5000000000"));
    ck_assert(has_line(t, "wsgate_io_uring_enobufs_total 3"));
    ck_assert(has_line(t, "wsgate_io_uring_sides 4"));
    ck_assert(has_line(t, "wsgate_io_uring_recv_buffers 48"));
    ck_assert(has_line(t, "wsgate_io_uring_stashed_bytes 16384"));
    free(t);

    /* On io_uring but idle: the families are there, at zero. */
    memset(&st, 0, sizeof(st));
    st.uring_workers = 1;
    t = render(&st, NULL);
    validate(t);
    ck_assert(has_line(t, "wsgate_io_uring_workers 1"));
    ck_assert(has_line(t, "wsgate_io_uring_stashed_bytes 0"));
    ck_assert(has_line(t, "wsgate_io_uring_submits_total 0"));
    free(t);
}
END_TEST

Suite *wsg_metrics_suite(void) {
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("format");
    tcase_add_test(tc, test_metrics_empty_stats_are_valid_exposition);
    tcase_add_test(tc, test_metrics_full_exposition_is_valid);
    tcase_add_test(tc, test_metrics_label_values_are_escaped);
    tcase_add_test(tc, test_metrics_buffer_grows_past_its_first_block);
    suite_add_tcase(s, tc);
    tc = tcase_create("values");
    tcase_add_test(tc, test_metrics_counters_carry_the_stats);
    tcase_add_test(tc, test_metrics_handshakes_by_exact_status);
    tcase_add_test(tc, test_metrics_closes_by_code);
    tcase_add_test(tc, test_metrics_histogram_buckets_are_cumulative);
    tcase_add_test(tc, test_metrics_backend_states_and_counts);
    tcase_add_test(tc, test_metrics_uring_absent_on_epoll);
    tcase_add_test(tc, test_metrics_uring_counters_when_a_worker_runs_on_it);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_metrics_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
