/* FMLP-Rec (Zhou et al., WWW 2022), the layout of the authors' code:
 *   x = Dropout(LN(item + pos))
 *   per layer: x = LN(x + Dropout(irfft(W * rfft(x))))      (filter layer)
 *              x = LN(x + Dropout(W2 gelu(W1 x)))           (as SASRec)
 * where rfft/irfft run along the sequence at length max_len with 'ortho'
 * scaling and W is a learnable complex weight per (frequency, feature).
 *
 * Unlike attention, the FFT mixes all max_len slots, padding included, so
 * real positions' outputs depend on the padded slots. Each sequence of the
 * ragged batch is therefore expanded to its max_len slots internally, in a
 * slot-major layout [max_len][n_seq][D]: the transform along the sequence
 * is then one GEMM of a [F, max_len] DFT matrix with a [max_len, n_seq*D]
 * one. Only the real tokens' outputs are returned, and the last layer runs
 * its LayerNorm and FFN on the real tokens only (nothing reads the other
 * slots after it).
 *
 * Padding choice: a padded slot l carries LN(0 + P[l]), i.e. the padding
 * item's embedding is the zero vector. This is nn.Embedding(padding_idx=0)'s
 * intended semantics (a constant zero row without gradient); the authors'
 * code overwrites that row with N(0, init_std) noise in its init and then
 * never trains it, a quirk not reproduced here. The backbone never sees the
 * item table, so zero is also the only choice that keeps it self-contained.
 *
 * Init: normal(0, init_std) for linear and embedding weights, zero biases,
 * LN 1/0, complex weights randn * 0.02 as the authors' code. (Their
 * copy.deepcopy of one layer gives all layers the same initial filter; each
 * layer draws its own here.) */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/backbone.h"
#include "nn/ffn.h"
#include "nn/ops.h"

#define LN_EPS 1e-12f
#define FILTER_INIT_STD 0.02f

typedef struct fmlp_layer_idx {
    int filter, ln1_w, ln1_b;
    br_ffn_index ffn;
} fmlp_layer_idx;

/* Activations of one layer kept for the backward pass. Padded buffers have
 * L * n_seq rows (slot-major); from res1 on, the last layer has T rows. */
typedef struct fmlp_layer_acts {
    float *x_in;     /* [L*S, D] layer input, padded */
    float *spec;     /* [2F, S*D] rfft of x_in: F real rows, then F imaginary rows */
    float *res1;     /* x_in + dropout(filter(x_in)), LN1 input */
    float *ln1_mean, *ln1_rstd;
    float *x_mid;    /* LN1 output */
    br_ffn_acts ffn;
} fmlp_layer_acts;

typedef struct fmlprec {
    br_backbone base;
    int pos_emb, ln_w, ln_b;
    fmlp_layer_idx *layer;
    int32_t n_freq;        /* F = max_len / 2 + 1 */
    float *dft;            /* [2F, L]: rows cos/sqrt(L), then -sin/sqrt(L) (rfft) */
    float *idft;           /* [L, 2F]: the matching irfft, Hermitian weights c_k */
    /* workspace */
    int32_t max_tok, max_seq;
    float *buf;            /* one allocation for all activations */
    float *emb_sum, *ln0_mean, *ln0_rstd;
    float *y_pad;          /* [L*S, D] filter output of the last layer (or x0 when no layers) */
    float *zspec;          /* [2F, S*D] filtered spectrum; its gradient in backward */
    fmlp_layer_acts *acts;
    float *g_a, *g_b, *g_ffn; /* backward scratch */
    int32_t *row_of_tok;   /* [T] padded row (slot * n_seq + seq) of each token */
    int32_t *tok_of_row;   /* [L*S] token of each padded row, -1 for padding */
    /* state of the last forward */
    int training;
    uint64_t key;
} fmlprec;

