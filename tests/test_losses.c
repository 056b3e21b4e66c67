/* The losses of train/loss.h: the blocked full-softmax kernel (ce, last-ce,
 * focal, the mixup label form) against a naive dense reference in double,
 * at item-block and token-chunk boundaries and on a large catalogue;
 * finite differences of every loss w.r.t. h and the item table;
 * determinism; names. The kernels are float32, so objectives are summed in
 * double and each difference divides by the perturbation actually stored. */
#include "testutil.h"

#include <math.h>

#include "train/loss.h"
#include "util/rng.h"

static float *alloc_f(long n) {
    float *p = calloc((size_t)n, sizeof *p);
    assert_non_null(p);
    return p;
}

static void fill_normal(float *x, long n, float std, br_rng *r) {
    for (long i = 0; i < n; i++) x[i] = std * (float)br_rng_normal(r);
}

/* A problem: T tokens of dimension D against items 1..N (row 0 padding). */
typedef struct problem {
    int32_t T, N;
    int D;
    float *h, *E;
    int32_t *target, *target2, *neg;
    float *mix, *weight;
} problem;

/* Random h and E; targets over 1..N with every 5th token unlabelled; with
 * mixup, partner labels on most tokens (target2 0 and mix 1 elsewhere). */
static void problem_init(problem *p, int32_t T, int32_t N, int D, int mixup, int weighted, br_rng *r) {
    memset(p, 0, sizeof *p);
    p->T = T, p->N = N, p->D = D;
    p->h = alloc_f((long)T * D);
    p->E = alloc_f((long)(N + 1) * D);
    fill_normal(p->h, (long)T * D, 1.0f, r);
    fill_normal(p->E, (long)(N + 1) * D, 0.5f, r);
    p->target = calloc((size_t)T, sizeof *p->target);
    p->neg = calloc((size_t)T, sizeof *p->neg);
    assert_true(p->target && p->neg);
    for (int32_t t = 0; t < T; t++) {
        p->target[t] = t % 5 == 3 ? 0 : 1 + (int32_t)br_rng_below(r, (uint64_t)N);
        p->neg[t] = 1 + (int32_t)br_rng_below(r, (uint64_t)N);
    }
    /* the catalogue's ends as labels */
    p->target[0] = 1;
    if (T > 1) p->target[1] = N;
    if (mixup) {
        p->target2 = calloc((size_t)T, sizeof *p->target2);
        p->mix = alloc_f(T);
        assert_true(p->target2 != NULL);
        for (int32_t t = 0; t < T; t++) {
            const int has = t % 4 != 1;
            p->target2[t] = has ? 1 + (int32_t)br_rng_below(r, (uint64_t)N) : 0;
            p->mix[t] = has ? (float)br_rng_uniform(r) : 1.0f;
        }
    }
    if (weighted) {
        p->weight = alloc_f(T);
        for (int32_t t = 0; t < T; t++) p->weight[t] = (float)br_rng_uniform(r);
    }
}

static void problem_free(problem *p) {
    free(p->h), free(p->E), free(p->target), free(p->target2), free(p->neg), free(p->mix), free(p->weight);
}

static br_xent_labels labels_of(const problem *p) {
    br_xent_labels lb = {p->target, p->target2, p->mix, p->weight};
    return lb;
}

/* The definition, densely in double: all logits of a token, softmax, and
 * d l / d z by the chain rule through p_y (a different route from the
 * kernel's closed-form coefficient). Accumulates into dh (zeroed here) and dE. */
