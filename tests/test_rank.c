/* Full ranking, metrics and top-k: hand-computed cases, a randomized
 * comparison with a naive reference across the block boundaries, top-k /
 * rank consistency and argument errors. */
#include "testutil.h"

#include <math.h>
#include <omp.h>

#include "eval/rank.h"

/* Mirrors the tile sizes in src/eval/rank.c, to aim sizes at the boundaries. */
#define USER_BLOCK 256
#define ITEM_BLOCK 4096

/* ---- Small helpers -------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int32_t rng_below(uint64_t *s, int32_t n) { return (int32_t)(rng_next(s) % (uint64_t)n); }
static float rng_float(uint64_t *s) { return (float)(rng_next(s) >> 40) * 0x1p-24f - 0.5f; }

/* Integer values in [-range, range]: every dot product is exact in float, so
 * the reference's double scores are the GEMM's scores, ties included. */
static float *int_matrix(uint64_t *s, int64_t rows, int32_t dim, int32_t range) {
    float *m = malloc((size_t)rows * dim * sizeof(float));
    assert_non_null(m);
    for (int64_t i = 0; i < rows * dim; i++) m[i] = (float)(rng_below(s, 2 * range + 1) - range);
    return m;
}

static float *float_matrix(uint64_t *s, int64_t rows, int32_t dim) {
    float *m = malloc((size_t)rows * dim * sizeof(float));
    assert_non_null(m);
    for (int64_t i = 0; i < rows * dim; i++) m[i] = rng_float(s);
    return m;
}

typedef struct excl_lists {
    int64_t *off;
    int32_t *items;
    br_exclusions ex;
} excl_lists;

/* Random lists with duplicates, item 0 and (when answer is given) sometimes
 * the user's own answer or, with period > 0, items whose rows repeat the
 * answer's (see check_rank_vs_naive); a few users exclude a large share of
 * the catalogue. */
static excl_lists random_exclusions(uint64_t *s, int32_t n_users, int32_t n_items,
                                    const int32_t *answer, int32_t period) {
    excl_lists l;
    l.off = malloc(((size_t)n_users + 1) * sizeof(int64_t));
    assert_non_null(l.off);
    l.off[0] = 0;
    for (int32_t u = 0; u < n_users; u++) {
        int32_t len = rng_below(s, 12);
        if (rng_below(s, 50) == 0) len += n_items / 2;
        l.off[u + 1] = l.off[u] + len;
    }
    l.items = malloc((size_t)l.off[n_users] * sizeof(int32_t) + 1);
    assert_non_null(l.items);
    for (int32_t u = 0; u < n_users; u++) {
        for (int64_t p = l.off[u]; p < l.off[u + 1]; p++) {
            const int32_t pick = rng_below(s, 10);
            if (pick == 0) l.items[p] = 0;
            else if (pick == 1 && answer) l.items[p] = answer[u];
            else if (pick == 2 && p > l.off[u]) l.items[p] = l.items[p - 1];
            else if (pick >= 3 && pick <= 5 && answer && period > 0)
                l.items[p] = 1 + (answer[u] - 1) % period + period * rng_below(s, n_items / period);
            else l.items[p] = 1 + rng_below(s, n_items);
        }
    }
    l.ex = (br_exclusions){l.off, l.items};
    return l;
}

static void excl_free(excl_lists *l) {
    free(l->off);
    free(l->items);
}

/* Scores of one user in double (exact for integer data); scores[0] unused. */
static void naive_scores(const float *user, const float *item_emb, int32_t n_items, int32_t dim,
                         double *scores) {
    for (int32_t j = 1; j <= n_items; j++) {
        double t = 0.0;
        for (int32_t k = 0; k < dim; k++) t += (double)user[k] * item_emb[(size_t)j * dim + k];
        scores[j] = t;
    }
}

/* Marks user u's excluded items (0..n_items) in mark[]. */
static void mark_excluded(const br_exclusions *ex, int32_t u, char *mark, int32_t n_items) {
    memset(mark, 0, (size_t)n_items + 1);
    if (!ex) return;
    for (int64_t p = ex->offsets[u]; p < ex->offsets[u + 1]; p++) mark[ex->items[p]] = 1;
}

