/* Full-ranking evaluation and top-K retrieval over the whole catalogue.
 * Scores are dot products user_repr . item_emb[item] for items 1..n_items
 * (row 0 of item_emb is padding and never ranked). Items are processed in
 * blocks so memory stays bounded for catalogues of millions of items. */
#ifndef BR_EVAL_RANK_H
#define BR_EVAL_RANK_H

#include <stdint.h>

#include "util/error.h"

#define BR_N_CUTOFFS 3
extern const int br_cutoffs[BR_N_CUTOFFS]; /* 5, 10, 20 */

typedef struct br_metrics {
    double hr[BR_N_CUTOFFS];   /* HR@5, @10, @20 */
    double ndcg[BR_N_CUTOFFS]; /* NDCG@5, @10, @20 */
    double mrr;                /* mean of 1/(rank+1) over the full ranking */
    int64_t n;                 /* users evaluated */
} br_metrics;

/* Per-user exclusion lists in CSR form: row i excludes
 * items[offsets[i] .. offsets[i+1]). Items may repeat; order is free. */
typedef struct br_exclusions {
    const int64_t *offsets;
    const int32_t *items;
} br_exclusions;

/* rank_out[i] = 0-based rank of answer[i] among items 1..n_items, after
 * removing user i's excluded items (the answer itself is never removed,
 * even if it is in the list). Ties are broken by item id (lower id first). */
int br_rank_answers(const float *user_repr, int32_t n_users, const float *item_emb,
                    int32_t n_items, int32_t dim, const int32_t *answer,
                    const br_exclusions *excl, int64_t *rank_out, br_error *err);

/* HR@K / NDCG@K (K = 5, 10, 20) and MRR from 0-based ranks:
 * HR = [rank < K], NDCG = [rank < K] / log2(rank + 2). */
void br_metrics_from_ranks(const int64_t *rank, int64_t n, br_metrics *m);

/* The metrics as the reference code computes them (PROTOCOL.md's quirk):
 * user i's excluded items are not removed but scored 0, and item 0 (the
 * padding row of item_emb) is ranked too, over items 0..n_items. The
 * answer's score is its own, or 0 when it is excluded (a repeat). Where the
 * answer ties with other items (a repeat ties with every other excluded
 * item), its rank is taken uniformly among the tied places, and the
 * metrics are averaged over them, as an arbitrary tie order would give on
 * average. */
int br_metrics_zero_scored(const float *user_repr, int32_t n_users, const float *item_emb,
                           int32_t n_items, int32_t dim, const int32_t *answer,
                           const br_exclusions *excl, br_metrics *out, br_error *err);

/* Top-k items per user (best first, ties by lower id), excluded items
 * removed (excl may be NULL). items_out and scores_out are n_users x k;
 * where fewer than k items remain the tail is item 0 with score -INFINITY. */
int br_topk(const float *user_repr, int32_t n_users, const float *item_emb,
            int32_t n_items, int32_t dim, int32_t k, const br_exclusions *excl,
            int32_t *items_out, float *scores_out, br_error *err);

#endif
