/*
 * Unit tests for the configuration module (SPEC §1-2): every kind of error
 * with its exact message, the defaults, the bundled example files, address
 * parsing and resolution, and the reference count.
 *
 * Most tests parse a small JSON text with resolve = false, so that they do
 * not depend on the resolver; the resolution tests use "localhost" and the
 * reserved ".invalid" domain (RFC 6761 §6.4), which never resolves.
 */
#include <wsgate/config.h>

#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A minimal valid configuration, split so that tests can add keys to the
 * top level (TOP), the listener (LST), the route (RTE) and the pool (POOL). */
#define CONF(TOP, LST, RTE, POOL)                                                                  \
    "{" TOP "\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"" LST "}],"        \
    "\"routes\": [{\"pool\": \"p\"" RTE "}],"                                                      \
    "\"pools\": {\"p\": {\"backends\": [{\"address\": \"127.0.0.1:9001\"}]" POOL "}}}"

#define MINIMAL CONF("", "", "", "")

static const wsg_config_opts_t noresolve = {.resolve = false};
static const wsg_config_opts_t resolve = {.resolve = true};

static wsg_config_t *parse(const char *json, const wsg_config_opts_t *o,
                           wsg_config_errors_t *errs) {
    return wsg_config_parse(json, strlen(json), "wsgate.json", o, errs);
}

/* Parses <json> and asserts that it fails with exactly the <n> messages
 * <want>, in order. */
static void expect_errors(const char *json, const char *const *want, size_t n) {
    wsg_config_errors_t errs = {0};
    wsg_config_t *cfg = parse(json, &noresolve, &errs);
    ck_assert_ptr_null(cfg);
    for (size_t i = 0; i < errs.count && i < n; i++)
        ck_assert_str_eq(errs.msgs[i], want[i]);
    if (errs.count != n) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "got: %s\n", errs.msgs[i]);
    }
    ck_assert_uint_eq(errs.count, n);
    wsg_config_errors_free(&errs);
}

static void expect_error(const char *json, const char *want) {
    expect_errors(json, &want, 1);
}

static wsg_config_t *expect_ok(const char *json, const wsg_config_opts_t *o) {
    wsg_config_errors_t errs = {0};
    wsg_config_t *cfg = parse(json, o, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "unexpected: %s\n", errs.msgs[i]);
    ck_assert_uint_eq(errs.count, 0);
    ck_assert_ptr_nonnull(cfg);
    wsg_config_errors_free(&errs);
    return cfg;
}

static const char *source_dir(void) {
    const char *d = getenv("WSG_SOURCE_DIR");
    if (d != NULL && *d != '\0')
        return d;
#ifdef WSG_SOURCE_DIR
    return WSG_SOURCE_DIR;
#else
    return ".";
#endif
}

static uint16_t port_of(const wsg_sockaddr_t *a) {
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}

/* ---- syntax ------------------------------------------------------------ */

START_TEST(test_config_syntax_error_names_line_and_column) {
    expect_error("{\n  \"workers\": 1,\n  \"listeners\": [,]\n}",
                 "wsgate.json:3:17: JSON syntax error: unexpected token near ','");
}
END_TEST

START_TEST(test_config_rejects_duplicate_keys) {
    expect_error("{\"workers\": 1,\n \"workers\": 2}",
                 "wsgate.json:2:10: JSON syntax error: duplicate object key near '\"workers\"'");
}
END_TEST

START_TEST(test_config_rejects_non_object_top_level) {
    expect_error("[1]", "wsgate.json: expected a JSON object at the top level, got an array");
}
END_TEST

START_TEST(test_config_load_reports_missing_file) {
    wsg_config_errors_t errs = {0};
    ck_assert_ptr_null(wsg_config_load("/nonexistent/wsgate.json", &noresolve, &errs));
    ck_assert_uint_eq(errs.count, 1);
    ck_assert_str_eq(errs.msgs[0], "/nonexistent/wsgate.json: cannot open: "
                                   "No such file or directory");
    wsg_config_errors_free(&errs);
}
END_TEST

START_TEST(test_config_parse_without_name_uses_string) {
    wsg_config_errors_t errs = {0};
    ck_assert_ptr_null(wsg_config_parse("{}", 2, NULL, &noresolve, &errs));
    ck_assert_uint_ge(errs.count, 1);
    ck_assert_str_eq(errs.msgs[0], "<string>: listeners: missing, expected a non-empty array "
                                   "of listeners");
    wsg_config_errors_free(&errs);
}
END_TEST

/* ---- unknown keys ------------------------------------------------------ */

START_TEST(test_config_unknown_top_level_key) {
    expect_error(CONF("\"colour\": \"blue\",", "", "", ""), "wsgate.json: colour: unknown key");
}
END_TEST

START_TEST(test_config_unknown_key_hints_near_miss) {
    expect_error(CONF("\"wrokers\": 2,", "", "", ""),
                 "wsgate.json: wrokers: unknown key, did you mean \"workers\"?");
}
END_TEST

START_TEST(test_config_unknown_nested_key) {
    expect_error(CONF("", "", "", ", \"balnce\": {\"key\": \"ip\"}"),
                 "wsgate.json: pools.p.balnce: unknown key, did you mean \"balance\"?");
    expect_error(CONF("",
                      ", \"tls\": {\"cert\": \"c\", \"key\": \"k\", \"sni\": [{\"server_name\":"
                      " \"a.b\", \"cert\": \"c\", \"key\": \"k\", \"certs\": 1}]}",
                      "", ""),
                 "wsgate.json: listeners[0].tls.sni[0].certs: unknown key, did you mean "
                 "\"cert\"?");
    expect_error(CONF("\"limits\": {\"max_conections\": 5},", "", "", ""),
                 "wsgate.json: limits.max_conections: unknown key, did you mean "
                 "\"max_connections\"?");
}
END_TEST

START_TEST(test_config_accepts_and_ignores_schema_key) {
    wsg_config_t *cfg =
        expect_ok(CONF("\"$schema\": \"./wsgate.schema.json\",", "", "", ""), &noresolve);
    wsg_config_unref(cfg);
    expect_error(CONF("\"$schema\": 5,", "", "", ""),
                 "wsgate.json: [\"$schema\"]: expected a string (the URI of a JSON Schema), "
                 "got 5");
    /* Only the top level names its schema. */
    expect_error(CONF("", "", "", ", \"$schema\": \"x\""),
                 "wsgate.json: pools.p[\"$schema\"]: unknown key");
}
END_TEST

/* Keys of SPEC sections 9-12 that this parser does not implement yet are
 * refused, with a message saying so rather than "unknown key". */
START_TEST(test_config_later_keys_are_refused_as_not_implemented) {
    /* Never offered as a "did you mean" hint. */
    expect_error(CONF("", "", ", \"colr\": 1", ""),
                 "wsgate.json: routes[0].colr: unknown key");
    /* A real key is. */
    expect_error(CONF("", "", ", \"htp\": false", ""),
                 "wsgate.json: routes[0].htp: unknown key, did you mean \"http\"?");
}
END_TEST

/* SPEC §11's verifiers: parsed, sorted, defaulted, referenced by routes;
 * the key file itself is the runtime's (and -t's) to read. */
START_TEST(test_config_auth_keys) {
    wsg_config_t *cfg = expect_ok(
        CONF("\"auth\": {\"z\": {\"keys\": \"k2\"}, \"users\": {\"keys\": \"jwks.json\", "
             "\"issuer\": \"https://id\", \"audience\": \"chat\", \"leeway_ms\": 5, "
             "\"from\": [\"query:t\", \"cookie:tok\"], \"claims_to_headers\": {\"sub\": "
             "\"X-User\"}, \"close_on_expiry\": true}},"
             "\"limits\": {\"messages_per_s\": 10, \"handshakes_per_ip_per_s\": 3},",
             "", ", \"auth\": \"users\"", ", \"balance\": {\"key\": \"jwt:sub\"}"),
        &noresolve);
    ck_assert_uint_eq(cfg->nauths, 2);
    const wsg_auth_conf_t *a = &cfg->auths[cfg->routes[0].auth_index];
    ck_assert_str_eq(a->name, "users");
    ck_assert_ptr_eq(a, wsg_config_auth(cfg, "users"));
    ck_assert_str_eq(a->keys, "jwks.json");
    ck_assert_str_eq(a->issuer, "https://id");
    ck_assert_str_eq(a->audience, "chat");
    ck_assert_uint_eq(a->leeway_ms, 5);
    ck_assert(a->close_on_expiry);
    ck_assert_uint_eq(a->nfrom, 2);
    ck_assert_int_eq(a->from[0].kind, WSG_FROM_QUERY);
    ck_assert_str_eq(a->from[0].name, "t");
    ck_assert_int_eq(a->from[1].kind, WSG_FROM_COOKIE);
    ck_assert_uint_eq(a->nclaims, 1);
    ck_assert_str_eq(a->claims[0].claim, "sub");
    ck_assert_str_eq(a->claims[0].header, "X-User");
    const wsg_auth_conf_t *z = wsg_config_auth(cfg, "z");
    ck_assert_uint_eq(z->nfrom, 2); /* the default: header, subprotocol */
    ck_assert_int_eq(z->from[0].kind, WSG_FROM_HEADER);
    ck_assert_int_eq(z->from[1].kind, WSG_FROM_SUBPROTOCOL);
    ck_assert(z->issuer == NULL && z->audience == NULL && !z->close_on_expiry);
    ck_assert_int_eq(cfg->pools[0].balance.key, WSG_KEY_JWT);
    ck_assert_str_eq(cfg->pools[0].balance.key_name, "sub");
    ck_assert_uint_eq(cfg->limits.messages_per_s, 10);
    ck_assert_uint_eq(cfg->limits.handshakes_per_ip_per_s, 3);
    ck_assert_uint_eq(cfg->limits.client_bytes_per_s, 0);
    wsg_config_unref(cfg);

    expect_error(CONF("", "", ", \"auth\": \"users\"", ""),
                 "wsgate.json: routes[0].auth: expected the name of a verifier under \"auth\", "
                 "got \"users\"");
    expect_error(CONF("\"auth\": {\"a\": {}},", "", "", ""),
                 "wsgate.json: auth.a.keys: missing, expected the path of a JWKS, PEM or secret "
                 "file");
    expect_error(CONF("\"auth\": {\"a\": {\"keys\": \"k\", \"from\": [\"body\"]}},", "", "", ""),
                 "wsgate.json: auth.a.from[0]: expected \"header\", \"subprotocol\", "
                 "\"cookie:NAME\" or \"query:NAME\", got \"body\"");
    expect_error(CONF("\"auth\": {\"a\": {\"keys\": \"k\", \"from\": [\"cookie:a b\"]}},", "", "",
                      ""),
                 "wsgate.json: auth.a.from[0]: expected \"cookie:NAME\" with NAME a cookie name, "
                 "got \"cookie:a b\"");
    expect_error(CONF("\"auth\": {\"a\": {\"keys\": \"k\", \"from\": []}},", "", "", ""),
                 "wsgate.json: auth.a.from: expected a non-empty array of token sources, got an "
                 "empty array");
    expect_error(CONF("\"auth\": {\"a\": {\"keys\": \"k\", \"claims_to_headers\": "
                      "{\"sub\": \"X User\"}}},",
                      "", "", ""),
                 "wsgate.json: auth.a.claims_to_headers.sub: expected a header name, got \"X User\"");
}
END_TEST