static int fmlp_register(br_backbone *bb, br_params *p, br_error *err) {
    fmlprec *m = (fmlprec *)bb;
    const int64_t D = bb->cfg.dim, L = bb->cfg.max_len, F = m->n_freq;
    char name[BR_PARAM_NAME_MAX];
#define ADD(idx, nm, nd, ...)                                                    \
    do {                                                                         \
        int64_t shp[] = {__VA_ARGS__};                                           \
        if (((idx) = br_params_add(p, (nm), (nd), shp, err)) < 0) return -1;     \
    } while (0)
#define ADD_L(idx, suffix, nd, ...)                                              \
    do {                                                                         \
        snprintf(name, sizeof name, "item_encoder.layer.%d." suffix, l);         \
        ADD(idx, name, nd, __VA_ARGS__);                                         \
    } while (0)
    ADD(m->pos_emb, "position_embeddings.weight", 2, L, D);
    ADD(m->ln_w, "LayerNorm.weight", 1, D);
    ADD(m->ln_b, "LayerNorm.bias", 1, D);
    for (int l = 0; l < bb->cfg.n_layers; l++) {
        fmlp_layer_idx *li = &m->layer[l];
        /* [1, F, D, 2]: torch.view_as_complex's (real, imaginary) pairs. */
        ADD_L(li->filter, "filterlayer.complex_weight", 4, 1, F, D, 2);
        ADD_L(li->ln1_w, "filterlayer.LayerNorm.weight", 1, D);
        ADD_L(li->ln1_b, "filterlayer.LayerNorm.bias", 1, D);
        ADD_L(li->ffn.w1, "intermediate.dense_1.weight", 2, 4 * D, D);
        ADD_L(li->ffn.b1, "intermediate.dense_1.bias", 1, 4 * D);
        ADD_L(li->ffn.w2, "intermediate.dense_2.weight", 2, D, 4 * D);
        ADD_L(li->ffn.b2, "intermediate.dense_2.bias", 1, D);
        ADD_L(li->ffn.ln_w, "intermediate.LayerNorm.weight", 1, D);
        ADD_L(li->ffn.ln_b, "intermediate.LayerNorm.bias", 1, D);
    }
#undef ADD_L
#undef ADD
    return 0;
}

static void fmlp_init(br_backbone *bb, br_params *p, br_rng *rng) {
    fmlprec *m = (fmlprec *)bb;
    for (int i = m->pos_emb; i < p->n; i++) {
        const br_param *pi = &p->list[i];
        if (pi->ndim == 4) br_param_init_normal(p, i, FILTER_INIT_STD, rng);
        else if (pi->ndim == 2) br_param_init_normal(p, i, bb->cfg.init_std, rng);
        else if (strstr(pi->name, "LayerNorm.weight")) br_param_init_const(p, i, 1.0f);
        else br_param_init_const(p, i, 0.0f);
    }
}

