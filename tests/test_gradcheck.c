/* Finite-difference checks of every layer's backward pass and of the full
 * SASRec training loss. The kernels are float32, so objectives are summed in
 * double, each difference divides by the perturbation actually stored in
 * float, and every check comes in two forms: per entry on a sample, and one
 * directional derivative over all entries at once (its many contributions
 * average out the rounding noise of single entries). */
#include "testutil.h"

#include <math.h>
#include <omp.h>

#include "data/batch.h"
#include "data/dataset.h"
#include "models/model.h"
#include "nn/ops.h"
#include "train/loss.h"
#include "util/rng.h"

/* A scalar objective of the arrays a test perturbs. */
typedef double (*objective_fn)(void *ctx);

/* One perturbed array and its analytic gradient. */
typedef struct fd_var {
    const char *name;
    float *x;
    const float *grad;
    long n;
} fd_var;

/* How checks are run and judged: central-difference steps per entry and
 * per direction (entry-wise N(0, 1) times eps_dir), relative tolerances, and
 * the gradient scale below which errors count as absolute (|fd - an| <=
 * tol * floor), since rounding noise does not shrink with the gradient. */
typedef struct fd_opts {
    float eps, eps_dir;
    double tol, tol_dir, floor;
} fd_opts;

/* Steps measured to sit between float rounding noise (smaller) and
 * truncation error (larger), leaving at least 4x margin under the
 * tolerances. The model, with many parameters moving together along a
 * direction, needs smaller steps. */
static const fd_opts layer_opts = {1e-2f, 3e-3f, 1e-2, 1e-3, 1e-2};
static const fd_opts model_opts = {5e-3f, 3e-4f, 1e-2, 1e-3, 1e-2};

static float *alloc_f(long n) {
    float *p = calloc((size_t)n, sizeof *p);
    assert_non_null(p);
    return p;
}

static float *dup_f(const float *x, long n) {
    float *p = alloc_f(n);
    memcpy(p, x, (size_t)n * sizeof *p);
    return p;
}

static void fill_normal(float *x, long n, float mean, float std, br_rng *r) {
    for (long i = 0; i < n; i++) x[i] = mean + std * (float)br_rng_normal(r);
}

static double dot_d(const float *a, const float *b, long n) {
    double s = 0.0;
    for (long i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double rel_err(double fd, double an, double floor) {
    return fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), floor);
}

static void assert_close(const float *a, const float *b, long n, float atol) {
    for (long i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > atol) fail_msg("entry %ld: %.9g vs %.9g", i, a[i], b[i]);
}

/* Central differences at the given entries of v; fails past tolerance and
 * returns the worst relative error. */
static double check_indices(objective_fn f, void *ctx, const fd_var *v, const long *idx, int n_idx,
                            const fd_opts *o) {
    double worst = 0.0;
    for (int k = 0; k < n_idx; k++) {
        const long i = idx[k];
        const float x0 = v->x[i];
        v->x[i] = x0 + o->eps;
        const float xp = v->x[i];
        const double fp = f(ctx);
        v->x[i] = x0 - o->eps;
        const float xm = v->x[i];
        const double fm = f(ctx);
        v->x[i] = x0;
        const double fd = (fp - fm) / ((double)xp - (double)xm), an = v->grad[i];
        const double e = rel_err(fd, an, o->floor);
        if (e > o->tol) fail_msg("%s[%ld]: finite difference %.7g, analytic %.7g (rel err %.2e)",
                                 v->name, i, fd, an, e);
        if (e > worst) worst = e;
    }
    return worst;
}

/* check_indices on n_sample random entries, or on all when there are fewer. */
static double check_sample(objective_fn f, void *ctx, const fd_var *v, int n_sample,
                           const fd_opts *o, br_rng *r) {
    const int n = v->n < n_sample ? (int)v->n : n_sample;
    long *idx = malloc((size_t)n * sizeof *idx);
    assert_non_null(idx);
    for (int k = 0; k < n; k++) idx[k] = v->n <= n_sample ? k : (long)br_rng_below(r, (uint64_t)v->n);
    const double worst = check_indices(f, ctx, v, idx, n, o);
    free(idx);
    return worst;
}

/* Moves every entry of every var by +-eps * N(0, 1) at once and compares
 * f(+) - f(-) with the analytic gradient dotted with the stored step. */
