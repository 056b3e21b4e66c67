/* BASRec training step: finite differences of the whole loss (with the
 * RM-HSAOCL operators and losses too), the stacked layout under M-Crop, the
 * mask item, options in checkpoints, the adaptive weights, determinism of
 * BASRec training and the ablation switches. The
 * kernels are float32, so objectives are summed in double, each difference
 * divides by the perturbation actually stored in float, and every gradient
 * check comes per entry on a sample and as one directional derivative over
 * all parameters (whose many contributions average out rounding noise). */
#include "testutil.h"

#include <math.h>

#include "augment/augment.h"
#include "augment/basrec.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "models/model.h"
#include "eval/evaluate.h"
#include "eval/rank.h"
#include "train/checkpoint.h"
#include "train/loss.h"
#include "train/train.h"
#include "util/rng.h"

/* Train inputs (s[0:n-3], last 6 kept) of 6, 1, 3, 5 and 2 items, so
 * cross-sequence partners are often shorter; items recur across users so
 * that ItemCF-IUF finds substitutes. */
static const char *DATA = "1 7 1 4 9 4 12 30 2 17 4 25\n"
                          "2 3 5 8 11\n"
                          "3 12 30 2 22 19 2\n"
                          "4 5 8 11 20 6 3 28 13\n"
                          "5 9 4 21 16 7\n";
#define N_USERS 5
#define MAX_LEN 6
#define DIM 8
#define STEP_KEY 0xba5ecull
#define NEG_KEY 99

typedef struct fixture {
    br_dataset ds;
    br_model m;
    br_batch b; /* every user's training input, targets and negatives */
} fixture;

static void fill_normal(float *x, long n, float mean, float std, br_rng *r) {
    for (long i = 0; i < n; i++) x[i] = mean + std * (float)br_rng_normal(r);
}

static void fixture_init(fixture *f, float dropout) {
    char path[64];
    br_error err;
    assert_non_null(test_write_tmp(path, sizeof path, DATA));
    assert_int_equal(br_dataset_load(path, &f->ds, &err), 0);
    unlink(path);

    br_model_config cfg;
    br_model_config_defaults(&cfg);
    cfg.n_items = 30, cfg.dim = DIM, cfg.n_layers = 2, cfg.n_heads = 2, cfg.max_len = MAX_LEN;
    cfg.hidden_dropout = cfg.attn_dropout = dropout;
    assert_int_equal(br_model_create(&f->m, &cfg, &err), 0);
    br_model_init_weights(&f->m, 17);
    /* As test_gradcheck: the reference init (std 0.02, zero biases) makes
     * attention uniform and gradients tiny, so scale matrices up, spread
     * LayerNorm weights around 1 and give biases small values. */
    br_rng r;
    br_rng_seed(&r, 17, 1);
    for (int i = 0; i < f->m.params.n; i++) {
        const br_param *pi = &f->m.params.list[i];
        float *w = br_pdata(&f->m.params, i);
        if (strstr(pi->name, "LayerNorm.weight")) fill_normal(w, (long)pi->numel, 1, 0.1f, &r);
        else if (pi->ndim == 1) fill_normal(w, (long)pi->numel, 0, 0.1f, &r);
        else
            for (size_t k = 0; k < pi->numel; k++) w[k] *= 15.0f;
    }

    assert_int_equal(br_batch_alloc(&f->b, N_USERS, N_USERS * MAX_LEN, &err), 0);
    for (int32_t u = 0; u < N_USERS; u++) br_batch_add(&f->b, &f->ds, u, BR_SPLIT_TRAIN, MAX_LEN);
    assert_int_equal(f->b.n_seq, N_USERS);
    assert_int_equal(f->b.n_tok, 17);
    br_batch_sample_negatives(&f->b, &f->ds, NEG_KEY);
}

static void fixture_free(fixture *f) {
    br_batch_free(&f->b);
    br_model_free(&f->m);
    br_dataset_free(&f->ds);
}

/* loss NULL: bce. M-Mask's mask item is added to the model first. */
static br_basrec *make_basrec_loss(fixture *f, const br_basrec_config *cfg, const br_loss_config *loss) {
    br_error err;
    if (cfg->operators & BR_OP_MASK) assert_int_equal(br_model_add_mask_item(&f->m, 5, &err), 0);
    br_basrec *bs = br_basrec_create(cfg, loss, &f->m, &f->ds, f->b.n_seq, f->b.n_tok, &err);
    if (!bs) fail_msg("%s", err.msg);
    return bs;
}

static br_basrec *make_basrec(fixture *f, const br_basrec_config *cfg) {
    return make_basrec_loss(f, cfg, NULL);
}

/* ---- finite differences of the whole loss ---- */

typedef struct step_ctx {
    br_basrec *bs;
    const br_batch *b;
} step_ctx;

/* The step's loss; the gradient it also accumulates is ignored. */
static double step_obj(step_ctx *c) {
    br_basrec_stats st;
    return br_basrec_step(c->bs, c->b, STEP_KEY, &st);
}

/* Steps sit between float rounding noise and truncation error, as in
 * test_gradcheck's model checks; along a direction this loss wants a
 * larger step than plain SASRec (3e-4: up to 4.5e-4 rel err, rounding;
 * 1e-3: up to 7e-4, truncation; 5e-4: at most 2.2e-4 over several
 * directions). Under the softmax losses, where the float logits of every
 * item enter the loss, single entries only settle to about +-2e-4 (an item
 * row entry under focal: 0.00334, 0.00376, 0.00376, 0.00398, 0.00409 at
 * steps 8e-3 .. 5e-4 around the analytic 0.00388), so entries get
 * TOL_SOFTMAX there (at most 1.8e-2 measured); the directional check keeps
 * TOL_DIR (at most 1.6e-4). Errors count as absolute below FLOOR. */
