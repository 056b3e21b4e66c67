/* The public API (include/basrec.h) on top of the internal modules.
 *
 * Concurrency design. A backbone keeps its activation workspace inside
 * itself (br_model_reserve), so two forward passes through one backbone at
 * once would overwrite each other. The parameters, on the other hand, are
 * only read by a forward pass and are passed to it separately. A loaded
 * model therefore holds one copy of the parameters and a pool of
 * workspaces, each a backbone of its own (same configuration, same tensor
 * layout, so its tensor indices address the shared parameters) plus the
 * input/output buffers of one sequence. A call takes an idle workspace from
 * the pool under a mutex, or creates one when all are busy, runs without
 * the lock, and puts it back. N concurrent callers thus cost one copy of the
 * weights plus N workspaces of one sequence's activations (tens to hundreds
 * of KiB), instead of N copies of an item table that can be gigabytes. */
#include <errno.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basrec.h"
#include "eval/rank.h"
#include "models/model.h"
#include "train/checkpoint.h"

const char *basrec_version(void) { return BASREC_VERSION; }

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- Models --------------------------------------------------------------- */

typedef struct workspace {
    br_backbone *bb;        /* activations of one sequence of up to max_len tokens */
    float *x, *h;           /* [max_len, dim] input embeddings and outputs */
    int32_t *pos;           /* [max_len] position ids */
    struct workspace *next; /* in the idle list */
    struct workspace *all;  /* in the list of every workspace, for freeing */
} workspace;

struct basrec_model {
    br_model m;           /* parameters (read-only once loaded) */
    pthread_mutex_t lock; /* guards the fields below */
    workspace *idle;
    workspace *all;
    int n_workspaces;
};

static void workspace_free(workspace *w) {
    if (w->bb) w->bb->vt->destroy(w->bb);
    free(w->x);
    free(w->h);
    free(w->pos);
    free(w);
}

/* A backbone over the model's parameters: registering it into a scratch
 * table the way br_model_create does (item table first) gives it the tensor
 * indices it will look up in the shared table; the layout check makes sure
 * they address the same tensors. */
static workspace *workspace_create(const br_model *m, br_error *err) {
    const br_model_config *c = &m->cfg;
    workspace *w = br_xcalloc(1, sizeof *w, err);
    if (!w) return NULL;
    br_params layout;
    memset(&layout, 0, sizeof layout);
    const int64_t shape[2] = {(int64_t)c->n_items + 1, c->dim};
    int ok = (w->bb = br_backbone_create(c, err)) != NULL &&
             br_params_add(&layout, "item_embeddings.weight", 2, shape, err) >= 0 &&
             w->bb->vt->register_params(w->bb, &layout, err) == 0;
    if (ok && layout.n != m->params.n) {
        br_errorf(err, "workspace: the backbone registers %d tensors, the model has %d", layout.n,
                  m->params.n);
        ok = 0;
    }
    for (int i = 0; ok && i < layout.n; i++) {
        if (strcmp(layout.list[i].name, m->params.list[i].name) != 0 ||
            layout.list[i].offset != m->params.list[i].offset) {
            br_errorf(err, "workspace: tensor '%s' is laid out differently", layout.list[i].name);
            ok = 0;
        }
    }
    br_params_free(&layout);
    const size_t rows = (size_t)c->max_len;
    ok = ok && w->bb->vt->reserve(w->bb, c->max_len, 1, err) == 0 &&
         (w->x = br_xmalloc(rows * c->dim * sizeof(float), err)) != NULL &&
         (w->h = br_xmalloc(rows * c->dim * sizeof(float), err)) != NULL &&
         (w->pos = br_xmalloc(rows * sizeof(int32_t), err)) != NULL;
    if (!ok) {
        workspace_free(w);
        return NULL;
    }
    return w;
}

/* An idle workspace, or a new one when all are busy. */
static workspace *workspace_take(basrec_model *bm, br_error *err) {
    pthread_mutex_lock(&bm->lock);
    workspace *w = bm->idle;
    if (w) bm->idle = w->next;
    pthread_mutex_unlock(&bm->lock);
    if (w) return w;
    /* Created outside the lock: other callers need not wait for the malloc. */
    if (!(w = workspace_create(&bm->m, err))) return NULL;
    pthread_mutex_lock(&bm->lock);
    w->all = bm->all;
    bm->all = w;
    bm->n_workspaces++;
    pthread_mutex_unlock(&bm->lock);
    return w;
}