static double check_direction(objective_fn f, void *ctx, const fd_var *vars, int nv,
                              const fd_opts *o, br_rng *r) {
    float *orig[8], *dir[8];
    assert_true(nv <= 8);
    for (int k = 0; k < nv; k++) {
        orig[k] = dup_f(vars[k].x, vars[k].n);
        dir[k] = alloc_f(vars[k].n);
        fill_normal(dir[k], vars[k].n, 0.0f, o->eps_dir, r);
    }
    double an = 0.0;
    for (int k = 0; k < nv; k++)
        for (long i = 0; i < vars[k].n; i++) vars[k].x[i] = orig[k][i] + dir[k][i];
    const double fp = f(ctx);
    for (int k = 0; k < nv; k++)
        for (long i = 0; i < vars[k].n; i++) {
            const float xp = vars[k].x[i];
            vars[k].x[i] = orig[k][i] - dir[k][i];
            an += (double)vars[k].grad[i] * ((double)xp - (double)vars[k].x[i]);
        }
    const double fm = f(ctx);
    for (int k = 0; k < nv; k++) {
        memcpy(vars[k].x, orig[k], (size_t)vars[k].n * sizeof(float));
        free(orig[k]);
        free(dir[k]);
    }
    const double e = rel_err(fp - fm, an, o->floor * 2.0 * o->eps_dir);
    if (e > o->tol_dir)
        fail_msg("%s...: directional difference %.7g, analytic %.7g (rel err %.2e)", vars[0].name,
                 fp - fm, an, e);
    return e;
}

/* Per-entry checks of every var (n_sample each) and one directional check;
 * prints the worst errors for the record. */
static void check_all(const char *label, objective_fn f, void *ctx, const fd_var *vars, int nv,
                      int n_sample, const fd_opts *o, br_rng *r) {
    double worst[8];
    assert_true(nv <= 8);
    for (int k = 0; k < nv; k++) worst[k] = check_sample(f, ctx, &vars[k], n_sample, o, r);
    const double dir = check_direction(f, ctx, vars, nv, o, r);
    print_message("%-26s", label);
    for (int k = 0; k < nv; k++) print_message(" %s %.1e", vars[k].name, worst[k]);
    print_message(" | direction %.1e\n", dir);
}

/* ---- linear ---- */

typedef struct linear_ctx {
    float *x, *W, *b, *y, *R;
    int T, K, N;
} linear_ctx;

static double linear_obj(void *p) {
    linear_ctx *c = p;
    br_linear_forward(c->y, c->x, c->W, c->b, c->T, c->K, c->N);
    return dot_d(c->y, c->R, (long)c->T * c->N);
}

static void test_linear(void **state) {
    br_rng r;
    br_rng_seed(&r, 11, 0);
    linear_ctx c = {.T = 5, .K = 6, .N = 4};
    const long TK = (long)c.T * c.K, NK = (long)c.N * c.K, TN = (long)c.T * c.N;
    c.x = alloc_f(TK), c.W = alloc_f(NK), c.b = alloc_f(c.N), c.y = alloc_f(TN), c.R = alloc_f(TN);
    fill_normal(c.x, TK, 0, 1, &r);
    fill_normal(c.W, NK, 0, 1, &r);
    fill_normal(c.b, c.N, 0, 1, &r);
    fill_normal(c.R, TN, 0, 1, &r);
    float *dx = alloc_f(TK), *dW = alloc_f(NK), *db = alloc_f(c.N);
    /* Overwrite mode must ignore what dx held. */
    fill_normal(dx, TK, 0, 100, &r);
    br_linear_backward(dx, dW, db, c.R, c.x, c.W, c.T, c.K, c.N, 0);
    const fd_var vars[] = {{"x", c.x, dx, TK}, {"W", c.W, dW, NK}, {"b", c.b, db, c.N}};
    check_all("linear", linear_obj, &c, vars, 3, 64, &layer_opts, &r);

    /* Accumulate mode adds into dx; dW and db always accumulate. */
    float *dx2 = alloc_f(TK), *dW2 = dup_f(dW, NK), *db2 = dup_f(db, c.N), *want = alloc_f(TK);
    fill_normal(dx2, TK, 0, 1, &r);
    for (long i = 0; i < TK; i++) want[i] = dx2[i] + dx[i];
    br_linear_backward(dx2, dW2, db2, c.R, c.x, c.W, c.T, c.K, c.N, 1);
    assert_close(dx2, want, TK, 1e-5f);
    for (long i = 0; i < NK; i++) want[i] = 2 * dW[i];
    assert_close(dW2, want, NK, 1e-5f);
    for (int i = 0; i < c.N; i++) want[i] = 2 * db[i];
    assert_close(db2, want, c.N, 1e-5f);

    /* NULL dx and db are skipped; the weight gradient is still produced. */
    memset(dW2, 0, (size_t)NK * sizeof(float));
    br_linear_backward(NULL, dW2, NULL, c.R, c.x, c.W, c.T, c.K, c.N, 0);
    assert_close(dW2, dW, NK, 1e-5f);

    free(c.x), free(c.W), free(c.b), free(c.y), free(c.R);
    free(dx), free(dW), free(db), free(dx2), free(dW2), free(db2), free(want);
}

/* The linear layer's products (src/nn/gemm.c: register tiles of 6 rows by
 * 16 columns, row chunks, a packed weight; BLAS past its size limits) on
 * shapes that cross every tile edge: each output against its sum in
 * double, within the worst-case float rounding of K terms; and, where the
 * tiled kernels run, bit-identical at 1 and 2 threads. */
