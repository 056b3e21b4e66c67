#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "augment/augment.h"

/* Per-thread scratch of the similarity build is capped so that huge item
 * catalogues run on fewer threads instead of exhausting memory. */
#define SIM_SCRATCH_BUDGET ((size_t)1 << 30)

typedef struct {
    int64_t *uoff;   /* [n_users + 1]: user u's distinct training items are uitems[uoff[u]..] */
    int32_t *uitems;
    double *uw;      /* [n_users]: 1 / log(1 + distinct items of u) */
    int32_t *n_users_of; /* [n_items + 1]: N_i */
    int64_t *ioff;   /* [n_items + 2]: users of item i (only those with >= 2 items) */
    int32_t *iusers; /* ascending user order: fixes the summation order */
} sim_index;

static void sim_index_free(sim_index *x) {
    free(x->uoff);
    free(x->uitems);
    free(x->uw);
    free(x->n_users_of);
    free(x->ioff);
    free(x->iusers);
}

/* Distinct training items per user and the item -> users inverted index. */
static int sim_index_build(const br_dataset *ds, sim_index *x, br_error *err) {
    int32_t nu = ds->n_users, ni = ds->n_items;
    int64_t n_train = 0;
    for (int32_t u = 0; u < nu; u++) n_train += br_split_input_len(ds, u, BR_SPLIT_TRAIN);

    int32_t *stamp = NULL;
    if (!(x->uoff = br_xmalloc(((size_t)nu + 1) * sizeof *x->uoff, err)) ||
        !(x->uitems = br_xmalloc((size_t)n_train * sizeof *x->uitems, err)) ||
        !(x->uw = br_xmalloc((size_t)nu * sizeof *x->uw, err)) ||
        !(x->n_users_of = br_xcalloc((size_t)ni + 1, sizeof *x->n_users_of, err)) ||
        !(x->ioff = br_xcalloc((size_t)ni + 2, sizeof *x->ioff, err)) ||
        !(stamp = br_xmalloc(((size_t)ni + 1) * sizeof *stamp, err)))
        goto fail;

    /* Dedup with a last-seen-user stamp: the order of a user's items does
     * not matter, each pair gets one addition per user. */
    for (int32_t i = 0; i <= ni; i++) stamp[i] = -1;
    int64_t m = 0;
    for (int32_t u = 0; u < nu; u++) {
        const int32_t *s = br_seq(ds, u);
        int32_t len = br_split_input_len(ds, u, BR_SPLIT_TRAIN);
        x->uoff[u] = m;
        for (int32_t t = 0; t < len; t++) {
            if (stamp[s[t]] == u) continue;
            stamp[s[t]] = u;
            x->uitems[m++] = s[t];
        }
        int64_t d = m - x->uoff[u];
        x->uw[u] = 1.0 / log(1.0 + (double)d);
        for (int64_t p = x->uoff[u]; p < m; p++) {
            x->n_users_of[x->uitems[p]]++;
            /* A single-item user has no pairs: left out of the index. */
            if (d >= 2) x->ioff[x->uitems[p] + 1]++;
        }
    }
    x->uoff[nu] = m;
    free(stamp);
    stamp = NULL;

    for (int32_t i = 0; i <= ni; i++) x->ioff[i + 1] += x->ioff[i];
    int64_t n_idx = x->ioff[ni + 1];
    int64_t *fill = br_xmalloc(((size_t)ni + 1) * sizeof *fill, err);
    if (!fill || !(x->iusers = br_xmalloc((size_t)n_idx * sizeof *x->iusers, err))) {
        free(fill);
        goto fail;
    }
    memcpy(fill, x->ioff, ((size_t)ni + 1) * sizeof *fill);
    for (int32_t u = 0; u < nu; u++) {
        if (x->uoff[u + 1] - x->uoff[u] < 2) continue;
        for (int64_t p = x->uoff[u]; p < x->uoff[u + 1]; p++) x->iusers[fill[x->uitems[p]]++] = u;
    }
    free(fill);
    return 0;
fail:
    free(stamp);
    sim_index_free(x);
    return -1;
}

