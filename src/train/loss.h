/* Training losses on backbone outputs h [T, D] against the tied item table. */
#ifndef BR_TRAIN_LOSS_H
#define BR_TRAIN_LOSS_H

#include <stdint.h>

/* Binary cross-entropy with one sampled negative per token (PROTOCOL.md):
 *   loss = scale * sum_t w_t [softplus(-h_t.E[pos_t]) + softplus(h_t.E[neg_t])] / #{t: pos_t > 0}
 * over tokens with pos_t > 0 (weight w_t = 1 when weight is NULL). Writes dh
 * (overwrite; zero on tokens without target) and accumulates into dE.
 * Returns the loss. */
double br_bce_loss(const float *h, const int32_t *pos, const int32_t *neg, const float *weight,
                   int32_t T, int D, const float *E, float *dE, float *dh, float scale);

#endif
