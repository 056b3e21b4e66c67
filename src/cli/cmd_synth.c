/* basrec synth: a synthetic dataset for trying the pipeline without data. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "eval/evaluate.h"
#include "models/model.h"
#include "train/checkpoint.h"
#include "train/train.h"

int cmd_synth(int argc, char **argv) {
    const char *out = NULL;
    int32_t users = 5000, items = 2000;
    uint64_t seed = 1;
    int help;
    opt_spec specs[] = {
        {"out", OPT_STR, &out, "output sequence file", 0},
        {"users", OPT_INT, &users, "number of users", 0},
        {"items", OPT_INT, &items, "number of items", 0},
        {"seed", OPT_U64, &seed, "random seed", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("synth", &err);
    if (help) {
        args_print_help("usage: basrec synth --out FILE [--users N] [--items N] [--seed N]\n\n"
                        "Writes a synthetic sequence dataset with learnable structure.",
                        specs);
        return 0;
    }
    if (!out) {
        fprintf(stderr, "basrec synth: --out is required (see --help)\n");
        return 2;
    }
    if (br_synth_write(out, users, items, seed, &err) < 0) return cli_fail("synth", &err);
    return 0;
}