#define EPS 5e-3f
#define EPS_DIR 5e-4f
#define TOL 1e-2
#define TOL_SOFTMAX 3e-2
#define TOL_DIR 1e-3
#define FLOOR 1e-2

static double rel_err(double fd, double an, double floor) {
    return fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), floor);
}

/* Central differences of x at the given entries against grad; fails past
 * tol, returns the worst relative error. */
static double check_indices(step_ctx *c, const char *name, float *x, const float *grad,
                            const long *idx, int n, double tol) {
    double worst = 0.0;
    for (int k = 0; k < n; k++) {
        const long i = idx[k];
        const float x0 = x[i];
        x[i] = x0 + EPS;
        const float xp = x[i];
        const double fp = step_obj(c);
        x[i] = x0 - EPS;
        const float xm = x[i];
        const double fm = step_obj(c);
        x[i] = x0;
        const double fd = (fp - fm) / ((double)xp - (double)xm);
        const double e = rel_err(fd, grad[i], FLOOR);
        if (e > tol)
            fail_msg("%s[%ld]: finite difference %.7g, analytic %.7g (rel err %.2e)", name, i, fd,
                     (double)grad[i], e);
        if (e > worst) worst = e;
    }
    return worst;
}

/* Moves all n entries of x but the n_fixed from fixed on by +-EPS_DIR *
 * N(0, 1) at once and compares f(+) - f(-) with grad dotted with the
 * stored step. */
static double check_direction(step_ctx *c, float *x, const float *grad, long n, long fixed,
                              long n_fixed, br_rng *r) {
    float *orig = malloc((size_t)n * sizeof *orig), *dir = malloc((size_t)n * sizeof *dir);
    assert_true(orig && dir);
    memcpy(orig, x, (size_t)n * sizeof *x);
    fill_normal(dir, n, 0.0f, EPS_DIR, r);
    for (long i = fixed; i < fixed + n_fixed; i++) dir[i] = 0.0f;
    for (long i = 0; i < n; i++) x[i] = orig[i] + dir[i];
    const double fp = step_obj(c);
    double an = 0.0;
    for (long i = 0; i < n; i++) {
        const float xp = x[i];
        x[i] = orig[i] - dir[i];
        an += (double)grad[i] * ((double)xp - (double)x[i]);
    }
    const double fm = step_obj(c);
    memcpy(x, orig, (size_t)n * sizeof *x);
    free(orig);
    free(dir);
    const double e = rel_err(fp - fm, an, FLOOR * 2.0 * EPS_DIR);
    if (e > TOL_DIR)
        fail_msg("all parameters: directional difference %.7g, analytic %.7g (rel err %.2e)", fp - fm,
                 an, e);
    return e;
}

/* Checks the gradient of the whole BASRec loss under cfg and loss (NULL:
 * bce) w.r.t. every parameter tensor (sampled entries; the mask item's row
 * among them with M-Mask) and along a random direction. */
static void check_basrec_grad_loss(const char *label, const br_basrec_config *cfg,
                                   const br_loss_config *lc) {
    fixture f;
    fixture_init(&f, 0.1f);
    br_basrec *bs = make_basrec_loss(&f, cfg, lc);
    step_ctx c = {bs, &f.b};
    br_params *p = &f.m.params;

    br_params_zero_grad(p);
    br_basrec_stats st;
    const double loss = br_basrec_step(bs, &f.b, STEP_KEY, &st);
    /* Keep the analytic gradient: every later evaluation accumulates more. */
    float *grad = malloc(p->total * sizeof *grad);
    assert_non_null(grad);
    memcpy(grad, p->grad, p->total * sizeof *grad);
    /* Same key, same draws and masks: the objective reproduces the loss. */
    assert_true(step_obj(&c) == loss);

    /* Nothing reads the padding row (a missing partner slot is a zero
     * vector, not row 0), or under mix padding encode it is read but, as
     * the reference's padding_idx, never trained: its gradient stays 0. */
    const float *g_pad = grad + p->list[f.m.item_emb].offset;
    for (int d = 0; d < DIM; d++) assert_true(g_pad[d] == 0.0f);
    /* Every M-Mask copy masks at least one item: its row gets gradient. */
    if (cfg->operators & BR_OP_MASK) {
        const float *g_mask = grad + p->list[f.m.mask_emb].offset;
        double norm = 0.0;
        for (int d = 0; d < DIM; d++) norm += fabs(g_mask[d]);
        assert_true(norm > 0.0);
    }

    /* Item rows that carry gradient: inputs, targets, negatives and the
     * ItemCF-IUF substitutes of inputs; plus the padding row. */
    br_item_sim sim;
    br_error err;
    assert_int_equal(br_item_sim_build(&f.ds, &sim, &err), 0);
    br_rng r;
    br_rng_seed(&r, 23, 0);
    enum { N_ITEM_IDX = 17, N_SAMPLE = 6 };
    long item_idx[N_ITEM_IDX];
    for (int k = 0; k < N_ITEM_IDX - 1; k++) {
        const int32_t t = (int32_t)br_rng_below(&r, (uint64_t)f.b.n_tok);
        const int32_t sub = sim.most_similar[f.b.item[t]];
        const int32_t row = k % 4 == 0 ? f.b.item[t] : k % 4 == 1 ? f.b.target[t]
                          : k % 4 == 2 ? f.b.neg[t] : sub > 0 ? sub : f.b.item[t];
        item_idx[k] = (long)row * DIM + (long)br_rng_below(&r, DIM);
    }
    /* The padding row's derivative is 0 where nothing reads it; under mix
     * padding encode it is deliberately dropped, so it is not checked. */
    item_idx[N_ITEM_IDX - 1] = (long)br_rng_below(&r, DIM) +
                               (cfg->mix_pad == BR_MIX_PAD_ENCODE ? (long)f.b.target[0] * DIM : 0);
    br_item_sim_free(&sim);

    double worst = 0.0;
    const char *worst_name = "";
    const double tol = lc && br_loss_is_softmax(lc->kind) ? TOL_SOFTMAX : TOL;
    for (int i = 0; i < p->n; i++) {
        const br_param *pi = &p->list[i];
        float *x = br_pdata(p, i);
        const float *g = grad + pi->offset;
        double e;
        if (i == f.m.item_emb) {
            e = check_indices(&c, pi->name, x, g, item_idx, N_ITEM_IDX, tol);
        } else {
            long idx[N_SAMPLE];
            const int n = pi->numel < N_SAMPLE ? (int)pi->numel : N_SAMPLE;
            for (int k = 0; k < n; k++) idx[k] = (long)br_rng_below(&r, pi->numel);
            e = check_indices(&c, pi->name, x, g, idx, n, tol);
        }
        if (e > worst) worst = e, worst_name = pi->name;
    }
    /* Under mix padding encode the padding row is held fixed (see above). */
    const long pad_row = (long)p->list[f.m.item_emb].offset;
    const double e_dir = check_direction(&c, p->data, grad, (long)p->total, pad_row,
                                         cfg->mix_pad == BR_MIX_PAD_ENCODE ? DIM : 0, &r);
    print_message("%-22s loss %.4f | worst entry %.1e (%s) | direction %.1e\n", label, loss, worst,
                  worst_name, e_dir);

    free(grad);
    br_basrec_free(bs);
    fixture_free(&f);
}

