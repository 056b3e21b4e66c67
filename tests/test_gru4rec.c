/* The GRU4Rec backbone: parity with torch.nn.GRU
 * (tests/fixtures/gen_gru4rec_fixture.py: outputs, BCE loss and every
 * parameter gradient of one ragged batch, float64 reference stored as
 * float32), finite-difference checks of the full training loss with dropout
 * on, and the dropout masks' keying.
 *
 * Parity tolerance: max|c - ref| <= RTOL * max|ref| per tensor, as in
 * tests/test_parity.c. The C model runs in float32 through at most 6
 * recurrent steps of dot products of at most 16 terms; errors are a few
 * dozen unit roundoffs (6e-8) of each tensor's scale. Small gradient entries
 * are differences of large terms, so their error follows the tensor's
 * scale, hence relative to the max. */
#include "testutil.h"

#include <math.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"
#include "util/rng.h"

#define FIXTURE "tests/fixtures/gru4rec_tiny.safetensors"
#define RTOL 1e-5

static float *alloc_f(long n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    assert_non_null(p);
    return p;
}

/* ---- fixture ----------------------------------------------------------- */

static const br_st_entry *entry(const br_st_file *f, const char *name, br_st_dtype dtype,
                                int64_t numel) {
    const br_st_entry *e = br_st_find(f, name);
    if (!e) fail_msg("fixture has no tensor '%s'", name);
    assert_int_equal(e->dtype, dtype);
    assert_int_equal(e->numel, numel);
    return e;
}

/* The fixture's ragged batch: B sequences, T tokens, in fixture order. */
typedef struct fixture {
    br_st_file f;
    br_model_config cfg;
    int B, T, D;
    const int64_t *seq_len, *input_ids, *target_pos, *target_neg;
    const float *sequence_output;
    float loss;
} fixture;

static void fixture_load(fixture *fx) {
    br_error err;
    if (br_st_read(FIXTURE, &fx->f, &err) != 0) fail_msg("%s", err.msg);
    br_model_config_defaults(&fx->cfg);
    strcpy(fx->cfg.model, "gru4rec");
    const char *v = br_st_meta_get(&fx->f, "n_items");
    assert_non_null(v);
    fx->cfg.n_items = atoi(v);
    assert_non_null(v = br_st_meta_get(&fx->f, "hidden_size"));
    fx->cfg.dim = atoi(v);
    assert_non_null(v = br_st_meta_get(&fx->f, "gru_hidden_size"));
    assert_int_equal(atoi(v), 2 * fx->cfg.dim);
    /* The C dropout draws its own masks: parity is checked without dropout. */
    fx->cfg.hidden_dropout = fx->cfg.attn_dropout = 0.0f;
    const br_st_entry *lens = br_st_find(&fx->f, "seq_len");
    assert_non_null(lens);
    fx->B = (int)lens->numel;
    fx->seq_len = lens->data;
    fx->T = 0;
    for (int s = 0; s < fx->B; s++) fx->T += (int)fx->seq_len[s];
    fx->D = fx->cfg.dim;
    fx->input_ids = entry(&fx->f, "input_ids", BR_ST_I64, fx->T)->data;
    fx->target_pos = entry(&fx->f, "target_pos", BR_ST_I64, fx->T)->data;
    fx->target_neg = entry(&fx->f, "target_neg", BR_ST_I64, fx->T)->data;
    fx->sequence_output = entry(&fx->f, "sequence_output", BR_ST_F32, (int64_t)fx->T * fx->D)->data;
    fx->loss = *(const float *)entry(&fx->f, "loss", BR_ST_F32, 1)->data;
}

/* Creates the model by name and loads every parameter, by name, from the fixture. */
static void model_load(br_model *m, const fixture *fx) {
    br_error err;
    if (br_model_create(m, &fx->cfg, &err) != 0) fail_msg("%s", err.msg);
    for (int i = 0; i < m->params.n; i++) {
        const br_param *p = &m->params.list[i];
        const br_st_entry *e = entry(&fx->f, p->name, BR_ST_F32, (int64_t)p->numel);
        assert_int_equal(e->ndim, p->ndim);
        for (int d = 0; d < p->ndim; d++) assert_int_equal(e->shape[d], p->shape[d]);
        memcpy(br_pdata(&m->params, i), e->data, p->numel * sizeof(float));
    }
    br_params_zero_grad(&m->params);
}

