/* Vectorisable float exp and erfc for the elementwise kernels: libm's
 * expf/erff are scalar calls, which made GELU and the GRU gates the largest
 * non-GEMM costs of a training step. The polynomials use fmaf explicitly
 * (one rounding per step, and half the instructions): -std=c11 turns off
 * the compiler's own contraction. */
#ifndef BR_NN_FASTMATH_H
#define BR_NN_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float br_f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t br_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Cephes' expf: x = n ln2 + r with |r| <= ln2/2, a degree-7 polynomial for
 * e^r (relative error <= 1e-7, as expf), 2^n through the exponent bits.
 * x is clamped to [-87, 88], where the result is a normal float, and NaN
 * propagates. Clamp and NaN test work on the bit pattern: float comparisons
 * or fminf/fmaxf make GCC branch around the float arithmetic, which it then
 * cannot vectorise under -ftrapping-math. */
static inline float br_fast_expf(float x) {
    const uint32_t u = br_f32_bits(x), mag = u & 0x7fffffffu;
    const uint32_t lim = (u >> 31) ? 0x42ae0000u /* 87 */ : 0x42b00000u /* 88 */;
    x = br_f32_from_bits((u & 0x80000000u) | (mag > lim ? lim : mag));
    const float fn = x * 1.44269504088896341f;
    const int n = (int)(fn + 128.5f) - 128; /* round to nearest: fn + 128.5 > 0 */
    const float r = fmaf((float)n, 2.12194440e-4f, fmaf((float)n, -0.693359375f, x));
    float y = 1.9875691500e-4f;
    y = fmaf(y, r, 1.3981999507e-3f);
    y = fmaf(y, r, 8.3334519073e-3f);
    y = fmaf(y, r, 4.1665795894e-2f);
    y = fmaf(y, r, 1.6666665459e-1f);
    y = fmaf(y, r, 5.0000001201e-1f);
    y = fmaf(y * r, r, r + 1.0f);
    const uint32_t e = br_f32_bits(y * br_f32_from_bits((uint32_t)(n + 127) << 23));
    const uint32_t nan_mask = 0u - (uint32_t)(mag > 0x7f800000u);
    return br_f32_from_bits((u & nan_mask) | (e & ~nan_mask));
}

/* erfc by the Chebyshev fit of Numerical Recipes (erfcc, fractional error
 * below 1.2e-7 for z >= 0), reflected for z < 0: erfc(-z) = 2 - erfc(z). */
static inline float br_fast_erfcf(float z) {
    const float a = br_f32_from_bits(br_f32_bits(z) & 0x7fffffffu);
    const float t = 1.0f / (1.0f + 0.5f * a);
    float p = 0.17087277f;
    p = fmaf(p, t, -0.82215223f);
    p = fmaf(p, t, 1.48851587f);
    p = fmaf(p, t, -1.13520398f);
    p = fmaf(p, t, 0.27886807f);
    p = fmaf(p, t, -0.18628806f);
    p = fmaf(p, t, 0.09678418f);
    p = fmaf(p, t, 0.37409196f);
    p = fmaf(p, t, 1.00002368f);
    p = fmaf(p, t, -1.26551223f);
    const float y = t * br_fast_expf(fmaf(-a, a, p));
    return z >= 0.0f ? y : 2.0f - y;
}

#endif
