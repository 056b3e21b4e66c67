#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "train/safetensors.h"
#include "util/fileio.h"

/* The format stores little-endian bytes and tensors are written and read
 * as raw memory, so a big-endian host would need byte swapping. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define META_KEY "__metadata__"
/* Guards against allocating a huge header from a corrupt length field. */
#define MAX_HEADER_BYTES (100u * 1024u * 1024u)
/* Tensor data copies start at multiples of this, enough for int64/double. */
#define DATA_ALIGN 8

/* ---- writing ---------------------------------------------------------- */

/* Number of elements of a tensor to be written, or -1 on a bad shape. */
static int64_t tensor_numel(const br_st_tensor *t, const char *path, br_error *err) {
    if (t->ndim < 0 || t->ndim > BR_ST_MAX_DIMS) {
        br_errorf(err, "%s: tensor '%s': ndim %d outside 0..%d", path, t->name,
                  t->ndim, BR_ST_MAX_DIMS);
        return -1;
    }
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        int64_t dim = t->shape[d];
        if (dim < 0) {
            br_errorf(err, "%s: tensor '%s': negative dimension %lld", path,
                      t->name, (long long)dim);
            return -1;
        }
        /* Bound by INT64_MAX / 4 so the byte count cannot overflow either. */
        if (dim > 0 && numel > INT64_MAX / 4 / dim) {
            br_errorf(err, "%s: tensor '%s': shape too large", path, t->name);
            return -1;
        }
        numel *= dim;
    }
    if (numel > 0 && !t->data) {
        br_errorf(err, "%s: tensor '%s': no data", path, t->name);
        return -1;
    }
    return numel;
}

static json_t *tensor_json(const br_st_tensor *t, int64_t begin, int64_t end) {
    json_t *entry = json_object();
    json_t *shape = json_array();
    json_t *offsets = json_array();
    int bad = !entry || !shape || !offsets;
    for (int d = 0; !bad && d < t->ndim; d++)
        bad = json_array_append_new(shape, json_integer(t->shape[d])) != 0;
    if (!bad)
        bad = json_array_append_new(offsets, json_integer(begin)) != 0 ||
              json_array_append_new(offsets, json_integer(end)) != 0;
    if (bad) {
        json_decref(entry);
        json_decref(shape);
        json_decref(offsets);
        return NULL;
    }
    /* The _new setters consume shape/offsets even when they fail. */
    if (json_object_set_new(entry, "dtype", json_string("F32")) != 0 ||
        json_object_set_new(entry, "shape", shape) != 0 ||
        json_object_set_new(entry, "data_offsets", offsets) != 0) {
        json_decref(entry);
        return NULL;
    }
    return entry;
}

