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
