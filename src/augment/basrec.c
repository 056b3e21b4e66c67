#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment.h"
#include "augment/basrec.h"
#include "train/loss.h"
#include "util/names.h"

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
    c->operators = BR_OPS_BASREC;
    c->crop_align = BR_CROP_SUFFIX;
    c->mix_pad = BR_MIX_PAD_ZERO;
    c->weight_form = BR_WEIGHT_BATCH;
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

static const char *const op_names[4] = {"reorder", "substitute", "crop", "mask"};

int br_basrec_parse_operators(const char *list, unsigned *ops) {
    unsigned set = 0;
    for (const char *p = list;;) {
        const size_t len = strcspn(p, ",");
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strlen(op_names[i]) == len && strncmp(p, op_names[i], len) == 0) found = i;
        if (found < 0) return -1;
        set |= 1u << found;
        if (!p[len]) break;
        p += len + 1;
    }
    *ops = set;
    return 0;
}

void br_basrec_format_operators(unsigned ops, char *buf, size_t n) {
    buf[0] = '\0';
    for (int i = 0; i < 4; i++) {
        if (!(ops & (1u << i))) continue;
        if (buf[0]) strncat(buf, ",", n - strlen(buf) - 1);
        strncat(buf, op_names[i], n - strlen(buf) - 1);
    }
}

static const char *const align_names[2] = {"suffix", "pad"};

const char *br_crop_align_name(br_crop_align a) { return align_names[a]; }

int br_crop_align_parse(const char *name, br_crop_align *a) {
    const int i = br_name_index(align_names, 2, name);
    if (i < 0) return -1;
    *a = (br_crop_align)i;
    return 0;
}

static const char *const mix_pad_names[3] = {"zero", "last", "encode"};

const char *br_mix_pad_name(br_mix_pad k) { return mix_pad_names[k]; }

int br_mix_pad_parse(const char *name, br_mix_pad *k) {
    const int i = br_name_index(mix_pad_names, 3, name);
    if (i < 0) return -1;
    *k = (br_mix_pad)i;
    return 0;
}

static const char *const weight_form_names[2] = {"sequence", "batch"};

const char *br_weight_form_name(br_weight_form f) { return weight_form_names[f]; }

int br_weight_form_parse(const char *name, br_weight_form *f) {
    const int i = br_name_index(weight_form_names, 2, name);
    if (i < 0) return -1;
    *f = (br_weight_form)i;
    return 0;
}

/* Per-token scratch vectors of the cross-sequence mix live on the stack. */
#define MIX_MAX_DIM 1024

struct br_basrec {
    br_basrec_config cfg;
    br_loss_config loss;
    br_xent *xent;             /* softmax losses only */
    br_model *m;
    const br_dataset *ds;
    br_item_sim sim;
    int32_t n_copies;          /* 2 * n_pairs with single-sequence augmentation, else 0 */
    int32_t n_ops;
    unsigned ops[4];           /* the chosen operators, in draw order */
    int32_t max_seq, max_tok;  /* of the plain batch */
    int encode_pad;            /* mix padding encode: block 0 holds padded slots too */
    /* The stacked batch: block 0 holds the plain tokens, block k the k-th
     * copy of every sequence. A copy has its own length (M-Crop shortens
     * it), so every token carries its own position, labels and weights.
     * Under mix padding encode, block 0 holds every sequence at max_len
     * tokens, its padded slots first (item, target and negative 0). */
    int32_t *blk_off;          /* [K + 2]: first token of each block */
    int32_t *n_pad;            /* [S]: leading padded slots of each stacked sequence */
    int32_t *seq_off, *pos, *item, *item_aug;
    int32_t *target, *neg;     /* the loss's labels (last-ce: last tokens only) */
    float *tok_lam;            /* weight of item; item_aug gets 1 - it (item_aug 0: none) */
    float *tok_weight;         /* adaptive loss weight per copy token */
    float *copy_lam, *copy_rate, *copy_weight; /* [K x B] */
    int32_t *copy_op, *copy_len, *copy_start, *copy_c; /* [K x B]: operator, tokens, crop window */
    int32_t *raw;              /* [K x max_tok]: operator outputs, at the plain layout */
    float *x, *h, *dh;
    /* Cross-sequence mixup */
    int32_t *perm;
    float *mix_w;              /* per token (item-wise), per sequence x feature, or per sequence */
    float *hm, *dhm, *mix_lab; /* softmax losses: mixed outputs [max_tok, D], label weights */
    int32_t *target2;          /* partner's label per token */
};