static void check_basrec_grad(const char *label, const br_basrec_config *cfg) {
    check_basrec_grad_loss(label, cfg, NULL);
}

static void test_grad_all(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    check_basrec_grad("all modules", &cfg);
}

static void test_grad_linear(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.nonlinear = 0;
    check_basrec_grad("linear mixup", &cfg);
}

static void test_grad_single_only(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.cross_seq = 0;
    check_basrec_grad("single-seq only", &cfg);
}

static void test_grad_cross_only(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.single_seq = 0;
    check_basrec_grad("cross-seq only", &cfg);
}

/* RM-HSAOCL: the new operators (alone, so that every copy uses them, and
 * with the old ones), both crop alignments, and the softmax losses. */
static void test_grad_crop_mask(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.operators = BR_OP_CROP | BR_OP_MASK;
    check_basrec_grad("crop+mask, suffix", &cfg);
    cfg.crop_align = BR_CROP_PAD;
    check_basrec_grad("crop+mask, pad", &cfg);
}

static void test_grad_softmax_losses(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    br_loss_config lc;
    br_loss_config_defaults(&lc);
    lc.kind = BR_LOSS_CE;
    check_basrec_grad_loss("ce", &cfg, &lc);
    cfg.operators = BR_OP_ALL;
    cfg.crop_align = BR_CROP_PAD;
    check_basrec_grad_loss("ce, all operators, pad", &cfg, &lc);
    cfg.crop_align = BR_CROP_SUFFIX;
    lc.kind = BR_LOSS_LAST_CE;
    check_basrec_grad_loss("last-ce, all operators", &cfg, &lc);
    lc.kind = BR_LOSS_FOCAL;
    check_basrec_grad_loss("focal, all operators", &cfg, &lc);
    /* 256 draws from 30 items: repeats and hits of every label */
    lc.kind = BR_LOSS_SAMPLED_CE;
    check_basrec_grad_loss("sampled-ce, all ops", &cfg, &lc);
    lc.ce_negatives = 5;
    lc.ce_sampler = BR_SAMPLER_UNIFORM;
    check_basrec_grad_loss("sampled-ce K 5 uniform", &cfg, &lc);
}

/* Mix padding "last": a shorter partner's last output takes the place of
 * the zero vector, so gradient reaches it from slots it has no token at. */
static void test_grad_mix_pad_last(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.single_seq = 0;
    cfg.mix_pad = BR_MIX_PAD_LAST;
    check_basrec_grad("mix pad last", &cfg);
    cfg.nonlinear = 0;
    check_basrec_grad("mix pad last, linear", &cfg);
    cfg.nonlinear = 1;
    br_loss_config lc;
    br_loss_config_defaults(&lc);
    lc.kind = BR_LOSS_CE;
    check_basrec_grad_loss("mix pad last, ce", &cfg, &lc);
}

