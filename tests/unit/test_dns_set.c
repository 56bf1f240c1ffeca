/*
 * Unit tests for DNS discovery's pure half (src/lb/dns_set.c): answers as
 * sorted distinct address sets, identities NAME#IP:PORT, the diff of an
 * answer against a pool's backends (only this entry's backends change;
 * kept ones keep their place), the next lookup's time and the expansion
 * of a whole configuration.
 */
#include <wsgate/dns.h>

#include <arpa/inet.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>

static void add4(wsg_dns_answer_t *a, const char *ip, uint32_t ttl) {
    struct in_addr in;
    ck_assert_int_eq(inet_pton(AF_INET, ip, &in), 1);
    wsg_dns_answer_add(a, AF_INET, &in, ttl);
}

static wsg_dns_answer_t *answer(const char *const *ips, size_t n) {
    wsg_dns_answer_t *a = malloc(sizeof(*a));
    ck_assert_ptr_nonnull(a);
    wsg_dns_answer_reset(a, WSG_DNS_OK);
    for (size_t i = 0; i < n; i++)
        add4(a, ips[i], 60);
    return a;
}

START_TEST(test_answer_is_sorted_distinct_with_lowest_ttl) {
    wsg_dns_answer_t *a = answer(NULL, 0);
    add4(a, "10.0.0.3", 30);
    add4(a, "10.0.0.1", 20);
    add4(a, "10.0.0.3", 5);
    struct in6_addr v6;
    inet_pton(AF_INET6, "fd00::1", &v6);
    wsg_dns_answer_add(a, AF_INET6, &v6, 40);
    wsg_dns_answer_add(a, AF_UNIX, &v6, 1); /* ignored */
    ck_assert_uint_eq(a->naddrs, 3);
    ck_assert_uint_eq(a->ttl_s, 5);
    char buf[64];
    wsg_dns_addr_format(&a->addrs[0], buf, sizeof(buf));
    ck_assert_str_eq(buf, "10.0.0.1");
    wsg_dns_addr_format(&a->addrs[1], buf, sizeof(buf));
    ck_assert_str_eq(buf, "10.0.0.3");
    ck_assert_int_eq(wsg_dns_identity("app.svc:9000", &a->addrs[2], buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "app.svc#[fd00::1]:9000");
    ck_assert_int_eq(wsg_dns_identity("app.svc:9000", &a->addrs[0], buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "app.svc#10.0.0.1:9000");
    ck_assert_int_eq(wsg_dns_identity("app.svc:9000", &a->addrs[0], buf, 8), -1);
    ck_assert_int_eq(wsg_dns_identity("app.svc", &a->addrs[0], buf, sizeof(buf)), -1);
    free(a);
}
END_TEST

/* Past WSG_DNS_MAX_ADDRS the lowest addresses are kept, whatever the
 * order they came in. */
START_TEST(test_answer_keeps_the_lowest_when_too_many) {
    wsg_dns_answer_t *a = answer(NULL, 0);
    for (int i = WSG_DNS_MAX_ADDRS + 9; i >= 0; i--) {
        unsigned char ip[4] = {10, 1, (unsigned char)(i >> 8), (unsigned char)i};
        wsg_dns_answer_add(a, AF_INET, ip, 60);
    }
    ck_assert_uint_eq(a->naddrs, WSG_DNS_MAX_ADDRS);
    ck_assert(a->truncated);
    ck_assert_uint_eq(a->addrs[0].ip[3], 0);
    unsigned last = (unsigned)a->addrs[WSG_DNS_MAX_ADDRS - 1].ip[2] << 8 |
                    a->addrs[WSG_DNS_MAX_ADDRS - 1].ip[3];
    ck_assert_uint_eq(last, WSG_DNS_MAX_ADDRS - 1);
    free(a);
}
END_TEST

static const wsg_backend_conf_t ent0 = {.address = "app.svc:9000", .weight = 2, .resolve = true};
static const wsg_backend_conf_t ent1 = {.address = "db.svc:7000", .weight = 1, .resolve = true};

START_TEST(test_merge_adds_keeps_and_removes_only_its_own) {
    static const char *const two[] = {"10.0.0.2", "10.0.0.1"};
    wsg_dns_answer_t *a = answer(two, 2);
    /* A file entry, then entry 1's backend, which entry 0 must not touch. */
    wsg_backend_conf_t cur[] = {
        {.address = "10.9.9.9:80", .weight = 1},
        {.address = "db.svc#10.0.0.1:7000", .weight = 1, .from = 2},
    };
    wsg_dns_merge_t m;
    ck_assert_int_eq(wsg_dns_merge(cur, 2, 0, &ent0, a, &m), 0);
    ck_assert_uint_eq(m.n, 4);
    ck_assert_uint_eq(m.nadded, 2);
    ck_assert_uint_eq(m.nremoved, 0);
    ck_assert_str_eq(m.backends[0].address, "10.9.9.9:80");
    ck_assert_str_eq(m.backends[1].address, "db.svc#10.0.0.1:7000");
    ck_assert_str_eq(m.backends[2].address, "app.svc#10.0.0.1:9000");
    ck_assert_str_eq(m.backends[3].address, "app.svc#10.0.0.2:9000");
    ck_assert_uint_eq(m.backends[2].weight, 2);
    ck_assert_uint_eq(m.backends[2].from, 1);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&m.backends[3].addr.ss;
    ck_assert_int_eq(sin->sin_family, AF_INET);
    ck_assert_uint_eq(ntohs(sin->sin_port), 9000);
    ck_assert_uint_eq(m.backends[3].addr.len, sizeof(*sin));

    /* The same answer again: nothing changes. */
    wsg_dns_merge_t same;
    ck_assert_int_eq(wsg_dns_merge(m.backends, m.n, 0, &ent0, a, &same), 0);
    ck_assert_uint_eq(same.nadded + same.nremoved, 0);
    ck_assert_uint_eq(same.n, 4);
    wsg_dns_merge_free(&same);

    /* 10.0.0.1 leaves, 10.0.0.3 comes: the kept one stays where it was. */
    static const char *const next[] = {"10.0.0.3", "10.0.0.2"};
    wsg_dns_answer_t *b = answer(next, 2);
    wsg_dns_merge_t m2;
    ck_assert_int_eq(wsg_dns_merge(m.backends, m.n, 0, &ent0, b, &m2), 0);
    ck_assert_uint_eq(m2.nadded, 1);
    ck_assert_uint_eq(m2.nremoved, 1);
    ck_assert_uint_eq(m2.removed[0], 2);
    ck_assert_uint_eq(m2.n, 4);
    ck_assert_str_eq(m2.backends[1].address, "db.svc#10.0.0.1:7000");
    ck_assert_str_eq(m2.backends[2].address, "app.svc#10.0.0.2:9000");
    ck_assert_str_eq(m2.backends[3].address, "app.svc#10.0.0.3:9000");
    wsg_dns_merge_free(&m2);

    /* Entry 1 shrinking to nothing new removes only its own. */
    static const char *const db[] = {"10.0.0.5"};
    wsg_dns_answer_t *c = answer(db, 1);
    ck_assert_int_eq(wsg_dns_merge(m.backends, m.n, 1, &ent1, c, &m2), 0);
    ck_assert_uint_eq(m2.nremoved, 1);
    ck_assert_uint_eq(m2.removed[0], 1);
    ck_assert_uint_eq(m2.nadded, 1);
    ck_assert_str_eq(m2.backends[m2.n - 1].address, "db.svc#10.0.0.5:7000");
    wsg_dns_merge_free(&m2);
    wsg_dns_merge_free(&m);
    free(a);
    free(b);
    free(c);
}
END_TEST

START_TEST(test_next_lookup_follows_short_ttls_within_resolve_ms) {
    static const char *const one[] = {"10.0.0.1"};
    wsg_dns_answer_t *a = answer(one, 1);
    a->ttl_s = 300;
    ck_assert_uint_eq(wsg_dns_next_ms(5000, a), 5000);
    a->ttl_s = 2;
    ck_assert_uint_eq(wsg_dns_next_ms(5000, a), 2000);
    a->ttl_s = 0; /* never a flood */
    ck_assert_uint_eq(wsg_dns_next_ms(5000, a), 1000);
    ck_assert_uint_eq(wsg_dns_next_ms(200, a), 200);
    a->result = WSG_DNS_TIMEOUT;
    ck_assert_uint_eq(wsg_dns_next_ms(5000, a), 5000);
    ck_assert_str_eq(wsg_dns_result_name(WSG_DNS_TIMEOUT), "timeout");
    ck_assert_str_eq(wsg_dns_result_name(WSG_DNS_NXDOMAIN), "nxdomain");
    free(a);
}
END_TEST

START_TEST(test_expand_a_configuration) {
    static const char json[] =
        "{\"listeners\": [{\"name\": \"l\", \"bind\": \"127.0.0.1:8080\"}],"
        "\"routes\": [{\"pool\": \"b\"}],"
        "\"pools\": {\"a\": {\"backends\": [{\"address\": \"127.0.0.1:1\"}]},"
        "\"b\": {\"backends\": [{\"address\": \"x.test:9\", \"resolve\": true},"
        "{\"address\": \"y.test:9\", \"resolve\": true, \"weight\": 5}]}}}";
    wsg_config_opts_t o = {.resolve = false};
    wsg_config_t *cfg = wsg_config_parse(json, strlen(json), "t.json", &o, NULL);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_uint_eq(wsg_dns_nentries(cfg), 2);
    ck_assert_uint_eq(cfg->pools[1].nbackends, 0);
    wsg_dns_answer_t *ans = calloc(2, sizeof(*ans));
    wsg_dns_answer_reset(&ans[0], WSG_DNS_NXDOMAIN); /* x.test: nothing */
    wsg_dns_answer_reset(&ans[1], WSG_DNS_OK);
    add4(&ans[1], "10.0.0.8", 60);
    add4(&ans[1], "10.0.0.7", 60);
    wsg_config_t *run = wsg_dns_expand(cfg, ans);
    ck_assert_ptr_nonnull(run);
    ck_assert_uint_eq(run->pools[0].nbackends, 1);
    ck_assert_uint_eq(run->pools[1].nbackends, 2);
    ck_assert_str_eq(run->pools[1].backends[0].address, "y.test#10.0.0.7:9");
    ck_assert_uint_eq(run->pools[1].backends[0].weight, 5);
    ck_assert_uint_eq(run->pools[1].backends[1].from, 2);
    wsg_config_unref(run);
    /* Nothing resolved: the pool is empty, not an error. */
    wsg_dns_answer_reset(&ans[1], WSG_DNS_TIMEOUT);
    run = wsg_dns_expand(cfg, ans);
    ck_assert_ptr_nonnull(run);
    ck_assert_uint_eq(run->pools[1].nbackends, 0);
    wsg_config_unref(run);
    free(ans);
    wsg_config_unref(cfg);
}
END_TEST

int main(void) {
    Suite *s = suite_create("dns_set");
    TCase *tc = tcase_create("set");
    tcase_add_test(tc, test_answer_is_sorted_distinct_with_lowest_ttl);
    tcase_add_test(tc, test_answer_keeps_the_lowest_when_too_many);
    tcase_add_test(tc, test_merge_adds_keeps_and_removes_only_its_own);
    tcase_add_test(tc, test_next_lookup_follows_short_ttls_within_resolve_ms);
    tcase_add_test(tc, test_expand_a_configuration);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