static int fmlp_reserve(br_backbone *bb, int32_t max_tok, int32_t max_seq, br_error *err) {
    fmlprec *m = (fmlprec *)bb;
    if (max_tok <= m->max_tok && max_seq <= m->max_seq) return 0;
    const int NL = bb->cfg.n_layers;
    const int64_t T = max_tok, D = bb->cfg.dim, N = (int64_t)bb->cfg.max_len * max_seq;
    const int64_t spec = 2 * (int64_t)m->n_freq * max_seq * D;
    /* Rows of the FFN part: padded for all layers but the last. */
    const int64_t R = N > T ? N : T;
    const int64_t ffn_rows = NL > 0 ? (int64_t)(NL - 1) * N + T : 0;
    const int64_t total = N * (D + 2) + N * D + spec + NL * (N * D + spec) +
                          ffn_rows * (D + 2 + D + 4 * D + 4 * D + D + 2);
    free(m->buf);
    free(m->g_a);
    free(m->g_b);
    free(m->g_ffn);
    free(m->row_of_tok);
    free(m->tok_of_row);
    m->buf = br_xmalloc((size_t)total * sizeof(float), err);
    m->g_a = br_xmalloc((size_t)(R * D) * sizeof(float), err);
    m->g_b = br_xmalloc((size_t)(R * D) * sizeof(float), err);
    m->g_ffn = br_xmalloc((size_t)(R * 4 * D) * sizeof(float), err);
    m->row_of_tok = br_xmalloc((size_t)(T > 0 ? T : 1) * sizeof(int32_t), err);
    m->tok_of_row = br_xmalloc((size_t)(N > 0 ? N : 1) * sizeof(int32_t), err);
    if (!m->buf || !m->g_a || !m->g_b || !m->g_ffn || !m->row_of_tok || !m->tok_of_row) {
        m->max_tok = m->max_seq = 0;
        return -1;
    }
    float *b = m->buf;
#define TAKE(ptr, n) do { (ptr) = b; b += (n); } while (0)
    TAKE(m->emb_sum, N * D);
    TAKE(m->ln0_mean, N);
    TAKE(m->ln0_rstd, N);
    TAKE(m->y_pad, N * D);
    TAKE(m->zspec, spec);
    for (int l = 0; l < NL; l++) {
        fmlp_layer_acts *a = &m->acts[l];
        const int64_t r = l + 1 < NL ? N : T;
        TAKE(a->x_in, N * D);
        TAKE(a->spec, spec);
        TAKE(a->res1, r * D);
        TAKE(a->ln1_mean, r);
        TAKE(a->ln1_rstd, r);
        TAKE(a->x_mid, r * D);
        TAKE(a->ffn.pre, r * 4 * D);
        TAKE(a->ffn.act, r * 4 * D);
        TAKE(a->ffn.res, r * D);
        TAKE(a->ffn.ln_mean, r);
        TAKE(a->ffn.ln_rstd, r);
    }
#undef TAKE
    m->max_tok = max_tok;
    m->max_seq = max_seq;
    return 0;
}

/* Dropout sites get distinct keys derived from the step key. */
static inline uint64_t site_key(uint64_t key, int layer, int site) {
    return br_key(key, (uint64_t)layer + 1, (uint64_t)site);
}
enum { SITE_EMB, SITE_FILTER_OUT, SITE_FFN_OUT };

/* y = irfft(w * rfft(x)) along the L slots of x [L, S*D]; spec keeps rfft(x). */
static void filter_forward(const fmlprec *m, float *y, float *spec, const float *x, const float *w,
                           int S) {
    const int L = m->base.cfg.max_len, D = m->base.cfg.dim, F = m->n_freq, SD = S * D;
    float *z = m->zspec;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2 * F, SD, L, 1.0f, m->dft, L, x, SD,
                0.0f, spec, SD);
#pragma omp parallel for collapse(2) schedule(static)
    for (int k = 0; k < F; k++)
        for (int s = 0; s < S; s++) {
            const size_t o = (size_t)k * SD + (size_t)s * D, oi = o + (size_t)F * SD;
            const float *wk = w + (size_t)k * D * 2;
            for (int d = 0; d < D; d++) {
                const float xr = spec[o + d], xi = spec[oi + d], wr = wk[2 * d], wi = wk[2 * d + 1];
                z[o + d] = xr * wr - xi * wi;
                z[oi + d] = xr * wi + xi * wr;
            }
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, SD, 2 * F, 1.0f, m->idft, 2 * F, z,
                SD, 0.0f, y, SD);
}

/* Adjoint of filter_forward: dw += d/dw, dx += d/dx (accumulates), from dy.
 * Uses zspec as scratch. */
static void filter_backward(const fmlprec *m, float *dx, float *dw, const float *dy,
                            const float *spec, const float *w, int S) {
    const int L = m->base.cfg.max_len, D = m->base.cfg.dim, F = m->n_freq, SD = S * D;
    float *g = m->zspec;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 2 * F, SD, L, 1.0f, m->idft, 2 * F, dy,
                SD, 0.0f, g, SD);
    /* One frequency per thread: each dw row is summed over sequences in a
     * fixed order (deterministic); g turns in place into the spectrum's gradient. */