static json_t *build_meta(const char *path, const br_st_meta *meta, int n_meta,
                          br_error *err) {
    json_t *obj = json_object();
    if (!obj) {
        br_errorf(err, "%s: out of memory building header", path);
        return NULL;
    }
    for (int i = 0; i < n_meta; i++) {
        const char *key = meta[i].key, *value = meta[i].value;
        if (!key || !value) {
            br_errorf(err, "%s: metadata entry %d has a NULL key or value", path, i);
            goto fail;
        }
        if (json_object_get(obj, key)) {
            br_errorf(err, "%s: duplicate metadata key '%s'", path, key);
            goto fail;
        }
        json_t *s = json_string(value);
        if (!s || json_object_set_new(obj, key, s) != 0) {
            br_errorf(err, "%s: metadata '%s': not valid UTF-8 (or out of memory)",
                      path, key);
            goto fail;
        }
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

/* Builds the JSON header; returns a malloc'd string or NULL. */
static char *build_header(const char *path, const br_st_tensor *tensors,
                          int n_tensors, const br_st_meta *meta, int n_meta,
                          br_error *err) {
    json_t *root = json_object();
    if (!root) {
        br_errorf(err, "%s: out of memory building header", path);
        return NULL;
    }
    int64_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const br_st_tensor *t = &tensors[i];
        if (!t->name) {
            br_errorf(err, "%s: tensor %d has no name", path, i);
            goto fail;
        }
        if (strcmp(t->name, META_KEY) == 0) {
            br_errorf(err, "%s: tensor name '%s' is reserved", path, META_KEY);
            goto fail;
        }
        if (json_object_get(root, t->name)) {
            br_errorf(err, "%s: duplicate tensor name '%s'", path, t->name);
            goto fail;
        }
        int64_t numel = tensor_numel(t, path, err);
        if (numel < 0) goto fail;
        int64_t bytes = numel * 4;
        if (offset > INT64_MAX - bytes) {
            br_errorf(err, "%s: total tensor size too large", path);
            goto fail;
        }
        json_t *entry = tensor_json(t, offset, offset + bytes);
        if (!entry || json_object_set_new(root, t->name, entry) != 0) {
            br_errorf(err, "%s: tensor '%s': name not valid UTF-8 (or out of "
                           "memory)", path, t->name);
            goto fail;
        }
        offset += bytes;
    }
    if (n_meta > 0) {
        json_t *m = build_meta(path, meta, n_meta, err);
        if (!m) goto fail;
        if (json_object_set_new(root, META_KEY, m) != 0) {
            br_errorf(err, "%s: out of memory building header", path);
            goto fail;
        }
    }
    char *text = json_dumps(root, JSON_COMPACT);
    if (!text) br_errorf(err, "%s: cannot serialize header", path);
    json_decref(root);
    return text;
fail:
    json_decref(root);
    return NULL;
}

static int write_all(br_atomic_file *af, const void *p, size_t n, br_error *err) {
    if (n > 0 && fwrite(p, 1, n, af->fp) != n)
        return br_errorf(err, "%s: write failed: %s", af->path, strerror(errno));
    return 0;
}

int br_st_write(const char *path, const br_st_tensor *tensors, int n_tensors,
                const br_st_meta *meta, int n_meta, br_error *err) {
    if (n_tensors < 0 || n_meta < 0 || (n_tensors > 0 && !tensors) ||
        (n_meta > 0 && !meta))
        return br_errorf(err, "%s: invalid tensor or metadata list", path);

    char *header = build_header(path, tensors, n_tensors, meta, n_meta, err);
    if (!header) return -1;

    /* Pad with spaces (valid JSON whitespace) so the data section starts at
     * a multiple of 8 bytes, as the spec recommends. */
    size_t json_len = strlen(header);
    size_t header_len = (json_len + 7) / 8 * 8;
    static const char spaces[] = "       "; /* at most 7 needed */
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));

    br_atomic_file af;
    int rc = br_atomic_open(&af, path, err);
    if (rc == 0) rc = write_all(&af, len_bytes, sizeof len_bytes, err);
    if (rc == 0) rc = write_all(&af, header, json_len, err);
    if (rc == 0) rc = write_all(&af, spaces, header_len - json_len, err);
    for (int i = 0; rc == 0 && i < n_tensors; i++) {
        /* Shapes were validated while building the header. */
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d];
        rc = write_all(&af, tensors[i].data, numel * sizeof(float), err);
    }
    free(header);
    if (rc != 0) {
        br_atomic_abort(&af);
        return -1;
    }
    return br_atomic_commit(&af, err);
}

/* ---- reading ---------------------------------------------------------- */

/* Validated header entry, before its bytes are copied. */
typedef struct {
    int64_t begin, end; /* within the data section */
    size_t dest;        /* offset of the aligned copy in f->buffer */
} range_info;

static int parse_dtype(const char *s, br_st_dtype *dtype, int64_t *size) {
    if (strcmp(s, "F32") == 0) { *dtype = BR_ST_F32; *size = 4; return 0; }
    if (strcmp(s, "I32") == 0) { *dtype = BR_ST_I32; *size = 4; return 0; }
    if (strcmp(s, "I64") == 0) { *dtype = BR_ST_I64; *size = 8; return 0; }
    return -1;
}

