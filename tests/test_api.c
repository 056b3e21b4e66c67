/* The public API (include/basrec.h): loading, recommendations equal to the
 * internal evaluation path, argument checks, concurrent calls on one model,
 * and the id maps. */
#include "testutil.h"

#include <omp.h>
#include <pthread.h>

#include "basrec.h"
#include "eval/evaluate.h"
#include "train/checkpoint.h"

enum { N_USERS = 120, N_ITEMS = 60, K = 10, N_THREADS = 8, CALLS = 150 };

typedef struct fixture {
    char data_path[64], ckpt_path[80];
    br_dataset ds;
    br_model ref; /* the same weights, for the internal path */
    basrec_model *m;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    br_error err;
    if (!f || !test_write_tmp(f->data_path, sizeof f->data_path, "")) return -1;
    snprintf(f->ckpt_path, sizeof f->ckpt_path, "%s.safetensors", f->data_path);
    br_model_config c;
    br_model_config_defaults(&c);
    c.dim = 16;
    c.max_len = 10; /* shorter than most histories: truncation is exercised */
    if (br_synth_write(f->data_path, N_USERS, N_ITEMS, 5, &err) < 0 ||
        br_dataset_load(f->data_path, &f->ds, &err) < 0)
        return -1;
    c.n_items = f->ds.n_items;
    if (br_model_create(&f->ref, &c, &err) < 0) return -1;
    br_model_init_weights(&f->ref, 11);
    if (br_checkpoint_save(f->ckpt_path, &f->ref, &f->ds, NULL, NULL, &err) < 0) return -1;
    char msg[256];
    if (!(f->m = basrec_model_load(f->ckpt_path, msg, sizeof msg))) {
        fprintf(stderr, "%s\n", msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    basrec_model_free(f->m);
    br_model_free(&f->ref);
    br_dataset_free(&f->ds);
    unlink(f->data_path);
    unlink(f->ckpt_path);
    free(f);
    return 0;
}

static void test_version(void **state) {
    (void)state;
    assert_string_equal(basrec_version(), BASREC_VERSION);
}

static void test_model_info(void **state) {
    fixture *f = *state;
    assert_int_equal(basrec_model_n_items(f->m), f->ds.n_items);
    assert_int_equal(basrec_model_dim(f->m), 16);
    assert_int_equal(basrec_model_max_len(f->m), 10);
    assert_string_equal(basrec_model_backbone(f->m), "sasrec");
    assert_true(basrec_model_workspaces(f->m) >= 1);
}

static void test_load_errors(void **state) {
    fixture *f = *state;
    char msg[256] = "";
    assert_null(basrec_model_load("/nonexistent/model.safetensors", msg, sizeof msg));
    assert_non_null(strstr(msg, "/nonexistent/model.safetensors"));
    /* The data file is no checkpoint. */
    assert_null(basrec_model_load(f->data_path, msg, sizeof msg));
    assert_non_null(strstr(msg, f->data_path));
    /* Messages are truncated to the buffer; no buffer at all is fine. */
    char small[8];
    assert_null(basrec_model_load("/nonexistent/x", small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_null(basrec_model_load("/nonexistent/x", NULL, 0));
    assert_null(basrec_model_load(NULL, msg, sizeof msg));
    basrec_model_free(NULL);
}

/* The internal path of `basrec recommend --users`: encode the row's whole
 * sequence, exclude it, top-k. */
static void internal_topk(fixture *f, int32_t row, int exclude, int32_t *items, float *scores) {
    br_error err;
    float repr[16];
    int64_t *off = NULL;
    int32_t *ex_items = NULL;
    assert_int_equal(br_encode_users(&f->ref, &f->ds, &row, 1, BR_SPLIT_ALL, repr, &err), 0);
    assert_int_equal(br_split_exclusions(&f->ds, &row, 1, BR_SPLIT_ALL, &off, &ex_items, &err), 0);
    br_exclusions ex = {off, ex_items};
    assert_int_equal(br_topk(repr, 1, br_model_items(&f->ref), f->ref.cfg.n_items, 16, K,
                             exclude ? &ex : NULL, items, scores, &err),
                     0);
    free(off);
    free(ex_items);
}

static void test_matches_internal_path(void **state) {
    fixture *f = *state;
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1); /* the API computes single-threaded: same kernels, same rounding */
    for (int32_t row = 0; row < 30; row++) {
        for (int exclude = 0; exclude <= 1; exclude++) {
            int32_t want_items[K], got_items[K];
            float want_scores[K], got_scores[K];
            internal_topk(f, row, exclude, want_items, want_scores);
            char msg[256];
            int n = basrec_recommend(f->m, br_seq(&f->ds, row), br_seq_len(&f->ds, row), K, exclude,
                                     got_items, got_scores, msg, sizeof msg);
            assert_int_equal(n, K);
            assert_memory_equal(got_items, want_items, sizeof got_items);
            assert_memory_equal(got_scores, want_scores, sizeof got_scores);
        }
    }
    omp_set_num_threads(threads);
    assert_int_equal(omp_get_max_threads(), threads); /* the API restores the caller's setting */
}

static int contains(const int32_t *a, int32_t n, int32_t v) {
    for (int32_t i = 0; i < n; i++)
        if (a[i] == v) return 1;
    return 0;
}

static void test_exclude_seen_and_short_lists(void **state) {
    fixture *f = *state;
    const int32_t n_items = basrec_model_n_items(f->m);
    int32_t items[K];
    float scores[K];
    /* A history of all items but three, repeats included: only three remain. */
    int32_t *hist = malloc((size_t)(n_items + 5) * sizeof *hist);
    int32_t n = 0;
    for (int32_t i = 4; i <= n_items; i++) hist[n++] = i;
    for (int32_t i = 0; i < 5; i++) hist[n++] = 10 + i;
    assert_int_equal(basrec_recommend(f->m, hist, n, K, 1, items, scores, NULL, 0), 3);
    for (int i = 0; i < 3; i++) assert_true(items[i] >= 1 && items[i] <= 3);
    for (int i = 1; i < 3; i++) assert_true(scores[i] <= scores[i - 1]);
    /* Not excluding: a full list, which may include seen items. */
    assert_int_equal(basrec_recommend(f->m, hist, n, K, 0, items, scores, NULL, 0), K);
    /* k = n_items with exclusions: everything unseen, nothing seen. */
    int32_t all_items[256];
    float all_scores[256];
    const int32_t h2[] = {1, 2, 3, 2};
    assert_int_equal(basrec_recommend(f->m, h2, 4, n_items, 1, all_items, all_scores, NULL, 0),
                     n_items - 3);
    for (int32_t i = 0; i < n_items - 3; i++) assert_false(contains(h2, 4, all_items[i]));
    free(hist);
}

static void test_invalid_arguments(void **state) {
    fixture *f = *state;
    const int32_t n_items = basrec_model_n_items(f->m);
    int32_t items[K];
    float scores[K];
    char msg[256];
    const int32_t ok[] = {1, 2, 3};
    assert_int_equal(basrec_recommend(f->m, ok, 0, K, 1, items, scores, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "empty"));
    const int32_t zero[] = {1, 0};
    assert_int_equal(basrec_recommend(f->m, zero, 2, K, 1, items, scores, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "history[1] = 0"));
    const int32_t big[] = {n_items + 1};
    assert_int_equal(basrec_recommend(f->m, big, 1, K, 1, items, scores, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "is not an item"));
    assert_int_equal(basrec_recommend(f->m, ok, 3, 0, 1, items, scores, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "k = 0"));
    assert_int_equal(basrec_recommend(f->m, ok, 3, n_items + 1, 1, items, scores, msg, sizeof msg),
                     -1);
    assert_int_equal(basrec_recommend(NULL, ok, 3, K, 1, items, scores, msg, sizeof msg), -1);
    assert_int_equal(basrec_recommend(f->m, ok, 3, K, 1, NULL, scores, msg, sizeof msg), -1);
    assert_int_equal(basrec_recommend(f->m, NULL, 3, K, 1, items, scores, msg, sizeof msg), -1);
}

/* Concurrent calls on one model give the serial answers. */
typedef struct job {
    fixture *f;
    int id;
    int32_t (*want)[K];
    int mismatches;
} job;

static int32_t job_row(int call) { return (call * 7) % N_USERS; }

static void *run_job(void *arg) {
    job *j = arg;
    for (int c = 0; c < CALLS; c++) {
        const int call = (c + j->id * 13) % CALLS;
        const int32_t row = job_row(call);
        int32_t items[K];
        float scores[K];
        int n = basrec_recommend(j->f->m, br_seq(&j->f->ds, row), br_seq_len(&j->f->ds, row), K,
                                 call % 2, items, scores, NULL, 0);
        j->mismatches += n != K || memcmp(items, j->want[call], sizeof items) != 0;
    }
    return NULL;
}

static void test_concurrent_calls(void **state) {
    fixture *f = *state;
    int32_t(*want)[K] = malloc(CALLS * sizeof *want);
    for (int call = 0; call < CALLS; call++) {
        float scores[K];
        const int32_t row = job_row(call);
        assert_int_equal(basrec_recommend(f->m, br_seq(&f->ds, row), br_seq_len(&f->ds, row), K,
                                          call % 2, want[call], scores, NULL, 0),
                         K);
    }
    pthread_t t[N_THREADS];
    job jobs[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        jobs[i] = (job){f, i, want, 0};
        assert_int_equal(pthread_create(&t[i], NULL, run_job, &jobs[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(jobs[i].mismatches, 0);
    }
    /* One workspace per concurrent caller at most. */
    assert_true(basrec_model_workspaces(f->m) <= N_THREADS + 1);
    free(want);
}

/* Every backbone serves through a workspace of its own and answers like
 * the internal path. */
static void test_other_backbones(void **state) {
    fixture *f = *state;
    static const char *names[] = {"gru4rec", "nextitnet", "fmlprec"};
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    for (size_t b = 0; b < sizeof names / sizeof names[0]; b++) {
        br_error err;
        br_model_config c = f->ref.cfg;
        strcpy(c.model, names[b]);
        br_model_config_backbone_defaults(&c);
        br_model ref;
        assert_int_equal(br_model_create(&ref, &c, &err), 0);
        br_model_init_weights(&ref, 3);
        assert_int_equal(br_checkpoint_save(f->ckpt_path, &ref, &f->ds, NULL, NULL, &err), 0);
        char msg[256];
        basrec_model *m = basrec_model_load(f->ckpt_path, msg, sizeof msg);
        assert_non_null(m);
        assert_string_equal(basrec_model_backbone(m), names[b]);
        for (int32_t row = 0; row < 5; row++) {
            float repr[16], want_scores[K], got_scores[K];
            int32_t want_items[K], got_items[K];
            assert_int_equal(br_encode_users(&ref, &f->ds, &row, 1, BR_SPLIT_ALL, repr, &err), 0);
            assert_int_equal(br_topk(repr, 1, br_model_items(&ref), c.n_items, 16, K, NULL,
                                     want_items, want_scores, &err),
                             0);
            assert_int_equal(basrec_recommend(m, br_seq(&f->ds, row), br_seq_len(&f->ds, row), K, 0,
                                              got_items, got_scores, msg, sizeof msg),
                             K);
            assert_memory_equal(got_items, want_items, sizeof got_items);
            assert_memory_equal(got_scores, want_scores, sizeof got_scores);
        }
        basrec_model_free(m);
        br_model_free(&ref);
    }
    omp_set_num_threads(threads);
    /* Put the fixture's checkpoint back for the tests that load it. */
    br_error err;
    assert_int_equal(br_checkpoint_save(f->ckpt_path, &f->ref, &f->ds, NULL, NULL, &err), 0);
}

/* ---- Id maps ---------------------------------------------------------------- */

static basrec_idmap *load_map(const char *text, char *msg, size_t msglen) {
    char path[64];
    assert_non_null(test_write_tmp(path, sizeof path, text));
    basrec_idmap *map = basrec_idmap_load(path, msg, msglen);
    unlink(path);
    return map;
}

static void test_idmap(void **state) {
    (void)state;
    char msg[256];
    basrec_idmap *map = load_map("new_id\toriginal_id\n1\tB00X\n2\tcaf\xc3\xa9\r\n\n3\t42\n5\tlast",
                                 msg, sizeof msg);
    assert_non_null(map);
    assert_int_equal(basrec_idmap_size(map), 4);
    assert_int_equal(basrec_idmap_id(map, "B00X"), 1);
    assert_int_equal(basrec_idmap_id(map, "caf\xc3\xa9"), 2);
    assert_int_equal(basrec_idmap_id(map, "42"), 3);
    assert_int_equal(basrec_idmap_id(map, "last"), 5);
    assert_int_equal(basrec_idmap_id(map, "nope"), -1);
    assert_int_equal(basrec_idmap_id(map, ""), -1);
    assert_string_equal(basrec_idmap_original(map, 2), "caf\xc3\xa9");
    assert_string_equal(basrec_idmap_original(map, 5), "last");
    assert_null(basrec_idmap_original(map, 4));
    assert_null(basrec_idmap_original(map, 0));
    assert_null(basrec_idmap_original(map, 6));
    basrec_idmap_free(map);
    /* No header; many entries (the hash table grows past its first size). */
    char big[64 * 1024];
    size_t len = 0;
    for (int i = 1; i <= 2000; i++)
        len += (size_t)snprintf(big + len, sizeof big - len, "%d\tu%d\n", i, i * 3);
    assert_non_null(map = load_map(big, msg, sizeof msg));
    assert_int_equal(basrec_idmap_size(map), 2000);
    for (int i = 1; i <= 2000; i += 37) {
        char orig[16];
        snprintf(orig, sizeof orig, "u%d", i * 3);
        assert_int_equal(basrec_idmap_id(map, orig), i);
        assert_string_equal(basrec_idmap_original(map, i), orig);
    }
    basrec_idmap_free(map);
    basrec_idmap_free(NULL);
}

static void test_idmap_errors(void **state) {
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"1\ta\n2 b\n", ":2: expected 'id<TAB>original id'"},
        {"1\ta\nx\tb\n", ":2: id 'x' is not a positive integer"},
        {"1\ta\n0\tb\n", ":2: id '0' is not a positive integer"},
        {"1\ta\n-2\tb\n", ":2: id '-2' is not a positive integer"},
        {"1\ta\n2\t\n", ":2: expected one non-empty original id"},
        {"1\ta\n2\tb\tc\n", ":2: expected one non-empty original id"},
        {"1\ta\n1\tb\n", "id 1 is listed twice"},
        {"1\ta\n2\ta\n", "original id 'a' is listed twice"},
        {"1\ta\n2\t\xff\n", ":2: the original id is not valid UTF-8"},
        {"1\ta\n2\t\xc0\xaf\n", ":2: the original id is not valid UTF-8"},
        {"header only\n", "no ids"},
        {"", "no ids"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[256] = "";
        assert_null(load_map(cases[i].text, msg, sizeof msg));
        if (!strstr(msg, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, msg, cases[i].want);
    }
    char msg[256];
    assert_null(basrec_idmap_load("/nonexistent/map.tsv", msg, sizeof msg));
    assert_non_null(strstr(msg, "/nonexistent/map.tsv"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_model_info),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_matches_internal_path),
        cmocka_unit_test(test_exclude_seen_and_short_lists),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_concurrent_calls),
        cmocka_unit_test(test_other_backbones),
        cmocka_unit_test(test_idmap),
        cmocka_unit_test(test_idmap_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
