/* NextItNet (Yuan et al., WSDM 2019) in RecBole's layout (docs/nextitnet.md):
 *   x = Dropout(item embeddings)
 *   per residual block b (cfg.n_layers of them), d = 1 for even b, 4 for odd b:
 *     x = x + relu(LN2(conv2(relu(LN1(conv1(x))))))
 *   with conv1 of dilation d and conv2 of dilation 2d, both causal, kernel 3,
 *   D -> D channels with bias, LayerNorm eps 1e-8;
 *   out = final_layer(x), a D x D linear.
 * Convolutions are causal per sequence of the ragged batch: the taps that
 * reach before the sequence's first item read zeros, exactly as RecBole's
 * left ZeroPad2d in front of its (right-padded) real items. Each convolution
 * is one GEMM on an im2col buffer in tap-major order (whole rows copied per
 * tap); the weights, stored in PyTorch's Conv2d layout [out, in, 1, k], are
 * permuted into that order for each forward pass, and their gradients
 * permuted back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/backbone.h"
#include "nn/ops.h"

#define NI_K 3          /* kernel width */
#define NI_LN_EPS 1e-8f /* RecBole's nn.LayerNorm(eps=1e-8) */

/* RecBole's dilations [1, 4], repeated over the blocks. */
static const int ni_dilation[2] = {1, 4};

typedef struct ni_block_idx {
    int c1_w, c1_b, ln1_w, ln1_b, c2_w, c2_b, ln2_w, ln2_b;
} ni_block_idx;

/* Activations of one block kept for the backward pass. */
typedef struct ni_block_acts {
    float *c1, *ln1_mean, *ln1_rstd; /* conv1 output (LN1 input) and its stats */
    float *a1;                       /* relu(LN1(c1)), conv2 input */
    float *c2, *ln2_mean, *ln2_rstd;
    float *a2;                       /* relu(LN2(c2)), the residual branch */
} ni_block_acts;

typedef struct nextitnet {
    br_backbone base;
    ni_block_idx *blk;
    int fin_w, fin_b;
    /* workspace */
    int32_t max_tok;
    float *buf;          /* one allocation for all activations and scratch */
    float **x;           /* n_layers + 1 residual streams: x[0] input, x[b + 1] block b output */
    ni_block_acts *acts;
    float *col, *dcol;   /* [T, K * D] im2col of a convolution's input, and its gradient */
    float *w_tap, *dw_tap; /* [2 * n_layers][D, K * D]: conv weights in im2col's column order, gradient scratch */
    float *g_x, *g_t, *g_c; /* backward: stream, branch and pre-LN gradients */
    int32_t *seq_of;     /* sequence index of each token */
    /* state of the last forward */
    int training;
    uint64_t key;
} nextitnet;

static int ni_register(br_backbone *bb, br_params *p, br_error *err) {
    nextitnet *m = (nextitnet *)bb;
    const int64_t D = bb->cfg.dim;
    char name[BR_PARAM_NAME_MAX];
#define ADD(idx, nm, nd, ...)                                                    \
    do {                                                                         \
        int64_t shp[] = {__VA_ARGS__};                                           \
        if (((idx) = br_params_add(p, (nm), (nd), shp, err)) < 0) return -1;     \
    } while (0)
    for (int b = 0; b < bb->cfg.n_layers; b++) {
        ni_block_idx *bi = &m->blk[b];
        snprintf(name, sizeof name, "residual_blocks.%d.conv1.weight", b);
        ADD(bi->c1_w, name, 4, D, D, 1, NI_K);
        snprintf(name, sizeof name, "residual_blocks.%d.conv1.bias", b);
        ADD(bi->c1_b, name, 1, D);
        snprintf(name, sizeof name, "residual_blocks.%d.ln1.weight", b);
        ADD(bi->ln1_w, name, 1, D);
        snprintf(name, sizeof name, "residual_blocks.%d.ln1.bias", b);
        ADD(bi->ln1_b, name, 1, D);
        snprintf(name, sizeof name, "residual_blocks.%d.conv2.weight", b);
        ADD(bi->c2_w, name, 4, D, D, 1, NI_K);
        snprintf(name, sizeof name, "residual_blocks.%d.conv2.bias", b);
        ADD(bi->c2_b, name, 1, D);
        snprintf(name, sizeof name, "residual_blocks.%d.ln2.weight", b);
        ADD(bi->ln2_w, name, 1, D);
        snprintf(name, sizeof name, "residual_blocks.%d.ln2.bias", b);
        ADD(bi->ln2_b, name, 1, D);
    }
    ADD(m->fin_w, "final_layer.weight", 2, D, D);
    ADD(m->fin_b, "final_layer.bias", 1, D);
#undef ADD
    return 0;
}

