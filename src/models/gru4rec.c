/* GRU4Rec (Hidasi et al. 2016) as the BASRec reference uses it (RecBole
 * style, PROTOCOL.md "GRU4Rec backbone"):
 *   x = Dropout(item embedding)                               [T, D]
 *   h_t = GRU(x_t, h_{t-1}), one layer, no biases, hidden H = 2D
 *   out_t = dense(h_t) = W_d h_t + b_d                        [T, D]
 * with torch.nn.GRU's gates and layout (rows r | z | n of weight_ih_l0
 * [3H, D] and weight_hh_l0 [3H, H]):
 *   r = sigmoid(W_ir x + W_hr h), z = sigmoid(W_iz x + W_hz h),
 *   n = tanh(W_in x + r * (W_hn h)), h' = (1 - z) * n + z * h.
 * Always one GRU layer (the reference's), whatever cfg->n_layers says.
 *
 * Start state. By default each sequence's recurrence starts from h = 0 at
 * its first real item: its outputs depend on nothing but its items. The
 * reference instead runs the GRU over the left padding first; its padding
 * row is xavier-normal like the rest of the table and never trained
 * (padding_idx), so h at the first real item is a learned function of the
 * amount of padding, i.e. of the sequence's length. cfg.run_padding does
 * the same at the cost of one chain per batch: the padding input is the
 * same at every slot, so s_0 = 0, s_{k+1} = GRU(e_0, s_k) (k < max_len) is
 * shared by all sequences, and a sequence whose first token sits at slot p
 * starts from s_p. The chain's inputs take no dropout (the reference drops
 * out its padding inputs like the items'; at inference the two agree
 * exactly), and e_0 gets no gradient, as with padding_idx.
 *
 * Computation: the input projections of all tokens are one GEMM. The
 * recurrence is batched by step over sequences, as PyTorch's packed
 * sequences: sequences sorted by length (longest first) make the ones still
 * active at step k a prefix of that order, so their previous hidden states
 * are contiguous rows of a step-major ("packed") buffer and each step's
 * hidden projection is one GEMM over all active sequences. Backward is BPTT
 * in the same layout; weight gradients are one GEMM each after the loop, so
 * they are deterministic for a fixed thread count. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/backbone.h"
#include "nn/fastmath.h"
#include "nn/ops.h"

/* Per-step scratch vectors live on the stack. */
#define BR_GRU_MAX_HIDDEN 2048

typedef struct gru4rec {
    br_backbone base;
    int w_ih, w_hh, dense_w, dense_b;
    int32_t H;
    /* workspace; "token order" rows follow the batch, "packed" rows are
     * step-major: step k's n_k rows start at step_off[k], row i belongs to
     * sequence order[i]. */
    int32_t max_tok, max_seq;
    float *buf;
    float *xd;        /* [T, D] token order: input after dropout */
    float *gates;     /* [T, 3H] token order: input projections, then r | z | n */
    float *ghn;       /* [T, H] token order: W_hn h_{t-1}, needed for dr */
    float *h;         /* [T, H] token order: GRU outputs */
    float *hprev;     /* [T, H] packed: h_{t-1}, zero at each first item */
    float *gh;        /* [S, 3H] one step's hidden projections */
    float *dh;        /* [T, H] token order: gradient reaching h from dense */
    float *dgi;       /* [T, 3H] token order: gradient of the input projections */
    float *dgh;       /* [T, 3H] packed: gradient of the hidden projections */
    float *carry;     /* [S, H] gradient flowing to the previous step's h */
    int32_t *ibuf;
    int32_t *order;   /* [S] sequences by decreasing length (stable) */
    int32_t *step_n;  /* [T + 1] n_k: sequences longer than k */
    int32_t *step_off;/* [T + 1] first packed row of step k */
    int32_t *cursor;  /* [T + 2] counting-sort scratch */
    /* state of the last forward */
    int32_t n_steps;
    int training;
    uint64_t key;
    /* run_padding: the padding chain over max_len slots, and the row of
     * the item table it reads */
    int item_table;
    float *chain;     /* [L, 3H] r | z | n of the chain step into s_{k+1} */
    float *chain_hn;  /* [L, H] W_hn s_k */
    float *chain_s;   /* [L + 1, H] s_0 = 0, s_1, ..., s_L */
    float *chain_ds;  /* [L + 1, H] dL/ds_k */
    float *chain_gi;  /* [3H] W_ih e_0 */
    float *chain_dg;  /* [L, 3H] gradient of the chain's hidden projections */
} gru4rec;