static void workspace_give(basrec_model *bm, workspace *w) {
    pthread_mutex_lock(&bm->lock);
    w->next = bm->idle;
    bm->idle = w;
    pthread_mutex_unlock(&bm->lock);
}

basrec_model *basrec_model_load(const char *checkpoint, char *err, size_t errlen) {
    br_error e;
    if (!checkpoint) {
        set_err(err, errlen, "basrec_model_load: checkpoint is NULL");
        return NULL;
    }
    basrec_model *bm = br_xcalloc(1, sizeof *bm, &e);
    if (!bm) {
        set_err(err, errlen, "%s", e.msg);
        return NULL;
    }
    if (br_checkpoint_load(checkpoint, &bm->m, NULL, 0, NULL, NULL, &e) < 0) {
        set_err(err, errlen, "%s", e.msg);
        free(bm);
        return NULL;
    }
    /* Inference never touches gradients or Adam's moments: 3/4 of the
     * parameter memory, given back. */
    br_params *p = &bm->m.params;
    free(p->grad);
    free(p->adam_m);
    free(p->adam_v);
    p->grad = p->adam_m = p->adam_v = NULL;
    pthread_mutex_init(&bm->lock, NULL);
    /* One workspace now, so a model that cannot run fails here, not on the
     * first request. */
    workspace *w = workspace_take(bm, &e);
    if (!w) {
        set_err(err, errlen, "%s: %s", checkpoint, e.msg);
        basrec_model_free(bm);
        return NULL;
    }
    workspace_give(bm, w);
    return bm;
}

void basrec_model_free(basrec_model *m) {
    if (!m) return;
    for (workspace *w = m->all, *next; w; w = next) {
        next = w->all;
        workspace_free(w);
    }
    pthread_mutex_destroy(&m->lock);
    br_model_free(&m->m);
    free(m);
}

int32_t basrec_model_n_items(const basrec_model *m) { return m->m.cfg.n_items; }
int32_t basrec_model_dim(const basrec_model *m) { return m->m.cfg.dim; }
int32_t basrec_model_max_len(const basrec_model *m) { return m->m.cfg.max_len; }
const char *basrec_model_backbone(const basrec_model *m) { return m->m.cfg.model; }

int basrec_model_workspaces(const basrec_model *m) {
    basrec_model *bm = (basrec_model *)m; /* the pool is not part of the model's value */
    pthread_mutex_lock(&bm->lock);
    int n = bm->n_workspaces;
    pthread_mutex_unlock(&bm->lock);
    return n;
}

/* The representation after a history: the backbone's output at the last of
 * its last max_len items (a one-sequence ragged batch, as in evaluation). */
static const float *encode(const br_model *m, workspace *w, const int32_t *history, int32_t n) {
    const int32_t L = m->cfg.max_len, D = m->cfg.dim;
    const int32_t T = n < L ? n : L;
    const int32_t *items = history + (n - T);
    const float *E = br_model_items(m);
    for (int32_t t = 0; t < T; t++) {
        w->pos[t] = L - T + t;
        memcpy(w->x + (size_t)t * D, E + (size_t)items[t] * D, (size_t)D * sizeof(float));
    }
    const int32_t seq_off[2] = {0, T};
    const br_tokens tok = {1, T, seq_off, w->pos, NULL};
    br_backbone_encode_last(w->bb, &m->params, &tok, w->x, w->h, w->h);
    return w->h;
}

