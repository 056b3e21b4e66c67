/* BASRec (Dang et al., AAAI 2025): balanced data augmentation as a plugin
 * around any backbone. One training step on a batch of B sequences:
 *  - single-sequence augmentation: 2*n_pairs copies per sequence, each made
 *    by M-Reorder or M-Substitute (p = 1/2) with rate ~ U(rate_min, rate_max),
 *    encoded from mixed input embeddings l*E(s) + (1-l)*E(s'), l ~ Beta(a, a),
 *    trained with the original targets under the adaptive weight
 *    1/(l*rate), min-max normalised over the batch;
 *  - cross-sequence augmentation: n_whole_level item-wise and n_whole_level
 *    feature-wise nonlinear mixups of the plain pass's outputs and target
 *    embeddings with a batch permutation;
 *  - L = L_main + sum L_ssa + sum L_csa.
 * The plain sequences and all copies go through the encoder as ONE stacked
 * ragged batch. The backbone is only used through its interface.
 * RM-HSAOCL (Li & Cai; docs/RMHSAOCL.md) extends the plugin: the copies'
 * operator is drawn uniformly from a chosen set that may add M-Crop and
 * M-Mask, and every loss term may be a full-softmax loss (train/loss.h). */
#ifndef BR_AUGMENT_BASREC_H
#define BR_AUGMENT_BASREC_H

#include <stddef.h>
#include <stdint.h>

#include "data/batch.h"
#include "data/dataset.h"
#include "models/model.h"
#include "train/loss.h"

/* Operators of the single-sequence module, as a set. */
enum { BR_OP_REORDER = 1, BR_OP_SUBSTITUTE = 2, BR_OP_CROP = 4, BR_OP_MASK = 8, BR_OP_ALL = 15 };
#define BR_OPS_BASREC (BR_OP_REORDER | BR_OP_SUBSTITUTE)

/* How an M-Crop copy (a window of c of the original's n items) lines up
 * with its original. Both put the window on the original's last c slots
 * (position ids L-c .. L-1, as the window would get as a sequence of its own
 * under left padding) and mix it with the original's items there:
 *  - suffix: the copy has those c tokens only, with the original's targets
 *    at those slots;
 *  - pad: the copy keeps all n tokens; the first n - c have no window item
 *    and mix the original's item with a zero vector (l * E[item]), as a
 *    left-padded window would, without reading the padding row. */
typedef enum { BR_CROP_SUFFIX, BR_CROP_PAD } br_crop_align;
/* A cross-sequence mix where the partner is shorter than the sequence
 * (docs/DESIGN.md):
 *  - zero: the partner's side of the output and of the targets is zero;
 *  - last: its side of the output is its last output, targets zero;
 *  - encode: what the reference computes: the plain pass also encodes every
 *    sequence's padded slots (the backbone must support it), the partner's
 *    output there is mixed in, and its targets there are the padding row,
 *    which gets no gradient (the reference's padding_idx). */
typedef enum { BR_MIX_PAD_ZERO, BR_MIX_PAD_LAST, BR_MIX_PAD_ENCODE } br_mix_pad;
/* How a copy's adaptive weights w_s (one per sequence s of the batch) enter
 * its loss:
 *  - sequence: each sequence's positions count w_s times, as the paper
 *    describes (sum_s w_s sum_t l_st / #positions);
 *  - batch: the copy's mean loss is scaled by sum_s w_s, which is what the
 *    reference code computes (its [B, 1] weight broadcasts against the
 *    flattened [B * L] per-position loss; docs/DESIGN.md). */
typedef enum { BR_WEIGHT_SEQUENCE, BR_WEIGHT_BATCH } br_weight_form;

typedef struct br_basrec_config {
    float alpha;            /* Beta(alpha, alpha) of every mixup weight (the reference's --beta) */
    float rate_min, rate_max;
    int32_t n_pairs;        /* pairs of single-sequence copies per sequence */
    int32_t n_whole_level;  /* item-wise and feature-wise cross-sequence mixes, each */
    int single_seq;         /* use L_ssa */
    int cross_seq;          /* use L_csa */
    int adaptive_weight;    /* 1/(l*rate) weights; off: every copy weighs 1 */
    int nonlinear;          /* item-/feature-wise weights; off: one weight per sequence */
    unsigned operators;     /* BR_OP_* set each copy's operator is drawn from, uniformly */
    br_crop_align crop_align;
    br_mix_pad mix_pad;
    br_weight_form weight_form;
} br_basrec_config;

/* Beauty's settings, all modules on, BASRec's operators. */
void br_basrec_config_defaults(br_basrec_config *c);
/* PROTOCOL.md's per-dataset settings (beauty, sports, yelp, home); -1 if unknown. */
int br_basrec_preset(br_basrec_config *c, const char *dataset);

/* "reorder,substitute,crop,mask" (any non-empty subset, any order) <-> set;
 * parse returns -1 on an unknown or empty list. format writes the names in
 * the order above (at most 36 bytes with the terminator). */
int br_basrec_parse_operators(const char *list, unsigned *ops);
void br_basrec_format_operators(unsigned ops, char *buf, size_t n);
const char *br_crop_align_name(br_crop_align a);
int br_crop_align_parse(const char *name, br_crop_align *a);
const char *br_mix_pad_name(br_mix_pad k);
int br_mix_pad_parse(const char *name, br_mix_pad *k);
const char *br_weight_form_name(br_weight_form f);
int br_weight_form_parse(const char *name, br_weight_form *f);

typedef struct br_basrec br_basrec;

/* Builds the item similarity from ds's training part (when substitute is
 * used) and sizes buffers for batches of up to max_seq sequences / max_tok
 * plain tokens. loss: the objective of every term (NULL: bce). With M-Mask
 * the model must have its mask item (br_model_add_mask_item). */
br_basrec *br_basrec_create(const br_basrec_config *cfg, const br_loss_config *loss, br_model *m,
                            const br_dataset *ds, int32_t max_seq, int32_t max_tok, br_error *err);
void br_basrec_free(br_basrec *bs);

typedef struct br_basrec_stats {
    double loss_main, loss_ssa, loss_csa;
    double aug_cosine;  /* mean cosine(last output of copy, of original) */
    double tokens;      /* encoded: plain and copies (M-Crop's copies are shorter) */
} br_basrec_stats;

/* Adaptive loss weights of n copies: w = 1/(lam * rate), min-max
 * normalised to [0, 1] over the n copies (all 1 when they are equal). */
void br_basrec_adaptive_weights(const float *lam, const float *rate, int32_t n, float *w);

/* Accumulates the gradient of L on the plain batch (targets and negatives
 * filled) into the model's gradients; draws keyed by key. Returns L. */
double br_basrec_step(br_basrec *bs, const br_batch *plain, uint64_t key, br_basrec_stats *st);

#endif