static int parse_entry(const char *path, const char *name, json_t *v,
                       int64_t data_len, br_st_entry *e, range_info *r,
                       br_error *err) {
    if (!json_is_object(v))
        return br_errorf(err, "%s: tensor '%s': entry is not an object", path, name);
    json_t *dtype = json_object_get(v, "dtype");
    json_t *shape = json_object_get(v, "shape");
    json_t *offsets = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype))
        return br_errorf(err, "%s: tensor '%s': missing or non-string dtype", path, name);
    if (!json_is_array(shape))
        return br_errorf(err, "%s: tensor '%s': missing or non-array shape", path, name);
    if (!json_is_array(offsets))
        return br_errorf(err, "%s: tensor '%s': missing or non-array data_offsets",
                         path, name);

    int64_t elem_size;
    if (parse_dtype(json_string_value(dtype), &e->dtype, &elem_size) != 0)
        return br_errorf(err, "%s: tensor '%s': unsupported dtype '%s'", path,
                         name, json_string_value(dtype));

    size_t ndim = json_array_size(shape);
    if (ndim > BR_ST_MAX_DIMS)
        return br_errorf(err, "%s: tensor '%s': %zu dimensions, at most %d "
                              "supported", path, name, ndim, BR_ST_MAX_DIMS);
    e->ndim = (int)ndim;
    int has_zero = 0;
    for (size_t d = 0; d < ndim; d++) {
        json_t *dim = json_array_get(shape, d);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            return br_errorf(err, "%s: tensor '%s': shape entry %zu is not a "
                                  "non-negative integer", path, name, d);
        e->shape[d] = json_integer_value(dim);
        has_zero |= e->shape[d] == 0;
    }
    /* numel * elem_size must not overflow; a zero dimension makes it 0
     * whatever the others are. */
    e->numel = has_zero ? 0 : 1;
    for (size_t d = 0; d < ndim && !has_zero; d++) {
        if (e->numel > INT64_MAX / 8 / e->shape[d])
            return br_errorf(err, "%s: tensor '%s': shape too large", path, name);
        e->numel *= e->shape[d];
    }

    json_t *b = json_array_get(offsets, 0), *en = json_array_get(offsets, 1);
    if (json_array_size(offsets) != 2 || !json_is_integer(b) || !json_is_integer(en))
        return br_errorf(err, "%s: tensor '%s': data_offsets must be two integers",
                         path, name);
    r->begin = json_integer_value(b);
    r->end = json_integer_value(en);
    if (r->begin < 0 || r->end < r->begin || r->end > data_len)
        return br_errorf(err, "%s: tensor '%s': data_offsets [%lld, %lld] outside "
                              "the data section of %lld bytes", path, name,
                         (long long)r->begin, (long long)r->end, (long long)data_len);
    if (e->numel * elem_size != r->end - r->begin)
        return br_errorf(err, "%s: tensor '%s': shape has %lld elements (%lld "
                              "bytes) but data_offsets span %lld bytes", path, name,
                         (long long)e->numel, (long long)(e->numel * elem_size),
                         (long long)(r->end - r->begin));
    return 0;
}

static int parse_meta(const char *path, json_t *m, br_st_file *f, br_error *err) {
    if (!json_is_object(m))
        return br_errorf(err, "%s: %s is not an object", path, META_KEY);
    size_t n = json_object_size(m);
    f->meta_keys = br_xcalloc(n, sizeof *f->meta_keys, err);
    f->meta_values = br_xcalloc(n, sizeof *f->meta_values, err);
    if (!f->meta_keys || !f->meta_values) return br_error_prefix(err, "%s", path);
    const char *key;
    json_t *value;
    json_object_foreach(m, key, value) {
        if (!json_is_string(value))
            return br_errorf(err, "%s: metadata '%s' is not a string", path, key);
        f->meta_keys[f->n_meta] = strdup(key);
        f->meta_values[f->n_meta] = strdup(json_string_value(value));
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
            return br_errorf(err, "%s: out of memory", path);
    }
    return 0;
}