static void test_linear_products(void **state) {
    static const int Ts[] = {1, 5, 7, 101, 400};
    static const int Ks[] = {1, 3, 64, 70, 256};
    static const int Ns[] = {1, 5, 8, 9, 16, 17, 64, 200};
    br_rng r;
    br_rng_seed(&r, 23, 0);
    const int saved = omp_get_max_threads();
    for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++)
        for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
                const int T = Ts[ti], K = Ks[ki], N = Ns[ni];
                const long TK = (long)T * K, TN = (long)T * N, NK = (long)N * K;
                float *x = alloc_f(TK), *W = alloc_f(NK), *b = alloc_f(N), *dy = alloc_f(TN);
                fill_normal(x, TK, 0, 1, &r);
                fill_normal(W, NK, 0, 1, &r);
                fill_normal(b, N, 0, 1, &r);
                fill_normal(dy, TN, 0, 1, &r);
                float *dx_before = alloc_f(TK); /* what accumulate mode adds to */
                fill_normal(dx_before, TK, 0, 1, &r);
                const double eps = (double)K * 6e-8;
                float *y[2], *dx[2];
                for (int threads = 1; threads <= 2; threads++) {
                    omp_set_num_threads(threads);
                    float *yt = y[threads - 1] = alloc_f(TN), *dxt = dx[threads - 1] = alloc_f(TK);
                    float *dW = alloc_f(NK), *y0 = alloc_f(TN);
                    br_linear_forward(yt, x, W, b, T, K, N);
                    br_linear_forward(y0, x, W, NULL, T, K, N);
                    memcpy(dxt, dx_before, (size_t)TK * sizeof(float));
                    br_linear_backward(dxt, dW, NULL, dy, x, W, T, K, N, 1);
                    for (int t = 0; t < T; t++)
                        for (int n = 0; n < N; n++) {
                            double sum = 0, mag = 0;
                            for (int k = 0; k < K; k++) {
                                const double term = (double)x[(long)t * K + k] * W[(long)n * K + k];
                                sum += term, mag += fabs(term);
                            }
                            const long i = (long)t * N + n;
                            assert_true(fabs(y0[i] - sum) <= eps * mag + 1e-30);
                            assert_true(fabs(yt[i] - (sum + b[n])) <= eps * (mag + fabs(b[n])) + 1e-30);
                        }
                    for (int t = 0; t < T; t++)
                        for (int k = 0; k < K; k++) {
                            const long i = (long)t * K + k;
                            double sum = dx_before[i], mag = fabs(dx_before[i]);
                            for (int n = 0; n < N; n++) {
                                const double term = (double)dy[(long)t * N + n] * W[(long)n * K + k];
                                sum += term, mag += fabs(term);
                            }
                            assert_true(fabs(dxt[i] - sum) <= (double)(N + 1) * 6e-8 * mag + 1e-30);
                        }
                    free(dW), free(y0);
                }
#if defined(__AVX2__) && defined(__FMA__)
                /* Within the kernels' limits (a weight of at most 16K floats
                 * padded to 16 columns, 64K read in place), results do not
                 * depend on the thread count. */
                if ((long)K * ((N + 15) / 16 * 16) <= 16384)
                    assert_memory_equal(y[0], y[1], (size_t)TN * sizeof(float));
                assert_memory_equal(dx[0], dx[1], (size_t)TK * sizeof(float));
#endif
                free(x), free(W), free(b), free(dy), free(dx_before);
                free(y[0]), free(y[1]), free(dx[0]), free(dx[1]);
            }
    omp_set_num_threads(saved);
}

/* ---- layernorm ---- */

typedef struct ln_ctx {
    float *x, *gamma, *beta, *y, *mean, *rstd, *R;
    int T, D;
} ln_ctx;

#define LN_EPS 1e-12f /* as the model */

static double ln_obj(void *p) {
    ln_ctx *c = p;
    br_layernorm_forward(c->y, c->mean, c->rstd, c->x, c->gamma, c->beta, c->T, c->D, LN_EPS);
    return dot_d(c->y, c->R, (long)c->T * c->D);
}