static int64_t naive_rank(const double *sc, const char *mark, int32_t n_items, int32_t a) {
    int64_t r = 0;
    for (int32_t j = 1; j <= n_items; j++) {
        if (j == a || mark[j]) continue;
        r += sc[j] > sc[a] || (sc[j] == sc[a] && j < a);
    }
    return r;
}

/* Checks br_rank_answers against the naive definition on integer data. With
 * period > 0, item j repeats the row of item 1 + (j - 1) % period: a few exact
 * ties per answer, spread over the blocks, and excluded on purpose. */
static void check_rank_vs_naive(uint64_t seed, int32_t n_users, int32_t n_items, int32_t dim,
                                int32_t range, int32_t period, int with_exclusions) {
    uint64_t s = seed;
    float *users = int_matrix(&s, n_users, dim, range);
    float *items = int_matrix(&s, (int64_t)n_items + 1, dim, range);
    for (int32_t j = period + 1; period > 0 && j <= n_items; j++)
        memcpy(items + (size_t)j * dim, items + (size_t)(1 + (j - 1) % period) * dim,
               (size_t)dim * sizeof(float));
    int32_t *answer = malloc((size_t)n_users * sizeof(int32_t));
    int64_t *rank = malloc((size_t)n_users * sizeof(int64_t));
    double *sc = malloc(((size_t)n_items + 1) * sizeof(double));
    char *mark = malloc((size_t)n_items + 1);
    assert_true(answer && rank && sc && mark);
    for (int32_t u = 0; u < n_users; u++) answer[u] = 1 + rng_below(&s, n_items);
    excl_lists l = random_exclusions(&s, n_users, n_items, answer, period);
    const br_exclusions *ex = with_exclusions ? &l.ex : NULL;

    br_error err;
    assert_int_equal(br_rank_answers(users, n_users, items, n_items, dim, answer, ex, rank, &err),
                     0);
    for (int32_t u = 0; u < n_users; u++) {
        naive_scores(users + (size_t)u * dim, items, n_items, dim, sc);
        mark_excluded(ex, u, mark, n_items);
        mark[answer[u]] = 0;
        const int64_t want = naive_rank(sc, mark, n_items, answer[u]);
        if (rank[u] != want)
            fail_msg("n_users %d n_items %d dim %d range %d period %d: user %d answer %d rank "
                     "%lld, want %lld",
                     n_users, n_items, dim, range, period, u, answer[u], (long long)rank[u],
                     (long long)want);
    }
    excl_free(&l);
    free(users);
    free(items);
    free(answer);
    free(rank);
    free(sc);
    free(mark);
}

/* ---- Hand-computed cases ------------------------------------------------------ */

/* dim 2, 6 items; row 0 (padding) would beat everything if it were ranked. */
static const float tiny_items[7 * 2] = {
    100, 100, /* 0: padding */
    1, 0,     /* 1 */
    0, 1,     /* 2 */
    1, 1,     /* 3 */
    2, 0,     /* 4 */
    1, 0,     /* 5: same as item 1 */
    -1, 0,    /* 6 */
};
/* User x = (1, 0): scores 1 0 1 2 1 -1, order 4 1 3 5 2 6.
 * User y = (0, 1): scores 0 1 1 0 0 0, order 2 3 1 4 5 6. */
static const float user_x[2] = {1, 0}, user_y[2] = {0, 1};

static void test_rank_tiny_ties(void **state) {
    float users[12 * 2];
    int32_t answer[12];
    for (int i = 0; i < 12; i++) {
        memcpy(users + 2 * i, i < 6 ? user_x : user_y, sizeof user_x);
        answer[i] = 1 + i % 6;
    }
    const int64_t want[12] = {1, 4, 2, 0, 3, 5, /* user x, answers 1..6 */
                              2, 0, 1, 3, 4, 5 /* user y, answers 1..6 */};
    int64_t rank[12];
    br_error err;
    assert_int_equal(br_rank_answers(users, 12, tiny_items, 6, 2, answer, NULL, rank, &err), 0);
    assert_memory_equal(rank, want, sizeof want);
}