int basrec_recommend(const basrec_model *m, const int32_t *history, int32_t n, int32_t k,
                     int exclude_seen, int32_t *items_out, float *scores_out, char *err,
                     size_t errlen) {
    if (!m || !items_out || !scores_out || (n > 0 && !history)) {
        set_err(err, errlen, "basrec_recommend: %s is NULL",
                !m            ? "the model"
                : !items_out  ? "items_out"
                : !scores_out ? "scores_out"
                              : "history");
        return -1;
    }
    const int32_t n_items = m->m.cfg.n_items;
    if (n < 1) {
        set_err(err, errlen, "the history is empty");
        return -1;
    }
    if (k < 1 || k > n_items) {
        set_err(err, errlen, "k = %d is outside 1..%d (the model's items)", k, n_items);
        return -1;
    }
    for (int32_t i = 0; i < n; i++) {
        if (history[i] < 1 || history[i] > n_items) {
            set_err(err, errlen, "history[%d] = %d is not an item of the model (1..%d)", i,
                    history[i], n_items);
            return -1;
        }
    }
    basrec_model *bm = (basrec_model *)m;
    br_error e;
    workspace *w = workspace_take(bm, &e);
    if (!w) {
        set_err(err, errlen, "%s", e.msg);
        return -1;
    }
    /* The kernels' OpenMP regions would start a thread team per calling
     * thread; one sequence is too little work for that, and concurrent
     * callers already use the cores. The setting is the calling thread's. */
    const int omp_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const float *repr = encode(&m->m, w, history, n);
    const int64_t ex_off[2] = {0, n};
    const br_exclusions ex = {ex_off, history};
    int rc = br_topk(repr, 1, br_model_items(&m->m), n_items, m->m.cfg.dim, k,
                     exclude_seen ? &ex : NULL, items_out, scores_out, &e);
    omp_set_num_threads(omp_threads);
    workspace_give(bm, w);
    if (rc < 0) {
        set_err(err, errlen, "%s", e.msg);
        return -1;
    }
    /* br_topk pads with item 0 when fewer than k items remain. */
    int32_t got = 0;
    while (got < k && items_out[got] != 0) got++;
    return got;
}

/* ---- Id maps -------------------------------------------------------------- */

typedef struct idmap_entry {
    int64_t id;
    const char *original; /* into the map's text */
} idmap_entry;