/* A ragged batch owned by the test. */
typedef struct ragged {
    int32_t n_seq, n_tok;
    int32_t *seq_off, *pos, *item, *target, *neg;
    int32_t *src; /* the token's index in the fixture's order */
} ragged;

static void ragged_alloc(ragged *r, int n_seq, int n_tok) {
    r->n_seq = n_seq;
    r->n_tok = n_tok;
    r->seq_off = calloc((size_t)n_seq + 1, sizeof(int32_t));
    r->pos = calloc((size_t)n_tok + 1, sizeof(int32_t));
    r->item = calloc((size_t)n_tok + 1, sizeof(int32_t));
    r->target = calloc((size_t)n_tok + 1, sizeof(int32_t));
    r->neg = calloc((size_t)n_tok + 1, sizeof(int32_t));
    r->src = calloc((size_t)n_tok + 1, sizeof(int32_t));
    assert_true(r->seq_off && r->pos && r->item && r->target && r->neg && r->src);
}

static void ragged_free(ragged *r) {
    free(r->seq_off);
    free(r->pos);
    free(r->item);
    free(r->target);
    free(r->neg);
    free(r->src);
}

static br_tokens ragged_tokens(const ragged *r) {
    return (br_tokens){r->n_seq, r->n_tok, r->seq_off, r->pos};
}

/* The fixture's sequences in the given order. */
static void ragged_from_fixture(ragged *r, const fixture *fx, const int *order) {
    int32_t start[64];
    assert_true(fx->B <= 64);
    start[0] = 0;
    for (int s = 1; s < fx->B; s++) start[s] = start[s - 1] + (int32_t)fx->seq_len[s - 1];
    ragged_alloc(r, fx->B, fx->T);
    int t = 0;
    for (int s = 0; s < fx->B; s++) {
        const int b = order[s], n = (int)fx->seq_len[b];
        for (int j = 0; j < n; j++, t++) {
            const int k = start[b] + j;
            r->pos[t] = j; /* unused by GRU4Rec */
            r->item[t] = (int32_t)fx->input_ids[k];
            r->target[t] = (int32_t)fx->target_pos[k];
            r->neg[t] = (int32_t)fx->target_neg[k];
            r->src[t] = k;
        }
        r->seq_off[s + 1] = t;
    }
}

/* ---- parity ------------------------------------------------------------ */

static double max_abs(const float *x, size_t n) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)x[i]));
    return mx;
}

/* max|c - ref| / max|ref|; the scale is returned too. */
static double rel_err(const float *c, const float *ref, size_t n, double *scale) {
    double diff = 0.0;
    for (size_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)c[i] - (double)ref[i]));
    *scale = max_abs(ref, n);
    return *scale > 0.0 ? diff / *scale : diff;
}

/* One forward/backward of the fixture batch in the given sequence order,
 * checked against the reference; verbose prints every tensor's error. */
