/* Sequence datasets: one line per user, "user_id item_id item_id ...", items
 * in chronological order, ids positive integers. Loaded into CSR arrays and
 * validated; the leave-one-out split is a view on them (no copies). */
#ifndef BR_DATA_DATASET_H
#define BR_DATA_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

typedef struct br_dataset {
    char *path;              /* as given to br_dataset_load */
    int32_t n_users;         /* number of sequences (lines) */
    int32_t n_items;         /* largest item id; items are 1..n_items */
    int64_t n_interactions;  /* total items over all sequences */
    int64_t *offsets;        /* n_users + 1; row u is items[offsets[u] .. offsets[u+1]) */
    int32_t *items;          /* all sequences concatenated, chronological */
    int64_t *user_ids;       /* the user id written in the file, per row */
    int32_t *sorted_items;   /* per-row sorted copy of items (same offsets): membership tests */
    uint64_t fingerprint;    /* FNV-1a 64 of the file's bytes: ties checkpoints to data */
    int32_t *user_order;     /* rows sorted by user id: br_dataset_find_user */
} br_dataset;

/* Largest accepted item id: one short of INT32_MAX so that n_items + 1
 * (tables with a padding row 0) still fits an int32. */
#define BR_MAX_ITEM_ID (INT32_MAX - 1)

/* Loads and validates a sequence file. Rejects, with "path:line: problem":
 * a missing/unreadable file, empty lines, non-numeric or out-of-range tokens,
 * ids <= 0, users with fewer than 3 items, duplicate user ids, an empty file. */
int br_dataset_load(const char *path, br_dataset *ds, br_error *err);
void br_dataset_free(br_dataset *ds);

/* Row index of a file user id, or -1. O(log n_users) (rows sorted by id is
 * not assumed: a sorted index is built at load). */
int32_t br_dataset_find_user(const br_dataset *ds, int64_t user_id);

static inline int32_t br_seq_len(const br_dataset *ds, int32_t u) {
    return (int32_t)(ds->offsets[u + 1] - ds->offsets[u]);
}
static inline const int32_t *br_seq(const br_dataset *ds, int32_t u) {
    return ds->items + ds->offsets[u];
}
/* True if item occurs anywhere in row u's whole sequence. */
bool br_dataset_contains(const br_dataset *ds, int32_t u, int32_t item);

/* Leave-one-out split (PROTOCOL.md). For a row of n items s[0..n):
 *   TRAIN: input s[0:n-3], targets s[1:n-2]
 *   VALID: input s[0:n-2], answer s[n-2]
 *   TEST:  input s[0:n-1], answer s[n-1]
 *   ALL:   input s[0:n]    (recommend the next item after everything known) */
typedef enum { BR_SPLIT_TRAIN, BR_SPLIT_VALID, BR_SPLIT_TEST, BR_SPLIT_ALL } br_split;

/* Length of the split's input prefix (before truncation to max_len). */
static inline int32_t br_split_input_len(const br_dataset *ds, int32_t u, br_split split) {
    int32_t n = br_seq_len(ds, u);
    switch (split) {
    case BR_SPLIT_TRAIN: return n - 3;
    case BR_SPLIT_VALID: return n - 2;
    case BR_SPLIT_TEST: return n - 1;
    default: return n;
    }
}
/* The answer of VALID/TEST: the item right after the input prefix. */
static inline int32_t br_split_answer(const br_dataset *ds, int32_t u, br_split split) {
    return br_seq(ds, u)[br_split_input_len(ds, u, split)];
}

/* Writes a synthetic sequence file with learnable structure (items grouped
 * in topics, users drifting between a few topics, popularity skew), so that
 * a user without data can run the whole pipeline. Atomic write. */
int br_synth_write(const char *path, int32_t n_users, int32_t n_items, uint64_t seed,
                   br_error *err);

#endif
