/* Full ranking and top-k retrieval by blocked GEMM (see rank.h).
 *
 * Scores are computed only by score_tile(): one cblas_sgemm per (user block x
 * item block) tile, with the same blocking in br_rank_answers and br_topk, so
 * both see bit-identical scores and agree exactly on ties. The answer's score
 * is read from its own tile too, never recomputed with other arithmetic.
 *
 * Parallelism: OpenMP threads take whole user blocks (one thread owns each
 * user's count, so results do not depend on scheduling); OpenBLAS runs single
 * threaded inside the region. With a single user block the region is
 * inactive and OpenBLAS uses its own threads for the GEMM instead. */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "eval/rank.h"

const int br_cutoffs[BR_N_CUTOFFS] = {5, 10, 20};

enum {
    USER_BLOCK = 256,  /* users per tile */
    ITEM_BLOCK = 4096, /* items per tile: a 256 x 4096 tile is 4 MiB per thread */
    SCAN_CHUNK = 64,   /* vectorised pre-check granularity of the scans */
    BAND_CAP = 64,     /* undecided scores kept per user, see rank_deferred() */
};

static int32_t min_i32(int64_t a, int64_t b) { return (int32_t)(a < b ? a : b); }

/* Item block b holds items first_item(b) .. first_item(b) + block_len(b) - 1. */
static int32_t first_item(int32_t b) { return 1 + b * ITEM_BLOCK; }
static int32_t block_len(int32_t b, int32_t n_items) {
    return min_i32(ITEM_BLOCK, (int64_t)n_items - (int64_t)b * ITEM_BLOCK);
}
static int32_t n_item_blocks(int32_t n_items) { return (n_items - 1) / ITEM_BLOCK + 1; }

/* tile[r][j] = users[r] . item_emb[first + j]; the only source of scores. */
static void score_tile(const float *users, int32_t n_rows, const float *item_emb,
                       int32_t first, int32_t len, int32_t dim, float *tile) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_rows, len, dim, 1.0f, users, dim,
                item_emb + (size_t)first * dim, dim, 0.0f, tile, len);
}

static int32_t count_gt(const float *s, int32_t n, float thr) {
    int32_t c = 0;
#pragma omp simd reduction(+ : c)
    for (int32_t j = 0; j < n; j++) c += s[j] > thr;
    return c;
}

static int32_t count_ge(const float *s, int32_t n, float thr) {
    int32_t c = 0;
#pragma omp simd reduction(+ : c)
    for (int32_t j = 0; j < n; j++) c += s[j] >= thr;
    return c;
}

/* ---- Exclusion lists ---------------------------------------------------- */

/* Per-user lists sorted ascending, deduplicated and without item 0 or the
 * user's answer, so each listed item is removed exactly once and the items of
 * an item block form a contiguous run. */
typedef struct sorted_excl {
    int64_t *off; /* n_users + 1 */
    int32_t *items;
} sorted_excl;

