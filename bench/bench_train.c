/* Training and evaluation speed of SASRec on a sequence file (default:
 * Beauty). Prints one JSON line: seconds per epoch of stage 1 (plain) or
 * stage 2 (BASRec with Beauty's settings), real training positions per
 * second, the useful GFLOP/s of the training step (matrix work on real
 * positions, counted below), full-ranking evaluation seconds over all
 * users, and peak RSS.
 * Usage: bench_train [data.txt] [epochs] [threads] [stage1|stage2] [max_len] [model] [loss]
 * (model: sasrec, the default, gru4rec, nextitnet or fmlprec; loss: bce,
 * the default, ce, last-ce, focal or sampled-ce; the GFLOP/s count is that
 * of SASRec with BCE, so it is printed for that pair only). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "data/dataset.h"
#include "eval/evaluate.h"
#include "models/model.h"
#include "train/loss.h"
#include "train/train.h"

void openblas_set_num_threads(int num_threads);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Floating-point operations of one training pass (forward + backward, the
 * backward counted as twice the forward) over real positions: per token and
 * layer the four projections and the FFN (24 D^2 forward) and attention over
 * its causal prefix (4 n D forward for n keys); the loss's two dot products. */
static double epoch_flops(const br_dataset *ds, const br_model_config *c) {
    double f = 0.0;
    const double D = c->dim;
    for (int32_t u = 0; u < ds->n_users; u++) {
        int32_t n = br_split_input_len(ds, u, BR_SPLIT_TRAIN);
        if (n > c->max_len) n = c->max_len;
        if (n <= 0) continue;
        const double keys = (double)n * (n + 1) / 2.0;
        f += 3.0 * c->n_layers * (24.0 * D * D * n + 4.0 * D * keys) + 3.0 * 4.0 * D * n;
    }
    return f;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "../shared/data/Beauty.txt";
    const int epochs = argc > 2 ? atoi(argv[2]) : 3;
    const int threads = argc > 3 ? atoi(argv[3]) : 0;
    const int stage2 = argc > 4 && strcmp(argv[4], "stage2") == 0;
    const int max_len = argc > 5 ? atoi(argv[5]) : 0;
    const char *model = argc > 6 ? argv[6] : "sasrec";
    const char *loss = argc > 7 ? argv[7] : "bce";
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    br_error err;
    br_dataset ds;
    if (br_dataset_load(path, &ds, &err) < 0) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    br_model_config mc;
    br_train_config tc;
    br_model_config_defaults(&mc);
    br_train_config_defaults(&tc);
    mc.n_items = ds.n_items;
    mc.hidden_dropout = mc.attn_dropout = 0.1f;
    if (max_len > 0) mc.max_len = max_len;
    snprintf(mc.model, sizeof mc.model, "%s", model);
    br_model_config_backbone_defaults(&mc);
    tc.use_basrec = stage2;
    if (br_loss_parse(loss, &tc.loss.kind) < 0) {
        fprintf(stderr, "bench_train: unknown loss '%s'\n", loss);
        return 1;
    }
    br_model m;
    br_trainer *tr = NULL;
    if (br_model_create(&m, &mc, &err) < 0 || !(tr = br_trainer_create(&m, &ds, &tc, &err))) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    br_model_init_weights(&m, 1);
    br_epoch_stats es;
    br_trainer_epoch(tr, 0, 0, &es); /* warm-up: page in buffers, spin up threads */
    double t0 = now();
    for (int e = 1; e <= epochs; e++) br_trainer_epoch(tr, e, 0, &es);
    const double epoch_s = (now() - t0) / epochs;
    br_metrics met;
    br_evaluate(&m, &ds, BR_SPLIT_TEST, &met, &err); /* warm-up */
    t0 = now();
    const int evals = 3;
    for (int i = 0; i < evals; i++) br_evaluate(&m, &ds, BR_SPLIT_TEST, &met, &err);
    const double eval_s = (now() - t0) / evals;
    const int copies = stage2 ? 1 + 2 * tc.basrec.n_pairs : 1;
    char gflops[32] = "null";
    if (strcmp(model, "sasrec") == 0 && tc.loss.kind == BR_LOSS_BCE)
        snprintf(gflops, sizeof gflops, "%.1f", copies * epoch_flops(&ds, &mc) / epoch_s * 1e-9);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"bench\": \"train\", \"model\": \"%s\", \"loss\": \"%s\", \"stage\": %d, \"data\": \"%s\", \"threads\": %d, \"max_len\": %d, \"epoch_seconds\": %.3f, "
           "\"train_positions\": %lld, \"positions_per_second\": %.0f, \"useful_gflops\": %s, "
           "\"eval_seconds\": %.3f, \"eval_users\": %d, \"peak_rss_mb\": %.1f}\n",
           model, loss, stage2 ? 2 : 1, path, omp_get_max_threads(), mc.max_len, epoch_s, (long long)br_trainer_epoch_tokens(tr),
           (double)br_trainer_epoch_tokens(tr) / epoch_s, gflops, eval_s, ds.n_users, ru.ru_maxrss / 1024.0);
    br_trainer_free(tr);
    br_model_free(&m);
    br_dataset_free(&ds);
    return 0;
}