static void test_layernorm(void **state) {
    br_rng r;
    br_rng_seed(&r, 12, 0);
    ln_ctx c = {.T = 4, .D = 8};
    const long TD = (long)c.T * c.D;
    c.x = alloc_f(TD), c.gamma = alloc_f(c.D), c.beta = alloc_f(c.D), c.y = alloc_f(TD);
    c.mean = alloc_f(c.T), c.rstd = alloc_f(c.T), c.R = alloc_f(TD);
    /* Rows with different offsets and spreads. */
    for (int t = 0; t < c.T; t++) fill_normal(c.x + (long)t * c.D, c.D, (float)t - 1.5f, 0.5f + t, &r);
    fill_normal(c.gamma, c.D, 1, 0.3f, &r);
    fill_normal(c.beta, c.D, 0, 0.5f, &r);
    fill_normal(c.R, TD, 0, 1, &r);
    float *dx = alloc_f(TD), *dg = alloc_f(c.D), *db = alloc_f(c.D);
    fill_normal(dx, TD, 0, 100, &r);
    ln_obj(&c);
    br_layernorm_backward(dx, dg, db, c.R, c.x, c.mean, c.rstd, c.gamma, c.T, c.D, 0);
    const fd_var vars[] = {{"x", c.x, dx, TD}, {"gamma", c.gamma, dg, c.D}, {"beta", c.beta, db, c.D}};
    check_all("layernorm", ln_obj, &c, vars, 3, 64, &layer_opts, &r);

    float *dx2 = alloc_f(TD), *dg2 = dup_f(dg, c.D), *db2 = dup_f(db, c.D), *want = alloc_f(TD);
    fill_normal(dx2, TD, 0, 1, &r);
    for (long i = 0; i < TD; i++) want[i] = dx2[i] + dx[i];
    ln_obj(&c); /* the checks left mean and rstd of a perturbed input */
    br_layernorm_backward(dx2, dg2, db2, c.R, c.x, c.mean, c.rstd, c.gamma, c.T, c.D, 1);
    assert_close(dx2, want, TD, 1e-5f);
    for (int i = 0; i < c.D; i++) want[i] = 2 * dg[i];
    assert_close(dg2, want, c.D, 1e-5f);
    for (int i = 0; i < c.D; i++) want[i] = 2 * db[i];
    assert_close(db2, want, c.D, 1e-5f);

    free(c.x), free(c.gamma), free(c.beta), free(c.y), free(c.mean), free(c.rstd), free(c.R);
    free(dx), free(dg), free(db), free(dx2), free(dg2), free(db2), free(want);
}

/* The column sums behind the bias and LayerNorm parameter gradients are
 * tiled (row tiles, column blocks, a thread's share of strips): on sizes
 * that cross every tile and block boundary, they must equal plain float
 * sums over t in order, bit for bit, at any thread count. */
static void test_column_sums(void **state) {
    enum { T = 600, N = 300, K = 3 };
    br_rng r;
    br_rng_seed(&r, 17, 0);
    float *dy = alloc_f((long)T * N), *x = alloc_f((long)T * N), *xk = alloc_f((long)T * K);
    float *W = alloc_f((long)N * K), *mean = alloc_f(T), *rstd = alloc_f(T), *gamma = alloc_f(N);
    fill_normal(dy, (long)T * N, 0, 1, &r);
    fill_normal(x, (long)T * N, 0.5f, 2, &r);
    fill_normal(xk, (long)T * K, 0, 1, &r);
    for (int t = 0; t < T; t++) mean[t] = (float)br_rng_uniform(&r), rstd[t] = 0.5f + (float)br_rng_uniform(&r);
    for (int c = 0; c < N; c++) gamma[c] = 1.0f;
    float *want_b = alloc_f(N), *want_g = alloc_f(N);
    for (int c = 0; c < N; c++)
        for (int t = 0; t < T; t++) {
            const float g = dy[(size_t)t * N + c], xv = x[(size_t)t * N + c];
            want_b[c] += g;
            want_g[c] += g * (xv - mean[t]) * rstd[t];
        }
    const int saved = omp_get_max_threads();
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        float *db = alloc_f(N), *dW = alloc_f((long)N * K), *dg = alloc_f(N), *dbeta = alloc_f(N);
        float *dx = alloc_f((long)T * N);
        br_linear_backward(NULL, dW, db, dy, xk, W, T, K, N, 0);
        br_layernorm_backward(dx, dg, dbeta, dy, x, mean, rstd, gamma, T, N, 0);
        assert_memory_equal(db, want_b, N * sizeof(float));
        assert_memory_equal(dbeta, want_b, N * sizeof(float));
        assert_memory_equal(dg, want_g, N * sizeof(float));
        free(db), free(dW), free(dg), free(dbeta), free(dx);
    }
    omp_set_num_threads(saved);
    free(dy), free(x), free(xk), free(W), free(mean), free(rstd), free(gamma), free(want_b), free(want_g);
}

/* ---- gelu ---- */

typedef struct gelu_ctx {
    float *x, *y, *R, *dgelu; /* dgelu: the forward's copy of x, left holding gelu'(x) */
    long n;
} gelu_ctx;

static double gelu_obj(void *p) {
    gelu_ctx *c = p;
    memcpy(c->dgelu, c->x, (size_t)c->n * sizeof(float));
    br_gelu_forward(c->y, c->dgelu, c->n);
    return dot_d(c->y, c->R, c->n);
}

