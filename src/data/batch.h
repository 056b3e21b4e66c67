/* Ragged training/evaluation batches: only real (non-padding) tokens are
 * stored; each token carries its absolute position id, so the computation
 * equals the reference's left-padded one on real positions. */
#ifndef BR_DATA_BATCH_H
#define BR_DATA_BATCH_H

#include <stdint.h>

#include "data/dataset.h"
#include "models/backbone.h"

typedef struct br_batch {
    int32_t n_seq, n_tok;
    int32_t cap_seq, cap_tok;
    int32_t *seq_off;  /* n_seq + 1 */
    int32_t *row;      /* dataset row of each sequence */
    int32_t *item;     /* input item per token */
    int32_t *pos;      /* absolute position id per token */
    int32_t *target;   /* next item per token (TRAIN), else 0 */
    int32_t *neg;      /* sampled negative per token (TRAIN), else 0 */
} br_batch;

int br_batch_alloc(br_batch *b, int32_t cap_seq, int32_t cap_tok, br_error *err);
void br_batch_free(br_batch *b);
void br_batch_clear(br_batch *b);

/* Appends row u's input for the split, keeping its last max_len items.
 * TRAIN also fills the next-item targets. Returns the tokens added (0 for
 * an empty input, which adds no sequence). The caller keeps capacity. */
int32_t br_batch_add(br_batch *b, const br_dataset *ds, int32_t u, br_split split, int32_t max_len);

/* Draws one negative per token uniformly from 1..n_items, redrawn while it
 * is in the user's whole sequence (PROTOCOL.md); deterministic per (key, row). */
void br_batch_sample_negatives(br_batch *b, const br_dataset *ds, uint64_t key);

static inline br_tokens br_batch_tokens(const br_batch *b) {
    br_tokens t = {b->n_seq, b->n_tok, b->seq_off, b->pos, NULL};
    return t;
}

#endif