static int gru4rec_register(br_backbone *bb, br_params *p, br_error *err) {
    gru4rec *m = (gru4rec *)bb;
    const int64_t D = bb->cfg.dim, H = m->H;
#define ADD(idx, nm, nd, ...)                                                    \
    do {                                                                         \
        int64_t shp[] = {__VA_ARGS__};                                           \
        if (((idx) = br_params_add(p, (nm), (nd), shp, err)) < 0) return -1;     \
    } while (0)
    ADD(m->w_ih, "gru_layers.weight_ih_l0", 2, 3 * H, D);
    ADD(m->w_hh, "gru_layers.weight_hh_l0", 2, 3 * H, H);
    ADD(m->dense_w, "dense.weight", 2, D, H);
    ADD(m->dense_b, "dense.bias", 1, D);
#undef ADD
    if (bb->cfg.run_padding) {
        m->item_table = br_params_find(p, "item_embeddings.weight");
        if (m->item_table < 0) return br_errorf(err, "gru4rec: run_padding needs the item table");
        const int64_t L = bb->cfg.max_len;
        m->chain = br_xmalloc((size_t)(L * 3 * H + L * H + 2 * (L + 1) * H + 3 * H + L * 3 * H) *
                                  sizeof(float), err);
        if (!m->chain) return -1;
        m->chain_hn = m->chain + L * 3 * H;
        m->chain_s = m->chain_hn + L * H;
        m->chain_ds = m->chain_s + (L + 1) * H;
        m->chain_gi = m->chain_ds + (L + 1) * H;
        m->chain_dg = m->chain_gi + 3 * H;
    }
    return 0;
}

static void init_uniform(br_params *p, int i, double bound, br_rng *rng) {
    float *w = br_pdata(p, i);
    for (size_t k = 0; k < p->list[i].numel; k++) w[k] = (float)(bound * (2.0 * br_rng_uniform(rng) - 1.0));
}

/* Reference init: xavier-uniform GRU weights (torch fans: fan_in = columns,
 * fan_out = rows of the whole [3H, *] matrix). The reference leaves the
 * dense layer at torch.nn.Linear's default, kept here: weight and bias
 * U(-1/sqrt(H), 1/sqrt(H)). */
static void gru4rec_init(br_backbone *bb, br_params *p, br_rng *rng) {
    gru4rec *m = (gru4rec *)bb;
    const double D = bb->cfg.dim, H = m->H;
    init_uniform(p, m->w_ih, sqrt(6.0 / (D + 3.0 * H)), rng);
    init_uniform(p, m->w_hh, sqrt(6.0 / (H + 3.0 * H)), rng);
    init_uniform(p, m->dense_w, 1.0 / sqrt(H), rng);
    init_uniform(p, m->dense_b, 1.0 / sqrt(H), rng);
}

/* The reference initialises the item table xavier-normal: torch's fans of
 * an [n_items + 1, D] embedding are fan_in = D, fan_out = n_items + 1. */
static float gru4rec_item_init_std(const br_backbone *bb) {
    return (float)sqrt(2.0 / ((double)bb->cfg.n_items + 1.0 + bb->cfg.dim));
}

static void workspace_free(gru4rec *m) {
    free(m->buf);
    free(m->ibuf);
    m->buf = NULL;
    m->ibuf = NULL;
    m->max_tok = m->max_seq = 0;
}

