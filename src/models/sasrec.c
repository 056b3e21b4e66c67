/* SASRec (Kang & McAuley 2018) in the post-LN form of the BASRec reference:
 *   x = Dropout(LN(item + pos))
 *   per layer: x = LN(x + Dropout(Wo Attn(x))); x = LN(x + Dropout(W2 gelu(W1 x)))
 * computed on real tokens only (ragged batches). With the reference's
 * additive -10000 key-padding mask, padded keys get exactly zero attention
 * weight in float32, so real positions' outputs equal the padded
 * computation's up to rounding (tests/test_parity.c checks this). Padded
 * slots are encoded only when a caller asks for them (br_tokens.n_pad):
 * their queries attend to the whole row, as under the reference's mask. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/backbone.h"
#include "nn/ffn.h"
#include "nn/ops.h"

#define LN_EPS 1e-12f

typedef struct sasrec_layer_idx {
    int qkv_w, qkv_b, dense_w, dense_b, ln1_w, ln1_b;
    br_ffn_index ffn;
} sasrec_layer_idx;

/* Activations of one layer kept for the backward pass. */
typedef struct sasrec_layer_acts {
    float *x_in;     /* [T, D] layer input */
    float *qkv;      /* [T, 3D] */
    float *probs;    /* attention probabilities, ragged */
    float *ctx;      /* [T, D] */
    float *res1;     /* [T, D] x_in + dropout(dense(ctx)), LN1 input */
    float *ln1_mean, *ln1_rstd;
    float *x_mid;    /* [T, D] LN1 output */
    br_ffn_acts ffn;
} sasrec_layer_acts;

typedef struct sasrec {
    br_backbone base;
    int pos_emb, ln_w, ln_b;
    sasrec_layer_idx *layer;
    /* workspace */
    int32_t max_tok, max_seq;
    int64_t att_cap;
    float *buf;            /* one allocation for all activations */
    float *emb_sum, *ln0_mean, *ln0_rstd;
    sasrec_layer_acts *acts;
    int64_t *att_off;
    float *g_a, *g_b, *g_ffn, *g_qkv, *scratch; /* backward scratch */
    int scratch_threads;
    /* state of the last forward */
    int training;
    uint64_t key;
} sasrec;

