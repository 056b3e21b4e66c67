#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "util/fileio.h"

static char *dup_string(const char *s, br_error *err) {
    size_t n = strlen(s) + 1;
    char *d = br_xmalloc(n, err);
    if (d) memcpy(d, s, n);
    return d;
}

static void release(br_atomic_file *af) {
    free(af->path);
    free(af->tmp_path);
    af->fp = NULL;
    af->path = NULL;
    af->tmp_path = NULL;
}

int br_atomic_open(br_atomic_file *af, const char *path, br_error *err) {
    af->fp = NULL;
    af->path = NULL;
    af->tmp_path = NULL;
    if (!path || !*path) return br_errorf(err, "atomic write: empty path");

    af->path = dup_string(path, err);
    size_t n = strlen(path) + 32;
    af->tmp_path = br_xmalloc(n, err);
    if (!af->path || !af->tmp_path) {
        release(af);
        return -1;
    }
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());

    /* O_EXCL: never write through a file someone else is also writing. */
    int fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        br_errorf(err, "%s: cannot create temporary file %s: %s", path,
                  af->tmp_path, strerror(errno));
        release(af);
        return -1;
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        br_errorf(err, "%s: fdopen failed: %s", path, strerror(errno));
        close(fd);
        unlink(af->tmp_path);
        release(af);
        return -1;
    }
    return 0;
}

/* fsync of the directory makes the rename itself durable. */
static int sync_parent_dir(const char *path, br_error *err) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = dup_string(".", err);
    } else {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        dir = br_xmalloc(len + 1, err);
        if (dir) {
            memcpy(dir, path, len);
            dir[len] = '\0';
        }
    }
    if (!dir) return -1;

    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = br_errorf(err, "%s: cannot open directory %s: %s", path, dir,
                       strerror(errno));
    } else {
        /* EINVAL: the file system cannot sync directories; nothing to do. */
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = br_errorf(err, "%s: fsync of directory %s failed: %s", path,
                           dir, strerror(errno));
        if (close(fd) != 0 && rc == 0)
            rc = br_errorf(err, "%s: close of directory %s failed: %s", path,
                           dir, strerror(errno));
    }
    free(dir);
    return rc;
}

int br_atomic_commit(br_atomic_file *af, br_error *err) {
    if (!af->fp) {
        br_errorf(err, "%s: atomic commit without an open file",
                  af->path ? af->path : "(null)");
        br_atomic_abort(af);
        return -1;
    }

    /* Each step is checked: a full disk must surface here, not as a
     * silently truncated file. */
    int rc = 0;
    if (fflush(af->fp) != 0 || ferror(af->fp))
        rc = br_errorf(err, "%s: write failed: %s", af->path, strerror(errno));
    else if (fsync(fileno(af->fp)) != 0)
        rc = br_errorf(err, "%s: fsync failed: %s", af->path, strerror(errno));

    int close_rc = fclose(af->fp);
    af->fp = NULL;
    if (rc == 0 && close_rc != 0)
        rc = br_errorf(err, "%s: close failed: %s", af->path, strerror(errno));

    if (rc == 0 && rename(af->tmp_path, af->path) != 0)
        rc = br_errorf(err, "%s: rename from %s failed: %s", af->path,
                       af->tmp_path, strerror(errno));
    if (rc != 0) {
        unlink(af->tmp_path);
        release(af);
        return -1;
    }

    /* The new file is in place now; a failure here only means the rename
     * may not yet be durable. */
    rc = sync_parent_dir(af->path, err);
    release(af);
    return rc;
}

void br_atomic_abort(br_atomic_file *af) {
    if (!af) return;
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    release(af);
}

static int mkdir_one(const char *full, const char *dir, br_error *err) {
    if (mkdir(dir, 0755) == 0) return 0;
    int saved = errno;
    struct stat st;
    /* EEXIST is fine only when the existing thing is a directory. */
    if (saved == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    if (saved == EEXIST)
        return br_errorf(err, "%s: cannot create directory: %s exists and is "
                              "not a directory", full, dir);
    return br_errorf(err, "%s: cannot create directory %s: %s", full, dir,
                     strerror(saved));
}

int br_mkdir_p(const char *path, br_error *err) {
    if (!path || !*path) return br_errorf(err, "mkdir: empty path");
    char *buf = dup_string(path, err);
    if (!buf) return -1;

    int rc = 0;
    /* Create each prefix ending before a '/', then the full path. */
    for (char *p = buf + 1; *p && rc == 0; p++) {
        if (*p != '/' || p[-1] == '/') continue;
        *p = '\0';
        rc = mkdir_one(path, buf, err);
        *p = '/';
    }
    if (rc == 0) rc = mkdir_one(path, buf, err);
    free(buf);
    return rc;
}