/* SPEC §9's keys that exist: their defaults, and a route that serves
 * nothing is refused. */
START_TEST(test_config_http_keys) {
    wsg_config_t *cfg = expect_ok(MINIMAL, &noresolve);
    ck_assert(cfg->routes[0].http && cfg->routes[0].websocket);
    ck_assert_uint_eq(cfg->timeouts.keepalive_ms, 60000);
    ck_assert_uint_eq(cfg->timeouts.response_idle_ms, 120000);
    ck_assert_uint_eq(cfg->timeouts.upstream_idle_ms, 4000);
    ck_assert_uint_eq(cfg->pools[0].keepalive, 32);
    ck_assert_uint_eq(cfg->limits.max_body_bytes, 1048576);
    wsg_config_unref(cfg);
    cfg = expect_ok(CONF("\"timeouts\": {\"keepalive_ms\": 0, \"response_idle_ms\": 5,"
                         " \"upstream_idle_ms\": 7}, \"limits\": {\"max_body_bytes\": 0},",
                         "", ", \"websocket\": false", ", \"keepalive\": 0"),
                    &noresolve);
    ck_assert(cfg->routes[0].http && !cfg->routes[0].websocket);
    ck_assert_uint_eq(cfg->timeouts.keepalive_ms, 0);
    ck_assert_uint_eq(cfg->timeouts.response_idle_ms, 5);
    ck_assert_uint_eq(cfg->timeouts.upstream_idle_ms, 7);
    ck_assert_uint_eq(cfg->pools[0].keepalive, 0);
    ck_assert_uint_eq(cfg->limits.max_body_bytes, 0);
    wsg_config_unref(cfg);
    expect_error(CONF("", "", ", \"http\": false, \"websocket\": false", ""),
                 "wsgate.json: routes[0]: serves nothing: \"http\" and \"websocket\" are both "
                 "false");
    expect_error(CONF("", "", ", \"http\": 1", ""),
                 "wsgate.json: routes[0].http: expected true or false, got 1");
    cfg = expect_ok(CONF("", "", ", \"origins\": [\"HTTPS://Chat.Example.com:443\", "
                         "\"http://[::1]:8080\"], \"allow_no_origin\": true", ""),
                    &noresolve);
    ck_assert_uint_eq(cfg->routes[0].norigins, 2);
    ck_assert_str_eq(cfg->routes[0].origins[0], "https://chat.example.com");
    ck_assert_str_eq(cfg->routes[0].origins[1], "http://[::1]:8080");
    ck_assert(cfg->routes[0].allow_no_origin);
    wsg_config_unref(cfg);
    cfg = expect_ok(MINIMAL, &noresolve);
    ck_assert_ptr_null(cfg->routes[0].origins); /* not checked */
    wsg_config_unref(cfg);
    expect_error(CONF("", "", ", \"origins\": [\"https://a.com/x\"]", ""),
                 "wsgate.json: routes[0].origins[0]: an origin has no path (no trailing slash "
                 "either), got \"https://a.com/x\"");
    expect_error(CONF("\"timeouts\": {\"response_idle_ms\": 0},", "", "", ""),
                 "wsgate.json: timeouts.response_idle_ms: expected an integer from 1 to "
                 "31536000000 (milliseconds), got 0");
}
END_TEST

/* SPEC §10: balance.cookie, its defaults, its secret from the file or the
 * environment, and what -t refuses. */
START_TEST(test_config_cookie_defaults_and_env_secret) {
    wsg_config_t *cfg = expect_ok(
        CONF("", "", "", ", \"balance\": {\"cookie\": {\"secret\": \"0123456789abcdef\"}}"),
        &noresolve);
    const wsg_cookie_conf_t *ck = &cfg->pools[0].balance.cookie;
    ck_assert(ck->enabled);
    ck_assert_str_eq(ck->name, "wsg");
    ck_assert_str_eq(ck->path, "/");
    ck_assert_uint_eq(ck->secret_len, 16);
    ck_assert_int_eq(memcmp(ck->secret, "0123456789abcdef", 16), 0);
    ck_assert_uint_eq(ck->max_age_s, 0);
    ck_assert_int_eq(ck->secure, WSG_COOKIE_SECURE_AUTO);
    ck_assert_int_eq(ck->same_site, WSG_SAME_SITE_LAX);
    wsg_config_unref(cfg);

    setenv("WSG_TEST_COOKIE_SECRET", "from-the-environment-32-bytes-ok", 1);
    cfg = expect_ok(CONF("", "", "",
                         ", \"balance\": {\"cookie\": {\"name\": \"lb\", \"secret\": "
                         "\"env:WSG_TEST_COOKIE_SECRET\", \"max_age_s\": 3600, \"secure\": true, "
                         "\"same_site\": \"none\", \"path\": \"/app\"}}"),
                    &noresolve);
    ck = &cfg->pools[0].balance.cookie;
    ck_assert_str_eq(ck->name, "lb");
    ck_assert_str_eq(ck->secret, "from-the-environment-32-bytes-ok");
    ck_assert_uint_eq(ck->max_age_s, 3600);
    ck_assert_int_eq(ck->secure, WSG_COOKIE_SECURE_ON);
    ck_assert_int_eq(ck->same_site, WSG_SAME_SITE_NONE);
    ck_assert_str_eq(ck->path, "/app");
    wsg_config_unref(cfg);
    cfg = expect_ok(CONF("", "", "",
                         ", \"balance\": {\"cookie\": {\"secret\": \"0123456789abcdef\", "
                         "\"secure\": false}}"),
                    &noresolve);
    ck_assert_int_eq(cfg->pools[0].balance.cookie.secure, WSG_COOKIE_SECURE_OFF);
    wsg_config_unref(cfg);
    cfg = expect_ok(MINIMAL, &noresolve);
    ck_assert(!cfg->pools[0].balance.cookie.enabled);
    wsg_config_unref(cfg);
}
END_TEST

/* As CONF, with the pool's backends array given. */
#define CONF_B(TOP, BACKENDS, POOL)                                                                \
    "{" TOP "\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"                \
    "\"routes\": [{\"pool\": \"p\"}],"                                                           \
    "\"pools\": {\"p\": {\"backends\": [" BACKENDS "]" POOL "}}}"

/* SPEC §12's DNS discovery keys: entries with "resolve" kept apart from
 * the pool's backends and never resolved by the parser, dns.servers. */