static int gru4rec_reserve(br_backbone *bb, int32_t max_tok, int32_t max_seq, br_error *err) {
    gru4rec *m = (gru4rec *)bb;
    if (max_tok <= m->max_tok && max_seq <= m->max_seq) return 0;
    workspace_free(m);
    const int64_t T = max_tok, S = max_seq, D = bb->cfg.dim, H = m->H;
    const int64_t floats = T * (D + 3 * H + H + H + H + H + 3 * H + 3 * H) + S * (3 * H + H);
    const int64_t ints = S + (T + 1) + (T + 1) + (T + 2);
    m->buf = br_xmalloc((size_t)floats * sizeof(float), err);
    m->ibuf = br_xmalloc((size_t)ints * sizeof(int32_t), err);
    if (!m->buf || !m->ibuf) {
        workspace_free(m);
        return -1;
    }
    float *b = m->buf;
#define TAKE(ptr, n) do { (ptr) = b; b += (n); } while (0)
    TAKE(m->xd, T * D);
    TAKE(m->gates, T * 3 * H);
    TAKE(m->ghn, T * H);
    TAKE(m->h, T * H);
    TAKE(m->hprev, T * H);
    TAKE(m->dh, T * H);
    TAKE(m->dgi, T * 3 * H);
    TAKE(m->dgh, T * 3 * H);
    TAKE(m->gh, S * 3 * H);
    TAKE(m->carry, S * H);
#undef TAKE
    int32_t *ib = m->ibuf;
    m->order = ib;
    m->step_n = ib + S;
    m->step_off = m->step_n + T + 1;
    m->cursor = m->step_off + T + 1;
    m->max_tok = max_tok;
    m->max_seq = max_seq;
    return 0;
}

/* Fills order, step_n, step_off for the batch; returns the number of steps
 * (the longest sequence's length). Counting sort: O(S + T), stable. */
static int32_t pack_schedule(gru4rec *m, const br_tokens *tok) {
    const int32_t S = tok->n_seq;
    int32_t L = 0;
    for (int32_t s = 0; s < S; s++) {
        const int32_t n = tok->seq_off[s + 1] - tok->seq_off[s];
        if (n > L) L = n;
    }
    int32_t *cnt = m->cursor;
    memset(cnt, 0, (size_t)(L + 2) * sizeof(int32_t));
    for (int32_t s = 0; s < S; s++) cnt[tok->seq_off[s + 1] - tok->seq_off[s]]++;
    /* step_n[k] = #{s : len_s > k}, a suffix sum of the length histogram. */
    int32_t above = 0;
    for (int32_t k = L; k >= 0; k--) {
        m->step_n[k] = above;
        above += cnt[k];
    }
    /* Sequences of length l go to order[step_n[l] ...]: longest first. */
    for (int32_t l = 0; l <= L; l++) cnt[l] = m->step_n[l];
    for (int32_t s = 0; s < S; s++) m->order[cnt[tok->seq_off[s + 1] - tok->seq_off[s]]++] = s;
    m->step_off[0] = 0;
    for (int32_t k = 0; k < L; k++) m->step_off[k + 1] = m->step_off[k] + m->step_n[k];
    return L;
}

/* Slot of packed row i's sequence's first token: the chain state it starts
 * from. Sequences longer than max_len never reach here (truncated). */
static inline int32_t first_slot(const gru4rec *m, const br_tokens *tok, int32_t i) {
    return tok->pos[tok->seq_off[m->order[i]]];
}

static inline float gate_sigmoid(float x) { return 1.0f / (1.0f + br_fast_expf(-x)); }
/* tanh(x) = 1 - 2 / (1 + e^{2x}): absolute error ~1e-7 near 0, which is
 * what the recurrence h' = (1 - z) n + z h sees. */
static inline float gate_tanh(float x) { return 1.0f - 2.0f / (1.0f + br_fast_expf(2.0f * x)); }

