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
#include "fixture_util.h"

#include <math.h>

#include "models/model.h"
#include "train/loss.h"
#include "train/safetensors.h"

#define FIXTURE "tests/fixtures/sasrec_tiny.safetensors"
#define RTOL 1e-5

/* ---- fixture access --------------------------------------------------- */

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
    fx->cfg.n_items = fx_meta_int(&fx->f, "n_items");
    fx->cfg.dim = fx_meta_int(&fx->f, "hidden_size");
    fx->cfg.n_layers = fx_meta_int(&fx->f, "num_hidden_layers");
    fx->cfg.n_heads = fx_meta_int(&fx->f, "num_attention_heads");
    fx->cfg.max_len = fx_meta_int(&fx->f, "max_seq_length");
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
    fx->input_ids = fx_entry(&fx->f, "input_ids", BR_ST_I64, BL)->data;
    fx->target_pos = fx_entry(&fx->f, "target_pos", BR_ST_I64, BL)->data;
    fx->target_neg = fx_entry(&fx->f, "target_neg", BR_ST_I64, BL)->data;
    fx->sequence_output = fx_entry(&fx->f, "sequence_output", BR_ST_F32, BL * fx->D)->data;
    fx->loss = *(const float *)fx_entry(&fx->f, "loss", BR_ST_F32, 1)->data;
}

/* ---- comparison ------------------------------------------------------- */

/* Minimum scale for a gradient tensor. The key bias's gradient is exactly zero
 * in exact arithmetic (adding q.b_k to a whole row of scores leaves the
 * softmax unchanged), so the reference holds only float64 noise (~1e-19)
 * and the C value float32 noise: measure both against the gradient scale of
 * the same layer's query bias, which flows through the same scores. */
static double grad_min_scale(const void *ctx, const char *param) {
    const fixture *fx = ctx;
    static const char key_bias[] = "attention.key.bias";
    const size_t n = strlen(param), k = strlen(key_bias);
    if (n < k || strcmp(param + n - k, key_bias) != 0) return 0.0;
    char name[BR_PARAM_NAME_MAX + 8];
    snprintf(name, sizeof name, "grad.%.*sattention.query.bias", (int)(n - k), param);
    const br_st_entry *e = fx_entry(&fx->f, name, BR_ST_F32, fx->D);
    return fx_max_abs(e->data, (size_t)e->numel);
}

/* One forward/backward of the batch in the given sequence order, checked
 * against the fixture; verbose prints every tensor's error. */
