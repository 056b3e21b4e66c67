/* Dataset loading, validation messages, split helpers and the synthetic
 * generator. */
#include "testutil.h"

#include <dirent.h>
#include <stdbool.h>

#include "data/dataset.h"

/* Writes text to a temporary file and loads it; the caller unlinks path. */
static int load_text(const char *text, char *path, size_t n, br_dataset *ds, br_error *err) {
    assert_non_null(test_write_tmp(path, n, text));
    return br_dataset_load(path, ds, err);
}

static uint64_t fnv1a64(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static void assert_zeroed(const br_dataset *ds) {
    static const br_dataset zero;
    assert_memory_equal(ds, &zero, sizeof zero);
}

static void test_load_basic(void **state) {
    const char *text = "10 1 2 3 4 5\n20 6 7 8\n30 9 1 9 2\n";
    char path[64];
    br_dataset ds;
    br_error err;
    assert_int_equal(load_text(text, path, sizeof path, &ds, &err), 0);

    assert_string_equal(ds.path, path);
    assert_int_equal(ds.n_users, 3);
    assert_int_equal(ds.n_items, 9);
    assert_int_equal(ds.n_interactions, 12);
    const int64_t offsets[] = {0, 5, 8, 12};
    const int32_t items[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 9, 2};
    const int32_t sorted[] = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 9, 9};
    const int64_t ids[] = {10, 20, 30};
    assert_memory_equal(ds.offsets, offsets, sizeof offsets);
    assert_memory_equal(ds.items, items, sizeof items);
    assert_memory_equal(ds.sorted_items, sorted, sizeof sorted);
    assert_memory_equal(ds.user_ids, ids, sizeof ids);
    assert_true(ds.fingerprint == fnv1a64(text, strlen(text)));
    assert_int_equal(br_seq_len(&ds, 1), 3);
    assert_int_equal(br_seq(&ds, 2)[0], 9);

    br_dataset_free(&ds);
    assert_zeroed(&ds);
    br_dataset_free(&ds); /* a second free is harmless */
    unlink(path);
}

static void test_split_helpers(void **state) {
    char path[64];
    br_dataset ds;
    br_error err;
    assert_int_equal(load_text("10 1 2 3 4 5\n20 6 7 8\n", path, sizeof path, &ds, &err), 0);

    /* Row 0: n = 5. */
    assert_int_equal(br_split_input_len(&ds, 0, BR_SPLIT_TRAIN), 2);
    assert_int_equal(br_split_input_len(&ds, 0, BR_SPLIT_VALID), 3);
    assert_int_equal(br_split_input_len(&ds, 0, BR_SPLIT_TEST), 4);
    assert_int_equal(br_split_input_len(&ds, 0, BR_SPLIT_ALL), 5);
    assert_int_equal(br_split_answer(&ds, 0, BR_SPLIT_VALID), 4);
    assert_int_equal(br_split_answer(&ds, 0, BR_SPLIT_TEST), 5);
    /* TRAIN targets are the input shifted by one: s[1:n-2]. */
    assert_int_equal(br_seq(&ds, 0)[br_split_input_len(&ds, 0, BR_SPLIT_TRAIN)], 3);

    /* Row 1: the shortest allowed row, n = 3, has an empty TRAIN input. */
    assert_int_equal(br_split_input_len(&ds, 1, BR_SPLIT_TRAIN), 0);
    assert_int_equal(br_split_input_len(&ds, 1, BR_SPLIT_VALID), 1);
    assert_int_equal(br_split_input_len(&ds, 1, BR_SPLIT_TEST), 2);
    assert_int_equal(br_split_input_len(&ds, 1, BR_SPLIT_ALL), 3);
    assert_int_equal(br_split_answer(&ds, 1, BR_SPLIT_VALID), 7);
    assert_int_equal(br_split_answer(&ds, 1, BR_SPLIT_TEST), 8);

    br_dataset_free(&ds);
    unlink(path);
}

