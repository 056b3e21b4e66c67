#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/batch.h"
#include "eval/evaluate.h"
#include "train/checkpoint.h"
#include "train/loss.h"
#include "train/train.h"
#include "util/fileio.h"

void br_train_config_defaults(br_train_config *tc) {
    tc->batch_size = 256;
    tc->epochs = 200;
    tc->patience = 20;
    tc->start_valid = 0;
    tc->lr = 1e-3f;
    tc->weight_decay = 0.0f;
    tc->seed = 42;
    tc->use_basrec = 0;
    br_basrec_config_defaults(&tc->basrec);
    br_loss_config_defaults(&tc->loss);
}

struct br_trainer {
    br_model *m;
    const br_dataset *ds;
    br_train_config tc;
    br_batch batch;
    float *x, *h, *dh;     /* [max_tok, D] each; x doubles as the input gradient */
    int32_t *rows;         /* rows with a non-empty training input, fixed order */
    int32_t *order;        /* this epoch's shuffled copy of rows */
    int32_t n_rows;
    int64_t epoch_tokens;
    br_basrec *basrec;     /* NULL: plain training */
    br_xent *xent;         /* plain training with a softmax loss */
    int32_t *target;       /* [max_tok]: plain last-ce's masked targets */
    br_basrec_stats last;  /* of the last step */
};

void br_trainer_free(br_trainer *tr) {
    if (!tr) return;
    br_basrec_free(tr->basrec);
    br_xent_free(tr->xent);
    free(tr->target);
    br_batch_free(&tr->batch);
    free(tr->x);
    free(tr->h);
    free(tr->dh);
    free(tr->rows);
    free(tr->order);
    free(tr);
}

br_trainer *br_trainer_create(br_model *m, const br_dataset *ds, const br_train_config *tc,
                              br_error *err) {
    if (tc->batch_size <= 0) {
        br_errorf(err, "batch size must be positive");
        return NULL;
    }
    if (ds->n_items > m->cfg.n_items) {
        br_errorf(err, "%s: item id %d is beyond the model's %d items", ds->path, ds->n_items,
                  m->cfg.n_items);
        return NULL;
    }
    br_trainer *tr = br_xcalloc(1, sizeof *tr, err);
    if (!tr) return NULL;
    tr->m = m;
    tr->ds = ds;
    tr->tc = *tc;
    const int32_t max_tok = tc->batch_size * m->cfg.max_len;
    const size_t act = (size_t)max_tok * m->cfg.dim * sizeof(float);
    tr->x = br_xmalloc(act, err);
    tr->h = br_xmalloc(act, err);
    tr->dh = br_xmalloc(act, err);
    tr->rows = br_xmalloc((size_t)ds->n_users * sizeof(int32_t), err);
    tr->order = br_xmalloc((size_t)ds->n_users * sizeof(int32_t), err);
    const int plain_softmax = !tc->use_basrec && br_loss_is_softmax(tc->loss.kind);
    const int plain_last = !tc->use_basrec && tc->loss.kind == BR_LOSS_LAST_CE;
    if (plain_last) tr->target = br_xmalloc((size_t)max_tok * sizeof(int32_t), err);
    if (!tr->x || !tr->h || !tr->dh || !tr->rows || !tr->order || (plain_last && !tr->target) ||
        br_batch_alloc(&tr->batch, tc->batch_size, max_tok, err) < 0 ||
        br_model_reserve(m, max_tok, tc->batch_size, err) < 0 ||
        (plain_softmax && !(tr->xent = br_xent_create_for(&tc->loss, m->cfg.n_items, m->cfg.dim, ds, err))) ||
        (tc->use_basrec && (tc->basrec.operators & BR_OP_MASK) &&
         br_model_add_mask_item(m, tc->seed, err) < 0) ||
        (tc->use_basrec && !(tr->basrec = br_basrec_create(&tc->basrec, &tc->loss, m, ds,
                                                           tc->batch_size, max_tok, err)))) {
        br_trainer_free(tr);
        return NULL;
    }
    for (int32_t u = 0; u < ds->n_users; u++) {
        int32_t len = br_split_input_len(ds, u, BR_SPLIT_TRAIN);
        if (len <= 0) continue;
        tr->rows[tr->n_rows++] = u;
        tr->epoch_tokens += len < m->cfg.max_len ? len : m->cfg.max_len;
    }
    return tr;
}

int64_t br_trainer_epoch_tokens(const br_trainer *tr) { return tr->epoch_tokens; }

static double plain_step(br_trainer *tr, const br_batch *b, uint64_t step_key);