static void init_uniform(br_params *p, int i, float bound, br_rng *rng) {
    float *w = br_pdata(p, i);
    for (size_t k = 0; k < p->list[i].numel; k++) w[k] = bound * (float)(2.0 * br_rng_uniform(rng) - 1.0);
}

/* RecBole's init: its _init_weights touches only Embedding and Linear, so
 * the convolutions keep PyTorch's Conv2d default, U(+-1/sqrt(fan_in)) for
 * weight and bias (fan_in = D * K); LayerNorm 1 / 0; final_layer
 * xavier-normal (std sqrt(2 / (D + D))) with bias 0.1. */
static void ni_init(br_backbone *bb, br_params *p, br_rng *rng) {
    nextitnet *m = (nextitnet *)bb;
    const int D = bb->cfg.dim;
    const float bound = 1.0f / sqrtf((float)(D * NI_K));
    for (int b = 0; b < bb->cfg.n_layers; b++) {
        const ni_block_idx *bi = &m->blk[b];
        init_uniform(p, bi->c1_w, bound, rng);
        init_uniform(p, bi->c1_b, bound, rng);
        br_param_init_const(p, bi->ln1_w, 1.0f);
        br_param_init_const(p, bi->ln1_b, 0.0f);
        init_uniform(p, bi->c2_w, bound, rng);
        init_uniform(p, bi->c2_b, bound, rng);
        br_param_init_const(p, bi->ln2_w, 1.0f);
        br_param_init_const(p, bi->ln2_b, 0.0f);
    }
    br_param_init_normal(p, m->fin_w, sqrtf(1.0f / (float)D), rng);
    br_param_init_const(p, m->fin_b, 0.1f);
}

static int ni_reserve(br_backbone *bb, int32_t max_tok, int32_t max_seq, br_error *err) {
    nextitnet *m = (nextitnet *)bb;
    if (max_tok <= m->max_tok) return 0;
    const int64_t T = max_tok, D = bb->cfg.dim, NB = bb->cfg.n_layers;
    const int64_t per_block = T * (4 * D + 4);
    const int64_t total = (NB + 1) * T * D + NB * per_block + 2 * T * D * NI_K + 3 * T * D;
    free(m->buf);
    free(m->seq_of);
    m->buf = br_xmalloc((size_t)total * sizeof(float), err);
    m->seq_of = br_xmalloc((size_t)T * sizeof(int32_t), err);
    if (!m->buf || !m->seq_of) {
        m->max_tok = 0;
        return -1;
    }
    float *b = m->buf;
#define TAKE(ptr, n) do { (ptr) = b; b += (n); } while (0)
    for (int l = 0; l <= NB; l++) TAKE(m->x[l], T * D);
    for (int l = 0; l < NB; l++) {
        ni_block_acts *a = &m->acts[l];
        TAKE(a->c1, T * D);
        TAKE(a->ln1_mean, T);
        TAKE(a->ln1_rstd, T);
        TAKE(a->a1, T * D);
        TAKE(a->c2, T * D);
        TAKE(a->ln2_mean, T);
        TAKE(a->ln2_rstd, T);
        TAKE(a->a2, T * D);
    }
    TAKE(m->col, T * D * NI_K);
    TAKE(m->dcol, T * D * NI_K);
    TAKE(m->g_x, T * D);
    TAKE(m->g_t, T * D);
    TAKE(m->g_c, T * D);
#undef TAKE
    m->max_tok = max_tok;
    return 0;
}

