/*
 * The server: the running process. It owns the current runtime (config +
 * pools), the listening sockets and the workers, and turns signals into
 * actions on all workers (graceful shutdown; reload later).
 */
#ifndef WSGATE_SERVER_H
#define WSGATE_SERVER_H

#include <wsgate/config.h>

/* Exit statuses (SPEC §1). */
enum {
    WSG_EXIT_OK = 0,
    WSG_EXIT_CONFIG = 1,
    WSG_EXIT_USAGE = 2,
    WSG_EXIT_STARTUP = 3,
};

/* Runs wsgate with <cfg> (borrowed; the server takes its own reference)
 * until a graceful shutdown completes. Returns the process exit status. */
int wsg_server_run(wsg_config_t *cfg);

#endif /* WSGATE_SERVER_H */