START_TEST(test_config_dns_keys) {
    wsg_config_t *cfg = expect_ok(MINIMAL, &noresolve);
    ck_assert_uint_eq(cfg->pools[0].resolve_ms, 5000);
    ck_assert_uint_eq(cfg->pools[0].nresolves, 0);
    ck_assert_uint_eq(cfg->dns.nservers, 0);
    wsg_config_unref(cfg);
    /* A name under .invalid never resolves: with resolve it is no error. */
    cfg = expect_ok(CONF_B("\"dns\": {\"servers\": [\"127.0.0.1:5353\", \"[::1]:53\"]},",
                           "{\"address\": \"127.0.0.1:9001\"},"
                           " {\"address\": \"app.invalid:9000\", \"resolve\": true, \"weight\": 3},"
                           " {\"address\": \"other.invalid:9000\", \"resolve\": true}",
                           ", \"resolve_ms\": 0"),
                    &resolve);
    const wsg_pool_conf_t *p = &cfg->pools[0];
    ck_assert_uint_eq(p->resolve_ms, 0);
    ck_assert_uint_eq(p->nbackends, 1);
    ck_assert_str_eq(p->backends[0].address, "127.0.0.1:9001");
    ck_assert_uint_eq(p->nresolves, 2);
    ck_assert_str_eq(p->resolves[0].address, "app.invalid:9000");
    ck_assert_uint_eq(p->resolves[0].weight, 3);
    ck_assert(p->resolves[0].resolve);
    ck_assert_str_eq(p->resolves[1].address, "other.invalid:9000");
    ck_assert_uint_eq(cfg->dns.nservers, 2);
    ck_assert_str_eq(cfg->dns.servers[1], "[::1]:53");
    /* A pool of names only may have no backend yet. */
    wsg_config_t *d = wsg_config_with_backends(cfg, 0, NULL, 0);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(d->pools[0].nbackends, 0);
    ck_assert_uint_eq(d->pools[0].nresolves, 2);
    wsg_config_unref(d);
    wsg_config_unref(cfg);
    expect_error(CONF_B("", "{\"address\": \"10.0.0.1:9\", \"resolve\": true}", ""),
                 "wsgate.json: pools.p.backends[0].address: expected a host name with "
                 "\"resolve\": true, got the IP address \"10.0.0.1:9\"");
    expect_error(CONF_B("", "{\"address\": \"a.test:9\", \"resolve\": 1}", ""),
                 "wsgate.json: pools.p.backends[0].resolve: expected true or false, got 1");
    expect_error(CONF_B("", "{\"address\": \"a.test:9\", \"resolve\": true},"
                        " {\"address\": \"A.test:9\", \"resolve\": true}", ""),
                 "wsgate.json: pools.p.backends[1].address: expected a unique backend address, "
                 "got \"A.test:9\" (also backends[0])");
    expect_error(CONF("\"dns\": {\"servers\": [\"ns.example.com:53\"]},", "", "", ""),
                 "wsgate.json: dns.servers[0]: expected \"ip:port\" with an IP address, not a "
                 "name, got \"ns.example.com:53\"");
    expect_error(CONF("\"dns\": {\"servers\": []},", "", "", ""),
                 "wsgate.json: dns.servers: expected a non-empty array of \"ip:port\", got an empty "
                 "array");
    expect_error(CONF("\"dns\": {},", "", "", ""),
                 "wsgate.json: dns.servers: missing, expected a non-empty array of \"ip:port\"");
    expect_error(CONF("\"dns\": {\"servers\": [\"127.0.0.1\"]},", "", "", ""),
                 "wsgate.json: dns.servers[0]: expected \"host:port\", got \"127.0.0.1\"");
    cfg = expect_ok(CONF("\"dns\": null,", "", "", ""), &noresolve);
    ck_assert_uint_eq(cfg->dns.nservers, 0);
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_cookie_refuses_short_or_missing_secret) {
    static const char what[] =
        "expected a string of at least 16 bytes, or \"env:NAME\" naming such an environment "
        "variable";
    char want[512];
    expect_error(CONF("", "", "", ", \"balance\": {\"cookie\": {}}"),
                 "wsgate.json: pools.p.balance.cookie.secret: missing, expected a string of at "
                 "least 16 bytes, or \"env:NAME\"");
    snprintf(want, sizeof want,
             "wsgate.json: pools.p.balance.cookie.secret: %s, got a string of 15 bytes", what);
    expect_error(CONF("", "", "", ", \"balance\": {\"cookie\": {\"secret\": \"0123456789abcde\"}}"),
                 want);
    unsetenv("WSG_TEST_NO_SUCH_SECRET");
    snprintf(want, sizeof want,
             "wsgate.json: pools.p.balance.cookie.secret: %s, got \"env:WSG_TEST_NO_SUCH_SECRET\": "
             "the environment variable is not set",
             what);
    expect_error(CONF("", "", "",
                      ", \"balance\": {\"cookie\": {\"secret\": \"env:WSG_TEST_NO_SUCH_SECRET\"}}"),
                 want);
    setenv("WSG_TEST_SHORT_SECRET", "short", 1);
    snprintf(want, sizeof want,
             "wsgate.json: pools.p.balance.cookie.secret: %s, got \"env:WSG_TEST_SHORT_SECRET\": it "
             "holds 5 bytes",
             what);
    expect_error(CONF("", "", "",
                      ", \"balance\": {\"cookie\": {\"secret\": \"env:WSG_TEST_SHORT_SECRET\"}}"),
                 want);
    expect_error(CONF("", "", "",
                      ", \"balance\": {\"cookie\": {\"secret\": \"0123456789abcdef\", "
                      "\"secure\": \"yes\"}}"),
                 "wsgate.json: pools.p.balance.cookie.secure: expected \"auto\", true or false, "
                 "got \"yes\"");
    expect_error(CONF("", "", "",
                      ", \"balance\": {\"cookie\": {\"secret\": \"0123456789abcdef\", "
                      "\"path\": \"/a;b\"}}"),
                 "wsgate.json: pools.p.balance.cookie.path: expected a path of at most 512 bytes "
                 "without ';', got \"/a;b\"");
    expect_error(CONF("", "", "",
                      ", \"balance\": {\"cookie\": {\"secret\": \"0123456789abcdef\", "
                      "\"name\": \"a b\"}}"),
                 "wsgate.json: pools.p.balance.cookie.name: expected a cookie name of at most 64 "
                 "letters, digits and !#$%&'*+-.^_`|~, got \"a b\"");
}
END_TEST

/* The name a backend found by DNS is reached as (Host, TLS server name). */
START_TEST(test_config_backend_authority) {
    char out[64];
    wsg_config_backend_authority("app.svc#10.0.0.7:9000", out, sizeof(out));
    ck_assert_str_eq(out, "app.svc:9000");
    wsg_config_backend_authority("app.svc#[fd00::7]:9000", out, sizeof(out));
    ck_assert_str_eq(out, "app.svc:9000");
    wsg_config_backend_authority("10.0.0.7:9000", out, sizeof(out));
    ck_assert_str_eq(out, "10.0.0.7:9000");
    wsg_config_backend_authority("[fd00::7]:9000", out, sizeof(out));
    ck_assert_str_eq(out, "[fd00::7]:9000");
}
END_TEST

START_TEST(test_config_schema_names_table_keys_only) {
    char *s = wsg_config_schema();
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(strstr(s, "\"https://json-schema.org/draft/2020-12/schema\""));
    ck_assert_ptr_nonnull(strstr(s, "\"max_frame_bytes\""));
    ck_assert_ptr_nonnull(strstr(s, "\"additionalProperties\": false"));
    ck_assert_ptr_nonnull(strstr(s, "\"keepalive\""));
    /* A key not implemented yet is left out. */
    ck_assert_ptr_nonnull(strstr(s, "\"same_site\""));
    ck_assert_ptr_nonnull(strstr(s, "\"resolve_ms\""));
    ck_assert_int_ne(s[strlen(s) - 1], '\n');
    free(s);
}
END_TEST

START_TEST(test_config_odd_keys_are_quoted_in_paths) {
    expect_error("{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                 "\"routes\": [{\"pool\": \"a b\"}],"
                 "\"pools\": {\"a b\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]}}}",
                 "wsgate.json: pools[\"a b\"]: expected a pool name of letters, digits, '_', "
                 "'-' and '.', got \"a b\"");
}
END_TEST

/* ---- wrong types ------------------------------------------------------- */

START_TEST(test_config_wrong_type_says_what_was_found) {
    expect_error(CONF("\"workers\": \"5\",", "", "", ""),
                 "wsgate.json: workers: expected an integer from 0 to 1024 (0 = one per CPU), "
                 "got a string \"5\"");
    expect_error(CONF("", ", \"proxy_protocol\": null", "", ""),
                 "wsgate.json: listeners[0].proxy_protocol: expected true or false, got null");
    expect_error(CONF("", "", "", ", \"retries\": 1.5"),
                 "wsgate.json: pools.p.retries: expected an integer from 0 to 100, got 1.5");
    expect_error(CONF("\"timeouts\": [],", "", "", ""),
                 "wsgate.json: timeouts: expected an object, got an empty array");
    expect_error("{\"listeners\": {}, \"routes\": [{\"pool\": \"p\"}],"
                 "\"pools\": {\"p\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]}}}",
                 "wsgate.json: listeners: expected a non-empty array of listeners, got an "
                 "empty object");
    expect_error(CONF("", "", ", \"path_prefix\": 5", ""),
                 "wsgate.json: routes[0].path_prefix: expected a path starting with \"/\", "
                 "got 5");
    expect_error(CONF("", "", "", ", \"health\": 1"),
                 "wsgate.json: pools.p.health: expected null or an object, got 1");
}
END_TEST

/* ---- ranges ------------------------------------------------------------ */

