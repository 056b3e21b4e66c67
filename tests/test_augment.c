/* Augmentation operators (Reorder, Substitute, Crop, Mask), the ItemCF-IUF
 * similarity and the Gamma/Beta draws. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <time.h>

#include "augment/augment.h"

/* 1..n: distinct items, so a position's item tells where it came from. */
static void iota(int32_t *s, int32_t n) {
    for (int32_t i = 0; i < n; i++) s[i] = i + 1;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* ---- Reorder ---- */

/* Checks one reorder of 1..n: the items outside one window [start, start+c)
 * with start <= n-c-1 (or 0 when c == n) are in place and the window holds a
 * permutation of its own items. Returns the lowest/highest moved position. */
static void check_reorder(const int32_t *s, int32_t n, int32_t c, int32_t *lo, int32_t *hi) {
    *lo = n;
    *hi = -1;
    for (int32_t p = 0; p < n; p++) {
        if (s[p] == p + 1) continue;
        if (p < *lo) *lo = p;
        *hi = p;
    }
    if (*hi < 0) return;
    assert_true(*hi - *lo + 1 <= c);
    /* a window of length c containing [lo, hi] with a legal start */
    int32_t max_start = c < n ? n - c - 1 : 0;
    int32_t start = *hi - c + 1 > 0 ? *hi - c + 1 : 0;
    assert_true(start <= *lo && start <= max_start);
    /* every moved item comes from inside the moved range (a permutation of it) */
    int32_t sorted[256];
    int32_t m = *hi - *lo + 1;
    memcpy(sorted, s + *lo, (size_t)m * sizeof *sorted);
    qsort(sorted, (size_t)m, sizeof *sorted, cmp_i32);
    for (int32_t i = 0; i < m; i++) assert_int_equal(sorted[i], *lo + i + 1);
}

static void test_reorder_short(void **state) {
    br_rng r;
    br_rng_seed(&r, 1, 0);
    int32_t s[2];
    const float rates[] = {0.0f, 0.1f, 0.5f, 0.999f};
    for (size_t k = 0; k < sizeof rates / sizeof *rates; k++) {
        for (int rep = 0; rep < 50; rep++) {
            /* n = 1 and n = 2: int(rate * n) <= 1, nothing to shuffle */
            s[0] = 7;
            br_aug_reorder(s, 1, rates[k], &r);
            assert_int_equal(s[0], 7);
            s[0] = 7, s[1] = 9;
            br_aug_reorder(s, 2, rates[k], &r);
            assert_int_equal(s[0], 7);
            assert_int_equal(s[1], 9);
        }
    }
    /* rate 1 on n = 2: the whole sequence is the window; both orders occur */
    int swapped = 0;
    for (int rep = 0; rep < 200; rep++) {
        s[0] = 7, s[1] = 9;
        br_aug_reorder(s, 2, 1.0f, &r);
        assert_true((s[0] == 7 && s[1] == 9) || (s[0] == 9 && s[1] == 7));
        swapped += s[0] == 9;
    }
    assert_true(swapped > 50 && swapped < 150);
}

static void test_reorder_window(void **state) {
    const int32_t lens[] = {50, 120};
    const float rates[] = {0.0f, 0.02f, 0.2f, 0.5f, 0.71f, 0.999f};
    br_rng r;
    br_rng_seed(&r, 2, 0);
    for (size_t a = 0; a < 2; a++) {
        for (size_t b = 0; b < sizeof rates / sizeof *rates; b++) {
            int32_t n = lens[a], c = (int32_t)(rates[b] * (float)n);
            int32_t s[256], lo, hi, min_lo = n, max_hi = -1, n_changed = 0;
            for (int rep = 0; rep < 3000; rep++) {
                iota(s, n);
                br_aug_reorder(s, n, rates[b], &r);
                check_reorder(s, n, c, &lo, &hi);
                if (hi < 0) continue;
                n_changed++;
                if (lo < min_lo) min_lo = lo;
                if (hi > max_hi) max_hi = hi;
            }
            if (c <= 1) {
                assert_int_equal(n_changed, 0);
                continue;
            }
            /* no position moves only when the shuffle is the identity (1/c!) */
            double p_same = 1.0;
            for (int32_t i = 2; i <= c && i < 20; i++) p_same /= i;
            assert_true(n_changed > 0.9 * 3000 * (1.0 - p_same));
            /* windows reach both ends of the legal range: [0, n-2] (the last
             * item never moves while c < n, as in the reference) */
            assert_int_equal(min_lo, 0);
            assert_int_equal(max_hi, n - 2);
        }
    }
}

static void test_reorder_deterministic(void **state) {
    int32_t x[120], y[120], z[120];
    br_rng r1, r2, r3;
    br_rng_seed(&r1, 42, 3);
    br_rng_seed(&r2, 42, 3);
    br_rng_seed(&r3, 43, 3);
    iota(x, 120);
    iota(y, 120);
    iota(z, 120);
    br_aug_reorder(x, 120, 0.5f, &r1);
    br_aug_reorder(y, 120, 0.5f, &r2);
    br_aug_reorder(z, 120, 0.5f, &r3);
    assert_memory_equal(x, y, sizeof x);
    assert_memory_not_equal(x, z, sizeof x);
}

/* ---- Substitute ---- */

/* most_similar[i] = i % n_items + 1: never the item itself, so every chosen
 * position visibly changes. */
static int32_t *shift_map(int32_t n_items) {
    int32_t *m = malloc(((size_t)n_items + 1) * sizeof *m);
    assert_non_null(m);
    m[0] = 0;
    for (int32_t i = 1; i <= n_items; i++) m[i] = i % n_items + 1;
    return m;
}

static void test_substitute_count(void **state) {
    enum { NI = 20000 };
    br_item_sim sim = {NI, shift_map(NI)};
    const int32_t lens[] = {1, 2, 50, 120, 5000};
    const float rates[] = {0.0f, 0.01f, 0.2f, 0.5f, 0.999f, 1.0f};
    static int32_t s[5000];
    br_rng r;
    br_rng_seed(&r, 5, 0);
    for (size_t a = 0; a < sizeof lens / sizeof *lens; a++) {
        for (size_t b = 0; b < sizeof rates / sizeof *rates; b++) {
            int32_t n = lens[a];
            int32_t k = (int32_t)(rates[b] * (float)n);
            if (k < 1) k = 1;
            for (int rep = 0; rep < 20; rep++) {
                iota(s, n);
                br_aug_substitute(s, n, rates[b], &sim, &r);
                int32_t changed = 0;
                for (int32_t p = 0; p < n; p++) {
                    if (s[p] == p + 1) continue;
                    changed++;
                    assert_int_equal(s[p], sim.most_similar[p + 1]);
                }
                assert_int_equal(changed, k);
            }
        }
    }
    free(sim.most_similar);
}

/* Every position is chosen with probability k / n. */
static void test_substitute_uniform_positions(void **state) {
    enum { NI = 100, N = 50, REPS = 40000 };
    br_item_sim sim = {NI, shift_map(NI)};
    const float rate = 0.2f;
    const int32_t k = 10;
    int32_t s[N];
    int64_t hits[N] = {0};
    br_rng r;
    br_rng_seed(&r, 6, 0);
    for (int rep = 0; rep < REPS; rep++) {
        iota(s, N);
        br_aug_substitute(s, N, rate, &sim, &r);
        for (int32_t p = 0; p < N; p++) hits[p] += s[p] != p + 1;
    }
    double pr = (double)k / N, mean = REPS * pr, sd = sqrt(REPS * pr * (1 - pr));
    for (int32_t p = 0; p < N; p++) assert_true(fabs((double)hits[p] - mean) < 5 * sd);
    free(sim.most_similar);
}

/* Items without a neighbour get a uniform item 1..n_items, which may be the
 * item itself (probability 1/n_items): the count of changed positions is
 * then k minus those, and the fallback covers the whole range. */
static void test_substitute_fallback(void **state) {
    enum { NI = 5, N = 50, REPS = 4000 };
    int32_t most[NI + 1] = {0, 0, 0, 4, 0, 0}; /* item 3 -> 4, the rest none */
    br_item_sim sim = {NI, most};
    int32_t s[N], orig[N];
    int64_t seen[NI + 1] = {0}, changed_total = 0;
    br_rng r;
    br_rng_seed(&r, 7, 0);
    for (int rep = 0; rep < REPS; rep++) {
        /* odd positions: item 3; even ones: 1, 2, 5 (no neighbour) */
        for (int32_t p = 0; p < N; p++) orig[p] = s[p] = (p % 2) ? 3 : (int32_t[]){1, 2, 5}[p / 2 % 3];
        br_aug_substitute(s, N, 0.5f, &sim, &r);
        int32_t changed = 0;
        for (int32_t p = 0; p < N; p++) {
            assert_true(s[p] >= 1 && s[p] <= NI);
            if (orig[p] == 3) {
                /* has a neighbour: either untouched or exactly it */
                assert_true(s[p] == 3 || s[p] == 4);
                changed += s[p] == 4;
                continue;
            }
            if (s[p] != orig[p]) changed++, seen[s[p]]++;
        }
        assert_true(changed <= 25);
        changed_total += changed;
    }
    /* 25 chosen, on average half of them item 3 (always changes), half a
     * fallback (changes with probability 4/5). */
    double expect = REPS * (12.5 + 12.5 * 0.8);
    assert_true(fabs((double)changed_total - expect) < 0.02 * expect);
    for (int32_t i = 1; i <= NI; i++) assert_true(seen[i] > 0);
}

static void test_substitute_deterministic(void **state) {
    enum { NI = 300 };
    br_item_sim sim = {NI, shift_map(NI)};
    for (int32_t i = 1; i <= NI; i += 3) sim.most_similar[i] = 0; /* some fallbacks */
    int32_t x[120], y[120], z[120];
    br_rng r1, r2, r3;
    br_rng_seed(&r1, 9, 1);
    br_rng_seed(&r2, 9, 1);
    br_rng_seed(&r3, 10, 1);
    iota(x, 120);
    iota(y, 120);
    iota(z, 120);
    br_aug_substitute(x, 120, 0.3f, &sim, &r1);
    br_aug_substitute(y, 120, 0.3f, &sim, &r2);
    br_aug_substitute(z, 120, 0.3f, &sim, &r3);
    assert_memory_equal(x, y, sizeof x);
    assert_memory_not_equal(x, z, sizeof x);
    free(sim.most_similar);
}

/* ---- Crop ---- */

/* c = max(int(rate * n), 1) and the start uniform over [0, n-c]: every
 * start occurs, none outside, each about equally often. */
static void test_crop_window(void **state) {
    const int32_t lens[] = {1, 2, 50, 120, 5000};
    const float rates[] = {0.0f, 0.01f, 0.2f, 0.5f, 0.71f, 0.999f, 1.0f};
    br_rng r;
    br_rng_seed(&r, 21, 0);
    static int64_t hits[5001];
    for (size_t a = 0; a < sizeof lens / sizeof *lens; a++) {
        for (size_t b = 0; b < sizeof rates / sizeof *rates; b++) {
            const int32_t n = lens[a];
            int32_t want = (int32_t)(rates[b] * (float)n);
            if (want < 1) want = 1;
            const int32_t n_starts = n - want + 1;
            const int reps = n_starts * 60 < 2000 ? 2000 : n_starts * 60;
            memset(hits, 0, sizeof hits);
            for (int rep = 0; rep < reps; rep++) {
                int32_t start = -1;
                const int32_t c = br_aug_crop(n, rates[b], &r, &start);
                assert_int_equal(c, want);
                assert_true(start >= 0 && start + c <= n);
                hits[start]++;
            }
            const double mean = (double)reps / n_starts, sd = sqrt(mean * (1.0 - 1.0 / n_starts));
            for (int32_t st = 0; st < n_starts; st++) {
                assert_true(hits[st] > 0);
                assert_true(fabs((double)hits[st] - mean) <= 5 * sd + 1e-9);
            }
        }
    }
}

static void test_crop_deterministic(void **state) {
    br_rng r1, r2, r3;
    br_rng_seed(&r1, 22, 1);
    br_rng_seed(&r2, 22, 1);
    br_rng_seed(&r3, 23, 1);
    int32_t s1[20], s2[20], s3[20];
    for (int i = 0; i < 20; i++) {
        br_aug_crop(1000, 0.3f, &r1, &s1[i]);
        br_aug_crop(1000, 0.3f, &r2, &s2[i]);
        br_aug_crop(1000, 0.3f, &r3, &s3[i]);
    }
    assert_memory_equal(s1, s2, sizeof s1);
    assert_memory_not_equal(s1, s3, sizeof s1);
}

/* ---- Mask ---- */

/* Exactly max(int(rate * n), 1) positions become the mask item, the rest
 * are untouched. */
static void test_mask_count(void **state) {
    enum { MASK = 999999 };
    const int32_t lens[] = {1, 2, 50, 120, 5000};
    const float rates[] = {0.0f, 0.01f, 0.2f, 0.5f, 0.999f, 1.0f};
    static int32_t s[5000];
    br_rng r;
    br_rng_seed(&r, 24, 0);
    for (size_t a = 0; a < sizeof lens / sizeof *lens; a++) {
        for (size_t b = 0; b < sizeof rates / sizeof *rates; b++) {
            const int32_t n = lens[a];
            int32_t k = (int32_t)(rates[b] * (float)n);
            if (k < 1) k = 1;
            for (int rep = 0; rep < 20; rep++) {
                iota(s, n);
                br_aug_mask(s, n, rates[b], MASK, &r);
                int32_t masked = 0;
                for (int32_t p = 0; p < n; p++) {
                    if (s[p] == MASK) masked++;
                    else assert_int_equal(s[p], p + 1);
                }
                assert_int_equal(masked, k);
            }
        }
    }
}

/* Every position is masked with probability k / n. */
static void test_mask_uniform_positions(void **state) {
    enum { N = 50, REPS = 40000, MASK = 77 };
    int32_t s[N];
    int64_t hits[N] = {0};
    br_rng r;
    br_rng_seed(&r, 25, 0);
    for (int rep = 0; rep < REPS; rep++) {
        iota(s, N);
        br_aug_mask(s, N, 0.3f, MASK, &r);
        for (int32_t p = 0; p < N; p++) hits[p] += s[p] == MASK;
    }
    const double pr = 15.0 / N, mean = REPS * pr, sd = sqrt(REPS * pr * (1 - pr));
    for (int32_t p = 0; p < N; p++) assert_true(fabs((double)hits[p] - mean) < 5 * sd);
}

static void test_mask_deterministic(void **state) {
    int32_t x[120], y[120], z[120];
    br_rng r1, r2, r3;
    br_rng_seed(&r1, 26, 1);
    br_rng_seed(&r2, 26, 1);
    br_rng_seed(&r3, 27, 1);
    iota(x, 120);
    iota(y, 120);
    iota(z, 120);
    br_aug_mask(x, 120, 0.3f, 500, &r1);
    br_aug_mask(y, 120, 0.3f, 500, &r2);
    br_aug_mask(z, 120, 0.3f, 500, &r3);
    assert_memory_equal(x, y, sizeof x);
    assert_memory_not_equal(x, z, sizeof x);
}

/* ---- ItemCF-IUF ---- */

static void load_text(const char *text, char *path, size_t n, br_dataset *ds) {
    br_error err;
    assert_non_null(test_write_tmp(path, n, text));
    if (br_dataset_load(path, ds, &err) < 0) fail_msg("%s", err.msg);
}

static void test_item_sim_hand(void **state) {
    /* Training parts s[0:n-3] (w = 1/log(1 + distinct items)):
     *   u1: {1,2,3}   w = 1/ln4 = 0.7213
     *   u2: [1,2,2] -> {1,2}   w = 1/ln3 = 0.9102 (duplicates count once)
     *   u3: {3,4}     w = 1/ln3
     *   u4: {5}       no pairs
     *   u5: {}        (3 items: empty training part)
     *   u6: {2}       no pairs; 6, 7, 8 only in the valid/test part
     *   u7: {12,11,10} w = 1/ln4
     * 9 only ever appears after the training part.
     * N: 1:2  2:3  3:2  4:1  5:1  10,11,12:1  6-9:0
     * sim(1,2) = (1/ln4 + 1/ln3)/sqrt(6) = 0.666, sim(1,3) = (1/ln4)/2 = 0.361 -> 1: 2
     * sim(2,1) = 0.666, sim(2,3) = (1/ln4)/sqrt(6) = 0.294            -> 2: 1
     * sim(3,1) = 0.361, sim(3,2) = 0.294, sim(3,4) = (1/ln3)/sqrt(2) = 0.644 -> 3: 4
     * 4: 3 only                                                        -> 4: 3
     * 5-9: no co-occurring item                                        -> 0
     * 10, 11, 12: both others tie at 1/ln4, the lower id wins: 10: 11, 11: 10,
     * 12: 10 (although 11 comes first in u7's sequence).
     * The weighting matters (plain counts would tie 13's neighbours, giving 14):
     *   u8: {13,14,16,17,18} w = 1/ln6 = 0.558,  u9: {13,15} w = 1/ln3 = 0.910
     *   13: 14, 16-18 at 0.558/sqrt2, 15 at 0.910/sqrt2   -> 13: 15
     *   14: 13 at 0.558/sqrt2, 16-18 at 0.558             -> 14: 16
     *   15: 13; 16: 14 (13 at 0.558/sqrt2, 14/17/18 tie at 0.558); 17, 18: 14
     * Duplicates count once (counting them would make 21 win for 19):
     *   u10: [19,21,21,21,21] -> {19,21},  u11: {19,20}, both w = 1/ln3
     *   19: 20 and 21 tie at (1/ln3)/sqrt2 -> 20;  20: 19;  21: 19 */
    const char *text = "1 1 2 3 9 9 9\n"
                       "2 1 2 2 9 9 9\n"
                       "3 3 4 9 9 9\n"
                       "4 5 9 9 9\n"
                       "5 1 1 1\n"
                       "6 2 6 7 8\n"
                       "7 12 11 10 9 9 9\n"
                       "8 13 14 16 17 18 9 9 9\n"
                       "9 13 15 9 9 9\n"
                       "10 19 21 21 21 21 9 9 9\n"
                       "11 19 20 9 9 9\n";
    const int32_t expect[22] = {0,  2,  1,  4,  3,  0,  0,  0,  0,  0,  11,
                                10, 10, 15, 16, 13, 14, 14, 14, 20, 19, 19};
    char path[64];
    br_dataset ds;
    br_item_sim sim;
    br_error err;
    load_text(text, path, sizeof path, &ds);
    assert_int_equal(ds.n_items, 21);
    assert_int_equal(br_item_sim_build(&ds, &sim, &err), 0);
    assert_int_equal(sim.n_items, 21);
    assert_memory_equal(sim.most_similar, expect, sizeof expect);
    br_item_sim_free(&sim);
    assert_null(sim.most_similar);
    br_item_sim_free(&sim); /* a second free is harmless */
    br_dataset_free(&ds);
    unlink(path);
}

/* The definition, pair by pair over a dense matrix: users in order, each
 * adding 1/log(1 + d) to C[i][j] for every ordered pair of distinct items. */
static void brute_force(const br_dataset *ds, int32_t *most) {
    int32_t ni = ds->n_items;
    size_t w = (size_t)ni + 1;
    double *C = calloc(w * w, sizeof *C);
    int32_t *N = calloc(w, sizeof *N), *list = malloc(w * sizeof *list);
    unsigned char *has = calloc(w, 1);
    assert_true(C && N && list && has);
    for (int32_t u = 0; u < ds->n_users; u++) {
        const int32_t *s = br_seq(ds, u);
        int32_t len = br_split_input_len(ds, u, BR_SPLIT_TRAIN), d = 0;
        for (int32_t t = 0; t < len; t++)
            if (!has[s[t]]) has[s[t]] = 1, list[d++] = s[t];
        double wt = 1.0 / log(1.0 + (double)d);
        for (int32_t a = 0; a < d; a++) {
            N[list[a]]++;
            for (int32_t b = 0; b < d; b++)
                if (a != b) C[(size_t)list[a] * w + (size_t)list[b]] += wt;
        }
        for (int32_t a = 0; a < d; a++) has[list[a]] = 0;
    }
    most[0] = 0;
    for (int32_t i = 1; i <= ni; i++) {
        double best = 0.0;
        most[i] = 0;
        for (int32_t j = 1; j <= ni; j++) {
            double c = C[(size_t)i * w + (size_t)j];
            if (c == 0.0) continue;
            double sim = c / sqrt((double)N[i] * (double)N[j]);
            if (sim > best) best = sim, most[i] = j;
        }
    }
    free(C);
    free(N);
    free(list);
    free(has);
}

static void test_item_sim_brute_force(void **state) {
    char path[] = "/tmp/basrec-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    br_error err;
    if (br_synth_write(path, 500, 200, 11, &err) < 0) fail_msg("%s", err.msg);
    br_dataset ds;
    if (br_dataset_load(path, &ds, &err) < 0) fail_msg("%s", err.msg);

    int32_t *want = malloc(((size_t)ds.n_items + 1) * sizeof *want);
    assert_non_null(want);
    brute_force(&ds, want);
    int32_t with_neighbour = 0;
    for (int32_t i = 1; i <= ds.n_items; i++) with_neighbour += want[i] != 0;
    assert_true(with_neighbour > ds.n_items / 2);

    /* same answer, bit for bit, whatever the number of threads */
    const int threads[] = {1, 3, 8};
    int saved = omp_get_max_threads();
    for (size_t t = 0; t < 3; t++) {
        omp_set_num_threads(threads[t]);
        br_item_sim sim;
        assert_int_equal(br_item_sim_build(&ds, &sim, &err), 0);
        assert_memory_equal(sim.most_similar, want, ((size_t)ds.n_items + 1) * sizeof *want);
        br_item_sim_free(&sim);
    }
    omp_set_num_threads(saved);
    free(want);
    br_dataset_free(&ds);
    unlink(path);
}

/* Beauty, when the shared data is present: the build time, and every item
 * of a training part shared with another item has a neighbour. */
static void test_item_sim_beauty(void **state) {
    const char *dir = test_shared_data_dir();
    if (!dir) skip();
    char path[512];
    snprintf(path, sizeof path, "%s/Beauty.txt", dir);
    if (access(path, R_OK) != 0) skip();
    br_dataset ds;
    br_item_sim sim;
    br_error err;
    if (br_dataset_load(path, &ds, &err) < 0) fail_msg("%s", err.msg);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(br_item_sim_build(&ds, &sim, &err), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    print_message("Beauty ItemCF-IUF: %.3f s on %d threads\n", s, omp_get_max_threads());
    int32_t with = 0;
    for (int32_t i = 1; i <= ds.n_items; i++) {
        int32_t j = sim.most_similar[i];
        assert_true(j >= 0 && j <= ds.n_items && j != i);
        with += j != 0;
    }
    assert_true(with > ds.n_items / 2);
    br_item_sim_free(&sim);
    br_dataset_free(&ds);
}

/* ---- Gamma / Beta ---- */

/* Sample mean and variance against closed forms, 5 standard errors (the
 * variance's error from the sample's fourth central moment). */
static void check_moments(const double *x, int64_t n, double mean, double var) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m += x[i];
    m /= (double)n;
    double m2 = 0, m4 = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (x[i] - m) * (x[i] - m);
        m2 += d;
        m4 += d * d;
    }
    m2 /= (double)(n - 1);
    m4 /= (double)n;
    double se_mean = sqrt(var / (double)n), se_var = sqrt((m4 - m2 * m2) / (double)n);
    if (fabs(m - mean) > 5 * se_mean || fabs(m2 - var) > 5 * se_var)
        fail_msg("mean %g (want %g, se %g), var %g (want %g, se %g)", m, mean, se_mean, m2, var,
                 se_var);
}

