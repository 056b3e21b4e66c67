#include <string.h>

#include "models/model.h"

void br_model_config_defaults(br_model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->model, "sasrec");
    cfg->dim = 64;
    cfg->n_layers = 2;
    cfg->n_heads = 2;
    cfg->max_len = 50;
    cfg->hidden_dropout = 0.2f;
    cfg->attn_dropout = 0.2f;
    cfg->init_std = 0.02f;
}

void br_model_config_backbone_defaults(br_model_config *cfg) {
    if (strcmp(cfg->model, "nextitnet") == 0) cfg->n_layers = 10;
}

int br_model_create(br_model *m, const br_model_config *cfg, br_error *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    if (cfg->n_items <= 0) return br_errorf(err, "model needs at least one item");
    if (cfg->hidden_dropout < 0 || cfg->hidden_dropout >= 1 || cfg->attn_dropout < 0 ||
        cfg->attn_dropout >= 1)
        return br_errorf(err, "dropout probabilities must be in [0, 1)");
    if (cfg->run_padding && strcmp(cfg->model, "gru4rec") != 0)
        return br_errorf(err, "run_padding is an option of gru4rec, not of %s", cfg->model);
    int64_t shape[2] = {(int64_t)cfg->n_items + 1, cfg->dim};
    m->item_emb = br_params_add(&m->params, "item_embeddings.weight", 2, shape, err);
    if (m->item_emb < 0) goto fail;
    m->backbone = br_backbone_create(cfg, err);
    if (!m->backbone) goto fail;
    if (m->backbone->vt->register_params(m->backbone, &m->params, err) < 0) goto fail;
    if (br_params_alloc(&m->params, err) < 0) goto fail;
    return 0;
fail:
    br_model_free(m);
    return -1;
}

void br_model_set_dropout(br_model *m, float hidden, float attention) {
    m->cfg.hidden_dropout = m->backbone->cfg.hidden_dropout = hidden;
    m->cfg.attn_dropout = m->backbone->cfg.attn_dropout = attention;
}

static float item_init_std(const br_model *m) {
    const br_backbone_vtable *vt = m->backbone->vt;
    return vt->item_init_std ? vt->item_init_std(m->backbone) : m->cfg.init_std;
}

void br_model_init_weights(br_model *m, uint64_t seed) {
    br_rng rng;
    br_rng_seed(&rng, seed, 0x1417);
    br_param_init_normal(&m->params, m->item_emb, item_init_std(m), &rng);
    m->backbone->vt->init_params(m->backbone, &m->params, &rng);
}

int br_model_add_mask_item(br_model *m, uint64_t seed, br_error *err) {
    if (m->mask_emb > 0) return 0;
    /* The same tensors in the same order (same offsets), then the mask row:
     * a larger table into which the old buffers are copied whole. */
    br_params *old = &m->params, p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < old->n; i++)
        if (br_params_add(&p, old->list[i].name, old->list[i].ndim, old->list[i].shape, err) < 0)
            goto fail;
    const int64_t shape[2] = {1, m->cfg.dim};
    const int idx = br_params_add(&p, BR_MASK_EMB_NAME, 2, shape, err);
    if (idx < 0 || br_params_alloc(&p, err) < 0) goto fail;
    const size_t bytes = old->total * sizeof(float);
    memcpy(p.data, old->data, bytes);
    memcpy(p.grad, old->grad, bytes);
    memcpy(p.adam_m, old->adam_m, bytes);
    memcpy(p.adam_v, old->adam_v, bytes);
    p.adam_step = old->adam_step;
    br_params_free(old);
    m->params = p;
    m->mask_emb = idx;
    br_rng rng;
    br_rng_seed(&rng, seed, 0x3A5C);
    br_param_init_normal(&m->params, idx, item_init_std(m), &rng);
    return 0;
fail:
    br_params_free(&p);
    return -1;
}

int br_model_reserve(br_model *m, int32_t max_tok, int32_t max_seq, br_error *err) {
    return m->backbone->vt->reserve(m->backbone, max_tok, max_seq, err);
}

void br_model_free(br_model *m) {
    if (m->backbone) m->backbone->vt->destroy(m->backbone);
    br_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

void br_model_gather(const br_model *m, const int32_t *items, int32_t T, float *x) {
    const int D = m->cfg.dim;
    const float *E = br_model_items(m);
#pragma omp parallel for schedule(static)
    for (int32_t t = 0; t < T; t++) memcpy(x + (size_t)t * D, E + (size_t)items[t] * D, (size_t)D * sizeof(float));
}

void br_model_scatter_grad(br_model *m, const int32_t *items, int32_t T, const float *dx) {
    const int D = m->cfg.dim;
    float *dE = br_pgrad(&m->params, m->item_emb);
    for (int32_t t = 0; t < T; t++) {
        float *row = dE + (size_t)items[t] * D;
        const float *g = dx + (size_t)t * D;
        for (int d = 0; d < D; d++) row[d] += g[d];
    }
}
