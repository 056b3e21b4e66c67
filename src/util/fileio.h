/* Atomic file output: write to "<path>.tmp.<pid>" in the same directory,
 * then fsync, rename over path and fsync the directory. On any error the
 * temporary file is removed and the old file (if any) is left untouched. */
#ifndef BR_UTIL_FILEIO_H
#define BR_UTIL_FILEIO_H

#include <stdio.h>

#include "util/error.h"

typedef struct br_atomic_file {
    FILE *fp;         /* write through this */
    char *path;       /* final path */
    char *tmp_path;   /* temporary path */
} br_atomic_file;

int br_atomic_open(br_atomic_file *af, const char *path, br_error *err);
/* Flushes, fsyncs, renames; closes in every case. */
int br_atomic_commit(br_atomic_file *af, br_error *err);
/* Closes and removes the temporary file. Safe after a failed commit. */
void br_atomic_abort(br_atomic_file *af);

/* Creates a directory (and parents) if missing. */
int br_mkdir_p(const char *path, br_error *err);

#endif