static void test_rank_tiny_exclusions(void **state) {
    const float users[6 * 2] = {1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1};
    const int32_t answer[6] = {5, 3, 2, 6, 1, 4};
    /* 0: answer 5 (above: 4 1 3); item 1 listed twice (removed once), the
     *    answer itself (kept), item 6 (below: no effect) and padding 0.
     * 1: answer 3 (above: 4 1); item 4 three times and the answer.
     * 2: answer 2 (rank 0 already); items 3 and 2 twice.
     * 3: answer 6 (above: 2 3 1 4 5 by id among ties); all other items.
     * 4: answer 1 (above: 4); item 5 ties with 1 but comes after it: no effect.
     * 5: answer 4 (above: 2 3 1); empty list. */
    const int64_t off[7] = {0, 5, 9, 12, 17, 18, 18};
    const int32_t list[18] = {1, 5, 1, 6, 0, 4, 4, 3, 4, 3, 2, 2, 1, 2, 3, 4, 5, 5};
    const br_exclusions ex = {off, list};
    const int64_t want[6] = {2, 1, 0, 0, 1, 3};
    int64_t rank[6];
    br_error err;
    assert_int_equal(br_rank_answers(users, 6, tiny_items, 6, 2, answer, &ex, rank, &err), 0);
    assert_memory_equal(rank, want, sizeof want);
}

static void test_rank_csr_with_base_offset(void **state) {
    /* Offsets need not start at 0: a slice of a bigger CSR array. */
    const int64_t off[3] = {3, 5, 6};
    const int32_t list[6] = {9, 9, 9, 4, 1, 2};
    const br_exclusions ex = {off, list};
    const float users[4] = {1, 0, 0, 1};
    const int32_t answer[2] = {5, 1};
    int64_t rank[2];
    br_error err;
    assert_int_equal(br_rank_answers(users, 2, tiny_items, 6, 2, answer, &ex, rank, &err), 0);
    assert_int_equal(rank[0], 1); /* above 5: 4 1 3, minus 4 and 1 */
    assert_int_equal(rank[1], 1); /* above 1: 2 3, minus 2 */
}

static void test_topk_tiny(void **state) {
    const float users[4] = {1, 0, 0, 1};
    int32_t items[2 * 8];
    float scores[2 * 8];
    br_error err;
    assert_int_equal(br_topk(users, 2, tiny_items, 6, 2, 3, NULL, items, scores, &err), 0);
    const int32_t want3[6] = {4, 1, 3, 2, 3, 1};
    const float want3_s[6] = {2, 1, 1, 1, 1, 0};
    assert_memory_equal(items, want3, sizeof want3);
    assert_memory_equal(scores, want3_s, sizeof want3_s);

    /* k beyond the remaining items: padded with item 0 and -inf. */
    const int64_t off[3] = {0, 2, 5};
    const int32_t list[5] = {4, 4, 3, 0, 6};
    const br_exclusions ex = {off, list};
    assert_int_equal(br_topk(users, 2, tiny_items, 6, 2, 8, &ex, items, scores, &err), 0);
    const int32_t want8[16] = {1, 3, 5, 2, 6, 0, 0, 0, 2, 1, 4, 5, 0, 0, 0, 0};
    const float ninf = -INFINITY;
    const float want8_s[16] = {1, 1, 1, 0, -1, ninf, ninf, ninf, 1, 0, 0, 0, ninf, ninf, ninf, ninf};
    assert_memory_equal(items, want8, sizeof want8);
    assert_memory_equal(scores, want8_s, sizeof want8_s);
}

static void test_rank_nan_answer_is_last(void **state) {
    float items[7 * 2];
    memcpy(items, tiny_items, sizeof items);
    items[2 * 3] = NAN; /* item 3 */
    const float users[2] = {1, 0};
    const int32_t answer[1] = {3};
    const int64_t off[2] = {0, 3};
    const int32_t list[3] = {6, 3, 6};
    const br_exclusions ex = {off, list};
    int64_t rank[1];
    br_error err;
    assert_int_equal(br_rank_answers(users, 1, items, 6, 2, answer, &ex, rank, &err), 0);
    assert_int_equal(rank[0], 4); /* 5 candidates left, the answer last */
}

/* ---- Metrics -------------------------------------------------------------------- */

