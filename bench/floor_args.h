/*
 * The command line the floor relays take (floor_relay.c, floor_uring.c, floor_uv.c):
 *   --port P --backend-port B [--backend-host 127.0.0.1]
 * Header-only: each floor is one small program of its own.
 */
#ifndef WSGATE_BENCH_FLOOR_ARGS_H
#define WSGATE_BENCH_FLOOR_ARGS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fills <listen_port> and <backend>; on a bad command line prints why under
 * <prog>'s name and returns -1. */
static inline int floor_args(int argc, char **argv, const char *prog, int *listen_port,
                             struct sockaddr_in *backend) {
    int port = 0, bport = 0;
    const char *bhost = "127.0.0.1";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--backend-port") == 0)
            bport = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--backend-host") == 0)
            bhost = argv[i + 1];
    }
    if (port <= 0 || port > 65535 || bport <= 0 || bport > 65535) {
        fprintf(stderr, "usage: %s --port P --backend-port B [--backend-host H]\n", prog);
        return -1;
    }
    *backend = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)bport)};
    if (inet_pton(AF_INET, bhost, &backend->sin_addr) != 1) {
        fprintf(stderr, "%s: bad backend host %s\n", prog, bhost);
        return -1;
    }
    *listen_port = port;
    return 0;
}

#endif