START_TEST(test_config_out_of_range_values) {
    expect_error(CONF("", "", "", ", \"retries\": -5"),
                 "wsgate.json: pools.p.retries: expected an integer from 0 to 100, got -5");
    expect_error(CONF("\"workers\": 1025,", "", "", ""),
                 "wsgate.json: workers: expected an integer from 0 to 1024 (0 = one per CPU), "
                 "got 1025");
    expect_error(CONF("\"timeouts\": {\"handshake_ms\": 0},", "", "", ""),
                 "wsgate.json: timeouts.handshake_ms: expected an integer from 1 to "
                 "31536000000 (milliseconds), got 0");
    expect_error(CONF("\"limits\": {\"max_header_bytes\": 255},", "", "", ""),
                 "wsgate.json: limits.max_header_bytes: expected an integer from 256 to "
                 "1048576 (bytes), got 255");
    expect_error(CONF("\"limits\": {\"buffer_bytes\": 1073741825},", "", "", ""),
                 "wsgate.json: limits.buffer_bytes: expected an integer from 1024 to "
                 "1073741824 (bytes), got 1073741825");
    expect_error(CONF("\"limits\": {\"max_frame_bytes\": 124},", "", "", ""),
                 "wsgate.json: limits.max_frame_bytes: expected an integer >= 125 (bytes), "
                 "got 124");
    expect_error(CONF("\"limits\": {\"max_connections\": 0},", "", "", ""),
                 "wsgate.json: limits.max_connections: expected an integer >= 1, got 0");
    expect_error("{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                 "\"routes\": [{\"pool\": \"p\"}],"
                 "\"pools\": {\"p\": {\"backends\": [{\"address\": \"127.0.0.1:1\", "
                 "\"weight\": 257}]}}}",
                 "wsgate.json: pools.p.backends[0].weight: expected an integer from 1 to 256, "
                 "got 257");
    expect_error(CONF("", "", "", ", \"balance\": {\"load_factor\": 0.5}"),
                 "wsgate.json: pools.p.balance.load_factor: expected 0 or a number >= 1.0, "
                 "got 0.5");
    expect_error(CONF("", "", "", ", \"health\": {\"type\": \"tcp\", \"fall\": 0}"),
                 "wsgate.json: pools.p.health.fall: expected an integer from 1 to 1000, got 0");
    expect_error(CONF("", "", "", ", \"health\": {\"type\": \"tcp\", \"interval_ms\": 0}"),
                 "wsgate.json: pools.p.health.interval_ms: expected an integer from 1 to "
                 "31536000000 (milliseconds), got 0");
    expect_error(CONF("", "", "", ", \"connect_timeout_ms\": 0"),
                 "wsgate.json: pools.p.connect_timeout_ms: expected an integer from 1 to "
                 "31536000000 (milliseconds), got 0");
}
END_TEST

START_TEST(test_config_zero_means_never_where_allowed) {
    wsg_config_t *cfg = expect_ok(CONF("\"timeouts\": {\"idle_ms\": 0}, \"heartbeat\": "
                                       "{\"interval_ms\": 0, \"timeout_ms\": 0},"
                                       "\"limits\": {\"max_connections_per_ip\": 0},",
                                       "", "",
                                       ", \"balance\": {\"load_factor\": 0}, "
                                       "\"retries\": 0"),
                                  &noresolve);
    ck_assert_uint_eq(cfg->timeouts.idle_ms, 0);
    ck_assert_uint_eq(cfg->heartbeat.interval_ms, 0);
    ck_assert_uint_eq(cfg->heartbeat.timeout_ms, 0);
    ck_assert_uint_eq(cfg->pools[0].retries, 0);
    ck_assert(cfg->pools[0].balance.load_factor == 0.0);
    wsg_config_unref(cfg);

    /* Integers are numbers too. */
    cfg = expect_ok(CONF("", "", "", ", \"balance\": {\"load_factor\": 2}"), &noresolve);
    ck_assert(cfg->pools[0].balance.load_factor == 2.0);
    wsg_config_unref(cfg);
}
END_TEST

/* ---- addresses --------------------------------------------------------- */

