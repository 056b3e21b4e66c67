/* Checkpoints: safetensors files holding the model's tensors under their
 * PyTorch names, the model configuration, the fingerprint of the training
 * data and, for resumable checkpoints, the Adam moments (as
 * "adam_m.<name>" / "adam_v.<name>"), the training config and state. */
#ifndef BR_TRAIN_CHECKPOINT_H
#define BR_TRAIN_CHECKPOINT_H

#include "models/model.h"
#include "train/train.h"

/* tc and st may be NULL (weights only). Atomic. */
int br_checkpoint_save(const char *path, const br_model *m, const br_dataset *ds,
                       const br_train_config *tc, const br_train_state *st, br_error *err);

/* Creates m from the file's configuration and loads its weights. When st is
 * non-NULL the file must be resumable; tc and st are then restored too.
 * When ds is non-NULL it must fit the model (item ids within the model's
 * catalogue); with require_same_data, it must be the very data the model was
 * trained on (same fingerprint). */
int br_checkpoint_load(const char *path, br_model *m, const br_dataset *ds, int require_same_data,
                       br_train_config *tc, br_train_state *st, br_error *err);

#endif
