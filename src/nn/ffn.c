#include <string.h>

#include "nn/ffn.h"
#include "nn/ops.h"

void br_ffn_forward(const br_params *p, const br_ffn_index *ix, const br_ffn_acts *a,
                    const float *x, float *y, int T, int D, float ln_eps, float p_drop,
                    uint64_t key) {
    const long TD = (long)T * D;
    br_linear_forward(a->pre, x, br_pdata(p, ix->w1), br_pdata(p, ix->b1), T, D, 4 * D);
    br_gelu_forward(a->act, a->pre, (long)T * 4 * D);
    br_linear_forward(a->res, a->act, br_pdata(p, ix->w2), br_pdata(p, ix->b2), T, 4 * D, D);
    br_dropout(a->res, TD, p_drop, key);
    for (long i = 0; i < TD; i++) a->res[i] += x[i];
    br_layernorm_forward(y, a->ln_mean, a->ln_rstd, a->res, br_pdata(p, ix->ln_w),
                         br_pdata(p, ix->ln_b), T, D, ln_eps);
}

void br_ffn_backward(br_params *p, const br_ffn_index *ix, const br_ffn_acts *a, const float *x,
                     float *g, float *g_res, float *g_inner, int T, int D, float p_drop,
                     uint64_t key) {
    const long TD = (long)T * D;
    br_layernorm_backward(g_res, br_pgrad(p, ix->ln_w), br_pgrad(p, ix->ln_b), g, a->res,
                          a->ln_mean, a->ln_rstd, br_pdata(p, ix->ln_w), T, D, 0);
    /* The residual path carries g_res to x unchanged; the branch sees it
     * through the dropout mask. */
    memcpy(g, g_res, (size_t)TD * sizeof(float));
    br_dropout(g_res, TD, p_drop, key);
    br_linear_backward(g_inner, br_pgrad(p, ix->w2), br_pgrad(p, ix->b2), g_res, a->act,
                       br_pdata(p, ix->w2), T, 4 * D, D, 0);
    br_gelu_backward(g_inner, g_inner, a->pre, (long)T * 4 * D);
    br_linear_backward(g, br_pgrad(p, ix->w1), br_pgrad(p, ix->b1), g_inner, x,
                       br_pdata(p, ix->w1), T, D, 4 * D, 1);
}