static double dense_ref(const problem *p, double gamma, double scale, double *dh, double *dE) {
    const int D = p->D;
    const int32_t N = p->N;
    double *z = malloc((size_t)(N + 1) * sizeof *z), *g = malloc((size_t)(N + 1) * sizeof *g);
    double *pr = malloc((size_t)(N + 1) * sizeof *pr);
    assert_true(z && g && pr);
    int64_t count = 0;
    for (int32_t t = 0; t < p->T; t++) count += p->target[t] > 0;
    memset(dh, 0, (size_t)p->T * D * sizeof *dh);
    double loss = 0.0;
    for (int32_t t = 0; t < p->T; t++) {
        if (p->target[t] <= 0) continue;
        const float *ht = p->h + (size_t)t * D;
        double mx = -INFINITY, sum = 0.0;
        for (int32_t i = 1; i <= N; i++) {
            double s = 0.0;
            for (int d = 0; d < D; d++) s += (double)ht[d] * p->E[(size_t)i * D + d];
            z[i] = s;
            mx = fmax(mx, s);
        }
        for (int32_t i = 1; i <= N; i++) sum += exp(z[i] - mx);
        for (int32_t i = 1; i <= N; i++) pr[i] = exp(z[i] - mx) / sum;
        const double w = p->weight ? p->weight[t] : 1.0, ma = p->mix ? p->mix[t] : 1.0;
        const int32_t ys[2] = {p->target[t], p->target2 ? p->target2[t] : 0};
        const double ms[2] = {ma, 1.0 - ma};
        for (int32_t i = 1; i <= N; i++) g[i] = 0.0;
        for (int k = 0; k < 2; k++) {
            if (ys[k] <= 0) continue;
            const double py = pr[ys[k]], q = 1.0 - py;
            loss += w * ms[k] * -pow(q, gamma) * log(py);
            /* dl/dp_y, then dp_y/dz_j = p_y ([j == y] - p_j) */
            const double dl_dp = (gamma > 0 ? gamma * pow(q, gamma - 1) * log(py) : 0.0) - pow(q, gamma) / py;
            for (int32_t j = 1; j <= N; j++) g[j] += w * ms[k] * dl_dp * py * ((j == ys[k]) - pr[j]);
        }
        for (int32_t j = 1; j <= N; j++) {
            const double gj = g[j] * scale / (double)count;
            for (int d = 0; d < D; d++) {
                dh[(size_t)t * D + d] += gj * p->E[(size_t)j * D + d];
                dE[(size_t)j * D + d] += gj * ht[d];
            }
        }
    }
    free(z), free(g), free(pr);
    return count ? loss * scale / (double)count : 0.0;
}

/* |a - b| <= tol * max(max|b|, 0.01) over n entries: the floor lets exact
 * zeros (one item: p = 1) come out as rounding noise. */
static void assert_close_rel(const char *what, const float *a, const double *b, long n, double tol) {
    double mb = 0.0;
    for (long i = 0; i < n; i++) mb = fmax(mb, fabs(b[i]));
    for (long i = 0; i < n; i++)
        if (fabs(a[i] - b[i]) > tol * fmax(mb, 1e-2))
            fail_msg("%s[%ld]: %.9g vs reference %.9g (max %.3g)", what, i, (double)a[i], b[i], mb);
}

/* The kernel with the given chunk and block against the reference. */
static void check_against_dense(const problem *p, int32_t chunk, int32_t block, float gamma, float scale) {
    br_error err;
    br_xent *x = br_xent_create(p->N, p->D, chunk, block, &err);
    assert_non_null(x);
    const long nh = (long)p->T * p->D, ne = (long)(p->N + 1) * p->D;
    float *dh = alloc_f(nh), *dE = alloc_f(ne);
    double *rdh = calloc((size_t)nh, sizeof *rdh), *rdE = calloc((size_t)ne, sizeof *rdE);
    assert_true(rdh && rdE);
    fill_normal(dh, nh, 9.0f, &(br_rng){{1, 2, 3, 4}}); /* overwritten */
    const br_xent_labels lb = labels_of(p);
    const double loss = br_xent_loss(x, p->h, p->T, &lb, gamma, p->E, dE, dh, scale);
    const double ref = dense_ref(p, gamma, scale, rdh, rdE);
    if (fabs(loss - ref) > 1e-5 * fabs(ref))
        fail_msg("N %d chunk %d block %d gamma %g: loss %.9g vs reference %.9g", p->N, chunk, block,
                 (double)gamma, loss, ref);
    assert_close_rel("dh", dh, rdh, nh, 2e-5);
    assert_close_rel("dE", dE, rdE, ne, 2e-5);
    for (int d = 0; d < p->D; d++) assert_true(dE[d] == 0.0f); /* the padding row */
    for (int32_t t = 0; t < p->T; t++)
        if (p->target[t] == 0)
            for (int d = 0; d < p->D; d++) assert_true(dh[(size_t)t * p->D + d] == 0.0f);
    free(dh), free(dE), free(rdh), free(rdE);
    br_xent_free(x);
}

