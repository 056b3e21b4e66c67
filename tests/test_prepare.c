/* basrec prepare: timestamp and number parsing, CSV/TSV/JSON-lines reading,
 * ordering, k-core filtering, bad-row handling, outputs that load and whose
 * mappings round-trip, and a fuzz test of mutated inputs (run under ASan and
 * valgrind in CI). */
#include "testutil.h"

#include <dirent.h>
#include <inttypes.h>

#include "data/dataset.h"
#include "data/prepare.h"

/* ---- helpers ---------------------------------------------------------- */

static char dir[64];
static char out_path[128], users_path[160], items_path[160];

static int setup(void **state) {
    snprintf(dir, sizeof dir, "/tmp/basrec-prep-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(out_path, sizeof out_path, "%s/out.txt", dir);
    snprintf(users_path, sizeof users_path, "%s.users.tsv", out_path);
    snprintf(items_path, sizeof items_path, "%s.items.tsv", out_path);
    return 0;
}

/* Removes a directory tree (what a failed test left behind included). */
static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    char sub[512];
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        remove_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

static int teardown(void **state) {
    remove_tree(dir);
    return 0;
}

static void write_bytes(const char *path, const char *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (len) assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* The whole file as a string (NULL if missing); the caller frees. */
static char *slurp(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
        len += got;
        if (len + 1 == cap) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    fclose(fp);
    buf[len] = '\0';
    return buf;
}

static void assert_file(const char *path, const char *want) {
    char *got = slurp(path);
    if (!got) fail_msg("%s is missing", path);
    if (strcmp(got, want) != 0) fail_msg("%s:\n--- got ---\n%s--- want ---\n%s", path, got, want);
    free(got);
}

static int count_dir_entries(void) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Options for a log at DIR/name written from text: output DIR/out.txt,
 * no rating, users >= 3 and items >= 1 (no item filtering). */
static br_prepare_options opts_for(const char *name, const char *text, size_t len,
                                   char *path_buf, size_t path_n) {
    snprintf(path_buf, path_n, "%s/%s", dir, name);
    unlink(path_buf); /* rewriting a file in place makes ext4 flush it: slow */
    write_bytes(path_buf, text, len);
    br_prepare_options o;
    br_prepare_defaults(&o);
    o.input = path_buf;
    o.out = out_path;
    o.min_user = 3;
    o.min_item = 1;
    return o;
}

static void prepare_ok(const br_prepare_options *o, br_prepare_stats *st) {
    br_error err;
    if (br_prepare(o, st, &err) != 0) fail_msg("br_prepare failed: %s", err.msg);
}

/* Runs a failing preparation; returns its message (static). */
static const char *prepare_fails(const br_prepare_options *o) {
    static br_error err;
    br_prepare_stats st;
    memset(&err, 0, sizeof err);
    assert_int_equal(br_prepare(o, &st, &err), -1);
    assert_true(err.msg[0] != '\0');
    return err.msg;
}

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void remove_outputs(void) {
    unlink(out_path);
    unlink(users_path);
    unlink(items_path);
}

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnext(rng *r) {
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static int rint_(rng *r, int n) { return (int)(rnext(r) % (uint64_t)n); }

/* A mapping file as an array of original ids indexed by new id (1-based). */
typedef struct idmap {
    char *text;
    char **orig;
    int n;
} idmap;

static idmap load_map(const char *path) {
    idmap m = {slurp(path), NULL, 0};
    assert_non_null(m.text);
    int lines = 0;
    for (char *c = m.text; *c; c++) lines += *c == '\n';
    m.orig = calloc((size_t)lines + 2, sizeof *m.orig);
    assert_non_null(m.orig);
    for (char *line = m.text; *line;) {
        char *nl = strchr(line, '\n'), *tab = strchr(line, '\t');
        assert_non_null(nl);
        assert_true(tab && tab < nl);
        *nl = *tab = '\0';
        assert_int_equal(atoi(line), m.n + 1); /* ids 1..n in order */
        m.orig[++m.n] = tab + 1;
        line = nl + 1;
    }
    return m;
}

static void free_map(idmap *m) {
    free(m->text);
    free(m->orig);
}

/* ---- parsing ---------------------------------------------------------- */

static void expect_time(const char *s, int64_t want) {
    int64_t got = 0;
    const char *why = br_parse_timestamp(s, strlen(s), &got);
    if (why) fail_msg("'%s': %s", s, why);
    if (got != want) fail_msg("'%s': %" PRId64 " != %" PRId64, s, got, want);
}

static void expect_bad_time(const char *s, const char *why_part) {
    int64_t t;
    const char *why = br_parse_timestamp(s, strlen(s), &t);
    if (!why) fail_msg("'%s' was accepted", s);
    assert_contains(why, why_part);
}

static void test_timestamps(void **state) {
    const int64_t M = 1000000, jan2 = INT64_C(1546387200) * M;
    expect_time("2019-01-02", jan2);
    expect_time("1970-01-01", 0);
    expect_time("2000-03-01", INT64_C(951868800) * M);
    expect_time("2020-02-29", INT64_C(1582934400) * M);
    expect_time("1969-12-31T23:59:59Z", -M);
    expect_time("2019-01-02T03:04:05Z", jan2 + 11045 * M);
    expect_time("2019-01-02T03:04:05", jan2 + 11045 * M);
    expect_time("2019-01-02 03:04", jan2 + 11040 * M);
    expect_time("2019-01-02t03:04:05.5z", jan2 + 11045 * M + 500000);
    expect_time("2019-01-02T03:04:05.123456789+01:00", jan2 + (11045 - 3600) * M + 123456);
    expect_time("2019-01-02T03:04:05-0130", jan2 + (11045 + 5400) * M);
    expect_time("2019-01-02T03:04:05+05", jan2 + (11045 - 18000) * M);
    /* Integers: seconds below 1e11, milliseconds above; decimals allowed. */
    expect_time("1546387200", jan2);
    expect_time("1546387200000", jan2);
    expect_time("1546387200.25", jan2 + 250000);
    expect_time("1546387200123.5", jan2 + 123500);
    expect_time("0", 0);
    expect_time("-1", -M);
    expect_time("99999999999", INT64_C(99999999999) * M);
    expect_time("100000000000", INT64_C(100000000000) * 1000);

    expect_bad_time("", "empty");
    expect_bad_time("2019-02-29", "day out of range");
    expect_bad_time("1900-02-29", "day out of range");
    expect_bad_time("2019-04-31", "day out of range");
    expect_bad_time("2019-01-00", "day out of range");
    expect_bad_time("2019-13-01", "month out of range");
    expect_bad_time("2019-00-10", "month out of range");
    expect_bad_time("2019-1-02", "YYYY-MM-DD");
    expect_bad_time("2019-01-02x", "after the date");
    expect_bad_time("2019-01-02T", "HH:MM");
    expect_bad_time("2019-01-02T3:04", "HH:MM");
    expect_bad_time("2019-01-02T24:00", "hour out of range");
    expect_bad_time("2019-01-02T23:60", "minute out of range");
    expect_bad_time("2019-01-02T23:59:60", "second out of range");
    expect_bad_time("2019-01-02T23:59:5", "SS");
    expect_bad_time("2019-01-02T03:04:05.", "empty fraction");
    expect_bad_time("2019-01-02T03:04:05.x", "empty fraction");
    expect_bad_time("2019-01-02T03:04:05+05:", "zone offset");
    expect_bad_time("2019-01-02T03:04:05+5", "zone offset");
    expect_bad_time("2019-01-02T03:04:05+24:00", "zone offset out of range");
    expect_bad_time("2019-01-02T03:04:05+01:60", "zone offset out of range");
    expect_bad_time("2019-01-02T03:04:05Zx", "after the time");
    expect_bad_time("2019-01-02T03:04:05 ", "after the time");
    expect_bad_time("12a", "not a number");
    expect_bad_time("-", "not a number");
    expect_bad_time("+5", "not a number");
    expect_bad_time(" 5", "not a number");
    expect_bad_time("1e9", "not a number");
    expect_bad_time("1.", "not a number");
    expect_bad_time("1.5.2", "not a number");
    expect_bad_time("1234567890123456", "out of range");
}

static void test_numbers(void **state) {
    const char *good[] = {"4", "-1.5", "3e2", ".5", "5.", "+2", "1E-3"};
    const double want[] = {4, -1.5, 300, 0.5, 5, 2, 0.001};
    for (int i = 0; i < 7; i++) {
        double v;
        assert_null(br_parse_number(good[i], strlen(good[i]), &v));
        assert_true(v == want[i]);
    }
    const char *bad[] = {"", "abc", "1e", "inf", "nan", "0x10", "1 ", " 1", ".", "-", "1e999"};
    for (int i = 0; i < 11; i++) {
        double v;
        if (!br_parse_number(bad[i], strlen(bad[i]), &v)) fail_msg("'%s' was accepted", bad[i]);
    }
}

/* ---- formats ---------------------------------------------------------- */

static void test_csv_quoting(void **state) {
    /* BOM, CRLF, quoted header, delimiters and doubled quotes inside quotes,
     * a line break inside a quoted (unused) field, spaces around fields. */
    const char text[] = "\xEF\xBB\xBF\"user_id\",item_id,timestamp,note\r\n"
                        "u1,\"a,b\",1,\"note, with \"\"quotes\"\"\"\r\n"
                        "u1,\"say \"\"hi\"\"\",2,\"multi\r\nline\"\r\n"
                        "u1, plain ,3,x\r\n"
                        "u3,x\r\n"
                        "\"u\"\"2\",\"a,b\",1,\r\n"
                        "\r\n"
                        "\"u\"\"2\",  plain,2,\r\n"
                        "\"u\"\"2\",\"say \"\"hi\"\"\" ,3,";
    char path[128];
    br_prepare_options o = opts_for("log.csv", text, sizeof text - 1, path, sizeof path);
    br_prepare_stats st;
    prepare_ok(&o, &st);
    assert_int_equal(st.rows, 7);
    assert_int_equal(st.bad_rows, 1);
    assert_int_equal(st.bad_lines[0], 6); /* the quoted line break makes it line 6 */
    char want_bad[256];
    snprintf(want_bad, sizeof want_bad, "%s:6: expected 4 fields, found 2", path);
    assert_string_equal(st.first_bad, want_bad);
    assert_file(out_path, "1 1 2 3\n2 1 3 2\n");
    assert_file(users_path, "1\tu1\n2\tu\"2\n");
    assert_file(items_path, "1\ta,b\n2\tsay \"hi\"\n3\tplain\n");
    assert_int_equal(st.users_before, 2);
    assert_int_equal(st.items_before, 3);
    assert_int_equal(st.interactions_after, 6);
}

static void test_tsv_and_delimiters(void **state) {
    /* A comma inside a TSV field is data; the header has more tabs. */
    const char tsv[] = "user_id\titem_id\ttimestamp\n"
                       "u1\ta,b\t2019-01-03\n"
                       "u1\tc\t2019-01-01T10:00:00+02:00\n"
                       "u1\td\t2019-01-01T09:00:00+00:00\n";
    char path[128];
    br_prepare_options o = opts_for("log.tsv", tsv, sizeof tsv - 1, path, sizeof path);
    br_prepare_stats st;
    prepare_ok(&o, &st);
    assert_file(out_path, "1 1 2 3\n");
    assert_file(items_path, "1\tc\n2\td\n3\ta,b\n");
    o.delimiter = '\t'; /* --format tsv */
    prepare_ok(&o, &st);
    assert_file(out_path, "1 1 2 3\n");

    const char semi[] = "user_id;item_id;timestamp\nu;x,1;1\nu;y;2\nu;z;3\n";
    o = opts_for("semi.csv", semi, sizeof semi - 1, path, sizeof path);
    prepare_ok(&o, &st);
    assert_file(items_path, "1\tx,1\n2\ty\n3\tz\n");
    const char pipe[] = "user_id|item_id|timestamp\nu|x|3\nu|y|2\nu|z|1\n";
    o = opts_for("pipe.csv", pipe, sizeof pipe - 1, path, sizeof path);
    prepare_ok(&o, &st);
    assert_file(items_path, "1\tz\n2\ty\n3\tx\n");

    const char none[] = "user_id item_id timestamp\nu x 1\n";
    o = opts_for("none.csv", none, sizeof none - 1, path, sizeof path);
    assert_contains(prepare_fails(&o), "give --delimiter");
    o.delimiter = ' ';
    assert_contains(prepare_fails(&o), "no users left");
}

static void test_jsonl(void **state) {
    const char text[] =
        "{\"user_id\": \"u1\", \"item_id\": 10, \"timestamp\": \"2019-01-02T00:00:00Z\"}\n"
        "{\"user_id\": \"u1\", \"item_id\": \"10\", \"timestamp\": 1546300800}\r\n"
        "   \n"
        "{\"user_id\": \"u1\", \"item_id\": \"x\", \"timestamp\": 1546300800000, \"e\": [1]}\n"
        "{\"user_id\": \"u1\", \"item_id\": \"y\"\n"
        "[1, 2, 3]\n"
        "{\"user_id\": \"u1\", \"item_id\": \"z\", \"timestamp\": 1.5}\n"
        "{\"user_id\": null, \"item_id\": \"z\", \"timestamp\": 1}\n"
        "{\"item_id\": \"z\", \"timestamp\": 1}\n"
        "{\"user_id\": \"u1\", \"item_id\": \"z\", \"timestamp\": 2, \"timestamp\": 3}\n"
        "{\"user_id\": 7, \"item_id\": \"z\", \"timestamp\": \"2019-01-01\"}";
    char path[128];
    br_prepare_options o = opts_for("log.jsonl", text, sizeof text - 1, path, sizeof path);
    o.format = BR_LOG_JSONL;
    o.min_user = 3;
    br_prepare_stats st;
    prepare_ok(&o, &st);
    assert_int_equal(st.rows, 10);
    assert_int_equal(st.bad_rows, 6);
    const int64_t lines[] = {5, 6, 7, 8, 9};
    assert_memory_equal(st.bad_lines, lines, sizeof lines);
    assert_contains(st.first_bad, ":5: malformed JSON");
    /* 10 (integer) and "10" are one item; the two events at the same
     * second (one in ms) keep file order. User 7 has one event: filtered. */
    assert_file(out_path, "1 1 2 1\n");
    assert_file(users_path, "1\tu1\n");
    assert_file(items_path, "1\t10\n2\tx\n");
    assert_int_equal(st.users_before, 2);
    assert_int_equal(st.users_after, 1);

    /* Strict: the first bad row, with its problem. */
    o.strict = true;
    char want[256];
    snprintf(want, sizeof want, "%s:5: malformed JSON", path);
    assert_contains(prepare_fails(&o), want);
    /* Type errors are reported by field name. */
    const char types[] = "{\"user_id\": \"u\", \"item_id\": \"i\", \"timestamp\": true}\n";
    o = opts_for("types.jsonl", types, sizeof types - 1, path, sizeof path);
    o.format = BR_LOG_JSONL;
    o.strict = true;
    assert_contains(prepare_fails(&o), ":1: field 'timestamp' must be an integer or a string");
}

/* ---- ordering and filtering ------------------------------------------- */

static void test_ties_keep_file_order(void **state) {
    /* 100 events with times k*7 mod 10 (many ties, out of order): the
     * output must be the stable sort, which takes the merge-sort path. */
    char text[8192];
    int len = snprintf(text, sizeof text, "user_id,item_id,timestamp\n");
    int times[100], order[100];
    for (int k = 0; k < 100; k++) {
        times[k] = (k * 7) % 10;
        order[k] = k;
        len += snprintf(text + len, sizeof text - (size_t)len, "u,i%d,%d\n", k, times[k]);
    }
    for (int a = 1; a < 100; a++) /* stable insertion sort by time */
        for (int b = a; b > 0 && times[order[b - 1]] > times[order[b]]; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    char path[128];
    br_prepare_options o = opts_for("ties.csv", text, (size_t)len, path, sizeof path);
    br_prepare_stats st;
    prepare_ok(&o, &st);
    idmap items = load_map(items_path);
    assert_int_equal(items.n, 100);
    for (int k = 0; k < 100; k++) {
        char want[16];
        snprintf(want, sizeof want, "i%d", order[k]);
        assert_string_equal(items.orig[k + 1], want); /* numbered by first appearance */
    }
    free_map(&items);
    char want_seq[1024];
    int n = snprintf(want_seq, sizeof want_seq, "1");
    for (int k = 1; k <= 100; k++)
        n += snprintf(want_seq + n, sizeof want_seq - (size_t)n, " %d", k);
    snprintf(want_seq + n, sizeof want_seq - (size_t)n, "\n");
    assert_file(out_path, want_seq);
}

static void test_kcore_cascade(void **state) {
    /* Users need 3 interactions, items 2. Item p has one user: removing it
     * leaves C with 2 -> C goes -> w keeps only D -> w goes -> D keeps 2 ->
     * D goes. Four rounds of removals; A and B survive with x, y, z. */
    const char text[] = "user_id,item_id,timestamp\n"
                        "A,x,1\nA,y,2\nA,z,3\n"
                        "B,z,1\nB,y,2\nB,x,3\n"
                        "C,p,1\nC,y,2\nC,w,3\n"
                        "D,w,1\nD,y,2\nD,z,3\n";
    char path[128];
    br_prepare_options o = opts_for("kcore.csv", text, sizeof text - 1, path, sizeof path);
    o.min_item = 2;
    br_prepare_stats st;
    prepare_ok(&o, &st);
    assert_int_equal(st.users_before, 4);
    assert_int_equal(st.items_before, 5);
    assert_int_equal(st.interactions_before, 12);
    assert_int_equal(st.users_after, 2);
    assert_int_equal(st.items_after, 3);
    assert_int_equal(st.interactions_after, 6);
    assert_file(out_path, "1 1 2 3\n2 3 2 1\n");
    assert_file(users_path, "1\tA\n2\tB\n");
    assert_file(items_path, "1\tx\n2\ty\n3\tz\n");

    /* Thresholds that remove everything: an error, and no files. */
    remove_outputs();
    o.min_user = 4;
    assert_contains(prepare_fails(&o), "no users left after k-core filtering");
    assert_null(slurp(out_path));
    assert_null(slurp(items_path));
}

/* Naive k-core: full passes until nothing changes. */
static void naive_kcore(int n_ev, const int *eu, const int *ei, int nu, int ni, int min_u,
                        int min_i, int64_t *users, int64_t *items, int64_t *inter) {
    int ualive[64], ialive[64];
    for (int u = 0; u < nu; u++) ualive[u] = 1;
    for (int i = 0; i < ni; i++) ialive[i] = 1;
    for (int changed = 1; changed;) {
        int ud[64] = {0}, id[64] = {0};
        for (int e = 0; e < n_ev; e++)
            if (ualive[eu[e]] && ialive[ei[e]]) ud[eu[e]]++, id[ei[e]]++;
        changed = 0;
        for (int u = 0; u < nu; u++)
            if (ualive[u] && ud[u] < min_u) ualive[u] = 0, changed = 1;
        for (int i = 0; i < ni; i++)
            if (ialive[i] && id[i] < min_i) ialive[i] = 0, changed = 1;
    }
    *users = *items = *inter = 0;
    int iseen[64] = {0};
    for (int e = 0; e < n_ev; e++)
        if (ualive[eu[e]] && ialive[ei[e]]) (*inter)++, iseen[ei[e]] = 1;
    for (int u = 0; u < nu; u++) *users += ualive[u];
    for (int i = 0; i < ni; i++) *items += iseen[i];
}

static void test_kcore_matches_naive(void **state) {
    rng r = {0x1234567};
    for (int iter = 0; iter < 200; iter++) {
        int nu = 5 + rint_(&r, 40), ni = 5 + rint_(&r, 20), n_ev = 20 + rint_(&r, 200);
        int min_u = 3 + rint_(&r, 3), min_i = 1 + rint_(&r, 4);
        int eu[256], ei[256];
        static char text[16384];
        int len = snprintf(text, sizeof text, "user_id,item_id,timestamp\n");
        for (int e = 0; e < n_ev; e++) {
            /* Skewed, so that some users and items are near the thresholds. */
            eu[e] = rint_(&r, nu) * rint_(&r, nu) / nu;
            ei[e] = rint_(&r, ni) * rint_(&r, ni) / ni;
            len += snprintf(text + len, sizeof text - (size_t)len, "u%d,i%d,%d\n", eu[e], ei[e],
                            rint_(&r, 5));
        }
        int64_t users, items, inter;
        naive_kcore(n_ev, eu, ei, nu, ni, min_u, min_i, &users, &items, &inter);
        char path[128];
        br_prepare_options o = opts_for("rand.csv", text, (size_t)len, path, sizeof path);
        o.out = NULL;
        o.min_user = min_u;
        o.min_item = min_i;
        br_prepare_stats st;
        br_error err;
        int rc = br_prepare(&o, &st, &err);
        if (users == 0) {
            assert_int_equal(rc, -1);
            assert_contains(err.msg, "no users left");
            continue;
        }
        if (rc != 0) fail_msg("%s", err.msg);
        assert_int_equal(st.users_after, users);
        assert_int_equal(st.items_after, items);
        assert_int_equal(st.interactions_after, inter);
    }
}

static void test_rating_filter(void **state) {
    const char text[] = "user_id,item_id,rating,timestamp\n"
                        "u,a,5,1\nu,b,3.5,2\nu,c,4,3\nu,d,4.0,4\nu,e,abc,5\nu,f,,6\nu,g,1e1,7\n";
    char path[128];
    br_prepare_options o = opts_for("rated.csv", text, sizeof text - 1, path, sizeof path);
    o.rating_col = "rating";
    o.use_min_rating = true;
    o.min_rating = 4;
    br_prepare_stats st;
    prepare_ok(&o, &st);
    assert_int_equal(st.rows, 7);
    assert_int_equal(st.below_min_rating, 1);
    assert_int_equal(st.bad_rows, 2);
    assert_int_equal(st.bad_lines[0], 6);
    assert_int_equal(st.bad_lines[1], 7);
    assert_contains(st.first_bad, "'rating' value 'abc': not a number");
    assert_file(items_path, "1\ta\n2\tc\n3\td\n4\tg\n");

    o.rating_col = NULL; /* a minimum without a column */
    assert_contains(prepare_fails(&o), "rating column");
    o.rating_col = "score";
    assert_contains(prepare_fails(&o), "no column 'score'");
}

/* ---- bad input -------------------------------------------------------- */

static const char bad_csv[] = "user_id,item_id,timestamp\n" /* 1 */
                              "u,a,1\n"                     /* 2 */
                              "u,b\n"                       /* 3: too few fields */
                              "u,c,3,extra\n"               /* 4: too many */
                              ",d,4\n"                      /* 5: empty user */
                              "u,e,2019-02-30\n"            /* 6: bad date */
                              "u,\"f\"x,6\n"                /* 7: text after a quote */
                              "u,g,7\n"                     /* 8 */
                              "u,\xff,8\n"                  /* 9: not UTF-8 */
                              "u,h,9\n"                     /* 10 */
                              "u,\"i,10\n";                 /* 11: unterminated */

static void test_bad_rows_lenient(void **state) {
    char path[128];
    br_prepare_options o = opts_for("bad.csv", bad_csv, sizeof bad_csv - 1, path, sizeof path);
    br_prepare_stats st;
    prepare_ok(&o, &st);
    assert_int_equal(st.rows, 10);
    assert_int_equal(st.bad_rows, 7);
    const int64_t lines[] = {3, 4, 5, 6, 7};
    assert_memory_equal(st.bad_lines, lines, sizeof lines);
    char want[256];
    snprintf(want, sizeof want, "%s:3: expected 3 fields, found 2", path);
    assert_string_equal(st.first_bad, want);
    assert_file(out_path, "1 1 2 3\n");
    assert_file(items_path, "1\ta\n2\tg\n3\th\n");
}

static void test_bad_rows_strict(void **state) {
    /* Each bad line alone after a good header and row: the exact message. */
    static const struct {
        const char *row;
        const char *problem;
    } cases[] = {
        {"u,b\n", "expected 3 fields, found 2"},
        {"u,c,3,extra\n", "expected 3 fields, found 4"},
        {",d,4\n", "empty 'user_id'"},
        {"u,,4\n", "empty 'item_id'"},
        {"u,e,2019-02-30\n", "'timestamp' value '2019-02-30': day out of range"},
        {"u,e,\n", "'timestamp' value '': empty"},
        {"u,\"f\"x,6\n", "unexpected character after a closing quote"},
        {"u,\xff,8\n", "'item_id' is not valid UTF-8"},
        {"u,\xc0\xaf,8\n", "'item_id' is not valid UTF-8"},
        {"u,\xed\xa0\x80,8\n", "'item_id' is not valid UTF-8"},
        {"u\t1,a,8\n", "'user_id' contains a tab, line break or NUL byte"},
        {"\"u\n1\",a,8\n", "'user_id' contains a tab, line break or NUL byte"},
        {"u,\"i,10\n", "unterminated quoted field"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char text[256], path[128], want[256];
        int len = snprintf(text, sizeof text, "user_id,item_id,timestamp\nu,a,1\n%s", cases[k].row);
        br_prepare_options o = opts_for("strict.csv", text, (size_t)len, path, sizeof path);
        o.strict = true;
        snprintf(want, sizeof want, "%s:3: %s", path, cases[k].problem);
        assert_string_equal(prepare_fails(&o), want);
    }
    /* Valid UTF-8 passes. */
    const char ok[] = "user_id,item_id,timestamp\nu,caf\xc3\xa9,1\nu,\xf0\x9f\x8e\xb5,2\nu,x,3\n";
    char path[128];
    br_prepare_options o = opts_for("utf8.csv", ok, sizeof ok - 1, path, sizeof path);
    o.strict = true;
    br_prepare_stats st;
    prepare_ok(&o, &st);
    assert_file(items_path, "1\tcaf\xc3\xa9\n2\t\xf0\x9f\x8e\xb5\n3\tx\n");
}

static void test_header_errors(void **state) {
    char path[128];
    const char missing[] = "user_id,item,ts\nu,a,1\n";
    br_prepare_options o = opts_for("missing.csv", missing, sizeof missing - 1, path, sizeof path);
    char want[256];
    snprintf(want, sizeof want,
             "%s: no column 'item_id' in the header (columns: 'user_id', 'item', 'ts')", path);
    assert_string_equal(prepare_fails(&o), want);
    o.item_col = "item";
    assert_contains(prepare_fails(&o), "no column 'timestamp'");

    const char twice[] = "user_id,item_id,timestamp,item_id\n";
    o = opts_for("twice.csv", twice, sizeof twice - 1, path, sizeof path);
    assert_contains(prepare_fails(&o), "column 'item_id' appears twice");

    o = opts_for("empty.csv", "", 0, path, sizeof path);
    assert_contains(prepare_fails(&o), "empty file");
    o = opts_for("blank.csv", "\n\r\n  \n", 6, path, sizeof path);
    assert_contains(prepare_fails(&o), "empty file");
    const char only[] = "user_id,item_id,timestamp\n";
    o = opts_for("only.csv", only, sizeof only - 1, path, sizeof path);
    snprintf(want, sizeof want, "%s: no valid rows", path);
    assert_string_equal(prepare_fails(&o), want);
    const char allbad[] = "user_id,item_id,timestamp\nu,a,x\n";
    o = opts_for("allbad.csv", allbad, sizeof allbad - 1, path, sizeof path);
    assert_contains(prepare_fails(&o), "no valid rows (1 bad; first: ");
    const char quote[] = "user_id,\"item_id,timestamp\n";
    o = opts_for("quote.csv", quote, sizeof quote - 1, path, sizeof path);
    assert_contains(prepare_fails(&o), ":1: header: unterminated quoted field");

    o.input = "/nonexistent/log.csv";
    assert_contains(prepare_fails(&o), "/nonexistent/log.csv: cannot open");
    o = opts_for("x.csv", only, sizeof only - 1, path, sizeof path);
    o.min_user = 2;
    assert_contains(prepare_fails(&o), "at least 3 items per user");
    o.min_user = 3;
    o.time_col = "item_id";
    assert_contains(prepare_fails(&o), "two roles");
}

static void test_long_rows(void **state) {
    char text[512], path[128];
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    int len = snprintf(text, sizeof text,
                       "user_id,item_id,timestamp\nu,a,1\nu,%s,2\nu,b,3\nu,c,4\nu,\"d\n%s\",5\n"
                       "u,e,6",
                       big, big);
    br_prepare_options o = opts_for("long.csv", text, (size_t)len, path, sizeof path);
    o.max_record = 64;
    br_prepare_stats st;
    prepare_ok(&o, &st);
    /* Line 6 starts the long quoted row; resuming at line 7 (the rest of
     * it) gives one more bad row. */
    assert_int_equal(st.bad_rows, 3);
    const int64_t lines[] = {3, 6, 7};
    assert_memory_equal(st.bad_lines, lines, sizeof lines);
    assert_contains(st.first_bad, ":3: row longer than 64 bytes");
    assert_file(items_path, "1\ta\n2\tb\n3\tc\n4\te\n");

    len = snprintf(text, sizeof text,
                   "{\"user_id\":\"u\",\"item_id\":\"a\",\"timestamp\":1}\n"
                   "{\"user_id\":\"u\",\"item_id\":\"%s\",\"timestamp\":2}\n"
                   "{\"user_id\":\"u\",\"item_id\":\"b\",\"timestamp\":3}\n"
                   "{\"user_id\":\"u\",\"item_id\":\"c\",\"timestamp\":4}",
                   big);
    o = opts_for("long.jsonl", text, (size_t)len, path, sizeof path);
    o.format = BR_LOG_JSONL;
    o.max_record = 64;
    prepare_ok(&o, &st);
    assert_int_equal(st.bad_rows, 1);
    assert_int_equal(st.bad_lines[0], 2);
    assert_file(items_path, "1\ta\n2\tb\n3\tc\n");

    len = snprintf(text, sizeof text, "user_id,item_id,timestamp,%s\n", big);
    o = opts_for("longhead.csv", text, (size_t)len, path, sizeof path);
    o.max_record = 64;
    assert_contains(prepare_fails(&o), ":1: header longer than 64 bytes");
}

/* ---- outputs ---------------------------------------------------------- */

/* A random log of users with at least 3 events each (so nothing is
 * filtered), ids with quotes, commas and UTF-8; the output must load, and
 * each output line mapped back must be that user's events stably sorted by
 * time. */
static void test_output_loads_and_round_trips(void **state) {
    enum { N_USERS = 40, MAX_EV = 12 };
    static const char *item_names[] = {"plain", "with,comma", "with \"quote\"", "caf\xc3\xa9",
                                       "  spaced", "x", "y", "z", "42", "0042"};
    rng r = {99};
    int n_ev[N_USERS], ev_item[N_USERS][MAX_EV], ev_time[N_USERS][MAX_EV];
    static char text[65536];
    int len = snprintf(text, sizeof text, "timestamp,item_id,user_id\n");
    for (int u = 0; u < N_USERS; u++) n_ev[u] = 0;
    /* Interleave the users' rows in the file. */
    for (int left = 1; left;) {
        left = 0;
        for (int u = 0; u < N_USERS; u++) {
            int want = 3 + u % (MAX_EV - 2);
            if (n_ev[u] == want) continue;
            left = 1;
            if (rint_(&r, 2)) continue;
            int k = n_ev[u]++;
            ev_item[u][k] = rint_(&r, 10);
            ev_time[u][k] = rint_(&r, 4);
            /* Time as seconds or the same instant in ISO form. */
            char t[40];
            if (rint_(&r, 2))
                snprintf(t, sizeof t, "%d", 1546300800 + ev_time[u][k]);
            else
                snprintf(t, sizeof t, "2019-01-01T00:00:0%dZ", ev_time[u][k]);
            const char *name = item_names[ev_item[u][k]];
            if (strchr(name, ',') || strchr(name, '"') || name[0] == ' ') {
                len += snprintf(text + len, sizeof text - (size_t)len, "%s,\"", t);
                for (const char *c = name; *c; c++) {
                    if (*c == '"') text[len++] = '"';
                    text[len++] = *c;
                }
                len += snprintf(text + len, sizeof text - (size_t)len, "\",user %d\n", u);
            } else {
                len += snprintf(text + len, sizeof text - (size_t)len, "%s,%s,user %d\n", t, name,
                                u);
            }
        }
    }
    char path[128];
    br_prepare_options o = opts_for("round.csv", text, (size_t)len, path, sizeof path);
    o.strict = true;
    br_prepare_stats st;
    prepare_ok(&o, &st);

    br_dataset ds;
    br_error err;
    if (br_dataset_load(out_path, &ds, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(ds.n_users, st.users_after);
    assert_int_equal(ds.n_items, st.items_after);
    assert_int_equal(ds.n_interactions, st.interactions_after);
    idmap users = load_map(users_path), items = load_map(items_path);
    assert_int_equal(users.n, ds.n_users);
    assert_int_equal(items.n, ds.n_items);
    int next_new = 1;
    for (int row = 0; row < ds.n_users; row++) {
        assert_int_equal(ds.user_ids[row], row + 1);
        int u;
        assert_int_equal(sscanf(users.orig[row + 1], "user %d", &u), 1);
        int order[MAX_EV];
        for (int k = 0; k < n_ev[u]; k++) order[k] = k;
        for (int a = 1; a < n_ev[u]; a++)
            for (int b = a; b > 0 && ev_time[u][order[b - 1]] > ev_time[u][order[b]]; b--) {
                int t = order[b];
                order[b] = order[b - 1];
                order[b - 1] = t;
            }
        assert_int_equal(br_seq_len(&ds, row), n_ev[u]);
        for (int k = 0; k < n_ev[u]; k++) {
            int32_t id = br_seq(&ds, row)[k];
            assert_string_equal(items.orig[id], item_names[ev_item[u][order[k]]]);
            assert_true(id <= next_new); /* items numbered by first appearance */
            if (id == next_new) next_new++;
        }
    }
    free_map(&users);
    free_map(&items);
    br_dataset_free(&ds);
}

static void test_failure_keeps_old_outputs(void **state) {
    const char good[] = "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,c,3\n";
    char path[128];
    br_prepare_options o = opts_for("good.csv", good, sizeof good - 1, path, sizeof path);
    br_prepare_stats st;
    prepare_ok(&o, &st);
    int entries = count_dir_entries();
    const char bad[] = "user_id,item_id,timestamp\nu,a,1\nu,b,x\nu,c,3\nu,d,4\n";
    o = opts_for("good.csv", bad, sizeof bad - 1, path, sizeof path);
    o.strict = true;
    prepare_fails(&o);
    assert_file(out_path, "1 1 2 3\n");
    assert_file(items_path, "1\ta\n2\tb\n3\tc\n");
    assert_int_equal(count_dir_entries(), entries); /* no temporary files */
    /* The same log, lenient, replaces all three. */
    o.strict = false;
    prepare_ok(&o, &st);
    assert_file(items_path, "1\ta\n2\tc\n3\td\n");
    assert_int_equal(count_dir_entries(), entries);

    /* A directory in the way fails before anything is written. */
    o.out = dir;
    assert_contains(prepare_fails(&o), ": is a directory");
    assert_int_equal(count_dir_entries(), entries);

    /* A missing output directory is created. */
    char nested[192];
    snprintf(nested, sizeof nested, "%s/sub/seq.txt", dir);
    o.out = nested;
    prepare_ok(&o, &st);
    char *seq = slurp(nested);
    assert_non_null(seq);
    assert_string_equal(seq, "1 1 2 3\n");
    free(seq);
    char sub[128], p[256];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    const char *suffix[] = {"", ".users.tsv", ".items.tsv"};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s%s", nested, suffix[k]);
        assert_int_equal(unlink(p), 0);
    }
    assert_int_equal(rmdir(sub), 0);
}

/* ---- streaming and fuzzing -------------------------------------------- */

static void assert_same_stats(const br_prepare_stats *a, const br_prepare_stats *b) {
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->bad_rows, b->bad_rows);
    assert_memory_equal(a->bad_lines, b->bad_lines, sizeof a->bad_lines);
    assert_string_equal(a->first_bad, b->first_bad);
    assert_int_equal(a->below_min_rating, b->below_min_rating);
    assert_int_equal(a->users_before, b->users_before);
    assert_int_equal(a->items_before, b->items_before);
    assert_int_equal(a->interactions_before, b->interactions_before);
    assert_int_equal(a->users_after, b->users_after);
    assert_int_equal(a->items_after, b->items_after);
    assert_int_equal(a->interactions_after, b->interactions_after);
}

static void test_buffer_sizes_agree(void **state) {
    /* Records straddle the buffer end at every position. */
    const char text[] = "\xEF\xBB\xBFuser_id,item_id,timestamp,note\r\n"
                        "u1,\"a,b\",1,\"x\r\ny\"\r\n"
                        "u1,\"q\"\"q\",2,\r\n"
                        "u1,c,3,\"\"\"\"\r\n"
                        "u1,d\r\n"
                        "u2, c ,2019-01-01T00:00:00Z,\r\n"
                        "\r\n"
                        "u2,\"a,b\",1,z\r\n"
                        "u2,d,2,\"unterminated";
    char path[128];
    br_prepare_options o = opts_for("buf.csv", text, sizeof text - 1, path, sizeof path);
    br_prepare_stats ref;
    prepare_ok(&o, &ref);
    char *seq = slurp(out_path), *items = slurp(items_path);
    assert_int_equal(ref.bad_rows, 2);
    for (size_t size = 1; size <= 48; size++) {
        o.buffer_size = size;
        o.out = size % 8 == 1 ? out_path : NULL; /* fsyncs are slow */
        br_prepare_stats st;
        prepare_ok(&o, &st);
        assert_same_stats(&st, &ref);
        if (!o.out) continue;
        assert_file(out_path, seq);
        assert_file(items_path, items);
        assert_file(users_path, "1\tu1\n");
    }
    free(seq);
    free(items);
}

/* One random mutation of buf (length *len, capacity cap). */
static void mutate(rng *r, char *buf, size_t *len, size_t cap) {
    static const char specials[] = "\",\t\n\r{}[]:\\ ;|0-T";
    size_t n = *len;
    switch (rint_(r, 8)) {
    case 0: /* random byte */
        if (n) buf[rint_(r, (int)n)] = (char)rint_(r, 256);
        break;
    case 1: /* a structural character */
        if (n) buf[rint_(r, (int)n)] = specials[rint_(r, (int)sizeof specials - 1)];
        break;
    case 2: /* insert a quote, delimiter or line break */
        if (n + 1 < cap) {
            size_t at = (size_t)rint_(r, (int)n + 1);
            memmove(buf + at + 1, buf + at, n - at);
            buf[at] = specials[rint_(r, 5)];
            n++;
        }
        break;
    case 3: /* truncate */
        if (n) n = (size_t)rint_(r, (int)n);
        break;
    case 4: /* delete a range */
        if (n) {
            size_t at = (size_t)rint_(r, (int)n), k = (size_t)rint_(r, 20);
            if (k > n - at) k = n - at;
            memmove(buf + at, buf + at + k, n - at - k);
            n -= k;
        }
        break;
    case 5: /* duplicate a range */
        if (n) {
            size_t at = (size_t)rint_(r, (int)n), k = (size_t)rint_(r, 40);
            if (k > n - at) k = n - at;
            if (n + k < cap) {
                memmove(buf + at + k, buf + at, n - at);
                n += k;
            }
        }
        break;
    case 6: /* a NUL or a high byte run */
        for (int k = rint_(r, 4); k >= 0 && n; k--)
            buf[rint_(r, (int)n)] = (char)(rint_(r, 2) ? 0 : 0xc3);
        break;
    default: /* all random bytes */
        n = (size_t)rint_(r, 200);
        for (size_t k = 0; k < n; k++) buf[k] = (char)rint_(r, 256);
        break;
    }
    *len = n;
}

static void test_fuzz(void **state) {
    static char base_csv[4096], base_jsonl[8192], buf[16384];
    rng r = {0xC0FFEE};
    int lc = snprintf(base_csv, sizeof base_csv, "user_id,item_id,timestamp,rating\n");
    int lj = 0;
    for (int k = 0; k < 40; k++) {
        int u = rint_(&r, 6), i = rint_(&r, 8), t = rint_(&r, 50);
        lc += snprintf(base_csv + lc, sizeof base_csv - (size_t)lc,
                       k % 3 ? "u%d,\"i,%d\",%d,%d\n" : "\"u%d\",i%d,2019-01-0%dT00:00:00Z,%d\n", u,
                       i, k % 3 ? t : 1 + t % 9, rint_(&r, 5));
        lj += snprintf(base_jsonl + lj, sizeof base_jsonl - (size_t)lj,
                       "{\"user_id\": \"u%d\", \"item_id\": %d, \"timestamp\": %d, "
                       "\"rating\": %d}\n",
                       u, i, t, rint_(&r, 5));
    }
    char path[128];
    int successes = 0, failures = 0, written = 0;
    for (int iter = 0; iter < 3000; iter++) {
        bool jsonl = iter % 3 == 2;
        size_t len = (size_t)(jsonl ? lj : lc);
        memcpy(buf, jsonl ? base_jsonl : base_csv, len);
        for (int m = 1 + rint_(&r, 4); m > 0; m--) mutate(&r, buf, &len, sizeof buf);
        snprintf(path, sizeof path, "%s/fuzz%d.in", dir, iter);
        write_bytes(path, buf, len);

        br_prepare_options o;
        br_prepare_defaults(&o);
        o.input = path;
        o.format = jsonl ? BR_LOG_JSONL : BR_LOG_CSV;
        o.min_user = 3;
        o.min_item = 1 + rint_(&r, 2);
        o.strict = rint_(&r, 4) == 0;
        o.max_record = 16 + (size_t)rint_(&r, 200);
        if (rint_(&r, 2)) {
            o.rating_col = "rating";
            o.use_min_rating = rint_(&r, 2);
            o.min_rating = 2;
        }
        o.out = iter % 150 == 0 ? out_path : NULL; /* fsyncs are slow */

        br_prepare_stats st, st2;
        br_error err, err2;
        memset(&err, 0, sizeof err);
        int rc = br_prepare(&o, &st, &err);
        assert_true(rc == 0 || rc == -1);
        if (rc < 0) {
            failures++;
            if (!strstr(err.msg, path)) fail_msg("error without the file name: %s", err.msg);
        } else {
            successes++;
            assert_true(st.rows >= st.bad_rows + st.below_min_rating);
            /* Every row is bad, rated below the minimum or an interaction. */
            assert_int_equal(st.interactions_before, st.rows - st.bad_rows - st.below_min_rating);
            assert_true(st.interactions_after <= st.interactions_before);
            assert_true(st.users_after > 0 && st.users_after <= st.users_before);
            assert_true(st.items_after <= st.items_before);
        }
        if (o.out && rc == 0) {
            br_dataset ds;
            if (br_dataset_load(out_path, &ds, &err2) != 0) fail_msg("%s", err2.msg);
            assert_int_equal(ds.n_interactions, st.interactions_after);
            assert_int_equal(ds.n_items, st.items_after);
            idmap items = load_map(items_path);
            assert_int_equal(items.n, st.items_after);
            free_map(&items);
            br_dataset_free(&ds);
            remove_outputs();
            written++;
        }
        /* A tiny buffer must see exactly the same input. */
        o.out = NULL;
        o.buffer_size = 1 + (size_t)rint_(&r, 32);
        memset(&err2, 0, sizeof err2);
        assert_int_equal(br_prepare(&o, &st2, &err2), rc);
        if (rc < 0)
            assert_string_equal(err2.msg, err.msg);
        else
            assert_same_stats(&st2, &st);
        unlink(path);
    }
    /* Both outcomes must actually be exercised. */
    assert_true(successes > 300);
    assert_true(failures > 300);
    assert_true(written > 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_csv_quoting),
        cmocka_unit_test(test_tsv_and_delimiters),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_ties_keep_file_order),
        cmocka_unit_test(test_kcore_cascade),
        cmocka_unit_test(test_kcore_matches_naive),
        cmocka_unit_test(test_rating_filter),
        cmocka_unit_test(test_bad_rows_lenient),
        cmocka_unit_test(test_bad_rows_strict),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_long_rows),
        cmocka_unit_test(test_output_loads_and_round_trips),
        cmocka_unit_test(test_failure_keeps_old_outputs),
        cmocka_unit_test(test_buffer_sizes_agree),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
