/* Layer kernels over row-major float matrices of T rows (tokens). Each layer
 * is a *_forward / *_backward pair; backward functions ACCUMULATE (+=) into
 * parameter gradients and OVERWRITE input gradients unless noted. All
 * kernels are deterministic for a fixed thread count. */
#ifndef BR_NN_OPS_H
#define BR_NN_OPS_H

#include <stdint.h>

/* y[T,N] = x[T,K] W^T + b, with W stored [N,K] as torch.nn.Linear; b may be NULL. */
void br_linear_forward(float *y, const float *x, const float *W, const float *b,
                       int T, int K, int N);
/* dx[T,K] = dy W (dx may be NULL: skipped); dW += dy^T x; db += colsum(dy) (db may be NULL).
 * accumulate_dx: add into dx instead of overwriting. */
void br_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x,
                        const float *W, int T, int K, int N, int accumulate_dx);

/* y = LayerNorm(x) * gamma + beta per row of width D (biased variance).
 * Saves mean and rstd per row for the backward pass. */
void br_layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                          const float *gamma, const float *beta, int T, int D, float eps);
/* dx = d LN / dx (overwrite, or add if accumulate_dx); dgamma, dbeta += ... */
void br_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                           const float *x, const float *mean, const float *rstd,
                           const float *gamma, int T, int D, int accumulate_dx);

/* GELU, erf form: y = x * Phi(x); x is overwritten with GELU'(x), which
 * the backward needs and which costs one exp more here instead of the whole
 * erf again there. */
void br_gelu_forward(float *y, float *x, long n);
/* dx = dy * GELU'(x), dgelu as left by the forward (dx may be dy). */
void br_gelu_backward(float *dx, const float *dy, const float *dgelu, long n);

/* Inverted dropout in place: x[i] = keep(i) ? x[i] / (1 - p) : 0, where
 * keep(i) is a counter-based draw keyed by (key, i): the backward pass is the
 * same call on the gradient with the same key. p == 0 is the identity. */
void br_dropout(float *x, long n, float p, uint64_t key);

/* Causal multi-head self-attention over a ragged batch: sequence s owns rows
 * [seq_off[s], seq_off[s+1]) of qkv ([T, 3D]: q | k | v, heads are D/H column
 * slices) and attends only within itself and only to earlier-or-equal rows.
 * n_pad (NULL: none) gives each sequence's leading padding rows, encoded
 * the way the reference's padded batches are: a padding row attends to all
 * rows of its sequence, a real row to the real rows up to itself only.
 * probs holds the pre-dropout attention probabilities, laid out per sequence
 * (att_off[s] = offset of sequence s, H * n_s * n_s floats each).
 * Attention-probability dropout p uses counter-based draws keyed by key. */
void br_attention_forward(float *ctx, float *probs, const float *qkv, const int32_t *seq_off,
                          const int32_t *n_pad, const int64_t *att_off, int n_seq, int D, int H,
                          float p, uint64_t key);
/* dqkv[T, 3D] (overwrite) from dctx. scratch: scratch_threads times the
 * longest sequence's length floats; at most scratch_threads threads run. */
void br_attention_backward(float *dqkv, const float *dctx, const float *probs, const float *qkv,
                           const int32_t *seq_off, const int32_t *n_pad, const int64_t *att_off,
                           int n_seq, int D, int H, float p, uint64_t key, float *scratch,
                           int scratch_threads);

/* Inference: ctx[s] [n_seq, D] = the attention output of sequence s's last
 * token only (its causal window is the whole sequence), no dropout. */
void br_attention_last(float *ctx, const float *qkv, const int32_t *seq_off, int n_seq, int D,
                       int H);

/* Offsets for br_attention_*: att_off[s] for s in 0..n_seq (n_seq + 1 values). */
void br_attention_offsets(int64_t *att_off, const int32_t *seq_off, int n_seq, int H);

#endif
