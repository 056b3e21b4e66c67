/* Random numbers. Two flavours:
 *  - br_rng: a sequential xoshiro256** stream, for shuffles and init;
 *  - br_hash_*: counter-based (stateless) draws keyed by (seed, counters), so
 *    that dropout masks and negatives do not depend on thread scheduling and
 *    training is bit-reproducible for a seed and thread count. */
#ifndef BR_UTIL_RNG_H
#define BR_UTIL_RNG_H

#include <stdint.h>

typedef struct br_rng {
    uint64_t s[4];
} br_rng;

void br_rng_seed(br_rng *r, uint64_t seed, uint64_t stream);
uint64_t br_rng_u64(br_rng *r);
/* Uniform in [0, 1). */
double br_rng_uniform(br_rng *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t br_rng_below(br_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double br_rng_normal(br_rng *r);
/* Fisher-Yates shuffle of n int32 values. */
void br_rng_shuffle_i32(br_rng *r, int32_t *a, int64_t n);

/* splitmix64 finaliser: a strong 64-bit mixing function. Inline so that
 * the dropout loop, which hashes once per four elements, vectorises. */
static inline uint64_t br_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
/* Stateless draw keyed by (key, counter). */
static inline uint64_t br_hash_u64(uint64_t key, uint64_t counter) {
    return br_mix64(key ^ br_mix64(counter + 0x9E3779B97F4A7C15ull));
}
/* Stateless uniform float in [0, 1) with 16 random bits: element i takes
 * the (i mod 4)-th 16-bit slice of the hash of i / 4, so one hash serves
 * four consecutive elements (dropout draws are a hot loop). */
static inline float br_hash_uniform16(uint64_t key, uint64_t i) {
    return (float)((br_hash_u64(key, i >> 2) >> ((i & 3) * 16)) & 0xFFFF) * (1.0f / 65536.0f);
}
/* Derives a key for a sub-stream, e.g. br_key(seed, epoch, purpose). */
static inline uint64_t br_key(uint64_t a, uint64_t b, uint64_t c) {
    return br_mix64(br_mix64(br_mix64(a) ^ b) ^ c);
}

#endif
