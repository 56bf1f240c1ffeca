/*
 * wsgate's command line (SPEC §1): argument parsing, the one-shot commands
 * (-t, --which, --schema, -V, -h) and the exit codes. Running the proxy is
 * wsg_server_run()'s job; nothing else lives here.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <jansson.h>
#include <llhttp.h>
#include <openssl/crypto.h>
#include <uv.h>

#include <wsgate/config.h>
#include <wsgate/dns.h>
#include <wsgate/hash_ring.h>
#include <wsgate/jwt.h>
#include <wsgate/log.h>
#include <wsgate/server.h>
#include <wsgate/sticky_cookie.h>
#include <wsgate/tls.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: wsgate [-c FILE]                 run with FILE (default: ./%s, else %s)\n"
            "       wsgate -t -c FILE                check FILE and exit\n"
            "       wsgate --which KEY [-p POOL] -c FILE\n"
            "                                        print the backend sticky key KEY maps to\n"
            "       wsgate --which --cookie VALUE [-p POOL] -c FILE\n"
            "                                        print the backend a sticky cookie names\n"
            "       wsgate --schema                  print the JSON Schema of the configuration\n"
            "       wsgate -V | --version            print versions\n"
            "       wsgate -h | --help               this help\n"
            "\n"
            "Signals: SIGTERM/SIGINT shut down gracefully (a second one exits at once).\n"
            "Exit status: 0 ok, 1 configuration error, 2 usage error, 3 start-up failure.\n",
            WSG_CONFIG_DEFAULT_PATH, WSG_CONFIG_FALLBACK_PATH);
}

static void version(void) {
    printf("wsgate %s\n", WSG_VERSION);
    printf("libuv %s\n", uv_version_string());
    printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    printf("jansson %s\n", JANSSON_VERSION);
    printf("c-ares %s\n", ares_version(NULL));
}

/* --schema: the JSON Schema generated from the parser's key table. */
static int schema(void) {
    char *text = wsg_config_schema();
    if (text == NULL) {
        fprintf(stderr, "wsgate: out of memory\n");
        return WSG_EXIT_STARTUP;
    }
    printf("%s\n", text);
    free(text);
    return fflush(stdout) == 0 ? WSG_EXIT_OK : WSG_EXIT_STARTUP;
}

static const char *default_config(void) {
    if (access(WSG_CONFIG_DEFAULT_PATH, F_OK) == 0)
        return WSG_CONFIG_DEFAULT_PATH;
    return WSG_CONFIG_FALLBACK_PATH;
}

