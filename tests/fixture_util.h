/* Shared helpers of the backbone parity and gradient tests (test_parity.c,
 * test_gru4rec.c, test_nextitnet.c, test_fmlprec.c; the loss tests use its
 * finite-difference helpers through loss_util.h): fixture access, the
 * ragged batch built from a fixture, the max-abs-relative comparison, and
 * central finite differences of a training objective. */
#ifndef BR_FIXTURE_UTIL_H
#define BR_FIXTURE_UTIL_H

#include "testutil.h"

#include <math.h>

#include "models/model.h"
#include "train/safetensors.h"
#include "util/rng.h"

/* ---- fixture access --------------------------------------------------- */

static inline int fx_meta_int(const br_st_file *f, const char *key) {
    const char *v = br_st_meta_get(f, key);
    if (!v) fail_msg("fixture has no metadata '%s'", key);
    return atoi(v);
}

/* Tensor `name` of the fixture, checked for dtype and size. */
static inline const br_st_entry *fx_entry(const br_st_file *f, const char *name, br_st_dtype dtype,
                                          int64_t numel) {
    const br_st_entry *e = br_st_find(f, name);
    if (!e) fail_msg("fixture has no tensor '%s'", name);
    assert_int_equal(e->dtype, dtype);
    assert_int_equal(e->numel, numel);
    return e;
}

/* Creates the model of cfg and loads every parameter, by name ("<prefix><name>")
 * and shape, from the fixture; gradients start at zero. */
static inline void fx_model_load(br_model *m, const br_model_config *cfg, const br_st_file *f,
                                 const char *prefix) {
    br_error err;
    if (br_model_create(m, cfg, &err) != 0) fail_msg("%s", err.msg);
    char full[BR_PARAM_NAME_MAX + 64];
    for (int i = 0; i < m->params.n; i++) {
        const br_param *p = &m->params.list[i];
        snprintf(full, sizeof full, "%s%s", prefix, p->name);
        const br_st_entry *e = fx_entry(f, full, BR_ST_F32, (int64_t)p->numel);
        assert_int_equal(e->ndim, p->ndim);
        for (int d = 0; d < p->ndim; d++) assert_int_equal(e->shape[d], p->shape[d]);
        memcpy(br_pdata(&m->params, i), e->data, p->numel * sizeof(float));
    }
    br_params_zero_grad(&m->params);
}

/* ---- ragged batch ----------------------------------------------------- */

/* A ragged batch owned by the test. */
typedef struct fx_ragged {
    int32_t n_seq, n_tok;
    int32_t *seq_off, *pos, *item, *target, *neg;
    int32_t *slot; /* the token's row in the fixture's tensors */
} fx_ragged;

/* Room for n_seq sequences and up to cap tokens, all zero; n_tok = 0. */
static inline void fx_ragged_alloc(fx_ragged *r, int n_seq, int cap) {
    r->seq_off = calloc((size_t)n_seq + 1, sizeof(int32_t));
    r->pos = calloc((size_t)cap + 1, sizeof(int32_t));
    r->item = calloc((size_t)cap + 1, sizeof(int32_t));
    r->target = calloc((size_t)cap + 1, sizeof(int32_t));
    r->neg = calloc((size_t)cap + 1, sizeof(int32_t));
    r->slot = calloc((size_t)cap + 1, sizeof(int32_t));
    assert_true(r->seq_off && r->pos && r->item && r->target && r->neg && r->slot);
    r->n_seq = n_seq;
    r->n_tok = 0;
}

static inline void fx_ragged_free(fx_ragged *r) {
    free(r->seq_off);
    free(r->pos);
    free(r->item);
    free(r->target);
    free(r->neg);
    free(r->slot);
}

static inline br_tokens fx_ragged_tokens(const fx_ragged *r) {
    return (br_tokens){r->n_seq, r->n_tok, r->seq_off, r->pos, NULL};
}

/* The real tokens (item > 0) of a left-padded B x L batch, sequences taken
 * in the given order; slot = b * L + j, the token's row in the padded batch. */
static inline void fx_ragged_from_padded(fx_ragged *r, int B, int L, const int64_t *input_ids,
                                         const int64_t *target_pos, const int64_t *target_neg,
                                         const int *order) {
    fx_ragged_alloc(r, B, B * L);
    for (int s = 0; s < B; s++) {
        const int b = order[s];
        for (int j = 0; j < L; j++) {
            const int k = b * L + j;
            if (input_ids[k] <= 0) continue;
            /* Left padding: the absolute position id is the slot index. */
            r->pos[r->n_tok] = j;
            r->item[r->n_tok] = (int32_t)input_ids[k];
            r->target[r->n_tok] = (int32_t)target_pos[k];
            r->neg[r->n_tok] = (int32_t)target_neg[k];
            r->slot[r->n_tok] = k;
            r->n_tok++;
        }
        r->seq_off[s + 1] = r->n_tok;
    }
}

/* Sequence orders of a B-sequence batch: reversed, and odd ones then even ones. */
static inline void fx_order_reversed(int *order, int B) {
    for (int s = 0; s < B; s++) order[s] = B - 1 - s;
}

static inline void fx_order_odd_even(int *order, int B) {
    int k = 0;
    for (int s = 1; s < B; s += 2) order[k++] = s;
    for (int s = 0; s < B; s += 2) order[k++] = s;
}

/* ---- comparison ------------------------------------------------------- */

static inline double fx_max_abs(const float *x, size_t n) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)x[i]));
    return mx;
}