/* Most similar item of i: co-occurrence weights summed over i's users in
 * ascending order (acc is all zeros on entry and on exit). */
static int32_t most_similar_of(const sim_index *x, int32_t i, double *acc, int32_t *touched) {
    int32_t nt = 0;
    for (int64_t p = x->ioff[i]; p < x->ioff[i + 1]; p++) {
        int32_t u = x->iusers[p];
        double w = x->uw[u];
        for (int64_t q = x->uoff[u]; q < x->uoff[u + 1]; q++) {
            int32_t j = x->uitems[q];
            if (j == i) continue;
            /* Weights are > 0, so a zero entry has not been touched yet. */
            if (acc[j] == 0.0) touched[nt++] = j;
            acc[j] += w;
        }
    }
    int32_t best = 0;
    double best_sim = 0.0;
    for (int32_t t = 0; t < nt; t++) {
        int32_t j = touched[t];
        double s = acc[j] / sqrt((double)x->n_users_of[i] * (double)x->n_users_of[j]);
        acc[j] = 0.0;
        if (s > best_sim || (s == best_sim && j < best)) {
            best_sim = s;
            best = j;
        }
    }
    return best;
}

int br_item_sim_build(const br_dataset *ds, br_item_sim *sim, br_error *err) {
    memset(sim, 0, sizeof *sim);
    int32_t ni = ds->n_items;
    sim_index x = {0};
    if (sim_index_build(ds, &x, err) < 0) return br_error_prefix(err, "item similarity");

    size_t row = ((size_t)ni + 1) * (sizeof(double) + sizeof(int32_t));
    int nth = omp_get_max_threads();
    if ((size_t)nth * row > SIM_SCRATCH_BUDGET) nth = (int)(SIM_SCRATCH_BUDGET / row);
    if (nth < 1) nth = 1;
    double *acc = NULL;
    int32_t *touched = NULL;
    if (!(sim->most_similar = br_xcalloc((size_t)ni + 1, sizeof *sim->most_similar, err)) ||
        !(acc = br_xcalloc((size_t)nth * ((size_t)ni + 1), sizeof *acc, err)) ||
        !(touched = br_xmalloc((size_t)nth * ((size_t)ni + 1) * sizeof *touched, err))) {
        free(acc);
        sim_index_free(&x);
        br_item_sim_free(sim);
        return br_error_prefix(err, "item similarity");
    }
    sim->n_items = ni;

#pragma omp parallel num_threads(nth)
    {
        size_t t = (size_t)omp_get_thread_num();
        double *my_acc = acc + t * ((size_t)ni + 1);
        int32_t *my_touched = touched + t * ((size_t)ni + 1);
#pragma omp for schedule(dynamic, 64)
        for (int32_t i = 1; i <= ni; i++)
            sim->most_similar[i] = most_similar_of(&x, i, my_acc, my_touched);
    }

    free(acc);
    free(touched);
    sim_index_free(&x);
    return 0;
}

void br_item_sim_free(br_item_sim *sim) {
    free(sim->most_similar);
    memset(sim, 0, sizeof *sim);
}

/* int(rate * n) clamped to [0, n]. The product is taken in float so that a
 * rate written as a decimal (0.7f * 10) gives the intended whole number. */
static int32_t rate_count(float rate, int32_t n) {
    float c = rate * (float)n;
    if (!(c > 0.0f)) return 0;
    if (c >= (float)n) return n;
    return (int32_t)c;
}

void br_aug_reorder(int32_t *seq, int32_t n, float rate, br_rng *rng) {
    int32_t c = rate_count(rate, n);
    if (c <= 1) return;
    /* start uniform in [0, n-c-1], as the reference's randint(0, n-c-1):
     * its quirk is that the last item is never moved unless c == n. */
    int32_t start = c < n ? (int32_t)br_rng_below(rng, (uint64_t)(n - c)) : 0;
    br_rng_shuffle_i32(rng, seq + start, c);
}

/* max(int(rate * n), 1) for n >= 1. */
static int32_t rate_count_min1(float rate, int32_t n) {
    const int32_t k = rate_count(rate, n);
    return k < 1 ? 1 : k;
}

