/* safetensors reader/writer and the atomic file helpers it relies on. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "train/safetensors.h"
#include "util/fileio.h"

/* ---- helpers ---------------------------------------------------------- */

static void make_tmpdir(char *buf, size_t n) {
    snprintf(buf, n, "/tmp/basrec-st-XXXXXX");
    assert_non_null(mkdtemp(buf));
}

/* Removes a directory tree created by a test. */
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char path[4096];
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (len > 0) assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static unsigned char *read_bytes(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

/* Writes "8-byte LE length + header + data" without any validation. */
static void write_raw(const char *path, const char *header, size_t header_len,
                      const void *data, size_t data_len) {
    size_t total = 8 + header_len + data_len;
    unsigned char *buf = malloc(total);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    memcpy(buf + 8, header, header_len);
    if (data_len > 0) memcpy(buf + 8 + header_len, data, data_len);
    write_bytes(path, buf, total);
    free(buf);
}

/* A failed read must name the file, mention `needle` and leave f empty. */
static void expect_read_fails(const char *path, const char *needle) {
    br_st_file f;
    br_error err = {{0}};
    assert_int_equal(br_st_read(path, &f, &err), -1);
    if (!strstr(err.msg, path) || (needle && !strstr(err.msg, needle)))
        fail_msg("message \"%s\" lacks the path or \"%s\"", err.msg, needle ? needle : "");
    assert_null(f.entries);
    assert_null(f.buffer);
    assert_null(f.path);
    assert_int_equal(f.n_entries, 0);
    br_st_free(&f);
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

/* A small valid file written by br_st_write, for the corruption tests. */
static void write_small_valid(const char *path) {
    static const float a[3] = {1.0f, 2.0f, 3.0f};
    static const float b[4] = {-1.0f, 0.5f, 0.25f, 8.0f};
    br_st_tensor t[2] = {
        {.name = "a", .ndim = 1, .shape = {3}, .data = a},
        {.name = "b", .ndim = 2, .shape = {2, 2}, .data = b},
    };
    br_st_meta m[1] = {{"epoch", "4"}};
    br_error err;
    assert_int_equal(br_st_write(path, t, 2, m, 1, &err), 0);
}

/* ---- writing and reading back ------------------------------------------ */

static void test_roundtrip(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);

    float v[5], m[3 * 4], big[2 * 3 * 2 * 2], scalar = 42.5f;
    for (int i = 0; i < 5; i++) v[i] = (float)i * 0.5f - 1.0f;
    for (int i = 0; i < 12; i++) m[i] = (float)(i * i) / 7.0f;
    for (int i = 0; i < 24; i++) big[i] = -(float)i * 1e-3f;
    br_st_tensor t[] = {
        {.name = "emb.weight", .ndim = 1, .shape = {5}, .data = v},
        {.name = "proj", .ndim = 2, .shape = {3, 4}, .data = m},
        {.name = "empty", .ndim = 2, .shape = {0, 7}, .data = NULL},
        {.name = "conv", .ndim = 4, .shape = {2, 3, 2, 2}, .data = big},
        {.name = "scale", .ndim = 0, .data = &scalar},
    };
    br_st_meta meta[] = {{"model", "sasrec"}, {"epoch", "12"}, {"empty", ""}};
    br_error err;
    assert_int_equal(br_st_write(path, t, 5, meta, 3, &err), 0);

    br_st_file f;
    if (br_st_read(path, &f, &err) != 0) fail_msg("%s", err.msg);
    assert_string_equal(f.path, path);
    assert_int_equal(f.n_entries, 5);
    for (int i = 0; i < 5; i++) {
        const br_st_entry *e = br_st_find(&f, t[i].name);
        assert_non_null(e);
        assert_int_equal(e->dtype, BR_ST_F32);
        assert_int_equal(e->ndim, t[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            assert_int_equal(e->shape[d], t[i].shape[d]);
            numel *= e->shape[d];
        }
        assert_int_equal(e->numel, numel);
        assert_non_null(e->data);
        assert_int_equal((uintptr_t)e->data % 8, 0);
        if (numel > 0) assert_memory_equal(e->data, t[i].data, (size_t)numel * 4);
    }
    assert_null(br_st_find(&f, "missing"));
    assert_string_equal(br_st_meta_get(&f, "model"), "sasrec");
    assert_string_equal(br_st_meta_get(&f, "epoch"), "12");
    assert_string_equal(br_st_meta_get(&f, "empty"), "");
    assert_null(br_st_meta_get(&f, "missing"));
    br_st_free(&f);
    br_st_free(&f); /* idempotent */

    /* No tensors and no metadata is still a valid file. */
    assert_int_equal(br_st_write(path, NULL, 0, NULL, 0, &err), 0);
    assert_int_equal(br_st_read(path, &f, &err), 0);
    assert_int_equal(f.n_entries, 0);
    assert_int_equal(f.n_meta, 0);
    br_st_free(&f);
    remove_tree(dir);
}

/* The exact bytes we write: compact JSON, space padding to a multiple of 8,
 * raw little-endian floats. */
static void test_writer_byte_layout(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    const float w[2] = {1.0f, -2.5f};
    br_st_tensor t = {.name = "w", .ndim = 1, .shape = {2}, .data = w};
    br_st_meta m = {"k", "v"};
    br_error err;
    assert_int_equal(br_st_write(path, &t, 1, &m, 1, &err), 0);

    static const char header[] =
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"__metadata__\":{\"k\":\"v\"}} "; /* 79 bytes + 1 pad */
    static const unsigned char data[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0};
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 8 + 80 + 8);
    static const unsigned char len_le[8] = {80, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(got, len_le, 8);
    assert_memory_equal(got + 8, header, 80);
    assert_memory_equal(got + 88, data, 8);
    free(got);
    remove_tree(dir);
}

/* A file laid out as Python's safetensors writes it (metadata first, I64 and
 * F32 tensors, header padded with spaces), written out by hand. */
static void test_read_reference_layout(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ref.safetensors", dir);
    static const char header[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]},"
        "\"x\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[24,40]}}"
        "       "; /* 145 bytes + 7 pad = 152 */
    static const unsigned char data[40] = {
        /* int64 {1, -2, 300} */
        0x01, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x2c, 0x01, 0, 0, 0, 0, 0, 0,
        /* float32 {{0.5, 1}, {2, -3}} */
        0, 0, 0, 0x3f, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0xc0};
    assert_int_equal(sizeof header - 1, 152);
    write_raw(path, header, 152, data, sizeof data);

    br_st_file f;
    br_error err;
    if (br_st_read(path, &f, &err) != 0) fail_msg("%s", err.msg);
    assert_string_equal(br_st_meta_get(&f, "format"), "pt");
    const br_st_entry *ids = br_st_find(&f, "ids");
    assert_non_null(ids);
    assert_int_equal(ids->dtype, BR_ST_I64);
    assert_int_equal(ids->numel, 3);
    const int64_t *iv = ids->data;
    assert_int_equal(iv[0], 1);
    assert_int_equal(iv[1], -2);
    assert_int_equal(iv[2], 300);
    const br_st_entry *x = br_st_find(&f, "x");
    assert_non_null(x);
    assert_int_equal(x->dtype, BR_ST_F32);
    assert_int_equal(x->ndim, 2);
    assert_int_equal(x->shape[0], 2);
    assert_int_equal(x->shape[1], 2);
    const float *xv = x->data;
    assert_true(xv[0] == 0.5f && xv[1] == 1.0f && xv[2] == 2.0f && xv[3] == -3.0f);
    br_st_free(&f);
    remove_tree(dir);
}

/* Foreign files may place an I64 tensor at an offset that is not a multiple
 * of 8; the reader's copy must still be aligned. */
static void test_read_unaligned_offsets(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/u.safetensors", dir);
    static const char header[] =
        "{\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"l\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[4,20]},"
        "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]}}";
    unsigned char data[24];
    int32_t i32 = -7;
    int64_t i64[2] = {INT64_MIN, 1234567890123LL};
    float f32 = 3.25f;
    memcpy(data, &i32, 4);
    memcpy(data + 4, i64, 16);
    memcpy(data + 20, &f32, 4);
    write_raw(path, header, strlen(header), data, sizeof data);

    br_st_file f;
    br_error err;
    if (br_st_read(path, &f, &err) != 0) fail_msg("%s", err.msg);
    const br_st_entry *ei = br_st_find(&f, "i"), *el = br_st_find(&f, "l"),
                      *ef = br_st_find(&f, "f");
    assert_true(ei && el && ef);
    assert_int_equal(ei->dtype, BR_ST_I32);
    assert_int_equal(*(const int32_t *)ei->data, -7);
    assert_int_equal((uintptr_t)el->data % 8, 0);
    assert_true(((const int64_t *)el->data)[0] == INT64_MIN);
    assert_true(((const int64_t *)el->data)[1] == 1234567890123LL);
    assert_true(*(const float *)ef->data == 3.25f);
    br_st_free(&f);
    remove_tree(dir);
}