static void test_metrics_hand(void **state) {
    const int64_t rank[8] = {0, 4, 5, 9, 10, 19, 20, 100};
    br_metrics m;
    br_metrics_from_ranks(rank, 8, &m);
    assert_int_equal(m.n, 8);
    assert_int_equal(br_cutoffs[0], 5);
    assert_int_equal(br_cutoffs[1], 10);
    assert_int_equal(br_cutoffs[2], 20);
    assert_float_equal(m.hr[0], 2.0 / 8, 1e-15);
    assert_float_equal(m.hr[1], 4.0 / 8, 1e-15);
    assert_float_equal(m.hr[2], 6.0 / 8, 1e-15);
    const double g0 = 1.0, g4 = 1.0 / log2(6), g5 = 1.0 / log2(7), g9 = 1.0 / log2(11),
                 g10 = 1.0 / log2(12), g19 = 1.0 / log2(21);
    assert_float_equal(m.ndcg[0], (g0 + g4) / 8, 1e-15);
    assert_float_equal(m.ndcg[1], (g0 + g4 + g5 + g9) / 8, 1e-15);
    assert_float_equal(m.ndcg[2], (g0 + g4 + g5 + g9 + g10 + g19) / 8, 1e-15);
    const double mrr = 1.0 + 1.0 / 5 + 1.0 / 6 + 1.0 / 10 + 1.0 / 11 + 1.0 / 20 + 1.0 / 21 + 1.0 / 101;
    assert_float_equal(m.mrr, mrr / 8, 1e-15);
}

static void test_metrics_at_cutoffs(void **state) {
    /* Rank K-1 is a hit at K, rank K is not. */
    for (int c = 0; c < BR_N_CUTOFFS; c++) {
        const int K = br_cutoffs[c];
        br_metrics m;
        const int64_t in = K - 1, out = K;
        br_metrics_from_ranks(&in, 1, &m);
        assert_float_equal(m.hr[c], 1.0, 0);
        assert_float_equal(m.ndcg[c], 1.0 / log2(K + 1.0), 1e-15);
        assert_float_equal(m.mrr, 1.0 / K, 1e-15);
        br_metrics_from_ranks(&out, 1, &m);
        assert_float_equal(m.hr[c], 0.0, 0);
        assert_float_equal(m.ndcg[c], 0.0, 0);
        if (c + 1 < BR_N_CUTOFFS) assert_float_equal(m.hr[c + 1], 1.0, 0);
    }
    /* Rank 0: every metric is 1; NDCG = 1 / log2(2). */
    const int64_t zero = 0;
    br_metrics m;
    br_metrics_from_ranks(&zero, 1, &m);
    for (int c = 0; c < BR_N_CUTOFFS; c++) {
        assert_float_equal(m.hr[c], 1.0, 0);
        assert_float_equal(m.ndcg[c], 1.0, 0);
    }
    assert_float_equal(m.mrr, 1.0, 0);
}

static void test_metrics_empty(void **state) {
    br_metrics m;
    memset(&m, 0x5a, sizeof m);
    br_metrics_from_ranks(NULL, 0, &m);
    assert_int_equal(m.n, 0);
    for (int c = 0; c < BR_N_CUTOFFS; c++) {
        assert_float_equal(m.hr[c], 0.0, 0);
        assert_float_equal(m.ndcg[c], 0.0, 0);
    }
    assert_float_equal(m.mrr, 0.0, 0);
}

/* ---- Randomized comparison with the naive reference ------------------------------ */

#define assert_near(a, b) assert_true(fabs((a) - (b)) < 1e-12)

/* The reference code's protocol by hand (dim 1, so scores are the item
 * values): seen items score 0 instead of leaving, the padding row 0 is
 * ranked, and a repeated answer ties with the other seen items, its metrics
 * averaged over the tied places. Item blocks of 4096 are crossed too. */