/* Item counts around the block size (1, block-1, block, block+1, several
 * blocks with a partial last one) and token counts around the chunk size
 * (tokens without target are skipped, so chunks gather across them). */
static void test_dense_reference(void **state) {
    enum { BLOCK = 7, CHUNK = 5, D = 6 };
    const int32_t items[] = {1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 2};
    const int32_t toks[] = {1, CHUNK, CHUNK + 2, 4 * CHUNK + 3};
    br_rng r;
    br_rng_seed(&r, 31, 0);
    for (size_t a = 0; a < sizeof items / sizeof *items; a++)
        for (size_t b = 0; b < sizeof toks / sizeof *toks; b++)
            for (int variant = 0; variant < 3; variant++) {
                problem p;
                problem_init(&p, toks[b], items[a], D, variant >= 1, variant == 2, &r);
                check_against_dense(&p, CHUNK, BLOCK, 0.0f, 1.0f);
                check_against_dense(&p, CHUNK, BLOCK, 2.0f, 0.7f);
                check_against_dense(&p, CHUNK, BLOCK, 0.5f, 1.0f);
                /* the library's default sizes: one block, one chunk */
                check_against_dense(&p, BR_XENT_CHUNK, BR_XENT_BLOCK, 0.0f, 1.0f);
                problem_free(&p);
            }
}

/* No target at all: zero loss and gradient. */
static void test_no_targets(void **state) {
    br_rng r;
    br_rng_seed(&r, 32, 0);
    problem p;
    problem_init(&p, 6, 9, 4, 0, 0, &r);
    memset(p.target, 0, 6 * sizeof *p.target);
    br_error err;
    br_xent *x = br_xent_create(9, 4, 4, 4, &err);
    assert_non_null(x);
    float *dh = alloc_f(24), *dE = alloc_f(40);
    fill_normal(dh, 24, 1.0f, &r);
    const br_xent_labels lb = labels_of(&p);
    assert_true(br_xent_loss(x, p.h, 6, &lb, 0.0f, p.E, dE, dh, 1.0f) == 0.0);
    for (int i = 0; i < 24; i++) assert_true(dh[i] == 0.0f);
    for (int i = 0; i < 40; i++) assert_true(dE[i] == 0.0f);
    free(dh), free(dE);
    br_xent_free(x);
    problem_free(&p);
}

/* A catalogue of 100,000 items in blocks of 8192 (13 blocks, the last
 * partial) and 2 chunks of tokens: matches the reference, and the workspace
 * does not depend on the catalogue's size. */
static void test_large_catalogue(void **state) {
    br_rng r;
    br_rng_seed(&r, 33, 0);
    problem p;
    problem_init(&p, 300, 100000, 16, 1, 1, &r);
    check_against_dense(&p, BR_XENT_CHUNK, BR_XENT_BLOCK, 0.0f, 1.0f);
    br_error err;
    br_xent *a = br_xent_create(100000, 64, BR_XENT_CHUNK, BR_XENT_BLOCK, &err);
    br_xent *b = br_xent_create(1000000, 64, BR_XENT_CHUNK, BR_XENT_BLOCK, &err);
    assert_true(a && b);
    assert_true(br_xent_bytes(a) == br_xent_bytes(b));
    /* chunk x block logits dominate: 8 MiB, plus 2 x chunk x D floats */
    assert_true(br_xent_bytes(b) < (size_t)BR_XENT_CHUNK * BR_XENT_BLOCK * 4 + (1u << 20));
    print_message("workspace %.2f MiB for any catalogue (dense logits of 1500 x 1e6 items: %.1f GiB)\n",
                  br_xent_bytes(b) / 1048576.0, 1500.0 * 1e6 * 4 / 1073741824.0);
    br_xent_free(a), br_xent_free(b);
    problem_free(&p);
}

