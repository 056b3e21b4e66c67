/* NextItNet backbone (src/models/nextitnet.c):
 *  - parity with a PyTorch re-implementation of RecBole's NextItNet
 *    (tests/fixtures/gen_nextitnet_fixture.py): encoder outputs, BCE loss and
 *    every parameter's gradient on one batch, reference in float64;
 *  - finite differences of the full training loss (dropout on) w.r.t. every
 *    parameter tensor, per entry and along one random direction;
 *  - causality, init, and a timed, bit-reproducible step at full size.
 *
 * Parity tolerance, as tests/test_parity.c: max|c - ref| <= RTOL * max|ref|
 * per tensor. float32 through 3 blocks of convolutions with at most 24-term
 * dot products, each renormalised by LayerNorm, stays within a few dozen
 * roundoffs of each tensor's scale; 1e-5 leaves margin for BLAS and thread
 * reorderings yet fails on any real deviation (a wrong tap, eps or mask). */
#include "testutil.h"

#include <math.h>
#include <time.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"
#include "util/rng.h"

#define FIXTURE "tests/fixtures/nextitnet_tiny.safetensors"
#define RTOL 1e-5

/* ---- fixture access --------------------------------------------------- */

static int meta_int(const br_st_file *f, const char *key) {
    const char *v = br_st_meta_get(f, key);
    if (!v) fail_msg("fixture has no metadata '%s'", key);
    return atoi(v);
}

static const br_st_entry *entry(const br_st_file *f, const char *name, br_st_dtype dtype,
                                int64_t numel) {
    const br_st_entry *e = br_st_find(f, name);
    if (!e) fail_msg("fixture has no tensor '%s'", name);
    assert_int_equal(e->dtype, dtype);
    assert_int_equal(e->numel, numel);
    return e;
}

/* The fixture's left-padded batch: B sequences of L slots, item 0 = padding. */
typedef struct fixture {
    br_st_file f;
    br_model_config cfg;
    int B, L, D;
    const int64_t *input_ids, *target_pos, *target_neg;
    const float *sequence_output;
    float loss;
} fixture;

static void fixture_load(fixture *fx) {
    br_error err;
    if (br_st_read(FIXTURE, &fx->f, &err) != 0) fail_msg("%s", err.msg);
    /* The C layout is fixed: the fixture must describe the same one. */
    assert_int_equal(meta_int(&fx->f, "kernel_size"), 3);
    assert_string_equal(br_st_meta_get(&fx->f, "dilations"), "1,4");
    br_model_config_defaults(&fx->cfg);
    strcpy(fx->cfg.model, "nextitnet");
    fx->cfg.n_items = meta_int(&fx->f, "n_items");
    fx->cfg.dim = meta_int(&fx->f, "hidden_size");
    fx->cfg.n_layers = meta_int(&fx->f, "num_blocks");
    fx->cfg.hidden_dropout = fx->cfg.attn_dropout = 0.0f;
    const br_st_entry *ids = br_st_find(&fx->f, "input_ids");
    assert_non_null(ids);
    assert_int_equal(ids->ndim, 2);
    fx->B = (int)ids->shape[0];
    fx->L = (int)ids->shape[1];
    fx->D = fx->cfg.dim;
    fx->cfg.max_len = fx->L;
    const int64_t BL = (int64_t)fx->B * fx->L;
    fx->input_ids = entry(&fx->f, "input_ids", BR_ST_I64, BL)->data;
    fx->target_pos = entry(&fx->f, "target_pos", BR_ST_I64, BL)->data;
    fx->target_neg = entry(&fx->f, "target_neg", BR_ST_I64, BL)->data;
    fx->sequence_output = entry(&fx->f, "sequence_output", BR_ST_F32, BL * fx->D)->data;
    fx->loss = *(const float *)entry(&fx->f, "loss", BR_ST_F32, 1)->data;
}

/* Creates the model and loads every parameter, by name and shape. */
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

/* ---- ragged batch ----------------------------------------------------- */

