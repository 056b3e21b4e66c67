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
#include "fixture_util.h"

#include <math.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"
#include "util/rng.h"

#define FIXTURE "tests/fixtures/gru4rec_tiny.safetensors"
#define FIXTURE_PADDED "tests/fixtures/gru4rec_padded_tiny.safetensors"
#define RTOL 1e-5

static float *alloc_f(long n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    assert_non_null(p);
    return p;
}

/* ---- fixture ----------------------------------------------------------- */

/* The fixture's ragged batch: B sequences, T tokens, in fixture order. */
typedef struct fixture {
    br_st_file f;
    br_model_config cfg;
    int B, T, D;
    const int64_t *seq_len, *input_ids, *target_pos, *target_neg;
    const float *sequence_output;
    float loss;
} fixture;

static void fixture_load(fixture *fx, const char *path) {
    br_error err;
    if (br_st_read(path, &fx->f, &err) != 0) fail_msg("%s", err.msg);
    br_model_config_defaults(&fx->cfg);
    strcpy(fx->cfg.model, "gru4rec");
    const char *v = br_st_meta_get(&fx->f, "n_items");
    assert_non_null(v);
    fx->cfg.n_items = atoi(v);
    assert_non_null(v = br_st_meta_get(&fx->f, "hidden_size"));
    fx->cfg.dim = atoi(v);
    assert_non_null(v = br_st_meta_get(&fx->f, "gru_hidden_size"));
    assert_int_equal(atoi(v), 2 * fx->cfg.dim);
    /* The padded fixture: left padding to max_seq_length, run through. */
    if ((v = br_st_meta_get(&fx->f, "run_padding"))) {
        fx->cfg.run_padding = atoi(v);
        assert_non_null(v = br_st_meta_get(&fx->f, "max_seq_length"));
        fx->cfg.max_len = atoi(v);
    }
    /* The C dropout draws its own masks: parity is checked without dropout. */
    fx->cfg.hidden_dropout = fx->cfg.attn_dropout = 0.0f;
    const br_st_entry *lens = br_st_find(&fx->f, "seq_len");
    assert_non_null(lens);
    fx->B = (int)lens->numel;
    fx->seq_len = lens->data;
    fx->T = 0;
    for (int s = 0; s < fx->B; s++) fx->T += (int)fx->seq_len[s];
    fx->D = fx->cfg.dim;
    fx->input_ids = fx_entry(&fx->f, "input_ids", BR_ST_I64, fx->T)->data;
    fx->target_pos = fx_entry(&fx->f, "target_pos", BR_ST_I64, fx->T)->data;
    fx->target_neg = fx_entry(&fx->f, "target_neg", BR_ST_I64, fx->T)->data;
    fx->sequence_output = fx_entry(&fx->f, "sequence_output", BR_ST_F32, (int64_t)fx->T * fx->D)->data;
    fx->loss = *(const float *)fx_entry(&fx->f, "loss", BR_ST_F32, 1)->data;
}

/* The fixture's sequences in the given order. */
static void ragged_from_fixture(fx_ragged *r, const fixture *fx, const int *order) {
    int32_t start[64];
    assert_true(fx->B <= 64);
    start[0] = 0;
    for (int s = 1; s < fx->B; s++) start[s] = start[s - 1] + (int32_t)fx->seq_len[s - 1];
    fx_ragged_alloc(r, fx->B, fx->T);
    r->n_tok = fx->T;
    int t = 0;
    for (int s = 0; s < fx->B; s++) {
        const int b = order[s], n = (int)fx->seq_len[b];
        for (int j = 0; j < n; j++, t++) {
            const int k = start[b] + j;
            /* absolute slots (read by run_padding only) */
            r->pos[t] = fx->cfg.run_padding ? fx->cfg.max_len - n + j : j;
            r->item[t] = (int32_t)fx->input_ids[k];
            r->target[t] = (int32_t)fx->target_pos[k];
            r->neg[t] = (int32_t)fx->target_neg[k];
            r->slot[t] = k;
        }
        r->seq_off[s + 1] = t;
    }
}

/* ---- parity ------------------------------------------------------------ */

/* One forward/backward of the fixture batch in the given sequence order,
 * checked against the reference; verbose prints every tensor's error. */
