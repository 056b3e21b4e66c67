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

#include <math.h>
#include <time.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"
#include "util/rng.h"

#define FIXTURE "tests/fixtures/fmlprec_tiny.safetensors"
#define RTOL 1e-5

/* ---- fixture access --------------------------------------------------- */

static int meta_int(const br_st_file *f, const char *key) {
    const char *v = br_st_meta_get(f, key);
    if (!v) fail_msg("fixture has no metadata '%s'", key);
    return atoi(v);
}

/* Tensor "<case>/<name>" of the fixture, checked for dtype and size. */
static const void *tensor(const br_st_file *f, const char *cs, const char *name, br_st_dtype dtype,
                          int64_t numel, const br_st_entry **out) {
    char full[BR_PARAM_NAME_MAX + 16];
    snprintf(full, sizeof full, "%s/%s", cs, name);
    const br_st_entry *e = br_st_find(f, full);
    if (!e) fail_msg("fixture has no tensor '%s'", full);
    assert_int_equal(e->dtype, dtype);
    assert_int_equal(e->numel, numel);
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
    fx->cfg.n_items = meta_int(f, "n_items");
    fx->cfg.dim = meta_int(f, "hidden_size");
    fx->cfg.n_layers = meta_int(f, "num_hidden_layers");
    snprintf(key, sizeof key, "%s.max_seq_length", cs);
    fx->cfg.max_len = meta_int(f, key);
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

/* Creates the model and loads every parameter, by name, from the case. */
static void model_load(br_model *m, const fixture *fx) {
    br_error err;
    if (br_model_create(m, &fx->cfg, &err) != 0) fail_msg("%s", err.msg);
    for (int i = 0; i < m->params.n; i++) {
        const br_param *p = &m->params.list[i];
        const br_st_entry *e;
        const void *data = tensor(fx->f, fx->cs, p->name, BR_ST_F32, (int64_t)p->numel, &e);
        assert_int_equal(e->ndim, p->ndim);
        for (int d = 0; d < p->ndim; d++) assert_int_equal(e->shape[d], p->shape[d]);
        memcpy(br_pdata(&m->params, i), data, p->numel * sizeof(float));
    }
    br_params_zero_grad(&m->params);
}

/* ---- ragged batch ----------------------------------------------------- */

/* The padded batch's real tokens, sequences taken in the given order. */
typedef struct ragged {
    int32_t n_seq, n_tok;
    int32_t *seq_off, *pos, *item, *target, *neg;
    int32_t *slot; /* b * L + j: the token's row in the padded batch */
} ragged;

static void ragged_build(ragged *r, const fixture *fx, const int *order) {
    const int BL = fx->B * fx->L;
    r->seq_off = calloc((size_t)fx->B + 1, sizeof(int32_t));
    r->pos = malloc((size_t)BL * sizeof(int32_t));
    r->item = malloc((size_t)BL * sizeof(int32_t));
    r->target = malloc((size_t)BL * sizeof(int32_t));
    r->neg = malloc((size_t)BL * sizeof(int32_t));
    r->slot = malloc((size_t)BL * sizeof(int32_t));
    assert_true(r->seq_off && r->pos && r->item && r->target && r->neg && r->slot);
    r->n_seq = fx->B;
    r->n_tok = 0;
    for (int s = 0; s < fx->B; s++) {
        const int b = order[s];
        for (int j = 0; j < fx->L; j++) {
            const int k = b * fx->L + j;
            if (fx->input_ids[k] <= 0) continue;
            r->pos[r->n_tok] = j; /* left padding: the position id is the slot */
            r->item[r->n_tok] = (int32_t)fx->input_ids[k];
            r->target[r->n_tok] = (int32_t)fx->target_pos[k];
            r->neg[r->n_tok] = (int32_t)fx->target_neg[k];
            r->slot[r->n_tok] = k;
            r->n_tok++;
        }
        r->seq_off[s + 1] = r->n_tok;
    }
}

static void ragged_free(ragged *r) {
    free(r->seq_off);
    free(r->pos);
    free(r->item);
    free(r->target);
    free(r->neg);
    free(r->slot);
}

/* ---- comparison ------------------------------------------------------- */

/* max|c - ref| / max|ref| (absolute when ref is all zeros). */
static double rel_err(const float *c, const float *ref, size_t n, double *scale) {
    double diff = 0.0, mx = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)c[i] - (double)ref[i]));
        mx = fmax(mx, fabs((double)ref[i]));
    }
    *scale = mx;
    return mx > 0.0 ? diff / mx : diff;
}

/* One forward/backward of a case's batch in the given sequence order,
 * checked against the reference; returns the worst relative error. */
