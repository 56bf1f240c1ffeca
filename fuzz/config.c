/*
 * Fuzz target: the configuration loader (src/base/config.c), what an
 * operator (or a deploy tool) hands wsgate.
 *
 * Checked: a text is either accepted, giving a config whose parts are
 * consistent (at least one listener, every route names a pool that
 * exists), or refused with at least one error message; never both, never
 * neither. Names are not resolved (no DNS from a fuzzer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wsgate/config.h>

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    wsg_config_errors_t errs = {0};
    wsg_config_opts_t opts = {.resolve = false};
    char *text = malloc(size ? size : 1); /* not NUL-terminated, exact size */
    memcpy(text, data, size);

    wsg_config_t *cfg = wsg_config_parse(text, size, "fuzz.json", &opts, &errs);
    if (cfg != NULL) {
        FUZZ_CHECK(errs.count == 0);
        FUZZ_CHECK(cfg->nlisteners > 0);
        for (size_t i = 0; i < cfg->nroutes; i++)
            FUZZ_CHECK(wsg_config_pool(cfg, cfg->routes[i].pool) != NULL);
        wsg_config_unref(cfg);
    } else {
        FUZZ_CHECK(errs.count > 0);
        for (size_t i = 0; i < errs.count; i++)
            FUZZ_CHECK(errs.msgs[i] != NULL && errs.msgs[i][0] != '\0');
    }
    wsg_config_errors_free(&errs);
    free(text);
    return 0;
}
