/* FMLP-Rec backbone (src/models/fmlprec.c):
 *  - parity with a PyTorch reference that runs torch.fft.rfft/irfft on the
 *    left-padded batch (tests/fixtures/gen_fmlprec_fixture.py): encoder
 *    outputs at real positions, BCE loss and every parameter gradient, for
 *    an even and an odd max_len;
 *  - finite differences of the full training loss with dropout on;
 *  - bitwise determinism, and the time of one forward + backward at the
 *    reference size.
 *
 * Parity tolerance: max|c - ref| <= RTOL * max|ref| per tensor, as
 * tests/test_parity.c and for the same reasons (float32 model, float64
 * reference from the same float32 weights). The real DFT runs as float32
 * GEMMs of at most max_len terms, which adds nothing visible. */
#include "testutil.h"
#include "fixture_util.h"

#include <math.h>
#include <time.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"
#include "util/rng.h"

#define FIXTURE "tests/fixtures/fmlprec_tiny.safetensors"
#define RTOL 1e-5

/* ---- fixture access --------------------------------------------------- */

/* Tensor "<case>/<name>" of the fixture, checked for dtype and size. */
static const void *tensor(const br_st_file *f, const char *cs, const char *name, br_st_dtype dtype,
                          int64_t numel, const br_st_entry **out) {
    char full[BR_PARAM_NAME_MAX + 16];
    snprintf(full, sizeof full, "%s/%s", cs, name);
    const br_st_entry *e = fx_entry(f, full, dtype, numel);
    if (out) *out = e;
    return e->data;
}

/* One case of the fixture: B padded sequences of L slots, item 0 = padding. */
typedef struct fixture {
    const br_st_file *f;
    const char *cs;
    br_model_config cfg;
    int B, L, D;
    const int64_t *input_ids, *target_pos, *target_neg;
    const float *sequence_output;
    float loss;
} fixture;

static void fixture_case(fixture *fx, const br_st_file *f, const char *cs) {
    char key[32];
    fx->f = f;
    fx->cs = cs;
    br_model_config_defaults(&fx->cfg);
    strcpy(fx->cfg.model, "fmlprec");
    fx->cfg.n_items = fx_meta_int(f, "n_items");
    fx->cfg.dim = fx_meta_int(f, "hidden_size");
    fx->cfg.n_layers = fx_meta_int(f, "num_hidden_layers");
    snprintf(key, sizeof key, "%s.max_seq_length", cs);
    fx->cfg.max_len = fx_meta_int(f, key);
    /* The C dropout draws its own masks: parity is checked without dropout. */
    fx->cfg.hidden_dropout = fx->cfg.attn_dropout = 0.0f;
    char name[64];
    snprintf(name, sizeof name, "%s/input_ids", cs);
    const br_st_entry *ids = br_st_find(f, name);
    assert_non_null(ids);
    assert_int_equal(ids->ndim, 2);
    fx->B = (int)ids->shape[0];
    fx->L = (int)ids->shape[1];
    fx->D = fx->cfg.dim;
    assert_int_equal(fx->L, fx->cfg.max_len);
    const int64_t BL = (int64_t)fx->B * fx->L;
    fx->input_ids = tensor(f, cs, "input_ids", BR_ST_I64, BL, NULL);
    fx->target_pos = tensor(f, cs, "target_pos", BR_ST_I64, BL, NULL);
    fx->target_neg = tensor(f, cs, "target_neg", BR_ST_I64, BL, NULL);
    fx->sequence_output = tensor(f, cs, "sequence_output", BR_ST_F32, BL * fx->D, NULL);
    fx->loss = *(const float *)tensor(f, cs, "loss", BR_ST_F32, 1, NULL);
}

/* ---- comparison ------------------------------------------------------- */

/* One forward/backward of a case's batch in the given sequence order,
 * checked against the reference; returns the worst relative error. */