static void test_contains_and_find_user(void **state) {
    /* User ids deliberately out of order and far apart. */
    const char *text = "300 9 1 9 2\n7 4 5 6\n9000000000000 8 3 1\n55 2 2 2\n";
    char path[64];
    br_dataset ds;
    br_error err;
    assert_int_equal(load_text(text, path, sizeof path, &ds, &err), 0);

    assert_int_equal(br_dataset_find_user(&ds, 300), 0);
    assert_int_equal(br_dataset_find_user(&ds, 7), 1);
    assert_int_equal(br_dataset_find_user(&ds, 9000000000000), 2);
    assert_int_equal(br_dataset_find_user(&ds, 55), 3);
    assert_int_equal(br_dataset_find_user(&ds, 1), -1);
    assert_int_equal(br_dataset_find_user(&ds, 56), -1);
    assert_int_equal(br_dataset_find_user(&ds, 9000000000001), -1);

    assert_true(br_dataset_contains(&ds, 0, 9));
    assert_true(br_dataset_contains(&ds, 0, 1));
    assert_true(br_dataset_contains(&ds, 0, 2));
    assert_false(br_dataset_contains(&ds, 0, 3));
    assert_false(br_dataset_contains(&ds, 0, 10));
    assert_false(br_dataset_contains(&ds, 0, 0));
    assert_true(br_dataset_contains(&ds, 2, 8));
    assert_false(br_dataset_contains(&ds, 2, 2));
    assert_true(br_dataset_contains(&ds, 3, 2));
    assert_false(br_dataset_contains(&ds, 3, 1));

    br_dataset_free(&ds);
    unlink(path);
}

static void test_crlf_tabs_and_no_final_newline(void **state) {
    const char *text = "1\t2 3  4\r\n  2 5\t\t6 7 \t\r\n3 1 1 1";
    char path[64];
    br_dataset ds;
    br_error err;
    assert_int_equal(load_text(text, path, sizeof path, &ds, &err), 0);
    assert_int_equal(ds.n_users, 3);
    assert_int_equal(ds.n_items, 7);
    assert_int_equal(ds.n_interactions, 9);
    const int32_t items[] = {2, 3, 4, 5, 6, 7, 1, 1, 1};
    assert_memory_equal(ds.items, items, sizeof items);
    assert_int_equal(ds.user_ids[2], 3);
    br_dataset_free(&ds);
    unlink(path);
}

static void test_long_row(void **state) {
    /* One row far past the initial array capacity. */
    enum { N = 100000 };
    char *text = malloc(N * 6 + 16);
    assert_non_null(text);
    char *p = text + sprintf(text, "1");
    for (int i = 0; i < N; i++) p += sprintf(p, " %d", i % 977 + 1);
    strcpy(p, "\n");
    char path[64];
    br_dataset ds;
    br_error err;
    assert_int_equal(load_text(text, path, sizeof path, &ds, &err), 0);
    free(text);
    assert_int_equal(ds.n_users, 1);
    assert_int_equal(ds.n_interactions, N);
    assert_int_equal(ds.n_items, 977);
    assert_int_equal(ds.items[N - 1], (N - 1) % 977 + 1);
    for (int32_t item = 1; item <= 977; item++) assert_true(br_dataset_contains(&ds, 0, item));
    br_dataset_free(&ds);
    unlink(path);
}

typedef struct {
    const char *text;
    int line;
    const char *problem;
} bad_case;