static void test_gelu(void **state) {
    br_rng r;
    br_rng_seed(&r, 13, 0);
    gelu_ctx c = {.n = 64};
    c.x = alloc_f(c.n), c.y = alloc_f(c.n), c.R = alloc_f(c.n), c.dgelu = alloc_f(c.n);
    for (long i = 0; i < c.n; i++) c.x[i] = (float)(8 * br_rng_uniform(&r) - 4);
    fill_normal(c.R, c.n, 0, 1, &r);
    float *dx = alloc_f(c.n);
    gelu_obj(&c);
    br_gelu_backward(dx, c.R, c.dgelu, c.n);
    const fd_var vars[] = {{"x", c.x, dx, c.n}};
    check_all("gelu", gelu_obj, &c, vars, 1, 64, &layer_opts, &r);

    /* The model runs it in place (dx == dy). */
    float *g = dup_f(c.R, c.n);
    gelu_obj(&c);
    br_gelu_backward(g, g, c.dgelu, c.n);
    assert_memory_equal(g, dx, (size_t)c.n * sizeof(float));

    free(c.x), free(c.y), free(c.R), free(c.dgelu), free(dx), free(g);
}

/* GELU and the derivative it leaves behind against the erf form in double,
 * across both tails: y in relative terms wherever it is a normal float (the
 * approximation of Phi is relative, limited by the rounding of x^2 / 2 in
 * its exponent), and GELU' in absolute terms (it crosses zero at -0.75). */
static void test_gelu_values(void **state) {
    const long n = 200001;
    float *x = alloc_f(n), *y = alloc_f(n), *d = alloc_f(n);
    for (long i = 0; i < n; i++) x[i] = d[i] = (float)(-12.0 + 24.0 * (double)i / (double)(n - 1));
    br_gelu_forward(y, d, n);
    double worst_y = 0.0, worst_d = 0.0;
    for (long i = 0; i < n; i++) {
        const double v = x[i], cdf = 0.5 * erfc(-v / sqrt(2.0));
        const double want_y = v * cdf, want_d = cdf + v * exp(-0.5 * v * v) / sqrt(2.0 * M_PI);
        if (fabs(want_y) > 1e-37) worst_y = fmax(worst_y, fabs(y[i] - want_y) / fabs(want_y));
        worst_d = fmax(worst_d, fabs(d[i] - want_d));
    }
    printf("gelu: max relative error %.2e, gelu' max absolute error %.2e\n", worst_y, worst_d);
    assert_true(worst_y < 2e-5);
    assert_true(worst_d < 1e-6);
    free(x), free(y), free(d);
}

/* ---- dropout ---- */

typedef struct dropout_ctx {
    float *x, *y, *R;
    long n;
    float p;
    uint64_t key;
} dropout_ctx;

static double dropout_obj(void *p) {
    dropout_ctx *c = p;
    memcpy(c->y, c->x, (size_t)c->n * sizeof(float));
    br_dropout(c->y, c->n, c->p, c->key);
    return dot_d(c->y, c->R, c->n);
}

static void test_dropout(void **state) {
    br_rng r;
    br_rng_seed(&r, 14, 0);
    dropout_ctx c = {.n = 1000, .p = 0.3f, .key = 0xd0d0};
    c.x = alloc_f(c.n), c.y = alloc_f(c.n), c.R = alloc_f(c.n);
    fill_normal(c.x, c.n, 0, 1, &r);
    fill_normal(c.R, c.n, 0, 1, &r);
    /* Backward is the same call on the gradient. */
    float *dx = dup_f(c.R, c.n);
    br_dropout(dx, c.n, c.p, c.key);
    const fd_var vars[] = {{"x", c.x, dx, c.n}};
    check_all("dropout p=0.3", dropout_obj, &c, vars, 1, 64, &layer_opts, &r);

    /* The mask drops about p and scales the rest by 1 / (1 - p). */
    dropout_obj(&c);
    long dropped = 0;
    for (long i = 0; i < c.n; i++) {
        if (c.y[i] == 0.0f) dropped++;
        else assert_true(c.y[i] == c.x[i] * (1.0f / (1.0f - c.p)));
    }
    assert_in_range(dropped, 250, 350);
    /* p = 0 is the identity. */
    memcpy(c.y, c.x, (size_t)c.n * sizeof(float));
    br_dropout(c.y, c.n, 0.0f, c.key);
    assert_memory_equal(c.y, c.x, (size_t)c.n * sizeof(float));

    free(c.x), free(c.y), free(c.R), free(dx);
}

/* ---- ragged causal attention ---- */

#define ATT_NSEQ 4

typedef struct att_ctx {
    float *qkv, *ctx, *probs, *R;
    int32_t seq_off[ATT_NSEQ + 1];
    const int32_t *n_pad;
    int64_t att_off[ATT_NSEQ + 1];
    int T, D, H;
    float p;
    uint64_t key;
} att_ctx;