void br_basrec_free(br_basrec *bs) {
    if (!bs) return;
    br_item_sim_free(&bs->sim);
    br_xent_free(bs->xent);
    free(bs->blk_off);
    free(bs->seq_off);
    free(bs->n_pad);
    free(bs->pos);
    free(bs->item);
    free(bs->item_aug);
    free(bs->target);
    free(bs->neg);
    free(bs->tok_lam);
    free(bs->tok_weight);
    free(bs->copy_lam);
    free(bs->copy_rate);
    free(bs->copy_weight);
    free(bs->copy_op);
    free(bs->copy_len);
    free(bs->copy_start);
    free(bs->copy_c);
    free(bs->raw);
    free(bs->x);
    free(bs->h);
    free(bs->dh);
    free(bs->perm);
    free(bs->mix_w);
    free(bs->hm);
    free(bs->dhm);
    free(bs->mix_lab);
    free(bs->target2);
    free(bs);
}

br_basrec *br_basrec_create(const br_basrec_config *cfg, const br_loss_config *loss, br_model *m,
                            const br_dataset *ds, int32_t max_seq, int32_t max_tok, br_error *err) {
    if (cfg->alpha <= 0.0f || cfg->rate_min < 0.0f || cfg->rate_max > 1.0f ||
        cfg->rate_min > cfg->rate_max || cfg->n_pairs < 0 || cfg->n_whole_level < 0) {
        br_errorf(err, "basrec: need alpha > 0, 0 <= rate-min <= rate-max <= 1, n-pairs >= 0, n-whole-level >= 0");
        return NULL;
    }
    if (cfg->operators == 0 || (cfg->operators & ~(unsigned)BR_OP_ALL) ||
        (cfg->crop_align != BR_CROP_SUFFIX && cfg->crop_align != BR_CROP_PAD) ||
        (cfg->mix_pad != BR_MIX_PAD_ZERO && cfg->mix_pad != BR_MIX_PAD_LAST &&
         cfg->mix_pad != BR_MIX_PAD_ENCODE)) {
        br_errorf(err, "basrec: need a non-empty set of operators, a known crop alignment and mix padding");
        return NULL;
    }
    if (m->cfg.dim > MIX_MAX_DIM) {
        br_errorf(err, "basrec: hidden size %d above the supported %d", m->cfg.dim, MIX_MAX_DIM);
        return NULL;
    }
    if (cfg->mix_pad == BR_MIX_PAD_ENCODE && !m->backbone->vt->encodes_padding) {
        br_errorf(err, "basrec: mix padding 'encode' needs a backbone that encodes padded slots (sasrec), not %s",
                  m->cfg.model);
        return NULL;
    }
    if ((cfg->operators & BR_OP_MASK) && m->mask_emb <= 0) {
        br_errorf(err, "basrec: M-Mask needs the model's mask item (br_model_add_mask_item)");
        return NULL;
    }
    br_basrec *bs = br_xcalloc(1, sizeof *bs, err);
    if (!bs) return NULL;
    bs->cfg = *cfg;
    if (loss) bs->loss = *loss;
    else br_loss_config_defaults(&bs->loss);
    bs->m = m;
    bs->ds = ds;
    bs->n_copies = cfg->single_seq ? 2 * cfg->n_pairs : 0;
    for (int i = 0; i < 4; i++)
        if (cfg->operators & (1u << i)) bs->ops[bs->n_ops++] = 1u << i;
    bs->max_seq = max_seq;
    bs->max_tok = max_tok;
    bs->encode_pad = cfg->mix_pad == BR_MIX_PAD_ENCODE;
    /* Block 0's tokens: the plain ones, or every slot of every sequence. */
    size_t T0 = (size_t)max_tok;
    if (bs->encode_pad && T0 < (size_t)max_seq * (size_t)m->cfg.max_len) T0 = (size_t)max_seq * (size_t)m->cfg.max_len;
    const size_t S = (size_t)max_seq * (1 + bs->n_copies), T = T0 + (size_t)max_tok * bs->n_copies;
    const size_t D = (size_t)m->cfg.dim, C = (size_t)max_seq * bs->n_copies;
    const size_t mix = T0 > (size_t)max_seq * D ? T0 : (size_t)max_seq * D;
    const int softmax = br_loss_is_softmax(bs->loss.kind);
    /* Softmax buffers are only needed by softmax losses: 1 element otherwise. */
    const size_t sm = softmax ? T0 : 1;
    bs->blk_off = br_xmalloc(((size_t)bs->n_copies + 2) * sizeof(int32_t), err);
    bs->seq_off = br_xmalloc((S + 1) * sizeof(int32_t), err);
    bs->n_pad = br_xcalloc(S, sizeof(int32_t), err);
    bs->pos = br_xmalloc(T * sizeof(int32_t), err);
    bs->item = br_xmalloc(T * sizeof(int32_t), err);
    bs->item_aug = br_xmalloc(T * sizeof(int32_t), err);
    bs->target = br_xmalloc(T * sizeof(int32_t), err);
    bs->neg = br_xmalloc(T * sizeof(int32_t), err);
    bs->tok_lam = br_xmalloc(T * sizeof(float), err);
    bs->tok_weight = br_xmalloc(T * sizeof(float), err);
    bs->copy_lam = br_xmalloc((C + 1) * sizeof(float), err);
    bs->copy_rate = br_xmalloc((C + 1) * sizeof(float), err);
    bs->copy_weight = br_xmalloc((C + 1) * sizeof(float), err);
    bs->copy_op = br_xmalloc((C + 1) * sizeof(int32_t), err);
    bs->copy_len = br_xmalloc((C + 1) * sizeof(int32_t), err);
    bs->copy_start = br_xmalloc((C + 1) * sizeof(int32_t), err);
    bs->copy_c = br_xmalloc((C + 1) * sizeof(int32_t), err);
    bs->raw = br_xmalloc(((size_t)max_tok * bs->n_copies + 1) * sizeof(int32_t), err);
    bs->x = br_xmalloc(T * D * sizeof(float), err);
    bs->h = br_xmalloc(T * D * sizeof(float), err);
    bs->dh = br_xmalloc(T * D * sizeof(float), err);
    bs->perm = br_xmalloc((size_t)max_seq * sizeof(int32_t), err);
    bs->mix_w = br_xmalloc(mix * sizeof(float), err);
    bs->hm = br_xmalloc(sm * D * sizeof(float), err);
    bs->dhm = br_xmalloc(sm * D * sizeof(float), err);
    bs->mix_lab = br_xmalloc(sm * sizeof(float), err);
    bs->target2 = br_xmalloc(sm * sizeof(int32_t), err);
    if (!bs->blk_off || !bs->seq_off || !bs->n_pad || !bs->pos || !bs->item || !bs->item_aug || !bs->target ||
        !bs->neg || !bs->tok_lam || !bs->tok_weight || !bs->copy_lam || !bs->copy_rate ||
        !bs->copy_weight || !bs->copy_op || !bs->copy_len || !bs->copy_start || !bs->copy_c ||
        !bs->raw || !bs->x || !bs->h || !bs->dh || !bs->perm || !bs->mix_w || !bs->hm ||
        !bs->dhm || !bs->mix_lab || !bs->target2 ||
        br_model_reserve(m, (int32_t)T, (int32_t)S, err) < 0 ||
        (softmax && !(bs->xent = br_xent_create_for(&bs->loss, m->cfg.n_items, m->cfg.dim, ds, err))) ||
        (bs->n_copies > 0 && (cfg->operators & BR_OP_SUBSTITUTE) &&
         br_item_sim_build(ds, &bs->sim, err) < 0)) {
        br_basrec_free(bs);
        return NULL;
    }
    return bs;
}