/* ---- atomic writing ---------------------------------------------------- */

static void test_atomic_replace_leaves_no_temp(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    write_bytes(path, "old contents", 12);

    const float x[2] = {7.0f, 8.0f};
    br_st_tensor t = {.name = "x", .ndim = 1, .shape = {2}, .data = x};
    br_error err;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(br_st_write(path, &t, 1, NULL, 0, &err), 0);
        assert_int_equal(count_entries(dir), 1);
    }
    br_st_file f;
    assert_int_equal(br_st_read(path, &f, &err), 0);
    assert_memory_equal(br_st_find(&f, "x")->data, x, sizeof x);
    br_st_free(&f);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0044, 0044); /* readable as 0644 asks */
    remove_tree(dir);
}

static void test_atomic_abort_and_exclusive_temp(void **state) {
    char dir[64], path[128], tmp[192];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    br_error err;

    br_atomic_file af;
    assert_int_equal(br_atomic_open(&af, path, &err), 0);
    assert_true(fputs("partial", af.fp) >= 0);
    br_atomic_abort(&af);
    br_atomic_abort(&af); /* safe twice */
    assert_int_equal(count_entries(dir), 0);

    /* Commit creates the file with exactly what was written. */
    assert_int_equal(br_atomic_open(&af, path, &err), 0);
    assert_true(fputs("done", af.fp) >= 0);
    assert_int_equal(br_atomic_commit(&af, &err), 0);
    br_atomic_abort(&af); /* no-op after commit */
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(got, "done", 4);
    free(got);

    /* An existing temporary of the same name is never clobbered. */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    write_bytes(tmp, "x", 1);
    assert_int_equal(br_atomic_open(&af, path, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_null(af.fp);
    br_atomic_abort(&af);
    assert_true(file_exists(tmp));
    remove_tree(dir);
}

static void test_write_into_missing_dir(void **state) {
    char dir[64], path[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/no/such/dir/m.safetensors", dir);
    const float x = 1.0f;
    br_st_tensor t = {.name = "x", .ndim = 1, .shape = {1}, .data = &x};
    br_error err = {{0}};
    assert_int_equal(br_st_write(path, &t, 1, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, strerror(ENOENT)));
    assert_int_equal(count_entries(dir), 0);

    /* br_mkdir_p makes it possible. */
    char sub[128];
    snprintf(sub, sizeof sub, "%s/no/such/dir", dir);
    assert_int_equal(br_mkdir_p(sub, &err), 0);
    assert_int_equal(br_st_write(path, &t, 1, NULL, 0, &err), 0);
    remove_tree(dir);
}

static void test_write_rejects_bad_input(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    write_bytes(path, "keep", 4);
    const float x[2] = {1.0f, 2.0f};
    br_error err;

    struct {
        br_st_tensor t[2];
        int n;
        br_st_meta m[2];
        int n_meta;
        const char *needle;
    } cases[] = {
        {{{.name = "x", .ndim = 1, .shape = {2}, .data = x},
          {.name = "x", .ndim = 1, .shape = {1}, .data = x}}, 2, {{0}}, 0, "duplicate tensor"},
        {{{.name = "x", .ndim = 1, .shape = {2}, .data = x}}, 1,
         {{"k", "1"}, {"k", "2"}}, 2, "duplicate metadata"},
        {{{.name = "__metadata__", .ndim = 1, .shape = {2}, .data = x}}, 1, {{0}}, 0, "reserved"},
        {{{.name = "x", .ndim = 1, .shape = {-2}, .data = x}}, 1, {{0}}, 0, "negative"},
        {{{.name = "x", .ndim = 5, .shape = {2}, .data = x}}, 1, {{0}}, 0, "ndim"},
        {{{.name = "x", .ndim = 1, .shape = {2}, .data = NULL}}, 1, {{0}}, 0, "no data"},
        {{{.name = NULL, .ndim = 1, .shape = {2}, .data = x}}, 1, {{0}}, 0, "no name"},
        {{{.name = "x", .ndim = 1, .shape = {2}, .data = x}}, 1,
         {{"k", NULL}}, 1, "NULL"},
        {{{.name = "\xff", .ndim = 1, .shape = {2}, .data = x}}, 1, {{0}}, 0, "UTF-8"},
        {{{.name = "x", .ndim = 2, .shape = {INT64_MAX / 2, 4}, .data = x}}, 1, {{0}}, 0,
         "too large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err.msg[0] = '\0';
        assert_int_equal(br_st_write(path, cases[i].t, cases[i].n, cases[i].m,
                                     cases[i].n_meta, &err), -1);
        if (!strstr(err.msg, path) || !strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: \"%s\" lacks path or \"%s\"", i, err.msg, cases[i].needle);
        assert_int_equal(count_entries(dir), 1);
    }
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(got, "keep", 4);
    free(got);
    remove_tree(dir);
}

/* A file-size limit makes writes fail like a full disk would: the error
 * must surface and the previous file must survive. */
static void test_write_fails_when_disk_full(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    write_bytes(path, "previous", 8);

    enum { N = 1 << 14 };
    float *x = calloc(N, sizeof *x);
    assert_non_null(x);
    br_st_tensor t = {.name = "x", .ndim = 1, .shape = {N}, .data = x};

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    br_error err = {{0}};
    int rc = br_st_write(path, &t, 1, NULL, 0, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);

    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(count_entries(dir), 1);
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(got, "previous", 8);
    free(got);
    free(x);
    remove_tree(dir);
}

static void test_mkdir_p(void **state) {
    char dir[64], path[160];
    make_tmpdir(dir, sizeof dir);
    br_error err;
    snprintf(path, sizeof path, "%s/a/b//c/", dir);
    assert_int_equal(br_mkdir_p(path, &err), 0);
    assert_int_equal(br_mkdir_p(path, &err), 0); /* exists: fine */
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    /* A regular file in the way is an error naming the path. */
    snprintf(path, sizeof path, "%s/file", dir);
    write_bytes(path, "x", 1);
    snprintf(path, sizeof path, "%s/file/sub", dir);
    assert_int_equal(br_mkdir_p(path, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(br_mkdir_p("", &err), -1);
    remove_tree(dir);
}

/* ---- malformed input --------------------------------------------------- */

static void test_truncated_files(void **state) {
    char dir[64], good[128], bad[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    write_small_valid(good);
    size_t len;
    unsigned char *bytes = read_bytes(good, &len);
    for (size_t cut = 0; cut < len; cut++) {
        write_bytes(bad, bytes, cut);
        expect_read_fails(bad, NULL);
    }
    /* A trailing byte beyond the tensors is also rejected. */
    unsigned char *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, bytes, len);
    longer[len] = 0;
    write_bytes(bad, longer, len + 1);
    expect_read_fails(bad, "cover only");
    free(longer);
    free(bytes);
    remove_tree(dir);
}

/* Corrupting any single byte of the length or header must never crash; the
 * read either fails with a proper message or yields a consistent file. */
static void test_header_byte_flips(void **state) {
    char dir[64], good[128], bad[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    write_small_valid(good);
    size_t len;
    unsigned char *bytes = read_bytes(good, &len);
    /* The header of this small file is well under 64 KiB. */
    size_t header_end = 8 + (size_t)bytes[0] + ((size_t)bytes[1] << 8);
    static const unsigned char values[] = {0x00, 0xff, '"', '{', '}', '[', ']',
                                           ',', ':', '-', '9', 'x', 0x80};
    int failures = 0;
    for (size_t pos = 0; pos < header_end; pos++) {
        unsigned char orig = bytes[pos];
        for (size_t v = 0; v < sizeof values; v++) {
            if (values[v] == orig) continue;
            bytes[pos] = values[v];
            write_bytes(bad, bytes, len);
            br_st_file f;
            br_error err = {{0}};
            if (br_st_read(bad, &f, &err) == 0) {
                int64_t bytes_total = 0;
                for (int i = 0; i < f.n_entries; i++) {
                    assert_non_null(f.entries[i].data);
                    bytes_total += f.entries[i].numel *
                                   (f.entries[i].dtype == BR_ST_I64 ? 8 : 4);
                }
                assert_int_equal(bytes_total, (int64_t)(len - header_end));
            } else {
                if (!strstr(err.msg, bad)) fail_msg("no path in \"%s\"", err.msg);
                assert_null(f.entries);
                failures++;
            }
            br_st_free(&f);
        }
        bytes[pos] = orig;
    }
    assert_true(failures > 0);
    free(bytes);
    remove_tree(dir);
}

static void test_malformed_headers(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    static const unsigned char zeros[64] = {0};
#define T(dt, shape, offs) "\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs
    struct {
        const char *header;
        size_t data_len;
        const char *needle;
    } cases[] = {
        {"not json", 0, "not valid JSON"},
        {"", 0, "not valid JSON"},
        {"{\"a\":", 0, "not valid JSON"},
        {"[1,2]", 0, "not a JSON object"},
        {"{\"a\":5}", 0, "not an object"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets"},
        {"{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
        {"{\"a\":{\"dtype\":" T("F16", "[2]", "[0,4]") "}}", 4, "unsupported dtype"},
        {"{\"a\":{\"dtype\":" T("BF16", "[2]", "[0,4]") "}}", 4, "unsupported dtype"},
        {"{\"a\":{\"dtype\":" T("f32", "[1]", "[0,4]") "}}", 4, "unsupported dtype"},
        {"{\"a\":{\"dtype\":" T("F32", "[-1]", "[0,4]") "}}", 4, "non-negative"},
        {"{\"a\":{\"dtype\":" T("F32", "[1.0]", "[0,4]") "}}", 4, "non-negative"},
        {"{\"a\":{\"dtype\":" T("F32", "{}", "[0,4]") "}}", 4, "shape"},
        {"{\"a\":{\"dtype\":" T("F32", "[1,1,1,1,1]", "[0,4]") "}}", 4, "dimensions"},
        {"{\"a\":{\"dtype\":" T("F32", "[2]", "[0,4]") "}}", 4, "elements"},
        {"{\"a\":{\"dtype\":" T("I64", "[1]", "[0,4]") "}}", 4, "elements"},
        {"{\"a\":{\"dtype\":" T("F32", "[4611686018427387904,4]", "[0,4]") "}}", 4,
         "too large"},
        {"{\"a\":{\"dtype\":" T("F32", "[99999999999999999999]", "[0,4]") "}}", 4,
         "not valid JSON"},
        {"{\"a\":{\"dtype\":" T("F32", "[2]", "[4,12]") "}}", 8, "outside"},
        {"{\"a\":{\"dtype\":" T("F32", "[2]", "[8,0]") "}}", 8, "outside"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[-4,0]") "}}", 4, "outside"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[0]") "}}", 4, "two integers"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[0,4,8]") "}}", 4, "two integers"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[\"0\",\"4\"]") "}}", 4, "two integers"},
        {"{\"a\":{\"dtype\":" T("F32", "[2]", "[0,8]") "},"
         "\"b\":{\"dtype\":" T("F32", "[1]", "[4,8]") "}}", 8, "overlap"},
        {"{\"a\":{\"dtype\":" T("F32", "[2]", "[0,8]") "},"
         "\"b\":{\"dtype\":" T("F32", "[2]", "[0,8]") "}}", 8, "overlap"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[0,4]") "},"
         "\"b\":{\"dtype\":" T("F32", "[1]", "[8,12]") "}}", 12, "belong to no tensor"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[4,8]") "}}", 8, "belong to no tensor"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[0,4]") "}}", 8, "cover only"},
        {"{}", 4, "cover only"},
        {"{\"a\":{\"dtype\":" T("F32", "[1]", "[0,4]") "},"
         "\"a\":{\"dtype\":" T("F32", "[1]", "[0,4]") "}}", 4, "not valid JSON"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "not a string"},
        {"{\"__metadata__\":{\"k\":null}}", 0, "not a string"},
        {"{\"__metadata__\":[\"k\"]}", 0, "not an object"},
        {"{\"\xff\":{\"dtype\":" T("F32", "[1]", "[0,4]") "}}", 4, "not valid JSON"},
    };
