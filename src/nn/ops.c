#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "nn/fastmath.h"
#include "nn/gemm.h"
#include "nn/ops.h"
#include "util/rng.h"

/* Column sums (bias and LayerNorm parameter gradients) are split between
 * threads in whole strips of 16 columns (one cache line); a thread walks
 * its columns in blocks whose partial sums stay in registers, over tiles
 * of rows that stay in cache while every block reads them. Each column is
 * summed over t in order, so results do not depend on the thread count. */
#define COL_STRIP 16
#define ROW_TILE 256

/* Columns [lo, hi) of this thread's share of N columns. */
static void thread_columns(int N, int *lo, int *hi) {
    const long n_strips = (N + COL_STRIP - 1) / COL_STRIP;
    const int nt = omp_get_num_threads(), id = omp_get_thread_num();
    *lo = (int)(n_strips * id / nt) * COL_STRIP;
    *hi = (int)(n_strips * (id + 1) / nt) * COL_STRIP;
    if (*hi > N) *hi = N;
}

/* acc[j] += sum over rows t0 .. t1-1 of g[t, c0 + j], j < w, each term
 * times xhat = (x[t, c0 + j] - mean[t]) * rstd[t] when x is given (the
 * LayerNorm gain's gradient). Called with a literal w for full blocks:
 * the fixed trip count keeps the partial sums in vector registers. */
static inline void colsum_block(float *acc, const float *g, const float *x, const float *mean,
                                const float *rstd, int t0, int t1, int N, int c0, int w) {
    float a[64];
    for (int j = 0; j < w; j++) a[j] = acc[j];
    for (int t = t0; t < t1; t++) {
        const float *gr = g + (size_t)t * N + c0;
        if (x) {
            const float *xr = x + (size_t)t * N + c0, m = mean[t], r = rstd[t];
            for (int j = 0; j < w; j++) a[j] += gr[j] * (xr[j] - m) * r;
        } else {
            for (int j = 0; j < w; j++) a[j] += gr[j];
        }
    }
    for (int j = 0; j < w; j++) acc[j] = a[j];
}

/* out[n] += sum_t g[t, n] (x NULL), or sum_t g[t, n] * xhat[t, n] as in
 * colsum_block. */
static void column_sums(float *out, const float *g, const float *x, const float *mean,
                        const float *rstd, int T, int N) {
    enum { BLOCK = 64 };
#pragma omp parallel
    {
        int lo, hi;
        thread_columns(N, &lo, &hi);
        for (int b0 = lo; b0 < hi; b0 += 4 * BLOCK) { /* at most 4 blocks' sums at a time */
            const int b1 = hi - b0 < 4 * BLOCK ? hi : b0 + 4 * BLOCK;
            float acc[4 * BLOCK] = {0};
            for (int t0 = 0; t0 < T; t0 += ROW_TILE) {
                const int t1 = T - t0 < ROW_TILE ? T : t0 + ROW_TILE;
                for (int c0 = b0; c0 < b1; c0 += BLOCK) {
                    float *a = acc + (c0 - b0);
                    if (b1 - c0 >= BLOCK) colsum_block(a, g, x, mean, rstd, t0, t1, N, c0, BLOCK);
                    else colsum_block(a, g, x, mean, rstd, t0, t1, N, c0, b1 - c0);
                }
            }
            for (int c = b0; c < b1; c++) out[c] += acc[c - b0];
        }
    }
}

void br_linear_forward(float *y, const float *x, const float *W, const float *b,
                       int T, int K, int N) {
    br_gemm_xwt(y, x, W, b, T, K, N);
}

void br_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x,
                        const float *W, int T, int K, int N, int accumulate_dx) {
    if (T == 0) return;
    if (dx) br_gemm_nn(dx, dy, W, T, N, K, accumulate_dx);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, T, 1.0f, dy, N, x, K, 1.0f, dW, K);
    if (db) column_sums(db, dy, NULL, NULL, NULL, T, N);
}

void br_layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                          const float *gamma, const float *beta, int T, int D, float eps) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D;
        float *yr = y + (size_t)t * D;
        /* simd reductions: vectorised sums in a fixed lane order */
        float m = 0.0f;
#pragma omp simd reduction(+ : m)
        for (int d = 0; d < D; d++) m += xr[d];
        m /= (float)D;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int d = 0; d < D; d++) {
            float c = xr[d] - m;
            v += c * c;
        }
        v /= (float)D;
        float r = 1.0f / sqrtf(v + eps);
        for (int d = 0; d < D; d++) yr[d] = (xr[d] - m) * r * gamma[d] + beta[d];
        mean[t] = m;
        rstd[t] = r;
    }
}