static void sorted_excl_free(sorted_excl *s) {
    free(s->off);
    free(s->items);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int sort_exclusions(const br_exclusions *excl, int32_t n_users, int32_t n_items,
                           const int32_t *answer, sorted_excl *out, br_error *err) {
    out->items = NULL;
    out->off = br_xcalloc((size_t)n_users + 1, sizeof(int64_t), err);
    if (!out->off) return -1;
    if (!excl) {
        out->items = br_xmalloc(0, err);
        if (out->items) return 0;
        sorted_excl_free(out);
        return -1;
    }
    const int64_t *off = excl->offsets;
    if (!off) {
        sorted_excl_free(out);
        return br_errorf(err, "exclusions: offsets is NULL");
    }
    for (int32_t u = 0; u < n_users; u++) {
        if (off[u] < 0 || off[u + 1] < off[u]) {
            sorted_excl_free(out);
            return br_errorf(err, "exclusions: offsets[%d..%d] = %lld..%lld is not a valid range",
                             u, u + 1, (long long)off[u], (long long)off[u + 1]);
        }
    }
    const int64_t total = off[n_users] - off[0];
    if (total > 0 && !excl->items) {
        sorted_excl_free(out);
        return br_errorf(err, "exclusions: items is NULL");
    }
    for (int32_t u = 0; u < n_users; u++) {
        for (int64_t p = off[u]; p < off[u + 1]; p++) {
            int32_t it = excl->items[p];
            if (it < 0 || it > n_items) {
                sorted_excl_free(out);
                return br_errorf(err, "exclusions: user %d excludes item %d outside 0..%d", u,
                                 it, n_items);
            }
        }
    }
    out->items = br_xmalloc((size_t)total * sizeof(int32_t), err);
    if (!out->items) {
        sorted_excl_free(out);
        return -1;
    }
    memcpy(out->items, excl->items + off[0], (size_t)total * sizeof(int32_t));

    /* Sort and filter each row in place (out->off[u + 1] gets its new length),
     * then compact the rows. */
#pragma omp parallel for schedule(dynamic, 256)
    for (int32_t u = 0; u < n_users; u++) {
        int32_t *row = out->items + (off[u] - off[0]);
        const int64_t n = off[u + 1] - off[u];
        qsort(row, (size_t)n, sizeof(int32_t), cmp_i32);
        const int32_t skip = answer ? answer[u] : 0;
        int64_t kept = 0;
        for (int64_t p = 0; p < n; p++) {
            if (row[p] == 0 || row[p] == skip || (kept > 0 && row[kept - 1] == row[p])) continue;
            row[kept++] = row[p];
        }
        out->off[u + 1] = kept;
    }
    int64_t pos = 0;
    for (int32_t u = 0; u < n_users; u++) {
        const int64_t kept = out->off[u + 1];
        memmove(out->items + pos, out->items + (off[u] - off[0]), (size_t)kept * sizeof(int32_t));
        out->off[u] = pos;
        pos += kept;
    }
    out->off[n_users] = pos;
    return 0;
}

/* Advances *pos past user u's excluded items below `end` (exclusive) and
 * returns where they started: they are ex->items[start .. *pos). */
static int64_t take_excluded(const sorted_excl *ex, int32_t u, int64_t *pos, int32_t end) {
    const int64_t start = *pos, stop = ex->off[u + 1];
    while (*pos < stop && ex->items[*pos] < end) (*pos)++;
    return start;
}

/* ---- Shared argument checks -------------------------------------------- */

static int check_common(const char *fn, const float *user_repr, int32_t n_users,
                        const float *item_emb, int32_t n_items, int32_t dim, br_error *err) {
    if (n_users < 0) return br_errorf(err, "%s: n_users = %d is negative", fn, n_users);
    if (n_items < 1) return br_errorf(err, "%s: n_items = %d, need at least 1", fn, n_items);
    if (dim < 1) return br_errorf(err, "%s: dim = %d, need at least 1", fn, dim);
    if (n_users > 0 && !user_repr) return br_errorf(err, "%s: user_repr is NULL", fn);
    if (!item_emb) return br_errorf(err, "%s: item_emb is NULL", fn);
    return 0;
}

/* Threads to use: one per user block at most. */
static int n_workers_for(int32_t n_user_blocks) {
    int t = omp_get_max_threads();
    return t < n_user_blocks ? t : n_user_blocks;
}

/* ---- br_rank_answers ----------------------------------------------------- */

/* rank = #{non-excluded j != a : s_j > s_a, or s_j == s_a and j < a}.
 *
 * Blocks are scanned in item order, so for blocks before the answer's block
 * s_a (read from the answer's tile) is not known yet. There we compare with a
 * band [lo, hi] that surely contains s_a: scores above hi count, scores below
 * lo do not, and the rare scores inside the band are kept (every such item has
 * j < a, so it counts iff s_j >= s_a) and settled once s_a is read. If more
 * than BAND_CAP pile up (massive ties), the user is marked for an exact
 * recount of those blocks after the pass, recomputing the identical tiles. */
typedef struct user_state {
    int64_t count;   /* settled part of the rank */
    int64_t ex_pos;  /* cursor into the user's sorted exclusions */
    float lo, hi;    /* band around s_a, used before the answer's block */
    float s_ans;     /* answer score, from the answer's tile */
    int32_t ans_block;
    int32_t n_band;  /* undecided scores kept in the user's band buffer */
    int recount;     /* band overflowed: pre-answer blocks are recounted */
} user_state;

/* Bounds that surely contain the GEMM's float value of u . a: any float dot
 * product of length d, in any order and with or without FMA, lies within
 * gamma_d * sum |u_k a_k| of the exact value (gamma_d = d 2^-24 / (1 - d
 * 2^-24)); the double sum t is far closer. We take twice that, plus a margin
 * for underflow, then round outwards to float. */
static void answer_band(const float *u, const float *a, int32_t dim, float *lo, float *hi) {
    double t = 0.0, m = 0.0;
    for (int32_t k = 0; k < dim; k++) {
        const double p = (double)u[k] * a[k];
        t += p;
        m += fabs(p);
    }
    const double eps = m * (dim + 2.0) * 0x1p-23 + (dim + 1.0) * 0x1p-125;
    const double h = t + eps, l = t - eps;
    if (!(fabs(h) <= FLT_MAX && fabs(l) <= FLT_MAX) || dim > (1 << 20)) {
        /* No usable bound: everything is undecided, which ends in a recount. */
        *lo = -INFINITY;
        *hi = INFINITY;
        return;
    }
    float hf = (float)h, lf = (float)l;
    if (hf < h) hf = nextafterf(hf, INFINITY);
    if (lf > l) lf = nextafterf(lf, -INFINITY);
    *lo = lf;
    *hi = hf;
}

/* Drops one kept score equal to s (the one an excluded item added). */
static void band_remove(float *band, int32_t *n_band, float s) {
    for (int32_t i = 0; i < *n_band; i++) {
        if (band[i] == s) {
            band[i] = band[--*n_band];
            return;
        }
    }
}

/* A block entirely before the answer's block (all its items have j < a). */
static void rank_deferred(const float *row, int32_t len, int32_t first, const int32_t *ex,
                          int64_t n_ex, user_state *st, float *band) {
    const float lo = st->lo, hi = st->hi;
    int64_t above = 0;
    for (int32_t c0 = 0; c0 < len; c0 += SCAN_CHUNK) {
        const float *s = row + c0;
        const int32_t n = min_i32(SCAN_CHUNK, len - c0);
        int32_t n_hi = 0, n_lo = 0;
#pragma omp simd reduction(+ : n_hi, n_lo)
        for (int32_t j = 0; j < n; j++) {
            n_hi += s[j] > hi;
            n_lo += s[j] >= lo;
        }
        above += n_hi;
        if (n_lo == n_hi) continue;
        for (int32_t j = 0; j < n; j++) {
            if (!(s[j] >= lo && s[j] <= hi)) continue;
            if (st->n_band == BAND_CAP) {
                st->recount = 1;
                st->count = 0;
                st->n_band = 0;
                return;
            }
            band[st->n_band++] = s[j];
        }
    }
    for (int64_t i = 0; i < n_ex; i++) {
        const float s = row[ex[i] - first];
        if (s > hi) above--;
        else if (s >= lo) band_remove(band, &st->n_band, s);
    }
    st->count += above;
}

/* The answer's block: reads s_a, settles the band, counts this block. */
static void rank_answer_block(const float *row, int32_t len, int32_t first, int32_t a,
                              const int32_t *ex, int64_t n_ex, user_state *st,
                              const float *band) {
    const int32_t ia = a - first;
    const float s_a = row[ia];
    st->s_ans = s_a;
    if (!st->recount) st->count += count_ge(band, st->n_band, s_a);
    st->n_band = 0;
    st->count += count_ge(row, ia, s_a) + count_gt(row + ia + 1, len - ia - 1, s_a);
    for (int64_t i = 0; i < n_ex; i++) {
        const float s = row[ex[i] - first];
        st->count -= ex[i] < a ? s >= s_a : s > s_a;
    }
}

/* A block after the answer's block (all its items have j > a). */
static void rank_after(const float *row, int32_t len, int32_t first, const int32_t *ex,
                       int64_t n_ex, user_state *st) {
    st->count += count_gt(row, len, st->s_ans);
    for (int64_t i = 0; i < n_ex; i++) st->count -= row[ex[i] - first] > st->s_ans;
}

/* Exact count of a block before the answer's block, once s_a is known. */
static void rank_recount(const float *row, int32_t len, int32_t first, const int32_t *ex,
                         int64_t n_ex, user_state *st) {
    st->count += count_ge(row, len, st->s_ans);
    for (int64_t i = 0; i < n_ex; i++) st->count -= row[ex[i] - first] >= st->s_ans;
}

typedef struct rank_job {
    const float *user_repr, *item_emb;
    int32_t n_users, n_items, dim;
    const int32_t *answer;
    const sorted_excl *ex;
    int64_t *rank_out;
} rank_job;

static void rank_user_block(const rank_job *job, int32_t u0, float *tile, float *bands,
                            user_state *st) {
    const int32_t rows = min_i32(USER_BLOCK, job->n_users - u0), dim = job->dim;
    const int32_t n_blocks = n_item_blocks(job->n_items);
    const float *users = job->user_repr + (size_t)u0 * dim;
    for (int32_t r = 0; r < rows; r++) {
        const int32_t u = u0 + r, a = job->answer[u];
        st[r] = (user_state){.ex_pos = job->ex->off[u], .ans_block = (a - 1) / ITEM_BLOCK};
        answer_band(users + (size_t)r * dim, job->item_emb + (size_t)a * dim, dim, &st[r].lo,
                    &st[r].hi);
    }
    for (int32_t b = 0; b < n_blocks; b++) {
        const int32_t first = first_item(b), len = block_len(b, job->n_items);
        score_tile(users, rows, job->item_emb, first, len, dim, tile);
        for (int32_t r = 0; r < rows; r++) {
            const float *row = tile + (size_t)r * len;
            const int64_t ex0 = take_excluded(job->ex, u0 + r, &st[r].ex_pos, first + len);
            const int32_t *ex = job->ex->items + ex0;
            const int64_t n_ex = st[r].ex_pos - ex0;
            float *band = bands + (size_t)r * BAND_CAP;
            if (b < st[r].ans_block) {
                if (!st[r].recount) rank_deferred(row, len, first, ex, n_ex, &st[r], band);
            } else if (b == st[r].ans_block) {
                rank_answer_block(row, len, first, job->answer[u0 + r], ex, n_ex, &st[r], band);
            } else {
                rank_after(row, len, first, ex, n_ex, &st[r]);
            }
        }
    }

    int32_t recount_blocks = 0; /* blocks 0 .. recount_blocks-1 need a recount */
    for (int32_t r = 0; r < rows; r++) {
        if (!st[r].recount) continue;
        st[r].ex_pos = job->ex->off[u0 + r];
        if (st[r].ans_block > recount_blocks) recount_blocks = st[r].ans_block;
    }
    for (int32_t b = 0; b < recount_blocks; b++) {
        const int32_t first = first_item(b), len = block_len(b, job->n_items);
        score_tile(users, rows, job->item_emb, first, len, dim, tile);
        for (int32_t r = 0; r < rows; r++) {
            if (!st[r].recount || b >= st[r].ans_block) continue;
            const int64_t ex0 = take_excluded(job->ex, u0 + r, &st[r].ex_pos, first + len);
            rank_recount(tile + (size_t)r * len, len, first, job->ex->items + ex0,
                         st[r].ex_pos - ex0, &st[r]);
        }
    }

    for (int32_t r = 0; r < rows; r++) {
        const int32_t u = u0 + r;
        /* A NaN answer score compares false with everything; rank it last so
         * that a diverged model scores zero instead of perfect. */
        const int64_t n_excluded = job->ex->off[u + 1] - job->ex->off[u];
        job->rank_out[u] = isnan(st[r].s_ans) ? job->n_items - n_excluded - 1 : st[r].count;
    }
}

int br_rank_answers(const float *user_repr, int32_t n_users, const float *item_emb,
                    int32_t n_items, int32_t dim, const int32_t *answer,
                    const br_exclusions *excl, int64_t *rank_out, br_error *err) {
    static const char fn[] = "br_rank_answers";
    if (check_common(fn, user_repr, n_users, item_emb, n_items, dim, err) < 0) return -1;
    if (n_users > 0 && (!answer || !rank_out))
        return br_errorf(err, "%s: %s is NULL", fn, answer ? "rank_out" : "answer");
    for (int32_t u = 0; u < n_users; u++) {
        if (answer[u] < 1 || answer[u] > n_items)
            return br_errorf(err, "%s: answer[%d] = %d is outside 1..%d", fn, u, answer[u],
                             n_items);
    }
    if (n_users == 0) return 0;

    sorted_excl ex;
    if (sort_exclusions(excl, n_users, n_items, answer, &ex, err) < 0)
        return br_error_prefix(err, "%s", fn);
    const int32_t n_user_blocks = (n_users - 1) / USER_BLOCK + 1;
    const int n_workers = n_workers_for(n_user_blocks);
    const size_t tile_floats = (size_t)min_i32(USER_BLOCK, n_users) * min_i32(ITEM_BLOCK, n_items);
    float *tiles = br_xmalloc((size_t)n_workers * tile_floats * sizeof(float), err);
    float *bands = br_xmalloc((size_t)n_workers * USER_BLOCK * BAND_CAP * sizeof(float), err);
    user_state *states = br_xmalloc((size_t)n_workers * USER_BLOCK * sizeof(user_state), err);
    if (!tiles || !bands || !states) {
        free(tiles);
        free(bands);
        free(states);
        sorted_excl_free(&ex);
        return br_error_prefix(err, "%s", fn);
    }
    const rank_job job = {user_repr, item_emb, n_users, n_items, dim, answer, &ex, rank_out};
#pragma omp parallel for num_threads(n_workers) schedule(dynamic, 1)
    for (int32_t ub = 0; ub < n_user_blocks; ub++) {
        const int w = omp_get_thread_num();
        rank_user_block(&job, ub * USER_BLOCK, tiles + (size_t)w * tile_floats,
                        bands + (size_t)w * USER_BLOCK * BAND_CAP, states + (size_t)w * USER_BLOCK);
    }
    free(tiles);
    free(bands);
    free(states);
    sorted_excl_free(&ex);
    return 0;
}

/* ---- br_metrics_from_ranks ---------------------------------------------- */

/* Adds an answer at 0-based rank r to m's sums, counted with weight share. */
static void add_rank(br_metrics *m, int64_t r, double share) {
    m->mrr += share / ((double)r + 1.0);
    for (int c = 0; c < BR_N_CUTOFFS; c++) {
        if (r >= br_cutoffs[c]) continue;
        m->hr[c] += share;
        m->ndcg[c] += share / log2((double)r + 2.0);
    }
}

/* Turns m's sums over n users into means. */
static void metrics_mean(br_metrics *m, int64_t n) {
    for (int c = 0; c < BR_N_CUTOFFS; c++) {
        m->hr[c] /= (double)n;
        m->ndcg[c] /= (double)n;
    }
    m->mrr /= (double)n;
    m->n = n;
}

void br_metrics_from_ranks(const int64_t *rank, int64_t n, br_metrics *m) {
    memset(m, 0, sizeof *m);
    if (n <= 0) return;
    for (int64_t i = 0; i < n; i++) add_rank(m, rank[i], 1.0);
    metrics_mean(m, n);
}

/* ---- br_metrics_zero_scored --------------------------------------------- */

/* Adds to m the metrics of an answer with gt items above it and eq tied with
 * it, averaged over its eq + 1 possible places. */
static void add_tied_rank(br_metrics *m, int64_t gt, int64_t eq) {
    for (int64_t r = gt; r <= gt + eq; r++) add_rank(m, r, 1.0 / ((double)eq + 1.0));
}

int br_metrics_zero_scored(const float *user_repr, int32_t n_users, const float *item_emb,
                           int32_t n_items, int32_t dim, const int32_t *answer,
                           const br_exclusions *excl, br_metrics *out, br_error *err) {
    static const char fn[] = "br_metrics_zero_scored";
    memset(out, 0, sizeof *out);
    if (check_common(fn, user_repr, n_users, item_emb, n_items, dim, err) < 0) return -1;
    if (n_users > 0 && !answer) return br_errorf(err, "%s: answer is NULL", fn);
    for (int32_t u = 0; u < n_users; u++)
        if (answer[u] < 1 || answer[u] > n_items)
            return br_errorf(err, "%s: answer[%d] = %d is outside 1..%d", fn, u, answer[u], n_items);
    if (n_users == 0) return 0;
    sorted_excl ex; /* the answer stays in its user's list: a repeat scores 0 */
    if (sort_exclusions(excl, n_users, n_items, NULL, &ex, err) < 0) return br_error_prefix(err, "%s", fn);
    /* Item blocks start at item 0 here: the padding row is ranked too. */
    const int32_t n_rows = n_items + 1, n_blocks = (n_rows - 1) / ITEM_BLOCK + 1;
    const int32_t n_user_blocks = (n_users - 1) / USER_BLOCK + 1;
    const int n_workers = n_workers_for(n_user_blocks);
    const size_t tile_floats = (size_t)min_i32(USER_BLOCK, n_users) * min_i32(ITEM_BLOCK, n_rows);
    float *tiles = br_xmalloc((size_t)n_workers * tile_floats * sizeof(float), err);
    int64_t *gt = br_xcalloc((size_t)n_users, sizeof(int64_t), err);
    int64_t *eq = br_xcalloc((size_t)n_users, sizeof(int64_t), err);
    if (!tiles || !gt || !eq) {
        free(tiles);
        free(gt);
        free(eq);
        sorted_excl_free(&ex);
        return br_error_prefix(err, "%s", fn);
    }
#pragma omp parallel for num_threads(n_workers) schedule(dynamic, 1)
    for (int32_t ub = 0; ub < n_user_blocks; ub++) {
        float *tile = tiles + (size_t)omp_get_thread_num() * tile_floats;
        const int32_t u0 = ub * USER_BLOCK, rows = min_i32(USER_BLOCK, (int64_t)n_users - u0);
        const float *users = user_repr + (size_t)u0 * dim;
        float s_ans[USER_BLOCK];
        int64_t ex_pos[USER_BLOCK];
        for (int32_t r = 0; r < rows; r++) {
            const int32_t u = u0 + r, a = answer[u];
            const int32_t *row = ex.items + ex.off[u];
            const int repeat = bsearch(&a, row, (size_t)(ex.off[u + 1] - ex.off[u]), sizeof(int32_t), cmp_i32) != NULL;
            float s = 0.0f;
            for (int32_t d = 0; d < dim && !repeat; d++) s += users[(size_t)r * dim + d] * item_emb[(size_t)a * dim + d];
            s_ans[r] = s;
            ex_pos[r] = ex.off[u];
            if (isnan(s)) gt[u] = -1; /* a diverged model: a miss, not a perfect rank */
        }
        for (int32_t b = 0; b < n_blocks; b++) {
            const int32_t first = b * ITEM_BLOCK, len = min_i32(ITEM_BLOCK, (int64_t)n_rows - first);
            score_tile(users, rows, item_emb, first, len, dim, tile);
            for (int32_t r = 0; r < rows; r++) {
                const int32_t u = u0 + r;
                if (gt[u] < 0) continue;
                float *sc = tile + (size_t)r * len;
                /* Excluded items score 0; the answer is not compared with itself. */
                const int64_t ex0 = take_excluded(&ex, u, &ex_pos[r], first + len);
                for (int64_t p = ex0; p < ex_pos[r]; p++) sc[ex.items[p] - first] = 0.0f;
                if (answer[u] >= first && answer[u] < first + len) sc[answer[u] - first] = NAN;
                const int32_t above = count_gt(sc, len, s_ans[r]);
                gt[u] += above;
                eq[u] += count_ge(sc, len, s_ans[r]) - above;
            }
        }
    }
    for (int32_t u = 0; u < n_users; u++) add_tied_rank(out, gt[u] < 0 ? n_rows : gt[u], gt[u] < 0 ? 0 : eq[u]);
    metrics_mean(out, n_users);
    free(tiles);
    free(gt);
    free(eq);
    sorted_excl_free(&ex);
    return 0;
}

/* ---- br_topk ------------------------------------------------------------- */

/* Per-user heap of the k best items seen so far, stored in the caller's
 * output row; the root is the worst kept item (lowest score, then highest
 * id), so one comparison rejects most candidates. */
static int worse(float sa, int32_t ia, float sb, int32_t ib) {
    return sa < sb || (sa == sb && ia > ib);
}

static void heap_sift_down(float *hs, int32_t *hi, int32_t n, int32_t i) {
    const float s = hs[i];
    const int32_t it = hi[i];
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && worse(hs[c + 1], hi[c + 1], hs[c], hi[c])) c++;
        if (!worse(hs[c], hi[c], s, it)) break;
        hs[i] = hs[c];
        hi[i] = hi[c];
        i = c;
    }
    hs[i] = s;
    hi[i] = it;
}