static void test_zero_scored_hand(void **state) {
    (void)state;
    const float items[7] = {0.05f, 3.0f, 2.0f, 1.0f, -1.0f, -2.0f, -3.0f}, users[3] = {1.0f, 1.0f, 1.0f};
    const int32_t answer[3] = {3, 5, 2};
    const int64_t off[4] = {0, 1, 3, 6};
    const int32_t ex_items[6] = {1, 1, 2, 2, 4, 6};
    const br_exclusions ex = {off, ex_items};
    br_metrics m;
    br_error err;
    assert_int_equal(br_metrics_zero_scored(users, 3, items, 6, 1, answer, &ex, &m, &err), 0);
    /* user 0: only item 2 above (item 1 is seen): rank 1. user 1: the padding
     * row, the two zeroed seen items and items 3, 4 above: rank 5. user 2
     * (repeat): score 0 below row 0 and items 1, 3, tied with seen 4 and 6:
     * rank 3, 4 or 5. */
    const double l = 1.0 / 3.0;
    assert_near(m.hr[0], (1.0 + 0.0 + 2.0 * l) * l);
    assert_near(m.ndcg[0], (1.0 / log2(3.0) + (1.0 / log2(5.0) + 1.0 / log2(6.0)) * l) * l);
    assert_near(m.hr[1], 1.0);
    assert_near(m.ndcg[1],
                        (1.0 / log2(3.0) + 1.0 / log2(7.0) + (1.0 / log2(5.0) + 1.0 / log2(6.0) + 1.0 / log2(7.0)) * l) * l);
    assert_near(m.mrr, (0.5 + 1.0 / 6.0 + (0.25 + 0.2 + 1.0 / 6.0) * l) * l);
    assert_int_equal(m.n, 3);

    /* Without exclusions and with distinct scores it is the plain rank, the
     * padding row counted: against br_rank_answers over a catalogue of
     * several item blocks. */
    enum { N = 9000, U = 5 };
    float *emb = malloc((N + 1) * sizeof(float));
    assert_non_null(emb);
    for (int32_t i = 0; i <= N; i++) emb[i] = (float)((i * 7919) % (N + 1)) - 4500.0f;
    const float u5[U] = {1.0f, -1.0f, 0.5f, 2.0f, -0.25f};
    const int32_t a5[U] = {1, 4500, 8999, 17, 9000};
    int64_t rank[U];
    assert_int_equal(br_rank_answers(u5, U, emb, N, 1, a5, NULL, rank, &err), 0);
    assert_int_equal(br_metrics_zero_scored(u5, U, emb, N, 1, a5, NULL, &m, &err), 0);
    double mrr = 0.0;
    for (int u = 0; u < U; u++) mrr += 1.0 / ((double)rank[u] + 1.0 + (u5[u] * emb[0] > u5[u] * emb[a5[u]]));
    assert_near(m.mrr, mrr / U);
    free(emb);
}

static void test_rank_random_item_boundaries(void **state) {
    const int32_t n_items[] = {1, 2, ITEM_BLOCK - 1, ITEM_BLOCK, ITEM_BLOCK + 1, 2 * ITEM_BLOCK + 1};
    for (size_t i = 0; i < sizeof n_items / sizeof *n_items; i++) {
        /* Small range: many exact ties (band overflow and recount); large
         * range: few ties (deferred comparisons settled from the band). */
        check_rank_vs_naive(100 + i, 300, n_items[i], 8, 2, 0, 1);
        check_rank_vs_naive(200 + i, 300, n_items[i], 16, 300, 0, 1);
    }
    /* Exact ties across blocks that fit the band, some of them excluded. */
    check_rank_vs_naive(250, 300, 2 * ITEM_BLOCK + 1, 16, 300, 1000, 1);
    check_rank_vs_naive(251, 300, 3 * ITEM_BLOCK, 16, 300, ITEM_BLOCK - 3, 1);
}

static void test_rank_random_user_boundaries(void **state) {
    const int32_t n_users[] = {1, USER_BLOCK - 1, USER_BLOCK, USER_BLOCK + 1, 2 * USER_BLOCK + 3};
    for (size_t i = 0; i < sizeof n_users / sizeof *n_users; i++) {
        check_rank_vs_naive(300 + i, n_users[i], ITEM_BLOCK + 7, 5, 3, 0, 1);
        check_rank_vs_naive(400 + i, n_users[i], 1000, 3, 1, 0, 0);
    }
}

static void test_rank_zero_users_all_tied(void **state) {
    /* All scores are exactly 0: ties everywhere, decided by item id, with
     * answers in the first, middle and last block. */
    const int32_t n_items = 2 * ITEM_BLOCK + 5, dim = 4;
    uint64_t s = 7;
    float *items = int_matrix(&s, n_items + 1, dim, 5);
    float users[3 * 4] = {0};
    const int32_t answer[3] = {3, ITEM_BLOCK + 10, n_items};
    const int64_t off[4] = {0, 0, 3, 5};
    const int32_t list[5] = {1, 1, 2 * ITEM_BLOCK, 1, n_items};
    const br_exclusions ex = {off, list};
    int64_t rank[3];
    br_error err;
    assert_int_equal(br_rank_answers(users, 3, items, n_items, dim, answer, &ex, rank, &err), 0);
    assert_int_equal(rank[0], 2);
    assert_int_equal(rank[1], ITEM_BLOCK + 9 - 1);
    assert_int_equal(rank[2], n_items - 1 - 1);
    free(items);
}

