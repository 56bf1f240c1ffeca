/*
 * The edge checks of SPEC §11 on a connection: per-address request rate,
 * Origin, the JWT of a route with "auth" (found, verified, stripped from
 * what is forwarded, its claims set as headers), the subprotocol answer,
 * and, once relaying, close on expiry, the client's message rate and its
 * bytes/s shaping. conn.c and relay.c call in at a few narrow points; the
 * logic is in edge.c. Included by conn_int.h only.
 */
#ifndef WSGATE_EDGE_H
#define WSGATE_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wsgate/config.h>
#include <wsgate/jwt.h>
#include <wsgate/rate_limit.h>

struct wsg_conn_s;

/* Edge state of one connection, allocated by edge.c when a check needs
 * it (a verified token, close_on_expiry, a client rate limit). */
typedef struct wsg_edge_s {
    wsg_jwt_t *jwt;          /* owned: the current request's verified token, until the relay starts */
    int64_t exp_ms;          /* close_on_expiry: exp + leeway, wall clock ms (0: none) */
    uint64_t expiry_at;      /* RELAY: loop time it is closed for expiry (0: never) */
    uint64_t read_at;        /* RELAY: loop time client reads resume (client_bytes_per_s; 0: not held) */
    wsg_rate_bucket_t msgs;  /* messages_per_s of the client */
    wsg_rate_bucket_t bytes; /* client_bytes_per_s */
    unsigned bearer : 1;     /* the token came as "bearer, TOKEN": the 101 says "bearer" */
} wsg_edge_t;

/* A request head is complete (before routing, so a flood of unroutable
 * requests is limited too): handshakes_per_ip_per_s. Returns 0 to go on;
 * else the client got 429 with Retry-After. */
int wsg__edge_rate(struct wsg_conn_s *c);

/* The request is routed to <route> and valid: Origin (upgrades only), then
 * the route's token. On success the head in c->hs->req is what the backend
 * is to see (token stripped, claim headers set) and 0 is returned; else the
 * client got 401/403 (or 500) and -1 is returned. */
int wsg__edge_admit(struct wsg_conn_s *c, const wsg_route_conf_t *route, bool websocket);

/* The backend's 101 is in c->hs->resp: when the token came as a
 * subprotocol, the client's answer names "bearer" (the protocol it offered
 * that wsgate consumed) instead of what the backend chose. Returns 0, or -1
 * when out of memory. */
int wsg__edge_answer(struct wsg_conn_s *c);

/* The verified token of the current request (NULL without one): for
 * balance.key "jwt:CLAIM". */
const wsg_jwt_t *wsg__edge_jwt(const struct wsg_conn_s *c);

void wsg__edge_free(struct wsg_conn_s *c);

/* relay.c */
int wsg__edge_relay_start(struct wsg_conn_s *c);
/* The earlier of <d> and the edge's own deadlines. */
uint64_t wsg__edge_deadline(const struct wsg_conn_s *c, uint64_t d);
/* Returns 1 when it closed the connection (token expired). */
int wsg__edge_on_deadline(struct wsg_conn_s *c, uint64_t now);
/* A data message from the client begins: 0 within messages_per_s, -1 past
 * it (the caller drops it and then calls wsg__edge_message_limited). */
int wsg__edge_message(struct wsg_conn_s *c);
void wsg__edge_message_limited(struct wsg_conn_s *c);
/* <n> bytes were read from the client: may hold its reads for a while. */
void wsg__edge_client_read(struct wsg_conn_s *c, size_t n);
/* Whether reads from <side> are held by client_bytes_per_s. */
bool wsg__edge_holds(const struct wsg_conn_s *c, int side);
/* The relay is closing: held reads resume, so the close reply is read. */
void wsg__edge_release(struct wsg_conn_s *c);

#endif /* WSGATE_EDGE_H */