static void test_malformed_files(void **state) {
    static const bad_case cases[] = {
        {"1 2 3 4\n2 5 ab3 6\n", 2, "token 'ab3' is not a positive integer"},
        {"1 2 3 4\n2 5 -3 6\n", 2, "token '-3' is not a positive integer"},
        {"1 2 3 4\nu2 5 6 7\n", 2, "token 'u2' is not a positive integer"},
        {"1 2 3 4\n2 5 3.5 6\n", 2, "token '3.5' is not a positive integer"},
        {"1 2 3 4\n2 5 6 7\n\n3 1 2 3\n", 3, "empty line"},
        {"1 2 3 4\n \t \r\n", 2, "empty line"},
        {"1 2 3 4\n\n", 2, "empty line"},
        {"1 2 3 4\n2 5 0 7\n", 2, "item id 0 must be >= 1"},
        {"0 1 2 3\n", 1, "user id 0 must be >= 1"},
        {"1 2 3 4\n42 5 6\n", 2, "user 42 has 2 items; at least 3 are needed"},
        {"7 5\n", 1, "user 7 has 1 item; at least 3 are needed"},
        {"7\n", 1, "user 7 has 0 items; at least 3 are needed"},
        {"1 2 3 4\n42 1 2 3\n3 1 2 3\n42 4 5 6\n", 4, "duplicate user id 42 (first on line 2)"},
        /* The earliest repeated line is reported, whatever the ids. */
        {"5 1 2 3\n9 1 2 3\n7 1 2 3\n9 1 2 3\n5 1 2 3\n", 4,
         "duplicate user id 9 (first on line 2)"},
        {"1 2 3 4\n2 1 2 2147483647\n", 2, "item id 2147483647 is too large (max 2147483646)"},
        {"1 2 3 99999999999999999999999\n", 1,
         "item id 99999999999999999999999 is too large (max 2147483646)"},
        {"9223372036854775808 1 2 3\n", 1,
         "user id 9223372036854775808 is too large (max 9223372036854775807)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[64], expected[512];
        br_dataset ds;
        br_error err = {{0}};
        assert_int_equal(load_text(cases[i].text, path, sizeof path, &ds, &err), -1);
        snprintf(expected, sizeof expected, "%s:%d: %s", path, cases[i].line, cases[i].problem);
        if (!strstr(err.msg, expected))
            fail_msg("case %zu: got \"%s\", expected \"%s\"", i, err.msg, expected);
        assert_zeroed(&ds);
        br_dataset_free(&ds);
        unlink(path);
    }
}

static void test_long_bad_token_is_truncated(void **state) {
    char text[256] = "1 2 3 ", path[64];
    memset(text + 6, 'x', 200);
    br_dataset ds;
    br_error err;
    assert_int_equal(load_text(text, path, sizeof path, &ds, &err), -1);
    char expected[128];
    snprintf(expected, sizeof expected, "%s:1: token 'xxxxxxxxxx", path);
    assert_non_null(strstr(err.msg, expected));
    assert_non_null(strstr(err.msg, "...' is not a positive integer"));
    unlink(path);
}

static void test_empty_missing_and_unreadable(void **state) {
    char path[64], expected[128];
    br_dataset ds;
    br_error err;
    assert_int_equal(load_text("", path, sizeof path, &ds, &err), -1);
    snprintf(expected, sizeof expected, "%s: no sequences", path);
    assert_string_equal(err.msg, expected);
    assert_zeroed(&ds);
    unlink(path);

    assert_int_equal(br_dataset_load("/nonexistent/basrec/data.txt", &ds, &err), -1);
    assert_string_equal(err.msg,
                        "/nonexistent/basrec/data.txt: cannot open: No such file or directory");
    assert_zeroed(&ds);

    assert_int_equal(br_dataset_load("/tmp", &ds, &err), -1);
    assert_non_null(strstr(err.msg, "/tmp: cannot read"));
    assert_zeroed(&ds);
}

/* Reads a whole file into a malloc'd buffer. */
static char *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_synth_loads_and_is_deterministic(void **state) {
    char dir[] = "/tmp/basrec-synth-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char a[64], b[64], c[64];
    snprintf(a, sizeof a, "%s/a.txt", dir);
    snprintf(b, sizeof b, "%s/b.txt", dir);
    snprintf(c, sizeof c, "%s/c.txt", dir);
    br_error err;
    assert_int_equal(br_synth_write(a, 500, 300, 1, &err), 0);
    assert_int_equal(br_synth_write(b, 500, 300, 1, &err), 0);
    assert_int_equal(br_synth_write(c, 500, 300, 2, &err), 0);
    assert_int_equal(count_dir_entries(dir), 3); /* no temporary files left */

    br_dataset ds;
    assert_int_equal(br_dataset_load(a, &ds, &err), 0);
    assert_int_equal(ds.n_users, 500);
    assert_int_equal(ds.n_items, 300);
    int32_t *seen = calloc(301, sizeof *seen);
    assert_non_null(seen);
    for (int32_t u = 0; u < ds.n_users; u++) {
        assert_int_equal(ds.user_ids[u], u + 1);
        assert_in_range(br_seq_len(&ds, u), 5, 60);
        for (int32_t i = 0; i < br_seq_len(&ds, u); i++) seen[br_seq(&ds, u)[i]]++;
    }
    for (int32_t item = 1; item <= 300; item++) assert_true(seen[item] > 0);
    free(seen);
    double mean_len = (double)ds.n_interactions / ds.n_users;
    assert_true(mean_len > 7.5 && mean_len < 10.5);
    br_dataset_free(&ds);

    size_t la, lb, lc;
    char *ba = slurp(a, &la), *bb = slurp(b, &lb), *bc = slurp(c, &lc);
    assert_true(la == lb && memcmp(ba, bb, la) == 0);
    assert_false(la == lc && memcmp(ba, bc, la) == 0);
    free(ba);
    free(bb);
    free(bc);
    unlink(a);
    unlink(b);
    unlink(c);
    rmdir(dir);
}

static void test_synth_tiny_and_invalid(void **state) {
    char dir[] = "/tmp/basrec-synth-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/s.txt", dir);
    br_error err;
    br_dataset ds;
    /* A single item: every row repeats it. */
    assert_int_equal(br_synth_write(path, 3, 1, 7, &err), 0);
    assert_int_equal(br_dataset_load(path, &ds, &err), 0);
    assert_int_equal(ds.n_users, 3);
    assert_int_equal(ds.n_items, 1);
    br_dataset_free(&ds);
    /* More items than slots: as many as possible are covered, none invalid. */
    assert_int_equal(br_synth_write(path, 2, 1000, 7, &err), 0);
    assert_int_equal(br_dataset_load(path, &ds, &err), 0);
    assert_in_range(ds.n_items, 1, 1000);
    br_dataset_free(&ds);
    unlink(path);

    assert_int_equal(br_synth_write(path, 0, 10, 1, &err), -1);
    assert_non_null(strstr(err.msg, "n_users >= 1"));
    assert_int_equal(br_synth_write(path, 10, 0, 1, &err), -1);
    assert_int_equal(count_dir_entries(dir), 0);
    rmdir(dir);
}