void br_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                           const float *x, const float *mean, const float *rstd,
                           const float *gamma, int T, int D, int accumulate_dx) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D, *dyr = dy + (size_t)t * D;
        float *dxr = dx + (size_t)t * D;
        const float m = mean[t], r = rstd[t];
        /* dx = r * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma */
        float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
        for (int d = 0; d < D; d++) {
            float g = dyr[d] * gamma[d];
            sum_g += g;
            sum_gx += g * (xr[d] - m) * r;
        }
        sum_g /= (float)D;
        sum_gx /= (float)D;
        for (int d = 0; d < D; d++) {
            float xhat = (xr[d] - m) * r;
            float v = r * (dyr[d] * gamma[d] - sum_g - xhat * sum_gx);
            dxr[d] = accumulate_dx ? dxr[d] + v : v;
        }
    }
    column_sums(dgamma, dy, x, mean, rstd, T, D);
    column_sums(dbeta, dy, NULL, NULL, NULL, T, D);
}

/* Phi(v) = erfc(-v / sqrt 2) / 2 through erfcx of a = |v| / sqrt 2, which
 * keeps it accurate in relative terms in both tails; the density
 * phi(v) = e^(-a^2) / sqrt(2 pi) shares the exponential. */
void br_gelu_forward(float *y, float *x, long n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        const float v = x[i], a = br_f32_from_bits(br_f32_bits(v) & 0x7fffffffu) * (float)M_SQRT1_2;
        const float e = br_fast_expf(-a * a);
        const float half_erfc = 0.5f * br_fast_erfcxf(a) * e; /* Phi(-|v|) */
        const float cdf = v >= 0.0f ? 1.0f - half_erfc : half_erfc;
        y[i] = v * cdf;
        x[i] = cdf + v * (inv_sqrt_2pi * e);
    }
}

void br_gelu_backward(float *dx, const float *dy, const float *dgelu, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) dx[i] = dy[i] * dgelu[i];
}

void br_dropout(float *x, long n, float p, uint64_t key) {
    if (p <= 0.0f) return;
    const float scale = 1.0f / (1.0f - p);
    /* One hash per 4 elements, as br_hash_uniform16 slices it. */
    const uint32_t threshold = (uint32_t)ceilf(p * 65536.0f); /* u < p*65536 */
    const long full = n / 4; /* whole groups: a fixed inner trip count vectorises */
#pragma omp parallel for schedule(static)
    for (long g = 0; g < full; g++) {
        const uint64_t h = br_hash_u64(key, (uint64_t)g);
        for (int j = 0; j < 4; j++)
            x[4 * g + j] = ((h >> (16 * j)) & 0xFFFF) < threshold ? 0.0f : x[4 * g + j] * scale;
    }
    const uint64_t h = br_hash_u64(key, (uint64_t)full);
    for (long i = 4 * full; i < n; i++)
        x[i] = ((h >> (16 * (i - 4 * full))) & 0xFFFF) < threshold ? 0.0f : x[i] * scale;
}

void br_attention_offsets(int64_t *att_off, const int32_t *seq_off, int n_seq, int H) {
    att_off[0] = 0;
    for (int s = 0; s < n_seq; s++) {
        int64_t n = seq_off[s + 1] - seq_off[s];
        att_off[s + 1] = att_off[s] + (int64_t)H * n * n;
    }
}

/* Dropout keep-scale for attention probability (row i, col j) of a head
 * block starting at flat index base in probs. */
static inline float att_keep(uint64_t key, int64_t idx, float p, float scale) {
    if (p <= 0.0f) return 1.0f;
    return br_hash_uniform16(key, (uint64_t)idx) < p ? 0.0f : scale;
}

/* A head's dot product; the simd reduction lets it vectorise (in a fixed
 * lane order, so it stays deterministic). */
static inline float head_dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < n; c++) s += a[c] * b[c];
    return s;
}

/* Keys of query row i of a sequence of n rows whose first lead rows are
 * padding: a real row attends to the real rows up to itself; a padding row,
 * whose every key the reference's mask removes, to all n rows (the additive
 * mask shifts all its scores equally, so its softmax is over the raw
 * scores of the whole row). */
static inline void att_keys(int i, int n, int lead, int *lo, int *hi) {
    if (i < lead) {
        *lo = 0;
        *hi = n;
    } else {
        *lo = lead;
        *hi = i + 1;
    }
}

