/* Sequence file loading: one read of the whole file, a hand-written integer
 * scanner (sscanf per token is several times slower), CSR arrays grown by
 * doubling, then the per-row sorted copy and the user-id index. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/dataset.h"

#define MIN_SEQ_LEN 3
/* Longest token echoed back in an error message. */
#define MAX_SHOWN_TOKEN 40

static int read_whole_file(const char *path, char **out, size_t *out_len, br_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return br_errorf(err, "%s: cannot open: %s", path, strerror(errno));

    /* Size the buffer from fstat so a regular file is read in one go; the
     * loop still handles pipes and files that grow meanwhile. */
    struct stat st;
    size_t cap = 1 << 16;
    if (fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 1;
    char *buf = br_xmalloc(cap, err);
    if (!buf) {
        fclose(fp);
        return -1;
    }
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                fclose(fp);
                return br_errorf(err, "%s: out of memory reading the file", path);
            }
            buf = bigger;
            cap *= 2;
        }
        size_t want = cap - len;
        size_t got = fread(buf + len, 1, want, fp);
        len += got;
        if (got < want) break;
    }
    if (ferror(fp)) {
        int e = errno;
        free(buf);
        fclose(fp);
        return br_errorf(err, "%s: cannot read: %s", path, strerror(e));
    }
    fclose(fp);
    *out = buf;
    *out_len = len;
    return 0;
}