/* Draws copy k of plain sequence s: operator, rate, mixing weight; the
 * edited items go to raw at the sequence's plain offset, a crop's window to
 * copy_start/copy_c. Draws keyed by (key, k, row): thread-independent. */
static void draw_copy(br_basrec *bs, const br_batch *plain, int32_t k, int32_t s, uint64_t key) {
    const br_basrec_config *c = &bs->cfg;
    const int32_t B = plain->n_seq, o = plain->seq_off[s], n = plain->seq_off[s + 1] - o;
    const size_t ks = (size_t)k * B + s;
    br_rng r;
    br_rng_seed(&r, br_key(key, 3, (uint64_t)k), (uint64_t)plain->row[s]);
    int32_t *aug = bs->raw + (size_t)k * plain->n_tok + o;
    memcpy(aug, plain->item + o, (size_t)n * sizeof(int32_t));
    const unsigned op = bs->ops[br_rng_below(&r, (uint64_t)bs->n_ops)];
    const float rate = c->rate_min + (c->rate_max - c->rate_min) * (float)br_rng_uniform(&r);
    bs->copy_len[ks] = bs->copy_c[ks] = n;
    bs->copy_start[ks] = 0;
    if (op == BR_OP_REORDER) br_aug_reorder(aug, n, rate, &r);
    else if (op == BR_OP_SUBSTITUTE) br_aug_substitute(aug, n, rate, &bs->sim, &r);
    else if (op == BR_OP_MASK) br_aug_mask(aug, n, rate, br_model_mask_id(bs->m), &r);
    else {
        bs->copy_c[ks] = br_aug_crop(n, rate, &r, &bs->copy_start[ks]);
        if (c->crop_align == BR_CROP_SUFFIX) bs->copy_len[ks] = bs->copy_c[ks];
    }
    bs->copy_op[ks] = (int32_t)op;
    bs->copy_lam[ks] = (float)br_rng_beta(&r, c->alpha, c->alpha);
    bs->copy_rate[ks] = rate;
}