#pragma omp parallel for schedule(static)
    for (int k = 0; k < F; k++) {
        const float *wk = w + (size_t)k * D * 2;
        float *dwk = dw + (size_t)k * D * 2;
        for (int s = 0; s < S; s++) {
            const size_t o = (size_t)k * SD + (size_t)s * D, oi = o + (size_t)F * SD;
            for (int d = 0; d < D; d++) {
                const float xr = spec[o + d], xi = spec[oi + d], wr = wk[2 * d], wi = wk[2 * d + 1];
                const float gr = g[o + d], gi = g[oi + d];
                dwk[2 * d] += gr * xr + gi * xi;
                dwk[2 * d + 1] += gi * xr - gr * xi;
                g[o + d] = gr * wr + gi * wi;
                g[oi + d] = gi * wr - gr * wi;
            }
        }
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, SD, 2 * F, 1.0f, m->dft, L, g, SD, 1.0f,
                dx, SD);
}

static void gather_rows(float *dst, const float *src, const int32_t *rows, int n, int D) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++)
        memcpy(dst + (size_t)t * D, src + (size_t)rows[t] * D, (size_t)D * sizeof(float));
}

/* dst = 0 except dst[rows[t]] = src[t]. */
static void scatter_rows(float *dst, long n_dst_rows, const float *src, const int32_t *rows, int n,
                         int D) {
    memset(dst, 0, (size_t)n_dst_rows * D * sizeof(float));
    for (int t = 0; t < n; t++)
        memcpy(dst + (size_t)rows[t] * D, src + (size_t)t * D, (size_t)D * sizeof(float));
}

static void fmlp_forward(br_backbone *bb, const br_params *p, const br_tokens *tok,
                         const float *x_in, float *out, int training, uint64_t key) {
    fmlprec *m = (fmlprec *)bb;
    const br_model_config *c = &bb->cfg;
    const int T = tok->n_tok, D = c->dim, NL = c->n_layers, L = c->max_len, S = tok->n_seq;
    const int N = L * S;
    const float p_hid = training ? c->hidden_dropout : 0.0f;
    m->training = training;
    m->key = key;
    if (T == 0) return; /* also keeps the GEMMs' leading dimensions positive */

    for (int r = 0; r < N; r++) m->tok_of_row[r] = -1;
    for (int s = 0; s < S; s++)
        for (int t = tok->seq_off[s]; t < tok->seq_off[s + 1]; t++) {
            m->row_of_tok[t] = tok->pos[t] * S + s;
            m->tok_of_row[m->row_of_tok[t]] = t;
        }

    /* Embedding block over all slots; padding items are zero vectors. */
    const float *pos = br_pdata(p, m->pos_emb);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *pr = pos + (size_t)(r / S) * D;
        float *e = m->emb_sum + (size_t)r * D;
        const int t = m->tok_of_row[r];
        for (int d = 0; d < D; d++) e[d] = pr[d] + (t >= 0 ? x_in[(size_t)t * D + d] : 0.0f);
    }
    float *x = NL > 0 ? m->acts[0].x_in : m->y_pad;
    br_layernorm_forward(x, m->ln0_mean, m->ln0_rstd, m->emb_sum, br_pdata(p, m->ln_w),
                         br_pdata(p, m->ln_b), N, D, LN_EPS);
    br_dropout(x, (long)N * D, p_hid, site_key(key, -1, SITE_EMB));
    if (NL == 0) gather_rows(out, x, m->row_of_tok, T, D);

    for (int l = 0; l < NL; l++) {
        const fmlp_layer_idx *li = &m->layer[l];
        fmlp_layer_acts *a = &m->acts[l];
        const int last = l + 1 == NL, R = last ? T : N;
        const long RD = (long)R * D;
        float *x_out = last ? out : m->acts[l + 1].x_in;
        if (last) {
            filter_forward(m, m->y_pad, a->spec, a->x_in, br_pdata(p, li->filter), S);
            gather_rows(a->res1, m->y_pad, m->row_of_tok, T, D);
        } else {
            filter_forward(m, a->res1, a->spec, a->x_in, br_pdata(p, li->filter), S);
        }
        br_dropout(a->res1, RD, p_hid, site_key(key, l, SITE_FILTER_OUT));
        if (last) {
#pragma omp parallel for schedule(static)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++)
                    a->res1[(size_t)t * D + d] += a->x_in[(size_t)m->row_of_tok[t] * D + d];
        } else {
            for (long i = 0; i < RD; i++) a->res1[i] += a->x_in[i];
        }
        br_layernorm_forward(a->x_mid, a->ln1_mean, a->ln1_rstd, a->res1, br_pdata(p, li->ln1_w),
                             br_pdata(p, li->ln1_b), R, D, LN_EPS);
        br_ffn_forward(p, &li->ffn, &a->ffn, a->x_mid, x_out, R, D, LN_EPS, p_hid,
                       site_key(key, l, SITE_FFN_OUT));
    }
}