#undef T
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(path, cases[i].header, strlen(cases[i].header), zeros, cases[i].data_len);
        br_st_file f;
        br_error err = {{0}};
        if (br_st_read(path, &f, &err) != -1)
            fail_msg("case %zu (%s) was accepted", i, cases[i].header);
        if (!strstr(err.msg, path) || !strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: \"%s\" lacks path or \"%s\"", i, err.msg, cases[i].needle);
        assert_null(f.entries);
        br_st_free(&f);
    }

    /* A NUL byte inside the header. */
    write_raw(path, "{}\0     ", 8, NULL, 0);
    expect_read_fails(path, "not valid JSON");
    remove_tree(dir);
}

static void test_bad_length_field(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);

    write_bytes(path, "", 0);
    expect_read_fails(path, "too short");
    write_bytes(path, "\x02\0\0\0\0\0\0", 7);
    expect_read_fails(path, "too short");

    /* Length one byte past the end of the file. */
    write_bytes(path, "\x03\0\0\0\0\0\0\0{}", 10);
    expect_read_fails(path, "exceeds the file size");
    /* Absurd lengths: over the 100 MB cap, and 2^64-1. */
    write_bytes(path, "\0\0\0\x40\0\0\0\0{}", 10);
    expect_read_fails(path, "implausibly large");
    write_bytes(path, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
    expect_read_fails(path, "implausibly large");
    /* Zero-length header. */
    write_bytes(path, "\0\0\0\0\0\0\0\0", 8);
    expect_read_fails(path, "not valid JSON");
    remove_tree(dir);
}

static void test_unreadable_paths(void **state) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    expect_read_fails(path, strerror(ENOENT));
    expect_read_fails(dir, "not a regular file");

    br_st_file zero = {0};
    br_st_free(&zero);
    remove_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_writer_byte_layout),
        cmocka_unit_test(test_read_reference_layout),
        cmocka_unit_test(test_read_unaligned_offsets),
        cmocka_unit_test(test_atomic_replace_leaves_no_temp),
        cmocka_unit_test(test_atomic_abort_and_exclusive_temp),
        cmocka_unit_test(test_write_into_missing_dir),
        cmocka_unit_test(test_write_rejects_bad_input),
        cmocka_unit_test(test_write_fails_when_disk_full),
        cmocka_unit_test(test_mkdir_p),
        cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_header_byte_flips),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_bad_length_field),
        cmocka_unit_test(test_unreadable_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