static void test_rank_zero_users(void **state) {
    br_error err;
    assert_int_equal(br_rank_answers(NULL, 0, tiny_items, 6, 2, NULL, NULL, NULL, &err), 0);
}

/* ---- Top-k ------------------------------------------------------------------------- */

/* Naive top-k: best remaining item by (score desc, id asc), k times. */
static void naive_topk(const double *sc, char *mark, int32_t n_items, int32_t k, int32_t *out) {
    for (int32_t r = 0; r < k; r++) {
        int32_t best = 0;
        for (int32_t j = 1; j <= n_items; j++) {
            if (!mark[j] && (best == 0 || sc[j] > sc[best])) best = j;
        }
        out[r] = best;
        if (best) mark[best] = 1;
    }
}

static void check_topk_vs_naive(uint64_t seed, int32_t n_users, int32_t n_items, int32_t dim,
                                int32_t k) {
    uint64_t s = seed;
    float *users = int_matrix(&s, n_users, dim, 2);
    float *items = int_matrix(&s, (int64_t)n_items + 1, dim, 2);
    excl_lists l = random_exclusions(&s, n_users, n_items, NULL, 0);
    int32_t *got = malloc((size_t)n_users * k * sizeof(int32_t));
    float *got_s = malloc((size_t)n_users * k * sizeof(float));
    int32_t *want = malloc((size_t)k * sizeof(int32_t));
    double *sc = malloc(((size_t)n_items + 1) * sizeof(double));
    char *mark = malloc((size_t)n_items + 1);
    assert_true(got && got_s && want && sc && mark);
    br_error err;
    assert_int_equal(br_topk(users, n_users, items, n_items, dim, k, &l.ex, got, got_s, &err), 0);
    for (int32_t u = 0; u < n_users; u++) {
        naive_scores(users + (size_t)u * dim, items, n_items, dim, sc);
        mark_excluded(&l.ex, u, mark, n_items);
        naive_topk(sc, mark, n_items, k, want);
        for (int32_t r = 0; r < k; r++) {
            const float want_s = want[r] ? (float)sc[want[r]] : -INFINITY;
            if (got[(size_t)u * k + r] != want[r] || got_s[(size_t)u * k + r] != want_s)
                fail_msg("n_items %d k %d: user %d position %d: item %d (%g), want %d (%g)",
                         n_items, k, u, r, got[(size_t)u * k + r],
                         (double)got_s[(size_t)u * k + r], want[r], (double)want_s);
        }
    }
    excl_free(&l);
    free(users);
    free(items);
    free(got);
    free(got_s);
    free(want);
    free(sc);
    free(mark);
}

static void test_topk_random_vs_naive(void **state) {
    check_topk_vs_naive(11, 40, 1, 3, 10);
    check_topk_vs_naive(12, 40, 13, 3, 10);
    check_topk_vs_naive(13, USER_BLOCK + 2, ITEM_BLOCK + 1, 4, 10);
    check_topk_vs_naive(14, 10, 2 * ITEM_BLOCK - 1, 6, 37);
}

/* The item at position r of br_topk has rank r under br_rank_answers, with
 * the same exclusions: checked on non-integer data, where only bit-identical
 * scores make the two agree on near-ties. */
