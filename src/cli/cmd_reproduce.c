/* basrec reproduce: one named configuration of the papers' tables (dataset,
 * backbone, method, ablation) over several seeds. Each seed's run lives in
 * its own directory and is skipped when finished or resumed when
 * interrupted, provided its checkpoint says it was made with the same
 * configuration; the stage 1 of BASRec and RM-HSAOCL is the plain run of the
 * same seed and loss, shared by every variant with that loss. The mean
 * and standard deviation of the test metrics are appended to a results file
 * as one JSON line. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "eval/rank.h"
#include "models/model.h"
#include "train/checkpoint.h"
#include "util/fileio.h"

#define MAX_SEEDS 32

typedef struct ablation {
    const char *name;
    int single_seq, cross_seq, adaptive_weight, nonlinear, joint;
    unsigned operators;
    br_loss_kind loss;
    br_weight_form weight_form;
} ablation;

/* BASRec's variants: paper Table 5. The first is the method itself. The
 * adaptive weights enter as the reference code computes them (batch). */
static const ablation basrec_ablations[] = {
    {"none", 1, 1, 1, 1, 0, BR_OPS_BASREC, BR_LOSS_BCE, BR_WEIGHT_BATCH},
    {"no-ssa", 0, 1, 1, 1, 0, BR_OPS_BASREC, BR_LOSS_BCE, BR_WEIGHT_BATCH},
    {"no-weight", 1, 1, 0, 1, 0, BR_OPS_BASREC, BR_LOSS_BCE, BR_WEIGHT_BATCH},
    {"no-csa", 1, 0, 1, 1, 0, BR_OPS_BASREC, BR_LOSS_BCE, BR_WEIGHT_BATCH},
    {"linear", 1, 1, 1, 0, 0, BR_OPS_BASREC, BR_LOSS_BCE, BR_WEIGHT_BATCH},
    {"joint", 1, 1, 1, 1, 1, BR_OPS_BASREC, BR_LOSS_BCE, BR_WEIGHT_BATCH},
};

/* RM-HSAOCL's: all four operators and ICE; rm-hsaocl.md Table III (without
 * crop, mask, both) and Table IV (BCE, last-position CE, focal). It has no
 * reference code, so its weights are the papers' per-sequence ones, with
 * which docs/RESULTS.md's table was measured. */
static const ablation rmh_ablations[] = {
    {"none", 1, 1, 1, 1, 0, BR_OP_ALL, BR_LOSS_CE, BR_WEIGHT_SEQUENCE},
    {"no-crop", 1, 1, 1, 1, 0, BR_OP_ALL & ~BR_OP_CROP, BR_LOSS_CE, BR_WEIGHT_SEQUENCE},
    {"no-mask", 1, 1, 1, 1, 0, BR_OP_ALL & ~BR_OP_MASK, BR_LOSS_CE, BR_WEIGHT_SEQUENCE},
    {"no-crop-mask", 1, 1, 1, 1, 0, BR_OPS_BASREC, BR_LOSS_CE, BR_WEIGHT_SEQUENCE},
    {"bce", 1, 1, 1, 1, 0, BR_OP_ALL, BR_LOSS_BCE, BR_WEIGHT_SEQUENCE},
    {"last-ce", 1, 1, 1, 1, 0, BR_OP_ALL, BR_LOSS_LAST_CE, BR_WEIGHT_SEQUENCE},
    {"focal", 1, 1, 1, 1, 0, BR_OP_ALL, BR_LOSS_FOCAL, BR_WEIGHT_SEQUENCE},
};

typedef struct repro_method {
    const char *name;
    const ablation *ablations; /* NULL: plain training, no variants */
    size_t n_ablations;
} repro_method;

static const repro_method methods[] = {
    {"plain", NULL, 0},
    {"basrec", basrec_ablations, sizeof basrec_ablations / sizeof basrec_ablations[0]},
    {"rm-hsaocl", rmh_ablations, sizeof rmh_ablations / sizeof rmh_ablations[0]},
};

