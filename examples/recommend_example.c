/* Recommends next items after a history given on the command line, through
 * the public API only (include/basrec.h):
 *
 *     recommend_example CHECKPOINT ITEM [ITEM ...]
 *
 * Items are the model's ids, oldest first; prints the top 10 unseen items,
 * one "item score" line each. Build against an installed library with
 *     cc recommend_example.c $(pkg-config --cflags --libs basrec) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <basrec.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CHECKPOINT ITEM [ITEM ...]\n", argv[0]);
        return 2;
    }
    const int32_t n = argc - 2;
    int32_t *history = malloc((size_t)n * sizeof *history);
    if (!history) return 1;
    for (int32_t i = 0; i < n; i++) {
        char *end;
        errno = 0;
        long v = strtol(argv[i + 2], &end, 10);
        if (errno || end == argv[i + 2] || *end || v < 1 || v > INT32_MAX) {
            fprintf(stderr, "'%s' is not an item id\n", argv[i + 2]);
            free(history);
            return 2;
        }
        history[i] = (int32_t)v;
    }
    char err[512];
    basrec_model *m = basrec_model_load(argv[1], err, sizeof err);
    if (!m) {
        fprintf(stderr, "%s\n", err);
        free(history);
        return 1;
    }
    int32_t k = basrec_model_n_items(m) < 10 ? basrec_model_n_items(m) : 10, items[10];
    float scores[10];
    int got = basrec_recommend(m, history, n, k, 1, items, scores, err, sizeof err);
    if (got < 0) fprintf(stderr, "%s\n", err);
    for (int i = 0; i < got; i++) printf("%d %.6f\n", items[i], scores[i]);
    basrec_model_free(m);
    free(history);
    return got < 0;
}
