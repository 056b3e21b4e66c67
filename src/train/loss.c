#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fastmath.h"
#include "train/loss.h"
#include "util/names.h"
#include "util/rng.h"

/* log(1 + exp(x)) without overflow. */
static inline double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static inline float dot(const float *a, const float *b, int D) {
    float s = 0.0f;
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

double br_bce_loss(const float *h, const int32_t *pos, const int32_t *neg, const float *weight,
                   int32_t T, int D, const float *E, float *dE, float *dh, float scale) {
    int64_t count = 0;
    for (int32_t t = 0; t < T; t++) count += pos[t] > 0;
    memset(dh, 0, (size_t)T * D * sizeof(float));
    if (count == 0) return 0.0;
    const float norm = scale / (float)count;
    /* Serial: a few thousand dot products, negligible beside the encoder,
     * and the fixed order keeps the loss and gradients bit-reproducible. */
    double loss = 0.0;
    for (int32_t t = 0; t < T; t++) {
        if (pos[t] <= 0) continue;
        const float *ht = h + (size_t)t * D;
        const float *ep = E + (size_t)pos[t] * D, *en = E + (size_t)neg[t] * D;
        const float lp = dot(ht, ep, D), ln = dot(ht, en, D);
        const float w = weight ? weight[t] : 1.0f;
        loss += w * (softplus(-lp) + softplus(ln));
        const float gp = w * norm * (sigmoidf(lp) - 1.0f), gn = w * norm * sigmoidf(ln);
        float *dht = dh + (size_t)t * D;
        float *dp = dE + (size_t)pos[t] * D, *dn = dE + (size_t)neg[t] * D;
        for (int d = 0; d < D; d++) {
            dht[d] = gp * ep[d] + gn * en[d];
            dp[d] += gp * ht[d];
            dn[d] += gn * ht[d];
        }
    }
    return scale * loss / (double)count;
}

void br_loss_config_defaults(br_loss_config *c) {
    c->kind = BR_LOSS_BCE;
    c->focal_gamma = 2.0f;
    c->ce_negatives = 256;
    c->ce_sampler = BR_SAMPLER_POP;
}

static const char *const loss_names[] = {"bce", "ce", "last-ce", "focal", "sampled-ce"};

const char *br_loss_name(br_loss_kind k) { return loss_names[k]; }

int br_loss_parse(const char *name, br_loss_kind *k) {
    const int i = br_name_index(loss_names, (int)(sizeof loss_names / sizeof loss_names[0]), name);
    if (i < 0) return -1;
    *k = (br_loss_kind)i;
    return 0;
}

static const char *const sampler_names[] = {"uniform", "pop"};

const char *br_sampler_name(br_sampler_kind k) { return sampler_names[k]; }

int br_sampler_parse(const char *name, br_sampler_kind *k) {
    const int i = br_name_index(sampler_names, 2, name);
    if (i < 0) return -1;
    *k = (br_sampler_kind)i;
    return 0;
}

void br_keep_last_targets(int32_t *target, const int32_t *seq_off, int32_t n_seq) {
    for (int32_t s = 0; s < n_seq; s++)
        for (int32_t t = seq_off[s]; t < seq_off[s + 1] - 1; t++) target[t] = 0;
}

/* ---- Full-softmax cross-entropy ---- */

struct br_xent {
    int32_t n_items, chunk, block;
    int D;
    float *hc, *dhc;      /* [chunk, D]: the chunk's rows of h and their gradient */
    float *z;             /* [chunk, block] (sampled: [chunk, K]): logits, then their gradient */
    int32_t *row;         /* [chunk]: token of each chunk row */
    int32_t *ya, *yb;     /* [chunk]: labels (yb 0: none) */
    float *mx, *sum;      /* [chunk]: streaming max and sum of exp(z - max); mx then holds the lse */
    float *za, *zb;       /* [chunk]: the labels' logits */
    float *ga, *gb, *gs;  /* [chunk]: gradient coefficients of the labels and of p */
    /* Sampled workspaces only (K > 0). */
    int32_t K;
    int32_t *samp;        /* [K]: the current draw */
    float *corr;          /* [K]: log(K Q) of the draws */
    float *es, *des;      /* [K, D]: the draws' rows of E and their gradient */
    double *q;            /* [n_items + 1]: Q */
    double *prob;         /* [n_items]: alias table: keep j + 1 with probability prob[j], */
    int32_t *alias;       /* [n_items]: else take alias[j] + 1 */
};

void br_xent_free(br_xent *x) {
    if (!x) return;
    free(x->hc);
    free(x->dhc);
    free(x->z);
    free(x->row);
    free(x->ya);
    free(x->yb);
    free(x->mx);
    free(x->sum);
    free(x->za);
    free(x->zb);
    free(x->ga);
    free(x->gb);
    free(x->gs);
    free(x->samp);
    free(x->corr);
    free(x->es);
    free(x->des);
    free(x->q);
    free(x->prob);
    free(x->alias);
    free(x);
}

/* The per-chunk buffers, with zcols logits per token. */
static br_xent *xent_alloc(int32_t n_items, int D, int32_t chunk, int32_t zcols, br_error *err) {
    br_xent *x = br_xcalloc(1, sizeof *x, err);
    if (!x) return NULL;
    x->n_items = n_items;
    x->D = D;
    x->chunk = chunk;
    const size_t C = (size_t)chunk;
    x->hc = br_xmalloc(C * D * sizeof(float), err);
    x->dhc = br_xmalloc(C * D * sizeof(float), err);
    x->z = br_xmalloc(C * (size_t)zcols * sizeof(float), err);
    x->row = br_xmalloc(C * sizeof(int32_t), err);
    x->ya = br_xmalloc(C * sizeof(int32_t), err);
    x->yb = br_xmalloc(C * sizeof(int32_t), err);
    x->mx = br_xmalloc(C * sizeof(float), err);
    x->sum = br_xmalloc(C * sizeof(float), err);
    x->za = br_xmalloc(C * sizeof(float), err);
    x->zb = br_xmalloc(C * sizeof(float), err);
    x->ga = br_xmalloc(C * sizeof(float), err);
    x->gb = br_xmalloc(C * sizeof(float), err);
    x->gs = br_xmalloc(C * sizeof(float), err);
    if (!x->hc || !x->dhc || !x->z || !x->row || !x->ya || !x->yb || !x->mx || !x->sum || !x->za ||
        !x->zb || !x->ga || !x->gb || !x->gs) {
        br_xent_free(x);
        return NULL;
    }
    return x;
}

br_xent *br_xent_create(int32_t n_items, int D, int32_t chunk, int32_t block, br_error *err) {
    if (n_items < 1 || D < 1 || chunk < 1 || block < 1) {
        br_errorf(err, "cross-entropy: need n_items, dim, chunk and block >= 1");
        return NULL;
    }
    const int32_t nb = block < n_items ? block : n_items;
    br_xent *x = xent_alloc(n_items, D, chunk, nb, err);
    if (x) x->block = nb;
    return x;
}

/* Walker's alias table of q[1..n] by Vose's construction: prob starts as
 * n q, items below 1 are topped up by one above 1. One stack of n ids holds
 * the small ones from the bottom and the large ones from the top. */
static void build_alias(br_xent *x, int32_t *stack) {
    const int32_t n = x->n_items;
    int32_t ns = 0, nl = 0;
    for (int32_t j = 0; j < n; j++) {
        x->prob[j] = (double)n * x->q[j + 1];
        x->alias[j] = j;
        if (x->prob[j] < 1.0) stack[ns++] = j;
        else stack[n - 1 - nl++] = j;
    }
    while (ns > 0 && nl > 0) {
        const int32_t s = stack[--ns], l = stack[n - nl];
        x->alias[s] = l;
        x->prob[l] -= 1.0 - x->prob[s];
        if (x->prob[l] < 1.0) {
            nl--;
            stack[ns++] = l;
        }
    }
    /* What is left has probability 1 up to rounding. */
    for (int32_t i = 0; i < ns; i++) x->prob[stack[i]] = 1.0;
    for (int32_t i = 0; i < nl; i++) x->prob[stack[n - 1 - i]] = 1.0;
}

br_xent *br_xent_create_sampled(int32_t n_items, int D, int32_t chunk, int32_t K,
                                const double *weight, br_error *err) {
    if (n_items < 1 || D < 1 || chunk < 1 || K < 1) {
        br_errorf(err, "sampled cross-entropy: need n_items, dim, chunk and negatives >= 1");
        return NULL;
    }
    double total = 0.0;
    for (int32_t i = 1; weight && i <= n_items; i++) {
        if (!(weight[i] > 0.0 && weight[i] < INFINITY)) {
            br_errorf(err, "sampled cross-entropy: item %d has proposal weight %g (need > 0)", i, weight[i]);
            return NULL;
        }
        total += weight[i];
    }
    br_xent *x = xent_alloc(n_items, D, chunk, K, err);
    if (!x) return NULL;
    x->K = K;
    x->samp = br_xmalloc((size_t)K * sizeof(int32_t), err);
    x->corr = br_xmalloc((size_t)K * sizeof(float), err);
    x->es = br_xmalloc((size_t)K * D * sizeof(float), err);
    x->des = br_xmalloc((size_t)K * D * sizeof(float), err);
    x->q = br_xmalloc(((size_t)n_items + 1) * sizeof(double), err);
    x->prob = br_xmalloc((size_t)n_items * sizeof(double), err);
    x->alias = br_xmalloc((size_t)n_items * sizeof(int32_t), err);
    int32_t *stack = br_xmalloc((size_t)n_items * sizeof(int32_t), err);
    if (!x->samp || !x->corr || !x->es || !x->des || !x->q || !x->prob || !x->alias || !stack) {
        free(stack);
        br_xent_free(x);
        return NULL;
    }
    x->q[0] = 0.0;
    for (int32_t i = 1; i <= n_items; i++) x->q[i] = weight ? weight[i] / total : 1.0 / n_items;
    build_alias(x, stack);
    free(stack);
    br_xent_draw(x, 0);
    return x;
}

br_xent *br_xent_create_for(const br_loss_config *c, int32_t n_items, int D, const br_dataset *ds,
                            br_error *err) {
    if (c->kind != BR_LOSS_SAMPLED_CE) return br_xent_create(n_items, D, BR_XENT_CHUNK, BR_XENT_BLOCK, err);
    if (c->ce_sampler == BR_SAMPLER_UNIFORM)
        return br_xent_create_sampled(n_items, D, BR_XENT_CHUNK, c->ce_negatives, NULL, err);
    double *w = br_xmalloc(((size_t)n_items + 1) * sizeof *w, err);
    if (!w) return NULL;
    for (int32_t i = 0; i <= n_items; i++) w[i] = 1.0;
    /* The training split's targets: items 1..len of each row (data/batch.c). */
    for (int32_t u = 0; u < ds->n_users; u++) {
        const int32_t *s = br_seq(ds, u);
        for (int32_t i = 1; i <= br_split_input_len(ds, u, BR_SPLIT_TRAIN); i++) w[s[i]] += 1.0;
    }
    br_xent *x = br_xent_create_sampled(n_items, D, BR_XENT_CHUNK, c->ce_negatives, w, err);
    free(w);
    return x;
}

void br_xent_draw(br_xent *x, uint64_t key) {
    br_rng r;
    br_rng_seed(&r, key, 0x5CEull);
    const double logk = log((double)x->K);
    for (int32_t k = 0; k < x->K; k++) {
        const int32_t j = (int32_t)br_rng_below(&r, (uint64_t)x->n_items);
        const int32_t i = 1 + (br_rng_uniform(&r) < x->prob[j] ? j : x->alias[j]);
        x->samp[k] = i;
        x->corr[k] = (float)(logk + log(x->q[i]));
    }
}

const int32_t *br_xent_samples(const br_xent *x) { return x->samp; }

double br_xent_proposal(const br_xent *x, int32_t item) { return x->q[item]; }

size_t br_xent_bytes(const br_xent *x) {
    const size_t C = (size_t)x->chunk, K = (size_t)x->K, N = (size_t)x->n_items;
    const size_t zcols = x->K ? K : (size_t)x->block;
    const size_t sampled = x->K ? K * (sizeof(int32_t) + sizeof(float)) + 2 * K * x->D * sizeof(float) +
                                      (N + 1) * sizeof(double) + N * (sizeof(double) + sizeof(int32_t))
                                : 0;
    return sizeof *x + 2 * C * x->D * sizeof(float) + C * zcols * sizeof(float) +
           3 * C * sizeof(int32_t) + 7 * C * sizeof(float) + sampled;
}

/* z[n, nb] = hc . E[1+j0 .. j0+nb]^T */
static void block_logits(br_xent *x, int32_t n, int32_t j0, int32_t nb, const float *E) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nb, x->D, 1.0f, x->hc, x->D,
                E + (size_t)(1 + j0) * x->D, x->D, 0.0f, x->z, nb);
}

