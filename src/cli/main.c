/* basrec: command-line front end. Each subcommand parses its options,
 * calls the library and reports errors as "basrec <cmd>: message". */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a model with early stopping; report test metrics"},
    {"eval", cmd_eval, "full-ranking metrics of a checkpoint on the valid or test split"},
    {"recommend", cmd_recommend, "top-k next items for users"},
    {"synth", cmd_synth, "write a synthetic dataset"},
    {"prepare", cmd_prepare, "raw interaction log (CSV/TSV/JSON lines) to a sequence file"},
    {"reproduce", cmd_reproduce, "run a paper configuration over seeds; append mean and std to a results file"},
    {"serve", cmd_serve, "HTTP JSON service: recommendations from a checkpoint"},
    {"plot", cmd_plot, "SVG learning curves from a training metrics log"},
};

static void usage(FILE *fp) {
    fprintf(fp, "usage: basrec <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(fp, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(fp, "\n'basrec <command> --help' lists a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "basrec: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
