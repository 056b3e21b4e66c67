#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/checkpoint.h"
#include "train/safetensors.h"

#define FORMAT_NAME "basrec-checkpoint"
#define FORMAT_VERSION "1"

enum { META_MAX = 64, META_LEN = 64 };

typedef struct meta_list {
    br_st_meta kv[META_MAX];
    char val[META_MAX][META_LEN];
    int n;
    int overflow; /* an entry did not fit: the save fails */
} meta_list;

static void meta_put(meta_list *ml, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void meta_put(meta_list *ml, const char *key, const char *fmt, ...) {
    if (ml->n == META_MAX) {
        ml->overflow = 1;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ml->val[ml->n], META_LEN, fmt, ap);
    va_end(ap);
    ml->kv[ml->n].key = key;
    ml->kv[ml->n].value = ml->val[ml->n];
    ml->n++;
}

int br_checkpoint_save(const char *path, const br_model *m, const br_dataset *ds,
                       const br_train_config *tc, const br_train_state *st, br_error *err) {
    const br_params *p = &m->params;
    const br_model_config *c = &m->cfg;
    meta_list ml = {.n = 0};
    meta_put(&ml, "format", "%s", FORMAT_NAME);
    meta_put(&ml, "format_version", "%s", FORMAT_VERSION);
    meta_put(&ml, "model", "%s", c->model);
    meta_put(&ml, "n_items", "%d", c->n_items);
    meta_put(&ml, "hidden_size", "%d", c->dim);
    meta_put(&ml, "num_hidden_layers", "%d", c->n_layers);
    meta_put(&ml, "num_attention_heads", "%d", c->n_heads);
    meta_put(&ml, "max_seq_length", "%d", c->max_len);
    meta_put(&ml, "hidden_dropout_prob", "%.9g", c->hidden_dropout);
    meta_put(&ml, "attention_probs_dropout_prob", "%.9g", c->attn_dropout);
    meta_put(&ml, "initializer_range", "%.9g", c->init_std);
    if (c->run_padding) meta_put(&ml, "run_padding", "%d", c->run_padding);
    meta_put(&ml, "data_fingerprint", "%016" PRIx64, ds->fingerprint);
    meta_put(&ml, "data_users", "%d", ds->n_users);
    const int resumable = tc && st;
    if (resumable) {
        meta_put(&ml, "batch_size", "%d", tc->batch_size);
        meta_put(&ml, "epochs", "%d", tc->epochs);
        meta_put(&ml, "patience", "%d", tc->patience);
        meta_put(&ml, "start_valid", "%d", tc->start_valid);
        meta_put(&ml, "lr", "%.9g", tc->lr);
        meta_put(&ml, "weight_decay", "%.9g", tc->weight_decay);
        meta_put(&ml, "seed", "%" PRIu64, tc->seed);
        meta_put(&ml, "method", "%s", tc->use_basrec ? "basrec" : "plain");
        const br_basrec_config *b = &tc->basrec;
        meta_put(&ml, "basrec_alpha", "%.9g", b->alpha);
        meta_put(&ml, "basrec_rate_min", "%.9g", b->rate_min);
        meta_put(&ml, "basrec_rate_max", "%.9g", b->rate_max);
        meta_put(&ml, "basrec_n_pairs", "%d", b->n_pairs);
        meta_put(&ml, "basrec_n_whole_level", "%d", b->n_whole_level);
        meta_put(&ml, "basrec_modules", "%d%d%d%d", b->single_seq, b->cross_seq, b->adaptive_weight,
                 b->nonlinear);
        char ops[META_LEN];
        br_basrec_format_operators(b->operators, ops, sizeof ops);
        meta_put(&ml, "basrec_operators", "%s", ops);
        meta_put(&ml, "basrec_crop_align", "%s", br_crop_align_name(b->crop_align));
        meta_put(&ml, "basrec_mix_pad", "%s", br_mix_pad_name(b->mix_pad));
        meta_put(&ml, "basrec_weight_form", "%s", br_weight_form_name(b->weight_form));
        meta_put(&ml, "loss", "%s", br_loss_name(tc->loss.kind));
        meta_put(&ml, "focal_gamma", "%.9g", tc->loss.focal_gamma);
        meta_put(&ml, "ce_negatives", "%d", tc->loss.ce_negatives);
        meta_put(&ml, "ce_sampler", "%s", br_sampler_name(tc->loss.ce_sampler));
        meta_put(&ml, "adam_step", "%" PRId64, p->adam_step);
        meta_put(&ml, "epoch", "%d", st->epoch);
        meta_put(&ml, "best_epoch", "%d", st->best_epoch);
        meta_put(&ml, "best_score", "%.17g", st->best_score);
        meta_put(&ml, "bad_epochs", "%d", st->bad_epochs);
        meta_put(&ml, "seconds", "%.3f", st->seconds);
    }
    if (ml.overflow) return br_errorf(err, "%s: more than %d metadata entries", path, META_MAX);
    /* The mask item's row is training state (only M-Mask copies read it):
     * weights-only checkpoints leave it out, so a model used for inference
     * has exactly the tensors of one trained without it. */
    const int n_w = p->n - (!resumable && m->mask_emb > 0);
    const int n_t = n_w * (resumable ? 3 : 1);
    br_st_tensor *t = br_xcalloc((size_t)n_t, sizeof *t, err);
    char(*names)[BR_PARAM_NAME_MAX + 8] = br_xcalloc((size_t)n_t, sizeof *names, err);
    if (!t || !names) {
        free(t);
        free(names);
        return -1;
    }
    for (int i = 0, k = 0; i < p->n; i++) {
        if (!resumable && m->mask_emb > 0 && i == m->mask_emb) continue;
        const float *src[3] = {p->data, p->adam_m, p->adam_v};
        const char *prefix[3] = {"", "adam_m.", "adam_v."};
        for (int j = 0; j < (resumable ? 3 : 1); j++, k++) {
            snprintf(names[k], sizeof names[k], "%s%s", prefix[j], p->list[i].name);
            t[k].name = names[k];
            t[k].ndim = p->list[i].ndim;
            memcpy(t[k].shape, p->list[i].shape, sizeof t[k].shape);
            t[k].data = src[j] + p->list[i].offset;
        }
    }
    int rc = br_st_write(path, t, n_t, ml.kv, ml.n, err);
    free(t);
    free(names);
    return rc;
}

/* Typed metadata readers: a missing or malformed value is an error. */
static int meta_long(const br_st_file *f, const char *key, long long lo, long long hi,
                     long long *out, br_error *err) {
    const char *v = br_st_meta_get(f, key);
    if (!v) return br_errorf(err, "%s: checkpoint metadata lacks '%s'", f->path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return br_errorf(err, "%s: checkpoint metadata '%s' = '%s' is not an integer in [%lld, %lld]",
                         f->path, key, v, lo, hi);
    *out = x;
    return 0;
}

static int meta_i32(const br_st_file *f, const char *key, long long lo, int32_t *out, br_error *err) {
    long long x;
    if (meta_long(f, key, lo, INT32_MAX, &x, err) < 0) return -1;
    *out = (int32_t)x;
    return 0;
}

static int meta_double(const br_st_file *f, const char *key, double *out, br_error *err) {
    const char *v = br_st_meta_get(f, key);
    if (!v) return br_errorf(err, "%s: checkpoint metadata lacks '%s'", f->path, key);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end)
        return br_errorf(err, "%s: checkpoint metadata '%s' = '%s' is not a number", f->path, key, v);
    *out = x;
    return 0;
}

static int meta_float(const br_st_file *f, const char *key, float *out, br_error *err) {
    double x;
    if (meta_double(f, key, &x, err) < 0) return -1;
    *out = (float)x;
    return 0;
}

static int read_config(const br_st_file *f, br_model_config *c, br_error *err) {
    const char *fmt = br_st_meta_get(f, "format");
    if (!fmt || strcmp(fmt, FORMAT_NAME) != 0)
        return br_errorf(err, "%s: not a basrec checkpoint (metadata 'format' is %s)", f->path,
                         fmt ? fmt : "missing");
    const char *ver = br_st_meta_get(f, "format_version");
    if (!ver || strcmp(ver, FORMAT_VERSION) != 0)
        return br_errorf(err, "%s: unsupported checkpoint version %s (this build reads %s)",
                         f->path, ver ? ver : "(none)", FORMAT_VERSION);
    br_model_config_defaults(c);
    const char *model = br_st_meta_get(f, "model");
    if (!model || strlen(model) >= sizeof c->model)
        return br_errorf(err, "%s: checkpoint metadata 'model' missing or too long", f->path);
    strcpy(c->model, model);
    if (meta_i32(f, "n_items", 1, &c->n_items, err) < 0 ||
        meta_i32(f, "hidden_size", 1, &c->dim, err) < 0 ||
        meta_i32(f, "num_hidden_layers", 0, &c->n_layers, err) < 0 ||
        meta_i32(f, "num_attention_heads", 1, &c->n_heads, err) < 0 ||
        meta_i32(f, "max_seq_length", 1, &c->max_len, err) < 0 ||
        meta_float(f, "hidden_dropout_prob", &c->hidden_dropout, err) < 0 ||
        meta_float(f, "attention_probs_dropout_prob", &c->attn_dropout, err) < 0 ||
        meta_float(f, "initializer_range", &c->init_std, err) < 0)
        return -1;
    /* Absent before the option existed, and when off. */
    if (br_st_meta_get(f, "run_padding") && meta_i32(f, "run_padding", 0, &c->run_padding, err) < 0)
        return -1;
    return 0;
}

static int read_train_state(const br_st_file *f, br_model *m, br_train_config *tc,
                            br_train_state *st, br_error *err) {
    long long seed, step;
    if (meta_i32(f, "batch_size", 1, &tc->batch_size, err) < 0 ||
        meta_i32(f, "epochs", 0, &tc->epochs, err) < 0 ||
        meta_i32(f, "patience", 0, &tc->patience, err) < 0 ||
        meta_i32(f, "start_valid", 0, &tc->start_valid, err) < 0 ||
        meta_float(f, "lr", &tc->lr, err) < 0 ||
        meta_float(f, "weight_decay", &tc->weight_decay, err) < 0 ||
        meta_long(f, "seed", 0, INT64_MAX, &seed, err) < 0 ||
        meta_long(f, "adam_step", 0, INT64_MAX, &step, err) < 0 ||
        meta_i32(f, "epoch", 0, &st->epoch, err) < 0 ||
        meta_i32(f, "best_epoch", -1, &st->best_epoch, err) < 0 ||
        meta_double(f, "best_score", &st->best_score, err) < 0 ||
        meta_i32(f, "bad_epochs", 0, &st->bad_epochs, err) < 0)
        return -1;
    /* Checkpoints written before the run's time was kept have no "seconds". */
    st->seconds = 0.0;
    if (br_st_meta_get(f, "seconds") && meta_double(f, "seconds", &st->seconds, err) < 0) return -1;
    tc->seed = (uint64_t)seed;
    m->params.adam_step = step;
    const char *method = br_st_meta_get(f, "method");
    if (!method || (strcmp(method, "plain") != 0 && strcmp(method, "basrec") != 0))
        return br_errorf(err, "%s: checkpoint metadata 'method' missing or unknown", f->path);
    tc->use_basrec = strcmp(method, "basrec") == 0;
    br_basrec_config *b = &tc->basrec;
    const char *mods = br_st_meta_get(f, "basrec_modules");
    if (meta_float(f, "basrec_alpha", &b->alpha, err) < 0 ||
        meta_float(f, "basrec_rate_min", &b->rate_min, err) < 0 ||
        meta_float(f, "basrec_rate_max", &b->rate_max, err) < 0 ||
        meta_i32(f, "basrec_n_pairs", 0, &b->n_pairs, err) < 0 ||
        meta_i32(f, "basrec_n_whole_level", 0, &b->n_whole_level, err) < 0)
        return -1;
    if (!mods || strlen(mods) != 4 || strspn(mods, "01") != 4)
        return br_errorf(err, "%s: checkpoint metadata 'basrec_modules' missing or malformed", f->path);
    b->single_seq = mods[0] == '1';
    b->cross_seq = mods[1] == '1';
    b->adaptive_weight = mods[2] == '1';
    b->nonlinear = mods[3] == '1';
    /* Absent from checkpoints written before RM-HSAOCL's options: the
     * defaults (BASRec's operators, bce) are what those runs used. */
    const char *ops = br_st_meta_get(f, "basrec_operators");
    const char *align = br_st_meta_get(f, "basrec_crop_align");
    const char *loss = br_st_meta_get(f, "loss");
    if ((ops && br_basrec_parse_operators(ops, &b->operators) < 0) ||
        (align && br_crop_align_parse(align, &b->crop_align) < 0) ||
        (loss && br_loss_parse(loss, &tc->loss.kind) < 0))
        return br_errorf(err, "%s: checkpoint metadata 'basrec_operators', 'basrec_crop_align' or 'loss' is malformed",
                         f->path);
    if (br_st_meta_get(f, "focal_gamma") && meta_float(f, "focal_gamma", &tc->loss.focal_gamma, err) < 0)
        return -1;
    /* Absent from checkpoints written before the option: they mixed with zero. */
    const char *mix_pad = br_st_meta_get(f, "basrec_mix_pad");
    if (mix_pad && br_mix_pad_parse(mix_pad, &b->mix_pad) < 0)
        return br_errorf(err, "%s: checkpoint metadata 'basrec_mix_pad' is malformed", f->path);
    /* Absent from checkpoints written before the option: they weighted per sequence. */
    const char *weight_form = br_st_meta_get(f, "basrec_weight_form");
    b->weight_form = BR_WEIGHT_SEQUENCE;
    if (weight_form && br_weight_form_parse(weight_form, &b->weight_form) < 0)
        return br_errorf(err, "%s: checkpoint metadata 'basrec_weight_form' is malformed", f->path);
    /* Absent from checkpoints written before sampled-ce, which they did not use. */
    const char *sampler = br_st_meta_get(f, "ce_sampler");
    if (br_st_meta_get(f, "ce_negatives") && meta_i32(f, "ce_negatives", 1, &tc->loss.ce_negatives, err) < 0)
        return -1;
    if (sampler && br_sampler_parse(sampler, &tc->loss.ce_sampler) < 0)
        return br_errorf(err, "%s: checkpoint metadata 'ce_sampler' is malformed", f->path);
    return 0;
}

/* Copies tensor prefix+name into dst after checking dtype and shape. */
static int load_tensor(const br_st_file *f, const br_param *pr, const char *prefix, float *dst,
                       br_error *err) {
    char name[BR_PARAM_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s%s", prefix, pr->name);
    const br_st_entry *e = br_st_find(f, name);
    if (!e) return br_errorf(err, "%s: checkpoint lacks tensor '%s'", f->path, name);
    if (e->dtype != BR_ST_F32) return br_errorf(err, "%s: tensor '%s' is not F32", f->path, name);
    int same = e->ndim == pr->ndim;
    for (int d = 0; same && d < pr->ndim; d++) same = e->shape[d] == pr->shape[d];
    if (!same)
        return br_errorf(err, "%s: tensor '%s' has a shape that does not match the model's configuration",
                         f->path, name);
    memcpy(dst, e->data, pr->numel * sizeof(float));
    return 0;
}

int br_checkpoint_load(const char *path, br_model *m, const br_dataset *ds, int require_same_data,
                       br_train_config *tc, br_train_state *st, br_error *err) {
    br_st_file f;
    memset(m, 0, sizeof *m);
    if (br_st_read(path, &f, err) < 0) return -1;
    br_model_config c;
    int rc = -1;
    if (read_config(&f, &c, err) < 0) goto done;
    if (ds) {
        if (ds->n_items > c.n_items) {
            br_errorf(err, "%s: data %s has item ids up to %d but the checkpoint's model knows %d items",
                      path, ds->path, ds->n_items, c.n_items);
            goto done;
        }
        char fp[20];
        snprintf(fp, sizeof fp, "%016" PRIx64, ds->fingerprint);
        const char *want = br_st_meta_get(&f, "data_fingerprint");
        if (require_same_data && (!want || strcmp(want, fp) != 0)) {
            br_errorf(err, "%s: was trained on other data than %s (fingerprint %s, data has %s)",
                      path, ds->path, want ? want : "missing", fp);
            goto done;
        }
    }
    if (br_model_create(m, &c, err) < 0) {
        br_error_prefix(err, "%s", path);
        goto done;
    }
    /* Resuming an M-Mask run: its mask row is restored like the rest. */
    if (st && br_st_find(&f, BR_MASK_EMB_NAME) && br_model_add_mask_item(m, 0, err) < 0) goto done;
    for (int i = 0; i < m->params.n; i++) {
        const br_param *pr = &m->params.list[i];
        if (load_tensor(&f, pr, "", m->params.data + pr->offset, err) < 0) goto done;
        if (st && (load_tensor(&f, pr, "adam_m.", m->params.adam_m + pr->offset, err) < 0 ||
                   load_tensor(&f, pr, "adam_v.", m->params.adam_v + pr->offset, err) < 0))
            goto done;
    }
    if (st) {
        br_train_config_defaults(tc);
        if (read_train_state(&f, m, tc, st, err) < 0) goto done;
    }
    rc = 0;
done:
    if (rc < 0) br_model_free(m);
    br_st_free(&f);
    return rc;
}
