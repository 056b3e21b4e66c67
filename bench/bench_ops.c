/* Elementwise and reduction kernels of the training step alone (nn/ops.h),
 * on the sizes a Beauty step gives them: 1,500 tokens (a SASRec batch's
 * real positions) and 64,000 (an FMLP-Rec stage-2 batch, all 50 slots of
 * 5 x 256 sequences), widths 64 (hidden) and 256 (FFN inner). Best of
 * several repetitions, one JSON line per kernel and size:
 *   gelu: br_gelu_forward, ns per element;
 *   bias_grad: the column sum of br_linear_backward (with db minus
 *     without; 1,500 rows only, where the GEMM's own time is steady enough
 *     for the difference), microseconds;
 *   layernorm_backward: br_layernorm_backward, microseconds;
 *   linear: br_linear_forward (with bias), the input gradient of
 *     br_linear_backward (with dW, minus dW alone) and its weight gradient
 *     (dW alone), GFLOP/s, at SASRec's four shapes (64 -> 192 QKV,
 *     64 -> 64, 64 -> 256 -> 64 FFN) for 1,500 rows (stage 1) and 7,500
 *     (stage 2's stacked batch);
 *   attention: br_attention_forward and br_attention_backward (causal,
 *     probability dropout 0.1), GFLOP/s counted as bench_train counts them
 *     (4 D per query-key pair forward, twice that backward), D = 64, 2
 *     heads, over 256 sequences (a stage-1 batch) and 1,280 (stage 2's five
 *     copies) with lengths like Beauty's (beauty_like_offsets).
 * Usage: bench_ops [threads] */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nn/ops.h"
#include "util/rng.h"

void openblas_set_num_threads(int num_threads);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *checked_malloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_ops: out of memory\n");
        exit(1);
    }
    return p;
}

static float *filled(long n, unsigned seed) {
    float *p = checked_malloc((size_t)n * sizeof *p);
    for (long i = 0; i < n; i++) p[i] = (float)((i * 7919 + seed) % 2000) / 500.0f - 2.0f;
    return p;
}

static void bench_gelu(int threads, long n, int reps) {
    float *x0 = filled(n, 1), *x = filled(n, 1), *y = filled(n, 2);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        for (long i = 0; i < n; i++) x[i] = x0[i];
        const double t0 = now();
        br_gelu_forward(y, x, n);
        const double t = now() - t0;
        if (t < best) best = t;
    }
    printf("{\"bench\": \"gelu\", \"threads\": %d, \"elements\": %ld, \"ns_per_element\": %.3f}\n", threads, n,
           best / (double)n * 1e9);
    free(x0), free(x), free(y);
}

static void bench_bias_grad(int threads, int T, int N, int reps) {
    const int K = 64;
    float *dy = filled((long)T * N, 3), *x = filled((long)T * K, 4), *W = filled((long)N * K, 5);
    float *dW = filled((long)N * K, 6), *db = filled(N, 7);
    double with = 1e30, without = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        br_linear_backward(NULL, dW, db, dy, x, W, T, K, N, 0);
        const double a = now() - t0;
        t0 = now();
        br_linear_backward(NULL, dW, NULL, dy, x, W, T, K, N, 0);
        const double b = now() - t0;
        if (a < with) with = a;
        if (b < without) without = b;
    }
    printf("{\"bench\": \"bias_grad\", \"threads\": %d, \"rows\": %d, \"cols\": %d, \"us\": %.1f}\n", threads, T, N,
           (with - without) * 1e6);
    free(dy), free(x), free(W), free(dW), free(db);
}

static void bench_layernorm_backward(int threads, int T, int D, int reps) {
    float *x = filled((long)T * D, 8), *dy = filled((long)T * D, 9), *y = filled((long)T * D, 10);
    float *dx = filled((long)T * D, 11), *mean = filled(T, 12), *rstd = filled(T, 13);
    float *gamma = filled(D, 14), *beta = filled(D, 15), *dg = filled(D, 16), *db = filled(D, 17);
    br_layernorm_forward(y, mean, rstd, x, gamma, beta, T, D, 1e-12f);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        br_layernorm_backward(dx, dg, db, dy, x, mean, rstd, gamma, T, D, 0);
        const double t = now() - t0;
        if (t < best) best = t;
    }
    printf("{\"bench\": \"layernorm_backward\", \"threads\": %d, \"rows\": %d, \"cols\": %d, \"us\": %.1f}\n",
           threads, T, D, best * 1e6);
    free(x), free(dy), free(y), free(dx), free(mean), free(rstd), free(gamma), free(beta), free(dg), free(db);
}