static void fmlp_backward(br_backbone *bb, br_params *p, const br_tokens *tok,
                          const float *dout, float *dx_in) {
    fmlprec *m = (fmlprec *)bb;
    const br_model_config *c = &bb->cfg;
    const int T = tok->n_tok, D = c->dim, NL = c->n_layers, L = c->max_len, S = tok->n_seq;
    const int N = L * S;
    const float p_hid = m->training ? c->hidden_dropout : 0.0f;
    const uint64_t key = m->key;
    if (T == 0) return;

    /* g_a: gradient w.r.t. the current layer's output (T rows for the last
     * layer, padded rows below it). */
    float *g = m->g_a, *g_res = m->g_b;
    if (NL == 0) scatter_rows(g, N, dout, m->row_of_tok, T, D);
    else memcpy(g, dout, (size_t)T * D * sizeof(float));
    for (int l = NL - 1; l >= 0; l--) {
        const fmlp_layer_idx *li = &m->layer[l];
        fmlp_layer_acts *a = &m->acts[l];
        const int last = l + 1 == NL, R = last ? T : N;
        const long RD = (long)R * D;
        /* FFN sub-layer: g becomes the gradient w.r.t. x_mid. */
        br_ffn_backward(p, &li->ffn, &a->ffn, a->x_mid, g, g_res, m->g_ffn, R, D, p_hid,
                        site_key(key, l, SITE_FFN_OUT));
        /* LN1: g -> g_res (gradient of res1 = x_in + dropout(filter(x_in))) */
        br_layernorm_backward(g_res, br_pgrad(p, li->ln1_w), br_pgrad(p, li->ln1_b), g, a->res1,
                              a->ln1_mean, a->ln1_rstd, br_pdata(p, li->ln1_w), R, D, 0);
        /* g := gradient w.r.t. the padded x_in (residual path), g_y that of
         * the filter output; the last layer scatters its token rows back
         * into the padded layout (g_ffn is free as g_y's storage). */
        float *g_y = g_res;
        if (last) {
            scatter_rows(g, N, g_res, m->row_of_tok, T, D);
            br_dropout(g_res, RD, p_hid, site_key(key, l, SITE_FILTER_OUT));
            g_y = m->g_ffn;
            scatter_rows(g_y, N, g_res, m->row_of_tok, T, D);
        } else {
            memcpy(g, g_res, (size_t)RD * sizeof(float));
            br_dropout(g_res, RD, p_hid, site_key(key, l, SITE_FILTER_OUT));
        }
        filter_backward(m, g, br_pgrad(p, li->filter), g_y, a->spec, br_pdata(p, li->filter), S);
    }
    /* Embedding block: dropout, LN0, then position (all slots) and item
     * (real tokens) gradients. */
    br_dropout(g, (long)N * D, p_hid, site_key(key, -1, SITE_EMB));
    br_layernorm_backward(g_res, br_pgrad(p, m->ln_w), br_pgrad(p, m->ln_b), g, m->emb_sum,
                          m->ln0_mean, m->ln0_rstd, br_pdata(p, m->ln_w), N, D, 0);
    gather_rows(dx_in, g_res, m->row_of_tok, T, D);
    float *gpos = br_pgrad(p, m->pos_emb);
#pragma omp parallel for schedule(static)
    for (int l = 0; l < L; l++)
        for (int s = 0; s < S; s++)
            for (int d = 0; d < D; d++) gpos[(size_t)l * D + d] += g_res[((size_t)l * S + s) * D + d];
}

