/* Shared helpers for the cmocka test binaries. */
#ifndef BR_TESTUTIL_H
#define BR_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Directory of the shared benchmark data, or NULL when it is absent. */
static inline const char *test_shared_data_dir(void) {
    const char *d = getenv("BASREC_SHARED_DATA");
    if (!d) d = "../shared/data";
    return access(d, R_OK) == 0 ? d : NULL;
}

/* Writes text to a fresh temporary file and returns its path (static buffer
 * per call site is the caller's job: pass one in). */
static inline const char *test_write_tmp(char *path_buf, size_t n, const char *text) {
    snprintf(path_buf, n, "/tmp/basrec-test-XXXXXX");
    int fd = mkstemp(path_buf);
    if (fd < 0) return NULL;
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) { close(fd); return NULL; }
    close(fd);
    return path_buf;
}

#endif