static void bench_linear(int threads, int T, int K, int N, int reps) {
    float *x = filled((long)T * K, 18), *W = filled((long)N * K, 19), *b = filled(N, 20);
    float *y = filled((long)T * N, 21), *dx = filled((long)T * K, 22), *dW = filled((long)N * K, 23);
    double fwd = 1e30, with = 1e30, without = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        br_linear_forward(y, x, W, b, T, K, N);
        const double f = now() - t0;
        t0 = now();
        br_linear_backward(dx, dW, NULL, y, x, W, T, K, N, 0);
        const double a = now() - t0;
        t0 = now();
        br_linear_backward(NULL, dW, NULL, y, x, W, T, K, N, 0);
        const double c = now() - t0;
        if (f < fwd) fwd = f;
        if (a < with) with = a;
        if (c < without) without = c;
    }
    const double gflop = 2.0 * T * K * N * 1e-9;
    printf("{\"bench\": \"linear\", \"threads\": %d, \"rows\": %d, \"in\": %d, \"out\": %d, "
           "\"forward_gflops\": %.1f, \"backward_dx_gflops\": %.1f, \"backward_dw_gflops\": %.1f}\n",
           threads, T, K, N, gflop / fwd, gflop / (with - without), gflop / without);
    free(x), free(W), free(b), free(y), free(dx), free(dW);
}

/* Sequence lengths 1 + floor(-6 ln u), capped at 50: mean about 6.5,
 * mean square about 78, near those of Beauty's training inputs (5.7, 78). */
static int32_t *beauty_like_offsets(int n_seq) {
    int32_t *off = checked_malloc((size_t)(n_seq + 1) * sizeof *off);
    br_rng r;
    br_rng_seed(&r, 12345, 0);
    off[0] = 0;
    for (int s = 0; s < n_seq; s++) {
        const double n = 1.0 + floor(-6.0 * log1p(-br_rng_uniform(&r))); /* 1 - u in (0, 1] */
        off[s + 1] = off[s] + (n > 50.0 ? 50 : (int32_t)n);
    }
    return off;
}

static void bench_attention(int threads, int n_seq, int reps) {
    const int D = 64, H = 2;
    int32_t *off = beauty_like_offsets(n_seq);
    const int T = off[n_seq];
    int64_t *att_off = checked_malloc((size_t)(n_seq + 1) * sizeof *att_off);
    double pairs = 0.0;
    int max_n = 0;
    for (int s = 0; s < n_seq; s++) {
        const int n = off[s + 1] - off[s];
        pairs += 0.5 * n * (n + 1);
        if (n > max_n) max_n = n;
    }
    br_attention_offsets(att_off, off, n_seq, H);
    float *qkv = filled((long)T * 3 * D, 24), *ctx = filled((long)T * D, 25);
    float *dctx = filled((long)T * D, 26), *dqkv = filled((long)T * 3 * D, 27);
    float *probs = filled(att_off[n_seq], 28);
    float *scratch = filled((long)max_n * threads, 29);
    double fwd = 1e30, bwd = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        br_attention_forward(ctx, probs, qkv, off, NULL, att_off, n_seq, D, H, 0.1f, (uint64_t)r);
        const double f = now() - t0;
        t0 = now();
        br_attention_backward(dqkv, dctx, probs, qkv, off, NULL, att_off, n_seq, D, H, 0.1f, (uint64_t)r,
                              scratch, threads);
        const double b = now() - t0;
        if (f < fwd) fwd = f;
        if (b < bwd) bwd = b;
    }
    const double gflop = 4.0 * D * pairs * 1e-9;
    printf("{\"bench\": \"attention\", \"threads\": %d, \"sequences\": %d, \"tokens\": %d, "
           "\"forward_gflops\": %.1f, \"backward_gflops\": %.1f, \"forward_us\": %.0f, \"backward_us\": %.0f}\n",
           threads, n_seq, T, gflop / fwd, 2.0 * gflop / bwd, fwd * 1e6, bwd * 1e6);
    free(off), free(att_off), free(qkv), free(ctx), free(dctx), free(dqkv), free(probs), free(scratch);
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    if (threads < 1) {
        fprintf(stderr, "usage: bench_ops [threads >= 1]\n");
        return 2;
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    bench_gelu(threads, 1500L * 256, 50);
    bench_gelu(threads, 64000L * 256, 5);
    bench_bias_grad(threads, 1500, 64, 200);
    bench_bias_grad(threads, 1500, 256, 200);
    bench_layernorm_backward(threads, 1500, 64, 200);
    bench_layernorm_backward(threads, 64000, 64, 10);
    static const int shapes[][2] = {{64, 192}, {64, 64}, {64, 256}, {256, 64}};
    for (int rows = 1500; rows <= 7500; rows += 6000)
        for (int i = 0; i < 4; i++) bench_linear(threads, rows, shapes[i][0], shapes[i][1], 50);
    bench_attention(threads, 256, 200);
    bench_attention(threads, 1280, 50);
    return 0;
}
