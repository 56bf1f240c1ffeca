/*
 * Listening sockets. The server thread binds them (a failure is a start-up
 * error with the address and the OS error); workers adopt them with
 * uv_tcp_open() and accept on their own loop.
 */
#ifndef WSGATE_LISTENER_H
#define WSGATE_LISTENER_H

#include <stddef.h>

#include <wsgate/config.h>

/* Creates a non-blocking TCP socket bound to <addr> with SO_REUSEADDR and
 * SO_REUSEPORT, so that every worker can bind its own socket to the same
 * address and the kernel balances accepts between them. Returns the file
 * descriptor, or -errno with a message in <err> naming <what> and the
 * address. */
int wsg_listener_bind(const char *what, const char *bind_text, const wsg_sockaddr_t *addr,
                      char *err, size_t errcap);

#endif /* WSGATE_LISTENER_H */