typedef struct ragged {
    int32_t n_seq, n_tok;
    int32_t *seq_off, *pos, *item, *target, *neg;
    int32_t *slot; /* b * L + j: the token's row in the padded batch */
} ragged;

static void ragged_alloc(ragged *r, int n_seq, int n_tok) {
    r->seq_off = calloc((size_t)n_seq + 1, sizeof(int32_t));
    r->pos = calloc((size_t)n_tok, sizeof(int32_t));
    r->item = calloc((size_t)n_tok, sizeof(int32_t));
    r->target = calloc((size_t)n_tok, sizeof(int32_t));
    r->neg = calloc((size_t)n_tok, sizeof(int32_t));
    r->slot = calloc((size_t)n_tok, sizeof(int32_t));
    assert_true(r->seq_off && r->pos && r->item && r->target && r->neg && r->slot);
    r->n_seq = n_seq;
    r->n_tok = 0;
}

/* The fixture's real tokens, sequences taken in the given order. */
static void ragged_from_fixture(ragged *r, const fixture *fx, const int *order) {
    ragged_alloc(r, fx->B, fx->B * fx->L);
    for (int s = 0; s < fx->B; s++) {
        const int b = order[s];
        for (int j = 0; j < fx->L; j++) {
            const int k = b * fx->L + j;
            if (fx->input_ids[k] <= 0) continue;
            r->pos[r->n_tok] = j;
            r->item[r->n_tok] = (int32_t)fx->input_ids[k];
            r->target[r->n_tok] = (int32_t)fx->target_pos[k];
            r->neg[r->n_tok] = (int32_t)fx->target_neg[k];
            r->slot[r->n_tok] = k;
            r->n_tok++;
        }
        r->seq_off[s + 1] = r->n_tok;
    }
}

/* Random sequences of the given lengths over items 1..n_items, with
 * next-item targets and negatives. */
static void ragged_random(ragged *r, const int *lens, int n_seq, int n_items, br_rng *rng) {
    int total = 0;
    for (int s = 0; s < n_seq; s++) total += lens[s];
    ragged_alloc(r, n_seq, total);
    for (int s = 0; s < n_seq; s++) {
        const int n = lens[s];
        for (int j = 0; j < n; j++) {
            const int t = r->n_tok++;
            r->pos[t] = j;
            r->item[t] = 1 + (int32_t)br_rng_below(rng, (uint64_t)n_items);
            r->target[t] = 1 + (int32_t)br_rng_below(rng, (uint64_t)n_items);
            r->neg[t] = 1 + (int32_t)br_rng_below(rng, (uint64_t)n_items);
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

/* ---- one training step ------------------------------------------------ */

/* Buffers of one forward/backward over a ragged batch. */
typedef struct step {
    br_model *m;
    const ragged *r;
    float *x, *h, *dh, *dx, *dE; /* dE: scratch for objective-only loss calls */
    uint64_t key;
} step;

static void step_init(step *s, br_model *m, const ragged *r, uint64_t key) {
    br_error err;
    const size_t TD = (size_t)r->n_tok * m->cfg.dim;
    s->m = m, s->r = r, s->key = key;
    s->x = malloc(TD * sizeof(float));
    s->h = malloc(TD * sizeof(float));
    s->dh = malloc(TD * sizeof(float));
    s->dx = malloc(TD * sizeof(float));
    s->dE = calloc(m->params.list[m->item_emb].numel, sizeof(float));
    assert_true(s->x && s->h && s->dh && s->dx && s->dE);
    if (br_model_reserve(m, r->n_tok, r->n_seq, &err) != 0) fail_msg("%s", err.msg);
}

static void step_free(step *s) {
    free(s->x), free(s->h), free(s->dh), free(s->dx), free(s->dE);
}

static br_tokens step_tokens(const step *s) {
    const br_tokens tok = {s->r->n_seq, s->r->n_tok, s->r->seq_off, s->r->pos};
    return tok;
}

/* Forward and loss; the loss's dE goes to the gradient (grad_E) or scratch. */
static double step_loss(step *s, int grad_E) {
    br_model *m = s->m;
    const br_tokens tok = step_tokens(s);
    br_model_gather(m, s->r->item, s->r->n_tok, s->x);
    m->backbone->vt->forward(m->backbone, &m->params, &tok, s->x, s->h, 1, s->key);
    return br_bce_loss(s->h, s->r->target, s->r->neg, NULL, s->r->n_tok, m->cfg.dim,
                       br_model_items(m), grad_E ? br_pgrad(&m->params, m->item_emb) : s->dE,
                       s->dh, 1.0f);
}

/* Loss and every parameter's gradient, as the trainer computes them. */
static double step_full(step *s) {
    br_params_zero_grad(&s->m->params);
    const double loss = step_loss(s, 1);
    const br_tokens tok = step_tokens(s);
    s->m->backbone->vt->backward(s->m->backbone, &s->m->params, &tok, s->dh, s->dx);
    br_model_scatter_grad(s->m, s->r->item, s->r->n_tok, s->dx);
    return loss;
}

/* ---- parity ----------------------------------------------------------- */

static double max_abs(const float *x, size_t n) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)x[i]));
    return mx;
}

