/* Synthetic sequence data with learnable structure, so the whole pipeline
 * can run without a real dataset. The generative story:
 *  - items are shuffled into topics of TOPIC_SIZE; within a topic popularity
 *    is Zipf-like (weight 1/rank), and topics have milder Zipf weights;
 *  - every item has N_SUCC fixed successors in its topic: the sequential
 *    signal a next-item model can learn and a popularity ranking cannot;
 *  - a user has 2-3 favourite topics and starts at a popular item of one;
 *    each step follows a successor, takes a popular item of the current
 *    topic, drifts to another favourite topic or jumps anywhere;
 *  - lengths are MIN_LEN plus a mix of two exponentials (mean ~9, capped).
 * Items no user reached are then put at random non-answer positions whose
 * item occurs elsewhere too, so every id appears whenever there is room. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "data/dataset.h"
#include "util/fileio.h"
#include "util/rng.h"

#define TOPIC_SIZE 40
#define N_SUCC 3
#define MIN_LEN 5
#define MAX_LEN 60
#define TOPIC_ZIPF 0.6 /* exponent of topic popularity */

static const double succ_weight[N_SUCC] = {0.6, 0.25, 0.15};
/* Step probabilities: successor, popular in topic, other favourite topic;
 * the rest is a jump to any topic. */
#define P_SUCC 0.70
#define P_TOPIC 0.15
#define P_FAV 0.10

typedef struct {
    int32_t n_items, n_topics;
    int32_t *items_by_topic; /* topic t is [t*TOPIC_SIZE, ...), most popular first */
    int32_t *topic_of;       /* per item id */
    int32_t *succ;           /* N_SUCC per item id */
    double rank_cdf[TOPIC_SIZE];
    double *topic_cdf;
} world;