/* One GRU step from input projections gi and hidden projections gh [3H]
 * and the previous state hp: rzn gets r | z | n (it may be gi: each entry
 * is read before it is written), hn = W_hn hp, h the new state. */
static inline void gru_cell(const float *gi, const float *gh, const float *hp, float *rzn,
                            float *hn, float *h, int H) {
#pragma omp simd
    for (int j = 0; j < H; j++) {
        const float r = gate_sigmoid(gi[j] + gh[j]);
        const float z = gate_sigmoid(gi[H + j] + gh[H + j]);
        const float n = gate_tanh(gi[2 * H + j] + r * gh[2 * H + j]);
        rzn[j] = r;
        rzn[H + j] = z;
        rzn[2 * H + j] = n;
        hn[j] = gh[2 * H + j];
        h[j] = (1.0f - z) * n + z * hp[j];
    }
}

/* Its backward for dL/dh = dh: the gradients of the input projections
 * (dgi, [3H]) and of the hidden projections (dgh), and the part of dL/dhp
 * that bypasses W_hh (carry = dh z; the caller adds dgh W_hh). */
static inline void gru_cell_backward(const float *rzn, const float *hn, const float *hp,
                                     const float *dh, float *dgi, float *dgh, float *carry, int H) {
#pragma omp simd
    for (int j = 0; j < H; j++) {
        const float r = rzn[j], z = rzn[H + j], n = rzn[2 * H + j], d = dh[j];
        const float dn = d * (1.0f - z) * (1.0f - n * n);
        const float dz = d * (hp[j] - n) * z * (1.0f - z);
        const float dr = dn * hn[j] * r * (1.0f - r);
        dgi[j] = dgh[j] = dr;
        dgi[H + j] = dgh[H + j] = dz;
        dgi[2 * H + j] = dn;
        dgh[2 * H + j] = dn * r;
        carry[j] = d * z;
    }
}

/* The padding chain s_{k+1} = GRU(e_0, s_k), k < max_len (run_padding). */
static void chain_forward(gru4rec *m, const br_params *p) {
    const int D = m->base.cfg.dim, H = m->H, H3 = 3 * H, L = m->base.cfg.max_len;
    const float *W_hh = br_pdata(p, m->w_hh);
    float gh[3 * BR_GRU_MAX_HIDDEN];
    br_linear_forward(m->chain_gi, br_pdata(p, m->item_table), br_pdata(p, m->w_ih), NULL, 1, D, H3);
    memset(m->chain_s, 0, (size_t)H * sizeof(float));
    for (int k = 0; k < L; k++) {
        const float *sk = m->chain_s + (size_t)k * H;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, H3, H, 1.0f, W_hh, H, sk, 1, 0.0f, gh, 1);
        gru_cell(m->chain_gi, gh, sk, m->chain + (size_t)k * H3, m->chain_hn + (size_t)k * H,
                 m->chain_s + (size_t)(k + 1) * H, H);
    }
}

/* Back through the chain from chain_ds (the start states' gradients):
 * dW_hh += sum_k dgh_k s_k^T, dW_ih += (sum_k dgi_k) e_0^T. */
static void chain_backward(gru4rec *m, br_params *p) {
    const int D = m->base.cfg.dim, H = m->H, H3 = 3 * H, L = m->base.cfg.max_len;
    const float *W_hh = br_pdata(p, m->w_hh);
    float dgi[3 * BR_GRU_MAX_HIDDEN], dgi_sum[3 * BR_GRU_MAX_HIDDEN] = {0}, carry[BR_GRU_MAX_HIDDEN];
    for (int k = L - 1; k >= 0; k--) {
        float *dg = m->chain_dg + (size_t)k * H3, *ds_prev = m->chain_ds + (size_t)k * H;
        gru_cell_backward(m->chain + (size_t)k * H3, m->chain_hn + (size_t)k * H,
                          m->chain_s + (size_t)k * H, m->chain_ds + (size_t)(k + 1) * H, dgi, dg,
                          carry, H);
        for (int j = 0; j < H3; j++) dgi_sum[j] += dgi[j];
        for (int j = 0; j < H; j++) ds_prev[j] += carry[j];
        cblas_sgemv(CblasRowMajor, CblasTrans, H3, H, 1.0f, W_hh, H, dg, 1, 1.0f, ds_prev, 1);
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H3, H, L, 1.0f, m->chain_dg, H3, m->chain_s,
                H, 1.0f, br_pgrad(p, m->w_hh), H);
    cblas_sger(CblasRowMajor, H3, D, 1.0f, dgi_sum, 1, br_pdata(p, m->item_table), 1,
               br_pgrad(p, m->w_ih), D);
}

