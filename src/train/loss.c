#include <math.h>
#include <string.h>

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
