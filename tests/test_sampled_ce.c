/* The sampled softmax with logQ correction (sampled-ce, train/loss.h):
 * against a direct double-precision implementation of its definition on
 * small cases (repeated draws, accidental hits of both labels, weights,
 * mixup labels, several chunks); finite differences w.r.t. h and the item
 * table; its limit for many negatives; determinism of draws and results;
 * the proposal's frequencies (chi-square) and its pop weights from a
 * dataset. */
#include "loss_util.h"

#include "data/dataset.h"

/* problem_random without negatives; with mixup, token 0's partner label is its own target. */
static void problem_init(problem *p, int32_t T, int32_t N, int D, int mixup, int weighted, br_rng *r) {
    problem_random(p, T, N, D, mixup, weighted, 0, r);
    if (mixup) p->target2[0] = p->target[0];
}

/* Popularity-like weights 1 + (i^2 mod 37) over 1..N. */
static double *skewed_weights(int32_t N) {
    double *w = malloc(((size_t)N + 1) * sizeof *w);
    assert_non_null(w);
    for (int32_t i = 0; i <= N; i++) w[i] = 1.0 + (double)((int64_t)i * i % 37);
    return w;
}

/* The definition, directly: the support of token t is its target, its
 * target2 (when > 0 and different), and every draw that is neither; the
 * labels' logits h.E[i], the draws' h.E[i] - log(K Q(i)). d loss / d logit_j = (wa + wb) p_j - wa [j = a]
 * - wb [j = b]. Accumulates into dh and dE; arg points to K. */
static double direct_ref(const problem *p, const br_xent *x, float gamma, double norm, const void *arg, double *dh,
                         double *dE) {
    const int D = p->D;
    const int32_t K = *(const int32_t *)arg;
    const int32_t *s = br_xent_samples(x);
    int32_t *item = malloc(((size_t)K + 2) * sizeof *item);
    double *z = malloc(((size_t)K + 2) * sizeof *z), *g = malloc(((size_t)K + 2) * sizeof *g);
    assert_true(item && z && g);
    double loss = 0.0;
    for (int32_t t = 0; t < p->T; t++) {
        const int32_t a = p->target[t], b = p->target2 ? p->target2[t] : 0;
        if (a <= 0) continue;
        const double ma = p->mix ? p->mix[t] : 1.0, w = p->weight ? p->weight[t] : 1.0;
        const double wa = b == a ? 1.0 : ma, wb = b > 0 && b != a ? 1.0 - ma : 0.0;
        int n = 0;
        item[n++] = a;
        if (b > 0 && b != a) item[n++] = b;
        const int n_labels = n;
        for (int32_t k = 0; k < K; k++)
            if (s[k] != a && s[k] != b) item[n++] = s[k];
        const float *ht = p->h + (size_t)t * D;
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < n; j++) {
            double v = 0.0;
            for (int d = 0; d < D; d++) v += (double)ht[d] * p->E[(size_t)item[j] * D + d];
            z[j] = j < n_labels ? v : v - log(K * br_xent_proposal(x, item[j]));
            mx = fmax(mx, z[j]);
        }
        for (int j = 0; j < n; j++) sum += exp(z[j] - mx);
        const double lse = mx + log(sum);
        loss += w * (wa * (lse - z[0]) + (wb > 0.0 ? wb * (lse - z[1]) : 0.0));
        for (int j = 0; j < n; j++) g[j] = (wa + wb) * exp(z[j] - lse);
        g[0] -= wa;
        if (b > 0 && b != a) g[1] -= wb;
        for (int j = 0; j < n; j++) {
            const double gj = w * g[j] * norm;
            for (int d = 0; d < D; d++) {
                dh[(size_t)t * D + d] += gj * p->E[(size_t)item[j] * D + d];
                dE[(size_t)item[j] * D + d] += gj * ht[d];
            }
        }
    }
    free(item), free(z), free(g);
    return loss * norm;
}

/* Repeated draws and accidental hits (of target or target2) in the draw of
 * x for problem p. */
static void count_hits(const problem *p, const br_xent *x, int32_t K, int *dups, int *hits_a, int *hits_b) {
    const int32_t *s = br_xent_samples(x);
    *dups = *hits_a = *hits_b = 0;
    for (int32_t k = 0; k < K; k++)
        for (int32_t j = 0; j < k; j++) *dups += s[j] == s[k];
    for (int32_t t = 0; t < p->T; t++)
        for (int32_t k = 0; k < K; k++) {
            if (p->target[t] <= 0) continue;
            *hits_a += s[k] == p->target[t];
            *hits_b += p->target2 && s[k] == p->target2[t] && p->target2[t] != p->target[t];
        }
}