/* max|c - ref| / max|ref|. */
static double rel_err(const float *c, const float *ref, size_t n, double *scale) {
    double diff = 0.0;
    for (size_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)c[i] - (double)ref[i]));
    *scale = max_abs(ref, n);
    return *scale > 0.0 ? diff / *scale : diff;
}

static void check_batch(const fixture *fx, const int *order, int verbose) {
    br_model m;
    ragged r;
    step s;
    model_load(&m, fx);
    ragged_from_fixture(&r, fx, order);
    step_init(&s, &m, &r, 7);
    const int T = r.n_tok, D = fx->D;
    const double loss = step_full(&s);

    float *ref = malloc((size_t)T * D * sizeof(float));
    assert_non_null(ref);
    for (int t = 0; t < T; t++)
        memcpy(ref + (size_t)t * D, fx->sequence_output + (size_t)r.slot[t] * D, (size_t)D * sizeof(float));
    double scale, e = rel_err(s.h, ref, (size_t)T * D, &scale);
    if (verbose) print_message("sequence_output: rel err %.3g (max |ref| %.3g)\n", e, scale);
    assert_true(e <= RTOL);
    e = fabs(loss - fx->loss) / fabs(fx->loss);
    if (verbose) print_message("loss %.9f vs %.9f: rel err %.3g\n", loss, (double)fx->loss, e);
    assert_true(e <= RTOL);

    double worst = 0.0;
    const char *worst_name = "";
    char name[BR_PARAM_NAME_MAX + 8];
    for (int i = 0; i < m.params.n; i++) {
        const br_param *p = &m.params.list[i];
        snprintf(name, sizeof name, "grad.%s", p->name);
        const float *g_ref = entry(&fx->f, name, BR_ST_F32, (int64_t)p->numel)->data;
        e = rel_err(br_pgrad(&m.params, i), g_ref, p->numel, &scale);
        if (verbose) print_message("%-44s rel err %.3g (scale %.3g)\n", name, e, scale);
        if (e > worst) worst = e, worst_name = p->name;
    }
    print_message("worst gradient rel err %.3g (%s)\n", worst, worst_name);
    assert_true(worst <= RTOL);

    free(ref);
    step_free(&s);
    ragged_free(&r);
    br_model_free(&m);
}

static void test_forward_backward_match_reference(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    assert_true(fx.B <= 64);
    for (int s = 0; s < fx.B; s++) order[s] = s;
    check_batch(&fx, order, 1);
    br_st_free(&fx.f);
}

/* Convolutions stay inside each sequence, so neighbours must not matter. */
static void test_sequence_order_does_not_matter(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    assert_true(fx.B <= 64);
    for (int s = 0; s < fx.B; s++) order[s] = fx.B - 1 - s;
    check_batch(&fx, order, 0);
    int k = 0;
    for (int s = 1; s < fx.B; s += 2) order[k++] = s;
    for (int s = 0; s < fx.B; s += 2) order[k++] = s;
    check_batch(&fx, order, 0);
    br_st_free(&fx.f);
}