static void check_batch(const fixture *fx, const int *order, int verbose) {
    br_model m;
    fx_ragged r;
    br_error err;
    fx_model_load(&m, &fx->cfg, &fx->f, "");
    ragged_from_fixture(&r, fx, order);
    const int T = r.n_tok, D = fx->D;
    if (br_model_reserve(&m, T, r.n_seq, &err) != 0) fail_msg("%s", err.msg);
    float *x = alloc_f((long)T * D), *h = alloc_f((long)T * D), *dh = alloc_f((long)T * D);

    const br_tokens tok = fx_ragged_tokens(&r);
    br_backbone *bb = m.backbone;
    br_model_gather(&m, r.item, T, x);
    bb->vt->forward(bb, &m.params, &tok, x, h, 1, 7);
    fx_check_rows("", h, fx->sequence_output, r.slot, T, D, RTOL, verbose);

    const double loss = br_bce_loss(h, r.target, r.neg, NULL, T, D, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    fx_check_loss("", loss, fx->loss, RTOL, verbose);

    /* x is free again: it takes the input-embedding gradient. */
    bb->vt->backward(bb, &m.params, &tok, dh, x);
    br_model_scatter_grad(&m, r.item, T, x);
    fx_check_grads(&m, &fx->f, 32, NULL, NULL, RTOL, verbose);

    free(x), free(h), free(dh);
    fx_ragged_free(&r);
    br_model_free(&m);
}

static void check_fixture(const char *path) {
    fixture fx;
    fixture_load(&fx, path);
    int order[64];
    for (int s = 0; s < fx.B; s++) order[s] = s;
    check_batch(&fx, order, 1);
    br_st_free(&fx.f);
}

static void test_forward_backward_match_reference(void **state) { check_fixture(FIXTURE); }
static void test_run_padding_matches_reference(void **state) { check_fixture(FIXTURE_PADDED); }

/* The recurrence is batched over sequences sorted by length: results must
 * not depend on the batch order of the sequences. */
static void test_sequence_order_does_not_matter(void **state) {
    const char *paths[2] = {FIXTURE, FIXTURE_PADDED};
    for (int i = 0; i < 2; i++) {
        fixture fx;
        fixture_load(&fx, paths[i]);
        int order[64];
        fx_order_reversed(order, fx.B);
        check_batch(&fx, order, 0);
        fx_order_odd_even(order, fx.B);
        check_batch(&fx, order, 0);
        br_st_free(&fx.f);
    }
}

/* ---- finite differences ------------------------------------------------ */

/* A small model with dropout and a batch of sequences of lengths 4, 1, 0
 * (an empty sequence must be harmless), 7 and 3, items repeated within and
 * across sequences. */
#define FD_NSEQ 5
static const int fd_lens[FD_NSEQ] = {4, 1, 0, 7, 3};

typedef struct fd_ctx {
    br_model m;
    fx_ragged r;
    float *x, *h, *dh, *dE; /* dh, dE: scratch the loss writes during differencing */
    float pad_row[8];       /* run_padding: the padding row, held fixed */
    uint64_t key;
} fd_ctx;

#define FD_MAX_LEN 9

static void fd_setup(fd_ctx *c, float dropout, int run_padding) {
    br_model_config cfg;
    br_error err;
    br_model_config_defaults(&cfg);
    strcpy(cfg.model, "gru4rec");
    cfg.n_items = 30, cfg.dim = 8, cfg.hidden_dropout = dropout;
    cfg.max_len = FD_MAX_LEN, cfg.run_padding = run_padding;
    /* A larger item table than the default 0.02 so every path carries signal. */
    cfg.init_std = 0.5f;
    assert_int_equal(br_model_create(&c->m, &cfg, &err), 0);
    br_model_init_weights(&c->m, 23);
    int n_tok = 0;
    for (int s = 0; s < FD_NSEQ; s++) n_tok += fd_lens[s];
    fx_ragged_alloc(&c->r, FD_NSEQ, n_tok);
    c->r.n_tok = n_tok;
    br_rng rng;
    br_rng_seed(&rng, 23, 2);
    int t = 0;
    for (int s = 0; s < FD_NSEQ; s++) {
        for (int j = 0; j < fd_lens[s]; j++, t++) {
            c->r.item[t] = 1 + (int32_t)br_rng_below(&rng, 12);
            c->r.target[t] = 1 + (int32_t)br_rng_below(&rng, 12);
            c->r.neg[t] = 13 + (int32_t)br_rng_below(&rng, 18);
            c->r.pos[t] = FD_MAX_LEN - fd_lens[s] + j; /* left-padded slots */
        }
        c->r.seq_off[s + 1] = t;
    }
    assert_int_equal(br_model_reserve(&c->m, n_tok, FD_NSEQ, &err), 0);
    const long TD = (long)n_tok * cfg.dim;
    c->x = alloc_f(TD), c->h = alloc_f(TD), c->dh = alloc_f(TD);
    c->dE = alloc_f((long)(cfg.n_items + 1) * cfg.dim);
    c->key = 0x6a75;
    memcpy(c->pad_row, br_model_items(&c->m), sizeof c->pad_row);
}

static void fd_teardown(fd_ctx *c) {
    free(c->x), free(c->h), free(c->dh), free(c->dE);
    fx_ragged_free(&c->r);
    br_model_free(&c->m);
}

/* The training loss as the trainer computes it, dropout on. The padding
 * row is a constant (it has no gradient, as with torch's padding_idx):
 * differences along it are undone here. */
static double fd_loss(fd_ctx *c) {
    const br_tokens tok = fx_ragged_tokens(&c->r);
    memcpy(br_model_items(&c->m), c->pad_row, sizeof c->pad_row);
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

static double fd_obj(void *c) { return fd_loss(c); }

static void check_gradients(int run_padding) {
    fd_ctx c;
    fd_setup(&c, 0.3f, run_padding);
    br_params *P = &c.m.params;
    const int D = c.m.cfg.dim;
    br_params_zero_grad(P);
    const br_tokens tok = fx_ragged_tokens(&c.r);
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
            e_t = fmax(e_t, fx_fd_entry(fd_obj, &c, pi->name, w, idx, g[idx], FD_EPS, FD_FLOOR, FD_TOL));
        }
        print_message("%-26s worst entry rel err %.1e\n", pi->name, e_t);
        if (e_t > worst) worst = e_t, worst_name = pi->name;
    }

    /* Directional derivative over all parameters at once. */
    double fd;
    const double an = fx_fd_direction(P, fd_obj, &c, FD_EPS_DIR, &rng, &fd);
    const double e_dir = fx_fd_rel(fd, an, FD_FLOOR * 2.0 * FD_EPS_DIR);
    print_message("gru4rec%s loss: worst entry %.1e (%s) | direction %.1e\n",
                  run_padding ? " (run_padding)" : "", worst, worst_name, e_dir);
    if (e_dir > FD_TOL_DIR)
        fail_msg("directional difference %.7g, analytic %.7g (rel err %.2e)", fd, an, e_dir);
    /* The padding row takes no gradient. */
    for (int d = 0; d < D; d++) assert_true(br_pgrad(P, c.m.item_emb)[d] == 0.0f);

    free(dx);
    fd_teardown(&c);
}

