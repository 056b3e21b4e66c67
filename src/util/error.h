/* Error reporting: every fallible function takes a br_error* and returns -1
 * after filling it with a message that names the file, line and problem. */
#ifndef BR_UTIL_ERROR_H
#define BR_UTIL_ERROR_H

typedef struct br_error {
    char msg[1024];
} br_error;

/* Formats the message into err (if non-NULL) and returns -1. */
int br_errorf(br_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message. Returns -1. */
int br_error_prefix(br_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* malloc/calloc that report failure through err instead of crashing. */
void *br_xmalloc(size_t size, br_error *err);
void *br_xcalloc(size_t n, size_t size, br_error *err);

#endif