static double att_obj(void *p) {
    att_ctx *c = p;
    br_attention_forward(c->ctx, c->probs, c->qkv, c->seq_off, c->n_pad, c->att_off, ATT_NSEQ, c->D,
                         c->H, c->p, c->key);
    return dot_d(c->ctx, c->R, (long)c->T * c->D);
}

/* Runs the attention checks at dropout p, with leading padding rows n_pad
 * (NULL: none); returns the context output (caller frees) and its size in *n. */
static float *check_attention(float p, const int32_t *n_pad, const char *label, long *n) {
    br_rng r;
    br_rng_seed(&r, 15, 0);
    /* Lengths 1, 2, 5, 7 in a shuffled order: nothing may assume sorting. */
    const int lens[ATT_NSEQ] = {5, 1, 7, 2};
    att_ctx c = {.n_pad = n_pad, .D = 8, .H = 2, .p = p, .key = 0xa77e};
    int max_n = 0;
    c.seq_off[0] = 0;
    for (int s = 0; s < ATT_NSEQ; s++) {
        c.seq_off[s + 1] = c.seq_off[s] + lens[s];
        if (lens[s] > max_n) max_n = lens[s];
    }
    c.T = c.seq_off[ATT_NSEQ];
    br_attention_offsets(c.att_off, c.seq_off, ATT_NSEQ, c.H);
    const long T3D = (long)c.T * 3 * c.D, TD = (long)c.T * c.D;
    c.qkv = alloc_f(T3D), c.ctx = alloc_f(TD), c.probs = alloc_f(c.att_off[ATT_NSEQ]), c.R = alloc_f(TD);
    /* Unit scores (head width 4) give softmaxes far from uniform. */
    fill_normal(c.qkv, T3D, 0, 1, &r);
    fill_normal(c.R, TD, 0, 1, &r);
    float *dqkv = alloc_f(T3D), *scratch = alloc_f((long)omp_get_max_threads() * max_n);
    fill_normal(dqkv, T3D, 0, 100, &r);
    att_obj(&c);
    br_attention_backward(dqkv, c.R, c.probs, c.qkv, c.seq_off, c.n_pad, c.att_off, ATT_NSEQ, c.D, c.H,
                          c.p, c.key, scratch, omp_get_max_threads());
    const fd_var vars[] = {{"qkv", c.qkv, dqkv, T3D}};
    check_all(label, att_obj, &c, vars, 1, (int)T3D, &layer_opts, &r);

    /* Saved probabilities are the pre-dropout softmax, rows summing to 1:
     * causal over the real rows for a real row, over the whole sequence (no
     * zero) for a padding row. */
    att_obj(&c);
    for (int s = 0; s < ATT_NSEQ; s++)
        for (int h = 0; h < c.H; h++)
            for (int i = 0; i < lens[s]; i++) {
                const float *row = c.probs + c.att_off[s] + ((int64_t)h * lens[s] + i) * lens[s];
                const int lead = n_pad ? n_pad[s] : 0;
                double sum = 0.0;
                for (int j = 0; j < lens[s]; j++) {
                    const int masked = i >= lead && (j > i || j < lead);
                    assert_true(masked ? row[j] == 0.0f : row[j] > 0.0f);
                    sum += row[j];
                }
                assert_true(fabs(sum - 1.0) < 1e-5);
            }

    free(c.qkv), free(c.probs), free(c.R), free(dqkv), free(scratch);
    *n = TD;
    return c.ctx;
}

static void test_attention(void **state) {
    long n;
    float *ctx0 = check_attention(0.0f, NULL, "attention p=0", &n);
    float *ctx1 = check_attention(0.2f, NULL, "attention p=0.2", &n);
    /* Dropout must actually change the output, or the p=0.2 check proves nothing. */
    assert_memory_not_equal(ctx0, ctx1, (size_t)n * sizeof(float));
    free(ctx0), free(ctx1);
}

/* Leading padding rows (the reference's padded slots) with and without
 * dropout; a zero count everywhere is the plain ragged attention. */
static void test_attention_padded(void **state) {
    const int32_t lead[ATT_NSEQ] = {2, 0, 3, 1}, none[ATT_NSEQ] = {0, 0, 0, 0};
    long n;
    float *ctx0 = check_attention(0.0f, lead, "attention padded p=0", &n);
    free(check_attention(0.2f, lead, "attention padded p=0.2", &n));
    float *ctx_none = check_attention(0.0f, none, "attention no padding", &n);
    float *ctx_null = check_attention(0.0f, NULL, "attention", &n);
    assert_memory_equal(ctx_none, ctx_null, (size_t)n * sizeof(float));
    assert_memory_not_equal(ctx0, ctx_null, (size_t)n * sizeof(float));
    free(ctx0), free(ctx_none), free(ctx_null);
}

/* ---- BCE loss ---- */