static double check_batch(const fixture *fx, const int *order, int verbose) {
    br_model m;
    fx_ragged r;
    br_error err;
    char prefix[32], label[32];
    snprintf(prefix, sizeof prefix, "%s/", fx->cs);
    snprintf(label, sizeof label, "%s ", fx->cs);
    fx_model_load(&m, &fx->cfg, fx->f, prefix);
    fx_ragged_from_padded(&r, fx->B, fx->L, fx->input_ids, fx->target_pos, fx->target_neg, order);
    const int T = r.n_tok, D = fx->D;
    if (br_model_reserve(&m, T, r.n_seq, &err) != 0) fail_msg("%s", err.msg);
    float *x = malloc((size_t)T * D * sizeof(float));
    float *h = malloc((size_t)T * D * sizeof(float));
    float *dh = malloc((size_t)T * D * sizeof(float));
    assert_true(x && h && dh);

    const br_tokens tok = fx_ragged_tokens(&r);
    br_backbone *bb = m.backbone;
    br_model_gather(&m, r.item, T, x);
    bb->vt->forward(bb, &m.params, &tok, x, h, 1, 7);

    double worst = fx_check_rows(label, h, fx->sequence_output, r.slot, T, D, RTOL, verbose);

    const double loss = br_bce_loss(h, r.target, r.neg, NULL, T, D, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    worst = fmax(worst, fx_check_loss(label, loss, fx->loss, RTOL, verbose));

    bb->vt->backward(bb, &m.params, &tok, dh, x);
    br_model_scatter_grad(&m, r.item, T, x);

    char name[BR_PARAM_NAME_MAX + 8];
    for (int i = 0; i < m.params.n; i++) {
        const br_param *p = &m.params.list[i];
        snprintf(name, sizeof name, "grad.%s", p->name);
        const float *g_ref = tensor(fx->f, fx->cs, name, BR_ST_F32, (int64_t)p->numel, NULL);
        double scale;
        const double e = fx_rel_err(br_pgrad(&m.params, i), g_ref, p->numel, 0.0, &scale);
        if (verbose) print_message("%s %-54s rel err %.3g (scale %.3g)\n", fx->cs, name, e, scale);
        if (e > RTOL) fail_msg("%s %s: rel err %.3g", fx->cs, name, e);
        worst = fmax(worst, e);
    }

    free(x);
    free(h);
    free(dh);
    fx_ragged_free(&r);
    br_model_free(&m);
    return worst;
}

/* ---- parity tests ----------------------------------------------------- */

static void for_each_case(void (*fn)(const fixture *)) {
    br_st_file f;
    br_error err;
    if (br_st_read(FIXTURE, &f, &err) != 0) fail_msg("%s", err.msg);
    const char *cases = br_st_meta_get(&f, "cases");
    assert_non_null(cases);
    char buf[64], *save = NULL;
    snprintf(buf, sizeof buf, "%s", cases);
    int n = 0;
    for (char *cs = strtok_r(buf, ",", &save); cs; cs = strtok_r(NULL, ",", &save), n++) {
        fixture fx;
        fixture_case(&fx, &f, cs);
        fn(&fx);
    }
    assert_int_equal(n, 2);
    br_st_free(&f);
}

static void parity_in_order(const fixture *fx) {
    int order[64];
    assert_true(fx->B <= 64);
    for (int s = 0; s < fx->B; s++) order[s] = s;
    print_message("%s worst rel err %.3g\n", fx->cs, check_batch(fx, order, 1));
}

static void test_forward_backward_match_reference(void **state) {
    for_each_case(parity_in_order);
}

/* The padded layout is built per batch: sequences must not interact, in
 * whichever order they come. */
static void parity_shuffled(const fixture *fx) {
    int order[64];
    assert_true(fx->B <= 64);
    fx_order_reversed(order, fx->B);
    check_batch(fx, order, 0);
    fx_order_odd_even(order, fx->B);
    check_batch(fx, order, 0);
}

static void test_sequence_order_does_not_matter(void **state) {
    for_each_case(parity_shuffled);
}

/* ---- a synthetic ragged batch ----------------------------------------- */

typedef struct batch {
    int32_t n_seq, n_tok;
    int32_t *seq_off, *pos, *item, *target, *neg;
} batch;

/* Sequences of the given lengths (each <= max_len), left-aligned to the end
 * of the window, with random items, targets and negatives in 1..n_items. */
static void batch_make(batch *b, const int *lens, int n_seq, int max_len, int n_items, br_rng *r) {
    int T = 0;
    for (int s = 0; s < n_seq; s++) T += lens[s];
    b->n_seq = n_seq;
    b->n_tok = T;
    b->seq_off = malloc((size_t)(n_seq + 1) * sizeof(int32_t));
    b->pos = malloc((size_t)T * sizeof(int32_t));
    b->item = malloc((size_t)T * sizeof(int32_t));
    b->target = malloc((size_t)T * sizeof(int32_t));
    b->neg = malloc((size_t)T * sizeof(int32_t));
    assert_true(b->seq_off && b->pos && b->item && b->target && b->neg);
    b->seq_off[0] = 0;
    for (int s = 0, t = 0; s < n_seq; s++) {
        for (int j = 0; j < lens[s]; j++, t++) {
            b->pos[t] = max_len - lens[s] + j;
            b->item[t] = 1 + (int32_t)br_rng_below(r, (uint64_t)n_items);
            b->target[t] = 1 + (int32_t)br_rng_below(r, (uint64_t)n_items);
            b->neg[t] = 1 + (int32_t)br_rng_below(r, (uint64_t)n_items);
        }
        b->seq_off[s + 1] = b->seq_off[s] + lens[s];
    }
}

static void batch_free(batch *b) {
    free(b->seq_off);
    free(b->pos);
    free(b->item);
    free(b->target);
    free(b->neg);
}

/* ---- finite differences of the full loss ------------------------------ */

typedef struct model_ctx {
    br_model *m;
    const batch *b;
    float *x, *h, *dh, *dE; /* dh, dE: scratch the loss writes while differencing */
    uint64_t key;
} model_ctx;

/* The training loss as the trainer computes it, dropout on. */
static double model_obj(model_ctx *c) {
    const br_tokens tok = {c->b->n_seq, c->b->n_tok, c->b->seq_off, c->b->pos, NULL};
    br_model_gather(c->m, c->b->item, c->b->n_tok, c->x);
    c->m->backbone->vt->forward(c->m->backbone, &c->m->params, &tok, c->x, c->h, 1, c->key);
    return br_bce_loss(c->h, c->b->target, c->b->neg, NULL, c->b->n_tok, c->m->cfg.dim,
                       br_model_items(c->m), c->dE, c->dh, 1.0f);
}

/* Steps and tolerances as tests/test_gradcheck.c's full-model check: per
 * entry a central difference of EPS, judged relative to max(|fd|, |an|,
 * FLOOR) since float32 rounding noise does not shrink with the gradient;
 * the directional check moves every parameter by EPS_DIR * N(0, 1) at once,
 * which averages the noise out and allows a tighter TOL_DIR. */
#define EPS 5e-3f
#define EPS_DIR 3e-4f
#define TOL 1e-2
#define TOL_DIR 1e-3
#define FLOOR 1e-2

static double obj(void *c) { return model_obj(c); }

static void test_finite_differences(void **state) {
    br_model_config cfg;
    br_model_config_defaults(&cfg);
    strcpy(cfg.model, "fmlprec");
    cfg.n_items = 30, cfg.dim = 8, cfg.n_layers = 2, cfg.max_len = 6;
    cfg.hidden_dropout = 0.1f;
    br_model m;
    br_error err;
    if (br_model_create(&m, &cfg, &err) != 0) fail_msg("%s", err.msg);
    br_model_init_weights(&m, 23);
    /* The reference init gives tiny gradients: scale weights to std ~0.3 and
     * filters to ~0.5, perturb LayerNorm weights around 1, non-zero biases. */
    br_rng r;
    br_rng_seed(&r, 23, 1);
    for (int i = 0; i < m.params.n; i++) {
        const br_param *pi = &m.params.list[i];
        float *w = br_pdata(&m.params, i);
        for (size_t k = 0; k < pi->numel; k++) {
            if (strstr(pi->name, "LayerNorm.weight")) w[k] = 1.0f + 0.1f * (float)br_rng_normal(&r);
            else if (pi->ndim == 1) w[k] = 0.1f * (float)br_rng_normal(&r);
            else w[k] *= pi->ndim == 4 ? 25.0f : 15.0f;
        }
    }
    /* One full-length sequence, the others padded; unsorted lengths. */
    static const int lens[] = {3, 1, 6, 4};
    batch b;
    batch_make(&b, lens, 4, cfg.max_len, cfg.n_items, &r);
    if (br_model_reserve(&m, b.n_tok, b.n_seq, &err) != 0) fail_msg("%s", err.msg);

    const long TD = (long)b.n_tok * cfg.dim, ED = (long)(cfg.n_items + 1) * cfg.dim;
    const size_t td = (size_t)TD * sizeof(float);
    model_ctx c = {&m, &b, malloc(td), malloc(td), malloc(td), calloc((size_t)ED, sizeof(float)), 0x5eed};
    float *dh = malloc(td), *dx = malloc(td);
    assert_true(c.x && c.h && c.dh && c.dE && dh && dx);
    const br_tokens tok = {b.n_seq, b.n_tok, b.seq_off, b.pos, NULL};
    br_params_zero_grad(&m.params);
    br_model_gather(&m, b.item, b.n_tok, c.x);
    m.backbone->vt->forward(m.backbone, &m.params, &tok, c.x, c.h, 1, c.key);
    const double loss = br_bce_loss(c.h, b.target, b.neg, NULL, b.n_tok, cfg.dim, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    m.backbone->vt->backward(m.backbone, &m.params, &tok, dh, dx);
    br_model_scatter_grad(&m, b.item, b.n_tok, dx);
    /* Same key, same masks: the objective reproduces the loss exactly, and
     * dropout did act (the masks differ from a run without it). */
    assert_true(model_obj(&c) == loss);
    m.backbone->vt->forward(m.backbone, &m.params, &tok, c.x, c.h, 0, c.key);
    assert_true(br_bce_loss(c.h, b.target, b.neg, NULL, b.n_tok, cfg.dim, br_model_items(&m), c.dE,
                            c.dh, 1.0f) != loss);

    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < m.params.n; i++) {
        const br_param *pi = &m.params.list[i];
        float *x = br_pdata(&m.params, i);
        const float *g = br_pgrad(&m.params, i);
        long idx[16];
        int n = 0;
        if (i == m.item_emb) {
            /* Rows that are inputs, targets and negatives, plus the padding
             * row, which must not matter (zero padding embedding). */
            for (; n < 12; n++) {
                const int t = (int)br_rng_below(&r, (uint64_t)b.n_tok);
                const int32_t row = n % 3 == 0 ? b.item[t] : n % 3 == 1 ? b.target[t] : b.neg[t];
                idx[n] = (long)row * cfg.dim + (long)br_rng_below(&r, (uint64_t)cfg.dim);
            }
            idx[n++] = (long)br_rng_below(&r, (uint64_t)cfg.dim);
        } else if (pi->ndim == 4) {
            /* DC and Nyquist imaginary parts (no effect at all), then random. */
            idx[n++] = 1;
            idx[n++] = (long)(pi->shape[1] - 1) * cfg.dim * 2 + 1;
            for (; n < 10; n++) idx[n] = (long)br_rng_below(&r, pi->numel);
        } else {
            for (; n < 8; n++) idx[n] = (long)br_rng_below(&r, pi->numel);
        }
        for (int k = 0; k < n; k++) {
            const double e = fx_fd_entry(obj, &c, pi->name, x, idx[k], g[idx[k]], EPS, FLOOR, TOL);
            if (e > worst) worst = e, worst_name = pi->name;
        }
    }
    /* Zero padding embedding: the padding row has no gradient at all. */
    for (int d = 0; d < cfg.dim; d++) assert_true(br_pgrad(&m.params, m.item_emb)[d] == 0.0f);

    /* Directional derivative over all parameters at once. */
    double fd;
    const double an = fx_fd_direction(&m.params, obj, &c, EPS_DIR, &r, &fd);
    const double e_dir = fx_fd_rel(fd, an, FLOOR * 2.0 * EPS_DIR);
    print_message("fmlprec loss (dropout 0.1): worst entry %.1e (%s) | direction %.1e (%.7g vs %.7g)\n",
                  worst, worst_name, e_dir, fd, an);
    assert_true(e_dir <= TOL_DIR);

    free(c.x), free(c.h), free(c.dh), free(c.dE), free(dh), free(dx);
    batch_free(&b);
    br_model_free(&m);
}

/* ---- determinism and timing at the reference size --------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 256 sequences of 1..17 items (mean 9), dim 64, max_len 50, dropout 0.2:
 * two forward + backward passes with the same key give bitwise equal
 * outputs and gradients; the second one's time is printed. */
static void test_deterministic_and_timing(void **state) {
    br_model_config cfg;
    br_model_config_defaults(&cfg);
    strcpy(cfg.model, "fmlprec");
    cfg.n_items = 1000;
    br_model m;
    br_error err;
    if (br_model_create(&m, &cfg, &err) != 0) fail_msg("%s", err.msg);
    br_model_init_weights(&m, 5);
    br_rng r;
    br_rng_seed(&r, 5, 2);
    enum { NS = 256 };
    int lens[NS];
    for (int s = 0; s < NS; s++) lens[s] = 1 + (int)br_rng_below(&r, 17);
    batch b;
    batch_make(&b, lens, NS, cfg.max_len, cfg.n_items, &r);
    if (br_model_reserve(&m, b.n_tok, b.n_seq, &err) != 0) fail_msg("%s", err.msg);
    const long TD = (long)b.n_tok * cfg.dim;
    const size_t td = (size_t)TD * sizeof(float);
    float *x = malloc(td), *h = malloc(td), *h1 = malloc(td), *dh = malloc(td), *dx = malloc(td);
    float *g1 = malloc(m.params.total * sizeof(float));
    assert_true(x && h && h1 && dh && dx && g1);
    for (long i = 0; i < TD; i++) dh[i] = (float)br_rng_normal(&r);
    const br_tokens tok = {b.n_seq, b.n_tok, b.seq_off, b.pos, NULL};
    br_backbone *bb = m.backbone;
    double t_best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        br_params_zero_grad(&m.params);
        const double t0 = now_s();
        br_model_gather(&m, b.item, b.n_tok, x);
        bb->vt->forward(bb, &m.params, &tok, x, h, 1, 99);
        bb->vt->backward(bb, &m.params, &tok, dh, dx);
        br_model_scatter_grad(&m, b.item, b.n_tok, dx);
        t_best = fmin(t_best, now_s() - t0);
        if (rep == 0) {
            memcpy(h1, h, td);
            memcpy(g1, m.params.grad, m.params.total * sizeof(float));
        } else {
            assert_memory_equal(h, h1, td);
            assert_memory_equal(m.params.grad, g1, m.params.total * sizeof(float));
        }
    }
    print_message("fmlprec forward+backward, %d sequences / %d tokens, dim %d, max_len %d: %.1f ms\n",
                  b.n_seq, b.n_tok, cfg.dim, cfg.max_len, 1e3 * t_best);
    free(x), free(h), free(h1), free(dh), free(dx), free(g1);
    batch_free(&b);
    br_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_backward_match_reference),
        cmocka_unit_test(test_sequence_order_does_not_matter),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_deterministic_and_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