double br_trainer_step(br_trainer *tr, const int32_t *rows, int32_t n, uint64_t step_key) {
    br_model *m = tr->m;
    br_batch *b = &tr->batch;
    br_batch_clear(b);
    for (int32_t i = 0; i < n; i++) br_batch_add(b, tr->ds, rows[i], BR_SPLIT_TRAIN, m->cfg.max_len);
    if (b->n_tok == 0) return 0.0;
    br_batch_sample_negatives(b, tr->ds, br_key(step_key, 1, 0));

    br_params_zero_grad(&m->params);
    double loss;
    if (tr->basrec) {
        loss = br_basrec_step(tr->basrec, b, step_key, &tr->last);
    } else {
        loss = plain_step(tr, b, step_key);
    }
    br_adam_config ac = {tr->tc.lr, 0.9f, 0.999f, 1e-8f, tr->tc.weight_decay};
    br_adam_step(&m->params, &ac);
    return loss;
}

/* Forward, loss and backward of the plain objective (stage 1). */
static double plain_step(br_trainer *tr, const br_batch *b, uint64_t step_key) {
    br_model *m = tr->m;
    const int D = m->cfg.dim;
    const br_tokens tok = br_batch_tokens(b);
    br_model_gather(m, b->item, b->n_tok, tr->x);
    m->backbone->vt->forward(m->backbone, &m->params, &tok, tr->x, tr->h, 1, br_key(step_key, 2, 0));
    const int32_t *target = b->target;
    if (tr->tc.loss.kind == BR_LOSS_LAST_CE) {
        memcpy(tr->target, b->target, (size_t)b->n_tok * sizeof(int32_t));
        br_keep_last_targets(tr->target, b->seq_off, b->n_seq);
        target = tr->target;
    }
    /* sampled-ce: the step's negatives, shared by all its tokens. */
    if (tr->tc.loss.kind == BR_LOSS_SAMPLED_CE) br_xent_draw(tr->xent, br_key(step_key, 5, 0));
    const double loss = br_loss_eval(&tr->tc.loss, tr->xent, tr->h, b->n_tok, target, b->neg, NULL, D,
                                     br_model_items(m), br_pgrad(&m->params, m->item_emb), tr->dh);
    m->backbone->vt->backward(m->backbone, &m->params, &tok, tr->dh, tr->x);
    br_model_scatter_grad(m, b->item, b->n_tok, tr->x);
    return loss;
}