struct basrec_idmap {
    char *text;         /* the file, lines split in place */
    idmap_entry *by_id; /* sorted by id: binary search */
    int64_t n;
    int64_t *slots; /* open addressing over by_id: index + 1, 0 = empty */
    size_t n_slots; /* power of two, at least twice n */
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

void basrec_idmap_free(basrec_idmap *map) {
    if (!map) return;
    free(map->text);
    free(map->by_id);
    free(map->slots);
    free(map);
}

static int cmp_entry(const void *a, const void *b) {
    const int64_t x = ((const idmap_entry *)a)->id, y = ((const idmap_entry *)b)->id;
    return (x > y) - (x < y);
}

/* Reads the whole file into a NUL-terminated buffer. */
static char *read_file(const char *path, size_t *len, br_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        br_errorf(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = NULL;
    for (;;) {
        char *bigger = realloc(buf, cap);
        if (!bigger) {
            free(buf);
            fclose(fp);
            br_errorf(err, "%s: out of memory", path);
            return NULL;
        }
        buf = bigger;
        n += fread(buf + n, 1, cap - 1 - n, fp);
        if (n < cap - 1) break;
        cap *= 2;
    }
    const int failed = ferror(fp);
    fclose(fp);
    if (failed || memchr(buf, '\0', n)) {
        br_errorf(err, "%s: %s", path,
                  failed ? "read error" : "contains a NUL byte: not a text file");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Original ids end up in JSON, which carries UTF-8 only. */
static int valid_utf8(const unsigned char *s) {
    while (*s) {
        int n = *s < 0x80             ? 0
                : (*s & 0xe0) == 0xc0 ? 1
                : (*s & 0xf0) == 0xe0 ? 2
                : (*s & 0xf8) == 0xf0 ? 3
                                      : -1;
        if (n < 0 || (n == 1 && *s < 0xc2)) return 0;
        const uint32_t lead = *s++;
        uint32_t cp = n == 0 ? lead : lead & (0x3f >> n);
        for (int i = 0; i < n; i++, s++) {
            if ((*s & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (*s & 0x3f);
        }
        /* Overlong forms, surrogates, beyond U+10FFFF. */
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
    }
    return 1;
}

/* Splits "id<TAB>original" lines in place into map->by_id. */
static int parse_lines(basrec_idmap *map, const char *path, size_t len, br_error *err) {
    int64_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += map->text[i] == '\n';
    if (!(map->by_id = br_xmalloc((size_t)cap * sizeof(idmap_entry), err))) return -1;
    char *line = map->text;
    for (int64_t lineno = 1; line < map->text + len; lineno++) {
        char *nl = strchr(line, '\n');
        char *next = nl ? nl + 1 : map->text + len;
        if (nl) *nl = '\0';
        size_t ll = strlen(line);
        if (ll > 0 && line[ll - 1] == '\r') line[--ll] = '\0';
        char *tab = strchr(line, '\t');
        char *end = NULL;
        long long id = 0;
        if (tab) {
            *tab = '\0';
            errno = 0;
            id = strtoll(line, &end, 10);
        }
        const int numeric = tab && end != line && *end == '\0' && !errno && line[0] != '-' &&
                            line[0] != '+' && line[0] != ' ';
        if (ll == 0 || (lineno == 1 && !numeric)) {
            /* A blank line, or the header. */
        } else if (!tab) {
            return br_errorf(err, "%s:%lld: expected 'id<TAB>original id'", path,
                             (long long)lineno);
        } else if (!numeric || id < 1) {
            return br_errorf(err, "%s:%lld: id '%s' is not a positive integer", path,
                             (long long)lineno, line);
        } else if (tab[1] == '\0' || strchr(tab + 1, '\t')) {
            return br_errorf(err, "%s:%lld: expected one non-empty original id after the tab", path,
                             (long long)lineno);
        } else if (!valid_utf8((const unsigned char *)tab + 1)) {
            return br_errorf(err, "%s:%lld: the original id is not valid UTF-8", path,
                             (long long)lineno);
        } else {
            map->by_id[map->n].id = id;
            map->by_id[map->n].original = tab + 1;
            map->n++;
        }
        line = next;
    }
    return 0;
}

/* Sorts by id and builds the hash of original ids; duplicates are errors. */
static int index_entries(basrec_idmap *map, const char *path, br_error *err) {
    qsort(map->by_id, (size_t)map->n, sizeof(idmap_entry), cmp_entry);
    for (int64_t i = 1; i < map->n; i++) {
        if (map->by_id[i].id == map->by_id[i - 1].id)
            return br_errorf(err, "%s: id %lld is listed twice", path, (long long)map->by_id[i].id);
    }
    map->n_slots = 16;
    while (map->n_slots < 2 * (size_t)map->n) map->n_slots *= 2;
    if (!(map->slots = br_xcalloc(map->n_slots, sizeof(int64_t), err))) return -1;
    for (int64_t i = 0; i < map->n; i++) {
        const char *s = map->by_id[i].original;
        size_t h = (size_t)hash_str(s) & (map->n_slots - 1);
        for (; map->slots[h]; h = (h + 1) & (map->n_slots - 1)) {
            if (strcmp(map->by_id[map->slots[h] - 1].original, s) == 0)
                return br_errorf(err, "%s: original id '%s' is listed twice", path, s);
        }
        map->slots[h] = i + 1;
    }
    return 0;
}

basrec_idmap *basrec_idmap_load(const char *path, char *err, size_t errlen) {
    br_error e;
    if (!path) {
        set_err(err, errlen, "basrec_idmap_load: path is NULL");
        return NULL;
    }
    basrec_idmap *map = br_xcalloc(1, sizeof *map, &e);
    size_t len = 0;
    if (!map || !(map->text = read_file(path, &len, &e)) || parse_lines(map, path, len, &e) < 0 ||
        index_entries(map, path, &e) < 0) {
        set_err(err, errlen, "%s", e.msg);
        basrec_idmap_free(map);
        return NULL;
    }
    if (map->n == 0) {
        set_err(err, errlen, "%s: no ids", path);
        basrec_idmap_free(map);
        return NULL;
    }
    return map;
}

int64_t basrec_idmap_size(const basrec_idmap *map) { return map->n; }

int64_t basrec_idmap_id(const basrec_idmap *map, const char *original) {
    size_t h = (size_t)hash_str(original) & (map->n_slots - 1);
    for (; map->slots[h]; h = (h + 1) & (map->n_slots - 1)) {
        const idmap_entry *e = &map->by_id[map->slots[h] - 1];
        if (strcmp(e->original, original) == 0) return e->id;
    }
    return -1;
}

const char *basrec_idmap_original(const basrec_idmap *map, int64_t id) {
    int64_t lo = 0, hi = map->n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (map->by_id[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < map->n && map->by_id[lo].id == id ? map->by_id[lo].original : NULL;
}