static void heap_push(float *hs, int32_t *hi, int32_t *n, float s, int32_t it) {
    int32_t i = (*n)++;
    while (i > 0) {
        const int32_t p = (i - 1) / 2;
        if (!worse(s, it, hs[p], hi[p])) break;
        hs[i] = hs[p];
        hi[i] = hi[p];
        i = p;
    }
    hs[i] = s;
    hi[i] = it;
}

/* Offers a block's scores (excluded ones already NaN) to the heap. */
static void topk_scan(const float *row, int32_t len, int32_t first, int32_t k, float *hs,
                      int32_t *hi, int32_t *n) {
    int32_t j = 0;
    for (; j < len && *n < k; j++) {
        if (!isnan(row[j])) heap_push(hs, hi, n, row[j], first + j);
    }
    if (*n < k) return;
    /* Items arrive in increasing id order, so a newcomer beats the root only
     * with a strictly higher score (it loses ties). NaN never passes. */
    float worst = hs[0];
    while (j < len) {
        const float *s = row + j;
        const int32_t n_chunk = min_i32(SCAN_CHUNK, len - j);
        if (count_gt(s, n_chunk, worst) > 0) {
            for (int32_t t = 0; t < n_chunk; t++) {
                if (!(s[t] > worst)) continue;
                hs[0] = s[t];
                hi[0] = first + j + t;
                heap_sift_down(hs, hi, k, 0);
                worst = hs[0];
            }
        }
        j += n_chunk;
    }
}

