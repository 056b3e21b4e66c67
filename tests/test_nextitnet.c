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
#include "fixture_util.h"

#include <math.h>
#include <time.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"
#include "util/rng.h"

#define FIXTURE "tests/fixtures/nextitnet_tiny.safetensors"
#define RTOL 1e-5

/* ---- fixture access --------------------------------------------------- */

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
    assert_int_equal(fx_meta_int(&fx->f, "kernel_size"), 3);
    assert_string_equal(br_st_meta_get(&fx->f, "dilations"), "1,4");
    br_model_config_defaults(&fx->cfg);
    strcpy(fx->cfg.model, "nextitnet");
    fx->cfg.n_items = fx_meta_int(&fx->f, "n_items");
    fx->cfg.dim = fx_meta_int(&fx->f, "hidden_size");
    fx->cfg.n_layers = fx_meta_int(&fx->f, "num_blocks");
    fx->cfg.hidden_dropout = fx->cfg.attn_dropout = 0.0f;
    const br_st_entry *ids = br_st_find(&fx->f, "input_ids");
    assert_non_null(ids);
    assert_int_equal(ids->ndim, 2);
    fx->B = (int)ids->shape[0];
    fx->L = (int)ids->shape[1];
    fx->D = fx->cfg.dim;
    fx->cfg.max_len = fx->L;
    const int64_t BL = (int64_t)fx->B * fx->L;
    fx->input_ids = fx_entry(&fx->f, "input_ids", BR_ST_I64, BL)->data;
    fx->target_pos = fx_entry(&fx->f, "target_pos", BR_ST_I64, BL)->data;
    fx->target_neg = fx_entry(&fx->f, "target_neg", BR_ST_I64, BL)->data;
    fx->sequence_output = fx_entry(&fx->f, "sequence_output", BR_ST_F32, BL * fx->D)->data;
    fx->loss = *(const float *)fx_entry(&fx->f, "loss", BR_ST_F32, 1)->data;
}

/* ---- ragged batch ----------------------------------------------------- */

/* Random sequences of the given lengths over items 1..n_items, with
 * next-item targets and negatives. */
static void ragged_random(fx_ragged *r, const int *lens, int n_seq, int n_items, br_rng *rng) {
    int total = 0;
    for (int s = 0; s < n_seq; s++) total += lens[s];
    fx_ragged_alloc(r, n_seq, total);
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

/* ---- one training step ------------------------------------------------ */

/* Buffers of one forward/backward over a ragged batch. */
typedef struct step {
    br_model *m;
    const fx_ragged *r;
    float *x, *h, *dh, *dx, *dE; /* dE: scratch for objective-only loss calls */
    uint64_t key;
} step;

static void step_init(step *s, br_model *m, const fx_ragged *r, uint64_t key) {
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

/* Forward and loss; the loss's dE goes to the gradient (grad_E) or scratch. */
static double step_loss(step *s, int grad_E) {
    br_model *m = s->m;
    const br_tokens tok = fx_ragged_tokens(s->r);
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
    const br_tokens tok = fx_ragged_tokens(s->r);
    s->m->backbone->vt->backward(s->m->backbone, &s->m->params, &tok, s->dh, s->dx);
    br_model_scatter_grad(s->m, s->r->item, s->r->n_tok, s->dx);
    return loss;
}

/* ---- parity ----------------------------------------------------------- */

static void check_batch(const fixture *fx, const int *order, int verbose) {
    br_model m;
    fx_ragged r;
    step s;
    fx_model_load(&m, &fx->cfg, &fx->f, "");
    fx_ragged_from_padded(&r, fx->B, fx->L, fx->input_ids, fx->target_pos, fx->target_neg, order);
    step_init(&s, &m, &r, 7);
    const double loss = step_full(&s);
    fx_check_rows("", s.h, fx->sequence_output, r.slot, r.n_tok, fx->D, RTOL, verbose);
    fx_check_loss("", loss, fx->loss, RTOL, verbose);
    fx_check_grads(&m, &fx->f, 44, NULL, NULL, RTOL, verbose);

    step_free(&s);
    fx_ragged_free(&r);
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
    fx_order_reversed(order, fx.B);
    check_batch(&fx, order, 0);
    fx_order_odd_even(order, fx.B);
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
    fx_ragged r;
    step s;
    fx_model_load(&m, &fx.cfg, &fx.f, "");
    fx_ragged_from_padded(&r, fx.B, fx.L, fx.input_ids, fx.target_pos, fx.target_neg, order);
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
    fx_ragged_free(&r);
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

/* The training loss, dropout on; the item table's loss gradient to scratch. */
static double step_obj(void *s) { return step_loss(s, 0); }

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
    fx_ragged b;
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
        if (fx_max_abs(g, p->numel) == 0.0) fail_msg("%s: gradient is zero", p->name);
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
            const double e = fx_fd_entry(step_obj, &s, p->name, x, idx, g[idx], FD_EPS, FD_FLOOR, FD_TOL);
            if (e > worst) worst = e, worst_name = p->name;
        }
    }

    /* All parameters along one random direction. */
    double fd;
    const double an = fx_fd_direction(&m.params, step_obj, &s, FD_EPS_DIR, &r, &fd);
    const long n = (long)m.params.total;
    double g2 = 0.0;
    for (long i = 0; i < n; i++) g2 += (double)m.params.grad[i] * m.params.grad[i];
    const double e_dir = fx_fd_rel(fd, an, 2.0 * FD_EPS_DIR * sqrt(g2));
    print_message("nextitnet loss: worst entry %.1e (%s) | direction %.1e (%.7g vs %.7g)\n", worst,
                  worst_name, e_dir, fd, an);
    assert_true(e_dir <= FD_TOL_DIR);

    step_free(&s);
    fx_ragged_free(&b);
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
    fx_ragged b;
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
    fx_ragged_free(&b);
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