/* Max and sum of exp(z - max) of a row. Sixteen fixed accumulator lanes let
 * the compiler vectorise while keeping the summation order fixed. */
enum { LANES = 16 };

static float row_max(const float *z, int32_t n) {
    float acc[LANES];
    for (int l = 0; l < LANES; l++) acc[l] = -INFINITY;
    int32_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] = z[j + l] > acc[l] ? z[j + l] : acc[l];
    float m = -INFINITY;
    for (; j < n; j++) m = z[j] > m ? z[j] : m;
    for (int l = 0; l < LANES; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

static float row_sum_exp(const float *z, int32_t n, float m) {
    float acc[LANES] = {0};
    int32_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += br_fast_expf(z[j + l] - m);
    float s = 0.0f;
    for (; j < n; j++) s += br_fast_expf(z[j] - m);
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

/* l(y) = -(1 - p_y)^gamma log p_y from the label's logit and the lse; *c is
 * the coefficient with d l / d z_j = c (p_j - [j == y]):
 * c = q^gamma + gamma q^(gamma-1) p nll with q = 1 - p, nll = -log p. */
static double focal_term(double zy, double lse, double gamma, double *c) {
    const double nll = lse - zy;
    if (gamma == 0.0) {
        *c = 1.0;
        return nll;
    }
    const double p = exp(-nll), q = -expm1(-nll), qg = pow(q, gamma);
    *c = qg + (q > 0.0 ? gamma * pow(q, gamma - 1.0) * p * nll : 0.0);
    return qg * nll;
}

/* Per-token loss of the chunk's n rows from the labels' logits and the
 * max and sum of exp of each softmax, summed in a fixed order; sets the
 * gradient coefficients and leaves the lse in mx. */
static double chunk_coefficients(br_xent *x, int32_t n, const br_xent_labels *lb, double gamma,
                                 double norm) {
    double loss = 0.0;
    for (int32_t r = 0; r < n; r++) {
        const int32_t t = x->row[r];
        const double lse = (double)x->mx[r] + log((double)x->sum[r]);
        const double w = lb->weight ? lb->weight[t] : 1.0;
        const double ma = lb->mix ? lb->mix[t] : 1.0, mb = x->yb[r] > 0 ? 1.0 - ma : 0.0;
        double ca, cb = 0.0, l = ma * focal_term(x->za[r], lse, gamma, &ca);
        if (mb != 0.0) l += mb * focal_term(x->zb[r], lse, gamma, &cb);
        loss += w * l;
        const double s = w * norm;
        x->ga[r] = (float)(s * ma * ca);
        x->gb[r] = (float)(s * mb * cb);
        x->gs[r] = x->ga[r] + x->gb[r];
        x->mx[r] = (float)lse;
    }
    return loss;
}

/* Sets z to exp(z - m) and returns its sum, in the lanes of row_sum_exp. */
static float row_exp_in_place(float *z, int32_t n, float m) {
    float acc[LANES] = {0};
    int32_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) {
            z[j + l] = br_fast_expf(z[j + l] - m);
            acc[l] += z[j + l];
        }
    float s = 0.0f;
    for (; j < n; j++) {
        z[j] = br_fast_expf(z[j] - m);
        s += z[j];
    }
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

/* xent_chunk when one block covers the catalogue: the logits are computed
 * once and exponentiated once, in place, then scaled into the gradient. */
static double xent_chunk_one_block(br_xent *x, int32_t n, const br_xent_labels *lb, double gamma,
                                   double norm, const float *E, float *dE) {
    const int D = x->D;
    const int32_t N = x->n_items;
    block_logits(x, n, 0, N, E);
#pragma omp parallel for schedule(static)
    for (int32_t r = 0; r < n; r++) {
        float *zr = x->z + (size_t)r * N;
        x->za[r] = zr[x->ya[r] - 1];
        if (x->yb[r] > 0) x->zb[r] = zr[x->yb[r] - 1];
        x->mx[r] = row_max(zr, N);
        x->sum[r] = row_exp_in_place(zr, N, x->mx[r]);
    }
    const double loss = chunk_coefficients(x, n, lb, gamma, norm);
#pragma omp parallel for schedule(static)
    for (int32_t r = 0; r < n; r++) {
        float *zr = x->z + (size_t)r * N;
        const float g = x->gs[r] / x->sum[r];
        for (int32_t j = 0; j < N; j++) zr[j] *= g;
        zr[x->ya[r] - 1] -= x->ga[r];
        if (x->yb[r] > 0) zr[x->yb[r] - 1] -= x->gb[r];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, N, 1.0f, x->z, N, E + D, D, 0.0f,
                x->dhc, D);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, D, n, 1.0f, x->z, N, x->hc, D, 1.0f,
                dE + D, D);
    return loss;
}

/* Loss of the chunk's n rows (labels set), gradient into dhc and dE. */
static double xent_chunk(br_xent *x, int32_t n, const br_xent_labels *lb, double gamma,
                         double norm, const float *E, float *dE) {
    const int D = x->D;
    const int32_t N = x->n_items, NB = x->block;
    for (int32_t r = 0; r < n; r++) {
        x->mx[r] = -INFINITY;
        x->sum[r] = 0.0f;
    }
    if (N <= NB) return xent_chunk_one_block(x, n, lb, gamma, norm, E, dE);
    /* Pass 1: streaming log-sum-exp over the item blocks. */
    for (int32_t j0 = 0; j0 < N; j0 += NB) {
        const int32_t nb = N - j0 < NB ? N - j0 : NB;
        block_logits(x, n, j0, nb, E);
#pragma omp parallel for schedule(static)
        for (int32_t r = 0; r < n; r++) {
            const float *zr = x->z + (size_t)r * nb;
            const float m = row_max(zr, nb), s = row_sum_exp(zr, nb, m);
            const float M = m > x->mx[r] ? m : x->mx[r];
            x->sum[r] = x->sum[r] * expf(x->mx[r] - M) + s * expf(m - M);
            x->mx[r] = M;
            if (x->ya[r] > j0 && x->ya[r] <= j0 + nb) x->za[r] = zr[x->ya[r] - 1 - j0];
            if (x->yb[r] > j0 && x->yb[r] <= j0 + nb) x->zb[r] = zr[x->yb[r] - 1 - j0];
        }
    }
    const double loss = chunk_coefficients(x, n, lb, gamma, norm);
    /* Pass 2: G = gs * softmax - ga * onehot(ya) - gb * onehot(yb) per block,
     * dh = G E and dE += G^T h. */
    for (int32_t j0 = 0; j0 < N; j0 += NB) {
        const int32_t nb = N - j0 < NB ? N - j0 : NB;
        block_logits(x, n, j0, nb, E);
#pragma omp parallel for schedule(static)
        for (int32_t r = 0; r < n; r++) {
            float *zr = x->z + (size_t)r * nb;
            const float g = x->gs[r], lse = x->mx[r];
            for (int32_t j = 0; j < nb; j++) zr[j] = g * br_fast_expf(zr[j] - lse);
            if (x->ya[r] > j0 && x->ya[r] <= j0 + nb) zr[x->ya[r] - 1 - j0] -= x->ga[r];
            if (x->yb[r] > j0 && x->yb[r] <= j0 + nb) zr[x->yb[r] - 1 - j0] -= x->gb[r];
        }
        const float *Eb = E + (size_t)(1 + j0) * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, nb, 1.0f, x->z, nb, Eb, D,
                    j0 == 0 ? 0.0f : 1.0f, x->dhc, D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nb, D, n, 1.0f, x->z, nb, x->hc, D,
                    1.0f, dE + (size_t)(1 + j0) * D, D);
    }
    return loss;
}