/* Heap to best-first order (repeatedly moves the worst to the back), then
 * pads the tail. */
static void topk_finish(float *hs, int32_t *hi, int32_t n, int32_t k) {
    for (int32_t m = n; m > 1; m--) {
        const float s = hs[0];
        const int32_t it = hi[0];
        hs[0] = hs[m - 1];
        hi[0] = hi[m - 1];
        hs[m - 1] = s;
        hi[m - 1] = it;
        heap_sift_down(hs, hi, m - 1, 0);
    }
    for (int32_t i = n; i < k; i++) {
        hs[i] = -INFINITY;
        hi[i] = 0;
    }
}

typedef struct topk_job {
    const float *user_repr, *item_emb;
    int32_t n_users, n_items, dim, k;
    const sorted_excl *ex;
    int32_t *items_out;
    float *scores_out;
} topk_job;

static void topk_user_block(const topk_job *job, int32_t u0, float *tile, int32_t *heap_n,
                            int64_t *ex_pos) {
    const int32_t rows = min_i32(USER_BLOCK, job->n_users - u0), dim = job->dim, k = job->k;
    const float *users = job->user_repr + (size_t)u0 * dim;
    for (int32_t r = 0; r < rows; r++) {
        heap_n[r] = 0;
        ex_pos[r] = job->ex->off[u0 + r];
    }
    for (int32_t b = 0; b < n_item_blocks(job->n_items); b++) {
        const int32_t first = first_item(b), len = block_len(b, job->n_items);
        score_tile(users, rows, job->item_emb, first, len, dim, tile);
        for (int32_t r = 0; r < rows; r++) {
            float *row = tile + (size_t)r * len;
            const int64_t ex0 = take_excluded(job->ex, u0 + r, &ex_pos[r], first + len);
            for (int64_t i = ex0; i < ex_pos[r]; i++) row[job->ex->items[i] - first] = NAN;
            const size_t out = (size_t)(u0 + r) * k;
            topk_scan(row, len, first, k, job->scores_out + out, job->items_out + out, &heap_n[r]);
        }
    }
    for (int32_t r = 0; r < rows; r++) {
        const size_t out = (size_t)(u0 + r) * k;
        topk_finish(job->scores_out + out, job->items_out + out, heap_n[r], k);
    }
}