static void check_batch(const fixture *fx, const int *order, int verbose) {
    br_model m;
    ragged r;
    br_error err;
    model_load(&m, fx);
    ragged_from_fixture(&r, fx, order);
    const int T = r.n_tok, D = fx->D;
    if (br_model_reserve(&m, T, r.n_seq, &err) != 0) fail_msg("%s", err.msg);
    float *x = alloc_f((long)T * D), *h = alloc_f((long)T * D), *dh = alloc_f((long)T * D);
    float *ref = alloc_f((long)T * D);

    const br_tokens tok = ragged_tokens(&r);
    br_backbone *bb = m.backbone;
    br_model_gather(&m, r.item, T, x);
    bb->vt->forward(bb, &m.params, &tok, x, h, 1, 7);

    for (int t = 0; t < T; t++)
        memcpy(ref + (size_t)t * D, fx->sequence_output + (size_t)r.src[t] * D, (size_t)D * sizeof(float));
    double scale, e = rel_err(h, ref, (size_t)T * D, &scale);
    if (verbose) print_message("sequence_output: rel err %.3g (max |ref| %.3g)\n", e, scale);
    assert_true(e <= RTOL);

    const double loss = br_bce_loss(h, r.target, r.neg, NULL, T, D, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    e = fabs(loss - fx->loss) / fabs(fx->loss);
    if (verbose) print_message("loss %.9f vs %.9f: rel err %.3g\n", loss, (double)fx->loss, e);
    assert_true(e <= RTOL);

    /* x is free again: it takes the input-embedding gradient. */
    bb->vt->backward(bb, &m.params, &tok, dh, x);
    br_model_scatter_grad(&m, r.item, T, x);

    double worst = 0.0;
    const char *worst_name = "";
    char name[BR_PARAM_NAME_MAX + 8];
    for (int i = 0; i < m.params.n; i++) {
        const br_param *p = &m.params.list[i];
        snprintf(name, sizeof name, "grad.%s", p->name);
        const float *g_ref = entry(&fx->f, name, BR_ST_F32, (int64_t)p->numel)->data;
        e = rel_err(br_pgrad(&m.params, i), g_ref, p->numel, &scale);
        if (verbose) print_message("%-32s rel err %.3g (scale %.3g)\n", name, e, scale);
        if (e > worst) {
            worst = e;
            worst_name = p->name;
        }
    }
    print_message("worst gradient rel err %.3g (%s)\n", worst, worst_name);
    assert_true(worst <= RTOL);

    free(x), free(h), free(dh), free(ref);
    ragged_free(&r);
    br_model_free(&m);
}

static void test_forward_backward_match_reference(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    for (int s = 0; s < fx.B; s++) order[s] = s;
    check_batch(&fx, order, 1);
    br_st_free(&fx.f);
}

/* The recurrence is batched over sequences sorted by length: results must
 * not depend on the batch order of the sequences. */
static void test_sequence_order_does_not_matter(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    for (int s = 0; s < fx.B; s++) order[s] = fx.B - 1 - s;
    check_batch(&fx, order, 0);
    int k = 0;
    for (int s = 1; s < fx.B; s += 2) order[k++] = s;
    for (int s = 0; s < fx.B; s += 2) order[k++] = s;
    check_batch(&fx, order, 0);
    br_st_free(&fx.f);
}

/* ---- finite differences ------------------------------------------------ */

/* A small model with dropout and a batch of sequences of lengths 4, 1, 0
 * (an empty sequence must be harmless), 7 and 3, items repeated within and
 * across sequences. */
#define FD_NSEQ 5
static const int fd_lens[FD_NSEQ] = {4, 1, 0, 7, 3};

typedef struct fd_ctx {
    br_model m;
    ragged r;
    float *x, *h, *dh, *dE; /* dh, dE: scratch the loss writes during differencing */
    uint64_t key;
} fd_ctx;

static void fd_setup(fd_ctx *c, float dropout) {
    br_model_config cfg;
    br_error err;
    br_model_config_defaults(&cfg);
    strcpy(cfg.model, "gru4rec");
    cfg.n_items = 30, cfg.dim = 8, cfg.hidden_dropout = dropout;
    /* A larger item table than the default 0.02 so every path carries signal. */
    cfg.init_std = 0.5f;
    assert_int_equal(br_model_create(&c->m, &cfg, &err), 0);
    br_model_init_weights(&c->m, 23);
    int n_tok = 0;
    for (int s = 0; s < FD_NSEQ; s++) n_tok += fd_lens[s];
    ragged_alloc(&c->r, FD_NSEQ, n_tok);
    br_rng rng;
    br_rng_seed(&rng, 23, 2);
    int t = 0;
    for (int s = 0; s < FD_NSEQ; s++) {
        for (int j = 0; j < fd_lens[s]; j++, t++) {
            c->r.item[t] = 1 + (int32_t)br_rng_below(&rng, 12);
            c->r.target[t] = 1 + (int32_t)br_rng_below(&rng, 12);
            c->r.neg[t] = 13 + (int32_t)br_rng_below(&rng, 18);
        }
        c->r.seq_off[s + 1] = t;
    }
    assert_int_equal(br_model_reserve(&c->m, n_tok, FD_NSEQ, &err), 0);
    const long TD = (long)n_tok * cfg.dim;
    c->x = alloc_f(TD), c->h = alloc_f(TD), c->dh = alloc_f(TD);
    c->dE = alloc_f((long)(cfg.n_items + 1) * cfg.dim);
    c->key = 0x6a75;
}

static void fd_teardown(fd_ctx *c) {
    free(c->x), free(c->h), free(c->dh), free(c->dE);
    ragged_free(&c->r);
    br_model_free(&c->m);
}

/* The training loss as the trainer computes it, dropout on. */
static double fd_loss(fd_ctx *c) {
    const br_tokens tok = ragged_tokens(&c->r);
    br_model_gather(&c->m, c->r.item, c->r.n_tok, c->x);
    c->m.backbone->vt->forward(c->m.backbone, &c->m.params, &tok, c->x, c->h, 1, c->key);
    return br_bce_loss(c->h, c->r.target, c->r.neg, NULL, c->r.n_tok, c->m.cfg.dim,
                       br_model_items(&c->m), c->dE, c->dh, 1.0f);
}

/* Central-difference steps between float rounding noise and truncation
 * error (as tests/test_gradcheck.c's model checks): per entry, and along
 * one random direction over all parameters at once. Errors relative to
 * max(|fd|, |analytic|, FD_FLOOR) since rounding noise does not shrink with
 * the gradient. */
#define FD_EPS 5e-3f
#define FD_EPS_DIR 3e-4f
#define FD_TOL 1e-2
#define FD_TOL_DIR 1e-3
#define FD_FLOOR 1e-2

static double fd_rel(double fd, double an, double floor) {
    return fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), floor);
}

