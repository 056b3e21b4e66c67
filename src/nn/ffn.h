/* The position-wise feed-forward sub-layer of a post-LN Transformer block,
 *   y = LN(x + Dropout(W2 gelu(W1 x + b1) + b2)),   inner width 4D,
 * shared by SASRec and FMLP-Rec. */
#ifndef BR_NN_FFN_H
#define BR_NN_FFN_H

#include <stdint.h>

#include "nn/params.h"

/* Parameter indices: W1 [4D, D], b1 [4D], W2 [D, 4D], b2 [D], LN weight/bias [D]. */
typedef struct br_ffn_index {
    int w1, b1, w2, b2, ln_w, ln_b;
} br_ffn_index;

/* Activations kept for the backward pass. */
typedef struct br_ffn_acts {
    float *pre;              /* [T, 4D] before gelu; the forward leaves gelu' there */
    float *act;              /* [T, 4D] after gelu */
    float *res;              /* [T, D] x + dropout(ffn), the LayerNorm input */
    float *ln_mean, *ln_rstd;
} br_ffn_acts;

void br_ffn_forward(const br_params *p, const br_ffn_index *ix, const br_ffn_acts *a,
                    const float *x, float *y, int T, int D, float ln_eps, float p_drop,
                    uint64_t key);
/* On entry g holds dL/dy, on return dL/dx; parameter gradients accumulate.
 * g_res [T, D] and g_inner [T, 4D] are scratch. */
void br_ffn_backward(br_params *p, const br_ffn_index *ix, const br_ffn_acts *a, const float *x,
                     float *g, float *g_res, float *g_inner, int T, int D, float p_drop,
                     uint64_t key);

#endif