/* Sum of exp(z - m) over a row whose left-out entries are -inf: they add
 * exactly 0 (br_fast_expf clamps its argument, so would not give 0). */
static float row_sum_exp_kept(const float *z, int32_t n, float m) {
    float acc[LANES] = {0};
    int32_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += z[j + l] == -INFINITY ? 0.0f : br_fast_expf(z[j + l] - m);
    float s = 0.0f;
    for (; j < n; j++) s += z[j] == -INFINITY ? 0.0f : br_fast_expf(z[j] - m);
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

/* The sampled counterpart of xent_chunk: logits against the gathered
 * draws es, corrected by log(K Q); the labels' raw logits by dot products; the
 * draws' gradient into des (scattered by the caller). */
static double sampled_chunk(br_xent *x, int32_t n, const br_xent_labels *lb, double gamma,
                            double norm, const float *E, float *dE) {
    const int D = x->D;
    const int32_t K = x->K;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, D, 1.0f, x->hc, D, x->es, D, 0.0f,
                x->z, K);
#pragma omp parallel for schedule(static)
    for (int32_t r = 0; r < n; r++) {
        float *zr = x->z + (size_t)r * K;
        const float *hr = x->hc + (size_t)r * D;
        const int32_t ya = x->ya[r], yb = x->yb[r];
        /* The labels are given, not drawn: their logits stay uncorrected. */
        x->za[r] = dot(hr, E + (size_t)ya * D, D);
        /* A target2 equal to the target is the same support item. */
        const int own_b = yb > 0 && yb != ya;
        x->zb[r] = own_b ? dot(hr, E + (size_t)yb * D, D) : x->za[r];
        for (int32_t k = 0; k < K; k++)
            zr[k] = x->samp[k] == ya || x->samp[k] == yb ? -INFINITY : zr[k] - x->corr[k];
        float m = row_max(zr, K);
        m = x->za[r] > m ? x->za[r] : m;
        m = own_b && x->zb[r] > m ? x->zb[r] : m;
        x->mx[r] = m;
        x->sum[r] = row_sum_exp_kept(zr, K, m) + br_fast_expf(x->za[r] - m) +
                    (own_b ? br_fast_expf(x->zb[r] - m) : 0.0f);
    }
    const double loss = chunk_coefficients(x, n, lb, gamma, norm);
    /* G = gs * p - ga * onehot(ya) - gb * onehot(yb) over the support: the
     * draws' part in z, the labels' part in ga and gb. */
#pragma omp parallel for schedule(static)
    for (int32_t r = 0; r < n; r++) {
        float *zr = x->z + (size_t)r * K;
        const float g = x->gs[r], lse = x->mx[r];
        for (int32_t k = 0; k < K; k++) zr[k] = zr[k] == -INFINITY ? 0.0f : g * br_fast_expf(zr[k] - lse);
        const int32_t ya = x->ya[r], yb = x->yb[r];
        if (yb == ya) {
            x->ga[r] = g * br_fast_expf(x->za[r] - lse) - x->ga[r] - x->gb[r];
            x->gb[r] = 0.0f;
        } else {
            x->ga[r] = g * br_fast_expf(x->za[r] - lse) - x->ga[r];
            x->gb[r] = yb > 0 ? g * br_fast_expf(x->zb[r] - lse) - x->gb[r] : 0.0f;
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, D, K, 1.0f, x->z, K, x->es, D, 0.0f,
                x->dhc, D);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, D, n, 1.0f, x->z, K, x->hc, D, 1.0f,
                x->des, D);
#pragma omp parallel for schedule(static)
    for (int32_t r = 0; r < n; r++) {
        float *dr = x->dhc + (size_t)r * D;
        const float *ea = E + (size_t)x->ya[r] * D, *eb = E + (size_t)x->yb[r] * D;
        const float ga = x->ga[r], gb = x->gb[r];
        for (int d = 0; d < D; d++) dr[d] += ga * ea[d] + gb * eb[d];
    }
    /* Serial: label rows repeat across tokens. */
    for (int32_t r = 0; r < n; r++) {
        const float *hr = x->hc + (size_t)r * D;
        float *da = dE + (size_t)x->ya[r] * D, *db = dE + (size_t)x->yb[r] * D;
        const float ga = x->ga[r], gb = x->gb[r];
        for (int d = 0; d < D; d++) da[d] += ga * hr[d];
        if (gb != 0.0f)
            for (int d = 0; d < D; d++) db[d] += gb * hr[d];
    }
    return loss;
}