/* The state each sequence starts from: packed rows of step 0. */
static void set_start_states(gru4rec *m, const br_tokens *tok) {
    const int H = m->H;
    const int32_t n0 = m->step_n[0];
    if (!m->base.cfg.run_padding) {
        memset(m->hprev, 0, (size_t)n0 * H * sizeof(float));
        return;
    }
    for (int32_t i = 0; i < n0; i++)
        memcpy(m->hprev + (size_t)i * H, m->chain_s + (size_t)first_slot(m, tok, i) * H,
               (size_t)H * sizeof(float));
}

static void gru4rec_forward(br_backbone *bb, const br_params *p, const br_tokens *tok,
                            const float *x_in, float *out, int training, uint64_t key) {
    gru4rec *m = (gru4rec *)bb;
    const int T = tok->n_tok, D = bb->cfg.dim, H = m->H, H3 = 3 * H;
    const int32_t *seq_off = tok->seq_off;
    m->training = training;
    m->key = key;
    m->n_steps = pack_schedule(m, tok);
    if (T == 0) return;

    memcpy(m->xd, x_in, (size_t)T * D * sizeof(float));
    br_dropout(m->xd, (long)T * D, training ? bb->cfg.hidden_dropout : 0.0f, br_key(key, 0, 0));
    br_linear_forward(m->gates, m->xd, br_pdata(p, m->w_ih), NULL, T, D, H3);

    const float *W_hh = br_pdata(p, m->w_hh);
    if (bb->cfg.run_padding) chain_forward(m, p);
    set_start_states(m, tok);
    for (int32_t k = 0; k < m->n_steps; k++) {
        const int32_t n_k = m->step_n[k], n_next = m->step_n[k + 1];
        const float *hp = m->hprev + (size_t)m->step_off[k] * H;
        float *hp_next = m->hprev + (size_t)m->step_off[k + 1] * H;
        if (k == 0 && !bb->cfg.run_padding) memset(m->gh, 0, (size_t)n_k * H3 * sizeof(float));
        else br_linear_forward(m->gh, hp, W_hh, NULL, n_k, H, H3);
#pragma omp parallel for schedule(static)
        for (int32_t i = 0; i < n_k; i++) {
            const size_t t = (size_t)seq_off[m->order[i]] + (size_t)k;
            float *g = m->gates + t * H3, *ht = m->h + t * H;
            gru_cell(g, m->gh + (size_t)i * H3, hp + (size_t)i * H, g, m->ghn + t * H, ht, H);
            /* Sorted by length: the sequences still active next step are
             * the first n_next rows. */
            if (i < n_next) memcpy(hp_next + (size_t)i * H, ht, (size_t)H * sizeof(float));
        }
    }
    br_linear_forward(out, m->h, br_pdata(p, m->dense_w), br_pdata(p, m->dense_b), T, H, D);
}