/* Reads the test metrics of a finished run's result.json. */
static int read_test_metrics(const char *dir, br_metrics *m, br_error *err) {
    char path[8192];
    if (snprintf(path, sizeof path, "%s/result.json", dir) >= (int)sizeof path)
        return br_errorf(err, "%s: path too long", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return br_errorf(err, "%s:%d: %s", path, je.line, je.text);
    json_t *test = json_object_get(root, "test");
    int rc = 0;
    for (int k = 0; k < BR_N_CUTOFFS && rc == 0; k++) {
        char hr[16], nd[16];
        snprintf(hr, sizeof hr, "HR@%d", br_cutoffs[k]);
        snprintf(nd, sizeof nd, "NDCG@%d", br_cutoffs[k]);
        json_t *a = json_object_get(test, hr), *b = json_object_get(test, nd);
        if (!json_is_number(a) || !json_is_number(b)) rc = br_errorf(err, "%s: no test %s/%s", path, hr, nd);
        else {
            m->hr[k] = json_number_value(a);
            m->ndcg[k] = json_number_value(b);
        }
    }
    json_t *mrr = json_object_get(test, "MRR");
    if (rc == 0 && !json_is_number(mrr)) rc = br_errorf(err, "%s: no test MRR", path);
    if (rc == 0) m->mrr = json_number_value(mrr);
    json_decref(root);
    return rc;
}

/* Fails when the run in dir (its last.safetensors) was made with another
 * configuration than the plan's, naming the first setting that differs:
 * a run left by an older preset or another --max-epochs must not be
 * reused or resumed as if it were the planned one. */
static int check_same_plan(const br_dataset *ds, const br_model_config *mc,
                           const br_train_config *tc, const char *dir, br_error *err) {
    char path[8500];
    if (snprintf(path, sizeof path, "%s/last.safetensors", dir) >= (int)sizeof path)
        return br_errorf(err, "%s: path too long", dir);
    br_model m;
    memset(&m, 0, sizeof m);
    br_train_config got;
    br_train_state st;
    if (br_checkpoint_load(path, &m, ds, 1, &got, &st, err) < 0) return -1;
    const br_model_config *c = &m.cfg;
    const br_basrec_config *a = &got.basrec, *b = &tc->basrec;
    char diff[160] = "";
#define DIFF(cond, ...) \
    if (!diff[0] && (cond)) snprintf(diff, sizeof diff, __VA_ARGS__)
    DIFF(strcmp(c->model, mc->model) != 0, "model %s, planned %s", c->model, mc->model);
    DIFF(c->dim != mc->dim, "hidden size %d, planned %d", c->dim, mc->dim);
    DIFF(c->n_layers != mc->n_layers, "%d layers, planned %d", c->n_layers, mc->n_layers);
    DIFF(c->n_heads != mc->n_heads, "%d heads, planned %d", c->n_heads, mc->n_heads);
    DIFF(c->max_len != mc->max_len, "max length %d, planned %d", c->max_len, mc->max_len);
    DIFF(c->hidden_dropout != mc->hidden_dropout || c->attn_dropout != mc->attn_dropout,
         "dropout %g/%g, planned %g/%g", c->hidden_dropout, c->attn_dropout, mc->hidden_dropout, mc->attn_dropout);
    DIFF(c->run_padding != mc->run_padding, "run padding %d, planned %d", c->run_padding, mc->run_padding);
    DIFF(got.batch_size != tc->batch_size, "batch size %d, planned %d", got.batch_size, tc->batch_size);
    DIFF(got.epochs != tc->epochs, "at most %d epochs, planned %d", got.epochs, tc->epochs);
    DIFF(got.patience != tc->patience, "patience %d, planned %d", got.patience, tc->patience);
    DIFF(got.start_valid != tc->start_valid, "first validation at epoch %d, planned %d", got.start_valid,
         tc->start_valid);
    DIFF(got.lr != tc->lr || got.weight_decay != tc->weight_decay, "lr %g, weight decay %g, planned %g, %g",
         got.lr, got.weight_decay, tc->lr, tc->weight_decay);
    DIFF(got.seed != tc->seed, "seed %llu, planned %llu", (unsigned long long)got.seed,
         (unsigned long long)tc->seed);
    DIFF(got.use_basrec != tc->use_basrec, "method %s, planned %s", got.use_basrec ? "basrec" : "plain",
         tc->use_basrec ? "basrec" : "plain");
    DIFF(got.loss.kind != tc->loss.kind, "loss %s, planned %s", br_loss_name(got.loss.kind),
         br_loss_name(tc->loss.kind));
    DIFF(tc->use_basrec && (a->alpha != b->alpha || a->rate_min != b->rate_min || a->rate_max != b->rate_max ||
                            a->n_pairs != b->n_pairs || a->n_whole_level != b->n_whole_level),
         "other augmentation settings (beta, rates, pairs, mixes)");
    DIFF(tc->use_basrec && (a->single_seq != b->single_seq || a->cross_seq != b->cross_seq ||
                            a->adaptive_weight != b->adaptive_weight || a->nonlinear != b->nonlinear ||
                            a->operators != b->operators || a->weight_form != b->weight_form ||
                            a->mix_pad != b->mix_pad || a->crop_align != b->crop_align),
         "other augmentation modules or operators");
#undef DIFF
    br_model_free(&m);
    if (diff[0])
        return br_errorf(err, "%s was made with %s; remove it or choose another --runs-dir", dir, diff);
    return 0;
}

/* Runs (or resumes, or skips) one run directory; its per-epoch metrics are
 * appended to DIR/metrics.jsonl. */
static int ensure_run(const br_dataset *ds, const br_model_config *mc, br_train_config *tc,
                      const char *dir, const char *init_from, int progress, br_error *err) {
    const int done = cli_file_exists(dir, "result.json"), resume = cli_file_exists(dir, "last.safetensors");
    if (resume && check_same_plan(ds, mc, tc, dir, err) < 0) return -1;
    if (done) return 0;
    if (progress) fprintf(stderr, "%s %s\n", resume ? "resuming" : "running", dir);
    if (br_mkdir_p(dir, err) < 0) return -1;
    char path[8500];
    if (snprintf(path, sizeof path, "%s/metrics.jsonl", dir) >= (int)sizeof path)
        return br_errorf(err, "%s: path too long", dir);
    FILE *log = fopen(path, "a");
    if (!log) return br_errorf(err, "%s: cannot open for appending", path);
    br_train_result res;
    int rc = cli_run_stage(ds, mc, tc, dir, resume ? NULL : init_from, resume, log, progress, &res, err);
    if (fclose(log) != 0 && rc == 0) rc = br_errorf(err, "%s: write failed", path);
    return rc;
}

static void write_stat(FILE *fp, const char *name, const double *v, int n) {
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < n; i++) mean += v[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean);
    const double std = n > 1 ? sqrt(var / (n - 1)) : 0.0;
    fprintf(fp, "\"%s\": {\"mean\": %.6f, \"std\": %.6f, \"runs\": [", name, mean, std);
    for (int i = 0; i < n; i++) fprintf(fp, "%s%.6f", i ? ", " : "", v[i]);
    fprintf(fp, "]}");
}

