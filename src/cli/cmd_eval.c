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
    const char *ckpt = NULL, *data = NULL, *split = "test", *seen = "remove";
    int32_t threads = 0;
    int help;
    opt_spec specs[] = {
        {"checkpoint", OPT_STR, &ckpt, "model checkpoint (.safetensors)", 0},
        {"data", OPT_STR, &data, "sequence file the model was trained on", 0},
        {"split", OPT_STR, &split, "valid or test", 0},
        {"seen", OPT_STR, &seen, "the user's seen items: removed from the ranking (remove), or scored 0 with the padding row ranked, as the reference code does (zero)", 0},
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
    const int zero_scored = strcmp(seen, "zero") == 0;
    if (!zero_scored && strcmp(seen, "remove") != 0) {
        fprintf(stderr, "basrec eval: --seen must be remove or zero, not '%s'\n", seen);
        return 2;
    }
    cli_set_threads(threads);
    br_dataset ds;
    if (br_dataset_load(data, &ds, &err) < 0) return cli_fail("eval", &err);
    br_model m;
    br_metrics met;
    int rc = br_checkpoint_load(ckpt, &m, &ds, 1, NULL, NULL, &err);
    if (rc == 0) {
        rc = zero_scored ? br_evaluate_zero_scored(&m, &ds, sp, &met, &err)
                         : br_evaluate(&m, &ds, sp, &met, &err);
        br_model_free(&m);
    }
    br_dataset_free(&ds);
    if (rc < 0) return cli_fail("eval", &err);
    printf("{\"split\": \"%s\", \"seen\": \"%s\", \"users\": %lld, \"metrics\": ", split, seen,
           (long long)met.n);
    br_metrics_write_json(stdout, &met);
    printf("}\n");
    return 0;
}

/* The next token of a comma-separated list, spaces around it trimmed, into
 * buf. Returns 1 for a token, 0 at the end, -1 for an empty or long one. */
static int next_token(const char **p, char *buf, size_t n) {
    if (!**p) return 0;
    const char *end = strchr(*p, ',');
    if (!end) end = *p + strlen(*p);
    const char *a = *p, *b = end;
    while (a < b && *a == ' ') a++;
    while (b > a && b[-1] == ' ') b--;
    *p = *end ? end + 1 : end;
    if (a == b || (size_t)(b - a) >= n) return -1;
    memcpy(buf, a, (size_t)(b - a));
    buf[b - a] = '\0';
    return 1;
}

/* A whole-token decimal integer. */
static int parse_id(const char *s, long long *id) {
    char *end;
    errno = 0;
    *id = strtoll(s, &end, 10);
    return errno || end == s || *end ? -1 : 0;
}

/* Parses "1,2,3" (data file user ids, or with a map original ones) into rows. */
static int parse_users(const char *list, const br_dataset *ds, const basrec_idmap *map,
                       int32_t **rows, int32_t *n, br_error *err) {
    int32_t cap = 1;
    for (const char *c = list; *c; c++) cap += *c == ',';
    *rows = br_xmalloc((size_t)cap * sizeof(int32_t), err);
    if (!*rows) return -1;
    *n = 0;
    char tok[1024];
    int r;
    for (const char *p = list; (r = next_token(&p, tok, sizeof tok)) != 0;) {
        long long id = -1;
        if (r < 0 || (!map && parse_id(tok, &id) < 0))
            return br_errorf(err, "--users: '%s' is not a comma-separated list of user ids", list);
        if (map && (id = basrec_idmap_id(map, tok)) < 0)
            return br_errorf(err, "--users: user '%s' is not in the user map", tok);
        int32_t row = br_dataset_find_user(ds, id);
        if (row < 0) return br_errorf(err, "--users: user %s is not in %s", tok, ds->path);
        (*rows)[(*n)++] = row;
    }
    return 0;
}

/* Writes an id: the number, or with a map its original id as a JSON string. */
static void print_id(const basrec_idmap *map, int64_t id) {
    json_t *s = map ? json_string(basrec_idmap_original(map, id)) : NULL;
    char *q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    if (q) fputs(q, stdout);
    else printf("%lld", (long long)id);
    free(q);
    json_decref(s);
}

/* Top-k after each listed user's whole history in the data file: the
 * batched path over internal modules (all cores, blocked scoring). */