#define BCE_T 7
#define BCE_D 8
#define BCE_ROWS 10 /* items 1..9 plus padding row 0 */

typedef struct bce_ctx {
    float *h, *E, *dh, *dE;
    const int32_t *pos, *neg;
    const float *w;
    float scale;
} bce_ctx;

static double bce_obj(void *p) {
    bce_ctx *c = p;
    return br_bce_loss(c->h, c->pos, c->neg, c->w, BCE_T, BCE_D, c->E, c->dE, c->dh, c->scale);
}

static void check_bce(const float *w, float scale, const char *label) {
    br_rng r;
    br_rng_seed(&r, 16, 0);
    /* Tokens 1 and 5 have no target; items repeat across tokens and roles
     * (3 is a positive twice and a negative once, 7 a negative twice). */
    static const int32_t pos[BCE_T] = {3, 0, 5, 3, 9, 0, 1};
    static const int32_t neg[BCE_T] = {7, 0, 3, 2, 7, 0, 5};
    const long TD = BCE_T * BCE_D, ED = BCE_ROWS * BCE_D;
    float *h = alloc_f(TD), *E = alloc_f(ED), *scr_dh = alloc_f(TD), *scr_dE = alloc_f(ED);
    fill_normal(h, TD, 0, 1, &r);
    fill_normal(E, ED, 0, 0.5f, &r);
    bce_ctx c = {h, E, scr_dh, scr_dE, pos, neg, w, scale};
    float *dh = alloc_f(TD), *dE = alloc_f(ED);
    fill_normal(dh, TD, 0, 100, &r);
    br_bce_loss(h, pos, neg, w, BCE_T, BCE_D, E, dE, dh, scale);
    for (int d = 0; d < BCE_D; d++) assert_true(dh[1 * BCE_D + d] == 0.0f && dh[5 * BCE_D + d] == 0.0f);
    const fd_var vars[] = {{"h", h, dh, TD}, {"E", E, dE, ED}};
    check_all(label, bce_obj, &c, vars, 2, 80, &layer_opts, &r);

    /* dE accumulates. */
    float *dE2 = dup_f(dE, ED), *want = alloc_f(ED);
    br_bce_loss(h, pos, neg, w, BCE_T, BCE_D, E, dE2, dh, scale);
    for (long i = 0; i < ED; i++) want[i] = 2 * dE[i];
    assert_close(dE2, want, ED, 1e-6f);

    free(h), free(E), free(scr_dh), free(scr_dE), free(dh), free(dE), free(dE2), free(want);
}

static void test_bce(void **state) {
    static const float w[BCE_T] = {0.5f, 1.0f, 2.0f, 1.5f, 0.25f, 3.0f, 1.0f};
    check_bce(NULL, 1.0f, "bce");
    check_bce(w, 1.7f, "bce weighted, scale 1.7");

    /* No token with a target: zero loss, zero dh, dE untouched. */
    const int32_t none[BCE_T] = {0};
    float h[BCE_T * BCE_D], dh[BCE_T * BCE_D], E[BCE_ROWS * BCE_D], dE[BCE_ROWS * BCE_D];
    for (int i = 0; i < BCE_T * BCE_D; i++) h[i] = dh[i] = 1.0f;
    for (int i = 0; i < BCE_ROWS * BCE_D; i++) E[i] = dE[i] = 1.0f;
    assert_true(br_bce_loss(h, none, none, NULL, BCE_T, BCE_D, E, dE, dh, 1.0f) == 0.0);
    for (int i = 0; i < BCE_T * BCE_D; i++) assert_true(dh[i] == 0.0f);
    for (int i = 0; i < BCE_ROWS * BCE_D; i++) assert_true(dE[i] == 1.0f);
}

/* ---- full SASRec loss ---- */

typedef struct model_ctx {
    br_model *m;
    const br_batch *b;
    float *x, *h, *dh, *dE; /* dh, dE: scratch the loss writes during differencing */
    uint64_t key;
} model_ctx;

/* The training loss as br_trainer_step computes it, dropout on. */
static double model_obj(void *p) {
    model_ctx *c = p;
    const br_tokens tok = br_batch_tokens(c->b);
    br_model_gather(c->m, c->b->item, c->b->n_tok, c->x);
    c->m->backbone->vt->forward(c->m->backbone, &c->m->params, &tok, c->x, c->h, 1, c->key);
    return br_bce_loss(c->h, c->b->target, c->b->neg, NULL, c->b->n_tok, c->m->cfg.dim,
                       br_model_items(c->m), c->dE, c->dh, 1.0f);
}