/* Same inputs, same bits; dE accumulates. */
static void test_determinism(void **state) {
    br_rng r;
    br_rng_seed(&r, 34, 0);
    problem p;
    problem_init(&p, 40, 50, 8, 1, 1, &r);
    br_error err;
    br_xent *x = br_xent_create(50, 8, 16, 16, &err);
    assert_non_null(x);
    float *dh1 = alloc_f(320), *dh2 = alloc_f(320), *dE1 = alloc_f(408), *dE2 = alloc_f(408);
    const br_xent_labels lb = labels_of(&p);
    const double l1 = br_xent_loss(x, p.h, 40, &lb, 2.0f, p.E, dE1, dh1, 1.0f);
    const double l2 = br_xent_loss(x, p.h, 40, &lb, 2.0f, p.E, dE2, dh2, 1.0f);
    assert_true(l1 == l2);
    assert_memory_equal(dh1, dh2, 320 * sizeof(float));
    assert_memory_equal(dE1, dE2, 408 * sizeof(float));
    br_xent_loss(x, p.h, 40, &lb, 2.0f, p.E, dE1, dh1, 1.0f);
    for (int i = 0; i < 408; i++) assert_float_equal(dE1[i], 2.0f * dE2[i], 1e-6f);
    free(dh1), free(dh2), free(dE1), free(dE2);
    br_xent_free(x);
    problem_free(&p);
}

/* ---- finite differences ---- */

typedef struct fd_ctx {
    const problem *p;
    br_loss_config cfg;
    br_xent *x;
    const int32_t *target; /* last-ce: masked */
    int mixup;             /* the mixup label form (br_xent_loss directly) */
    float *dh, *dE;        /* scratch */
} fd_ctx;

static double fd_obj(fd_ctx *c) {
    const problem *p = c->p;
    if (c->mixup) {
        const br_xent_labels lb = {c->target, p->target2, p->mix, p->weight};
        return br_xent_loss(c->x, p->h, p->T, &lb, c->cfg.focal_gamma, p->E, c->dE, c->dh, 1.3f);
    }
    return br_loss_eval(&c->cfg, c->x, p->h, p->T, c->target, p->neg, p->weight, p->D, p->E, c->dE, c->dh);
}

#define EPS 1e-2f
#define EPS_DIR 1e-3f
#define TOL 1e-2
#define TOL_DIR 1e-3
#define FLOOR 1e-2

static double rel_err(double fd, double an, double floor) {
    return fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), floor);
}

static double fd_entry(fd_ctx *c, float *x, long i, double an) {
    const float x0 = x[i];
    x[i] = x0 + EPS;
    const float xp = x[i];
    const double fp = fd_obj(c);
    x[i] = x0 - EPS;
    const float xm = x[i];
    const double fm = fd_obj(c);
    x[i] = x0;
    const double fd = (fp - fm) / ((double)xp - (double)xm), e = rel_err(fd, an, FLOOR);
    if (e > TOL) fail_msg("entry %ld: finite difference %.7g, analytic %.7g (rel err %.2e)", i, fd, an, e);
    return e;
}