static int sasrec_register(br_backbone *bb, br_params *p, br_error *err) {
    sasrec *m = (sasrec *)bb;
    const int64_t D = bb->cfg.dim, L = bb->cfg.max_len;
    char name[BR_PARAM_NAME_MAX];
#define ADD(idx, nm, nd, ...)                                                    \
    do {                                                                         \
        int64_t shp[] = {__VA_ARGS__};                                           \
        if (((idx) = br_params_add(p, (nm), (nd), shp, err)) < 0) return -1;     \
    } while (0)
    ADD(m->pos_emb, "position_embeddings.weight", 2, L, D);
    ADD(m->ln_w, "LayerNorm.weight", 1, D);
    ADD(m->ln_b, "LayerNorm.bias", 1, D);
    for (int l = 0; l < bb->cfg.n_layers; l++) {
        sasrec_layer_idx *li = &m->layer[l];
        int unused;
        /* query/key/value registered back to back: one fused [3D, D] matrix. */
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.query.weight", l);
        ADD(li->qkv_w, name, 2, D, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.key.weight", l);
        ADD(unused, name, 2, D, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.value.weight", l);
        ADD(unused, name, 2, D, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.query.bias", l);
        ADD(li->qkv_b, name, 1, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.key.bias", l);
        ADD(unused, name, 1, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.value.bias", l);
        ADD(unused, name, 1, D);
        (void)unused;
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.dense.weight", l);
        ADD(li->dense_w, name, 2, D, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.dense.bias", l);
        ADD(li->dense_b, name, 1, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.LayerNorm.weight", l);
        ADD(li->ln1_w, name, 1, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.attention.LayerNorm.bias", l);
        ADD(li->ln1_b, name, 1, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.intermediate.dense_1.weight", l);
        ADD(li->ffn.w1, name, 2, 4 * D, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.intermediate.dense_1.bias", l);
        ADD(li->ffn.b1, name, 1, 4 * D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.intermediate.dense_2.weight", l);
        ADD(li->ffn.w2, name, 2, D, 4 * D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.intermediate.dense_2.bias", l);
        ADD(li->ffn.b2, name, 1, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.intermediate.LayerNorm.weight", l);
        ADD(li->ffn.ln_w, name, 1, D);
        snprintf(name, sizeof name, "item_encoder.layer.%d.intermediate.LayerNorm.bias", l);
        ADD(li->ffn.ln_b, name, 1, D);
    }
#undef ADD
    return 0;
}

/* Reference init: normal(0, init_std) for linear and embedding weights,
 * zero biases, LayerNorm weight 1 and bias 0. Biases and LN parameters are
 * the only 1-D tensors. */
static void sasrec_init(br_backbone *bb, br_params *p, br_rng *rng) {
    sasrec *m = (sasrec *)bb;
    const int first = m->pos_emb;
    for (int i = first; i < p->n; i++) {
        const char *nm = p->list[i].name;
        if (p->list[i].ndim == 2) br_param_init_normal(p, i, bb->cfg.init_std, rng);
        else if (strstr(nm, "LayerNorm.weight")) br_param_init_const(p, i, 1.0f);
        else br_param_init_const(p, i, 0.0f);
    }
}

static int sasrec_reserve(br_backbone *bb, int32_t max_tok, int32_t max_seq, br_error *err) {
    sasrec *m = (sasrec *)bb;
    if (max_tok <= m->max_tok && max_seq <= m->max_seq) return 0;
    const int64_t T = max_tok, D = bb->cfg.dim, H = bb->cfg.n_heads, Lmax = bb->cfg.max_len;
    /* Attention probabilities of a batch: sum of n_s^2 per head, at most
     * (T / Lmax) full sequences of Lmax plus one partial: bounded by T * Lmax. */
    const int64_t att = H * T * Lmax;
    const int64_t per_layer = T * (D + 3 * D + D + D + 2 + D + 4 * D + 4 * D + D + 2) + att;
    const int64_t total = T * (D + 2) + bb->cfg.n_layers * per_layer;
    free(m->buf);
    free(m->att_off);
    free(m->g_a);
    free(m->g_b);
    free(m->g_ffn);
    free(m->g_qkv);
    free(m->scratch);
    m->buf = br_xmalloc((size_t)total * sizeof(float), err);
    m->att_off = br_xmalloc((size_t)(max_seq + 1) * sizeof(int64_t), err);
    m->g_a = br_xmalloc((size_t)(T * D) * sizeof(float), err);
    m->g_b = br_xmalloc((size_t)(T * D) * sizeof(float), err);
    m->g_ffn = br_xmalloc((size_t)(T * 4 * D) * sizeof(float), err);
    m->g_qkv = br_xmalloc((size_t)(T * 3 * D) * sizeof(float), err);
    m->scratch_threads = omp_get_max_threads();
    m->scratch = br_xmalloc((size_t)m->scratch_threads * (size_t)Lmax * sizeof(float), err);
    if (!m->buf || !m->att_off || !m->g_a || !m->g_b || !m->g_ffn || !m->g_qkv || !m->scratch) {
        m->max_tok = m->max_seq = 0;
        return -1;
    }
    float *b = m->buf;
#define TAKE(ptr, n) do { (ptr) = b; b += (n); } while (0)
    TAKE(m->emb_sum, T * D);
    TAKE(m->ln0_mean, T);
    TAKE(m->ln0_rstd, T);
    for (int l = 0; l < bb->cfg.n_layers; l++) {
        sasrec_layer_acts *a = &m->acts[l];
        TAKE(a->x_in, T * D);
        TAKE(a->qkv, T * 3 * D);
        TAKE(a->probs, att);
        TAKE(a->ctx, T * D);
        TAKE(a->res1, T * D);
        TAKE(a->ln1_mean, T);
        TAKE(a->ln1_rstd, T);
        TAKE(a->x_mid, T * D);
        TAKE(a->ffn.pre, T * 4 * D);
        TAKE(a->ffn.act, T * 4 * D);
        TAKE(a->ffn.res, T * D);
        TAKE(a->ffn.ln_mean, T);
        TAKE(a->ffn.ln_rstd, T);
    }
#undef TAKE
    m->max_tok = max_tok;
    m->max_seq = max_seq;
    m->att_cap = att;
    return 0;
}

/* Dropout sites get distinct keys derived from the step key. */
static inline uint64_t site_key(uint64_t key, int layer, int site) {
    return br_key(key, (uint64_t)layer + 1, (uint64_t)site);
}
enum { SITE_EMB, SITE_ATT_PROB, SITE_ATT_OUT, SITE_FFN_OUT };

static void block_tail(sasrec *m, const br_params *p, int l, const float *ctx, const float *x_in,
                       float *y, int n, float p_hid, uint64_t key);

/* The embedding block and the first NL layers; out is the last one's output. */
static void forward_layers(br_backbone *bb, const br_params *p, const br_tokens *tok,
                           const float *x_in, float *out, int training, uint64_t key, int NL) {
    sasrec *m = (sasrec *)bb;
    const br_model_config *c = &bb->cfg;
    const int T = tok->n_tok, D = c->dim;
    const float p_hid = training ? c->hidden_dropout : 0.0f;
    const float p_att = training ? c->attn_dropout : 0.0f;
    m->training = training;
    m->key = key;

    const float *pos = br_pdata(p, m->pos_emb);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++)
            m->emb_sum[(size_t)t * D + d] = x_in[(size_t)t * D + d] + pos[(size_t)tok->pos[t] * D + d];
    br_attention_offsets(m->att_off, tok->seq_off, tok->n_seq, c->n_heads);

    float *x = NL > 0 ? m->acts[0].x_in : out;
    br_layernorm_forward(x, m->ln0_mean, m->ln0_rstd, m->emb_sum, br_pdata(p, m->ln_w),
                         br_pdata(p, m->ln_b), T, D, LN_EPS);
    br_dropout(x, (long)T * D, p_hid, site_key(key, -1, SITE_EMB));

    for (int l = 0; l < NL; l++) {
        const sasrec_layer_idx *li = &m->layer[l];
        sasrec_layer_acts *a = &m->acts[l];
        float *x_out = l + 1 < NL ? m->acts[l + 1].x_in : out;
        br_linear_forward(a->qkv, a->x_in, br_pdata(p, li->qkv_w), br_pdata(p, li->qkv_b), T, D, 3 * D);
        br_attention_forward(a->ctx, a->probs, a->qkv, tok->seq_off, tok->n_pad, m->att_off, tok->n_seq, D,
                             c->n_heads, p_att, site_key(key, l, SITE_ATT_PROB));
        block_tail(m, p, l, a->ctx, a->x_in, x_out, T, p_hid, key);
    }
}

static void sasrec_forward(br_backbone *bb, const br_params *p, const br_tokens *tok,
                           const float *x_in, float *out, int training, uint64_t key) {
    forward_layers(bb, p, tok, x_in, out, training, key, bb->cfg.n_layers);
}

/* A layer after its attention: y = LN(x + Dropout(W2 gelu(W1 m) ...)) with
 * m = LN(x_in + Dropout(Wo ctx)), over n rows of layer l's workspace. */
static void block_tail(sasrec *m, const br_params *p, int l, const float *ctx, const float *x_in,
                       float *y, int n, float p_hid, uint64_t key) {
    const br_model_config *c = &m->base.cfg;
    const int D = c->dim;
    const sasrec_layer_idx *li = &m->layer[l];
    sasrec_layer_acts *a = &m->acts[l];
    br_linear_forward(a->res1, ctx, br_pdata(p, li->dense_w), br_pdata(p, li->dense_b), n, D, D);
    br_dropout(a->res1, (long)n * D, p_hid, site_key(key, l, SITE_ATT_OUT));
    for (long i = 0; i < (long)n * D; i++) a->res1[i] += x_in[i];
    br_layernorm_forward(a->x_mid, a->ln1_mean, a->ln1_rstd, a->res1, br_pdata(p, li->ln1_w),
                         br_pdata(p, li->ln1_b), n, D, LN_EPS);
    br_ffn_forward(p, &li->ffn, &a->ffn, a->x_mid, y, n, D, LN_EPS, p_hid, site_key(key, l, SITE_FFN_OUT));
}

/* Inference at the last tokens: all layers but the last in full; the last
 * needs keys and values of every token but the rest only at the S last
 * tokens, which skips most of its attention, projection and FFN work. */
static void sasrec_encode_last(br_backbone *bb, const br_params *p, const br_tokens *tok,
                               const float *x_in, float *out) {
    sasrec *m = (sasrec *)bb;
    const br_model_config *c = &bb->cfg;
    const int T = tok->n_tok, S = tok->n_seq, D = c->dim, NL = c->n_layers;
    /* Layers 0..NL-2 in full; their output is the last layer's input. */
    float *src = NL == 0 ? m->g_a : m->acts[NL - 1].x_in;
    forward_layers(bb, p, tok, x_in, src, 0, 0, NL > 0 ? NL - 1 : 0);
    float *last_in = m->g_b; /* [S, D]: the last tokens' rows of the layer input */
    for (int s = 0; s < S; s++)
        memcpy(last_in + (size_t)s * D, src + (size_t)(tok->seq_off[s + 1] - 1) * D, (size_t)D * sizeof(float));
    if (NL == 0) {
        memcpy(out, last_in, (size_t)S * D * sizeof(float));
        return;
    }
    const sasrec_layer_idx *li = &m->layer[NL - 1];
    sasrec_layer_acts *a = &m->acts[NL - 1];
    br_linear_forward(a->qkv, a->x_in, br_pdata(p, li->qkv_w), br_pdata(p, li->qkv_b), T, D, 3 * D);
    br_attention_last(a->ctx, a->qkv, tok->seq_off, S, D, c->n_heads);
    block_tail(m, p, NL - 1, a->ctx, last_in, out, S, 0.0f, 0);
}

static void sasrec_backward(br_backbone *bb, br_params *p, const br_tokens *tok,
                            const float *dout, float *dx_in) {
    sasrec *m = (sasrec *)bb;
    const br_model_config *c = &bb->cfg;
    const int T = tok->n_tok, D = c->dim, NL = c->n_layers;
    const float p_hid = m->training ? c->hidden_dropout : 0.0f;
    const float p_att = m->training ? c->attn_dropout : 0.0f;
    const uint64_t key = m->key;
    const long TD = (long)T * D;

    /* g_a holds the gradient w.r.t. the current layer's output. */
    float *g = m->g_a, *g_res = m->g_b;
    memcpy(g, dout, (size_t)TD * sizeof(float));
    for (int l = NL - 1; l >= 0; l--) {
        const sasrec_layer_idx *li = &m->layer[l];
        sasrec_layer_acts *a = &m->acts[l];
        /* FFN sub-layer: g becomes the gradient w.r.t. x_mid. */
        br_ffn_backward(p, &li->ffn, &a->ffn, a->x_mid, g, g_res, m->g_ffn, T, D, p_hid,
                        site_key(key, l, SITE_FFN_OUT));
        /* LN1: g -> g_res (gradient of res1 = x_in + dropout(dense(ctx))) */
        br_layernorm_backward(g_res, br_pgrad(p, li->ln1_w), br_pgrad(p, li->ln1_b), g, a->res1,
                              a->ln1_mean, a->ln1_rstd, br_pdata(p, li->ln1_w), T, D, 0);
        memcpy(g, g_res, (size_t)TD * sizeof(float));
        br_dropout(g_res, TD, p_hid, site_key(key, l, SITE_ATT_OUT));
        /* ctx gradient reuses g_ffn's first T*D floats. */
        float *g_ctx = m->g_ffn;
        br_linear_backward(g_ctx, br_pgrad(p, li->dense_w), br_pgrad(p, li->dense_b), g_res,
                           a->ctx, br_pdata(p, li->dense_w), T, D, D, 0);
        br_attention_backward(m->g_qkv, g_ctx, a->probs, a->qkv, tok->seq_off, tok->n_pad, m->att_off,
                              tok->n_seq, D, c->n_heads, p_att, site_key(key, l, SITE_ATT_PROB),
                              m->scratch, m->scratch_threads);
        br_linear_backward(g, br_pgrad(p, li->qkv_w), br_pgrad(p, li->qkv_b), m->g_qkv, a->x_in,
                           br_pdata(p, li->qkv_w), T, D, 3 * D, 1);
    }
    /* Embedding block: dropout, LN0, then split to position and item. */
    br_dropout(g, TD, p_hid, site_key(key, -1, SITE_EMB));
    br_layernorm_backward(dx_in, br_pgrad(p, m->ln_w), br_pgrad(p, m->ln_b), g, m->emb_sum,
                          m->ln0_mean, m->ln0_rstd, br_pdata(p, m->ln_w), T, D, 0);
    float *gpos = br_pgrad(p, m->pos_emb);
    /* Serial scatter: several tokens share a position id. */
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) gpos[(size_t)tok->pos[t] * D + d] += dx_in[(size_t)t * D + d];
}

static void sasrec_destroy(br_backbone *bb) {
    sasrec *m = (sasrec *)bb;
    if (!m) return;
    free(m->layer);
    free(m->acts);
    free(m->buf);
    free(m->att_off);
    free(m->g_a);
    free(m->g_b);
    free(m->g_ffn);
    free(m->g_qkv);
    free(m->scratch);
    free(m);
}

static const br_backbone_vtable sasrec_vtable = {
    .name = "sasrec",
    .register_params = sasrec_register,
    .init_params = sasrec_init,
    .reserve = sasrec_reserve,
    .forward = sasrec_forward,
    .encode_last = sasrec_encode_last,
    .backward = sasrec_backward,
    .destroy = sasrec_destroy,
    .encodes_padding = 1,
};

br_backbone *br_sasrec_create(const br_model_config *cfg, br_error *err) {
    if (cfg->dim <= 0 || cfg->n_heads <= 0 || cfg->dim % cfg->n_heads != 0) {
        br_errorf(err, "sasrec: hidden size %d must be a positive multiple of the number of heads %d",
                  cfg->dim, cfg->n_heads);
        return NULL;
    }
    if (cfg->n_layers < 0 || cfg->max_len <= 0) {
        br_errorf(err, "sasrec: need layers >= 0 and max_len > 0");
        return NULL;
    }
    sasrec *m = br_xcalloc(1, sizeof *m, err);
    if (!m) return NULL;
    m->base.vt = &sasrec_vtable;
    m->base.cfg = *cfg;
    m->layer = br_xcalloc((size_t)cfg->n_layers + 1, sizeof *m->layer, err);
    m->acts = br_xcalloc((size_t)cfg->n_layers + 1, sizeof *m->acts, err);
    if (!m->layer || !m->acts) {
        sasrec_destroy(&m->base);
        return NULL;
    }
    return &m->base;
}
