/* Training losses on backbone outputs h [T, D] against the tied item table. */
#ifndef BR_TRAIN_LOSS_H
#define BR_TRAIN_LOSS_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "util/error.h"

/* Binary cross-entropy with one sampled negative per token (PROTOCOL.md):
 *   loss = scale * sum_t w_t [softplus(-h_t.E[pos_t]) + softplus(h_t.E[neg_t])] / #{t: pos_t > 0}
 * over tokens with pos_t > 0 (weight w_t = 1 when weight is NULL). Writes dh
 * (overwrite; zero on tokens without target) and accumulates into dE.
 * Returns the loss. */
double br_bce_loss(const float *h, const int32_t *pos, const int32_t *neg, const float *weight,
                   int32_t T, int D, const float *E, float *dE, float *dh, float scale);

/* The objective of a run (RM-HSAOCL, docs/RMHSAOCL.md):
 *  - bce: br_bce_loss above (SASRec, BASRec);
 *  - ce: full-softmax cross-entropy over items 1..n_items at every target
 *    position, averaged over positions (the paper's ICE);
 *  - last-ce: the same at the last position of each sequence only;
 *  - focal: -(1 - p)^gamma log p on the full softmax at every position;
 *  - sampled-ce: ce with the softmax over the target and K negatives shared
 *    by a step's tokens, drawn from a proposal Q, the negatives' logits
 *    logQ-corrected (br_xent_create_sampled below). */
typedef enum { BR_LOSS_BCE, BR_LOSS_CE, BR_LOSS_LAST_CE, BR_LOSS_FOCAL, BR_LOSS_SAMPLED_CE } br_loss_kind;

/* sampled-ce's proposal: uniform over the items, or each item's count among
 * the training targets plus 1 (pop). */
typedef enum { BR_SAMPLER_UNIFORM, BR_SAMPLER_POP } br_sampler_kind;

typedef struct br_loss_config {
    br_loss_kind kind;
    float focal_gamma;
    int32_t ce_negatives;       /* sampled-ce: K */
    br_sampler_kind ce_sampler; /* sampled-ce: Q */
} br_loss_config;

/* bce, focal gamma 2, sampled-ce with 256 negatives from pop. */
void br_loss_config_defaults(br_loss_config *c);
const char *br_loss_name(br_loss_kind k);
/* 0 and *k set for a known name (bce, ce, last-ce, focal, sampled-ce), else -1. */
int br_loss_parse(const char *name, br_loss_kind *k);
const char *br_sampler_name(br_sampler_kind k);
/* 0 and *k set for uniform or pop, else -1. */
int br_sampler_parse(const char *name, br_sampler_kind *k);
static inline int br_loss_is_softmax(br_loss_kind k) { return k != BR_LOSS_BCE; }

/* last-ce: zeroes target[] except at the last token of each of the n_seq
 * sequences (seq_off as br_tokens), so that losses skip those tokens. */
void br_keep_last_targets(int32_t *target, const int32_t *seq_off, int32_t n_seq);

/* ---- Full-softmax cross-entropy, memory-bounded ----
 * Tokens are processed in chunks of `chunk` rows and items in blocks of
 * `block`: a first pass keeps a streaming log-sum-exp per token over the
 * item blocks (one GEMM per block), a second recomputes each block's logits
 * and forms the logit gradient, turned into dh and dE by two more GEMMs.
 * When one block covers the catalogue (up to 32,768 items) the logits are
 * computed and exponentiated once. No buffer grows with the catalogue
 * beyond chunk x block floats (8 MiB); the order of every sum is fixed, so
 * results are reproducible for a thread count. */
typedef struct br_xent br_xent;

#define BR_XENT_CHUNK 64
#define BR_XENT_BLOCK 32768

/* Workspace for n_items items of dimension D. */
br_xent *br_xent_create(int32_t n_items, int D, int32_t chunk, int32_t block, br_error *err);
void br_xent_free(br_xent *x);
/* Bytes of the workspace (the kernel's whole memory besides h, dh, E, dE). */
size_t br_xent_bytes(const br_xent *x);

/* Labels of T tokens. A token with target 0 has no loss. The mixup label
 * form of a mixed representation puts weight mix_t on target_t and 1 - mix_t
 * on target2_t (a target2 of 0 adds nothing: give that token mix 1). */
typedef struct br_xent_labels {
    const int32_t *target;  /* [T] */
    const int32_t *target2; /* [T] or NULL */
    const float *mix;       /* [T] or NULL: 1 */
    const float *weight;    /* [T] or NULL: 1; a loss weight per token */
} br_xent_labels;

/* loss = scale * sum_t weight_t [mix_t l_t(target_t) + (1 - mix_t) l_t(target2_t)] / #{t: target_t > 0},
 * l_t(y) = -(1 - p_ty)^gamma log p_ty, p_t = softmax_i(h_t . E[i]) over i in 1..n_items
 * (gamma 0: cross-entropy); on a sampled workspace, p_t is the sampled
 * softmax below. Writes dh (overwrite; zero on tokens without target),
 * accumulates into dE; returns the loss. */
double br_xent_loss(br_xent *x, const float *h, int32_t T, const br_xent_labels *lb, float gamma,
                    const float *E, float *dE, float *dh, float scale);

/* ---- Sampled softmax with logQ correction (sampled-ce) ----
 * A workspace of br_xent_create_sampled makes br_xent_loss use the K items
 * of the current draw (with replacement from Q(i) = weight[i] / sum weight,
 * i in 1..n_items; weight NULL: uniform), shared by every token: p_t is
 * the softmax over the support {target_t, target2_t (when > 0)} + the
 * draws, with logits h_t . E[y] for the labels and h_t . E[i] - log(K Q(i))
 * for the draws (so that it tends to the full softmax as K grows), a draw
 * equal to either label (an accidental hit) left out of the support. The K
 * rows are gathered into a K x D buffer, so one GEMM per chunk of tokens
 * gives its chunk x K logits and two more dh and the draws' dE (scattered
 * in draw order: repeated draws accumulate); the labels' rows are handled
 * directly. The workspace holds chunk x K logits, 2 K x D floats and the
 * proposal's tables (20 bytes per item). */
br_xent *br_xent_create_sampled(int32_t n_items, int D, int32_t chunk, int32_t K,
                                const double *weight, br_error *err);
/* The workspace of a run's softmax loss: br_xent_create for ce, last-ce and
 * focal; for sampled-ce, br_xent_create_sampled with the configured K and
 * Q (pop: weight[i] = 1 + #training targets equal to i in ds, whose items
 * are within 1..n_items). */
br_xent *br_xent_create_for(const br_loss_config *c, int32_t n_items, int D, const br_dataset *ds,
                            br_error *err);
/* Draws the K items of a step, deterministically from key (a new workspace
 * holds the draw of key 0). */
void br_xent_draw(br_xent *x, uint64_t key);
/* The current draw, K items. */
const int32_t *br_xent_samples(const br_xent *x);
/* Q(item) of a sampled workspace. */
double br_xent_proposal(const br_xent *x, int32_t item);

/* The configured loss of T tokens against their targets (targets already
 * masked for last-ce), negatives for bce; xent (br_xent_create_for) may be
 * NULL for bce. */
double br_loss_eval(const br_loss_config *c, br_xent *xent, const float *h, int32_t T,
                    const int32_t *target, const int32_t *neg, const float *weight, int D,
                    const float *E, float *dE, float *dh);

#endif
