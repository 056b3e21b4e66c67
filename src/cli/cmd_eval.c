/* basrec eval and basrec recommend: use a trained checkpoint. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "eval/evaluate.h"
#include "models/model.h"
#include "train/checkpoint.h"
#include "train/train.h"

int cmd_eval(int argc, char **argv) {
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
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("eval", &err);
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
    cli_set_threads(threads);
    br_dataset ds;
    if (br_dataset_load(data, &ds, &err) < 0) return cli_fail("eval", &err);
    br_model m;
    br_metrics met;
    int rc = br_checkpoint_load(ckpt, &m, &ds, 1, NULL, NULL, &err);
    if (rc == 0) {
        rc = br_evaluate(&m, &ds, sp, &met, &err);
        br_model_free(&m);
    }
    br_dataset_free(&ds);
    if (rc < 0) return cli_fail("eval", &err);
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

int cmd_recommend(int argc, char **argv) {
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
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("recommend", &err);
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
    cli_set_threads(threads);
    br_dataset ds;
    if (br_dataset_load(data, &ds, &err) < 0) return cli_fail("recommend", &err);
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
    return rc < 0 ? cli_fail("recommend", &err) : 0;
}

