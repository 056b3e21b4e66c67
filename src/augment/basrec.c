#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment.h"
#include "augment/basrec.h"
#include "train/loss.h"

void br_basrec_config_defaults(br_basrec_config *c) {
    c->alpha = 0.4f;
    c->rate_min = 0.2f;
    c->rate_max = 0.71f;
    c->n_pairs = 2;
    c->n_whole_level = 3;
    c->single_seq = 1;
    c->cross_seq = 1;
    c->adaptive_weight = 1;
    c->nonlinear = 1;
}

int br_basrec_preset(br_basrec_config *c, const char *dataset) {
    static const struct {
        const char *name;
        float alpha, rate_min, rate_max;
    } presets[] = {{"beauty", 0.4f, 0.2f, 0.71f},
                   {"sports", 0.3f, 0.1f, 0.81f},
                   {"yelp", 0.5f, 0.2f, 0.51f},
                   {"home", 0.5f, 0.3f, 0.71f}};
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, dataset) != 0) continue;
        c->alpha = presets[i].alpha;
        c->rate_min = presets[i].rate_min;
        c->rate_max = presets[i].rate_max;
        c->n_pairs = 2;
        c->n_whole_level = 3;
        return 0;
    }
    return -1;
}

/* Per-token scratch vectors of the cross-sequence mix live on the stack. */
#define MIX_MAX_DIM 1024

struct br_basrec {
    br_basrec_config cfg;
    br_model *m;
    const br_dataset *ds;
    br_item_sim sim;
    int32_t n_copies;          /* 2 * n_pairs with single-sequence augmentation, else 0 */
    int32_t max_seq, max_tok;  /* of the plain batch */
    /* The stacked batch: plain tokens, then copy 0 of every sequence, ... */
    int32_t *seq_off, *pos, *item, *item_aug;
    float *tok_lam;            /* mixing weight of item vs item_aug per token (1: plain) */
    float *tok_weight;         /* adaptive loss weight per copy token */
    float *copy_lam, *copy_rate, *copy_weight; /* [K x B] */
    float *x, *h, *dh;
    /* Cross-sequence mixup */
    int32_t *perm;
    float *mix_w;              /* per token (item-wise), per sequence x feature, or per sequence */
};

void br_basrec_free(br_basrec *bs) {
    if (!bs) return;
    br_item_sim_free(&bs->sim);
    free(bs->seq_off);
    free(bs->pos);
    free(bs->item);
    free(bs->item_aug);
    free(bs->tok_lam);
    free(bs->tok_weight);
    free(bs->copy_lam);
    free(bs->copy_rate);
    free(bs->copy_weight);
    free(bs->x);
    free(bs->h);
    free(bs->dh);
    free(bs->perm);
    free(bs->mix_w);
    free(bs);
}

br_basrec *br_basrec_create(const br_basrec_config *cfg, br_model *m, const br_dataset *ds,
                            int32_t max_seq, int32_t max_tok, br_error *err) {
    if (cfg->alpha <= 0.0f || cfg->rate_min < 0.0f || cfg->rate_max > 1.0f ||
        cfg->rate_min > cfg->rate_max || cfg->n_pairs < 0 || cfg->n_whole_level < 0) {
        br_errorf(err, "basrec: need alpha > 0, 0 <= rate-min <= rate-max <= 1, n-pairs >= 0, n-whole-level >= 0");
        return NULL;
    }
    if (m->cfg.dim > MIX_MAX_DIM) {
        br_errorf(err, "basrec: hidden size %d above the supported %d", m->cfg.dim, MIX_MAX_DIM);
        return NULL;
    }
    br_basrec *bs = br_xcalloc(1, sizeof *bs, err);
    if (!bs) return NULL;
    bs->cfg = *cfg;
    bs->m = m;
    bs->ds = ds;
    bs->n_copies = cfg->single_seq ? 2 * cfg->n_pairs : 0;
    bs->max_seq = max_seq;
    bs->max_tok = max_tok;
    const size_t S = (size_t)max_seq * (1 + bs->n_copies), T = (size_t)max_tok * (1 + bs->n_copies);
    const size_t D = (size_t)m->cfg.dim, C = (size_t)max_seq * bs->n_copies;
    const size_t mix = (size_t)max_tok > (size_t)max_seq * D ? (size_t)max_tok : (size_t)max_seq * D;
    bs->seq_off = br_xmalloc((S + 1) * sizeof(int32_t), err);
    bs->pos = br_xmalloc(T * sizeof(int32_t), err);
    bs->item = br_xmalloc(T * sizeof(int32_t), err);
    bs->item_aug = br_xmalloc(T * sizeof(int32_t), err);
    bs->tok_lam = br_xmalloc(T * sizeof(float), err);
    bs->tok_weight = br_xmalloc(T * sizeof(float), err);
    bs->copy_lam = br_xmalloc((C + 1) * sizeof(float), err);
    bs->copy_rate = br_xmalloc((C + 1) * sizeof(float), err);
    bs->copy_weight = br_xmalloc((C + 1) * sizeof(float), err);
    bs->x = br_xmalloc(T * D * sizeof(float), err);
    bs->h = br_xmalloc(T * D * sizeof(float), err);
    bs->dh = br_xmalloc(T * D * sizeof(float), err);
    bs->perm = br_xmalloc((size_t)max_seq * sizeof(int32_t), err);
    bs->mix_w = br_xmalloc(mix * sizeof(float), err);
    if (!bs->seq_off || !bs->pos || !bs->item || !bs->item_aug || !bs->tok_lam ||
        !bs->tok_weight || !bs->copy_lam || !bs->copy_rate || !bs->copy_weight || !bs->x || !bs->h || !bs->dh ||
        !bs->perm || !bs->mix_w || br_model_reserve(m, (int32_t)T, (int32_t)S, err) < 0 ||
        (bs->n_copies > 0 && br_item_sim_build(ds, &bs->sim, err) < 0)) {
        br_basrec_free(bs);
        return NULL;
    }
    return bs;
}

