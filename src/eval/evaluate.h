/* Evaluation of a model on a split: encode each user's input prefix, take
 * the representation at the last position, rank the answer among all items
 * with the user's input items excluded. */
#ifndef BR_EVAL_EVALUATE_H
#define BR_EVAL_EVALUATE_H

#include <stdio.h>

#include "data/dataset.h"
#include "eval/rank.h"
#include "models/model.h"

/* Representations [n, dim] of the given rows' split inputs (last position).
 * Rows with an empty input get a zero vector. The model must have reserved
 * workspace for at least max_len tokens. */
int br_encode_users(br_model *m, const br_dataset *ds, const int32_t *rows, int32_t n,
                    br_split split, float *repr, br_error *err);

/* Full-ranking metrics of split VALID or TEST over all users. The user's
 * input items are removed from the ranking; when the answer is one of them
 * (a repeat interaction) the user counts as a miss. */
int br_evaluate(br_model *m, const br_dataset *ds, br_split split, br_metrics *out,
                br_error *err);

/* The same metrics as the reference code computes them: the user's input
 * items scored 0 instead of removed, the padding row ranked too
 * (br_metrics_zero_scored). For comparison with published figures only. */
int br_evaluate_zero_scored(br_model *m, const br_dataset *ds, br_split split, br_metrics *out,
                            br_error *err);

/* Builds exclusion lists: for each row, its split input items (whole prefix). */
int br_split_exclusions(const br_dataset *ds, const int32_t *rows, int32_t n, br_split split,
                        int64_t **offsets, int32_t **items, br_error *err);

/* Writes {"HR@5": .., "NDCG@5": .., ..., "MRR": ..} (no newline). */
void br_metrics_write_json(FILE *fp, const br_metrics *m);

#endif
