/* A model's parameters live in one flat float buffer (and one each for the
 * gradient and Adam's moments), described by a table of named tensors. The
 * names and shapes follow PyTorch's state_dict of the same model, so a
 * checkpoint reads naturally from Python. */
#ifndef BR_NN_PARAMS_H
#define BR_NN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "util/rng.h"

#define BR_PARAM_NAME_MAX 64

typedef struct br_param {
    char name[BR_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[4];
    size_t offset; /* in floats, into data/grad/adam_m/adam_v */
    size_t numel;
} br_param;

typedef struct br_params {
    br_param *list;
    int n, cap;
    size_t total;   /* floats */
    float *data, *grad, *adam_m, *adam_v;
    int64_t adam_step;
} br_params;

/* Registers a tensor (before br_params_alloc); returns its index or -1.
 * Tensors registered one after another are contiguous in memory, which lets
 * e.g. query/key/value weights act as one fused matrix. */
int br_params_add(br_params *p, const char *name, int ndim, const int64_t *shape, br_error *err);
/* Allocates data (zeroed), grad, and Adam moments for all registered tensors. */
int br_params_alloc(br_params *p, br_error *err);
void br_params_free(br_params *p);
int br_params_find(const br_params *p, const char *name);

static inline float *br_pdata(const br_params *p, int i) { return p->data + p->list[i].offset; }
static inline float *br_pgrad(const br_params *p, int i) { return p->grad + p->list[i].offset; }

void br_params_zero_grad(br_params *p);
/* Fills tensor i with N(0, std^2) (std 0: zeros) / a constant. */
void br_param_init_normal(br_params *p, int i, float std, br_rng *rng);
void br_param_init_const(br_params *p, int i, float value);

typedef struct br_adam_config {
    float lr, beta1, beta2, eps, weight_decay;
} br_adam_config;

/* One Adam step over every parameter, as torch.optim.Adam (L2 weight decay
 * added to the gradient, bias-corrected moments). */
void br_adam_step(br_params *p, const br_adam_config *cfg);

#endif