/* Changing a sequence's item changes nothing before it in that sequence and
 * nothing in any other sequence: bit for bit, since every output row is
 * computed from its own inputs only. */
static void test_causal(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    for (int s = 0; s < fx.B; s++) order[s] = s;
    br_model m;
    ragged r;
    step s;
    model_load(&m, &fx);
    ragged_from_fixture(&r, &fx, order);
    step_init(&s, &m, &r, 7);
    const int D = fx.D;
    const size_t TD = (size_t)r.n_tok * D;
    step_loss(&s, 0);
    float *h0 = malloc(TD * sizeof(float));
    assert_non_null(h0);
    memcpy(h0, s.h, TD * sizeof(float));
    /* The longest sequence, changed at its 10th item. */
    int longest = 0;
    for (int q = 1; q < r.n_seq; q++)
        if (r.seq_off[q + 1] - r.seq_off[q] > r.seq_off[longest + 1] - r.seq_off[longest]) longest = q;
    assert_true(r.seq_off[longest + 1] - r.seq_off[longest] > 10);
    const int t_changed = r.seq_off[longest] + 9;
    r.item[t_changed] = r.item[t_changed] % fx.cfg.n_items + 1;
    step_loss(&s, 0);
    for (int t = 0; t < r.n_tok; t++) {
        const int same_seq_after = t >= t_changed && t < r.seq_off[longest + 1];
        const int equal = memcmp(h0 + (size_t)t * D, s.h + (size_t)t * D, (size_t)D * sizeof(float)) == 0;
        if (same_seq_after) assert_false(equal);
        else assert_true(equal);
    }
    free(h0);
    step_free(&s);
    ragged_free(&r);
    br_model_free(&m);
    br_st_free(&fx.f);
}

/* ---- finite differences ---------------------------------------------- */

/* Steps between float32 rounding noise and truncation error (measured:
 * directional errors grow below 3e-4 and above 3e-3). Relative errors use
 * max(|fd|, |an|, floor) so that near-zero gradients are judged absolutely;
 * for the direction the floor is the typical size of the difference,
 * 2 eps |g|, as a random direction can be nearly orthogonal to g. */
#define FD_EPS 5e-3f
#define FD_EPS_DIR 1e-3f
#define FD_TOL 1e-2
#define FD_TOL_DIR 1e-3
#define FD_FLOOR 1e-2

static double fd_rel(double fd, double an, double floor) {
    return fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), floor);
}

/* Central difference of the loss at entry i of x (gradient an). */
static double fd_entry(step *s, float *x, long i, double an, const char *name) {
    const float x0 = x[i];
    x[i] = x0 + FD_EPS;
    const float xp = x[i];
    const double fp = step_loss(s, 0);
    x[i] = x0 - FD_EPS;
    const float xm = x[i];
    const double fm = step_loss(s, 0);
    x[i] = x0;
    const double fd = (fp - fm) / ((double)xp - (double)xm);
    const double e = fd_rel(fd, an, FD_FLOOR);
    if (e > FD_TOL) fail_msg("%s[%ld]: finite difference %.7g, analytic %.7g (rel err %.2e)", name, i, fd, an, e);
    return e;
}

