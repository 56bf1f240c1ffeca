/*
 * The dashboard page writer (src/ctl/dashboard.c): the page as served with
 * and without data, HTML escaping of every name and address and check
 * error, and the Content-Security-Policy it is sent with. What the page's
 * script does is tested in Chromium (tests/e2e/test_dashboard.py).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <wsgate/dashboard.h>

typedef struct {
    wsg_config_t cfg;
    wsg_listener_conf_t lconf[1];
    wsg_pool_conf_t pconf[1];
    wsg_backend_conf_t bconf[2];
    wsg_balancer_t bal[1];
    wsg_balancer_t *balp[1];
    wsg_backend_t be[2];
    wsg_backend_t *bep[2];
    wsg_runtime_t rt;
    wsg_stats_t st;
} fake_t;

static void fake_init(fake_t *f) {
    memset(f, 0, sizeof(*f));
    f->lconf[0].name = "pub<lic>";
    f->lconf[0].bind = "0.0.0.0:8080";
    f->pconf[0].name = "ch\"at&";
    f->pconf[0].health.type = WSG_HEALTH_TCP;
    f->pconf[0].backends = f->bconf;
    f->pconf[0].nbackends = 2;
    f->bconf[0].weight = 1;
    f->bconf[1].weight = 5;
    f->be[0].address = "127.0.0.1:9001";
    f->be[1].address = "<b>x:1";
    atomic_store(&f->be[0].state, WSG_BACKEND_UP);
    atomic_store(&f->be[1].state, WSG_BACKEND_DOWN);
    atomic_store(&f->be[0].active, 5);
    atomic_store(&f->be[0].total, 42);
    atomic_store(&f->be[1].failures, 7);
    f->be[0].last_check.done = true;
    f->be[0].last_check.ok = true;
    f->be[0].last_check.ms = 3;
    f->be[1].last_check.done = true;
    snprintf(f->be[1].last_check.error, sizeof(f->be[1].last_check.error), "status <503>");
    f->bep[0] = &f->be[0];
    f->bep[1] = &f->be[1];
    f->bal[0] = (wsg_balancer_t){.conf = &f->pconf[0], .backends = f->bep, .nbackends = 2};
    f->balp[0] = &f->bal[0];
    f->cfg.listeners = f->lconf;
    f->cfg.nlisteners = 1;
    f->cfg.pools = f->pconf;
    f->cfg.npools = 1;
    f->rt.cfg = &f->cfg;
    f->rt.pools = f->balp;
    f->st.conns_active = 123456;
    f->st.conns_total = 999;
}

static char *render(const wsg_dashboard_input_t *in) {
    wsg_metrics_buf_t b = {0};
    ck_assert_int_eq(wsg_dashboard_render(&b, in), 0);
    ck_assert_ptr_nonnull(b.data);
    ck_assert_uint_eq(strlen(b.data), b.len); /* no NUL inside */
    return b.data;
}

static bool has(const char *text, const char *needle) {
    return strstr(text, needle) != NULL;
}

START_TEST(test_dashboard_page_with_data_lists_backends_escaped) {
    fake_t f;
    fake_init(&f);
    wsg_dashboard_input_t in = {
        .rt = &f.rt, .stats = &f.st, .version = "1.2.3", .uptime_ms = 61500, .workers = 1};
    char *t = render(&in);
    ck_assert(strncmp(t, "<!DOCTYPE html>", 15) == 0);
    ck_assert(has(t, "</html>\n"));
    ck_assert(!has(t, "<!--wsg:data-->")); /* the marker is replaced */
    ck_assert(has(t, "wsgate 1.2.3 · 1 worker · up 61 s</p>"));
    ck_assert(has(t, "id=\"s-active\">123456<"));
    ck_assert(has(t, "<td>pub&lt;lic&gt;</td><td>0.0.0.0:8080</td><td>no</td><td>no</td>"));
    ck_assert(has(t, "<h2>Pool ch&quot;at&amp;<span class=\"sub\">tcp checks · 1 up · 1 down · "
                     "0 draining · 5 active</span></h2>"));
    ck_assert(has(t, "<tr data-pool=\"ch&quot;at&amp;\" data-address=\"127.0.0.1:9001\">"
                     "<td class=\"c-address\">127.0.0.1:9001</td>"
                     "<td class=\"c-state st st-up\">up</td><td class=\"n c-weight\">1</td>"
                     "<td class=\"n c-active\">5</td><td class=\"n c-total\">42</td>"
                     "<td class=\"n c-failures\">0</td><td class=\"c-check\">ok, 3 ms</td></tr>"));
    ck_assert(has(t, "data-address=\"&lt;b&gt;x:1\"><td class=\"c-address\">&lt;b&gt;x:1</td>"
                     "<td class=\"c-state st st-down\">down</td><td class=\"n c-weight\">5</td>"));
    ck_assert(has(t, "<td class=\"c-check bad\">failed: status &lt;503&gt;</td>"));
    ck_assert(!has(t, "<b>x"));
    ck_assert(has(t, "<ul id=\"changes\">"));
    free(t);
}
END_TEST

START_TEST(test_dashboard_page_without_data_names_no_backend) {
    fake_t f;
    fake_init(&f);
    wsg_dashboard_input_t in = {.version = "1.2.3", .workers = 2};
    char *t = render(&in);
    ck_assert(has(t, "<main id=\"data\">\n<noscript>"));
    ck_assert(!has(t, "data-address=\""));
    ck_assert(!has(t, "127.0.0.1:9001"));
    ck_assert(has(t, "<script>") && has(t, "</html>\n"));
    free(t);
}
END_TEST

START_TEST(test_dashboard_csp_allows_only_hashed_inline_code) {
    const char *p = wsg_dashboard_csp;
    ck_assert(strncmp(p, "default-src 'none'; ", 20) == 0);
    ck_assert(has(p, "script-src 'sha256-"));
    ck_assert(has(p, "style-src 'sha256-"));
    ck_assert(has(p, "connect-src 'self'"));
    ck_assert(has(p, "frame-ancestors 'none'"));
    ck_assert(!has(p, "unsafe"));
    ck_assert(strchr(p, '\r') == NULL && strchr(p, '\n') == NULL); /* one header line */
}
END_TEST

static Suite *wsg_dashboard_suite(void) {
    Suite *s = suite_create("dashboard");
    TCase *tc = tcase_create("page");
    tcase_add_test(tc, test_dashboard_page_with_data_lists_backends_escaped);
    tcase_add_test(tc, test_dashboard_page_without_data_names_no_backend);
    tcase_add_test(tc, test_dashboard_csp_allows_only_hashed_inline_code);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(wsg_dashboard_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
