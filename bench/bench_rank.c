/* Times br_rank_answers and br_topk (k = 10) on random data: a Beauty-sized
 * problem (22,363 users x 12,101 items, dim 64) and a 1,000,000-item
 * catalogue with 2,000 users. Prints the best of a few runs: wall seconds,
 * GFLOP/s counted as 2 * users * items * dim (the scoring GEMM), and the
 * process CPU seconds of that run (on a shared machine, CPU / threads is a
 * rough stand-in for the wall time it would take uncontended).
 *
 * Build (from the repository root):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp \
 *       $(pkg-config --cflags openblas) -Isrc bench/bench_rank.c src/eval/rank.c \
 *       src/util/error.c $(pkg-config --libs openblas) -lm -o /tmp/bench_rank
 * Usage: bench_rank [repeats]   (default 3) */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "eval/rank.h"

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench_rank: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

typedef struct problem {
    const char *name;
    int32_t n_users, n_items, dim;
    float *users, *items;
    int32_t *answer;
    int64_t *ex_off;
    int32_t *ex_items;
} problem;

/* Random embeddings in [-0.5, 0.5), uniform answers, and histories of 1..60
 * random items per user as exclusion lists (about the Beauty average). */
static problem make_problem(const char *name, int32_t n_users, int32_t n_items, int32_t dim,
                            uint64_t seed) {
    problem p = {name, n_users, n_items, dim, NULL, NULL, NULL, NULL, NULL};
    uint64_t s = seed;
    const size_t nu = (size_t)n_users * dim, ni = ((size_t)n_items + 1) * dim;
    p.users = xmalloc(nu * sizeof(float));
    p.items = xmalloc(ni * sizeof(float));
    for (size_t i = 0; i < nu; i++) p.users[i] = (float)(rng_next(&s) >> 40) * 0x1p-24f - 0.5f;
    for (size_t i = 0; i < ni; i++) p.items[i] = (float)(rng_next(&s) >> 40) * 0x1p-24f - 0.5f;
    p.answer = xmalloc((size_t)n_users * sizeof(int32_t));
    p.ex_off = xmalloc(((size_t)n_users + 1) * sizeof(int64_t));
    p.ex_off[0] = 0;
    for (int32_t u = 0; u < n_users; u++) {
        p.answer[u] = 1 + (int32_t)(rng_next(&s) % (uint64_t)n_items);
        p.ex_off[u + 1] = p.ex_off[u] + 1 + (int64_t)(rng_next(&s) % 60);
    }
    p.ex_items = xmalloc((size_t)p.ex_off[n_users] * sizeof(int32_t));
    for (int64_t i = 0; i < p.ex_off[n_users]; i++)
        p.ex_items[i] = 1 + (int32_t)(rng_next(&s) % (uint64_t)n_items);
    return p;
}

static void free_problem(problem *p) {
    free(p->users);
    free(p->items);
    free(p->answer);
    free(p->ex_off);
    free(p->ex_items);
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct timing {
    double wall, cpu;
} timing;

static void report(const problem *p, const char *what, timing t) {
    const double flop = 2.0 * p->n_users * (double)p->n_items * p->dim;
    printf("%-10s %-16s %8.3f s  %7.1f GFLOP/s  (cpu %.3f s)\n", p->name, what, t.wall,
           flop / t.wall * 1e-9, t.cpu);
}

static int bench(const problem *p, int repeats) {
    const br_exclusions ex = {p->ex_off, p->ex_items};
    const int32_t k = 10;
    int64_t *rank = xmalloc((size_t)p->n_users * sizeof(int64_t));
    int32_t *top = xmalloc((size_t)p->n_users * k * sizeof(int32_t));
    float *top_s = xmalloc((size_t)p->n_users * k * sizeof(float));
    br_error err;
    timing best_rank = {1e30, 0}, best_topk = {1e30, 0};
    for (int r = 0; r < repeats; r++) {
        const double w0 = omp_get_wtime(), c0 = cpu_seconds();
        if (br_rank_answers(p->users, p->n_users, p->items, p->n_items, p->dim, p->answer, &ex,
                            rank, &err) < 0)
            goto fail;
        const double w1 = omp_get_wtime(), c1 = cpu_seconds();
        if (br_topk(p->users, p->n_users, p->items, p->n_items, p->dim, k, &ex, top, top_s,
                    &err) < 0)
            goto fail;
        const double w2 = omp_get_wtime(), c2 = cpu_seconds();
        if (w1 - w0 < best_rank.wall) best_rank = (timing){w1 - w0, c1 - c0};
        if (w2 - w1 < best_topk.wall) best_topk = (timing){w2 - w1, c2 - c1};
    }
    report(p, "br_rank_answers", best_rank);
    report(p, "br_topk k=10", best_topk);
    br_metrics m;
    br_metrics_from_ranks(rank, p->n_users, &m);
    /* Random data: HR@10 should be near 10 / n_items (a sanity check). */
    printf("%-10s HR@10 %.5f (chance %.5f), MRR %.5f\n", p->name, m.hr[1],
           10.0 / p->n_items, m.mrr);
    free(rank);
    free(top);
    free(top_s);
    return 0;
fail:
    fprintf(stderr, "bench_rank: %s\n", err.msg);
    free(rank);
    free(top);
    free(top_s);
    return -1;
}

int main(int argc, char **argv) {
    const int repeats = argc > 1 ? atoi(argv[1]) : 3;
    if (repeats < 1) {
        fprintf(stderr, "usage: bench_rank [repeats >= 1]\n");
        return 2;
    }
    printf("threads %d, best of %d runs\n", omp_get_max_threads(), repeats);
    problem beauty = make_problem("beauty", 22363, 12101, 64, 1);
    int rc = bench(&beauty, repeats);
    free_problem(&beauty);
    if (rc == 0) {
        problem big = make_problem("1M-items", 2000, 1000000, 64, 2);
        rc = bench(&big, repeats);
        free_problem(&big);
    }
    return rc == 0 ? 0 : 1;
}