/* Selection sampling (Knuth's Algorithm S): the next position, scanning
 * from *t, of a uniform k-subset of 0..n-1 in one pass without an index
 * array for any n; -1 once all *k are chosen. */
static int32_t next_selected(br_rng *rng, int32_t n, int32_t *t, int32_t *k) {
    for (; *t < n && *k > 0; (*t)++) {
        if (br_rng_below(rng, (uint64_t)(n - *t)) >= (uint64_t)*k) continue;
        (*k)--;
        return (*t)++;
    }
    return -1;
}

void br_aug_substitute(int32_t *seq, int32_t n, float rate, const br_item_sim *sim,
                       br_rng *rng) {
    if (n <= 0) return;
    int32_t k = rate_count_min1(rate, n), t = 0, p;
    while ((p = next_selected(rng, n, &t, &k)) >= 0) {
        int32_t it = seq[p];
        int32_t to = it >= 1 && it <= sim->n_items ? sim->most_similar[it] : 0;
        seq[p] = to ? to : 1 + (int32_t)br_rng_below(rng, (uint64_t)sim->n_items);
    }
}

int32_t br_aug_crop(int32_t n, float rate, br_rng *rng, int32_t *start) {
    const int32_t c = rate_count_min1(rate, n);
    *start = (int32_t)br_rng_below(rng, (uint64_t)(n - c + 1));
    return c;
}

void br_aug_mask(int32_t *seq, int32_t n, float rate, int32_t mask_item, br_rng *rng) {
    if (n <= 0) return;
    int32_t k = rate_count_min1(rate, n), t = 0, p;
    while ((p = next_selected(rng, n, &t, &k)) >= 0) seq[p] = mask_item;
}

static br_gamma_dist gamma_dist_make(double shape) {
    br_gamma_dist g = {.boost_shape = shape < 1.0 ? shape : 0.0};
    if (shape < 1.0) shape += 1.0;
    g.d = shape - 1.0 / 3.0;
    g.c = 1.0 / sqrt(9.0 * g.d);
    g.log_d = log(g.d);
    return g;
}

/* log of a Gamma(shape, 1) draw. Marsaglia & Tsang (2000) for shape >= 1;
 * below 1, Gamma(a) = Gamma(a + 1) * U^(1/a), kept in logs because U^(1/a)
 * underflows to 0 for small a. */
static double log_gamma_draw(br_rng *rng, const br_gamma_dist *g) {
    double boost = 0.0;
    /* 1 - U is in (0, 1], so the log is finite unless 1/a overflows. */
    if (g->boost_shape > 0.0) boost = log1p(-br_rng_uniform(rng)) / g->boost_shape;
    const double d = g->d, c = g->c;
    for (;;) {
        double x = br_rng_normal(rng), v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = br_rng_uniform(rng), x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2 || log(u) < 0.5 * x2 + d * (1.0 - v + log(v)))
            return g->log_d + log(v) + boost;
    }
}

double br_rng_gamma(br_rng *rng, double shape) {
    const br_gamma_dist g = gamma_dist_make(shape);
    return exp(log_gamma_draw(rng, &g));
}

br_beta_dist br_beta_dist_make(double a, double b) {
    return (br_beta_dist){gamma_dist_make(a), gamma_dist_make(b), a, b};
}

double br_beta_draw(br_rng *rng, const br_beta_dist *dist) {
    double lx = log_gamma_draw(rng, &dist->x), ly = log_gamma_draw(rng, &dist->y);
    /* Both draws are 0 only for absurdly small shapes (log U / a overflows):
     * the limit of Beta(a, b) there is Bernoulli(a / (a + b)). */
    if (isinf(lx) && isinf(ly))
        return br_rng_uniform(rng) * (dist->a + dist->b) < dist->a ? 1.0 : 0.0;
    /* X / (X + Y) = 1 / (1 + Y / X), from the logs without underflow. */
    return 1.0 / (1.0 + exp(ly - lx));
}

double br_rng_beta(br_rng *rng, double a, double b) {
    const br_beta_dist dist = br_beta_dist_make(a, b);
    return br_beta_draw(rng, &dist);
}