/* Fills top[0..k) with the k largest scores' indices in 1..n. */
static void top_k(const int32_t *score, int32_t n, int32_t *top, int k) {
    for (int j = 0; j < k; j++) {
        int32_t best = 0;
        for (int32_t i = 1; i <= n; i++) {
            bool used = false;
            for (int q = 0; q < j; q++) used = used || top[q] == i;
            if (!used && (best == 0 || score[i] > score[best])) best = i;
        }
        top[j] = best;
    }
}

/* The generator must carry sequential signal: a bigram "last item -> next"
 * model fitted on the TEST inputs must beat popularity clearly on TEST. */
static void test_synth_is_learnable(void **state) {
    enum { USERS = 1500, ITEMS = 400, K = 10 };
    char dir[] = "/tmp/basrec-synth-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/s.txt", dir);
    br_error err;
    br_dataset ds;
    assert_int_equal(br_synth_write(path, USERS, ITEMS, 3, &err), 0);
    assert_int_equal(br_dataset_load(path, &ds, &err), 0);

    int32_t *pop = calloc(ITEMS + 1, sizeof *pop);
    int32_t *bigram = calloc((size_t)(ITEMS + 1) * (ITEMS + 1), sizeof *bigram);
    assert_non_null(pop);
    assert_non_null(bigram);
    for (int32_t u = 0; u < ds.n_users; u++) {
        const int32_t *s = br_seq(&ds, u);
        int32_t n = br_split_input_len(&ds, u, BR_SPLIT_TEST);
        for (int32_t i = 0; i < n; i++) pop[s[i]]++;
        for (int32_t i = 1; i < n; i++) bigram[(size_t)s[i - 1] * (ITEMS + 1) + s[i]]++;
    }
    int32_t pop_top[K], top[K];
    top_k(pop, ITEMS, pop_top, K);
    int pop_hits = 0, bigram_hits = 0;
    for (int32_t u = 0; u < ds.n_users; u++) {
        int32_t n = br_split_input_len(&ds, u, BR_SPLIT_TEST);
        int32_t last = br_seq(&ds, u)[n - 1], answer = br_split_answer(&ds, u, BR_SPLIT_TEST);
        top_k(bigram + (size_t)last * (ITEMS + 1), ITEMS, top, K);
        for (int j = 0; j < K; j++) {
            pop_hits += pop_top[j] == answer;
            bigram_hits += top[j] == answer;
        }
    }
    print_message("synth HR@10: bigram %.3f, popularity %.3f\n", (double)bigram_hits / USERS,
                  (double)pop_hits / USERS);
    assert_true(bigram_hits > 2 * pop_hits);
    assert_true(bigram_hits > USERS / 3);
    free(pop);
    free(bigram);
    br_dataset_free(&ds);
    unlink(path);
    rmdir(dir);
}

static void test_shared_beauty(void **state) {
    const char *dir = test_shared_data_dir();
    char path[512];
    if (dir) snprintf(path, sizeof path, "%s/Beauty.txt", dir);
    if (!dir || access(path, R_OK) != 0) {
        skip();
        return;
    }
    br_dataset ds;
    br_error err;
    assert_int_equal(br_dataset_load(path, &ds, &err), 0);
    assert_int_equal(ds.n_users, 22363);
    assert_int_equal(ds.n_items, 12101);
    assert_int_equal(ds.n_interactions, 198502);
    for (int32_t u = 0; u < ds.n_users; u++)
        assert_int_equal(br_dataset_find_user(&ds, ds.user_ids[u]), u);
    br_dataset_free(&ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_basic),
        cmocka_unit_test(test_split_helpers),
        cmocka_unit_test(test_contains_and_find_user),
        cmocka_unit_test(test_crlf_tabs_and_no_final_newline),
        cmocka_unit_test(test_long_row),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_long_bad_token_is_truncated),
        cmocka_unit_test(test_empty_missing_and_unreadable),
        cmocka_unit_test(test_synth_loads_and_is_deterministic),
        cmocka_unit_test(test_synth_tiny_and_invalid),
        cmocka_unit_test(test_synth_is_learnable),
        cmocka_unit_test(test_shared_beauty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