static void test_model(void **state) {
    /* Train inputs of 7 (truncated to max_len 6), 2 and 4 items, with items
     * repeated inside and across sequences. */
    static const char *text = "7 1 4 9 4 12 30 2 17 4 25\n"
                              "3 5 8 11 20 6\n"
                              "12 30 2 22 19 2 27 14\n";
    char path[64];
    br_dataset ds;
    br_error err;
    assert_non_null(test_write_tmp(path, sizeof path, text));
    assert_int_equal(br_dataset_load(path, &ds, &err), 0);
    unlink(path);

    br_model_config cfg;
    br_model_config_defaults(&cfg);
    cfg.n_items = 30, cfg.dim = 8, cfg.n_layers = 2, cfg.n_heads = 2, cfg.max_len = 6;
    cfg.hidden_dropout = cfg.attn_dropout = 0.1f;
    br_model m;
    assert_int_equal(br_model_create(&m, &cfg, &err), 0);
    br_model_init_weights(&m, 17);
    /* The reference init (std 0.02, zero biases) makes attention uniform and
     * gradients tiny: scale weights up, perturb LayerNorm weights around 1
     * and give biases small values, so every path carries signal. */
    br_rng r;
    br_rng_seed(&r, 17, 1);
    for (int i = 0; i < m.params.n; i++) {
        const br_param *pi = &m.params.list[i];
        float *w = br_pdata(&m.params, i);
        if (strstr(pi->name, "LayerNorm.weight")) fill_normal(w, (long)pi->numel, 1, 0.1f, &r);
        else if (pi->ndim == 1) fill_normal(w, (long)pi->numel, 0, 0.1f, &r);
        else
            for (size_t k = 0; k < pi->numel; k++) w[k] *= 15.0f;
    }

    br_batch b;
    assert_int_equal(br_batch_alloc(&b, 3, 3 * cfg.max_len, &err), 0);
    for (int32_t u = 0; u < 3; u++) br_batch_add(&b, &ds, u, BR_SPLIT_TRAIN, cfg.max_len);
    assert_int_equal(b.n_seq, 3);
    assert_int_equal(b.n_tok, 12);
    br_batch_sample_negatives(&b, &ds, 99);
    assert_int_equal(br_model_reserve(&m, b.n_tok, b.n_seq, &err), 0);

    const long TD = (long)b.n_tok * cfg.dim, ED = (long)(cfg.n_items + 1) * cfg.dim;
    model_ctx c = {&m, &b, alloc_f(TD), alloc_f(TD), alloc_f(TD), alloc_f(ED), 0x5a5a};
    /* Analytic gradient, as the trainer does it: the item table gets the
     * loss's output-side gradient and the input gather's scattered one. */
    float *dh = alloc_f(TD), *dx = alloc_f(TD);
    const br_tokens tok = br_batch_tokens(&b);
    br_params_zero_grad(&m.params);
    br_model_gather(&m, b.item, b.n_tok, c.x);
    m.backbone->vt->forward(m.backbone, &m.params, &tok, c.x, c.h, 1, c.key);
    const double loss = br_bce_loss(c.h, b.target, b.neg, NULL, b.n_tok, cfg.dim, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    m.backbone->vt->backward(m.backbone, &m.params, &tok, dh, dx);
    br_model_scatter_grad(&m, b.item, b.n_tok, dx);
    /* Same key, same masks: the objective reproduces the loss exactly. */
    assert_true(model_obj(&c) == loss);

    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < m.params.n; i++) {
        const br_param *pi = &m.params.list[i];
        const fd_var v = {pi->name, br_pdata(&m.params, i), br_pgrad(&m.params, i), (long)pi->numel};
        double e;
        if (i == m.item_emb) {
            /* Random entries would mostly hit unused rows: take rows that
             * are inputs, targets and negatives, plus the padding row. */
            long idx[13];
            for (int k = 0; k < 12; k++) {
                const int t = (int)br_rng_below(&r, (uint64_t)b.n_tok);
                const int32_t row = k % 3 == 0 ? b.item[t] : k % 3 == 1 ? b.target[t] : b.neg[t];
                idx[k] = (long)row * cfg.dim + (long)br_rng_below(&r, (uint64_t)cfg.dim);
            }
            idx[12] = (long)br_rng_below(&r, (uint64_t)cfg.dim);
            e = check_indices(model_obj, &c, &v, idx, 13, &model_opts);
        } else {
            e = check_sample(model_obj, &c, &v, 8, &model_opts, &r);
        }
        if (e > worst) worst = e, worst_name = pi->name;
    }
    const fd_var all = {"all parameters", m.params.data, m.params.grad, (long)m.params.total};
    const double e_dir = check_direction(model_obj, &c, &all, 1, &model_opts, &r);
    print_message("%-26s worst entry %.1e (%s) | direction %.1e\n", "sasrec loss", worst, worst_name,
                  e_dir);

    free(c.x), free(c.h), free(c.dh), free(c.dE), free(dh), free(dx);
    br_batch_free(&b);
    br_model_free(&m);
    br_dataset_free(&ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_linear_products),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_column_sums),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_gelu_values),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_padded),
        cmocka_unit_test(test_bce),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