static uint64_t fnv1a64(const char *data, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)data[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Ensures room for need elements, doubling so appends stay amortised O(1). */
static int reserve(void **arr, int64_t *cap, int64_t need, size_t elem, const char *path,
                   br_error *err) {
    if (need <= *cap) return 0;
    int64_t new_cap = *cap < 1024 ? 1024 : *cap * 2;
    if (new_cap < need) new_cap = need;
    void *p = realloc(*arr, (size_t)new_cap * elem);
    if (!p) return br_errorf(err, "%s: out of memory", path);
    *arr = p;
    *cap = new_cap;
    return 0;
}

/* Copies a token for an error message: truncated, non-printables as '?'. */
static void show_token(char dst[MAX_SHOWN_TOKEN + 4], const char *s, const char *e) {
    size_t n = (size_t)(e - s), shown = n < MAX_SHOWN_TOKEN ? n : MAX_SHOWN_TOKEN;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (shown < n) {
        memcpy(dst + shown, "...", 4);
    } else {
        dst[shown] = '\0';
    }
}

/* Parses the decimal token [s, e) as an id in 1..max. what names it in
 * messages ("user id", "item id"). */
static int parse_id(const char *s, const char *e, int64_t max, const char *what,
                    const char *path, int64_t line, int64_t *out, br_error *err) {
    /* 19 significant digits always fit a uint64, so only longer tokens need
     * an overflow test, and that test does not depend on the value. */
    uint64_t v = 0;
    int significant = 0;
    for (const char *c = s; c < e; c++) {
        unsigned d = (unsigned)((unsigned char)*c - '0');
        if (d > 9) {
            char tok[MAX_SHOWN_TOKEN + 4];
            show_token(tok, s, e);
            return br_errorf(err, "%s:%" PRId64 ": token '%s' is not a positive integer", path,
                             line, tok);
        }
        if (v != 0 || d != 0) significant++;
        if (significant <= 19) v = v * 10 + d;
    }
    if (significant > 19 || v > (uint64_t)max) {
        char tok[MAX_SHOWN_TOKEN + 4];
        show_token(tok, s, e);
        return br_errorf(err, "%s:%" PRId64 ": %s %s is too large (max %" PRId64 ")", path, line,
                         what, tok, max);
    }
    if (v == 0) return br_errorf(err, "%s:%" PRId64 ": %s 0 must be >= 1", path, line, what);
    *out = (int64_t)v;
    return 0;
}

static inline bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* Fills the CSR arrays of ds (path already set) from the file's bytes. */
static int parse_lines(br_dataset *ds, const char *buf, size_t len, br_error *err) {
    const char *path = ds->path;
    int64_t offsets_cap = 0, ids_cap = 0, items_cap = 0, n_rows = 0, n_inter = 0;
    int32_t max_item = 0;
    const char *p = buf, *end = buf + len;

    while (p < end) {
        int64_t line = n_rows + 1; /* empty lines are errors, so row r is line r+1 */
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *lend = eol;
        if (lend > p && lend[-1] == '\r') lend--;

        const char *c = p;
        while (c < lend && is_blank(*c)) c++;
        if (c == lend) return br_errorf(err, "%s:%" PRId64 ": empty line", path, line);
        if (n_rows == INT32_MAX)
            return br_errorf(err, "%s:%" PRId64 ": too many sequences (max %d)", path, line,
                             INT32_MAX);

        /* +2: offsets needs the closing entry n_users. */
        if (reserve((void **)&ds->offsets, &offsets_cap, n_rows + 2, sizeof *ds->offsets, path,
                    err) ||
            reserve((void **)&ds->user_ids, &ids_cap, n_rows + 1, sizeof *ds->user_ids, path,
                    err))
            return -1;
        const char *tok = c;
        while (c < lend && !is_blank(*c)) c++;
        int64_t user_id;
        if (parse_id(tok, c, INT64_MAX, "user id", path, line, &user_id, err)) return -1;

        int64_t row_start = n_inter;
        for (;;) {
            while (c < lend && is_blank(*c)) c++;
            if (c == lend) break;
            tok = c;
            while (c < lend && !is_blank(*c)) c++;
            int64_t item;
            if (parse_id(tok, c, BR_MAX_ITEM_ID, "item id", path, line, &item, err)) return -1;
            if (n_inter == items_cap &&
                reserve((void **)&ds->items, &items_cap, n_inter + 1, sizeof *ds->items, path,
                        err))
                return -1;
            ds->items[n_inter++] = (int32_t)item;
            if (item > max_item) max_item = (int32_t)item;
        }
        int64_t count = n_inter - row_start;
        if (count < MIN_SEQ_LEN)
            return br_errorf(err, "%s:%" PRId64 ": user %" PRId64 " has %" PRId64 " item%s; at "
                                  "least %d are needed",
                             path, line, user_id, count, count == 1 ? "" : "s", MIN_SEQ_LEN);
        ds->offsets[n_rows] = row_start;
        ds->user_ids[n_rows] = user_id;
        n_rows++;
        p = eol < end ? eol + 1 : end;
    }
    if (n_rows == 0) return br_errorf(err, "%s: no sequences", path);

    ds->offsets[n_rows] = n_inter;
    ds->n_users = (int32_t)n_rows;
    ds->n_items = max_item;
    ds->n_interactions = n_inter;
    /* Give back the doubling slack: datasets live for the whole run. */
    int32_t *fit = realloc(ds->items, (size_t)n_inter * sizeof *ds->items);
    if (fit) ds->items = fit;
    return 0;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int64_t id;
    int32_t row;
} user_key;

static int cmp_user_key(const void *a, const void *b) {
    const user_key *x = a, *y = b;
    if (x->id != y->id) return (x->id > y->id) - (x->id < y->id);
    return (x->row > y->row) - (x->row < y->row);
}

/* Sorts rows by user id into ds->user_order and rejects duplicates, naming
 * the earliest line that repeats an id. */
static int build_user_index(br_dataset *ds, br_error *err) {
    int32_t n = ds->n_users;
    user_key *keys = br_xmalloc((size_t)n * sizeof *keys, err);
    ds->user_order = br_xmalloc((size_t)n * sizeof *ds->user_order, err);
    if (!keys || !ds->user_order) {
        free(keys);
        return -1;
    }
    for (int32_t r = 0; r < n; r++) keys[r] = (user_key){ds->user_ids[r], r};
    qsort(keys, (size_t)n, sizeof *keys, cmp_user_key);

    int32_t dup_row = -1, first_row = -1;
    for (int32_t i = 0; i < n; i++) {
        ds->user_order[i] = keys[i].row;
        /* Keys tie-break by row, so the first repeat of an id directly
         * follows its first occurrence. */
        bool first_repeat = i > 0 && keys[i].id == keys[i - 1].id &&
                            (i < 2 || keys[i - 2].id != keys[i].id);
        if (first_repeat && (dup_row < 0 || keys[i].row < dup_row)) {
            dup_row = keys[i].row;
            first_row = keys[i - 1].row;
        }
    }
    free(keys);
    if (dup_row >= 0)
        return br_errorf(err, "%s:%d: duplicate user id %" PRId64 " (first on line %d)",
                         ds->path, dup_row + 1, ds->user_ids[dup_row], first_row + 1);
    return 0;
}

static int build_sorted_items(br_dataset *ds, br_error *err) {
    size_t bytes = (size_t)ds->n_interactions * sizeof *ds->sorted_items;
    ds->sorted_items = br_xmalloc(bytes, err);
    if (!ds->sorted_items) return -1;
    memcpy(ds->sorted_items, ds->items, bytes);
    for (int32_t u = 0; u < ds->n_users; u++)
        qsort(ds->sorted_items + ds->offsets[u], (size_t)br_seq_len(ds, u),
              sizeof *ds->sorted_items, cmp_i32);
    return 0;
}

int br_dataset_load(const char *path, br_dataset *ds, br_error *err) {
    memset(ds, 0, sizeof *ds);
    char *buf = NULL;
    size_t len = 0;
    if (read_whole_file(path, &buf, &len, err)) return -1;

    /* Build into a local struct so a failure leaves *ds zeroed and nothing
     * allocated. */
    br_dataset d = {0};
    d.fingerprint = fnv1a64(buf, len);
    d.path = br_xmalloc(strlen(path) + 1, err);
    int rc = d.path ? 0 : -1;
    if (rc == 0) {
        strcpy(d.path, path);
        rc = parse_lines(&d, buf, len, err);
    }
    free(buf);
    if (rc == 0) rc = build_user_index(&d, err);
    if (rc == 0) rc = build_sorted_items(&d, err);
    if (rc != 0) {
        br_dataset_free(&d);
        return -1;
    }
    *ds = d;
    return 0;
}

void br_dataset_free(br_dataset *ds) {
    if (!ds) return;
    free(ds->path);
    free(ds->offsets);
    free(ds->items);
    free(ds->user_ids);
    free(ds->sorted_items);
    free(ds->user_order);
    memset(ds, 0, sizeof *ds);
}

int32_t br_dataset_find_user(const br_dataset *ds, int64_t user_id) {
    int32_t lo = 0, hi = ds->n_users;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (ds->user_ids[ds->user_order[mid]] < user_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < ds->n_users && ds->user_ids[ds->user_order[lo]] == user_id)
        return ds->user_order[lo];
    return -1;
}

bool br_dataset_contains(const br_dataset *ds, int32_t u, int32_t item) {
    const int32_t *row = ds->sorted_items + ds->offsets[u];
    int32_t lo = 0, hi = br_seq_len(ds, u);
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (row[mid] < item)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < br_seq_len(ds, u) && row[lo] == item;
}
