#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

int br_errorf(br_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int br_error_prefix(br_error *err, const char *fmt, ...) {
    if (err) {
        char old[sizeof err->msg];
        memcpy(old, err->msg, sizeof old);
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* Append ": old" to whatever of the prefix fitted. */
        size_t used = n < 0 ? 0 : (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
        size_t room = sizeof err->msg - used;
        if (room > 2) {
            memcpy(err->msg + used, ": ", 2);
            size_t len = strnlen(old, room - 3);
            memcpy(err->msg + used + 2, old, len);
            err->msg[used + 2 + len] = '\0';
        }
    }
    return -1;
}

void *br_xmalloc(size_t size, br_error *err) {
    void *p = malloc(size ? size : 1);
    if (!p) br_errorf(err, "out of memory allocating %zu bytes", size);
    return p;
}

void *br_xcalloc(size_t n, size_t size, br_error *err) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) br_errorf(err, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}
