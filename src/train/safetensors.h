/* safetensors files: 8-byte little-endian header length N, N bytes of JSON
 * header {"name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]},
 * ..., "__metadata__": {"key": "string", ...}}, then the raw little-endian
 * tensor bytes. Readable by the Python `safetensors` package, NumPy and
 * PyTorch. Only F32 tensors are written; F32 and I64/I32 are read. */
#ifndef BR_TRAIN_SAFETENSORS_H
#define BR_TRAIN_SAFETENSORS_H

#include <stdint.h>

#include "util/error.h"

#define BR_ST_MAX_DIMS 4

typedef struct br_st_tensor {
    const char *name;
    int ndim;
    int64_t shape[BR_ST_MAX_DIMS];
    const float *data; /* prod(shape) floats */
} br_st_tensor;

typedef struct br_st_meta {
    const char *key;
    const char *value;
} br_st_meta;

/* Writes the tensors and string metadata atomically (temporary file in the
 * same directory, fsync, rename, fsync of the directory): a reader never sees
 * a half-written file, and a crash leaves the previous file intact. */
int br_st_write(const char *path, const br_st_tensor *tensors, int n_tensors,
                const br_st_meta *meta, int n_meta, br_error *err);

typedef enum { BR_ST_F32, BR_ST_I32, BR_ST_I64 } br_st_dtype;

typedef struct br_st_entry {
    char *name;
    br_st_dtype dtype;
    int ndim;
    int64_t shape[BR_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* points into the loaded file buffer, 8-byte aligned copy */
} br_st_entry;

typedef struct br_st_file {
    char *path;
    br_st_entry *entries;
    int n_entries;
    char **meta_keys, **meta_values;
    int n_meta;
    void *buffer; /* the tensor bytes */
} br_st_file;

/* Reads and validates a whole file: header length within the file, JSON
 * well formed, dtypes known, shapes consistent with byte ranges, ranges
 * inside the data section and not overlapping. Errors name the file. */
int br_st_read(const char *path, br_st_file *f, br_error *err);
void br_st_free(br_st_file *f);
const br_st_entry *br_st_find(const br_st_file *f, const char *name);
/* Metadata value for key, or NULL. */
const char *br_st_meta_get(const br_st_file *f, const char *key);

#endif