/* Token i of copy k of sequence s, at stacked token dst: the original's
 * slot it stands on gives item, position and labels; the copy's own item
 * (0: none) is mixed in with weight 1 - lam. */
static void fill_copy(br_basrec *bs, const br_batch *plain, int32_t k, int32_t s, int32_t dst) {
    const int32_t B = plain->n_seq, o = plain->seq_off[s], n = plain->seq_off[s + 1] - o;
    const size_t ks = (size_t)k * B + s;
    const int32_t len = bs->copy_len[ks], c = bs->copy_c[ks];
    const float lam = bs->copy_lam[ks], w = bs->copy_weight[ks];
    const int crop = bs->copy_op[ks] == BR_OP_CROP;
    const int32_t *aug = bs->raw + (size_t)k * plain->n_tok + o;
    for (int32_t i = 0; i < len; i++) {
        /* A copy of len < n tokens stands on the original's last len slots. */
        const int32_t j = n - len + i, t = dst + i;
        bs->item[t] = plain->item[o + j];
        bs->pos[t] = plain->pos[o + j];
        bs->target[t] = plain->target[o + j];
        bs->neg[t] = plain->neg[o + j];
        /* A crop's window lies on the last c slots. */
        bs->item_aug[t] = !crop ? aug[j] : j >= n - c ? aug[bs->copy_start[ks] + j - (n - c)] : 0;
        bs->tok_lam[t] = lam;
        bs->tok_weight[t] = w;
    }
}

/* Lays out the stacked batch: plain tokens, then the copies with their
 * operators applied, mixing weights and adaptive loss weights. */
