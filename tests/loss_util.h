/* Shared helpers of the loss tests (test_losses.c, test_sampled_ce.c): a
 * random problem of tokens against a catalogue, br_xent_loss against a
 * reference in double, zero and reproducible results, and finite
 * differences of a loss w.r.t. h and the item table. */
#ifndef BR_LOSS_UTIL_H
#define BR_LOSS_UTIL_H

#include "testutil.h"
#include "fixture_util.h"

#include <math.h>

#include "train/loss.h"
#include "util/rng.h"

static inline float *alloc_f(long n) {
    float *p = calloc((size_t)n, sizeof *p);
    assert_non_null(p);
    return p;
}

static inline void fill_normal(float *x, long n, float std, br_rng *r) {
    for (long i = 0; i < n; i++) x[i] = std * (float)br_rng_normal(r);
}

/* ---- the problem ------------------------------------------------------ */

/* T tokens of dimension D against items 1..N (row 0 padding). */
typedef struct problem {
    int32_t T, N;
    int D;
    float *h, *E;
    int32_t *target, *target2, *neg; /* neg: NULL unless asked for */
    float *mix, *weight;
} problem;

/* Random h and E; targets over 1..N with every 5th token unlabelled and,
 * with negs, a negative per token; with mixup, partner labels on most
 * tokens (target2 0 and mix 1 elsewhere); with weighted, token weights. */
static inline void problem_random(problem *p, int32_t T, int32_t N, int D, int mixup, int weighted, int negs,
                                  br_rng *r) {
    memset(p, 0, sizeof *p);
    p->T = T, p->N = N, p->D = D;
    p->h = alloc_f((long)T * D);
    p->E = alloc_f((long)(N + 1) * D);
    fill_normal(p->h, (long)T * D, 1.0f, r);
    fill_normal(p->E, (long)(N + 1) * D, 0.5f, r);
    p->target = calloc((size_t)T, sizeof *p->target);
    assert_non_null(p->target);
    if (negs) assert_non_null(p->neg = calloc((size_t)T, sizeof *p->neg));
    for (int32_t t = 0; t < T; t++) {
        p->target[t] = t % 5 == 3 ? 0 : 1 + (int32_t)br_rng_below(r, (uint64_t)N);
        if (negs) p->neg[t] = 1 + (int32_t)br_rng_below(r, (uint64_t)N);
    }
    if (mixup) {
        p->target2 = calloc((size_t)T, sizeof *p->target2);
        p->mix = alloc_f(T);
        assert_non_null(p->target2);
        for (int32_t t = 0; t < T; t++) {
            const int has = t % 4 != 1;
            p->target2[t] = has ? 1 + (int32_t)br_rng_below(r, (uint64_t)N) : 0;
            p->mix[t] = has ? (float)br_rng_uniform(r) : 1.0f;
        }
    }
    if (weighted) {
        p->weight = alloc_f(T);
        for (int32_t t = 0; t < T; t++) p->weight[t] = (float)br_rng_uniform(r);
    }
}

static inline void problem_free(problem *p) {
    free(p->h), free(p->E), free(p->target), free(p->target2), free(p->neg), free(p->mix), free(p->weight);
}

static inline br_xent_labels labels_of(const problem *p) {
    br_xent_labels lb = {p->target, p->target2, p->mix, p->weight};
    return lb;
}

/* ---- results ---------------------------------------------------------- */

/* |a - b| <= tol * max(max|b|, 0.01) over n entries: the floor lets exact
 * zeros (one item: p = 1) come out as rounding noise. */
static inline void assert_close_rel(const char *what, const float *a, const double *b, long n, double tol) {
    double mb = 0.0;
    for (long i = 0; i < n; i++) mb = fmax(mb, fabs(b[i]));
    for (long i = 0; i < n; i++)
        if (fabs(a[i] - b[i]) > tol * fmax(mb, 1e-2))
            fail_msg("%s[%ld]: %.9g vs reference %.9g (max %.3g)", what, i, (double)a[i], b[i], mb);
}

/* A reference in double of br_xent_loss on workspace x (arg: its own
 * parameters), with norm = scale / #{t: target_t > 0}: returns the loss and
 * accumulates its gradient into dh and dE. */
