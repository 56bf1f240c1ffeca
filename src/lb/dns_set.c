/*
 * DNS discovery, the pure half: answers as sorted address sets, the
 * backend entries they stand for, and the diff against a pool's current
 * backends that the server applies like a runtime change (SPEC §12).
 */
#include <wsgate/dns.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *wsg_dns_result_name(wsg_dns_result_t r) {
    switch (r) {
    case WSG_DNS_OK:
        return "ok";
    case WSG_DNS_NXDOMAIN:
        return "nxdomain";
    case WSG_DNS_SERVFAIL:
        return "servfail";
    case WSG_DNS_TIMEOUT:
        return "timeout";
    default:
        return "error";
    }
}

void wsg_dns_answer_reset(wsg_dns_answer_t *a, wsg_dns_result_t r) {
    a->result = r;
    a->ttl_s = UINT32_MAX;
    a->truncated = false;
    a->naddrs = 0;
}

static int addr_cmp(const wsg_dns_addr_t *x, const wsg_dns_addr_t *y) {
    if (x->family != y->family)
        return x->family == AF_INET ? -1 : 1; /* IPv4 first */
    return memcmp(x->ip, y->ip, x->family == AF_INET ? 4 : 16);
}

void wsg_dns_answer_add(wsg_dns_answer_t *a, int family, const void *ip, uint32_t ttl_s) {
    wsg_dns_addr_t n = {.family = family};
    if (family == AF_INET)
        memcpy(n.ip, ip, 4);
    else if (family == AF_INET6)
        memcpy(n.ip, ip, 16);
    else
        return;
    size_t lo = 0, hi = a->naddrs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = addr_cmp(&a->addrs[mid], &n);
        if (c == 0) {
            if (ttl_s < a->ttl_s)
                a->ttl_s = ttl_s;
            return;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (a->naddrs == WSG_DNS_MAX_ADDRS) {
        a->truncated = true;
        if (lo == a->naddrs)
            return; /* past the kept ones */
        a->naddrs--; /* the largest goes, so the kept set is the lowest addresses */
    }
    memmove(&a->addrs[lo + 1], &a->addrs[lo], (a->naddrs - lo) * sizeof(n));
    a->addrs[lo] = n;
    a->naddrs++;
    if (ttl_s < a->ttl_s)
        a->ttl_s = ttl_s;
}

int wsg_dns_addr_format(const wsg_dns_addr_t *a, char *buf, size_t cap) {
    return inet_ntop(a->family, a->ip, buf, (socklen_t)cap) != NULL ? 0 : -1;
}

int wsg_dns_identity(const char *entry, const wsg_dns_addr_t *a, char *buf, size_t cap) {
    char host[256], ip[INET6_ADDRSTRLEN];
    uint16_t port;
    if (wsg_config_split_hostport(entry, host, sizeof(host), &port) != 0 ||
        wsg_dns_addr_format(a, ip, sizeof(ip)) != 0)
        return -1;
    int n = a->family == AF_INET6 ? snprintf(buf, cap, "%s#[%s]:%u", host, ip, port)
                                  : snprintf(buf, cap, "%s#%s:%u", host, ip, port);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* The socket address of <a> at <port>. */
static void to_sockaddr(const wsg_dns_addr_t *a, uint16_t port, wsg_sockaddr_t *out) {
    memset(out, 0, sizeof(*out));
    if (a->family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->ss;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        memcpy(&s->sin_addr, a->ip, 4);
        out->len = sizeof(*s);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->ss;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        memcpy(&s->sin6_addr, a->ip, 16);
        out->len = sizeof(*s);
    }
}

void wsg_dns_merge_free(wsg_dns_merge_t *m) {
    for (size_t i = 0; i < m->n; i++)
        free(m->backends[i].address);
    free(m->backends);
    free(m->removed);
    memset(m, 0, sizeof(*m));
}

/* Appends a copy of <b> (its address duplicated) to <m>. */
static int push(wsg_dns_merge_t *m, const wsg_backend_conf_t *b, const char *address) {
    char *a = strdup(address);
    if (a == NULL)
        return -1;
    m->backends[m->n] = *b;
    m->backends[m->n++].address = a;
    return 0;
}

/* Whether answer address <i> is already among <cur>'s backends of entry
 * <from> (its identity is <id>). */
static bool listed(const wsg_backend_conf_t *cur, size_t ncur, size_t from, const char *id) {
    for (size_t j = 0; j < ncur; j++)
        if (cur[j].from == from && strcmp(cur[j].address, id) == 0)
            return true;
    return false;
}

static bool in_answer(const char *entry, const wsg_dns_answer_t *ans, const char *id) {
    char buf[320];
    for (size_t i = 0; i < ans->naddrs; i++)
        if (wsg_dns_identity(entry, &ans->addrs[i], buf, sizeof(buf)) == 0 && strcmp(buf, id) == 0)
            return true;
    return false;
}

int wsg_dns_merge(const wsg_backend_conf_t *cur, size_t ncur, size_t entry,
                  const wsg_backend_conf_t *ent, const wsg_dns_answer_t *ans,
                  wsg_dns_merge_t *out) {
    size_t from = entry + 1;
    char host[256];
    uint16_t port;
    memset(out, 0, sizeof(*out));
    if (wsg_config_split_hostport(ent->address, host, sizeof(host), &port) != 0)
        return -1;
    out->backends = calloc(ncur + ans->naddrs + 1, sizeof(*out->backends));
    out->removed = calloc(ncur + 1, sizeof(*out->removed));
    if (out->backends == NULL || out->removed == NULL)
        goto fail;
    for (size_t j = 0; j < ncur; j++) {
        if (cur[j].from == from && !in_answer(ent->address, ans, cur[j].address)) {
            out->removed[out->nremoved++] = j;
            continue;
        }
        if (push(out, &cur[j], cur[j].address) != 0)
            goto fail;
    }
    for (size_t i = 0; i < ans->naddrs; i++) {
        char id[320];
        if (wsg_dns_identity(ent->address, &ans->addrs[i], id, sizeof(id)) != 0)
            goto fail;
        if (listed(cur, ncur, from, id))
            continue;
        wsg_backend_conf_t b = {.weight = ent->weight, .from = from};
        to_sockaddr(&ans->addrs[i], port, &b.addr);
        if (push(out, &b, id) != 0)
            goto fail;
        out->nadded++;
    }
    return 0;
fail:
    wsg_dns_merge_free(out);
    return -1;
}

uint64_t wsg_dns_next_ms(uint64_t resolve_ms, const wsg_dns_answer_t *ans) {
    if (ans->result != WSG_DNS_OK || ans->ttl_s == UINT32_MAX)
        return resolve_ms;
    uint64_t ttl_ms = (uint64_t)ans->ttl_s * 1000;
    if (ttl_ms < 1000)
        ttl_ms = 1000;
    return ttl_ms < resolve_ms ? ttl_ms : resolve_ms;
}

size_t wsg_dns_nentries(const wsg_config_t *cfg) {
    size_t n = 0;
    for (size_t p = 0; p < cfg->npools; p++)
        n += cfg->pools[p].nresolves;
    return n;
}

/* Pool <p> of <cfg>: its own backends, then each entry's addresses. */
static wsg_config_t *expand_pool(wsg_config_t *cfg, size_t p, const wsg_dns_answer_t *answers) {
    const wsg_pool_conf_t *pc = &cfg->pools[p];
    wsg_dns_merge_t acc = {0};
    acc.backends = calloc(pc->nbackends + 1, sizeof(*acc.backends));
    if (acc.backends == NULL)
        return NULL;
    for (size_t i = 0; i < pc->nbackends; i++) {
        if (push(&acc, &pc->backends[i], pc->backends[i].address) != 0) {
            wsg_dns_merge_free(&acc);
            return NULL;
        }
    }
    for (size_t e = 0; e < pc->nresolves; e++) {
        if (answers[e].naddrs == 0)
            continue;
        wsg_dns_merge_t next;
        int r = wsg_dns_merge(acc.backends, acc.n, e, &pc->resolves[e], &answers[e], &next);
        wsg_dns_merge_free(&acc);
        if (r != 0)
            return NULL;
        acc = next;
    }
    wsg_config_t *d = wsg_config_with_backends(cfg, p, acc.backends, acc.n);
    wsg_dns_merge_free(&acc);
    return d;
}

wsg_config_t *wsg_dns_expand(wsg_config_t *cfg, const wsg_dns_answer_t *answers) {
    wsg_config_t *out = wsg_config_ref(cfg);
    size_t k = 0;
    for (size_t p = 0; p < cfg->npools; p++) {
        if (cfg->pools[p].nresolves == 0)
            continue;
        wsg_config_t *d = expand_pool(out, p, answers + k);
        wsg_config_unref(out);
        if (d == NULL)
            return NULL;
        out = d;
        k += cfg->pools[p].nresolves;
    }
    return out;
}