/* The kernel (given chunk, K, weights, draw key) against direct_ref. */
static void check_direct(const problem *p, int32_t chunk, int32_t K, const double *w, uint64_t key, float scale) {
    br_error err;
    br_xent *x = br_xent_create_sampled(p->N, p->D, chunk, K, w, &err);
    if (!x) fail_msg("%s", err.msg);
    br_xent_draw(x, key);
    char what[64];
    snprintf(what, sizeof what, "N %d K %d chunk %d", p->N, K, chunk);
    check_against_ref(what, p, x, 0.0f, scale, direct_ref, &K);
    br_xent_free(x);
}

/* Tiny catalogues, so that draws repeat and hit labels; plain, weighted and
 * mixup labels; uniform and skewed Q; one and several chunks; K = 1; and
 * the library's chunk on a larger case. */
static void test_direct_reference(void **state) {
    br_rng r;
    br_rng_seed(&r, 41, 0);
    double *w = skewed_weights(3000);
    for (int variant = 0; variant < 3; variant++) {
        problem p;
        problem_init(&p, 13, 7, 5, variant == 2, variant >= 1, &r);
        for (uint64_t key = 1; key <= 3; key++) {
            br_error err;
            br_xent *x = br_xent_create_sampled(7, 5, 4, 20, w, &err);
            assert_non_null(x);
            br_xent_draw(x, key);
            int dups, ha, hb;
            count_hits(&p, x, 20, &dups, &ha, &hb);
            assert_true(dups > 0 && ha > 0);
            if (variant == 2) assert_true(hb > 0);
            br_xent_free(x);
            check_direct(&p, 4, 20, w, key, 1.3f);
            check_direct(&p, 4, 20, NULL, key, 1.0f);
            check_direct(&p, 256, 20, w, key, 1.0f);
            check_direct(&p, 3, 1, w, key, 1.0f);
        }
        problem_free(&p);
    }
    problem p;
    problem_init(&p, 300, 3000, 16, 1, 1, &r);
    check_direct(&p, BR_XENT_CHUNK, 256, w, 7, 1.0f);
    check_direct(&p, 64, 256, NULL, 8, 1.0f);
    problem_free(&p);
    free(w);
}

/* No target at all: zero loss and gradient. */
static void test_no_targets(void **state) {
    br_error err;
    br_xent *x = br_xent_create_sampled(9, 4, 4, 8, NULL, &err);
    check_no_targets(x, 42);
    br_xent_free(x);
}

/* ---- finite differences ---- */

/* The sampled loss on the draw of x, at scale 1.3. */
static double sampled_loss(const problem *p, void *x, float *dh, float *dE) {
    const br_xent_labels lb = labels_of(p);
    return br_xent_loss(x, p->h, p->T, &lb, 0.0f, p->E, dE, dh, 1.3f);
}

/* Finite differences on the draw of key 5, which repeats items and hits the labels. */
static void check_fd(const char *label, const problem *p, int32_t K, const double *w) {
    br_error err;
    br_xent *x = br_xent_create_sampled(p->N, p->D, 3, K, w, &err);
    assert_non_null(x);
    br_xent_draw(x, 5);
    int dups, ha, hb;
    count_hits(p, x, K, &dups, &ha, &hb);
    assert_true(dups > 0 && ha > 0 && (!p->target2 || hb > 0));
    char note[48];
    snprintf(note, sizeof note, " (%d repeats, %d + %d hits)", dups, ha, hb);
    fd_check(label, note, p, sampled_loss, x, 43);
    br_xent_free(x);
}

static void test_fd(void **state) {
    double *w = skewed_weights(9);
    br_rng r;
    br_rng_seed(&r, 44, 0);
    problem p, pw;
    problem_init(&p, 11, 9, 5, 0, 0, &r);
    problem_init(&pw, 11, 9, 5, 1, 1, &r);
    check_fd("sampled-ce uniform", &p, 12, NULL);
    check_fd("sampled-ce pop", &p, 12, w);
    check_fd("weighted, mixup labels, pop", &pw, 12, w);
    free(w);
    problem_free(&p), problem_free(&pw);
}

/* ---- the limit of many negatives ----
 * Sum_k exp(z_k) / (K Q(s_k)) over the non-hit draws is an unbiased
 * estimate of the full softmax's sum over the items other than the target;
 * with the target's own uncorrected term the support's sum tends to the
 * full Z, so loss and gradient tend to the full softmax's, with any Q. */