static void test_operator_names(void **state) {
    unsigned ops = 0;
    char buf[40];
    assert_int_equal(br_basrec_parse_operators("reorder,substitute", &ops), 0);
    assert_int_equal(ops, BR_OPS_BASREC);
    assert_int_equal(br_basrec_parse_operators("mask,crop,mask", &ops), 0);
    assert_int_equal(ops, BR_OP_CROP | BR_OP_MASK);
    br_basrec_format_operators(ops, buf, sizeof buf);
    assert_string_equal(buf, "crop,mask");
    for (unsigned set = 1; set <= BR_OP_ALL; set++) {
        br_basrec_format_operators(set, buf, sizeof buf);
        assert_int_equal(br_basrec_parse_operators(buf, &ops), 0);
        assert_int_equal(ops, set);
    }
    ops = 3;
    const char *bad[] = {"", "crop,", ",crop", "crop,,mask", "shuffle", "Crop", "reorder substitute"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(br_basrec_parse_operators(bad[i], &ops), -1);
    assert_int_equal(ops, 3);
    br_crop_align a;
    assert_int_equal(br_crop_align_parse("pad", &a), 0);
    assert_int_equal(a, BR_CROP_PAD);
    assert_string_equal(br_crop_align_name(BR_CROP_SUFFIX), "suffix");
    assert_int_equal(br_crop_align_parse("left", &a), -1);
    br_mix_pad mp;
    assert_int_equal(br_mix_pad_parse("last", &mp), 0);
    assert_int_equal(mp, BR_MIX_PAD_LAST);
    assert_string_equal(br_mix_pad_name(BR_MIX_PAD_ZERO), "zero");
    assert_int_equal(br_mix_pad_parse("encode", &mp), 0);
    assert_int_equal(mp, BR_MIX_PAD_ENCODE);
    assert_int_equal(br_mix_pad_parse("first", &mp), -1);
    /* BASRec's configuration is the default. */
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    assert_int_equal(cfg.operators, BR_OPS_BASREC);
    assert_int_equal(cfg.crop_align, BR_CROP_SUFFIX);
    assert_int_equal(cfg.mix_pad, BR_MIX_PAD_ZERO);
    assert_int_equal(cfg.weight_form, BR_WEIGHT_BATCH);
}

/* ---- the mask item ---- */

/* The mask item is never scored: with its row made the best match of
 * every user by far, top-k lists and full-ranking metrics are unchanged,
 * and no list holds an id beyond the catalogue. Adding it keeps the other
 * tensors, their Adam state and their offsets. */
static void test_mask_never_ranked(void **state) {
    fixture f;
    fixture_init(&f, 0.0f);
    br_model *m = &f.m;
    br_error err;
    const size_t total = m->params.total;
    float *before = malloc(total * sizeof *before);
    assert_non_null(before);
    memcpy(before, m->params.data, total * sizeof *before);
    m->params.adam_step = 7;
    m->params.adam_m[3] = 0.25f;
    assert_int_equal(br_model_add_mask_item(m, 5, &err), 0);
    assert_true(m->mask_emb > 0 && m->params.total == total + DIM);
    assert_string_equal(m->params.list[m->mask_emb].name, BR_MASK_EMB_NAME);
    assert_memory_equal(m->params.data, before, total * sizeof *before);
    assert_true(m->params.adam_step == 7 && m->params.adam_m[3] == 0.25f);
    const int idx = m->mask_emb;
    assert_int_equal(br_model_add_mask_item(m, 6, &err), 0); /* already there: a no-op */
    assert_int_equal(m->mask_emb, idx);
    assert_true(m->params.total == total + DIM);
    free(before);

    const int32_t users[2] = {0, 3}, K = 10;
    float repr[2 * DIM];
    assert_int_equal(br_encode_users(m, &f.ds, users, 2, BR_SPLIT_TEST, repr, &err), 0);
    int32_t items_a[2 * K], items_b[2 * K];
    float scores_a[2 * K], scores_b[2 * K];
    br_metrics ma, mb;
    const int32_t NI = m->cfg.n_items;
    assert_int_equal(br_topk(repr, 2, br_model_items(m), NI, DIM, K, NULL, items_a, scores_a, &err), 0);
    assert_int_equal(br_evaluate(m, &f.ds, BR_SPLIT_TEST, &ma, &err), 0);
    float *mask = br_pdata(&m->params, m->mask_emb);
    for (int d = 0; d < DIM; d++) mask[d] = 1e4f * (repr[d] + repr[DIM + d]);
    assert_int_equal(br_topk(repr, 2, br_model_items(m), NI, DIM, K, NULL, items_b, scores_b, &err), 0);
    assert_int_equal(br_evaluate(m, &f.ds, BR_SPLIT_TEST, &mb, &err), 0);
    assert_memory_equal(items_a, items_b, sizeof items_a);
    assert_memory_equal(scores_a, scores_b, sizeof scores_a);
    assert_memory_equal(&ma, &mb, sizeof ma);
    for (int i = 0; i < 2 * K; i++) assert_true(items_b[i] >= 1 && items_b[i] <= NI);
    fixture_free(&f);
}

/* ---- options in resumable checkpoints ---- */

/* Loss, operators, alignment and the run's state survive a resumable
 * checkpoint, with the mask item's row; a weights-only checkpoint leaves
 * the row out. */
static void test_checkpoint_options(void **state) {
    fixture f;
    fixture_init(&f, 0.1f);
    br_error err;
    assert_int_equal(br_model_add_mask_item(&f.m, 5, &err), 0);
    float *mask = br_pdata(&f.m.params, f.m.mask_emb);
    mask[2] = 0.625f;
    br_train_config tc;
    br_train_config_defaults(&tc);
    tc.use_basrec = 1;
    tc.basrec.operators = BR_OP_CROP | BR_OP_MASK | BR_OP_REORDER;
    tc.basrec.crop_align = BR_CROP_PAD;
    tc.basrec.mix_pad = BR_MIX_PAD_LAST;
    tc.basrec.weight_form = BR_WEIGHT_SEQUENCE;
    tc.loss.kind = BR_LOSS_FOCAL;
    tc.loss.focal_gamma = 1.5f;
    tc.loss.ce_negatives = 77;
    tc.loss.ce_sampler = BR_SAMPLER_UNIFORM;
    br_train_state st = {3, 2, 0.125, 1, 42.5};
    char dir[] = "/tmp/basrec-ckpt-XXXXXX", path[64], wpath[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    snprintf(wpath, sizeof wpath, "%s/best.safetensors", dir);
    assert_int_equal(br_checkpoint_save(path, &f.m, &f.ds, &tc, &st, &err), 0);
    assert_int_equal(br_checkpoint_save(wpath, &f.m, &f.ds, NULL, NULL, &err), 0);

    br_model m2;
    br_train_config tc2;
    br_train_state st2;
    if (br_checkpoint_load(path, &m2, &f.ds, 1, &tc2, &st2, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(tc2.basrec.operators, tc.basrec.operators);
    assert_int_equal(tc2.basrec.crop_align, BR_CROP_PAD);
    assert_int_equal(tc2.basrec.mix_pad, BR_MIX_PAD_LAST);
    assert_int_equal(tc2.basrec.weight_form, BR_WEIGHT_SEQUENCE);
    assert_int_equal(tc2.loss.kind, BR_LOSS_FOCAL);
    assert_true(tc2.loss.focal_gamma == 1.5f);
    assert_int_equal(tc2.loss.ce_negatives, 77);
    assert_int_equal(tc2.loss.ce_sampler, BR_SAMPLER_UNIFORM);
    assert_int_equal(st2.epoch, 3);
    assert_int_equal(st2.best_epoch, 2);
    assert_true(st2.best_score == 0.125 && st2.bad_epochs == 1);
    assert_true(st2.seconds == 42.5);
    assert_true(m2.mask_emb > 0 && br_pdata(&m2.params, m2.mask_emb)[2] == 0.625f);
    assert_int_equal(m2.params.n, f.m.params.n);
    br_model_free(&m2);

    /* Weights only: the inference model, without the row. */
    if (br_checkpoint_load(wpath, &m2, &f.ds, 1, NULL, NULL, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(m2.mask_emb, 0);
    assert_int_equal(m2.params.n, f.m.params.n - 1);
    assert_memory_equal(m2.params.data, f.m.params.data, m2.params.total * sizeof(float));
    br_model_free(&m2);
    unlink(path);
    unlink(wpath);
    rmdir(dir);
    fixture_free(&f);
}

/* ---- adaptive weights ---- */

static void test_adaptive_weights(void **state) {
    float w[10];
    /* lam * rate = 0.2, 0.1, 0.5: raw weights 5, 10, 2 -> (w - 2) / 8. */
    {
        const float lam[3] = {0.5f, 0.25f, 1.0f}, rate[3] = {0.4f, 0.4f, 0.5f};
        br_basrec_adaptive_weights(lam, rate, 3, w);
        assert_float_equal(w[0], 0.375f, 1e-6f);
        assert_float_equal(w[1], 1.0f, 0.0f);
        assert_float_equal(w[2], 0.0f, 0.0f);
    }
    /* Equal products (and a single copy) weigh 1. */
    {
        const float lam[3] = {0.5f, 0.25f, 0.5f}, rate[3] = {0.3f, 0.6f, 0.3f};
        br_basrec_adaptive_weights(lam, rate, 3, w);
        for (int i = 0; i < 3; i++) assert_true(w[i] == 1.0f);
        br_basrec_adaptive_weights(lam, rate, 1, w);
        assert_true(w[0] == 1.0f);
    }
    /* lam = 0 (a Beta draw can round to it) and rate = 0 stay finite; the
     * largest raw weight still gets 1. */
    {
        const float lam[4] = {0.0f, 0.5f, 1.0f, 0.7f}, rate[4] = {0.5f, 0.5f, 0.5f, 0.0f};
        br_basrec_adaptive_weights(lam, rate, 4, w);
        for (int i = 0; i < 4; i++) assert_true(isfinite(w[i]) && w[i] >= 0.0f && w[i] <= 1.0f);
        assert_true(w[0] == 1.0f && w[3] == 1.0f && w[2] == 0.0f);
        const float zero[2] = {0.0f, 0.0f}, half[2] = {0.5f, 0.5f};
        br_basrec_adaptive_weights(zero, half, 2, w);
        assert_true(w[0] == 1.0f && w[1] == 1.0f);
    }
    /* Random draws: in [0, 1], 0 at the largest lam * rate, 1 at the
     * smallest, and ordered inversely to lam * rate. */
    br_rng r;
    br_rng_seed(&r, 5, 0);
    for (int rep = 0; rep < 100; rep++) {
        float lam[10], rate[10];
        int lo = 0, hi = 0;
        for (int i = 0; i < 10; i++) {
            lam[i] = (float)br_rng_uniform(&r) + 1e-3f;
            rate[i] = 0.2f + 0.5f * (float)br_rng_uniform(&r);
            if (lam[i] * rate[i] < lam[lo] * rate[lo]) lo = i;
            if (lam[i] * rate[i] > lam[hi] * rate[hi]) hi = i;
        }
        br_basrec_adaptive_weights(lam, rate, 10, w);
        assert_true(w[lo] == 1.0f && w[hi] == 0.0f);
        for (int i = 0; i < 10; i++) {
            assert_true(w[i] >= 0.0f && w[i] <= 1.0f);
            for (int j = 0; j < 10; j++)
                if (lam[i] * rate[i] < lam[j] * rate[j]) assert_true(w[i] >= w[j]);
        }
    }
}

/* The reference code's weight form: a copy's mean loss times the batch's
 * summed weight. Min-max normalised over two sequences the weights are 1
 * and 0, so the sum is 1 and the loss is the constant-weight one; the
 * per-sequence form drops the sequence of weight 0 instead. On all five
 * users the sum is at least the largest weight, 1, so the batch form
 * weighs every copy at least as much. Its gradient passes finite
 * differences. */
static void test_weight_form(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.cross_seq = 0;
    cfg.weight_form = BR_WEIGHT_SEQUENCE;
    br_weight_form wf;
    assert_int_equal(br_weight_form_parse("batch", &wf), 0);
    assert_int_equal(wf, BR_WEIGHT_BATCH);
    assert_string_equal(br_weight_form_name(BR_WEIGHT_SEQUENCE), "sequence");
    assert_int_equal(br_weight_form_parse("mean", &wf), -1);

    fixture f;
    fixture_init(&f, 0.1f);
    br_batch two;
    br_error err;
    assert_int_equal(br_batch_alloc(&two, 2, 2 * MAX_LEN, &err), 0);
    br_batch_add(&two, &f.ds, 0, BR_SPLIT_TRAIN, MAX_LEN);
    br_batch_add(&two, &f.ds, 2, BR_SPLIT_TRAIN, MAX_LEN);
    br_batch_sample_negatives(&two, &f.ds, NEG_KEY);
    double ssa[2][3]; /* [batch: two users, all][sequence, batch, constant] */
    for (int which = 0; which < 2; which++)
        for (int form = 0; form < 3; form++) {
            br_basrec_config c = cfg;
            c.weight_form = form == 1 ? BR_WEIGHT_BATCH : BR_WEIGHT_SEQUENCE;
            c.adaptive_weight = form != 2;
            br_basrec *bs = make_basrec(&f, &c);
            br_basrec_stats st;
            br_params_zero_grad(&f.m.params);
            br_basrec_step(bs, which ? &f.b : &two, STEP_KEY, &st);
            ssa[which][form] = st.loss_ssa;
            br_basrec_free(bs);
        }
    assert_true(ssa[0][1] == ssa[0][2]);
    assert_true(ssa[0][0] < ssa[0][1]);
    assert_true(ssa[1][0] < ssa[1][1]);
    br_batch_free(&two);
    fixture_free(&f);

    cfg.weight_form = BR_WEIGHT_BATCH;
    check_basrec_grad("single-seq, batch weights", &cfg);
}

/* ---- determinism of BASRec training ---- */

/* A model initialised from the trainer's seed, trained for 3 steps on all
 * users with the given step keys (rm: all four operators and ce); returns
 * the trainer (caller frees). */
static br_trainer *train_3(fixture *f, const uint64_t keys[3], int rm) {
    br_train_config tc;
    br_train_config_defaults(&tc);
    tc.batch_size = N_USERS;
    tc.use_basrec = 1;
    if (rm) {
        tc.basrec.operators = BR_OP_ALL;
        tc.loss.kind = BR_LOSS_CE;
    }
    br_model_init_weights(&f->m, tc.seed);
    br_error err;
    br_trainer *tr = br_trainer_create(&f->m, &f->ds, &tc, &err);
    assert_non_null(tr);
    const int32_t rows[N_USERS] = {0, 1, 2, 3, 4};
    for (int k = 0; k < 3; k++) {
        const double loss = br_trainer_step(tr, rows, N_USERS, keys[k]);
        assert_true(isfinite(loss) && loss > 0.0);
    }
    return tr;
}

static void test_determinism(void **state) {
    static const uint64_t keys[3] = {11, 12, 13}, other[3] = {11, 12, 14};
    for (int rm = 0; rm <= 1; rm++) {
        fixture a, b, c;
        fixture_init(&a, 0.1f);
        fixture_init(&b, 0.1f);
        fixture_init(&c, 0.1f);
        br_trainer *ta = train_3(&a, keys, rm), *tb = train_3(&b, keys, rm), *tc = train_3(&c, other, rm);
        assert_true((a.m.mask_emb > 0) == rm);
        const size_t bytes = a.m.params.total * sizeof(float);
        assert_memory_equal(a.m.params.data, b.m.params.data, bytes);
        assert_memory_not_equal(a.m.params.data, c.m.params.data, bytes);
        br_trainer_free(ta), br_trainer_free(tb), br_trainer_free(tc);
        fixture_free(&a), fixture_free(&b), fixture_free(&c);
    }
}

/* Plain (single-stage) training with each loss: finite, reproducible, and
 * each loss its own objective. */
static void test_plain_losses(void **state) {
    enum { N_KINDS = 5 };
    const br_loss_kind kinds[N_KINDS] = {BR_LOSS_BCE, BR_LOSS_CE, BR_LOSS_LAST_CE, BR_LOSS_FOCAL,
                                         BR_LOSS_SAMPLED_CE};
    float *params[N_KINDS];
    size_t bytes = 0;
    for (int k = 0; k < N_KINDS; k++) {
        float *run[2];
        for (int rep = 0; rep < 2; rep++) {
            fixture f;
            fixture_init(&f, 0.1f);
            br_train_config tc;
            br_train_config_defaults(&tc);
            tc.batch_size = N_USERS;
            tc.loss.kind = kinds[k];
            br_model_init_weights(&f.m, tc.seed);
            br_error err;
            br_trainer *tr = br_trainer_create(&f.m, &f.ds, &tc, &err);
            assert_non_null(tr);
            const int32_t rows[N_USERS] = {0, 1, 2, 3, 4};
            for (uint64_t key = 1; key <= 3; key++) {
                const double loss = br_trainer_step(tr, rows, N_USERS, key);
                assert_true(isfinite(loss) && loss > 0.0);
            }
            bytes = f.m.params.total * sizeof(float);
            run[rep] = malloc(bytes);
            assert_non_null(run[rep]);
            memcpy(run[rep], f.m.params.data, bytes);
            br_trainer_free(tr);
            fixture_free(&f);
        }
        assert_memory_equal(run[0], run[1], bytes);
        free(run[1]);
        params[k] = run[0];
        for (int j = 0; j < k; j++) assert_memory_not_equal(params[j], params[k], bytes);
    }
    for (int k = 0; k < N_KINDS; k++) free(params[k]);
}

/* ---- ablation switches ---- */

static br_basrec_stats run_step(fixture *f, const br_basrec_config *cfg) {
    br_basrec *bs = make_basrec(f, cfg);
    br_basrec_stats st;
    const double loss = br_basrec_step(bs, &f->b, STEP_KEY, &st);
    br_basrec_free(bs);
    assert_true(isfinite(loss));
    assert_true(loss == st.loss_main + st.loss_ssa + st.loss_csa);
    /* A mean of cosines: never outside [-1, 1]. */
    if (!(fabs(st.aug_cosine) <= 1.0)) fail_msg("aug_cosine %.17g", st.aug_cosine);
    return st;
}

static void assert_rel_close(double a, double b, double tol) {
    if (fabs(a - b) > tol * fmax(fabs(a), fabs(b))) fail_msg("%.9g vs %.9g", a, b);
}

static void test_ablations(void **state) {
    fixture f;
    fixture_init(&f, 0.1f);
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    const br_basrec_stats all = run_step(&f, &cfg);
    assert_true(all.loss_main > 0.0 && all.loss_ssa > 0.0 && all.loss_csa > 0.0);
    assert_true(all.aug_cosine != 0.0);

    /* The plain pass does not see the copies stacked after it, and the
     * cross-sequence mixes only use the plain pass: dropping a module leaves
     * the other terms (up to BLAS rounding on the smaller stack). */
    br_basrec_config c = cfg;
    c.single_seq = 0;
    br_basrec_stats st = run_step(&f, &c);
    assert_true(st.loss_ssa == 0.0 && st.aug_cosine == 0.0);
    assert_rel_close(st.loss_main, all.loss_main, 1e-6);
    assert_rel_close(st.loss_csa, all.loss_csa, 1e-6);

    c = cfg;
    c.cross_seq = 0;
    st = run_step(&f, &c);
    assert_true(st.loss_csa == 0.0);
    assert_true(st.loss_main == all.loss_main && st.loss_ssa == all.loss_ssa);

    c = cfg;
    c.n_whole_level = 0;
    st = run_step(&f, &c);
    assert_true(st.loss_csa == 0.0);
    assert_true(st.loss_main == all.loss_main && st.loss_ssa == all.loss_ssa);

    /* Same copies, weights all 1 instead of in [0, 1] with one 0 and one 1
     * per copy index: per sequence, the same per-copy losses summed with
     * larger weights; in the batch form, a copy's mean loss scaled by 1
     * instead of the weights' sum, which exceeds 1 here. */
    c = cfg;
    c.adaptive_weight = 0;
    st = run_step(&f, &c);
    assert_true(st.loss_main == all.loss_main && st.loss_csa == all.loss_csa);
    assert_true(st.aug_cosine == all.aug_cosine);
    assert_int_equal(cfg.weight_form, BR_WEIGHT_BATCH);
    assert_true(st.loss_ssa < all.loss_ssa);
    c.weight_form = BR_WEIGHT_SEQUENCE;
    assert_true(run_step(&f, &c).loss_ssa == st.loss_ssa);
    c.adaptive_weight = 1;
    assert_true(run_step(&f, &c).loss_ssa < st.loss_ssa);
    fixture_free(&f);
}

/* With every item embedding equal and no dropout, augmentation is
 * invisible: each copy's input equals the plain one, so L_main is the plain
 * BCE of the batch, each unweighted copy repeats it and the copies' outputs
 * point the same way as the originals'. */
static void test_invisible_augmentation(void **state) {
    fixture f;
    fixture_init(&f, 0.0f);
    float *E = br_model_items(&f.m);
    for (int32_t i = 2; i <= f.m.cfg.n_items; i++) memcpy(E + (size_t)i * DIM, E + DIM, DIM * sizeof(float));

    const int32_t T = f.b.n_tok;
    float *x = malloc((size_t)T * DIM * sizeof(float)), *h = malloc((size_t)T * DIM * sizeof(float));
    float *dh = malloc((size_t)T * DIM * sizeof(float));
    float *dE = calloc((size_t)(f.m.cfg.n_items + 1) * DIM, sizeof(float));
    assert_true(x && h && dh && dE);
    br_error err;
    assert_int_equal(br_model_reserve(&f.m, T, f.b.n_seq, &err), 0);
    const br_tokens tok = br_batch_tokens(&f.b);
    br_model_gather(&f.m, f.b.item, T, x);
    f.m.backbone->vt->forward(f.m.backbone, &f.m.params, &tok, x, h, 1, 0);
    const double plain = br_bce_loss(h, f.b.target, f.b.neg, NULL, T, DIM, E, dE, dh, 1.0f);

    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.adaptive_weight = 0;
    const br_basrec_stats st = run_step(&f, &cfg);
    assert_rel_close(st.loss_main, plain, 1e-6);
    assert_rel_close(st.loss_ssa, 2.0 * cfg.n_pairs * plain, 1e-5);
    assert_true(st.aug_cosine > 1.0 - 1e-5);

    free(x), free(h), free(dh), free(dE);
    fixture_free(&f);
}

/* Mix padding "encode": the plain pass also encodes the padded slots and
 * the partner's outputs there are mixed in, so gradient flows through
 * padded queries (attending to all slots) into every encoder weight. */
static void test_grad_mix_pad_encode(void **state) {
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.mix_pad = BR_MIX_PAD_ENCODE;
    check_basrec_grad("mix pad encode", &cfg);
    cfg.single_seq = 0;
    cfg.nonlinear = 0;
    check_basrec_grad("mix pad encode, linear", &cfg);
    cfg.nonlinear = 1;
    br_loss_config lc;
    br_loss_config_defaults(&lc);
    lc.kind = BR_LOSS_CE;
    check_basrec_grad_loss("mix pad encode, ce", &cfg, &lc);
}

/* Cross-sequence mixes of identical sequences (one row three times, no
 * dropout) mix each output and target with an equal one, whatever the
 * permutation and weights, so each of the 2 * n_whole_level mixes repeats
 * L_main; a partner slot taken as missing or misaligned would not. */
static void test_identical_partners(void **state) {
    fixture f;
    fixture_init(&f, 0.0f);
    br_batch_clear(&f.b);
    for (int k = 0; k < 3; k++) br_batch_add(&f.b, &f.ds, 0, BR_SPLIT_TRAIN, MAX_LEN);
    br_batch_sample_negatives(&f.b, &f.ds, NEG_KEY);

    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    cfg.single_seq = 0;
    for (int nonlinear = 0; nonlinear <= 1; nonlinear++) {
        cfg.nonlinear = nonlinear;
        const br_basrec_stats st = run_step(&f, &cfg);
        assert_rel_close(st.loss_csa, 2.0 * cfg.n_whole_level * st.loss_main, 1e-5);
    }
    fixture_free(&f);
}

/* The fixture's lengths differ, so some partners are shorter: mix padding
 * changes the cross-sequence loss and nothing else. */
static void test_mix_pad_effect(void **state) {
    fixture f;
    fixture_init(&f, 0.0f);
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    const br_basrec_stats zero = run_step(&f, &cfg);
    cfg.mix_pad = BR_MIX_PAD_LAST;
    const br_basrec_stats last = run_step(&f, &cfg);
    assert_true(last.loss_main == zero.loss_main && last.loss_ssa == zero.loss_ssa);
    if (!(fabs(last.loss_csa - zero.loss_csa) > 1e-4 * zero.loss_csa))
        fail_msg("loss_csa %.9g with last, %.9g with zero", last.loss_csa, zero.loss_csa);
    /* encode: the real tokens' outputs are the ragged ones (up to rounding:
     * the stacked batch is laid out differently); only the mixes change. */
    cfg.mix_pad = BR_MIX_PAD_ENCODE;
    const br_basrec_stats enc = run_step(&f, &cfg);
    assert_rel_close(enc.loss_main, zero.loss_main, 1e-6);
    assert_rel_close(enc.loss_ssa, zero.loss_ssa, 1e-6);
    if (!(fabs(enc.loss_csa - zero.loss_csa) > 1e-4 * zero.loss_csa))
        fail_msg("loss_csa %.9g with encode, %.9g with zero", enc.loss_csa, zero.loss_csa);
    assert_true(enc.tokens == zero.tokens + (double)(f.b.n_seq * MAX_LEN - f.b.n_tok));
    fixture_free(&f);
}

/* ---- the stacked layout under M-Crop ---- */

/* Crop copies hold max(int(rate * n), 1) tokens with suffix alignment and
 * n with pad; the other operators keep n. Fixture lengths: 6, 1, 3, 5, 2. */
static void test_crop_layout(void **state) {
    static const int32_t lens[N_USERS] = {6, 1, 3, 5, 2};
    fixture f;
    fixture_init(&f, 0.1f);
    br_basrec_config cfg;
    br_basrec_config_defaults(&cfg);
    const int32_t K = 2 * cfg.n_pairs;
    const float rates[] = {0.0f, 0.34f, 0.5f, 1.0f};
    for (size_t i = 0; i < sizeof rates / sizeof *rates; i++) {
        cfg.rate_min = cfg.rate_max = rates[i];
        int32_t crop_tok = 0;
        for (int u = 0; u < N_USERS; u++) {
            int32_t c = (int32_t)(rates[i] * (float)lens[u]);
            crop_tok += c < 1 ? 1 : c;
        }
        cfg.operators = BR_OP_CROP;
        cfg.crop_align = BR_CROP_SUFFIX;
        br_basrec_stats st = run_step(&f, &cfg);
        assert_true(st.tokens == 17 + K * crop_tok);
        cfg.crop_align = BR_CROP_PAD;
        st = run_step(&f, &cfg);
        assert_true(st.tokens == 17 * (K + 1));
        cfg.operators = BR_OP_REORDER | BR_OP_SUBSTITUTE | BR_OP_MASK;
        st = run_step(&f, &cfg);
        assert_true(st.tokens == 17 * (K + 1));
    }
    /* A whole-sequence crop is the original: with no dropout each copy's
     * unweighted loss repeats the plain one, under either alignment. */
    fixture g;
    fixture_init(&g, 0.0f);
    cfg.operators = BR_OP_CROP;
    cfg.rate_min = cfg.rate_max = 1.0f;
    cfg.adaptive_weight = 0;
    cfg.cross_seq = 0;
    for (int align = 0; align < 2; align++) {
        cfg.crop_align = (br_crop_align)align;
        const br_basrec_stats st = run_step(&g, &cfg);
        assert_rel_close(st.loss_ssa, K * st.loss_main, 1e-5);
        assert_true(st.aug_cosine > 1.0 - 1e-5);
    }
    fixture_free(&g);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_all),
        cmocka_unit_test(test_grad_linear),
        cmocka_unit_test(test_grad_single_only),
        cmocka_unit_test(test_grad_cross_only),
        cmocka_unit_test(test_grad_crop_mask),
        cmocka_unit_test(test_grad_softmax_losses),
        cmocka_unit_test(test_grad_mix_pad_last),
        cmocka_unit_test(test_grad_mix_pad_encode),
        cmocka_unit_test(test_mix_pad_effect),
        cmocka_unit_test(test_crop_layout),
        cmocka_unit_test(test_operator_names),
        cmocka_unit_test(test_mask_never_ranked),
        cmocka_unit_test(test_checkpoint_options),
        cmocka_unit_test(test_plain_losses),
        cmocka_unit_test(test_adaptive_weights),
        cmocka_unit_test(test_weight_form),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_ablations),
        cmocka_unit_test(test_invisible_augmentation),
        cmocka_unit_test(test_identical_partners),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