int br_topk(const float *user_repr, int32_t n_users, const float *item_emb, int32_t n_items,
            int32_t dim, int32_t k, const br_exclusions *excl, int32_t *items_out,
            float *scores_out, br_error *err) {
    static const char fn[] = "br_topk";
    if (check_common(fn, user_repr, n_users, item_emb, n_items, dim, err) < 0) return -1;
    if (k < 1) return br_errorf(err, "%s: k = %d, need at least 1", fn, k);
    if (n_users > 0 && (!items_out || !scores_out))
        return br_errorf(err, "%s: %s is NULL", fn, items_out ? "scores_out" : "items_out");
    if (n_users == 0) return 0;

    sorted_excl ex;
    if (sort_exclusions(excl, n_users, n_items, NULL, &ex, err) < 0)
        return br_error_prefix(err, "%s", fn);
    const int32_t n_user_blocks = (n_users - 1) / USER_BLOCK + 1;
    const int n_workers = n_workers_for(n_user_blocks);
    const size_t tile_floats = (size_t)min_i32(USER_BLOCK, n_users) * min_i32(ITEM_BLOCK, n_items);
    float *tiles = br_xmalloc((size_t)n_workers * tile_floats * sizeof(float), err);
    int32_t *heap_n = br_xmalloc((size_t)n_workers * USER_BLOCK * sizeof(int32_t), err);
    int64_t *ex_pos = br_xmalloc((size_t)n_workers * USER_BLOCK * sizeof(int64_t), err);
    if (!tiles || !heap_n || !ex_pos) {
        free(tiles);
        free(heap_n);
        free(ex_pos);
        sorted_excl_free(&ex);
        return br_error_prefix(err, "%s", fn);
    }
    const topk_job job = {user_repr, item_emb, n_users, n_items, dim, k, &ex, items_out,
                          scores_out};
#pragma omp parallel for num_threads(n_workers) schedule(dynamic, 1)
    for (int32_t ub = 0; ub < n_user_blocks; ub++) {
        const int w = omp_get_thread_num();
        topk_user_block(&job, ub * USER_BLOCK, tiles + (size_t)w * tile_floats,
                        heap_n + (size_t)w * USER_BLOCK, ex_pos + (size_t)w * USER_BLOCK);
    }
    free(tiles);
    free(heap_n);
    free(ex_pos);
    sorted_excl_free(&ex);
    return 0;
}