static void fmlp_destroy(br_backbone *bb) {
    fmlprec *m = (fmlprec *)bb;
    if (!m) return;
    free(m->layer);
    free(m->acts);
    free(m->dft);
    free(m->idft);
    free(m->buf);
    free(m->g_a);
    free(m->g_b);
    free(m->g_ffn);
    free(m->row_of_tok);
    free(m->tok_of_row);
    free(m);
}

static const br_backbone_vtable fmlp_vtable = {
    .name = "fmlprec",
    .register_params = fmlp_register,
    .init_params = fmlp_init,
    .reserve = fmlp_reserve,
    .forward = fmlp_forward,
    .backward = fmlp_backward,
    .destroy = fmlp_destroy,
};

/* Real DFT tables at length L, F = L/2 + 1 frequencies, 'ortho' scale:
 *   rfft:  Re X_k = sum_l cos(2 pi k l / L) x_l / sqrt(L), Im X_k = -sum_l sin(..) x_l / sqrt(L)
 *   irfft: y_l = sum_k c_k (Re Z_k cos(..) - Im Z_k sin(..)) / sqrt(L),
 * c_k = 1 for DC and (L even) Nyquist, 2 for the bins that stand for a
 * conjugate pair. sin is exactly 0 at DC and Nyquist, so their imaginary
 * parts drop out as in torch's irfft. */
static void dft_tables(float *dft, float *idft, int L, int F) {
    const double scale = 1.0 / sqrt((double)L);
    for (int k = 0; k < F; k++)
        for (int l = 0; l < L; l++) {
            const int q = (int)(((int64_t)k * l) % L);
            const double th = 2.0 * M_PI * q / L;
            const double cs = q == 0 ? 1.0 : 2 * q == L ? -1.0 : cos(th);
            const double sn = (q == 0 || 2 * q == L) ? 0.0 : sin(th);
            const double ck = (k == 0 || 2 * k == L) ? 1.0 : 2.0;
            dft[(size_t)k * L + l] = (float)(cs * scale);
            dft[(size_t)(F + k) * L + l] = (float)(-sn * scale);
            idft[(size_t)l * 2 * F + k] = (float)(ck * cs * scale);
            idft[(size_t)l * 2 * F + F + k] = (float)(-ck * sn * scale);
        }
}

br_backbone *br_fmlprec_create(const br_model_config *cfg, br_error *err) {
    if (cfg->dim <= 0 || cfg->n_layers < 0 || cfg->max_len <= 0) {
        br_errorf(err, "fmlprec: need hidden size > 0, layers >= 0 and max_len > 0");
        return NULL;
    }
    fmlprec *m = br_xcalloc(1, sizeof *m, err);
    if (!m) return NULL;
    m->base.vt = &fmlp_vtable;
    m->base.cfg = *cfg;
    const int L = cfg->max_len, F = L / 2 + 1;
    m->n_freq = F;
    m->layer = br_xcalloc((size_t)cfg->n_layers + 1, sizeof *m->layer, err);
    m->acts = br_xcalloc((size_t)cfg->n_layers + 1, sizeof *m->acts, err);
    m->dft = br_xmalloc((size_t)2 * F * L * sizeof(float), err);
    m->idft = br_xmalloc((size_t)2 * F * L * sizeof(float), err);
    if (!m->layer || !m->acts || !m->dft || !m->idft) {
        fmlp_destroy(&m->base);
        return NULL;
    }
    dft_tables(m->dft, m->idft, L, F);
    return &m->base;
}