/* Every entry of h and of the item table, then one direction over both. */
static void check_fd(const char *label, const problem *p, const br_loss_config *cfg, int mixup, int32_t block) {
    br_error err;
    fd_ctx c = {p, *cfg, NULL, p->target, mixup, alloc_f((long)p->T * p->D), alloc_f((long)(p->N + 1) * p->D)};
    if (br_loss_is_softmax(cfg->kind) || mixup) assert_non_null(c.x = br_xent_create(p->N, p->D, 3, block, &err));
    int32_t *masked = malloc((size_t)p->T * sizeof *masked);
    assert_non_null(masked);
    if (cfg->kind == BR_LOSS_LAST_CE) {
        /* sequences of 3, 1, 4, ... tokens */
        int32_t off[64], n = 0;
        off[0] = 0;
        while (off[n] < p->T) {
            const int32_t end = off[n] + 1 + (n * 3) % 4;
            off[n + 1] = end < p->T ? end : p->T;
            n++;
        }
        memcpy(masked, p->target, (size_t)p->T * sizeof *masked);
        br_keep_last_targets(masked, off, n);
        int kept = 0;
        for (int32_t t = 0; t < p->T; t++) kept += masked[t] > 0;
        assert_true(kept > 0 && kept <= n);
        c.target = masked;
    }
    const long nh = (long)p->T * p->D, ne = (long)(p->N + 1) * p->D;
    float *dh = alloc_f(nh), *dE = alloc_f(ne);
    if (mixup) {
        const br_xent_labels lb = {c.target, p->target2, p->mix, p->weight};
        br_xent_loss(c.x, p->h, p->T, &lb, cfg->focal_gamma, p->E, dE, dh, 1.3f);
    } else {
        br_loss_eval(cfg, c.x, p->h, p->T, c.target, p->neg, p->weight, p->D, p->E, dE, dh);
    }
    double worst_h = 0.0, worst_e = 0.0;
    for (long i = 0; i < nh; i++) worst_h = fmax(worst_h, fd_entry(&c, p->h, i, dh[i]));
    for (long i = 0; i < ne; i++) worst_e = fmax(worst_e, fd_entry(&c, p->E, i, dE[i]));

    br_rng r;
    br_rng_seed(&r, 35, 0);
    float *oh = malloc((size_t)nh * sizeof *oh), *oe = malloc((size_t)ne * sizeof *oe);
    float *vh = alloc_f(nh), *ve = alloc_f(ne);
    assert_true(oh && oe);
    memcpy(oh, p->h, (size_t)nh * sizeof *oh);
    memcpy(oe, p->E, (size_t)ne * sizeof *oe);
    fill_normal(vh, nh, EPS_DIR, &r);
    fill_normal(ve, ne, EPS_DIR, &r);
    for (long i = 0; i < nh; i++) p->h[i] = oh[i] + vh[i];
    for (long i = 0; i < ne; i++) p->E[i] = oe[i] + ve[i];
    const double fp = fd_obj(&c);
    double an = 0.0;
    for (long i = 0; i < nh; i++) {
        const float xp = p->h[i];
        p->h[i] = oh[i] - vh[i];
        an += (double)dh[i] * ((double)xp - (double)p->h[i]);
    }
    for (long i = 0; i < ne; i++) {
        const float xp = p->E[i];
        p->E[i] = oe[i] - ve[i];
        an += (double)dE[i] * ((double)xp - (double)p->E[i]);
    }
    const double fm = fd_obj(&c);
    memcpy(p->h, oh, (size_t)nh * sizeof *oh);
    memcpy(p->E, oe, (size_t)ne * sizeof *oe);
    const double e_dir = rel_err(fp - fm, an, FLOOR * 2.0 * EPS_DIR);
    if (e_dir > TOL_DIR) fail_msg("%s: directional difference %.7g, analytic %.7g (rel err %.2e)", label, fp - fm, an, e_dir);
    print_message("%-28s h %.1e  E %.1e | direction %.1e\n", label, worst_h, worst_e, e_dir);
    free(oh), free(oe), free(vh), free(ve), free(dh), free(dE), free(masked), free(c.dh), free(c.dE);
    br_xent_free(c.x);
}