/* max|c - ref| / scale, with scale = max(max|ref|, min_scale) returned
 * (absolute when the scale is zero). */
static inline double fx_rel_err(const float *c, const float *ref, size_t n, double min_scale,
                                double *scale) {
    double diff = 0.0;
    for (size_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)c[i] - (double)ref[i]));
    *scale = fmax(fx_max_abs(ref, n), min_scale);
    return *scale > 0.0 ? diff / *scale : diff;
}

/* Compares the ragged outputs h (T x D) with rows slot[t] of the reference
 * ref_rows, asserts rel err <= rtol and returns it; verbose prints it after
 * the label. */
static inline double fx_check_rows(const char *label, const float *h, const float *ref_rows,
                                   const int32_t *slot, int T, int D, double rtol, int verbose) {
    float *ref = malloc((size_t)T * D * sizeof(float) + 1);
    assert_non_null(ref);
    /* Outputs at real positions; padded slots' outputs are never used. */
    for (int t = 0; t < T; t++)
        memcpy(ref + (size_t)t * D, ref_rows + (size_t)slot[t] * D, (size_t)D * sizeof(float));
    double scale, e = fx_rel_err(h, ref, (size_t)T * D, 0.0, &scale);
    if (verbose) print_message("%ssequence_output: rel err %.3g (max |ref| %.3g)\n", label, e, scale);
    assert_true(e <= rtol);
    free(ref);
    return e;
}

/* |loss - ref| / |ref|, asserted <= rtol and returned. */
static inline double fx_check_loss(const char *label, double loss, double ref, double rtol,
                                   int verbose) {
    const double e = fabs(loss - ref) / fabs(ref);
    if (verbose) print_message("%sloss %.9f vs %.9f: rel err %.3g\n", label, loss, ref, e);
    assert_true(e <= rtol);
    return e;
}

/* Minimum scale of parameter `param`'s gradient (NULL: none). */
typedef double (*fx_min_scale_fn)(const void *ctx, const char *param);

/* Every parameter gradient of m against the fixture's "grad.<name>"; prints
 * each (verbose, names padded to width) and the worst, asserted <= rtol. */
static inline void fx_check_grads(const br_model *m, const br_st_file *f, int width,
                                  fx_min_scale_fn min_scale, const void *ctx, double rtol,
                                  int verbose) {
    double worst = 0.0, scale;
    const char *worst_name = "";
    char name[BR_PARAM_NAME_MAX + 8];
    for (int i = 0; i < m->params.n; i++) {
        const br_param *p = &m->params.list[i];
        snprintf(name, sizeof name, "grad.%s", p->name);
        const float *g_ref = fx_entry(f, name, BR_ST_F32, (int64_t)p->numel)->data;
        const double e = fx_rel_err(br_pgrad(&m->params, i), g_ref, p->numel,
                                    min_scale ? min_scale(ctx, p->name) : 0.0, &scale);
        if (verbose) print_message("%-*s rel err %.3g (scale %.3g)\n", width, name, e, scale);
        if (e > worst) worst = e, worst_name = p->name;
    }
    print_message("worst gradient rel err %.3g (%s)\n", worst, worst_name);
    assert_true(worst <= rtol);
}

/* ---- finite differences ----------------------------------------------- */

/* The objective differenced: the loss at the current parameters. */
typedef double (*fx_objective)(void *ctx);

/* |fd - an| relative to max(|fd|, |an|, floor): rounding noise does not
 * shrink with the gradient. */
static inline double fx_fd_rel(double fd, double an, double floor) {
    return fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), floor);
}

/* Central difference of obj at entry i of x (analytic gradient an), divided
 * by the step actually stored in float; fails above tol, returns the rel err. */
static inline double fx_fd_entry(fx_objective obj, void *ctx, const char *name, float *x, long i,
                                 double an, float eps, double floor, double tol) {
    const float x0 = x[i];
    x[i] = x0 + eps;
    const float xp = x[i];
    const double fp = obj(ctx);
    x[i] = x0 - eps;
    const float xm = x[i];
    const double fm = obj(ctx);
    x[i] = x0;
    const double fd = (fp - fm) / ((double)xp - (double)xm);
    const double e = fx_fd_rel(fd, an, floor);
    if (e > tol) fail_msg("%s[%ld]: finite difference %.7g, analytic %.7g (rel err %.2e)", name, i, fd, an, e);
    return e;
}

/* Moves all parameters at once by +-eps_dir * N(0, 1) (rng): returns the
 * analytic difference g . (x+ - x-) of the steps stored in float, and
 * obj(x+) - obj(x-) in *fd; the parameters are restored. */
static inline double fx_fd_direction(br_params *P, fx_objective obj, void *ctx, float eps_dir,
                                     br_rng *rng, double *fd) {
    const long n = (long)P->total;
    float *orig = malloc((size_t)n * sizeof(float)), *dir = malloc((size_t)n * sizeof(float));
    assert_true(orig && dir);
    memcpy(orig, P->data, (size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) dir[i] = eps_dir * (float)br_rng_normal(rng);
    for (long i = 0; i < n; i++) P->data[i] = orig[i] + dir[i];
    const double fp = obj(ctx);
    double an = 0.0;
    for (long i = 0; i < n; i++) {
        const float xp = P->data[i];
        P->data[i] = orig[i] - dir[i];
        an += (double)P->grad[i] * ((double)xp - (double)P->data[i]);
    }
    const double fm = obj(ctx);
    memcpy(P->data, orig, (size_t)n * sizeof(float));
    free(orig), free(dir);
    *fd = fp - fm;
    return an;
}

#endif