/* col[t, j*D + i] = x[t - (K-1-j)*dil, i], zero where that token is not in
 * t's sequence: tap K-1 is the token itself, tap 0 the furthest back, as
 * PyTorch's convolution over a left-padded input. */
static void im2col(float *col, const float *x, const int32_t *seq_of, const int32_t *seq_off,
                   int T, int D, int dil) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const int first = seq_off[seq_of[t]];
        for (int j = 0; j < NI_K; j++) {
            const int src = t - (NI_K - 1 - j) * dil;
            float *dst = col + ((size_t)t * NI_K + j) * D;
            if (src < first) memset(dst, 0, (size_t)D * sizeof(float));
            else memcpy(dst, x + (size_t)src * D, (size_t)D * sizeof(float));
        }
    }
}

/* Adjoint of im2col: dx[u, i] (+)= sum_j dcol[u + (K-1-j)*dil, j*D + i] over
 * the taps that stay in u's sequence. A gather per output row instead of a
 * scatter: parallel without races, and summed in a fixed order. */
static void col2im(float *dx, const float *dcol, const int32_t *seq_of, const int32_t *seq_off,
                   int T, int D, int dil, int accumulate) {
#pragma omp parallel for schedule(static)
    for (int u = 0; u < T; u++) {
        const int end = seq_off[seq_of[u] + 1];
        float *row = dx + (size_t)u * D;
        if (!accumulate) memset(row, 0, (size_t)D * sizeof(float));
        for (int j = 0; j < NI_K; j++) {
            const int t = u + (NI_K - 1 - j) * dil;
            if (t >= end) continue;
            const float *dc = dcol + ((size_t)t * NI_K + j) * D;
            for (int i = 0; i < D; i++) row[i] += dc[i];
        }
    }
}

/* w_tap[o, j*D + i] = w[o, i*K + j]: a Conv2d weight in im2col's order. */
static void to_tap_major(float *w_tap, const float *w, int D) {
    for (int o = 0; o < D; o++)
        for (int i = 0; i < D; i++)
            for (int j = 0; j < NI_K; j++)
                w_tap[((size_t)o * NI_K + j) * D + i] = w[((size_t)o * D + i) * NI_K + j];
}

/* dw[o, i*K + j] += dw_tap[o, j*D + i]. */
static void add_from_tap_major(float *dw, const float *dw_tap, int D) {
    for (int o = 0; o < D; o++)
        for (int i = 0; i < D; i++)
            for (int j = 0; j < NI_K; j++)
                dw[((size_t)o * D + i) * NI_K + j] += dw_tap[((size_t)o * NI_K + j) * D + i];
}

static void relu_inplace(float *x, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx = dy * (a > 0): a is the saved relu output, positive exactly where the
 * relu's input was. dx may be dy. */
static void relu_backward(float *dx, const float *dy, const float *a, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) dx[i] = a[i] > 0.0f ? dy[i] : 0.0f;
}

static inline uint64_t emb_dropout_key(uint64_t key) { return br_key(key, 0, 0); }