static void build_stacked(br_basrec *bs, const br_batch *plain, uint64_t key) {
    const int32_t B = plain->n_seq, K = bs->n_copies, L = bs->m->cfg.max_len;
    int32_t T0 = 0;
    for (int32_t s = 0; s < B; s++) {
        const int32_t o = plain->seq_off[s], n = plain->seq_off[s + 1] - o;
        const int32_t lead = bs->encode_pad ? L - n : 0;
        bs->seq_off[s] = T0;
        bs->n_pad[s] = lead;
        for (int32_t i = 0; i < lead; i++, T0++) {
            bs->pos[T0] = i;
            bs->item[T0] = bs->target[T0] = bs->neg[T0] = 0;
        }
        memcpy(bs->pos + T0, plain->pos + o, (size_t)n * sizeof(int32_t));
        memcpy(bs->item + T0, plain->item + o, (size_t)n * sizeof(int32_t));
        memcpy(bs->target + T0, plain->target + o, (size_t)n * sizeof(int32_t));
        memcpy(bs->neg + T0, plain->neg + o, (size_t)n * sizeof(int32_t));
        T0 += n;
    }
    memset(bs->item_aug, 0, (size_t)T0 * sizeof(int32_t));
    for (int32_t t = 0; t < T0; t++) bs->tok_lam[t] = 1.0f;

#pragma omp parallel for schedule(static)
    for (int32_t s = 0; s < B; s++)
        for (int32_t k = 0; k < K; k++) draw_copy(bs, plain, k, s, key);
    /* Adaptive weights, normalised per copy index over the batch. */
    for (int32_t k = 0; k < K; k++) {
        float *w = bs->copy_weight + (size_t)k * B;
        if (!bs->cfg.adaptive_weight) {
            for (int32_t s = 0; s < B; s++) w[s] = 1.0f;
            continue;
        }
        br_basrec_adaptive_weights(bs->copy_lam + (size_t)k * B, bs->copy_rate + (size_t)k * B, B, w);
        if (bs->cfg.weight_form == BR_WEIGHT_BATCH) {
            double sum = 0.0;
            for (int32_t s = 0; s < B; s++) sum += w[s];
            for (int32_t s = 0; s < B; s++) w[s] = (float)sum;
        }
    }
    /* Offsets from the copies' lengths, then the tokens. */
    bs->blk_off[0] = 0;
    int32_t t = bs->blk_off[1] = T0;
    for (int32_t k = 0; k < K; k++) {
        for (int32_t s = 0; s < B; s++) {
            bs->seq_off[(size_t)(k + 1) * B + s] = t;
            t += bs->copy_len[(size_t)k * B + s];
        }
        bs->blk_off[k + 2] = t;
    }
    bs->seq_off[(size_t)(K + 1) * B] = t;
#pragma omp parallel for schedule(static)
    for (int32_t s = 0; s < B; s++)
        for (int32_t k = 0; k < K; k++) fill_copy(bs, plain, k, s, bs->seq_off[(size_t)(k + 1) * B + s]);
    if (bs->loss.kind == BR_LOSS_LAST_CE) br_keep_last_targets(bs->target, bs->seq_off, (K + 1) * B);
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
    const br_beta_dist lam = br_beta_dist_make(bs->cfg.alpha, bs->cfg.alpha);
    br_rng r;
    br_rng_seed(&r, key, 0);
    for (int32_t s = 0; s < B; s++) bs->perm[s] = s;
    br_rng_shuffle_i32(&r, bs->perm, B);
#pragma omp parallel for schedule(static)
    for (int32_t s = 0; s < B; s++) {
        br_rng rs;
        br_rng_seed(&rs, key, 1 + (uint64_t)s);
        if (kind == MIX_ITEM)
            for (int32_t t = bs->seq_off[s] + bs->n_pad[s]; t < bs->seq_off[s + 1]; t++)
                bs->mix_w[t] = (float)br_beta_draw(&rs, &lam);
        else if (kind == MIX_FEATURE)
            for (int32_t d = 0; d < D; d++) bs->mix_w[(size_t)s * D + d] = (float)br_beta_draw(&rs, &lam);
        else
            bs->mix_w[s] = (float)br_beta_draw(&rs, &lam);
    }
}

/* Block-0 token of b's partner perm[b] at token t's slot, -1 where the
 * partner is shorter (under mix padding encode it has every slot, its
 * padded ones with target 0); *qh gets the partner's token whose output is
 * mixed in: q, or where there is none, the partner's last token (mix
 * padding "last") or -1 (a zero vector). w[0..D) gets the mix weights of t. */
