/* Option values spelled as names (losses, samplers, alignments): the index
 * of a name in its table, for the parse functions of each enum. */
#ifndef BR_UTIL_NAMES_H
#define BR_UTIL_NAMES_H

#include <string.h>

/* Index of name among names[0..n), or -1. */
static inline int br_name_index(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

#endif
