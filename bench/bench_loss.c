/* Loss kernels alone (train/loss.h): the full-softmax cross-entropy (ICE)
 * against BCE with one negative, on Beauty-sized batches (12,101 items,
 * 1,500 tokens, dim 64), as seconds per epoch-equivalent: the loss over one
 * epoch's training positions (Beauty's, counted from the data file when
 * present), once for stage 1 and 11 times for a BASRec/RM-HSAOCL stage 2
 * (main + 4 copies + 6 cross-sequence mixes, copies at full length). Then
 * the ICE kernel on a synthetic 1,000,000-item catalogue: seconds per batch
 * and the peak memory it adds beyond its inputs and outputs.
 * Prints JSON lines. Usage: bench_loss [threads] [data.txt] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "data/dataset.h"
#include "train/loss.h"
#include "util/rng.h"

void openblas_set_num_threads(int num_threads);

enum { DIM = 64, TOKENS = 1500 };
#define BEAUTY_ITEMS 12101
/* 198,502 interactions - 3 x 22,363 users held out, no input beyond 50. */
#define BEAUTY_POSITIONS 131413

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench_loss: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Training positions of one epoch of the data file, or Beauty's count. */
static long long epoch_positions(const char *path) {
    br_dataset ds;
    br_error err;
    if (!path || br_dataset_load(path, &ds, &err) < 0) return BEAUTY_POSITIONS;
    long long n = 0;
    for (int32_t u = 0; u < ds.n_users; u++) {
        const int32_t len = br_split_input_len(&ds, u, BR_SPLIT_TRAIN);
        n += len > 50 ? 50 : len > 0 ? len : 0;
    }
    br_dataset_free(&ds);
    return n;
}

typedef struct batch {
    int32_t n_items;
    float *h, *dh, *E, *dE;
    int32_t *target, *neg;
} batch;

static void batch_init(batch *b, int32_t n_items, br_rng *r) {
    const size_t nh = (size_t)TOKENS * DIM, ne = ((size_t)n_items + 1) * DIM;
    b->n_items = n_items;
    b->h = xmalloc(nh * sizeof(float));
    b->dh = xmalloc(nh * sizeof(float));
    b->E = xmalloc(ne * sizeof(float));
    b->dE = xmalloc(ne * sizeof(float));
    b->target = xmalloc(TOKENS * sizeof(int32_t));
    b->neg = xmalloc(TOKENS * sizeof(int32_t));
    /* Written, not calloc'd: every page is resident before a measurement. */
    memset(b->dh, 0, nh * sizeof(float));
    memset(b->dE, 0, ne * sizeof(float));
    for (size_t i = 0; i < nh; i++) b->h[i] = (float)br_rng_normal(r);
    for (size_t i = 0; i < ne; i++) b->E[i] = 0.1f * (float)br_rng_normal(r);
    for (int t = 0; t < TOKENS; t++) {
        b->target[t] = 1 + (int32_t)br_rng_below(r, (uint64_t)n_items);
        b->neg[t] = 1 + (int32_t)br_rng_below(r, (uint64_t)n_items);
    }
}

static void batch_free(batch *b) {
    free(b->h), free(b->dh), free(b->E), free(b->dE), free(b->target), free(b->neg);
}

/* Best of reps calls: seconds per batch of TOKENS tokens. */
static double time_loss(const br_loss_config *c, br_xent *x, batch *b, int reps) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        const double t0 = now();
        br_loss_eval(c, x, b->h, TOKENS, b->target, b->neg, NULL, DIM, b->E, b->dE, b->dh);
        const double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 0;
    const char *data = argc > 2 ? argv[2] : "../shared/data/Beauty.txt";
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    br_error err;
    br_rng r;
    br_rng_seed(&r, 1, 0);
    const long long positions = epoch_positions(data);

    /* Beauty-sized batch: ICE vs BCE. */
    batch b;
    batch_init(&b, BEAUTY_ITEMS, &r);
    br_xent *x = br_xent_create(BEAUTY_ITEMS, DIM, BR_XENT_CHUNK, BR_XENT_BLOCK, &err);
    if (!x) {
        fprintf(stderr, "bench_loss: %s\n", err.msg);
        return 1;
    }
    br_loss_config bce, ce;
    br_loss_config_defaults(&bce);
    ce = bce;
    ce.kind = BR_LOSS_CE;
    time_loss(&ce, x, &b, 1); /* warm-up: threads, pages */
    const double t_bce = time_loss(&bce, x, &b, 50), t_ce = time_loss(&ce, x, &b, 10);
    const double per_tok = (double)positions / TOKENS;
    /* Logits, gradient recomputation when blocked, dh and dE: 2 T N D each. */
    const int passes = BEAUTY_ITEMS > BR_XENT_BLOCK ? 4 : 3;
    const double gflop = passes * 2.0 * TOKENS * BEAUTY_ITEMS * DIM * 1e-9;
    printf("{\"bench\": \"loss\", \"items\": %d, \"tokens\": %d, \"dim\": %d, \"threads\": %d, "
           "\"bce_ms\": %.3f, \"ce_ms\": %.2f, \"ce_gflops\": %.1f, \"epoch_positions\": %lld, "
           "\"stage1_epoch_s\": {\"bce\": %.3f, \"ce\": %.2f}, \"stage2_epoch_s\": {\"bce\": %.3f, \"ce\": %.2f}}\n",
           BEAUTY_ITEMS, TOKENS, DIM, omp_get_max_threads(), 1e3 * t_bce, 1e3 * t_ce, gflop / t_ce,
           positions, t_bce * per_tok, t_ce * per_tok, 11 * t_bce * per_tok, 11 * t_ce * per_tok);
    fflush(stdout);
    br_xent_free(x);
    batch_free(&b);

    /* 1,000,000 items: peak memory beyond inputs and outputs (all touched
     * before the first call, so they count in the baseline). */
    enum { BIG = 1000000 };
    batch g;
    batch_init(&g, BIG, &r);
    const double rss0 = peak_rss_mb();
    br_xent *xg = br_xent_create(BIG, DIM, BR_XENT_CHUNK, BR_XENT_BLOCK, &err);
    if (!xg) {
        fprintf(stderr, "bench_loss: %s\n", err.msg);
        return 1;
    }
    const double t_big = time_loss(&ce, xg, &g, 1);
    const double rss1 = peak_rss_mb();
    const double io_mb = ((double)(BIG + 1) * DIM * 2 + 2.0 * TOKENS * DIM) * 4 / 1048576.0;
    printf("{\"bench\": \"loss_1m\", \"items\": %d, \"tokens\": %d, \"dim\": %d, \"threads\": %d, "
           "\"ce_seconds\": %.2f, \"workspace_mb\": %.2f, \"inputs_outputs_mb\": %.1f, "
           "\"peak_rss_mb_before\": %.1f, \"peak_rss_mb_after\": %.1f, \"added_peak_mb\": %.1f, "
           "\"dense_logits_mb\": %.0f}\n",
           BIG, TOKENS, DIM, omp_get_max_threads(), t_big, br_xent_bytes(xg) / 1048576.0, io_mb, rss0,
           rss1, rss1 - rss0, (double)TOKENS * BIG * 4 / 1048576.0);
    br_xent_free(xg);
    batch_free(&g);
    return 0;
}