static int32_t mix_partner(const br_basrec *bs, mix_kind kind, int32_t b, int32_t t, float *w,
                           int32_t *qh) {
    const int32_t p = bs->perm[b], D = bs->m->cfg.dim;
    int32_t q = bs->seq_off[p + 1] - (bs->m->cfg.max_len - bs->pos[t]);
    for (int32_t d = 0; d < D; d++)
        w[d] = kind == MIX_ITEM ? bs->mix_w[t] : kind == MIX_FEATURE ? bs->mix_w[(size_t)b * D + d] : bs->mix_w[b];
    if (q < bs->seq_off[p]) q = -1;
    *qh = q >= 0 ? q : bs->cfg.mix_pad == BR_MIX_PAD_LAST ? bs->seq_off[p + 1] - 1 : -1;
    return q;
}

/* BCE on mixed representations: for token t of sequence b at slot l and the
 * partner p = perm[b]'s token q at the same slot,
 *   h = w*H[t] + (1-w)*H[q],  e+ = w*E[pos_t] + (1-w)*E[pos_q],  e- likewise,
 * with w the item-wise, feature-wise or per-sequence weight. Where the
 * partner has no real token at slot l (it is shorter), its targets' side is
 * a zero vector, and its output's side too, or its last output under mix
 * padding "last": ragged batches hold no padded-slot outputs
 * (docs/DESIGN.md). Under mix padding "encode" the partner has an output
 * at every slot, and its targets at a padded one are the padding row, as in
 * the reference. The loss is averaged over b's real tokens, i.e. the
 * original target mask.
 * Gradients are added to dh (for H) and to the item table's gradient. */
static double mix_loss(br_basrec *bs, const br_batch *plain, mix_kind kind) {
    const int32_t B = plain->n_seq, D = bs->m->cfg.dim;
    const float *E = br_model_items(bs->m);
    float *dE = br_pgrad(&bs->m->params, bs->m->item_emb);
    const float *H = bs->h;
    float *dH = bs->dh;
    float hm[MIX_MAX_DIM], pm[MIX_MAX_DIM], nm[MIX_MAX_DIM], w[MIX_MAX_DIM];
    const float norm = 1.0f / (float)plain->n_tok;
    double loss = 0.0;
    for (int32_t b = 0; b < B; b++) {
        for (int32_t t = bs->seq_off[b] + bs->n_pad[b]; t < bs->seq_off[b + 1]; t++) {
            int32_t qh;
            const int32_t q = mix_partner(bs, kind, b, t, w, &qh);
            const int has_q = q >= 0;
            const float *ht = H + (size_t)t * D, *ep = E + (size_t)bs->target[t] * D, *en = E + (size_t)bs->neg[t] * D;
            const float *hq = qh >= 0 ? H + (size_t)qh * D : NULL;
            const float *eqp = has_q ? E + (size_t)bs->target[q] * D : NULL;
            const float *eqn = has_q ? E + (size_t)bs->neg[q] * D : NULL;
            float lp = 0.0f, ln = 0.0f;
            for (int32_t d = 0; d < D; d++) {
                hm[d] = w[d] * ht[d] + (hq ? (1.0f - w[d]) * hq[d] : 0.0f);
                pm[d] = w[d] * ep[d] + (has_q ? (1.0f - w[d]) * eqp[d] : 0.0f);
                nm[d] = w[d] * en[d] + (has_q ? (1.0f - w[d]) * eqn[d] : 0.0f);
                lp += hm[d] * pm[d];
                ln += hm[d] * nm[d];
            }
            loss += softplus(-lp) + softplus(ln);
            const float gp = norm * (sigmoidf(lp) - 1.0f), gn = norm * sigmoidf(ln);
            float *dht = dH + (size_t)t * D, *dhq = hq ? dH + (size_t)qh * D : NULL;
            float *dep = dE + (size_t)bs->target[t] * D, *den = dE + (size_t)bs->neg[t] * D;
            float *dqp = has_q ? dE + (size_t)bs->target[q] * D : NULL;
            float *dqn = has_q ? dE + (size_t)bs->neg[q] * D : NULL;
            for (int32_t d = 0; d < D; d++) {
                const float g_h = gp * pm[d] + gn * nm[d];
                const float g_p = gp * hm[d], g_n = gn * hm[d];
                dht[d] += w[d] * g_h;
                dep[d] += w[d] * g_p;
                den[d] += w[d] * g_n;
                if (dhq) dhq[d] += (1.0f - w[d]) * g_h;
                if (has_q) {
                    dqp[d] += (1.0f - w[d]) * g_p;
                    dqn[d] += (1.0f - w[d]) * g_n;
                }
            }
        }
    }
    return loss * norm;
}