typedef double (*loss_ref_fn)(const problem *p, const br_xent *x, float gamma, double norm, const void *arg,
                              double *dh, double *dE);

/* br_xent_loss on x against ref: the loss within 1e-5, dh and dE within
 * 2e-5 of their largest entry, exact zeros on the padding row and on the
 * tokens without target; what names the case in a failure. */
static inline void check_against_ref(const char *what, const problem *p, br_xent *x, float gamma, float scale,
                                     loss_ref_fn ref, const void *arg) {
    const long nh = (long)p->T * p->D, ne = (long)(p->N + 1) * p->D;
    float *dh = alloc_f(nh), *dE = alloc_f(ne);
    double *rdh = calloc((size_t)nh, sizeof *rdh), *rdE = calloc((size_t)ne, sizeof *rdE);
    assert_true(rdh && rdE);
    fill_normal(dh, nh, 9.0f, &(br_rng){{1, 2, 3, 4}}); /* overwritten */
    const br_xent_labels lb = labels_of(p);
    const double loss = br_xent_loss(x, p->h, p->T, &lb, gamma, p->E, dE, dh, scale);
    int64_t count = 0;
    for (int32_t t = 0; t < p->T; t++) count += p->target[t] > 0;
    const double want = ref(p, x, gamma, count ? scale / (double)count : 0.0, arg, rdh, rdE);
    if (fabs(loss - want) > 1e-5 * fabs(want)) fail_msg("%s: loss %.9g vs reference %.9g", what, loss, want);
    assert_close_rel("dh", dh, rdh, nh, 2e-5);
    assert_close_rel("dE", dE, rdE, ne, 2e-5);
    for (int d = 0; d < p->D; d++) assert_true(dE[d] == 0.0f); /* the padding row */
    for (int32_t t = 0; t < p->T; t++)
        if (p->target[t] == 0)
            for (int d = 0; d < p->D; d++) assert_true(dh[(size_t)t * p->D + d] == 0.0f);
    free(dh), free(dE), free(rdh), free(rdE);
}

/* No target at all on x (9 items of dimension 4): zero loss and gradient. */
static inline void check_no_targets(br_xent *x, uint64_t seed) {
    assert_non_null(x);
    br_rng r;
    br_rng_seed(&r, seed, 0);
    problem p;
    problem_random(&p, 6, 9, 4, 0, 0, 0, &r);
    memset(p.target, 0, 6 * sizeof *p.target);
    float *dh = alloc_f(24), *dE = alloc_f(40);
    fill_normal(dh, 24, 1.0f, &r);
    const br_xent_labels lb = labels_of(&p);
    assert_true(br_xent_loss(x, p.h, 6, &lb, 0.0f, p.E, dE, dh, 1.0f) == 0.0);
    for (int i = 0; i < 24; i++) assert_true(dh[i] == 0.0f);
    for (int i = 0; i < 40; i++) assert_true(dE[i] == 0.0f);
    free(dh), free(dE);
    problem_free(&p);
}

/* The same loss and gradient bits from workspaces a and b (one workspace
 * twice, or two with the same draw) on p; dE accumulates. */
static inline void check_same_bits(br_xent *a, br_xent *b, const problem *p, float gamma) {
    const long nh = (long)p->T * p->D, ne = (long)(p->N + 1) * p->D;
    float *dh1 = alloc_f(nh), *dh2 = alloc_f(nh), *dE1 = alloc_f(ne), *dE2 = alloc_f(ne);
    const br_xent_labels lb = labels_of(p);
    const double l1 = br_xent_loss(a, p->h, p->T, &lb, gamma, p->E, dE1, dh1, 1.0f);
    const double l2 = br_xent_loss(b, p->h, p->T, &lb, gamma, p->E, dE2, dh2, 1.0f);
    assert_memory_equal(&l1, &l2, sizeof l1);
    assert_memory_equal(dh1, dh2, (size_t)nh * sizeof *dh1);
    assert_memory_equal(dE1, dE2, (size_t)ne * sizeof *dE1);
    br_xent_loss(a, p->h, p->T, &lb, gamma, p->E, dE1, dh1, 1.0f);
    for (long i = 0; i < ne; i++) assert_float_equal(dE1[i], 2.0f * dE2[i], 1e-6f);
    free(dh1), free(dh2), free(dE1), free(dE2);
}