/* Lays out the stacked batch: plain tokens, then the copies with their
 * operators applied, mixing weights and adaptive loss weights. */
static void build_stacked(br_basrec *bs, const br_batch *plain, uint64_t key) {
    const int32_t B = plain->n_seq, T0 = plain->n_tok, K = bs->n_copies;
    const br_basrec_config *c = &bs->cfg;
    for (int32_t k = 0; k <= K; k++) {
        for (int32_t s = 0; s < B; s++) bs->seq_off[k * B + s] = k * T0 + plain->seq_off[s];
        memcpy(bs->pos + (size_t)k * T0, plain->pos, (size_t)T0 * sizeof(int32_t));
        memcpy(bs->item + (size_t)k * T0, plain->item, (size_t)T0 * sizeof(int32_t));
    }
    bs->seq_off[(K + 1) * B] = (K + 1) * T0;
    memcpy(bs->item_aug, plain->item, (size_t)T0 * sizeof(int32_t));
    for (int32_t t = 0; t < T0; t++) bs->tok_lam[t] = 1.0f;

#pragma omp parallel for schedule(static)
    for (int32_t s = 0; s < B; s++) {
        const int32_t o = plain->seq_off[s], n = plain->seq_off[s + 1] - o;
        for (int32_t k = 0; k < K; k++) {
            br_rng r;
            br_rng_seed(&r, br_key(key, 3, (uint64_t)k), (uint64_t)plain->row[s]);
            int32_t *aug = bs->item_aug + (size_t)(k + 1) * T0 + o;
            memcpy(aug, plain->item + o, (size_t)n * sizeof(int32_t));
            const int use_reorder = br_rng_below(&r, 2) == 0;
            const float rate = c->rate_min + (c->rate_max - c->rate_min) * (float)br_rng_uniform(&r);
            if (use_reorder) br_aug_reorder(aug, n, rate, &r);
            else br_aug_substitute(aug, n, rate, &bs->sim, &r);
            const float lam = (float)br_rng_beta(&r, c->alpha, c->alpha);
            bs->copy_lam[k * B + s] = lam;
            bs->copy_rate[k * B + s] = rate;
            float *tl = bs->tok_lam + (size_t)(k + 1) * T0 + o;
            for (int32_t i = 0; i < n; i++) tl[i] = lam;
        }
    }
    /* Adaptive weights, normalised per copy index over the batch. */
    for (int32_t k = 0; k < K; k++) {
        float *w = bs->copy_weight + (size_t)k * B;
        if (c->adaptive_weight)
            br_basrec_adaptive_weights(bs->copy_lam + (size_t)k * B, bs->copy_rate + (size_t)k * B, B, w);
        else
            for (int32_t s = 0; s < B; s++) w[s] = 1.0f;
        for (int32_t s = 0; s < B; s++) {
            float *tw = bs->tok_weight + (size_t)(k + 1) * T0 + plain->seq_off[s];
            for (int32_t t = 0; t < plain->seq_off[s + 1] - plain->seq_off[s]; t++) tw[t] = w[s];
        }
    }
}