/* Appends one JSON line: the configuration (weights: the adaptive weights'
 * form, NULL for plain training) and mean/std/runs per metric. */
static int append_summary(const char *path, const char *dataset, const char *model,
                          const char *method, const char *abl, const char *weights,
                          const uint64_t *seeds, int n, const br_metrics *m, br_error *err) {
    FILE *fp = fopen(path, "a");
    if (!fp) return br_errorf(err, "%s: cannot open for appending", path);
    fprintf(fp, "{\"dataset\": \"%s\", \"model\": \"%s\", \"method\": \"%s\", \"ablation\": \"%s\", ",
            dataset, model, method, abl);
    if (weights) fprintf(fp, "\"weights\": \"%s\", ", weights);
    fprintf(fp, "\"seeds\": [");
    for (int i = 0; i < n; i++) fprintf(fp, "%s%llu", i ? ", " : "", (unsigned long long)seeds[i]);
    fprintf(fp, "], \"test\": {");
    double v[MAX_SEEDS];
    for (int k = 0; k < BR_N_CUTOFFS; k++) {
        char name[16];
        for (int i = 0; i < n; i++) v[i] = m[i].hr[k];
        snprintf(name, sizeof name, "HR@%d", br_cutoffs[k]);
        write_stat(fp, name, v, n);
        fprintf(fp, ", ");
        for (int i = 0; i < n; i++) v[i] = m[i].ndcg[k];
        snprintf(name, sizeof name, "NDCG@%d", br_cutoffs[k]);
        write_stat(fp, name, v, n);
        fprintf(fp, ", ");
    }
    for (int i = 0; i < n; i++) v[i] = m[i].mrr;
    write_stat(fp, "MRR", v, n);
    fprintf(fp, "}}\n");
    int bad = ferror(fp);
    if (fclose(fp) != 0 || bad) return br_errorf(err, "%s: write failed", path);
    return 0;
}

