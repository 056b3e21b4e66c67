/* basrec: command-line front end. Each subcommand parses its options,
 * calls the library and reports errors as "basrec <cmd>: message". */
#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "data/dataset.h"
#include "eval/evaluate.h"
#include "models/model.h"
#include "train/checkpoint.h"
#include "train/train.h"

void openblas_set_num_threads(int num_threads);

static void set_threads(int32_t threads) {
    if (threads <= 0) return;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

static int fail(const char *cmd, const br_error *err) {
    fprintf(stderr, "basrec %s: %s\n", cmd, err->msg);
    return 1;
}

/* Dataset presets (PROTOCOL.md): dropout of the reference README, and the
 * stage-2 schedule; BASRec's own settings come from br_basrec_preset. */
typedef struct preset {
    const char *name;
    float dropout;
    int32_t stage2_epochs, stage2_start_valid;
} preset;
static const preset presets[] = {{"beauty", 0.1f, 200, 100},
                                 {"sports", 0.1f, 200, 100},
                                 {"yelp", 0.1f, 100, 50},
                                 {"home", 0.05f, 100, 50},
                                 {NULL, 0, 0, 0}};

static int file_exists(const char *dir, const char *name) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void print_result(const br_train_result *res) {
    printf("{\"best_epoch\": %d, \"epochs_run\": %d, \"seconds\": %.1f, \"valid\": ", res->best_epoch,
           res->epochs_run, res->seconds);
    br_metrics_write_json(stdout, &res->valid);
    printf(", \"test\": ");
    br_metrics_write_json(stdout, &res->test);
    printf("}\n");
}

/* One training run into out_dir: resumed, started from a checkpoint's
 * weights (fresh optimizer), or from a fresh initialisation. */
static int run_stage(const br_dataset *ds, const br_model_config *mc, br_train_config *tc,
                     const char *out_dir, const char *init_from, int resume, FILE *log,
                     int progress, br_train_result *res, br_error *err) {
    br_model m;
    memset(&m, 0, sizeof m);
    if (!resume) {
        if (init_from) {
            if (br_checkpoint_load(init_from, &m, ds, 0, NULL, NULL, err) < 0) return -1;
        } else {
            br_model_config c = *mc;
            c.n_items = ds->n_items;
            if (br_model_create(&m, &c, err) < 0) return -1;
            br_model_init_weights(&m, tc->seed);
        }
    }
    br_train_io io = {out_dir, log, progress, resume};
    int rc = br_train(&m, ds, tc, &io, res, err);
    br_model_free(&m);
    return rc;
}

static int cmd_train(int argc, char **argv) {
    br_model_config mc;
    br_train_config tc;
    br_model_config_defaults(&mc);
    br_train_config_defaults(&tc);
    const char *data = NULL, *out = NULL, *model = "sasrec", *metrics_log = NULL,
               *preset_name = NULL, *method = "plain", *init_from = NULL;
    int32_t threads = 0, stage1_epochs = 200;
    float dropout = -1.0f;
    int resume = 0, no_progress = 0, joint = 0, no_ssa = 0, no_csa = 0, no_weight = 0,
        linear = 0, help;
    br_basrec_config *bc = &tc.basrec;
    opt_spec specs[] = {
        {"data", OPT_STR, &data, "sequence file: one line per user, 'user item item ...'", 0},
        {"out", OPT_STR, &out, "run directory for checkpoints and results (default runs/<data name>)", 0},
        {"preset", OPT_STR, &preset_name, "dataset preset: beauty, sports, yelp, home", 0},
        {"model", OPT_STR, &model, "backbone: sasrec, gru4rec, nextitnet, fmlprec", 0},
        {"method", OPT_STR, &method, "plain, or basrec (two stages: plain, then augmented)", 0},
        {"hidden-size", OPT_INT, &mc.dim, "hidden size", 0},
        {"num-hidden-layers", OPT_INT, &mc.n_layers, "encoder layers", 0},
        {"num-attention-heads", OPT_INT, &mc.n_heads, "attention heads", 0},
        {"hidden-dropout-prob", OPT_FLOAT, &mc.hidden_dropout, "hidden dropout", 0},
        {"attention-probs-dropout-prob", OPT_FLOAT, &mc.attn_dropout, "attention dropout", 0},
        {"dropout", OPT_FLOAT, &dropout, "set both dropouts (default: unset)", 0},
        {"initializer-range", OPT_FLOAT, &mc.init_std, "std of the normal weight init", 0},
        {"max-seq-length", OPT_INT, &mc.max_len, "keep the last N items of each sequence", 0},
        {"lr", OPT_FLOAT, &tc.lr, "Adam learning rate", 0},
        {"weight-decay", OPT_FLOAT, &tc.weight_decay, "Adam L2 weight decay", 0},
        {"batch-size", OPT_INT, &tc.batch_size, "users per batch", 0},
        {"epochs", OPT_INT, &tc.epochs, "maximum epochs (of stage 2 with basrec: preset 200, yelp/home 100)", 0},
        {"patience", OPT_INT, &tc.patience, "stop after N validations without improvement", 0},
        {"start-valid", OPT_INT, &tc.start_valid, "first validated epoch (stage 2 with basrec: preset 100, yelp/home 50)", 0},
        {"seed", OPT_U64, &tc.seed, "random seed", 0},
        {"stage1-epochs", OPT_INT, &stage1_epochs, "basrec: maximum epochs of stage 1", 0},
        {"init-from", OPT_STR, &init_from, "basrec: start stage 2 from this checkpoint (skips stage 1)", 0},
        {"beta", OPT_FLOAT, &bc->alpha, "basrec: mixup weights ~ Beta(beta, beta) (the paper's alpha)", 0},
        {"rate-min", OPT_FLOAT, &bc->rate_min, "basrec: operator rate ~ U(rate-min, rate-max)", 0},
        {"rate-max", OPT_FLOAT, &bc->rate_max, "basrec: see rate-min", 0},
        {"n-pairs", OPT_INT, &bc->n_pairs, "basrec: pairs of augmented copies per sequence", 0},
        {"n-whole-level", OPT_INT, &bc->n_whole_level, "basrec: item-wise and feature-wise mixes, each", 0},
        {"no-single-seq", OPT_FLAG, &no_ssa, "basrec ablation: without single-sequence augmentation", 0},
        {"no-cross-seq", OPT_FLAG, &no_csa, "basrec ablation: without cross-sequence augmentation", 0},
        {"no-adaptive-weight", OPT_FLAG, &no_weight, "basrec ablation: constant loss weights", 0},
        {"linear-mixup", OPT_FLAG, &linear, "basrec ablation: one mixup weight per sequence", 0},
        {"joint", OPT_FLAG, &joint, "basrec ablation: one stage, augmented from scratch", 0},
        {"threads", OPT_INT, &threads, "threads (default: all cores)", 0},
        {"metrics-log", OPT_STR, &metrics_log, "append per-epoch metrics as JSON lines to this file", 0},
        {"resume", OPT_FLAG, &resume, "continue the run in --out where it stopped", 0},
        {"no-progress", OPT_FLAG, &no_progress, "no progress output on stderr", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return fail("train", &err);
    if (help) {
        args_print_help("usage: basrec train --data FILE [options]\n\n"
                        "Trains a model with validation each epoch, keeps the best checkpoint by\n"
                        "valid NDCG@20, stops early, and reports test metrics of the best one.\n"
                        "Writes OUT/best.safetensors, OUT/last.safetensors (resumable), OUT/result.json;\n"
                        "with --method basrec, stage 1 goes to OUT/stage1 and stage 2 to OUT.",
                        specs);
        return 0;
    }
    if (!data) {
        fprintf(stderr, "basrec train: --data is required (see --help)\n");
        return 2;
    }
    const int basrec = strcmp(method, "basrec") == 0;
    if (!basrec && strcmp(method, "plain") != 0) {
        fprintf(stderr, "basrec train: unknown method '%s' (plain, basrec)\n", method);
        return 2;
    }
    if (preset_name) {
        const preset *p = presets;
        while (p->name && strcmp(p->name, preset_name) != 0) p++;
        if (!p->name) {
            fprintf(stderr, "basrec train: unknown preset '%s' (beauty, sports, yelp, home)\n", preset_name);
            return 2;
        }
        if (!args_find(specs, "hidden-dropout-prob")->seen) mc.hidden_dropout = p->dropout;
        if (!args_find(specs, "attention-probs-dropout-prob")->seen) mc.attn_dropout = p->dropout;
        if (basrec) {
            br_basrec_config explicit_cfg = *bc;
            br_basrec_preset(bc, p->name);
            /* Options given on the command line win over the preset. */
            if (args_find(specs, "beta")->seen) bc->alpha = explicit_cfg.alpha;
            if (args_find(specs, "rate-min")->seen) bc->rate_min = explicit_cfg.rate_min;
            if (args_find(specs, "rate-max")->seen) bc->rate_max = explicit_cfg.rate_max;
            if (args_find(specs, "n-pairs")->seen) bc->n_pairs = explicit_cfg.n_pairs;
            if (args_find(specs, "n-whole-level")->seen) bc->n_whole_level = explicit_cfg.n_whole_level;
            if (!args_find(specs, "epochs")->seen) tc.epochs = p->stage2_epochs;
            if (!args_find(specs, "start-valid")->seen) tc.start_valid = p->stage2_start_valid;
        }
    } else if (basrec && !args_find(specs, "start-valid")->seen) {
        tc.start_valid = 100;
    }
    if (dropout >= 0.0f) mc.hidden_dropout = mc.attn_dropout = dropout;
    if (strlen(model) >= sizeof mc.model) {
        fprintf(stderr, "basrec train: unknown model '%s'\n", model);
        return 2;
    }
    strcpy(mc.model, model);
    bc->single_seq = !no_ssa;
    bc->cross_seq = !no_csa;
    bc->adaptive_weight = !no_weight;
    bc->nonlinear = !linear;
    set_threads(threads);

    char out_buf[4096], stage1_dir[4200], stage1_best[4300];
    if (!out) {
        const char *base = strrchr(data, '/');
        base = base ? base + 1 : data;
        snprintf(out_buf, sizeof out_buf, "runs/%.*s", (int)strcspn(base, "."), base);
        out = out_buf;
    }
    br_dataset ds;
    if (br_dataset_load(data, &ds, &err) < 0) return fail("train", &err);
    FILE *log = NULL;
    if (metrics_log && !(log = fopen(metrics_log, "a"))) {
        fprintf(stderr, "basrec train: cannot open %s: %s\n", metrics_log, strerror(errno));
        br_dataset_free(&ds);
        return 1;
    }
    const int progress = !no_progress && isatty(2);
    br_train_result res;
    int rc = 0;
    if (basrec && !joint && !init_from && !(resume && file_exists(out, "last.safetensors"))) {
        /* Stage 1: plain training, reused when it already finished. */
        snprintf(stage1_dir, sizeof stage1_dir, "%s/stage1", out);
        snprintf(stage1_best, sizeof stage1_best, "%s/best.safetensors", stage1_dir);
        if (!file_exists(stage1_dir, "result.json")) {
            br_train_config t1 = tc;
            t1.use_basrec = 0;
            t1.epochs = stage1_epochs;
            t1.start_valid = 0;
            if (progress) fprintf(stderr, "stage 1: plain training into %s\n", stage1_dir);
            rc = run_stage(&ds, &mc, &t1, stage1_dir, NULL,
                           resume && file_exists(stage1_dir, "last.safetensors"), log, progress, &res, &err);
        }
        init_from = stage1_best;
        resume = 0;
        if (progress && rc == 0) fprintf(stderr, "stage 2: BASRec training into %s\n", out);
    }
    tc.use_basrec = basrec;
    if (rc == 0) rc = run_stage(&ds, &mc, &tc, out, init_from, resume, log, progress, &res, &err);
    if (log) fclose(log);
    br_dataset_free(&ds);
    if (rc < 0) return fail("train", &err);
    print_result(&res);
    return 0;
}

static int cmd_eval(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL, *split = "test";
    int32_t threads = 0;
    int help;
    opt_spec specs[] = {
        {"checkpoint", OPT_STR, &ckpt, "model checkpoint (.safetensors)", 0},
        {"data", OPT_STR, &data, "sequence file the model was trained on", 0},
        {"split", OPT_STR, &split, "valid or test", 0},
        {"threads", OPT_INT, &threads, "threads (default: all cores)", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return fail("eval", &err);
    if (help) {
        args_print_help("usage: basrec eval --checkpoint FILE --data FILE [--split test]\n\n"
                        "Full-ranking HR/NDCG@{5,10,20} and MRR, seen items excluded; prints JSON.",
                        specs);
        return 0;
    }
    if (!ckpt || !data) {
        fprintf(stderr, "basrec eval: --checkpoint and --data are required (see --help)\n");
        return 2;
    }
    br_split sp;
    if (strcmp(split, "test") == 0) sp = BR_SPLIT_TEST;
    else if (strcmp(split, "valid") == 0) sp = BR_SPLIT_VALID;
    else {
        fprintf(stderr, "basrec eval: --split must be valid or test, not '%s'\n", split);
        return 2;
    }
    set_threads(threads);
    br_dataset ds;
    if (br_dataset_load(data, &ds, &err) < 0) return fail("eval", &err);
    br_model m;
    br_metrics met;
    int rc = br_checkpoint_load(ckpt, &m, &ds, 1, NULL, NULL, &err);
    if (rc == 0) {
        rc = br_evaluate(&m, &ds, sp, &met, &err);
        br_model_free(&m);
    }
    br_dataset_free(&ds);
    if (rc < 0) return fail("eval", &err);
    printf("{\"split\": \"%s\", \"users\": %lld, \"metrics\": ", split, (long long)met.n);
    br_metrics_write_json(stdout, &met);
    printf("}\n");
    return 0;
}

/* Parses "1,2,3" into file user ids and maps them to rows. */
static int parse_users(const char *list, const br_dataset *ds, int32_t **rows, int32_t *n,
                       br_error *err) {
    int32_t cap = 1;
    for (const char *c = list; *c; c++) cap += *c == ',';
    *rows = br_xmalloc((size_t)cap * sizeof(int32_t), err);
    if (!*rows) return -1;
    *n = 0;
    const char *p = list;
    while (*p) {
        char *end;
        errno = 0;
        long long id = strtoll(p, &end, 10);
        if (errno || end == p || (*end && *end != ','))
            return br_errorf(err, "--users: '%s' is not a comma-separated list of user ids", list);
        int32_t row = br_dataset_find_user(ds, id);
        if (row < 0) return br_errorf(err, "--users: user %lld is not in %s", id, ds->path);
        (*rows)[(*n)++] = row;
        p = *end ? end + 1 : end;
    }
    return 0;
}

static int cmd_recommend(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL, *users = NULL;
    int32_t k = 10, threads = 0;
    int include_seen = 0, help;
    opt_spec specs[] = {
        {"checkpoint", OPT_STR, &ckpt, "model checkpoint (.safetensors)", 0},
        {"data", OPT_STR, &data, "sequence file with the users' histories", 0},
        {"users", OPT_STR, &users, "comma-separated user ids (default: all users)", 0},
        {"k", OPT_INT, &k, "items per user", 0},
        {"include-seen", OPT_FLAG, &include_seen, "do not exclude items the user already has", 0},
        {"threads", OPT_INT, &threads, "threads (default: all cores)", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return fail("recommend", &err);
    if (help) {
        args_print_help("usage: basrec recommend --checkpoint FILE --data FILE [--users 1,2] [--k 10]\n\n"
                        "Top-k next items after each user's whole history, one JSON line per user.",
                        specs);
        return 0;
    }
    if (!ckpt || !data) {
        fprintf(stderr, "basrec recommend: --checkpoint and --data are required (see --help)\n");
        return 2;
    }
    if (k <= 0 || k > 10000) {
        fprintf(stderr, "basrec recommend: --k must be in 1..10000\n");
        return 2;
    }
    set_threads(threads);
    br_dataset ds;
    if (br_dataset_load(data, &ds, &err) < 0) return fail("recommend", &err);
    br_model m;
    memset(&m, 0, sizeof m);
    int32_t *rows = NULL, n = 0, *items = NULL;
    int64_t *ex_off = NULL;
    int32_t *ex_items = NULL;
    float *repr = NULL, *scores = NULL;
    int rc = -1;
    if (br_checkpoint_load(ckpt, &m, &ds, 0, NULL, NULL, &err) < 0) goto done;
    if (users) {
        if (parse_users(users, &ds, &rows, &n, &err) < 0) goto done;
    } else {
        if (!(rows = br_xmalloc((size_t)ds.n_users * sizeof(int32_t), &err))) goto done;
        for (n = 0; n < ds.n_users; n++) rows[n] = n;
    }
    const int D = m.cfg.dim;
    repr = br_xmalloc((size_t)n * D * sizeof(float), &err);
    items = br_xmalloc((size_t)n * k * sizeof(int32_t), &err);
    scores = br_xmalloc((size_t)n * k * sizeof(float), &err);
    if (!repr || !items || !scores) goto done;
    if (br_encode_users(&m, &ds, rows, n, BR_SPLIT_ALL, repr, &err) < 0) goto done;
    if (!include_seen && br_split_exclusions(&ds, rows, n, BR_SPLIT_ALL, &ex_off, &ex_items, &err) < 0)
        goto done;
    br_exclusions ex = {ex_off, ex_items};
    if (br_topk(repr, n, br_model_items(&m), m.cfg.n_items, D, k, include_seen ? NULL : &ex, items,
                scores, &err) < 0)
        goto done;
    for (int32_t i = 0; i < n; i++) {
        printf("{\"user\": %lld, \"items\": [", (long long)ds.user_ids[rows[i]]);
        int first = 1;
        for (int32_t j = 0; j < k; j++) {
            if (items[(size_t)i * k + j] == 0) continue;
            printf("%s%d", first ? "" : ", ", items[(size_t)i * k + j]);
            first = 0;
        }
        printf("], \"scores\": [");
        first = 1;
        for (int32_t j = 0; j < k; j++) {
            if (items[(size_t)i * k + j] == 0) continue;
            printf("%s%.6g", first ? "" : ", ", scores[(size_t)i * k + j]);
            first = 0;
        }
        printf("]}\n");
    }
    rc = 0;
done:
    free(rows);
    free(repr);
    free(items);
    free(scores);
    free(ex_off);
    free(ex_items);
    br_model_free(&m);
    br_dataset_free(&ds);
    return rc < 0 ? fail("recommend", &err) : 0;
}

static int cmd_synth(int argc, char **argv) {
    const char *out = NULL;
    int32_t users = 5000, items = 2000;
    uint64_t seed = 1;
    int help;
    opt_spec specs[] = {
        {"out", OPT_STR, &out, "output sequence file", 0},
        {"users", OPT_INT, &users, "number of users", 0},
        {"items", OPT_INT, &items, "number of items", 0},
        {"seed", OPT_U64, &seed, "random seed", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return fail("synth", &err);
    if (help) {
        args_print_help("usage: basrec synth --out FILE [--users N] [--items N] [--seed N]\n\n"
                        "Writes a synthetic sequence dataset with learnable structure.",
                        specs);
        return 0;
    }
    if (!out) {
        fprintf(stderr, "basrec synth: --out is required (see --help)\n");
        return 2;
    }
    if (br_synth_write(out, users, items, seed, &err) < 0) return fail("synth", &err);
    return 0;
}

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a model with early stopping; report test metrics"},
    {"eval", cmd_eval, "full-ranking metrics of a checkpoint on the valid or test split"},
    {"recommend", cmd_recommend, "top-k next items for users"},
    {"synth", cmd_synth, "write a synthetic dataset"},
};

static void usage(FILE *fp) {
    fprintf(fp, "usage: basrec <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(fp, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(fp, "\n'basrec <command> --help' lists a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "basrec: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