static void test_beta_moments(void **state) {
    enum { N = 200000 };
    const double shapes[][2] = {{0.2, 0.2}, {0.4, 0.4}, {0.5, 0.5}, {2, 2}, {1, 3}, {0.3, 5}};
    double *x = malloc(N * sizeof *x);
    assert_non_null(x);
    br_rng r;
    br_rng_seed(&r, 12, 0);
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        double a = shapes[k][0], b = shapes[k][1];
        for (int64_t i = 0; i < N; i++) {
            x[i] = br_rng_beta(&r, a, b);
            assert_true(x[i] >= 0.0 && x[i] <= 1.0);
        }
        double s = a + b;
        check_moments(x, N, a / s, a * b / (s * s * (s + 1)));
    }
    free(x);
}

/* Tiny shapes: Gamma draws underflow as numbers but not as logs, so Beta
 * stays in [0, 1] with mean a / (a + b); at denormal shapes both logs are
 * -inf and the Bernoulli limit takes over. */
static void test_beta_tiny_shapes(void **state) {
    enum { N = 20000 };
    const double shapes[][2] = {{1e-3, 1e-3}, {1e-200, 3e-200}, {1e-320, 1e-320}};
    br_rng r;
    br_rng_seed(&r, 13, 0);
    for (size_t k = 0; k < 3; k++) {
        double a = shapes[k][0], b = shapes[k][1], sum = 0;
        for (int i = 0; i < N; i++) {
            double x = br_rng_beta(&r, a, b);
            assert_true(x >= 0.0 && x <= 1.0);
            sum += x;
        }
        /* the draws are (nearly) Bernoulli: sd of the mean <= 0.5/sqrt(N) */
        double p = a / (a + b);
        assert_true(fabs(sum / N - p) < 5 * 0.5 / sqrt((double)N));
    }
}

