/* basrec: the public C API for recommending with a trained checkpoint.
 *
 * This header is the library's stable interface: it exposes opaque handles
 * and plain C types only, never the internal modules' structures, so
 * programs built against it keep working when the internals change.
 *
 *     char err[256];
 *     basrec_model *m = basrec_model_load("runs/beauty/best.safetensors", err, sizeof err);
 *     if (!m) { fprintf(stderr, "%s\n", err); return 1; }
 *     int32_t history[] = {5, 9, 12}, items[10];
 *     float scores[10];
 *     int n = basrec_recommend(m, history, 3, 10, 1, items, scores, err, sizeof err);
 *     ...
 *     basrec_model_free(m);
 *
 * Build with: cc prog.c $(pkg-config --cflags --libs basrec)
 *
 * Item ids are the model's: positive integers 1..basrec_model_n_items(m),
 * as in the sequence file the model was trained on. Files written by
 * `basrec prepare` translate them from and to the original ids; the
 * basrec_idmap functions below read those files.
 *
 * Errors: functions that can fail take (char *err, size_t errlen) and write
 * a one-line message there (truncated to errlen, always NUL-terminated; err
 * may be NULL to ignore it).
 *
 * Threads: a loaded model is read-only. basrec_recommend may be called
 * concurrently on one model from any number of threads; each call borrows a
 * private workspace from the model's pool (see basrec_recommend). Loading
 * and freeing must not overlap other calls on the same handle. */
#ifndef BASREC_H
#define BASREC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BASREC_VERSION_MAJOR 0
#define BASREC_VERSION_MINOR 1
#define BASREC_VERSION_PATCH 0
#define BASREC_VERSION "0.1.0"

/* The library's version string, e.g. "0.1.0" (compare with BASREC_VERSION
 * to detect a header / library mismatch). */
const char *basrec_version(void);

/* ---- Models --------------------------------------------------------------- */

typedef struct basrec_model basrec_model;

/* Loads a checkpoint written by `basrec train` (best.safetensors or
 * last.safetensors; any backbone). Returns NULL with a message on error. */
basrec_model *basrec_model_load(const char *checkpoint, char *err, size_t errlen);

/* Frees the model and its workspaces. NULL is a no-op. */
void basrec_model_free(basrec_model *m);

/* Items are 1..n_items. */
int32_t basrec_model_n_items(const basrec_model *m);
/* Hidden size of the representations. */
int32_t basrec_model_dim(const basrec_model *m);
/* Longest history the model reads: longer histories use their last
 * max_len items (all of them still count as seen). */
int32_t basrec_model_max_len(const basrec_model *m);
/* Backbone name: "sasrec", "gru4rec", "nextitnet" or "fmlprec". */
const char *basrec_model_backbone(const basrec_model *m);
/* Workspaces created so far: the largest number of concurrent
 * basrec_recommend calls seen on this model. */
int basrec_model_workspaces(const basrec_model *m);

/* Top-k next items after a history (oldest item first), best first, ties
 * broken by the lower id. With exclude_seen, items of the history are never
 * recommended. Writes up to k entries to items_out and scores_out (each of
 * room for k) and returns how many it wrote: k, or fewer when exclusions
 * leave fewer than k items. Returns -1 with a message when an argument is
 * invalid: an empty history, an item outside 1..n_items, k outside
 * 1..n_items.
 *
 * Thread-safe: the model's parameters are shared and only read; the
 * activations of the forward pass go to a workspace taken from the model's
 * pool (created on demand when every workspace is in use, so the pool grows
 * to the number of concurrent callers and stays there). A call runs in the
 * calling thread only (OpenMP set to one thread for its duration and
 * restored), so concurrency comes from calling it from several threads; in a
 * process that does this, also keep OpenBLAS single-threaded
 * (openblas_set_num_threads(1) or OPENBLAS_NUM_THREADS=1). */
int basrec_recommend(const basrec_model *m, const int32_t *history, int32_t n, int32_t k,
                     int exclude_seen, int32_t *items_out, float *scores_out, char *err,
                     size_t errlen);

/* ---- Id maps -------------------------------------------------------------- */

/* A mapping between the model's ids and a dataset's original ids (strings),
 * as written by `basrec prepare` to OUT.items.tsv and OUT.users.tsv: one
 * line per id, "id<TAB>original id". An optional header line (a first line
 * whose first field is not a number) is skipped; blank lines are ignored;
 * ids and original ids must each be unique, original ids UTF-8 text
 * (answers carry them in JSON). Read-only after loading, so
 * lookups are thread-safe. */
typedef struct basrec_idmap basrec_idmap;

/* Loads a map; NULL with "path:line: problem" on error. */
basrec_idmap *basrec_idmap_load(const char *path, char *err, size_t errlen);
void basrec_idmap_free(basrec_idmap *map);
/* Number of entries. */
int64_t basrec_idmap_size(const basrec_idmap *map);
/* The model's id of an original id, or -1 when the map does not know it. */
int64_t basrec_idmap_id(const basrec_idmap *map, const char *original);
/* The original id of a model id, or NULL when the map does not know it. */
const char *basrec_idmap_original(const basrec_idmap *map, int64_t id);

#ifdef __cplusplus
}
#endif

#endif