typedef struct run_plan {
    const br_dataset *ds;
    const br_model_config *mc;
    const cli_preset *preset;
    const repro_method *meth;
    const ablation *abl; /* NULL for plain */
    const char *runs_dir, *dataset, *model;
    int progress;
    int32_t max_epochs;  /* 0: the preset's */
    int32_t patience;    /* 0: the preset's */
    const char *weights; /* --weight-form when it is not the table's, else NULL */
} run_plan;

/* A softmax loss (ICE and its variants) trains both stages with that loss
 * and validates from the first epoch: ICE reaches its best validation in
 * about ten epochs (docs/RMHSAOCL.md), where BCE's schedule of the
 * reference would overfit for a hundred before selecting. The stage 1 of a
 * BCE variant is the plain BCE run BASRec shares. */
static int softmax_stage1(const run_plan *rp) {
    return rp->abl && br_loss_is_softmax(rp->abl->loss);
}

/* RUNS/<dataset>-<model>-plain[-<loss>]-s<seed> (stage1 set, or a plain
 * plan), or RUNS/<dataset>-<model>-<method>[-<ablation>][-<form>-weights]-s<seed>. */
static void run_dir(const run_plan *rp, uint64_t seed, int stage1, char *out, size_t n) {
    if ((stage1 || !rp->abl) && softmax_stage1(rp))
        snprintf(out, n, "%s/%s-%s-plain-%s-s%llu", rp->runs_dir, rp->dataset, rp->model,
                 br_loss_name(rp->abl->loss), (unsigned long long)seed);
    else if (stage1 || !rp->abl)
        snprintf(out, n, "%s/%s-%s-plain-s%llu", rp->runs_dir, rp->dataset, rp->model,
                 (unsigned long long)seed);
    else {
        char abl[64] = "", weights[64] = "";
        if (strcmp(rp->abl->name, rp->meth->ablations[0].name) != 0)
            snprintf(abl, sizeof abl, "-%s", rp->abl->name);
        if (rp->weights) snprintf(weights, sizeof weights, "-%s-weights", rp->weights);
        snprintf(out, n, "%s/%s-%s-%s%s%s-s%llu", rp->runs_dir, rp->dataset, rp->model, rp->meth->name,
                 abl, weights, (unsigned long long)seed);
    }
}