static void test_gradients_finite_differences(void **state) { check_gradients(0); }
static void test_gradients_run_padding(void **state) { check_gradients(1); }

/* run_padding starts a sequence from the chain state of its first slot: a
 * function of the padding row and of the sequence's length, where the
 * default start (h = 0) depends on neither. */
static void test_run_padding_start_state(void **state) {
    fd_ctx a, b;
    fd_setup(&a, 0.0f, 0);
    fd_setup(&b, 0.0f, 1);
    const br_tokens tok = fx_ragged_tokens(&a.r);
    const size_t bytes = (size_t)a.r.n_tok * a.m.cfg.dim * sizeof(float);
    br_model_gather(&a.m, a.r.item, a.r.n_tok, a.x);
    a.m.backbone->vt->forward(a.m.backbone, &a.m.params, &tok, a.x, a.h, 0, 0);
    b.m.backbone->vt->forward(b.m.backbone, &b.m.params, &tok, a.x, b.h, 0, 0);
    assert_memory_not_equal(a.h, b.h, bytes);
    /* With a zero padding row the bias-free GRU stays at h = 0 over the
     * padding: both starts agree exactly. */
    memset(br_model_items(&b.m), 0, sizeof b.pad_row);
    b.m.backbone->vt->forward(b.m.backbone, &b.m.params, &tok, a.x, b.h, 0, 0);
    assert_memory_equal(a.h, b.h, bytes);
    /* Moving a sequence to other slots changes its start and its outputs. */
    memcpy(br_model_items(&b.m), b.pad_row, sizeof b.pad_row);
    b.m.backbone->vt->forward(b.m.backbone, &b.m.params, &tok, a.x, a.h, 0, 0);
    for (int t = 0; t < b.r.n_tok; t++) b.r.pos[t] -= 1;
    const br_tokens shifted = fx_ragged_tokens(&b.r);
    b.m.backbone->vt->forward(b.m.backbone, &b.m.params, &shifted, a.x, b.h, 0, 0);
    assert_memory_not_equal(a.h, b.h, bytes);
    fd_teardown(&a);
    fd_teardown(&b);
}

/* ---- dropout keying ---------------------------------------------------- */

static void test_dropout_is_keyed(void **state) {
    fd_ctx c;
    fd_setup(&c, 0.5f, 0);
    const size_t bytes = (size_t)c.r.n_tok * c.m.cfg.dim * sizeof(float);
    const br_tokens tok = fx_ragged_tokens(&c.r);
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
        cmocka_unit_test(test_run_padding_matches_reference),
        cmocka_unit_test(test_sequence_order_does_not_matter),
        cmocka_unit_test(test_gradients_finite_differences),
        cmocka_unit_test(test_gradients_run_padding),
        cmocka_unit_test(test_run_padding_start_state),
        cmocka_unit_test(test_dropout_is_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