/* Checks entry i of parameter tensor w (gradient g); returns the rel error. */
static double fd_entry(fd_ctx *c, const char *name, float *w, const float *g, long i) {
    const float w0 = w[i];
    w[i] = w0 + FD_EPS;
    const float wp = w[i];
    const double fp = fd_loss(c);
    w[i] = w0 - FD_EPS;
    const float wm = w[i];
    const double fm = fd_loss(c);
    w[i] = w0;
    /* Divide by the step actually stored in float. */
    const double fd = (fp - fm) / ((double)wp - (double)wm);
    const double e = fd_rel(fd, g[i], FD_FLOOR);
    if (e > FD_TOL)
        fail_msg("%s[%ld]: finite difference %.7g, analytic %.7g (rel err %.2e)", name, i, fd,
                 (double)g[i], e);
    return e;
}

static void test_gradients_finite_differences(void **state) {
    fd_ctx c;
    fd_setup(&c, 0.3f);
    br_params *P = &c.m.params;
    const int D = c.m.cfg.dim;
    br_params_zero_grad(P);
    const br_tokens tok = ragged_tokens(&c.r);
    float *dx = alloc_f((long)c.r.n_tok * D);
    br_model_gather(&c.m, c.r.item, c.r.n_tok, c.x);
    c.m.backbone->vt->forward(c.m.backbone, P, &tok, c.x, c.h, 1, c.key);
    const double loss = br_bce_loss(c.h, c.r.target, c.r.neg, NULL, c.r.n_tok, D,
                                    br_model_items(&c.m), br_pgrad(P, c.m.item_emb), c.dh, 1.0f);
    c.m.backbone->vt->backward(c.m.backbone, P, &tok, c.dh, dx);
    br_model_scatter_grad(&c.m, c.r.item, c.r.n_tok, dx);
    /* Same key, same masks: the objective reproduces the loss exactly. */
    assert_true(fd_loss(&c) == loss);

    br_rng rng;
    br_rng_seed(&rng, 23, 3);
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < P->n; i++) {
        const br_param *pi = &P->list[i];
        float *w = br_pdata(P, i);
        const float *g = br_pgrad(P, i);
        double e_t = 0.0;
        for (int k = 0; k < 16; k++) {
            long idx;
            if (i == c.m.item_emb) {
                /* Rows that are inputs, targets or negatives: random rows
                 * would mostly be unused ones with zero gradient. */
                const int t = (int)br_rng_below(&rng, (uint64_t)c.r.n_tok);
                const int32_t row = k % 3 == 0 ? c.r.item[t] : k % 3 == 1 ? c.r.target[t] : c.r.neg[t];
                idx = (long)row * D + (long)br_rng_below(&rng, (uint64_t)D);
            } else {
                idx = (long)br_rng_below(&rng, (uint64_t)pi->numel);
            }
            e_t = fmax(e_t, fd_entry(&c, pi->name, w, g, idx));
        }
        print_message("%-26s worst entry rel err %.1e\n", pi->name, e_t);
        if (e_t > worst) worst = e_t, worst_name = pi->name;
    }

    /* Directional derivative over all parameters at once. */
    const long n = (long)P->total;
    float *orig = alloc_f(n), *dir = alloc_f(n);
    memcpy(orig, P->data, (size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) dir[i] = FD_EPS_DIR * (float)br_rng_normal(&rng);
    for (long i = 0; i < n; i++) P->data[i] = orig[i] + dir[i];
    const double fp = fd_loss(&c);
    double an = 0.0;
    for (long i = 0; i < n; i++) {
        const float wp = P->data[i];
        P->data[i] = orig[i] - dir[i];
        an += (double)P->grad[i] * ((double)wp - (double)P->data[i]);
    }
    const double fm = fd_loss(&c);
    memcpy(P->data, orig, (size_t)n * sizeof(float));
    const double e_dir = fd_rel(fp - fm, an, FD_FLOOR * 2.0 * FD_EPS_DIR);
    print_message("gru4rec loss: worst entry %.1e (%s) | direction %.1e\n", worst, worst_name, e_dir);
    if (e_dir > FD_TOL_DIR)
        fail_msg("directional difference %.7g, analytic %.7g (rel err %.2e)", fp - fm, an, e_dir);

    free(orig), free(dir), free(dx);
    fd_teardown(&c);
}

