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
 * ragged batch. The backbone is only used through its interface. */
#ifndef BR_AUGMENT_BASREC_H
#define BR_AUGMENT_BASREC_H

#include <stdint.h>

#include "data/batch.h"
#include "data/dataset.h"
#include "models/model.h"

typedef struct br_basrec_config {
    float alpha;            /* Beta(alpha, alpha) of every mixup weight (the reference's --beta) */
    float rate_min, rate_max;
    int32_t n_pairs;        /* pairs of single-sequence copies per sequence */
    int32_t n_whole_level;  /* item-wise and feature-wise cross-sequence mixes, each */
    int single_seq;         /* use L_ssa */
    int cross_seq;          /* use L_csa */
    int adaptive_weight;    /* 1/(l*rate) weights; off: every copy weighs 1 */
    int nonlinear;          /* item-/feature-wise weights; off: one weight per sequence */
} br_basrec_config;

/* Beauty's settings, all modules on. */
void br_basrec_config_defaults(br_basrec_config *c);
/* PROTOCOL.md's per-dataset settings (beauty, sports, yelp, home); -1 if unknown. */
int br_basrec_preset(br_basrec_config *c, const char *dataset);

typedef struct br_basrec br_basrec;

/* Builds the item similarity from ds's training part and sizes buffers for
 * batches of up to max_seq sequences / max_tok plain tokens. */
br_basrec *br_basrec_create(const br_basrec_config *cfg, br_model *m, const br_dataset *ds,
                            int32_t max_seq, int32_t max_tok, br_error *err);
void br_basrec_free(br_basrec *bs);

typedef struct br_basrec_stats {
    double loss_main, loss_ssa, loss_csa;
    double aug_cosine;  /* mean cosine(last output of copy, of original) */
} br_basrec_stats;

/* Adaptive loss weights of n copies: w = 1/(lam * rate), min-max
 * normalised to [0, 1] over the n copies (all 1 when they are equal). */
void br_basrec_adaptive_weights(const float *lam, const float *rate, int32_t n, float *w);

/* Accumulates the gradient of L on the plain batch (targets and negatives
 * filled) into the model's gradients; draws keyed by key. Returns L. */
double br_basrec_step(br_basrec *bs, const br_batch *plain, uint64_t key, br_basrec_stats *st);

#endif