/* The command line's --max-epochs and --patience, over a stage's preset. */
static void apply_overrides(const run_plan *rp, br_train_config *tc) {
    if (rp->max_epochs > 0) tc->epochs = rp->max_epochs;
    if (rp->patience > 0) tc->patience = rp->patience;
}

/* Trains whatever one seed still lacks: the plain run (stage 1), then the
 * augmented run from its best checkpoint. Each stage takes its own epochs
 * from the preset, then the command line's overrides. */
static int run_seed(const run_plan *rp, uint64_t seed, br_error *err) {
    char plain_dir[8400], dir[8400], init[8500];
    br_train_config tc;
    br_train_config_defaults(&tc);
    tc.seed = seed;
    tc.epochs = rp->preset->epochs;
    tc.start_valid = softmax_stage1(rp) ? 0 : rp->preset->start_valid;
    run_dir(rp, seed, 1, plain_dir, sizeof plain_dir);
    if (!rp->abl || !rp->abl->joint) {
        /* The plain run: the preset's plain recipe, or for a softmax loss
         * that loss with the preset's dropout. */
        br_model_config m1 = *rp->mc;
        br_train_config t1 = tc;
        if (softmax_stage1(rp)) t1.loss.kind = rp->abl->loss;
        else cli_preset_plain(rp->preset, rp->model, &m1, &t1);
        apply_overrides(rp, &t1);
        if (ensure_run(rp->ds, &m1, &t1, plain_dir, NULL, rp->progress, err) < 0) return -1;
    }
    if (!rp->abl) return 0;
    run_dir(rp, seed, 0, dir, sizeof dir);
    tc.epochs = cli_preset_stage2_epochs(rp->preset, rp->model);
    apply_overrides(rp, &tc);
    tc.use_basrec = 1;
    br_basrec_preset(&tc.basrec, rp->preset->name);
    tc.basrec.single_seq = rp->abl->single_seq;
    tc.basrec.cross_seq = rp->abl->cross_seq;
    tc.basrec.adaptive_weight = rp->abl->adaptive_weight;
    tc.basrec.nonlinear = rp->abl->nonlinear;
    tc.basrec.operators = rp->abl->operators;
    tc.basrec.weight_form = rp->abl->weight_form;
    tc.loss.kind = rp->abl->loss;
    if (snprintf(init, sizeof init, "%s/best.safetensors", plain_dir) >= (int)sizeof init)
        return br_errorf(err, "%s: path too long", plain_dir);
    return ensure_run(rp->ds, rp->mc, &tc, dir, rp->abl->joint ? NULL : init, rp->progress, err);
}