void br_basrec_adaptive_weights(const float *lam, const float *rate, int32_t n, float *w) {
    float lo = INFINITY, hi = -INFINITY;
    for (int32_t s = 0; s < n; s++) {
        /* Guard the product: lam can be 0 to float precision for small alpha. */
        w[s] = 1.0f / fmaxf(lam[s] * rate[s], 1e-12f);
        lo = fminf(lo, w[s]);
        hi = fmaxf(hi, w[s]);
    }
    for (int32_t s = 0; s < n; s++) w[s] = hi > lo ? (w[s] - lo) / (hi - lo) : 1.0f;
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

typedef enum { MIX_ITEM, MIX_FEATURE, MIX_LINEAR } mix_kind;

/* Draws the permutation and the mixing weights of one cross-sequence mix. */
static void draw_mix(br_basrec *bs, const br_batch *plain, mix_kind kind, uint64_t key) {
    const int32_t B = plain->n_seq, D = bs->m->cfg.dim;
    const float a = bs->cfg.alpha;
    br_rng r;
    br_rng_seed(&r, key, 0);
    for (int32_t s = 0; s < B; s++) bs->perm[s] = s;
    br_rng_shuffle_i32(&r, bs->perm, B);
#pragma omp parallel for schedule(static)
    for (int32_t s = 0; s < B; s++) {
        br_rng rs;
        br_rng_seed(&rs, key, 1 + (uint64_t)s);
        if (kind == MIX_ITEM)
            for (int32_t t = plain->seq_off[s]; t < plain->seq_off[s + 1]; t++)
                bs->mix_w[t] = (float)br_rng_beta(&rs, a, a);
        else if (kind == MIX_FEATURE)
            for (int32_t d = 0; d < D; d++) bs->mix_w[(size_t)s * D + d] = (float)br_rng_beta(&rs, a, a);
        else
            bs->mix_w[s] = (float)br_rng_beta(&rs, a, a);
    }
}

/* BCE on mixed representations: for token t of sequence b at slot l and the
 * partner p = perm[b]'s token q at the same slot,
 *   h = w*H[t] + (1-w)*H[q],  e+ = w*E[pos_t] + (1-w)*E[pos_q],  e- likewise,
 * with w the item-wise, feature-wise or per-sequence weight. Where the
 * partner has no real token at slot l (it is shorter), its side is a zero
 * vector: ragged batches hold no padded-slot outputs (docs/DESIGN.md). The
 * loss is averaged over b's real tokens, i.e. the original target mask.
 * Gradients are added to dh (for H) and to the item table's gradient. */
static double mix_loss(br_basrec *bs, const br_batch *plain, mix_kind kind) {
    const int32_t B = plain->n_seq, T0 = plain->n_tok, D = bs->m->cfg.dim, L = bs->m->cfg.max_len;
    const float *E = br_model_items(bs->m);
    float *dE = br_pgrad(&bs->m->params, bs->m->item_emb);
    const float *H = bs->h;
    float *dH = bs->dh;
    float hm[MIX_MAX_DIM], pm[MIX_MAX_DIM], nm[MIX_MAX_DIM], w[MIX_MAX_DIM];
    const float norm = 1.0f / (float)T0;
    double loss = 0.0;
    for (int32_t b = 0; b < B; b++) {
        const int32_t p = bs->perm[b];
        for (int32_t t = plain->seq_off[b]; t < plain->seq_off[b + 1]; t++) {
            const int32_t q = plain->seq_off[p + 1] - (L - plain->pos[t]);
            const int has_q = q >= plain->seq_off[p];
            for (int32_t d = 0; d < D; d++)
                w[d] = kind == MIX_ITEM ? bs->mix_w[t] : kind == MIX_FEATURE ? bs->mix_w[(size_t)b * D + d] : bs->mix_w[b];
            const float *ht = H + (size_t)t * D, *ep = E + (size_t)plain->target[t] * D, *en = E + (size_t)plain->neg[t] * D;
            const float *hq = has_q ? H + (size_t)q * D : NULL;
            const float *eqp = has_q ? E + (size_t)plain->target[q] * D : NULL;
            const float *eqn = has_q ? E + (size_t)plain->neg[q] * D : NULL;
            float lp = 0.0f, ln = 0.0f;
            for (int32_t d = 0; d < D; d++) {
                hm[d] = w[d] * ht[d] + (has_q ? (1.0f - w[d]) * hq[d] : 0.0f);
                pm[d] = w[d] * ep[d] + (has_q ? (1.0f - w[d]) * eqp[d] : 0.0f);
                nm[d] = w[d] * en[d] + (has_q ? (1.0f - w[d]) * eqn[d] : 0.0f);
                lp += hm[d] * pm[d];
                ln += hm[d] * nm[d];
            }
            loss += softplus(-lp) + softplus(ln);
            const float gp = norm * (sigmoidf(lp) - 1.0f), gn = norm * sigmoidf(ln);
            float *dht = dH + (size_t)t * D, *dhq = has_q ? dH + (size_t)q * D : NULL;
            float *dep = dE + (size_t)plain->target[t] * D, *den = dE + (size_t)plain->neg[t] * D;
            float *dqp = has_q ? dE + (size_t)plain->target[q] * D : NULL;
            float *dqn = has_q ? dE + (size_t)plain->neg[q] * D : NULL;
            for (int32_t d = 0; d < D; d++) {
                const float g_h = gp * pm[d] + gn * nm[d];
                const float g_p = gp * hm[d], g_n = gn * hm[d];
                dht[d] += w[d] * g_h;
                dep[d] += w[d] * g_p;
                den[d] += w[d] * g_n;
                if (has_q) {
                    dhq[d] += (1.0f - w[d]) * g_h;
                    dqp[d] += (1.0f - w[d]) * g_p;
                    dqn[d] += (1.0f - w[d]) * g_n;
                }
            }
        }
    }
    return loss * norm;
}

double br_basrec_step(br_basrec *bs, const br_batch *plain, uint64_t key, br_basrec_stats *st) {
    br_model *m = bs->m;
    const int32_t B = plain->n_seq, T0 = plain->n_tok, K = bs->n_copies, D = m->cfg.dim;
    memset(st, 0, sizeof *st);
    if (T0 == 0) return 0.0;
    build_stacked(bs, plain, key);
    const int32_t S = (K + 1) * B, T = (K + 1) * T0;
    const br_tokens tok = {S, T, bs->seq_off, bs->pos};

    /* Mixed input embeddings: l*E[item] + (1-l)*E[item_aug]. */
    const float *E = br_model_items(m);
#pragma omp parallel for schedule(static)
    for (int32_t t = 0; t < T; t++) {
        const float l = bs->tok_lam[t];
        const float *a = E + (size_t)bs->item[t] * D, *b = E + (size_t)bs->item_aug[t] * D;
        float *x = bs->x + (size_t)t * D;
        for (int32_t d = 0; d < D; d++) x[d] = l * a[d] + (1.0f - l) * b[d];
    }
    m->backbone->vt->forward(m->backbone, &m->params, &tok, bs->x, bs->h, 1, br_key(key, 2, 0));

    float *dE = br_pgrad(&m->params, m->item_emb);
    st->loss_main = br_bce_loss(bs->h, plain->target, plain->neg, NULL, T0, D, E, dE, bs->dh, 1.0f);
    for (int32_t k = 1; k <= K; k++) {
        const size_t off = (size_t)k * T0;
        st->loss_ssa += br_bce_loss(bs->h + off * D, plain->target, plain->neg, bs->tok_weight + off,
                                    T0, D, E, dE, bs->dh + off * D, 1.0f);
    }
    if (bs->cfg.cross_seq) {
        const mix_kind kinds[2] = {bs->cfg.nonlinear ? MIX_ITEM : MIX_LINEAR,
                                   bs->cfg.nonlinear ? MIX_FEATURE : MIX_LINEAR};
        for (int32_t i = 0; i < bs->cfg.n_whole_level; i++)
            for (int j = 0; j < 2; j++) {
                draw_mix(bs, plain, kinds[j], br_key(key, 4, (uint64_t)(2 * i + j)));
                st->loss_csa += mix_loss(bs, plain, kinds[j]);
            }
    }
    /* Table 6's statistic: how close the copies' representations stay. */
    if (K > 0) {
        double cos_sum = 0.0;
        for (int32_t k = 1; k <= K; k++)
            for (int32_t s = 0; s < B; s++) {
                const float *a = bs->h + (size_t)(plain->seq_off[s + 1] - 1) * D;
                const float *b = bs->h + ((size_t)k * T0 + plain->seq_off[s + 1] - 1) * D;
                double ab = 0, aa = 0, bb = 0;
                for (int32_t d = 0; d < D; d++) {
                    ab += (double)a[d] * b[d];
                    aa += (double)a[d] * a[d];
                    bb += (double)b[d] * b[d];
                }
                cos_sum += ab / (sqrt(aa * bb) + 1e-12);
            }
        st->aug_cosine = cos_sum / ((double)K * B);
    }

    m->backbone->vt->backward(m->backbone, &m->params, &tok, bs->dh, bs->x);
    /* Scatter the input gradient to both mixed items (serial: rows repeat). */
    for (int32_t t = 0; t < T; t++) {
        const float l = bs->tok_lam[t];
        const float *g = bs->x + (size_t)t * D;
        float *ra = dE + (size_t)bs->item[t] * D;
        for (int32_t d = 0; d < D; d++) ra[d] += l * g[d];
        if (l == 1.0f) continue;
        float *rb = dE + (size_t)bs->item_aug[t] * D;
        for (int32_t d = 0; d < D; d++) rb[d] += (1.0f - l) * g[d];
    }
    return st->loss_main + st->loss_ssa + st->loss_csa;
}