static void attention_forward_causal(float *ctx, float *probs, const float *qkv, const int32_t *seq_off,
                                     const int64_t *att_off, int n_seq, int D, int H, float p,
                                     uint64_t key) {
    const int dh = D / H, D3 = 3 * D;
    const float inv_sqrt = 1.0f / sqrtf((float)dh);
    const float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
#pragma omp parallel for schedule(dynamic, 4)
    for (int sh = 0; sh < n_seq * H; sh++) {
        const int s = sh / H, h = sh % H;
        const int o = seq_off[s], n = seq_off[s + 1] - o;
        float *P = probs + att_off[s] + (int64_t)h * n * n;
        for (int i = 0; i < n; i++) {
            const float *q = qkv + (size_t)(o + i) * D3 + h * dh;
            float *Pi = P + (int64_t)i * n;
            float mx = -INFINITY;
            for (int j = 0; j <= i; j++) {
                const float *k = qkv + (size_t)(o + j) * D3 + D + h * dh;
                const float sc = head_dot(q, k, dh) * inv_sqrt;
                Pi[j] = sc;
                if (sc > mx) mx = sc;
            }
            float z = 0.0f;
            for (int j = 0; j <= i; j++) {
                Pi[j] = expf(Pi[j] - mx);
                z += Pi[j];
            }
            for (int j = 0; j <= i; j++) Pi[j] /= z;
            for (int j = i + 1; j < n; j++) Pi[j] = 0.0f;
            float *c_out = ctx + (size_t)(o + i) * D + h * dh;
            for (int c = 0; c < dh; c++) c_out[c] = 0.0f;
            for (int j = 0; j <= i; j++) {
                float w = Pi[j] * att_keep(key, att_off[s] + (int64_t)h * n * n + (int64_t)i * n + j, p, scale);
                if (w == 0.0f) continue;
                const float *v = qkv + (size_t)(o + j) * D3 + 2 * D + h * dh;
                for (int c = 0; c < dh; c++) c_out[c] += w * v[c];
            }
        }
    }
}

static void attention_forward_padded(float *ctx, float *probs, const float *qkv, const int32_t *seq_off,
                                     const int32_t *n_pad, const int64_t *att_off, int n_seq, int D,
                                     int H, float p, uint64_t key) {
    const int dh = D / H, D3 = 3 * D;
    const float inv_sqrt = 1.0f / sqrtf((float)dh);
    const float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
#pragma omp parallel for schedule(dynamic, 4)
    for (int sh = 0; sh < n_seq * H; sh++) {
        const int s = sh / H, h = sh % H;
        const int o = seq_off[s], n = seq_off[s + 1] - o, lead = n_pad ? n_pad[s] : 0;
        float *P = probs + att_off[s] + (int64_t)h * n * n;
        for (int i = 0; i < n; i++) {
            const float *q = qkv + (size_t)(o + i) * D3 + h * dh;
            float *Pi = P + (int64_t)i * n;
            int lo, hi;
            att_keys(i, n, lead, &lo, &hi);
            /* Keys lo .. hi-1, indexed from 0: the same loops as the
             * plain causal case (lo = 0), so its rounding is unchanged. */
            float *Pr = Pi + lo;
            const int m = hi - lo, o2 = o + lo;
            float mx = -INFINITY;
            for (int j = 0; j < m; j++) {
                const float *k = qkv + (size_t)(o2 + j) * D3 + D + h * dh;
                const float sc = head_dot(q, k, dh) * inv_sqrt;
                Pr[j] = sc;
                if (sc > mx) mx = sc;
            }
            float z = 0.0f;
            for (int j = 0; j < m; j++) {
                Pr[j] = expf(Pr[j] - mx);
                z += Pr[j];
            }
            for (int j = 0; j < m; j++) Pr[j] /= z;
            for (int j = 0; j < lo; j++) Pi[j] = 0.0f;
            for (int j = hi; j < n; j++) Pi[j] = 0.0f;
            float *c_out = ctx + (size_t)(o + i) * D + h * dh;
            for (int c = 0; c < dh; c++) c_out[c] = 0.0f;
            for (int j = 0; j < m; j++) {
                float w = Pr[j] * att_keep(key, att_off[s] + (int64_t)h * n * n + (int64_t)i * n + lo + j, p, scale);
                if (w == 0.0f) continue;
                const float *v = qkv + (size_t)(o2 + j) * D3 + 2 * D + h * dh;
                for (int c = 0; c < dh; c++) c_out[c] += w * v[c];
            }
        }
    }
}

/* The plain causal case and the padded one are separate loops on purpose:
 * the same arithmetic with variable key bounds compiles to a different
 * rounding, and the plain loops' results are the ones every earlier run
 * reproduces bit for bit. */