static void ni_forward(br_backbone *bb, const br_params *p, const br_tokens *tok,
                       const float *x_in, float *out, int training, uint64_t key) {
    nextitnet *m = (nextitnet *)bb;
    const int T = tok->n_tok, D = bb->cfg.dim, NB = bb->cfg.n_layers, DK = D * NI_K;
    const long TD = (long)T * D;
    m->training = training;
    m->key = key;
    for (int s = 0; s < tok->n_seq; s++)
        for (int t = tok->seq_off[s]; t < tok->seq_off[s + 1]; t++) m->seq_of[t] = s;

    memcpy(m->x[0], x_in, (size_t)TD * sizeof(float));
    br_dropout(m->x[0], TD, training ? bb->cfg.hidden_dropout : 0.0f, emb_dropout_key(key));
    const size_t WK = (size_t)D * DK;
    for (int b = 0; b < NB; b++) {
        to_tap_major(m->w_tap + 2 * b * WK, br_pdata(p, m->blk[b].c1_w), D);
        to_tap_major(m->w_tap + (2 * b + 1) * WK, br_pdata(p, m->blk[b].c2_w), D);
    }
    for (int b = 0; b < NB; b++) {
        const ni_block_idx *bi = &m->blk[b];
        ni_block_acts *a = &m->acts[b];
        const int dil = ni_dilation[b % 2];
        im2col(m->col, m->x[b], m->seq_of, tok->seq_off, T, D, dil);
        br_linear_forward(a->c1, m->col, m->w_tap + 2 * b * WK, br_pdata(p, bi->c1_b), T, DK, D);
        br_layernorm_forward(a->a1, a->ln1_mean, a->ln1_rstd, a->c1, br_pdata(p, bi->ln1_w),
                             br_pdata(p, bi->ln1_b), T, D, NI_LN_EPS);
        relu_inplace(a->a1, TD);
        im2col(m->col, a->a1, m->seq_of, tok->seq_off, T, D, 2 * dil);
        br_linear_forward(a->c2, m->col, m->w_tap + (2 * b + 1) * WK, br_pdata(p, bi->c2_b), T, DK, D);
        br_layernorm_forward(a->a2, a->ln2_mean, a->ln2_rstd, a->c2, br_pdata(p, bi->ln2_w),
                             br_pdata(p, bi->ln2_b), T, D, NI_LN_EPS);
        float *xn = m->x[b + 1], *a2 = a->a2;
        const float *xo = m->x[b];
#pragma omp parallel for schedule(static)
        for (long i = 0; i < TD; i++) {
            a2[i] = a2[i] > 0.0f ? a2[i] : 0.0f;
            xn[i] = xo[i] + a2[i];
        }
    }
    br_linear_forward(out, m->x[NB], br_pdata(p, m->fin_w), br_pdata(p, m->fin_b), T, D, D);
}

static void ni_backward(br_backbone *bb, br_params *p, const br_tokens *tok, const float *dout,
                        float *dx_in) {
    nextitnet *m = (nextitnet *)bb;
    const int T = tok->n_tok, D = bb->cfg.dim, NB = bb->cfg.n_layers, DK = D * NI_K;
    const long TD = (long)T * D;

    const size_t WK = (size_t)D * DK;
    /* g_x: gradient w.r.t. the residual stream x[b + 1] on entry to block b.
     * The convolutions' weights in tap order are the forward's (w_tap). */
    br_linear_backward(m->g_x, br_pgrad(p, m->fin_w), br_pgrad(p, m->fin_b), dout, m->x[NB],
                       br_pdata(p, m->fin_w), T, D, D, 0);
    for (int b = NB - 1; b >= 0; b--) {
        const ni_block_idx *bi = &m->blk[b];
        const ni_block_acts *a = &m->acts[b];
        const int dil = ni_dilation[b % 2];
        /* Branch: x[b + 1] = x[b] + a2; the identity path leaves g_x as it is. */
        relu_backward(m->g_t, m->g_x, a->a2, TD);
        br_layernorm_backward(m->g_c, br_pgrad(p, bi->ln2_w), br_pgrad(p, bi->ln2_b), m->g_t, a->c2,
                              a->ln2_mean, a->ln2_rstd, br_pdata(p, bi->ln2_w), T, D, 0);
        /* The im2col of conv2's input is rebuilt rather than stored per block. */
        im2col(m->col, a->a1, m->seq_of, tok->seq_off, T, D, 2 * dil);
        memset(m->dw_tap, 0, WK * sizeof(float));
        br_linear_backward(m->dcol, m->dw_tap, br_pgrad(p, bi->c2_b), m->g_c, m->col,
                           m->w_tap + (2 * b + 1) * WK, T, DK, D, 0);
        add_from_tap_major(br_pgrad(p, bi->c2_w), m->dw_tap, D);
        col2im(m->g_t, m->dcol, m->seq_of, tok->seq_off, T, D, 2 * dil, 0);
        relu_backward(m->g_t, m->g_t, a->a1, TD);
        br_layernorm_backward(m->g_c, br_pgrad(p, bi->ln1_w), br_pgrad(p, bi->ln1_b), m->g_t, a->c1,
                              a->ln1_mean, a->ln1_rstd, br_pdata(p, bi->ln1_w), T, D, 0);
        im2col(m->col, m->x[b], m->seq_of, tok->seq_off, T, D, dil);
        memset(m->dw_tap, 0, WK * sizeof(float));
        br_linear_backward(m->dcol, m->dw_tap, br_pgrad(p, bi->c1_b), m->g_c, m->col,
                           m->w_tap + 2 * b * WK, T, DK, D, 0);
        add_from_tap_major(br_pgrad(p, bi->c1_w), m->dw_tap, D);
        col2im(m->g_x, m->dcol, m->seq_of, tok->seq_off, T, D, dil, 1);
    }
    /* Through g_x rather than dx_in directly, so dx_in may alias dout. */
    memcpy(dx_in, m->g_x, (size_t)TD * sizeof(float));
    br_dropout(dx_in, TD, m->training ? bb->cfg.hidden_dropout : 0.0f, emb_dropout_key(m->key));
}

