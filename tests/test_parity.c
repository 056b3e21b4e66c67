/* Parity of the C SASRec with a PyTorch reference implementation of the
 * CoSeRec/BASRec model (tests/fixtures/gen_sasrec_fixture.py): encoder
 * outputs, BCE loss and the gradient of every parameter on one left-padded
 * batch, computed in float64 by PyTorch and stored as float32.
 *
 * Tolerance: every comparison is max|c - ref| <= RTOL * max|ref| over the
 * whole tensor. The C model runs in float32 (unit roundoff 6e-8) through two
 * post-LN layers with dot products of at most 64 terms; LayerNorm
 * renormalises the activations, so errors stay a few dozen roundoffs of the
 * tensor's scale (measured: 1e-7 to 5e-7). Relative to the max rather than
 * per element because small gradient entries are differences of large
 * terms: their absolute error follows the tensor's scale, not their own
 * magnitude. 1e-5 leaves 20x margin for BLAS and thread-count reorderings,
 * yet catches even subtle deviations: a reference using the tanh GELU
 * approximation instead of erf differs by 3e-5 in sequence_output. */
#include "testutil.h"

#include <math.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"

#define FIXTURE "tests/fixtures/sasrec_tiny.safetensors"
#define RTOL 1e-5

/* ---- fixture access --------------------------------------------------- */

static int meta_int(const br_st_file *f, const char *key) {
    const char *v = br_st_meta_get(f, key);
    assert_non_null(v);
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

/* The fixture's padded batch: B sequences of L slots, item 0 = padding. */
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
    br_model_config_defaults(&fx->cfg);
    fx->cfg.n_items = meta_int(&fx->f, "n_items");
    fx->cfg.dim = meta_int(&fx->f, "hidden_size");
    fx->cfg.n_layers = meta_int(&fx->f, "num_hidden_layers");
    fx->cfg.n_heads = meta_int(&fx->f, "num_attention_heads");
    fx->cfg.max_len = meta_int(&fx->f, "max_seq_length");
    /* The C dropout draws its own masks: parity is checked without dropout. */
    fx->cfg.hidden_dropout = fx->cfg.attn_dropout = 0.0f;
    const br_st_entry *ids = br_st_find(&fx->f, "input_ids");
    assert_non_null(ids);
    assert_int_equal(ids->ndim, 2);
    fx->B = (int)ids->shape[0];
    fx->L = (int)ids->shape[1];
    fx->D = fx->cfg.dim;
    assert_int_equal(fx->L, fx->cfg.max_len);
    const int64_t BL = (int64_t)fx->B * fx->L;
    fx->input_ids = entry(&fx->f, "input_ids", BR_ST_I64, BL)->data;
    fx->target_pos = entry(&fx->f, "target_pos", BR_ST_I64, BL)->data;
    fx->target_neg = entry(&fx->f, "target_neg", BR_ST_I64, BL)->data;
    fx->sequence_output = entry(&fx->f, "sequence_output", BR_ST_F32, BL * fx->D)->data;
    fx->loss = *(const float *)entry(&fx->f, "loss", BR_ST_F32, 1)->data;
}

/* Creates the model and loads every parameter, by name, from the fixture. */
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
            /* Left padding: the absolute position id is the slot index. */
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

static void ragged_free(ragged *r) {
    free(r->seq_off);
    free(r->pos);
    free(r->item);
    free(r->target);
    free(r->neg);
    free(r->slot);
}

/* ---- comparison ------------------------------------------------------- */

static double max_abs(const float *x, size_t n) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)x[i]));
    return mx;
}

/* max|c - ref| / scale, with scale = max(max|ref|, min_scale) returned. */
static double rel_err(const float *c, const float *ref, size_t n, double min_scale, double *scale) {
    double diff = 0.0;
    for (size_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)c[i] - (double)ref[i]));
    *scale = fmax(max_abs(ref, n), min_scale);
    return *scale > 0.0 ? diff / *scale : diff;
}

/* Minimum scale for a gradient tensor. The key bias's gradient is exactly zero
 * in exact arithmetic (adding q.b_k to a whole row of scores leaves the
 * softmax unchanged), so the reference holds only float64 noise (~1e-19)
 * and the C value float32 noise: measure both against the gradient scale of
 * the same layer's query bias, which flows through the same scores. */
static double grad_min_scale(const fixture *fx, const char *param) {
    static const char key_bias[] = "attention.key.bias";
    const size_t n = strlen(param), k = strlen(key_bias);
    if (n < k || strcmp(param + n - k, key_bias) != 0) return 0.0;
    char name[BR_PARAM_NAME_MAX + 8];
    snprintf(name, sizeof name, "grad.%.*sattention.query.bias", (int)(n - k), param);
    const br_st_entry *e = entry(&fx->f, name, BR_ST_F32, fx->D);
    return max_abs(e->data, (size_t)e->numel);
}

/* One forward/backward of the batch in the given sequence order, checked
 * against the fixture; verbose prints every tensor's error. */
static void check_batch(const fixture *fx, const int *order, int verbose) {
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

    /* Outputs at real positions; padded slots' outputs are never used. */
    for (int t = 0; t < T; t++)
        memcpy(ref + (size_t)t * D, fx->sequence_output + (size_t)r.slot[t] * D, (size_t)D * sizeof(float));
    double scale, e = rel_err(h, ref, (size_t)T * D, 0.0, &scale);
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
        e = rel_err(br_pgrad(&m.params, i), g_ref, p->numel, grad_min_scale(fx, p->name), &scale);
        if (verbose) print_message("%-56s rel err %.3g (scale %.3g)\n", name, e, scale);
        if (e > worst) {
            worst = e;
            worst_name = p->name;
        }
    }
    print_message("worst gradient rel err %.3g (%s)\n", worst, worst_name);
    assert_true(worst <= RTOL);

    free(x);
    free(h);
    free(dh);
    free(ref);
    ragged_free(&r);
    br_model_free(&m);
}

/* ---- tests ------------------------------------------------------------ */

static void test_forward_backward_match_reference(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    assert_true(fx.B <= 64);
    for (int s = 0; s < fx.B; s++) order[s] = s;
    check_batch(&fx, order, 1);
    br_st_free(&fx.f);
}

/* The ragged batch carries no padding and sequences attend only within
 * themselves, so the reference's per-token results must not depend on which
 * sequences sit next to each other. */
static void test_sequence_order_does_not_matter(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    assert_true(fx.B <= 64);
    for (int s = 0; s < fx.B; s++) order[s] = fx.B - 1 - s;
    check_batch(&fx, order, 0);
    /* Odd sequences first, then even ones. */
    int k = 0;
    for (int s = 1; s < fx.B; s += 2) order[k++] = s;
    for (int s = 0; s < fx.B; s += 2) order[k++] = s;
    check_batch(&fx, order, 0);
    br_st_free(&fx.f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_backward_match_reference),
        cmocka_unit_test(test_sequence_order_does_not_matter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
