#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fastmath.h"
#include "train/loss.h"

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
}

static const char *const loss_names[] = {"bce", "ce", "last-ce", "focal"};

const char *br_loss_name(br_loss_kind k) { return loss_names[k]; }

int br_loss_parse(const char *name, br_loss_kind *k) {
    for (int i = 0; i < (int)(sizeof loss_names / sizeof loss_names[0]); i++)
        if (strcmp(name, loss_names[i]) == 0) {
            *k = (br_loss_kind)i;
            return 0;
        }
    return -1;
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
    float *z;             /* [chunk, block]: logits, then their gradient */
    int32_t *row;         /* [chunk]: token of each chunk row */
    int32_t *ya, *yb;     /* [chunk]: labels (yb 0: none) */
    float *mx, *sum;      /* [chunk]: streaming max and sum of exp(z - max); mx then holds the lse */
    float *za, *zb;       /* [chunk]: the labels' logits */
    float *ga, *gb, *gs;  /* [chunk]: gradient coefficients of the labels and of p */
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
    free(x);
}

br_xent *br_xent_create(int32_t n_items, int D, int32_t chunk, int32_t block, br_error *err) {
    if (n_items < 1 || D < 1 || chunk < 1 || block < 1) {
        br_errorf(err, "cross-entropy: need n_items, dim, chunk and block >= 1");
        return NULL;
    }
    br_xent *x = br_xcalloc(1, sizeof *x, err);
    if (!x) return NULL;
    x->n_items = n_items;
    x->D = D;
    x->chunk = chunk;
    x->block = block < n_items ? block : n_items;
    const size_t C = (size_t)chunk;
    x->hc = br_xmalloc(C * D * sizeof(float), err);
    x->dhc = br_xmalloc(C * D * sizeof(float), err);
    x->z = br_xmalloc(C * (size_t)x->block * sizeof(float), err);
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

size_t br_xent_bytes(const br_xent *x) {
    const size_t C = (size_t)x->chunk;
    return sizeof *x + 2 * C * x->D * sizeof(float) + C * (size_t)x->block * sizeof(float) +
           3 * C * sizeof(int32_t) + 7 * C * sizeof(float);
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

/* Loss of the chunk's n rows (labels set), gradient into dhc and dE. */
static double xent_chunk(br_xent *x, int32_t n, const br_xent_labels *lb, double gamma,
                         double norm, const float *E, float *dE) {
    const int D = x->D;
    const int32_t N = x->n_items, NB = x->block;
    for (int32_t r = 0; r < n; r++) {
        x->mx[r] = -INFINITY;
        x->sum[r] = 0.0f;
    }
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
    /* Per-token loss and gradient coefficients, summed in a fixed order. */
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
    /* Pass 2: G = gs * softmax - ga * onehot(ya) - gb * onehot(yb) per block,
     * dh = G E and dE += G^T h. */
    for (int32_t j0 = 0; j0 < N; j0 += NB) {
        const int32_t nb = N - j0 < NB ? N - j0 : NB;
        if (N > NB) block_logits(x, n, j0, nb, E); /* one block: z still holds them */
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

double br_xent_loss(br_xent *x, const float *h, int32_t T, const br_xent_labels *lb, float gamma,
                    const float *E, float *dE, float *dh, float scale) {
    const int D = x->D;
    int64_t count = 0;
    for (int32_t t = 0; t < T; t++) count += lb->target[t] > 0;
    memset(dh, 0, (size_t)T * D * sizeof(float));
    if (count == 0) return 0.0;
    const double norm = (double)scale / (double)count;
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
        loss += xent_chunk(x, n, lb, gamma, norm, E, dE);
        for (int32_t r = 0; r < n; r++)
            memcpy(dh + (size_t)x->row[r] * D, x->dhc + (size_t)r * D, (size_t)D * sizeof(float));
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
