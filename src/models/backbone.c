#include <string.h>

#include "models/backbone.h"

br_backbone *br_backbone_create(const br_model_config *cfg, br_error *err) {
    if (strcmp(cfg->model, "sasrec") == 0) return br_sasrec_create(cfg, err);
    br_errorf(err, "unknown model '%s' (known: sasrec)", cfg->model);
    return NULL;
}
