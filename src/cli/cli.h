/* Shared pieces of the basrec subcommands. */
#ifndef BR_CLI_CLI_H
#define BR_CLI_CLI_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "basrec.h"
#include "data/dataset.h"
#include "train/train.h"
#include "util/error.h"

int cmd_train(int argc, char **argv);
int cmd_reproduce(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_recommend(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_plot(int argc, char **argv);

/* Recommendation requests, shared by `serve` (POST /recommend bodies) and
 * `recommend --stdin` / `--history` (cmd_serve.c, docs/SERVING.md). */
typedef struct cli_rec_ctx {
    const basrec_model *model;
    const basrec_idmap *items;  /* original item ids, or NULL */
    const basrec_idmap *users;  /* original user ids, or NULL */
    const br_dataset *data;     /* histories for {"user": id} requests, or NULL */
    int32_t default_k, max_k;
    int exclude_seen;           /* when the request does not say */
} cli_rec_ctx;

/* Loads the model and the optional maps and data (NULL: none), printing
 * "basrec: problem" on failure. */
int cli_open_rec_ctx(cli_rec_ctx *ctx, const char *checkpoint, const char *item_map,
                     const char *user_map, const char *data);
void cli_close_rec_ctx(cli_rec_ctx *ctx);
/* Returns -1 with a message unless every item 1..n_items has an original id
 * in map (read from path), as answers in original ids need. */
int cli_check_item_map(const basrec_idmap *map, int32_t n_items, const char *path, char *msg,
                       size_t msglen);
/* Answers {"items": [...] | "user": id, "k": n, "exclude_seen": bool}:
 * returns 200 with *result = {"items": [...], "scores": [...]} (the
 * caller's to json_decref), or 400 (a bad request) or 500 (a server fault)
 * with a message in msg. */
int cli_recommend(const cli_rec_ctx *ctx, const json_t *req, json_t **result, char *msg,
                  size_t msglen);
/* The same from JSON text (malformed JSON is a 400), answered as JSON text:
 * the result or {"error": message}; *response (the caller's to free) is
 * NULL only when out of memory, and the status then 500. */
int cli_recommend_body(const cli_rec_ctx *ctx, const char *body, size_t len, char **response);

/* --threads: OpenMP and OpenBLAS threads (0 keeps the default: all cores). */
void cli_set_threads(int32_t threads);
/* Prints "basrec <cmd>: <message>" and returns the exit status 1. */
int cli_fail(const char *cmd, const br_error *err);
int cli_file_exists(const char *dir, const char *name);
void cli_print_result(FILE *fp, const br_train_result *res);

/* Per-dataset settings (PROTOCOL.md): the reference README's dropout and
 * the reference's schedule (maximum epochs; validation from start_valid:
 * selecting among later epochs gave better test accuracy, docs/RESULTS.md);
 * BASRec's own settings come from br_basrec_preset. */
typedef struct cli_preset {
    const char *name;
    const char *file;        /* the dataset's file name in the data directory */
    float dropout;           /* SASRec / FMLP-Rec hidden and attention dropout */
    float gru_dropout;       /* GRU4Rec embedding dropout */
    int32_t epochs, start_valid; /* the reference's schedule, every training run */
} cli_preset;

/* The preset named name, or NULL. */
const cli_preset *cli_find_preset(const char *name);
/* The dropout a preset gives a backbone. */
float cli_preset_dropout(const cli_preset *p, const char *model);
/* A preset's recipe for plain training (plain runs and BASRec's stage 1)
 * of model: SASRec with dropout 0.5, as the authors' own plain-SASRec runs
 * use, lr 3e-4, validated from the first epoch, at most 400 epochs
 * (docs/RESULTS.md); GRU4Rec with the preset's dropout and first
 * validation, at most 600 epochs and patience 40 (on Beauty its validation
 * still rises past epoch 400, with flat stretches of 20-odd epochs on the
 * way); FMLP-Rec validated from the first epoch; the other backbones with
 * the preset's dropout and schedule. */
void cli_preset_plain(const cli_preset *p, const char *model, br_model_config *mc,
                      br_train_config *tc);
/* The most epochs a preset gives model's BASRec stage 2: the preset's,
 * and at least 300 for FMLP-Rec, whose stage 2 on Beauty still rises on
 * validation at epoch 200 (docs/RESULTS.md). */
int32_t cli_preset_stage2_epochs(const cli_preset *p, const char *model);

/* One training run into out_dir: resumed, started from a checkpoint's
 * weights (fresh optimizer; mc's dropout replaces the checkpoint's), or from
 * a fresh initialisation. */
int cli_run_stage(const br_dataset *ds, const br_model_config *mc, br_train_config *tc,
                  const char *out_dir, const char *init_from, int resume, FILE *log,
                  int progress, br_train_result *res, br_error *err);

#endif