static int cmp_range(const void *a, const void *b) {
    const range_info *x = *(const range_info *const *)a;
    const range_info *y = *(const range_info *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Requires the ranges to tile [0, data_len) exactly, as the spec does; the
 * sorted order is returned in `order` for sequential reading. */
static int check_coverage(const char *path, range_info *ranges, int n,
                          int64_t data_len, range_info **order, br_error *err) {
    for (int i = 0; i < n; i++) order[i] = &ranges[i];
    qsort(order, (size_t)n, sizeof *order, cmp_range);
    int64_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (order[i]->begin < pos)
            return br_errorf(err, "%s: tensor data ranges overlap at byte %lld",
                             path, (long long)order[i]->begin);
        if (order[i]->begin > pos)
            return br_errorf(err, "%s: bytes %lld..%lld of the data section "
                                  "belong to no tensor", path, (long long)pos,
                             (long long)order[i]->begin);
        pos = order[i]->end;
    }
    if (pos != data_len)
        return br_errorf(err, "%s: data section has %lld bytes but tensors "
                              "cover only %lld", path, (long long)data_len,
                         (long long)pos);
    return 0;
}

static int read_exact(FILE *fp, void *p, size_t n, const char *path, br_error *err) {
    if (n > 0 && fread(p, 1, n, fp) != n)
        return br_errorf(err, "%s: %s", path,
                         ferror(fp) ? strerror(errno) : "unexpected end of file");
    return 0;
}

/* Parses the header and copies each tensor's bytes to an aligned slot. */
static int load_tensors(FILE *fp, const char *path, json_t *root,
                        int64_t data_len, br_st_file *f, br_error *err) {
    size_t n_obj = json_object_size(root);
    int rc = 0;
    range_info *ranges = NULL;
    range_info **order = NULL;
    f->entries = br_xcalloc(n_obj, sizeof *f->entries, err);
    ranges = br_xcalloc(n_obj, sizeof *ranges, err);
    order = br_xcalloc(n_obj, sizeof *order, err);
    if (!f->entries || !ranges || !order) {
        rc = br_error_prefix(err, "%s", path);
        goto done;
    }

    const char *key;
    json_t *value;
    size_t total = 0;
    json_object_foreach(root, key, value) {
        if (strcmp(key, META_KEY) == 0) {
            if ((rc = parse_meta(path, value, f, err)) != 0) goto done;
            continue;
        }
        br_st_entry *e = &f->entries[f->n_entries];
        range_info *r = &ranges[f->n_entries];
        if ((rc = parse_entry(path, key, value, data_len, e, r, err)) != 0) goto done;
        if (!(e->name = strdup(key))) {
            rc = br_errorf(err, "%s: out of memory", path);
            goto done;
        }
        f->n_entries++;
        /* Sizes are bounded by data_len (a real file size): no overflow. */
        r->dest = total;
        total += ((size_t)(r->end - r->begin) + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
    }
    if ((rc = check_coverage(path, ranges, f->n_entries, data_len, order, err)) != 0)
        goto done;

    /* malloc's alignment (>= 16 on our targets) covers DATA_ALIGN. */
    f->buffer = br_xmalloc(total, err);
    if (!f->buffer) {
        rc = br_error_prefix(err, "%s", path);
        goto done;
    }
    /* Ranges tile the data section, so reading them in order is sequential. */
    for (int i = 0; i < f->n_entries && rc == 0; i++)
        rc = read_exact(fp, (char *)f->buffer + order[i]->dest,
                        (size_t)(order[i]->end - order[i]->begin), path, err);
    for (int i = 0; i < f->n_entries; i++)
        f->entries[i].data = (char *)f->buffer + ranges[i].dest;
done:
    free(ranges);
    free(order);
    return rc;
}

int br_st_read(const char *path, br_st_file *f, br_error *err) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return br_errorf(err, "%s: cannot open: %s", path, strerror(errno));

    int rc = 0;
    char *header = NULL;
    json_t *root = NULL;
    struct stat st;
    unsigned char len_bytes[8];
    uint64_t header_len = 0;

    if (fstat(fileno(fp), &st) != 0) {
        rc = br_errorf(err, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = br_errorf(err, "%s: not a regular file", path);
        goto done;
    }
    if (st.st_size < 8) {
        rc = br_errorf(err, "%s: file has %lld bytes, too short for a "
                            "safetensors header", path, (long long)st.st_size);
        goto done;
    }
    if ((rc = read_exact(fp, len_bytes, 8, path, err)) != 0) goto done;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)len_bytes[i] << (8 * i);
    if (header_len > MAX_HEADER_BYTES) {
        rc = br_errorf(err, "%s: header length %llu is implausibly large "
                            "(limit %u)", path, (unsigned long long)header_len,
                       MAX_HEADER_BYTES);
        goto done;
    }
    if (header_len > (uint64_t)st.st_size - 8) {
        rc = br_errorf(err, "%s: header length %llu exceeds the file size %lld",
                       path, (unsigned long long)header_len, (long long)st.st_size);
        goto done;
    }

    header = br_xmalloc((size_t)header_len, err);
    if (!header) {
        rc = br_error_prefix(err, "%s", path);
        goto done;
    }
    if ((rc = read_exact(fp, header, (size_t)header_len, path, err)) != 0) goto done;
    json_error_t jerr;
    /* Duplicate keys would silently shadow a tensor: reject them. */
    root = json_loadb(header, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = br_errorf(err, "%s: header is not valid JSON: %s (at byte %d)", path,
                       jerr.text, jerr.position);
        goto done;
    }
    if (!json_is_object(root)) {
        rc = br_errorf(err, "%s: header is not a JSON object", path);
        goto done;
    }
    if (!(f->path = strdup(path))) {
        rc = br_errorf(err, "%s: out of memory", path);
        goto done;
    }
    rc = load_tensors(fp, path, root, (int64_t)st.st_size - 8 - (int64_t)header_len,
                      f, err);
done:
    json_decref(root);
    free(header);
    fclose(fp);
    if (rc != 0) br_st_free(f);
    return rc;
}

void br_st_free(br_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_entries; i++) free(f->entries[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->entries);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->buffer);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const br_st_entry *br_st_find(const br_st_file *f, const char *name) {
    for (int i = 0; i < f->n_entries; i++)
        if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
    return NULL;
}

const char *br_st_meta_get(const br_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}