void br_attention_forward(float *ctx, float *probs, const float *qkv, const int32_t *seq_off,
                          const int32_t *n_pad, const int64_t *att_off, int n_seq, int D, int H,
                          float p, uint64_t key) {
    if (n_pad) attention_forward_padded(ctx, probs, qkv, seq_off, n_pad, att_off, n_seq, D, H, p, key);
    else attention_forward_causal(ctx, probs, qkv, seq_off, att_off, n_seq, D, H, p, key);
}

void br_attention_last(float *ctx, const float *qkv, const int32_t *seq_off, int n_seq, int D,
                       int H) {
    const int dh = D / H, D3 = 3 * D;
    const float inv_sqrt = 1.0f / sqrtf((float)dh);
#pragma omp parallel for schedule(dynamic, 8)
    for (int sh = 0; sh < n_seq * H; sh++) {
        const int s = sh / H, h = sh % H;
        const int o = seq_off[s], n = seq_off[s + 1] - o;
        const float *q = qkv + (size_t)(o + n - 1) * D3 + h * dh;
        /* Two passes over the keys (max, then weights) instead of a score
         * buffer: no bound on the sequence length. */
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            const float *k = qkv + (size_t)(o + j) * D3 + D + h * dh;
            const float v = head_dot(q, k, dh);
            if (v * inv_sqrt > mx) mx = v * inv_sqrt;
        }
        float *c_out = ctx + (size_t)s * D + h * dh;
        for (int c = 0; c < dh; c++) c_out[c] = 0.0f;
        float z = 0.0f;
        for (int j = 0; j < n; j++) {
            const float *k = qkv + (size_t)(o + j) * D3 + D + h * dh;
            const float *v = qkv + (size_t)(o + j) * D3 + 2 * D + h * dh;
            const float w = expf(head_dot(q, k, dh) * inv_sqrt - mx);
            z += w;
            for (int c = 0; c < dh; c++) c_out[c] += w * v[c];
        }
        for (int c = 0; c < dh; c++) c_out[c] /= z;
    }
}

/* Zeroes head h's q, k and v gradient columns of rows o .. o+n-1. */
static inline void zero_head_grads(float *dqkv, int o, int n, int D, int h, int dh) {
    for (int i = 0; i < n; i++) {
        float *row = dqkv + (size_t)(o + i) * 3 * D + h * dh;
        for (int c = 0; c < dh; c++) row[c] = row[D + c] = row[2 * D + c] = 0.0f;
    }
}

static void attention_backward_causal(float *dqkv, const float *dctx, const float *probs,
                                      const float *qkv, const int32_t *seq_off, const int64_t *att_off,
                                      int n_seq, int D, int H, float p, uint64_t key, float *scratch,
                                      int scratch_threads) {
    const int dh = D / H, D3 = 3 * D;
    const float inv_sqrt = 1.0f / sqrtf((float)dh);
    const float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int max_n = 0;
    for (int s = 0; s < n_seq; s++)
        if (seq_off[s + 1] - seq_off[s] > max_n) max_n = seq_off[s + 1] - seq_off[s];
    /* Never more threads than the scratch has rows for. */
    const int nt = omp_get_max_threads() < scratch_threads ? omp_get_max_threads() : scratch_threads;
#pragma omp parallel num_threads(nt)
    {
        /* One row of dP per thread, from the caller's scratch. */
        float *dP = scratch + (size_t)omp_get_thread_num() * (size_t)max_n;
#pragma omp for schedule(dynamic, 4)
        for (int sh = 0; sh < n_seq * H; sh++) {
            const int s = sh / H, h = sh % H;
            const int o = seq_off[s], n = seq_off[s + 1] - o;
            const int64_t base = att_off[s] + (int64_t)h * n * n;
            const float *P = probs + base;
            zero_head_grads(dqkv, o, n, D, h, dh);
            for (int i = 0; i < n; i++) {
                const float *Pi = P + (int64_t)i * n;
                const float *dc = dctx + (size_t)(o + i) * D + h * dh;
                const float *q = qkv + (size_t)(o + i) * D3 + h * dh;
                float *dq = dqkv + (size_t)(o + i) * D3 + h * dh;
                float dot = 0.0f;
                for (int j = 0; j <= i; j++) {
                    const float keep = att_keep(key, base + (int64_t)i * n + j, p, scale);
                    const float *v = qkv + (size_t)(o + j) * D3 + 2 * D + h * dh;
                    float *dv = dqkv + (size_t)(o + j) * D3 + 2 * D + h * dh;
                    float g = 0.0f;
                    if (keep != 0.0f) {
                        const float w = Pi[j] * keep;
                        g = head_dot(dc, v, dh);
                        for (int c = 0; c < dh; c++) dv[c] += w * dc[c];
                    }
                    dP[j] = g * keep;
                    dot += Pi[j] * dP[j];
                }
                for (int j = 0; j <= i; j++) {
                    const float ds = Pi[j] * (dP[j] - dot) * inv_sqrt;
                    if (ds == 0.0f) continue;
                    const float *k = qkv + (size_t)(o + j) * D3 + D + h * dh;
                    float *dk = dqkv + (size_t)(o + j) * D3 + D + h * dh;
                    for (int c = 0; c < dh; c++) {
                        dq[c] += ds * k[c];
                        dk[c] += ds * q[c];
                    }
                }
            }
        }
    }
}

