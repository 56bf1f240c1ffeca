/*
 * Binding listening sockets with SO_REUSEPORT.
 *
 * libuv 1.44 has no flag for SO_REUSEPORT, so the socket is made here, the
 * option set before bind, and the descriptor handed to a worker's loop with
 * uv_tcp_open(). Binding happens on the server thread before any worker
 * starts, so "address in use" is reported once, clearly, with exit status 3.
 * Accepting, EMFILE shedding and admission live in worker.c and conn.c.
 */
#include <wsgate/listener.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int wsg_listener_bind(const char *what, const char *bind_text, const wsg_sockaddr_t *addr,
                      char *err, size_t errcap) {
    int one = 1;
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    /* TCP_NODELAY here is inherited by every accepted socket: WebSocket
     * messages are small and latency-bound, and it saves a syscall each. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0)
        goto fail;
    /* listen() here too, so the port accepts (queues) connections as soon
     * as start-up reports success, even before the workers run. */
    if (listen(fd, 511) != 0)
        goto fail;
    return fd;
fail: {
    int e = errno;
    snprintf(err, errcap, "cannot bind %s %s: %s", what, bind_text, strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}
}
