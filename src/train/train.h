/* Stage-1 (plain) training: BCE with one negative per position (or another
 * loss of train/loss.h), Adam, validation every epoch after start_valid,
 * best checkpoint by valid NDCG@20, early stopping, final test metrics of
 * the best checkpoint. */
#ifndef BR_TRAIN_TRAIN_H
#define BR_TRAIN_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "augment/basrec.h"
#include "data/dataset.h"
#include "eval/rank.h"
#include "models/model.h"

typedef struct br_train_config {
    int32_t batch_size;
    int32_t epochs;       /* maximum */
    int32_t patience;     /* epochs without valid improvement before stopping */
    int32_t start_valid;  /* first epoch (0-based) that is validated */
    float lr, weight_decay;
    uint64_t seed;
    int use_basrec;             /* stage-2 BASRec objective instead of the plain one */
    br_basrec_config basrec;
    br_loss_config loss;        /* of every loss term, plain or BASRec */
} br_train_config;

void br_train_config_defaults(br_train_config *tc);

/* Progress of a run; everything needed to resume it besides the weights
 * and Adam moments. */
typedef struct br_train_state {
    int32_t epoch;        /* epochs completed */
    int32_t best_epoch;   /* -1 before the first validation */
    double best_score;    /* valid NDCG@20 of best_epoch */
    int32_t bad_epochs;   /* validations since the best */
    double seconds;       /* wall time of the epochs so far, over all resumes */
} br_train_state;

/* What training reports on stderr: nothing, one line per epoch (for logs),
 * or those lines and a progress bar within each epoch (for terminals). */
enum { BR_PROGRESS_QUIET = 0, BR_PROGRESS_LINES = 1, BR_PROGRESS_BAR = 2 };

typedef struct br_train_io {
    const char *out_dir;      /* best.safetensors, last.safetensors, result.json */
    FILE *metrics_log;        /* JSON lines per epoch, or NULL */
    int progress;             /* BR_PROGRESS_* */
    int resume;               /* continue from out_dir/last.safetensors */
} br_train_io;

typedef struct br_train_result {
    br_metrics valid, test;   /* of the best checkpoint */
    int32_t best_epoch, epochs_run;
    double seconds;           /* the whole run's, resumed parts included */
} br_train_result;

/* Trains m on ds. With io->resume the model, config and state are restored
 * from out_dir/last.safetensors, all but tc's epochs and patience, which
 * may extend the run (m must be zeroed then; otherwise m is a
 * freshly created model that is initialised from tc->seed). M-Mask adds the
 * model's mask item (br_model_add_mask_item, from tc->seed) when it lacks it. */
int br_train(br_model *m, const br_dataset *ds, br_train_config *tc, const br_train_io *io,
             br_train_result *res, br_error *err);

/* One optimisation step on a batch of training rows; returns the loss.
 * Exposed for tests and benchmarks. */
struct br_trainer;
typedef struct br_trainer br_trainer;
br_trainer *br_trainer_create(br_model *m, const br_dataset *ds, const br_train_config *tc,
                              br_error *err);
double br_trainer_step(br_trainer *tr, const int32_t *rows, int32_t n, uint64_t step_key);

/* Means over the batches of one epoch. */
typedef struct br_epoch_stats {
    double loss;
    br_basrec_stats basrec; /* zero without BASRec */
} br_epoch_stats;
/* Runs one epoch (shuffled rows, negatives redrawn). */
void br_trainer_epoch(br_trainer *tr, int32_t epoch, int progress, br_epoch_stats *st);
/* Real training positions of one epoch. */
int64_t br_trainer_epoch_tokens(const br_trainer *tr);
void br_trainer_free(br_trainer *tr);

#endif