static void check_batch(const fixture *fx, const int *order, int verbose) {
    br_model m;
    fx_ragged r;
    br_error err;
    fx_model_load(&m, &fx->cfg, &fx->f, "");
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
    fx_check_rows("", h, fx->sequence_output, r.slot, T, D, RTOL, verbose);

    const double loss = br_bce_loss(h, r.target, r.neg, NULL, T, D, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    fx_check_loss("", loss, fx->loss, RTOL, verbose);

    /* x is free again: it takes the input-embedding gradient. */
    bb->vt->backward(bb, &m.params, &tok, dh, x);
    br_model_scatter_grad(&m, r.item, T, x);
    fx_check_grads(&m, &fx->f, 56, grad_min_scale, fx, RTOL, verbose);

    free(x);
    free(h);
    free(dh);
    fx_ragged_free(&r);
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
    fx_order_reversed(order, fx.B);
    check_batch(&fx, order, 0);
    /* Odd sequences first, then even ones. */
    fx_order_odd_even(order, fx.B);
    check_batch(&fx, order, 0);
    br_st_free(&fx.f);
}

/* Inference at the last tokens only (what evaluation and serving read)
 * gives the reference's outputs at each sequence's last slot. */
static void test_encode_last_matches_reference(void **state) {
    fixture fx;
    fixture_load(&fx);
    int order[64];
    assert_true(fx.B <= 64);
    fx_order_odd_even(order, fx.B);
    br_model m;
    fx_ragged r;
    br_error err;
    fx_model_load(&m, &fx.cfg, &fx.f, "");
    fx_ragged_from_padded(&r, fx.B, fx.L, fx.input_ids, fx.target_pos, fx.target_neg, order);
    const int T = r.n_tok, S = r.n_seq, D = fx.D;
    if (br_model_reserve(&m, T, S, &err) != 0) fail_msg("%s", err.msg);
    float *x = malloc((size_t)T * D * sizeof(float)), *h = malloc((size_t)T * D * sizeof(float));
    int32_t *last = malloc((size_t)S * sizeof(int32_t));
    assert_true(x && h && last);
    assert_non_null(m.backbone->vt->encode_last);
    for (int s = 0; s < S; s++) last[s] = r.slot[r.seq_off[s + 1] - 1];
    const br_tokens tok = fx_ragged_tokens(&r);
    br_model_gather(&m, r.item, T, x);
    br_backbone_encode_last(m.backbone, &m.params, &tok, x, h, h);
    fx_check_rows("last tokens: ", h, fx.sequence_output, last, S, D, RTOL, 1);
    free(x), free(h), free(last);
    fx_ragged_free(&r);
    br_model_free(&m);
    br_st_free(&fx.f);
}

/* Every slot of the padded batch, padding included, encoded with the
 * padded slots marked (br_tokens.n_pad): the outputs at all B x L slots
 * equal the reference's, whose padded queries have every key masked; and
 * the loss and gradients, which only real slots reach, stay the reference's. */
static void test_padded_slots_match_reference(void **state) {
    fixture fx;
    fixture_load(&fx);
    const int B = fx.B, L = fx.L, D = fx.D, T = B * L;
    br_model m;
    br_error err;
    fx_model_load(&m, &fx.cfg, &fx.f, "");
    if (br_model_reserve(&m, T, B, &err) != 0) fail_msg("%s", err.msg);
    int32_t *seq_off = malloc((size_t)(B + 1) * sizeof(int32_t)), *n_pad = malloc((size_t)B * sizeof(int32_t));
    int32_t *pos = malloc((size_t)T * sizeof(int32_t)), *item = malloc((size_t)T * sizeof(int32_t));
    int32_t *target = malloc((size_t)T * sizeof(int32_t)), *neg = malloc((size_t)T * sizeof(int32_t));
    int32_t *slot = malloc((size_t)T * sizeof(int32_t));
    float *x = malloc((size_t)T * D * sizeof(float)), *h = malloc((size_t)T * D * sizeof(float));
    float *dh = malloc((size_t)T * D * sizeof(float));
    assert_true(seq_off && n_pad && pos && item && target && neg && slot && x && h && dh);
    int padded_rows = 0;
    for (int b = 0; b < B; b++) {
        seq_off[b] = b * L;
        n_pad[b] = 0;
        while (n_pad[b] < L && fx.input_ids[(size_t)b * L + n_pad[b]] == 0) n_pad[b]++;
        padded_rows += n_pad[b] > 0;
        for (int j = 0; j < L; j++) {
            const int k = b * L + j;
            /* Left padding: zeros first, then items only. */
            assert_true(j < n_pad[b] ? fx.input_ids[k] == 0 : fx.input_ids[k] > 0);
            pos[k] = j;
            item[k] = (int32_t)fx.input_ids[k];
            target[k] = (int32_t)fx.target_pos[k];
            neg[k] = (int32_t)fx.target_neg[k];
            slot[k] = k;
        }
    }
    seq_off[B] = T;
    assert_true(padded_rows > 0);
    const br_tokens tok = {B, T, seq_off, pos, n_pad};
    br_backbone *bb = m.backbone;
    assert_true(bb->vt->encodes_padding);
    br_model_gather(&m, item, T, x);
    bb->vt->forward(bb, &m.params, &tok, x, h, 1, 7);
    fx_check_rows("all slots: ", h, fx.sequence_output, slot, T, D, RTOL, 1);

    const double loss = br_bce_loss(h, target, neg, NULL, T, D, br_model_items(&m),
                                    br_pgrad(&m.params, m.item_emb), dh, 1.0f);
    fx_check_loss("all slots: ", loss, fx.loss, RTOL, 1);
    bb->vt->backward(bb, &m.params, &tok, dh, x);
    br_model_scatter_grad(&m, item, T, x);
    /* The padding row is read, but the reference (padding_idx) never trains it. */
    memset(br_pgrad(&m.params, m.item_emb), 0, (size_t)D * sizeof(float));
    fx_check_grads(&m, &fx.f, 56, grad_min_scale, &fx, RTOL, 0);

    free(seq_off), free(n_pad), free(pos), free(item), free(target), free(neg), free(slot);
    free(x), free(h), free(dh);
    br_model_free(&m);
    br_st_free(&fx.f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_last_matches_reference),
        cmocka_unit_test(test_padded_slots_match_reference),
        cmocka_unit_test(test_forward_backward_match_reference),
        cmocka_unit_test(test_sequence_order_does_not_matter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