static void check_topk_rank_consistent(uint64_t seed, int32_t n_users, int32_t n_items,
                                       int32_t dim, int32_t k, int tied_items) {
    uint64_t s = seed;
    float *users = float_matrix(&s, n_users, dim);
    float *items = float_matrix(&s, (int64_t)n_items + 1, dim);
    /* Rows repeated one block and a bit later: equal scores in different
     * tiles, ordered by id, with the earlier copy seen before the answer. */
    for (int32_t j = ITEM_BLOCK + 2; tied_items && j <= n_items; j += 2)
        memcpy(items + (size_t)j * dim, items + (size_t)(j - ITEM_BLOCK - 1) * dim,
               (size_t)dim * sizeof(float));
    excl_lists l = random_exclusions(&s, n_users, n_items, NULL, 0);
    int32_t *top = malloc((size_t)n_users * k * sizeof(int32_t));
    float *top_s = malloc((size_t)n_users * k * sizeof(float));
    int32_t *answer = malloc((size_t)n_users * sizeof(int32_t));
    int64_t *rank = malloc((size_t)n_users * sizeof(int64_t));
    assert_true(top && top_s && answer && rank);
    br_error err;
    assert_int_equal(br_topk(users, n_users, items, n_items, dim, k, &l.ex, top, top_s, &err), 0);
    for (int32_t r = 0; r < k; r++) {
        for (int32_t u = 0; u < n_users; u++) answer[u] = top[(size_t)u * k + r];
        for (int32_t u = 0; u < n_users; u++) {
            if (answer[u] == 0) answer[u] = 1; /* padding: rank it against item 1 instead */
        }
        assert_int_equal(
            br_rank_answers(users, n_users, items, n_items, dim, answer, &l.ex, rank, &err), 0);
        for (int32_t u = 0; u < n_users; u++) {
            if (top[(size_t)u * k + r] == 0) continue;
            if (rank[u] != r)
                fail_msg("n_items %d: user %d position %d item %d has rank %lld", n_items, u, r,
                         answer[u], (long long)rank[u]);
            if (r > 0) assert_true(top_s[(size_t)u * k + r - 1] >= top_s[(size_t)u * k + r]);
        }
    }
    excl_free(&l);
    free(users);
    free(items);
    free(top);
    free(top_s);
    free(answer);
    free(rank);
}

static void test_topk_rank_consistent(void **state) {
    check_topk_rank_consistent(21, USER_BLOCK + 5, 3 * ITEM_BLOCK + 11, 24, 12, 1);
    check_topk_rank_consistent(22, 60, 2 * ITEM_BLOCK, 7, 20, 0);
    check_topk_rank_consistent(23, 9, 6, 3, 8, 0); /* k beyond the catalogue */
}

/* With several user blocks (BLAS single-threaded inside the region) the
 * thread count changes the schedule, not the results. */
static void test_thread_count_invariance(void **state) {
    uint64_t s = 31;
    const int32_t n_users = 3 * USER_BLOCK + 1, n_items = ITEM_BLOCK + 100, dim = 16, k = 5;
    float *users = float_matrix(&s, n_users, dim);
    float *items = float_matrix(&s, n_items + 1, dim);
    int32_t *answer = malloc((size_t)n_users * sizeof(int32_t));
    int64_t *r1 = malloc((size_t)n_users * sizeof(int64_t)), *r2 = malloc((size_t)n_users * sizeof(int64_t));
    int32_t *t1 = malloc((size_t)n_users * k * sizeof(int32_t)), *t2 = malloc((size_t)n_users * k * sizeof(int32_t));
    assert_true(answer && r1 && r2 && t1 && t2);
    float *sc = malloc((size_t)n_users * k * sizeof(float));
    assert_non_null(sc);
    for (int32_t u = 0; u < n_users; u++) answer[u] = 1 + rng_below(&s, n_items);
    br_error err;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(br_rank_answers(users, n_users, items, n_items, dim, answer, NULL, r1, &err), 0);
    assert_int_equal(br_topk(users, n_users, items, n_items, dim, k, NULL, t1, sc, &err), 0);
    omp_set_num_threads(3);
    assert_int_equal(br_rank_answers(users, n_users, items, n_items, dim, answer, NULL, r2, &err), 0);
    assert_int_equal(br_topk(users, n_users, items, n_items, dim, k, NULL, t2, sc, &err), 0);
    omp_set_num_threads(saved);
    assert_memory_equal(r1, r2, (size_t)n_users * sizeof(int64_t));
    assert_memory_equal(t1, t2, (size_t)n_users * k * sizeof(int32_t));
    free(users);
    free(items);
    free(answer);
    free(r1);
    free(r2);
    free(t1);
    free(t2);
    free(sc);
}

/* ---- Argument errors ---------------------------------------------------------------- */