static int recommend_users(const char *ckpt, const char *data, const char *users, int32_t k,
                           int include_seen, const basrec_idmap *item_map,
                           const char *item_map_path, const basrec_idmap *user_map,
                           br_error *err) {
    br_dataset ds;
    if (br_dataset_load(data, &ds, err) < 0) return -1;
    br_model m;
    memset(&m, 0, sizeof m);
    int32_t *rows = NULL, n = 0, *items = NULL;
    int64_t *ex_off = NULL;
    int32_t *ex_items = NULL;
    float *repr = NULL, *scores = NULL;
    int rc = -1;
    if (br_checkpoint_load(ckpt, &m, &ds, 0, NULL, NULL, err) < 0) goto done;
    if (users) {
        if (parse_users(users, &ds, user_map, &rows, &n, err) < 0) goto done;
    } else {
        if (!(rows = br_xmalloc((size_t)ds.n_users * sizeof(int32_t), err))) goto done;
        for (n = 0; n < ds.n_users; n++) rows[n] = n;
    }
    for (int32_t i = 0; user_map && i < n; i++) {
        if (!basrec_idmap_original(user_map, ds.user_ids[rows[i]])) {
            br_errorf(err, "the user map has no original id for user %lld of %s",
                      (long long)ds.user_ids[rows[i]], data);
            goto done;
        }
    }
    if (item_map && cli_check_item_map(item_map, m.cfg.n_items, item_map_path, err->msg,
                                       sizeof err->msg) < 0)
        goto done;
    const int D = m.cfg.dim;
    repr = br_xmalloc((size_t)n * D * sizeof(float), err);
    items = br_xmalloc((size_t)n * k * sizeof(int32_t), err);
    scores = br_xmalloc((size_t)n * k * sizeof(float), err);
    if (!repr || !items || !scores) goto done;
    if (br_encode_users(&m, &ds, rows, n, BR_SPLIT_ALL, repr, err) < 0) goto done;
    if (!include_seen && br_split_exclusions(&ds, rows, n, BR_SPLIT_ALL, &ex_off, &ex_items, err) < 0)
        goto done;
    br_exclusions ex = {ex_off, ex_items};
    if (br_topk(repr, n, br_model_items(&m), m.cfg.n_items, D, k, include_seen ? NULL : &ex, items,
                scores, err) < 0)
        goto done;
    for (int32_t i = 0; i < n; i++) {
        printf("{\"user\": ");
        print_id(user_map, ds.user_ids[rows[i]]);
        printf(", \"items\": [");
        int first = 1;
        for (int32_t j = 0; j < k; j++) {
            if (items[(size_t)i * k + j] == 0) continue;
            printf("%s", first ? "" : ", ");
            print_id(item_map, items[(size_t)i * k + j]);
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
    return rc;
}

/* --history "5,9,12" as the request's "items": integers, or with an item
 * map original ids (strings). */
static json_t *history_json(const char *list, int original_ids, char *msg, size_t msglen) {
    json_t *a = json_array();
    char tok[1024];
    int r = 1;
    for (const char *p = list; a && (r = next_token(&p, tok, sizeof tok)) > 0;) {
        long long id = 0;
        json_t *v = original_ids            ? json_string(tok)
                    : parse_id(tok, &id) == 0 ? json_integer(id)
                                              : NULL;
        if (!v || json_array_append_new(a, v) < 0) {
            r = -1;
            break;
        }
    }
    if (a && r == 0 && json_array_size(a) > 0) return a;
    snprintf(msg, msglen, "--history: '%.200s' is not a comma-separated list of item ids", list);
    json_decref(a);
    return NULL;
}

/* --history, or one request per line of standard input. */
static int recommend_adhoc(const cli_rec_ctx *ctx, const char *history) {
    char msg[512] = "";
    if (history) {
        json_t *items = history_json(history, ctx->items != NULL, msg, sizeof msg);
        json_t *req = items ? json_pack("{s:o}", "items", items) : NULL;
        json_t *result = NULL;
        if (req && cli_recommend(ctx, req, &result, msg, sizeof msg) == 200) {
            char *s = json_dumps(result, JSON_REAL_PRECISION(6));
            if (s) puts(s);
            free(s);
        }
        json_decref(req);
        if (!result) fprintf(stderr, "basrec recommend: %s\n", *msg ? msg : "out of memory");
        json_decref(result);
        return result ? 0 : 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int failed = 0;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        char *resp;
        failed |= cli_recommend_body(ctx, line, (size_t)len, &resp) != 200;
        puts(resp ? resp : "{\"error\": \"out of memory\"}");
        free(resp);
        fflush(stdout);
    }
    free(line);
    return failed;
}

int cmd_recommend(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL, *users = NULL, *history = NULL, *item_map = NULL,
               *user_map = NULL;
    int32_t k = 10, threads = 0;
    int include_seen = 0, use_stdin = 0, help;
    opt_spec specs[] = {
        {"checkpoint", OPT_STR, &ckpt, "model checkpoint (.safetensors)", 0},
        {"data", OPT_STR, &data, "sequence file with the users' histories", 0},
        {"users", OPT_STR, &users, "comma-separated user ids (default: all users)", 0},
        {"history", OPT_STR, &history, "recommend after these comma-separated items instead", 0},
        {"stdin", OPT_FLAG, &use_stdin, "answer one JSON request per input line (format above)", 0},
        {"k", OPT_INT, &k, "items per user", 0},
        {"include-seen", OPT_FLAG, &include_seen, "do not exclude items the user already has", 0},
        {"item-map", OPT_STR, &item_map, "items in original ids: prepare's OUT.items.tsv", 0},
        {"user-map", OPT_STR, &user_map, "users in original ids: prepare's OUT.users.tsv", 0},
        {"threads", OPT_INT, &threads, "threads (default: all cores)", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("recommend", &err);
    if (help) {
        args_print_help(
            "usage: basrec recommend --checkpoint FILE --data FILE [--users 1,2] [--k 10]\n"
            "       basrec recommend --checkpoint FILE --history 5,9,12 [--k 10]\n"
            "       basrec recommend --checkpoint FILE --stdin [--data FILE]\n\n"
            "Top-k next items after each user's whole history, one JSON line per user;\n"
            "or after an ad-hoc history. With --stdin each line is a request\n"
            "{\"items\": [5, 9], \"k\": 10, \"exclude_seen\": true} (or {\"user\": id} with --data)\n"
            "answered by one line {\"items\": [...], \"scores\": [...]} or {\"error\": \"...\"};\n"
            "the exit status is 1 if any line failed. With --item-map / --user-map, ids\n"
            "given and printed are the original ones.",
            specs);
        return 0;
    }
    const int adhoc = history || use_stdin;
    const char *usage_error = !ckpt                  ? "--checkpoint is required"
                              : history && use_stdin ? "--history and --stdin exclude each other"
                              : adhoc && users       ? "--users goes with --data alone"
                              : history && data      ? "--history takes no --data"
                              : !adhoc && !data      ? "--data (or --history or --stdin) is required"
                              : user_map && !data    ? "--user-map needs --data"
                                                     : NULL;
    if (usage_error) {
        fprintf(stderr, "basrec recommend: %s (see --help)\n", usage_error);
        return 2;
    }
    if (k <= 0 || k > 10000) {
        fprintf(stderr, "basrec recommend: --k must be in 1..10000\n");
        return 2;
    }
    cli_set_threads(threads);
    if (adhoc) {
        cli_rec_ctx ctx;
        if (cli_open_rec_ctx(&ctx, ckpt, item_map, user_map, data) < 0) return 1;
        ctx.default_k = k;
        ctx.max_k = 10000;
        ctx.exclude_seen = !include_seen;
        int rc = recommend_adhoc(&ctx, history);
        cli_close_rec_ctx(&ctx);
        return rc;
    }
    char msg[1024];
    basrec_idmap *imap = NULL, *umap = NULL;
    int rc = -1;
    if ((item_map && !(imap = basrec_idmap_load(item_map, msg, sizeof msg))) ||
        (user_map && !(umap = basrec_idmap_load(user_map, msg, sizeof msg))))
        br_errorf(&err, "%s", msg);
    else
        rc = recommend_users(ckpt, data, users, k, include_seen, imap, item_map, umap, &err);
    basrec_idmap_free(imap);
    basrec_idmap_free(umap);
    return rc < 0 ? cli_fail("recommend", &err) : 0;
}
