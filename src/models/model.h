/* A recommender = an item embedding table (shared by input and output:
 * scores are h . E[item]) + a backbone encoder. */
#ifndef BR_MODELS_MODEL_H
#define BR_MODELS_MODEL_H

#include "models/backbone.h"
#include "nn/params.h"

typedef struct br_model {
    br_model_config cfg;
    br_params params;
    int item_emb;          /* param index: [n_items + 1, dim], row 0 = padding */
    /* param index of the mask item's input row ([1, dim]; item id n_items + 1),
     * 0 when the model has none: only M-Mask training adds it. */
    int mask_emb;
    br_backbone *backbone;
} br_model;

/* Fills a config with the reference defaults (SASRec, hidden 64, 2 layers,
 * 2 heads, max_len 50, dropout 0.2, init std 0.02). */
void br_model_config_defaults(br_model_config *cfg);
/* Adjusts the defaults to cfg->model's own: NextItNet stacks 10 residual
 * blocks (RecBole's 5 x dilations [1, 4]) where SASRec has 2 layers. */
void br_model_config_backbone_defaults(br_model_config *cfg);
int br_model_create(br_model *m, const br_model_config *cfg, br_error *err);
/* Changes the dropout probabilities (training-time only: a run started from
 * another run's weights uses its own dropout). */
void br_model_set_dropout(br_model *m, float hidden, float attention);
/* Reference initialisation, deterministic for a seed. */
void br_model_init_weights(br_model *m, uint64_t seed);
/* Sizes the workspaces for batches of up to max_tok tokens / max_seq sequences. */
int br_model_reserve(br_model *m, int32_t max_tok, int32_t max_seq, br_error *err);
void br_model_free(br_model *m);

static inline float *br_model_items(const br_model *m) { return br_pdata(&m->params, m->item_emb); }

/* Adds the mask item (M-Mask, docs/RMHSAOCL.md) unless the model has it: an
 * input row of its own, initialised like the item table from seed. It is a
 * tensor apart from the item table, registered after every other one, so
 * scoring, ranking and the losses, which read rows 1..n_items of the table,
 * can never see it, and the other tensors keep their offsets. Keeps
 * weights, Adam moments and step. */
int br_model_add_mask_item(br_model *m, uint64_t seed, br_error *err);
#define BR_MASK_EMB_NAME "mask_embedding.weight"
static inline int32_t br_model_mask_id(const br_model *m) { return m->cfg.n_items + 1; }

/* x[t] = E[items[t]] for the T tokens of a batch. */
void br_model_gather(const br_model *m, const int32_t *items, int32_t T, float *x);
/* dE[items[t]] += dx[t] (serial: tokens share rows). */
void br_model_scatter_grad(br_model *m, const int32_t *items, int32_t T, const float *dx);

#endif