static void test_finite_differences(void **state) {
    br_model_config cfg;
    br_model_config_defaults(&cfg);
    strcpy(cfg.model, "nextitnet");
    /* 4 blocks: both dilation patterns, each twice; dropout on. */
    cfg.n_items = 30, cfg.dim = 8, cfg.n_layers = 4, cfg.max_len = 20;
    cfg.hidden_dropout = 0.3f;
    br_model m;
    br_error err;
    if (br_model_create(&m, &cfg, &err) != 0) fail_msg("%s", err.msg);
    br_model_init_weights(&m, 5);
    /* Weights N(0, 0.3) as the fixture, except the LayerNorm affines: a
     * ReLU kink inside a difference's step spoils it, and with unit gains
     * some of the ~1000 ReLU inputs always sit within a step of zero
     * (measured: 5% errors at step 1e-3). A normalised row has
     * |xhat| <= sqrt(D - 1), so gains |g| <= 0.3 and biases |b| >= 1 keep
     * every ReLU input at |g xhat + b| >= 0.2, far from any step taken here.
     * The bias signs switch channels on or off at random, so the masks are
     * still exercised; the parity test covers masks varying over tokens. */
    br_rng r;
    br_rng_seed(&r, 5, 1);
    for (int i = 0; i < m.params.n; i++) {
        const br_param *p = &m.params.list[i];
        float *w = br_pdata(&m.params, i);
        const int ln = strstr(p->name, ".ln") != NULL, ln_w = ln && strstr(p->name, ".weight");
        for (size_t k = 0; k < p->numel; k++) {
            const float sign = br_rng_uniform(&r) < 0.5 ? -1.0f : 1.0f;
            if (ln_w) w[k] = sign * (0.1f + 0.2f * (float)br_rng_uniform(&r));
            else if (ln) w[k] = sign * (1.0f + 0.5f * (float)br_rng_uniform(&r));
            else w[k] = 0.3f * (float)br_rng_normal(&r);
        }
    }
    /* 18 items reach every tap of the dilation-8 convolutions. */
    static const int lens[] = {5, 18, 1, 9};
    ragged b;
    ragged_random(&b, lens, 4, cfg.n_items, &r);
    step s;
    step_init(&s, &m, &b, 0x5a5a);
    const double loss = step_full(&s);
    assert_true(step_loss(&s, 0) == loss); /* same key, same dropout masks */

    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < m.params.n; i++) {
        const br_param *p = &m.params.list[i];
        float *x = br_pdata(&m.params, i);
        const float *g = br_pgrad(&m.params, i);
        /* No tensor may sit on a path switched off entirely by the masks. */
        if (max_abs(g, p->numel) == 0.0) fail_msg("%s: gradient is zero", p->name);
        for (int k = 0; k < 6; k++) {
            long idx;
            if (i == m.item_emb) {
                /* Rows that are inputs, targets or negatives: others have no gradient. */
                const int t = (int)br_rng_below(&r, (uint64_t)b.n_tok);
                const int32_t row = k % 3 == 0 ? b.item[t] : k % 3 == 1 ? b.target[t] : b.neg[t];
                idx = (long)row * cfg.dim + (long)br_rng_below(&r, (uint64_t)cfg.dim);
            } else {
                idx = (long)br_rng_below(&r, (uint64_t)p->numel);
            }
            const double e = fd_entry(&s, x, idx, g[idx], p->name);
            if (e > worst) worst = e, worst_name = p->name;
        }
    }

    /* All parameters along one random direction. */
    float *x = m.params.data;
    const long n = (long)m.params.total;
    float *orig = malloc((size_t)n * sizeof(float)), *dir = malloc((size_t)n * sizeof(float));
    assert_true(orig && dir);
    memcpy(orig, x, (size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) dir[i] = FD_EPS_DIR * (float)br_rng_normal(&r);
    for (long i = 0; i < n; i++) x[i] = orig[i] + dir[i];
    const double fp = step_loss(&s, 0);
    double an = 0.0;
    for (long i = 0; i < n; i++) {
        const float xp = x[i];
        x[i] = orig[i] - dir[i];
        an += (double)m.params.grad[i] * ((double)xp - (double)x[i]);
    }
    const double fm = step_loss(&s, 0);
    memcpy(x, orig, (size_t)n * sizeof(float));
    double g2 = 0.0;
    for (long i = 0; i < n; i++) g2 += (double)m.params.grad[i] * m.params.grad[i];
    const double e_dir = fd_rel(fp - fm, an, 2.0 * FD_EPS_DIR * sqrt(g2));
    print_message("nextitnet loss: worst entry %.1e (%s) | direction %.1e (%.7g vs %.7g)\n", worst,
                  worst_name, e_dir, fp - fm, an);
    assert_true(e_dir <= FD_TOL_DIR);

    free(orig), free(dir);
    step_free(&s);
    ragged_free(&b);
    br_model_free(&m);
}

