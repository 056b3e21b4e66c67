#include <stdlib.h>
#include <string.h>

#include "data/batch.h"
#include "util/rng.h"

int br_batch_alloc(br_batch *b, int32_t cap_seq, int32_t cap_tok, br_error *err) {
    memset(b, 0, sizeof *b);
    b->cap_seq = cap_seq;
    b->cap_tok = cap_tok;
    b->seq_off = br_xcalloc((size_t)cap_seq + 1, sizeof(int32_t), err);
    b->row = br_xcalloc((size_t)cap_seq, sizeof(int32_t), err);
    b->item = br_xcalloc((size_t)cap_tok, sizeof(int32_t), err);
    b->pos = br_xcalloc((size_t)cap_tok, sizeof(int32_t), err);
    b->target = br_xcalloc((size_t)cap_tok, sizeof(int32_t), err);
    b->neg = br_xcalloc((size_t)cap_tok, sizeof(int32_t), err);
    if (!b->seq_off || !b->row || !b->item || !b->pos || !b->target || !b->neg) {
        br_batch_free(b);
        return -1;
    }
    return 0;
}

void br_batch_free(br_batch *b) {
    free(b->seq_off);
    free(b->row);
    free(b->item);
    free(b->pos);
    free(b->target);
    free(b->neg);
    memset(b, 0, sizeof *b);
}

void br_batch_clear(br_batch *b) {
    b->n_seq = b->n_tok = 0;
    b->seq_off[0] = 0;
}

int32_t br_batch_add(br_batch *b, const br_dataset *ds, int32_t u, br_split split, int32_t max_len) {
    int32_t len = br_split_input_len(ds, u, split);
    if (len <= 0) return 0;
    const int32_t *s = br_seq(ds, u);
    const int32_t start = len > max_len ? len - max_len : 0;
    const int32_t n = len - start;
    int32_t t = b->n_tok;
    for (int32_t i = 0; i < n; i++, t++) {
        b->item[t] = s[start + i];
        b->pos[t] = max_len - n + i;
        b->target[t] = split == BR_SPLIT_TRAIN ? s[start + i + 1] : 0;
        b->neg[t] = 0;
    }
    b->row[b->n_seq] = u;
    b->n_tok = t;
    b->seq_off[++b->n_seq] = t;
    return n;
}

void br_batch_sample_negatives(br_batch *b, const br_dataset *ds, uint64_t key) {
#pragma omp parallel for schedule(static)
    for (int32_t s = 0; s < b->n_seq; s++) {
        br_rng r;
        br_rng_seed(&r, key, (uint64_t)b->row[s]);
        for (int32_t t = b->seq_off[s]; t < b->seq_off[s + 1]; t++) {
            int32_t v;
            do v = 1 + (int32_t)br_rng_below(&r, (uint64_t)ds->n_items);
            while (br_dataset_contains(ds, b->row[s], v) && br_seq_len(ds, b->row[s]) < ds->n_items);
            b->neg[t] = v;
        }
    }
}