static void progress_bar(int32_t epoch, int32_t done, int32_t total, double loss) {
    const int width = 30;
    int fill = total ? (int)((int64_t)width * done / total) : width;
    fprintf(stderr, "\repoch %4d [", epoch);
    for (int i = 0; i < width; i++) fputc(i < fill ? '=' : ' ', stderr);
    fprintf(stderr, "] %d/%d loss %.4f", done, total, loss);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

void br_trainer_epoch(br_trainer *tr, int32_t epoch, int progress, br_epoch_stats *st) {
    br_rng rng;
    br_rng_seed(&rng, tr->tc.seed, 0x5EED0000ull + (uint64_t)epoch);
    /* Shuffling a copy of the fixed order makes an epoch's batches depend
     * only on (seed, epoch), so a resumed run replays exactly. */
    memcpy(tr->order, tr->rows, (size_t)tr->n_rows * sizeof(int32_t));
    br_rng_shuffle_i32(&rng, tr->order, tr->n_rows);
    const int32_t bs = tr->tc.batch_size;
    const int32_t n_batches = (tr->n_rows + bs - 1) / bs;
    memset(st, 0, sizeof *st);
    for (int32_t k = 0; k < n_batches; k++) {
        const int32_t i0 = k * bs, n = tr->n_rows - i0 < bs ? tr->n_rows - i0 : bs;
        st->loss += br_trainer_step(tr, tr->order + i0, n, br_key(tr->tc.seed, (uint64_t)epoch, (uint64_t)k));
        st->basrec.loss_main += tr->last.loss_main;
        st->basrec.loss_ssa += tr->last.loss_ssa;
        st->basrec.loss_csa += tr->last.loss_csa;
        st->basrec.aug_cosine += tr->last.aug_cosine;
        st->basrec.tokens += tr->last.tokens;
        if (progress) progress_bar(epoch, k + 1, n_batches, st->loss / (k + 1));
    }
    if (n_batches == 0) return;
    st->loss /= n_batches;
    st->basrec.loss_main /= n_batches;
    st->basrec.loss_ssa /= n_batches;
    st->basrec.loss_csa /= n_batches;
    st->basrec.aug_cosine /= n_batches;
    st->basrec.tokens /= n_batches;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void path_join(char *out, size_t n, const char *dir, const char *file) {
    snprintf(out, n, "%s/%s", dir, file);
}

static int write_result(const char *path, const br_train_result *r, br_error *err) {
    br_atomic_file af;
    if (br_atomic_open(&af, path, err) < 0) return -1;
    fprintf(af.fp, "{\"best_epoch\": %d, \"epochs_run\": %d, \"seconds\": %.3f, \"valid\": ",
            r->best_epoch, r->epochs_run, r->seconds);
    br_metrics_write_json(af.fp, &r->valid);
    fprintf(af.fp, ", \"test\": ");
    br_metrics_write_json(af.fp, &r->test);
    fprintf(af.fp, "}\n");
    return br_atomic_commit(&af, err);
}

int br_train(br_model *m, const br_dataset *ds, br_train_config *tc, const br_train_io *io,
             br_train_result *res, br_error *err) {
    char last_path[4096], best_path[4096], result_path[4096];
    path_join(last_path, sizeof last_path, io->out_dir, "last.safetensors");
    path_join(best_path, sizeof best_path, io->out_dir, "best.safetensors");
    path_join(result_path, sizeof result_path, io->out_dir, "result.json");
    if (br_mkdir_p(io->out_dir, err) < 0) return -1;

    br_train_state st = {0, -1, -INFINITY, 0, 0.0};
    if (io->resume) {
        const int32_t epochs = tc->epochs, patience = tc->patience;
        if (br_checkpoint_load(last_path, m, ds, 1, tc, &st, err) < 0) return -1;
        /* A resumed run may be given more epochs, or more patience: a run
         * stopped early goes on as if it had been started with it. */
        tc->epochs = epochs;
        tc->patience = patience;
    }
    memset(res, 0, sizeof *res);
    br_trainer *tr = br_trainer_create(m, ds, tc, err);
    if (!tr) return -1;
    /* Time before this call (a resumed run's) counts towards the run's. */
    const double t0 = now_seconds() - st.seconds;
    int rc = -1;
    for (int32_t epoch = st.epoch; epoch < tc->epochs && st.bad_epochs < tc->patience; epoch++) {
        const double te = now_seconds();
        br_epoch_stats es;
        br_trainer_epoch(tr, epoch, io->progress == BR_PROGRESS_BAR, &es);
        const double loss = es.loss;
        const double train_s = now_seconds() - te;
        br_metrics valid;
        int validated = epoch >= tc->start_valid;
        if (validated) {
            if (br_evaluate(m, ds, BR_SPLIT_VALID, &valid, err) < 0) goto done;
            if (valid.ndcg[2] > st.best_score) {
                st.best_score = valid.ndcg[2];
                st.best_epoch = epoch;
                st.bad_epochs = 0;
                if (br_checkpoint_save(best_path, m, ds, NULL, NULL, err) < 0) goto done;
            } else {
                st.bad_epochs++;
            }
        }
        st.epoch = epoch + 1;
        st.seconds = now_seconds() - t0;
        if (br_checkpoint_save(last_path, m, ds, tc, &st, err) < 0) goto done;
        if (io->progress)
            fprintf(stderr, "epoch %4d loss %.4f  %.2fs%s", epoch, loss, train_s,
                    validated ? "" : "\n");
        if (io->progress && validated)
            fprintf(stderr, "  valid HR@10 %.4f NDCG@10 %.4f NDCG@20 %.4f%s\n", valid.hr[1],
                    valid.ndcg[1], valid.ndcg[2], st.best_epoch == epoch ? "  *" : "");
        if (io->metrics_log) {
            fprintf(io->metrics_log, "{\"epoch\": %d, \"loss\": %.6f, \"train_seconds\": %.3f",
                    epoch, loss, train_s);
            if (tc->use_basrec)
                fprintf(io->metrics_log,
                        ", \"loss_main\": %.6f, \"loss_ssa\": %.6f, \"loss_csa\": %.6f, \"aug_cosine\": %.6f, \"step_tokens\": %.1f",
                        es.basrec.loss_main, es.basrec.loss_ssa, es.basrec.loss_csa, es.basrec.aug_cosine,
                        es.basrec.tokens);
            if (validated) {
                fprintf(io->metrics_log, ", \"valid\": ");
                br_metrics_write_json(io->metrics_log, &valid);
            }
            fprintf(io->metrics_log, "}\n");
            fflush(io->metrics_log);
        }
    }
    if (st.best_epoch < 0) {
        /* Never validated (start_valid beyond the last epoch): keep the final weights. */
        if (br_checkpoint_save(best_path, m, ds, NULL, NULL, err) < 0) goto done;
        st.best_epoch = st.epoch - 1;
    }
    br_model best;
    if (br_checkpoint_load(best_path, &best, ds, 1, NULL, NULL, err) < 0) goto done;
    if (br_evaluate(&best, ds, BR_SPLIT_VALID, &res->valid, err) < 0 ||
        br_evaluate(&best, ds, BR_SPLIT_TEST, &res->test, err) < 0) {
        br_model_free(&best);
        goto done;
    }
    br_model_free(&best);
    res->best_epoch = st.best_epoch;
    res->epochs_run = st.epoch;
    res->seconds = now_seconds() - t0;
    if (write_result(result_path, res, err) < 0) goto done;
    rc = 0;
done:
    br_trainer_free(tr);
    return rc;
}