/* ---- init and a full-size step --------------------------------------- */

/* RecBole's init (docs/nextitnet.md): conv weights and biases
 * U(+-1/sqrt(D*K)), LayerNorm 1 / 0, final layer N(0, 1/D) with bias 0.1. */
static void test_init(void **state) {
    br_model_config cfg;
    br_model_config_defaults(&cfg);
    strcpy(cfg.model, "nextitnet");
    cfg.n_items = 100, cfg.n_layers = 10;
    br_model m;
    br_error err;
    if (br_model_create(&m, &cfg, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(m.params.n, 1 + 8 * 10 + 2);
    br_model_init_weights(&m, 3);
    const float bound = 1.0f / sqrtf(64.0f * 3.0f);
    for (int i = 0; i < m.params.n; i++) {
        const br_param *p = &m.params.list[i];
        const float *w = br_pdata(&m.params, i);
        if (strstr(p->name, ".conv")) {
            double ss = 0.0;
            for (size_t k = 0; k < p->numel; k++) {
                assert_true(fabsf(w[k]) <= bound);
                ss += (double)w[k] * w[k];
            }
            if (p->ndim == 4) /* std of U(-a, a) is a / sqrt(3) */
                assert_true(fabs(sqrt(ss / (double)p->numel) / (bound / sqrt(3.0)) - 1.0) < 0.05);
        } else if (strstr(p->name, ".ln")) {
            const float want = strstr(p->name, ".weight") ? 1.0f : 0.0f;
            for (size_t k = 0; k < p->numel; k++) assert_true(w[k] == want);
        } else if (strcmp(p->name, "final_layer.bias") == 0) {
            for (size_t k = 0; k < p->numel; k++) assert_true(w[k] == 0.1f);
        } else if (strcmp(p->name, "final_layer.weight") == 0) {
            double ss = 0.0;
            for (size_t k = 0; k < p->numel; k++) ss += (double)w[k] * w[k];
            assert_true(fabs(sqrt(ss / (double)p->numel) * 8.0 - 1.0) < 0.1);
        }
    }
    br_model_free(&m);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* RecBole's size (64 dims, 10 blocks) on 256 sequences of about 9 items:
 * two steps give bit-identical losses and gradients; times one step. */
static void test_full_size_step(void **state) {
    br_model_config cfg;
    br_model_config_defaults(&cfg);
    strcpy(cfg.model, "nextitnet");
    cfg.n_items = 1000, cfg.n_layers = 10, cfg.hidden_dropout = 0.2f;
    br_model m;
    br_error err;
    if (br_model_create(&m, &cfg, &err) != 0) fail_msg("%s", err.msg);
    br_model_init_weights(&m, 9);
    br_rng r;
    br_rng_seed(&r, 9, 1);
    int lens[256];
    for (int q = 0; q < 256; q++) lens[q] = 5 + (int)br_rng_below(&r, 9);
    ragged b;
    ragged_random(&b, lens, 256, cfg.n_items, &r);
    step s;
    step_init(&s, &m, &b, 42);
    const double loss = step_full(&s);
    assert_true(isfinite(loss));
    float *g0 = malloc(m.params.total * sizeof(float));
    assert_non_null(g0);
    memcpy(g0, m.params.grad, m.params.total * sizeof(float));
    const int reps = 3;
    const double t0 = now_s();
    for (int k = 0; k < reps; k++) assert_true(step_full(&s) == loss);
    const double dt = (now_s() - t0) / reps;
    assert_memory_equal(g0, m.params.grad, m.params.total * sizeof(float));
    print_message("256 sequences, %d tokens, dim 64, 10 blocks: forward+backward+loss %.1f ms\n",
                  b.n_tok, 1e3 * dt);
    free(g0);
    step_free(&s);
    ragged_free(&b);
    br_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_backward_match_reference),
        cmocka_unit_test(test_sequence_order_does_not_matter),
        cmocka_unit_test(test_causal),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_full_size_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