static void gru4rec_backward(br_backbone *bb, br_params *p, const br_tokens *tok,
                             const float *dout, float *dx_in) {
    gru4rec *m = (gru4rec *)bb;
    const int T = tok->n_tok, D = bb->cfg.dim, H = m->H, H3 = 3 * H;
    const int32_t *seq_off = tok->seq_off;
    if (T == 0) return;

    br_linear_backward(m->dh, br_pgrad(p, m->dense_w), br_pgrad(p, m->dense_b), dout, m->h,
                       br_pdata(p, m->dense_w), T, H, D, 0);
    const float *W_hh = br_pdata(p, m->w_hh);
    for (int32_t k = m->n_steps - 1; k >= 0; k--) {
        const int32_t n_k = m->step_n[k], n_next = m->step_n[k + 1];
        const float *hp = m->hprev + (size_t)m->step_off[k] * H;
        float *dgh_k = m->dgh + (size_t)m->step_off[k] * H3;
#pragma omp parallel for schedule(static)
        for (int32_t i = 0; i < n_k; i++) {
            const size_t t = (size_t)seq_off[m->order[i]] + (size_t)k;
            float *c = m->carry + (size_t)i * H, dh[BR_GRU_MAX_HIDDEN];
            /* carry holds dL/dh from step k+1, for sequences active there. */
            for (int j = 0; j < H; j++) dh[j] = m->dh[t * H + j] + (i < n_next ? c[j] : 0.0f);
            gru_cell_backward(m->gates + t * H3, m->ghn + t * H, hp + (size_t)i * H, dh,
                              m->dgi + t * H3, dgh_k + (size_t)i * H3, c, H);
        }
        /* carry += dgh W_hh: the gradient reaching h_{k-1}, at k = 0 the
         * start state's (used with run_padding only). */
        if (k > 0 || bb->cfg.run_padding)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n_k, H, H3, 1.0f, dgh_k, H3,
                        W_hh, H, 1.0f, m->carry, H);
    }
    /* dW_hh += dgh^T hprev over all packed rows (hprev holds the start states). */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H3, H, T, 1.0f, m->dgh, H3, m->hprev, H,
                1.0f, br_pgrad(p, m->w_hh), H);
    if (bb->cfg.run_padding) {
        /* Start states' gradients onto the chain, in packed order (fixed). */
        memset(m->chain_ds, 0, (size_t)(bb->cfg.max_len + 1) * H * sizeof(float));
        for (int32_t i = 0; i < m->step_n[0]; i++) {
            float *ds = m->chain_ds + (size_t)first_slot(m, tok, i) * H;
            for (int j = 0; j < H; j++) ds[j] += m->carry[(size_t)i * H + j];
        }
        chain_backward(m, p);
    }
    br_linear_backward(dx_in, br_pgrad(p, m->w_ih), NULL, m->dgi, m->xd, br_pdata(p, m->w_ih), T,
                       D, H3, 0);
    br_dropout(dx_in, (long)T * D, m->training ? bb->cfg.hidden_dropout : 0.0f, br_key(m->key, 0, 0));
}

static void gru4rec_destroy(br_backbone *bb) {
    gru4rec *m = (gru4rec *)bb;
    if (!m) return;
    workspace_free(m);
    free(m->chain);
    free(m);
}

static const br_backbone_vtable gru4rec_vtable = {
    .name = "gru4rec",
    .register_params = gru4rec_register,
    .init_params = gru4rec_init,
    .item_init_std = gru4rec_item_init_std,
    .reserve = gru4rec_reserve,
    .forward = gru4rec_forward,
    .backward = gru4rec_backward,
    .destroy = gru4rec_destroy,
};

br_backbone *br_gru4rec_create(const br_model_config *cfg, br_error *err) {
    if (cfg->dim <= 0 || 2 * cfg->dim > BR_GRU_MAX_HIDDEN) {
        br_errorf(err, "gru4rec: hidden size %d must be in 1..%d", cfg->dim, BR_GRU_MAX_HIDDEN / 2);
        return NULL;
    }
    gru4rec *m = br_xcalloc(1, sizeof *m, err);
    if (!m) return NULL;
    m->base.vt = &gru4rec_vtable;
    m->base.cfg = *cfg;
    m->H = 2 * cfg->dim; /* the reference: embedding 64, GRU hidden 128 */
    return &m->base;
}
