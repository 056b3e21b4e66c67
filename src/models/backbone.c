#include <string.h>

#include "models/backbone.h"

br_backbone *br_backbone_create(const br_model_config *cfg, br_error *err) {
    if (strcmp(cfg->model, "sasrec") == 0) return br_sasrec_create(cfg, err);
    if (strcmp(cfg->model, "fmlprec") == 0) return br_fmlprec_create(cfg, err);
    if (strcmp(cfg->model, "nextitnet") == 0) return br_nextitnet_create(cfg, err);
    if (strcmp(cfg->model, "gru4rec") == 0) return br_gru4rec_create(cfg, err);
    br_errorf(err, "unknown model '%s' (known: sasrec, fmlprec, gru4rec, nextitnet)", cfg->model);
    return NULL;
}

void br_backbone_encode_last(br_backbone *bb, const br_params *p, const br_tokens *tok,
                             const float *x_in, float *full, float *out) {
    if (bb->vt->encode_last) {
        bb->vt->encode_last(bb, p, tok, x_in, out);
        return;
    }
    const int D = bb->cfg.dim;
    bb->vt->forward(bb, p, tok, x_in, full, 0, 0);
    for (int32_t s = 0; s < tok->n_seq; s++)
        memmove(out + (size_t)s * D, full + (size_t)(tok->seq_off[s + 1] - 1) * D, (size_t)D * sizeof(float));
}
