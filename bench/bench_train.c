/* Training and evaluation speed on a sequence file (default: Beauty).
 * Prints one JSON line: seconds per epoch, real training positions per
 * second, full-ranking evaluation seconds over all users, peak RSS.
 * Usage: bench_train [data.txt] [epochs] [threads] */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "data/dataset.h"
#include "eval/evaluate.h"
#include "models/model.h"
#include "train/train.h"

void openblas_set_num_threads(int num_threads);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "../shared/data/Beauty.txt";
    const int epochs = argc > 2 ? atoi(argv[2]) : 3;
    const int threads = argc > 3 ? atoi(argv[3]) : 0;
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
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"data\": \"%s\", \"threads\": %d, \"epoch_seconds\": %.3f, \"train_positions\": %lld, "
           "\"positions_per_second\": %.0f, \"eval_seconds\": %.3f, \"eval_users\": %d, "
           "\"peak_rss_mb\": %.1f}\n",
           path, omp_get_max_threads(), epoch_s, (long long)br_trainer_epoch_tokens(tr),
           (double)br_trainer_epoch_tokens(tr) / epoch_s, eval_s, ds.n_users, ru.ru_maxrss / 1024.0);
    br_trainer_free(tr);
    br_model_free(&m);
    br_dataset_free(&ds);
    return 0;
}
