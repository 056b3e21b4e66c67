#include <stdlib.h>
#include <string.h>

#include "data/batch.h"
#include "eval/evaluate.h"

int br_encode_users(br_model *m, const br_dataset *ds, const int32_t *rows, int32_t n,
                    br_split split, float *repr, br_error *err) {
    const int D = m->cfg.dim, L = m->cfg.max_len;
    /* Encode in chunks of whole sequences that fit the reserved workspace. */
    const int32_t chunk_seq = 256;
    br_batch b;
    if (br_batch_alloc(&b, chunk_seq, chunk_seq * L, err) < 0) return -1;
    if (br_model_reserve(m, chunk_seq * L, chunk_seq, err) < 0) {
        br_batch_free(&b);
        return -1;
    }
    float *x = br_xmalloc((size_t)chunk_seq * L * D * sizeof(float), err);
    float *h = br_xmalloc((size_t)chunk_seq * L * D * sizeof(float), err);
    int32_t *slot = br_xmalloc((size_t)chunk_seq * sizeof(int32_t), err);
    if (!x || !h || !slot) {
        free(x);
        free(h);
        free(slot);
        br_batch_free(&b);
        return -1;
    }
    for (int32_t i0 = 0; i0 < n; i0 += chunk_seq) {
        const int32_t i1 = i0 + chunk_seq < n ? i0 + chunk_seq : n;
        br_batch_clear(&b);
        for (int32_t i = i0; i < i1; i++) {
            /* slot: index of the row's sequence in the batch, -1 if empty. */
            slot[i - i0] = br_batch_add(&b, ds, rows[i], split, L) > 0 ? b.n_seq - 1 : -1;
        }
        br_tokens tok = br_batch_tokens(&b);
        br_model_gather(m, b.item, b.n_tok, x);
        /* h: the full outputs (a backbone without encode_last), then the
         * last tokens' rows at its start. */
        br_backbone_encode_last(m->backbone, &m->params, &tok, x, h, h);
        for (int32_t i = i0; i < i1; i++) {
            float *r = repr + (size_t)i * D;
            int32_t s = slot[i - i0];
            if (s < 0) memset(r, 0, (size_t)D * sizeof(float));
            else memcpy(r, h + (size_t)s * D, (size_t)D * sizeof(float));
        }
    }
    free(x);
    free(h);
    free(slot);
    br_batch_free(&b);
    return 0;
}

int br_split_exclusions(const br_dataset *ds, const int32_t *rows, int32_t n, br_split split,
                        int64_t **offsets, int32_t **items, br_error *err) {
    int64_t *off = br_xmalloc(((size_t)n + 1) * sizeof(int64_t), err);
    if (!off) return -1;
    off[0] = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t len = br_split_input_len(ds, rows[i], split);
        off[i + 1] = off[i] + (len > 0 ? len : 0);
    }
    int32_t *it = br_xmalloc((size_t)off[n] * sizeof(int32_t), err);
    if (!it) {
        free(off);
        return -1;
    }
    for (int32_t i = 0; i < n; i++)
        memcpy(it + off[i], br_seq(ds, rows[i]), (size_t)(off[i + 1] - off[i]) * sizeof(int32_t));
    *offsets = off;
    *items = it;
    return 0;
}

/* Encodes every user's split input and scores the answers under the
 * protocol: seen items removed (zero_scored 0) or scored 0 (1). */
static int evaluate_split(br_model *m, const br_dataset *ds, br_split split, int zero_scored,
                          br_metrics *out, br_error *err) {
    if (split != BR_SPLIT_VALID && split != BR_SPLIT_TEST)
        return br_errorf(err, "evaluation needs the valid or test split");
    if (ds->n_items > m->cfg.n_items)
        return br_errorf(err, "%s: item id %d is beyond the model's %d items", ds->path,
                         ds->n_items, m->cfg.n_items);
    const int32_t n = ds->n_users;
    const int D = m->cfg.dim;
    int rc = -1;
    int32_t *rows = br_xmalloc((size_t)n * sizeof(int32_t), err);
    int32_t *answer = br_xmalloc((size_t)n * sizeof(int32_t), err);
    float *repr = br_xmalloc((size_t)n * D * sizeof(float), err);
    int64_t *rank = br_xmalloc((size_t)n * sizeof(int64_t), err);
    int64_t *ex_off = NULL;
    int32_t *ex_items = NULL;
    if (!rows || !answer || !repr || !rank) goto done;
    for (int32_t u = 0; u < n; u++) {
        rows[u] = u;
        answer[u] = br_split_answer(ds, u, split);
    }
    if (br_encode_users(m, ds, rows, n, split, repr, err) < 0) goto done;
    if (br_split_exclusions(ds, rows, n, split, &ex_off, &ex_items, err) < 0) goto done;
    br_exclusions ex = {ex_off, ex_items};
    if (zero_scored) {
        rc = br_metrics_zero_scored(repr, n, br_model_items(m), m->cfg.n_items, D, answer, &ex, out, err);
        goto done;
    }
    if (br_rank_answers(repr, n, br_model_items(m), m->cfg.n_items, D, answer, &ex, rank, err) < 0)
        goto done;
    /* Seen items are removed from the ranking, the answer included when it
     * repeats an input item: such a user is a miss (rank past every item). */
    for (int32_t u = 0; u < n; u++)
        for (int64_t j = ex_off[u]; j < ex_off[u + 1]; j++)
            if (ex_items[j] == answer[u]) {
                rank[u] = m->cfg.n_items;
                break;
            }
    br_metrics_from_ranks(rank, n, out);
    rc = 0;
done:
    free(rows);
    free(answer);
    free(repr);
    free(rank);
    free(ex_off);
    free(ex_items);
    return rc;
}

int br_evaluate(br_model *m, const br_dataset *ds, br_split split, br_metrics *out,
                br_error *err) {
    return evaluate_split(m, ds, split, 0, out, err);
}

int br_evaluate_zero_scored(br_model *m, const br_dataset *ds, br_split split, br_metrics *out,
                            br_error *err) {
    return evaluate_split(m, ds, split, 1, out, err);
}

void br_metrics_write_json(FILE *fp, const br_metrics *m) {
    fputc('{', fp);
    for (int k = 0; k < BR_N_CUTOFFS; k++)
        fprintf(fp, "\"HR@%d\": %.6f, \"NDCG@%d\": %.6f, ", br_cutoffs[k], m->hr[k], br_cutoffs[k],
                m->ndcg[k]);
    fprintf(fp, "\"MRR\": %.6f}", m->mrr);
}