/* ---- finite differences -----------------------------------------------
 * The kernels are float32, so objectives are summed in double and each
 * difference divides by the perturbation actually stored. */

#define FD_EPS 1e-2f
#define FD_EPS_DIR 1e-3f /* std of each entry of the random direction */
#define FD_TOL 1e-2
#define FD_TOL_DIR 1e-3
#define FD_FLOOR 1e-2

/* A loss of p's h and E (arg: its own parameters): returns it, writes
 * d loss / d h to dh and accumulates d loss / d E into dE. */
typedef double (*fd_loss_fn)(const problem *p, void *arg, float *dh, float *dE);

typedef struct fd_ctx {
    const problem *p;
    fd_loss_fn loss;
    void *arg;
    float *dh, *dE; /* scratch */
} fd_ctx;

static inline double fd_obj(void *ctx) {
    const fd_ctx *c = ctx;
    return c->loss(c->p, c->arg, c->dh, c->dE);
}

/* Central differences of loss at every entry of p's h and item table
 * against its gradient at p, then along one random direction (from seed)
 * over both; prints the worst errors after label, and note after them. */
static inline void fd_check(const char *label, const char *note, const problem *p, fd_loss_fn loss, void *arg,
                            uint64_t seed) {
    const long nh = (long)p->T * p->D, ne = (long)(p->N + 1) * p->D;
    fd_ctx c = {p, loss, arg, alloc_f(nh), alloc_f(ne)};
    float *dh = alloc_f(nh), *dE = alloc_f(ne);
    loss(p, arg, dh, dE);
    double worst_h = 0.0, worst_e = 0.0;
    for (long i = 0; i < nh; i++)
        worst_h = fmax(worst_h, fx_fd_entry(fd_obj, &c, "h", p->h, i, dh[i], FD_EPS, FD_FLOOR, FD_TOL));
    for (long i = 0; i < ne; i++)
        worst_e = fmax(worst_e, fx_fd_entry(fd_obj, &c, "E", p->E, i, dE[i], FD_EPS, FD_FLOOR, FD_TOL));

    br_rng r;
    br_rng_seed(&r, seed, 0);
    float *oh = malloc((size_t)nh * sizeof *oh), *oe = malloc((size_t)ne * sizeof *oe);
    float *vh = alloc_f(nh), *ve = alloc_f(ne);
    assert_true(oh && oe);
    memcpy(oh, p->h, (size_t)nh * sizeof *oh);
    memcpy(oe, p->E, (size_t)ne * sizeof *oe);
    fill_normal(vh, nh, FD_EPS_DIR, &r);
    fill_normal(ve, ne, FD_EPS_DIR, &r);
    for (long i = 0; i < nh; i++) p->h[i] = oh[i] + vh[i];
    for (long i = 0; i < ne; i++) p->E[i] = oe[i] + ve[i];
    const double fp = fd_obj(&c);
    double an = 0.0;
    for (long i = 0; i < nh; i++) {
        const float xp = p->h[i];
        p->h[i] = oh[i] - vh[i];
        an += (double)dh[i] * ((double)xp - (double)p->h[i]);
    }
    for (long i = 0; i < ne; i++) {
        const float xp = p->E[i];
        p->E[i] = oe[i] - ve[i];
        an += (double)dE[i] * ((double)xp - (double)p->E[i]);
    }
    const double fm = fd_obj(&c);
    memcpy(p->h, oh, (size_t)nh * sizeof *oh);
    memcpy(p->E, oe, (size_t)ne * sizeof *oe);
    const double e_dir = fx_fd_rel(fp - fm, an, FD_FLOOR * 2.0 * FD_EPS_DIR);
    if (e_dir > FD_TOL_DIR)
        fail_msg("%s: directional difference %.7g, analytic %.7g (rel err %.2e)", label, fp - fm, an, e_dir);
    print_message("%-30s h %.1e  E %.1e | direction %.1e%s\n", label, worst_h, worst_e, e_dir, note);
    free(oh), free(oe), free(vh), free(ve), free(dh), free(dE), free(c.dh), free(c.dE);
}

#endif