static void attention_backward_padded(float *dqkv, const float *dctx, const float *probs,
                                      const float *qkv, const int32_t *seq_off, const int32_t *n_pad,
                                      const int64_t *att_off, int n_seq, int D, int H, float p,
                                      uint64_t key, float *scratch, int scratch_threads) {
    const int dh = D / H, D3 = 3 * D;
    const float inv_sqrt = 1.0f / sqrtf((float)dh);
    const float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int max_n = 0;
    for (int s = 0; s < n_seq; s++)
        if (seq_off[s + 1] - seq_off[s] > max_n) max_n = seq_off[s + 1] - seq_off[s];
    /* Never more threads than the scratch has rows for. */
    const int nt = omp_get_max_threads() < scratch_threads ? omp_get_max_threads() : scratch_threads;
#pragma omp parallel num_threads(nt)
    {
        /* One row of dP per thread, from the caller's scratch. */
        float *dP = scratch + (size_t)omp_get_thread_num() * (size_t)max_n;
#pragma omp for schedule(dynamic, 4)
        for (int sh = 0; sh < n_seq * H; sh++) {
            const int s = sh / H, h = sh % H;
            const int o = seq_off[s], n = seq_off[s + 1] - o, lead = n_pad ? n_pad[s] : 0;
            const int64_t base = att_off[s] + (int64_t)h * n * n;
            const float *P = probs + base;
            zero_head_grads(dqkv, o, n, D, h, dh);
            for (int i = 0; i < n; i++) {
                const float *Pi = P + (int64_t)i * n;
                const float *dc = dctx + (size_t)(o + i) * D + h * dh;
                const float *q = qkv + (size_t)(o + i) * D3 + h * dh;
                float *dq = dqkv + (size_t)(o + i) * D3 + h * dh;
                int lo, hi;
                att_keys(i, n, lead, &lo, &hi);
                float dot = 0.0f;
                for (int j = lo; j < hi; j++) {
                    const float keep = att_keep(key, base + (int64_t)i * n + j, p, scale);
                    const float *v = qkv + (size_t)(o + j) * D3 + 2 * D + h * dh;
                    float *dv = dqkv + (size_t)(o + j) * D3 + 2 * D + h * dh;
                    float g = 0.0f;
                    if (keep != 0.0f) {
                        const float w = Pi[j] * keep;
                        g = head_dot(dc, v, dh);
                        for (int c = 0; c < dh; c++) dv[c] += w * dc[c];
                    }
                    dP[j] = g * keep;
                    dot += Pi[j] * dP[j];
                }
                for (int j = lo; j < hi; j++) {
                    const float ds = Pi[j] * (dP[j] - dot) * inv_sqrt;
                    if (ds == 0.0f) continue;
                    const float *k = qkv + (size_t)(o + j) * D3 + D + h * dh;
                    float *dk = dqkv + (size_t)(o + j) * D3 + D + h * dh;
                    for (int c = 0; c < dh; c++) {
                        dq[c] += ds * k[c];
                        dk[c] += ds * q[c];
                    }
                }
            }
        }
    }
}

void br_attention_backward(float *dqkv, const float *dctx, const float *probs, const float *qkv,
                           const int32_t *seq_off, const int32_t *n_pad, const int64_t *att_off,
                           int n_seq, int D, int H, float p, uint64_t key, float *scratch,
                           int scratch_threads) {
    if (n_pad)
        attention_backward_padded(dqkv, dctx, probs, qkv, seq_off, n_pad, att_off, n_seq, D, H, p, key,
                                  scratch, scratch_threads);
    else
        attention_backward_causal(dqkv, dctx, probs, qkv, seq_off, att_off, n_seq, D, H, p, key,
                                  scratch, scratch_threads);
}
