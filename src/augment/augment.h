/* Sequence augmentation operators and the random draws BASRec needs.
 * Operators act on a copy of one (already truncated) input sequence: all
 * but M-Crop edit it in place at the same length, so the copy's embeddings
 * can be mixed position by position with the original's; M-Crop picks a
 * shorter window, aligned with the original by the caller (basrec.c). */
#ifndef BR_AUGMENT_AUGMENT_H
#define BR_AUGMENT_AUGMENT_H

#include <stdint.h>

#include "data/dataset.h"
#include "util/error.h"
#include "util/rng.h"

/* ItemCF-IUF most-similar item per item, from the training part s[0:n-3] of
 * every user (PROTOCOL.md): co-occurrence of distinct items within a user,
 * each pair weighted 1/log(1 + number of the user's distinct items),
 * normalised by sqrt(N_i N_j) (N = number of users with the item). */
typedef struct br_item_sim {
    int32_t n_items;
    int32_t *most_similar; /* [n_items + 1]; 0 = the item has no co-occurring item */
} br_item_sim;

int br_item_sim_build(const br_dataset *ds, br_item_sim *sim, br_error *err);
void br_item_sim_free(br_item_sim *sim);

/* M-Reorder: shuffles one random contiguous run of c = int(rate * n) items
 * starting uniformly in [0, n-c-1] (the reference's range: the last item
 * stays put unless c == n). Allocation-free. */
void br_aug_reorder(int32_t *seq, int32_t n, float rate, br_rng *rng);
/* M-Substitute: max(int(rate * n), 1) distinct random positions replaced by
 * their most similar item (a random item 1..n_items when it has none).
 * Allocation-free for any n. */
void br_aug_substitute(int32_t *seq, int32_t n, float rate, const br_item_sim *sim, br_rng *rng);
/* M-Crop (RM-HSAOCL): the window of c = max(int(rate * n), 1) consecutive
 * items starting uniformly in [0, n-c]; returns c and sets *start. n >= 1. */
int32_t br_aug_crop(int32_t n, float rate, br_rng *rng, int32_t *start);
/* M-Mask (RM-HSAOCL): max(int(rate * n), 1) distinct random positions set
 * to mask_item. Allocation-free for any n. */
void br_aug_mask(int32_t *seq, int32_t n, float rate, int32_t mask_item, br_rng *rng);

/* Beta(a, b) draw, a, b > 0, correct for small shape parameters (< 1). */
double br_rng_beta(br_rng *rng, double a, double b);
/* The same draws with the per-shape constants computed once: the mixes
 * draw tens of thousands of weights per batch from one Beta(a, a). */
typedef struct br_gamma_dist {
    double boost_shape; /* the shape when below 1 (drawn as shape + 1), else 0 */
    double d, c, log_d; /* Marsaglia-Tsang's constants */
} br_gamma_dist;
typedef struct br_beta_dist {
    br_gamma_dist x, y;
    double a, b;
} br_beta_dist;
br_beta_dist br_beta_dist_make(double a, double b);
double br_beta_draw(br_rng *rng, const br_beta_dist *dist);
/* Gamma(shape, 1) draw, shape > 0 (Marsaglia-Tsang, with the shape < 1
 * boost; may underflow to 0 for tiny shapes, which br_rng_beta avoids). */
double br_rng_gamma(br_rng *rng, double shape);

#endif