int cmd_reproduce(int argc, char **argv) {
    const char *dataset = "beauty", *model = "sasrec", *method_name = "basrec", *abl_name = "none",
               *seeds_arg = "1,2,3", *data_dir = "../shared/data", *runs_dir = "runs",
               *results = "runs/results.jsonl", *weights_arg = NULL;
    int32_t threads = 0, jobs = 1, max_epochs = 0, patience = 0;
    int no_progress = 0, help;
    opt_spec specs[] = {
        {"dataset", OPT_STR, &dataset, "beauty, sports, yelp or home", 0},
        {"model", OPT_STR, &model, "sasrec, gru4rec, nextitnet or fmlprec", 0},
        {"method", OPT_STR, &method_name, "plain, basrec or rm-hsaocl", 0},
        {"ablation", OPT_STR, &abl_name,
         "basrec: none, no-ssa, no-weight, no-csa, linear, joint; "
         "rm-hsaocl: none, no-crop, no-mask, no-crop-mask, bce, last-ce, focal", 0},
        {"weight-form", OPT_STR, &weights_arg,
         "adaptive weights, batch or sequence (default: basrec batch, rm-hsaocl sequence)", 0},
        {"seeds", OPT_STR, &seeds_arg, "comma-separated seeds", 0},
        {"data-dir", OPT_STR, &data_dir, "directory with the dataset files", 0},
        {"runs-dir", OPT_STR, &runs_dir, "directory for the runs", 0},
        {"results", OPT_STR, &results, "JSON-lines file the summary is appended to", 0},
        {"threads", OPT_INT, &threads, "threads per run (default: all cores, or 1 with --jobs)", 0},
        {"jobs", OPT_INT, &jobs, "seeds trained at once, in separate processes", 0},
        {"max-epochs", OPT_INT, &max_epochs, "cap every stage's epochs (smoke tests; default: the preset's)", 0},
        {"patience", OPT_INT, &patience,
         "stop every stage after N validations without improvement (default: the preset's)", 0},
        {"no-progress", OPT_FLAG, &no_progress, "no progress output on stderr (otherwise a line per epoch; a bar too on a terminal)", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("reproduce", &err);
    if (help) {
        args_print_help("usage: basrec reproduce --dataset beauty --model sasrec --method basrec --seeds 1,2,3\n\n"
                        "Trains each seed of a configuration with the dataset's preset (or picks up\n"
                        "its finished or interrupted run in\n"
                        "RUNS/<dataset>-<model>-<method>[-<ablation>][-<form>-weights]-s<seed>),\n"
                        "then appends the mean and std of the test metrics to the results file.",
                        specs);
        return 0;
    }
    const cli_preset *p = cli_find_preset(dataset);
    if (!p) {
        fprintf(stderr, "basrec reproduce: unknown dataset '%s' (beauty, sports, yelp, home)\n", dataset);
        return 2;
    }
    const repro_method *meth = NULL;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(methods[i].name, method_name) == 0) meth = &methods[i];
    if (!meth) {
        fprintf(stderr, "basrec reproduce: unknown method '%s' (plain, basrec, rm-hsaocl)\n", method_name);
        return 2;
    }
    const ablation *abl = NULL;
    for (size_t i = 0; i < meth->n_ablations; i++)
        if (strcmp(meth->ablations[i].name, abl_name) == 0) abl = &meth->ablations[i];
    if (meth->ablations ? !abl : strcmp(abl_name, "none") != 0) {
        fprintf(stderr, "basrec reproduce: unknown ablation '%s' of %s (see --help)\n", abl_name, meth->name);
        return 2;
    }
    /* Another weight form: the variant with it, in runs of its own. */
    ablation custom;
    const char *weights_dir = NULL;
    if (weights_arg) {
        br_weight_form form;
        if (!abl || br_weight_form_parse(weights_arg, &form) < 0) {
            fprintf(stderr, "basrec reproduce: --weight-form must be batch or sequence, with basrec or rm-hsaocl\n");
            return 2;
        }
        if (form != abl->weight_form) {
            custom = *abl;
            custom.weight_form = form;
            abl = &custom;
            weights_dir = br_weight_form_name(form);
        }
    }
    uint64_t seeds[MAX_SEEDS];
    int n_seeds = 0;
    for (const char *s = seeds_arg; *s;) {
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (end == s || (*end && *end != ',') || n_seeds == MAX_SEEDS) {
            fprintf(stderr, "basrec reproduce: --seeds must be up to %d comma-separated integers\n", MAX_SEEDS);
            return 2;
        }
        seeds[n_seeds++] = v;
        s = *end ? end + 1 : end;
    }
    if (n_seeds == 0) {
        fprintf(stderr, "basrec reproduce: --seeds is empty\n");
        return 2;
    }
    if (max_epochs < 0 || patience < 0) {
        fprintf(stderr, "basrec reproduce: --max-epochs and --patience must not be negative (0: the preset's)\n");
        return 2;
    }
    if (jobs < 1 || jobs > MAX_SEEDS) {
        fprintf(stderr, "basrec reproduce: --jobs must be in 1..%d\n", MAX_SEEDS);
        return 2;
    }
    if (jobs == 1) cli_set_threads(threads);

    br_model_config mc;
    br_model_config_defaults(&mc);
    if (strlen(model) >= sizeof mc.model) {
        fprintf(stderr, "basrec reproduce: unknown model '%s'\n", model);
        return 2;
    }
    strcpy(mc.model, model);
    br_model_config_backbone_defaults(&mc);
    mc.hidden_dropout = mc.attn_dropout = cli_preset_dropout(p, model);

    char path[8192];
    snprintf(path, sizeof path, "%s/%s", data_dir, p->file);
    br_dataset ds;
    if (br_dataset_load(path, &ds, &err) < 0) return cli_fail("reproduce", &err);
    if (br_mkdir_p(runs_dir, &err) < 0) {
        br_dataset_free(&ds);
        return cli_fail("reproduce", &err);
    }
    /* Reproductions run for hours, often into a log file: there a line per
     * epoch, the bar only on a terminal. */
    const int progress = no_progress ? BR_PROGRESS_QUIET : isatty(2) ? BR_PROGRESS_BAR : BR_PROGRESS_LINES;
    run_plan plan = {&ds, &mc, p, meth, abl, runs_dir, dataset, model, progress, max_epochs, patience, weights_dir};
    br_metrics m[MAX_SEEDS];
    int rc = 0;
    if (jobs == 1) {
        for (int i = 0; i < n_seeds && rc == 0; i++) rc = run_seed(&plan, seeds[i], &err);
    } else {
        /* Independent seeds in child processes, one thread each unless told
         * otherwise: no synchronisation at all between the cores. The
         * parent has run no OpenMP region yet, so forking is safe. */
        cli_set_threads(threads > 0 ? threads : 1);
        int running = 0, failed = 0;
        for (int i = 0; i < n_seeds || running > 0;) {
            if (i < n_seeds && running < jobs) {
                fflush(NULL);
                pid_t pid = fork();
                if (pid < 0) {
                    rc = br_errorf(&err, "fork: cannot start a job");
                    break;
                }
                if (pid == 0) {
                    br_error child_err;
                    int crc = run_seed(&plan, seeds[i], &child_err);
                    if (crc < 0) fprintf(stderr, "basrec reproduce: seed %llu: %s\n",
                                         (unsigned long long)seeds[i], child_err.msg);
                    _exit(crc < 0 ? 1 : 0);
                }
                running++;
                i++;
                continue;
            }
            int status;
            if (wait(&status) > 0) {
                running--;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
            }
        }
        while (running > 0 && wait(NULL) > 0) running--; /* after a failed fork */
        if (rc == 0 && failed) rc = br_errorf(&err, "%d of %d seeds failed (see above)", failed, n_seeds);
    }
    for (int i = 0; i < n_seeds && rc == 0; i++) {
        char dir[8400];
        run_dir(&plan, seeds[i], 0, dir, sizeof dir);
        rc = read_test_metrics(dir, &m[i], &err);
    }
    const char *abl_label = abl ? abl->name : "none";
    const char *weights = abl ? br_weight_form_name(abl->weight_form) : NULL;
    if (rc == 0)
        rc = append_summary(results, dataset, model, meth->name, abl_label, weights, seeds, n_seeds, m, &err);
    br_dataset_free(&ds);
    if (rc < 0) return cli_fail("reproduce", &err);
    printf("%s %s %s %s%s%s: test NDCG@10", dataset, model, meth->name, abl_label,
           weights_dir ? ", weights " : "", weights_dir ? weights_dir : "");
    double mean = 0;
    for (int i = 0; i < n_seeds; i++) mean += m[i].ndcg[1];
    printf(" %.4f, HR@10", mean / n_seeds);
    mean = 0;
    for (int i = 0; i < n_seeds; i++) mean += m[i].hr[1];
    printf(" %.4f (mean of %d seeds; details in %s)\n", mean / n_seeds, n_seeds, results);
    return 0;
}