static wsg_config_t *load(const char *path, bool resolve) {
    wsg_config_errors_t errs = {0};
    wsg_config_opts_t opts = {.resolve = resolve};
    wsg_config_t *cfg = wsg_config_load(path, &opts, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    wsg_config_errors_free(&errs);
    return cfg;
}

/* -t also opens every certificate, key and CA file, so a bad one is found
 * before a restart or reload trips on it. Prints each problem; returns how
 * many there were. */
static int check_tls(const wsg_config_t *cfg) {
    char err[WSG_TLS_ERR_MAX];
    int bad = 0;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        if (cfg->listeners[i].tls == NULL)
            continue;
        if (wsg_tls_check_conf(cfg->listeners[i].tls, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: listeners[%zu].tls: %s\n", cfg->path, i, err);
            bad++;
        }
    }
    for (size_t i = 0; i < cfg->npools; i++) {
        wsg_tls_ctx_t *ctx = NULL;
        if (!cfg->pools[i].tls.enabled)
            continue;
        if (wsg_tls_client_ctx_new(&cfg->pools[i].tls, &ctx, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: pools.%s.tls: %s\n", cfg->path, cfg->pools[i].name, err);
            bad++;
        }
        wsg_tls_ctx_unref(ctx);
    }
    return bad;
}

/* -t reads every verifier's key file as a start or reload would. */
static int check_auth(const wsg_config_t *cfg) {
    int bad = 0;
    for (size_t i = 0; i < cfg->nauths; i++) {
        wsg_jwt_keys_t *keys = NULL;
        char err[256];
        if (wsg_jwt_keys_load(cfg->auths[i].keys, &keys, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: auth.%s.keys: %s: %s\n", cfg->path, cfg->auths[i].name,
                    cfg->auths[i].keys, err);
            bad++;
        }
        wsg_jwt_keys_free(keys);
    }
    return bad;
}

/* SPEC §10: the backend sticky cookie <value> names, checked as wsgate
 * checks it (secret, pool, backend, max_age_s; all backends assumed up). */
static int which_cookie(const char *path, const wsg_pool_conf_t *pool, const char *value) {
    const wsg_cookie_conf_t *ck = &pool->balance.cookie;
    wsg_sticky_status_t st = WSG_STICKY_FORGED;
    wsg_sticky_value_t pv;

    if (!ck->enabled) {
        fprintf(stderr, "wsgate: %s: pool \"%s\" has no balance.cookie\n", path, pool->name);
        return WSG_EXIT_USAGE;
    }
    if (wsg_sticky_parse(value, strlen(value), &pv) != WSG_STICKY_OK) {
        fprintf(stderr, "wsgate: cookie \"%s\": %s\n", value,
                wsg_sticky_status_name(WSG_STICKY_MALFORMED));
        return WSG_EXIT_USAGE;
    }
    for (size_t i = 0; i < pool->nbackends; i++) {
        st = wsg_sticky_verify(ck->secret, ck->secret_len, pool->name, pool->backends[i].address,
                               value, strlen(value), (uint64_t)time(NULL), ck->max_age_s);
        if (st == WSG_STICKY_OK) {
            time_t t = (time_t)pv.issued;
            char when[32] = "?";
            struct tm tm;
            if (gmtime_r(&t, &tm) != NULL)
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
            printf("%s\nissued %s\n", pool->backends[i].address, when);
            return WSG_EXIT_OK;
        }
        if (st == WSG_STICKY_EXPIRED)
            break;
    }
    fprintf(stderr, "wsgate: cookie \"%s\": %s\n", value,
            st == WSG_STICKY_EXPIRED ? "expired"
                                     : "names no backend of this pool under this secret");
    return WSG_EXIT_USAGE;
}

/* The file's resolve entries looked up now (with its dns.servers), so
 * that --which answers with the backends DNS gives today. NULL on ENOMEM;
 * failures are logged and leave their entry without addresses. */
static wsg_config_t *resolved(wsg_config_t *file) {
    size_t n = wsg_dns_nentries(file);
    if (n == 0)
        return wsg_config_ref(file);
    wsg_dns_answer_t *answers = calloc(n, sizeof(*answers));
    if (answers == NULL)
        return NULL;
    wsg_dns_lookup_all(file, answers, NULL);
    wsg_config_t *cfg = wsg_dns_expand(file, answers);
    free(answers);
    return cfg;
}

static int which(const char *path, const char *key, const char *cookie, const char *pool_name) {
    wsg_config_t *file = load(path, false);
    if (file == NULL)
        return WSG_EXIT_CONFIG;
    wsg_log_configure(WSG_LOG_WARN, WSG_LOG_TEXT); /* failed lookups only */
    wsg_config_t *cfg = resolved(file);
    wsg_config_unref(file);
    if (cfg == NULL) {
        fprintf(stderr, "wsgate: out of memory\n");
        return WSG_EXIT_STARTUP;
    }
    const wsg_pool_conf_t *pool =
        pool_name ? wsg_config_pool(cfg, pool_name) : &cfg->pools[cfg->routes[0].pool_index];
    if (pool == NULL) {
        fprintf(stderr, "wsgate: %s: no pool named \"%s\"\n", path, pool_name);
        wsg_config_unref(cfg);
        return WSG_EXIT_USAGE;
    }
    if (cookie != NULL) {
        int rc = which_cookie(path, pool, cookie);
        wsg_config_unref(cfg);
        return rc;
    }
    if (pool->nbackends == 0) {
        fprintf(stderr, "wsgate: %s: pool \"%s\" has no backend now: its names did not resolve\n",
                path, pool->name);
        wsg_config_unref(cfg);
        return WSG_EXIT_STARTUP;
    }
    wsg_ring_member_t *m = calloc(pool->nbackends, sizeof(*m));
    for (size_t i = 0; m != NULL && i < pool->nbackends; i++) {
        m[i].id = pool->backends[i].address;
        m[i].weight = pool->backends[i].weight;
    }
    wsg_ring_t *ring = m ? wsg_ring_new(m, pool->nbackends) : NULL;
    free(m);
    if (ring == NULL) {
        fprintf(stderr, "wsgate: out of memory\n");
        wsg_config_unref(cfg);
        return WSG_EXIT_STARTUP;
    }
    unsigned idx = wsg_ring_lookup(ring, wsg_ring_hash(key, strlen(key)));
    printf("%s\n", pool->backends[idx].address);
    wsg_ring_free(ring);
    wsg_config_unref(cfg);
    return WSG_EXIT_OK;
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"which", required_argument, NULL, 'w'},  {"pool", required_argument, NULL, 'p'},
        {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
        {"schema", no_argument, NULL, 'S'},       {"cookie", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *key = NULL, *pool = NULL, *cookie = NULL;
    bool test = false;
    int opt;

    /* "--which --cookie VALUE": --which takes an argument, so the pair is
     * read as --cookie alone before getopt would take "--cookie" for KEY. */
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--which") == 0 && strncmp(argv[i + 1], "--cookie", 8) == 0) {
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i - 1) * sizeof(*argv));
            argc--;
            argv[argc] = NULL;
            break;
        }
    }

    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:tp:Vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = true;
            break;
        case 'w':
            key = optarg;
            break;
        case 'p':
            pool = optarg;
            break;
        case 'k':
            cookie = optarg;
            break;
        case 'V':
            version();
            return WSG_EXIT_OK;
        case 'h':
            usage(stdout);
            return WSG_EXIT_OK;
        case 'S':
            return schema();
        case ':':
            fprintf(stderr, "wsgate: option %s needs an argument\n", argv[optind - 1]);
            usage(stderr);
            return WSG_EXIT_USAGE;
        default:
            fprintf(stderr, "wsgate: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return WSG_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wsgate: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return WSG_EXIT_USAGE;
    }
    if (cookie != NULL && key != NULL) {
        fprintf(stderr, "wsgate: --which takes a KEY or --cookie VALUE, not both\n");
        usage(stderr);
        return WSG_EXIT_USAGE;
    }
    if (cookie != NULL)
        key = "";
    if ((pool != NULL && key == NULL) || (test && key != NULL)) {
        fprintf(stderr, "wsgate: -p goes with --which, and -t and --which exclude each other\n");
        usage(stderr);
        return WSG_EXIT_USAGE;
    }
    if (path == NULL)
        path = default_config();
    if (key != NULL)
        return which(path, key, cookie, pool);

    wsg_config_t *cfg = load(path, true);
    if (cfg == NULL)
        return WSG_EXIT_CONFIG;
    if (test) {
        int bad = check_tls(cfg) + check_auth(cfg);
        if (bad == 0)
            printf("%s: configuration OK\n", path);
        wsg_config_unref(cfg);
        return bad ? WSG_EXIT_CONFIG : WSG_EXIT_OK;
    }
    int rc = wsg_server_run(cfg);
    wsg_config_unref(cfg);
    return rc;
}
