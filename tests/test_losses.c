/* The losses of train/loss.h: the blocked full-softmax kernel (ce, last-ce,
 * focal, the mixup label form) against a naive dense reference in double,
 * at item-block and token-chunk boundaries and on a large catalogue;
 * finite differences of every loss w.r.t. h and the item table;
 * determinism; names. */
#include "loss_util.h"

/* problem_random with a negative per token (bce) and the catalogue's ends as labels. */
static void problem_init(problem *p, int32_t T, int32_t N, int D, int mixup, int weighted, br_rng *r) {
    problem_random(p, T, N, D, mixup, weighted, 1, r);
    p->target[0] = 1;
    if (T > 1) p->target[1] = N;
}

/* The definition, densely in double: all logits of a token, softmax, and
 * d l / d z by the chain rule through p_y (a different route from the
 * kernel's closed-form coefficient). Accumulates into dh and dE. */
static double dense_ref(const problem *p, const br_xent *x, float gamma, double norm, const void *arg, double *dh,
                        double *dE) {
    const int D = p->D;
    const int32_t N = p->N;
    double *z = malloc((size_t)(N + 1) * sizeof *z), *g = malloc((size_t)(N + 1) * sizeof *g);
    double *pr = malloc((size_t)(N + 1) * sizeof *pr);
    assert_true(z && g && pr);
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
            const double gj = g[j] * norm;
            for (int d = 0; d < D; d++) {
                dh[(size_t)t * D + d] += gj * p->E[(size_t)j * D + d];
                dE[(size_t)j * D + d] += gj * ht[d];
            }
        }
    }
    free(z), free(g), free(pr);
    return loss * norm;
}

/* The kernel with the given chunk and block against dense_ref. */
static void check_against_dense(const problem *p, int32_t chunk, int32_t block, float gamma, float scale) {
    br_error err;
    br_xent *x = br_xent_create(p->N, p->D, chunk, block, &err);
    assert_non_null(x);
    char what[80];
    snprintf(what, sizeof what, "N %d chunk %d block %d gamma %g", p->N, chunk, block, (double)gamma);
    check_against_ref(what, p, x, gamma, scale, dense_ref, NULL);
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
    br_error err;
    br_xent *x = br_xent_create(9, 4, 4, 4, &err);
    check_no_targets(x, 32);
    br_xent_free(x);
}

/* A catalogue of 100,000 items in the library's blocks (4 blocks, the
 * last partial) and 2 chunks of tokens: matches the reference, and the workspace
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
    /* chunk x block logits dominate (8 MiB), plus 2 x chunk x D floats */
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
    check_same_bits(x, x, &p, 2.0f);
    br_xent_free(x);
    problem_free(&p);
}

/* ---- finite differences ---- */

/* The loss of check_fd: the configured one, or the mixup label form of
 * br_xent_loss (scale 1.3). */
typedef struct fd_loss {
    br_loss_config cfg;
    br_xent *x;
    const int32_t *target; /* last-ce: masked */
    int mixup;
} fd_loss;

static double fd_loss_eval(const problem *p, void *arg, float *dh, float *dE) {
    const fd_loss *f = arg;
    if (f->mixup) {
        const br_xent_labels lb = {f->target, p->target2, p->mix, p->weight};
        return br_xent_loss(f->x, p->h, p->T, &lb, f->cfg.focal_gamma, p->E, dE, dh, 1.3f);
    }
    return br_loss_eval(&f->cfg, f->x, p->h, p->T, f->target, p->neg, p->weight, p->D, p->E, dE, dh);
}

/* Finite differences of the loss of cfg (or its mixup label form) on p,
 * softmax items in blocks of block. */
static void check_fd(const char *label, const problem *p, const br_loss_config *cfg, int mixup, int32_t block) {
    br_error err;
    fd_loss f = {*cfg, NULL, p->target, mixup};
    if (br_loss_is_softmax(cfg->kind) || mixup) assert_non_null(f.x = br_xent_create(p->N, p->D, 3, block, &err));
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
        f.target = masked;
    }
    fd_check(label, "", p, fd_loss_eval, &f, 35);
    free(masked);
    br_xent_free(f.x);
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