static void test_many_negatives(void **state) {
    enum { N = 30, D = 6, K = 1 << 20 };
    br_rng r;
    br_rng_seed(&r, 45, 0);
    double *w = skewed_weights(N);
    br_error err;
    br_xent *full = br_xent_create(N, D, 4, 64, &err);
    assert_non_null(full);
    for (int use_w = 0; use_w <= 1; use_w++)
        for (int rep = 0; rep < 3; rep++) {
            problem p;
            problem_init(&p, 1, N, D, 0, 0, &r);
            p.target[0] = 1 + (int32_t)br_rng_below(&r, N);
            /* h near E[y], so that p_y is far from 0 and c from 1 */
            for (int d = 0; d < D; d++) p.h[d] = 3.0f * p.E[(size_t)p.target[0] * D + d] + 0.3f * p.h[d];
            br_xent *x = br_xent_create_sampled(N, D, 4, K, use_w ? w : NULL, &err);
            assert_non_null(x);
            br_xent_draw(x, 100 + (uint64_t)rep);
            float *dh = alloc_f(D), *dhf = alloc_f(D), *dE = alloc_f((N + 1) * D), *dEf = alloc_f((N + 1) * D);
            const br_xent_labels lb = labels_of(&p);
            const double ls = br_xent_loss(x, p.h, 1, &lb, 0.0f, p.E, dE, dh, 1.0f);
            const double lf = br_xent_loss(full, p.h, 1, &lb, 0.0f, p.E, dEf, dhf, 1.0f);
            /* One token: the full loss is -log p_y. */
            const double py = exp(-lf);
            if (fabs(ls - lf) > 5e-3 * fabs(lf))
                fail_msg("loss %.6f, full softmax %.6f (p_y %.4f)", ls, lf, py);
            double e2 = 0.0, f2 = 0.0;
            for (int d = 0; d < D; d++) {
                e2 += pow(dh[d] - dhf[d], 2);
                f2 += pow(dhf[d], 2);
            }
            for (int i = 0; i < (N + 1) * D; i++) {
                e2 += pow(dE[i] - dEf[i], 2);
                f2 += pow(dEf[i], 2);
            }
            const double rel = sqrt(e2 / f2);
            print_message("%s Q, p_y %.3f: loss %.5f vs full %.5f, gradient vs full: rel err %.1e\n",
                          use_w ? "skewed" : "uniform", py, ls, lf, rel);
            assert_true(rel < 1e-2);
            free(dh), free(dhf), free(dE), free(dEf);
            br_xent_free(x);
            problem_free(&p);
        }
    br_xent_free(full);
    free(w);
}

/* ---- determinism ---- */

/* Same key: the same draw and the same bytes, in a fresh workspace too and
 * after other draws; another key, another draw. */
static void test_determinism(void **state) {
    double *w = skewed_weights(50);
    br_rng r;
    br_rng_seed(&r, 46, 0);
    problem p;
    problem_init(&p, 40, 50, 8, 1, 1, &r);
    br_error err;
    br_xent *a = br_xent_create_sampled(50, 8, 16, 64, w, &err), *b = br_xent_create_sampled(50, 8, 16, 64, w, &err);
    assert_true(a && b);
    br_xent_draw(a, 77);
    br_xent_draw(b, 78);
    br_xent_draw(b, 77);
    assert_memory_equal(br_xent_samples(a), br_xent_samples(b), 64 * sizeof(int32_t));
    check_same_bits(a, b, &p, 0.0f);
    br_xent_draw(b, 79);
    assert_memory_not_equal(br_xent_samples(a), br_xent_samples(b), 64 * sizeof(int32_t));
    br_xent_free(a), br_xent_free(b);
    problem_free(&p);
    free(w);
}

/* ---- the proposal ---- */

/* Frequencies of 2000 draws of 500 against Q: Pearson's chi-square below
 * its mean + 5 standard deviations (df + 5 sqrt(2 df)); the seeds are
 * fixed, so this is a check of the alias table, not a flaky test. */
static void check_frequencies(const char *label, int32_t N, const double *w) {
    enum { K = 500, DRAWS = 2000 };
    br_error err;
    br_xent *x = br_xent_create_sampled(N, 4, 8, K, w, &err);
    assert_non_null(x);
    double total = 0.0;
    for (int32_t i = 1; w && i <= N; i++) total += w[i];
    for (int32_t i = 1; i <= N; i++)
        assert_true(fabs(br_xent_proposal(x, i) - (w ? w[i] / total : 1.0 / N)) < 1e-15);
    int64_t *count = calloc((size_t)N + 1, sizeof *count);
    assert_non_null(count);
    for (uint64_t step = 0; step < DRAWS; step++) {
        br_xent_draw(x, br_key(9, 0, step));
        const int32_t *s = br_xent_samples(x);
        for (int k = 0; k < K; k++) {
            assert_true(s[k] >= 1 && s[k] <= N);
            count[s[k]]++;
        }
    }
    double chi2 = 0.0;
    for (int32_t i = 1; i <= N; i++) {
        const double e = (double)K * DRAWS * br_xent_proposal(x, i);
        chi2 += (count[i] - e) * (count[i] - e) / e;
    }
    const double df = N - 1, bound = df + 5.0 * sqrt(2.0 * df);
    print_message("%-26s chi-square %.1f, df %.0f (bound %.1f)\n", label, chi2, df, bound);
    assert_true(chi2 <= bound);
    free(count);
    br_xent_free(x);
}