static double check_batch(const fixture *fx, const int *order, int verbose) {
    br_model m;
    ragged r;
    br_error err;
    model_load(&m, fx);
    ragged_build(&r, fx, order);
    const int T = r.n_tok, D = fx->D;
    if (br_model_reserve(&m, T, r.n_seq, &err) != 0) fail_msg("%s", err.msg);
    float *x = malloc((size_t)T * D * sizeof(float));
    float *h = malloc((size_t)T * D * sizeof(float));
    float *dh = malloc((size_t)T * D * sizeof(float));
    float *ref = malloc((size_t)T * D * sizeof(float));
    assert_true(x && h && dh && ref);

    const br_tokens tok = {r.n_seq, r.n_tok, r.seq_off, r.pos};
    br_backbone *bb = m.backbone;
    br_model_gather(&m, r.item, T, x);
    bb->vt->forward(bb, &m.params, &tok, x, h, 1, 7);

    for (int t = 0; t < T; t++)
        memcpy(ref + (size_t)t * D, fx->sequence_output + (size_t)r.slot[t] * D, (size_t)D * sizeof(float));
    double scale, e = rel_err(h, ref, (size_t)T * D, &scale), worst = e;
    if (verbose) print_message("%s sequence_output: rel err %.3g (max |ref| %.3g)\n", fx->cs, e, scale);
    assert_true(e <= RTOL);

    const double loss = br_bce_loss(h, r.target, r.neg, NULL, T, D, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    e = fabs(loss - fx->loss) / fabs(fx->loss);
    if (verbose) print_message("%s loss %.9f vs %.9f: rel err %.3g\n", fx->cs, loss, (double)fx->loss, e);
    assert_true(e <= RTOL);
    worst = fmax(worst, e);

    bb->vt->backward(bb, &m.params, &tok, dh, x);
    br_model_scatter_grad(&m, r.item, T, x);

    char name[BR_PARAM_NAME_MAX + 8];
    for (int i = 0; i < m.params.n; i++) {
        const br_param *p = &m.params.list[i];
        snprintf(name, sizeof name, "grad.%s", p->name);
        const float *g_ref = tensor(fx->f, fx->cs, name, BR_ST_F32, (int64_t)p->numel, NULL);
        e = rel_err(br_pgrad(&m.params, i), g_ref, p->numel, &scale);
        if (verbose) print_message("%s %-54s rel err %.3g (scale %.3g)\n", fx->cs, name, e, scale);
        if (e > RTOL) fail_msg("%s %s: rel err %.3g", fx->cs, name, e);
        worst = fmax(worst, e);
    }

    free(x);
    free(h);
    free(dh);
    free(ref);
    ragged_free(&r);
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
    int order[64], k = 0;
    assert_true(fx->B <= 64);
    for (int s = 0; s < fx->B; s++) order[s] = fx->B - 1 - s;
    check_batch(fx, order, 0);
    for (int s = 1; s < fx->B; s += 2) order[k++] = s;
    for (int s = 0; s < fx->B; s += 2) order[k++] = s;
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
    const br_tokens tok = {c->b->n_seq, c->b->n_tok, c->b->seq_off, c->b->pos};
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

static double fd_rel(double fd, double an, double floor) {
    return fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), floor);
}

/* Central difference at entry i of x (gradient g); divides by the step
 * actually stored in float. */
static double fd_entry(model_ctx *c, const char *name, float *x, const float *g, long i) {
    const float x0 = x[i];
    x[i] = x0 + EPS;
    const float xp = x[i];
    const double fp = model_obj(c);
    x[i] = x0 - EPS;
    const float xm = x[i];
    const double fm = model_obj(c);
    x[i] = x0;
    const double fd = (fp - fm) / ((double)xp - (double)xm);
    const double e = fd_rel(fd, g[i], FLOOR);
    if (e > TOL)
        fail_msg("%s[%ld]: finite difference %.7g, analytic %.7g (rel err %.2e)", name, i, fd,
                 (double)g[i], e);
    return e;
}

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
    const br_tokens tok = {b.n_seq, b.n_tok, b.seq_off, b.pos};
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
            const double e = fd_entry(&c, pi->name, x, g, idx[k]);
            if (e > worst) worst = e, worst_name = pi->name;
        }
    }
    /* Zero padding embedding: the padding row has no gradient at all. */
    for (int d = 0; d < cfg.dim; d++) assert_true(br_pgrad(&m.params, m.item_emb)[d] == 0.0f);

    /* Directional derivative over all parameters at once. */
    const long P = (long)m.params.total;
    float *orig = malloc((size_t)P * sizeof(float)), *dir = malloc((size_t)P * sizeof(float));
    assert_true(orig && dir);
    memcpy(orig, m.params.data, (size_t)P * sizeof(float));
    for (long i = 0; i < P; i++) dir[i] = EPS_DIR * (float)br_rng_normal(&r);
    for (long i = 0; i < P; i++) m.params.data[i] = orig[i] + dir[i];
    const double fp = model_obj(&c);
    double an = 0.0;
    for (long i = 0; i < P; i++) {
        const float xp = m.params.data[i];
        m.params.data[i] = orig[i] - dir[i];
        an += (double)m.params.grad[i] * ((double)xp - (double)m.params.data[i]);
    }
    const double fm = model_obj(&c);
    memcpy(m.params.data, orig, (size_t)P * sizeof(float));
    const double e_dir = fd_rel(fp - fm, an, FLOOR * 2.0 * EPS_DIR);
    print_message("fmlprec loss (dropout 0.1): worst entry %.1e (%s) | direction %.1e (%.7g vs %.7g)\n",
                  worst, worst_name, e_dir, fp - fm, an);
    assert_true(e_dir <= TOL_DIR);

    free(orig), free(dir);
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
    const br_tokens tok = {b.n_seq, b.n_tok, b.seq_off, b.pos};
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
