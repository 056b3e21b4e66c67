#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"

/* Compares an option name ignoring the '-' / '_' distinction. */
static int name_eq(const char *a, const char *b, size_t blen) {
    size_t i = 0;
    for (; a[i] && i < blen; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (x != y) return 0;
    }
    return a[i] == '\0' && i == blen;
}

static int set_value(opt_spec *o, const char *v, br_error *err) {
    char *end;
    errno = 0;
    switch (o->type) {
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < INT32_MIN || x > INT32_MAX)
            return br_errorf(err, "option --%s: '%s' is not an integer", o->name, v);
        *(int32_t *)o->value = (int32_t)x;
        break;
    }
    case OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-')
            return br_errorf(err, "option --%s: '%s' is not a non-negative integer", o->name, v);
        *(uint64_t *)o->value = x;
        break;
    }
    case OPT_FLOAT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x))
            return br_errorf(err, "option --%s: '%s' is not a number", o->name, v);
        *(float *)o->value = (float)x;
        break;
    }
    case OPT_STR: *(const char **)o->value = v; break;
    case OPT_FLAG: *(int *)o->value = 1; break;
    }
    o->seen = 1;
    return 0;
}

int args_parse(int argc, char **argv, opt_spec *specs, int *help, br_error *err) {
    *help = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            return 0;
        }
        if (strncmp(a, "--", 2) != 0)
            return br_errorf(err, "unexpected argument '%s' (options start with --; see --help)", a);
        a += 2;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        opt_spec *o = NULL;
        for (opt_spec *s = specs; s->name; s++)
            if (name_eq(s->name, a, len)) o = s;
        if (!o) return br_errorf(err, "unknown option '--%.*s' (see --help)", (int)len, a);
        const char *v;
        if (o->type == OPT_FLAG) {
            if (eq) return br_errorf(err, "option --%s takes no value", o->name);
            v = "";
        } else if (eq) {
            v = eq + 1;
        } else {
            if (i + 1 >= argc) return br_errorf(err, "option --%s needs a value", o->name);
            v = argv[++i];
        }
        if (set_value(o, v, err) < 0) return -1;
    }
    return 0;
}

const opt_spec *args_find(const opt_spec *specs, const char *name) {
    for (const opt_spec *s = specs; s->name; s++)
        if (strcmp(s->name, name) == 0) return s;
    return NULL;
}

void args_print_help(const char *usage, const opt_spec *specs) {
    printf("%s\n\nOptions:\n", usage);
    for (const opt_spec *s = specs; s->name; s++) {
        char left[64];
        const char *meta = s->type == OPT_INT || s->type == OPT_U64 ? " N"
                           : s->type == OPT_FLOAT                  ? " X"
                           : s->type == OPT_STR                    ? " S"
                                                                   : "";
        snprintf(left, sizeof left, "--%s%s", s->name, meta);
        printf("  %-34s %s", left, s->help);
        /* Help texts that state their own default keep it. */
        switch (strstr(s->help, "(default") ? OPT_FLAG : s->type) {
        case OPT_INT: printf(" (default %d)", *(int32_t *)s->value); break;
        case OPT_U64: printf(" (default %llu)", (unsigned long long)*(uint64_t *)s->value); break;
        case OPT_FLOAT: printf(" (default %g)", *(float *)s->value); break;
        case OPT_STR:
            if (*(const char **)s->value) printf(" (default %s)", *(const char **)s->value);
            break;
        case OPT_FLAG: break;
        }
        printf("\n");
    }
    printf("  %-34s %s\n", "--help", "show this help");
}
