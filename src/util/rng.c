#include <math.h>

#include "rng.h"

void br_rng_seed(br_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t k = br_mix64(seed) ^ br_mix64(stream ^ 0xD1B54A32D192ED03ull);
    for (int i = 0; i < 4; i++) r->s[i] = k = br_mix64(k);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t br_rng_u64(br_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double br_rng_uniform(br_rng *r) { return (double)(br_rng_u64(r) >> 11) * 0x1.0p-53; }

uint64_t br_rng_below(br_rng *r, uint64_t n) {
    /* Rejection on the top of the range keeps the draw unbiased. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = br_rng_u64(r);
    while (x >= limit);
    return x % n;
}

double br_rng_normal(br_rng *r) {
    double u1;
    do u1 = br_rng_uniform(r);
    while (u1 <= 0.0);
    double u2 = br_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void br_rng_shuffle_i32(br_rng *r, int32_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)br_rng_below(r, (uint64_t)i + 1);
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}