static void ni_destroy(br_backbone *bb) {
    nextitnet *m = (nextitnet *)bb;
    if (!m) return;
    free(m->blk);
    free(m->acts);
    free(m->x);
    free(m->buf);
    free(m->seq_of);
    free(m->w_tap);
    free(m->dw_tap);
    free(m);
}

/* RecBole draws the item table from U(-sqrt(1/n), sqrt(1/n)); a normal of
 * the same standard deviation, sqrt(1/(3n)), stands in for it. */
static float ni_item_init_std(const br_backbone *bb) {
    return (float)sqrt(1.0 / (3.0 * ((double)bb->cfg.n_items + 1.0)));
}

static const br_backbone_vtable nextitnet_vtable = {
    .name = "nextitnet",
    .register_params = ni_register,
    .init_params = ni_init,
    .item_init_std = ni_item_init_std,
    .reserve = ni_reserve,
    .forward = ni_forward,
    .backward = ni_backward,
    .destroy = ni_destroy,
};

br_backbone *br_nextitnet_create(const br_model_config *cfg, br_error *err) {
    if (cfg->dim <= 0 || cfg->n_layers < 0) {
        br_errorf(err, "nextitnet: need hidden size > 0 and residual blocks >= 0");
        return NULL;
    }
    nextitnet *m = br_xcalloc(1, sizeof *m, err);
    if (!m) return NULL;
    m->base.vt = &nextitnet_vtable;
    m->base.cfg = *cfg;
    m->blk = br_xcalloc((size_t)cfg->n_layers + 1, sizeof *m->blk, err);
    m->acts = br_xcalloc((size_t)cfg->n_layers + 1, sizeof *m->acts, err);
    m->x = br_xcalloc((size_t)cfg->n_layers + 1, sizeof *m->x, err);
    const size_t WK = (size_t)cfg->dim * cfg->dim * NI_K;
    const size_t n_convs = cfg->n_layers > 0 ? 2 * (size_t)cfg->n_layers : 1; /* no zero-size allocation */
    m->w_tap = br_xmalloc(n_convs * WK * sizeof(float), err);
    m->dw_tap = br_xmalloc(WK * sizeof(float), err);
    if (!m->blk || !m->acts || !m->x || !m->w_tap || !m->dw_tap) {
        ni_destroy(&m->base);
        return NULL;
    }
    return &m->base;
}