/* The softmax losses' cross-sequence mix: the same mixed outputs h as
 * mix_loss, trained with the mixup label form w * l(target_t) + (1 - w) *
 * l(target_q): w is the item-wise weight, the sequence's weight (linear), or
 * for feature-wise mixes the mean of the D weights, which is the share of
 * the mixed vector taken from b's own output (docs/RMHSAOCL.md). Where the
 * partner has no target at the slot, b's own target takes all the label
 * weight. Gradients are added to dh and to the item table's gradient. */
static double mix_loss_softmax(br_basrec *bs, const br_batch *plain, mix_kind kind) {
    const int32_t B = plain->n_seq, T0 = bs->blk_off[1], D = bs->m->cfg.dim;
    float w[MIX_MAX_DIM];
    for (int32_t b = 0; b < B; b++)
        for (int32_t t = bs->seq_off[b] + bs->n_pad[b]; t < bs->seq_off[b + 1]; t++) {
            int32_t qh;
            const int32_t q = mix_partner(bs, kind, b, t, w, &qh);
            const float *ht = bs->h + (size_t)t * D, *hq = qh >= 0 ? bs->h + (size_t)qh * D : NULL;
            float *hm = bs->hm + (size_t)t * D;
            double wsum = 0.0;
            for (int32_t d = 0; d < D; d++) {
                hm[d] = w[d] * ht[d] + (hq ? (1.0f - w[d]) * hq[d] : 0.0f);
                wsum += w[d];
            }
            bs->target2[t] = q >= 0 ? bs->target[q] : 0;
            bs->mix_lab[t] = bs->target2[t] <= 0 ? 1.0f : kind == MIX_FEATURE ? (float)(wsum / D) : w[0];
        }
    const br_xent_labels lb = {bs->target, bs->target2, bs->mix_lab, NULL};
    const float gamma = bs->loss.kind == BR_LOSS_FOCAL ? bs->loss.focal_gamma : 0.0f;
    const double loss = br_xent_loss(bs->xent, bs->hm, T0, &lb, gamma, br_model_items(bs->m),
                                     br_pgrad(&bs->m->params, bs->m->item_emb), bs->dhm, 1.0f);
    /* Back through the mix (serial: a token is its own and a partner's). */
    for (int32_t b = 0; b < B; b++)
        for (int32_t t = bs->seq_off[b] + bs->n_pad[b]; t < bs->seq_off[b + 1]; t++) {
            int32_t qh;
            mix_partner(bs, kind, b, t, w, &qh);
            const float *g = bs->dhm + (size_t)t * D;
            float *dht = bs->dh + (size_t)t * D;
            for (int32_t d = 0; d < D; d++) dht[d] += w[d] * g[d];
            if (qh < 0) continue;
            float *dhq = bs->dh + (size_t)qh * D;
            for (int32_t d = 0; d < D; d++) dhq[d] += (1.0f - w[d]) * g[d];
        }
    return loss;
}

/* Input row of an item id: the table's, or the mask item's. */
static inline float *input_row(const br_basrec *bs, float *E, float *mask, int32_t id) {
    return id == br_model_mask_id(bs->m) ? mask : E + (size_t)id * bs->m->cfg.dim;
}