double br_xent_loss(br_xent *x, const float *h, int32_t T, const br_xent_labels *lb, float gamma,
                    const float *E, float *dE, float *dh, float scale) {
    const int D = x->D;
    int64_t count = 0;
    for (int32_t t = 0; t < T; t++) count += lb->target[t] > 0;
    memset(dh, 0, (size_t)T * D * sizeof(float));
    if (count == 0) return 0.0;
    const double norm = (double)scale / (double)count;
    /* Sampled: the draws' rows, gathered once for every chunk. */
    for (int32_t k = 0; k < x->K; k++)
        memcpy(x->es + (size_t)k * D, E + (size_t)x->samp[k] * D, (size_t)D * sizeof(float));
    if (x->K) memset(x->des, 0, (size_t)x->K * D * sizeof(float));
    double loss = 0.0;
    for (int32_t t = 0;;) {
        /* Gather the next chunk of tokens with a target. */
        int32_t n = 0;
        for (; t < T && n < x->chunk; t++) {
            if (lb->target[t] <= 0) continue;
            x->row[n] = t;
            x->ya[n] = lb->target[t];
            x->yb[n] = lb->target2 ? lb->target2[t] : 0;
            memcpy(x->hc + (size_t)n * D, h + (size_t)t * D, (size_t)D * sizeof(float));
            n++;
        }
        if (n == 0) break;
        loss += x->K ? sampled_chunk(x, n, lb, gamma, norm, E, dE) : xent_chunk(x, n, lb, gamma, norm, E, dE);
        for (int32_t r = 0; r < n; r++)
            memcpy(dh + (size_t)x->row[r] * D, x->dhc + (size_t)r * D, (size_t)D * sizeof(float));
    }
    /* In draw order, so that repeated draws accumulate in a fixed order. */
    for (int32_t k = 0; k < x->K; k++) {
        float *de = dE + (size_t)x->samp[k] * D;
        const float *g = x->des + (size_t)k * D;
        for (int d = 0; d < D; d++) de[d] += g[d];
    }
    return loss * norm;
}

double br_loss_eval(const br_loss_config *c, br_xent *xent, const float *h, int32_t T,
                    const int32_t *target, const int32_t *neg, const float *weight, int D,
                    const float *E, float *dE, float *dh) {
    if (c->kind == BR_LOSS_BCE) return br_bce_loss(h, target, neg, weight, T, D, E, dE, dh, 1.0f);
    const br_xent_labels lb = {target, NULL, NULL, weight};
    return br_xent_loss(xent, h, T, &lb, c->kind == BR_LOSS_FOCAL ? c->focal_gamma : 0.0f, E, dE,
                        dh, 1.0f);
}
