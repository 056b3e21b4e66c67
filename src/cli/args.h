/* A small declarative option parser: "--name value" or "--name=value",
 * underscores accepted for dashes (--hidden_size == --hidden-size), so the
 * reference implementation's argument names work unchanged. */
#ifndef BR_CLI_ARGS_H
#define BR_CLI_ARGS_H

#include <stdint.h>

#include "util/error.h"

typedef enum { OPT_INT, OPT_FLOAT, OPT_U64, OPT_STR, OPT_FLAG } opt_type;

typedef struct opt_spec {
    const char *name;       /* without leading dashes */
    opt_type type;
    void *value;            /* int32_t*, float*, uint64_t*, const char**, int* */
    const char *help;
    int seen;               /* set by the parser */
} opt_spec;

/* Parses argv[0..argc) against specs (NULL-name terminated). Positional
 * arguments are an error. "--help" sets *help and stops. */
int args_parse(int argc, char **argv, opt_spec *specs, int *help, br_error *err);
void args_print_help(const char *usage, const opt_spec *specs);
const opt_spec *args_find(const opt_spec *specs, const char *name);

#endif
