/* The backbone interface: a sequence encoder maps input item embeddings of a
 * ragged batch (T tokens in n_seq sequences, [T, D]) to output
 * representations [T, D], and back-propagates an output gradient to an input
 * gradient. Everything around it (item embeddings, losses, augmentation,
 * evaluation) talks to a backbone only through this table, so any encoder
 * works with any training method. */
#ifndef BR_MODELS_BACKBONE_H
#define BR_MODELS_BACKBONE_H

#include <stdint.h>

#include "nn/params.h"
#include "util/error.h"
#include "util/rng.h"

/* A ragged batch: sequence s owns tokens [seq_off[s], seq_off[s+1]),
 * oldest first; pos[t] is the token's absolute position id in [0, max_len)
 * (a sequence of length n under left padding uses max_len-n .. max_len-1).
 * n_pad (NULL: none, the normal case) marks each sequence's first n_pad[s]
 * tokens as the reference's left padding, encoded as its padded batches
 * encode them, for callers that need outputs at padded slots; only
 * backbones with encodes_padding accept it. */
typedef struct br_tokens {
    int32_t n_seq, n_tok;
    const int32_t *seq_off;
    const int32_t *pos;
    const int32_t *n_pad;
} br_tokens;

typedef struct br_model_config {
    char model[16];         /* backbone name, e.g. "sasrec" */
    int32_t n_items;        /* items are 1..n_items; row 0 of the table is padding */
    int32_t dim;            /* hidden size */
    int32_t n_layers;
    int32_t n_heads;
    int32_t max_len;
    float hidden_dropout;
    float attn_dropout;
    float init_std;         /* std of the normal init of weights and embeddings */
    int32_t run_padding;    /* GRU4Rec: run the recurrence over the left padding
                               (the padding row's embedding) before the first
                               item, as the reference does; 0: start at h = 0 */
} br_model_config;

typedef struct br_backbone br_backbone;

typedef struct br_backbone_vtable {
    const char *name;
    int (*register_params)(br_backbone *bb, br_params *p, br_error *err);
    void (*init_params)(br_backbone *bb, br_params *p, br_rng *rng);
    /* Std of the normal init of the item table; NULL: cfg.init_std. */
    float (*item_init_std)(const br_backbone *bb);
    /* Sizes the activation workspace for batches of up to max_tok tokens. */
    int (*reserve)(br_backbone *bb, int32_t max_tok, int32_t max_seq, br_error *err);
    /* out = encoder(x_in). training enables dropout with draws keyed by key;
     * the activations needed by backward are kept in the workspace. */
    void (*forward)(br_backbone *bb, const br_params *p, const br_tokens *tok,
                    const float *x_in, float *out, int training, uint64_t key);
    /* Optional, inference only: out [n_seq, D] = the encoder output at each
     * sequence's last token, skipping work the other outputs alone need.
     * NULL: br_backbone_encode_last runs forward and gathers. */
    void (*encode_last)(br_backbone *bb, const br_params *p, const br_tokens *tok,
                        const float *x_in, float *out);
    /* Accumulates parameter gradients into p->grad and writes dx_in [T, D]
     * for the batch of the last forward (same tokens and key). */
    void (*backward)(br_backbone *bb, br_params *p, const br_tokens *tok,
                     const float *dout, float *dx_in);
    void (*destroy)(br_backbone *bb);
    /* forward and backward honour br_tokens.n_pad. */
    int encodes_padding;
} br_backbone_vtable;

struct br_backbone {
    const br_backbone_vtable *vt;
    br_model_config cfg;
};

/* Creates the backbone named cfg->model, or fails listing the known names. */
br_backbone *br_backbone_create(const br_model_config *cfg, br_error *err);

/* Inference: out [n_seq, D] = outputs at each sequence's last token, by the
 * backbone's encode_last, or by forward into full [T, D] (scratch, unused
 * when the backbone has encode_last) and a gather; out may be full. */
void br_backbone_encode_last(br_backbone *bb, const br_params *p, const br_tokens *tok,
                             const float *x_in, float *full, float *out);

br_backbone *br_sasrec_create(const br_model_config *cfg, br_error *err);
br_backbone *br_fmlprec_create(const br_model_config *cfg, br_error *err);
br_backbone *br_nextitnet_create(const br_model_config *cfg, br_error *err);
br_backbone *br_gru4rec_create(const br_model_config *cfg, br_error *err);

#endif