double br_basrec_step(br_basrec *bs, const br_batch *plain, uint64_t key, br_basrec_stats *st) {
    br_model *m = bs->m;
    const int32_t B = plain->n_seq, T0 = plain->n_tok, K = bs->n_copies, D = m->cfg.dim;
    memset(st, 0, sizeof *st);
    if (T0 == 0) return 0.0;
    build_stacked(bs, plain, key);
    const int32_t S = (K + 1) * B, T = bs->blk_off[K + 1], T0b = bs->blk_off[1];
    const br_tokens tok = {S, T, bs->seq_off, bs->pos, bs->encode_pad ? bs->n_pad : NULL};
    st->tokens = T;

    /* Mixed input embeddings: l*E[item] + (1-l)*E[item_aug]. */
    float *E = br_model_items(m);
    float *mask = m->mask_emb > 0 ? br_pdata(&m->params, m->mask_emb) : NULL;
#pragma omp parallel for schedule(static)
    for (int32_t t = 0; t < T; t++) {
        const float l = bs->tok_lam[t];
        const float *a = input_row(bs, E, mask, bs->item[t]);
        float *x = bs->x + (size_t)t * D;
        if (!bs->item_aug[t]) {
            for (int32_t d = 0; d < D; d++) x[d] = l * a[d];
            continue;
        }
        const float *b = input_row(bs, E, mask, bs->item_aug[t]);
        for (int32_t d = 0; d < D; d++) x[d] = l * a[d] + (1.0f - l) * b[d];
    }
    m->backbone->vt->forward(m->backbone, &m->params, &tok, bs->x, bs->h, 1, br_key(key, 2, 0));

    float *dE = br_pgrad(&m->params, m->item_emb);
    /* sampled-ce: one draw of negatives for all of the step's loss terms. */
    if (bs->loss.kind == BR_LOSS_SAMPLED_CE) br_xent_draw(bs->xent, br_key(key, 5, 0));
    st->loss_main = br_loss_eval(&bs->loss, bs->xent, bs->h, T0b, bs->target, bs->neg, NULL, D, E, dE, bs->dh);
    for (int32_t k = 1; k <= K; k++) {
        const size_t off = (size_t)bs->blk_off[k];
        st->loss_ssa += br_loss_eval(&bs->loss, bs->xent, bs->h + off * D, bs->blk_off[k + 1] - bs->blk_off[k],
                                     bs->target + off, bs->neg + off, bs->tok_weight + off, D, E, dE,
                                     bs->dh + off * D);
    }
    if (bs->cfg.cross_seq) {
        const mix_kind kinds[2] = {bs->cfg.nonlinear ? MIX_ITEM : MIX_LINEAR,
                                   bs->cfg.nonlinear ? MIX_FEATURE : MIX_LINEAR};
        for (int32_t i = 0; i < bs->cfg.n_whole_level; i++)
            for (int j = 0; j < 2; j++) {
                draw_mix(bs, plain, kinds[j], br_key(key, 4, (uint64_t)(2 * i + j)));
                st->loss_csa += br_loss_is_softmax(bs->loss.kind) ? mix_loss_softmax(bs, plain, kinds[j])
                                                                  : mix_loss(bs, plain, kinds[j]);
            }
    }
    /* Table 6's statistic: how close the copies' representations stay (the
     * last tokens of a copy and its original share the last slot). */
    if (K > 0) {
        double cos_sum = 0.0;
        for (int32_t k = 1; k <= K; k++)
            for (int32_t s = 0; s < B; s++) {
                const float *a = bs->h + (size_t)(bs->seq_off[s + 1] - 1) * D;
                const float *b = bs->h + (size_t)(bs->seq_off[(size_t)k * B + s + 1] - 1) * D;
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
    float *dmask = m->mask_emb > 0 ? br_pgrad(&m->params, m->mask_emb) : NULL;
    for (int32_t t = 0; t < T; t++) {
        const float l = bs->tok_lam[t];
        const float *g = bs->x + (size_t)t * D;
        float *ra = input_row(bs, dE, dmask, bs->item[t]);
        for (int32_t d = 0; d < D; d++) ra[d] += l * g[d];
        if (!bs->item_aug[t]) continue;
        float *rb = input_row(bs, dE, dmask, bs->item_aug[t]);
        for (int32_t d = 0; d < D; d++) rb[d] += (1.0f - l) * g[d];
    }
    /* The padding row, read at padded slots, is not trained (padding_idx). */
    if (bs->encode_pad) memset(dE, 0, (size_t)D * sizeof(float));
    return st->loss_main + st->loss_ssa + st->loss_csa;
}