static void test_proposal_frequencies(void **state) {
    enum { N = 50 };
    double *w = skewed_weights(N);
    check_frequencies("uniform", N, NULL);
    check_frequencies("1 + i^2 mod 37", N, w);
    /* One item with 1000 times the others' weight, and a single item. */
    for (int32_t i = 1; i <= N; i++) w[i] = i == 17 ? 1000.0 : 1.0;
    check_frequencies("one heavy item", N, w);
    check_frequencies("one item", 1, NULL);
    free(w);
    br_error err;
    const double bad[3] = {0.0, 1.0, 0.0};
    assert_null(br_xent_create_sampled(2, 4, 8, 16, bad, &err));
    assert_null(br_xent_create_sampled(2, 4, 8, 0, NULL, &err));
}

/* pop: 1 + each item's count among the training targets (items 1..n-3 of a
 * sequence of n); items of the model beyond the data's get 1. */
static void test_pop_from_dataset(void **state) {
    char path[64];
    br_error err;
    br_dataset ds;
    /* targets: 2, 3 (user 1); 2 (user 2); none (user 3) */
    assert_non_null(test_write_tmp(path, sizeof path, "1 1 2 3 4 5\n2 2 2 3 1\n3 5 4 3\n"));
    assert_int_equal(br_dataset_load(path, &ds, &err), 0);
    unlink(path);
    br_loss_config c;
    br_loss_config_defaults(&c);
    c.kind = BR_LOSS_SAMPLED_CE;
    assert_int_equal(c.ce_negatives, 256);
    assert_int_equal(c.ce_sampler, BR_SAMPLER_POP);
    br_xent *x = br_xent_create_for(&c, 7, 4, &ds, &err);
    assert_non_null(x);
    const double want[8] = {0, 1, 3, 2, 1, 1, 1, 1};
    for (int32_t i = 1; i <= 7; i++) assert_true(fabs(br_xent_proposal(x, i) - want[i] / 10.0) < 1e-15);
    br_xent_free(x);
    c.ce_sampler = BR_SAMPLER_UNIFORM;
    c.ce_negatives = 3;
    x = br_xent_create_for(&c, 7, 4, &ds, &err);
    assert_non_null(x);
    for (int32_t i = 1; i <= 7; i++) assert_true(fabs(br_xent_proposal(x, i) - 1.0 / 7.0) < 1e-15);
    for (int k = 0; k < 3; k++) assert_true(br_xent_samples(x)[k] >= 1 && br_xent_samples(x)[k] <= 7);
    br_xent_free(x);
    /* The workspace: chunk x K logits and the tables, not the catalogue's logits. */
    x = br_xent_create_sampled(1000000, 64, BR_XENT_CHUNK, 256, NULL, &err);
    assert_non_null(x);
    assert_true(br_xent_bytes(x) < (size_t)1000000 * 21 + (2u << 20));
    print_message("sampled workspace at 1e6 items, K 256: %.1f MiB\n", br_xent_bytes(x) / 1048576.0);
    br_xent_free(x);
    br_dataset_free(&ds);
}

static void test_names(void **state) {
    br_loss_kind k;
    assert_int_equal(br_loss_parse("sampled-ce", &k), 0);
    assert_int_equal(k, BR_LOSS_SAMPLED_CE);
    assert_string_equal(br_loss_name(BR_LOSS_SAMPLED_CE), "sampled-ce");
    assert_true(br_loss_is_softmax(BR_LOSS_SAMPLED_CE));
    br_sampler_kind s = BR_SAMPLER_POP;
    assert_int_equal(br_sampler_parse("uniform", &s), 0);
    assert_int_equal(s, BR_SAMPLER_UNIFORM);
    assert_int_equal(br_sampler_parse("pop", &s), 0);
    assert_int_equal(s, BR_SAMPLER_POP);
    assert_int_equal(br_sampler_parse("popularity", &s), -1);
    assert_string_equal(br_sampler_name(BR_SAMPLER_UNIFORM), "uniform");
    assert_string_equal(br_sampler_name(BR_SAMPLER_POP), "pop");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direct_reference),
        cmocka_unit_test(test_no_targets),
        cmocka_unit_test(test_fd),
        cmocka_unit_test(test_many_negatives),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_proposal_frequencies),
        cmocka_unit_test(test_pop_from_dataset),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