static void test_fd_losses(void **state) {
    br_rng r;
    br_rng_seed(&r, 36, 0);
    problem p, pw;
    problem_init(&p, 11, 9, 5, 0, 0, &r);
    problem_init(&pw, 11, 9, 5, 1, 1, &r);
    br_loss_config c;
    br_loss_config_defaults(&c);
    check_fd("bce", &p, &c, 0, 4);
    check_fd("bce weighted", &pw, &c, 0, 4);
    c.kind = BR_LOSS_CE;
    check_fd("ce (one block)", &p, &c, 0, 16);
    check_fd("ce (blocks of 4)", &p, &c, 0, 4);
    check_fd("ce weighted", &pw, &c, 0, 4);
    c.kind = BR_LOSS_LAST_CE;
    check_fd("last-ce", &p, &c, 0, 4);
    c.kind = BR_LOSS_FOCAL;
    check_fd("focal gamma 2", &p, &c, 0, 4);
    c.focal_gamma = 0.5f;
    check_fd("focal gamma 0.5", &pw, &c, 0, 4);
    /* the mixup label form, with cross-entropy and focal labels */
    c.kind = BR_LOSS_CE;
    c.focal_gamma = 0.0f;
    check_fd("mixup labels, ce", &pw, &c, 1, 4);
    c.focal_gamma = 2.0f;
    check_fd("mixup labels, focal", &pw, &c, 1, 16);
    problem_free(&p), problem_free(&pw);
}

/* Focal with gamma 0 is cross-entropy, and with gamma > 0 weighs confident
 * tokens less. */
static void test_focal_limits(void **state) {
    br_rng r;
    br_rng_seed(&r, 37, 0);
    problem p;
    problem_init(&p, 20, 30, 8, 0, 0, &r);
    br_error err;
    br_xent *x = br_xent_create(30, 8, 7, 8, &err);
    float *dh = alloc_f(160), *dE = alloc_f(248);
    br_loss_config ce = {.kind = BR_LOSS_CE, .focal_gamma = 2.0f}, f0 = {.kind = BR_LOSS_FOCAL, .focal_gamma = 0.0f},
                   f2 = {.kind = BR_LOSS_FOCAL, .focal_gamma = 2.0f};
    const double lce = br_loss_eval(&ce, x, p.h, 20, p.target, p.neg, NULL, 8, p.E, dE, dh);
    const double l0 = br_loss_eval(&f0, x, p.h, 20, p.target, p.neg, NULL, 8, p.E, dE, dh);
    const double l2 = br_loss_eval(&f2, x, p.h, 20, p.target, p.neg, NULL, 8, p.E, dE, dh);
    assert_true(lce == l0);
    assert_true(l2 > 0.0 && l2 < lce);
    free(dh), free(dE);
    br_xent_free(x);
    problem_free(&p);
}

static void test_names(void **state) {
    const br_loss_kind kinds[] = {BR_LOSS_BCE, BR_LOSS_CE, BR_LOSS_LAST_CE, BR_LOSS_FOCAL};
    for (int i = 0; i < 4; i++) {
        br_loss_kind k;
        assert_int_equal(br_loss_parse(br_loss_name(kinds[i]), &k), 0);
        assert_int_equal(k, kinds[i]);
    }
    br_loss_kind k = BR_LOSS_CE;
    assert_int_equal(br_loss_parse("softmax", &k), -1);
    assert_int_equal(br_loss_parse("", &k), -1);
    assert_int_equal(k, BR_LOSS_CE);
    br_loss_config c;
    br_loss_config_defaults(&c);
    assert_int_equal(c.kind, BR_LOSS_BCE);
    assert_true(c.focal_gamma == 2.0f);
    /* last tokens of sequences of 3, 1 and 2 tokens */
    int32_t t[6] = {5, 6, 7, 8, 9, 10};
    const int32_t off[4] = {0, 3, 4, 6}, want[6] = {0, 0, 7, 8, 0, 10};
    br_keep_last_targets(t, off, 3);
    assert_memory_equal(t, want, sizeof want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_reference),
        cmocka_unit_test(test_no_targets),
        cmocka_unit_test(test_large_catalogue),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_fd_losses),
        cmocka_unit_test(test_focal_limits),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