/* Index i with cdf[i-1] <= x < cdf[i], for x in [0, cdf[n-1]). */
static int32_t search_cdf(const double *cdf, int32_t n, double x) {
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int32_t topic_size(const world *w, int32_t t) {
    int32_t left = w->n_items - t * TOPIC_SIZE;
    return left < TOPIC_SIZE ? left : TOPIC_SIZE;
}

static int32_t popular_in_topic(const world *w, int32_t t, br_rng *rng) {
    int32_t m = topic_size(w, t);
    int32_t r = search_cdf(w->rank_cdf, m, br_rng_uniform(rng) * w->rank_cdf[m - 1]);
    return w->items_by_topic[t * TOPIC_SIZE + r];
}

static int32_t draw_topic(const world *w, br_rng *rng) {
    return search_cdf(w->topic_cdf, w->n_topics,
                      br_rng_uniform(rng) * w->topic_cdf[w->n_topics - 1]);
}

/* Successors are popularity-weighted, distinct and never the item itself
 * while the topic has room; bounded retries keep tiny topics terminating. */
static void pick_successors(world *w, int32_t item, br_rng *rng) {
    int32_t t = w->topic_of[item];
    int32_t *s = w->succ + (int64_t)item * N_SUCC;
    for (int k = 0; k < N_SUCC; k++) {
        int32_t cand = item;
        for (int attempt = 0; attempt < 64; attempt++) {
            cand = popular_in_topic(w, t, rng);
            bool taken = cand == item;
            for (int j = 0; j < k; j++) taken = taken || s[j] == cand;
            if (!taken) break;
        }
        s[k] = cand;
    }
}

static int build_world(world *w, int32_t n_items, br_rng *rng, br_error *err) {
    w->n_items = n_items;
    w->n_topics = (int32_t)(((int64_t)n_items + TOPIC_SIZE - 1) / TOPIC_SIZE);
    w->items_by_topic = br_xmalloc((size_t)n_items * sizeof(int32_t), err);
    w->topic_of = br_xmalloc(((size_t)n_items + 1) * sizeof(int32_t), err);
    w->succ = br_xmalloc(((size_t)n_items + 1) * N_SUCC * sizeof(int32_t), err);
    w->topic_cdf = br_xmalloc((size_t)w->n_topics * sizeof(double), err);
    if (!w->items_by_topic || !w->topic_of || !w->succ || !w->topic_cdf) return -1;

    double acc = 0;
    for (int r = 0; r < TOPIC_SIZE; r++) w->rank_cdf[r] = acc += 1.0 / (r + 1);
    acc = 0;
    for (int32_t t = 0; t < w->n_topics; t++) w->topic_cdf[t] = acc += pow(t + 1, -TOPIC_ZIPF);

    /* The shuffle hides topics from the ids: structure must be learnt. */
    for (int32_t i = 0; i < n_items; i++) w->items_by_topic[i] = i + 1;
    br_rng_shuffle_i32(rng, w->items_by_topic, n_items);
    for (int32_t i = 0; i < n_items; i++) w->topic_of[w->items_by_topic[i]] = i / TOPIC_SIZE;
    for (int32_t item = 1; item <= n_items; item++) pick_successors(w, item, rng);
    return 0;
}

static void free_world(world *w) {
    free(w->items_by_topic);
    free(w->topic_of);
    free(w->succ);
    free(w->topic_cdf);
}

/* MIN_LEN plus a short or (one time in five) long exponential tail. */
static int32_t draw_length(br_rng *rng) {
    double mean = br_rng_uniform(rng) < 0.8 ? 3.0 : 12.0;
    double extra = -mean * log(1.0 - br_rng_uniform(rng));
    return extra >= MAX_LEN - MIN_LEN ? MAX_LEN : MIN_LEN + (int32_t)extra;
}

static void walk_user(const world *w, int32_t *seq, int32_t len, br_rng *rng) {
    int32_t fav[3];
    int n_fav = 2 + (int)br_rng_below(rng, 2);
    for (int f = 0; f < n_fav; f++) fav[f] = draw_topic(w, rng);

    int32_t cur = popular_in_topic(w, fav[0], rng);
    seq[0] = cur;
    for (int32_t i = 1; i < len; i++) {
        double r = br_rng_uniform(rng);
        if (r < P_SUCC) {
            const int32_t *s = w->succ + (int64_t)cur * N_SUCC;
            double x = br_rng_uniform(rng);
            int k = 0;
            while (k < N_SUCC - 1 && x >= succ_weight[k]) x -= succ_weight[k++];
            cur = s[k];
        } else if (r < P_SUCC + P_TOPIC) {
            cur = popular_in_topic(w, w->topic_of[cur], rng);
        } else if (r < P_SUCC + P_TOPIC + P_FAV) {
            cur = popular_in_topic(w, fav[br_rng_below(rng, (uint64_t)n_fav)], rng);
        } else {
            cur = popular_in_topic(w, draw_topic(w, rng), rng);
        }
        seq[i] = cur;
    }
}

/* Places every unseen item at a shuffled non-answer position (the last two
 * of a row are the valid/test answers, kept clean for evaluation) whose item
 * occurs more than once. A skipped position never becomes usable later:
 * counts of placed items stay 1 and other counts only fall. */
static int cover_all_items(int32_t *items, const int64_t *offsets, int32_t n_users,
                           int32_t n_items, br_rng *rng, br_error *err) {
    int64_t n_slots = 0;
    for (int32_t u = 0; u < n_users; u++) n_slots += offsets[u + 1] - offsets[u] - 2;
    int64_t *count = br_xcalloc((size_t)n_items + 1, sizeof *count, err);
    int64_t *slots = br_xmalloc((size_t)n_slots * sizeof *slots, err);
    if (!count || !slots) {
        free(count);
        free(slots);
        return -1;
    }
    for (int64_t i = 0; i < offsets[n_users]; i++) count[items[i]]++;
    int64_t k = 0;
    for (int32_t u = 0; u < n_users; u++)
        for (int64_t i = offsets[u]; i < offsets[u + 1] - 2; i++) slots[k++] = i;
    for (int64_t i = n_slots - 1; i > 0; i--) {
        int64_t j = (int64_t)br_rng_below(rng, (uint64_t)i + 1);
        int64_t t = slots[i];
        slots[i] = slots[j];
        slots[j] = t;
    }

    int64_t cursor = 0;
    for (int32_t item = 1; item <= n_items && cursor < n_slots; item++) {
        if (count[item] > 0) continue;
        while (cursor < n_slots && count[items[slots[cursor]]] < 2) cursor++;
        if (cursor == n_slots) break;
        int64_t pos = slots[cursor++];
        count[items[pos]]--;
        items[pos] = item;
        count[item] = 1;
    }
    free(count);
    free(slots);
    return 0;
}

static int write_sequences(const char *path, const int32_t *items, const int64_t *offsets,
                           int32_t n_users, br_error *err) {
    br_atomic_file af;
    if (br_atomic_open(&af, path, err)) return -1;
    for (int32_t u = 0; u < n_users; u++) {
        fprintf(af.fp, "%d", u + 1);
        for (int64_t i = offsets[u]; i < offsets[u + 1]; i++) fprintf(af.fp, " %d", items[i]);
        fputc('\n', af.fp);
    }
    /* commit checks the stream's error flag, so failed writes surface there. */
    return br_atomic_commit(&af, err);
}

int br_synth_write(const char *path, int32_t n_users, int32_t n_items, uint64_t seed,
                   br_error *err) {
    if (n_users < 1 || n_items < 1 || n_items > BR_MAX_ITEM_ID)
        return br_errorf(err, "%s: synthetic data needs n_users >= 1 and 1 <= n_items <= %d "
                              "(got %d users, %d items)",
                         path, BR_MAX_ITEM_ID, n_users, n_items);
    br_rng rng;
    br_rng_seed(&rng, seed, 0x5EC5);

    world w = {0};
    int64_t *offsets = br_xmalloc(((size_t)n_users + 1) * sizeof *offsets, err);
    int32_t *items = NULL;
    int rc = offsets ? build_world(&w, n_items, &rng, err) : -1;
    if (rc == 0) {
        /* Lengths first, so the item array is allocated once. */
        offsets[0] = 0;
        for (int32_t u = 0; u < n_users; u++) offsets[u + 1] = offsets[u] + draw_length(&rng);
        items = br_xmalloc((size_t)offsets[n_users] * sizeof *items, err);
        rc = items ? 0 : -1;
    }
    if (rc == 0) {
        for (int32_t u = 0; u < n_users; u++)
            walk_user(&w, items + offsets[u], (int32_t)(offsets[u + 1] - offsets[u]), &rng);
        rc = cover_all_items(items, offsets, n_users, n_items, &rng, err);
    }
    if (rc == 0) rc = write_sequences(path, items, offsets, n_users, err);
    free_world(&w);
    free(offsets);
    free(items);
    return rc;
}
