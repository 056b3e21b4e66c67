/* Shared pieces of the basrec subcommands. */
#ifndef BR_CLI_CLI_H
#define BR_CLI_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "data/dataset.h"
#include "train/train.h"
#include "util/error.h"

int cmd_train(int argc, char **argv);
int cmd_reproduce(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_recommend(int argc, char **argv);
int cmd_synth(int argc, char **argv);

/* --threads: OpenMP and OpenBLAS threads (0 keeps the default: all cores). */
void cli_set_threads(int32_t threads);
/* Prints "basrec <cmd>: <message>" and returns the exit status 1. */
int cli_fail(const char *cmd, const br_error *err);
int cli_file_exists(const char *dir, const char *name);
void cli_print_result(FILE *fp, const br_train_result *res);

/* Per-dataset settings (PROTOCOL.md): the reference README's dropout and
 * the stage-2 schedule; BASRec's own settings come from br_basrec_preset. */
typedef struct cli_preset {
    const char *name;
    const char *file;        /* the dataset's file name in the data directory */
    float dropout;           /* SASRec / FMLP-Rec hidden and attention dropout */
    float gru_dropout;       /* GRU4Rec embedding dropout */
    int32_t stage2_epochs, stage2_start_valid;
} cli_preset;

/* The preset named name, or NULL. */
const cli_preset *cli_find_preset(const char *name);
/* The dropout a preset gives a backbone. */
float cli_preset_dropout(const cli_preset *p, const char *model);

/* One training run into out_dir: resumed, started from a checkpoint's
 * weights (fresh optimizer; mc's dropout replaces the checkpoint's), or from
 * a fresh initialisation. */
int cli_run_stage(const br_dataset *ds, const br_model_config *mc, br_train_config *tc,
                  const char *out_dir, const char *init_from, int resume, FILE *log,
                  int progress, br_train_result *res, br_error *err);

#endif