START_TEST(test_config_bad_host_port) {
    const char *base = "{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                       "\"routes\": [{\"pool\": \"chat\"}],"
                       "\"pools\": {\"chat\": {\"backends\": [{\"address\": \"10.0.0.2:1\"}, "
                       "{\"address\": \"%s\"}]}}}";
    static const struct {
        const char *addr, *msg;
    } cases[] = {
        {"10.0.0.1", "expected \"host:port\", got \"10.0.0.1\""},
        {"10.0.0.1:", "expected \"host:port\", got \"10.0.0.1:\""},
        {":80", "expected \"host:port\", got \":80\""},
        {"a:8x", "expected \"host:port\", got \"a:8x\""},
        {"10.0.0.1:0", "expected \"host:port\" with a port from 1 to 65535, got \"10.0.0.1:0\""},
        {"a:65536", "expected \"host:port\" with a port from 1 to 65535, got \"a:65536\""},
        {"::1:80", "expected \"host:port\" with IPv6 addresses as \"[addr]:port\", got "
                   "\"::1:80\""},
        {"[10.0.0.1]:80", "expected \"host:port\" with brackets only around an IPv6 address, "
                          "got \"[10.0.0.1]:80\""},
        {"[::g]:80", "expected \"host:port\" with a valid IPv6 address in brackets, got "
                     "\"[::g]:80\""},
        {"10.0.0.300:80", "expected \"host:port\" with a valid host name or IP address, got "
                          "\"10.0.0.300:80\""},
        {"a b:80", "expected \"host:port\" with a valid host name or IP address, got "
                   "\"a b:80\""},
        {"-a.com:80", "expected \"host:port\" with a valid host name or IP address, got "
                      "\"-a.com:80\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[1024], want[512];
        snprintf(json, sizeof json, base, cases[i].addr);
        snprintf(want, sizeof want, "wsgate.json: pools.chat.backends[1].address: %s",
                 cases[i].msg);
        expect_error(json, want);
    }
}
END_TEST

START_TEST(test_config_missing_required_keys) {
    expect_errors("{\"listeners\": [{}], \"routes\": [{}], \"pools\": {\"p\": {}}}",
                  (const char *const[]){
                      "wsgate.json: listeners[0].name: missing, expected a name of letters, "
                      "digits, '_', '-' and '.'",
                      "wsgate.json: listeners[0].bind: missing, expected \"host:port\"",
                      "wsgate.json: routes[0].pool: missing, expected the name of a pool",
                      "wsgate.json: pools.p.backends: missing, expected a non-empty array of "
                      "backends",
                  },
                  4);
    expect_errors("{}",
                  (const char *const[]){
                      "wsgate.json: listeners: missing, expected a non-empty array of listeners",
                      "wsgate.json: routes: missing, expected a non-empty array of routes",
                      "wsgate.json: pools: missing, expected a non-empty object of pools",
                  },
                  3);
}
END_TEST

START_TEST(test_config_numeric_addresses_parse_without_resolving) {
    wsg_config_t *cfg =
        expect_ok("{\"listeners\": [{\"name\": \"v4\", \"bind\": \"0.0.0.0:8080\"},"
                  "{\"name\": \"v6\", \"bind\": \"[::]:8443\"}],"
                  "\"routes\": [{\"pool\": \"p\"}],"
                  "\"pools\": {\"p\": {\"backends\": [{\"address\": \"10.0.0.1:9000\"},"
                  "{\"address\": \"chat-2.internal:9000\"}, {\"address\": \"[fd00::1]:9001\"}]}}}",
                  &noresolve);
    ck_assert_int_eq(cfg->listeners[0].addr.ss.ss_family, AF_INET);
    ck_assert_uint_eq(cfg->listeners[0].addr.len, sizeof(struct sockaddr_in));
    ck_assert_uint_eq(port_of(&cfg->listeners[0].addr), 8080);
    ck_assert_int_eq(cfg->listeners[1].addr.ss.ss_family, AF_INET6);
    ck_assert_uint_eq(port_of(&cfg->listeners[1].addr), 8443);
    ck_assert_int_eq(cfg->pools[0].backends[0].addr.ss.ss_family, AF_INET);
    ck_assert_int_eq(cfg->pools[0].backends[1].addr.ss.ss_family, AF_UNSPEC);
    ck_assert_str_eq(cfg->pools[0].backends[1].address, "chat-2.internal:9000");
    ck_assert_int_eq(cfg->pools[0].backends[2].addr.ss.ss_family, AF_INET6);
    ck_assert_uint_eq(port_of(&cfg->pools[0].backends[2].addr), 9001);
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_resolve_localhost_and_failure) {
    const char *ok = "{\"listeners\": [{\"name\": \"l\", \"bind\": \"localhost:8080\"}],"
                     "\"admin\": {\"bind\": \"localhost:9090\"},"
                     "\"routes\": [{\"pool\": \"p\"}],"
                     "\"pools\": {\"p\": {\"backends\": [{\"address\": \"localhost:9001\"}]}}}";
    wsg_config_t *cfg = expect_ok(ok, &resolve);
    int fam = cfg->pools[0].backends[0].addr.ss.ss_family;
    ck_assert(fam == AF_INET || fam == AF_INET6);
    ck_assert_uint_eq(port_of(&cfg->pools[0].backends[0].addr), 9001);
    ck_assert_uint_eq(port_of(&cfg->listeners[0].addr), 8080);
    ck_assert_uint_eq(port_of(&cfg->admin.addr), 9090);
    ck_assert_uint_gt(cfg->pools[0].backends[0].addr.len, 0);
    wsg_config_unref(cfg);

    /* Not resolving: the name stays unresolved. */
    cfg = expect_ok(ok, &noresolve);
    ck_assert_int_eq(cfg->pools[0].backends[0].addr.ss.ss_family, AF_UNSPEC);
    wsg_config_unref(cfg);

    /* RFC 6761 §6.4: ".invalid" never resolves. The resolver's own words
     * vary (NXDOMAIN, no network), so only the part that is ours is exact. */
    const char *bad = "{\"listeners\": [{\"name\": \"l\", \"bind\": \"127.0.0.1:8080\"}],"
                      "\"routes\": [{\"pool\": \"chat\"}],"
                      "\"pools\": {\"chat\": {\"backends\": [{\"address\": \"10.0.0.1:9000\"},"
                      "{\"address\": \"chat-2.invalid:9000\"}]}}}";
    wsg_config_errors_t errs = {0};
    ck_assert_ptr_null(parse(bad, NULL, &errs));
    ck_assert_uint_eq(errs.count, 1);
    const char *want = "wsgate.json: pools.chat.backends[1].address: cannot resolve "
                       "\"chat-2.invalid\": ";
    ck_assert_msg(strncmp(errs.msgs[0], want, strlen(want)) == 0, "got: %s", errs.msgs[0]);
    ck_assert_uint_gt(strlen(errs.msgs[0]), strlen(want));
    wsg_config_errors_free(&errs);
}
END_TEST

START_TEST(test_config_split_hostport) {
    char host[64];
    uint16_t port = 0;
    ck_assert_int_eq(wsg_config_split_hostport("10.0.0.1:80", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "10.0.0.1");
    ck_assert_uint_eq(port, 80);
    ck_assert_int_eq(wsg_config_split_hostport("[::1]:65535", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_uint_eq(port, 65535);
    ck_assert_int_eq(wsg_config_split_hostport("chat-2.internal:9000", host, sizeof host, &port),
                     0);
    ck_assert_str_eq(host, "chat-2.internal");
    ck_assert_uint_eq(port, 9000);
    ck_assert_int_eq(wsg_config_split_hostport("10.0.0.1", host, sizeof host, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("::1:80", host, sizeof host, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("[::1]80", host, sizeof host, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("[]:80", host, sizeof host, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("a:0", host, sizeof host, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("a:65536", host, sizeof host, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("a:-1", host, sizeof host, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("a:99999999999999999999", host, sizeof host, &port),
                     -1);
    ck_assert_int_eq(wsg_config_split_hostport(":80", host, sizeof host, &port), -1);
    /* The host must fit the caller's buffer with its NUL. */
    ck_assert_int_eq(wsg_config_split_hostport("abcd:1", host, 4, &port), -1);
    ck_assert_int_eq(wsg_config_split_hostport("abc:1", host, 4, &port), 0);
}
END_TEST

/* ---- cross-checks ------------------------------------------------------ */

START_TEST(test_config_unknown_pool_in_route) {
    expect_error("{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                 "\"routes\": [{\"path_prefix\": \"/ws\", \"pool\": \"caht\"}],"
                 "\"pools\": {\"chat\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]}}}",
                 "wsgate.json: routes[0].pool: expected the name of a pool, got \"caht\", did "
                 "you mean \"chat\"?");
}
END_TEST

START_TEST(test_config_duplicate_listener_name_and_bind) {
    expect_errors("{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"},"
                  "{\"name\": \"public\", \"bind\": \"127.0.0.1:8081\"},"
                  "{\"name\": \"other\", \"bind\": \"127.0.0.1:08080\"}],"
                  "\"admin\": {\"bind\": \"127.0.0.1:8081\"},"
                  "\"routes\": [{\"pool\": \"p\"}],"
                  "\"pools\": {\"p\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]}}}",
                  (const char *const[]){
                      "wsgate.json: listeners[1].name: expected a unique listener name, got "
                      "\"public\" (also listeners[0])",
                      "wsgate.json: listeners[2].bind: expected an address no other listener "
                      "binds, got \"127.0.0.1:08080\" (listeners[0] binds \"127.0.0.1:8080\")",
                      "wsgate.json: admin.bind: expected an address no listener binds, got "
                      "\"127.0.0.1:8081\" (listeners[1] binds \"127.0.0.1:8081\")",
                  },
                  3);
}
END_TEST

START_TEST(test_config_duplicate_backend) {
    expect_error("{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                 "\"routes\": [{\"pool\": \"chat\"}],"
                 "\"pools\": {\"chat\": {\"backends\": [{\"address\": \"Chat-1.internal:9000\"},"
                 "{\"address\": \"10.0.0.2:9000\"}, {\"address\": \"chat-1.internal:9000\"}]}}}",
                 "wsgate.json: pools.chat.backends[2].address: expected a unique backend "
                 "address, got \"chat-1.internal:9000\" (also backends[0])");
}
END_TEST

START_TEST(test_config_shadowed_route) {
    expect_error("{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                 "\"routes\": [{\"host\": \"*.example.com\", \"pool\": \"p\"},"
                 "{\"host\": \"example.com\", \"path_prefix\": \"/ws\", \"pool\": \"p\"},"
                 "{\"host\": \"chat.example.com\", \"path_prefix\": \"/ws\", \"pool\": \"p\"}],"
                 "\"pools\": {\"p\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]}}}",
                 "wsgate.json: routes[2]: never used: routes[0] comes first and matches every "
                 "request this route matches");
}
END_TEST

/* ---- per-section validation -------------------------------------------- */

START_TEST(test_config_bad_balance_key) {
    static const struct {
        const char *key, *msg;
    } cases[] = {
        {"\"hedaer:x\"", "expected \"ip\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"jwt:CLAIM\", "
                         "got \"hedaer:x\""},
        {"\"header:\"", "expected \"header:NAME\" with NAME a header name, got \"header:\""},
        {"\"header:X User\"", "expected \"header:NAME\" with NAME a header name, got "
                              "\"header:X User\""},
        {"\"cookie:\"", "expected \"cookie:NAME\" with NAME a cookie name, got \"cookie:\""},
        {"\"query:a=b\"", "expected \"query:NAME\" with NAME a query parameter name, got "
                          "\"query:a=b\""},
        {"\"IP\"", "expected \"ip\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"jwt:CLAIM\", got "
                   "\"IP\""},
        {"null", "expected \"ip\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"jwt:CLAIM\", got "
                 "null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[1024], pool[128], want[512];
        snprintf(pool, sizeof pool, "\"balance\": {\"key\": %s}", cases[i].key);
        snprintf(json, sizeof json,
                 "{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                 "\"routes\": [{\"pool\": \"chat\"}],"
                 "\"pools\": {\"chat\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}], %s}}}",
                 pool);
        snprintf(want, sizeof want, "wsgate.json: pools.chat.balance.key: %s", cases[i].msg);
        expect_error(json, want);
    }
    expect_error(CONF("", "", "", ", \"balance\": {\"fallback\": \"roundrobin\"}"),
                 "wsgate.json: pools.p.balance.fallback: expected \"ip\" or \"random\", got "
                 "\"roundrobin\"");
}
END_TEST

START_TEST(test_config_balance_keys_parse) {
    static const struct {
        const char *key;
        wsg_key_kind_t kind;
        const char *name;
    } cases[] = {
        {"ip", WSG_KEY_IP, NULL},
        {"header:X-User-Id", WSG_KEY_HEADER, "X-User-Id"},
        {"cookie:session", WSG_KEY_COOKIE, "session"},
        {"query:user", WSG_KEY_QUERY, "user"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[1024];
        snprintf(json, sizeof json,
                 "{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
                 "\"routes\": [{\"pool\": \"p\"}],"
                 "\"pools\": {\"p\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}],"
                 "\"balance\": {\"key\": \"%s\", \"fallback\": \"random\"}}}}",
                 cases[i].key);
        wsg_config_t *cfg = expect_ok(json, &noresolve);
        ck_assert_int_eq(cfg->pools[0].balance.key, cases[i].kind);
        ck_assert_int_eq(cfg->pools[0].balance.fallback, WSG_FALLBACK_RANDOM);
        if (cases[i].name == NULL)
            ck_assert_ptr_null(cfg->pools[0].balance.key_name);
        else
            ck_assert_str_eq(cfg->pools[0].balance.key_name, cases[i].name);
        wsg_config_unref(cfg);
    }
}
END_TEST

START_TEST(test_config_bad_min_version) {
    expect_error(CONF("",
                      ", \"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\", "
                      "\"min_version\": \"1.1\"}",
                      "", ""),
                 "wsgate.json: listeners[0].tls.min_version: expected \"1.2\" or \"1.3\", "
                 "got \"1.1\"");
    expect_error(CONF("",
                      ", \"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\", "
                      "\"min_version\": 1.3}",
                      "", ""),
                 "wsgate.json: listeners[0].tls.min_version: expected \"1.2\" or \"1.3\", "
                 "got 1.3");
}
END_TEST

START_TEST(test_config_tls_and_sni) {
    expect_errors(CONF("",
                       ", \"tls\": {\"sni\": [{\"server_name\": \"a.*.com\", \"cert\": \"\"}, "
                       "{\"server_name\": \"*.Example.com\", \"cert\": \"c\", \"key\": \"k\"},"
                       "{\"server_name\": \"*.example.COM\", \"cert\": \"c\", \"key\": \"k\"}]}",
                       "", ""),
                  (const char *const[]){
                      "wsgate.json: listeners[0].tls.cert: missing, expected a non-empty string "
                      "(certificate file)",
                      "wsgate.json: listeners[0].tls.key: missing, expected a non-empty string "
                      "(private key file)",
                      "wsgate.json: listeners[0].tls.sni[0].server_name: expected a host name "
                      "or \"*.suffix\", got \"a.*.com\"",
                      "wsgate.json: listeners[0].tls.sni[0].cert: expected a non-empty string "
                      "(certificate file), got \"\"",
                      "wsgate.json: listeners[0].tls.sni[0].key: missing, expected a non-empty "
                      "string (private key file)",
                      "wsgate.json: listeners[0].tls.sni[2].server_name: expected a unique "
                      "server name, got \"*.example.com\" (also sni[1])",
                  },
                  6);

    wsg_config_t *cfg =
        expect_ok(CONF("",
                       ", \"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\", \"min_version\":"
                       " \"1.3\", \"sni\": [{\"server_name\": \"Chat.Example.COM\", "
                       "\"cert\": \"chat.pem\", \"key\": \"chat.key\"}]}",
                       "", ""),
                  &noresolve);
    const wsg_tls_conf_t *t = cfg->listeners[0].tls;
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t->cert, "c.pem");
    ck_assert_str_eq(t->key, "k.pem");
    ck_assert_int_eq(t->min_version, 0x0304);
    ck_assert_uint_eq(t->nsni, 1);
    ck_assert_str_eq(t->sni[0].server_name, "chat.example.com");
    ck_assert_str_eq(t->sni[0].cert, "chat.pem");
    ck_assert_str_eq(t->sni[0].key, "chat.key");
    wsg_config_unref(cfg);

    cfg = expect_ok(CONF("", ", \"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\"}", "", ""),
                    &noresolve);
    ck_assert_int_eq(cfg->listeners[0].tls->min_version, 0x0303);
    ck_assert_uint_eq(cfg->listeners[0].tls->nsni, 0);
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_admin) {
    expect_error(CONF("\"admin\": {\"bind\": \"127.0.0.1:9090\", \"token\": \"\"},", "", "", ""),
                 "wsgate.json: admin.token: expected null or a non-empty string of printable "
                 "characters without spaces, got \"\"");
    expect_error(CONF("\"admin\": {\"token\": \"t\"},", "", "", ""),
                 "wsgate.json: admin.bind: missing, expected \"host:port\"");
    expect_error(CONF("\"admin\": true,", "", "", ""),
                 "wsgate.json: admin: expected null or an object with \"bind\", got true");

    wsg_config_t *cfg = expect_ok(CONF("\"admin\": null,", "", "", ""), &noresolve);
    ck_assert(!cfg->admin.enabled);
    wsg_config_unref(cfg);
    cfg = expect_ok(
        CONF("\"admin\": {\"bind\": \"127.0.0.1:9090\", \"token\": \"s3cret\"},", "", "", ""),
        &noresolve);
    ck_assert(cfg->admin.enabled);
    ck_assert_str_eq(cfg->admin.bind, "127.0.0.1:9090");
    ck_assert_str_eq(cfg->admin.token, "s3cret");
    ck_assert_uint_eq(port_of(&cfg->admin.addr), 9090);
    wsg_config_unref(cfg);
    cfg = expect_ok(CONF("\"admin\": {\"bind\": \"127.0.0.1:9090\", \"token\": null},", "", "", ""),
                    &noresolve);
    ck_assert(cfg->admin.enabled);
    ck_assert_ptr_null(cfg->admin.token);
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_routes) {
    expect_errors(
        "{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
        "\"routes\": [{\"host\": \"*\", \"pool\": \"chat\"},"
        "{\"host\": \"chat.example.com:443\", \"pool\": \"chat\"},"
        "{\"path_prefix\": \"ws\", \"pool\": \"chat\"},"
        "{\"path_prefix\": \"/a b\", \"pool\": \"chat\"},"
        "{\"path_prefix\": \"/\", \"pool\": \"chta\"},"
        "{\"path_prefix\": \"/x\", \"pool\": \"zzz\"}],"
        "\"pools\": {\"chat\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]}}}",
        (const char *const[]){
            "wsgate.json: routes[0].host: expected null, a host name or \"*.suffix\", got \"*\"",
            "wsgate.json: routes[1].host: expected null, a host name or \"*.suffix\", got "
            "\"chat.example.com:443\"",
            "wsgate.json: routes[2].path_prefix: expected a path starting with \"/\", got \"ws\"",
            "wsgate.json: routes[3].path_prefix: expected a path without spaces, '?' or '#', "
            "got \"/a b\"",
            "wsgate.json: routes[4].pool: expected the name of a pool, got \"chta\", did you "
            "mean \"chat\"?",
            "wsgate.json: routes[5].pool: expected the name of a pool, got \"zzz\"",
            "wsgate.json: routes[5]: never used: routes[4] comes first and matches every "
            "request this route matches",
        },
        7);

    wsg_config_t *cfg = expect_ok(
        "{\"listeners\": [{\"name\": \"public\", \"bind\": \"127.0.0.1:8080\"}],"
        "\"routes\": [{\"host\": \"Chat.Example.com\", \"path_prefix\": \"/ws\", \"pool\": \"z\"},"
        "{\"host\": \"*.EXAMPLE.com\", \"pool\": \"a\"}, {\"host\": null, \"pool\": \"m\"}],"
        "\"pools\": {\"z\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]},"
        "\"a\": {\"backends\": [{\"address\": \"127.0.0.1:2\"}]},"
        "\"m\": {\"backends\": [{\"address\": \"127.0.0.1:3\"}]}}}",
        &noresolve);
    ck_assert_uint_eq(cfg->nroutes, 3);
    ck_assert_str_eq(cfg->routes[0].host, "chat.example.com");
    ck_assert_str_eq(cfg->routes[0].path_prefix, "/ws");
    ck_assert_str_eq(cfg->routes[1].host, "*.example.com");
    ck_assert_ptr_null(cfg->routes[2].host);
    ck_assert_str_eq(cfg->routes[2].path_prefix, "/");
    /* Pools are sorted by name and routes point into that order. */
    ck_assert_uint_eq(cfg->npools, 3);
    ck_assert_str_eq(cfg->pools[0].name, "a");
    ck_assert_str_eq(cfg->pools[1].name, "m");
    ck_assert_str_eq(cfg->pools[2].name, "z");
    ck_assert_uint_eq(cfg->routes[0].pool_index, 2);
    ck_assert_uint_eq(cfg->routes[1].pool_index, 0);
    ck_assert_uint_eq(cfg->routes[2].pool_index, 1);
    ck_assert_str_eq(cfg->routes[0].pool, "z");
    ck_assert_ptr_eq(wsg_config_pool(cfg, "m"), &cfg->pools[1]);
    ck_assert_ptr_eq(wsg_config_pool(cfg, "a"), &cfg->pools[0]);
    ck_assert_ptr_eq(wsg_config_pool(cfg, "z"), &cfg->pools[2]);
    ck_assert_ptr_null(wsg_config_pool(cfg, "b"));
    ck_assert_ptr_null(wsg_config_pool(cfg, ""));
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_health_and_pool_tls) {
    expect_errors(CONF("", "", "",
                       ", \"health\": {\"type\": \"icmp\", \"path\": \"healthz\", \"rise\": 0},"
                       "\"tls\": {\"ca\": 5, \"verify\": \"yes\", \"server_name\": \"a b\"}"),
                  (const char *const[]){
                      "wsgate.json: pools.p.health.type: expected \"tcp\", \"http\" or "
                      "\"websocket\", got \"icmp\"",
                      "wsgate.json: pools.p.health.path: expected a path starting with \"/\", "
                      "got \"healthz\"",
                      "wsgate.json: pools.p.health.rise: expected an integer from 1 to 1000, "
                      "got 0",
                      "wsgate.json: pools.p.tls.ca: expected null or a non-empty string (CA "
                      "file), got 5",
                      "wsgate.json: pools.p.tls.verify: expected true or false, got a string "
                      "\"yes\"",
                      "wsgate.json: pools.p.tls.server_name: expected null or a host name, got "
                      "\"a b\"",
                  },
                  6);
    expect_error(CONF("", "", "", ", \"health\": {\"path\": \"/h\"}"),
                 "wsgate.json: pools.p.health.type: missing, expected \"tcp\", \"http\" or "
                 "\"websocket\"");

    wsg_config_t *cfg = expect_ok(
        CONF("", "", "",
             ", \"health\": {\"type\": \"websocket\", \"path\": \"/healthz\", \"interval_ms\": "
             "500, \"timeout_ms\": 250, \"rise\": 1, \"fall\": 5},"
             "\"tls\": {\"ca\": \"ca.pem\", \"verify\": false, \"server_name\": \"Api.Internal\"}"),
        &noresolve);
    const wsg_pool_conf_t *p = &cfg->pools[0];
    ck_assert_int_eq(p->health.type, WSG_HEALTH_WEBSOCKET);
    ck_assert_str_eq(p->health.path, "/healthz");
    ck_assert_uint_eq(p->health.interval_ms, 500);
    ck_assert_uint_eq(p->health.timeout_ms, 250);
    ck_assert_uint_eq(p->health.rise, 1);
    ck_assert_uint_eq(p->health.fall, 5);
    ck_assert(p->tls.enabled);
    ck_assert_str_eq(p->tls.ca, "ca.pem");
    ck_assert(!p->tls.verify);
    ck_assert_str_eq(p->tls.server_name, "Api.Internal");
    wsg_config_unref(cfg);

    cfg = expect_ok(CONF("", "", "", ", \"health\": null, \"tls\": {}"), &noresolve);
    p = &cfg->pools[0];
    ck_assert_int_eq(p->health.type, WSG_HEALTH_NONE);
    ck_assert(p->tls.enabled);
    ck_assert_ptr_null(p->tls.ca);
    ck_assert(p->tls.verify);
    ck_assert_ptr_null(p->tls.server_name);
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_log) {
    expect_errors(
        CONF("\"log\": {\"level\": \"verbose\", \"format\": \"xml\", \"access\": 1},", "", "", ""),
        (const char *const[]){
            "wsgate.json: log.level: expected \"debug\", \"info\", \"warn\" or "
            "\"error\", got \"verbose\"",
            "wsgate.json: log.format: expected \"text\" or \"json\", got \"xml\"",
            "wsgate.json: log.access: expected true or false, got 1",
        },
        3);
    wsg_config_t *cfg =
        expect_ok(CONF("\"log\": {\"level\": \"warn\", \"format\": \"json\", \"access\": false},",
                       "", "", ""),
                  &noresolve);
    ck_assert_int_eq(cfg->log.level, WSG_LOG_WARN);
    ck_assert_int_eq(cfg->log.format, WSG_LOG_JSON);
    ck_assert(!cfg->log.access);
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_io) {
    expect_error(CONF("\"io\": \"iouring\",", "", "", ""),
                 "wsgate.json: io: expected \"auto\", \"epoll\" or \"uring\", got \"iouring\"");
    expect_error(CONF("\"io\": true,", "", "", ""),
                 "wsgate.json: io: expected \"auto\", \"epoll\" or \"uring\", got true");
    wsg_config_t *cfg = expect_ok(CONF("\"io\": \"auto\",", "", "", ""), &noresolve);
    ck_assert_int_eq(cfg->io, WSG_IO_AUTO);
    wsg_config_unref(cfg);
    cfg = expect_ok(CONF("\"io\": \"epoll\",", "", "", ""), &noresolve);
    ck_assert_int_eq(cfg->io, WSG_IO_EPOLL);
    wsg_config_unref(cfg);
    cfg = expect_ok(CONF("\"io\": \"uring\",", "", "", ""), &noresolve);
    ck_assert_int_eq(cfg->io, WSG_IO_URING);
    wsg_config_unref(cfg);
}
END_TEST

/* ---- collecting every error -------------------------------------------- */

START_TEST(test_config_collects_every_error) {
    expect_errors("{\n"
                  "  \"workers\": -1,\n"
                  "  \"listeners\": [ { \"name\": \"public\", \"bind\": \"0.0.0.0\" } ],\n"
                  "  \"routes\": [ { \"pool\": \"chat\" } ],\n"
                  "  \"pools\": { \"chat\": { \"backends\": [ { \"address\": \"10.0.0.1:1\" } ],\n"
                  "                         \"balnce\": {} } }\n"
                  "}\n",
                  (const char *const[]){
                      "wsgate.json: workers: expected an integer from 0 to 1024 (0 = one per "
                      "CPU), got -1",
                      "wsgate.json: listeners[0].bind: expected \"host:port\", got \"0.0.0.0\"",
                      "wsgate.json: pools.chat.balnce: unknown key, did you mean \"balance\"?",
                  },
                  3);
}
END_TEST

/* ---- defaults and bundled files ----------------------------------------- */

START_TEST(test_config_defaults) {
    wsg_config_t *cfg = expect_ok(MINIMAL, &noresolve);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_str_eq(cfg->path, "wsgate.json");
    ck_assert_uint_eq(cfg->workers_configured, 0);
    ck_assert_uint_eq(cfg->workers, ncpu < 1 ? 1 : ncpu > 1024 ? 1024 : (unsigned)ncpu);
    ck_assert_uint_ge(cfg->workers, 1);

    ck_assert_uint_eq(cfg->nlisteners, 1);
    const wsg_listener_conf_t *l = &cfg->listeners[0];
    ck_assert_str_eq(l->name, "public");
    ck_assert_str_eq(l->bind, "127.0.0.1:8080");
    ck_assert_ptr_null(l->tls);
    ck_assert(!l->proxy_protocol);

    ck_assert(!cfg->admin.enabled);
    ck_assert_ptr_null(cfg->admin.bind);
    ck_assert_ptr_null(cfg->admin.token);

    ck_assert_uint_eq(cfg->nroutes, 1);
    ck_assert_ptr_null(cfg->routes[0].host);
    ck_assert_str_eq(cfg->routes[0].path_prefix, "/");
    ck_assert_uint_eq(cfg->routes[0].pool_index, 0);

    ck_assert_uint_eq(cfg->npools, 1);
    const wsg_pool_conf_t *p = &cfg->pools[0];
    ck_assert_str_eq(p->name, "p");
    ck_assert_uint_eq(p->nbackends, 1);
    ck_assert_str_eq(p->backends[0].address, "127.0.0.1:9001");
    ck_assert_uint_eq(p->backends[0].weight, 1);
    ck_assert_int_eq(p->balance.key, WSG_KEY_IP);
    ck_assert_ptr_null(p->balance.key_name);
    ck_assert_int_eq(p->balance.fallback, WSG_FALLBACK_IP);
    ck_assert(p->balance.load_factor == 0.0);
    ck_assert_int_eq(p->health.type, WSG_HEALTH_NONE);
    ck_assert_str_eq(p->health.path, "/");
    ck_assert_uint_eq(p->health.interval_ms, 2000);
    ck_assert_uint_eq(p->health.timeout_ms, 1000);
    ck_assert_uint_eq(p->health.rise, 2);
    ck_assert_uint_eq(p->health.fall, 3);
    ck_assert_uint_eq(p->connect_timeout_ms, 3000);
    ck_assert_uint_eq(p->retries, 2);
    ck_assert(!p->tls.enabled);

    ck_assert_uint_eq(cfg->timeouts.handshake_ms, 5000);
    ck_assert_uint_eq(cfg->timeouts.idle_ms, 300000);
    ck_assert_uint_eq(cfg->timeouts.drain_ms, 10000);
    ck_assert_uint_eq(cfg->heartbeat.interval_ms, 30000);
    ck_assert_uint_eq(cfg->heartbeat.timeout_ms, 10000);
    ck_assert_uint_eq(cfg->limits.max_connections, 100000);
    ck_assert_uint_eq(cfg->limits.max_connections_per_ip, 0);
    ck_assert_uint_eq(cfg->limits.max_header_bytes, 8192);
    ck_assert_uint_eq(cfg->limits.max_frame_bytes, 16777216);
    ck_assert_uint_eq(cfg->limits.buffer_bytes, 65536);
    ck_assert_int_eq(cfg->log.level, WSG_LOG_INFO);
    ck_assert_int_eq(cfg->log.format, WSG_LOG_TEXT);
    ck_assert(cfg->log.access);
    ck_assert_int_eq(cfg->io, WSG_IO_AUTO);
    wsg_config_unref(cfg);
}
END_TEST

static wsg_config_t *load_bundled(const char *rel) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", source_dir(), rel);
    wsg_config_errors_t errs = {0};
    wsg_config_t *cfg = wsg_config_load(path, &noresolve, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    ck_assert_msg(cfg != NULL, "%s does not validate (WSG_SOURCE_DIR=%s)", path, source_dir());
    ck_assert_str_eq(cfg->path, path);
    wsg_config_errors_free(&errs);
    return cfg;
}

START_TEST(test_config_example_validates) {
    wsg_config_t *cfg = load_bundled("config/example.json");
    ck_assert_uint_eq(cfg->workers_configured, 0);
    ck_assert_uint_ge(cfg->nlisteners, 2);
    ck_assert(cfg->admin.enabled);
    ck_assert_uint_ge(cfg->npools, 2);
    for (size_t i = 0; i < cfg->nroutes; i++)
        ck_assert_str_eq(cfg->pools[cfg->routes[i].pool_index].name, cfg->routes[i].pool);
    wsg_config_unref(cfg);
}
END_TEST

START_TEST(test_config_demo_validates) {
    wsg_config_t *cfg = load_bundled("config/demo.json");
    ck_assert_uint_eq(cfg->workers, 1);
    ck_assert_uint_eq(cfg->nlisteners, 1);
    ck_assert_str_eq(cfg->listeners[0].name, "public");
    ck_assert_str_eq(cfg->listeners[0].bind, "127.0.0.1:8080");
    ck_assert_uint_eq(cfg->nroutes, 1);
    ck_assert_str_eq(cfg->routes[0].path_prefix, "/");
    /* One route for the demo page, its SSE, its long poll and its WebSocket. */
    ck_assert(cfg->routes[0].http);
    ck_assert(cfg->routes[0].websocket);
    const wsg_pool_conf_t *p = wsg_config_pool(cfg, "demo");
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(p->nbackends, 3);
    ck_assert_str_eq(p->backends[0].address, "127.0.0.1:9001");
    ck_assert_str_eq(p->backends[1].address, "127.0.0.1:9002");
    ck_assert_str_eq(p->backends[2].address, "127.0.0.1:9003");
    ck_assert_int_eq(p->balance.key, WSG_KEY_QUERY);
    ck_assert_str_eq(p->balance.key_name, "user");
    ck_assert_int_eq(p->balance.fallback, WSG_FALLBACK_RANDOM);
    ck_assert_uint_eq(cfg->heartbeat.interval_ms, 30000);
    ck_assert_uint_eq(cfg->timeouts.idle_ms, 300000);
    wsg_config_unref(cfg);
}
END_TEST

/* ---- reference count ---------------------------------------------------- */

START_TEST(test_config_ref_unref) {
    wsg_config_t *cfg = expect_ok(MINIMAL, &noresolve);
    ck_assert_int_eq(cfg->refcount, 1);
    ck_assert_ptr_eq(wsg_config_ref(cfg), cfg);
    ck_assert_int_eq(cfg->refcount, 2);
    wsg_config_unref(cfg);
    ck_assert_int_eq(cfg->refcount, 1);
    /* Still readable: one reference is left. */
    ck_assert_str_eq(cfg->pools[0].name, "p");
    wsg_config_unref(cfg); /* frees; ASan reports a leak or double free */
    wsg_config_unref(NULL);

    wsg_config_errors_t errs = {0};
    wsg_config_errors_free(&errs);
    wsg_config_errors_free(NULL);
    /* A NULL errors pointer discards the messages but still fails. */
    ck_assert_ptr_null(parse("{}", &noresolve, NULL));
}
END_TEST

/* SPEC §12: a backend entry of the admin API is checked by the file's own
 * parser, with its messages named from the caller's name. */
START_TEST(test_config_parse_backend_like_the_file) {
    wsg_backend_conf_t b = {0};
    wsg_config_errors_t errs = {0};
    const char *ok = "{\"address\": \"127.0.0.1:9005\", \"weight\": 7}";
    ck_assert_int_eq(wsg_config_parse_backend(ok, strlen(ok), "body", &noresolve, &b, &errs), 0);
    ck_assert_str_eq(b.address, "127.0.0.1:9005");
    ck_assert_uint_eq(b.weight, 7);
    ck_assert_int_eq(b.addr.ss.ss_family, AF_INET);
    wsg_config_backend_clear(&b);
    const char *dflt = "{\"address\": \"127.0.0.1:9005\"}";
    ck_assert_int_eq(wsg_config_parse_backend(dflt, strlen(dflt), "body", &noresolve, &b, &errs),
                     0);
    ck_assert_uint_eq(b.weight, 1);
    wsg_config_backend_clear(&b);
    const char *bad = "{\"address\": \"x\", \"weight\": 0, \"wieght\": 1}";
    ck_assert_int_eq(wsg_config_parse_backend(bad, strlen(bad), "body", &noresolve, &b, &errs),
                     -1);
    ck_assert_ptr_null(b.address);
    ck_assert_uint_eq(errs.count, 3);
    ck_assert_str_eq(errs.msgs[0], "body: wieght: unknown key, did you mean \"weight\"?");
    ck_assert_str_eq(errs.msgs[1], "body: address: expected \"host:port\", got \"x\"");
    ck_assert_str_eq(errs.msgs[2], "body: weight: expected an integer from 1 to 256, got 0");
    wsg_config_errors_free(&errs);
    ck_assert_int_eq(wsg_config_parse_backend("[", 1, "body", &noresolve, &b, &errs), -1);
    ck_assert_uint_eq(errs.count, 1);
    ck_assert_ptr_nonnull(strstr(errs.msgs[0], "body:1:"));
    wsg_config_errors_free(&errs);
}
END_TEST

/* A derived configuration changes one pool's backends and shares the rest;
 * deriving from a derived one keeps the original as the only base, and
 * each frees independently. */
START_TEST(test_config_with_backends) {
    const char *json = CONF("", "", "", "}, \"q\": {\"backends\": [{\"address\": \"127.0.0.1:9100\"}]");
    wsg_config_t *cfg = expect_ok(json, &noresolve);
    const wsg_pool_conf_t *p = wsg_config_pool(cfg, "p");
    ck_assert_int_eq(wsg_config_find_backend(p, "127.0.0.1:9001"), 0);
    ck_assert_int_eq(wsg_config_find_backend(p, "127.0.0.1:9002"), -1);
    wsg_backend_conf_t bs[2] = {p->backends[0], {.address = "127.0.0.1:9002", .weight = 5}};
    wsg_config_t *d1 = wsg_config_with_backends(cfg, (size_t)(p - cfg->pools), bs, 2);
    ck_assert_ptr_nonnull(d1);
    const wsg_pool_conf_t *dp = wsg_config_pool(d1, "p");
    ck_assert_uint_eq(dp->nbackends, 2);
    ck_assert_str_eq(dp->backends[1].address, "127.0.0.1:9002");
    ck_assert_ptr_ne(dp->backends[1].address, bs[1].address); /* copied */
    ck_assert_ptr_eq(d1->routes, cfg->routes);                /* shared */
    ck_assert_ptr_eq(wsg_config_pool(d1, "q")->backends, wsg_config_pool(cfg, "q")->backends);
    const wsg_pool_conf_t *q = wsg_config_pool(d1, "q");
    wsg_backend_conf_t qs[1] = {{.address = "127.0.0.1:9101", .weight = 1}};
    wsg_config_t *d2 = wsg_config_with_backends(d1, (size_t)(q - d1->pools), qs, 1);
    ck_assert_ptr_eq(d2->base, cfg);
    wsg_config_unref(cfg);
    wsg_config_unref(d1); /* d2 keeps its own copy of p's two backends */
    ck_assert_str_eq(wsg_config_pool(d2, "p")->backends[1].address, "127.0.0.1:9002");
    ck_assert_str_eq(wsg_config_pool(d2, "q")->backends[0].address, "127.0.0.1:9101");
    ck_assert_str_eq(d2->routes[0].pool, "p");
    wsg_config_unref(d2);
}
END_TEST

START_TEST(test_config_rebalance) {
    wsg_config_t *cfg = expect_ok(CONF("", "", "", ", \"rebalance\": {\"max_per_s\": 20}"),
                                  &noresolve);
    ck_assert_uint_eq(cfg->pools[0].rebalance.max_per_s, 20);
    wsg_config_unref(cfg);
    cfg = expect_ok(CONF("", "", "", ", \"rebalance\": null"), &noresolve);
    ck_assert_uint_eq(cfg->pools[0].rebalance.max_per_s, 0);
    wsg_config_unref(cfg);
    expect_error(CONF("", "", "", ", \"rebalance\": {}"),
                 "wsgate.json: pools.p.rebalance.max_per_s: missing, expected an integer from 1 "
                 "to 100000");
    expect_error(CONF("", "", "", ", \"rebalance\": {\"max_per_s\": 0}"),
                 "wsgate.json: pools.p.rebalance.max_per_s: expected an integer from 1 to "
                 "100000, got 0");
    expect_error(CONF("", "", "", ", \"rebalance\": 5"),
                 "wsgate.json: pools.p.rebalance: expected null or an object, got 5");
}
END_TEST

Suite *wsg_config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("syntax");
    tcase_add_test(tc, test_config_syntax_error_names_line_and_column);
    tcase_add_test(tc, test_config_rejects_duplicate_keys);
    tcase_add_test(tc, test_config_rejects_non_object_top_level);
    tcase_add_test(tc, test_config_load_reports_missing_file);
    tcase_add_test(tc, test_config_parse_without_name_uses_string);
    suite_add_tcase(s, tc);

    tc = tcase_create("keys");
    tcase_add_test(tc, test_config_unknown_top_level_key);
    tcase_add_test(tc, test_config_unknown_key_hints_near_miss);
    tcase_add_test(tc, test_config_unknown_nested_key);
    tcase_add_test(tc, test_config_odd_keys_are_quoted_in_paths);
    tcase_add_test(tc, test_config_accepts_and_ignores_schema_key);
    tcase_add_test(tc, test_config_later_keys_are_refused_as_not_implemented);
    tcase_add_test(tc, test_config_dns_keys);
    tcase_add_test(tc, test_config_backend_authority);
    tcase_add_test(tc, test_config_http_keys);
    tcase_add_test(tc, test_config_auth_keys);
    tcase_add_test(tc, test_config_schema_names_table_keys_only);
    tcase_add_test(tc, test_config_cookie_defaults_and_env_secret);
    tcase_add_test(tc, test_config_cookie_refuses_short_or_missing_secret);
    tcase_add_test(tc, test_config_missing_required_keys);
    suite_add_tcase(s, tc);

    tc = tcase_create("types_and_ranges");
    tcase_add_test(tc, test_config_wrong_type_says_what_was_found);
    tcase_add_test(tc, test_config_out_of_range_values);
    tcase_add_test(tc, test_config_zero_means_never_where_allowed);
    suite_add_tcase(s, tc);

    tc = tcase_create("addresses");
    tcase_add_test(tc, test_config_bad_host_port);
    tcase_add_test(tc, test_config_numeric_addresses_parse_without_resolving);
    tcase_add_test(tc, test_config_resolve_localhost_and_failure);
    tcase_add_test(tc, test_config_split_hostport);
    suite_add_tcase(s, tc);

    tc = tcase_create("cross_checks");
    tcase_add_test(tc, test_config_duplicate_listener_name_and_bind);
    tcase_add_test(tc, test_config_unknown_pool_in_route);
    tcase_add_test(tc, test_config_duplicate_backend);
    tcase_add_test(tc, test_config_shadowed_route);
    tcase_add_test(tc, test_config_collects_every_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("sections");
    tcase_add_test(tc, test_config_bad_balance_key);
    tcase_add_test(tc, test_config_balance_keys_parse);
    tcase_add_test(tc, test_config_bad_min_version);
    tcase_add_test(tc, test_config_tls_and_sni);
    tcase_add_test(tc, test_config_admin);
    tcase_add_test(tc, test_config_routes);
    tcase_add_test(tc, test_config_health_and_pool_tls);
    tcase_add_test(tc, test_config_log);
    tcase_add_test(tc, test_config_io);
    suite_add_tcase(s, tc);

    tc = tcase_create("defaults_and_files");
    tcase_add_test(tc, test_config_defaults);
    tcase_add_test(tc, test_config_example_validates);
    tcase_add_test(tc, test_config_demo_validates);
    suite_add_tcase(s, tc);

    tc = tcase_create("refcount");
    tcase_add_test(tc, test_config_ref_unref);
    tcase_add_test(tc, test_config_with_backends);
    tcase_add_test(tc, test_config_parse_backend_like_the_file);
    tcase_add_test(tc, test_config_rebalance);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