/* ---- dropout keying ---------------------------------------------------- */

static void test_dropout_is_keyed(void **state) {
    fd_ctx c;
    fd_setup(&c, 0.5f);
    const size_t bytes = (size_t)c.r.n_tok * c.m.cfg.dim * sizeof(float);
    const br_tokens tok = ragged_tokens(&c.r);
    br_backbone *bb = c.m.backbone;
    float *a = alloc_f((long)c.r.n_tok * c.m.cfg.dim), *b = alloc_f((long)c.r.n_tok * c.m.cfg.dim);
    br_model_gather(&c.m, c.r.item, c.r.n_tok, c.x);

    /* Same key: bit-identical; another key: other masks. */
    bb->vt->forward(bb, &c.m.params, &tok, c.x, a, 1, 1);
    bb->vt->forward(bb, &c.m.params, &tok, c.x, b, 1, 1);
    assert_memory_equal(a, b, bytes);
    bb->vt->forward(bb, &c.m.params, &tok, c.x, b, 1, 2);
    assert_memory_not_equal(a, b, bytes);
    /* Evaluation ignores dropout and the key. */
    bb->vt->forward(bb, &c.m.params, &tok, c.x, a, 0, 1);
    bb->vt->forward(bb, &c.m.params, &tok, c.x, b, 0, 2);
    assert_memory_equal(a, b, bytes);

    free(a), free(b);
    fd_teardown(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_backward_match_reference),
        cmocka_unit_test(test_sequence_order_does_not_matter),
        cmocka_unit_test(test_gradients_finite_differences),
        cmocka_unit_test(test_dropout_is_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