static void test_gamma_moments(void **state) {
    enum { N = 200000 };
    const double shapes[] = {0.1, 0.4, 1.0, 2.5, 10.0};
    double *x = malloc(N * sizeof *x);
    assert_non_null(x);
    br_rng r;
    br_rng_seed(&r, 14, 0);
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        for (int64_t i = 0; i < N; i++) {
            x[i] = br_rng_gamma(&r, shapes[k]);
            assert_true(x[i] >= 0.0 && isfinite(x[i]));
        }
        check_moments(x, N, shapes[k], shapes[k]); /* Gamma(a, 1): mean = var = a */
    }
    free(x);
}

static void test_draws_deterministic(void **state) {
    br_rng r1, r2;
    br_rng_seed(&r1, 15, 2);
    br_rng_seed(&r2, 15, 2);
    for (int i = 0; i < 1000; i++) {
        assert_true(br_rng_beta(&r1, 0.4, 0.4) == br_rng_beta(&r2, 0.4, 0.4));
        assert_true(br_rng_gamma(&r1, 0.7) == br_rng_gamma(&r2, 0.7));
    }
    /* A distribution made once draws what br_rng_beta draws, shape by shape. */
    static const double shapes[][2] = {{0.4, 0.4}, {0.2, 1.5}, {2.0, 3.0}, {1e-3, 1e-3}};
    for (int k = 0; k < 4; k++) {
        const br_beta_dist dist = br_beta_dist_make(shapes[k][0], shapes[k][1]);
        for (int i = 0; i < 1000; i++)
            assert_true(br_beta_draw(&r1, &dist) == br_rng_beta(&r2, shapes[k][0], shapes[k][1]));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reorder_short),
        cmocka_unit_test(test_reorder_window),
        cmocka_unit_test(test_reorder_deterministic),
        cmocka_unit_test(test_substitute_count),
        cmocka_unit_test(test_substitute_uniform_positions),
        cmocka_unit_test(test_substitute_fallback),
        cmocka_unit_test(test_substitute_deterministic),
        cmocka_unit_test(test_crop_window),
        cmocka_unit_test(test_crop_deterministic),
        cmocka_unit_test(test_mask_count),
        cmocka_unit_test(test_mask_uniform_positions),
        cmocka_unit_test(test_mask_deterministic),
        cmocka_unit_test(test_item_sim_hand),
        cmocka_unit_test(test_item_sim_brute_force),
        cmocka_unit_test(test_item_sim_beauty),
        cmocka_unit_test(test_beta_moments),
        cmocka_unit_test(test_beta_tiny_shapes),
        cmocka_unit_test(test_gamma_moments),
        cmocka_unit_test(test_draws_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
