/* Vectorisable float exp and erfcx for the elementwise kernels: libm's
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

/* erfcx(a) = erfc(a) exp(a^2) for a >= 0, so that erfc(a) = erfcx(a) e^(-a^2)
 * shares its exponential with the normal density (GELU needs both). With
 * t = 1/(1 + a/2), erfcx(a) = t Q(t) and Q is smooth on t in [1/6, 1]
 * (a in [0, 10], beyond which e^(-a^2) underflows a float): a degree-8
 * Chebyshev fit of Q, in powers of u = 2.4t - 1.4 (that interval mapped to
 * [-1, 1]), has relative error below 1e-7. Times the float e^(-a^2), erfc
 * is then as accurate as Numerical Recipes' erfcc with its own exponential
 * (relative error 8e-7 for a <= 3, 2e-6 for a <= 6, both limited by the
 * rounding of a^2 in the exponent). */
static inline float br_fast_erfcxf(float a) {
    const float t = 1.0f / fmaf(0.5f, a, 1.0f);
    const float u = fmaf(t, 2.4f, -1.4f);
    float q = -5.298031101e-05f;
    q = fmaf(q, u, 1.971042366e-05f);
    q = fmaf(q, u, 5.847864668e-04f);
    q = fmaf(q, u, -6.309270393e-04f);
    q = fmaf(q, u, -6.150105037e-03f);
    q = fmaf(q, u, 5.965948571e-03f);
    q = fmaf(q, u, 1.020292789e-01f);
    q = fmaf(q, u, 3.262222707e-01f);
    q = fmaf(q, u, 5.720120072e-01f);
    return t * q;
}

#endif