static void expect_rank_error(const float *users, int32_t n_users, const float *items,
                              int32_t n_items, int32_t dim, const int32_t *answer,
                              const br_exclusions *ex, int64_t *rank, const char *needle) {
    br_error err = {{0}};
    assert_int_equal(
        br_rank_answers(users, n_users, items, n_items, dim, answer, ex, rank, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_argument_errors(void **state) {
    const float users[4] = {1, 0, 0, 1};
    int32_t answer[2] = {1, 6};
    int64_t rank[2];
    expect_rank_error(users, -1, tiny_items, 6, 2, answer, NULL, rank, "n_users = -1");
    expect_rank_error(users, 2, tiny_items, 0, 2, answer, NULL, rank, "n_items = 0");
    expect_rank_error(users, 2, tiny_items, 6, 0, answer, NULL, rank, "dim = 0");
    expect_rank_error(users, 2, tiny_items, 6, -3, answer, NULL, rank, "dim = -3");
    expect_rank_error(NULL, 2, tiny_items, 6, 2, answer, NULL, rank, "user_repr is NULL");
    expect_rank_error(users, 2, NULL, 6, 2, answer, NULL, rank, "item_emb is NULL");
    expect_rank_error(users, 2, tiny_items, 6, 2, NULL, NULL, rank, "answer is NULL");
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, NULL, NULL, "rank_out is NULL");
    answer[1] = 0;
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, NULL, rank, "answer[1] = 0 is outside 1..6");
    answer[1] = 7;
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, NULL, rank, "answer[1] = 7 is outside 1..6");
    answer[1] = 6;

    const int64_t off[3] = {0, 1, 2};
    const int32_t bad_item[2] = {3, 7}, neg_item[2] = {-1, 2};
    br_exclusions ex = {off, bad_item};
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, &ex, rank,
                      "user 1 excludes item 7 outside 0..6");
    ex.items = neg_item;
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, &ex, rank, "item -1 outside 0..6");
    const int64_t bad_off[3] = {0, 2, 1};
    ex = (br_exclusions){bad_off, bad_item};
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, &ex, rank, "offsets[1..2]");
    ex = (br_exclusions){NULL, bad_item};
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, &ex, rank, "offsets is NULL");
    ex = (br_exclusions){off, NULL};
    expect_rank_error(users, 2, tiny_items, 6, 2, answer, &ex, rank, "items is NULL");

    int32_t items_out[4];
    float scores_out[4];
    br_error err = {{0}};
    assert_int_equal(br_topk(users, 2, tiny_items, 6, 2, 0, NULL, items_out, scores_out, &err), -1);
    assert_non_null(strstr(err.msg, "k = 0"));
    assert_int_equal(br_topk(users, 2, tiny_items, 6, 0, 2, NULL, items_out, scores_out, &err), -1);
    assert_non_null(strstr(err.msg, "br_topk: dim = 0"));
    assert_int_equal(br_topk(users, 2, tiny_items, 6, 2, 2, NULL, NULL, scores_out, &err), -1);
    assert_non_null(strstr(err.msg, "items_out is NULL"));
    ex = (br_exclusions){off, bad_item};
    assert_int_equal(br_topk(users, 2, tiny_items, 6, 2, 2, &ex, items_out, scores_out, &err), -1);
    assert_non_null(strstr(err.msg, "br_topk: exclusions: user 1 excludes item 7"));
    /* A NULL err is allowed. */
    assert_int_equal(br_topk(users, 2, tiny_items, 6, 2, 0, NULL, items_out, scores_out, NULL), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_tiny_ties),
        cmocka_unit_test(test_zero_scored_hand),
        cmocka_unit_test(test_rank_tiny_exclusions),
        cmocka_unit_test(test_rank_csr_with_base_offset),
        cmocka_unit_test(test_topk_tiny),
        cmocka_unit_test(test_rank_nan_answer_is_last),
        cmocka_unit_test(test_metrics_hand),
        cmocka_unit_test(test_metrics_at_cutoffs),
        cmocka_unit_test(test_metrics_empty),
        cmocka_unit_test(test_rank_random_item_boundaries),
        cmocka_unit_test(test_rank_random_user_boundaries),
        cmocka_unit_test(test_rank_zero_users_all_tied),
        cmocka_unit_test(test_rank_zero_users),
        cmocka_unit_test(test_topk_random_vs_naive),
        cmocka_unit_test(test_topk_rank_consistent),
        cmocka_unit_test(test_thread_count_invariance),
        cmocka_unit_test(test_argument_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
