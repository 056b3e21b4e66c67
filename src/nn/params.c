#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/params.h"

int br_params_add(br_params *p, const char *name, int ndim, const int64_t *shape, br_error *err) {
    if (p->data) return br_errorf(err, "parameter '%s' registered after allocation", name);
    if (ndim < 1 || ndim > 4) return br_errorf(err, "parameter '%s': bad rank %d", name, ndim);
    if (strlen(name) >= BR_PARAM_NAME_MAX) return br_errorf(err, "parameter name too long: %s", name);
    if (br_params_find(p, name) >= 0) return br_errorf(err, "duplicate parameter '%s'", name);
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 32;
        br_param *l = realloc(p->list, (size_t)cap * sizeof *l);
        if (!l) return br_errorf(err, "out of memory registering parameters");
        p->list = l;
        p->cap = cap;
    }
    br_param *t = &p->list[p->n];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0) return br_errorf(err, "parameter '%s': dimension %d is %lld", name, d, (long long)shape[d]);
        t->shape[d] = shape[d];
        t->numel *= (size_t)shape[d];
    }
    t->offset = p->total;
    p->total += t->numel;
    return p->n++;
}

int br_params_alloc(br_params *p, br_error *err) {
    p->data = br_xcalloc(p->total, sizeof(float), err);
    p->grad = br_xcalloc(p->total, sizeof(float), err);
    p->adam_m = br_xcalloc(p->total, sizeof(float), err);
    p->adam_v = br_xcalloc(p->total, sizeof(float), err);
    p->adam_step = 0;
    return p->data && p->grad && p->adam_m && p->adam_v ? 0 : -1;
}

void br_params_free(br_params *p) {
    free(p->list);
    free(p->data);
    free(p->grad);
    free(p->adam_m);
    free(p->adam_v);
    memset(p, 0, sizeof *p);
}

int br_params_find(const br_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->list[i].name, name) == 0) return i;
    return -1;
}

void br_params_zero_grad(br_params *p) { memset(p->grad, 0, p->total * sizeof(float)); }

void br_param_init_normal(br_params *p, int i, float std, br_rng *rng) {
    float *w = br_pdata(p, i);
    for (size_t k = 0; k < p->list[i].numel; k++) w[k] = (float)(std * br_rng_normal(rng));
}

void br_param_init_const(br_params *p, int i, float value) {
    float *w = br_pdata(p, i);
    for (size_t k = 0; k < p->list[i].numel; k++) w[k] = value;
}

void br_adam_step(br_params *p, const br_adam_config *cfg) {
    p->adam_step++;
    const double t = (double)p->adam_step;
    const float b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps, wd = cfg->weight_decay;
    const float step_size = (float)(cfg->lr / (1.0 - pow(b1, t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(b2, t));
    float *restrict w = p->data, *restrict m = p->adam_m, *restrict v = p->adam_v;
    const float *restrict g = p->grad;
    const long n = (long)p->total;
#pragma omp parallel for schedule(static)
    for (long k = 0; k < n; k++) {
        float gk = g[k] + wd * w[k];
        m[k] = b1 * m[k] + (1.0f - b1) * gk;
        v[k] = b2 * v[k] + (1.0f - b2) * gk * gk;
        float denom = sqrtf(v[k]) / bc2_sqrt + eps;
        w[k] -= step_size * m[k] / denom;
    }
}
